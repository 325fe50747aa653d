/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oidckeys.h - the key sets of the trusted OpenID issuers (oidcpolicy.h),
 * fetched over HTTP when first needed and kept for the issuer's
 * jwksCacheSeconds. A token naming a key the set does not hold causes one
 * refetch (key rotation), but an issuer's keys are fetched at most once
 * every jwksRefetchSeconds, whatever tokens arrive: a flood of made-up kids
 * costs the issuer nothing. A refetch that fails keeps the old set.
 *
 * Thread-safe: one lock per issuer, held while its keys are fetched (so
 * concurrent exchanges wait for one fetch rather than starting several).
 */
#pragma once

#include "trove/oidc.h"
#include "trove/oidcpolicy.h"

struct oidckeys;

/* policy must outlive the key store. */
int oidckeys_new(const struct oidcpolicy *policy, struct oidckeys **ret);
void oidckeys_free(struct oidckeys *k);

/* Checks j's signature with the keys of the policy's issuer number issuer.
 * jwks_verify()'s errors for a token the keys refuse (-ENOKEY, -EKEYREJECTED,
 * -EBADMSG); -EAGAIN when no key set could be fetched. Reason in err. */
int oidckeys_verify(struct oidckeys *k, size_t issuer, const struct oidc_jwt *j, struct trove_error *err);
