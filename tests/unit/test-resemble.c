/* SPDX-License-Identifier: Apache-2.0 */
#include "test.h"
#include "trove/resemble.h"

static unsigned shared(const uint64_t a[RESEMBLE_SF], const uint64_t b[RESEMBLE_SF]) {
        unsigned k = 0;
        for (unsigned i = 0; i < RESEMBLE_SF; i++)
                k += a[i] == b[i];
        return k;
}

int main(void) {
        const size_t n = 65536;
        uint8_t *p = malloc(n), *q = malloc(n);
        uint64_t a[RESEMBLE_SF], b[RESEMBLE_SF], c[RESEMBLE_SF];
        unsigned similar = 0, unrelated = 0;

        CHECK(p && q);
        /* too short to describe */
        test_fill(p, n, 1);
        CHECK_RC(resemble_features(p, RESEMBLE_MIN_LEN - 1, a), 0);
        /* deterministic, never 0; known values keep stored features valid
         * across builds */
        CHECK_RC(resemble_features(p, n, a), 1);
        CHECK_RC(resemble_features(p, n, b), 1);
        CHECK_MEMEQ(a, b, sizeof a);
        for (unsigned i = 0; i < RESEMBLE_SF; i++)
                CHECK(a[i] != 0);
        {
                /* The values of the first (one-lane) implementation: the
                 * features of chunks stored by it still match. 40003 bytes
                 * leave a tail after the lanes. */
                static const uint64_t known[RESEMBLE_SF] = { 0x2c74e7b3ba0c5b34ull, 0x33d96e6dfabfff95ull,
                                                            0x6fabfd398d725f56ull };
                static const uint64_t known_40003[RESEMBLE_SF] = { 0xe0f5f00214e9b7a7ull, 0x488212fd335ce398ull,
                                                                  0x6fabfd398d725f56ull };
                CHECK_MEMEQ(a, known, sizeof a);
                CHECK_RC(resemble_features(p, 40003, a), 1);
                CHECK_MEMEQ(a, known_40003, sizeof a);
        }
        /* runs of one byte: every position sampled, or none */
        for (unsigned v = 0; v < 256; v++) {
                memset(p, (int) v, n);
                CHECK(resemble_features(p, n, a) >= 0);
        }
        /* a few small edits keep most super-features; unrelated content
         * shares none (over many trials) */
        for (uint64_t seed = 10; seed < 60; seed++) {
                test_fill(p, n, seed);
                memcpy(q, p, n);
                for (size_t k = seed * 97; k + 4 < n; k += 20011)
                        memcpy(q + k, "edit", 4);
                CHECK_RC(resemble_features(p, n, a), 1);
                CHECK_RC(resemble_features(q, n, b), 1);
                test_fill(q, n, seed + 1000);
                CHECK_RC(resemble_features(q, n, c), 1);
                similar += shared(a, b) > 0;
                unrelated += shared(a, c) > 0;
        }
        CHECK(similar >= 45);
        CHECK(unrelated == 0);
        /* an insertion shifts content without losing the resemblance */
        test_fill(p, n, 5);
        memcpy(q, "inserted", 8);
        memcpy(q + 8, p, n - 8);
        CHECK_RC(resemble_features(p, n, a), 1);
        CHECK_RC(resemble_features(q, n, b), 1);
        CHECK(shared(a, b) > 0);
        free(p);
        free(q);
        return 0;
}
