/*
 * exec — runs one attempt of a job to its end in the calling coroutine:
 * spawn (exec_spawn.c, on a helper thread), output capture by a copier
 * coroutine into the attempt's log, the wait for the leader through its
 * pidfd, the stop sequence when the attempt's context ends, and the end
 * of everything the job started (its group, its session, and marked
 * escapees, via exec_proc.c). Also the attempt logs' paths, reads and
 * removal.
 *
 * Owns, for the duration of exec_run: the child's pidfd (the leader stays
 * unreaped until its group has been killed, so the pgid cannot be reused
 * by someone else meanwhile), both ends of the capture pipe, the log file
 * and the copier coroutine, which it always waits for before returning.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec_int.h"
#include "jobq/log.h"
#include "jobq/runtime.h"

#define NS_PER_MS 1000000LL

/* How long to give the copier after a sweep of escapees before its read
 * end is closed regardless. */
#define COPIER_LAST_CHANCE_NS (100 * NS_PER_MS)

int
exec_log_path(const struct exec_opts *o, int64_t id, int32_t attempt, char *buf, size_t len)
{
    /* A directory per thousand ids: a million jobs make a thousand
     * directories of a thousand files, not one huge directory. */
    int n;

    if (o->log_dir == NULL)
        return -EINVAL;
    n = snprintf(buf, len, "%s/%" PRId64 "/%" PRId64 ".%" PRId32 ".log", o->log_dir, id / 1000, id,
                 attempt);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* ---- the log copier ----------------------------------------------------- */

struct log_open {
    const struct exec_opts *o;
    int64_t id;
    int32_t attempt;
    int fd;
};

/* Blocking: creates the log (and its directories) on the first output. */
static int
log_open_blocking(void *arg)
{
    struct log_open *lo = arg;
    char path[PATH_MAX], *slash;
    int rc;

    if ((rc = exec_log_path(lo->o, lo->id, lo->attempt, path, sizeof(path))) < 0)
        return rc;
    /* A few tries: exec_log_remove may remove an empty bucket directory
     * between our mkdir and our open. */
    for (int i = 0; i < 3; i++) {
        lo->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
        if (lo->fd >= 0)
            return 0;
        if (errno != ENOENT)
            return -errno;
        if (mkdir(lo->o->log_dir, 0750) < 0 && errno != EEXIST)
            return -errno;
        slash = strrchr(path, '/');
        *slash = '\0';
        rc = mkdir(path, 0750) < 0 && errno != EEXIST ? -errno : 0;
        *slash = '/';
        if (rc < 0)
            return rc;
    }
    return -ENOENT;
}

struct copier {
    const struct exec_opts *o;
    int64_t id;
    int32_t attempt;
    int rfd;    /* read end of the pipe, nonblocking; the caller's */
    int log_fd; /* -1 until the first output */
    int64_t cap;
    int64_t kept;       /* output bytes in the log */
    int64_t file_bytes; /* log size: kept + marker */
    int64_t total;      /* output bytes read */
    bool truncated, failed, last_nl;
    int err; /* the write error that stopped capture */
    struct ctx *stop;
    struct wg *done;
    void (*on_output)(void *arg);
    void *arg;
};

static int
log_write(struct copier *cp, const char *p, size_t n)
{
    if (cp->log_fd < 0) {
        struct log_open lo = {.o = cp->o, .id = cp->id, .attempt = cp->attempt, .fd = -1};
        int rc = rt_blocking(NULL, log_open_blocking, &lo);
        if (rc < 0)
            return rc;
        cp->log_fd = lo.fd;
    }
    /* On the scheduler thread: a page-cache write of at most one pipe's
     * worth, not worth a hand-off to a helper thread. */
    while (n > 0) {
        ssize_t w = write(cp->log_fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
        cp->file_bytes += w;
    }
    return 0;
}

/* Keeps what fits under the cap, marks the log once when output is first
 * dropped, and after a write error only counts. */
static void
copier_take(struct copier *cp, const char *p, size_t n)
{
    int64_t before = cp->file_bytes;
    size_t keep = 0;
    int rc;

    cp->total += (int64_t)n;
    if (cp->failed)
        return;
    if (cp->kept < cp->cap)
        keep = (int64_t)n < cp->cap - cp->kept ? n : (size_t)(cp->cap - cp->kept);
    if (keep > 0) {
        if ((rc = log_write(cp, p, keep)) < 0)
            goto fail;
        cp->kept += (int64_t)keep;
        cp->last_nl = p[keep - 1] == '\n';
    }
    if (keep < n && !cp->truncated) {
        char m[96];
        int len = snprintf(m, sizeof(m), "%s[jobq: output truncated at %" PRId64 " bytes]\n",
                           cp->kept > 0 && !cp->last_nl ? "\n" : "", cp->cap);
        cp->truncated = true;
        if ((rc = log_write(cp, m, (size_t)len)) < 0)
            goto fail;
    }
    if (cp->file_bytes != before && cp->on_output != NULL)
        cp->on_output(cp->arg);
    return;
fail:
    /* Keep draining: a job blocked on a full pipe, or killed by SIGPIPE,
     * would fail because of our disk, not its own doing. */
    cp->failed = true;
    cp->truncated = true;
    cp->err = rc;
    if (cp->file_bytes != before && cp->on_output != NULL)
        cp->on_output(cp->arg);
}

static void
copier_main(void *arg)
{
    struct copier *cp = arg;
    char small[512], *buf = NULL;
    size_t size = 0;
    bool stopping = false;

    for (int reads = 0;;) {
        ssize_t n;
        if (buf == NULL) {
            /* The buffer only once there is output: most jobs print
             * nothing, and a parked copier then costs no heap. */
            if (coro_wait_fd(cp->rfd, CORO_READ, cp->stop, RT_FOREVER) < 0)
                break;
            size = JOBQ_EXEC_COPY_BUF_BYTES;
            if ((buf = malloc(size)) == NULL) {
                buf = small;
                size = sizeof(small);
            }
        }
        n = read(cp->rfd, buf, size);
        if (n > 0) {
            copier_take(cp, buf, (size_t)n);
            /* A job writing flat out must not starve the thread's other
             * coroutines. */
            if ((size_t)n == size && ++reads % 16 == 0)
                coro_yield();
            continue;
        }
        if (n == 0)
            break; /* every writer has closed: the job is done */
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN || stopping)
            break;
        /* Told to stop: take what is already in the pipe, then end. */
        if (coro_wait_fd(cp->rfd, CORO_READ, cp->stop, RT_FOREVER) < 0)
            stopping = true;
    }
    if (buf != small)
        free(buf);
    wg_done(cp->done);
}

/* ---- the leader ------------------------------------------------------- */

static int
leader_wait_blocking(void *arg)
{
    siginfo_t si;
    int pidfd = *(int *)arg;

    while (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOWAIT) < 0)
        if (errno != EINTR)
            return -errno;
    return 0;
}

