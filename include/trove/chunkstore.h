/* SPDX-License-Identifier: Apache-2.0 */
/*
 * chunkstore.h - where the server keeps chunk objects: one zstd frame per
 * chunk (see chunkcodec.h), immutable, named by the chunk id (SHA-256 of
 * the uncompressed bytes). Two backends behind one interface:
 *
 *   local  <root>/chunks/ab/cd/<64 hex>. Written to a temporary file in the
 *          same directory, fsync'd, renamed without replacing: a reader
 *          never sees a partial object under its final name. Directories
 *          are made 0700 and objects 0600 (the process's user only). One process uses a root at a time
 *          (an flock on <root>/chunks/.lock; a second open gets -EBUSY), so
 *          the temporary files found at open are leftovers of a crash and
 *          are removed.
 *   s3     keys "<prefix>chunks/ab/<64 hex>" in a bucket, via s3.h.
 *
 * An object is a chunk frame or a delta object (chunkcodec.h), whose
 * structure is checked like a frame's but whose content needs its base: the
 * caller verifies it (CHUNKSTORE_GET_VERIFY checks only its structure).
 *
 * Every function is thread-safe. Errors: -ENOENT (no such chunk), -EBADMSG
 * (a stored object that is not a single zstd frame with a declared size,
 * or, with CHUNKSTORE_GET_VERIFY, whose content does not hash to its id:
 * reported, never hidden), -EFBIG (object larger than the buffer's max),
 * -EBUSY (local root in use), and the s3.h / errno of the storage.
 */
#pragma once

#include "trove/buf.h"
#include "trove/common.h"
#include "trove/hash.h"
#include "trove/s3.h"

struct chunkstore;

typedef int (*chunkstore_list_fn)(const uint8_t id[SHA256_DIGEST_LEN], uint64_t size,
                                  void *userdata);

/* The backend interface. A backend embeds struct chunkstore first. */
struct chunkstore_ops {
        const char *name;
        int (*put)(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN], const void *frame,
                   size_t n, unsigned flags);
        /* Makes every put so far durable; NULL: puts are durable at once. */
        int (*sync)(struct chunkstore *cs);
        int (*get)(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN], struct buf *out);
        int (*exists)(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN],
                      uint64_t *ret_size);
        int (*delete)(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN]);
        int (*list)(struct chunkstore *cs, chunkstore_list_fn fn, void *userdata);
        /* NULL: not supported. */
        int (*presign_get)(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN],
                           unsigned expires_s, char **ret_url);
        /* NULL: always reachable, no counters, nothing to cancel. */
        int (*probe)(struct chunkstore *cs);
        void (*s3_stats)(struct chunkstore *cs, struct s3_stats *ret);
        int (*s3_recover)(struct chunkstore *cs);
        void (*cancel)(struct chunkstore *cs);
        void (*free)(struct chunkstore *cs);
};

struct chunkstore {
        const struct chunkstore_ops *ops;
};

enum chunkstore_type {
        CHUNKSTORE_LOCAL,
        CHUNKSTORE_S3,
};

struct chunkstore_config {
        enum chunkstore_type type;
        const char *local_root;    /* LOCAL: created if missing */
        struct s3_config s3;       /* S3 */
        const char *s3_prefix;     /* S3: key prefix, e.g. "cache1/"; NULL: "" */
        bool s3_create_bucket;     /* S3: create the bucket at open if missing */
};

int chunkstore_open(const struct chunkstore_config *cfg, struct chunkstore **ret);

/* Opens from a one-line spec:
 *   /abs/path  or  file:///abs/path                          local
 *   s3://BUCKET?endpoint=http://host:port[&region=R][&prefix=P][&create=1][&attempts=N]
 * (parameter values percent-encoded; attempts: 1..100, see s3.h retries).
 * For S3 the credentials come from the environment (AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY), never from the spec. */
int chunkstore_open_spec(const char *spec, struct chunkstore **ret);
/* The same, with the S3 client's timeouts, retry budget and breaker taken
 * from tuning (its endpoint, bucket, region and keys are ignored; zero
 * fields keep the defaults of s3.h). */
