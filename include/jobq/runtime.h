/*
 * runtime — Go's concurrency model in C: stackful coroutines multiplexed over
 * a fixed set of scheduler threads, with channels, select, wait groups,
 * mutexes, conditions, contexts (deadline, cancel) and a blocking pool.
 *
 * Each scheduler thread owns a libevent base, a run queue and a timer heap.
 * A coroutine stays on the thread it started on for its whole life, so
 * thread-local state and errno are safe across parks and every libevent
 * event is touched by one thread only (bases are created without locks).
 * Other threads wake a coroutine by pushing it onto its home thread's
 * remote queue and, only if that thread is asleep in the event loop,
 * writing the thread's notify eventfd. An idle runtime makes no wake-ups.
 *
 * Status codes: every fallible call returns 0 (or a count) on success and a
 * negative errno on failure. The blocking calls share these statuses:
 *   RT_ETIMEDOUT  the call's own timeout elapsed
 *   RT_ECANCELED  the context was canceled
 *   RT_EDEADLINE  the context's deadline passed
 *   RT_ECLOSED    the channel is closed
 *   RT_EAGAIN     would block (timeout 0, or a full pool with CORO_NOWAIT)
 * Timeouts are in nanoseconds: RT_FOREVER waits without limit, 0 polls.
 *
 * Blocking calls (chan_*, wg_wait, coro_mutex_lock, coro_cond_wait,
 * coro_pool_spawn) may also be made from a thread that is not a scheduler
 * thread (main(), a writer thread): that thread blocks on a futex instead
 * of parking. coro_sleep, coro_wait_fd, coro_wait_pidfd and rt_blocking
 * need a coroutine and return -EPERM elsewhere.
 */
#ifndef JOBQ_RUNTIME_H
#define JOBQ_RUNTIME_H

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#define RT_ETIMEDOUT (-ETIMEDOUT)
#define RT_ECANCELED (-ECANCELED)
#define RT_EDEADLINE (-ETIME)
#define RT_ECLOSED (-EPIPE)
#define RT_EAGAIN (-EAGAIN)

#define RT_FOREVER ((int64_t)-1)

struct rt;
struct coro;
struct coro_pool;
struct ctx;
struct chan;
struct wg;
struct coro_mutex;
struct coro_cond;
struct event_base;

/* ---- runtime ---------------------------------------------------------- */

enum rt_log_level { RT_LOG_ERROR, RT_LOG_WARN, RT_LOG_INFO, RT_LOG_DEBUG };

struct rt_opts {
    /* Scheduler threads; 0 means rt_cpu_count(). */
    int threads;
    /* Usable stack per coroutine; 0 means JOBQ_CORO_STACK_BYTES. Rounded up
     * to whole pages. */
    size_t stack_bytes;
    /* Helper threads of the blocking pool; 0 means JOBQ_BLOCKING_THREADS. */
    int blocking_threads;
    /* Receives the runtime's own reports (leaks at rt_free, guard budget
     * exhausted). NULL means one line per report on stderr. */
    void (*log)(void *arg, enum rt_log_level level, const char *msg);
    void *log_arg;
};

/* Starts the scheduler and blocking-pool threads. Returns owned *out
 * (rt_free). Borrows opts (NULL for defaults). */
int rt_new(const struct rt_opts *opts, struct rt **out);
/*
 * NULL-safe. Lets runnable coroutines finish, then stops every thread.
 * Coroutines still parked are leaks: each is reported by name and wait
 * reason through opts->log, and its stack is released without running it
 * further. Returns the number of leaked coroutines (tests assert 0).
 * Must not be called from a coroutine of rt.
 */
int rt_free(struct rt *rt);

/* Spawns fn(arg) as a coroutine named name and blocks the calling OS thread
 * (which must not be a scheduler thread) until fn returns. The usual main. */
int rt_run(struct rt *rt, const char *name, void (*fn)(void *arg), void *arg);

/* CPUs this process may use: sched_getaffinity, capped by the cgroup v2
 * cpu.max quota (rounded up) when one is set. cgroup_root NULL means
 * "/sys/fs/cgroup"; tests point it at a fake tree. Always >= 1. */
int rt_cpu_count(const char *cgroup_root);

int rt_threads(const struct rt *rt);

