/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>

#include "trove/buf.h"
#include "trove/token.h"

static const char *const perm_names[_TOKEN_PERM_MAX] = {
        [TOKEN_PERM_PULL] = "pull",
        [TOKEN_PERM_PUSH] = "push",
        [TOKEN_PERM_DELETE] = "delete",
        [TOKEN_PERM_CREATE] = "create",
        [TOKEN_PERM_CONFIGURE] = "configure",
        [TOKEN_PERM_DESTROY] = "destroy",
};

/* The only header trove writes; verification accepts any header that
 * satisfies the rules in token.h. */
static const char token_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

#define HS256_LEN crypto_auth_hmacsha256_BYTES

const char *token_perm_to_string(enum token_perm p) {
        if ((unsigned) p >= _TOKEN_PERM_MAX)
                return NULL;
        return perm_names[p];
}

int token_perm_from_string(const char *s) {
        if (!s)
                return -EINVAL;
        for (int i = 0; i < _TOKEN_PERM_MAX; i++)
                if (streq(s, perm_names[i]))
                        return i;
        return -EINVAL;
}

static bool pattern_valid(const char *p) {
        size_t n = strnlen(p, TOKEN_PATTERN_MAX + 1);

        if (n == 0 || n > TOKEN_PATTERN_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) p[i] <= 0x20 || (unsigned char) p[i] >= 0x7f)
                        return false;
        return true;
}

bool token_pattern_match(const char *pattern, const char *name) {
        const char *p = pattern, *n = name;
        const char *star = NULL, *resume = NULL;

        /* Greedy match with backtracking to the last '*' only: O(|p|*|n|),
         * no recursion, so a hostile pattern cannot blow up. */
        while (*n) {
                if (*p == '*') {
                        star = p++;
                        resume = n;
                } else if (*p == *n) {
                        p++;
                        n++;
                } else if (star) {
                        p = star + 1;
                        n = ++resume;
                } else
                        return false;
        }
        while (*p == '*')
                p++;
        return *p == 0;
}

int token_claims_new(const char *sub, int64_t exp, struct token_claims **ret) {
        struct token_claims *c;

        if (sub && strnlen(sub, TOKEN_SUB_MAX + 1) > TOKEN_SUB_MAX)
                return -EINVAL;
        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        if (sub) {
                c->sub = strdup(sub);
                if (!c->sub) {
                        free(c);
                        return -ENOMEM;
                }
        }
        c->exp = exp;
        *ret = c;
        return 0;
}

void token_claims_free(struct token_claims *c) {
        if (!c)
                return;
        for (size_t i = 0; i < c->n_grants; i++)
                free(c->grants[i].pattern);
        free(c->grants);
        free(c->sub);
        free(c);
}

int token_claims_grant(struct token_claims *c, const char *pattern, uint32_t perms) {
        struct token_grant *g;
        char *p;

        if (!c || !pattern || !pattern_valid(pattern) || (perms & ~TOKEN_PERMS_ALL))
                return -EINVAL;
        for (size_t i = 0; i < c->n_grants; i++)
                if (streq(c->grants[i].pattern, pattern)) {
                        c->grants[i].perms |= perms;
                        return 0;
                }
        if (c->n_grants >= TOKEN_PATTERNS_MAX)
                return -E2BIG;
        p = strdup(pattern);
        if (!p)
                return -ENOMEM;
        g = reallocarray(c->grants, c->n_grants + 1, sizeof *g);
        if (!g) {
                free(p);
                return -ENOMEM;
        }
        c->grants = g;
        c->grants[c->n_grants++] = (struct token_grant){ .pattern = p, .perms = perms };
        return 0;
}

bool token_permits(const struct token_claims *c, const char *cache_name, enum token_perm perm) {
        if (!c || !cache_name || (unsigned) perm >= _TOKEN_PERM_MAX)
                return false;
        for (size_t i = 0; i < c->n_grants; i++)
                if ((c->grants[i].perms & TOKEN_PERM_BIT(perm)) &&
                    token_pattern_match(c->grants[i].pattern, cache_name))
                        return true;
        return false;
}

