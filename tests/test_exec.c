/*
 * exec, one behaviour per test: output capture (interleaved, capped,
 * lazily created, write errors), exit statuses and spawn errors, the
 * environment, cwd and fds a job gets, stopping by deadline and cancel
 * (SIGTERM, SIGKILL after the grace), the end of everything a job left
 * behind (its group, its session, marked escapees), running as the
 * submitter, the leftovers of a crashed daemon, and many jobs at once
 * without zombies or fd growth. Each test has its own runtime, temporary
 * directory and instance marker, and leaves no process behind.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "check.h"

#include "jobq/exec.h"
#include "jobq/runtime.h"
#include "jobq/store.h"

static inline bool
check_on_test_stack(void)
{
    return coro_self() == NULL && pthread_equal(pthread_self(), check_test_thread);
}

#define MS (1000 * 1000LL)

/* ---- fixture ------------------------------------------------------------ */

struct fx {
    char dir[128];
    char logs[192];
    struct exec_opts o;
    struct exec_children *children;
    struct rt *rt;
};

static int
setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    struct rt_opts ro = {.threads = 2};

    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/jobq-test-exec-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->logs, sizeof(fx->logs), "%s/logs", fx->dir);
    fx->o.log_dir = fx->logs;
    /* Unique per test: suites running side by side never see each
     * other's processes as their own. */
    fx->o.instance = fx->dir;
    fx->o.kill_grace_ms = 2000;
    /* As jobqd does: what a job leaves behind comes to us, and exec reaps
     * it. */
    assert_int_equal(exec_children_new(&fx->children), 0);
    fx->o.children = fx->children;
    assert_int_equal(rt_new(&ro, &fx->rt), 0);
    *state = fx;
    return 0;
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
teardown(void **state)
{
    struct fx *fx = *state;
    int leaks = rt_free(fx->rt);

    nftw(fx->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    exec_children_reap(fx->children);
    exec_children_free(fx->children);
    free(fx);
    assert_int_equal(leaks, 0);
    return 0;
}

/* ---- running one attempt ------------------------------------------------ */

struct run {
    struct fx *fx;
    struct job job;
    int32_t attempt;
    int64_t timeout_ns;      /* 0: no deadline */
    int64_t cancel_after_ns; /* 0: not canceled */
    bool cancel_first;       /* cancel before exec_run starts */
    int started_rc;          /* what on_started returns */
    int rc;
    struct exec_result res;
    int started_calls, outputs;
    pid_t started_pgid;
    bool group_existed;
    int64_t elapsed_ns;
};

static void
job_init(struct run *r, struct fx *fx, int64_t id, char **argv)
{
    memset(r, 0, sizeof(*r));
    r->fx = fx;
    r->job.id = id;
    r->job.spec.command = argv;
    r->job.spec.max_attempts = 1;
    r->job.spec.uid = getuid();
    r->job.spec.gid = getgid();
    r->attempt = 1;
}

static int
on_started(void *arg, pid_t pgid)
{
    struct run *r = arg;
    r->started_calls++;
    r->started_pgid = pgid;
    r->group_existed = kill(-pgid, 0) == 0;
    return r->started_rc;
}

static void
on_output(void *arg)
{
    struct run *r = arg;
    r->outputs++;
}

struct canceler {
    struct ctx *ctx;
    int64_t after_ns;
    struct wg *done;
};

static void
cancel_main(void *arg)
{
    struct canceler *c = arg;
    coro_sleep(NULL, c->after_ns);
    ctx_cancel(c->ctx);
    wg_done(c->done);
}

static void
run_main(void *arg)
{
    struct run *r = arg;
    struct ctx *ctx = NULL;
    struct canceler c = {0};
    int64_t t0;

    if (r->timeout_ns > 0)
        assert_int_equal(ctx_with_timeout(NULL, r->timeout_ns, &ctx), 0);
    else if (r->cancel_after_ns > 0 || r->cancel_first)
        assert_int_equal(ctx_new(NULL, &ctx), 0);
    if (r->cancel_first)
        ctx_cancel(ctx);
    if (r->cancel_after_ns > 0) {
        c.ctx = ctx;
        c.after_ns = r->cancel_after_ns;
        assert_int_equal(wg_new(&c.done), 0);
        wg_add(c.done, 1);
        assert_int_equal(coro_spawn(coro_rt(), "cancel", cancel_main, &c), 0);
    }
    t0 = rt_now_ns();
    r->rc = exec_run(&r->fx->o, &r->job, r->attempt, ctx, on_started, on_output, r, &r->res);
    r->elapsed_ns = rt_now_ns() - t0;
    if (c.done != NULL) {
        wg_wait(c.done, NULL, RT_FOREVER);
        wg_free(c.done);
    }
    ctx_free(ctx);
}

static void
run(struct run *r)
{
    assert_int_equal(rt_run(r->fx->rt, "run", run_main, r), 0);
}

/* The whole log of an attempt, NUL-terminated; returns its length. */
static size_t
read_log(struct fx *fx, int64_t id, int32_t attempt, char *buf, size_t len)
{
    size_t got = 0, n;
    int64_t size;

    for (;;) {
        assert_int_equal(
            exec_log_read(&fx->o, id, attempt, (int64_t)got, buf + got, len - 1 - got, &n, &size),
            0);
        if (n == 0)
            break;
        got += n;
    }
    buf[got] = '\0';
    return got;
}

/* Waits (reaping the orphans we adopted) until pid is gone for good. */
static bool
gone(struct fx *fx, pid_t pid)
{
    for (int i = 0; i < 2000; i++) {
        exec_children_reap(fx->children);
        if (kill(pid, 0) < 0 && errno == ESRCH)
            return true;
        usleep(1000);
    }
    return false;
}

static bool
group_gone(struct fx *fx, pid_t pgid)
{
    for (int i = 0; i < 2000; i++) {
        exec_children_reap(fx->children);
        if (kill(-pgid, 0) < 0 && errno == ESRCH)
            return true;
        usleep(1000);
    }
    return false;
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
}

static int
count_fds(void)
{
    int n = check_open_fds();
    assert_true(n >= 0);
    return n;
}

/* Children of this process (all threads), zombies included. */
static int
count_children(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        char path[300], buf[4096];
        ssize_t got;
        int fd;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/children", e->d_name);
        if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            continue;
        got = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        for (ssize_t i = 0; i < got; i++)
            if (buf[i] == ' ')
                n++;
    }
    closedir(d);
    return n;
}

