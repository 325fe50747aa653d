/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httpd.h"
#include "trove/buf.h"

#define HTTP_HEADERS_MAX 16
/* A body refused before it was read is read and dropped up to this size,
 * keeping the connection; past it the connection is closed instead. */
#define HTTPD_DRAIN_MAX (1024u * 1024)
/* Offloaded streamed bodies are handed to a worker in batches of this size
 * (MHD hands over a few KiB at a time). */
#define HTTPD_BATCH (256u * 1024)

/* The worker threads and their queue of suspended requests (FIFO). */
struct httpd_workers {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct httpd_request *head, *tail;
        bool stopping;
        unsigned n;
        pthread_t *threads;
};

struct httpd_server {
        struct MHD_Daemon *daemon;
        httpd_route_fn route;
        void *userdata;
        void (*observe)(void *userdata, unsigned status);
        unsigned (*retry_after)(void *userdata);
        unsigned port;
        struct httpd_workers workers;
};

enum body_mode {
        BODY_NONE,
        BODY_STREAM,
        BODY_COLLECT,
};

struct httpd_request {
        struct httpd_server *server;
        struct MHD_Connection *conn;
        const char *method;
        char *path;
        bool routed;
        bool head;

        enum body_mode body_mode;
        uint64_t max_body;
        uint64_t body_seen;
        httpd_body_fn on_body;
        httpd_end_fn on_end;
        httpd_collected_fn on_collected;
        struct buf collected;
        int body_error;         /* first error from a body consumer */

        void *state;
        void (*state_free)(void *);

        char *header_names[HTTP_HEADERS_MAX];
        char *header_values[HTTP_HEADERS_MAX];
        unsigned n_headers;

        struct MHD_Response *response; /* built, not yet queued */
        unsigned status;
        bool queued;
        bool draining;          /* replied before the body: read and drop it, then send */
        bool close_after;       /* the reply goes out before the body was read: close */

        /* Work that may block runs on a worker while the connection is
         * suspended; the event loop does not touch the request meanwhile. */
        bool offload;           /* body callbacks run on a worker */
        httpd_end_fn deferred;  /* bodiless: the handler, run on a worker */
        struct buf pending;     /* streamed body bytes not yet fed */
        bool work_end;          /* the queued work includes the end of the request */
        bool ended;             /* the end ran on a worker: queue the reply */
        struct httpd_request *work_next;
};

unsigned httpd_status_from_errno(int err) {
        switch (err < 0 ? -err : err) {
        case 0:
                return 200;
        case ENOENT:
        case ENXIO:
                return 404;
        case EINVAL:
        case EBADMSG:
        case EPROTO:
        case ENAMETOOLONG:
        case EILSEQ:
        case ERANGE:
        case EOVERFLOW:
                return 400;
        case EACCES:
                return 401;
        case EPERM:
        case EKEYEXPIRED:
        case EKEYREJECTED:
                return 403;
        case EEXIST:
        case ENOTEMPTY:
                return 409;
        case E2BIG:
        case EFBIG:
        case EMSGSIZE:
                return 413;
        case EOPNOTSUPP:
                return 415;
        case ENOSYS:
                return 405;
        case ECONNREFUSED:
        case ECONNRESET:
        case ENOTCONN:
        case EAGAIN:
        case EBUSY:
        case ETIMEDOUT:
        case EHOSTUNREACH:
        case EHOSTDOWN:
        case ECANCELED:
                return 503;
        default:
                return 500;
        }
}

static void request_free(struct httpd_request *req) {
        if (!req)
                return;
        if (req->state_free && req->state)
                req->state_free(req->state);
        if (req->response)
                MHD_destroy_response(req->response);
        for (unsigned i = 0; i < req->n_headers; i++) {
                free(req->header_names[i]);
                free(req->header_values[i]);
        }
        buf_free(&req->collected);
        buf_free(&req->pending);
        free(req->path);
        free(req);
}

const char *httpd_request_method(const struct httpd_request *req) {
        return req->method;
}

const char *httpd_request_path(const struct httpd_request *req) {
        return req->path;
}