static void hs256(const void *secret, size_t secret_len, const void *msg, size_t n,
                  uint8_t mac[HS256_LEN]) {
        crypto_auth_hmacsha256_state st;

        crypto_auth_hmacsha256_init(&st, secret, secret_len);
        crypto_auth_hmacsha256_update(&st, msg, n);
        crypto_auth_hmacsha256_final(&st, mac);
        sodium_memzero(&st, sizeof st);
}

static int b64url_append(struct buf *b, const void *p, size_t n) {
        size_t enc = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        int r;

        if (n > TOKEN_TEXT_MAX)
                return -E2BIG;
        r = buf_reserve(b, enc);
        if (r < 0)
                return r;
        sodium_bin2base64((char *) b->data + b->len, enc, p, n,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        b->len += enc - 1;
        return 0;
}

static json_t *claims_to_json(const struct token_claims *c) {
        json_t *o = json_object(), *perms = NULL;

        if (!o)
                return NULL;
        if (c->sub && json_object_set_new(o, "sub", json_string(c->sub)) < 0)
                goto fail;
        if (json_object_set_new(o, "exp", json_integer(c->exp)) < 0)
                goto fail;
        if (c->has_nbf && json_object_set_new(o, "nbf", json_integer(c->nbf)) < 0)
                goto fail;
        if (c->has_iat && json_object_set_new(o, "iat", json_integer(c->iat)) < 0)
                goto fail;
        perms = json_object();
        if (!perms)
                goto fail;
        for (size_t i = 0; i < c->n_grants; i++) {
                json_t *a = json_array();

                if (!a || json_object_set_new(perms, c->grants[i].pattern, a) < 0)
                        goto fail;
                for (int p = 0; p < _TOKEN_PERM_MAX; p++)
                        if ((c->grants[i].perms & TOKEN_PERM_BIT(p)) &&
                            json_array_append_new(a, json_string(perm_names[p])) < 0)
                                goto fail;
        }
        if (json_object_set_new(o, TOKEN_PERMS_CLAIM, perms) < 0) {
                perms = NULL; /* consumed even on failure */
                goto fail;
        }
        return o;
fail:
        json_decref(perms);
        json_decref(o);
        return NULL;
}

int token_encode(const struct token_claims *claims, const void *secret, size_t secret_len,
                 char **ret) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(TOKEN_TEXT_MAX);
        uint8_t mac[HS256_LEN];
        json_t *o;
        char *payload;
        int r;

        if (!claims || !ret || !secret || secret_len < TOKEN_SECRET_MIN)
                return -EINVAL;
        if (claims->n_grants > TOKEN_PATTERNS_MAX)
                return -E2BIG;
        for (size_t i = 0; i < claims->n_grants; i++)
                if (!pattern_valid(claims->grants[i].pattern) ||
                    (claims->grants[i].perms & ~TOKEN_PERMS_ALL))
                        return -EINVAL;
        if (claims->sub && strnlen(claims->sub, TOKEN_SUB_MAX + 1) > TOKEN_SUB_MAX)
                return -EINVAL;

        o = claims_to_json(claims);
        if (!o)
                return -ENOMEM;
        payload = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (!payload)
                return -ENOMEM;

        r = b64url_append(&b, token_header, strlen(token_header));
        if (r >= 0)
                r = buf_append(&b, ".", 1);
        if (r >= 0)
                r = b64url_append(&b, payload, strlen(payload));
        free(payload);
        if (r >= 0) {
                hs256(secret, secret_len, b.data, b.len, mac);
                r = buf_append(&b, ".", 1);
        }
        if (r >= 0)
                r = b64url_append(&b, mac, sizeof mac);
        if (r < 0)
                return r;
        return buf_steal(&b, ret, NULL);
}

/* Decodes one base64url part (no padding, canonical) into a heap buffer,
 * NUL-terminated so that JSON can be parsed from it. */
