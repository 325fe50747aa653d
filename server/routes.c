/* SPDX-License-Identifier: Apache-2.0 */
/*
 * routes.c - what troved answers, and who may ask: one table, read top to
 * bottom. For every request, before a single body byte is read, the
 * dispatcher finds the row, authenticates the caller, checks the row's
 * permission (loading the cache the path names), and sets the row's body
 * cap; handlers (nix.c, api.c) see only requests that were allowed.
 *
 * Adding a route is adding a row. Patterns are '/'-separated segments: a
 * literal, or a parameter optionally followed by a literal suffix:
 *   {cache}  a cache name (cache_name_valid)
 *   {hash}   a store path hash part (32 nix32 characters)
 *   {chunk}  a chunk id (64 lower-case hex digits)
 *   {file}   one file name of at most 127 of [A-Za-z0-9._+?=-] (the characters of
 *            store path names), not "." or ".."
 * A row for GET also answers HEAD.
 */
#include <assert.h>
#include <stdio.h>

#include "api.h"
#include "exchange.h"
#include "nix.h"
#include "request.h"
#include "storage.h"
#include "troved.h"
#include "trove/narinfo.h"
#include "trove/util.h"

enum access {
        ANYONE,       /* no token needed, none looked at (health, metrics) */
        ON_CACHE,     /* perm on the path's {cache}; anonymous pull of a public cache */
        ON_ALL,       /* perm on every cache ("*") */
};

/* Where a row's work runs: cheap rows on the event loop of the connection;
 * rows that may block (database, chunk store, upstream caches) on httpd's
 * worker threads, so that they never stall the loop's other connections.
 * Routing and authorization always run on the loop. */
enum runs_on {
        LOOP,
        WORKER,   /* the handler of a bodiless row; the body callbacks of the others */
        STORE,    /* as WORKER, for a body that becomes chunk objects: unless
                   * the chunk store is known to work (S3 breaker closed) it is
                   * refused with 503 before a byte of it is read, so that a
                   * client's retry never waits on a body it has already given
                   * away (Nix resends an upload without rewinding it) */
};

/* Body caps that depend on the configuration. */
#define BODY_NAR UINT64_MAX       /* max_nar_size plus compression slack */
#define BODY_DISCARD (UINT64_MAX - 1) /* read and dropped: bounded, never held */

struct route {
        const char *method;
        const char *pattern;
        enum access access;
        enum token_perm perm;
        uint64_t body_max;        /* 0: the request takes no body */
        troved_handler_fn handler;        /* called once allowed, or */
        troved_collected_fn collect;      /* called with the body, collected within body_max */
        enum runs_on runs_on;
};

#define PULL TOKEN_PERM_PULL
#define PUSH TOKEN_PERM_PUSH

