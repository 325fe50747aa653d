/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fetcher.h - what trovefs reads from troved: a store path's manifest
 * (GET /_api/v1/caches/<cache>/manifests/<hash part>) and chunks
 * (GET /_api/v1/caches/<cache>/chunks/<64 hex>), over keep-alive HTTP.
 *
 * Chunks:
 * - are fetched by a pool of worker threads, each with its own connection
 *   and zstd context; demand requests go before read-ahead;
 * - single-flight: concurrent requests for one chunk wait for one fetch;
 * - come from the local chunk cache (include/trove/chunkcache.h) when it
 *   holds them; what the network brings is stored there;
 * - are always verified: decoded and hashed against their id; a chunk that
 *   does not verify is never returned (it is refetched within the retry
 *   budget, then the request fails with -EIO);
 * - are kept decoded in a bounded in-memory LRU (a FUSE read of 128 KiB
 *   touches a 64 KiB chunk twice; decoding it twice would double the work).
 *
 * Failures are bounded in time: each request is retried a few times with
 * exponential backoff while the server is unreachable or answers 5xx/429,
 * and no new attempt starts after timeout_ms; one attempt itself is capped
 * at timeout_ms/2, so an operation fails within 1.5 x timeout_ms, never
 * hangs. 404 is -ENOENT and 401/403 -EACCES at once, without retries.
 *
 * Failover: with several servers (all serving the same cache, signed with
 * the same key), every request goes to the first server not in back-off.
 * A connection error, a timeout or a 5xx from a server puts it in back-off
 * (1 s, doubled with each failure in a row up to 60 s, ended by a success)
 * and the request goes on at once to the next server, within the same
 * time budget. When every server is in back-off the one that comes out
 * first is asked, with the plain retries' waits. Manifests are verified
 * whichever server answered.
 *
 * Kept manifests: with a chunk cache, every manifest that was fetched,
 * verified and decoded is also kept there (with its signature;
 * chunkcache_manifest_put), and a lookup uses a kept one before asking
 * any server, after the same checks as a downloaded one (signature when
 * keys are trusted, full decode, the right store path). A kept manifest
 * that fails them is deleted and the manifest fetched again. "Not found"
 * is never kept.
 *
 * A struct fetcher_chunk is a counted reference to decoded bytes; release
 * it with fetcher_chunk_unref(). Everything here is thread-safe.
 */
#pragma once

#include "trove/chunkcache.h"
#include "trove/common.h"
#include "trove/manifest.h"

struct fetcher;
struct fetcher_chunk;

/* Servers of one cache, at most. */
#define FETCHER_SERVERS_MAX 16

struct fetcher_options {
        const char *server_url;   /* "http://host:port" (a trailing '/' is dropped) */
        /* Or several servers of the same cache (n_servers > 0 overrides
         * server_url), tried in this order: see "Failover" above. */
        const char *const *server_urls;
        size_t n_servers;
        const char *cache;        /* cache name */
        const char *token;        /* Bearer token, or NULL for anonymous pull */
        unsigned n_workers;       /* 0: 16 */
        long timeout_ms;          /* per operation, retries included; 0: 30 s */
        unsigned max_attempts;    /* per operation; 0: 5 */
        uint64_t mem_cache_bytes; /* decoded chunks kept in memory; 0: 64 MiB */
        unsigned max_prefetch;    /* read-ahead requests queued at most; 0: 64 */
        /* If n_trusted_keys > 0, every manifest must carry a valid
         * MANIFEST_SIG_HEADER signature (include/trove/manifest.h) by one of
         * these keys (copied). */
        const struct signing_public *trusted_keys;
        size_t n_trusted_keys;
};

struct fetcher_stats {
        uint64_t manifests_fetched;
        uint64_t manifest_bytes;
        uint64_t manifests_refused; /* signature missing or not verifying */
        uint64_t chunks_fetched;  /* chunks downloaded from the server */
        uint64_t bytes_fetched;   /* their stored (compressed) bytes */
        uint64_t cache_hits;      /* chunks read from the local chunk cache */
        uint64_t cache_misses;
        uint64_t mem_hits;        /* requests served by the in-memory LRU or a shared fetch */
        uint64_t prefetches;      /* read-ahead fetches started */
        uint64_t retries;
        uint64_t verify_failures; /* downloaded chunks that did not verify */
        uint64_t errors;          /* operations that failed */
        uint64_t failovers;       /* attempts sent to another server after one failed */
        uint64_t manifests_kept_used; /* lookups answered by a manifest kept on disk */
};

/* cache may be NULL (no local cache). It must outlive the fetcher. */
int fetcher_new(const struct fetcher_options *o, struct chunkcache *cache, struct fetcher **ret);
/* Stops the workers; every chunk reference must have been released. */
struct fetcher *fetcher_free(struct fetcher *f);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct fetcher *, fetcher_free);

/* Fetches and decodes the manifest of the store path with hash part
 * hash_part (32 nix32 characters). -ENOENT: the cache does not have it;
 * -EBADMSG: the manifest does not parse (err says why); -EKEYREJECTED:
 * trusted keys are set and the manifest's signature is missing or does not
 * verify (err says why; nothing of it was parsed); -EACCES; -EIO /
 * -ETIMEDOUT / -ECONNREFUSED etc. when the server could not be reached in
 * time. */
int fetcher_get_manifest(struct fetcher *f, const char *hash_part, const char *store_dir,
                         struct manifest *ret, struct trove_error *err);

/* The decoded, verified bytes of chunk mc; waits for the fetch. -EIO (or
 * the error above) when it cannot be had. */
int fetcher_chunk_get(struct fetcher *f, const struct manifest_chunk *mc,
                      struct fetcher_chunk **ret);
/* Starts fetching mc in the background unless it is present, in flight, or
 * too much read-ahead is queued already. Never waits. */
void fetcher_chunk_prefetch(struct fetcher *f, const struct manifest_chunk *mc);
/* Background fetch of mc (learned prefetch): 1 when queued, 0 when it is
 * in the local chunk cache, in memory or in flight already. Background
 * fetches run only when no demand read or read-ahead waits, on at most
 * n_workers - 2 workers at once (so demand always finds a free one); when
 * enough of them are queued this waits for room, until *cancel is set
 * (then -ECANCELED; wake waiters with fetcher_cancel_background()). */
int fetcher_chunk_background(struct fetcher *f, const struct manifest_chunk *mc,
                             const bool *cancel);
void fetcher_cancel_background(struct fetcher *f);
/* The learned prefetch profile of a store path (include/trove/profile.h):
 * chunk ids in read order (heap array, free()). -ENOENT: the cache does
 * not have the path (or the server no profiles); the errors of
 * fetcher_get_manifest otherwise. */
int fetcher_get_profile(struct fetcher *f, const char *hash_part,
                        uint8_t (**ret_ids)[SHA256_DIGEST_LEN], size_t *ret_n);
/* POSTs a report (profile_report_add/_end) to the first server not in
 * back-off, once, without retries. */
int fetcher_report_profiles(struct fetcher *f, const void *body, size_t n);
const uint8_t *fetcher_chunk_data(const struct fetcher_chunk *c, size_t *ret_len);
void fetcher_chunk_unref(struct fetcher *f, struct fetcher_chunk *c);

void fetcher_get_stats(struct fetcher *f, struct fetcher_stats *ret);
