/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oidcpolicy.c - trusted issuers and claim rules for the token exchange
 * (oidcpolicy.h).
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>

#include "trove/oidcpolicy.h"

struct oidcpolicy_claim {
        char *name;
        char *pattern;
};

struct oidcpolicy_rule {
        size_t issuer;
        struct oidcpolicy_claim *claims;
        size_t n_claims;
        char **caches;
        size_t n_caches;
        uint32_t perms;
};

static void strv_free(char **v, size_t n) {
        for (size_t i = 0; i < n && v; i++)
                free(v[i]);
        free(v);
}

void oidcpolicy_free(struct oidcpolicy *p) {
        if (!p)
                return;
        for (size_t i = 0; i < p->n_issuers; i++) {
                free(p->issuers[i].issuer);
                strv_free(p->issuers[i].audiences, p->issuers[i].n_audiences);
                free(p->issuers[i].jwks_uri);
        }
        free(p->issuers);
        for (size_t i = 0; i < p->n_rules; i++) {
                for (size_t c = 0; c < p->rules[i].n_claims; c++) {
                        free(p->rules[i].claims[c].name);
                        free(p->rules[i].claims[c].pattern);
                }
                free(p->rules[i].claims);
                strv_free(p->rules[i].caches, p->rules[i].n_caches);
        }
        free(p->rules);
        free(p);
}

static bool text_valid(json_t *v) {
        size_t n;
        const char *s;

        if (!json_is_string(v))
                return false;
        s = json_string_value(v);
        n = json_string_length(v);
        return n > 0 && n <= OIDCPOLICY_STRING_MAX && strlen(s) == n;
}

static bool url_valid(json_t *v) {
        const char *s;

        if (!text_valid(v))
                return false;
        s = json_string_value(v);
        if (!startswith(s, "https://") && !startswith(s, "http://"))
                return false;
        for (; *s; s++)
                if ((unsigned char) *s <= 0x20 || (unsigned char) *s >= 0x7f)
                        return false;
        return true;
}

static int only_keys(json_t *o, const char *const *allowed, const char *where, struct trove_error *err) {
        const char *key;
        json_t *v;

        json_object_foreach(o, key, v) {
                bool ok = false;
                for (size_t i = 0; allowed[i] && !ok; i++)
                        ok = streq(key, allowed[i]);
                if (!ok)
                        return trove_error_set(err, EINVAL, "%s: unknown key \"%.64s\"", where, key);
        }
        return 0;
}

static int seconds(json_t *o, const char *key, int64_t min, int64_t max, int64_t def, int64_t *ret,
                   const char *where, struct trove_error *err) {
        json_t *v = json_object_get(o, key);

        if (!v) {
                *ret = def;
                return 0;
        }
        if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
                return trove_error_set(err, EINVAL, "%s: \"%s\" must be an integer %" PRId64 "..%" PRId64, where,
                                       key, min, max);
        *ret = (int64_t) json_integer_value(v);
        return 0;
}

/* An array of 1..max valid strings, copied. */
static int strings(json_t *a, size_t max, char ***ret, size_t *ret_n, const char *where, const char *key,
                   struct trove_error *err) {
        char **v;
        size_t i;
        json_t *s;

        if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > max)
                return trove_error_set(err, EINVAL, "%s: \"%s\" must be an array of 1..%zu strings", where, key, max);
        v = calloc(json_array_size(a), sizeof *v);
        if (!v)
                return trove_error_set(err, ENOMEM, "out of memory");
        json_array_foreach(a, i, s) {
                if (!text_valid(s) || !(v[i] = strdup(json_string_value(s)))) {
                        strv_free(v, i);
                        return trove_error_set(err, EINVAL, "%s: \"%s\" holds an empty, overlong or non-string entry",
                                               where, key);
                }
        }
        *ret = v;
        *ret_n = json_array_size(a);
        return 0;
}

static int parse_issuer(json_t *o, struct oidcpolicy_issuer *is, const char *where, struct trove_error *err) {
        static const char *const allowed[] = { "issuer", "audiences", "jwksUri", "jwksCacheSeconds",
                                               "jwksRefetchSeconds", NULL };
        int64_t n;
        int r;

        if (!json_is_object(o))
                return trove_error_set(err, EINVAL, "%s is not an object", where);
        r = only_keys(o, allowed, where, err);
        if (r < 0)
                return r;
        if (!url_valid(json_object_get(o, "issuer")))
                return trove_error_set(err, EINVAL, "%s: \"issuer\" must be an http(s) URL", where);
        is->issuer = strdup(json_string_value(json_object_get(o, "issuer")));
        if (!is->issuer)
                return trove_error_set(err, ENOMEM, "out of memory");
        r = strings(json_object_get(o, "audiences"), OIDC_AUD_MAX, &is->audiences, &is->n_audiences, where,
                    "audiences", err);
        if (r < 0)
                return r;
        if (json_object_get(o, "jwksUri")) {
                if (!url_valid(json_object_get(o, "jwksUri")))
                        return trove_error_set(err, EINVAL, "%s: \"jwksUri\" must be an http(s) URL", where);
                is->jwks_uri = strdup(json_string_value(json_object_get(o, "jwksUri")));
                if (!is->jwks_uri)
                        return trove_error_set(err, ENOMEM, "out of memory");
        }
        r = seconds(o, "jwksCacheSeconds", 1, 86400, 3600, &n, where, err);
        if (r < 0)
                return r;
        is->cache_sec = (unsigned) n;
        r = seconds(o, "jwksRefetchSeconds", 0, 3600, 30, &n, where, err);
        if (r < 0)
                return r;
        is->refetch_sec = (unsigned) n;
        return 0;
}

