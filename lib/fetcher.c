/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "trove/chunkcodec.h"
#include "trove/fetcher.h"
#include "trove/http.h"
#include "trove/nix32.h"
#include "trove/profile.h"
#include "trove/storepath.h"

#define WORKERS_DEFAULT 16
#define WORKERS_MAX 64
#define TIMEOUT_DEFAULT_MS 30000
#define ATTEMPTS_DEFAULT 5
#define MEM_CACHE_DEFAULT ((uint64_t) 64 << 20)
#define PREFETCH_DEFAULT 64
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 2000
#define IDLE_CLIENTS_MAX 8
#define URL_MAX 4096
/* A server that failed is left alone this long, doubled for each failure
 * in a row, before requests go to it again. */
#define SERVER_BACKOFF_FIRST_MS 1000
#define SERVER_BACKOFF_MAX_MS 60000
/* Separates the kept-manifest key from every other use of SHA-256 here. */
#define KEPT_KEY_DOMAIN "trove-kept-manifest-1\n"

/* One of the servers of the cache (--server, in the order given). */
struct server {
        char *base_url;         /* <server>/_api/v1/caches/<cache> */
        uint64_t retry_at_ms;   /* in back-off until then (0: not) */
        uint64_t backoff_ms;    /* the current back-off; 0 after a success */
};

enum chunk_state {
        CHUNK_PENDING,
        CHUNK_READY,
        CHUNK_FAILED,
};

/* One chunk, from its first request until it leaves the memory LRU.
 * Lifetime: the table holds it while in_table; each caller and the worker
 * fetching it hold a reference (refs). It is freed when neither is true.
 * A READY entry in the table with refs == 0 sits in the idle LRU. */
struct fetcher_chunk {
        uint8_t id[SHA256_DIGEST_LEN];
        uint32_t length;
        uint32_t stored_size;
        /* Stored as a delta against base (manifest version 2): the object
         * is fetched raw and decoded with the base's entry. */
        bool has_base;
        uint32_t base_length;
        uint8_t base[SHA256_DIGEST_LEN];
        enum chunk_state state;
        int err;
        unsigned refs;
        bool in_table;
        bool queued;
        bool prefetch;
        bool background;  /* in (or taken from) the background queue */
        uint8_t *data;
        struct fetcher_chunk *hnext;
        struct fetcher_chunk *qprev, *qnext; /* work queue */
        struct fetcher_chunk *lprev, *lnext; /* idle LRU, head = most recent */
};

struct fetcher {
        struct server *servers; /* failover order; guarded by servers_lock */
        size_t n_servers;
        pthread_mutex_t servers_lock;
        char *cache_name;
        char *auth_header;     /* "Authorization: Bearer …" or NULL */
        struct signing_public *trusted_keys; /* manifests must be signed by one */
        size_t n_trusted_keys;
        struct chunkcache *cache;
        long timeout_ms;
        unsigned max_attempts;
        uint64_t mem_max;
        unsigned max_prefetch;

        pthread_mutex_t lock;
        pthread_cond_t work_cond;  /* queue not empty, or stopping */
        pthread_cond_t done_cond;  /* some entry left PENDING */
        bool stopping;
        struct fetcher_chunk **buckets;
        size_t n_buckets;
        size_t n_entries;
        struct fetcher_chunk *qhead, *qtail;
        unsigned n_prefetch_queued;
        /* Background fetches (profile prefetch): taken only when the queue
         * above is empty, by at most bg_max workers at once. */
        struct fetcher_chunk *bhead, *btail;
        unsigned n_bg_queued;
        unsigned n_bg_running;
        unsigned bg_max;
        pthread_cond_t bg_cond;    /* room in the background queue, or stopping */
        struct fetcher_chunk *lhead, *ltail;
        uint64_t mem_bytes;

        /* Idle HTTP clients for manifest requests. */
        struct http_client *idle_clients[IDLE_CLIENTS_MAX];
        unsigned n_idle_clients;

        pthread_t *workers;
        unsigned n_workers;

        struct fetcher_stats stats; /* updated with __atomic builtins */
};

#define STAT_ADD(f, field, n) __atomic_fetch_add(&(f)->stats.field, (n), __ATOMIC_RELAXED)

/* A stored frame buffer a worker keeps from one chunk to the next when it
 * is at most this large: no allocation, page faults and unmap per chunk,
 * and at most this much held per worker. */
#define WORKER_FRAME_KEEP (320u * 1024)

/* What a worker thread owns: its connection, its zstd context and the
 * buffer its chunks' frames are received in. */
struct worker {
        struct http_client *client;
        struct chunkcodec *codec;
        int setup; /* < 0: the client or codec could not be made */
        struct buf frame;
};

