/*
 * stack — coroutine stacks: mapped in slabs, pooled and reused, each with
 * overflow detection. Owns every stack mapping of a runtime.
 *
 * Layout of one slot: [guard][usable stack ... struct coro]. The
 * coroutine lives at the top of its stack, so spawning maps nothing and a
 * parked coroutine that touched 1 KiB of stack costs one page of RSS.
 *
 * Overflow detection on every stack, three ways:
 *  1. Guard pages installed with MADV_GUARD_INSTALL (Linux 6.13+): page-
 *     table markers that fault like PROT_NONE but create no VMA, so every
 *     stack gets one whatever vm.max_map_count says. -fstack-clash-
 *     protection makes every large frame probe page by page, so a jump
 *     cannot skip the guard.
 *  2. On older kernels, mprotect guard pages while the VMA budget lasts
 *     (each costs two map entries: 65530 allows ~32k); stacks beyond it
 *     get a canary: JOBQ_CORO_CANARY_BYTES of pattern at the low end,
 *     verified at every switch. That costs the bottom page of RSS, which
 *     is why it is the fallback.
 *  3. At every switch the stack pointer is checked against the stack's
 *     low end, a free check that catches an overflow still in progress.
 * A fault in a guard page is caught by a SIGSEGV handler on an alternate
 * stack; either way the process stops with a message naming the coroutine.
 * MADV_GUARD_INSTALL is trusted only once a kernel read of a guarded page
 * has failed: emulators (qemu-user) accept the advice and do nothing.
 *
 * Syscalls on many stacks at once go through one process_madvise(2) on
 * this process (Linux 6.13+): a slab's 64 guards in one call, the top
 * page of each prefaulted in one call (MADV_POPULATE_WRITE, ~0.4 us a page
 * against ~1.2 us for a fault), released stacks in one call and one TLB
 * shoot-down (MADV_DONTNEED stack by stack cost an IPI each, ~1 us). Where
 * that is refused, madvise(2) range by range, and no prefault.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "rt_int.h"

#if defined(JOBQ_ASAN)
#include <sanitizer/asan_interface.h>
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define ALTSTACK_BYTES (64 * 1024)
/* Map entries kept for everything else (libraries, malloc arenas, SQLite)
 * when guard pages are made with mprotect. */
#define MAP_RESERVE 8192
/* Stacks released to the kernel per process_madvise call. */
#define RELEASE_BATCH JOBQ_CORO_STACKS_PER_SLAB
/* Slabs are carved from regions of address space mapped at once, each
 * twice the last up to this many slabs (64 x 64 stacks of 68 KiB: 272 MiB,
 * address space only). An mmap takes the process's memory map lock for
 * writing, which stalls every populate and page fault meanwhile: a
 * million coroutines cost ~250 of them instead of ~16,000. */
#define REGION_SLABS_MAX 64

enum guard_mode { GUARD_MADVISE, GUARD_MPROTECT };

struct slab {
    void *addr;
    size_t len;
};

struct stack_pool {
    pthread_mutex_t lock;
    size_t page;
    size_t guard;  /* below each stack */
    size_t usable; /* rt->stack_bytes */
    size_t slot;   /* guard + usable */
    enum guard_mode mode;
    long mprotect_budget; /* guard pages still allowed in GUARD_MPROTECT */
    int pidfd;            /* this process, for process_madvise */
    atomic_bool batch;    /* process_madvise works here */
    /* Free stacks as arrays of pointers, not lists through the shells:
     * handing 64 of them over reads no shell (a cache and TLB miss each).
     * Both have room for every stack, so giving one back never fails. */
    struct coro **hot; /* resident, shell intact; the last given on top */
    size_t nhot;
    uintptr_t *cold; /* released with MADV_DONTNEED (bit 0: guarded) */
    size_t ncold;
    struct slab *slabs;
    size_t nslabs, slabs_cap;
    struct slab *regions; /* what stack_pool_free unmaps */
    size_t nregions, regions_cap;
    char *region_next; /* the next slab of the newest region */
    size_t region_left, region_slabs;
    atomic_long in_use;
    atomic_long guarded;
    atomic_long canary_only;
    /* Set by a spawner that found the resident free stacks running low
     * in a burst, cleared by the idle thread that prepares more (see
     * stack_prepare). On a line of its own: idle threads read it while
     * they spin. */
    _Alignas(64) atomic_bool prepare;
};

