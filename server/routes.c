/* SPDX-License-Identifier: Apache-2.0 */
/*
 * routes.c - what troved answers, and who may ask.
 *
 *   GET  /health, /metrics
 *   GET  /<cache>/nix-cache-info
 *   GET|HEAD|PUT /<cache>/<hash>.narinfo
 *   GET|PUT      /<cache>/<hash>.ls
 *   GET|HEAD|PUT /<cache>/nar/<file>       (.nar.zst served from chunk frames,
 *                                            .nar with Range; PUT ingests)
 *   /_api/v1/...                            (api.c)
 *
 * Authentication happens here, once per request: a token that is present
 * but bad is refused with 401 even where anonymous access would do.
 */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "api.h"
#include "ingest.h"
#include "troved.h"
#include "trove/chunkcodec.h"
#include "trove/decompress.h"
#include "trove/hash.h"
#include "trove/narinfo.h"
#include "trove/nix32.h"
#include "trove/storepath.h"

#define NARINFO_HASH_LEN STOREPATH_HASH_LEN

/* ---- auth ---- */

void auth_free(struct auth *a) {
        token_claims_free(a->claims);
        a->claims = NULL;
}

static int base64_decode_any(const char *s, char *out, size_t cap, size_t *ret_len) {
        static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        uint32_t acc = 0;
        int bits = 0;
        size_t n = 0;

        for (; *s && *s != '='; s++) {
                const char *p = strchr(tab, *s);
                if (!p || !*s)
                        return -EINVAL;
                acc = (acc << 6) | (uint32_t) (p - tab);
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        if (n + 1 >= cap)
                                return -E2BIG;
                        out[n++] = (char) ((acc >> bits) & 0xff);
                }
        }
        out[n] = 0;
        *ret_len = n;
        return 0;
}

int auth_parse(struct troved *t, struct httpd_request *req, struct auth *ret) {
        const char *h = httpd_request_header(req, "Authorization");
        struct trove_error err = {};
        const char *token = NULL;
        char basic[TOKEN_TEXT_MAX + 512];
        size_t n;
        int r;

        *ret = (struct auth){};
        if (!h)
                return 0;
        if (strncasecmp(h, "Bearer ", 7) == 0) {
                token = h + 7;
        } else if (strncasecmp(h, "Basic ", 6) == 0) {
                char *colon;
                r = base64_decode_any(h + 6, basic, sizeof basic, &n);
                if (r < 0 || memchr(basic, 0, n))
                        return httpd_reply_error(req, 401, "malformed Basic authorization"), -EACCES;
                colon = strchr(basic, ':');
                if (!colon)
                        return httpd_reply_error(req, 401, "malformed Basic authorization"), -EACCES;
                token = colon + 1; /* the password is the token; the user name is free */
        } else {
                return httpd_reply_error(req, 401, "unsupported authorization scheme (use Bearer or Basic)"),
                       -EACCES;
        }
        while (*token == ' ')
                token++;
        ret->present = true;
        r = token_decode_verify(token, t->secret.key, t->secret.len, (int64_t) time(NULL), &ret->claims, &err);
        if (r < 0) {
                httpd_add_header(req, "WWW-Authenticate", "Basic realm=\"trove\"");
                return httpd_reply_error(req, 401, "invalid token: %s", err.msg[0] ? err.msg : strerror(-r)),
                       -EACCES;
        }
        return 0;
}

int auth_require(struct httpd_request *req, const struct auth *a, const struct db_cache *cache,
                 const char *cache_name, enum token_perm perm) {
        if (perm == TOKEN_PERM_PULL && cache && cache->is_public)
                return 0;
        if (!a->present) {
                httpd_add_header(req, "WWW-Authenticate", "Basic realm=\"trove\"");
                return httpd_reply_error(req, 401, "authentication required to %s on cache '%s'",
                                        token_perm_to_string(perm), cache_name),
                       -EACCES;
        }
        if (!token_permits(a->claims, cache_name, perm))
                return httpd_reply_error(req, 403, "token does not grant '%s' on cache '%s'",
                                        token_perm_to_string(perm), cache_name),
                       -EPERM;
        return 0;
}

/* Loads the cache and checks perm; replies on failure. Unknown caches are
 * 404 only for those allowed to know: anonymous callers get 401 as for a
 * private cache, so cache names do not leak. */
int cache_open(struct troved *t, struct httpd_request *req, const struct auth *a, const char *name,
               enum token_perm perm, struct db_cache *ret) {
        int r = db_cache_get(t->db, name, ret);
        if (r == -ENOENT) {
                if (!a->present)
                        return auth_require(req, a, NULL, name, perm);
                if (!token_permits(a->claims, name, TOKEN_PERM_PULL) && !token_permits(a->claims, name, perm))
                        return httpd_reply_error(req, 403, "token does not grant access to cache '%s'", name),
                               -EPERM;
                return httpd_reply_error(req, 404, "no such cache '%s'", name), -ENOENT;
        }
        if (r < 0)
                return r;
        r = auth_require(req, a, ret, name, perm);
        if (r < 0) {
                db_cache_free(ret);
                return r;
        }
        return 0;
}

