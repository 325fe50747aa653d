/* SPDX-License-Identifier: Apache-2.0 */
/*
 * jwks.c - JSON Web Key Sets and RS256/ES256 signature checks (jwks.h).
 * Public keys are built with OpenSSL 3's EVP_PKEY_fromdata, so no
 * deprecated RSA/EC_KEY calls; every OpenSSL error is turned into an errno
 * here and OpenSSL's thread-local error queue is cleared.
 */
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <sodium.h>

#include "trove/jwks.h"
#include "trove/util.h"

/* Counted before parsing: a set of 64 keys needs a few hundred values. */
#define JWKS_VALUES_MAX 4096
#define P256_COORD_LEN 32

struct jwks_key {
        char *kid; /* NULL when the key has none */
        enum jwt_alg alg;
        EVP_PKEY *pkey;
};

struct jwks {
        struct jwks_key keys[JWKS_KEYS_MAX];
        size_t n;
};

const char *jwt_alg_to_string(enum jwt_alg a) {
        switch (a) {
        case JWT_ALG_RS256: return "RS256";
        case JWT_ALG_ES256: return "ES256";
        }
        return NULL;
}

int jwt_alg_from_string(const char *s) {
        if (!s)
                return -EINVAL;
        if (streq(s, "RS256"))
                return JWT_ALG_RS256;
        if (streq(s, "ES256"))
                return JWT_ALG_ES256;
        return -EINVAL;
}

void jwks_free(struct jwks *k) {
        if (!k)
                return;
        for (size_t i = 0; i < k->n; i++) {
                free(k->keys[i].kid);
                EVP_PKEY_free(k->keys[i].pkey);
        }
        free(k);
}

size_t jwks_count(const struct jwks *k) {
        return k ? k->n : 0;
}

static int load_json(const void *text, size_t n, const char *what, json_t **ret, struct trove_error *err) {
        json_error_t e;
        json_t *j;

        if (n > JWKS_TEXT_MAX)
                return trove_error_set(err, E2BIG, "%s is larger than %u bytes", what, JWKS_TEXT_MAX);
        if (json_value_count(text, n) > JWKS_VALUES_MAX)
                return trove_error_set(err, E2BIG, "%s holds more than %d JSON values", what, JWKS_VALUES_MAX);
        j = json_loadb(text, n, JSON_REJECT_DUPLICATES, &e);
        if (!j)
                return trove_error_set(err, EINVAL, "%s is not JSON: %s", what, e.text);
        if (!json_is_object(j)) {
                json_decref(j);
                return trove_error_set(err, EINVAL, "%s is not a JSON object", what);
        }
        *ret = j;
        return 0;
}

/* A base64url member (no padding, canonical) of at most max bytes. */
static int b64url_member(json_t *o, const char *name, uint8_t *out, size_t max, size_t *ret_len,
                         struct trove_error *err) {
        json_t *v = json_object_get(o, name);
        const char *s, *end;
        size_t n, len;

        if (!json_is_string(v))
                return trove_error_set(err, EINVAL, "key member \"%s\" is missing or not a string", name);
        s = json_string_value(v);
        n = json_string_length(v);
        if (n == 0 || n > sodium_base64_ENCODED_LEN(max, sodium_base64_VARIANT_URLSAFE_NO_PADDING))
                return trove_error_set(err, EINVAL, "key member \"%s\" has a bad length", name);
        if (sodium_base642bin(out, max, s, n, NULL, &len, &end, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
            end != s + n)
                return trove_error_set(err, EINVAL, "key member \"%s\" is not base64url", name);
        *ret_len = len;
        return 0;
}

static int rsa_key(json_t *o, EVP_PKEY **ret, struct trove_error *err) {
        uint8_t n[JWKS_RSA_BITS_MAX / 8 + 1], e[8];
        size_t nl, el, skip = 0;
        BIGNUM *bn_n = NULL, *bn_e = NULL;
        OSSL_PARAM_BLD *bld = NULL;
        OSSL_PARAM *params = NULL;
        EVP_PKEY_CTX *ctx = NULL;
        EVP_PKEY *pkey = NULL;
        int r;

        r = b64url_member(o, "n", n, sizeof n, &nl, err);
        if (r < 0)
                return r;
        r = b64url_member(o, "e", e, sizeof e, &el, err);
        if (r < 0)
                return r;
        while (skip < nl && n[skip] == 0)
                skip++;
        bn_n = BN_bin2bn(n + skip, (int) (nl - skip), NULL);
        bn_e = BN_bin2bn(e, (int) el, NULL);
        if (!bn_n || !bn_e) {
                r = trove_error_set(err, ENOMEM, "out of memory");
                goto out;
        }
        if (BN_num_bits(bn_n) < JWKS_RSA_BITS_MIN || BN_num_bits(bn_n) > JWKS_RSA_BITS_MAX) {
                r = trove_error_set(err, EINVAL, "RSA modulus of %d bits (need %d..%d)", BN_num_bits(bn_n),
                                    JWKS_RSA_BITS_MIN, JWKS_RSA_BITS_MAX);
                goto out;
        }
        if (!BN_is_odd(bn_e) || BN_is_one(bn_e) || !BN_is_odd(bn_n)) {
                r = trove_error_set(err, EINVAL, "RSA key with an unusable modulus or exponent");
                goto out;
        }
        bld = OSSL_PARAM_BLD_new();
        if (!bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) ||
            !(params = OSSL_PARAM_BLD_to_param(bld))) {
                r = trove_error_set(err, ENOMEM, "out of memory");
                goto out;
        }
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
        if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
            EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
                r = trove_error_set(err, EINVAL, "OpenSSL refuses the RSA key");
                goto out;
        }
        *ret = TAKE_PTR(pkey);
        r = 0;