static long
count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    long n = 0;
    int ch;
    if (f == NULL)
        return 1024;
    while ((ch = getc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

static long
max_map_count(void)
{
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    long v = 65530;
    if (f != NULL) {
        if (fscanf(f, "%ld", &v) != 1)
            v = 65530;
        fclose(f);
    }
    return v;
}

static bool
madv_guard_works(size_t page)
{
    void *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int fds[2];
    bool ok;
    if (p == MAP_FAILED)
        return false;
    ok = madvise(p, page, MADV_GUARD_INSTALL) == 0;
    /* The kernel must refuse to read a guarded page: qemu-user returns 0
     * for advice it ignores, which would leave every stack unguarded. */
    if (ok && pipe2(fds, O_CLOEXEC) == 0) {
        ok = write(fds[1], p, 1) < 0 && errno == EFAULT;
        close(fds[0]);
        close(fds[1]);
    } else {
        ok = false;
    }
    munmap(p, 2 * page);
    return ok;
}

/* Applies advice to n ranges with one process_madvise. Returns false if
 * any range was not done (the caller falls back to madvise per range). */
static bool
advise_batch(struct stack_pool *p, struct iovec *iov, size_t n, int advice)
{
    size_t total = 0;
    long r;

    if (n == 0)
        return true;
    if (!atomic_load_explicit(&p->batch, memory_order_relaxed))
        return false;
    for (size_t i = 0; i < n; i++)
        total += iov[i].iov_len;
    r = syscall(SYS_process_madvise, p->pidfd, iov, n, advice, 0);
    if (r == (long)total)
        return true;
    /* Refused outright (kernel before 6.13, seccomp, an emulator): stop
     * trying. Out of memory or a partial result: this call only. */
    if (r < 0 && errno != ENOMEM && errno != EAGAIN && errno != EINTR)
        atomic_store_explicit(&p->batch, false, memory_order_relaxed);
    return false;
}

/* ---- overflow reports ------------------------------------------------- */

static size_t
cat(char *buf, size_t off, size_t len, const char *s)
{
    while (*s && off + 1 < len)
        buf[off++] = *s++;
    buf[off] = '\0';
    return off;
}

static size_t
cat_u64(char *buf, size_t off, size_t len, uint64_t v)
{
    char tmp[24];
    int i = sizeof(tmp) - 1;
    tmp[i] = '\0';
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v && i > 0);
    return cat(buf, off, len, tmp + i);
}

/* Async-signal-safe: runs in the SIGSEGV handler too. */
void
stack_overflow_abort(struct coro *c, const char *how)
{
    char msg[256];
    size_t n = 0;
    size_t kib = (size_t)((char *)c - c->lo + sizeof(*c)) / 1024;

    n = cat(msg, n, sizeof(msg), "jobq: fatal: coroutine '");
    n = cat(msg, n, sizeof(msg), c->name);
    n = cat(msg, n, sizeof(msg), "' (id ");
    n = cat_u64(msg, n, sizeof(msg), c->id);
    n = cat(msg, n, sizeof(msg), ") overflowed its ");
    n = cat_u64(msg, n, sizeof(msg), kib);
    n = cat(msg, n, sizeof(msg), " KiB stack (");
    n = cat(msg, n, sizeof(msg), how);
    n = cat(msg, n, sizeof(msg), ")\n");
    (void)!write(2, msg, n);
    signal(SIGABRT, SIG_DFL);
    abort();
}

void
stack_check_canary(struct coro *c)
{
    const uint64_t *p = (const uint64_t *)(void *)c->lo;
    for (size_t i = 0; i < JOBQ_CORO_CANARY_BYTES / sizeof(uint64_t); i++)
        if (p[i] != STACK_CANARY)
            stack_overflow_abort(c, "canary overwritten");
}

/* The guard below each stack: JOBQ_CORO_GUARD_BYTES in whole pages. */
static size_t
guard_bytes(size_t page)
{
    return (JOBQ_CORO_GUARD_BYTES + page - 1) / page * page;
}

static struct sigaction old_segv;
static size_t segv_guard;

static void
segv_handler(int sig, siginfo_t *si, void *uctx)
{
    struct sched *s = rt_tl_sched;
    struct coro *c = s ? s->current : NULL;
    char *addr = si->si_addr;

    if (c != NULL && addr >= c->lo - segv_guard && addr < c->lo + STACK_SP_MARGIN)
        stack_overflow_abort(c, "guard page hit");
    /* Not ours: hand it on, or restore the default so the fault repeats
     * and dumps core where it happened. */
    if ((old_segv.sa_flags & SA_SIGINFO) && old_segv.sa_sigaction != NULL) {
        old_segv.sa_sigaction(sig, si, uctx);
        return;
    }
    if (old_segv.sa_handler != SIG_DFL && old_segv.sa_handler != SIG_IGN &&
        old_segv.sa_handler != NULL) {
        old_segv.sa_handler(sig);
        return;
    }
    signal(SIGSEGV, SIG_DFL);
}

/* Installs the handler unless it is already the current one; runs at every
 * rt_new, since test harnesses and sanitizers replace it meanwhile. The
 * handler it displaces gets the faults that are not overflows. */
static void
install_segv(void)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    struct sigaction sa, cur;

    pthread_mutex_lock(&lock);
    sigaction(SIGSEGV, NULL, &cur);
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == segv_handler) {
        pthread_mutex_unlock(&lock);
        return;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = segv_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    segv_guard = guard_bytes((size_t)sysconf(_SC_PAGESIZE));
    sigaction(SIGSEGV, &sa, &old_segv);
    pthread_mutex_unlock(&lock);
}

