/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test-jwks.c - key sets and RS256/ES256 checks against known-answer
 * tokens made with the openssl command line (data/oidc/regen).
 */
#include <jansson.h>

#include "oidcdata.h"
#include "trove/jwks.h"

/* Splits a token into its signing input and decoded signature. */
static void split(const char *tok, size_t *ret_input_len, uint8_t *sig, size_t *ret_sig_len) {
        const char *dot = strrchr(tok, '.');
        size_t len;

        CHECK(dot);
        CHECK(sodium_base642bin(sig, JWKS_SIG_MAX, dot + 1, strlen(dot + 1), NULL, &len, NULL,
                                sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0);
        *ret_input_len = (size_t) (dot - tok);
        *ret_sig_len = len;
}

static void test_parse(void) {
        _cleanup_(jwks_freep) struct jwks *k = oidcdata_jwks();

        /* The encryption key and the Ed25519 key are skipped. */
        CHECK_EQ_U64(jwks_count(k), 2);
        CHECK(jwks_has_kid(k, "rsa1"));
        CHECK(jwks_has_kid(k, "ec1"));
        CHECK(!jwks_has_kid(k, "enc1"));
        CHECK(!jwks_has_kid(k, "okp1"));
        CHECK(!jwks_has_kid(k, "nope"));
        CHECK(jwks_has_kid(k, NULL));
}

static void test_verify(const char *file, enum jwt_alg alg, const char *kid, const char *other_kid) {
        _cleanup_(jwks_freep) struct jwks *k = oidcdata_jwks();
        _cleanup_free_ char *tok = oidcdata_read(file);
        struct trove_error err = {};
        uint8_t sig[JWKS_SIG_MAX];
        size_t in, sl;

        split(tok, &in, sig, &sl);
        CHECK_OK(jwks_verify(k, kid, alg, tok, in, sig, sl, &err));
        /* Without a kid: the only key for the algorithm. */
        CHECK_OK(jwks_verify(k, NULL, alg, tok, in, sig, sl, &err));
        /* The other key, a key of the other type: refused for the type. */
        CHECK_RC(jwks_verify(k, other_kid, alg, tok, in, sig, sl, &err), -EKEYREJECTED);
        CHECK(strstr(err.msg, jwt_alg_to_string(alg)));
        CHECK_RC(jwks_verify(k, "unknown", alg, tok, in, sig, sl, &err), -ENOKEY);
        CHECK_RC(jwks_verify(k, "enc1", alg, tok, in, sig, sl, &err), -ENOKEY);
        /* Any change to the signed input or the signature. */
        tok[5] ^= 1;
        CHECK_RC(jwks_verify(k, kid, alg, tok, in, sig, sl, &err), -EBADMSG);
        tok[5] ^= 1;
        sig[sl - 1] ^= 1;
        CHECK_RC(jwks_verify(k, kid, alg, tok, in, sig, sl, &err), -EBADMSG);
        sig[sl - 1] ^= 1;
        CHECK_RC(jwks_verify(k, kid, alg, tok, in, sig, sl - 1, &err), -EBADMSG);
        CHECK_RC(jwks_verify(k, kid, alg, tok, in, sig, 0, &err), -EBADMSG);
        CHECK_RC(jwks_verify(k, kid, alg, tok, in - 1, sig, sl, &err), -EBADMSG);
        CHECK_RC(jwks_verify(k, kid, (enum jwt_alg) 0, tok, in, sig, sl, &err), -EINVAL);
        CHECK_RC(jwks_verify(NULL, kid, alg, tok, in, sig, sl, &err), -ENOKEY);
        /* All-zero and all-one ES256 signatures (r = 0, r >= n) are refused. */
        memset(sig, 0, sizeof sig);
        CHECK_RC(jwks_verify(k, kid, alg, tok, in, sig, sl, &err), -EBADMSG);
        memset(sig, 0xff, sizeof sig);
        CHECK_RC(jwks_verify(k, kid, alg, tok, in, sig, sl, &err), -EBADMSG);
}

static void expect_bad(const char *text, int want) {
        struct trove_error err = {};
        struct jwks *k = NULL;

        CHECK_RC(jwks_parse(text, strlen(text), &k, &err), want);
        CHECK(!k);
        CHECK(err.msg[0]);
}

static void test_malformed(void) {
        _cleanup_free_ char *good = oidcdata_read("jwks.json");
        char *p, big[600];

        expect_bad("", -EINVAL);
        expect_bad("[]", -EINVAL);
        expect_bad("{}", -EINVAL);
        expect_bad("{\"keys\":{}}", -EINVAL);
        expect_bad("{\"keys\":[1]}", -EINVAL);
        expect_bad("{\"keys\":[{}]}", -EINVAL);
        expect_bad("{\"keys\":[],\"keys\":[]}", -EINVAL);
        /* Known types with broken members. */
        expect_bad("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", -EINVAL); /* tiny modulus */
        expect_bad("{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\"}]}", -EINVAL);
        expect_bad("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AQAB\",\"y\":\"AQAB\"}]}", -EINVAL);
        expect_bad("{\"keys\":[{\"kty\":\"EC\",\"x\":\"AQAB\",\"y\":\"AQAB\"}]}", -EINVAL);
        /* A point that is not on the curve. */
        expect_bad("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\","
                   "\"x\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
                   "\"y\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}", -EINVAL);
        /* Padding, standard base64 and a kid that is not a string. */
        p = strdup(good);
        CHECK(p);
        *strstr(p, "\"e\": \"AQAB\"") = 0;
        {
                _cleanup_free_ char *t = NULL;
                CHECK(asprintf(&t, "%s\"e\": \"AQAB=\"%s", p, strstr(good, "\"e\": \"AQAB\"") + 12) > 0);
                expect_bad(t, -EINVAL);
        }
        free(p);
        p = strdup(good);
        CHECK(p);
        *strchr(strstr(p, "\"n\": \""), '-') = '+';
        expect_bad(p, -EINVAL);
        free(p);
        {
                /* Two keys under one kid. */
                json_t *j = json_loads(good, 0, NULL), *keys;
                char *t;
                CHECK(j);
                keys = json_object_get(j, "keys");
                CHECK_OK(json_array_append_new(keys, json_deep_copy(json_array_get(keys, 0))));
                t = json_dumps(j, 0);
                CHECK(t);
                expect_bad(t, -EINVAL);
                free(t);
                json_decref(j);
        }
        /* Too many keys. */
        {
                struct buf b = BUF_INIT(1u << 20);
                CHECK_OK(buf_append_str(&b, "{\"keys\":["));
                for (int i = 0; i <= JWKS_KEYS_MAX; i++)
                        CHECK_OK(buf_printf(&b, "%s{\"kty\":\"oct\"}", i ? "," : ""));
                CHECK_OK(buf_append_str(&b, "]}"));
                CHECK_OK(buf_append(&b, "", 1));
                expect_bad((const char *) b.data, -E2BIG);
                buf_free(&b);
        }
        /* Deep nesting is counted before it is parsed. */
        memset(big, '[', sizeof big - 1);
        big[sizeof big - 1] = 0;
        {
                struct buf b = BUF_INIT(1u << 20);
                for (int i = 0; i < 20; i++)
                        CHECK_OK(buf_append_str(&b, big));
                CHECK_OK(buf_append(&b, "", 1));
                expect_bad((const char *) b.data, -E2BIG);
                buf_free(&b);
        }
}

static void test_discovery(void) {
        static const char doc[] = "{\"issuer\":\"https://issuer.test\",\"jwks_uri\":\"https://issuer.test/keys\","
                                  "\"id_token_signing_alg_values_supported\":[\"RS256\"]}";
        struct trove_error err = {};
        _cleanup_free_ char *uri = NULL;
        char *none = NULL;

        CHECK_OK(jwks_discovery_uri(doc, strlen(doc), "https://issuer.test", &uri, &err));
        CHECK_STREQ(uri, "https://issuer.test/keys");
        CHECK_RC(jwks_discovery_uri(doc, strlen(doc), "https://issuer.test/", &none, &err), -EINVAL);
        CHECK_RC(jwks_discovery_uri(doc, strlen(doc), "https://other.test", &none, &err), -EINVAL);
#define BAD(s) CHECK_RC(jwks_discovery_uri(s, strlen(s), "https://i", &none, &err), -EINVAL)
        BAD("{\"issuer\":\"https://i\"}");
        BAD("{\"issuer\":\"https://i\",\"jwks_uri\":\"file:///etc/passwd\"}");
        BAD("{\"issuer\":\"https://i\",\"jwks_uri\":\"https://a b\"}");
        BAD("{\"issuer\":\"https://i\",\"jwks_uri\":\"\"}");
        BAD("{\"issuer\":\"https://i\",\"jwks_uri\":1}");
        BAD("{\"issuer\":\"https://i\\u0000x\",\"jwks_uri\":\"https://i/k\"}");
        BAD("[]");
#undef BAD
        CHECK(!none);
}

int main(void) {
        CHECK(sodium_init() >= 0);
        CHECK_STREQ(jwt_alg_to_string(JWT_ALG_RS256), "RS256");
        CHECK_RC(jwt_alg_from_string("ES256"), JWT_ALG_ES256);
        CHECK_RC(jwt_alg_from_string("HS256"), -EINVAL);
        CHECK_RC(jwt_alg_from_string("none"), -EINVAL);
        CHECK_RC(jwt_alg_from_string("rs256"), -EINVAL);
        test_parse();
        test_verify("rs256.jwt", JWT_ALG_RS256, "rsa1", "ec1");
        test_verify("es256.jwt", JWT_ALG_ES256, "ec1", "rsa1");
        test_malformed();
        test_discovery();
        return 0;
}
