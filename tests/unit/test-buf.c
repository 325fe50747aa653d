/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "trove/buf.h"
#include "test.h"

/* The invariants every buffer keeps between calls. */
static void check_invariants(const struct buf *b) {
        CHECK(b->len <= b->max);
        if (b->data) {
                CHECK(b->cap >= b->len + 1);
                CHECK(b->cap <= b->max + 1);
                CHECK(b->data[b->len] == 0);
        } else {
                CHECK(b->len == 0 && b->cap == 0);
        }
}

static void test_init(void) {
        struct buf b = BUF_INIT(100), c;

        CHECK(!b.data && b.len == 0 && b.cap == 0 && b.max == 100);
        memset(&c, 0x5a, sizeof c);
        buf_init(&c, 7);
        CHECK(!c.data && c.len == 0 && c.cap == 0 && c.max == 7);
        /* Freeing a buffer that never allocated, twice, and NULL. */
        buf_free(&b);
        buf_free(&b);
        buf_free(NULL);
        /* Resetting one that never allocated. */
        buf_reset(&c);
        CHECK(!c.data && c.len == 0);
}

static void test_append(void) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(1 << 20);

        CHECK_OK(buf_append(&b, "abc", 3));
        CHECK_EQ_U64(b.len, 3);
        CHECK_STREQ((char *) b.data, "abc");
        CHECK_OK(buf_append_str(&b, "def"));
        CHECK_STREQ((char *) b.data, "abcdef");
        /* Zero bytes: nothing changes, NULL source allowed. */
        CHECK_OK(buf_append(&b, NULL, 0));
        CHECK_EQ_U64(b.len, 6);
        CHECK_OK(buf_append_str(&b, ""));
        CHECK_EQ_U64(b.len, 6);
        /* Binary data with NUL bytes is kept as is; len counts them. */
        CHECK_OK(buf_append(&b, "\0x\0", 3));
        CHECK_EQ_U64(b.len, 9);
        CHECK_MEMEQ(b.data, "abcdef\0x\0", 10);
        check_invariants(&b);

        /* An empty append on an empty buffer still gives a C string. */
        _cleanup_(buf_free) struct buf e = BUF_INIT(10);
        CHECK_OK(buf_append(&e, NULL, 0));
        CHECK(e.data);
        CHECK_STREQ((char *) e.data, "");
        check_invariants(&e);
}

/* Byte by byte past several doublings: contents intact, capacity bounded. */
static void test_growth(void) {
        enum { N = 70000 };
        _cleanup_(buf_free) struct buf b = BUF_INIT(N);
        uint8_t *want = malloc(N);

        CHECK(want);
        test_fill(want, N, 42);
        for (size_t i = 0; i < N; i++) {
                CHECK_OK(buf_append(&b, want + i, 1));
                check_invariants(&b);
        }
        CHECK_EQ_U64(b.len, N);
        CHECK_MEMEQ(b.data, want, N);
        /* Full: the capacity was clipped to the maximum (+ the NUL). */
        CHECK_EQ_U64(b.cap, N + 1);
        CHECK_RC(buf_append(&b, "x", 1), -E2BIG);
        CHECK_EQ_U64(b.len, N);
        CHECK_MEMEQ(b.data, want, N);
        free(want);
}

static void test_maximum(void) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(10);
        uint8_t *before;

        CHECK_OK(buf_append(&b, "0123456", 7));
        before = b.data;
        /* Would end at 11: refused, nothing appended, not even a part. */
        CHECK_RC(buf_append(&b, "abcd", 4), -E2BIG);
        CHECK_EQ_U64(b.len, 7);
        CHECK_STREQ((char *) b.data, "0123456");
        CHECK(b.data == before);
        CHECK_RC(buf_append_str(&b, "abcd"), -E2BIG);
        CHECK_RC(buf_printf(&b, "%s", "abcd"), -E2BIG);
        CHECK_RC(buf_printf(&b, "%d", 1234), -E2BIG);
        CHECK_STREQ((char *) b.data, "0123456");
        CHECK_EQ_U64(b.len, 7);
        /* Exactly to the maximum is fine. */
        CHECK_OK(buf_append(&b, "abc", 3));
        CHECK_STREQ((char *) b.data, "0123456abc");
        CHECK_RC(buf_append(&b, "x", 1), -E2BIG);
        CHECK_OK(buf_append(&b, "", 0));
        CHECK_OK(buf_printf(&b, "%s", ""));
        CHECK_EQ_U64(b.len, 10);
        check_invariants(&b);

        /* Reservations: within, past, and a size_t overflow. */
        CHECK_OK(buf_reserve(&b, 0));
        CHECK_RC(buf_reserve(&b, 1), -E2BIG);
        CHECK_RC(buf_reserve(&b, SIZE_MAX), -E2BIG);
        buf_reset(&b);
        CHECK_OK(buf_reserve(&b, 10));
        CHECK_RC(buf_reserve(&b, 11), -E2BIG);
        CHECK_EQ_U64(b.len, 0);

        /* A buffer with maximum 0 holds only the empty string. */
        _cleanup_(buf_free) struct buf z = BUF_INIT(0);
        CHECK_RC(buf_append(&z, "x", 1), -E2BIG);
        CHECK_OK(buf_append(&z, "", 0));
        CHECK_STREQ((char *) z.data, "");
        CHECK_EQ_U64(z.cap, 1);

        /* A huge maximum does not make a small buffer allocate much. */
        _cleanup_(buf_free) struct buf h = BUF_INIT(SIZE_MAX - 1);
        CHECK_OK(buf_append(&h, "x", 1));
        CHECK(h.cap <= 256);
        CHECK_RC(buf_reserve(&h, SIZE_MAX), -E2BIG);

        /* "No limit" spelled SIZE_MAX: max + 1 would wrap to 0. */
        _cleanup_(buf_free) struct buf u = BUF_INIT(SIZE_MAX);
        CHECK_OK(buf_append(&u, "xyz", 3));
        CHECK_STREQ((char *) u.data, "xyz");
        CHECK(u.cap >= 4);
        CHECK_RC(buf_reserve(&u, SIZE_MAX - 3), -E2BIG);
        CHECK_RC(buf_reserve(&u, SIZE_MAX), -E2BIG);
        CHECK_EQ_U64(u.len, 3);
}

