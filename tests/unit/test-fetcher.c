/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for the fetcher against a small HTTP/1.1 server on loopback (a
 * thread per connection in this process) that serves troved's manifest and
 * chunk URLs from memory, counts requests, and can fail, delay or corrupt
 * answers on demand. */
#include <arpa/inet.h>
#include <dirent.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "test.h"
#include "trove/chunkcache.h"
#include "trove/chunkcodec.h"
#include "trove/fetcher.h"
#include "trove/hash.h"

#define N_CHUNKS 16
#define CHUNK_LEN 50000
#define TOKEN "sekrit-token"
#define MANIFEST_HASH "ybm7kw4n7xbzzi8b9j8hbdjsp646lg66"

struct chunk {
        uint8_t data[CHUNK_LEN];
        uint8_t *frame;
        size_t frame_len;
        struct manifest_chunk mc;
        char hex[HASH_BASE16_LEN + 1];
};

static struct chunk chunks[N_CHUNKS];
static char *manifest_text;
static size_t manifest_len;

struct server {
        int fd;
        int port;
        pthread_t thread;
        /* behaviour, set by tests */
        int fail_next;          /* answer this many chunk requests with 503 */
        int delay_ms;           /* before each chunk answer */
        int corrupt;            /* serve chunk 0's frame for every other id */
        char manifest_headers[1024]; /* extra header lines for manifests */
        bool manifest_flip;     /* change one byte of the manifest body */
        /* counters */
        int chunk_requests[N_CHUNKS];
        int manifest_requests;
        int unauthorized;
        pthread_mutex_t lock;
};

static struct server srv;

static bool send_all(int fd, const void *p, size_t n) {
        while (n > 0) {
                ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
                if (w <= 0)
                        return false;
                p = (const char *) p + w;
                n -= (size_t) w;
        }
        return true;
}

static void answer_with(int c, int status, const char *extra, const void *body, size_t n) {
        char hdr[2048];

        snprintf(hdr, sizeof hdr, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n", status, n,
                 extra);
        if (send_all(c, hdr, strlen(hdr)))
                (void) send_all(c, body, n);
}

static void answer(int c, int status, const void *body, size_t n) {
        answer_with(c, status, "", body, n);
}

static void *conn_main(void *arg) {
        int c = (int) (intptr_t) arg;
        const char *prefix = "GET /_api/v1/caches/c/";

        for (;;) {
                char req[8192];
                size_t len = 0;
                char *end = NULL;

                while (!end && len < sizeof req - 1) {
                        ssize_t n = recv(c, req + len, sizeof req - 1 - len, 0);
                        if (n <= 0)
                                break;
                        len += (size_t) n;
                        req[len] = 0;
                        end = strstr(req, "\r\n\r\n");
                }
                if (!end)
                        break;
                if (!strstr(req, "\r\nAuthorization: Bearer " TOKEN "\r\n")) {
                        pthread_mutex_lock(&srv.lock);
                        srv.unauthorized++;
                        pthread_mutex_unlock(&srv.lock);
                        answer(c, 401, "error: token", 12);
                        continue;
                }
                if (strncmp(req, prefix, strlen(prefix)) != 0) {
                        answer(c, 404, "", 0);
                        continue;
                }
                const char *what = req + strlen(prefix);
                /* trovefs asks for version 2 (it reads delta chunks) */
                if (strncmp(what, "manifests/" MANIFEST_HASH "?version=2 ", 53) == 0) {
                        pthread_mutex_lock(&srv.lock);
                        srv.manifest_requests++;
                        char headers[sizeof srv.manifest_headers];
                        bool flip = srv.manifest_flip;
                        memcpy(headers, srv.manifest_headers, sizeof headers);
                        pthread_mutex_unlock(&srv.lock);
                        char *body = malloc(manifest_len);
                        CHECK(body);
                        memcpy(body, manifest_text, manifest_len);
                        char *target = strstr(body, "\"target\":\"bin/hi\"");
                        if (flip && target) /* a symlink pointing elsewhere: still valid */
                                memcpy(target + strlen("\"target\":\"bin/"), "HI", 2);
                        answer_with(c, 200, headers, body, manifest_len);
                        free(body);
                        continue;
                }
                if (strncmp(what, "chunks/", 7) != 0) {
                        answer(c, 404, "", 0);
                        continue;
                }
                int idx = -1;
                for (int i = 0; i < N_CHUNKS; i++)
                        if (strncmp(what + 7, chunks[i].hex, HASH_BASE16_LEN) == 0)
                                idx = i;
                if (idx < 0) {
                        answer(c, 404, "", 0);
                        continue;
                }
                pthread_mutex_lock(&srv.lock);
                srv.chunk_requests[idx]++;
                bool fail = srv.fail_next > 0;
                if (fail)
                        srv.fail_next--;
                int delay = srv.delay_ms;
                bool corrupt = srv.corrupt && idx != 0;
                pthread_mutex_unlock(&srv.lock);
                if (delay)
                        nanosleep(&(struct timespec){ 0, delay * 1000000L }, NULL);
                if (fail)
                        answer(c, 503, "busy", 4);
                else if (corrupt)
                        answer(c, 200, chunks[0].frame, chunks[0].frame_len);
                else
                        answer(c, 200, chunks[idx].frame, chunks[idx].frame_len);
        }
        close(c);
        return NULL;
}

