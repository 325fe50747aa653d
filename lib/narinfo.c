/* SPDX-License-Identifier: Apache-2.0 */
/*
 * narinfo.c - Nix's .narinfo documents, following libstore/nar-info.cc
 * (parse, to_string) and path-info.cc (fingerprint) of Nix 2.x.
 */
#include <inttypes.h>
#include <stdio.h>

#include "trove/buf.h"
#include "trove/narinfo.h"
#include "trove/storepath.h"

/* A rendered narinfo of maximal size still fits: references and sigs are
 * bounded by NARINFO_REFS_MAX and NARINFO_SIGS_MAX and the parser refuses
 * anything above NARINFO_MAX_SIZE, so the renderer may use twice that. */
#define RENDER_MAX (2 * (size_t) NARINFO_MAX_SIZE)

static void strv_free(char **v, size_t n) {
        if (!v)
                return;
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

void narinfo_free(struct narinfo *ni) {
        if (!ni)
                return;
        free(ni->store_path);
        free(ni->url);
        free(ni->compression);
        free(ni->file_hash);
        strv_free(ni->references, ni->n_references);
        free(ni->deriver);
        free(ni->system);
        strv_free(ni->sigs, ni->n_sigs);
        free(ni->ca);
        memset(ni, 0, sizeof *ni);
}

static int cmp_strp(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Decimal, no sign, no spaces, fits in 64 bits. */
static int parse_u64(const char *s, size_t n, uint64_t *ret) {
        uint64_t v = 0;

        if (n == 0 || n > 20)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                if (MUL_OVERFLOW(v, (uint64_t) 10, &v) ||
                    ADD_OVERFLOW(v, (uint64_t) (s[i] - '0'), &v))
                        return -ERANGE;
        }
        *ret = v;
        return 0;
}

/* [A-Za-z0-9._+-]+: Compression and the like. */
static bool is_token(const char *s, size_t n) {
        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '+' || c == '-'))
                        return false;
        }
        return true;
}

static bool has_byte(const char *s, size_t n, char c) {
        return memchr(s, c, n) != NULL;
}

/* Keys are what Nix could write: letters, digits and '-'. */
static bool is_key(const char *s, size_t n) {
        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
                        return false;
        }
        return true;
}

enum {
        SEEN_STORE_PATH = 1 << 0,
        SEEN_URL = 1 << 1,
        SEEN_COMPRESSION = 1 << 2,
        SEEN_FILE_HASH = 1 << 3,
        SEEN_FILE_SIZE = 1 << 4,
        SEEN_NAR_HASH = 1 << 5,
        SEEN_NAR_SIZE = 1 << 6,
        SEEN_REFERENCES = 1 << 7,
        SEEN_DERIVER = 1 << 8,
        SEEN_SYSTEM = 1 << 9,
        SEEN_CA = 1 << 10,
};

static const struct {
        const char *key;
        unsigned flag;
} singular_keys[] = {
        { "StorePath", SEEN_STORE_PATH }, { "URL", SEEN_URL },
        { "Compression", SEEN_COMPRESSION }, { "FileHash", SEEN_FILE_HASH },
        { "FileSize", SEEN_FILE_SIZE }, { "NarHash", SEEN_NAR_HASH },
        { "NarSize", SEEN_NAR_SIZE }, { "References", SEEN_REFERENCES },
        { "Deriver", SEEN_DERIVER }, { "System", SEEN_SYSTEM },
        { "CA", SEEN_CA },
};

static int parse_hash_value(const char *v, const char *key, unsigned line, uint8_t out[SHA256_DIGEST_LEN],
                            struct trove_error *err) {
        int r = hash_parse(v, out);
        if (r == -EOPNOTSUPP)
                return trove_error_set(err, r, "line %u: %s: only SHA-256 is supported", line, key);
        if (r < 0)
                return trove_error_set(err, -EINVAL, "line %u: %s: malformed hash", line, key);
        return 0;
}

