/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd-push.c - `trove push`: the push engine (push.h) and its command line.
 *
 * Per store path, one read of the NAR, overlapped across cores:
 *   path worker  nar_dump_path → NAR SHA-256, the listing (nar_reader +
 *                listing_builder), FastCDC cuts; the chunks' bytes go into
 *                groups of a few MiB, handed to a bounded queue;
 *   uploaders    (each with its own codec and HTTP connection) take a
 *                group: SHA-256 of each chunk, one missing-chunks question
 *                for its distinct ids, then the missing ones compressed and
 *                POSTed in batches;
 *   commit       once the NAR's hash and size matched what Nix recorded,
 *                every group of the path is through and every reference
 *                inside the push set is committed.
 * A path whose NAR does not match Nix's database fails; chunks it already
 * sent are unreferenced and left to the server's GC.
 * Path workers take paths in topological order, so a worker that waits for
 * references only waits for paths handed out before its own: the earliest
 * unfinished path never waits, and there is no deadlock.
 */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "client.h"
#include "push.h"
#include "trove.h"
#include "trove/chunkbatch.h"
#include "trove/chunkcodec.h"
#include "trove/chunker.h"
#include "trove/hash.h"
#include "trove/listing.h"
#include "trove/manifest.h"
#include "trove/nar.h"
#include "trove/narinfo.h"
#include "trove/nix32.h"
#include "trove/signing.h"
#include "trove/storepath.h"

#define NIX_JSON_MAX ((size_t) 512 << 20)
#define MISSING_BATCH 10000
#define PATHS_BATCH 50000
/* A group of chunks handed to an uploader: it ends after the chunk that
 * brings it to GROUP_BYTES, or at GROUP_ITEMS chunks. */
#define GROUP_BYTES (4u * 1024 * 1024)
#define GROUP_ITEMS 256
/* Groups waiting for an uploader (each at most GROUP_BYTES plus one chunk:
 * about 36 MiB by default). */
#define QUEUE_SLOTS 8
#define SPARE_GROUPS 16
/* An uploader sends what is queued in batches of up to this many bytes of
 * frames / chunks per request (POST .../chunks). */
#define BATCH_BYTES (4u * 1024 * 1024)
#define BATCH_ITEMS 256
#define HTTP_ATTEMPTS 5

enum path_state {
        PATH_PENDING,
        PATH_DONE,
        PATH_FAILED,
        PATH_SKIPPED,
};

struct push_path {
        char *path;             /* full store path */
        char hash[STOREPATH_HASH_LEN + 1];
        uint8_t nar_hash[SHA256_DIGEST_LEN];
        uint64_t nar_size;
        char **refs;            /* base names, sorted */
        size_t n_refs;
        size_t *deps;           /* indices of references in the push set */
        size_t n_deps;
        char *deriver;          /* base name or NULL */
        char **sigs;
        size_t n_sigs;
        char *ca;
        enum path_state state;
        bool wanted;            /* in the missing set of the server */
        char *reason;           /* why skipped or failed */
};

struct chunk_rec {
        uint64_t offset;
        uint32_t length;
        uint32_t stored_size;   /* 0: not uploaded by this push */
        uint8_t id[SHA256_DIGEST_LEN];
};

struct job;

/* Consecutive chunks of one NAR, their bytes back to back. */
struct upload_group {
        struct job *job;
        size_t first;           /* index of the first into job->chunks */
        size_t n;
        uint32_t len[GROUP_ITEMS];
        uint8_t id[GROUP_ITEMS][SHA256_DIGEST_LEN];  /* filled by the uploader */
        uint32_t stored[GROUP_ITEMS];                /* frame sizes of those it sent */
        uint8_t *data;
        size_t bytes, cap;
};

struct pusher {
        const struct push_options *o;
        struct remote rm;
        char *cache;
        char *cache_path;       /* "/_api/v1/caches/<cache>" */
        char *store_dir;
        struct chunker_params cp;
        struct push_path *paths;
        size_t n_paths;
        size_t *order;          /* topological */
        size_t n_order;
        size_t next;            /* next index into order to hand out */

        pthread_mutex_t lock;
        pthread_cond_t cond;    /* path state changes, job uploads finish */
        pthread_cond_t q_put, q_get;
        struct upload_group *queue[QUEUE_SLOTS];
        size_t q_head, q_len;
        bool q_closed;
        /* Groups done with, kept for reuse: their buffers are already
         * mapped (a fresh one costs a page fault every 4 KiB). */
        struct upload_group *spare[SPARE_GROUPS];
        size_t n_spare;

        pthread_mutex_t out_lock;
        bool status_shown;

        _Atomic uint64_t bytes_read, bytes_sent, nar_bytes, new_bytes, pushed_nar_bytes;
        _Atomic size_t done, failed;
        size_t n_todo;
        struct timespec t0;
};

struct job {
        struct pusher *p;
        struct push_path *pp;
        struct chunk_rec *chunks;   /* grown and written back to under p->lock */
        size_t n_chunks, cap_chunks;
        size_t outstanding;     /* groups queued or uploading, under p->lock */
        int upload_error;
        char upload_msg[TROVE_ERRMSG_MAX];
        uint64_t sent;
        uint64_t new_bytes;
        size_t new_chunks;
};

static double elapsed(const struct pusher *p) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        return (double) (now.tv_sec - p->t0.tv_sec) + (double) (now.tv_nsec - p->t0.tv_nsec) / 1e9;
}

static void status_clear_locked(struct pusher *p) {
        if (p->status_shown) {
                fputs("\r\033[K", stderr);
                p->status_shown = false;
        }
}

/* One line on stdout, or a JSON object with --json. */
static void emit(struct pusher *p, json_t *event, const char *fmt, ...) _printf_(3, 4);
static void emit(struct pusher *p, json_t *event, const char *fmt, ...) {
        pthread_mutex_lock(&p->out_lock);
        status_clear_locked(p);
        if (p->o->output == PUSH_OUTPUT_JSON) {
                char *s = json_dumps(event, JSON_COMPACT);
                if (s) {
                        printf("%s\n", s);
                        free(s);
                }
        } else {
                va_list ap;
                va_start(ap, fmt);
                vprintf(fmt, ap);
                va_end(ap);
                putchar('\n');
        }
        fflush(stdout);
        pthread_mutex_unlock(&p->out_lock);
        json_decref(event);
}

static double dedup_pct(uint64_t nar, uint64_t fresh) {
        if (nar == 0)
                return 0.0;
        if (fresh >= nar)
                return 0.0;
        return 100.0 * (double) (nar - fresh) / (double) nar;
}

static void set_reason(struct push_path *pp, const char *fmt, ...) _printf_(2, 3);
static void set_reason(struct push_path *pp, const char *fmt, ...) {
        va_list ap;
        char *s = NULL;
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        free(pp->reason);
        pp->reason = s;
}

/* ---- metadata from Nix ---- */

