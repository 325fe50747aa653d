/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <jansson.h>

#include "trove/chunkcodec.h"
#include "trove/manifest.h"
#include "trove/storepath.h"

/* Signatures ("name:base64") and CA strings are short; anything longer is
 * not what Nix produces. */
#define MANIFEST_FIELD_MAX 1024

void manifest_free(struct manifest *m) {
        if (!m)
                return;
        narinfo_free(&m->info);
        listing_free(&m->listing);
        free(m->chunks);
        *m = (struct manifest){};
}

/* Largest zstd frame a chunk of n bytes can have: above zstd's
 * ZSTD_compressBound (n + n/256 + 64 KiB/2^11 + header), with margin. */
static uint64_t stored_size_max(uint64_t n) {
        return n + n / 128 + 1024;
}

/* Printable ASCII without spaces: what Sig and CA values consist of. */
static bool field_valid(const char *s) {
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > MANIFEST_FIELD_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (s[i] <= 0x20 || s[i] >= 0x7f)
                        return false;
        return true;
}

static bool basename_valid(const char *s) {
        struct storepath sp;
        return s && storepath_parse_basename(s, strlen(s), &sp) >= 0;
}

int manifest_validate(const struct manifest *m, struct trove_error *err) {
        const struct narinfo *ni = &m->info;
        const char *slash;
        uint64_t end = 0;

        if (!ni->store_path || ni->store_path[0] != '/' || !(slash = strrchr(ni->store_path, '/')) ||
            !basename_valid(slash + 1))
                return trove_error_set(err, -EBADMSG, "manifest: invalid store path");
        if (ni->nar_size == 0 || ni->nar_size > INT64_MAX)
                return trove_error_set(err, -EBADMSG, "manifest: invalid narSize %" PRIu64,
                                       ni->nar_size);
        if (ni->n_references > NARINFO_REFS_MAX || (ni->n_references > 0 && !ni->references))
                return trove_error_set(err, -EBADMSG, "manifest: too many references");
        for (size_t i = 0; i < ni->n_references; i++) {
                if (!basename_valid(ni->references[i]))
                        return trove_error_set(err, -EBADMSG, "manifest: invalid reference #%zu", i);
                if (i > 0 && strcmp(ni->references[i - 1], ni->references[i]) >= 0)
                        return trove_error_set(err, -EBADMSG,
                                               "manifest: references not sorted or not unique at #%zu",
                                               i);
        }
        if (ni->deriver && !basename_valid(ni->deriver))
                return trove_error_set(err, -EBADMSG, "manifest: invalid deriver");
        if (ni->n_sigs > NARINFO_SIGS_MAX || (ni->n_sigs > 0 && !ni->sigs))
                return trove_error_set(err, -EBADMSG, "manifest: more than %d signatures",
                                       NARINFO_SIGS_MAX);
        for (size_t i = 0; i < ni->n_sigs; i++) {
                const char *colon = ni->sigs[i] ? strchr(ni->sigs[i], ':') : NULL;
                if (!field_valid(ni->sigs[i]) || !colon || colon == ni->sigs[i] || !colon[1])
                        return trove_error_set(err, -EBADMSG, "manifest: invalid signature #%zu", i);
        }
        if (ni->ca && !field_valid(ni->ca))
                return trove_error_set(err, -EBADMSG, "manifest: invalid ca");

        if (m->n_chunks == 0 || !m->chunks)
                return trove_error_set(err, -EBADMSG, "manifest: no chunks");
        if (m->n_chunks > MANIFEST_CHUNKS_MAX)
                return trove_error_set(err, -EBADMSG, "manifest: more than %u chunks",
                                       MANIFEST_CHUNKS_MAX);
        for (size_t i = 0; i < m->n_chunks; i++) {
                const struct manifest_chunk *c = &m->chunks[i];
                if (c->nar_offset != end)
                        return trove_error_set(err, -EBADMSG,
                                               "manifest: chunk #%zu starts at %" PRIu64
                                               ", expected %" PRIu64,
                                               i, c->nar_offset, end);
                if (c->length == 0 || c->length > CHUNK_SIZE_MAX)
                        return trove_error_set(err, -EBADMSG,
                                               "manifest: chunk #%zu length %" PRIu32
                                               " outside 1..%u",
                                               i, c->length, CHUNK_SIZE_MAX);
                if (c->has_base && (c->base_length == 0 || c->base_length > CHUNK_SIZE_MAX ||
                                    memcmp(c->base, c->id, SHA256_DIGEST_LEN) == 0))
                        return trove_error_set(err, -EBADMSG, "manifest: chunk #%zu has a bad base", i);
                if (c->stored_size == 0 ||
                    c->stored_size > stored_size_max(c->length) + (c->has_base ? CHUNKCODEC_DELTA_HEADER : 0))
                        return trove_error_set(err, -EBADMSG,
                                               "manifest: chunk #%zu stored size %" PRIu32
                                               " impossible for length %" PRIu32,
                                               i, c->stored_size, c->length);
                end += c->length; /* at most 2^22 * 2^26: no overflow */
                if (end > ni->nar_size)
                        return trove_error_set(err, -EBADMSG,
                                               "manifest: chunk #%zu ends beyond narSize", i);
        }
        if (end != ni->nar_size)
                return trove_error_set(err, -EBADMSG,
                                       "manifest: chunks cover %" PRIu64 " bytes, narSize is %" PRIu64,
                                       end, ni->nar_size);

        /* Files appear in the NAR in node order, so their byte ranges are
         * ascending and disjoint; trovefs reads by narOffset and needs each
         * one to be known and inside the NAR. */
        if (m->listing.n_nodes == 0 || !m->listing.nodes)
                return trove_error_set(err, -EBADMSG, "manifest: empty listing");
        end = 0;
        for (uint32_t i = 0; i < m->listing.n_nodes; i++) {
                const struct listing_node *n = &m->listing.nodes[i];
                if (n->type != NAR_REGULAR)
                        continue;
                if (n->nar_offset == 0 || n->nar_offset % 8 != 0)
                        return trove_error_set(err, -EBADMSG,
                                               "manifest: file node %" PRIu32 " has no valid narOffset", i);
                if (n->nar_offset < end)
                        return trove_error_set(err, -EBADMSG,
                                               "manifest: file node %" PRIu32
                                               " overlaps the file before it", i);
                if (n->nar_offset > ni->nar_size || n->size > ni->nar_size - n->nar_offset)
                        return trove_error_set(err, -EBADMSG,
                                               "manifest: file node %" PRIu32 " ends beyond the NAR", i);
                end = n->nar_offset + n->size;
        }
        return 0;
}

