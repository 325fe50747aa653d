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
#include "trove/resemble.h"

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
        int64_t retention_sec;   /* 0 = keep forever; counted from a path's last use or push */
        int64_t quota_bytes;     /* stored-bytes budget; 0 = none */
        char *old_secret_key;    /* retiring key of a rotation, still signing; "" = none */
};

/* Largest quota a cache may have (1 EiB). */
#define DB_QUOTA_MAX (1LL << 60)

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
        /* stored_bytes by kind of chunk (DB_CHUNK_*); the bases of its delta
         * chunks count, they are needed to read them */
        uint64_t stored_by_kind[3];
};
int db_cache_stats(struct db *db, int64_t cache_id, struct db_cache_stats *ret);

struct db_global_stats {
        uint64_t chunks, chunk_bytes, chunk_stored_bytes;
        uint64_t stored_by_kind[3];   /* chunk_stored_bytes by kind (DB_CHUNK_*) */
        uint64_t nars, nar_bytes;
        uint64_t paths;
};
int db_global_stats(struct db *db, struct db_global_stats *ret);

/* ---- chunks ---- */

/* How a chunk's object holds it (include/trove/chunkcodec.h). */
enum {
        DB_CHUNK_PLAIN = 0,         /* one zstd frame, served as stored */
        DB_CHUNK_DELTA = 1,         /* a delta object against base (a plain or recompressed chunk) */
        DB_CHUNK_RECOMPRESSED = 2,  /* one zstd frame, recompressed at a higher level */
};

