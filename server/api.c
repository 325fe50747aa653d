/* SPDX-License-Identifier: Apache-2.0 */
/*
 * api.c - /_api/v1/: the chunked push protocol, manifests and chunks for
 * trovefs, cache administration, health and metrics. docs/api.md is the
 * contract.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>

#include "api.h"
#include "commit.h"
#include "gc.h"
#include "ingest.h"
#include "lastuse.h"
#include "delta.h"
#include "recompress.h"
#include "storage.h"
#include "upstream.h"
#include "usage.h"
#include "trove/chunkbatch.h"
#include "trove/chunkcodec.h"
#include "trove/manifest.h"
#include "trove/signing.h"
#include "trove/storepath.h"
#include "trove/util.h"


#define _cleanup_json_ _cleanup_(json_decrefp)

static int reply_json(struct httpd_request *req, unsigned status, json_t *j) {
        char *s = json_dumps(j, JSON_COMPACT);
        if (!s)
                return -ENOMEM;
        return httpd_reply_take(req, status, "application/json", s, strlen(s));
}

/* Which part is down. The database down is 503: nothing can be answered.
 * The chunk store down is 200 "degraded": narinfo, manifests and all that
 * comes from the database still work, and every instance shares the store,
 * so a load balancer gains nothing by taking this one out. */
int api_health(struct troved_request *rq) {
        struct httpd_request *req = rq->http;
        _cleanup_json_ json_t *out = NULL;
        int db = db_ping(rq->t->db);
        int store = chunkstore_probe(rq->t->store);

        out = json_pack("{s:s, s:s, s:s}", "status", db < 0 ? "unavailable" : store < 0 ? "degraded" : "ok",
                        "database", db < 0 ? "unavailable" : "ok", "chunkStore", store < 0 ? "unavailable" : "ok");
        if (!out)
                return -ENOMEM;
        if (db < 0)
                log_warning("health: database unavailable: %s", strerror(-db));
        if (store < 0)
                log_warning("health: chunk store unavailable: %s", strerror(-store));
        return reply_json(req, db < 0 ? 503 : 200, out);
}

static void metrics_s3(struct troved *t, struct buf *b) {
        static const struct {
                const char *name, *help;
        } counters[] = {
                { "s3_requests_total", "HTTP requests sent to S3 (attempts), by operation." },
                { "s3_errors_total", "S3 calls that failed (unreachable, timed out or 5xx after retries), by operation." },
                { "s3_timeouts_total", "S3 requests that timed out, by operation." },
                { "s3_rejected_total", "S3 calls failed at once because the breaker was open, by operation." },
        };
        struct s3_stats st;

        if (chunkstore_s3_stats(t->store, &st) < 0)
                return;
        for (size_t k = 0; k < ELEMENTSOF(counters); k++) {
                const uint64_t *v = k == 0 ? st.requests : k == 1 ? st.errors : k == 2 ? st.timeouts : st.rejected;
                buf_printf(b, "# HELP trove_%s %s\n# TYPE trove_%s counter\n", counters[k].name, counters[k].help,
                           counters[k].name);
                for (int op = 0; op < S3_OP_COUNT; op++)
                        buf_printf(b, "trove_%s{op=\"%s\"} %" PRIu64 "\n", counters[k].name, s3_op_name(op), v[op]);
        }
        buf_printf(b,
                   "# HELP trove_s3_breaker_state S3 circuit breaker: 0 closed, 1 open (S3 calls fail at once), 2 half open (one probe out).\n"
                   "# TYPE trove_s3_breaker_state gauge\ntrove_s3_breaker_state %d\n"
                   "# HELP trove_s3_breaker_opens_total Times the S3 circuit breaker opened.\n"
                   "# TYPE trove_s3_breaker_opens_total counter\ntrove_s3_breaker_opens_total %" PRIu64 "\n",
                   st.breaker == S3_BREAKER_OPEN ? 1 : st.breaker == S3_BREAKER_HALF_OPEN ? 2 : 0, st.breaker_opens);
}

int api_metrics(struct troved_request *rq) {
        struct troved *t = rq->t;
        struct httpd_request *req = rq->http;
        struct buf b = BUF_INIT(1u << 20);
        struct db_global_stats gs = {};
        unsigned busy, total;
        uint64_t waits;
        char *s;
        int r;

#define COUNTER(name, help, field)                                                                      \
        buf_printf(&b, "# HELP trove_" name " " help "\n# TYPE trove_" name " counter\ntrove_" name " %" PRIu64 "\n", \
                   (uint64_t) atomic_load(&t->m.field))
        COUNTER("http_requests_total", "HTTP requests received.", requests);
        COUNTER("http_responses_4xx_total", "Responses with a 4xx status.", responses_4xx);
        COUNTER("http_responses_5xx_total", "Responses with a 5xx status.", responses_5xx);
        COUNTER("bytes_received_total", "Request body bytes received.", bytes_in);
        COUNTER("bytes_sent_total", "NAR and chunk bytes sent.", bytes_out);
        COUNTER("narinfo_hits_total", "narinfo requests answered.", narinfo_hits);
        COUNTER("narinfo_misses_total", "narinfo requests for unknown paths.", narinfo_misses);
        COUNTER("chunks_stored_total", "New chunks stored.", chunks_uploaded);
        COUNTER("chunk_bytes_stored_total", "Uncompressed bytes of new chunks stored.", chunk_bytes_uploaded);
        COUNTER("dedup_hits_total", "Chunks that were already stored (deduplicated).", chunks_deduped);
        COUNTER("dedup_bytes_total", "Uncompressed bytes of deduplicated chunks.", chunk_bytes_deduped);
        COUNTER("delta_candidates_total", "New chunks for which a similar stored chunk was found.", delta_candidates);
        COUNTER("deltas_stored_total", "New chunks stored as deltas against a similar chunk.", deltas_stored);
        COUNTER("delta_bytes_saved_total", "Plain frame bytes minus delta object bytes of the chunks stored as deltas.",
                delta_bytes_saved);
        COUNTER("delta_reads_total", "Delta chunks decoded with their base on the server.", delta_reads);
        COUNTER("chunks_recompressed_total", "Cold chunks recompressed at a higher level.", chunks_recompressed);
        COUNTER("recompress_bytes_saved_total", "Stored bytes saved by recompression.", recompress_bytes_saved);
        COUNTER("nars_ingested_total", "NARs written.", nars_ingested);
        COUNTER("paths_committed_total", "Store paths made visible.", paths_committed);
        COUNTER("chunk_store_operations_total", "Chunk store get/put calls.", store_ops);
        COUNTER("chunk_store_errors_total", "Chunk store calls that failed.", store_errors);
        COUNTER("manifests_built_total", "Manifests built from the database (the rest came from memory).",
                manifests_built);
        COUNTER("usage_queries_total", "Storage statistics computed (at most one per 30 s each).", usage_queries);
        COUNTER("upstream_requests_total", "HTTP requests to upstream caches (narinfos and NARs).", upstream_requests);
        COUNTER("upstream_hits_total", "Paths pulled from an upstream cache.", upstream_hits);
        COUNTER("upstream_misses_total", "Pulls that no upstream could answer with a valid path (incl. remembered misses).",
                upstream_misses);
        COUNTER("upstream_bytes_total", "Bytes downloaded from upstream caches.", upstream_bytes);
        COUNTER("upstream_errors_total", "Pulls that failed because an upstream failed or timed out.", upstream_errors);
#undef COUNTER
        buf_printf(&b,
                   "# HELP trove_chunk_store_seconds_total Time spent in chunk store calls.\n"
                   "# TYPE trove_chunk_store_seconds_total counter\ntrove_chunk_store_seconds_total %.6f\n",
                   (double) atomic_load(&t->m.store_usec) / 1e6);
        buf_printf(&b,
                   "# HELP trove_upstream_seconds_total Time spent pulling from upstream caches.\n"
                   "# TYPE trove_upstream_seconds_total counter\ntrove_upstream_seconds_total %.6f\n",
                   (double) atomic_load(&t->m.upstream_usec) / 1e6);
        metrics_s3(t, &b);
        db_pool_usage(t->db, &busy, &total, &waits);
        buf_printf(&b,
                   "# HELP trove_db_pool_connections_in_use Database connections in use.\n"
                   "# TYPE trove_db_pool_connections_in_use gauge\ntrove_db_pool_connections_in_use %u\n"
                   "# HELP trove_db_pool_connections Database pool size.\n"
                   "# TYPE trove_db_pool_connections gauge\ntrove_db_pool_connections %u\n"
                   "# HELP trove_db_pool_waits_total Requests that waited for a database connection.\n"
                   "# TYPE trove_db_pool_waits_total counter\ntrove_db_pool_waits_total %" PRIu64 "\n",
                   busy, total, waits);
        r = usage_global(t, &gs);
        buf_printf(&b, "# HELP trove_up Whether the database answered this scrape.\n# TYPE trove_up gauge\ntrove_up %d\n",
                   r >= 0);
        if (r >= 0)
                buf_printf(&b,
                           "# HELP trove_chunks Distinct chunks stored.\n# TYPE trove_chunks gauge\ntrove_chunks %" PRIu64 "\n"
                           "# HELP trove_chunk_bytes Uncompressed bytes of distinct chunks.\n# TYPE trove_chunk_bytes gauge\ntrove_chunk_bytes %" PRIu64 "\n"
                           "# HELP trove_stored_bytes Bytes stored in the chunk store.\n# TYPE trove_stored_bytes gauge\ntrove_stored_bytes %" PRIu64 "\n"
                           "# HELP trove_nars Distinct NARs.\n# TYPE trove_nars gauge\ntrove_nars %" PRIu64 "\n"
                           "# HELP trove_nar_bytes Bytes of distinct NARs.\n# TYPE trove_nar_bytes gauge\ntrove_nar_bytes %" PRIu64 "\n"
                           "# HELP trove_paths Store paths in all caches.\n# TYPE trove_paths gauge\ntrove_paths %" PRIu64 "\n"
                           "# HELP trove_dedup_ratio NAR bytes per stored byte.\n# TYPE trove_dedup_ratio gauge\ntrove_dedup_ratio %.4f\n",
                           gs.chunks, gs.chunk_bytes, gs.chunk_stored_bytes, gs.nars, gs.nar_bytes, gs.paths,
                           gs.chunk_stored_bytes ? (double) gs.nar_bytes / (double) gs.chunk_stored_bytes : 0.0);
        if (r >= 0)
                buf_printf(&b,
                           "# HELP trove_stored_bytes_by_kind Bytes stored in the chunk store, by kind of chunk object.\n"
                           "# TYPE trove_stored_bytes_by_kind gauge\n"
                           "trove_stored_bytes_by_kind{kind=\"plain\"} %" PRIu64 "\n"
                           "trove_stored_bytes_by_kind{kind=\"delta\"} %" PRIu64 "\n"
                           "trove_stored_bytes_by_kind{kind=\"recompressed\"} %" PRIu64 "\n",
                           gs.stored_by_kind[0], gs.stored_by_kind[1], gs.stored_by_kind[2]);
        r = buf_steal(&b, &s, NULL);
        buf_free(&b);
        if (r < 0)
                return r;
        return httpd_reply_take(req, 200, "text/plain; version=0.0.4", s, strlen(s));
}

