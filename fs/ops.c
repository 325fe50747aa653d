/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ops.c - trovefs's FUSE operations (low-level API). Each operation is a
 * worker returning -errno and a wrapper that replies exactly once.
 *
 * Inode numbers. The root of the mount is FUSE_ROOT_ID (1). The store path
 * looked up k-th (k = 0, 1, ... in order of first lookup during this mount)
 * owns the inode range [(k+1) << 32, (k+2) << 32): node i of its NAR listing
 * (node 0 = the store path itself; indices are canonical, see listing.h) is
 *
 *     ino = ((k + 1) << 32) | i
 *
 * A listing has at most LISTING_NODES_MAX (2^24) nodes, so i always fits
 * in the low 32 bits, and no store path inode is ever 1.
 *
 * Forgetting. Each store path counts the kernel's references to all its
 * nodes together (every entry reply, readdirplus entries included, adds
 * one; FORGET subtracts what the kernel says). When the count drops to 0
 * the path leaves the table and its manifest is freed (after the last
 * operation using it). Its slot k is never reused: while the kernel holds
 * any node of a path, its inode numbers stay the same; a path looked up
 * again after it was forgotten gets a new slot, hence new inode numbers,
 * which is fine since the kernel no longer knows the old ones. The slot
 * array costs 8 bytes per lookup of a forgotten path, and k is bounded by
 * 2^32 - 2 lookups per mount (then lookups fail with ENOSPC).
 *
 * The root directory lists the store paths held now, in lookup order: the
 * cache may hold millions of paths and a store is used by name, so trovefs
 * does not enumerate the server. Unknown names at the root are
 * negative entries for a short time only (paths may be pushed later);
 * everything inside a store path is immutable, so its entries, attributes
 * and negative lookups are cached for as long as the kernel wants.
 */
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "trove/buf.h"
#include "trove/storepath.h"
#include "trovefs.h"

#define TIMEOUT_FOREVER (365.0 * 24 * 3600)
#define ROOT_ATTR_TIMEOUT 1.0
#define STATS_XATTR "user.trove.stats"
#define INO_SHIFT 32
#define NODE_MASK 0xffffffffu
/* A read that continues within this distance of where the last one ended
 * counts as sequential (the kernel's own read-ahead issues reads slightly
 * out of order). */
#define SEQUENTIAL_SLACK (1u << 20)
/* A file whose first read starts within this distance after where the
 * path's last read ended is the next one of a walk through the tree in
 * NAR order (the NAR's framing of the entries in between, small files
 * skipped); after WALK_MIN such files in a row, read-ahead goes on past
 * the end of the file into the ones after it. */
#define WALK_SLACK (64u * 1024)
#define WALK_MIN 2u

#define COUNT(fs, field, n) __atomic_fetch_add(&(fs)->field, (n), __ATOMIC_RELAXED)
#define LOAD(fs, field) __atomic_load_n(&(fs)->field, __ATOMIC_RELAXED)

static inline fuse_ino_t make_ino(uint64_t k, uint32_t node) {
        return (fuse_ino_t) (((k + 1) << INO_SHIFT) | node);
}

/* ---- the table of store paths ---- */

static size_t name_hash(const char *s, size_t n) {
        /* The name starts with 32 nix32 characters of a hash: FNV-1a over
         * them is plenty. */
        uint64_t h = 1469598103934665603ULL;

        for (size_t i = 0; i < n; i++)
                h = (h ^ (uint8_t) s[i]) * 1099511628211ULL;
        return (size_t) h;
}

/* Under at least the read lock. */
static struct trovefs_path *path_find(struct trovefs *fs, const char *name, size_t len) {
        if (fs->index_cap == 0)
                return NULL;
        for (size_t i = name_hash(name, len) & (fs->index_cap - 1);;
             i = (i + 1) & (fs->index_cap - 1)) {
                uint32_t v = fs->index[i];
                if (v == 0)
                        return NULL;
                struct trovefs_path *p = fs->paths[v - 1];
                if (strlen(p->name) == len && memcmp(p->name, name, len) == 0)
                        return p;
        }
}

static void index_put(uint32_t *index, size_t cap, const char *name, uint32_t v) {
        size_t i = name_hash(name, strlen(name)) & (cap - 1);

        while (index[i] != 0)
                i = (i + 1) & (cap - 1);
        index[i] = v;
}

/* Under the write lock: removes the index entry of p (linear probing with
 * backward shift, so no tombstones). */
static void index_remove(struct trovefs *fs, const struct trovefs_path *p) {
        size_t mask = fs->index_cap - 1, i;

        for (i = name_hash(p->name, strlen(p->name)) & mask;; i = (i + 1) & mask) {
                if (fs->index[i] == 0)
                        return; /* not there: cannot happen */
                if (fs->paths[fs->index[i] - 1] == p)
                        break;
        }
        fs->index[i] = 0;
        for (size_t j = (i + 1) & mask; fs->index[j] != 0; j = (j + 1) & mask) {
                const char *name = fs->paths[fs->index[j] - 1]->name;
                size_t home = name_hash(name, strlen(name)) & mask;
                /* Move j back into the hole at i unless its home lies
                 * cyclically in (i, j]. */
                bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
                if (!stays) {
                        fs->index[i] = fs->index[j];
                        fs->index[j] = 0;
                        i = j;
                }
        }
}

