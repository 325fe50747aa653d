/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "test.h"
#include "trove/buf.h"
#include "trove/token.h"

static const uint8_t secret[32] = "0123456789abcdef0123456789abcdef";
static const uint8_t other_secret[32] = "0123456789abcdef0123456789abcdeF";
static const int64_t now = 1700000000;

static char *b64url(const void *p, size_t n) {
        size_t len = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        char *s = malloc(len);
        CHECK(s);
        sodium_bin2base64(s, len, p, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        return s;
}

/* A token from arbitrary header and payload text, signed with key (or with
 * an empty signature part if key is NULL). */
static char *craft(const char *header, const char *payload, const uint8_t *key, size_t key_len) {
        struct buf b = BUF_INIT(1 << 20);
        char *h = b64url(header, strlen(header)), *p = b64url(payload, strlen(payload));
        char *out;

        CHECK_OK(buf_printf(&b, "%s.%s.", h, p));
        if (key) {
                uint8_t mac[32];
                crypto_auth_hmacsha256_state st;
                crypto_auth_hmacsha256_init(&st, key, key_len);
                crypto_auth_hmacsha256_update(&st, b.data, b.len - 1);
                crypto_auth_hmacsha256_final(&st, mac);
                char *m = b64url(mac, sizeof mac);
                CHECK_OK(buf_append_str(&b, m));
                free(m);
        }
        free(h);
        free(p);
        CHECK_OK(buf_steal(&b, &out, NULL));
        return out;
}

static int decode(const char *text, const uint8_t *key, int64_t t, struct token_claims **ret,
                  struct trove_error *e) {
        return token_decode_verify(text, key, 32, t, ret, e);
}

static void test_rfc7515_a1(void) {
        /* RFC 7515 appendix A.1: an HS256 JWS with a 64-byte key. */
        static const char jws[] =
                "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
                ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
                ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        static const char jwk_k[] =
                "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
        uint8_t key[64];
        size_t key_len;
        struct token_claims *c = NULL;
        struct trove_error e = {};

        CHECK_RC(sodium_base642bin(key, sizeof key, jwk_k, strlen(jwk_k), NULL, &key_len, NULL,
                                   sodium_base64_VARIANT_URLSAFE_NO_PADDING), 0);
        CHECK_EQ_U64(key_len, 64);

        CHECK_OK(token_decode_verify(jws, key, key_len, 1300819379, &c, &e));
        CHECK_EQ_U64(c->exp, 1300819380);
        CHECK(c->sub == NULL);
        CHECK_EQ_U64(c->n_grants, 0);
        CHECK(!token_permits(c, "anything", TOKEN_PERM_PULL));
        token_claims_free(c);

        c = NULL;
        CHECK_RC(token_decode_verify(jws, key, key_len, 1300819380, &c, &e), -EKEYEXPIRED);
        CHECK(c == NULL);
        CHECK(strstr(e.msg, "expired"));

        /* Same MAC bits but a non-canonical last base64url character. */
        char *bad = strdup(jws);
        bad[strlen(bad) - 1] = 'l';
        CHECK_RC(token_decode_verify(bad, key, key_len, 1300819379, &c, &e), -EINVAL);
        /* A key one bit off. */
        key[0] ^= 1;
        CHECK_RC(token_decode_verify(jws, key, key_len, 1300819379, &c, &e), -EPERM);
        free(bad);
}

static char *run_python(const char *script, const char *arg) {
        struct buf b = BUF_INIT(1 << 16);
        char cmd[8192], chunk[512], *out;
        size_t n;
        FILE *f;

        /* Arguments are base64url/JSON text without single quotes. */
        CHECK(!strchr(script, '\'') && (!arg || !strchr(arg, '\'')));
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c '%s' '%s'", script, arg ? arg : "");
        f = popen(cmd, "r");
        CHECK(f);
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
                CHECK_OK(buf_append(&b, chunk, n));
        CHECK_RC(pclose(f), 0);
        while (b.len > 0 && b.data[b.len - 1] == '\n')
                b.data[--b.len] = 0;
        CHECK_OK(buf_steal(&b, &out, NULL));
        return out;
}

/* A token made independently, by Python's hmac/base64/json. */
static void test_python_token(void) {
        static const char script[] =
                "import base64,hashlib,hmac,json,sys\n"
                "k=b\"0123456789abcdef0123456789abcdef\"\n"
                "e=lambda b: base64.urlsafe_b64encode(b).rstrip(b\"=\")\n"
                "h=e(json.dumps({\"typ\":\"JWT\",\"alg\":\"HS256\"}).encode())\n"
                "p=e(json.dumps({\"sub\":\"ci-runner\",\"iat\":1699990000,\"nbf\":1699990000,"
                "\"exp\":1700003600,\"https://trove/perms\":{\"team-*\":[\"pull\"],"
                "\"team-a\":[\"push\",\"delete\"]}}).encode())\n"
                "m=e(hmac.new(k,h+b\".\"+p,hashlib.sha256).digest())\n"
                "print((h+b\".\"+p+b\".\"+m).decode())\n";
        _cleanup_free_ char *jwt = run_python(script, NULL);
        struct token_claims *c = NULL;
        struct trove_error e = {};

        CHECK_OK(decode(jwt, secret, now, &c, &e));
        CHECK_STREQ(c->sub, "ci-runner");
        CHECK_EQ_U64(c->exp, 1700003600);
        CHECK(c->has_iat && c->iat == 1699990000);
        CHECK(c->has_nbf && c->nbf == 1699990000);
        CHECK(token_permits(c, "team-a", TOKEN_PERM_PULL));
        CHECK(token_permits(c, "team-a", TOKEN_PERM_PUSH));
        CHECK(token_permits(c, "team-a", TOKEN_PERM_DELETE));
        CHECK(token_permits(c, "team-b", TOKEN_PERM_PULL));
        CHECK(!token_permits(c, "team-b", TOKEN_PERM_PUSH));
        CHECK(!token_permits(c, "other", TOKEN_PERM_PULL));
        token_claims_free(c);

        CHECK_RC(decode(jwt, secret, 1699989999, &c, &e), -EKEYREJECTED);
        CHECK(strstr(e.msg, "not valid"));
        CHECK_RC(decode(jwt, secret, 1700003600, &c, &e), -EKEYEXPIRED);
        CHECK_RC(decode(jwt, other_secret, now, &c, &e), -EPERM);
}

/* Python checks the MAC of a token we made and reads its claims. */
static void test_python_verifies_ours(void) {
        static const char script[] =
                "import base64,hashlib,hmac,json,sys\n"
                "k=b\"0123456789abcdef0123456789abcdef\"\n"
                "d=lambda s: base64.urlsafe_b64decode(s+\"=\"*(-len(s)%4))\n"
                "h,p,m=sys.argv[1].split(\".\")\n"
                "ok=hmac.compare_digest(d(m),hmac.new(k,(h+\".\"+p).encode(),hashlib.sha256).digest())\n"
                "H=json.loads(d(h)); P=json.loads(d(p))\n"
                "print(ok, H[\"alg\"], H[\"typ\"], P[\"sub\"], P[\"exp\"],"
                " sorted(P[\"https://trove/perms\"][\"team-*\"]))\n";
        struct token_claims *c = NULL;
        _cleanup_free_ char *jwt = NULL, *out = NULL;

        CHECK_OK(token_claims_new("alice", now + 3600, &c));
        CHECK_OK(token_claims_grant(c, "team-*", TOKEN_PERM_BIT(TOKEN_PERM_PUSH) |
                                                         TOKEN_PERM_BIT(TOKEN_PERM_PULL)));
        CHECK_OK(token_encode(c, secret, sizeof secret, &jwt));
        token_claims_free(c);
        out = run_python(script, jwt);
        CHECK_STREQ(out, "True HS256 JWT alice 1700003600 ['pull', 'push']");
}

static void test_round_trip(void) {
        struct token_claims *c = NULL, *d = NULL;
        struct trove_error e = {};
        _cleanup_free_ char *jwt = NULL;

        CHECK_OK(token_claims_new("bob", now + 60, &c));
        c->has_iat = true;
        c->iat = now;
        c->has_nbf = true;
        c->nbf = now - 10;
        CHECK_OK(token_claims_grant(c, "*", TOKEN_PERM_BIT(TOKEN_PERM_PULL)));
        CHECK_OK(token_claims_grant(c, "prod", TOKEN_PERMS_ALL));
        CHECK_OK(token_encode(c, secret, sizeof secret, &jwt));
        CHECK(strlen(jwt) <= TOKEN_TEXT_MAX);
        CHECK(!strchr(jwt, '=') && !strchr(jwt, '+') && !strchr(jwt, '/'));

        CHECK_OK(decode(jwt, secret, now, &d, &e));
        CHECK_STREQ(d->sub, "bob");
        CHECK_EQ_U64(d->exp, now + 60);
        CHECK(d->has_iat && d->iat == now);
        CHECK(d->has_nbf && d->nbf == now - 10);
        CHECK_EQ_U64(d->n_grants, 2);
        CHECK_STREQ(d->grants[0].pattern, "*");
        CHECK_EQ_U64(d->grants[0].perms, TOKEN_PERM_BIT(TOKEN_PERM_PULL));
        CHECK_STREQ(d->grants[1].pattern, "prod");
        CHECK_EQ_U64(d->grants[1].perms, TOKEN_PERMS_ALL);
        for (int p = 0; p < _TOKEN_PERM_MAX; p++) {
                CHECK(token_permits(d, "prod", p));
                CHECK(token_permits(d, "staging", p) == (p == TOKEN_PERM_PULL));
        }
        token_claims_free(d);

        /* Expiry is exclusive: valid until the second before exp. */
        CHECK_OK(decode(jwt, secret, now + 59, &d, &e));
        token_claims_free(d);
        d = NULL;
        CHECK_RC(decode(jwt, secret, now + 60, &d, &e), -EKEYEXPIRED);
        CHECK(d == NULL);
        CHECK_RC(decode(jwt, secret, now - 11, &d, &e), -EKEYREJECTED);

        /* A secret shorter than 32 bytes is refused both ways. */
        _cleanup_free_ char *x = NULL;
        CHECK_RC(token_encode(c, secret, 16, &x), -EINVAL);
        CHECK_RC(token_decode_verify(jwt, secret, 16, now, &d, &e), -EINVAL);
        token_claims_free(c);
}

static void test_forged_and_tampered(void) {
        struct token_claims *c = NULL, *d = NULL;
        struct trove_error e = {};
        _cleanup_free_ char *jwt = NULL, *forged = NULL, *tampered = NULL;

        CHECK_OK(token_claims_new("eve", now + 60, &c));
        CHECK_OK(token_claims_grant(c, "public", TOKEN_PERM_BIT(TOKEN_PERM_PULL)));
        CHECK_OK(token_encode(c, other_secret, sizeof other_secret, &forged));
        CHECK_RC(decode(forged, secret, now, &d, &e), -EPERM);
        CHECK(strstr(e.msg, "signature"));
        CHECK(d == NULL);

        /* Payload swapped for one granting more, signature kept. */
        CHECK_OK(token_encode(c, secret, sizeof secret, &jwt));
        CHECK_OK(token_claims_grant(c, "*", TOKEN_PERMS_ALL));
        CHECK_OK(token_encode(c, other_secret, sizeof other_secret, &tampered));
        token_claims_free(c);
        {
                const char *p1 = strchr(tampered, '.'), *p2 = strchr(p1 + 1, '.');
                const char *s2 = strrchr(jwt, '.');
                struct buf b = BUF_INIT(TOKEN_TEXT_MAX);
                char *t;
                CHECK_OK(buf_append(&b, tampered, (size_t) (p2 - tampered)));
                CHECK_OK(buf_append_str(&b, s2));
                CHECK_OK(buf_steal(&b, &t, NULL));
                CHECK_RC(decode(t, secret, now, &d, &e), -EPERM);
                free(t);
        }
        /* One flipped character anywhere in header or payload breaks it. */
        for (size_t i = 0; jwt[i] && jwt + i < strrchr(jwt, '.'); i++) {
                _cleanup_free_ char *t = strdup(jwt);
                if (t[i] == '.')
                        continue;
                t[i] = t[i] == 'A' ? 'B' : 'A';
                int r = decode(t, secret, now, &d, &e);
                CHECK(r == -EPERM || r == -EINVAL);
        }
        /* Truncations are always refused. */
        for (size_t n = 0; n < strlen(jwt); n++) {
                _cleanup_free_ char *t = strndup(jwt, n);
                int r = decode(t, secret, now, &d, &e);
                CHECK(r == -EINVAL || r == -EPERM);
        }
        {
                _cleanup_free_ char *t = strndup(jwt, strlen(jwt) - 1);
                CHECK_RC(decode(t, secret, now, &d, &e), -EINVAL);
        }
        /* Extra parts (JWE has five) and trailing garbage. */
        {
                _cleanup_free_ char *t = NULL;
                CHECK(asprintf(&t, "%s.AAAA", jwt) > 0);
                CHECK_RC(decode(t, secret, now, &d, &e), -EINVAL);
                CHECK(strstr(e.msg, "three"));
        }
        CHECK_OK(decode(jwt, secret, now, &d, &e));
        token_claims_free(d);
}

static void test_header_rules(void) {
        struct token_claims *d = NULL;
        struct trove_error e = {};
        const char *payload = "{\"sub\":\"x\",\"exp\":1800000000}";
        char *t;

        /* Unsigned token. */
        t = craft("{\"alg\":\"none\"}", payload, NULL, 0);
        CHECK_RC(decode(t, secret, now, &d, &e), -EINVAL);
        free(t);
        /* alg none with a signature part. */
        t = craft("{\"alg\":\"none\",\"typ\":\"JWT\"}", payload, secret, sizeof secret);
        CHECK_RC(decode(t, secret, now, &d, &e), -EINVAL);
        CHECK(strstr(e.msg, "none"));
        free(t);
        t = craft("{\"alg\":\"NONE\"}", payload, secret, sizeof secret);
        CHECK_RC(decode(t, secret, now, &d, &e), -EINVAL);
        free(t);
        t = craft("{\"alg\":\"HS512\"}", payload, secret, sizeof secret);
        CHECK_RC(decode(t, secret, now, &d, &e), -EINVAL);
        CHECK(strstr(e.msg, "HS256"));
        free(t);
        t = craft("{\"typ\":\"JWT\"}", payload, secret, sizeof secret);
        CHECK_RC(decode(t, secret, now, &d, &e), -EINVAL);
        free(t);
        t = craft("{\"alg\":\"HS256\",\"typ\":\"JOSE+JSON\"}", payload, secret, sizeof secret);
        CHECK_RC(decode(t, secret, now, &d, &e), -EINVAL);
        CHECK(strstr(e.msg, "typ"));
        free(t);
        t = craft("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", payload, secret, sizeof secret);
        CHECK_RC(decode(t, secret, now, &d, &e), -EINVAL);
        free(t);
        t = craft("{\"alg\":\"HS256\",\"alg\":\"none\"}", payload, secret, sizeof secret);
        CHECK_RC(decode(t, secret, now, &d, &e), -EINVAL);
        free(t);
        t = craft("[\"HS256\"]", payload, secret, sizeof secret);
        CHECK_RC(decode(t, secret, now, &d, &e), -EINVAL);
        free(t);
        /* typ is optional and case-insensitive; no typ is fine. */
        t = craft("{\"alg\":\"HS256\"}", payload, secret, sizeof secret);
        CHECK_OK(decode(t, secret, now, &d, &e));
        token_claims_free(d);
        free(t);
        t = craft("{\"alg\":\"HS256\",\"typ\":\"jwt\"}", payload, secret, sizeof secret);
        CHECK_OK(decode(t, secret, now, &d, &e));
        token_claims_free(d);
        free(t);
}

static void test_claim_rules(void) {
        static const char *const bad[] = {
                "{\"sub\":\"x\"}",                                      /* no exp */
                "{\"exp\":\"1800000000\"}",                             /* exp a string */
                "{\"exp\":1.8e9}",                                      /* exp not integer */
                "{\"exp\":1800000000,\"nbf\":null}",
                "{\"exp\":1800000000,\"sub\":7}",
                "{\"exp\":1800000000,\"exp\":1}",                       /* duplicate */
                "{\"exp\":1800000000,\"https://trove/perms\":[]}",
                "{\"exp\":1800000000,\"https://trove/perms\":{\"a\":\"pull\"}}",
                "{\"exp\":1800000000,\"https://trove/perms\":{\"a\":[\"admin\"]}}",
                "{\"exp\":1800000000,\"https://trove/perms\":{\"a\":[1]}}",
                "{\"exp\":1800000000,\"https://trove/perms\":{\"\":[\"pull\"]}}",
                "{\"exp\":1800000000,\"https://trove/perms\":{\"a b\":[\"pull\"]}}",
                "[1800000000]",
                "{\"exp\":1800000000",                                   /* bad JSON */
        };
        struct token_claims *d = NULL;
        struct trove_error e = {};

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char *t = craft("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", bad[i], secret, sizeof secret);
                int r = decode(t, secret, now, &d, &e);
                if (r != -EINVAL)
                        TEST_FAIL("payload %s: got %d, want -EINVAL", bad[i], r);
                CHECK(e.msg[0]);
                free(t);
        }
        {
                char *t = craft("{\"alg\":\"HS256\"}", "{\"sub\":\"x\"}", secret, sizeof secret);
                CHECK_RC(decode(t, secret, now, &d, &e), -EINVAL);
                CHECK(strstr(e.msg, "exp"));
                free(t);
        }
        /* A valid token without perms claim permits nothing. */
        {
                char *t = craft("{\"alg\":\"HS256\"}", "{\"exp\":1800000000,\"x\":{}}", secret,
                                sizeof secret);
                CHECK_OK(decode(t, secret, now, &d, &e));
                CHECK(!token_permits(d, "a", TOKEN_PERM_PULL));
                token_claims_free(d);
                free(t);
        }
        /* Extreme times: the message's arithmetic must not overflow (a
         * sanitizer build checks), and the verdicts stay right. */
        {
                char *t = craft("{\"alg\":\"HS256\"}", "{\"exp\":-9223372036854775808}", secret, sizeof secret);
                d = NULL;
                CHECK_RC(decode(t, secret, now, &d, &e), -EKEYEXPIRED);
                CHECK(strstr(e.msg, "expired 9223372038554775808 seconds ago"));
                CHECK_RC(decode(t, secret, INT64_MAX, &d, &e), -EKEYEXPIRED);
                CHECK(d == NULL);
                free(t);
                t = craft("{\"alg\":\"HS256\"}", "{\"exp\":9223372036854775807,\"nbf\":9223372036854775807}",
                          secret, sizeof secret);
                CHECK_RC(decode(t, secret, INT64_MIN, &d, &e), -EKEYREJECTED);
                CHECK(strstr(e.msg, "not valid for another 18446744073709551615 seconds"));
                CHECK(d == NULL);
                free(t);
        }
}

