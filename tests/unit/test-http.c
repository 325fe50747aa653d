/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for the libcurl wrapper against a tiny HTTP/1.1 server on loopback
 * (a thread in this process) and against a port nobody listens on. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>

#include "test.h"
#include "trove/http.h"

struct server {
        int fd;
        int port;
        int accepts;
        int requests;
        char last[8192];
        size_t last_len;
        pthread_t thread;
};

static size_t parse_content_length(const char *req) {
        const char *p = strcasestr(req, "\r\nContent-Length:");
        size_t n = 0;

        if (!p)
                return 0;
        p += 17;
        while (*p == ' ')
                p++;
        while (*p >= '0' && *p <= '9' && n < 1000000)
                n = n * 10 + (size_t) (*p++ - '0');
        return n;
}

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

/* Serves requests on one connection at a time, keep-alive, until the
 * listening socket is shut down. */
static void *server_main(void *arg) {
        struct server *s = arg;
        static char big[100000];

        memset(big, 'x', sizeof big);
        for (;;) {
                int c = accept(s->fd, NULL, NULL);
                if (c < 0)
                        return NULL;
                s->accepts++;
                for (;;) {
                        char req[8192];
                        size_t len = 0, body;
                        char *end = NULL;
                        char hdr[256];
                        const char *payload = "hello";
                        size_t plen = 5;
                        int status = 200;

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
                        body = parse_content_length(req);
                        while (len < (size_t) (end + 4 - req) + body && len < sizeof req - 1) {
                                ssize_t n = recv(c, req + len, sizeof req - 1 - len, 0);
                                if (n <= 0)
                                        break;
                                len += (size_t) n;
                        }
                        req[len] = 0;
                        memcpy(s->last, req, len + 1);
                        s->last_len = len;
                        s->requests++;
                        if (strncmp(req, "GET /big ", 9) == 0 ||
                            strncmp(req, "HEAD /big ", 10) == 0) {
                                payload = big;
                                plen = sizeof big;
                        } else if (strncmp(req, "GET /missing ", 13) == 0) {
                                status = 404;
                                payload = "nope";
                                plen = 4;
                        } else if (strncmp(req, "PUT ", 4) == 0)
                                status = 201;
                        snprintf(hdr, sizeof hdr,
                                 "HTTP/1.1 %d X\r\nETag: \"v1\"\r\nContent-Type: text/plain\r\n"
                                 "Content-Length: %zu\r\n\r\n",
                                 status, plen);
                        if (!send_all(c, hdr, strlen(hdr)))
                                break;
                        if (strncmp(req, "HEAD ", 5) != 0 && !send_all(c, payload, plen))
                                break;
                }
                close(c);
        }
}

static int listen_socket(int *ret_port, bool do_listen) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof a;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        CHECK(fd >= 0);
        CHECK(bind(fd, (struct sockaddr *) &a, sizeof a) == 0);
        if (do_listen)
                CHECK(listen(fd, 16) == 0);
        CHECK(getsockname(fd, (struct sockaddr *) &a, &al) == 0);
        *ret_port = ntohs(a.sin_port);
        return fd;
}

static void server_start(struct server *s) {
        memset(s, 0, sizeof *s);
        s->fd = listen_socket(&s->port, true);
        CHECK(pthread_create(&s->thread, NULL, server_main, s) == 0);
}

static void server_stop(struct server *s) {
        shutdown(s->fd, SHUT_RDWR);
        close(s->fd);
        pthread_join(s->thread, NULL);
}

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void test_requests(void) {
        _cleanup_(http_client_freep) struct http_client *c = NULL;
        struct buf body = BUF_INIT(1 << 20);
        struct http_response resp;
        struct server s;
        char url[128];
        const char *headers[] = { "X-Trove-Test: yes", NULL };

        server_start(&s);
        CHECK_OK(http_client_new(NULL, &c));

        snprintf(url, sizeof url, "http://127.0.0.1:%d/hello", s.port);
        CHECK_OK(http_request(c, &(struct http_request){ .url = url, .headers = headers,
                                                         .response = &body },
                              &resp));
        CHECK_EQ_U64(resp.status, 200);
        CHECK_STREQ(resp.etag, "\"v1\"");
        CHECK_STREQ(resp.content_type, "text/plain");
        CHECK_EQ_U64(resp.content_length, 5);
        CHECK_EQ_U64(body.len, 5);
        CHECK_STREQ((char *) body.data, "hello");
        CHECK(strstr(s.last, "\r\nX-Trove-Test: yes\r\n"));

        /* One response header captured by name (case-insensitive), or noted absent. */
        buf_reset(&body);
        CHECK_OK(http_request(c, &(struct http_request){ .url = url, .response = &body,
                                                         .capture_header = "etag" },
                              &resp));
        CHECK_EQ_U64(resp.captured_count, 1);
        CHECK_EQ_U64(resp.captured_len, 4);
        CHECK_STREQ(resp.captured, "\"v1\"");
        buf_reset(&body);
        CHECK_OK(http_request(c, &(struct http_request){ .url = url, .response = &body,
                                                         .capture_header = "X-Absent" },
                              &resp));
        CHECK_EQ_U64(resp.captured_count, 0);
        CHECK_STREQ(resp.captured, "");

        /* A PUT with a body from memory: the server sees method, length, bytes. */
        buf_reset(&body);
        snprintf(url, sizeof url, "http://127.0.0.1:%d/upload", s.port);
        CHECK_OK(http_request(c, &(struct http_request){ .method = "PUT", .url = url,
                                                         .body = "payload-bytes", .body_len = 13,
                                                         .response = &body },
                              &resp));
        CHECK_EQ_U64(resp.status, 201);
        CHECK(strncmp(s.last, "PUT /upload HTTP/1.1\r\n", 22) == 0);
        CHECK(strstr(s.last, "\r\nContent-Length: 13\r\n"));
        CHECK(!strstr(s.last, "Expect:"));
        CHECK(strcmp(s.last + s.last_len - 13, "payload-bytes") == 0);

        /* 404 is a response, not a transport error. */
        buf_reset(&body);
        snprintf(url, sizeof url, "http://127.0.0.1:%d/missing", s.port);
        CHECK_OK(http_request(c, &(struct http_request){ .url = url, .response = &body }, &resp));
        CHECK_EQ_U64(resp.status, 404);
        CHECK_RC(http_status_to_errno(resp.status), -ENOENT);
        CHECK_STREQ((char *) body.data, "nope");

        /* HEAD: headers only. */
        snprintf(url, sizeof url, "http://127.0.0.1:%d/big", s.port);
        CHECK_OK(http_request(c, &(struct http_request){ .method = "HEAD", .url = url }, &resp));
        CHECK_EQ_U64(resp.status, 200);
        CHECK_EQ_U64(resp.content_length, 100000);
        CHECK_EQ_U64(resp.body_bytes, 0);

        /* A body larger than the buffer's maximum is refused, not truncated. */
        struct buf small = BUF_INIT(1000);
        CHECK_RC(http_request(c, &(struct http_request){ .url = url, .response = &small }, &resp),
                 -E2BIG);
        CHECK(small.len <= 1000);
        buf_free(&small);

        /* Keep-alive: all requests so far used one connection (the E2BIG
         * abort may have closed it). */
        CHECK(s.accepts <= 2);
        CHECK_EQ_U64(s.requests, 7);

        server_stop(&s);
        buf_free(&body);
}