static uint64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static void sleep_ms(uint64_t ms) {
        struct timespec ts = { (time_t) (ms / 1000), (long) (ms % 1000) * 1000000 };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static int client_new(const struct fetcher *f, struct http_client **ret) {
        struct http_client_options o = {
                .connect_timeout_ms = MIN(5000, MAX(f->timeout_ms / 4, 100)),
                .low_speed_limit = 1,
                .low_speed_time_s = MAX(1, MIN(10, f->timeout_ms / 2000)),
                .total_timeout_ms = MAX(f->timeout_ms / 2, 100),
                /* chunks may be redirected to presigned S3 URLs; curl does
                 * not forward our Authorization header to another host. */
                .follow_redirects = true,
        };
        return http_client_new(&o, ret);
}

/* ---- servers: failover and back-off ---- */

/* The server the next attempt goes to: the first one (in the order given)
 * not in back-off; if all are, the one whose back-off ends first. */
static size_t server_pick(struct fetcher *f, uint64_t now, bool *ret_available) {
        size_t best = 0;

        pthread_mutex_lock(&f->servers_lock);
        for (size_t i = 0; i < f->n_servers; i++) {
                if (f->servers[i].retry_at_ms <= now) {
                        pthread_mutex_unlock(&f->servers_lock);
                        *ret_available = true;
                        return i;
                }
                if (f->servers[i].retry_at_ms < f->servers[best].retry_at_ms)
                        best = i;
        }
        pthread_mutex_unlock(&f->servers_lock);
        *ret_available = false;
        return best;
}

/* Server i could not be reached or answered 5xx. Many requests fail on
 * one outage together: only the first failure after the server came out
 * of back-off lengthens it. */
static void server_failed(struct fetcher *f, size_t i, uint64_t now) {
        struct server *s = &f->servers[i];

        if (f->n_servers < 2)
                return; /* nowhere else to go: plain retries decide */
        pthread_mutex_lock(&f->servers_lock);
        if (s->retry_at_ms <= now) {
                s->backoff_ms = s->backoff_ms == 0
                                        ? SERVER_BACKOFF_FIRST_MS
                                        : MIN(s->backoff_ms * 2, SERVER_BACKOFF_MAX_MS);
                s->retry_at_ms = now + s->backoff_ms;
                log_debug("server %s failed; not asked again for %" PRIu64 " ms", s->base_url,
                          s->backoff_ms);
        }
        pthread_mutex_unlock(&f->servers_lock);
}

static void server_ok(struct fetcher *f, size_t i) {
        struct server *s = &f->servers[i];

        if (f->n_servers < 2)
                return;
        pthread_mutex_lock(&f->servers_lock);
        s->backoff_ms = 0;
        s->retry_at_ms = 0;
        pthread_mutex_unlock(&f->servers_lock);
}

static bool retryable(int r) {
        switch (r) {
        case -ENOENT:
        case -EACCES:
        case -EINVAL:
        case -ENOMEM:
        case -E2BIG:
        case -EPROTONOSUPPORT:
                return false;
        default:
                return true;
        }
}

/* One GET with retries. check() (may be NULL) validates a 200 body: a
 * negative return is treated as a bad transfer and retried (-EBADMSG) or
 * returned as is. Returns 0 with the body in b. */
typedef int (*check_fn)(void *userdata, const struct buf *b);

/* GET <server>/_api/v1/caches/<cache><path> into b, from the first
 * server that is not in back-off. A connection error, a timeout or a 5xx
 * puts that server in back-off and the request goes on at once to the next
 * (a failover); when every server is in back-off, the attempts wait as
 * plain retries do. The URL of the last attempt is left in url (URL_MAX
 * bytes). If capture is set, that response header of the successful
 * answer is kept in *ret_resp. */
static int get_with_retries(struct fetcher *f, struct http_client *client, const char *path,
                            char *url, struct buf *b, check_fn check, void *userdata,
                            const char *capture, struct http_response *ret_resp) {
        const char *headers[] = { f->auth_header, NULL };
        uint64_t deadline = now_ms() + (uint64_t) f->timeout_ms;
        uint64_t backoff = BACKOFF_FIRST_MS;
        /* Each server gets its turn on top of the retry budget. */
        unsigned max_attempts = f->max_attempts + (unsigned) f->n_servers - 1;
        bool failed = false, available;
        size_t s = 0;
        int r = -EIO;

        url[0] = '\0';
        for (unsigned attempt = 0; attempt < max_attempts; attempt++) {
                struct http_response resp;
                struct http_request req = {
                        .url = url,
                        .headers = f->auth_header ? headers : NULL,
                        .response = b,
                        .capture_header = capture,
                };
                size_t next;

                if (attempt > 0) {
                        uint64_t now = now_ms();
                        if (now >= deadline)
                                break;
                        next = server_pick(f, now, &available);
                        if (failed && next != s && available) {
                                STAT_ADD(f, failovers, 1);
                                log_debug("failing over from %s to %s", f->servers[s].base_url,
                                          f->servers[next].base_url);
                        } else {
                                sleep_ms(MIN(backoff, deadline - now));
                                backoff = MIN(backoff * 2, BACKOFF_MAX_MS);
                                now = now_ms();
                                if (now >= deadline)
                                        break;
                                next = server_pick(f, now, &available);
                        }
                        STAT_ADD(f, retries, 1);
                        s = next;
                } else
                        s = server_pick(f, now_ms(), &available);
                failed = false;
                if (snprintf(url, URL_MAX, "%s%s", f->servers[s].base_url, path) >= URL_MAX)
                        return -ENAMETOOLONG;
                buf_reset(b);
                r = http_request(client, &req, &resp);
                if (r < 0) {
                        log_debug_errno(r, "GET %s: %s", url, http_client_last_error(client));
                        if (!retryable(r))
                                return r;
                        server_failed(f, s, now_ms());
                        failed = true;
                        continue;
                }
                r = http_status_to_errno(resp.status);
                if (r < 0) {
                        log_debug("GET %s: HTTP %ld", url, resp.status);
                        /* 404, 401/403, 400: asking again will not help. */
                        if (r == -ENOENT || r == -EACCES || r == -EINVAL)
                                return r;
                        if (resp.status >= 500) {
                                server_failed(f, s, now_ms());
                                failed = true;
                        }
                        continue;
                }
                if (check) {
                        r = check(userdata, b);
                        if (r == -EBADMSG)
                                continue;
                        if (r < 0)
                                return r;
                }
                server_ok(f, s);
                if (ret_resp)
                        *ret_resp = resp;
                return 0;
        }
        return r < 0 ? r : -EIO;
}

/* ---- table, queue, LRU (all under f->lock) ---- */

static size_t id_hash(const uint8_t id[SHA256_DIGEST_LEN]) {
        uint64_t h;

        memcpy(&h, id, sizeof h);
        return (size_t) h;
}

static struct fetcher_chunk *table_find(struct fetcher *f, const uint8_t id[SHA256_DIGEST_LEN]) {
        for (struct fetcher_chunk *e = f->buckets[id_hash(id) & (f->n_buckets - 1)]; e;
             e = e->hnext)
                if (memcmp(e->id, id, SHA256_DIGEST_LEN) == 0)
                        return e;
        return NULL;
}

static void table_grow(struct fetcher *f) {
        size_t n = f->n_buckets * 2;
        struct fetcher_chunk **b = calloc(n, sizeof *b);

        if (!b)
                return; /* longer chains, still correct */
        for (size_t i = 0; i < f->n_buckets; i++)
                for (struct fetcher_chunk *e = f->buckets[i], *next; e; e = next) {
                        next = e->hnext;
                        e->hnext = b[id_hash(e->id) & (n - 1)];
                        b[id_hash(e->id) & (n - 1)] = e;
                }
        free(f->buckets);
        f->buckets = b;
        f->n_buckets = n;
}

static void table_insert(struct fetcher *f, struct fetcher_chunk *e) {
        size_t k;

        if (f->n_entries >= f->n_buckets)
                table_grow(f);
        k = id_hash(e->id) & (f->n_buckets - 1);
        e->hnext = f->buckets[k];
        f->buckets[k] = e;
        e->in_table = true;
        f->n_entries++;
}

static void table_remove(struct fetcher *f, struct fetcher_chunk *e) {
        struct fetcher_chunk **p = &f->buckets[id_hash(e->id) & (f->n_buckets - 1)];

        while (*p && *p != e)
                p = &(*p)->hnext;
        if (*p)
                *p = e->hnext;
        e->hnext = NULL;
        e->in_table = false;
        f->n_entries--;
}

static void queue_remove(struct fetcher *f, struct fetcher_chunk *e) {
        struct fetcher_chunk **head = e->background ? &f->bhead : &f->qhead;
        struct fetcher_chunk **tail = e->background ? &f->btail : &f->qtail;

        if (e->qprev)
                e->qprev->qnext = e->qnext;
        else
                *head = e->qnext;
        if (e->qnext)
                e->qnext->qprev = e->qprev;
        else
                *tail = e->qprev;
        e->qprev = e->qnext = NULL;
        e->queued = false;
        if (e->background) {
                f->n_bg_queued--;
                pthread_cond_broadcast(&f->bg_cond);
        } else if (e->prefetch)
                f->n_prefetch_queued--;
}

/* Appends e to the background queue. */
static void bqueue_push(struct fetcher *f, struct fetcher_chunk *e) {
        e->qnext = NULL;
        e->qprev = f->btail;
        if (f->btail)
                f->btail->qnext = e;
        f->btail = e;
        if (!f->bhead)
                f->bhead = e;
        e->queued = true;
        e->background = true;
        f->n_bg_queued++;
        pthread_cond_signal(&f->work_cond);
}

/* Whether a worker may take a background entry now. */
static bool background_ready(const struct fetcher *f) {
        return f->bhead && f->n_bg_running < f->bg_max;
}

static void queue_push(struct fetcher *f, struct fetcher_chunk *e, bool front) {
        if (front) {
                e->qprev = NULL;
                e->qnext = f->qhead;
                if (f->qhead)
                        f->qhead->qprev = e;
                f->qhead = e;
                if (!f->qtail)
                        f->qtail = e;
        } else {
                e->qnext = NULL;
                e->qprev = f->qtail;
                if (f->qtail)
                        f->qtail->qnext = e;
                f->qtail = e;
                if (!f->qhead)
                        f->qhead = e;
        }
        e->queued = true;
        if (e->prefetch)
                f->n_prefetch_queued++;
        pthread_cond_signal(&f->work_cond);
}

static void lru_remove(struct fetcher *f, struct fetcher_chunk *e) {
        if (e->lprev)
                e->lprev->lnext = e->lnext;
        else
                f->lhead = e->lnext;
        if (e->lnext)
                e->lnext->lprev = e->lprev;
        else
                f->ltail = e->lprev;
        e->lprev = e->lnext = NULL;
}

static void lru_push_front(struct fetcher *f, struct fetcher_chunk *e) {
        e->lprev = NULL;
        e->lnext = f->lhead;
        if (f->lhead)
                f->lhead->lprev = e;
        f->lhead = e;
        if (!f->ltail)
                f->ltail = e;
}

static void entry_destroy(struct fetcher *f, struct fetcher_chunk *e) {
        if (e->state == CHUNK_READY)
                f->mem_bytes -= e->length;
        free(e->data);
        free(e);
}

/* Drops idle READY entries, least recently used first, while over the
 * memory bound. */
static void mem_evict(struct fetcher *f) {
        while (f->mem_bytes > f->mem_max && f->ltail) {
                struct fetcher_chunk *e = f->ltail;
                lru_remove(f, e);
                table_remove(f, e);
                entry_destroy(f, e);
        }
}

static void entry_ref(struct fetcher *f, struct fetcher_chunk *e) {
        if (e->refs == 0 && e->in_table && e->state == CHUNK_READY)
                lru_remove(f, e);
        e->refs++;
}

static void entry_unref_locked(struct fetcher *f, struct fetcher_chunk *e) {
        if (--e->refs > 0)
                return;
        if (!e->in_table) {
                entry_destroy(f, e);
                return;
        }
        if (e->state == CHUNK_READY) {
                lru_push_front(f, e);
                mem_evict(f);
        }
}

/* ---- workers ---- */

struct chunk_check {
        struct chunkcodec *codec;
        const struct fetcher_chunk *e;
        uint8_t *out;
        struct fetcher *f;
};

static int check_chunk(void *userdata, const struct buf *b) {
        struct chunk_check *cc = userdata;
        size_t len = 0;
        int r;

        r = chunkcodec_decode(cc->codec, b->data, b->len, cc->e->id, cc->e->length, cc->out,
                              cc->e->length, &len);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || len != cc->e->length) {
                char hex[HASH_BASE16_LEN + 1];
                hex_encode(cc->e->id, SHA256_DIGEST_LEN, hex);
                log_debug_errno(r, "chunk %s from the server does not verify", hex);
                STAT_ADD(cc->f, verify_failures, 1);
                return -EBADMSG;
        }
        return 0;
}