/* ---- chunk store with accounting ---- */

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

int troved_store_get(struct troved *t, const uint8_t id[SHA256_DIGEST_LEN], struct buf *out) {
        uint64_t t0 = now_usec();
        int r = chunkstore_get(t->store, id, 0, out);
        METRIC_ADD(t, store_ops, 1);
        METRIC_ADD(t, store_usec, now_usec() - t0);
        if (r < 0 && r != -ENOENT)
                METRIC_ADD(t, store_errors, 1);
        return r;
}

int troved_store_put(struct troved *t, const uint8_t id[SHA256_DIGEST_LEN], const void *frame, size_t n,
                     unsigned flags) {
        uint64_t t0 = now_usec();
        int r = chunkstore_put_flags(t->store, id, frame, n, flags);
        METRIC_ADD(t, store_ops, 1);
        METRIC_ADD(t, store_usec, now_usec() - t0);
        if (r < 0)
                METRIC_ADD(t, store_errors, 1);
        return r;
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
        return r > 0 ? 0 : troved_store_put(c->t, c->row->id, c->frame, c->n, 0);
}

int troved_chunk_record(struct troved *t, const struct db_chunk *row, const void *frame, size_t n) {
        struct chunk_record c = { t, row, frame, n };
        return db_chunk_insert(t->db, row, chunk_ensure_stored, &c);
}

/* ---- narinfo ---- */

/* The URL under which we serve a NAR: named by its NAR hash, so the name
 * alone finds it. */
static void nar_url(const struct db_nar *n, bool compressed, char *out, size_t cap) {
        char h[HASH_NIX32_LEN + 1];
        nix32_encode(n->nar_hash, SHA256_DIGEST_LEN, h);
        snprintf(out, cap, "nar/%s.nar%s", h, compressed ? ".zst" : "");
}

static int split_words(const char *s, char sep, char ***ret, size_t *ret_n) {
        size_t n = 0, i = 0;
        char **v;
        const char *p = s;

        for (const char *q = s; *q; q++)
                n += *q == sep;
        v = calloc(n + 2, sizeof *v);
        if (!v)
                return -ENOMEM;
        while (*p) {
                const char *e = strchr(p, sep);
                size_t len = e ? (size_t) (e - p) : strlen(p);
                if (len > 0) {
                        v[i] = strndup(p, len);
                        if (!v[i]) {
                                for (size_t k = 0; k < i; k++)
                                        free(v[k]);
                                free(v);
                                return -ENOMEM;
                        }
                        i++;
                }
                p += len;
                if (*p)
                        p++;
        }
        *ret = v;
        *ret_n = i;
        return 0;
}

int narinfo_from_path(const struct db_cache *cache, const struct db_path *p, struct narinfo *ret) {
        struct narinfo ni = {};
        char url[128], fh[HASH_STRING_MAX];
        struct signing_secret key;
        int r;

        nar_url(&p->nar, true, url, sizeof url);
        hash_format(p->nar.file_hash, HASH_NIX32, fh);
        ni.store_path = strdup(p->store_path);
        ni.url = strdup(url);
        ni.compression = strdup("zstd");
        ni.file_hash = strdup(fh);
        ni.file_size = p->nar.file_size;
        memcpy(ni.nar_hash, p->nar.nar_hash, SHA256_DIGEST_LEN);
        ni.nar_size = p->nar.nar_size;
        ni.deriver = p->deriver ? strdup(p->deriver) : NULL;
        ni.ca = p->ca ? strdup(p->ca) : NULL;
        if (!ni.store_path || !ni.url || !ni.compression || !ni.file_hash || (p->deriver && !ni.deriver) ||
            (p->ca && !ni.ca)) {
                narinfo_free(&ni);
                return -ENOMEM;
        }
        r = split_words(p->references, ' ', &ni.references, &ni.n_references);
        if (r >= 0)
                r = split_words(p->sigs, '\n', &ni.sigs, &ni.n_sigs);
        if (r >= 0)
                r = signing_secret_parse(cache->secret_key, &key);
        if (r >= 0) {
                r = narinfo_sign(&ni, cache->store_dir, &key);
                signing_secret_wipe(&key);
        }
        if (r < 0) {
                narinfo_free(&ni);
                return r;
        }
        *ret = ni;
        return 0;
}

