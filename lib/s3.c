/* SPDX-License-Identifier: Apache-2.0 */
/*
 * S3 client: path-style requests signed by libcurl (CURLOPT_AWS_SIGV4),
 * retries with jittered exponential backoff, a minimal bounded parser for
 * ListObjectsV2 replies, and SigV4 query signing for presigned GET URLs
 * (libsodium's HMAC-SHA256).
 *
 * curl (7.88 in Debian 12) signs the query string as given and takes the
 * payload hash from an x-amz-content-sha256 header if there is one, which
 * S3 requires anyway: so every request carries that header, and query
 * strings are built already in canonical form (sorted, RFC 3986-encoded).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include <sodium.h>

#include "trove/hash.h"
#include "trove/s3.h"

#define S3_POOL_MAX 16
#define S3_KEY_MAX 1024
#define S3_ERROR_BODY_MAX 4096
#define S3_LIST_OBJECTS_MAX 100000
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct s3 {
        char *endpoint;
        char *bucket;
        char *region;
        char *access_key;
        char *secret_key;
        char *sigv4; /* "aws:amz:<region>:s3" */
        unsigned max_attempts;
        unsigned backoff_base_ms;
        unsigned backoff_max_ms;
        unsigned retry_budget_ms;
        unsigned breaker_threshold;
        unsigned breaker_open_ms;
        struct http_client_options http_opts;
        atomic_bool cancelled;

        pthread_mutex_t lock; /* the pool, the breaker and the counters */
        struct http_client *idle[S3_POOL_MAX];
        size_t n_idle;

        enum s3_breaker_state breaker;
        unsigned failures_in_a_row;
        uint64_t open_until_ms;
        bool probing; /* half open: the one probe is out */
        struct s3_stats stats;
};

static const char *const op_names[S3_OP_COUNT] = {
        [S3_OP_GET] = "get",       [S3_OP_PUT] = "put",   [S3_OP_HEAD] = "head",
        [S3_OP_DELETE] = "delete", [S3_OP_LIST] = "list", [S3_OP_BUCKET] = "bucket",
};

const char *s3_op_name(enum s3_op op) {
        return op < S3_OP_COUNT ? op_names[op] : "unknown";
}

static uint64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static int sodium_result = -1;

static void sodium_init_once(void) {
        sodium_result = sodium_init();
}

static int s3_sodium_init(void) {
        pthread_once(&sodium_once, sodium_init_once);
        return sodium_result < 0 ? -EIO : 0;
}

static bool bucket_name_valid(const char *b) {
        size_t n = strlen(b);

        if (n < 3 || n > 63)
                return false;
        for (size_t i = 0; i < n; i++) {
                char ch = b[i];
                if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                      ch == '.'))
                        return false;
        }
        return true;
}

static bool key_valid(const char *key) {
        size_t n = key ? strlen(key) : 0;
        return n > 0 && n <= S3_KEY_MAX && key[0] != '/';
}

int s3_new(const struct s3_config *cfg, struct s3 **ret) {
        struct s3 *s;
        size_t n;
        int r;

        if (!cfg->endpoint || !cfg->bucket || !cfg->access_key || !cfg->secret_key)
                return log_debug_errno(-EINVAL, "s3: endpoint, bucket and keys are required");
        if (!startswith(cfg->endpoint, "http://") && !startswith(cfg->endpoint, "https://"))
                return log_debug_errno(-EINVAL, "s3: endpoint %s is not http(s)://", cfg->endpoint);
        if (!bucket_name_valid(cfg->bucket))
                return log_debug_errno(-EINVAL, "s3: invalid bucket name '%s'", cfg->bucket);
        if (!cfg->access_key[0] || !cfg->secret_key[0] || strchr(cfg->access_key, '/'))
                return log_debug_errno(-EINVAL, "s3: invalid credentials");
        r = s3_sodium_init();
        if (r < 0)
                return r;

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        pthread_mutex_init(&s->lock, NULL);
        s->endpoint = strdup(cfg->endpoint);
        s->bucket = strdup(cfg->bucket);
        s->region = strdup(cfg->region && cfg->region[0] ? cfg->region : "us-east-1");
        s->access_key = strdup(cfg->access_key);
        s->secret_key = strdup(cfg->secret_key);
        if (!s->endpoint || !s->bucket || !s->region || !s->access_key || !s->secret_key ||
            strchr(s->region, ':') || asprintf(&s->sigv4, "aws:amz:%s:s3", s->region) < 0) {
                s->sigv4 = NULL;
                s3_free(s);
                return -ENOMEM;
        }
        /* The endpoint is scheme://host[:port]; a trailing slash is dropped. */
        n = strlen(s->endpoint);
        while (n > 0 && s->endpoint[n - 1] == '/')
                s->endpoint[--n] = 0;
        if (strchr(strstr(s->endpoint, "://") + 3, '/')) {
                s3_free(s);
                return log_debug_errno(-EINVAL, "s3: endpoint must not have a path");
        }
        s->max_attempts = cfg->max_attempts ? cfg->max_attempts : 5;
        s->backoff_base_ms = cfg->backoff_base_ms ? cfg->backoff_base_ms : 100;
        s->backoff_max_ms = cfg->backoff_max_ms ? cfg->backoff_max_ms : 5000;
        s->retry_budget_ms = cfg->retry_budget_ms ? cfg->retry_budget_ms : 30000;
        s->breaker_threshold = cfg->breaker_threshold ? cfg->breaker_threshold : 3;
        s->breaker_open_ms = cfg->breaker_open_ms ? cfg->breaker_open_ms : 10000;
        s->http_opts.connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 5000;
        s->http_opts.low_speed_time_s = cfg->low_speed_time_s > 0 ? cfg->low_speed_time_s : 10;
        s->http_opts.total_timeout_ms = cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms : 60000;
        s->http_opts.cancel = &s->cancelled;
        *ret = s;
        return 0;
}

