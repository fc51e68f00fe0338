/*
 * The coroutine runtime, one behaviour per test: spawning, yielding,
 * sleeping, fd and child waits, channels and select, wait groups, mutexes,
 * conditions, contexts (cancel, deadline, propagation) in every kind of
 * wait, bounded pools, the blocking pool, accounting, leak reports, stack
 * overflow detection, and stress across 2..8 threads. Every test ends with
 * rt_free reporting zero leaks.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "check.h"

#include "jobq/limits.h"
#include "jobq/runtime.h"

static inline bool
check_on_test_stack(void)
{
    return coro_self() == NULL && pthread_equal(pthread_self(), check_test_thread);
}

#define MS (1000 * 1000LL)

static char logbuf[8192];
static size_t loglen;

static void
capture_log(void *arg, enum rt_log_level level, const char *msg)
{
    (void)arg;
    (void)level;
    loglen += (size_t)snprintf(logbuf + loglen, sizeof(logbuf) - loglen, "%s\n", msg);
    if (loglen >= sizeof(logbuf))
        loglen = sizeof(logbuf) - 1;
}

static struct rt *
mkrt(int threads)
{
    struct rt_opts o = {.threads = threads, .log = capture_log};
    struct rt *rt = NULL;
    loglen = 0;
    logbuf[0] = '\0';
    assert_int_equal(rt_new(&o, &rt), 0);
    return rt;
}

static void
done(struct rt *rt)
{
    int leaks = rt_free(rt);
    if (leaks != 0)
        fprintf(stderr, "%s", logbuf);
    assert_int_equal(leaks, 0);
}

/* ---- spawn, yield, join ------------------------------------------------ */

struct counter {
    atomic_int n;
    struct wg *wg;
};

static void
incr(void *p)
{
    struct counter *c = p;
    atomic_fetch_add(&c->n, 1);
    wg_done(c->wg);
}

struct spawn_many {
    struct rt *rt;
    int n;
    struct counter c;
};

static void
spawn_many_main(void *p)
{
    struct spawn_many *s = p;
    assert_int_equal(wg_new(&s->c.wg), 0);
    for (int i = 0; i < s->n; i++) {
        wg_add(s->c.wg, 1);
        assert_int_equal(coro_spawn(s->rt, "incr", incr, &s->c), 0);
    }
    assert_int_equal(wg_wait(s->c.wg, NULL, RT_FOREVER), 0);
    wg_free(s->c.wg);
}

static void
test_spawn_100k_and_join(void **state)
{
    struct spawn_many s = {.n = 100000};
    s.rt = mkrt(2);
    assert_int_equal(rt_run(s.rt, "main", spawn_many_main, &s), 0);
    assert_int_equal(atomic_load(&s.c.n), 100000);
    struct rt_stats st;
    rt_stats(s.rt, &st);
    assert_true(st.spawned >= 100001);
    done(s.rt);
}

/* Spawns coroutines that stay parked until spawning fails; then the
 * runtime must still work. Runs in a child whose address space is capped. */
struct exhaust {
    struct rt *rt;
    struct chan *hold;
    struct wg *wg;
    long spawned;
    int rc, after;
};

static void
exhaust_hog(void *p)
{
    struct exhaust *e = p;
    chan_recv(e->hold, NULL, NULL, RT_FOREVER);
    wg_done(e->wg);
}

static void
exhaust_main(void *p)
{
    struct exhaust *e = p;
    struct counter c = {0};

    for (;;) {
        wg_add(e->wg, 1);
        if ((e->rc = coro_spawn(e->rt, "hog", exhaust_hog, e)) < 0) {
            wg_done(e->wg);
            break;
        }
        e->spawned++;
    }
    chan_close(e->hold);
    wg_wait(e->wg, NULL, RT_FOREVER);
    /* The stacks are free again: spawning works. */
    if (wg_new(&c.wg) == 0) {
        wg_add(c.wg, 1);
        e->after = coro_spawn(e->rt, "incr", incr, &c);
        if (e->after == 0)
            wg_wait(c.wg, NULL, RT_FOREVER);
        wg_free(c.wg);
    }
}

static long
vm_size_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmSize: %ld kB", &kib) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return kib * 1024;
}

static void
test_spawn_returns_enomem_when_memory_runs_out(void **state)
{
    pid_t pid;
    int status;

    if (getenv("JOBQ_SANITIZER") != NULL || getenv("JOBQ_EMULATED") != NULL) {
        /* The sanitizers reserve terabytes of shadow, and under qemu-user
         * the limit binds the emulator's own allocations. */
        skip();
    }
    fflush(NULL);
    assert_true((pid = fork()) >= 0);
    if (pid == 0) {
        struct exhaust e = {0};
        struct rt_opts o = {.threads = 2, .log = capture_log};
        struct rlimit rl;
        int leaks;

        if (rt_new(&o, &e.rt) != 0 || chan_new(1, 0, &e.hold) != 0 || wg_new(&e.wg) != 0)
            _exit(10);
        /* Room for a few thousand stacks beyond what is mapped now. */
        rl.rlim_cur = rl.rlim_max = (rlim_t)vm_size_bytes() + 256 * 1024 * 1024;
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            _exit(11);
        if (rt_run(e.rt, "main", exhaust_main, &e) != 0)
            _exit(12);
        leaks = rt_free(e.rt);
        fprintf(stderr, "spawned %ld, then %d; after: %d; leaks %d\n", e.spawned, e.rc, e.after,
                leaks);
        /* Most of the room went to stacks: a spawner near the limit maps
         * what is left slab by slab. */
        _exit(e.rc == -ENOMEM &&
                      e.spawned >=
                          3 * (256L << 20) / 4 / (JOBQ_CORO_STACK_BYTES + JOBQ_CORO_GUARD_BYTES) &&
                      e.after == 0 && leaks == 0
                  ? 0
                  : 13);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void
noop(void *p)
{
    (void)p;
}

/* The lowest limit under which exactly `spare` more descriptors can be
 * opened. RLIMIT_NOFILE bounds descriptor numbers, not their count, and
 * an inherited descriptor can leave gaps below the highest one. */
static int
limit_for_spare(int spare)
{
    for (int fd = 0;; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF && spare-- == 0)
            return fd;
    }
}

/* Short of file descriptors, rt_new fails with -EMFILE (libevent, left to
 * itself, exits the process) and closes what it opened, wherever the
 * shortage hits; given enough, it works. In a child: the limit is the
 * process's. Each count is taken under the old limit, since reading
 * /proc/self/fd needs a descriptor too. */
static void
test_rt_new_returns_status_when_fds_run_out(void **state)
{
    pid_t pid;
    int status;

    fflush(NULL);
    assert_true((pid = fork()) >= 0);
    if (pid == 0) {
        struct rt_opts o = {.threads = 2, .log = capture_log};
        struct rlimit old, rl;
        int before, failed = 0;

        if (getrlimit(RLIMIT_NOFILE, &old) != 0 || (before = check_open_fds()) < 0)
            _exit(10);
        for (int extra = 0; extra < 64; extra++) {
            struct rt *rt = NULL;
            int rc;
            rl = old;
            rl.rlim_cur = (rlim_t)limit_for_spare(extra);
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
                _exit(11);
            rc = rt_new(&o, &rt);
            if (setrlimit(RLIMIT_NOFILE, &old) != 0)
                _exit(11);
            if (rc == 0) {
                /* It works, and only after failing cleanly at least once. */
                int ok = rt_run(rt, "noop", noop, NULL) == 0;
                if (rt_free(rt) != 0 || !ok || failed == 0 || check_open_fds() != before)
                    _exit(12);
                _exit(0);
            }
            if (rc != -EMFILE) {
                fprintf(stderr, "rt_new with %d fds to spare: %d\n", extra, rc);
                _exit(13);
            }
            if (check_open_fds() != before)
                _exit(14); /* a failed rt_new left something open */
            failed++;
        }
        _exit(15);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void
test_spawn_rejects_bad_arguments(void **state)
{
    struct rt *rt = mkrt(1);
    struct rt_opts bad = {.stack_bytes = 100};
    struct rt *x;
    assert_int_equal(coro_spawn(rt, "x", NULL, NULL), -EINVAL);
    assert_int_equal(coro_spawn(NULL, "x", incr, NULL), -EINVAL);
    assert_int_equal(coro_spawn_on(rt, 5, "x", incr, NULL), -EINVAL);
    assert_int_equal(rt_new(&bad, &x), -EINVAL);
    bad = (struct rt_opts){.threads = -1};
    assert_int_equal(rt_new(&bad, &x), -EINVAL);
    done(rt);
}

struct order {
    int log[16];
    int n;
    struct wg *wg;
};

static void
yielder(void *p)
{
    struct order *o = p;
    for (int i = 0; i < 3; i++) {
        o->log[o->n++] = (int)coro_id(coro_self());
        coro_yield();
    }
    wg_done(o->wg);
}

static void
yield_main(void *p)
{
    struct order *o = p;
    struct rt *rt = coro_rt();
    wg_new(&o->wg);
    wg_add(o->wg, 2);
    coro_spawn_on(rt, 0, "a", yielder, o);
    coro_spawn_on(rt, 0, "b", yielder, o);
    wg_wait(o->wg, NULL, RT_FOREVER);
    wg_free(o->wg);
}

static void
test_yield_alternates_on_one_thread(void **state)
{
    struct order o = {0};
    struct rt *rt = mkrt(1);
    rt_run(rt, "main", yield_main, &o);
    assert_int_equal(o.n, 6);
    /* a runs first (spawn runs the child at once), then they alternate. */
    for (int i = 2; i < 6; i++)
        assert_int_equal(o.log[i], o.log[i - 2]);
    assert_int_not_equal(o.log[0], o.log[1]);
    done(rt);
}

/* The rounding mode of the FPU and SSE units (x86-64: MXCSR and the x87
 * control word; aarch64: FPCR), which the switch saves per coroutine. */
static unsigned
fp_rounding(void)
{
#if defined(__x86_64__)
    unsigned mxcsr;
    unsigned short cw;
    __asm__ __volatile__("stmxcsr %0" : "=m"(mxcsr));
    __asm__ __volatile__("fnstcw %0" : "=m"(cw));
    return (mxcsr & 0x6000) | ((unsigned)(cw & 0x0C00) << 16);
#elif defined(__aarch64__)
    uint64_t fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    return (unsigned)(fpcr >> 22) & 3;
#else
    return 0;
#endif
}

static void
fp_round_up(bool up)
{
#if defined(__x86_64__)
    unsigned mxcsr;
    unsigned short cw;
    __asm__ __volatile__("stmxcsr %0" : "=m"(mxcsr));
    __asm__ __volatile__("fnstcw %0" : "=m"(cw));
    mxcsr = (mxcsr & ~0x6000u) | (up ? 0x4000u : 0);
    cw = (unsigned short)((cw & ~0x0C00u) | (up ? 0x0800u : 0));
    __asm__ __volatile__("ldmxcsr %0" : : "m"(mxcsr));
    __asm__ __volatile__("fldcw %0" : : "m"(cw));
#elif defined(__aarch64__)
    uint64_t fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    fpcr = (fpcr & ~(3ull << 22)) | (up ? 1ull << 22 : 0);
    __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr));
#else
    (void)up;
#endif
}

struct fpcheck {
    unsigned dflt;
    struct wg *wg;
};

static void
fp_changer(void *p)
{
    struct fpcheck *f = p;
    fp_round_up(true);
    unsigned mine = fp_rounding();
    assert_int_not_equal(mine, f->dflt);
    coro_yield(); /* the other coroutine runs with the default mode */
    assert_int_equal(fp_rounding(), mine);
    fp_round_up(false);
    wg_done(f->wg);
}

static void
fp_keeper(void *p)
{
    struct fpcheck *f = p;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fp_rounding(), f->dflt);
        coro_yield();
    }
    wg_done(f->wg);
}

