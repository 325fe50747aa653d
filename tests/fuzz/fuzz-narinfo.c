/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz-narinfo.c - narinfo_parse on arbitrary bytes. Whatever parses must
 * render, the rendering must parse again to the same rendering, and the
 * fingerprint must survive the round trip unchanged (a narinfo that changed
 * meaning when re-rendered would invalidate or forge signatures).
 */
#include <stdio.h>

#include "trove/narinfo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char PUB[] = "test-key-1:1XpFbYn0rRXVW+jN8Ls4xloxQBHMHQEAiGT3Mfp24wI=";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(narinfo_free) struct narinfo ni = {}, ni2 = {};
        _cleanup_free_ char *text = NULL, *text2 = NULL, *fp = NULL, *fp2 = NULL;
        static struct signing_public key;
        static bool have_key;
        struct trove_error err = {};

        if (!have_key) {
                if (signing_public_parse(PUB, &key) < 0)
                        abort();
                have_key = true;
        }
        if (narinfo_parse((const char *) data, size, "/nix/store", &ni, &err) < 0) {
                /* A refusal always says why. */
                if (!err.msg[0])
                        abort();
                return 0;
        }
        if (narinfo_render(&ni, &text) < 0)
                abort();
        if (narinfo_parse(text, strlen(text), "/nix/store", &ni2, &err) < 0) {
                fprintf(stderr, "rendered narinfo does not parse: %s\n%s", err.msg, text);
                abort();
        }
        if (narinfo_render(&ni2, &text2) < 0 || !streq(text, text2))
                abort();
        if (narinfo_fingerprint(&ni, "/nix/store", &fp) < 0 || narinfo_fingerprint(&ni2, "/nix/store", &fp2) < 0 ||
            !streq(fp, fp2))
                abort();
        int a = narinfo_verify(&ni, "/nix/store", &key, 1), b = narinfo_verify(&ni2, "/nix/store", &key, 1);
        if (a < 0 || a != b || (size_t) a > ni.n_sigs)
                abort();
        return 0;
}
