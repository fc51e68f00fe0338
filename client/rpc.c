/*
 * rpc — the client's connection to jobqd: socket lookup, NDJSON framing,
 * JSON-RPC ids. Requests get increasing integer ids; a reply that arrives
 * for another request in flight is kept until that request is asked for,
 * so callers may pipeline. A connection-level error (id null: too_large,
 * request_timeout, too_many_connections) ends the connection and is the
 * answer to every request still waiting.
 *
 * The HTTP transport (jobq --url) keeps the same calls: rpc_send queues
 * the request, rpc_recv makes its exchange, one small HTTP/1.1 client
 * (Content-Length or chunked replies, a reply cap, timeouts on every
 * step) on a connection per request, closed after the reply. No libcurl:
 * the client needs one verb of HTTP, and keeps its dependencies to what
 * the daemon has.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "jobq/proto.h"
#include "rpc.h"

/* A reply read while waiting for another one. */
struct rpc_pending {
    int64_t id;
    cJSON *root; /* the whole reply, owned */
    struct rpc_pending *next;
};

struct rpc_http;

struct rpc {
    int fd; /* -1 over HTTP */
    int64_t next_id;
    char *buf; /* read buffer; unconsumed bytes are [off, len) */
    size_t off, len, cap;
    struct rpc_pending *stash;
    bool closed;           /* the daemon ended the connection */
    struct rpc_error last; /* its connection-level error, if any */
    struct rpc_http *http; /* the HTTP transport, NULL for the socket */
};

void
rpc_error_clear(struct rpc_error *e)
{
    if (e == NULL)
        return;
    cJSON_Delete(e->data);
    memset(e, 0, sizeof(*e));
}

static int
path_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static int
copy_path(char *buf, size_t len, const char *p)
{
    if (snprintf(buf, len, "%s", p) >= (int)len)
        return -ENAMETOOLONG;
    return 0;
}

int
rpc_socket_path(const struct rpc_where *w, char *buf, size_t len, bool *fallback)
{
    char user[4096];

    *fallback = false;
    if (w->flag != NULL && w->flag[0] != '\0')
        return copy_path(buf, len, w->flag);
    if (w->env != NULL && w->env[0] != '\0')
        return copy_path(buf, len, w->env);
    if (path_exists(RPC_CHECKOUT_SOCKET))
        return copy_path(buf, len, RPC_CHECKOUT_SOCKET);
    /* The XDG spec says a relative $XDG_STATE_HOME is invalid and ignored. */
    user[0] = '\0';
    if (w->xdg_state != NULL && w->xdg_state[0] == '/')
        snprintf(user, sizeof(user), "%s/jobq/jobq.sock", w->xdg_state);
    else if (w->home != NULL && w->home[0] != '\0')
        snprintf(user, sizeof(user), "%s/.local/state/jobq/jobq.sock", w->home);
    if (user[0] != '\0' && path_exists(user))
        return copy_path(buf, len, user);
    *fallback = !path_exists(RPC_SYSTEM_SOCKET);
    return copy_path(buf, len, RPC_SYSTEM_SOCKET);
}

/* Fills sa for path. A path too long for sun_path is reached through an
 * O_PATH descriptor of its directory (*dirfd, closed by the caller after
 * connect), so deep temporary directories work. */