struct s3 *s3_free(struct s3 *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_idle; i++)
                http_client_free(s->idle[i]);
        pthread_mutex_destroy(&s->lock);
        free(s->endpoint);
        free(s->bucket);
        free(s->region);
        free(s->access_key);
        if (s->secret_key)
                sodium_memzero(s->secret_key, strlen(s->secret_key));
        free(s->secret_key);
        free(s->sigv4);
        free(s);
        return NULL;
}

static int client_take(struct s3 *s, struct http_client **ret) {
        struct http_client *c = NULL;

        pthread_mutex_lock(&s->lock);
        if (s->n_idle > 0)
                c = s->idle[--s->n_idle];
        pthread_mutex_unlock(&s->lock);
        if (c) {
                *ret = c;
                return 0;
        }
        return http_client_new(&s->http_opts, ret);
}

static void client_give_back(struct s3 *s, struct http_client *c) {
        pthread_mutex_lock(&s->lock);
        /* While the server is away, its idle connections are dead or stalled. */
        if (s->n_idle < S3_POOL_MAX && s->breaker == S3_BREAKER_CLOSED) {
                s->idle[s->n_idle++] = c;
                c = NULL;
        }
        pthread_mutex_unlock(&s->lock);
        http_client_free(c);
}

/* Called with the lock held. */
static void breaker_open_locked(struct s3 *s) {
        if (s->breaker != S3_BREAKER_OPEN)
                s->stats.breaker_opens++;
        s->breaker = S3_BREAKER_OPEN;
        s->open_until_ms = now_ms() + s->breaker_open_ms;
        s->probing = false;
        /* Connections to a server that went away are not reused. */
        for (size_t i = 0; i < s->n_idle; i++)
                http_client_free(s->idle[i]);
        s->n_idle = 0;
}

/* May a call go out? 0, and *ret_probe set if it is the half-open probe;
 * -EHOSTDOWN while the breaker is open (or the probe is out). */
static int breaker_admit(struct s3 *s, enum s3_op op, bool *ret_probe) {
        int r = 0;

        *ret_probe = false;
        pthread_mutex_lock(&s->lock);
        if (s->breaker == S3_BREAKER_OPEN && now_ms() >= s->open_until_ms) {
                s->breaker = S3_BREAKER_HALF_OPEN;
                s->probing = false;
        }
        if (s->breaker == S3_BREAKER_HALF_OPEN && !s->probing) {
                s->probing = true;
                *ret_probe = true;
        } else if (s->breaker != S3_BREAKER_CLOSED) {
                s->stats.rejected[op]++;
                r = -EHOSTDOWN;
        }
        pthread_mutex_unlock(&s->lock);
        return r;
}

/* The outcome of one attempt: reachable (an HTTP answer that says the
 * server works), unreachable, or neither (a 500, a local error). */
enum attempt_outcome {
        ATTEMPT_REACHED,
        ATTEMPT_UNREACHABLE,
        ATTEMPT_OTHER,
};

/* Records an attempt; returns whether the call may go on retrying. */
static bool breaker_note(struct s3 *s, enum s3_op op, enum attempt_outcome o, int r, bool probe) {
        bool go_on = true;

        pthread_mutex_lock(&s->lock);
        s->stats.requests[op]++;
        if (r == -ETIMEDOUT)
                s->stats.timeouts[op]++;
        if (o == ATTEMPT_REACHED) {
                s->failures_in_a_row = 0;
                s->breaker = S3_BREAKER_CLOSED;
                s->probing = false;
        } else if (o == ATTEMPT_UNREACHABLE) {
                s->failures_in_a_row++;
                if (probe || s->failures_in_a_row >= s->breaker_threshold)
                        breaker_open_locked(s);
        }
        /* Calls already under way finish their retries within their
         * budget (the server may be back by then); a failed probe stops. */
        if (probe && s->breaker == S3_BREAKER_OPEN)
                go_on = false;
        pthread_mutex_unlock(&s->lock);
        return go_on;
}

static void breaker_call_done(struct s3 *s, enum s3_op op, bool probe, bool counted_error) {
        pthread_mutex_lock(&s->lock);
        if (counted_error)
                s->stats.errors[op]++;
        /* A probe that ended without telling (cancelled, a local error)
         * lets the next call probe. */
        if (probe && s->breaker == S3_BREAKER_HALF_OPEN)
                s->probing = false;
        pthread_mutex_unlock(&s->lock);
}