static void *server_main(void *arg) {
        for (;;) {
                pthread_t t;
                int c = accept(srv.fd, NULL, NULL);
                if (c < 0)
                        return NULL;
                CHECK(pthread_create(&t, NULL, conn_main, (void *) (intptr_t) c) == 0);
                pthread_detach(t);
        }
}

static int listen_socket(int *ret_port, bool do_listen) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof a;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        CHECK(fd >= 0);
        CHECK(bind(fd, (struct sockaddr *) &a, sizeof a) == 0);
        if (do_listen)
                CHECK(listen(fd, 64) == 0);
        CHECK(getsockname(fd, (struct sockaddr *) &a, &al) == 0);
        *ret_port = ntohs(a.sin_port);
        return fd;
}

static void reset_server(void) {
        pthread_mutex_lock(&srv.lock);
        srv.fail_next = srv.delay_ms = srv.corrupt = 0;
        srv.manifest_headers[0] = 0;
        srv.manifest_flip = false;
        memset(srv.chunk_requests, 0, sizeof srv.chunk_requests);
        srv.manifest_requests = srv.unauthorized = 0;
        pthread_mutex_unlock(&srv.lock);
}

static int requests(int i) {
        pthread_mutex_lock(&srv.lock);
        int n = srv.chunk_requests[i];
        pthread_mutex_unlock(&srv.lock);
        return n;
}

static double now_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static char url[64];

static struct fetcher *new_fetcher(struct chunkcache *cc, const char *token, long timeout_ms,
                                   uint64_t mem) {
        struct fetcher *f = NULL;
        struct fetcher_options o = {
                .server_url = url,
                .cache = "c",
                .token = token,
                .n_workers = 4,
                .timeout_ms = timeout_ms,
                .max_attempts = 4,
                .mem_cache_bytes = mem,
        };

        CHECK_OK(fetcher_new(&o, cc, &f));
        return f;
}

static void check_chunk(struct fetcher *f, size_t i) {
        struct fetcher_chunk *c = NULL;
        size_t len = 0;

        CHECK_OK(fetcher_chunk_get(f, &chunks[i].mc, &c));
        const uint8_t *p = fetcher_chunk_data(c, &len);
        CHECK_EQ_U64(len, CHUNK_LEN);
        CHECK_MEMEQ(p, chunks[i].data, CHUNK_LEN);
        fetcher_chunk_unref(f, c);
}

static void test_manifest(void) {
        _cleanup_(fetcher_freep) struct fetcher *f = new_fetcher(NULL, TOKEN, 5000, 0);
        _cleanup_(fetcher_freep) struct fetcher *anon = new_fetcher(NULL, NULL, 5000, 0);
        struct manifest m = { 0 };
        struct trove_error err = { "" };
        struct fetcher_stats st;

        reset_server();
        CHECK_OK(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err));
        CHECK_STREQ(m.info.store_path, "/nix/store/" MANIFEST_HASH "-hello-2.12");
        CHECK_EQ_U64(m.n_chunks, 2);
        manifest_free(&m);
        /* Unknown path: ENOENT at once (no retries). */
        CHECK_RC(fetcher_get_manifest(f, "0c2nyaqhy8b4n7bnr0k6zzfmzwfvi0a4", "/nix/store", &m,
                                      &err),
                 -ENOENT);
        /* Not a hash part. */
        CHECK_RC(fetcher_get_manifest(f, "../../x", "/nix/store", &m, &err), -EINVAL);
        /* The manifest lies outside the store directory we mount. */
        CHECK_RC(fetcher_get_manifest(f, MANIFEST_HASH, "/other/store", &m, &err), -EBADMSG);
        /* No token: refused, not retried. */
        CHECK_RC(fetcher_get_manifest(anon, MANIFEST_HASH, "/nix/store", &m, &err), -EACCES);
        CHECK(srv.unauthorized == 1);
        fetcher_get_stats(f, &st);
        CHECK_EQ_U64(st.manifests_fetched, 2);
}

