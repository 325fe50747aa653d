/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nix.c - the Nix binary-cache protocol, per cache: nix-cache-info,
 * narinfo (served signed, and uploaded by `nix copy --to`), the .ls
 * listing, and NARs (served from chunk frames; uploads ingested). The
 * route table (routes.c) has already authorized every request here.
 */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "commit.h"
#include "ingest.h"
#include "lastuse.h"
#include "nix.h"
#include "storage.h"
#include "upstream.h"
#include "trove/chunkcodec.h"
#include "trove/decompress.h"
#include "trove/hash.h"
#include "trove/httprange.h"
#include "trove/narinfo.h"
#include "trove/nix32.h"
#include "trove/storepath.h"

/* A narinfo not in memory: the database, or an upstream cache (which may
 * take up to upstream-timeout); runs on a worker thread. */
static int narinfo_lookup(struct troved_request *rq) {
        struct troved *t = rq->t;
        struct httpd_request *req = rq->http;
        const struct db_cache *cache = &rq->cache;
        const char *hash = rq->hash;
        uint64_t epoch = nicache_epoch(t->narinfos, cache->id, hash);
        struct db_path p;
        struct narinfo ni;
        char *text;
        int r;

        r = upstream_path_get(t, req, cache, hash, &p);
        if (r < 0)
                return r;
        if (r == 0) {
                METRIC_ADD(t, narinfo_misses, 1);
                nicache_put_since(t->narinfos, epoch, cache->id, hash, "", 0);
                return httpd_reply_error(req, 404, "no such path in cache '%s'", cache->name);
        }
        r = commit_narinfo(cache, &p, &ni);
        db_path_free(&p);
        if (r < 0)
                return r;
        r = narinfo_render(&ni, &text);
        narinfo_free(&ni);
        if (r < 0)
                return r;
        nicache_put_since(t->narinfos, epoch, cache->id, hash, text, strlen(text));
        lastuse_mark_path(t->lastuse, cache->id, hash);
        METRIC_ADD(t, narinfo_hits, 1);
        httpd_add_header(req, "Cache-Control", cache->is_public ? "public, max-age=300" : "private, max-age=300");
        return httpd_reply_take(req, 200, "text/x-nix-narinfo", text, strlen(text));
}