static int strv_cmp(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static char *basename_dup(const char *path) {
        const char *s = strrchr(path, '/');
        return strdup(s ? s + 1 : path);
}

static int path_from_json(struct pusher *p, json_t *o, struct push_path *pp, struct trove_error *err) {
        const char *path = json_string_value(json_object_get(o, "path"));
        const char *nh = json_string_value(json_object_get(o, "narHash"));
        json_t *ns = json_object_get(o, "narSize");
        json_t *refs = json_object_get(o, "references");
        json_t *sigs = json_object_get(o, "signatures");
        const char *drv = json_string_value(json_object_get(o, "deriver"));
        const char *ca = json_string_value(json_object_get(o, "ca"));
        struct storepath sp;
        size_t i;

        if (!path || storepath_parse(p->store_dir, path, &sp) < 0)
                return trove_error_set(err, EBADMSG, "nix path-info: bad or missing \"path\"");
        if (json_is_false(json_object_get(o, "valid")))
                return trove_error_set(err, ENOENT, "%s is not a valid store path", path);
        if (!nh || hash_parse(nh, pp->nar_hash) < 0)
                return trove_error_set(err, EBADMSG, "nix path-info: %s has no usable narHash", path);
        if (!json_is_integer(ns) || json_integer_value(ns) <= 0)
                return trove_error_set(err, EBADMSG, "nix path-info: %s has no narSize", path);
        pp->nar_size = (uint64_t) json_integer_value(ns);
        pp->path = strdup(path);
        memcpy(pp->hash, sp.hash, sizeof pp->hash);
        if (!pp->path)
                return -ENOMEM;
        if (refs && !json_is_array(refs))
                return trove_error_set(err, EBADMSG, "nix path-info: bad references of %s", path);
        pp->refs = calloc(json_array_size(refs) + 1, sizeof *pp->refs);
        if (!pp->refs)
                return -ENOMEM;
        for (i = 0; i < json_array_size(refs); i++) {
                const char *r = json_string_value(json_array_get(refs, i));
                struct storepath rs;
                if (!r || storepath_parse(p->store_dir, r, &rs) < 0)
                        return trove_error_set(err, EBADMSG, "nix path-info: bad reference of %s", path);
                pp->refs[i] = basename_dup(r);
                if (!pp->refs[i])
                        return -ENOMEM;
                pp->n_refs++;
        }
        qsort(pp->refs, pp->n_refs, sizeof *pp->refs, strv_cmp);
        if (drv) {
                struct storepath ds;
                if (storepath_parse(p->store_dir, drv, &ds) >= 0) {
                        pp->deriver = basename_dup(drv);
                        if (!pp->deriver)
                                return -ENOMEM;
                }
        }
        if (sigs && json_is_array(sigs)) {
                pp->sigs = calloc(json_array_size(sigs) + 1, sizeof *pp->sigs);
                if (!pp->sigs)
                        return -ENOMEM;
                for (i = 0; i < json_array_size(sigs) && pp->n_sigs < NARINFO_SIGS_MAX; i++) {
                        const char *s = json_string_value(json_array_get(sigs, i));
                        if (!s || signing_sig_check(s, strlen(s), NULL) < 0)
                                continue;
                        pp->sigs[pp->n_sigs] = strdup(s);
                        if (!pp->sigs[pp->n_sigs])
                                return -ENOMEM;
                        pp->n_sigs++;
                }
                qsort(pp->sigs, pp->n_sigs, sizeof *pp->sigs, strv_cmp);
        }
        if (ca && ca[0]) {
                pp->ca = strdup(ca);
                if (!pp->ca)
                        return -ENOMEM;
        }
        return 0;
}

static int path_index_cmp(const void *a, const void *b, void *ud) {
        const struct push_path *paths = ud;
        return strcmp(paths[*(const size_t *) a].path, paths[*(const size_t *) b].path);
}

static int load_paths(struct pusher *p, char *const *args, size_t n_args, struct trove_error *err) {
        struct buf out = BUF_INIT(NIX_JSON_MAX);
        _cleanup_free_ char **argv = NULL;
        _cleanup_free_ size_t *byname = NULL;
        json_t *arr = NULL;
        json_error_t je;
        size_t k = 0, i;
        int r;

        argv = calloc(n_args + 8, sizeof *argv);
        if (!argv)
                return -ENOMEM;
        argv[k++] = (char *) "nix";
        argv[k++] = (char *) "--extra-experimental-features";
        argv[k++] = (char *) "nix-command";
        argv[k++] = (char *) "path-info";
        argv[k++] = (char *) "--json";
        if (p->o->closure)
                argv[k++] = (char *) "--recursive";
        for (i = 0; i < n_args; i++)
                argv[k++] = args[i];
        argv[k] = NULL;
        r = run_capture(argv, &out, false);
        if (r < 0) {
                buf_free(&out);
                return trove_error_set(err, r, "cannot run nix path-info: %s", strerror(-r));
        }
        if (r != 0) {
                buf_free(&out);
                return trove_error_set(err, EINVAL, "nix path-info failed (exit status %d); are the paths valid?",
                                       r);
        }
        arr = json_loadb((const char *) out.data, out.len, 0, &je);
        buf_free(&out);
        if (!json_is_array(arr)) {
                json_decref(arr);
                return trove_error_set(err, EBADMSG, "nix path-info --json printed no JSON array");
        }
        p->paths = calloc(json_array_size(arr) + 1, sizeof *p->paths);
        if (!p->paths) {
                json_decref(arr);
                return -ENOMEM;
        }
        for (i = 0; i < json_array_size(arr); i++) {
                r = path_from_json(p, json_array_get(arr, i), &p->paths[p->n_paths], err);
                p->n_paths++; /* freed by the caller whatever happened */
                if (r < 0) {
                        json_decref(arr);
                        return r;
                }
        }
        json_decref(arr);

        /* Dependencies inside the set, found by binary search on the path. */
        byname = calloc(p->n_paths + 1, sizeof *byname);
        if (!byname)
                return -ENOMEM;
        for (i = 0; i < p->n_paths; i++)
                byname[i] = i;
        qsort_r(byname, p->n_paths, sizeof *byname, path_index_cmp, p->paths);
        for (i = 0; i < p->n_paths; i++) {
                struct push_path *pp = &p->paths[i];
                pp->deps = calloc(pp->n_refs + 1, sizeof *pp->deps);
                if (!pp->deps)
                        return -ENOMEM;
                for (size_t j = 0; j < pp->n_refs; j++) {
                        char full[4096];
                        size_t lo = 0, hi = p->n_paths;
                        snprintf(full, sizeof full, "%s/%s", p->store_dir, pp->refs[j]);
                        while (lo < hi) {
                                size_t mid = (lo + hi) / 2;
                                int c = strcmp(p->paths[byname[mid]].path, full);
                                if (c == 0) {
                                        if (byname[mid] != i)
                                                pp->deps[pp->n_deps++] = byname[mid];
                                        break;
                                }
                                if (c < 0)
                                        lo = mid + 1;
                                else
                                        hi = mid;
                        }
                }
        }
        return 0;
}

/* Kahn's algorithm: references before the paths that use them. */
static int topo_sort(struct pusher *p, struct trove_error *err) {
        size_t n = p->n_paths, head = 0, tail = 0;
        _cleanup_free_ size_t *indeg = calloc(n + 1, sizeof(size_t));
        _cleanup_free_ size_t *rstart = calloc(n + 2, sizeof(size_t));
        _cleanup_free_ size_t *redges = NULL;
        _cleanup_free_ size_t *fill = calloc(n + 1, sizeof(size_t));
        size_t total = 0;

        p->order = calloc(n + 1, sizeof *p->order);
        if (!indeg || !rstart || !fill || !p->order)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                indeg[i] = p->paths[i].n_deps;
                total += p->paths[i].n_deps;
                for (size_t j = 0; j < p->paths[i].n_deps; j++)
                        rstart[p->paths[i].deps[j] + 1]++;
        }
        for (size_t i = 0; i < n; i++)
                rstart[i + 1] += rstart[i];
        redges = calloc(total + 1, sizeof *redges);
        if (!redges)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < p->paths[i].n_deps; j++) {
                        size_t d = p->paths[i].deps[j];
                        redges[rstart[d] + fill[d]++] = i;
                }
        for (size_t i = 0; i < n; i++)
                if (indeg[i] == 0)
                        p->order[tail++] = i;
        while (head < tail) {
                size_t v = p->order[head++];
                for (size_t e = rstart[v]; e < rstart[v + 1]; e++)
                        if (--indeg[redges[e]] == 0)
                                p->order[tail++] = redges[e];
        }
        if (tail != n)
                return trove_error_set(err, ELOOP, "the references of the paths form a cycle");
        p->n_order = n;
        return 0;
}

