/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tokcache.c - verified tokens kept in memory (tokcache.h).
 */
#include <pthread.h>
#include <stdatomic.h>

#include "tokcache.h"

#define TOKCACHE_STRIPES 16

struct tokcache_claims {
        atomic_uint refs;
        struct token_claims *claims;
};

struct slot {
        char *text;             /* the token, NULL: empty */
        size_t len;
        struct tokcache_claims *held;
};

struct tokcache {
        unsigned n;
        pthread_mutex_t locks[TOKCACHE_STRIPES];
        struct slot *slots;
};

void tokcache_release(struct tokcache_claims *held) {
        if (!held || atomic_fetch_sub(&held->refs, 1) != 1)
                return;
        token_claims_free(held->claims);
        free(held);
}

static void slot_clear(struct slot *s) {
        free(s->text);
        tokcache_release(s->held);
        *s = (struct slot){};
}

int tokcache_new(unsigned slots, struct tokcache **ret) {
        struct tokcache *c;

        if (slots == 0)
                return -EINVAL;
        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->slots = calloc(slots, sizeof *c->slots);
        if (!c->slots) {
                free(c);
                return -ENOMEM;
        }
        c->n = slots;
        for (unsigned i = 0; i < TOKCACHE_STRIPES; i++)
                pthread_mutex_init(&c->locks[i], NULL);
        *ret = c;
        return 0;
}

void tokcache_free(struct tokcache *c) {
        if (!c)
                return;
        for (unsigned i = 0; i < c->n; i++)
                slot_clear(&c->slots[i]);
        for (unsigned i = 0; i < TOKCACHE_STRIPES; i++)
                pthread_mutex_destroy(&c->locks[i]);
        free(c->slots);
        free(c);
}

/* FNV-1a: a slot index, not a security boundary (the full text is compared). */
static unsigned slot_of(const struct tokcache *c, const char *text, size_t len) {
        uint64_t h = 1469598103934665603ULL;
        for (size_t i = 0; i < len; i++)
                h = (h ^ (uint8_t) text[i]) * 1099511628211ULL;
        return (unsigned) (h % c->n);
}

int tokcache_verify(struct tokcache *c, const char *text, const struct token_secret *secret, int64_t now,
                    const struct token_claims **ret_claims, struct tokcache_claims **ret_held,
                    struct trove_error *err) {
        size_t len = strnlen(text, TOKEN_TEXT_MAX + 1);
        unsigned i = slot_of(c, text, len);
        pthread_mutex_t *lock = &c->locks[i % TOKCACHE_STRIPES];
        struct slot *s = &c->slots[i];
        struct tokcache_claims *held;
        struct token_claims *claims = NULL;
        char *copy;
        int r;

        pthread_mutex_lock(lock);
        if (s->text && s->len == len && memcmp(s->text, text, len) == 0) {
                if (now < s->held->claims->exp) {
                        held = s->held;
                        atomic_fetch_add(&held->refs, 1);
                        pthread_mutex_unlock(lock);
                        *ret_claims = held->claims;
                        *ret_held = held;
                        return 0;
                }
                slot_clear(s); /* expired: verified again below, and refused */
        }
        pthread_mutex_unlock(lock);

        r = token_decode_verify(text, secret->key, secret->len, now, &claims, err);
        if (r < 0)
                return r;
        held = malloc(sizeof *held);
        copy = len <= TOKEN_TEXT_MAX ? strndup(text, len) : NULL;
        if (!held || !copy) {
                free(held);
                free(copy);
                token_claims_free(claims);
                return -ENOMEM;
        }
        atomic_init(&held->refs, 2); /* the table's and the caller's */
        held->claims = claims;
        pthread_mutex_lock(lock);
        slot_clear(s);
        *s = (struct slot){ copy, len, held };
        pthread_mutex_unlock(lock);
        *ret_claims = claims;
        *ret_held = held;
        return 0;
}