static int serve_narinfo(struct troved *t, struct httpd_request *req, const struct db_cache *cache,
                         const char *hash) {
        struct db_path p;
        struct narinfo ni;
        char *text;
        size_t len;
        int r;

        text = nicache_get(t->narinfos, cache->id, hash, &len);
        if (text) {
                METRIC_ADD(t, narinfo_hits, 1);
                httpd_add_header(req, "Cache-Control", cache->is_public ? "public, max-age=300" : "private, max-age=300");
                return httpd_reply_take(req, 200, "text/x-nix-narinfo", text, len);
        }
        r = db_path_get(t->db, cache->id, hash, &p);
        if (r < 0)
                return r;
        if (r == 0) {
                METRIC_ADD(t, narinfo_misses, 1);
                return httpd_reply_error(req, 404, "no such path in cache '%s'", cache->name);
        }
        r = narinfo_from_path(cache, &p, &ni);
        db_path_free(&p);
        if (r < 0)
                return r;
        r = narinfo_render(&ni, &text);
        narinfo_free(&ni);
        if (r < 0)
                return r;
        nicache_put(t->narinfos, cache->id, hash, text, strlen(text));
        METRIC_ADD(t, narinfo_hits, 1);
        httpd_add_header(req, "Cache-Control", cache->is_public ? "public, max-age=300" : "private, max-age=300");
        return httpd_reply_take(req, 200, "text/x-nix-narinfo", text, strlen(text));
}

/* ---- serving NARs from chunk frames ---- */

struct nar_stream {
        struct troved *t;
        struct db_nar_chunk *chunks;
        size_t n_chunks;
        size_t idx;             /* next chunk to load */
        bool decompress;        /* serve plain NAR bytes instead of frames */
        struct chunkcodec *codec;
        struct buf frame;
        uint8_t *data;          /* decoded chunk (decompress mode) */
        const uint8_t *cur;     /* current piece being served */
        size_t cur_len, cur_pos;
        uint64_t skip;          /* bytes of the first chunk to skip (Range) */
        uint64_t left;          /* bytes still to serve */
        /* Recompression (a NAR asked for by the compressed name a client
         * uploaded it under): decoded chunks go through this compressor. */
        struct compressor *recompress;
        struct buf pending;
        bool recompress_done;
};

static void nar_stream_free(void *p) {
        struct nar_stream *s = p;
        if (!s)
                return;
        free(s->chunks);
        chunkcodec_free(s->codec);
        buf_free(&s->frame);
        free(s->data);
        compressor_free(s->recompress);
        buf_free(&s->pending);
        free(s);
}

static int pending_sink(void *ud, const void *p, size_t n) {
        return buf_append(ud, p, n);
}

static int nar_stream_load(struct nar_stream *s) {
        const struct db_nar_chunk *c = &s->chunks[s->idx];
        int r;

        r = troved_store_get(s->t, c->id, &s->frame);
        if (r < 0)
                return log_error_errno(r, "chunk of a served NAR is unreadable: %s", strerror(-r));
        if (s->decompress) {
                size_t n;
                r = chunkcodec_decode(s->codec, s->frame.data, s->frame.len, c->id, c->length, s->data,
                                      c->length, &n);
                if (r < 0 || n != c->length)
                        return log_error_errno(r < 0 ? r : -EBADMSG, "stored chunk does not verify");
                s->cur = s->data;
                s->cur_len = n;
                if (s->recompress) {
                        buf_reset(&s->pending);
                        r = compressor_feed(s->recompress, s->data, n);
                        if (r < 0)
                                return r;
                        s->cur = s->pending.data;
                        s->cur_len = s->pending.len;
                }
        } else {
                s->cur = s->frame.data;
                s->cur_len = s->frame.len;
        }
        s->cur_pos = 0;
        if (s->skip) {
                s->cur_pos = (size_t) MIN(s->skip, (uint64_t) s->cur_len);
                s->skip -= s->cur_pos;
        }
        s->idx++;
        return 0;
}

static ssize_t nar_stream_read(void *ud, uint64_t pos, char *out, size_t max) {
        struct nar_stream *s = ud;
        size_t done = 0;

        while (done < max && s->left > 0) {
                size_t k;
                if (s->cur_pos >= s->cur_len) {
                        if (s->idx < s->n_chunks) {
                                if (nar_stream_load(s) < 0)
                                        return done ? (ssize_t) done : -EIO;
                        } else if (s->recompress && !s->recompress_done) {
                                buf_reset(&s->pending);
                                if (compressor_finish(s->recompress) < 0)
                                        return done ? (ssize_t) done : -EIO;
                                s->recompress_done = true;
                                s->cur = s->pending.data;
                                s->cur_len = s->pending.len;
                                s->cur_pos = 0;
                        } else {
                                break; /* the end */
                        }
                        continue;
                }
                k = MIN(max - done, s->cur_len - s->cur_pos);
                k = (size_t) MIN((uint64_t) k, s->left);
                memcpy(out + done, s->cur + s->cur_pos, k);
                s->cur_pos += k;
                s->left -= k;
                done += k;
        }
        METRIC_ADD(s->t, bytes_out, done);
        return (ssize_t) done;
}

