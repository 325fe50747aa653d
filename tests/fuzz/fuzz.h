/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz.h - what a fuzz target shares with replay.c. While replay.c runs a
 * file from a folder named "reject" it sets fuzz_replay_must_reject, and a
 * target that accepts such an input aborts, so a must-reject corpus is a
 * test and not only a collection. Under libFuzzer there is no replay.c:
 * the weak declaration resolves to NULL and the check is skipped.
 */
#pragma once

#include <stdbool.h>

extern bool fuzz_replay_must_reject __attribute__((weak));

static inline bool fuzz_must_reject(void) {
        return &fuzz_replay_must_reject && fuzz_replay_must_reject;
}
