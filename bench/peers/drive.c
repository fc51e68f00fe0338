/*
 * drive — the client side of bench-peers (bench/peers.sh): it submits
 * jobs to one system the way that system's users do, and times it. Three
 * kinds of system:
 *
 *   jobq       jobqd's JSON-RPC protocol on its Unix socket (docs/PROTOCOL.md):
 *              one `submit` per job, each acknowledged after its commit.
 *   beanstalk  beanstalkd's text protocol on its Unix socket: `put`, each
 *              acknowledged with INSERTED; `work` is the worker that reserves
 *              jobs and runs each body as a command.
 *   cli        a command-line spooler (tsp, nq, or jobq's own CLI): one
 *              process per job, PREFIX... ARGV..., acknowledged by its exit
 *              status 0. TARGET "-" or "NAME=PREFIX:K": job i gets
 *              NAME=PREFIX<i mod K> in its environment (nq's NQDIR, one
 *              queue per running slot).
 *
 * usage:
 *   drive enqueue KIND TARGET N CLIENTS [-- PREFIX...]
 *         N /bin/true jobs from CLIENTS concurrent clients, each sequential
 *         (submit, wait for the acknowledgement, next); prints "rate", and
 *         "t0"/"t1" (CLOCK_REALTIME ns) around the whole run.
 *   drive latency KIND TARGET N STAMP DIR [-- PREFIX...]
 *         N times: submit "STAMP DIR/lat.I" on an otherwise idle system, wait
 *         for the file, and take the stamp minus the time the submit began;
 *         prints percentiles in microseconds.
 *   drive exec jobq SOCK N BATCH      N /bin/true jobs in `submit` batches of
 *         BATCH, then `wait` for all of them; prints "rate" (first submit to
 *         last completion).
 *   drive exec beanstalk SOCK N CONC  CONC workers (the code of `work`), N
 *         pipelined puts; prints "rate" (first put to last delete).
 *   drive work SOCK CONC              beanstalkd worker: CONC connections,
 *         each reserve, run, delete; until killed.
 *   drive count jobq|beanstalk SOCK   "total", "queued", "running" job counts.
 *   drive raw SECONDS WORKERS         raw.spawn_rate: posix_spawn + waitpid
 *         of /bin/true in WORKERS plain loops, the ceiling of any runner.
 *   drive procs NAME=VALUE [PID...]   "pid comm rss_kib pss_kib" of every
 *         process with that entry in its environment or under one of PIDs.
 *
 * `enqueue` submits /bin/true, or $DRIVE_JOB (see enq_job).
 * $DRIVE_MAX_SECONDS, if set, ends the submitting of `enqueue` and `exec
 * beanstalk` after that long: the rate is then over the jobs submitted
 * (printed as "n"), so that slow systems fit the benchmark's time budget.
 *
 * Errors are fatal: a benchmark figure from a half-failed run is worse than
 * none.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define DRIVE_MAX_CLIENTS 256
#define DRIVE_MAX_ARGS 64
/* A beanstalk job body or a jobq request line; ours are short commands. */
#define DRIVE_LINE_MAX 4096
/* Puts in flight on the one connection of `exec beanstalk`: enough to
 * keep beanstalkd busy, few enough that its replies never fill the socket
 * buffer while we are still writing. */
#define DRIVE_PUT_WINDOW 128
/* Ids per `wait` request (the protocol's limit). */
#define DRIVE_WAIT_IDS 1000
/* A latency sample's job must start within this, or the run is broken. */
#define DRIVE_START_TIMEOUT_MS 30000
/* Pause between latency samples, so that each submit meets an idle
 * system (the previous job's exit recorded, its process reaped). */
#define DRIVE_LATENCY_GAP_US 10000

/* Errors are fatal (see the top). */
__attribute__((format(printf, 1, 2), noreturn)) static void
die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "drive: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

