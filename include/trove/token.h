/* SPDX-License-Identifier: Apache-2.0 */
/*
 * token.h - trove's access tokens: JWTs (RFC 7519) in JWS compact form
 * (RFC 7515), HS256 only, signed with the server secret.
 *
 *   header  {"alg":"HS256","typ":"JWT"}      (alg must be HS256, "none" and
 *                                             every other alg are refused;
 *                                             typ, if present, must be JWT;
 *                                             a "crit" header is refused)
 *   claims  "sub"  string, optional
 *           "exp"  integer seconds since the epoch, REQUIRED
 *           "iat"  integer, optional (informational)
 *           "nbf"  integer, optional
 *           "https://trove/perms": { "<cache pattern>": ["pull", "push", ...], ... }
 *
 * A cache pattern is a cache name or a glob in which '*' (the only
 * wildcard) matches any run of characters, possibly empty; "*" alone
 * matches every cache. A token permits an operation on a cache when ANY
 * pattern that matches the cache grants it (the union of all matching
 * patterns); a missing perms claim grants nothing. Unknown permission
 * names are refused rather than ignored, so a typo is an error and never
 * a silent downgrade.
 *
 * Bounds: a token is at most TOKEN_TEXT_MAX bytes, at most
 * TOKEN_PATTERNS_MAX patterns, a pattern at most TOKEN_PATTERN_MAX bytes.
 *
 * Ownership: token_encode() returns a heap string (free()),
 * token_decode_verify() returns claims owned by the caller
 * (token_claims_free()).
 */
#pragma once

#include "trove/common.h"

#define TOKEN_TEXT_MAX 8192
#define TOKEN_PATTERNS_MAX 256
#define TOKEN_PATTERN_MAX 255
#define TOKEN_SUB_MAX 1024
#define TOKEN_PERMS_CLAIM "https://trove/perms"

/* Server secret: the file holds base64 (standard alphabet, padding
 * optional, surrounding whitespace ignored) of TOKEN_SECRET_MIN..MAX bytes. */
#define TOKEN_SECRET_MIN 32
#define TOKEN_SECRET_MAX 512
#define TOKEN_SECRET_FILE_MAX 4096

enum token_perm {
        TOKEN_PERM_PULL,
        TOKEN_PERM_PUSH,
        TOKEN_PERM_DELETE,
        TOKEN_PERM_CREATE,
        TOKEN_PERM_CONFIGURE,
        TOKEN_PERM_DESTROY,
        _TOKEN_PERM_MAX,
};

#define TOKEN_PERM_BIT(p) (1u << (unsigned) (p))
#define TOKEN_PERMS_ALL ((1u << _TOKEN_PERM_MAX) - 1u)

/* "pull", "push", ...; NULL for an out-of-range value. */
const char *token_perm_to_string(enum token_perm p);
/* The enum value (>= 0) or -EINVAL for an unknown name. */
int token_perm_from_string(const char *s);

struct token_grant {
        char *pattern;
        uint32_t perms; /* TOKEN_PERM_BIT() set */
};

struct token_claims {
        char *sub; /* NULL when absent */
        int64_t exp;
        bool has_iat;
        int64_t iat;
        bool has_nbf;
        int64_t nbf;
        struct token_grant *grants;
        size_t n_grants;
};

/* New claims with the given subject (may be NULL) and expiry. */
int token_claims_new(const char *sub, int64_t exp, struct token_claims **ret);
void token_claims_free(struct token_claims *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct token_claims *, token_claims_free);

/* Grants perms on pattern (merged into an existing grant of the same
 * pattern). -EINVAL for an invalid pattern or perms bits, -E2BIG past
 * TOKEN_PATTERNS_MAX. */
int token_claims_grant(struct token_claims *c, const char *pattern, uint32_t perms);

/* true if pattern (a glob with '*') matches name entirely. */
bool token_pattern_match(const char *pattern, const char *name);

/* Signs claims. ret is a NUL-terminated heap string. -E2BIG when the token
 * would exceed TOKEN_TEXT_MAX, -EINVAL for unusable claims or a secret
 * shorter than TOKEN_SECRET_MIN. */
int token_encode(const struct token_claims *claims, const void *secret, size_t secret_len,
                 char **ret);

/* Verifies text at time now (seconds since the epoch) and returns its
 * claims. Errors (with a reason in err):
 *   -EINVAL       malformed: not three parts, too long, bad base64url, bad
 *                 JSON, alg not HS256, typ not JWT, crit present, missing or
 *                 wrongly typed exp/nbf/iat/sub, bad perms claim
 *   -EPERM        the signature does not match (forged or tampered)
 *   -EKEYEXPIRED  now >= exp
 *   -EKEYREJECTED now < nbf (not yet valid)
 * The signature is checked before anything in the payload is parsed. */
int token_decode_verify(const char *text, const void *secret, size_t secret_len, int64_t now,
                        struct token_claims **ret, struct trove_error *err);

/* true if the claims grant perm on cache_name through any matching pattern. */
bool token_permits(const struct token_claims *c, const char *cache_name, enum token_perm perm);

struct token_secret {
        uint8_t key[TOKEN_SECRET_MAX];
        size_t len;
};

/* Reads the secret file. Refuses (-EPERM) a file that others may read or
 * write, -EINVAL for bad base64 or fewer than TOKEN_SECRET_MIN bytes. */
int token_secret_load(const char *path, struct token_secret *ret, struct trove_error *err);
/* Writes a new secret (32 random bytes, base64, newline) to path with mode
 * 0600; never overwrites (-EEXIST). */
int token_secret_generate(const char *path, struct trove_error *err);
/* Wipes the key material. */
void token_secret_wipe(struct token_secret *s);