static int
sockaddr_fill(const char *path, struct sockaddr_un *sa, int *dirfd)
{
    char dir[4096];
    const char *base;
    size_t dirlen;

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    *dirfd = -1;
    if (strlen(path) < sizeof(sa->sun_path)) {
        memcpy(sa->sun_path, path, strlen(path) + 1);
        return 0;
    }
    if ((base = strrchr(path, '/')) == NULL || (dirlen = (size_t)(base - path)) >= sizeof(dir))
        return -ENAMETOOLONG;
    memcpy(dir, path, dirlen);
    dir[dirlen] = '\0';
    if ((*dirfd = open(dirlen ? dir : "/", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
        return -errno;
    if (snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/%s", *dirfd, base + 1) >=
        (int)sizeof(sa->sun_path))
        return -ENAMETOOLONG;
    return 0;
}

int
rpc_connect(const char *path, struct rpc **out)
{
    struct sockaddr_un sa;
    struct rpc *r;
    int rc, dirfd = -1;

    if ((r = calloc(1, sizeof(*r))) == NULL)
        return -ENOMEM;
    r->next_id = 1;
    if ((r->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        rc = -errno;
        goto out;
    }
    if ((rc = sockaddr_fill(path, &sa, &dirfd)) < 0)
        goto out;
    if (connect(r->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        rc = -errno;
        goto out;
    }
    *out = r;
    r = NULL; /* the caller owns it now */
    rc = 0;
out:
    if (dirfd >= 0)
        close(dirfd);
    rpc_free(r);
    return rc;
}

/* ---- HTTP: the transport and its URL ----------------------------------- */

/* A request rpc_send queued and rpc_recv makes. */
struct http_out {
    int64_t id;
    char *method;
    cJSON *params; /* owned; NULL: none */
    struct http_out *next;
};

struct rpc_http {
    char host[256];      /* for getaddrinfo: without the brackets of [IPv6] */
    char port[8];        /* "80" unless the URL says */
    char authority[300]; /* the Host header: HOST[:PORT] as in the URL */
    char path[1024];     /* PREFIX/rpc */
    char *token;         /* owned, a secret; NULL: none */
    size_t token_len;
    struct http_out *queue;
    int status;       /* of the last reply that was not 200; 0: none came */
    char reason[64];  /* its reason phrase */
    char detail[320]; /* more on a transport failure */
};

static void
http_out_free(struct http_out *o)
{
    if (o == NULL)
        return;
    free(o->method);
    cJSON_Delete(o->params);
    free(o);
}

static void
http_free(struct rpc_http *hp)
{
    if (hp == NULL)
        return;
    while (hp->queue != NULL) {
        struct http_out *o = hp->queue;
        hp->queue = o->next;
        http_out_free(o);
    }
    if (hp->token != NULL) {
        explicit_bzero(hp->token, hp->token_len);
        free(hp->token);
    }
    free(hp);
}

/* Characters of a URL path that need no thought: RFC 3986's unreserved,
 * sub-delims, ':' '@' '/' and percent escapes. */
static bool
path_char(char ch)
{
    return isalnum((unsigned char)ch) || strchr("-._~!$&'()*+,;=:@/%", ch) != NULL;
}

/* http://HOST[:PORT][/PREFIX] into hp. */
static int
url_parse(struct rpc_http *hp, const char *url, char *why, size_t whylen)
{
    const char *auth, *end, *host, *host_end, *p, *path;
    size_t n;

    if (strncasecmp(url, "https://", 8) == 0) {
        snprintf(why, whylen,
                 "https is not spoken by jobq itself: reach jobqd through a tunnel or a TLS "
                 "proxy on this machine and give its http:// address (docs/PROTOCOL.md)");
        return -EINVAL;
    }
    if (strncasecmp(url, "http://", 7) != 0) {
        snprintf(why, whylen, "expected http://HOST:PORT (jobqd's --http address)");
        return -EINVAL;
    }
    auth = url + 7;
    end = auth + strcspn(auth, "/?#");
    if (memchr(auth, '@', (size_t)(end - auth)) != NULL) {
        snprintf(why, whylen, "no user or password in the URL: the token goes in --token-file");
        return -EINVAL;
    }
    if (strpbrk(end, "?#") != NULL) {
        snprintf(why, whylen, "no query or fragment: the URL is http://HOST[:PORT][/PREFIX]");
        return -EINVAL;
    }
    if (*auth == '[') {
        host = auth + 1;
        if ((host_end = memchr(host, ']', (size_t)(end - host))) == NULL) {
            snprintf(why, whylen, "unclosed '[' around an IPv6 address");
            return -EINVAL;
        }
        p = host_end + 1;
    } else {
        host = auth;
        if ((host_end = memchr(auth, ':', (size_t)(end - auth))) == NULL)
            host_end = end;
        p = host_end;
    }
    if ((n = (size_t)(host_end - host)) == 0 || n >= sizeof(hp->host)) {
        snprintf(why, whylen, n == 0 ? "no host" : "host name too long");
        return -EINVAL;
    }
    memcpy(hp->host, host, n);
    hp->host[n] = '\0';
    snprintf(hp->port, sizeof(hp->port), "80");
    if (p < end) {
        long v = 0;
        const char *d = p + 1;
        if (*p != ':' || d == end) {
            snprintf(why, whylen, "expected :PORT after the host");
            return -EINVAL;
        }
        for (; d < end && isdigit((unsigned char)*d) && v <= 65535; d++)
            v = v * 10 + (*d - '0');
        if (d != end || v < 1 || v > 65535) {
            snprintf(why, whylen, "the port must be a number from 1 to 65535");
            return -EINVAL;
        }
        snprintf(hp->port, sizeof(hp->port), "%ld", v);
    }
    if ((n = (size_t)(end - auth)) >= sizeof(hp->authority)) {
        snprintf(why, whylen, "host name too long");
        return -EINVAL;
    }
    memcpy(hp->authority, auth, n);
    hp->authority[n] = '\0';
    /* The prefix of a proxy that serves jobqd below a path; a URL that
     * already names /rpc is taken as it is. */
    path = end;
    n = strlen(path);
    while (n > 0 && path[n - 1] == '/')
        n--;
    for (size_t i = 0; i < n; i++) {
        if (!path_char(path[i])) {
            snprintf(why, whylen, "byte %zu of the path must be percent-encoded",
                     (size_t)(path + i - url));
            return -EINVAL;
        }
    }
    if (n + sizeof("/rpc") > sizeof(hp->path)) {
        snprintf(why, whylen, "path too long");
        return -EINVAL;
    }
    if (n >= 4 && memcmp(path + n - 4, "/rpc", 4) == 0)
        snprintf(hp->path, sizeof(hp->path), "%.*s", (int)n, path);
    else
        snprintf(hp->path, sizeof(hp->path), "%.*s/rpc", (int)n, path);
    return 0;
}

int
rpc_open_url(const char *url, const char *token, size_t token_len, struct rpc **out, char *why,
             size_t whylen)
{
    struct rpc *r;
    int rc = -ENOMEM;

    if ((r = calloc(1, sizeof(*r))) == NULL)
        return -ENOMEM;
    r->fd = -1;
    r->next_id = 1;
    if ((r->http = calloc(1, sizeof(*r->http))) == NULL)
        goto out;
    if ((rc = url_parse(r->http, url, why, whylen)) < 0)
        goto out;
    if (token != NULL) {
        rc = -ENOMEM;
        if ((r->http->token = malloc(token_len + 1)) == NULL)
            goto out;
        memcpy(r->http->token, token, token_len);
        r->http->token[token_len] = '\0';
        r->http->token_len = token_len;
    }
    *out = r;
    r = NULL; /* the caller owns it now */
    rc = 0;
out:
    rpc_free(r);
    return rc;
}

/* A token file is a line; more than this is not one. */
#define TOKEN_FILE_MAX_BYTES 8192

int
rpc_token_read(const char *path, char **token, size_t *len)
{
    char buf[TOKEN_FILE_MAX_BYTES + 1];
    size_t n = 0;
    int fd, rc = 0;

    *token = NULL;
    *len = 0;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0)
        return -errno;
    while (n < sizeof(buf)) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n == sizeof(buf)) {
        rc = -EMSGSIZE;
        goto out;
    }
    while (n > 0 && strchr(" \t\r\n", buf[n - 1]) != NULL)
        n--;
    rc = n == 0 ? -EINVAL : 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if ((unsigned char)buf[i] < 0x21 || (unsigned char)buf[i] > 0x7e)
            rc = -EINVAL; /* it could not go in a header */
    if (rc == 0 && (*token = malloc(n + 1)) == NULL)
        rc = -ENOMEM;
    if (rc == 0) {
        memcpy(*token, buf, n);
        (*token)[n] = '\0';
        *len = n;
    }
out:
    explicit_bzero(buf, sizeof(buf));
    close(fd);
    return rc;
}

int
rpc_http_status(const struct rpc *r, const char **reason, const char **detail)
{
    *reason = r != NULL && r->http != NULL ? r->http->reason : "";
    *detail = r != NULL && r->http != NULL ? r->http->detail : "";
    return r != NULL && r->http != NULL ? r->http->status : 0;
}

void
rpc_free(struct rpc *r)
{
    if (r == NULL)
        return;
    while (r->stash != NULL) {
        struct rpc_pending *p = r->stash;
        r->stash = p->next;
        cJSON_Delete(p->root);
        free(p);
    }
    if (r->fd >= 0)
        close(r->fd);
    http_free(r->http);
    rpc_error_clear(&r->last);
    free(r->buf);
    free(r);
}

char *
rpc_format_request(int64_t id, const char *method, const cJSON *params)
{
    cJSON *root;
    char *line = NULL;

    if ((root = cJSON_CreateObject()) == NULL)
        return NULL;
    /* A reference, so the caller keeps params. */
    if (cJSON_AddStringToObject(root, "jsonrpc", "2.0") == NULL ||
        cJSON_AddNumberToObject(root, "id", (double)id) == NULL ||
        cJSON_AddStringToObject(root, "method", method) == NULL ||
        (params != NULL && !cJSON_AddItemReferenceToObject(root, "params", (cJSON *)params)))
        goto out;
    line = cJSON_PrintUnformatted(root);
out:
    cJSON_Delete(root);
    return line;
}

static int
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        /* MSG_NOSIGNAL: a daemon that hung up is an error to report, not
         * a SIGPIPE that kills the client silently. */
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int
rpc_send(struct rpc *r, const char *method, cJSON *params, int64_t *id)
{
    char *line;
    size_t n;
    int rc;

    if (r->closed) {
        cJSON_Delete(params);
        return -ECONNRESET;
    }
    line = rpc_format_request(r->next_id, method, params);
    if (r->http == NULL || line == NULL) {
        cJSON_Delete(params);
        params = NULL;
    }
    if (line == NULL)
        return -ENOMEM;
    n = strlen(line);
    if (n > JOBQ_REQUEST_MAX_BYTES) {
        rc = -EMSGSIZE;
        goto out;
    }
    if (r->http != NULL) {
        /* Made by rpc_recv, which may have to change params (a long wait
         * goes in pieces). */
        struct http_out *o = calloc(1, sizeof(*o)), **tail = &r->http->queue;
        if (o == NULL || (o->method = strdup(method)) == NULL) {
            free(o);
            rc = -ENOMEM;
            goto out;
        }
        o->id = r->next_id;
        o->params = params;
        params = NULL;
        while (*tail != NULL)
            tail = &(*tail)->next;
        *tail = o;
        *id = r->next_id++;
        rc = 0;
        goto out;
    }
    line[n] = '\n'; /* cJSON's NUL becomes the terminator of the line */
    if ((rc = write_all(r->fd, line, n + 1)) < 0)
        goto out;
    *id = r->next_id++;
out:
    cJSON_Delete(params);
    free(line);
    return rc;
}

/* Returns the next line in *line (valid until the next call), without its
 * newline or a carriage return before it. */
static int
read_line(struct rpc *r, char **line, size_t *linelen)
{
    size_t scanned = 0;

    for (;;) {
        char *start = r->buf + r->off, *nl = NULL;
        size_t avail = r->len - r->off;
        ssize_t n;

        if (avail > scanned)
            nl = memchr(start + scanned, '\n', avail - scanned);
        if (nl != NULL) {
            *line = start;
            *linelen = (size_t)(nl - start);
            r->off += *linelen + 1;
            if (*linelen > 0 && start[*linelen - 1] == '\r')
                (*linelen)--;
            return 0;
        }
        scanned = avail;
        if (avail > RPC_REPLY_MAX_BYTES)
            return -EMSGSIZE;
        if (r->off > 0) {
            memmove(r->buf, start, avail);
            r->off = 0;
            r->len = avail;
        }
        if (r->cap - r->len < 4096) {
            size_t cap = r->cap ? r->cap * 2 : 65536;
            char *nb;
            if (cap > RPC_REPLY_MAX_BYTES + 65536)
                cap = RPC_REPLY_MAX_BYTES + 65536;
            if (cap <= r->cap)
                return -EMSGSIZE;
            if ((nb = realloc(r->buf, cap)) == NULL)
                return -ENOMEM;
            r->buf = nb;
            r->cap = cap;
        }
        n = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ECONNRESET;
        r->len += (size_t)n;
    }
}

/* Fills e from an "error" member; -EBADMSG if it is not one. */
static int
error_from_json(const cJSON *error, struct rpc_error *e)
{
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(error, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(error, "message");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(error, "data");

    if (!cJSON_IsObject(error) || !cJSON_IsNumber(code))
        return -EBADMSG;
    memset(e, 0, sizeof(*e));
    e->code = (int)code->valuedouble;
    snprintf(e->message, sizeof(e->message), "%s",
             cJSON_IsString(msg) ? msg->valuestring : proto_error_name(e->code));
    if (cJSON_IsObject(data) && (e->data = cJSON_Duplicate(data, true)) == NULL)
        return -ENOMEM;
    return 0;
}

/* Splits a parsed reply (borrowed) into result or error. */
static int
reply_split(cJSON *root, cJSON **result, struct rpc_error *err)
{
    cJSON *error = cJSON_GetObjectItemCaseSensitive(root, "error");
    int rc;

    if (error != NULL) {
        if ((rc = error_from_json(error, err)) < 0)
            return rc;
        return -EREMOTEIO;
    }
    if ((*result = cJSON_DetachItemFromObjectCaseSensitive(root, "result")) == NULL)
        return -EBADMSG;
    return 0;
}

/* Parses and checks the envelope; returns owned *root. */
static int
reply_parse(const char *line, size_t len, cJSON **root, int64_t *id, bool *id_null)
{
    cJSON *j, *v, *idj;

    if ((j = cJSON_ParseWithLength(line, len)) == NULL)
        return -EBADMSG;
    v = cJSON_GetObjectItemCaseSensitive(j, "jsonrpc");
    idj = cJSON_GetObjectItemCaseSensitive(j, "id");
    if (!cJSON_IsObject(j) || !cJSON_IsString(v) || strcmp(v->valuestring, "2.0") != 0 ||
        (!cJSON_IsNumber(idj) && !cJSON_IsNull(idj)) ||
        (cJSON_HasObjectItem(j, "result") == cJSON_HasObjectItem(j, "error"))) {
        cJSON_Delete(j);
        return -EBADMSG;
    }
    *id_null = cJSON_IsNull(idj);
    *id = *id_null ? -1 : (int64_t)idj->valuedouble;
    *root = j;
    return 0;
}

int
rpc_parse_reply(const char *line, size_t len, int64_t *id, bool *id_null, cJSON **result,
                struct rpc_error *err)
{
    cJSON *root;
    int rc;

    if ((rc = reply_parse(line, len, &root, id, id_null)) < 0)
        return rc;
    rc = reply_split(root, result, err);
    cJSON_Delete(root);
    return rc;
}

static int
error_copy(struct rpc_error *dst, const struct rpc_error *src)
{
    *dst = *src;
    dst->data = NULL;
    if (src->data != NULL && (dst->data = cJSON_Duplicate(src->data, true)) == NULL)
        return -ENOMEM;
    return 0;
}

/* Takes root: hands it out if it answers id, else stashes it. */
static int
stash_put(struct rpc *r, int64_t id, cJSON *root)
{
    struct rpc_pending *p;

    if ((p = calloc(1, sizeof(*p))) == NULL) {
        cJSON_Delete(root);
        return -ENOMEM;
    }
    p->id = id;
    p->root = root;
    p->next = r->stash;
    r->stash = p;
    return 0;
}

/* Returns the stashed reply for id (owned), or NULL. */
static cJSON *
stash_take(struct rpc *r, int64_t id)
{
    for (struct rpc_pending **pp = &r->stash; *pp != NULL; pp = &(*pp)->next) {
        struct rpc_pending *p = *pp;
        if (p->id == id) {
            cJSON *root = p->root;
            *pp = p->next;
            free(p);
            return root;
        }
    }
    return NULL;
}

/* ---- HTTP: one exchange ------------------------------------------------ */

/* Connecting, sending, and a reply that has begun: each may go this long
 * without progress. */
#define HTTP_CONNECT_MS 10000
#define HTTP_STALL_MS 30000
/* The first byte of a reply may take the time the request is held plus
 * this: a daemon committing a large batch, a proxy that is slow. */
#define HTTP_REPLY_MS 60000
/* Status line and headers of a reply: evhttp sends about 150 bytes. */
#define HTTP_HEADERS_MAX_BYTES (64 * 1024)
/* TCP keepalive, for held requests: a peer gone silent (a NAT that
 * dropped the flow) is noticed after IDLE + INTVL * CNT seconds. */
#define HTTP_KEEPIDLE_S 30
#define HTTP_KEEPINTVL_S 10
#define HTTP_KEEPCNT 3

static int64_t
http_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for events: > 0, -ETIMEDOUT at deadline (a
 * http_now_ms time), or -errno. */
static int
http_wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int64_t left = deadline - http_now_ms();
        int n;

        if (left <= 0)
            return -ETIMEDOUT;
        if ((n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left)) > 0)
            return n;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

/* Connects to the first address of the host that answers. */
static int
http_connect(struct rpc_http *hp, int *out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    int fd = -1, rc, err = -EHOSTUNREACH, one = 1;

    if ((rc = getaddrinfo(hp->host, hp->port, &hints, &ai)) != 0) {
        snprintf(hp->detail, sizeof(hp->detail), "cannot resolve %s: %s", hp->host,
                 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return -ENXIO;
    }
    for (struct addrinfo *a = ai; a != NULL; a = a->ai_next) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);

        if ((fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                         a->ai_protocol)) < 0) {
            err = -errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        if (errno != EINPROGRESS) {
            err = -errno;
        } else if ((rc = http_wait_fd(fd, POLLOUT, http_now_ms() + HTTP_CONNECT_MS)) < 0) {
            err = rc;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
            err = -(soerr != 0 ? soerr : errno);
        } else {
            break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        if (err == -ETIMEDOUT)
            snprintf(hp->detail, sizeof(hp->detail), "no answer within %d s to connecting",
                     HTTP_CONNECT_MS / 1000);
        return err;
    }
    /* A held `wait` sends nothing for minutes; keepalive notices a peer
     * that vanished without a word. Best effort. */
    int idle = HTTP_KEEPIDLE_S, intvl = HTTP_KEEPINTVL_S, cnt = HTTP_KEEPCNT;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    *out = fd;
    return 0;
}

static int
http_send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        int rc;

        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno != EAGAIN)
            return -errno;
        if ((rc = http_wait_fd(fd, POLLOUT, http_now_ms() + HTTP_STALL_MS)) < 0)
            return rc;
    }
    return 0;
}

