/* SPDX-License-Identifier: Apache-2.0 */
/*
 * trove hash FILE|- : the NAR hash of a NAR file, as `nix-store -q --hash`
 * prints it. The NAR is validated by the strict reader while it is hashed,
 * so a malformed archive is refused instead of given a hash.
 */
#include <fcntl.h>
#include <stdio.h>

#include "trove/hash.h"
#include "trove/nar.h"
#include "trove.h"

#define HASH_READ_SIZE (1024 * 1024)

static void hash_usage(FILE *f) {
        fprintf(f,
                "usage: trove hash [--base16|--base64|--sri] FILE|-\n"
                "\n"
                "Prints the SHA-256 of a NAR (FILE, or standard input for '-') the way\n"
                "`nix-store -q --hash` does: sha256:<nix32>. The NAR is checked while it\n"
                "is read; a malformed one is refused.\n"
                "\n"
                "  --base16   sha256:<hex>\n"
                "  --base64   sha256:<base64>\n"
                "  --sri      sha256-<base64> (SRI)\n"
                "  -h, --help this text\n");
}

/* Reads fd to the end; hashes and validates every byte. Returns 0, or a
 * negative errno with a message already printed. */
static int hash_fd(int fd, const char *name, uint8_t digest[SHA256_DIGEST_LEN]) {
        _cleanup_(nar_reader_freep) struct nar_reader *reader = NULL;
        static const struct nar_reader_callbacks no_callbacks = {};
        _cleanup_free_ uint8_t *p = NULL;
        struct sha256 h = {};
        bool complete = false;
        int r;

        p = malloc(HASH_READ_SIZE);
        if (!p)
                return log_error_errno(ENOMEM, "hash: out of memory");
        r = nar_reader_new(&no_callbacks, NULL, &reader);
        if (r < 0)
                return log_error_errno(r, "hash: cannot create NAR reader: %s", strerror(-r));
        r = sha256_init(&h);
        if (r < 0)
                return log_error_errno(r, "hash: cannot initialise SHA-256: %s", strerror(-r));

        for (;;) {
                ssize_t n = read(fd, p, HASH_READ_SIZE);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = negative_errno();
                        log_error_errno(r, "hash: %s: read failed: %m", name);
                        goto out;
                }
                if (n == 0)
                        break;
                r = nar_reader_feed(reader, p, (size_t) n);
                if (r < 0) {
                        log_error_errno(r, "hash: %s: not a valid NAR: %s", name,
                                        nar_reader_error(reader));
                        goto out;
                }
                complete = r > 0;
                r = sha256_update(&h, p, (size_t) n);
                if (r < 0) {
                        log_error_errno(r, "hash: SHA-256 failed: %s", strerror(-r));
                        goto out;
                }
        }
        if (!complete) {
                r = nar_reader_finish(reader);
                if (r < 0) {
                        log_error_errno(r, "hash: %s: not a valid NAR: %s", name,
                                        nar_reader_error(reader));
                        goto out;
                }
        }
        r = sha256_final(&h, digest);
        if (r < 0)
                log_error_errno(r, "hash: SHA-256 failed: %s", strerror(-r));
out:
        sha256_done(&h);
        return r;
}

int cmd_hash(int argc, char **argv) {
        enum hash_encoding enc = HASH_NIX32;
        const char *file = NULL;
        uint8_t digest[SHA256_DIGEST_LEN];
        char s[HASH_STRING_MAX];
        bool options_done = false;
        int r;

        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];

                if (!options_done && a[0] == '-' && a[1] != 0) {
                        if (streq(a, "--"))
                                options_done = true;
                        else if (streq(a, "--base16"))
                                enc = HASH_BASE16;
                        else if (streq(a, "--base32") || streq(a, "--nix32"))
                                enc = HASH_NIX32;
                        else if (streq(a, "--base64"))
                                enc = HASH_BASE64;
                        else if (streq(a, "--sri"))
                                enc = HASH_SRI;
                        else if (streq(a, "--help") || streq(a, "-h")) {
                                hash_usage(stdout);
                                return 0;
                        } else {
                                fprintf(stderr, "trove hash: unknown option '%s'\n", a);
                                hash_usage(stderr);
                                return 2;
                        }
                        continue;
                }
                if (file) {
                        fprintf(stderr, "trove hash: one FILE only ('%s' and '%s' given)\n", file, a);
                        return 2;
                }
                file = a;
        }
        if (!file) {
                hash_usage(stderr);
                return 2;
        }

        if (streq(file, "-")) {
                r = hash_fd(STDIN_FILENO, "standard input", digest);
        } else {
                _cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC);

                if (fd < 0) {
                        log_error_errno(errno, "hash: %s: %m", file);
                        return 1;
                }
                r = hash_fd(fd, file, digest);
        }
        if (r < 0)
                return 1;

        hash_format(digest, enc, s);
        if (puts(s) == EOF || fflush(stdout) != 0) {
                log_error_errno(errno, "hash: cannot write the result: %m");
                return 1;
        }
        return 0;
}
