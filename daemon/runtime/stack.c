/*
 * stack — coroutine stacks: mapped in slabs, pooled and reused, each with
 * overflow detection. Owns every stack mapping of a runtime.
 *
 * Layout of one slot: [guard page][usable stack ... struct coro]. The
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
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rt_int.h"

#if defined(JOBQ_ASAN)
#include <sanitizer/asan_interface.h>
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

/* Room left below the lowest frame at a switch: a signal-free leaf call. */
#define STACK_SP_MARGIN 256
#define ALTSTACK_BYTES (64 * 1024)
/* Map entries kept for everything else (libraries, malloc arenas, SQLite)
 * when guard pages are made with mprotect. */
#define MAP_RESERVE 8192

enum guard_mode { GUARD_MADVISE, GUARD_MPROTECT };

struct slab {
    void *addr;
    size_t len;
};

struct stack_pool {
    pthread_mutex_t lock;
    size_t page;
    size_t usable; /* rt->stack_bytes */
    size_t slot;   /* page + usable */
    enum guard_mode mode;
    long mprotect_budget; /* guard pages still allowed in GUARD_MPROTECT */
    struct coro *hot;     /* free stacks with their shell intact */
    size_t nhot;
    uintptr_t *cold; /* free slots released with MADV_DONTNEED (bit 0: guarded) */
    size_t ncold, cold_cap;
    struct slab *slabs;
    size_t nslabs, slabs_cap;
    atomic_long in_use;
    atomic_long guarded;
    atomic_long canary_only;
};

static const uint64_t CANARY = 0x6a6f62712d637a79ull; /* "jobq-czy" */

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
    bool ok;
    if (p == MAP_FAILED)
        return false;
    ok = madvise(p, page, MADV_GUARD_INSTALL) == 0;
    munmap(p, 2 * page);
    return ok;
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
static void __attribute__((noreturn)) overflow_abort(struct coro *c, const char *how)
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
stack_check(struct coro *c, void *sp)
{
    if (RT_UNLIKELY((char *)sp < c->lo + STACK_SP_MARGIN))
        overflow_abort(c, "stack pointer below the limit at a switch");
    if (RT_UNLIKELY(c->canary)) {
        const uint64_t *p = (const uint64_t *)(void *)c->lo;
        for (size_t i = 0; i < JOBQ_CORO_CANARY_BYTES / sizeof(uint64_t); i++)
            if (p[i] != CANARY)
                overflow_abort(c, "canary overwritten");
    }
}

static struct sigaction old_segv;
static size_t segv_page;

static void
segv_handler(int sig, siginfo_t *si, void *uctx)
{
    struct sched *s = rt_tl_sched;
    struct coro *c = s ? s->current : NULL;
    char *addr = si->si_addr;

    if (c != NULL && addr >= c->lo - segv_page && addr < c->lo + STACK_SP_MARGIN)
        overflow_abort(c, "guard page hit");
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
    segv_page = (size_t)sysconf(_SC_PAGESIZE);
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
    struct stack_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    pthread_mutex_init(&p->lock, NULL);
    p->page = (size_t)sysconf(_SC_PAGESIZE);
    p->usable = rt->stack_bytes;
    p->slot = p->page + p->usable;
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
    c->lo = slot + p->page;
    c->guarded = guarded;
    if (!guarded) {
        uint64_t *q = (uint64_t *)(void *)c->lo;
        c->canary = 1;
        for (size_t i = 0; i < JOBQ_CORO_CANARY_BYTES / sizeof(uint64_t); i++)
            q[i] = CANARY;
    }
    return c;
}

/* Maps a slab and threads its stacks onto *list; called without the lock
 * held except for the bookkeeping. Returns the number of stacks. */