/* ---- output ------------------------------------------------------------- */

static void
test_output_interleaved_exactly(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sh", "-c", "echo out1; echo err1 >&2; printf 'out2'; printf ' err2\\n' >&2",
                    NULL};
    char log[256];
    struct run r;

    job_init(&r, fx, 1, argv);
    run(&r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    assert_int_equal(r.res.exit_code, 0);
    assert_int_equal(r.res.stopped, 0);
    assert_string_equal(r.res.error, "");
    assert_int_equal(read_log(fx, 1, 1, log, sizeof(log)), 20);
    assert_string_equal(log, "out1\nerr1\nout2 err2\n");
    assert_int_equal(r.res.log_bytes, 20);
    assert_int_equal(r.res.output_bytes, 20);
    assert_false(r.res.log_truncated);
    assert_true(r.res.finished_at >= r.res.started_at && r.res.started_at > 0);
}

static void
test_large_output_captured_exactly(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"seq", "1", "200000", NULL};
    size_t len = 0, got;
    char *want = malloc(2 * 1024 * 1024), *log = malloc(2 * 1024 * 1024);
    struct run r;

    assert_non_null(want);
    assert_non_null(log);
    for (int i = 1; i <= 200000; i++)
        len += (size_t)sprintf(want + len, "%d\n", i);
    job_init(&r, fx, 7, argv);
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    got = read_log(fx, 7, 1, log, 2 * 1024 * 1024);
    assert_int_equal(got, len);
    assert_true(memcmp(log, want, len) == 0);
    assert_int_equal(r.res.log_bytes, (int64_t)len);
    assert_false(r.res.log_truncated);
    free(want);
    free(log);
}

static void
test_no_output_creates_no_log(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"true", NULL};
    char path[PATH_MAX], buf[16];
    struct stat st;
    struct run r;
    size_t n = 99;
    int64_t size = 99;

    job_init(&r, fx, 2, argv);
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    assert_int_equal(r.res.log_bytes, 0);
    assert_int_equal(r.outputs, 0);
    assert_int_equal(exec_log_path(&fx->o, 2, 1, path, sizeof(path)), 0);
    assert_int_equal(stat(path, &st), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(exec_log_read(&fx->o, 2, 1, 0, buf, sizeof(buf), &n, &size), 0);
    assert_int_equal(n, 0);
    assert_int_equal(size, 0);
}

static void
test_log_cap_truncates_with_marker(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sh", "-c", "head -c 5000 /dev/zero | tr '\\0' a", NULL};
    const char *marker = "\n[jobq: output truncated at 1000 bytes]\n";
    char log[8192];
    struct run r;

    fx->o.log_cap_bytes = 1000;
    job_init(&r, fx, 3, argv);
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    assert_true(r.res.log_truncated);
    assert_int_equal(r.res.output_bytes, 5000);
    assert_int_equal(r.res.log_bytes, 1000 + (int64_t)strlen(marker));
    assert_int_equal(read_log(fx, 3, 1, log, sizeof(log)), 1000 + strlen(marker));
    for (int i = 0; i < 1000; i++)
        assert_int_equal(log[i], 'a');
    assert_string_equal(log + 1000, marker);
    assert_string_equal(r.res.error, "");
}

static void
test_log_write_error_keeps_job_running(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sh", "-c", "head -c 20000 /dev/zero | tr '\\0' b; echo survived >&2; exit 0",
                    NULL};
    struct rlimit old, small = {.rlim_cur = 1000};
    struct run r;

    /* A file-size limit makes the log's write fail with EFBIG, as a full
     * disk fails it with ENOSPC; the job writes to a pipe, unaffected. */
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    small.rlim_max = old.rlim_max;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    job_init(&r, fx, 4, argv);
    run(&r);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);

    assert_int_equal(r.rc, 0);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    assert_true(r.res.log_truncated);
    assert_int_equal(r.res.log_bytes, 1000);
    assert_int_equal(r.res.output_bytes, 20009);
    assert_string_equal(r.res.error, "log capture failed: File too large");
}

static void
test_on_started_gets_pgid_and_on_output_fires(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"echo", "hello", NULL};
    char log[64];
    struct run r;

    job_init(&r, fx, 5, argv);
    run(&r);
    assert_int_equal(r.started_calls, 1);
    assert_true(r.started_pgid > 0);
    assert_int_equal(r.started_pgid, r.res.pgid);
    assert_true(r.group_existed);
    assert_true(r.outputs >= 1);
    read_log(fx, 5, 1, log, sizeof(log));
    assert_string_equal(log, "hello\n");
}

static void
test_logs_read_at_offsets_and_remove(void **state)
{
    struct fx *fx = *state;
    char *a1[] = {"echo", "first", NULL}, *a2[] = {"echo", "second", NULL};
    char buf[64], path[PATH_MAX];
    struct stat st;
    struct run r;
    size_t n;
    int64_t size;

    job_init(&r, fx, 6, a1);
    run(&r);
    job_init(&r, fx, 6, a2);
    r.attempt = 2;
    run(&r);
    /* Same bucket (0/), another id: must survive the removal of 6's. */
    job_init(&r, fx, 60, a1);
    run(&r);
    assert_int_equal(exec_log_read(&fx->o, 6, 2, 3, buf, 2, &n, &size), 0);
    assert_int_equal(n, 2);
    assert_int_equal(size, 7);
    assert_true(memcmp(buf, "on", 2) == 0);
    assert_int_equal(exec_log_read(&fx->o, 6, 2, 7, buf, sizeof(buf), &n, &size), 0);
    assert_int_equal(n, 0);

    assert_int_equal(exec_log_remove(&fx->o, 6), 0);
    assert_int_equal(exec_log_path(&fx->o, 6, 1, path, sizeof(path)), 0);
    assert_int_equal(stat(path, &st), -1);
    assert_int_equal(exec_log_path(&fx->o, 6, 2, path, sizeof(path)), 0);
    assert_int_equal(stat(path, &st), -1);
    assert_int_equal(exec_log_path(&fx->o, 60, 1, path, sizeof(path)), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(exec_log_remove(&fx->o, 6), 0); /* nothing left: still fine */
    assert_int_equal(exec_log_remove(&fx->o, 60), 0);
    assert_int_equal(exec_log_remove(&fx->o, 123456), 0); /* never had a bucket */
}

/* ---- statuses and spawn errors ----------------------------------------- */

static void
test_exit_zero_succeeds(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"true", NULL};
    struct run r;

    job_init(&r, fx, 10, argv);
    run(&r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    assert_int_equal(r.res.exit_code, 0);
    assert_int_equal(r.res.signal, 0);
}

static void
test_exit_n_is_exited(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sh", "-c", "exit 3", NULL};
    struct run r;

    job_init(&r, fx, 11, argv);
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_EXITED);
    assert_int_equal(r.res.exit_code, 3);
    assert_int_equal(r.res.signal, 0);
    assert_int_equal(r.res.stopped, 0);
}