/* Monotonic clock, nanoseconds. */
int64_t rt_now_ns(void);

/* Returns borrowed base of scheduler thread i (valid until rt_free). Use it
 * only from a coroutine running on thread i (coro_spawn_on). */
struct event_base *rt_event_base(struct rt *rt, int thread);

/* ---- coroutines ------------------------------------------------------- */

/* Why a coroutine is parked; rt_stats counts each. */
enum coro_wait {
    CORO_WAIT_CHAN,     /* channel send/recv/select */
    CORO_WAIT_SLEEP,    /* coro_sleep */
    CORO_WAIT_FD,       /* coro_wait_fd */
    CORO_WAIT_CHILD,    /* coro_wait_pidfd */
    CORO_WAIT_WG,       /* wg_wait */
    CORO_WAIT_MUTEX,    /* coro_mutex_lock */
    CORO_WAIT_COND,     /* coro_cond_wait */
    CORO_WAIT_BLOCKING, /* rt_blocking */
    CORO_WAIT_POOL,     /* coro_pool_spawn backpressure */
    CORO_WAIT_NREASONS
};

/* Returns a static string ("chan", "sleep", ...). */
const char *coro_wait_name(enum coro_wait w);

/*
 * Spawns fn(arg) on the least-loaded scheduler thread (the caller's own
 * thread unless another has clearly fewer live coroutines). When the new
 * coroutine lands on the caller's thread it runs at once and the caller
 * resumes when it first parks or ends: treat spawn as a yield point.
 * name is copied (truncated to JOBQ_CORO_NAME_BYTES - 1) and shows in
 * stats, leak reports and crash messages. Borrows name; arg belongs to fn.
 * Returns -EINVAL for a NULL fn, -ENOMEM when no stack can be mapped,
 * -ESHUTDOWN once rt_free has begun.
 */
int coro_spawn(struct rt *rt, const char *name, void (*fn)(void *arg), void *arg);
/* As coro_spawn, on scheduler thread `thread` (0 <= thread < threads). */
int coro_spawn_on(struct rt *rt, int thread, const char *name, void (*fn)(void *arg), void *arg);

/* Returns borrowed current coroutine, or NULL on a non-coroutine thread. */
struct coro *coro_self(void);
/* Returns borrowed name, valid while c lives. */
const char *coro_name(const struct coro *c);
uint64_t coro_id(const struct coro *c);
/* The runtime the current coroutine belongs to, or NULL. */
struct rt *coro_rt(void);
/* Index of the scheduler thread the current coroutine runs on, or -1. */
int coro_thread(void);

/* Lets every other runnable coroutine on this thread run once. */
void coro_yield(void);

/* Parks for ns nanoseconds (ns <= 0 yields). Returns 0 when the time is up,
 * or the context's status if it ends first. */
int coro_sleep(struct ctx *ctx, int64_t ns);

#define CORO_READ 0x1
#define CORO_WRITE 0x2
/* Parks until fd is ready for the given events. Returns the ready mask
 * (> 0), RT_ETIMEDOUT, the context's status, or epoll's -errno for an fd
 * it cannot watch (-EPERM: a regular file; -EBADF; -ENOMEM; -ENOSPC).
 * fd stays the caller's. */
int coro_wait_fd(int fd, int events, struct ctx *ctx, int64_t timeout_ns);

/* Parks until the child behind pidfd exits, then reaps it with waitid and
 * fills *info (si_code CLD_EXITED/CLD_KILLED/CLD_DUMPED, si_status). On
 * RT_ETIMEDOUT or a context status the child is left unreaped: kill it and
 * call again. pidfd stays the caller's. */
int coro_wait_pidfd(int pidfd, siginfo_t *info, struct ctx *ctx, int64_t timeout_ns);

/* ---- bounded pools ---------------------------------------------------- */

#define CORO_NOWAIT 0x1

/* At most limit coroutines spawned through the pool are alive at once.
 * Returns owned *out (coro_pool_free). Borrows kind (copied). */
int coro_pool_new(struct rt *rt, const char *kind, unsigned limit, struct coro_pool **out);
/* NULL-safe. The pool must be empty (coro_pool_drain first). */
void coro_pool_free(struct coro_pool *p);
/* Spawns fn(arg) through the pool. When the pool is full: with CORO_NOWAIT
 * returns RT_EAGAIN at once, else parks until a slot frees (or the
 * context ends). */
