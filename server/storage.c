/* SPDX-License-Identifier: Apache-2.0 */
/*
 * storage.c - chunk store calls for the handlers (storage.h).
 */
#include <pthread.h>
#include <time.h>

#include "storage.h"
#include "trove/chunkcodec.h"

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

static void account(struct troved *t, uint64_t t0, int r) {
        METRIC_ADD(t, store_ops, 1);
        METRIC_ADD(t, store_usec, now_usec() - t0);
        if (r < 0 && r != -ENOENT && r != -EEXIST)
                METRIC_ADD(t, store_errors, 1);
}

static int get_object(struct troved *t, const uint8_t id[SHA256_DIGEST_LEN], unsigned flags, struct buf *out) {
        uint64_t t0 = now_usec();
        int r = chunkstore_get(t->store, id, flags, out);
        account(t, t0, r);
        return r;
}

int storage_decode(struct troved *t, struct chunkcodec *codec, const uint8_t id[SHA256_DIGEST_LEN],
                   uint32_t length, const struct buf *obj, uint8_t *out) {
        uint8_t base_id[SHA256_DIGEST_LEN];
        struct buf base_obj;
        uint8_t *base = NULL;
        uint32_t base_len;
        uint64_t size;
        size_t len = 0;
        int r;

        r = chunkcodec_delta_parse(obj->data, obj->len, base_id, &base_len, &size);
        if (r < 0)
                return -EBADMSG;
        if (r == 0) {
                r = chunkcodec_decode(codec, obj->data, obj->len, id, length, out, length, &len);
                if (r == -ENOMEM)
                        return r;
                return r < 0 || len != length ? -EBADMSG : 0;
        }
        if (size != length)
                return -EBADMSG;
        buf_init(&base_obj, chunkcodec_bound(CHUNK_SIZE_MAX));
        r = get_object(t, base_id, 0, &base_obj);
        if (r >= 0 && chunkcodec_delta_parse(base_obj.data, base_obj.len, NULL, NULL, NULL) != 0)
                r = -EBADMSG; /* one level only */
        if (r >= 0) {
                base = malloc(base_len);
                if (!base)
                        r = -ENOMEM;
        }
        if (r >= 0) {
                r = chunkcodec_decode(codec, base_obj.data, base_obj.len, base_id, base_len, base, base_len, &len);
                if (r != -ENOMEM && (r < 0 || len != base_len))
                        r = -EBADMSG;
        }
        if (r >= 0) {
                r = chunkcodec_decode_delta(codec, obj->data, obj->len, base, base_len, id, length, out, length, &len);
                if (r != -ENOMEM && (r < 0 || len != length))
                        r = -EBADMSG;
        }
        if (r >= 0)
                METRIC_ADD(t, delta_reads, 1);
        else if (r != -ENOMEM) {
                char hex[2 * SHA256_DIGEST_LEN + 1];
                hex_encode(id, SHA256_DIGEST_LEN, hex);
                log_warning("delta chunk %s does not decode with its base: %s", hex, strerror(-r));
        }
        free(base);
        buf_free(&base_obj);
        return r;
}

int storage_get(struct troved *t, const uint8_t id[SHA256_DIGEST_LEN], unsigned flags, struct buf *out) {
        _cleanup_(chunkcodec_freep) struct chunkcodec *codec = NULL;
        _cleanup_free_ uint8_t *content = NULL;
        uint64_t size;
        int r = get_object(t, id, flags, out);

        /* The store checked a frame's content; a delta's needs its base. */
        if (r < 0 || !(flags & CHUNKSTORE_GET_VERIFY) ||
            chunkcodec_delta_parse(out->data, out->len, NULL, NULL, &size) <= 0)
                return r;
        r = chunkcodec_new(t->cfg.compression_level, &codec);
        if (r >= 0) {
                content = malloc(size);
                r = content ? storage_decode(t, codec, id, (uint32_t) size, out, content) : -ENOMEM;
        }
        if (r < 0)
                buf_reset(out);
        return r == -ENOENT ? -EBADMSG : r;
}

int storage_read_content(struct troved *t, struct chunkcodec *codec, const uint8_t id[SHA256_DIGEST_LEN],
                         uint32_t length, struct buf *obj, uint8_t *out, bool *ret_delta) {
        int r = get_object(t, id, 0, obj);
        if (r < 0)
                return r;
        r = storage_decode(t, codec, id, length, obj, out);
        if (r >= 0 && ret_delta)
                *ret_delta = chunkcodec_delta_parse(obj->data, obj->len, NULL, NULL, NULL) > 0;
        return r;
}