/* ---- caches ---- */

static json_t *cache_json(struct troved *t, const struct db_cache *c, bool with_stats) {
        struct signing_secret sk;
        struct signing_public pk;
        char pub[SIGNING_PUBLIC_TEXT_MAX];
        json_t *j;

        pub[0] = 0;
        if (signing_secret_parse(c->secret_key, &sk) >= 0) {
                signing_secret_to_public(&sk, &pk);
                signing_secret_wipe(&sk);
                signing_public_format(&pk, pub);
        }
        j = json_pack("{s:s, s:b, s:i, s:s, s:s, s:s, s:I, s:{s:I, s:I, s:I}}", "name", c->name, "public",
                      c->is_public, "priority", c->priority, "storeDir", c->store_dir, "publicKey", pub,
                      "upstreamKeys", c->upstream_keys, "retentionSeconds", (json_int_t) c->retention_sec,
                      "chunking", "min", (json_int_t) t->cfg.chunking.min_size, "avg",
                      (json_int_t) t->cfg.chunking.avg_size, "max", (json_int_t) t->cfg.chunking.max_size);
        if (j) {
                json_object_set_new(j, "quotaBytes", json_integer((json_int_t) c->quota_bytes));
                if (c->old_secret_key && c->old_secret_key[0] && signing_secret_parse(c->old_secret_key, &sk) >= 0) {
                        signing_secret_to_public(&sk, &pk);
                        signing_secret_wipe(&sk);
                        signing_public_format(&pk, pub);
                        json_object_set_new(j, "retiringPublicKey", json_string(pub));
                }
        }
        if (j) {
                json_t *ups = json_array();
                const char *u = c->upstreams ? c->upstreams : "";
                while (ups && *u) {
                        size_t n = strcspn(u, "\n");
                        if (n > 0)
                                json_array_append_new(ups, json_stringn(u, n));
                        u += n;
                        u += strspn(u, "\n");
                }
                json_object_set_new(j, "upstreams", ups ? ups : json_null());
        }
        if (j && with_stats) {
                struct db_cache_stats s;
                if (usage_cache(t, c->id, &s) >= 0) {
                        json_object_set_new(
                                j, "usage",
                                json_pack("{s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:I}", "paths", (json_int_t) s.paths,
                                          "narBytes", (json_int_t) s.nar_bytes, "storedBytes",
                                          (json_int_t) s.stored_bytes, "chunks", (json_int_t) s.chunks,
                                          "dedupRatio",
                                          s.stored_bytes ? (double) s.nar_bytes / (double) s.stored_bytes : 0.0,
                                          "pushedPaths", (json_int_t) (s.paths - s.pulled_paths), "pulledPaths",
                                          (json_int_t) s.pulled_paths, "pulledNarBytes",
                                          (json_int_t) s.pulled_nar_bytes));
                        json_t *u = json_object_get(j, "usage");
                        if (u)
                                json_object_set_new(u, "storedBytesByKind",
                                                    json_pack("{s:I, s:I, s:I}", "plain",
                                                              (json_int_t) s.stored_by_kind[0], "delta",
                                                              (json_int_t) s.stored_by_kind[1], "recompressed",
                                                              (json_int_t) s.stored_by_kind[2]));
                }
        }
        return j;
}

/* Applies the settable keys of a JSON config object to c. */
static int cache_apply_config(struct httpd_request *req, json_t *body, struct db_cache *c) {
        json_t *v;

        if (!json_is_object(body))
                return httpd_reply_error(req, 400, "expected a JSON object"), -EINVAL;
        if ((v = json_object_get(body, "public"))) {
                if (!json_is_boolean(v))
                        return httpd_reply_error(req, 400, "'public' must be a boolean"), -EINVAL;
                c->is_public = json_is_true(v);
        }
        if ((v = json_object_get(body, "priority"))) {
                if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 10000)
                        return httpd_reply_error(req, 400, "'priority' must be an integer 0..10000"), -EINVAL;
                c->priority = (int) json_integer_value(v);
        }
        if ((v = json_object_get(body, "retentionSeconds"))) {
                if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > DB_RETENTION_MAX)
                        return httpd_reply_error(req, 400, "'retentionSeconds' must be an integer 0..%lld (100 years)",
                                                 DB_RETENTION_MAX),
                               -EINVAL;
                c->retention_sec = json_integer_value(v);
        }
        if ((v = json_object_get(body, "quotaBytes"))) {
                if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > DB_QUOTA_MAX)
                        return httpd_reply_error(req, 400, "'quotaBytes' must be an integer 0..%lld (0: no quota)",
                                                 DB_QUOTA_MAX),
                               -EINVAL;
                c->quota_bytes = json_integer_value(v);
        }
        if ((v = json_object_get(body, "upstreamKeys"))) {
                const char *s = json_string_value(v);
                if (!s || strlen(s) > 4096 || strpbrk(s, "\n\r\t"))
                        return httpd_reply_error(req, 400, "'upstreamKeys' must be a space-separated string"),
                               -EINVAL;
                free(c->upstream_keys);
                c->upstream_keys = strdup(s);
                if (!c->upstream_keys)
                        return -ENOMEM;
        }
        if ((v = json_object_get(body, "upstreams"))) {
                struct buf b = BUF_INIT((size_t) UPSTREAMS_MAX * (UPSTREAM_URL_MAX + 1) + 1);
                size_t i;
                json_t *e;
                char *joined;
                int r = 0;

                if (!json_is_null(v) && (!json_is_array(v) || json_array_size(v) > UPSTREAMS_MAX))
                        return httpd_reply_error(req, 400, "'upstreams' must be a list of at most %d URLs",
                                                 UPSTREAMS_MAX),
                               -EINVAL;
                json_array_foreach(v, i, e) {
                        const char *u = json_string_value(e);
                        if (!u || !upstream_url_valid(u)) {
                                buf_free(&b);
                                return httpd_reply_error(req, 400,
                                                         "upstreams[%zu] must be an http:// or https:// URL of at "
                                                         "most %d printable characters, without query or fragment",
                                                         i, UPSTREAM_URL_MAX),
                                       -EINVAL;
                        }
                        r = buf_printf(&b, "%s%s", i ? "\n" : "", u);
                        if (r < 0)
                                break;
                }
                if (r >= 0)
                        r = buf_append(&b, "", 1);
                if (r < 0) {
                        buf_free(&b);
                        return r;
                }
                joined = (char *) b.data;
                free(c->upstreams);
                c->upstreams = joined;
        }
        /* Upstream narinfos are verified with these keys: a bare key name
         * (enough for `trove push` to skip a path) cannot verify anything. */
        if (c->upstreams && c->upstreams[0]) {
                const char *s = c->upstream_keys ? c->upstream_keys : "";
                size_t n_keys = 0;
                while (*s) {
                        size_t n = strcspn(s, " ");
                        char word[SIGNING_PUBLIC_TEXT_MAX];
                        struct signing_public pk;
                        if (n >= sizeof word || (memcpy(word, s, n), word[n] = 0, signing_public_parse(word, &pk) < 0))
                                return httpd_reply_error(req, 400,
                                                         "a cache with upstreams needs public keys (name:base64) in "
                                                         "'upstreamKeys'; '%.*s' is not one",
                                                         (int) MIN(n, (size_t) 200), s),
                                       -EINVAL;
                        n_keys++;
                        s += n;
                        s += strspn(s, " ");
                }
                if (n_keys == 0)
                        return httpd_reply_error(req, 400,
                                                 "a cache with upstreams needs the public keys (name:base64) their "
                                                 "narinfos are signed with in 'upstreamKeys'"),
                               -EINVAL;
        }
        return 0;
}