/* Under the write lock: appends p, numbering it. */
static int path_add(struct trovefs *fs, struct trovefs_path *p) {
        if (fs->n_paths >= UINT32_MAX - 1 || fs->n_paths >= (SIZE_MAX >> INO_SHIFT) - 2)
                return -ENOSPC;
        if (fs->n_paths == fs->cap_paths) {
                size_t ncap = fs->cap_paths ? fs->cap_paths * 2 : 64;
                struct trovefs_path **np = reallocarray(fs->paths, ncap, sizeof *np);
                if (!np)
                        return -ENOMEM;
                fs->paths = np;
                fs->cap_paths = ncap;
        }
        if ((fs->n_live + 1) * 2 > fs->index_cap) {
                size_t ncap = fs->index_cap ? fs->index_cap * 2 : 128;
                uint32_t *ni = calloc(ncap, sizeof *ni);
                if (!ni)
                        return -ENOMEM;
                for (size_t i = 0; i < fs->n_paths; i++)
                        if (fs->paths[i])
                                index_put(ni, ncap, fs->paths[i]->name, (uint32_t) i + 1);
                free(fs->index);
                fs->index = ni;
                fs->index_cap = ncap;
        }
        p->index = fs->n_paths;
        p->refs = 1;
        fs->paths[fs->n_paths++] = p;
        fs->n_live++;
        fs->root_version++;
        index_put(fs->index, fs->index_cap, p->name, (uint32_t) fs->n_paths);
        return 0;
}

static void path_free(struct trovefs_path *p) {
        if (!p)
                return;
        learn_path_free(p);
        manifest_free(&p->m);
        free(p->name);
        free(p);
}

/* Releases a reference taken by ino_resolve or lookup_store_path. */
static void path_unref(struct trovefs_path *p) {
        if (p && __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0)
                path_free(p);
}

void trovefs_path_unref(struct trovefs_path *p) {
        path_unref(p);
}

/* The kernel now holds one more reference to a node of p (an entry reply
 * is about to go out).
 *
 * The nlookup invariant: p->nlookup is at least the number of kernel
 * references to nodes of p, and p is in the table while it is > 0.
 *
 * - Every change of nlookup is atomic. Increments run concurrently with
 *   each other and, for children, without the table lock; the decrement
 *   in forget_one is a compare-and-swap loop, so no increment is ever
 *   lost (a plain read-modify-write there would overwrite one that ran in
 *   between, and drop a path whose nodes the kernel still holds: the next
 *   request for them fails with ESTALE).
 * - nlookup reaches 0 only in forget_one, under the write lock, and the
 *   path leaves the table in the same critical section.
 * - An increment happens either under the table lock (read or write) on a
 *   path found in the table (lookup or readdirplus at the root), so no
 *   forget_one runs at the same time; or without the lock for a child of a
 *   node of p the kernel holds (lookup in, readdirplus of, that node): that
 *   node's references keep nlookup >= 1, and the kernel does not forget a
 *   node while a request on it runs, so the count cannot reach 0 between
 *   the caller's ino_resolve and this increment.
 * The increment comes before the entry reply goes out, so a FORGET for
 * the new reference always finds it counted. */
static void path_looked_up(struct trovefs_path *p) {
        __atomic_add_fetch(&p->nlookup, 1, __ATOMIC_ACQ_REL);
}

/* Resolves an inode inside a store path, taking a reference to the path:
 * release it with path_unref(). */
static int ino_resolve(struct trovefs *fs, fuse_ino_t ino, struct trovefs_path **ret_path,
                       uint32_t *ret_node) {
        uint64_t hi = (uint64_t) ino >> INO_SHIFT;
        uint32_t node = (uint32_t) (ino & NODE_MASK);
        struct trovefs_path *p = NULL;

        if (hi == 0)
                return -ENOENT;
        pthread_rwlock_rdlock(&fs->lock);
        if (hi - 1 < fs->n_paths)
                p = fs->paths[hi - 1];
        if (p)
                __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
        pthread_rwlock_unlock(&fs->lock);
        if (!p)
                return -ESTALE;
        if (node >= p->m.listing.n_nodes) {
                path_unref(p);
                return -ENOENT;
        }
        *ret_path = p;
        *ret_node = node;
        return 0;
}

int trovefs_init(struct trovefs *fs) {
        int r = pthread_rwlock_init(&fs->lock, NULL);
        return r ? -r : 0;
}

void trovefs_done(struct trovefs *fs) {
        /* No operation runs any more: the table's references are the last. */
        for (size_t i = 0; i < fs->n_paths; i++)
                path_free(fs->paths[i]);
        free(fs->paths);
        free(fs->index);
        fs->paths = NULL;
        fs->index = NULL;
        fs->n_paths = fs->cap_paths = fs->index_cap = fs->n_live = 0;
        pthread_rwlock_destroy(&fs->lock);
}

/* ---- attributes ---- */

