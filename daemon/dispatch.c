/*
 * dispatch — claims due jobs and runs each attempt in its own coroutine.
 *
 * The loop claims in batches of up to the pool's free capacity; a claim
 * that fills the batch is followed by another at once, one that does not
 * means nothing more is due, and the loop sleeps on its kick channel with a
 * timeout at the store's next run_at. Submits, finished jobs, resumes and
 * retries kick it; nothing else wakes it.
 *
 * An attempt's context is a child of the dispatcher's root context. Its
 * deadline is the earlier of the attempt timeout and the job's deadline
 * (converted to the monotonic clock when the attempt starts); cancel
 * cancels it; the drain cancels the root.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "jobq/dispatch.h"
#include "jobq/duration.h"
#include "jobq/events.h"
#include "jobq/exec.h"
#include "jobq/limits.h"
#include "jobq/log.h"
#include "jobq/metrics.h"
#include "jobq/notify.h"
#include "jobq/runtime.h"
#include "jobq/store.h"

#define RUN_BUCKETS 1024
/* A completion the store could not commit (disk full) is tried again this
 * often, as long as the daemon runs: the job must not stay "running". */
#define COMPLETE_RETRY_NS (500 * 1000 * 1000LL)
/* While a job waits for its run_at, the loop looks again at least this
 * often: run_at is wall-clock time and the loop sleeps on the monotonic
 * clock, so a wall-clock step forward (NTP, a hand-set clock) would
 * otherwise leave due jobs waiting for the size of the step. */
#define WALL_RECHECK_NS (1000 * 1000 * 1000LL)
/* After a failed claim the loop waits this long, doubling up to the max. */
#define CLAIM_BACKOFF_MIN_NS (50 * 1000 * 1000LL)
#define CLAIM_BACKOFF_MAX_NS (5 * 1000 * 1000 * 1000LL)

struct run {
    struct dispatch *dp;
    struct job *job;
    int32_t attempt;
    struct ctx *ctx;
    int64_t timeout_end; /* monotonic ns, INT64_MAX if none */
    int64_t deadline_end;
    int64_t due_ms; /* when it became due (wait metric) */
    /* rt_now_ns() when exec_run began, 0 before: the attempt's duration in
     * the log and the histogram is monotonic, so that a wall-clock step
     * does not make a 2 s attempt last an hour (chaos_clock.sh). */
    int64_t mono_started;
    pid_t pgid; /* under dp->lock */
    struct run *next;
};

struct dispatch {
    struct daemon *d;
    struct coro_pool *pool;
    struct chan *kick;
    struct ctx *root;     /* every attempt's parent */
    struct ctx *loop_ctx; /* ends the loop */
    struct wg *loop_done;
    pthread_mutex_t lock;
    struct run *table[RUN_BUCKETS];
    atomic_int running;
    atomic_int limit;
    atomic_bool interrupting; /* the drain stops what still runs */
    atomic_uint_fast64_t rnd; /* splitmix64 state for backoff jitter */
    struct job **claimed;     /* the loop's claim buffer */
};

static size_t
run_bucket(int64_t id)
{
    return (size_t)((uint64_t)id * 0x9E3779B97F4A7C15ull >> 54) % RUN_BUCKETS;
}