static json_t *parse_body(struct httpd_request *req, const void *body, size_t n, size_t max_values) {
        json_error_t e;
        json_t *j;

        if (json_value_count(body, n) > max_values) {
                (void) httpd_reply_error(req, 400, "JSON body with more than %zu values", max_values);
                return NULL;
        }
        j = json_loadb(body, n, JSON_REJECT_DUPLICATES, &e);
        if (!j)
                (void) httpd_reply_error(req, 400, "invalid JSON: %s (line %d)", e.text, e.line);
        return j;
}

#define CONFIG_VALUES_MAX 64

int api_cache_create(struct troved_request *rq, const void *body, size_t n) {
        struct httpd_request *req = rq->http;
        struct troved *t = rq->t;
        _cleanup_json_ json_t *j = NULL, *out = NULL;
        struct db_cache c = {};
        struct signing_secret sk;
        char sktext[SIGNING_SECRET_TEXT_MAX], keyname[128];
        json_t *v;
        int r;

        j = n ? parse_body(req, body, n, CONFIG_VALUES_MAX) : json_object();
        if (!j)
                return -EINVAL;
        c.name = strdup(rq->cache_name);
        c.store_dir = strdup(t->cfg.store_dir);
        c.upstream_keys = strdup("cache.nixos.org-1");
        c.priority = 41;
        if ((v = json_object_get(j, "storeDir"))) {
                const char *sd = json_string_value(v);
                if (!sd || !storepath_dir_valid(sd)) {
                        db_cache_free(&c);
                        return httpd_reply_error(req, 400,
                                                 "'storeDir' must be an absolute path of at most %d printable "
                                                 "characters, without '//', '.' or '..' components",
                                                 STOREDIR_MAX);
                }
                free(c.store_dir);
                c.store_dir = strdup(sd);
        }
        if (!c.name || !c.store_dir || !c.upstream_keys) {
                db_cache_free(&c);
                return -ENOMEM;
        }
        r = cache_apply_config(req, j, &c);
        if (r < 0) {
                db_cache_free(&c);
                return r;
        }
        /* Each cache signs with its own key, made here. */
        snprintf(keyname, sizeof keyname, "%s-1", rq->cache_name);
        if ((v = json_object_get(j, "keyName"))) {
                const char *kn = json_string_value(v);
                if (!kn || !*kn || strlen(kn) >= sizeof keyname) {
                        db_cache_free(&c);
                        return httpd_reply_error(req, 400, "bad 'keyName'");
                }
                snprintf(keyname, sizeof keyname, "%s", kn);
        }
        r = signing_generate(keyname, &sk);
        if (r < 0) {
                db_cache_free(&c);
                return httpd_reply_error(req, 400, "cannot make a signing key named '%s'", keyname);
        }
        signing_secret_format(&sk, sktext);
        signing_secret_wipe(&sk);
        c.secret_key = strdup(sktext);
        explicit_bzero(sktext, sizeof sktext);
        if (!c.secret_key) {
                db_cache_free(&c);
                return -ENOMEM;
        }
        r = db_cache_create(t->db, &c, &c.id);
        if (r == -EEXIST) {
                db_cache_free(&c);
                return httpd_reply_error(req, 409, "cache '%s' already exists", rq->cache_name);
        }
        if (r < 0) {
                db_cache_free(&c);
                return r;
        }
        log_info("created cache %s", c.name);
        out = cache_json(t, &c, false);
        db_cache_free(&c);
        if (!out)
                return -ENOMEM;
        return reply_json(req, 201, out);
}

int api_cache_configure(struct troved_request *rq, const void *body, size_t n) {
        struct httpd_request *req = rq->http;
        _cleanup_json_ json_t *j = NULL, *out = NULL;
        int r;

        j = parse_body(req, body, n, CONFIG_VALUES_MAX);
        if (!j)
                return -EINVAL;
        r = cache_apply_config(req, j, &rq->cache);
        if (r >= 0) {
                r = db_cache_update(rq->t->db, &rq->cache);
                upstream_forget(rq->t->upstream, rq->cache.id);
                nicache_forget(rq->t->narinfos, rq->cache.id, NULL);
                nicache_forget(rq->t->manifests, rq->cache.id, NULL);
        }
        if (r >= 0) {
                out = cache_json(rq->t, &rq->cache, false);
                r = out ? reply_json(req, 200, out) : -ENOMEM;
        }
        return r;
}

/* ---- push protocol ---- */

#define BATCH_VALUES_MAX (API_BATCH_MAX + 16)

int api_missing_paths(struct troved_request *rq, const void *body, size_t n) {
        struct httpd_request *req = rq->http;
        _cleanup_json_ json_t *j = NULL, *out = NULL;
        json_t *arr, *missing;
        char **hashes = NULL;
        bool *miss = NULL;
        size_t cnt, i;
        int r;

        j = parse_body(req, body, n, BATCH_VALUES_MAX);
        if (!j)
                return -EINVAL;
        arr = json_object_get(j, "paths");
        if (!json_is_array(arr) || json_array_size(arr) > API_BATCH_MAX)
                return httpd_reply_error(req, 400, "expected {\"paths\": [hash parts]} (at most %u)", API_BATCH_MAX);
        cnt = json_array_size(arr);
        hashes = calloc(cnt + 1, sizeof *hashes);
        miss = calloc(cnt + 1, sizeof *miss);
        if (!hashes || !miss) {
                r = -ENOMEM;
                goto out;
        }
        for (i = 0; i < cnt; i++) {
                const char *s = json_string_value(json_array_get(arr, i));
                if (!s || !storepath_is_hash_part(s, strlen(s))) {
                        r = httpd_reply_error(req, 400, "paths[%zu] is not a store path hash part", i);
                        goto out;
                }
                hashes[i] = (char *) s;
        }
        r = db_paths_missing(rq->t->db, rq->cache.id, hashes, cnt, miss);
        if (r < 0)
                goto out;
        missing = json_array();
        for (i = 0; i < cnt; i++)
                if (miss[i])
                        json_array_append_new(missing, json_string(hashes[i]));
                else
                        /* The pusher will reference it: a use. */
                        lastuse_mark_path(rq->t->lastuse, rq->cache.id, hashes[i]);
        out = json_pack("{s:o}", "missing", missing);
        r = out ? reply_json(req, 200, out) : -ENOMEM;
out:
        free(hashes);
        free(miss);
        return r;
}

int api_missing_chunks(struct troved_request *rq, const void *body, size_t n) {
        struct httpd_request *req = rq->http;
        _cleanup_json_ json_t *j = NULL, *out = NULL;
        const int64_t *caches;
        size_t n_caches;
        json_t *arr, *missing;
        uint8_t (*ids)[SHA256_DIGEST_LEN] = NULL;
        bool *present = NULL;
        size_t cnt, i;
        int r;

        j = parse_body(req, body, n, BATCH_VALUES_MAX);
        if (!j)
                return -EINVAL;
        arr = json_object_get(j, "chunks");
        if (!json_is_array(arr) || json_array_size(arr) > API_BATCH_MAX)
                return httpd_reply_error(req, 400, "expected {\"chunks\": [hex ids]} (at most %u)", API_BATCH_MAX);
        r = auth_pullable_caches(rq->t, &rq->auth, &caches, &n_caches);
        if (r < 0)
                return r;
        cnt = json_array_size(arr);
        ids = calloc(cnt + 1, sizeof *ids);
        present = calloc(cnt + 1, sizeof *present);
        if (!ids || !present) {
                r = -ENOMEM;
                goto out;
        }
        for (i = 0; i < cnt; i++) {
                const char *s = json_string_value(json_array_get(arr, i));
                if (!s || hex_decode(s, strlen(s), ids[i], SHA256_DIGEST_LEN) < 0) {
                        r = httpd_reply_error(req, 400, "chunks[%zu] is not a 64-digit hex chunk id", i);
                        goto out;
                }
        }
        /* Present means: this caller proved it holds the chunk (uploaded it
         * to this cache, or may read a cache that has it). Chunks only other
         * tenants hold are reported missing, and their upload is verified
         * and then deduplicated like any other. */
        r = db_chunks_visible(rq->t->db, (const uint8_t(*)[SHA256_DIGEST_LEN]) ids, cnt, caches, n_caches,
                              rq->cache.id, present);
        if (r >= 0)
                r = storage_confirm_objects(rq->t, (const uint8_t(*)[SHA256_DIGEST_LEN]) ids, cnt, present);
        if (r < 0)
                goto out;
        missing = json_array();
        for (i = 0; i < cnt; i++)
                if (!present[i])
                        json_array_append(missing, json_array_get(arr, i));
        out = json_pack("{s:o}", "missing", missing);
        r = out ? reply_json(req, 200, out) : -ENOMEM;
out:
        free(ids);
        free(present);
        return r;
}

/* PUT chunk: the body is the chunk's zstd frame; it is decoded and checked
 * against its id before anything is stored, also when the server has the
 * chunk already (the upload is then the proof that this cache's uploader
 * holds it). The answer is the same either way: whether a chunk exists on
 * the server is not for the uploader to learn. */
