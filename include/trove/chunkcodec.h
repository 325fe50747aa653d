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
 * SHA-256 is not id (id NULL: not hashed, for a frame whose content the
 * caller checked against its id before). A declared size above max_size, cap or CHUNK_SIZE_MAX
 * is refused with -EFBIG from the header alone, before decoding. out may be
 * overwritten even when decoding fails. */
int chunkcodec_decode(struct chunkcodec *c, const void *frame, size_t n,
                      const uint8_t id[SHA256_DIGEST_LEN], size_t max_size, void *out, size_t cap,
                      size_t *ret_len);

/*
 * Recompressed objects. A cold chunk may be compressed again at a higher
 * level: a skippable zstd frame marking it, then one zstd frame of the
 * chunk:
 *
 *   magic 0x184D2A5E (LE) | 8 (LE u32) | "TRVR" | level (LE u32) | zstd frame
 *
 * chunkcodec_decode() reads it as it reads a frame; it is not served in a
 * .nar.zst as it is (the frames there are the ones FileHash describes), and
 * chunkcodec_frame_size() refuses it (uploads are plain frames).
 */
#define CHUNKCODEC_RECOMPRESSED_HEADER 16

/* Encodes data as a recompressed object with c (whose level is recorded). */
int chunkcodec_encode_recompressed(struct chunkcodec *c, const void *data, size_t n, void *out, size_t cap,
                                   size_t *ret_len);
/* What obj is: 0 a chunk frame, 1 a delta object, 2 a recompressed object;
 * -EBADMSG if none of them. The content size in *ret_size (may be NULL). */
int chunkcodec_object_kind(const void *obj, size_t n, uint64_t *ret_size);
/* The content size of a frame or a recompressed object (-EBADMSG
 * otherwise). */
int chunkcodec_object_size(const void *obj, size_t n, uint64_t *ret_size);

/*
 * Delta objects. A chunk similar to a stored one (its base) may be stored
 * as a delta: a skippable zstd frame naming the base, then one zstd frame
 * compressed with the base's content as a prefix dictionary:
 *
 *   magic 0x184D2A5E (LE) | 40 (LE u32) | "TRVD" | base length (LE u32) |
 *   base id (32 bytes) | zstd frame (content size declared)
 *
 * A delta object is not a chunk frame (chunkcodec_frame_size refuses it),
 * so it is never served or decoded as one by mistake; it decodes only with
 * its base's content, and the result is checked against the chunk's id as
 * every decode is. A base is never itself a delta (one level).
 */
#define CHUNKCODEC_DELTA_HEADER 48
/* base_len + n at most: the window a delta may need (both in one zstd
 * window, below the decoder's limit). */
#define CHUNKCODEC_DELTA_WINDOW_MAX (32u * 1024 * 1024)

/* 1 with the base's id and length if obj is a well-formed delta object
 * header followed by one zstd frame with a declared size (*ret_size), 0 if
 * obj starts otherwise (a plain frame, or anything else), -EBADMSG if it
 * starts as a delta object but is malformed. ret_* may be NULL. */
int chunkcodec_delta_parse(const void *obj, size_t n, uint8_t ret_base[SHA256_DIGEST_LEN],
                           uint32_t *ret_base_len, uint64_t *ret_size);
/* Encodes data[0..n) as a delta object against base[0..base_len) whose id
 * is base_id, into out (capacity cap >= CHUNKCODEC_DELTA_HEADER +
 * chunkcodec_bound(n)). -EFBIG if base_len + n exceeds
 * CHUNKCODEC_DELTA_WINDOW_MAX, -ENOBUFS if cap is too small. */
int chunkcodec_encode_delta(struct chunkcodec *c, const void *base, size_t base_len,
                            const uint8_t base_id[SHA256_DIGEST_LEN], const void *data, size_t n,
                            void *out, size_t cap, size_t *ret_len);
/* Decodes a delta object with its base's content (base_len bytes, which
 * the caller has verified against the base id the object names) into out,
 * and checks the result against id, as chunkcodec_decode does. -EBADMSG if
 * the object is not a delta object, names another base length, or does
 * not decode to content with this id. */
int chunkcodec_decode_delta(struct chunkcodec *c, const void *obj, size_t n, const void *base,
                            size_t base_len, const uint8_t id[SHA256_DIGEST_LEN], size_t max_size,
                            void *out, size_t cap, size_t *ret_len);