static void test_patterns(void) {
        CHECK(token_pattern_match("team-*", "team-a"));
        CHECK(token_pattern_match("team-*", "team-"));
        CHECK(!token_pattern_match("team-*", "other"));
        CHECK(!token_pattern_match("team-*", "xteam-a"));
        CHECK(token_pattern_match("*", "anything"));
        CHECK(token_pattern_match("*", ""));
        CHECK(token_pattern_match("exact", "exact"));
        CHECK(!token_pattern_match("exact", "exact2"));
        CHECK(!token_pattern_match("exact", "exac"));
        CHECK(token_pattern_match("*-prod", "team-a-prod"));
        CHECK(!token_pattern_match("*-prod", "team-a-prod2"));
        CHECK(token_pattern_match("a*b*c", "aXXbYYc"));
        CHECK(token_pattern_match("a*b*c", "abc"));
        CHECK(token_pattern_match("a*b*c", "abbbcbc"));
        CHECK(!token_pattern_match("a*b*c", "acb"));
        CHECK(token_pattern_match("**", "x"));
        CHECK(!token_pattern_match("?", "x")); /* '?' is literal */

        /* Union of all matching patterns. */
        struct token_claims *c = NULL;
        CHECK_OK(token_claims_new(NULL, now + 1, &c));
        CHECK_OK(token_claims_grant(c, "team-*", TOKEN_PERM_BIT(TOKEN_PERM_PULL)));
        CHECK_OK(token_claims_grant(c, "team-a", TOKEN_PERM_BIT(TOKEN_PERM_PUSH)));
        CHECK_OK(token_claims_grant(c, "*-a", TOKEN_PERM_BIT(TOKEN_PERM_DELETE)));
        CHECK(token_permits(c, "team-a", TOKEN_PERM_PULL));
        CHECK(token_permits(c, "team-a", TOKEN_PERM_PUSH));
        CHECK(token_permits(c, "team-a", TOKEN_PERM_DELETE));
        CHECK(!token_permits(c, "team-a", TOKEN_PERM_DESTROY));
        CHECK(token_permits(c, "team-b", TOKEN_PERM_PULL));
        CHECK(!token_permits(c, "team-b", TOKEN_PERM_PUSH));
        CHECK(token_permits(c, "other-a", TOKEN_PERM_DELETE));
        CHECK(!token_permits(c, "other-a", TOKEN_PERM_PULL));
        CHECK(!token_permits(c, "other", TOKEN_PERM_PULL));
        /* Granting the same pattern again merges. */
        CHECK_OK(token_claims_grant(c, "team-*", TOKEN_PERM_BIT(TOKEN_PERM_CONFIGURE)));
        CHECK_EQ_U64(c->n_grants, 3);
        CHECK(token_permits(c, "team-b", TOKEN_PERM_CONFIGURE));
        CHECK(token_permits(c, "team-b", TOKEN_PERM_PULL));
        CHECK_RC(token_claims_grant(c, "", TOKEN_PERM_BIT(TOKEN_PERM_PULL)), -EINVAL);
        CHECK_RC(token_claims_grant(c, "x", 1u << 20), -EINVAL);
        token_claims_free(c);

        CHECK_STREQ(token_perm_to_string(TOKEN_PERM_CONFIGURE), "configure");
        CHECK_RC(token_perm_from_string("destroy"), TOKEN_PERM_DESTROY);
        CHECK_RC(token_perm_from_string("root"), -EINVAL);
        CHECK(token_perm_to_string(_TOKEN_PERM_MAX) == NULL);
}

