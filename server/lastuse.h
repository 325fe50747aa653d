/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lastuse.h - which paths were read, gathered in memory and written to the
 * database in batches (never a write per request): narinfo, manifest, NAR
 * and chunk reads mark; the GC thread flushes every few seconds, when the
 * set fills up, and right before a collection looks at last-use times.
 *
 * Bounded: a set that is full drops further marks until the next flush (a
 * dropped mark costs at most one flush interval of recency; the flush
 * logs how many were dropped).
 */
#pragma once

#include "db.h"

struct lastuse;

int lastuse_new(unsigned capacity, struct lastuse **ret);
void lastuse_free(struct lastuse *lu);
/* Never blocks on the database; safe from any request thread. */
void lastuse_mark(struct lastuse *lu, const struct db_use *u);
void lastuse_mark_path(struct lastuse *lu, int64_t cache_id, const char *hash);
void lastuse_mark_nar(struct lastuse *lu, int64_t cache_id, int64_t nar_id);
void lastuse_mark_chunk(struct lastuse *lu, int64_t cache_id, const uint8_t id[SHA256_DIGEST_LEN]);
/* Marks waiting to be written. */
unsigned lastuse_pending(struct lastuse *lu);
/* Writes the marks gathered so far; those of a failed write are lost. */
int lastuse_flush(struct lastuse *lu, struct db *db);
