/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oidcpolicy.h - which CI job tokens troved exchanges for trove tokens, and
 * what they get: the trusted issuers and the rules that map a verified ID
 * token's claims to cache patterns and permissions (docs/oidc.md).
 *
 *   {
 *     "maxValidSeconds": 3600,
 *     "issuers": [
 *       { "issuer": "https://gitlab.example.org",
 *         "audiences": ["https://cache.example.org"],
 *         "jwksUri": "https://gitlab.example.org/oauth/discovery/keys",
 *         "jwksCacheSeconds": 3600,
 *         "jwksRefetchSeconds": 30 }
 *     ],
 *     "rules": [
 *       { "issuer": "https://gitlab.example.org",
 *         "claims": { "namespace_path": "team", "ref_protected": "true" },
 *         "caches": ["team-*"],
 *         "perms": ["pull", "push"] }
 *     ]
 *   }
 *
 * issuers: "issuer" (an http(s) URL, compared exactly with the token's
 * "iss") and "audiences" (1..OIDC_AUD_MAX strings; the token's "aud" must
 * hold one) are required. "jwksUri" is optional: without it the keys' URL is
 * the "jwks_uri" of <issuer>/.well-known/openid-configuration. The key set
 * is kept jwksCacheSeconds (default 3600) and fetched at most once every
 * jwksRefetchSeconds (default 30), also when a token names an unknown key.
 *
 * rules: "issuer" names a configured issuer; "claims" maps 1..16 claim
 * names to patterns, all of which must match (a pattern is the exact string,
 * or a glob whose '*' matches any run of characters, '/' included; only
 * string claims match); "caches" holds 1..64 cache patterns and "perms" the
 * permissions granted on each of them. Every rule that matches adds its
 * grants. maxValidSeconds (default 3600, at most 7 days) caps the lifetime of
 * an issued token, which never outlives the job token either.
 *
 * Unknown keys anywhere are refused, so a typo is an error at start-up and
 * never a silently wider or narrower policy. Ownership: oidcpolicy_parse()
 * and oidcpolicy_load() return a policy owned by the caller.
 */
#pragma once

#include "trove/common.h"
#include "trove/oidc.h"
#include "trove/token.h"

#define OIDCPOLICY_TEXT_MAX (1u << 20)
#define OIDCPOLICY_ISSUERS_MAX 32
#define OIDCPOLICY_RULES_MAX 1024
#define OIDCPOLICY_RULE_CLAIMS_MAX 16
#define OIDCPOLICY_RULE_CACHES_MAX 64
#define OIDCPOLICY_STRING_MAX 1024
#define OIDCPOLICY_VALID_MAX (7 * 86400)

struct oidcpolicy_issuer {
        char *issuer;
        char **audiences;
        size_t n_audiences;
        char *jwks_uri;             /* NULL: discovery */
        unsigned cache_sec;
        unsigned refetch_sec;
};

struct oidcpolicy {
        struct oidcpolicy_issuer *issuers;
        size_t n_issuers;
        struct oidcpolicy_rule *rules;
        size_t n_rules;
        int64_t max_valid_sec;
};

int oidcpolicy_parse(const void *text, size_t n, struct oidcpolicy **ret, struct trove_error *err);
int oidcpolicy_load(const char *path, struct oidcpolicy **ret, struct trove_error *err);
void oidcpolicy_free(struct oidcpolicy *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct oidcpolicy *, oidcpolicy_free);

/* The index of the configured issuer equal to iss, or -ENOENT. */
int oidcpolicy_find_issuer(const struct oidcpolicy *p, const char *iss);

/* Adds to claims the grants of every rule of issuer index that matches the
 * (verified) token. Returns how many rules matched (0: none, nothing added). */
int oidcpolicy_grant(const struct oidcpolicy *p, size_t issuer, const struct oidc_jwt *j,
                     struct token_claims *claims);
