/* SPDX-License-Identifier: Apache-2.0 */
/*
 * delta.h - delta chunks on ingest: for new chunks (of a `nix copy` upload,
 * a `trove push` batch or a pull from an upstream), find a similar chunk the
 * cache already holds (super-features, include/trove/resemble.h, looked up
 * in the database for a whole batch at once) and store the new chunk as a
 * delta against it (include/trove/chunkcodec.h) when that is smaller than
 * its plain frame by DELTA_MARGIN. One level: a base is never a delta.
 *
 * A struct delta_chunk is the caller's; delta_try() allocates obj.
 */
#pragma once

#include "db.h"
#include "troved.h"
#include "trove/buf.h"
#include "trove/chunkcodec.h"

/* A delta is kept only if it is at most this fraction (in 1/64) of the
 * plain frame: reading it costs a second object. */
#define DELTA_MARGIN_64THS 60

struct delta_chunk {
        /* in */
        const uint8_t *id;
        const uint8_t *data;
        size_t len;
        /* delta_describe */
        bool has_features;
        uint64_t features[RESEMBLE_SF];
        /* delta_find_bases */
        bool has_base;
        uint8_t base[SHA256_DIGEST_LEN];
        uint32_t base_length;
        /* delta_try: the delta object (malloc()ed) if it was worth it */
        uint8_t *obj;
        size_t obj_len;
};

/* The super-features of c->data (pure; run it on the pool). */
void delta_describe(struct delta_chunk *c);
/* Finds a base for each chunk with features (one database query), among
 * the chunks cache_id holds. Nothing when the server's --delta is off. */
int delta_find_bases(struct troved *t, int64_t cache_id, struct delta_chunk *const *c, size_t n);
/* With a base: reads it (verified), encodes c as a delta against it and
 * keeps it (c->obj) if at most DELTA_MARGIN of plain_len. 1 if kept, 0 if
 * not (no base, base unreadable, not small enough). */
int delta_try(struct troved *t, struct chunkcodec *codec, struct delta_chunk *c, size_t plain_len);
void delta_chunk_clear(struct delta_chunk *c);

/* The row of a chunk whose stored object is obj[0..n): its kind and base
 * from the object, stored_size, served_size (served_len: the plain frame at
 * the server's level), and c's features if it is plain. */
void delta_row(const struct delta_chunk *c, const void *obj, size_t n, size_t served_len, struct db_chunk *row);
