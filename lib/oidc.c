/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oidc.c - OpenID Connect ID tokens (oidc.h).
 */
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <strings.h>

#include "trove/oidc.h"
#include "trove/util.h"

struct oidc_jwt {
        enum jwt_alg alg;
        char *kid;
        json_t *claims;          /* the payload object */
        const char *iss;         /* in claims */
        const char *sub;         /* in claims, or NULL */
        int64_t exp;
        bool has_nbf, has_iat;
        int64_t nbf, iat;
        char *signing_input;     /* header.payload as received */
        size_t signing_input_len;
        uint8_t sig[JWKS_SIG_MAX];
        size_t sig_len;
};

void oidc_jwt_free(struct oidc_jwt *j) {
        if (!j)
                return;
        free(j->kid);
        json_decref(j->claims);
        free(j->signing_input);
        free(j);
}

enum jwt_alg oidc_jwt_alg(const struct oidc_jwt *j) {
        return j->alg;
}

const char *oidc_jwt_kid(const struct oidc_jwt *j) {
        return j->kid;
}

const char *oidc_jwt_issuer(const struct oidc_jwt *j) {
        return j->iss;
}

const char *oidc_jwt_subject(const struct oidc_jwt *j) {
        return j->sub;
}

int64_t oidc_jwt_expiry(const struct oidc_jwt *j) {
        return j->exp;
}