int storage_served_frame(struct troved *t, struct chunkcodec *codec, const uint8_t id[SHA256_DIGEST_LEN],
                         uint32_t length, struct buf *frame, uint8_t *content) {
        int r = get_object(t, id, 0, frame);

        /* Plain frames as they are; deltas and recompressed objects as
         * their content compressed at the server's level. */
        if (r < 0 || chunkcodec_object_kind(frame->data, frame->len, NULL) == 0)
                return r;
        return storage_reencode(t, codec, id, length, frame, content);
}

int storage_reencode(struct troved *t, struct chunkcodec *codec, const uint8_t id[SHA256_DIGEST_LEN],
                     uint32_t length, struct buf *frame, uint8_t *content) {
        size_t len;
        int r = storage_decode(t, codec, id, length, frame, content);
        if (r < 0)
                return r;
        buf_reset(frame);
        r = buf_reserve(frame, chunkcodec_bound(length));
        if (r < 0)
                return r;
        r = chunkcodec_encode(codec, content, length, frame->data, frame->cap, &len);
        if (r < 0)
                return r;
        frame->len = len;
        return 0;
}

/* Callers hand over checked frames only (chunkstore_put's contract): what
 * this stores is noted as verified. */
static int put_once(struct troved *t, const uint8_t id[SHA256_DIGEST_LEN], const void *frame, size_t n,
                    unsigned flags) {
        uint64_t t0 = now_usec();
        int r = chunkstore_put_flags(t->store, id, frame, n, flags);
        account(t, t0, r);
        if (r >= 0)
                storage_note_verified(t, id, n);
        return r;
}

int storage_put(struct troved *t, const uint8_t id[SHA256_DIGEST_LEN], const void *frame, size_t n, unsigned flags,
                struct buf *stored) {
        struct buf tmp = BUF_INIT(chunkcodec_bound(CHUNK_SIZE_MAX));
        struct buf *b = stored ? stored : &tmp;
        int r;

        r = put_once(t, id, frame, n, flags);
        if (r != -EEXIST)
                return r;
        /* Someone stored this chunk first, perhaps as another frame (another
         * compression level): that object stays, and is what gets served. */
        r = storage_get(t, id, CHUNKSTORE_GET_VERIFY, b);
        if (r == -EBADMSG || r == -ENOENT) {
                log_warning("stored object of a chunk does not verify; replacing it");
                r = chunkstore_delete(t->store, id);
                if (r >= 0)
                        r = put_once(t, id, frame, n, flags);
                if (r >= 0 && stored)
                        r = buf_append(b, frame, n) < 0 ? -ENOMEM : 0;
                buf_free(&tmp);
                return r < 0 ? r : (stored ? 1 : 0);
        }
        buf_free(&tmp);
        return r < 0 ? r : 1;
}

struct chunk_record {
        struct troved *t;
        const struct db_chunk *row;
        const void *frame;
        size_t n;
};

static int chunk_ensure_stored(void *userdata) {
        struct chunk_record *c = userdata;
        int r = chunkstore_exists(c->t->store, c->row->id, NULL);
        if (r < 0)
                return r;
        if (r > 0)
                return 0;
        r = storage_put(c->t, c->row->id, c->frame, c->n, 0, NULL);
        return r < 0 ? r : 0;
}

int storage_chunk_record(struct troved *t, const struct db_chunk *row, const void *frame, size_t n) {
        struct chunk_record c = { t, row, frame, n };
        return db_chunk_insert(t->db, row, chunk_ensure_stored, &c);
}

/* ---- objects recently seen present ---- */

/* A direct-mapped table of id prefixes with the time they were seen; a
 * collision only costs one more question to the store. */
#define PRESENT_SLOTS (1u << 16)
#define PRESENT_TTL_SEC 300

struct present_slot {
        uint64_t key;
        uint32_t seen;  /* monotonic seconds; 0 = empty */
};

/* Objects this process stored after checking their content against their
 * id (storage_note_verified). A push commit reads a path's chunks back
 * moments after they were uploaded and checked; it need not hash them a
 * second time (and the NAR hash it computes over their content covers them
 * anyway). Direct-mapped on the full id and the object's length; an entry
 * lost to a collision or its age only costs a hash. */
#define VERIFIED_SLOTS (1u << 15)
#define VERIFIED_TTL_SEC 600

struct verified_slot {
        uint8_t id[SHA256_DIGEST_LEN];
        uint32_t len;
        uint32_t seen;  /* monotonic seconds; 0 = empty */
};

struct storage_memo {
        pthread_mutex_t lock;
        uint64_t outages; /* S3 breaker openings when last looked */
        struct present_slot slots[PRESENT_SLOTS];
        struct verified_slot verified[VERIFIED_SLOTS];
};

int storage_memo_new(struct storage_memo **ret) {
        struct storage_memo *m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        pthread_mutex_init(&m->lock, NULL);
        *ret = m;
        return 0;
}

void storage_memo_free(struct storage_memo *m) {
        if (!m)
                return;
        pthread_mutex_destroy(&m->lock);
        free(m);
}