/*
 * Parks until the leader has exited, leaving it unreaped: as long as it is
 * a zombie its pid, which is the job's pgid and session id, cannot be
 * given to anyone else, so kill(-pgid) still reaches the job and only the
 * job. Returns 0, RT_ETIMEDOUT or ctx's status.
 */
static int
leader_wait(int pidfd, struct ctx *ctx, int64_t timeout_ns)
{
    int rc = coro_wait_fd(pidfd, CORO_READ, ctx, timeout_ns);

    if (rc > 0)
        return 0;
    if (rc == RT_ETIMEDOUT || rc == RT_ECANCELED || rc == RT_EDEADLINE)
        return rc;
    /* The event loop could not watch the pidfd: wait on a helper. */
    return rt_blocking(NULL, leader_wait_blocking, &pidfd);
}

/* The stop sequence: SIGTERM to the group, the grace for the leader, then
 * SIGKILL and an unbounded wait (SIGKILL cannot be refused). */
static void
leader_stop(int64_t id, pid_t pgid, int pidfd, int64_t grace_ms)
{
    if (kill(-pgid, SIGTERM) < 0 && errno != ESRCH)
        /* Only a daemon stripped of CAP_KILL gets here: the job goes on
         * and this wait with it, so an operator must hear of it now. */
        log_error("job.kill_failed", "id=%" PRId64 " pgid=%d signal=TERM err=%s", id, (int)pgid,
                  log_q(strerror(errno)));
    if (leader_wait(pidfd, NULL, grace_ms * NS_PER_MS) == 0)
        return;
    if (kill(-pgid, SIGKILL) < 0 && errno != ESRCH)
        log_error("job.kill_failed", "id=%" PRId64 " pgid=%d signal=KILL err=%s", id, (int)pgid,
                  log_q(strerror(errno)));
    leader_wait(pidfd, NULL, RT_FOREVER);
}

/*
 * Ends whatever the job started while its leader is a zombie: its
 * process group (a `cmd &` left behind), then the members of its session
 * that left the group and the escapees that started sessions of their own
 * but carry its marker. Rounds catch what was forked while we killed.
 * Returns how many processes outside the group it killed.
 */
