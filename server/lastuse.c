/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lastuse.c - batched last-use marks (lastuse.h): an open-addressing set
 * of distinct marks, swapped out whole by a flush so that marking never
 * waits for the database.
 */
#include <inttypes.h>
#include <pthread.h>

#include "lastuse.h"

struct lastuse {
        pthread_mutex_t lock;
        unsigned capacity;        /* a power of two */
        unsigned count;
        struct db_use *slots;     /* cache_id 0: empty (cache ids start at 1) */
        uint64_t dropped;         /* marks lost to a full set */
};

int lastuse_new(unsigned capacity, struct lastuse **ret) {
        struct lastuse *lu;
        unsigned cap = 64;

        while (cap < capacity && cap < (1u << 24))
                cap <<= 1;
        lu = calloc(1, sizeof *lu);
        if (!lu)
                return -ENOMEM;
        lu->slots = calloc(cap, sizeof *lu->slots);
        if (!lu->slots) {
                free(lu);
                return -ENOMEM;
        }
        lu->capacity = cap;
        pthread_mutex_init(&lu->lock, NULL);
        *ret = lu;
        return 0;
}

void lastuse_free(struct lastuse *lu) {
        if (!lu)
                return;
        pthread_mutex_destroy(&lu->lock);
        free(lu->slots);
        free(lu);
}

static bool use_equal(const struct db_use *a, const struct db_use *b) {
        if (a->cache_id != b->cache_id || a->kind != b->kind)
                return false;
        switch (a->kind) {
        case DB_USE_PATH: return streq(a->hash, b->hash);
        case DB_USE_NAR: return a->nar_id == b->nar_id;
        case DB_USE_CHUNK: return memcmp(a->chunk, b->chunk, SHA256_DIGEST_LEN) == 0;
        }
        return false;
}

static uint64_t use_hash(const struct db_use *u) {
        /* FNV-1a over the identifying bytes. */
        uint64_t h = 1469598103934665603ULL;
        const uint8_t *p;
        size_t n;
        h = (h ^ (uint64_t) u->cache_id) * 1099511628211ULL;
        h = (h ^ (uint64_t) u->kind) * 1099511628211ULL;
        switch (u->kind) {
        case DB_USE_PATH: p = (const uint8_t *) u->hash; n = strlen(u->hash); break;
        case DB_USE_NAR: p = (const uint8_t *) &u->nar_id; n = sizeof u->nar_id; break;
        default: p = u->chunk; n = SHA256_DIGEST_LEN; break;
        }
        for (size_t i = 0; i < n; i++)
                h = (h ^ p[i]) * 1099511628211ULL;
        return h;
}

void lastuse_mark(struct lastuse *lu, const struct db_use *u) {
        uint64_t h = use_hash(u);

        if (!lu || u->cache_id <= 0)
                return;
        pthread_mutex_lock(&lu->lock);
        for (unsigned i = 0; i < lu->capacity; i++) {
                struct db_use *s = &lu->slots[(h + i) & (lu->capacity - 1)];
                if (s->cache_id == 0) {
                        /* Kept at most three quarters full: probes stay short. */
                        if (lu->count >= lu->capacity / 4 * 3) {
                                lu->dropped++;
                                break;
                        }
                        *s = *u;
                        lu->count++;
                        break;
                }
                if (use_equal(s, u))
                        break;
        }
        pthread_mutex_unlock(&lu->lock);
}

void lastuse_mark_path(struct lastuse *lu, int64_t cache_id, const char *hash) {
        struct db_use u = { .cache_id = cache_id, .kind = DB_USE_PATH };
        if (strlen(hash) >= sizeof u.hash)
                return;
        memcpy(u.hash, hash, strlen(hash) + 1);
        lastuse_mark(lu, &u);
}

void lastuse_mark_nar(struct lastuse *lu, int64_t cache_id, int64_t nar_id) {
        lastuse_mark(lu, &(struct db_use){ .cache_id = cache_id, .kind = DB_USE_NAR, .nar_id = nar_id });
}

void lastuse_mark_chunk(struct lastuse *lu, int64_t cache_id, const uint8_t id[SHA256_DIGEST_LEN]) {
        struct db_use u = { .cache_id = cache_id, .kind = DB_USE_CHUNK };
        memcpy(u.chunk, id, SHA256_DIGEST_LEN);
        lastuse_mark(lu, &u);
}

unsigned lastuse_pending(struct lastuse *lu) {
        unsigned n;
        pthread_mutex_lock(&lu->lock);
        n = lu->count;
        pthread_mutex_unlock(&lu->lock);
        return n;
}

int lastuse_flush(struct lastuse *lu, struct db *db) {
        struct db_use *fresh, *old, *list;
        unsigned count, n = 0;
        uint64_t dropped;
        int r;

        fresh = calloc(lu->capacity, sizeof *fresh);
        if (!fresh)
                return -ENOMEM;
        pthread_mutex_lock(&lu->lock);
        old = lu->slots;
        count = lu->count;
        if (count == 0) {
                pthread_mutex_unlock(&lu->lock);
                free(fresh);
                return 0;
        }
        lu->slots = fresh;
        lu->count = 0;
        dropped = lu->dropped;
        lu->dropped = 0;
        pthread_mutex_unlock(&lu->lock);
        if (dropped > 0)
                log_warning("%" PRIu64 " last-use marks were dropped: the set was full between flushes", dropped);

        /* Compacted in place: entry i moves to n <= i. */
        list = old;
        for (unsigned i = 0; i < lu->capacity; i++)
                if (old[i].cache_id != 0)
                        list[n++] = old[i];
        r = db_paths_mark_used(db, list, n);
        free(old);
        if (r < 0)
                log_warning("recording the last use of %u paths failed: %s", n, strerror(-r));
        return r;
}