static void
test_killed_by_signal(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sh", "-c", "kill -9 $$", NULL};
    struct run r;

    job_init(&r, fx, 12, argv);
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_SIGNALED);
    assert_int_equal(r.res.signal, SIGKILL);
    assert_int_equal(r.res.exit_code, -1);
    assert_int_equal(r.res.stopped, 0);
}

static void
test_command_not_found_is_127(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"jobq-no-such-command", NULL};
    struct run r;

    job_init(&r, fx, 13, argv);
    run(&r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.res.outcome, OUTCOME_SPAWN_ERROR);
    assert_int_equal(r.res.exit_code, 127);
    assert_string_equal(r.res.error, "command not found: jobq-no-such-command");
    assert_int_equal(r.res.pgid, 0);
    assert_int_equal(r.started_calls, 0);
}

static void
test_missing_path_is_127(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"/nonexistent/jobq-cmd", NULL};
    struct run r;

    job_init(&r, fx, 14, argv);
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_SPAWN_ERROR);
    assert_int_equal(r.res.exit_code, 127);
    assert_string_equal(r.res.error, "command not found: /nonexistent/jobq-cmd");
}

static void
test_not_executable_is_126(void **state)
{
    struct fx *fx = *state;
    char path[PATH_MAX], pathenv[PATH_MAX + 8];
    char *argv[] = {path, NULL}, *byname[] = {"script.sh", NULL}, *env[] = {pathenv, NULL};
    struct run r;

    snprintf(path, sizeof(path), "%s/script.sh", fx->dir);
    write_file(path, "#!/bin/sh\necho hi\n", 0644);
    job_init(&r, fx, 15, argv);
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_SPAWN_ERROR);
    assert_int_equal(r.res.exit_code, 126);
    assert_true(strncmp(r.res.error, "permission denied: ", 19) == 0);

    /* Found by a PATH search, but not executable: still 126, not 127. */
    snprintf(pathenv, sizeof(pathenv), "PATH=%s", fx->dir);
    job_init(&r, fx, 15, byname);
    r.job.spec.env = env;
    run(&r);
    assert_int_equal(r.res.exit_code, 126);
    assert_string_equal(r.res.error, "permission denied: script.sh");
}

static void
test_bad_cwd_is_126(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"true", NULL};
    struct run r;

    job_init(&r, fx, 16, argv);
    r.job.spec.cwd = "/nonexistent/dir";
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_SPAWN_ERROR);
    assert_int_equal(r.res.exit_code, 126);
    assert_string_equal(r.res.error,
                        "cannot change directory to /nonexistent/dir: No such file or directory");
}

static void
test_job_path_is_searched(void **state)
{
    struct fx *fx = *state;
    char path[PATH_MAX], pathenv[PATH_MAX + 8], log[64];
    char *argv[] = {"jobq-own-tool", NULL}, *env[] = {pathenv, NULL};
    struct run r;

    snprintf(path, sizeof(path), "%s/jobq-own-tool", fx->dir);
    write_file(path, "#!/bin/sh\necho own tool\n", 0755);
    snprintf(pathenv, sizeof(pathenv), "PATH=/nonexistent:%s:/usr/bin:/bin", fx->dir);
    job_init(&r, fx, 17, argv);
    r.job.spec.env = env;
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    read_log(fx, 17, 1, log, sizeof(log));
    assert_string_equal(log, "own tool\n");
}

/* ---- what a job gets ---------------------------------------------------- */

static void
test_env_and_cwd_applied(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sh", "-c", "echo \"$FOO|$BAR\"; pwd", NULL};
    char *env[] = {"FOO=bar baz", "BAR=1", "BAR=2", NULL};
    char log[PATH_MAX + 64], want[PATH_MAX + 64], real[PATH_MAX];
    struct run r;

    assert_non_null(realpath(fx->dir, real));
    job_init(&r, fx, 20, argv);
    r.job.spec.env = env;
    r.job.spec.cwd = real;
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    read_log(fx, 20, 1, log, sizeof(log));
    snprintf(want, sizeof(want), "bar baz|2\n%s\n", real);
    assert_string_equal(log, want);
}

static void
test_jobq_variables_set_and_not_overridable(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sh", "-c", "echo \"$JOBQ_JOB_ID $JOBQ_ATTEMPT $JOBQ_QUEUE $JOBQ_INSTANCE\"",
                    NULL};
    char *env[] = {"JOBQ_JOB_ID=1", "JOBQ_INSTANCE=fake", NULL};
    char log[PATH_MAX + 64], want[PATH_MAX + 64];
    struct run r;

    job_init(&r, fx, 21, argv);
    r.attempt = 3;
    r.job.spec.env = env;
    r.job.spec.queue = "mail";
    run(&r);
    read_log(fx, 21, 3, log, sizeof(log));
    snprintf(want, sizeof(want), "21 3 mail %s\n", fx->dir);
    assert_string_equal(log, want);
}