int
dispatch_new(struct daemon *d, struct dispatch **out)
{
    struct dispatch *dp = calloc(1, sizeof(*dp));
    int rc;

    if (dp == NULL)
        return -ENOMEM;
    dp->d = d;
    pthread_mutex_init(&dp->lock, NULL);
    atomic_init(&dp->limit, d->cfg->concurrency);
    atomic_init(&dp->rnd, (uint64_t)rt_now_ns() ^ ((uint64_t)getpid() << 32));
    if ((rc = coro_pool_new(d->rt, "job", (unsigned)d->cfg->concurrency, &dp->pool)) < 0 ||
        (rc = chan_new(0, 1, &dp->kick)) < 0 || (rc = ctx_new(NULL, &dp->root)) < 0 ||
        (rc = ctx_new(NULL, &dp->loop_ctx)) < 0 || (rc = wg_new(&dp->loop_done)) < 0)
        goto fail;
    if ((dp->claimed = calloc(JOBQ_STORE_CLAIM_MAX, sizeof(*dp->claimed))) == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    wg_add(dp->loop_done, 1);
    *out = dp;
    return 0;
fail:
    dispatch_free(dp);
    return rc;
}

void
dispatch_free(struct dispatch *dp)
{
    if (dp == NULL)
        return;
    coro_pool_free(dp->pool);
    chan_free(dp->kick);
    ctx_free(dp->root);
    ctx_free(dp->loop_ctx);
    wg_free(dp->loop_done);
    free(dp->claimed);
    pthread_mutex_destroy(&dp->lock);
    free(dp);
}

void
dispatch_kick(struct dispatch *dp)
{
    chan_send(dp->kick, NULL, NULL, 0); /* full: a kick is already pending */
    /* Every change of the counts the service manager's STATUS= shows
     * (submit, end of an attempt, retry, resume) comes through here. */
    notify_changed(dp->d->notify);
}

int
dispatch_running(struct dispatch *dp)
{
    return atomic_load(&dp->running);
}

void
dispatch_set_concurrency(struct dispatch *dp, int concurrency)
{
    atomic_store(&dp->limit, concurrency);
    coro_pool_set_limit(dp->pool, (unsigned)concurrency);
    dispatch_kick(dp);
}

static void
table_add(struct dispatch *dp, struct run *r)
{
    struct run **b = &dp->table[run_bucket(r->job->id)];
    pthread_mutex_lock(&dp->lock);
    r->next = *b;
    *b = r;
    pthread_mutex_unlock(&dp->lock);
}

static void
table_del(struct dispatch *dp, struct run *r)
{
    pthread_mutex_lock(&dp->lock);
    for (struct run **p = &dp->table[run_bucket(r->job->id)]; *p != NULL; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    pthread_mutex_unlock(&dp->lock);
}

int
dispatch_cancel(struct dispatch *dp, int64_t id)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&dp->lock);
    for (struct run *r = dp->table[run_bucket(id)]; r != NULL; r = r->next)
        if (r->job->id == id) {
            ctx_cancel(r->ctx);
            rc = 0;
        }
    pthread_mutex_unlock(&dp->lock);
    return rc;
}

/* ---- one attempt ------------------------------------------------------ */

