/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>

#include "trove/listing.h"

/* One open directory while building: its node, where its children start
 * in the pending stack, and the length of its relative path. */
struct open_dir {
        uint32_t node;
        size_t first_pending;
        size_t path_len;
};

struct listing_builder {
        struct listing_node *nodes;
        uint32_t n_nodes, cap_nodes;
        uint32_t *child_index;
        size_t n_child, cap_child;
        struct buf pool;
        /* Children of every open directory, innermost last. They become
         * contiguous child_index slots when their directory closes. */
        uint32_t *pending;
        size_t n_pending, cap_pending;
        struct open_dir stack[NAR_DEPTH_MAX + 1];
        unsigned depth;
        bool done;
        int error;
        struct trove_error err;
};

void listing_free(struct listing *l) {
        if (!l)
                return;
        free(l->nodes);
        free(l->child_index);
        free(l->pool);
        *l = (struct listing){};
}

int listing_builder_new(struct listing_builder **ret) {
        struct listing_builder *b = calloc(1, sizeof *b);
        if (!b)
                return -ENOMEM;
        buf_init(&b->pool, LISTING_POOL_MAX);
        *ret = b;
        return 0;
}

struct listing_builder *listing_builder_free(struct listing_builder *b) {
        if (!b)
                return NULL;
        free(b->nodes);
        free(b->child_index);
        free(b->pending);
        buf_free(&b->pool);
        free(b);
        return NULL;
}

const char *listing_builder_error(const struct listing_builder *b) {
        return b->error ? b->err.msg : NULL;
}

/* Grows *p (elements of size sz) so that it holds at least need elements,
 * never beyond max. */
static int grow(void *pp, size_t sz, size_t *cap, size_t need, size_t max) {
        void **p = pp;
        size_t ncap, bytes;
        void *q;

        if (need <= *cap)
                return 0;
        if (need > max)
                return -E2BIG;
        ncap = *cap ? *cap : 16;
        while (ncap < need)
                ncap = ncap > max / 2 ? max : ncap * 2;
        if (MUL_OVERFLOW(ncap, sz, &bytes))
                return -E2BIG;
        q = realloc(*p, bytes);
        if (!q)
                return -ENOMEM;
        *p = q;
        *cap = ncap;
        return 0;
}

_printf_(3, 4) static int builder_fail(struct listing_builder *b, int r, const char *fmt, ...) {
        va_list ap;

        if (!b->error) {
                va_start(ap, fmt);
                vsnprintf(b->err.msg, sizeof b->err.msg, fmt, ap);
                va_end(ap);
                b->error = r < 0 ? r : -r;
        }
        return b->error;
}

static bool name_valid(const char *name, size_t len) {
        if (len == 0 || len > NAR_NAME_MAX)
                return false;
        if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
                return false;
        return !memchr(name, '/', len) && !memchr(name, 0, len);
}

static int name_cmp(const char *a, size_t alen, const char *b, size_t blen) {
        int c = memcmp(a, b, MIN(alen, blen));
        if (c != 0)
                return c;
        return alen < blen ? -1 : alen > blen;
}

static int pool_add(struct listing_builder *b, const char *s, size_t len, uint32_t *ret_off) {
        size_t off = b->pool.len;
        int r;

        if (off > UINT32_MAX || len > UINT32_MAX)
                return -E2BIG;
        r = buf_append(&b->pool, s, len);
        if (r < 0)
                return r;
        r = buf_append(&b->pool, "", 1);
        if (r < 0) {
                b->pool.len = off;
                return r;
        }
        *ret_off = (uint32_t) off;
        return 0;
}

/* Adds a node named name (NULL for the root) under the innermost open
 * directory. This is the one place that enforces the tree rules, for every
 * source of listings. */
