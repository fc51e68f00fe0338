/*
 * store — the front the daemon calls. It owns one writer thread with the
 * write connection (and, when the backend takes concurrent writers, a
 * second one that runs claims alone: struct writer), and a small pool of
 * read connections. A write
 * call becomes a request on the writer's queue and its caller parks on a
 * wait group; the writer takes everything pending, runs it in one
 * transaction with a savepoint per request (one request's failure undoes
 * only that request), commits once for all of them (group commit: one
 * fsync for many callers) and only then wakes each caller with its own
 * result. If the commit fails, every request of the group gets the storage
 * error and nothing was acknowledged. Reads run on the runtime's blocking
 * pool (or inline on a plain thread), never on a scheduler thread. The
 * database behind it is a struct store_backend_ops (store_sqlite.c, or
 * store_pg.c when the path is a postgresql:// URL).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jobq/limits.h"
#include "jobq/runtime.h"
#include "jobq/store.h"

/* A write request. It lives on its caller's stack, which stays put while
 * the caller is parked, so the writer reads and writes it in place; or,
 * lazy, on the heap, owned by the queue and freed by the writer. */
struct store_req {
    struct store_req *next;
    /* Runs on the writer inside the request's savepoint. */
    int (*fn)(struct store *st, struct store_conn *w, void *arg);
    void *arg;
    int rc;
    struct wg *wg;
    /* A claim or a pgid record: its group may commit without an fsync
     * (set_durable in store.h says why that is safe). */
    bool relaxed;
    /* Nobody waits for it (wg is NULL): it rides in the next group, or
     * commits on its own once it has waited JOBQ_STORE_LAZY_MS. */
    bool lazy;
    /* Durable, but its caller does not mind waiting linger_ns for others
     * to share its fsync (store_completion.patient). */
    bool patient;
    int64_t queued_ns; /* lazy: when it was queued */
};

/*
 * A writer thread, its connection and its queue. The store has one; with a
 * backend that takes several writers at once (PostgreSQL: one more
 * connection of the same node) a second one runs nothing but claims, so
 * that a dispatcher's claim and the completions of the jobs it started
 * run side by side instead of taking turns on one connection.
 */
struct writer {
    struct store *st;
    struct store_conn *conn;
    const char *name; /* its thread's, for top -H and perf */
    bool claims;      /* runs claims only: no submits, no maintenance */
    pthread_t thread;
    bool started;
    /* mu guards the queue and the flags up to lingering. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct store_req *head, *tail;
    size_t qlen;
    size_t nlazy; /* lazy requests among the qlen queued */
    bool stopping;
    bool idle;            /* the writer is waiting on cv: signal it */
    size_t gather_target; /* the writer waits for this many requests: signal it */
    bool lingering;       /* ... but only an impatient one may end its wait */
    /* Writer-thread only. */
    bool relaxed_now; /* the backend commits without fsync now */
    uint64_t since_checkpoint;
    int checkpoint_backoff;   /* busy RESTARTs in a row since the last one that ran */
    int64_t last_durable_end; /* when the last durable group committed */
};

struct store {
    const struct store_backend_ops *ops;
    struct store_opts opts; /* path and boot_id point into our copies */
    char *path;
    char boot_id[JOBQ_BOOT_ID_BYTES];
    uint64_t seed;

    /* wr[0] runs every write; wr[1], when nwriters is 2, the claims. */
    struct writer wr[2];
    int nwriters;
    /* The main writer's only. */
    int64_t pending; /* scheduled + queued + retrying, refreshed per group */
    long gather_ns;
    int64_t lazy_ns;
    int64_t linger_ns; /* 0: patient requests never linger */

    /* Read connections, opened on demand up to nreaders. */
    pthread_mutex_t rmu;
    pthread_cond_t rcv;
    struct store_conn **rfree;
    int nfree, nopen, nreaders;

    _Atomic int64_t max_queued;
    _Atomic int fatal; /* 0, or -EIO once a sync failed: no more writes */
    _Atomic uint64_t commits, commit_failures, requests, max_group, checkpoints, commit_ns;
    _Atomic uint64_t lazy_failures;
};

bool
store_error_is_storage(int rc)
{
    switch (rc) {
    case -ENOSPC:
    case -EIO:
    case -ETIMEDOUT:
    case -ENOMEM:
    case -EROFS:
    case -EACCES:
        return true;
    default:
        return false;
    }
}

const struct store_backend_ops *
store_backend_find(const char *name)
{
    static const struct store_backend_ops *const backends[] = {&store_sqlite_ops, &store_pg_ops};

    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
        if (name == NULL || strcmp(name, backends[i]->name) == 0)
            return backends[i];
    return NULL;
}

static int64_t
mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the writer -------------------------------------------------------- */

/* A transaction under way: the requests it carries, in order. */
struct group {
    struct store_req *head, *tail;
    uint64_t n;
    uint64_t nlazy;      /* of n: lazy requests, whose owners are not coming back */
    uint64_t npatient;   /* of n: patient durable requests */
    uint64_t nimpatient; /* of n: durable requests whose callers want them now */
    int broken;          /* a storage error: the whole group fails with it */
};

/* Takes up to max queued requests, in order. Called with mu held. */
static struct store_req *
take(struct writer *wr, uint64_t max, uint64_t *n)
{
    struct store_req *batch = wr->head, *last = wr->head;

    *n = 0;
    if (batch == NULL || max == 0)
        return NULL;
    *n = 1;
    wr->nlazy -= last->lazy;
    while (last->next != NULL && *n < max) {
        last = last->next;
        wr->nlazy -= last->lazy;
        ++*n;
    }
    wr->head = last->next;
    if (wr->head == NULL)
        wr->tail = NULL;
    wr->qlen -= *n;
    last->next = NULL;
    return batch;
}

