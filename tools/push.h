/* SPDX-License-Identifier: Apache-2.0 */
/*
 * push.h - the push engine behind `trove push` and `trove watch-store`:
 * store paths → NARs (nar_dump_path) → FastCDC chunks with the server's
 * parameters → only the chunks the server lacks, zstd-compressed, uploaded
 * by several workers → path commits in reference order.
 */
#pragma once

#include "trove/common.h"

enum push_output {
        PUSH_OUTPUT_PLAIN,    /* one line per path and a summary */
        PUSH_OUTPUT_PROGRESS, /* plain lines plus a live status line (TTY) */
        PUSH_OUTPUT_JSON,     /* one JSON object per line */
};

struct push_options {
        bool closure;              /* push the closures of the paths (default) */
        bool ignore_upstream;      /* push paths signed by upstream keys too */
        const char *upstream_keys; /* overrides the cache's list if non-NULL */
        unsigned jobs;             /* paths in flight (chunking/hashing) */
        unsigned uploads;          /* chunk upload workers */
        int level;                 /* zstd level */
        enum push_output output;
        bool quiet_summary;        /* no summary (watch-store prints its own) */
};

struct push_summary {
        size_t paths_total;
        size_t pushed, skipped_present, skipped_upstream, failed;
        uint64_t nar_bytes;        /* NAR bytes of pushed paths */
        uint64_t new_bytes;        /* uncompressed bytes of chunks uploaded */
        uint64_t sent_bytes;       /* request body bytes sent */
        double seconds;
};

void push_options_default(struct push_options *o);
/* Pushes paths (anything `nix path-info` accepts) to [SERVER:]CACHE.
 * Returns 0 when every path was pushed or skipped, 1 if some failed (each
 * reported), or a negative errno for a failure before any path was tried
 * (reported too). The summary is written in either of the first two cases. */
int push_run(const struct push_options *o, const char *spec, char *const *paths, size_t n_paths,
             struct push_summary *ret);