int api_chunk_put(struct troved_request *rq, const void *body, size_t n) {
        struct httpd_request *req = rq->http;
        struct troved *t = rq->t;
        uint8_t id[SHA256_DIGEST_LEN];
        _cleanup_(chunkcodec_freep) struct chunkcodec *codec = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        struct buf stored = BUF_INIT(chunkcodec_bound(CHUNK_SIZE_MAX));
        struct db_chunk row;
        bool claimed = false;
        uint64_t size;
        size_t len;
        int r;

        if (hex_decode(rq->arg, strlen(rq->arg), id, SHA256_DIGEST_LEN) < 0)
                return httpd_reply_error(req, 400, "bad chunk id");
        r = chunkcodec_frame_size(body, n, &size);
        if (r < 0)
                return httpd_reply_error(req, 400, "not a zstd frame with a declared size");
        if (size == 0 || size > API_CHUNK_MAX)
                return httpd_reply_error(req, 413, "chunk of %" PRIu64 " bytes outside 1..%u", size, API_CHUNK_MAX);
        r = chunkcodec_new(t->cfg.compression_level, &codec);
        if (r < 0)
                return r;
        data = malloc(size);
        if (!data)
                return -ENOMEM;
        r = chunkcodec_decode(codec, body, n, id, API_CHUNK_MAX, data, size, &len);
        if (r < 0)
                return httpd_reply_error(req, 400, "chunk does not match its id: %s", strerror(-r));
        /* A chunk the server has is claimed at once: the claim keeps it from
         * garbage collection until the push references it. */
        r = db_chunk_claims_add(t->db, rq->cache.id, (const uint8_t(*)[SHA256_DIGEST_LEN]) & id, 1, &claimed);
        if (r >= 0 && claimed)
                /* A row whose object was lost is not trusted: stored again below. */
                r = storage_confirm_objects(t, (const uint8_t(*)[SHA256_DIGEST_LEN]) & id, 1, &claimed);
        if (r < 0)
                return r;
        if (claimed) {
                METRIC_ADD(t, chunks_deduped, 1);
                METRIC_ADD(t, chunk_bytes_deduped, len);
        } else {
                r = storage_put(t, id, body, n, 0, &stored);
                if (r < 0)
                        goto out;
                row = (struct db_chunk){ .length = (uint32_t) len,
                                         .stored_size = (uint32_t) (r > 0 ? stored.len : n) };
                memcpy(row.id, id, SHA256_DIGEST_LEN);
                r = storage_chunk_record(t, &row, body, n);
                if (r < 0)
                        goto out;
                METRIC_ADD(t, chunks_uploaded, 1);
                METRIC_ADD(t, chunk_bytes_uploaded, len);
                r = db_chunk_claims_add(t->db, rq->cache.id, (const uint8_t(*)[SHA256_DIGEST_LEN]) & id, 1, NULL);
        }
        if (r >= 0)
                r = httpd_reply_buf(req, 201, "text/plain", "", 0);
out:
        buf_free(&stored);
        return r;
}

/* POST chunks: many chunks in one request. The body is a sequence of
 * records [32-byte id][u32 little-endian frame length][frame]. Each frame is
 * decoded and checked against its id; the new objects are written without
 * a sync each, made durable together by one chunkstore_sync(), and only
 * then recorded, in one transaction. */
#define API_BATCH_RECORDS_MAX 4096

struct batch_store {
        struct troved *t;
        const struct db_chunk *rows;
        const struct chunkbatch_record *recs;
        struct delta_chunk *deltas;
};

static int batch_ensure_stored(void *userdata, size_t i) {
        struct batch_store *b = userdata;
        int r = chunkstore_exists(b->t->store, b->rows[i].id, NULL);
        if (r < 0)
                return r;
        if (r > 0)
                return 0;
        r = b->deltas[i].obj ? storage_put(b->t, b->rows[i].id, b->deltas[i].obj, b->deltas[i].obj_len, 0, NULL)
                             : storage_put(b->t, b->rows[i].id, b->recs[i].frame, b->recs[i].frame_len, 0, NULL);
        return r < 0 ? r : 0;
}

/* Pool tasks over a push batch's new chunks. */
static int batch_describe_task(void *userdata, size_t i) {
        delta_describe(&((struct batch_store *) userdata)->deltas[i]);
        return 0;
}

/* A delta if worth it; its served frame is the content compressed at the
 * server's level (served_size), not the client's frame. */
static int batch_delta_task(void *userdata, size_t i) {
        struct batch_store *b = userdata;
        struct delta_chunk *d = &b->deltas[i];
        _cleanup_(chunkcodec_freep) struct chunkcodec *codec = NULL;
        _cleanup_free_ uint8_t *frame = NULL;
        size_t cap = chunkcodec_bound(d->len), flen;
        int r;

        if (!d->has_base)
                return 0;
        r = chunkcodec_new(b->t->cfg.compression_level, &codec);
        if (r < 0)
                return r;
        r = delta_try(b->t, codec, d, b->recs[i].frame_len);
        if (r <= 0)
                return r;
        frame = malloc(cap);
        if (!frame)
                return -ENOMEM;
        r = chunkcodec_encode(codec, d->data, d->len, frame, cap, &flen);
        if (r < 0)
                return r;
        /* rows[i].served_size is filled from this once stored. */
        ((struct db_chunk *) b->rows)[i].served_size = (uint32_t) flen;
        return 0;
}

