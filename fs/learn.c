/* SPDX-License-Identifier: Apache-2.0 */
/*
 * learn.c - learned prefetch: trovefs records which chunks of a store path
 * are read in the first seconds after the path's first lookup (first-touch
 * order) and reports them to troved, which merges the reports of all
 * mounts into a profile per path; a mount that looks a path up for the
 * first time fetches its profile and prefetches its chunks in the
 * background, behind demand reads (docs/trovefs.md, "Learned prefetch").
 *
 * Two threads, so that neither a slow report nor a long prefetch delays
 * the other:
 * - the prefetcher takes paths as they are first looked up, asks for their
 *   profile and feeds its chunks, in order, to the fetcher's background
 *   queue (bounded concurrency, fs->prefetch_budget bytes per path);
 * - the reporter waits for each path's recording window to end, then sends
 *   what was read, batched (a report is one request, never retried, never
 *   in the way of a read). At unmount it sends what was recorded so far.
 * Each queued path holds a reference; FUSE operations never wait for them.
 */
#include <inttypes.h>
#include <pthread.h>

#include "trove/profile.h"
#include "trove/storepath.h"
#include "trove/util.h"
#include "trovefs.h"

#define COUNT(fs, field, n) __atomic_fetch_add(&(fs)->field, (n), __ATOMIC_RELAXED)

struct learn_item {
        struct trovefs_path *p;
        uint64_t deadline_ms;
        struct learn_item *next;
};

struct learn_queue {
        struct learn_item *head, *tail;
};

struct trovefs_learn {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool stopping;
        bool cancel;            /* set at stop: prefetching ends at once */
        struct learn_queue prefetch, report;
        pthread_t prefetcher, reporter;
        bool have_prefetcher, have_reporter;
};

static void queue_put(struct learn_queue *q, struct learn_item *it) {
        it->next = NULL;
        if (q->tail)
                q->tail->next = it;
        else
                q->head = it;
        q->tail = it;
}

static struct learn_item *queue_take(struct learn_queue *q) {
        struct learn_item *it = q->head;

        if (it) {
                q->head = it->next;
                if (!q->head)
                        q->tail = NULL;
        }
        return it;
}

static void path_ref(struct trovefs_path *p) {
        __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
}

static bool bit_test_and_set(uint8_t *map, size_t i) {
        uint8_t m = (uint8_t) (1u << (i & 7));
        return __atomic_fetch_or(&map[i / 8], m, __ATOMIC_RELAXED) & m;
}

static bool bit_test_and_clear(uint8_t *map, size_t i) {
        uint8_t m = (uint8_t) (1u << (i & 7));
        return __atomic_fetch_and(&map[i / 8], (uint8_t) ~m, __ATOMIC_RELAXED) & m;
}

static void hash_part_of(const struct trovefs_path *p, char out[STOREPATH_HASH_LEN + 1]) {
        memcpy(out, p->name, STOREPATH_HASH_LEN);
        out[STOREPATH_HASH_LEN] = 0;
}

/* ---- recording ---- */

void learn_read(struct trovefs *fs, struct trovefs_path *p, size_t first, size_t last) {
        uint64_t until = __atomic_load_n(&p->record_until_ms, __ATOMIC_ACQUIRE);
        uint8_t *prefetched = __atomic_load_n(&p->prefetched, __ATOMIC_ACQUIRE);

        if (prefetched)
                for (size_t i = first; i <= last; i++)
                        if (bit_test_and_clear(prefetched, i)) {
                                COUNT(fs, prefetched_used, 1);
                                COUNT(fs, prefetched_used_bytes, p->m.chunks[i].length);
                        }
        if (until == 0 || monotonic_ms() >= until)
                return;
        for (size_t i = first; i <= last; i++) {
                if (bit_test_and_set(p->seen, i))
                        continue;
                pthread_mutex_lock(&p->learn_lock);
                if (p->trace && p->n_trace < p->cap_trace)
                        p->trace[p->n_trace++] = (uint32_t) i;
                pthread_mutex_unlock(&p->learn_lock);
        }
}