static void
fp_main(void *p)
{
    struct fpcheck *f = p;
    wg_new(&f->wg);
    wg_add(f->wg, 2);
    coro_spawn_on(coro_rt(), 0, "changer", fp_changer, f);
    coro_spawn_on(coro_rt(), 0, "keeper", fp_keeper, f);
    wg_wait(f->wg, NULL, RT_FOREVER);
    wg_free(f->wg);
}

static void
test_fp_control_words_stay_with_their_coroutine(void **state)
{
    struct fpcheck f = {.dflt = fp_rounding()};
    struct rt *rt = mkrt(1);
    rt_run(rt, "main", fp_main, &f);
    done(rt);
}

static void
name_check(void *p)
{
    assert_string_equal(coro_name(coro_self()), "a-rather-long-name-that-gets-cu");
    assert_int_equal(coro_thread(), 1);
    wg_done(p);
}

static void
name_main(void *p)
{
    struct wg *wg;
    (void)p;
    wg_new(&wg);
    wg_add(wg, 1);
    coro_spawn_on(coro_rt(), 1, "a-rather-long-name-that-gets-cut-here", name_check, wg);
    wg_wait(wg, NULL, RT_FOREVER);
    wg_free(wg);
}

static void
test_spawn_on_pins_thread_and_names(void **state)
{
    struct rt *rt = mkrt(2);
    rt_run(rt, "main", name_main, NULL);
    done(rt);
}

/* ---- sleep, fd, child ------------------------------------------------- */

static void
sleep_main(void *p)
{
    int64_t t0 = rt_now_ns();
    assert_int_equal(coro_sleep(NULL, 20 * MS), 0);
    *(int64_t *)p = rt_now_ns() - t0;
}

static void
test_sleep_waits_at_least(void **state)
{
    int64_t took = 0;
    struct rt *rt = mkrt(1);
    rt_run(rt, "main", sleep_main, &took);
    assert_true(took >= 20 * MS);
    done(rt);
}

struct sleeper {
    struct wg *wg;
    int64_t ns;
};

static void
sleeper(void *p)
{
    struct sleeper *s = p;
    coro_sleep(NULL, s->ns);
    wg_done(s->wg);
}

static void
many_sleepers_main(void *p)
{
    struct sleeper sl[300];
    struct wg *wg;
    (void)p;
    wg_new(&wg);
    for (int i = 0; i < 300; i++) {
        sl[i].wg = wg;
        sl[i].ns = (int64_t)((i * 7919) % 300) * 100000; /* 0..30ms, shuffled */
        wg_add(wg, 1);
        coro_spawn(coro_rt(), "sleeper", sleeper, &sl[i]);
    }
    assert_int_equal(wg_wait(wg, NULL, 5000 * MS), 0);
    wg_free(wg);
}

static void
test_timer_heap_fires_all_in_any_order(void **state)
{
    struct rt *rt = mkrt(2);
    rt_run(rt, "main", many_sleepers_main, NULL);
    done(rt);
}

static void
fd_main(void *p)
{
    int fds[2];
    char c;
    (void)p;
    assert_int_equal(pipe2(fds, O_NONBLOCK), 0);
    assert_int_equal(coro_wait_fd(fds[0], CORO_READ, NULL, 10 * MS), RT_ETIMEDOUT);
    assert_int_equal(coro_wait_fd(fds[0], CORO_READ, NULL, 0), RT_EAGAIN);
    assert_int_equal(coro_wait_fd(fds[1], CORO_WRITE, NULL, RT_FOREVER), CORO_WRITE);
    assert_int_equal(write(fds[1], "x", 1), 1);
    assert_int_equal(coro_wait_fd(fds[0], CORO_READ, NULL, RT_FOREVER), CORO_READ);
    assert_int_equal(read(fds[0], &c, 1), 1);
    close(fds[0]);
    close(fds[1]);
}

static void
test_wait_fd_readable_writable_timeout(void **state)
{
    struct rt *rt = mkrt(1);
    rt_run(rt, "main", fd_main, NULL);
    done(rt);
}

/* Overwrites a stretch of the stack below the caller's frame, where a
 * returned call's frame was. */
static __attribute__((noinline)) void
scribble_stack(void)
{
    volatile unsigned char junk[2048];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = 0xa5;
}

/* An fd epoll refuses (a regular file, a closed descriptor) fails with
 * epoll's error, and the failed wait leaves nothing behind: a timer or a
 * context registration made before the refusal would point into the
 * returned frame. */
static void
fd_refused_main(void *p)
{
    struct ctx *ctx;
    FILE *f = tmpfile();
    int64_t t0;
    int closed;
    (void)p;
    assert_non_null(f);
    assert_int_equal(ctx_new(NULL, &ctx), 0);
    assert_int_equal(coro_wait_fd(fileno(f), CORO_READ, ctx, 5 * MS), -EPERM);
    assert_true((closed = dup(fileno(f))) >= 0);
    close(closed);
    assert_int_equal(coro_wait_fd(closed, CORO_WRITE, ctx, 5 * MS), -EBADF);
    scribble_stack();
    /* A timer left in the heap would fire meanwhile, into the scribbles
     * or into this sleep's frame (ending it early), and a registration
     * left on ctx would be woken by the cancel. */
    t0 = rt_now_ns();
    assert_int_equal(coro_sleep(NULL, 20 * MS), 0);
    assert_true(rt_now_ns() - t0 >= 20 * MS);
    ctx_cancel(ctx);
    assert_int_equal(coro_sleep(NULL, 1 * MS), 0);
    ctx_free(ctx);
    fclose(f);
}

static void
test_wait_fd_refused_returns_errno_and_leaves_nothing(void **state)
{
    struct rt *rt = mkrt(1);
    rt_run(rt, "main", fd_refused_main, NULL);
    done(rt);
}

struct pipe_pair {
    int rd, wr;
    struct wg *wg;
};

static void
pipe_writer(void *p)
{
    struct pipe_pair *pp = p;
    coro_sleep(NULL, 5 * MS);
    assert_int_equal(write(pp->wr, "y", 1), 1);
    wg_done(pp->wg);
}

static void
fd_cross_main(void *p)
{
    struct pipe_pair pp;
    int fds[2];
    char c;
    (void)p;
    pipe2(fds, O_NONBLOCK);
    pp.rd = fds[0];
    pp.wr = fds[1];
    wg_new(&pp.wg);
    wg_add(pp.wg, 1);
    coro_spawn_on(coro_rt(), 1, "writer", pipe_writer, &pp);
    assert_int_equal(coro_wait_fd(pp.rd, CORO_READ, NULL, 2000 * MS), CORO_READ);
    assert_int_equal(read(pp.rd, &c, 1), 1);
    wg_wait(pp.wg, NULL, RT_FOREVER);
    wg_free(pp.wg);
    close(fds[0]);
    close(fds[1]);
}

static void
test_wait_fd_woken_by_other_thread(void **state)
{
    struct rt *rt = mkrt(2);
    rt_run(rt, "main", fd_cross_main, NULL);
    done(rt);
}

