/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test-oidcpolicy.c - the exchange policy: parsing (and refusing typos),
 * and which claims get which grants.
 */
#include "oidcdata.h"
#include "trove/oidcpolicy.h"

static const char POLICY[] =
        "{\"maxValidSeconds\":600,"
        " \"issuers\":[{\"issuer\":\"https://gitlab.test\",\"audiences\":[\"trove\"]},"
        "              {\"issuer\":\"https://github.test\",\"audiences\":[\"a\",\"b\"],"
        "               \"jwksUri\":\"https://github.test/keys\",\"jwksCacheSeconds\":60,\"jwksRefetchSeconds\":0}],"
        " \"rules\":[{\"issuer\":\"https://gitlab.test\",\"claims\":{\"project_path\":\"team/*\"},"
        "             \"caches\":[\"team-*\"],\"perms\":[\"pull\",\"push\"]},"
        "            {\"issuer\":\"https://gitlab.test\",\"claims\":{\"project_path\":\"team/app\",\"ref_protected\":\"true\"},"
        "             \"caches\":[\"release\"],\"perms\":[\"push\"]},"
        "            {\"issuer\":\"https://github.test\",\"claims\":{\"repository\":\"org/repo\"},"
        "             \"caches\":[\"gh\"],\"perms\":[\"pull\"]}]}";

static struct oidc_jwt *token(const char *payload) {
        uint8_t sig[64] = { 0 };
        _cleanup_free_ char *t = oidcdata_token("{\"alg\":\"ES256\"}", payload, sig, sizeof sig);
        struct trove_error err = {};
        struct oidc_jwt *j = NULL;

        if (oidc_jwt_parse(t, strlen(t), &j, &err) < 0)
                TEST_FAIL("%s", err.msg);
        return j;
}

static void test_parse(void) {
        _cleanup_(oidcpolicy_freep) struct oidcpolicy *p = NULL;
        struct trove_error err = {};

        CHECK_OK(oidcpolicy_parse(POLICY, strlen(POLICY), &p, &err));
        CHECK_EQ_U64(p->n_issuers, 2);
        CHECK_EQ_U64(p->n_rules, 3);
        CHECK_EQ_U64(p->max_valid_sec, 600);
        CHECK_STREQ(p->issuers[0].issuer, "https://gitlab.test");
        CHECK(!p->issuers[0].jwks_uri);
        CHECK_EQ_U64(p->issuers[0].cache_sec, 3600);
        CHECK_EQ_U64(p->issuers[0].refetch_sec, 30);
        CHECK_STREQ(p->issuers[1].jwks_uri, "https://github.test/keys");
        CHECK_EQ_U64(p->issuers[1].n_audiences, 2);
        CHECK_EQ_U64(p->issuers[1].refetch_sec, 0);
        CHECK_RC(oidcpolicy_find_issuer(p, "https://github.test"), 1);
        CHECK_RC(oidcpolicy_find_issuer(p, "https://github.test/"), -ENOENT);
        CHECK_RC(oidcpolicy_find_issuer(p, NULL), -ENOENT);
}

static void test_grant(void) {
        _cleanup_(oidcpolicy_freep) struct oidcpolicy *p = NULL;
        struct trove_error err = {};
        struct token_claims *c;
        struct oidc_jwt *j;

        CHECK_OK(oidcpolicy_parse(POLICY, strlen(POLICY), &p, &err));

        /* Two rules match: team-* pull+push and release push. */
        j = token("{\"iss\":\"https://gitlab.test\",\"aud\":\"trove\",\"exp\":9,"
                  "\"project_path\":\"team/app\",\"ref_protected\":\"true\"}");
        CHECK_OK(token_claims_new(NULL, 9, &c));
        CHECK_RC(oidcpolicy_grant(p, 0, j, c), 2);
        CHECK(token_permits(c, "team-a", TOKEN_PERM_PUSH));
        CHECK(token_permits(c, "team-a", TOKEN_PERM_PULL));
        CHECK(!token_permits(c, "team-a", TOKEN_PERM_DELETE));
        CHECK(token_permits(c, "release", TOKEN_PERM_PUSH));
        CHECK(!token_permits(c, "release", TOKEN_PERM_PULL));
        CHECK(!token_permits(c, "other", TOKEN_PERM_PULL));
        /* The rules of another issuer never apply. */
        token_claims_free(c);
        CHECK_OK(token_claims_new(NULL, 9, &c));
        CHECK_RC(oidcpolicy_grant(p, 1, j, c), 0);
        CHECK_EQ_U64(c->n_grants, 0);
        token_claims_free(c);
        oidc_jwt_free(j);

        /* All claims of a rule must match; non-string claims never do. */
        j = token("{\"iss\":\"https://gitlab.test\",\"aud\":\"trove\",\"exp\":9,"
                  "\"project_path\":\"team/app\",\"ref_protected\":true}");
        CHECK_OK(token_claims_new(NULL, 9, &c));
        CHECK_RC(oidcpolicy_grant(p, 0, j, c), 1);
        CHECK(!token_permits(c, "release", TOKEN_PERM_PUSH));
        token_claims_free(c);
        oidc_jwt_free(j);

        /* A glob is anchored at both ends. */
        j = token("{\"iss\":\"https://gitlab.test\",\"aud\":\"trove\",\"exp\":9,\"project_path\":\"x/team/app\"}");
        CHECK_OK(token_claims_new(NULL, 9, &c));
        CHECK_RC(oidcpolicy_grant(p, 0, j, c), 0);
        token_claims_free(c);
        oidc_jwt_free(j);
        j = token("{\"iss\":\"https://gitlab.test\",\"aud\":\"trove\",\"exp\":9,\"project_path\":\"team\"}");
        CHECK_OK(token_claims_new(NULL, 9, &c));
        CHECK_RC(oidcpolicy_grant(p, 0, j, c), 0);
        token_claims_free(c);
        oidc_jwt_free(j);
}