static int parse_rule(const struct oidcpolicy *p, json_t *o, struct oidcpolicy_rule *ru, const char *where,
                      struct trove_error *err) {
        static const char *const allowed[] = { "issuer", "claims", "caches", "perms", NULL };
        _cleanup_(token_claims_freep) struct token_claims *scratch = NULL;
        json_t *claims, *perms, *v;
        const char *key;
        size_t i;
        int r;

        if (!json_is_object(o))
                return trove_error_set(err, EINVAL, "%s is not an object", where);
        r = only_keys(o, allowed, where, err);
        if (r < 0)
                return r;
        v = json_object_get(o, "issuer");
        r = text_valid(v) ? oidcpolicy_find_issuer(p, json_string_value(v)) : -ENOENT;
        if (r < 0)
                return trove_error_set(err, EINVAL, "%s: \"issuer\" is not one of the configured issuers", where);
        ru->issuer = (size_t) r;

        claims = json_object_get(o, "claims");
        if (!json_is_object(claims) || json_object_size(claims) == 0 ||
            json_object_size(claims) > OIDCPOLICY_RULE_CLAIMS_MAX)
                return trove_error_set(err, EINVAL, "%s: \"claims\" must map 1..%d claim names to patterns", where,
                                       OIDCPOLICY_RULE_CLAIMS_MAX);
        ru->claims = calloc(json_object_size(claims), sizeof *ru->claims);
        if (!ru->claims)
                return trove_error_set(err, ENOMEM, "out of memory");
        json_object_foreach(claims, key, v) {
                struct oidcpolicy_claim *c = &ru->claims[ru->n_claims];
                if (!key[0] || strlen(key) > OIDCPOLICY_STRING_MAX || !text_valid(v))
                        return trove_error_set(err, EINVAL, "%s: claim \"%.64s\" needs a non-empty string pattern",
                                               where, key);
                c->name = strdup(key);
                c->pattern = strdup(json_string_value(v));
                ru->n_claims++;
                if (!c->name || !c->pattern)
                        return trove_error_set(err, ENOMEM, "out of memory");
        }

        r = strings(json_object_get(o, "caches"), OIDCPOLICY_RULE_CACHES_MAX, &ru->caches, &ru->n_caches, where,
                    "caches", err);
        if (r < 0)
                return r;
        perms = json_object_get(o, "perms");
        if (!json_is_array(perms) || json_array_size(perms) == 0 || json_array_size(perms) > _TOKEN_PERM_MAX)
                return trove_error_set(err, EINVAL, "%s: \"perms\" must be an array of permission names", where);
        json_array_foreach(perms, i, v) {
                int perm = token_perm_from_string(json_string_value(v));
                if (perm < 0)
                        return trove_error_set(err, EINVAL, "%s: unknown permission in \"perms\"", where);
                ru->perms |= TOKEN_PERM_BIT(perm);
        }
        /* Cache patterns must be what a token can carry. */
        r = token_claims_new(NULL, 1, &scratch);
        if (r < 0)
                return trove_error_set(err, -r, "out of memory");
        for (i = 0; i < ru->n_caches; i++)
                if (token_claims_grant(scratch, ru->caches[i], ru->perms) < 0)
                        return trove_error_set(err, EINVAL, "%s: \"%.64s\" is not a usable cache pattern", where,
                                               ru->caches[i]);
        return 0;
}

