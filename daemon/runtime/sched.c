/*
 * sched — the scheduler threads, the run queues, spawning, parking and
 * waking, the per-thread timer heap and the libevent integration. Each
 * scheduler thread owns one event_base (created without locks), a local
 * run queue only it touches, a remote queue other threads push onto, and
 * the coroutines that started on it, for their whole life.
 *
 * Switching is direct: a coroutine that parks or yields switches straight
 * to the next runnable coroutine of its thread; only when none is left, or
 * when a look at the clock every JOBQ_SCHED_POLL_EVERY switches finds a
 * timer due or the event base unpolled for JOBQ_SCHED_POLL_NS, does it
 * return to the scheduler loop, which drains the remote queue, fires due
 * timers, polls the event base, and when there is nothing to do spins
 * (watching the coroutine that parked last, see "the watch") and then
 * sleeps in epoll until an fd, a timer or its notify eventfd wakes it.
 * docs/RUNTIME.md tells the whole design with its measurements.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event_struct.h>

#include "rt_int.h"

#if defined(JOBQ_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(JOBQ_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* The scheduler of the calling thread; NULL on other threads. One of the
 * three globals STYLE allows: coroutines never migrate, so it is stable for
 * a coroutine's whole life. */
_Thread_local struct sched *rt_tl_sched;

/* Lower bound of the adaptive spin, so a thread that spun in vain many
 * times still notices a hand-off that lands right after its work ends. */
#define SPIN_MIN_NS 2000
/* Coroutine ids a thread reserves at once: one atomic per block instead of
 * one per spawn. */
#define ID_BLOCK 1024
/* rt_stats.peak is refreshed when a thread's load rises past its mark; the
 * mark follows a falling load only this far behind, so a spawn-and-join
 * loop (load 1, 2, 1, 2 ...) never pays for it. The peak may miss up to
 * this many coroutines per thread. */
#define PEAK_SLACK 64

int64_t
rt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void
rt_logf(struct rt *rt, enum rt_log_level level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (rt != NULL && rt->log != NULL) {
        rt->log(rt->log_arg, level, msg);
        return;
    }
    fprintf(stderr, "jobq runtime: %s\n", msg);
}

static inline __attribute__((always_inline)) void
stat_add(atomic_uint_fast64_t *c, int64_t d)
{
    /* Only the owning thread writes, so load+store needs no lock prefix. */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + (uint64_t)d,
                          memory_order_relaxed);
}

static uint64_t
xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

uint64_t
rt_rand(void)
{
    static _Thread_local uint64_t foreign;
    struct sched *s = rt_tl_sched;

    if (s != NULL)
        return xorshift(&s->rnd);
    if (foreign == 0)
        foreign = (uint64_t)rt_now_ns() * 0x9E3779B97F4A7C15ull | 1;
    return xorshift(&foreign);
}

/* ---- futex for plain threads ------------------------------------------ */

static void
futex_wait(atomic_int *addr, int val, int64_t timeout_ns)
{
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tsp = &ts;
    }
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, tsp, NULL, 0);
}

