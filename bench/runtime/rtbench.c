/*
 * rtbench — the jobq side of `make bench-runtime`: one measurement per run,
 * named by the first argument, printed as "<key> <value>" lines on stdout
 * (bench/runtime.sh repeats runs, takes medians and adds units and the Go
 * figures). bench/runtime/go/main.go does the same work the same way in
 * Go; keep the two in step.
 *
 *   switch       two coroutines yielding to each other, 1 thread: ns/switch
 *   chan         unbuffered ping-pong, 1 thread: ns per one-way hand-off
 *   chan_mt      the same, the two ends on threads 0 and 1 (pinned to CPUs)
 *   spawn_join   1M x (wg_add; spawn an empty coroutine), wg_wait: ns each
 *   parked       1M coroutines, each touched 1 KiB of stack, parked on one
 *                channel: RSS bytes per coroutine, stacks guarded
 *   timers       1M coroutines sleeping a random 0-1 s: wall ms from the
 *                first spawn to the last wake, worst lateness ms
 *   idle         voluntary context switches/s of an idle 2-thread runtime's
 *                threads over 3 s
 *   spin         the physical floor: two threads pinned to two CPUs hand a
 *                value back and forth through one atomic variable
 *   lockspin     the floor of a channel that has a lock: the same two
 *                threads, each hand-off taking the channel's lock (a line
 *                the other side wrote last) and filling the receiver's slot
 *                (another line), no scheduler at all
 *   rendezvous   the floor of an unbuffered hand-off: the same two threads,
 *                one word per channel, the receiver announcing itself and
 *                the sender swapping its value in, no lock, no scheduler
 *   stall        the longest this machine stopped running a thread that
 *                never blocks, one per CPU, over 2.5 s: no timer can be
 *                less late than that (this VM's host pauses both vCPUs
 *                for ~50 ms once a second when they are busy)
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jobq/runtime.h"

#define MILLION 1000000

/* The iteration count of a run: N in the environment overrides it (for
 * quick looks while tuning; bench/runtime.sh never sets it). */
static long
count(long dflt)
{
    const char *n = getenv("N");
    return n != NULL && atol(n) > 0 ? atol(n) : dflt;
}