void s3_stats_get(struct s3 *s, struct s3_stats *ret) {
        uint64_t now = now_ms();

        pthread_mutex_lock(&s->lock);
        *ret = s->stats;
        ret->breaker = s->breaker;
        /* Past its open time the breaker lets the next call probe. */
        if (s->breaker == S3_BREAKER_OPEN && now >= s->open_until_ms)
                ret->breaker = S3_BREAKER_HALF_OPEN;
        ret->retry_after_s = 0;
        if (s->breaker != S3_BREAKER_CLOSED)
                ret->retry_after_s = s->open_until_ms > now ? (unsigned) ((s->open_until_ms - now + 999) / 1000) : 1;
        pthread_mutex_unlock(&s->lock);
}

void s3_cancel(struct s3 *s) {
        atomic_store(&s->cancelled, true);
}

/* endpoint/bucket[/key][?query] */
static int build_url(struct s3 *s, const char *key, const char *query, struct buf *url) {
        int r;

        r = buf_printf(url, "%s/%s", s->endpoint, s->bucket);
        if (r >= 0 && key) {
                r = buf_append_str(url, "/");
                if (r >= 0)
                        r = http_uri_encode(url, key, strlen(key), true);
        }
        if (r >= 0 && query && query[0])
                r = buf_printf(url, "?%s", query);
        return r;
}

static bool errno_retryable(int r) {
        return r == -ECONNREFUSED || r == -ETIMEDOUT || r == -ECONNRESET || r == -EHOSTUNREACH ||
               r == -ENETUNREACH;
}

static bool status_retryable(long status) {
        return status >= 500 || status == 429;
}

static uint32_t backoff_ms(struct s3 *s, unsigned attempt) {
        uint64_t cap = s->backoff_base_ms;

        for (unsigned i = 0; i < attempt && cap < s->backoff_max_ms; i++)
                cap *= 2;
        if (cap > s->backoff_max_ms)
                cap = s->backoff_max_ms;
        return randombytes_uniform((uint32_t) cap + 1);
}

/* Sleeps ms in slices, so that s3_cancel() cuts it short: -ECANCELED. */
static int sleep_cancellable(struct s3 *s, uint32_t ms) {
        while (ms > 0) {
                uint32_t slice = MIN(ms, 50u);
                struct timespec ts = { .tv_sec = 0, .tv_nsec = (long) slice * 1000000L };
                if (atomic_load(&s->cancelled))
                        return -ECANCELED;
                while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                        ;
                ms -= slice;
        }
        return atomic_load(&s->cancelled) ? -ECANCELED : 0;
}

static int backoff_sleep(struct s3 *s, unsigned attempt) {
        return sleep_cancellable(s, backoff_ms(s, attempt));
}

/* Pulls <Code>…</Code> out of an S3 error document, for the log. */
static void error_code(const struct buf *body, char *out, size_t cap) {
        const char *p, *e;

        out[0] = 0;
        if (!body->data)
                return;
        p = memmem(body->data, body->len, "<Code>", 6);
        if (!p)
                return;
        p += 6;
        e = memmem(p, body->len - (size_t) (p - (const char *) body->data), "</Code>", 7);
        if (!e)
                return;
        snprintf(out, cap, "%.*s", (int) MIN((size_t) (e - p), cap - 1), p);
}

struct stream_ctx {
        http_write_fn fn;
        void *userdata;
        uint64_t delivered;
};

static int stream_write(void *userdata, const void *p, size_t n) {
        struct stream_ctx *sc = userdata;
        sc->delivered += n;
        return sc->fn(sc->userdata, p, n);
}

struct s3_call {
        const char *method;
        const char *key;   /* NULL: the bucket itself */
        const char *query; /* canonical form */
        const char *range; /* "bytes=…" or NULL */
        const char *condition; /* a whole "If-…: …" header or NULL */
        const void *body;
        size_t body_len;
        struct buf *response;
        struct stream_ctx *stream;
        bool once; /* one attempt, no retries */
        bool probe; /* admitted as the breaker's probe already (s3_recover) */
};

static enum s3_op call_op(const struct s3_call *call) {
        if (!call->key)
                return streq(call->method, "GET") ? S3_OP_LIST : S3_OP_BUCKET;
        if (streq(call->method, "GET"))
                return S3_OP_GET;
        if (streq(call->method, "PUT"))
                return S3_OP_PUT;
        if (streq(call->method, "HEAD"))
                return S3_OP_HEAD;
        return S3_OP_DELETE;
}

/* Runs one S3 request with retries; returns 0 and the final HTTP status
 * (2xx, or a 4xx the caller interprets), or a negative errno. */