/* The root's mtime counts the changes of its listing (1 + paths added +
 * paths dropped): the kernel caches directory listings and drops the cache
 * when it sees the mtime change, which it checks once the root's short
 * attribute timeout ran out. */
static void root_attr(struct trovefs *fs, struct stat *st) {
        uint64_t n;

        pthread_rwlock_rdlock(&fs->lock);
        n = fs->root_version;
        pthread_rwlock_unlock(&fs->lock);
        memset(st, 0, sizeof *st);
        st->st_ino = FUSE_ROOT_ID;
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
        st->st_uid = fs->uid;
        st->st_gid = fs->gid;
        st->st_blksize = 4096;
        st->st_atim.tv_sec = st->st_mtim.tv_sec = st->st_ctim.tv_sec = (time_t) (1 + n);
}

static void node_attr(struct trovefs *fs, const struct trovefs_path *p, uint32_t node,
                      struct stat *st) {
        const struct listing_node *n = &p->m.listing.nodes[node];

        memset(st, 0, sizeof *st);
        st->st_ino = make_ino(p->index, node);
        st->st_uid = fs->uid;
        st->st_gid = fs->gid;
        st->st_nlink = 1;
        st->st_blksize = 65536;
        /* Nix's canonical timestamp. */
        st->st_atim.tv_sec = st->st_mtim.tv_sec = st->st_ctim.tv_sec = 1;
        switch (n->type) {
        case NAR_DIRECTORY:
                st->st_mode = S_IFDIR | 0555;
                st->st_nlink = 2;
                st->st_size = 4096;
                st->st_blocks = 8;
                break;
        case NAR_SYMLINK:
                st->st_mode = S_IFLNK | 0777;
                st->st_size = n->target_len;
                break;
        default:
                st->st_mode = S_IFREG | (n->executable ? 0555 : 0444);
                st->st_size = (off_t) n->size;
                st->st_blocks = (blkcnt_t) ((n->size + 511) / 512);
                break;
        }
}

static void node_entry(struct trovefs *fs, const struct trovefs_path *p, uint32_t node,
                       struct fuse_entry_param *e) {
        memset(e, 0, sizeof *e);
        e->ino = make_ino(p->index, node);
        e->generation = 1;
        node_attr(fs, p, node, &e->attr);
        e->attr_timeout = TIMEOUT_FOREVER;
        e->entry_timeout = TIMEOUT_FOREVER;
}

/* ---- lookup ---- */

/* A name at the root: the store path it names, fetching its manifest on
 * first use; counts the kernel reference the caller's reply gives and
 * returns a reference to the path (path_unref). -ENOENT for names that are
 * not store paths of this cache. */
static int lookup_store_path(struct trovefs *fs, const char *name, struct trovefs_path **ret) {
        _cleanup_free_ struct trovefs_path *p = NULL;
        struct trovefs_path *found;
        struct storepath sp;
        struct trove_error err = { "" };
        size_t len = strlen(name);
        const char *base;
        bool added = false;
        int r;

        if (storepath_parse_basename(name, len, &sp) < 0)
                return -ENOENT;

        pthread_rwlock_rdlock(&fs->lock);
        found = path_find(fs, name, len);
        if (found) {
                /* Under the lock: a concurrent forget cannot drop it now. */
                __atomic_add_fetch(&found->refs, 1, __ATOMIC_RELAXED);
                path_looked_up(found);
        }
        pthread_rwlock_unlock(&fs->lock);
        if (found) {
                *ret = found;
                return 0;
        }

        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        pthread_mutex_init(&p->learn_lock, NULL);
        r = fetcher_get_manifest(fs->fetcher, sp.hash, fs->store_dir, &p->m, &err);
        if (r == -ENOENT)
                return r;
        if (r < 0) {
                /* One line per failed lookup; the kernel does not cache
                 * the error, so the next access asks (and fetches) again. */
                if (r == -EKEYREJECTED)
                        log_error_errno(r, "refusing %s: %s", name, err.msg);
                else
                        log_error_errno(r, "lookup of %s failed: %s", name,
                                        err.msg[0] ? err.msg : strerror(-r));
                /* Whatever went wrong on the way (refused, unreachable,
                 * timed out, not verified), a program sees an I/O error. */
                return r == -ENOMEM ? r : -EIO;
        }
        /* The server must answer for exactly this path: same hash and same
         * name (another name with this hash is not this path). */
        base = strrchr(p->m.info.store_path, '/');
        if (!base || !streq(base + 1, name)) {
                log_debug("lookup of %s: the cache has %s under that hash", name,
                          p->m.info.store_path);
                manifest_free(&p->m);
                return -ENOENT;
        }
        if (p->m.listing.n_nodes == 0) {
                manifest_free(&p->m);
                return -EIO;
        }
        p->name = strdup(name);
        if (!p->name) {
                manifest_free(&p->m);
                return -ENOMEM;
        }

        pthread_rwlock_wrlock(&fs->lock);
        found = path_find(fs, name, len);
        if (!found) {
                r = path_add(fs, p);
                if (r >= 0) {
                        found = TAKE_PTR(p);
                        added = true;
                }
        }
        if (found) {
                __atomic_add_fetch(&found->refs, 1, __ATOMIC_RELAXED);
                path_looked_up(found);
        }
        pthread_rwlock_unlock(&fs->lock);
        if (p) /* another thread was first, or adding failed */
                path_free(TAKE_PTR(p));
        if (!found)
                return r;
        if (added)
                learn_path_added(fs, found);
        *ret = found;
        return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
        struct trovefs *fs = fuse_req_userdata(req);
        struct fuse_entry_param e;
        struct trovefs_path *p = NULL;
        uint32_t node, child;
        int r;

        COUNT(fs, lookups, 1);
        if (parent == FUSE_ROOT_ID) {
                COUNT(fs, root_lookups, 1);
                r = lookup_store_path(fs, name, &p);
                if (r == -ENOENT) {
                        /* Negative entry, briefly: the path may be pushed. */
                        memset(&e, 0, sizeof e);
                        e.entry_timeout = fs->root_negative_timeout;
                        fuse_reply_entry(req, &e);
                        return;
                }
                if (r < 0) {
                        fuse_reply_err(req, -r);
                        return;
                }
                node_entry(fs, p, 0, &e);
                path_unref(p);
                fuse_reply_entry(req, &e);
                return;
        }
        r = ino_resolve(fs, parent, &p, &node);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        r = listing_lookup(&p->m.listing, node, name, strlen(name), &child);
        if (r == -ENOENT) {
                /* Immutable: this name will never exist. */
                path_unref(p);
                memset(&e, 0, sizeof e);
                e.entry_timeout = TIMEOUT_FOREVER;
                fuse_reply_entry(req, &e);
                return;
        }
        if (r < 0) {
                path_unref(p);
                fuse_reply_err(req, r == -EINVAL ? ENOTDIR : -r);
                return;
        }
        node_entry(fs, p, child, &e);
        path_looked_up(p);
        path_unref(p);
        fuse_reply_entry(req, &e);
}