static int b64url_decode(const char *s, size_t n, uint8_t **ret, size_t *ret_len) {
        const char *end;
        size_t len;
        uint8_t *p;

        p = malloc(n + 1);
        if (!p)
                return -ENOMEM;
        if (sodium_base642bin(p, n, s, n, NULL, &len, &end,
                              sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
            end != s + n) {
                free(p);
                return -EINVAL;
        }
        p[len] = 0;
        *ret = p;
        *ret_len = len;
        return 0;
}

static int json_int64(json_t *o, const char *key, bool required, bool *ret_has, int64_t *ret,
                      struct trove_error *err) {
        json_t *v = json_object_get(o, key);

        if (!v) {
                if (required)
                        return trove_error_set(err, EINVAL, "token has no \"%s\" claim", key);
                if (ret_has)
                        *ret_has = false;
                return 0;
        }
        if (!json_is_integer(v))
                return trove_error_set(err, EINVAL,
                                       "token claim \"%s\" is not an integer number of seconds", key);
        *ret = (int64_t) json_integer_value(v);
        if (ret_has)
                *ret_has = true;
        return 0;
}

static int parse_perms(json_t *perms, struct token_claims *c, struct trove_error *err) {
        const char *pattern;
        json_t *arr;

        if (!json_is_object(perms))
                return trove_error_set(err, EINVAL, "token claim \"%s\" is not an object",
                                       TOKEN_PERMS_CLAIM);
        if (json_object_size(perms) > TOKEN_PATTERNS_MAX)
                return trove_error_set(err, EINVAL, "token has %zu cache patterns, at most %d allowed",
                                       json_object_size(perms), TOKEN_PATTERNS_MAX);
        json_object_foreach(perms, pattern, arr) {
                uint32_t bits = 0;
                size_t i;
                json_t *v;
                int r;

                if (!pattern_valid(pattern))
                        return trove_error_set(err, EINVAL,
                                               "token has an invalid cache pattern (empty, longer than %d bytes, or with spaces or control characters)",
                                               TOKEN_PATTERN_MAX);
                if (!json_is_array(arr))
                        return trove_error_set(err, EINVAL,
                                               "permissions of cache pattern \"%s\" are not an array",
                                               pattern);
                json_array_foreach(arr, i, v) {
                        int p = json_is_string(v) ? token_perm_from_string(json_string_value(v))
                                                  : -EINVAL;
                        if (p < 0)
                                return trove_error_set(err, EINVAL,
                                                       "unknown permission in cache pattern \"%s\" (known: pull, push, delete, create, configure, destroy)",
                                                       pattern);
                        bits |= TOKEN_PERM_BIT(p);
                }
                r = token_claims_grant(c, pattern, bits);
                if (r < 0)
                        return trove_error_set(err, r, "cannot store cache pattern \"%s\"", pattern);
        }
        return 0;
}

int token_decode_verify(const char *text, const void *secret, size_t secret_len, int64_t now,
                        struct token_claims **ret, struct trove_error *err) {
        _cleanup_(token_claims_freep) struct token_claims *c = NULL;
        _cleanup_free_ uint8_t *hdr = NULL, *payload = NULL, *sig = NULL;
        uint8_t mac[HS256_LEN];
        const char *dot1, *dot2, *alg;
        size_t len, hdr_len, payload_len, sig_len;
        json_error_t jerr;
        json_t *h, *o, *v;
        int r;

        if (!text || !ret)
                return trove_error_set(err, EINVAL, "no token");
        if (!secret || secret_len < TOKEN_SECRET_MIN)
                return trove_error_set(err, EINVAL, "server token secret is shorter than %d bytes",
                                       TOKEN_SECRET_MIN);
        len = strnlen(text, TOKEN_TEXT_MAX + 1);
        if (len > TOKEN_TEXT_MAX)
                return trove_error_set(err, EINVAL, "token is longer than %d bytes", TOKEN_TEXT_MAX);

        dot1 = memchr(text, '.', len);
        dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t) (dot1 + 1 - text)) : NULL;
        if (!dot2 || memchr(dot2 + 1, '.', len - (size_t) (dot2 + 1 - text)))
                return trove_error_set(err, EINVAL,
                                       "token is not a JWT (want three base64url parts separated by '.')");
        if (dot1 == text || dot2 == dot1 + 1)
                return trove_error_set(err, EINVAL, "token has an empty header or payload");
        if (dot2 + 1 == text + len)
                return trove_error_set(err, EINVAL, "token is unsigned (empty signature part)");

        /* Header: only what is needed to know how to check the signature. */
        if (b64url_decode(text, (size_t) (dot1 - text), &hdr, &hdr_len) < 0)
                return trove_error_set(err, EINVAL, "token header is not valid base64url");
        h = json_loadb((const char *) hdr, hdr_len, JSON_REJECT_DUPLICATES, &jerr);
        if (!h || !json_is_object(h)) {
                json_decref(h);
                return trove_error_set(err, EINVAL, "token header is not a JSON object");
        }
        v = json_object_get(h, "alg");
        alg = json_is_string(v) ? json_string_value(v) : NULL;
        if (!alg || !streq(alg, "HS256")) {
                r = trove_error_set(err, EINVAL,
                                    alg && strcasecmp(alg, "none") == 0
                                            ? "unsigned tokens (alg \"none\") are refused"
                                            : "token algorithm is not HS256");
                json_decref(h);
                return r;
        }
        v = json_object_get(h, "typ");
        if (v && (!json_is_string(v) || strcasecmp(json_string_value(v), "JWT") != 0)) {
                json_decref(h);
                return trove_error_set(err, EINVAL, "token header typ is not JWT");
        }
        if (json_object_get(h, "crit")) {
                json_decref(h);
                return trove_error_set(err, EINVAL,
                                       "token header has critical extensions (crit), which are not supported");
        }
        json_decref(h);

        if (b64url_decode(dot2 + 1, len - (size_t) (dot2 + 1 - text), &sig, &sig_len) < 0 ||
            sig_len != HS256_LEN)
                return trove_error_set(err, EINVAL,
                                       "token signature is not a base64url HS256 MAC (32 bytes)");
        hs256(secret, secret_len, text, (size_t) (dot2 - text), mac);
        r = sodium_memcmp(mac, sig, HS256_LEN);
        sodium_memzero(mac, sizeof mac);
        if (r != 0)
                return trove_error_set(err, EPERM,
                                       "token signature does not match (not issued by this server, or altered)");

        /* Authenticated from here on; still parsed with care. */
        if (b64url_decode(dot1 + 1, (size_t) (dot2 - dot1 - 1), &payload, &payload_len) < 0)
                return trove_error_set(err, EINVAL, "token payload is not valid base64url");
        o = json_loadb((const char *) payload, payload_len, JSON_REJECT_DUPLICATES, &jerr);
        if (!o || !json_is_object(o)) {
                json_decref(o);
                return trove_error_set(err, EINVAL, "token payload is not a JSON object");
        }

        r = token_claims_new(NULL, 0, &c);
        if (r < 0)
                goto out;
        v = json_object_get(o, "sub");
        if (v) {
                if (!json_is_string(v) || json_string_length(v) > TOKEN_SUB_MAX) {
                        r = trove_error_set(err, EINVAL, "token claim \"sub\" is not a string of at most %d bytes",
                                            TOKEN_SUB_MAX);
                        goto out;
                }
                c->sub = strdup(json_string_value(v));
                if (!c->sub) {
                        r = trove_error_set(err, ENOMEM, "out of memory");
                        goto out;
                }
        }
        r = json_int64(o, "exp", true, NULL, &c->exp, err);
        if (r >= 0)
                r = json_int64(o, "nbf", false, &c->has_nbf, &c->nbf, err);
        if (r >= 0)
                r = json_int64(o, "iat", false, &c->has_iat, &c->iat, err);
        if (r < 0)
                goto out;
        v = json_object_get(o, TOKEN_PERMS_CLAIM);
        if (v) {
                r = parse_perms(v, c, err);
                if (r < 0)
                        goto out;
        }

        /* The claims are any int64: the differences are computed without
         * signed overflow (exp = INT64_MIN at a positive now would wrap). */
        if (now >= c->exp) {
                r = trove_error_set(err, EKEYEXPIRED, "token expired %" PRIu64 " seconds ago",
                                    (uint64_t) now - (uint64_t) c->exp);
                goto out;
        }
        if (c->has_nbf && now < c->nbf) {
                r = trove_error_set(err, EKEYREJECTED, "token is not valid for another %" PRIu64 " seconds",
                                    (uint64_t) c->nbf - (uint64_t) now);
                goto out;
        }
        *ret = TAKE_PTR(c);
        r = 0;
