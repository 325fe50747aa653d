/* SPDX-License-Identifier: Apache-2.0 */
#include <bzlib.h>
#include <lzma.h>
#include <zstd.h>

#include "trove/decompress.h"

#define OUT_SIZE (256u * 1024)

struct decompressor {
        enum compression type;
        decompress_sink_fn sink;
        void *userdata;
        uint8_t *out;
        bool ended;
        lzma_stream xz;
        ZSTD_DStream *zstd;
        size_t zstd_hint;   /* 0 once a frame ended exactly */
        bz_stream bz;
        bool bz_init;
};

int compression_from_string(const char *s, enum compression *ret) {
        if (!s || !*s || streq(s, "none"))
                *ret = COMPRESSION_NONE;
        else if (streq(s, "xz"))
                *ret = COMPRESSION_XZ;
        else if (streq(s, "zstd"))
                *ret = COMPRESSION_ZSTD;
        else if (streq(s, "bzip2"))
                *ret = COMPRESSION_BZIP2;
        else
                return -EOPNOTSUPP;
        return 0;
}

const char *compression_to_string(enum compression c) {
        static const char *const names[] = { "none", "xz", "zstd", "bzip2" };
        return (unsigned) c < ELEMENTSOF(names) ? names[c] : "none";
}

const char *compression_extension(enum compression c) {
        static const char *const ext[] = { "", ".xz", ".zst", ".bz2" };
        return (unsigned) c < ELEMENTSOF(ext) ? ext[c] : "";
}

int decompressor_new(enum compression c, decompress_sink_fn sink, void *userdata, struct decompressor **ret) {
        struct decompressor *d = calloc(1, sizeof *d);

        if (!d)
                return -ENOMEM;
        d->type = c;
        d->sink = sink;
        d->userdata = userdata;
        if (c != COMPRESSION_NONE) {
                d->out = malloc(OUT_SIZE);
                if (!d->out) {
                        free(d);
                        return -ENOMEM;
                }
        }
        switch (c) {
        case COMPRESSION_NONE:
                break;
        case COMPRESSION_XZ:
                d->xz = (lzma_stream) LZMA_STREAM_INIT;
                /* Concatenated streams are valid .xz; memory bounded at 1 GiB. */
                if (lzma_stream_decoder(&d->xz, (uint64_t) 1 << 30, LZMA_CONCATENATED) != LZMA_OK) {
                        decompressor_free(d);
                        return -ENOMEM;
                }
                break;
        case COMPRESSION_ZSTD:
                d->zstd = ZSTD_createDStream();
                if (!d->zstd) {
                        decompressor_free(d);
                        return -ENOMEM;
                }
                /* Refuse windows above 128 MiB (zstd's own default limit). */
                ZSTD_DCtx_setParameter(d->zstd, ZSTD_d_windowLogMax, 27);
                d->zstd_hint = 1; /* nothing decoded yet */
                break;
        case COMPRESSION_BZIP2:
                if (BZ2_bzDecompressInit(&d->bz, 0, 0) != BZ_OK) {
                        decompressor_free(d);
                        return -ENOMEM;
                }
                d->bz_init = true;
                break;
        default:
                free(d->out);
                free(d);
                return -EOPNOTSUPP;
        }
        *ret = d;
        return 0;
}

struct decompressor *decompressor_free(struct decompressor *d) {
        if (!d)
                return NULL;
        if (d->type == COMPRESSION_XZ)
                lzma_end(&d->xz);
        ZSTD_freeDStream(d->zstd);
        if (d->bz_init)
                BZ2_bzDecompressEnd(&d->bz);
        free(d->out);
        free(d);
        return NULL;
}

static int feed_xz(struct decompressor *d, const void *p, size_t n, lzma_action action) {
        d->xz.next_in = p;
        d->xz.avail_in = n;
        for (;;) {
                lzma_ret lr;
                int r;

                d->xz.next_out = d->out;
                d->xz.avail_out = OUT_SIZE;
                lr = lzma_code(&d->xz, action);
                if (d->xz.avail_out < OUT_SIZE) {
                        r = d->sink(d->userdata, d->out, OUT_SIZE - d->xz.avail_out);
                        if (r < 0)
                                return r;
                }
                if (lr == LZMA_STREAM_END) {
                        d->ended = true;
                        return d->xz.avail_in ? -EBADMSG : 0;
                }
                if (lr != LZMA_OK)
                        return lr == LZMA_MEM_ERROR || lr == LZMA_MEMLIMIT_ERROR ? -E2BIG : -EBADMSG;
                if (action == LZMA_RUN && d->xz.avail_in == 0 && d->xz.avail_out != 0)
                        return 0;
        }
}

