/* SPDX-License-Identifier: Apache-2.0 */
/*
 * chunkbatch.h - the body of POST /_api/v1/caches/<cache>/chunks: many
 * compressed chunks in one request, written by `trove push` and split by
 * troved.
 *
 * The body is a sequence of records, nothing before, between or after them:
 *
 *   [32-byte chunk id (SHA-256 of the uncompressed chunk)]
 *   [u32 little-endian frame length, >= 1]
 *   [frame: that many bytes (a chunkcodec frame)]
 *
 * An empty body is a batch of no records. This module only frames: it does
 * not look inside frames nor check them against their ids.
 *
 * Ownership: parsed records point into the body they were parsed from and
 * live as long as it does.
 */
#pragma once

#include "trove/buf.h"
#include "trove/common.h"
#include "trove/hash.h"

#define CHUNKBATCH_RECORD_HEADER 36 /* id + length */

struct chunkbatch_record {
        const uint8_t *id;      /* SHA256_DIGEST_LEN bytes */
        const uint8_t *frame;
        uint32_t frame_len;     /* >= 1 */
};

/* Splits a whole batch body into records pointing into body. At most
 * max_records (-E2BIG past it, with a message); a truncated header, a zero
 * or overlong frame length is -EBADMSG with err naming the byte offset.
 * ret_count written on success. */
int chunkbatch_parse(const void *body, size_t n, struct chunkbatch_record *recs, size_t max_records,
                     size_t *ret_count, struct trove_error *err);

/* Appends one record to b (bounded by b's maximum). The whole record is
 * appended or, on failure, nothing: -E2BIG past b's maximum or for a frame
 * longer than UINT32_MAX, -EINVAL for an empty frame. */
int chunkbatch_append(struct buf *b, const uint8_t id[SHA256_DIGEST_LEN], const void *frame, size_t len);
