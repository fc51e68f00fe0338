/*
 * notify — jobqd's side of the sd_notify protocol, without libsystemd: a
 * datagram socket aimed at $NOTIFY_SOCKET, one status coroutine that turns
 * bursts of "something changed" into at most one STATUS= per interval and
 * sleeps on a channel otherwise (an idle daemon makes no wake-ups), and,
 * when the manager asked for a watchdog, one ticker coroutine per scheduler
 * thread: WATCHDOG=1 goes out only while every thread still runs its
 * coroutines, so a wedged scheduler gets the daemon restarted. Owns the
 * socket, the coroutines' channel, context and wait group.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "jobq/dispatch.h"
#include "jobq/limits.h"
#include "jobq/log.h"
#include "jobq/notify.h"
#include "jobq/runtime.h"
#include "jobq/store.h"

/* Pause between two tries of a message the manager's full queue refused. */
#define RETRY_NS (10 * 1000000LL)

struct ticker {
    struct notify *n;
    int thread;
};

struct notify {
    int fd;
    struct sockaddr_un addr;
    socklen_t addrlen;
    int64_t watchdog_usec; /* 0: no watchdog */

    /* Set by notify_start. */
    struct rt *rt;
    struct chan *kick;
    struct ctx *ctx;
    struct wg *done;
    notify_status_fn status;
    void *status_arg;
    int64_t min_interval_ns;
    struct ticker *tickers;
    _Atomic int64_t *ticks; /* per thread: rt_now_ns of its last tick */
    int nthreads;
    bool started, stopped;
    char last[JOBQ_NOTIFY_STATUS_MAX_BYTES]; /* status coroutine only */
};

static const char *
env_get(char *const *envp, const char *name)
{
    size_t n = strlen(name);

    for (size_t i = 0; envp != NULL && envp[i] != NULL; i++)
        if (strncmp(envp[i], name, n) == 0 && envp[i][n] == '=')
            return envp[i] + n + 1;
    return NULL;
}

/* The socket address: "/path" or "@abstract" (systemd's spelling of a
 * name whose first byte is NUL). */
static int
parse_address(const char *s, struct sockaddr_un *sa, socklen_t *len, char *why, size_t whylen)
{
    size_t n = strlen(s);

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (s[0] != '/' && s[0] != '@') {
        snprintf(why, whylen,
                 "NOTIFY_SOCKET=%s: not an absolute path or an @abstract name; ignoring it", s);
        return -EINVAL;
    }
    if (n < 2 || n > sizeof(sa->sun_path) - (s[0] == '/')) {
        snprintf(why, whylen, "NOTIFY_SOCKET=%s: empty or longer than %zu bytes; ignoring it", s,
                 sizeof(sa->sun_path) - 1);
        return -EINVAL;
    }
    memcpy(sa->sun_path, s, n);
    if (s[0] == '@')
        sa->sun_path[0] = '\0';
    /* Abstract names are length-counted, not NUL-terminated: the address
     * length must not include anything past the name. */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (s[0] == '/'));
    return 0;
}

