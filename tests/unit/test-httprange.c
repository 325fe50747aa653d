/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "trove/httprange.h"
#include "test.h"

#define NO UINT64_MAX /* "not written" marker */

static const struct {
        const char *header;
        uint64_t size;
        int want;
        uint64_t start, end;
} cases[] = {
        /* bytes=A-B */
        { "bytes=0-0", 10, 0, 0, 0 },
        { "bytes=0-9", 10, 0, 0, 9 },
        { "bytes=2-5", 10, 0, 2, 5 },
        { "bytes=9-9", 10, 0, 9, 9 },
        { "bytes=0-10", 10, 0, 0, 9 },          /* B past the end: to the end */
        { "bytes=3-18446744073709551615", 10, 0, 3, 9 },
        { "bytes=0000000000000000000000000000000002-0000005", 10, 0, 2, 5 },
        { "bytes=10-10", 10, -ERANGE, NO, NO }, /* A at the end */
        { "bytes=11-20", 10, -ERANGE, NO, NO },
        { "bytes=5-4", 10, -ERANGE, NO, NO },   /* A > B */
        { "bytes=5-4", 3, -ERANGE, NO, NO },
        { "bytes=0-0", 0, -ERANGE, NO, NO },    /* empty representation */
        /* bytes=A- */
        { "bytes=0-", 10, 0, 0, 9 },
        { "bytes=9-", 10, 0, 9, 9 },
        { "bytes=10-", 10, -ERANGE, NO, NO },
        { "bytes=0-", 1, 0, 0, 0 },
        { "bytes=0-", 0, -ERANGE, NO, NO },
        { "bytes=18446744073709551615-", 10, -ERANGE, NO, NO },
        { "bytes=18446744073709551614-", UINT64_MAX, 0, UINT64_MAX - 1, UINT64_MAX - 1 },
        { "bytes=0-", UINT64_MAX, 0, 0, UINT64_MAX - 1 },
        /* bytes=-N */
        { "bytes=-1", 10, 0, 9, 9 },
        { "bytes=-3", 10, 0, 7, 9 },
        { "bytes=-10", 10, 0, 0, 9 },
        { "bytes=-11", 10, 0, 0, 9 },           /* suffix larger than size: all */
        { "bytes=-18446744073709551615", 10, 0, 0, 9 },
        { "bytes=-0", 10, -ERANGE, NO, NO },
        { "bytes=-000", 10, -ERANGE, NO, NO },
        { "bytes=-1", 0, -ERANGE, NO, NO },
        { "bytes=-5", 0, -ERANGE, NO, NO },
        { "bytes=-1", 1, 0, 0, 0 },
        /* numbers that do not fit in 64 bits are malformed, whatever the size */
        { "bytes=18446744073709551616-", 10, -EINVAL, NO, NO },
        { "bytes=0-18446744073709551616", 10, -EINVAL, NO, NO },
        { "bytes=-18446744073709551616", 10, -EINVAL, NO, NO },
        { "bytes=99999999999999999999-", 10, -EINVAL, NO, NO },
        { "bytes=-99999999999999999999999999999", 0, -EINVAL, NO, NO },
        /* malformed */
        { "", 10, -EINVAL, NO, NO },
        { "bytes", 10, -EINVAL, NO, NO },
        { "bytes=", 10, -EINVAL, NO, NO },
        { "bytes=-", 10, -EINVAL, NO, NO },
        { "bytes=-", 0, -EINVAL, NO, NO },
        { "bytes=5", 10, -EINVAL, NO, NO },
        { "bytes=--5", 10, -EINVAL, NO, NO },
        { "bytes=1--5", 10, -EINVAL, NO, NO },
        { "bytes=1-2-3", 10, -EINVAL, NO, NO },
        { "bytes=+1-2", 10, -EINVAL, NO, NO },
        { "bytes=1-+2", 10, -EINVAL, NO, NO },
        { "bytes=0x1-2", 10, -EINVAL, NO, NO },
        { "bytes=1-2,4-5", 10, -EINVAL, NO, NO }, /* one range only */
        { "bytes=1-2,", 10, -EINVAL, NO, NO },
        { "bytes=,1-2", 10, -EINVAL, NO, NO },
        { "Bytes=1-2", 10, -EINVAL, NO, NO },
        { "BYTES=1-2", 10, -EINVAL, NO, NO },
        { "items=1-2", 10, -EINVAL, NO, NO },
        { "bytes 1-2", 10, -EINVAL, NO, NO },
        { "bytes:1-2", 10, -EINVAL, NO, NO },
        { "=1-2", 10, -EINVAL, NO, NO },
        { "1-2", 10, -EINVAL, NO, NO },
        /* no whitespace anywhere */
        { " bytes=1-2", 10, -EINVAL, NO, NO },
        { "bytes =1-2", 10, -EINVAL, NO, NO },
        { "bytes= 1-2", 10, -EINVAL, NO, NO },
        { "bytes=1 -2", 10, -EINVAL, NO, NO },
        { "bytes=1- 2", 10, -EINVAL, NO, NO },
        { "bytes=1-2 ", 10, -EINVAL, NO, NO },
        { "bytes=1-2\t", 10, -EINVAL, NO, NO },
        { "bytes=1-2\r\n", 10, -EINVAL, NO, NO },
        { "bytes=\t1-2", 10, -EINVAL, NO, NO },
        /* malformed wins over unsatisfiable */
        { "bytes=5-4 ", 10, -EINVAL, NO, NO },
        { "bytes=20-,", 10, -EINVAL, NO, NO },
        { "bytes=-0 ", 0, -EINVAL, NO, NO },
};

