/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "test.h"
#include "trove/chunker.h"
#include "trove/hash.h"

enum slicing { SLICE_ONE, SLICE_BYTES, SLICE_RANDOM };

/* Chunks data[0..n) fed in slices; returns the chunk lengths (caller frees)
 * and their count. Checks the chunker's own accounting on the way. */
static uint32_t *chunk_all(const struct chunker_params *p, const uint8_t *data, size_t n,
                           enum slicing mode, uint64_t seed, size_t *ret_count) {
        struct chunker c;
        size_t cap = n / p->min_size + 2, count = 0, off = 0;
        uint32_t *lens = calloc(cap, sizeof *lens);
        uint64_t s = seed | 1, start = 0;

        CHECK(lens);
        CHECK_OK(chunker_init(&c, p));
        while (off < n) {
                size_t slice;
                switch (mode) {
                case SLICE_ONE:
                        slice = n - off;
                        break;
                case SLICE_BYTES:
                        slice = 1;
                        break;
                default:
                        /* mostly small slices, sometimes large ones */
                        slice = test_rand(&s) % 4 == 0 ? test_rand(&s) % (3 * p->max_size) + 1
                                                       : test_rand(&s) % 200 + 1;
                        break;
                }
                slice = MIN(slice, n - off);
                while (slice > 0) {
                        size_t k = chunker_scan(&c, data + off, slice);
                        CHECK(k <= slice);
                        if (k == 0) {
                                off += slice;
                                break;
                        }
                        CHECK(count < cap);
                        lens[count++] = (uint32_t) (off + k - start);
                        CHECK_EQ_U64(chunker_pending(&c), 0);
                        off += k;
                        start = off;
                        slice -= k;
                }
                CHECK_EQ_U64(chunker_pending(&c), off - start);
        }
        if (chunker_pending(&c) > 0) {
                CHECK(count < cap);
                lens[count++] = chunker_pending(&c);
        }
        *ret_count = count;
        return lens;
}

static void check_bounds(const struct chunker_params *p, const uint32_t *lens, size_t count,
                         size_t n) {
        uint64_t total = 0;
        for (size_t i = 0; i < count; i++) {
                total += lens[i];
                CHECK(lens[i] > 0);
                CHECK(lens[i] <= p->max_size);
                if (i + 1 < count && lens[i] < p->min_size)
                        TEST_FAIL("chunk %zu of %zu is %u bytes, below min %u", i, count, lens[i],
                                  p->min_size);
        }
        /* The chunks are consecutive slices: together they are the input. */
        CHECK_EQ_U64(total, n);
}

static void check_same(const uint32_t *a, size_t na, const uint32_t *b, size_t nb) {
        CHECK_EQ_U64(na, nb);
        for (size_t i = 0; i < na; i++)
                if (a[i] != b[i])
                        TEST_FAIL("chunk %zu: %u bytes vs %u bytes", i, a[i], b[i]);
}

static void test_params(void) {
        struct chunker_params p;
        struct chunker c;

        chunker_params_default(&p);
        CHECK_EQ_U64(p.min_size, 16 * 1024);
        CHECK_EQ_U64(p.avg_size, 64 * 1024);
        CHECK_EQ_U64(p.max_size, 256 * 1024);
        CHECK_OK(chunker_params_check(&p));
        CHECK_OK(chunker_init(&c, &p));
        CHECK(c.mask_s != c.mask_l);
        CHECK_EQ_U64(__builtin_popcountll(c.mask_s), 18);
        CHECK_EQ_U64(__builtin_popcountll(c.mask_l), 14);

        const struct chunker_params bad[] = {
                { 0, 0, 0 },
                { 63, 128, 256 },                       /* min below 64 */
                { 64, 100, 256 },                       /* avg not a power of two */
                { 128, 128, 256 },                      /* min == avg */
                { 256, 128, 512 },                      /* min > avg */
                { 64, 128, 128 },                       /* avg == max */
                { 1024, 4096, 64 * 1024 * 1024 + 1 },   /* max too large */
                { 1u << 31, 1u << 31, UINT32_MAX },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                c.len = 12345;
                CHECK_RC(chunker_params_check(&bad[i]), -EINVAL);
                CHECK_RC(chunker_init(&c, &bad[i]), -EINVAL);
                CHECK_EQ_U64(c.len, 12345); /* untouched on failure */
        }
        CHECK_RC(chunker_params_check(NULL), -EINVAL);

        const struct chunker_params good[] = {
                { 64, 128, 129 },
                { 1024, 4096, 64 * 1024 * 1024 },
                { 4 * 1024 * 1024, 16 * 1024 * 1024, 64 * 1024 * 1024 },
        };
        for (size_t i = 0; i < ELEMENTSOF(good); i++)
                CHECK_OK(chunker_init(&c, &good[i]));
}

