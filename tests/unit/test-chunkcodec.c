/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <sys/wait.h>

#include "test.h"
#include "trove/chunkcodec.h"
#include "trove/hash.h"

struct frame {
        uint8_t *data;
        size_t len;
        uint8_t id[SHA256_DIGEST_LEN];
};

static void encode(struct chunkcodec *c, const uint8_t *p, size_t n, struct frame *f) {
        size_t cap = chunkcodec_bound(n);
        f->data = malloc(cap);
        CHECK(f->data);
        CHECK_OK(chunkcodec_encode(c, p, n, f->data, cap, &f->len));
        CHECK(f->len > 0 && f->len <= cap);
        CHECK_OK(sha256_buf(p, n, f->id));
}

/* Decodes f into a fresh buffer and checks it equals p[0..n). */
static void check_round_trip(struct chunkcodec *c, const struct frame *f, const uint8_t *p,
                             size_t n) {
        uint8_t *out = malloc(n + 1);
        size_t len = 999;
        uint64_t size = 0;

        CHECK(out);
        CHECK_OK(chunkcodec_frame_size(f->data, f->len, &size));
        CHECK_EQ_U64(size, n);
        CHECK_OK(chunkcodec_decode(c, f->data, f->len, f->id, n, out, n + 1, &len));
        CHECK_EQ_U64(len, n);
        CHECK_MEMEQ(out, p, n);
        free(out);
}

static void test_round_trip(void) {
        _cleanup_(chunkcodec_freep) struct chunkcodec *c = NULL;
        const size_t sizes[] = { 0, 1, 100, 65536, 300000, 4u << 20 };
        uint8_t *p = malloc(4u << 20);

        CHECK(p);
        CHECK_OK(chunkcodec_new(CHUNK_LEVEL_DEFAULT, &c));
        for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                struct frame f;
                /* half random, half text-like: compressible */
                test_fill(p, sizes[i] / 2, i + 1);
                for (size_t j = sizes[i] / 2; j < sizes[i]; j++)
                        p[j] = (uint8_t) "trove chunk "[j % 12];
                encode(c, p, sizes[i], &f);
                check_round_trip(c, &f, p, sizes[i]);
                /* the codec is reusable: same bytes, same frame */
                struct frame g;
                encode(c, p, sizes[i], &g);
                CHECK_EQ_U64(g.len, f.len);
                CHECK_MEMEQ(g.data, f.data, f.len);
                free(g.data);
                free(f.data);
        }
        /* compressible data compresses */
        memset(p, 'x', 1u << 20);
        struct frame f;
        encode(c, p, 1u << 20, &f);
        CHECK(f.len < 1000);
        check_round_trip(c, &f, p, 1u << 20);
        free(f.data);
        free(p);

        struct chunkcodec *tmp = NULL;
        CHECK_RC(chunkcodec_new(1000, &tmp), -EINVAL);
        CHECK(tmp == NULL);
        CHECK_OK(chunkcodec_new(1, &tmp));
        chunkcodec_free(tmp);
        CHECK(chunkcodec_free(NULL) == NULL);
}