/* A growing byte buffer. */
struct hbuf {
    char *p;
    size_t len, cap;
};

/* Makes room for more bytes, keeping at most max. */
static int
hbuf_room(struct hbuf *b, size_t more, size_t max)
{
    size_t cap = b->cap ? b->cap : 16384;
    char *np;

    if (b->len + more > max)
        return -EMSGSIZE;
    while (cap < b->len + more + 1)
        cap *= 2;
    if (cap > max + 1)
        cap = max + 1;
    if (cap == b->cap)
        return 0;
    if ((np = realloc(b->p, cap)) == NULL)
        return -ENOMEM;
    b->p = np;
    b->cap = cap;
    return 0;
}

/* Reads what is there (waiting up to deadline); returns the byte count,
 * 0 at the end of the stream, or -errno. */
static ssize_t
http_read(int fd, struct hbuf *b, size_t max, int64_t deadline)
{
    int rc;

    if ((rc = hbuf_room(b, b->len < max ? (max - b->len < 16384 ? max - b->len : 16384) : 1, max)) <
        0)
        return rc;
    for (;;) {
        ssize_t n = recv(fd, b->p + b->len, b->cap - 1 - b->len, 0);
        if (n >= 0) {
            b->len += (size_t)n;
            b->p[b->len] = '\0';
            return n;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return -errno;
        if ((rc = http_wait_fd(fd, POLLIN, deadline)) < 0)
            return rc;
    }
}

/* Decodes the chunks of raw from *pos on into body (chunked transfer
 * coding, RFC 9112 7.1): 1 once the last chunk and the trailer are in, 0
 * for more, -EBADMSG, -EMSGSIZE past RPC_REPLY_MAX_BYTES. */
static int
dechunk(const struct hbuf *raw, size_t *pos, struct hbuf *body)
{
    for (;;) {
        const char *p = raw->p + *pos, *end = raw->p + raw->len, *eol, *t;
        size_t size = 0, i = 0;
        int rc;

        if ((eol = memmem(p, (size_t)(end - p), "\r\n", 2)) == NULL)
            return end - p > 1024 ? -EBADMSG : 0;
        for (; p + i < eol && isxdigit((unsigned char)p[i]); i++) {
            if (size > RPC_REPLY_MAX_BYTES)
                return -EMSGSIZE;
            size = size * 16 + (size_t)(isdigit((unsigned char)p[i])
                                            ? p[i] - '0'
                                            : tolower((unsigned char)p[i]) - 'a' + 10);
        }
        if (i == 0 || (p + i < eol && p[i] != ';' && p[i] != ' ' && p[i] != '\t'))
            return -EBADMSG;
        if (size == 0) {
            /* The trailer: header lines up to an empty one. */
            for (t = eol + 2;; t = eol + 2) {
                if ((eol = memmem(t, (size_t)(end - t), "\r\n", 2)) == NULL)
                    return end - t > HTTP_HEADERS_MAX_BYTES ? -EBADMSG : 0;
                if (eol == t) {
                    *pos = (size_t)(eol + 2 - raw->p);
                    return 1;
                }
            }
        }
        if (size > RPC_REPLY_MAX_BYTES || (size_t)(end - (eol + 2)) < size + 2)
            return size > RPC_REPLY_MAX_BYTES ? -EMSGSIZE : 0;
        if (memcmp(eol + 2 + size, "\r\n", 2) != 0)
            return -EBADMSG;
        if ((rc = hbuf_room(body, size, RPC_REPLY_MAX_BYTES)) < 0)
            return rc;
        memcpy(body->p + body->len, eol + 2, size);
        body->len += size;
        body->p[body->len] = '\0';
        *pos = (size_t)(eol + 2 + size + 2 - raw->p);
    }
}

/* The value of header name in the header block [p, end), or NULL; *n is
 * its length without surrounding white space. */
static const char *
header_value(const char *p, const char *end, const char *name, size_t *n)
{
    size_t nl = strlen(name);

    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2), *v;
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            for (v = p + nl + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
                ;
            *n = (size_t)(eol - v);
            while (*n > 0 && (v[*n - 1] == ' ' || v[*n - 1] == '\t'))
                (*n)--;
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

/* The reply's status line and headers: fills *status and hp->reason, and
 * how its body is framed. raw holds [0, *hdr_end) of them. */
static int
http_head(struct rpc_http *hp, const struct hbuf *raw, size_t hdr_end, int *status, int64_t *length,
          bool *chunked)
{
    const char *p = raw->p, *end = raw->p + hdr_end - 2, *eol, *v;
    size_t n, i;

    /* HTTP/1.x NNN reason */
    if ((eol = memmem(p, (size_t)(end - p), "\r\n", 2)) == NULL)
        eol = end;
    if (eol - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ' ||
        !isdigit((unsigned char)p[9]) || !isdigit((unsigned char)p[10]) ||
        !isdigit((unsigned char)p[11]) || (eol - p > 12 && p[12] != ' '))
        return -EBADMSG;
    *status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    for (i = 0, n = eol - p > 13 ? (size_t)(eol - p - 13) : 0; i < n && i < sizeof(hp->reason) - 1;
         i++)
        hp->reason[i] = isprint((unsigned char)p[13 + i]) ? p[13 + i] : '?';
    hp->reason[i] = '\0';
    p = eol + 2;
    *chunked = false;
    *length = -1;
    if ((v = header_value(p, end, "Transfer-Encoding", &n)) != NULL) {
        /* Only chunked is ever sent to a client that asks for nothing else. */
        if (n < 7 || strncasecmp(v + n - 7, "chunked", 7) != 0)
            return -EBADMSG;
        *chunked = true;
    } else if ((v = header_value(p, end, "Content-Length", &n)) != NULL) {
        int64_t len = 0;
        if (n == 0)
            return -EBADMSG;
        for (i = 0; i < n; i++) {
            if (!isdigit((unsigned char)v[i]))
                return -EBADMSG;
            if ((len = len * 10 + (v[i] - '0')) > RPC_REPLY_MAX_BYTES)
                return -EMSGSIZE;
        }
        *length = len;
    }
    return 0;
}

/*
 * POSTs body to hp's /rpc and reads the reply. hold_ms is how long the
 * daemon may hold the request before it answers. Returns 0 with the body
 * of a 200 reply in *reply (owned, NUL-terminated); -EPROTO for another
 * status (hp->status, hp->reason); -errno for a failed connection.
 */
static int
http_exchange(struct rpc_http *hp, const char *body, size_t len, int64_t hold_ms, char **reply,
              size_t *replylen)
{
    struct hbuf raw = {0}, out = {0};
    char *req = NULL;
    size_t hdr_end = 0, pos = 0;
    int64_t length = -1, first = http_now_ms() + hold_ms + HTTP_REPLY_MS;
    bool chunked = false;
    int fd = -1, status = 0, rc, n;

    hp->status = 0;
    hp->reason[0] = hp->detail[0] = '\0';
#define HTTP_REQUEST(buf, size)                                                                    \
    snprintf(buf, size,                                                                            \
             "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: jobq/%s\r\n"                             \
             "Accept: application/json\r\nContent-Type: application/json\r\n"                      \
             "Content-Length: %zu\r\nConnection: close\r\n%s%s%s\r\n",                             \
             hp->path, hp->authority, JOBQ_VERSION, len,                                           \
             hp->token ? "Authorization: Bearer " : "", hp->token ? hp->token : "",                \
             hp->token ? "\r\n" : "")
    if ((n = HTTP_REQUEST(NULL, 0)) < 0 || (req = malloc((size_t)n + len + 1)) == NULL)
        return -ENOMEM;
    HTTP_REQUEST(req, (size_t)n + 1);
#undef HTTP_REQUEST
    memcpy(req + n, body, len);
    if ((rc = http_connect(hp, &fd)) < 0)
        goto out;
    /* A daemon that refuses early (413) closes while the body is still
     * going out: its reply, if one came, says more than the broken pipe. */
    rc = http_send_all(fd, req, (size_t)n + len);
    if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
        goto out;
    /* The status line and headers. */
    for (;;) {
        const char *e = raw.len ? memmem(raw.p, raw.len, "\r\n\r\n", 4) : NULL;
        if (e != NULL) {
            hdr_end = (size_t)(e + 4 - raw.p);
            if ((rc = http_head(hp, &raw, hdr_end, &status, &length, &chunked)) < 0)
                goto out;
            if (status >= 100 && status < 200) { /* 100 Continue: the real one follows */
                memmove(raw.p, raw.p + hdr_end, raw.len - hdr_end);
                raw.len -= hdr_end;
                continue;
            }
            break;
        }
        if (raw.len > HTTP_HEADERS_MAX_BYTES) {
            rc = -EBADMSG;
            goto out;
        }
        ssize_t got = http_read(fd, &raw, HTTP_HEADERS_MAX_BYTES + RPC_REPLY_MAX_BYTES,
                                raw.len ? http_now_ms() + HTTP_STALL_MS : first);
        if (got <= 0) {
            rc = got < 0 ? (int)got : -ECONNRESET;
            if (rc == -ETIMEDOUT)
                snprintf(hp->detail, sizeof(hp->detail), "no reply within %lld s",
                         (long long)((hold_ms + HTTP_REPLY_MS) / 1000));
            goto out;
        }
    }
    /* The body: by its length, in chunks, or up to the end of the stream. */
    pos = hdr_end;
    for (;;) {
        ssize_t got;
        if (status == 204 || status == 304) {
            break;
        } else if (chunked) {
            if ((rc = dechunk(&raw, &pos, &out)) < 0)
                goto out;
            if (rc == 1)
                break;
            memmove(raw.p, raw.p + pos, raw.len - pos); /* keep only what is undecoded */
            raw.len -= pos;
            pos = 0;
        } else if (length >= 0 && raw.len - hdr_end >= (size_t)length) {
            break;
        }
        got = http_read(fd, &raw, HTTP_HEADERS_MAX_BYTES + RPC_REPLY_MAX_BYTES + 64 * 1024,
                        http_now_ms() + HTTP_STALL_MS);
        if (got < 0) {
            rc = (int)got;
            goto out;
        }
        if (got == 0) {
            if (chunked || length >= 0) {
                rc = -ECONNRESET; /* cut short */
                goto out;
            }
            break; /* the end of the stream ends the body */
        }
        if (!chunked && raw.len - hdr_end > RPC_REPLY_MAX_BYTES) {
            rc = -EMSGSIZE;
            goto out;
        }
    }
    if (status != 200) {
        hp->status = status;
        rc = -EPROTO;
        goto out;
    }
    if (!chunked) {
        size_t blen = length >= 0 ? (size_t)length : raw.len - hdr_end;
        if ((rc = hbuf_room(&out, blen, RPC_REPLY_MAX_BYTES)) < 0)
            goto out;
        memcpy(out.p, raw.p + hdr_end, blen);
        out.len = blen;
        out.p[blen] = '\0';
    }
    *reply = out.p;
    *replylen = out.len;
    out.p = NULL;
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (req != NULL) {
        explicit_bzero(req, (size_t)n); /* it holds the token */
        free(req);
    }
    free(raw.p);
    free(out.p);
    return rc;
}

/* Sets obj.key to v. */
static int
json_set_int(cJSON *obj, const char *key, int64_t v)
{
    cJSON *n = cJSON_CreateNumber((double)v);

    if (n == NULL)
        return -ENOMEM;
    if (cJSON_HasObjectItem(obj, key))
        cJSON_ReplaceItemInObjectCaseSensitive(obj, key, n);
    else
        cJSON_AddItemToObject(obj, key, n);
    return 0;
}

/*
 * Makes the queued request o, as many exchanges as it takes: a `wait`
 * longer than RPC_HTTP_HOLD_MAX_MS is asked again after each piece that
 * timed out, until its own timeout (if any) is spent, and a `logs` wait_ms
 * is capped (the method may always return early; callers loop). Returns as
 * rpc_recv.
 */
static int
http_call(struct rpc *r, struct http_out *o, cJSON **result, struct rpc_error *err)
{
    bool is_wait = strcmp(o->method, "wait") == 0, is_logs = strcmp(o->method, "logs") == 0;
    bool params = cJSON_IsObject(o->params);
    const cJSON *t =
        params ? cJSON_GetObjectItemCaseSensitive(o->params, is_wait ? "timeout_ms" : "wait_ms")
               : NULL;
    int64_t total = cJSON_IsNumber(t) ? (int64_t)t->valuedouble : -1;
    int64_t deadline = total >= 0 ? http_now_ms() + total : INT64_MAX;

    for (;;) {
        int64_t hold = 0, rid;
        char *line, *body = NULL;
        size_t blen = 0;
        bool id_null;
        cJSON *root;
        int rc;

        if (is_wait && params) {
            int64_t left = deadline == INT64_MAX ? RPC_HTTP_HOLD_MAX_MS : deadline - http_now_ms();
            hold = left < 0 ? 0 : left > RPC_HTTP_HOLD_MAX_MS ? RPC_HTTP_HOLD_MAX_MS : left;
            if ((rc = json_set_int(o->params, "timeout_ms", hold)) < 0)
                return rc;
        } else if (is_logs && params && total > 0) {
            hold = total > RPC_HTTP_HOLD_MAX_MS ? RPC_HTTP_HOLD_MAX_MS : total;
            if (hold < total && (rc = json_set_int(o->params, "wait_ms", hold)) < 0)
                return rc;
        }
        if ((line = rpc_format_request(o->id, o->method, o->params)) == NULL)
            return -ENOMEM;
        rc = http_exchange(r->http, line, strlen(line), hold, &body, &blen);
        free(line);
        if (rc < 0)
            return rc;
        rc = reply_parse(body, blen, &root, &rid, &id_null);
        free(body);
        if (rc < 0)
            return rc;
        if (!id_null && rid != o->id) {
            cJSON_Delete(root);
            return -EBADMSG;
        }
        /* A piece of a longer wait ran out: the next piece. */
        if (is_wait && params && (deadline == INT64_MAX || deadline > http_now_ms()) &&
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(root, "result"), "timed_out"))) {
            cJSON_Delete(root);
            continue;
        }
        rc = reply_split(root, result, err);
        cJSON_Delete(root);
        return rc;
    }
}

