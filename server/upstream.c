/* SPDX-License-Identifier: Apache-2.0 */
/*
 * upstream.c - pull-through from a cache's upstream binary caches
 * (upstream.h).
 *
 * Outcomes of one pull, and what the requester gets:
 *  - hit: the path was committed (or was there already): served as usual;
 *  - miss: no upstream has a narinfo for it that we accept (absent,
 *    malformed, for another path, unsigned or signed by an unknown key, too
 *    big, or its NAR does not match it): 404, remembered for a while;
 *  - error: an upstream did not answer properly (refused, reset, timed out,
 *    5xx, a redirect, which is never followed): 502 or 504, not remembered.
 * Only complete, verified NARs reach ingest_commit(); a pull that fails
 * half-way leaves chunks that no NAR uses, which GC reclaims.
 */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "commit.h"
#include "ingest.h"
#include "upstream.h"
#include "trove/decompress.h"
#include "trove/http.h"
#include "trove/narinfo.h"
#include "trove/signing.h"
#include "trove/storepath.h"

/* Pulls running at once (each holds a download and an ingest); further
 * ones wait for a slot. Background pulls leave the last few slots to pulls
 * a request waits for. */
#define PULLS_MAX 8
#define PULLS_KEPT_FOR_REQUESTS 2
/* Remembered misses: a fixed table, a newer miss replaces an older one in
 * its slot, so memory is bounded whatever is asked. */
#define NEGATIVE_SLOTS 16384
/* An upstream narinfo larger than this is refused (a real one is a few
 * hundred bytes; the References of a large closure a few dozen KiB). */
#define UPSTREAM_NARINFO_MAX (1u << 20)
/* A NAR download may take the narinfo timeout plus 1 s per this many bytes,
 * plus the time a background pull may stand aside: half the timeout, so
 * that it stays below the no-progress limit. */
#define NAR_BYTES_PER_SEC (256u * 1024)
#define YIELD_SEC(t) ((uint64_t) (t)->cfg.upstream_timeout_sec / 2)
#define UPSTREAM_KEYS_MAX 32
/* Background pulls of the references named by accepted narinfos, at most
 * this many waiting or running at once (beyond it, references are pulled
 * when asked). */
#define PREFETCH_MAX 32

struct flight {
        struct flight *next;
        int64_t cache_id;
        char hash[STOREPATH_HASH_LEN + 1];
        bool done;
        int result;
        unsigned refs;
        bool wanted;     /* a request waits for it (not only a background pull) */
        bool running;    /* holds a pull slot */
        bool going_on;   /* a background pull counted in bg_going_on */
};

struct negative {
        int64_t cache_id;
        char hash[STOREPATH_HASH_LEN + 1];
        time_t expires;
};

struct upstream {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct flight *flights;
        unsigned active;
        unsigned prefetching;   /* background pulls not yet finished */
        unsigned wanted_running; /* running pulls a request waits for */
        unsigned bg_going_on;   /* running background pulls not standing aside */
        unsigned cpus;
        bool stopping;
        struct negative neg[NEGATIVE_SLOTS];
};

int upstream_new(struct upstream **ret) {
        struct upstream *u = calloc(1, sizeof *u);
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        pthread_condattr_t ca;

        if (!u)
                return -ENOMEM;
        pthread_mutex_init(&u->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&u->cond, &ca);
        pthread_condattr_destroy(&ca);
        u->cpus = n > 0 && n < 1024 ? (unsigned) n : 1;
        *ret = u;
        return 0;
}

void upstream_free(struct upstream *u) {
        if (!u)
                return;
        /* Background pulls use the database and the chunk store, which go
         * next: wait for them (each is bounded by the upstream timeouts). */
        pthread_mutex_lock(&u->lock);
        u->stopping = true;
        pthread_cond_broadcast(&u->cond); /* background pulls standing aside go on */
        while (u->prefetching > 0)
                pthread_cond_wait(&u->cond, &u->lock);
        pthread_mutex_unlock(&u->lock);
        pthread_mutex_destroy(&u->lock);
        pthread_cond_destroy(&u->cond);
        free(u);
}