int api_chunks_post(struct troved_request *rq, const void *body, size_t n) {
        struct httpd_request *req = rq->http;
        struct troved *t = rq->t;
        struct buf stored = BUF_INIT(chunkcodec_bound(CHUNK_SIZE_MAX));
        _cleanup_(chunkcodec_freep) struct chunkcodec *codec = NULL;
        _cleanup_json_ json_t *out = NULL;
        struct trove_error err = {};
        struct chunkbatch_record *recs = NULL, *fresh = NULL;
        struct db_chunk *rows = NULL;
        struct delta_chunk *deltas = NULL, **dv = NULL;
        uint8_t **datas = NULL;
        uint8_t (*ids)[SHA256_DIGEST_LEN] = NULL;
        bool *present = NULL;
        uint8_t *data = NULL;
        size_t data_cap = 0;
        size_t count = 0, n_fresh = 0;
        uint64_t dedup_bytes = 0, fresh_bytes = 0;
        int r;

        recs = calloc(API_BATCH_RECORDS_MAX, sizeof *recs);
        if (!recs)
                return -ENOMEM;
        r = chunkbatch_parse(body, n, recs, API_BATCH_RECORDS_MAX, &count, &err);
        if (r < 0) {
                r = httpd_reply_error(req, r == -E2BIG ? 413 : 400, "%s", err.msg);
                goto out;
        }
        ids = calloc(count + 1, sizeof *ids);
        present = calloc(count + 1, sizeof *present);
        fresh = calloc(count + 1, sizeof *fresh);
        rows = calloc(count + 1, sizeof *rows);
        deltas = calloc(count + 1, sizeof *deltas);
        dv = calloc(count + 1, sizeof *dv);
        datas = calloc(count + 1, sizeof *datas);
        if (!ids || !present || !fresh || !rows || !deltas || !dv || !datas) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < count; i++)
                memcpy(ids[i], recs[i].id, SHA256_DIGEST_LEN);
        /* Chunks the server has are claimed first (each then stays until the
         * push references it); the rest are stored, recorded and claimed
         * below. */
        r = db_chunk_claims_add(t->db, rq->cache.id, (const uint8_t(*)[SHA256_DIGEST_LEN]) ids, count, present);
        if (r >= 0) /* rows whose object was lost are stored again */
                r = storage_confirm_objects(t, (const uint8_t(*)[SHA256_DIGEST_LEN]) ids, count, present);
        if (r < 0)
                goto out;
        r = chunkcodec_new(t->cfg.compression_level, &codec);
        if (r < 0)
                goto out;
        for (size_t i = 0; i < count; i++) {
                char hex[2 * SHA256_DIGEST_LEN + 1];
                uint64_t size;
                size_t len;

                hex_encode(recs[i].id, SHA256_DIGEST_LEN, hex);
                if (chunkcodec_frame_size(recs[i].frame, recs[i].frame_len, &size) < 0) {
                        r = httpd_reply_error(req, 400, "chunk %s: not a zstd frame with a declared size", hex);
                        goto out;
                }
                if (size == 0 || size > API_CHUNK_MAX) {
                        r = httpd_reply_error(req, 413, "chunk %s: %" PRIu64 " bytes outside 1..%u", hex, size,
                                             API_CHUNK_MAX);
                        goto out;
                }
                /* As large as the largest chunk so far (a buffer of the
                 * maximum would be mapped and unmapped per request). */
                if (size > data_cap) {
                        free(data);
                        data = malloc(size);
                        if (!data) {
                                r = -ENOMEM;
                                goto out;
                        }
                        data_cap = size;
                }
                /* Every frame is checked, also those the server has. */
                r = chunkcodec_decode(codec, recs[i].frame, recs[i].frame_len, recs[i].id, API_CHUNK_MAX, data,
                                      data_cap, &len);
                if (r < 0) {
                        r = httpd_reply_error(req, 400, "chunk %s does not match its id: %s", hex, strerror(-r));
                        goto out;
                }
                if (present[i]) {
                        dedup_bytes += len;
                        continue;
                }
                fresh[n_fresh] = recs[i];
                /* Kept for resemblance detection: the new chunks of a batch
                 * are looked up together, then stored. Without deltas the
                 * content is not needed again (but in a rare case below,
                 * which decodes the frame once more). */
                if (t->cfg.delta) {
                        datas[n_fresh] = malloc(len);
                        if (!datas[n_fresh]) {
                                r = -ENOMEM;
                                goto out;
                        }
                        memcpy(datas[n_fresh], data, len);
                }
                deltas[n_fresh] = (struct delta_chunk){ .id = fresh[n_fresh].id, .data = datas[n_fresh], .len = len };
                dv[n_fresh] = &deltas[n_fresh];
                n_fresh++;
                fresh_bytes += len;
        }
        if (n_fresh > 0 && t->cfg.delta) {
                struct batch_store bs = { t, rows, fresh, deltas };
                r = workpool_run(t->pool, batch_describe_task, &bs, n_fresh);
                if (r >= 0)
                        r = delta_find_bases(t, rq->cache.id, dv, n_fresh);
                if (r >= 0)
                        r = workpool_run(t->pool, batch_delta_task, &bs, n_fresh);
                if (r < 0)
                        goto out;
        }
        for (size_t i = 0; i < n_fresh; i++) {
                struct delta_chunk *d = &deltas[i];
                uint32_t served = rows[i].served_size;

                r = d->obj ? storage_put(t, fresh[i].id, d->obj, d->obj_len, CHUNKSTORE_PUT_NOSYNC, &stored)
                           : storage_put(t, fresh[i].id, fresh[i].frame, fresh[i].frame_len, CHUNKSTORE_PUT_NOSYNC,
                                         &stored);
                if (r < 0)
                        goto out;
                if (r > 0 && chunkcodec_object_kind(stored.data, stored.len, NULL) != 0 && !d->obj) {
                        /* Stored meanwhile as a delta by another upload:
                         * served as its content compressed here. */
                        size_t cap = chunkcodec_bound(d->len), flen, got;
                        uint8_t *frame = malloc(cap);
                        r = frame ? 0 : -ENOMEM;
                        if (r >= 0 && !d->data) {
                                r = chunkcodec_decode(codec, fresh[i].frame, fresh[i].frame_len, fresh[i].id,
                                                      API_CHUNK_MAX, data, data_cap, &got);
                                d->data = data;
                        }
                        if (r >= 0)
                                r = chunkcodec_encode(codec, d->data, d->len, frame, cap, &flen);
                        free(frame);
                        if (r < 0)
                                goto out;
                        served = (uint32_t) flen;
                }
                if (r > 0)
                        delta_row(d, stored.data, stored.len, served, &rows[i]);
                else if (d->obj)
                        delta_row(d, d->obj, d->obj_len, served, &rows[i]);
                else
                        delta_row(d, fresh[i].frame, fresh[i].frame_len, fresh[i].frame_len, &rows[i]);
                if (rows[i].kind == DB_CHUNK_DELTA) {
                        METRIC_ADD(t, deltas_stored, 1);
                        METRIC_ADD(t, delta_bytes_saved, fresh[i].frame_len - MIN(fresh[i].frame_len, rows[i].stored_size));
                }
        }
        if (n_fresh > 0) {
                struct batch_store bs = { t, rows, fresh, deltas };
                r = chunkstore_sync(t->store);
                if (r < 0)
                        goto out;
                r = db_chunks_insert(t->db, rows, n_fresh, batch_ensure_stored, &bs);
                if (r < 0)
                        goto out;
        }
        for (size_t i = 0; i < n_fresh; i++)
                memcpy(ids[i], rows[i].id, SHA256_DIGEST_LEN);
        r = db_chunk_claims_add(t->db, rq->cache.id, (const uint8_t(*)[SHA256_DIGEST_LEN]) ids, n_fresh, NULL);
        if (r < 0)
                goto out;
        METRIC_ADD(t, chunks_uploaded, n_fresh);
        METRIC_ADD(t, chunk_bytes_uploaded, fresh_bytes);
        METRIC_ADD(t, chunks_deduped, count - n_fresh);
        METRIC_ADD(t, chunk_bytes_deduped, dedup_bytes);
        /* How many were new is not said: that would tell what others hold. */
        out = json_pack("{s:I}", "accepted", (json_int_t) count);
        r = out ? reply_json(req, 200, out) : -ENOMEM;
out:
        buf_free(&stored);
        free(recs);
        free(ids);
        free(present);
        free(fresh);
        free(rows);
        for (size_t i = 0; deltas && i < n_fresh; i++)
                delta_chunk_clear(&deltas[i]);
        for (size_t i = 0; datas && i < n_fresh; i++)
                free(datas[i]);
        free(deltas);
        free(dv);
        free(datas);
        free(data);
        return r;
}

int api_chunk_get(struct troved_request *rq) {
        struct troved *t = rq->t;
        struct httpd_request *req = rq->http;
        const char *cache = rq->cache_name;
        const struct db_cache c = rq->cache;
        uint8_t id[SHA256_DIGEST_LEN];
        struct buf frame = BUF_INIT(chunkcodec_bound(API_CHUNK_MAX));
        uint32_t length = 0;
        uint8_t kind = DB_CHUNK_PLAIN;
        const char *raw;
        uint8_t *data;
        int r;

        if (hex_decode(rq->arg, strlen(rq->arg), id, SHA256_DIGEST_LEN) < 0)
                return httpd_reply_error(req, 400, "bad chunk id");
        /* Chunks are shared between caches; a cache serves only its own. */
        r = db_chunk_in_cache(t->db, c.id, id, &length, &kind);
        if (r == 0)
                r = httpd_reply_error(req, 404, "no such chunk in cache '%s'", cache);
        if (r <= 0 || httpd_replied(req))
                goto out;
        lastuse_mark_chunk(t->lastuse, c.id, id);
        raw = httpd_request_query(req, "raw");
        if (raw && !streq(raw, "1")) {
                r = httpd_reply_error(req, 400, "raw must be 1");
                goto out;
        }
        troved_cache_immutable(rq);
        /* A delta or recompressed chunk is sent as its stored object only
         * to a client that asks (?raw=1: it reads the base a delta names
         * too); others get a plain frame, as they always did, so it is not
         * redirected to its object either. */
        if (t->cfg.chunk_redirect && (raw || kind == DB_CHUNK_PLAIN)) {
                char *url;
                if (chunkstore_presign_get(t->store, id, 3600, &url) >= 0) {
                        httpd_add_header(req, "Location", url);
                        free(url);
                        r = httpd_reply_buf(req, 302, "text/plain", "", 0);
                        goto out;
                }
        }
        r = storage_get(t, id, 0, &frame);
        /* Decided by the object: its row may not say yet that it was
         * recompressed. */
        if (r >= 0 && !raw && chunkcodec_object_kind(frame.data, frame.len, NULL) != 0) {
                _cleanup_(chunkcodec_freep) struct chunkcodec *codec = NULL;
                _cleanup_free_ uint8_t *content = malloc(length);
                r = content ? chunkcodec_new(t->cfg.compression_level, &codec) : -ENOMEM;
                if (r >= 0)
                        r = storage_reencode(t, codec, id, length, &frame, content);
                if (r == -EBADMSG) {
                        r = httpd_reply_error(req, 500, "stored chunk does not decode (with its base)");
                        goto out;
                }
        }
        if (r == -ENOENT) {
                r = httpd_reply_error(req, 503, "chunk is recorded but missing from the chunk store");
                goto out;
        }
        if (r < 0)
                goto out;
        METRIC_ADD(t, bytes_out, frame.len);
        data = frame.data;
        frame.data = NULL;
        r = httpd_reply_take(req, 200, "application/zstd", data, frame.len);
out:
        buf_free(&frame);
        return r;
}

/* POST paths: commit a store path whose chunks were uploaded. The server
 * reads the chunks back in order, checks they form a valid NAR with the
 * claimed hash and size, and only then makes the path visible. */