static int
http_recv(struct rpc *r, int64_t id, cJSON **result, struct rpc_error *err)
{
    struct http_out **pp = &r->http->queue, *o;
    int rc;

    while (*pp != NULL && (*pp)->id != id)
        pp = &(*pp)->next;
    if ((o = *pp) == NULL)
        return -ECONNRESET; /* nothing was sent under that id */
    *pp = o->next;
    rc = http_call(r, o, result, err);
    http_out_free(o);
    return rc;
}

int
rpc_recv(struct rpc *r, int64_t id, cJSON **result, struct rpc_error *err)
{
    cJSON *root = NULL;
    int rc;

    memset(err, 0, sizeof(*err));
    if (r->http != NULL)
        return http_recv(r, id, result, err);
    while ((root = stash_take(r, id)) == NULL) {
        char *line = NULL;
        size_t len = 0;
        int64_t rid;
        bool id_null;

        if (r->closed) {
            if (r->last.code == 0)
                return -ECONNRESET;
            if ((rc = error_copy(err, &r->last)) < 0)
                return rc;
            return -EREMOTEIO;
        }
        if ((rc = read_line(r, &line, &len)) < 0) {
            if (rc == -ECONNRESET)
                r->closed = true;
            return rc;
        }
        if (len == 0)
            continue;
        if ((rc = reply_parse(line, len, &root, &rid, &id_null)) < 0)
            return rc;
        if (id_null) {
            /* The daemon's word on the whole connection, sent before it
             * closes: the answer to this and every later request. */
            rc = reply_split(root, result, &r->last);
            cJSON_Delete(root);
            if (rc != -EREMOTEIO)
                return -EBADMSG;
            r->closed = true;
            continue;
        }
        if (rid == id)
            break;
        if (rid <= 0 || rid >= r->next_id) {
            cJSON_Delete(root);
            return -EBADMSG;
        }
        if ((rc = stash_put(r, rid, root)) < 0)
            return rc;
        root = NULL;
    }
    rc = reply_split(root, result, err);
    cJSON_Delete(root);
    return rc;
}

int
rpc_call(struct rpc *r, const char *method, cJSON *params, cJSON **result, struct rpc_error *err)
{
    int64_t id;
    int rc;

    memset(err, 0, sizeof(*err));
    if ((rc = rpc_send(r, method, params, &id)) < 0) {
        /* The daemon may have said why before hanging up (too many
         * connections): that beats "broken pipe". */
        if ((rc == -EPIPE || rc == -ECONNRESET) && rpc_recv(r, 0, result, err) == -EREMOTEIO)
            return -EREMOTEIO;
        return rc;
    }
    return rpc_recv(r, id, result, err);
}
