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

int resemble_features(const void *data, size_t n, uint64_t sf[RESEMBLE_SF]) {
        const uint8_t *p = data;
        uint64_t a[N_FEATURES], b[N_FEATURES], feat[N_FEATURES];
        uint64_t h = 0;
        size_t samples = 0;

        if (n < RESEMBLE_MIN_LEN)
                return 0;
        for (unsigned i = 0; i < N_FEATURES; i++) {
                a[i] = transform_a(i);
                b[i] = transform_b(i);
                feat[i] = 0;
        }
        for (size_t k = 0; k < n; k++) {
                h = (h << 1) + chunker_gear[p[k]];
                /* The first 63 positions hash less than a full window. */
                if (k < 63 || (h * 0x9e3779b97f4a7c15ull) >> SAMPLE_SHIFT != 0)
                        continue;
                samples++;
                for (unsigned i = 0; i < N_FEATURES; i++) {
                        uint64_t v = a[i] * h + b[i];
                        if (v > feat[i])
                                feat[i] = v;
                }
        }
        if (samples < SAMPLES_MIN)
                return 0;
        for (unsigned s = 0; s < RESEMBLE_SF; s++) {
                uint64_t x = 0x243f6a8885a308d3ull * (s + 1);
                for (unsigned j = 0; j < RESEMBLE_FEATURES_PER_SF; j++)
                        x = mix64(x ^ feat[s * RESEMBLE_FEATURES_PER_SF + j]);
                /* Stored as a signed bigint; 0 is kept for "none". */
                sf[s] = x ? x : 1;
        }
        return 1;
}