int coro_pool_spawn(struct coro_pool *p, struct ctx *ctx, int flags, const char *name,
                    void (*fn)(void *arg), void *arg);
/* Raising the limit admits waiting spawners; lowering it lets the excess
 * finish. */
void coro_pool_set_limit(struct coro_pool *p, unsigned limit);
unsigned coro_pool_active(const struct coro_pool *p);
unsigned coro_pool_limit(const struct coro_pool *p);
/* Parks until no coroutine of the pool is alive (or the context ends). */
int coro_pool_drain(struct coro_pool *p, struct ctx *ctx, int64_t timeout_ns);

/* ---- contexts --------------------------------------------------------- */

/*
 * A context carries cancellation and a deadline down a tree of work. A
 * child is done when its parent is. Contexts are reference counted:
 * ctx_free drops the caller's reference (children keep their parent
 * alive). All functions are safe from any thread.
 */

/* A cancelable child of parent (NULL: a root). Returns owned *out
 * (ctx_free). */
int ctx_new(struct ctx *parent, struct ctx **out);
/* A child whose deadline is the earlier of deadline_ns (rt_now_ns clock)
 * and its parent's. Returns owned *out (ctx_free). */
int ctx_with_deadline(struct ctx *parent, int64_t deadline_ns, struct ctx **out);
/* As ctx_with_deadline(parent, rt_now_ns() + timeout_ns). */
int ctx_with_timeout(struct ctx *parent, int64_t timeout_ns, struct ctx **out);
/* Cancels c and every descendant, waking whatever is parked on them.
 * Idempotent. */
void ctx_cancel(struct ctx *c);
/* NULL-safe. Cancels c (so its children see it) and drops a reference. */
void ctx_free(struct ctx *c);
/* 0 while live, RT_ECANCELED or RT_EDEADLINE once done. NULL: 0. */
int ctx_err(const struct ctx *c);
/* Effective deadline (rt_now_ns clock), INT64_MAX if none. */
int64_t ctx_deadline(const struct ctx *c);

/* ---- channels --------------------------------------------------------- */

/* Elements are copied in and out by value (elem_size bytes). capacity 0
 * makes an unbuffered channel: a send completes when a receiver takes it.
 * Returns owned *out (chan_free). */
int chan_new(size_t elem_size, size_t capacity, struct chan **out);
/* NULL-safe. Nobody may be parked on ch. A party just woken by a send, a
 * receive or a close may not have run yet: chan_free then waits for it
 * (it runs on another thread) or leaves the freeing to it (it runs on
 * this one), so freeing right after such a call is fine. A party left
 * parked in violation keeps the channel's memory (its thread may be
 * spinning on it); rt_free's leak report names that party. */
void chan_free(struct chan *ch);
/* Borrows elem. RT_ECLOSED if ch is closed (before or while waiting). */
int chan_send(struct chan *ch, const void *elem, struct ctx *ctx, int64_t timeout_ns);
/* Fills elem (may be NULL to discard). RT_ECLOSED once ch is closed and
 * drained. */
int chan_recv(struct chan *ch, void *elem, struct ctx *ctx, int64_t timeout_ns);
/* Wakes every parked receiver (RT_ECLOSED) and sender (RT_ECLOSED);
 * buffered elements can still be received. Idempotent. */
void chan_close(struct chan *ch);
size_t chan_len(struct chan *ch);

enum chan_op { CHAN_SEND, CHAN_RECV };
struct chan_case {
    struct chan *ch; /* NULL: the case is skipped */
    enum chan_op op;
    void *elem; /* send: borrowed source; recv: destination or NULL */
    int status; /* out: 0, or RT_ECLOSED for the chosen case */
};
/*
 * Waits until one case can proceed, performs it and returns its index.
 * Among several ready cases one is chosen at random (fair). timeout_ns 0
 * is Go's default case: returns RT_EAGAIN when none is ready. Otherwise
 * RT_ETIMEDOUT or the context's status.
 */
int chan_select(struct chan_case *cases, int n, struct ctx *ctx, int64_t timeout_ns);

/* ---- wait groups, mutexes, conditions ---------------------------------- */

