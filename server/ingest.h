/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ingest.h - turning a NAR into stored chunks and a complete NAR row.
 *
 * Two ways in, one way out:
 *  - ingest_feed_nar(): raw NAR bytes (a `nix copy` upload, decompressed):
 *    cut into chunks here, each chunk compressed and stored unless the
 *    store already has it;
 *  - ingest_add_chunk(): chunks a client already uploaded (trove push
 *    commit), in NAR order, with their stored frames.
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

int ingest_feed_nar(struct ingest *in, const void *p, size_t n);
/* data is the decoded chunk (already verified against id), frame its
 * stored zstd frame. */
int ingest_add_chunk(struct ingest *in, const uint8_t id[SHA256_DIGEST_LEN], const void *data,
                     size_t len, const void *frame, size_t frame_len);
int ingest_finish(struct ingest *in, struct ingest_result *ret);
/* Writes the NAR (idempotent); returns its id. Only after ingest_finish(). */
int ingest_commit(struct ingest *in, int64_t *ret_nar_id);
/* Why the input was refused (NAR reader's message), or "". */
const char *ingest_error(const struct ingest *in);
