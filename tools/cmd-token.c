/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd-token.c - `trove token create`: mints an access token locally from the
 * server secret (lib/token.c), without talking to any server.
 */
#include <getopt.h>
#include <stdio.h>
#include <time.h>

#include "client.h"
#include "trove.h"
#include "trove/token.h"

#define GRANTS_MAX 64

static void usage(FILE *f) {
        fprintf(f,
                "usage: trove token create --secret-file FILE --cache PATTERN --perm LIST\n"
                "                          [--cache PATTERN --perm LIST ...] [--valid DURATION]\n"
                "                          [--sub NAME]\n"
                "\n"
                "Prints a new access token (a JWT signed with HS256) made with the server's token\n"
                "secret (troved's <state-dir>/token-secret). No server is contacted.\n"
                "\n"
                "  --secret-file FILE  the server secret (must not be readable by others)\n"
                "  --cache PATTERN     a cache name or a glob with '*' ('*' = every cache)\n"
                "  --perm LIST         comma-separated permissions on the preceding --cache:\n"
                "                      pull, push, delete, create, configure, destroy, or all\n"
                "  --valid DURATION    lifetime: 90d, 12h, 30m, 1y or seconds (default 30d)\n"
                "  --sub NAME          subject, shown in the server's logs\n"
                "  -h, --help          this text\n");
}

int cmd_token(int argc, char **argv) {
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "secret-file", required_argument, NULL, 'f' },
                { "cache", required_argument, NULL, 'c' },
                { "perm", required_argument, NULL, 'p' },
                { "valid", required_argument, NULL, 'v' },
                { "sub", required_argument, NULL, 's' },
                {}
        };
        _cleanup_(token_claims_freep) struct token_claims *claims = NULL;
        struct token_secret secret;
        struct trove_error err = {};
        const char *secret_file = NULL, *sub = NULL, *valid = "30d";
        const char *caches[GRANTS_MAX];
        uint32_t perms[GRANTS_MAX];
        size_t n = 0;
        int64_t validity, now;
        char *tok = NULL;
        int c, r;

        if (argc < 2 || streq(argv[1], "-h") || streq(argv[1], "--help")) {
                usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? 2 : 0;
        }
        if (!streq(argv[1], "create")) {
                log_error("unknown token command '%s'", argv[1]);
                usage(stderr);
                return 2;
        }
        optind = 1;
        while ((c = getopt_long(argc - 1, argv + 1, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'h': usage(stdout); return 0;
                case 'f': secret_file = optarg; break;
                case 'v': valid = optarg; break;
                case 's': sub = optarg; break;
                case 'c':
                        if (n >= GRANTS_MAX) {
                                log_error("at most %d --cache options", GRANTS_MAX);
                                return 2;
                        }
                        caches[n] = optarg;
                        perms[n++] = 0;
                        break;
                case 'p': {
                        _cleanup_free_ char *list = NULL;
                        char *save = NULL;
                        if (n == 0) {
                                log_error("--perm must follow a --cache");
                                return 2;
                        }
                        list = strdup(optarg);
                        if (!list)
                                return 1;
                        for (char *w = strtok_r(list, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
                                if (streq(w, "all")) {
                                        perms[n - 1] |= TOKEN_PERMS_ALL;
                                        continue;
                                }
                                int pr = token_perm_from_string(w);
                                if (pr < 0) {
                                        log_error("unknown permission '%s' (pull, push, delete, create, "
                                                  "configure, destroy, all)", w);
                                        return 2;
                                }
                                perms[n - 1] |= TOKEN_PERM_BIT(pr);
                        }
                        break;
                }
                default: usage(stderr); return 2;
                }
        }
        if (optind != argc - 1 || !secret_file || n == 0) {
                log_error("--secret-file and at least one --cache PATTERN --perm LIST are needed");
                usage(stderr);
                return 2;
        }
        for (size_t i = 0; i < n; i++)
                if (perms[i] == 0) {
                        log_error("--cache %s has no --perm", caches[i]);
                        return 2;
                }
        if (parse_duration(valid, &validity) < 0 || validity == 0) {
                log_error("bad --valid '%s' (e.g. 90d, 12h, 1y)", valid);
                return 2;
        }
        now = (int64_t) time(NULL);
        if (ADD_OVERFLOW(now, validity, &validity)) {
                log_error("--valid '%s' is too long", valid);
                return 2;
        }
        r = token_secret_load(secret_file, &secret, &err);
        if (r < 0) {
                log_error("cannot load the secret %s: %s", secret_file, err.msg[0] ? err.msg : strerror(-r));
                return 1;
        }
        r = token_claims_new(sub, validity, &claims);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                r = token_claims_grant(claims, caches[i], perms[i]);
                if (r < 0)
                        log_error("bad cache pattern '%s'", caches[i]);
        }
        if (r >= 0)
                r = token_encode(claims, secret.key, secret.len, &tok);
        token_secret_wipe(&secret);
        if (r < 0) {
                log_error("cannot make the token: %s", strerror(-r));
                return 1;
        }
        printf("%s\n", tok);
        explicit_bzero(tok, strlen(tok));
        free(tok);
        return 0;
}
