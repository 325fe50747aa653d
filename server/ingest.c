/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <time.h>

#include "delta.h"
#include "ingest.h"
#include "storage.h"
#include "trove/chunkcodec.h"
#include "trove/listing.h"
#include "trove/manifest.h"
#include "trove/nar.h"

/* Chunks per batch, and the bytes after which a batch is resolved early. */
#define INGEST_BATCH 64
#define INGEST_BATCH_BYTES (8u * 1024 * 1024)

/* A chunk cut but not yet stored. */
struct pending_chunk {
        uint8_t id[SHA256_DIGEST_LEN];
        uint8_t *data;
        size_t len;
        uint64_t nar_offset;
        bool present;       /* the database has its row */
        bool deduped;       /* its stored frame was read back (not stored by us) */
        uint8_t *frame;     /* the frame the chunk is served as */
        size_t frame_len;
        uint8_t *obj;       /* the object stored, when not frame (a delta) */
        size_t obj_len;
        struct delta_chunk delta;
};

/* Chunks resolved together: one presence query, one sync, one transaction
 * for their rows. While the pool hashes, compresses and stores one batch,
 * the thread of the upload reads, checks and cuts the next. */
struct ingest_batch {
        struct ingest *in;
        struct pending_chunk pending[INGEST_BATCH];
        size_t n_pending, pending_bytes;
        struct workpool_job job;
        bool in_flight;     /* submitted, not yet waited for */
};

/* Codecs for the pool's tasks (a codec serves one thread at a time): taken
 * from this stack, made when it is empty, given back after the task. */
#define INGEST_CODECS_MAX 64

struct ingest {
        struct troved *t;
        struct nar_reader *reader;
        struct listing_builder *lb;
        struct chunker chunker;
        struct sha256 nar_sha, file_sha;
        uint64_t nar_size, file_size;
        bool reader_done;

        /* chunk in progress (ingest_feed_nar) */
        uint8_t *cbuf;
        size_t clen;

        struct ingest_batch batch[2];
        unsigned cur;       /* the batch being filled; the other may be in flight */

        pthread_mutex_t codec_lock;
        struct chunkcodec *codecs[INGEST_CODECS_MAX];
        size_t n_codecs;

        struct db_nar_chunk *chunks;
        size_t n_chunks, cap_chunks;

        int64_t cache_id;   /* new chunks may be deltas against its chunks; 0: none */

        struct ingest_result res;
        bool finished;
        char *listing_json;
        char error[TROVE_ERRMSG_MAX];
};

static void batch_clear(struct ingest_batch *b) {
        for (size_t i = 0; i < b->n_pending; i++) {
                free(b->pending[i].data);
                free(b->pending[i].frame);
                free(b->pending[i].obj);
                delta_chunk_clear(&b->pending[i].delta);
        }
        memset(b->pending, 0, sizeof b->pending);
        b->n_pending = 0;
        b->pending_bytes = 0;
}

void ingest_free(struct ingest *in) {
        if (!in)
                return;
        /* A batch the pool still works on uses this memory. */
        for (size_t k = 0; k < ELEMENTSOF(in->batch); k++) {
                if (in->batch[k].in_flight)
                        (void) workpool_wait(in->t->pool, &in->batch[k].job);
                batch_clear(&in->batch[k]);
        }
        nar_reader_free(in->reader);
        listing_builder_free(in->lb);
        for (size_t i = 0; i < in->n_codecs; i++)
                chunkcodec_free(in->codecs[i]);
        pthread_mutex_destroy(&in->codec_lock);
        sha256_done(&in->nar_sha);
        sha256_done(&in->file_sha);
        free(in->cbuf);
        free(in->chunks);
        free(in->listing_json);
        free(in);
}

