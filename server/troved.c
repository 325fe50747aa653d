/* SPDX-License-Identifier: Apache-2.0 */
/*
 * troved.c - start-up and shutdown: configuration, the embedded or external
 * PostgreSQL, the chunk store, the token secret, the HTTP server; and the
 * `troved token` subcommand that mints tokens from the server secret.
 */
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "trove/pgembed.h"
#include "trove/util.h"
#include "troved.h"

static int log_oom(void) {
        return log_error_errno(ENOMEM, "out of memory");
}

static int load_secret(struct troved_config *c, struct token_secret *ret) {
        struct trove_error err = {};
        char path[4096];
        int r;

        if (c->token_secret_file)
                snprintf(path, sizeof path, "%s", c->token_secret_file);
        else
                snprintf(path, sizeof path, "%s/token-secret", c->state_dir);
        r = token_secret_load(path, ret, &err);
        if (r == -ENOENT && !c->token_secret_file) {
                r = token_secret_generate(path, &err);
                if (r < 0 && r != -EEXIST)
                        return log_error_errno(r, "cannot create token secret %s: %s", path, err.msg);
                log_info("created token secret %s", path);
                r = token_secret_load(path, ret, &err);
        }
        if (r < 0)
                return log_error_errno(r, "cannot load token secret %s: %s", path, err.msg[0] ? err.msg : strerror(-r));
        return 0;
}

/* troved token: signs a token with the server secret (for bootstrapping
 * the first admin token, or for automation that has the secret). */
static int cmd_token(struct troved_config *cfg, int argc, char **argv) {
        _cleanup_(token_claims_freep) struct token_claims *claims = NULL;
        struct token_secret secret;
        const char *sub = NULL, *valid = "30d";
        const char *caches[64];
        uint32_t perms[64];
        size_t n_caches = 0;
        int64_t validity;
        char *tok;
        int r;

        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (streq(a, "-h") || streq(a, "--help")) {
                        printf("usage: troved token [--state-dir DIR | --secret-file F] [--sub NAME] [--valid 30d]\n"
                               "                    --cache PATTERN --perm pull,push,delete,create,configure,destroy ...\n"
                               "Prints a token signed with the server secret. --cache/--perm pairs repeat;\n"
                               "PATTERN is a cache name or a glob with '*'.\n");
                        return 0;
                }
                if (!v)
                        return log_error_errno(EINVAL, "option %s needs a value", a), 2;
                i++;
                if (streq(a, "--sub"))
                        sub = v;
                else if (streq(a, "--valid"))
                        valid = v;
                else if (streq(a, "--secret-file") || streq(a, "--state-dir")) {
                        char **field = streq(a, "--secret-file") ? &cfg->token_secret_file : &cfg->state_dir;
                        free(*field);
                        *field = strdup(v);
                        if (!*field)
                                return log_oom(), 1;
                }
                else if (streq(a, "--cache")) {
                        if (n_caches >= ELEMENTSOF(caches))
                                return log_error_errno(E2BIG, "too many --cache options"), 2;
                        caches[n_caches] = v;
                        perms[n_caches++] = 0;
                } else if (streq(a, "--perm")) {
                        char buf[256], *save = NULL;
                        if (n_caches == 0)
                                return log_error_errno(EINVAL, "--perm must follow --cache"), 2;
                        snprintf(buf, sizeof buf, "%s", v);
                        for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
                                int pr = streq(p, "all") ? -2 : token_perm_from_string(p);
                                if (pr == -2)
                                        perms[n_caches - 1] |= TOKEN_PERMS_ALL;
                                else if (pr < 0)
                                        return log_error_errno(EINVAL, "unknown permission '%s'", p), 2;
                                else
                                        perms[n_caches - 1] |= TOKEN_PERM_BIT(pr);
                        }
                } else
                        return log_error_errno(EINVAL, "unknown option %s", a), 2;
        }
        if (n_caches == 0)
                return log_error_errno(EINVAL, "at least one --cache PATTERN --perm LIST is needed"), 2;
        if (parse_duration(valid, &validity) < 0)
                return log_error_errno(EINVAL, "bad --valid '%s'", valid), 2;
        r = load_secret(cfg, &secret);
        if (r < 0)
                return 1;
        r = token_claims_new(sub, (int64_t) time(NULL) + validity, &claims);
        for (size_t i = 0; r >= 0 && i < n_caches; i++)
                r = token_claims_grant(claims, caches[i], perms[i]);
        if (r >= 0)
                r = token_encode(claims, secret.key, secret.len, &tok);
        token_secret_wipe(&secret);
        if (r < 0)
                return log_error_errno(r, "cannot make token: %s", strerror(-r)), 1;
        printf("%s\n", tok);
        free(tok);
        return 0;
}