const char *httpd_request_header(const struct httpd_request *req, const char *name) {
        return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *httpd_request_query(const struct httpd_request *req, const char *name) {
        return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

bool httpd_request_is_head(const struct httpd_request *req) {
        return req->head;
}

int64_t httpd_request_content_length(const struct httpd_request *req) {
        const char *v = httpd_request_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
        uint64_t n = 0;

        if (!v || !*v)
                return -1;
        for (const char *p = v; *p; p++) {
                if (*p < '0' || *p > '9' || n > (UINT64_MAX - 9) / 10)
                        return -1;
                n = n * 10 + (uint64_t) (*p - '0');
        }
        return n > INT64_MAX ? -1 : (int64_t) n;
}

void httpd_request_set_state(struct httpd_request *req, void *state, void (*free_fn)(void *)) {
        req->state = state;
        req->state_free = free_fn;
}

void *httpd_request_state(const struct httpd_request *req) {
        return req->state;
}

void httpd_request_stream_body(struct httpd_request *req, uint64_t max_body, httpd_body_fn on_body,
                              httpd_end_fn on_end) {
        req->body_mode = BODY_STREAM;
        req->max_body = max_body;
        req->on_body = on_body;
        req->on_end = on_end;
}

void httpd_request_collect_body(struct httpd_request *req, size_t max_body, httpd_collected_fn on_end) {
        req->body_mode = BODY_COLLECT;
        req->max_body = max_body;
        req->on_collected = on_end;
        buf_init(&req->collected, max_body);
}

void httpd_request_offload(struct httpd_request *req) {
        req->offload = true;
        buf_init(&req->pending, HTTPD_BATCH + 65536);
}

void httpd_request_defer(struct httpd_request *req, httpd_end_fn fn) {
        req->offload = true;
        req->deferred = fn;
}

bool httpd_replied(const struct httpd_request *req) {
        return req->response || req->queued;
}

int httpd_add_header(struct httpd_request *req, const char *name, const char *value) {
        if (req->n_headers >= HTTP_HEADERS_MAX)
                return -E2BIG;
        req->header_names[req->n_headers] = strdup(name);
        req->header_values[req->n_headers] = strdup(value);
        if (!req->header_names[req->n_headers] || !req->header_values[req->n_headers]) {
                free(req->header_names[req->n_headers]);
                free(req->header_values[req->n_headers]);
                return -ENOMEM;
        }
        req->n_headers++;
        return 0;
}

static int reply_set(struct httpd_request *req, unsigned status, const char *content_type,
                     struct MHD_Response *resp) {
        if (!resp)
                return -ENOMEM;
        if (httpd_replied(req)) {
                /* A second reply is a bug in a handler; keep the first. */
                MHD_destroy_response(resp);
                log_error("BUG: second reply to %s %s", req->method, req->path);
                return -EALREADY;
        }
        if (content_type)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        bool retry_after = false;
        for (unsigned i = 0; i < req->n_headers; i++) {
                MHD_add_response_header(resp, req->header_names[i], req->header_values[i]);
                retry_after |= strcasecmp(req->header_names[i], "Retry-After") == 0;
        }
        if (status == 503 && !retry_after) {
                char v[16];
                snprintf(v, sizeof v, "%u",
                         req->server->retry_after ? req->server->retry_after(req->server->userdata) : 5);
                MHD_add_response_header(resp, "Retry-After", v);
        }
        req->response = resp;
        req->status = status;
        return 0;
}

int httpd_reply_buf(struct httpd_request *req, unsigned status, const char *content_type,
                   const void *data, size_t n) {
        return reply_set(req, status, content_type,
                         MHD_create_response_from_buffer(n, (void *) data, MHD_RESPMEM_MUST_COPY));
}

int httpd_reply_take(struct httpd_request *req, unsigned status, const char *content_type, void *data,
                    size_t n) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(n, data, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(data);
                return -ENOMEM;
        }
        return reply_set(req, status, content_type, resp);
}

struct stream_ctx {
        httpd_reader_fn reader;
        void *userdata;
        void (*free_fn)(void *);
};

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
        struct stream_ctx *s = cls;
        ssize_t n = s->reader(s->userdata, pos, buf, max);
        if (n == 0)
                return MHD_CONTENT_READER_END_OF_STREAM;
        if (n < 0)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        return n;
}

static void stream_free(void *cls) {
        struct stream_ctx *s = cls;
        if (s->free_fn)
                s->free_fn(s->userdata);
        free(s);
}