static int append_str(struct buf *b, const char *key, const char *value) {
        int r = buf_printf(b, ",\"%s\":", key);
        return r < 0 ? r : listing_json_string_append(b, value, strlen(value), true);
}

static int append_str_array(struct buf *b, const char *key, char *const *v, size_t n) {
        int r = buf_printf(b, ",\"%s\":[", key);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                if (i > 0)
                        r = buf_append(b, ",", 1);
                if (r >= 0)
                        r = listing_json_string_append(b, v[i], strlen(v[i]), true);
        }
        return r < 0 ? r : buf_append(b, "]", 1);
}

int manifest_encode(const struct manifest *m, char **ret, size_t *ret_len) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(MANIFEST_MAX_SIZE);
        const struct narinfo *ni = &m->info;
        char hash[HASH_STRING_MAX];
        bool has_bases = false;
        int r;

        r = manifest_validate(m, NULL);
        if (r < 0)
                return r;

        for (size_t i = 0; i < m->n_chunks; i++)
                has_bases = has_bases || m->chunks[i].has_base;
        hash_format(ni->nar_hash, HASH_NIX32, hash);
        /* Version 1 when nothing needs 2: readers that know only 1 read it. */
        r = buf_append_str(&b, has_bases ? "{\"version\":2" : "{\"version\":1");
        if (r >= 0)
                r = append_str(&b, "storePath", ni->store_path);
        if (r >= 0)
                r = append_str(&b, "narHash", hash);
        if (r >= 0)
                r = buf_printf(&b, ",\"narSize\":%" PRIu64, ni->nar_size);
        if (r >= 0)
                r = append_str_array(&b, "references", ni->references, ni->n_references);
        if (r >= 0 && ni->deriver)
                r = append_str(&b, "deriver", ni->deriver);
        if (r >= 0)
                r = append_str_array(&b, "sigs", ni->sigs, ni->n_sigs);
        if (r >= 0 && ni->ca)
                r = append_str(&b, "ca", ni->ca);
        if (r >= 0)
                r = buf_append_str(&b, ",\"chunks\":[");
        for (size_t i = 0; r >= 0 && i < m->n_chunks; i++) {
                const struct manifest_chunk *c = &m->chunks[i];
                char id[2 * SHA256_DIGEST_LEN + 1];
                hex_encode(c->id, SHA256_DIGEST_LEN, id);
                r = buf_printf(&b, "%s[%" PRIu64 ",%" PRIu32 ",\"%s\",%" PRIu32, i ? "," : "",
                               c->nar_offset, c->length, id, c->stored_size);
                if (r >= 0 && c->has_base) {
                        hex_encode(c->base, SHA256_DIGEST_LEN, id);
                        r = buf_printf(&b, ",\"%s\",%" PRIu32, id, c->base_length);
                }
                if (r >= 0)
                        r = buf_append(&b, "]", 1);
        }
        if (r >= 0)
                r = buf_append_str(&b, "],\"root\":");
        if (r >= 0)
                r = listing_json_append(&m->listing, 0, true, &b);
        if (r >= 0)
                r = buf_append(&b, "}", 1);
        if (r < 0)
                return r;
        return buf_steal(&b, ret, ret_len);
}

