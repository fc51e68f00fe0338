/*
 * server — connections on the Unix socket.
 *
 * Each connection is a reader coroutine that frames lines and hands each
 * to a request coroutine of its own (at most JOBQ_CONN_INFLIGHT_MAX at
 * once: a full pool parks the reader, which is the backpressure), so a
 * client that pipelines submits gets them committed together and a slow
 * `wait` does not hold back the requests after it. Replies are written
 * whole under a per-connection mutex.
 *
 * Limits: a line over JOBQ_REQUEST_MAX_BYTES, or a partial line that
 * stalls past --request-timeout, gets an error line and the connection is
 * closed; an idle connection (no partial line) may stay forever. Past the
 * connection cap a new connection gets one error line and is closed. None
 * of this ever stops the server for others.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon.h"
#include "jobq/limits.h"
#include "jobq/log.h"
#include "jobq/proto.h"
#include "jobq/rpc.h"
#include "jobq/runtime.h"
#include "jobq/server.h"

/* Read buffer of a connection with data pending; it grows up to the
 * message limit and is freed whenever the connection waits with no partial
 * line, so an idle connection costs no buffer (thousands of idle clients
 * are normal: 10k idle connections held 40 MiB of buffers before). */
#define CONN_BUF_BYTES (4 * 1024)
/* When a burst of this many connections has drained away, hand the freed
 * heap and the pooled coroutine stacks beyond TRIM_KEEP_STACKS back to the
 * system: "memory returns to baseline". */
#define TRIM_AFTER_CONNS 64
#define TRIM_KEEP_STACKS 64
/* After a client's EOF, how often to look whether it closed entirely
 * (then its held requests are abandoned) or only its writing half. */
#define HUP_CHECK_NS (500 * 1000000LL)
/* Accept errors such as EMFILE: pause instead of spinning. */
#define ACCEPT_PAUSE_NS (50 * 1000000LL)
/* systemd's first passed fd (sd_listen_fds(3)). */
#define LISTEN_FDS_START 3
/* Buckets of the connections-per-uid table: a host has a few uids that
 * connect, so chains stay short. */
#define UID_BUCKETS 64

struct conn {
    struct server *s;
    int fd;
    struct rpc_peer peer;
    struct ctx *ctx;
    struct coro_pool *reqs;
    struct coro_mutex *wlock;
    atomic_bool broken; /* a write failed: nobody reads replies any more */
    char *buf;
    size_t len, cap;
};

/* Open connections of one uid that --max-connections-per-uid counts. */
struct uid_conns {
    uid_t uid;
    int n;
    struct uid_conns *next;
};

struct server {
    struct daemon *d;
    int fd;
    long fd_limit; /* RLIMIT_NOFILE's soft limit at start */
    pthread_mutex_t uid_lock;
    struct uid_conns *uids[UID_BUCKETS]; /* non-admin uids with connections */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    bool created;           /* we made the socket file (and remove it) */
    struct ctx *accept_ctx; /* ends the accept loop */
    struct ctx *ctx;        /* parent of every connection's context */
    struct wg *conns;
    struct wg *loop_done;
    atomic_int nconns;
    atomic_int peak; /* most connections since the last trim */
    atomic_bool stopping;
};

/* ---- the listening socket --------------------------------------------- */

/* A listening AF_UNIX stream socket? */
static bool
unix_listener(int fd)
{
    int type = 0, acc = 0;
    socklen_t len = sizeof(type), alen = sizeof(acc);
    struct sockaddr_un sa;
    socklen_t salen = sizeof(sa);

    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM &&
           getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &alen) == 0 && acc &&
           getsockname(fd, (struct sockaddr *)&sa, &salen) == 0 && sa.sun_family == AF_UNIX;
}

