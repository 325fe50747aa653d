/* SPDX-License-Identifier: Apache-2.0 */
/*
 * profile.h - learned prefetch profiles as they travel between trovefs and
 * troved (docs/api.md, "Prefetch profiles"):
 *
 *   GET  .../profiles/<hash part>  → {"hash": "<hash part>", "chunks": ["<64 hex>", ...]}
 *   POST .../profiles              ← {"paths": [{"hash": "<hash part>", "chunks": [...]}, ...]}
 *
 * Chunk ids are listed in the order mounts first read them. Decoding is
 * strict (it reads what a server sent); ids returned are the caller's to
 * free().
 */
#pragma once

#include "trove/buf.h"
#include "trove/common.h"
#include "trove/hash.h"

/* Chunks in one path's profile or report, at most (the server's bound). */
#define PROFILE_CHUNKS_MAX 16384
/* A profile body, at most: the chunks plus framing. */
#define PROFILE_BODY_MAX ((size_t) PROFILE_CHUNKS_MAX * 72 + 4096)
/* Paths in one report, at most, and its body size. */
#define PROFILE_REPORT_PATHS_MAX 256
#define PROFILE_REPORT_BODY_MAX ((size_t) 4 << 20)

/* Decodes a profile of the store path with hash part hash_part. -EBADMSG
 * if it is not one (malformed, another path's, too many chunks). */
int profile_decode(const void *body, size_t n, const char *hash_part,
                   uint8_t (**ret_ids)[SHA256_DIGEST_LEN], size_t *ret_n);

/* Building a report: profile_report_add() for each path (n > 0 ids), then
 * profile_report_end(). b starts empty; -E2BIG when b's maximum is hit. */
int profile_report_add(struct buf *b, const char *hash_part, const uint8_t (*ids)[SHA256_DIGEST_LEN],
                       size_t n);
int profile_report_end(struct buf *b);