out:
        EVP_PKEY_free(pkey);
        EVP_PKEY_CTX_free(ctx);
        OSSL_PARAM_free(params);
        OSSL_PARAM_BLD_free(bld);
        BN_free(bn_n);
        BN_free(bn_e);
        ERR_clear_error();
        return r;
}

static int p256_key(json_t *o, EVP_PKEY **ret, struct trove_error *err) {
        uint8_t point[1 + 2 * P256_COORD_LEN], x[P256_COORD_LEN + 1], y[P256_COORD_LEN + 1];
        char group[] = "prime256v1";
        EVP_PKEY_CTX *ctx = NULL, *check = NULL;
        EVP_PKEY *pkey = NULL;
        OSSL_PARAM params[3];
        size_t xl, yl;
        int r;

        r = b64url_member(o, "x", x, sizeof x, &xl, err);
        if (r < 0)
                return r;
        r = b64url_member(o, "y", y, sizeof y, &yl, err);
        if (r < 0)
                return r;
        if (xl != P256_COORD_LEN || yl != P256_COORD_LEN)
                return trove_error_set(err, EINVAL, "P-256 coordinates must be %d bytes each", P256_COORD_LEN);
        point[0] = 0x04; /* uncompressed */
        memcpy(point + 1, x, P256_COORD_LEN);
        memcpy(point + 1 + P256_COORD_LEN, y, P256_COORD_LEN);
        params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
        params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point);
        params[2] = OSSL_PARAM_construct_end();
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
            EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
                r = trove_error_set(err, EINVAL, "the EC key is not a point on P-256");
                goto out;
        }
        /* A point off the curve would make verification meaningless. */
        check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        if (!check || EVP_PKEY_public_check(check) != 1) {
                r = trove_error_set(err, EINVAL, "the EC key is not a valid point on P-256");
                goto out;
        }
        *ret = TAKE_PTR(pkey);
        r = 0;
out:
        EVP_PKEY_free(pkey);
        EVP_PKEY_CTX_free(check);
        EVP_PKEY_CTX_free(ctx);
        ERR_clear_error();
        return r;
}

