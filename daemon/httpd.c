/*
 * httpd — /livez, /readyz and /metrics on libevent's evhttp, on the event
 * base of scheduler thread 0. The evhttp callbacks run inside that
 * thread's event loop, outside any coroutine, so they must not park:
 * health answers come from atomics, and a scrape is queued for the
 * "httpd" coroutine (same thread, so the queue needs no lock), which reads
 * the store's counters on the blocking pool and answers every scrape that
 * waited meanwhile with one rendering.
 *
 * libevent 2.1 has no connection cap and no whole-request deadline for
 * evhttp, so both are built here: the bufferevent callback (evhttp_set_
 * bevcb) sees each accepted connection first; right after the accept
 * callback returns, a resolver event reads the evhttp connection back out
 * of the bufferevent's callback argument (a reference held meanwhile keeps
 * a connection evhttp dropped at once from being freed under us) and sets
 * a close callback, which is what counts connections down. A per-connection
 * timer armed at accept and after each reply frees a connection that has
 * not delivered a whole request within --request-timeout: slow-loris
 * clients trickling a byte at a time do not reset it, unlike the read
 * timeout of evhttp_set_timeout.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "daemon.h"
#include "jobq/dispatch.h"
#include "jobq/httpd.h"
#include "jobq/limits.h"
#include "jobq/log.h"
#include "jobq/metrics.h"
#include "jobq/runtime.h"
#include "jobq/server.h"
#include "jobq/store.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* One accepted HTTP connection. */
struct hconn {
    struct httpd *h;
    struct bufferevent *bev;         /* our reference, until resolved */
    struct evhttp_connection *evcon; /* NULL until resolved */
    struct event *deadline;          /* the current request must be whole by then */
    bool busy;                       /* a request of it waits for a scrape */
    struct hconn *prev, *next;
};

/* A /metrics request waiting for the coroutine. */
struct scrape {
    struct evhttp_request *req;
    bool head;
    struct scrape *next;
};

struct httpd {
    struct daemon *d;
    int fd; /* the listening socket until evhttp takes it; -1 after */
    int port;
    char addr[80]; /* for messages: "127.0.0.1:9090", "[::1]:9090" */
    struct timeval timeout;

    /* Thread 0's, touched only there (callbacks and the coroutine). */
    struct evhttp *http;
    struct evconnlistener *lev;
    struct event *resolve_ev;
    struct hconn *conns;
    int nconns;
    bool paused; /* the listener is off: at the connection cap */
    struct scrape *scrapes, **scrapes_tail;

    struct chan *kick;
    struct ctx *ctx;
    struct wg *done;
    bool started, stopped;
};

/* ---- the listening socket --------------------------------------------- */

