/* SPDX-License-Identifier: Apache-2.0 */
/*
 * db.h - troved's metadata in PostgreSQL: the only code that talks to libpq.
 *
 * A fixed pool of connections shared by the request threads; a connection
 * that broke (the database restarted) is reset on its next use, and while
 * the database is unreachable every call fails with -ECONNREFUSED, which the
 * HTTP layer answers with 503. The schema is versioned; db_open() applies
 * pending migrations under an advisory lock, so several troved instances can
 * start against one database.
 *
 * Visibility rules (the transaction boundaries are the contract):
 *  - a chunk row exists only once its object is stored;
 *  - a NAR row and all its nar_chunks rows appear in one transaction, and
 *    only if every chunk row exists;
 *  - a path row appears in one transaction after its NAR row exists.
 * Concurrent inserts of the same chunk, NAR or path are idempotent.
 *
 * Results are returned in caller-owned structs; *_free() releases members.
 */
#pragma once

#include "trove/common.h"
#include "trove/hash.h"

struct db;

int db_open(const char *conninfo, unsigned pool_size, struct db **ret);
/* How long a cache row read from the database is reused (0: never). */
void db_set_cache_ttl(struct db *db, unsigned sec);
void db_close(struct db *db);
/* 0 if a query succeeds now; for /health and readiness. */
int db_ping(struct db *db);
/* Connections in use / total, for /metrics. */
void db_pool_usage(struct db *db, unsigned *ret_busy, unsigned *ret_total, uint64_t *ret_waits);

/* ---- caches ---- */

struct db_cache {
        int64_t id;
        char *name;
        bool is_public;
        int priority;
        char *store_dir;
        char *secret_key;        /* "name:base64" */
        char *upstream_keys;     /* space-separated key names or "name:base64" public keys (may be "") */
        char *upstreams;         /* newline-separated upstream cache URLs, asked in order (may be "") */
        int64_t retention_sec;   /* 0 = keep forever */
};

/* Longest retention a cache may have (100 years); GC arithmetic stays in range. */
#define DB_RETENTION_MAX 3153600000LL
#define DB_RETENTION_MAX_STR "3153600000"

void db_cache_free(struct db_cache *c);

/* Every cache's id, name and visibility (for deciding which caches a token
 * may read); *ret is malloc()ed. */
struct db_cache_ref {
        int64_t id;
        char name[65];
        bool is_public;
};
int db_cache_list(struct db *db, struct db_cache_ref **ret, size_t *ret_n);
int db_cache_get(struct db *db, const char *name, struct db_cache *ret);
/* -EEXIST if the name is taken. */
int db_cache_create(struct db *db, const struct db_cache *c, int64_t *ret_id);
int db_cache_update(struct db *db, const struct db_cache *c);
/* Removes the cache and its paths (NARs and chunks stay for GC). */
int db_cache_destroy(struct db *db, const char *name);

struct db_cache_stats {
        uint64_t paths;
        uint64_t nar_bytes;       /* sum of NarSize of its paths */
        uint64_t stored_bytes;    /* compressed bytes of the distinct chunks its paths use */
        uint64_t chunks;
        uint64_t pulled_paths;    /* of paths: those pulled from an upstream */
        uint64_t pulled_nar_bytes;
};
int db_cache_stats(struct db *db, int64_t cache_id, struct db_cache_stats *ret);

struct db_global_stats {
        uint64_t chunks, chunk_bytes, chunk_stored_bytes;
        uint64_t nars, nar_bytes;
        uint64_t paths;
};
int db_global_stats(struct db *db, struct db_global_stats *ret);

/* ---- chunks ---- */

struct db_chunk {
        uint8_t id[SHA256_DIGEST_LEN];
        uint32_t length;
        uint32_t stored_size;
};

/* Records a stored chunk; 1 if it was new, 0 if it existed. ensure_stored
 * (may be NULL) runs while garbage collection is locked out, right before
 * the row is written: it must make sure the object is in the chunk store
 * (a collection that ran between the upload and this call may have deleted
 * it). */
int db_chunk_insert(struct db *db, const struct db_chunk *c, int (*ensure_stored)(void *userdata),
                    void *userdata);
/* The same for n chunks in one transaction; ensure_stored(userdata, i) is
 * called for each under the GC lock. Returns how many rows were new. */
int db_chunks_insert(struct db *db, const struct db_chunk *c, size_t n,
                     int (*ensure_stored)(void *userdata, size_t i), void *userdata);
/* 1 and *ret filled if known, 0 if not. */
int db_chunk_get(struct db *db, const uint8_t id[SHA256_DIGEST_LEN], struct db_chunk *ret);
/* Sets present[i] for each id that has a row. */
int db_chunks_present(struct db *db, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n, bool *present);
/* Sets present[i] for each id that the caller has proved to hold: a chunk
 * of a path or upload of one of cache_ids (the caches the caller may pull),
 * or claimed for claim_cache_id by a verified upload. Chunks held only for
 * other caches are absent, so this answers nothing about other tenants. */
int db_chunks_visible(struct db *db, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n, const int64_t *cache_ids,
                      size_t n_caches, int64_t claim_cache_id, bool *present);
/* Records that an upload to cache_id proved the chunks (their bytes were
 * sent and verified); ids without a chunk row are skipped. */
