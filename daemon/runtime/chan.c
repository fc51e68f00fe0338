/*
 * chan — channels and select, after Go's runtime/chan.go and select.go. A
 * channel owns a ring buffer of elements and two FIFO queues of parked
 * parties (senders, receivers); each queued party is a `sudog` on the
 * parked coroutine's stack pointing at its waiter and at the element to
 * copy from or into. A hand-off copies the element directly between the
 * two stacks under the channel lock, so an unbuffered send is one copy.
 *
 * A claimed party is completed (published and made runnable) only after
 * the channel lock is released: the moment it completes, its owner may run
 * and free the channel, so the waker must be done with it by then. The
 * first party of an unbuffered channel parks in the channel itself (see
 * "The slot"), which then lives until that party has run again.
 *
 * Select locks every channel involved in address order (no lock-order
 * deadlock), takes a ready case if there is one (scanning from a random
 * start, for fairness), otherwise queues one sudog per case, all sharing
 * one waiter. Whoever claims that waiter first decides the case; the
 * select cleans the other queues after it resumes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rt_int.h"

struct sudog {
    struct waiter *w;
    struct sudog *prev, *next;
    void *elem;
    int index;   /* select case, -1 for plain send/recv */
    bool queued; /* on a channel queue; changed under the channel lock */
    bool ok;     /* recv: got an element (false: closed) */
};

struct waitq {
    struct sudog *head, *tail;
};

/*
 * The slot. An unbuffered channel with no one queued holds its first
 * parked party (a coroutine, no timeout, no context, an element of up to
 * SLOT_BYTES) in its own first cache line: the waiter, the element and
 * the lock together. The home thread of that party spins on that line
 * (the watch), so a hand-off from another thread moves that one line to
 * the waker and back, where a queued party's sudog and waiter on its
 * stack cost two more lines each way. Later parties queue behind it, so
 * the slot's party is always the oldest of its kind.
 *
 * The waker claims the slot's party under the lock and completes it after
 * the unlock (waking it is the waker's last touch of the channel); the
 * party, once resumed, copies its element out and empties the slot with a
 * plain store (a locked exchange there cost a tenth of a same-thread
 * hand-off). Until then the channel must live on, though the party's call
 * has in effect completed: a close or a send followed at once by a free
 * is a common and valid pattern. So a chan_free that finds the slot
 * claimed waits for the party to empty it; on the party's own thread,
 * where it cannot run meanwhile, it leaves the freeing to the party
 * instead (SLOT_FREE_PENDING).
 */
#define SLOT_BYTES 16
enum { SLOT_EMPTY, SLOT_RECV, SLOT_SEND, SLOT_CLAIMED, SLOT_FREE_PENDING };

struct chan {
    /* Line 0: what a hand-off with the slot's party writes. */
    struct spin lock;
    bool closed;
    _Atomic unsigned char slot; /* SLOT_*: emptied without the lock */
    struct waiter sw;           /* the slot party's */
    _Alignas(8) unsigned char sval[SLOT_BYTES];
    /* Line 1: read-mostly while parties use the slot. */
    struct waitq recvq, sendq;
    size_t count;
    size_t head; /* ring: index of the oldest element */
    size_t elem_size;
    size_t cap;
    char *buf;
};

static void
wq_push(struct waitq *q, struct sudog *sg)
{
    sg->next = NULL;
    sg->prev = q->tail;
    if (q->tail != NULL)
        q->tail->next = sg;
    else
        q->head = sg;
    q->tail = sg;
    sg->queued = true;
}

static void
wq_remove(struct waitq *q, struct sudog *sg)
{
    if (!sg->queued)
        return;
    if (sg->prev != NULL)
        sg->prev->next = sg->next;
    else
        q->head = sg->next;
    if (sg->next != NULL)
        sg->next->prev = sg->prev;
    else
        q->tail = sg->prev;
    sg->queued = false;
}

