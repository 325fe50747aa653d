/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <time.h>

#include "ingest.h"
#include "storage.h"
#include "trove/chunkcodec.h"
#include "trove/listing.h"
#include "trove/manifest.h"
#include "trove/nar.h"

/* Chunks per batch, and the bytes after which a batch is resolved early. */
#define INGEST_BATCH 64
#define INGEST_BATCH_BYTES (8u * 1024 * 1024)

struct ingest {
        struct troved *t;
        struct nar_reader *reader;
        struct listing_builder *lb;
        struct chunkcodec *codec;
        struct chunker chunker;
        struct sha256 nar_sha, file_sha;
        uint64_t nar_size, file_size;
        bool reader_done;

        /* chunk in progress (ingest_feed_nar) */
        uint8_t *cbuf;
        size_t clen;
        uint8_t *frame;
        size_t frame_cap;
        struct buf stored;       /* a deduplicated chunk's stored frame */

        /* Chunks cut but not yet stored: resolved together (one presence
         * query, one sync, one transaction for their rows). */
        struct pending_chunk {
                uint8_t id[SHA256_DIGEST_LEN];
                uint8_t *data;
                size_t len;
                uint64_t nar_offset;
                uint8_t *frame;  /* new chunks: their frame */
                size_t frame_len;
        } pending[INGEST_BATCH];
        size_t n_pending, pending_bytes;

        struct db_nar_chunk *chunks;
        size_t n_chunks, cap_chunks;

        struct ingest_result res;
        bool finished;
        char *listing_json;
        char error[TROVE_ERRMSG_MAX];
};

void ingest_free(struct ingest *in) {
        if (!in)
                return;
        nar_reader_free(in->reader);
        listing_builder_free(in->lb);
        chunkcodec_free(in->codec);
        sha256_done(&in->nar_sha);
        sha256_done(&in->file_sha);
        for (size_t i = 0; i < in->n_pending; i++) {
                free(in->pending[i].data);
                free(in->pending[i].frame);
        }
        free(in->cbuf);
        free(in->frame);
        buf_free(&in->stored);
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
        r = listing_builder_new(&in->lb);
        if (r < 0)
                goto fail;
        r = nar_reader_new(&listing_builder_callbacks, in->lb, &in->reader);
        if (r < 0)
                goto fail;
        r = chunkcodec_new(t->cfg.compression_level, &in->codec);
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
        in->frame_cap = chunkcodec_bound(t->cfg.chunking.max_size);
        in->frame = malloc(in->frame_cap);
        buf_init(&in->stored, chunkcodec_bound(CHUNK_SIZE_MAX));
        if (!in->cbuf || !in->frame) {
                r = -ENOMEM;
                goto fail;
        }
        *ret = in;
        return 0;
fail:
        ingest_free(in);
        return r;
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
        r = storage_put(ps->t, ps->rows[i].id, ps->fresh[i]->frame, ps->fresh[i]->frame_len, 0, NULL);
        return r < 0 ? r : 0;
}

/* Resolves the pending chunks, in NAR order: a chunk the server holds
 * contributes its stored frame (the FileHash must describe the frames
 * actually served, so it is read back rather than assumed to equal what
 * this encoder would produce); a new one is compressed and stored. New
 * objects are made durable by one sync, then recorded in one transaction. */
static int flush_pending(struct ingest *in) {
        struct troved *t = in->t;
        uint8_t (*ids)[SHA256_DIGEST_LEN] = NULL;
        struct pending_chunk *fresh[INGEST_BATCH];
        struct db_chunk rows[INGEST_BATCH];
        bool present[INGEST_BATCH];
        size_t n = in->n_pending, n_fresh = 0;
        int r;

        if (n == 0)
                return 0;
        ids = malloc(n * sizeof *ids);
        if (!ids)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                memcpy(ids[i], in->pending[i].id, SHA256_DIGEST_LEN);
        r = db_chunks_present(t->db, (const uint8_t(*)[SHA256_DIGEST_LEN]) ids, n, present);
        free(ids);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                struct pending_chunk *pc = &in->pending[i];
                size_t flen;

                if (present[i]) {
                        /* Verified: the bytes served must decode to the chunk. */
                        r = storage_get(t, pc->id, CHUNKSTORE_GET_VERIFY, &in->stored);
                        if (r >= 0) {
                                in->res.dedup_chunks++;
                                in->res.dedup_chunk_bytes += pc->len;
                                METRIC_ADD(t, chunks_deduped, 1);
                                METRIC_ADD(t, chunk_bytes_deduped, pc->len);
                                r = append_chunk(in, pc->id, pc->nar_offset, pc->len, in->stored.data, in->stored.len);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        if (r != -ENOENT && r != -EBADMSG)
                                return r;
                        /* The row outlived its object (lost or damaged): store it again. */
                        log_warning("chunk object missing or damaged for a known chunk; storing it again");
                }
                r = chunkcodec_encode(in->codec, pc->data, pc->len, in->frame, in->frame_cap, &flen);
                if (r < 0)
                        return r;
                pc->frame = malloc(flen);
                if (!pc->frame)
                        return -ENOMEM;
                memcpy(pc->frame, in->frame, flen);
                pc->frame_len = flen;
                r = storage_put(t, pc->id, pc->frame, flen, CHUNKSTORE_PUT_NOSYNC, &in->stored);
                if (r < 0)
                        return r;
                if (r > 0) {
                        /* Stored meanwhile by someone else, perhaps as another
                         * frame: that object is what will be served. */
                        void *f = realloc(pc->frame, in->stored.len);
                        if (!f)
                                return -ENOMEM;
                        memcpy(f, in->stored.data, in->stored.len);
                        pc->frame = f;
                        pc->frame_len = flen = in->stored.len;
                }
                rows[n_fresh] = (struct db_chunk){ .length = (uint32_t) pc->len, .stored_size = (uint32_t) flen };
                memcpy(rows[n_fresh].id, pc->id, SHA256_DIGEST_LEN);
                fresh[n_fresh++] = pc;
                in->res.new_chunks++;
                in->res.new_chunk_bytes += pc->len;
                METRIC_ADD(t, chunks_uploaded, 1);
                METRIC_ADD(t, chunk_bytes_uploaded, pc->len);
                r = append_chunk(in, pc->id, pc->nar_offset, pc->len, pc->frame, flen);
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
        for (size_t i = 0; i < n; i++) {
                free(in->pending[i].data);
                free(in->pending[i].frame);
                in->pending[i].data = in->pending[i].frame = NULL;
        }
        in->n_pending = 0;
        in->pending_bytes = 0;
        return 0;
}

/* A chunk cut from the raw NAR stream: validated at once, stored with its
 * batch. */
static int store_cut_chunk(struct ingest *in) {
        struct pending_chunk *pc;
        int r;

        /* Validate before storing anything: a malformed NAR stores nothing
         * past the batch in which it goes wrong. */
        r = consume_nar_bytes(in, in->cbuf, in->clen);
        if (r < 0)
                return r;
        pc = &in->pending[in->n_pending];
        r = sha256_buf(in->cbuf, in->clen, pc->id);
        if (r < 0)
                return r;
        pc->data = malloc(in->clen);
        if (!pc->data)
                return -ENOMEM;
        memcpy(pc->data, in->cbuf, in->clen);
        pc->len = in->clen;
        pc->nar_offset = in->nar_size - in->clen;
        pc->frame = NULL;
        in->n_pending++;
        in->pending_bytes += in->clen;
        in->clen = 0;
        if (in->n_pending == INGEST_BATCH || in->pending_bytes >= INGEST_BATCH_BYTES)
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