void learn_path_free(struct trovefs_path *p) {
        free(p->seen);
        free(p->trace);
        free(p->prefetched);
        pthread_mutex_destroy(&p->learn_lock);
}

/* ---- prefetching ---- */

/* Maps chunk ids to their first index in p's chunk table (open
 * addressing on the id's first bytes; ids are uniformly distributed). */
struct id_index {
        uint32_t *slots; /* index + 1; 0: empty */
        size_t mask;
};

static int id_index_build(const struct manifest *m, struct id_index *ret) {
        size_t cap = 16;

        while (cap < 2 * m->n_chunks)
                cap *= 2;
        ret->slots = calloc(cap, sizeof *ret->slots);
        if (!ret->slots)
                return -ENOMEM;
        ret->mask = cap - 1;
        for (size_t i = 0; i < m->n_chunks; i++) {
                uint64_t h;
                memcpy(&h, m->chunks[i].id, sizeof h);
                for (size_t k = (size_t) h & ret->mask;; k = (k + 1) & ret->mask) {
                        if (ret->slots[k] == 0) {
                                ret->slots[k] = (uint32_t) i + 1;
                                break;
                        }
                        if (memcmp(m->chunks[ret->slots[k] - 1].id, m->chunks[i].id,
                                   SHA256_DIGEST_LEN) == 0)
                                break; /* a repeated chunk: the first index stays */
                }
        }
        return 0;
}

static bool id_index_find(const struct id_index *x, const struct manifest *m,
                          const uint8_t id[SHA256_DIGEST_LEN], size_t *ret) {
        uint64_t h;

        memcpy(&h, id, sizeof h);
        for (size_t k = (size_t) h & x->mask; x->slots[k]; k = (k + 1) & x->mask)
                if (memcmp(m->chunks[x->slots[k] - 1].id, id, SHA256_DIGEST_LEN) == 0) {
                        *ret = x->slots[k] - 1;
                        return true;
                }
        return false;
}

static void prefetch_path(struct trovefs *fs, struct trovefs_learn *l, struct trovefs_path *p) {
        _cleanup_free_ uint8_t (*ids)[SHA256_DIGEST_LEN] = NULL;
        struct id_index index = {};
        char hash[STOREPATH_HASH_LEN + 1];
        uint64_t budget = fs->prefetch_budget;
        uint8_t *map;
        size_t n = 0;
        int r;

        hash_part_of(p, hash);
        r = fetcher_get_profile(fs->fetcher, hash, &ids, &n);
        if (r < 0 || n == 0)
                return;
        COUNT(fs, profiles_fetched, 1);
        COUNT(fs, profile_chunks, n);
        map = calloc((p->m.n_chunks + 7) / 8, 1);
        if (!map || id_index_build(&p->m, &index) < 0) {
                free(map);
                return;
        }
        __atomic_store_n(&p->prefetched, map, __ATOMIC_RELEASE);
        for (size_t i = 0; i < n; i++) {
                const struct manifest_chunk *mc;
                size_t k;

                /* A chunk that is not the path's (the server's profile is
                 * advice, nothing more) is skipped. */
                if (!id_index_find(&index, &p->m, ids[i], &k))
                        continue;
                mc = &p->m.chunks[k];
                if (mc->length > budget)
                        break;
                r = fetcher_chunk_background(fs->fetcher, mc, &l->cancel);
                if (r == -ECANCELED)
                        break;
                if (r > 0) {
                        bit_test_and_set(map, k);
                        budget -= mc->length;
                        COUNT(fs, prefetched, 1);
                        COUNT(fs, prefetched_bytes, mc->length);
                }
        }
        free(index.slots);
}

