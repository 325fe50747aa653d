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
        uint32_t ra_run[TROVEFS_RA_SLOTS];   /* sequential reads in a row */
        uint64_t walk_end;      /* NAR offset where the last read ended */
        uint32_t walk_run;      /* files read from their start in NAR order in a row */

        /* Learned prefetch (learn.c). Recording: chunks read before
         * record_until_ms (monotonic; 0: not recording), by index, in
         * first-touch order; seen marks those in trace. prefetched marks
         * chunks the profile fetched that no read used yet. Bitmaps are
         * changed with __atomic builtins, the trace under learn_lock. */
        pthread_mutex_t learn_lock;
        uint64_t record_until_ms;
        uint8_t *seen;
        uint32_t *trace;
        uint32_t n_trace;
        uint32_t cap_trace;
        uint8_t *prefetched;
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
        bool prefetch;                  /* use learned profiles */
        bool record;                    /* report what is read */
        uint64_t record_window_ms;
        uint64_t prefetch_budget;       /* bytes prefetched per store path, at most */
        struct trovefs_learn *learn;    /* NULL when prefetch and record are off */
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
        uint64_t profiles_fetched;      /* profiles that named chunks */
        uint64_t profile_chunks;        /* chunks they named */
        uint64_t prefetched;            /* chunks fetched because of them */
        uint64_t prefetched_bytes;
        uint64_t prefetched_used;       /* of those, chunks a read used later */
        uint64_t prefetched_used_bytes;
        uint64_t reports_sent;          /* store paths reported */
        uint64_t report_errors;         /* reports the server did not take */
};

extern const struct fuse_lowlevel_ops trovefs_ops;

int trovefs_init(struct trovefs *fs);
void trovefs_done(struct trovefs *fs);
/* Releases a reference to a store path (ops.c). */
void trovefs_path_unref(struct trovefs_path *p);

/* Learned prefetch and recording (learn.c). learn_start runs the two
 * background threads (after the fetcher exists); learn_path_added takes
 * a store path looked up for the first time (prefetch its profile, record
 * its reads); learn_read notes a read of chunks [first, last] of p;
 * learn_stop reports what was recorded and stops the threads. */
int learn_start(struct trovefs *fs);
void learn_path_added(struct trovefs *fs, struct trovefs_path *p);
void learn_read(struct trovefs *fs, struct trovefs_path *p, size_t first, size_t last);
void learn_path_free(struct trovefs_path *p);
void learn_stop(struct trovefs *fs);

/* The counters as one line of JSON (heap string). */
int trovefs_stats_json(struct trovefs *fs, char **ret, size_t *ret_len);
