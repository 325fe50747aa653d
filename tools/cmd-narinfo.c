/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd-narinfo.c - `trove narinfo sign|verify|fingerprint`.
 */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <sys/stat.h>

#include "trove/util.h"
#include "trove/buf.h"
#include "trove/narinfo.h"
#include "trove/storepath.h"
#include "trove.h"

#define KEY_FILE_MAX (64 * 1024)
#define KEYS_MAX 64

static void usage(FILE *f) {
        fprintf(f,
                "usage: trove narinfo sign --key SECRET_KEY_FILE [--store-dir DIR] FILE...\n"
                "       trove narinfo verify (--key PUBLIC_KEY | --key-file FILE)... [--store-dir DIR] FILE...\n"
                "       trove narinfo fingerprint [--store-dir DIR] FILE|-\n"
                "\n"
                "sign: signs each .narinfo FILE with the secret key (as written by `trove key\n"
                "  generate` or `nix-store --generate-binary-cache-key`), replacing a signature\n"
                "  by a key of the same name. Each file is rewritten atomically (temporary file\n"
                "  in the same directory, then rename), in the form Nix writes.\n"
                "verify: checks that every FILE has at least one valid signature by one of the\n"
                "  given public keys (NAME:BASE64, as in Nix's trusted-public-keys; --key and\n"
                "  --key-file may be repeated and may hold several whitespace-separated keys).\n"
                "  Prints one line per file; exit status 0 only if all files verify.\n"
                "fingerprint: prints what Nix signs for FILE:\n"
                "  1;<store path>;<NarHash>;<NarSize>;<references>\n"
                "\n"
                "  --store-dir DIR  the store directory of the narinfo paths (default %s)\n"
                "\n"
                "Exit status: 0 ok, 1 failure (bad file, bad signature), 2 usage.\n",
                STORE_DIR_DEFAULT);
}

static int read_fd_bounded(int fd, size_t max, struct buf *b) {
        for (;;) {
                int r = buf_reserve(b, 65536 < max + 1 - b->len ? 65536 : max + 1 - b->len);
                if (r < 0)
                        return r;
                ssize_t k = read(fd, b->data + b->len, b->cap - 1 - b->len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                b->len += (size_t) k;
                b->data[b->len] = 0;
                if (b->len > max)
                        return -EFBIG;
        }
        return 0;
}

/* Reads a file ("-" = stdin) of at most max bytes. */
static int read_file(const char *path, size_t max, struct buf *b) {
        _cleanup_close_ int fd = -1;

        if (streq(path, "-"))
                return read_fd_bounded(STDIN_FILENO, max, b);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        return read_fd_bounded(fd, max, b);
}

static int parse_file(const char *path, const char *store_dir, struct narinfo *ret) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(NARINFO_MAX_SIZE + 1);
        struct trove_error err = {};
        int r;

        r = read_file(path, NARINFO_MAX_SIZE, &b);
        if (r == -EFBIG || r == -E2BIG) {
                fprintf(stderr, "%s: larger than %u bytes\n", path, NARINFO_MAX_SIZE);
                return r;
        }
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", path, strerror(-r));
                return r;
        }
        r = narinfo_parse((const char *) b.data ? (const char *) b.data : "", b.len, store_dir, ret, &err);
        if (r < 0)
                fprintf(stderr, "%s: invalid narinfo: %s\n", path, err.msg[0] ? err.msg : strerror(-r));
        return r;
}

static bool store_dir_ok(const char *d) {
        size_t n = strlen(d);
        return n >= 2 && d[0] == '/' && d[n - 1] != '/' && n < 4096;
}

static int write_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

/* Replaces path by text: a temporary file next to it with the same mode,
 * fsync, rename. A reader sees the old or the new document, never a part. */
static int replace_file(const char *path, const char *text) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st;
        int r;

        if (stat(path, &st) < 0)
                return -errno;
        if (asprintf(&tmp, "%s.tmp-XXXXXX", path) < 0)
                return -ENOMEM;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        r = write_all(fd, text, strlen(text));
        if (r >= 0 && fchmod(fd, st.st_mode & 07777) < 0)
                r = -errno;
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                (void) unlink(tmp);
        return r;
}

static int read_secret_key(const char *path, struct signing_secret *ret) {
        char text[KEY_FILE_MAX];
        int r;

        /* Nix writes key files without a newline; editors add one. */
        r = read_text_file(path, text, sizeof text, NULL);
        if (r < 0 && r != -EINVAL) {
                fprintf(stderr, "trove narinfo sign: cannot read key %s: %s\n", path,
                        r == -EFBIG ? "too large for a key file" : strerror(-r));
                return r;
        }
        if (r >= 0)
                r = signing_secret_parse(text, ret);
        explicit_bzero(text, sizeof text);
        if (r < 0)
                fprintf(stderr, "trove narinfo sign: %s is not a valid secret key\n", path);
        return r;
}