static int submit_fn(struct store *st, struct store_conn *w, void *arg);
static bool mergeable_submit(const struct store_req *r);
static struct store_req *merged_submits(struct store *st, struct store_conn *w, struct group *g,
                                        struct store_req *r);

/* Runs each request of batch in its own savepoint and adds it to g. */
static void
group_run(struct writer *wr, struct group *g, struct store_req *batch, uint64_t n)
{
    struct store *st = wr->st;
    const struct store_backend_ops *ops = st->ops;
    int rc;

    if (g->tail != NULL)
        g->tail->next = batch;
    else
        g->head = batch;
    for (struct store_req *r = batch; r != NULL; r = r->next) {
        g->tail = r;
        g->nlazy += r->lazy;
        g->npatient += r->patient;
        g->nimpatient += !r->relaxed && !r->patient;
    }
    g->n += n;
    for (struct store_req *r = batch; r != NULL && !g->broken; r = r->next) {
        struct store_req *last;
        if (mergeable_submit(r) && (last = merged_submits(st, wr->conn, g, r)) != NULL) {
            r = last;
            continue;
        }
        if ((rc = ops->txn(wr->conn, STORE_SAVEPOINT)) < 0) {
            g->broken = rc;
            break;
        }
        r->rc = r->fn(st, wr->conn, r->arg);
        if (r->rc < 0) {
            /* A storage error may have rolled the transaction back under
             * us: then the earlier requests are gone too. */
            if (store_error_is_storage(r->rc))
                g->broken = r->rc;
            else if ((rc = ops->txn(wr->conn, STORE_ROLLBACK_TO)) < 0)
                g->broken = store_error_is_storage(rc) ? rc : -EIO;
        } else if ((rc = ops->txn(wr->conn, STORE_RELEASE)) < 0) {
            g->broken = rc;
        }
    }
}

/*
 * After a failed step: if it was a sync, the files now hold something
 * nobody knows (the kernel may have dropped the pages it could not write
 * and will not say so twice), and retrying the fsync would only report
 * success for data that is not there. Like PostgreSQL since its
 * "fsyncgate", stop writing instead: the owner closes the store and the
 * next open rebuilds the state from what is on disk. Writer thread.
 */
static void
check_fatal(struct store *st, struct store_conn *w, int rc)
{
    int none = 0;

    if (rc >= 0 || atomic_load(&st->fatal) < 0 || !st->ops->sync_failed(w))
        return;
    /* Once, though both writers (PostgreSQL) may find it. */
    if (!atomic_compare_exchange_strong(&st->fatal, &none, -EIO))
        return;
    if (st->opts.on_fatal != NULL)
        st->opts.on_fatal(st->opts.on_fatal_arg, rc);
}

/* COMMIT (or ROLLBACK after a storage error), then every requester of the
 * group learns its result, and only now. */
static void
group_end(struct writer *wr, struct group *g)
{
    struct store *st = wr->st;
    struct store_req *r, *next;
    int64_t t0 = mono_ns();
    int rc = g->broken;

    if (rc < 0)
        st->ops->txn(wr->conn, STORE_ROLLBACK);
    else
        rc = st->ops->txn(wr->conn, STORE_COMMIT);
    if (rc < 0) {
        /* Not on disk: nobody may be told otherwise. */
        for (r = g->head; r != NULL; r = r->next)
            r->rc = rc;
        atomic_fetch_add(&st->commit_failures, 1);
        check_fatal(st, wr->conn, rc);
    } else {
        int64_t ns = mono_ns() - t0;
        atomic_fetch_add(&st->commit_ns, (uint64_t)ns);
        if (st->opts.on_commit != NULL)
            st->opts.on_commit(st->opts.on_commit_arg, ns, (int64_t)g->n);
        atomic_fetch_add(&st->commits, 1);
        atomic_fetch_add(&st->requests, g->n);
        if (g->n > atomic_load(&st->max_group))
            atomic_store(&st->max_group, g->n);
        wr->since_checkpoint++;
    }
    /* Each scheduler thread is woken once, with all its requesters. */
    rt_wake_batch_begin();
    for (r = g->head; r != NULL; r = next) {
        next = r->next; /* r is gone once its caller wakes */
        if (!r->lazy) {
            wg_done(r->wg);
            continue;
        }
        /* -ESTALE: the attempt ended first; nothing left to record. */
        if (r->rc < 0 && r->rc != -ESTALE)
            atomic_fetch_add(&st->lazy_failures, 1);
        free(r); /* the first member of its allocation (store_set_pgid_lazy) */
    }
    rt_wake_batch_end();
}

static void
checkpoint(struct writer *wr)
{
    struct store *st = wr->st;
    int rc;

    if (atomic_load(&st->fatal) < 0)
        return; /* nothing more is written */
    /* -EAGAIN: a reader was in the way. The commits stay counted so that
     * the next idle period retries, each retry waiting twice as long as the
     * last: a reader parked on the WAL (an operator's sqlite3 shell) must
     * not turn the idle writer into a periodic wake-up. */
    if ((rc = st->ops->maintain(wr->conn)) == -EAGAIN) {
        if (wr->checkpoint_backoff < 6)
            wr->checkpoint_backoff++;
        return;
    }
    if (rc == 0)
        atomic_fetch_add(&st->checkpoints, 1);
    check_fatal(st, wr->conn, rc);
    wr->since_checkpoint = 0;
    wr->checkpoint_backoff = 0;
}

