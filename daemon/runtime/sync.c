/*
 * sync — wait groups, coroutine mutexes and conditions, and bounded pools.
 * Each owns a FIFO of parked waiters under a spin lock; a wake claims the
 * first waiter it can (skipping ones a timeout or cancel already ended),
 * so FIFO order is also fairness.
 *
 * Claimed waiters are completed only after the lock is dropped: a woken
 * owner may free the object at once (wg_wait then wg_free is the usual
 * pattern), so the waker must be done touching it first.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rt_int.h"

struct wnode {
    struct waiter *w;
    struct wnode *prev, *next;
    bool queued;
};

struct wlist {
    struct wnode *head, *tail;
};

static void
wl_push(struct wlist *l, struct wnode *n)
{
    n->next = NULL;
    n->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
    n->queued = true;
}

static void
wl_remove(struct wlist *l, struct wnode *n)
{
    if (!n->queued)
        return;
    if (n->prev != NULL)
        n->prev->next = n->next;
    else
        l->head = n->next;
    if (n->next != NULL)
        n->next->prev = n->prev;
    else
        l->tail = n->prev;
    n->queued = false;
}

/* First waiter we can claim, unlinked; NULL if none. */
static struct wnode *
wl_claim(struct wlist *l)
{
    struct wnode *n;
    while ((n = l->head) != NULL) {
        wl_remove(l, n);
        if (waiter_claim(n->w))
            return n;
    }
    return NULL;
}

/* Completes claimed waiters chained through ->next; lock not held. */
static void
wake_all(struct wnode *list)
{
    while (list != NULL) {
        struct wnode *n = list;
        list = n->next; /* read before the owner can run */
        waiter_complete(n->w, 0, -1);
    }
}

/* Claims every waiter of l onto a private chain for wake_all; lock held. */
static struct wnode *
wl_claim_all(struct wlist *l)
{
    struct wnode *n, *list = NULL, *tail = NULL;
    while ((n = wl_claim(l)) != NULL) {
        n->next = NULL;
        if (tail != NULL)
            tail->next = n;
        else
            list = n;
        tail = n;
    }
    return list;
}

/* A queued node and its waiter, which a waker on another thread touches
 * one after the other: one 128-byte block, moved as one (see chan.c). */
struct wl_frame {
    struct wnode node;
    struct wait wt;
} __attribute__((aligned(128)));

/* Queues a waiter on l (lock held, released here), parks, and unlinks it
 * again if something other than a wake on l ended the wait. */
static int
wl_wait(struct spin *lock, struct wlist *l, struct ctx *ctx, int64_t timeout_ns,
        enum coro_wait reason)
{
    struct wl_frame f;
    int rc;

    if (timeout_ns == 0) {
        spin_unlock(lock);
        return RT_EAGAIN;
    }
    if ((rc = wait_begin(&f.wt, ctx, timeout_ns)) != 0) {
        spin_unlock(lock);
        return rc;
    }
    f.node.w = &f.wt.w;
    wl_push(l, &f.node);
    spin_unlock(lock);
    rc = wait_park(&f.wt, reason);
    if (rc != 0) {
        spin_lock(lock);
        wl_remove(l, &f.node);
        spin_unlock(lock);
    }
    return rc;
}

/* ---- wait groups ------------------------------------------------------ */

/*
 * One atomic word holds the counter and a "waiters queued" flag, as in
 * Go's sync.WaitGroup: add and done cost one locked add and take the lock
 * only when the counter reaches zero with waiters queued. Both must come
 * from one atomic operation: the moment a done brings the counter to zero
 * a waiter may return and free the group, so the done may not read the
 * group again unless that same operation showed a waiter still queued.
 */
#define WG_WAITERS 1LL
#define WG_ONE 2LL /* the counter sits above the flag */

struct wg {
    atomic_llong state; /* counter * WG_ONE | WG_WAITERS */
    struct spin lock;
    struct wlist waiters;
};

static inline long long
wg_count(long long state)
{
    return (state - (state & WG_WAITERS)) / WG_ONE;
}

int
wg_new(struct wg **out)
{
    struct wg *wg = calloc(1, sizeof(*wg));
    if (wg == NULL)
        return -ENOMEM;
    *out = wg;
    return 0;
}

void
wg_free(struct wg *wg)
{
    free(wg);
}

