/*
 * httpget — a tiny HTTP/1.1 client for the integration tests (no curl on
 * a minimal Debian):
 *   httpget [--head] [--method M] [--headers] [--timeout S] PORT PATH
 *       one request to 127.0.0.1:PORT ("Connection: close"); prints the
 *       status line, the headers with --headers, a blank line, then the
 *       body. Exit 0 when a reply came (whatever its status), 1 if none.
 *   httpget --slow N MS [--timeout S] PORT PATH
 *       slow loris: N connections each send the request one byte every MS
 *       ms and never finish it; prints "closed N of N after T ms" once the
 *       server has closed them all (exit 0), or "open K" when --timeout
 *       (default 10 s) passes first (exit 1).
 *   httpget --big BYTES [--timeout S] PORT PATH
 *       a request with one header of BYTES bytes; prints the status line of
 *       the reply, or "closed" if the server closed without one.
 *   httpget --free-port
 *       prints a TCP port that was free on 127.0.0.1 a moment ago.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
dial(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int
free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        perror("httpget: free port");
        return 1;
    }
    printf("%d\n", ntohs(sa.sin_port));
    close(fd);
    return 0;
}

static bool
send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Reads until EOF or the deadline; returns the bytes (NUL-terminated,
 * owned) and their count in *n, or NULL on timeout with nothing read. */
static char *
read_all(int fd, int64_t deadline, size_t *n)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);

    while (buf != NULL) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t left = deadline - now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        if (len + 1 >= cap && (buf = realloc(buf, cap *= 2)) == NULL)
            break;
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    if (buf != NULL)
        buf[len] = '\0';
    *n = len;
    return buf;
}

static int
get(int port, const char *method, const char *path, bool headers, int timeout_s)
{
    char req[1024];
    size_t n = 0;
    char *resp, *eol, *body;
    int fd = dial(port);

    if (fd < 0) {
        perror("httpget: connect");
        return 1;
    }
    snprintf(req, sizeof(req),
             "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: httpget\r\nConnection: "
             "close\r\n\r\n",
             method, path, port);
    if (!send_all(fd, req, strlen(req)) ||
        (resp = read_all(fd, now_ms() + timeout_s * 1000, &n)) == NULL || n == 0) {
        fprintf(stderr, "httpget: no reply\n");
        close(fd);
        return 1;
    }
    close(fd);
    if ((eol = strstr(resp, "\r\n")) == NULL || (body = strstr(resp, "\r\n\r\n")) == NULL) {
        fprintf(stderr, "httpget: malformed reply: %.80s\n", resp);
        free(resp);
        return 1;
    }
    printf("%.*s\n", (int)(eol - resp), resp);
    if (headers) {
        for (char *h = eol + 2; h < body + 2;) {
            char *e = strstr(h, "\r\n");
            printf("%.*s\n", (int)(e - h), h);
            h = e + 2;
        }
    }
    printf("\n");
    fwrite(body + 4, 1, n - (size_t)(body + 4 - resp), stdout);
    free(resp);
    return 0;
}

/* Slow loris: every connection trickles the request; counts how many the
 * server closes. */
static int
slow(int port, const char *path, int nconns, int every_ms, int timeout_s)
{
    char req[512];
    int *fds = calloc((size_t)nconns, sizeof(*fds));
    size_t *sent = calloc((size_t)nconns, sizeof(*sent));
    int64_t start = now_ms(), deadline = start + timeout_s * 1000, next = start;
    int open_n = 0;

    snprintf(
        req, sizeof(req),
        "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        path);
    for (int i = 0; i < nconns; i++) {
        /* Beyond the server's cap a connect still succeeds (the backlog). */
        if ((fds[i] = dial(port)) < 0) {
            perror("httpget: connect");
            exit(1);
        }
        open_n++;
    }
    while (open_n > 0 && now_ms() < deadline) {
        if (now_ms() >= next) {
            for (int i = 0; i < nconns; i++)
                if (fds[i] >= 0 && sent[i] < strlen(req) &&
                    send(fds[i], req + sent[i], 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1)
                    sent[i]++;
            next = now_ms() + every_ms;
        }
        for (int i = 0; i < nconns; i++) {
            struct pollfd p = {.fd = fds[i], .events = POLLIN};
            char b[4096];
            if (fds[i] < 0 || poll(&p, 1, 0) <= 0)
                continue;
            ssize_t r = recv(fds[i], b, sizeof(b), MSG_DONTWAIT);
            if (r <= 0 && !(r < 0 && errno == EAGAIN)) {
                close(fds[i]);
                fds[i] = -1;
                open_n--;
            }
        }
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < nconns; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
    free(sent);
    if (open_n > 0) {
        printf("open %d\n", open_n);
        return 1;
    }
    printf("closed %d of %d after %lld ms\n", nconns, nconns, (long long)(now_ms() - start));
    return 0;
}

static int
big(int port, const char *path, size_t bytes, int timeout_s)
{
    size_t cap = bytes + 512, n = 0;
    char *req = malloc(cap), *resp;
    int fd = dial(port), len;

    if (fd < 0 || req == NULL) {
        perror("httpget: connect");
        return 1;
    }
    len = snprintf(req, cap, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ", path);
    memset(req + len, 'a', bytes);
    memcpy(req + len + bytes, "\r\n\r\n", 4);
    /* The server may close while we still send: that is the point. */
    send_all(fd, req, (size_t)len + bytes + 4);
    resp = read_all(fd, now_ms() + timeout_s * 1000, &n);
    if (resp != NULL && n > 0 && strstr(resp, "\r\n") != NULL)
        printf("%.*s\n", (int)(strstr(resp, "\r\n") - resp), resp);
    else
        printf("closed\n");
    free(resp);
    free(req);
    close(fd);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *method = "GET";
    bool headers = false;
    int timeout_s = 10, slow_n = 0, slow_ms = 0;
    long big_bytes = 0;
    int i = 1;

    if (argc == 2 && strcmp(argv[1], "--free-port") == 0)
        return free_port();
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--head") == 0)
            method = "HEAD";
        else if (strcmp(argv[i], "--headers") == 0)
            headers = true;
        else if (strcmp(argv[i], "--method") == 0 && i + 1 < argc)
            method = argv[++i];
        else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
            timeout_s = atoi(argv[++i]);
        else if (strcmp(argv[i], "--slow") == 0 && i + 2 < argc) {
            slow_n = atoi(argv[++i]);
            slow_ms = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--big") == 0 && i + 1 < argc)
            big_bytes = atol(argv[++i]);
        else
            break;
    }
    if (argc - i != 2) {
        fprintf(stderr, "usage: httpget [--head] [--method M] [--headers] [--timeout S] PORT PATH\n"
                        "       httpget --slow N MS [--timeout S] PORT PATH\n"
                        "       httpget --big BYTES PORT PATH\n"
                        "       httpget --free-port\n");
        return 2;
    }
    if (slow_n > 0)
        return slow(atoi(argv[i]), argv[i + 1], slow_n, slow_ms, timeout_s);
    if (big_bytes > 0)
        return big(atoi(argv[i]), argv[i + 1], (size_t)big_bytes, timeout_s);
    return get(atoi(argv[i]), method, argv[i + 1], headers, timeout_s);
}