static void
wait_idle(struct writer *wr)
{
    struct store *st = wr->st;
    int idle_ms = st->opts.checkpoint_idle_ms > 0 ? st->opts.checkpoint_idle_ms
                                                  : JOBQ_STORE_CHECKPOINT_IDLE_MS;
    struct timespec ts;

    idle_ms <<= wr->checkpoint_backoff; /* at most 64 × idle_ms */

    wr->idle = true;
    if (wr->since_checkpoint == 0) {
        pthread_cond_wait(&wr->cv, &wr->mu);
    } else {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += idle_ms / 1000;
        ts.tv_nsec += (long)(idle_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (pthread_cond_timedwait(&wr->cv, &wr->mu, &ts) == ETIMEDOUT && wr->head == NULL) {
            /* Idle with commits since the last checkpoint: restart the
             * WAL now, while nobody waits on the writer. */
            wr->idle = false;
            pthread_mutex_unlock(&wr->mu);
            checkpoint(wr);
            pthread_mutex_lock(&wr->mu);
        }
    }
    wr->idle = false;
}

/*
 * Waits until there is a group to run: a request whose caller waits, lazy
 * requests that have waited lazy_ns, or the end. Lazy requests
 * alone do not start a transaction before then: they ride in the next
 * group someone waits for, which is what saves the commit. Called with mu
 * held.
 */
static void
wait_work(struct writer *wr)
{
    struct store *st = wr->st;

    while (!wr->stopping) {
        struct timespec ts;
        int64_t due;

        if (wr->head == NULL) {
            wait_idle(wr);
            continue;
        }
        if (wr->qlen > wr->nlazy)
            return;
        /* Only lazy ones, in order: the head is the oldest. */
        due = wr->head->queued_ns + st->lazy_ns;
        if (mono_ns() >= due)
            return;
        ts.tv_sec = due / 1000000000;
        ts.tv_nsec = due % 1000000000;
        wr->idle = true; /* an arrival someone waits for must wake us */
        pthread_cond_timedwait(&wr->cv, &wr->mu, &ts);
        wr->idle = false;
    }
}

/*
 * While the group is open and smaller than the last one, waits (at most
 * until deadline) for more requests to run in it. The requesters of the
 * last group are on their way back with their next request: committing
 * without them would split concurrent submitters into two halves that take
 * turns, each group half as big. A lone sequential submitter never waits:
 * its group is already as big as the last. Called with mu held; returns
 * with mu held and the queue non-empty, or false if the time is up.
 */
/* Whether g is still short of target requesters (lazy records ride along
 * and count for nothing: target counts the last group's requesters),
 * within the size limit of a group. */
static bool
short_of(const struct group *g, uint64_t target)
{
    return g->n < JOBQ_STORE_BATCH_MAX_REQS && g->n - g->nlazy < target;
}

static bool
gather(struct writer *wr, const struct group *g, uint64_t target, const struct timespec *deadline)
{
    while (wr->head == NULL && short_of(g, target) && !wr->stopping) {
        wr->gather_target = 1;
        if (pthread_cond_timedwait(&wr->cv, &wr->mu, deadline) == ETIMEDOUT)
            break;
    }
    wr->gather_target = 0;
    return wr->head != NULL && short_of(g, target);
}

static void *
writer_main(void *arg)
{
    struct writer *wr = arg;
    struct store *st = wr->st;
    uint64_t every = st->opts.checkpoint_commits > 0 ? (uint64_t)st->opts.checkpoint_commits
                                                     : JOBQ_STORE_CHECKPOINT_COMMITS;
    uint64_t last_n = 0;

    pthread_mutex_lock(&wr->mu);
    for (;;) {
        struct group g = {0};
        struct store_req *batch;
        struct timespec deadline;
        uint64_t n, target;
        int64_t wait_ns;
        bool relaxed, lingering;
        int rc;

        wait_work(wr);
        if (wr->head == NULL)
            break; /* stopping, and everything is answered */
        batch = take(wr, JOBQ_STORE_BATCH_MAX_REQS, &n);
        pthread_mutex_unlock(&wr->mu);

        /* A group of nothing but claims and pgid records commits without
         * an fsync; one durable request makes the whole group durable. */
        relaxed = st->ops->set_durable != NULL;
        for (struct store_req *q = batch; q != NULL && relaxed; q = q->next)
            relaxed = q->relaxed;
        if (relaxed != wr->relaxed_now && st->ops->set_durable(wr->conn, !relaxed) == 0)
            wr->relaxed_now = relaxed;
        if ((rc = atomic_load(&st->fatal)) < 0 || (rc = st->ops->txn(wr->conn, STORE_BEGIN)) < 0)
            g.broken = rc;
        else if (!wr->claims && atomic_load(&st->max_queued) > 0 &&
                 (rc = st->ops->pending(wr->conn, &st->pending)) < 0)
            g.broken = rc;
        group_run(wr, &g, batch, n);
        /* Keep running arrivals in this transaction until the last
         * group's requesters are back or gather_ns has passed. */
        target = last_n < JOBQ_STORE_BATCH_MAX_REQS ? last_n : JOBQ_STORE_BATCH_MAX_REQS;
        /* Claims do not gather: a group of them holds every claimer until
         * the last is back, and the claimers then complete in lockstep on
         * the other writer instead of beside its claims (one benchmark run
         * in three fell from 44k to 30k jobs/s). */
        wait_ns = wr->claims ? 0 : st->gather_ns;
        /* Nothing but patient writes (completions while many jobs run),
         * and the last fsync just ended: more are on their way, and one
         * fsync for all of them is what a busy disk allows. An impatient
         * arrival (a submit) ends the wait at once. */
        lingering = !wr->relaxed_now && st->linger_ns > 0 && g.npatient > 0 && g.nimpatient == 0 &&
                    mono_ns() - wr->last_durable_end < st->linger_ns;
        if (lingering) {
            target = JOBQ_STORE_BATCH_MAX_REQS;
            wait_ns = st->linger_ns;
        }
        /* (A relaxed group commits too fast to be worth holding open, and
         * a durable arrival must not join it.) */
        if (!wr->relaxed_now && wait_ns > 0 && short_of(&g, target) && !g.broken) {
            clock_gettime(CLOCK_MONOTONIC, &deadline);
            deadline.tv_sec += wait_ns / 1000000000;
            deadline.tv_nsec += wait_ns % 1000000000;
            if (deadline.tv_nsec >= 1000000000) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000;
            }
            pthread_mutex_lock(&wr->mu);
            wr->lingering = lingering;
            while (!g.broken && !(lingering && g.nimpatient > 0) &&
                   gather(wr, &g, target, &deadline)) {
                batch = take(wr, JOBQ_STORE_BATCH_MAX_REQS - g.n, &n);
                pthread_mutex_unlock(&wr->mu);
                group_run(wr, &g, batch, n);
                pthread_mutex_lock(&wr->mu);
            }
            wr->lingering = false;
            pthread_mutex_unlock(&wr->mu);
        }
        group_end(wr, &g);
        if (!wr->relaxed_now) {
            last_n = g.n - g.nlazy; /* the gathering target follows durable groups */
            wr->last_durable_end = mono_ns();
        }
        if (!wr->claims && wr->since_checkpoint >= every << wr->checkpoint_backoff)
            checkpoint(wr);
        pthread_mutex_lock(&wr->mu);
    }
    pthread_mutex_unlock(&wr->mu);
    return NULL;
}

