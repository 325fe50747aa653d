/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ingest.h - turning a NAR into stored chunks and a complete NAR row.
 *
 * Two ways in, one way out:
 *  - ingest_feed_nar(): raw NAR bytes (a `nix copy` upload, decompressed):
 *    cut into chunks here, each chunk compressed and stored unless the
 *    store already has it;
 *  - ingest_add_chunk() / ingest_add_stored(): chunks a client already
 *    uploaded (trove push commit), in NAR order, with their stored frames.
 * The work per chunk (hashing, compressing, storing, reading back and
 * verifying) runs on the server's pool, one batch or window ahead of the
 * NAR checks, which stay in order on the caller's thread.
 * Either way every byte goes through the strict NAR reader (which builds
 * the listing), the NAR hash, and the hash of the concatenated frames
 * (FileHash of the .nar.zst we serve). ingest_finish() checks the NAR is
 * complete; ingest_commit() writes the NAR row in one transaction.
 * Nothing is visible before that commit; chunks stored by an ingest that
 * never commits are unreferenced and left to GC.
 */
#pragma once

#include "troved.h"

struct ingest;

struct ingest_result {
        uint8_t nar_hash[SHA256_DIGEST_LEN];
        uint64_t nar_size;
        uint8_t file_hash[SHA256_DIGEST_LEN];
        uint64_t file_size;
        uint64_t new_chunks, new_chunk_bytes;
        uint64_t dedup_chunks, dedup_chunk_bytes;
};

int ingest_new(struct troved *t, struct ingest **ret);
void ingest_free(struct ingest *in);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ingest *, ingest_free);

/* New chunks cut by ingest_feed_nar() may be stored as deltas against
 * chunks this cache holds (server/delta.h); without it they are stored
 * plain. */
void ingest_set_cache(struct ingest *in, int64_t cache_id);
int ingest_feed_nar(struct ingest *in, const void *p, size_t n);
/* data is the decoded chunk (already verified against id), frame its
 * stored zstd frame. */
int ingest_add_chunk(struct ingest *in, const uint8_t id[SHA256_DIGEST_LEN], const void *data,
                     size_t len, const void *frame, size_t frame_len);
/* The chunks of a manifest (trove push commit), in NAR order: each is read
 * back from the store and decoded, verified against its id and length, on
 * the server's pool, then added as by ingest_add_chunk(). On failure
 * *ret_bad is the index of the chunk at fault: -ENOENT, missing from the
 * store; -EBADMSG with ingest_error() empty, it does not decode to its id
 * and length; with ingest_error() set, the NAR was refused there; any
 * other errno is the store's. */
struct manifest_chunk;
int ingest_add_stored(struct ingest *in, const struct manifest_chunk *chunks, size_t n, size_t *ret_bad);
int ingest_finish(struct ingest *in, struct ingest_result *ret);
/* Writes the NAR (idempotent); returns its id. Only after ingest_finish(). */
int ingest_commit(struct ingest *in, int64_t *ret_nar_id);
/* Why the input was refused (NAR reader's message), or "". */
const char *ingest_error(const struct ingest *in);
