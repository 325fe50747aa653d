/* SPDX-License-Identifier: Apache-2.0 */
/*
 * troved.c - start-up and shutdown: configuration, the embedded or external
 * PostgreSQL, the chunk store, the token secret, the HTTP server; and the
 * `troved token` subcommand that mints tokens from the server secret.
 */
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>

#include "trove/pgembed.h"
#include "trove/util.h"
#include "troved.h"
#include "exchange.h"
#include "gc.h"
#include "lastuse.h"
#include "storage.h"
#include "upstream.h"
#include "usage.h"

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

/* Who troved runs as once it is set up. Started as root it drops to
 * cfg->user, by default the embedded PostgreSQL's user ($TROVE_PG_USER,
 * else "trove"), unless that is "root". Started as anyone else it stays
 * who it is. */
struct run_as {
        bool drop;
        const char *name;
        uid_t uid;
        gid_t gid;
};

static int resolve_run_as(const struct troved_config *c, struct run_as *ret) {
        struct trove_error err = {};
        const char *env = getenv("TROVE_PG_USER");
        const char *name = c->user ? c->user : env && *env ? env : "trove";
        int r;

        *ret = (struct run_as){ .name = name };
        if (geteuid() != 0) {
                struct passwd *pw = getpwuid(geteuid());
                if (c->user && (!pw || !streq(pw->pw_name, c->user)))
                        return log_error_errno(EPERM, "--user %s needs troved to be started as root (it runs as %s)",
                                               c->user, pw ? pw->pw_name : "an unnamed user");
                return 0;
        }
        if (streq(name, "root")) {
                log_warning("running as root, as asked (--user root)");
                return 0;
        }
        r = pgembed_resolve_user(name, &ret->uid, &ret->gid, &err);
        if (r < 0)
                return log_error_errno(r, "cannot run as user %s: %s", name, err.msg[0] ? err.msg : strerror(-r));
        if (ret->uid == 0 || ret->gid == 0)
                return log_error_errno(EPERM, "user %s has uid or gid 0; pass --user root to keep root", name);
        ret->drop = true;
        return 0;
}

static uid_t handover_uid;
static gid_t handover_gid;

static int handover_one(const char *path, const struct stat *st, int type, struct FTW *f) {
        if (S_ISLNK(st->st_mode))
                return 0;
        if ((st->st_uid != handover_uid || st->st_gid != handover_gid) &&
            lchown(path, handover_uid, handover_gid) < 0)
                return -1;
        if ((st->st_mode & 077) && chmod(path, st->st_mode & 0700) < 0)
                return -1;
        return 0;
}

/* Hands the local chunk store at root over to the user troved drops to,
 * private to it (directories 0700, objects 0600): stores made by a troved
 * that kept running as root are root's and world-readable. The walk is
 * skipped when the top is already in order, so it happens once. Not
 * thread-safe (nftw has no context); runs before the drop, once. */
static int handover_chunk_store(const char *root, const struct run_as *as) {
        char chunks[PATH_MAX + 16];
        struct stat a, b;

        if (strlen(root) >= PATH_MAX)
                return log_error_errno(ENAMETOOLONG, "chunk store path too long");
        snprintf(chunks, sizeof chunks, "%s/chunks", root);
        if (lstat(root, &a) == 0 && lstat(chunks, &b) == 0 && a.st_uid == as->uid && b.st_uid == as->uid &&
            a.st_gid == as->gid && b.st_gid == as->gid && !(a.st_mode & 077) && !(b.st_mode & 077))
                return 0;
        log_info("handing the chunk store %s over to user %s", root, as->name);
        handover_uid = as->uid;
        handover_gid = as->gid;
        if (nftw(root, handover_one, 16, FTW_PHYS | FTW_MOUNT) < 0)
                return log_error_errno(errno, "cannot hand %s over to user %s: %m", root, as->name);
        return 0;
}

/* Drops root for good: no supplementary groups, gid before uid (setgid
 * needs the privilege the setuid gives up), real, effective and saved ids
 * all changed, then checked, including that root cannot be regained.
 * Called before any HTTP or database thread exists. */