static int parse_references(struct narinfo *ni, const char *v, size_t vlen, unsigned line,
                            struct trove_error *err) {
        size_t n = 0;
        struct storepath sp;
        int r;

        if (vlen == 0)
                return 0;
        n = 1;
        for (size_t i = 0; i < vlen; i++)
                if (v[i] == ' ')
                        n++;
        if (n > NARINFO_REFS_MAX)
                return trove_error_set(err, -E2BIG, "line %u: more than %u references", line,
                                       (unsigned) NARINFO_REFS_MAX);
        ni->references = calloc(n, sizeof(char *));
        if (!ni->references)
                return -ENOMEM;
        const char *p = v, *end = v + vlen;
        for (size_t k = 0; k < n; k++) {
                const char *sp_end = memchr(p, ' ', (size_t) (end - p));
                size_t l = sp_end ? (size_t) (sp_end - p) : (size_t) (end - p);
                if (l == 0)
                        return trove_error_set(err, -EINVAL,
                                               "line %u: References: empty entry (extra space)", line);
                r = storepath_parse_basename(p, l, &sp);
                if (r < 0)
                        return trove_error_set(err, -EINVAL,
                                               "line %u: References: invalid store path name '%.*s'", line,
                                               (int) MIN(l, (size_t) 80), p);
                ni->references[k] = strndup(p, l);
                if (!ni->references[k])
                        return -ENOMEM;
                ni->n_references = k + 1;
                p += l + 1;
        }
        /* Distinct: Nix keeps a set, so a repeated reference means the
         * document did not come from Nix. */
        _cleanup_free_ char **sorted = malloc(n * sizeof(char *));
        if (!sorted)
                return -ENOMEM;
        memcpy(sorted, ni->references, n * sizeof(char *));
        qsort(sorted, n, sizeof(char *), cmp_strp);
        for (size_t k = 1; k < n; k++)
                if (streq(sorted[k - 1], sorted[k]))
                        return trove_error_set(err, -EINVAL, "line %u: References: '%s' listed twice", line,
                                               sorted[k]);
        return 0;
}