static const struct route routes[] = {
        /* method   pattern                                          access    perm                     body                       handler, or NULL and collect(rq, body)   runs on */
        { "GET",    "/health",                                       ANYONE,   0,                       0,                         api_health, NULL, LOOP   },
        { "GET",    "/_api/v1/health",                               ANYONE,   0,                       0,                         api_health, NULL, LOOP   },
        { "GET",    "/metrics",                                      ANYONE,   0,                       0,                         api_metrics, NULL, LOOP   },
        /* The CI job's ID token in the body is the credential (exchange.c). */
        { "POST",   "/_api/v1/token-exchange",                       ANYONE,   0,                       EXCHANGE_BODY_MAX,         NULL, exchange_token, WORKER },
        { "POST",   "/_api/v1/gc",                                   ON_ALL,   TOKEN_PERM_DESTROY,      0,                         api_gc, NULL, WORKER },
        { "POST",   "/_api/v1/recompress",                           ON_ALL,   TOKEN_PERM_DESTROY,      0,                         api_recompress, NULL, WORKER },
        { "GET",    "/_api/v1/caches/{cache}",                       ON_CACHE, PULL,                    0,                         api_cache_get, NULL, WORKER },
        { "POST",   "/_api/v1/caches/{cache}",                       ON_CACHE, TOKEN_PERM_CREATE,       API_CONFIG_BODY_MAX,       NULL, api_cache_create, WORKER },
        { "PUT",    "/_api/v1/caches/{cache}",                       ON_CACHE, TOKEN_PERM_CREATE,       API_CONFIG_BODY_MAX,       NULL, api_cache_create, WORKER },
        { "PATCH",  "/_api/v1/caches/{cache}",                       ON_CACHE, TOKEN_PERM_CONFIGURE,    API_CONFIG_BODY_MAX,       NULL, api_cache_configure, WORKER },
        { "DELETE", "/_api/v1/caches/{cache}",                       ON_CACHE, TOKEN_PERM_DESTROY,      0,                         api_cache_destroy, NULL, WORKER },
        { "DELETE", "/_api/v1/caches/{cache}/paths/{hash}",          ON_CACHE, TOKEN_PERM_DELETE,       0,                         api_path_delete, NULL, WORKER },
        { "POST",   "/_api/v1/caches/{cache}/delete-paths",          ON_CACHE, TOKEN_PERM_DELETE,       API_LIST_BODY_MAX,         NULL, api_paths_delete, WORKER },
        /* Pinning keeps paths (a pusher's call); unpinning lets them go. */
        { "GET",    "/_api/v1/caches/{cache}/pins",                  ON_CACHE, PULL,                    0,                         api_pins_get, NULL, WORKER },
        { "POST",   "/_api/v1/caches/{cache}/pin",                   ON_CACHE, PUSH,                    API_LIST_BODY_MAX,         NULL, api_pin, WORKER },
        { "POST",   "/_api/v1/caches/{cache}/unpin",                 ON_CACHE, TOKEN_PERM_DELETE,       API_LIST_BODY_MAX,         NULL, api_unpin, WORKER },
        { "POST",   "/_api/v1/caches/{cache}/rotate-key",            ON_CACHE, TOKEN_PERM_CONFIGURE,    API_CONFIG_BODY_MAX,       NULL, api_rotate_key, WORKER },
        { "POST",   "/_api/v1/caches/{cache}/paths",                 ON_CACHE, PUSH,                    API_MANIFEST_BODY_MAX,     NULL, api_path_commit, WORKER },
        { "POST",   "/_api/v1/caches/{cache}/missing-paths",         ON_CACHE, PULL,                    API_LIST_BODY_MAX,         NULL, api_missing_paths, WORKER },
        { "POST",   "/_api/v1/caches/{cache}/missing-chunks",        ON_CACHE, PUSH,                    API_LIST_BODY_MAX,         NULL, api_missing_chunks, WORKER },
        { "POST",   "/_api/v1/caches/{cache}/chunks",                ON_CACHE, PUSH,                    API_BATCH_BODY_MAX,        NULL, api_chunks_post, STORE  },
        { "GET",    "/_api/v1/caches/{cache}/chunks/{chunk}",        ON_CACHE, PULL,                    0,                         api_chunk_get, NULL, WORKER },
        { "PUT",    "/_api/v1/caches/{cache}/chunks/{chunk}",        ON_CACHE, PUSH,                    API_CHUNK_PUT_BODY_MAX,    NULL, api_chunk_put, STORE  },
        { "GET",    "/_api/v1/caches/{cache}/manifests/{hash}",      ON_CACHE, PULL,                    0,                         api_manifest_get, NULL, WORKER },
        /* Learned prefetch: mounts read profiles and report what they read (pull suffices for both). */
        { "GET",    "/_api/v1/caches/{cache}/profiles/{hash}",       ON_CACHE, PULL,                    0,                         api_profile_get, NULL, WORKER },
        { "POST",   "/_api/v1/caches/{cache}/profiles",              ON_CACHE, PULL,                    API_PROFILE_BODY_MAX,      NULL, api_profiles_report, WORKER },
        /* The Nix binary-cache protocol, below /<cache>/ (the API rows above match first). */
        { "GET",    "/{cache}/nix-cache-info",                       ON_CACHE, PULL,                    0,                         nix_cache_info, NULL, LOOP   },
        /* Answered on the loop from memory; a lookup or pull defers itself. */
        { "GET",    "/{cache}/{hash}.narinfo",                       ON_CACHE, PULL,                    0,                         nix_narinfo_get, NULL, LOOP   },
        { "PUT",    "/{cache}/{hash}.narinfo",                       ON_CACHE, PUSH,                    NARINFO_MAX_SIZE,          NULL, nix_narinfo_put, WORKER },
        { "GET",    "/{cache}/{hash}.ls",                            ON_CACHE, PULL,                    0,                         nix_listing_get, NULL, WORKER },
        { "PUT",    "/{cache}/{hash}.ls",                            ON_CACHE, PUSH,                    BODY_DISCARD,              nix_discard_put, NULL, LOOP   },
        { "GET",    "/{cache}/nar/{file}",                           ON_CACHE, PULL,                    0,                         nix_nar_get, NULL, WORKER },
        { "PUT",    "/{cache}/nar/{file}",                           ON_CACHE, PUSH,                    BODY_NAR,                  nix_nar_put, NULL, STORE  },
        { "PUT",    "/{cache}/log/{file}",                           ON_CACHE, PUSH,                    BODY_DISCARD,              nix_discard_put, NULL, LOOP   },
};