/* Slicing must not matter: one slice, 1-byte slices and random slices give
 * the same cuts, on random data, on runs of one byte value (forced cuts at
 * max) and on their mixture. */
static void test_slicing(void) {
        const struct chunker_params p = { 256, 1024, 4096 };
        const size_t n = 1 << 20;
        uint8_t *data = malloc(n);
        size_t n1, n2, n3;

        CHECK(data);
        test_fill(data, n, 7);
        memset(data + n / 4, 0, n / 8);          /* one long run of zeros */
        memset(data + n / 2, 0xa5, 10000);       /* and another value */
        for (size_t i = 3 * n / 4; i < 3 * n / 4 + 20000; i++)
                data[i] = (uint8_t) (i % 7);     /* short period */

        uint32_t *one = chunk_all(&p, data, n, SLICE_ONE, 0, &n1);
        uint32_t *bytes = chunk_all(&p, data, n, SLICE_BYTES, 0, &n2);
        check_bounds(&p, one, n1, n);
        check_same(one, n1, bytes, n2);
        for (uint64_t seed = 1; seed <= 5; seed++) {
                uint32_t *rnd = chunk_all(&p, data, n, SLICE_RANDOM, seed, &n3);
                check_same(one, n1, rnd, n3);
                free(rnd);
        }

        /* The zero run is cut at max (or at min if the constant hash of
         * zeros happens to match): whole equal-sized chunks inside it. */
        size_t off = 0, max_chunks = 0;
        for (size_t i = 0; i < n1; i++) {
                if (off >= n / 4 + 8192 && off + one[i] <= n / 4 + n / 8 - 8192) {
                        CHECK(one[i] == p.max_size || one[i] == p.min_size);
                        max_chunks++;
                }
                off += one[i];
        }
        CHECK(max_chunks >= 20);
        free(one);
        free(bytes);

        /* Same with the defaults on 8 MiB of random data, random slices. */
        struct chunker_params d;
        chunker_params_default(&d);
        free(data);
        data = malloc(8 << 20);
        CHECK(data);
        test_fill(data, 8 << 20, 8);
        one = chunk_all(&d, data, 8 << 20, SLICE_ONE, 0, &n1);
        check_bounds(&d, one, n1, 8 << 20);
        uint32_t *rnd = chunk_all(&d, data, 8 << 20, SLICE_RANDOM, 99, &n3);
        check_same(one, n1, rnd, n3);
        free(one);
        free(rnd);
        free(data);
}

/* The rule as the header states it, hashing every byte from the chunk
 * start: the fast scanner (which skips the first min - 64 bytes) must cut
 * at exactly the same places. */
static uint32_t *chunk_reference(const struct chunker_params *p, const uint8_t *data, size_t n,
                                 size_t *ret_count) {
        struct chunker c;
        size_t count = 0, cap = n / p->min_size + 2;
        uint32_t *lens = calloc(cap, sizeof *lens), len = 0;
        uint64_t h = 0;

        CHECK(lens);
        CHECK_OK(chunker_init(&c, p));
        for (size_t i = 0; i < n; i++) {
                h = (h << 1) + chunker_gear[data[i]];
                len++;
                if ((len >= p->min_size && len <= p->avg_size && (h & c.mask_s) == 0) ||
                    (len > p->avg_size && (h & c.mask_l) == 0) || len == p->max_size) {
                        CHECK(count < cap);
                        lens[count++] = len;
                        len = 0;
                        h = 0;
                }
        }
        if (len > 0)
                lens[count++] = len;
        *ret_count = count;
        return lens;
}