int ingest_new(struct troved *t, struct ingest **ret) {
        struct ingest *in = calloc(1, sizeof *in);
        int r;

        if (!in)
                return -ENOMEM;
        in->t = t;
        pthread_mutex_init(&in->codec_lock, NULL);
        for (size_t k = 0; k < ELEMENTSOF(in->batch); k++)
                in->batch[k].in = in;
        r = listing_builder_new(&in->lb);
        if (r < 0)
                goto fail;
        r = nar_reader_new(&listing_builder_callbacks, in->lb, &in->reader);
        if (r < 0)
                goto fail;
        r = chunker_init(&in->chunker, &t->cfg.chunking);
        if (r < 0)
                goto fail;
        r = sha256_init(&in->nar_sha);
        if (r < 0)
                goto fail;
        r = sha256_init(&in->file_sha);
        if (r < 0)
                goto fail;
        in->cbuf = malloc(t->cfg.chunking.max_size);
        if (!in->cbuf) {
                r = -ENOMEM;
                goto fail;
        }
        *ret = in;
        return 0;
fail:
        ingest_free(in);
        return r;
}

void ingest_set_cache(struct ingest *in, int64_t cache_id) {
        in->cache_id = cache_id;
}

const char *ingest_error(const struct ingest *in) {
        return in->error;
}

/* Records why the input was refused (the first reason wins). */
static int fail_msg(struct ingest *in, int err, const char *what, const char *detail) {
        if (!in->error[0])
                snprintf(in->error, sizeof in->error, "%s%s", what, detail);
        return err;
}

/* Every NAR byte passes here, in order. */
static int consume_nar_bytes(struct ingest *in, const void *p, size_t n) {
        int r;

        if (in->nar_size + n > in->t->cfg.max_nar_size)
                return fail_msg(in, -EFBIG, "NAR larger than this server accepts", "");
        r = nar_reader_feed(in->reader, p, n);
        if (r < 0)
                return fail_msg(in, r == -EBADMSG ? -EBADMSG : r, "invalid NAR: ",
                                nar_reader_error(in->reader));
        if (r > 0)
                in->reader_done = true;
        r = sha256_update(&in->nar_sha, p, n);
        if (r < 0)
                return r;
        in->nar_size += n;
        return 0;
}

static int append_chunk(struct ingest *in, const uint8_t id[SHA256_DIGEST_LEN], uint64_t nar_offset, size_t len,
                        const void *frame, size_t frame_len) {
        struct db_nar_chunk *c;
        int r;

        if (in->n_chunks >= MANIFEST_CHUNKS_MAX)
                return fail_msg(in, -E2BIG, "too many chunks in one NAR", "");
        if (in->n_chunks == in->cap_chunks) {
                size_t ncap = in->cap_chunks ? in->cap_chunks * 2 : 256;
                struct db_nar_chunk *v = realloc(in->chunks, ncap * sizeof *v);
                if (!v)
                        return -ENOMEM;
                in->chunks = v;
                in->cap_chunks = ncap;
        }
        c = &in->chunks[in->n_chunks++];
        c->nar_offset = nar_offset;
        c->length = (uint32_t) len;
        c->stored_size = (uint32_t) frame_len;
        memcpy(c->id, id, SHA256_DIGEST_LEN);
        r = sha256_update(&in->file_sha, frame, frame_len);
        if (r < 0)
                return r;
        in->file_size += frame_len;
        return 0;
}

static int codec_take(struct ingest *in, struct chunkcodec **ret) {
        struct chunkcodec *c = NULL;

        pthread_mutex_lock(&in->codec_lock);
        if (in->n_codecs > 0)
                c = in->codecs[--in->n_codecs];
        pthread_mutex_unlock(&in->codec_lock);
        if (c) {
                *ret = c;
                return 0;
        }
        return chunkcodec_new(in->t->cfg.compression_level, ret);
}

static void codec_give(struct ingest *in, struct chunkcodec *c) {
        pthread_mutex_lock(&in->codec_lock);
        if (in->n_codecs < INGEST_CODECS_MAX) {
                in->codecs[in->n_codecs++] = c;
                c = NULL;
        }
        pthread_mutex_unlock(&in->codec_lock);
        chunkcodec_free(c);
}

