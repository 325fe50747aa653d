/* SPDX-License-Identifier: Apache-2.0 */
/*
 * upstream.h - pull-through: a path a cache lacks is asked of the cache's
 * upstream binary caches (its configured URLs only, in order), accepted
 * only with a valid signature of one of the cache's upstreamKeys, its NAR
 * downloaded and stored through the same ingest as an upload (chunked,
 * deduplicated, NarHash and NarSize checked), and committed as a pulled
 * path that keeps the upstream's signatures.
 *
 * One download per path however many requests ask for it (the others wait
 * for its result), a bounded number of pulls at once, and a bounded memory
 * of upstream misses (remembered for upstream-negative-ttl seconds; errors
 * are not remembered).
 */
#pragma once

#include "httpd.h"
#include "troved.h"

#define UPSTREAMS_MAX 8           /* upstream URLs per cache */
#define UPSTREAM_URL_MAX 512      /* bytes of one upstream URL */

struct upstream;

int upstream_new(struct upstream **ret);
void upstream_free(struct upstream *u);
/* Forgets the remembered misses of a cache (its upstreams or keys changed). */
void upstream_forget(struct upstream *u, int64_t cache_id);

/* true if url may be an upstream: http:// or https://, a host, printable
 * ASCII without spaces, query or fragment, at most UPSTREAM_URL_MAX bytes. */
bool upstream_url_valid(const char *url);

/* The path of the cache (db_path_get), pulled from its upstreams first if
 * the cache lacks it. 1 and *ret filled if the cache has it (now), 0 if
 * neither the cache nor an upstream has it (the caller replies 404). On an
 * upstream error it replies 502 (504 for a timeout) itself and returns a
 * negative errno; other negative errnos are the server's own failures. */
int upstream_path_get(struct troved *t, struct httpd_request *req, const struct db_cache *cache, const char *hash,
                      struct db_path *ret);