static void set_manifest_headers(const char *h, bool flip) {
        pthread_mutex_lock(&srv.lock);
        snprintf(srv.manifest_headers, sizeof srv.manifest_headers, "%s", h);
        srv.manifest_flip = flip;
        pthread_mutex_unlock(&srv.lock);
}

/* With trusted keys, a manifest must carry a valid signature header. */
static void test_manifest_signature(void) {
        struct signing_secret sk, other_sk;
        struct signing_public pk, other_pk;
        char sig[MANIFEST_SIG_TEXT_MAX], h[1024], longsig[700];
        struct fetcher *f = NULL, *wrong = NULL;
        struct manifest m = { 0 };
        struct trove_error err = { "" };
        struct fetcher_stats st;

        CHECK_OK(signing_generate("c-1", &sk));
        CHECK_OK(signing_generate("c-1", &other_sk));
        signing_secret_to_public(&sk, &pk);
        signing_secret_to_public(&other_sk, &other_pk);
        CHECK_OK(manifest_sign(manifest_text, manifest_len, &sk, sig));
        struct fetcher_options o = { .server_url = url, .cache = "c", .token = TOKEN,
                                     .timeout_ms = 5000, .max_attempts = 2,
                                     .trusted_keys = &pk, .n_trusted_keys = 1 };
        CHECK_OK(fetcher_new(&o, NULL, &f));
        o.trusted_keys = &other_pk;
        CHECK_OK(fetcher_new(&o, NULL, &wrong));
        reset_server();

        /* Unsigned (an older troved, or stripped on the way). */
        CHECK_RC(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err), -EKEYREJECTED);
        CHECK(strstr(err.msg, "no " MANIFEST_SIG_HEADER " header"));

        /* Signed: accepted (header names are case-insensitive). */
        snprintf(h, sizeof h, "trove-manifest-signature: %s\r\n", sig);
        set_manifest_headers(h, false);
        CHECK_OK(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err));
        CHECK_EQ_U64(m.n_chunks, 2);
        manifest_free(&m);
        /* Another key of the same name. */
        CHECK_RC(fetcher_get_manifest(wrong, MANIFEST_HASH, "/nix/store", &m, &err),
                 -EKEYREJECTED);
        CHECK(strstr(err.msg, "does not verify"));
        /* Body changed on the way, signature kept. */
        set_manifest_headers(h, true);
        CHECK_RC(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err), -EKEYREJECTED);
        /* ... which a fetcher without keys takes: the test changes what matters. */
        {
                _cleanup_(fetcher_freep) struct fetcher *trusting = new_fetcher(NULL, TOKEN, 5000, 0);
                CHECK_OK(fetcher_get_manifest(trusting, MANIFEST_HASH, "/nix/store", &m, &err));
                CHECK_STREQ(listing_target(&m.listing, &m.listing.nodes[m.listing.n_nodes - 1]),
                            "bin/HI");
                manifest_free(&m);
        }
        /* The header twice (even if one is right), garbage, and too long. */
        snprintf(h, sizeof h, "Trove-Manifest-Signature: %s\r\nTrove-Manifest-Signature: %s\r\n",
                 sig, sig);
        set_manifest_headers(h, false);
        CHECK_RC(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err), -EKEYREJECTED);
        CHECK(strstr(err.msg, "malformed"));
        set_manifest_headers("Trove-Manifest-Signature: c-1:bm90IGEgc2lnbmF0dXJl\r\n", false);
        CHECK_RC(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err), -EKEYREJECTED);
        CHECK(strstr(err.msg, "malformed"));
        memset(longsig, 'A', sizeof longsig - 1);
        longsig[sizeof longsig - 1] = 0;
        snprintf(h, sizeof h, "Trove-Manifest-Signature: c-1:%s\r\n", longsig);
        set_manifest_headers(h, false);
        CHECK_RC(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err), -EKEYREJECTED);

        fetcher_get_stats(f, &st);
        CHECK_EQ_U64(st.manifests_refused, 5);
        fetcher_free(f);
        fetcher_free(wrong);
        signing_secret_wipe(&sk);
        signing_secret_wipe(&other_sk);
        reset_server();
}

