/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config.c - troved's settings: defaults, then the config file
 * ("key = value" lines, '#' comments), then TROVED_<KEY> environment
 * variables (upper case, '-' as '_'), then --key=value / --key value flags.
 * The same key names everywhere.
 */
#include <getopt.h>
#include <stdio.h>

#include "troved.h"
#include "trove/util.h"

static const char *const keys[] = {
        "listen",        "database-url",   "state-dir",      "storage",        "token-secret-file",
        "store-dir",     "chunk-min",      "chunk-avg",      "chunk-max",      "compression-level",
        "db-pool-size",  "max-nar-size",   "max-connections", "chunk-redirect", "log-level",
        "max-connections-per-client", "idle-timeout", "user", "oidc-config", "upstream-timeout",
        "upstream-negative-ttl", "s3-connect-timeout", "s3-timeout", "s3-request-timeout", "s3-retry-budget",
        "s3-breaker", "shutdown-timeout", "http-threads", "http-workers", "cache-ttl", "gc-interval", "gc-min-age",
        "delta", "recompress-level", "recompress-age", "recompress-batch",
};

void troved_config_defaults(struct troved_config *c) {
        *c = (struct troved_config){};
        c->listen = strdup("127.0.0.1:8080");
        c->state_dir = strdup("/var/lib/trove");
        c->store_dir = strdup("/nix/store");
        chunker_params_default(&c->chunking);
        c->compression_level = 3;
        c->delta = false;
        c->recompress_age_sec = 7 * 24 * 3600;
        c->recompress_batch = 10000;
        c->db_pool_size = 16;
        c->max_nar_size = (uint64_t) 64 << 30;
        c->max_connections = 1024;
        c->max_connections_per_client = 64;
        c->idle_timeout_sec = 60;
        c->http_threads = HTTPD_THREADS_DEFAULT;
        c->cache_ttl_sec = 5;
        c->upstream_timeout_sec = 30;
        c->upstream_negative_ttl_sec = 3600;
        c->s3_connect_timeout_sec = 5;
        c->s3_timeout_sec = 10;
        c->s3_request_timeout_sec = 60;
        c->s3_retry_budget_sec = 30;
        c->s3_breaker_sec = 10;
        c->shutdown_timeout_sec = 10;
        c->gc_interval_sec = 3600;
        c->gc_min_age_sec = 3600;
        c->log_level = TROVE_LOG_INFO;
}

void troved_config_free(struct troved_config *c) {
        free(c->config_file);
        free(c->listen);
        free(c->database_url);
        free(c->state_dir);
        free(c->storage);
        free(c->token_secret_file);
        free(c->store_dir);
        free(c->user);
        free(c->oidc_config);
        *c = (struct troved_config){};
}

static int set_str(char **field, const char *v) {
        char *s = strdup(v);
        if (!s)
                return -ENOMEM;
        free(*field);
        *field = s;
        return 0;
}

