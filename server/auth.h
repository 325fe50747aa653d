/* SPDX-License-Identifier: Apache-2.0 */
/*
 * auth.h - who is asking, and what they may do: the Authorization header
 * (a JWT as Bearer, or as the password of Basic), permission checks per
 * cache, and the set of caches a caller may read.
 *
 * Every function that refuses has already replied (401/403/404) when it
 * returns a negative errno. struct auth owns its claims (auth_free()).
 */
#pragma once

#include "httpd.h"
#include "tokcache.h"
#include "troved.h"

struct auth {
        bool present;                 /* a token was sent (and verified) */
        const struct token_claims *claims;    /* shared with the token cache (tokcache.h) */
        struct tokcache_claims *held;
        /* The caches this caller may pull, computed on first use (NULL
         * until then; never NULL after, even when empty). */
        int64_t *pullable;
        size_t n_pullable;
};

/* Parses Authorization (Bearer, or Basic with the token as password). A
 * token that is present but invalid is refused here with 401. */
int auth_parse(struct troved *t, struct httpd_request *req, struct auth *ret);
void auth_free(struct auth *a);
/* perm on cache_name (cache NULL: it does not exist yet). */
int auth_require(struct httpd_request *req, const struct auth *a, const struct db_cache *cache,
                 const char *cache_name, enum token_perm perm);
/* perm on every cache (the pattern "*"). */
int auth_require_all(struct httpd_request *req, const struct auth *a, enum token_perm perm);
/* Loads the cache and checks perm. Unknown caches are 404 only for those
 * allowed to know: anonymous callers get 401 as for a private cache, and
 * tokens without any right on the name 403, so cache names do not leak. */
int auth_open_cache(struct troved *t, struct httpd_request *req, const struct auth *a, const char *name,
                    enum token_perm perm, struct db_cache *ret);
/* Ids of the caches the caller may pull: public ones, and those its token
 * grants pull on. Content held only by other caches is, for this caller,
 * content the server does not have. Owned by a. */
int auth_pullable_caches(struct troved *t, struct auth *a, const int64_t **ret_ids, size_t *ret_n);