static void run_entry_locked(struct fetcher *f, struct worker *w, struct fetcher_chunk *e);

/* Finds or creates the entry for mc and takes a reference (under the
 * lock). NULL when out of memory. */
static struct fetcher_chunk *entry_get(struct fetcher *f, const struct manifest_chunk *mc,
                                       bool prefetch, bool *ret_created) {
        struct fetcher_chunk *e = table_find(f, mc->id);

        *ret_created = false;
        if (e) {
                entry_ref(f, e);
                return e;
        }
        e = calloc(1, sizeof *e);
        if (!e)
                return NULL;
        memcpy(e->id, mc->id, SHA256_DIGEST_LEN);
        e->length = mc->length;
        e->stored_size = mc->stored_size;
        e->has_base = mc->has_base;
        e->base_length = mc->base_length;
        memcpy(e->base, mc->base, SHA256_DIGEST_LEN);
        e->state = CHUNK_PENDING;
        e->prefetch = prefetch;
        e->refs = 1;
        table_insert(f, e);
        *ret_created = true;
        return e;
}

/* A raw object of a delta chunk: the delta object naming the manifest's
 * base (checked for shape here; its content once the base is there), or a
 * plain frame (the server stores the chunk plain after all), decoded and
 * verified at once. */
struct raw_check {
        struct chunk_check cc;
        bool plain;
};