/* Returns owned *out (wg_free). */
int wg_new(struct wg **out);
/* NULL-safe. Nobody may be waiting. */
void wg_free(struct wg *wg);
void wg_add(struct wg *wg, int n);
/* Safe from any thread. */
void wg_done(struct wg *wg);
/* Parks until the counter is zero. */
int wg_wait(struct wg *wg, struct ctx *ctx, int64_t timeout_ns);

/* A mutex that parks the coroutine instead of blocking its thread. Hand-off
 * on unlock keeps it fair (FIFO). Returns owned *out (coro_mutex_free). */
int coro_mutex_new(struct coro_mutex **out);
void coro_mutex_free(struct coro_mutex *m);
int coro_mutex_lock(struct coro_mutex *m, struct ctx *ctx);
/* RT_EAGAIN if held. */
int coro_mutex_trylock(struct coro_mutex *m);
void coro_mutex_unlock(struct coro_mutex *m);

/* Returns owned *out (coro_cond_free). */
int coro_cond_new(struct coro_cond **out);
void coro_cond_free(struct coro_cond *c);
/* Unlocks m, parks until signaled, relocks m (also on error returns). */
int coro_cond_wait(struct coro_cond *c, struct coro_mutex *m, struct ctx *ctx, int64_t timeout_ns);
void coro_cond_signal(struct coro_cond *c);
void coro_cond_broadcast(struct coro_cond *c);

/* ---- batched wake-ups ------------------------------------------------- */

/*
 * Between rt_wake_batch_begin() and rt_wake_batch_end(), the wake-ups this
 * thread makes for coroutines of other threads (wg_done, chan_send, ...)
 * are held and handed over at the end: one push and at most one eventfd
 * write per target thread, however many coroutines it gets. A thread that
 * finishes a batch of requests for many coroutines (the store's writer
 * after a group commit) wakes each scheduler thread once, with all its
 * work, instead of waking it for the first coroutine and again after it
 * went back to sleep. The calls nest. Nothing may block between them: the
 * held coroutines would wait as long. For plain threads: on a scheduler
 * thread both calls do nothing.
 */
void rt_wake_batch_begin(void);
void rt_wake_batch_end(void);

/* ---- blocking pool ---------------------------------------------------- */

/*
 * Runs fn(arg) on a helper thread while the calling coroutine parks, and
 * returns fn's result. If the context ends before a helper picks the call
 * up, fn never runs and the context's status is returned; once fn has
 * started it runs to completion (it may use the caller's stack) and its
 * result is returned.
 */
int rt_blocking(struct ctx *ctx, int (*fn)(void *arg), void *arg);

/* ---- accounting ------------------------------------------------------- */

struct rt_stats {
    int threads;
    uint64_t spawned;                    /* since rt_new */
    uint64_t live;                       /* alive now */
    uint64_t peak;                       /* most alive at once */
    uint64_t runnable;                   /* in a run queue */
    uint64_t running;                    /* on a CPU now */
    uint64_t parked[CORO_WAIT_NREASONS]; /* by reason */
    uint64_t stack_bytes_mapped;         /* stacks in use + pooled, virtual */
    uint64_t stack_bytes_in_use;         /* stacks of live coroutines */
    uint64_t stacks_guarded;             /* stacks with a guard page */
    uint64_t stacks_canary_only;         /* stacks checked by canary alone */
    uint64_t blocking_queued;            /* rt_blocking calls waiting */
    uint64_t blocking_running;           /* rt_blocking calls executing */
};
/* A racy but consistent-enough snapshot (each counter read once). */
void rt_stats(struct rt *rt, struct rt_stats *out);

/*
 * Hands the memory of the free stacks kept resident beyond keep back to
 * the kernel (MADV_DONTNEED: they stay mapped, and fault in again when
 * reused). The pool keeps up to JOBQ_CORO_POOL_KEEP free stacks with
 * every page they ever touched, so that a load that comes back spawns
 * without faults; a server calls this once a burst of clients has
 * drained (2000 connections left 5-10 MiB of stacks resident). The stacks
 * each scheduler thread caches (JOBQ_CORO_CACHE_STACKS) are not touched.
 * Any thread.
 */
void rt_trim(struct rt *rt, size_t keep);

#endif