/* Is entry i of the colon-separated LISTEN_FDNAMES list equal to name? */
static bool
fd_named(const char *names, int i, const char *name)
{
    size_t n = strlen(name);

    for (; names != NULL && i > 0; i--)
        if ((names = strchr(names, ':')) != NULL)
            names++;
    return names != NULL && strncmp(names, name, n) == 0 && (names[n] == ':' || names[n] == '\0');
}

/*
 * systemd socket activation (sd_listen_fds(3)): LISTEN_FDS descriptors
 * from 3 on, ours if LISTEN_PID is our pid, named by LISTEN_FDNAMES
 * (FileDescriptorName=). The job socket is the one named "jobq", else the
 * first listening Unix stream socket; a unit that passes one socket needs
 * no name. Every passed descriptor becomes close-on-exec (jobs must not
 * accept our clients or hold other sockets open) and the variables are
 * unset, so jobs do not inherit them.
 */
static bool
inherited_socket(int *fd)
{
    const char *pid = getenv("LISTEN_PID"), *nfds = getenv("LISTEN_FDS");
    const char *names = getenv("LISTEN_FDNAMES");
    int n = nfds != NULL ? atoi(nfds) : 0, named = -1, first = -1;

    if (pid == NULL || atol(pid) != (long)getpid())
        n = 0;
    for (int i = 0; i < n; i++) {
        int f = LISTEN_FDS_START + i;
        fcntl(f, F_SETFD, FD_CLOEXEC);
        if (!unix_listener(f))
            continue;
        if (named < 0 && fd_named(names, i, "jobq"))
            named = f;
        if (first < 0)
            first = f;
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    *fd = named >= 0 ? named : first;
    if (*fd < 0)
        return false;
    fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) | O_NONBLOCK);
    return true;
}

/* Is a daemon listening at path? 1 yes, 0 no (stale), <0 cannot tell. */
static int
live_socket(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), rc;

    if (fd < 0)
        return -errno;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    rc = rc == 0 ? 1 : (errno == ECONNREFUSED ? 0 : -errno);
    close(fd);
    return rc;
}

static int
listen_path(struct server *s, const char *path, mode_t mode, char *why, size_t whylen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    int fd = -1, rc;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(why, whylen, "socket path %s is longer than %zu bytes", path,
                 sizeof(sa.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(why, whylen, "%s exists and is not a socket; refusing to replace it", path);
            return -EEXIST;
        }
        if ((rc = live_socket(path)) == 1) {
            snprintf(why, whylen, "another jobqd is listening on %s", path);
            return -EADDRINUSE;
        }
        if (rc < 0) {
            snprintf(why, whylen, "cannot tell whether %s is in use: %s", path, strerror(-rc));
            return rc;
        }
        unlink(path); /* stale: its daemon is gone */
    }
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        goto fail;
    /* Mode before listen(): nobody can connect until it is right. */
    if (chmod(path, mode) < 0 || listen(fd, SOMAXCONN) < 0) {
        rc = -errno;
        unlink(path);
        close(fd);
        snprintf(why, whylen, "cannot listen on %s: %s", path, strerror(-rc));
        return rc;
    }
    s->fd = fd;
    s->created = true;
    snprintf(s->path, sizeof(s->path), "%s", path);
    return 0;
fail:
    rc = -errno;
    if (fd >= 0)
        close(fd);
    snprintf(why, whylen, "cannot listen on %s: %s", path, strerror(-rc));
    return rc;
}