/* A NAR is served only if all its chunks are stored: checked before the
 * first byte, so a client never gets a truncated body with a 200. */
static int check_chunks_stored(struct troved *t, const struct db_nar_chunk *chunks, size_t n) {
        for (size_t i = 0; i < n; i++) {
                uint64_t size;
                int r = chunkstore_exists(t->store, chunks[i].id, &size);
                if (r < 0)
                        return r;
                if (r == 0) {
                        char hex[2 * SHA256_DIGEST_LEN + 1];
                        hex_encode(chunks[i].id, SHA256_DIGEST_LEN, hex);
                        log_error("chunk %s of a NAR is missing from the chunk store", hex);
                        return -ENODATA;
                }
        }
        return 0;
}

/* Range: "bytes=A-B", "bytes=A-" or "bytes=-N"; one range only. */
static int parse_range(const char *h, uint64_t size, uint64_t *ret_start, uint64_t *ret_end) {
        uint64_t a = 0, b = 0;
        bool has_a = false, has_b = false;
        const char *p;

        if (strncmp(h, "bytes=", 6) != 0)
                return -EINVAL;
        p = h + 6;
        for (; *p >= '0' && *p <= '9'; p++) {
                if (a > (UINT64_MAX - 9) / 10)
                        return -EINVAL;
                a = a * 10 + (uint64_t) (*p - '0');
                has_a = true;
        }
        if (*p++ != '-')
                return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
                if (b > (UINT64_MAX - 9) / 10)
                        return -EINVAL;
                b = b * 10 + (uint64_t) (*p - '0');
                has_b = true;
        }
        if (*p)
                return -EINVAL; /* multiple ranges are not supported */
        if (!has_a && !has_b)
                return -EINVAL;
        if (!has_a) {
                if (b == 0)
                        return -ERANGE;
                a = b >= size ? 0 : size - b;
                b = size - 1;
        } else if (!has_b || b >= size) {
                b = size - 1;
        }
        if (a >= size || a > b)
                return -ERANGE;
        *ret_start = a;
        *ret_end = b;
        return 0;
}