static struct negative *negative_slot(struct upstream *u, int64_t cache_id, const char *hash) {
        uint64_t h = 1469598103934665603ull ^ (uint64_t) cache_id;
        for (const char *p = hash; *p; p++)
                h = (h ^ (unsigned char) *p) * 1099511628211ull;
        return &u->neg[h % NEGATIVE_SLOTS];
}

void upstream_forget(struct upstream *u, int64_t cache_id) {
        pthread_mutex_lock(&u->lock);
        for (size_t i = 0; i < NEGATIVE_SLOTS; i++)
                if (u->neg[i].cache_id == cache_id)
                        u->neg[i] = (struct negative){};
        pthread_mutex_unlock(&u->lock);
}

bool upstream_url_valid(const char *url) {
        size_t n = strlen(url);
        const char *host;

        if (n > UPSTREAM_URL_MAX)
                return false;
        if (startswith(url, "http://"))
                host = url + 7;
        else if (startswith(url, "https://"))
                host = url + 8;
        else
                return false;
        if (!*host || *host == '/')
                return false;
        for (const char *p = url; *p; p++)
                if (*p <= ' ' || *p >= 0x7f || *p == '?' || *p == '#' || *p == '\\')
                        return false;
        return true;
}

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

/* An upstream's own failure, as the requester sees it: 504 or 502. */
static int upstream_failure(int r) {
        return r == -ETIMEDOUT ? -ETIMEDOUT : -EREMOTEIO;
}

/* ---- one upstream ---- */

struct pull {
        struct troved *t;
        struct flight *flight;
        const struct db_cache *cache;
        const char *base;        /* upstream URL, no trailing '/' */
        const char *hash;
        const struct signing_public *keys;
        size_t n_keys;
};

struct nar_sink {
        struct troved *t;
        struct flight *flight;
        uint64_t yield_usec;           /* how long it may still stand aside */
        struct ingest *ingest;
        struct decompressor *dec;
        uint64_t received, received_max;
        uint64_t nar_bytes, nar_size;  /* decompressed so far; the narinfo's NarSize */
        int error;                     /* why the sink stopped the download */
};

static int nar_sink_decompressed(void *ud, const void *p, size_t n) {
        struct nar_sink *s = ud;
        if (s->nar_bytes + n > s->nar_size)
                return -EMSGSIZE;
        s->nar_bytes += n;
        return ingest_feed_nar(s->ingest, p, n);
}

/* A background pull stands aside while requests wait for other pulls: of
 * the background pulls, at most as many go on as there are CPUs not taken
 * by pulls a request waits for; the others wait here, in their download's
 * write callback, each for at most s->yield_usec in all (which keeps the
 * download within its timeouts). A request for the path makes it wanted. */
static void nar_sink_yield(struct nar_sink *s) {
        struct upstream *u = s->t->upstream;
        struct flight *f = s->flight;

        pthread_mutex_lock(&u->lock);
        for (;;) {
                unsigned allowed = u->cpus > u->wanted_running ? u->cpus - u->wanted_running : 0;
                struct timespec until;
                uint64_t t0;

                if (f->wanted || u->stopping || u->wanted_running == 0 || s->yield_usec == 0 ||
                    u->bg_going_on + !f->going_on <= allowed)
                        break;
                if (f->going_on) {
                        f->going_on = false;
                        u->bg_going_on--;
                        pthread_cond_broadcast(&u->cond);
                }
                t0 = now_usec();
                until.tv_sec = (time_t) ((t0 + s->yield_usec) / 1000000u);
                until.tv_nsec = (long) ((t0 + s->yield_usec) % 1000000u) * 1000;
                (void) pthread_cond_timedwait(&u->cond, &u->lock, &until);
                s->yield_usec -= MIN(s->yield_usec, now_usec() - t0);
        }
        if (!f->wanted && !f->going_on) {
                f->going_on = true;
                u->bg_going_on++;
        }
        pthread_mutex_unlock(&u->lock);
}

static int nar_sink_received(void *ud, const void *p, size_t n) {
        struct nar_sink *s = ud;
        int r;

        nar_sink_yield(s);
        METRIC_ADD(s->t, upstream_bytes, n);
        if (s->received + n > s->received_max)
                return s->error = -EFBIG;
        s->received += n;
        r = decompressor_feed(s->dec, p, n);
        if (r < 0)
                s->error = r;
        return r;
}