static void test_printf(void) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(1 << 16);
        char big[3001];

        CHECK_OK(buf_printf(&b, "%d-%s-%04x", 42, "x", 0xbeef));
        CHECK_STREQ((char *) b.data, "42-x-beef");
        CHECK_OK(buf_printf(&b, "|%zu", (size_t) 7));
        CHECK_STREQ((char *) b.data, "42-x-beef|7");
        CHECK_EQ_U64(b.len, strlen("42-x-beef|7"));

        /* Growth past the first allocation in one call. */
        memset(big, 'q', 3000);
        big[3000] = 0;
        CHECK_OK(buf_printf(&b, "<%s>", big));
        CHECK_EQ_U64(b.len, 11 + 3002);
        CHECK(b.data[11] == '<' && b.data[12] == 'q' && b.data[11 + 3001] == '>');
        CHECK(b.data[b.len] == 0);
        check_invariants(&b);

        /* The formatted text exactly filling the maximum. */
        _cleanup_(buf_free) struct buf x = BUF_INIT(5);
        CHECK_OK(buf_printf(&x, "%05d", 123));
        CHECK_STREQ((char *) x.data, "00123");
        CHECK_RC(buf_printf(&x, "%c", 'z'), -E2BIG);
        CHECK_STREQ((char *) x.data, "00123");
}

static void test_reset(void) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(1000);
        uint8_t *data;
        size_t cap;

        CHECK_OK(buf_append_str(&b, "hello world"));
        data = b.data;
        cap = b.cap;
        buf_reset(&b);
        CHECK_EQ_U64(b.len, 0);
        CHECK_STREQ((char *) b.data, "");
        /* The memory is kept for reuse. */
        CHECK(b.data == data && b.cap == cap);
        CHECK_OK(buf_append_str(&b, "again"));
        CHECK_STREQ((char *) b.data, "again");
        /* The maximum counts from the reset, not from what was there. */
        buf_reset(&b);
        for (int i = 0; i < 100; i++)
                CHECK_OK(buf_append(&b, "0123456789", 10));
        CHECK_RC(buf_append(&b, "x", 1), -E2BIG);
        check_invariants(&b);
}

static void test_steal(void) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(100);
        char *s = NULL;
        size_t len = 999;

        CHECK_OK(buf_append_str(&b, "payload"));
        CHECK_OK(buf_steal(&b, &s, &len));
        CHECK_STREQ(s, "payload");
        CHECK_EQ_U64(len, 7);
        /* The buffer is empty and owns nothing; it can be used again. */
        CHECK(!b.data && b.len == 0 && b.cap == 0 && b.max == 100);
        CHECK_OK(buf_append_str(&b, "second"));
        CHECK_STREQ((char *) b.data, "second");
        CHECK_STREQ(s, "payload");
        free(s);

        /* ret_len may be NULL. */
        s = NULL;
        CHECK_OK(buf_steal(&b, &s, NULL));
        CHECK_STREQ(s, "second");
        free(s);

        /* Stealing an empty, never-allocated buffer gives "" (never NULL). */
        s = NULL;
        len = 999;
        CHECK_OK(buf_steal(&b, &s, &len));
        CHECK(s);
        CHECK_STREQ(s, "");
        CHECK_EQ_U64(len, 0);
        free(s);

        /* Binary contents are handed over whole, with the NUL after them. */
        CHECK_OK(buf_append(&b, "a\0b", 3));
        CHECK_OK(buf_steal(&b, &s, &len));
        CHECK_EQ_U64(len, 3);
        CHECK_MEMEQ(s, "a\0b", 4);
        free(s);

        /* A full buffer can be stolen. */
        _cleanup_(buf_free) struct buf f = BUF_INIT(4);
        CHECK_OK(buf_append(&f, "full", 4));
        CHECK_OK(buf_steal(&f, &s, &len));
        CHECK_STREQ(s, "full");
        CHECK_EQ_U64(len, 4);
        free(s);
}

static void test_free(void) {
        struct buf b = BUF_INIT(50);

        CHECK_OK(buf_append_str(&b, "abc"));
        buf_free(&b);
        CHECK(!b.data && b.len == 0 && b.cap == 0);
        /* Still usable with the same maximum, and freeable again. */
        CHECK_EQ_U64(b.max, 50);
        CHECK_OK(buf_append_str(&b, "def"));
        CHECK_STREQ((char *) b.data, "def");
        buf_free(&b);
        buf_free(&b);
}

int main(void) {
        test_init();
        test_append();
        test_growth();
        test_maximum();
        test_printf();
        test_reset();
        test_steal();
        test_free();
        return 0;
}
