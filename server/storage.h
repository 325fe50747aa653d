/* SPDX-License-Identifier: Apache-2.0 */
/*
 * storage.h - the chunk store as the handlers use it: latency and error
 * accounting, write-once puts whose callers always learn the bytes that are
 * actually stored, chunk rows written only once their object is there, and
 * a short-lived memory of objects seen present (so serving a NAR does not
 * ask the store about every chunk on every request).
 */
#pragma once

#include "troved.h"

/* Replaces out's contents with the stored object (a frame or a delta
 * object, include/trove/chunkcodec.h); flags as chunkstore_get()
 * (CHUNKSTORE_GET_VERIFY decodes and checks it against id, a delta object
 * with its base). */
int storage_get(struct troved *t, const uint8_t id[SHA256_DIGEST_LEN], unsigned flags, struct buf *out);
/* The content of chunk id (length bytes, as its row says) into out,
 * whatever its object: a delta is decoded with its base, read and verified
 * first (never a delta itself). Always verified against id (-EBADMSG);
 * -ENOENT if the object or its base is missing. obj gets the object;
 * *ret_delta (may be NULL) whether it was a delta. */
struct chunkcodec;
int storage_read_content(struct troved *t, struct chunkcodec *codec, const uint8_t id[SHA256_DIGEST_LEN],
                         uint32_t length, struct buf *obj, uint8_t *out, bool *ret_delta);
/* The same from an object already read (obj). */
int storage_decode(struct troved *t, struct chunkcodec *codec, const uint8_t id[SHA256_DIGEST_LEN],
                   uint32_t length, const struct buf *obj, uint8_t *out);
/* The frame chunk id is served as in a .nar.zst: its object when that is
 * a plain frame; a delta's or a recompressed object's content (decoded into content, length bytes, and
 * verified) compressed alone by codec, which is at the server's level, so
 * the frame is the one FileHash and served_size describe. */
int storage_served_frame(struct troved *t, struct chunkcodec *codec, const uint8_t id[SHA256_DIGEST_LEN],
                         uint32_t length, struct buf *frame, uint8_t *content);
/* The second half of that: frame holds an object that is not a plain frame
 * (chunkcodec_object_kind() != 0) and gets the frame it is served as. */
int storage_reencode(struct troved *t, struct chunkcodec *codec, const uint8_t id[SHA256_DIGEST_LEN],
                     uint32_t length, struct buf *frame, uint8_t *content);

/* Stores frame (already verified against id) under id. Objects are
 * write-once: if one is already stored, nothing is replaced; its bytes are
 * read back, verified, and put into *stored (if not NULL), and 1 is
 * returned: FileHash, FileSize and stored_size must describe those bytes,
 * not frame. An existing object that does not verify is replaced. 0 when
 * frame was stored. flags: CHUNKSTORE_PUT_NOSYNC. */
int storage_put(struct troved *t, const uint8_t id[SHA256_DIGEST_LEN], const void *frame, size_t n, unsigned flags,
                struct buf *stored);

/* Writes the row of a chunk just stored; stores the frame again if garbage
 * collection deleted the object in between. */
int storage_chunk_record(struct troved *t, const struct db_chunk *row, const void *frame, size_t n);

/* Clears present[i] of each chunk whose row exists but whose object is not
 * in the store (lost with the server, deleted behind troved's back): such a
 * row is not trusted, the chunk is asked for and stored again. Objects seen
 * within the last few minutes are not asked again. */
int storage_confirm_objects(struct troved *t, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n, bool *present);
/* -EHOSTDOWN while the S3 breaker is open (the store is known to be away),
 * 1 while it is half open (the next call probes), else 0. */
int storage_available(struct troved *t);
struct storage_memo;
int storage_memo_new(struct storage_memo **ret);
void storage_memo_free(struct storage_memo *m);
/* Forgets which objects were seen present (after GC deletes). */
void storage_forget_present(struct troved *t);
/* Notes that this process stored the object of id, len bytes, after
 * checking that it decodes to content with that id. */
void storage_note_verified(struct troved *t, const uint8_t id[SHA256_DIGEST_LEN], size_t len);
/* Whether an object of id and len bytes was noted so, recently. */
bool storage_was_verified(struct troved *t, const uint8_t id[SHA256_DIGEST_LEN], size_t len);