/* Uploads that are read and dropped (.ls, build logs) are bounded too. */
#define DISCARD_BODY_MAX (256u * 1024 * 1024)

/* ---- matching ---- */

static bool file_name_valid(const char *s, size_t n) {
        if (n == 0 || n > 127 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
                      s[i] == '.' || s[i] == '_' || s[i] == '+' || s[i] == '-' || s[i] == '?' || s[i] == '='))
                        return false;
        return true;
}

static bool chunk_id_valid(const char *s, size_t n) {
        if (n != 64)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

/* Matches one path segment [s, s+n) against one pattern segment [p, p+pn);
 * captures parameters into rq. */
static bool match_segment(const char *p, size_t pn, const char *s, size_t n, struct troved_request *rq) {
        const char *close;
        size_t name_len, suffix_len, value_len;

        if (pn == 0 || p[0] != '{')
                return pn == n && memcmp(p, s, n) == 0;
        close = memchr(p, '}', pn);
        assert(close);
        name_len = (size_t) (close - p - 1);
        suffix_len = pn - (size_t) (close - p) - 1;
        if (n <= suffix_len || memcmp(s + n - suffix_len, close + 1, suffix_len) != 0)
                return false;
        value_len = n - suffix_len;
#define PARAM(lit) (name_len == sizeof(lit) - 1 && memcmp(p + 1, lit, name_len) == 0)
        if (PARAM("cache")) {
                if (!cache_name_valid(s, value_len))
                        return false;
                memcpy(rq->cache_name, s, value_len);
                rq->cache_name[value_len] = 0;
        } else if (PARAM("hash")) {
                if (value_len != STOREPATH_HASH_LEN || !storepath_is_hash_part(s, value_len))
                        return false;
                memcpy(rq->hash, s, value_len);
                rq->hash[value_len] = 0;
        } else if (PARAM("chunk") || PARAM("file")) {
                if (PARAM("chunk") ? !chunk_id_valid(s, value_len) : !file_name_valid(s, value_len))
                        return false;
                memcpy(rq->arg, s, value_len);
                rq->arg[value_len] = 0;
        } else {
                assert(!"unknown route parameter");
                return false;
        }
#undef PARAM
        return true;
}

static bool match_path(const char *pattern, const char *path, struct troved_request *rq) {
        if (*pattern++ != '/' || *path++ != '/')
                return false;
        for (;;) {
                const char *pe = strchrnul(pattern, '/'), *se = strchrnul(path, '/');
                if (!match_segment(pattern, (size_t) (pe - pattern), path, (size_t) (se - path), rq))
                        return false;
                if (!*pe || !*se)
                        return !*pe && !*se;
                pattern = pe + 1;
                path = se + 1;
        }
}

static bool method_matches(const char *row, const char *method) {
        return streq(row, method) || (streq(row, "GET") && streq(method, "HEAD"));
}

/* ---- authorization ---- */

static int authorize(struct troved_request *rq, const struct route *rt) {
        int r;

        if (rt->access == ANYONE)
                return 0;
        r = auth_parse(rq->t, rq->http, &rq->auth);
        if (r < 0)
                return r;
        if (rt->access == ON_ALL)
                return auth_require_all(rq->http, &rq->auth, rt->perm);
        if (rt->perm == TOKEN_PERM_CREATE)
                /* The cache need not exist (the handler says 409 if it does). */
                return auth_require(rq->http, &rq->auth, NULL, rq->cache_name, rt->perm);
        return auth_open_cache(rq->t, rq->http, &rq->auth, rq->cache_name, rt->perm, &rq->cache);
}

static uint64_t body_cap(const struct troved *t, const struct route *rt) {
        if (rt->body_max == BODY_NAR)
                /* Compressed uploads may be larger than the NAR; the NAR
                 * itself is bounded inside ingest. */
                return t->cfg.max_nar_size + t->cfg.max_nar_size / 8 + 65536;
        if (rt->body_max == BODY_DISCARD)
                return DISCARD_BODY_MAX;
        return rt->body_max;
}

int troved_route(struct httpd_request *req, void *userdata) {
        struct troved *t = userdata;
        const char *path = httpd_request_path(req);
        const char *method = httpd_request_method(req);
        struct troved_request *rq;
        const struct route *rt = NULL;
        char allow[64] = "";
        int r;

        METRIC_ADD(t, requests, 1);
        rq = calloc(1, sizeof *rq);
        if (!rq)
                return -ENOMEM;
        rq->t = t;
        rq->http = req;
        httpd_request_set_state(req, rq, troved_request_free);

        for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
                if (!match_path(routes[i].pattern, path, rq))
                        continue;
                if (method_matches(routes[i].method, method)) {
                        rt = &routes[i];
                        break;
                }
                if (!strstr(allow, routes[i].method) && strlen(allow) + strlen(routes[i].method) + 8 < sizeof allow)
                        snprintf(allow + strlen(allow), sizeof allow - strlen(allow), "%s%s%s",
                                 allow[0] ? ", " : "", routes[i].method,
                                 streq(routes[i].method, "GET") ? ", HEAD" : "");
        }
        if (!rt) {
                if (!allow[0])
                        return httpd_reply_error(req, 404, "not found");
                httpd_add_header(req, "Allow", allow);
                return httpd_reply_error(req, 405, "method %s not allowed here (allowed: %s)", method, allow);
        }
        if (rt->body_max == 0 && (httpd_request_content_length(req) > 0 ||
                                  httpd_request_header(req, "Transfer-Encoding")))
                return httpd_reply_error(req, 400, "this request takes no body");
        r = authorize(rq, rt);
        if (r < 0)
                return r;
        if (rt->runs_on == STORE && storage_available(t) != 0)
                return httpd_reply_error(req, 503, "the chunk store is unreachable; uploads wait until it answers again");
        rq->body_max = body_cap(t, rt);
        if (rt->collect) {
                troved_collect_body(rq, rt->collect);
                if (rt->runs_on != LOOP)
                        httpd_request_offload(req);
                return 0;
        }
        if (rt->runs_on == WORKER && rt->body_max == 0) {
                troved_defer(rq, rt->handler);
                return 0;
        }
        r = rt->handler(rq);
        if (rt->runs_on != LOOP)
                httpd_request_offload(req);
        return r;
}