int db_chunk_claims_add(struct db *db, int64_t cache_id, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n);
/* 1 if the chunk belongs to a NAR of a path in the cache. */
int db_chunk_in_cache(struct db *db, int64_t cache_id, const uint8_t id[SHA256_DIGEST_LEN]);

/* ---- NARs ---- */

struct db_nar_chunk {
        uint64_t nar_offset;
        uint32_t length;
        uint32_t stored_size;
        uint8_t id[SHA256_DIGEST_LEN];
};

struct db_nar {
        int64_t id;
        uint8_t nar_hash[SHA256_DIGEST_LEN];
        uint64_t nar_size;
        uint8_t file_hash[SHA256_DIGEST_LEN];
        uint64_t file_size;
        uint32_t n_chunks;
};

/* Inserts the NAR with its chunk table in one transaction; every chunk must
 * already have a row (-ENOENT otherwise, nothing inserted). Idempotent: an
 * existing NAR with the same hash returns its id. listing is the .ls JSON. */
int db_nar_insert(struct db *db, const struct db_nar *n, const struct db_nar_chunk *chunks,
                  size_t n_chunks, const char *listing, int64_t *ret_id);
int db_nar_get(struct db *db, int64_t id, struct db_nar *ret);
/* 1 if found. */
int db_nar_find(struct db *db, const uint8_t nar_hash[SHA256_DIGEST_LEN], struct db_nar *ret);
/* The same, but only a NAR used by a path or upload of one of cache_ids. */
int db_nar_find_visible(struct db *db, const uint8_t nar_hash[SHA256_DIGEST_LEN], const int64_t *cache_ids,
                        size_t n_caches, struct db_nar *ret);
/* The chunk table in NAR order; *ret is malloc()ed. */
int db_nar_chunks(struct db *db, int64_t nar_id, struct db_nar_chunk **ret, size_t *ret_n);
int db_nar_listing(struct db *db, int64_t nar_id, char **ret);
/* 1 if a path of the cache, or an upload to it, uses the NAR. */
int db_nar_in_cache(struct db *db, int64_t cache_id, int64_t nar_id);

/* ---- paths ---- */

struct db_path {
        int64_t id;
        char *store_path;        /* full path */
        char *references;        /* space-separated base names */
        char *deriver;           /* base name or NULL */
        char *sigs;              /* newline-separated, may be "" */
        char *ca;                /* or NULL */
        int64_t created_at;      /* unix seconds */
        bool pulled;             /* came from an upstream cache (insert only) */
        struct db_nar nar;
};

void db_path_free(struct db_path *p);
/* 1 if found. */
int db_path_get(struct db *db, int64_t cache_id, const char *hash_part, struct db_path *ret);
/* Inserts unless present; signatures of an existing row are merged. 1 if new. */
int db_path_insert(struct db *db, int64_t cache_id, const char *hash_part, const struct db_path *p,
                   int64_t nar_id);
int db_path_delete(struct db *db, int64_t cache_id, const char *hash_part);
/* For each of n hash parts, sets missing[i] if the cache lacks it. */
int db_paths_missing(struct db *db, int64_t cache_id, char *const *hash_parts, size_t n, bool *missing);

/* ---- learned prefetch profiles (docs/api.md) ---- */

/* What one mount read of one store path soon after looking it up: chunk
 * ids in first-touch order. */
struct db_profile_report {
        const char *hash_part;
        const uint8_t (*ids)[SHA256_DIGEST_LEN];
        size_t n;
};
/* Merges the reports into the cache's profiles, all or none: -ENOENT if
 * report *ret_bad names a path the cache does not have, -EBADMSG if it
 * names a chunk that is not one of that path's. */
int db_profiles_report(struct db *db, int64_t cache_id, const struct db_profile_report *reps, size_t n_reps,
                       size_t *ret_bad);
/* The profile of a path: at most max chunk ids (heap array, free()), in
 * the order mounts read them; none if nobody reported. -ENOENT if the
 * cache does not have the path. */
int db_profile_get(struct db *db, int64_t cache_id, const char *hash_part, size_t max,
                   uint8_t (**ret_ids)[SHA256_DIGEST_LEN], size_t *ret_n);

/* ---- uploads of `nix copy` (NAR first, narinfo second) ---- */

int db_upload_put(struct db *db, int64_t cache_id, const char *file_name, int64_t nar_id);
/* 1 and *ret_nar_id if the file was uploaded to this cache. */
int db_upload_get(struct db *db, int64_t cache_id, const char *file_name, int64_t *ret_nar_id);

/* ---- garbage collection ---- */

/* Drops paths past their cache's retention, uploads older than min_age_sec,
 * NARs no path or upload references, and chunks no NAR references that are
 * older than min_age_sec, calling delete_object for each of those chunks
 * before their rows go. All of it in one transaction that holds the GC lock
 * exclusively, so no chunk row or NAR is written meanwhile (writers take the
 * lock shared). Also deletes the objects db_orphans_note() recorded that
 * still have no row and were first seen before min_age_sec. Returns the
 * number of chunks and of orphaned objects deleted. */
int db_gc(struct db *db, int64_t min_age_sec,
          int (*delete_object)(void *userdata, const uint8_t id[SHA256_DIGEST_LEN]), void *userdata,
          uint64_t *ret_chunks, uint64_t *ret_orphans);
/* Records chunk-store objects that have no chunk row (first sighting
 * only); db_gc() deletes them once older than its min_age_sec. */
int db_orphans_note(struct db *db, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n);