int
stack_thread_init(struct sched *s)
{
    stack_t ss;

    install_segv();
    s->altstack =
        mmap(NULL, ALTSTACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s->altstack == MAP_FAILED) {
        s->altstack = NULL;
        return -ENOMEM;
    }
    ss.ss_sp = s->altstack;
    ss.ss_size = ALTSTACK_BYTES;
    ss.ss_flags = 0;
    if (sigaltstack(&ss, NULL) < 0)
        return -errno;
    return 0;
}

void
stack_thread_fini(struct sched *s)
{
    stack_t ss = {.ss_flags = SS_DISABLE};
    sigaltstack(&ss, NULL);
    /* The pool's slabs outlive the threads; only the cache list goes. */
    if (s->altstack != NULL)
        munmap(s->altstack, ALTSTACK_BYTES);
    s->altstack = NULL;
}

/* ---- the pool --------------------------------------------------------- */

int
stack_pool_new(struct rt *rt, struct stack_pool **out)
{
    struct stack_pool *p = aligned_alloc(64, (sizeof(*p) + 63) & ~(size_t)63);
    if (p == NULL)
        return -ENOMEM;
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    p->pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0); /* always close-on-exec */
    atomic_init(&p->batch, p->pidfd >= 0);
    p->page = (size_t)sysconf(_SC_PAGESIZE);
    p->guard = guard_bytes(p->page);
    p->usable = rt->stack_bytes;
    p->slot = p->guard + p->usable;
    if (madv_guard_works(p->page)) {
        p->mode = GUARD_MADVISE;
    } else {
        p->mode = GUARD_MPROTECT;
        p->mprotect_budget = (max_map_count() - count_maps() - MAP_RESERVE) / 2;
        if (p->mprotect_budget < 0)
            p->mprotect_budget = 0;
    }
    *out = p;
    return 0;
}

static struct coro *
shell_at(struct stack_pool *p, char *slot)
{
    char *top = slot + p->slot;
    return (struct coro *)(void *)(((uintptr_t)top - sizeof(struct coro)) & ~(uintptr_t)63);
}