static void test_errors(void) {
        _cleanup_(http_client_freep) struct http_client *c = NULL;
        struct http_response resp;
        char url[128];
        int port, fd;
        double t0;

        /* Bound but not listening: nobody can take the port meanwhile. */
        fd = listen_socket(&port, false);
        CHECK_OK(http_client_new(NULL, &c));
        snprintf(url, sizeof url, "http://127.0.0.1:%d/x", port);
        CHECK_RC(http_request(c, &(struct http_request){ .url = url }, &resp), -ECONNREFUSED);
        CHECK(http_client_last_error(c)[0] != 0);
        close(fd);

        /* Listening but never answering: the low-speed limit fires. */
        http_client_free(TAKE_PTR(c));
        CHECK_OK(http_client_new(&(struct http_client_options){ .low_speed_time_s = 1 }, &c));
        fd = listen_socket(&port, true);
        snprintf(url, sizeof url, "http://127.0.0.1:%d/x", port);
        t0 = now_s();
        CHECK_RC(http_request(c, &(struct http_request){ .url = url }, &resp), -ETIMEDOUT);
        CHECK(now_s() - t0 < 10);
        close(fd);

        CHECK_RC(http_request(c, &(struct http_request){ .url = "ftp://127.0.0.1/x" }, &resp),
                 -EPROTONOSUPPORT);
        CHECK_RC(http_request(c, &(struct http_request){ .url = "http://[::1/x" }, &resp), -EINVAL);
        CHECK_RC(http_request(c, &(struct http_request){ .url = "http://no-such-host.invalid/" },
                              &resp),
                 -EHOSTUNREACH);
}

static void test_status_and_encoding(void) {
        struct buf b = BUF_INIT(256);

        CHECK_RC(http_status_to_errno(200), 0);
        CHECK_RC(http_status_to_errno(204), 0);
        CHECK_RC(http_status_to_errno(403), -EACCES);
        CHECK_RC(http_status_to_errno(401), -EACCES);
        CHECK_RC(http_status_to_errno(404), -ENOENT);
        CHECK_RC(http_status_to_errno(416), -ERANGE);
        CHECK_RC(http_status_to_errno(429), -EAGAIN);
        CHECK_RC(http_status_to_errno(400), -EINVAL);
        CHECK_RC(http_status_to_errno(500), -EIO);
        CHECK_RC(http_status_to_errno(302), -EPROTO);

        CHECK_OK(http_uri_encode(&b, "a b/\xc3\xbc~-_.+=&", 13, true));
        CHECK_STREQ((char *) b.data, "a%20b/%C3%BC~-_.%2B%3D%26");
        buf_reset(&b);
        CHECK_OK(http_uri_encode(&b, "chunks/ab", 9, false));
        CHECK_STREQ((char *) b.data, "chunks%2Fab");
        buf_free(&b);

        /* Bounded: an encoding that does not fit leaves the buffer as it was. */
        struct buf tiny = BUF_INIT(8);
        CHECK_OK(http_uri_encode(&tiny, "abc", 3, false));
        CHECK_RC(http_uri_encode(&tiny, "\x01\x02", 2, false), -E2BIG);
        CHECK_STREQ((char *) tiny.data, "abc");
        buf_free(&tiny);
}

int main(void) {
        test_status_and_encoding();
        test_requests();
        test_errors();
        return 0;
}
