/*
 * main — jobqd's life: read the configuration, take the state directory,
 * open the store, kill and recover what a crashed predecessor left, start
 * the runtime, the dispatcher and the server, serve until SIGTERM/SIGINT,
 * then drain and free everything in reverse order. SIGHUP reloads the
 * configuration and reopens the log file.
 *
 * Exit status: 0 after a clean drain (or --help/--version), 1 when the
 * daemon cannot start or run (a message says why), 2 for a usage or
 * configuration error, 3 when the database is refused (corrupt, not a
 * jobq database, or from a newer jobqd; it is never modified), 4 when
 * another jobqd already uses the state directory or the socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "jobq/config.h"
#include "jobq/dispatch.h"
#include "jobq/events.h"
#include "jobq/exec.h"
#include "jobq/httpd.h"
#include "jobq/limits.h"
#include "jobq/log.h"
#include "jobq/metrics.h"
#include "jobq/notify.h"
#include "jobq/runtime.h"
#include "jobq/server.h"
#include "jobq/store.h"

extern char **environ;

enum exit_status {
    EXIT_RUN = 1,
    EXIT_CONFIG = 2,
    EXIT_STORE = 3,
    EXIT_BUSY = 4,
};

/* Configs replaced by SIGHUP stay alive until exit: request handlers may
 * still be reading the old one, and a reload is rare. */
struct retired {
    struct config *cfg;
    struct retired *next;
};

struct run {
    struct daemon *d;
    int sigfd;
    int ready_fd; /* the parent of a detaching daemon waits on it; -1 */
    struct retired *retired;
    /* The store's node thread (PostgreSQL) may report other nodes' doings
     * from its start; they reach the dispatcher and the waiters once both
     * exist (before, the dispatcher's first claim finds the work anyway). */
    atomic_bool events_on;
};

static void
rt_log(void *arg, enum rt_log_level level, const char *msg)
{
    (void)arg;
    log_emit((enum log_level)level, "runtime", " msg=%s", log_q(msg));
}

/* The store failed a ready job whose deadline passed before it could
 * start: its waiters must hear of it. Runs on the thread that claimed. */
static void
on_expired(void *arg, int64_t id)
{
    struct daemon *d = arg;
    log_info("job.expire", "id=%" PRId64 " outcome=deadline", id);
    if (d->events != NULL)
        events_notify(d->events, id);
}

/* PostgreSQL: this node's lease is gone, or it was cut off from the
 * database for most of it. Other nodes run its jobs again, so it stops
 * them now and exits 1, as after a failed sync (store_fatal); its
 * supervisor starts it again with a fresh lease. Any thread. */
static void
lease_lost(struct daemon *d)
{
    if (atomic_exchange(&d->store_failed, true))
        return;
    log_error("store.lease_lost", "err=%s action=stopping",
              log_q("this node's lease in the database ran out; other nodes take its jobs over"));
    kill(getpid(), SIGTERM);
}

/* PostgreSQL: what the other nodes did. On the store's node thread. */
static void
on_store_event(void *arg, enum store_event ev, int64_t id)
{
    struct run *r = arg;
    struct daemon *d = r->d;

    if (ev == STORE_EVENT_LEASE_LOST) {
        lease_lost(d);
        return;
    }
    if (!atomic_load(&r->events_on))
        return;
    switch (ev) {
    case STORE_EVENT_WAKE:
        dispatch_kick(d->dispatch);
        break;
    case STORE_EVENT_CHANGED:
        if (id > 0)
            events_notify(d->events, id);
        else
            events_notify_all(d->events);
        break;
    case STORE_EVENT_CANCEL:
        /* Canceled through another node while it runs here. */
        if (dispatch_cancel(d->dispatch, id) == 0)
            log_info("job.cancel_remote", "id=%" PRId64, id);
        break;
    default:
        break;
    }
}

