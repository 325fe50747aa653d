/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "trove/chunkbatch.h"
#include "test.h"

static void make_id(uint8_t id[SHA256_DIGEST_LEN], unsigned k) {
        test_fill(id, SHA256_DIGEST_LEN, 1000 + k);
}

static void put_u32le(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) v;
        p[1] = (uint8_t) (v >> 8);
        p[2] = (uint8_t) (v >> 16);
        p[3] = (uint8_t) (v >> 24);
}

/* The bytes of a record, spelled out independently of chunkbatch_append. */
static void test_layout(void) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(1024);
        uint8_t id[SHA256_DIGEST_LEN];
        const uint8_t frame[] = { 0x28, 0xb5, 0x2f, 0xfd, 0x01 };

        make_id(id, 1);
        CHECK_OK(chunkbatch_append(&b, id, frame, sizeof frame));
        CHECK_EQ_U64(b.len, CHUNKBATCH_RECORD_HEADER + sizeof frame);
        CHECK_MEMEQ(b.data, id, SHA256_DIGEST_LEN);
        CHECK(b.data[32] == 5 && b.data[33] == 0 && b.data[34] == 0 && b.data[35] == 0);
        CHECK_MEMEQ(b.data + 36, frame, sizeof frame);

        /* Little-endian, all four bytes. */
        static uint8_t big[0x010203];
        memset(big, 0xab, sizeof big);
        buf_reset(&b);
        b.max = sizeof big + 64;
        CHECK_OK(chunkbatch_append(&b, id, big, sizeof big));
        CHECK(b.data[32] == 0x03 && b.data[33] == 0x02 && b.data[34] == 0x01 && b.data[35] == 0x00);
}

static void test_round_trip(void) {
        enum { N = 50 };
        _cleanup_(buf_free) struct buf b = BUF_INIT(1 << 20);
        static uint8_t frames[N][300];
        uint8_t ids[N][SHA256_DIGEST_LEN];
        size_t lens[N];
        struct chunkbatch_record recs[N];
        struct trove_error err = {};
        size_t count = 12345;

        for (unsigned k = 0; k < N; k++) {
                make_id(ids[k], k);
                lens[k] = 1 + (k * 37) % 300;
                test_fill(frames[k], lens[k], k + 1);
                CHECK_OK(chunkbatch_append(&b, ids[k], frames[k], lens[k]));
        }
        CHECK_OK(chunkbatch_parse(b.data, b.len, recs, N, &count, &err));
        CHECK_EQ_U64(count, N);
        for (unsigned k = 0; k < N; k++) {
                CHECK_MEMEQ(recs[k].id, ids[k], SHA256_DIGEST_LEN);
                CHECK_EQ_U64(recs[k].frame_len, lens[k]);
                CHECK_MEMEQ(recs[k].frame, frames[k], lens[k]);
                /* Records point into the body. */
                CHECK(recs[k].id >= b.data && recs[k].frame + recs[k].frame_len <= b.data + b.len);
                CHECK(recs[k].frame == recs[k].id + CHUNKBATCH_RECORD_HEADER);
        }
        /* Exactly enough room is enough. */
        CHECK_OK(chunkbatch_parse(b.data, b.len, recs, N, &count, NULL));
        CHECK_EQ_U64(count, N);
}

static void test_empty(void) {
        struct chunkbatch_record rec;
        struct trove_error err = {};
        size_t count = 99;

        CHECK_OK(chunkbatch_parse(NULL, 0, NULL, 0, &count, &err));
        CHECK_EQ_U64(count, 0);
        count = 99;
        CHECK_OK(chunkbatch_parse("", 0, &rec, 1, &count, &err));
        CHECK_EQ_U64(count, 0);
}

