/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz-manifest.c - manifest_decode on arbitrary bytes. A refusal must say
 * why; whatever decodes must encode, and the encoding must decode to the
 * same manifest and encode to the same bytes (a manifest that changed when
 * re-encoded would make trovefs and troved disagree about a store path).
 * Lookups on what decoded must stay inside the tables. Inputs under reject/
 * must be refused.
 */
#include <stdio.h>

#include "fuzz.h"
#include "trove/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool same_strv(char **a, size_t na, char **b, size_t nb) {
        if (na != nb)
                return false;
        for (size_t i = 0; i < na; i++)
                if (!streq(a[i], b[i]))
                        return false;
        return true;
}

static bool same_str(const char *a, const char *b) {
        return (!a && !b) || (a && b && streq(a, b));
}

static bool same(const struct manifest *a, const struct manifest *b) {
        size_t nchild = 0;

        if (!same_str(a->info.store_path, b->info.store_path) ||
            memcmp(a->info.nar_hash, b->info.nar_hash, SHA256_DIGEST_LEN) != 0 ||
            a->info.nar_size != b->info.nar_size ||
            !same_strv(a->info.references, a->info.n_references, b->info.references,
                       b->info.n_references) ||
            !same_strv(a->info.sigs, a->info.n_sigs, b->info.sigs, b->info.n_sigs) ||
            !same_str(a->info.deriver, b->info.deriver) || !same_str(a->info.ca, b->info.ca))
                return false;
        if (a->n_chunks != b->n_chunks ||
            memcmp(a->chunks, b->chunks, a->n_chunks * sizeof *a->chunks) != 0)
                return false;
        if (a->listing.n_nodes != b->listing.n_nodes || a->listing.pool_len != b->listing.pool_len ||
            memcmp(a->listing.nodes, b->listing.nodes, a->listing.n_nodes * sizeof *a->listing.nodes) != 0 ||
            memcmp(a->listing.pool, b->listing.pool, a->listing.pool_len) != 0)
                return false;
        for (uint32_t i = 0; i < a->listing.n_nodes; i++)
                nchild += a->listing.nodes[i].child_count;
        return memcmp(a->listing.child_index, b->listing.child_index,
                      nchild * sizeof *a->listing.child_index) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(manifest_free) struct manifest m = {}, m2 = {};
        _cleanup_free_ char *text = NULL, *text2 = NULL;
        struct trove_error err = {};
        size_t len, len2, idx;

        if (manifest_decode((const char *) data, size, "/nix/store", &m, &err) < 0) {
                if (!err.msg[0])
                        abort();
                return 0;
        }
        if (fuzz_must_reject()) {
                fprintf(stderr, "a must-reject input decoded\n");
                abort();
        }
        if (manifest_encode(&m, &text, &len) < 0) {
                fprintf(stderr, "decoded manifest does not encode\n");
                abort();
        }
        if (manifest_decode(text, len, "/nix/store", &m2, &err) < 0) {
                fprintf(stderr, "encoded manifest does not decode: %s\n%s\n", err.msg, text);
                abort();
        }
        if (!same(&m, &m2))
                abort();
        if (manifest_encode(&m2, &text2, &len2) < 0 || len != len2 || memcmp(text, text2, len) != 0)
                abort();

        /* Every file's bytes are covered by chunks that hold them. */
        for (uint32_t i = 0; i < m.listing.n_nodes; i++) {
                const struct listing_node *n = &m.listing.nodes[i];
                uint32_t found;
                if (i > 0 && listing_lookup(&m.listing, n->parent, listing_name(&m.listing, n), n->name_len,
                                            &found) < 0)
                        abort();
                if (i > 0 && found != i)
                        abort();
                if (n->type != NAR_REGULAR || n->size == 0)
                        continue;
                if (manifest_find_chunk(&m, n->nar_offset, &idx) < 0 ||
                    manifest_find_chunk(&m, n->nar_offset + n->size - 1, &idx) < 0 || idx >= m.n_chunks)
                        abort();
        }
        if (manifest_find_chunk(&m, m.info.nar_size, &idx) != -ERANGE)
                abort();
        return 0;
}
