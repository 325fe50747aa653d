/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench-nar-dump - nar_dump_path() of a tree to a sink that discards the
 * bytes, against `nix-store --dump PATH > /dev/null`, timed in the same run
 * (each warmed up once, then best of --repeat). Both must produce the same
 * number of bytes; the bench refuses to report otherwise.
 *
 *   bench-nar-dump [--repeat N] [--nix-store PROG] PATH
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>

#include "trove/nar.h"

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* Discards the bytes, but reads one per 4 KiB so that a dump that maps
 * files instead of reading them is still charged for bringing them in. */
static volatile uint8_t sink_fold;

static int discard(void *userdata, const void *p, size_t n) {
        uint64_t *total = userdata;
        const uint8_t *b = p;
        uint8_t x = 0;
        for (size_t i = 0; i < n; i += 4096)
                x ^= b[i];
        sink_fold ^= x;
        *total += n;
        return 0;
}

/* Counts the bytes nix-store writes while discarding them: a pipe read in
 * large blocks, like a consumer would. */
static int run_nix_store(const char *prog, const char *path, uint64_t *ret_bytes) {
        int pfd[2];
        pid_t pid;
        uint64_t total = 0;
        static uint8_t buf[1 << 20];
        int st;

        if (pipe2(pfd, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                dup2(pfd[1], STDOUT_FILENO);
                execlp(prog, prog, "--dump", path, (char *) NULL);
                _exit(127);
        }
        close(pfd[1]);
        for (;;) {
                ssize_t k = read(pfd[0], buf, sizeof buf);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                total += (uint64_t) k;
        }
        close(pfd[0]);
        if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                return -EIO;
        *ret_bytes = total;
        return 0;
}

/* Same for nix-store with stdout on /dev/null (what the brief of this
 * bench asks for: no pipe in its way). */
static int run_nix_store_devnull(const char *prog, const char *path) {
        pid_t pid = fork();
        int st;

        if (pid < 0)
                return -errno;
        if (pid == 0) {
                int fd = open("/dev/null", O_WRONLY);
                if (fd < 0)
                        _exit(127);
                dup2(fd, STDOUT_FILENO);
                execlp(prog, prog, "--dump", path, (char *) NULL);
                _exit(127);
        }
        if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                return -EIO;
        return 0;
}

int main(int argc, char **argv) {
        const char *path = NULL, *prog = "nix-store";
        unsigned long repeat = 3;
        double best_trove = 1e30, best_nix = 1e30, best_nix_pipe = 1e30;
        uint64_t trove_bytes = 0, nix_bytes = 0;

        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--help")) {
                        printf("usage: bench-nar-dump [--repeat N] [--nix-store PROG] PATH\n");
                        return 0;
                } else if (streq(argv[i], "--repeat") && i + 1 < argc) {
                        char *end;
                        repeat = strtoul(argv[++i], &end, 10);
                        if (*end || repeat == 0 || repeat > 100)
                                return fprintf(stderr, "bad --repeat\n"), 2;
                } else if (streq(argv[i], "--nix-store") && i + 1 < argc)
                        prog = argv[++i];
                else if (!path)
                        path = argv[i];
                else
                        return fprintf(stderr, "one PATH only\n"), 2;
        }
        if (!path)
                return fprintf(stderr, "usage: bench-nar-dump [--repeat N] PATH\n"), 2;

        /* Warm-up of both (page cache, dentries), and the size check. */
        struct trove_error err = {};
        int r = nar_dump_path(path, discard, &trove_bytes, &err);
        if (r < 0)
                return fprintf(stderr, "nar_dump_path: %s: %s\n", err.msg, strerror(-r)), 1;
        r = run_nix_store(prog, path, &nix_bytes);
        if (r < 0)
                return fprintf(stderr, "%s --dump %s failed\n", prog, path), 1;
        if (trove_bytes != nix_bytes)
                return fprintf(stderr, "size mismatch: trove %llu bytes, nix-store %llu bytes\n",
                               (unsigned long long) trove_bytes,
                               (unsigned long long) nix_bytes),
                       1;

        for (unsigned long k = 0; k < repeat; k++) {
                uint64_t bytes = 0;
                double t0 = now();
                if (nar_dump_path(path, discard, &bytes, &err) < 0 || bytes != trove_bytes)
                        return fprintf(stderr, "nar_dump_path failed on repeat\n"), 1;
                best_trove = MIN(best_trove, now() - t0);

                t0 = now();
                if (run_nix_store_devnull(prog, path) < 0)
                        return fprintf(stderr, "%s failed on repeat\n", prog), 1;
                best_nix = MIN(best_nix, now() - t0);

                t0 = now();
                if (run_nix_store(prog, path, &bytes) < 0)
                        return fprintf(stderr, "%s failed on repeat\n", prog), 1;
                best_nix_pipe = MIN(best_nix_pipe, now() - t0);
        }

        double mb = (double) trove_bytes / 1e6;
        printf("%s: NAR of %.1f MB, best of %lu\n", path, mb, repeat);
        printf("  nar_dump_path -> discard        %7.3f s  %8.0f MB/s\n", best_trove,
               mb / best_trove);
        printf("  nix-store --dump > /dev/null    %7.3f s  %8.0f MB/s\n", best_nix,
               mb / best_nix);
        printf("  nix-store --dump | read pipe    %7.3f s  %8.0f MB/s\n", best_nix_pipe,
               mb / best_nix_pipe);
        printf("  ratio nix-store(/dev/null) / trove %.2f (above 1: trove faster)\n",
               best_nix / best_trove);
        return 0;
}