static int narinfo_sign_cmd(int argc, char **argv) {
        static const struct option opts[] = {
                { "key", required_argument, NULL, 'k' },
                { "store-dir", required_argument, NULL, 'd' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *key_file = NULL, *store_dir = STORE_DIR_DEFAULT;
        struct signing_secret s;
        int c, r, failed = 0;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'k':
                        key_file = optarg;
                        break;
                case 'd':
                        store_dir = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (!key_file || optind >= argc || !store_dir_ok(store_dir)) {
                usage(stderr);
                return 2;
        }
        if (read_secret_key(key_file, &s) < 0)
                return 1;
        for (int i = optind; i < argc; i++) {
                _cleanup_(narinfo_free) struct narinfo ni = {};
                _cleanup_free_ char *text = NULL;

                if (streq(argv[i], "-")) {
                        fprintf(stderr, "trove narinfo sign: files are rewritten in place; '-' is not a file\n");
                        failed++;
                        continue;
                }
                if (parse_file(argv[i], store_dir, &ni) < 0) {
                        failed++;
                        continue;
                }
                r = narinfo_sign(&ni, store_dir, &s);
                if (r >= 0)
                        r = narinfo_render(&ni, &text);
                if (r >= 0)
                        r = replace_file(argv[i], text);
                if (r < 0) {
                        fprintf(stderr, "trove narinfo sign: %s: %s\n", argv[i], strerror(-r));
                        failed++;
                }
        }
        signing_secret_wipe(&s);
        return failed ? 1 : 0;
}

/* Adds the whitespace-separated public keys in text to keys[]. */
static int add_keys(const char *text, const char *whence, struct signing_public *keys, size_t *n_keys) {
        const char *p = text;
        int added = 0;

        for (;;) {
                while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
                        p++;
                if (!*p)
                        break;
                size_t l = strcspn(p, " \t\r\n");
                char k[SIGNING_PUBLIC_TEXT_MAX];
                if (l >= sizeof k || *n_keys >= KEYS_MAX) {
                        fprintf(stderr, "trove narinfo verify: %s: %s\n", whence,
                                l >= sizeof k ? "not a public key" : "too many keys");
                        return -EINVAL;
                }
                memcpy(k, p, l);
                k[l] = 0;
                if (signing_public_parse(k, &keys[*n_keys]) < 0) {
                        fprintf(stderr, "trove narinfo verify: %s: '%.*s' is not a public key (NAME:BASE64 of 32 bytes)\n",
                                whence, (int) MIN(l, (size_t) 200), p);
                        return -EINVAL;
                }
                (*n_keys)++;
                added++;
                p += l;
        }
        if (added == 0) {
                fprintf(stderr, "trove narinfo verify: %s: no key\n", whence);
                return -EINVAL;
        }
        return 0;
}

static int narinfo_verify_cmd(int argc, char **argv) {
        static const struct option opts[] = {
                { "key", required_argument, NULL, 'k' },
                { "key-file", required_argument, NULL, 'f' },
                { "store-dir", required_argument, NULL, 'd' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *store_dir = STORE_DIR_DEFAULT;
        struct signing_public keys[KEYS_MAX];
        size_t n_keys = 0;
        int c, r, failed = 0;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'k':
                        if (add_keys(optarg, "--key", keys, &n_keys) < 0)
                                return 2;
                        break;
                case 'f': {
                        _cleanup_free_ char *text = malloc(KEY_FILE_MAX);
                        if (!text)
                                return 1;
                        r = read_text_file(optarg, text, KEY_FILE_MAX, NULL);
                        if (r == -EINVAL) {
                                fprintf(stderr, "trove narinfo verify: %s: no key\n", optarg);
                                return 1;
                        }
                        if (r < 0) {
                                fprintf(stderr, "trove narinfo verify: cannot read %s: %s\n", optarg,
                                        strerror(-r));
                                return 1;
                        }
                        if (add_keys(text, optarg, keys, &n_keys) < 0)
                                return 1;
                        break;
                }
                case 'd':
                        store_dir = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (n_keys == 0 || optind >= argc || !store_dir_ok(store_dir)) {
                usage(stderr);
                return 2;
        }
        for (int i = optind; i < argc; i++) {
                _cleanup_(narinfo_free) struct narinfo ni = {};

                if (parse_file(argv[i], store_dir, &ni) < 0) {
                        failed++;
                        continue;
                }
                r = narinfo_verify(&ni, store_dir, keys, n_keys);
                if (r < 0) {
                        fprintf(stderr, "%s: %s\n", argv[i], strerror(-r));
                        failed++;
                } else if (r == 0) {
                        printf("%s: no valid signature by a given key (%zu signature%s)\n", argv[i], ni.n_sigs,
                               ni.n_sigs == 1 ? "" : "s");
                        failed++;
                } else
                        printf("%s: ok (%d valid signature%s)\n", argv[i], r, r == 1 ? "" : "s");
        }
        if (fflush(stdout) != 0)
                return 1;
        return failed ? 1 : 0;
}

static int narinfo_fingerprint_cmd(int argc, char **argv) {
        static const struct option opts[] = {
                { "store-dir", required_argument, NULL, 'd' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *store_dir = STORE_DIR_DEFAULT;
        _cleanup_(narinfo_free) struct narinfo ni = {};
        _cleanup_free_ char *fp = NULL;
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'd':
                        store_dir = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (argc - optind != 1 || !store_dir_ok(store_dir)) {
                usage(stderr);
                return 2;
        }
        if (parse_file(argv[optind], store_dir, &ni) < 0)
                return 1;
        r = narinfo_fingerprint(&ni, store_dir, &fp);
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", argv[optind], strerror(-r));
                return 1;
        }
        printf("%s\n", fp);
        return fflush(stdout) == 0 ? 0 : 1;
}

int cmd_narinfo(int argc, char **argv) {
        static const struct subcommand subs[] = {
                { "sign", narinfo_sign_cmd },
                { "verify", narinfo_verify_cmd },
                { "fingerprint", narinfo_fingerprint_cmd },
        };
        return subcommand_dispatch("trove narinfo", subs, ELEMENTSOF(subs), usage, argc, argv);
}