/* PostgreSQL: a node whose lease expired is being taken over; whatever of
 * its jobs still runs on this machine dies first (a job never runs twice
 * at once). Attempts of another boot are left alone: that machine's
 * processes died with it, or with the dead node's container or cgroup
 * (docs/POSTGRES.md). On the store's node thread. */
static int
on_reap(void *arg, const char *instance, const struct store_running *left, size_t n)
{
    struct run *r = arg;
    struct exec_opts o = r->d->exec;
    char why[256] = "";
    int killed = 0, rc = 0;

    if (instance[0] != '\0') {
        o.instance = instance;
        rc = exec_kill_leftovers(&o, left, n, &killed, why, sizeof(why));
    }
    if (rc < 0)
        log_error("recover.take_over_kill_failed", "node=%s err=%s", log_q(instance),
                  log_q(why[0] ? why : strerror(-rc)));
    else
        log_warn("recover.take_over", "node=%s interrupted=%zu processes_killed=%d",
                 log_q(instance), n, killed);
    return rc;
}

static const char *
default_state_dir(char *buf, size_t len)
{
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");

    if (geteuid() == 0)
        return "/var/lib/jobq";
    if (xdg != NULL && xdg[0] == '/')
        snprintf(buf, len, "%s/jobq", xdg);
    else if (home != NULL && home[0] == '/')
        snprintf(buf, len, "%s/.local/state/jobq", home);
    else
        return "/var/lib/jobq";
    return buf;
}

/* mkdir -p with mode for the directories it creates. */
static int
mkdirs(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/*
 * Descriptors: one per connection, JOBQ_FD_PER_JOB per running job and
 * JOBQ_FD_RESERVE for the daemon. A soft RLIMIT_NOFILE below that (1024
 * is the usual default) is raised toward the hard limit, as far as the
 * configuration needs and no further: jobs inherit it, and some programs
 * walk every descriptor up to the limit. The server refuses connections
 * that would eat into what jobs need (JOBQ_FD_RESERVE in limits.h).
 */
static void
raise_fd_limit(const struct config *cfg)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)cfg->max_connections + (rlim_t)JOBQ_FD_PER_JOB * cfg->concurrency +
                  JOBQ_FD_RESERVE + (cfg->http.host != NULL ? JOBQ_HTTP_CONNECTIONS_MAX : 0),
           was;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
        return;
    was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want ? rl.rlim_max : want;
    if (rl.rlim_cur > was && setrlimit(RLIMIT_NOFILE, &rl) < 0)
        rl.rlim_cur = was;
    if (rl.rlim_cur < want)
        log_warn("jobqd.fd_limit",
                 "soft=%llu hard=%llu wanted=%llu max_connections=%d concurrency=%d "
                 "hint=%s",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
                 (unsigned long long)want, cfg->max_connections, cfg->concurrency,
                 log_q("raise the hard RLIMIT_NOFILE (LimitNOFILE=) or lower max-connections; "
                       "connections past the limit are refused"));
    else
        log_info("jobqd.fd_limit", "soft=%llu was=%llu", (unsigned long long)rl.rlim_cur,
                 (unsigned long long)was);
}

/* Writes our pid into the lock file: who holds the lock, for people and
 * for the next jobqd (holder_alive). Again after detaching. */
static void
lock_note_pid(int fd)
{
    char pid[32];

    snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) == 0)
        (void)!pwrite(fd, pid, strlen(pid), 0);
}