/* ---- decoding ---- */

static int get_u64(const json_t *v, uint64_t max, uint64_t *ret) {
        json_int_t x;
        if (!json_is_integer(v))
                return -EBADMSG;
        x = json_integer_value(v);
        if (x < 0 || (uint64_t) x > max)
                return -EBADMSG;
        *ret = (uint64_t) x;
        return 0;
}

static int dup_string(const json_t *v, char **ret) {
        char *s;
        /* jansson refuses NUL inside strings unless asked, so the C string
         * is the whole value. */
        if (!json_is_string(v))
                return -EBADMSG;
        s = strdup(json_string_value(v));
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static int dup_string_array(const json_t *v, size_t max, char ***ret, size_t *ret_n) {
        size_t n;
        char **a;
        int r;

        if (!json_is_array(v))
                return -EBADMSG;
        n = json_array_size(v);
        if (n > max)
                return -E2BIG;
        a = calloc(n + 1, sizeof *a);
        if (!a)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                r = dup_string(json_array_get(v, i), &a[i]);
                if (r < 0) {
                        for (size_t j = 0; j < i; j++)
                                free(a[j]);
                        free(a);
                        return r;
                }
        }
        *ret = a;
        *ret_n = n;
        return 0;
}

/* A 64-digit lower-case hex id: -EBADMSG if not hex, -EILSEQ if upper
 * case (the canonical form is lower case: encode(decode(x)) must give back
 * the same ids). */
static int decode_id(const json_t *id, uint8_t out[SHA256_DIGEST_LEN]) {
        if (!json_is_string(id) || json_string_length(id) != 2 * SHA256_DIGEST_LEN ||
            hex_decode(json_string_value(id), json_string_length(id), out, SHA256_DIGEST_LEN) < 0)
                return -EBADMSG;
        for (const char *p = json_string_value(id); *p; p++)
                if (*p >= 'A' && *p <= 'F')
                        return -EILSEQ;
        return 0;
}