static void
test_no_fd_leaks_into_job(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"ls", "/proc/self/fd", NULL};
    char log[256];
    struct run r;
    /* Not close-on-exec: the child must close it anyway. */
    int leak = open("/dev/null", O_RDONLY);

    assert_true(leak >= 3);
    job_init(&r, fx, 22, argv);
    run(&r);
    close(leak);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    read_log(fx, 22, 1, log, sizeof(log));
    assert_string_equal(log, "0\n1\n2\n3\n"); /* 3: the directory ls reads */
}

static void
test_signals_start_at_defaults(void **state)
{
    struct fx *fx = *state;
    /* SigIgn and SigBlk of the job: nothing ignored, nothing blocked. */
    char *argv[] = {"grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status", NULL};
    char log[256];
    struct run r;
    sigset_t block, old;

    signal(SIGPIPE, SIG_IGN); /* as the daemon does */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    job_init(&r, fx, 23, argv);
    run(&r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    signal(SIGPIPE, SIG_DFL);
    read_log(fx, 23, 1, log, sizeof(log));
    assert_string_equal(log, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

static void
test_job_runs_in_its_own_session(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sh", "-c", "cut -d' ' -f1,5,6 /proc/self/stat", NULL};
    char log[128], want[128];
    struct run r;

    job_init(&r, fx, 24, argv);
    run(&r);
    read_log(fx, 24, 1, log, sizeof(log));
    /* cut is a child of sh: pgid and sid are the leader's pid. */
    snprintf(want, sizeof(want), "%d %d\n", (int)r.res.pgid, (int)r.res.pgid);
    assert_string_equal(strchr(log, ' ') + 1, want);
}

/* ---- stopping ----------------------------------------------------------- */

static void
test_timeout_kills_whole_tree(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sh", "-c", "sleep 100 & echo $!; sleep 100", NULL};
    char log[64];
    struct run r;
    pid_t bg;

    job_init(&r, fx, 30, argv);
    r.timeout_ns = 300 * MS;
    run(&r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.res.stopped, RT_EDEADLINE);
    assert_int_equal(r.res.outcome, OUTCOME_SIGNALED);
    assert_int_equal(r.res.signal, SIGTERM);
    assert_true(r.elapsed_ns < 1500 * MS); /* SIGTERM did it: no grace */
    read_log(fx, 30, 1, log, sizeof(log));
    bg = (pid_t)atoi(log);
    assert_true(bg > 0);
    /* At once, reaped and all: exec_run waited for the whole group. */
    assert_int_equal(kill(-r.res.pgid, 0), -1);
    assert_int_equal(errno, ESRCH);
    assert_int_equal(kill(bg, 0), -1);
    assert_int_equal(errno, ESRCH);
}

static void
test_sigterm_ignored_gets_sigkill_after_grace(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sh", "-c", "trap '' TERM; echo armed; while :; do sleep 0.05; done", NULL};
    char log[64];
    struct run r;

    fx->o.kill_grace_ms = 300;
    job_init(&r, fx, 31, argv);
    r.timeout_ns = 300 * MS;
    run(&r);
    assert_int_equal(r.res.stopped, RT_EDEADLINE);
    assert_int_equal(r.res.signal, SIGKILL);
    assert_true(r.elapsed_ns >= 600 * MS);
    assert_true(r.elapsed_ns < 3000 * MS);
    read_log(fx, 31, 1, log, sizeof(log));
    assert_string_equal(log, "armed\n");
    assert_true(group_gone(fx, r.res.pgid));
}

static void
test_stop_lets_the_job_handle_sigterm(void **state)
{
    struct fx *fx = *state;
    /* The whole group gets SIGTERM: the shell's trap runs (its sleep dies
     * of it too, which ends the wait), and the job exits on its terms. */
    char *argv[] = {"sh", "-c", "trap 'echo cleaning up; exit 0' TERM; echo up; sleep 100 & wait",
                    NULL};
    char log[64];
    struct run r;

    job_init(&r, fx, 34, argv);
    r.timeout_ns = 300 * MS;
    run(&r);
    assert_int_equal(r.res.stopped, RT_EDEADLINE);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    assert_int_equal(r.res.exit_code, 0);
    assert_true(r.elapsed_ns < 1500 * MS);
    read_log(fx, 34, 1, log, sizeof(log));
    assert_string_equal(log, "up\ncleaning up\n");
}

static void
test_on_started_failure_kills_the_job(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sleep", "100", NULL};
    struct run r;

    job_init(&r, fx, 35, argv);
    r.started_rc = -EIO;
    run(&r);
    assert_int_equal(r.rc, -EIO);
    assert_int_equal(r.started_calls, 1);
    assert_int_equal(r.res.signal, SIGKILL);
    assert_true(r.elapsed_ns < 1500 * MS);
    assert_int_equal(kill(-r.res.pgid, 0), -1);
    assert_int_equal(errno, ESRCH);
}

static void
test_cancel_stops_running_job(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sleep", "100", NULL};
    struct run r;

    job_init(&r, fx, 32, argv);
    r.cancel_after_ns = 200 * MS;
    run(&r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.res.stopped, RT_ECANCELED);
    assert_int_equal(r.res.signal, SIGTERM);
    assert_true(r.elapsed_ns >= 200 * MS && r.elapsed_ns < 1500 * MS);
    assert_true(group_gone(fx, r.res.pgid));
}

static void
test_context_done_before_start_runs_nothing(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"true", NULL};
    struct run r;

    job_init(&r, fx, 33, argv);
    r.cancel_first = true;
    run(&r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.res.stopped, RT_ECANCELED);
    assert_int_equal(r.res.pgid, 0);
    assert_int_equal(r.res.outcome, OUTCOME_NONE);
    assert_int_equal(r.started_calls, 0);
}

/* ---- what a job leaves behind ------------------------------------------ */

static void
test_background_straggler_killed_when_leader_exits(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sh", "-c", "sleep 100 & echo $!", NULL};
    char log[64];
    struct run r;
    pid_t bg;

    job_init(&r, fx, 40, argv);
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    assert_true(r.elapsed_ns < 900 * MS); /* the pipe closed with the group */
    read_log(fx, 40, 1, log, sizeof(log));
    bg = (pid_t)atoi(log);
    assert_true(bg > 0);
    assert_int_equal(kill(-r.res.pgid, 0), -1);
    assert_int_equal(errno, ESRCH);
    assert_int_equal(kill(bg, 0), -1);
    assert_int_equal(errno, ESRCH);
}

static void
test_process_that_left_the_group_is_killed(void **state)
{
    struct fx *fx = *state;
    char script[PATH_MAX], log[64];
    char *argv[] = {script, NULL};
    struct run r;
    pid_t p;

    /* Its own process group, same session (what a shell with job control
     * does), and no output pipe: neither the group kill nor the pipe
     * would find it. perl is in every Debian (perl-base). */
    snprintf(script, sizeof(script), "%s/leave-group.sh", fx->dir);
    write_file(script,
               "#!/bin/sh\n"
               "perl -e 'setpgrp(0, 0); print \"$$\\n\"; close STDOUT; close STDERR; "
               "exec \"sleep\", \"100\"' &\n"
               "sleep 0.3\n",
               0755);
    job_init(&r, fx, 41, argv);
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    read_log(fx, 41, 1, log, sizeof(log));
    p = (pid_t)atoi(log);
    assert_true(p > 0 && p != r.res.pgid);
    assert_true(gone(fx, p));
}

static void
test_marked_escapee_is_killed(void **state)
{
    struct fx *fx = *state;
    char script[PATH_MAX], log[128];
    char *argv[] = {script, NULL};
    struct run r;
    pid_t p;

    /* A daemonised grandchild: new session, output away from our pipe,
     * found by its marker alone. */
    snprintf(script, sizeof(script), "%s/daemonize.sh", fx->dir);
    write_file(script,
               "#!/bin/sh\n"
               "setsid sh -c 'echo $$ > \"$0\"; exec sleep 100' \"$0.pid\" </dev/null >/dev/null "
               "2>&1 &\n"
               "while [ ! -s \"$0.pid\" ]; do sleep 0.01; done\n"
               "cat \"$0.pid\"\n",
               0755);
    job_init(&r, fx, 42, argv);
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    read_log(fx, 42, 1, log, sizeof(log));
    p = (pid_t)atoi(log);
    assert_true(p > 0);
    assert_true(gone(fx, p));
    assert_true(r.elapsed_ns < 900 * MS);
}

/* The pids listed in path, one per line; returns how many (at most max). */
static int
read_pids(const char *path, pid_t *pids, int max)
{
    FILE *f;
    int n = 0;

    assert_non_null(f = fopen(path, "r"));
    while (n < max && fscanf(f, "%d", &pids[n]) == 1)
        n++;
    fclose(f);
    return n;
}

/* Checks that pids[0..n) are alive, then kills them and waits until they
 * are gone. */
static void
spared_then_killed(struct fx *fx, const pid_t *pids, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(kill(pids[i], 0), 0);
    for (int i = 0; i < n; i++)
        kill(pids[i], SIGKILL);
    for (int i = 0; i < n; i++)
        assert_true(gone(fx, pids[i]));
}

/* More unattributed processes than the probe keeps inline: a hundred
 * strangers in sessions of their own (the marker's id removed), started by
 * the job like the jobs of other nodes on the same machine, and one marked
 * escapee among them. The escapee dies, the strangers live. */
#define STRANGERS 100

static void
test_marked_escapee_found_among_many_strangers(void **state)
{
    struct fx *fx = *state;
    char script[PATH_MAX], path[PATH_MAX + 16], log[128];
    char *argv[] = {script, NULL};
    pid_t strangers[STRANGERS], p;
    struct run r;

    snprintf(script, sizeof(script), "%s/crowd.sh", fx->dir);
    write_file(script,
               "#!/bin/sh\n"
               "i=0\n"
               "while [ $i -lt 100 ]; do\n"
               /* Each writes its pid from its own session: once 100 are
                * written, none is a member of the job's session any more. */
               "    setsid env -u JOBQ_JOB_ID sh -c 'echo $$ >>\"$0\"; exec sleep 100' "
               "\"$0.strangers\" </dev/null >/dev/null 2>&1 &\n"
               "    i=$((i + 1))\n"
               "done\n"
               "setsid sh -c 'echo $$ > \"$0\"; exec sleep 100' \"$0.pid\" </dev/null >/dev/null "
               "2>&1 &\n"
               "while [ ! -s \"$0.pid\" ] || [ \"$(wc -l <\"$0.strangers\")\" -lt 100 ]; do\n"
               "    sleep 0.01\n"
               "done\n"
               "cat \"$0.pid\"\n",
               0755);
    job_init(&r, fx, 44, argv);
    run(&r);
    snprintf(path, sizeof(path), "%s.strangers", script);
    assert_int_equal(read_pids(path, strangers, STRANGERS), STRANGERS);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    read_log(fx, 44, 1, log, sizeof(log));
    p = (pid_t)atoi(log);
    assert_true(p > 0);
    assert_true(gone(fx, p));
    spared_then_killed(fx, strangers, STRANGERS); /* not marked as the job's */
}

/* n runs at once, each in its own coroutine: run() for several jobs. */
struct concurrent {
    struct run *runs;
    int n;
    struct wg *wg;
};

static void
concurrent_one(void *arg)
{
    struct run *r = arg;
    r->rc = exec_run(&r->fx->o, &r->job, 1, NULL, on_started, on_output, r, &r->res);
    wg_done((struct wg *)r->job.spec.name);
}

static void
concurrent_main(void *arg)
{
    struct concurrent *c = arg;
    assert_int_equal(wg_new(&c->wg), 0);
    for (int i = 0; i < c->n; i++) {
        wg_add(c->wg, 1);
        c->runs[i].job.spec.name = (char *)c->wg; /* borrowed to carry the wait group */
        assert_int_equal(coro_spawn(coro_rt(), "job", concurrent_one, &c->runs[i]), 0);
    }
    assert_int_equal(wg_wait(c->wg, NULL, RT_FOREVER), 0);
    wg_free(c->wg);
}

static void
run_concurrently(struct fx *fx, struct run *runs, int n)
{
    struct concurrent c = {.runs = runs, .n = n};
    assert_int_equal(rt_run(fx->rt, "concurrent", concurrent_main, &c), 0);
}

/* Two jobs at once: B starts 50 strangers and ends; A, which started
 * before them and ends after they all exist, has them in its pid range
 * too. Whichever sweep comes first reads their environments; the other
 * does not read them again. */
#define PAIR_STRANGERS 50

static void
test_strangers_environment_read_once(void **state)
{
    struct fx *fx = *state;
    char script[PATH_MAX], path[PATH_MAX + 16];
    char wait_a[2 * PATH_MAX + 128];
    char *argv_a[] = {"sh", "-c", wait_a, NULL}, *argv_b[] = {script, NULL};
    pid_t strangers[PAIR_STRANGERS];
    long reads0, hits0, reads1, hits1;
    struct run pr[2]; /* A, B */

    snprintf(script, sizeof(script), "%s/strangers.sh", fx->dir);
    write_file(script,
               "#!/bin/sh\n"
               "i=0\n"
               "while [ $i -lt 50 ]; do\n"
               /* Each writes its pid from its own session. */
               "    setsid env -u JOBQ_INSTANCE -u JOBQ_JOB_ID sh -c 'echo $$ >>\"$0\"; exec sleep "
               "100' \"$0.pids\" </dev/null >/dev/null 2>&1 &\n"
               "    i=$((i + 1))\n"
               "done\n"
               "while [ \"$(wc -l <\"$0.pids\")\" -lt 50 ]; do sleep 0.01; done\n",
               0755);
    /* A ends once all 50 exist, so that they are in its range too; if the
     * machine is slow enough for A to outlast the range probe's second,
     * its full scan looks them up the same way. */
    snprintf(wait_a, sizeof(wait_a),
             "until [ -s '%s.pids' ] && [ \"$(wc -l <'%s.pids')\" -ge 50 ]; do sleep 0.01; done; "
             "sleep 0.2",
             script, script);
    job_init(&pr[0], fx, 45, argv_a);
    job_init(&pr[1], fx, 46, argv_b);
    exec_children_sweep_stats(fx->children, &reads0, &hits0);
    run_concurrently(fx, pr, 2);
    exec_children_sweep_stats(fx->children, &reads1, &hits1);
    snprintf(path, sizeof(path), "%s.pids", script);
    assert_int_equal(read_pids(path, strangers, PAIR_STRANGERS), PAIR_STRANGERS);
    assert_int_equal(pr[0].res.outcome, OUTCOME_SUCCEEDED);
    assert_int_equal(pr[1].res.outcome, OUTCOME_SUCCEEDED);
    print_message("FIGURE sweep: %ld environments read, %ld reads skipped\n", reads1 - reads0,
                  hits1 - hits0);
    /* The first sweep to see them read each; the other found each of them
     * remembered. */
    assert_true(reads1 - reads0 >= PAIR_STRANGERS);
    assert_true(hits1 - hits0 >= PAIR_STRANGERS);
    spared_then_killed(fx, strangers, PAIR_STRANGERS);
}

static void
test_unmarked_escapee_holding_pipe_does_not_hang(void **state)
{
    struct fx *fx = *state;
    /* Clears its environment: nothing says it is ours, so it is spared,
     * but it holds the pipe, and exec_run must still return. */
    char *argv[] = {"sh", "-c", "setsid env -i sh -c 'echo $$; exec sleep 100' & sleep 0.3", NULL};
    char log[64];
    struct run r;
    pid_t p;

    job_init(&r, fx, 43, argv);
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    assert_true(r.elapsed_ns < 3000 * MS);
    read_log(fx, 43, 1, log, sizeof(log));
    p = (pid_t)atoi(log);
    assert_true(p > 0);
    assert_int_equal(kill(p, SIGKILL), 0);
    assert_true(gone(fx, p));
}

/* ---- running as the submitter ------------------------------------------- */

static void
test_as_submitter_runs_as_nobody_with_groups(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sh", "-c", "id -u; id -g; id -G; echo \"$HOME $USER $LOGNAME\"", NULL};
    char log[512], want[512], path[PATH_MAX];
    struct passwd *pw;
    gid_t groups[64];
    int ng = 64, len;
    struct stat st;
    struct run r;

    if (geteuid() != 0) {
        print_message("SKIP: needs root to switch users\n");
        skip();
    }
    if ((pw = getpwuid(65534)) == NULL) {
        print_message("SKIP: no passwd entry for uid 65534\n");
        skip();
    }
    assert_true(getgrouplist(pw->pw_name, 65534, groups, &ng) >= 0);
    len = snprintf(want, sizeof(want), "65534\n65534\n");
    /* id -G prints the effective gid first, then the others in order. */
    len += snprintf(want + len, sizeof(want) - (size_t)len, "65534");
    for (int i = 0; i < ng; i++)
        if (groups[i] != 65534)
            len += snprintf(want + len, sizeof(want) - (size_t)len, " %u", (unsigned)groups[i]);
    snprintf(want + len, sizeof(want) - (size_t)len, "\n%s %s %s\n", pw->pw_dir, pw->pw_name,
             pw->pw_name);

    fx->o.as_submitter = true;
    job_init(&r, fx, 50, argv);
    r.job.spec.uid = 65534;
    r.job.spec.gid = 65534;
    r.job.spec.cwd = "/";
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
    read_log(fx, 50, 1, log, sizeof(log));
    assert_string_equal(log, want);
    /* The log is the daemon's: the job (or another job) cannot read it. */
    assert_int_equal(exec_log_path(&fx->o, 50, 1, path, sizeof(path)), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_uid, 0);
    assert_int_equal(st.st_mode & 0007, 0);
}

/* A root daemon reuses a looked-up identity for later jobs of the same
 * submitter: the second job must run exactly as the first. */
static void
test_identity_cache_gives_the_same_identity(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"sh", "-c", "id -u; id -g; id -G; echo \"$HOME $USER\"", NULL};
    char first[512], second[512];
    struct exec_idents *idents;
    struct run r;

    if (geteuid() != 0 || getpwuid(65534) == NULL) {
        print_message("SKIP: needs root and a passwd entry for uid 65534\n");
        skip();
    }
    assert_int_equal(exec_idents_new(&idents), 0);
    fx->o.as_submitter = true;
    fx->o.idents = idents;
    for (int i = 0; i < 2; i++) {
        job_init(&r, fx, 60 + i, argv);
        r.job.spec.uid = 65534;
        r.job.spec.gid = 65534;
        r.job.spec.cwd = "/";
        run(&r);
        assert_int_equal(r.res.outcome, OUTCOME_SUCCEEDED);
        read_log(fx, 60 + i, 1, i == 0 ? first : second, sizeof(first));
    }
    assert_string_equal(second, first);
    assert_non_null(strstr(first, "65534\n65534\n"));
    fx->o.idents = NULL;
    exec_idents_free(idents);
}

