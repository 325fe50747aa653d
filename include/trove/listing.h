/* SPDX-License-Identifier: Apache-2.0 */
/*
 * listing.h - the file tree of one NAR, without its data: what Nix writes as
 * the `.ls` file ({"version":1,"root":{...}}, with narOffset per regular
 * file) and what trovefs serves directory lookups from.
 *
 * The tree is flat and immutable once built: nodes[0] is the root, node
 * indices are stable (trovefs derives inode numbers from them), and the
 * children of a directory are contiguous in child_index[] and sorted by
 * name, so a lookup is a binary search. All strings live in one pool.
 * A listing owns everything it points to; listing_free() releases it.
 */
#pragma once

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

void listing_free(struct listing *l);

static inline const char *listing_name(const struct listing *l, const struct listing_node *n) {
        return l->pool + n->name_off;
}
static inline const char *listing_target(const struct listing *l, const struct listing_node *n) {
        return l->pool + n->target_off;
}

/* Child of directory dir named name, or -ENOENT / -ENOTDIR. */
int listing_lookup(const struct listing *l, uint32_t dir, const char *name, size_t len,
                   uint32_t *ret);
/* Resolves a relative path ("" = root, "a/b"), not following symlinks. */
int listing_lookup_path(const struct listing *l, const char *path, uint32_t *ret);

/* Builder fed by nar_reader: create, pass listing_builder_callbacks with the
 * builder as userdata, then take the result. */
struct listing_builder;
int listing_builder_new(struct listing_builder **ret);
struct listing_builder *listing_builder_free(struct listing_builder *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct listing_builder *, listing_builder_free);
extern const struct nar_reader_callbacks listing_builder_callbacks;
int listing_builder_take(struct listing_builder *b, struct listing *ret);

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
