/* SPDX-License-Identifier: Apache-2.0 */
/*
 * recompress.c - recompression of cold chunks (recompress.h).
 */
#include "recompress.h"
#include "storage.h"
#include "trove/chunkcodec.h"

/* Recompressed only if it saves at least this (in 1/64) of the object. */
#define RECOMPRESS_KEEP_64THS 62

struct replace_ctx {
        struct troved *t;
        const uint8_t *id;
        const void *obj;
        size_t n;
};

static int replace_object(void *userdata) {
        struct replace_ctx *c = userdata;
        return chunkstore_put_flags(c->t->store, c->id, c->obj, c->n, CHUNKSTORE_PUT_REPLACE);
}

/* One chunk: 1 if recompressed, 0 if left as it is. */
static int recompress_one(struct troved *t, struct chunkcodec *served, struct chunkcodec *high,
                          const struct db_cold_chunk *c, struct recompress_result *res) {
        struct buf obj = BUF_INIT(chunkcodec_bound(CHUNK_SIZE_MAX));
        uint8_t *content = NULL, *frame = NULL, *out = NULL;
        size_t cap = chunkcodec_bound(c->length) + CHUNKCODEC_RECOMPRESSED_HEADER, flen, olen;
        struct replace_ctx rc;
        int r, kind;

        content = malloc(c->length);
        frame = malloc(cap);
        out = malloc(cap);
        if (!content || !frame || !out) {
                r = -ENOMEM;
                goto out;
        }
        r = storage_read_content(t, served, c->id, c->length, &obj, content, NULL);
        if (r < 0)
                goto out;
        kind = chunkcodec_object_kind(obj.data, obj.len, NULL);
        if (kind != 0) {
                /* Replaced by a run that did not record it (killed between
                 * the two): record it now. */
                r = kind == 2 ? db_chunk_recompress(t->db, c->id, (uint32_t) obj.len, NULL, NULL) : 0;
                goto out;
        }
        /* The frame a .nar.zst carries for it must stay what FileHash says:
         * only a chunk whose stored frame is what this server's level makes
         * (as it serves recompressed chunks) is recompressed. */
        r = chunkcodec_encode(served, content, c->length, frame, cap, &flen);
        if (r < 0)
                goto out;
        if (flen != obj.len || memcmp(frame, obj.data, flen) != 0) {
                r = 0;
                goto out;
        }
        r = chunkcodec_encode_recompressed(high, content, c->length, out, cap, &olen);
        if (r < 0)
                goto out;
        if (olen * 64 > obj.len * RECOMPRESS_KEEP_64THS) {
                r = 0;
                goto out;
        }
        rc = (struct replace_ctx){ t, c->id, out, olen };
        r = db_chunk_recompress(t->db, c->id, (uint32_t) olen, replace_object, &rc);
        if (r > 0) {
                res->recompressed++;
                res->bytes_before += obj.len;
                res->bytes_after += olen;
        }
out:
        buf_free(&obj);
        free(content);
        free(frame);
        free(out);
        return r;
}

int recompress_run(struct troved *t, int level, int64_t min_age_sec, size_t max, struct recompress_result *ret) {
        _cleanup_(chunkcodec_freep) struct chunkcodec *served = NULL, *high = NULL;
        struct recompress_result res = {};
        int64_t cursor = 0;
        int r;

        if (level <= t->cfg.compression_level)
                return -EINVAL;
        r = chunkcodec_new(t->cfg.compression_level, &served);
        if (r >= 0)
                r = chunkcodec_new(level, &high);
        if (r < 0)
                return r;
        while (res.examined < max) {
                struct db_cold_chunk *v = NULL;
                size_t n = 0;

                r = db_cold_chunks(t->db, min_age_sec, MIN(max - res.examined, (size_t) 256), &cursor, &v, &n);
                if (r < 0)
                        return r;
                if (n == 0) {
                        free(v);
                        break;
                }
                for (size_t i = 0; i < n; i++) {
                        res.examined++;
                        r = recompress_one(t, served, high, &v[i], &res);
                        /* A chunk that cannot be read now is left for GC or a
                         * later run; a failing store ends the run. */
                        if (r < 0 && r != -ENOENT && r != -EBADMSG) {
                                free(v);
                                return r;
                        }
                }
                free(v);
        }
        METRIC_ADD(t, chunks_recompressed, res.recompressed);
        METRIC_ADD(t, recompress_bytes_saved, res.bytes_before - res.bytes_after);
        *ret = res;
        return 0;
}