static void test_bounds(void) {
        struct token_claims *c = NULL, *d = NULL;
        struct trove_error e = {};
        char name[64];
        _cleanup_free_ char *jwt = NULL;

        CHECK_OK(token_claims_new("x", now + 1, &c));
        for (int i = 0; i < TOKEN_PATTERNS_MAX; i++) {
                snprintf(name, sizeof name, "c%d", i);
                CHECK_OK(token_claims_grant(c, name, TOKEN_PERM_BIT(TOKEN_PERM_PULL)));
        }
        CHECK_RC(token_claims_grant(c, "one-more", TOKEN_PERM_BIT(TOKEN_PERM_PULL)), -E2BIG);
        /* 256 short patterns fit in 8 KiB... */
        CHECK_OK(token_encode(c, secret, sizeof secret, &jwt));
        CHECK_OK(decode(jwt, secret, now, &d, &e));
        CHECK_EQ_U64(d->n_grants, TOKEN_PATTERNS_MAX);
        CHECK(token_permits(d, "c255", TOKEN_PERM_PULL));
        token_claims_free(d);
        token_claims_free(c);

        /* ...long ones do not. */
        CHECK_OK(token_claims_new("x", now + 1, &c));
        for (int i = 0; i < 64; i++) {
                snprintf(name, sizeof name, "%060d", i);
                CHECK_OK(token_claims_grant(c, name, TOKEN_PERMS_ALL));
        }
        free(jwt);
        jwt = NULL;
        CHECK_RC(token_encode(c, secret, sizeof secret, &jwt), -E2BIG);
        token_claims_free(c);

        /* 257 patterns signed by someone with the secret are still refused. */
        struct buf b = BUF_INIT(1 << 16);
        CHECK_OK(buf_append_str(&b, "{\"exp\":1800000000,\"https://trove/perms\":{"));
        for (int i = 0; i <= TOKEN_PATTERNS_MAX; i++)
                CHECK_OK(buf_printf(&b, "%s\"%d\":[]", i ? "," : "", i));
        CHECK_OK(buf_append_str(&b, "}}"));
        char *t = craft("{\"alg\":\"HS256\"}", (const char *) b.data, secret, sizeof secret);
        CHECK_RC(decode(t, secret, now, &d, &e), -EINVAL);
        free(t);
        buf_free(&b);

        /* Longer than 8 KiB. */
        char *big = malloc(TOKEN_TEXT_MAX + 2);
        CHECK(big);
        memset(big, 'A', TOKEN_TEXT_MAX + 1);
        big[10] = big[20] = '.';
        big[TOKEN_TEXT_MAX + 1] = 0;
        CHECK_RC(decode(big, secret, now, &d, &e), -EINVAL);
        CHECK(strstr(e.msg, "longer"));
        free(big);
}

