/* SPDX-License-Identifier: Apache-2.0 */
/*
 * api.h - trove's own API under /_api/v1/ (documented in docs/api.md), and
 * the request helpers routes.c and api.c share: authentication, cache
 * lookup with permission checks, committing a path.
 *
 * Every helper that refuses a request has already replied (401/403/404...)
 * when it returns a negative errno.
 */
#pragma once

#include "troved.h"
#include "trove/narinfo.h"
#include "trove/util.h"

struct auth {
        bool present;                 /* a token was sent (and verified) */
        struct token_claims *claims;
};

/* Parses Authorization (Bearer, or Basic with the token as password). A
 * token that is present but invalid is refused here with 401. */
int auth_parse(struct troved *t, struct httpd_request *req, struct auth *ret);
void auth_free(struct auth *a);
int auth_require(struct httpd_request *req, const struct auth *a, const struct db_cache *cache,
                 const char *cache_name, enum token_perm perm);
int cache_open(struct troved *t, struct httpd_request *req, const struct auth *a, const char *name,
               enum token_perm perm, struct db_cache *ret);
/* Makes ni's store path visible in the cache with NAR nar_id (whose hash
 * and size the caller checked against ni). */
int path_commit(struct troved *t, struct httpd_request *req, const struct db_cache *cache,
                const struct narinfo *ni, int64_t nar_id);
/* The narinfo the cache serves for p, signed with the cache's key. */
int narinfo_from_path(const struct db_cache *cache, const struct db_path *p, struct narinfo *ret);

int api_health(struct troved *t, struct httpd_request *req);
int api_metrics(struct troved *t, struct httpd_request *req);
int api_route(struct troved *t, struct httpd_request *req, const struct auth *a, const char *rest);