static int decode_chunks(const json_t *v, int version, struct manifest *m, struct trove_error *err) {
        size_t n;
        int r;

        if (!json_is_array(v))
                return trove_error_set(err, -EBADMSG, "manifest: \"chunks\" is not an array");
        n = json_array_size(v);
        if (n > MANIFEST_CHUNKS_MAX)
                return trove_error_set(err, -EBADMSG, "manifest: more than %u chunks",
                                       MANIFEST_CHUNKS_MAX);
        m->chunks = calloc(n + 1, sizeof *m->chunks);
        if (!m->chunks)
                return trove_error_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
                const json_t *c = json_array_get(v, i), *id;
                struct manifest_chunk *mc = &m->chunks[i];
                uint64_t len, stored;

                size_t k = json_is_array(c) ? json_array_size(c) : 0;

                if (k != 4 && !(version >= 2 && k == 6))
                        return trove_error_set(err, -EBADMSG,
                                               version >= 2 ? "manifest: chunk #%zu is not [narOffset,length,id,storedSize"
                                                              "(,baseId,baseLength)]"
                                                            : "manifest: chunk #%zu is not [narOffset,length,id,storedSize]",
                                               i);
                id = json_array_get(c, 2);
                if (get_u64(json_array_get(c, 0), INT64_MAX, &mc->nar_offset) < 0 ||
                    get_u64(json_array_get(c, 1), UINT32_MAX, &len) < 0 ||
                    get_u64(json_array_get(c, 3), UINT32_MAX, &stored) < 0)
                        return trove_error_set(err, -EBADMSG, "manifest: chunk #%zu has a bad number", i);
                r = decode_id(id, mc->id);
                if (r < 0)
                        return trove_error_set(err, -EBADMSG, r == -EILSEQ ? "manifest: chunk #%zu id is not lower-case hex"
                                                                          : "manifest: chunk #%zu has a bad id", i);
                if (k == 6) {
                        uint64_t base_len;
                        if (decode_id(json_array_get(c, 4), mc->base) < 0 ||
                            get_u64(json_array_get(c, 5), UINT32_MAX, &base_len) < 0)
                                return trove_error_set(err, -EBADMSG, "manifest: chunk #%zu has a bad base", i);
                        mc->has_base = true;
                        mc->base_length = (uint32_t) base_len;
                }
                mc->length = (uint32_t) len;
                mc->stored_size = (uint32_t) stored;
        }
        m->n_chunks = n;
        return 0;
}

static int decode_obj(const json_t *root, const char *store_dir, struct manifest *m,
                      struct trove_error *err) {
        struct narinfo *ni = &m->info;
        const json_t *v;
        struct storepath sp;
        const char *s;
        int version;
        int r;

        v = json_object_get(root, "version");
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > MANIFEST_VERSION_MAX)
                return trove_error_set(err, -EBADMSG, "manifest: missing or unsupported \"version\"");
        version = (int) json_integer_value(v);

        if (dup_string(json_object_get(root, "storePath"), &ni->store_path) < 0)
                return trove_error_set(err, -EBADMSG, "manifest: \"storePath\" missing");
        if (storepath_parse(store_dir, ni->store_path, &sp) < 0)
                return trove_error_set(err, -EBADMSG, "manifest: \"storePath\" is not a store path in %s",
                                       store_dir);

        s = json_string_value(json_object_get(root, "narHash"));
        if (!s || json_string_length(json_object_get(root, "narHash")) != 7 + HASH_NIX32_LEN ||
            !startswith(s, "sha256:") || hash_parse(s, ni->nar_hash) < 0)
                return trove_error_set(err, -EBADMSG, "manifest: \"narHash\" is not sha256:<nix32>");

        if (get_u64(json_object_get(root, "narSize"), INT64_MAX, &ni->nar_size) < 0 || ni->nar_size == 0)
                return trove_error_set(err, -EBADMSG, "manifest: \"narSize\" is not a positive integer");

        r = dup_string_array(json_object_get(root, "references"), NARINFO_REFS_MAX, &ni->references,
                             &ni->n_references);
        if (r < 0)
                return trove_error_set(err, r, "manifest: \"references\" is not an array of strings");

        v = json_object_get(root, "deriver");
        if (v && dup_string(v, &ni->deriver) < 0)
                return trove_error_set(err, -EBADMSG, "manifest: \"deriver\" is not a string");

        r = dup_string_array(json_object_get(root, "sigs"), NARINFO_SIGS_MAX, &ni->sigs, &ni->n_sigs);
        if (r < 0)
                return trove_error_set(err, r, "manifest: \"sigs\" is not an array of strings");

        v = json_object_get(root, "ca");
        if (v && dup_string(v, &ni->ca) < 0)
                return trove_error_set(err, -EBADMSG, "manifest: \"ca\" is not a string");

        r = decode_chunks(json_object_get(root, "chunks"), version, m, err);
        if (r < 0)
                return r;

        v = json_object_get(root, "root");
        if (!v)
                return trove_error_set(err, -EBADMSG, "manifest: \"root\" missing");
        if (json_object_get(v, "version"))
                return trove_error_set(err, -EBADMSG, "manifest: \"root\" must be a node, not a document");
        r = listing_from_json_value(v, ni->nar_size, &m->listing, err);
        if (r < 0)
                return r;

        return manifest_validate(m, err);
}

