/*
 * fake_jobqd — a stand-in for jobqd that lets tests drive the real jobq
 * binary without the daemon: a single-threaded Unix-socket server that
 * answers each JSON-RPC request line with a canned reply chosen by method.
 *
 *   fake_jobqd --socket PATH --replies DIR [--log FILE] [--reverse N]
 *              [--refuse CODE] [--hangup] [--garbage] [--stale]
 *
 * Replies: the n-th call of METHOD (counted over the whole run, from 1)
 * answers with DIR/METHOD.n.json if it exists, else DIR/METHOD.json, else
 * method_not_found. A reply file holds {"result": ...} or {"error": {...}}.
 * A string "@params.NAME" anywhere in it is replaced by the request's
 * params.NAME, so one file can echo ids. Notifications get no reply,
 * batches an array, as docs/PROTOCOL.md says.
 *
 * --log FILE    append every request line received to FILE
 * --reverse N   hold replies until N are waiting on the connection (or
 *               none came for a while), then send them newest first: tests
 *               that the client pipelines and matches replies by id; logs
 *               "# flush N" with the number sent at once
 * --refuse CODE answer every connection with one error (id null), close
 * --hangup      close a connection as soon as a request arrives
 * --garbage     answer every request with a line that is not JSON
 * --stale       bind the socket, then exit without removing it (a crashed
 *               daemon's leftover: connect gets ECONNREFUSED)
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define MAX_CONNS 64
#define MAX_METHODS 64
/* Quiet time after the last request before --reverse sends fewer replies
 * than asked for: long, so a slow (sanitized) client still pipelines. */
#define REVERSE_QUIET_MS 2000

struct conn {
    int fd;
    char *buf;
    size_t len, cap;
    cJSON *held;     /* --reverse: replies not sent yet (array) */
    long long quiet; /* --reverse: send held replies at this monotonic ms */
};

static struct {
    const char *socket, *replies, *log;
    bool hangup, garbage, stale;
    int reverse; /* replies to hold before sending; 0: none */
    int refuse;
    struct {
        char name[64];
        int calls;
    } methods[MAX_METHODS];
    struct conn conns[MAX_CONNS];
} fake;

/* Set by the signal handler: exit the loop and remove the socket. */
static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
    stop = 1;
}

static long long
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
method_call_number(const char *method)
{
    for (int i = 0; i < MAX_METHODS; i++) {
        if (fake.methods[i].name[0] == '\0') {
            snprintf(fake.methods[i].name, sizeof(fake.methods[i].name), "%s", method);
            return ++fake.methods[i].calls;
        }
        if (strcmp(fake.methods[i].name, method) == 0)
            return ++fake.methods[i].calls;
    }
    return 1;
}

static cJSON *
read_json_file(const char *path)
{
    FILE *f = fopen(path, "r");
    char *text = NULL;
    size_t cap = 0, len = 0, n;
    cJSON *j = NULL;

    if (f == NULL)
        return NULL;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 65536;
            text = realloc(text, cap);
            if (text == NULL)
                goto out;
        }
        if ((n = fread(text + len, 1, cap - len, f)) == 0)
            break;
        len += n;
    }
    j = cJSON_ParseWithLength(text, len);
    if (j == NULL)
        fprintf(stderr, "fake_jobqd: %s is not JSON\n", path);
out:
    free(text);
    fclose(f);
    return j;
}

/* Replaces "@params.NAME" strings in j with copies of params.NAME. */
static void
substitute(cJSON *j, const cJSON *params)
{
    cJSON *c = j != NULL ? j->child : NULL;

    while (c != NULL) {
        cJSON *next = c->next;
        if (cJSON_IsString(c) && strncmp(c->valuestring, "@params.", 8) == 0) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(params, c->valuestring + 8);
            cJSON *dup = v != NULL ? cJSON_Duplicate(v, true) : cJSON_CreateNull();
            if (cJSON_IsObject(j))
                cJSON_ReplaceItemInObjectCaseSensitive(j, c->string, dup);
            else
                cJSON_ReplaceItemViaPointer(j, c, dup);
        } else {
            substitute(c, params);
        }
        c = next;
    }
}

static cJSON *
error_reply(const cJSON *id, int code, const char *message)
{
    cJSON *r = cJSON_CreateObject(), *e;

    cJSON_AddStringToObject(r, "jsonrpc", "2.0");
    cJSON_AddItemToObject(r, "id", id != NULL ? cJSON_Duplicate(id, true) : cJSON_CreateNull());
    e = cJSON_AddObjectToObject(r, "error");
    cJSON_AddNumberToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddObjectToObject(e, "data");
    return r;
}