/* Whether the jobqd whose pid the lock file holds still runs. */
static bool
holder_alive(int fd)
{
    char buf[32] = "", path[64], comm[32] = "";
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
    int cfd;

    if (pid <= 0)
        return false;
    snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
    if ((cfd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return false;
    n = read(cfd, comm, sizeof(comm) - 1);
    close(cfd);
    return n > 0 && strncmp(comm, "jobqd", 5) == 0;
}

/*
 * One jobqd per state directory, for its whole life: the lock is held by
 * the open descriptor and released by the kernel even on kill -9. Not
 * always at once: killed while spawning a job, a jobqd's last reference to
 * the lock can outlive it (no process shows it; the kernel releases it
 * later, seen up to 15 s under load, chaos_crash.sh). A lock held while
 * its recorded jobqd is gone is therefore waited for, within
 * JOBQ_STATE_LOCK_WAIT_MS; one held by a live jobqd is refused at once.
 */
static int
lock_state_dir(const char *dir, int *fd_out)
{
    char path[PATH_MAX];
    int64_t deadline = rt_now_ns() + (int64_t)JOBQ_STATE_LOCK_WAIT_MS * 1000000;
    bool told = false;
    int fd, rc;

    snprintf(path, sizeof(path), "%s/jobqd.lock", dir);
    if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
        return -errno;
    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        if (rc != -EBUSY || holder_alive(fd) || rt_now_ns() >= deadline) {
            close(fd);
            return rc;
        }
        if (!told)
            log_warn("jobqd.lock_wait", "path=%s reason=%s", log_q(path),
                     log_q("held, but the jobqd that took it is gone: waiting for the kernel "
                           "to release it"));
        told = true;
        usleep(JOBQ_STATE_LOCK_POLL_MS * 1000);
    }
    lock_note_pid(fd);
    *fd_out = fd;
    return 0;
}

/* Forks so the shell gets its prompt back once the daemon serves; the
 * parent exits with the child's start-up verdict. Before any thread. */
static int
detach(int *ready_fd)
{
    int p[2];
    pid_t pid;
    char verdict = 1;

    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    if ((pid = fork()) < 0)
        return -errno;
    if (pid > 0) {
        close(p[1]);
        if (read(p[0], &verdict, 1) != 1)
            verdict = EXIT_RUN; /* died before it was ready */
        _exit(verdict);
    }
    close(p[0]);
    setsid();
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        close(null);
    }
    *ready_fd = p[1];
    return 0;
}

static void
ready(struct run *r, char verdict)
{
    if (r->ready_fd >= 0) {
        (void)!write(r->ready_fd, &verdict, 1);
        close(r->ready_fd);
        r->ready_fd = -1;
    }
}

static void
apply_queue_limits(struct daemon *d, const struct config *old, const struct config *cfg)
{
    for (size_t i = 0; i < cfg->queues.n; i++) {
        int rc =
            store_queue_set_limit(d->store, cfg->queues.v[i].name, cfg->queues.v[i].concurrency);
        if (rc < 0)
            log_error("config.queue_failed", "queue=%s err=%s", log_q(cfg->queues.v[i].name),
                      log_q(strerror(-rc)));
    }
    /* A queue dropped from the configuration loses its limit. */
    for (size_t i = 0; old != NULL && i < old->queues.n; i++) {
        bool kept = false;
        for (size_t k = 0; k < cfg->queues.n && !kept; k++)
            kept = strcmp(old->queues.v[i].name, cfg->queues.v[k].name) == 0;
        if (!kept)
            store_queue_set_limit(d->store, old->queues.v[i].name, 0);
    }
}

static void
reload(struct run *r)
{
    struct daemon *d = r->d;
    struct config *cfg = NULL, *old = d->cfg;
    char why[512], live[512], restart[512];
    struct retired *t;
    int rc;

    if ((rc = config_reload(old, &cfg, why, sizeof(why))) < 0) {
        log_error("config.reload_failed", "err=%s", log_q(why));
        return;
    }
    config_diff(old, cfg, live, sizeof(live), restart, sizeof(restart));
    log_set_level(cfg->log_level);
    log_set_format(cfg->log_format);
    if ((old->log_file == NULL) != (cfg->log_file == NULL) ||
        (cfg->log_file != NULL && strcmp(old->log_file, cfg->log_file) != 0))
        rc = log_open_file(cfg->log_file);
    else
        rc = log_reopen();
    if (rc < 0)
        log_error("log.reopen_failed", "err=%s", log_q(strerror(-rc)));
    dispatch_set_concurrency(d->dispatch, cfg->concurrency);
    store_set_max_queued(d->store, cfg->max_queued);
    apply_queue_limits(d, old, cfg);
    httpd_reload(d->httpd, cfg); /* the token file: rotated, moved or emptied */
    if ((t = malloc(sizeof(*t))) == NULL) {
        config_free(cfg);
        return;
    }
    t->cfg = old;
    t->next = r->retired;
    r->retired = t;
    d->cfg = cfg;
    log_info("config.reload", "applied=%s needs_restart=%s", log_q(live), log_q(restart));
}

