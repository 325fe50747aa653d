/* SPDX-License-Identifier: Apache-2.0 */
/*
 * auth.c - tokens and permissions (auth.h).
 */
#include <time.h>

#include "auth.h"

void auth_free(struct auth *a) {
        tokcache_release(a->held);
        a->held = NULL;
        a->claims = NULL;
        free(a->pullable);
        a->pullable = NULL;
}

static int base64_decode_any(const char *s, char *out, size_t cap, size_t *ret_len) {
        static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        uint32_t acc = 0;
        int bits = 0;
        size_t n = 0;

        for (; *s && *s != '='; s++) {
                const char *p = strchr(tab, *s);
                if (!p || !*s)
                        return -EINVAL;
                acc = (acc << 6) | (uint32_t) (p - tab);
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        if (n + 1 >= cap)
                                return -E2BIG;
                        out[n++] = (char) ((acc >> bits) & 0xff);
                }
        }
        out[n] = 0;
        *ret_len = n;
        return 0;
}

int auth_parse(struct troved *t, struct httpd_request *req, struct auth *ret) {
        const char *h = httpd_request_header(req, "Authorization");
        struct trove_error err = {};
        const char *token = NULL;
        char basic[TOKEN_TEXT_MAX + 512];
        size_t n;
        int r;

        *ret = (struct auth){};
        if (!h)
                return 0;
        if (strncasecmp(h, "Bearer ", 7) == 0) {
                token = h + 7;
        } else if (strncasecmp(h, "Basic ", 6) == 0) {
                char *colon;
                r = base64_decode_any(h + 6, basic, sizeof basic, &n);
                if (r < 0 || memchr(basic, 0, n))
                        return httpd_reply_error(req, 401, "malformed Basic authorization"), -EACCES;
                colon = strchr(basic, ':');
                if (!colon)
                        return httpd_reply_error(req, 401, "malformed Basic authorization"), -EACCES;
                token = colon + 1; /* the password is the token; the user name is free */
        } else {
                return httpd_reply_error(req, 401, "unsupported authorization scheme (use Bearer or Basic)"),
                       -EACCES;
        }
        while (*token == ' ')
                token++;
        ret->present = true;
        r = tokcache_verify(t->tokens, token, &t->secret, (int64_t) time(NULL), &ret->claims, &ret->held, &err);
        if (r < 0) {
                httpd_add_header(req, "WWW-Authenticate", "Basic realm=\"trove\"");
                return httpd_reply_error(req, 401, "invalid token: %s", err.msg[0] ? err.msg : strerror(-r)),
                       -EACCES;
        }
        return 0;
}

int auth_require(struct httpd_request *req, const struct auth *a, const struct db_cache *cache,
                 const char *cache_name, enum token_perm perm) {
        if (perm == TOKEN_PERM_PULL && cache && cache->is_public)
                return 0;
        if (!a->present) {
                httpd_add_header(req, "WWW-Authenticate", "Basic realm=\"trove\"");
                return httpd_reply_error(req, 401, "authentication required to %s on cache '%s'",
                                        token_perm_to_string(perm), cache_name),
                       -EACCES;
        }
        if (!token_permits(a->claims, cache_name, perm))
                return httpd_reply_error(req, 403, "token does not grant '%s' on cache '%s'",
                                        token_perm_to_string(perm), cache_name),
                       -EPERM;
        return 0;
}

int auth_open_cache(struct troved *t, struct httpd_request *req, const struct auth *a, const char *name,
               enum token_perm perm, struct db_cache *ret) {
        int r = db_cache_get(t->db, name, ret);
        if (r == -ENOENT) {
                if (!a->present)
                        return auth_require(req, a, NULL, name, perm);
                if (!token_permits(a->claims, name, TOKEN_PERM_PULL) && !token_permits(a->claims, name, perm))
                        return httpd_reply_error(req, 403, "token does not grant access to cache '%s'", name),
                               -EPERM;
                return httpd_reply_error(req, 404, "no such cache '%s'", name), -ENOENT;
        }
        if (r < 0)
                return r;
        r = auth_require(req, a, ret, name, perm);
        if (r < 0) {
                db_cache_free(ret);
                return r;
        }
        return 0;
}

int auth_require_all(struct httpd_request *req, const struct auth *a, enum token_perm perm) {
        if (!a->present) {
                httpd_add_header(req, "WWW-Authenticate", "Basic realm=\"trove\"");
                return httpd_reply_error(req, 401, "authentication required to %s on all caches",
                                         token_perm_to_string(perm)),
                       -EACCES;
        }
        if (!token_permits(a->claims, "*", perm))
                return httpd_reply_error(req, 403, "token does not grant '%s' on all caches",
                                         token_perm_to_string(perm)),
                       -EPERM;
        return 0;
}

int auth_pullable_caches(struct troved *t, struct auth *a, const int64_t **ret_ids, size_t *ret_n) {
        struct db_cache_ref *all = NULL;
        size_t n = 0, k = 0;
        int r;

        if (!a->pullable) {
                r = db_cache_list(t->db, &all, &n);
                if (r < 0)
                        return r;
                a->pullable = calloc(n + 1, sizeof *a->pullable);
                if (!a->pullable) {
                        free(all);
                        return -ENOMEM;
                }
                for (size_t i = 0; i < n; i++)
                        if (all[i].is_public || (a->present && token_permits(a->claims, all[i].name, TOKEN_PERM_PULL)))
                                a->pullable[k++] = all[i].id;
                free(all);
                a->n_pullable = k;
        }
        *ret_ids = a->pullable;
        *ret_n = a->n_pullable;
        return 0;
}
