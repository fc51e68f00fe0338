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
 *
 * POST /rpc: the callback checks the bearer token (constant time, under a
 * lock because SIGHUP's reload replaces it from another thread), copies
 * the body and queues the request for the "httpd" coroutine, which spawns
 * one "rpc" coroutine per request through a bounded pool. That coroutine
 * may land on any thread: it runs rpc_handle (parking as long as a `wait`
 * holds) and hands its reply back through a locked list and the kick
 * channel, and only the "httpd" coroutine, on thread 0, touches evhttp.
 * evhttp stops reading a connection while its request is being handled,
 * so nothing else notices a client that hangs up during a held `wait`: a
 * timer polls the sockets of held requests and cancels the context of any
 * whose client has shut down. At the stop, held requests are canceled
 * (they answer shutting_down) and their replies flushed before the
 * connections close.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
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
#include "jobq/rpc.h"
#include "jobq/runtime.h"
#include "jobq/server.h"
#include "jobq/store.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
/* How often the sockets of held /rpc requests are polled for a client
 * that hung up: the socket server looks every 0.5 s too. */
#define HUP_CHECK_MS 500
/* At the stop: how long replies already written may take to leave, in
 * rounds of FLUSH_ROUND_NS, before the connections are closed anyway. */
#define FLUSH_ROUNDS 100
#define FLUSH_ROUND_NS (10 * 1000000LL)

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

/* A POST /rpc from its arrival to its reply. Thread 0 owns req, hc and
 * the links; the "rpc" coroutine (any thread) reads body and fills reply
 * and oom, then hands the whole back through h->answered. */
struct rpcreq {
    struct httpd *h;
    struct evhttp_request *req;
    struct hconn *hc; /* NULL for a connection that is not counted */
    struct ctx *ctx;  /* ends when the client hangs up or the httpd stops */
    char *body;
    size_t len;
    char *reply; /* owned; NULL for a notification (or oom) */
    bool oom;
    struct rpcreq *next;                  /* in h->rpc_new, then h->answered */
    struct rpcreq *live_prev, *live_next; /* in h->live while its coroutine runs */
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

    /* /rpc. The token is checked on thread 0 and replaced by the reload,
     * from another thread: token_lock, held for a comparison or a swap. */
    pthread_mutex_t token_lock;
    char *token; /* NULL: /rpc is off */
    size_t token_len;
    uid_t uid; /* what an HTTP peer acts as: jobqd's own uid and gid */
    gid_t gid;
    struct rpcreq *rpc_new, **rpc_new_tail; /* thread 0: waiting for a coroutine */
    struct rpcreq *live;                    /* thread 0: coroutines running */
    pthread_mutex_t done_lock;
    struct rpcreq *answered; /* waiting to be sent (any thread pushes) */
    struct coro_pool *rpcs;
    struct ctx *rpc_ctx;  /* parent of every request's context */
    struct event *hup_ev; /* thread 0: looks for clients that hung up */
    bool closing;         /* thread 0: /rpc takes no new request */

    struct chan *kick;
    struct ctx *ctx;
    struct wg *done;
    bool started, stopped;
};

/* ---- the token -------------------------------------------------------- */

int
httpd_token_read(const char *path, char **out, size_t *len, char *why, size_t whylen)
{
    char buf[JOBQ_HTTP_TOKEN_MAX_BYTES + 64];
    struct stat st;
    size_t n = 0;
    int fd, rc = 0;

    *out = NULL;
    *len = 0;
    /* O_NONBLOCK: a FIFO put there must not hang the start or the reload. */
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0) {
        rc = -errno;
        snprintf(why, whylen, "cannot open it: %s", strerror(-rc));
        return rc;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        snprintf(why, whylen, "cannot stat it: %s", strerror(-rc));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        snprintf(why, whylen, "not a regular file");
        goto out;
    }
    /* Whoever can read the token administers jobqd, and whoever can change
     * it can choose one: as ssh does with keys, refuse rather than warn. */
    if ((st.st_mode & (S_IRWXO | S_IWGRP)) != 0) {
        rc = -EACCES;
        snprintf(why, whylen,
                 "its mode %04o lets others read or change the token; chmod 0600 it (0640 or "
                 "0440 to share it with its group)",
                 (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if (st.st_uid != 0 && st.st_uid != geteuid()) {
        rc = -EACCES;
        snprintf(why, whylen,
                 "it belongs to uid %u, who could choose the token; it must belong to root or "
                 "to jobqd's uid %u",
                 (unsigned)st.st_uid, (unsigned)geteuid());
        goto out;
    }
    while (n < sizeof(buf)) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            snprintf(why, whylen, "cannot read it: %s", strerror(-rc));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    /* `echo TOKEN > file` and editors add a line feed. */
    while (n > 0 && strchr(" \t\r\n", buf[n - 1]) != NULL)
        n--;
    if (n > JOBQ_HTTP_TOKEN_MAX_BYTES) {
        rc = -EINVAL;
        snprintf(why, whylen, "it holds more than %d bytes; a token is one line",
                 JOBQ_HTTP_TOKEN_MAX_BYTES);
        goto out;
    }
    if (n < JOBQ_HTTP_TOKEN_MIN_BYTES) {
        rc = -EINVAL;
        snprintf(why, whylen,
                 "it holds %zu characters, fewer than the %d a token needs (make one with: "
                 "openssl rand -hex 32)",
                 n, JOBQ_HTTP_TOKEN_MIN_BYTES);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)buf[i] < 0x21 || (unsigned char)buf[i] > 0x7e) {
            rc = -EINVAL;
            snprintf(why, whylen,
                     "byte %zu is not visible ASCII (a space, a control character or UTF-8): a "
                     "token must fit in an HTTP header",
                     i);
            goto out;
        }
    }
    if ((*out = malloc(n + 1)) == NULL) {
        rc = -ENOMEM;
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    memcpy(*out, buf, n);
    (*out)[n] = '\0';
    *len = n;
out:
    explicit_bzero(buf, sizeof(buf));
    close(fd);
    return rc;
}

void
httpd_token_free(char *token, size_t len)
{
    if (token == NULL)
        return;
    explicit_bzero(token, len);
    free(token);
}

bool
httpd_token_equal(const char *got, size_t gotlen, const char *want, size_t wantlen)
{
    /* Every byte of want is looked at whatever got holds, so the time
     * tells nothing about how much of a guess was right. */
    volatile unsigned char diff = gotlen != wantlen;

    for (size_t i = 0; i < wantlen; i++)
        diff |= (unsigned char)want[i] ^ (unsigned char)(i < gotlen ? got[i] : 0);
    return diff == 0;
}

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
    h->rpc_new_tail = &h->rpc_new;
    h->uid = geteuid();
    h->gid = getegid();
    pthread_mutex_init(&h->token_lock, NULL);
    pthread_mutex_init(&h->done_lock, NULL);
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
        (rc = wg_new(&h->done)) < 0 || (rc = ctx_new(NULL, &h->rpc_ctx)) < 0 ||
        (rc = coro_pool_new(d->rt, "rpc", JOBQ_HTTP_CONNECTIONS_MAX, &h->rpcs)) < 0)
        goto fail;
    if (d->cfg->http_token_file != NULL) {
        char reason[512];
        if ((rc = httpd_token_read(d->cfg->http_token_file, &h->token, &h->token_len, reason,
                                   sizeof(reason))) < 0) {
            snprintf(why, whylen, "--http-token-file %s: %s", d->cfg->http_token_file, reason);
            rc = rc == -ENOMEM ? rc : -EINVAL;
            goto fail;
        }
    }
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
    ctx_free(h->rpc_ctx);
    coro_pool_free(h->rpcs);
    httpd_token_free(h->token, h->token_len);
    pthread_mutex_destroy(&h->token_lock);
    pthread_mutex_destroy(&h->done_lock);
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
    if (type != NULL)
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

/* ---- /rpc: the request ------------------------------------------------- */

/* 0 if header ("Bearer TOKEN") holds the token; -ENOENT when /rpc is off
 * (no token file), else -EACCES with *given telling a wrong credential
 * from none. */
static int
authorized(struct httpd *h, const char *header, bool *given)
{
    const char *t = NULL;
    size_t n = 0;
    int rc;

    *given = header != NULL && header[strspn(header, " \t")] != '\0';
    if (header != NULL && strncasecmp(header, "Bearer", 6) == 0 &&
        (header[6] == ' ' || header[6] == '\t')) {
        t = header + 6 + strspn(header + 6, " \t");
        n = strlen(t);
        while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
            n--;
    }
    pthread_mutex_lock(&h->token_lock);
    if (h->token == NULL)
        rc = -ENOENT;
    else
        rc = t != NULL && httpd_token_equal(t, n, h->token, h->token_len) ? 0 : -EACCES;
    pthread_mutex_unlock(&h->token_lock);
    return rc;
}

static void
rpcreq_free(struct rpcreq *rq)
{
    if (rq == NULL)
        return;
    ctx_free(rq->ctx);
    free(rq->body);
    free(rq->reply);
    free(rq);
}

/* The client's word on the connection: a reply to a request while the
 * daemon drains (or stops serving /rpc) also closes it, so that a client
 * that keeps connections alive moves to another node. */
static void
closing_header(struct httpd *h, struct evhttp_request *req)
{
    if (h->closing || atomic_load(&h->d->draining))
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
}

static void
rpc_request(struct httpd *h, struct evhttp_request *req, struct hconn *hc)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    struct rpcreq *rq = NULL;
    char *peer = NULL;
    ev_uint16_t port = 0;
    bool given;
    int rc;

    rc = authorized(h, evhttp_find_header(in, "Authorization"), &given);
    if (rc == -ENOENT) {
        reply_text(h, req, false, 404, "Not Found",
                   "not found: /rpc is off (jobqd serves it only with --http-token-file)\n");
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        reply_text(h, req, false, 405, "Method Not Allowed", "only POST\n");
        return;
    }
    if (rc < 0) {
        /* Never the header itself: a near miss is still a secret. */
        if (hc != NULL && hc->evcon != NULL)
            evhttp_connection_get_peer(hc->evcon, &peer, &port);
        log_warn("http.unauthorized", "peer=%s port=%u reason=%s", log_q(peer ? peer : "?"),
                 (unsigned)port, given ? "bad_token" : "no_token");
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          given ? "Bearer realm=\"jobq\", error=\"invalid_token\""
                                : "Bearer realm=\"jobq\"");
        reply_text(h, req, false, 401, "Unauthorized",
                   given ? "bad bearer token\n" : "missing bearer token (Authorization: Bearer)\n");
        return;
    }
    /* Content-Type is not checked: `curl -d` sends a form's, and a
     * cross-site form cannot carry the Authorization header anyway. */
    if (h->closing) {
        closing_header(h, req);
        reply_text(h, req, false, 503, "Service Unavailable", "shutting down\n");
        return;
    }
    if ((rq = calloc(1, sizeof(*rq))) == NULL ||
        (rq->body = malloc(evbuffer_get_length(body) + 1)) == NULL ||
        ctx_new(h->rpc_ctx, &rq->ctx) < 0) {
        rpcreq_free(rq);
        reply_text(h, req, false, 500, "Internal Server Error", "out of memory\n");
        return;
    }
    rq->h = h;
    rq->req = req;
    rq->hc = hc;
    rq->len = evbuffer_get_length(body);
    evbuffer_remove(body, rq->body, rq->len);
    rq->body[rq->len] = '\0';
    if (hc != NULL && hc->evcon != NULL)
        evhttp_connection_get_peer(hc->evcon, &peer, &port);
    log_debug("http.rpc", "peer=%s port=%u bytes=%zu", log_q(peer ? peer : "?"), (unsigned)port,
              rq->len);
    *h->rpc_new_tail = rq;
    h->rpc_new_tail = &rq->next;
    if (hc != NULL)
        hc->busy = true;               /* held as long as its method says, not --request-timeout */
    chan_send(h->kick, NULL, NULL, 0); /* full: the coroutine is due anyway */
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
    if (path == NULL)
        path = "";
    if (strcmp(path, "/rpc") == 0) {
        rpc_request(h, req, hc);
        return;
    }
    if (strcmp(path, "/livez") != 0 && strcmp(path, "/readyz") != 0 &&
        strcmp(path, "/metrics") != 0) {
        /* Whatever the method: a client that posts to a wrong --url
         * prefix learns that the path is wrong. */
        reply_text(h, req, head, 404, "Not Found", "not found; try /livez, /readyz or /metrics\n");
        return;
    }
    if (cmd != EVHTTP_REQ_GET && !head) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_text(h, req, false, 405, "Method Not Allowed", "only GET and HEAD\n");
        return;
    }
    if (strcmp(path, "/livez") == 0) {
        reply_text(h, req, head, 200, "OK", "ok\n");
    } else if (strcmp(path, "/readyz") == 0) {
        if (atomic_load(&h->d->draining))
            reply_text(h, req, head, 503, "Service Unavailable", "draining\n");
        else
            reply_text(h, req, head, 200, "OK", "ready\n");
    } else { /* /metrics */
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
    outf(o,
         "# HELP jobq_store_lazy_failures_total Records written without a waiting caller (a "
         "job's process group) that failed.\n# TYPE jobq_store_lazy_failures_total counter\n"
         "jobq_store_lazy_failures_total %" PRIu64 "\n",
         ss->lazy_failures);
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

/* ---- /rpc: the coroutines --------------------------------------------- */

/* One request, on whichever thread the pool chose. The last thing it does
 * is hand rq back: from then on the "httpd" coroutine may free it. */
static void
rpc_main(void *arg)
{
    struct rpcreq *rq = arg;
    struct httpd *h = rq->h;
    struct rpc_peer peer = {.uid = h->uid, .gid = h->gid, .pid = 0, .admin = true, .ctx = rq->ctx};

    rq->reply = rpc_handle(h->d, &peer, rq->body, rq->len, &rq->oom);
    /* A held method whose client hung up ends without a reply: not oom. */
    if (rq->oom && ctx_err(rq->ctx) == 0)
        log_error("http.rpc_oom", "len=%zu", rq->len);
    pthread_mutex_lock(&h->done_lock);
    rq->next = h->answered;
    h->answered = rq;
    pthread_mutex_unlock(&h->done_lock);
    chan_send(h->kick, NULL, NULL, 0); /* full: the coroutine is due anyway */
}

static void
live_add(struct httpd *h, struct rpcreq *rq)
{
    rq->live_prev = NULL;
    rq->live_next = h->live;
    if (h->live != NULL)
        h->live->live_prev = rq;
    h->live = rq;
}

static void
live_del(struct httpd *h, struct rpcreq *rq)
{
    if (rq->live_prev != NULL)
        rq->live_prev->live_next = rq->live_next;
    else
        h->live = rq->live_next;
    if (rq->live_next != NULL)
        rq->live_next->live_prev = rq->live_prev;
}

/* Sends rq's reply (or code and text instead, when code is not 0) and
 * frees rq. */
static void
rpc_answer(struct httpd *h, struct rpcreq *rq, int code, const char *reason, const char *text)
{
    closing_header(h, rq->req);
    if (code != 0)
        reply_text(h, rq->req, false, code, reason, text);
    else if (rq->reply != NULL)
        reply(h, rq->req, false, 200, "OK", "application/json", rq->reply, strlen(rq->reply));
    else if (rq->oom && ctx_err(rq->ctx) == 0)
        reply_text(h, rq->req, false, 500, "Internal Server Error", "out of memory\n");
    else if (rq->oom)
        reply_text(h, rq->req, false, 503, "Service Unavailable", "abandoned\n");
    else
        reply(h, rq->req, false, 204, "No Content", NULL, "", 0); /* notifications */
    rpcreq_free(rq);
}

/* Clients that shut their socket while their request is held: evhttp does
 * not read during a request, so it would not see them go. */
static void
on_hup_check(evutil_socket_t fd, short what, void *arg)
{
    static const struct timeval every = {HUP_CHECK_MS / 1000, (HUP_CHECK_MS % 1000) * 1000};
    struct httpd *h = arg;

    (void)fd;
    (void)what;
    for (struct rpcreq *rq = h->live; rq != NULL; rq = rq->live_next) {
        struct pollfd p = {.fd = -1, .events = POLLRDHUP};
        if (rq->hc == NULL || rq->hc->evcon == NULL || ctx_err(rq->ctx) != 0)
            continue;
        p.fd = bufferevent_getfd(evhttp_connection_get_bufferevent(rq->hc->evcon));
        if (p.fd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
            log_debug("http.rpc_abandoned", "fd=%d", p.fd);
            ctx_cancel(rq->ctx);
        }
    }
    if (h->live != NULL)
        evtimer_add(h->hup_ev, &every);
}

/* Gives each queued request its coroutine; while closing, or when the pool
 * is full (it holds a request per connection), answers 503 instead. */
static void
start_rpcs(struct httpd *h)
{
    struct rpcreq *rq;

    while ((rq = h->rpc_new) != NULL) {
        if ((h->rpc_new = rq->next) == NULL)
            h->rpc_new_tail = &h->rpc_new;
        rq->next = NULL;
        live_add(h, rq);
        if (h->closing || coro_pool_spawn(h->rpcs, NULL, CORO_NOWAIT, "rpc", rpc_main, rq) < 0) {
            live_del(h, rq);
            rpc_answer(h, rq, 503, "Service Unavailable",
                       h->closing ? "shutting down\n" : "too many requests\n");
        }
    }
    if (h->live != NULL && !evtimer_pending(h->hup_ev, NULL))
        on_hup_check(-1, 0, h);
}

static void
answer_rpcs(struct httpd *h)
{
    struct rpcreq *list, *next;

    pthread_mutex_lock(&h->done_lock);
    list = h->answered;
    h->answered = NULL;
    pthread_mutex_unlock(&h->done_lock);
    for (; list != NULL; list = next) {
        next = list->next;
        live_del(h, list);
        rpc_answer(h, list, 0, NULL, NULL);
    }
}

/* The stop: held requests are canceled (a `wait` answers shutting_down)
 * and every request is answered before the connections close. */
static void
stop_rpcs(struct httpd *h)
{
    h->closing = true;
    ctx_cancel(h->rpc_ctx);
    for (;;) {
        start_rpcs(h);
        answer_rpcs(h);
        if (h->live == NULL)
            break;
        chan_recv(h->kick, NULL, NULL, 100 * 1000000LL);
    }
    coro_pool_drain(h->rpcs, NULL, RT_FOREVER); /* each has handed its request back */
}

/* Replies written to a connection but not yet sent. */
static bool
output_pending(struct httpd *h)
{
    for (struct hconn *hc = h->conns; hc != NULL; hc = hc->next)
        if (hc->evcon != NULL && evbuffer_get_length(bufferevent_get_output(
                                     evhttp_connection_get_bufferevent(hc->evcon))) > 0)
            return true;
    return false;
}

void
httpd_reload(struct httpd *h, const struct config *cfg)
{
    char why[512], *token = NULL, *old;
    size_t len = 0, oldlen;
    int rc;

    if (h == NULL)
        return;
    if (cfg->http_token_file != NULL &&
        (rc = httpd_token_read(cfg->http_token_file, &token, &len, why, sizeof(why))) < 0) {
        log_error("http.token_failed", "file=%s err=%s action=%s", log_q(cfg->http_token_file),
                  log_q(why), log_q("the previous token stays"));
        return;
    }
    pthread_mutex_lock(&h->token_lock);
    old = h->token;
    oldlen = h->token_len;
    h->token = token;
    h->token_len = len;
    pthread_mutex_unlock(&h->token_lock);
    if (token != NULL || old != NULL) /* nothing to say while /rpc stays off */
        log_info("http.token", "rpc=%s file=%s", token != NULL ? "on" : "off",
                 log_q(cfg->http_token_file != NULL ? cfg->http_token_file : ""));
    httpd_token_free(old, oldlen);
}

/* ---- the coroutine ---------------------------------------------------- */

static int
setup(struct httpd *h, struct event_base *base)
{
    struct evhttp_bound_socket *bound;

    if ((h->http = evhttp_new(base)) == NULL ||
        (h->resolve_ev = event_new(base, -1, 0, on_resolve, h)) == NULL ||
        (h->hup_ev = evtimer_new(base, on_hup_check, h)) == NULL)
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
        bool rpc;
        pthread_mutex_lock(&h->token_lock);
        rpc = h->token != NULL;
        pthread_mutex_unlock(&h->token_lock);
        log_info("http.listen", "addr=%s port=%d rpc=%s", log_q(h->addr), h->port,
                 rpc ? "on" : "off");
        if (rpc && h->uid == 0)
            log_warn("http.rpc_as_root", "hint=%s",
                     log_q("a client with the token runs jobs as root: run jobqd as an "
                           "unprivileged user where /rpc is reachable"));
        while (chan_recv(h->kick, NULL, h->ctx, RT_FOREVER) == 0) {
            start_rpcs(h);
            answer_rpcs(h);
            answer_scrapes(h);
        }
        /* Scrapes can still arrive while the last ones read the store; a
         * few rounds answer them, and the listener takes no one new. */
        evconnlistener_disable(h->lev);
        stop_rpcs(h);
        for (int round = 0; round < 3 && h->scrapes != NULL; round++)
            answer_scrapes(h);
        for (int round = 0; round < FLUSH_ROUNDS && output_pending(h); round++)
            coro_sleep(NULL, FLUSH_ROUND_NS);
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
    if (h->hup_ev != NULL)
        event_free(h->hup_ev);
    h->hup_ev = NULL;
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
