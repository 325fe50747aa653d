/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "nicache.h"
#include "trove/storepath.h"

#define NICACHE_STRIPES 16

struct entry {
        int64_t cache_id;
        char hash[STOREPATH_HASH_LEN + 1];
        char *text;
        size_t len;
        time_t expires;
        uint64_t forgets;       /* bumped whenever this slot is forgotten */
};

struct nicache {
        unsigned n, ttl;
        size_t max_bytes;
        atomic_size_t bytes;
        pthread_mutex_t locks[NICACHE_STRIPES];
        struct entry *e;
};

/* Called with the entry's stripe locked. */
static void entry_drop(struct nicache *c, struct entry *e) {
        if (!e->text)
                return;
        atomic_fetch_sub(&c->bytes, e->len);
        free(e->text);
        e->text = NULL;
}

static unsigned slot_of(const struct nicache *c, int64_t cache_id, const char *hash) {
        uint64_t h = 1469598103934665603ULL ^ (uint64_t) cache_id;
        for (const char *p = hash; *p; p++)
                h = (h ^ (uint8_t) *p) * 1099511628211ULL;
        return (unsigned) (h % c->n);
}

int nicache_new(unsigned slots, unsigned ttl_sec, size_t max_bytes, struct nicache **ret) {
        struct nicache *c = calloc(1, sizeof *c);

        if (!c || slots == 0)
                return free(c), -EINVAL;
        c->e = calloc(slots, sizeof *c->e);
        if (!c->e) {
                free(c);
                return -ENOMEM;
        }
        c->n = slots;
        c->ttl = ttl_sec;
        c->max_bytes = max_bytes;
        for (unsigned i = 0; i < NICACHE_STRIPES; i++)
                pthread_mutex_init(&c->locks[i], NULL);
        *ret = c;
        return 0;
}

void nicache_free(struct nicache *c) {
        if (!c)
                return;
        for (unsigned i = 0; i < c->n; i++)
                free(c->e[i].text);
        for (unsigned i = 0; i < NICACHE_STRIPES; i++)
                pthread_mutex_destroy(&c->locks[i]);
        free(c->e);
        free(c);
}

char *nicache_get(struct nicache *c, int64_t cache_id, const char *hash, size_t *ret_len) {
        unsigned s = slot_of(c, cache_id, hash);
        struct entry *e = &c->e[s];
        char *copy = NULL;

        pthread_mutex_lock(&c->locks[s % NICACHE_STRIPES]);
        if (e->text && e->cache_id == cache_id && streq(e->hash, hash) && e->expires > time(NULL)) {
                copy = malloc(e->len + 1);
                if (copy) {
                        memcpy(copy, e->text, e->len + 1);
                        *ret_len = e->len;
                }
        }
        pthread_mutex_unlock(&c->locks[s % NICACHE_STRIPES]);
        return copy;
}

uint64_t nicache_epoch(struct nicache *c, int64_t cache_id, const char *hash) {
        unsigned s = slot_of(c, cache_id, hash);
        uint64_t v;

        pthread_mutex_lock(&c->locks[s % NICACHE_STRIPES]);
        v = c->e[s].forgets;
        pthread_mutex_unlock(&c->locks[s % NICACHE_STRIPES]);
        return v;
}

void nicache_put(struct nicache *c, int64_t cache_id, const char *hash, const char *text, size_t len) {
        nicache_put_since(c, UINT64_MAX, cache_id, hash, text, len);
}

void nicache_put_since(struct nicache *c, uint64_t epoch, int64_t cache_id, const char *hash, const char *text,
                       size_t len) {
        unsigned s = slot_of(c, cache_id, hash);
        struct entry *e = &c->e[s];
        char *copy;

        if (strlen(hash) > STOREPATH_HASH_LEN || len > c->max_bytes)
                return;
        copy = malloc(len + 1);
        if (!copy)
                return;
        memcpy(copy, text, len);
        copy[len] = 0;
        pthread_mutex_lock(&c->locks[s % NICACHE_STRIPES]);
        if (epoch != UINT64_MAX && e->forgets != epoch) {
                /* Something was forgotten since the answer was read: it may
                 * be this one, so it is not kept. */
                pthread_mutex_unlock(&c->locks[s % NICACHE_STRIPES]);
                free(copy);
                return;
        }
        entry_drop(c, e);
        if (atomic_fetch_add(&c->bytes, len) + len > c->max_bytes) {
                atomic_fetch_sub(&c->bytes, len);
                pthread_mutex_unlock(&c->locks[s % NICACHE_STRIPES]);
                free(copy);
                return;
        }
        e->text = copy;
        e->len = len;
        e->cache_id = cache_id;
        memcpy(e->hash, hash, strlen(hash) + 1);
        e->expires = time(NULL) + c->ttl;
        pthread_mutex_unlock(&c->locks[s % NICACHE_STRIPES]);
}

void nicache_forget(struct nicache *c, int64_t cache_id, const char *hash) {
        /* A slot's count of forgets moves with the drop, under its lock: an
         * answer read before the forget and kept after it is refused. */
        if (hash) {
                for (int v = 0; v < 2; v++) {
                        int64_t key = v ? NICACHE_VARIANT(cache_id) : cache_id;
                        unsigned s = slot_of(c, key, hash);
                        pthread_mutex_lock(&c->locks[s % NICACHE_STRIPES]);
                        c->e[s].forgets++;
                        if (c->e[s].text && c->e[s].cache_id == key && streq(c->e[s].hash, hash))
                                entry_drop(c, &c->e[s]);
                        pthread_mutex_unlock(&c->locks[s % NICACHE_STRIPES]);
                }
                return;
        }
        for (unsigned i = 0; i < c->n; i++) {
                pthread_mutex_lock(&c->locks[i % NICACHE_STRIPES]);
                c->e[i].forgets++;
                if (c->e[i].text && (cache_id < 0 || (c->e[i].cache_id & ~NICACHE_VARIANT(0)) == cache_id))
                        entry_drop(c, &c->e[i]);
                pthread_mutex_unlock(&c->locks[i % NICACHE_STRIPES]);
        }
}
