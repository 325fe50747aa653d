/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test.h - assertions for the unit test programs. A failed check prints
 * where and what, and exits 1; a test program that returns 0 passed.
 */
#pragma once

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_FAIL(...)                                                  \
        do {                                                            \
                fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);   \
                fprintf(stderr, __VA_ARGS__);                           \
                fputc('\n', stderr);                                    \
                exit(1);                                                \
        } while (0)

#define CHECK(expr)                                                     \
        do {                                                            \
                if (!(expr))                                            \
                        TEST_FAIL("%s", #expr);                         \
        } while (0)

/* r is an int return code that must be exactly want. */
#define CHECK_RC(expr, want)                                            \
        do {                                                            \
                long _r = (long) (expr);                                \
                long _w = (long) (want);                                \
                if (_r != _w)                                           \
                        TEST_FAIL("%s returned %ld (%s), want %ld",     \
                                  #expr, _r, _r < 0 ? strerror((int) -_r) : "", _w); \
        } while (0)

#define CHECK_OK(expr) CHECK_RC(expr, 0)

#define CHECK_STREQ(a, b)                                               \
        do {                                                            \
                const char *_a = (a), *_b = (b);                        \
                if (!_a || !_b || strcmp(_a, _b) != 0)                  \
                        TEST_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, \
                                  _a ? _a : "(null)", _b ? _b : "(null)"); \
        } while (0)

#define CHECK_MEMEQ(a, b, n)                                            \
        do {                                                            \
                if (memcmp((a), (b), (n)) != 0)                         \
                        TEST_FAIL("%s and %s differ", #a, #b);          \
        } while (0)

#define CHECK_EQ_U64(a, b)                                              \
        do {                                                            \
                uint64_t _a = (uint64_t) (a), _b = (uint64_t) (b);      \
                if (_a != _b)                                           \
                        TEST_FAIL("%s == %s: %" PRIu64 " != %" PRIu64,  \
                                  #a, #b, _a, _b);                      \
        } while (0)

/* Deterministic pseudo-random bytes (xorshift64*), for reproducible tests. */
static inline uint64_t test_rand(uint64_t *s) {
        uint64_t x = *s;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *s = x;
        return x * 0x2545F4914F6CDD1DULL;
}

static inline void test_fill(uint8_t *p, size_t n, uint64_t seed) {
        uint64_t s = seed ? seed : 1;
        for (size_t i = 0; i < n; i++)
                p[i] = (uint8_t) (test_rand(&s) >> 56);
}