/* The narinfo's URL, relative to the upstream: a caller never chooses
 * where troved connects, and an upstream only names files below itself. */
static bool nar_url_valid(const char *url) {
        size_t n = strlen(url);
        if (n == 0 || n > 256 || url[0] == '/' || strstr(url, ".."))
                return false;
        for (const char *p = url; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '/' || *p == '.' || *p == '_' || *p == '-' || *p == '+' || *p == '='))
                        return false;
        return true;
}

/* Downloads, checks and stores the NAR of ni from this upstream. 1 stored,
 * 0 miss (logged), negative errno. */
static int pull_nar(struct pull *pl, const struct narinfo *ni) {
        struct troved *t = pl->t;
        _cleanup_(http_client_freep) struct http_client *hc = NULL;
        _cleanup_(ingest_freep) struct ingest *in = NULL;
        struct http_client_options o = {
                .connect_timeout_ms = (long) MIN(t->cfg.upstream_timeout_sec, 10u) * 1000,
                .low_speed_limit = 1,
                .low_speed_time_s = (long) t->cfg.upstream_timeout_sec,
                .total_timeout_ms = (long) MIN(((uint64_t) t->cfg.upstream_timeout_sec + YIELD_SEC(t)) * 1000 +
                                                       ni->nar_size / NAR_BYTES_PER_SEC * 1000,
                                               (uint64_t) LONG_MAX / 2),
        };
        struct buf errb = BUF_INIT(4096);
        struct nar_sink s = { .t = t, .flight = pl->flight, .nar_size = ni->nar_size,
                              .yield_usec = YIELD_SEC(t) * 1000000 };
        struct http_response resp;
        struct ingest_result res;
        enum compression comp;
        char url[UPSTREAM_URL_MAX + 300];
        uint64_t t0 = now_usec();
        int64_t nar_id;
        int r;

        if (!ni->url || !nar_url_valid(ni->url)) {
                log_warning("upstream %s: %s: narinfo URL '%.64s' is not a file below the upstream", pl->base,
                            pl->hash, ni->url ? ni->url : "");
                return 0;
        }
        /* Nix reads a narinfo without Compression as bzip2. */
        if (compression_from_string(ni->compression ? ni->compression : "bzip2", &comp) < 0) {
                log_warning("upstream %s: %s: unsupported compression '%.32s'", pl->base, pl->hash,
                            ni->compression);
                return 0;
        }
        snprintf(url, sizeof url, "%s/%s", pl->base, ni->url);
        /* Compressed, a NAR is rarely larger than itself; xz and bzip2 of
         * incompressible data add a little. */
        s.received_max = ni->nar_size + ni->nar_size / 8 + 65536;
        r = http_client_new(&o, &hc);
        if (r >= 0)
                r = ingest_new(t, &in);
        if (r < 0)
                return r;
        ingest_set_cache(in, pl->cache->id);
        s.ingest = in;
        r = decompressor_new(comp, nar_sink_decompressed, &s, &s.dec);
        if (r < 0)
                return r;
        struct http_request hr = { .url = url, .write_fn = nar_sink_received, .write_userdata = &s,
                                   .error_body = &errb };
        METRIC_ADD(t, upstream_requests, 1);
        r = http_request(hc, &hr, &resp);
        buf_free(&errb);
        if (r < 0 && s.error < 0) {
                /* Stopped by what the bytes were (or by our own storage). */
                const char *why = ingest_error(in);
                r = s.error;
                decompressor_free(s.dec);
                if (r == -EMSGSIZE)
                        return log_warning("upstream %s: %s: NAR longer than the narinfo's NarSize %" PRIu64,
                                           pl->base, pl->hash, ni->nar_size), 0;
                if (r == -EFBIG || r == -E2BIG)
                        return log_warning("upstream %s: %s: NAR refused: %s", pl->base, pl->hash,
                                           why[0] ? why : "larger than its narinfo allows"), 0;
                if (r == -EBADMSG || r == -EINVAL)
                        return log_warning("upstream %s: %s: NAR does not match its narinfo: %s", pl->base,
                                           pl->hash, why[0] ? why : "corrupt compressed data"), 0;
                return log_error_errno(r, "pulling %s into cache %s: %s", pl->hash, pl->cache->name, strerror(-r));
        }
        if (r < 0) {
                decompressor_free(s.dec);
                log_warning("upstream %s: %s: NAR download failed: %s (%s)", pl->base, pl->hash, strerror(-r),
                            http_client_last_error(hc));
                return r == -ENOMEM ? r : upstream_failure(r);
        }
        if (resp.status == 404 || resp.status == 410 || resp.status == 403) {
                decompressor_free(s.dec);
                log_warning("upstream %s: %s: its narinfo names %s, which answers %ld", pl->base, pl->hash,
                            ni->url, resp.status);
                return 0;
        }
        if (resp.status != 200) {
                decompressor_free(s.dec);
                log_warning("upstream %s: %s: NAR download answered HTTP %ld%s", pl->base, pl->hash, resp.status,
                            resp.status >= 300 && resp.status < 400 ? " (redirects are not followed)" : "");
                return -EREMOTEIO;
        }
        r = decompressor_finish(s.dec);
        decompressor_free(s.dec);
        if (r < 0)
                return log_warning("upstream %s: %s: NAR does not match its narinfo: %s", pl->base, pl->hash,
                                   ingest_error(in)[0] ? ingest_error(in) : "truncated or corrupt compressed data"),
                       0;
        r = ingest_finish(in, &res);
        if (r < 0) {
                if (r != -EBADMSG && r != -EINVAL && r != -EFBIG && r != -E2BIG)
                        return log_error_errno(r, "pulling %s into cache %s: %s", pl->hash, pl->cache->name,
                                               strerror(-r));
                return log_warning("upstream %s: %s: NAR does not match its narinfo: %s", pl->base, pl->hash,
                                   ingest_error(in)[0] ? ingest_error(in) : strerror(-r)),
                       0;
        }
        if (res.nar_size != ni->nar_size || memcmp(res.nar_hash, ni->nar_hash, SHA256_DIGEST_LEN) != 0) {
                char got[HASH_STRING_MAX], want[HASH_STRING_MAX];
                hash_format(res.nar_hash, HASH_NIX32, got);
                hash_format(ni->nar_hash, HASH_NIX32, want);
                log_warning("upstream %s: %s: NAR does not match its narinfo: it is %s (%" PRIu64
                            " bytes), the narinfo says %s (%" PRIu64 " bytes)",
                            pl->base, pl->hash, got, res.nar_size, want, ni->nar_size);
                return 0;
        }
        r = ingest_commit(in, &nar_id);
        if (r < 0)
                return r;
        r = commit_insert(t, pl->cache, ni, nar_id, true);
        if (r == -EEXIST)
                return 1; /* committed meanwhile by a push of another NAR: the cache has the path */
        if (r < 0)
                return r;
        log_info("pulled %s into cache %s from %s: %" PRIu64 " bytes, %" PRIu64 " new chunks, %" PRIu64
                 " deduplicated, in %.2f s",
                 ni->store_path, pl->cache->name, pl->base, res.nar_size, res.new_chunks, res.dedup_chunks,
                 (double) (now_usec() - t0) / 1e6);
        return 1;
}