static int drop_privileges(const struct run_as *as) {
        uid_t ru, eu, su;
        gid_t rg, eg, sg;

        if (setgroups(0, NULL) < 0)
                return log_error_errno(errno, "cannot clear the supplementary groups: %m");
        if (setresgid(as->gid, as->gid, as->gid) < 0)
                return log_error_errno(errno, "cannot set gid %u: %m", (unsigned) as->gid);
        if (setresuid(as->uid, as->uid, as->uid) < 0)
                return log_error_errno(errno, "cannot set uid %u: %m", (unsigned) as->uid);
        if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 || ru != as->uid || eu != as->uid ||
            su != as->uid || rg != as->gid || eg != as->gid || sg != as->gid || getgroups(0, NULL) != 0)
                return log_error_errno(EPERM, "the switch to user %s did not take", as->name);
        if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0 || setegid(0) == 0 ||
            setgroups(0, NULL) == 0)
                return log_error_errno(EPERM, "user %s can regain root; refusing to run", as->name);
        /* Nothing troved executes (pg_ctl) may gain privileges either. */
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return log_error_errno(errno, "cannot set no_new_privs: %m");
        log_info("running as user %s (uid %u, gid %u)", as->name, (unsigned) as->uid, (unsigned) as->gid);
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

/* The bound on shutdown: request threads that do not end (a database or
 * an upstream that hangs) must not keep troved alive past it. Nothing that
 * is visible depends on them finishing: every row is written in a
 * transaction, and what they stored without a row GC reclaims. */
static void *shutdown_watchdog(void *arg) {
        unsigned sec = (unsigned) (uintptr_t) arg;
        struct timespec ts = { .tv_sec = sec };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
        log_error("shutdown took longer than %u s (--shutdown-timeout); exiting with requests in flight", sec);
        _exit(1);
        return NULL;
}

static void start_shutdown_watchdog(unsigned sec) {
        pthread_t th;
        pthread_attr_t attr;

        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, shutdown_watchdog, (void *) (uintptr_t) sec) != 0)
                log_warning("cannot start the shutdown watchdog; shutdown is not bounded");
        pthread_attr_destroy(&attr);
}

/* A client told to come back (503) is told when: once the S3 breaker lets
 * a probe through, or in a few seconds. */
