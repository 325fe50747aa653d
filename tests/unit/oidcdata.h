/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oidcdata.h - what the JWKS / ID token tests share: reading the
 * known-answer files of tests/unit/data/oidc/ (made by its regen script)
 * and building unsigned tokens from JSON texts.
 */
#pragma once

#include <sodium.h>

#include "test.h"
#include "trove/buf.h"
#include "trove/jwks.h"
#include "trove/util.h"

/* The contents of data/oidc/<name>, trailing whitespace removed (heap). */
static inline char *oidcdata_read(const char *name) {
        const char *dir = getenv("TROVE_TEST_DATA") ? getenv("TROVE_TEST_DATA") : "tests/unit/data";
        char path[4096];
        char *out = malloc(1u << 20);
        size_t n;

        CHECK(out);
        snprintf(path, sizeof path, "%s/oidc/%s", dir, name);
        CHECK_OK(read_text_file(path, out, 1u << 20, &n));
        return out;
}

/* The test key set, data/oidc/jwks.json, parsed. */
static inline struct jwks *oidcdata_jwks(void) {
        _cleanup_free_ char *text = oidcdata_read("jwks.json");
        struct trove_error err = {};
        struct jwks *k = NULL;

        CHECK_OK(jwks_parse(text, strlen(text), &k, &err));
        return k;
}

static inline void oidcdata_b64url(struct buf *b, const void *p, size_t n) {
        size_t enc = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        CHECK_OK(buf_reserve(b, enc));
        sodium_bin2base64((char *) b->data + b->len, enc, p, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        b->len += enc - 1;
}

/* b64url(header).b64url(payload).b64url(sig) as a heap string. */
static inline char *oidcdata_token(const char *header, const char *payload, const void *sig, size_t sig_len) {
        struct buf b = BUF_INIT(1u << 20);
        char *s;

        oidcdata_b64url(&b, header, strlen(header));
        CHECK_OK(buf_append(&b, ".", 1));
        oidcdata_b64url(&b, payload, strlen(payload));
        CHECK_OK(buf_append(&b, ".", 1));
        oidcdata_b64url(&b, sig, sig_len);
        CHECK_OK(buf_steal(&b, &s, NULL));
        return s;
}