int
httpd_new(struct daemon *d, struct httpd **out, char *why, size_t whylen)
{
    const struct config_addr *a = &d->cfg->http;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    char port[16];
    struct httpd *h;
    int one = 1, rc;

    if ((h = calloc(1, sizeof(*h))) == NULL)
        return -ENOMEM;
    h->d = d;
    h->fd = -1;
    h->scrapes_tail = &h->scrapes;
    snprintf(h->addr, sizeof(h->addr), strchr(a->host, ':') ? "[%s]:%d" : "%s:%d", a->host,
             a->port);
    snprintf(port, sizeof(port), "%d", a->port);
    if ((rc = getaddrinfo(a->host, port, &hints, &ai)) != 0) {
        snprintf(why, whylen, "--http %s: %s", h->addr, gai_strerror(rc));
        rc = -EINVAL;
        goto fail;
    }
    if ((h->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0 ||
        setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(h->fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(h->fd, SOMAXCONN) < 0 ||
        getsockname(h->fd, (struct sockaddr *)&ss, &sslen) < 0) {
        rc = -errno;
        snprintf(why, whylen, "cannot listen for HTTP on %s: %s", h->addr, strerror(-rc));
        goto fail;
    }
    h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    if ((rc = chan_new(0, 1, &h->kick)) < 0 || (rc = ctx_new(NULL, &h->ctx)) < 0 ||
        (rc = wg_new(&h->done)) < 0)
        goto fail;
    h->timeout.tv_sec = d->cfg->request_timeout_ms / 1000;
    h->timeout.tv_usec = (d->cfg->request_timeout_ms % 1000) * 1000;
    freeaddrinfo(ai);
    *out = h;
    return 0;
fail:
    if (ai != NULL)
        freeaddrinfo(ai);
    httpd_free(h);
    return rc;
}

void
httpd_free(struct httpd *h)
{
    if (h == NULL)
        return;
    if (h->fd >= 0)
        close(h->fd);
    chan_free(h->kick);
    ctx_free(h->ctx);
    wg_free(h->done);
    free(h);
}

int
httpd_port(const struct httpd *h)
{
    return h->port;
}

/* ---- connections: cap and deadline ------------------------------------ */

static void
conn_gone(struct hconn *hc)
{
    struct httpd *h = hc->h;

    if (hc->prev != NULL)
        hc->prev->next = hc->next;
    else
        h->conns = hc->next;
    if (hc->next != NULL)
        hc->next->prev = hc->prev;
    if (hc->deadline != NULL)
        event_free(hc->deadline);
    free(hc);
    h->nconns--;
    /* h->lev is NULL while evhttp_free tears everything down. */
    if (h->paused && h->lev != NULL && h->nconns < JOBQ_HTTP_CONNECTIONS_MAX) {
        evconnlistener_enable(h->lev);
        h->paused = false;
    }
}

static void
on_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    conn_gone(arg);
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct hconn *hc = arg;
    char *peer = NULL;
    ev_uint16_t port = 0;

    (void)fd;
    (void)what;
    if (hc->busy || hc->evcon == NULL)
        return;
    evhttp_connection_get_peer(hc->evcon, &peer, &port);
    log_warn("http.request_timeout", "peer=%s port=%u timeout_ms=%" PRId64, log_q(peer),
             (unsigned)port, hc->h->d->cfg->request_timeout_ms);
    evhttp_connection_free(hc->evcon); /* calls on_close: hc is gone */
}

/* Runs right after the accept callback has returned (event_active from
 * on_accept): each new connection's evhttp connection exists by now. */
static void
on_resolve(evutil_socket_t fd, short what, void *arg)
{
    struct httpd *h = arg;
    struct hconn *hc, *next;

    (void)fd;
    (void)what;
    for (hc = h->conns; hc != NULL; hc = next) {
        struct bufferevent *bev = hc->bev;
        bufferevent_event_cb errcb = NULL;
        void *cbarg = NULL;

        next = hc->next;
        if (bev == NULL)
            continue;
        hc->bev = NULL;
        bufferevent_getcb(bev, NULL, NULL, &errcb, &cbarg);
        if (errcb != NULL && cbarg != NULL) {
            hc->evcon = cbarg; /* evhttp's callback argument is its connection */
            evhttp_connection_set_closecb(hc->evcon, on_close, hc);
            evtimer_add(hc->deadline, &h->timeout);
        } else {
            conn_gone(hc); /* evhttp dropped it already (bufferevent_free cleared it) */
        }
        bufferevent_decref(bev);
    }
}

static struct bufferevent *
on_accept(struct event_base *base, void *arg)
{
    struct httpd *h = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    struct hconn *hc = calloc(1, sizeof(*hc));

    if (bev == NULL || hc == NULL || (hc->deadline = evtimer_new(base, on_deadline, hc)) == NULL) {
        /* evhttp makes its own bufferevent: served, just not counted. */
        if (bev != NULL)
            bufferevent_free(bev);
        free(hc);
        return NULL;
    }
    hc->h = h;
    hc->bev = bev;
    bufferevent_incref(bev);
    hc->next = h->conns;
    if (h->conns != NULL)
        h->conns->prev = hc;
    h->conns = hc;
    if (++h->nconns >= JOBQ_HTTP_CONNECTIONS_MAX && !h->paused) {
        evconnlistener_disable(h->lev);
        h->paused = true;
        log_warn("http.connection_cap", "limit=%d", JOBQ_HTTP_CONNECTIONS_MAX);
    }
    event_active(h->resolve_ev, EV_TIMEOUT, 0);
    return bev;
}

static struct hconn *
conn_of(struct httpd *h, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);

    for (struct hconn *hc = h->conns; evcon != NULL && hc != NULL; hc = hc->next)
        if (hc->evcon == evcon)
            return hc;
    return NULL;
}

