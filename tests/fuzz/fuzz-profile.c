/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz-profile.c - profile_decode on arbitrary bodies, for the store path
 * hash part HP. A refusal is -EBADMSG and hands out nothing; an accepted
 * profile has at most PROFILE_CHUNKS_MAX ids, and encoding them as a
 * report gives a text that names HP. Inputs under reject/ must be refused.
 */
#include "fuzz.h"
#include "trove/profile.h"

#define HP "467mxjn776qs58j748809359zrra1zdi"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        uint8_t (*ids)[SHA256_DIGEST_LEN] = (void *) 1;
        size_t n = 7;
        int r = profile_decode(data, size, HP, &ids, &n);

        if (r < 0) {
                if (r != -EBADMSG || ids != (void *) 1 || n != 7)
                        abort();
                return 0;
        }
        if (r != 0 || n > PROFILE_CHUNKS_MAX || !ids || fuzz_must_reject())
                abort();
        if (n > 0) {
                struct buf b = BUF_INIT(PROFILE_REPORT_BODY_MAX);
                if (profile_report_add(&b, HP, (const uint8_t (*)[SHA256_DIGEST_LEN]) ids, n) < 0 ||
                    profile_report_end(&b) < 0 || b.len < 32 ||
                    !memmem(b.data, b.len, HP, strlen(HP)))
                        abort();
                buf_free(&b);
        }
        free(ids);
        return 0;
}
