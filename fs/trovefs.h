/* SPDX-License-Identifier: Apache-2.0 */
/*
 * trovefs.h - the state of one trovefs mount, shared by the option parsing
 * and session setup (trovefs.c) and the FUSE operations (ops.c). There is
 * no global state: a struct trovefs is the session's userdata.
 */
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include "trove/chunkcache.h"
#include "trove/common.h"
#include "trove/fetcher.h"
#include "trove/manifest.h"

/* Read-ahead state slots per store path (a heuristic; races are harmless). */
#define TROVEFS_RA_SLOTS 16

/* A store path that has been looked up. It stays in the table while the
 * kernel holds a reference to any of its nodes (nlookup > 0); when the
 * kernel has forgotten them all it leaves the table and is freed once no
 * operation uses it any more (refs). Its slot k is never reused, so an
 * inode number never names two things during one mount. */
struct trovefs_path {
        char *name;             /* base name <hash>-<name> */
        uint64_t index;         /* k: slot, in order of lookup */
        uint64_t nlookup;       /* kernel lookup count, all nodes together;
                                 * atomic, see path_looked_up in ops.c */
        uint32_t refs;          /* 1 for the table + operations in flight */
        struct manifest m;
        uint64_t ra_node[TROVEFS_RA_SLOTS];
        uint64_t ra_end[TROVEFS_RA_SLOTS];
};

struct trovefs {
        struct fetcher *fetcher;        /* set before the session loop runs */
        struct chunkcache *cache;       /* may be NULL */
        char *store_dir;
        uid_t uid;
        gid_t gid;
        double root_negative_timeout;   /* seconds */
        unsigned readahead_chunks;
        bool no_open;                   /* kernel supports ENOSYS from open */
        bool no_opendir;

        pthread_rwlock_t lock;          /* guards paths, n_paths, n_live, index */
        struct trovefs_path **paths;    /* by slot; NULL: forgotten */
        size_t n_paths;                 /* slots used so far */
        size_t cap_paths;
        size_t n_live;                  /* slots holding a path */
        uint64_t root_version;          /* changes of the root listing */
        uint32_t *index;                /* open addressing: path k + 1, 0 = empty */
        size_t index_cap;               /* power of two */

        /* counters, updated with __atomic builtins */
        uint64_t lookups;
        uint64_t root_lookups;
        uint64_t reads;
        uint64_t read_bytes;
        uint64_t read_errors;
        uint64_t forgets;               /* inodes the kernel forgot */
        uint64_t paths_dropped;         /* store paths freed after that */
};

extern const struct fuse_lowlevel_ops trovefs_ops;

int trovefs_init(struct trovefs *fs);
void trovefs_done(struct trovefs *fs);
/* The counters as one line of JSON (heap string). */
int trovefs_stats_json(struct trovefs *fs, char **ret, size_t *ret_len);
