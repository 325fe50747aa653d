/* SPDX-License-Identifier: Apache-2.0 */
/*
 * workpool.c - threads running batches of independent tasks (workpool.h).
 */
#include "trove/workpool.h"

/* More threads than this only adds switching (and a typo in a config could
 * otherwise ask for millions). */
#define WORKPOOL_THREADS_MAX 256

struct workpool {
        pthread_mutex_t lock;
        pthread_cond_t work;    /* a job was queued, or stop */
        pthread_cond_t done;    /* a task finished */
        struct workpool_job *head, *tail;
        bool stop;
        unsigned n_threads;
        pthread_t threads[];
};

/* Under lock. */
static void dequeue_locked(struct workpool *wp, struct workpool_job *job) {
        struct workpool_job **pp = &wp->head, *prev = NULL;

        if (!job->queued)
                return;
        while (*pp && *pp != job) {
                prev = *pp;
                pp = &(*pp)->queue_next;
        }
        if (*pp) {
                *pp = job->queue_next;
                if (wp->tail == job)
                        wp->tail = prev;
        }
        job->queue_next = NULL;
        job->queued = false;
}

/* Runs task i of job (taken under lock); returns with the lock held. */
static void run_locked(struct workpool *wp, struct workpool_job *job, size_t i) {
        int r;

        job->running++;
        if (job->next == job->n)
                dequeue_locked(wp, job);
        pthread_mutex_unlock(&wp->lock);
        r = job->fn(job->userdata, i);
        pthread_mutex_lock(&wp->lock);
        job->running--;
        job->finished++;
        if (r < 0 && job->error == 0) {
                job->error = r;
                job->next = job->n; /* skip what has not started */
                dequeue_locked(wp, job);
        }
        pthread_cond_broadcast(&wp->done);
}

static void *worker_main(void *ud) {
        struct workpool *wp = ud;

        pthread_mutex_lock(&wp->lock);
        for (;;) {
                struct workpool_job *job = wp->head;
                if (!job) {
                        if (wp->stop)
                                break;
                        pthread_cond_wait(&wp->work, &wp->lock);
                        continue;
                }
                run_locked(wp, job, job->next++);
        }
        pthread_mutex_unlock(&wp->lock);
        return NULL;
}

unsigned workpool_threads(const struct workpool *wp) {
        return wp->n_threads;
}

struct workpool *workpool_free(struct workpool *wp) {
        if (!wp)
                return NULL;
        pthread_mutex_lock(&wp->lock);
        wp->stop = true;
        pthread_cond_broadcast(&wp->work);
        pthread_mutex_unlock(&wp->lock);
        for (unsigned i = 0; i < wp->n_threads; i++)
                pthread_join(wp->threads[i], NULL);
        pthread_mutex_destroy(&wp->lock);
        pthread_cond_destroy(&wp->work);
        pthread_cond_destroy(&wp->done);
        free(wp);
        return NULL;
}

int workpool_new(unsigned threads, struct workpool **ret) {
        struct workpool *wp;

        if (threads == 0) {
                long c = sysconf(_SC_NPROCESSORS_ONLN);
                threads = c > 0 ? (unsigned) MIN(c, (long) WORKPOOL_THREADS_MAX) : 1;
        }
        if (threads > WORKPOOL_THREADS_MAX)
                return -EINVAL;
        wp = calloc(1, sizeof *wp + threads * sizeof wp->threads[0]);
        if (!wp)
                return -ENOMEM;
        pthread_mutex_init(&wp->lock, NULL);
        pthread_cond_init(&wp->work, NULL);
        pthread_cond_init(&wp->done, NULL);
        for (unsigned i = 0; i < threads; i++) {
                int e = pthread_create(&wp->threads[i], NULL, worker_main, wp);
                if (e != 0) {
                        workpool_free(wp);
                        return -e;
                }
                wp->n_threads++;
        }
        *ret = wp;
        return 0;
}

void workpool_submit(struct workpool *wp, struct workpool_job *job, workpool_fn fn, void *userdata, size_t n) {
        *job = (struct workpool_job){ .fn = fn, .userdata = userdata, .n = n };
        if (n == 0)
                return;
        pthread_mutex_lock(&wp->lock);
        job->queued = true;
        if (wp->tail)
                wp->tail->queue_next = job;
        else
                wp->head = job;
        wp->tail = job;
        pthread_cond_broadcast(&wp->work);
        pthread_mutex_unlock(&wp->lock);
}

int workpool_wait(struct workpool *wp, struct workpool_job *job) {
        int r;

        pthread_mutex_lock(&wp->lock);
        for (;;) {
                if (job->next < job->n)
                        run_locked(wp, job, job->next++);
                else if (job->running > 0)
                        pthread_cond_wait(&wp->done, &wp->lock);
                else
                        break;
        }
        dequeue_locked(wp, job);
        r = job->error;
        pthread_mutex_unlock(&wp->lock);
        return r;
}

int workpool_run(struct workpool *wp, workpool_fn fn, void *userdata, size_t n) {
        struct workpool_job job;
        workpool_submit(wp, &job, fn, userdata, n);
        return workpool_wait(wp, &job);
}