static int serve_nar(struct troved *t, struct httpd_request *req, const struct db_cache *cache, const char *file) {
        uint8_t nar_hash[SHA256_DIGEST_LEN];
        struct db_nar nar;
        struct nar_stream *s;
        bool compressed;
        const char *range;
        uint64_t start = 0, end = 0, total;
        unsigned status = 200;
        enum compression recompress = COMPRESSION_NONE;
        int64_t upload_nar;
        int r;

        /* A name a client uploaded under (`nix copy --to` keeps the narinfo
         * it wrote in its own cache, so it asks for that name later): the
         * NAR is handed back in the compression the name says. */
        r = db_upload_get(t->db, cache->id, file, &upload_nar);
        if (r < 0)
                return r;
        if (r > 0) {
                const char *ext = strstr(file, ".nar");
                r = db_nar_get(t->db, upload_nar, &nar);
                if (r < 0)
                        return r;
                compressed = ext && streq(ext, ".nar.zst");
                if (ext && streq(ext, ".nar.xz"))
                        recompress = COMPRESSION_XZ;
                else if (ext && streq(ext, ".nar.bz2"))
                        recompress = COMPRESSION_BZIP2;
                r = 1;
        } else {
                /* <nix32 NAR hash>.nar or .nar.zst */
                if (strlen(file) < HASH_NIX32_LEN + 4 || strncmp(file + HASH_NIX32_LEN, ".nar", 4) != 0)
                        return httpd_reply_error(req, 404, "no such NAR");
                if (streq(file + HASH_NIX32_LEN + 4, ".zst"))
                        compressed = true;
                else if (file[HASH_NIX32_LEN + 4] == 0)
                        compressed = false;
                else
                        return httpd_reply_error(req, 404, "no such NAR");
                if (nix32_decode(file, HASH_NIX32_LEN, nar_hash, SHA256_DIGEST_LEN) < 0)
                        return httpd_reply_error(req, 404, "no such NAR");
                r = db_nar_find(t->db, nar_hash, &nar);
                if (r < 0)
                        return r;
        }
        /* Only NARs of paths in this cache (or uploaded to it) are served. */
        if (r > 0)
                r = db_nar_in_cache(t->db, cache->id, nar.id);
        if (r < 0)
                return r;
        if (r == 0)
                return httpd_reply_error(req, 404, "no such NAR");

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->t = t;
        s->decompress = !compressed;
        buf_init(&s->frame, chunkcodec_bound(CHUNK_SIZE_MAX));
        r = db_nar_chunks(t->db, nar.id, &s->chunks, &s->n_chunks);
        if (r < 0)
                goto fail;
        if (s->n_chunks != nar.n_chunks) {
                r = -EIO;
                goto fail;
        }
        r = check_chunks_stored(t, s->chunks, s->n_chunks);
        if (r < 0) {
                nar_stream_free(s);
                return httpd_reply_error(req, r == -ENODATA ? 503 : 500, "NAR is not fully stored: %s",
                                        strerror(-r));
        }
        total = compressed ? nar.file_size : nar.nar_size;
        s->left = total;
        if (!compressed) {
                uint32_t maxlen = 0;
                for (size_t i = 0; i < s->n_chunks; i++)
                        maxlen = MAX(maxlen, s->chunks[i].length);
                r = chunkcodec_new(t->cfg.compression_level, &s->codec);
                if (r < 0)
                        goto fail;
                s->data = malloc(maxlen ? maxlen : 1);
                if (!s->data) {
                        r = -ENOMEM;
                        goto fail;
                }
                if (recompress != COMPRESSION_NONE) {
                        buf_init(&s->pending, (size_t) 64 << 20);
                        r = compressor_new(recompress, 0, pending_sink, &s->pending, &s->recompress);
                        if (r < 0)
                                goto fail;
                        s->left = UINT64_MAX; /* length unknown: chunked */
                        goto reply;
                }
                httpd_add_header(req, "Accept-Ranges", "bytes");
                range = httpd_request_header(req, "Range");
                if (range && total > 0) {
                        char cr[96];
                        size_t ci = 0, lo = 0, hi = s->n_chunks;
                        r = parse_range(range, total, &start, &end);
                        if (r == -ERANGE) {
                                snprintf(cr, sizeof cr, "bytes */%" PRIu64, total);
                                httpd_add_header(req, "Content-Range", cr);
                                nar_stream_free(s);
                                return httpd_reply_error(req, 416, "range not satisfiable");
                        }
                        if (r < 0) {
                                nar_stream_free(s);
                                return httpd_reply_error(req, 400, "unsupported Range header");
                        }
                        /* The chunk holding start. */
                        while (lo < hi) {
                                size_t mid = lo + (hi - lo) / 2;
                                if (s->chunks[mid].nar_offset <= start)
                                        lo = mid + 1;
                                else
                                        hi = mid;
                        }
                        ci = lo - 1;
                        s->idx = ci;
                        s->skip = start - s->chunks[ci].nar_offset;
                        s->left = end - start + 1;
                        snprintf(cr, sizeof cr, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, start, end, total);
                        httpd_add_header(req, "Content-Range", cr);
                        status = 206;
                }
        }
reply:
        httpd_add_header(req, "Cache-Control",
                        cache->is_public ? "public, max-age=31536000, immutable" : "private, max-age=31536000, immutable");
        return httpd_reply_stream(req, status, compressed ? "application/zstd" : "application/x-nix-nar", s->left,
                                 nar_stream_read, s, nar_stream_free);
fail:
        nar_stream_free(s);
        return r;
}

/* ---- uploads from `nix copy --to http://...` ---- */

struct nar_upload {
        struct troved *t;
        struct db_cache cache;
        char file[128];
        struct ingest *ingest;
        struct decompressor *dec;
        struct sha256 body_sha;     /* of the bytes as sent (the file hash in the name) */
        bool check_name_hash;
        uint8_t name_hash[SHA256_DIGEST_LEN];
};

static void nar_upload_free(void *p) {
        struct nar_upload *u = p;
        if (!u)
                return;
        db_cache_free(&u->cache);
        ingest_free(u->ingest);
        decompressor_free(u->dec);
        sha256_done(&u->body_sha);
        free(u);
}

static int nar_upload_sink(void *ud, const void *p, size_t n) {
        struct nar_upload *u = ud;
        return ingest_feed_nar(u->ingest, p, n);
}

static int reply_ingest_error(struct httpd_request *req, struct ingest *in, int r) {
        const char *msg = ingest_error(in);
        if (r == -EBADMSG || r == -EFBIG || r == -E2BIG || r == -EINVAL)
                return httpd_reply_error(req, r == -EBADMSG || r == -EINVAL ? 400 : 413, "%s",
                                        msg[0] ? msg : strerror(-r));
        return r;
}

static int nar_upload_body(struct httpd_request *req, const void *p, size_t n) {
        struct nar_upload *u = httpd_request_state(req);
        int r;

        METRIC_ADD(u->t, bytes_in, n);
        r = sha256_update(&u->body_sha, p, n);
        if (r < 0)
                return r;
        r = decompressor_feed(u->dec, p, n);
        if (r == -EBADMSG && !ingest_error(u->ingest)[0])
                return httpd_reply_error(req, 400, "corrupt compressed NAR upload"), -EBADMSG;
        if (r < 0)
                return reply_ingest_error(req, u->ingest, r);
        return 0;
}

