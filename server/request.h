/* SPDX-License-Identifier: Apache-2.0 */
/*
 * request.h - a request as a handler sees it: already matched to a row of
 * the route table (routes.c), authenticated, authorized, and with its body
 * cap set. Handlers never check permissions or body sizes themselves; they
 * read the captured path parameters and reply.
 *
 * A troved_request lives until the HTTP request ends (it is the httpd
 * request's state), so body callbacks reach it with troved_request_of().
 */
#pragma once

#include "auth.h"
#include "httpd.h"
#include "troved.h"
#include "trove/storepath.h"

struct troved_request {
        struct troved *t;
        struct httpd_request *http;
        struct auth auth;
        struct db_cache cache;      /* the route's {cache}; cache.name NULL if not loaded */
        char cache_name[65];        /* {cache} */
        char hash[STOREPATH_HASH_LEN + 1];  /* {hash}: a store path hash part */
        char arg[128];              /* {chunk} (64 hex digits) or {file} */
        uint64_t body_max;          /* the route's body cap; 0: no body */
        void *priv;                 /* the handler's own state */
        void (*priv_free)(void *);
        int (*on_collected)(struct troved_request *rq, const void *body, size_t n);
        int (*deferred)(struct troved_request *rq);  /* the handler, run on a worker */
};

typedef int (*troved_handler_fn)(struct troved_request *rq);
typedef int (*troved_collected_fn)(struct troved_request *rq, const void *body, size_t n);

struct troved_request *troved_request_of(struct httpd_request *req);
void troved_request_free(void *p);

/* The handler's private state, freed with the request. */
void troved_request_set_priv(struct troved_request *rq, void *priv, void (*free_fn)(void *));

/* For a bodiless request whose answer may block: fn replies on a worker
 * thread (httpd_request_defer); the caller returns 0 without replying. */
void troved_defer(struct troved_request *rq, troved_handler_fn fn);

/* Body consumers, bounded by the route's cap. */
void troved_collect_body(struct troved_request *rq, troved_collected_fn fn);
void troved_stream_body(struct troved_request *rq, httpd_body_fn on_body, httpd_end_fn on_end);
/* Reads and drops the body (for uploads that are accepted and not kept). */
void troved_discard_body(struct troved_request *rq);

/* Cache-Control for immutable content of rq's cache. */
void troved_cache_immutable(struct troved_request *rq);