/* ---- replies ---------------------------------------------------------- */

static void
reply(struct httpd *h, struct evhttp_request *req, bool head, int code, const char *reason,
      const char *type, const char *body, size_t len)
{
    struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);
    struct hconn *hc = conn_of(h, req);

    if (hc != NULL) {
        /* The next request's time starts now. */
        hc->busy = false;
        evtimer_add(hc->deadline, &h->timeout);
    }
    evhttp_add_header(hdr, "Content-Type", type);
    evhttp_add_header(hdr, "Cache-Control", "no-store");
    if (head) {
        /* evhttp adds Content-Length only to responses with a body. */
        char n[32];
        snprintf(n, sizeof(n), "%zu", len);
        evhttp_add_header(hdr, "Content-Length", n);
    } else {
        evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
    }
    evhttp_send_reply(req, code, reason, NULL);
}

static void
reply_text(struct httpd *h, struct evhttp_request *req, bool head, int code, const char *reason,
           const char *text)
{
    reply(h, req, head, code, reason, "text/plain; charset=utf-8", text, strlen(text));
}

static void
on_request(struct evhttp_request *req, void *arg)
{
    struct httpd *h = arg;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    bool head = cmd == EVHTTP_REQ_HEAD;
    struct hconn *hc = conn_of(h, req);
    struct scrape *s;

    if (hc != NULL)
        evtimer_del(hc->deadline); /* it arrived whole; the reply re-arms it */
    if (cmd != EVHTTP_REQ_GET && !head) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_text(h, req, false, 405, "Method Not Allowed", "only GET and HEAD\n");
        return;
    }
    if (path == NULL)
        path = "";
    if (strcmp(path, "/livez") == 0) {
        reply_text(h, req, head, 200, "OK", "ok\n");
    } else if (strcmp(path, "/readyz") == 0) {
        if (atomic_load(&h->d->draining))
            reply_text(h, req, head, 503, "Service Unavailable", "draining\n");
        else
            reply_text(h, req, head, 200, "OK", "ready\n");
    } else if (strcmp(path, "/metrics") == 0) {
        if ((s = calloc(1, sizeof(*s))) == NULL) {
            reply_text(h, req, head, 500, "Internal Server Error", "out of memory\n");
            return;
        }
        s->req = req;
        s->head = head;
        *h->scrapes_tail = s;
        h->scrapes_tail = &s->next;
        if (hc != NULL)
            hc->busy = true;
        chan_send(h->kick, NULL, NULL, 0); /* full: the coroutine is due anyway */
    } else {
        reply_text(h, req, head, 404, "Not Found", "not found; try /livez, /readyz or /metrics\n");
    }
}

/* ---- /metrics --------------------------------------------------------- */

struct out {
    char *buf;
    size_t len, cap;
    int rc;
};

#define outf(o, ...)                                                                               \
    do {                                                                                           \
        if ((o)->rc == 0)                                                                          \
            (o)->rc = metrics_appendf(&(o)->buf, &(o)->len, &(o)->cap, __VA_ARGS__);               \
    } while (0)

/* A label value: backslash, double quote and newline escaped. */
static const char *
label(const char *s, char *buf, size_t len)
{
    size_t o = 0;

    for (; *s != '\0' && o + 3 < len; s++) {
        if (*s == '\\' || *s == '"' || *s == '\n') {
            buf[o++] = '\\';
            buf[o++] = *s == '\n' ? 'n' : *s;
        } else {
            buf[o++] = *s;
        }
    }
    buf[o] = '\0';
    return buf;
}