int manifest_decode(const char *text, size_t len, const char *store_dir, struct manifest *ret,
                    struct trove_error *err) {
        _cleanup_(manifest_free) struct manifest m = {};
        json_error_t jerr;
        json_t *root;
        int r;

        if (len > MANIFEST_MAX_SIZE)
                return trove_error_set(err, -E2BIG, "manifest: larger than %u bytes", MANIFEST_MAX_SIZE);
        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
                return trove_error_set(err, -EBADMSG, "manifest: invalid JSON at line %d column %d: %s",
                                       jerr.line, jerr.column, jerr.text);
        if (!json_is_object(root))
                r = trove_error_set(err, -EBADMSG, "manifest: not a JSON object");
        else
                r = decode_obj(root, store_dir, &m, err);
        json_decref(root);
        if (r < 0)
                return r;
        *ret = m;
        m = (struct manifest){};
        return 0;
}

int manifest_find_chunk(const struct manifest *m, uint64_t off, size_t *ret) {
        size_t lo = 0, hi = m->n_chunks;

        /* First chunk that starts beyond off; the one before holds off. */
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (m->chunks[mid].nar_offset <= off)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (lo == 0)
                return -ERANGE;
        const struct manifest_chunk *c = &m->chunks[lo - 1];
        if (off - c->nar_offset >= c->length)
                return -ERANGE;
        *ret = lo - 1;
        return 0;
}

/* MANIFEST_SIG_DOMAIN followed by the body: the message signed. Heap
 * copy: a manifest is bounded by MANIFEST_MAX_SIZE, and signing.h takes
 * one contiguous message. */
static int sig_message(const char *body, size_t len, char **ret, size_t *ret_len) {
        size_t plen = strlen(MANIFEST_SIG_DOMAIN);
        char *msg;

        if (len > MANIFEST_MAX_SIZE)
                return -E2BIG;
        msg = malloc(plen + len + 1);
        if (!msg)
                return -ENOMEM;
        memcpy(msg, MANIFEST_SIG_DOMAIN, plen);
        if (len > 0)
                memcpy(msg + plen, body, len);
        *ret = msg;
        *ret_len = plen + len;
        return 0;
}

int manifest_sign(const char *body, size_t len, const struct signing_secret *key,
                  char out[MANIFEST_SIG_TEXT_MAX]) {
        _cleanup_free_ char *msg = NULL;
        size_t n;
        int r;

        r = sig_message(body, len, &msg, &n);
        if (r < 0)
                return r;
        return signing_sign(key, msg, n, out);
}

int manifest_verify(const char *body, size_t len, const char *sig,
                    const struct signing_public *keys, size_t n_keys) {
        _cleanup_free_ char *msg = NULL;
        char one[MANIFEST_SIG_TEXT_MAX];
        const char *p;
        size_t slen, n, count = 0;
        int r;

        if (!sig)
                return -EBADMSG;
        slen = strnlen(sig, MANIFEST_SIG_HEADER_MAX);
        if (slen == 0 || slen == MANIFEST_SIG_HEADER_MAX)
                return -EBADMSG;
        /* Every signature well-formed before any is tried. */
        for (p = sig;; p++) {
                size_t k = strcspn(p, " ");
                if (k == 0 || k >= sizeof one || ++count > MANIFEST_SIGS_MAX)
                        return -EBADMSG;
                r = signing_sig_check(p, k, NULL);
                if (r < 0)
                        return r == -EINVAL ? -EBADMSG : r;
                p += k;
                if (!*p)
                        break;
        }
        if (n_keys == 0)
                return -EKEYREJECTED;
        r = sig_message(body, len, &msg, &n);
        if (r == -E2BIG)
                return -EKEYREJECTED; /* nothing that large was ever signed */
        if (r < 0)
                return r;
        for (p = sig;; p++) {
                size_t k = strcspn(p, " ");
                memcpy(one, p, k);
                one[k] = 0;
                r = signing_verify(keys, n_keys, one, msg, n);
                if (r < 0)
                        return r == -EINVAL ? -EBADMSG : r;
                if (r > 0)
                        return 0;
                p += k;
                if (!*p)
                        return -EKEYREJECTED;
        }
}