/* Under the write lock: the kernel forgot n references to ino. Returns
 * the path when it left the table (the caller drops the table's
 * reference outside the lock). */
static struct trovefs_path *forget_one(struct trovefs *fs, fuse_ino_t ino, uint64_t n) {
        uint64_t hi = (uint64_t) ino >> INO_SHIFT;
        struct trovefs_path *p;

        if (hi == 0 || hi - 1 >= fs->n_paths || !(p = fs->paths[hi - 1]))
                return NULL;
        COUNT(fs, forgets, 1);
        /* See path_looked_up: increments may run concurrently. */
        uint64_t old = __atomic_load_n(&p->nlookup, __ATOMIC_ACQUIRE), left;
        do
                left = old > n ? old - n : 0;
        while (!__atomic_compare_exchange_n(&p->nlookup, &old, left, false, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE));
        if (left > 0)
                return NULL;
        index_remove(fs, p);
        fs->paths[hi - 1] = NULL;
        fs->n_live--;
        fs->root_version++;
        COUNT(fs, paths_dropped, 1);
        return p;
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
        struct trovefs *fs = fuse_req_userdata(req);
        struct trovefs_path *p;

        pthread_rwlock_wrlock(&fs->lock);
        p = forget_one(fs, ino, nlookup);
        pthread_rwlock_unlock(&fs->lock);
        path_unref(p);
        fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
        struct trovefs *fs = fuse_req_userdata(req);

        for (size_t i = 0; i < count;) {
                struct trovefs_path *dropped[64];
                size_t n = 0;

                /* In batches: frees happen outside the lock. */
                pthread_rwlock_wrlock(&fs->lock);
                for (; i < count && n < ELEMENTSOF(dropped); i++) {
                        struct trovefs_path *p = forget_one(fs, forgets[i].ino,
                                                            forgets[i].nlookup);
                        if (p)
                                dropped[n++] = p;
                }
                pthread_rwlock_unlock(&fs->lock);
                for (size_t k = 0; k < n; k++)
                        path_unref(dropped[k]);
        }
        fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct trovefs *fs = fuse_req_userdata(req);
        struct trovefs_path *p;
        struct stat st;
        uint32_t node;
        int r;

        if (ino == FUSE_ROOT_ID) {
                root_attr(fs, &st);
                fuse_reply_attr(req, &st, ROOT_ATTR_TIMEOUT);
                return;
        }
        r = ino_resolve(fs, ino, &p, &node);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        node_attr(fs, p, node, &st);
        path_unref(p);
        fuse_reply_attr(req, &st, TIMEOUT_FOREVER);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino) {
        struct trovefs *fs = fuse_req_userdata(req);
        struct trovefs_path *p;
        uint32_t node;
        int r = ino_resolve(fs, ino, &p, &node);

        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        if (p->m.listing.nodes[node].type != NAR_SYMLINK) {
                path_unref(p);
                fuse_reply_err(req, EINVAL);
                return;
        }
        fuse_reply_readlink(req, listing_target(&p->m.listing, &p->m.listing.nodes[node]));
        path_unref(p);
}