void
wg_add(struct wg *wg, int n)
{
    struct wnode *list = NULL;
    long long state = atomic_fetch_add(&wg->state, n * WG_ONE) + n * WG_ONE;

    if (wg_count(state) < 0) {
        rt_logf(NULL, RT_LOG_ERROR, "fatal: wait group counter went negative");
        abort(); /* as Go's panic: a done without its add is a logic error */
    }
    if (wg_count(state) != 0 || !(state & WG_WAITERS))
        return;
    /* Queued waiters cannot leave before they are woken: wg is valid. */
    spin_lock(&wg->lock);
    if (wg_count(atomic_load(&wg->state)) == 0) { /* an add may have raised it again */
        list = wl_claim_all(&wg->waiters);
        atomic_fetch_and(&wg->state, ~WG_WAITERS);
    }
    spin_unlock(&wg->lock);
    wake_all(list);
}

void
wg_done(struct wg *wg)
{
    wg_add(wg, -1);
}

int
wg_wait(struct wg *wg, struct ctx *ctx, int64_t timeout_ns)
{
    int rc;

    if (wg_count(atomic_load(&wg->state)) == 0)
        return 0;
    spin_lock(&wg->lock);
    if (wg_count(atomic_fetch_or(&wg->state, WG_WAITERS)) == 0) {
        if (wg->waiters.head == NULL)
            atomic_fetch_and(&wg->state, ~WG_WAITERS);
        spin_unlock(&wg->lock);
        return 0;
    }
    if ((rc = wl_wait(&wg->lock, &wg->waiters, ctx, timeout_ns, CORO_WAIT_WG)) != 0) {
        /* Timed out or canceled: wl_wait took us off the list. */
        spin_lock(&wg->lock);
        if (wg->waiters.head == NULL)
            atomic_fetch_and(&wg->state, ~WG_WAITERS);
        spin_unlock(&wg->lock);
    }
    return rc;
}

/* ---- mutex ------------------------------------------------------------ */

struct coro_mutex {
    struct spin lock;
    bool held;
    struct wlist waiters;
};

int
coro_mutex_new(struct coro_mutex **out)
{
    struct coro_mutex *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    *out = m;
    return 0;
}

void
coro_mutex_free(struct coro_mutex *m)
{
    free(m);
}

int
coro_mutex_trylock(struct coro_mutex *m)
{
    int rc = 0;
    spin_lock(&m->lock);
    if (m->held)
        rc = RT_EAGAIN;
    else
        m->held = true;
    spin_unlock(&m->lock);
    return rc;
}

int
coro_mutex_lock(struct coro_mutex *m, struct ctx *ctx)
{
    spin_lock(&m->lock);
    if (!m->held) {
        m->held = true;
        spin_unlock(&m->lock);
        return 0;
    }
    /* On success the unlocker handed the mutex over: held stays true. */
    return wl_wait(&m->lock, &m->waiters, ctx, RT_FOREVER, CORO_WAIT_MUTEX);
}

void
coro_mutex_unlock(struct coro_mutex *m)
{
    struct wnode *w;
    spin_lock(&m->lock);
    if ((w = wl_claim(&m->waiters)) != NULL)
        w->next = NULL; /* hand-off: held stays true */
    else
        m->held = false;
    spin_unlock(&m->lock);
    wake_all(w);
}

/* ---- condition -------------------------------------------------------- */

struct coro_cond {
    struct spin lock;
    struct wlist waiters;
};

int
coro_cond_new(struct coro_cond **out)
{
    struct coro_cond *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    *out = c;
    return 0;
}

void
coro_cond_free(struct coro_cond *c)
{
    free(c);
}

int
coro_cond_wait(struct coro_cond *c, struct coro_mutex *m, struct ctx *ctx, int64_t timeout_ns)
{
    int rc;
    /* Queue before unlocking m, so a signal sent right after the unlock
     * finds us. */
    spin_lock(&c->lock);
    if (timeout_ns == 0) {
        spin_unlock(&c->lock);
        return RT_ETIMEDOUT;
    }
    {
        struct wait wt;
        struct wnode node;
        if ((rc = wait_begin(&wt, ctx, timeout_ns)) != 0) {
            spin_unlock(&c->lock);
            return rc;
        }
        node.w = &wt.w;
        wl_push(&c->waiters, &node);
        spin_unlock(&c->lock);
        coro_mutex_unlock(m);
        rc = wait_park(&wt, CORO_WAIT_COND);
        if (rc != 0) {
            spin_lock(&c->lock);
            wl_remove(&c->waiters, &node);
            spin_unlock(&c->lock);
        }
    }
    coro_mutex_lock(m, NULL);
    return rc;
}