static void
test_as_submitter_cannot_read_other_logs(void **state)
{
    struct fx *fx = *state;
    char path[PATH_MAX], log[512];
    char *a1[] = {"echo", "secret", NULL}, *a2[] = {"cat", path, NULL};
    struct run r;

    if (geteuid() != 0) {
        print_message("SKIP: needs root to switch users\n");
        skip();
    }
    fx->o.as_submitter = true;
    job_init(&r, fx, 51, a1);
    run(&r);
    assert_int_equal(exec_log_path(&fx->o, 51, 1, path, sizeof(path)), 0);
    /* Open the way to the file: only its own mode may protect it. */
    assert_int_equal(chmod(fx->dir, 0755), 0);
    assert_int_equal(chmod(fx->logs, 0755), 0);
    snprintf(log, sizeof(log), "%s/0", fx->logs);
    assert_int_equal(chmod(log, 0755), 0);
    job_init(&r, fx, 52, a2);
    r.job.spec.uid = 65534;
    r.job.spec.gid = 65534;
    r.job.spec.cwd = "/";
    run(&r);
    assert_int_equal(r.res.outcome, OUTCOME_EXITED);
    read_log(fx, 52, 1, log, sizeof(log));
    assert_non_null(strstr(log, "Permission denied"));
}

/* ---- leftovers of a crashed daemon --------------------------------------- */