/* A thread whose run queue never empties never sleeps in epoll: it must
 * still poll its event base, or an fd wait on it would starve. */
struct busy {
    int fds[2];
    atomic_bool woke;
    bool saw_wake; /* the yielder stopped because the reader woke */
    struct wg *wg;
};

static void
busy_yielder(void *p)
{
    struct busy *b = p;
    int64_t end = rt_now_ns() + 5000 * MS;
    while (!atomic_load(&b->woke) && rt_now_ns() < end)
        coro_yield();
    b->saw_wake = atomic_load(&b->woke);
    wg_done(b->wg);
}

static void
busy_reader(void *p)
{
    struct busy *b = p;
    assert_int_equal(coro_wait_fd(b->fds[0], CORO_READ, NULL, RT_FOREVER), CORO_READ);
    atomic_store(&b->woke, true);
    wg_done(b->wg);
}

static void
busy_main(void *p)
{
    struct busy *b = p;
    wg_new(&b->wg);
    wg_add(b->wg, 2);
    coro_spawn(coro_rt(), "reader", busy_reader, b);
    coro_spawn(coro_rt(), "yielder", busy_yielder, b);
    wg_wait(b->wg, NULL, RT_FOREVER);
    wg_free(b->wg);
}

static void *
busy_writer(void *p)
{
    struct busy *b = p;
    usleep(20000);
    assert_int_equal(write(b->fds[1], "x", 1), 1);
    return NULL;
}

static void
test_busy_thread_still_polls_fds(void **state)
{
    struct busy b = {0};
    struct rt *rt = mkrt(1);
    pthread_t th;
    assert_int_equal(pipe2(b.fds, O_NONBLOCK), 0);
    pthread_create(&th, NULL, busy_writer, &b);
    rt_run(rt, "main", busy_main, &b);
    pthread_join(th, NULL);
    assert_true(b.saw_wake);
    close(b.fds[0]);
    close(b.fds[1]);
    done(rt);
}

