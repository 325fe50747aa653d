/* SPDX-License-Identifier: Apache-2.0 */
/*
 * jwks.h - an OpenID issuer's public keys: the JSON Web Key Set (RFC 7517)
 * that its discovery document names, and the RS256 / ES256 signature check
 * (RFC 7518) of a JWS made with one of them. The only module that builds
 * public keys with OpenSSL.
 *
 * Keys kept from a set:
 *   {"kty":"RSA","n":…,"e":…}                 modulus 2048..8192 bits, RS256
 *   {"kty":"EC","crv":"P-256","x":…,"y":…}    a point on P-256, ES256
 * with optional "kid" (at most JWKS_KID_MAX bytes), "alg" (if present it
 * must be the key's algorithm) and "use" (if present it must be "sig").
 * Keys of other types, curves, algorithms or uses are skipped (a set may
 * hold encryption keys); a key of a known type with malformed members is an
 * error for the whole set, so a broken document is noticed rather than
 * silently thinned. Members are strict base64url without padding.
 *
 * Bounds: the document is at most JWKS_TEXT_MAX bytes and holds at most
 * JWKS_KEYS_MAX keys. Ownership: jwks_parse() returns a set owned by the
 * caller (jwks_free()); jwks_discovery_uri() returns a heap string.
 */
#pragma once

#include "trove/common.h"

#define JWKS_TEXT_MAX (256u * 1024)
#define JWKS_KEYS_MAX 64
#define JWKS_KID_MAX 256
#define JWKS_URI_MAX 2048
#define JWKS_RSA_BITS_MIN 2048
#define JWKS_RSA_BITS_MAX 8192
/* The largest signature any kept key makes (RSA-8192). */
#define JWKS_SIG_MAX (JWKS_RSA_BITS_MAX / 8)

enum jwt_alg {
        JWT_ALG_RS256 = 1,
        JWT_ALG_ES256 = 2,
};

/* "RS256"/"ES256" and back; jwt_alg_from_string() returns -EINVAL for every
 * other name ("none", "HS256", …). */
const char *jwt_alg_to_string(enum jwt_alg a);
int jwt_alg_from_string(const char *s);

struct jwks;

int jwks_parse(const void *text, size_t n, struct jwks **ret, struct trove_error *err);
void jwks_free(struct jwks *k);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct jwks *, jwks_free);

/* The number of usable keys kept. */
size_t jwks_count(const struct jwks *k);

/* true if the set holds a key with this kid (kid NULL: any key). */
bool jwks_has_kid(const struct jwks *k, const char *kid);

/* Checks sig over msg with the key named kid. With kid NULL, the set must
 * hold exactly one key for alg. Errors (reason in err):
 *   -ENOKEY        no key with that kid (kid NULL: not exactly one for alg)
 *   -EKEYREJECTED  the key is of another type than alg needs (an RSA key
 *                  named by an ES256 token, or the reverse)
 *   -EBADMSG       the signature does not verify (or has the wrong length)
 *   -EINVAL        unknown alg */
int jwks_verify(const struct jwks *k, const char *kid, enum jwt_alg alg, const void *msg, size_t n,
                const void *sig, size_t sig_len, struct trove_error *err);

/* The "jwks_uri" of an OpenID Provider configuration document (an http or
 * https URL of at most JWKS_URI_MAX bytes, without whitespace or control
 * characters), and its "issuer", which must equal issuer exactly (OpenID
 * Connect Discovery 1.0, section 4.3). */
int jwks_discovery_uri(const void *text, size_t n, const char *issuer, char **ret, struct trove_error *err);