static int check_raw(void *userdata, const struct buf *b) {
        struct raw_check *rc = userdata;
        const struct fetcher_chunk *e = rc->cc.e;
        uint8_t base[SHA256_DIGEST_LEN];
        uint32_t base_len;
        uint64_t size;
        int k = chunkcodec_delta_parse(b->data, b->len, base, &base_len, &size);

        rc->plain = k == 0;
        if (k == 0)
                return check_chunk(&rc->cc, b);
        if (k < 0 || memcmp(base, e->base, SHA256_DIGEST_LEN) != 0 || base_len != e->base_length ||
            size != e->length) {
                log_debug("delta object from the server does not name the manifest's base");
                STAT_ADD(rc->cc.f, verify_failures, 1);
                return -EBADMSG;
        }
        return 0;
}

/* A delta chunk: the base is fetched as a chunk of its own (shared with
 * every other reader of it, by another worker if one is free, else by this
 * one) while this worker fetches the delta object; the result is checked
 * against the chunk's id like any other. A delta object that does not
 * decode with the verified base is fetched once more, then -EIO. */
static int load_delta(struct fetcher *f, struct worker *w, const struct fetcher_chunk *e, uint8_t *out,
                      const char *hex, struct buf *obj) {
        struct manifest_chunk bmc = { .length = e->base_length, .stored_size = 1 };
        struct raw_check rc = { { w->codec, e, out, f }, false };
        char path[32 + HASH_BASE16_LEN];
        char url[URL_MAX];
        struct fetcher_chunk *b;
        bool created;
        size_t len;
        int r = -EIO;

        memcpy(bmc.id, e->base, SHA256_DIGEST_LEN);
        pthread_mutex_lock(&f->lock);
        b = table_find(f, e->base);
        if (b && (b->has_base || b->length != e->base_length)) {
                /* One level only, and one length per id: a manifest that
                 * says otherwise is not followed. */
                pthread_mutex_unlock(&f->lock);
                log_debug("chunk %s: its base is a delta or of another length", hex);
                return -EIO;
        }
        b = entry_get(f, &bmc, false, &created);
        if (!b) {
                pthread_mutex_unlock(&f->lock);
                return -ENOMEM;
        }
        if (created)
                queue_push(f, b, true);
        else if (b->queued && (b->prefetch || b->background)) {
                queue_remove(f, b);
                b->prefetch = b->background = false;
                queue_push(f, b, true);
        }
        pthread_mutex_unlock(&f->lock);

        snprintf(path, sizeof path, "/chunks/%s?raw=1", hex);
        for (int attempt = 0; attempt < 2; attempt++) {
                r = get_with_retries(f, w->client, path, url, obj, check_raw, &rc, NULL, NULL);
                if (r == -EBADMSG)
                        r = -EIO;
                if (r < 0)
                        break;
                STAT_ADD(f, chunks_fetched, 1);
                STAT_ADD(f, bytes_fetched, obj->len);
                if (rc.plain)
                        break; /* decoded and verified by check_raw */
                pthread_mutex_lock(&f->lock);
                /* The base is received in w->frame: this delta object is in obj. */
                if (b->queued)
                        run_entry_locked(f, w, b);
                while (b->state == CHUNK_PENDING)
                        pthread_cond_wait(&f->done_cond, &f->lock);
                r = b->state == CHUNK_FAILED ? b->err : 0;
                pthread_mutex_unlock(&f->lock);
                if (r < 0)
                        break;
                /* b is READY and referenced: its data stays. */
                r = chunkcodec_decode_delta(w->codec, obj->data, obj->len, b->data, b->length, e->id, e->length, out,
                                            e->length, &len);
                if (r == -ENOMEM)
                        break;
                if (r >= 0 && len == e->length)
                        break;
                log_debug("delta chunk %s does not decode to its id with its base", hex);
                STAT_ADD(f, verify_failures, 1);
                r = -EIO;
        }
        pthread_mutex_lock(&f->lock);
        entry_unref_locked(f, b);
        pthread_mutex_unlock(&f->lock);
        if (r < 0 || rc.plain || !f->cache)
                return r;
        /* Kept locally as a plain frame: the next read needs no base. */
        buf_reset(obj);
        if (buf_reserve(obj, chunkcodec_bound(e->length)) >= 0 &&
            chunkcodec_encode(w->codec, out, e->length, obj->data, obj->cap, &len) >= 0) {
                obj->len = len;
                rc.plain = true;
        }
        return 0;
}

/* Fills out (e->length bytes) with the verified chunk: local cache, else
 * the server (then stored locally). A plain chunk's frame is received in
 * w->frame. */
static int load_chunk(struct fetcher *f, struct worker *w, const struct fetcher_chunk *e, uint8_t *out) {
        char hex[HASH_BASE16_LEN + 1];
        char path[16 + HASH_BASE16_LEN];
        char url[URL_MAX];
        size_t len;
        /* What a stored frame may be at most (docs/manifest.md). */
        size_t frame_max = (size_t) e->length + e->length / 128 + 1024;
        struct buf delta = BUF_INIT(chunkcodec_bound(CHUNK_SIZE_MAX));
        struct buf *b = &w->frame;
        struct chunk_check cc = { w->codec, e, out, f };
        int r;

        if (f->cache) {
                r = chunkcache_get(f->cache, w->codec, e->id, e->length, out, e->length, &len);
                if (r > 0) {
                        STAT_ADD(f, cache_hits, 1);
                        return 0;
                }
                if (r < 0)
                        log_debug_errno(r, "chunk cache read failed, fetching instead");
                STAT_ADD(f, cache_misses, 1);
        }

        hex_encode(e->id, SHA256_DIGEST_LEN, hex);
        if (e->has_base) {
                b = &delta;
                r = load_delta(f, w, e, out, hex, b);
                if (r < 0 || !b->len)
                        goto out;
                goto keep;
        }
        /* Room for the frame the manifest announces, in one allocation. */
        buf_reset(b);
        b->max = frame_max;
        if (e->stored_size <= frame_max)
                (void) buf_reserve(b, e->stored_size);
        snprintf(path, sizeof path, "/chunks/%s", hex);
        r = get_with_retries(f, w->client, path, url, b, check_chunk, &cc, NULL, NULL);
        if (r == -EBADMSG)
                r = -EIO; /* never verified within the budget */
        if (r < 0)
                goto out;
        STAT_ADD(f, chunks_fetched, 1);
        STAT_ADD(f, bytes_fetched, b->len);
keep:
        if (f->cache) {
                r = chunkcache_put(f->cache, e->id, b->data, b->len);
                if (r < 0)
                        log_debug_errno(r, "could not store chunk %s in the local cache", hex);
        }
        r = 0;
out:
        buf_free(&delta);
        if (w->frame.cap > WORKER_FRAME_KEEP)
                buf_free(&w->frame);
        return r;
}