/* 1: key kept, 0: skipped (another type or use), <0: malformed. */
static int parse_key(json_t *o, struct jwks_key *ret, struct trove_error *err) {
        const char *kty, *alg = NULL, *crv;
        json_t *v;
        struct jwks_key k = {};
        int r;

        if (!json_is_object(o))
                return trove_error_set(err, EINVAL, "a key is not a JSON object");
        v = json_object_get(o, "kty");
        if (!json_is_string(v))
                return trove_error_set(err, EINVAL, "a key has no \"kty\"");
        kty = json_string_value(v);
        v = json_object_get(o, "use");
        if (v && !json_is_string(v))
                return trove_error_set(err, EINVAL, "a key's \"use\" is not a string");
        if (v && !streq(json_string_value(v), "sig"))
                return 0;
        v = json_object_get(o, "alg");
        if (v && !json_is_string(v))
                return trove_error_set(err, EINVAL, "a key's \"alg\" is not a string");
        if (v)
                alg = json_string_value(v);
        v = json_object_get(o, "kid");
        if (v && (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > JWKS_KID_MAX ||
                  strlen(json_string_value(v)) != json_string_length(v)))
                return trove_error_set(err, EINVAL, "a key's \"kid\" is not a string of 1..%d bytes", JWKS_KID_MAX);

        if (streq(kty, "RSA")) {
                if (alg && !streq(alg, "RS256"))
                        return 0;
                k.alg = JWT_ALG_RS256;
                r = rsa_key(o, &k.pkey, err);
        } else if (streq(kty, "EC")) {
                v = json_object_get(o, "crv");
                if (!json_is_string(v))
                        return trove_error_set(err, EINVAL, "an EC key has no \"crv\"");
                crv = json_string_value(v);
                if (!streq(crv, "P-256") || (alg && !streq(alg, "ES256")))
                        return 0;
                k.alg = JWT_ALG_ES256;
                r = p256_key(o, &k.pkey, err);
        } else
                return 0;
        if (r < 0)
                return r;
        v = json_object_get(o, "kid");
        if (v) {
                k.kid = strdup(json_string_value(v));
                if (!k.kid) {
                        EVP_PKEY_free(k.pkey);
                        return trove_error_set(err, ENOMEM, "out of memory");
                }
        }
        *ret = k;
        return 1;
}

int jwks_parse(const void *text, size_t n, struct jwks **ret, struct trove_error *err) {
        _cleanup_(jwks_freep) struct jwks *k = NULL;
        json_t *j = NULL, *keys;
        size_t i;
        int r;

        r = load_json(text, n, "key set", &j, err);
        if (r < 0)
                return r;
        keys = json_object_get(j, "keys");
        if (!json_is_array(keys)) {
                r = trove_error_set(err, EINVAL, "key set has no \"keys\" array");
                goto out;
        }
        if (json_array_size(keys) > JWKS_KEYS_MAX) {
                r = trove_error_set(err, E2BIG, "key set holds more than %d keys", JWKS_KEYS_MAX);
                goto out;
        }
        k = calloc(1, sizeof *k);
        if (!k) {
                r = trove_error_set(err, ENOMEM, "out of memory");
                goto out;
        }
        for (i = 0; i < json_array_size(keys); i++) {
                struct trove_error kerr = {};
                r = parse_key(json_array_get(keys, i), &k->keys[k->n], &kerr);
                if (r < 0) {
                        r = trove_error_set(err, -r, "key %zu: %s", i, kerr.msg);
                        goto out;
                }
                if (r == 0)
                        continue;
                /* Two keys with one kid would make the choice ambiguous. */
                for (size_t m = 0; m < k->n; m++)
                        if (k->keys[k->n].kid && k->keys[m].kid && streq(k->keys[m].kid, k->keys[k->n].kid)) {
                                k->n++; /* freed with the set */
                                r = trove_error_set(err, EINVAL, "key set names kid \"%s\" twice",
                                                    k->keys[m].kid);
                                goto out;
                        }
                k->n++;
        }
        *ret = TAKE_PTR(k);
        r = 0;
out:
        json_decref(j);
        return r;
}

bool jwks_has_kid(const struct jwks *k, const char *kid) {
        if (!k)
                return false;
        for (size_t i = 0; i < k->n; i++)
                if (!kid || (k->keys[i].kid && streq(k->keys[i].kid, kid)))
                        return true;
        return false;
}

static int verify_rs256(EVP_PKEY *pkey, const void *msg, size_t n, const void *sig, size_t sig_len) {
        EVP_MD_CTX *md = NULL;
        int r = -EBADMSG;

        if (EVP_PKEY_get_size(pkey) <= 0 || sig_len != (size_t) EVP_PKEY_get_size(pkey))
                return -EBADMSG;
        md = EVP_MD_CTX_new();
        if (!md)
                return -ENOMEM;
        if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
            EVP_DigestVerify(md, sig, sig_len, msg, n) == 1)
                r = 0;
        EVP_MD_CTX_free(md);
        return r;
}

/* JWS carries ECDSA signatures as raw r || s (RFC 7518 3.4); OpenSSL wants
 * DER. */