static int parse_field(struct narinfo *ni, const char *key, const char *v, size_t vlen, unsigned line,
                       const char *store_dir, struct trove_error *err) {
        struct storepath sp;
        int r;

        if (streq(key, "StorePath")) {
                _cleanup_free_ char *s = strndup(v, vlen);
                if (!s)
                        return -ENOMEM;
                if (storepath_parse(store_dir, s, &sp) < 0)
                        return trove_error_set(err, -EINVAL, "line %u: StorePath: not a store path under %s",
                                               line, store_dir);
                ni->store_path = TAKE_PTR(s);
        } else if (streq(key, "URL")) {
                if (vlen == 0 || has_byte(v, vlen, ' '))
                        return trove_error_set(err, -EINVAL, "line %u: URL: empty or contains a space", line);
                if (!(ni->url = strndup(v, vlen)))
                        return -ENOMEM;
        } else if (streq(key, "Compression")) {
                if (!is_token(v, vlen))
                        return trove_error_set(err, -EINVAL, "line %u: Compression: invalid method", line);
                if (!(ni->compression = strndup(v, vlen)))
                        return -ENOMEM;
        } else if (streq(key, "FileHash") || streq(key, "NarHash")) {
                uint8_t h[SHA256_DIGEST_LEN];
                _cleanup_free_ char *s = strndup(v, vlen);
                if (!s)
                        return -ENOMEM;
                r = parse_hash_value(s, key, line, h, err);
                if (r < 0)
                        return r;
                if (streq(key, "NarHash"))
                        memcpy(ni->nar_hash, h, sizeof h);
                else {
                        char txt[HASH_STRING_MAX];
                        hash_format(h, HASH_NIX32, txt);
                        if (!(ni->file_hash = strdup(txt)))
                                return -ENOMEM;
                }
        } else if (streq(key, "FileSize") || streq(key, "NarSize")) {
                uint64_t u;
                r = parse_u64(v, vlen, &u);
                if (r < 0)
                        return trove_error_set(err, -EINVAL, "line %u: %s: %s", line, key,
                                               r == -ERANGE ? "number too large" : "not a decimal number");
                if (streq(key, "FileSize"))
                        ni->file_size = u;
                else
                        ni->nar_size = u;
        } else if (streq(key, "References")) {
                return parse_references(ni, v, vlen, line, err);
        } else if (streq(key, "Deriver")) {
                if (vlen == strlen("unknown-deriver") && memcmp(v, "unknown-deriver", vlen) == 0)
                        return 0;
                if (storepath_parse_basename(v, vlen, &sp) < 0)
                        return trove_error_set(err, -EINVAL, "line %u: Deriver: invalid store path name", line);
                if (!(ni->deriver = strndup(v, vlen)))
                        return -ENOMEM;
        } else if (streq(key, "System")) {
                if (vlen == 0 || has_byte(v, vlen, ' '))
                        return trove_error_set(err, -EINVAL, "line %u: System: empty or contains a space", line);
                if (!(ni->system = strndup(v, vlen)))
                        return -ENOMEM;
        } else if (streq(key, "Sig")) {
                if (signing_sig_check(v, vlen, NULL) < 0)
                        return trove_error_set(err, -EINVAL,
                                               "line %u: Sig: not '<key name>:<base64 signature>'", line);
                for (size_t i = 0; i < ni->n_sigs; i++)
                        if (strlen(ni->sigs[i]) == vlen && memcmp(ni->sigs[i], v, vlen) == 0)
                                return 0;
                if (ni->n_sigs >= NARINFO_SIGS_MAX)
                        return trove_error_set(err, -E2BIG, "line %u: more than %u signatures", line,
                                               (unsigned) NARINFO_SIGS_MAX);
                char **n = realloc(ni->sigs, (ni->n_sigs + 1) * sizeof(char *));
                if (!n)
                        return -ENOMEM;
                ni->sigs = n;
                if (!(ni->sigs[ni->n_sigs] = strndup(v, vlen)))
                        return -ENOMEM;
                ni->n_sigs++;
        } else if (streq(key, "CA")) {
                /* "text:<hash>" or "fixed:[r:]<hash>"; the hash may be of
                 * any algorithm, so only the shape is checked here. */
                if (!((vlen > 5 && memcmp(v, "text:", 5) == 0) || (vlen > 6 && memcmp(v, "fixed:", 6) == 0)) ||
                    has_byte(v, vlen, ' '))
                        return trove_error_set(err, -EINVAL,
                                               "line %u: CA: expected 'text:…' or 'fixed:…'", line);
                if (!(ni->ca = strndup(v, vlen)))
                        return -ENOMEM;
        }
        /* Anything else: ignored, as Nix does. */
        return 0;
}

