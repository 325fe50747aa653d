/* SPDX-License-Identifier: Apache-2.0 */
/*
 * api.h - handlers of trove's own API under /_api/v1/ (documented in
 * docs/api.md), and of /health and /metrics. routes.c's table names them
 * with their permissions and body caps.
 */
#pragma once

#include "request.h"
#include "trove/profile.h"

/* A chunk upload is at most this big uncompressed; clients use the
 * server's chunking parameters (max 256 KiB by default). */
#define API_CHUNK_MAX (16u * 1024 * 1024)
/* Entries in one missing-paths / missing-chunks question. */
#define API_BATCH_MAX 100000
/* Body caps (the route table applies them before a body byte is read). */
#define API_CONFIG_BODY_MAX (64u * 1024)           /* cache create / configure */
#define API_LIST_BODY_MAX (8u * 1024 * 1024)       /* missing-paths, missing-chunks */
#define API_MANIFEST_BODY_MAX (64u * 1024 * 1024)  /* path commit */
#define API_BATCH_BODY_MAX (16u * 1024 * 1024)     /* chunk batch */
#define API_BATCH_RECORDS_MAX 4096
/* Learned prefetch profiles: one report holds at most this many paths, a
 * path's report or profile at most this many chunks (16384 chunks of
 * 64 KiB on average: 1 GiB read in a path's first seconds). */
#define API_PROFILE_PATHS_MAX PROFILE_REPORT_PATHS_MAX
#define API_PROFILE_CHUNKS_MAX PROFILE_CHUNKS_MAX
#define API_PROFILE_VALUES_MAX (4u * API_PROFILE_CHUNKS_MAX)
#define API_PROFILE_BODY_MAX PROFILE_REPORT_BODY_MAX
#define API_CHUNK_PUT_BODY_MAX (API_CHUNK_MAX + API_CHUNK_MAX / 128 + 4096) /* a zstd frame of a chunk */

/* Handlers of bodiless requests, and (with body, n) of requests whose body
 * the route table collected within the route's cap. */
int api_health(struct troved_request *rq);
int api_metrics(struct troved_request *rq);
int api_gc(struct troved_request *rq);
int api_recompress(struct troved_request *rq);
int api_cache_get(struct troved_request *rq);
int api_cache_create(struct troved_request *rq, const void *body, size_t n);
int api_cache_configure(struct troved_request *rq, const void *body, size_t n);
int api_cache_destroy(struct troved_request *rq);
int api_path_delete(struct troved_request *rq);
int api_paths_delete(struct troved_request *rq, const void *body, size_t n);
int api_pin(struct troved_request *rq, const void *body, size_t n);
int api_unpin(struct troved_request *rq, const void *body, size_t n);
int api_pins_get(struct troved_request *rq);
int api_rotate_key(struct troved_request *rq, const void *body, size_t n);
int api_missing_paths(struct troved_request *rq, const void *body, size_t n);
int api_missing_chunks(struct troved_request *rq, const void *body, size_t n);
int api_path_commit(struct troved_request *rq, const void *body, size_t n);
int api_chunks_post(struct troved_request *rq, const void *body, size_t n);
int api_chunk_get(struct troved_request *rq);
int api_chunk_put(struct troved_request *rq, const void *body, size_t n);
int api_manifest_get(struct troved_request *rq);
int api_profile_get(struct troved_request *rq);
int api_profiles_report(struct troved_request *rq, const void *body, size_t n);