static void test_secret_file(void) {
        char dir[] = "/tmp/test-token-XXXXXX", path[256];
        struct token_secret s = {}, s2 = {};
        struct trove_error e = {};
        struct stat st;
        FILE *f;

        CHECK(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/secret", dir);
        CHECK_OK(token_secret_generate(path, &e));
        CHECK(stat(path, &st) == 0);
        CHECK_EQ_U64(st.st_mode & 07777, 0600);
        CHECK_OK(token_secret_load(path, &s, &e));
        CHECK_EQ_U64(s.len, 32);
        CHECK_RC(token_secret_generate(path, &e), -EEXIST);
        CHECK_OK(token_secret_load(path, &s2, &e));
        CHECK(s2.len == s.len && memcmp(s.key, s2.key, s.len) == 0);

        /* The loaded secret signs and verifies. */
        {
                struct token_claims *c = NULL, *d = NULL;
                _cleanup_free_ char *jwt = NULL;
                CHECK_OK(token_claims_new("k", now + 5, &c));
                CHECK_OK(token_encode(c, s.key, s.len, &jwt));
                CHECK_OK(token_decode_verify(jwt, s2.key, s2.len, now, &d, &e));
                token_claims_free(c);
                token_claims_free(d);
        }

        CHECK(chmod(path, 0644) == 0);
        CHECK_RC(token_secret_load(path, &s2, &e), -EPERM);
        CHECK(strstr(e.msg, "chmod"));
        CHECK(unlink(path) == 0);

        /* Unpadded base64 of 40 bytes with surrounding whitespace: accepted. */
        f = fopen(path, "w");
        CHECK(f);
        fputs("  QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ\n\n", f);
        fclose(f);
        CHECK(chmod(path, 0600) == 0);
        CHECK_OK(token_secret_load(path, &s2, &e));
        CHECK_EQ_U64(s2.len, 40);
        CHECK(s2.key[0] == 'A' && s2.key[39] == 'A');
        CHECK(unlink(path) == 0);

        /* 16 bytes is too short. */
        f = fopen(path, "w");
        CHECK(f);
        fputs("QUFBQUFBQUFBQUFBQUFBQQ==\n", f);
        fclose(f);
        CHECK(chmod(path, 0600) == 0);
        CHECK_RC(token_secret_load(path, &s2, &e), -EINVAL);
        CHECK(strstr(e.msg, "at least 32"));
        CHECK(unlink(path) == 0);

        /* Not base64. */
        f = fopen(path, "w");
        CHECK(f);
        fputs("this is not base64 at all, not even close to it!!\n", f);
        fclose(f);
        CHECK(chmod(path, 0600) == 0);
        CHECK_RC(token_secret_load(path, &s2, &e), -EINVAL);
        CHECK(unlink(path) == 0);

        CHECK_RC(token_secret_load(path, &s2, &e), -ENOENT);
        token_secret_wipe(&s);
        CHECK(s.len == 0);
        CHECK(rmdir(dir) == 0);
}

int main(void) {
        CHECK(sodium_init() >= 0);
        test_rfc7515_a1();
        test_python_token();
        test_python_verifies_ours();
        test_round_trip();
        test_forged_and_tampered();
        test_header_rules();
        test_claim_rules();
        test_patterns();
        test_bounds();
        test_secret_file();
        return 0;
}
