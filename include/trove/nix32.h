/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nix32.h - Nix's base32 ("nix32"): alphabet 0123456789abcdfghijklmnpqrsvwxyz
 * (no e, o, u, t), least significant 5-bit group printed last, as in
 * `nix-hash --to-base32`. Caller-allocated buffers, no heap.
 */
#pragma once

#include "trove/common.h"

/* Characters needed for n bytes (without the NUL). */
static inline size_t nix32_encoded_len(size_t n) {
        return (n * 8 + 4) / 5;
}

/* Writes nix32_encoded_len(n) characters and a NUL to out. */
void nix32_encode(const uint8_t *in, size_t n, char *out);

/* Decodes exactly slen characters into n bytes. Fails with -EINVAL if the
 * length is not nix32_encoded_len(n), a character is outside the alphabet,
 * or bits beyond n bytes are set. */
int nix32_decode(const char *s, size_t slen, uint8_t *out, size_t n);

/* True if c is in the nix32 alphabet. */
bool nix32_is_char(char c);
