/* SPDX-License-Identifier: Apache-2.0 */
/*
 * troved.h - the server's shared context: configuration, the database
 * pool, the chunk store, the token secret and the metrics. One instance per
 * process, created by main() and passed to every handler; no globals.
 */
#pragma once

#include <stdatomic.h>

#include "db.h"
#include "nicache.h"
#include "tokcache.h"
#include "httpd.h"
#include "trove/chunker.h"
#include "trove/chunkstore.h"
#include "trove/token.h"
#include "trove/workpool.h"

struct troved_config {
        char *config_file;
        char *listen;             /* default 127.0.0.1:8080 */
        char *database_url;       /* NULL: embedded PostgreSQL in state_dir */
        char *state_dir;          /* default /var/lib/trove */
        char *storage;            /* chunk store spec; NULL: <state_dir>/chunks */
        char *token_secret_file;  /* NULL: <state_dir>/token-secret (made on first start) */
        char *store_dir;          /* default for new caches: /nix/store */
        char *user;               /* started as root: drop to it after start-up; NULL: "trove", "root": keep root */
        char *oidc_config;        /* token exchange policy (JSON); NULL: no exchange */
        struct chunker_params chunking;
        int compression_level;
        unsigned db_pool_size;
        uint64_t max_nar_size;    /* largest NAR accepted, uncompressed */
        unsigned max_connections;
        unsigned max_connections_per_client;
        unsigned idle_timeout_sec;   /* a connection silent this long is closed */
        unsigned http_threads;       /* event-loop threads serving all connections */
        unsigned http_workers;       /* threads for blocking request work; 0: per CPU */
        /* The staleness bound between instances sharing one database: cache
         * settings and keys, narinfo answers (found and not found) are kept in
         * memory this long, so a change made through another instance is seen
         * here within it. Changes made through this instance are seen at once.
         * 0: every request asks the database. */
        unsigned cache_ttl_sec;
        unsigned upstream_timeout_sec;       /* an upstream's narinfo answer; NARs get more */
        unsigned upstream_negative_ttl_sec;  /* an upstream miss is remembered this long */
        unsigned s3_connect_timeout_sec;
        unsigned s3_timeout_sec;          /* no byte moving this long: the attempt is given up */
        unsigned s3_request_timeout_sec;  /* one attempt in all */
        unsigned s3_retry_budget_sec;     /* no retry starts after this */
        unsigned s3_breaker_sec;          /* S3 found away: fail at once this long */
        unsigned shutdown_timeout_sec;    /* SIGTERM to exit, at most */
        bool chunk_redirect;      /* redirect chunk downloads to presigned URLs */
        bool delta;               /* resemblance detection and delta chunks on ingest */
        int recompress_level;     /* cold chunks recompressed at this level after scheduled GC; 0: off */
        unsigned recompress_age_sec;  /* cold: older, and unused by any path for, this long */
        unsigned recompress_batch;    /* chunks examined per scheduled run */
        unsigned gc_interval_sec; /* scheduled garbage collection; 0: never */
        unsigned gc_min_age_sec;  /* what scheduled collections leave alone */
        int log_level;
};

struct troved_metrics {
        atomic_uint_fast64_t requests;
        atomic_uint_fast64_t responses_4xx;
        atomic_uint_fast64_t responses_5xx;
        atomic_uint_fast64_t bytes_in;          /* request bodies */
        atomic_uint_fast64_t bytes_out;         /* response bodies we stream */
        atomic_uint_fast64_t narinfo_hits;
        atomic_uint_fast64_t narinfo_misses;
        atomic_uint_fast64_t chunks_uploaded;   /* new chunks stored */
        atomic_uint_fast64_t chunks_deduped;    /* chunks that were already stored */
        atomic_uint_fast64_t chunk_bytes_uploaded;
        atomic_uint_fast64_t chunk_bytes_deduped;
        atomic_uint_fast64_t delta_candidates;  /* new chunks a similar stored chunk was found for */
        atomic_uint_fast64_t deltas_stored;     /* of them: stored as deltas */
        atomic_uint_fast64_t delta_bytes_saved; /* plain frame bytes minus delta object bytes */
        atomic_uint_fast64_t delta_reads;       /* delta chunks decoded on the server */
        atomic_uint_fast64_t chunks_recompressed;
        atomic_uint_fast64_t recompress_bytes_saved;
        atomic_uint_fast64_t nars_ingested;
        atomic_uint_fast64_t paths_committed;
        atomic_uint_fast64_t store_ops;         /* chunk store calls */
        atomic_uint_fast64_t store_usec;        /* time spent in them */
        atomic_uint_fast64_t store_errors;
        atomic_uint_fast64_t usage_queries;     /* aggregate statistics computed */
        atomic_uint_fast64_t manifests_built;   /* manifests encoded (not served from memory) */
        atomic_uint_fast64_t upstream_requests; /* HTTP requests to upstream caches */
        atomic_uint_fast64_t upstream_hits;     /* paths pulled into a cache */
        atomic_uint_fast64_t upstream_misses;   /* pulls no upstream could answer (incl. remembered) */
        atomic_uint_fast64_t upstream_bytes;    /* bytes downloaded from upstreams */
        atomic_uint_fast64_t upstream_errors;   /* pulls that failed with an upstream error */
        atomic_uint_fast64_t upstream_usec;     /* time spent pulling */
};

struct troved {
        struct troved_config cfg;
        struct db *db;
        struct chunkstore *store;
        struct token_secret secret;
        struct troved_metrics m;
        struct httpd_server *http;
        struct nicache *narinfos;   /* narinfo answers (signed text, or not found), cache_ttl_sec */
        struct tokcache *tokens;    /* verified tokens' claims */
        struct nicache *manifests;  /* encoded, signed manifests, bounded by bytes */
        struct storage_memo *present; /* chunk objects recently seen in the store */
        struct usage_memo *usage;   /* aggregate statistics, recomputed at most every few seconds */
        struct oidcpolicy *oidc_policy; /* token exchange: trusted issuers and rules (NULL: off) */
        struct oidckeys *oidc_keys;     /* their fetched key sets */
        struct upstream *upstream;  /* pull-through: fetches in flight, remembered misses */
        struct workpool *pool;      /* one thread per core: hashing, compressing, storing chunks of uploads */
        struct lastuse *lastuse;    /* reads to record as last use, flushed in batches */
        struct gc_thread *gc;       /* scheduled collections and last-use flushes */
};

#define METRIC_ADD(t, field, n) atomic_fetch_add_explicit(&(t)->m.field, (n), memory_order_relaxed)

/* config.c */
void troved_config_defaults(struct troved_config *c);
/* Applies the config file (if any), then TROVED_* environment variables,
 * then the command line; prints its own errors. 0, or 1 when --help or
 * --version was handled, or -EINVAL. */
int troved_config_load(struct troved_config *c, int argc, char **argv);
void troved_config_free(struct troved_config *c);

/* routes.c: the request router (httpd_route_fn). */
int troved_route(struct httpd_request *req, void *userdata);