/* Takes the first party whose waiter we can claim; parties already claimed
 * elsewhere (another select case won, a timeout, a cancel) are dropped
 * from the queue on the way. */
static struct sudog *
wq_claim(struct waitq *q)
{
    struct sudog *sg;
    while ((sg = q->head) != NULL) {
        wq_remove(q, sg);
        if (waiter_claim(sg->w))
            return sg;
    }
    return NULL;
}

int
chan_new(size_t elem_size, size_t capacity, struct chan **out)
{
    struct chan *ch;

    if (elem_size > (1u << 20) || (elem_size > 0 && capacity > SIZE_MAX / 2 / elem_size))
        return -EINVAL;
    _Static_assert(offsetof(struct chan, recvq) == 64, "the slot fills line 0");
    if ((ch = aligned_alloc(64, (sizeof(*ch) + 63) & ~(size_t)63)) == NULL)
        return -ENOMEM;
    memset(ch, 0, sizeof(*ch));
    ch->elem_size = elem_size;
    ch->cap = capacity;
    /* Zero-size elements still get a buffer, so slot() never offsets NULL. */
    if (capacity > 0 && (ch->buf = malloc(elem_size > 0 ? capacity * elem_size : 1)) == NULL) {
        free(ch);
        return -ENOMEM;
    }
    *out = ch;
    return 0;
}

static void
chan_release(struct chan *ch)
{
    free(ch->buf);
    free(ch);
}

void
chan_free(struct chan *ch)
{
    struct sched *s = rt_tl_sched;
    unsigned char st;

    if (ch == NULL)
        return;
    while ((st = atomic_load_explicit(&ch->slot, memory_order_acquire)) == SLOT_CLAIMED) {
        if (ch->sw.home == s) {
            /* The party runs on this thread, after us: it frees. */
            atomic_store_explicit(&ch->slot, SLOT_FREE_PENDING, memory_order_relaxed);
            return;
        }
        if (s != NULL && s->current != NULL)
            coro_yield();
        else
            sched_yield();
    }
    if (st == SLOT_RECV || st == SLOT_SEND)
        return; /* a party still parked here, its thread perhaps spinning on
                 * this line: keep the memory; the leak report names it */
    chan_release(ch);
}

size_t
chan_len(struct chan *ch)
{
    size_t n;
    spin_lock(&ch->lock);
    n = ch->count;
    spin_unlock(&ch->lock);
    return n;
}

static inline void
copy(struct chan *ch, void *dst, const void *src)
{
    if (dst == NULL)
        return;
    /* Word-sized elements (ints, pointers) are the common case: a fixed
     * size inlines to one move instead of a call to memcpy. */
    switch (ch->elem_size) {
    case 0:
        break;
    case 4:
        memcpy(dst, src, 4);
        break;
    case 8:
        memcpy(dst, src, 8);
        break;
    default:
        memcpy(dst, src, ch->elem_size);
    }
}

static inline char *
slot(struct chan *ch, size_t i)
{
    return ch->buf + ((ch->head + i) % ch->cap) * ch->elem_size;
}

/* Finishes a hand-off after the channel lock is dropped. */
static inline void
wake(struct sudog *sg, int status)
{
    if (sg != NULL)
        waiter_complete(sg->w, status, sg->index);
}

/* Claims the slot's party, lock held: nobody else may end its wait or use
 * the slot now. Its waiter is completed after the unlock, like a queued
 * party's (slot_wake), so the waker's last touch of the channel is that
 * completion, before which the party cannot run: once it runs, it owes
 * the waker nothing and may empty the slot at once. */
static struct waiter *
slot_claim(struct chan *ch)
{
    /* release: a chan_free that sees CLAIMED reads sw.home */
    atomic_store_explicit(&ch->slot, SLOT_CLAIMED, memory_order_release);
    return &ch->sw;
}

static inline void
slot_wake(struct waiter *w, int status)
{
    if (w != NULL)
        waiter_complete(w, status, -1);
}

