/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test-oidc.c - ID token parsing, signature and claim checks: the
 * known-answer tokens of data/oidc/ and hand-made forgeries.
 */
#include "oidcdata.h"
#include "trove/oidc.h"

#define NOW 1800000000
#define EXP 4102444800

static const char *const AUD[] = { "trove" };

static struct oidc_jwt *parse_ok(const char *tok) {
        struct trove_error err = {};
        struct oidc_jwt *j = NULL;
        int r = oidc_jwt_parse(tok, strlen(tok), &j, &err);
        if (r < 0)
                TEST_FAIL("parse: %s", err.msg);
        return j;
}

static void parse_bad(const char *tok, int want) {
        struct trove_error err = {};
        struct oidc_jwt *j = NULL;

        CHECK_RC(oidc_jwt_parse(tok, strlen(tok), &j, &err), want);
        CHECK(!j);
        CHECK(err.msg[0]);
}

static void test_known(const char *file, enum jwt_alg alg, const char *kid) {
        _cleanup_(jwks_freep) struct jwks *k = oidcdata_jwks();
        _cleanup_free_ char *tok = oidcdata_read(file);
        _cleanup_(oidc_jwt_freep) struct oidc_jwt *j = parse_ok(tok);
        static const char *const two[] = { "nope", "other" };
        static const char *const wrong[] = { "trove2", "Trove", "" };
        struct trove_error err = {};

        CHECK(oidc_jwt_alg(j) == alg);
        CHECK_STREQ(oidc_jwt_kid(j), kid);
        CHECK_STREQ(oidc_jwt_issuer(j), "https://issuer.test");
        CHECK_STREQ(oidc_jwt_subject(j), "project_path:team/app:ref_type:branch:ref:main");
        CHECK_EQ_U64(oidc_jwt_expiry(j), EXP);
        CHECK_STREQ(oidc_jwt_claim_string(j, "project_path"), "team/app");
        CHECK(!oidc_jwt_claim_string(j, "exp"));       /* not a string */
        CHECK(!oidc_jwt_claim_string(j, "missing"));

        CHECK_OK(oidc_jwt_verify(j, k, &err));
        CHECK_OK(oidc_jwt_check_claims(j, "https://issuer.test", AUD, 1, NOW, &err));
        CHECK_OK(oidc_jwt_check_claims(j, "https://issuer.test", two, 2, NOW, &err));
        CHECK_RC(oidc_jwt_check_claims(j, "https://issuer.test", wrong, 3, NOW, &err), -EACCES);
        CHECK_RC(oidc_jwt_check_claims(j, "https://issuer.test", AUD, 0, NOW, &err), -EACCES);
        CHECK_RC(oidc_jwt_check_claims(j, "https://issuer.test/", AUD, 1, NOW, &err), -EACCES);
        CHECK_RC(oidc_jwt_check_claims(j, "https://issuer.tes", AUD, 1, NOW, &err), -EACCES);
        CHECK_RC(oidc_jwt_check_claims(j, NULL, AUD, 1, NOW, &err), -EACCES);
        /* exp has no leeway; nbf and iat have OIDC_LEEWAY_SEC. */
        CHECK_RC(oidc_jwt_check_claims(j, "https://issuer.test", AUD, 1, EXP, &err), -EKEYEXPIRED);
        CHECK(strstr(err.msg, "expired"));
        CHECK_OK(oidc_jwt_check_claims(j, "https://issuer.test", AUD, 1, EXP - 1, &err));
        CHECK_RC(oidc_jwt_check_claims(j, "https://issuer.test", AUD, 1, INT64_MAX, &err), -EKEYEXPIRED);
        CHECK_OK(oidc_jwt_check_claims(j, "https://issuer.test", AUD, 1, 1700000000 - OIDC_LEEWAY_SEC, &err));
        CHECK_RC(oidc_jwt_check_claims(j, "https://issuer.test", AUD, 1, 1700000000 - OIDC_LEEWAY_SEC - 1, &err),
                 -EKEYREJECTED);
        CHECK_RC(oidc_jwt_check_claims(j, "https://issuer.test", AUD, 1, INT64_MIN, &err), -EKEYREJECTED);
}

/* The payload of a known token replaced, its signature kept. */
static void test_tampered(void) {
        _cleanup_(jwks_freep) struct jwks *k = oidcdata_jwks();
        _cleanup_free_ char *tok = oidcdata_read("rs256.jwt"), *forged = NULL;
        _cleanup_(oidc_jwt_freep) struct oidc_jwt *j = NULL;
        struct buf b = BUF_INIT(1u << 20);
        static const char payload[] = "{\"iss\":\"https://issuer.test\",\"aud\":\"trove\",\"sub\":\"x\","
                                      "\"project_path\":\"admin/all\",\"exp\":4102444800}";
        struct trove_error err = {};
        const char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');

        CHECK_OK(buf_append(&b, tok, (size_t) (d1 - tok) + 1));
        oidcdata_b64url(&b, payload, strlen(payload));
        CHECK_OK(buf_append_str(&b, d2));
        CHECK_OK(buf_steal(&b, &forged, NULL));
        j = parse_ok(forged);
        CHECK_RC(oidc_jwt_verify(j, k, &err), -EBADMSG);
}