/* splitmix64: lock-free from any thread, and good enough for jitter. */
static uint64_t
jitter_rand(struct dispatch *dp)
{
    uint64_t z = atomic_fetch_add(&dp->rnd, 0x9E3779B97F4A7C15ull) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int
on_started(void *arg, pid_t pgid)
{
    struct run *r = arg;
    struct dispatch *dp = r->dp;
    int rc;

    pthread_mutex_lock(&dp->lock);
    r->pgid = pgid;
    pthread_mutex_unlock(&dp->lock);
    /* For the record only: recovery finds a job's leftovers by their
     * environment marker, never by a stored pgid (exec_proc.c says why),
     * so the record may ride in the store's next group instead of
     * costing a commit of its own. */
    if ((rc = store_set_pgid_lazy(dp->d->store, r->job->id, r->attempt, (int32_t)pgid)) < 0)
        log_warn("job.pgid_not_recorded", "id=%" PRId64 " attempt=%d pgid=%d err=%s", r->job->id,
                 r->attempt, (int)pgid, log_q(strerror(-rc)));
    events_notify(dp->d->events, r->job->id);
    return 0;
}

static void
on_output(void *arg)
{
    struct run *r = arg;
    events_notify(r->dp->d->events, r->job->id);
}

static const char *
signame(int sig)
{
    const char *n = sigabbrev_np(sig);
    return n ? n : "?";
}

/* What the attempt's result means: the outcome to record and a sentence
 * for people. */
static enum job_outcome
classify(struct run *r, int rc, const struct exec_result *res, char *err, size_t errlen)
{
    struct dispatch *dp = r->dp;
    const struct job_spec *s = &r->job->spec;
    char dur[32];
    enum job_outcome o;

    if (rc < 0) {
        snprintf(err, errlen, "could not start the attempt: %s", strerror(-rc));
        return OUTCOME_INTERRUPTED;
    }
    if (res->stopped == RT_ECANCELED) {
        if (atomic_load(&dp->interrupting)) {
            snprintf(err, errlen, "jobqd stopped during the attempt");
            o = OUTCOME_INTERRUPTED;
        } else {
            snprintf(err, errlen, "canceled");
            o = OUTCOME_CANCELED;
        }
    } else if (res->stopped == RT_EDEADLINE) {
        if (r->deadline_end <= r->timeout_end) {
            snprintf(err, errlen, "deadline passed");
            o = OUTCOME_DEADLINE;
        } else {
            snprintf(err, errlen, "timed out after %s",
                     duration_format(s->timeout_ms, dur, sizeof(dur)));
            o = OUTCOME_TIMEOUT;
        }
    } else {
        o = res->outcome;
        switch (o) {
        case OUTCOME_SUCCEEDED:
            err[0] = '\0';
            break;
        case OUTCOME_EXITED:
            snprintf(err, errlen, "exited with status %d", res->exit_code);
            break;
        case OUTCOME_SIGNALED:
            snprintf(err, errlen, "killed by signal %d (SIG%s)", res->signal, signame(res->signal));
            break;
        default:
            snprintf(err, errlen, "%s", res->error[0] ? res->error : "could not start");
            return o;
        }
    }
    /* A note from the executor (log capture failed) rides along. */
    if (res->error[0] != '\0' && o != OUTCOME_SPAWN_ERROR) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, "%s%s", n ? "; " : "", res->error);
    }
    return o;
}

/* What comes after an attempt that ended with outcome o. */
static enum job_state
next_state(struct run *r, enum job_outcome o, int64_t now, int64_t *run_at, char *err,
           size_t errlen)
{
    const struct job *j = r->job;
    int32_t used = r->attempt - j->interrupted;
    int64_t backoff;

    *run_at = 0;
    switch (o) {
    case OUTCOME_SUCCEEDED:
        return JOB_SUCCEEDED;
    case OUTCOME_INTERRUPTED:
        return JOB_QUEUED; /* runs again at the next start; the budget is kept */
    case OUTCOME_EXITED:
    case OUTCOME_SIGNALED:
    case OUTCOME_TIMEOUT:
        break;
    default:
        return JOB_FAILED; /* canceled, deadline, spawn errors: not retryable */
    }
    if (used >= j->spec.max_attempts)
        return JOB_FAILED;
    backoff =
        job_backoff_ms(j->spec.backoff_base_ms, j->spec.backoff_max_ms, used, jitter_rand(r->dp));
    *run_at = now + backoff;
    if (j->spec.deadline > 0 && *run_at >= j->spec.deadline) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, "; the deadline leaves no time for another attempt");
        return JOB_FAILED;
    }
    return JOB_RETRYING;
}