static void test_reference(void) {
        /* Small masks so that cuts land right at min and right after avg
         * often, where an off-by-one in the skipped prefix would show. */
        const struct chunker_params ps[] = {
                { 64, 128, 1024 },
                { 100, 256, 300 },
                { 1000, 2048, 8192 },
                { 16 * 1024, 64 * 1024, 256 * 1024 },
        };
        const size_t n = 4 << 20;
        uint8_t *data = malloc(n);
        size_t n1, n2, at_min = 0;

        CHECK(data);
        test_fill(data, n, 11);
        memset(data + n / 3, 0, 100000);
        for (size_t i = 0; i < ELEMENTSOF(ps); i++) {
                uint32_t *ref = chunk_reference(&ps[i], data, n, &n1);
                uint32_t *fast = chunk_all(&ps[i], data, n, SLICE_RANDOM, i + 1, &n2);
                check_same(ref, n1, fast, n2);
                for (size_t j = 0; j < n1; j++)
                        at_min += ref[j] == ps[i].min_size;
                free(ref);
                free(fast);
        }
        CHECK(at_min > 10);
        free(data);
}

static void test_small_inputs(void) {
        struct chunker_params d;
        uint8_t data[20000];
        size_t count;

        chunker_params_default(&d);
        test_fill(data, sizeof data, 3);
        /* Below min: exactly one chunk, the whole input. */
        uint32_t *lens = chunk_all(&d, data, sizeof data, SLICE_ONE, 0, &count);
        CHECK_EQ_U64(count, 1);
        CHECK_EQ_U64(lens[0], sizeof data);
        free(lens);
        lens = chunk_all(&d, data, 1, SLICE_ONE, 0, &count);
        CHECK_EQ_U64(count, 1);
        CHECK_EQ_U64(lens[0], 1);
        free(lens);

        struct chunker c;
        CHECK_OK(chunker_init(&c, &d));
        CHECK_EQ_U64(chunker_scan(&c, data, 0), 0);
        CHECK_EQ_U64(chunker_pending(&c), 0);
}

static int cmp_id(const void *a, const void *b) {
        return memcmp(a, b, SHA256_DIGEST_LEN);
}

static uint8_t (*chunk_ids(const uint8_t *data, const uint32_t *lens, size_t count))[SHA256_DIGEST_LEN] {
        uint8_t (*ids)[SHA256_DIGEST_LEN] = calloc(count, SHA256_DIGEST_LEN);
        size_t off = 0;
        CHECK(ids);
        for (size_t i = 0; i < count; i++) {
                CHECK_OK(sha256_buf(data + off, lens[i], ids[i]));
                off += lens[i];
        }
        qsort(ids, count, SHA256_DIGEST_LEN, cmp_id);
        return ids;
}

/* Ids in a that are not in b (both sorted). */
static size_t ids_missing(uint8_t (*a)[SHA256_DIGEST_LEN], size_t na,
                          uint8_t (*b)[SHA256_DIGEST_LEN], size_t nb) {
        size_t i = 0, j = 0, missing = 0;
        while (i < na) {
                int c = j < nb ? memcmp(a[i], b[j], SHA256_DIGEST_LEN) : -1;
                if (c == 0) {
                        i++;
                        j++;
                } else if (c < 0) {
                        missing++;
                        i++;
                } else {
                        j++;
                }
        }
        return missing;
}

/* The point of content-defined chunking: an insertion of a few bytes in a
 * large input changes only the chunks around it. Also the mean chunk size
 * on random data. */