/* Pool task: the id of chunk i, and its super-features. */
static int batch_hash_task(void *userdata, size_t i) {
        struct ingest_batch *b = userdata;
        struct pending_chunk *pc = &b->pending[i];
        int r = sha256_buf(pc->data, pc->len, pc->id);

        pc->delta = (struct delta_chunk){ .id = pc->id, .data = pc->data, .len = pc->len };
        if (r >= 0 && b->in->t->cfg.delta && b->in->cache_id > 0)
                delta_describe(&pc->delta);
        return r;
}

/* The frame a chunk whose stored object is a delta is served as: its
 * content compressed alone at the server's level. */
static int encode_served(struct ingest *in, struct pending_chunk *pc) {
        struct chunkcodec *codec = NULL;
        size_t cap = chunkcodec_bound(pc->len), flen;
        int r;

        free(pc->frame);
        pc->frame = malloc(cap);
        if (!pc->frame)
                return -ENOMEM;
        r = codec_take(in, &codec);
        if (r < 0)
                return r;
        r = chunkcodec_encode(codec, pc->data, pc->len, pc->frame, cap, &flen);
        codec_give(in, codec);
        if (r >= 0)
                pc->frame_len = flen;
        return r;
}

/* Pool task: the frame chunk i is served as. A chunk the server holds
 * contributes its stored frame (the FileHash must describe the frames
 * actually served, so it is read back, verified, rather than assumed to
 * equal what this encoder would produce); a new one is compressed and
 * stored, without a sync (the batch is synced as a whole). */
static int batch_store_task(void *userdata, size_t i) {
        struct ingest_batch *b = userdata;
        struct ingest *in = b->in;
        struct troved *t = in->t;
        struct pending_chunk *pc = &b->pending[i];
        struct buf stored = BUF_INIT(chunkcodec_bound(CHUNK_SIZE_MAX));
        struct chunkcodec *codec = NULL;
        size_t cap, flen;
        int r;

        if (pc->present) {
                r = storage_get(t, pc->id, CHUNKSTORE_GET_VERIFY, &stored);
                if (r >= 0) {
                        pc->deduped = true;
                        if (chunkcodec_object_kind(stored.data, stored.len, NULL) != 0) {
                                r = encode_served(in, pc);
                                goto out;
                        }
                        goto take_stored;
                }
                if (r != -ENOENT && r != -EBADMSG)
                        goto out;
                /* The row outlived its object (lost or damaged): store it again. */
                log_warning("chunk object missing or damaged for a known chunk; storing it again");
        }
        cap = chunkcodec_bound(pc->len);
        pc->frame = malloc(cap);
        if (!pc->frame) {
                r = -ENOMEM;
                goto out;
        }
        r = codec_take(in, &codec);
        if (r < 0)
                goto out;
        r = chunkcodec_encode(codec, pc->data, pc->len, pc->frame, cap, &flen);
        if (r >= 0 && pc->delta.has_base) {
                pc->frame_len = flen;
                r = delta_try(t, codec, &pc->delta, flen);
                if (r > 0) {
                        pc->obj = TAKE_PTR(pc->delta.obj);
                        pc->obj_len = pc->delta.obj_len;
                }
        }
        codec_give(in, codec);
        if (r < 0)
                goto out;
        pc->frame_len = flen;
        r = pc->obj ? storage_put(t, pc->id, pc->obj, pc->obj_len, CHUNKSTORE_PUT_NOSYNC, &stored)
                    : storage_put(t, pc->id, pc->frame, flen, CHUNKSTORE_PUT_NOSYNC, &stored);
        if (r <= 0)
                goto out;
        /* Stored meanwhile by someone else, perhaps as another frame or a
         * delta: that object is what will be served and recorded. */
        free(pc->obj);
        pc->obj = NULL;
        if (chunkcodec_object_kind(stored.data, stored.len, NULL) != 0) {
                pc->obj_len = stored.len;
                r = buf_steal(&stored, (char **) &pc->obj, NULL);
                goto out; /* served as the plain frame made above */
        }
take_stored:
        free(pc->frame);
        pc->frame = NULL;
        pc->frame_len = stored.len;
        r = buf_steal(&stored, (char **) &pc->frame, NULL);
out:
        buf_free(&stored);
        return r < 0 ? r : 0;
}

