/* SPDX-License-Identifier: Apache-2.0 */
/*
 * commit.c - making store paths visible, and their narinfos (commit.h).
 */
#include <stdio.h>

#include "commit.h"
#include "trove/nix32.h"
#include "trove/signing.h"
#include "trove/storepath.h"

/* The URL under which we serve a NAR: named by its NAR hash, so the name
 * alone finds it. */
static void nar_url(const struct db_nar *n, bool compressed, char *out, size_t cap) {
        char h[HASH_NIX32_LEN + 1];
        nix32_encode(n->nar_hash, SHA256_DIGEST_LEN, h);
        snprintf(out, cap, "nar/%s.nar%s", h, compressed ? ".zst" : "");
}

static int split_words(const char *s, char sep, char ***ret, size_t *ret_n) {
        size_t n = 0, i = 0;
        char **v;
        const char *p = s;

        for (const char *q = s; *q; q++)
                n += *q == sep;
        v = calloc(n + 2, sizeof *v);
        if (!v)
                return -ENOMEM;
        while (*p) {
                const char *e = strchr(p, sep);
                size_t len = e ? (size_t) (e - p) : strlen(p);
                if (len > 0) {
                        v[i] = strndup(p, len);
                        if (!v[i]) {
                                for (size_t k = 0; k < i; k++)
                                        free(v[k]);
                                free(v);
                                return -ENOMEM;
                        }
                        i++;
                }
                p += len;
                if (*p)
                        p++;
        }
        *ret = v;
        *ret_n = i;
        return 0;
}

int commit_narinfo(const struct db_cache *cache, const struct db_path *p, struct narinfo *ret) {
        struct narinfo ni = {};
        char url[128], fh[HASH_STRING_MAX];
        struct signing_secret key;
        int r;

        nar_url(&p->nar, true, url, sizeof url);
        hash_format(p->nar.file_hash, HASH_NIX32, fh);
        ni.store_path = strdup(p->store_path);
        ni.url = strdup(url);
        ni.compression = strdup("zstd");
        ni.file_hash = strdup(fh);
        ni.file_size = p->nar.file_size;
        memcpy(ni.nar_hash, p->nar.nar_hash, SHA256_DIGEST_LEN);
        ni.nar_size = p->nar.nar_size;
        ni.deriver = p->deriver ? strdup(p->deriver) : NULL;
        ni.ca = p->ca ? strdup(p->ca) : NULL;
        if (!ni.store_path || !ni.url || !ni.compression || !ni.file_hash || (p->deriver && !ni.deriver) ||
            (p->ca && !ni.ca)) {
                narinfo_free(&ni);
                return -ENOMEM;
        }
        r = split_words(p->references, ' ', &ni.references, &ni.n_references);
        if (r >= 0)
                r = split_words(p->sigs, '\n', &ni.sigs, &ni.n_sigs);
        if (r >= 0)
                r = signing_secret_parse(cache->secret_key, &key);
        if (r >= 0) {
                r = narinfo_sign(&ni, cache->store_dir, &key);
                signing_secret_wipe(&key);
        }
        /* During a key rotation the retiring key signs too, so clients that
         * trust only it keep substituting until it is retired. */
        if (r >= 0 && cache->old_secret_key && cache->old_secret_key[0]) {
                r = signing_secret_parse(cache->old_secret_key, &key);
                if (r >= 0) {
                        r = narinfo_sign(&ni, cache->store_dir, &key);
                        signing_secret_wipe(&key);
                }
        }
        if (r < 0) {
                narinfo_free(&ni);
                return r;
        }
        *ret = ni;
        return 0;
}

static int join_refs(const struct narinfo *ni, char **ret) {
        struct buf b = BUF_INIT((size_t) NARINFO_MAX_SIZE);
        int r = 0;
        for (size_t i = 0; i < ni->n_references && r >= 0; i++)
                r = buf_printf(&b, "%s%s", i ? " " : "", ni->references[i]);
        if (r >= 0)
                r = buf_steal(&b, ret, NULL);
        buf_free(&b);
        return r;
}

static int join_sigs(char *const *sigs, size_t n, char **ret) {
        struct buf b = BUF_INIT((size_t) NARINFO_MAX_SIZE);
        int r = 0;
        for (size_t i = 0; i < n && r >= 0; i++)
                r = buf_printf(&b, "%s%s", i ? "\n" : "", sigs[i]);
        if (r >= 0)
                r = buf_steal(&b, ret, NULL);
        buf_free(&b);
        return r;
}

int commit_insert(struct troved *t, const struct db_cache *cache, const struct narinfo *ni, int64_t nar_id,
                  bool pulled) {
        struct db_path p = { .pulled = pulled };
        struct storepath sp;
        int r;

        r = storepath_parse(cache->store_dir, ni->store_path, &sp);
        if (r < 0)
                return -EINVAL;
        p.store_path = ni->store_path;
        p.deriver = ni->deriver;
        p.ca = ni->ca;
        r = join_refs(ni, &p.references);
        if (r < 0)
                return r;
        r = join_sigs(ni->sigs, ni->n_sigs, &p.sigs);
        if (r < 0) {
                free(p.references);
                return r;
        }
        r = db_path_insert(t->db, cache->id, sp.hash, &p, nar_id);
        free(p.references);
        free(p.sigs);
        if (r < 0)
                return r;
        /* New signatures may have been merged into an existing row. */
        nicache_forget(t->narinfos, cache->id, sp.hash);
        nicache_forget(t->manifests, cache->id, sp.hash);
        if (r > 0)
                METRIC_ADD(t, paths_committed, 1);
        return r;
}

int commit_path(struct troved *t, struct httpd_request *req, const struct db_cache *cache,
                const struct narinfo *ni, int64_t nar_id) {
        int r = commit_insert(t, cache, ni, nar_id, false);
        if (r == -EINVAL)
                return httpd_reply_error(req, 400, "bad store path '%s'", ni->store_path);
        if (r == -EEXIST)
                return httpd_reply_error(req, 409, "%s is already in cache '%s' with different contents",
                                        ni->store_path, cache->name);
        return r < 0 ? r : 0;
}