int
server_new(struct daemon *d, struct server **out, char *why, size_t whylen)
{
    struct server *s = calloc(1, sizeof(*s));
    int rc;

    if (s == NULL)
        return -ENOMEM;
    s->d = d;
    s->fd = -1;
    pthread_mutex_init(&s->uid_lock, NULL);
    {
        struct rlimit rl;
        s->fd_limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)INT32_MAX
                          ? (long)rl.rlim_cur
                          : INT32_MAX;
    }
    if ((rc = ctx_new(NULL, &s->ctx)) < 0 || (rc = ctx_new(NULL, &s->accept_ctx)) < 0 ||
        (rc = wg_new(&s->conns)) < 0 || (rc = wg_new(&s->loop_done)) < 0)
        goto fail;
    if (inherited_socket(&s->fd)) {
        struct sockaddr_un sa;
        socklen_t len = sizeof(sa);
        if (getsockname(s->fd, (struct sockaddr *)&sa, &len) == 0 && len > sizeof(sa_family_t))
            snprintf(s->path, sizeof(s->path), "%s", sa.sun_path);
    } else if ((rc = listen_path(s, d->cfg->socket, (mode_t)d->cfg->socket_mode, why, whylen)) <
               0) {
        goto fail;
    }
    wg_add(s->loop_done, 1);
    *out = s;
    return 0;
fail:
    server_free(s);
    return rc;
}

void
server_free(struct server *s)
{
    if (s == NULL)
        return;
    if (s->fd >= 0)
        close(s->fd);
    if (s->created)
        unlink(s->path);
    ctx_free(s->ctx);
    ctx_free(s->accept_ctx);
    wg_free(s->conns);
    wg_free(s->loop_done);
    for (int i = 0; i < UID_BUCKETS; i++) {
        while (s->uids[i] != NULL) {
            struct uid_conns *u = s->uids[i];
            s->uids[i] = u->next;
            free(u);
        }
    }
    pthread_mutex_destroy(&s->uid_lock);
    free(s);
}

int
server_connections(struct server *s)
{
    return s ? atomic_load(&s->nconns) : 0;
}

const char *
server_path(struct server *s)
{
    return s->path;
}

/* ---- writing ---------------------------------------------------------- */

/* Writes all of buf; on any failure marks the connection broken and shuts
 * it down, which also wakes its reader. */