/* ---- open / directories ---- */

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct trovefs *fs = fuse_req_userdata(req);

        if ((fi->flags & O_ACCMODE) != O_RDONLY) {
                fuse_reply_err(req, EROFS);
                return;
        }
        if (fs->no_open) {
                /* Zero-message opens from now on: the kernel keeps its page
                 * cache (the content never changes). */
                fuse_reply_err(req, ENOSYS);
                return;
        }
        fi->keep_cache = 1;
        fi->noflush = 1;
        fuse_reply_open(req, fi);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct trovefs *fs = fuse_req_userdata(req);

        if (fs->no_opendir) {
                fuse_reply_err(req, ENOSYS);
                return;
        }
        /* Directories inside store paths never change: let the kernel
         * cache their entries. The root grows, so it is asked each time. */
        if (ino != FUSE_ROOT_ID) {
                fi->cache_readdir = 1;
                fi->keep_cache = 1;
        }
        fuse_reply_open(req, fi);
}

/* One directory listing reply. Offsets: 0 start, 1 after ".", 2 after "..",
 * 2 + i + 1 after entry i. */
struct dirbuf {
        fuse_req_t req;
        char *p;
        size_t size;
        size_t used;
        bool plus;
};

/* Adds one entry; false when it did not fit (stop). */
static bool dirbuf_add(struct dirbuf *d, const char *name, const struct fuse_entry_param *e,
                       off_t next) {
        size_t n;

        if (d->plus)
                n = fuse_add_direntry_plus(d->req, d->p + d->used, d->size - d->used, name, e,
                                           next);
        else
                n = fuse_add_direntry(d->req, d->p + d->used, d->size - d->used, name, &e->attr,
                                      next);
        if (n > d->size - d->used)
                return false;
        d->used += n;
        return true;
}

static void dot_entry(fuse_ino_t ino, struct fuse_entry_param *e) {
        /* ino 0: readdirplus gives no lookup for "." and "..". */
        memset(e, 0, sizeof *e);
        e->attr.st_ino = ino;
        e->attr.st_mode = S_IFDIR;
}

static int readdir_root(struct trovefs *fs, struct dirbuf *d, off_t off) {
        struct fuse_entry_param e;

        if (off < 1) {
                dot_entry(FUSE_ROOT_ID, &e);
                if (!dirbuf_add(d, ".", &e, 1))
                        return 0;
        }
        if (off < 2) {
                dot_entry(FUSE_ROOT_ID, &e);
                if (!dirbuf_add(d, "..", &e, 2))
                        return 0;
        }
        /* Offsets are slots: forgotten paths leave gaps, never shifts. */
        for (uint64_t i = off < 2 ? 0 : (uint64_t) off - 2;; i++) {
                struct trovefs_path *p;
                bool end, full = false;

                pthread_rwlock_rdlock(&fs->lock);
                end = i >= fs->n_paths;
                p = end ? NULL : fs->paths[i];
                if (p) {
                        node_entry(fs, p, 0, &e);
                        full = !dirbuf_add(d, p->name, &e, (off_t) (i + 3));
                        /* readdirplus entries are kernel references too. */
                        if (!full && d->plus)
                                path_looked_up(p);
                }
                pthread_rwlock_unlock(&fs->lock);
                if (end || full)
                        break;
        }
        return 0;
}

static int readdir_node(struct trovefs *fs, fuse_ino_t ino, struct dirbuf *d, off_t off) {
        const struct listing *l;
        const struct listing_node *n;
        struct trovefs_path *p;
        struct fuse_entry_param e;
        uint32_t node;
        int r;

        r = ino_resolve(fs, ino, &p, &node);
        if (r < 0)
                return r;
        l = &p->m.listing;
        n = &l->nodes[node];
        if (n->type != NAR_DIRECTORY) {
                path_unref(p);
                return -ENOTDIR;
        }
        if (off < 1) {
                dot_entry(ino, &e);
                if (!dirbuf_add(d, ".", &e, 1))
                        goto out;
        }
        if (off < 2) {
                dot_entry(node == 0 ? FUSE_ROOT_ID : make_ino(p->index, n->parent), &e);
                if (!dirbuf_add(d, "..", &e, 2))
                        goto out;
        }
        for (uint64_t i = off < 2 ? 0 : (uint64_t) off - 2; i < n->child_count; i++) {
                uint32_t c = l->child_index[n->child_start + i];
                node_entry(fs, p, c, &e);
                if (!dirbuf_add(d, listing_name(l, &l->nodes[c]), &e, (off_t) (i + 3)))
                        break;
                if (d->plus)
                        path_looked_up(p);
        }
out:
        path_unref(p);
        return 0;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
        struct trovefs *fs = fuse_req_userdata(req);
        struct dirbuf d = { .req = req, .size = MIN(size, (size_t) 1 << 20), .plus = plus };
        int r;

        d.p = malloc(d.size ? d.size : 1);
        if (!d.p) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        if (ino == FUSE_ROOT_ID)
                r = readdir_root(fs, &d, off);
        else
                r = readdir_node(fs, ino, &d, off);
        if (r < 0)
                fuse_reply_err(req, -r);
        else
                fuse_reply_buf(req, d.p, d.used);
        free(d.p);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi) {
        do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi) {
        do_readdir(req, ino, size, off, true);
}