static void prefetch_references(struct troved *t, const struct db_cache *cache, const struct narinfo *ni,
                                const char *self);

/* 1 stored, 0 miss (logged), negative errno (-ETIMEDOUT / -EREMOTEIO for
 * the upstream's own failures). */
static int pull_from(struct pull *pl) {
        struct troved *t = pl->t;
        _cleanup_(http_client_freep) struct http_client *hc = NULL;
        struct http_client_options o = {
                .connect_timeout_ms = (long) MIN(t->cfg.upstream_timeout_sec, 10u) * 1000,
                .low_speed_limit = 1,
                .low_speed_time_s = (long) t->cfg.upstream_timeout_sec,
                .total_timeout_ms = (long) t->cfg.upstream_timeout_sec * 1000,
        };
        struct buf body = BUF_INIT(UPSTREAM_NARINFO_MAX), errb = BUF_INIT(4096);
        struct trove_error err = {};
        struct narinfo ni = {};
        struct http_response resp;
        struct storepath sp;
        char url[UPSTREAM_URL_MAX + 64];
        int r;

        snprintf(url, sizeof url, "%s/%s.narinfo", pl->base, pl->hash);
        r = http_client_new(&o, &hc);
        if (r < 0)
                return r;
        struct http_request hr = { .url = url, .response = &body, .error_body = &errb };
        METRIC_ADD(t, upstream_requests, 1);
        r = http_request(hc, &hr, &resp);
        buf_free(&errb);
        if (r >= 0)
                METRIC_ADD(t, upstream_bytes, resp.body_bytes);
        if (r == -E2BIG) {
                log_warning("upstream %s: %s: narinfo larger than %u bytes", pl->base, pl->hash,
                            UPSTREAM_NARINFO_MAX);
                r = 0;
                goto out;
        }
        if (r < 0) {
                log_warning("upstream %s: %s: narinfo request failed: %s (%s)", pl->base, pl->hash, strerror(-r),
                            http_client_last_error(hc));
                r = r == -ENOMEM ? r : upstream_failure(r);
                goto out;
        }
        if (resp.status == 404 || resp.status == 410 || resp.status == 403) {
                log_debug("upstream %s: %s: not there (HTTP %ld)", pl->base, pl->hash, resp.status);
                r = 0;
                goto out;
        }
        if (resp.status != 200) {
                log_warning("upstream %s: %s: narinfo request answered HTTP %ld%s", pl->base, pl->hash,
                            resp.status,
                            resp.status >= 300 && resp.status < 400 ? " (redirects are not followed)" : "");
                r = -EREMOTEIO;
                goto out;
        }
        r = narinfo_parse((const char *) body.data, body.len, pl->cache->store_dir, &ni, &err);
        if (r < 0) {
                log_warning("upstream %s: %s: invalid narinfo: %s", pl->base, pl->hash, err.msg);
                r = 0;
                goto out;
        }
        r = storepath_parse(pl->cache->store_dir, ni.store_path, &sp);
        if (r < 0 || !streq(sp.hash, pl->hash)) {
                log_warning("upstream %s: %s: narinfo is for another path (%.200s)", pl->base, pl->hash,
                            ni.store_path);
                r = 0;
                goto out;
        }
        r = narinfo_verify(&ni, pl->cache->store_dir, pl->keys, pl->n_keys);
        if (r < 0)
                goto out;
        if (r == 0) {
                log_warning("upstream %s: %s: narinfo not signed by any of cache %s's upstream keys (%zu "
                            "signature(s))",
                            pl->base, pl->hash, pl->cache->name, ni.n_sigs);
                goto out;
        }
        if (ni.nar_size == 0 || ni.nar_size > t->cfg.max_nar_size) {
                log_warning("upstream %s: %s: NarSize %" PRIu64 " is not within max-nar-size (%" PRIu64 ")",
                            pl->base, pl->hash, ni.nar_size, t->cfg.max_nar_size);
                r = 0;
                goto out;
        }
        prefetch_references(t, pl->cache, &ni, pl->hash);
        r = pull_nar(pl, &ni);
out:
        narinfo_free(&ni);
        buf_free(&body);
        return r;
}