static void test_cases(void) {
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint64_t s = NO, e = NO;
                int r = httprange_parse(cases[i].header, cases[i].size, &s, &e);
                if (r != cases[i].want || s != cases[i].start || e != cases[i].end)
                        TEST_FAIL("\"%s\" size %" PRIu64 ": got %d [%" PRIu64 ", %" PRIu64 "], want %d [%" PRIu64
                                  ", %" PRIu64 "]",
                                  cases[i].header, cases[i].size, r, s, e, cases[i].want, cases[i].start,
                                  cases[i].end);
        }
}

static void test_length_limit(void) {
        char h[HTTPRANGE_HEADER_MAX + 2];
        uint64_t s = NO, e = NO;
        size_t n;

        /* "bytes=" + zeros + "1-2", exactly HTTPRANGE_HEADER_MAX bytes: fine. */
        memcpy(h, "bytes=", 6);
        n = HTTPRANGE_HEADER_MAX - 6 - 3;
        memset(h + 6, '0', n);
        memcpy(h + 6 + n, "1-2", 4);
        CHECK_EQ_U64(strlen(h), HTTPRANGE_HEADER_MAX);
        CHECK_OK(httprange_parse(h, 10, &s, &e));
        CHECK_EQ_U64(s, 1);
        CHECK_EQ_U64(e, 2);

        /* One more byte: refused, even though it would otherwise parse. */
        memset(h + 6, '0', n + 1);
        memcpy(h + 6 + n + 1, "1-2", 4);
        CHECK_EQ_U64(strlen(h), HTTPRANGE_HEADER_MAX + 1);
        s = e = NO;
        CHECK_RC(httprange_parse(h, 10, &s, &e), -EINVAL);
        CHECK_EQ_U64(s, NO);
        CHECK_EQ_U64(e, NO);

        /* The length check reads at most one byte past the limit: a buffer
         * of HTTPRANGE_HEADER_MAX + 1 bytes without a NUL is refused without
         * reading beyond it (ASan would report it). */
        char *big = malloc(HTTPRANGE_HEADER_MAX + 1);
        CHECK(big);
        memcpy(big, "bytes=", 6);
        memset(big + 6, '1', HTTPRANGE_HEADER_MAX + 1 - 6);
        CHECK_RC(httprange_parse(big, 10, &s, &e), -EINVAL);
        free(big);

        CHECK_RC(httprange_parse(NULL, 10, &s, &e), -EINVAL);
}

/* Every satisfiable result lies inside the representation; A-B and the
 * equivalent suffix form agree. */
static void test_exhaustive_small(void) {
        char h[64];
        for (uint64_t size = 0; size < 12; size++)
                for (uint64_t a = 0; a < 14; a++)
                        for (uint64_t b = 0; b < 14; b++) {
                                uint64_t s, e;
                                int r;

                                snprintf(h, sizeof h, "bytes=%" PRIu64 "-%" PRIu64, a, b);
                                r = httprange_parse(h, size, &s, &e);
                                if (a < size && a <= b) {
                                        CHECK_OK(r);
                                        CHECK_EQ_U64(s, a);
                                        CHECK_EQ_U64(e, MIN(b, size - 1));
                                } else
                                        CHECK_RC(r, -ERANGE);

                                snprintf(h, sizeof h, "bytes=-%" PRIu64, b);
                                r = httprange_parse(h, size, &s, &e);
                                if (b > 0 && size > 0) {
                                        CHECK_OK(r);
                                        CHECK_EQ_U64(e, size - 1);
                                        CHECK_EQ_U64(e - s + 1, MIN(b, size));
                                } else
                                        CHECK_RC(r, -ERANGE);
                        }
}

int main(void) {
        test_cases();
        test_length_limit();
        test_exhaustive_small();
        return 0;
}
