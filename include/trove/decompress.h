/* SPDX-License-Identifier: Apache-2.0 */
/*
 * decompress.h - streaming decompression of what Nix uploads and
 * downloads: "none", "xz", "zstd", "bzip2" (the Compression field of a
 * narinfo), and streaming compression into the same formats (to hand a
 * client back a NAR under the compressed name it uploaded it as). Fed
 * arbitrary slices; output goes to a sink in bounded pieces, so nothing is
 * held whole. (De)compressors own their state.
 */
#pragma once

#include "trove/common.h"

enum compression {
        COMPRESSION_NONE,
        COMPRESSION_XZ,
        COMPRESSION_ZSTD,
        COMPRESSION_BZIP2,
};

/* "none", "xz", "zstd", "bzip2" (and "" as none); -EOPNOTSUPP otherwise. */
int compression_from_string(const char *s, enum compression *ret);
const char *compression_to_string(enum compression c);
/* The file extension Nix uses: "", ".xz", ".zst", ".bz2". */
const char *compression_extension(enum compression c);

typedef int (*decompress_sink_fn)(void *userdata, const void *p, size_t n);

struct decompressor;

int decompressor_new(enum compression c, decompress_sink_fn sink, void *userdata, struct decompressor **ret);
struct decompressor *decompressor_free(struct decompressor *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct decompressor *, decompressor_free);
/* -EBADMSG for corrupt input, or what the sink returned. */
int decompressor_feed(struct decompressor *d, const void *p, size_t n);
/* -EBADMSG if the stream is incomplete. */
int decompressor_finish(struct decompressor *d);

struct compressor;

/* level: the format's own scale (xz 0-9, zstd 1-19, bzip2 1-9); 0 = fast. */
int compressor_new(enum compression c, int level, decompress_sink_fn sink, void *userdata,
                   struct compressor **ret);
struct compressor *compressor_free(struct compressor *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct compressor *, compressor_free);
int compressor_feed(struct compressor *c, const void *p, size_t n);
/* Ends the stream (writes the trailer). */
int compressor_finish(struct compressor *c);