/* Takes queued entry e off its queue and loads it on this thread; called
 * and returns with the lock held. */
static void run_entry_locked(struct fetcher *f, struct worker *w, struct fetcher_chunk *e) {
        uint8_t *data;
        bool background;
        int r;

        queue_remove(f, e);
        background = e->background;
        if (background)
                f->n_bg_running++;
        entry_ref(f, e);
        pthread_mutex_unlock(&f->lock);

        data = malloc(e->length);
        if (w->setup < 0)
                r = w->setup;
        else if (!data)
                r = -ENOMEM;
        else
                r = load_chunk(f, w, e, data);

        pthread_mutex_lock(&f->lock);
        if (r >= 0) {
                e->data = data;
                e->state = CHUNK_READY;
                f->mem_bytes += e->length;
        } else {
                free(data);
                e->state = CHUNK_FAILED;
                e->err = r;
                /* Later requests try again. */
                if (e->in_table)
                        table_remove(f, e);
        }
        if (background) {
                f->n_bg_running--;
                if (f->bhead)
                        pthread_cond_signal(&f->work_cond);
        }
        pthread_cond_broadcast(&f->done_cond);
        entry_unref_locked(f, e);
}

static void *worker_main(void *arg) {
        struct fetcher *f = arg;
        struct worker w = { .frame = BUF_INIT(0) };

        w.setup = client_new(f, &w.client);
        if (w.setup >= 0)
                w.setup = chunkcodec_new(CHUNK_LEVEL_DEFAULT, &w.codec);

        pthread_mutex_lock(&f->lock);
        for (;;) {
                while (!f->stopping && !f->qhead && !background_ready(f))
                        pthread_cond_wait(&f->work_cond, &f->lock);
                if (f->stopping)
                        break;
                /* Demand and read-ahead first; background only behind them. */
                run_entry_locked(f, &w, f->qhead ? f->qhead : f->bhead);
        }
        pthread_mutex_unlock(&f->lock);
        buf_free(&w.frame);
        chunkcodec_free(w.codec);
        http_client_free(w.client);
        return NULL;
}

/* ---- public API ---- */

int fetcher_new(const struct fetcher_options *o, struct chunkcache *cache, struct fetcher **ret) {
        struct fetcher *f;
        size_t n;
        int r;

        const char *const *urls;
        size_t n_urls;

        if (!o || !o->cache || o->cache[0] == '\0' || strchr(o->cache, '/'))
                return -EINVAL;
        urls = o->n_servers > 0 ? o->server_urls : &o->server_url;
        n_urls = o->n_servers > 0 ? o->n_servers : 1;
        if (!urls || n_urls > FETCHER_SERVERS_MAX)
                return -EINVAL;
        for (size_t i = 0; i < n_urls; i++)
                if (!urls[i] ||
                    (!startswith(urls[i], "http://") && !startswith(urls[i], "https://")))
                        return -EINVAL;
        if (o->token && (strpbrk(o->token, "\r\n") || strlen(o->token) > 8192))
                return -EINVAL;
        if (o->n_trusted_keys > 0 && !o->trusted_keys)
                return -EINVAL;
        r = http_global_init();
        if (r < 0)
                return r;

        f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        pthread_mutex_init(&f->lock, NULL);
        pthread_mutex_init(&f->servers_lock, NULL);
        pthread_cond_init(&f->work_cond, NULL);
        pthread_cond_init(&f->done_cond, NULL);
        pthread_cond_init(&f->bg_cond, NULL);
        f->cache = cache;
        f->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : TIMEOUT_DEFAULT_MS;
        f->max_attempts = o->max_attempts > 0 ? o->max_attempts : ATTEMPTS_DEFAULT;
        f->mem_max = o->mem_cache_bytes > 0 ? o->mem_cache_bytes : MEM_CACHE_DEFAULT;
        f->max_prefetch = o->max_prefetch > 0 ? o->max_prefetch : PREFETCH_DEFAULT;
        f->servers = calloc(n_urls, sizeof *f->servers);
        if (!f->servers) {
                fetcher_free(f);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n_urls; i++) {
                struct server *sv = &f->servers[f->n_servers];
                n = strlen(urls[i]);
                while (n > 0 && urls[i][n - 1] == '/')
                        n--;
                if (asprintf(&sv->base_url, "%.*s/_api/v1/caches/%s", (int) n, urls[i],
                             o->cache) < 0) {
                        fetcher_free(f);
                        return -ENOMEM;
                }
                f->n_servers++;
                if (strlen(sv->base_url) > URL_MAX - 128) {
                        fetcher_free(f);
                        return -ENAMETOOLONG;
                }
        }
        f->cache_name = strdup(o->cache);
        if (o->token && asprintf(&f->auth_header, "Authorization: Bearer %s", o->token) < 0)
                f->auth_header = NULL;
        if (o->n_trusted_keys > 0) {
                f->trusted_keys = calloc(o->n_trusted_keys, sizeof *f->trusted_keys);
                if (f->trusted_keys) {
                        memcpy(f->trusted_keys, o->trusted_keys,
                               o->n_trusted_keys * sizeof *f->trusted_keys);
                        f->n_trusted_keys = o->n_trusted_keys;
                }
        }
        f->n_buckets = 1024;
        f->buckets = calloc(f->n_buckets, sizeof *f->buckets);
        if (!f->cache_name || (o->token && !f->auth_header) || !f->buckets ||
            (o->n_trusted_keys > 0 && !f->trusted_keys)) {
                fetcher_free(f);
                return -ENOMEM;
        }

        n = o->n_workers > 0 ? MIN(o->n_workers, WORKERS_MAX) : WORKERS_DEFAULT;
        /* Two workers stay free for demand reads whatever runs behind. */
        f->bg_max = n > 2 ? (unsigned) n - 2 : 1;
        f->workers = calloc(n, sizeof *f->workers);
        if (!f->workers) {
                fetcher_free(f);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                r = pthread_create(&f->workers[i], NULL, worker_main, f);
                if (r != 0) {
                        fetcher_free(f);
                        return -r;
                }
                f->n_workers++;
        }
        *ret = f;
        return 0;
}