static void
finish(struct run *r, int rc, struct exec_result *res)
{
    struct dispatch *dp = r->dp;
    struct daemon *d = dp->d;
    struct job *j = r->job;
    char err[512];
    int64_t now = job_now_ms(), run_at;
    enum job_outcome o = classify(r, rc, res, err, sizeof(err));
    enum job_state next = next_state(r, o, now, &run_at, err, sizeof(err));
    struct store_completion c = {
        .id = j->id,
        .attempt = r->attempt,
        .finished_at = rc < 0 ? now : res->finished_at,
        .outcome = o,
        .exit_code = rc < 0 ? -1 : res->exit_code,
        .signal = rc < 0 ? 0 : res->signal,
        .error = err[0] ? err : NULL,
        .log_bytes = rc < 0 ? 0 : res->log_bytes,
        .log_truncated = rc < 0 ? false : res->log_truncated,
        .next = next,
        .run_at = run_at,
        /* Many jobs running: their ends come close together and may share
         * an fsync; a lone job's end is recorded at once. */
        .patient = atomic_load(&dp->running) >= JOBQ_DISPATCH_PATIENT_RUNNING,
    };
    int64_t started = rc < 0 ? now : res->started_at;
    int64_t dur_ms =
        r->mono_started > 0 ? (rt_now_ns() - r->mono_started) / 1000000 : c.finished_at - started;

    for (;;) {
        int src = store_complete(d->store, &c);
        if (src == 0 || src == -ESTALE) {
            if (src == -ESTALE)
                log_warn("job.stale_completion", "id=%" PRId64 " attempt=%d", j->id, r->attempt);
            break;
        }
        log_error("job.complete_failed", "id=%" PRId64 " attempt=%d err=%s", j->id, r->attempt,
                  log_q(strerror(-src)));
        /* Disk full or I/O error: the job stays running in the store until
         * this lands, or until recovery at the next start re-runs it. Not
         * while draining: the drain must end within its grace (a full disk
         * would hold it forever), and recovery re-runs the job anyway. */
        if (!store_error_is_storage(src) || atomic_load(&d->draining))
            break;
        coro_sleep(dp->loop_ctx, COMPLETE_RETRY_NS); /* the drain wakes it */
    }
    log_info("job.finish",
             "id=%" PRId64 " queue=%s attempt=%d outcome=%s exit=%d signal=%d dur_ms=%" PRId64
             " next=%s%s%s",
             j->id, log_q(j->spec.queue ? j->spec.queue : "default"), r->attempt,
             job_outcome_name(o), c.exit_code, c.signal, dur_ms,
             job_state_name(o == OUTCOME_CANCELED ? JOB_CANCELED : next), err[0] ? " error=" : "",
             err[0] ? log_q(err) : "");
    metrics_finished(d->metrics, j->spec.queue, o, dur_ms, started - r->due_ms);
}

static void
job_main(void *arg)
{
    struct run *r = arg;
    struct dispatch *dp = r->dp;
    struct daemon *d = dp->d;
    struct exec_result res;
    int rc;

    memset(&res, 0, sizeof(res));
    r->mono_started = rt_now_ns();
    rc = exec_run(&d->exec, r->job, r->attempt, r->ctx, on_started, on_output, r, &res);
    /* The leader is reaped: its group number is free for anyone now, so
     * the drain's kill_all must no longer use it. */
    pthread_mutex_lock(&dp->lock);
    r->pgid = 0;
    pthread_mutex_unlock(&dp->lock);
    finish(r, rc, &res);
    table_del(dp, r);
    atomic_fetch_sub(&dp->running, 1);
    events_notify(d->events, r->job->id);
    dispatch_kick(dp);
    ctx_free(r->ctx);
    job_free(r->job);
    free(r);
}