static void
die(const char *what, int rc)
{
    fprintf(stderr, "rtbench: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
    exit(1);
}

static struct rt *
mkrt(int threads)
{
    struct rt_opts o = {.threads = threads};
    struct rt *rt;
    int rc;
    if ((rc = rt_new(&o, &rt)) < 0)
        die("rt_new", rc);
    return rt;
}

static void
endrt(struct rt *rt)
{
    int leaks = rt_free(rt);
    if (leaks != 0) {
        fprintf(stderr, "rtbench: %d coroutines leaked\n", leaks);
        exit(1);
    }
}

static void
pin_self(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu % CPU_SETSIZE, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* A named field of /proc/<path> (status files), in the file's unit. */
static long
status_field(const char *path, const char *field)
{
    char line[256];
    size_t n = strlen(field);
    long v = -1;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static long
rss_bytes(void)
{
    return status_field("/proc/self/status", "VmRSS") * 1024;
}

/* ---- switch ----------------------------------------------------------- */

struct loop {
    long n;
    struct wg *wg;
    struct chan *ping, *pong;
    int cpu; /* chan_mt: pin this end's scheduler thread; -1 not */
};

static void
yielder(void *p)
{
    struct loop *l = p;
    for (long i = 0; i < l->n; i++)
        coro_yield();
    wg_done(l->wg);
}

static void
switch_main(void *p)
{
    struct loop *l = p;
    struct rt *rt = coro_rt();
    int64_t t0;

    wg_new(&l->wg);
    wg_add(l->wg, 2);
    t0 = rt_now_ns();
    coro_spawn_on(rt, 0, "yield-a", yielder, l);
    coro_spawn_on(rt, 0, "yield-b", yielder, l);
    wg_wait(l->wg, NULL, RT_FOREVER);
    /* Each of the 2n yields is one switch to the other coroutine. */
    printf("switch_ns %.2f\n", (double)(rt_now_ns() - t0) / (2.0 * (double)l->n));
    wg_free(l->wg);
}

static void
bench_switch(void)
{
    struct loop l = {.n = count(20 * MILLION)};
    struct rt *rt = mkrt(1);
    rt_run(rt, "main", switch_main, &l);
    endrt(rt);
}

/* ---- channel ping-pong ------------------------------------------------ */

static void
pinger(void *p)
{
    struct loop *l = p;
    long v;
    if (l->cpu >= 0)
        pin_self(l->cpu);
    for (long i = 0; i < l->n; i++) {
        chan_send(l->ping, &i, NULL, RT_FOREVER);
        chan_recv(l->pong, &v, NULL, RT_FOREVER);
    }
    wg_done(l->wg);
}

static void
ponger(void *p)
{
    struct loop *l = p;
    long v;
    if (l->cpu >= 0)
        pin_self(l->cpu + 1);
    for (long i = 0; i < l->n; i++) {
        chan_recv(l->ping, &v, NULL, RT_FOREVER);
        chan_send(l->pong, &v, NULL, RT_FOREVER);
    }
    wg_done(l->wg);
}

static void
chan_main(void *p)
{
    struct loop *l = p;
    struct rt *rt = coro_rt();
    int other = rt_threads(rt) > 1 ? 1 : 0;
    int64_t t0;

    wg_new(&l->wg);
    chan_new(sizeof(long), 0, &l->ping);
    chan_new(sizeof(long), 0, &l->pong);
    wg_add(l->wg, 2);
    t0 = rt_now_ns();
    coro_spawn_on(rt, other, "pong", ponger, l);
    coro_spawn_on(rt, 0, "ping", pinger, l);
    wg_wait(l->wg, NULL, RT_FOREVER);
    /* 2n one-way hand-offs: n pings and n pongs. */
    printf("%s %.2f\n", other ? "chan_pingpong_mt_ns" : "chan_pingpong_ns",
           (double)(rt_now_ns() - t0) / (2.0 * (double)l->n));
    chan_free(l->ping);
    chan_free(l->pong);
    wg_free(l->wg);
}

static void
bench_chan(int threads)
{
    struct loop l = {.n = count(threads > 1 ? 2 * MILLION : 5 * MILLION),
                     .cpu = threads > 1 ? 0 : -1};
    struct rt *rt = mkrt(threads);
    rt_run(rt, "main", chan_main, &l);
    endrt(rt);
}

/* ---- spawn and join --------------------------------------------------- */

static void
empty(void *p)
{
    wg_done(p);
}

static void
spawn_main(void *p)
{
    struct rt *rt = coro_rt();
    struct wg *wg;
    long n = *(long *)p;
    int64_t t0;
    int rc;

    wg_new(&wg);
    t0 = rt_now_ns();
    for (long i = 0; i < n; i++) {
        wg_add(wg, 1);
        if ((rc = coro_spawn(rt, "empty", empty, wg)) < 0)
            die("coro_spawn", rc);
    }
    wg_wait(wg, NULL, RT_FOREVER);
    printf("spawn_join_ns %.2f\n", (double)(rt_now_ns() - t0) / (double)n);
    wg_free(wg);
}

static void
bench_spawn_join(void)
{
    long n = count(MILLION);
    struct rt *rt = mkrt(2);
    rt_run(rt, "main", spawn_main, &n);
    endrt(rt);
}

/* ---- parked coroutines ------------------------------------------------ */

struct parked {
    struct chan *ch;
    struct wg *wg;
    long n;
};

static void
parked_fn(void *p)
{
    struct parked *pk = p;
    volatile char buf[1024];

    /* Touch 1 KiB of stack, as a handler with a small buffer would. */
    for (size_t i = 0; i < sizeof(buf); i += 64)
        buf[i] = (char)i;
    chan_recv(pk->ch, NULL, NULL, RT_FOREVER);
    wg_done(pk->wg);
}

static void
parked_main(void *p)
{
    struct parked *pk = p;
    struct rt *rt = coro_rt();
    struct rt_stats st;
    long before, after;
    int rc;

    chan_new(1, 0, &pk->ch);
    wg_new(&pk->wg);
    before = rss_bytes();
    for (long i = 0; i < pk->n; i++) {
        wg_add(pk->wg, 1);
        if ((rc = coro_spawn(rt, "parked", parked_fn, pk)) < 0)
            die("coro_spawn", rc);
    }
    /* Measure once every one of them is parked on the channel. */
    for (;;) {
        rt_stats(rt, &st);
        if (st.parked[CORO_WAIT_CHAN] >= (uint64_t)pk->n)
            break;
        coro_sleep(NULL, 1000 * 1000);
    }
    after = rss_bytes();
    printf("parked_bytes %.0f\n", (double)(after - before) / (double)pk->n);
    printf("stacks_guarded %" PRIu64 "\n", st.stacks_guarded);
    printf("stacks_canary_only %" PRIu64 "\n", st.stacks_canary_only);
    /* Page tables are not RSS, but they are memory: say what they cost. */
    printf("parked_pte_bytes %.0f\n",
           (double)status_field("/proc/self/status", "VmPTE") * 1024 / (double)pk->n);
    chan_close(pk->ch);
    wg_wait(pk->wg, NULL, RT_FOREVER);
    chan_free(pk->ch);
    wg_free(pk->wg);
}

static void
bench_parked(void)
{
    struct parked pk = {.n = MILLION};
    struct rt *rt = mkrt(2);
    rt_run(rt, "main", parked_main, &pk);
    endrt(rt);
}

/* ---- a million timers ------------------------------------------------- */

struct timers {
    struct wg *wg;
    int64_t *sleep_ns; /* per coroutine, drawn before the clock starts */
    int64_t *woke;     /* per coroutine: when it woke */
    int64_t *late;     /* per coroutine: woke - (start + sleep) */
    long n;
};

struct sleeper {
    struct timers *t;
    long i;
};

static void
sleeper_fn(void *p)
{
    struct sleeper *sl = p;
    struct timers *t = sl->t;
    int64_t start = rt_now_ns(), end;

    coro_sleep(NULL, t->sleep_ns[sl->i]);
    end = rt_now_ns();
    t->woke[sl->i] = end;
    t->late[sl->i] = end - (start + t->sleep_ns[sl->i]);
    wg_done(t->wg);
}

/* xorshift64 with a fixed seed: the Go side draws the same durations. */
static uint64_t
next_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void
timers_main(void *p)
{
    struct timers *t = p;
    struct rt *rt = coro_rt();
    struct sleeper *sl = calloc((size_t)t->n, sizeof(*sl));
    int64_t t0, spawned, last = 0, late = 0;
    int rc;

    if (sl == NULL)
        die("calloc", -ENOMEM);
    wg_new(&t->wg);
    t0 = rt_now_ns();
    for (long i = 0; i < t->n; i++) {
        sl[i] = (struct sleeper){t, i};
        wg_add(t->wg, 1);
        if ((rc = coro_spawn(rt, "sleeper", sleeper_fn, &sl[i])) < 0)
            die("coro_spawn", rc);
    }
    spawned = rt_now_ns();
    wg_wait(t->wg, NULL, RT_FOREVER);
    for (long i = 0; i < t->n; i++) {
        if (t->woke[i] > last)
            last = t->woke[i];
        if (t->late[i] > late)
            late = t->late[i];
    }
    printf("timers_1m_ms %.1f\n", (double)(last - t0) / 1e6);
    printf("timers_late_max_ms %.2f\n", (double)late / 1e6);
    printf("timers_spawn_ms %.1f\n", (double)(spawned - t0) / 1e6);
    wg_free(t->wg);
    free(sl);
}

static void
bench_timers(void)
{
    struct timers t = {.n = MILLION};
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    struct rt *rt;

    t.sleep_ns = calloc((size_t)t.n, sizeof(int64_t));
    t.woke = calloc((size_t)t.n, sizeof(int64_t));
    t.late = calloc((size_t)t.n, sizeof(int64_t));
    if (t.sleep_ns == NULL || t.woke == NULL || t.late == NULL)
        die("calloc", -ENOMEM);
    for (long i = 0; i < t.n; i++)
        t.sleep_ns[i] = (int64_t)(next_rand(&seed) % 1000000000ull);
    rt = mkrt(2);
    rt_run(rt, "main", timers_main, &t);
    endrt(rt);
    free(t.sleep_ns);
    free(t.woke);
    free(t.late);
}

/* ---- idle wake-ups ---------------------------------------------------- */

/* Voluntary context switches of this process's runtime threads. */
static long
runtime_switches(int *nthreads)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    long sum = 0;
    *nthreads = 0;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        char path[300], comm[64] = "";
        FILE *f;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        if ((f = fopen(path, "r")) == NULL)
            continue;
        if (fgets(comm, sizeof(comm), f) == NULL)
            comm[0] = '\0';
        fclose(f);
        if (strncmp(comm, "jobq-sched-", 11) != 0 && strncmp(comm, "jobq-blocking", 13) != 0)
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
        sum += status_field(path, "voluntary_ctxt_switches");
        (*nthreads)++;
    }
    closedir(d);
    return sum;
}

static void
bench_idle(void)
{
    struct rt *rt = mkrt(2);
    struct timespec settle = {0, 200 * 1000 * 1000}, span = {3, 0};
    long a, b;
    int na, nb;

    /* Let the threads start and go to sleep, then count over 3 s. */
    nanosleep(&settle, NULL);
    a = runtime_switches(&na);
    nanosleep(&span, NULL);
    b = runtime_switches(&nb);
    if (na != nb || na < 2)
        die("counting runtime threads", -ESRCH);
    printf("idle_wakeups_per_s %.2f\n", (double)(b - a) / 3.0);
    printf("idle_threads %d\n", na);
    endrt(rt);
}

/* ---- the spin hand-off floor ------------------------------------------ */

/* Own cache line, so nothing else shares the transfers. */
static _Alignas(64) atomic_long spin_word;
static long spin_rounds;

static void *
spin_partner(void *p)
{
    (void)p;
    pin_self(1);
    /* Wait for each odd value, answer with the next even one. */
    for (long i = 0; i < spin_rounds; i++) {
        long want = 2 * i + 1;
        while (atomic_load_explicit(&spin_word, memory_order_acquire) != want)
            ;
        atomic_store_explicit(&spin_word, want + 1, memory_order_release);
    }
    return NULL;
}

static void
bench_spin(void)
{
    pthread_t th;
    int64_t t0;

    spin_rounds = 2 * MILLION;
    pin_self(0);
    pthread_create(&th, NULL, spin_partner, NULL);
    /* Warm up: the partner is running and spinning before the clock starts. */
    atomic_store(&spin_word, 1);
    while (atomic_load_explicit(&spin_word, memory_order_acquire) != 2)
        ;
    t0 = rt_now_ns();
    for (long i = 1; i < spin_rounds; i++) {
        atomic_store_explicit(&spin_word, 2 * i + 1, memory_order_release);
        while (atomic_load_explicit(&spin_word, memory_order_acquire) != 2 * i + 2)
            ;
    }
    printf("spin_handoff_ns %.2f\n",
           (double)(rt_now_ns() - t0) / (2.0 * (double)(spin_rounds - 1)));
    pthread_join(th, NULL);
}

/* ---- the floor of a lock-based hand-off ---------------------------------- */

/* A channel reduced to its lock and its parked receiver's slot, each on
 * its own line, as a channel's lock and a parked party's waiter are. */
struct mini {
    _Alignas(64) atomic_int lock;
    _Alignas(64) atomic_long slot; /* 0: empty */
};

static struct mini minis[2]; /* ping, pong */

static void
mini_send(struct mini *m, long v)
{
    while (atomic_exchange_explicit(&m->lock, 1, memory_order_acquire))
        ;
    atomic_store_explicit(&m->slot, v, memory_order_release);
    atomic_store_explicit(&m->lock, 0, memory_order_release);
}

static long
mini_recv(struct mini *m)
{
    long v;
    /* Re-arm under the lock, as a receiver queues itself, then spin. */
    while (atomic_exchange_explicit(&m->lock, 1, memory_order_acquire))
        ;
    atomic_store_explicit(&m->lock, 0, memory_order_release);
    while ((v = atomic_load_explicit(&m->slot, memory_order_acquire)) == 0)
        ;
    atomic_store_explicit(&m->slot, 0, memory_order_relaxed);
    return v;
}

static void *
lockspin_partner(void *p)
{
    (void)p;
    pin_self(1);
    for (long i = 0; i < spin_rounds; i++)
        mini_send(&minis[1], mini_recv(&minis[0]));
    return NULL;
}

static void
bench_lockspin(void)
{
    pthread_t th;
    int64_t t0;

    spin_rounds = count(MILLION);
    pin_self(0);
    pthread_create(&th, NULL, lockspin_partner, NULL);
    mini_send(&minis[0], 1); /* warm up: the partner is there */
    mini_recv(&minis[1]);
    t0 = rt_now_ns();
    for (long i = 1; i < spin_rounds; i++) {
        mini_send(&minis[0], i + 1);
        mini_recv(&minis[1]);
    }
    printf("lock_handoff_ns %.2f\n",
           (double)(rt_now_ns() - t0) / (2.0 * (double)(spin_rounds - 1)));
    pthread_join(th, NULL);
}

/* ---- the floor of an unbuffered hand-off ---------------------------------- */

/*
 * The least an unbuffered channel can do across two threads, with no
 * scheduler, no lock and no queue: one word per channel, on its own line.
 * The receiver announces itself in it (RDV_WAITING) and spins; the sender
 * waits for the announcement and swaps its value in with one CAS, since
 * an unbuffered send completes only into a receiver that is there. Each
 * one-way hand-off moves the word to the sender and back, and the
 * announcement of the next receive rides on the other channel's word.
 */
#define RDV_IDLE 0
#define RDV_WAITING 1

static struct {
    _Alignas(64) atomic_long w;
} rdv[2]; /* ping, pong */

static long
rdv_recv(atomic_long *w)
{
    long v;
    atomic_store_explicit(w, RDV_WAITING, memory_order_release);
    while ((v = atomic_load_explicit(w, memory_order_acquire)) == RDV_WAITING)
        ;
    atomic_store_explicit(w, RDV_IDLE, memory_order_relaxed);
    return v;
}

static void
rdv_send(atomic_long *w, long v)
{
    for (;;) {
        long expect = RDV_WAITING;
        if (atomic_load_explicit(w, memory_order_relaxed) == RDV_WAITING &&
            atomic_compare_exchange_weak_explicit(w, &expect, v, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return;
    }
}

static void *
rendezvous_partner(void *p)
{
    (void)p;
    pin_self(1);
    for (long i = 0; i < spin_rounds; i++)
        rdv_send(&rdv[1].w, rdv_recv(&rdv[0].w));
    return NULL;
}

static void
bench_rendezvous(void)
{
    pthread_t th;
    int64_t t0;

    spin_rounds = count(2 * MILLION);
    pin_self(0);
    pthread_create(&th, NULL, rendezvous_partner, NULL);
    rdv_send(&rdv[0].w, 2); /* warm up; values stay above RDV_WAITING */
    rdv_recv(&rdv[1].w);
    t0 = rt_now_ns();
    for (long i = 1; i < spin_rounds; i++) {
        rdv_send(&rdv[0].w, i + 2);
        rdv_recv(&rdv[1].w);
    }
    printf("rendezvous_handoff_ns %.2f\n",
           (double)(rt_now_ns() - t0) / (2.0 * (double)(spin_rounds - 1)));
    pthread_join(th, NULL);
}

/* ---- machine stalls ------------------------------------------------------ */

static int64_t stall_worst[2]; /* per CPU */

static void *
stall_watch(void *p)
{
    int64_t *worst = p, start, last;
    pin_self((int)(worst - stall_worst));
    start = last = rt_now_ns();
    while (last - start < 2500LL * 1000 * 1000) {
        int64_t now = rt_now_ns();
        if (now - last > *worst)
            *worst = now - last;
        last = now;
    }
    return NULL;
}

static void
bench_stall(void)
{
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, stall_watch, &stall_worst[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    printf("stall_max_ms %.1f\n",
           (double)(stall_worst[0] > stall_worst[1] ? stall_worst[0] : stall_worst[1]) / 1e6);
}

int
main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(what, "switch") == 0)
        bench_switch();
    else if (strcmp(what, "chan") == 0)
        bench_chan(1);
    else if (strcmp(what, "chan_mt") == 0)
        bench_chan(2);
    else if (strcmp(what, "spawn_join") == 0)
        bench_spawn_join();
    else if (strcmp(what, "parked") == 0)
        bench_parked();
    else if (strcmp(what, "timers") == 0)
        bench_timers();
    else if (strcmp(what, "idle") == 0)
        bench_idle();
    else if (strcmp(what, "spin") == 0)
        bench_spin();
    else if (strcmp(what, "lockspin") == 0)
        bench_lockspin();
    else if (strcmp(what, "rendezvous") == 0)
        bench_rendezvous();
    else if (strcmp(what, "stall") == 0)
        bench_stall();
    else {
        fprintf(stderr,
                "usage: rtbench "
                "switch|chan|chan_mt|spawn_join|parked|timers|idle|spin|lockspin|rendezvous|"
                "stall\n");
        return 2;
    }
    return 0;
}