static int s3_call(struct s3 *s, const struct s3_call *call, struct http_response *ret) {
        _cleanup_(buf_free) struct buf url = BUF_INIT(8192);
        _cleanup_(buf_free) struct buf errbody = BUF_INIT(S3_ERROR_BODY_MAX);
        char sha_header[sizeof("x-amz-content-sha256: ") + HASH_BASE16_LEN];
        char range_header[96];
        const char *headers[4] = { sha_header, NULL, NULL, NULL };
        size_t n_headers = 1;
        struct http_client *c = NULL;
        struct http_response resp = {};
        struct http_request req;
        enum s3_op op = call_op(call);
        unsigned max_attempts = call->once ? 1 : s->max_attempts;
        bool probe;
        uint64_t t0;
        char code[64];
        int r = 0;

        r = build_url(s, call->key, call->query, &url);
        if (r < 0)
                return r;
        if (call->body && call->body_len > 0) {
                uint8_t md[SHA256_DIGEST_LEN];
                char hex[2 * SHA256_DIGEST_LEN + 1];
                r = sha256_buf(call->body, call->body_len, md);
                if (r < 0)
                        return r;
                hex_encode(md, sizeof md, hex);
                snprintf(sha_header, sizeof sha_header, "x-amz-content-sha256: %s", hex);
        } else
                snprintf(sha_header, sizeof sha_header, "x-amz-content-sha256: %s", EMPTY_SHA256);
        if (call->range) {
                snprintf(range_header, sizeof range_header, "Range: %s", call->range);
                headers[n_headers++] = range_header;
        }
        if (call->condition)
                headers[n_headers++] = call->condition;

        probe = call->probe;
        r = probe ? 0 : breaker_admit(s, op, &probe);
        if (r < 0) {
                log_debug("s3: %s %s: not sent, the server was unreachable moments ago", call->method, url.data);
                return r;
        }
        t0 = now_ms();
        r = client_take(s, &c);
        if (r < 0) {
                breaker_call_done(s, op, probe, false);
                return r;
        }
        for (unsigned attempt = 0; attempt < max_attempts; attempt++) {
                enum attempt_outcome outcome;
                bool retry;

                if (attempt > 0) {
                        uint32_t wait = backoff_ms(s, attempt - 1);
                        int k;
                        /* The budget bounds the whole call: no attempt
                         * starts after it, the last error stands. */
                        if (now_ms() - t0 + wait >= s->retry_budget_ms)
                                break;
                        k = sleep_cancellable(s, wait);
                        if (k >= 0 && !c)
                                k = http_client_new(&s->http_opts, &c);
                        if (k < 0) {
                                r = k;
                                break;
                        }
                }
                if (call->response)
                        buf_reset(call->response);
                buf_reset(&errbody);
                req = (struct http_request){
                        .method = call->method,
                        .url = (const char *) url.data,
                        .headers = headers,
                        .body = call->body,
                        .body_len = call->body_len,
                        .user = s->access_key,
                        .password = s->secret_key,
                        .aws_sigv4 = s->sigv4,
                        .response = call->response,
                        .error_body = &errbody,
                };
                if (call->stream) {
                        req.write_fn = stream_write;
                        req.write_userdata = call->stream;
                }
                r = http_request(c, &req, &resp);
                if (r < 0) {
                        log_debug("s3: %s %s: attempt %u: %s", call->method, url.data, attempt + 1,
                                  http_client_last_error(c));
                        /* A connection that failed is not used again. */
                        c = http_client_free(c);
                        if (r == -ECANCELED)
                                break;
                        outcome = errno_retryable(r) ? ATTEMPT_UNREACHABLE : ATTEMPT_OTHER;
                        retry = errno_retryable(r) && !(call->stream && call->stream->delivered > 0);
                        if (!breaker_note(s, op, outcome, r, probe) || !retry)
                                break;
                        continue;
                }
                if (resp.status >= 200 && resp.status < 300) {
                        breaker_note(s, op, ATTEMPT_REACHED, 0, probe);
                        break;
                }
                error_code(&errbody, code, sizeof code);
                log_debug("s3: %s %s: attempt %u: HTTP %ld %s", call->method, url.data,
                          attempt + 1, resp.status, code);
                if (!status_retryable(resp.status)) {
                        breaker_note(s, op, ATTEMPT_REACHED, 0, probe);
                        break;
                }
                r = http_status_to_errno(resp.status);
                outcome = resp.status == 502 || resp.status == 503 || resp.status == 504 ? ATTEMPT_UNREACHABLE
                                                                                          : ATTEMPT_OTHER;
                if (!breaker_note(s, op, outcome, r, probe))
                        break;
        }
        if (c)
                client_give_back(s, c);
        breaker_call_done(s, op, probe,
                          r < 0 && (errno_retryable(r) || r == -EIO || r == -EAGAIN));
        if (r < 0)
                return r;
        *ret = resp;
        return 0;
}

int s3_probe(struct s3 *s) {
        struct http_response resp;
        int r;

        r = s3_call(s, &(struct s3_call){ .method = "HEAD", .once = true }, &resp);
        if (r < 0)
                return r;
        return resp.status == 200 ? 0 : http_status_to_errno(resp.status);
}

int s3_recover(struct s3 *s) {
        struct http_response resp;
        int r = 0;

        pthread_mutex_lock(&s->lock);
        if (s->breaker == S3_BREAKER_CLOSED)
                r = 1;
        else if (s->probing)
                r = -EHOSTDOWN;
        else {
                s->breaker = S3_BREAKER_HALF_OPEN;
                s->probing = true;
        }
        pthread_mutex_unlock(&s->lock);
        if (r != 0)
                return r;
        r = s3_call(s, &(struct s3_call){ .method = "HEAD", .once = true, .probe = true }, &resp);
        return r < 0 ? r : 0;
}

