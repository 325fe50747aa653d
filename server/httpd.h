/* SPDX-License-Identifier: Apache-2.0 */
/*
 * httpd.h - troved's HTTP front: the only code that talks to libmicrohttpd.
 *
 * A fixed pool of threads, each an epoll loop over many connections
 * (HTTP/1.1 keep-alive on every route). Cheap work runs on the loop thread
 * of its connection. Work that may block (database, chunk store, an
 * upstream cache) is marked by the route with httpd_request_offload() or
 * httpd_request_defer(): the connection is suspended, a bounded pool of
 * worker threads runs the work, and the connection is resumed when it is
 * done, so a slow request never stalls the other connections of its loop.
 * For every request the route function is called once the
 * headers are in; it either replies at once, or installs a body consumer
 * (streamed, or collected into a bounded buffer) whose end callback replies.
 * Exactly one reply per request; a request that ends without one gets a 500.
 * Request bodies are never held whole unless a route asks for a bounded
 * collection.
 */
#pragma once

#include <sys/types.h>

#include "trove/common.h"

struct httpd_request;
struct httpd_server;

#define HTTPD_THREADS_DEFAULT 16
/* Worker threads for blocking work: 0 = HTTPD_WORKERS_PER_CPU per online
 * CPU, at most HTTPD_WORKERS_AUTO_MAX; never more than HTTPD_WORKERS_MAX. */
#define HTTPD_WORKERS_PER_CPU 4
#define HTTPD_WORKERS_AUTO_MAX 64
#define HTTPD_WORKERS_MAX 256

typedef int (*httpd_route_fn)(struct httpd_request *req, void *userdata);
typedef int (*httpd_body_fn)(struct httpd_request *req, const void *p, size_t n);
typedef int (*httpd_end_fn)(struct httpd_request *req);
typedef int (*httpd_collected_fn)(struct httpd_request *req, const void *body, size_t n);
/* Stream reader: writes up to max bytes for response position pos; returns
 * the count, 0 at the end, or a negative errno (the connection is dropped:
 * HTTP has no way to report an error after the status was sent). */
typedef ssize_t (*httpd_reader_fn)(void *userdata, uint64_t pos, char *buf, size_t max);

struct httpd_server_config {
        const char *listen;       /* "HOST:PORT", "[V6]:PORT" or ":PORT" */
        int listen_fd;            /* a socket from httpd_listen(), taken over; <= 0: bind listen here */
        unsigned max_connections;
        unsigned max_connections_per_client;
        unsigned connection_timeout_sec;
        unsigned threads;         /* event-loop threads; 0: HTTPD_THREADS_DEFAULT */
        unsigned workers;         /* worker threads; 0: per CPU (HTTPD_WORKERS_PER_CPU) */
        httpd_route_fn route;
        void *userdata;
        /* Called with the status of every reply queued (for metrics). */
        void (*observe)(void *userdata, unsigned status);
        /* Seconds a client should wait before it retries; every 503 that
         * does not set Retry-After itself carries it. NULL: 5. */
        unsigned (*retry_after)(void *userdata);
};

/* Binds and listens on "HOST:PORT" (for a process that binds a privileged
 * port, then drops privileges, then starts serving). */
int httpd_listen(const char *listen, int *ret_fd);
int httpd_server_start(const struct httpd_server_config *c, struct httpd_server **ret);
/* The port actually bound (useful with port 0). */
unsigned httpd_server_port(const struct httpd_server *s);
void httpd_server_stop(struct httpd_server *s);

const char *httpd_request_method(const struct httpd_request *req);
/* Decoded path, without the query string. */
const char *httpd_request_path(const struct httpd_request *req);
const char *httpd_request_header(const struct httpd_request *req, const char *name);
const char *httpd_request_query(const struct httpd_request *req, const char *name);
/* Declared Content-Length, or -1 when absent (chunked). */
int64_t httpd_request_content_length(const struct httpd_request *req);
bool httpd_request_is_head(const struct httpd_request *req);

/* Per-request slot for the route's own state, freed with free_fn at the end
 * of the request, whatever happened. */
void httpd_request_set_state(struct httpd_request *req, void *state, void (*free_fn)(void *));
void *httpd_request_state(const struct httpd_request *req);

/* Body consumers, installed by the route before it returns. A negative errno
 * from on_body stops consumption: the rest of the body is discarded and
 * on_end is not called; the reply is the error set with httpd_reply_error()
 * before returning it, or one derived from the errno. max_body bounds the
 * total (413 past it). */
void httpd_request_stream_body(struct httpd_request *req, uint64_t max_body, httpd_body_fn on_body,
                              httpd_end_fn on_end);
void httpd_request_collect_body(struct httpd_request *req, size_t max_body, httpd_collected_fn on_end);

/* The request's body callbacks (on_body, on_end, the collected callback)
 * may block: they run on a worker thread, never on the event loop. Streamed
 * body pieces are copied and handed over in batches. */
void httpd_request_offload(struct httpd_request *req);
/* For a request without a body: the route does not reply itself; fn runs on
 * a worker thread once the request is complete and replies (a negative
 * errno without a reply becomes the reply derived from it). */
void httpd_request_defer(struct httpd_request *req, httpd_end_fn fn);

/* Replies. Headers added before the reply go out with it. */
int httpd_add_header(struct httpd_request *req, const char *name, const char *value);
int httpd_reply_buf(struct httpd_request *req, unsigned status, const char *content_type,
                   const void *data, size_t n);
/* Takes ownership of data (free()d). */
int httpd_reply_take(struct httpd_request *req, unsigned status, const char *content_type, void *data,
                    size_t n);
/* size UINT64_MAX = unknown (chunked). free_fn(userdata) runs when done. */
int httpd_reply_stream(struct httpd_request *req, unsigned status, const char *content_type,
                      uint64_t size, httpd_reader_fn reader, void *userdata, void (*free_fn)(void *));
/* Plain-text error "error: <message>\n". */
int httpd_reply_error(struct httpd_request *req, unsigned status, const char *fmt, ...) _printf_(3, 4);
bool httpd_replied(const struct httpd_request *req);

/* The one errno → HTTP status table. */
unsigned httpd_status_from_errno(int err);