int api_path_commit(struct troved_request *rq, const void *body, size_t n) {
        struct httpd_request *req = rq->http;
        struct troved *t = rq->t;
        const struct db_cache c = rq->cache;
        const int64_t *caches;
        size_t n_caches;
        struct trove_error err = {};
        struct manifest m = {};
        struct db_nar nar;
        _cleanup_(ingest_freep) struct ingest *in = NULL;
        uint8_t (*ids)[SHA256_DIGEST_LEN] = NULL;
        bool *present = NULL;
        struct storepath sp;
        size_t bad = 0;
        int64_t nar_id;
        int r;

        r = auth_pullable_caches(t, &rq->auth, &caches, &n_caches);
        if (r < 0)
                return r;
        r = manifest_decode(body, n, c.store_dir, &m, &err);
        if (r < 0) {
                r = httpd_reply_error(req, 400, "invalid manifest: %s", err.msg);
                goto out;
        }
        /* Which chunk is stored as a delta against which is the server's
         * choice, made from the objects it holds; a client naming bases is
         * refused rather than half believed. */
        for (size_t i = 0; i < m.n_chunks; i++)
                if (m.chunks[i].has_base) {
                        r = httpd_reply_error(req, 400, "invalid manifest: chunk #%zu names a base; bases are "
                                              "chosen by the server", i);
                        goto out;
                }
        r = storepath_parse(c.store_dir, m.info.store_path, &sp);
        if (r < 0) {
                r = httpd_reply_error(req, 400, "bad store path");
                goto out;
        }
        r = db_nar_find_visible(t->db, m.info.nar_hash, caches, n_caches, &nar);
        if (r < 0)
                goto out;
        if (r > 0 && nar.nar_size == m.info.nar_size) {
                /* A cache this caller may read holds this NAR, verified when
                 * it was stored. A NAR only other tenants hold must be proved
                 * chunk by chunk, like one the server has never seen. */
                nar_id = nar.id;
        } else {
                struct ingest_result res;

                ids = calloc(m.n_chunks, sizeof *ids);
                present = calloc(m.n_chunks, sizeof *present);
                if (!ids || !present) {
                        r = -ENOMEM;
                        goto out;
                }
                for (size_t i = 0; i < m.n_chunks; i++)
                        memcpy(ids[i], m.chunks[i].id, SHA256_DIGEST_LEN);
                r = db_chunks_visible(t->db, (const uint8_t(*)[SHA256_DIGEST_LEN]) ids, m.n_chunks, caches, n_caches,
                                      c.id, present);
                if (r < 0)
                        goto out;
                for (size_t i = 0; i < m.n_chunks; i++)
                        if (!present[i]) {
                                char hex[2 * SHA256_DIGEST_LEN + 1];
                                hex_encode(m.chunks[i].id, SHA256_DIGEST_LEN, hex);
                                r = httpd_reply_error(req, 400, "chunk %s (at NAR offset %" PRIu64 ") was never uploaded",
                                                     hex, m.chunks[i].nar_offset);
                                goto out;
                        }
                r = ingest_new(t, &in);
                if (r < 0)
                        goto out;
                r = ingest_add_stored(in, m.chunks, m.n_chunks, &bad);
                if (r == -ENOENT) {
                        r = httpd_reply_error(req, 409, "chunk %zu is recorded but missing from the store", bad);
                        goto out;
                }
                if (r < 0 && ingest_error(in)[0]) {
                        r = httpd_reply_error(req, 400, "%s", ingest_error(in));
                        goto out;
                }
                if (r == -EBADMSG) {
                        r = httpd_reply_error(req, 400, "chunk %zu does not match the manifest", bad);
                        goto out;
                }
                if (r < 0)
                        goto out;
                r = ingest_finish(in, &res);
                if (r < 0) {
                        const char *msg = ingest_error(in);
                        r = httpd_reply_error(req, 400, "%s", msg[0] ? msg : strerror(-r));
                        goto out;
                }
                if (memcmp(res.nar_hash, m.info.nar_hash, SHA256_DIGEST_LEN) != 0 || res.nar_size != m.info.nar_size) {
                        char got[HASH_STRING_MAX], want[HASH_STRING_MAX];
                        hash_format(res.nar_hash, HASH_NIX32, got);
                        hash_format(m.info.nar_hash, HASH_NIX32, want);
                        r = httpd_reply_error(req, 400,
                                             "chunks reassemble to %s (%" PRIu64 " bytes), not the claimed %s (%" PRIu64
                                             " bytes)",
                                             got, res.nar_size, want, m.info.nar_size);
                        goto out;
                }
                r = ingest_commit(in, &nar_id);
                if (r < 0)
                        goto out;
        }
        r = commit_path(t, req, &c, &m.info, nar_id);
        if (r >= 0 && !httpd_replied(req))
                r = httpd_reply_buf(req, 201, "application/json", "{}", 2);
out:
        free(ids);
        free(present);
        manifest_free(&m);
        return r;
}

/* The manifest text of rq's path: from memory when this process built it
 * recently (a large listing is parsed once, not on every request), else
 * built from the database. 0 with *ret NULL when the path is unknown. */
/* version 1: every chunk as the frame it is served as (a delta decoded
 * and compressed alone by the server), for clients that know only 1;
 * version 2: delta chunks with their bases, as stored. */
static int manifest_text(struct troved_request *rq, int version, char **ret, size_t *ret_len) {
        struct troved *t = rq->t;
        int64_t key = version >= 2 ? NICACHE_VARIANT(rq->cache.id) : rq->cache.id;
        struct trove_error err = {};
        struct manifest m = {};
        struct db_path p = {};
        struct db_nar_chunk *chunks = NULL;
        char *ls = NULL, *text;
        size_t n_chunks = 0, len;
        int r;

        text = nicache_get(t->manifests, key, rq->hash, &len);
        if (text) {
                *ret = text;
                *ret_len = len;
                return 1;
        }
        *ret = NULL;
        r = upstream_path_get(t, rq->http, &rq->cache, rq->hash, &p);
        if (r <= 0)
                return r;
        r = commit_narinfo(&rq->cache, &p, &m.info);
        if (r < 0)
                goto out;
        r = db_nar_listing(t->db, p.nar.id, &ls);
        if (r < 0)
                goto out;
        r = listing_from_json(ls, strlen(ls), p.nar.nar_size, &m.listing, &err);
        if (r < 0) {
                log_error("stored listing of %s does not parse: %s", p.store_path, err.msg);
                goto out;
        }
        r = db_nar_chunks(t->db, p.nar.id, rq->cache.id, &chunks, &n_chunks);
        if (r < 0)
                goto out;
        m.chunks = calloc(n_chunks + 1, sizeof *m.chunks);
        if (!m.chunks) {
                r = -ENOMEM;
                goto out;
        }
        m.n_chunks = n_chunks;
        for (size_t i = 0; i < n_chunks; i++) {
                m.chunks[i].nar_offset = chunks[i].nar_offset;
                m.chunks[i].length = chunks[i].length;
                m.chunks[i].stored_size = chunks[i].served_size;
                memcpy(m.chunks[i].id, chunks[i].id, SHA256_DIGEST_LEN);
                /* A base the cache does not hold (its chunk is shared with
                 * another cache, where it was stored as a delta) is not
                 * named: its readers get the chunk decoded by the server,
                 * never another tenant's base. */
                if (version >= 2 && chunks[i].kind == DB_CHUNK_DELTA && chunks[i].base_visible) {
                        m.chunks[i].stored_size = chunks[i].stored_size;
                        m.chunks[i].has_base = true;
                        m.chunks[i].base_length = chunks[i].base_length;
                        memcpy(m.chunks[i].base, chunks[i].base, SHA256_DIGEST_LEN);
                }
        }
        r = manifest_encode(&m, &text, &len);
        if (r < 0)
                goto out;
        METRIC_ADD(t, manifests_built, 1);
        nicache_put(t->manifests, key, rq->hash, text, len);
        *ret = text;
        *ret_len = len;
        r = 1;
out:
        free(ls);
        free(chunks);
        manifest_free(&m);
        db_path_free(&p);
        return r;
}

int api_manifest_get(struct troved_request *rq) {
        struct signing_secret key = {};
        char sig[MANIFEST_SIG_HEADER_MAX];
        char *text = NULL;
        size_t len = 0;
        int r;

        const char *v = httpd_request_query(rq->http, "version");
        int version = 1;

        /* A client that reads version 2 asks for it. */
        if (v && streq(v, "2"))
                version = 2;
        else if (v && !streq(v, "1"))
                return httpd_reply_error(rq->http, 400, "version must be 1 or 2");
        r = manifest_text(rq, version, &text, &len);
        if (r < 0)
                return r;
        if (r == 0)
                return httpd_reply_error(rq->http, 404, "no such path in cache '%s'", rq->cache.name);
        lastuse_mark_path(rq->t->lastuse, rq->cache.id, rq->hash);
        /* Signed as narinfo is, so a client can refuse a changed manifest;
         * during a key rotation by both keys, the new one first. */
        r = signing_secret_parse(rq->cache.secret_key, &key);
        if (r >= 0)
                r = manifest_sign(text, len, &key, sig);
        signing_secret_wipe(&key);
        if (r >= 0 && rq->cache.old_secret_key && rq->cache.old_secret_key[0]) {
                size_t k = strlen(sig);
                r = signing_secret_parse(rq->cache.old_secret_key, &key);
                if (r >= 0) {
                        sig[k] = ' ';
                        r = manifest_sign(text, len, &key, sig + k + 1);
                }
                signing_secret_wipe(&key);
        }
        if (r >= 0)
                r = httpd_add_header(rq->http, MANIFEST_SIG_HEADER, sig);
        if (r < 0) {
                free(text);
                return r;
        }
        troved_cache_immutable(rq);
        return httpd_reply_take(rq->http, 200, "application/json", text, len);
}

/* POST recompress?level=L&min-age=S&max=N: one recompression run now
 * (recompress.h); level defaults to --recompress-level. */
static int query_number(struct troved_request *rq, const char *name, long long lo, long long hi, long long *v) {
        const char *s = httpd_request_query(rq->http, name);
        char *end;
        long long x;

        if (!s)
                return 0;
        errno = 0;
        x = strtoll(s, &end, 10);
        if (!*s || *end || errno || x < lo || x > hi)
                return httpd_reply_error(rq->http, 400, "bad %s (%lld..%lld)", name, lo, hi);
        *v = x;
        return 0;
}

