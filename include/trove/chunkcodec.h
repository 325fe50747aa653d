/* SPDX-License-Identifier: Apache-2.0 */
/*
 * chunkcodec.h - a chunk's stored form: exactly one zstd frame with the
 * content size in its header. The chunk id is the SHA-256 of the
 * uncompressed bytes; decoding always verifies it. Concatenated frames of a
 * NAR's chunks form a valid .nar.zst stream.
 *
 * The codec owns reusable zstd contexts (one per thread; not thread-safe).
 */
#pragma once

#include "trove/common.h"
#include "trove/hash.h"

#define CHUNK_LEVEL_DEFAULT 3
/* The largest chunk any part of trove accepts, uncompressed. */
#define CHUNK_SIZE_MAX (64u * 1024 * 1024)

struct chunkcodec;

/* level: a zstd level other than 0 (negative = fast modes); -EINVAL
 * outside zstd's range. */
int chunkcodec_new(int level, struct chunkcodec **ret);
struct chunkcodec *chunkcodec_free(struct chunkcodec *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct chunkcodec *, chunkcodec_free);

/* Bytes the encoder may need for n input bytes. */
size_t chunkcodec_bound(size_t n);
/* Compresses data into out (capacity cap >= chunkcodec_bound(n)): one frame
 * with the content size declared, no checksum, no dictionary id. -EFBIG if
 * n > CHUNK_SIZE_MAX, -ENOBUFS if cap is too small. */
int chunkcodec_encode(struct chunkcodec *c, const void *data, size_t n, void *out, size_t cap,
                      size_t *ret_len);
/* Reads the content size from a frame header without decoding: -EBADMSG if
 * it is not one zstd frame with a declared size. */
int chunkcodec_frame_size(const void *frame, size_t n, uint64_t *ret_size);
/* Decodes one frame into out (capacity cap). Refuses (-EBADMSG) anything but
 * exactly one zstd data frame spanning all n bytes with a declared content
 * size (no skippable frame, no second frame, no trailing bytes), content
 * that does not decode to exactly the declared size, and content whose
 * SHA-256 is not id. A declared size above max_size, cap or CHUNK_SIZE_MAX
 * is refused with -EFBIG from the header alone, before decoding. out may be
 * overwritten even when decoding fails. */
int chunkcodec_decode(struct chunkcodec *c, const void *frame, size_t n,
                      const uint8_t id[SHA256_DIGEST_LEN], size_t max_size, void *out, size_t cap,
                      size_t *ret_len);