int nix_narinfo_get(struct troved_request *rq) {
        struct troved *t = rq->t;
        struct httpd_request *req = rq->http;
        const struct db_cache *cache = &rq->cache;
        char *text;
        size_t len;

        /* Answers are kept for cache_ttl seconds, found or not (an empty
         * text is "not found"): a path committed through this server drops
         * its entry at once; one committed through another instance shows
         * within the TTL. Those are answered here, on the event loop. */
        text = nicache_get(t->narinfos, cache->id, rq->hash, &len);
        if (text && len == 0) {
                free(text);
                METRIC_ADD(t, narinfo_misses, 1);
                return httpd_reply_error(req, 404, "no such path in cache '%s'", cache->name);
        }
        if (text) {
                lastuse_mark_path(t->lastuse, cache->id, rq->hash);
                METRIC_ADD(t, narinfo_hits, 1);
                httpd_add_header(req, "Cache-Control", cache->is_public ? "public, max-age=300" : "private, max-age=300");
                return httpd_reply_take(req, 200, "text/x-nix-narinfo", text, len);
        }
        troved_defer(rq, narinfo_lookup);
        return 0;
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

        if (!s->decompress)
                /* A plain frame as stored; a delta decoded with its base, a
                 * recompressed object decoded, and compressed alone: the
                 * frame FileHash and FileSize were computed over. */
                r = storage_served_frame(s->t, s->codec, c->id, c->length, &s->frame, s->data);
        else
                r = storage_get(s->t, c->id, 0, &s->frame);
        if (r < 0)
                return log_error_errno(r, "chunk of a served NAR is unreadable: %s", strerror(-r));
        if (s->decompress) {
                size_t n = c->length;
                r = storage_decode(s->t, s->codec, c->id, c->length, &s->frame, s->data);
                if (r < 0)
                        return log_error_errno(r, "stored chunk does not verify");
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

/* A NAR is served only if all the chunks the response covers are stored:
 * checked before the first byte, so a client never gets a truncated body
 * with a 200. A Range request checks only the chunks of its range. */
int nix_nar_get(struct troved_request *rq) {
        struct troved *t = rq->t;
        struct httpd_request *req = rq->http;
        const struct db_cache *cache = &rq->cache;
        const char *file = rq->arg;
        size_t first = 0, last = 0;
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
                /* `nix copy --to` asks HEAD before uploading: that it is
                 * here is all it needs. */
                if (httpd_request_is_head(req))
                        return httpd_reply_buf(req, 200, "application/octet-stream", "", 0);
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
        lastuse_mark_nar(t->lastuse, cache->id, nar.id);

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->t = t;
        s->decompress = !compressed;
        buf_init(&s->frame, chunkcodec_bound(CHUNK_SIZE_MAX));
        r = db_nar_chunks(t->db, nar.id, 0, &s->chunks, &s->n_chunks);
        if (r < 0)
                goto fail;
        if (s->n_chunks != nar.n_chunks) {
                r = -EIO;
                goto fail;
        }
        last = s->n_chunks;
        total = compressed ? nar.file_size : nar.nar_size;
        s->left = total;
        {
                /* Decoding needs them, and so does a compressed NAR with
                 * delta chunks. */
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
        }
        if (!compressed) {
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
                        r = httprange_parse(range, total, &start, &end);
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
                        first = ci;
                        for (last = ci + 1; last < s->n_chunks && s->chunks[last].nar_offset <= end; last++)
                                ;
                        s->skip = start - s->chunks[ci].nar_offset;
                        s->left = end - start + 1;
                        snprintf(cr, sizeof cr, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, start, end, total);
                        httpd_add_header(req, "Content-Range", cr);
                        status = 206;
                }
        }
reply:
        /* The chunk rows are the truth: no chunk store question per chunk
         * before the first byte. The first chunk is fetched now, so a NAR
         * whose store is unreachable or whose first object is gone gets a
         * clean error status; an object missing further on is a logged
         * server error and a cut connection (nar_stream_read), as for any
         * failure after the status line. */
        if (first < last) {
                r = nar_stream_load(s);
                if (r < 0) {
                        unsigned st = r == -ENOENT || httpd_status_from_errno(r) == 503 ? 503 : 500;
                        nar_stream_free(s);
                        return httpd_reply_error(req, st, "NAR is not fully stored: %s", strerror(-r));
                }
        }
        troved_cache_immutable(rq);
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
        struct nar_upload *u = troved_request_of(req)->priv;
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
        struct nar_upload *u = troved_request_of(req)->priv;
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

int nix_nar_put(struct troved_request *rq) {
        struct troved *t = rq->t;
        struct httpd_request *req = rq->http;
        struct db_cache *cache = &rq->cache;
        const char *file = rq->arg;
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
        if (r >= 0) {
                ingest_set_cache(u->ingest, u->cache.id);
                r = decompressor_new(comp, nar_upload_sink, u, &u->dec);
        }
        if (r < 0) {
                nar_upload_free(u);
                return r;
        }
        troved_request_set_priv(rq, u, nar_upload_free);
        troved_stream_body(rq, nar_upload_body, nar_upload_end);
        return 0;
}

int nix_narinfo_put(struct troved_request *rq, const void *body, size_t n) {
        struct httpd_request *req = rq->http;
        struct troved *t = rq->t;
        struct trove_error err = {};
        struct narinfo ni = {};
        struct db_nar nar;
        struct storepath sp;
        int64_t nar_id = 0;
        const char *slash;
        int r;

        r = narinfo_parse(body, n, rq->cache.store_dir, &ni, &err);
        if (r < 0)
                return httpd_reply_error(req, 400, "invalid narinfo: %s", err.msg);
        r = storepath_parse(rq->cache.store_dir, ni.store_path, &sp);
        if (r < 0 || !streq(sp.hash, rq->hash)) {
                narinfo_free(&ni);
                return httpd_reply_error(req, 400, "narinfo StorePath does not match its name %s.narinfo", rq->hash);
        }
        /* The NAR must be here: uploaded to this cache under the narinfo's
         * URL, or held by a cache this caller may pull (content of other
         * caches is, for this caller, content the server does not have).
         * Either way the server computed NarHash and NarSize itself, and
         * they must be what the narinfo claims. */
        if (ni.url && (slash = strrchr(ni.url, '/')) && startswith(ni.url, "nar/")) {
                r = db_upload_get(t->db, rq->cache.id, slash + 1, &nar_id);
                if (r < 0)
                        goto out;
        }
        if (nar_id > 0) {
                r = db_nar_get(t->db, nar_id, &nar);
                if (r < 0)
                        goto out;
        } else {
                const int64_t *caches;
                size_t n_caches;
                r = auth_pullable_caches(t, &rq->auth, &caches, &n_caches);
                if (r < 0)
                        goto out;
                r = db_nar_find_visible(t->db, ni.nar_hash, caches, n_caches, &nar);
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
        r = commit_path(t, req, &rq->cache, &ni, nar.id);
        if (r < 0 || httpd_replied(req))
                goto out;
        r = httpd_reply_buf(req, 200, "text/plain", "", 0);
out:
        narinfo_free(&ni);
        return r;
}

/* ---- the Nix binary cache routes ---- */

int nix_cache_info(struct troved_request *rq) {
        char *text = NULL;
        int n;

        /* storeDir is checked when a cache is made (an absolute path without
         * control characters, bounded); the text is built to its length. */
        n = asprintf(&text, "StoreDir: %s\nWantMassQuery: 1\nPriority: %d\n", rq->cache.store_dir,
                     rq->cache.priority);
        if (n < 0)
                return -ENOMEM;
        return httpd_reply_take(rq->http, 200, "text/x-nix-cache-info", text, (size_t) n);
}

int nix_listing_get(struct troved_request *rq) {
        struct db_path p;
        char *ls;
        int r;

        r = upstream_path_get(rq->t, rq->http, &rq->cache, rq->hash, &p);
        if (r < 0)
                return r;
        if (r == 0)
                return httpd_reply_error(rq->http, 404, "no such path in cache '%s'", rq->cache.name);
        lastuse_mark_path(rq->t->lastuse, rq->cache.id, rq->hash);
        r = db_nar_listing(rq->t->db, p.nar.id, &ls);
        db_path_free(&p);
        if (r < 0)
                return r;
        return httpd_reply_take(rq->http, 200, "application/json", ls, strlen(ls));
}

/* The listing is computed from the NAR itself, and build logs are not
 * kept: what the client sends is read and dropped. */
int nix_discard_put(struct troved_request *rq) {
        troved_discard_body(rq);
        return 0;
}

