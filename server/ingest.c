/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <time.h>

#include "ingest.h"
#include "trove/chunkcodec.h"
#include "trove/listing.h"
#include "trove/manifest.h"
#include "trove/nar.h"

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

static int append_chunk(struct ingest *in, const uint8_t id[SHA256_DIGEST_LEN], size_t len,
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
        c->nar_offset = in->nar_size - len;
        c->length = (uint32_t) len;
        c->stored_size = (uint32_t) frame_len;
        memcpy(c->id, id, SHA256_DIGEST_LEN);
        r = sha256_update(&in->file_sha, frame, frame_len);
        if (r < 0)
                return r;
        in->file_size += frame_len;
        return 0;
}

/* A chunk cut from the raw NAR stream: store it unless stored already. The
 * FileHash must describe the frames actually served, so for a chunk that
 * was stored before, its stored frame is read back rather than assumed to
 * equal what this encoder would produce. */
static int store_cut_chunk(struct ingest *in) {
        struct troved *t = in->t;
        uint8_t id[SHA256_DIGEST_LEN];
        struct db_chunk row;
        size_t flen;
        int r;

        /* Validate before storing anything: a malformed NAR stores nothing
         * past the chunk in which it goes wrong. */
        r = consume_nar_bytes(in, in->cbuf, in->clen);
        if (r < 0)
                return r;
        r = sha256_buf(in->cbuf, in->clen, id);
        if (r < 0)
                return r;
        r = db_chunk_get(t->db, id, &row);
        if (r < 0)
                return r;
        if (r > 0) {
                r = troved_store_get(t, id, &in->stored);
                if (r >= 0) {
                        in->res.dedup_chunks++;
                        in->res.dedup_chunk_bytes += in->clen;
                        METRIC_ADD(t, chunks_deduped, 1);
                        METRIC_ADD(t, chunk_bytes_deduped, in->clen);
                        r = append_chunk(in, id, in->clen, in->stored.data, in->stored.len);
                        in->clen = 0;
                        return r;
                }
                if (r != -ENOENT && r != -EBADMSG)
                        return r;
                /* The row outlived its object (lost or damaged): store it again. */
                log_warning("chunk object missing or damaged for a known chunk; storing it again");
        }
        r = chunkcodec_encode(in->codec, in->cbuf, in->clen, in->frame, in->frame_cap, &flen);
        if (r < 0)
                return r;
        r = troved_store_put(t, id, in->frame, flen, 0);
        if (r < 0)
                return r;
        row = (struct db_chunk){ .length = (uint32_t) in->clen, .stored_size = (uint32_t) flen };
        memcpy(row.id, id, SHA256_DIGEST_LEN);
        r = troved_chunk_record(t, &row, in->frame, flen);
        if (r < 0)
                return r;
        in->res.new_chunks++;
        in->res.new_chunk_bytes += in->clen;
        METRIC_ADD(t, chunks_uploaded, 1);
        METRIC_ADD(t, chunk_bytes_uploaded, in->clen);
        r = append_chunk(in, id, in->clen, in->frame, flen);
        in->clen = 0;
        return r;
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
        return append_chunk(in, id, len, frame, frame_len);
}

int ingest_finish(struct ingest *in, struct ingest_result *ret) {
        int r;

        if (in->clen > 0) {
                r = store_cut_chunk(in);
                if (r < 0)
                        return r;
        }
        r = nar_reader_finish(in->reader);
        if (r < 0)
                return fail_msg(in, r, "invalid NAR: ", nar_reader_error(in->reader));
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