int httpd_reply_stream(struct httpd_request *req, unsigned status, const char *content_type,
                      uint64_t size, httpd_reader_fn reader, void *userdata, void (*free_fn)(void *)) {
        struct stream_ctx *s = malloc(sizeof *s);
        struct MHD_Response *resp;

        if (!s) {
                if (free_fn)
                        free_fn(userdata);
                return -ENOMEM;
        }
        *s = (struct stream_ctx){ reader, userdata, free_fn };
        resp = MHD_create_response_from_callback(size == UINT64_MAX ? MHD_SIZE_UNKNOWN : size,
                                                 256 * 1024, stream_read, s, stream_free);
        if (!resp) {
                stream_free(s);
                return -ENOMEM;
        }
        return reply_set(req, status, content_type, resp);
}

int httpd_reply_error(struct httpd_request *req, unsigned status, const char *fmt, ...) {
        char msg[512];
        char *text;
        va_list ap;
        int n;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        n = asprintf(&text, "error: %s\n", msg);
        if (n < 0)
                return -ENOMEM;
        if (status >= 500)
                log_warning("%s %s: %u %s", req->method, req->path, status, msg);
        else
                log_debug("%s %s: %u %s", req->method, req->path, status, msg);
        return httpd_reply_take(req, status, "text/plain; charset=utf-8", text, (size_t) n);
}

static void reply_errno(struct httpd_request *req, int err) {
        unsigned status = httpd_status_from_errno(err);
        if (status == 503)
                (void) httpd_reply_error(req, status, "service temporarily unavailable: %s",
                                        strerror(-err));
        else
                (void) httpd_reply_error(req, status, "%s", strerror(err < 0 ? -err : err));
}

/* Queues the pending reply. MHD accepts it right after the headers or once
 * the whole body has arrived; queued in its first call ("early"), MHD closes
 * the connection after the reply, which is what a refused upload needs and
 * what every other request must avoid (see access_handler). */
static enum MHD_Result queue_pending(struct httpd_request *req) {
        enum MHD_Result r;

        if (!req->response)
                return MHD_YES;
        if (req->server->observe)
                req->server->observe(req->server->userdata, req->status);
        if (req->close_after)
                MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONNECTION, "close");
        r = MHD_queue_response(req->conn, req->status, req->response);
        MHD_destroy_response(req->response);
        req->response = NULL;
        req->queued = true;
        return r;
}

static void body_fail(struct httpd_request *req, int err) {
        if (!req->body_error)
                req->body_error = err < 0 ? err : -EIO;
}

static void feed_body(struct httpd_request *req, const char *data, size_t n) {
        int r;

        if (req->body_error || httpd_replied(req))
                return; /* discard the rest */
        if (req->body_seen + n > req->max_body || req->body_seen + n < req->body_seen) {
                (void) httpd_reply_error(req, 413, "request body larger than %" PRIu64 " bytes",
                                        req->max_body);
                body_fail(req, -EFBIG);
                return;
        }
        req->body_seen += n;
        if (req->body_mode == BODY_STREAM) {
                r = req->on_body ? req->on_body(req, data, n) : 0;
                if (r < 0)
                        body_fail(req, r);
        } else if (req->body_mode == BODY_COLLECT) {
                r = buf_append(&req->collected, data, n);
                if (r < 0) {
                        (void) httpd_reply_error(req, 413, "request body too large");
                        body_fail(req, r);
                }
        }
}

static void finish_body(struct httpd_request *req) {
        int r = 0;

        if (!req->body_error && !httpd_replied(req)) {
                if (req->body_mode == BODY_STREAM && req->on_end)
                        r = req->on_end(req);
                else if (req->body_mode == BODY_COLLECT && req->on_collected)
                        r = req->on_collected(req, req->collected.data ? req->collected.data : (uint8_t *) "",
                                              req->collected.len);
                if (r < 0)
                        body_fail(req, r);
        }
        if (!httpd_replied(req))
                reply_errno(req, req->body_error ? req->body_error : -EIO);
}

/* The work of one suspended request: feed the batched body, then (at the
 * end) the end callback or the deferred handler. cancelled: the server is
 * stopping and the work is not run, the request fails with 503. */