/* ---- read ---- */

/* Chunks read ahead after n reads in a row: doubles every 4, up to 8 x
 * --readahead. */
static size_t ra_window(const struct trovefs *fs, uint32_t n) {
        return (size_t) fs->readahead_chunks << MIN(n / 4, 3u);
}

/* Starts fetching the chunks after the read [.., nar_end) up to the end of
 * the file, at most fs->readahead_chunks of them, when reads of this file
 * are sequential; past the end of the file when the path's files are read
 * one after another in NAR order (a tree walk: tar, cp -r, a checksum run
 * read files in directory order, which is the NAR's). */
static void read_ahead(struct trovefs *fs, struct trovefs_path *p, uint32_t node, uint64_t off,
                      uint64_t len, size_t last_chunk, uint64_t file_nar_offset, uint64_t file_nar_end) {
        unsigned slot = node % TROVEFS_RA_SLOTS;
        uint64_t prev_node = __atomic_load_n(&p->ra_node[slot], __ATOMIC_RELAXED);
        uint64_t prev_end = __atomic_load_n(&p->ra_end[slot], __ATOMIC_RELAXED);
        bool sequential = prev_node == (uint64_t) node + 1 &&
                          (off >= prev_end ? off - prev_end : prev_end - off) <= SEQUENTIAL_SLACK;
        uint64_t walk_end = __atomic_load_n(&p->walk_end, __ATOMIC_RELAXED);
        uint32_t run = sequential ? __atomic_load_n(&p->ra_run[slot], __ATOMIC_RELAXED) + 1 : 0;
        uint32_t walk = __atomic_load_n(&p->walk_run, __ATOMIC_RELAXED);
        uint64_t limit = file_nar_end;
        size_t window;

        __atomic_store_n(&p->ra_node[slot], (uint64_t) node + 1, __ATOMIC_RELAXED);
        __atomic_store_n(&p->ra_end[slot], off + len, __ATOMIC_RELAXED);
        __atomic_store_n(&p->ra_run[slot], MIN(run, 64u), __ATOMIC_RELAXED);
        __atomic_store_n(&p->walk_end, file_nar_offset + off + len, __ATOMIC_RELAXED);
        if (off == 0) {
                bool next = file_nar_offset >= walk_end && file_nar_offset - walk_end <= WALK_SLACK;
                walk = next ? MIN(walk + 1, 64u) : 0;
                __atomic_store_n(&p->walk_run, walk, __ATOMIC_RELAXED);
        }
        if (!sequential && off != 0)
                return;
        /* A file read front to back gets a window that doubles every 4
         * sequential reads, up to 8 x --readahead: more chunks in flight
         * while it streams, none wasted on a single small read. A walk
         * through the tree does the same across files. */
        window = ra_window(fs, run);
        if (walk >= WALK_MIN) {
                window = MAX(window, ra_window(fs, walk - WALK_MIN));
                limit = UINT64_MAX;
        }
        for (size_t i = last_chunk + 1, n = 0; i < p->m.n_chunks && n < window; i++, n++) {
                if (p->m.chunks[i].nar_offset >= limit)
                        break;
                fetcher_chunk_prefetch(fs->fetcher, &p->m.chunks[i]);
        }
}

/* What a read replies: pieces of referenced chunks, sent as they are
 * (no copy of the data into a reply buffer), then released. */
struct read_reply {
        struct fetcher_chunk **chunks;
        struct iovec *iov;
        size_t n;
};

static void read_reply_release(struct trovefs *fs, struct read_reply *rr) {
        for (size_t i = 0; i < rr->n; i++)
                fetcher_chunk_unref(fs->fetcher, rr->chunks[i]);
        free(rr->chunks);
        free(rr->iov);
        *rr = (struct read_reply) {};
}

