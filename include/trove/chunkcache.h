/* SPDX-License-Identifier: Apache-2.0 */
/*
 * chunkcache.h - trovefs's local chunk cache on disk: content-addressed
 * files <dir>/<ab>/<64 hex id> holding a chunk's stored form (its zstd
 * frame, exactly as the server sent it), bounded in size with LRU eviction,
 * surviving remounts and shareable between mounts.
 *
 * Rules that make sharing and crashes safe:
 * - a file appears only by rename() of a complete temporary file written
 *   in <dir>/tmp/, so no reader ever opens a partial file under its final
 *   name;
 * - every read decodes the frame and checks its SHA-256 against the id
 *   (chunkcodec_decode): a file that does not verify is deleted and
 *   reported as a miss, never served;
 * - a file that vanishes (another mount evicted it) is a miss; an open file
 *   that is unlinked still reads completely.
 * - the cache is private to its owner: directories are 0700 and files 0600
 *   whatever the umask; open and every rescan fix the modes an older
 *   version left world-readable (mounts sharing a directory run as the
 *   same user).
 *
 * The bound holds for the directory, jointly for every mount sharing it:
 * <dir>/usage holds the directory's total (bytes and files), mapped
 * shared by every mount and changed with atomic adds; storing a file
 * (rename with RENAME_NOREPLACE + add) and removing one (unlink +
 * subtract) happen under a shared flock() of the directory, so the counter
 * is exact. A store that leaves the total above the bound rescans the
 * directory under the exclusive lock, and evicts least recently used files
 * (whoever stored them) until the total is 90% of the bound.
 *
 * LRU: an in-memory list per mount, rebuilt at open by scanning the
 * directory (ordered by mtime); a hit moves the entry to the front and
 * bumps the file's mtime (at most once a minute), so the order survives
 * remounts and other mounts see use too. A rescan merges the files other
 * mounts stored into the list by their mtime.
 *
 * Kept manifests share all of this: a second kind of object, files
 * <dir>/manifests/<64 hex key> (key: chosen by the caller, e.g. a digest
 * of cache name and store path hash), written, counted, bounded, evicted
 * and made private exactly like chunks, in one LRU with them. A file holds
 * the manifest body, the server's signature text and a SHA-256 over both
 * (format in chunkcache.c); a file whose digest does not match is deleted
 * and reported, never returned. Checking the signature is the caller's.
 *
 * All functions are thread-safe. The cache does not decode into shared
 * buffers: callers pass a codec they own (one per thread).
 */
#pragma once

#include "trove/chunkcodec.h"
#include "trove/common.h"
#include "trove/hash.h"

struct chunkcache;

struct chunkcache_stats {
        uint64_t hits;
        uint64_t misses;
        uint64_t corrupt;       /* files that failed verification (deleted) */
        uint64_t stored;        /* files written */
        uint64_t evicted;       /* files this cache removed to stay under the bound */
        uint64_t manifest_hits;    /* kept manifests read back intact */
        uint64_t manifest_misses;
        uint64_t manifest_damaged; /* kept manifests deleted as damaged or refused */
        uint64_t manifests_stored; /* kept manifest files written */
        uint64_t files;         /* files in the directory (all mounts), both kinds */
        uint64_t bytes;         /* their total size: what the bound applies to */
};

/* Opens (creating it and its subdirectories if needed) the cache in dir,
 * bounded by max_bytes (0: unbounded). Scans what is there, resets the
 * shared counter to it and evicts down to 90% of the bound if over it;
 * removes stale temporary files. Mounts sharing a directory should use
 * one bound (each enforces its own against the joint total). */
int chunkcache_open(const char *dir, uint64_t max_bytes, struct chunkcache **ret);
struct chunkcache *chunkcache_free(struct chunkcache *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct chunkcache *, chunkcache_free);

/* Looks chunk id up and decodes it into out (capacity cap), verifying it;
 * expected_len, if non-zero, is the length the caller expects (a file
 * decoding to another length is corrupt). Returns 1 and sets *ret_len on a
 * hit, 0 on a miss (including a corrupt file, which is deleted), or a
 * negative errno on a local I/O error other than absence. */
int chunkcache_get(struct chunkcache *c, struct chunkcodec *codec,
                   const uint8_t id[SHA256_DIGEST_LEN], size_t expected_len, void *out,
                   size_t cap, size_t *ret_len);
/* Stores the frame of chunk id. The caller has verified it (decoded it
 * against id). Storing an id already present is a no-op. When the
 * directory is over the bound, evicts least recently used files (never
 * this one) down to 90% of it. */
int chunkcache_put(struct chunkcache *c, const uint8_t id[SHA256_DIGEST_LEN], const void *frame,
                   size_t n);
/* Whether a file for chunk id is present (unverified: a read may still
 * find it corrupt or evicted). For deciding what is worth fetching. */
bool chunkcache_has(const struct chunkcache *c, const uint8_t id[SHA256_DIGEST_LEN]);
/* Removes chunk id if present (0 either way, or a negative errno). */
int chunkcache_remove(struct chunkcache *c, const uint8_t id[SHA256_DIGEST_LEN]);
/* Path of the file chunk id would live in; out must hold
 * chunkcache_path_max() bytes (strlen(dir) + 76). */
size_t chunkcache_path_max(const struct chunkcache *c);
void chunkcache_path(const struct chunkcache *c, const uint8_t id[SHA256_DIGEST_LEN], char *out);
void chunkcache_get_stats(struct chunkcache *c, struct chunkcache_stats *ret);

/* Longest signature text a kept manifest may carry. */
#define CHUNKCACHE_SIG_MAX 1024

/* Keeps a manifest body (1..MANIFEST_MAX_SIZE bytes) with its signature
 * text sig (printable ASCII without spaces, at most CHUNKCACHE_SIG_MAX;
 * NULL or "": none) under key. The caller has verified it. Keeping a key
 * already present is a no-op (manifests are immutable). May evict least
 * recently used chunks and manifests to stay under the bound. */
int chunkcache_manifest_put(struct chunkcache *c, const uint8_t key[SHA256_DIGEST_LEN],
                            const char *sig, const void *body, size_t n);
/* Reads the manifest kept under key back: returns 1 with *ret_sig (a heap
 * string, "" if it was kept without one), *ret_body (heap) and *ret_len;
 * 0 when none is kept; -EBADMSG when the file was damaged (it is deleted,
 * counted in manifest_damaged); another negative errno on a local I/O
 * error. */
int chunkcache_manifest_get(struct chunkcache *c, const uint8_t key[SHA256_DIGEST_LEN],
                            char **ret_sig, uint8_t **ret_body, size_t *ret_len);
/* Removes the manifest kept under key, if any. */
int chunkcache_manifest_remove(struct chunkcache *c, const uint8_t key[SHA256_DIGEST_LEN]);
/* Same, for a kept manifest the caller refused (its signature or content
 * does not check out): also counted in manifest_damaged. */
int chunkcache_manifest_discard(struct chunkcache *c, const uint8_t key[SHA256_DIGEST_LEN]);