/* Asks each upstream in turn: 1 hit, 0 miss everywhere, or the first
 * upstream's error when none had it; 2 if the cache has the path already. */
static int pull(struct troved *t, struct flight *f, const struct db_cache *cache, const char *hash) {
        struct signing_public keys[UPSTREAM_KEYS_MAX];
        struct pull pl = { .t = t, .flight = f, .cache = cache, .hash = hash, .keys = keys };
        struct db_path p;
        const char *s;
        int r, err = 0;

        /* The path may have arrived while this pull waited for its slot. */
        r = db_path_get(t->db, cache->id, hash, &p);
        if (r > 0) {
                db_path_free(&p);
                return 2;
        }
        if (r < 0)
                return r;
        /* Bare key names cannot verify anything; the API refuses them for a
         * cache with upstreams, and they are skipped here. */
        s = cache->upstream_keys;
        while (*s && pl.n_keys < UPSTREAM_KEYS_MAX) {
                size_t n = strcspn(s, " ");
                char word[SIGNING_PUBLIC_TEXT_MAX];
                if (n > 0 && n < sizeof word && memchr(s, ':', n)) {
                        memcpy(word, s, n);
                        word[n] = 0;
                        if (signing_public_parse(word, &keys[pl.n_keys]) >= 0)
                                pl.n_keys++;
                }
                s += n;
                s += strspn(s, " ");
        }
        if (pl.n_keys == 0) {
                log_warning("cache %s has upstreams but no upstream public key: %s not pulled", cache->name, hash);
                return 0;
        }
        s = cache->upstreams;
        while (*s) {
                size_t n = strcspn(s, "\n");
                char base[UPSTREAM_URL_MAX + 1];
                if (n > 0 && n <= UPSTREAM_URL_MAX) {
                        memcpy(base, s, n);
                        base[n] = 0;
                        while (n > 0 && base[n - 1] == '/')
                                base[--n] = 0;
                        pl.base = base;
                        r = pull_from(&pl);
                        if (r > 0)
                                return 1;
                        if (r < 0) {
                                if (r != -ETIMEDOUT && r != -EREMOTEIO)
                                        return r;
                                if (!err)
                                        err = r;
                        }
                }
                s += n;
                s += strspn(s, "\n");
        }
        return err;
}