struct pending_store {
        struct troved *t;
        const struct db_chunk *rows;
        struct pending_chunk *const *fresh;
};

static int pending_ensure_stored(void *userdata, size_t i) {
        struct pending_store *ps = userdata;
        int r = chunkstore_exists(ps->t->store, ps->rows[i].id, NULL);
        if (r < 0)
                return r;
        if (r > 0)
                return 0;
        r = ps->fresh[i]->obj ? storage_put(ps->t, ps->rows[i].id, ps->fresh[i]->obj, ps->fresh[i]->obj_len, 0, NULL)
                              : storage_put(ps->t, ps->rows[i].id, ps->fresh[i]->frame, ps->fresh[i]->frame_len, 0, NULL);
        return r < 0 ? r : 0;
}

/* Waits for the batch the pool works on, makes its new objects durable
 * (one sync), records them (one transaction), and appends all its chunks,
 * in NAR order, to the NAR's chunk list. */
static int batch_retire(struct ingest *in, struct ingest_batch *b) {
        struct troved *t = in->t;
        struct pending_chunk *fresh[INGEST_BATCH];
        struct db_chunk rows[INGEST_BATCH];
        size_t n_fresh = 0;
        int r;

        if (!b->in_flight)
                return 0;
        b->in_flight = false;
        r = workpool_wait(t->pool, &b->job);
        if (r < 0)
                return r;
        for (size_t i = 0; i < b->n_pending; i++) {
                struct pending_chunk *pc = &b->pending[i];

                if (pc->deduped) {
                        in->res.dedup_chunks++;
                        in->res.dedup_chunk_bytes += pc->len;
                        METRIC_ADD(t, chunks_deduped, 1);
                        METRIC_ADD(t, chunk_bytes_deduped, pc->len);
                } else {
                        if (pc->obj)
                                delta_row(&pc->delta, pc->obj, pc->obj_len, pc->frame_len, &rows[n_fresh]);
                        else
                                delta_row(&pc->delta, pc->frame, pc->frame_len, pc->frame_len, &rows[n_fresh]);
                        if (rows[n_fresh].kind == DB_CHUNK_DELTA) {
                                METRIC_ADD(t, deltas_stored, 1);
                                METRIC_ADD(t, delta_bytes_saved, pc->frame_len - MIN(pc->frame_len, pc->obj_len));
                        }
                        fresh[n_fresh++] = pc;
                        in->res.new_chunks++;
                        in->res.new_chunk_bytes += pc->len;
                        METRIC_ADD(t, chunks_uploaded, 1);
                        METRIC_ADD(t, chunk_bytes_uploaded, pc->len);
                }
                r = append_chunk(in, pc->id, pc->nar_offset, pc->len, pc->frame, pc->frame_len);
                if (r < 0)
                        return r;
        }
        if (n_fresh > 0) {
                struct pending_store ps = { t, rows, fresh };
                r = chunkstore_sync(t->store);
                if (r < 0)
                        return r;
                r = db_chunks_insert(t->db, rows, n_fresh, pending_ensure_stored, &ps);
                if (r < 0)
                        return r;
        }
        batch_clear(b);
        return 0;
}

/* Similar stored chunks for the batch's new chunks, in one query. */
static int find_bases(struct ingest *in, struct ingest_batch *b) {
        struct delta_chunk *v[INGEST_BATCH];
        size_t m = 0;

        for (size_t i = 0; i < b->n_pending; i++)
                if (!b->pending[i].present && b->pending[i].delta.has_features)
                        v[m++] = &b->pending[i].delta;
        return delta_find_bases(in->t, in->cache_id, v, m);
}

/* Hands the batch being filled to the pool: its ids are computed on every
 * core and asked about in one query, and its chunks are compressed and
 * stored on the pool while this thread retires the batch before it and
 * goes on reading. (A chunk in both batches may be asked about before the
 * other's row is written: it is then stored twice, which the write-once
 * store turns into one object whose bytes both record.) */
