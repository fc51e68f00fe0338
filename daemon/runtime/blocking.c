/*
 * blocking — the blocking pool: helper threads that run calls which would
 * block a scheduler thread (file I/O, getaddrinfo, SQLite reads) while the
 * calling coroutine parks. Owns its threads and the queue of calls; each
 * call record lives on the caller's stack for the call's duration.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "rt_int.h"

enum call_state { CALL_QUEUED, CALL_RUNNING, CALL_DONE, CALL_ABANDONED };

struct call {
    int (*fn)(void *);
    void *arg;
    int result;
    enum call_state state; /* under the pool lock */
    struct waiter *w;      /* who to wake at the end; under the pool lock */
    struct call *next;
};

struct blocking_pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct call *head, *tail;
    int nthreads;
    pthread_t *threads;
    bool stop;
    atomic_long queued;
    atomic_long running;
};

static void *
worker(void *arg)
{
    struct blocking_pool *p = arg;

    pthread_setname_np(pthread_self(), "jobq-blocking");
    pthread_mutex_lock(&p->lock);
    for (;;) {
        struct call *c;
        while (p->head == NULL && !p->stop)
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->head == NULL)
            break;
        c = p->head;
        p->head = c->next;
        if (p->head == NULL)
            p->tail = NULL;
        c->state = CALL_RUNNING;
        atomic_fetch_sub(&p->queued, 1);
        atomic_fetch_add(&p->running, 1);
        pthread_mutex_unlock(&p->lock);

        int result = c->fn(c->arg);

        pthread_mutex_lock(&p->lock);
        c->result = result;
        c->state = CALL_DONE;
        struct waiter *w = c->w;
        atomic_fetch_sub(&p->running, 1);
        /* Fire under the lock: once we drop it the caller may return and
         * take the call record (its stack) with it. */
        if (w != NULL)
            waiter_fire(w, 0, -1);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int
blocking_pool_new(struct rt *rt, int threads, struct blocking_pool **out)
{
    struct blocking_pool *p = calloc(1, sizeof(*p));
    (void)rt;
    if (p == NULL)
        return -ENOMEM;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    if ((p->threads = calloc((size_t)threads, sizeof(pthread_t))) == NULL) {
        free(p);
        return -ENOMEM;
    }
    for (; p->nthreads < threads; p->nthreads++) {
        int rc = pthread_create(&p->threads[p->nthreads], NULL, worker, p);
        if (rc != 0) {
            blocking_pool_free(p);
            return -rc;
        }
    }
    *out = p;
    return 0;
}

void
blocking_pool_free(struct blocking_pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

void
blocking_stats(struct blocking_pool *p, struct rt_stats *out)
{
    out->blocking_queued = (uint64_t)atomic_load(&p->queued);
    out->blocking_running = (uint64_t)atomic_load(&p->running);
}

static void
unlink_call(struct blocking_pool *p, struct call *c)
{
    struct call **pp = &p->head, *prev = NULL;
    while (*pp != NULL && *pp != c) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL)
        return;
    *pp = c->next;
    if (p->tail == c)
        p->tail = prev;
    atomic_fetch_sub(&p->queued, 1);
}

int
rt_blocking(struct ctx *ctx, int (*fn)(void *arg), void *arg)
{
    struct sched *s = rt_tl_sched;
    struct blocking_pool *p;
    struct call c = {.fn = fn, .arg = arg, .state = CALL_QUEUED};
    struct wait wt;
    int rc;

    if (s == NULL || s->current == NULL)
        return -EPERM;
    if (fn == NULL)
        return -EINVAL;
    p = s->rt->blocking;
    if ((rc = wait_begin(&wt, ctx, RT_FOREVER)) != 0)
        return rc;
    c.w = &wt.w;
    pthread_mutex_lock(&p->lock);
    if (p->tail != NULL)
        p->tail->next = &c;
    else
        p->head = &c;
    p->tail = &c;
    atomic_fetch_add(&p->queued, 1);
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);

    rc = wait_park(&wt, CORO_WAIT_BLOCKING);
    if (rc == 0)
        return c.result;

    /* The context ended first. A call nobody picked up yet is withdrawn;
     * one that runs must be waited for, since it may use our stack. */
    pthread_mutex_lock(&p->lock);
    if (c.state == CALL_QUEUED) {
        unlink_call(p, &c);
        c.state = CALL_ABANDONED;
        pthread_mutex_unlock(&p->lock);
        return rc;
    }
    if (c.state == CALL_DONE) {
        pthread_mutex_unlock(&p->lock);
        return c.result;
    }
    struct wait wt2;
    wait_begin(&wt2, NULL, RT_FOREVER);
    c.w = &wt2.w;
    pthread_mutex_unlock(&p->lock);
    wait_park(&wt2, CORO_WAIT_BLOCKING);
    return c.result;
}