static int claim_fn(struct store *st, struct store_conn *w, void *arg);

/* Queues req and parks the caller until the writer has committed (or
 * failed) the group that carried it. Returns req's result. */
static int
store_call_as(struct store *st, int (*fn)(struct store *, struct store_conn *, void *), void *arg,
              bool relaxed, bool patient)
{
    struct store_req req = {
        .fn = fn, .arg = arg, .rc = -EIO, .relaxed = relaxed, .patient = patient && !relaxed};
    struct writer *wr = &st->wr[fn == claim_fn && st->nwriters > 1];
    bool wake;
    int rc;

    if ((rc = atomic_load(&st->fatal)) < 0)
        return rc;
    if ((rc = wg_new(&req.wg)) < 0)
        return rc;
    wg_add(req.wg, 1);
    pthread_mutex_lock(&wr->mu);
    if (wr->stopping) {
        pthread_mutex_unlock(&wr->mu);
        wg_free(req.wg);
        return -ESHUTDOWN;
    }
    if (wr->tail != NULL)
        wr->tail->next = &req;
    else
        wr->head = &req;
    wr->tail = &req;
    wr->qlen++;
    /* A busy writer finds the request when its group ends: no wake-up. */
    /* A lingering writer takes what came at the end of its wait: only an
     * impatient durable request is worth a wake-up before that. */
    wake = wr->idle || (wr->gather_target > 0 && wr->qlen >= wr->gather_target &&
                        (!wr->lingering || (!req.relaxed && !req.patient)));
    if (wake) {
        wr->idle = false;
        wr->gather_target = 0;
    }
    pthread_mutex_unlock(&wr->mu);
    if (wake)
        pthread_cond_signal(&wr->cv);
    /* No context: a commit is never abandoned halfway, and the request
     * lives on this stack until the writer is done with it. */
    wg_wait(req.wg, NULL, RT_FOREVER);
    wg_free(req.wg);
    return req.rc;
}

static int
store_call(struct store *st, int (*fn)(struct store *, struct store_conn *, void *), void *arg)
{
    return store_call_as(st, fn, arg, false, false);
}

/* Queues req (lazy, on the heap) and returns at once: the writer owns it
 * from here and frees it after its group. On failure req is freed. */
static int
store_call_lazy(struct store *st, struct store_req *req)
{
    struct writer *wr = &st->wr[0];
    bool wake;
    int rc;

    req->lazy = true;
    req->relaxed = true;
    req->queued_ns = mono_ns();
    if ((rc = atomic_load(&st->fatal)) < 0) {
        free(req);
        return rc;
    }
    pthread_mutex_lock(&wr->mu);
    if (wr->stopping) {
        pthread_mutex_unlock(&wr->mu);
        free(req);
        return -ESHUTDOWN;
    }
    /* A writer asleep on an empty queue may sleep without a timeout: it
     * must learn of the lazy request to commit it in time. A writer that
     * is busy, or already waiting for lazy ones, finds it anyway. */
    wake = wr->idle && wr->head == NULL;
    if (wr->tail != NULL)
        wr->tail->next = req;
    else
        wr->head = req;
    wr->tail = req;
    wr->qlen++;
    wr->nlazy++;
    pthread_mutex_unlock(&wr->mu);
    if (wake)
        pthread_cond_signal(&wr->cv);
    return 0;
}

/* ---- reads ------------------------------------------------------------- */

static int
reader_get(struct store *st, struct store_conn **out)
{
    char why[256];
    int rc;

    pthread_mutex_lock(&st->rmu);
    while (st->nfree == 0 && st->nopen >= st->nreaders)
        pthread_cond_wait(&st->rcv, &st->rmu);
    if (st->nfree > 0) {
        *out = st->rfree[--st->nfree];
        pthread_mutex_unlock(&st->rmu);
        return 0;
    }
    st->nopen++; /* a slot for the one we open, outside the lock */
    pthread_mutex_unlock(&st->rmu);
    if ((rc = st->ops->open(&st->opts, STORE_READER, out, why, sizeof(why))) < 0) {
        pthread_mutex_lock(&st->rmu);
        st->nopen--;
        pthread_cond_signal(&st->rcv);
        pthread_mutex_unlock(&st->rmu);
    }
    return rc;
}

static void
reader_put(struct store *st, struct store_conn *c)
{
    pthread_mutex_lock(&st->rmu);
    st->rfree[st->nfree++] = c;
    pthread_cond_signal(&st->rcv);
    pthread_mutex_unlock(&st->rmu);
}

struct read_call {
    struct store *st;
    int (*fn)(struct store_conn *c, void *arg);
    void *arg;
};

static int
read_run(void *arg)
{
    struct read_call *rc = arg;
    struct store_conn *c;
    int r;

    if ((r = reader_get(rc->st, &c)) < 0)
        return r;
    r = rc->fn(c, rc->arg);
    reader_put(rc->st, c);
    return r;
}