static int
spawn_child(const char *cmd, pid_t *pid)
{
    *pid = fork();
    if (*pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return (int)syscall(SYS_pidfd_open, *pid, 0);
}

static void
child_main(void *p)
{
    pid_t pid;
    siginfo_t si;
    int fd = spawn_child("exit 7", &pid);
    (void)p;
    assert_true(fd >= 0);
    assert_int_equal(coro_wait_pidfd(fd, &si, NULL, 5000 * MS), 0);
    assert_int_equal(si.si_code, CLD_EXITED);
    assert_int_equal(si.si_status, 7);
    close(fd);

    fd = spawn_child("sleep 10", &pid);
    assert_int_equal(coro_wait_pidfd(fd, &si, NULL, 20 * MS), RT_ETIMEDOUT);
    kill(pid, SIGKILL);
    assert_int_equal(coro_wait_pidfd(fd, &si, NULL, 5000 * MS), 0);
    assert_int_equal(si.si_code, CLD_KILLED);
    assert_int_equal(si.si_status, SIGKILL);
    close(fd);
}

static void
test_wait_pidfd_exit_status_and_timeout(void **state)
{
    struct rt *rt = mkrt(1);
    rt_run(rt, "main", child_main, NULL);
    done(rt);
}

static void
test_coroutine_only_calls_refuse_plain_threads(void **state)
{
    siginfo_t si;
    (void)state;
    assert_int_equal(coro_sleep(NULL, 1), -EPERM);
    assert_int_equal(coro_wait_fd(0, CORO_READ, NULL, 0), -EPERM);
    assert_int_equal(coro_wait_pidfd(-1, &si, NULL, 0) < 0, 1);
    assert_int_equal(rt_blocking(NULL, NULL, NULL), -EPERM);
}

/* ---- channels --------------------------------------------------------- */

struct pp {
    struct chan *ping, *pong;
    int rounds;
    struct wg *wg;
};

static void
ponger(void *p)
{
    struct pp *x = p;
    int v;
    for (int i = 0; i < x->rounds; i++) {
        assert_int_equal(chan_recv(x->ping, &v, NULL, RT_FOREVER), 0);
        v++;
        assert_int_equal(chan_send(x->pong, &v, NULL, RT_FOREVER), 0);
    }
    wg_done(x->wg);
}

static void
pingpong(int threads)
{
    struct pp x = {.rounds = 20000};
    struct rt *rt = mkrt(threads);
    struct wg *wg;
    int v = 0;
    chan_new(sizeof(int), 0, &x.ping);
    chan_new(sizeof(int), 0, &x.pong);
    wg_new(&wg);
    x.wg = wg;
    wg_add(wg, 1);
    coro_spawn_on(rt, threads - 1, "ponger", ponger, &x);
    /* The main thread is not a coroutine: it blocks on the futex path. */
    for (int i = 0; i < x.rounds; i++) {
        assert_int_equal(chan_send(x.ping, &v, NULL, RT_FOREVER), 0);
        assert_int_equal(chan_recv(x.pong, &v, NULL, RT_FOREVER), 0);
    }
    assert_int_equal(v, x.rounds);
    wg_wait(wg, NULL, RT_FOREVER);
    wg_free(wg);
    chan_free(x.ping);
    chan_free(x.pong);
    done(rt);
}

static void
test_unbuffered_pingpong_from_plain_thread(void **state)
{
    pingpong(1);
    pingpong(2);
}

struct pp2 {
    struct pp x;
    int threads;
};

static void
pingpong_coro_main(void *p)
{
    struct pp *x = p;
    int v = 0;
    for (int i = 0; i < x->rounds; i++) {
        chan_send(x->ping, &v, NULL, RT_FOREVER);
        chan_recv(x->pong, &v, NULL, RT_FOREVER);
    }
    assert_int_equal(v, x->rounds);
    wg_wait(x->wg, NULL, RT_FOREVER);
}

static void
test_unbuffered_pingpong_between_coroutines_across_threads(void **state)
{
    struct pp x = {.rounds = 20000};
    struct rt *rt = mkrt(2);
    chan_new(sizeof(int), 0, &x.ping);
    chan_new(sizeof(int), 0, &x.pong);
    wg_new(&x.wg);
    wg_add(x.wg, 1);
    coro_spawn_on(rt, 1, "ponger", ponger, &x);
    /* rt_run's coroutine lands on thread 0 (least loaded). */
    rt_run(rt, "main", pingpong_coro_main, &x);
    wg_free(x.wg);
    chan_free(x.ping);
    chan_free(x.pong);
    done(rt);
}

/* Wake-ups made between rt_wake_batch_begin and the outermost
 * rt_wake_batch_end reach nobody before the end, and then each thread runs
 * its coroutines in the order they were woken. */
#define WB_N 8

struct wb {
    struct wg *wg[WB_N], *all;
    atomic_int woke;
    int order[2][WB_N], norder[2]; /* per thread, touched by that thread only */
};

struct wb_arg {
    struct wb *b;
    int i;
};

static void
wb_waiter(void *p)
{
    struct wb_arg *a = p;
    struct wb *b = a->b;
    int t = coro_thread();

    assert_int_equal(wg_wait(b->wg[a->i], NULL, RT_FOREVER), 0);
    atomic_fetch_add(&b->woke, 1);
    b->order[t][b->norder[t]++] = a->i;
    wg_done(b->all);
}

static void
test_wake_batch_holds_wakeups_until_the_end(void **state)
{
    struct wb b = {0};
    struct wb_arg args[WB_N];
    struct rt_stats st;
    struct rt *rt = mkrt(2);
    struct timespec pause = {0, 20 * MS};

    wg_new(&b.all);
    wg_add(b.all, WB_N);
    for (int i = 0; i < WB_N; i++) {
        wg_new(&b.wg[i]);
        wg_add(b.wg[i], 1);
        args[i] = (struct wb_arg){&b, i};
        assert_int_equal(coro_spawn_on(rt, i % 2, "wb", wb_waiter, &args[i]), 0);
    }
    do { /* every waiter parked: a wg_done before its wait would not wake it */
        nanosleep(&(struct timespec){0, 1000000}, NULL);
        rt_stats(rt, &st);
    } while (st.parked[CORO_WAIT_WG] < WB_N);

    rt_wake_batch_begin();
    rt_wake_batch_begin();
    for (int i = WB_N - 1; i >= 0; i--) /* reverse: the order must survive */
        wg_done(b.wg[i]);
    rt_wake_batch_end(); /* the inner end hands nothing over */
    nanosleep(&pause, NULL);
    assert_int_equal(atomic_load(&b.woke), 0);
    rt_stats(rt, &st);
    assert_int_equal(st.parked[CORO_WAIT_WG], WB_N);
    rt_wake_batch_end();
    assert_int_equal(wg_wait(b.all, NULL, 5000 * MS), 0);
    assert_int_equal(atomic_load(&b.woke), WB_N);
    for (int t = 0; t < 2; t++) {
        assert_int_equal(b.norder[t], WB_N / 2);
        for (int k = 0; k < WB_N / 2; k++) /* thread 0: 6, 4, 2, 0; thread 1: 7, 5, 3, 1 */
            assert_int_equal(b.order[t][k], WB_N - 2 + t - 2 * k);
    }
    rt_wake_batch_end(); /* unbalanced: ignored */
    for (int i = 0; i < WB_N; i++)
        wg_free(b.wg[i]);
    wg_free(b.all);
    done(rt);
}

/* On a scheduler thread the batch calls do nothing: a coroutine that
 * parks between them still gets its answer. */
struct wb_sched {
    struct wg *ask, *answer;
};

static void
wb_answerer(void *p)
{
    struct wb_sched *x = p;
    wg_wait(x->ask, NULL, RT_FOREVER);
    wg_done(x->answer);
}

static void
wb_sched_main(void *p)
{
    struct wb_sched *x = p;

    rt_wake_batch_begin();
    wg_done(x->ask); /* the answerer is on the other thread */
    assert_int_equal(wg_wait(x->answer, NULL, 5000 * MS), 0);
    rt_wake_batch_end();
}

static void
test_wake_batch_does_nothing_on_scheduler_threads(void **state)
{
    struct wb_sched x;
    struct rt *rt = mkrt(2);

    wg_new(&x.ask);
    wg_new(&x.answer);
    wg_add(x.ask, 1);
    wg_add(x.answer, 1);
    coro_spawn_on(rt, 1, "answerer", wb_answerer, &x);
    rt_run(rt, "main", wb_sched_main, &x); /* thread 0 (least loaded) */
    wg_free(x.ask);
    wg_free(x.answer);
    done(rt);
}

static void
buffered_main(void *p)
{
    struct chan *ch;
    int v;
    (void)p;
    chan_new(sizeof(int), 3, &ch);
    for (int i = 0; i < 3; i++)
        assert_int_equal(chan_send(ch, &i, NULL, 0), 0);
    assert_int_equal(chan_send(ch, &v, NULL, 0), RT_EAGAIN);
    assert_int_equal(chan_send(ch, &v, NULL, 5 * MS), RT_ETIMEDOUT);
    assert_int_equal(chan_len(ch), 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(chan_recv(ch, &v, NULL, 0), 0);
        assert_int_equal(v, i); /* FIFO */
    }
    assert_int_equal(chan_recv(ch, &v, NULL, 0), RT_EAGAIN);
    chan_free(ch);
}

static void
test_buffered_channel_fifo_full_empty(void **state)
{
    struct rt *rt = mkrt(1);
    rt_run(rt, "main", buffered_main, NULL);
    done(rt);
}

struct closer {
    struct chan *ch;
    struct wg *wg;
    int got;
};

static void
blocked_receiver(void *p)
{
    struct closer *c = p;
    int v = 42;
    c->got = chan_recv(c->ch, &v, NULL, RT_FOREVER);
    assert_int_equal(v, 0); /* zeroed on close */
    wg_done(c->wg);
}

static void
close_main(void *p)
{
    struct closer c = {0};
    int v = 5;
    (void)p;
    chan_new(sizeof(int), 2, &c.ch);
    wg_new(&c.wg);
    wg_add(c.wg, 1);
    coro_spawn(coro_rt(), "rx", blocked_receiver, &c);
    coro_sleep(NULL, 2 * MS);
    chan_close(c.ch);
    chan_close(c.ch); /* idempotent */
    wg_wait(c.wg, NULL, RT_FOREVER);
    assert_int_equal(c.got, RT_ECLOSED);
    assert_int_equal(chan_send(c.ch, &v, NULL, RT_FOREVER), RT_ECLOSED);
    wg_free(c.wg);
    chan_free(c.ch);

    /* Buffered elements survive close. */
    chan_new(sizeof(int), 2, &c.ch);
    chan_send(c.ch, &v, NULL, 0);
    chan_close(c.ch);
    assert_int_equal(chan_recv(c.ch, &v, NULL, 0), 0);
    assert_int_equal(v, 5);
    assert_int_equal(chan_recv(c.ch, &v, NULL, 0), RT_ECLOSED);
    chan_free(c.ch);
}

static void
test_close_wakes_receivers_and_keeps_buffer(void **state)
{
    struct rt *rt = mkrt(2);
    rt_run(rt, "main", close_main, NULL);
    done(rt);
}

struct mpmc {
    struct chan *ch;
    struct wg *wg;
    atomic_llong sum;
    int per;
};

static void
producer(void *p)
{
    struct mpmc *m = p;
    for (int i = 1; i <= m->per; i++)
        assert_int_equal(chan_send(m->ch, &i, NULL, RT_FOREVER), 0);
    wg_done(m->wg);
}

static void
consumer(void *p)
{
    struct mpmc *m = p;
    int v;
    while (chan_recv(m->ch, &v, NULL, RT_FOREVER) == 0)
        atomic_fetch_add(&m->sum, v);
    wg_done(m->wg);
}

static void
mpmc_run(int threads, size_t cap)
{
    struct mpmc m = {.per = 5000};
    struct rt *rt = mkrt(threads);
    struct wg *cw;
    chan_new(sizeof(int), cap, &m.ch);
    wg_new(&m.wg);
    wg_new(&cw);
    struct mpmc c = m;
    c.wg = cw;
    atomic_init(&c.sum, 0);
    for (int i = 0; i < 8; i++) {
        wg_add(cw, 1);
        coro_spawn_on(rt, i % threads, "consumer", consumer, &c);
    }
    for (int i = 0; i < 8; i++) {
        wg_add(m.wg, 1);
        coro_spawn_on(rt, (i + 1) % threads, "producer", producer, &m);
    }
    wg_wait(m.wg, NULL, RT_FOREVER);
    chan_close(m.ch);
    wg_wait(cw, NULL, RT_FOREVER);
    assert_int_equal(atomic_load(&c.sum), 8LL * m.per * (m.per + 1) / 2);
    wg_free(m.wg);
    wg_free(cw);
    chan_free(m.ch);
    done(rt);
}

static void
test_cross_thread_channels_under_contention(void **state)
{
    for (int t = 2; t <= 8; t *= 2) {
        mpmc_run(t, 0);
        mpmc_run(t, 16);
    }
}

/* ---- select ----------------------------------------------------------- */

static void
select_fair_main(void *p)
{
    struct chan *a, *b;
    int v = 1, hits[2] = {0, 0};
    (void)p;
    chan_new(sizeof(int), 1, &a);
    chan_new(sizeof(int), 1, &b);
    for (int i = 0; i < 10000; i++) {
        chan_send(a, &v, NULL, 0);
        chan_send(b, &v, NULL, 0);
        struct chan_case cs[2] = {{a, CHAN_RECV, &v, 0}, {b, CHAN_RECV, &v, 0}};
        int k = chan_select(cs, 2, NULL, RT_FOREVER);
        assert_true(k == 0 || k == 1);
        hits[k == 0 ? 0 : 1]++;
        /* drain the other */
        chan_recv(k == 0 ? b : a, &v, NULL, 0);
    }
    /* Both ready every time: each must win roughly half. */
    assert_true(hits[0] > 4000 && hits[1] > 4000);
    chan_free(a);
    chan_free(b);
}

static void
test_select_is_fair_between_ready_cases(void **state)
{
    struct rt *rt = mkrt(1);
    rt_run(rt, "main", select_fair_main, NULL);
    done(rt);
}

struct sel {
    struct chan *a, *b;
    struct wg *wg;
};

static void
late_sender(void *p)
{
    struct sel *s = p;
    int v = 77;
    coro_sleep(NULL, 3 * MS);
    chan_send(s->b, &v, NULL, RT_FOREVER);
    wg_done(s->wg);
}

static void
select_wait_main(void *p)
{
    struct sel s;
    int va = 0, vb = 0, out = 9;
    (void)p;
    chan_new(sizeof(int), 0, &s.a);
    chan_new(sizeof(int), 0, &s.b);
    wg_new(&s.wg);

    struct chan_case cs[3] = {
        {s.a, CHAN_RECV, &va, 0}, {s.b, CHAN_RECV, &vb, 0}, {NULL, CHAN_SEND, &out, 0}};
    /* Default case: nothing ready. */
    assert_int_equal(chan_select(cs, 3, NULL, 0), RT_EAGAIN);
    /* Timeout. */
    assert_int_equal(chan_select(cs, 3, NULL, 5 * MS), RT_ETIMEDOUT);
    /* A parked select woken by a sender on another thread. */
    wg_add(s.wg, 1);
    coro_spawn_on(coro_rt(), 1, "late", late_sender, &s);
    assert_int_equal(chan_select(cs, 3, NULL, 2000 * MS), 1);
    assert_int_equal(vb, 77);
    assert_int_equal(cs[1].status, 0);
    wg_wait(s.wg, NULL, RT_FOREVER);
    /* The losing case's queue entry is gone: a sender on a now finds no
     * stale receiver. */
    assert_int_equal(chan_send(s.a, &out, NULL, 0), RT_EAGAIN);
    /* A closed channel is a ready case with status RT_ECLOSED. */
    chan_close(s.a);
    assert_int_equal(chan_select(cs, 2, NULL, RT_FOREVER), 0);
    assert_int_equal(cs[0].status, RT_ECLOSED);
    wg_free(s.wg);
    chan_free(s.a);
    chan_free(s.b);
}

static void
test_select_default_timeout_and_wakeup(void **state)
{
    struct rt *rt = mkrt(2);
    rt_run(rt, "main", select_wait_main, NULL);
    done(rt);
}

struct selsend {
    struct chan *ch;
    struct wg *wg;
    int got;
};

static void
select_receiver(void *p)
{
    struct selsend *s = p;
    chan_recv(s->ch, &s->got, NULL, RT_FOREVER);
    wg_done(s->wg);
}

static void
select_send_main(void *p)
{
    struct selsend s = {0};
    struct chan *never;
    int v = 5;
    (void)p;
    chan_new(sizeof(int), 0, &s.ch);
    chan_new(sizeof(int), 0, &never);
    wg_new(&s.wg);
    wg_add(s.wg, 1);
    coro_spawn(coro_rt(), "rx", select_receiver, &s);
    struct chan_case cs[2] = {{never, CHAN_RECV, NULL, 0}, {s.ch, CHAN_SEND, &v, 0}};
    assert_int_equal(chan_select(cs, 2, NULL, RT_FOREVER), 1);
    wg_wait(s.wg, NULL, RT_FOREVER);
    assert_int_equal(s.got, 5);
    wg_free(s.wg);
    chan_free(s.ch);
    chan_free(never);
}

static void
test_select_send_case(void **state)
{
    struct rt *rt = mkrt(2);
    rt_run(rt, "main", select_send_main, NULL);
    done(rt);
}

/* Two senders on two threads race to complete one select parked on both
 * channels with no timeout: exactly one may win each round, so every
 * value arrives once and no sender is left believing it delivered. */
struct selrace {
    struct chan *ch[2];
    struct wg *wg;
    int n;
    long sent[2];
};

struct selsender {
    struct selrace *r;
    int k;
};

static void
race_sender(void *p)
{
    struct selsender *ss = p;
    struct selrace *r = ss->r;
    for (int i = 1; i <= r->n; i++) {
        int v = i;
        assert_int_equal(chan_send(r->ch[ss->k], &v, NULL, RT_FOREVER), 0);
        r->sent[ss->k] += v;
    }
    wg_done(r->wg);
}

static void
select_race_main(void *p)
{
    struct selrace r = {.n = 20000};
    struct selsender ss[2] = {{&r, 0}, {&r, 1}};
    long got[2] = {0, 0};
    int v = 0;
    (void)p;
    chan_new(sizeof(int), 0, &r.ch[0]);
    chan_new(sizeof(int), 0, &r.ch[1]);
    wg_new(&r.wg);
    wg_add(r.wg, 2);
    coro_spawn_on(coro_rt(), 0, "send-a", race_sender, &ss[0]);
    coro_spawn_on(coro_rt(), 1, "send-b", race_sender, &ss[1]);
    for (int i = 0; i < 2 * r.n; i++) {
        struct chan_case cs[2] = {{r.ch[0], CHAN_RECV, &v, 0}, {r.ch[1], CHAN_RECV, &v, 0}};
        int k = chan_select(cs, 2, NULL, RT_FOREVER);
        assert_true(k == 0 || k == 1);
        got[k] += v;
    }
    wg_wait(r.wg, NULL, RT_FOREVER);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(got[k], (long)r.n * (r.n + 1) / 2);
        assert_int_equal(r.sent[k], got[k]);
    }
    wg_free(r.wg);
    chan_free(r.ch[0]);
    chan_free(r.ch[1]);
}

