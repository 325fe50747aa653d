/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz-chunkbatch.c - chunkbatch_parse on an arbitrary body. A refusal is
 * -EBADMSG or -E2BIG, says why, and leaves the count alone; records that
 * parse lie inside the body, one after the other, cover all of it, and
 * written out again with chunkbatch_append give back the same bytes.
 * A smaller record limit fails exactly when the body has more records.
 * Inputs under reject/ must be refused.
 */
#include <stdio.h>

#include "fuzz.h"
#include "trove/chunkbatch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_RECORDS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct chunkbatch_record recs[FUZZ_RECORDS];
        _cleanup_(buf_free) struct buf out = BUF_INIT(size);
        struct trove_error err = {};
        size_t count = SIZE_MAX, count2 = SIZE_MAX, pos = 0;
        int r;

        /* A copy of exactly size bytes, so ASan sees any read past the body. */
        uint8_t *body = malloc(size ? size : 1);
        if (!body)
                abort();
        memcpy(body, data, size);

        r = chunkbatch_parse(body, size, recs, FUZZ_RECORDS, &count, &err);
        if (r < 0) {
                if ((r != -EBADMSG && r != -E2BIG) || !err.msg[0] || count != SIZE_MAX)
                        abort();
                free(body);
                return 0;
        }
        if (r != 0 || count > FUZZ_RECORDS || (size == 0) != (count == 0) || fuzz_must_reject())
                abort();
        for (size_t i = 0; i < count; i++) {
                if (recs[i].id != body + pos || recs[i].frame != recs[i].id + CHUNKBATCH_RECORD_HEADER ||
                    recs[i].frame_len == 0 || recs[i].frame_len > size - pos - CHUNKBATCH_RECORD_HEADER)
                        abort();
                pos += CHUNKBATCH_RECORD_HEADER + recs[i].frame_len;
                if (chunkbatch_append(&out, recs[i].id, recs[i].frame, recs[i].frame_len) < 0)
                        abort();
        }
        if (pos != size || out.len != size || (size && memcmp(out.data, body, size) != 0))
                abort();

        /* One record fewer allowed than there are: too many, nothing else. */
        if (count > 0) {
                r = chunkbatch_parse(body, size, recs, count - 1, &count2, &err);
                if (r != -E2BIG || count2 != SIZE_MAX)
                        abort();
        }
        free(body);
        return 0;
}
