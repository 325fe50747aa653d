/* SPDX-License-Identifier: Apache-2.0 */
/*
 * request.c - the allowed request handed to handlers (request.h).
 */
#include "request.h"

struct troved_request *troved_request_of(struct httpd_request *req) {
        return httpd_request_state(req);
}

void troved_request_free(void *p) {
        struct troved_request *rq = p;
        if (!rq)
                return;
        if (rq->priv_free && rq->priv)
                rq->priv_free(rq->priv);
        auth_free(&rq->auth);
        db_cache_free(&rq->cache);
        free(rq);
}

void troved_request_set_priv(struct troved_request *rq, void *priv, void (*free_fn)(void *)) {
        rq->priv = priv;
        rq->priv_free = free_fn;
}

static int run_deferred(struct httpd_request *req) {
        struct troved_request *rq = troved_request_of(req);
        return rq->deferred(rq);
}

void troved_defer(struct troved_request *rq, troved_handler_fn fn) {
        rq->deferred = fn;
        httpd_request_defer(rq->http, run_deferred);
}

static int collected(struct httpd_request *req, const void *body, size_t n) {
        struct troved_request *rq = troved_request_of(req);
        METRIC_ADD(rq->t, bytes_in, n);
        return rq->on_collected(rq, body, n);
}

void troved_collect_body(struct troved_request *rq, troved_collected_fn fn) {
        rq->on_collected = fn;
        httpd_request_collect_body(rq->http, (size_t) rq->body_max, collected);
}

void troved_stream_body(struct troved_request *rq, httpd_body_fn on_body, httpd_end_fn on_end) {
        httpd_request_stream_body(rq->http, rq->body_max, on_body, on_end);
}

static int discard_chunk(struct httpd_request *req, const void *p, size_t n) {
        METRIC_ADD(troved_request_of(req)->t, bytes_in, n);
        return 0;
}

static int discard_end(struct httpd_request *req) {
        return httpd_reply_buf(req, 200, "text/plain", "", 0);
}

void troved_discard_body(struct troved_request *rq) {
        troved_stream_body(rq, discard_chunk, discard_end);
}

void troved_cache_immutable(struct troved_request *rq) {
        httpd_add_header(rq->http, "Cache-Control",
                         rq->cache.is_public ? "public, max-age=31536000, immutable"
                                             : "private, max-age=31536000, immutable");
}