static size_t
slab_map(struct stack_pool *p, struct coro **list)
{
    size_t n = JOBQ_CORO_STACKS_PER_SLAB, len = n * p->slot;
    char *base = mmap(NULL, len, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    size_t guarded = 0;

    if (base == MAP_FAILED)
        return 0;
    pthread_mutex_lock(&p->lock);
    if (p->nslabs == p->slabs_cap) {
        size_t cap = p->slabs_cap ? p->slabs_cap * 2 : 64;
        struct slab *s = realloc(p->slabs, cap * sizeof(*s));
        if (s == NULL) {
            pthread_mutex_unlock(&p->lock);
            munmap(base, len);
            return 0;
        }
        p->slabs = s;
        p->slabs_cap = cap;
    }
    p->slabs[p->nslabs++] = (struct slab){base, len};
    for (size_t i = 0; i < n; i++) {
        char *slot = base + i * p->slot;
        bool g = false;
        if (p->mode == GUARD_MADVISE) {
            g = madvise(slot, p->page, MADV_GUARD_INSTALL) == 0;
        } else if (p->mprotect_budget > 0 && mprotect(slot, p->page, PROT_NONE) == 0) {
            p->mprotect_budget--;
            g = true;
        }
        struct coro *c = shell_init(p, slot, g);
        c->next = *list;
        *list = c;
        guarded += g;
    }
    pthread_mutex_unlock(&p->lock);
    atomic_fetch_add(&p->guarded, (long)guarded);
    atomic_fetch_add(&p->canary_only, (long)(n - guarded));
    return n;
}

/* Takes up to want stacks from the shared pool onto *list. Lock held. */
static size_t
pool_take(struct stack_pool *p, struct coro **list, size_t want)
{
    size_t got = 0;
    while (got < want && p->hot != NULL) {
        struct coro *c = p->hot;
        p->hot = c->next;
        p->nhot--;
        c->next = *list;
        *list = c;
        got++;
    }
    while (got < want && p->ncold > 0) {
        uintptr_t e = p->cold[--p->ncold];
        struct coro *c = shell_init(p, (char *)(e & ~(uintptr_t)1), e & 1);
        c->next = *list;
        *list = c;
        got++;
    }
    return got;
}

/* Returns c to the shared pool, releasing its memory beyond the hot
 * reserve. Lock held. */
static void
pool_give(struct stack_pool *p, struct coro *c)
{
    if (p->nhot >= JOBQ_CORO_POOL_KEEP && p->ncold == p->cold_cap) {
        size_t cap = p->cold_cap ? p->cold_cap * 2 : 1024;
        uintptr_t *v = realloc(p->cold, cap * sizeof(*v));
        if (v != NULL) {
            p->cold = v;
            p->cold_cap = cap;
        }
    }
    if (p->nhot < JOBQ_CORO_POOL_KEEP || p->ncold == p->cold_cap) {
        c->next = p->hot;
        p->hot = c;
        p->nhot++;
        return;
    }
    /* Guard markers and mprotect guards survive MADV_DONTNEED. */
    p->cold[p->ncold++] = (uintptr_t)(c->lo - p->page) | (c->guarded ? 1u : 0u);
    madvise(c->lo, p->usable, MADV_DONTNEED);
}

struct coro *
stack_get(struct rt *rt, struct sched *s)
{
    struct stack_pool *p = rt->stacks;
    struct coro *c = NULL;

    if (s != NULL && s->cache != NULL) {
        c = s->cache;
        s->cache = c->next;
        s->ncache--;
    } else {
        struct coro *list = NULL;
        size_t want = s != NULL ? JOBQ_CORO_CACHE_STACKS : 1, got;
        pthread_mutex_lock(&p->lock);
        got = pool_take(p, &list, want);
        pthread_mutex_unlock(&p->lock);
        if (got == 0)
            got = slab_map(p, &list);
        if (got == 0)
            return NULL;
        c = list;
        list = list->next;
        if (s != NULL) {
            s->cache = list;
            s->ncache = got - 1;
        } else if (list != NULL) {
            pthread_mutex_lock(&p->lock);
            while (list != NULL) {
                struct coro *n = list->next;
                pool_give(p, list);
                list = n;
            }
            pthread_mutex_unlock(&p->lock);
        }
    }
    atomic_fetch_add_explicit(&p->in_use, 1, memory_order_relaxed);
    return c;
}

void
stack_unpoison(struct coro *c)
{
#if defined(JOBQ_ASAN)
    /* Frames that never returned (coro_entry's, a leaked coroutine's) leave
     * poisoned shadow that the next user of these addresses would trip
     * on. */
    __asan_unpoison_memory_region(c->lo, (size_t)((char *)c - c->lo));
#else
    (void)c;
#endif
}

void
stack_put(struct rt *rt, struct sched *s, struct coro *c)
{
    struct stack_pool *p = rt->stacks;

    stack_unpoison(c);
    atomic_fetch_sub_explicit(&p->in_use, 1, memory_order_relaxed);
    c->next = s->cache;
    s->cache = c;
    if (++s->ncache <= 2 * JOBQ_CORO_CACHE_STACKS)
        return;
    pthread_mutex_lock(&p->lock);
    while (s->ncache > JOBQ_CORO_CACHE_STACKS) {
        struct coro *x = s->cache;
        s->cache = x->next;
        s->ncache--;
        pool_give(p, x);
    }
    pthread_mutex_unlock(&p->lock);
}

void
stack_stats(struct stack_pool *p, struct rt_stats *out)
{
    size_t slabs;
    pthread_mutex_lock(&p->lock);
    slabs = p->nslabs;
    pthread_mutex_unlock(&p->lock);
    out->stack_bytes_mapped = (uint64_t)slabs * JOBQ_CORO_STACKS_PER_SLAB * p->slot;
    out->stack_bytes_in_use = (uint64_t)atomic_load(&p->in_use) * p->slot;
    out->stacks_guarded = (uint64_t)atomic_load(&p->guarded);
    out->stacks_canary_only = (uint64_t)atomic_load(&p->canary_only);
}

void
stack_pool_free(struct stack_pool *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nslabs; i++)
        munmap(p->slabs[i].addr, p->slabs[i].len);
    free(p->slabs);
    free(p->cold);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