int s3_put_object(struct s3 *s, const char *key, const void *data, size_t n) {
        static const char empty[1];
        struct http_response resp;
        int r;

        if (!key_valid(key))
                return -EINVAL;
        r = s3_call(s, &(struct s3_call){ .method = "PUT", .key = key,
                                          .body = data ? data : empty, .body_len = n },
                    &resp);
        if (r < 0)
                return r;
        return http_status_to_errno(resp.status);
}

int s3_put_object_new(struct s3 *s, const char *key, const void *data, size_t n) {
        static const char empty[1];
        struct http_response resp;
        int r;

        if (!key_valid(key))
                return -EINVAL;
        for (unsigned attempt = 0;; attempt++) {
                r = s3_call(s, &(struct s3_call){ .method = "PUT", .key = key,
                                                  .condition = "If-None-Match: *",
                                                  .body = data ? data : empty, .body_len = n },
                            &resp);
                if (r < 0)
                        return r;
                /* 409: another conditional write of the key is in flight
                 * (AWS asks to retry); the retry then sees 412 or wins. */
                if (resp.status != 409 || attempt + 1 >= s->max_attempts)
                        break;
                r = backoff_sleep(s, attempt);
                if (r < 0)
                        return r;
        }
        if (resp.status == 412)
                return -EEXIST;
        return http_status_to_errno(resp.status);
}

static int range_string(const struct s3_range *range, char *out, size_t cap) {
        uint64_t last;

        if (range->length == 0) {
                snprintf(out, cap, "bytes=%" PRIu64 "-", range->offset);
                return 0;
        }
        if (ADD_OVERFLOW(range->offset, range->length - 1, &last))
                return -ERANGE;
        snprintf(out, cap, "bytes=%" PRIu64 "-%" PRIu64, range->offset, last);
        return 0;
}

static int get_common(struct s3 *s, const char *key, const struct s3_range *range,
                      struct buf *out, struct stream_ctx *stream) {
        char rs[64];
        struct http_response resp;
        int r;

        if (!key_valid(key))
                return -EINVAL;
        if (range) {
                r = range_string(range, rs, sizeof rs);
                if (r < 0)
                        return r;
        }
        r = s3_call(s, &(struct s3_call){ .method = "GET", .key = key,
                                          .range = range ? rs : NULL,
                                          .response = out, .stream = stream },
                    &resp);
        if (r < 0)
                return r;
        r = http_status_to_errno(resp.status);
        if (r < 0)
                return r;
        /* A server that ignores Range answers 200 with the whole object:
         * that is the asked-for bytes only if the range starts at 0 and is open. */
        if (range && resp.status != 206 && (range->offset != 0 || range->length != 0))
                return -EPROTO;
        return 0;
}

int s3_get_object(struct s3 *s, const char *key, const struct s3_range *range, struct buf *out) {
        buf_reset(out);
        return get_common(s, key, range, out, NULL);
}

int s3_get_object_cb(struct s3 *s, const char *key, const struct s3_range *range,
                     http_write_fn write_fn, void *userdata) {
        struct stream_ctx sc = { .fn = write_fn, .userdata = userdata };
        return get_common(s, key, range, NULL, &sc);
}

int s3_head_object(struct s3 *s, const char *key, uint64_t *ret_size) {
        struct http_response resp;
        int r;

        if (!key_valid(key))
                return -EINVAL;
        r = s3_call(s, &(struct s3_call){ .method = "HEAD", .key = key }, &resp);
        if (r < 0)
                return r;
        if (resp.status == 404)
                return 0;
        r = http_status_to_errno(resp.status);
        if (r < 0)
                return r;
        if (resp.content_length < 0)
                return -EBADMSG;
        if (ret_size)
                *ret_size = (uint64_t) resp.content_length;
        return 1;
}

int s3_delete_object(struct s3 *s, const char *key) {
        struct http_response resp;
        int r;

        if (!key_valid(key))
                return -EINVAL;
        r = s3_call(s, &(struct s3_call){ .method = "DELETE", .key = key }, &resp);
        if (r < 0)
                return r;
        if (resp.status == 404) /* some servers say so for a missing key */
                return 0;
        return http_status_to_errno(resp.status);
}

int s3_create_bucket(struct s3 *s) {
        static const char empty[1];
        _cleanup_(buf_free) struct buf body = BUF_INIT(S3_ERROR_BODY_MAX);
        struct http_response resp;
        int r;

        r = s3_call(s, &(struct s3_call){ .method = "PUT", .body = empty, .body_len = 0,
                                          .response = &body },
                    &resp);
        if (r < 0)
                return r;
        if (resp.status == 409) {
                /* Only "already owned by you" is fine; someone else's
                 * bucket of that name is not. The error document went to
                 * s3_call's error buffer: ask again cheaply with HEAD. */
                r = s3_call(s, &(struct s3_call){ .method = "HEAD" }, &resp);
                if (r < 0)
                        return r;
                return resp.status == 200 ? 1 : -EEXIST;
        }
        return http_status_to_errno(resp.status);
}

