/*
 * rt_int.h — the runtime's private structures, shared by its files
 * (sched.c, stack.c, chan.c, sync.c, ctx.c, blocking.c) and by nothing
 * else. The public contract is include/jobq/runtime.h.
 *
 * The central object is the waiter: every blocking call puts one on its
 * stack, registers it with whatever may end the wait (a channel queue, the
 * thread's timer heap, a context, an fd event) and parks. Whoever ends the
 * wait first claims the waiter with a compare-and-swap on `fired`; the
 * others see it claimed and leave it alone; the parked side, once resumed,
 * unregisters from the rest. This is how a select, a timeout and a
 * cancellation race without double wake-ups.
 */
#ifndef JOBQ_RT_INT_H
#define JOBQ_RT_INT_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "jobq/limits.h"
#include "jobq/runtime.h"

#if defined(__x86_64__)
#define rt_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define rt_cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define rt_cpu_relax() ((void)0)
#endif

#define RT_LIKELY(x) __builtin_expect(!!(x), 1)
#define RT_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- spin lock -------------------------------------------------------- */

/*
 * Guards the tiny critical sections of channels, wait groups and the like.
 * Unlock is a plain release store; a waiter that spins too long yields its
 * CPU so a preempted holder can finish. A futex lock would cost a second
 * atomic on every unlock, on the hottest path of the runtime.
 */
struct spin {
    atomic_int v;
};

static inline void
spin_lock(struct spin *s)
{
    for (;;) {
        if (!atomic_exchange_explicit(&s->v, 1, memory_order_acquire))
            return;
        for (int i = 0; atomic_load_explicit(&s->v, memory_order_relaxed); i++) {
            if (i < 128)
                rt_cpu_relax();
            else
                sched_yield();
        }
    }
}

static inline void
spin_unlock(struct spin *s)
{
    atomic_store_explicit(&s->v, 0, memory_order_release);
}

/* A counter only its owning thread writes: a load and a store, no locked
 * instruction; other threads may read it at any time. */
static inline __attribute__((always_inline)) void
own_add(atomic_long *c, long d)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

/* ---- waiters ---------------------------------------------------------- */

enum { WAITER_ARMED = 0, WAITER_CLAIMED = 1, WAITER_DONE = 2 };
/* The hand-over of a completed waiter its home thread watches (see
 * sched.c, "the watch"): NONE -> WATCHING (home, as the coroutine parks)
 * -> TAKEN (waker) or back to NONE (home lets it go). Whoever moves it
 * from WATCHING decides who makes the coroutine runnable. */
enum { HANDOFF_NONE = 0, HANDOFF_WATCHING = 1, HANDOFF_TAKEN = 2 };

struct waiter {
    struct coro *co;    /* NULL: a plain thread blocked on the futex */
    struct sched *home; /* co's thread: a waker need not read co's line */
    atomic_int fired;   /* WAITER_ARMED -> CLAIMED -> DONE */
    atomic_int handoff; /* HANDOFF_*, in the same line as fired */
    int status;         /* set by the claimer */
    int index;          /* select: the case that fired */
    /* Registered with one wake source only (no timer, no context, not a
     * select): that source claims under its own lock, so nobody races it. */
    bool solo;
};

/* The claim: true if the caller won the right to end this wait. */
static inline bool
waiter_claim(struct waiter *w)
{
    int expect = WAITER_ARMED;
    if (w->solo) {
        /* A plain store: a locked compare-and-swap costs ~6 ns, a third
         * of a same-thread channel hand-off, and no one else can claim. */
        atomic_store_explicit(&w->fired, WAITER_CLAIMED, memory_order_relaxed);
        return true;
    }
    return atomic_compare_exchange_strong_explicit(&w->fired, &expect, WAITER_CLAIMED,
                                                   memory_order_acq_rel, memory_order_acquire);
}

/* claim + waiter_complete (below); returns whether it fired. */
bool waiter_fire(struct waiter *w, int status, int index);