static void *prefetcher_main(void *arg) {
        struct trovefs *fs = arg;
        struct trovefs_learn *l = fs->learn;

        pthread_mutex_lock(&l->lock);
        for (;;) {
                struct learn_item *it;

                while (!l->stopping && !l->prefetch.head)
                        pthread_cond_wait(&l->cond, &l->lock);
                it = queue_take(&l->prefetch);
                if (!it)
                        break; /* stopping */
                pthread_mutex_unlock(&l->lock);
                if (!__atomic_load_n(&l->cancel, __ATOMIC_RELAXED))
                        prefetch_path(fs, l, it->p);
                trovefs_path_unref(it->p);
                free(it);
                pthread_mutex_lock(&l->lock);
        }
        pthread_mutex_unlock(&l->lock);
        return NULL;
}

/* ---- reporting ---- */

/* Ends p's recording and adds what it read to the report in b. 0 when it
 * read nothing; -E2BIG when b is full (nothing of p was added). */
static int report_add(struct trovefs_path *p, struct buf *b, size_t *ret_paths) {
        _cleanup_free_ uint8_t (*ids)[SHA256_DIGEST_LEN] = NULL;
        char hash[STOREPATH_HASH_LEN + 1];
        size_t n, len = b->len;
        int r;

        pthread_mutex_lock(&p->learn_lock);
        __atomic_store_n(&p->record_until_ms, 0, __ATOMIC_RELEASE);
        n = p->n_trace;
        ids = n ? calloc(n, sizeof *ids) : NULL;
        for (size_t i = 0; ids && i < n; i++)
                memcpy(ids[i], p->m.chunks[p->trace[i]].id, SHA256_DIGEST_LEN);
        pthread_mutex_unlock(&p->learn_lock);
        if (!ids)
                return n ? -ENOMEM : 0;
        hash_part_of(p, hash);
        r = profile_report_add(b, hash, (const uint8_t (*)[SHA256_DIGEST_LEN]) ids, n);
        if (r < 0) {
                b->len = len; /* drop a partial entry */
                return r;
        }
        (*ret_paths)++;
        return 1;
}

static void report_send(struct trovefs *fs, struct buf *b, size_t n_paths) {
        int r;

        if (n_paths == 0)
                return;
        r = profile_report_end(b);
        if (r >= 0)
                r = fetcher_report_profiles(fs->fetcher, b->data, b->len);
        if (r < 0) {
                COUNT(fs, report_errors, 1);
                log_debug_errno(r, "could not report what %zu store paths read: %s", n_paths,
                                strerror(-r));
        } else
                COUNT(fs, reports_sent, n_paths);
        buf_reset(b);
}

/* Reports the paths whose window ended (all of them when stopping). */
static void report_due(struct trovefs *fs, struct learn_item *due) {
        struct buf b = BUF_INIT(PROFILE_REPORT_BODY_MAX);
        size_t n_paths = 0;

        while (due) {
                struct learn_item *it = due;
                int r = report_add(it->p, &b, &n_paths);

                if (r == -E2BIG && n_paths > 0) {
                        report_send(fs, &b, n_paths);
                        n_paths = 0;
                        continue; /* the same path again, into an empty report */
                }
                if (n_paths >= PROFILE_REPORT_PATHS_MAX) {
                        report_send(fs, &b, n_paths);
                        n_paths = 0;
                }
                due = it->next;
                trovefs_path_unref(it->p);
                free(it);
        }
        report_send(fs, &b, n_paths);
        buf_free(&b);
}

static void *reporter_main(void *arg) {
        struct trovefs *fs = arg;
        struct trovefs_learn *l = fs->learn;

        pthread_mutex_lock(&l->lock);
        for (;;) {
                struct learn_item *due = NULL, **tail = &due;
                uint64_t now = monotonic_ms();
                bool stopping = l->stopping;

                /* Windows are all equally long: the queue is in deadline order. */
                while (l->report.head && (stopping || l->report.head->deadline_ms <= now)) {
                        *tail = queue_take(&l->report);
                        tail = &(*tail)->next;
                }
                *tail = NULL;
                if (due) {
                        pthread_mutex_unlock(&l->lock);
                        report_due(fs, due);
                        pthread_mutex_lock(&l->lock);
                        continue;
                }
                if (stopping)
                        break;
                if (l->report.head) {
                        uint64_t wait = l->report.head->deadline_ms - now;
                        struct timespec ts;
                        clock_gettime(CLOCK_REALTIME, &ts);
                        ts.tv_sec += (time_t) (wait / 1000);
                        ts.tv_nsec += (long) (wait % 1000) * 1000000;
                        if (ts.tv_nsec >= 1000000000) {
                                ts.tv_sec++;
                                ts.tv_nsec -= 1000000000;
                        }
                        pthread_cond_timedwait(&l->cond, &l->lock, &ts);
                } else
                        pthread_cond_wait(&l->cond, &l->lock);
        }
        pthread_mutex_unlock(&l->lock);
        return NULL;
}