static uint32_t mono_sec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint32_t) ts.tv_sec + 1;
}

static uint64_t present_key(const uint8_t id[SHA256_DIGEST_LEN]) {
        uint64_t k;
        memcpy(&k, id, sizeof k);
        return k;
}

static bool present_recall(struct storage_memo *m, const uint8_t id[SHA256_DIGEST_LEN], uint32_t now) {
        uint64_t k = present_key(id);
        struct present_slot *s = &m->slots[k % PRESENT_SLOTS];
        bool hit;

        pthread_mutex_lock(&m->lock);
        hit = s->seen && s->key == k && now - s->seen < PRESENT_TTL_SEC;
        pthread_mutex_unlock(&m->lock);
        return hit;
}

static void present_note(struct storage_memo *m, const uint8_t id[SHA256_DIGEST_LEN], uint32_t now) {
        uint64_t k = present_key(id);
        struct present_slot *s = &m->slots[k % PRESENT_SLOTS];

        pthread_mutex_lock(&m->lock);
        *s = (struct present_slot){ k, now };
        pthread_mutex_unlock(&m->lock);
}

/* Everything the memo holds goes (its lock held). */
static void memo_clear_locked(struct storage_memo *m) {
        memset(m->slots, 0, sizeof m->slots);
        memset(m->verified, 0, sizeof m->verified);
}

void storage_forget_present(struct troved *t) {
        pthread_mutex_lock(&t->present->lock);
        memo_clear_locked(t->present);
        pthread_mutex_unlock(&t->present->lock);
}

static struct verified_slot *verified_slot(struct storage_memo *m, const uint8_t id[SHA256_DIGEST_LEN]) {
        uint32_t k;

        memcpy(&k, id + 8, sizeof k);
        return &m->verified[k % VERIFIED_SLOTS];
}

void storage_note_verified(struct troved *t, const uint8_t id[SHA256_DIGEST_LEN], size_t len) {
        struct verified_slot *s = verified_slot(t->present, id);
        uint32_t now = mono_sec();

        if (len > UINT32_MAX)
                return;
        pthread_mutex_lock(&t->present->lock);
        memcpy(s->id, id, SHA256_DIGEST_LEN);
        s->len = (uint32_t) len;
        s->seen = now;
        pthread_mutex_unlock(&t->present->lock);
}

bool storage_was_verified(struct troved *t, const uint8_t id[SHA256_DIGEST_LEN], size_t len) {
        struct verified_slot *s = verified_slot(t->present, id);
        uint32_t now = mono_sec();
        bool hit;

        pthread_mutex_lock(&t->present->lock);
        hit = s->seen && now - s->seen < VERIFIED_TTL_SEC && s->len == len &&
              memcmp(s->id, id, SHA256_DIGEST_LEN) == 0;
        pthread_mutex_unlock(&t->present->lock);
        return hit;
}

int storage_available(struct troved *t) {
        struct s3_stats st;

        if (chunkstore_s3_stats(t->store, &st) < 0 || st.breaker == S3_BREAKER_CLOSED)
                return 0;
        return st.breaker == S3_BREAKER_OPEN ? -EHOSTDOWN : 1;
}

/* What was seen before S3 went away is not trusted after it: an object
 * acknowledged by a server that then crashed may be gone. */
static void forget_across_outages(struct troved *t) {
        struct s3_stats st;

        if (chunkstore_s3_stats(t->store, &st) < 0)
                return;
        pthread_mutex_lock(&t->present->lock);
        if (st.breaker_opens != t->present->outages) {
                t->present->outages = st.breaker_opens;
                memo_clear_locked(t->present);
        }
        pthread_mutex_unlock(&t->present->lock);
}

static int object_present(struct troved *t, const uint8_t id[SHA256_DIGEST_LEN], uint32_t now) {
        uint64_t t0;
        int r;

        if (present_recall(t->present, id, now))
                return 1;
        t0 = now_usec();
        r = chunkstore_exists(t->store, id, NULL);
        account(t, t0, r);
        if (r > 0)
                present_note(t->present, id, now);
        return r;
}

int storage_confirm_objects(struct troved *t, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n, bool *present) {
        uint32_t now = mono_sec();
        int r;

        forget_across_outages(t);
        for (size_t i = 0; i < n; i++) {
                if (!present[i])
                        continue;
                r = object_present(t, ids[i], now);
                if (r < 0)
                        return r;
                if (r == 0) {
                        char hex[2 * SHA256_DIGEST_LEN + 1];
                        hex_encode(ids[i], SHA256_DIGEST_LEN, hex);
                        log_warning("chunk %s is recorded but its object is missing from the chunk store; "
                                    "it is taken as missing and stored again on upload",
                                    hex);
                        present[i] = false;
                }
        }
        return 0;
}
