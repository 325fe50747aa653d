/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP client on libcurl. One curl easy handle per struct http_client,
 * reset (not recreated) between requests so its connection cache, and so
 * keep-alive, survives.
 */
#include <pthread.h>
#include <stdio.h>
#include <strings.h>

#include <curl/curl.h>

#include "trove/http.h"

struct http_client {
        CURL *curl;
        struct http_client_options opts;
        char errbuf[CURL_ERROR_SIZE];
        /* Per request: */
        const struct http_request *req;
        struct http_response *resp;
        size_t body_off;
        int cb_error; /* errno a callback failed with, to report exactly */
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_result = CURLE_FAILED_INIT;

static void global_init_once(void) {
        global_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int http_global_init(void) {
        pthread_once(&global_once, global_init_once);
        return global_result == CURLE_OK ? 0 : -ENOMEM;
}

int http_client_new(const struct http_client_options *opts, struct http_client **ret) {
        struct http_client *c;
        int r;

        r = http_global_init();
        if (r < 0)
                return r;
        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        if (opts)
                c->opts = *opts;
        if (c->opts.connect_timeout_ms <= 0)
                c->opts.connect_timeout_ms = 10000;
        if (c->opts.low_speed_limit <= 0)
                c->opts.low_speed_limit = 1;
        if (c->opts.low_speed_time_s <= 0)
                c->opts.low_speed_time_s = 30;
        c->curl = curl_easy_init();
        if (!c->curl) {
                free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

struct http_client *http_client_free(struct http_client *c) {
        if (!c)
                return NULL;
        curl_easy_cleanup(c->curl);
        free(c);
        return NULL;
}

const char *http_client_last_error(const struct http_client *c) {
        return c->errbuf;
}

static bool header_is(const char *line, size_t n, const char *name, const char **ret_value,
                      size_t *ret_len) {
        size_t k = strlen(name);
        const char *v, *e;

        if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
                return false;
        v = line + k + 1;
        e = line + n;
        while (v < e && (*v == ' ' || *v == '\t'))
                v++;
        while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
                e--;
        *ret_value = v;
        *ret_len = (size_t) (e - v);
        return true;
}

static void copy_field(char *dst, size_t cap, const char *v, size_t n) {
        if (n >= cap)
                n = cap - 1; /* truncated: these fields are informational */
        memcpy(dst, v, n);
        dst[n] = 0;
}

static int64_t parse_length(const char *v, size_t n) {
        uint64_t x = 0;

        if (n == 0 || n > 19)
                return -1;
        for (size_t i = 0; i < n; i++) {
                if (v[i] < '0' || v[i] > '9')
                        return -1;
                x = x * 10 + (uint64_t) (v[i] - '0');
        }
        return x > INT64_MAX ? -1 : (int64_t) x;
}

static size_t header_cb(char *line, size_t size, size_t nitems, void *userdata) {
        struct http_client *c = userdata;
        struct http_response *resp = c->resp;
        size_t n = size * nitems;
        const char *v;
        size_t vn;

        /* A new status line (after 100 Continue, or a redirect) starts over. */
        if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
                resp->content_length = -1;
                resp->etag[0] = 0;
                resp->content_type[0] = 0;
                resp->captured[0] = 0;
                resp->captured_count = 0;
                resp->captured_len = 0;
        } else if (c->req->capture_header && header_is(line, n, c->req->capture_header, &v, &vn)) {
                /* Not copied when it does not fit or comes twice: a value
                 * the caller relies on is never silently cut or chosen. */
                resp->captured_count++;
                resp->captured_len = vn;
                if (resp->captured_count == 1 && vn < sizeof resp->captured) {
                        memcpy(resp->captured, v, vn);
                        resp->captured[vn] = 0;
                } else
                        resp->captured[0] = 0;
        } else if (header_is(line, n, "ETag", &v, &vn))
                copy_field(resp->etag, sizeof resp->etag, v, vn);
        else if (header_is(line, n, "Content-Type", &v, &vn))
                copy_field(resp->content_type, sizeof resp->content_type, v, vn);
        else if (header_is(line, n, "Content-Length", &v, &vn))
                resp->content_length = parse_length(v, vn);
        return n;
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *userdata) {
        struct http_client *c = userdata;
        const struct http_request *req = c->req;
        size_t n = size * nmemb;
        long status = 0;
        int r = 0;

        if (req->error_body) {
                (void) curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
                if (status < 200 || status >= 300) {
                        size_t room = req->error_body->max - req->error_body->len;
                        (void) buf_append(req->error_body, p, MIN(n, room));
                        c->resp->body_bytes += n;
                        return n;
                }
        }
        if (req->write_fn)
                r = req->write_fn(req->write_userdata, p, n);
        else if (req->response)
                r = buf_append(req->response, p, n);
        if (r < 0) {
                c->cb_error = r;
                return n == 0 ? 1 : 0; /* anything but n: curl aborts */
        }
        c->resp->body_bytes += n;
        return n;
}

static size_t read_cb(char *p, size_t size, size_t nitems, void *userdata) {
        struct http_client *c = userdata;
        const struct http_request *req = c->req;
        size_t n = size * nitems;
        ssize_t got;

        if (!req->read_fn) {
                size_t left = req->body_len - c->body_off;
                n = MIN(n, left);
                if (n > 0)
                        memcpy(p, (const uint8_t *) req->body + c->body_off, n);
                c->body_off += n;
                return n;
        }
        got = req->read_fn(req->read_userdata, p, n);
        if (got < 0) {
                c->cb_error = (int) got;
                return CURL_READFUNC_ABORT;
        }
        if ((size_t) got > n) {
                c->cb_error = -EINVAL;
                return CURL_READFUNC_ABORT;
        }
        return (size_t) got;
}

/* curl rewinds the body when it has to send it again (auth, redirect, a
 * connection that died before the response): possible from memory only. */
static int seek_cb(void *userdata, curl_off_t offset, int origin) {
        struct http_client *c = userdata;

        if (c->req->read_fn || origin != SEEK_SET || offset < 0 ||
            (uint64_t) offset > c->req->body_len)
                return CURL_SEEKFUNC_CANTSEEK;
        c->body_off = (size_t) offset;
        return CURL_SEEKFUNC_OK;
}

/* Called by curl about once a second at least, also while it waits for a
 * connection or the first byte. */
static int progress_cb(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
        struct http_client *c = userdata;

        if (c->opts.cancel && atomic_load(c->opts.cancel)) {
                c->cb_error = -ECANCELED;
                return 1;
        }
        return 0;
}

static int curl_to_errno(struct http_client *c, CURLcode code) {
        long os_errno = 0;

        switch (code) {
        case CURLE_OK:
                return 0;
        case CURLE_COULDNT_CONNECT:
                (void) curl_easy_getinfo(c->curl, CURLINFO_OS_ERRNO, &os_errno);
                if (os_errno == EHOSTUNREACH || os_errno == ENETUNREACH ||
                    os_errno == ECONNREFUSED || os_errno == ETIMEDOUT)
                        return (int) -os_errno;
                return -ECONNREFUSED;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return -EHOSTUNREACH;
        case CURLE_URL_MALFORMAT:
        case CURLE_BAD_FUNCTION_ARGUMENT:
                return -EINVAL;
        case CURLE_UNSUPPORTED_PROTOCOL:
                return -EPROTONOSUPPORT;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
                return -ECONNRESET;
        case CURLE_WRITE_ERROR:
        case CURLE_READ_ERROR:
        case CURLE_ABORTED_BY_CALLBACK:
        case CURLE_SEND_FAIL_REWIND:
                return c->cb_error < 0 ? c->cb_error : -EIO;
        case CURLE_TOO_MANY_REDIRECTS:
                return -ELOOP;
        case CURLE_FILESIZE_EXCEEDED:
                return -EFBIG;
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_WEIRD_SERVER_REPLY:
                return -EPROTO;
        default:
                return -EIO;
        }
}

#define SETOPT(opt, val)                                                \
        do {                                                            \
                if (curl_easy_setopt(c->curl, (opt), (val)) != CURLE_OK) \
                        goto bad_option;                                \
        } while (0)

int http_request(struct http_client *c, const struct http_request *req,
                 struct http_response *ret) {
        struct curl_slist *headers = NULL, *t;
        struct http_response resp = { .content_length = -1 };
        const char *method = req->method ? req->method : "GET";
        bool has_body = req->body || req->read_fn;
        CURLcode code;
        int r;

        if (!req->url || (req->body && req->read_fn) || (req->response && req->write_fn))
                return -EINVAL;
        if (c->opts.cancel && atomic_load(c->opts.cancel)) {
                snprintf(c->errbuf, sizeof c->errbuf, "cancelled");
                return -ECANCELED;
        }

        curl_easy_reset(c->curl);
        c->errbuf[0] = 0;
        c->req = req;
        c->resp = &resp;
        c->body_off = 0;
        c->cb_error = 0;

        SETOPT(CURLOPT_URL, req->url);
        SETOPT(CURLOPT_ERRORBUFFER, c->errbuf);
        SETOPT(CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
        SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
        SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
        SETOPT(CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
        SETOPT(CURLOPT_REDIR_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
        SETOPT(CURLOPT_CONNECTTIMEOUT_MS, c->opts.connect_timeout_ms);
        SETOPT(CURLOPT_LOW_SPEED_LIMIT, c->opts.low_speed_limit);
        SETOPT(CURLOPT_LOW_SPEED_TIME, c->opts.low_speed_time_s);
        if (c->opts.total_timeout_ms > 0)
                SETOPT(CURLOPT_TIMEOUT_MS, c->opts.total_timeout_ms);
        if (c->opts.follow_redirects) {
                SETOPT(CURLOPT_FOLLOWLOCATION, 1L);
                SETOPT(CURLOPT_MAXREDIRS, 10L);
        }
        SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
        if (c->opts.cancel) {
                SETOPT(CURLOPT_NOPROGRESS, 0L);
                SETOPT(CURLOPT_XFERINFOFUNCTION, progress_cb);
                SETOPT(CURLOPT_XFERINFODATA, c);
        }
        SETOPT(CURLOPT_HEADERFUNCTION, header_cb);
        SETOPT(CURLOPT_HEADERDATA, c);
        SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
        SETOPT(CURLOPT_WRITEDATA, c);

        if (streq(method, "HEAD"))
                SETOPT(CURLOPT_NOBODY, 1L);
        else if (has_body) {
                SETOPT(CURLOPT_UPLOAD, 1L);
                SETOPT(CURLOPT_READFUNCTION, read_cb);
                SETOPT(CURLOPT_READDATA, c);
                SETOPT(CURLOPT_SEEKFUNCTION, seek_cb);
                SETOPT(CURLOPT_SEEKDATA, c);
                if (req->body)
                        SETOPT(CURLOPT_INFILESIZE_LARGE, (curl_off_t) req->body_len);
                else if (req->body_size >= 0)
                        SETOPT(CURLOPT_INFILESIZE_LARGE, (curl_off_t) req->body_size);
                if (!streq(method, "PUT"))
                        SETOPT(CURLOPT_CUSTOMREQUEST, method);
        } else if (!streq(method, "GET"))
                SETOPT(CURLOPT_CUSTOMREQUEST, method);

        if (req->aws_sigv4)
                SETOPT(CURLOPT_AWS_SIGV4, req->aws_sigv4);
        if (req->user) {
                SETOPT(CURLOPT_USERNAME, req->user);
                SETOPT(CURLOPT_PASSWORD, req->password ? req->password : "");
        }

        /* 100-continue costs a round trip per upload for nothing here. But
         * curl's SigV4 signs every header in the list, even the empty
         * "Expect:" that only suppresses one (and is never sent), which the
         * server cannot verify: there, only cap the wait for the 100. */
        if (has_body && req->aws_sigv4)
                SETOPT(CURLOPT_EXPECT_100_TIMEOUT_MS, 200L);
        else if (has_body) {
                t = curl_slist_append(headers, "Expect:");
                if (!t)
                        goto oom;
                headers = t;
        }
        for (const char *const *h = req->headers; h && *h; h++) {
                t = curl_slist_append(headers, *h);
                if (!t)
                        goto oom;
                headers = t;
        }
        if (headers)
                SETOPT(CURLOPT_HTTPHEADER, headers);

        code = curl_easy_perform(c->curl);
        curl_slist_free_all(headers);
        /* Nothing of the request may be referenced after it returns. */
        c->req = NULL;
        c->resp = NULL;
        if (code != CURLE_OK) {
                if (!c->errbuf[0])
                        snprintf(c->errbuf, sizeof c->errbuf, "%s", curl_easy_strerror(code));
                r = curl_to_errno(c, code);
                log_debug("http: %s %s: %s", method, req->url, c->errbuf);
                return r;
        }
        (void) curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &resp.status);
        if (ret)
                *ret = resp;
        return 0;

oom:
        curl_slist_free_all(headers);
        c->req = NULL;
        c->resp = NULL;
        return -ENOMEM;
bad_option:
        curl_slist_free_all(headers);
        c->req = NULL;
        c->resp = NULL;
        snprintf(c->errbuf, sizeof c->errbuf, "curl option refused");
        return -EINVAL;
}

int http_status_to_errno(long status) {
        if (status >= 200 && status < 300)
                return 0;
        switch (status) {
        case 401:
        case 403:
                return -EACCES;
        case 404:
        case 410:
                return -ENOENT;
        case 409:
        case 412:
                return -EEXIST;
        case 413:
                return -EFBIG;
        case 416:
                return -ERANGE;
        case 429:
        case 503:
                return -EAGAIN;
        }
        if (status >= 400 && status < 500)
                return -EINVAL;
        if (status >= 500 && status < 600)
                return -EIO;
        return -EPROTO;
}

static bool is_unreserved(unsigned char ch) {
        return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
               ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

int http_uri_encode(struct buf *out, const char *s, size_t n, bool keep_slash) {
        static const char hex[] = "0123456789ABCDEF";
        size_t start = out->len;
        int r;

        for (size_t i = 0; i < n; i++) {
                unsigned char ch = (unsigned char) s[i];
                if (is_unreserved(ch) || (keep_slash && ch == '/'))
                        r = buf_append(out, &ch, 1);
                else {
                        char e[3] = { '%', hex[ch >> 4], hex[ch & 15] };
                        r = buf_append(out, e, 3);
                }
                if (r < 0) {
                        out->len = start;
                        if (out->data)
                                out->data[start] = 0;
                        return r;
                }
        }
        return 0;
}