void
coro_cond_signal(struct coro_cond *c)
{
    struct wnode *w;
    spin_lock(&c->lock);
    if ((w = wl_claim(&c->waiters)) != NULL)
        w->next = NULL;
    spin_unlock(&c->lock);
    wake_all(w);
}

void
coro_cond_broadcast(struct coro_cond *c)
{
    struct wnode *list;
    spin_lock(&c->lock);
    list = wl_claim_all(&c->waiters);
    spin_unlock(&c->lock);
    wake_all(list);
}

/* ---- bounded pools ---------------------------------------------------- */

struct coro_pool {
    struct spin lock;
    struct rt *rt;
    unsigned limit;
    unsigned active; /* alive, plus slots reserved for woken spawners */
    struct wlist spawners;
    struct wlist drainers;
    char kind[JOBQ_CORO_NAME_BYTES];
};

int
coro_pool_new(struct rt *rt, const char *kind, unsigned limit, struct coro_pool **out)
{
    struct coro_pool *p;

    if (rt == NULL || limit == 0)
        return -EINVAL;
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return -ENOMEM;
    p->rt = rt;
    p->limit = limit;
    strncpy(p->kind, kind ? kind : "pool", sizeof(p->kind) - 1);
    *out = p;
    return 0;
}

void
coro_pool_free(struct coro_pool *p)
{
    free(p);
}

/* Hands free slots to parked spawners, chaining them onto *list for
 * wake_all; lock held. A woken spawner owns the slot it was given. */
static void
pool_admit(struct coro_pool *p, struct wnode **list)
{
    struct wnode *w;
    while (p->active < p->limit && (w = wl_claim(&p->spawners)) != NULL) {
        p->active++;
        w->next = *list;
        *list = w;
    }
}

void
coro_pool_release(struct coro_pool *p)
{
    struct wnode *list = NULL, *drained = NULL;
    spin_lock(&p->lock);
    p->active--;
    pool_admit(p, &list);
    if (p->active == 0)
        drained = wl_claim_all(&p->drainers);
    spin_unlock(&p->lock);
    wake_all(list);
    wake_all(drained);
}

int
coro_pool_spawn(struct coro_pool *p, struct ctx *ctx, int flags, const char *name,
                void (*fn)(void *arg), void *arg)
{
    int rc;

    if (p == NULL || fn == NULL)
        return -EINVAL;
    spin_lock(&p->lock);
    if (p->active < p->limit && p->spawners.head == NULL) {
        p->active++;
        spin_unlock(&p->lock);
    } else if (flags & CORO_NOWAIT) {
        spin_unlock(&p->lock);
        return RT_EAGAIN;
    } else if ((rc = wl_wait(&p->lock, &p->spawners, ctx, RT_FOREVER, CORO_WAIT_POOL)) != 0) {
        return rc;
    }
    if ((rc = coro_spawn_pool(p->rt, -1, name, fn, arg, p)) < 0)
        coro_pool_release(p);
    return rc;
}

void
coro_pool_set_limit(struct coro_pool *p, unsigned limit)
{
    if (limit == 0)
        limit = 1;
    struct wnode *list = NULL;
    spin_lock(&p->lock);
    p->limit = limit;
    pool_admit(p, &list);
    spin_unlock(&p->lock);
    wake_all(list);
}

unsigned
coro_pool_active(const struct coro_pool *p)
{
    struct coro_pool *q = (struct coro_pool *)p;
    unsigned a;
    spin_lock(&q->lock);
    a = q->active;
    spin_unlock(&q->lock);
    return a;
}

unsigned
coro_pool_limit(const struct coro_pool *p)
{
    struct coro_pool *q = (struct coro_pool *)p;
    unsigned l;
    spin_lock(&q->lock);
    l = q->limit;
    spin_unlock(&q->lock);
    return l;
}

int
coro_pool_drain(struct coro_pool *p, struct ctx *ctx, int64_t timeout_ns)
{
    spin_lock(&p->lock);
    if (p->active == 0) {
        spin_unlock(&p->lock);
        return 0;
    }
    return wl_wait(&p->lock, &p->drainers, ctx, timeout_ns, CORO_WAIT_POOL);
}
