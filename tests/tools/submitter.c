/*
 * submitter — one jobq client on one connection, for the crash tests
 * (tests/integ/chaos_crash.sh): it submits and records exactly what the
 * daemon acknowledged, and later checks that the daemon still has it.
 *   submitter SOCK submit PREFIX FIRST [QUEUE]
 *       submits `true` jobs with unique keys PREFIX-FIRST, PREFIX-FIRST+1,
 *       ... one at a time, until the connection ends (the daemon was
 *       killed). After each reply with an id it prints "KEY ID" with one
 *       write(2): a line on stdout is an acknowledgement, nothing else is.
 *       An error reply is printed on stderr ("error KEY CODE") and the
 *       same key is tried again; the last key sent without a reply is
 *       printed on stderr as "inflight KEY". Exits 0 when the daemon goes.
 *   submitter SOCK verify
 *       reads "KEY ID" lines on stdin and asks the daemon for each id
 *       (64 requests in flight): prints "missing ID" for an unknown id and
 *       "mismatch ID KEY OTHER" for a job whose unique key is not KEY, then
 *       "checked N missing M mismatched K"; exits 1 if M or K is not 0.
 * The same key is resubmitted in the next round when its reply was lost,
 * as a careful client would: the unique key makes that idempotent.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define WINDOW 64

static int
dial(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int
send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Line reader over a socket: returns one reply line (owned by rd, valid
 * until the next call), or NULL at EOF or error. */
struct reader {
    int fd;
    char *buf;
    size_t len, cap, skip;
};