static void
test_select_across_threads_takes_each_value_once(void **state)
{
    struct rt *rt = mkrt(2);
    rt_run(rt, "main", select_race_main, NULL);
    done(rt);
}

/* Elements of every size cross threads intact, whichever side parks
 * first, through plain calls and select; nothing is written past an
 * element, and a receive that times out writes nothing. */
struct sized {
    struct chan *ch;
    struct wg *wg;
    size_t size;
    bool recv_first; /* the receiver parks before the send */
    bool select;
};

static void
fill(unsigned char *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(seed * 31 + i * 7 + 1);
}

static void
sized_sender(void *p)
{
    struct sized *z = p;
    unsigned char b[64];
    if (z->recv_first)
        coro_sleep(NULL, 2 * MS);
    for (unsigned k = 0; k < 3; k++) {
        fill(b, z->size, k);
        if (z->select) {
            struct chan_case cs = {.ch = z->ch, .op = CHAN_SEND, .elem = b};
            assert_int_equal(chan_select(&cs, 1, NULL, RT_FOREVER), 0);
        } else {
            assert_int_equal(chan_send(z->ch, b, NULL, RT_FOREVER), 0);
        }
        memset(b, 0xee, sizeof(b)); /* the receiver must have its copy already */
    }
    wg_done(z->wg);
}

static void
sized_receiver(void *p)
{
    struct sized *z = p;
    unsigned char b[64], want[64];
    if (!z->recv_first)
        coro_sleep(NULL, 2 * MS);
    for (unsigned k = 0; k < 3; k++) {
        memset(b, 0x55, sizeof(b));
        fill(want, z->size, k);
        if (z->select) {
            struct chan_case cs = {.ch = z->ch, .op = CHAN_RECV, .elem = b};
            assert_int_equal(chan_select(&cs, 1, NULL, RT_FOREVER), 0);
        } else {
            assert_int_equal(chan_recv(z->ch, b, NULL, RT_FOREVER), 0);
        }
        assert_memory_equal(b, want, z->size);
        assert_int_equal(b[z->size], 0x55); /* nothing written past the element */
    }
    /* A receive that times out leaves the caller's element alone. */
    memset(b, 0x55, sizeof(b));
    assert_int_equal(chan_recv(z->ch, b, NULL, 1 * MS), RT_ETIMEDOUT);
    assert_int_equal(b[0], 0x55);
    wg_done(z->wg);
}

static void
sized_main(void *p)
{
    static const size_t sizes[] = {1, 4, 8, 15, 16, 17, 24, 63};
    (void)p;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        for (int mode = 0; mode < 4; mode++) {
            struct sized z = {.size = sizes[i], .recv_first = mode & 1, .select = mode & 2};
            assert_int_equal(chan_new(z.size, 0, &z.ch), 0);
            assert_int_equal(wg_new(&z.wg), 0);
            wg_add(z.wg, 2);
            assert_int_equal(coro_spawn_on(coro_rt(), 0, "rx", sized_receiver, &z), 0);
            assert_int_equal(coro_spawn_on(coro_rt(), 1, "tx", sized_sender, &z), 0);
            wg_wait(z.wg, NULL, RT_FOREVER);
            wg_free(z.wg);
            chan_free(z.ch);
        }
    }
}

static void
test_channel_elements_of_every_size_cross_threads(void **state)
{
    struct rt *rt = mkrt(2);
    rt_run(rt, "main", sized_main, NULL);
    done(rt);
}

/* Parked parties of one kind are served in arrival order, whether the
 * first sits in the channel's own slot and the rest queue behind it, with
 * a timed receive (never in the slot) among them. */
struct arrival {
    struct chan *ch;
    struct wg *wg;
    int got[4];
    int next;
};

static void
order_receiver(void *p)
{
    struct arrival *o = p;
    int me = o->next++, v = -1;
    /* The third waits with a timeout: it queues, never takes the slot. */
    assert_int_equal(chan_recv(o->ch, &v, NULL, me == 2 ? 10000 * MS : RT_FOREVER), 0);
    o->got[me] = v;
    wg_done(o->wg);
}

static void
wait_parked_chan(uint64_t n)
{
    struct rt_stats st;
    do {
        coro_sleep(NULL, MS / 10);
        rt_stats(coro_rt(), &st);
    } while (st.parked[CORO_WAIT_CHAN] < n);
}

static void
order_main(void *p)
{
    struct arrival o = {0};
    (void)p;
    assert_int_equal(chan_new(sizeof(int), 0, &o.ch), 0);
    assert_int_equal(wg_new(&o.wg), 0);
    for (int round = 0; round < 3; round++) {
        o.next = 0;
        for (int i = 0; i < 4; i++) {
            wg_add(o.wg, 1);
            /* Spawned on the other thread, one parked before the next. */
            assert_int_equal(coro_spawn_on(coro_rt(), 1, "rx", order_receiver, &o), 0);
            wait_parked_chan((uint64_t)i + 1);
        }
        for (int i = 0; i < 4; i++)
            assert_int_equal(chan_send(o.ch, &(int){100 * round + i}, NULL, RT_FOREVER), 0);
        wg_wait(o.wg, NULL, RT_FOREVER);
        for (int i = 0; i < 4; i++)
            assert_int_equal(o.got[i], 100 * round + i);
    }
    wg_free(o.wg);
    chan_free(o.ch);
}

static void
test_parked_parties_are_served_in_order(void **state)
{
    struct rt *rt = mkrt(2);
    rt_run(rt, "main", order_main, NULL);
    done(rt);
}

/* A channel may be freed as soon as the call that woke its last party
 * returns, before that party has run again: a close then a free, or a
 * send then a free, from the party's thread or another, many times over
 * (ASan sees any use after the free). */
struct quick {
    struct chan *ch;
    struct wg *wg;
    int rc, v;
};

static void
quick_receiver(void *p)
{
    struct quick *q = p;
    q->v = -1;
    q->rc = chan_recv(q->ch, &q->v, NULL, RT_FOREVER);
    wg_done(q->wg);
}

static void
quick_free_main(void *p)
{
    struct quick q;
    (void)p;
    assert_int_equal(wg_new(&q.wg), 0);
    for (int i = 0; i < 2000; i++) {
        bool close = i & 1, same = i & 2;
        assert_int_equal(chan_new(sizeof(int), 0, &q.ch), 0);
        wg_add(q.wg, 1);
        assert_int_equal(coro_spawn_on(coro_rt(), same ? 0 : 1, "rx", quick_receiver, &q), 0);
        /* Parked, not only started: a close and a free before its call
         * began would be the test's own use after free. */
        for (struct rt_stats st = {0}; st.parked[CORO_WAIT_CHAN] == 0;) {
            coro_yield();
            rt_stats(coro_rt(), &st);
        }
        if (close)
            chan_close(q.ch);
        else
            assert_int_equal(chan_send(q.ch, &i, NULL, RT_FOREVER), 0);
        chan_free(q.ch);
        wg_wait(q.wg, NULL, RT_FOREVER);
        assert_int_equal(q.rc, close ? RT_ECLOSED : 0);
        assert_int_equal(q.v, close ? 0 : i);
    }
    wg_free(q.wg);
}