struct db_chunk {
        uint8_t id[SHA256_DIGEST_LEN];
        uint32_t length;
        uint32_t stored_size;       /* bytes of the object */
        uint32_t served_size;       /* bytes of the frame served in a .nar.zst; 0 on insert: stored_size */
        uint8_t kind;
        uint8_t base[SHA256_DIGEST_LEN]; /* DB_CHUNK_DELTA: the base's id */
        uint32_t base_length;       /* its length (read only) */
        /* Super-features (plain chunks, written on insert if has_features):
         * the resemblance index a later chunk finds this one in. */
        bool has_features;
        uint64_t features[RESEMBLE_SF];
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
/* Sets present[i] for each id that has a row. A chunk found is protected
 * from garbage collection for its min-age from now (its row's age is
 * refreshed under the GC lock), so the caller may reference it. */
int db_chunks_present(struct db *db, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n, bool *present);
/* Sets present[i] for each id that the caller has proved to hold: a chunk
 * of a path or upload of one of cache_ids (the caches the caller may pull),
 * or claimed for claim_cache_id by a verified upload. Chunks held only for
 * other caches are absent, so this answers nothing about other tenants. */
int db_chunks_visible(struct db *db, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n, const int64_t *cache_ids,
                      size_t n_caches, int64_t claim_cache_id, bool *present);
/* Records that an upload to cache_id proved the chunks (their bytes were
 * sent and verified); ids without a chunk row are skipped. claimed (may
 * be NULL) gets which ids were claimed: a claimed chunk is not collected
 * for GC's min-age, so the push may reference it. */
int db_chunk_claims_add(struct db *db, int64_t cache_id, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n,
                        bool *claimed);
/* Plain chunks that are cold: older than min_age_sec, and no path using
 * them was used within it; at most max, in id order after *cursor (which
 * is moved past them). *ret is malloc()ed. */
struct db_cold_chunk {
        uint8_t id[SHA256_DIGEST_LEN];
        uint32_t length;
        uint32_t stored_size;
};
int db_cold_chunks(struct db *db, int64_t min_age_sec, size_t max, int64_t *cursor, struct db_cold_chunk **ret,
                   size_t *ret_n);
/* Records that the chunk's object is now a recompressed one of stored_size
 * bytes: under the GC lock, with the row locked, replace() (if not NULL) stores it (so a
 * collection never runs between the object and its row); 0 and nothing
 * done if the chunk is gone or no longer plain, 1 when recorded. */
int db_chunk_recompress(struct db *db, const uint8_t id[SHA256_DIGEST_LEN], uint32_t stored_size,
                        int (*replace)(void *userdata), void *userdata);

/* For the resemblance index: a new chunk's super-features and length. */
struct db_base_query {
        uint64_t features[RESEMBLE_SF];
        uint32_t length;
};
struct db_chunk_base {
        bool found;
        uint8_t id[SHA256_DIGEST_LEN];
        uint32_t length;
};
/* For each query, the stored chunk that shares the most super-features
 * with it: not a delta, of a length within a factor of two, held by
 * cache_id (one of its paths or uploads, or claimed by it). A base found
 * is protected from GC for its min-age from now. One query for all n. */
int db_chunk_bases(struct db *db, int64_t cache_id, const struct db_base_query *qs, size_t n,
                   struct db_chunk_base *ret);
/* 1 and its length and kind (DB_CHUNK_*; each may be NULL) if the chunk
 * belongs to a NAR of a path in the cache. */
int db_chunk_in_cache(struct db *db, int64_t cache_id, const uint8_t id[SHA256_DIGEST_LEN], uint32_t *ret_length,
                      uint8_t *ret_kind);

/* ---- NARs ---- */

struct db_nar_chunk {
        uint64_t nar_offset;
        uint32_t length;
        uint32_t stored_size;
        uint8_t id[SHA256_DIGEST_LEN];
        uint32_t served_size;   /* read only */
        uint8_t kind;           /* read only; DB_CHUNK_* */
        uint8_t base[SHA256_DIGEST_LEN]; /* read only; DB_CHUNK_DELTA */
        uint32_t base_length;
        bool base_visible;      /* read only: the cache asked about holds the base */
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
/* The chunk table in NAR order; *ret is malloc()ed. cache_id > 0: also
 * whether that cache holds each delta chunk's base. */
int db_nar_chunks(struct db *db, int64_t nar_id, int64_t cache_id, struct db_nar_chunk **ret, size_t *ret_n);
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
/* Deletes the n paths (hash parts) of the cache in one transaction. Unless
 * force, refused with -EBUSY if a path outside the set references one of
 * them, or -EPERM if one is pinned; *ret_blockers (malloc()ed,
 * newline-separated store paths, may be NULL) then names the referrers or
 * the pinned paths. -ENOENT (nothing deleted) if one is not in the cache. */
int db_paths_delete(struct db *db, int64_t cache_id, char *const *hash_parts, size_t n, bool force,
                    char **ret_blockers);
/* Pins (pin true) or unpins the n paths; with closure, also every path of
 * the cache in their closures. -ENOENT (nothing changed) if one of the n is
 * not in the cache. *ret_changed: how many rows changed. */
int db_paths_pin(struct db *db, int64_t cache_id, char *const *hash_parts, size_t n, bool pin, bool closure,
                 uint64_t *ret_changed);
/* The cache's pinned store paths, newline-separated; *ret malloc()ed. */
int db_pins_list(struct db *db, int64_t cache_id, char **ret);
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

/* ---- last use ---- */

/* A read to mark: the path of a cache named by its hash part, by its NAR,
 * or every path of the cache that uses a chunk. */
enum db_use_kind { DB_USE_PATH, DB_USE_NAR, DB_USE_CHUNK };
struct db_use {
        int64_t cache_id;
        enum db_use_kind kind;
        union {
                char hash[33];                    /* DB_USE_PATH */
                int64_t nar_id;                   /* DB_USE_NAR */
                uint8_t chunk[SHA256_DIGEST_LEN]; /* DB_USE_CHUNK */
        };
};
/* Sets last_used to now for the paths the n uses name (a path marked
 * within the last minute is left alone: one write per path per minute at
 * most). */
int db_paths_mark_used(struct db *db, const struct db_use *uses, size_t n);

/* ---- garbage collection ---- */

/* One collection run: holds one connection and the cluster-wide run lock
 * (one run at a time among all troved instances sharing the database).
 * Every step below is a short transaction of at most `batch` rows; objects
 * are deleted only after the rows that referenced them are committed. */
struct db_gc;
/* wait: block until another instance's run is over (at most a few
 * minutes); otherwise -EALREADY if one is running. */
int db_gc_begin(struct db *db, bool wait, struct db_gc **ret);
void db_gc_end(struct db_gc *g);
/* Marks the paths past their cache's retention (counted from last use or
 * push) that no pinned or retained path of the cache references,
 * directly or not. Returns how many. */
int db_gc_mark_retention(struct db_gc *g, uint64_t *ret_n);
/* For each cache over its quota, marks its least recently used unpinned
 * paths that no other path references (pulled ones first) whose NARs
 * add up to what the cache is over by; *ret_n how many (0: every cache is
 * within its quota or has nothing left to drop). */
int db_gc_mark_quota(struct db_gc *g, unsigned batch, uint64_t *ret_n);
/* Looks at the next batch marked paths after *after (in id order) and
 * deletes those that no path references any more and that were not used,
 * pushed or pinned since they were marked; hash parts and cache ids of the
 * deleted ones go to deleted(). *ret_n: how many; *after: the last one
 * looked at, or 0 when none were left after it (a pass is done: a path
 * that was still referenced may go in the next pass). */
int db_gc_sweep_paths(struct db_gc *g, unsigned batch, int64_t *after,
                      void (*deleted)(void *userdata, int64_t cache_id, const char *hash), void *userdata,
                      uint64_t *ret_n);
/* Drops uploads and chunk claims older than min_age_sec, then finds the
 * NARs and chunks nothing references (chunks also older than min_age_sec);
 * *ret_n how many candidates. */
int db_gc_mark_unreferenced(struct db_gc *g, int64_t min_age_sec, uint64_t *ret_n);
/* Deletes up to batch unreferenced NARs, then chunk rows (rechecked under
 * the GC lock); the objects of deleted chunk rows are recorded in
 * orphan_objects in the same transaction. after[0] and after[1] (0 at
 * first) are where the lists of NARs and of chunks go on. *ret_nars,
 * *ret_chunks: how many. Returns 1 while candidates were left, 0 when the
 * lists are done. */
int db_gc_sweep_rows(struct db_gc *g, int64_t min_age_sec, unsigned batch, int64_t after[2], uint64_t *ret_nars,
                     uint64_t *ret_chunks);
/* Deletes up to batch objects recorded in orphan_objects that have no
 * chunk row, for at most budget_usec: those left by deleted rows at once, those found in the store
 * without a row once first seen more than min_age_sec ago. Runs under the
 * GC lock, so a writer that needs one of these objects stores it again
 * before writing its row. *ret_n: objects deleted; *ret_more: whether
 * another batch may find more. */
int db_gc_delete_objects(struct db_gc *g, int64_t min_age_sec, unsigned batch, uint64_t budget_usec,
                         int (*delete_object)(void *userdata, const uint8_t id[SHA256_DIGEST_LEN]), void *userdata,
                         uint64_t *ret_n, bool *ret_more);

/* Records chunk-store objects that have no chunk row (first sighting
 * only); db_gc() deletes them once older than its min_age_sec. */
int db_orphans_note(struct db *db, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n);