static void run_work(struct httpd_request *req, bool cancelled) {
        if (cancelled)
                body_fail(req, -ECANCELED);
        if (req->pending.len) {
                feed_body(req, (const char *) req->pending.data, req->pending.len);
                buf_reset(&req->pending);
        }
        if (!req->work_end)
                return;
        if (req->deferred) {
                int r = req->body_error ? req->body_error : req->deferred(req);
                if (!httpd_replied(req))
                        reply_errno(req, r < 0 ? r : -EIO);
        } else {
                finish_body(req);
        }
        req->ended = true;
}

static void *worker_main(void *p) {
        struct httpd_workers *w = p;

        for (;;) {
                struct httpd_request *req;
                bool cancelled;

                pthread_mutex_lock(&w->lock);
                while (!w->head && !w->stopping)
                        pthread_cond_wait(&w->cond, &w->lock);
                req = w->head;
                if (!req) {
                        pthread_mutex_unlock(&w->lock);
                        return NULL;
                }
                w->head = req->work_next;
                if (!w->head)
                        w->tail = NULL;
                req->work_next = NULL;
                cancelled = w->stopping;
                pthread_mutex_unlock(&w->lock);

                run_work(req, cancelled);
                MHD_resume_connection(req->conn);
        }
}

/* Suspends the connection and queues its work; when the server is stopping
 * the work is cancelled on the spot instead. Returns whether it was queued. */
static bool offload_work(struct httpd_request *req, bool end) {
        struct httpd_workers *w = &req->server->workers;

        req->work_end = end;
        pthread_mutex_lock(&w->lock);
        if (w->stopping) {
                pthread_mutex_unlock(&w->lock);
                run_work(req, true);
                return false;
        }
        MHD_suspend_connection(req->conn);
        if (w->tail)
                w->tail->work_next = req;
        else
                w->head = req;
        w->tail = req;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
        return true;
}

/* A body piece of an offloaded request: copied (MHD reuses its buffer) and
 * handed over once a batch is full. Collected bodies are only appended, so
 * they are collected here; their end runs on a worker. */
static void offload_body(struct httpd_request *req, const char *data, size_t n) {
        if (req->body_mode != BODY_STREAM || req->body_error || httpd_replied(req)) {
                feed_body(req, data, n);
                return;
        }
        if (req->body_seen + req->pending.len + n > req->max_body ||
            req->body_seen + req->pending.len + n < req->body_seen) {
                (void) httpd_reply_error(req, 413, "request body larger than %" PRIu64 " bytes", req->max_body);
                body_fail(req, -EFBIG);
                buf_reset(&req->pending);
                return;
        }
        if (buf_append(&req->pending, data, n) < 0) {
                body_fail(req, -ENOMEM);
                return;
        }
        if (req->pending.len >= HTTPD_BATCH)
                (void) offload_work(req, false);
}