out:
        json_decref(o);
        return r;
}

void token_secret_wipe(struct token_secret *s) {
        if (s)
                sodium_memzero(s, sizeof *s);
}

int token_secret_load(const char *path, struct token_secret *ret, struct trove_error *err) {
        _cleanup_close_ int fd = -1;
        char text[TOKEN_SECRET_FILE_MAX + 1];
        struct token_secret s = {};
        const char *end;
        size_t n = 0, a, b;
        struct stat st;
        int r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return trove_error_set(err, errno, "cannot open token secret %s: %m", path);
        if (fstat(fd, &st) < 0)
                return trove_error_set(err, errno, "cannot stat token secret %s: %m", path);
        if (!S_ISREG(st.st_mode))
                return trove_error_set(err, EINVAL, "token secret %s is not a regular file", path);
        if (st.st_mode & (S_IROTH | S_IWOTH))
                return trove_error_set(err, EPERM,
                                       "token secret %s is accessible to other users (mode %04o); chmod 600 it",
                                       path, (unsigned) (st.st_mode & 07777));
        for (;;) {
                ssize_t k = read(fd, text + n, sizeof text - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = trove_error_set(err, errno, "cannot read token secret %s: %m", path);
                        goto out;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
                if (n >= sizeof text) {
                        r = trove_error_set(err, EINVAL, "token secret %s is larger than %d bytes",
                                            path, TOKEN_SECRET_FILE_MAX);
                        goto out;
                }
        }
        a = 0;
        b = n;
        while (a < b && strchr(" \t\r\n", text[a]))
                a++;
        while (b > a && strchr(" \t\r\n", text[b - 1]))
                b--;
        /* Padding is optional: at most two '='. */
        for (int pad = 0; pad < 2 && b > a && text[b - 1] == '='; pad++)
                b--;
        if (sodium_base642bin(s.key, sizeof s.key, text + a, b - a, NULL, &s.len, &end,
                              sodium_base64_VARIANT_ORIGINAL_NO_PADDING) != 0 ||
            end != text + b) {
                r = trove_error_set(err, EINVAL,
                                    "token secret %s is not base64 of at most %d bytes", path,
                                    TOKEN_SECRET_MAX);
                goto out;
        }
        if (s.len < TOKEN_SECRET_MIN) {
                r = trove_error_set(err, EINVAL,
                                    "token secret %s holds %zu bytes, at least %d are required",
                                    path, s.len, TOKEN_SECRET_MIN);
                goto out;
        }
        *ret = s;
        r = 0;
out:
        sodium_memzero(text, sizeof text);
        sodium_memzero(&s, sizeof s);
        return r;
}

int token_secret_generate(const char *path, struct trove_error *err) {
        char text[sodium_base64_ENCODED_LEN(TOKEN_SECRET_MIN, sodium_base64_VARIANT_ORIGINAL) + 1];
        uint8_t key[TOKEN_SECRET_MIN];
        _cleanup_close_ int fd = -1;
        size_t n, off = 0;
        int r = 0;

        if (sodium_init() < 0)
                return trove_error_set(err, EIO, "libsodium cannot be initialised");
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0)
                return trove_error_set(err, errno, "cannot create token secret %s: %m", path);
        randombytes_buf(key, sizeof key);
        sodium_bin2base64(text, sizeof text - 1, key, sizeof key, sodium_base64_VARIANT_ORIGINAL);
        sodium_memzero(key, sizeof key);
        n = strlen(text);
        text[n++] = '\n';
        if (fchmod(fd, 0600) < 0)
                r = trove_error_set(err, errno, "cannot chmod token secret %s: %m", path);
        while (r == 0 && off < n) {
                ssize_t k = write(fd, text + off, n - off);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = trove_error_set(err, errno, "cannot write token secret %s: %m", path);
                } else
                        off += (size_t) k;
        }
        if (r == 0 && fsync(fd) < 0)
                r = trove_error_set(err, errno, "cannot sync token secret %s: %m", path);
        sodium_memzero(text, sizeof text);
        if (r < 0)
                (void) unlink(path);
        return r;
}