static void
boot_id(char *buf, size_t len)
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, (int)len, f));
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
}

/* A process group as a crashed daemon's job would have left it: its own
 * session, the marker in its environment if id > 0. */
static pid_t
spawn_group(struct fx *fx, int64_t id, const char *script)
{
    char inst[PATH_MAX + 32], idenv[64];
    char *envp[] = {"PATH=/usr/bin:/bin", inst, idenv, NULL};
    pid_t pid;

    snprintf(inst, sizeof(inst), "JOBQ_INSTANCE=%s", fx->dir);
    snprintf(idenv, sizeof(idenv), "JOBQ_JOB_ID=%" PRId64, id);
    if (id <= 0)
        envp[1] = NULL;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setsid();
        execle("/bin/sh", "sh", "-c", script, (char *)NULL, envp);
        _exit(127);
    }
    return pid;
}

static int
group_size(pid_t pgid)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    while ((e = readdir(d)) != NULL) {
        char path[300], buf[512], *p, state;
        int pid, ppid, pg;
        FILE *f;
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        if ((f = fopen(path, "r")) == NULL)
            continue;
        if (fgets(buf, sizeof(buf), f) != NULL && (p = strrchr(buf, ')')) != NULL &&
            sscanf(p + 1, " %c %d %d", &state, &ppid, &pg) == 3 && pg == pgid && state != 'Z')
            n++;
        (void)pid;
        fclose(f);
    }
    closedir(d);
    return n;
}