/* The reply to one request object, or NULL for a notification. */
static cJSON *
answer(const cJSON *req)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(req, "id");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(req, "method");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(req, "params");
    char path[4096];
    cJSON *canned, *reply;
    int n;

    if (!cJSON_IsObject(req) || !cJSON_IsString(method))
        return error_reply(NULL, -32600, "invalid request");
    n = method_call_number(method->valuestring);
    if (id == NULL)
        return NULL;
    snprintf(path, sizeof(path), "%s/%s.%d.json", fake.replies, method->valuestring, n);
    if ((canned = read_json_file(path)) == NULL) {
        snprintf(path, sizeof(path), "%s/%s.json", fake.replies, method->valuestring);
        canned = read_json_file(path);
    }
    if (canned == NULL)
        return error_reply(id, -32601, "method not found");
    substitute(canned, params);
    reply = cJSON_CreateObject();
    cJSON_AddStringToObject(reply, "jsonrpc", "2.0");
    cJSON_AddItemToObject(reply, "id", cJSON_Duplicate(id, true));
    if (cJSON_HasObjectItem(canned, "error"))
        cJSON_AddItemToObject(reply, "error",
                              cJSON_DetachItemFromObjectCaseSensitive(canned, "error"));
    else
        cJSON_AddItemToObject(reply, "result",
                              cJSON_DetachItemFromObjectCaseSensitive(canned, "result"));
    cJSON_Delete(canned);
    return reply;
}

static void
send_line(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void
send_json(int fd, const cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    send_line(fd, s);
    send_line(fd, "\n");
    free(s);
}

static void
conn_close(struct conn *c)
{
    close(c->fd);
    free(c->buf);
    cJSON_Delete(c->held);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

static void
log_line(const char *line, size_t len)
{
    FILE *f;

    if (fake.log == NULL || (f = fopen(fake.log, "a")) == NULL)
        return;
    fwrite(line, 1, len, f);
    fputc('\n', f);
    fclose(f);
}

/* Handles one request line; returns false to close the connection. */
static bool
handle_line(struct conn *c, const char *line, size_t len)
{
    cJSON *req, *reply = NULL;

    log_line(line, len);
    if (fake.hangup)
        return false;
    if (fake.garbage) {
        send_line(c->fd, "this is not a JSON-RPC reply\n");
        return true;
    }
    if ((req = cJSON_ParseWithLength(line, len)) == NULL) {
        reply = error_reply(NULL, -32700, "parse error");
    } else if (cJSON_IsArray(req)) {
        const cJSON *r;
        reply = cJSON_CreateArray();
        cJSON_ArrayForEach (r, req) {
            cJSON *one = answer(r);
            if (one != NULL)
                cJSON_AddItemToArray(reply, one);
        }
        if (cJSON_GetArraySize(reply) == 0) {
            cJSON_Delete(reply);
            reply = NULL;
        }
    } else {
        reply = answer(req);
    }
    cJSON_Delete(req);
    if (reply == NULL)
        return true;
    if (fake.reverse) {
        if (c->held == NULL)
            c->held = cJSON_CreateArray();
        cJSON_AddItemToArray(c->held, reply);
        c->quiet = mono_ms() + REVERSE_QUIET_MS;
        if (cJSON_GetArraySize(c->held) >= fake.reverse)
            c->quiet = 0; /* send at the next turn of the loop */
        return true;
    }
    send_json(c->fd, reply);
    cJSON_Delete(reply);
    return true;
}

static void
flush_held(struct conn *c)
{
    int n = cJSON_GetArraySize(c->held);
    char note[64];

    /* Tells a test how many requests were in flight at once. */
    snprintf(note, sizeof(note), "# flush %d", n);
    log_line(note, strlen(note));

    for (int i = n - 1; i >= 0; i--)
        send_json(c->fd, cJSON_GetArrayItem(c->held, i));
    cJSON_Delete(c->held);
    c->held = NULL;
    c->quiet = 0;
}

static void
conn_read(struct conn *c)
{
    ssize_t n;
    char *nl;

    if (c->cap - c->len < 65536) {
        c->cap = c->cap ? c->cap * 2 : 131072;
        c->buf = realloc(c->buf, c->cap);
    }
    n = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (n <= 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)n;
    while ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
        size_t linelen = (size_t)(nl - c->buf);
        if (linelen > 0 && !handle_line(c, c->buf, linelen)) {
            conn_close(c);
            return;
        }
        memmove(c->buf, nl + 1, c->len - linelen - 1);
        c->len -= linelen + 1;
    }
}

static int
listen_on(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "fake_jobqd: socket path too long\n");
        return -1;
    }
    strcpy(sa.sun_path, path);
    unlink(path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror("fake_jobqd: bind");
        return -1;
    }
    if (fake.stale) {
        close(fd); /* leaves the socket file: nobody listens on it */
        exit(0);
    }
    if (listen(fd, 64) < 0) {
        perror("fake_jobqd: listen");
        return -1;
    }
    return fd;
}

