/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the chunk codec's decoder: whatever the bytes, decode
 * either refuses cleanly (-EBADMSG, -EFBIG) or returns exactly the declared
 * number of bytes whose SHA-256 is the expected id. chunkcodec_frame_size
 * must agree with decode about what a frame declares.
 *
 * The fixed id is the SHA-256 of FUZZ_CONTENT so that the seed corpus can
 * hold a frame that decodes successfully, and the fuzzer can explore
 * around it (other levels, raw/RLE blocks, other header forms).
 */
#include <stdio.h>

#include "trove/chunkcodec.h"
#include "trove/hash.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_BOUND (1u << 20)
#define FUZZ_CONTENT "trove chunkcodec fuzz seed: the quick brown fox jumps over the lazy dog\n"

static struct chunkcodec *codec;
static uint8_t *out;
static uint8_t id[SHA256_DIGEST_LEN];

static void fuzz_setup(void) {
        if (codec)
                return;
        if (chunkcodec_new(CHUNK_LEVEL_DEFAULT, &codec) < 0 ||
            sha256_buf(FUZZ_CONTENT, strlen(FUZZ_CONTENT), id) < 0)
                abort();
        out = malloc(FUZZ_BOUND);
        if (!out)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        uint64_t declared = 0;
        size_t len = SIZE_MAX;
        int r, rs;

        fuzz_setup();
        rs = chunkcodec_frame_size(data, size, &declared);
        if (rs != 0 && rs != -EBADMSG)
                abort();

        /* Decode into a buffer of exactly the declared size when it is small,
         * so ASan catches any write past it. */
        uint8_t *exact = NULL;
        size_t cap = FUZZ_BOUND;
        uint8_t *dst = out;
        if (rs == 0 && declared <= 65536) {
                exact = malloc(declared ? declared : 1);
                if (!exact)
                        abort();
                dst = exact;
                cap = (size_t) declared;
        }
        r = chunkcodec_decode(codec, data, size, id, FUZZ_BOUND, dst, cap, &len);
        if (r == 0) {
                uint8_t check[SHA256_DIGEST_LEN];
                /* Success: one frame, the declared size, the right content. */
                if (rs != 0 || len != declared || len != strlen(FUZZ_CONTENT))
                        abort();
                if (sha256_buf(dst, len, check) < 0 || memcmp(check, id, sizeof id) != 0)
                        abort();
                if (memcmp(dst, FUZZ_CONTENT, len) != 0)
                        abort();
        } else {
                if (r != -EBADMSG && r != -EFBIG)
                        abort();
                if (len != SIZE_MAX) /* ret_len written on failure */
                        abort();
                /* frame_size refusing means decode must refuse as malformed. */
                if (rs != 0 && r != -EBADMSG)
                        abort();
                /* A declared size above the bound is -EFBIG, never decoded. */
                if (rs == 0 && declared > FUZZ_BOUND && r != -EFBIG)
                        abort();
        }
        free(exact);

        /* The same bytes as a delta object, decoded with the seed content
         * as its base: a clean refusal, or exactly the expected content. */
        {
                uint8_t base_id[SHA256_DIGEST_LEN];
                uint32_t base_len = 0;
                uint64_t dsize = 0;
                int k = chunkcodec_delta_parse(data, size, base_id, &base_len, &dsize);
                if (k < -EBADMSG || (k < 0 && k != -EBADMSG) || k > 1)
                        abort();
                if (k == 0 && chunkcodec_frame_size(data, size, &declared) == 0 && rs != 0)
                        abort();
                len = SIZE_MAX;
                r = chunkcodec_decode_delta(codec, data, size, FUZZ_CONTENT, strlen(FUZZ_CONTENT), id, FUZZ_BOUND,
                                            out, FUZZ_BOUND, &len);
                if (r == 0) {
                        if (k != 1 || base_len != strlen(FUZZ_CONTENT) || len != strlen(FUZZ_CONTENT) ||
                            memcmp(out, FUZZ_CONTENT, len) != 0)
                                abort();
                } else if ((r != -EBADMSG && r != -EFBIG) || len != SIZE_MAX) {
                        abort();
                }
                /* A delta object is never a frame. */
                if (k == 1 && rs == 0)
                        abort();
        }
        return 0;
}