static unsigned retry_after(void *userdata) {
        struct troved *t = userdata;
        struct s3_stats st;

        if (chunkstore_s3_stats(t->store, &st) >= 0 && st.retry_after_s > 0)
                return st.retry_after_s;
        return 5;
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
        struct run_as as;
        char path[4096];
        const char *local_root = NULL;
        sigset_t mask;
        int r, sig, ret = 1, listen_fd = -1;

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

        r = resolve_run_as(&t.cfg, &as);
        if (r < 0)
                goto out;
        r = mkdir_parents(t.cfg.state_dir, 0711);
        if (r < 0) {
                log_error_errno(r, "cannot create state directory %s: %s", t.cfg.state_dir, strerror(-r));
                goto out;
        }
        /* Everything troved creates from here on is its user's alone. */
        umask(077);
        if (!t.cfg.database_url) {
                /* The cluster runs as the user troved drops to, so that
                 * troved can still stop it after the drop. */
                r = pgembed_start(t.cfg.state_dir, as.drop ? as.name : NULL, &pg, &err);
                if (r < 0) {
                        log_error_errno(r, "cannot start the embedded PostgreSQL in %s: %s", t.cfg.state_dir,
                                        err.msg[0] ? err.msg : strerror(-r));
                        goto out;
                }
                log_info("embedded PostgreSQL running in %s/pg", t.cfg.state_dir);
        }
        if (t.cfg.storage)
                snprintf(path, sizeof path, "%s", t.cfg.storage);
        else
                snprintf(path, sizeof path, "%s/chunks", t.cfg.state_dir);
        r = chunkstore_open_spec_tuned(path,
                                       &(struct s3_config){
                                               .connect_timeout_ms = (long) t.cfg.s3_connect_timeout_sec * 1000,
                                               .low_speed_time_s = (long) t.cfg.s3_timeout_sec,
                                               .request_timeout_ms = (long) t.cfg.s3_request_timeout_sec * 1000,
                                               .retry_budget_ms = t.cfg.s3_retry_budget_sec * 1000u,
                                               .breaker_open_ms = t.cfg.s3_breaker_sec * 1000u,
                                       },
                                       &t.store);
        if (r < 0) {
                log_error_errno(r, "cannot open chunk store %s: %s", path, strerror(-r));
                goto out;
        }
        if (streq(chunkstore_backend(t.store), "local"))
                local_root = startswith(path, "file://") ? path + strlen("file://") : path;
        if (as.drop && local_root) {
                r = handover_chunk_store(local_root, &as);
                if (r < 0)
                        goto out;
        }
        r = load_secret(&t.cfg, &t.secret);
        if (r >= 0)
                r = exchange_setup(&t);
        if (r < 0)
                goto out;
        r = nicache_new(16384, t.cfg.cache_ttl_sec, (size_t) 64 << 20, &t.narinfos);
        if (r >= 0)
                r = nicache_new(1024, 300, (size_t) 256 << 20, &t.manifests);
        if (r >= 0)
                r = tokcache_new(1024, &t.tokens);
        if (r >= 0)
                r = storage_memo_new(&t.present);
        if (r >= 0)
                r = usage_memo_new(&t.usage);
        if (r >= 0)
                r = upstream_new(&t.upstream);
        if (r >= 0)
                r = workpool_new(0, &t.pool);
        if (r >= 0)
                r = lastuse_new(16384, &t.lastuse);
        if (r < 0)
                goto out;

        /* The socket is bound first (a port below 1024 works), privileges
         * are dropped, and only then does any request thread start. */
        r = httpd_listen(t.cfg.listen, &listen_fd);
        if (r < 0)
                goto out;
        if (as.drop) {
                r = drop_privileges(&as);
                if (r < 0)
                        goto out;
        }
        /* After the drop: every database connection is the unprivileged
         * user's (peer authentication sees that user), and one that this
         * user cannot open fails here, not on some later request. */
        r = db_open(pg ? pgembed_conninfo(pg) : t.cfg.database_url, t.cfg.db_pool_size, &t.db);
        if (r < 0) {
                log_error_errno(r, "cannot open the database%s%s: %s", as.drop ? " as user " : "",
                                as.drop ? as.name : "", strerror(-r));
                goto out;
        }
        db_set_cache_ttl(t.db, t.cfg.cache_ttl_sec);
        r = httpd_server_start(&(struct httpd_server_config){ .listen = t.cfg.listen,
                                                            .listen_fd = listen_fd,
                                                            .max_connections = t.cfg.max_connections,
                                                            .max_connections_per_client =
                                                                    t.cfg.max_connections_per_client,
                                                            .connection_timeout_sec = t.cfg.idle_timeout_sec,
                                                            .threads = t.cfg.http_threads,
                                                            .workers = t.cfg.http_workers,
                                                            .route = troved_route,
                                                            .userdata = &t,
                                                            .observe = observe_status,
                                                            .retry_after = retry_after },
                              &t.http);
        if (r < 0)
                goto out;
        listen_fd = -1; /* the server owns it now */
        r = gc_start(&t);
        if (r < 0)
                goto out;
        log_info("serving on %s (port %u), chunks in %s (%s)", t.cfg.listen, httpd_server_port(t.http), path,
                 chunkstore_backend(t.store));

        for (;;) {
                r = sigwait(&mask, &sig);
                if (r == 0 && (sig == SIGTERM || sig == SIGINT))
                        break;
        }
        log_info("shutting down");
        ret = 0;
        start_shutdown_watchdog(t.cfg.shutdown_timeout_sec);
        /* Requests waiting on S3 end now (503): their uploads are
         * abandoned before anything of them became visible, and what
         * reached the bucket without a row is an orphan that GC removes. */
        chunkstore_cancel(t.store);
out:
        /* A collection in progress ends first (after its batch), so that
         * stopping the HTTP server does not wait for a long run. */
        gc_stop(&t);
        httpd_server_stop(t.http);
        if (t.lastuse && t.db)
                (void) lastuse_flush(t.lastuse, t.db);
        lastuse_free(t.lastuse);
        if (listen_fd >= 0)
                close(listen_fd);
        nicache_free(t.narinfos);
        nicache_free(t.manifests);
        tokcache_free(t.tokens);
        storage_memo_free(t.present);
        usage_memo_free(t.usage);
        exchange_teardown(&t);
        upstream_free(t.upstream);
        workpool_free(t.pool);
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
