/* SPDX-License-Identifier: Apache-2.0 */
/*
 * chunker.h - FastCDC content-defined chunking (normalized chunking, gear
 * hash), allocation-free and fed arbitrary slices.
 *
 * The cut points depend only on the bytes, never on how the input was
 * sliced: the state carried between calls is the rolling hash and the length
 * of the chunk in progress. Rules: no cut before min bytes; between min and
 * avg a cut needs the stricter mask, after avg the looser one; a chunk never
 * exceeds max; the last chunk is whatever remains (possibly shorter than
 * min). Defaults 16/64/256 KiB.
 */
#pragma once

#include "trove/common.h"

#define CHUNKER_MIN_DEFAULT (16u * 1024)
#define CHUNKER_AVG_DEFAULT (64u * 1024)
#define CHUNKER_MAX_DEFAULT (256u * 1024)
/* Hard limits on the parameters (min >= 64, avg a power of two). */
#define CHUNKER_MIN_LOWEST 64u
#define CHUNKER_MAX_HIGHEST (64u * 1024 * 1024)

struct chunker_params {
        uint32_t min_size;
        uint32_t avg_size;
        uint32_t max_size;
};

struct chunker {
        struct chunker_params p;
        uint64_t mask_s;      /* stricter mask, before avg */
        uint64_t mask_l;      /* looser mask, after avg */
        uint64_t hash;
        uint32_t len;         /* bytes in the chunk in progress */
};

/* The gear table (part of the storage format: changing it changes every
 * cut). Exposed so that tests and other implementations can check the
 * rule: H(0) = 0, H(L) = 2 H(L-1) + chunker_gear[byte L-1] mod 2^64; the
 * chunk ends at the smallest L with min <= L <= avg and H & mask_s == 0,
 * avg < L < max and H & mask_l == 0, or L == max. */
extern const uint64_t chunker_gear[256];

void chunker_params_default(struct chunker_params *p);
/* -EINVAL unless min >= CHUNKER_MIN_LOWEST, avg power of two,
 * min < avg < max <= CHUNKER_MAX_HIGHEST. */
int chunker_params_check(const struct chunker_params *p);
int chunker_init(struct chunker *c, const struct chunker_params *p);
/* Scans p[0..n). Returns the number of bytes of p that end the chunk in
 * progress (1..n: a cut after that many bytes; the state is reset for the
 * next chunk), or 0 if no cut was found in p (all n bytes belong to the
 * chunk in progress). Call again with the rest after a cut. */
size_t chunker_scan(struct chunker *c, const void *p, size_t n);
/* Bytes in the chunk in progress (the final chunk at end of input). */
static inline uint32_t chunker_pending(const struct chunker *c) {
        return c->len;
}