static int
end_job(const struct exec_opts *o, int64_t id, pid_t leader, int64_t ran_ms)
{
    struct exec_sweep sw = {
        .children = o->children,
        .instance = o->instance ? o->instance : "",
        .id = id,
        .leader = leader,
        .from = leader,
    };

    kill(-leader, SIGKILL);
    for (int round = 0; round < JOBQ_EXEC_SWEEP_ROUNDS; round++) {
        int before = sw.killed;
        exec_sweep_probe(&sw, ran_ms);
        if (sw.full || sw.ncand > 0)
            rt_blocking(NULL, exec_sweep_check, &sw);
        if (sw.killed == before)
            break;
        sw.from = sw.upto;
    }
    exec_sweep_fini(&sw);
    return sw.killed;
}

static void
record_status(struct exec_result *res, const siginfo_t *si)
{
    if (si->si_code == CLD_EXITED) {
        res->exit_code = si->si_status;
        res->outcome = si->si_status == 0 ? OUTCOME_SUCCEEDED : OUTCOME_EXITED;
    } else { /* CLD_KILLED, CLD_DUMPED */
        res->signal = si->si_status;
        res->outcome = OUTCOME_SIGNALED;
    }
}

/*
 * After the leader is reaped: lets the copier reach end-of-file, bounded
 * by JOBQ_EXEC_DRAIN_MS (something that escaped and still holds the pipe
 * is looked for by its marker, then the pipe is given up on), and, if we
 * adopt orphans, reaps what the job left, waiting within the same bound
 * for the last members of its group to be gone.
 */
static void
drain(const struct exec_opts *o, int64_t id, struct copier *cp, pid_t pgid, int swept)
{
    int64_t deadline = rt_now_ns() + JOBQ_EXEC_DRAIN_MS * NS_PER_MS, step = NS_PER_MS;

    if (cp != NULL && wg_wait(cp->done, NULL, JOBQ_EXEC_DRAIN_MS * NS_PER_MS) != 0) {
        struct exec_sweep sw = {
            .children = o->children,
            .instance = o->instance ? o->instance : "",
            .id = id,
            .full = true,
        };
        rt_blocking(NULL, exec_sweep_check, &sw);
        swept += sw.killed;
        if (wg_wait(cp->done, NULL, COPIER_LAST_CHANCE_NS) != 0) {
            ctx_cancel(cp->stop);
            wg_wait(cp->done, NULL, RT_FOREVER);
        }
    }
    if (o->children == NULL)
        return; /* orphans are init's */
    /* The group had only the leader, nothing was swept, and no orphan
     * waits: the common case costs two system calls. */
    if (kill(-pgid, 0) < 0 && swept == 0 && !exec_children_orphan_waiting(o->children))
        return;
    for (;;) {
        exec_children_reap(o->children);
        if (kill(-pgid, 0) < 0 || rt_now_ns() >= deadline)
            break;
        coro_sleep(NULL, step);
        step = step * 2 > 50 * NS_PER_MS ? 50 * NS_PER_MS : step * 2;
    }
}

int
exec_run(const struct exec_opts *o, const struct job *job, int32_t attempt, struct ctx *ctx,
         int (*on_started)(void *arg, pid_t pgid), void (*on_output)(void *arg), void *arg,
         struct exec_result *res)
{
    struct exec_spawn sp = {.o = o, .job = job, .attempt = attempt, .pidfd = -1};
    struct copier cp = {.o = o, .rfd = -1, .log_fd = -1};
    bool copying = false;
    int64_t grace_ms = o->kill_grace_ms > 0 ? o->kill_grace_ms : JOBQ_KILL_GRACE_MS;
    int pipefd[2] = {-1, -1}, rc, fail = 0, swept;
    siginfo_t si;

    memset(res, 0, sizeof(*res));
    res->exit_code = -1;
    res->started_at = job_now_ms();
    res->finished_at = res->started_at;
    if (job == NULL || job->spec.command == NULL || job->spec.command[0] == NULL)
        return -EINVAL;
    if (coro_self() == NULL)
        return -EPERM;
    if ((rc = ctx_err(ctx)) != 0) {
        res->stopped = rc; /* nothing started */
        return 0;
    }
    if (pipe2(pipefd, O_CLOEXEC) < 0 || fcntl(pipefd[0], F_SETFL, O_NONBLOCK) < 0) {
        rc = -errno;
        goto out;
    }
    sp.out_fd = pipefd[1];
    rc = rt_blocking(NULL, exec_spawn, &sp);
    /* Ours closed, the job's copies are the only writers: EOF means the
     * job and everything that inherited its output are gone. */
    close(pipefd[1]);
    pipefd[1] = -1;
    if (rc < 0)
        goto out;
    res->started_at = job_now_ms();
    if (sp.code != 0) {
        res->outcome = OUTCOME_SPAWN_ERROR;
        res->exit_code = sp.code;
        snprintf(res->error, sizeof(res->error), "%s", sp.error);
        res->finished_at = job_now_ms();
        goto out;
    }
    res->pgid = sp.pid;