/*
 * Timers live in the home thread's heap; one per timed wait, in the wait's
 * frame. The heap holds a small record per armed timer (from a per-thread
 * pool), not the timer: a wait that ends some other way only unhooks its
 * record and leaves it to be dropped when it surfaces, and sifting moves
 * heap entries without writing into parked coroutines' stacks (a cache
 * and TLB miss per level, with a million timers).
 */
struct timer_rec;

struct timer {
    int64_t when; /* rt_now_ns clock */
    struct waiter *w;
    int status;            /* RT_ETIMEDOUT or RT_EDEADLINE */
    struct timer_rec *rec; /* NULL when not in the heap (fired, unhooked) */
};

struct timer_rec {
    struct timer *t; /* NULL once the wait ended otherwise: stale */
    struct timer_rec *next;
};

/* A heap entry carries its deadline: comparisons stay in the array. */
struct heap_ent {
    int64_t when;
    struct timer_rec *rec;
};

/* A registration of a waiter with a context (cancellation). */
struct ctx_reg {
    struct ctx *ctx;
    struct waiter *w;
    struct ctx_reg *prev, *next;
    bool linked; /* on ctx's list; changed under ctx's lock */
};

/*
 * The common frame of a blocking call: arm the waiter, register the timer
 * (the earlier of the call's timeout and the context's deadline) and the
 * context, park, then unregister. wait_begin returns 0 to park or a status
 * to return at once (the context is already done).
 */
struct wait {
    struct waiter w;
    struct timer t;
    struct ctx_reg reg;
};

/* ---- coroutines and threads ------------------------------------------ */

/* CORO_DEAD is 0: a stack whose shell reads zero (fresh, or released) is
 * free, which is how rt_free tells leaks from free stacks. */
enum coro_state { CORO_DEAD, CORO_RUNNABLE, CORO_RUNNING, CORO_PARKED };

struct sched;

/*
 * A coroutine lives at the top of its own stack, so spawning allocates
 * nothing else and a parked coroutine that touched 1 KiB of stack costs
 * one page.
 */
struct coro {
    void *sp; /* saved stack pointer while switched out */
    struct sched *home;
    struct coro *next;  /* local run queue / free list */
    struct coro *rnext; /* remote queue */
    void (*fn)(void *);
    void *arg;
    struct coro_pool *pool;
    char *lo; /* lowest usable stack byte */
    uint64_t id;
    uint8_t state;
    uint8_t wait;    /* enum coro_wait while parked */
    uint8_t guarded; /* a guard page sits below lo */
    uint8_t canary;  /* the low JOBQ_CORO_CANARY_BYTES hold the pattern */
    char name[JOBQ_CORO_NAME_BYTES];
#if defined(JOBQ_ASAN)
    void *asan_fake;
#endif
#if defined(JOBQ_TSAN)
    void *tsan_fiber;
#endif
};

struct stack_pool; /* stack.c */

/* Per-thread counters: written by the owner only (a load and a store, no
 * locked instruction), read by rt_stats and by spawners placing work. */
struct sched_stats {
    atomic_uint_fast64_t spawned;
    atomic_uint_fast64_t running; /* 1 while a coroutine is on the CPU */
    atomic_uint_fast64_t parked[CORO_WAIT_NREASONS];
    /* Coroutines placed here by this thread, and those that ended here:
     * with sched.placed_remote, the thread's load. */
    atomic_long placed_local;
    atomic_long exited;
    /* Stacks taken by spawns on this thread minus stacks freed here; one
     * thread's figure may be negative, the sum is what is in use. */
    atomic_long stacks_in_use;
};

struct sched {
    struct rt *rt;
    int index;
    pthread_t thread;
    struct event_base *base;
    int notify_fd;
    struct event *notify_ev;
    struct event *timer_ev;

    /* Local run queue: touched by this thread only. */
    struct coro *rq_head, *rq_tail;
    size_t rq_len;