/* The ready half of a send, lock held: 1 done, 0 would block. A party to
 * wake is left in *wk. */
static int
try_send(struct chan *ch, const void *elem, int *status, struct sudog **wk, struct waiter **slotw)
{
    struct sudog *sg;

    if (ch->closed) {
        *status = RT_ECLOSED;
        return 1;
    }
    if (atomic_load_explicit(&ch->slot, memory_order_relaxed) == SLOT_RECV) {
        copy(ch, ch->sval, elem);
        *slotw = slot_claim(ch);
        *status = 0;
        return 1;
    }
    if ((sg = wq_claim(&ch->recvq)) != NULL) {
        copy(ch, sg->elem, elem);
        sg->ok = true;
        *wk = sg;
        *status = 0;
        return 1;
    }
    if (ch->count < ch->cap) {
        copy(ch, slot(ch, ch->count), elem);
        ch->count++;
        *status = 0;
        return 1;
    }
    return 0;
}

/* The ready half of a receive, lock held. */
static int
try_recv(struct chan *ch, void *elem, int *status, struct sudog **wk, struct waiter **slotw)
{
    struct sudog *sg;

    if (ch->count > 0) {
        copy(ch, elem, slot(ch, 0));
        ch->head = (ch->head + 1) % ch->cap;
        ch->count--;
        /* A parked sender's element takes the freed slot, keeping FIFO. */
        if ((sg = wq_claim(&ch->sendq)) != NULL) {
            copy(ch, slot(ch, ch->count), sg->elem);
            ch->count++;
            *wk = sg;
        }
        *status = 0;
        return 1;
    }
    if (atomic_load_explicit(&ch->slot, memory_order_relaxed) == SLOT_SEND) {
        copy(ch, elem, ch->sval);
        *slotw = slot_claim(ch);
        *status = 0;
        return 1;
    }
    if ((sg = wq_claim(&ch->sendq)) != NULL) {
        copy(ch, elem, sg->elem);
        *wk = sg;
        *status = 0;
        return 1;
    }
    if (ch->closed) {
        if (elem != NULL && ch->elem_size > 0)
            memset(elem, 0, ch->elem_size);
        *status = RT_ECLOSED;
        return 1;
    }
    return 0;
}

/* A parked party's sudog and waiter, which a waker on another thread
 * reads and writes one after the other: together in one 128-byte block,
 * whose two lines the adjacent-line prefetcher moves as one. */
struct chan_wait {
    struct sudog sg;
    struct wait wt;
} __attribute__((aligned(128)));

/* Parks the calling coroutine in ch's slot, lock held; returns the wait's
 * status once resumed, with the slot emptied. */
static int
slot_park(struct chan *ch, bool send, void *elem)
{
    struct sched *s = rt_tl_sched;
    struct waiter *w = &ch->sw;
    int rc;

    w->co = s->current;
    w->home = s;
    atomic_store_explicit(&w->fired, WAITER_ARMED, memory_order_relaxed);
    /* Watched from the start (see watch_set): a waker may take it as soon
     * as the lock is released. */
    atomic_store_explicit(&w->handoff, HANDOFF_WATCHING, memory_order_relaxed);
    w->status = 0;
    w->index = -1;
    w->solo = true;
    if (send)
        copy(ch, ch->sval, elem);
    atomic_store_explicit(&ch->slot, send ? SLOT_SEND : SLOT_RECV, memory_order_relaxed);
    spin_unlock(&ch->lock);

    watch_set(s, w);
    coro_park(CORO_WAIT_CHAN);
    if (s->watch == w)
        s->watch = NULL;
    rc = w->status;
    if (!send)
        copy(ch, elem, ch->sval); /* the element, or a close's zeroes */
    /* Only a chan_free on this thread, which cannot run between this load
     * and the store, writes the slot now (see "The slot"). */
    if (atomic_load_explicit(&ch->slot, memory_order_relaxed) == SLOT_FREE_PENDING)
        chan_release(ch);
    else
        atomic_store_explicit(&ch->slot, SLOT_EMPTY, memory_order_release);
    return rc;
}