static int flush_pending(struct ingest *in) {
        struct troved *t = in->t;
        struct ingest_batch *b = &in->batch[in->cur], *prev = &in->batch[in->cur ^ 1];
        uint8_t (*ids)[SHA256_DIGEST_LEN] = NULL;
        bool present[INGEST_BATCH];
        size_t n = b->n_pending;
        int r;

        if (n > 0) {
                r = workpool_run(t->pool, batch_hash_task, b, n);
                if (r < 0)
                        return r;
                ids = malloc(n * sizeof *ids);
                if (!ids)
                        return -ENOMEM;
                for (size_t i = 0; i < n; i++)
                        memcpy(ids[i], b->pending[i].id, SHA256_DIGEST_LEN);
                r = db_chunks_present(t->db, (const uint8_t(*)[SHA256_DIGEST_LEN]) ids, n, present);
                free(ids);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n; i++)
                        b->pending[i].present = present[i];
                r = find_bases(in, b);
                if (r < 0)
                        return r;
                workpool_submit(t->pool, &b->job, batch_store_task, b, n);
                b->in_flight = true;
        }
        /* The chunk list grows in NAR order: prev's chunks come first. */
        r = batch_retire(in, prev);
        if (r >= 0 && n > 0)
                in->cur ^= 1;
        return r;
}

/* A chunk cut from the raw NAR stream: validated at once, stored with its
 * batch. */
static int store_cut_chunk(struct ingest *in) {
        struct ingest_batch *b = &in->batch[in->cur];
        struct pending_chunk *pc;
        int r;

        /* Validate before storing anything: a malformed NAR stores nothing
         * past the batch in which it goes wrong. */
        r = consume_nar_bytes(in, in->cbuf, in->clen);
        if (r < 0)
                return r;
        pc = &b->pending[b->n_pending];
        pc->data = malloc(in->clen);
        if (!pc->data)
                return -ENOMEM;
        memcpy(pc->data, in->cbuf, in->clen);
        pc->len = in->clen;
        pc->nar_offset = in->nar_size - in->clen;
        b->n_pending++;
        b->pending_bytes += in->clen;
        in->clen = 0;
        if (b->n_pending == INGEST_BATCH || b->pending_bytes >= INGEST_BATCH_BYTES)
                return flush_pending(in);
        return 0;
}

