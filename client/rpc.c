/*
 * rpc — the client's connection to jobqd: socket lookup, NDJSON framing,
 * JSON-RPC ids. Requests get increasing integer ids; a reply that arrives
 * for another request in flight is kept until that request is asked for,
 * so callers may pipeline. A connection-level error (id null: too_large,
 * request_timeout, too_many_connections) ends the connection and is the
 * answer to every request still waiting.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "jobq/proto.h"
#include "rpc.h"

/* A reply read while waiting for another one. */
struct rpc_pending {
    int64_t id;
    cJSON *root; /* the whole reply, owned */
    struct rpc_pending *next;
};

struct rpc {
    int fd;
    int64_t next_id;
    char *buf; /* read buffer; unconsumed bytes are [off, len) */
    size_t off, len, cap;
    struct rpc_pending *stash;
    bool closed;           /* the daemon ended the connection */
    struct rpc_error last; /* its connection-level error, if any */
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
    cJSON_Delete(params);
    if (line == NULL)
        return -ENOMEM;
    n = strlen(line);
    if (n > JOBQ_REQUEST_MAX_BYTES) {
        rc = -EMSGSIZE;
        goto out;
    }
    line[n] = '\n'; /* cJSON's NUL becomes the terminator of the line */
    if ((rc = write_all(r->fd, line, n + 1)) < 0)
        goto out;
    *id = r->next_id++;
out:
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

int
rpc_recv(struct rpc *r, int64_t id, cJSON **result, struct rpc_error *err)
{
    cJSON *root = NULL;
    int rc;

    memset(err, 0, sizeof(*err));
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