static int set_key(struct troved_config *c, const char *key, const char *v, const char *where) {
        uint64_t n;
        int r = 0;

        if (streq(key, "listen"))
                r = set_str(&c->listen, v);
        else if (streq(key, "database-url"))
                r = set_str(&c->database_url, v);
        else if (streq(key, "state-dir"))
                r = set_str(&c->state_dir, v);
        else if (streq(key, "storage"))
                r = set_str(&c->storage, v);
        else if (streq(key, "token-secret-file"))
                r = set_str(&c->token_secret_file, v);
        else if (streq(key, "store-dir"))
                r = set_str(&c->store_dir, v);
        else if (streq(key, "oidc-config"))
                r = *v ? set_str(&c->oidc_config, v) : -EINVAL;
        else if (streq(key, "user"))
                r = *v && strlen(v) < 256 ? set_str(&c->user, v) : -EINVAL;
        else if (streq(key, "chunk-redirect"))
                c->chunk_redirect = streq(v, "1") || streq(v, "true") || streq(v, "yes");
        else if (streq(key, "delta")) {
                if (streq(v, "1") || streq(v, "true") || streq(v, "yes") || streq(v, "on"))
                        c->delta = true;
                else if (streq(v, "0") || streq(v, "false") || streq(v, "no") || streq(v, "off"))
                        c->delta = false;
                else
                        r = -EINVAL;
        }
        else if (streq(key, "log-level")) {
                if (streq(v, "debug"))
                        c->log_level = TROVE_LOG_DEBUG;
                else if (streq(v, "info"))
                        c->log_level = TROVE_LOG_INFO;
                else if (streq(v, "warning"))
                        c->log_level = TROVE_LOG_WARNING;
                else if (streq(v, "error"))
                        c->log_level = TROVE_LOG_ERR;
                else
                        r = -EINVAL;
        } else {
                r = parse_size(v, &n);
                if (r < 0)
                        ;
                else if (streq(key, "chunk-min") || streq(key, "chunk-avg") || streq(key, "chunk-max")) {
                        if (n > UINT32_MAX)
                                r = -ERANGE;
                        else if (streq(key, "chunk-min"))
                                c->chunking.min_size = (uint32_t) n;
                        else if (streq(key, "chunk-avg"))
                                c->chunking.avg_size = (uint32_t) n;
                        else
                                c->chunking.max_size = (uint32_t) n;
                } else if (streq(key, "compression-level")) {
                        if (n < 1 || n > 19)
                                r = -ERANGE;
                        else
                                c->compression_level = (int) n;
                } else if (streq(key, "db-pool-size")) {
                        if (n < 1 || n > 256)
                                r = -ERANGE;
                        else
                                c->db_pool_size = (unsigned) n;
                } else if (streq(key, "max-nar-size"))
                        c->max_nar_size = n;
                else if (streq(key, "max-connections")) {
                        if (n < 1 || n > 65536)
                                r = -ERANGE;
                        else
                                c->max_connections = (unsigned) n;
                } else if (streq(key, "max-connections-per-client")) {
                        if (n < 1 || n > 65536)
                                r = -ERANGE;
                        else
                                c->max_connections_per_client = (unsigned) n;
                } else if (streq(key, "idle-timeout")) {
                        if (n < 1 || n > 3600)
                                r = -ERANGE;
                        else
                                c->idle_timeout_sec = (unsigned) n;
                } else if (streq(key, "http-threads")) {
                        if (n < 1 || n > 1024)
                                r = -ERANGE;
                        else
                                c->http_threads = (unsigned) n;
                } else if (streq(key, "http-workers")) {
                        if (n < 1 || n > HTTPD_WORKERS_MAX)
                                r = -ERANGE;
                        else
                                c->http_workers = (unsigned) n;
                } else if (streq(key, "cache-ttl")) {
                        if (n > 3600)
                                r = -ERANGE;
                        else
                                c->cache_ttl_sec = (unsigned) n;
                } else if (streq(key, "upstream-timeout")) {
                        if (n < 1 || n > 3600)
                                r = -ERANGE;
                        else
                                c->upstream_timeout_sec = (unsigned) n;
                } else if (streq(key, "s3-connect-timeout") || streq(key, "s3-timeout") ||
                           streq(key, "s3-request-timeout") || streq(key, "s3-retry-budget") ||
                           streq(key, "s3-breaker") || streq(key, "shutdown-timeout")) {
                        unsigned *field = streq(key, "s3-connect-timeout") ? &c->s3_connect_timeout_sec
                                          : streq(key, "s3-timeout")       ? &c->s3_timeout_sec
                                          : streq(key, "s3-request-timeout") ? &c->s3_request_timeout_sec
                                          : streq(key, "s3-retry-budget")  ? &c->s3_retry_budget_sec
                                          : streq(key, "s3-breaker")       ? &c->s3_breaker_sec
                                                                           : &c->shutdown_timeout_sec;
                        if (n < 1 || n > 3600)
                                r = -ERANGE;
                        else
                                *field = (unsigned) n;
                } else if (streq(key, "upstream-negative-ttl")) {
                        if (n > 30 * 86400)
                                r = -ERANGE;
                        else
                                c->upstream_negative_ttl_sec = (unsigned) n;
                } else if (streq(key, "gc-interval")) {
                        if (n > 7 * 86400 || (n > 0 && n < 10))
                                r = -ERANGE;
                        else
                                c->gc_interval_sec = (unsigned) n;
                } else if (streq(key, "gc-min-age")) {
                        if (n < 60 || n > 30 * 86400)
                                r = -ERANGE;
                        else
                                c->gc_min_age_sec = (unsigned) n;
                } else if (streq(key, "recompress-level")) {
                        if (n > 22)
                                r = -ERANGE;
                        else
                                c->recompress_level = (int) n;
                } else if (streq(key, "recompress-age")) {
                        if (n < 60 || n > 365 * 86400)
                                r = -ERANGE;
                        else
                                c->recompress_age_sec = (unsigned) n;
                } else if (streq(key, "recompress-batch")) {
                        if (n < 1 || n > 10000000)
                                r = -ERANGE;
                        else
                                c->recompress_batch = (unsigned) n;
                } else
                        return log_error_errno(EINVAL, "%s: unknown setting '%s'", where, key);
        }
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return log_error_errno(EINVAL, "%s: bad value '%s' for '%s'", where, v, key);
        return 0;
}

