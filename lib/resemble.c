/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Super-features for resemblance detection (resemble.h).
 */
#include "trove/chunker.h"
#include "trove/resemble.h"

#define N_FEATURES (RESEMBLE_SF * RESEMBLE_FEATURES_PER_SF)
/* A sample where the top 5 bits of the mixed hash are zero: 1 in 32. */
#define SAMPLE_SHIFT 59
#define SAMPLES_MIN 16

static uint64_t mix64(uint64_t x) {
        x ^= x >> 30;
        x *= 0xbf58476d1ce4e5b9ull;
        x ^= x >> 27;
        x *= 0x94d049bb133111ebull;
        x ^= x >> 31;
        return x;
}

/* Fixed odd multipliers and offsets of the transforms (splitmix64 of 1..24). */
static uint64_t transform_a(unsigned i) {
        return mix64(0x9e3779b97f4a7c15ull * (2 * i + 1)) | 1;
}

static uint64_t transform_b(unsigned i) {
        return mix64(0x9e3779b97f4a7c15ull * (2 * i + 2));
}

/* The gear hash of position k depends on bytes k-63..k only (older bytes
 * are shifted out of the 64 bits), so the positions can be cut into lanes
 * scanned side by side, each starting 63 bytes early: the same samples as
 * one scan from the start, without one long chain of dependent additions.
 * Samples are gathered without a branch per byte (1 in 32 is taken, at
 * random: a branch would mispredict at every one) and run through the
 * transforms a block at a time. */
#define LANES 4
#define LANE_BLOCK 256

struct features {
        uint64_t a[N_FEATURES], b[N_FEATURES], feat[N_FEATURES];
        size_t samples;
};

static void features_add(struct features *f, const uint64_t *s, size_t n) {
        for (unsigned i = 0; i < N_FEATURES; i++) {
                uint64_t a = f->a[i], b = f->b[i], m = f->feat[i];
                for (size_t k = 0; k < n; k++) {
                        uint64_t v = a * s[k] + b;
                        m = v > m ? v : m;
                }
                f->feat[i] = m;
        }
        f->samples += n;
}

static inline bool sampled(uint64_t h) {
        return (h * 0x9e3779b97f4a7c15ull) >> SAMPLE_SHIFT == 0;
}

/* Positions [from, to) alone (from >= 63), with the 63 bytes before. */
static void scan_one(struct features *f, const uint8_t *p, size_t from, size_t to) {
        uint64_t s[LANE_BLOCK], h = 0;
        size_t m = 0;

        for (size_t k = from - 63; k < from; k++)
                h = (h << 1) + chunker_gear[p[k]];
        for (size_t k = from; k < to; k++) {
                h = (h << 1) + chunker_gear[p[k]];
                s[m] = h;
                m += sampled(h);
                if (m == LANE_BLOCK) {
                        features_add(f, s, m);
                        m = 0;
                }
        }
        features_add(f, s, m);
}

int resemble_features(const void *data, size_t n, uint64_t sf[RESEMBLE_SF]) {
        const uint8_t *p = data;
        struct features f = {};
        uint64_t samp[LANES][LANE_BLOCK], h[LANES] = {};
        size_t at[LANES], len;

        if (n < RESEMBLE_MIN_LEN)
                return 0;
        for (unsigned i = 0; i < N_FEATURES; i++) {
                f.a[i] = transform_a(i);
                f.b[i] = transform_b(i);
        }
        /* The first 63 positions hash less than a full window. */
        len = (n - 63) / LANES;
        for (unsigned j = 0; j < LANES; j++) {
                at[j] = 63 + j * len;
                for (size_t k = at[j] - 63; k < at[j]; k++)
                        h[j] = (h[j] << 1) + chunker_gear[p[k]];
        }
        for (size_t done = 0; done < len;) {
                size_t step = MIN(len - done, (size_t) LANE_BLOCK), m0 = 0, m1 = 0, m2 = 0, m3 = 0;
                const uint8_t *p0 = p + at[0], *p1 = p + at[1], *p2 = p + at[2], *p3 = p + at[3];
                uint64_t h0 = h[0], h1 = h[1], h2 = h[2], h3 = h[3];
                /* Four lanes, each with its own samples: no chain between them. */
                for (size_t k = 0; k < step; k++) {
                        h0 = (h0 << 1) + chunker_gear[p0[k]];
                        h1 = (h1 << 1) + chunker_gear[p1[k]];
                        h2 = (h2 << 1) + chunker_gear[p2[k]];
                        h3 = (h3 << 1) + chunker_gear[p3[k]];
                        samp[0][m0] = h0;
                        samp[1][m1] = h1;
                        samp[2][m2] = h2;
                        samp[3][m3] = h3;
                        m0 += sampled(h0);
                        m1 += sampled(h1);
                        m2 += sampled(h2);
                        m3 += sampled(h3);
                }
                h[0] = h0, h[1] = h1, h[2] = h2, h[3] = h3;
                features_add(&f, samp[0], m0);
                features_add(&f, samp[1], m1);
                features_add(&f, samp[2], m2);
                features_add(&f, samp[3], m3);
                for (unsigned j = 0; j < LANES; j++)
                        at[j] += step;
                done += step;
        }
        /* What the lanes left: the last lane ends at n. */
        scan_one(&f, p, at[LANES - 1], n);
        if (f.samples < SAMPLES_MIN)
                return 0;
        for (unsigned s = 0; s < RESEMBLE_SF; s++) {
                uint64_t x = 0x243f6a8885a308d3ull * (s + 1);
                for (unsigned j = 0; j < RESEMBLE_FEATURES_PER_SF; j++)
                        x = mix64(x ^ f.feat[s * RESEMBLE_FEATURES_PER_SF + j]);
                /* Stored as a signed bigint; 0 is kept for "none". */
                sf[s] = x ? x : 1;
        }
        return 1;
}
