/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gc.h - garbage collection and the cache lifecycle it enforces.
 *
 * A run: flush the last-use marks; mark the paths past their cache's
 * retention (counted from last use or push) that no kept path references;
 * delete them referrers first, in short batches; then, per cache over its
 * quota, its least recently used unreferenced unpinned paths (pulled ones
 * first) until it is within; then NARs and chunk rows nothing references,
 * and last the chunk objects whose rows are gone (and objects a crash left
 * without a row). Every batch is its own short transaction, so pushes and
 * reads wait at most one batch; an object is deleted only after the rows
 * that referenced it are committed, so a run killed anywhere leaves no
 * visible path without its chunks, and the next run finishes its work.
 * Chunks and NARs younger than min_age are never collected (a push in
 * flight references them); neither is a path used in the last minute.
 *
 * One run at a time among all troved instances sharing the database.
 * troved also runs collections on a schedule (gc_start()).
 */
#pragma once

#include "troved.h"

struct gc_result {
        bool skipped;             /* another instance was collecting */
        uint64_t paths_deleted;
        uint64_t nars_deleted;
        uint64_t chunks_deleted;  /* chunk rows */
        uint64_t objects_deleted; /* objects removed from the chunk store */
        uint64_t usec;
        /* transactions that held a lock writers wait for, and the longest */
        uint64_t locked_transactions;
        uint64_t locked_max_usec;
};

/* Nothing younger than min_age_sec is collected. wait: wait for another
 * instance's run to end instead of skipping. */
int gc_collect(struct troved *t, int64_t min_age_sec, bool wait, struct gc_result *ret);

/* The background thread: flushes last-use marks every few seconds and
 * collects every cfg.gc_interval_sec (0: never) with cfg.gc_min_age_sec. */
int gc_start(struct troved *t);
/* Stops it and ends a collection in progress after its current batch (it
 * fails with -ECANCELED); the caller flushes the last marks. */
void gc_stop(struct troved *t);
