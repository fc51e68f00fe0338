/*
 * client — the protocol side of bench-e2e (bench/e2e.sh): a jobq client
 * written against docs/PROTOCOL.md alone, as fast as a client can
 * reasonably be (pipelined requests, no per-request connection), that
 * measures one figure per mode and prints "key value" lines for e2e.sh.
 *
 *   client SOCK exec N BATCH CMD...      N jobs in `submit {"jobs":[...]}`
 *                                        requests of BATCH, all pipelined on
 *                                        one connection; first submit sent to
 *                                        last job terminal
 *   client SOCK submit CONNS DEPTH N     N one-job submits from CONNS
 *                                        connections, DEPTH in flight on each
 *   client SOCK latency N STAMP          N jobs one at a time on an idle
 *                                        daemon; STAMP prints its start time
 *   client SOCK fill N CMD...            N jobs in batches of 1000, then
 *                                        holds until `stats` counts N running
 *
 * Replies are matched by id. Any error reply ends the run with status 1:
 * a benchmark that lost requests has no figure.
 */
#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "jobq/base64.h"

/* ---- helpers ------------------------------------------------------------ */

static int64_t
clock_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
mono_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

_Noreturn static void
die(const char *what, const char *why)
{
    fprintf(stderr, "e2e client: %s%s%s\n", what, why ? ": " : "", why ? why : "");
    exit(1);
}

static void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        die("out of memory", NULL);
    return p;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* p in [0, 100] of v[0..n), sorted. */
