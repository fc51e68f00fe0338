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

/* ---- waiters ---------------------------------------------------------- */

enum { WAITER_ARMED = 0, WAITER_CLAIMED = 1, WAITER_DONE = 2 };

struct waiter {
    struct coro *co;  /* NULL: a plain thread blocked on the futex */
    atomic_int fired; /* WAITER_ARMED -> CLAIMED -> DONE */
    int status;       /* set by the claimer */
    int index;        /* select: the case that fired */
};

/* The claim: true if the caller won the right to end this wait. */
static inline bool
waiter_claim(struct waiter *w)
{
    int expect = WAITER_ARMED;
    return atomic_compare_exchange_strong_explicit(&w->fired, &expect, WAITER_CLAIMED,
                                                   memory_order_acq_rel, memory_order_acquire);
}

/* After a successful claim: publish the result and make the owner run. */
void waiter_complete(struct waiter *w, int status, int index);
/* claim + complete; returns whether it fired. */
bool waiter_fire(struct waiter *w, int status, int index);

/* Timers live in the home thread's heap; one per timed wait. */
struct timer {
    int64_t when; /* rt_now_ns clock */
    size_t slot;  /* heap index, SIZE_MAX when not queued */
    struct waiter *w;
    int status; /* RT_ETIMEDOUT or RT_EDEADLINE */
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

int wait_begin(struct wait *wt, struct ctx *ctx, int64_t timeout_ns);
/* Parks (coroutine) or blocks (plain thread) until w fires; returns its
 * status after removing the timer and the context registration. */
int wait_park(struct wait *wt, enum coro_wait reason);

/* ---- coroutines and threads ------------------------------------------ */

enum coro_state { CORO_RUNNABLE, CORO_RUNNING, CORO_PARKED, CORO_DEAD };

struct sched;

/*
 * A coroutine lives at the top of its own stack, so spawning allocates
 * nothing else and a parked coroutine that touched 1 KiB of stack costs
 * one page.
 */
struct coro {
    void *sp; /* saved stack pointer while switched out */
    struct sched *home;
    struct coro *next;          /* local run queue / free list */
    struct coro *rnext;         /* remote queue */
    struct coro *lprev, *lnext; /* the home thread's live list */
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

/* Per-thread counters: written by the owner only, read by rt_stats. */
struct sched_stats {
    atomic_uint_fast64_t spawned;
    atomic_uint_fast64_t live;
    atomic_uint_fast64_t running; /* 1 while a coroutine is on the CPU */
    atomic_uint_fast64_t parked[CORO_WAIT_NREASONS];
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
    /* Live coroutines assigned here, for spawn placement; spawners add,
     * exits subtract. */
    atomic_long load;

    _Alignas(64) struct coro *current; /* NULL while the scheduler runs */
    struct coro *dead;                 /* exited; its stack is freed after the switch */
    void *sched_sp;                    /* the scheduler's own context */
    unsigned ticks;
    uint64_t rnd;
    int64_t spin_ns;
    int64_t now; /* cached clock, refreshed each scheduler pass */

    struct timer **heap;
    size_t nheap, heap_cap;

    struct coro *live_head; /* leak report */
    struct coro *cache;     /* free stacks */
    size_t ncache;

    _Atomic uint64_t activity; /* loop iterations; rt_free's quiescence check */
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

struct rt {
    int nthreads;
    size_t stack_bytes; /* usable, page multiple */
    struct sched *threads;
    struct stack_pool *stacks;
    struct blocking_pool *blocking;
    void (*log)(void *arg, enum rt_log_level level, const char *msg);
    void *log_arg;
    atomic_uint_fast64_t next_id;
    atomic_long live;
    atomic_long peak;
    atomic_bool stopping;
};

/* sched.c */
extern _Thread_local struct sched *rt_tl_sched;
void rt_logf(struct rt *rt, enum rt_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Makes c runnable on its home thread; safe from any thread. */
void coro_ready(struct coro *c);
/* Parks the current coroutine; returns when coro_ready ran for it. */
void coro_park(enum coro_wait reason);
void timer_add(struct sched *s, struct timer *t);
void timer_del(struct sched *s, struct timer *t);
uint64_t rt_rand(void);
int coro_spawn_pool(struct rt *rt, int thread, const char *name, void (*fn)(void *), void *arg,
                    struct coro_pool *pool);

/* stack.c */
int stack_pool_new(struct rt *rt, struct stack_pool **out);
void stack_pool_free(struct stack_pool *p);
/* Returns a coroutine shell at the top of a free stack, or NULL (-ENOMEM). */
struct coro *stack_get(struct rt *rt, struct sched *s);
void stack_put(struct rt *rt, struct sched *s, struct coro *c);
void stack_check(struct coro *c, void *sp);
void stack_unpoison(struct coro *c);
void stack_stats(struct stack_pool *p, struct rt_stats *out);
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
void rt_ctx_trampoline(void);

#endif
