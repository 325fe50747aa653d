/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for the S3 client: SigV4 presigning against the AWS documentation's
 * known answer, the ListObjectsV2 parser, configuration checks, and the
 * retry policy against a loopback server that answers a fixed status. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>

#include "test.h"
#include "trove/s3.h"

static void test_presign_aws_vector(void) {
        /* "Example: GET Object" of the AWS SigV4 query-string authentication
         * documentation: examplebucket, test.txt, 2013-05-24T00:00:00Z,
         * 86400 s, us-east-1. */
        _cleanup_free_ char *url = NULL;

        CHECK_OK(s3_presign(&(struct s3_presign_params){
                                    .method = "GET",
                                    .url_base = "https://examplebucket.s3.amazonaws.com",
                                    .path = "/test.txt",
                                    .region = "us-east-1",
                                    .access_key = "AKIAIOSFODNN7EXAMPLE",
                                    .secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                                    .expires_s = 86400,
                                    .now = 1369353600,
                            },
                            &url));
        CHECK_STREQ(url,
                    "https://examplebucket.s3.amazonaws.com/test.txt"
                    "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
                    "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
                    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");

        /* Refused: expiry beyond 7 days, a base with a path, a relative path. */
        struct s3_presign_params p = {
                .method = "GET", .url_base = "http://h", .path = "/b/k", .region = "r",
                .access_key = "a", .secret_key = "s", .expires_s = 604801, .now = 0,
        };
        char *u = NULL;
        CHECK_RC(s3_presign(&p, &u), -EINVAL);
        p.expires_s = 60;
        p.url_base = "http://h/x";
        CHECK_RC(s3_presign(&p, &u), -EINVAL);
        p.url_base = "http://h";
        p.path = "b/k";
        CHECK_RC(s3_presign(&p, &u), -EINVAL);
        CHECK(u == NULL);
}

static void test_presign_path_style(void) {
        _cleanup_(s3_freep) struct s3 *s = NULL;
        _cleanup_free_ char *url = NULL;

        CHECK_OK(s3_new(&(struct s3_config){ .endpoint = "http://127.0.0.1:7480/",
                                             .bucket = "trove-chunks", .access_key = "AK",
                                             .secret_key = "SK" },
                        &s));
        CHECK_OK(s3_presign_get(s, "chunks/ab/x y", 300, 1369353600, &url));
        CHECK(startswith(url, "http://127.0.0.1:7480/trove-chunks/chunks/ab/x%20y?X-Amz-Algorithm="));
        CHECK(strstr(url, "&X-Amz-Credential=AK%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&"));
        CHECK(strstr(url, "&X-Amz-Expires=300&"));
}

static const char list_xml[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
        "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        "<Name>bucket</Name><Prefix>chunks/</Prefix><MaxKeys>2</MaxKeys>"
        "<IsTruncated>true</IsTruncated>"
        "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
        "<Contents><Key>chunks/ab/one</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
        "<ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag><Size>1234</Size>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
        "<Contents><Key>a&amp;b &lt;c&gt; &#233;&#x20AC;</Key><Size>18446744073709551615</Size></Contents>"
        "<KeyCount>2</KeyCount></ListBucketResult>";

static void test_list_parse(void) {
        struct s3_list_page p = {};

        CHECK_OK(s3_list_parse(list_xml, strlen(list_xml), &p));
        CHECK_EQ_U64(p.n_objects, 2);
        CHECK_STREQ(p.objects[0].key, "chunks/ab/one");
        CHECK_EQ_U64(p.objects[0].size, 1234);
        CHECK_STREQ(p.objects[1].key, "a&b <c> \xc3\xa9\xe2\x82\xac");
        CHECK_EQ_U64(p.objects[1].size, UINT64_MAX);
        CHECK(p.truncated);
        CHECK_STREQ(p.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
        s3_list_page_done(&p);

        const char *empty = "<ListBucketResult><IsTruncated>false</IsTruncated><KeyCount>0</KeyCount>"
                            "</ListBucketResult>";
        CHECK_OK(s3_list_parse(empty, strlen(empty), &p));
        CHECK_EQ_U64(p.n_objects, 0);
        CHECK(!p.truncated);
        CHECK(p.next_token == NULL);
        s3_list_page_done(&p);

        /* Every broken document is refused, and nothing is returned. */
        static const char *bad[] = {
                "",
                "<Error><Code>AccessDenied</Code></Error>",
                "<ListBucketResult><Contents><Key>k</Key><Size>1</Size></Contents>", /* unclosed */
                "<ListBucketResult><Contents><Key>k</Key></Contents></ListBucketResult>",
                "<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>",
                "<ListBucketResult><Contents><Key>k</Key><Size>18446744073709551616</Size></Contents></ListBucketResult>",
                "<ListBucketResult><Contents><Key>k</Key><Size></Size></Contents></ListBucketResult>",
                "<ListBucketResult><Contents><Key>a&nbsp;b</Key><Size>1</Size></Contents></ListBucketResult>",
                "<ListBucketResult><Contents><Key>a&#0;b</Key><Size>1</Size></Contents></ListBucketResult>",
                "<ListBucketResult><Contents><Key>a&#xD800;</Key><Size>1</Size></Contents></ListBucketResult>",
                "<ListBucketResult><Contents><Key>a&#1234567890;</Key><Size>1</Size></Contents></ListBucketResult>",
                "<ListBucketResult><Contents><Key>a&amp</Key><Size>1</Size></Contents></ListBucketResult>",
                "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
                "<ListBucketResult><IsTruncated>yes</IsTruncated></ListBucketResult>",
                "<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken></NextContinuationToken></ListBucketResult>",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                p = (struct s3_list_page){};
                int r = s3_list_parse(bad[i], strlen(bad[i]), &p);
                if (r >= 0)
                        TEST_FAIL("accepted bad listing %zu: %s", i, bad[i]);
                CHECK(p.objects == NULL && p.n_objects == 0);
        }

        /* A key longer than S3 allows (1024) is refused. */
        {
                struct buf b = BUF_INIT(4096);
                CHECK_OK(buf_append_str(&b, "<ListBucketResult><Contents><Key>"));
                for (int i = 0; i < 1025; i++)
                        CHECK_OK(buf_append_str(&b, "k"));
                CHECK_OK(buf_append_str(&b, "</Key><Size>1</Size></Contents></ListBucketResult>"));
                CHECK(s3_list_parse((char *) b.data, b.len, &p) < 0);
                buf_free(&b);
        }
}

static void test_config(void) {
        struct s3 *s = NULL;
        struct s3_config c = { .endpoint = "http://127.0.0.1:1", .bucket = "ok-bucket",
                               .access_key = "a", .secret_key = "s" };

        c.bucket = "Bad_Bucket";
        CHECK_RC(s3_new(&c, &s), -EINVAL);
        c.bucket = "ab";
        CHECK_RC(s3_new(&c, &s), -EINVAL);
        c.bucket = "ok-bucket";
        c.endpoint = "ftp://127.0.0.1";
        CHECK_RC(s3_new(&c, &s), -EINVAL);
        c.endpoint = "http://127.0.0.1:1/path";
        CHECK_RC(s3_new(&c, &s), -EINVAL);
        c.endpoint = "http://127.0.0.1:1";
        c.secret_key = NULL;
        CHECK_RC(s3_new(&c, &s), -EINVAL);
        CHECK(s == NULL);
        c.secret_key = "s";
        CHECK_OK(s3_new(&c, &s));
        CHECK_RC(s3_put_object(s, "/leading-slash", "x", 1), -EINVAL);
        CHECK_RC(s3_put_object(s, "", "x", 1), -EINVAL);
        CHECK_RC(s3_put_object_new(s, "/leading-slash", "x", 1), -EINVAL);
        CHECK_RC(s3_put_object_new(s, "", "x", 1), -EINVAL);
        s3_free(s);
}

/* A server that answers every request with one fixed status and counts. */
struct fixed_server {
        int fd;
        int port;
        int status;
        int requests;
        pthread_t thread;
};

static void *fixed_main(void *arg) {
        struct fixed_server *s = arg;

        for (;;) {
                char req[16384], resp[256];
                size_t len = 0;
                int c = accept(s->fd, NULL, NULL);
                if (c < 0)
                        return NULL;
                while (len < sizeof req - 1) {
                        ssize_t n = recv(c, req + len, sizeof req - 1 - len, 0);
                        if (n <= 0)
                                break;
                        len += (size_t) n;
                        req[len] = 0;
                        if (strstr(req, "\r\n\r\n"))
                                break;
                }
                __atomic_add_fetch(&s->requests, 1, __ATOMIC_SEQ_CST);
                snprintf(resp, sizeof resp,
                         "HTTP/1.1 %d X\r\nContent-Length: 36\r\nConnection: close\r\n\r\n"
                         "<Error><Code>Test</Code></Error>\n\n\n\n",
                         s->status);
                (void) !send(c, resp, strlen(resp), MSG_NOSIGNAL);
                close(c);
        }
}

static void fixed_start(struct fixed_server *s, int status) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof a;

        memset(s, 0, sizeof *s);
        s->status = status;
        s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(s->fd >= 0);
        CHECK(bind(s->fd, (struct sockaddr *) &a, sizeof a) == 0);
        CHECK(listen(s->fd, 16) == 0);
        CHECK(getsockname(s->fd, (struct sockaddr *) &a, &al) == 0);
        s->port = ntohs(a.sin_port);
        CHECK(pthread_create(&s->thread, NULL, fixed_main, s) == 0);
}

static void fixed_stop(struct fixed_server *s) {
        shutdown(s->fd, SHUT_RDWR);
        close(s->fd);
        pthread_join(s->thread, NULL);
}

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int retry_case(int status, int *ret_requests) {
        _cleanup_(s3_freep) struct s3 *s = NULL;
        struct buf out = BUF_INIT(1 << 16);
        struct fixed_server srv;
        char endpoint[64];
        int r;

        fixed_start(&srv, status);
        snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", srv.port);
        CHECK_OK(s3_new(&(struct s3_config){ .endpoint = endpoint, .bucket = "bucket",
                                             .access_key = "a", .secret_key = "s",
                                             .max_attempts = 4, .backoff_base_ms = 10,
                                             .backoff_max_ms = 40, .breaker_threshold = 100 },
                        &s));
        r = s3_get_object(s, "k", NULL, &out);
        fixed_stop(&srv);
        *ret_requests = srv.requests;
        buf_free(&out);
        return r;
}

static void test_retries(void) {
        int n;

        /* 5xx and 429 are retried up to max_attempts; 4xx never. */
        CHECK_RC(retry_case(500, &n), -EIO);
        CHECK_EQ_U64(n, 4);
        CHECK_RC(retry_case(503, &n), -EAGAIN);
        CHECK_EQ_U64(n, 4);
        CHECK_RC(retry_case(429, &n), -EAGAIN);
        CHECK_EQ_U64(n, 4);
        CHECK_RC(retry_case(403, &n), -EACCES);
        CHECK_EQ_U64(n, 1);
        CHECK_RC(retry_case(404, &n), -ENOENT);
        CHECK_EQ_U64(n, 1);

        /* A dead endpoint: connection refused, retried, bounded in time. */
        _cleanup_(s3_freep) struct s3 *s = NULL;
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof a;
        char endpoint[64];
        uint64_t size;
        double t0;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        CHECK(fd >= 0);
        CHECK(bind(fd, (struct sockaddr *) &a, sizeof a) == 0);
        CHECK(getsockname(fd, (struct sockaddr *) &a, &al) == 0);
        snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", ntohs(a.sin_port));
        CHECK_OK(s3_new(&(struct s3_config){ .endpoint = endpoint, .bucket = "bucket",
                                             .access_key = "a", .secret_key = "s",
                                             .max_attempts = 3, .backoff_base_ms = 50,
                                             .backoff_max_ms = 100 },
                        &s));
        t0 = now_s();
        CHECK_RC(s3_head_object(s, "k", &size), -ECONNREFUSED);
        CHECK(now_s() - t0 < 2.0);
        close(fd);
}

static void sleep_ms(unsigned ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0)
                ;
}

/* The breaker: opens after threshold unreachable answers in a row, fails
 * calls at once (no request) while open, lets one probe through after the
 * open time, and closes when the server answers again. */
static void test_breaker(void) {
        _cleanup_(s3_freep) struct s3 *s = NULL;
        struct buf out = BUF_INIT(1 << 16);
        struct fixed_server srv;
        struct s3_stats st;
        char endpoint[64];
        uint64_t size;

        fixed_start(&srv, 503);
        snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", srv.port);
        CHECK_OK(s3_new(&(struct s3_config){ .endpoint = endpoint, .bucket = "bucket",
                                             .access_key = "a", .secret_key = "s",
                                             .max_attempts = 5, .backoff_base_ms = 5,
                                             .backoff_max_ms = 10, .breaker_threshold = 2,
                                             .breaker_open_ms = 300 },
                        &s));
        CHECK_RC(s3_get_object(s, "k", NULL, &out), -EAGAIN);
        CHECK_EQ_U64(srv.requests, 5); /* a call under way retries within its budget */
        s3_stats_get(s, &st);
        CHECK(st.breaker == S3_BREAKER_OPEN);
        CHECK(st.retry_after_s >= 1);
        CHECK_EQ_U64(st.breaker_opens, 1);
        CHECK_EQ_U64(st.requests[S3_OP_GET], 5);
        CHECK_EQ_U64(st.errors[S3_OP_GET], 1);

        CHECK_RC(s3_head_object(s, "k", &size), -EHOSTDOWN);
        CHECK_RC(s3_probe(s), -EHOSTDOWN);
        CHECK_EQ_U64(srv.requests, 5); /* nothing sent */
        s3_stats_get(s, &st);
        CHECK_EQ_U64(st.rejected[S3_OP_HEAD], 1);
        CHECK_EQ_U64(st.rejected[S3_OP_BUCKET], 1);

        /* After the open time one probe goes; it fails, the breaker opens again. */
        sleep_ms(350);
        CHECK_RC(s3_get_object(s, "k", NULL, &out), -EAGAIN);
        CHECK_EQ_U64(srv.requests, 6); /* the failed probe does not retry */
        s3_stats_get(s, &st);
        CHECK(st.breaker == S3_BREAKER_OPEN);
        CHECK_EQ_U64(st.breaker_opens, 2);

        /* The server is back (it answers 404): the probe closes the breaker. */
        __atomic_store_n(&srv.status, 404, __ATOMIC_SEQ_CST);
        sleep_ms(350);
        CHECK_RC(s3_get_object(s, "k", NULL, &out), -ENOENT);
        s3_stats_get(s, &st);
        CHECK(st.breaker == S3_BREAKER_CLOSED);
        CHECK_EQ_U64(st.retry_after_s, 0);
        CHECK_EQ_U64(s3_head_object(s, "k", &size), 0);
        CHECK_EQ_U64(srv.requests, 8);

        /* s3_recover(): nothing is sent while the breaker is closed; while
         * it is open, one probe goes at once, within the open time. */
        CHECK_EQ_U64(s3_recover(s), 1);
        CHECK_EQ_U64(srv.requests, 8);
        __atomic_store_n(&srv.status, 503, __ATOMIC_SEQ_CST);
        CHECK_RC(s3_get_object(s, "k", NULL, &out), -EAGAIN);
        CHECK_EQ_U64(srv.requests, 13);
        CHECK_RC(s3_head_object(s, "k", &size), -EHOSTDOWN);
        CHECK_RC(s3_recover(s), -EAGAIN); /* still away: open again */
        CHECK_EQ_U64(srv.requests, 14);
        s3_stats_get(s, &st);
        CHECK(st.breaker == S3_BREAKER_OPEN);
        CHECK(st.retry_after_s >= 1);
        __atomic_store_n(&srv.status, 404, __ATOMIC_SEQ_CST);
        CHECK_EQ_U64(s3_recover(s), 0);
        CHECK_EQ_U64(srv.requests, 15);
        s3_stats_get(s, &st);
        CHECK(st.breaker == S3_BREAKER_CLOSED);
        CHECK_EQ_U64(s3_head_object(s, "k", &size), 0);

        /* Cancelled: every call fails at once, nothing is sent. */
        s3_cancel(s);
        CHECK_RC(s3_get_object(s, "k", NULL, &out), -ECANCELED);
        CHECK_EQ_U64(srv.requests, 16);
        fixed_stop(&srv);
        buf_free(&out);
}

/* A server that accepts and never answers: every attempt ends at the
 * low-speed bound, the retry budget ends the call. */
static void test_stall(void) {
        _cleanup_(s3_freep) struct s3 *s = NULL;
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof a;
        struct buf out = BUF_INIT(1 << 16);
        struct s3_stats st;
        char endpoint[64];
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        CHECK(fd >= 0);
        CHECK(bind(fd, (struct sockaddr *) &a, sizeof a) == 0);
        CHECK(listen(fd, 16) == 0); /* the kernel accepts; nobody reads */
        CHECK(getsockname(fd, (struct sockaddr *) &a, &al) == 0);
        snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", ntohs(a.sin_port));
        CHECK_OK(s3_new(&(struct s3_config){ .endpoint = endpoint, .bucket = "bucket",
                                             .access_key = "a", .secret_key = "s",
                                             .max_attempts = 50, .backoff_base_ms = 5,
                                             .backoff_max_ms = 10, .low_speed_time_s = 1,
                                             .retry_budget_ms = 1500, .breaker_threshold = 100 },
                        &s));
        CHECK_RC(s3_get_object(s, "k", NULL, &out), -ETIMEDOUT);
        s3_stats_get(s, &st);
        /* The budget, not max_attempts, ended it. */
        CHECK(st.requests[S3_OP_GET] >= 1 && st.requests[S3_OP_GET] <= 3);
        CHECK_EQ_U64(st.timeouts[S3_OP_GET], st.requests[S3_OP_GET]);
        close(fd);
        buf_free(&out);
}

int main(void) {
        test_presign_aws_vector();
        test_presign_path_style();
        test_list_parse();
        test_config();
        test_retries();
        test_breaker();
        test_stall();
        return 0;
}
