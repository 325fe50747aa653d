/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nicache.h - rendered, signed narinfos kept in memory for a few seconds.
 *
 * The narinfo of a store path only changes when it is committed, signatures
 * are added or the path is deleted; all go through this process's
 * invalidation calls, so a single troved never serves a stale answer. Also
 * used for manifests, and for "not found" answers (an empty text). Several
 * troved instances sharing one database see each other's changes within
 * the TTL. Fixed size: a new entry replaces whatever occupied its slot.
 */
#pragma once

#include "trove/common.h"

struct nicache;

/* At most max_bytes of text in all; an entry that would pass it is not kept. */
int nicache_new(unsigned slots, unsigned ttl_sec, size_t max_bytes, struct nicache **ret);
void nicache_free(struct nicache *c);
/* A malloc()ed copy of the cached text, or NULL. */
char *nicache_get(struct nicache *c, int64_t cache_id, const char *hash, size_t *ret_len);
void nicache_put(struct nicache *c, int64_t cache_id, const char *hash, const char *text, size_t len);
/* For answers computed from the database: take nicache_epoch() of the key
 * before reading, and keep the answer with nicache_put_since(); it is not
 * kept if its slot was forgotten in between (a concurrent change may have
 * made it stale already). */
uint64_t nicache_epoch(struct nicache *c, int64_t cache_id, const char *hash);
void nicache_put_since(struct nicache *c, uint64_t epoch, int64_t cache_id, const char *hash, const char *text,
                       size_t len);
/* A second answer per key (another form of the same document, such as a
 * manifest of another version) is kept under NICACHE_VARIANT(cache_id);
 * forgetting a cache's key forgets both. */
#define NICACHE_VARIANT(cache_id) ((int64_t) ((uint64_t) (cache_id) | (1ull << 62)))
/* hash NULL: every entry of the cache; cache_id < 0: everything. */
void nicache_forget(struct nicache *c, int64_t cache_id, const char *hash);
