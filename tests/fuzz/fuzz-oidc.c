/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz-oidc.c - oidc_jwt_parse on arbitrary input: the ID token header and
 * payload parser of the token exchange. The first input byte picks how the
 * rest becomes a token:
 *
 *   mode 0  the rest is the token text as received
 *   mode 1  the rest is header JSON, a 0xff byte, payload JSON; both are
 *           base64url-encoded and joined with a made-up signature, so the
 *           fuzzer reaches the JSON rules directly
 *
 * A refusal must be one of the documented errors and say why. A token that
 * parses must obey the rules (alg RS256 or ES256, an issuer, bounded kid),
 * its claims are checked at a fixed time, and its signature against the
 * test key set (tests/unit/data/oidc/jwks.json): a made-up signature never
 * verifies. Inputs under reject/ must be refused by the parser.
 */
#include <sodium.h>
#include <stdio.h>

#include "fuzz.h"
#include "trove/buf.h"
#include "trove/oidc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char JWKS[] =
        "{\"keys\":[{\"kty\":\"EC\",\"kid\":\"ec1\",\"use\":\"sig\",\"alg\":\"ES256\",\"crv\":\"P-256\","
        "\"x\":\"lMhZMaskRukmLJ1KRMe7ljaEoqIwMAwfeCobFtzNI2Q\",\"y\":\"uq2_6GZ9nPmVNFkGwK_0R65A9RMBMTwrprERX2aIxTU\"}]}";
static const char *const AUD[] = { "trove" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(buf_free) struct buf text = BUF_INIT(8 * OIDC_TOKEN_MAX);
        _cleanup_(oidc_jwt_freep) struct oidc_jwt *j = NULL;
        static struct jwks *keys;
        struct trove_error err = {};
        static const uint8_t sig[64] = { 1, 2, 3 };
        unsigned mode;
        int r;

        if (size < 1 || size > 2 * OIDC_TOKEN_MAX)
                return 0;
        if (sodium_init() < 0)
                abort();
        if (!keys && jwks_parse(JWKS, strlen(JWKS), &keys, &err) < 0)
                abort();
        mode = data[0] % 2;
        data++;
        size--;
        if (mode == 0) {
                if (buf_append(&text, data, size) < 0)
                        abort();
        } else {
                const uint8_t *sep = memchr(data, 0xff, size);
                if (!sep)
                        return 0;
                if (fuzz_b64url(&text, data, (size_t) (sep - data)) < 0 || buf_append(&text, ".", 1) < 0 ||
                    fuzz_b64url(&text, sep + 1, size - (size_t) (sep + 1 - data)) < 0 || buf_append(&text, ".", 1) < 0 ||
                    fuzz_b64url(&text, sig, sizeof sig) < 0)
                        abort();
        }

        r = oidc_jwt_parse((const char *) text.data, text.len, &j, &err);
        if (r < 0) {
                if (r != -EINVAL && r != -E2BIG)
                        abort();
                if (!err.msg[0] || j)
                        abort();
                return 0;
        }
        if (!j || fuzz_must_reject())
                abort();
        if (oidc_jwt_alg(j) != JWT_ALG_RS256 && oidc_jwt_alg(j) != JWT_ALG_ES256)
                abort();
        if (!oidc_jwt_issuer(j) || !oidc_jwt_issuer(j)[0])
                abort();
        if (oidc_jwt_kid(j) && (!oidc_jwt_kid(j)[0] || strlen(oidc_jwt_kid(j)) > JWKS_KID_MAX))
                abort();
        (void) oidc_jwt_claim_string(j, "sub");
        (void) oidc_jwt_claim_string(j, "project_path");

        memset(&err, 0, sizeof err);
        r = oidc_jwt_check_claims(j, oidc_jwt_issuer(j), AUD, 1, 1700000000, &err);
        if (r < 0 && (r != -EACCES && r != -EKEYEXPIRED && r != -EKEYREJECTED))
                abort();
        if (r < 0 && !err.msg[0])
                abort();
        if (r == 0 && oidc_jwt_expiry(j) <= 1700000000)
                abort();

        memset(&err, 0, sizeof err);
        r = oidc_jwt_verify(j, keys, &err);
        if (r < 0 && r != -ENOKEY && r != -EKEYREJECTED && r != -EBADMSG)
                abort();
        if (r < 0 && !err.msg[0])
                abort();
        if (mode == 1 && r == 0)
                abort(); /* a made-up signature verified */
        return 0;
}
