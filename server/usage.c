/* SPDX-License-Identifier: Apache-2.0 */
/*
 * usage.c - storage statistics, recomputed at most every few seconds
 * (usage.h).
 */
#include <pthread.h>
#include <time.h>

#include "usage.h"

#define USAGE_CACHE_SLOTS 256

struct usage_slot {
        int64_t cache_id;       /* 0: empty */
        time_t at;
        struct db_cache_stats stats;
};

struct usage_memo {
        pthread_mutex_t lock;
        time_t global_at;
        struct db_global_stats global;
        struct usage_slot caches[USAGE_CACHE_SLOTS];
};

static time_t mono_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + 1;
}

int usage_memo_new(struct usage_memo **ret) {
        struct usage_memo *m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        pthread_mutex_init(&m->lock, NULL);
        *ret = m;
        return 0;
}

void usage_memo_free(struct usage_memo *m) {
        if (!m)
                return;
        pthread_mutex_destroy(&m->lock);
        free(m);
}

/* The lock is held across the query: concurrent askers wait for one
 * computation instead of each running the aggregate. */
int usage_global(struct troved *t, struct db_global_stats *ret) {
        struct usage_memo *m = t->usage;
        time_t now = mono_now();
        int r = 0;

        pthread_mutex_lock(&m->lock);
        if (!m->global_at || now - m->global_at >= USAGE_TTL_SEC) {
                METRIC_ADD(t, usage_queries, 1);
                r = db_global_stats(t->db, &m->global);
                if (r >= 0)
                        m->global_at = now;
        }
        if (r >= 0)
                *ret = m->global;
        pthread_mutex_unlock(&m->lock);
        return r;
}

int usage_cache(struct troved *t, int64_t cache_id, struct db_cache_stats *ret) {
        struct usage_memo *m = t->usage;
        struct usage_slot *s = &m->caches[(uint64_t) cache_id % USAGE_CACHE_SLOTS];
        time_t now = mono_now();
        int r = 0;

        pthread_mutex_lock(&m->lock);
        if (s->cache_id != cache_id || now - s->at >= USAGE_TTL_SEC) {
                METRIC_ADD(t, usage_queries, 1);
                r = db_cache_stats(t->db, cache_id, &s->stats);
                if (r >= 0) {
                        s->cache_id = cache_id;
                        s->at = now;
                } else {
                        s->cache_id = 0;
                }
        }
        if (r >= 0)
                *ret = s->stats;
        pthread_mutex_unlock(&m->lock);
        return r;
}