struct fetcher *fetcher_free(struct fetcher *f) {
        if (!f)
                return NULL;
        pthread_mutex_lock(&f->lock);
        f->stopping = true;
        pthread_cond_broadcast(&f->work_cond);
        pthread_cond_broadcast(&f->bg_cond);
        pthread_mutex_unlock(&f->lock);
        for (unsigned i = 0; i < f->n_workers; i++)
                pthread_join(f->workers[i], NULL);
        free(f->workers);
        if (f->buckets)
                for (size_t i = 0; i < f->n_buckets; i++)
                        for (struct fetcher_chunk *e = f->buckets[i], *next; e; e = next) {
                                next = e->hnext;
                                entry_destroy(f, e);
                        }
        free(f->buckets);
        for (unsigned i = 0; i < f->n_idle_clients; i++)
                http_client_free(f->idle_clients[i]);
        for (size_t i = 0; i < f->n_servers; i++)
                free(f->servers[i].base_url);
        free(f->servers);
        free(f->cache_name);
        pthread_mutex_destroy(&f->servers_lock);
        free(f->auth_header);
        free(f->trusted_keys);
        pthread_cond_destroy(&f->work_cond);
        pthread_cond_destroy(&f->done_cond);
        pthread_cond_destroy(&f->bg_cond);
        pthread_mutex_destroy(&f->lock);
        free(f);
        return NULL;
}

static int client_acquire(struct fetcher *f, struct http_client **ret) {
        struct http_client *c = NULL;

        pthread_mutex_lock(&f->lock);
        if (f->n_idle_clients > 0)
                c = f->idle_clients[--f->n_idle_clients];
        pthread_mutex_unlock(&f->lock);
        if (c) {
                *ret = c;
                return 0;
        }
        return client_new(f, ret);
}

static void client_release(struct fetcher *f, struct http_client *c) {
        pthread_mutex_lock(&f->lock);
        if (f->n_idle_clients < IDLE_CLIENTS_MAX) {
                f->idle_clients[f->n_idle_clients++] = c;
                c = NULL;
        }
        pthread_mutex_unlock(&f->lock);
        http_client_free(c);
}

/* A manifest must carry a signature of its body by a trusted key: sig is
 * the MANIFEST_SIG_HEADER value (NULL: none), from is the URL or file it
 * came from. -EKEYREJECTED with err saying why. */
static int verify_manifest(struct fetcher *f, const char *from, const uint8_t *body, size_t n,
                           const char *sig, struct trove_error *err) {
        int r;

        if (!sig || !sig[0])
                return trove_error_set(err, -EKEYREJECTED,
                                       "%s: no %s header: the manifest is not signed", from,
                                       MANIFEST_SIG_HEADER);
        r = manifest_verify((const char *) body, n, sig, f->trusted_keys, f->n_trusted_keys);
        if (r == -EBADMSG)
                return trove_error_set(err, -EKEYREJECTED, "%s: malformed %s header", from,
                                       MANIFEST_SIG_HEADER);
        if (r == -EKEYREJECTED)
                return trove_error_set(err, -EKEYREJECTED,
                                       "%s: the manifest's signature (%.*s) does not verify "
                                       "with any trusted key: changed in transit, or signed by "
                                       "another key", from, (int) strcspn(sig, ":"), sig);
        if (r < 0)
                return trove_error_set(err, r, "%s: cannot verify the manifest: %s", from,
                                       strerror(-r));
        return 0;
}

/* Whether the decoded manifest is the one of the store path with hash
 * part hash_part (only such a manifest may be kept under its key). */
static bool manifest_is_for(const struct manifest *m, const char *hash_part) {
        const char *base = m->info.store_path ? strrchr(m->info.store_path, '/') : NULL;

        return base && strncmp(base + 1, hash_part, STOREPATH_HASH_LEN) == 0 &&
               base[1 + STOREPATH_HASH_LEN] == '-';
}

/* Where the manifest of hash_part of this cache is kept in the chunk
 * cache. The servers of one cache serve the same manifests, so the key
 * names the cache, not a server. */
static int kept_key(const struct fetcher *f, const char *hash_part,
                    uint8_t ret[SHA256_DIGEST_LEN]) {
        struct sha256 h;
        int r = sha256_init(&h);

        if (r < 0)
                return r;
        r = sha256_update(&h, KEPT_KEY_DOMAIN, strlen(KEPT_KEY_DOMAIN));
        if (r >= 0)
                r = sha256_update(&h, f->cache_name, strlen(f->cache_name) + 1);
        if (r >= 0)
                r = sha256_update(&h, hash_part, STOREPATH_HASH_LEN);
        if (r >= 0)
                r = sha256_final(&h, ret);
        sha256_done(&h);
        return r;
}

/* The manifest of hash_part if the chunk cache keeps one that checks out
 * exactly as a downloaded one would (signature when keys are trusted, then
 * the full decode, and the right store path): 1 and *ret, else 0 (a kept
 * manifest that does not check out is deleted). */