/* ---- server side checks ---- */

static int fetch_cache_info(struct pusher *p, struct http_client *hc, json_t **ret, struct trove_error *err) {
        json_t *j = NULL;
        long status;
        int r;

        r = api_call(hc, &p->rm, "GET", p->cache_path, NULL, NULL, 0, HTTP_ATTEMPTS, &status, &j, err);
        if (r < 0)
                return r;
        r = api_check(status, err);
        if (r < 0)
                return r;
        *ret = j;
        return 0;
}

/* POSTs {key: [ids]} to path and returns the "missing" set as a JSON array. */
static int ask_missing(struct pusher *p, struct http_client *hc, const char *path, const char *key, json_t *ids,
                       json_t **ret, struct trove_error *err) {
        json_t *req, *resp = NULL, *miss;
        char *body;
        long status;
        int r;

        req = json_pack("{s:O}", key, ids);
        if (!req)
                return -ENOMEM;
        body = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        if (!body)
                return -ENOMEM;
        r = api_call(hc, &p->rm, "POST", path, NULL, body, strlen(body), HTTP_ATTEMPTS, &status, &resp, err);
        free(body);
        if (r < 0)
                return r;
        r = api_check(status, err);
        if (r < 0)
                return r;
        miss = json_object_get(resp, "missing");
        if (!json_is_array(miss)) {
                json_decref(resp);
                return trove_error_set(err, EBADMSG, "%s: answer has no \"missing\" array", path);
        }
        json_incref(miss);
        json_decref(resp);
        *ret = miss;
        return 0;
}

static int ask_missing_paths(struct pusher *p, struct http_client *hc, struct trove_error *err) {
        _cleanup_free_ char *path = NULL;

        if (asprintf(&path, "%s/missing-paths", p->cache_path) < 0)
                return -ENOMEM;
        for (size_t start = 0; start < p->n_paths; start += PATHS_BATCH) {
                size_t end = MIN(p->n_paths, start + PATHS_BATCH);
                json_t *arr = json_array(), *miss = NULL;
                int r;

                if (!arr)
                        return -ENOMEM;
                for (size_t i = start; i < end; i++)
                        json_array_append_new(arr, json_string(p->paths[i].hash));
                r = ask_missing(p, hc, path, "paths", arr, &miss, err);
                json_decref(arr);
                if (r < 0)
                        return r;
                /* The answer is usually in request order: walk along, and
                 * search the whole batch only when it is not. */
                size_t at = start;
                for (size_t k = 0; k < json_array_size(miss); k++) {
                        const char *h = json_string_value(json_array_get(miss, k));
                        if (!h)
                                continue;
                        while (at < end && !streq(p->paths[at].hash, h))
                                at++;
                        if (at < end) {
                                p->paths[at].wanted = true;
                                continue;
                        }
                        for (size_t i = start; i < end; i++)
                                if (streq(p->paths[i].hash, h))
                                        p->paths[i].wanted = true;
                        at = start;
                }
                json_decref(miss);
        }
        return 0;
}

/* The upstream key (name or "name:base64") that signed pp, or NULL. A bare
 * name matches a signature by name (Nix checked it when the path entered
 * the store); a full key must verify. */
static const char *upstream_signer(struct pusher *p, const struct push_path *pp, char **keys, size_t n_keys) {
        for (size_t k = 0; k < n_keys; k++) {
                const char *key = keys[k];
                const char *colon = strchr(key, ':');
                size_t nl = colon ? (size_t) (colon - key) : strlen(key);
                for (size_t s = 0; s < pp->n_sigs; s++) {
                        const char *sig = pp->sigs[s];
                        if (strncmp(sig, key, nl) != 0 || sig[nl] != ':')
                                continue;
                        if (!colon)
                                return key;
                        struct signing_public pk;
                        if (signing_public_parse(key, &pk) < 0)
                                continue;
                        struct narinfo ni = {
                                .store_path = pp->path,
                                .nar_size = pp->nar_size,
                                .references = pp->refs,
                                .n_references = pp->n_refs,
                                .sigs = (char **) &pp->sigs[s],
                                .n_sigs = 1,
                        };
                        memcpy(ni.nar_hash, pp->nar_hash, SHA256_DIGEST_LEN);
                        if (narinfo_verify(&ni, p->store_dir, &pk, 1) > 0)
                                return key;
                }
        }
        return NULL;
}

/* ---- the path worker: read once, hash, cut, list ---- */

struct reader {
        struct job *job;
        struct sha256 nar;
        struct chunker ch;
        uint64_t offset;        /* NAR bytes so far */
        uint64_t chunk_start;
        uint32_t chunk_len;
        struct nar_reader *reader;
        int reader_state;
        struct upload_group *group;  /* being filled */
};

static int job_add_chunk(struct job *j, uint64_t off, uint32_t len) {
        struct pusher *p = j->p;
        int r = 0;

        /* Uploaders write ids and sizes back into this array: it moves
         * only under the lock. */
        pthread_mutex_lock(&p->lock);
        if (j->n_chunks == j->cap_chunks) {
                size_t nc = j->cap_chunks ? j->cap_chunks * 2 : 64;
                struct chunk_rec *c = nc > MANIFEST_CHUNKS_MAX ? NULL : reallocarray(j->chunks, nc, sizeof *c);
                if (!c)
                        r = nc > MANIFEST_CHUNKS_MAX ? -E2BIG : -ENOMEM;
                else {
                        j->chunks = c;
                        j->cap_chunks = nc;
                }
        }
        if (r >= 0)
                j->chunks[j->n_chunks++] = (struct chunk_rec){ .offset = off, .length = len };
        pthread_mutex_unlock(&p->lock);
        return r;
}

static void group_free(struct upload_group *g) {
        if (g) {
                free(g->data);
                free(g);
        }
}

/* Keeps g for reuse, or frees it. */
static void group_recycle(struct pusher *p, struct upload_group *g) {
        if (!g)
                return;
        pthread_mutex_lock(&p->lock);
        if (p->n_spare < SPARE_GROUPS) {
                p->spare[p->n_spare++] = g;
                g = NULL;
        }
        pthread_mutex_unlock(&p->lock);
        group_free(g);
}

static int group_new(struct job *j, size_t max_chunk, struct upload_group **ret) {
        struct pusher *p = j->p;
        struct upload_group *g = NULL;
        uint8_t *data = NULL;
        size_t cap = GROUP_BYTES + max_chunk;

        pthread_mutex_lock(&p->lock);
        if (p->n_spare > 0)
                g = p->spare[--p->n_spare];
        pthread_mutex_unlock(&p->lock);
        if (g) {
                data = g->data;
                memset(g, 0, offsetof(struct upload_group, data));
        } else {
                g = calloc(1, sizeof *g);
                data = g ? malloc(cap) : NULL;
                if (!data) {
                        free(g);
                        return -ENOMEM;
                }
        }
        g->job = j;
        g->first = j->n_chunks;
        g->data = data;
        g->bytes = 0;
        g->cap = cap;
        *ret = g;
        return 0;
}

