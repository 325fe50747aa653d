/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oidc.h - OpenID Connect ID tokens as CI systems hand them to jobs (GitLab
 * CI `id_tokens`, GitHub Actions): JWTs in JWS compact form, signed RS256 or
 * ES256 by the issuer. Parsing, the signature check against the issuer's
 * key set (jwks.h) and the claim checks; no network.
 *
 * Parsing is strict and bounded:
 *   - at most OIDC_TOKEN_MAX bytes, exactly three '.'-separated parts, each
 *     canonical base64url without padding;
 *   - header: a JSON object; "alg" RS256 or ES256 (so "none", HS256 and
 *     every other alg are refused before any key is looked at); "kid" a
 *     string of 1..JWKS_KID_MAX bytes if present; "typ" "JWT" if present;
 *     "crit" refused;
 *   - payload: a JSON object of at most OIDC_VALUES_MAX values; "iss" a
 *     string; "exp" an integer; "nbf", "iat" integers if present; "aud" a
 *     string or a non-empty array of at most OIDC_AUD_MAX strings; "sub" a
 *     string if present.
 * The payload is parsed before the signature is checked (its "iss" says
 * whose keys to use), so nothing in it is trusted until oidc_jwt_verify()
 * and oidc_jwt_check_claims() both succeeded.
 *
 * Ownership: oidc_jwt_parse() returns a token owned by the caller
 * (oidc_jwt_free()); strings returned by the accessors belong to it.
 */
#pragma once

#include "trove/common.h"
#include "trove/jwks.h"

#define OIDC_TOKEN_MAX 8192
#define OIDC_VALUES_MAX 512
#define OIDC_AUD_MAX 16
/* Allowed clock difference with the issuer for "nbf" and "iat". */
#define OIDC_LEEWAY_SEC 60

struct oidc_jwt;

/* -EINVAL (reason in err) for anything malformed, -E2BIG past the bounds. */
int oidc_jwt_parse(const char *text, size_t n, struct oidc_jwt **ret, struct trove_error *err);
void oidc_jwt_free(struct oidc_jwt *j);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct oidc_jwt *, oidc_jwt_free);

enum jwt_alg oidc_jwt_alg(const struct oidc_jwt *j);
const char *oidc_jwt_kid(const struct oidc_jwt *j);     /* NULL when absent */
const char *oidc_jwt_issuer(const struct oidc_jwt *j);
const char *oidc_jwt_subject(const struct oidc_jwt *j); /* NULL when absent */
int64_t oidc_jwt_expiry(const struct oidc_jwt *j);

/* The value of a string claim; NULL if the claim is absent, not a string,
 * or holds a NUL byte. */
const char *oidc_jwt_claim_string(const struct oidc_jwt *j, const char *name);

/* Checks the signature with keys (jwks_verify()'s errors). */
int oidc_jwt_verify(const struct oidc_jwt *j, const struct jwks *keys, struct trove_error *err);

/* Checks the claims at time now: "iss" equal to issuer; "aud" holding one
 * of audiences; now < exp (no leeway: what is issued for the token must not
 * outlive it); nbf and iat at most OIDC_LEEWAY_SEC in the future.
 *   -EACCES        wrong issuer or audience
 *   -EKEYEXPIRED   expired
 *   -EKEYREJECTED  not valid yet, or issued in the future */
int oidc_jwt_check_claims(const struct oidc_jwt *j, const char *issuer, const char *const *audiences,
                          size_t n_audiences, int64_t now, struct trove_error *err);