static void
gauge(struct out *o, const char *name, const char *help, double v)
{
    outf(o, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

static void
render_store(struct out *o, const struct store_stats *ss)
{
    char q[160];

    outf(o, "# HELP jobq_jobs Jobs in the store, by queue and state.\n# TYPE jobq_jobs gauge\n");
    for (int i = 0; i < ss->nqueues; i++)
        for (int s = 0; s < JOB_NSTATES; s++)
            outf(o, "jobq_jobs{queue=\"%s\",state=\"%s\"} %" PRId64 "\n",
                 label(ss->queues[i].name, q, sizeof(q)), job_state_name((enum job_state)s),
                 ss->queues[i].count[s]);
    gauge(o, "jobq_store_db_bytes", "Size of the database file.", (double)ss->db_bytes);
    gauge(o, "jobq_store_wal_bytes", "Size of the write-ahead log.", (double)ss->wal_bytes);
    outf(o,
         "# HELP jobq_store_commit_failures_total Group commits that failed (nothing of them "
         "was acknowledged).\n# TYPE jobq_store_commit_failures_total counter\n"
         "jobq_store_commit_failures_total %" PRIu64 "\n",
         ss->commit_failures);
}

static void
render_runtime(struct out *o, struct daemon *d)
{
    struct rt_stats rs;

    rt_stats(d->rt, &rs);
    gauge(o, "jobq_running", "Attempts running in this daemon now.", dispatch_running(d->dispatch));
    gauge(o, "jobq_concurrency", "Jobs allowed to run at once (--concurrency).",
          d->cfg->concurrency);
    outf(o, "# HELP jobq_coroutines Live coroutines by state; parked ones by what they wait "
            "for.\n# TYPE jobq_coroutines gauge\n");
    outf(o, "jobq_coroutines{state=\"running\"} %" PRIu64 "\n", rs.running);
    outf(o, "jobq_coroutines{state=\"ready\"} %" PRIu64 "\n", rs.runnable);
    for (int r = 0; r < CORO_WAIT_NREASONS; r++)
        outf(o, "jobq_coroutines{state=\"parked_%s\"} %" PRIu64 "\n",
             coro_wait_name((enum coro_wait)r), rs.parked[r]);
    gauge(o, "jobq_threads", "Scheduler threads (--threads).", rs.threads);
    gauge(o, "jobq_connections", "Client connections on the job socket.",
          server_connections(d->server));
    gauge(o, "jobq_draining", "1 once SIGTERM or SIGINT started the drain.",
          atomic_load(&d->draining) ? 1 : 0);
}

static int
count_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (dir == NULL)
        return -1;
    while ((e = readdir(dir)) != NULL)
        n += e->d_name[0] != '.';
    closedir(dir);
    return n - 1; /* the directory's own descriptor */
}

static void
render_process(struct out *o, struct daemon *d)
{
    long page = sysconf(_SC_PAGESIZE);
    unsigned long long vsz = 0, rss = 0;
    struct timespec cpu = {0, 0};
    struct rlimit rl;
    FILE *f;
    int fds;

    if ((f = fopen("/proc/self/statm", "re")) != NULL) {
        if (fscanf(f, "%llu %llu", &vsz, &rss) != 2)
            vsz = rss = 0;
        fclose(f);
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    outf(o,
         "# HELP process_cpu_seconds_total User and system CPU time of jobqd itself (not its "
         "jobs).\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.6f\n",
         (double)cpu.tv_sec + (double)cpu.tv_nsec / 1e9);
    gauge(o, "process_resident_memory_bytes", "Resident memory size.", (double)rss * (double)page);
    gauge(o, "process_virtual_memory_bytes", "Virtual memory size.", (double)vsz * (double)page);
    if ((fds = count_fds()) >= 0)
        gauge(o, "process_open_fds", "Open file descriptors.", fds);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        gauge(o, "process_max_fds", "Limit of open file descriptors (RLIMIT_NOFILE).",
              (double)rl.rlim_cur);
    gauge(o, "process_start_time_seconds", "Start time of the process, Unix seconds.",
          (double)d->started_ms / 1000.0);
}

static void
answer_scrapes(struct httpd *h)
{
    struct daemon *d = h->d;
    struct store_who admin = {.uid = d->uid, .admin = true};
    struct scrape *list = h->scrapes, *next;
    struct store_stats ss;
    struct out o = {0};
    int rc;

    if (list == NULL)
        return;
    /* Scrapes that come while this one reads the store wait for the next
     * round (the kick they sent is pending). */
    h->scrapes = NULL;
    h->scrapes_tail = &h->scrapes;
    memset(&ss, 0, sizeof(ss));
    o.rc = metrics_render(d->metrics, &o.buf, &o.len, &o.cap);
    if ((rc = store_stats(d->store, admin, &ss)) == 0)
        render_store(&o, &ss);
    else
        log_warn("http.metrics_store_failed", "err=%s", log_q(strerror(-rc)));
    store_stats_free(&ss);
    render_runtime(&o, d);
    render_process(&o, d);
    for (; list != NULL; list = next) {
        next = list->next;
        if (o.rc == 0)
            reply(h, list->req, list->head, 200, "OK", METRICS_CONTENT_TYPE, o.buf, o.len);
        else
            reply_text(h, list->req, list->head, 500, "Internal Server Error", "out of memory\n");
        free(list);
    }
    free(o.buf);
}

/* ---- the coroutine ---------------------------------------------------- */

static int
setup(struct httpd *h, struct event_base *base)
{
    struct evhttp_bound_socket *bound;

    if ((h->http = evhttp_new(base)) == NULL ||
        (h->resolve_ev = event_new(base, -1, 0, on_resolve, h)) == NULL)
        return -ENOMEM;
    evhttp_set_max_headers_size(h->http, JOBQ_HTTP_HEADERS_MAX_BYTES);
    evhttp_set_max_body_size(h->http, JOBQ_HTTP_BODY_MAX_BYTES);
    /* Read and write inactivity; the whole-request deadline is ours. */
    evhttp_set_timeout_tv(h->http, &h->timeout);
    /* Every method reaches on_request, which answers 405 with an Allow
     * header (evhttp's own refusal would be a bare 501). */
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_bevcb(h->http, on_accept, h);
    evhttp_set_gencb(h->http, on_request, h);
    if ((bound = evhttp_accept_socket_with_handle(h->http, h->fd)) == NULL)
        return -ENOMEM;
    h->fd = -1; /* the listener closes it */
    h->lev = evhttp_bound_socket_get_listener(bound);
    return 0;
}

static void
httpd_main(void *arg)
{
    struct httpd *h = arg;
    int rc;

    if ((rc = setup(h, rt_event_base(h->d->rt, coro_thread()))) < 0) {
        log_error("http.failed", "addr=%s err=%s", log_q(h->addr), log_q(strerror(-rc)));
    } else {
        log_info("http.listen", "addr=%s port=%d", log_q(h->addr), h->port);
        while (chan_recv(h->kick, NULL, h->ctx, RT_FOREVER) == 0)
            answer_scrapes(h);
        /* Scrapes can still arrive while the last ones read the store; a
         * few rounds answer them, and the listener takes no one new. */
        evconnlistener_disable(h->lev);
        for (int round = 0; round < 3 && h->scrapes != NULL; round++)
            answer_scrapes(h);
    }
    /* Any left unanswered go with their connections in evhttp_free. */
    while (h->scrapes != NULL) {
        struct scrape *s = h->scrapes;
        h->scrapes = s->next;
        free(s);
    }
    /* The listener goes first: closing connections must not re-enable it. */
    h->lev = NULL;
    if (h->http != NULL)
        evhttp_free(h->http); /* closes every connection: on_close frees each hconn */
    h->http = NULL;
    if (h->resolve_ev != NULL)
        event_free(h->resolve_ev);
    h->resolve_ev = NULL;
    wg_done(h->done);
}

int
httpd_start(struct httpd *h)
{
    int rc;

    if (h == NULL || h->started)
        return 0;
    h->started = true;
    wg_add(h->done, 1);
    if ((rc = coro_spawn_on(h->d->rt, 0, "httpd", httpd_main, h)) < 0)
        wg_done(h->done);
    return rc;
}

void
httpd_stop(struct httpd *h)
{
    if (h == NULL || !h->started || h->stopped)
        return;
    h->stopped = true;
    ctx_cancel(h->ctx);
    wg_wait(h->done, NULL, RT_FOREVER);
}
