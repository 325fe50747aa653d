/* SPDX-License-Identifier: Apache-2.0 */
/*
 * manifest.h - the per-store-path document trovefs fetches in one request:
 * the narinfo fields, the NAR listing, and the chunk table. Format in
 * docs/manifest.md.
 *
 * The chunk table covers the NAR exactly: chunk i starts at the end of chunk
 * i-1, the first at 0, the last ends at nar_size. A decoded manifest has
 * passed manifest_validate(). A struct manifest owns everything in it.
 */
#pragma once

#include "trove/common.h"
#include "trove/hash.h"
#include "trove/listing.h"
#include "trove/narinfo.h"

#define MANIFEST_MAX_SIZE (256u * 1024 * 1024)
#define MANIFEST_CHUNKS_MAX (4u * 1024 * 1024)

struct manifest_chunk {
        uint64_t nar_offset;
        uint32_t length;        /* uncompressed */
        uint32_t stored_size;   /* bytes of its zstd frame */
        uint8_t id[SHA256_DIGEST_LEN];
};

struct manifest {
        struct narinfo info;    /* StorePath, NarHash, NarSize, References, Deriver, Sigs, CA */
        struct listing listing;
        struct manifest_chunk *chunks;
        size_t n_chunks;
};

void manifest_free(struct manifest *m); /* members only */
/* Structural checks: chunk table contiguous and covering nar_size, lengths
 * in 1..CHUNK_SIZE_MAX, listing offsets inside the NAR. */
int manifest_validate(const struct manifest *m, struct trove_error *err);
int manifest_encode(const struct manifest *m, char **ret, size_t *ret_len);
int manifest_decode(const char *text, size_t len, const char *store_dir, struct manifest *ret,
                    struct trove_error *err);
/* Index of the chunk holding NAR offset off (binary search), or -ERANGE. */
int manifest_find_chunk(const struct manifest *m, uint64_t off, size_t *ret);