/* Marks f as waited for by a request (u->lock held). */
static void flight_want(struct upstream *u, struct flight *f) {
        if (f->wanted)
                return;
        f->wanted = true;
        if (f->running)
                u->wanted_running++;
        if (f->going_on) {
                f->going_on = false;
                u->bg_going_on--;
        }
        pthread_cond_broadcast(&u->cond);
}

/* One pull per cache and path at a time: the first requester pulls, later
 * ones wait for its result. A miss is remembered. wanted: a request waits
 * for the result (not a background pull). */
static int pull_once(struct troved *t, const struct db_cache *cache, const char *hash, bool wanted) {
        struct upstream *u = t->upstream;
        struct negative *neg;
        struct flight *f;
        uint64_t t0;
        int r;

        pthread_mutex_lock(&u->lock);
        neg = negative_slot(u, cache->id, hash);
        if (neg->cache_id == cache->id && streq(neg->hash, hash) && neg->expires > time(NULL)) {
                pthread_mutex_unlock(&u->lock);
                METRIC_ADD(t, upstream_misses, 1);
                return 0;
        }
        for (f = u->flights; f; f = f->next)
                if (f->cache_id == cache->id && streq(f->hash, hash))
                        break;
        if (f) {
                f->refs++;
                if (wanted)
                        flight_want(u, f);
                while (!f->done)
                        pthread_cond_wait(&u->cond, &u->lock);
                r = f->result;
                if (--f->refs == 0)
                        free(f);
                pthread_mutex_unlock(&u->lock);
                return r;
        }
        f = calloc(1, sizeof *f);
        if (!f) {
                pthread_mutex_unlock(&u->lock);
                return -ENOMEM;
        }
        f->cache_id = cache->id;
        snprintf(f->hash, sizeof f->hash, "%s", hash);
        f->refs = 1;
        f->wanted = wanted;
        f->next = u->flights;
        u->flights = f;
        while (u->active >= (f->wanted ? PULLS_MAX : PULLS_MAX - PULLS_KEPT_FOR_REQUESTS))
                pthread_cond_wait(&u->cond, &u->lock);
        u->active++;
        f->running = true;
        if (f->wanted)
                u->wanted_running++;
        pthread_mutex_unlock(&u->lock);

        t0 = now_usec();
        r = pull(t, f, cache, hash);
        METRIC_ADD(t, upstream_usec, now_usec() - t0);
        if (r == 1)
                METRIC_ADD(t, upstream_hits, 1);
        else if (r == 0)
                METRIC_ADD(t, upstream_misses, 1);
        else
                METRIC_ADD(t, upstream_errors, 1);

        pthread_mutex_lock(&u->lock);
        u->active--;
        f->running = false;
        if (f->wanted)
                u->wanted_running--;
        if (f->going_on) {
                f->going_on = false;
                u->bg_going_on--;
        }
        for (struct flight **pp = &u->flights; *pp; pp = &(*pp)->next)
                if (*pp == f) {
                        *pp = f->next;
                        break;
                }
        if (r == 0 && t->cfg.upstream_negative_ttl_sec > 0) {
                neg->cache_id = cache->id;
                snprintf(neg->hash, sizeof neg->hash, "%s", hash);
                neg->expires = time(NULL) + (time_t) t->cfg.upstream_negative_ttl_sec;
        }
        f->result = r;
        f->done = true;
        pthread_cond_broadcast(&u->cond);
        if (--f->refs == 0)
                free(f);
        pthread_mutex_unlock(&u->lock);
        return r;
}