static int read_path(struct trovefs *fs, struct trovefs_path *p, uint32_t node, size_t size,
                     off_t off, struct read_reply *rr) {
        const struct listing_node *n;
        uint64_t start, end, len;
        size_t first, last;
        int r;

        n = &p->m.listing.nodes[node];
        if (n->type == NAR_DIRECTORY)
                return -EISDIR;
        if (n->type != NAR_REGULAR)
                return -EINVAL;
        if (off < 0)
                return -EINVAL;
        if ((uint64_t) off >= n->size || size == 0)
                return 0;
        len = MIN((uint64_t) size, n->size - (uint64_t) off);
        if (ADD_OVERFLOW(n->nar_offset, (uint64_t) off, &start) || ADD_OVERFLOW(start, len, &end))
                return -EIO;
        if (n->nar_offset == 0)
                return -EIO; /* validated manifests always have offsets */

        r = manifest_find_chunk(&p->m, start, &first);
        if (r < 0)
                return -EIO;
        last = first;
        while (last + 1 < p->m.n_chunks &&
               p->m.chunks[last].nar_offset + p->m.chunks[last].length < end)
                last++;

        rr->chunks = calloc(last - first + 1, sizeof *rr->chunks);
        rr->iov = calloc(last - first + 1, sizeof *rr->iov);
        if (!rr->chunks || !rr->iov)
                return -ENOMEM;
        learn_read(fs, p, first, last);
        /* All covering chunks in parallel; then the read-ahead behind them. */
        for (size_t i = first + 1; i <= last; i++)
                fetcher_chunk_prefetch(fs->fetcher, &p->m.chunks[i]);
        read_ahead(fs, p, node, (uint64_t) off, len, last, n->nar_offset, n->nar_offset + n->size);

        for (size_t i = first; i <= last; i++) {
                const struct manifest_chunk *mc = &p->m.chunks[i];
                struct fetcher_chunk *c;
                const uint8_t *data;
                size_t clen;
                uint64_t a = MAX(start, mc->nar_offset);
                uint64_t b = MIN(end, mc->nar_offset + mc->length);

                r = fetcher_chunk_get(fs->fetcher, mc, &c);
                if (r < 0) {
                        char hex[HASH_BASE16_LEN + 1];
                        hex_encode(mc->id, SHA256_DIGEST_LEN, hex);
                        log_error_errno(r, "read of %s: chunk %s: %s", p->name, hex,
                                        strerror(-r));
                        return r == -ENOMEM ? r : -EIO;
                }
                rr->chunks[rr->n++] = c;
                data = fetcher_chunk_data(c, &clen);
                if (clen != mc->length || b < a)
                        return -EIO;
                rr->iov[rr->n - 1] = (struct iovec) { (void *) (data + (a - mc->nar_offset)), b - a };
        }
        return 0;
}

static int do_read(struct trovefs *fs, fuse_ino_t ino, size_t size, off_t off,
                   struct read_reply *rr) {
        struct trovefs_path *p;
        uint32_t node;
        int r;

        r = ino_resolve(fs, ino, &p, &node);
        if (r < 0)
                return r;
        r = read_path(fs, p, node, size, off, rr);
        path_unref(p);
        return r;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi) {
        struct trovefs *fs = fuse_req_userdata(req);
        struct read_reply rr = {};
        size_t len = 0;
        int r;

        COUNT(fs, reads, 1);
        r = do_read(fs, ino, size, off, &rr);
        if (r < 0) {
                read_reply_release(fs, &rr);
                COUNT(fs, read_errors, 1);
                fuse_reply_err(req, -r);
                return;
        }
        for (size_t i = 0; i < rr.n; i++)
                len += rr.iov[i].iov_len;
        COUNT(fs, read_bytes, len);
        /* The chunks stay referenced until the kernel has the bytes. */
        fuse_reply_iov(req, rr.iov, (int) rr.n);
        read_reply_release(fs, &rr);
}

/* ---- xattrs: the counters ---- */