static void test_refusals(void) {
        _cleanup_(chunkcodec_freep) struct chunkcodec *c = NULL;
        const size_t n = 200000;
        uint8_t *p = malloc(n), *out = malloc(n + 100), *buf = malloc(4 * n);
        struct frame f, g;
        size_t len = 4242;
        uint64_t size = 4242;

        CHECK(p && out && buf);
        CHECK_OK(chunkcodec_new(CHUNK_LEVEL_DEFAULT, &c));
        test_fill(p, n / 2, 5);
        memset(p + n / 2, 'a', n / 2);
        encode(c, p, n, &f);
        check_round_trip(c, &f, p, n);

        /* Wrong id. */
        uint8_t bad_id[SHA256_DIGEST_LEN];
        memcpy(bad_id, f.id, sizeof bad_id);
        bad_id[31] ^= 1;
        CHECK_RC(chunkcodec_decode(c, f.data, f.len, bad_id, n, out, n, &len), -EBADMSG);
        CHECK_EQ_U64(len, 4242);

        /* Truncated frames, at every length in the header and some later. */
        for (size_t cut = 0; cut < f.len; cut += cut < 64 ? 1 : 997) {
                CHECK_RC(chunkcodec_decode(c, f.data, cut, f.id, n, out, n, &len), -EBADMSG);
                CHECK_RC(chunkcodec_frame_size(f.data, cut, &size), -EBADMSG);
        }
        CHECK_RC(chunkcodec_decode(c, f.data, f.len - 1, f.id, n, out, n, &len), -EBADMSG);
        CHECK_EQ_U64(len, 4242);
        CHECK_EQ_U64(size, 4242);

        /* Two frames, even two valid ones of the same chunk. */
        memcpy(buf, f.data, f.len);
        memcpy(buf + f.len, f.data, f.len);
        CHECK_RC(chunkcodec_decode(c, buf, 2 * f.len, f.id, 2 * n, out, n + 100, &len), -EBADMSG);
        CHECK_RC(chunkcodec_frame_size(buf, 2 * f.len, &size), -EBADMSG);

        /* Trailing garbage, one byte or many. */
        buf[f.len] = 0;
        CHECK_RC(chunkcodec_decode(c, buf, f.len + 1, f.id, n, out, n, &len), -EBADMSG);
        memset(buf + f.len, 0, 100);
        CHECK_RC(chunkcodec_decode(c, buf, f.len + 100, f.id, n, out, n, &len), -EBADMSG);

        /* A skippable frame before, or alone. */
        uint8_t skip[16] = { 0x50, 0x2a, 0x4d, 0x18, 8, 0, 0, 0 };
        memcpy(buf, skip, sizeof skip);
        memcpy(buf + sizeof skip, f.data, f.len);
        CHECK_RC(chunkcodec_decode(c, buf, sizeof skip + f.len, f.id, n, out, n, &len), -EBADMSG);
        CHECK_RC(chunkcodec_decode(c, skip, sizeof skip, f.id, n, out, n, &len), -EBADMSG);
        CHECK_RC(chunkcodec_frame_size(skip, sizeof skip, &size), -EBADMSG);

        /* Size above max_size or cap: -EFBIG, and the buffer untouched. */
        memset(out, 0x77, n + 100);
        CHECK_RC(chunkcodec_decode(c, f.data, f.len, f.id, n - 1, out, n + 100, &len), -EFBIG);
        CHECK_RC(chunkcodec_decode(c, f.data, f.len, f.id, n, out, n - 1, &len), -EFBIG);
        for (size_t i = 0; i < n + 100; i++)
                if (out[i] != 0x77)
                        TEST_FAIL("out[%zu] written on a refused frame", i);
        CHECK_EQ_U64(len, 4242);

        /* A corrupted byte in the compressed body: refused (by zstd or by
         * the id check), never returned. */
        for (size_t at = 20; at < f.len; at += 1231) {
                memcpy(buf, f.data, f.len);
                buf[at] ^= 0x40;
                int r = chunkcodec_decode(c, buf, f.len, f.id, n, out, n, &len);
                CHECK(r == -EBADMSG || r == -EFBIG);
        }
        /* The codec still works after all those errors. */
        check_round_trip(c, &f, p, n);

        /* An empty input and a frame of another chunk. */
        CHECK_RC(chunkcodec_decode(c, f.data, 0, f.id, n, out, n, &len), -EBADMSG);
        memset(p, 'b', 1000);
        encode(c, p, 1000, &g);
        CHECK_RC(chunkcodec_decode(c, g.data, g.len, f.id, n, out, n, &len), -EBADMSG);
        CHECK_EQ_U64(len, 4242);

        /* Without an id (a frame checked before) the content is not hashed:
         * any well-formed frame decodes; the frame checks stay. */
        CHECK_OK(chunkcodec_decode(c, g.data, g.len, NULL, n, out, n, &len));
        CHECK_EQ_U64(len, 1000);
        CHECK_MEMEQ(out, p, 1000);
        CHECK_RC(chunkcodec_decode(c, g.data, g.len - 1, NULL, n, out, n, &len), -EBADMSG);
        CHECK_RC(chunkcodec_decode(c, g.data, g.len, NULL, 999, out, n, &len), -EFBIG);
        memcpy(buf, g.data, g.len);
        buf[g.len] = 0;
        CHECK_RC(chunkcodec_decode(c, buf, g.len + 1, NULL, n, out, n, &len), -EBADMSG);
        len = 4242;

        /* Encoder limits. */
        CHECK_RC(chunkcodec_encode(c, p, 1000, buf, 5, &len), -ENOBUFS);
        CHECK_RC(chunkcodec_encode(c, p, (size_t) CHUNK_SIZE_MAX + 1, buf, 4 * n, &len), -EFBIG);
        CHECK_EQ_U64(len, 4242);
        free(g.data);
        free(f.data);
        free(p);
        free(out);
        free(buf);
}

/* A frame whose header declares 1 TiB (or 65 MiB) is refused from the
 * header alone: the caller can size its buffer from chunkcodec_frame_size()
 * and never allocates what an attacker declares. */
