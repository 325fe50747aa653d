/* SPDX-License-Identifier: Apache-2.0 */
/*
 * listing.h - the file tree of one NAR, without its data: what Nix writes as
 * the `.ls` file ({"version":1,"root":{...}}, with narOffset per regular
 * file) and what trovefs serves directory lookups from.
 *
 * The tree is flat and immutable once built: nodes[0] is the root, node
 * indices are stable (trovefs derives inode numbers from them), and the
 * children of a directory are contiguous in child_index[] and sorted by
 * name, so a lookup is a binary search. All strings live in one pool,
 * each NUL-terminated; the root's name is the empty string at offset 0.
 * A listing owns everything it points to; listing_free() releases it.
 *
 * Numbering is canonical: nodes are numbered in NAR order (depth-first,
 * pre-order, children by byte order of their names) and a directory's
 * child_index slots are allocated when the directory is closed. Every
 * source (a NAR, a .ls document, a manifest) of the same tree therefore
 * gives a byte-identical struct listing, so inode numbers do not depend on
 * where trovefs got the listing from.
 *
 * Names are never empty, ".", ".." and contain no '/' or NUL; they are at
 * most NAR_NAME_MAX bytes, nesting at most NAR_DEPTH_MAX, relative paths at
 * most NAR_PATH_MAX bytes, symlink targets 1..NAR_TARGET_MAX bytes without
 * NUL. A regular file's nar_offset is 0 when unknown (a .ls without
 * narOffset), otherwise a non-zero multiple of 8.
 */
#pragma once

#include "trove/buf.h"
#include "trove/common.h"
#include "trove/nar.h"

struct listing_node {
        uint32_t parent;        /* index of the parent; 0 for the root */
        uint32_t name_off;      /* into pool; root has an empty name */
        uint32_t name_len;
        uint8_t type;           /* enum nar_type */
        bool executable;
        uint64_t size;          /* regular: file size */
        uint64_t nar_offset;    /* regular: NAR offset of the first content byte */
        uint32_t target_off;    /* symlink: into pool */
        uint32_t target_len;
        uint32_t child_start;   /* directory: first slot in child_index */
        uint32_t child_count;
};

struct listing {
        struct listing_node *nodes;
        uint32_t n_nodes;
        uint32_t *child_index;  /* node indices, grouped per directory */
        char *pool;
        size_t pool_len;
};

/* Hard bounds on what a listing may hold, whatever its source. */
#define LISTING_NODES_MAX (16u * 1024 * 1024)
#define LISTING_POOL_MAX ((size_t) 1 << 30)
/* Longest JSON text listing_to_json() writes and listing_from_json() reads. */
#define LISTING_JSON_MAX ((size_t) 1 << 30)

void listing_free(struct listing *l);

static inline const char *listing_name(const struct listing *l, const struct listing_node *n) {
        return l->pool + n->name_off;
}
static inline const char *listing_target(const struct listing *l, const struct listing_node *n) {
        return l->pool + n->target_off;
}

/* Child of directory dir named name, or -ENOENT / -ENOTDIR (dir is not a
 * directory) / -EINVAL (dir out of range). */
int listing_lookup(const struct listing *l, uint32_t dir, const char *name, size_t len,
                   uint32_t *ret);
/* Resolves a relative path ("" = root, "a/b"; empty components are
 * skipped), not following symlinks: -ENOTDIR if a non-final component is
 * not a directory, -ENOENT if a component is missing. */
int listing_lookup_path(const struct listing *l, const char *path, uint32_t *ret);

/* Builder fed by nar_reader: create, pass listing_builder_callbacks with the
 * builder as userdata, then take the result. The builder checks the NAR
 * rules above itself (it does not rely on the reader), so events out of
 * order or out of bounds fail the callback with -EBADMSG (-E2BIG past
 * LISTING_NODES_MAX / LISTING_POOL_MAX); listing_builder_error() says why. */
struct listing_builder;
int listing_builder_new(struct listing_builder **ret);
struct listing_builder *listing_builder_free(struct listing_builder *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct listing_builder *, listing_builder_free);
extern const struct nar_reader_callbacks listing_builder_callbacks;
/* -EBADMSG if the tree is not complete yet or an event failed. */
int listing_builder_take(struct listing_builder *b, struct listing *ret);
const char *listing_builder_error(const struct listing_builder *b);

/* Whole-NAR convenience: parses a NAR held in memory. */
int listing_from_nar(const void *nar, size_t n, struct listing *ret, struct trove_error *err);

/* JSON as Nix writes .ls: {"version":1,"root":NODE}; NODE is
 * {"type":"directory","entries":{name:NODE,...}} |
 * {"type":"regular","size":N,"executable":true?,"narOffset":N} |
 * {"type":"symlink","target":"..."}. Output is compact, keys in Nix's order.
 * Returns a heap string the caller frees. */
int listing_to_json(const struct listing *l, char **ret, size_t *ret_len);
/* Parses and validates (names per NAR rules, sorted, bounds) a .ls document
 * or a bare root node (the form manifests embed). json_t-free API: takes
 * text. nar_size, if non-zero, bounds every narOffset+size. */
int listing_from_json(const char *text, size_t len, uint64_t nar_size, struct listing *ret,
                      struct trove_error *err);

/* For formats that embed a listing node (manifest.c): the same parse from
 * an already-parsed jansson value (struct json_t is jansson's json_t), and
 * the compact JSON of node idx appended to b. Appending fails with -EILSEQ
 * if utf8_only and a name or target is not valid UTF-8 (Nix itself writes
 * such bytes raw, which no strict JSON parser reads back). */
struct json_t;
int listing_from_json_value(const struct json_t *root, uint64_t nar_size, struct listing *ret,
                            struct trove_error *err);
int listing_json_append(const struct listing *l, uint32_t idx, bool utf8_only, struct buf *b);
/* One JSON string, escaped as Nix does (\" \\ \n \r \t, other control
 * bytes as \u00xx, all else raw); -EILSEQ as above. */
int listing_json_string_append(struct buf *b, const char *s, size_t n, bool utf8_only);