static struct coro *
shell_init(struct stack_pool *p, char *slot, bool guarded)
{
    struct coro *c = shell_at(p, slot);
    memset(c, 0, sizeof(*c));
    c->lo = slot + p->guard;
    c->guarded = guarded;
    if (!guarded) {
        uint64_t *q = (uint64_t *)(void *)c->lo;
        c->canary = 1;
        for (size_t i = 0; i < JOBQ_CORO_CANARY_BYTES / sizeof(uint64_t); i++)
            q[i] = STACK_CANARY;
    }
    return c;
}

/* Lock held: room for one more region in p->regions. */
static bool
regions_room(struct stack_pool *p)
{
    if (p->nregions == p->regions_cap) {
        size_t cap = p->regions_cap ? p->regions_cap * 2 : 16;
        struct slab *r = realloc(p->regions, cap * sizeof(*r));
        if (r == NULL)
            return false;
        p->regions = r;
        p->regions_cap = cap;
    }
    return true;
}

/* Takes the address space of a new slab of len bytes, and registers it
 * (with room for its stacks in the free arrays, so giving them back never
 * fails). NULL: out of memory or address space. */
static char *
slab_reserve(struct stack_pool *p, size_t len)
{
    char *base = NULL;

    pthread_mutex_lock(&p->lock);
    if (p->nslabs == p->slabs_cap) {
        size_t cap = p->slabs_cap ? p->slabs_cap * 2 : 64, n = JOBQ_CORO_STACKS_PER_SLAB;
        struct slab *sl = realloc(p->slabs, cap * sizeof(*sl));
        uintptr_t *cold = sl ? realloc(p->cold, cap * n * sizeof(*cold)) : NULL;
        struct coro **hot = cold ? realloc(p->hot, cap * n * sizeof(*hot)) : NULL;
        if (sl != NULL)
            p->slabs = sl;
        if (cold != NULL)
            p->cold = cold;
        if (hot == NULL)
            goto out;
        p->hot = hot;
        p->slabs_cap = cap;
    }
    if (p->region_left == 0) {
        /* Under the lock: another spawner would otherwise map a region
         * of its own at the same moment. */
        size_t slabs = p->region_slabs ? p->region_slabs * 2 : 1;
        char *r;
        if (slabs > REGION_SLABS_MAX)
            slabs = REGION_SLABS_MAX;
        if (!regions_room(p))
            goto out;
        for (;;) {
            r = mmap(NULL, slabs * len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
            if (r != MAP_FAILED)
                break;
            /* Near a limit (RLIMIT_AS, the map count): what is left goes
             * slab by slab. */
            if (slabs == 1)
                goto out;
            slabs = 1;
        }
        p->regions[p->nregions++] = (struct slab){r, slabs * len};
        p->region_next = r;
        p->region_left = p->region_slabs = slabs;
    }
    base = p->region_next;
    p->region_next += len;
    p->region_left--;
    p->slabs[p->nslabs++] = (struct slab){base, len};
out:
    pthread_mutex_unlock(&p->lock);
    return base;
}

/* Maps a slab and puts its JOBQ_CORO_STACKS_PER_SLAB stacks in out[].
 * Returns their number (0: out of memory). */
static size_t
slab_map(struct stack_pool *p, struct coro **out)
{
    size_t n = JOBQ_CORO_STACKS_PER_SLAB, len = n * p->slot, guarded = 0;
    struct iovec iov[JOBQ_CORO_STACKS_PER_SLAB];
    bool g[JOBQ_CORO_STACKS_PER_SLAB];
    char *base;

    if ((base = slab_reserve(p, len)) == NULL)
        return 0;
    for (size_t i = 0; i < n; i++) {
        iov[i] = (struct iovec){base + i * p->slot, p->guard};
        g[i] = false;
    }
    if (p->mode == GUARD_MADVISE) {
        if (advise_batch(p, iov, n, MADV_GUARD_INSTALL)) {
            for (size_t i = 0; i < n; i++)
                g[i] = true;
        } else {
            for (size_t i = 0; i < n; i++)
                g[i] = madvise(iov[i].iov_base, p->guard, MADV_GUARD_INSTALL) == 0;
        }
    }
    /* Each shell goes in the top page of its stack right below: fault the
     * 64 pages in with one call rather than 64 faults. */
    for (size_t i = 0; i < n; i++)
        iov[i] = (struct iovec){base + (i + 1) * p->slot - p->page, p->page};
    advise_batch(p, iov, n, MADV_POPULATE_WRITE);
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < n; i++) {
        if (p->mode == GUARD_MPROTECT && p->mprotect_budget > 0 &&
            mprotect(base + i * p->slot, p->guard, PROT_NONE) == 0) {
            p->mprotect_budget--;
            g[i] = true;
        }
        guarded += g[i];
    }
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < n; i++)
        out[i] = shell_init(p, base + (n - 1 - i) * p->slot, g[n - 1 - i]);
    atomic_fetch_add(&p->guarded, (long)guarded);
    atomic_fetch_add(&p->canary_only, (long)(n - guarded));
    return n;
}

