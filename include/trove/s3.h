/* SPDX-License-Identifier: Apache-2.0 */
/*
 * s3.h - an S3 client (path-style URLs endpoint/bucket/key, SigV4 through
 * libcurl's CURLOPT_AWS_SIGV4) for the chunk store.
 *
 * A struct s3 is thread-safe: it keeps a small pool of http clients, and a
 * request borrows one for its duration (keep-alive across requests).
 *
 * Timeouts: every attempt is bounded: connect_timeout_ms to connect,
 * low_speed_time_s without a byte moving (a server that accepted the
 * connection but does not answer: the first byte, or any later one), and
 * request_timeout_ms in all.
 *
 * Retries: connection errors, timeouts, HTTP 5xx and 429 are retried up to
 * max_attempts in all, sleeping a random time in [0, min(backoff_max,
 * backoff_base * 2^attempt)] between attempts ("full jitter"), as long as
 * the call has not run for retry_budget_ms yet (no attempt starts after
 * that). 4xx answers are never retried. A streamed GET is retried only while
 * nothing has been passed to the write callback yet. Every call is
 * idempotent (objects are immutable and written once), so retrying one is
 * safe. A connection that failed is closed, never reused.
 *
 * Circuit breaker: breaker_threshold attempts in a row that found the
 * server unreachable (connection refused or reset, a timeout, HTTP 502, 503
 * or 504) open it: for breaker_open_ms every call fails at once with
 * -EHOSTDOWN, without a request (calls already under way go on retrying
 * within their budget). Then one call is
 * let through as a probe (half open): if the server answers, the breaker
 * closes; if not, it opens again. Idle connections are dropped when it opens.
 *
 * Errors: -ENOENT (no such key or bucket), -EACCES (401/403, bad
 * credentials or signature), -ERANGE (416), -EINVAL (other 4xx),
 * -EIO (5xx after the last attempt), -EAGAIN (429 after the last attempt),
 * the http.h transport errors (-ECONNREFUSED, -ETIMEDOUT, ...), -E2BIG
 * (object larger than the buffer's maximum), -EBADMSG (unparsable reply),
 * -EHOSTDOWN (the breaker is open), -ECANCELED (after s3_cancel()).
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
        long connect_timeout_ms;  /* 0: 5 s */
        long low_speed_time_s;    /* 0: 10 s below 1 byte/s aborts */
        long request_timeout_ms;  /* 0: 60 s for one attempt in all */
        unsigned retry_budget_ms; /* 0: 30 s; no retry starts after this */
        unsigned breaker_threshold; /* 0: 3 failed attempts in a row open it */
        unsigned breaker_open_ms;   /* 0: 10 s open before a probe */
};

/* What a call does, for the counters. */
enum s3_op {
        S3_OP_GET,
        S3_OP_PUT,
        S3_OP_HEAD,
        S3_OP_DELETE,
        S3_OP_LIST,
        S3_OP_BUCKET, /* bucket creation and probes */
        S3_OP_COUNT,
};

const char *s3_op_name(enum s3_op op);

enum s3_breaker_state {
        S3_BREAKER_CLOSED,
        S3_BREAKER_OPEN,
        S3_BREAKER_HALF_OPEN,
};

struct s3_stats {
        uint64_t requests[S3_OP_COUNT]; /* HTTP requests sent (attempts) */
        uint64_t errors[S3_OP_COUNT];   /* calls that failed: server unreachable, 5xx, timeout */
        uint64_t timeouts[S3_OP_COUNT]; /* attempts that timed out */
        uint64_t rejected[S3_OP_COUNT]; /* calls failed at once by the open breaker */
        uint64_t breaker_opens;
        enum s3_breaker_state breaker;
        unsigned retry_after_s;         /* open: seconds until a probe may go (>= 1); else 0 */
};

struct s3;

/* Copies the configuration; validates it (-EINVAL with a debug log). */
int s3_new(const struct s3_config *cfg, struct s3 **ret);
struct s3 *s3_free(struct s3 *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct s3 *, s3_free);

/* A snapshot of the counters and the breaker. */
void s3_stats_get(struct s3 *s, struct s3_stats *ret);

/* Asks the server whether the bucket is there (HEAD, one attempt, through
 * the breaker): 0 if it answered, a negative errno if not. */
int s3_probe(struct s3 *s);

/* While the breaker is open, asks the server now, as the breaker's probe
 * (HEAD of the bucket, one attempt), without waiting for the open time to
 * end: 0 when it answered (the breaker is closed again), a negative errno
 * when not (the breaker opens for another window), -EHOSTDOWN when another
 * probe is out; 1 when the breaker was closed (nothing sent). */
int s3_recover(struct s3 *s);

/* From now on every call fails with -ECANCELED; calls in flight are
 * aborted within about a second (shutdown). */
void s3_cancel(struct s3 *s);

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