static void test_chunks(void) {
        _cleanup_(fetcher_freep) struct fetcher *f = new_fetcher(NULL, TOKEN, 5000, 0);
        struct fetcher_stats st;

        reset_server();
        for (size_t i = 0; i < N_CHUNKS; i++)
                check_chunk(f, i);
        /* Again: from memory, no request. */
        for (size_t i = 0; i < N_CHUNKS; i++) {
                check_chunk(f, i);
                CHECK(requests((int) i) == 1);
        }
        fetcher_get_stats(f, &st);
        CHECK_EQ_U64(st.chunks_fetched, N_CHUNKS);
        CHECK_EQ_U64(st.mem_hits, N_CHUNKS);
        uint64_t total = 0;
        for (size_t i = 0; i < N_CHUNKS; i++)
                total += chunks[i].frame_len;
        CHECK_EQ_U64(st.bytes_fetched, total);

        /* A chunk the server does not have. */
        struct manifest_chunk unknown = chunks[0].mc;
        unknown.id[5] ^= 1;
        struct fetcher_chunk *c = NULL;
        CHECK_RC(fetcher_chunk_get(f, &unknown, &c), -ENOENT);
        CHECK(c == NULL);
}

struct race_arg {
        struct fetcher *f;
        size_t i;
};

static void *race(void *p) {
        struct race_arg *a = p;
        check_chunk(a->f, a->i);
        return NULL;
}

static void test_single_flight(void) {
        _cleanup_(fetcher_freep) struct fetcher *f = new_fetcher(NULL, TOKEN, 5000, 0);
        pthread_t th[8];
        struct race_arg a = { f, 3 };

        reset_server();
        srv.delay_ms = 300;
        for (int i = 0; i < 8; i++)
                CHECK(pthread_create(&th[i], NULL, race, &a) == 0);
        for (int i = 0; i < 8; i++)
                pthread_join(th[i], NULL);
        CHECK(requests(3) == 1);

        /* Read-ahead, then a demand read: still one request. */
        fetcher_chunk_prefetch(f, &chunks[4].mc);
        fetcher_chunk_prefetch(f, &chunks[4].mc);
        check_chunk(f, 4);
        CHECK(requests(4) == 1);
        /* Read-ahead that completes on its own. */
        fetcher_chunk_prefetch(f, &chunks[5].mc);
        for (int k = 0; k < 100 && requests(5) == 0; k++)
                nanosleep(&(struct timespec){ 0, 20 * 1000000L }, NULL);
        nanosleep(&(struct timespec){ 0, 500 * 1000000L }, NULL);
        check_chunk(f, 5);
        CHECK(requests(5) == 1);
}

struct background_arg {
        struct fetcher *f;
        size_t first, n;
        bool cancel;
        int queued, cancelled;
};

static void *background(void *p) {
        struct background_arg *a = p;

        for (size_t i = a->first; i < a->first + a->n; i++) {
                int r = fetcher_chunk_background(a->f, &chunks[i].mc, &a->cancel);
                if (r == -ECANCELED)
                        a->cancelled++;
                else if (r == 1)
                        a->queued++;
                else
                        CHECK_RC(r, 0);
        }
        return NULL;
}

/* Learned prefetch's background queue: at most n_workers - 2 fetches at
 * once behind demand reads, a demand read of a queued chunk shares its
 * fetch, what is present is not queued, and a cancelled feeder returns. */
static void test_background(void) {
        _cleanup_(fetcher_freep) struct fetcher *f = new_fetcher(NULL, TOKEN, 10000, 0);
        struct background_arg a = { .f = f, .first = 6, .n = 6 };
        pthread_t th;

        reset_server();
        check_chunk(f, 6); /* in memory: not queued again */
        srv.delay_ms = 100;
        CHECK(pthread_create(&th, NULL, background, &a) == 0);
        /* Demand reads of chunks the feeder is queueing: one request each. */
        check_chunk(f, 11);
        check_chunk(f, 10);
        pthread_join(th, NULL);
        CHECK_EQ_U64(a.cancelled, 0);
        CHECK(a.queued >= 3 && a.queued <= 5);
        for (size_t i = 7; i < 12; i++)
                check_chunk(f, i);
        for (size_t i = 6; i < 12; i++)
                CHECK(requests((int) i) == 1);

        /* A feeder waiting for room is cancelled: with 3 workers one runs
         * in the background and one more waits, so the third chunk waits
         * for the first (slow) fetch to end. */
        struct fetcher_options o = {
                .server_url = url, .cache = "c", .token = TOKEN, .n_workers = 3,
                .timeout_ms = 10000,
        };
        _cleanup_(fetcher_freep) struct fetcher *g = NULL;
        CHECK_OK(fetcher_new(&o, NULL, &g));
        srv.delay_ms = 900; /* (the server sleeps less than a second) */
        struct background_arg b = { .f = g, .first = 12, .n = 4 };
        CHECK(pthread_create(&th, NULL, background, &b) == 0);
        for (int k = 0; k < 500 && requests(12) == 0; k++)
                nanosleep(&(struct timespec){ 0, 10 * 1000000L }, NULL);
        __atomic_store_n(&b.cancel, true, __ATOMIC_RELAXED);
        fetcher_cancel_background(g);
        pthread_join(th, NULL);
        CHECK(b.queued >= 1 && b.queued + b.cancelled == 4 && b.cancelled >= 2);
}