/* Makes the n released stacks of cold[] usable again into out[]: their
 * top pages faulted in together, their shells rebuilt. */
#define REVIVE_MAX                                                                                 \
    (JOBQ_CORO_CACHE_STACKS > JOBQ_CORO_STACKS_PER_SLAB ? JOBQ_CORO_CACHE_STACKS                   \
                                                        : JOBQ_CORO_STACKS_PER_SLAB)

static void
cold_revive(struct stack_pool *p, const uintptr_t *cold, size_t n, struct coro **out)
{
    struct iovec iov[REVIVE_MAX];

    for (size_t i = 0; i < n; i++)
        iov[i] = (struct iovec){(char *)(cold[i] & ~(uintptr_t)1) + p->slot - p->page, p->page};
    advise_batch(p, iov, n, MADV_POPULATE_WRITE);
    for (size_t i = 0; i < n; i++)
        out[i] = shell_init(p, (char *)(cold[i] & ~(uintptr_t)1), cold[i] & 1);
}

/* Takes up to want stacks from the shared pool into out[]: resident ones
 * first, then released ones. *low tells whether a burst of spawns is
 * draining the resident ones (see JOBQ_CORO_PREPARE_STACKS). */
static size_t
pool_take(struct stack_pool *p, struct coro **out, size_t want, bool *low)
{
    uintptr_t cold[JOBQ_CORO_CACHE_STACKS];
    size_t got = 0, ncold = 0;

    pthread_mutex_lock(&p->lock);
    while (got < want && p->nhot > 0)
        out[got++] = p->hot[--p->nhot];
    while (got + ncold < want && ncold < JOBQ_CORO_CACHE_STACKS && p->ncold > 0)
        cold[ncold++] = p->cold[--p->ncold];
    *low = p->nhot < JOBQ_CORO_PREPARE_STACKS / 2 &&
           p->nslabs * JOBQ_CORO_STACKS_PER_SLAB >= JOBQ_CORO_PREPARE_AFTER_STACKS;
    pthread_mutex_unlock(&p->lock);
    cold_revive(p, cold, ncold, out + got);
    return got + ncold;
}

bool
stack_prepare_wanted(struct rt *rt)
{
    return atomic_load_explicit(&rt->stacks->prepare, memory_order_relaxed);
}

/*
 * Run by a scheduler thread with nothing else to do: if a spawner asked,
 * makes one batch of free stacks resident (released ones first, else a new
 * slab) and puts it in the shared pool, where the spawner's next take
 * finds it without a syscall. Asks again for itself until the pool holds
 * JOBQ_CORO_PREPARE_STACKS, one batch per pass, so the thread looks at its
 * own queues between batches. Returns whether it did anything.
 */