int trovefs_stats_json(struct trovefs *fs, char **ret, size_t *ret_len) {
        struct buf b = BUF_INIT(4096);
        struct fetcher_stats f = { 0 };
        struct chunkcache_stats c = { 0 };
        size_t n_paths;
        int r;

        if (fs->fetcher)
                fetcher_get_stats(fs->fetcher, &f);
        if (fs->cache)
                chunkcache_get_stats(fs->cache, &c);
        pthread_rwlock_rdlock(&fs->lock);
        n_paths = fs->n_live;
        pthread_rwlock_unlock(&fs->lock);
        r = buf_printf(&b,
                       "{\"lookups\":%" PRIu64 ",\"rootLookups\":%" PRIu64
                       ",\"storePaths\":%zu,\"forgets\":%" PRIu64
                       ",\"storePathsDropped\":%" PRIu64 ",\"manifestsFetched\":%" PRIu64
                       ",\"manifestBytes\":%" PRIu64 ",\"manifestsRefused\":%" PRIu64
                       ",\"reads\":%" PRIu64
                       ",\"readBytes\":%" PRIu64 ",\"chunksFetched\":%" PRIu64
                       ",\"bytesFetched\":%" PRIu64 ",\"cacheHits\":%" PRIu64
                       ",\"cacheMisses\":%" PRIu64 ",\"memoryHits\":%" PRIu64
                       ",\"prefetches\":%" PRIu64 ",\"retries\":%" PRIu64
                       ",\"verifyFailures\":%" PRIu64 ",\"cacheCorrupt\":%" PRIu64
                       ",\"cacheFiles\":%" PRIu64 ",\"cacheBytes\":%" PRIu64
                       ",\"cacheEvicted\":%" PRIu64 ",\"errors\":%" PRIu64
                       ",\"failovers\":%" PRIu64 ",\"manifestsKept\":%" PRIu64
                       ",\"manifestCacheHits\":%" PRIu64 ",\"manifestCacheDamaged\":%" PRIu64
                       ",\"profilesFetched\":%" PRIu64 ",\"profileChunks\":%" PRIu64
                       ",\"chunksPrefetched\":%" PRIu64 ",\"bytesPrefetched\":%" PRIu64
                       ",\"prefetchedRead\":%" PRIu64 ",\"prefetchedReadBytes\":%" PRIu64
                       ",\"prefetchWastedBytes\":%" PRIu64 ",\"pathsReported\":%" PRIu64
                       ",\"reportErrors\":%" PRIu64 "}",
                       __atomic_load_n(&fs->lookups, __ATOMIC_RELAXED),
                       __atomic_load_n(&fs->root_lookups, __ATOMIC_RELAXED), n_paths,
                       __atomic_load_n(&fs->forgets, __ATOMIC_RELAXED),
                       __atomic_load_n(&fs->paths_dropped, __ATOMIC_RELAXED),
                       f.manifests_fetched, f.manifest_bytes, f.manifests_refused,
                       __atomic_load_n(&fs->reads, __ATOMIC_RELAXED),
                       __atomic_load_n(&fs->read_bytes, __ATOMIC_RELAXED), f.chunks_fetched,
                       f.bytes_fetched, f.cache_hits, f.cache_misses, f.mem_hits, f.prefetches,
                       f.retries, f.verify_failures, c.corrupt, c.files, c.bytes, c.evicted,
                       f.errors + __atomic_load_n(&fs->read_errors, __ATOMIC_RELAXED),
                       f.failovers, c.manifests_stored, f.manifests_kept_used,
                       c.manifest_damaged, LOAD(fs, profiles_fetched), LOAD(fs, profile_chunks),
                       LOAD(fs, prefetched), LOAD(fs, prefetched_bytes),
                       LOAD(fs, prefetched_used), LOAD(fs, prefetched_used_bytes),
                       LOAD(fs, prefetched_bytes) - MIN(LOAD(fs, prefetched_bytes),
                                                        LOAD(fs, prefetched_used_bytes)),
                       LOAD(fs, reports_sent), LOAD(fs, report_errors));
        if (r < 0) {
                buf_free(&b);
                return r;
        }
        return buf_steal(&b, ret, ret_len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
        struct trovefs *fs = fuse_req_userdata(req);
        _cleanup_free_ char *json = NULL;
        size_t len;
        int r;

        if (ino != FUSE_ROOT_ID || !streq(name, STATS_XATTR)) {
                fuse_reply_err(req, ENODATA);
                return;
        }
        r = trovefs_stats_json(fs, &json, &len);
        if (r < 0)
                fuse_reply_err(req, -r);
        else if (size == 0)
                fuse_reply_xattr(req, len);
        else if (size < len)
                fuse_reply_err(req, ERANGE);
        else
                fuse_reply_buf(req, json, len);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
        static const char names[] = STATS_XATTR; /* with its NUL */

        if (ino != FUSE_ROOT_ID) {
                if (size == 0)
                        fuse_reply_xattr(req, 0);
                else
                        fuse_reply_buf(req, NULL, 0);
                return;
        }
        if (size == 0)
                fuse_reply_xattr(req, sizeof names);
        else if (size < sizeof names)
                fuse_reply_err(req, ERANGE);
        else
                fuse_reply_buf(req, names, sizeof names);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino) {
        struct trovefs *fs = fuse_req_userdata(req);
        struct statvfs st = {
                .f_bsize = 4096,
                .f_frsize = 4096,
                .f_namemax = 255,
        };

        pthread_rwlock_rdlock(&fs->lock);
        st.f_files = fs->n_live;
        pthread_rwlock_unlock(&fs->lock);
        fuse_reply_statfs(req, &st);
}

static void op_init(void *userdata, struct fuse_conn_info *conn) {
        struct trovefs *fs = userdata;

        fs->no_open = conn->capable & FUSE_CAP_NO_OPEN_SUPPORT;
        fs->no_opendir = conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT;
        if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
                conn->want |= FUSE_CAP_CACHE_SYMLINKS;
        /* Always readdirplus (it costs no fetch here). AUTO_INVAL_DATA stays:
         * it makes the kernel check the root's mtime before using its cached
         * listing; nothing else's attributes ever change. */
        conn->want &= ~(unsigned) FUSE_CAP_READDIRPLUS_AUTO;
        if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
                conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
        if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
                conn->want |= FUSE_CAP_PARALLEL_DIROPS;
        if (conn->capable & FUSE_CAP_ASYNC_READ)
                conn->want |= FUSE_CAP_ASYNC_READ;
        log_debug("kernel: no_open=%d no_opendir=%d max_readahead=%u max_read=%u",
                  fs->no_open, fs->no_opendir, conn->max_readahead, conn->max_read);
}

static void op_destroy(void *userdata) {
        struct trovefs *fs = userdata;
        _cleanup_free_ char *json = NULL;
        size_t len;

        if (trovefs_stats_json(fs, &json, &len) >= 0)
                log_info("unmounted; counters: %s", json);
}

const struct fuse_lowlevel_ops trovefs_ops = {
        .init = op_init,
        .destroy = op_destroy,
        .lookup = op_lookup,
        .forget = op_forget,
        .forget_multi = op_forget_multi,
        .getattr = op_getattr,
        .readlink = op_readlink,
        .open = op_open,
        .read = op_read,
        .opendir = op_opendir,
        .readdir = op_readdir,
        .readdirplus = op_readdirplus,
        .getxattr = op_getxattr,
        .listxattr = op_listxattr,
        .statfs = op_statfs,
};