static int nar_upload_end(struct httpd_request *req) {
        struct nar_upload *u = httpd_request_state(req);
        struct ingest_result res;
        uint8_t h[SHA256_DIGEST_LEN];
        int64_t nar_id;
        int r;

        r = decompressor_finish(u->dec);
        if (r < 0)
                return httpd_reply_error(req, 400, "truncated compressed NAR upload");
        r = sha256_final(&u->body_sha, h);
        if (r < 0)
                return r;
        if (u->check_name_hash && memcmp(h, u->name_hash, SHA256_DIGEST_LEN) != 0)
                return httpd_reply_error(req, 400, "uploaded file does not match the hash in its name '%s'",
                                        u->file);
        r = ingest_finish(u->ingest, &res);
        if (r < 0)
                return reply_ingest_error(req, u->ingest, r);
        r = ingest_commit(u->ingest, &nar_id);
        if (r < 0)
                return r;
        r = db_upload_put(u->t->db, u->cache.id, u->file, nar_id);
        if (r < 0)
                return r;
        log_debug("ingested %s into cache %s: %" PRIu64 " bytes, %" PRIu64 " new chunks, %" PRIu64 " deduplicated",
                  u->file, u->cache.name, res.nar_size, res.new_chunks, res.dedup_chunks);
        return httpd_reply_buf(req, 200, "text/plain", "", 0);
}

static int put_nar(struct troved *t, struct httpd_request *req, struct db_cache *cache, const char *file) {
        struct nar_upload *u;
        enum compression comp = COMPRESSION_NONE;
        const char *ext;
        int r;

        /* <filehash>.nar[.xz|.zst|.bz2] as Nix names them. */
        ext = strstr(file, ".nar");
        if (!ext || ext == file || strlen(file) >= sizeof u->file)
                return httpd_reply_error(req, 400, "bad NAR file name '%s'", file);
        if (streq(ext, ".nar"))
                comp = COMPRESSION_NONE;
        else if (streq(ext, ".nar.xz"))
                comp = COMPRESSION_XZ;
        else if (streq(ext, ".nar.zst"))
                comp = COMPRESSION_ZSTD;
        else if (streq(ext, ".nar.bz2"))
                comp = COMPRESSION_BZIP2;
        else
                return httpd_reply_error(req, 415, "unsupported NAR compression in '%s'", file);
        for (const char *p = file; p < ext; p++)
                if (!nix32_is_char(*p))
                        return httpd_reply_error(req, 400, "bad NAR file name '%s'", file);

        u = calloc(1, sizeof *u);
        if (!u)
                return -ENOMEM;
        u->t = t;
        u->cache = *cache;
        *cache = (struct db_cache){};
        snprintf(u->file, sizeof u->file, "%s", file);
        if (ext - file == HASH_NIX32_LEN &&
            nix32_decode(file, HASH_NIX32_LEN, u->name_hash, SHA256_DIGEST_LEN) >= 0)
                u->check_name_hash = true;
        r = sha256_init(&u->body_sha);
        if (r >= 0)
                r = ingest_new(t, &u->ingest);
        if (r >= 0)
                r = decompressor_new(comp, nar_upload_sink, u, &u->dec);
        if (r < 0) {
                nar_upload_free(u);
                return r;
        }
        httpd_request_set_state(req, u, nar_upload_free);
        /* Compressed uploads may be larger than the NAR; bound the body by
         * the NAR limit plus slack, the NAR itself inside ingest. */
        httpd_request_stream_body(req, t->cfg.max_nar_size + t->cfg.max_nar_size / 8 + 65536, nar_upload_body,
                                 nar_upload_end);
        return 0;
}

struct narinfo_upload {
        struct troved *t;
        struct db_cache cache;
        char hash[NARINFO_HASH_LEN + 1];
};

static void narinfo_upload_free(void *p) {
        struct narinfo_upload *u = p;
        if (!u)
                return;
        db_cache_free(&u->cache);
        free(u);
}

static int join_refs(const struct narinfo *ni, char **ret) {
        struct buf b = BUF_INIT((size_t) NARINFO_MAX_SIZE);
        int r = 0;
        for (size_t i = 0; i < ni->n_references && r >= 0; i++)
                r = buf_printf(&b, "%s%s", i ? " " : "", ni->references[i]);
        if (r >= 0)
                r = buf_steal(&b, ret, NULL);
        buf_free(&b);
        return r;
}

static int join_sigs(char *const *sigs, size_t n, char **ret) {
        struct buf b = BUF_INIT((size_t) NARINFO_MAX_SIZE);
        int r = 0;
        for (size_t i = 0; i < n && r >= 0; i++)
                r = buf_printf(&b, "%s%s", i ? "\n" : "", sigs[i]);
        if (r >= 0)
                r = buf_steal(&b, ret, NULL);
        buf_free(&b);
        return r;
}