bool
stack_prepare(struct rt *rt)
{
    struct stack_pool *p = rt->stacks;
    struct coro *batch[JOBQ_CORO_STACKS_PER_SLAB];
    uintptr_t cold[JOBQ_CORO_STACKS_PER_SLAB];
    size_t n = 0, ncold = 0;
    bool more;

    if (!atomic_load_explicit(&p->prepare, memory_order_relaxed) ||
        !atomic_exchange(&p->prepare, false))
        return false;
    pthread_mutex_lock(&p->lock);
    if (p->nhot >= JOBQ_CORO_PREPARE_STACKS) {
        pthread_mutex_unlock(&p->lock);
        return false;
    }
    while (ncold < JOBQ_CORO_STACKS_PER_SLAB && p->ncold > 0)
        cold[ncold++] = p->cold[--p->ncold];
    pthread_mutex_unlock(&p->lock);
    if (ncold > 0) {
        cold_revive(p, cold, ncold, batch);
        n = ncold;
    } else if ((n = slab_map(p, batch)) == 0) {
        return true; /* out of memory: the spawners will meet it and say so */
    }
    pthread_mutex_lock(&p->lock);
    memcpy(p->hot + p->nhot, batch, n * sizeof(*batch));
    p->nhot += n;
    more = p->nhot < JOBQ_CORO_PREPARE_STACKS;
    pthread_mutex_unlock(&p->lock);
    if (more)
        atomic_store(&p->prepare, true);
    return true;
}

/* Free stacks the shared pool keeps resident: JOBQ_CORO_POOL_KEEP, or a
 * quarter of the live coroutines if more, since a load that just fell is
 * likely to come back and a resident stack is reused without a fault. */
static size_t
hot_limit(struct rt *rt)
{
    long live = 0;
    for (int i = 0; i < rt->nthreads; i++)
        live += sched_load(&rt->threads[i]);
    return live / 4 > JOBQ_CORO_POOL_KEEP ? (size_t)live / 4 : JOBQ_CORO_POOL_KEEP;
}

/* Releases the memory of the resident free stacks beyond limit, up to
 * RELEASE_BATCH per call, in one process_madvise (one TLB shoot-down for
 * them all). Returns how many it released. */
static size_t
release_hot(struct stack_pool *p, size_t limit)
{
    struct iovec iov[RELEASE_BATCH];
    uintptr_t rel[RELEASE_BATCH];
    size_t nrel = 0;

    pthread_mutex_lock(&p->lock);
    while (p->nhot > limit && nrel < RELEASE_BATCH) {
        struct coro *c = p->hot[--p->nhot];
        /* Guard markers and mprotect guards survive MADV_DONTNEED; the
         * shell and the canary are rebuilt when the stack is taken. */
        rel[nrel] = (uintptr_t)(c->lo - p->guard) | (c->guarded ? 1u : 0u);
        iov[nrel++] = (struct iovec){c->lo, p->usable};
    }
    pthread_mutex_unlock(&p->lock);
    if (nrel == 0)
        return 0;
    if (!advise_batch(p, iov, nrel, MADV_DONTNEED))
        for (size_t i = 0; i < nrel; i++)
            madvise(iov[i].iov_base, iov[i].iov_len, MADV_DONTNEED);
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < nrel; i++)
        p->cold[p->ncold++] = rel[i];
    pthread_mutex_unlock(&p->lock);
    return nrel;
}

/* Returns the n stacks of src to the shared pool and releases the memory
 * of those beyond hot_limit. */
static void
pool_give(struct rt *rt, struct coro *const *src, size_t n)
{
    struct stack_pool *p = rt->stacks;
    size_t limit = hot_limit(rt);

    pthread_mutex_lock(&p->lock);
    memcpy(p->hot + p->nhot, src, n * sizeof(*src));
    p->nhot += n;
    pthread_mutex_unlock(&p->lock);
    release_hot(p, limit);
}

void
rt_trim(struct rt *rt, size_t keep)
{
    /* Batch by batch, so the lock is never held across a madvise. */
    while (release_hot(rt->stacks, keep) > 0)
        ;
}

_Static_assert(JOBQ_CORO_STACKS_PER_SLAB <= 2 * JOBQ_CORO_CACHE_STACKS,
               "a new slab must fit in a thread's empty cache");