static int64_t
pct(const int64_t *v, size_t n, double p)
{
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* A growable string, for request lines. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static void
sb_need(struct sbuf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    while (b->len + more + 1 > b->cap)
        b->cap = b->cap ? b->cap * 2 : 4096;
    if ((b->p = realloc(b->p, b->cap)) == NULL)
        die("out of memory", NULL);
}

static void __attribute__((format(printf, 2, 3))) sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    sb_need(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* argv as a JSON array of strings (plain printable arguments only). */
static void
sb_argv(struct sbuf *b, char **argv, int argc)
{
    sb_printf(b, "[");
    for (int i = 0; i < argc; i++) {
        for (const char *s = argv[i]; *s; s++)
            if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
                die("command arguments must not need JSON escapes", argv[i]);
        sb_printf(b, "%s\"%s\"", i ? "," : "", argv[i]);
    }
    sb_printf(b, "]");
}

/* ---- a connection ------------------------------------------------------- */

struct conn {
    int fd;
    char *in;
    size_t len, off, cap; /* unread input is in[off..len) */
};

static void
conn_open(struct conn *c, const char *path, bool nonblock)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    memset(c, 0, sizeof(*c));
    if (strlen(path) >= sizeof(sa.sun_path))
        die(path, "socket path too long");
    strcpy(sa.sun_path, path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (c->fd < 0)
        die("socket", strerror(errno));
    /* A nonblocking connect on a Unix socket completes or fails at once
     * unless the backlog is full; then wait for it like a blocking one. */
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS &&
        errno != EAGAIN)
        die(path, strerror(errno));
    c->cap = 1 << 20;
    c->in = xmalloc(c->cap);
}

static void
conn_close(struct conn *c)
{
    close(c->fd);
    free(c->in);
}

static void
conn_send(struct conn *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(c->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            die("write", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

/* The next complete line in the buffer, NUL-terminated, or NULL. */
static char *
conn_next(struct conn *c)
{
    char *nl = memchr(c->in + c->off, '\n', c->len - c->off), *line;

    if (nl == NULL)
        return NULL;
    *nl = '\0';
    line = c->in + c->off;
    c->off = (size_t)(nl - c->in) + 1;
    return line;
}

/* Reads what is there; 0 at end of file, -EAGAIN if nothing yet. */
static int
conn_fill(struct conn *c)
{
    ssize_t r;

    if (c->off > 0) {
        memmove(c->in, c->in + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->len == c->cap) {
        c->cap *= 2;
        if ((c->in = realloc(c->in, c->cap)) == NULL)
            die("out of memory", NULL);
    }
    do
        r = read(c->fd, c->in + c->len, c->cap - c->len);
    while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return -EAGAIN;
    if (r < 0)
        die("read", strerror(errno));
    c->len += (size_t)r;
    return r > 0;
}

/* Blocking: the next line. */
static char *
conn_line(struct conn *c)
{
    char *line;

    while ((line = conn_next(c)) == NULL)
        if (conn_fill(c) == 0)
            die("jobqd closed the connection", NULL);
    return line;
}

/* A reply line as cJSON; dies on an error reply. Returns owned (cJSON_Delete). */
static cJSON *
reply_parse(const char *line, int64_t *id)
{
    cJSON *r = cJSON_Parse(line), *idj;

    if (r == NULL)
        die("unparsable reply", line);
    if (cJSON_GetObjectItemCaseSensitive(r, "error") != NULL)
        die("error reply", line);
    idj = cJSON_GetObjectItemCaseSensitive(r, "id");
    *id = cJSON_IsNumber(idj) ? (int64_t)idj->valuedouble : -1;
    return r;
}

static int64_t next_req_id = 1;

/* One request, its reply's result. Returns owned (the whole reply). */
static cJSON *
call(struct conn *c, const char *method, const char *params, cJSON **result)
{
    struct sbuf b = {0};
    int64_t want = next_req_id++, got;
    cJSON *r;

    sb_printf(&b, "{\"jsonrpc\":\"2.0\",\"id\":%" PRId64 ",\"method\":\"%s\",\"params\":%s}\n",
              want, method, params ? params : "{}");
    conn_send(c, b.p, b.len);
    free(b.p);
    for (;;) {
        r = reply_parse(conn_line(c), &got);
        if (got == want)
            break;
        cJSON_Delete(r);
    }
    *result = cJSON_GetObjectItemCaseSensitive(r, "result");
    return r;
}

static int64_t
num(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!cJSON_IsNumber(v))
        die("reply lacks a number", name);
    return (int64_t)v->valuedouble;
}

/* ---- exec: N jobs in batches, first submit to last completion ----------- */

/* Holds until every job is terminal: first on the highest id (jobs are
 * claimed in id order, so when it ends nearly everything has), then on
 * whatever `list` still shows unfinished, until it shows nothing. Cheap
 * for the daemon: a wait re-reads only its own unfinished ids. */
static void
wait_all(struct conn *c, int64_t last_id)
{
    struct sbuf b = {0};
    cJSON *r, *res;

    sb_printf(&b, "{\"ids\":[%" PRId64 "]}", last_id);
    cJSON_Delete(call(c, "wait", b.p, &res));
    for (;;) {
        const cJSON *jobs, *j;
        r = call(c, "list",
                 "{\"state\":[\"scheduled\",\"queued\",\"running\",\"retrying\"],"
                 "\"limit\":1000}",
                 &res);
        jobs = cJSON_GetObjectItemCaseSensitive(res, "jobs");
        if (cJSON_GetArraySize(jobs) == 0) {
            cJSON_Delete(r);
            break;
        }
        b.len = 0;
        sb_printf(&b, "{\"ids\":[");
        cJSON_ArrayForEach (j, jobs) {
            sb_printf(&b, "%s%" PRId64, j == jobs->child ? "" : ",", num(j, "id"));
        }
        sb_printf(&b, "]}");
        cJSON_Delete(r);
        cJSON_Delete(call(c, "wait", b.p, &res));
    }
    free(b.p);
}

static int
mode_exec(const char *sock, int argc, char **argv)
{
    long n, batch, nreq;
    struct conn c;
    struct sbuf b = {0};
    int64_t t0, t1, t_sub, last_id = 0;
    cJSON *r, *res, *states;

    if (argc < 3 || (n = atol(argv[0])) <= 0 || (batch = atol(argv[1])) <= 0)
        die("usage: exec N BATCH CMD...", NULL);
    conn_open(&c, sock, false);
    nreq = (n + batch - 1) / batch;
    /* Every request is built before the clock starts. */
    for (long i = 0, left = n; i < nreq; i++, left -= batch) {
        long k = left < batch ? left : batch;
        sb_printf(&b,
                  "{\"jsonrpc\":\"2.0\",\"id\":%" PRId64 ",\"method\":\"submit\","
                  "\"params\":{\"jobs\":[",
                  next_req_id++);
        for (long j = 0; j < k; j++) {
            sb_printf(&b, "%s{\"command\":", j ? "," : "");
            sb_argv(&b, argv + 2, argc - 2);
            sb_printf(&b, "}");
        }
        sb_printf(&b, "]}}\n");
    }
    t0 = mono_ns();
    conn_send(&c, b.p, b.len);
    for (long i = 0; i < nreq; i++) {
        int64_t id;
        const cJSON *j;
        r = reply_parse(conn_line(&c), &id);
        res = cJSON_GetObjectItemCaseSensitive(r, "result");
        cJSON_ArrayForEach (j, cJSON_GetObjectItemCaseSensitive(res, "jobs")) {
            int64_t jid = num(j, "id");
            last_id = jid > last_id ? jid : last_id;
        }
        cJSON_Delete(r);
    }
    t_sub = mono_ns();
    wait_all(&c, last_id);
    t1 = mono_ns();
    r = call(&c, "stats", NULL, &res);
    states = cJSON_GetObjectItemCaseSensitive(res, "states");
    if (num(states, "succeeded") != n) {
        fprintf(stderr, "e2e client: %" PRId64 " of %ld jobs succeeded\n", num(states, "succeeded"),
                n);
        return 1;
    }
    cJSON_Delete(r);
    printf("e2e.exec_rate %.0f\n", (double)n * 1e9 / (double)(t1 - t0));
    printf("exec_submit_ms %.1f\n", (double)(t_sub - t0) / 1e6);
    printf("exec_total_ms %.1f\n", (double)(t1 - t0) / 1e6);
    conn_close(&c);
    free(b.p);
    return 0;
}

/* ---- submit: one job per request, CONNS connections, DEPTH in flight ---- */

struct sconn {
    struct conn c;
    int inflight;
    struct sbuf out;
};

/* The fast path for the reply of a one-job submit: the daemon writes
 * `{"jsonrpc":"2.0","id":N,"result":...`; anything else is parsed. */
static int64_t
submit_reply_id(const char *line)
{
    static const char head[] = "{\"jsonrpc\":\"2.0\",\"id\":";
    char *end;
    int64_t id;

    if (strncmp(line, head, sizeof(head) - 1) == 0) {
        id = strtoll(line + sizeof(head) - 1, &end, 10);
        if (strncmp(end, ",\"result\":", 10) == 0)
            return id;
    }
    cJSON_Delete(reply_parse(line, &id));
    return id;
}

static int
mode_submit(const char *sock, int argc, char **argv)
{
    /* Scheduled an hour ahead: the figure is the submit path, not
     * submits competing with the jobs they start. */
    static const char spec[] = "{\"command\":[\"/bin/true\"],\"delay_ms\":3600000}";
    int conns, depth, ep;
    long n, sent = 0, done = 0;
    struct sconn *sc;
    int64_t *t_sent, *lat, t0, t1;

    if (argc < 3 || (conns = atoi(argv[0])) <= 0 || (depth = atoi(argv[1])) <= 0 ||
        (n = atol(argv[2])) <= 0)
        die("usage: submit CONNS DEPTH N", NULL);
    sc = calloc((size_t)conns, sizeof(*sc));
    t_sent = xmalloc(sizeof(int64_t) * (size_t)(n + 1));
    lat = xmalloc(sizeof(int64_t) * (size_t)n);
    if (sc == NULL || (ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("setup", strerror(errno));
    for (int i = 0; i < conns; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        conn_open(&sc[i].c, sock, false);
        if (epoll_ctl(ep, EPOLL_CTL_ADD, sc[i].c.fd, &ev) < 0)
            die("epoll_ctl", strerror(errno));
    }
    /* Blocking writes: DEPTH requests of ~120 bytes fit the socket buffer. */
    t0 = mono_ns();
    for (int i = 0; i < conns; i++) {
        struct sconn *s = &sc[i];
        s->out.len = 0;
        for (; s->inflight < depth && sent < n; s->inflight++) {
            sent++;
            t_sent[sent] = mono_ns();
            sb_printf(&s->out,
                      "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"submit\",\"params\":%s}\n",
                      sent, spec);
        }
        conn_send(&s->c, s->out.p, s->out.len);
    }
    while (done < n) {
        struct epoll_event evs[64];
        int k = epoll_wait(ep, evs, 64, 30000);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            die("no reply for 30 s", NULL);
        for (int e = 0; e < k; e++) {
            struct sconn *s = &sc[evs[e].data.u32];
            char *line;
            int64_t now;
            if (conn_fill(&s->c) == 0)
                die("jobqd closed a connection", NULL);
            now = mono_ns();
            s->out.len = 0;
            while ((line = conn_next(&s->c)) != NULL) {
                int64_t id = submit_reply_id(line);
                if (id < 1 || id > n)
                    die("reply with an unknown id", line);
                lat[done++] = now - t_sent[id];
                s->inflight--;
                if (sent < n) {
                    sent++;
                    t_sent[sent] = now;
                    sb_printf(&s->out,
                              "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"submit\","
                              "\"params\":%s}\n",
                              sent, spec);
                    s->inflight++;
                }
            }
            if (s->out.len > 0)
                conn_send(&s->c, s->out.p, s->out.len);
        }
    }
    t1 = mono_ns();
    qsort(lat, (size_t)n, sizeof(*lat), cmp_i64);
    printf("e2e.submit_rate %.0f\n", (double)n * 1e9 / (double)(t1 - t0));
    printf("submit_req_p50_us %.0f\n", (double)pct(lat, (size_t)n, 50) / 1e3);
    printf("submit_req_p99_us %.0f\n", (double)pct(lat, (size_t)n, 99) / 1e3);
    /* How many submits shared each commit (the store's own figures). */
    {
        cJSON *res, *r = call(&sc[0].c, "stats", NULL, &res);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(res, "store");
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(st, "writes_per_commit_avg");
        const cJSON *ms = cJSON_GetObjectItemCaseSensitive(st, "commit_avg_ms");
        if (cJSON_IsNumber(w) && cJSON_IsNumber(ms)) {
            printf("submit_writes_per_commit %.0f\n", w->valuedouble);
            printf("submit_commit_ms %.2f\n", ms->valuedouble);
        }
        cJSON_Delete(r);
    }
    for (int i = 0; i < conns; i++) {
        conn_close(&sc[i].c);
        free(sc[i].out.p);
    }
    close(ep);
    free(sc);
    free(t_sent);
    free(lat);
    return 0;
}

/* ---- latency: submit acknowledged -> process started -------------------- */

static int64_t
logged_start_ns(struct conn *c, int64_t id)
{
    char params[64], dec[64], *end;
    size_t n;
    const cJSON *data;
    cJSON *r, *res;
    int64_t ns;

    snprintf(params, sizeof(params), "{\"id\":%" PRId64 "}", id);
    r = call(c, "logs", params, &res);
    data = cJSON_GetObjectItemCaseSensitive(res, "data");
    if (!cJSON_IsString(data) || strlen(data->valuestring) >= sizeof(dec) ||
        base64_decode(data->valuestring, strlen(data->valuestring), dec, &n) < 0 || n == 0)
        die("stamp job left no time in its log", params);
    dec[n] = '\0';
    ns = strtoll(dec, &end, 10);
    if (*end != '\n')
        die("stamp job printed something else", dec);
    cJSON_Delete(r);
    return ns;
}

static int
mode_latency(const char *sock, int argc, char **argv)
{
    long n;
    struct conn c;
    struct sbuf req = {0};
    int64_t *ids, *acked, *sent, *lat, *from_send;
    long early = 0;
    unsigned seed = (unsigned)getpid();

    if (argc < 2 || (n = atol(argv[0])) <= 0)
        die("usage: latency N STAMP", NULL);
    ids = xmalloc(sizeof(int64_t) * (size_t)n);
    acked = xmalloc(sizeof(int64_t) * (size_t)n);
    sent = xmalloc(sizeof(int64_t) * (size_t)n);
    lat = xmalloc(sizeof(int64_t) * (size_t)n);
    from_send = xmalloc(sizeof(int64_t) * (size_t)n);
    conn_open(&c, sock, false);
    for (long i = 0; i < n; i++) {
        struct timespec pause = {0, 2000000 + (long)(rand_r(&seed) % 3000000)};
        char params[64];
        cJSON *r, *res;
        int64_t id;

        req.len = 0;
        sb_printf(&req,
                  "{\"jsonrpc\":\"2.0\",\"id\":%" PRId64 ",\"method\":\"submit\","
                  "\"params\":{\"command\":",
                  next_req_id++);
        sb_argv(&req, argv + 1, 1);
        sb_printf(&req, "}}\n");
        sent[i] = clock_ns(CLOCK_REALTIME);
        conn_send(&c, req.p, req.len);
        r = reply_parse(conn_line(&c), &id);
        acked[i] = clock_ns(CLOCK_REALTIME);
        ids[i] = num(cJSON_GetObjectItemCaseSensitive(r, "result"), "id");
        cJSON_Delete(r);
        snprintf(params, sizeof(params), "{\"ids\":[%" PRId64 "]}", ids[i]);
        cJSON_Delete(call(&c, "wait", params, &res));
        /* Idle between jobs: the next submit finds every thread asleep. */
        nanosleep(&pause, NULL);
    }
    for (long i = 0; i < n; i++) {
        int64_t start = logged_start_ns(&c, ids[i]);
        lat[i] = start - acked[i];
        from_send[i] = start - sent[i];
        if (lat[i] < 0)
            early++;
    }
    qsort(lat, (size_t)n, sizeof(*lat), cmp_i64);
    qsort(from_send, (size_t)n, sizeof(*from_send), cmp_i64);
    /* Signed: a process that started before the reply reached us has a
     * negative latency; the percentiles are of the signed values. */
    printf("e2e.start_latency_p50_us %.0f\n", (double)pct(lat, (size_t)n, 50) / 1e3);
    printf("e2e.start_latency_p99_us %.0f\n", (double)pct(lat, (size_t)n, 99) / 1e3);
    printf("start_latency_min_us %.0f\n", (double)lat[0] / 1e3);
    printf("start_latency_max_us %.0f\n", (double)lat[n - 1] / 1e3);
    printf("start_before_ack_pct %.1f\n", 100.0 * (double)early / (double)n);
    printf("send_to_start_p50_us %.0f\n", (double)pct(from_send, (size_t)n, 50) / 1e3);
    printf("send_to_start_p99_us %.0f\n", (double)pct(from_send, (size_t)n, 99) / 1e3);
    conn_close(&c);
    free(req.p);
    free(ids);
    free(acked);
    free(sent);
    free(lat);
    free(from_send);
    return 0;
}

/* ---- fill: N long jobs running ------------------------------------------ */

static int
mode_fill(const char *sock, int argc, char **argv)
{
    long n;
    struct conn c;
    struct sbuf b = {0};
    int64_t t0, deadline;
    cJSON *r, *res;

    if (argc < 2 || (n = atol(argv[0])) <= 0)
        die("usage: fill N CMD...", NULL);
    conn_open(&c, sock, false);
    t0 = mono_ns();
    for (long left = n; left > 0; left -= 1000) {
        long k = left < 1000 ? left : 1000;
        b.len = 0;
        sb_printf(&b, "{\"jobs\":[");
        for (long j = 0; j < k; j++) {
            sb_printf(&b, "%s{\"command\":", j ? "," : "");
            sb_argv(&b, argv + 1, argc - 1);
            sb_printf(&b, "}");
        }
        sb_printf(&b, "]}");
        cJSON_Delete(call(&c, "submit", b.p, &res));
    }
    deadline = t0 + 60 * 1000000000LL;
    for (;;) {
        struct timespec pause = {0, 20000000};
        int64_t running;
        r = call(&c, "stats", NULL, &res);
        running = num(res, "running");
        cJSON_Delete(r);
        if (running >= n)
            break;
        if (mono_ns() > deadline)
            die("jobs did not all start within 60 s", NULL);
        nanosleep(&pause, NULL);
    }
    printf("fill_start_ms %.0f\n", (double)(mono_ns() - t0) / 1e6);
    conn_close(&c);
    free(b.p);
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: client SOCK exec|submit|latency|fill ARGS...\n");
        return 2;
    }
    if (strcmp(argv[2], "exec") == 0)
        return mode_exec(argv[1], argc - 3, argv + 3);
    if (strcmp(argv[2], "submit") == 0)
        return mode_submit(argv[1], argc - 3, argv + 3);
    if (strcmp(argv[2], "latency") == 0)
        return mode_latency(argv[1], argc - 3, argv + 3);
    if (strcmp(argv[2], "fill") == 0)
        return mode_fill(argv[1], argc - 3, argv + 3);
    fprintf(stderr, "client: unknown mode %s\n", argv[2]);
    return 2;
}