static int builder_add(struct listing_builder *b, const char *name, size_t len, uint8_t type,
                       uint32_t *ret) {
        struct listing_node *n;
        size_t path_len = 0;
        uint32_t idx;
        int r;

        if (b->error)
                return b->error;
        if (b->done)
                return builder_fail(b, -EBADMSG, "node after the end of the tree");
        if (!name) {
                if (b->n_nodes != 0)
                        return builder_fail(b, -EBADMSG, "second root node");
        } else {
                struct open_dir *d;
                if (b->depth == 0)
                        return builder_fail(b, -EBADMSG, "entry outside a directory");
                /* As nar_reader counts: an entry may be added while at
                 * most NAR_DEPTH_MAX directories are open. */
                if (b->depth > NAR_DEPTH_MAX)
                        return builder_fail(b, -EBADMSG, "directories nested deeper than %d",
                                            NAR_DEPTH_MAX);
                d = &b->stack[b->depth - 1];
                if (!name_valid(name, len))
                        return builder_fail(b, -EBADMSG, "invalid entry name (%zu bytes)", len);
                path_len = d->path_len + (d->path_len ? 1 : 0) + len;
                if (path_len > NAR_PATH_MAX)
                        return builder_fail(b, -EBADMSG, "path longer than %d bytes", NAR_PATH_MAX);
                if (b->n_pending > d->first_pending) {
                        const struct listing_node *prev = &b->nodes[b->pending[b->n_pending - 1]];
                        if (name_cmp((const char *) b->pool.data + prev->name_off, prev->name_len,
                                     name, len) >= 0)
                                return builder_fail(b, -EBADMSG,
                                                    "entry \"%.*s\" not sorted after its predecessor",
                                                    (int) MIN(len, 64), name);
                }
        }
        if (b->n_nodes >= LISTING_NODES_MAX)
                return builder_fail(b, -E2BIG, "more than %u nodes", LISTING_NODES_MAX);

        size_t cap = b->cap_nodes;
        r = grow(&b->nodes, sizeof *b->nodes, &cap, (size_t) b->n_nodes + 1, LISTING_NODES_MAX);
        if (r < 0)
                return builder_fail(b, r, "out of memory for nodes");
        b->cap_nodes = (uint32_t) cap;
        if (name) {
                r = grow(&b->pending, sizeof *b->pending, &b->cap_pending, b->n_pending + 1,
                         LISTING_NODES_MAX);
                if (r < 0)
                        return builder_fail(b, r, "out of memory for entries");
        }

        idx = b->n_nodes;
        n = &b->nodes[idx];
        *n = (struct listing_node){ .type = type };
        r = pool_add(b, name ? name : "", name ? len : 0, &n->name_off);
        if (r < 0)
                return builder_fail(b, r, "names exceed the listing's string pool");
        n->name_len = (uint32_t) len;
        n->parent = name ? b->stack[b->depth - 1].node : 0;
        b->n_nodes++;
        if (name)
                b->pending[b->n_pending++] = idx;

        if (type == NAR_DIRECTORY)
                b->stack[b->depth++] = (struct open_dir){
                        .node = idx,
                        .first_pending = b->n_pending,
                        .path_len = path_len,
                };
        else if (!name)
                b->done = true; /* a NAR of a single file or symlink */
        *ret = idx;
        return 0;
}

static int builder_regular(struct listing_builder *b, const char *name, size_t len, uint64_t size,
                           bool executable, uint64_t nar_offset) {
        uint32_t idx;
        int r;

        if (nar_offset % 8 != 0)
                return builder_fail(b, -EBADMSG, "narOffset %" PRIu64 " not a multiple of 8",
                                    nar_offset);
        if (nar_offset > INT64_MAX || size > INT64_MAX || nar_offset + size > INT64_MAX)
                return builder_fail(b, -EBADMSG, "file size or offset out of range");
        r = builder_add(b, name, len, NAR_REGULAR, &idx);
        if (r < 0)
                return r;
        b->nodes[idx].size = size;
        b->nodes[idx].executable = executable;
        b->nodes[idx].nar_offset = nar_offset;
        return 0;
}

static int builder_symlink(struct listing_builder *b, const char *name, size_t len,
                           const char *target, size_t target_len) {
        uint32_t idx;
        int r;

        if (target_len == 0 || target_len > NAR_TARGET_MAX || memchr(target, 0, target_len))
                return builder_fail(b, -EBADMSG, "invalid symlink target (%zu bytes)", target_len);
        r = builder_add(b, name, len, NAR_SYMLINK, &idx);
        if (r < 0)
                return r;
        r = pool_add(b, target, target_len, &b->nodes[idx].target_off);
        if (r < 0)
                return builder_fail(b, r, "targets exceed the listing's string pool");
        b->nodes[idx].target_len = (uint32_t) target_len;
        return 0;
}