/* ---- the upload queue ---- */

static int queue_put(struct pusher *p, struct upload_group *g) {
        pthread_mutex_lock(&p->lock);
        while (p->q_len == QUEUE_SLOTS && !p->q_closed)
                pthread_cond_wait(&p->q_put, &p->lock);
        if (p->q_closed) {
                pthread_mutex_unlock(&p->lock);
                return -ECANCELED;
        }
        p->queue[(p->q_head + p->q_len) % QUEUE_SLOTS] = g;
        p->q_len++;
        g->job->outstanding++;
        pthread_cond_signal(&p->q_get);
        pthread_mutex_unlock(&p->lock);
        return 0;
}

static struct upload_group *queue_get(struct pusher *p) {
        struct upload_group *g = NULL;

        pthread_mutex_lock(&p->lock);
        while (p->q_len == 0 && !p->q_closed)
                pthread_cond_wait(&p->q_get, &p->lock);
        if (p->q_len > 0) {
                g = p->queue[p->q_head];
                p->q_head = (p->q_head + 1) % QUEUE_SLOTS;
                p->q_len--;
                pthread_cond_signal(&p->q_put);
        }
        pthread_mutex_unlock(&p->lock);
        return g;
}

/* Hands the group being filled (if it holds a chunk) to the uploaders. */
static int reader_send_group(struct reader *s) {
        struct upload_group *g = s->group;
        int r;

        if (!g || g->n == 0)
                return 0;
        s->group = NULL;
        r = queue_put(s->job->p, g);
        if (r < 0)
                group_recycle(s->job->p, g);
        return r;
}

static int reader_cut(struct reader *s) {
        struct upload_group *g = s->group;
        int r = job_add_chunk(s->job, s->chunk_start, s->chunk_len);
        if (r < 0)
                return r;
        g->len[g->n++] = s->chunk_len;
        s->chunk_start += s->chunk_len;
        s->chunk_len = 0;
        if (g->n == GROUP_ITEMS || g->bytes >= GROUP_BYTES)
                return reader_send_group(s);
        return 0;
}

static int reader_sink(void *ud, const void *data, size_t n) {
        struct reader *s = ud;
        const uint8_t *p = data;
        int r;

        if (n == 0)
                return 0;
        r = sha256_update(&s->nar, p, n);
        if (r < 0)
                return r;
        if (s->reader_state == 0) {
                r = nar_reader_feed(s->reader, p, n);
                if (r < 0)
                        return r;
                s->reader_state = r;
        } else {
                return -EBADMSG; /* bytes after the end of the archive */
        }
        s->offset += n;
        atomic_fetch_add(&s->job->p->bytes_read, n);
        while (n > 0) {
                size_t cut = chunker_scan(&s->ch, p, n);
                size_t take = cut ? cut : n;
                if (!s->group) {
                        r = group_new(s->job, s->job->p->cp.max_size, &s->group);
                        if (r < 0)
                                return r;
                }
                /* The chunker bounds a chunk by max_size; a group has room for one more. */
                if (s->group->bytes + take > s->group->cap)
                        return -EIO;
                memcpy(s->group->data + s->group->bytes, p, take);
                s->group->bytes += take;
                s->chunk_len += (uint32_t) take;
                if (cut) {
                        r = reader_cut(s);
                        if (r < 0)
                                return r;
                }
                p += take;
                n -= take;
        }
        return 0;
}

struct uploader {
        struct pusher *p;
        pthread_t thread;
};

static int missing_in_group(struct pusher *p, struct http_client *hc, struct upload_group *g, bool *send,
                            struct trove_error *err);

/* Accounts for a group, sent or failed. */
static void group_done(struct pusher *p, struct upload_group *g, int r, const struct trove_error *err) {
        struct job *j = g->job;

        pthread_mutex_lock(&p->lock);
        for (size_t i = 0; i < g->n; i++) {
                struct chunk_rec *c = &j->chunks[g->first + i];
                memcpy(c->id, g->id[i], SHA256_DIGEST_LEN);
                if (r >= 0 && g->stored[i]) {
                        c->stored_size = g->stored[i];
                        j->sent += g->stored[i];
                        j->new_bytes += g->len[i];
                        j->new_chunks++;
                }
        }
        if (r < 0 && !j->upload_error) {
                static const char pre[] = "chunk upload failed: ";
                const char *m = err && err->msg[0] ? err->msg : strerror(-r);
                size_t ml = MIN(strlen(m), sizeof j->upload_msg - sizeof pre);
                j->upload_error = r;
                memcpy(j->upload_msg, pre, sizeof pre - 1);
                memcpy(j->upload_msg + sizeof pre - 1, m, ml);
                j->upload_msg[sizeof pre - 1 + ml] = 0;
        }
        j->outstanding--;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
        group_recycle(p, g);
}

static int post_batch(struct pusher *p, struct http_client *hc, const char *path, struct buf *body,
                      struct trove_error *err) {
        long status = 0;
        int r;

        if (body->len == 0)
                return 0;
        r = api_call(hc, &p->rm, "POST", path, "application/octet-stream", body->data, body->len, HTTP_ATTEMPTS,
                     &status, NULL, err);
        if (r >= 0)
                r = api_check(status, err);
        if (r >= 0)
                atomic_fetch_add(&p->bytes_sent, body->len);
        buf_reset(body);
        return r;
}

/* Hashes the group's chunks, asks which the server lacks, and sends those
 * compressed, in batches of up to BATCH_BYTES / BATCH_ITEMS (chunkbatch.h). */
static int upload_group(struct pusher *p, struct http_client *hc, struct chunkcodec *codec, struct upload_group *g,
                        uint8_t *frame, size_t cap, struct buf *body, const char *path, struct trove_error *err) {
        bool send[GROUP_ITEMS];
        size_t off = 0, items = 0;
        int r;

        for (size_t i = 0; i < g->n; i++) {
                r = sha256_buf(g->data + off, g->len[i], g->id[i]);
                if (r < 0)
                        return r;
                off += g->len[i];
        }
        r = missing_in_group(p, hc, g, send, err);
        if (r < 0)
                return r;
        buf_reset(body);
        off = 0;
        for (size_t i = 0; i < g->n; off += g->len[i], i++) {
                size_t flen;
                if (!send[i])
                        continue;
                r = chunkcodec_encode(codec, g->data + off, g->len[i], frame, cap, &flen);
                if (r < 0)
                        return r;
                if (body->len > 0 && (items == BATCH_ITEMS || body->len + flen + CHUNKBATCH_RECORD_HEADER > BATCH_BYTES)) {
                        r = post_batch(p, hc, path, body, err);
                        if (r < 0)
                                return r;
                        items = 0;
                }
                r = chunkbatch_append(body, g->id[i], frame, flen);
                if (r < 0)
                        return r;
                items++;
                g->stored[i] = (uint32_t) flen;
        }
        return post_batch(p, hc, path, body, err);
}