static int get_kept_manifest(struct fetcher *f, const uint8_t key[SHA256_DIGEST_LEN],
                             const char *hash_part, const char *store_dir,
                             struct manifest *ret) {
        _cleanup_free_ char *sig = NULL;
        _cleanup_free_ uint8_t *body = NULL;
        struct trove_error err = { "" };
        struct manifest m = {};
        size_t n = 0;
        int r;

        r = chunkcache_manifest_get(f->cache, key, &sig, &body, &n);
        if (r == -EBADMSG) {
                log_debug("the kept manifest of %s is damaged; fetching it again", hash_part);
                return 0;
        }
        if (r < 0)
                log_debug_errno(r, "cannot read the kept manifest of %s: %s", hash_part,
                                strerror(-r));
        if (r <= 0)
                return r == -ENOMEM ? r : 0;
        if (f->n_trusted_keys > 0)
                r = verify_manifest(f, "kept manifest", body, n, sig, &err);
        if (r >= 0)
                r = manifest_decode((const char *) body, n, store_dir, &m, &err);
        if (r >= 0 && !manifest_is_for(&m, hash_part)) {
                r = trove_error_set(&err, -EBADMSG, "it names %s", m.info.store_path);
                manifest_free(&m);
        }
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                log_debug("the kept manifest of %s is refused (%s); fetching it again",
                          hash_part, err.msg);
                (void) chunkcache_manifest_discard(f->cache, key);
                return 0;
        }
        STAT_ADD(f, manifests_kept_used, 1);
        *ret = m;
        return 1;
}

int fetcher_get_manifest(struct fetcher *f, const char *hash_part, const char *store_dir,
                         struct manifest *ret, struct trove_error *err) {
        struct http_client *client = NULL;
        struct buf b = BUF_INIT(MANIFEST_MAX_SIZE);
        struct http_response resp = {};
        uint8_t key[SHA256_DIGEST_LEN] = { 0 };
        char path[32 + STOREPATH_HASH_LEN];
        char url[URL_MAX];
        const char *sig;
        int r;

        if (!storepath_is_hash_part(hash_part, strlen(hash_part)))
                return trove_error_set(err, EINVAL, "not a store path hash: %s", hash_part);
        if (f->cache) {
                /* Manifests are immutable: one kept is as good as the
                 * server's, and works while no server answers. */
                r = kept_key(f, hash_part, key);
                if (r < 0)
                        return r;
                r = get_kept_manifest(f, key, hash_part, store_dir, ret);
                if (r != 0)
                        return r < 0 ? r : 0;
        }
        snprintf(path, sizeof path, "/manifests/%s?version=2", hash_part);
        r = client_acquire(f, &client);
        if (r < 0)
                return r;
        /* The signature is captured even when no key is trusted: it is
         * kept with the manifest, so a mount that trusts a key later can
         * still use it. */
        r = get_with_retries(f, client, path, url, &b, NULL, NULL, MANIFEST_SIG_HEADER, &resp);
        if (r < 0)
                trove_error_set(err, r, "GET %s: %s", url,
                                http_client_last_error(client)[0]
                                        ? http_client_last_error(client)
                                        : strerror(-r));
        client_release(f, client);
        if (r < 0) {
                if (r != -ENOENT)
                        STAT_ADD(f, errors, 1);
                buf_free(&b);
                return r;
        }
        STAT_ADD(f, manifests_fetched, 1);
        STAT_ADD(f, manifest_bytes, b.len);
        /* One well-formed header, or none at all. */
        sig = resp.captured_count == 1 && resp.captured_len < sizeof resp.captured
                      ? resp.captured
                      : NULL;
        /* Before parsing: what does not verify is not even looked at. */
        if (f->n_trusted_keys > 0) {
                char from[URL_MAX + 8];
                snprintf(from, sizeof from, "GET %s", url);
                if (resp.captured_count > 1 || resp.captured_len >= sizeof resp.captured)
                        r = trove_error_set(err, -EKEYREJECTED, "%s: malformed %s header",
                                            from, MANIFEST_SIG_HEADER);
                else
                        r = verify_manifest(f, from, b.data, b.len, sig, err);
                if (r < 0) {
                        STAT_ADD(f, manifests_refused, 1);
                        STAT_ADD(f, errors, 1);
                        buf_free(&b);
                        return r;
                }
        }
        r = manifest_decode((const char *) b.data, b.len, store_dir, ret, err);
        if (r < 0) {
                STAT_ADD(f, errors, 1);
                buf_free(&b);
                return r;
        }
        /* Only a verified manifest of exactly the path asked for is kept;
         * answers that a path does not exist never are. */
        if (f->cache && manifest_is_for(ret, hash_part)) {
                r = chunkcache_manifest_put(f->cache, key, sig, b.data, b.len);
                if (r == -EINVAL && sig)
                        r = chunkcache_manifest_put(f->cache, key, NULL, b.data, b.len);
                if (r < 0)
                        log_debug_errno(r, "could not keep the manifest of %s: %s", hash_part,
                                        strerror(-r));
        }
        buf_free(&b);
        return 0;
}

int fetcher_chunk_get(struct fetcher *f, const struct manifest_chunk *mc,
                      struct fetcher_chunk **ret) {
        struct fetcher_chunk *e;
        bool created;
        int r;

        if (mc->length == 0 || mc->length > CHUNK_SIZE_MAX)
                return -EINVAL;
        pthread_mutex_lock(&f->lock);
        e = entry_get(f, mc, false, &created);
        if (!e) {
                pthread_mutex_unlock(&f->lock);
                return -ENOMEM;
        }
        if (created)
                queue_push(f, e, true);
        else if (e->queued && (e->prefetch || e->background)) {
                /* Someone is waiting now: move it before other read-ahead. */
                queue_remove(f, e);
                e->prefetch = e->background = false;
                queue_push(f, e, true);
        } else if (e->state == CHUNK_READY || e->state == CHUNK_PENDING)
                STAT_ADD(f, mem_hits, 1);
        while (e->state == CHUNK_PENDING)
                pthread_cond_wait(&f->done_cond, &f->lock);
        if (e->state == CHUNK_FAILED) {
                r = e->err;
                entry_unref_locked(f, e);
                pthread_mutex_unlock(&f->lock);
                STAT_ADD(f, errors, 1);
                return r;
        }
        pthread_mutex_unlock(&f->lock);
        *ret = e;
        return 0;
}

void fetcher_chunk_prefetch(struct fetcher *f, const struct manifest_chunk *mc) {
        struct fetcher_chunk *e;
        bool created;

        if (mc->length == 0 || mc->length > CHUNK_SIZE_MAX)
                return;
        pthread_mutex_lock(&f->lock);
        if (table_find(f, mc->id) || f->n_prefetch_queued >= f->max_prefetch) {
                pthread_mutex_unlock(&f->lock);
                return;
        }
        e = entry_get(f, mc, true, &created);
        if (e) {
                queue_push(f, e, false);
                STAT_ADD(f, prefetches, 1);
                /* The queue does not hold a reference: the worker takes one
                 * when it starts. A PENDING entry is never in the LRU, so
                 * dropping ours leaves it in the table until it is done. */
                e->refs--;
        }
        pthread_mutex_unlock(&f->lock);
}

