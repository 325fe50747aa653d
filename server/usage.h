/* SPDX-License-Identifier: Apache-2.0 */
/*
 * usage.h - storage statistics (per cache, and for the whole server) as
 * /metrics and the cache GET report them. They are full-table aggregates,
 * so each is computed at most once per USAGE_TTL_SEC however often it is
 * asked for (and by whom).
 */
#pragma once

#include "troved.h"

#define USAGE_TTL_SEC 30

int usage_memo_new(struct usage_memo **ret);
void usage_memo_free(struct usage_memo *m);
int usage_global(struct troved *t, struct db_global_stats *ret);
int usage_cache(struct troved *t, int64_t cache_id, struct db_cache_stats *ret);