static void *upload_main(void *ud) {
        struct uploader *u = ud;
        struct pusher *p = u->p;
        _cleanup_(http_client_freep) struct http_client *hc = NULL;
        _cleanup_(chunkcodec_freep) struct chunkcodec *codec = NULL;
        _cleanup_free_ uint8_t *frame = NULL;
        size_t cap = chunkcodec_bound(p->cp.max_size);
        struct buf body = BUF_INIT(BATCH_BYTES + chunkcodec_bound(p->cp.max_size) + 64);
        struct http_client_options ho = {};
        struct upload_group *g;
        char path[512];
        int setup;

        snprintf(path, sizeof path, "%s/chunks", p->cache_path);
        setup = http_client_new(&ho, &hc);
        if (setup >= 0)
                setup = chunkcodec_new(p->o->level, &codec);
        if (setup >= 0) {
                frame = malloc(cap);
                if (!frame)
                        setup = -ENOMEM;
        }
        while ((g = queue_get(p))) {
                struct trove_error err = {};
                int r = setup, failed;

                pthread_mutex_lock(&p->lock);
                failed = g->job->upload_error;
                pthread_mutex_unlock(&p->lock);
                /* Once one group of a path failed, the rest is not sent. */
                if (r >= 0 && !failed)
                        r = upload_group(p, hc, codec, g, frame, cap, &body, path, &err);
                else if (r >= 0)
                        r = failed;
                group_done(p, g, r, &err);
        }
        buf_free(&body);
        return NULL;
}

static int group_index_cmp(const void *a, const void *b, void *ud) {
        const struct upload_group *g = ud;
        size_t x = *(const size_t *) a, y = *(const size_t *) b;
        int d = memcmp(g->id[x], g->id[y], SHA256_DIGEST_LEN);
        if (d)
                return d;
        return x < y ? -1 : x > y;
}

/* send[i]: chunk i of the group is the first of its id in the group, and
 * the server lacks it. */
static int missing_in_group(struct pusher *p, struct http_client *hc, struct upload_group *g, bool *send,
                            struct trove_error *err) {
        _cleanup_free_ char *path = NULL;
        size_t idx[GROUP_ITEMS], n_unique = 0, at = 0;
        char hex[2 * SHA256_DIGEST_LEN + 1];
        json_t *arr, *miss = NULL;
        int r;

        if (asprintf(&path, "%s/missing-chunks", p->cache_path) < 0)
                return -ENOMEM;
        /* Distinct ids only (a NAR may hold the same chunk twice): sort
         * indices by id and ask for the first of each run. */
        for (size_t i = 0; i < g->n; i++) {
                idx[i] = i;
                send[i] = false;
        }
        qsort_r(idx, g->n, sizeof *idx, group_index_cmp, g);
        for (size_t i = 0; i < g->n; i++)
                if (i == 0 || memcmp(g->id[idx[i]], g->id[idx[i - 1]], SHA256_DIGEST_LEN) != 0)
                        idx[n_unique++] = idx[i];
        arr = json_array();
        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < n_unique; i++) {
                hex_encode(g->id[idx[i]], SHA256_DIGEST_LEN, hex);
                json_array_append_new(arr, json_string(hex));
        }
        r = ask_missing(p, hc, path, "chunks", arr, &miss, err);
        json_decref(arr);
        if (r < 0)
                return r;
        for (size_t k = 0; k < json_array_size(miss); k++) {
                const char *h = json_string_value(json_array_get(miss, k));
                uint8_t id[SHA256_DIGEST_LEN];
                if (!h || hex_decode(h, strlen(h), id, SHA256_DIGEST_LEN) < 0)
                        continue;
                /* ids are sorted, and so is the answer if it keeps our
                 * order; fall back to a scan otherwise */
                while (at < n_unique && memcmp(g->id[idx[at]], id, SHA256_DIGEST_LEN) != 0)
                        at++;
                if (at < n_unique) {
                        send[idx[at]] = true;
                        continue;
                }
                for (size_t i = 0; i < n_unique; i++)
                        if (memcmp(g->id[idx[i]], id, SHA256_DIGEST_LEN) == 0)
                                send[idx[i]] = true;
                at = 0;
        }
        json_decref(miss);
        return 0;
}

/* ---- one path ---- */

static int wait_uploads(struct job *j, struct trove_error *err) {
        struct pusher *p = j->p;
        int r = 0;

        pthread_mutex_lock(&p->lock);
        while (j->outstanding > 0)
                pthread_cond_wait(&p->cond, &p->lock);
        if (j->upload_error) {
                r = trove_error_set(err, j->upload_error, "%s", j->upload_msg);
        }
        pthread_mutex_unlock(&p->lock);
        return r;
}

static int wait_references(struct job *j, struct trove_error *err) {
        struct pusher *p = j->p;
        struct push_path *pp = j->pp;
        int r = 0;

        pthread_mutex_lock(&p->lock);
        for (;;) {
                bool pending = false;
                for (size_t i = 0; i < pp->n_deps; i++) {
                        struct push_path *d = &p->paths[pp->deps[i]];
                        if (d->state == PATH_PENDING)
                                pending = true;
                        else if (d->state == PATH_FAILED) {
                                r = trove_error_set(err, EDEADLK, "its reference %s could not be pushed", d->path);
                                break;
                        }
                }
                if (r < 0 || !pending)
                        break;
                pthread_cond_wait(&p->cond, &p->lock);
        }
        pthread_mutex_unlock(&p->lock);
        return r;
}

static int commit_path(struct job *j, struct http_client *hc, struct listing *listing, struct trove_error *err) {
        struct pusher *p = j->p;
        struct push_path *pp = j->pp;
        struct manifest m = {};
        _cleanup_free_ char *text = NULL, *path = NULL;
        size_t len;
        long status;
        int r;

        m.info.store_path = pp->path;
        memcpy(m.info.nar_hash, pp->nar_hash, SHA256_DIGEST_LEN);
        m.info.nar_size = pp->nar_size;
        m.info.references = pp->refs;
        m.info.n_references = pp->n_refs;
        m.info.deriver = pp->deriver;
        m.info.sigs = pp->sigs;
        m.info.n_sigs = pp->n_sigs;
        m.info.ca = pp->ca;
        m.listing = *listing;
        m.n_chunks = j->n_chunks;
        m.chunks = calloc(j->n_chunks + 1, sizeof *m.chunks);
        if (!m.chunks)
                return -ENOMEM;
        for (size_t i = 0; i < j->n_chunks; i++) {
                m.chunks[i].nar_offset = j->chunks[i].offset;
                m.chunks[i].length = j->chunks[i].length;
                /* The server records the stored size of each frame itself;
                 * for chunks it already had we do not know it, and the
                 * length is a value every reader accepts. */
                m.chunks[i].stored_size = j->chunks[i].stored_size ? j->chunks[i].stored_size : j->chunks[i].length;
                memcpy(m.chunks[i].id, j->chunks[i].id, SHA256_DIGEST_LEN);
        }
        r = manifest_encode(&m, &text, &len);
        free(m.chunks);
        if (r == -EILSEQ)
                return trove_error_set(err, r, "a file name in the path is not valid UTF-8, which manifests "
                                               "cannot carry; push it with nix copy --to instead");
        if (r < 0)
                return trove_error_set(err, r, "cannot encode the manifest: %s", strerror(-r));
        if (asprintf(&path, "%s/paths", p->cache_path) < 0)
                return -ENOMEM;
        r = api_call(hc, &p->rm, "POST", path, NULL, text, len, HTTP_ATTEMPTS, &status, NULL, err);
        if (r < 0)
                return r;
        r = api_check(status, err);
        if (r < 0)
                return r;
        atomic_fetch_add(&p->bytes_sent, len);
        j->sent += len;
        return 0;
}