static void
test_channel_freed_right_after_waking_its_party(void **state)
{
    struct rt *rt = mkrt(2);
    rt_run(rt, "main", quick_free_main, NULL);
    done(rt);
}

/* ---- contexts in every kind of wait ----------------------------------- */

enum waitkind {
    W_SLEEP,
    W_RECV,
    W_SEND,
    W_SELECT,
    W_FD,
    W_CHILD,
    W_WG,
    W_MUTEX,
    W_COND,
    W_POOL,
    W_BLOCKING,
    W_NKINDS
};

struct victim {
    enum waitkind kind;
    struct ctx *ctx;
    struct chan *ch;
    struct wg *wg, *hold;
    struct coro_mutex *m;
    struct coro_cond *cv;
    struct coro_pool *pool;
    int fds[2];
    int pidfd;
    pid_t pid;
    int rc;
    struct wg *done;
};

static void
idle_fn(void *p)
{
    wg_wait(p, NULL, RT_FOREVER);
}

static int
slow_call(void *p)
{
    (void)p;
    usleep(20000);
    return 7;
}

static void
victim(void *p)
{
    struct victim *v = p;
    int x = 0;
    siginfo_t si;
    switch (v->kind) {
    case W_SLEEP:
        v->rc = coro_sleep(v->ctx, 10000 * MS);
        break;
    case W_RECV:
        v->rc = chan_recv(v->ch, &x, v->ctx, RT_FOREVER);
        break;
    case W_SEND:
        v->rc = chan_send(v->ch, &x, v->ctx, RT_FOREVER);
        break;
    case W_SELECT: {
        struct chan_case cs[2] = {{v->ch, CHAN_RECV, &x, 0}, {v->ch, CHAN_SEND, &x, 0}};
        v->rc = chan_select(cs, 1, v->ctx, RT_FOREVER);
        break;
    }
    case W_FD:
        v->rc = coro_wait_fd(v->fds[0], CORO_READ, v->ctx, RT_FOREVER);
        break;
    case W_CHILD:
        v->rc = coro_wait_pidfd(v->pidfd, &si, v->ctx, RT_FOREVER);
        break;
    case W_WG:
        v->rc = wg_wait(v->hold, v->ctx, RT_FOREVER);
        break;
    case W_MUTEX:
        v->rc = coro_mutex_lock(v->m, v->ctx);
        break;
    case W_COND:
        coro_mutex_lock(v->m, NULL);
        v->rc = coro_cond_wait(v->cv, v->m, v->ctx, RT_FOREVER);
        coro_mutex_unlock(v->m);
        break;
    case W_POOL:
        v->rc = coro_pool_spawn(v->pool, v->ctx, 0, "never", idle_fn, v->hold);
        break;
    case W_BLOCKING:
        /* Canceled while running: the call finishes and its result wins. */
        v->rc = rt_blocking(v->ctx, slow_call, NULL);
        break;
    default:
        break;
    }
    wg_done(v->done);
}

static void
ctx_kind(enum waitkind kind, bool deadline)
{
    struct rt *rt = mkrt(2);
    struct victim v = {.kind = kind, .pidfd = -1, .fds = {-1, -1}};
    struct ctx *root;

    ctx_new(NULL, &root);
    if (deadline)
        ctx_with_timeout(root, 15 * MS, &v.ctx);
    else
        ctx_new(root, &v.ctx);
    chan_new(sizeof(int), 0, &v.ch);
    wg_new(&v.hold);
    wg_add(v.hold, 1);
    wg_new(&v.done);
    coro_mutex_new(&v.m);
    coro_cond_new(&v.cv);
    coro_pool_new(rt, "test", 1, &v.pool);
    pipe2(v.fds, O_NONBLOCK);
    if (kind == W_CHILD)
        v.pidfd = spawn_child("sleep 30", &v.pid);
    if (kind == W_MUTEX)
        assert_int_equal(coro_mutex_trylock(v.m), 0);
    if (kind == W_POOL)
        assert_int_equal(coro_pool_spawn(v.pool, NULL, 0, "holder", idle_fn, v.hold), 0);
    wg_add(v.done, 1);
    coro_spawn_on(rt, 1, "victim", victim, &v);
    if (!deadline) {
        usleep(5000);
        ctx_cancel(root); /* the parent: propagation reaches the child */
    }
    assert_int_equal(wg_wait(v.done, NULL, 5000 * MS), 0);
    if (kind == W_BLOCKING)
        assert_int_equal(v.rc, 7);
    else
        assert_int_equal(v.rc, deadline ? RT_EDEADLINE : RT_ECANCELED);
    assert_int_equal(ctx_err(v.ctx), deadline ? RT_EDEADLINE : RT_ECANCELED);

    if (kind == W_MUTEX)
        coro_mutex_unlock(v.m);
    wg_done(v.hold);
    if (kind == W_POOL)
        assert_int_equal(coro_pool_drain(v.pool, NULL, 5000 * MS), 0);
    if (kind == W_CHILD) {
        siginfo_t si;
        kill(v.pid, SIGKILL);
        waitid(P_PID, (id_t)v.pid, &si, WEXITED);
        close(v.pidfd);
    }
    close(v.fds[0]);
    close(v.fds[1]);
    ctx_free(v.ctx);
    ctx_free(root);
    chan_free(v.ch);
    coro_pool_free(v.pool);
    coro_cond_free(v.cv);
    coro_mutex_free(v.m);
    wg_free(v.hold);
    wg_free(v.done);
    done(rt);
}

static void
test_cancel_ends_every_kind_of_wait(void **state)
{
    for (int k = 0; k < W_NKINDS; k++)
        ctx_kind((enum waitkind)k, false);
}

static void
test_deadline_ends_every_kind_of_wait(void **state)
{
    for (int k = 0; k < W_NKINDS; k++)
        ctx_kind((enum waitkind)k, true);
}

static void
test_ctx_tree_propagation_and_deadlines(void **state)
{
    struct ctx *a, *b, *c, *d;
    (void)state;
    ctx_new(NULL, &a);
    ctx_with_deadline(a, rt_now_ns() + 1000 * MS, &b);
    ctx_with_deadline(b, INT64_MAX - 1, &c); /* inherits b's deadline */
    assert_int_equal(ctx_deadline(c), ctx_deadline(b));
    assert_int_equal(ctx_err(c), 0);
    ctx_cancel(a);
    assert_int_equal(ctx_err(a), RT_ECANCELED);
    assert_int_equal(ctx_err(b), RT_ECANCELED);
    assert_int_equal(ctx_err(c), RT_ECANCELED);
    ctx_new(c, &d); /* born canceled */
    assert_int_equal(ctx_err(d), RT_ECANCELED);
    /* Freeing a parent before its children is fine: they hold it. */
    ctx_free(a);
    ctx_free(b);
    ctx_free(d);
    ctx_free(c);
    assert_int_equal(ctx_err(NULL), 0);
    assert_int_equal(ctx_with_timeout(NULL, -1, &a), -EINVAL);
}

static void
done_ctx_main(void *p)
{
    struct ctx *c;
    struct chan *ch;
    int v;
    (void)p;
    ctx_new(NULL, &c);
    ctx_cancel(c);
    chan_new(sizeof(int), 0, &ch);
    /* A context done before the call: the call returns at once. */
    assert_int_equal(chan_recv(ch, &v, c, RT_FOREVER), RT_ECANCELED);
    assert_int_equal(coro_sleep(c, 1000 * MS), RT_ECANCELED);
    chan_free(ch);
    ctx_free(c);
}

static void
test_done_context_returns_immediately(void **state)
{
    struct rt *rt = mkrt(1);
    rt_run(rt, "main", done_ctx_main, NULL);
    done(rt);
}

/* ---- mutex, cond, wg -------------------------------------------------- */

struct mtx {
    struct coro_mutex *m;
    long counter;
    struct wg *wg;
};

static void
mtx_worker(void *p)
{
    struct mtx *x = p;
    for (int i = 0; i < 2000; i++) {
        coro_mutex_lock(x->m, NULL);
        long v = x->counter;
        if (i % 7 == 0)
            coro_yield(); /* hold it across a switch */
        x->counter = v + 1;
        coro_mutex_unlock(x->m);
    }
    wg_done(x->wg);
}

static void
test_mutex_excludes_across_threads(void **state)
{
    struct rt *rt = mkrt(4);
    struct mtx x = {0};
    coro_mutex_new(&x.m);
    wg_new(&x.wg);
    for (int i = 0; i < 16; i++) {
        wg_add(x.wg, 1);
        coro_spawn_on(rt, i % 4, "mtx", mtx_worker, &x);
    }
    wg_wait(x.wg, NULL, RT_FOREVER);
    assert_int_equal(x.counter, 16 * 2000);
    assert_int_equal(coro_mutex_trylock(x.m), 0);
    assert_int_equal(coro_mutex_trylock(x.m), RT_EAGAIN);
    coro_mutex_unlock(x.m);
    coro_mutex_free(x.m);
    wg_free(x.wg);
    done(rt);
}