static int verify_es256(EVP_PKEY *pkey, const void *msg, size_t n, const void *sig, size_t sig_len) {
        const uint8_t *s = sig;
        unsigned char der[80], *p = der;
        ECDSA_SIG *es = NULL;
        BIGNUM *br = NULL, *bs = NULL;
        EVP_MD_CTX *md = NULL;
        int len, r = -EBADMSG;

        if (sig_len != 2 * P256_COORD_LEN)
                return -EBADMSG;
        br = BN_bin2bn(s, P256_COORD_LEN, NULL);
        bs = BN_bin2bn(s + P256_COORD_LEN, P256_COORD_LEN, NULL);
        es = ECDSA_SIG_new();
        if (!br || !bs || !es) {
                r = -ENOMEM;
                goto out;
        }
        if (ECDSA_SIG_set0(es, br, bs) != 1) {
                r = -ENOMEM;
                goto out;
        }
        br = bs = NULL; /* owned by es */
        len = i2d_ECDSA_SIG(es, NULL);
        if (len <= 0 || (size_t) len > sizeof der || i2d_ECDSA_SIG(es, &p) != len)
                goto out;
        md = EVP_MD_CTX_new();
        if (!md) {
                r = -ENOMEM;
                goto out;
        }
        if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
            EVP_DigestVerify(md, der, (size_t) len, msg, n) == 1)
                r = 0;
out:
        EVP_MD_CTX_free(md);
        ECDSA_SIG_free(es);
        BN_free(br);
        BN_free(bs);
        return r;
}

int jwks_verify(const struct jwks *k, const char *kid, enum jwt_alg alg, const void *msg, size_t n,
                const void *sig, size_t sig_len, struct trove_error *err) {
        const struct jwks_key *key = NULL;
        int r;

        if (!jwt_alg_to_string(alg))
                return trove_error_set(err, EINVAL, "unsupported signature algorithm");
        if (!k)
                return trove_error_set(err, ENOKEY, "no keys");
        if (kid) {
                for (size_t i = 0; i < k->n && !key; i++)
                        if (k->keys[i].kid && streq(k->keys[i].kid, kid))
                                key = &k->keys[i];
                if (!key)
                        return trove_error_set(err, ENOKEY, "the issuer has no key \"%s\"", kid);
        } else {
                for (size_t i = 0; i < k->n; i++)
                        if (k->keys[i].alg == alg) {
                                if (key)
                                        return trove_error_set(err, ENOKEY, "the token names no key (kid) "
                                                               "and the issuer has several");
                                key = &k->keys[i];
                        }
                if (!key)
                        return trove_error_set(err, ENOKEY, "the issuer has no %s key", jwt_alg_to_string(alg));
        }
        /* The algorithm comes from the token, the key type from the issuer:
         * they must agree, so a token cannot pick how a key is used. */
        if (key->alg != alg)
                return trove_error_set(err, EKEYREJECTED, "the token says %s but key \"%s\" is a %s key",
                                       jwt_alg_to_string(alg), key->kid ? key->kid : "", jwt_alg_to_string(key->alg));
        r = alg == JWT_ALG_RS256 ? verify_rs256(key->pkey, msg, n, sig, sig_len)
                                 : verify_es256(key->pkey, msg, n, sig, sig_len);
        ERR_clear_error();
        if (r == -EBADMSG)
                return trove_error_set(err, EBADMSG, "the token's signature does not verify");
        if (r < 0)
                return trove_error_set(err, -r, "cannot verify the signature");
        return 0;
}

static bool uri_valid(const char *s, size_t n) {
        if (n == 0 || n > JWKS_URI_MAX || strlen(s) != n)
                return false;
        if (!startswith(s, "https://") && !startswith(s, "http://"))
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] <= 0x20 || (unsigned char) s[i] >= 0x7f)
                        return false;
        return true;
}

int jwks_discovery_uri(const void *text, size_t n, const char *issuer, char **ret, struct trove_error *err) {
        json_t *j = NULL, *v;
        char *s;
        int r;

        r = load_json(text, n, "OpenID configuration", &j, err);
        if (r < 0)
                return r;
        v = json_object_get(j, "issuer");
        if (!json_is_string(v) || !issuer || !streq(json_string_value(v), issuer) ||
            json_string_length(v) != strlen(issuer)) {
                r = trove_error_set(err, EINVAL, "OpenID configuration is for another issuer");
                goto out;
        }
        v = json_object_get(j, "jwks_uri");
        if (!json_is_string(v) || !uri_valid(json_string_value(v), json_string_length(v))) {
                r = trove_error_set(err, EINVAL, "OpenID configuration has no usable \"jwks_uri\"");
                goto out;
        }
        s = strdup(json_string_value(v));
        if (!s) {
                r = trove_error_set(err, ENOMEM, "out of memory");
                goto out;
        }
        *ret = s;
        r = 0;
out:
        json_decref(j);
        return r;
}