static int push_one(struct job *j, struct http_client *hc, struct trove_error *err) {
        struct pusher *p = j->p;
        struct push_path *pp = j->pp;
        _cleanup_(listing_builder_freep) struct listing_builder *lb = NULL;
        struct listing listing = {};
        struct reader s = { .job = j };
        struct trove_error derr = {};
        uint8_t digest[SHA256_DIGEST_LEN];
        int r, w;

        r = listing_builder_new(&lb);
        if (r >= 0)
                r = nar_reader_new(&listing_builder_callbacks, lb, &s.reader);
        if (r >= 0)
                r = chunker_init(&s.ch, &p->cp);
        if (r < 0)
                goto out;
        r = sha256_init(&s.nar);
        if (r < 0)
                goto out;

        r = nar_dump_path(pp->path, reader_sink, &s, &derr);
        if (r >= 0 && s.chunk_len > 0)
                r = reader_cut(&s);
        if (r >= 0)
                r = reader_send_group(&s);
        if (r >= 0)
                r = sha256_final(&s.nar, digest);
        sha256_done(&s.nar);
        if (r == -EBADMSG) {
                const char *m = listing_builder_error(lb);
                r = trove_error_set(err, r, "the NAR does not parse: %s",
                                    m && m[0] ? m : nar_reader_error(s.reader));
                goto out;
        }
        if (r < 0) {
                if (!err->msg[0])
                        r = trove_error_set(err, r, "reading %s: %s", pp->path,
                                            derr.msg[0] ? derr.msg : strerror(-r));
                goto out;
        }
        if (s.offset != pp->nar_size || memcmp(digest, pp->nar_hash, SHA256_DIGEST_LEN) != 0) {
                char got[HASH_STRING_MAX], want[HASH_STRING_MAX];
                hash_format(digest, HASH_NIX32, got);
                hash_format(pp->nar_hash, HASH_NIX32, want);
                r = trove_error_set(err, EBADMSG,
                                    "the path on disk does not match Nix's database: NAR %s (%" PRIu64
                                    " bytes), Nix recorded %s (%" PRIu64 " bytes); refusing to push it "
                                    "(nix-store --verify --check-contents --repair may fix the store)",
                                    got, s.offset, want, pp->nar_size);
                goto out;
        }
        r = nar_reader_finish(s.reader);
        if (r >= 0)
                r = listing_builder_take(lb, &listing);
        if (r < 0) {
                r = trove_error_set(err, r, "the NAR does not parse: %s", listing_builder_error(lb));
                goto out;
        }
        atomic_fetch_add(&p->nar_bytes, pp->nar_size);
out:
        group_recycle(p, s.group);
        /* Whatever happened, the groups handed out must be through before
         * the job's memory goes. */
        w = wait_uploads(j, r < 0 ? &derr : err);
        if (r >= 0)
                r = w;
        if (r >= 0)
                r = wait_references(j, err);
        if (r >= 0)
                r = commit_path(j, hc, &listing, err);
        nar_reader_free(s.reader);
        listing_free(&listing);
        return r;
}

struct worker {
        struct pusher *p;
        pthread_t thread;
};

static void *path_worker_main(void *ud) {
        struct worker *w = ud;
        struct pusher *p = w->p;
        _cleanup_(http_client_freep) struct http_client *hc = NULL;
        struct http_client_options ho = {};
        int setup = http_client_new(&ho, &hc);

        for (;;) {
                struct trove_error err = {};
                struct push_path *pp;
                struct job j = { .p = p };
                int r;

                pthread_mutex_lock(&p->lock);
                if (p->next >= p->n_order) {
                        pthread_mutex_unlock(&p->lock);
                        break;
                }
                pp = &p->paths[p->order[p->next++]];
                pthread_mutex_unlock(&p->lock);
                if (pp->state != PATH_PENDING)
                        continue;
                j.pp = pp;
                r = setup < 0 ? trove_error_set(&err, setup, "cannot make an HTTP client") : push_one(&j, hc, &err);
                pthread_mutex_lock(&p->lock);
                if (r >= 0)
                        pp->state = PATH_DONE;
                else {
                        pp->state = PATH_FAILED;
                        set_reason(pp, "%s", err.msg[0] ? err.msg : strerror(-r));
                }
                pthread_cond_broadcast(&p->cond);
                pthread_mutex_unlock(&p->lock);
                if (r >= 0) {
                        char nb[32], sb[32];
                        atomic_fetch_add(&p->done, 1);
                        atomic_fetch_add(&p->new_bytes, j.new_bytes);
                        atomic_fetch_add(&p->pushed_nar_bytes, pp->nar_size);
                        format_bytes(pp->nar_size, nb);
                        format_bytes(j.sent, sb);
                        emit(p,
                             json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "event", "pushed", "path", pp->path,
                                       "narSize", (json_int_t) pp->nar_size, "sentBytes", (json_int_t) j.sent,
                                       "chunks", (json_int_t) j.n_chunks, "newChunks", (json_int_t) j.new_chunks),
                             "pushed %s (NAR %s, sent %s, %zu of %zu chunks new, dedup %.1f%%)", pp->path, nb, sb,
                             j.new_chunks, j.n_chunks, dedup_pct(pp->nar_size, j.new_bytes));
                } else {
                        atomic_fetch_add(&p->failed, 1);
                        atomic_fetch_add(&p->new_bytes, j.new_bytes);
                        emit(p, json_pack("{s:s, s:s, s:s}", "event", "failed", "path", pp->path, "error", pp->reason ? pp->reason : "?"),
                             "failed %s: %s", pp->path, pp->reason ? pp->reason : "?");
                }
                free(j.chunks);
        }
        return NULL;
}

static volatile sig_atomic_t progress_stop;

static void *progress_main(void *ud) {
        struct pusher *p = ud;
        while (!progress_stop) {
                struct timespec ts = { .tv_sec = 0, .tv_nsec = 250 * 1000000L };
                char rb[32], sb[32];
                uint64_t rd = atomic_load(&p->bytes_read);
                nanosleep(&ts, NULL);
                if (progress_stop)
                        break;
                format_bytes(rd, rb);
                format_bytes(atomic_load(&p->bytes_sent), sb);
                pthread_mutex_lock(&p->out_lock);
                fprintf(stderr, "\r\033[K[%zu/%zu paths] read %s, sent %s, %.1f s", atomic_load(&p->done),
                        p->n_todo, rb, sb, elapsed(p));
                fflush(stderr);
                p->status_shown = true;
                pthread_mutex_unlock(&p->out_lock);
        }
        return NULL;
}

/* ---- the run ---- */

void push_options_default(struct push_options *o) {
        *o = (struct push_options){
                .closure = true,
                .jobs = 2,
                .uploads = 4,
                .level = CHUNK_LEVEL_DEFAULT,
                .output = isatty(STDERR_FILENO) ? PUSH_OUTPUT_PROGRESS : PUSH_OUTPUT_PLAIN,
        };
}

static void pusher_free(struct pusher *p) {
        for (size_t i = 0; i < p->n_paths; i++) {
                struct push_path *pp = &p->paths[i];
                free(pp->path);
                for (size_t k = 0; k < pp->n_refs; k++)
                        free(pp->refs[k]);
                free(pp->refs);
                free(pp->deps);
                free(pp->deriver);
                for (size_t k = 0; k < pp->n_sigs; k++)
                        free(pp->sigs[k]);
                free(pp->sigs);
                free(pp->ca);
                free(pp->reason);
        }
        for (size_t i = 0; i < p->n_spare; i++)
                group_free(p->spare[i]);
        free(p->paths);
        free(p->order);
        free(p->cache);
        free(p->cache_path);
        free(p->store_dir);
        remote_done(&p->rm);
}