    cp.id = job->id;
    cp.attempt = attempt;
    cp.rfd = pipefd[0];
    cp.cap = o->log_cap_bytes > 0 ? o->log_cap_bytes : JOBQ_LOG_CAP_BYTES;
    cp.on_output = on_output;
    cp.arg = arg;
    if ((fail = ctx_new(NULL, &cp.stop)) == 0 && (fail = wg_new(&cp.done)) == 0) {
        wg_add(cp.done, 1);
        /* On our own thread: the copier and we share cp without locks. */
        if ((fail = coro_spawn_on(coro_rt(), coro_thread(), "exec-copy", copier_main, &cp)) < 0)
            wg_done(cp.done);
        else
            copying = true;
    }
    if (fail == 0 && on_started != NULL)
        fail = on_started(arg, sp.pid);

    if (fail < 0) {
        kill(-sp.pid, SIGKILL);
        leader_wait(sp.pidfd, NULL, RT_FOREVER);
    } else if ((rc = leader_wait(sp.pidfd, ctx, RT_FOREVER)) != 0) {
        if (rc == RT_ECANCELED || rc == RT_EDEADLINE)
            res->stopped = rc;
        leader_stop(job->id, sp.pid, sp.pidfd, grace_ms);
    }
    res->finished_at = job_now_ms();
    swept = end_job(o, job->id, sp.pid, res->finished_at - res->started_at);
    /* Now the leader may go, and its pid with it. */
    memset(&si, 0, sizeof(si));
    while ((rc = waitid((idtype_t)P_PIDFD, (id_t)sp.pidfd, &si, WEXITED)) < 0 && errno == EINTR)
        ;
    if (rc < 0)
        snprintf(res->error, sizeof(res->error), "lost the exit status: %s", strerror(errno));
    else
        record_status(res, &si);
    exec_children_remove(o->children, sp.pid);
    close(sp.pidfd);
    sp.pidfd = -1;
    drain(o, job->id, copying ? &cp : NULL, sp.pid, swept);

    res->log_bytes = cp.file_bytes;
    res->output_bytes = cp.total;
    res->log_truncated = cp.truncated;
    if (cp.failed)
        snprintf(res->error, sizeof(res->error), "log capture failed: %s", strerror(-cp.err));
    rc = fail;
out:
    if (pipefd[0] >= 0)
        close(pipefd[0]);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    if (cp.log_fd >= 0)
        close(cp.log_fd);
    wg_free(cp.done);
    ctx_free(cp.stop);
    return rc;
}

/* ---- reading and removing logs ------------------------------------------ */

int
exec_log_read(const struct exec_opts *o, int64_t id, int32_t attempt, int64_t offset, void *buf,
              size_t len, size_t *n, int64_t *size)
{
    char path[PATH_MAX];
    struct stat st;
    ssize_t got;
    int fd, rc;

    *n = 0;
    *size = 0;
    if (offset < 0)
        return -EINVAL;
    if ((rc = exec_log_path(o, id, attempt, path, sizeof(path))) < 0)
        return rc;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
        return errno == ENOENT ? 0 : -errno; /* no output yet, or none ever */
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    *size = st.st_size;
    do
        got = pread(fd, buf, len, offset);
    while (got < 0 && errno == EINTR);
    if (got < 0) {
        rc = -errno;
        goto out;
    }
    *n = (size_t)got;
    rc = 0;
out:
    close(fd);
    return rc;
}

/* "<id>.<attempt>.log" for this id, nothing else that may share the
 * bucket. */
static bool
is_log_of(const char *name, const char *prefix, size_t plen)
{
    const char *p = name + plen;

    if (strncmp(name, prefix, plen) != 0 || *p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9')
        p++;
    return strcmp(p, ".log") == 0;
}

int
exec_log_remove(const struct exec_opts *o, int64_t id)
{
    char dir[PATH_MAX], prefix[32];
    size_t plen;
    struct dirent *e;
    DIR *d;
    int n, rc = 0;

    if (o->log_dir == NULL)
        return -EINVAL;
    n = snprintf(dir, sizeof(dir), "%s/%" PRId64, o->log_dir, id / 1000);
    if (n < 0 || (size_t)n >= sizeof(dir))
        return -ENAMETOOLONG;
    plen = (size_t)snprintf(prefix, sizeof(prefix), "%" PRId64 ".", id);
    if ((d = opendir(dir)) == NULL)
        return errno == ENOENT ? 0 : -errno;
    while ((e = readdir(d)) != NULL) {
        if (!is_log_of(e->d_name, prefix, plen))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) < 0 && errno != ENOENT && rc == 0)
            rc = -errno;
    }
    closedir(d);
    /* The bucket goes once its last log does; ENOTEMPTY is the rule. */
    rmdir(dir);
    return rc;
}