static bool request_has_body(struct httpd_request *req) {
        return httpd_request_content_length(req) > 0 || httpd_request_header(req, "Transfer-Encoding");
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version, const char *upload_data,
                                      size_t *upload_data_size, void **con_cls) {
        struct httpd_server *s = cls;
        struct httpd_request *req = *con_cls;
        int r;

        if (!req) {
                int64_t len;

                req = calloc(1, sizeof *req);
                if (!req)
                        return MHD_NO;
                req->server = s;
                req->conn = conn;
                req->method = method;
                req->head = streq(method, MHD_HTTP_METHOD_HEAD);
                req->path = strdup(url);
                if (!req->path) {
                        free(req);
                        return MHD_NO;
                }
                *con_cls = req;

                r = s->route(req, s->userdata);
                req->routed = true;
                if (r < 0 && !httpd_replied(req))
                        reply_errno(req, r);
                if (!httpd_replied(req)) {
                        len = httpd_request_content_length(req);
                        if (req->body_mode == BODY_NONE) {
                                if (len > 0)
                                        (void) httpd_reply_error(req, 400, "this request takes no body");
                        } else if (len > 0 && (uint64_t) len > req->max_body) {
                                (void) httpd_reply_error(req, 413,
                                                        "request body of %" PRId64 " bytes exceeds the limit of %" PRIu64,
                                                        len, req->max_body);
                        }
                }
                if (req->body_mode == BODY_NONE && !req->deferred && !httpd_replied(req))
                        reply_errno(req, -EIO); /* a bodiless request whose route did not reply */
                if (httpd_replied(req) && request_has_body(req)) {
                        /* Refused before its body was read. The body bytes
                         * may already be on the way (curl sends them once
                         * its wait for "100 Continue" times out): a small
                         * body is read and dropped so the connection stays
                         * in step and alive; a large or unknown one gets the
                         * reply now and the connection is closed after it,
                         * so no body byte is ever read as the next request.
                         * A 503 is never drained: the client will retry, and
                         * a retrying client may send no body at all (Nix
                         * resends an upload without rewinding it), which a
                         * drain would wait on until the idle timeout. */
                        len = httpd_request_content_length(req);
                        if (len > 0 && (uint64_t) len <= HTTPD_DRAIN_MAX && req->status != 503) {
                                req->draining = true;
                                return MHD_YES;
                        }
                        req->close_after = true;
                        return queue_pending(req);
                }
                /* Everything else is answered in MHD's next call, after it
                 * has seen the end of the request: a reply queued in this
                 * first call would make MHD close the connection. */
                return MHD_YES;
        }

        if (req->queued) {
                /* Replied early (connection closing): drop what still arrives. */
                *upload_data_size = 0;
                return MHD_YES;
        }
        if (*upload_data_size) {
                if (req->draining)
                        ;
                else if (req->offload)
                        offload_body(req, upload_data, *upload_data_size);
                else
                        feed_body(req, upload_data, *upload_data_size);
                *upload_data_size = 0;
                return MHD_YES;
        }
        if (req->draining || req->ended || httpd_replied(req))
                ;
        else if (req->offload) {
                /* Resumed when the worker is done; MHD then calls again
                 * and the reply is queued. */
                if (offload_work(req, true))
                        return MHD_YES;
        } else
                finish_body(req);
        return queue_pending(req);
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe) {
        request_free(*con_cls);
        *con_cls = NULL;
}

static int parse_listen(const char *listen, struct sockaddr_storage *ret, socklen_t *ret_len) {
        char host[256];
        const char *colon, *port;
        struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_PASSIVE, .ai_socktype = SOCK_STREAM };
        struct addrinfo *ai = NULL;
        size_t hl;

        colon = strrchr(listen, ':');
        if (!colon)
                return -EINVAL;
        port = colon + 1;
        hl = (size_t) (colon - listen);
        if (hl >= sizeof host)
                return -EINVAL;
        memcpy(host, listen, hl);
        host[hl] = 0;
        if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
                memmove(host, host + 1, hl - 2);
                host[hl - 2] = 0;
        }
        if (getaddrinfo(host[0] ? host : NULL, port, &hints, &ai) != 0 || !ai)
                return -EINVAL;
        memcpy(ret, ai->ai_addr, ai->ai_addrlen);
        *ret_len = ai->ai_addrlen;
        freeaddrinfo(ai);
        return 0;
}

/* libmicrohttpd's own messages; the format comes from the library. */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap) {
        char msg[512];
        vsnprintf(msg, sizeof msg, fmt, ap);
        msg[strcspn(msg, "\n")] = 0;
        log_debug("http: %s", msg);
}

int httpd_listen(const char *listen_addr, int *ret_fd) {
        struct sockaddr_storage sa;
        socklen_t sa_len;
        int fd, one = 1, r;

        r = parse_listen(listen_addr, &sa, &sa_len);
        if (r < 0)
                return log_error_errno(r, "invalid listen address '%s' (want HOST:PORT)", listen_addr);
        fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return log_error_errno(errno, "socket: %m");
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *) &sa, sa_len) < 0 || listen(fd, 1024) < 0) {
                r = -errno;
                close(fd);
                return log_error_errno(r, "cannot listen on %s: %s", listen_addr, strerror(-r));
        }
        *ret_fd = fd;
        return 0;
}

/* Ends the workers: work already running finishes (the bounded shutdown
 * cancels what it waits for), queued work is cancelled, and every
 * suspended connection is resumed, which MHD_stop_daemon() requires. */