static int feed_zstd(struct decompressor *d, const void *p, size_t n) {
        ZSTD_inBuffer in = { p, n, 0 };

        /* Until the input is used up and the decoder left room in the output
         * (then nothing is pending). The hint is kept from the last call that
         * made progress: 0 there means a frame ended exactly. */
        for (;;) {
                ZSTD_outBuffer out = { d->out, OUT_SIZE, 0 };
                size_t before = in.pos;
                size_t z = ZSTD_decompressStream(d->zstd, &out, &in);
                int r;

                if (ZSTD_isError(z))
                        return -EBADMSG;
                if (in.pos != before || out.pos > 0)
                        d->zstd_hint = z;
                if (out.pos > 0) {
                        r = d->sink(d->userdata, d->out, out.pos);
                        if (r < 0)
                                return r;
                }
                if (in.pos == in.size && out.pos < out.size)
                        return 0;
        }
}

static int feed_bz(struct decompressor *d, const void *p, size_t n) {
        d->bz.next_in = (char *) p;
        d->bz.avail_in = (unsigned) n;
        while (d->bz.avail_in > 0 && !d->ended) {
                int br, r;

                d->bz.next_out = (char *) d->out;
                d->bz.avail_out = OUT_SIZE;
                br = BZ2_bzDecompress(&d->bz);
                if (br != BZ_OK && br != BZ_STREAM_END)
                        return -EBADMSG;
                if (d->bz.avail_out < OUT_SIZE) {
                        r = d->sink(d->userdata, d->out, OUT_SIZE - d->bz.avail_out);
                        if (r < 0)
                                return r;
                }
                if (br == BZ_STREAM_END)
                        d->ended = true;
        }
        return d->bz.avail_in ? -EBADMSG : 0;
}

int decompressor_feed(struct decompressor *d, const void *p, size_t n) {
        if (n == 0)
                return 0;
        switch (d->type) {
        case COMPRESSION_NONE:
                return d->sink(d->userdata, p, n);
        case COMPRESSION_XZ:
                if (d->ended)
                        return -EBADMSG;
                return feed_xz(d, p, n, LZMA_RUN);
        case COMPRESSION_ZSTD:
                return feed_zstd(d, p, n);
        case COMPRESSION_BZIP2:
                if (d->ended)
                        return -EBADMSG;
                while (n > 0) {
                        size_t k = MIN(n, (size_t) 1 << 30);
                        int r = feed_bz(d, p, k);
                        if (r < 0)
                                return r;
                        p = (const uint8_t *) p + k;
                        n -= k;
                }
                return 0;
        }
        return -EOPNOTSUPP;
}

int decompressor_finish(struct decompressor *d) {
        switch (d->type) {
        case COMPRESSION_NONE:
                return 0;
        case COMPRESSION_XZ:
                if (!d->ended) {
                        int r = feed_xz(d, NULL, 0, LZMA_FINISH);
                        if (r < 0)
                                return r;
                }
                return d->ended ? 0 : -EBADMSG;
        case COMPRESSION_ZSTD:
                /* A hint of 0 means the last frame ended exactly. */
                return d->zstd_hint == 0 ? 0 : -EBADMSG;
        case COMPRESSION_BZIP2:
                return d->ended ? 0 : -EBADMSG;
        }
        return -EOPNOTSUPP;
}

struct compressor {
        enum compression type;
        decompress_sink_fn sink;
        void *userdata;
        uint8_t *out;
        lzma_stream xz;
        ZSTD_CStream *zstd;
        bz_stream bz;
        bool bz_init;
};

struct compressor *compressor_free(struct compressor *c) {
        if (!c)
                return NULL;
        if (c->type == COMPRESSION_XZ)
                lzma_end(&c->xz);
        ZSTD_freeCStream(c->zstd);
        if (c->bz_init)
                BZ2_bzCompressEnd(&c->bz);
        free(c->out);
        free(c);
        return NULL;
}