int
notify_new(char *const *envp, struct notify **out, char *why, size_t whylen)
{
    const char *sock = env_get(envp, "NOTIFY_SOCKET");
    const char *usec = env_get(envp, "WATCHDOG_USEC");
    const char *pid = env_get(envp, "WATCHDOG_PID");
    struct notify *n;
    int rc;

    *out = NULL;
    if (sock == NULL || sock[0] == '\0')
        return 0;
    if ((n = calloc(1, sizeof(*n))) == NULL)
        return -ENOMEM;
    n->fd = -1;
    if ((rc = parse_address(sock, &n->addr, &n->addrlen, why, whylen)) < 0)
        goto fail;
    if ((n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) {
        rc = -errno;
        snprintf(why, whylen, "NOTIFY_SOCKET: socket: %s", strerror(-rc));
        goto fail;
    }
    /* Made here, not in notify_start: notify_changed may run on any thread
     * as soon as the daemon has the notifier. */
    if ((rc = chan_new(0, 1, &n->kick)) < 0 || (rc = ctx_new(NULL, &n->ctx)) < 0 ||
        (rc = wg_new(&n->done)) < 0)
        goto fail;
    /* The watchdog is for the pid the manager watches: a variable that
     * leaked into a child of that pid is not meant for the child. */
    if (usec != NULL && (pid == NULL || atoll(pid) == (long long)getpid())) {
        char *end;
        long long v = strtoll(usec, &end, 10);
        if (*end == '\0' && v > 0)
            n->watchdog_usec = v;
    }
    *out = n;
    return 0;
fail:
    notify_free(n);
    return rc;
}

void
notify_free(struct notify *n)
{
    if (n == NULL)
        return;
    if (n->fd >= 0)
        close(n->fd);
    chan_free(n->kick);
    ctx_free(n->ctx);
    wg_free(n->done);
    free(n->tickers);
    free(n->ticks);
    free(n);
}

int64_t
notify_watchdog_usec(const struct notify *n)
{
    return n ? n->watchdog_usec : 0;
}

/* One datagram; tries again `retries` times while the manager's queue is
 * full, pausing the coroutine (or the thread, outside the runtime). */
static int
send_msg(struct notify *n, const char *msg, int retries)
{
    if (n == NULL)
        return 0;
    for (int i = 0;; i++) {
        if (sendto(n->fd, msg, strlen(msg), MSG_DONTWAIT | MSG_NOSIGNAL,
                   (const struct sockaddr *)&n->addr, n->addrlen) >= 0)
            return 0;
        if (errno == EINTR)
            continue;
        if ((errno != EAGAIN && errno != ENOBUFS) || i >= retries)
            return errno == ENOBUFS ? -EAGAIN : -errno;
        if (coro_self() != NULL) {
            coro_sleep(NULL, RETRY_NS);
        } else {
            struct timespec ts = {0, RETRY_NS};
            nanosleep(&ts, NULL);
        }
    }
}

int
notify_send(struct notify *n, const char *msg)
{
    return send_msg(n, msg, JOBQ_NOTIFY_RETRIES);
}

int
notify_ready(struct notify *n, const char *status)
{
    char msg[JOBQ_NOTIFY_STATUS_MAX_BYTES + 64];

    if (n == NULL)
        return 0;
    snprintf(msg, sizeof(msg), "READY=1\nMAINPID=%ld%s%s", (long)getpid(),
             status && status[0] ? "\nSTATUS=" : "", status && status[0] ? status : "");
    return notify_send(n, msg);
}

int
notify_reloading(struct notify *n)
{
    char msg[64];

    if (n == NULL)
        return 0;
    /* CLOCK_MONOTONIC in us: systemd 253's Type=notify-reload matches the
     * reload it asked for by this stamp; older managers ignore it. */
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%" PRId64, rt_now_ns() / 1000);
    return notify_send(n, msg);
}

int
notify_stopping(struct notify *n, const char *status)
{
    char msg[JOBQ_NOTIFY_STATUS_MAX_BYTES + 32];

    if (n == NULL)
        return 0;
    snprintf(msg, sizeof(msg), "STOPPING=1%s%s", status && status[0] ? "\nSTATUS=" : "",
             status && status[0] ? status : "");
    return notify_send(n, msg);
}

/* ---- coroutines ------------------------------------------------------- */

static void
status_main(void *arg)
{
    struct notify *n = arg;
    char buf[JOBQ_NOTIFY_STATUS_MAX_BYTES], msg[JOBQ_NOTIFY_STATUS_MAX_BYTES + 8];

    /* Kicks that land while this sleeps leave one pending (the channel
     * holds one): a burst becomes one update now and one after the pause. */
    while (chan_recv(n->kick, NULL, n->ctx, RT_FOREVER) == 0) {
        buf[0] = '\0';
        if (n->status(n->status_arg, buf, sizeof(buf)) == 0 && strcmp(buf, n->last) != 0) {
            snprintf(msg, sizeof(msg), "STATUS=%s", buf);
            if (send_msg(n, msg, 0) == 0)
                memcpy(n->last, buf, sizeof(buf));
        }
        if (coro_sleep(n->ctx, n->min_interval_ns) != 0)
            break;
    }
    wg_done(n->done);
}

/* The first stale thread, or -1 if every thread ticked within the
 * watchdog interval. */
static int
stale_thread(struct notify *n, int64_t now, int64_t *age_ns)
{
    for (int i = 0; i < n->nthreads; i++) {
        int64_t age = now - atomic_load(&n->ticks[i]);
        if (age > n->watchdog_usec * 1000) {
            *age_ns = age;
            return i;
        }
    }
    return -1;
}

static void
watchdog_main(void *arg)
{
    struct ticker *t = arg;
    struct notify *n = t->n;
    int64_t period = n->watchdog_usec * 1000 / 2, age = 0;
    bool stalled = false;

    while (coro_sleep(n->ctx, period) == 0) {
        int64_t now = rt_now_ns();
        int bad;

        atomic_store(&n->ticks[t->thread], now);
        if (t->thread != 0)
            continue;
        if ((bad = stale_thread(n, now, &age)) < 0) {
            send_msg(n, "WATCHDOG=1", 0);
            if (stalled)
                log_info("notify.watchdog_resumed", "");
            stalled = false;
        } else if (!stalled) {
            /* No ping: the manager restarts us when the interval ends. */
            log_error("notify.watchdog_stalled", "thread=%d since_ms=%" PRId64, bad, age / 1000000);
            stalled = true;
        }
    }
    wg_done(n->done);
}

int
notify_start(struct notify *n, struct rt *rt, notify_status_fn status, void *arg,
             int64_t min_interval_ns)
{
    int rc;

    if (n == NULL || n->started)
        return 0;
    n->rt = rt;
    n->status = status;
    n->status_arg = arg;
    n->min_interval_ns =
        min_interval_ns > 0 ? min_interval_ns : JOBQ_NOTIFY_STATUS_MIN_MS * 1000000LL;
    n->nthreads = rt_threads(rt);
    if (n->watchdog_usec > 0) {
        if ((n->tickers = calloc((size_t)n->nthreads, sizeof(*n->tickers))) == NULL ||
            (n->ticks = calloc((size_t)n->nthreads, sizeof(*n->ticks))) == NULL)
            return -ENOMEM;
        for (int i = 0; i < n->nthreads; i++) {
            atomic_init(&n->ticks[i], rt_now_ns());
            n->tickers[i] = (struct ticker){n, i};
        }
    }
    n->started = true;
    if (status != NULL) {
        wg_add(n->done, 1);
        if ((rc = coro_spawn(rt, "notify-status", status_main, n)) < 0) {
            wg_done(n->done);
            return rc;
        }
    }
    for (int i = 0; n->watchdog_usec > 0 && i < n->nthreads; i++) {
        wg_add(n->done, 1);
        if ((rc = coro_spawn_on(rt, i, "notify-watchdog", watchdog_main, &n->tickers[i])) < 0) {
            wg_done(n->done);
            return rc;
        }
    }
    return 0;
}

void
notify_changed(struct notify *n)
{
    if (n != NULL)
        chan_send(n->kick, NULL, NULL, 0); /* full: an update is already due */
}

void
notify_stop(struct notify *n)
{
    if (n == NULL || !n->started || n->stopped)
        return;
    n->stopped = true;
    ctx_cancel(n->ctx);
    wg_wait(n->done, NULL, RT_FOREVER);
}

/* ---- the daemon's status line ----------------------------------------- */

int
notify_daemon_status(void *arg, char *buf, size_t len)
{
    struct daemon *d = arg;
    struct store_stats ss;
    struct store_who admin = {.uid = d->uid, .admin = true};
    int64_t done;
    size_t o;
    int rc;

    if ((rc = store_stats(d->store, admin, &ss)) < 0)
        return rc;
    done = ss.count[JOB_SUCCEEDED] + ss.count[JOB_FAILED] + ss.count[JOB_CANCELED];
    o = (size_t)snprintf(buf, len, "%srunning %d, queued %" PRId64 ", %" PRId64 " done",
                         atomic_load(&d->draining) ? "draining: " : "",
                         dispatch_running(d->dispatch), ss.count[JOB_QUEUED], done);
    /* The rarer states only when there are some: the line stays short. */
    const struct {
        enum job_state s;
        const char *name;
    } extra[] = {{JOB_SCHEDULED, "scheduled"},
                 {JOB_RETRYING, "retrying"},
                 {JOB_FAILED, "failed"},
                 {JOB_CANCELED, "canceled"}};
    bool first = true;
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]) && o < len; i++) {
        if (ss.count[extra[i].s] == 0)
            continue;
        o += (size_t)snprintf(buf + o, len - o, "%s%" PRId64 " %s", first ? "; " : ", ",
                              ss.count[extra[i].s], extra[i].name);
        first = false;
    }
    store_stats_free(&ss);
    return 0;
}