/* SQLite blocks on disk: a coroutine hands it to the blocking pool; a
 * plain thread (main, tests, tools) may just block. */
static int
store_read(struct store *st, int (*fn)(struct store_conn *c, void *arg), void *arg)
{
    struct read_call rc = {.st = st, .fn = fn, .arg = arg};

    if (coro_self() != NULL)
        return rt_blocking(NULL, read_run, &rc);
    return read_run(&rc);
}

/* ---- open and close ---------------------------------------------------- */

/* The kernel's id of this boot: pgids recorded under another boot name no
 * process that could still be alive. */
static void
read_boot_id(char *buf, size_t len)
{
    ssize_t n;
    int fd;

    buf[0] = '\0';
    if ((fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC)) < 0)
        return;
    n = read(fd, buf, len - 1);
    close(fd);
    if (n <= 0) {
        buf[0] = '\0';
        return;
    }
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
}

int
store_new(const struct store_opts *opts, struct store **out, char *why, size_t whylen)
{
    struct store *st;
    sigset_t all, old;
    int rc;

    if (opts == NULL || opts->path == NULL) {
        snprintf(why, whylen, "no database path");
        return -EINVAL;
    }
    if ((st = calloc(1, sizeof(*st))) == NULL)
        return -ENOMEM;
    for (int i = 0; i < 2; i++) {
        /* The idle timeout is measured on the monotonic clock: a wall
         * clock step must not stall or storm checkpoints. */
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&st->wr[i].cv, &ca);
        pthread_condattr_destroy(&ca);
        pthread_mutex_init(&st->wr[i].mu, NULL);
        st->wr[i].st = st;
    }
    st->wr[0].name = "jobq-store";
    st->wr[1].name = "jobq-claims";
    st->wr[1].claims = true;
    pthread_mutex_init(&st->rmu, NULL);
    pthread_cond_init(&st->rcv, NULL);
    st->opts = *opts;
    /* A libpq URL names PostgreSQL; anything else is an SQLite file. */
    if (opts->backend == NULL && (strncmp(opts->path, "postgresql://", 13) == 0 ||
                                  strncmp(opts->path, "postgres://", 11) == 0))
        st->opts.backend = "postgresql";
    if ((st->ops = store_backend_find(st->opts.backend)) == NULL) {
        snprintf(why, whylen, "unknown store backend \"%s\"", st->opts.backend);
        rc = -EINVAL;
        goto out;
    }
    if ((st->path = strdup(opts->path)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    st->opts.path = st->path;
    if (opts->boot_id != NULL)
        snprintf(st->boot_id, sizeof(st->boot_id), "%s", opts->boot_id);
    else
        read_boot_id(st->boot_id, sizeof(st->boot_id));
    st->opts.boot_id = st->boot_id;
    st->seed = opts->seed ? opts->seed : (uint64_t)mono_ns() ^ (uint64_t)getpid() << 32;
    atomic_store(&st->max_queued, opts->max_queued);
    st->nreaders = opts->readers > 0 ? opts->readers : JOBQ_STORE_READERS;
    st->gather_ns = opts->gather_us < 0   ? 0
                    : opts->gather_us > 0 ? (long)opts->gather_us * 1000
                                          : (long)JOBQ_STORE_GATHER_US * 1000;
    st->lazy_ns = (int64_t)(opts->lazy_ms > 0 ? opts->lazy_ms : JOBQ_STORE_LAZY_MS) * 1000000;
    st->linger_ns = opts->linger_us < 0   ? 0
                    : opts->linger_us > 0 ? (int64_t)opts->linger_us * 1000
                                          : (int64_t)JOBQ_STORE_LINGER_US * 1000;
    if ((st->rfree = calloc((size_t)st->nreaders, sizeof(*st->rfree))) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = st->ops->open(&st->opts, STORE_WRITER, &st->wr[0].conn, why, whylen)) < 0)
        goto out;
    st->nwriters = 1;
    if (st->ops->open_claims != NULL) {
        if ((rc = st->ops->open_claims(st->wr[0].conn, &st->opts, &st->wr[1].conn, why, whylen)) <
            0)
            goto out;
        st->nwriters = 2;
    }
    /* Signals belong to the daemon's main thread, not to the writers. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 0; i < st->nwriters && rc == 0; i++) {
        struct writer *wr = &st->wr[i];
        if ((rc = -pthread_create(&wr->thread, NULL, writer_main, wr)) == 0) {
            wr->started = true;
            pthread_setname_np(wr->thread, wr->name); /* for top -H and perf */
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0) {
        snprintf(why, whylen, "cannot start the store writer thread: %s", strerror(-rc));
        goto out;
    }
    *out = st;
    st = NULL;
out:
    store_free(st);
    return rc;
}

void
store_free(struct store *st)
{
    if (st == NULL)
        return;
    for (int i = 0; i < 2; i++) {
        struct writer *wr = &st->wr[i];
        if (!wr->started)
            continue;
        pthread_mutex_lock(&wr->mu);
        wr->stopping = true;
        pthread_mutex_unlock(&wr->mu);
        pthread_cond_signal(&wr->cv);
        pthread_join(wr->thread, NULL);
    }
    for (int i = 0; i < st->nfree; i++)
        st->ops->close(st->rfree[i]);
    /* The claims' connection borrows the writer's node: it goes first. */
    if (st->wr[1].conn != NULL)
        st->ops->close(st->wr[1].conn);
    if (st->wr[0].conn != NULL)
        st->ops->close(st->wr[0].conn); /* the last close checkpoints and removes the WAL */
    free(st->rfree);
    free(st->path);
    for (int i = 0; i < 2; i++) {
        pthread_cond_destroy(&st->wr[i].cv);
        pthread_mutex_destroy(&st->wr[i].mu);
    }
    pthread_cond_destroy(&st->rcv);
    pthread_mutex_destroy(&st->rmu);
    free(st);
}