int path_commit(struct troved *t, struct httpd_request *req, const struct db_cache *cache,
                const struct narinfo *ni, int64_t nar_id) {
        struct db_path p = {};
        struct storepath sp;
        int r;

        r = storepath_parse(cache->store_dir, ni->store_path, &sp);
        if (r < 0)
                return httpd_reply_error(req, 400, "bad store path '%s'", ni->store_path);
        p.store_path = ni->store_path;
        p.deriver = ni->deriver;
        p.ca = ni->ca;
        r = join_refs(ni, &p.references);
        if (r < 0)
                return r;
        r = join_sigs(ni->sigs, ni->n_sigs, &p.sigs);
        if (r < 0) {
                free(p.references);
                return r;
        }
        r = db_path_insert(t->db, cache->id, sp.hash, &p, nar_id);
        free(p.references);
        free(p.sigs);
        if (r == -EEXIST)
                return httpd_reply_error(req, 409, "%s is already in cache '%s' with different contents",
                                        ni->store_path, cache->name);
        if (r < 0)
                return r;
        /* New signatures may have been merged into an existing row. */
        nicache_forget(t->narinfos, cache->id, sp.hash);
        if (r > 0)
                METRIC_ADD(t, paths_committed, 1);
        return 0;
}

static int narinfo_upload_end(struct httpd_request *req, const void *body, size_t n) {
        struct narinfo_upload *u = httpd_request_state(req);
        struct troved *t = u->t;
        struct trove_error err = {};
        struct narinfo ni = {};
        struct db_nar nar;
        struct storepath sp;
        int64_t nar_id = 0;
        const char *slash;
        int r;

        METRIC_ADD(t, bytes_in, n);
        r = narinfo_parse(body, n, u->cache.store_dir, &ni, &err);
        if (r < 0)
                return httpd_reply_error(req, 400, "invalid narinfo: %s", err.msg);
        r = storepath_parse(u->cache.store_dir, ni.store_path, &sp);
        if (r < 0 || !streq(sp.hash, u->hash)) {
                narinfo_free(&ni);
                return httpd_reply_error(req, 400, "narinfo StorePath does not match its name %s.narinfo", u->hash);
        }
        /* The NAR must be here: uploaded under the narinfo's URL, or known
         * by its hash. Either way the server computed NarHash and NarSize
         * itself, and they must be what the narinfo claims. */
        if (ni.url && (slash = strrchr(ni.url, '/')) && startswith(ni.url, "nar/")) {
                r = db_upload_get(t->db, u->cache.id, slash + 1, &nar_id);
                if (r < 0)
                        goto out;
        }
        if (nar_id > 0) {
                r = db_nar_get(t->db, nar_id, &nar);
                if (r < 0)
                        goto out;
        } else {
                r = db_nar_find(t->db, ni.nar_hash, &nar);
                if (r < 0)
                        goto out;
                if (r == 0) {
                        r = httpd_reply_error(req, 409, "the NAR of %s has not been uploaded", ni.store_path);
                        goto out;
                }
        }
        if (memcmp(nar.nar_hash, ni.nar_hash, SHA256_DIGEST_LEN) != 0 || nar.nar_size != ni.nar_size) {
                char got[HASH_STRING_MAX], want[HASH_STRING_MAX];
                hash_format(nar.nar_hash, HASH_NIX32, got);
                hash_format(ni.nar_hash, HASH_NIX32, want);
                r = httpd_reply_error(req, 400,
                                     "NAR hash or size mismatch for %s: narinfo says %s (%" PRIu64
                                     " bytes), the uploaded NAR is %s (%" PRIu64 " bytes)",
                                     ni.store_path, want, ni.nar_size, got, nar.nar_size);
                goto out;
        }
        r = path_commit(t, req, &u->cache, &ni, nar.id);
        if (r < 0 || httpd_replied(req))
                goto out;
        r = httpd_reply_buf(req, 200, "text/plain", "", 0);
out:
        narinfo_free(&ni);
        return r;
}

/* ---- the Nix binary cache routes ---- */

static int nix_cache_info(struct httpd_request *req, const struct db_cache *cache) {
        char text[512];
        int n = snprintf(text, sizeof text, "StoreDir: %s\nWantMassQuery: 1\nPriority: %d\n", cache->store_dir,
                         cache->priority);
        return httpd_reply_buf(req, 200, "text/x-nix-cache-info", text, (size_t) n);
}

static int serve_listing(struct troved *t, struct httpd_request *req, const struct db_cache *cache,
                         const char *hash) {
        struct db_path p;
        char *ls;
        int r;

        r = db_path_get(t->db, cache->id, hash, &p);
        if (r < 0)
                return r;
        if (r == 0)
                return httpd_reply_error(req, 404, "no such path in cache '%s'", cache->name);
        r = db_nar_listing(t->db, p.nar.id, &ls);
        db_path_free(&p);
        if (r < 0)
                return r;
        return httpd_reply_take(req, 200, "application/json", ls, strlen(ls));
}