static int
chan_op(struct chan *ch, bool send, void *elem, struct ctx *ctx, int64_t timeout_ns)
{
    struct chan_wait cw;
    struct sudog *wk = NULL, *sg = &cw.sg;
    struct wait *wt = &cw.wt;
    struct waiter *slotw = NULL;
    struct sched *s;
    int status, rc;

    if (ch == NULL)
        return -EINVAL;
    spin_lock(&ch->lock);
    if (send ? try_send(ch, elem, &status, &wk, &slotw)
             : try_recv(ch, elem, &status, &wk, &slotw)) {
        spin_unlock(&ch->lock);
        wake(wk, 0);
        slot_wake(slotw, 0);
        return status;
    }
    if (timeout_ns == 0) {
        spin_unlock(&ch->lock);
        return RT_EAGAIN;
    }
    if (ch->cap == 0 && ctx == NULL && timeout_ns < 0 && ch->elem_size <= SLOT_BYTES &&
        /* acquire: the last party read the slot before it emptied it */
        atomic_load_explicit(&ch->slot, memory_order_acquire) == SLOT_EMPTY &&
        (send ? ch->sendq.head : ch->recvq.head) == NULL && (s = rt_tl_sched) != NULL &&
        s->current != NULL)
        return slot_park(ch, send, elem);
    if ((rc = wait_begin(wt, ctx, timeout_ns)) != 0) {
        spin_unlock(&ch->lock);
        return rc;
    }
    sg->w = &wt->w;
    sg->elem = elem;
    sg->index = -1;
    sg->ok = false;
    wq_push(send ? &ch->sendq : &ch->recvq, sg);
    spin_unlock(&ch->lock);

    rc = wait_park(wt, CORO_WAIT_CHAN);
    if (rc != 0 && rc != RT_ECLOSED) {
        /* A timeout or cancel won: leave the queue if still on it. */
        spin_lock(&ch->lock);
        wq_remove(send ? &ch->sendq : &ch->recvq, sg);
        spin_unlock(&ch->lock);
    }
    return rc;
}

int
chan_send(struct chan *ch, const void *elem, struct ctx *ctx, int64_t timeout_ns)
{
    return chan_op(ch, true, (void *)elem, ctx, timeout_ns);
}

int
chan_recv(struct chan *ch, void *elem, struct ctx *ctx, int64_t timeout_ns)
{
    return chan_op(ch, false, elem, ctx, timeout_ns);
}

void
chan_close(struct chan *ch)
{
    struct sudog *sg, *list = NULL;
    struct waiter *slotw = NULL;

    spin_lock(&ch->lock);
    if (ch->closed) {
        spin_unlock(&ch->lock);
        return;
    }
    ch->closed = true;
    switch (atomic_load_explicit(&ch->slot, memory_order_relaxed)) {
    case SLOT_RECV:
        memset(ch->sval, 0, sizeof(ch->sval));
        /* fall through */
    case SLOT_SEND:
        slotw = slot_claim(ch);
        break;
    default:
        break;
    }
    while ((sg = wq_claim(&ch->recvq)) != NULL) {
        if (sg->elem != NULL && ch->elem_size > 0)
            memset(sg->elem, 0, ch->elem_size);
        sg->ok = false;
        sg->next = list;
        list = sg;
    }
    while ((sg = wq_claim(&ch->sendq)) != NULL) {
        sg->next = list;
        list = sg;
    }
    spin_unlock(&ch->lock);
    slot_wake(slotw, RT_ECLOSED);
    while ((sg = list) != NULL) {
        list = sg->next; /* read before the owner can run */
        wake(sg, RT_ECLOSED);
    }
}

/* ---- select ----------------------------------------------------------- */

#define SELECT_STACK_CASES 8

static int
cmp_chan(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (struct chan *const *)a, y = (uintptr_t) * (struct chan *const *)b;
    return x < y ? -1 : x > y;
}

