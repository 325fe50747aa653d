/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nixdb.c - narinfo to the registration text of `nix-store --load-db`.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "trove/hash.h"
#include "trove/nixdb.h"
#include "trove/storepath.h"

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* A base name that Nix would take back as "<store_dir>/<name>": no '/' and
 * nothing that ends the line early. storepath_parse_basename checks the
 * rest of its shape. */
static int check_basename(const char *s) {
        struct storepath sp;

        if (!s || strpbrk(s, "/\n\r"))
                return -EINVAL;
        return storepath_parse_basename(s, strlen(s), &sp);
}

int nixdb_render(const struct narinfo *ni, const char *store_dir, struct buf *out) {
        _cleanup_free_ const char **refs = NULL;
        char hex[2 * SHA256_DIGEST_LEN + 1];
        struct storepath sp;
        size_t old_len;
        int r;

        if (!store_dir)
                store_dir = STORE_DIR_DEFAULT;
        if (!ni || !ni->store_path || !out)
                return -EINVAL;
        r = storepath_parse(store_dir, ni->store_path, &sp);
        if (r < 0)
                return r;
        if (ni->deriver) {
                r = check_basename(ni->deriver);
                if (r < 0)
                        return r;
        }
        if (ni->n_references > 0) {
                refs = calloc(ni->n_references, sizeof *refs);
                if (!refs)
                        return -ENOMEM;
                for (size_t i = 0; i < ni->n_references; i++) {
                        r = check_basename(ni->references[i]);
                        if (r < 0)
                                return r;
                        refs[i] = ni->references[i];
                }
                /* Nix keeps references in a set ordered by base name, which
                 * is also the order of the full paths. */
                qsort(refs, ni->n_references, sizeof *refs, cmp_str);
        }

        hex_encode(ni->nar_hash, SHA256_DIGEST_LEN, hex);
        old_len = out->len;
        /* The store path as given, but without the trailing slashes that
         * storepath_parse tolerates. */
        r = buf_printf(out, "%s/%s-%s\n%s\n%" PRIu64 "\n", store_dir, sp.hash, sp.name, hex, ni->nar_size);
        if (r >= 0) {
                if (ni->deriver)
                        r = buf_printf(out, "%s/%s\n", store_dir, ni->deriver);
                else
                        r = buf_append_str(out, "\n");
        }
        if (r >= 0)
                r = buf_printf(out, "%zu\n", ni->n_references);
        for (size_t i = 0; r >= 0 && i < ni->n_references; i++)
                r = buf_printf(out, "%s/%s\n", store_dir, refs[i]);
        if (r < 0) {
                out->len = old_len;
                return r;
        }
        return 0;
}
