/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tokcache.h - tokens verified once, then looked up.
 *
 * A token is a signed, self-contained JWT: once its signature and claims
 * have been checked, the same text means the same claims until it expires
 * (the secret does not change while troved runs). Verifying it costs an
 * HMAC, base64 and a JSON parse; a fleet of runners sends the same few
 * tokens on every request, so the claims of recently seen tokens are kept
 * in a fixed table, keyed by the full token text. A lookup never hands out
 * claims of an expired token. Fixed size: a new token replaces whatever
 * occupied its slot (a collision costs one more verification).
 *
 * Claims handed out are shared and read-only: the caller releases them
 * with tokcache_release() (what auth_free() does).
 */
#pragma once

#include "trove/token.h"

struct tokcache;
struct tokcache_claims;

int tokcache_new(unsigned slots, struct tokcache **ret);
void tokcache_free(struct tokcache *c);

/* The claims of token text at time now: remembered, or verified with
 * secret now (and remembered). Errors as token_decode_verify(). *ret_claims
 * points into *ret_held, valid until tokcache_release(*ret_held). */
int tokcache_verify(struct tokcache *c, const char *text, const struct token_secret *secret, int64_t now,
                    const struct token_claims **ret_claims, struct tokcache_claims **ret_held,
                    struct trove_error *err);
void tokcache_release(struct tokcache_claims *held);