    /* Remote queue: other threads push (Treiber stack); we take all. */
    _Alignas(64) _Atomic(struct coro *) remote;
    atomic_int sleeping;
    /* Wakers between their push and the end of their notify: rt_free
     * waits for none to be left before it frees this struct (a plain
     * thread such as the store's writer may still be inside notify()
     * after the coroutine it woke has finished and rt_run returned). */
    atomic_int pushers;
    /* Coroutines other threads placed here (spawn placement and live
     * count; see sched_stats.placed_local). */
    atomic_long placed_remote;

    _Alignas(64) struct coro *current; /* NULL while the scheduler runs */
    struct coro *dead;                 /* exited; its stack is freed after the switch */
    void *sched_sp;                    /* the scheduler's own context */
    unsigned poll_countdown;           /* switches until the next look at the clock */
    uint64_t rnd;
    int64_t spin_ns;          /* adaptive spin budget before sleeping */
    int64_t now;              /* clock at the top of the scheduler loop */
    int64_t polled;           /* when the event base was last polled */
    long peak_mark;           /* load at the last peak update (rt_stats.peak) */
    uint64_t id_next, id_end; /* coroutine ids reserved by this thread */

    struct waiter *watch; /* of the coroutine that parked last, until it runs */

    struct heap_ent *heap; /* 4-ary min-heap, offset so siblings share a line */
    void *heap_mem;
    size_t nheap, heap_cap;
    size_t nstale;              /* unhooked records still in the heap */
    struct timer_rec *rec_free; /* the record pool */
    struct rec_chunk *rec_chunks;

    struct coro *cache[2 * JOBQ_CORO_CACHE_STACKS]; /* free stacks, last freed on top */
    size_t ncache;

    atomic_uint_fast64_t activity; /* loop iterations (owner-written); rt_free's quiescence */
    atomic_bool exit;

    void *altstack; /* SIGSEGV runs here: the faulting stack is unusable */
#if defined(JOBQ_ASAN)
    const void *asan_stack_bottom;
    size_t asan_stack_size;
#endif
#if defined(JOBQ_TSAN)
    void *tsan_fiber;
#endif
    struct sched_stats st;
};

struct blocking_pool; /* blocking.c */

/* Coroutines placed on s and not yet ended: spawn placement, live count,
 * how many free stacks to keep. */
static inline long
sched_load(struct sched *s)
{
    return atomic_load_explicit(&s->st.placed_local, memory_order_relaxed) +
           atomic_load_explicit(&s->placed_remote, memory_order_relaxed) -
           atomic_load_explicit(&s->st.exited, memory_order_relaxed);
}

struct rt {
    int nthreads;
    size_t stack_bytes; /* usable, page multiple */
    struct sched *threads;
    struct stack_pool *stacks;
    struct blocking_pool *blocking;
    void (*log)(void *arg, enum rt_log_level level, const char *msg);
    void *log_arg;
    atomic_uint_fast64_t next_id; /* ids are handed to threads in blocks */
    atomic_long peak;
    atomic_bool stopping;
};

