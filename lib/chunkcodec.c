/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The chunk codec: the only file that includes zstd.h. A stored chunk is
 * exactly one zstd frame, content size in the header, no dictionary, no
 * checksum (the SHA-256 id is checked on every decode instead), so that the
 * frames of a NAR's chunks concatenate into a .nar.zst stream any zstd
 * decoder reads.
 */
#include <zstd.h>
#include <zstd_errors.h>

#include "trove/chunkcodec.h"

struct chunkcodec {
        ZSTD_CCtx *cctx;
        ZSTD_DCtx *dctx;
        int level;
};

struct chunkcodec *chunkcodec_free(struct chunkcodec *c) {
        if (!c)
                return NULL;
        ZSTD_freeCCtx(c->cctx);
        ZSTD_freeDCtx(c->dctx);
        free(c);
        return NULL;
}

int chunkcodec_new(int level, struct chunkcodec **ret) {
        _cleanup_(chunkcodec_freep) struct chunkcodec *c = NULL;

        if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel() || level == 0)
                return -EINVAL;
        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->level = level;
        c->cctx = ZSTD_createCCtx();
        c->dctx = ZSTD_createDCtx();
        if (!c->cctx || !c->dctx)
                return -ENOMEM;
        if (ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_contentSizeFlag, 1)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_checksumFlag, 0)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_dictIDFlag, 0)))
                return -EINVAL;
        /* Our own frames never need a window above the largest chunk; a
         * header asking for more is refused rather than honoured. */
        if (ZSTD_isError(ZSTD_DCtx_setParameter(c->dctx, ZSTD_d_windowLogMax, 27)))
                return -EINVAL;
        *ret = TAKE_PTR(c);
        return 0;
}

size_t chunkcodec_bound(size_t n) {
        return ZSTD_compressBound(n);
}

int chunkcodec_encode(struct chunkcodec *c, const void *data, size_t n, void *out, size_t cap,
                      size_t *ret_len) {
        size_t r;

        if (n > CHUNK_SIZE_MAX)
                return -EFBIG;
        /* ZSTD_compress2 is one-shot: the content size is known up front
         * and written into the frame header (contentSizeFlag). */
        r = ZSTD_compress2(c->cctx, out, cap, data, n);
        if (ZSTD_isError(r)) {
                ZSTD_CCtx_reset(c->cctx, ZSTD_reset_session_only);
                if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall)
                        return -ENOBUFS;
                return -EIO;
        }
        *ret_len = r;
        return 0;
}

/* Exactly one zstd data frame (not a skippable one) spanning all n bytes,
 * with a declared content size. */