int ingest_feed_nar(struct ingest *in, const void *p, size_t n) {
        const uint8_t *s = p;
        int r;

        while (n > 0) {
                size_t cut = chunker_scan(&in->chunker, s, n);
                size_t take = cut ? cut : n;

                /* The chunker bounds a chunk by max_size; the buffer is that big. */
                if (in->clen + take > in->t->cfg.chunking.max_size)
                        return -EIO;
                memcpy(in->cbuf + in->clen, s, take);
                in->clen += take;
                s += take;
                n -= take;
                if (cut) {
                        r = store_cut_chunk(in);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int ingest_add_chunk(struct ingest *in, const uint8_t id[SHA256_DIGEST_LEN], const void *data,
                     size_t len, const void *frame, size_t frame_len) {
        int r;

        if (len == 0 || len > CHUNK_SIZE_MAX)
                return -EINVAL;
        r = consume_nar_bytes(in, data, len);
        if (r < 0)
                return r;
        return append_chunk(in, id, in->nar_size - len, len, frame, frame_len);
}

/* Chunks read back per window, and the bytes (as the manifest declares
 * them) after which a window ends early; while the pool reads and verifies
 * one window, the caller feeds the one before through the NAR checks. */
#define INGEST_READ_WINDOW 64
#define INGEST_READ_WINDOW_BYTES (16u * 1024 * 1024)

struct stored_window {
        struct ingest *in;
        const struct manifest_chunk *chunks;
        size_t n;
        struct stored_chunk {
                struct buf frame;
                uint8_t *data;
                size_t data_cap;
                int error;      /* -ECANCELED: not read (an earlier one failed) */
        } c[INGEST_READ_WINDOW];
        struct workpool_job job;
        bool in_flight;
};

/* Pool task: reads chunk i's stored frame and decodes it, verified against
 * its id and length. */
static int stored_read_task(void *userdata, size_t i) {
        struct stored_window *w = userdata;
        const struct manifest_chunk *mc = &w->chunks[i];
        struct stored_chunk *sc = &w->c[i];
        struct chunkcodec *codec = NULL;
        uint64_t size;
        size_t len;
        int r;

        bool delta = false;
        int k;

        r = storage_get(w->in->t, mc->id, 0, &sc->frame);
        if (r == -EBADMSG)
                r = -EIO; /* a stored object that is no frame: the store's fault */
        /* Its header must declare the manifest's length before that much
         * memory is taken. */
        if (r >= 0) {
                /* Not a plain frame (a delta, a recompressed object): served
                 * as its content compressed at the server's level. */
                k = chunkcodec_object_kind(sc->frame.data, sc->frame.len, &size);
                delta = k > 0;
                if (k < 0 || size != mc->length)
                        r = -EBADMSG;
        }
        if (r >= 0 && sc->data_cap < mc->length) {
                free(sc->data);
                sc->data_cap = 0;
                sc->data = malloc(mc->length);
                if (sc->data)
                        sc->data_cap = mc->length;
                else
                        r = -ENOMEM;
        }
        if (r >= 0)
                r = codec_take(w->in, &codec);
        if (r >= 0 && delta) {
                /* Decoded with its base; served (and hashed into FileHash)
                 * as its content compressed alone at the server's level. */
                r = storage_decode(w->in->t, codec, mc->id, mc->length, &sc->frame, sc->data);
                if (r == -ENOENT)
                        r = -EBADMSG;
                if (r >= 0) {
                        buf_reset(&sc->frame);
                        r = buf_reserve(&sc->frame, chunkcodec_bound(mc->length));
                }
                if (r >= 0)
                        r = chunkcodec_encode(codec, sc->data, mc->length, sc->frame.data, sc->frame.cap, &len);
                if (r >= 0)
                        sc->frame.len = len;
                codec_give(w->in, codec);
        } else if (r >= 0) {
                /* An object this process stored moments ago was checked
                 * against its id then (a push uploads its chunks just before
                 * it commits the path); others are hashed here. */
                bool checked = storage_was_verified(w->in->t, mc->id, sc->frame.len);
                r = chunkcodec_decode(codec, sc->frame.data, sc->frame.len, checked ? NULL : mc->id, mc->length,
                                      sc->data, mc->length, &len);
                codec_give(w->in, codec);
                if (r != -ENOMEM && (r < 0 || len != mc->length))
                        r = -EBADMSG;
        }
        sc->error = r;
        return r;
}

/* How many of the n chunks from chunks on make the next window. */
static size_t window_size(const struct manifest_chunk *chunks, size_t n) {
        size_t m = 0;
        uint64_t bytes = 0;

        while (m < n && m < INGEST_READ_WINDOW && (m == 0 || bytes < INGEST_READ_WINDOW_BYTES))
                bytes += chunks[m++].length;
        return m;
}

static void stored_window_start(struct stored_window *w, const struct manifest_chunk *chunks, size_t n) {
        w->chunks = chunks;
        w->n = n;
        for (size_t i = 0; i < n; i++)
                w->c[i].error = -ECANCELED;
        workpool_submit(w->in->t->pool, &w->job, stored_read_task, w, n);
        w->in_flight = true;
}

/* Waits for w; with release, also frees its buffers (else they are kept
 * for the next window: already mapped, they cost no page faults). */
static void stored_window_clear(struct stored_window *w, bool release) {
        if (w->in_flight)
                (void) workpool_wait(w->in->t->pool, &w->job);
        w->in_flight = false;
        w->n = 0;
        if (!release)
                return;
        for (size_t i = 0; i < INGEST_READ_WINDOW; i++) {
                buf_free(&w->c[i].frame);
                free(w->c[i].data);
                w->c[i].data = NULL;
                w->c[i].data_cap = 0;
        }
}

int ingest_add_stored(struct ingest *in, const struct manifest_chunk *chunks, size_t n, size_t *ret_bad) {
        struct stored_window *w = calloc(2, sizeof *w);
        size_t next = 0, at = 0;
        unsigned k = 0;
        int r = 0;

        if (!w)
                return -ENOMEM;
        for (unsigned j = 0; j < 2; j++) {
                w[j].in = in;
                for (size_t i = 0; i < INGEST_READ_WINDOW; i++)
                        buf_init(&w[j].c[i].frame, chunkcodec_bound(CHUNK_SIZE_MAX));
        }
        for (unsigned j = 0; j < 2 && next < n; j++) {
                size_t m = window_size(chunks + next, n - next);
                stored_window_start(&w[j], chunks + next, m);
                next += m;
        }
        while (at < n) {
                struct stored_window *cw = &w[k];

                (void) workpool_wait(in->t->pool, &cw->job);
                cw->in_flight = false;
                for (size_t i = 0; i < cw->n; i++, at++) {
                        struct stored_chunk *sc = &cw->c[i];
                        r = sc->error;
                        if (r >= 0)
                                r = ingest_add_chunk(in, cw->chunks[i].id, sc->data, cw->chunks[i].length,
                                                     sc->frame.data, sc->frame.len);
                        if (r < 0) {
                                *ret_bad = at;
                                goto out;
                        }
                }
                stored_window_clear(cw, false);
                if (next < n) {
                        size_t m = window_size(chunks + next, n - next);
                        stored_window_start(cw, chunks + next, m);
                        next += m;
                }
                k ^= 1;
        }
out:
        stored_window_clear(&w[0], true);
        stored_window_clear(&w[1], true);
        free(w);
        return r;
}

int ingest_finish(struct ingest *in, struct ingest_result *ret) {
        int r;

        if (in->clen > 0) {
                r = store_cut_chunk(in);
                if (r < 0)
                        return r;
        }
        /* The NAR must be complete before its last batch is stored. */
        r = nar_reader_finish(in->reader);
        if (r < 0)
                return fail_msg(in, r, "invalid NAR: ", nar_reader_error(in->reader));
        r = flush_pending(in);
        if (r >= 0)
                r = batch_retire(in, &in->batch[in->cur ^ 1]);
        if (r < 0)
                return r;
        if (in->n_chunks == 0)
                return fail_msg(in, -EBADMSG, "empty NAR", "");
        r = sha256_final(&in->nar_sha, in->res.nar_hash);
        if (r < 0)
                return r;
        r = sha256_final(&in->file_sha, in->res.file_hash);
        if (r < 0)
                return r;
        in->res.nar_size = in->nar_size;
        in->res.file_size = in->file_size;

        {
                struct listing l;
                r = listing_builder_take(in->lb, &l);
                if (r < 0)
                        return fail_msg(in, r, "invalid NAR: ", listing_builder_error(in->lb));
                r = listing_to_json(&l, &in->listing_json, NULL);
                listing_free(&l);
                if (r < 0)
                        return r;
        }
        in->finished = true;
        *ret = in->res;
        return 0;
}

int ingest_commit(struct ingest *in, int64_t *ret_nar_id) {
        struct db_nar n = {};
        int r;

        if (!in->finished)
                return -EINVAL;
        memcpy(n.nar_hash, in->res.nar_hash, SHA256_DIGEST_LEN);
        memcpy(n.file_hash, in->res.file_hash, SHA256_DIGEST_LEN);
        n.nar_size = in->res.nar_size;
        n.file_size = in->res.file_size;
        n.n_chunks = (uint32_t) in->n_chunks;
        r = db_nar_insert(in->t->db, &n, in->chunks, in->n_chunks, in->listing_json, ret_nar_id);
        if (r < 0)
                return r;
        METRIC_ADD(in->t, nars_ingested, 1);
        return 0;
}
