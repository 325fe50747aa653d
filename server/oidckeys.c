/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oidckeys.c - fetched and cached issuer key sets (oidckeys.h).
 */
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "oidckeys.h"
#include "trove/http.h"
#include "trove/jwks.h"

#define FETCH_CONNECT_TIMEOUT_MS 5000
#define FETCH_TOTAL_TIMEOUT_MS 10000
#define DISCOVERY_PATH "/.well-known/openid-configuration"

struct oidckeys_issuer {
        pthread_mutex_t lock;
        struct jwks *keys;          /* NULL until a fetch succeeded */
        int64_t fetched_at;         /* monotonic seconds of the set in keys */
        int64_t tried_at;           /* of the last fetch attempt; valid if tried */
        bool tried;
};

struct oidckeys {
        const struct oidcpolicy *policy;
        struct oidckeys_issuer *issuers;
        size_t n;
};

static int64_t now_monotonic(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec;
}

int oidckeys_new(const struct oidcpolicy *policy, struct oidckeys **ret) {
        struct oidckeys *k;
        int r;

        r = http_global_init();
        if (r < 0)
                return r;
        k = calloc(1, sizeof *k);
        if (!k)
                return -ENOMEM;
        k->issuers = calloc(policy->n_issuers + 1, sizeof *k->issuers);
        if (!k->issuers) {
                free(k);
                return -ENOMEM;
        }
        for (size_t i = 0; i < policy->n_issuers; i++) {
                pthread_mutex_init(&k->issuers[i].lock, NULL);
                k->n++;
        }
        k->policy = policy;
        *ret = k;
        return 0;
}

void oidckeys_free(struct oidckeys *k) {
        if (!k)
                return;
        for (size_t i = 0; i < k->n; i++) {
                jwks_free(k->issuers[i].keys);
                pthread_mutex_destroy(&k->issuers[i].lock);
        }
        free(k->issuers);
        free(k);
}

/* GET url into a buffer of at most JWKS_TEXT_MAX bytes; 200 only. */
static int get(struct http_client *hc, const char *url, struct buf *out, struct trove_error *err) {
        struct http_response resp = {};
        int r;

        buf_reset(out);
        r = http_request(hc, &(struct http_request){ .method = "GET", .url = url, .response = out }, &resp);
        if (r < 0)
                return trove_error_set(err, r, "GET %s: %s", url, http_client_last_error(hc)[0] ?
                                       http_client_last_error(hc) : strerror(-r));
        if (resp.status != 200)
                return trove_error_set(err, EIO, "GET %s answered HTTP %ld", url, resp.status);
        return 0;
}

static int fetch(const struct oidcpolicy_issuer *is, struct jwks **ret, struct trove_error *err) {
        _cleanup_(http_client_freep) struct http_client *hc = NULL;
        _cleanup_(buf_free) struct buf body = BUF_INIT(JWKS_TEXT_MAX);
        _cleanup_free_ char *discovered = NULL;
        struct trove_error perr = {};
        const char *uri = is->jwks_uri;
        int r;

        r = http_client_new(&(struct http_client_options){ .connect_timeout_ms = FETCH_CONNECT_TIMEOUT_MS,
                                                           .total_timeout_ms = FETCH_TOTAL_TIMEOUT_MS },
                            &hc);
        if (r < 0)
                return trove_error_set(err, r, "cannot make an HTTP client");
        if (!uri) {
                _cleanup_free_ char *url = NULL;
                size_t il = strlen(is->issuer);
                while (il > 0 && is->issuer[il - 1] == '/')
                        il--;
                if (asprintf(&url, "%.*s%s", (int) il, is->issuer, DISCOVERY_PATH) < 0)
                        return trove_error_set(err, ENOMEM, "out of memory");
                r = get(hc, url, &body, err);
                if (r < 0)
                        return r;
                r = jwks_discovery_uri(body.data, body.len, is->issuer, &discovered, &perr);
                if (r < 0)
                        return trove_error_set(err, r, "%s: %s", url, perr.msg);
                uri = discovered;
        }
        r = get(hc, uri, &body, err);
        if (r < 0)
                return r;
        r = jwks_parse(body.data, body.len, ret, &perr);
        if (r < 0)
                return trove_error_set(err, r, "%s: %s", uri, perr.msg);
        log_debug("fetched %zu keys of %s from %s", jwks_count(*ret), is->issuer, uri);
        return 0;
}

int oidckeys_verify(struct oidckeys *k, size_t issuer, const struct oidc_jwt *j, struct trove_error *err) {
        const struct oidcpolicy_issuer *is;
        struct oidckeys_issuer *ki;
        const char *kid = oidc_jwt_kid(j);
        int64_t now = now_monotonic();
        bool stale, unknown;
        int r;

        if (issuer >= k->n)
                return trove_error_set(err, EINVAL, "no such issuer");
        is = &k->policy->issuers[issuer];
        ki = &k->issuers[issuer];
        pthread_mutex_lock(&ki->lock);
        stale = !ki->keys || now - ki->fetched_at >= (int64_t) is->cache_sec;
        unknown = ki->keys && kid && !jwks_has_kid(ki->keys, kid);
        if ((stale || unknown) && (!ki->tried || now - ki->tried_at >= (int64_t) is->refetch_sec)) {
                struct trove_error ferr = {};
                struct jwks *fresh = NULL;

                ki->tried = true;
                ki->tried_at = now;
                r = fetch(is, &fresh, &ferr);
                if (r >= 0) {
                        jwks_free(ki->keys);
                        ki->keys = fresh;
                        ki->fetched_at = now;
                } else
                        log_warning("cannot fetch the keys of %s: %s%s", is->issuer, ferr.msg,
                                    ki->keys ? " (keeping the keys fetched before)" : "");
                if (r < 0 && !ki->keys) {
                        pthread_mutex_unlock(&ki->lock);
                        return trove_error_set(err, EAGAIN, "the keys of the token's issuer cannot be fetched");
                }
        }
        if (!ki->keys) {
                pthread_mutex_unlock(&ki->lock);
                return trove_error_set(err, EAGAIN, "the keys of the token's issuer cannot be fetched "
                                       "(retrying in at most %u s)", is->refetch_sec);
        }
        r = oidc_jwt_verify(j, ki->keys, err);
        pthread_mutex_unlock(&ki->lock);
        return r;
}
