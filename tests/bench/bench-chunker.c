/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench-chunker - chunker throughput against SHA-256 (hash.h, OpenSSL) of
 * the same bytes in the same process. The chunker must not be the slow part
 * of chunking a NAR: every chunk is hashed anyway.
 *
 *   bench-chunker [--size MiB] [--repeat N] [FILE...]
 *
 * Without FILE: pseudo-random data of --size MiB (default 1024). With FILE:
 * each file read into memory (bounded by --size) and measured as well.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "trove/chunker.h"
#include "trove/hash.h"

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int parse_u64(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || end == s || *end || s[0] == '-')
                return -EINVAL;
        *ret = v;
        return 0;
}

/* Best of repeat runs, in seconds. */
static double time_chunker(const uint8_t *p, size_t n, unsigned repeat, size_t *ret_chunks) {
        struct chunker_params params;
        double best = 1e30;
        size_t chunks = 0;

        chunker_params_default(&params);
        for (unsigned r = 0; r < repeat; r++) {
                struct chunker c;
                size_t off = 0;
                double t0;

                chunker_init(&c, &params);
                chunks = 0;
                t0 = now();
                while (off < n) {
                        size_t k = chunker_scan(&c, p + off, n - off);
                        if (k == 0)
                                break;
                        off += k;
                        chunks++;
                }
                if (chunker_pending(&c) > 0)
                        chunks++;
                best = MIN(best, now() - t0);
        }
        *ret_chunks = chunks;
        return best;
}

/* SHA-256 per chunk-sized piece, as the push path does it. */
static double time_sha(const uint8_t *p, size_t n, unsigned repeat) {
        uint8_t digest[SHA256_DIGEST_LEN];
        double best = 1e30;

        for (unsigned r = 0; r < repeat; r++) {
                double t0 = now();
                for (size_t off = 0; off < n; off += CHUNKER_AVG_DEFAULT)
                        if (sha256_buf(p + off, MIN((size_t) CHUNKER_AVG_DEFAULT, n - off),
                                       digest) < 0) {
                                fprintf(stderr, "sha256_buf failed\n");
                                exit(1);
                        }
                best = MIN(best, now() - t0);
        }
        return best;
}

static void report(const char *what, const uint8_t *p, size_t n, unsigned repeat) {
        size_t chunks;
        double tc = time_chunker(p, n, repeat, &chunks);
        double ts = time_sha(p, n, repeat);
        double mb = (double) n / 1e6;

        printf("%s: %.0f MB, %zu chunks (mean %.0f bytes)\n", what, mb, chunks,
               chunks ? (double) n / (double) chunks : 0.0);
        printf("  chunker  %8.0f MB/s\n", mb / tc);
        printf("  sha256   %8.0f MB/s\n", mb / ts);
        printf("  ratio chunker/sha256 %.2f\n", ts / tc);
}

static uint8_t *read_file(const char *path, size_t limit, size_t *ret_n) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        uint8_t *p;
        size_t n = 0;

        if (fd < 0 || fstat(fd, &st) < 0) {
                perror(path);
                return NULL;
        }
        size_t want = MIN((uint64_t) st.st_size, (uint64_t) limit);
        p = malloc(want ? want : 1);
        if (!p)
                return NULL;
        while (n < want) {
                ssize_t k = read(fd, p + n, want - n);
                if (k <= 0)
                        break;
                n += (size_t) k;
        }
        *ret_n = n;
        return p;
}

int main(int argc, char **argv) {
        uint64_t size_mib = 1024, repeat = 3;
        int i;

        for (i = 1; i < argc; i++) {
                if (streq(argv[i], "--help")) {
                        printf("usage: bench-chunker [--size MiB] [--repeat N] [FILE...]\n");
                        return 0;
                } else if (streq(argv[i], "--size") && i + 1 < argc) {
                        if (parse_u64(argv[++i], &size_mib) < 0 || size_mib == 0 ||
                            size_mib > 65536)
                                return fprintf(stderr, "bad --size\n"), 2;
                } else if (streq(argv[i], "--repeat") && i + 1 < argc) {
                        if (parse_u64(argv[++i], &repeat) < 0 || repeat == 0 || repeat > 100)
                                return fprintf(stderr, "bad --repeat\n"), 2;
                } else
                        break;
        }

        size_t n = (size_t) size_mib << 20;
        uint8_t *p = malloc(n);
        if (!p)
                return fprintf(stderr, "out of memory\n"), 1;
        uint64_t s = 0x9e3779b97f4a7c15ULL;
        for (size_t off = 0; off + 8 <= n; off += 8) {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                uint64_t v = s * 0x2545F4914F6CDD1DULL;
                memcpy(p + off, &v, 8);
        }
        report("pseudo-random", p, n, (unsigned) repeat);
        free(p);

        for (; i < argc; i++) {
                size_t fn;
                uint8_t *fp = read_file(argv[i], n, &fn);
                if (!fp)
                        return 1;
                report(argv[i], fp, fn, (unsigned) repeat);
                free(fp);
        }
        return 0;
}