static void observe_status(void *userdata, unsigned status) {
        struct troved *t = userdata;
        if (status >= 500)
                METRIC_ADD(t, responses_5xx, 1);
        else if (status >= 400)
                METRIC_ADD(t, responses_4xx, 1);
}

int main(int argc, char **argv) {
        struct troved t = {};
        struct pgembed *pg = NULL;
        struct trove_error err = {};
        char path[4096];
        sigset_t mask;
        int r, sig, ret = 1;

        log_set_ident("troved");
        troved_config_defaults(&t.cfg);
        if (argc > 1 && streq(argv[1], "token")) {
                r = troved_config_load(&t.cfg, 1, argv); /* file and environment */
                ret = r < 0 ? 2 : cmd_token(&t.cfg, argc - 1, argv + 1);
                troved_config_free(&t.cfg);
                return ret;
        }
        r = troved_config_load(&t.cfg, argc, argv);
        if (r != 0) {
                troved_config_free(&t.cfg);
                return r > 0 ? 0 : 2;
        }
        log_set_max_level(t.cfg.log_level);

        /* Signals are taken synchronously by the main thread; the HTTP
         * threads inherit the blocked mask. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);

        r = mkdir_parents(t.cfg.state_dir, 0711);
        if (r < 0) {
                log_error_errno(r, "cannot create state directory %s: %s", t.cfg.state_dir, strerror(-r));
                goto out;
        }
        if (!t.cfg.database_url) {
                r = pgembed_start(t.cfg.state_dir, NULL, &pg, &err);
                if (r < 0) {
                        log_error_errno(r, "cannot start the embedded PostgreSQL in %s: %s", t.cfg.state_dir,
                                        err.msg[0] ? err.msg : strerror(-r));
                        goto out;
                }
                log_info("embedded PostgreSQL running in %s/pg", t.cfg.state_dir);
        }
        r = db_open(pg ? pgembed_conninfo(pg) : t.cfg.database_url, t.cfg.db_pool_size, &t.db);
        if (r < 0) {
                log_error_errno(r, "cannot open the database: %s", strerror(-r));
                goto out;
        }
        if (t.cfg.storage)
                snprintf(path, sizeof path, "%s", t.cfg.storage);
        else
                snprintf(path, sizeof path, "%s/chunks", t.cfg.state_dir);
        r = chunkstore_open_spec(path, &t.store);
        if (r < 0) {
                log_error_errno(r, "cannot open chunk store %s: %s", path, strerror(-r));
                goto out;
        }
        r = load_secret(&t.cfg, &t.secret);
        if (r < 0)
                goto out;
        r = nicache_new(16384, 10, &t.narinfos);
        if (r < 0)
                goto out;

        r = http_server_start(&(struct http_server_config){ .listen = t.cfg.listen,
                                                            .max_connections = t.cfg.max_connections,
                                                            .route = troved_route,
                                                            .userdata = &t,
                                                            .observe = observe_status },
                              &t.http);
        if (r < 0)
                goto out;
        log_info("serving on %s (port %u), chunks in %s (%s)", t.cfg.listen, http_server_port(t.http), path,
                 chunkstore_backend(t.store));

        for (;;) {
                r = sigwait(&mask, &sig);
                if (r == 0 && (sig == SIGTERM || sig == SIGINT))
                        break;
        }
        log_info("shutting down");
        ret = 0;
out:
        http_server_stop(t.http);
        nicache_free(t.narinfos);
        chunkstore_free(t.store);
        db_close(t.db);
        if (pg) {
                r = pgembed_stop(pg, &err);
                if (r < 0)
                        log_warning("stopping the embedded PostgreSQL: %s", err.msg);
        }
        token_secret_wipe(&t.secret);
        troved_config_free(&t.cfg);
        return ret;
}
