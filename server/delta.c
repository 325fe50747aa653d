/* SPDX-License-Identifier: Apache-2.0 */
/*
 * delta.c - resemblance detection and delta objects on ingest (delta.h).
 */
#include "delta.h"
#include "storage.h"

void delta_describe(struct delta_chunk *c) {
        c->has_features = resemble_features(c->data, c->len, c->features) > 0;
}

int delta_find_bases(struct troved *t, int64_t cache_id, struct delta_chunk *const *c, size_t n) {
        struct db_base_query *qs = NULL;
        struct db_chunk_base *found = NULL;
        size_t *idx = NULL, m = 0;
        int r = 0;

        for (size_t i = 0; i < n; i++)
                c[i]->has_base = false;
        if (!t->cfg.delta || n == 0 || cache_id <= 0)
                return 0;
        qs = calloc(n, sizeof *qs);
        found = calloc(n, sizeof *found);
        idx = calloc(n, sizeof *idx);
        if (!qs || !found || !idx) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n; i++) {
                /* The base may be up to twice as long; both must fit one window. */
                if (!c[i]->has_features || 3 * c[i]->len > CHUNKCODEC_DELTA_WINDOW_MAX)
                        continue;
                memcpy(qs[m].features, c[i]->features, sizeof qs[m].features);
                qs[m].length = (uint32_t) c[i]->len;
                idx[m++] = i;
        }
        if (m == 0)
                goto out;
        r = db_chunk_bases(t->db, cache_id, qs, m, found);
        if (r < 0)
                goto out;
        for (size_t k = 0; k < m; k++) {
                struct delta_chunk *d = c[idx[k]];
                /* Never its own base (a chunk stored meanwhile by another upload). */
                if (!found[k].found || memcmp(found[k].id, d->id, SHA256_DIGEST_LEN) == 0)
                        continue;
                d->has_base = true;
                memcpy(d->base, found[k].id, SHA256_DIGEST_LEN);
                d->base_length = found[k].length;
                METRIC_ADD(t, delta_candidates, 1);
        }
out:
        free(qs);
        free(found);
        free(idx);
        return r;
}

int delta_try(struct troved *t, struct chunkcodec *codec, struct delta_chunk *c, size_t plain_len) {
        struct buf obj = BUF_INIT(chunkcodec_bound(CHUNK_SIZE_MAX));
        uint8_t *base = NULL, *out = NULL;
        size_t cap, len;
        int r;

        if (!c->has_base)
                return 0;
        base = malloc(c->base_length);
        cap = CHUNKCODEC_DELTA_HEADER + chunkcodec_bound(c->len);
        out = malloc(cap);
        if (!base || !out) {
                r = -ENOMEM;
                goto out;
        }
        r = storage_read_content(t, codec, c->base, c->base_length, &obj, base, NULL);
        if (r < 0) {
                /* A base that cannot be read is no base: stored plain. */
                log_warning("base chunk for a delta unreadable (%s); storing the chunk plain", strerror(-r));
                r = r == -ENOMEM ? r : 0;
                goto out;
        }
        r = chunkcodec_encode_delta(codec, base, c->base_length, c->base, c->data, c->len, out, cap, &len);
        if (r < 0)
                goto out;
        if (len * 64 > plain_len * DELTA_MARGIN_64THS) {
                r = 0;
                goto out;
        }
        c->obj = out;
        c->obj_len = len;
        out = NULL;
        r = 1;
out:
        buf_free(&obj);
        free(base);
        free(out);
        return r;
}

void delta_chunk_clear(struct delta_chunk *c) {
        free(c->obj);
        c->obj = NULL;
        c->obj_len = 0;
}

void delta_row(const struct delta_chunk *c, const void *obj, size_t n, size_t served_len, struct db_chunk *row) {
        *row = (struct db_chunk){ .length = (uint32_t) c->len, .stored_size = (uint32_t) n,
                                  .served_size = (uint32_t) served_len };
        memcpy(row->id, c->id, SHA256_DIGEST_LEN);
        if (chunkcodec_delta_parse(obj, n, row->base, NULL, NULL) > 0) {
                row->kind = DB_CHUNK_DELTA;
                return;
        }
        if (chunkcodec_object_kind(obj, n, NULL) == 2)
                row->kind = DB_CHUNK_RECOMPRESSED;
        else {
                row->kind = DB_CHUNK_PLAIN;
                row->served_size = (uint32_t) n;
        }
        row->has_features = c->has_features;
        memcpy(row->features, c->features, sizeof row->features);
}