static char *
read_line(struct reader *rd)
{
    for (;;) {
        char *nl;
        if (rd->skip > 0) {
            memmove(rd->buf, rd->buf + rd->skip, rd->len - rd->skip);
            rd->len -= rd->skip;
            rd->skip = 0;
        }
        if (rd->len > 0 && (nl = memchr(rd->buf, '\n', rd->len)) != NULL) {
            *nl = '\0';
            rd->skip = (size_t)(nl - rd->buf) + 1;
            return rd->buf;
        }
        if (rd->len == rd->cap) {
            size_t cap = rd->cap ? rd->cap * 2 : 65536;
            char *b = realloc(rd->buf, cap);
            if (b == NULL)
                return NULL;
            rd->buf = b;
            rd->cap = cap;
        }
        ssize_t n = read(rd->fd, rd->buf + rd->len, rd->cap - rd->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        rd->len += (size_t)n;
    }
}

static int
submit_loop(const char *sock, const char *prefix, long seq, const char *queue)
{
    struct reader rd = {.fd = dial(sock)};
    char key[256], req[1024], out[320];
    long rid = 0;

    if (rd.fd < 0) {
        fprintf(stderr, "submitter: cannot connect to %s\n", sock);
        return 0; /* the daemon may be gone already: nothing was sent */
    }
    for (;;) {
        cJSON *r, *res, *id;
        char *line;
        int n;

        snprintf(key, sizeof(key), "%s-%ld", prefix, seq);
        n = snprintf(req, sizeof(req),
                     "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"submit\",\"params\":"
                     "{\"command\":[\"true\"],\"unique_key\":\"%s\"%s%s%s}}\n",
                     ++rid, key, queue ? ",\"queue\":\"" : "", queue ? queue : "",
                     queue ? "\"" : "");
        if (send_all(rd.fd, req, (size_t)n) < 0 || (line = read_line(&rd)) == NULL) {
            fprintf(stderr, "inflight %s\n", key);
            break;
        }
        if ((r = cJSON_Parse(line)) == NULL) {
            fprintf(stderr, "submitter: bad reply: %s\n", line);
            break;
        }
        res = cJSON_GetObjectItemCaseSensitive(r, "result");
        id = res ? cJSON_GetObjectItemCaseSensitive(res, "id") : NULL;
        if (cJSON_IsNumber(id)) {
            /* One write: a line that reached stdout is a whole ack. */
            n = snprintf(out, sizeof(out), "%s %" PRId64 "\n", key, (int64_t)id->valuedouble);
            if (write(1, out, (size_t)n) != n) {
                cJSON_Delete(r);
                return 1;
            }
            seq++;
        } else {
            cJSON *err = cJSON_GetObjectItemCaseSensitive(r, "error");
            cJSON *code = err ? cJSON_GetObjectItemCaseSensitive(err, "code") : NULL;
            fprintf(stderr, "error %s %d\n", key, cJSON_IsNumber(code) ? code->valueint : 0);
            /* shutting_down or too many connections: this round is over. */
            cJSON_Delete(r);
            break;
        }
        cJSON_Delete(r);
    }
    close(rd.fd);
    free(rd.buf);
    return 0;
}

struct ack {
    char *key;
    int64_t id;
};

static int
verify(const char *sock)
{
    struct reader rd = {.fd = dial(sock)};
    struct ack *v = NULL;
    size_t n = 0, cap = 0, sent = 0, got = 0, missing = 0, mismatched = 0;
    char line[512], req[256];

    if (rd.fd < 0) {
        fprintf(stderr, "submitter: cannot connect to %s\n", sock);
        return 2;
    }
    while (fgets(line, sizeof(line), stdin) != NULL) {
        char key[256];
        int64_t id;
        if (sscanf(line, "%255s %" SCNd64, key, &id) != 2)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            if ((v = realloc(v, cap * sizeof(*v))) == NULL)
                return 2;
        }
        v[n].key = strdup(key);
        v[n++].id = id;
    }
    while (got < n) {
        while (sent < n && sent - got < WINDOW) {
            int len = snprintf(req, sizeof(req),
                               "{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"get\",\"params\":"
                               "{\"id\":%" PRId64 "}}\n",
                               sent, v[sent].id);
            if (send_all(rd.fd, req, (size_t)len) < 0)
                return 2;
            sent++;
        }
        char *l = read_line(&rd);
        cJSON *r, *rid, *res, *uk;
        if (l == NULL) {
            fprintf(stderr, "submitter: the daemon closed the connection\n");
            return 2;
        }
        if ((r = cJSON_Parse(l)) == NULL)
            return 2;
        rid = cJSON_GetObjectItemCaseSensitive(r, "id");
        res = cJSON_GetObjectItemCaseSensitive(r, "result");
        if (!cJSON_IsNumber(rid) || rid->valuedouble < 0 || (size_t)rid->valuedouble >= n) {
            cJSON_Delete(r);
            return 2;
        }
        size_t i = (size_t)rid->valuedouble;
        if (res == NULL) {
            printf("missing %" PRId64 "\n", v[i].id);
            missing++;
        } else if (!cJSON_IsString(uk = cJSON_GetObjectItemCaseSensitive(res, "unique_key")) ||
                   strcmp(uk->valuestring, v[i].key) != 0) {
            printf("mismatch %" PRId64 " %s %s\n", v[i].id, v[i].key,
                   cJSON_IsString(uk) ? uk->valuestring : "null");
            mismatched++;
        }
        cJSON_Delete(r);
        got++;
    }
    printf("checked %zu missing %zu mismatched %zu\n", n, missing, mismatched);
    for (size_t i = 0; i < n; i++)
        free(v[i].key);
    free(v);
    free(rd.buf);
    close(rd.fd);
    return missing || mismatched ? 1 : 0;
}

int
main(int argc, char **argv)
{
    if (argc >= 5 && strcmp(argv[2], "submit") == 0)
        return submit_loop(argv[1], argv[3], atol(argv[4]), argc > 5 ? argv[5] : NULL);
    if (argc == 3 && strcmp(argv[2], "verify") == 0)
        return verify(argv[1]);
    fprintf(stderr, "usage: submitter SOCK submit PREFIX FIRST [QUEUE] | submitter SOCK verify\n");
    return 2;
}
