/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Chunk batch framing. The parser checks every record's length against
 * what is left of the body before it records anything, so a record that
 * was accepted always lies entirely inside the body.
 */
#include <inttypes.h>

#include "trove/chunkbatch.h"

int chunkbatch_parse(const void *body, size_t n, struct chunkbatch_record *recs, size_t max_records,
                     size_t *ret_count, struct trove_error *err) {
        const uint8_t *base = body;
        size_t pos = 0, count = 0;

        while (pos < n) {
                const uint8_t *p = base + pos;
                size_t left = n - pos;
                uint32_t len;

                if (count == max_records)
                        return trove_error_set(err, E2BIG, "more than %zu chunks in one batch", max_records);
                if (left < CHUNKBATCH_RECORD_HEADER)
                        return trove_error_set(err, EBADMSG,
                                               "truncated record header at byte %zu (%zu of %d bytes)", pos,
                                               left, CHUNKBATCH_RECORD_HEADER);
                len = (uint32_t) p[32] | (uint32_t) p[33] << 8 | (uint32_t) p[34] << 16 |
                      (uint32_t) p[35] << 24;
                if (len == 0)
                        return trove_error_set(err, EBADMSG, "zero frame length at byte %zu", pos);
                if (len > left - CHUNKBATCH_RECORD_HEADER)
                        return trove_error_set(err, EBADMSG,
                                               "frame length %" PRIu32 " at byte %zu runs past the end (%zu bytes left)",
                                               len, pos, left - CHUNKBATCH_RECORD_HEADER);
                recs[count++] = (struct chunkbatch_record){
                        .id = p,
                        .frame = p + CHUNKBATCH_RECORD_HEADER,
                        .frame_len = len,
                };
                pos += CHUNKBATCH_RECORD_HEADER + (size_t) len;
        }
        *ret_count = count;
        return 0;
}

int chunkbatch_append(struct buf *b, const uint8_t id[SHA256_DIGEST_LEN], const void *frame, size_t len) {
        uint8_t le[4];
        size_t total;
        int r;

        if (len == 0)
                return -EINVAL;
        if (len > UINT32_MAX || ADD_OVERFLOW(len, (size_t) CHUNKBATCH_RECORD_HEADER, &total))
                return -E2BIG;
        /* Reserve the whole record first: the appends below cannot fail, so
         * a record is never left half-written. */
        r = buf_reserve(b, total);
        if (r < 0)
                return r;
        le[0] = (uint8_t) len;
        le[1] = (uint8_t) (len >> 8);
        le[2] = (uint8_t) (len >> 16);
        le[3] = (uint8_t) (len >> 24);
        if (buf_append(b, id, SHA256_DIGEST_LEN) < 0 || buf_append(b, le, sizeof le) < 0 ||
            buf_append(b, frame, len) < 0)
                return -EIO; /* cannot happen after the reservation */
        return 0;
}
