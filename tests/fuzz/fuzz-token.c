/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz-token.c - token_decode_verify on arbitrary text, with a fixed
 * secret. The signature is checked before the payload is parsed, so a
 * fuzzer could never reach the claims parser with raw text alone; the
 * first input byte therefore picks how the rest becomes a token:
 *
 *   mode 0  the rest is the token text as received
 *   mode 1  the rest is the payload JSON; the standard header is added
 *           and the token is signed with the secret
 *   mode 2  the rest is header JSON, a 0xff byte, payload JSON; signed
 *
 * and the verification time ("now", from a small table). A refusal must
 * be one of the documented errors and say why; a token that verifies must
 * obey what it claims (not expired, valid already, grants within bounds,
 * every grant permitting its own pattern) and must re-encode to a token
 * that verifies to the same claims. Inputs under reject/ must be refused.
 */
#include <sodium.h>
#include <stdio.h>

#include "fuzz.h"
#include "trove/buf.h"
#include "trove/token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t SECRET[32] = "trove token fuzz secret 32 bytes";
static const char HEADER[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
static const int64_t NOWS[] = { 1700000000, 0, -1, INT64_MAX, INT64_MIN, 4102444800 };

/* header.payload from two JSON texts, then the MAC over it. */
static int make_signed(const void *hdr, size_t hn, const void *payload, size_t pn, struct buf *out) {
        uint8_t mac[crypto_auth_hmacsha256_BYTES];
        int r = fuzz_b64url(out, hdr, hn);
        if (r >= 0)
                r = buf_append(out, ".", 1);
        if (r >= 0)
                r = fuzz_b64url(out, payload, pn);
        if (r < 0)
                return r;
        crypto_auth_hmacsha256_state st;
        crypto_auth_hmacsha256_init(&st, SECRET, sizeof SECRET);
        crypto_auth_hmacsha256_update(&st, out->data, out->len);
        crypto_auth_hmacsha256_final(&st, mac);
        r = buf_append(out, ".", 1);
        if (r >= 0)
                r = fuzz_b64url(out, mac, sizeof mac);
        return r;
}

static bool same_claims(const struct token_claims *a, const struct token_claims *b) {
        if ((!a->sub) != (!b->sub) || (a->sub && !streq(a->sub, b->sub)))
                return false;
        if (a->exp != b->exp || a->has_nbf != b->has_nbf || a->has_iat != b->has_iat ||
            (a->has_nbf && a->nbf != b->nbf) || (a->has_iat && a->iat != b->iat))
                return false;
        if (a->n_grants != b->n_grants)
                return false;
        for (size_t i = 0; i < a->n_grants; i++)
                if (!streq(a->grants[i].pattern, b->grants[i].pattern) || a->grants[i].perms != b->grants[i].perms)
                        return false;
        return true;
}

static void check_claims(const struct token_claims *c, int64_t now) {
        if (now >= c->exp || (c->has_nbf && now < c->nbf))
                abort();
        if (c->n_grants > TOKEN_PATTERNS_MAX)
                abort();
        if (c->sub && strlen(c->sub) > TOKEN_SUB_MAX)
                abort();
        for (size_t i = 0; i < c->n_grants; i++) {
                const struct token_grant *g = &c->grants[i];
                size_t n = strlen(g->pattern);
                if (n == 0 || n > TOKEN_PATTERN_MAX || (g->perms & ~TOKEN_PERMS_ALL))
                        abort();
                /* '*' also matches a literal '*': a pattern matches itself. */
                if (!token_pattern_match(g->pattern, g->pattern))
                        abort();
                for (int p = 0; p < _TOKEN_PERM_MAX; p++)
                        if ((g->perms & TOKEN_PERM_BIT(p)) && !token_permits(c, g->pattern, p))
                                abort();
        }
        /* Nothing grants an out-of-range permission. */
        if (token_permits(c, "x", _TOKEN_PERM_MAX))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(buf_free) struct buf text = BUF_INIT(4 * TOKEN_TEXT_MAX);
        _cleanup_(token_claims_freep) struct token_claims *c = NULL, *c2 = NULL;
        _cleanup_free_ char *again = NULL;
        struct trove_error err = {};
        unsigned mode;
        int64_t now;
        int r;

        if (size < 1 || size > 2 * TOKEN_TEXT_MAX)
                return 0;
        if (sodium_init() < 0)
                abort();
        mode = data[0] % 3;
        now = NOWS[(data[0] / 3) % ELEMENTSOF(NOWS)];
        data++;
        size--;

        if (mode == 0) {
                if (buf_append(&text, data, size) < 0)
                        abort();
        } else if (mode == 1) {
                if (make_signed(HEADER, strlen(HEADER), data, size, &text) < 0)
                        abort();
        } else {
                const uint8_t *sep = memchr(data, 0xff, size);
                if (!sep)
                        return 0;
                if (make_signed(data, (size_t) (sep - data), sep + 1, size - (size_t) (sep + 1 - data), &text) < 0)
                        abort();
        }

        r = token_decode_verify((const char *) text.data, SECRET, sizeof SECRET, now, &c, &err);
        if (r < 0) {
                if (r != -EINVAL && r != -EPERM && r != -EKEYEXPIRED && r != -EKEYREJECTED)
                        abort();
                if (!err.msg[0] || c)
                        abort();
                /* What the fuzzer signed never fails the signature check. */
                if (mode != 0 && r == -EPERM)
                        abort();
                return 0;
        }
        if (!c || fuzz_must_reject())
                abort();
        check_claims(c, now);

        r = token_encode(c, SECRET, sizeof SECRET, &again);
        if (r < 0) {
                fprintf(stderr, "verified claims do not encode: %s\n", strerror(-r));
                abort();
        }
        r = token_decode_verify(again, SECRET, sizeof SECRET, now, &c2, &err);
        if (r < 0) {
                fprintf(stderr, "re-encoded token does not verify: %s\n%s\n", err.msg, again);
                abort();
        }
        if (!same_claims(c, c2))
                abort();
        /* Any change to the signed part is caught. */
        char *dot = strrchr(again, '.');
        if (dot && dot > again) {
                dot[-1] ^= 1;
                token_claims_free(c2);
                c2 = NULL;
                if (token_decode_verify(again, SECRET, sizeof SECRET, now, &c2, &err) >= 0)
                        abort();
        }
        return 0;
}
