/* SPDX-License-Identifier: Apache-2.0 */
/*
 * recompress.h - background recompression of cold chunks: a plain chunk
 * that is old and that no path has used for a while is compressed again at
 * a higher level and its object replaced, atomically, by a recompressed
 * object (include/trove/chunkcodec.h) under the same id. Its content, and
 * so its id and every manifest and narinfo naming it, stay as they were:
 * a .nar.zst still carries the frame its FileHash describes (the chunk
 * decoded and compressed at the server's level, which is checked to give
 * back the stored frame before anything is replaced).
 *
 * Off by default (--recompress-level 0); troved runs it after each
 * scheduled collection, at most --recompress-batch chunks a run, and on
 * POST /_api/v1/recompress.
 */
#pragma once

#include "troved.h"

struct recompress_result {
        uint64_t examined;
        uint64_t recompressed;
        uint64_t bytes_before, bytes_after;   /* of those recompressed */
};

/* level: the zstd level to recompress at (above the server's); chunks
 * older than min_age_sec that no path used within it; at most max. */
int recompress_run(struct troved *t, int level, int64_t min_age_sec, size_t max, struct recompress_result *ret);