void
store_set_max_queued(struct store *st, int64_t max_queued)
{
    atomic_store(&st->max_queued, max_queued);
}

/* ---- writes ------------------------------------------------------------ */

struct submit_args {
    const struct job_spec *specs;
    size_t n;
    int64_t *ids;
    bool *existed;
};

static int
submit_fn(struct store *st, struct store_conn *w, void *arg)
{
    struct submit_args *a = arg;
    int64_t now = job_now_ms(), max = atomic_load(&st->max_queued), added = 0;
    int rc;

    /* The whole batch counts (docs/PROTOCOL.md): refuse before writing. */
    if (max > 0 && st->pending + (int64_t)a->n > max)
        return -EAGAIN;
    if ((rc = st->ops->submit(w, a->specs, a->n, now, a->ids, a->existed)) < 0)
        return rc;
    for (size_t i = 0; i < a->n; i++)
        added += !a->existed[i];
    st->pending += added;
    return 0;
}

/* A one-job submit without a unique key: several in a row are written
 * with one multi-row INSERT (the backend batches them as it does a
 * batch submit), not one statement and one savepoint each. */
static bool
mergeable_submit(const struct store_req *r)
{
    const struct submit_args *a = r->arg;
    return r->fn == submit_fn && a->n == 1 && a->specs[0].unique_key == NULL;
}

#define MERGE_MAX 64

/* Runs r and the mergeable submits right after it (up to MERGE_MAX) as one
 * submit in one savepoint. Returns the last request it ran, or NULL if
 * it ran none (fewer than two, the queue limit in the way, or the merged
 * write refused: each then runs alone, as before). */
static struct store_req *
merged_submits(struct store *st, struct store_conn *w, struct group *g, struct store_req *r)
{
    struct job_spec specs[MERGE_MAX];
    int64_t ids[MERGE_MAX], now = job_now_ms(), max = atomic_load(&st->max_queued);
    bool existed[MERGE_MAX];
    struct store_req *q, *last = r;
    size_t k = 0;
    int rc;

    for (q = r; q != NULL && k < MERGE_MAX && mergeable_submit(q); q = q->next) {
        specs[k++] = ((const struct submit_args *)q->arg)->specs[0];
        last = q;
    }
    if (k < 2 || (max > 0 && st->pending + (int64_t)k > max))
        return NULL;
    if ((rc = st->ops->txn(w, STORE_SAVEPOINT)) < 0) {
        g->broken = rc;
        return last; /* the group fails whole */
    }
    if ((rc = st->ops->submit(w, specs, k, now, ids, existed)) < 0) {
        if (store_error_is_storage(rc)) {
            g->broken = rc;
            return last;
        }
        if ((rc = st->ops->txn(w, STORE_ROLLBACK_TO)) < 0)
            g->broken = store_error_is_storage(rc) ? rc : -EIO;
        return g->broken ? last : NULL;
    }
    if ((rc = st->ops->txn(w, STORE_RELEASE)) < 0) {
        g->broken = rc;
        return last;
    }
    q = r;
    for (size_t i = 0; i < k; i++, q = q->next) {
        struct submit_args *a = q->arg;
        a->ids[0] = ids[i];
        a->existed[0] = false;
        q->rc = 0;
    }
    st->pending += (int64_t)k;
    return last;
}

int
store_submit_batch(struct store *st, const struct job_spec *specs, size_t n, int64_t *ids,
                   bool *existed, char *why, size_t whylen)
{
    struct submit_args a = {.specs = specs, .n = n, .ids = ids, .existed = existed};
    char reason[256];
    bool one;
    int rc;

    if (n == 0)
        return 0;
    if (n > JOBQ_BATCH_MAX_JOBS) {
        snprintf(why, whylen, "%zu jobs in one batch, more than the limit of %d", n,
                 JOBQ_BATCH_MAX_JOBS);
        return -EINVAL;
    }
    /* Validated here, on the caller's thread: the writer's time is
     * everyone's. */
    for (size_t i = 0; i < n; i++) {
        if ((rc = job_spec_validate(&specs[i], reason, sizeof(reason))) < 0) {
            if (n == 1)
                snprintf(why, whylen, "%s", reason);
            else
                snprintf(why, whylen, "job %zu: %s", i, reason);
            return rc;
        }
    }
    /* The backend always reports which specs matched a unique key. */
    if (existed == NULL) {
        if (n == 1)
            a.existed = &one;
        else if ((a.existed = calloc(n, sizeof(*a.existed))) == NULL)
            return -ENOMEM;
    }
    rc = store_call(st, submit_fn, &a);
    if (existed == NULL && n > 1)
        free(a.existed);
    return rc;
}

int
store_submit(struct store *st, const struct job_spec *spec, int64_t *id, bool *existed, char *why,
             size_t whylen)
{
    return store_submit_batch(st, spec, 1, id, existed, why, whylen);
}

struct claim_args {
    int64_t now;
    int max;
    struct job **jobs;
    int n;
    int64_t *expired; /* JOBQ_STORE_CLAIM_MAX */
    int nexpired;
};

static int
claim_fn(struct store *st, struct store_conn *w, void *arg)
{
    struct claim_args *a = arg;

    return st->ops->claim(w, a->now, a->max, st->boot_id, a->jobs, &a->n, a->expired, &a->nexpired);
}

