/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz-jwks.c - the key set parser and the discovery document parser on
 * arbitrary input (both are fetched from an issuer over the network). The
 * first input byte picks the parser:
 *
 *   mode 0  jwks_parse(rest); an accepted set holds at most JWKS_KEYS_MAX
 *           keys, and a made-up signature verifies with none of them
 *   mode 1  jwks_discovery_uri(rest) for issuer https://issuer.test; an
 *           accepted URI is http(s), bounded, without spaces or controls
 *
 * Refusals must be documented errors with a reason. Inputs under reject/
 * must be refused.
 */
#include <stdio.h>

#include "fuzz.h"
#include "trove/jwks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct trove_error err = {};
        static const char msg[] = "eyJhbGciOiJFUzI1NiJ9.e30";
        uint8_t sig[JWKS_SIG_MAX];
        int r;

        if (size < 1 || size > JWKS_TEXT_MAX + 1)
                return 0;
        if (data[0] % 2 == 0) {
                _cleanup_(jwks_freep) struct jwks *k = NULL;

                r = jwks_parse(data + 1, size - 1, &k, &err);
                if (r < 0) {
                        if ((r != -EINVAL && r != -E2BIG) || !err.msg[0] || k)
                                abort();
                        return 0;
                }
                if (!k || fuzz_must_reject() || jwks_count(k) > JWKS_KEYS_MAX)
                        abort();
                memset(sig, 0x5a, sizeof sig);
                for (int alg = JWT_ALG_RS256; alg <= JWT_ALG_ES256; alg++)
                        for (size_t len = 64; len <= sizeof sig; len *= 2) {
                                memset(&err, 0, sizeof err);
                                r = jwks_verify(k, NULL, (enum jwt_alg) alg, msg, strlen(msg), sig, len, &err);
                                if (r == 0)
                                        abort();
                                if ((r != -ENOKEY && r != -EKEYREJECTED && r != -EBADMSG) || !err.msg[0])
                                        abort();
                        }
                if (jwks_has_kid(k, "") )
                        abort(); /* empty kids are refused */
        } else {
                _cleanup_free_ char *uri = NULL;

                r = jwks_discovery_uri(data + 1, size - 1, "https://issuer.test", &uri, &err);
                if (r < 0) {
                        if ((r != -EINVAL && r != -E2BIG) || !err.msg[0] || uri)
                                abort();
                        return 0;
                }
                if (!uri || fuzz_must_reject() || strlen(uri) > JWKS_URI_MAX)
                        abort();
                if (strncmp(uri, "http://", 7) != 0 && strncmp(uri, "https://", 8) != 0)
                        abort();
                for (const char *p = uri; *p; p++)
                        if ((unsigned char) *p <= 0x20 || (unsigned char) *p >= 0x7f)
                                abort();
        }
        return 0;
}