static void
serve(void *arg)
{
    struct run *r = arg;
    struct daemon *d = r->d;
    struct signalfd_siginfo si;
    int64_t grace;

    coro_spawn(d->rt, "dispatch", dispatch_main, d->dispatch);
    coro_spawn(d->rt, "accept", server_main, d->server);
    httpd_start(d->httpd);
    notify_start(d->notify, d->rt, notify_daemon_status, d, 0);
    log_info("jobqd.ready", "version=%s socket=%s state_dir=%s threads=%d concurrency=%d pid=%ld",
             JOBQ_VERSION, log_q(server_path(d->server)), log_q(d->cfg->state_dir),
             rt_threads(d->rt), d->cfg->concurrency, (long)getpid());
    ready(r, 0);
    if (d->notify != NULL) {
        char status[JOBQ_NOTIFY_STATUS_MAX_BYTES] = "";
        notify_daemon_status(d, status, sizeof(status));
        notify_ready(d->notify, status);
    }
    for (;;) {
        if (coro_wait_fd(r->sigfd, CORO_READ, NULL, RT_FOREVER) < 0)
            continue;
        if (read(r->sigfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
            continue;
        if (si.ssi_signo == SIGHUP) {
            notify_reloading(d->notify);
            reload(r);
            notify_ready(d->notify, NULL);
            notify_changed(d->notify); /* a fresh STATUS= after READY */
            continue;
        }
        if (si.ssi_signo == SIGCHLD) {
            /* An orphan a job left behind (we are their subreaper) exited
             * while its job still runs; jobs' own leaders are waited for
             * through their pidfds. */
            exec_children_reap(d->exec.children);
            continue;
        }
        break;
    }
    /* After a failed sync nothing more can be recorded: the jobs stop now
     * and run again after the restart. */
    grace = atomic_load(&d->store_failed) ? 0 : d->cfg->shutdown_grace_ms;
    log_info("jobqd.drain", "signal=%s running=%d grace_ms=%" PRId64,
             sigabbrev_np((int)si.ssi_signo) ? sigabbrev_np((int)si.ssi_signo) : "?",
             dispatch_running(d->dispatch), grace);
    atomic_store(&d->draining, true);
    if (d->notify != NULL) {
        char status[JOBQ_NOTIFY_STATUS_MAX_BYTES];
        snprintf(status, sizeof(status), "draining: %d running, grace %" PRId64 " ms",
                 dispatch_running(d->dispatch), grace);
        notify_stopping(d->notify, status);
    }
    server_stop(d->server);
    events_notify_all(d->events); /* held waits answer shutting_down */
    dispatch_stop(d->dispatch, grace);
    server_close_all(d->server);
    httpd_stop(d->httpd);
    notify_stop(d->notify);
}

/*
 * The store stopped writing after a failed sync of the database (store.h,
 * docs/STORE.md "Failures"): jobqd stops, loudly. The drain runs as for
 * SIGTERM (the signal is ours), and jobqd exits 1 so that its supervisor
 * restarts it; that start recovers the state from what is on disk.
 * Called on the store's writer thread.
 */
static void
store_fatal(void *arg, int err)
{
    struct daemon *d = arg;

    if (d->pg_store) {
        lease_lost(d); /* the only fatal error of the PostgreSQL store */
        return;
    }
    log_error("store.fatal", "err=%s action=stopping",
              log_q("a sync of the database failed; what is on disk is recovered at the next "
                    "start"));
    log_error("store.fatal_cause", "err=%s", log_q(strerror(-err)));
    atomic_store(&d->store_failed, true);
    kill(getpid(), SIGTERM);
}

/* Kills what a crashed predecessor left running and re-queues its jobs.
 * Before anything serves: a job must never run twice at once. */
static void
on_commit(void *arg, int64_t commit_ns, int64_t requests)
{
    metrics_commit(arg, commit_ns, requests);
}

static int
recover(struct daemon *d)
{
    struct store_running *left = NULL;
    size_t n = 0;
    int64_t retrying = 0, failed = 0;
    int killed = 0, rc;
    char why[256] = "";

    if ((rc = store_recover_list(d->store, &left, &n)) < 0)
        return rc;
    if (n > 0 && (rc = exec_kill_leftovers(&d->exec, left, n, &killed, why, sizeof(why))) < 0) {
        log_error("recover.kill_failed", "err=%s", log_q(why[0] ? why : strerror(-rc)));
        free(left);
        return rc;
    }
    free(left);
    if ((rc = store_recover(d->store, job_now_ms(), &retrying, &failed)) < 0)
        return rc;
    if (n > 0)
        log_warn("recover",
                 "interrupted=%zu processes_killed=%d retrying=%" PRId64 " failed=%" PRId64, n,
                 killed, retrying, failed);
    return 0;
}

int
main(int argc, char **argv)
{
    struct daemon d = {.uid = geteuid()};
    struct run r = {.d = &d, .sigfd = -1, .ready_fd = -1};
    struct config_defaults defs;
    char why[1024], dirbuf[PATH_MAX], node_name[PATH_MAX + 300];
    struct store_opts so = {0};
    struct rt_opts ro = {0};
    sigset_t sigs;
    int lock_fd = -1, status = EXIT_RUN, rc;

    signal(SIGPIPE, SIG_IGN); /* a client that hangs up must not kill us */
    /* JOBQ_TEST_CGROUP_ROOT: a test hook (docs/OPERATIONS.md) pointing the
     * quota lookup at a fake cgroup tree. Not a JOBQD_ key on purpose. */
    defs.threads = rt_cpu_count(getenv("JOBQ_TEST_CGROUP_ROOT"));
    defs.state_dir = default_state_dir(dirbuf, sizeof(dirbuf));
    if (config_new(&defs, &d.cfg) < 0) {
        fprintf(stderr, "jobqd: out of memory\n");
        return EXIT_RUN;
    }
    if (config_load(d.cfg, argc, argv, environ, why, sizeof(why)) < 0) {
        fprintf(stderr, "jobqd: %s\n(see jobqd --help)\n", why);
        status = EXIT_CONFIG;
        goto out;
    }
    if (d.cfg->help) {
        char *usage = NULL;
        if (config_usage(&defs, &usage) == 0)
            printf("%s\nExit status: 0 clean stop, 1 cannot start or run, 2 usage or "
                   "configuration error,\n3 database refused (corrupt or foreign), 4 another "
                   "jobqd uses the state directory.\n",
                   usage);
        free(usage);
        status = 0;
        goto out;
    }
    if (d.cfg->version) {
        printf("jobqd %s (%s)\n", JOBQ_VERSION, JOBQ_GIT_REV);
        status = 0;
        goto out;
    }
    log_set_level(d.cfg->log_level);
    log_set_format(d.cfg->log_format);
    if (d.cfg->log_file != NULL && (rc = log_open_file(d.cfg->log_file)) < 0) {
        fprintf(stderr, "jobqd: cannot open log file %s: %s\n", d.cfg->log_file, strerror(-rc));
        status = EXIT_CONFIG;
        goto out;
    }
    log_route_libevent();
    log_route_sqlite();
    raise_fd_limit(d.cfg);

    /* The state directory: others may traverse it to reach the socket,
     * not list it; the logs below are the daemon's alone. */
    snprintf(d.log_dir, sizeof(d.log_dir), "%s/logs", d.cfg->state_dir);
    snprintf(d.db_path, sizeof(d.db_path), "%s/jobq.db", d.cfg->state_dir);
    if ((rc = mkdirs(d.cfg->state_dir, 0711)) < 0 || (rc = mkdirs(d.log_dir, 0700)) < 0) {
        log_error("jobqd.state_dir", "path=%s err=%s", log_q(d.cfg->state_dir),
                  log_q(strerror(-rc)));
        fprintf(stderr, "jobqd: cannot create %s: %s\n", d.cfg->state_dir, strerror(-rc));
        goto out;
    }
    if ((rc = lock_state_dir(d.cfg->state_dir, &lock_fd)) < 0) {
        fprintf(stderr, "jobqd: %s\n",
                rc == -EBUSY ? "another jobqd is already running on this state directory"
                             : strerror(-rc));
        fprintf(stderr, "jobqd: state directory %s\n", d.cfg->state_dir);
        status = rc == -EBUSY ? EXIT_BUSY : EXIT_RUN;
        goto out;
    }
    if (!d.cfg->foreground && (rc = detach(&r.ready_fd)) < 0) {
        fprintf(stderr, "jobqd: cannot detach: %s\n", strerror(-rc));
        goto out;
    }
    if (!d.cfg->foreground)
        lock_note_pid(lock_fd); /* the serving pid, not the parent's */
    /* After detaching (MAINPID and WATCHDOG_PID are the serving pid's),
     * before any thread (unsetenv). Jobs must not inherit the variables. */
    why[0] = '\0';
    if ((rc = notify_new(environ, &d.notify, why, sizeof(why))) < 0)
        log_warn("notify.disabled", "err=%s", log_q(why[0] ? why : strerror(-rc)));
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");

    /* Signals arrive through a signalfd read by a coroutine; block them
     * before any thread exists so every thread inherits the mask. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if ((r.sigfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
        fprintf(stderr, "jobqd: signalfd: %s\n", strerror(errno));
        goto out;
    }

    d.exec.log_dir = d.log_dir;
    d.exec.log_cap_bytes = d.cfg->log_cap_bytes;
    d.exec.kill_grace_ms = d.cfg->kill_grace_ms;
    d.exec.instance = d.db_path;
    d.exec.as_submitter = d.uid == 0;
    if (d.exec.as_submitter && (rc = exec_idents_new(&d.exec.idents)) < 0) {
        fprintf(stderr, "jobqd: out of memory\n");
        goto out;
    }
    if ((rc = exec_children_new(&d.exec.children)) < 0) {
        fprintf(stderr, "jobqd: cannot become the reaper of jobs' orphans: %s\n", strerror(-rc));
        goto out;
    }
    d.started_ms = job_now_ms();

    d.pg_store = d.cfg->store != NULL;
    /* The database is the daemon's alone (jobs of other users must not
     * read it): create it 0600, and SQLite gives its -wal and -shm files
     * the same mode. An empty file is a new database to SQLite. */
    if (d.cfg->store == NULL) {
        int fd = open(d.db_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0) {
            (void)!fchmod(fd, 0600);
            close(fd);
        }
    }
    if ((rc = metrics_new(&d.metrics)) < 0) {
        fprintf(stderr, "jobqd: cannot start: %s\n", strerror(-rc));
        goto out;
    }
    so.path = d.db_path;
    so.on_expired = on_expired;
    so.on_expired_arg = &d;
    so.max_queued = d.cfg->max_queued;
    so.on_fatal = store_fatal;
    so.on_fatal_arg = &d;
    so.on_commit = on_commit;
    so.on_commit_arg = d.metrics;
    if (d.cfg->store != NULL) {
        /* PostgreSQL (docs/POSTGRES.md). The node's name stays the same
         * across restarts, so a restart recovers its own leftovers; the
         * URL is never logged (it may hold a password). */
        const char *lease = getenv("JOBQ_PG_LEASE_MS");
        char host[256] = "localhost";
        gethostname(host, sizeof(host) - 1);
        snprintf(node_name, sizeof(node_name), "%s:%s", host, d.cfg->state_dir);
        so.path = d.cfg->store;
        so.node_name = node_name;
        so.instance = d.db_path; /* the marker of this node's jobs */
        so.lease_ms = lease != NULL ? atoi(lease) : 0;
        so.on_event = on_store_event;
        so.on_event_arg = &r;
        so.on_reap = on_reap;
        so.on_reap_arg = &r;
    }
    if ((rc = store_new(&so, &d.store, why, sizeof(why))) < 0) {
        const char *where = d.cfg->store != NULL ? "PostgreSQL (store)" : d.db_path;
        log_error("store.open_failed", "path=%s err=%s", log_q(where), log_q(why));
        fprintf(stderr, "jobqd: cannot open the store %s: %s\n", where,
                why[0] ? why : strerror(-rc));
        status = rc == -EINVAL ? EXIT_STORE : EXIT_RUN;
        goto out;
    }
    if ((rc = recover(&d)) < 0) {
        fprintf(stderr, "jobqd: recovery failed: %s\n", strerror(-rc));
        goto out;
    }
    apply_queue_limits(&d, NULL, d.cfg);

    ro.threads = d.cfg->threads;
    ro.log = rt_log;
    if ((rc = rt_new(&ro, &d.rt)) < 0 || (rc = events_new(&d.events)) < 0 ||
        (rc = dispatch_new(&d, &d.dispatch)) < 0) {
        fprintf(stderr, "jobqd: cannot start: %s\n", strerror(-rc));
        goto out;
    }
    atomic_store(&r.events_on, true);
    if ((rc = server_new(&d, &d.server, why, sizeof(why))) < 0) {
        fprintf(stderr, "jobqd: %s\n", why[0] ? why : strerror(-rc));
        status = rc == -EADDRINUSE ? EXIT_BUSY : EXIT_RUN;
        goto out;
    }
    if (d.cfg->http.host != NULL && (rc = httpd_new(&d, &d.httpd, why, sizeof(why))) < 0) {
        log_error("http.listen_failed", "err=%s", log_q(why));
        fprintf(stderr, "jobqd: %s\n", why);
        status = rc == -EINVAL ? EXIT_CONFIG : EXIT_RUN; /* a bad address or token file */
        goto out;
    }
    if ((rc = rt_run(d.rt, "main", serve, &r)) < 0) {
        fprintf(stderr, "jobqd: %s\n", strerror(-rc));
        goto out;
    }
    status = 0;
    if (atomic_load(&d.store_failed)) {
        if (d.cfg->store != NULL)
            fprintf(stderr, "jobqd: stopped: this node's lease in PostgreSQL ran out (cut off "
                            "from the database); start it again\n");
        else
            fprintf(stderr, "jobqd: stopped: a sync of %s failed; start it again to recover\n",
                    d.db_path);
        status = EXIT_RUN;
    }
    log_info("jobqd.stop", "uptime_ms=%" PRId64, job_now_ms() - d.started_ms);
out:
    ready(&r, (char)status);
    httpd_free(d.httpd);
    server_free(d.server);
    if (d.rt != NULL && rt_free(d.rt) != 0 && status == 0)
        log_error("jobqd.leak", "coroutines left at exit");
    /* Before what its callbacks reach: the store's node thread
     * (PostgreSQL) reports other nodes' doings at any moment. */
    atomic_store(&r.events_on, false);
    store_free(d.store);
    dispatch_free(d.dispatch);
    metrics_free(d.metrics);
    events_free(d.events);
    exec_children_free(d.exec.children);
    exec_idents_free(d.exec.idents);
    notify_free(d.notify);
    if (r.sigfd >= 0)
        close(r.sigfd);
    if (lock_fd >= 0)
        close(lock_fd);
    while (r.retired != NULL) {
        struct retired *t = r.retired;
        r.retired = t->next;
        config_free(t->cfg);
        free(t);
    }
    config_free(d.cfg);
    return status;
}