int narinfo_parse(const char *text, size_t len, const char *store_dir, struct narinfo *ret,
                  struct trove_error *err) {
        _cleanup_(narinfo_free) struct narinfo ni = {};
        unsigned seen = 0, line = 0;
        const char *p = text, *end = text + len;
        int r;

        if (len > NARINFO_MAX_SIZE)
                return trove_error_set(err, -E2BIG, "narinfo larger than %u bytes", NARINFO_MAX_SIZE);
        if (len == 0)
                return trove_error_set(err, -EINVAL, "narinfo is empty");

        while (p < end) {
                const char *eol = memchr(p, '\n', (size_t) (end - p));
                line++;
                if (!eol)
                        return trove_error_set(err, -EINVAL, "line %u: missing newline at end", line);
                size_t llen = (size_t) (eol - p);
                for (size_t i = 0; i < llen; i++) {
                        unsigned char c = (unsigned char) p[i];
                        /* Nix writes only printable ASCII here; refusing the
                         * rest keeps control characters and invalid UTF-8
                         * out of logs, HTTP headers and database text. */
                        if (c < 0x20 || c >= 0x7f)
                                return trove_error_set(err, -EINVAL, "line %u: byte 0x%02x is not printable ASCII",
                                                       line, c);
                }
                const char *colon = memchr(p, ':', llen);
                if (!colon || colon + 1 >= eol || colon[1] != ' ')
                        return trove_error_set(err, -EINVAL, "line %u: expected 'Key: value'", line);
                size_t klen = (size_t) (colon - p);
                if (!is_key(p, klen) || klen > 64)
                        return trove_error_set(err, -EINVAL, "line %u: invalid key", line);
                char key[65];
                memcpy(key, p, klen);
                key[klen] = 0;
                for (size_t i = 0; i < ELEMENTSOF(singular_keys); i++) {
                        if (!streq(key, singular_keys[i].key))
                                continue;
                        if (seen & singular_keys[i].flag)
                                return trove_error_set(err, -EINVAL, "line %u: duplicate %s", line, key);
                        seen |= singular_keys[i].flag;
                }
                const char *v = colon + 2;
                r = parse_field(&ni, key, v, (size_t) (eol - v), line, store_dir, err);
                if (r < 0)
                        return r;
                p = eol + 1;
        }

        if (!(seen & SEEN_STORE_PATH))
                return trove_error_set(err, -EINVAL, "StorePath missing");
        if (!(seen & SEEN_URL))
                return trove_error_set(err, -EINVAL, "URL missing");
        if (!(seen & SEEN_NAR_HASH))
                return trove_error_set(err, -EINVAL, "NarHash missing");
        if (ni.nar_size == 0)
                return trove_error_set(err, -EINVAL, "NarSize missing or zero");

        *ret = ni;
        memset(&ni, 0, sizeof ni);
        return 0;
}

/* A value that a re-parse would read back unchanged: printable ASCII. */
static bool render_safe(const char *s) {
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || (unsigned char) *s >= 0x7f)
                        return false;
        return true;
}

static int sorted_copy(char *const *v, size_t n, char ***ret) {
        char **c = NULL;
        if (n > 0) {
                c = malloc(n * sizeof(char *));
                if (!c)
                        return -ENOMEM;
                memcpy(c, v, n * sizeof(char *));
                qsort(c, n, sizeof(char *), cmp_strp);
        }
        *ret = c;
        return 0;
}

int narinfo_render(const struct narinfo *ni, char **ret) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(RENDER_MAX);
        _cleanup_free_ char **refs = NULL, **sigs = NULL;
        char h[HASH_STRING_MAX];
        int r;

        if (!ni->store_path || !render_safe(ni->store_path))
                return -EINVAL;
        const char *opt[] = { ni->url, ni->compression, ni->file_hash, ni->deriver, ni->system, ni->ca };
        for (size_t i = 0; i < ELEMENTSOF(opt); i++)
                if (opt[i] && !render_safe(opt[i]))
                        return -EINVAL;
        for (size_t i = 0; i < ni->n_references; i++)
                if (!render_safe(ni->references[i]) || strchr(ni->references[i], ' ') || !ni->references[i][0])
                        return -EINVAL;
        for (size_t i = 0; i < ni->n_sigs; i++)
                if (!render_safe(ni->sigs[i]))
                        return -EINVAL;

        r = sorted_copy(ni->references, ni->n_references, &refs);
        if (r < 0)
                return r;
        r = sorted_copy(ni->sigs, ni->n_sigs, &sigs);
        if (r < 0)
                return r;

        r = buf_printf(&b, "StorePath: %s\n", ni->store_path);
        if (r >= 0 && ni->url)
                r = buf_printf(&b, "URL: %s\n", ni->url);
        if (r >= 0 && ni->compression)
                r = buf_printf(&b, "Compression: %s\n", ni->compression);
        if (r >= 0 && ni->file_hash)
                r = buf_printf(&b, "FileHash: %s\n", ni->file_hash);
        if (r >= 0 && ni->file_size > 0)
                r = buf_printf(&b, "FileSize: %" PRIu64 "\n", ni->file_size);
        if (r >= 0) {
                hash_format(ni->nar_hash, HASH_NIX32, h);
                r = buf_printf(&b, "NarHash: %s\nNarSize: %" PRIu64 "\nReferences: ", h, ni->nar_size);
        }
        for (size_t i = 0; r >= 0 && i < ni->n_references; i++)
                r = buf_printf(&b, "%s%s", i ? " " : "", refs[i]);
        if (r >= 0)
                r = buf_append_str(&b, "\n");
        if (r >= 0 && ni->deriver)
                r = buf_printf(&b, "Deriver: %s\n", ni->deriver);
        if (r >= 0 && ni->system)
                r = buf_printf(&b, "System: %s\n", ni->system);
        for (size_t i = 0; r >= 0 && i < ni->n_sigs; i++)
                r = buf_printf(&b, "Sig: %s\n", sigs[i]);
        if (r >= 0 && ni->ca)
                r = buf_printf(&b, "CA: %s\n", ni->ca);
        if (r < 0)
                return r;
        return buf_steal(&b, ret, NULL);
}