struct cv {
    struct coro_mutex *m;
    struct coro_cond *c;
    int ready, woke;
    struct wg *wg;
};

static void
cv_waiter(void *p)
{
    struct cv *x = p;
    coro_mutex_lock(x->m, NULL);
    while (!x->ready)
        coro_cond_wait(x->c, x->m, NULL, RT_FOREVER);
    x->woke++;
    coro_mutex_unlock(x->m);
    wg_done(x->wg);
}

static void
cv_main(void *p)
{
    struct cv *x = p;
    for (int i = 0; i < 10; i++) {
        wg_add(x->wg, 1);
        coro_spawn(coro_rt(), "cvw", cv_waiter, x);
    }
    coro_sleep(NULL, 2 * MS);
    coro_mutex_lock(x->m, NULL);
    assert_int_equal(coro_cond_wait(x->c, x->m, NULL, 1 * MS), RT_ETIMEDOUT);
    x->ready = 1;
    coro_cond_signal(x->c);
    coro_cond_broadcast(x->c);
    coro_mutex_unlock(x->m);
    wg_wait(x->wg, NULL, RT_FOREVER);
    assert_int_equal(x->woke, 10);
}

static void
test_cond_signal_broadcast_timeout(void **state)
{
    struct rt *rt = mkrt(2);
    struct cv x = {0};
    coro_mutex_new(&x.m);
    coro_cond_new(&x.c);
    wg_new(&x.wg);
    rt_run(rt, "main", cv_main, &x);
    coro_cond_free(x.c);
    coro_mutex_free(x.m);
    wg_free(x.wg);
    done(rt);
}

static void
test_wg_wait_timeout_and_zero(void **state)
{
    struct wg *wg;
    (void)state;
    wg_new(&wg);
    assert_int_equal(wg_wait(wg, NULL, RT_FOREVER), 0); /* zero: no wait */
    wg_add(wg, 1);
    assert_int_equal(wg_wait(wg, NULL, 0), RT_EAGAIN);
    assert_int_equal(wg_wait(wg, NULL, 2 * MS), RT_ETIMEDOUT);
    wg_done(wg);
    assert_int_equal(wg_wait(wg, NULL, 0), 0);
    wg_free(wg);
}

/* ---- pools ------------------------------------------------------------ */

struct poolt {
    struct coro_pool *p;
    struct wg *gate;
    atomic_int running, max;
};

static void
pooled(void *p)
{
    struct poolt *t = p;
    int r = atomic_fetch_add(&t->running, 1) + 1;
    int m = atomic_load(&t->max);
    while (r > m && !atomic_compare_exchange_weak(&t->max, &m, r))
        ;
    coro_sleep(NULL, 1 * MS);
    atomic_fetch_sub(&t->running, 1);
}

static void
pool_main(void *p)
{
    struct poolt *t = p;
    for (int i = 0; i < 50; i++)
        assert_int_equal(coro_pool_spawn(t->p, NULL, 0, "pooled", pooled, t), 0);
    assert_true(coro_pool_active(t->p) <= 3);
    assert_int_equal(coro_pool_drain(t->p, NULL, RT_FOREVER), 0);
    assert_int_equal(atomic_load(&t->max), 3);
}

static void
test_pool_bounds_and_backpressure(void **state)
{
    struct rt *rt = mkrt(2);
    struct poolt t = {0};
    coro_pool_new(rt, "jobs", 3, &t.p);
    assert_int_equal(coro_pool_limit(t.p), 3);
    rt_run(rt, "main", pool_main, &t);
    coro_pool_free(t.p);
    done(rt);
}

static void
pool_nowait_main(void *p)
{
    struct coro_pool *pool = p;
    struct wg *hold;
    wg_new(&hold);
    wg_add(hold, 1);
    assert_int_equal(coro_pool_spawn(pool, NULL, CORO_NOWAIT, "a", idle_fn, hold), 0);
    assert_int_equal(coro_pool_spawn(pool, NULL, CORO_NOWAIT, "b", idle_fn, hold), RT_EAGAIN);
    coro_pool_set_limit(pool, 2);
    assert_int_equal(coro_pool_spawn(pool, NULL, CORO_NOWAIT, "b", idle_fn, hold), 0);
    assert_int_equal(coro_pool_active(pool), 2);
    wg_done(hold);
    coro_pool_drain(pool, NULL, RT_FOREVER);
    wg_free(hold);
}

static void
test_pool_fail_fast_and_raise_limit(void **state)
{
    struct rt *rt = mkrt(1);
    struct coro_pool *pool;
    coro_pool_new(rt, "jobs", 1, &pool);
    rt_run(rt, "main", pool_nowait_main, pool);
    coro_pool_free(pool);
    assert_int_equal(coro_pool_new(rt, "x", 0, &pool), -EINVAL);
    done(rt);
}

/* ---- blocking pool ---------------------------------------------------- */

static int
add_one(void *p)
{
    int *x = p;
    usleep(1000);
    return *x + 1;
}

static void
blocking_caller(void *p)
{
    int x = 41;
    assert_int_equal(rt_blocking(NULL, add_one, &x), 42);
    wg_done(p);
}

static void
blocking_main(void *p)
{
    struct wg *wg;
    (void)p;
    wg_new(&wg);
    /* More callers than helper threads: they queue and all complete, and
     * the scheduler threads stay free meanwhile. */
    for (int i = 0; i < 32; i++) {
        wg_add(wg, 1);
        coro_spawn(coro_rt(), "blk", blocking_caller, wg);
    }
    assert_int_equal(coro_sleep(NULL, 1 * MS), 0);
    wg_wait(wg, NULL, RT_FOREVER);
    wg_free(wg);
}

static void
test_blocking_pool_runs_calls_off_thread(void **state)
{
    struct rt *rt = mkrt(1);
    rt_run(rt, "main", blocking_main, NULL);
    done(rt);
}

static int
never_runs(void *p)
{
    *(int *)p = 1;
    return 0;
}

struct blkq {
    struct ctx *ctx;
    int ran, rc;
};

static void
blocking_cancel_main(void *p)
{
    struct blkq *q = p;
    struct wg *wg;
    int x = 0;
    wg_new(&wg);
    /* Fill every helper with a slow call, then queue one that is canceled
     * before a helper frees up: it must never run. */
    for (int i = 0; i < 4; i++) {
        wg_add(wg, 1);
        coro_spawn(coro_rt(), "blk", blocking_caller, wg);
    }
    ctx_with_timeout(NULL, 0, &q->ctx);
    q->rc = rt_blocking(q->ctx, never_runs, &x);
    q->ran = x;
    wg_wait(wg, NULL, RT_FOREVER);
    wg_free(wg);
    ctx_free(q->ctx);
}

static void
test_blocking_call_withdrawn_when_context_ends_first(void **state)
{
    struct rt *rt = mkrt(1);
    struct blkq q = {0};
    rt_run(rt, "main", blocking_cancel_main, &q);
    assert_int_equal(q.rc, RT_EDEADLINE);
    assert_int_equal(q.ran, 0);
    done(rt);
}

/* ---- accounting, leaks, idle ------------------------------------------ */

static void
parked_forever(void *p)
{
    chan_recv(p, NULL, NULL, RT_FOREVER);
}

static void
test_stats_count_parked_by_reason(void **state)
{
    struct rt *rt = mkrt(2);
    struct chan *ch;
    struct rt_stats st;
    chan_new(0, 0, &ch);
    for (int i = 0; i < 5; i++)
        coro_spawn(rt, "parked", parked_forever, ch);
    for (int tries = 0; tries < 1000; tries++) {
        rt_stats(rt, &st);
        if (st.parked[CORO_WAIT_CHAN] == 5)
            break;
        usleep(1000);
    }
    assert_int_equal(st.parked[CORO_WAIT_CHAN], 5);
    assert_int_equal(st.live, 5);
    assert_true(st.peak >= 5);
    assert_true(st.stack_bytes_in_use >= 5 * 64 * 1024);
    assert_true(st.stacks_guarded + st.stacks_canary_only >= 5);
    chan_close(ch);
    for (int tries = 0; tries < 1000; tries++) {
        rt_stats(rt, &st);
        if (st.live == 0)
            break;
        usleep(1000);
    }
    assert_int_equal(st.live, 0);
    chan_free(ch);
    done(rt);
}

static void
test_leaked_coroutines_are_reported_by_name(void **state)
{
    struct rt *rt = mkrt(2);
    struct chan *ch;
    /* Buffered: the two park in the queue, not in the channel's slot,
     * whose party keeps a channel's memory alive (see chan_free), so the
     * channel can be freed after the runtime. */
    chan_new(0, 1, &ch);
    coro_spawn(rt, "forgotten-worker", parked_forever, ch);
    coro_spawn(rt, "forgotten-worker", parked_forever, ch);
    usleep(20000);
    assert_int_equal(rt_free(rt), 2);
    assert_non_null(strstr(logbuf, "forgotten-worker"));
    assert_non_null(strstr(logbuf, "chan"));
    chan_free(ch);
}

/* Voluntary context switches of the runtime's threads only (sanitizers
 * and the test harness have threads of their own). */