static void
conn_write(struct conn *c, const char *buf, size_t len)
{
    size_t off = 0;

    coro_mutex_lock(c->wlock, NULL);
    while (off < len && !atomic_load(&c->broken)) {
        ssize_t n = send(c->fd, buf + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        /* No context: replies must still go out while the daemon drains.
         * A reply the client does not read within --request-timeout (a
         * message stalled mid-line, the other way) closes the connection:
         * a client that pipelines and never reads must not pin the
         * daemon's memory or its requests' coroutines. */
        if (n < 0 && errno == EAGAIN) {
            int64_t ms = c->s->d->cfg->request_timeout_ms;
            int rc = coro_wait_fd(c->fd, CORO_WRITE, NULL, ms * 1000000);
            if (rc > 0)
                continue;
            if (rc == RT_ETIMEDOUT)
                log_warn("conn.write_timeout", "uid=%u pid=%d timeout_ms=%" PRId64,
                         (unsigned)c->peer.uid, (int)c->peer.pid, ms);
        }
        atomic_store(&c->broken, true);
        shutdown(c->fd, SHUT_RDWR);
    }
    coro_mutex_unlock(c->wlock);
}

static void
conn_error(struct conn *c, int code, const char *message, const char *key, int64_t value)
{
    char *line = rpc_error_line(code, message, key, value);
    if (line != NULL) {
        conn_write(c, line, strlen(line));
        free(line);
    }
}

/* ---- requests --------------------------------------------------------- */

struct req {
    struct conn *c;
    size_t len;
    char line[];
};

static void
req_main(void *arg)
{
    struct req *r = arg;
    struct conn *c = r->c;
    bool oom = false;
    char *reply = rpc_handle(c->s->d, &c->peer, r->line, r->len, &oom);

    if (oom)
        log_error("request.oom", "uid=%u len=%zu", (unsigned)c->peer.uid, r->len);
    if (reply != NULL) {
        conn_write(c, reply, strlen(reply));
        free(reply);
    }
    free(r);
}

/* Hands one line to a request coroutine; parks while the connection has
 * JOBQ_CONN_INFLIGHT_MAX in flight. */
static int
dispatch_line(struct conn *c, const char *line, size_t len)
{
    struct req *r;
    int rc;

    if (len > 0 && line[len - 1] == '\r')
        len--; /* CRLF clients */
    if (strspn(line, " \t") >= len)
        return 0; /* blank lines are ignored */
    if ((r = malloc(sizeof(*r) + len + 1)) == NULL)
        return -ENOMEM;
    r->c = c;
    r->len = len;
    memcpy(r->line, line, len);
    r->line[len] = '\0';
    if ((rc = coro_pool_spawn(c->reqs, c->ctx, 0, "request", req_main, r)) < 0)
        free(r);
    return rc;
}

/* ---- one connection --------------------------------------------------- */

/* Processes every complete line in the buffer; returns 0, or -E2BIG when
 * an unterminated line is over the limit. */
static int
frame(struct conn *c)
{
    size_t start = 0;
    char *nl;

    while ((nl = memchr(c->buf + start, '\n', c->len - start)) != NULL) {
        size_t len = (size_t)(nl - (c->buf + start));
        if (len > JOBQ_REQUEST_MAX_BYTES)
            return -E2BIG;
        if (dispatch_line(c, c->buf + start, len) < 0)
            return -ECANCELED;
        start += len + 1;
    }
    memmove(c->buf, c->buf + start, c->len - start);
    c->len -= start;
    return c->len > JOBQ_REQUEST_MAX_BYTES ? -E2BIG : 0;
}

static int
grow(struct conn *c)
{
    size_t cap;
    char *b;
    if (c->buf == NULL) {
        if ((c->buf = malloc(CONN_BUF_BYTES)) == NULL)
            return -ENOMEM;
        c->cap = CONN_BUF_BYTES;
        return 0;
    }
    if (c->len < c->cap)
        return 0;
    cap = c->cap * 2;
    if (cap > JOBQ_REQUEST_MAX_BYTES + 2)
        cap = JOBQ_REQUEST_MAX_BYTES + 2; /* one byte past the limit tells "too large" */
    if (cap <= c->cap)
        return -E2BIG;
    if ((b = realloc(c->buf, cap)) == NULL)
        return -ENOMEM;
    c->buf = b;
    c->cap = cap;
    return 0;
}

/* After the client's EOF: answer what is in flight. A client that only
 * shut its writing half still reads; one that closed entirely gets its
 * held requests (a `wait`) abandoned. */
static void
finish_inflight(struct conn *c)
{
    while (coro_pool_drain(c->reqs, NULL, HUP_CHECK_NS) != 0) {
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        if (atomic_load(&c->broken) || (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR))))
            ctx_cancel(c->ctx);
    }
}

/* ---- connections per uid --------------------------------------------- */

/* Counts a connection of uid unless it already has cap: 0, -EUSERS over
 * the cap, -ENOMEM. The lock is held for a few loads and stores, never
 * across a park. */
static int
uid_take(struct server *s, uid_t uid, int cap)
{
    struct uid_conns **b = &s->uids[uid % UID_BUCKETS], *u;
    int rc = 0;

    pthread_mutex_lock(&s->uid_lock);
    for (u = *b; u != NULL && u->uid != uid; u = u->next)
        ;
    if (u == NULL && (u = calloc(1, sizeof(*u))) != NULL) {
        u->uid = uid;
        u->next = *b;
        *b = u;
    }
    if (u == NULL)
        rc = -ENOMEM;
    else if (u->n >= cap)
        rc = -EUSERS;
    else
        u->n++;
    pthread_mutex_unlock(&s->uid_lock);
    return rc;
}

static void
uid_drop(struct server *s, uid_t uid)
{
    struct uid_conns **p = &s->uids[uid % UID_BUCKETS], *u;

    pthread_mutex_lock(&s->uid_lock);
    for (; (u = *p) != NULL; p = &u->next) {
        if (u->uid != uid)
            continue;
        if (--u->n <= 0) { /* a uid that left costs nothing */
            *p = u->next;
            free(u);
        }
        break;
    }
    pthread_mutex_unlock(&s->uid_lock);
}