static void
accept_one(int lfd)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

    if (fd < 0)
        return;
    if (fake.refuse != 0) {
        cJSON *e = error_reply(NULL, fake.refuse, "refused by fake_jobqd");
        send_json(fd, e);
        cJSON_Delete(e);
        close(fd);
        return;
    }
    for (int i = 0; i < MAX_CONNS; i++) {
        if (fake.conns[i].fd < 0) {
            fake.conns[i].fd = fd;
            return;
        }
    }
    close(fd);
}

static int
serve(int lfd)
{
    while (!stop) {
        struct pollfd pfd[MAX_CONNS + 1];
        int idx[MAX_CONNS + 1], n = 0, timeout = -1;
        long long now = mono_ms();

        pfd[n].fd = lfd;
        pfd[n].events = POLLIN;
        idx[n++] = -1;
        for (int i = 0; i < MAX_CONNS; i++) {
            struct conn *c = &fake.conns[i];
            if (c->fd < 0)
                continue;
            if (c->held != NULL) {
                long long left = c->quiet - now;
                if (left < 0)
                    left = 0;
                if (timeout < 0 || left < timeout)
                    timeout = (int)left;
            }
            pfd[n].fd = c->fd;
            pfd[n].events = POLLIN;
            idx[n++] = i;
        }
        if (poll(pfd, (nfds_t)n, timeout) < 0) {
            if (errno == EINTR)
                continue;
            perror("fake_jobqd: poll");
            return 1;
        }
        for (int k = 0; k < n; k++) {
            if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (idx[k] < 0)
                accept_one(lfd);
            else
                conn_read(&fake.conns[idx[k]]);
        }
        now = mono_ms();
        for (int i = 0; i < MAX_CONNS; i++)
            if (fake.conns[i].fd >= 0 && fake.conns[i].held != NULL && fake.conns[i].quiet <= now)
                flush_held(&fake.conns[i]);
    }
    return 0;
}

static void
usage(void)
{
    fprintf(stderr, "usage: fake_jobqd --socket PATH --replies DIR [--log FILE] [--reverse N]\n"
                    "                  [--refuse CODE] [--hangup] [--garbage] [--stale]\n");
    exit(64);
}

int
main(int argc, char **argv)
{
    struct sigaction sa = {.sa_handler = on_signal};
    int lfd, rc;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--socket") == 0 && i + 1 < argc)
            fake.socket = argv[++i];
        else if (strcmp(a, "--replies") == 0 && i + 1 < argc)
            fake.replies = argv[++i];
        else if (strcmp(a, "--log") == 0 && i + 1 < argc)
            fake.log = argv[++i];
        else if (strcmp(a, "--refuse") == 0 && i + 1 < argc)
            fake.refuse = atoi(argv[++i]);
        else if (strcmp(a, "--reverse") == 0 && i + 1 < argc)
            fake.reverse = atoi(argv[++i]);
        else if (strcmp(a, "--hangup") == 0)
            fake.hangup = true;
        else if (strcmp(a, "--garbage") == 0)
            fake.garbage = true;
        else if (strcmp(a, "--stale") == 0)
            fake.stale = true;
        else
            usage();
    }
    if (fake.socket == NULL || (fake.replies == NULL && !fake.stale))
        usage();
    for (int i = 0; i < MAX_CONNS; i++)
        fake.conns[i].fd = -1;
    /* Die with the test that started us, even if it is killed. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if ((lfd = listen_on(fake.socket)) < 0)
        return 1;
    rc = serve(lfd);
    close(lfd);
    unlink(fake.socket);
    return rc;
}