static void test_retries_and_verification(void) {
        _cleanup_(fetcher_freep) struct fetcher *f = new_fetcher(NULL, TOKEN, 5000, 0);
        struct fetcher_chunk *c = NULL;
        struct fetcher_stats st;

        reset_server();
        srv.fail_next = 2;
        check_chunk(f, 6);
        CHECK(requests(6) == 3);
        fetcher_get_stats(f, &st);
        CHECK_EQ_U64(st.retries, 2);

        /* A server that keeps sending the wrong bytes: an error after the
         * attempts, never the bytes. */
        srv.corrupt = 1;
        CHECK_RC(fetcher_chunk_get(f, &chunks[7].mc, &c), -EIO);
        CHECK(c == NULL);
        CHECK(requests(7) == 4);
        fetcher_get_stats(f, &st);
        CHECK_EQ_U64(st.verify_failures, 4);
        /* Once the server is right again, the chunk is fetched (the failure
         * was not remembered). */
        srv.corrupt = 0;
        check_chunk(f, 7);
}

static char dir[] = "/tmp/test-fetcher-XXXXXX";

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(p);
}

static void test_disk_cache(void) {
        _cleanup_(chunkcache_freep) struct chunkcache *cc = NULL;
        struct fetcher_stats st;

        CHECK(mkdtemp(dir));
        CHECK_OK(chunkcache_open(dir, 0, &cc));
        reset_server();
        {
                _cleanup_(fetcher_freep) struct fetcher *f = new_fetcher(cc, TOKEN, 5000, 0);
                for (size_t i = 0; i < 4; i++)
                        check_chunk(f, i);
                /* Corrupt answers are not stored either. */
                srv.corrupt = 1;
                struct fetcher_chunk *c = NULL;
                CHECK_RC(fetcher_chunk_get(f, &chunks[9].mc, &c), -EIO);
                srv.corrupt = 0;
        }
        struct chunkcache_stats cs;
        chunkcache_get_stats(cc, &cs);
        CHECK_EQ_U64(cs.files, 4);
        /* A new fetcher (a remount): from disk, no request. */
        {
                _cleanup_(fetcher_freep) struct fetcher *f = new_fetcher(cc, TOKEN, 5000, 0);
                for (size_t i = 0; i < 4; i++) {
                        check_chunk(f, i);
                        CHECK(requests((int) i) == 1);
                }
                fetcher_get_stats(f, &st);
                CHECK_EQ_U64(st.cache_hits, 4);
                CHECK_EQ_U64(st.chunks_fetched, 0);
        }
        /* Corrupt a cached file: detected, refetched, right bytes. */
        char path[4200];
        chunkcache_path(cc, chunks[1].mc.id, path);
        FILE *fp = fopen(path, "r+");
        CHECK(fp);
        CHECK(fseek(fp, 20, SEEK_SET) == 0);
        fputc('!', fp);
        fclose(fp);
        {
                _cleanup_(fetcher_freep) struct fetcher *f = new_fetcher(cc, TOKEN, 5000, 0);
                check_chunk(f, 1);
                CHECK(requests(1) == 2);
        }
        (void) nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_memory_bound(void) {
        /* Room for two chunks: everything still reads right. */
        _cleanup_(fetcher_freep) struct fetcher *f = new_fetcher(NULL, TOKEN, 5000,
                                                                2 * CHUNK_LEN);
        reset_server();
        for (int round = 0; round < 2; round++)
                for (size_t i = 0; i < N_CHUNKS; i++)
                        check_chunk(f, i);
        CHECK(requests(0) == 2);
}

static void test_unreachable(void) {
        int port;
        int fd = listen_socket(&port, false); /* bound, not listening */
        struct fetcher *f = NULL;
        struct fetcher_options o = {
                .server_url = NULL,
                .cache = "c",
                .timeout_ms = 2000,
        };
        char u[64];
        struct fetcher_chunk *c = NULL;
        struct manifest m;

        snprintf(u, sizeof u, "http://127.0.0.1:%d", port);
        o.server_url = u;
        CHECK_OK(fetcher_new(&o, NULL, &f));
        double t0 = now_s();
        int r = fetcher_chunk_get(f, &chunks[0].mc, &c);
        CHECK(r < 0 && r != -ENOENT);
        r = fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, NULL);
        CHECK(r < 0 && r != -ENOENT);
        CHECK(now_s() - t0 < 2 * 3.0);
        fetcher_free(f);
        close(fd);

        /* Bad options. */
        o.server_url = "ftp://x";
        CHECK_RC(fetcher_new(&o, NULL, &f), -EINVAL);
        o.server_url = u;
        o.cache = "a/b";
        CHECK_RC(fetcher_new(&o, NULL, &f), -EINVAL);
}