int chunkstore_open_spec_tuned(const char *spec, const struct s3_config *tuning, struct chunkstore **ret);

/* 0 if the store answers (local: always), a negative errno if not; fails
 * at once while the S3 breaker is open (-EHOSTDOWN). */
int chunkstore_probe(struct chunkstore *cs);
/* The S3 client's counters and breaker; -EOPNOTSUPP for the local store. */
int chunkstore_s3_stats(struct chunkstore *cs, struct s3_stats *ret);
/* s3_recover() on an S3 store; -EOPNOTSUPP for the local store. */
int chunkstore_s3_recover(struct chunkstore *cs);
/* Every call in flight is aborted, and every later one fails, with
 * -ECANCELED (shutdown). The local store is not interrupted. */
void chunkstore_cancel(struct chunkstore *cs);

struct chunkstore *chunkstore_free(struct chunkstore *cs);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct chunkstore *, chunkstore_free);

const char *chunkstore_backend(const struct chunkstore *cs);

/* Stores frame under id, write-once: an object already stored under id is
 * never replaced, and the call returns -EEXIST, whether the stored bytes
 * equal frame or not (the same chunk compressed at another level is
 * another frame). A caller that gets -EEXIST must read the stored object
 * (chunkstore_get) and use its bytes and size for anything it records, such
 * as a NAR's FileHash/FileSize, never the frame it tried to put. This holds
 * under concurrency: of two puts of one id exactly one stores its frame.
 *   local  the frame goes to a temporary file that is published with
 *          renameat2(RENAME_NOREPLACE) (link() + unlink() where the file
 *          system lacks it).
 *   s3     a conditional PUT, If-None-Match: * (HTTP 412 -> -EEXIST); see
 *          s3_put_object_new() for what the server must support.
 * The frame must look like a chunk frame (header check, -EBADMSG); the
 * caller has verified its content against id. */
int chunkstore_put(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN], const void *frame,
                   size_t n);

enum {
        /* The object need not be durable when put returns; a later
         * chunkstore_sync() makes it so (local: one syncfs for a whole batch
         * instead of two fsyncs per object). Visible under its final name
         * either way, never partially. */
        CHUNKSTORE_PUT_NOSYNC = 1 << 0,
        /* Replace the object stored under id (recompression: the same
         * content in another object), atomically: a reader gets the old
         * object or the new one, never a mix. The only exception to
         * write-once. */
        CHUNKSTORE_PUT_REPLACE = 1 << 1,
};

int chunkstore_put_flags(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN], const void *frame,
                         size_t n, unsigned flags);
/* Makes all objects put so far durable. */
int chunkstore_sync(struct chunkstore *cs);

enum {
        /* Also decode the frame and check that its content hashes to id. */
        CHUNKSTORE_GET_VERIFY = 1 << 0,
};

/* Replaces out's contents with the stored frame. */
int chunkstore_get(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN], unsigned flags,
                   struct buf *out);
/* 1 and the stored size if present, 0 if not. */
int chunkstore_exists(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN],
                      uint64_t *ret_size);
/* 0 whether or not it was there. */
int chunkstore_delete(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN]);
/* Calls fn for every stored chunk (in no particular order); fn returns 0 to
 * go on, anything else stops the walk and is returned. Objects whose names
 * are not chunk ids are skipped. */
int chunkstore_list(struct chunkstore *cs, chunkstore_list_fn fn, void *userdata);
/* A URL that serves the frame without credentials for expires_s seconds;
 * -EOPNOTSUPP for the local backend. */
int chunkstore_presign_get(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN],
                           unsigned expires_s, char **ret_url);

/* Backends. */
int chunkstore_local_open(const char *root, struct chunkstore **ret);
int chunkstore_s3_open(const struct s3_config *cfg, const char *prefix, bool create_bucket,
                       struct chunkstore **ret);

/* For backends: the frame check chunkstore_get() applies. */
int chunkstore_check_frame(const uint8_t id[SHA256_DIGEST_LEN], const void *frame, size_t n,
                           unsigned flags);