static void test_huge_declared_size(void) {
        _cleanup_(chunkcodec_freep) struct chunkcodec *c = NULL;
        uint8_t id[SHA256_DIGEST_LEN] = { 0 }, out[64];
        size_t len = 4242;
        uint64_t size = 0;
        /* magic; FHD: FCS field 8 bytes (3<<6), single segment (1<<5);
         * FCS = 2^40; then one last raw block of size 0. */
        uint8_t frame[4 + 1 + 8 + 3] = { 0x28, 0xb5, 0x2f, 0xfd, 0xe0 };
        frame[4 + 1 + 5] = 1; /* 2^40, little-endian */
        frame[13] = 1;        /* block header: last, raw, size 0 */

        CHECK_OK(chunkcodec_new(CHUNK_LEVEL_DEFAULT, &c));
        CHECK_OK(chunkcodec_frame_size(frame, sizeof frame, &size));
        CHECK_EQ_U64(size, UINT64_C(1) << 40);
        CHECK_RC(chunkcodec_decode(c, frame, sizeof frame, id, SIZE_MAX, out, SIZE_MAX, &len),
                 -EFBIG);
        CHECK_RC(chunkcodec_decode(c, frame, sizeof frame, id, 64, out, sizeof out, &len),
                 -EFBIG);
        /* Just above CHUNK_SIZE_MAX. */
        memset(frame + 5, 0, 8);
        uint64_t big = (uint64_t) CHUNK_SIZE_MAX + 1;
        for (int k = 0; k < 8; k++)
                frame[5 + k] = (uint8_t) (big >> (8 * k));
        CHECK_OK(chunkcodec_frame_size(frame, sizeof frame, &size));
        CHECK_EQ_U64(size, big);
        CHECK_RC(chunkcodec_decode(c, frame, sizeof frame, id, SIZE_MAX, out, SIZE_MAX, &len),
                 -EFBIG);
        /* The same frame declaring 0 bytes but holding none is fine as a
         * frame; declaring 10 while holding 0 is a lie. */
        memset(frame + 5, 0, 8);
        CHECK_OK(chunkcodec_frame_size(frame, sizeof frame, &size));
        CHECK_EQ_U64(size, 0);
        CHECK_OK(sha256_buf("", 0, id));
        CHECK_OK(chunkcodec_decode(c, frame, sizeof frame, id, 64, out, sizeof out, &len));
        CHECK_EQ_U64(len, 0);
        frame[5] = 10;
        len = 4242;
        CHECK_RC(chunkcodec_decode(c, frame, sizeof frame, id, 64, out, sizeof out, &len),
                 -EBADMSG);
        CHECK_EQ_U64(len, 4242);
        /* No declared size (FHD 0: no FCS, not single segment; window
         * descriptor byte follows). */
        uint8_t nosize[4 + 1 + 1 + 3] = { 0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 1, 0, 0 };
        CHECK_RC(chunkcodec_frame_size(nosize, sizeof nosize, &size), -EBADMSG);
        CHECK_RC(chunkcodec_decode(c, nosize, sizeof nosize, id, 64, out, sizeof out, &len),
                 -EBADMSG);
}

/* The .nar.zst contract: the frames of consecutive chunks, concatenated,
 * are what the zstd CLI decompresses to the concatenated chunks. */
static void test_concatenation_with_zstd_cli(void) {
        _cleanup_(chunkcodec_freep) struct chunkcodec *c = NULL;
        const size_t n = 3u << 20, pieces = 7;
        uint8_t *p = malloc(n), *back = malloc(n + 1);
        char dir[] = "/tmp/test-chunkcodec-XXXXXX", in[64], outp[64], cmd[256];
        FILE *f;
        size_t off = 0;

        CHECK(p && back);
        CHECK(mkdtemp(dir));
        snprintf(in, sizeof in, "%s/x.nar.zst", dir);
        snprintf(outp, sizeof outp, "%s/x.nar", dir);
        test_fill(p, n, 77);
        for (size_t i = n / 3; i < n / 2; i++)
                p[i] = (uint8_t) (i / 1000);
        CHECK_OK(chunkcodec_new(CHUNK_LEVEL_DEFAULT, &c));
        f = fopen(in, "wb");
        CHECK(f);
        for (size_t i = 0; i < pieces; i++) {
                size_t len = i + 1 == pieces ? n - off : n / pieces + i * 1000;
                struct frame fr;
                encode(c, p + off, len, &fr);
                CHECK(fwrite(fr.data, 1, fr.len, f) == fr.len);
                free(fr.data);
                off += len;
        }
        CHECK(fclose(f) == 0);
        snprintf(cmd, sizeof cmd, "zstd -q -d -f -o '%s' '%s'", outp, in);
        int st = system(cmd);
        CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
        f = fopen(outp, "rb");
        CHECK(f);
        size_t got = fread(back, 1, n + 1, f);
        fclose(f);
        CHECK_EQ_U64(got, n);
        CHECK_MEMEQ(back, p, n);
        unlink(in);
        unlink(outp);
        rmdir(dir);
        free(p);
        free(back);
}

