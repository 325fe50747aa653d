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
                /* Known values: features stored by one build must match
                 * those of the next (a change of these is a change of the
                 * schema: see migration 8 in server/db.c). 40003 bytes
                 * leave a tail after the four lanes. */
                static const uint64_t known[RESEMBLE_SF] = {
                        0x7d36d3171336f97aull, 0x9693237d801c2c3cull, 0x0e9faa97d873f0deull,
                        0x49f449d9c6c566ddull, 0x25cf548149ac9e39ull, 0x543a930cb9d0d7d7ull };
                static const uint64_t known_40003[RESEMBLE_SF] = {
                        0x0f2f8f533e4b04c8ull, 0x9693237d801c2c3cull, 0xb9ff8835679a658eull,
                        0xf30d2664ed404b9dull, 0x25cf548149ac9e39ull, 0x543a930cb9d0d7d7ull };
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
