/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd-key.c - `trove key generate|public`: ed25519 signing keys in the form
 * of `nix-store --generate-binary-cache-key`.
 */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <sys/stat.h>

#include "trove/util.h"
#include "trove/signing.h"
#include "trove.h"

/* A key file holds one key and perhaps a newline; anything much larger is
 * not a key file. */
#define KEY_FILE_MAX 4096

static void usage(FILE *f) {
        fprintf(f,
                "usage: trove key generate NAME [--secret-file FILE] [--public-file FILE]\n"
                "       trove key public [SECRET_FILE|-]\n"
                "\n"
                "generate: makes a new ed25519 key pair named NAME (e.g. cache.example.org-1),\n"
                "  in the format of `nix-store --generate-binary-cache-key`.\n"
                "  Without options the secret key is printed on standard output; derive the\n"
                "  public key with `trove key public`.\n"
                "  --secret-file FILE  write the secret key to FILE (created, mode 0600, never\n"
                "                      overwritten); the public key is then printed on standard\n"
                "                      output unless --public-file is given\n"
                "  --public-file FILE  write the public key to FILE (created, never overwritten)\n"
                "  Files are written without a trailing newline, as Nix writes them.\n"
                "\n"
                "public: reads a secret key from SECRET_FILE (or standard input) and prints\n"
                "  the public key, the value for Nix's trusted-public-keys.\n");
}

static int write_new_file(const char *path, const char *text, mode_t mode) {
        _cleanup_close_ int fd = -1;
        size_t n = strlen(text);
        const char *p = text;

        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return -errno;
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        int r = -errno;
                        (void) unlink(path);
                        return r;
                }
                p += k;
                n -= (size_t) k;
        }
        if (fsync(fd) < 0) {
                int r = -errno;
                (void) unlink(path);
                return r;
        }
        return 0;
}

/* Reads a whole small file (or stdin for "-"/NULL), strips trailing
 * whitespace. */
static int read_key_text(const char *path, char *out, size_t out_size) {
        char buf[KEY_FILE_MAX + 1];
        int r = read_text_file(path, buf, sizeof buf, NULL);

        if (r == 0 && strlen(buf) + 1 > out_size)
                r = -EINVAL;
        if (r == 0)
                memcpy(out, buf, strlen(buf) + 1);
        explicit_bzero(buf, sizeof buf);
        return r;
}

static int key_generate(int argc, char **argv) {
        static const struct option opts[] = {
                { "secret-file", required_argument, NULL, 's' },
                { "public-file", required_argument, NULL, 'p' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *secret_file = NULL, *public_file = NULL;
        struct signing_secret s;
        struct signing_public p;
        char stext[SIGNING_SECRET_TEXT_MAX], ptext[SIGNING_PUBLIC_TEXT_MAX];
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 's':
                        secret_file = optarg;
                        break;
                case 'p':
                        public_file = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (argc - optind != 1) {
                usage(stderr);
                return 2;
        }
        r = signing_generate(argv[optind], &s);
        if (r == -EINVAL) {
                fprintf(stderr,
                        "trove key generate: invalid key name '%s' (1..%d printable characters, no ':' or space)\n",
                        argv[optind], SIGNING_NAME_MAX);
                return 2;
        }
        if (r < 0) {
                fprintf(stderr, "trove key generate: %s\n", strerror(-r));
                return 1;
        }
        signing_secret_format(&s, stext);
        signing_secret_to_public(&s, &p);
        signing_secret_wipe(&s);
        signing_public_format(&p, ptext);

        if (secret_file) {
                r = write_new_file(secret_file, stext, 0600);
                explicit_bzero(stext, sizeof stext);
                if (r < 0) {
                        fprintf(stderr, "trove key generate: cannot write %s: %s\n", secret_file, strerror(-r));
                        return 1;
                }
        } else {
                printf("%s\n", stext);
                explicit_bzero(stext, sizeof stext);
        }
        if (public_file) {
                r = write_new_file(public_file, ptext, 0644);
                if (r < 0) {
                        fprintf(stderr, "trove key generate: cannot write %s: %s\n", public_file, strerror(-r));
                        return 1;
                }
        } else if (secret_file)
                printf("%s\n", ptext);
        if (fflush(stdout) != 0) {
                fprintf(stderr, "trove key generate: cannot write to standard output\n");
                return 1;
        }
        return 0;
}

static int key_public(int argc, char **argv) {
        char text[SIGNING_SECRET_TEXT_MAX + 1], ptext[SIGNING_PUBLIC_TEXT_MAX];
        struct signing_secret s;
        struct signing_public p;
        const char *path = NULL;
        int r;

        if (argc == 2 && (streq(argv[1], "--help") || streq(argv[1], "-h"))) {
                usage(stdout);
                return 0;
        }
        if (argc > 2) {
                usage(stderr);
                return 2;
        }
        if (argc == 2)
                path = argv[1];
        r = read_key_text(path, text, sizeof text);
        if (r < 0) {
                fprintf(stderr, "trove key public: cannot read %s: %s\n", path ? path : "standard input",
                        r == -EINVAL || r == -EFBIG ? "not a secret key" : strerror(-r));
                return 1;
        }
        r = signing_secret_parse(text, &s);
        explicit_bzero(text, sizeof text);
        if (r < 0) {
                fprintf(stderr, "trove key public: %s: not a valid secret key (expected NAME:BASE64 of 64 bytes)\n",
                        path ? path : "standard input");
                return 1;
        }
        signing_secret_to_public(&s, &p);
        signing_secret_wipe(&s);
        signing_public_format(&p, ptext);
        printf("%s\n", ptext);
        return fflush(stdout) == 0 ? 0 : 1;
}

int cmd_key(int argc, char **argv) {
        static const struct subcommand subs[] = {
                { "generate", key_generate },
                { "public", key_public },
        };
        return subcommand_dispatch("trove key", subs, ELEMENTSOF(subs), usage, argc, argv);
}