static int split_words(const char *s, char ***ret, size_t *ret_n) {
        _cleanup_free_ char *copy = strdup(s ? s : "");
        char **v = NULL, *save = NULL;
        size_t n = 0;

        if (!copy)
                return -ENOMEM;
        for (char *w = strtok_r(copy, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
                char **nv = reallocarray(v, n + 2, sizeof *v);
                if (!nv)
                        goto oom;
                v = nv;
                v[n] = strdup(w);
                if (!v[n])
                        goto oom;
                v[++n] = NULL;
        }
        *ret = v;
        *ret_n = n;
        return 0;
oom:
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
        return -ENOMEM;
}

static int push_setup(struct pusher *p, const char *spec, char *const *args, size_t n_args, struct trove_error *err) {
        _cleanup_(http_client_freep) struct http_client *hc = NULL;
        struct http_client_options ho = {};
        json_t *info = NULL, *chunking;
        const char *sd, *up;
        char **keys = NULL;
        size_t n_keys = 0, n_up = 0, n_present = 0;
        int r;

        r = remote_resolve(spec, &p->rm, &p->cache, err);
        if (r < 0)
                return r;
        if (asprintf(&p->cache_path, "/_api/v1/caches/%s", p->cache) < 0)
                return -ENOMEM;
        r = http_client_new(&ho, &hc);
        if (r < 0)
                return trove_error_set(err, r, "cannot make an HTTP client");
        r = fetch_cache_info(p, hc, &info, err);
        if (r < 0)
                return r;
        sd = json_string_value(json_object_get(info, "storeDir"));
        p->store_dir = strdup(sd ? sd : STORE_DIR_DEFAULT);
        chunking = json_object_get(info, "chunking");
        p->cp.min_size = (uint32_t) json_integer_value(json_object_get(chunking, "min"));
        p->cp.avg_size = (uint32_t) json_integer_value(json_object_get(chunking, "avg"));
        p->cp.max_size = (uint32_t) json_integer_value(json_object_get(chunking, "max"));
        up = p->o->upstream_keys ? p->o->upstream_keys : json_string_value(json_object_get(info, "upstreamKeys"));
        r = p->store_dir ? split_words(up, &keys, &n_keys) : -ENOMEM;
        json_decref(info);
        if (r < 0)
                return r;
        if (chunker_params_check(&p->cp) < 0 || p->cp.max_size > CHUNK_SIZE_MAX) {
                r = trove_error_set(err, EPROTO, "the server announces unusable chunking parameters %u/%u/%u",
                                    p->cp.min_size, p->cp.avg_size, p->cp.max_size);
                goto out;
        }
        r = load_paths(p, args, n_args, err);
        if (r < 0)
                goto out;
        r = ask_missing_paths(p, hc, err);
        if (r < 0)
                goto out;
        for (size_t i = 0; i < p->n_paths; i++) {
                struct push_path *pp = &p->paths[i];
                const char *k;
                if (!pp->wanted) {
                        pp->state = PATH_SKIPPED;
                        set_reason(pp, "already in the cache");
                        n_present++;
                        continue;
                }
                if (!p->o->ignore_upstream && (k = upstream_signer(p, pp, keys, n_keys))) {
                        pp->state = PATH_SKIPPED;
                        set_reason(pp, "signed by upstream key %s", k);
                        n_up++;
                        continue;
                }
                p->n_todo++;
        }
        for (size_t i = 0; i < p->n_paths; i++)
                if (p->paths[i].state == PATH_SKIPPED)
                        emit(p, json_pack("{s:s, s:s, s:s}", "event", "skipped", "path", p->paths[i].path, "reason",
                                          p->paths[i].reason ? p->paths[i].reason : ""),
                             "skipped %s: %s", p->paths[i].path, p->paths[i].reason ? p->paths[i].reason : "");
        if (n_up > 0 && p->o->output != PUSH_OUTPUT_JSON)
                emit(p, NULL, "%zu path(s) signed by the cache's upstream keys were not pushed "
                              "(--ignore-upstream-keys pushes them)", n_up);
        r = topo_sort(p, err);
out:
        for (size_t i = 0; i < n_keys; i++)
                free(keys[i]);
        free(keys);
        return r;
}

int push_run(const struct push_options *o, const char *spec, char *const *args, size_t n_args,
             struct push_summary *ret) {
        struct pusher p = { .o = o };
        struct trove_error err = {};
        _cleanup_free_ struct uploader *ups = NULL;
        _cleanup_free_ struct worker *ws = NULL;
        pthread_t progress;
        bool have_progress = false;
        unsigned n_up = MAX(1u, o->uploads), n_w = MAX(1u, o->jobs);
        int r;

        clock_gettime(CLOCK_MONOTONIC, &p.t0);
        pthread_mutex_init(&p.lock, NULL);
        pthread_mutex_init(&p.out_lock, NULL);
        pthread_cond_init(&p.cond, NULL);
        pthread_cond_init(&p.q_put, NULL);
        pthread_cond_init(&p.q_get, NULL);
        r = http_global_init();
        if (r >= 0)
                r = push_setup(&p, spec, args, n_args, &err);
        if (r < 0) {
                log_error("push: %s", err.msg[0] ? err.msg : strerror(-r));
                goto out;
        }

        ups = calloc(n_up, sizeof *ups);
        ws = calloc(n_w, sizeof *ws);
        if (!ups || !ws) {
                r = log_error_errno(ENOMEM, "out of memory");
                goto out;
        }
        for (unsigned i = 0; i < n_up; i++) {
                ups[i].p = &p;
                if (pthread_create(&ups[i].thread, NULL, upload_main, &ups[i]) != 0) {
                        n_up = i;
                        break;
                }
        }
        for (unsigned i = 0; i < n_w; i++) {
                ws[i].p = &p;
                if (pthread_create(&ws[i].thread, NULL, path_worker_main, &ws[i]) != 0) {
                        n_w = i;
                        break;
                }
        }
        progress_stop = 0;
        if (o->output == PUSH_OUTPUT_PROGRESS && p.n_todo > 0)
                have_progress = pthread_create(&progress, NULL, progress_main, &p) == 0;
        if (n_w == 0 || n_up == 0)
                path_worker_main(&(struct worker){ .p = &p }); /* unreachable with working threads */
        for (unsigned i = 0; i < n_w; i++)
                pthread_join(ws[i].thread, NULL);
        pthread_mutex_lock(&p.lock);
        p.q_closed = true;
        pthread_cond_broadcast(&p.q_get);
        pthread_cond_broadcast(&p.q_put);
        pthread_mutex_unlock(&p.lock);
        for (unsigned i = 0; i < n_up; i++)
                pthread_join(ups[i].thread, NULL);
        if (have_progress) {
                progress_stop = 1;
                pthread_join(progress, NULL);
                pthread_mutex_lock(&p.out_lock);
                status_clear_locked(&p);
                pthread_mutex_unlock(&p.out_lock);
        }

        struct push_summary s = {
                .paths_total = p.n_paths,
                .pushed = atomic_load(&p.done),
                .failed = atomic_load(&p.failed),
                .nar_bytes = atomic_load(&p.pushed_nar_bytes),
                .new_bytes = atomic_load(&p.new_bytes),
                .sent_bytes = atomic_load(&p.bytes_sent),
                .seconds = elapsed(&p),
        };
        for (size_t i = 0; i < p.n_paths; i++)
                if (p.paths[i].state == PATH_SKIPPED) {
                        if (p.paths[i].wanted)
                                s.skipped_upstream++;
                        else
                                s.skipped_present++;
                }
        if (!o->quiet_summary) {
                char nb[32], sb[32];
                format_bytes(s.nar_bytes, nb);
                format_bytes(s.sent_bytes, sb);
                emit(&p,
                     json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f}", "event", "summary", "paths",
                               (json_int_t) s.paths_total, "pushed", (json_int_t) s.pushed, "skippedPresent",
                               (json_int_t) s.skipped_present, "skippedUpstream", (json_int_t) s.skipped_upstream,
                               "failed", (json_int_t) s.failed, "narBytes", (json_int_t) s.nar_bytes, "sentBytes",
                               (json_int_t) s.sent_bytes, "dedupPercent", dedup_pct(s.nar_bytes, s.new_bytes),
                               "seconds", s.seconds),
                     "%zu path(s) pushed, %zu already in the cache, %zu signed upstream, %zu failed; "
                     "NAR %s, sent %s, dedup %.1f%%, %.1f s (%.1f MB/s)",
                     s.pushed, s.skipped_present, s.skipped_upstream, s.failed, nb, sb,
                     dedup_pct(s.nar_bytes, s.new_bytes), s.seconds,
                     s.seconds > 0 ? (double) s.nar_bytes / 1e6 / s.seconds : 0.0);
        }
        if (s.failed > 0) {
                pthread_mutex_lock(&p.out_lock);
                fprintf(stderr, "trove: %zu path(s) failed:\n", s.failed);
                for (size_t i = 0; i < p.n_paths; i++)
                        if (p.paths[i].state == PATH_FAILED)
                                fprintf(stderr, "  %s: %s\n", p.paths[i].path,
                                        p.paths[i].reason ? p.paths[i].reason : "?");
                pthread_mutex_unlock(&p.out_lock);
        }
        if (ret)
                *ret = s;
        r = s.failed > 0 ? 1 : 0;
