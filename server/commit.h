/* SPDX-License-Identifier: Apache-2.0 */
/*
 * commit.h - store paths in a cache: making one visible (the last step of
 * every upload, `nix copy` or `trove push`), and the narinfo the cache
 * serves for one, signed on the fly with the cache's key.
 */
#pragma once

#include "httpd.h"
#include "troved.h"
#include "trove/narinfo.h"

/* Makes ni's store path visible in the cache with NAR nar_id (whose hash
 * and size the caller checked against ni). Replies 400/409 itself when the
 * path is refused. */
int commit_path(struct troved *t, struct httpd_request *req, const struct db_cache *cache, const struct narinfo *ni,
                int64_t nar_id);
/* The same without a request to answer (a path pulled from an upstream):
 * 1 if new, 0 if it was there, -EINVAL for a store path outside the cache's
 * store directory, -EEXIST if the cache holds it with another NAR. */
int commit_insert(struct troved *t, const struct db_cache *cache, const struct narinfo *ni, int64_t nar_id,
                  bool pulled);
/* The narinfo the cache serves for p, signed with the cache's key. */
int commit_narinfo(const struct db_cache *cache, const struct db_path *p, struct narinfo *ret);