/* ---- ListObjectsV2 ---- */

void s3_list_page_done(struct s3_list_page *p) {
        if (!p)
                return;
        for (size_t i = 0; i < p->n_objects; i++)
                free(p->objects[i].key);
        free(p->objects);
        free(p->next_token);
        *p = (struct s3_list_page){};
}

/* Finds <tag>value</tag> in [p, end); returns the value span and moves
 * *next past the closing tag. */
static bool find_element(const char *p, const char *end, const char *tag, const char **ret_v,
                         size_t *ret_n, const char **next) {
        char open[64], close[64];
        const char *v, *e;
        int no, nc;

        no = snprintf(open, sizeof open, "<%s>", tag);
        nc = snprintf(close, sizeof close, "</%s>", tag);
        if (p >= end)
                return false;
        v = memmem(p, (size_t) (end - p), open, (size_t) no);
        if (!v)
                return false;
        v += no;
        e = memmem(v, (size_t) (end - v), close, (size_t) nc);
        if (!e)
                return false;
        *ret_v = v;
        *ret_n = (size_t) (e - v);
        if (next)
                *next = e + nc;
        return true;
}

static int utf8_put(struct buf *b, uint32_t cp) {
        uint8_t u[4];
        size_t n;

        if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return -EBADMSG;
        if (cp < 0x80) {
                u[0] = (uint8_t) cp;
                n = 1;
        } else if (cp < 0x800) {
                u[0] = (uint8_t) (0xC0 | (cp >> 6));
                u[1] = (uint8_t) (0x80 | (cp & 0x3F));
                n = 2;
        } else if (cp < 0x10000) {
                u[0] = (uint8_t) (0xE0 | (cp >> 12));
                u[1] = (uint8_t) (0x80 | ((cp >> 6) & 0x3F));
                u[2] = (uint8_t) (0x80 | (cp & 0x3F));
                n = 3;
        } else {
                u[0] = (uint8_t) (0xF0 | (cp >> 18));
                u[1] = (uint8_t) (0x80 | ((cp >> 12) & 0x3F));
                u[2] = (uint8_t) (0x80 | ((cp >> 6) & 0x3F));
                u[3] = (uint8_t) (0x80 | (cp & 0x3F));
                n = 4;
        }
        return buf_append(b, u, n);
}

/* XML text → heap string: the five predefined entities and &#N; / &#xH;.
 * Refuses markup inside (a '<'), unknown entities and NUL. */
static int xml_text(const char *v, size_t n, size_t max, char **ret) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(max);
        static const struct {
                const char *name;
                char ch;
        } ents[] = { { "amp;", '&' }, { "lt;", '<' }, { "gt;", '>' }, { "quot;", '"' },
                     { "apos;", '\'' } };
        size_t i = 0;
        int r;

        r = buf_reserve(&b, 0);
        if (r < 0)
                return r;
        while (i < n) {
                char ch = v[i];
                if (ch == '<' || ch == 0)
                        return -EBADMSG;
                if (ch != '&') {
                        r = buf_append(&b, &ch, 1);
                        if (r < 0)
                                return r;
                        i++;
                        continue;
                }
                i++;
                bool done = false;
                for (size_t k = 0; k < ELEMENTSOF(ents); k++) {
                        size_t l = strlen(ents[k].name);
                        if (n - i >= l && memcmp(v + i, ents[k].name, l) == 0) {
                                r = buf_append(&b, &ents[k].ch, 1);
                                if (r < 0)
                                        return r;
                                i += l;
                                done = true;
                                break;
                        }
                }
                if (done)
                        continue;
                if (i < n && v[i] == '#') {
                        bool hex = false;
                        uint32_t cp = 0;
                        size_t digits = 0;
                        i++;
                        if (i < n && v[i] == 'x') {
                                hex = true;
                                i++;
                        }
                        while (i < n && v[i] != ';') {
                                char d = v[i];
                                uint32_t dv;
                                if (d >= '0' && d <= '9')
                                        dv = (uint32_t) (d - '0');
                                else if (hex && d >= 'a' && d <= 'f')
                                        dv = (uint32_t) (d - 'a' + 10);
                                else if (hex && d >= 'A' && d <= 'F')
                                        dv = (uint32_t) (d - 'A' + 10);
                                else
                                        return -EBADMSG;
                                if (++digits > 8)
                                        return -EBADMSG;
                                cp = cp * (hex ? 16 : 10) + dv;
                                i++;
                        }
                        if (i >= n || digits == 0)
                                return -EBADMSG;
                        i++; /* ';' */
                        r = utf8_put(&b, cp);
                        if (r < 0)
                                return r;
                        continue;
                }
                return -EBADMSG;
        }
        return buf_steal(&b, ret, NULL);
}

static int parse_u64(const char *v, size_t n, uint64_t *ret) {
        uint64_t x = 0;

        if (n == 0 || n > 20)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++) {
                if (v[i] < '0' || v[i] > '9')
                        return -EBADMSG;
                if (MUL_OVERFLOW(x, 10, &x) || ADD_OVERFLOW(x, (uint64_t) (v[i] - '0'), &x))
                        return -EBADMSG;
        }
        *ret = x;
        return 0;
}

