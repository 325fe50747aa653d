/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gc.h - garbage collection: drops paths past their cache's retention,
 * then NARs, chunk rows and objects nothing uses (db_gc() holds the rules
 * and the lock), and objects a crash left without a row.
 */
#pragma once

#include "troved.h"

struct gc_result {
        uint64_t chunks_deleted;
        uint64_t orphans_deleted;
};

/* Nothing younger than min_age_sec is collected. */
int gc_collect(struct troved *t, int64_t min_age_sec, struct gc_result *ret);