int compressor_new(enum compression type, int level, decompress_sink_fn sink, void *userdata,
                   struct compressor **ret) {
        struct compressor *c = calloc(1, sizeof *c);

        if (!c)
                return -ENOMEM;
        c->type = type;
        c->sink = sink;
        c->userdata = userdata;
        c->out = malloc(OUT_SIZE);
        if (!c->out) {
                free(c);
                return -ENOMEM;
        }
        switch (type) {
        case COMPRESSION_NONE:
                break;
        case COMPRESSION_XZ:
                c->xz = (lzma_stream) LZMA_STREAM_INIT;
                if (lzma_easy_encoder(&c->xz, (uint32_t) (level >= 0 && level <= 9 ? level : 0),
                                      LZMA_CHECK_CRC64) != LZMA_OK) {
                        compressor_free(c);
                        return -ENOMEM;
                }
                break;
        case COMPRESSION_ZSTD:
                c->zstd = ZSTD_createCStream();
                if (!c->zstd || ZSTD_isError(ZSTD_CCtx_setParameter(c->zstd, ZSTD_c_compressionLevel,
                                                                     level > 0 ? level : 1))) {
                        compressor_free(c);
                        return -ENOMEM;
                }
                break;
        case COMPRESSION_BZIP2:
                if (BZ2_bzCompressInit(&c->bz, level >= 1 && level <= 9 ? level : 1, 0, 0) != BZ_OK) {
                        compressor_free(c);
                        return -ENOMEM;
                }
                c->bz_init = true;
                break;
        default:
                compressor_free(c);
                return -EOPNOTSUPP;
        }
        *ret = c;
        return 0;
}

static int compress_step(struct compressor *c, const void *p, size_t n, bool finish) {
        int r;

        switch (c->type) {
        case COMPRESSION_NONE:
                return n ? c->sink(c->userdata, p, n) : 0;
        case COMPRESSION_XZ:
                c->xz.next_in = p;
                c->xz.avail_in = n;
                for (;;) {
                        lzma_ret lr;
                        c->xz.next_out = c->out;
                        c->xz.avail_out = OUT_SIZE;
                        lr = lzma_code(&c->xz, finish ? LZMA_FINISH : LZMA_RUN);
                        if (lr != LZMA_OK && lr != LZMA_STREAM_END)
                                return -EIO;
                        if (c->xz.avail_out < OUT_SIZE) {
                                r = c->sink(c->userdata, c->out, OUT_SIZE - c->xz.avail_out);
                                if (r < 0)
                                        return r;
                        }
                        if (lr == LZMA_STREAM_END || (!finish && c->xz.avail_in == 0 && c->xz.avail_out != 0))
                                return 0;
                }
        case COMPRESSION_ZSTD: {
                ZSTD_inBuffer in = { p, n, 0 };
                for (;;) {
                        ZSTD_outBuffer out = { c->out, OUT_SIZE, 0 };
                        size_t left = ZSTD_compressStream2(c->zstd, &out, &in, finish ? ZSTD_e_end : ZSTD_e_continue);
                        if (ZSTD_isError(left))
                                return -EIO;
                        if (out.pos) {
                                r = c->sink(c->userdata, c->out, out.pos);
                                if (r < 0)
                                        return r;
                        }
                        if (finish ? left == 0 : (in.pos == in.size && out.pos < out.size))
                                return 0;
                }
        }
        case COMPRESSION_BZIP2:
                c->bz.next_in = (char *) p;
                c->bz.avail_in = (unsigned) n;
                for (;;) {
                        int br;
                        c->bz.next_out = (char *) c->out;
                        c->bz.avail_out = OUT_SIZE;
                        br = BZ2_bzCompress(&c->bz, finish ? BZ_FINISH : BZ_RUN);
                        if (br < 0)
                                return -EIO;
                        if (c->bz.avail_out < OUT_SIZE) {
                                r = c->sink(c->userdata, c->out, OUT_SIZE - c->bz.avail_out);
                                if (r < 0)
                                        return r;
                        }
                        if (finish ? br == BZ_STREAM_END : c->bz.avail_in == 0)
                                return 0;
                }
        }
        return -EOPNOTSUPP;
}

int compressor_feed(struct compressor *c, const void *p, size_t n) {
        while (n > 0) {
                size_t k = MIN(n, (size_t) 1 << 30);
                int r = compress_step(c, p, k, false);
                if (r < 0)
                        return r;
                p = (const uint8_t *) p + k;
                n -= k;
        }
        return 0;
}

int compressor_finish(struct compressor *c) {
        return compress_step(c, NULL, 0, true);
}