int narinfo_fingerprint(const struct narinfo *ni, const char *store_dir, char **ret) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(RENDER_MAX);
        _cleanup_free_ char **refs = NULL;
        char h[HASH_STRING_MAX];
        int r;

        /* Nix refuses to fingerprint a path without a NAR size. */
        if (!ni->store_path || ni->nar_size == 0)
                return -EINVAL;
        r = sorted_copy(ni->references, ni->n_references, &refs);
        if (r < 0)
                return r;
        hash_format(ni->nar_hash, HASH_NIX32, h);
        r = buf_printf(&b, "1;%s;%s;%" PRIu64 ";", ni->store_path, h, ni->nar_size);
        /* Sorting base names sorts the full paths: they share the prefix. */
        for (size_t i = 0; r >= 0 && i < ni->n_references; i++)
                r = buf_printf(&b, "%s%s/%s", i ? "," : "", store_dir, refs[i]);
        if (r < 0)
                return r;
        return buf_steal(&b, ret, NULL);
}

int narinfo_sign(struct narinfo *ni, const char *store_dir, const struct signing_secret *s) {
        _cleanup_free_ char *fp = NULL;
        char sig[SIGNING_SIG_TEXT_MAX];
        size_t nlen = strlen(s->name);
        int r;

        r = narinfo_fingerprint(ni, store_dir, &fp);
        if (r < 0)
                return r;
        r = signing_sign(s, fp, strlen(fp), sig);
        if (r < 0)
                return r;
        _cleanup_free_ char *dup = strdup(sig);
        if (!dup)
                return -ENOMEM;
        for (size_t i = 0; i < ni->n_sigs; i++)
                if (strncmp(ni->sigs[i], s->name, nlen) == 0 && ni->sigs[i][nlen] == ':') {
                        free(ni->sigs[i]);
                        ni->sigs[i] = TAKE_PTR(dup);
                        return 0;
                }
        if (ni->n_sigs >= NARINFO_SIGS_MAX)
                return -E2BIG;
        char **n = realloc(ni->sigs, (ni->n_sigs + 1) * sizeof(char *));
        if (!n)
                return -ENOMEM;
        ni->sigs = n;
        ni->sigs[ni->n_sigs++] = TAKE_PTR(dup);
        return 0;
}

int narinfo_verify(const struct narinfo *ni, const char *store_dir, const struct signing_public *keys,
                   size_t n_keys) {
        _cleanup_free_ char *fp = NULL;
        int r, good = 0;

        r = narinfo_fingerprint(ni, store_dir, &fp);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ni->n_sigs; i++) {
                /* A malformed signature is simply not a valid one. */
                r = signing_verify(keys, n_keys, ni->sigs[i], fp, strlen(fp));
                if (r > 0)
                        good++;
        }
        return good;
}