struct coro *
stack_get_slow(struct rt *rt, struct sched *s)
{
    struct stack_pool *p = rt->stacks;
    struct coro *one[JOBQ_CORO_STACKS_PER_SLAB], **dst = s != NULL ? s->cache : one;
    size_t got;
    bool low;

    if ((got = pool_take(p, dst, s != NULL ? JOBQ_CORO_CACHE_STACKS : 1, &low)) == 0 &&
        (got = slab_map(p, dst)) == 0)
        return NULL;
    if (s != NULL && low && !atomic_load_explicit(&p->prepare, memory_order_relaxed) &&
        !atomic_exchange(&p->prepare, true))
        sched_wake_idle(rt, s);
    if (s != NULL) {
        s->ncache = got - 1;
        own_add(&s->st.stacks_in_use, 1);
        return s->cache[got - 1];
    }
    /* A plain thread keeps no cache: the rest of a new slab goes back. */
    if (got > 1)
        pool_give(rt, one + 1, got - 1);
    atomic_fetch_add_explicit(&p->in_use, 1, memory_order_relaxed);
    return one[0];
}

#if defined(JOBQ_ASAN)
void
stack_unpoison(struct coro *c)
{
    /* Frames that never returned (coro_entry's, a leaked coroutine's) leave
     * poisoned shadow that the next user of these addresses would trip
     * on. */
    __asan_unpoison_memory_region(c->lo, (size_t)((char *)c - c->lo));
}
#endif

void
stack_put_slow(struct rt *rt, struct sched *s)
{
    /* The cache is full: the older half goes to the pool, the recently
     * freed (cache-hot) half stays. */
    pool_give(rt, s->cache, JOBQ_CORO_CACHE_STACKS);
    memmove(s->cache, s->cache + JOBQ_CORO_CACHE_STACKS,
            (s->ncache - JOBQ_CORO_CACHE_STACKS) * sizeof(*s->cache));
    s->ncache -= JOBQ_CORO_CACHE_STACKS;
}

static int
cmp_uintptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

int
stack_for_each_used(struct rt *rt, void (*fn)(struct rt *rt, struct coro *c))
{
    struct stack_pool *p = rt->stacks;
    int n = 0;

    /* Released stacks read as zero (CORO_DEAD) but reading them would
     * fault pages in: skip them by address. Masking the guard bit sorts
     * the slots themselves. */
    for (size_t i = 0; i < p->ncold; i++)
        p->cold[i] &= ~(uintptr_t)1;
    if (p->ncold > 0)
        qsort(p->cold, p->ncold, sizeof(*p->cold), cmp_uintptr);
    for (size_t i = 0; i < p->nslabs; i++) {
        for (size_t k = 0; k < JOBQ_CORO_STACKS_PER_SLAB; k++) {
            uintptr_t slot = (uintptr_t)p->slabs[i].addr + k * p->slot;
            struct coro *c;
            if (p->ncold > 0 &&
                bsearch(&slot, p->cold, p->ncold, sizeof(*p->cold), cmp_uintptr) != NULL)
                continue;
            c = shell_at(p, (char *)slot);
            if (c->state != CORO_DEAD) {
                fn(rt, c);
                n++;
            }
        }
    }
    return n;
}

void
stack_stats(struct rt *rt, struct rt_stats *out)
{
    struct stack_pool *p = rt->stacks;
    long in_use = atomic_load(&p->in_use);
    size_t slabs;

    pthread_mutex_lock(&p->lock);
    slabs = p->nslabs;
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < rt->nthreads; i++)
        in_use += atomic_load_explicit(&rt->threads[i].st.stacks_in_use, memory_order_relaxed);
    out->stack_bytes_mapped = (uint64_t)slabs * JOBQ_CORO_STACKS_PER_SLAB * p->slot;
    out->stack_bytes_in_use = in_use > 0 ? (uint64_t)in_use * p->slot : 0;
    out->stacks_guarded = (uint64_t)atomic_load(&p->guarded);
    out->stacks_canary_only = (uint64_t)atomic_load(&p->canary_only);
}

void
stack_pool_free(struct stack_pool *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nregions; i++)
        munmap(p->regions[i].addr, p->regions[i].len);
    free(p->regions);
    free(p->slabs);
    free(p->cold);
    free(p->hot);
    if (p->pidfd >= 0)
        close(p->pidfd);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