int fetcher_chunk_background(struct fetcher *f, const struct manifest_chunk *mc,
                             const bool *cancel) {
        struct fetcher_chunk *e;
        bool created;

        if (mc->length == 0 || mc->length > CHUNK_SIZE_MAX)
                return -EINVAL;
        /* Cheap before the lock: a chunk on local disk needs no fetch. */
        if (f->cache && chunkcache_has(f->cache, mc->id))
                return 0;
        pthread_mutex_lock(&f->lock);
        /* Enough queued to keep the background workers busy: wait. */
        while (!f->stopping && !__atomic_load_n(cancel, __ATOMIC_RELAXED) &&
               f->n_bg_queued >= f->bg_max)
                pthread_cond_wait(&f->bg_cond, &f->lock);
        if (f->stopping || __atomic_load_n(cancel, __ATOMIC_RELAXED)) {
                pthread_mutex_unlock(&f->lock);
                return -ECANCELED;
        }
        if (table_find(f, mc->id)) {
                pthread_mutex_unlock(&f->lock);
                return 0;
        }
        e = entry_get(f, mc, false, &created);
        if (!e) {
                pthread_mutex_unlock(&f->lock);
                return -ENOMEM;
        }
        bqueue_push(f, e);
        /* As for read-ahead: the queue holds no reference. */
        e->refs--;
        pthread_mutex_unlock(&f->lock);
        return 1;
}

void fetcher_cancel_background(struct fetcher *f) {
        pthread_mutex_lock(&f->lock);
        pthread_cond_broadcast(&f->bg_cond);
        pthread_mutex_unlock(&f->lock);
}

int fetcher_get_profile(struct fetcher *f, const char *hash_part,
                        uint8_t (**ret_ids)[SHA256_DIGEST_LEN], size_t *ret_n) {
        struct http_client *client = NULL;
        struct buf b = BUF_INIT(PROFILE_BODY_MAX);
        char path[16 + STOREPATH_HASH_LEN];
        char url[URL_MAX];
        int r;

        if (!storepath_is_hash_part(hash_part, strlen(hash_part)))
                return -EINVAL;
        snprintf(path, sizeof path, "/profiles/%s", hash_part);
        r = client_acquire(f, &client);
        if (r < 0)
                return r;
        r = get_with_retries(f, client, path, url, &b, NULL, NULL, NULL, NULL);
        client_release(f, client);
        if (r >= 0)
                r = profile_decode(b.data, b.len, hash_part, ret_ids, ret_n);
        if (r < 0)
                log_debug_errno(r, "no profile of %s: %s", hash_part, strerror(-r));
        buf_free(&b);
        return r;
}

int fetcher_report_profiles(struct fetcher *f, const void *body, size_t n) {
        struct http_client *client = NULL;
        struct buf resp = BUF_INIT(65536);
        const char *headers[] = { "Content-Type: application/json", f->auth_header, NULL };
        struct http_response hr;
        char url[URL_MAX];
        bool available;
        size_t s;
        int r;

        /* One attempt: a report is worth a request, never a wait. */
        s = server_pick(f, now_ms(), &available);
        if (snprintf(url, sizeof url, "%s/profiles", f->servers[s].base_url) >= (int) sizeof url)
                return -ENAMETOOLONG;
        r = client_acquire(f, &client);
        if (r < 0)
                return r;
        struct http_request req = {
                .method = "POST",
                .url = url,
                .headers = headers,
                .body = body,
                .body_len = n,
                .response = &resp,
                .error_body = &resp,
        };
        r = http_request(client, &req, &hr);
        if (r >= 0)
                r = http_status_to_errno(hr.status);
        if (r < 0)
                log_debug("POST %s: %s %.*s", url, strerror(-r), (int) MIN(resp.len, 512),
                          resp.len ? (const char *) resp.data : "");
        client_release(f, client);
        buf_free(&resp);
        return r;
}

const uint8_t *fetcher_chunk_data(const struct fetcher_chunk *c, size_t *ret_len) {
        if (ret_len)
                *ret_len = c->length;
        return c->data;
}

void fetcher_chunk_unref(struct fetcher *f, struct fetcher_chunk *c) {
        if (!c)
                return;
        pthread_mutex_lock(&f->lock);
        entry_unref_locked(f, c);
        pthread_mutex_unlock(&f->lock);
}

void fetcher_get_stats(struct fetcher *f, struct fetcher_stats *ret) {
        struct fetcher_stats s;

        s.manifests_fetched = __atomic_load_n(&f->stats.manifests_fetched, __ATOMIC_RELAXED);
        s.manifest_bytes = __atomic_load_n(&f->stats.manifest_bytes, __ATOMIC_RELAXED);
        s.manifests_refused = __atomic_load_n(&f->stats.manifests_refused, __ATOMIC_RELAXED);
        s.chunks_fetched = __atomic_load_n(&f->stats.chunks_fetched, __ATOMIC_RELAXED);
        s.bytes_fetched = __atomic_load_n(&f->stats.bytes_fetched, __ATOMIC_RELAXED);
        s.cache_hits = __atomic_load_n(&f->stats.cache_hits, __ATOMIC_RELAXED);
        s.cache_misses = __atomic_load_n(&f->stats.cache_misses, __ATOMIC_RELAXED);
        s.mem_hits = __atomic_load_n(&f->stats.mem_hits, __ATOMIC_RELAXED);
        s.prefetches = __atomic_load_n(&f->stats.prefetches, __ATOMIC_RELAXED);
        s.retries = __atomic_load_n(&f->stats.retries, __ATOMIC_RELAXED);
        s.verify_failures = __atomic_load_n(&f->stats.verify_failures, __ATOMIC_RELAXED);
        s.errors = __atomic_load_n(&f->stats.errors, __ATOMIC_RELAXED);
        s.failovers = __atomic_load_n(&f->stats.failovers, __ATOMIC_RELAXED);
        s.manifests_kept_used = __atomic_load_n(&f->stats.manifests_kept_used, __ATOMIC_RELAXED);
        *ret = s;
}