static int
trim_memory(void *arg)
{
    struct server *s = arg;

    rt_trim(s->d->rt, TRIM_KEEP_STACKS);
    malloc_trim(0);
    return 0;
}

static void
conn_main(void *arg)
{
    struct conn *c = arg;
    struct server *s = c->s;
    int64_t partial_since = 0, timeout_ns = s->d->cfg->request_timeout_ms * 1000000;
    int rc = 0;

    for (;;) {
        ssize_t n;
        if ((rc = grow(c)) < 0)
            break;
        n = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (n > 0) {
            c->len += (size_t)n;
            if ((rc = frame(c)) < 0)
                break;
            partial_since = c->len > 0 ? (partial_since ? partial_since : rt_now_ns()) : 0;
            continue;
        }
        if (n == 0) {
            /* EOF after a last message without its line feed (printf ... |
             * nc -U): the client will send no more, so the line is whole.
             * grow() leaves room for the byte: c->len < c->cap here. */
            rc = 0;
            if (c->len > 0) {
                c->buf[c->len++] = '\n';
                rc = frame(c);
            }
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN) {
            rc = -errno;
            break;
        }
        if (c->len == 0) {
            free(c->buf); /* idle: hold no buffer while waiting */
            c->buf = NULL;
            c->cap = 0;
        }
        int64_t wait = RT_FOREVER;
        if (partial_since != 0) {
            wait = partial_since + timeout_ns - rt_now_ns();
            if (wait <= 0) {
                rc = -ETIMEDOUT;
                break;
            }
        }
        rc = coro_wait_fd(c->fd, CORO_READ, c->ctx, wait);
        if (rc == RT_ETIMEDOUT) {
            rc = -ETIMEDOUT;
            break;
        }
        if (rc < 0)
            break;
    }
    if (rc == -E2BIG) {
        log_warn("conn.too_large", "uid=%u pid=%d", (unsigned)c->peer.uid, (int)c->peer.pid);
        conn_error(c, PROTO_TOO_LARGE, "message too large; closing the connection", "limit",
                   JOBQ_REQUEST_MAX_BYTES);
    } else if (rc == -ETIMEDOUT) {
        log_warn("conn.request_timeout", "uid=%u pid=%d", (unsigned)c->peer.uid, (int)c->peer.pid);
        conn_error(c, PROTO_REQUEST_TIMEOUT, "message stalled mid-line; closing the connection",
                   "timeout_ms", s->d->cfg->request_timeout_ms);
    }
    if (rc == -E2BIG || rc == -ETIMEDOUT)
        ctx_cancel(c->ctx); /* its pending requests die with it */
    finish_inflight(c);

    close(c->fd);
    ctx_free(c->ctx);
    coro_pool_free(c->reqs);
    coro_mutex_free(c->wlock);
    free(c->buf);
    if (!c->peer.admin)
        uid_drop(s, c->peer.uid);
    free(c);
    if (atomic_fetch_sub(&s->nconns, 1) == 1 && atomic_exchange(&s->peak, 0) >= TRIM_AFTER_CONNS)
        rt_blocking(NULL, trim_memory, s);
    wg_done(s->conns);
}

/* Past a cap: one error line, written without blocking, then close. */
static void
refuse(int fd, const char *message, int limit)
{
    char *line = rpc_error_line(PROTO_TOO_MANY_CONNECTIONS, message, "limit", limit);
    if (line != NULL) {
        (void)!send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
        free(line);
    }
    close(fd);
}