static int frame_check(const void *frame, size_t n, uint64_t *ret_size) {
        const uint8_t *p = frame;
        unsigned long long size;
        size_t fsz;
        uint32_t magic;

        if (n < 4)
                return -EBADMSG;
        magic = (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
                (uint32_t) p[3] << 24;
        if (magic != ZSTD_MAGICNUMBER)
                return -EBADMSG;
        /* Walks the block headers: a truncated frame, or any byte after
         * the frame (a second frame, garbage), fails here. */
        fsz = ZSTD_findFrameCompressedSize(frame, n);
        if (ZSTD_isError(fsz) || fsz != n)
                return -EBADMSG;
        size = ZSTD_getFrameContentSize(frame, n);
        if (size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR)
                return -EBADMSG;
        *ret_size = size;
        return 0;
}

int chunkcodec_frame_size(const void *frame, size_t n, uint64_t *ret_size) {
        return frame_check(frame, n, ret_size);
}

static bool is_recompressed(const void *obj, size_t n);

/* r (what zstd returned) must be exactly size bytes hashing to id. */
static int check_decoded(size_t r, uint64_t size, const void *out, const uint8_t id[SHA256_DIGEST_LEN],
                         size_t *ret_len) {
        uint8_t digest[SHA256_DIGEST_LEN];
        int k;

        if (ZSTD_isError(r) || r != size)
                return -EBADMSG;
        if (!id) {
                *ret_len = r;
                return 0;
        }
        k = sha256_buf(out, r, digest);
        if (k < 0)
                return k;
        if (memcmp(digest, id, SHA256_DIGEST_LEN) != 0)
                return -EBADMSG;
        *ret_len = r;
        return 0;
}

int chunkcodec_decode(struct chunkcodec *c, const void *frame, size_t n,
                      const uint8_t id[SHA256_DIGEST_LEN], size_t max_size, void *out, size_t cap,
                      size_t *ret_len) {
        uint64_t size;
        size_t r;
        int k;

        if (is_recompressed(frame, n)) {
                frame = (const uint8_t *) frame + CHUNKCODEC_RECOMPRESSED_HEADER;
                n -= CHUNKCODEC_RECOMPRESSED_HEADER;
        }
        k = frame_check(frame, n, &size);
        if (k < 0)
                return k;
        /* Refused on the header alone, before any byte is produced. */
        if (size > max_size || size > cap || size > CHUNK_SIZE_MAX)
                return -EFBIG;
        r = ZSTD_decompressDCtx(c->dctx, out, (size_t) size, frame, n);
        if (ZSTD_isError(r))
                ZSTD_DCtx_reset(c->dctx, ZSTD_reset_session_only);
        return check_decoded(r, size, out, id, ret_len);
}

/* ---- delta and recompressed objects ---- */

#define DELTA_MAGIC 0x184D2A5Eu
static const char delta_tag[4] = { 'T', 'R', 'V', 'D' };
static const char recompressed_tag[4] = { 'T', 'R', 'V', 'R' };

static uint32_t le32(const uint8_t *p) {
        return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) v;
        p[1] = (uint8_t) (v >> 8);
        p[2] = (uint8_t) (v >> 16);
        p[3] = (uint8_t) (v >> 24);
}

static bool is_recompressed(const void *obj, size_t n) {
        const uint8_t *p = obj;
        return n > CHUNKCODEC_RECOMPRESSED_HEADER && le32(p) == DELTA_MAGIC &&
               le32(p + 4) == CHUNKCODEC_RECOMPRESSED_HEADER - 8 &&
               memcmp(p + 8, recompressed_tag, sizeof recompressed_tag) == 0;
}

int chunkcodec_encode_recompressed(struct chunkcodec *c, const void *data, size_t n, void *out, size_t cap,
                                   size_t *ret_len) {
        uint8_t *o = out;
        size_t len;
        int r;

        if (cap < CHUNKCODEC_RECOMPRESSED_HEADER)
                return -ENOBUFS;
        put_le32(o, DELTA_MAGIC);
        put_le32(o + 4, CHUNKCODEC_RECOMPRESSED_HEADER - 8);
        memcpy(o + 8, recompressed_tag, sizeof recompressed_tag);
        put_le32(o + 12, (uint32_t) c->level);
        r = chunkcodec_encode(c, data, n, o + CHUNKCODEC_RECOMPRESSED_HEADER, cap - CHUNKCODEC_RECOMPRESSED_HEADER,
                              &len);
        if (r < 0)
                return r;
        *ret_len = CHUNKCODEC_RECOMPRESSED_HEADER + len;
        return 0;
}

int chunkcodec_object_size(const void *obj, size_t n, uint64_t *ret_size) {
        if (is_recompressed(obj, n))
                return frame_check((const uint8_t *) obj + CHUNKCODEC_RECOMPRESSED_HEADER,
                                   n - CHUNKCODEC_RECOMPRESSED_HEADER, ret_size);
        return frame_check(obj, n, ret_size);
}

int chunkcodec_object_kind(const void *obj, size_t n, uint64_t *ret_size) {
        uint64_t size;
        int k = chunkcodec_delta_parse(obj, n, NULL, NULL, &size);

        if (k < 0)
                return -EBADMSG;
        if (k == 0) {
                if (chunkcodec_object_size(obj, n, &size) < 0)
                        return -EBADMSG;
                k = is_recompressed(obj, n) ? 2 : 0;
        }
        if (ret_size)
                *ret_size = size;
        return k;
}