/* Until pid runs `sleep` with its arguments and environment in place
 * (comm changes earlier in an execve, before they are copied). */
static void
wait_exec(pid_t pid)
{
    char path[64], cmd[64] = "";
    for (int i = 0; i < 2000 && strcmp(cmd, "sleep") != 0; i++) {
        FILE *f;
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        cmd[0] = '\0';
        if ((f = fopen(path, "r")) != NULL) {
            size_t n = fread(cmd, 1, sizeof(cmd) - 1, f);
            cmd[n] = '\0'; /* the first argument ends at its NUL */
            fclose(f);
        }
        if (strcmp(cmd, "sleep") != 0)
            usleep(1000);
    }
    assert_string_equal(cmd, "sleep");
}

static void
wait_group_size(pid_t pgid, int n)
{
    for (int i = 0; i < 2000 && group_size(pgid) != n; i++)
        usleep(1000);
    assert_int_equal(group_size(pgid), n);
}

static void
reap_group(struct fx *fx, pid_t leader)
{
    int status;
    assert_int_equal(waitpid(leader, &status, 0), leader);
    assert_true(group_gone(fx, leader));
}

static void
test_leftovers_marked_group_killed(void **state)
{
    struct fx *fx = *state;
    struct store_running rr = {.id = 70, .attempt = 1};
    char why[256] = "";
    int killed = -1;
    /* The marker on the leader; a member that cleared its environment
     * dies with the group. */
    pid_t g = spawn_group(fx, 70, "env -i sleep 100 & exec sleep 101");

    wait_group_size(g, 2);
    wait_exec(g);
    rr.pgid = g;
    boot_id(rr.boot_id, sizeof(rr.boot_id));
    assert_int_equal(exec_kill_leftovers(&fx->o, &rr, 1, &killed, why, sizeof(why)), 0);
    assert_int_equal(killed, 2);
    reap_group(fx, g);
}

static void
test_leftovers_marked_process_outside_group_killed(void **state)
{
    struct fx *fx = *state;
    /* Crashed between spawn and recording the pgid: only the marker
     * finds it. */
    struct store_running rr = {.id = 71, .attempt = 2, .pgid = 0};
    char why[256] = "";
    int killed = -1;
    pid_t g = spawn_group(fx, 71, "exec sleep 100");

    wait_exec(g);
    boot_id(rr.boot_id, sizeof(rr.boot_id));
    assert_int_equal(exec_kill_leftovers(&fx->o, &rr, 1, &killed, why, sizeof(why)), 0);
    assert_int_equal(killed, 1);
    reap_group(fx, g);
}