static int discard_body(struct httpd_request *req, const void *body, size_t n) {
        return httpd_reply_buf(req, 200, "text/plain", "", 0);
}

static int head_nar(struct troved *t, struct httpd_request *req, const struct db_cache *cache, const char *file) {
        int64_t nar_id;
        int r = db_upload_get(t->db, cache->id, file, &nar_id);
        if (r < 0)
                return r;
        if (r > 0)
                return httpd_reply_buf(req, 200, "application/octet-stream", "", 0);
        return serve_nar(t, req, cache, file);
}

static int route_cache(struct troved *t, struct httpd_request *req, const struct auth *a, const char *name,
                       const char *rest) {
        const char *method = httpd_request_method(req);
        bool get = streq(method, "GET") || streq(method, "HEAD");
        bool put = streq(method, "PUT");
        struct db_cache cache;
        enum token_perm perm = put ? TOKEN_PERM_PUSH : TOKEN_PERM_PULL;
        size_t rl = strlen(rest);
        int r;

        if (!get && !put)
                return httpd_reply_error(req, 405, "method %s not allowed here", method);
        r = cache_open(t, req, a, name, perm, &cache);
        if (r < 0)
                return r;

        if (streq(rest, "nix-cache-info") && get) {
                r = nix_cache_info(req, &cache);
        } else if (rl == NARINFO_HASH_LEN + 8 && streq(rest + NARINFO_HASH_LEN, ".narinfo") &&
                   storepath_is_hash_part(rest, NARINFO_HASH_LEN)) {
                char hash[NARINFO_HASH_LEN + 1];
                memcpy(hash, rest, NARINFO_HASH_LEN);
                hash[NARINFO_HASH_LEN] = 0;
                if (get) {
                        r = serve_narinfo(t, req, &cache, hash);
                } else {
                        struct narinfo_upload *u = calloc(1, sizeof *u);
                        if (!u) {
                                r = -ENOMEM;
                        } else {
                                u->t = t;
                                u->cache = cache;
                                cache = (struct db_cache){};
                                memcpy(u->hash, hash, sizeof u->hash);
                                httpd_request_set_state(req, u, narinfo_upload_free);
                                httpd_request_collect_body(req, NARINFO_MAX_SIZE, narinfo_upload_end);
                                r = 0;
                        }
                }
        } else if (rl == NARINFO_HASH_LEN + 3 && streq(rest + NARINFO_HASH_LEN, ".ls") &&
                   storepath_is_hash_part(rest, NARINFO_HASH_LEN)) {
                char hash[NARINFO_HASH_LEN + 1];
                memcpy(hash, rest, NARINFO_HASH_LEN);
                hash[NARINFO_HASH_LEN] = 0;
                if (get) {
                        r = serve_listing(t, req, &cache, hash);
                } else {
                        /* The listing is computed from the NAR itself; what the
                         * client sends is not needed. */
                        httpd_request_collect_body(req, 64u * 1024 * 1024, discard_body);
                        r = 0;
                }
        } else if (startswith(rest, "nar/") && !strchr(rest + 4, '/')) {
                if (put)
                        r = put_nar(t, req, &cache, rest + 4);
                else if (httpd_request_is_head(req))
                        r = head_nar(t, req, &cache, rest + 4);
                else
                        r = serve_nar(t, req, &cache, rest + 4);
        } else if (startswith(rest, "log/") && put) {
                /* Build logs are not kept. */
                httpd_request_collect_body(req, 64u * 1024 * 1024, discard_body);
                r = 0;
        } else {
                r = httpd_reply_error(req, 404, "not found");
        }
        db_cache_free(&cache);
        return r;
}

int troved_route(struct httpd_request *req, void *userdata) {
        struct troved *t = userdata;
        const char *path = httpd_request_path(req);
        const char *slash;
        struct auth a;
        char name[65];
        int r;

        METRIC_ADD(t, requests, 1);
        if (streq(path, "/health") || streq(path, "/_api/v1/health"))
                return api_health(t, req);
        if (streq(path, "/metrics"))
                return api_metrics(t, req);
        if (strstr(path, "/../") || strstr(path, "/./") || strstr(path, "//"))
                return httpd_reply_error(req, 400, "bad path");

        r = auth_parse(t, req, &a);
        if (r < 0)
                return r;
        if (startswith(path, "/_api/v1/"))
                r = api_route(t, req, &a, path + strlen("/_api/v1/"));
        else if (path[0] == '/' && (slash = strchr(path + 1, '/'))) {
                size_t n = (size_t) (slash - path - 1);
                if (!cache_name_valid(path + 1, n))
                        r = httpd_reply_error(req, 400, "bad cache name");
                else {
                        memcpy(name, path + 1, n);
                        name[n] = 0;
                        r = route_cache(t, req, &a, name, slash + 1);
                }
        } else
                r = httpd_reply_error(req, 404, "not found");
        auth_free(&a);
        return r;
}
