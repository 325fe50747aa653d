/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gc.c - garbage collection (gc.h): the run's steps in order, each in
 * bounded batches, and the thread that schedules runs and flushes last-use
 * marks.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "gc.h"
#include "recompress.h"
#include "lastuse.h"
#include "storage.h"

#define GC_LIST_BATCH 10000
/* A transaction of a collection that holds a lock writers wait for (paths,
 * rows, objects) aims to take at most GC_HOLD_USEC, and is followed by a
 * pause as long as it took: a collection holds those locks at most about
 * half the time, so a push or read waits about one such transaction at
 * most for each lock it takes, and usually not at all. The rows per
 * transaction adapt to that aim within these bounds. */
#define GC_HOLD_USEC 20000
#define GC_PAUSE_MAX_USEC 100000
#define GC_PATH_BATCH 200
#define GC_ROW_BATCH 500
/* Objects per transaction (each is a store round trip; the time aim ends
 * a transaction early). */
#define GC_OBJECT_BATCH 512
/* Quota rounds per run: each marks what covers the excess it sees. */
#define GC_QUOTA_ROUNDS 64
/* Last-use marks are written at least this often. */
#define GC_FLUSH_SEC 10

struct gc_thread {
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool stop;
};

/* One run per process at a time; other instances are kept out by the
 * database's run lock. Shutdown ends a run in progress (scheduled or asked
 * for) after its current batch. */
static pthread_mutex_t gc_run_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool gc_cancel;

static int gc_cancelled(void) {
        return atomic_load(&gc_cancel) ? -ECANCELED : 0;
}

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

/* Rows per transaction, halved while transactions take longer than the
 * aim and doubled while they take less than half of it; res counts the
 * transactions. */
struct gc_pace {
        unsigned batch, min, max;
        struct gc_result *res;
};