static void
test_leftovers_unmarked_group_spared(void **state)
{
    struct fx *fx = *state;
    struct store_running rr = {.id = 72, .attempt = 1};
    char why[256] = "";
    int killed = -1;
    pid_t g = spawn_group(fx, 0, "exec sleep 100"); /* pgid reused by a stranger */

    wait_exec(g);
    rr.pgid = g;
    boot_id(rr.boot_id, sizeof(rr.boot_id));
    assert_int_equal(exec_kill_leftovers(&fx->o, &rr, 1, &killed, why, sizeof(why)), 0);
    assert_int_equal(killed, 0);
    assert_int_equal(kill(g, 0), 0);
    kill(-g, SIGKILL);
    reap_group(fx, g);
}

static void
test_leftovers_other_job_or_instance_spared(void **state)
{
    struct fx *fx = *state;
    struct store_running rr = {.id = 73, .attempt = 1};
    struct exec_opts other = fx->o;
    char why[256] = "";
    int killed = -1;
    pid_t g = spawn_group(fx, 74, "exec sleep 100"); /* job 74, not 73 */

    wait_exec(g);
    rr.pgid = g;
    boot_id(rr.boot_id, sizeof(rr.boot_id));
    assert_int_equal(exec_kill_leftovers(&fx->o, &rr, 1, &killed, why, sizeof(why)), 0);
    assert_int_equal(killed, 0);
    /* Job 74 of another daemon (another database): not ours either. */
    rr.id = 74;
    other.instance = "/some/other/jobq.db";
    assert_int_equal(exec_kill_leftovers(&other, &rr, 1, &killed, why, sizeof(why)), 0);
    assert_int_equal(killed, 0);
    assert_int_equal(kill(g, 0), 0);
    kill(-g, SIGKILL);
    reap_group(fx, g);
}

static void
test_leftovers_foreign_boot_ignored(void **state)
{
    struct fx *fx = *state;
    struct store_running rr = {
        .id = 75, .attempt = 1, .boot_id = "00000000-dead-beef-0000-000000000000"};
    char why[256] = "";
    int killed = -1;
    pid_t g = spawn_group(fx, 75, "exec sleep 100");

    wait_exec(g);
    rr.pgid = g;
    assert_int_equal(exec_kill_leftovers(&fx->o, &rr, 1, &killed, why, sizeof(why)), 0);
    assert_int_equal(killed, 0);
    assert_int_equal(kill(g, 0), 0);
    kill(-g, SIGKILL);
    reap_group(fx, g);
}

/* ---- many at once -------------------------------------------------------- */

#define MANY 200

struct many {
    struct fx *fx;
    struct run runs[MANY];
};

static void
test_many_concurrent_jobs_leave_nothing(void **state)
{
    struct fx *fx = *state;
    char *argv[] = {"true", NULL};
    struct many *m = calloc(1, sizeof(*m));
    int fds_before, fds_after;

    assert_non_null(m);
    /* Warm up (the runtime's and libc's lazily opened fds). */
    job_init(&m->runs[0], fx, 99, argv);
    run(&m->runs[0]);
    fds_before = count_fds();
    m->fx = fx;
    for (int i = 0; i < MANY; i++) {
        job_init(&m->runs[i], fx, 100 + i, argv);
    }
    run_concurrently(fx, m->runs, MANY);
    for (int i = 0; i < MANY; i++) {
        if (m->runs[i].res.outcome != OUTCOME_SUCCEEDED)
            print_message("job %d: rc %d outcome %d exit %d signal %d error %s\n", i, m->runs[i].rc,
                          m->runs[i].res.outcome, m->runs[i].res.exit_code, m->runs[i].res.signal,
                          m->runs[i].res.error);
        assert_int_equal(m->runs[i].rc, 0);
        assert_int_equal(m->runs[i].res.outcome, OUTCOME_SUCCEEDED);
        assert_int_equal(m->runs[i].started_calls, 1);
    }
    fds_after = count_fds();
    assert_int_equal(fds_after, fds_before);
    assert_int_equal(count_children(), 0);
    free(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_output_interleaved_exactly),
        T(test_large_output_captured_exactly),
        T(test_no_output_creates_no_log),
        T(test_log_cap_truncates_with_marker),
        T(test_log_write_error_keeps_job_running),
        T(test_on_started_gets_pgid_and_on_output_fires),
        T(test_logs_read_at_offsets_and_remove),
        T(test_exit_zero_succeeds),
        T(test_exit_n_is_exited),
        T(test_killed_by_signal),
        T(test_command_not_found_is_127),
        T(test_missing_path_is_127),
        T(test_not_executable_is_126),
        T(test_bad_cwd_is_126),
        T(test_job_path_is_searched),
        T(test_env_and_cwd_applied),
        T(test_jobq_variables_set_and_not_overridable),
        T(test_no_fd_leaks_into_job),
        T(test_signals_start_at_defaults),
        T(test_job_runs_in_its_own_session),
        T(test_timeout_kills_whole_tree),
        T(test_sigterm_ignored_gets_sigkill_after_grace),
        T(test_stop_lets_the_job_handle_sigterm),
        T(test_on_started_failure_kills_the_job),
        T(test_cancel_stops_running_job),
        T(test_context_done_before_start_runs_nothing),
        T(test_background_straggler_killed_when_leader_exits),
        T(test_process_that_left_the_group_is_killed),
        T(test_marked_escapee_is_killed),
        T(test_marked_escapee_found_among_many_strangers),
        T(test_strangers_environment_read_once),
        T(test_unmarked_escapee_holding_pipe_does_not_hang),
        T(test_as_submitter_runs_as_nobody_with_groups),
        T(test_identity_cache_gives_the_same_identity),
        T(test_as_submitter_cannot_read_other_logs),
        T(test_leftovers_marked_group_killed),
        T(test_leftovers_marked_process_outside_group_killed),
        T(test_leftovers_unmarked_group_spared),
        T(test_leftovers_other_job_or_instance_spared),
        T(test_leftovers_foreign_boot_ignored),
        T(test_many_concurrent_jobs_leave_nothing),
#undef T
    };

    check_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