static int builder_directory_end(struct listing_builder *b) {
        struct open_dir *d;
        size_t count;
        int r;

        if (b->error)
                return b->error;
        if (b->depth == 0)
                return builder_fail(b, -EBADMSG, "directory end without a directory");
        d = &b->stack[b->depth - 1];
        count = b->n_pending - d->first_pending;
        r = grow(&b->child_index, sizeof *b->child_index, &b->cap_child, b->n_child + count,
                 LISTING_NODES_MAX);
        if (r < 0)
                return builder_fail(b, r, "out of memory for entries");
        if (count > 0)
                memcpy(b->child_index + b->n_child, b->pending + d->first_pending,
                       count * sizeof *b->pending);
        b->nodes[d->node].child_start = (uint32_t) b->n_child;
        b->nodes[d->node].child_count = (uint32_t) count;
        b->n_child += count;
        b->n_pending = d->first_pending;
        b->depth--;
        if (b->depth == 0)
                b->done = true;
        return 0;
}

/* ---- nar_reader callbacks: the name is the last component of path ---- */

static const char *path_name(const char *path, size_t *ret_len, unsigned *ret_slashes) {
        const char *slash = strrchr(path, '/');
        unsigned slashes = 0;

        for (const char *p = path; *p; p++)
                slashes += *p == '/';
        *ret_slashes = slashes;
        if (!*path) {
                *ret_len = 0;
                return NULL;
        }
        const char *name = slash ? slash + 1 : path;
        *ret_len = strlen(name);
        return name;
}

/* The reader's path must agree with the nesting of events. */
static int check_path(struct listing_builder *b, const char *path, const char **ret_name,
                      size_t *ret_len) {
        unsigned slashes;
        const char *name = path_name(path, ret_len, &slashes);

        if (b->error)
                return b->error;
        if (name ? slashes + 1 != b->depth : b->depth != 0)
                return builder_fail(b, -EBADMSG, "path \"%.64s\" does not match nesting", path);
        *ret_name = name;
        return 0;
}

static int cb_directory(void *ud, const char *path, uint64_t offset) {
        struct listing_builder *b = ud;
        const char *name = NULL;
        size_t len = 0;
        uint32_t idx;
        int r = check_path(b, path, &name, &len);
        return r < 0 ? r : builder_add(b, name, len, NAR_DIRECTORY, &idx);
}

static int cb_directory_end(void *ud, const char *path) {
        return builder_directory_end(ud);
}

static int cb_regular(void *ud, const char *path, uint64_t size, bool executable,
                      uint64_t contents_offset) {
        struct listing_builder *b = ud;
        const char *name = NULL;
        size_t len = 0;
        int r = check_path(b, path, &name, &len);
        return r < 0 ? r : builder_regular(b, name, len, size, executable, contents_offset);
}

static int cb_symlink(void *ud, const char *path, const char *target, size_t target_len) {
        struct listing_builder *b = ud;
        const char *name = NULL;
        size_t len = 0;
        int r = check_path(b, path, &name, &len);
        return r < 0 ? r : builder_symlink(b, name, len, target, target_len);
}

const struct nar_reader_callbacks listing_builder_callbacks = {
        .directory = cb_directory,
        .directory_end = cb_directory_end,
        .regular = cb_regular,
        .symlink = cb_symlink,
};

int listing_builder_take(struct listing_builder *b, struct listing *ret) {
        if (b->error)
                return b->error;
        if (!b->done)
                return builder_fail(b, -EBADMSG, "listing incomplete");
        /* Keep a valid pointer even for empty index tables. */
        if (!b->child_index) {
                b->child_index = calloc(1, sizeof *b->child_index);
                if (!b->child_index)
                        return -ENOMEM;
        }
        *ret = (struct listing){
                .nodes = TAKE_PTR(b->nodes),
                .n_nodes = b->n_nodes,
                .child_index = TAKE_PTR(b->child_index),
                .pool_len = b->pool.len,
        };
        ret->pool = (char *) TAKE_PTR(b->pool.data);
        b->pool.len = b->pool.cap = 0;
        b->n_nodes = b->cap_nodes = 0;
        b->n_child = b->cap_child = 0;
        b->done = false;
        return 0;
}