int
store_claim(struct store *st, int64_t now, int max, struct job **jobs, int *n)
{
    struct claim_args a = {.now = now, .max = max, .jobs = jobs};
    int rc;

    *n = 0;
    if (max <= 0)
        return 0;
    if (max > JOBQ_STORE_CLAIM_MAX)
        return -EINVAL;
    if (st->opts.on_expired != NULL &&
        (a.expired = malloc(JOBQ_STORE_CLAIM_MAX * sizeof(*a.expired))) == NULL)
        return -ENOMEM;
    rc = store_call_as(st, claim_fn, &a, true, false);
    if (rc < 0) {
        /* Claimed in a group that did not commit: they are not running. */
        for (int i = 0; i < a.n; i++)
            job_free(jobs[i]);
        free(a.expired);
        return rc;
    }
    for (int i = 0; i < a.nexpired; i++)
        st->opts.on_expired(st->opts.on_expired_arg, a.expired[i]);
    free(a.expired);
    *n = a.n;
    return 0;
}

struct pgid_args {
    int64_t id;
    int32_t attempt, pgid;
};

static int
pgid_fn(struct store *st, struct store_conn *w, void *arg)
{
    struct pgid_args *a = arg;

    return st->ops->set_pgid(w, a->id, a->attempt, a->pgid);
}

int
store_set_pgid(struct store *st, int64_t id, int32_t attempt, int32_t pgid)
{
    struct pgid_args a = {.id = id, .attempt = attempt, .pgid = pgid};

    return store_call_as(st, pgid_fn, &a, true, false);
}

int
store_set_pgid_lazy(struct store *st, int64_t id, int32_t attempt, int32_t pgid)
{
    struct lazy_pgid {
        struct store_req req; /* first: group_end frees the whole through it */
        struct pgid_args a;
    } *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return -ENOMEM;
    l->a = (struct pgid_args){.id = id, .attempt = attempt, .pgid = pgid};
    l->req = (struct store_req){.fn = pgid_fn, .arg = &l->a, .rc = -EIO};
    return store_call_lazy(st, &l->req);
}

struct complete_args {
    const struct store_completion *c;
    size_t n;
    int *rcs;
};

static int
complete_fn(struct store *st, struct store_conn *w, void *arg)
{
    struct complete_args *a = arg;
    int rc = st->ops->complete(w, a->c, a->n, job_now_ms(), a->rcs);

    /* Alone, a refused completion is the request's result; in a batch the
     * others still commit (the backend refuses before writing). */
    if (rc == 0 && a->n == 1)
        rc = a->rcs[0];
    return rc;
}

int
store_complete_batch(struct store *st, const struct store_completion *c, size_t n, int *rcs)
{
    struct complete_args a = {.c = c, .n = n, .rcs = rcs};
    bool patient = true;
    int rc;

    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        patient = patient && c[i].patient;
    rc = store_call_as(st, complete_fn, &a, false, patient);
    if (n == 1) {
        rcs[0] = rc; /* its own result, or the group's storage error */
        return rc;
    }
    if (rc < 0) {
        /* The group did not commit: no completion of this call did. */
        for (size_t i = 0; i < n; i++)
            rcs[i] = rc;
        return rc;
    }
    return 0;
}

int
store_complete(struct store *st, const struct store_completion *c)
{
    int rc;

    return store_complete_batch(st, c, 1, &rc);
}

struct cancel_args {
    struct store_who who;
    int64_t id;
    bool was_running;
    int32_t attempt;
};

static int
cancel_fn(struct store *st, struct store_conn *w, void *arg)
{
    struct cancel_args *a = arg;

    return st->ops->cancel(w, a->who, a->id, job_now_ms(), &a->was_running, &a->attempt);
}

int
store_cancel(struct store *st, struct store_who who, int64_t id, bool *was_running,
             int32_t *attempt)
{
    struct cancel_args a = {.who = who, .id = id};
    int rc = store_call(st, cancel_fn, &a);

    if (was_running != NULL)
        *was_running = rc == 0 && a.was_running;
    if (attempt != NULL)
        *attempt = rc == 0 ? a.attempt : 0;
    return rc;
}

struct retry_args {
    struct store_who who;
    int64_t id;
};

static int
retry_fn(struct store *st, struct store_conn *w, void *arg)
{
    struct retry_args *a = arg;

    return st->ops->retry(w, a->who, a->id, job_now_ms());
}

int
store_retry(struct store *st, struct store_who who, int64_t id)
{
    struct retry_args a = {.who = who, .id = id};

    return store_call(st, retry_fn, &a);
}

struct queue_args {
    const char *queue;
    int paused;
    int32_t limit;
};

static int
queue_fn(struct store *st, struct store_conn *w, void *arg)
{
    struct queue_args *a = arg;

    return st->ops->queue_set(w, a->queue, a->paused, a->limit);
}

int
store_queue_pause(struct store *st, const char *queue, bool paused)
{
    struct queue_args a = {.queue = queue, .paused = paused, .limit = -1};

    if (queue == NULL || queue[0] == '\0' || strlen(queue) > JOBQ_NAME_MAX_BYTES)
        return -EINVAL;
    return store_call(st, queue_fn, &a);
}

int
store_queue_set_limit(struct store *st, const char *queue, int32_t limit)
{
    struct queue_args a = {.queue = queue, .paused = -1, .limit = limit};

    if (queue == NULL || queue[0] == '\0' || strlen(queue) > JOBQ_NAME_MAX_BYTES || limit < 0)
        return -EINVAL;
    return store_call(st, queue_fn, &a);
}

struct purge_args {
    struct store_who who;
    int64_t before;
    unsigned states;
    int64_t *ids;
    int n;
};

static int
purge_fn(struct store *st, struct store_conn *w, void *arg)
{
    struct purge_args *a = arg;

    return st->ops->purge(w, a->who, a->before, a->states, JOBQ_STORE_PURGE_CHUNK, a->ids, &a->n);
}