int oidcpolicy_parse(const void *text, size_t n, struct oidcpolicy **ret, struct trove_error *err) {
        static const char *const allowed[] = { "maxValidSeconds", "issuers", "rules", NULL };
        _cleanup_(oidcpolicy_freep) struct oidcpolicy *p = NULL;
        json_t *j, *issuers, *rules, *v;
        json_error_t e;
        char where[64];
        size_t i;
        int r;

        if (n > OIDCPOLICY_TEXT_MAX)
                return trove_error_set(err, E2BIG, "larger than %u bytes", OIDCPOLICY_TEXT_MAX);
        j = json_loadb(text, n, JSON_REJECT_DUPLICATES, &e);
        if (!j)
                return trove_error_set(err, EINVAL, "not JSON: %s (line %d)", e.text, e.line);
        if (!json_is_object(j)) {
                r = trove_error_set(err, EINVAL, "not a JSON object");
                goto out;
        }
        r = only_keys(j, allowed, "top level", err);
        if (r < 0)
                goto out;
        p = calloc(1, sizeof *p);
        if (!p) {
                r = trove_error_set(err, ENOMEM, "out of memory");
                goto out;
        }
        r = seconds(j, "maxValidSeconds", 60, OIDCPOLICY_VALID_MAX, 3600, &p->max_valid_sec, "top level", err);
        if (r < 0)
                goto out;
        issuers = json_object_get(j, "issuers");
        if (!json_is_array(issuers) || json_array_size(issuers) == 0 ||
            json_array_size(issuers) > OIDCPOLICY_ISSUERS_MAX) {
                r = trove_error_set(err, EINVAL, "\"issuers\" must be an array of 1..%d issuers",
                                    OIDCPOLICY_ISSUERS_MAX);
                goto out;
        }
        p->issuers = calloc(json_array_size(issuers), sizeof *p->issuers);
        if (!p->issuers) {
                r = trove_error_set(err, ENOMEM, "out of memory");
                goto out;
        }
        json_array_foreach(issuers, i, v) {
                snprintf(where, sizeof where, "issuers[%zu]", i);
                p->n_issuers++;
                r = parse_issuer(v, &p->issuers[i], where, err);
                if (r < 0)
                        goto out;
                for (size_t k = 0; k < i; k++)
                        if (streq(p->issuers[k].issuer, p->issuers[i].issuer)) {
                                r = trove_error_set(err, EINVAL, "%s: issuer listed twice", where);
                                goto out;
                        }
        }
        rules = json_object_get(j, "rules");
        if (!json_is_array(rules) || json_array_size(rules) > OIDCPOLICY_RULES_MAX) {
                r = trove_error_set(err, EINVAL, "\"rules\" must be an array of at most %d rules",
                                    OIDCPOLICY_RULES_MAX);
                goto out;
        }
        p->rules = calloc(json_array_size(rules) + 1, sizeof *p->rules);
        if (!p->rules) {
                r = trove_error_set(err, ENOMEM, "out of memory");
                goto out;
        }
        json_array_foreach(rules, i, v) {
                snprintf(where, sizeof where, "rules[%zu]", i);
                p->n_rules++;
                r = parse_rule(p, v, &p->rules[i], where, err);
                if (r < 0)
                        goto out;
        }
        *ret = TAKE_PTR(p);
        r = 0;
out:
        json_decref(j);
        return r;
}

int oidcpolicy_load(const char *path, struct oidcpolicy **ret, struct trove_error *err) {
        _cleanup_free_ char *text = NULL;
        struct trove_error perr = {};
        size_t n = 0;
        FILE *f;
        int r;

        f = fopen(path, "re");
        if (!f)
                return trove_error_set(err, errno, "cannot open %s: %m", path);
        text = malloc(OIDCPOLICY_TEXT_MAX + 1);
        if (!text) {
                fclose(f);
                return trove_error_set(err, ENOMEM, "out of memory");
        }
        n = fread(text, 1, OIDCPOLICY_TEXT_MAX + 1, f);
        r = ferror(f) ? -EIO : 0;
        fclose(f);
        if (r < 0)
                return trove_error_set(err, EIO, "cannot read %s", path);
        if (n > OIDCPOLICY_TEXT_MAX)
                return trove_error_set(err, E2BIG, "%s is larger than %u bytes", path, OIDCPOLICY_TEXT_MAX);
        r = oidcpolicy_parse(text, n, ret, &perr);
        if (r < 0)
                return trove_error_set(err, -r, "%s: %s", path, perr.msg);
        return 0;
}

int oidcpolicy_find_issuer(const struct oidcpolicy *p, const char *iss) {
        if (!p || !iss)
                return -ENOENT;
        for (size_t i = 0; i < p->n_issuers; i++)
                if (streq(p->issuers[i].issuer, iss))
                        return (int) i;
        return -ENOENT;
}

static bool rule_matches(const struct oidcpolicy_rule *ru, const struct oidc_jwt *j) {
        for (size_t c = 0; c < ru->n_claims; c++) {
                const char *v = oidc_jwt_claim_string(j, ru->claims[c].name);
                if (!v || !token_pattern_match(ru->claims[c].pattern, v))
                        return false;
        }
        return true;
}

int oidcpolicy_grant(const struct oidcpolicy *p, size_t issuer, const struct oidc_jwt *j,
                     struct token_claims *claims) {
        int matched = 0, r;

        for (size_t i = 0; i < p->n_rules; i++) {
                const struct oidcpolicy_rule *ru = &p->rules[i];
                if (ru->issuer != issuer || !rule_matches(ru, j))
                        continue;
                for (size_t c = 0; c < ru->n_caches; c++) {
                        r = token_claims_grant(claims, ru->caches[c], ru->perms);
                        if (r < 0)
                                return r;
                }
                matched++;
        }
        return matched;
}
