/* SPDX-License-Identifier: Apache-2.0 */
/*
 * workpool.h - a fixed set of threads that run batches of independent tasks,
 * so that hashing, compressing and storing the chunks of an upload use every
 * core while the thread that owns the upload goes on reading it.
 *
 * A batch (struct workpool_job, caller-allocated) is n calls fn(userdata, i),
 * i in [0, n), in any order and on any thread. workpool_submit() queues it
 * and returns at once; workpool_wait() runs the batch's remaining tasks on
 * the calling thread too (so a pool busy with other batches never stalls
 * it), waits for those taken by the pool, and returns the first error a
 * task returned. After an error the
 * batch's tasks not yet started are skipped. Every submitted job must be
 * waited for before its memory is reused or freed.
 *
 * Batches from several threads share the pool in submission order. All
 * functions are thread-safe; a job belongs to the thread that submitted it.
 */
#pragma once

#include <pthread.h>

#include "trove/common.h"

typedef int (*workpool_fn)(void *userdata, size_t i);

struct workpool_job {
        workpool_fn fn;
        void *userdata;
        size_t n;
        /* Private to the pool. */
        size_t next, running, finished;
        int error;
        bool queued;
        struct workpool_job *queue_next;
};

struct workpool;

/* threads: 0 = one per online CPU. */
int workpool_new(unsigned threads, struct workpool **ret);
struct workpool *workpool_free(struct workpool *wp);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct workpool *, workpool_free);
unsigned workpool_threads(const struct workpool *wp);

/* Fills in job and queues it. */
void workpool_submit(struct workpool *wp, struct workpool_job *job, workpool_fn fn, void *userdata, size_t n);
/* Helps with and waits for job: 0, or the first negative errno of a task. */
int workpool_wait(struct workpool *wp, struct workpool_job *job);
/* submit + wait. */
int workpool_run(struct workpool *wp, workpool_fn fn, void *userdata, size_t n);