int listing_from_nar(const void *nar, size_t n, struct listing *ret, struct trove_error *err) {
        _cleanup_(listing_builder_freep) struct listing_builder *b = NULL;
        _cleanup_(nar_reader_freep) struct nar_reader *r = NULL;
        int k;

        k = listing_builder_new(&b);
        if (k < 0)
                return trove_error_set(err, k, "out of memory");
        k = nar_reader_new(&listing_builder_callbacks, b, &r);
        if (k < 0)
                return trove_error_set(err, k, "cannot create NAR reader");
        k = nar_reader_feed(r, nar, n);
        if (k >= 0)
                k = nar_reader_finish(r);
        if (k < 0) {
                if (b->error)
                        return trove_error_set(err, k, "NAR listing: %s", b->err.msg);
                const char *m = nar_reader_error(r);
                return trove_error_set(err, k, "NAR: %s at offset %" PRIu64,
                                       m ? m : strerror(-k), nar_reader_offset(r));
        }
        k = listing_builder_take(b, ret);
        if (k < 0)
                return trove_error_set(err, k, "NAR listing: %s", b->err.msg);
        return 0;
}

/* ---- lookups ---- */

int listing_lookup(const struct listing *l, uint32_t dir, const char *name, size_t len,
                   uint32_t *ret) {
        const struct listing_node *d;
        uint32_t lo, hi;

        if (dir >= l->n_nodes)
                return -EINVAL;
        d = &l->nodes[dir];
        if (d->type != NAR_DIRECTORY)
                return -ENOTDIR;
        lo = 0;
        hi = d->child_count;
        while (lo < hi) {
                uint32_t mid = lo + (hi - lo) / 2;
                uint32_t idx = l->child_index[d->child_start + mid];
                const struct listing_node *c = &l->nodes[idx];
                int cmp = name_cmp(l->pool + c->name_off, c->name_len, name, len);
                if (cmp == 0) {
                        *ret = idx;
                        return 0;
                }
                if (cmp < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return -ENOENT;
}

int listing_lookup_path(const struct listing *l, const char *path, uint32_t *ret) {
        uint32_t cur = 0;

        if (l->n_nodes == 0)
                return -ENOENT;
        for (const char *p = path; *p;) {
                const char *slash = strchr(p, '/');
                size_t len = slash ? (size_t) (slash - p) : strlen(p);
                if (len > 0) {
                        int r = listing_lookup(l, cur, p, len, &cur);
                        if (r < 0)
                                return r;
                }
                p += len;
                if (*p == '/')
                        p++;
        }
        *ret = cur;
        return 0;
}

/* ---- JSON output ---- */

static bool utf8_valid(const uint8_t *s, size_t n) {
        size_t i = 0;

        while (i < n) {
                uint8_t c = s[i];
                size_t k;
                uint32_t cp;

                if (c < 0x80) {
                        i++;
                        continue;
                } else if (c >= 0xc2 && c <= 0xdf) {
                        k = 1;
                        cp = c & 0x1f;
                } else if (c >= 0xe0 && c <= 0xef) {
                        k = 2;
                        cp = c & 0x0f;
                } else if (c >= 0xf0 && c <= 0xf4) {
                        k = 3;
                        cp = c & 0x07;
                } else
                        return false;
                if (n - i <= k)
                        return false;
                for (size_t j = 1; j <= k; j++) {
                        if ((s[i + j] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (s[i + j] & 0x3f);
                }
                if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
                    (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += k + 1;
        }
        return true;
}

/* Escapes like Nix's JSON writer: \" \\ \n \r \t, other bytes below 0x20
 * as \u00xx, everything else (including non-ASCII) as is. */
int listing_json_string_append(struct buf *b, const char *s, size_t n, bool utf8_only) {
        static const char hex[] = "0123456789abcdef";
        int r;

        if (utf8_only && !utf8_valid((const uint8_t *) s, n))
                return -EILSEQ;
        r = buf_append(b, "\"", 1);
        for (size_t i = 0; r >= 0 && i < n;) {
                size_t j = i;
                while (j < n && (uint8_t) s[j] >= 0x20 && s[j] != '"' && s[j] != '\\')
                        j++;
                if (j > i) {
                        r = buf_append(b, s + i, j - i);
                        i = j;
                        continue;
                }
                uint8_t c = (uint8_t) s[i++];
                char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
                switch (c) {
                case '"':
                case '\\':
                        esc[1] = (char) c;
                        r = buf_append(b, esc, 2);
                        break;
                case '\n':
                        r = buf_append(b, "\\n", 2);
                        break;
                case '\r':
                        r = buf_append(b, "\\r", 2);
                        break;
                case '\t':
                        r = buf_append(b, "\\t", 2);
                        break;
                default:
                        r = buf_append(b, esc, 6);
                }
        }
        return r < 0 ? r : buf_append(b, "\"", 1);
}

int listing_json_append(const struct listing *l, uint32_t idx, bool utf8_only, struct buf *b) {
        const struct listing_node *n;
        int r;

        if (idx >= l->n_nodes)
                return -EINVAL;
        n = &l->nodes[idx];
        switch (n->type) {
        case NAR_REGULAR:
                r = buf_printf(b, "{\"type\":\"regular\",\"size\":%" PRIu64, n->size);
                if (r >= 0 && n->executable)
                        r = buf_append_str(b, ",\"executable\":true");
                /* Nix omits a zero narOffset; for us zero means unknown. */
                if (r >= 0 && n->nar_offset != 0)
                        r = buf_printf(b, ",\"narOffset\":%" PRIu64, n->nar_offset);
                return r < 0 ? r : buf_append(b, "}", 1);
        case NAR_SYMLINK:
                r = buf_append_str(b, "{\"type\":\"symlink\",\"target\":");
                if (r >= 0)
                        r = listing_json_string_append(b, l->pool + n->target_off, n->target_len, utf8_only);
                return r < 0 ? r : buf_append(b, "}", 1);
        case NAR_DIRECTORY:
                r = buf_append_str(b, "{\"type\":\"directory\",\"entries\":{");
                for (uint32_t i = 0; r >= 0 && i < n->child_count; i++) {
                        uint32_t c = l->child_index[n->child_start + i];
                        if (c >= l->n_nodes || c <= idx)
                                return -EINVAL; /* not a tree: would not terminate */
                        if (i > 0)
                                r = buf_append(b, ",", 1);
                        if (r >= 0)
                                r = listing_json_string_append(b, l->pool + l->nodes[c].name_off,
                                                       l->nodes[c].name_len, utf8_only);
                        if (r >= 0)
                                r = buf_append(b, ":", 1);
                        if (r >= 0)
                                r = listing_json_append(l, c, utf8_only, b);
                }
                return r < 0 ? r : buf_append(b, "}}", 2);
        default:
                return -EINVAL;
        }
}

int listing_to_json(const struct listing *l, char **ret, size_t *ret_len) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(LISTING_JSON_MAX);
        int r;

        r = buf_append_str(&b, "{\"version\":1,\"root\":");
        if (r >= 0)
                r = listing_json_append(l, 0, false, &b);
        if (r >= 0)
                r = buf_append(&b, "}", 1);
        if (r < 0)
                return r;
        return buf_steal(&b, ret, ret_len);
}

/* ---- JSON input ---- */

struct json_entry {
        const char *key;
        size_t len;
        json_t *value;
};

static int entry_cmp(const void *a, const void *b) {
        const struct json_entry *x = a, *y = b;
        return name_cmp(x->key, x->len, y->key, y->len);
}

static int json_u64(const json_t *v, uint64_t *ret) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return -EBADMSG;
        *ret = (uint64_t) json_integer_value(v);
        return 0;
}

static int parse_node(struct listing_builder *b, const json_t *node, const char *name, size_t len,
                      uint64_t nar_size) {
        const char *type, *key;
        json_t *v;
        int r;

        if (b->error)
                return b->error;
        if (!json_is_object(node))
                return builder_fail(b, -EBADMSG, "node is not an object");
        type = json_string_value(json_object_get(node, "type"));
        if (!type)
                return builder_fail(b, -EBADMSG, "node without a \"type\" string");

        if (streq(type, "regular")) {
                uint64_t size = 0, off = 0;
                bool exec = false, have_size = false;
                json_object_foreach((json_t *) node, key, v) {
                        if (streq(key, "type"))
                                continue;
                        if (streq(key, "size")) {
                                if (json_u64(v, &size) < 0)
                                        return builder_fail(b, -EBADMSG,
                                                            "\"size\" is not a non-negative integer");
                                have_size = true;
                        } else if (streq(key, "narOffset")) {
                                if (json_u64(v, &off) < 0 || off == 0)
                                        return builder_fail(b, -EBADMSG,
                                                            "\"narOffset\" is not a positive integer");
                        } else if (streq(key, "executable")) {
                                if (!json_is_boolean(v))
                                        return builder_fail(b, -EBADMSG,
                                                            "\"executable\" is not a boolean");
                                exec = json_is_true(v);
                        } else
                                return builder_fail(b, -EBADMSG, "unknown key \"%.64s\" in regular file",
                                                    key);
                }
                if (!have_size)
                        return builder_fail(b, -EBADMSG, "regular file without \"size\"");
                if (nar_size != 0 && (off > nar_size || size > nar_size - off))
                        return builder_fail(b, -EBADMSG,
                                            "file at narOffset %" PRIu64 " size %" PRIu64
                                            " ends beyond the NAR (%" PRIu64 " bytes)",
                                            off, size, nar_size);
                return builder_regular(b, name, len, size, exec, off);
        }

        if (streq(type, "symlink")) {
                const json_t *t = NULL;
                json_object_foreach((json_t *) node, key, v) {
                        if (streq(key, "target"))
                                t = v;
                        else if (!streq(key, "type"))
                                return builder_fail(b, -EBADMSG, "unknown key \"%.64s\" in symlink", key);
                }
                if (!json_is_string(t))
                        return builder_fail(b, -EBADMSG, "symlink without a \"target\" string");
                return builder_symlink(b, name, len, json_string_value(t), json_string_length(t));
        }

        if (streq(type, "directory")) {
                _cleanup_free_ struct json_entry *entries = NULL;
                const json_t *e = NULL;
                size_t n = 0;
                uint32_t idx;

                json_object_foreach((json_t *) node, key, v) {
                        if (streq(key, "entries"))
                                e = v;
                        else if (!streq(key, "type"))
                                return builder_fail(b, -EBADMSG, "unknown key \"%.64s\" in directory",
                                                    key);
                }
                if (!json_is_object(e))
                        return builder_fail(b, -EBADMSG, "directory without an \"entries\" object");
                r = builder_add(b, name, len, NAR_DIRECTORY, &idx);
                if (r < 0)
                        return r;
                if (json_object_size(e) > LISTING_NODES_MAX - b->n_nodes)
                        return builder_fail(b, -E2BIG, "more than %u nodes", LISTING_NODES_MAX);
                entries = calloc(json_object_size(e) + 1, sizeof *entries);
                if (!entries)
                        return builder_fail(b, -ENOMEM, "out of memory");
                json_object_foreach((json_t *) e, key, v) {
                        /* jansson refuses NUL in keys without JSON_ALLOW_NUL,
                         * so strlen is the key's length. */
                        entries[n++] = (struct json_entry){ key, strlen(key), v };
                }
                /* JSON objects are unordered; NAR order is byte order. */
                qsort(entries, n, sizeof *entries, entry_cmp);
                for (size_t i = 0; i < n; i++) {
                        r = parse_node(b, entries[i].value, entries[i].key, entries[i].len, nar_size);
                        if (r < 0)
                                return r;
                }
                return builder_directory_end(b);
        }

        return builder_fail(b, -EBADMSG, "unknown node type \"%.32s\"", type);
}

int listing_from_json_value(const json_t *root, uint64_t nar_size, struct listing *ret,
                            struct trove_error *err) {
        _cleanup_(listing_builder_freep) struct listing_builder *b = NULL;
        const json_t *node = root;
        int r;

        if (!json_is_object(root))
                return trove_error_set(err, -EBADMSG, "listing: not a JSON object");
        if (json_object_get(root, "version")) {
                const json_t *v = json_object_get(root, "version");
                if (!json_is_integer(v) || json_integer_value(v) != 1)
                        return trove_error_set(err, -EBADMSG, "listing: unsupported version");
                node = json_object_get(root, "root");
                if (!node)
                        return trove_error_set(err, -EBADMSG, "listing: no \"root\"");
                if (json_object_size(root) != 2)
                        return trove_error_set(err, -EBADMSG, "listing: unknown top-level key");
        }

        r = listing_builder_new(&b);
        if (r < 0)
                return trove_error_set(err, r, "out of memory");
        r = parse_node(b, node, NULL, 0, nar_size);
        if (r >= 0)
                r = listing_builder_take(b, ret);
        if (r < 0)
                return trove_error_set(err, r, "listing: %s", b->err.msg);
        return 0;
}

int listing_from_json(const char *text, size_t len, uint64_t nar_size, struct listing *ret,
                      struct trove_error *err) {
        json_error_t jerr;
        json_t *root;
        int r;

        if (len > LISTING_JSON_MAX)
                return trove_error_set(err, -E2BIG, "listing: larger than %zu bytes",
                                       (size_t) LISTING_JSON_MAX);
        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
                return trove_error_set(err, -EBADMSG, "listing: invalid JSON at line %d column %d: %s",
                                       jerr.line, jerr.column, jerr.text);
        r = listing_from_json_value(root, nar_size, ret, err);
        json_decref(root);
        return r;
}