int api_recompress(struct troved_request *rq) {
        _cleanup_json_ json_t *out = NULL;
        struct troved *t = rq->t;
        long long level = t->cfg.recompress_level, min_age = t->cfg.recompress_age_sec, max = t->cfg.recompress_batch;
        struct recompress_result res;
        int r;

        r = query_number(rq, "level", t->cfg.compression_level + 1, 22, &level);
        if (r >= 0 && !httpd_replied(rq->http))
                r = query_number(rq, "min-age", 0, DB_RETENTION_MAX, &min_age);
        if (r >= 0 && !httpd_replied(rq->http))
                r = query_number(rq, "max", 1, 10000000, &max);
        if (r < 0 || httpd_replied(rq->http))
                return r;
        if (level <= t->cfg.compression_level)
                return httpd_reply_error(rq->http, 400, "recompression is off: give level (%d..22)",
                                         t->cfg.compression_level + 1);
        r = recompress_run(t, (int) level, min_age, (size_t) max, &res);
        if (r < 0)
                return r;
        out = json_pack("{s:I, s:I, s:I, s:I}", "examined", (json_int_t) res.examined, "recompressed",
                        (json_int_t) res.recompressed, "bytesBefore", (json_int_t) res.bytes_before, "bytesAfter",
                        (json_int_t) res.bytes_after);
        return out ? reply_json(rq->http, 200, out) : -ENOMEM;
}

int api_gc(struct troved_request *rq) {
        _cleanup_json_ json_t *out = NULL;
        const char *age = httpd_request_query(rq->http, "min-age");
        struct gc_result res;
        int64_t min_age = 3600;
        int r;

        if (age) {
                char *end;
                long long v;
                errno = 0;
                v = strtoll(age, &end, 10);
                if (!*age || *end || v < 0 || errno || v > DB_RETENTION_MAX)
                        return httpd_reply_error(rq->http, 400, "bad min-age (seconds, 0..%lld)", DB_RETENTION_MAX);
                min_age = v;
        }
        r = gc_collect(rq->t, min_age, true, &res);
        if (r == -ECANCELED)
                return httpd_reply_error(rq->http, 503, "garbage collection stopped: troved is shutting down");
        if (r < 0)
                return r;
        if (res.skipped)
                return httpd_reply_error(rq->http, 409, "another garbage collection is running");
        out = json_pack("{s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:f}", "pathsDeleted", (json_int_t) res.paths_deleted,
                        "narsDeleted", (json_int_t) res.nars_deleted, "chunksDeleted",
                        (json_int_t) res.chunks_deleted, "objectsDeleted", (json_int_t) res.objects_deleted,
                        "orphansDeleted",
                        (json_int_t) (res.objects_deleted > res.chunks_deleted ? res.objects_deleted - res.chunks_deleted
                                                                               : 0),
                        "seconds", (double) res.usec / 1e6, "lockedTransactions",
                        (json_int_t) res.locked_transactions, "longestLockedMs", (double) res.locked_max_usec / 1e3);
        return out ? reply_json(rq->http, 200, out) : -ENOMEM;
}

/* ---- handlers of the caches routes ---- */

int api_cache_get(struct troved_request *rq) {
        _cleanup_json_ json_t *out = cache_json(rq->t, &rq->cache, true);
        return out ? reply_json(rq->http, 200, out) : -ENOMEM;
}

int api_cache_destroy(struct troved_request *rq) {
        int r;

        nicache_forget(rq->t->narinfos, rq->cache.id, NULL);
        nicache_forget(rq->t->manifests, rq->cache.id, NULL);
        r = db_cache_destroy(rq->t->db, rq->cache_name);
        if (r < 0)
                return r;
        log_info("destroyed cache %s", rq->cache_name);
        return httpd_reply_buf(rq->http, 200, "application/json", "{}", 2);
}

/* Deletes n paths of rq's cache (or says why not). */
static int paths_delete(struct troved_request *rq, char *const *hashes, size_t n, bool force) {
        _cleanup_free_ char *blockers = NULL;
        int r;

        r = db_paths_delete(rq->t->db, rq->cache.id, hashes, n, force, &blockers);
        if (r == -ENOENT)
                return httpd_reply_error(rq->http, 404, "%s not in cache '%s'",
                                         n == 1 ? "path is" : "one of the paths is", rq->cache_name);
        if (r == -EBUSY)
                return httpd_reply_error(rq->http, 409,
                                         "still referenced by other paths of cache '%s' (delete them too, or force): %s",
                                         rq->cache_name, blockers ? blockers : "");
        if (r == -EPERM)
                return httpd_reply_error(rq->http, 409, "pinned in cache '%s' (unpin first, or force): %s",
                                         rq->cache_name, blockers ? blockers : "");
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                nicache_forget(rq->t->narinfos, rq->cache.id, hashes[i]);
                nicache_forget(rq->t->manifests, rq->cache.id, hashes[i]);
        }
        /* Its NAR and chunks stay while other paths use them; GC takes the rest. */
        return 0;
}

static bool query_flag(struct troved_request *rq, const char *name, bool *ret) {
        const char *v = httpd_request_query(rq->http, name);
        if (!v)
                return (*ret = false), true;
        if (streq(v, "1") || streq(v, "true"))
                return (*ret = true), true;
        if (streq(v, "0") || streq(v, "false"))
                return (*ret = false), true;
        return false;
}

int api_path_delete(struct troved_request *rq) {
        char *hashes[] = { rq->hash };
        bool force;
        int r;

        if (!query_flag(rq, "force", &force))
                return httpd_reply_error(rq->http, 400, "'force' must be 0, 1, true or false");
        r = paths_delete(rq, hashes, 1, force);
        if (r < 0 || httpd_replied(rq->http))
                return r;
        return httpd_reply_buf(rq->http, 200, "application/json", "{}", 2);
}

/* ---- learned prefetch profiles ---- */

int api_profile_get(struct troved_request *rq) {
        _cleanup_json_ json_t *out = NULL;
        uint8_t (*ids)[SHA256_DIGEST_LEN] = NULL;
        json_t *arr;
        size_t n = 0;
        int r;

        r = db_profile_get(rq->t->db, rq->cache.id, rq->hash, API_PROFILE_CHUNKS_MAX, &ids, &n);
        if (r == -ENOENT)
                return httpd_reply_error(rq->http, 404, "no such path in cache '%s'", rq->cache.name);
        if (r < 0)
                return r;
        arr = json_array();
        for (size_t i = 0; arr && i < n; i++) {
                char hex[HASH_BASE16_LEN + 1];
                hex_encode(ids[i], SHA256_DIGEST_LEN, hex);
                if (json_array_append_new(arr, json_string(hex)) < 0) {
                        json_decref(arr);
                        arr = NULL;
                }
        }
        free(ids);
        out = arr ? json_pack("{s:s, s:o}", "hash", rq->hash, "chunks", arr) : NULL;
        return out ? reply_json(rq->http, 200, out) : -ENOMEM;
}

int api_profiles_report(struct troved_request *rq, const void *body, size_t n) {
        struct httpd_request *req = rq->http;
        _cleanup_json_ json_t *j = NULL, *out = NULL;
        struct db_profile_report *reps = NULL;
        uint8_t (*ids)[SHA256_DIGEST_LEN] = NULL;
        size_t n_reps, total = 0, k = 0, bad = 0;
        json_t *arr;
        int r;

        j = parse_body(req, body, n, API_PROFILE_VALUES_MAX);
        if (!j)
                return -EINVAL;
        arr = json_object_get(j, "paths");
        if (!json_is_array(arr) || json_array_size(arr) > API_PROFILE_PATHS_MAX)
                return httpd_reply_error(req, 400,
                                         "expected {\"paths\": [{\"hash\": hash part, \"chunks\": [chunk ids]}]} "
                                         "(at most %d paths)", API_PROFILE_PATHS_MAX);
        n_reps = json_array_size(arr);
        for (size_t i = 0; i < n_reps; i++) {
                json_t *e = json_array_get(arr, i), *c = json_object_get(e, "chunks");
                const char *h = json_string_value(json_object_get(e, "hash"));
                if (!json_is_object(e) || json_object_size(e) != 2 || !h ||
                    !storepath_is_hash_part(h, strlen(h)) || !json_is_array(c) ||
                    json_array_size(c) > API_PROFILE_CHUNKS_MAX)
                        return httpd_reply_error(req, 400,
                                                 "paths[%zu]: expected {\"hash\": hash part, \"chunks\": [at most %d "
                                                 "chunk ids]}", i, API_PROFILE_CHUNKS_MAX);
                total += json_array_size(c);
        }
        reps = calloc(n_reps + 1, sizeof *reps);
        ids = calloc(total + 1, sizeof *ids);
        if (!reps || !ids) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n_reps; i++) {
                json_t *e = json_array_get(arr, i), *c = json_object_get(e, "chunks");
                reps[i].hash_part = json_string_value(json_object_get(e, "hash"));
                reps[i].ids = &ids[k];
                reps[i].n = json_array_size(c);
                for (size_t m = 0; m < reps[i].n; m++, k++) {
                        const char *s = json_string_value(json_array_get(c, m));
                        if (!s || strlen(s) != HASH_BASE16_LEN ||
                            hex_decode(s, HASH_BASE16_LEN, ids[k], SHA256_DIGEST_LEN) < 0) {
                                r = httpd_reply_error(req, 400, "paths[%zu].chunks[%zu] is not a chunk id", i, m);
                                goto out;
                        }
                }
        }
        r = db_profiles_report(rq->t->db, rq->cache.id, reps, n_reps, &bad);
        if (r == -ENOENT)
                r = httpd_reply_error(req, 404, "paths[%zu]: no such path in cache '%s'", bad, rq->cache.name);
        else if (r == -EBADMSG)
                r = httpd_reply_error(req, 400, "paths[%zu]: names chunks that are not part of that path", bad);
        else if (r >= 0) {
                out = json_pack("{s:I}", "accepted", (json_int_t) n_reps);
                r = out ? reply_json(req, 200, out) : -ENOMEM;
        }