static char *trim(char *s) {
        char *e;
        while (*s == ' ' || *s == '\t')
                s++;
        e = s + strlen(s);
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
                *--e = 0;
        return s;
}

static int load_file(struct troved_config *c, const char *path) {
        FILE *f = fopen(path, "re");
        char line[4096], where[4200];
        unsigned lineno = 0;
        int r;

        if (!f)
                return log_error_errno(errno, "cannot open config file %s: %m", path);
        while (fgets(line, sizeof line, f)) {
                char *s, *eq, *k, *v;
                lineno++;
                if (!strchr(line, '\n') && !feof(f)) {
                        fclose(f);
                        return log_error_errno(EINVAL, "%s:%u: line too long", path, lineno);
                }
                s = trim(line);
                if (!*s || *s == '#')
                        continue;
                eq = strchr(s, '=');
                if (!eq) {
                        fclose(f);
                        return log_error_errno(EINVAL, "%s:%u: expected 'key = value'", path, lineno);
                }
                *eq = 0;
                k = trim(s);
                v = trim(eq + 1);
                if (strlen(v) >= 2 && v[0] == '"' && v[strlen(v) - 1] == '"') {
                        v[strlen(v) - 1] = 0;
                        v++;
                }
                snprintf(where, sizeof where, "%s:%u", path, lineno);
                r = set_key(c, k, v, where);
                if (r < 0) {
                        fclose(f);
                        return r;
                }
        }
        fclose(f);
        return 0;
}

static void usage(FILE *f) {
        fprintf(f,
                "usage: troved [OPTIONS]\n"
                "       troved token [--secret-file F] [--sub NAME] --cache PATTERN --perm P[,P...] [--valid DURATION]\n"
                "\n"
                "The trove cache server. Settings come from the config file, then TROVED_<KEY>\n"
                "environment variables (e.g. TROVED_DATABASE_URL), then these options:\n"
                "\n"
                "  -c, --config FILE            config file ('key = value' lines)\n"
                "  --listen HOST:PORT           address to serve on (127.0.0.1:8080)\n"
                "  --database-url URL           PostgreSQL connection string; without it troved runs\n"
                "                               its own PostgreSQL in the state directory\n"
                "  --state-dir DIR              state directory (/var/lib/trove)\n"
                "  --storage SPEC               chunk store: /path, or s3://BUCKET?endpoint=URL[&region=R]\n"
                "                               [&prefix=P][&create=1] with AWS_ACCESS_KEY_ID and\n"
                "                               AWS_SECRET_ACCESS_KEY in the environment (<state-dir>/chunks)\n"
                "  --token-secret-file FILE     token signing secret (<state-dir>/token-secret, made if missing)\n"
                "  --store-dir DIR              store directory of new caches (/nix/store)\n"
                "  --chunk-min/--chunk-avg/--chunk-max SIZE   FastCDC bounds (16K/64K/256K)\n"
                "  --compression-level N        zstd level of stored chunks (3)\n"
                "  --db-pool-size N             database connections (16)\n"
                "  --max-nar-size SIZE          largest NAR accepted (64G)\n"
                "  --max-connections N          concurrent HTTP connections (1024)\n"
                "  --max-connections-per-client N   concurrent connections from one address (64)\n"
                "  --idle-timeout SECONDS       close a connection idle this long, 1..3600 (60)\n"
                "  --http-threads N             event-loop threads serving connections, 1..1024 (16)\n"
                "  --http-workers N             threads running requests that may block (uploads,\n"
                "                               commits, pull-through), 1..256 (4 per CPU, at most 64)\n"
                "  --cache-ttl SECONDS          answers kept in memory at most this long; the bound\n"
                "                               on what other instances' changes take to show, 0..3600 (5)\n"
                "  --upstream-timeout SECONDS   bound on an upstream cache's narinfo answer, 1..3600 (30);\n"
                "                               a NAR download may take this plus 1 s per 256 KiB\n"
                "  --upstream-negative-ttl SECONDS  how long an upstream miss is remembered, 0..2592000 (3600)\n"
                "  --gc-interval SECONDS        run garbage collection this often, 10..604800, 0 = never (3600);\n"
                "                               instances sharing a database take turns\n"
                "  --gc-min-age SECONDS         chunks, NARs and uploads younger than this are left alone by\n"
                "                               scheduled collections (a push in flight uses them), 60..2592000 (3600)\n"
                "  --chunk-redirect BOOL        redirect chunk downloads to presigned S3 URLs (false)\n"
                "  --recompress-level N         after each scheduled GC, recompress cold chunks at this zstd\n"
                "                               level (above --compression-level, up to 22); 0 = off (0)\n"
                "  --recompress-age SECONDS     cold: older than this and unused by any path for as long,\n"
                "                               60..31536000 (604800)\n"
                "  --recompress-batch N         chunks examined per scheduled run, 1..10000000 (10000)\n"
                "  --delta BOOL                 store a new chunk similar to a stored one as a delta\n"
                "                               against it when that is smaller (false)\n"
                "  --s3-connect-timeout SECONDS bound on connecting to S3, 1..3600 (5)\n"
                "  --s3-timeout SECONDS         an S3 request that moves no byte this long (the first\n"
                "                               byte of the answer included) is given up, 1..3600 (10)\n"
                "  --s3-request-timeout SECONDS bound on one S3 request in all, 1..3600 (60)\n"
                "  --s3-retry-budget SECONDS    no retry of an S3 call starts after this, 1..3600 (30)\n"
                "  --s3-breaker SECONDS         once S3 is found unreachable (3 failed requests in a row),\n"
                "                               requests that need it fail at once with 503 for this long,\n"
                "                               then one probe goes through, 1..3600 (10)\n"
                "  --shutdown-timeout SECONDS   SIGTERM ends troved within this, whatever S3 does,\n"
                "                               1..3600 (10)\n"
                "  --oidc-config FILE           trusted CI issuers and rules of POST /_api/v1/token-exchange\n"
                "                               (JSON, docs/oidc.md; none: no exchange)\n"
                "  --log-level LEVEL            debug, info, warning, error (info)\n"
                "  --user NAME                  started as root: the user to run as once the database,\n"
                "                               the secret and the listening socket are set up (trove;\n"
                "                               'root' keeps root); the embedded PostgreSQL runs as it too\n"
                "  -h, --help                   this text\n"
                "  --version                    print the version\n");
}