static int64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* p in [0, 100] of v[0..n), which must be sorted: nearest rank. */
static int64_t
pct(const int64_t *v, size_t n, double p)
{
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* --- line-oriented socket connections --- */

/* Replies up to 4 MiB, as docs/PROTOCOL.md asks of clients (a `wait` for
 * 1000 jobs is about 600 KiB). */
#define DRIVE_REPLY_MAX (4 << 20)

struct conn {
    int fd;
    size_t off, len;
    char *buf;
};

static struct conn *
conn_open(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct conn *c;

    if (strlen(path) >= sizeof(sa.sun_path))
        die("socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    if ((c = calloc(1, sizeof(*c))) == NULL || (c->buf = malloc(DRIVE_REPLY_MAX)) == NULL)
        die("out of memory");
    if ((c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        die("socket: %s", strerror(errno));
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("connect %s: %s", path, strerror(errno));
    return c;
}

static void
conn_write(struct conn *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(c->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            die("write: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

static void
conn_fill(struct conn *c)
{
    ssize_t r;

    if (c->off > 0) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->len == DRIVE_REPLY_MAX)
        die("reply line longer than %d bytes", DRIVE_REPLY_MAX);
    do
        r = read(c->fd, c->buf + c->len, DRIVE_REPLY_MAX - c->len);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        die("read: %s", strerror(errno));
    if (r == 0)
        die("the server closed the connection");
    c->len += (size_t)r;
}

/* Returns the next line, without its "\n" or "\r\n", NUL-terminated in
 * place; valid until the next read on c. */
static char *
conn_line(struct conn *c)
{
    for (;;) {
        char *s = c->buf + c->off, *nl = memchr(s, '\n', c->len - c->off);
        if (nl != NULL) {
            *nl = '\0';
            if (nl > s && nl[-1] == '\r')
                nl[-1] = '\0';
            c->off = (size_t)(nl + 1 - c->buf);
            return s;
        }
        conn_fill(c);
    }
}

/* Reads exactly n bytes into out (beanstalk job bodies and stats). */
static void
conn_bytes(struct conn *c, char *out, size_t n)
{
    while (n > 0) {
        size_t k;
        if (c->off == c->len)
            conn_fill(c);
        k = c->len - c->off < n ? c->len - c->off : n;
        memcpy(out, c->buf + c->off, k);
        c->off += k;
        out += k;
        n -= k;
    }
}

static void
conn_free(struct conn *c)
{
    if (c == NULL)
        return;
    close(c->fd);
    free(c->buf);
    free(c);
}

/* --- systems --- */

enum kind { KIND_JOBQ, KIND_BEANSTALK, KIND_CLI };

struct target {
    enum kind kind;
    const char *sock;
    char **prefix; /* cli: the command before the job's argv */
    int nprefix;
    char env_name[64]; /* cli: rotated variable, "" for none */
    const char *env_prefix;
    int env_count;
};

struct client {
    const struct target *t;
    struct conn *c;
    int64_t seq;
    int devnull;
};

static enum kind
parse_kind(const char *s)
{
    if (strcmp(s, "jobq") == 0)
        return KIND_JOBQ;
    if (strcmp(s, "beanstalk") == 0)
        return KIND_BEANSTALK;
    if (strcmp(s, "cli") == 0)
        return KIND_CLI;
    die("unknown kind '%s' (jobq, beanstalk or cli)", s);
    return KIND_CLI;
}

/* argv[i..] after "--" is the CLI prefix. */
static void
parse_target(struct target *t, const char *kind, const char *target, int argc, char **argv, int i)
{
    memset(t, 0, sizeof(*t));
    t->kind = parse_kind(kind);
    if (t->kind != KIND_CLI) {
        t->sock = target;
        return;
    }
    if (strcmp(target, "-") != 0) {
        const char *eq = strchr(target, '='), *colon = strrchr(target, ':');
        if (eq == NULL || colon == NULL || colon < eq || (size_t)(eq - target) >= 64)
            die("cli target must be - or NAME=PREFIX:COUNT, not %s", target);
        memcpy(t->env_name, target, (size_t)(eq - target));
        t->env_prefix = strndup(eq + 1, (size_t)(colon - eq - 1));
        t->env_count = atoi(colon + 1);
        if (t->env_count < 1)
            die("bad count in %s", target);
    }
    if (i >= argc || strcmp(argv[i], "--") != 0 || i + 1 >= argc)
        die("cli needs -- PREFIX...");
    t->prefix = argv + i + 1;
    t->nprefix = argc - i - 1;
}

static void
json_str(char *out, size_t cap, size_t *len, const char *s)
{
    *len += (size_t)snprintf(out + *len, cap - *len, "\"");
    for (; *s && *len + 8 < cap; s++) {
        if (*s == '"' || *s == '\\')
            out[(*len)++] = '\\';
        out[(*len)++] = *s;
    }
    *len += (size_t)snprintf(out + *len, cap - *len, "\"");
    if (*len >= cap)
        die("request too long");
}

/* {"command":[...]} */
static void
json_spec(char *out, size_t cap, size_t *len, char *const argv[])
{
    *len += (size_t)snprintf(out + *len, cap - *len, "{\"command\":[");
    for (int i = 0; argv[i] != NULL; i++) {
        if (i > 0)
            out[(*len)++] = ',';
        json_str(out, cap, len, argv[i]);
    }
    *len += (size_t)snprintf(out + *len, cap - *len, "]}");
    if (*len >= cap)
        die("request too long");
}

/* Sends one request line and returns its parsed reply's "result" (owned
 * by *root, which the caller frees with cJSON_Delete). */
static cJSON *
jobq_call(struct client *cl, const char *method, const char *params, cJSON **root)
{
    char head[128];
    cJSON *res, *err;
    int64_t id = ++cl->seq;
    int n;

    n = snprintf(head, sizeof(head), "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"%s\"%s",
                 (long long)id, method, params ? ",\"params\":" : "}\n");
    conn_write(cl->c, head, (size_t)n);
    if (params != NULL) {
        conn_write(cl->c, params, strlen(params));
        conn_write(cl->c, "}\n", 2);
    }
    if ((*root = cJSON_Parse(conn_line(cl->c))) == NULL)
        die("jobqd sent a reply that is not JSON");
    if ((err = cJSON_GetObjectItem(*root, "error")) != NULL) {
        char *s = cJSON_PrintUnformatted(err);
        die("jobqd: %s failed: %s", method, s);
    }
    if ((res = cJSON_GetObjectItem(*root, "result")) == NULL)
        die("jobqd: reply to %s has no result", method);
    return res;
}

static void
beanstalk_put(struct conn *c, char *const argv[])
{
    char body[DRIVE_LINE_MAX], req[DRIVE_LINE_MAX + 64];
    size_t len = 0;
    int n;

    for (int i = 0; argv[i] != NULL; i++)
        len += (size_t)snprintf(body + len, sizeof(body) - len, "%s%s", i ? " " : "", argv[i]);
    if (len >= sizeof(body))
        die("job body too long");
    /* Priority 1024, no delay, 60 s to run: beanstalkd's usual defaults. */
    n = snprintf(req, sizeof(req), "put 1024 0 60 %zu\r\n%s\r\n", len, body);
    conn_write(c, req, (size_t)n);
}

static void
beanstalk_inserted(struct conn *c)
{
    char *line = conn_line(c);
    if (strncmp(line, "INSERTED ", 9) != 0)
        die("beanstalkd: put: %s", line);
}

static pid_t
spawn_quiet(char *const argv[], char *const envp[], int devnull)
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int rc;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, devnull, 0);
    posix_spawn_file_actions_adddup2(&fa, devnull, 1);
    posix_spawn_file_actions_adddup2(&fa, devnull, 2);
    rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        die("spawn %s: %s", argv[0], strerror(rc));
    return pid;
}

static int
wait_status(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            die("waitpid: %s", strerror(errno));
    return status;
}

static void
client_open(const struct target *t, struct client *cl)
{
    memset(cl, 0, sizeof(*cl));
    cl->t = t;
    if (t->kind != KIND_CLI)
        cl->c = conn_open(t->sock);
    if ((cl->devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
        die("/dev/null: %s", strerror(errno));
}

static void
client_close(struct client *cl)
{
    conn_free(cl->c);
    close(cl->devnull);
}

/* Submits job i (its argv) and returns once the system acknowledged it. */
static void
client_submit(struct client *cl, char *const argv[], long i)
{
    const struct target *t = cl->t;

    switch (t->kind) {
    case KIND_JOBQ: {
        char params[DRIVE_LINE_MAX];
        size_t len = 0;
        cJSON *root;
        json_spec(params, sizeof(params), &len, argv);
        jobq_call(cl, "submit", params, &root);
        cJSON_Delete(root);
        break;
    }
    case KIND_BEANSTALK:
        beanstalk_put(cl->c, argv);
        beanstalk_inserted(cl->c);
        break;
    case KIND_CLI: {
        char *av[DRIVE_MAX_ARGS * 2], *envbuf[1024], var[512];
        char **envp = environ;
        int n = 0, status;

        for (int k = 0; k < t->nprefix && n < DRIVE_MAX_ARGS; k++)
            av[n++] = t->prefix[k];
        for (int k = 0; argv[k] != NULL && n < 2 * DRIVE_MAX_ARGS - 1; k++)
            av[n++] = argv[k];
        av[n] = NULL;
        if (t->env_name[0] != '\0') {
            int e = 0;
            size_t nl = strlen(t->env_name);
            snprintf(var, sizeof(var), "%s=%s%ld", t->env_name, t->env_prefix, i % t->env_count);
            for (char **p = environ; *p != NULL && e < 1022; p++)
                if (strncmp(*p, t->env_name, nl) != 0 || (*p)[nl] != '=')
                    envbuf[e++] = *p;
            envbuf[e++] = var;
            envbuf[e] = NULL;
            envp = envbuf;
        }
        status = wait_status(spawn_quiet(av, envp, cl->devnull));
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            die("%s exited with status %d", av[0], status);
        break;
    }
    }
}

/* --- enqueue --- */

struct enq_arg {
    struct client cl;
    long from, to, done;
    int64_t until; /* mono_ns; 0: no time limit */
    pthread_barrier_t *go;
};

/* The job of `enqueue`: /bin/true, or $DRIVE_JOB split on spaces with
 * "%d" in an argument replaced by the job's index (set-ups of the memory
 * and kill -9 workloads: "/bin/sleep 60", "STAMP DIR/k.%d"). */
static void
enq_job(long i, char *argv[DRIVE_MAX_ARGS], char *buf, size_t cap)
{
    const char *spec = getenv("DRIVE_JOB");
    char *save = NULL, *tok;
    size_t len = 0;
    int n = 0;

    if (spec == NULL || spec[0] == '\0')
        spec = "/bin/true";
    for (const char *p = spec; *p != '\0' && len + 24 < cap; p++) {
        if (p[0] == '%' && p[1] == 'd') {
            len += (size_t)snprintf(buf + len, cap - len, "%ld", i);
            p++;
        } else {
            buf[len++] = *p;
        }
    }
    buf[len] = '\0';
    for (tok = strtok_r(buf, " ", &save); tok && n < DRIVE_MAX_ARGS - 1;
         tok = strtok_r(NULL, " ", &save))
        argv[n++] = tok;
    argv[n] = NULL;
}

static void *
enq_thread(void *p)
{
    struct enq_arg *a = p;
    char *argv[DRIVE_MAX_ARGS], buf[DRIVE_LINE_MAX];

    pthread_barrier_wait(a->go);
    for (long i = a->from; i < a->to; i++) {
        if (a->until != 0 && mono_ns() >= a->until)
            break;
        enq_job(i, argv, buf, sizeof(buf));
        client_submit(&a->cl, argv, i);
        a->done++;
    }
    return NULL;
}

static int
cmd_enqueue(const struct target *t, long n, int clients)
{
    static struct enq_arg args[DRIVE_MAX_CLIENTS];
    pthread_t th[DRIVE_MAX_CLIENTS];
    pthread_barrier_t go;
    int64_t t0, t1, r0, until = 0;
    const char *max = getenv("DRIVE_MAX_SECONDS");
    long done = 0;

    if (clients < 1 || clients > DRIVE_MAX_CLIENTS)
        die("clients: 1 to %d", DRIVE_MAX_CLIENTS);
    pthread_barrier_init(&go, NULL, (unsigned)clients + 1);
    for (int i = 0; i < clients; i++) {
        client_open(t, &args[i].cl);
        args[i].from = n * i / clients;
        args[i].to = n * (i + 1) / clients;
        args[i].go = &go;
        if (pthread_create(&th[i], NULL, enq_thread, &args[i]) != 0)
            die("pthread_create failed");
    }
    r0 = real_ns();
    t0 = mono_ns();
    if (max != NULL && atof(max) > 0)
        until = t0 + (int64_t)(atof(max) * 1e9);
    for (int i = 0; i < clients; i++)
        args[i].until = until;
    pthread_barrier_wait(&go);
    for (int i = 0; i < clients; i++)
        pthread_join(th[i], NULL);
    t1 = mono_ns();
    for (int i = 0; i < clients; i++) {
        client_close(&args[i].cl);
        done += args[i].done;
    }
    printf("rate %.1f\nn %ld\n", (double)done * 1e9 / (double)(t1 - t0), done);
    printf("t0 %lld\nt1 %lld\n", (long long)r0, (long long)(r0 + (t1 - t0)));
    return 0;
}

/* --- latency --- */

/* Waits for DIR/name to be closed after writing; returns its stamp. */
static int64_t
await_stamp(int ino, const char *dir, const char *name)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    char path[1024], text[64];
    int64_t deadline = mono_ns() + (int64_t)DRIVE_START_TIMEOUT_MS * 1000000;
    ssize_t r;
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    for (;;) {
        struct pollfd pfd = {.fd = ino, .events = POLLIN};
        int left = (int)((deadline - mono_ns()) / 1000000);
        bool seen = false;

        if (left <= 0 || poll(&pfd, 1, left) == 0)
            die("job %s did not start within %d ms", name, DRIVE_START_TIMEOUT_MS);
        if ((r = read(ino, buf, sizeof(buf))) < 0) {
            if (errno == EINTR)
                continue;
            die("inotify read: %s", strerror(errno));
        }
        for (char *p = buf; p < buf + r;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            if (ev->len > 0 && strcmp(ev->name, name) == 0)
                seen = true;
            p += sizeof(*ev) + ev->len;
        }
        if (seen)
            break;
    }
    if ((f = fopen(path, "r")) == NULL || fgets(text, sizeof(text), f) == NULL)
        die("%s: unreadable stamp", path);
    fclose(f);
    return strtoll(text, NULL, 10);
}

static int
cmd_latency(const struct target *t, long n, const char *stamp, const char *dir)
{
    struct client cl;
    int64_t *start, *ack;
    int ino;

    if (n < 1)
        die("latency needs at least one sample");
    if ((ino = inotify_init1(IN_CLOEXEC)) < 0 ||
        inotify_add_watch(ino, dir, IN_CLOSE_WRITE | IN_MOVED_TO) < 0)
        die("inotify on %s: %s", dir, strerror(errno));
    start = calloc((size_t)n, sizeof(*start));
    ack = calloc((size_t)n, sizeof(*ack));
    if (start == NULL || ack == NULL)
        die("out of memory");
    client_open(t, &cl);
    for (long i = 0; i < n; i++) {
        char name[64], path[1024];
        char *argv[] = {(char *)stamp, path, NULL};
        int64_t t0;

        snprintf(name, sizeof(name), "lat.%ld", i);
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        t0 = real_ns();
        client_submit(&cl, argv, i);
        ack[i] = real_ns() - t0;
        start[i] = await_stamp(ino, dir, name) - t0;
        usleep(DRIVE_LATENCY_GAP_US);
    }
    client_close(&cl);
    qsort(start, (size_t)n, sizeof(*start), cmp_i64);
    qsort(ack, (size_t)n, sizeof(*ack), cmp_i64);
    printf("start_latency_p50_us %.0f\n", (double)pct(start, (size_t)n, 50) / 1000.0);
    printf("start_latency_p99_us %.0f\n", (double)pct(start, (size_t)n, 99) / 1000.0);
    printf("ack_latency_p50_us %.0f\n", (double)pct(ack, (size_t)n, 50) / 1000.0);
    return 0;
}

/* --- beanstalkd worker --- */

struct worker {
    const char *sock;
    atomic_long *done;
    atomic_long target; /* exit the process when done reaches it; 0: never */
    _Atomic int64_t t0_mono;
};

/* Prints the exec rate and ends the process once every job is done. */
static void
worker_check_done(struct worker *w)
{
    static atomic_flag printed = ATOMIC_FLAG_INIT;
    long target = atomic_load(&w->target);

    if (target > 0 && atomic_load(w->done) >= target && !atomic_flag_test_and_set(&printed)) {
        int64_t dt = mono_ns() - w->t0_mono;
        printf("rate %.1f\nn %ld\n", (double)target * 1e9 / (double)dt, target);
        fflush(stdout);
        _exit(0);
    }
}

static void
worker_run_body(char *body, int devnull)
{
    char *argv[DRIVE_MAX_ARGS], *save = NULL;
    int n = 0;

    for (char *tok = strtok_r(body, " ", &save); tok && n < DRIVE_MAX_ARGS - 1;
         tok = strtok_r(NULL, " ", &save))
        argv[n++] = tok;
    argv[n] = NULL;
    if (n == 0)
        die("empty job body");
    /* The job's exit status is the job's business, as in any worker that
     * deletes what it ran; the benchmark only needs it to have run. */
    wait_status(spawn_quiet(argv, environ, devnull));
}

static void *
worker_thread(void *p)
{
    struct worker *w = p;
    struct conn *c = conn_open(w->sock);
    char body[DRIVE_LINE_MAX + 2], req[64];
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);

    for (;;) {
        unsigned long long id;
        size_t len;
        char *line;
        int n;

        conn_write(c, "reserve\r\n", 9);
        line = conn_line(c);
        if (sscanf(line, "RESERVED %llu %zu", &id, &len) != 2)
            die("beanstalkd: reserve: %s", line);
        if (len > DRIVE_LINE_MAX)
            die("job body of %zu bytes", len);
        conn_bytes(c, body, len + 2);
        body[len] = '\0';
        worker_run_body(body, devnull);
        n = snprintf(req, sizeof(req), "delete %llu\r\n", id);
        conn_write(c, req, (size_t)n);
        line = conn_line(c);
        if (strcmp(line, "DELETED") != 0)
            die("beanstalkd: delete: %s", line);
        atomic_fetch_add(w->done, 1);
        worker_check_done(w);
    }
    return NULL;
}

static void
workers_start(struct worker *w, int conc)
{
    for (int i = 0; i < conc; i++) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        /* A worker thread needs little stack: keep 200 of them cheap. */
        pthread_attr_setstacksize(&attr, 64 * 1024);
        if (pthread_create(&th, &attr, worker_thread, w) != 0)
            die("pthread_create failed");
        pthread_attr_destroy(&attr);
    }
}

static int
cmd_work(const char *sock, int conc)
{
    static atomic_long done;
    static struct worker w;

    w.sock = sock;
    w.done = &done;
    workers_start(&w, conc);
    for (;;)
        pause();
    return 0;
}

/* --- exec --- */

static int
exec_beanstalk(const char *sock, long n, int conc)
{
    static atomic_long done;
    static struct worker w;
    char *argv[] = {"/bin/true", NULL};
    struct conn *c = conn_open(sock);
    const char *max = getenv("DRIVE_MAX_SECONDS");
    long sent = 0, acked = 0;
    int64_t until = 0;

    w.sock = sock;
    w.done = &done;
    workers_start(&w, conc);
    usleep(200000); /* every worker connected and blocked in reserve */
    w.t0_mono = mono_ns();
    if (max != NULL && atof(max) > 0)
        until = w.t0_mono + (int64_t)(atof(max) * 1e9);
    do {
        while (sent < n && sent - acked < DRIVE_PUT_WINDOW &&
               (until == 0 || sent == 0 || mono_ns() < until)) {
            beanstalk_put(c, argv);
            sent++;
        }
        beanstalk_inserted(c);
        acked++;
    } while (acked < sent);
    /* Now the count is known; the worker that deletes the last job
     * prints and ends the process, or this thread if that was before. */
    atomic_store(&w.target, acked);
    worker_check_done(&w);
    for (;;)
        pause();
    return 0;
}

static int
exec_jobq(const char *sock, long n, int batch)
{
    struct target t = {.kind = KIND_JOBQ, .sock = sock};
    char *argv[] = {"/bin/true", NULL};
    size_t cap = (size_t)(batch > DRIVE_WAIT_IDS ? batch : DRIVE_WAIT_IDS) * 40 + 64;
    char *params = malloc(cap);
    int64_t *ids = calloc((size_t)n, sizeof(*ids));
    struct client cl;
    long nids = 0, failed = 0;
    int64_t t0;

    if (params == NULL || ids == NULL)
        die("out of memory");
    client_open(&t, &cl);
    t0 = mono_ns();
    for (long done = 0; done < n;) {
        long k = n - done < batch ? n - done : batch;
        size_t len = (size_t)snprintf(params, cap, "{\"jobs\":[");
        cJSON *root, *res, *job;

        for (long i = 0; i < k; i++) {
            if (i > 0)
                params[len++] = ',';
            json_spec(params, cap, &len, argv);
        }
        len += (size_t)snprintf(params + len, cap - len, "]}");
        res = jobq_call(&cl, "submit", params, &root);
        cJSON_ArrayForEach (job, cJSON_GetObjectItem(res, "jobs")) {
            if (nids < n)
                ids[nids++] = (int64_t)cJSON_GetObjectItem(job, "id")->valuedouble;
        }
        cJSON_Delete(root);
        done += k;
    }
    if (nids != n)
        die("submitted %ld jobs, got %ld ids", n, nids);
    for (long i = 0; i < n; i += DRIVE_WAIT_IDS) {
        long k = n - i < DRIVE_WAIT_IDS ? n - i : DRIVE_WAIT_IDS;
        size_t len = (size_t)snprintf(params, cap, "{\"ids\":[");
        cJSON *root, *res, *job;

        for (long j = 0; j < k; j++)
            len += (size_t)snprintf(params + len, cap - len, "%s%lld", j ? "," : "",
                                    (long long)ids[i + j]);
        len += (size_t)snprintf(params + len, cap - len, "]}");
        if (len >= cap)
            die("wait request too long");
        res = jobq_call(&cl, "wait", params, &root);
        if (cJSON_IsTrue(cJSON_GetObjectItem(res, "timed_out")))
            die("wait timed out");
        cJSON_ArrayForEach (job, cJSON_GetObjectItem(res, "jobs")) {
            const char *st = cJSON_GetStringValue(cJSON_GetObjectItem(job, "state"));
            if (st == NULL || strcmp(st, "succeeded") != 0)
                failed++;
        }
        cJSON_Delete(root);
    }
    printf("rate %.1f\n", (double)n * 1e9 / (double)(mono_ns() - t0));
    if (failed > 0)
        printf("failed %ld\n", failed);
    client_close(&cl);
    free(params);
    free(ids);
    return 0;
}

/* --- count --- */

static long
yaml_num(const char *text, const char *key)
{
    char pat[128];
    const char *p;

    snprintf(pat, sizeof(pat), "\n%s: ", key);
    if ((p = strstr(text, pat)) == NULL)
        die("beanstalkd stats without %s", key);
    return strtol(p + strlen(pat), NULL, 10);
}

static int
cmd_count(const struct target *t)
{
    struct client cl;

    client_open(t, &cl);
    if (t->kind == KIND_JOBQ) {
        cJSON *root, *res = jobq_call(&cl, "stats", NULL, &root), *st, *v;
        long total = 0;
        st = cJSON_GetObjectItem(res, "states");
        cJSON_ArrayForEach (v, st)
            total += (long)v->valuedouble;
        printf("total %ld\nqueued %ld\nrunning %ld\nsucceeded %ld\n", total,
               (long)cJSON_GetObjectItem(st, "queued")->valuedouble,
               (long)cJSON_GetObjectItem(res, "running")->valuedouble,
               (long)cJSON_GetObjectItem(st, "succeeded")->valuedouble);
        cJSON_Delete(root);
    } else if (t->kind == KIND_BEANSTALK) {
        char *line, *text;
        size_t len;
        long ready, reserved, delayed, buried;

        conn_write(cl.c, "stats\r\n", 7);
        line = conn_line(cl.c);
        if (sscanf(line, "OK %zu", &len) != 1)
            die("beanstalkd: stats: %s", line);
        if ((text = malloc(len + 3)) == NULL)
            die("out of memory");
        text[0] = '\n';
        conn_bytes(cl.c, text + 1, len + 2);
        text[len + 1] = '\0';
        ready = yaml_num(text, "current-jobs-ready");
        reserved = yaml_num(text, "current-jobs-reserved");
        delayed = yaml_num(text, "current-jobs-delayed");
        buried = yaml_num(text, "current-jobs-buried");
        printf("total %ld\nqueued %ld\nrunning %ld\n", ready + reserved + delayed + buried, ready,
               reserved);
        free(text);
    } else {
        die("count: jobq or beanstalk");
    }
    client_close(&cl);
    return 0;
}

/* --- raw spawn rate --- */

static atomic_bool raw_stop;
static atomic_long raw_spawned;

static void *
raw_thread(void *p)
{
    char *argv[] = {"/bin/true", NULL};
    long n = 0;

    while (!atomic_load_explicit(&raw_stop, memory_order_relaxed)) {
        pid_t pid;
        int rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
        if (rc != 0)
            die("posix_spawn: %s", strerror(rc));
        wait_status(pid);
        n++;
    }
    atomic_fetch_add(&raw_spawned, n);
    return p;
}

static int
cmd_raw(double secs, int workers)
{
    pthread_t th[DRIVE_MAX_CLIENTS];
    int64_t t0;

    if (workers < 1 || workers > DRIVE_MAX_CLIENTS)
        die("workers: 1 to %d", DRIVE_MAX_CLIENTS);
    t0 = mono_ns();
    for (int i = 0; i < workers; i++)
        if (pthread_create(&th[i], NULL, raw_thread, NULL) != 0)
            die("pthread_create failed");
    usleep((useconds_t)(secs * 1e6));
    atomic_store(&raw_stop, true);
    for (int i = 0; i < workers; i++)
        pthread_join(th[i], NULL);
    printf("rate %.1f\n", (double)atomic_load(&raw_spawned) * 1e9 / (double)(mono_ns() - t0));
    return 0;
}

/* --- processes of one system --- */

struct proc_info {
    long pid, ppid, rss, pss;
    bool tagged;
    char comm[64];
};

/* Whether /proc/PID/environ holds the entry tag (NAME=VALUE). */
static bool
proc_tagged(long pid, const char *tag, char *env, size_t cap)
{
    size_t tl = strlen(tag);
    char path[64];
    ssize_t n = 0, r;
    int fd;

    snprintf(path, sizeof(path), "/proc/%ld/environ", pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return false;
    /* The kernel hands environ out a page per read. */
    while (n < (ssize_t)cap - 1 && (r = read(fd, env + n, cap - 1 - (size_t)n)) > 0)
        n += r;
    close(fd);
    env[n > 0 ? n : 0] = '\0';
    for (ssize_t off = 0; off < n; off += (ssize_t)strlen(env + off) + 1)
        if (strncmp(env + off, tag, tl) == 0 && env[off + (ssize_t)tl] == '\0')
            return true;
    return false;
}

static void
proc_read(struct proc_info *p)
{
    char path[64], line[256];
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%ld/status", p->pid);
    if ((f = fopen(path, "r")) != NULL) {
        while (fgets(line, sizeof(line), f) != NULL) {
            sscanf(line, "Name: %63s", p->comm);
            sscanf(line, "PPid: %ld", &p->ppid);
            sscanf(line, "VmRSS: %ld", &p->rss);
        }
        fclose(f);
    }
    snprintf(path, sizeof(path), "/proc/%ld/smaps_rollup", p->pid);
    if ((f = fopen(path, "r")) != NULL) {
        while (fgets(line, sizeof(line), f) != NULL)
            sscanf(line, "Pss: %ld", &p->pss);
        fclose(f);
    }
}

/* "pid comm rss_kib pss_kib" for every process whose environment holds
 * the entry TAG (NAME=VALUE), or that descends from (or is) one of the
 * ROOTS pids: bench/peers.sh starts each system with its own tag, so this
 * finds the daemon and every process it or its CLI left behind, and
 * nothing else on a shared machine. The roots are for daemons that
 * overwrite their environment with their process titles (redis-server,
 * PostgreSQL). */
static int
cmd_procs(const char *tag, char **roots, int nroots)
{
    size_t cap = 1 << 20, n = 0, max = 1024;
    struct proc_info *ps = malloc(max * sizeof(*ps));
    char *env = malloc(cap);
    struct dirent *de;
    DIR *proc;

    if (env == NULL || ps == NULL || (proc = opendir("/proc")) == NULL)
        die("/proc: %s", strerror(errno));
    while ((de = readdir(proc)) != NULL) {
        long pid = strtol(de->d_name, NULL, 10);

        if (pid <= 0 || pid == (long)getpid())
            continue;
        if (n == max && (ps = realloc(ps, (max *= 2) * sizeof(*ps))) == NULL)
            die("out of memory");
        memset(&ps[n], 0, sizeof(ps[n]));
        ps[n].pid = pid;
        strcpy(ps[n].comm, "?");
        ps[n].tagged = proc_tagged(pid, tag, env, cap);
        proc_read(&ps[n]);
        n++;
    }
    closedir(proc);
    for (size_t i = 0; i < n; i++) {
        bool in = ps[i].tagged;
        long p = ps[i].pid;

        /* Up the parent chain to a root, a few levels at most. */
        for (int depth = 0; nroots > 0 && !in && p > 1 && depth < 16; depth++) {
            for (int k = 0; k < nroots; k++)
                if (atol(roots[k]) == p)
                    in = true;
            for (size_t j = 0; j < n; j++)
                if (ps[j].pid == p) {
                    p = ps[j].ppid;
                    break;
                }
        }
        if (in)
            printf("%ld %s %ld %ld\n", ps[i].pid, ps[i].comm, ps[i].rss, ps[i].pss);
    }
    free(ps);
    free(env);
    return 0;
}

static void
usage(void)
{
    fprintf(stderr, "usage: drive enqueue KIND TARGET N CLIENTS [-- PREFIX...]\n"
                    "       drive latency KIND TARGET N STAMP DIR [-- PREFIX...]\n"
                    "       drive exec jobq SOCK N BATCH | exec beanstalk SOCK N CONC\n"
                    "       drive work SOCK CONC | count KIND SOCK | raw SECONDS WORKERS\n"
                    "       drive procs NAME=VALUE [PID...]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    struct target t;

    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        usage();
    if (strcmp(argv[1], "enqueue") == 0 && argc >= 6) {
        parse_target(&t, argv[2], argv[3], argc, argv, 6);
        return cmd_enqueue(&t, atol(argv[4]), atoi(argv[5]));
    }
    if (strcmp(argv[1], "latency") == 0 && argc >= 7) {
        parse_target(&t, argv[2], argv[3], argc, argv, 7);
        return cmd_latency(&t, atol(argv[4]), argv[5], argv[6]);
    }
    if (strcmp(argv[1], "exec") == 0 && argc == 6) {
        if (parse_kind(argv[2]) == KIND_JOBQ)
            return exec_jobq(argv[3], atol(argv[4]), atoi(argv[5]));
        if (parse_kind(argv[2]) == KIND_BEANSTALK)
            return exec_beanstalk(argv[3], atol(argv[4]), atoi(argv[5]));
        usage();
    }
    if (strcmp(argv[1], "work") == 0 && argc == 4)
        return cmd_work(argv[2], atoi(argv[3]));
    if (strcmp(argv[1], "count") == 0 && argc == 4) {
        parse_target(&t, argv[2], argv[3], argc, argv, 4);
        return cmd_count(&t);
    }
    if (strcmp(argv[1], "procs") == 0 && argc >= 3)
        return cmd_procs(argv[2], argv + 3, argc - 3);
    if (strcmp(argv[1], "raw") == 0 && argc == 4)
        return cmd_raw(atof(argv[2]), atoi(argv[3]));
    usage();
    return 2;
}
