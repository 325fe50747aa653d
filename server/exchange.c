/* SPDX-License-Identifier: Apache-2.0 */
/*
 * exchange.c - the token exchange (exchange.h). Every refusal says why and
 * issues nothing: 401 for a token that is malformed, forged, expired, or of
 * an issuer or audience not configured; 403 for a valid token that no rule
 * grants anything; 503 when the issuer's keys cannot be fetched.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <time.h>

#include "exchange.h"
#include "oidckeys.h"
#include "trove/oidc.h"
#include "trove/oidcpolicy.h"

#define SUB_PREFIX "oidc:"

int exchange_setup(struct troved *t) {
        struct trove_error err = {};
        int r;

        if (!t->cfg.oidc_config)
                return 0;
        r = oidcpolicy_load(t->cfg.oidc_config, &t->oidc_policy, &err);
        if (r < 0)
                return log_error_errno(r, "oidc-config: %s", err.msg);
        r = oidckeys_new(t->oidc_policy, &t->oidc_keys);
        if (r < 0)
                return log_error_errno(r, "cannot set up the OpenID key store: %s", strerror(-r));
        log_info("token exchange: %zu trusted issuers, %zu rules (%s)", t->oidc_policy->n_issuers,
                 t->oidc_policy->n_rules, t->cfg.oidc_config);
        return 0;
}

void exchange_teardown(struct troved *t) {
        oidckeys_free(t->oidc_keys);
        t->oidc_keys = NULL;
        oidcpolicy_free(t->oidc_policy);
        t->oidc_policy = NULL;
}

static int refuse(struct httpd_request *req, unsigned status, const char *what, const char *why) {
        if (status == 401)
                httpd_add_header(req, "WWW-Authenticate", "Bearer realm=\"trove\"");
        return httpd_reply_error(req, status, "%s: %s", what, why);
}

static int reply(struct httpd_request *req, const char *token, const struct token_claims *c) {
        json_t *o = json_object(), *perms = json_object();
        char *s;

        if (!o || !perms || json_object_set_new(o, "token", json_string(token)) < 0 ||
            json_object_set_new(o, "expiresAt", json_integer(c->exp)) < 0 ||
            (c->sub && json_object_set_new(o, "sub", json_string(c->sub)) < 0)) {
                json_decref(perms);
                json_decref(o);
                return -ENOMEM;
        }
        for (size_t i = 0; i < c->n_grants; i++) {
                json_t *a = json_array();
                if (!a || json_object_set_new(perms, c->grants[i].pattern, a) < 0)
                        break;
                for (int p = 0; p < _TOKEN_PERM_MAX; p++)
                        if (c->grants[i].perms & TOKEN_PERM_BIT(p))
                                json_array_append_new(a, json_string(token_perm_to_string(p)));
        }
        json_object_set_new(o, "perms", perms);
        s = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (!s)
                return -ENOMEM;
        return httpd_reply_take(req, 200, "application/json", s, strlen(s));
}

int exchange_token(struct troved_request *rq, const void *body, size_t n) {
        struct httpd_request *req = rq->http;
        struct troved *t = rq->t;
        _cleanup_(oidc_jwt_freep) struct oidc_jwt *j = NULL;
        _cleanup_(token_claims_freep) struct token_claims *c = NULL;
        _cleanup_free_ char *sub = NULL, *token = NULL;
        const struct oidcpolicy_issuer *is;
        struct trove_error err = {};
        int64_t now = (int64_t) time(NULL), exp;
        json_error_t e;
        json_t *in, *v;
        int r, issuer, matched;

        if (!t->oidc_policy)
                return httpd_reply_error(req, 404, "token exchange is not configured on this server (oidc-config)");
        in = json_loadb(body, n, JSON_REJECT_DUPLICATES, &e);
        v = json_object_get(in, "token");
        if (!json_is_object(in) || json_object_size(in) != 1 || !json_is_string(v)) {
                json_decref(in);
                return httpd_reply_error(req, 400, "expected a JSON object {\"token\": \"<ID token>\"}");
        }
        r = oidc_jwt_parse(json_string_value(v), json_string_length(v), &j, &err);
        json_decref(in);
        if (r < 0)
                return refuse(req, 401, "invalid ID token", err.msg);

        issuer = oidcpolicy_find_issuer(t->oidc_policy, oidc_jwt_issuer(j));
        if (issuer < 0)
                return refuse(req, 401, "ID token refused", "its issuer is not trusted by this server");
        is = &t->oidc_policy->issuers[issuer];
        r = oidckeys_verify(t->oidc_keys, (size_t) issuer, j, &err);
        if (r == -EAGAIN)
                return httpd_reply_error(req, 503, "cannot check the ID token: %s", err.msg);
        if (r < 0)
                return refuse(req, 401, "ID token refused", err.msg);
        r = oidc_jwt_check_claims(j, is->issuer, (const char *const *) is->audiences, is->n_audiences, now, &err);
        if (r < 0)
                return refuse(req, 401, "ID token refused", err.msg);

        /* At most the job token's remaining lifetime, and the configured cap. */
        exp = oidc_jwt_expiry(j);
        if (exp - now > t->oidc_policy->max_valid_sec)
                exp = now + t->oidc_policy->max_valid_sec;
        if (oidc_jwt_subject(j) && strlen(oidc_jwt_subject(j)) + strlen(SUB_PREFIX) <= TOKEN_SUB_MAX &&
            asprintf(&sub, SUB_PREFIX "%s", oidc_jwt_subject(j)) < 0)
                return -ENOMEM;
        r = token_claims_new(sub, exp, &c);
        if (r < 0)
                return r;
        c->has_iat = true;
        c->iat = now;
        matched = oidcpolicy_grant(t->oidc_policy, (size_t) issuer, j, c);
        if (matched < 0)
                return matched;
        if (matched == 0) {
                log_info("token exchange refused: no rule matches %s token of %s", is->issuer,
                         sub ? sub : "(no subject)");
                return httpd_reply_error(req, 403, "no rule of this server grants anything to this ID token "
                                         "(issuer %s, subject %.200s)", is->issuer,
                                         oidc_jwt_subject(j) ? oidc_jwt_subject(j) : "none");
        }
        r = token_encode(c, t->secret.key, t->secret.len, &token);
        if (r < 0)
                return r;
        log_info("token exchange: %s token of %s, %d rules, %zu cache patterns, valid %" PRId64 " s", is->issuer,
                 sub ? sub : "(no subject)", matched, c->n_grants, exp - now);
        return reply(req, token, c);
}