int troved_config_load(struct troved_config *c, int argc, char **argv) {
        const char *cfg = getenv("TROVED_CONFIG");
        int r;

        /* The config file comes first, whatever the order on the command line. */
        for (int i = 1; i < argc; i++) {
                if ((streq(argv[i], "-c") || streq(argv[i], "--config")) && i + 1 < argc)
                        cfg = argv[i + 1];
                else if (startswith(argv[i], "--config="))
                        cfg = argv[i] + strlen("--config=");
        }
        if (cfg) {
                r = set_str(&c->config_file, cfg);
                if (r < 0)
                        return r;
                r = load_file(c, cfg);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                char env[64];
                const char *v;
                size_t k;
                snprintf(env, sizeof env, "TROVED_%s", keys[i]);
                for (k = 7; env[k]; k++)
                        env[k] = env[k] == '-' ? '_' : (char) (env[k] >= 'a' && env[k] <= 'z' ? env[k] - 32 : env[k]);
                v = getenv(env);
                if (v) {
                        r = set_key(c, keys[i], v, env);
                        if (r < 0)
                                return r;
                }
        }
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i], *v;
                char key[64];
                size_t kl;

                if (streq(a, "-h") || streq(a, "--help")) {
                        usage(stdout);
                        return 1;
                }
                if (streq(a, "--version")) {
                        printf("troved %s\n", TROVE_VERSION);
                        return 1;
                }
                if (streq(a, "-c") || streq(a, "--config")) {
                        i++;
                        continue;
                }
                if (startswith(a, "--config="))
                        continue;
                if (!startswith(a, "--")) {
                        usage(stderr);
                        return log_error_errno(EINVAL, "unexpected argument '%s'", a);
                }
                a += 2;
                v = strchr(a, '=');
                kl = v ? (size_t) (v - a) : strlen(a);
                if (kl >= sizeof key)
                        return log_error_errno(EINVAL, "unknown option --%s", a);
                memcpy(key, a, kl);
                key[kl] = 0;
                if (v)
                        v++;
                else if (i + 1 < argc)
                        v = argv[++i];
                else
                        return log_error_errno(EINVAL, "option --%s needs a value", key);
                r = set_key(c, key, v, "command line");
                if (r < 0)
                        return r;
        }
        r = chunker_params_check(&c->chunking);
        if (r < 0)
                return log_error_errno(EINVAL,
                                       "chunking bounds %u/%u/%u are invalid (need 64 <= min < avg < max, avg a power of two)",
                                       c->chunking.min_size, c->chunking.avg_size, c->chunking.max_size);
        if (c->recompress_level > 0 && c->recompress_level <= c->compression_level)
                return log_error_errno(EINVAL, "recompress-level %d must be above compression-level %d",
                                       c->recompress_level, c->compression_level);
        return 0;
}
