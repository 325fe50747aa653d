/* SPDX-License-Identifier: Apache-2.0 */
/*
 * s3.h - an S3 client (path-style URLs endpoint/bucket/key, SigV4 through
 * libcurl's CURLOPT_AWS_SIGV4) for the chunk store.
 *
 * A struct s3 is thread-safe: it keeps a small pool of http clients, and a
 * request borrows one for its duration (keep-alive across requests).
 *
 * Retries: connection errors, timeouts, HTTP 5xx and 429 are retried up to
 * max_attempts in all, sleeping a random time in [0, min(backoff_max,
 * backoff_base * 2^attempt)] between attempts ("full jitter"). 4xx answers
 * are never retried. A streamed GET is retried only while nothing has been
 * passed to the write callback yet.
 *
 * Errors: -ENOENT (no such key or bucket), -EACCES (401/403, bad
 * credentials or signature), -ERANGE (416), -EINVAL (other 4xx),
 * -EIO (5xx after the last attempt), -EAGAIN (429 after the last attempt),
 * the http.h transport errors (-ECONNREFUSED, -ETIMEDOUT, ...), -E2BIG
 * (object larger than the buffer's maximum), -EBADMSG (unparsable reply).
 * The S3 error code of a refusal is logged at debug level.
 */
#pragma once

#include <time.h>

#include "trove/buf.h"
#include "trove/common.h"
#include "trove/http.h"

struct s3_config {
        const char *endpoint;   /* "http://127.0.0.1:7480" (no path) */
        const char *bucket;
        const char *region;     /* NULL: "us-east-1" */
        const char *access_key;
        const char *secret_key;
        unsigned max_attempts;  /* 0: 5 */
        unsigned backoff_base_ms; /* 0: 100 */
        unsigned backoff_max_ms;  /* 0: 5000 */
        long connect_timeout_ms;  /* 0: 10 s */
        long low_speed_time_s;    /* 0: 30 s below 1 byte/s aborts */
};

struct s3;

/* Copies the configuration; validates it (-EINVAL with a debug log). */
int s3_new(const struct s3_config *cfg, struct s3 **ret);
struct s3 *s3_free(struct s3 *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct s3 *, s3_free);

/* Keys: 1..1024 bytes, no NUL, no leading '/'. */
int s3_put_object(struct s3 *s, const char *key, const void *data, size_t n);
/* Like s3_put_object(), but only creates: the PUT carries "If-None-Match: *"
 * and an existing key is left as it is and answered with -EEXIST (HTTP 412;
 * 409, a concurrent conditional write, is retried). A retry after a lost
 * reply may meet the object its own first attempt stored: -EEXIST too. The
 * server must honour the condition (AWS S3 does since August 2024; Ceph
 * radosgw does, see tests/integration/test_s3.py); one that ignores it
 * overwrites. */
int s3_put_object_new(struct s3 *s, const char *key, const void *data, size_t n);

/* A byte range [offset, offset+length) for GET; length 0: to the end. */
struct s3_range {
        uint64_t offset;
        uint64_t length;
};

/* Replaces out's contents with the object (or range). */
int s3_get_object(struct s3 *s, const char *key, const struct s3_range *range, struct buf *out);
int s3_get_object_cb(struct s3 *s, const char *key, const struct s3_range *range,
                     http_write_fn write_fn, void *userdata);
/* 1 and the size if the object exists, 0 if not. */
int s3_head_object(struct s3 *s, const char *key, uint64_t *ret_size);
/* 0 whether or not the key existed (S3 does not tell). */
int s3_delete_object(struct s3 *s, const char *key);
/* 0 if created, 1 if it already existed and is ours. */
int s3_create_bucket(struct s3 *s);

struct s3_object {
        char *key;
        uint64_t size;
};

/* One page of ListObjectsV2. Owns its strings; s3_list_page_done() frees. */
struct s3_list_page {
        struct s3_object *objects;
        size_t n_objects;
        bool truncated;
        char *next_token; /* NULL unless truncated */
};

void s3_list_page_done(struct s3_list_page *p);

/* Lists keys starting with prefix (NULL: all), after continuation_token
 * (NULL: from the start), at most max_keys (0: server default, 1000). */
int s3_list_objects_v2(struct s3 *s, const char *prefix, const char *continuation_token,
                       unsigned max_keys, struct s3_list_page *ret);

/* Calls fn for each object under prefix, following continuation tokens;
 * fn returns 0 to go on, anything else stops and is returned. */
typedef int (*s3_object_fn)(const struct s3_object *o, void *userdata);
int s3_list_foreach(struct s3 *s, const char *prefix, s3_object_fn fn, void *userdata);

/* Parses a ListBucketResult document (bounded, no XML library: the reply
 * is flat and its text escaped with the five predefined entities and
 * numeric character references). Exposed for tests. */
#define S3_LIST_XML_MAX (16u * 1024 * 1024)
int s3_list_parse(const char *xml, size_t n, struct s3_list_page *ret);

/* A presigned URL (SigV4 query signing, payload UNSIGNED-PAYLOAD) that
 * allows method on key for expires_s seconds (1..604800) from now. */
int s3_presign_get(struct s3 *s, const char *key, unsigned expires_s, time_t now,
                   char **ret_url);

/* The general form, for tests and other layouts: url_base is
 * "scheme://host[:port]" and path the already-encoded absolute path. */
struct s3_presign_params {
        const char *method;
        const char *url_base;
        const char *path;
        const char *region;
        const char *service; /* NULL: "s3" */
        const char *access_key;
        const char *secret_key;
        unsigned expires_s;
        time_t now;
};
int s3_presign(const struct s3_presign_params *p, char **ret_url);