static void test_header_rules(void) {
        _cleanup_(jwks_freep) struct jwks *k = oidcdata_jwks();
        _cleanup_free_ char *pem = oidcdata_read("rsa-public.pem");
        static const char claims[] = "{\"iss\":\"https://issuer.test\",\"aud\":\"trove\",\"exp\":4102444800}";
        uint8_t sig[256] = { 1 };
        char *t;

#define BAD_HEADER(h, want)                                              \
        do {                                                             \
                t = oidcdata_token(h, claims, sig, sizeof sig);          \
                parse_bad(t, want);                                      \
                free(t);                                                 \
        } while (0)
        BAD_HEADER("{\"alg\":\"none\"}", -EINVAL);
        BAD_HEADER("{\"alg\":\"HS256\",\"kid\":\"rsa1\"}", -EINVAL);
        BAD_HEADER("{\"alg\":\"RS384\"}", -EINVAL);
        BAD_HEADER("{\"alg\":\"PS256\"}", -EINVAL);
        BAD_HEADER("{\"alg\":\"rs256\"}", -EINVAL);
        BAD_HEADER("{\"alg\":\"RS256\\u0000\"}", -EINVAL);
        BAD_HEADER("{}", -EINVAL);
        BAD_HEADER("[]", -EINVAL);
        BAD_HEADER("{\"alg\":\"RS256\",\"alg\":\"RS256\"}", -EINVAL);
        BAD_HEADER("{\"alg\":\"RS256\",\"typ\":\"JOSE+JSON\"}", -EINVAL);
        BAD_HEADER("{\"alg\":\"RS256\",\"crit\":[\"b64\"]}", -EINVAL);
        BAD_HEADER("{\"alg\":\"RS256\",\"kid\":\"\"}", -EINVAL);
        BAD_HEADER("{\"alg\":\"RS256\",\"kid\":7}", -EINVAL);
#undef BAD_HEADER

        /* "alg":"none" with an empty signature. */
        t = oidcdata_token("{\"alg\":\"none\"}", claims, "", 0);
        parse_bad(t, -EINVAL);
        free(t);

        /* HS256 with the issuer's public key as the HMAC secret: refused by
         * name before any key is used. */
        {
                struct buf b = BUF_INIT(1u << 20);
                uint8_t mac[crypto_auth_hmacsha256_BYTES];
                char *hs;
                oidcdata_b64url(&b, "{\"alg\":\"HS256\",\"kid\":\"rsa1\"}", 28);
                CHECK_OK(buf_append(&b, ".", 1));
                oidcdata_b64url(&b, claims, strlen(claims));
                crypto_auth_hmacsha256_state st;
                crypto_auth_hmacsha256_init(&st, (const uint8_t *) pem, strlen(pem));
                crypto_auth_hmacsha256_update(&st, b.data, b.len);
                crypto_auth_hmacsha256_final(&st, mac);
                CHECK_OK(buf_append(&b, ".", 1));
                oidcdata_b64url(&b, mac, sizeof mac);
                CHECK_OK(buf_steal(&b, &hs, NULL));
                parse_bad(hs, -EINVAL);
                free(hs);
        }

        /* An RS256 header naming the EC key: parses, then the key type
         * disagrees. */
        {
                _cleanup_(oidc_jwt_freep) struct oidc_jwt *j = NULL;
                struct trove_error err = {};
                t = oidcdata_token("{\"alg\":\"RS256\",\"kid\":\"ec1\"}", claims, sig, sizeof sig);
                j = parse_ok(t);
                free(t);
                CHECK_RC(oidc_jwt_verify(j, k, &err), -EKEYREJECTED);
        }
        {
                _cleanup_(oidc_jwt_freep) struct oidc_jwt *j = NULL;
                struct trove_error err = {};
                t = oidcdata_token("{\"alg\":\"ES256\",\"kid\":\"nope\",\"typ\":\"jwt\"}", claims, sig, 64);
                j = parse_ok(t);
                free(t);
                CHECK_RC(oidc_jwt_verify(j, k, &err), -ENOKEY);
        }
}