/* ---- life cycle ---- */

int learn_start(struct trovefs *fs) {
        struct trovefs_learn *l;
        int r;

        if (!fs->prefetch && !fs->record)
                return 0;
        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        pthread_mutex_init(&l->lock, NULL);
        pthread_cond_init(&l->cond, NULL);
        fs->learn = l;
        if (fs->prefetch) {
                r = pthread_create(&l->prefetcher, NULL, prefetcher_main, fs);
                if (r != 0)
                        goto fail;
                l->have_prefetcher = true;
        }
        if (fs->record) {
                r = pthread_create(&l->reporter, NULL, reporter_main, fs);
                if (r != 0)
                        goto fail;
                l->have_reporter = true;
        }
        return 0;
fail:
        learn_stop(fs);
        return -r;
}

void learn_path_added(struct trovefs *fs, struct trovefs_path *p) {
        struct trovefs_learn *l = fs->learn;
        struct learn_item *pf = NULL, *rec = NULL;

        if (!l)
                return;
        if (l->have_reporter && p->m.n_chunks > 0) {
                size_t cap = MIN(p->m.n_chunks, (size_t) PROFILE_CHUNKS_MAX);
                p->seen = calloc((p->m.n_chunks + 7) / 8, 1);
                p->trace = calloc(cap, sizeof *p->trace);
                rec = calloc(1, sizeof *rec);
                if (p->seen && p->trace && rec) {
                        p->cap_trace = (uint32_t) cap;
                        rec->p = p;
                        rec->deadline_ms = monotonic_ms() + fs->record_window_ms;
                        __atomic_store_n(&p->record_until_ms, rec->deadline_ms, __ATOMIC_RELEASE);
                        path_ref(p);
                } else {
                        free(rec);
                        rec = NULL;
                }
        }
        if (l->have_prefetcher && p->m.n_chunks > 0) {
                pf = calloc(1, sizeof *pf);
                if (pf) {
                        pf->p = p;
                        path_ref(p);
                }
        }
        pthread_mutex_lock(&l->lock);
        if (l->stopping) {
                pthread_mutex_unlock(&l->lock);
                if (rec)
                        trovefs_path_unref(p);
                if (pf)
                        trovefs_path_unref(p);
                free(rec);
                free(pf);
                return;
        }
        if (rec)
                queue_put(&l->report, rec);
        if (pf)
                queue_put(&l->prefetch, pf);
        pthread_cond_broadcast(&l->cond);
        pthread_mutex_unlock(&l->lock);
}

void learn_stop(struct trovefs *fs) {
        struct trovefs_learn *l = fs->learn;
        struct learn_item *it;

        if (!l)
                return;
        pthread_mutex_lock(&l->lock);
        l->stopping = true;
        __atomic_store_n(&l->cancel, true, __ATOMIC_RELAXED);
        pthread_cond_broadcast(&l->cond);
        pthread_mutex_unlock(&l->lock);
        if (fs->fetcher)
                fetcher_cancel_background(fs->fetcher);
        if (l->have_prefetcher)
                pthread_join(l->prefetcher, NULL);
        if (l->have_reporter)
                pthread_join(l->reporter, NULL); /* sends what is left */
        while ((it = queue_take(&l->prefetch)) || (it = queue_take(&l->report))) {
                trovefs_path_unref(it->p);
                free(it);
        }
        pthread_cond_destroy(&l->cond);
        pthread_mutex_destroy(&l->lock);
        free(l);
        fs->learn = NULL;
}
