/* SPDX-License-Identifier: Apache-2.0 */
/*
 * resemble.h - resemblance detection: super-features of a chunk's content,
 * so that chunks that are similar (not identical) share some of them.
 *
 * N-transform features over a gear rolling hash (window 64 bytes), as in
 * the resemblance-detection literature (Shilane et al., Finesse): positions
 * are sampled where the mixed rolling hash has its top bits zero (1 in 32),
 * and feature i is the largest value of the linear transform
 * a_i * h + b_i (mod 2^64) over the samples. Features are grouped into
 * RESEMBLE_SF super-features, each a hash of RESEMBLE_FEATURES_PER_SF
 * features: two chunks sharing one super-feature very likely share much of
 * their content. Six pairs rather than three groups of four: across two
 * versions of a binary (addresses shifted everywhere) few 64-byte windows
 * survive, and a super-feature of four features then rarely matches; on
 * the benchmark's version bump six pairs find the base of about twice as
 * many new chunks. Pure, allocation-free, deterministic across builds (the
 * values are stored in the database and compared between servers).
 */
#pragma once

#include "trove/common.h"

#define RESEMBLE_SF 6
#define RESEMBLE_FEATURES_PER_SF 2
/* Chunks shorter than this get no super-features (too little to sample). */
#define RESEMBLE_MIN_LEN 4096u

/* 1 and sf[] for data[0..n), 0 if the chunk is too short or has too few
 * sampled positions to be described. Super-features are never 0. */
int resemble_features(const void *data, size_t n, uint64_t sf[RESEMBLE_SF]);