static void workers_stop(struct httpd_workers *w) {
        pthread_mutex_lock(&w->lock);
        w->stopping = true;
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
        for (unsigned i = 0; i < w->n; i++)
                pthread_join(w->threads[i], NULL);
        free(w->threads);
        w->threads = NULL;
        w->n = 0;
}

/* After the event loops are gone (they may still offload until then). */
static void workers_free(struct httpd_workers *w) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
}

static int workers_start(struct httpd_workers *w, unsigned n) {
        if (n == 0) {
                long cpus = sysconf(_SC_NPROCESSORS_ONLN);
                n = (unsigned) (cpus > 0 ? cpus : 1) * HTTPD_WORKERS_PER_CPU;
                if (n > HTTPD_WORKERS_AUTO_MAX)
                        n = HTTPD_WORKERS_AUTO_MAX;
        }
        if (n > HTTPD_WORKERS_MAX)
                n = HTTPD_WORKERS_MAX;
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->cond, NULL);
        w->threads = calloc(n, sizeof *w->threads);
        if (!w->threads) {
                workers_free(w);
                return -ENOMEM;
        }
        for (; w->n < n; w->n++) {
                int r = pthread_create(&w->threads[w->n], NULL, worker_main, w);
                if (r != 0) {
                        workers_stop(w);
                        workers_free(w);
                        return -r;
                }
        }
        return 0;
}

int httpd_server_start(const struct httpd_server_config *c, struct httpd_server **ret) {
        struct sockaddr_storage sa;
        socklen_t sa_len;
        struct httpd_server *s;
        /* A fixed pool of event loops (epoll), each serving many
         * connections: an idle or slow client costs a socket, not a thread. */
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
                         MHD_ALLOW_SUSPEND_RESUME;
        const union MHD_DaemonInfo *info;
        int r;

        r = parse_listen(c->listen, &sa, &sa_len);
        if (r < 0)
                return log_error_errno(r, "invalid listen address '%s' (want HOST:PORT)", c->listen);
        if (sa.ss_family == AF_INET6)
                flags |= MHD_USE_IPv6;

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->route = c->route;
        s->userdata = c->userdata;
        s->observe = c->observe;
        s->retry_after = c->retry_after;
        r = workers_start(&s->workers, c->workers);
        if (r < 0) {
                free(s);
                return log_error_errno(r, "cannot start worker threads: %s", strerror(-r));
        }
        s->daemon = MHD_start_daemon(
                flags, 0, NULL, NULL, access_handler, s,
                MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
                c->listen_fd > 0 ? MHD_OPTION_LISTEN_SOCKET : MHD_OPTION_SOCK_ADDR,
                c->listen_fd > 0 ? (intptr_t) c->listen_fd : (intptr_t) &sa,
                MHD_OPTION_CONNECTION_LIMIT, (unsigned) (c->max_connections ? c->max_connections : 1024),
                MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                (unsigned) (c->max_connections_per_client ? c->max_connections_per_client : 64),
                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) (c->connection_timeout_sec ? c->connection_timeout_sec : 60),
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) 64 * 1024,
                MHD_OPTION_THREAD_POOL_SIZE, (unsigned) (c->threads ? c->threads : HTTPD_THREADS_DEFAULT),
                MHD_OPTION_NOTIFY_COMPLETED, request_completed, s,
                MHD_OPTION_END);
        if (!s->daemon) {
                workers_stop(&s->workers);
                workers_free(&s->workers);
                free(s);
                return log_error_errno(EADDRINUSE, "cannot listen on %s", c->listen);
        }
        info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_LISTEN_FD);
        if (info) {
                struct sockaddr_storage bound;
                socklen_t bl = sizeof bound;
                if (getsockname(info->listen_fd, (struct sockaddr *) &bound, &bl) == 0)
                        s->port = ntohs(bound.ss_family == AF_INET6
                                                ? ((struct sockaddr_in6 *) &bound)->sin6_port
                                                : ((struct sockaddr_in *) &bound)->sin_port);
        }
        *ret = s;
        return 0;
}

unsigned httpd_server_port(const struct httpd_server *s) {
        return s->port;
}

void httpd_server_stop(struct httpd_server *s) {
        if (!s)
                return;
        workers_stop(&s->workers);
        if (s->daemon)
                MHD_stop_daemon(s->daemon);
        workers_free(&s->workers);
        free(s);
}