static bool b64url_char(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Decodes one part into out (at most max bytes); canonical base64url only:
 * libsodium refuses padding, foreign characters and non-zero trailing bits. */
static int b64url_decode(const char *s, size_t n, uint8_t *out, size_t max, size_t *ret_len) {
        const char *end;
        size_t len;

        for (size_t i = 0; i < n; i++)
                if (!b64url_char(s[i]))
                        return -EINVAL;
        if (sodium_base642bin(out, max, s, n, NULL, &len, &end, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
            end != s + n)
                return -EINVAL;
        *ret_len = len;
        return 0;
}

/* One JSON object from a base64url part. */
static int decode_object(const char *s, size_t n, const char *what, json_t **ret, struct trove_error *err) {
        _cleanup_free_ uint8_t *raw = NULL;
        json_error_t e;
        size_t len;
        json_t *o;

        if (n == 0)
                return trove_error_set(err, EINVAL, "the token's %s is empty", what);
        raw = malloc(n);
        if (!raw)
                return trove_error_set(err, ENOMEM, "out of memory");
        if (b64url_decode(s, n, raw, n, &len) < 0)
                return trove_error_set(err, EINVAL, "the token's %s is not base64url", what);
        if (json_value_count((const char *) raw, len) > OIDC_VALUES_MAX)
                return trove_error_set(err, E2BIG, "the token's %s holds more than %d JSON values", what,
                                       OIDC_VALUES_MAX);
        o = json_loadb((const char *) raw, len, JSON_REJECT_DUPLICATES, &e);
        if (!o)
                return trove_error_set(err, EINVAL, "the token's %s is not JSON: %s", what, e.text);
        if (!json_is_object(o)) {
                json_decref(o);
                return trove_error_set(err, EINVAL, "the token's %s is not a JSON object", what);
        }
        *ret = o;
        return 0;
}

static bool string_clean(json_t *v) {
        return json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v);
}

static int parse_header(struct oidc_jwt *j, const char *s, size_t n, struct trove_error *err) {
        json_t *h = NULL, *v;
        int r, alg;

        r = decode_object(s, n, "header", &h, err);
        if (r < 0)
                return r;
        v = json_object_get(h, "alg");
        if (!string_clean(v)) {
                r = trove_error_set(err, EINVAL, "the token header has no \"alg\"");
                goto out;
        }
        alg = jwt_alg_from_string(json_string_value(v));
        if (alg < 0) {
                r = trove_error_set(err, EINVAL, "token algorithm \"%.32s\" is not accepted (only RS256, ES256)",
                                    json_string_value(v));
                goto out;
        }
        j->alg = (enum jwt_alg) alg;
        v = json_object_get(h, "typ");
        if (v && (!string_clean(v) || strcasecmp(json_string_value(v), "JWT") != 0)) {
                r = trove_error_set(err, EINVAL, "the token header's \"typ\" is not JWT");
                goto out;
        }
        if (json_object_get(h, "crit")) {
                r = trove_error_set(err, EINVAL, "the token header has critical extensions (\"crit\")");
                goto out;
        }
        v = json_object_get(h, "kid");
        if (v) {
                if (!string_clean(v) || json_string_length(v) == 0 || json_string_length(v) > JWKS_KID_MAX) {
                        r = trove_error_set(err, EINVAL, "the token header's \"kid\" is not a string of 1..%d bytes",
                                            JWKS_KID_MAX);
                        goto out;
                }
                j->kid = strdup(json_string_value(v));
                if (!j->kid) {
                        r = trove_error_set(err, ENOMEM, "out of memory");
                        goto out;
                }
        }
        r = 0;
out:
        json_decref(h);
        return r;
}

static int claim_int(json_t *o, const char *key, bool required, bool *ret_has, int64_t *ret,
                     struct trove_error *err) {
        json_t *v = json_object_get(o, key);

        if (!v) {
                if (required)
                        return trove_error_set(err, EINVAL, "the token has no \"%s\" claim", key);
                *ret_has = false;
                return 0;
        }
        if (!json_is_integer(v))
                return trove_error_set(err, EINVAL, "the token's \"%s\" is not an integer", key);
        *ret = (int64_t) json_integer_value(v);
        if (ret_has)
                *ret_has = true;
        return 0;
}

static int parse_payload(struct oidc_jwt *j, const char *s, size_t n, struct trove_error *err) {
        json_t *v;
        int r;

        r = decode_object(s, n, "payload", &j->claims, err);
        if (r < 0)
                return r;
        v = json_object_get(j->claims, "iss");
        if (!string_clean(v) || json_string_length(v) == 0)
                return trove_error_set(err, EINVAL, "the token has no \"iss\" claim");
        j->iss = json_string_value(v);
        v = json_object_get(j->claims, "sub");
        if (v) {
                if (!string_clean(v))
                        return trove_error_set(err, EINVAL, "the token's \"sub\" is not a string");
                j->sub = json_string_value(v);
        }
        v = json_object_get(j->claims, "aud");
        if (json_is_array(v)) {
                size_t i;
                json_t *a;
                if (json_array_size(v) == 0 || json_array_size(v) > OIDC_AUD_MAX)
                        return trove_error_set(err, EINVAL, "the token's \"aud\" lists 0 or more than %d audiences",
                                               OIDC_AUD_MAX);
                json_array_foreach(v, i, a)
                        if (!string_clean(a))
                                return trove_error_set(err, EINVAL, "the token's \"aud\" holds a non-string");
        } else if (!string_clean(v))
                return trove_error_set(err, EINVAL, "the token has no \"aud\" claim");
        r = claim_int(j->claims, "exp", true, NULL, &j->exp, err);
        if (r >= 0)
                r = claim_int(j->claims, "nbf", false, &j->has_nbf, &j->nbf, err);
        if (r >= 0)
                r = claim_int(j->claims, "iat", false, &j->has_iat, &j->iat, err);
        return r;
}

int oidc_jwt_parse(const char *text, size_t n, struct oidc_jwt **ret, struct trove_error *err) {
        _cleanup_(oidc_jwt_freep) struct oidc_jwt *j = NULL;
        const char *d1, *d2;
        size_t sig_b64;
        int r;

        if (!text)
                return trove_error_set(err, EINVAL, "no token");
        if (n > OIDC_TOKEN_MAX)
                return trove_error_set(err, E2BIG, "the token is longer than %d bytes", OIDC_TOKEN_MAX);
        if (memchr(text, 0, n))
                return trove_error_set(err, EINVAL, "the token holds a NUL byte");
        d1 = memchr(text, '.', n);
        d2 = d1 ? memchr(d1 + 1, '.', n - (size_t) (d1 + 1 - text)) : NULL;
        if (!d1 || !d2 || memchr(d2 + 1, '.', n - (size_t) (d2 + 1 - text)))
                return trove_error_set(err, EINVAL, "the token is not three base64url parts separated by '.'");
        j = calloc(1, sizeof *j);
        if (!j)
                return trove_error_set(err, ENOMEM, "out of memory");
        r = parse_header(j, text, (size_t) (d1 - text), err);
        if (r < 0)
                return r;
        r = parse_payload(j, d1 + 1, (size_t) (d2 - d1 - 1), err);
        if (r < 0)
                return r;
        sig_b64 = n - (size_t) (d2 + 1 - text);
        if (sig_b64 == 0 ||
            sig_b64 > sodium_base64_ENCODED_LEN(JWKS_SIG_MAX, sodium_base64_VARIANT_URLSAFE_NO_PADDING) ||
            b64url_decode(d2 + 1, sig_b64, j->sig, sizeof j->sig, &j->sig_len) < 0)
                return trove_error_set(err, EINVAL, "the token's signature is not base64url of at most %d bytes",
                                       JWKS_SIG_MAX);
        j->signing_input_len = (size_t) (d2 - text);
        j->signing_input = strndup(text, j->signing_input_len);
        if (!j->signing_input)
                return trove_error_set(err, ENOMEM, "out of memory");
        *ret = TAKE_PTR(j);
        return 0;
}

const char *oidc_jwt_claim_string(const struct oidc_jwt *j, const char *name) {
        json_t *v = j && name ? json_object_get(j->claims, name) : NULL;
        return string_clean(v) ? json_string_value(v) : NULL;
}

int oidc_jwt_verify(const struct oidc_jwt *j, const struct jwks *keys, struct trove_error *err) {
        return jwks_verify(keys, j->kid, j->alg, j->signing_input, j->signing_input_len, j->sig, j->sig_len, err);
}

static bool audience_matches(json_t *aud, const char *const *audiences, size_t n_audiences) {
        size_t i;
        json_t *a;

        for (size_t k = 0; k < n_audiences; k++) {
                if (json_is_string(aud) && streq(json_string_value(aud), audiences[k]))
                        return true;
                if (json_is_array(aud))
                        json_array_foreach(aud, i, a)
                                if (streq(json_string_value(a), audiences[k]))
                                        return true;
        }
        return false;
}

int oidc_jwt_check_claims(const struct oidc_jwt *j, const char *issuer, const char *const *audiences,
                          size_t n_audiences, int64_t now, struct trove_error *err) {
        if (!issuer || !streq(j->iss, issuer))
                return trove_error_set(err, EACCES, "the token's issuer is not %s", issuer ? issuer : "configured");
        if (!audience_matches(json_object_get(j->claims, "aud"), audiences, n_audiences))
                return trove_error_set(err, EACCES, "the token's audience is not one this server accepts");
        /* Differences without signed overflow: claims are any int64. */
        if (now >= j->exp)
                return trove_error_set(err, EKEYEXPIRED, "the token expired %" PRIu64 " seconds ago",
                                       (uint64_t) now - (uint64_t) j->exp);
        if (j->has_nbf && j->nbf > now && (uint64_t) j->nbf - (uint64_t) now > OIDC_LEEWAY_SEC)
                return trove_error_set(err, EKEYREJECTED, "the token is not valid for another %" PRIu64 " seconds",
                                       (uint64_t) j->nbf - (uint64_t) now);
        if (j->has_iat && j->iat > now && (uint64_t) j->iat - (uint64_t) now > OIDC_LEEWAY_SEC)
                return trove_error_set(err, EKEYREJECTED, "the token was issued %" PRIu64 " seconds in the future",
                                       (uint64_t) j->iat - (uint64_t) now);
        return 0;
}
