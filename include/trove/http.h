/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http.h - a thin HTTP client on libcurl (the only module besides s3 that
 * includes curl headers).
 *
 * A struct http_client is one reusable curl handle: connections are kept
 * alive between requests. It is NOT thread-safe: use one per thread (or a
 * pool). curl_global_init() runs once, thread-safely, on the first
 * http_client_new().
 *
 * http_request() returns 0 once a response was received, whatever its HTTP
 * status (the caller decides what a 404 means; http_status_to_errno() is the
 * usual table), and a negative errno when no complete response arrived:
 *   -ECONNREFUSED  nobody listens there        -ETIMEDOUT    connect or low-speed timeout
 *   -EHOSTUNREACH  name did not resolve        -ECONNRESET   connection dropped / empty reply
 *   -EINVAL        malformed URL or request    -EPROTONOSUPPORT  scheme not supported
 *   -EPROTO        TLS / protocol failure      -ELOOP        too many redirects
 *   -E2BIG         response larger than the buffer's maximum
 *   -ECANCELED     cancelled (options.cancel)
 *   -ENOMEM, or the errno a read/write callback returned; -EIO otherwise.
 * http_client_last_error() then holds curl's message for the log.
 */
#pragma once

#include <stdatomic.h>
#include <sys/types.h>

#include "trove/buf.h"
#include "trove/common.h"

struct http_client;

struct http_client_options {
        long connect_timeout_ms; /* 0: 10 s */
        /* Abort a transfer that moves fewer than low_speed_limit bytes/s
         * for low_speed_time_s seconds. 0: 1 byte/s for 30 s. */
        long low_speed_limit;
        long low_speed_time_s;
        long total_timeout_ms; /* 0: none */
        bool follow_redirects;
        /* If set: once *cancel is true, a request in flight is aborted
         * within about a second and later ones fail at once, -ECANCELED
         * (for a process that shuts down). */
        const atomic_bool *cancel;
};

/* Reads up to n body bytes into p: returns the count, 0 at the end, or a
 * negative errno to abort. */
typedef ssize_t (*http_read_fn)(void *userdata, void *p, size_t n);
/* Consumes n response body bytes: 0, or a negative errno to abort. */
typedef int (*http_write_fn)(void *userdata, const void *p, size_t n);

struct http_request {
        const char *method;          /* "GET", "PUT", "HEAD", "DELETE", "POST"; NULL: GET */
        const char *url;
        const char *const *headers;  /* NULL-terminated "Name: value" list, or NULL */
        /* Request body: from memory (body, body_len), or from read_fn with
         * body_size bytes (-1: unknown, sent chunked). */
        const void *body;
        size_t body_len;
        http_read_fn read_fn;
        void *read_userdata;
        int64_t body_size;
        /* Authentication (optional): user and password for HTTP basic auth,
         * or the access and secret key with aws_sigv4 set (curl's
         * CURLOPT_AWS_SIGV4 parameter, e.g. "aws:amz:us-east-1:s3"). */
        const char *user;
        const char *password;
        const char *aws_sigv4;
        /* Response body: appended to response (bounded by its max), or passed
         * to write_fn; neither: discarded. */
        struct buf *response;
        http_write_fn write_fn;
        void *write_userdata;
        /* If set, the body of a non-2xx response goes here instead (as much
         * as fits its max; the rest is dropped), e.g. an S3 error document. */
        struct buf *error_body;
        /* If set, the value of this response header is kept in the
         * response's captured fields (e.g. a signature header). */
        const char *capture_header;
};

#define HTTP_ETAG_MAX 128
#define HTTP_CONTENT_TYPE_MAX 128
#define HTTP_CAPTURED_MAX 512

struct http_response {
        long status;
        int64_t content_length; /* from the header; -1 if absent or invalid */
        char etag[HTTP_ETAG_MAX];            /* "" if absent */
        char content_type[HTTP_CONTENT_TYPE_MAX];
        uint64_t body_bytes;    /* response body bytes received */
        /* The capture_header's value (trimmed), if it came exactly once and
         * fits: captured_count says how often it came, captured_len its
         * full length; captured holds it only if captured_count == 1 and
         * captured_len < HTTP_CAPTURED_MAX (else ""). */
        unsigned captured_count;
        size_t captured_len;
        char captured[HTTP_CAPTURED_MAX];
};

int http_global_init(void);

int http_client_new(const struct http_client_options *opts, struct http_client **ret);
struct http_client *http_client_free(struct http_client *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct http_client *, http_client_free);

int http_request(struct http_client *c, const struct http_request *req,
                 struct http_response *ret);

/* curl's message for the last failed request ("" if none). */
const char *http_client_last_error(const struct http_client *c);

/* The usual meaning of an HTTP status: 2xx → 0, 404/410 → -ENOENT,
 * 401/403 → -EACCES, 409 → -EEXIST, 412 → -EEXIST, 413 → -EFBIG,
 * 416 → -ERANGE, 429/503 → -EAGAIN, 400/other 4xx → -EINVAL,
 * 5xx → -EIO, 1xx/3xx → -EPROTO. */
int http_status_to_errno(long status);

/* Percent-encodes s (RFC 3986: unreserved characters stay; '/' stays if
 * keep_slash) with upper-case hex, as SigV4 wants it. Appends to out. */
int http_uri_encode(struct buf *out, const char *s, size_t n, bool keep_slash);
