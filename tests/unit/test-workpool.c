/* SPDX-License-Identifier: Apache-2.0 */
#include <stdatomic.h>

#include "trove/workpool.h"
#include "test.h"

#define N 10000

struct counts {
        atomic_uint runs[N];
        atomic_uint total;
        size_t fail_at;         /* SIZE_MAX: none */
};

static int count_task(void *ud, size_t i) {
        struct counts *c = ud;
        atomic_fetch_add(&c->runs[i], 1);
        atomic_fetch_add(&c->total, 1);
        return i == c->fail_at ? -EIO : 0;
}

/* Every task runs exactly once, whatever the number of threads. */
static void test_each_once(unsigned threads) {
        _cleanup_(workpool_freep) struct workpool *wp = NULL;
        static struct counts c;

        CHECK_OK(workpool_new(threads, &wp));
        CHECK(workpool_threads(wp) >= 1);
        memset(&c, 0, sizeof c);
        c.fail_at = SIZE_MAX;
        CHECK_OK(workpool_run(wp, count_task, &c, N));
        for (size_t i = 0; i < N; i++)
                CHECK(atomic_load(&c.runs[i]) == 1);
        /* An empty batch is done at once. */
        CHECK_OK(workpool_run(wp, count_task, &c, 0));
        CHECK(atomic_load(&c.total) == N);
}

/* The first error is returned; tasks not started are skipped, none runs
 * twice. */
static void test_error(void) {
        _cleanup_(workpool_freep) struct workpool *wp = NULL;
        static struct counts c;

        CHECK_OK(workpool_new(3, &wp));
        memset(&c, 0, sizeof c);
        c.fail_at = 10;
        CHECK_RC(workpool_run(wp, count_task, &c, N), -EIO);
        CHECK(atomic_load(&c.runs[10]) == 1);
        for (size_t i = 0; i < N; i++)
                CHECK(atomic_load(&c.runs[i]) <= 1);
        CHECK(atomic_load(&c.total) < N);
}

/* Two batches in flight from one thread, waited for in either order. */
static void test_two_in_flight(void) {
        _cleanup_(workpool_freep) struct workpool *wp = NULL;
        static struct counts a, b;
        struct workpool_job ja, jb;

        CHECK_OK(workpool_new(2, &wp));
        memset(&a, 0, sizeof a);
        memset(&b, 0, sizeof b);
        a.fail_at = b.fail_at = SIZE_MAX;
        workpool_submit(wp, &ja, count_task, &a, N);
        workpool_submit(wp, &jb, count_task, &b, N / 2);
        CHECK_OK(workpool_wait(wp, &jb));
        CHECK_OK(workpool_wait(wp, &ja));
        CHECK(atomic_load(&a.total) == N);
        CHECK(atomic_load(&b.total) == N / 2);
}

struct submitter {
        struct workpool *wp;
        struct counts c;
        int r;
};

static void *submitter_main(void *ud) {
        struct submitter *s = ud;
        for (int k = 0; k < 20 && s->r == 0; k++)
                s->r = workpool_run(s->wp, count_task, &s->c, N / 10);
        return NULL;
}

/* Several threads share one pool. */
static void test_shared(void) {
        _cleanup_(workpool_freep) struct workpool *wp = NULL;
        static struct submitter s[4];
        pthread_t th[4];

        CHECK_OK(workpool_new(2, &wp));
        for (int i = 0; i < 4; i++) {
                memset(&s[i], 0, sizeof s[i]);
                s[i].wp = wp;
                s[i].c.fail_at = SIZE_MAX;
                CHECK(pthread_create(&th[i], NULL, submitter_main, &s[i]) == 0);
        }
        for (int i = 0; i < 4; i++) {
                CHECK(pthread_join(th[i], NULL) == 0);
                CHECK_OK(s[i].r);
                CHECK(atomic_load(&s[i].c.total) == 20 * (N / 10));
        }
}

int main(void) {
        test_each_once(1);
        test_each_once(4);
        test_each_once(0);
        test_error();
        test_two_in_flight();
        test_shared();
        CHECK_RC(workpool_new(100000, &(struct workpool *){ NULL }), -EINVAL);
        return 0;
}