static void
lock_all(struct chan **order, int n)
{
    for (int i = 0; i < n; i++)
        spin_lock(&order[i]->lock);
}

static void
unlock_all(struct chan **order, int n)
{
    for (int i = n - 1; i >= 0; i--)
        spin_unlock(&order[i]->lock);
}

int
chan_select(struct chan_case *cases, int n, struct ctx *ctx, int64_t timeout_ns)
{
    struct chan *order_buf[SELECT_STACK_CASES];
    struct sudog sg_buf[SELECT_STACK_CASES];
    struct chan **order = order_buf;
    struct sudog *sgs = sg_buf, *wk = NULL;
    struct waiter *slotw = NULL;
    struct wait wt;
    int nlock = 0, start, rc, chosen = -1, status = 0;

    if (n < 0 || (n > 0 && cases == NULL))
        return -EINVAL;
    if (n > SELECT_STACK_CASES) {
        order = malloc((size_t)n * sizeof(*order));
        sgs = malloc((size_t)n * sizeof(*sgs));
        if (order == NULL || sgs == NULL) {
            rc = -ENOMEM;
            goto out;
        }
    }
    for (int i = 0; i < n; i++) {
        cases[i].status = 0;
        if (cases[i].ch != NULL)
            order[nlock++] = cases[i].ch;
    }
    qsort(order, (size_t)nlock, sizeof(*order), cmp_chan);
    {
        int u = 0; /* drop duplicates: each lock is taken once */
        for (int i = 0; i < nlock; i++)
            if (u == 0 || order[u - 1] != order[i])
                order[u++] = order[i];
        nlock = u;
    }

    lock_all(order, nlock);
    start = n > 0 ? (int)(rt_rand() % (uint64_t)n) : 0;
    for (int k = 0; k < n && chosen < 0; k++) {
        int i = (start + k) % n;
        struct chan_case *cs = &cases[i];
        if (cs->ch == NULL)
            continue;
        if (cs->op == CHAN_SEND ? try_send(cs->ch, cs->elem, &status, &wk, &slotw)
                                : try_recv(cs->ch, cs->elem, &status, &wk, &slotw))
            chosen = i;
    }
    if (chosen >= 0) {
        unlock_all(order, nlock);
        wake(wk, 0);
        slot_wake(slotw, 0);
        cases[chosen].status = status;
        rc = chosen;
        goto out;
    }
    if (timeout_ns == 0) {
        unlock_all(order, nlock);
        rc = RT_EAGAIN;
        goto out;
    }
    if ((rc = wait_begin(&wt, ctx, timeout_ns)) != 0) {
        unlock_all(order, nlock);
        goto out;
    }
    /* One waiter queued on several channels: their locks do not exclude
     * each other, so claims must compare-and-swap. */
    wt.w.solo = false;
    for (int i = 0; i < n; i++) {
        struct chan_case *cs = &cases[i];
        sgs[i].queued = false;
        if (cs->ch == NULL)
            continue;
        sgs[i].w = &wt.w;
        sgs[i].elem = cs->elem;
        sgs[i].index = i;
        sgs[i].ok = false;
        wq_push(cs->op == CHAN_SEND ? &cs->ch->sendq : &cs->ch->recvq, &sgs[i]);
    }
    unlock_all(order, nlock);

    rc = wait_park(&wt, CORO_WAIT_CHAN);

    lock_all(order, nlock);
    for (int i = 0; i < n; i++)
        if (cases[i].ch != NULL)
            wq_remove(cases[i].op == CHAN_SEND ? &cases[i].ch->sendq : &cases[i].ch->recvq,
                      &sgs[i]);
    unlock_all(order, nlock);
    if (wt.w.index >= 0) {
        cases[wt.w.index].status = rc;
        rc = wt.w.index;
    }
out:
    if (order != order_buf)
        free(order);
    if (sgs != sg_buf)
        free(sgs);
    return rc;
}