/* Two servers of one cache, the first refusing connections: requests fail
 * over at once; the first server is asked again after its back-off. And a
 * 5xx moves the request on to the next server as well. */
static void test_failover(void) {
        int port;
        int fd = listen_socket(&port, false); /* bound, not listening */
        char dead[64];
        const char *urls[2] = { dead, url };
        struct fetcher_options o = {
                .server_urls = urls,
                .n_servers = 2,
                .cache = "c",
                .token = TOKEN,
                .n_workers = 2,
                .timeout_ms = 5000,
                .max_attempts = 2,
        };
        struct fetcher *f = NULL;
        struct fetcher_stats st;
        struct manifest m = { 0 };
        struct trove_error err = { "" };
        double t0;

        snprintf(dead, sizeof dead, "http://127.0.0.1:%d", port);
        reset_server();
        CHECK_OK(fetcher_new(&o, NULL, &f));
        t0 = now_s();
        CHECK_OK(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err));
        manifest_free(&m);
        for (size_t i = 0; i < 6; i++)
                check_chunk(f, i);
        /* No waiting: the second server answered right after the first
         * failed, and while it is in back-off nobody asks it. */
        CHECK(now_s() - t0 < 0.9);
        fetcher_get_stats(f, &st);
        CHECK_EQ_U64(st.failovers, 1);
        CHECK_EQ_U64(st.errors, 0);
        /* After the back-off (1 s) the first server is asked again, fails
         * again, and is left alone longer (2 s) this time. */
        usleep(1200 * 1000);
        check_chunk(f, 6);
        check_chunk(f, 7);
        usleep(1200 * 1000);
        check_chunk(f, 8);
        fetcher_get_stats(f, &st);
        CHECK_EQ_U64(st.failovers, 2);
        fetcher_free(f);
        close(fd);

        /* A 503 from the first of two servers (here: twice the same one). */
        urls[0] = url;
        reset_server();
        CHECK_OK(fetcher_new(&o, NULL, &f));
        srv.fail_next = 1;
        t0 = now_s();
        check_chunk(f, 9);
        CHECK(requests(9) == 2);
        CHECK(now_s() - t0 < 0.9);
        fetcher_get_stats(f, &st);
        CHECK_EQ_U64(st.failovers, 1);
        CHECK_EQ_U64(st.retries, 1);
        fetcher_free(f);

        /* Bad server lists. */
        urls[1] = "ftp://x";
        CHECK_RC(fetcher_new(&o, NULL, &f), -EINVAL);
        o.n_servers = FETCHER_SERVERS_MAX + 1;
        CHECK_RC(fetcher_new(&o, NULL, &f), -EINVAL);
        reset_server();
}

static char kept_dir[] = "/tmp/test-fetcher-kept-XXXXXX";

/* The one kept manifest file in kept_dir (path into out), or false. */
static bool kept_file(char *out, size_t n) {
        char mdir[256];
        struct dirent *de;
        DIR *d;
        bool found = false;

        snprintf(mdir, sizeof mdir, "%s/manifests", kept_dir);
        d = opendir(mdir);
        CHECK(d);
        while ((de = readdir(d)))
                if (de->d_name[0] != '.') {
                        CHECK(!found);
                        snprintf(out, n, "%s/%s", mdir, de->d_name);
                        found = true;
                }
        closedir(d);
        return found;
}

