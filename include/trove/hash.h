/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hash.h - streaming SHA-256 (OpenSSL EVP, so SHA-NI is used where the CPU
 * has it) and Nix's hash strings.
 *
 * Accepted on input: "sha256:" followed by base16 (64 chars), nix32 (52) or
 * base64 (44), and SRI "sha256-<base64>". Nothing else: other algorithms are
 * refused with -EOPNOTSUPP, bad text with -EINVAL. Base16 may be upper
 * case (Nix accepts it); base64 is strict: exact length, correct padding,
 * zero spare bits, no whitespace.
 */
#pragma once

#include "trove/common.h"

#define SHA256_DIGEST_LEN 32
#define HASH_BASE16_LEN 64
#define HASH_NIX32_LEN 52
#define HASH_BASE64_LEN 44
/* Longest string hash_format() writes, with the NUL. */
#define HASH_STRING_MAX (sizeof("sha256:") + HASH_BASE16_LEN)

struct sha256 {
        void *ctx; /* EVP_MD_CTX, owned */
};

int sha256_init(struct sha256 *h);
int sha256_update(struct sha256 *h, const void *p, size_t n);
/* Writes the digest and resets the context for another use. */
int sha256_final(struct sha256 *h, uint8_t out[SHA256_DIGEST_LEN]);
void sha256_done(struct sha256 *h);
/* One-shot. */
int sha256_buf(const void *p, size_t n, uint8_t out[SHA256_DIGEST_LEN]);

enum hash_encoding {
        HASH_BASE16,
        HASH_NIX32,
        HASH_BASE64,
        HASH_SRI,
};

/* Writes e.g. "sha256:1b8m03r6…" (or "sha256-…" for SRI) into out. */
void hash_format(const uint8_t h[SHA256_DIGEST_LEN], enum hash_encoding enc,
                 char out[HASH_STRING_MAX]);
int hash_parse(const char *s, uint8_t ret[SHA256_DIGEST_LEN]);

/* Lower-case hex of any length; out must hold 2n+1. */
void hex_encode(const uint8_t *in, size_t n, char *out);
int hex_decode(const char *s, size_t slen, uint8_t *out, size_t n);

/* Standard base64 with padding; out must hold base64_encoded_len(n)+1. */
static inline size_t base64_encoded_len(size_t n) {
        return (n + 2) / 3 * 4;
}
void base64_encode(const uint8_t *in, size_t n, char *out);
/* Decodes padded base64 that must give exactly n bytes. */
int base64_decode(const char *s, size_t slen, uint8_t *out, size_t n);