/* Starts a claimed job; takes job. */
static void
start(struct dispatch *dp, struct job *job, int64_t now_ms)
{
    struct run *r = calloc(1, sizeof(*r));
    int64_t mono = rt_now_ns(), end = INT64_MAX;
    int rc;

    if (r == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    r->dp = dp;
    r->job = job;
    r->attempt = job->attempt;
    r->due_ms =
        job->spec.run_at > 0 && job->spec.run_at < now_ms ? job->spec.run_at : job->created_at;
    r->timeout_end = job->spec.timeout_ms > 0 ? mono + job->spec.timeout_ms * 1000000 : INT64_MAX;
    r->deadline_end =
        job->spec.deadline > 0 ? mono + (job->spec.deadline - now_ms) * 1000000 : INT64_MAX;
    end = r->timeout_end < r->deadline_end ? r->timeout_end : r->deadline_end;
    if ((rc = ctx_with_deadline(dp->root, end, &r->ctx)) < 0)
        goto fail;
    /* Logged here, on the dispatcher's stack, not in job_main: a log call
     * takes 8 KiB of stack (probed page by page), which the job's own
     * coroutine would keep resident for as long as the job runs. */
    log_info("job.start", "id=%" PRId64 " queue=%s attempt=%d wait_ms=%" PRId64, job->id,
             log_q(job->spec.queue ? job->spec.queue : "default"), r->attempt, now_ms - r->due_ms);
    table_add(dp, r);
    atomic_fetch_add(&dp->running, 1);
    events_notify(dp->d->events, job->id);
    notify_changed(dp->d->notify);
    if ((rc = coro_pool_spawn(dp->pool, NULL, 0, "job", job_main, r)) < 0) {
        table_del(dp, r);
        atomic_fetch_sub(&dp->running, 1);
        goto fail;
    }
    return;
fail:
    log_error("job.start_failed", "id=%" PRId64 " err=%s", job->id, log_q(strerror(-rc)));
    if (r != NULL) {
        /* Give the attempt back: interrupted, queued again. */
        struct exec_result res = {0};
        finish(r, rc, &res);
        ctx_free(r->ctx);
        free(r);
    }
    job_free(job);
}

void
dispatch_main(void *arg)
{
    struct dispatch *dp = arg;
    struct daemon *d = dp->d;
    int64_t backoff = CLAIM_BACKOFF_MIN_NS;

    while (ctx_err(dp->loop_ctx) == 0) {
        int free_slots = atomic_load(&dp->limit) - atomic_load(&dp->running);
        int64_t timeout = RT_FOREVER;

        if (free_slots > 0) {
            int want = free_slots < JOBQ_STORE_CLAIM_MAX ? free_slots : JOBQ_STORE_CLAIM_MAX, n = 0;
            int64_t now = job_now_ms();
            int rc = store_claim(d->store, now, want, dp->claimed, &n);
            if (rc < 0) {
                log_error("dispatch.claim_failed", "err=%s", log_q(strerror(-rc)));
                coro_sleep(dp->loop_ctx, backoff);
                backoff = backoff * 2 > CLAIM_BACKOFF_MAX_NS ? CLAIM_BACKOFF_MAX_NS : backoff * 2;
                continue;
            }
            backoff = CLAIM_BACKOFF_MIN_NS;
            for (int i = 0; i < n; i++)
                start(dp, dp->claimed[i], now);
            if (n == want)
                continue; /* there may be more */
            int64_t due = 0;
            if (store_next_due(d->store, &due) == 0 && due > 0) {
                int64_t ms = due - job_now_ms();
                /* At least 1 ms: a due job a paused or full queue holds
                 * back must not make this loop spin. */
                timeout = (ms > 0 ? ms : 1) * 1000000;
                if (timeout > WALL_RECHECK_NS)
                    timeout = WALL_RECHECK_NS;
            }
        }
        chan_recv(dp->kick, NULL, dp->loop_ctx, timeout);
    }
    wg_done(dp->loop_done);
}

/* Kills the process groups of every attempt still running (the drain's
 * last step), so the bound on shutdown does not wait for kill grace. */
static int
kill_all(struct dispatch *dp)
{
    int n = 0;
    pthread_mutex_lock(&dp->lock);
    for (int i = 0; i < RUN_BUCKETS; i++)
        for (struct run *r = dp->table[i]; r != NULL; r = r->next)
            if (r->pgid > 0 && kill(-r->pgid, SIGKILL) == 0)
                n++;
    pthread_mutex_unlock(&dp->lock);
    return n;
}

void
dispatch_stop(struct dispatch *dp, int64_t grace_ms)
{
    ctx_cancel(dp->loop_ctx);
    wg_wait(dp->loop_done, NULL, RT_FOREVER);
    if (coro_pool_drain(dp->pool, NULL, grace_ms * 1000000) == 0)
        return;
    log_warn("dispatch.interrupt", "running=%d grace_ms=%" PRId64, dispatch_running(dp), grace_ms);
    atomic_store(&dp->interrupting, true);
    ctx_cancel(dp->root);
    /* The executor sends SIGTERM and waits out the kill grace; a drain
     * bounded by --shutdown-grace cannot, so the groups get SIGKILL now,
     * and again for any that started meanwhile. */
    while (coro_pool_drain(dp->pool, NULL, 100 * 1000000LL) != 0)
        kill_all(dp);
}