int s3_list_parse(const char *xml, size_t n, struct s3_list_page *ret) {
        _cleanup_(s3_list_page_done) struct s3_list_page page = {};
        const char *p, *end = xml + n, *v, *next;
        size_t vn, cap = 0;
        int r;

        if (n > S3_LIST_XML_MAX)
                return -E2BIG;
        p = memmem(xml, n, "<ListBucketResult", 17);
        if (!p)
                return -EBADMSG;
        {
                const char *close = memmem(p, (size_t) (end - p), "</ListBucketResult>", 19);
                if (!close)
                        return -EBADMSG;
                end = close;
        }

        /* Objects: each <Contents> holds <Key> and <Size>. */
        const char *q = p;
        while (find_element(q, end, "Contents", &v, &vn, &next)) {
                const char *kv, *sv;
                size_t kn, sn;
                struct s3_object o = {};

                if (page.n_objects >= S3_LIST_OBJECTS_MAX)
                        return -E2BIG;
                if (!find_element(v, v + vn, "Key", &kv, &kn, NULL) ||
                    !find_element(v, v + vn, "Size", &sv, &sn, NULL))
                        return -EBADMSG;
                r = parse_u64(sv, sn, &o.size);
                if (r < 0)
                        return r;
                r = xml_text(kv, kn, S3_KEY_MAX, &o.key);
                if (r < 0)
                        return r == -E2BIG ? -EBADMSG : r;
                if (page.n_objects == cap) {
                        size_t ncap = cap ? cap * 2 : 64;
                        struct s3_object *no = reallocarray(page.objects, ncap, sizeof *no);
                        if (!no) {
                                free(o.key);
                                return -ENOMEM;
                        }
                        page.objects = no;
                        cap = ncap;
                }
                page.objects[page.n_objects++] = o;
                q = next;
        }

        /* The flags live outside <Contents>; keys cannot contain markup, so
         * a search from the start finds the top-level elements. Search only
         * the part before the first <Contents> and after the last one. */
        const char *first = memmem(p, (size_t) (end - p), "<Contents>", 10);
        const char *hdr_end = first ? first : end;
        bool found = find_element(p, hdr_end, "IsTruncated", &v, &vn, NULL) ||
                     find_element(q, end, "IsTruncated", &v, &vn, NULL);
        if (found) {
                if (vn == 4 && memcmp(v, "true", 4) == 0)
                        page.truncated = true;
                else if (!(vn == 5 && memcmp(v, "false", 5) == 0))
                        return -EBADMSG;
        }
        if (page.truncated) {
                if (!find_element(p, hdr_end, "NextContinuationToken", &v, &vn, NULL) &&
                    !find_element(q, end, "NextContinuationToken", &v, &vn, NULL))
                        return -EBADMSG;
                r = xml_text(v, vn, 4096, &page.next_token);
                if (r < 0)
                        return r == -E2BIG ? -EBADMSG : r;
                if (!page.next_token[0])
                        return -EBADMSG;
        }
        *ret = page;
        page = (struct s3_list_page){};
        return 0;
}

int s3_list_objects_v2(struct s3 *s, const char *prefix, const char *continuation_token,
                       unsigned max_keys, struct s3_list_page *ret) {
        _cleanup_(buf_free) struct buf query = BUF_INIT(8192);
        _cleanup_(buf_free) struct buf body = BUF_INIT(S3_LIST_XML_MAX);
        struct http_response resp;
        int r = 0;

        /* Canonical order: continuation-token, list-type, max-keys, prefix. */
        if (continuation_token) {
                r = buf_append_str(&query, "continuation-token=");
                if (r >= 0)
                        r = http_uri_encode(&query, continuation_token,
                                            strlen(continuation_token), false);
                if (r >= 0)
                        r = buf_append_str(&query, "&");
        }
        if (r >= 0)
                r = buf_append_str(&query, "list-type=2");
        if (r >= 0 && max_keys > 0)
                r = buf_printf(&query, "&max-keys=%u", max_keys);
        if (r >= 0 && prefix && prefix[0]) {
                r = buf_append_str(&query, "&prefix=");
                if (r >= 0)
                        r = http_uri_encode(&query, prefix, strlen(prefix), false);
        }
        if (r < 0)
                return r;
        r = s3_call(s, &(struct s3_call){ .method = "GET", .query = (const char *) query.data,
                                          .response = &body },
                    &resp);
        if (r < 0)
                return r;
        r = http_status_to_errno(resp.status);
        if (r < 0)
                return r;
        r = s3_list_parse((const char *) body.data, body.len, ret);
        if (r < 0)
                log_debug("s3: unparsable ListObjectsV2 reply (%zu bytes)", body.len);
        return r;
}