static void
accept_one(struct server *s, int fd)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    struct conn *c;
    struct daemon *d = s->d;
    long headroom = JOBQ_FD_RESERVE + (long)JOBQ_FD_PER_JOB * d->cfg->concurrency;
    int cap = d->cfg->max_connections_per_uid, rc;
    bool admin;
    char msg[160];

    if (atomic_load(&s->nconns) >= d->cfg->max_connections) {
        log_warn("conn.refused", "reason=cap limit=%d", d->cfg->max_connections);
        refuse(fd, "too many connections; try again later", d->cfg->max_connections);
        return;
    }
    /* Descriptors are numbered lowest-free first, so fd tells how many are
     * open: the last ones stay for jobs and the store (JOBQ_FD_RESERVE). */
    if (headroom > s->fd_limit / 2)
        headroom = s->fd_limit / 2;
    if (fd >= s->fd_limit - headroom) {
        log_warn("conn.refused", "reason=fds fd=%d fd_limit=%ld", fd, s->fd_limit);
        refuse(fd, "too many connections for jobqd's file descriptor limit; try again later",
               (int)(s->fd_limit - headroom));
        return;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        close(fd);
        return;
    }
    /* One uid may not take every connection from the others; root and
     * our own uid administer the daemon and are not counted. */
    admin = cred.uid == 0 || cred.uid == d->uid;
    if (!admin && (rc = uid_take(s, cred.uid, cap)) < 0) {
        if (rc == -EUSERS) {
            log_warn("conn.refused", "reason=uid_cap uid=%u pid=%d limit=%d", (unsigned)cred.uid,
                     (int)cred.pid, cap);
            snprintf(msg, sizeof(msg),
                     "too many connections from uid %u (limit %d per uid); try again later",
                     (unsigned)cred.uid, cap);
            refuse(fd, msg, cap);
        } else {
            close(fd);
        }
        return;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        if (!admin)
            uid_drop(s, cred.uid);
        close(fd);
        return;
    }
    c->s = s;
    c->fd = fd;
    c->peer.uid = cred.uid;
    c->peer.gid = cred.gid;
    c->peer.pid = cred.pid;
    c->peer.admin = admin;
    if (ctx_new(s->ctx, &c->ctx) < 0 ||
        coro_pool_new(d->rt, "request", JOBQ_CONN_INFLIGHT_MAX, &c->reqs) < 0 ||
        coro_mutex_new(&c->wlock) < 0)
        goto fail;
    c->peer.ctx = c->ctx;
    int now = atomic_fetch_add(&s->nconns, 1) + 1, peak = atomic_load(&s->peak);
    while (now > peak && !atomic_compare_exchange_weak(&s->peak, &peak, now))
        ;
    wg_add(s->conns, 1);
    if (coro_spawn(d->rt, "conn", conn_main, c) < 0) {
        atomic_fetch_sub(&s->nconns, 1);
        wg_done(s->conns);
        goto fail;
    }
    return;
fail:
    if (!c->peer.admin)
        uid_drop(s, c->peer.uid);
    close(fd);
    ctx_free(c->ctx);
    coro_pool_free(c->reqs);
    coro_mutex_free(c->wlock);
    free(c->buf);
    free(c);
}

void
server_main(void *arg)
{
    struct server *s = arg;

    while (!atomic_load(&s->stopping)) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            accept_one(s, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EAGAIN) {
            if (coro_wait_fd(s->fd, CORO_READ, s->accept_ctx, RT_FOREVER) < 0)
                break;
            continue;
        }
        /* EMFILE, ENFILE, ENOBUFS: the backlog keeps the clients; pause so
         * the loop does not spin while descriptors are short. */
        log_warn("conn.accept_failed", "err=%s", log_q(strerror(errno)));
        coro_sleep(s->accept_ctx, ACCEPT_PAUSE_NS);
    }
    wg_done(s->loop_done);
}

void
server_stop(struct server *s)
{
    atomic_store(&s->stopping, true);
    /* Connections keep being served until server_close_all: a client may
     * still read while the jobs drain. */
    ctx_cancel(s->accept_ctx);
    wg_wait(s->loop_done, NULL, RT_FOREVER);
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

void
server_close_all(struct server *s)
{
    ctx_cancel(s->ctx);
    wg_wait(s->conns, NULL, RT_FOREVER);
}