static void gc_pause(uint64_t usec) {
        struct timespec ts = { .tv_sec = 0, .tv_nsec = (long) (MIN(usec, (uint64_t) GC_PAUSE_MAX_USEC) * 1000u) };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* After a transaction that started at t0: adapts the batch, then pauses. */
static void gc_paced(struct gc_pace *p, uint64_t t0) {
        uint64_t took = now_usec() - t0;

        p->res->locked_transactions++;
        p->res->locked_max_usec = MAX(p->res->locked_max_usec, took);
        if (took > GC_HOLD_USEC)
                p->batch = MAX(p->min, p->batch / 2);
        else if (took < GC_HOLD_USEC / 2)
                p->batch = MIN(p->max, p->batch * 2);
        gc_pause(took);
}

static int gc_delete_object(void *userdata, const uint8_t id[SHA256_DIGEST_LEN]) {
        int r = chunkstore_delete(((struct troved *) userdata)->store, id);
        return r == -ENOENT ? 0 : r;
}

struct gc_list {
        struct troved *t;
        uint8_t (*ids)[SHA256_DIGEST_LEN];
        size_t n;
};

static int gc_list_flush(struct gc_list *l) {
        int r = db_orphans_note(l->t->db, (const uint8_t(*)[SHA256_DIGEST_LEN]) l->ids, l->n);
        l->n = 0;
        return r;
}

static int gc_list_one(const uint8_t id[SHA256_DIGEST_LEN], uint64_t size, void *userdata) {
        struct gc_list *l = userdata;
        memcpy(l->ids[l->n++], id, SHA256_DIGEST_LEN);
        return l->n == GC_LIST_BATCH ? gc_list_flush(l) : 0;
}

/* Objects without rows (left by a crash between the two) are noted; they
 * are deleted once first seen more than min_age ago. */
static int gc_note_orphans(struct troved *t) {
        struct gc_list list = { .t = t };
        int r;

        list.ids = malloc(GC_LIST_BATCH * sizeof *list.ids);
        if (!list.ids)
                return -ENOMEM;
        r = chunkstore_list(t->store, gc_list_one, &list);
        if (r >= 0)
                r = gc_list_flush(&list);
        free(list.ids);
        return r;
}

static void gc_path_deleted(void *userdata, int64_t cache_id, const char *hash) {
        struct troved *t = userdata;
        nicache_forget(t->narinfos, cache_id, hash);
        nicache_forget(t->manifests, cache_id, hash);
}

/* Deletes the marked paths in passes over the marked set, batch by batch,
 * until a pass deletes none (each pass deletes the paths that nothing
 * references any more: those that referenced them went in the pass
 * before). Reads of this process are flushed before each batch, so a path
 * read a moment ago is seen as used. */
static int gc_sweep_paths(struct troved *t, struct db_gc *g, struct gc_result *res) {
        struct gc_pace pace = { GC_PATH_BATCH / 4, GC_PATH_BATCH / 8, GC_PATH_BATCH, res };
        int64_t after = 0;
        bool progress = false;

        for (;;) {
                uint64_t n = 0, t0;
                int r = gc_cancelled();
                if (r < 0)
                        return r;
                (void) lastuse_flush(t->lastuse, t->db);
                t0 = now_usec();
                r = db_gc_sweep_paths(g, pace.batch, &after, gc_path_deleted, t, &n);
                if (r < 0)
                        return r;
                res->paths_deleted += n;
                progress = progress || n > 0;
                if (after == 0) {
                        if (!progress)
                                return 0;
                        progress = false;
                }
                gc_paced(&pace, t0);
        }
}

static int gc_run(struct troved *t, struct db_gc *g, int64_t min_age, struct gc_result *res) {
        uint64_t n;
        bool more;
        int r;

        r = gc_note_orphans(t);
        if (r < 0)
                return r;
        r = db_gc_mark_retention(g, &n);
        if (r < 0)
                return r;
        r = gc_sweep_paths(t, g, res);
        if (r < 0)
                return r;
        for (unsigned round = 0; round < GC_QUOTA_ROUNDS; round++) {
                uint64_t before = res->paths_deleted;
                r = db_gc_mark_quota(g, GC_PATH_BATCH, &n);
                if (r < 0)
                        return r;
                if (n == 0)
                        break;
                r = gc_sweep_paths(t, g, res);
                if (r < 0)
                        return r;
                if (res->paths_deleted == before)
                        break; /* what was marked is in use again */
        }
        r = db_gc_mark_unreferenced(g, min_age, &n);
        if (r < 0)
                return r;
        /* Each batch takes at least one candidate off the lists. */
        struct gc_pace pace = { GC_ROW_BATCH / 4, GC_ROW_BATCH / 8, GC_ROW_BATCH, res };
        int64_t after[2] = { 0, 0 };
        for (uint64_t i = 0; i <= n; i++) {
                uint64_t nars, chunks, t0 = now_usec();
                r = gc_cancelled();
                if (r < 0)
                        return r;
                r = db_gc_sweep_rows(g, min_age, pace.batch, after, &nars, &chunks);
                if (r < 0)
                        return r;
                res->nars_deleted += nars;
                res->chunks_deleted += chunks;
                if (r == 0)
                        break;
                gc_paced(&pace, t0);
        }
        /* Rows are gone (committed): now their objects. */
        storage_forget_present(t);
        pace = (struct gc_pace){ GC_OBJECT_BATCH / 4, GC_OBJECT_BATCH / 8, GC_OBJECT_BATCH, res };
        do {
                uint64_t t0 = now_usec();
                r = gc_cancelled();
                if (r < 0)
                        return r;
                r = db_gc_delete_objects(g, min_age, pace.batch, GC_HOLD_USEC, gc_delete_object, t, &n, &more);
                if (r < 0)
                        return r;
                res->objects_deleted += n;
                if (more)
                        gc_paced(&pace, t0);
        } while (more);
        return 0;
}

int gc_collect(struct troved *t, int64_t min_age_sec, bool wait, struct gc_result *ret) {
        struct gc_result res = {};
        struct db_gc *g = NULL;
        uint64_t start = now_usec();
        int r;

        if (wait)
                pthread_mutex_lock(&gc_run_lock);
        else if (pthread_mutex_trylock(&gc_run_lock) != 0) {
                *ret = (struct gc_result){ .skipped = true };
                return 0;
        }
        (void) lastuse_flush(t->lastuse, t->db);
        r = db_gc_begin(t->db, wait, &g);
        if (r == -EALREADY) {
                pthread_mutex_unlock(&gc_run_lock);
                *ret = (struct gc_result){ .skipped = true };
                return 0;
        }
        if (r >= 0)
                r = gc_run(t, g, min_age_sec, &res);
        db_gc_end(g);
        /* NARs and chunks may be gone: cached manifests name them. */
        if (res.paths_deleted || res.nars_deleted)
                nicache_forget(t->manifests, -1, NULL);
        pthread_mutex_unlock(&gc_run_lock);
        res.usec = now_usec() - start;
        if (r < 0)
                return r;
        log_info("garbage collection deleted %" PRIu64 " paths, %" PRIu64 " NARs, %" PRIu64 " chunks, %" PRIu64
                 " objects in %.1f s (%" PRIu64 " locked transactions, the longest %.1f ms)",
                 res.paths_deleted, res.nars_deleted, res.chunks_deleted, res.objects_deleted, (double) res.usec / 1e6,
                 res.locked_transactions, (double) res.locked_max_usec / 1e3);
        *ret = res;
        return 0;
}

static void *gc_main(void *arg) {
        struct troved *t = arg;
        struct gc_thread *th = t->gc;
        time_t next_gc = time(NULL) + (time_t) t->cfg.gc_interval_sec, next_flush = time(NULL) + GC_FLUSH_SEC;

        pthread_mutex_lock(&th->lock);
        while (!th->stop) {
                struct timespec until;
                time_t now = time(NULL);

                if (now >= next_flush || lastuse_pending(t->lastuse) > 8192) {
                        pthread_mutex_unlock(&th->lock);
                        (void) lastuse_flush(t->lastuse, t->db);
                        pthread_mutex_lock(&th->lock);
                        next_flush = now + GC_FLUSH_SEC;
                }
                /* While S3 is away, it is asked once a second whether it is
                 * back (never by a request: those fail fast meanwhile), so
                 * troved recovers about a second after it, not a breaker
                 * window later. */
                if (storage_available(t) != 0) {
                        pthread_mutex_unlock(&th->lock);
                        if (chunkstore_s3_recover(t->store) == 0)
                                log_info("the chunk store answers again");
                        pthread_mutex_lock(&th->lock);
                }
                if (t->cfg.gc_interval_sec > 0 && now >= next_gc && !th->stop) {
                        struct gc_result res;
                        int r;
                        pthread_mutex_unlock(&th->lock);
                        r = gc_collect(t, (int64_t) t->cfg.gc_min_age_sec, false, &res);
                        if (r < 0)
                                log_warning("scheduled garbage collection failed: %s", strerror(-r));
                        else if (res.skipped)
                                log_debug("scheduled garbage collection skipped: another one is running");
                        if (r >= 0 && !res.skipped && t->cfg.recompress_level > 0 && !th->stop) {
                                struct recompress_result rr;
                                r = recompress_run(t, t->cfg.recompress_level, (int64_t) t->cfg.recompress_age_sec,
                                                   t->cfg.recompress_batch, &rr);
                                if (r < 0)
                                        log_warning("recompression of cold chunks failed: %s", strerror(-r));
                                else if (rr.recompressed > 0)
                                        log_info("recompressed %" PRIu64 " cold chunks: %" PRIu64 " -> %" PRIu64 " bytes",
                                                 rr.recompressed, rr.bytes_before, rr.bytes_after);
                        }
                        pthread_mutex_lock(&th->lock);
                        next_gc = time(NULL) + (time_t) t->cfg.gc_interval_sec;
                }
                /* Wakes every second: a filling mark set is flushed early. */
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_sec += 1;
                if (!th->stop)
                        pthread_cond_timedwait(&th->cond, &th->lock, &until);
        }
        pthread_mutex_unlock(&th->lock);
        return NULL;
}

int gc_start(struct troved *t) {
        struct gc_thread *th = calloc(1, sizeof *th);
        int r;

        if (!th)
                return -ENOMEM;
        pthread_mutex_init(&th->lock, NULL);
        pthread_cond_init(&th->cond, NULL);
        t->gc = th;
        r = -pthread_create(&th->thread, NULL, gc_main, t);
        if (r < 0) {
                t->gc = NULL;
                pthread_mutex_destroy(&th->lock);
                pthread_cond_destroy(&th->cond);
                free(th);
        }
        return r;
}

void gc_stop(struct troved *t) {
        struct gc_thread *th = t->gc;

        atomic_store(&gc_cancel, true);
        if (!th)
                return;
        pthread_mutex_lock(&th->lock);
        th->stop = true;
        pthread_cond_signal(&th->cond);
        pthread_mutex_unlock(&th->lock);
        pthread_join(th->thread, NULL);
        pthread_mutex_destroy(&th->lock);
        pthread_cond_destroy(&th->cond);
        free(th);
        t->gc = NULL;
}