static void bad(const char *text) {
        struct oidcpolicy *p = NULL;
        struct trove_error err = {};

        if (oidcpolicy_parse(text, strlen(text), &p, &err) >= 0)
                TEST_FAIL("accepted: %s", text);
        CHECK(!p);
        CHECK(err.msg[0]);
}

#define ISS "{\"issuer\":\"https://i.test\",\"audiences\":[\"t\"]}"
#define RULE(body) "{\"issuers\":[" ISS "],\"rules\":[" body "]}"

static void test_bad(void) {
        struct oidcpolicy *p = NULL;
        struct trove_error err = {};
        static const char ok[] = RULE("{\"issuer\":\"https://i.test\",\"claims\":{\"sub\":\"x\"},\"caches\":[\"c\"],\"perms\":[\"pull\"]}");

        CHECK_OK(oidcpolicy_parse(ok, strlen(ok), &p, &err));
        oidcpolicy_free(p);

        bad("");
        bad("[]");
        bad("{}");
        bad("{\"issuers\":[]}");
        bad("{\"issuers\":[" ISS "]}");                                 /* no rules array */
        bad("{\"issuers\":[" ISS "],\"rules\":[],\"extra\":1}");         /* unknown key */
        bad("{\"issuers\":[" ISS "," ISS "],\"rules\":[]}");             /* twice */
        bad("{\"issuers\":[{\"issuer\":\"i.test\",\"audiences\":[\"t\"]}],\"rules\":[]}");
        bad("{\"issuers\":[{\"issuer\":\"https://i.test\",\"audiences\":[]}],\"rules\":[]}");
        bad("{\"issuers\":[{\"issuer\":\"https://i.test\"}],\"rules\":[]}");
        bad("{\"issuers\":[{\"issuer\":\"https://i.test\",\"audiences\":[\"t\"],\"jwksUri\":\"file:/k\"}],\"rules\":[]}");
        bad("{\"issuers\":[{\"issuer\":\"https://i.test\",\"audiences\":[\"t\"],\"jwks_uri\":\"https://k\"}],\"rules\":[]}");
        bad("{\"issuers\":[{\"issuer\":\"https://i.test\",\"audiences\":[\"t\"],\"jwksCacheSeconds\":0}],\"rules\":[]}");
        bad("{\"maxValidSeconds\":99999999,\"issuers\":[" ISS "],\"rules\":[]}");
        bad(RULE("{\"issuer\":\"https://other.test\",\"claims\":{\"sub\":\"x\"},\"caches\":[\"c\"],\"perms\":[\"pull\"]}"));
        bad(RULE("{\"issuer\":\"https://i.test\",\"claims\":{},\"caches\":[\"c\"],\"perms\":[\"pull\"]}"));
        bad(RULE("{\"issuer\":\"https://i.test\",\"claims\":{\"sub\":1},\"caches\":[\"c\"],\"perms\":[\"pull\"]}"));
        bad(RULE("{\"issuer\":\"https://i.test\",\"claims\":{\"sub\":\"\"},\"caches\":[\"c\"],\"perms\":[\"pull\"]}"));
        bad(RULE("{\"issuer\":\"https://i.test\",\"claims\":{\"sub\":\"x\"},\"caches\":[],\"perms\":[\"pull\"]}"));
        bad(RULE("{\"issuer\":\"https://i.test\",\"claims\":{\"sub\":\"x\"},\"caches\":[\"a b\"],\"perms\":[\"pull\"]}"));
        bad(RULE("{\"issuer\":\"https://i.test\",\"claims\":{\"sub\":\"x\"},\"caches\":[\"c\"],\"perms\":[\"pul\"]}"));
        bad(RULE("{\"issuer\":\"https://i.test\",\"claims\":{\"sub\":\"x\"},\"caches\":[\"c\"],\"perms\":[]}"));
        bad(RULE("{\"issuer\":\"https://i.test\",\"claims\":{\"sub\":\"x\"},\"caches\":[\"c\"],\"perms\":[\"pull\"],\"perm\":1}"));
}

int main(void) {
        test_parse();
        test_grant();
        test_bad();
        return 0;
}