/* One record with a 1-byte frame, then a malformed tail. */
static void test_malformed(void) {
        uint8_t body[256];
        struct chunkbatch_record recs[8];
        struct trove_error err;
        size_t count;

        /* Truncated headers: every length from 1 to 35 bytes. */
        memset(body, 0x11, sizeof body);
        for (size_t n = 1; n < CHUNKBATCH_RECORD_HEADER; n++) {
                err = (struct trove_error){};
                count = 777;
                CHECK_RC(chunkbatch_parse(body, n, recs, 8, &count, &err), -EBADMSG);
                CHECK(strstr(err.msg, "truncated record header at byte 0"));
                CHECK_EQ_U64(count, 777); /* not written on failure */
        }
        /* ... also after a good record: the offset is the record's. */
        put_u32le(body + 32, 1);
        err = (struct trove_error){};
        CHECK_RC(chunkbatch_parse(body, 37 + 10, recs, 8, &count, &err), -EBADMSG);
        CHECK(strstr(err.msg, "truncated record header at byte 37"));

        /* Zero frame length, first and second record. */
        put_u32le(body + 32, 0);
        err = (struct trove_error){};
        CHECK_RC(chunkbatch_parse(body, 36, recs, 8, &count, &err), -EBADMSG);
        CHECK(strstr(err.msg, "zero frame length at byte 0"));
        CHECK_RC(chunkbatch_parse(body, 100, recs, 8, &count, &err), -EBADMSG);
        put_u32le(body + 32, 1);
        put_u32le(body + 37 + 32, 0);
        err = (struct trove_error){};
        CHECK_RC(chunkbatch_parse(body, 37 + 36, recs, 8, &count, &err), -EBADMSG);
        CHECK(strstr(err.msg, "zero frame length at byte 37"));

        /* Frame length one past what is left, and absurdly large. */
        put_u32le(body + 32, 11);
        err = (struct trove_error){};
        CHECK_RC(chunkbatch_parse(body, 36 + 10, recs, 8, &count, &err), -EBADMSG);
        CHECK(strstr(err.msg, "frame length 11 at byte 0"));
        CHECK_OK(chunkbatch_parse(body, 36 + 11, recs, 8, &count, &err));
        CHECK_EQ_U64(count, 1);
        put_u32le(body + 32, UINT32_MAX);
        err = (struct trove_error){};
        CHECK_RC(chunkbatch_parse(body, sizeof body, recs, 8, &count, &err), -EBADMSG);
        CHECK(strstr(err.msg, "frame length 4294967295 at byte 0"));
        put_u32le(body + 32, 1);
        put_u32le(body + 37 + 32, 0x80000000u);
        err = (struct trove_error){};
        CHECK_RC(chunkbatch_parse(body, sizeof body, recs, 8, &count, &err), -EBADMSG);
        CHECK(strstr(err.msg, "at byte 37"));

        /* A frame that runs exactly to the end, followed by one stray byte. */
        put_u32le(body + 32, 1);
        put_u32le(body + 37 + 32, 1);
        CHECK_OK(chunkbatch_parse(body, 74, recs, 8, &count, &err));
        CHECK_EQ_U64(count, 2);
        err = (struct trove_error){};
        CHECK_RC(chunkbatch_parse(body, 75, recs, 8, &count, &err), -EBADMSG);
        CHECK(strstr(err.msg, "truncated record header at byte 74"));

        /* A NULL err is allowed. */
        CHECK_RC(chunkbatch_parse(body, 75, recs, 8, &count, NULL), -EBADMSG);
}

static void test_max_records(void) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(4096);
        struct chunkbatch_record recs[4];
        struct trove_error err = {};
        uint8_t id[SHA256_DIGEST_LEN];
        size_t count = 0;

        make_id(id, 7);
        for (unsigned k = 0; k < 4; k++)
                CHECK_OK(chunkbatch_append(&b, id, "x", 1));
        CHECK_OK(chunkbatch_parse(b.data, b.len, recs, 4, &count, &err));
        CHECK_EQ_U64(count, 4);
        count = 555;
        CHECK_RC(chunkbatch_parse(b.data, b.len, recs, 3, &count, &err), -E2BIG);
        CHECK(strstr(err.msg, "more than 3 chunks"));
        CHECK_EQ_U64(count, 555);
        CHECK_RC(chunkbatch_parse(b.data, b.len, NULL, 0, &count, &err), -E2BIG);
        /* The limit is checked before the shape: a fifth, broken record is
         * still "too many". */
        CHECK_OK(buf_append(&b, "junk", 4));
        CHECK_RC(chunkbatch_parse(b.data, b.len, recs, 4, &count, &err), -E2BIG);
}

static void test_append_limits(void) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(CHUNKBATCH_RECORD_HEADER + 10 + 20);
        uint8_t id[SHA256_DIGEST_LEN];
        uint8_t frame[64];

        make_id(id, 3);
        memset(frame, 'f', sizeof frame);
        CHECK_RC(chunkbatch_append(&b, id, frame, 0), -EINVAL);
        CHECK_EQ_U64(b.len, 0);
        CHECK_OK(chunkbatch_append(&b, id, frame, 10));
        /* 36 + 20 would pass the maximum: nothing of it is appended. */
        CHECK_RC(chunkbatch_append(&b, id, frame, 20), -E2BIG);
        CHECK_EQ_U64(b.len, CHUNKBATCH_RECORD_HEADER + 10);
        CHECK_RC(chunkbatch_append(&b, id, frame, 1), -E2BIG);
        CHECK_EQ_U64(b.len, CHUNKBATCH_RECORD_HEADER + 10);
        /* A frame the u32 length cannot carry (the pointer is not read). */
        b.max = SIZE_MAX;
        CHECK_RC(chunkbatch_append(&b, id, frame, (size_t) UINT32_MAX + 1), -E2BIG);
        CHECK_RC(chunkbatch_append(&b, id, frame, SIZE_MAX), -E2BIG);
        CHECK_EQ_U64(b.len, CHUNKBATCH_RECORD_HEADER + 10);
        /* What is there still parses. */
        struct chunkbatch_record rec;
        size_t count;
        CHECK_OK(chunkbatch_parse(b.data, b.len, &rec, 1, &count, NULL));
        CHECK_EQ_U64(count, 1);
        CHECK_EQ_U64(rec.frame_len, 10);
}

int main(void) {
        test_layout();
        test_round_trip();
        test_empty();
        test_malformed();
        test_max_records();
        test_append_limits();
        return 0;
}