static void test_payload_rules(void) {
        uint8_t sig[64] = { 1 };
        char *t;

#define BAD_PAYLOAD(p, want)                                                     \
        do {                                                                     \
                t = oidcdata_token("{\"alg\":\"ES256\"}", p, sig, sizeof sig);   \
                parse_bad(t, want);                                              \
                free(t);                                                         \
        } while (0)
        BAD_PAYLOAD("{\"aud\":\"trove\",\"exp\":1}", -EINVAL);
        BAD_PAYLOAD("{\"iss\":\"\",\"aud\":\"trove\",\"exp\":1}", -EINVAL);
        BAD_PAYLOAD("{\"iss\":1,\"aud\":\"trove\",\"exp\":1}", -EINVAL);
        BAD_PAYLOAD("{\"iss\":\"i\",\"exp\":1}", -EINVAL);
        BAD_PAYLOAD("{\"iss\":\"i\",\"aud\":[],\"exp\":1}", -EINVAL);
        BAD_PAYLOAD("{\"iss\":\"i\",\"aud\":[1],\"exp\":1}", -EINVAL);
        BAD_PAYLOAD("{\"iss\":\"i\",\"aud\":\"trove\"}", -EINVAL);
        BAD_PAYLOAD("{\"iss\":\"i\",\"aud\":\"trove\",\"exp\":1.5}", -EINVAL);
        BAD_PAYLOAD("{\"iss\":\"i\",\"aud\":\"trove\",\"exp\":\"1\"}", -EINVAL);
        BAD_PAYLOAD("{\"iss\":\"i\",\"aud\":\"trove\",\"exp\":1,\"nbf\":null}", -EINVAL);
        BAD_PAYLOAD("{\"iss\":\"i\",\"aud\":\"trove\",\"exp\":1,\"iat\":\"x\"}", -EINVAL);
        BAD_PAYLOAD("{\"iss\":\"i\",\"aud\":\"trove\",\"exp\":1,\"sub\":2}", -EINVAL);
        BAD_PAYLOAD("{\"iss\":\"i\",\"iss\":\"j\",\"aud\":\"trove\",\"exp\":1}", -EINVAL);
        BAD_PAYLOAD("[\"iss\"]", -EINVAL);
        BAD_PAYLOAD("", -EINVAL);
        {
                struct buf b = BUF_INIT(1u << 20);
                CHECK_OK(buf_append_str(&b, "{\"iss\":\"i\",\"aud\":\"trove\",\"exp\":1,\"x\":["));
                for (int i = 0; i < OIDC_VALUES_MAX; i++)
                        CHECK_OK(buf_append_str(&b, i ? ",1" : "1"));
                CHECK_OK(buf_append_str(&b, "]}"));
                CHECK_OK(buf_append(&b, "", 1));
                BAD_PAYLOAD((const char *) b.data, -E2BIG);
                buf_free(&b);
        }
#undef BAD_PAYLOAD
        /* The audience list may be a string or an array. */
        t = oidcdata_token("{\"alg\":\"ES256\"}", "{\"iss\":\"i\",\"aud\":[\"a\",\"trove\"],\"exp\":1}", sig, 64);
        oidc_jwt_free(parse_ok(t));
        free(t);
}

static void test_framing(void) {
        _cleanup_free_ char *tok = oidcdata_read("es256.jwt");
        struct buf b = BUF_INIT(1u << 20);
        char *s;

        parse_bad("", -EINVAL);
        parse_bad("a.b", -EINVAL);
        parse_bad("..", -EINVAL);
        /* Four parts, padding, standard base64, whitespace, NUL. */
        CHECK(asprintf(&s, "%s.", tok) > 0);
        parse_bad(s, -EINVAL);
        free(s);
        CHECK(asprintf(&s, "%s=", tok) > 0);
        parse_bad(s, -EINVAL);
        free(s);
        CHECK(asprintf(&s, "%s ", tok) > 0);
        parse_bad(s, -EINVAL);
        free(s);
        CHECK(asprintf(&s, "%.*s=.%s", (int) (strchr(tok, '.') - tok), tok, strchr(tok, '.') + 1) > 0);
        parse_bad(s, -EINVAL);
        free(s);
        {
                _cleanup_(oidc_jwt_freep) struct oidc_jwt *j = NULL;
                struct trove_error err = {};
                size_t n = strlen(tok);
                tok[n - 1] = 0;
                CHECK_RC(oidc_jwt_parse(tok, n, &j, &err), -EINVAL); /* a NUL inside */
        }
        /* Too long. */
        for (int i = 0; i < OIDC_TOKEN_MAX; i++)
                CHECK_OK(buf_append(&b, "A", 1));
        CHECK_OK(buf_append_str(&b, ".A.A"));
        CHECK_OK(buf_append(&b, "", 1));
        parse_bad((const char *) b.data, -E2BIG);
        buf_free(&b);
}

int main(void) {
        CHECK(sodium_init() >= 0);
        test_known("rs256.jwt", JWT_ALG_RS256, "rsa1");
        test_known("es256.jwt", JWT_ALG_ES256, "ec1");
        test_tampered();
        test_header_rules();
        test_payload_rules();
        test_framing();
        return 0;
}