out:
        free(reps);
        free(ids);
        return r;
}

/* {"paths": [hash parts], <flag>: bool}: the hash parts (borrowed from j)
 * in *ret (malloc()ed), the flag in *ret_flag. Replies 400 itself. */
static int paths_body(struct troved_request *rq, json_t *j, const char *flag, char ***ret, size_t *ret_n,
                      bool *ret_flag) {
        json_t *arr = json_object_get(j, "paths"), *f = json_object_get(j, flag);
        const char *key;
        json_t *v;
        char **hashes;
        size_t n;

        if (!json_is_object(j) || !json_is_array(arr) || json_array_size(arr) == 0 ||
            json_array_size(arr) > API_BATCH_MAX || (f && !json_is_boolean(f)))
                return httpd_reply_error(rq->http, 400,
                                         "expected {\"paths\": [store path hash parts] (1..%u), \"%s\": boolean}",
                                         API_BATCH_MAX, flag),
                       -EINVAL;
        json_object_foreach(j, key, v)
                if (!streq(key, "paths") && !streq(key, flag))
                        return httpd_reply_error(rq->http, 400, "unknown key '%s'", key), -EINVAL;
        n = json_array_size(arr);
        hashes = calloc(n + 1, sizeof *hashes);
        if (!hashes)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const char *s = json_string_value(json_array_get(arr, i));
                if (!s || strlen(s) != STOREPATH_HASH_LEN || !storepath_is_hash_part(s, strlen(s))) {
                        free(hashes);
                        return httpd_reply_error(rq->http, 400, "paths[%zu] is not a store path hash part", i),
                               -EINVAL;
                }
                hashes[i] = (char *) s;
        }
        *ret = hashes;
        *ret_n = n;
        *ret_flag = f && json_is_true(f);
        return 0;
}

int api_paths_delete(struct troved_request *rq, const void *body, size_t n) {
        _cleanup_json_ json_t *j = NULL, *out = NULL;
        _cleanup_free_ char **hashes = NULL;
        size_t cnt;
        bool force;
        int r;

        j = parse_body(rq->http, body, n, BATCH_VALUES_MAX);
        if (!j)
                return -EINVAL;
        r = paths_body(rq, j, "force", &hashes, &cnt, &force);
        if (r < 0)
                return httpd_replied(rq->http) ? 0 : r;
        r = paths_delete(rq, hashes, cnt, force);
        if (r < 0 || httpd_replied(rq->http))
                return r;
        log_info("deleted %zu paths from cache %s%s", cnt, rq->cache_name, force ? " (forced)" : "");
        out = json_pack("{s:I}", "deleted", (json_int_t) cnt);
        return out ? reply_json(rq->http, 200, out) : -ENOMEM;
}

static int pin_change(struct troved_request *rq, const void *body, size_t n, bool pin) {
        _cleanup_json_ json_t *j = NULL, *out = NULL;
        _cleanup_free_ char **hashes = NULL;
        uint64_t changed;
        size_t cnt;
        bool closure;
        int r;

        j = parse_body(rq->http, body, n, BATCH_VALUES_MAX);
        if (!j)
                return -EINVAL;
        r = paths_body(rq, j, "keepClosure", &hashes, &cnt, &closure);
        if (r < 0)
                return httpd_replied(rq->http) ? 0 : r;
        r = db_paths_pin(rq->t->db, rq->cache.id, hashes, cnt, pin, closure, &changed);
        if (r == -ENOENT)
                return httpd_reply_error(rq->http, 404, "%s not in cache '%s'",
                                         cnt == 1 ? "path is" : "one of the paths is", rq->cache_name);
        if (r < 0)
                return r;
        out = json_pack("{s:I}", pin ? "pinned" : "unpinned", (json_int_t) changed);
        return out ? reply_json(rq->http, 200, out) : -ENOMEM;
}

int api_pin(struct troved_request *rq, const void *body, size_t n) {
        return pin_change(rq, body, n, true);
}

int api_unpin(struct troved_request *rq, const void *body, size_t n) {
        return pin_change(rq, body, n, false);
}

int api_pins_get(struct troved_request *rq) {
        _cleanup_json_ json_t *out = NULL;
        _cleanup_free_ char *list = NULL;
        json_t *arr;
        int r;

        r = db_pins_list(rq->t->db, rq->cache.id, &list);
        if (r < 0)
                return r;
        arr = json_array();
        for (const char *p = list; arr && *p;) {
                size_t len = strcspn(p, "\n");
                json_array_append_new(arr, json_stringn(p, len));
                p += len;
                p += *p == '\n';
        }
        out = arr ? json_pack("{s:o}", "pins", arr) : NULL;
        return out ? reply_json(rq->http, 200, out) : -ENOMEM;
}

/* The name of the key after old: "name-N" becomes "name-(N+1)", any other
 * name gets "-2". */
static void next_key_name(const char *old, char *out, size_t cap) {
        const char *dash = strrchr(old, '-');
        char *end;
        unsigned long v;

        if (dash && dash[1] >= '0' && dash[1] <= '9') {
                errno = 0;
                v = strtoul(dash + 1, &end, 10);
                if (!errno && !*end && v < 1000000) {
                        snprintf(out, cap, "%.*s-%lu", (int) MIN((size_t) (dash - old), cap > 9 ? cap - 9 : 0), old,
                                 v + 1);
                        return;
                }
        }
        snprintf(out, cap, "%.*s-2", (int) MIN(strlen(old), cap > 3 ? cap - 3 : 0), old);
}

/* {"keyName": name} starts a rotation: a new key signs from now on, the
 * current one keeps signing too until {"retire": true} ends it. */
int api_rotate_key(struct troved_request *rq, const void *body, size_t n) {
        struct db_cache *c = &rq->cache;
        _cleanup_json_ json_t *j = NULL, *out = NULL;
        struct signing_secret sk;
        char sktext[SIGNING_SECRET_TEXT_MAX], keyname[128];
        const char *key;
        json_t *v, *name, *retire;
        char *fresh, *old;
        int r;

        j = n ? parse_body(rq->http, body, n, CONFIG_VALUES_MAX) : json_object();
        if (!j)
                return -EINVAL;
        if (!json_is_object(j))
                return httpd_reply_error(rq->http, 400, "expected a JSON object");
        json_object_foreach(j, key, v)
                if (!streq(key, "keyName") && !streq(key, "retire"))
                        return httpd_reply_error(rq->http, 400, "unknown key '%s'", key);
        name = json_object_get(j, "keyName");
        retire = json_object_get(j, "retire");
        if ((retire && !json_is_boolean(retire)) || (name && (!json_is_string(name) || json_is_true(retire))))
                return httpd_reply_error(rq->http, 400,
                                         "expected {\"keyName\": string} to rotate or {\"retire\": true} to finish");
        if (json_is_true(retire)) {
                if (!c->old_secret_key || !c->old_secret_key[0])
                        return httpd_reply_error(rq->http, 409, "cache '%s' has no retiring key", c->name);
                explicit_bzero(c->old_secret_key, strlen(c->old_secret_key));
                c->old_secret_key[0] = 0;
        } else {
                if (c->old_secret_key && c->old_secret_key[0])
                        return httpd_reply_error(rq->http, 409,
                                                 "cache '%s' is rotating keys already: retire the old key first",
                                                 c->name);
                r = signing_secret_parse(c->secret_key, &sk);
                if (r < 0)
                        return r;
                next_key_name(sk.name, keyname, sizeof keyname);
                signing_secret_wipe(&sk);
                if (name) {
                        const char *kn = json_string_value(name);
                        if (!*kn || strlen(kn) >= sizeof keyname)
                                return httpd_reply_error(rq->http, 400, "bad 'keyName'");
                        snprintf(keyname, sizeof keyname, "%s", kn);
                }
                r = signing_secret_parse(c->secret_key, &sk);
                if (r >= 0 && streq(sk.name, keyname))
                        r = -EEXIST;
                signing_secret_wipe(&sk);
                if (r == -EEXIST)
                        return httpd_reply_error(rq->http, 400, "the new key needs another name than the current one");
                if (r < 0)
                        return r;
                r = signing_generate(keyname, &sk);
                if (r < 0)
                        return httpd_reply_error(rq->http, 400, "cannot make a signing key named '%s'", keyname);
                signing_secret_format(&sk, sktext);
                signing_secret_wipe(&sk);
                fresh = strdup(sktext);
                explicit_bzero(sktext, sizeof sktext);
                if (!fresh)
                        return -ENOMEM;
                old = c->secret_key;
                free(c->old_secret_key);
                c->old_secret_key = old;
                c->secret_key = fresh;
        }
        r = db_cache_update(rq->t->db, c);
        /* Narinfos and manifests signed with the former key set are
         * dropped (other instances: within their few seconds of TTL). */
        nicache_forget(rq->t->narinfos, c->id, NULL);
        nicache_forget(rq->t->manifests, c->id, NULL);
        if (r < 0)
                return r;
        log_info("cache %s: %s", c->name, json_is_true(retire) ? "retired its old signing key" : "rotated its signing key");
        out = cache_json(rq->t, c, false);
        return out ? reply_json(rq->http, 200, out) : -ENOMEM;
}