static void test_local_edit(void) {
        const size_t n = 100u << 20, ins = 5;
        struct chunker_params d;
        uint8_t *data = malloc(n + ins);
        size_t n1, n2;

        chunker_params_default(&d);
        CHECK(data);
        test_fill(data, n, 2024);

        uint32_t *a = chunk_all(&d, data, n, SLICE_ONE, 0, &n1);
        check_bounds(&d, a, n1, n);
        double mean = (double) n / (double) n1;
        fprintf(stderr, "100 MiB random: %zu chunks, mean %.0f bytes (avg %u)\n", n1, mean,
                d.avg_size);
        CHECK(mean > 0.8 * d.avg_size && mean < 1.25 * d.avg_size);
        uint8_t (*ida)[SHA256_DIGEST_LEN] = chunk_ids(data, a, n1);

        /* Insert 5 bytes in the middle. */
        size_t at = n / 2 + 12345;
        memmove(data + at + ins, data + at, n - at);
        memcpy(data + at, "EDIT!", ins);
        uint32_t *b = chunk_all(&d, data, n + ins, SLICE_ONE, 0, &n2);
        check_bounds(&d, b, n2, n + ins);
        uint8_t (*idb)[SHA256_DIGEST_LEN] = chunk_ids(data, b, n2);

        size_t gone = ids_missing(ida, n1, idb, n2), added = ids_missing(idb, n2, ida, n1);
        fprintf(stderr, "insertion of %zu bytes: %zu chunk ids gone, %zu new\n", ins, gone,
                added);
        CHECK(added >= 1); /* the edited chunk itself must differ */
        CHECK(gone >= 1);
        CHECK(added <= 3);
        CHECK(gone <= 3);

        /* And the same after deleting those bytes again: back to the
         * original cuts exactly. */
        memmove(data + at, data + at + ins, n - at);
        uint32_t *c = chunk_all(&d, data, n, SLICE_ONE, 0, &n2);
        check_same(a, n1, c, n2);

        free(a);
        free(b);
        free(c);
        free(ida);
        free(idb);
        free(data);
}

/* The cut points are part of the storage format: chunk ids stored by one
 * version must be found again by the next. This pins them (defaults, 4 MiB
 * of test_fill(seed 42)). */
#define KNOWN_COUNT 54
#define KNOWN_FIRST 27836
#define KNOWN_DIGEST "7a8db926abd12ba5b61c698a966ee114f4d406d9919a95a033d50cc8a28def0d"

static void test_known_cuts(void) {
        const size_t n = 4u << 20;
        struct chunker_params d;
        uint8_t *data = malloc(n), digest[SHA256_DIGEST_LEN];
        char hex[2 * SHA256_DIGEST_LEN + 1];
        size_t count;

        CHECK(data);
        chunker_params_default(&d);
        test_fill(data, n, 42);
        uint32_t *lens = chunk_all(&d, data, n, SLICE_ONE, 0, &count);
        fprintf(stderr, "known cuts: %zu chunks, first %u %u %u\n", count, lens[0], lens[1],
                lens[2]);
        /* little-endian u32 lengths, hashed */
        uint8_t *le = malloc(count * 4);
        CHECK(le);
        for (size_t i = 0; i < count; i++)
                for (int k = 0; k < 4; k++)
                        le[i * 4 + k] = (uint8_t) (lens[i] >> (8 * k));
        CHECK_OK(sha256_buf(le, count * 4, digest));
        hex_encode(digest, sizeof digest, hex);
        fprintf(stderr, "known cuts digest %s\n", hex);
        CHECK_EQ_U64(count, KNOWN_COUNT);
        CHECK_EQ_U64(lens[0], KNOWN_FIRST);
        CHECK_STREQ(hex, KNOWN_DIGEST);
        free(le);
        free(lens);
        free(data);
}

int main(void) {
        test_params();
        test_small_inputs();
        test_reference();
        test_slicing();
        test_known_cuts();
        test_local_edit();
        return 0;
}