static long
voluntary_switches(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    long total = 0;
    while (d != NULL && (e = readdir(d)) != NULL) {
        char path[300], line[256];
        FILE *f;
        bool ours = false;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        if ((f = fopen(path, "r")) != NULL) {
            ours = fgets(line, sizeof(line), f) != NULL && strncmp(line, "jobq-", 5) == 0;
            fclose(f);
        }
        if (!ours)
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
        if ((f = fopen(path, "r")) == NULL)
            continue;
        while (fgets(line, sizeof(line), f) != NULL)
            if (strncmp(line, "voluntary_ctxt_switches:", 24) == 0)
                total += atol(line + 24);
        fclose(f);
    }
    if (d != NULL)
        closedir(d);
    return total;
}

static void
test_idle_runtime_makes_no_wakeups(void **state)
{
    struct rt *rt = mkrt(2);
    struct chan *ch;
    long before, after;
    chan_new(0, 0, &ch);
    coro_spawn(rt, "idle", parked_forever, ch);
    usleep(50000); /* let the threads finish spinning and sleep */
    before = voluntary_switches();
    usleep(300000);
    after = voluntary_switches();
    assert_int_equal(after - before, 0);
    chan_close(ch);
    chan_free(ch);
    done(rt);
}

/* ---- stack overflow --------------------------------------------------- */

static int
recurse(int depth, volatile char *prev)
{
    volatile char buf[512];
    if (depth > 100000000)
        return 0; /* never: the stack ends long before */
    buf[0] = (char)depth;
    buf[511] = prev ? prev[0] : 0;
    return recurse(depth + 1, buf) + buf[1];
}

static void
overflow(void *p)
{
    (void)p;
    recurse(0, NULL);
}

static void
big_frame(void *p)
{
    /* One frame larger than the stack: stack-clash probes must still hit
     * the guard rather than land in a neighbour's stack. The asm makes the
     * buffer escape, so the compiler must really allocate it. */
    char buf[200 * 1024];
    (void)p;
    __asm__ __volatile__("" : : "r"(buf) : "memory");
    buf[0] = 1;
    __asm__ __volatile__("" : : "r"(buf) : "memory");
}

static void
expect_overflow_message(void (*fn)(void *))
{
    int pfd[2];
    pid_t pid;
    char out[1024] = {0};
    int status;
    ssize_t n, got = 0;

    assert_int_equal(pipe(pfd), 0);
    pid = fork();
    if (pid == 0) {
        struct rt *rt;
        struct rt_opts o = {.threads = 1};
        dup2(pfd[1], 2);
        rt_new(&o, &rt);
        coro_spawn(rt, "deep-recursion", fn, NULL);
        sleep(10);
        _exit(0);
    }
    close(pfd[1]);
    while ((n = read(pfd[0], out + got, sizeof(out) - 1 - (size_t)got)) > 0)
        got += n;
    close(pfd[0]);
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_non_null(strstr(out, "coroutine 'deep-recursion'"));
    assert_non_null(strstr(out, "overflowed"));
}

static void
test_stack_overflow_stops_process_naming_coroutine(void **state)
{
    if (getenv("JOBQ_SANITIZER") != NULL) {
        /* ASan/TSan own SIGSEGV and report the overflow themselves. */
        skip();
    }
    expect_overflow_message(overflow);
    expect_overflow_message(big_frame);
}

/* ---- stress ----------------------------------------------------------- */

struct stress {
    struct chan *work, *results;
    struct wg *wg;
    int n;
};

static void
stress_worker(void *p)
{
    struct stress *s = p;
    int v;
    while (chan_recv(s->work, &v, NULL, RT_FOREVER) == 0) {
        if (v % 3 == 0)
            coro_yield();
        if (v % 5 == 0)
            coro_sleep(NULL, 1000);
        chan_send(s->results, &v, NULL, RT_FOREVER);
    }
    wg_done(s->wg);
}

static void
stress_feeder(void *p)
{
    struct stress *s = p;
    for (int i = 0; i < s->n; i++)
        chan_send(s->work, &i, NULL, RT_FOREVER);
    chan_close(s->work);
}

static void
stress_main(void *p)
{
    struct stress *s = p;
    long sum = 0;
    int v;
    for (int i = 0; i < 64; i++) {
        wg_add(s->wg, 1);
        coro_spawn(coro_rt(), "worker", stress_worker, s);
    }
    coro_spawn(coro_rt(), "feeder", stress_feeder, s);
    for (int i = 0; i < s->n; i++) {
        chan_recv(s->results, &v, NULL, RT_FOREVER);
        sum += v;
    }
    wg_wait(s->wg, NULL, RT_FOREVER);
    assert_int_equal(sum, (long)s->n * (s->n - 1) / 2);
}

static void
test_stress_2_to_8_threads(void **state)
{
    for (int t = 2; t <= 8; t++) {
        struct rt *rt = mkrt(t);
        struct stress s = {.n = 20000};
        chan_new(sizeof(int), 8, &s.work);
        chan_new(sizeof(int), 0, &s.results);
        wg_new(&s.wg);
        rt_run(rt, "main", stress_main, &s);
        chan_free(s.work);
        chan_free(s.results);
        wg_free(s.wg);
        done(rt);
    }
}

/* ---- cpu count -------------------------------------------------------- */

static void
test_cpu_count_follows_cgroup_quota(void **state)
{
    char dir[] = "/tmp/jobq-cg-XXXXXX", file[256];
    FILE *f;
    int all = rt_cpu_count("/nonexistent");
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(file, sizeof(file), "%s/cpu.max", dir);
    f = fopen(file, "w");
    fprintf(f, "50000 100000\n"); /* half a CPU rounds up to one */
    fclose(f);
    assert_int_equal(rt_cpu_count(dir), 1);
    f = fopen(file, "w");
    fprintf(f, "max 100000\n");
    fclose(f);
    assert_int_equal(rt_cpu_count(dir), all);
    f = fopen(file, "w");
    fprintf(f, "%d 100000\n", 100000 * (all + 4));
    fclose(f);
    assert_int_equal(rt_cpu_count(dir), all); /* quota above affinity: affinity */
    unlink(file);
    rmdir(dir);
}

int
main(void)
{
    check_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spawn_100k_and_join),
        cmocka_unit_test(test_spawn_rejects_bad_arguments),
        cmocka_unit_test(test_spawn_returns_enomem_when_memory_runs_out),
        cmocka_unit_test(test_rt_new_returns_status_when_fds_run_out),
        cmocka_unit_test(test_yield_alternates_on_one_thread),
        cmocka_unit_test(test_fp_control_words_stay_with_their_coroutine),
        cmocka_unit_test(test_spawn_on_pins_thread_and_names),
        cmocka_unit_test(test_sleep_waits_at_least),
        cmocka_unit_test(test_timer_heap_fires_all_in_any_order),
        cmocka_unit_test(test_wait_fd_readable_writable_timeout),
        cmocka_unit_test(test_wait_fd_refused_returns_errno_and_leaves_nothing),
        cmocka_unit_test(test_wait_fd_woken_by_other_thread),
        cmocka_unit_test(test_busy_thread_still_polls_fds),
        cmocka_unit_test(test_wait_pidfd_exit_status_and_timeout),
        cmocka_unit_test(test_coroutine_only_calls_refuse_plain_threads),
        cmocka_unit_test(test_unbuffered_pingpong_from_plain_thread),
        cmocka_unit_test(test_unbuffered_pingpong_between_coroutines_across_threads),
        cmocka_unit_test(test_buffered_channel_fifo_full_empty),
        cmocka_unit_test(test_close_wakes_receivers_and_keeps_buffer),
        cmocka_unit_test(test_cross_thread_channels_under_contention),
        cmocka_unit_test(test_select_is_fair_between_ready_cases),
        cmocka_unit_test(test_select_default_timeout_and_wakeup),
        cmocka_unit_test(test_select_send_case),
        cmocka_unit_test(test_select_across_threads_takes_each_value_once),
        cmocka_unit_test(test_channel_elements_of_every_size_cross_threads),
        cmocka_unit_test(test_parked_parties_are_served_in_order),
        cmocka_unit_test(test_channel_freed_right_after_waking_its_party),
        cmocka_unit_test(test_cancel_ends_every_kind_of_wait),
        cmocka_unit_test(test_deadline_ends_every_kind_of_wait),
        cmocka_unit_test(test_ctx_tree_propagation_and_deadlines),
        cmocka_unit_test(test_done_context_returns_immediately),
        cmocka_unit_test(test_mutex_excludes_across_threads),
        cmocka_unit_test(test_cond_signal_broadcast_timeout),
        cmocka_unit_test(test_wg_wait_timeout_and_zero),
        cmocka_unit_test(test_wake_batch_holds_wakeups_until_the_end),
        cmocka_unit_test(test_wake_batch_does_nothing_on_scheduler_threads),
        cmocka_unit_test(test_pool_bounds_and_backpressure),
        cmocka_unit_test(test_pool_fail_fast_and_raise_limit),
        cmocka_unit_test(test_blocking_pool_runs_calls_off_thread),
        cmocka_unit_test(test_blocking_call_withdrawn_when_context_ends_first),
        cmocka_unit_test(test_stats_count_parked_by_reason),
        cmocka_unit_test(test_leaked_coroutines_are_reported_by_name),
        cmocka_unit_test(test_idle_runtime_makes_no_wakeups),
        cmocka_unit_test(test_stack_overflow_stops_process_naming_coroutine),
        cmocka_unit_test(test_stress_2_to_8_threads),
        cmocka_unit_test(test_cpu_count_follows_cgroup_quota),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