int s3_list_foreach(struct s3 *s, const char *prefix, s3_object_fn fn, void *userdata) {
        _cleanup_free_ char *token = NULL;
        int r;

        for (;;) {
                _cleanup_(s3_list_page_done) struct s3_list_page page = {};
                r = s3_list_objects_v2(s, prefix, token, 0, &page);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < page.n_objects; i++) {
                        r = fn(&page.objects[i], userdata);
                        if (r != 0)
                                return r;
                }
                if (!page.truncated)
                        return 0;
                /* A server that hands back the token it got would loop forever. */
                if (token && streq(token, page.next_token))
                        return -EBADMSG;
                free(token);
                token = TAKE_PTR(page.next_token);
        }
}

/* ---- presigned URLs ---- */

static void hmac(const uint8_t *key, size_t keylen, const char *msg, uint8_t out[32]) {
        crypto_auth_hmacsha256_state st;

        crypto_auth_hmacsha256_init(&st, key, keylen);
        crypto_auth_hmacsha256_update(&st, (const unsigned char *) msg, strlen(msg));
        crypto_auth_hmacsha256_final(&st, out);
        sodium_memzero(&st, sizeof st);
}

int s3_presign(const struct s3_presign_params *p, char **ret_url) {
        _cleanup_(buf_free) struct buf query = BUF_INIT(4096);
        _cleanup_(buf_free) struct buf canon = BUF_INIT(16384);
        _cleanup_(buf_free) struct buf url = BUF_INIT(16384);
        _cleanup_free_ char *secret = NULL, *scope = NULL, *credential = NULL, *sts = NULL;
        const char *service = p->service ? p->service : "s3";
        const char *host;
        char date[9], amzdate[17], hex[65];
        uint8_t k[32], md[32];
        struct tm tm;
        int r;

        if (!p->method || !p->url_base || !p->path || p->path[0] != '/' || !p->region ||
            !p->access_key || !p->secret_key || p->expires_s < 1 || p->expires_s > 604800)
                return -EINVAL;
        host = strstr(p->url_base, "://");
        if (!host || !host[3] || strchr(host + 3, '/'))
                return -EINVAL;
        host += 3;
        r = s3_sodium_init();
        if (r < 0)
                return r;
        if (!gmtime_r(&p->now, &tm))
                return -EINVAL;
        if (strftime(date, sizeof date, "%Y%m%d", &tm) != 8 ||
            strftime(amzdate, sizeof amzdate, "%Y%m%dT%H%M%SZ", &tm) != 16)
                return -EINVAL;
        if (asprintf(&scope, "%s/%s/%s/aws4_request", date, p->region, service) < 0) {
                scope = NULL;
                return -ENOMEM;
        }
        if (asprintf(&credential, "%s/%s", p->access_key, scope) < 0) {
                credential = NULL;
                return -ENOMEM;
        }

        /* Query parameters, already in sorted order. */
        r = buf_append_str(&query, "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=");
        if (r >= 0)
                r = http_uri_encode(&query, credential, strlen(credential), false);
        if (r >= 0)
                r = buf_printf(&query, "&X-Amz-Date=%s&X-Amz-Expires=%u&X-Amz-SignedHeaders=host",
                               amzdate, p->expires_s);
        if (r >= 0)
                r = buf_printf(&canon, "%s\n%s\n%s\nhost:%s\n\nhost\nUNSIGNED-PAYLOAD", p->method,
                               p->path, query.data, host);
        if (r < 0)
                return r;
        r = sha256_buf(canon.data, canon.len, md);
        if (r < 0)
                return r;
        hex_encode(md, sizeof md, hex);
        if (asprintf(&sts, "AWS4-HMAC-SHA256\n%s\n%s\n%s", amzdate, scope, hex) < 0) {
                sts = NULL;
                return -ENOMEM;
        }

        if (asprintf(&secret, "AWS4%s", p->secret_key) < 0) {
                secret = NULL;
                return -ENOMEM;
        }
        hmac((const uint8_t *) secret, strlen(secret), date, k);
        sodium_memzero(secret, strlen(secret));
        hmac(k, sizeof k, p->region, k);
        hmac(k, sizeof k, service, k);
        hmac(k, sizeof k, "aws4_request", k);
        hmac(k, sizeof k, sts, md);
        sodium_memzero(k, sizeof k);
        hex_encode(md, sizeof md, hex);

        r = buf_printf(&url, "%s%s?%s&X-Amz-Signature=%s", p->url_base, p->path, query.data, hex);
        if (r < 0)
                return r;
        return buf_steal(&url, ret_url, NULL);
}

int s3_presign_get(struct s3 *s, const char *key, unsigned expires_s, time_t now,
                   char **ret_url) {
        _cleanup_(buf_free) struct buf path = BUF_INIT(4096);
        int r;

        if (!key_valid(key))
                return -EINVAL;
        r = buf_printf(&path, "/%s/", s->bucket);
        if (r >= 0)
                r = http_uri_encode(&path, key, strlen(key), true);
        if (r < 0)
                return r;
        return s3_presign(&(struct s3_presign_params){
                                  .method = "GET",
                                  .url_base = s->endpoint,
                                  .path = (const char *) path.data,
                                  .region = s->region,
                                  .access_key = s->access_key,
                                  .secret_key = s->secret_key,
                                  .expires_s = expires_s,
                                  .now = now,
                          },
                          ret_url);
}
