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
        uint64_t files;         /* files in the directory (all mounts) */
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
/* Removes chunk id if present (0 either way, or a negative errno). */
int chunkcache_remove(struct chunkcache *c, const uint8_t id[SHA256_DIGEST_LEN]);
/* Path of the file chunk id would live in; out must hold
 * strlen(dir) + 70 bytes (chunkcache_path_max()). */
size_t chunkcache_path_max(const struct chunkcache *c);
void chunkcache_path(const struct chunkcache *c, const uint8_t id[SHA256_DIGEST_LEN], char *out);
void chunkcache_get_stats(struct chunkcache *c, struct chunkcache_stats *ret);