out:
        pusher_free(&p);
        pthread_mutex_destroy(&p.lock);
        pthread_mutex_destroy(&p.out_lock);
        pthread_cond_destroy(&p.cond);
        pthread_cond_destroy(&p.q_put);
        pthread_cond_destroy(&p.q_get);
        return r;
}

/* ---- command line ---- */

static void usage(FILE *f) {
        fprintf(f,
                "usage: trove push [OPTIONS] [SERVER:]CACHE PATH...\n"
                "       trove push [OPTIONS] [SERVER:]CACHE --stdin\n"
                "\n"
                "Pushes store paths and, by default, their closures to a trove cache. Only\n"
                "what the server lacks travels: paths it has are skipped, and of the others\n"
                "only the chunks (FastCDC cuts with the server's parameters) it does not hold\n"
                "are compressed and uploaded. Each NAR is checked against the hash and size in\n"
                "Nix's database first; a path only becomes visible once all its references are.\n"
                "SERVER is a name from 'trove login' (default: the default server).\n"
                "\n"
                "  --stdin                 read the paths from standard input, one per line\n"
                "  --no-closure            push only the paths given, not their closures\n"
                "  --ignore-upstream-keys  also push paths signed by the cache's upstream keys\n"
                "                          (skipped by default, e.g. cache.nixos.org-1)\n"
                "  --upstream-keys \"K...\"  use these upstream keys instead of the cache's\n"
                "  -j, --jobs N            paths processed in parallel (2)\n"
                "  -u, --uploads N         chunk uploads in flight (4)\n"
                "  --level N               zstd level of uploaded chunks (%d)\n"
                "  --json                  one JSON object per line (pushed/skipped/failed/summary)\n"
                "  --no-progress           no live status line even on a terminal\n"
                "  -h, --help              this text\n"
                "\n"
                "Exit status: 0 when every path was pushed or skipped, 1 if any failed (each\n"
                "with its reason), 2 for usage errors.\n",
                CHUNK_LEVEL_DEFAULT);
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *ret) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

static int read_stdin_paths(char ***ret, size_t *ret_n) {
        char *line = NULL, **v = NULL;
        size_t cap = 0, n = 0;
        ssize_t k;

        while ((k = getline(&line, &cap, stdin)) >= 0) {
                while (k > 0 && (line[k - 1] == '\n' || line[k - 1] == '\r' || line[k - 1] == ' '))
                        line[--k] = 0;
                if (k == 0)
                        continue;
                char **nv = reallocarray(v, n + 2, sizeof *v);
                if (!nv)
                        goto oom;
                v = nv;
                v[n] = strdup(line);
                if (!v[n])
                        goto oom;
                v[++n] = NULL;
        }
        free(line);
        *ret = v;
        *ret_n = n;
        return 0;
oom:
        free(line);
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
        return -ENOMEM;
}

int cmd_push(int argc, char **argv) {
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "stdin", no_argument, NULL, 's' },
                { "no-closure", no_argument, NULL, 'N' },
                { "ignore-upstream-keys", no_argument, NULL, 'I' },
                { "upstream-keys", required_argument, NULL, 'K' },
                { "jobs", required_argument, NULL, 'j' },
                { "uploads", required_argument, NULL, 'u' },
                { "level", required_argument, NULL, 'l' },
                { "json", no_argument, NULL, 'J' },
                { "no-progress", no_argument, NULL, 'P' },
                {}
        };
        struct push_options o;
        bool from_stdin = false, no_progress = false;
        char **paths = NULL;
        size_t n_paths = 0;
        unsigned v;
        int c, r;

        push_options_default(&o);
        optind = 1;
        while ((c = getopt_long(argc, argv, "hj:u:", opts, NULL)) >= 0) {
                switch (c) {
                case 'h': usage(stdout); return 0;
                case 's': from_stdin = true; break;
                case 'N': o.closure = false; break;
                case 'I': o.ignore_upstream = true; break;
                case 'K': o.upstream_keys = optarg; break;
                case 'j':
                case 'u':
                        if (parse_uint(optarg, 1, 64, &v) < 0) {
                                log_error("bad --%s '%s' (1..64)", c == 'j' ? "jobs" : "uploads", optarg);
                                return 2;
                        }
                        *(c == 'j' ? &o.jobs : &o.uploads) = v;
                        break;
                case 'l': {
                        char *end;
                        errno = 0;
                        long lv = strtol(optarg, &end, 10);
                        if (errno || end == optarg || *end || lv < -7 || lv > 22 || lv == 0) {
                                log_error("bad --level '%s'", optarg);
                                return 2;
                        }
                        o.level = (int) lv;
                        break;
                }
                case 'J': o.output = PUSH_OUTPUT_JSON; break;
                case 'P': no_progress = true; break;
                default: usage(stderr); return 2;
                }
        }
        if (no_progress && o.output == PUSH_OUTPUT_PROGRESS)
                o.output = PUSH_OUTPUT_PLAIN;
        if (optind >= argc || (from_stdin ? optind + 1 != argc : optind + 1 >= argc)) {
                usage(stderr);
                return 2;
        }
        if (from_stdin) {
                r = read_stdin_paths(&paths, &n_paths);
                if (r < 0)
                        return log_error_errno(r, "reading paths from stdin: %s", strerror(-r)), 1;
                if (n_paths == 0) {
                        free(paths);
                        log_info("no paths on standard input, nothing to push");
                        return 0;
                }
                r = push_run(&o, argv[optind], paths, n_paths, NULL);
                for (size_t i = 0; i < n_paths; i++)
                        free(paths[i]);
                free(paths);
        } else
                r = push_run(&o, argv[optind], argv + optind + 1, (size_t) (argc - optind - 1), NULL);
        return r < 0 ? 1 : r;
}