static int manifest_requests(void) {
        pthread_mutex_lock(&srv.lock);
        int n = srv.manifest_requests;
        pthread_mutex_unlock(&srv.lock);
        return n;
}

static struct fetcher *kept_fetcher(struct chunkcache *cc, const char *server,
                                    const struct signing_public *key) {
        struct fetcher *f = NULL;
        struct fetcher_options o = {
                .server_url = server,
                .cache = "c",
                .token = TOKEN,
                .n_workers = 2,
                .timeout_ms = 1000,
                .max_attempts = 2,
                .trusted_keys = key,
                .n_trusted_keys = key ? 1 : 0,
        };

        CHECK_OK(fetcher_new(&o, cc, &f));
        return f;
}

/* Verified manifests are kept in the chunk cache, used before asking the
 * server (and while it is unreachable), and refused and fetched again when
 * damaged or not signed by a trusted key. */
static void test_kept_manifests(void) {
        _cleanup_(chunkcache_freep) struct chunkcache *cc = NULL;
        struct signing_secret sk, other_sk;
        struct signing_public pk, other_pk;
        char sig[MANIFEST_SIG_TEXT_MAX], h[1024], path[512], dead[64];
        struct manifest m = { 0 };
        struct trove_error err = { "" };
        struct fetcher_stats st;
        struct chunkcache_stats cs;
        struct fetcher *f;
        struct stat sb;
        int port, fd, r;
        FILE *fp;

        CHECK(mkdtemp(kept_dir));
        CHECK_OK(chunkcache_open(kept_dir, 0, &cc));
        CHECK_OK(signing_generate("c-1", &sk));
        CHECK_OK(signing_generate("c-1", &other_sk));
        signing_secret_to_public(&sk, &pk);
        signing_secret_to_public(&other_sk, &other_pk);
        CHECK_OK(manifest_sign(manifest_text, manifest_len, &sk, sig));
        snprintf(h, sizeof h, "Trove-Manifest-Signature: %s\r\n", sig);
        reset_server();
        set_manifest_headers(h, false);
        fd = listen_socket(&port, false);
        snprintf(dead, sizeof dead, "http://127.0.0.1:%d", port);

        /* Fetched, verified, kept (privately). */
        f = kept_fetcher(cc, url, &pk);
        CHECK_OK(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err));
        manifest_free(&m);
        /* Not found is not kept. */
        CHECK_RC(fetcher_get_manifest(f, "0c2nyaqhy8b4n7bnr0k6zzfmzwfvi0a4", "/nix/store", &m,
                                      &err),
                 -ENOENT);
        fetcher_free(f);
        CHECK(manifest_requests() == 1);
        CHECK(kept_file(path, sizeof path));
        CHECK(stat(path, &sb) == 0);
        CHECK_EQ_U64(sb.st_mode & 07777, 0600);
        chunkcache_get_stats(cc, &cs);
        CHECK_EQ_U64(cs.manifests_stored, 1);
        CHECK_EQ_U64(cs.files, 1);
        CHECK_EQ_U64(cs.bytes, (uint64_t) sb.st_size);

        /* A remount uses it without asking; so does one whose server is
         * unreachable, and one that trusts no key. */
        f = kept_fetcher(cc, url, &pk);
        CHECK_OK(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err));
        CHECK_STREQ(m.info.store_path, "/nix/store/" MANIFEST_HASH "-hello-2.12");
        manifest_free(&m);
        fetcher_get_stats(f, &st);
        CHECK_EQ_U64(st.manifests_kept_used, 1);
        CHECK_EQ_U64(st.manifests_fetched, 0);
        fetcher_free(f);
        CHECK(manifest_requests() == 1);
        f = kept_fetcher(cc, dead, &pk);
        CHECK_OK(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err));
        manifest_free(&m);
        fetcher_free(f);
        f = kept_fetcher(cc, dead, NULL);
        CHECK_OK(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err));
        manifest_free(&m);
        /* Another store directory: refused by the decode, hence dropped. */
        CHECK(fetcher_get_manifest(f, MANIFEST_HASH, "/other/store", &m, &err) < 0);
        CHECK(!kept_file(path, sizeof path));
        fetcher_free(f);

        /* Kept again; then a mount trusting another key refuses it: it is
         * deleted, and with the server unreachable the lookup fails. */
        f = kept_fetcher(cc, url, &pk);
        CHECK_OK(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err));
        manifest_free(&m);
        fetcher_free(f);
        CHECK(kept_file(path, sizeof path));
        f = kept_fetcher(cc, dead, &other_pk);
        r = fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err);
        CHECK(r < 0 && r != -ENOENT);
        fetcher_free(f);
        CHECK(!kept_file(path, sizeof path));

        /* A byte flipped on disk: refused offline (nothing served), fetched
         * again when the server answers. */
        f = kept_fetcher(cc, url, &pk);
        CHECK_OK(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err));
        manifest_free(&m);
        fetcher_free(f);
        CHECK(kept_file(path, sizeof path));
        fp = fopen(path, "r+");
        CHECK(fp);
        CHECK(fseek(fp, -10, SEEK_END) == 0);
        r = fgetc(fp);
        CHECK(fseek(fp, -10, SEEK_END) == 0);
        fputc(r ^ 1, fp);
        fclose(fp);
        f = kept_fetcher(cc, dead, NULL);
        r = fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err);
        CHECK(r < 0 && r != -ENOENT);
        fetcher_free(f);
        CHECK(!kept_file(path, sizeof path));
        int before = manifest_requests();
        f = kept_fetcher(cc, url, &pk);
        CHECK_OK(fetcher_get_manifest(f, MANIFEST_HASH, "/nix/store", &m, &err));
        manifest_free(&m);
        fetcher_free(f);
        CHECK(manifest_requests() == before + 1);
        CHECK(kept_file(path, sizeof path));
        chunkcache_get_stats(cc, &cs);
        CHECK_EQ_U64(cs.manifest_damaged, 3);

        close(fd);
        signing_secret_wipe(&sk);
        signing_secret_wipe(&other_sk);
        reset_server();
        (void) nftw(kept_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void make_data(void) {
        _cleanup_(chunkcodec_freep) struct chunkcodec *codec = NULL;
        struct manifest m = { 0 };
        FILE *fp;
        char path[4096];
        long n;

        CHECK_OK(chunkcodec_new(CHUNK_LEVEL_DEFAULT, &codec));
        for (size_t i = 0; i < N_CHUNKS; i++) {
                struct chunk *c = &chunks[i];
                size_t cap = chunkcodec_bound(CHUNK_LEN);
                test_fill(c->data, CHUNK_LEN / 2, i + 100);
                memset(c->data + CHUNK_LEN / 2, (int) i, CHUNK_LEN / 2);
                c->frame = malloc(cap);
                CHECK(c->frame);
                CHECK_OK(chunkcodec_encode(codec, c->data, CHUNK_LEN, c->frame, cap,
                                           &c->frame_len));
                CHECK_OK(sha256_buf(c->data, CHUNK_LEN, c->mc.id));
                c->mc.nar_offset = i * CHUNK_LEN;
                c->mc.length = CHUNK_LEN;
                c->mc.stored_size = (uint32_t) c->frame_len;
                hex_encode(c->mc.id, SHA256_DIGEST_LEN, c->hex);
        }
        /* The documented example manifest (docs/manifest.md). */
        snprintf(path, sizeof path, "%s/../../fuzz/corpus/manifest/doc-example.json",
                 getenv("TROVE_TEST_DATA") ? getenv("TROVE_TEST_DATA") : "tests/unit/data");
        fp = fopen(path, "rb");
        CHECK(fp);
        manifest_text = malloc(1 << 16);
        CHECK(manifest_text);
        n = (long) fread(manifest_text, 1, 1 << 16, fp);
        fclose(fp);
        CHECK(n > 0);
        manifest_len = (size_t) n;
        CHECK_OK(manifest_decode(manifest_text, manifest_len, "/nix/store", &m, NULL));
        manifest_free(&m);
}

int main(void) {
        make_data();
        pthread_mutex_init(&srv.lock, NULL);
        srv.fd = listen_socket(&srv.port, true);
        CHECK(pthread_create(&srv.thread, NULL, server_main, NULL) == 0);
        snprintf(url, sizeof url, "http://127.0.0.1:%d/", srv.port);

        test_manifest();
        test_manifest_signature();
        test_chunks();
        test_single_flight();
        test_background();
        test_retries_and_verification();
        test_disk_cache();
        test_memory_bound();
        test_unreachable();
        test_failover();
        test_kept_manifests();

        shutdown(srv.fd, SHUT_RDWR);
        close(srv.fd);
        pthread_join(srv.thread, NULL);
        for (size_t i = 0; i < N_CHUNKS; i++)
                free(chunks[i].frame);
        free(manifest_text);
        return 0;
}
