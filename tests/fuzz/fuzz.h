/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz.h - what a fuzz target shares with replay.c. While replay.c runs a
 * file from a folder named "reject" it sets fuzz_replay_must_reject, and a
 * target that accepts such an input aborts, so a must-reject corpus is a
 * test and not only a collection. Under libFuzzer there is no replay.c:
 * the weak declaration resolves to NULL and the check is skipped.
 */
#pragma once

#include <sodium.h>
#include <stdbool.h>

#include "trove/buf.h"

extern bool fuzz_replay_must_reject __attribute__((weak));

static inline bool fuzz_must_reject(void) {
        return &fuzz_replay_must_reject && fuzz_replay_must_reject;
}

/* Appends p as base64url without padding (JWT parts a target builds). */
static inline int fuzz_b64url(struct buf *b, const void *p, size_t n) {
        size_t enc = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        int r = buf_reserve(b, enc);
        if (r < 0)
                return r;
        sodium_bin2base64((char *) b->data + b->len, enc, p, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        b->len += enc - 1;
        return 0;
}