int
store_purge(struct store *st, struct store_who who, int64_t finished_before, unsigned states,
            void (*on_chunk)(void *arg, const int64_t *ids, int n), void *arg, int64_t *deleted)
{
    struct purge_args a = {.who = who, .before = finished_before, .states = states};
    int64_t total = 0;
    int rc;

    if (deleted != NULL)
        *deleted = 0;
    if ((a.ids = calloc(JOBQ_STORE_PURGE_CHUNK, sizeof(*a.ids))) == NULL)
        return -ENOMEM;
    /* One request per chunk: submits and completions queue up between
     * chunks instead of behind the whole purge. */
    do {
        a.n = 0;
        if ((rc = store_call(st, purge_fn, &a)) < 0)
            break;
        total += a.n;
        if (a.n > 0 && on_chunk != NULL)
            on_chunk(arg, a.ids, a.n);
    } while (a.n == JOBQ_STORE_PURGE_CHUNK);
    free(a.ids);
    if (deleted != NULL)
        *deleted = total;
    return rc;
}

struct recover_args {
    uint64_t seed;
    int64_t now, retrying, failed;
};

static int
recover_fn(struct store *st, struct store_conn *w, void *arg)
{
    struct recover_args *a = arg;

    return st->ops->recover(w, a->now, a->seed, &a->retrying, &a->failed);
}

int
store_recover(struct store *st, int64_t now, int64_t *retrying, int64_t *failed)
{
    struct recover_args a = {.seed = st->seed, .now = now};
    int rc = store_call(st, recover_fn, &a);

    if (retrying != NULL)
        *retrying = rc == 0 ? a.retrying : 0;
    if (failed != NULL)
        *failed = rc == 0 ? a.failed : 0;
    return rc;
}

/* ---- reads ------------------------------------------------------------- */

struct running_args {
    const struct store_backend_ops *ops;
    struct store_running *out;
    size_t n;
};

static int
running_fn(struct store_conn *c, void *arg)
{
    struct running_args *a = arg;

    return a->ops->running(c, &a->out, &a->n);
}

int
store_recover_list(struct store *st, struct store_running **out, size_t *n)
{
    struct running_args a = {.ops = st->ops};
    int rc = store_read(st, running_fn, &a);

    *out = rc == 0 ? a.out : NULL;
    *n = rc == 0 ? a.n : 0;
    return rc;
}

struct get_args {
    const struct store_backend_ops *ops;
    struct store_who who;
    int64_t id;
    struct job *job;
};

static int
get_fn(struct store_conn *c, void *arg)
{
    struct get_args *a = arg;

    return a->ops->get(c, a->who, a->id, &a->job);
}

int
store_get(struct store *st, struct store_who who, int64_t id, struct job **out)
{
    struct get_args a = {.ops = st->ops, .who = who, .id = id};
    int rc = store_read(st, get_fn, &a);

    *out = rc == 0 ? a.job : NULL;
    return rc;
}

struct list_args {
    const struct store_backend_ops *ops;
    struct store_who who;
    const struct store_filter *f;
    struct job **jobs;
    int n;
};

static int
list_fn(struct store_conn *c, void *arg)
{
    struct list_args *a = arg;

    return a->ops->list(c, a->who, a->f, &a->jobs, &a->n);
}

int
store_list(struct store *st, struct store_who who, const struct store_filter *f, struct job ***out,
           int *n)
{
    struct list_args a = {.ops = st->ops, .who = who, .f = f};
    int rc = store_read(st, list_fn, &a);

    *out = rc == 0 ? a.jobs : NULL;
    *n = rc == 0 ? a.n : 0;
    return rc;
}

struct stats_args {
    const struct store_backend_ops *ops;
    struct store_who who;
    struct store_stats *out;
};

static int
stats_fn(struct store_conn *c, void *arg)
{
    struct stats_args *a = arg;

    return a->ops->stats(c, a->who, a->out);
}

int
store_stats(struct store *st, struct store_who who, struct store_stats *out)
{
    struct stats_args a = {.ops = st->ops, .who = who, .out = out};
    int rc = store_read(st, stats_fn, &a);

    if (rc < 0)
        return rc;
    out->commits = atomic_load(&st->commits);
    out->commit_failures = atomic_load(&st->commit_failures);
    out->lazy_failures = atomic_load(&st->lazy_failures);
    out->requests = atomic_load(&st->requests);
    out->max_group = atomic_load(&st->max_group);
    out->checkpoints = atomic_load(&st->checkpoints);
    out->commit_ns = atomic_load(&st->commit_ns);
    return 0;
}

struct int64_args {
    int (*fn)(struct store_conn *c, int64_t *v);
    int64_t v;
};

static int
int64_fn(struct store_conn *c, void *arg)
{
    struct int64_args *a = arg;

    return a->fn(c, &a->v);
}

int
store_next_due(struct store *st, int64_t *run_at)
{
    struct int64_args a = {.fn = st->ops->next_due};
    int rc = store_read(st, int64_fn, &a);

    *run_at = rc == 0 ? a.v : 0;
    return rc;
}

int
store_count_pending(struct store *st, int64_t *n)
{
    struct int64_args a = {.fn = st->ops->pending};
    int rc = store_read(st, int64_fn, &a);

    *n = rc == 0 ? a.v : 0;
    return rc;
}

struct verify_args {
    const struct store_backend_ops *ops;
    char *why;
    size_t whylen;
};

static int
verify_fn(struct store_conn *c, void *arg)
{
    struct verify_args *a = arg;

    return a->ops->verify(c, a->why, a->whylen);
}

int
store_verify(struct store *st, char *why, size_t whylen)
{
    struct verify_args a = {.ops = st->ops, .why = why, .whylen = whylen};

    return store_read(st, verify_fn, &a);
}

void
store_jobs_free(struct job **jobs, int n)
{
    if (jobs == NULL)
        return;
    for (int i = 0; i < n; i++)
        job_free(jobs[i]);
    free(jobs);
}

void
store_stats_free(struct store_stats *s)
{
    if (s == NULL)
        return;
    for (int i = 0; i < s->nqueues; i++)
        free(s->queues[i].name);
    free(s->queues);
    s->queues = NULL;
    s->nqueues = 0;
}
