/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd-nar.c - `trove nar dump|ls|chunks`.
 */
#include <fcntl.h>
#include <stdio.h>

#include "trove/listing.h"
#include "trove/nar.h"
#include "trove.h"

#define NAR_READ_BUFSIZE (1024 * 1024)

static int write_all(int fd, const void *p, size_t n) {
        const uint8_t *b = p;

        while (n > 0) {
                ssize_t k = write(fd, b, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                b += k;
                n -= (size_t) k;
        }
        return 0;
}

/* The encoder batches headers and small files (NAR_ENCODER_STAGE) and
 * passes large file data through, so stdout sees large writes. */
static int stdout_sink(void *userdata, const void *p, size_t n) {
        return write_all(STDOUT_FILENO, p, n);
}

static void dump_usage(FILE *f) {
        fprintf(f, "usage: trove nar dump PATH\n\n"
                   "Writes PATH (file, symlink or directory; a symlink is not followed) as a\n"
                   "NAR on standard output, byte for byte what `nix-store --dump PATH` writes.\n");
}

static int nar_dump(int argc, char **argv) {
        struct trove_error err = { { 0 } };
        int r;

        if (argc == 2 && (streq(argv[1], "--help") || streq(argv[1], "-h"))) {
                dump_usage(stdout);
                return 0;
        }
        if (argc != 2 || argv[1][0] == 0) {
                dump_usage(stderr);
                return 2;
        }
        /* A bigger pipe buffer means fewer context switches with the reader
         * (as with large writes); failure is harmless. */
        (void) fcntl(STDOUT_FILENO, F_SETPIPE_SZ, 1024 * 1024);
        r = nar_dump_path(argv[1], stdout_sink, NULL, &err);
        if (r < 0) {
                fprintf(stderr, "trove nar dump: %s\n", err.msg[0] ? err.msg : strerror(-r));
                return 1;
        }
        return 0;
}

static void ls_usage(FILE *f) {
        fprintf(f, "usage: trove nar ls FILE|-\n\n"
                   "Reads a NAR (from FILE, or standard input for -), checks it strictly and\n"
                   "prints its listing as the JSON Nix writes to .ls files:\n"
                   "{\"version\":1,\"root\":{...}} with size, executable and narOffset per file.\n");
}

static int nar_ls(int argc, char **argv) {
        _cleanup_(listing_builder_freep) struct listing_builder *b = NULL;
        _cleanup_(nar_reader_freep) struct nar_reader *rd = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *json = NULL;
        struct listing l = { 0 };
        size_t json_len = 0;
        const char *name;
        int r;

        if (argc == 2 && (streq(argv[1], "--help") || streq(argv[1], "-h"))) {
                ls_usage(stdout);
                return 0;
        }
        if (argc != 2) {
                ls_usage(stderr);
                return 2;
        }
        name = argv[1];
        if (streq(name, "-")) {
                fd = STDIN_FILENO;
                name = "standard input";
        } else {
                fd = open(name, O_RDONLY | O_CLOEXEC);
                if (fd < 0) {
                        fprintf(stderr, "trove nar ls: cannot open %s: %s\n", name, strerror(errno));
                        return 1;
                }
        }
        buf = malloc(NAR_READ_BUFSIZE);
        if (!buf) {
                fprintf(stderr, "trove nar ls: out of memory\n");
                return 1;
        }
        r = listing_builder_new(&b);
        if (r >= 0)
                r = nar_reader_new(&listing_builder_callbacks, b, &rd);
        if (r < 0) {
                fprintf(stderr, "trove nar ls: %s\n", strerror(-r));
                return 1;
        }
        for (;;) {
                ssize_t k = read(fd, buf, NAR_READ_BUFSIZE);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        fprintf(stderr, "trove nar ls: reading %s: %s\n", name, strerror(errno));
                        return 1;
                }
                if (k == 0)
                        break;
                r = nar_reader_feed(rd, buf, (size_t) k);
                if (r < 0)
                        break;
        }
        if (r >= 0)
                r = nar_reader_finish(rd);
        if (r < 0) {
                fprintf(stderr, "trove nar ls: %s: %s\n", name, nar_reader_error(rd));
                return 1;
        }
        if (fd == STDIN_FILENO)
                fd = -1; /* not ours to close */

        r = listing_builder_take(b, &l);
        if (r >= 0)
                r = listing_to_json(&l, &json, &json_len);
        listing_free(&l);
        if (r < 0) {
                fprintf(stderr, "trove nar ls: %s: %s\n", name, strerror(-r));
                return 1;
        }
        r = write_all(STDOUT_FILENO, json, json_len);
        if (r >= 0)
                r = write_all(STDOUT_FILENO, "\n", 1);
        if (r < 0) {
                fprintf(stderr, "trove nar ls: writing: %s\n", strerror(-r));
                return 1;
        }
        return 0;
}

static void usage(FILE *f) {
        fprintf(f, "usage: trove nar COMMAND ARGS...\n\n"
                   "commands:\n"
                   "  dump PATH      write PATH as a NAR on standard output (like nix-store --dump)\n"
                   "  ls FILE|-      print the listing (.ls JSON) of a NAR\n"
                   "  chunks FILE|-  show how a NAR is cut into chunks\n\n"
                   "'trove nar COMMAND --help' describes a command.\n");
}

int cmd_nar(int argc, char **argv) {
        static const struct subcommand subs[] = {
                { "dump", nar_dump },
                { "ls", nar_ls },
                { "chunks", cmd_nar_chunks },
        };
        return subcommand_dispatch("trove nar", subs, ELEMENTSOF(subs), usage, argc, argv);
}