void
futex_wake_all(atomic_int *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* ---- run queues ------------------------------------------------------- */

static inline struct coro *
rq_pop(struct sched *s)
{
    struct coro *c = s->rq_head;
    if (c != NULL) {
        s->rq_head = c->next;
        if (s->rq_head == NULL)
            s->rq_tail = NULL;
        s->rq_len--;
    }
    return c;
}

static void
notify(struct sched *s)
{
    uint64_t one = 1;
    /* Only the waker that flips `sleeping` writes: one syscall per sleep,
     * however many threads push meanwhile. */
    if (atomic_load(&s->sleeping) && atomic_exchange(&s->sleeping, 0)) {
        while (write(s->notify_fd, &one, sizeof(one)) < 0 && errno == EINTR)
            ;
    }
}

void
sched_wake_idle(struct rt *rt, struct sched *self)
{
    for (int i = 1; i < rt->nthreads; i++) {
        struct sched *t = &rt->threads[(self->index + i) % rt->nthreads];
        if (atomic_load(&t->sleeping)) {
            notify(t);
            return;
        }
    }
}

/* Pushes the chain head..tail (linked by rnext, newest first, as single
 * pushes would have left it) onto s's remote queue in one CAS. */
static void
remote_push_chain(struct sched *s, struct coro *head, struct coro *tail)
{
    struct coro *old = atomic_load_explicit(&s->remote, memory_order_relaxed);
    /* Same cache line as `remote`, which the push takes anyway. */
    atomic_fetch_add_explicit(&s->pushers, 1, memory_order_relaxed);
    do {
        tail->rnext = old;
    } while (!atomic_compare_exchange_weak(&s->remote, &old, head));
    notify(s);
    atomic_fetch_sub_explicit(&s->pushers, 1, memory_order_release);
}

/* Wake-ups held by rt_wake_batch_begin, per target thread. More targets
 * than this are rare (a batch wakes coroutines of a few threads); the
 * extra ones are pushed at once. */
#define WAKE_BATCH_TARGETS 8

struct wake_batch {
    int depth, n;
    struct {
        struct sched *s;
        struct coro *head, *tail;
    } t[WAKE_BATCH_TARGETS];
};

static _Thread_local struct wake_batch tl_wake;

void
remote_push(struct sched *s, struct coro *c)
{
    struct wake_batch *b = &tl_wake;

    if (b->depth > 0) {
        for (int i = 0; i < b->n; i++) {
            if (b->t[i].s == s) {
                c->rnext = b->t[i].head;
                b->t[i].head = c;
                return;
            }
        }
        if (b->n < WAKE_BATCH_TARGETS) {
            /* Held wake-ups count as pushes in flight: rt_free must not
             * free s before they are handed over. */
            atomic_fetch_add_explicit(&s->pushers, 1, memory_order_relaxed);
            c->rnext = NULL;
            b->t[b->n].s = s;
            b->t[b->n].head = b->t[b->n].tail = c;
            b->n++;
            return;
        }
    }
    remote_push_chain(s, c, c);
}

/* On a scheduler thread both do nothing: every coroutine of the thread
 * would share the batch, and one that parked inside it would hold the
 * others' wake-ups. */
void
rt_wake_batch_begin(void)
{
    if (rt_tl_sched == NULL)
        tl_wake.depth++;
}

void
rt_wake_batch_end(void)
{
    struct wake_batch *b = &tl_wake;

    if (rt_tl_sched != NULL || b->depth <= 0 || --b->depth > 0)
        return;
    for (int i = 0; i < b->n; i++) {
        struct sched *s = b->t[i].s;
        remote_push_chain(s, b->t[i].head, b->t[i].tail);
        atomic_fetch_sub_explicit(&s->pushers, 1, memory_order_release);
    }
    b->n = 0;
}

static void
remote_drain(struct sched *s)
{
    struct coro *list = atomic_exchange_explicit(&s->remote, NULL, memory_order_acquire);
    struct coro *rev = NULL;

    /* The stack is LIFO; reverse it so wake-ups keep their order. */
    while (list != NULL) {
        struct coro *n = list->rnext;
        list->rnext = rev;
        rev = list;
        list = n;
    }
    while (rev != NULL) {
        struct coro *n = rev->rnext;
        rev->state = CORO_RUNNABLE;
        rq_push_tail(s, rev);
        rev = n;
    }
}

/* ---- waiters ---------------------------------------------------------- */

/*
 * The watch. A thread watches the waiter of the coroutine that parked
 * there last (sched.watch), from the park (the parker sets WATCHING)
 * until the coroutine runs again; it lets the watch go only to sleep in
 * epoll or to watch a newer waiter (watch_release). A waker on another
 * thread that completes a watched waiter only flips `handoff` to TAKEN, in
 * the line it already owns after the claim, and the home thread runs the
 * coroutine as soon as it sees the flip, in its spin (spin_for_work) or at
 * the top of its loop: one cache-line transfer instead of a push onto the
 * remote queue (a CAS on another line), its drain, and the coroutine's own
 * line read back. This is the request-reply case: a coroutine asks
 * another thread and waits.
 * A coroutine parked in an unbuffered channel's slot (chan.c) has its
 * waiter in the channel's first line, next to the lock and the element:
 * the whole hand-off is then that one line, to the waker and back.
 */
void
waiter_hand_over(struct waiter *w, struct coro *co)
{
    int expect = HANDOFF_WATCHING;

    /* The owner cannot run before this decides: it is readied either by
     * the TAKEN below or by the push, so w is still valid here. */
    if (atomic_load_explicit(&w->handoff, memory_order_relaxed) == HANDOFF_WATCHING &&
        atomic_compare_exchange_strong_explicit(&w->handoff, &expect, HANDOFF_TAKEN,
                                                memory_order_acq_rel, memory_order_relaxed))
        return;
    remote_push(w->home, co);
}

/* The watched waiter was taken by a waker on another thread: its
 * coroutine is ours to run. */
static void
watch_taken(struct sched *s)
{
    struct coro *co = s->watch->co;
    s->watch = NULL;
    co->state = CORO_RUNNABLE;
    rq_push_tail(s, co);
}

/* Stops watching s->watch: from now on its waker pushes it onto the remote
 * queue (and wakes this thread) instead. Returns true if a waker had taken
 * it already: it is then in the run queue. */
bool
watch_release(struct sched *s)
{
    int expect = HANDOFF_WATCHING;
    if (!atomic_compare_exchange_strong_explicit(&s->watch->handoff, &expect, HANDOFF_NONE,
                                                 memory_order_acquire, memory_order_acquire)) {
        watch_taken(s);
        return true;
    }
    s->watch = NULL;
    return false;
}

bool
waiter_fire(struct waiter *w, int status, int index)
{
    if (!waiter_claim(w))
        return false;
    waiter_complete(w, status, index);
    return true;
}

/* ---- timers: a 4-ary min-heap per thread ------------------------------- */

/*
 * Four children per node halve the depth of a binary heap (10 levels for a
 * million timers), and the array is offset by three entries so that the
 * four children of a node, 16 bytes each, fill exactly one cache line.
 */
#define HEAP_PAD 3

static void
heap_up(struct sched *s, size_t i)
{
    struct heap_ent e = s->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 4;
        if (s->heap[p].when <= e.when)
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
}

static void
heap_down(struct sched *s, size_t i)
{
    struct heap_ent e = s->heap[i];
    size_t n = s->nheap;
    for (;;) {
        size_t c = 4 * i + 1, end = c + 4 < n ? c + 4 : n, m = i;
        int64_t mw = e.when;
        for (size_t k = c; k < end; k++) {
            if (s->heap[k].when < mw) {
                m = k;
                mw = s->heap[k].when;
            }
        }
        if (m == i)
            break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    s->heap[i] = e;
}

static struct timer_rec *
heap_pop(struct sched *s)
{
    struct timer_rec *rec = s->heap[0].rec;
    if (--s->nheap > 0) {
        s->heap[0] = s->heap[s->nheap];
        heap_down(s, 0);
    }
    return rec;
}

static bool
heap_grow(struct sched *s)
{
    size_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
    struct heap_ent *mem = aligned_alloc(64, (cap + 4) * sizeof(*mem));
    if (mem == NULL)
        return false;
    if (s->nheap > 0)
        memcpy(mem + HEAP_PAD, s->heap, s->nheap * sizeof(*mem));
    free(s->heap_mem);
    s->heap_mem = mem;
    s->heap = mem + HEAP_PAD;
    s->heap_cap = cap;
    return true;
}

#define REC_CHUNK 255

struct rec_chunk {
    struct rec_chunk *next;
    struct timer_rec recs[REC_CHUNK];
};

static struct timer_rec *
rec_get(struct sched *s)
{
    struct timer_rec *r = s->rec_free;
    if (r == NULL) {
        struct rec_chunk *ch = malloc(sizeof(*ch));
        if (ch == NULL)
            return NULL;
        ch->next = s->rec_chunks;
        s->rec_chunks = ch;
        for (int i = REC_CHUNK - 1; i >= 0; i--) {
            ch->recs[i].next = r;
            r = &ch->recs[i];
        }
    }
    s->rec_free = r->next;
    return r;
}

static void
rec_put(struct sched *s, struct timer_rec *r)
{
    r->next = s->rec_free;
    s->rec_free = r;
}

/* Drops stale records from the top, so the heap's first deadline (the
 * one the thread sleeps until) is always a live one: an unhooked timeout
 * never wakes an idle thread. */
static void
heap_trim(struct sched *s)
{
    while (s->nheap > 0 && s->heap[0].rec->t == NULL) {
        rec_put(s, heap_pop(s));
        s->nstale--;
    }
}

/* Rebuilds the heap without its stale records once they are the majority:
 * memory and depth stay proportional to the armed timers, and each
 * unhook pays O(1) amortized. */
static void
heap_compact(struct sched *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nheap; i++) {
        if (s->heap[i].rec->t != NULL)
            s->heap[n++] = s->heap[i];
        else
            rec_put(s, s->heap[i].rec);
    }
    s->nheap = n;
    s->nstale = 0;
    for (size_t i = n / 4 + 1; i-- > 0;)
        if (i < n)
            heap_down(s, i);
}

void
timer_add(struct sched *s, struct timer *t)
{
    struct timer_rec *rec;

    if ((s->nheap == s->heap_cap && !heap_grow(s)) || (rec = rec_get(s)) == NULL) {
        /* No room to remember the timeout: end the wait now rather than
         * sleep forever. */
        waiter_fire(t->w, -ENOMEM, -1);
        return;
    }
    rec->t = t;
    t->rec = rec;
    s->heap[s->nheap] = (struct heap_ent){t->when, rec};
    heap_up(s, s->nheap++);
}

void
timer_cancel(struct sched *s, struct timer *t)
{
    if (t->rec == NULL)
        return;
    t->rec->t = NULL;
    t->rec = NULL;
    s->nstale++;
    heap_trim(s);
    if (s->nstale > 64 && s->nstale > s->nheap / 2)
        heap_compact(s);
}

/* Due timers fired per batch (see timers_run). */
#define TIMER_BATCH 16

static void
timers_run(struct sched *s, int64_t now)
{
    struct coro *queued = s->rq_tail; /* the last one queued before */
    struct timer_rec *batch[TIMER_BATCH];

    /* Each timer lives in its parked coroutine's stack, and so does the
     * coroutine it wakes: with many coroutines that is a TLB and a cache
     * miss apiece. Popped a batch at a time and prefetched in stages
     * (the record, the timer, the coroutine), the misses of a batch
     * overlap instead of following one another. Nothing can cancel a
     * popped timer meanwhile: only this thread's coroutines do, and none
     * runs until the batch is fired. */
    while (s->nheap > 0 && s->heap[0].when <= now) {
        int n = 0;
        while (n < TIMER_BATCH && s->nheap > 0 && s->heap[0].when <= now) {
            batch[n] = heap_pop(s);
            __builtin_prefetch(batch[n], 1);
            n++;
        }
        for (int i = 0; i < n; i++)
            if (batch[i]->t != NULL)
                __builtin_prefetch(batch[i]->t, 1);
        for (int i = 0; i < n; i++)
            if (batch[i]->t != NULL && batch[i]->t->w->co != NULL)
                __builtin_prefetch(batch[i]->t->w->co, 1);
        for (int i = 0; i < n; i++) {
            struct timer_rec *rec = batch[i];
            struct timer *t = rec->t;
            if (t != NULL) {
                t->rec = NULL;
                waiter_fire(t->w, t->status, -1);
            } else {
                s->nstale--;
            }
            rec_put(s, rec);
        }
    }
    heap_trim(s);
    /* The coroutines whose time came run before those already queued, in
     * the order they fell due: a burst of spawns or hand-offs on this
     * thread would otherwise make every timer late by its whole length. */
    if (queued != NULL && queued != s->rq_tail) {
        struct coro *first = queued->next;
        s->rq_tail->next = s->rq_head;
        s->rq_head = first;
        queued->next = NULL;
        s->rq_tail = queued;
    }
}

/* ---- switching -------------------------------------------------------- */

#if defined(JOBQ_ASAN)
/* The scheduler context's fake stack, saved on leaving it and restored on
 * coming back: one variable for both ends. */
static _Thread_local void *sched_fake;

static void
asan_start(struct sched *s, struct coro *from, struct coro *to)
{
    const void *bottom = to ? (const void *)to->lo : s->asan_stack_bottom;
    size_t size = to ? (size_t)((char *)to - to->lo) : s->asan_stack_size;
    void **save = NULL;

    if (from == NULL)
        save = &sched_fake;
    else if (from->state != CORO_DEAD)
        save = &from->asan_fake;
    __sanitizer_start_switch_fiber(save, bottom, size);
}

static void
asan_finish(struct coro *self)
{
    const void *b;
    size_t sz;
    __sanitizer_finish_switch_fiber(self ? self->asan_fake : sched_fake, &b, &sz);
}
#endif

static void
free_dead(struct sched *s)
{
    struct coro *d = s->dead;
    s->dead = NULL;
#if defined(JOBQ_TSAN)
    __tsan_destroy_fiber(d->tsan_fiber);
#endif
    stack_put(s->rt, s, d);
}

/* Runs in the context that was just switched to. */
static inline void
after_switch(struct coro *self)
{
#if defined(JOBQ_ASAN)
    asan_finish(self);
#else
    (void)self;
#endif
    struct sched *s = rt_tl_sched;
    if (s->dead != NULL)
        free_dead(s);
}

/* Everything a switch from `from` (a coroutine, or the scheduler when
 * NULL) to `to` (likewise) does but the switch itself. Returns the stack
 * pointer to load. */
static inline void *
switch_prepare(struct sched *s, struct coro *from, struct coro *to)
{
    s->current = to;
    if (to != NULL)
        to->state = CORO_RUNNING;
    atomic_store_explicit(&s->st.running, to != NULL, memory_order_relaxed);
#if defined(JOBQ_ASAN)
    asan_start(s, from, to);
#else
    (void)from;
#endif
#if defined(JOBQ_TSAN)
    __tsan_switch_to_fiber(to ? to->tsan_fiber : s->tsan_fiber, 0);
#endif
    return to ? to->sp : s->sched_sp;
}

/* Switches from the running context to `to`; returns when `from` runs
 * again. */
static inline void
switch_to(struct sched *s, struct coro *from, struct coro *to)
{
    void **save = from ? &from->sp : &s->sched_sp;

    if (from != NULL)
        stack_check(from, __builtin_frame_address(0));
    rt_ctx_switch(save, switch_prepare(s, from, to));
    after_switch(from);
}

/* Every JOBQ_SCHED_POLL_EVERY switches: true if a timer is due or the
 * event base has not been polled for JOBQ_SCHED_POLL_NS, so the thread
 * should pass through its scheduler loop. Reading the clock there instead
 * of polling outright keeps epoll_wait (~100 ns) off the switch path. */
static bool
poll_due(struct sched *s)
{
    int64_t now = rt_now_ns();
    bool due = now - s->polled >= JOBQ_SCHED_POLL_NS || (s->nheap > 0 && s->heap[0].when <= now);
    /* If due, the next pass of the loop must read the clock and poll. */
    s->poll_countdown = due ? 1 : JOBQ_SCHED_POLL_EVERY;
    return due;
}

/* The coroutine to run next, or NULL for the scheduler loop (none is
 * runnable, or it is time to poll). */
static inline struct coro *
pick_next(struct sched *s)
{
    if (atomic_load_explicit(&s->remote, memory_order_relaxed) != NULL)
        remote_drain(s);
    if (RT_LIKELY(--s->poll_countdown != 0) || !poll_due(s))
        return rq_pop(s);
    return NULL;
}

/*
 * Leaves the current coroutine `self` (parked, or yielded into the run
 * queue) for the next runnable one, or for the scheduler loop when none is
 * left or it is time to poll. Returns when self runs again.
 */
static void
schedule_next(struct sched *s, struct coro *self)
{
    struct coro *next = pick_next(s);

    if (next == self) {
        /* Woken (or yielded) before anyone else was ready: keep going. */
        self->state = CORO_RUNNING;
        return;
    }
    switch_to(s, self, next);
}

void
coro_park(enum coro_wait reason)
{
    struct sched *s = rt_tl_sched;
    struct coro *self = s->current;

    self->state = CORO_PARKED;
    self->wait = (uint8_t)reason;
    stat_add(&s->st.parked[reason], 1);
    schedule_next(s, self);
    stat_add(&s->st.parked[reason], -1);
}

void
coro_yield(void)
{
    struct sched *s = rt_tl_sched;
    struct coro *self;

    if (s == NULL || (self = s->current) == NULL) {
        sched_yield();
        return;
    }
    self->state = CORO_RUNNABLE;
    rq_push_tail(s, self);
    schedule_next(s, self);
}

/* ---- coroutine life --------------------------------------------------- */

/* First code a coroutine runs, called by rt_ctx_start or
 * rt_ctx_trampoline. Returns, once fn has returned, the stack pointer of
 * the context to resume; the assembly loads it (this stack is then dead,
 * and the next context frees it). */
static void *
coro_entry(void *arg)
{
    struct coro *c = arg;
    struct sched *s;
    struct coro_pool *pool;

    after_switch(c);
    s = rt_tl_sched;
    stat_add(&s->st.spawned, 1);

    c->fn(c->arg);

    pool = c->pool;
    if (pool != NULL)
        coro_pool_release(pool);
    own_add(&s->st.exited, 1);
    {
        /* Let the peak mark follow a falling load (see PEAK_SLACK). */
        long load = sched_load(s);
        if (load + PEAK_SLACK < s->peak_mark)
            s->peak_mark = load + PEAK_SLACK;
    }
    c->state = CORO_DEAD;
    s->dead = c;
#if defined(JOBQ_TSAN)
    /* TSan keeps a shadow call stack per fiber and pops coro_entry's frame
     * at its return, which here would come after the switch to the next
     * fiber and pop one of that fiber's frames. Under TSan a coroutine
     * leaves by an ordinary switch and is never resumed. */
    schedule_next(s, c);
    abort();
#else
    stack_check(c, __builtin_frame_address(0));
    return switch_prepare(s, c, pick_next(s));
#endif
}

/* The top of c's stack: just below the coroutine, 16-byte aligned. */
static inline void *
stack_top(struct coro *c)
{
    return (void *)(((uintptr_t)c - 16) & ~(uintptr_t)15);
}

/* The first frame of a coroutine that waits in a run queue before it
 * starts, laid out as switch_<arch>.S pops it. Like a new thread, it
 * inherits the spawner's floating-point control words, as a coroutine
 * started at once (rt_ctx_start) does. */
static void
frame_init(struct coro *c)
{
    uintptr_t top = (uintptr_t)stack_top(c);
#if defined(__x86_64__)
    uint64_t *sp = (uint64_t *)(top - 64);
    uint32_t mxcsr;
    uint16_t cw;
    __asm__ __volatile__("stmxcsr %0" : "=m"(mxcsr));
    __asm__ __volatile__("fnstcw %0" : "=m"(cw));
    sp[0] = mxcsr | ((uint64_t)cw << 32);
    sp[1] = 0; /* r15 */
    sp[2] = 0; /* r14 */
    sp[3] = (uint64_t)(uintptr_t)coro_entry;
    sp[4] = (uint64_t)(uintptr_t)c;
    sp[5] = 0; /* rbx */
    sp[6] = 0; /* rbp */
    sp[7] = (uint64_t)(uintptr_t)rt_ctx_trampoline;
#elif defined(__aarch64__)
    uint64_t *sp = (uint64_t *)(top - 176);
    uint64_t fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    memset(sp, 0, 176);
    sp[20] = fpcr;
    sp[0] = (uint64_t)(uintptr_t)c;                  /* x19 */
    sp[1] = (uint64_t)(uintptr_t)coro_entry;         /* x20 */
    sp[11] = (uint64_t)(uintptr_t)rt_ctx_trampoline; /* x30 */
#else
#error "jobq runtime: no context switch for this architecture"
#endif
    c->sp = sp;
}

/* The thread a new coroutine goes to: the spawner's own unless another has
 * clearly fewer live coroutines. */
static struct sched *
pick_thread(struct rt *rt, struct sched *cur)
{
    struct sched *best = NULL;
    long best_load = LONG_MAX, cur_load = 0;

    /* A lightly loaded spawner keeps its child without looking at the
     * other threads, whose counters live on lines they keep writing. */
    if (cur != NULL && (cur_load = sched_load(cur)) <= JOBQ_SPAWN_LOCAL_SLACK)
        return cur;
    for (int i = 0; i < rt->nthreads; i++) {
        struct sched *s = &rt->threads[i];
        long l = sched_load(s);
        if (l < best_load)
            best = s, best_load = l;
    }
    if (cur != NULL && cur_load <= best_load + JOBQ_SPAWN_LOCAL_SLACK)
        return cur;
    return best;
}

/* Raises rt->peak to the sum of the threads' loads, if higher. */
static void
peak_update(struct rt *rt)
{
    long sum = 0, peak;
    for (int i = 0; i < rt->nthreads; i++)
        sum += sched_load(&rt->threads[i]);
    peak = atomic_load_explicit(&rt->peak, memory_order_relaxed);
    while (sum > peak && !atomic_compare_exchange_weak_explicit(
                             &rt->peak, &peak, sum, memory_order_relaxed, memory_order_relaxed))
        ;
}

static uint64_t
next_id(struct rt *rt, struct sched *cur)
{
    if (cur == NULL)
        return atomic_fetch_add_explicit(&rt->next_id, 1, memory_order_relaxed) + 1;
    if (cur->id_next == cur->id_end) {
        cur->id_next = atomic_fetch_add_explicit(&rt->next_id, ID_BLOCK, memory_order_relaxed);
        cur->id_end = cur->id_next + ID_BLOCK;
    }
    return ++cur->id_next;
}

/* snprintf("%s") costs more than the rest of a spawn; names are short. */
static inline void
copy_name(char *dst, const char *name)
{
    size_t i = 0;
    for (; i < JOBQ_CORO_NAME_BYTES - 1 && name[i] != '\0'; i++)
        dst[i] = name[i];
    dst[i] = '\0';
}

int
coro_spawn_pool(struct rt *rt, int thread, const char *name, void (*fn)(void *), void *arg,
                struct coro_pool *pool)
{
    struct sched *cur = rt_tl_sched, *target;
    struct coro *c;

    if (rt == NULL || fn == NULL || thread >= rt->nthreads || thread < -1)
        return -EINVAL;
    if (cur != NULL && cur->rt != rt)
        cur = NULL;
    if (cur == NULL && atomic_load(&rt->stopping))
        return -ESHUTDOWN;
    target = thread >= 0 ? &rt->threads[thread] : pick_thread(rt, cur);
    if ((c = stack_get(rt, cur)) == NULL)
        return -ENOMEM;
    c->fn = fn;
    c->arg = arg;
    c->pool = pool;
    c->home = target;
    c->id = next_id(rt, cur);
    c->state = CORO_RUNNABLE;
    c->wait = 0;
    copy_name(c->name, name ? name : "coro");
#if defined(JOBQ_TSAN)
    c->tsan_fiber = __tsan_create_fiber(0);
#endif
#if defined(JOBQ_ASAN)
    c->asan_fake = NULL;
#endif
    if (target == cur) {
        long load;
        own_add(&cur->st.placed_local, 1);
        if ((load = sched_load(cur)) > cur->peak_mark) {
            cur->peak_mark = load;
            peak_update(rt);
        }
    } else {
        atomic_fetch_add_explicit(&target->placed_remote, 1, memory_order_relaxed);
        peak_update(rt);
    }

    if (target == cur && cur->current != NULL) {
        /* Run the child now: its stack is cache-hot and a spawn-join costs
         * two switches. The spawner resumes as soon as the child parks,
         * unless others were already waiting to run: it queues behind
         * them, so a loop of spawns cannot starve coroutines that timers
         * or wake-ups made runnable meanwhile. */
        struct coro *self = cur->current;
        self->state = CORO_RUNNABLE;
        rq_push_tail(cur, self);
#if defined(JOBQ_TSAN)
        frame_init(c); /* see coro_entry: under TSan, entry and exit are switches */
        switch_to(cur, self, c);
#else
        stack_check(self, __builtin_frame_address(0));
        (void)switch_prepare(cur, self, c); /* c has no frame yet: it starts at its top */
        rt_ctx_start(&self->sp, stack_top(c), coro_entry, c);
        after_switch(self);
#endif
    } else if (target == cur) {
        frame_init(c);
        rq_push_tail(cur, c); /* from the scheduler context (an event callback) */
    } else {
        frame_init(c);
        remote_push(target, c);
    }
    return 0;
}

int
coro_spawn(struct rt *rt, const char *name, void (*fn)(void *arg), void *arg)
{
    return coro_spawn_pool(rt, -1, name, fn, arg, NULL);
}

int
coro_spawn_on(struct rt *rt, int thread, const char *name, void (*fn)(void *arg), void *arg)
{
    if (rt == NULL || thread < 0 || thread >= rt->nthreads)
        return -EINVAL;
    return coro_spawn_pool(rt, thread, name, fn, arg, NULL);
}

struct coro *
coro_self(void)
{
    struct sched *s = rt_tl_sched;
    return s ? s->current : NULL;
}

const char *
coro_name(const struct coro *c)
{
    return c ? c->name : "(none)";
}

uint64_t
coro_id(const struct coro *c)
{
    return c ? c->id : 0;
}

struct rt *
coro_rt(void)
{
    struct sched *s = rt_tl_sched;
    return s && s->current ? s->rt : NULL;
}

int
coro_thread(void)
{
    struct sched *s = rt_tl_sched;
    return s && s->current ? s->index : -1;
}

int
rt_threads(const struct rt *rt)
{
    return rt->nthreads;
}

struct event_base *
rt_event_base(struct rt *rt, int thread)
{
    if (thread < 0 || thread >= rt->nthreads)
        return NULL;
    return rt->threads[thread].base;
}

/* ---- the common wait frame -------------------------------------------- */

int
wait_begin_slow(struct wait *wt, struct ctx *ctx, int64_t timeout_ns)
{
    struct sched *s = rt_tl_sched;
    int64_t when = INT64_MAX;
    int tstatus = RT_ETIMEDOUT;

    wt->w.co = s ? s->current : NULL;
    wt->w.home = s;
    atomic_init(&wt->w.fired, WAITER_ARMED);
    atomic_init(&wt->w.handoff, HANDOFF_NONE);
    wt->w.status = 0;
    wt->w.index = -1;
    wt->t.rec = NULL;
    wt->t.w = &wt->w;
    wt->reg.ctx = ctx;
    wt->reg.linked = false;
    if (ctx != NULL) {
        int err = ctx_err(ctx);
        if (err != 0)
            return err;
        when = ctx_deadline(ctx);
        if (when != INT64_MAX)
            tstatus = RT_EDEADLINE;
    }
    if (timeout_ns >= 0) {
        int64_t now = rt_now_ns();
        int64_t t = timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns;
        if (t < when) {
            when = t;
            tstatus = RT_ETIMEDOUT;
        }
    }
    wt->t.when = when;
    wt->t.status = tstatus;
    wt->w.solo = ctx == NULL && when == INT64_MAX;
    return 0;
}

static void
thread_block(struct wait *wt)
{
    struct waiter *w = &wt->w;

    for (;;) {
        int f = atomic_load_explicit(&w->fired, memory_order_acquire);
        if (f == WAITER_DONE)
            return;
        if (f == WAITER_ARMED && wt->t.when != INT64_MAX) {
            int64_t now = rt_now_ns();
            if (now >= wt->t.when) {
                if (waiter_claim(w)) {
                    w->status = wt->t.status;
                    atomic_store_explicit(&w->fired, WAITER_DONE, memory_order_release);
                    return;
                }
                continue;
            }
            futex_wait(&w->fired, f, wt->t.when - now);
        } else {
            futex_wait(&w->fired, f, -1);
        }
    }
}

int
wait_park_slow(struct wait *wt, enum coro_wait reason)
{
    struct waiter *w = &wt->w;
    struct sched *s = rt_tl_sched;

    if (wt->reg.ctx != NULL && !ctx_register(wt->reg.ctx, &wt->reg, w)) {
        /* Canceled meanwhile. Claim it ourselves so nobody readies us. */
        int err = ctx_err(wt->reg.ctx);
        wt->reg.ctx = NULL;
        if (waiter_claim(w)) {
            w->status = err;
            atomic_store_explicit(&w->fired, WAITER_DONE, memory_order_release);
            return err;
        }
    }
    if (w->co != NULL) {
        if (wt->t.when != INT64_MAX)
            timer_add(s, &wt->t);
        if (watch_worth(reason)) {
            atomic_store_explicit(&w->handoff, HANDOFF_WATCHING, memory_order_relaxed);
            watch_set(s, w);
        }
        coro_park(reason);
        if (s->watch == w)
            s->watch = NULL;
        timer_cancel(s, &wt->t);
    } else {
        thread_block(wt);
    }
    if (wt->reg.ctx != NULL)
        ctx_unregister(&wt->reg);
    return w->status;
}

/* ---- sleep, fds, children --------------------------------------------- */

int
coro_sleep(struct ctx *ctx, int64_t ns)
{
    struct wait wt;
    int rc;

    if (coro_self() == NULL)
        return -EPERM;
    if (ns <= 0) {
        coro_yield();
        return ctx ? ctx_err(ctx) : 0;
    }
    if ((rc = wait_begin(&wt, ctx, ns)) != 0)
        return rc;
    rc = wait_park(&wt, CORO_WAIT_SLEEP);
    return rc == RT_ETIMEDOUT ? 0 : rc;
}

static void
fd_ready_cb(evutil_socket_t fd, short what, void *arg)
{
    struct waiter *w = arg;
    int mask = ((what & EV_READ) ? CORO_READ : 0) | ((what & EV_WRITE) ? CORO_WRITE : 0);
    (void)fd;
    waiter_fire(w, mask, -1);
}

static int
wait_fd(int fd, int events, struct ctx *ctx, int64_t timeout_ns, enum coro_wait reason)
{
    struct sched *s = rt_tl_sched;
    struct wait wt;
    struct event ev;
    short what =
        (short)(((events & CORO_READ) ? EV_READ : 0) | ((events & CORO_WRITE) ? EV_WRITE : 0));
    int rc;

    if (s == NULL || s->current == NULL)
        return -EPERM;
    if (fd < 0 || what == 0)
        return -EINVAL;
    if (timeout_ns == 0) {
        struct pollfd p = {.fd = fd,
                           .events = (short)(((events & CORO_READ) ? POLLIN : 0) |
                                             ((events & CORO_WRITE) ? POLLOUT : 0))};
        if (poll(&p, 1, 0) <= 0)
            return RT_EAGAIN;
        return ((p.revents & (POLLIN | POLLHUP | POLLERR)) && (events & CORO_READ) ? CORO_READ
                                                                                   : 0) |
               ((p.revents & (POLLOUT | POLLERR)) && (events & CORO_WRITE) ? CORO_WRITE : 0);
    }
    if ((rc = wait_begin(&wt, ctx, timeout_ns)) != 0)
        return rc;
    /* epoll refuses some descriptors (EPERM: a regular file; EBADF) and
     * may run out of room (ENOMEM; ENOSPC: max_user_watches): the caller
     * gets its errno. Nothing is registered before the park, so there is
     * nothing to undo. */
    errno = 0;
    if (event_assign(&ev, s->base, fd, what, fd_ready_cb, &wt.w) < 0 || event_add(&ev, NULL) < 0)
        return errno > 0 ? -errno : -EINVAL;
    rc = wait_park(&wt, reason);
    event_del(&ev);
    return rc;
}

int
coro_wait_fd(int fd, int events, struct ctx *ctx, int64_t timeout_ns)
{
    return wait_fd(fd, events, ctx, timeout_ns, CORO_WAIT_FD);
}

int
coro_wait_pidfd(int pidfd, siginfo_t *info, struct ctx *ctx, int64_t timeout_ns)
{
    int rc;

    for (;;) {
        memset(info, 0, sizeof(*info));
        if (waitid((idtype_t)P_PIDFD, (id_t)pidfd, info, WEXITED | WNOHANG) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (info->si_pid != 0)
            return 0;
        rc = wait_fd(pidfd, CORO_READ, ctx, timeout_ns, CORO_WAIT_CHILD);
        if (rc < 0)
            return rc;
    }
}

/* ---- the scheduler loop ----------------------------------------------- */

static void
notify_cb(evutil_socket_t fd, short what, void *arg)
{
    uint64_t v;
    (void)what;
    (void)arg;
    while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
        ;
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    /* Due timers are fired by the loop right after the base returns. */
    (void)fd;
    (void)what;
    (void)arg;
}

/*
 * Busy-waits up to the adaptive budget for work from other threads: a
 * hand-off that lands meanwhile costs a cache-line transfer instead of an
 * eventfd write and a futex wake-up. Returns true if work arrived.
 *
 * The budget doubles when spinning paid and halves when it did not, within
 * SPIN_MIN_NS..JOBQ_SCHED_SPIN_NS. The ceiling must exceed the wake-up
 * latency of a sleeping thread: a thread that had to wake its partner then
 * spins while the partner wakes and answers, and so the two fall back into
 * spinning instead of waking each other with eventfd writes for good.
 */
static bool
spin_for_work(struct sched *s)
{
    struct waiter *w = s->watch;
    int64_t start = 0, budget = s->spin_ns;
    bool work = false, paid = false;

    /* The first iterations go without `pause` (~40 ns here): a hand-off
     * that is already on its way is seen as soon as it lands. */
    for (unsigned i = 1;; i++) {
        if ((w != NULL &&
             atomic_load_explicit(&w->handoff, memory_order_relaxed) == HANDOFF_TAKEN) ||
            atomic_load_explicit(&s->remote, memory_order_relaxed) != NULL) {
            work = paid = true;
            break;
        }
        if (atomic_load_explicit(&s->exit, memory_order_relaxed)) {
            work = true;
            break;
        }
        if (i > 64)
            rt_cpu_relax();
        if ((i & 31) == 0) {
            /* The budget runs from the first look at the clock: no clock
             * read (~16 ns) stands between parking and spinning. */
            int64_t now = s->now = rt_now_ns();
            if (start == 0)
                start = now;
            if ((s->nheap > 0 && s->heap[0].when <= now) || stack_prepare_wanted(s->rt)) {
                work = true;
                break;
            }
            if (now - start > budget)
                break;
        }
    }
    /* TAKEN is final: no compare-and-swap needed to act on it. The watch
     * stays on otherwise, until the thread sleeps (sleep_in_base). */
    if (w != NULL && atomic_load_explicit(&w->handoff, memory_order_acquire) == HANDOFF_TAKEN) {
        watch_taken(s);
        work = paid = true;
    }
    if (paid)
        s->spin_ns = budget * 2 > JOBQ_SCHED_SPIN_NS ? JOBQ_SCHED_SPIN_NS : budget * 2;
    else if (!work)
        s->spin_ns = budget / 2 < SPIN_MIN_NS ? SPIN_MIN_NS : budget / 2;
    return work;
}

static void
sleep_in_base(struct sched *s)
{
    /* A waker must push and notify while we sleep: stop watching. */
    if (s->watch != NULL && watch_release(s))
        return; /* taken meanwhile: run it */
    atomic_store(&s->sleeping, 1);
    /* A spawner that asks for stacks after this store sees us asleep and
     * wakes us; one that asked before is seen here. */
    if (atomic_load(&s->remote) != NULL || atomic_load_explicit(&s->exit, memory_order_relaxed) ||
        stack_prepare_wanted(s->rt)) {
        atomic_store(&s->sleeping, 0);
        return;
    }
    if (s->nheap > 0) {
        int64_t d = s->heap[0].when - rt_now_ns();
        struct timeval tv = {0, 0};
        if (d > 0) {
            tv.tv_sec = d / 1000000000;
            tv.tv_usec = (d % 1000000000 + 999) / 1000;
        }
        evtimer_add(s->timer_ev, &tv);
    } else {
        evtimer_del(s->timer_ev);
    }
    event_base_loop(s->base, EVLOOP_ONCE);
    atomic_store(&s->sleeping, 0);
    s->polled = rt_now_ns();
}

static void *
sched_main(void *arg)
{
    struct sched *s = arg;

    rt_tl_sched = s;
    {
        char name[16];
        snprintf(name, sizeof(name), "jobq-sched-%d", s->index);
        pthread_setname_np(pthread_self(), name);
    }
    stack_thread_init(s);
#if defined(JOBQ_TSAN)
    s->tsan_fiber = __tsan_get_current_fiber();
#endif
#if defined(JOBQ_ASAN)
    {
        pthread_attr_t attr;
        void *addr;
        size_t size;
        pthread_getattr_np(pthread_self(), &attr);
        pthread_attr_getstack(&attr, &addr, &size);
        pthread_attr_destroy(&attr);
        s->asan_stack_bottom = addr;
        s->asan_stack_size = size;
    }
#endif
    for (bool spun = false;;) {
        struct coro *c;

        stat_add(&s->activity, 1);
        if (atomic_load_explicit(&s->exit, memory_order_acquire))
            break;
        if (atomic_load_explicit(&s->remote, memory_order_relaxed) != NULL)
            remote_drain(s);
        if (s->watch != NULL &&
            atomic_load_explicit(&s->watch->handoff, memory_order_acquire) == HANDOFF_TAKEN)
            watch_taken(s);
        /* Right after a spin the clock it read is fresh enough: run what
         * it caught without reading it again. */
        if (spun || (s->nheap == 0 && --s->poll_countdown != 0)) {
            /* No timers, or a spin just read the clock: only the poll
             * needs the time, and every JOBQ_SCHED_POLL_EVERY passes is
             * often enough for it. */
            timers_run(s, s->now);
        } else {
            s->poll_countdown = JOBQ_SCHED_POLL_EVERY;
            s->now = rt_now_ns();
            timers_run(s, s->now);
            if (s->now - s->polled >= JOBQ_SCHED_POLL_NS) {
                /* A thread kept busy by its run queue, or by hand-offs it
                 * catches while spinning, never sleeps in epoll: let ready
                 * fds in without sleeping. */
                s->polled = s->now;
                event_base_loop(s->base, EVLOOP_NONBLOCK);
            }
        }
        spun = false;
        if ((c = rq_pop(s)) != NULL) {
            switch_to(s, NULL, c);
            continue;
        }
        if (stack_prepare(s->rt))
            continue;
        if ((spun = spin_for_work(s)))
            continue;
        sleep_in_base(s);
    }
    stack_thread_fini(s);
    return NULL;
}

/* ---- stats and life of the runtime ------------------------------------ */

static uint64_t
rd(atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

void
rt_stats(struct rt *rt, struct rt_stats *out)
{
    long live = 0;

    memset(out, 0, sizeof(*out));
    out->threads = rt->nthreads;
    for (int i = 0; i < rt->nthreads; i++) {
        struct sched *s = &rt->threads[i];
        out->spawned += rd(&s->st.spawned);
        for (int r = 0; r < CORO_WAIT_NREASONS; r++)
            out->parked[r] += rd(&s->st.parked[r]);
        out->running += rd(&s->st.running);
        live += sched_load(s);
    }
    /* Each thread's counters are read at a different instant. */
    out->live = live > 0 ? (uint64_t)live : 0;
    {
        /* Runnable is what is neither parked nor on a CPU: derived, so the
         * hot path keeps one counter fewer. */
        uint64_t parked = 0;
        for (int r = 0; r < CORO_WAIT_NREASONS; r++)
            parked += out->parked[r];
        out->runnable = out->live > parked + out->running ? out->live - parked - out->running : 0;
    }
    out->peak = (uint64_t)atomic_load(&rt->peak);
    stack_stats(rt, out);
    blocking_stats(rt->blocking, out);
}

static void
sched_fini(struct sched *s)
{
    if (s->notify_ev)
        event_free(s->notify_ev);
    if (s->timer_ev)
        event_free(s->timer_ev);
    if (s->base)
        event_base_free(s->base);
    if (s->notify_fd >= 0)
        close(s->notify_fd);
    free(s->heap_mem);
    while (s->rec_chunks != NULL) {
        struct rec_chunk *ch = s->rec_chunks;
        s->rec_chunks = ch->next;
        free(ch);
    }
}

static int
sched_init(struct rt *rt, struct sched *s, int index)
{
    struct event_config *cfg;

    s->rt = rt;
    s->index = index;
    s->notify_fd = -1;
    s->spin_ns = JOBQ_SCHED_SPIN_NS;
    s->poll_countdown = JOBQ_SCHED_POLL_EVERY;
    s->rnd = (uint64_t)rt_now_ns() * 0x9E3779B97F4A7C15ull + (uint64_t)index * 7919 + 1;
    if ((s->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        return -errno;
    /* A new base needs an epoll fd and a socketpair for signals, and
     * libevent exits the process when it cannot make the pair
     * (evsig_init_). Out of descriptors, the caller must get -EMFILE
     * instead: make sure three more can be opened first. Another thread
     * of the process could still take them in between; rt_new runs at
     * startup, when little else opens any. */
    {
        int probe[3], n = 0, err = 0;
        while (n < 3 && (probe[n] = fcntl(s->notify_fd, F_DUPFD_CLOEXEC, 0)) >= 0)
            n++;
        if (n < 3)
            err = errno;
        while (n > 0)
            close(probe[--n]);
        if (err != 0)
            return -err;
    }
    if ((cfg = event_config_new()) == NULL)
        return -ENOMEM;
    /* One thread per base: libevent's locks would only cost. epoll only:
     * when it fails, libevent would fall back to poll, whose setup exits
     * the process on the same shortage. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    event_config_avoid_method(cfg, "poll");
    event_config_avoid_method(cfg, "select");
    errno = 0;
    s->base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (s->base == NULL)
        return errno == EMFILE || errno == ENFILE ? -errno : -ENOMEM;
    s->notify_ev = event_new(s->base, s->notify_fd, EV_READ | EV_PERSIST, notify_cb, s);
    s->timer_ev = evtimer_new(s->base, timer_cb, s);
    if (s->notify_ev == NULL || s->timer_ev == NULL || event_add(s->notify_ev, NULL) < 0)
        return -ENOMEM;
    return 0;
}

int
rt_new(const struct rt_opts *opts, struct rt **out)
{
    struct rt_opts o = {0};
    struct rt *rt;
    long page = sysconf(_SC_PAGESIZE);
    int rc, started = 0;

    if (opts != NULL)
        o = *opts;
    if (o.threads < 0 || o.blocking_threads < 0 || o.threads > 1024)
        return -EINVAL;
    if (o.stack_bytes != 0 && o.stack_bytes < JOBQ_CORO_STACK_MIN_BYTES)
        return -EINVAL;
    if ((rt = calloc(1, sizeof(*rt))) == NULL)
        return -ENOMEM;
    rt->nthreads = o.threads ? o.threads : rt_cpu_count(NULL);
    rt->stack_bytes = o.stack_bytes ? o.stack_bytes : JOBQ_CORO_STACK_BYTES;
    rt->stack_bytes = (rt->stack_bytes + (size_t)page - 1) & ~((size_t)page - 1);
    rt->log = o.log;
    rt->log_arg = o.log_arg;
    rt->threads = aligned_alloc(64, sizeof(struct sched) * (size_t)rt->nthreads);
    if (rt->threads == NULL) {
        free(rt);
        return -ENOMEM;
    }
    memset(rt->threads, 0, sizeof(struct sched) * (size_t)rt->nthreads);
    for (int i = 0; i < rt->nthreads; i++)
        rt->threads[i].notify_fd = -1;
    if ((rc = stack_pool_new(rt, &rt->stacks)) < 0)
        goto fail;
    if ((rc = blocking_pool_new(rt, o.blocking_threads ? o.blocking_threads : JOBQ_BLOCKING_THREADS,
                                &rt->blocking)) < 0)
        goto fail;
    for (int i = 0; i < rt->nthreads; i++)
        if ((rc = sched_init(rt, &rt->threads[i], i)) < 0)
            goto fail;
    for (; started < rt->nthreads; started++) {
        if ((rc = -pthread_create(&rt->threads[started].thread, NULL, sched_main,
                                  &rt->threads[started])) < 0)
            goto fail;
    }
    *out = rt;
    return 0;
fail:
    for (int i = 0; i < started; i++) {
        atomic_store(&rt->threads[i].exit, true);
        notify(&rt->threads[i]);
        uint64_t one = 1;
        (void)!write(rt->threads[i].notify_fd, &one, sizeof(one));
        pthread_join(rt->threads[i].thread, NULL);
    }
    for (int i = 0; i < rt->nthreads; i++)
        sched_fini(&rt->threads[i]);
    blocking_pool_free(rt->blocking);
    stack_pool_free(rt->stacks);
    free(rt->threads);
    free(rt);
    return rc;
}

/* True once every thread sleeps with nothing queued and no loop iteration
 * happened between two looks: nothing runnable is left anywhere. */
static bool
quiescent(struct rt *rt, uint64_t *last)
{
    uint64_t act = 0;
    struct rt_stats bs = {0};
    bool idle = true;

    blocking_stats(rt->blocking, &bs);
    if (bs.blocking_queued || bs.blocking_running)
        idle = false;
    for (int i = 0; i < rt->nthreads; i++) {
        struct sched *s = &rt->threads[i];
        if (!atomic_load(&s->sleeping) || atomic_load(&s->remote) != NULL)
            idle = false;
        act += atomic_load_explicit(&s->activity, memory_order_relaxed);
    }
    if (idle && act == *last)
        return true;
    *last = idle ? act : UINT64_MAX;
    return false;
}

static void
report_leak(struct rt *rt, struct coro *c)
{
    rt_logf(rt, RT_LOG_ERROR, "leak: coroutine '%s' (id %llu) still %s on thread %d", c->name,
            (unsigned long long)c->id,
            c->state == CORO_PARKED ? coro_wait_name((enum coro_wait)c->wait) : "runnable",
            c->home->index);
    stack_unpoison(c);
}

int
rt_free(struct rt *rt)
{
    uint64_t last = UINT64_MAX;
    int leaks = 0;

    if (rt == NULL)
        return 0;
    atomic_store(&rt->stopping, true);
    while (!quiescent(rt, &last)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < rt->nthreads; i++) {
        struct sched *s = &rt->threads[i];
        uint64_t one = 1;
        atomic_store(&s->exit, true);
        while (write(s->notify_fd, &one, sizeof(one)) < 0 && errno == EINTR)
            ;
    }
    for (int i = 0; i < rt->nthreads; i++)
        pthread_join(rt->threads[i].thread, NULL);
    /* A waker from outside may still be finishing its notify(). */
    for (int i = 0; i < rt->nthreads; i++)
        while (atomic_load_explicit(&rt->threads[i].pushers, memory_order_acquire) != 0)
            sched_yield();
    leaks = stack_for_each_used(rt, report_leak);
    for (int i = 0; i < rt->nthreads; i++)
        sched_fini(&rt->threads[i]);
    blocking_pool_free(rt->blocking);
    stack_pool_free(rt->stacks);
    free(rt->threads);
    free(rt);
    return leaks;
}

const char *
coro_wait_name(enum coro_wait w)
{
    static const char *const names[CORO_WAIT_NREASONS] = {
        [CORO_WAIT_CHAN] = "chan", [CORO_WAIT_SLEEP] = "sleep",
        [CORO_WAIT_FD] = "fd",     [CORO_WAIT_CHILD] = "child",
        [CORO_WAIT_WG] = "wg",     [CORO_WAIT_MUTEX] = "mutex",
        [CORO_WAIT_COND] = "cond", [CORO_WAIT_BLOCKING] = "blocking",
        [CORO_WAIT_POOL] = "pool",
    };
    return (unsigned)w < CORO_WAIT_NREASONS ? names[w] : "unknown";
}

struct run_arg {
    void (*fn)(void *);
    void *arg;
    atomic_int done;
};

static void
run_main(void *p)
{
    struct run_arg *ra = p;
    ra->fn(ra->arg);
    atomic_store(&ra->done, 1);
    futex_wake_all(&ra->done);
}

int
rt_run(struct rt *rt, const char *name, void (*fn)(void *arg), void *arg)
{
    struct run_arg ra = {.fn = fn, .arg = arg};
    int rc;

    if (rt == NULL || fn == NULL)
        return -EINVAL;
    if (rt_tl_sched != NULL)
        return -EDEADLK; /* would block a scheduler thread */
    atomic_init(&ra.done, 0);
    if ((rc = coro_spawn(rt, name, run_main, &ra)) < 0)
        return rc;
    while (!atomic_load(&ra.done))
        futex_wait(&ra.done, 0, -1);
    return 0;
}