/* A version bump in miniature: the same bytes with a few edits. */
static void make_similar(uint8_t *base, uint8_t *next, size_t n) {
        test_fill(base, n, 4242);
        memcpy(next, base, n);
        for (size_t k = 1000; k + 8 < n; k += 9001)
                memcpy(next + k, "edited!!", 8);
}

static void test_delta(void) {
        _cleanup_(chunkcodec_freep) struct chunkcodec *c = NULL;
        const size_t n = 65536;
        uint8_t *base = malloc(n), *next = malloc(n), *out = malloc(n + 1);
        size_t cap = CHUNKCODEC_DELTA_HEADER + chunkcodec_bound(n), len = 0, got = 0;
        uint8_t *obj = malloc(cap);
        uint8_t base_id[SHA256_DIGEST_LEN], id[SHA256_DIGEST_LEN], named[SHA256_DIGEST_LEN];
        struct frame plain;
        uint32_t base_len = 0;
        uint64_t size = 0;

        CHECK(base && next && out && obj);
        CHECK_OK(chunkcodec_new(CHUNK_LEVEL_DEFAULT, &c));
        make_similar(base, next, n);
        CHECK_OK(sha256_buf(base, n, base_id));
        CHECK_OK(sha256_buf(next, n, id));
        CHECK_OK(chunkcodec_encode_delta(c, base, n, base_id, next, n, obj, cap, &len));
        /* random content: plain does not compress, the delta does */
        encode(c, next, n, &plain);
        CHECK(len * 10 < plain.len);
        CHECK_RC(chunkcodec_delta_parse(obj, len, named, &base_len, &size), 1);
        CHECK_MEMEQ(named, base_id, SHA256_DIGEST_LEN);
        CHECK_EQ_U64(base_len, n);
        CHECK_EQ_U64(size, n);
        CHECK_OK(chunkcodec_decode_delta(c, obj, len, base, n, id, n, out, n + 1, &got));
        CHECK_EQ_U64(got, n);
        CHECK_MEMEQ(out, next, n);
        /* the codec stays usable for plain frames afterwards */
        check_round_trip(c, &plain, next, n);
        /* a plain frame is not a delta object, and a delta object is no frame */
        CHECK_RC(chunkcodec_delta_parse(plain.data, plain.len, NULL, NULL, NULL), 0);
        CHECK_RC(chunkcodec_frame_size(obj, len, &size), -EBADMSG);
        CHECK_RC(chunkcodec_decode(c, obj, len, id, n, out, n + 1, &got), -EBADMSG);
        /* the wrong base content, a wrong base length, the wrong id */
        base[7] ^= 1;
        CHECK_RC(chunkcodec_decode_delta(c, obj, len, base, n, id, n, out, n + 1, &got), -EBADMSG);
        base[7] ^= 1;
        CHECK_RC(chunkcodec_decode_delta(c, obj, len, base, n - 1, id, n, out, n + 1, &got), -EBADMSG);
        CHECK_RC(chunkcodec_decode_delta(c, obj, len, base, n, base_id, n, out, n + 1, &got), -EBADMSG);
        /* damaged: header, body, truncation */
        obj[9] ^= 1;
        CHECK_RC(chunkcodec_delta_parse(obj, len, NULL, NULL, NULL), -EBADMSG);
        obj[9] ^= 1;
        obj[len - 3] ^= 0x55;
        CHECK(chunkcodec_decode_delta(c, obj, len, base, n, id, n, out, n + 1, &got) < 0);
        obj[len - 3] ^= 0x55;
        CHECK_RC(chunkcodec_delta_parse(obj, len - 1, NULL, NULL, NULL), -EBADMSG);
        CHECK_RC(chunkcodec_delta_parse(obj, 20, NULL, NULL, NULL), -EBADMSG);
        /* still intact after all that */
        CHECK_OK(chunkcodec_decode_delta(c, obj, len, base, n, id, n, out, n + 1, &got));
        CHECK_MEMEQ(out, next, n);
        /* too small an output, and a window too large */
        CHECK_RC(chunkcodec_decode_delta(c, obj, len, base, n, id, n - 1, out, n + 1, &got), -EFBIG);
        CHECK_RC(chunkcodec_encode_delta(c, base, CHUNKCODEC_DELTA_WINDOW_MAX, base_id, next, n, obj, cap, &len),
                 -EFBIG);
        free(plain.data);
        free(base);
        free(next);
        free(out);
        free(obj);
}

int main(void) {
        test_round_trip();
        test_delta();
        test_refusals();
        test_huge_declared_size();
        test_concatenation_with_zstd_cli();
        return 0;
}
