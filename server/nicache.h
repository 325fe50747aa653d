/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nicache.h - rendered, signed narinfos kept in memory for a few seconds.
 *
 * The narinfo of a store path only changes when signatures are added or the
 * path is deleted; both go through this process's invalidation calls, so a
 * single troved never serves a stale answer. Also used for manifests. Several troved instances
 * sharing one database see each other's changes within the TTL. Fixed size:
 * a new entry replaces whatever occupied its slot.
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
/* hash NULL: every entry of the cache; cache_id < 0: everything. */
void nicache_forget(struct nicache *c, int64_t cache_id, const char *hash);