/* sched.c */
extern _Thread_local struct sched *rt_tl_sched;
void rt_logf(struct rt *rt, enum rt_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Parks the current coroutine; returns when coro_ready ran for it. */
void coro_park(enum coro_wait reason);
void timer_add(struct sched *s, struct timer *t);
/* Unhooks t if it has not fired (O(1)). */
void timer_cancel(struct sched *s, struct timer *t);
uint64_t rt_rand(void);
int coro_spawn_pool(struct rt *rt, int thread, const char *name, void (*fn)(void *), void *arg,
                    struct coro_pool *pool);
/* Wakes one sleeping scheduler thread other than self, if any: there is
 * work that any idle thread may do (stack_prepare). */
void sched_wake_idle(struct rt *rt, struct sched *self);

/* ---- hot paths, inline ----------------------------------------------- */

/* Every channel and wait-group hand-off goes through these: inline, with
 * the rare cases (another thread, a plain thread, a timer or a context)
 * out of line in sched.c. */

void remote_push(struct sched *s, struct coro *c);
void waiter_hand_over(struct waiter *w, struct coro *co);
void futex_wake_all(atomic_int *addr);
int wait_begin_slow(struct wait *wt, struct ctx *ctx, int64_t timeout_ns);
int wait_park_slow(struct wait *wt, enum coro_wait reason);

static inline void
rq_push_tail(struct sched *s, struct coro *c)
{
    c->next = NULL;
    if (s->rq_tail != NULL)
        s->rq_tail->next = c;
    else
        s->rq_head = c;
    s->rq_tail = c;
    s->rq_len++;
}

/* Makes c runnable on its home thread; safe from any thread. */
static inline void
coro_ready(struct coro *c)
{
    struct sched *home = c->home;

    if (home == rt_tl_sched) {
        c->state = CORO_RUNNABLE;
        rq_push_tail(home, c);
    } else {
        remote_push(home, c);
    }
}

/* After a successful claim: publish the result and make the owner run. */
static inline void
waiter_complete(struct waiter *w, int status, int index)
{
    struct coro *co = w->co;

    w->status = status;
    w->index = index;
    atomic_store_explicit(&w->fired, WAITER_DONE, memory_order_release);
    if (co == NULL) {
        futex_wake_all(&w->fired); /* harmless if the waiter already left */
    } else if (w->home == rt_tl_sched) {
        co->state = CORO_RUNNABLE;
        rq_push_tail(w->home, co);
        /* Completed here: no other thread can take it any more. */
        if (w->home->watch == w)
            w->home->watch = NULL;
    } else {
        waiter_hand_over(w, co);
    }
}

bool watch_release(struct sched *s);

/* Makes w, whose coroutine is parking, the one this thread watches, and
 * lets the one watched before go. w->handoff must be WATCHING already. */
static inline void
watch_set(struct sched *s, struct waiter *w)
{
    if (RT_UNLIKELY(s->watch != NULL) && s->watch != w)
        watch_release(s);
    s->watch = w;
}

/* Whether a wait is worth watching: its waker is usually another thread.
 * Sleeps, fds and children are ended by this thread's own timers and
 * event base; watching them would only cost a compare-and-swap when the
 * next coroutine parks (1M sleepers: ~1% of the timers benchmark). */
static inline bool
watch_worth(enum coro_wait reason)
{
    return reason != CORO_WAIT_SLEEP && reason != CORO_WAIT_FD && reason != CORO_WAIT_CHILD;
}

/* Arms wt for a wait: its timer is the earlier of timeout_ns (RT_FOREVER:
 * none) and the context's deadline. Returns 0 to park, or the context's
 * status if it is already done. */
static inline int
wait_begin(struct wait *wt, struct ctx *ctx, int64_t timeout_ns)
{
    struct sched *s = rt_tl_sched;

    if (ctx != NULL || timeout_ns >= 0)
        return wait_begin_slow(wt, ctx, timeout_ns);
    wt->w.co = s ? s->current : NULL;
    wt->w.home = s;
    atomic_init(&wt->w.fired, WAITER_ARMED);
    atomic_init(&wt->w.handoff, HANDOFF_NONE);
    wt->w.status = 0;
    wt->w.index = -1;
    wt->w.solo = true;
    wt->t.rec = NULL;
    wt->t.w = &wt->w;
    wt->t.when = INT64_MAX;
    wt->t.status = RT_ETIMEDOUT;
    wt->reg.ctx = NULL;
    wt->reg.linked = false;
    return 0;
}

/* Parks (coroutine) or blocks (plain thread) until the waiter fires;
 * returns its status after removing the timer and the context
 * registration. */
static inline int
wait_park(struct wait *wt, enum coro_wait reason)
{
    struct sched *s = rt_tl_sched;

    if (wt->reg.ctx == NULL && wt->t.when == INT64_MAX && wt->w.co != NULL) {
        if (watch_worth(reason)) {
            /* No waker can have taken it yet: TAKEN needs WATCHING first. */
            atomic_store_explicit(&wt->w.handoff, HANDOFF_WATCHING, memory_order_relaxed);
            watch_set(s, &wt->w);
        }
        coro_park(reason);
        if (s->watch == &wt->w)
            s->watch = NULL;
        return wt->w.status;
    }
    return wait_park_slow(wt, reason);
}

/* stack.c */
int stack_pool_new(struct rt *rt, struct stack_pool **out);
void stack_pool_free(struct stack_pool *p);
struct coro *stack_get_slow(struct rt *rt, struct sched *s);
void stack_put_slow(struct rt *rt, struct sched *s);
/* A spawner asked for free stacks to be prepared (stack_prepare). */
bool stack_prepare_wanted(struct rt *rt);
bool stack_prepare(struct rt *rt);
#if defined(JOBQ_ASAN)
void stack_unpoison(struct coro *c);
#else
static inline void
stack_unpoison(struct coro *c)
{
    (void)c;
}
#endif
void stack_check_canary(struct coro *c);
/* Calls fn for every coroutine whose stack is still in use: the leak
 * report. Only once the scheduler threads have stopped. */
int stack_for_each_used(struct rt *rt, void (*fn)(struct rt *rt, struct coro *c));
void stack_overflow_abort(struct coro *c, const char *how) __attribute__((noreturn));

/* Room left below the lowest frame at a switch: a signal-free leaf call. */
#define STACK_SP_MARGIN 256
#define STACK_CANARY 0x6a6f62712d637a79ull /* "jobq-czy" */

/* Returns a coroutine shell at the top of a free stack, or NULL (-ENOMEM).
 * s is the calling scheduler thread, NULL on a plain thread. The thread's
 * own cache serves almost every spawn without a call or a lock. */
static inline struct coro *
stack_get(struct rt *rt, struct sched *s)
{
    if (s == NULL || s->ncache == 0)
        return stack_get_slow(rt, s);
    own_add(&s->st.stacks_in_use, 1);
    return s->cache[--s->ncache];
}

/* Returns c's stack to thread s's cache (s: c's home, the caller). */
static inline void
stack_put(struct rt *rt, struct sched *s, struct coro *c)
{
    stack_unpoison(c);
    own_add(&s->st.stacks_in_use, -1);
    if (RT_UNLIKELY(s->ncache == 2 * JOBQ_CORO_CACHE_STACKS))
        stack_put_slow(rt, s);
    s->cache[s->ncache++] = c;
}

/* At every switch away from c: the stack pointer must still be inside the
 * stack, and a stack without a guard page keeps its canary. */
static inline void
stack_check(struct coro *c, void *sp)
{
    if (RT_UNLIKELY((char *)sp < c->lo + STACK_SP_MARGIN))
        stack_overflow_abort(c, "stack pointer below the limit at a switch");
    if (RT_UNLIKELY(c->canary))
        stack_check_canary(c);
}
void stack_stats(struct rt *rt, struct rt_stats *out);
int stack_thread_init(struct sched *s);
void stack_thread_fini(struct sched *s);

/* sync.c: the pool's exit hook. */
void coro_pool_release(struct coro_pool *p);

/* ctx.c */
bool ctx_register(struct ctx *c, struct ctx_reg *reg, struct waiter *w);
void ctx_unregister(struct ctx_reg *reg);

/* blocking.c */
int blocking_pool_new(struct rt *rt, int threads, struct blocking_pool **out);
void blocking_pool_free(struct blocking_pool *p);
void blocking_stats(struct blocking_pool *p, struct rt_stats *out);

/* The assembly switch (switch_<arch>.S). */
void rt_ctx_switch(void **save_sp, void *load_sp);
/* Saves the current context in *save_sp and calls entry(arg) on the stack
 * that ends at stack_top (16-byte aligned); entry returns the stack
 * pointer of the context to resume once the coroutine is over. */
void rt_ctx_start(void **save_sp, void *stack_top, void *(*entry)(void *), void *arg);
void rt_ctx_trampoline(void);

#endif