/* ---- pulling a closure in parallel ----
 *
 * A program run from a mount looks its closure up one path at a time (the
 * interpreter, then each library), so pulling only what is asked makes the
 * pulls one long chain. As soon as an upstream narinfo is accepted, its
 * references are pulled in the background, in parallel with its own NAR,
 * and so on recursively: the whole closure is on its way after one narinfo
 * round trip per level, and a later request for one of its paths finds it
 * stored, or waits for the pull already in flight. */

struct prefetch {
        struct troved *t;
        char cache_name[65];
        char hash[STOREPATH_HASH_LEN + 1];
};

static void prefetch_done(struct upstream *u) {
        pthread_mutex_lock(&u->lock);
        u->prefetching--;
        pthread_cond_broadcast(&u->cond);
        pthread_mutex_unlock(&u->lock);
}

static void *prefetch_main(void *arg) {
        struct prefetch *pf = arg;
        struct troved *t = pf->t;
        struct db_cache c;

        if (db_cache_get(t->db, pf->cache_name, &c) >= 0) {
                (void) pull_once(t, &c, pf->hash, false);
                db_cache_free(&c);
        }
        free(pf);
        prefetch_done(t->upstream);
        return NULL;
}

static bool in_flight(struct upstream *u, int64_t cache_id, const char *hash) {
        for (struct flight *f = u->flights; f; f = f->next)
                if (f->cache_id == cache_id && streq(f->hash, hash))
                        return true;
        return false;
}

/* Starts a background pull of ref (a reference of self: a store path base
 * name) unless the cache has it or it is in flight already. Two of them
 * may race past the flight check; pull_once() still makes one download. */
static void prefetch_one(struct troved *t, const struct db_cache *cache, const char *self, const char *ref) {
        struct upstream *u = t->upstream;
        struct prefetch *pf;
        struct db_path q;
        pthread_attr_t attr;
        pthread_t th;
        bool start;
        int r;

        if (strlen(ref) <= STOREPATH_HASH_LEN || !storepath_is_hash_part(ref, STOREPATH_HASH_LEN) ||
            strncmp(ref, self, STOREPATH_HASH_LEN) == 0)
                return;
        pf = calloc(1, sizeof *pf);
        if (!pf)
                return;
        pf->t = t;
        snprintf(pf->cache_name, sizeof pf->cache_name, "%s", cache->name);
        memcpy(pf->hash, ref, STOREPATH_HASH_LEN);
        pthread_mutex_lock(&u->lock);
        start = !u->stopping && u->prefetching < PREFETCH_MAX && !in_flight(u, cache->id, pf->hash);
        if (start)
                u->prefetching++;
        pthread_mutex_unlock(&u->lock);
        if (!start) {
                free(pf);
                return;
        }
        r = db_path_get(t->db, cache->id, pf->hash, &q);
        if (r > 0)
                db_path_free(&q);
        if (r != 0) {
                free(pf);
                prefetch_done(u);
                return;
        }
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, prefetch_main, pf) != 0) {
                free(pf);
                prefetch_done(u);
        }
        pthread_attr_destroy(&attr);
}

static void prefetch_references(struct troved *t, const struct db_cache *cache, const struct narinfo *ni,
                                const char *self) {
        for (size_t i = 0; i < ni->n_references; i++)
                prefetch_one(t, cache, self, ni->references[i]);
}

int upstream_path_get(struct troved *t, struct httpd_request *req, const struct db_cache *cache, const char *hash,
                      struct db_path *ret) {
        int r;

        r = db_path_get(t->db, cache->id, hash, ret);
        if (r != 0 || !cache->upstreams || !cache->upstreams[0])
                return r;
        r = pull_once(t, cache, hash, true);
        if (r == -ETIMEDOUT)
                return httpd_reply_error(req, 504, "the upstream caches of '%s' timed out for %s", cache->name,
                                         hash),
                       r;
        if (r == -EREMOTEIO)
                return httpd_reply_error(req, 502, "the upstream caches of '%s' failed for %s", cache->name, hash),
                       r;
        if (r <= 0)
                return r;
        return db_path_get(t->db, cache->id, hash, ret);
}