int chunkcodec_delta_parse(const void *obj, size_t n, uint8_t ret_base[SHA256_DIGEST_LEN],
                           uint32_t *ret_base_len, uint64_t *ret_size) {
        const uint8_t *p = obj;
        uint64_t size;
        uint32_t base_len;

        if (n < 4 || le32(p) != DELTA_MAGIC || is_recompressed(obj, n))
                return 0;
        if (n < CHUNKCODEC_DELTA_HEADER || le32(p + 4) != CHUNKCODEC_DELTA_HEADER - 8 ||
            memcmp(p + 8, delta_tag, sizeof delta_tag) != 0)
                return -EBADMSG;
        base_len = le32(p + 12);
        if (base_len == 0 || base_len > CHUNK_SIZE_MAX)
                return -EBADMSG;
        if (frame_check(p + CHUNKCODEC_DELTA_HEADER, n - CHUNKCODEC_DELTA_HEADER, &size) < 0)
                return -EBADMSG;
        if (size == 0 || size > CHUNK_SIZE_MAX || base_len + size > CHUNKCODEC_DELTA_WINDOW_MAX)
                return -EBADMSG;
        if (ret_base)
                memcpy(ret_base, p + 16, SHA256_DIGEST_LEN);
        if (ret_base_len)
                *ret_base_len = base_len;
        if (ret_size)
                *ret_size = size;
        return 1;
}

int chunkcodec_encode_delta(struct chunkcodec *c, const void *base, size_t base_len,
                            const uint8_t base_id[SHA256_DIGEST_LEN], const void *data, size_t n,
                            void *out, size_t cap, size_t *ret_len) {
        uint8_t *o = out;
        size_t len;
        int r;

        if (base_len == 0 || n == 0 || base_len > CHUNK_SIZE_MAX || n > CHUNK_SIZE_MAX ||
            base_len + n > CHUNKCODEC_DELTA_WINDOW_MAX)
                return -EFBIG;
        if (cap < CHUNKCODEC_DELTA_HEADER)
                return -ENOBUFS;
        put_le32(o, DELTA_MAGIC);
        put_le32(o + 4, CHUNKCODEC_DELTA_HEADER - 8);
        memcpy(o + 8, delta_tag, sizeof delta_tag);
        put_le32(o + 12, (uint32_t) base_len);
        memcpy(o + 16, base_id, SHA256_DIGEST_LEN);
        /* The prefix is used for this one frame only; the window must reach
         * back over all of it. */
        if (ZSTD_isError(ZSTD_CCtx_refPrefix(c->cctx, base, base_len)))
                return -EIO;
        r = chunkcodec_encode(c, data, n, o + CHUNKCODEC_DELTA_HEADER, cap - CHUNKCODEC_DELTA_HEADER, &len);
        /* Never left for the next frame, whatever happened. */
        (void) ZSTD_CCtx_refPrefix(c->cctx, NULL, 0);
        if (r < 0)
                return r;
        *ret_len = CHUNKCODEC_DELTA_HEADER + len;
        return 0;
}

int chunkcodec_decode_delta(struct chunkcodec *c, const void *obj, size_t n, const void *base,
                            size_t base_len, const uint8_t id[SHA256_DIGEST_LEN], size_t max_size,
                            void *out, size_t cap, size_t *ret_len) {
        const uint8_t *frame = (const uint8_t *) obj + CHUNKCODEC_DELTA_HEADER;
        uint32_t want_base_len;
        uint64_t size;
        size_t r;
        int k;

        k = chunkcodec_delta_parse(obj, n, NULL, &want_base_len, &size);
        if (k <= 0)
                return -EBADMSG;
        if (want_base_len != base_len)
                return -EBADMSG;
        if (size > max_size || size > cap)
                return -EFBIG;
        if (ZSTD_isError(ZSTD_DCtx_refPrefix(c->dctx, base, base_len)))
                return -EIO;
        r = ZSTD_decompressDCtx(c->dctx, out, (size_t) size, frame, n - CHUNKCODEC_DELTA_HEADER);
        /* The prefix is for one frame only; drop it whatever happened. */
        ZSTD_DCtx_reset(c->dctx, ZSTD_reset_session_only);
        return check_decoded(r, size, out, id, ret_len);
}
