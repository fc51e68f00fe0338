/*
 * sockprobe — speaks raw bytes to a Unix socket, for the integration tests
 * of bad input and load:
 *   sockprobe SOCK send TEXT [N]      send TEXT (C escapes \n \xNN), print each reply
 *                                     line (stop after N lines when given)
 *   sockprobe SOCK big BYTES          send BYTES of 'a' with no newline, print the reply
 *   sockprobe SOCK stall SECONDS      send half a request, then wait for the reply
 *   sockprobe SOCK halfclose TEXT     send TEXT, shut the writing half, print replies
 *   sockprobe SOCK hold N SECONDS     open N connections (each sends half a line if
 *                                     the 5th arg is "partial"), keep them SECONDS,
 *                                     print how many connected
 *   sockprobe SOCK drop N             open N connections, send half a request each,
 *                                     close them all at once
 *   sockprobe SOCK trickle TEXT MS    send TEXT one byte at a time, MS ms apart, then
 *                                     print the reply lines
 *   sockprobe SOCK noread N TEXT      send TEXT N times as fast as the server takes it
 *                                     and never read a reply; print "closed after
 *                                     MS ms, sent K" once the server hangs up, or
 *                                     "open after 30 s, sent K"
 *   sockprobe SOCK latency N TEXT     send TEXT and wait for its reply, N times on one
 *                                     connection; print "p50_us=.. p90_us=.. max_us=.."
 *   sockprobe SOCK slowloris N SECONDS  open N connections that each write one byte
 *                                     of a request per second; print how many the
 *                                     server cut off (an error line, then EOF) and
 *                                     when, within SECONDS
 * Replies are read with a 10 s limit and printed one per line; "EOF" marks
 * the server closing. Exit 0 unless the socket cannot be reached.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int
dial(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static size_t
unescape(const char *s, char *out)
{
    size_t n = 0;
    for (; *s; s++) {
        if (*s == '\\' && s[1] == 'n') {
            out[n++] = '\n';
            s++;
        } else if (*s == '\\' && s[1] == 'x' && s[2] && s[3]) {
            char hex[3] = {s[2], s[3], 0};
            out[n++] = (char)strtol(hex, NULL, 16);
            s += 3;
        } else {
            out[n++] = *s;
        }
    }
    return n;
}

static void
send_all(int fd, const char *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            return; /* the server may close early: that is what we test */
        off += (size_t)n;
    }
}

/* Prints reply lines until EOF, the time limit, or max lines (0: none). */
static void
replies(int fd, int seconds, int max)
{
    int lines = 0;
    char buf[65536];
    size_t len = 0;
    time_t end = time(NULL) + seconds;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = (int)(end - time(NULL));
        if (left <= 0 || poll(&p, 1, left * 1000) <= 0) {
            printf("TIMEOUT\n");
            return;
        }
        ssize_t n = read(fd, buf + len, sizeof(buf) - len - 1);
        if (n <= 0) {
            printf("EOF\n");
            return;
        }
        len += (size_t)n;
        char *nl;
        while ((nl = memchr(buf, '\n', len)) != NULL) {
            fwrite(buf, 1, (size_t)(nl - buf) + 1, stdout);
            fflush(stdout);
            len -= (size_t)(nl - buf) + 1;
            memmove(buf, nl + 1, len);
            if (max > 0 && ++lines >= max)
                return;
        }
    }
}

static int64_t
now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static void
trickle(int fd, const char *text, int ms)
{
    for (; *text; text++) {
        send_all(fd, text, 1);
        sleep_ms(ms);
    }
}

/* Pipelines n copies of text without ever reading; the server must cut
 * the connection off once its replies stop draining. */
static void
noread(int fd, int n, const char *text)
{
    size_t len = strlen(text), off = 0;
    int64_t start = now_us(), end = start + 30 * 1000000LL;
    int sent = 0;

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLRDHUP | (sent < n ? POLLOUT : 0)};
        int64_t left = end - now_us();
        if (left <= 0) {
            printf("open after 30 s, sent %d\n", sent);
            return;
        }
        if (poll(&p, 1, (int)(left / 1000) + 1) <= 0)
            continue;
        if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) {
            printf("closed after %lld ms, sent %d\n", (long long)((now_us() - start) / 1000), sent);
            return;
        }
        if (p.revents & POLLOUT) {
            ssize_t w = send(fd, text + off, len - off, MSG_NOSIGNAL);
            if (w > 0 && (off += (size_t)w) == len) {
                off = 0;
                sent++;
            }
        }
    }
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Round trips of one request on one connection. */
static void
latency(int fd, int n, const char *text)
{
    int64_t *t = calloc((size_t)n, sizeof(*t));
    size_t len = strlen(text);
    char buf[65536];

    for (int i = 0; i < n; i++) {
        int64_t start = now_us();
        bool done = false;
        send_all(fd, text, len);
        while (!done) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            ssize_t r;
            if (poll(&p, 1, 10000) <= 0 || (r = read(fd, buf, sizeof(buf))) <= 0) {
                printf("no reply to request %d\n", i + 1);
                free(t);
                return;
            }
            done = memchr(buf, '\n', (size_t)r) != NULL; /* one reply line each */
        }
        t[i] = now_us() - start;
    }
    qsort(t, (size_t)n, sizeof(*t), cmp_i64);
    printf("p50_us=%lld p90_us=%lld max_us=%lld\n", (long long)t[n / 2], (long long)t[n * 9 / 10],
           (long long)t[n - 1]);
    free(t);
}

/* n connections writing one byte a second of a request that never ends;
 * counts those the server cuts off (an error line, then end of file). */
static void
slowloris(const char *path, int n, int seconds)
{
    static const char req[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{"
                              "\"padding\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    int *fds = calloc((size_t)n, sizeof(int)), open_ = 0, cut = 0, errors = 0;
    int64_t start = now_us(), last_cut = 0;
    struct rlimit rl = {(rlim_t)n + 64, (rlim_t)n + 64};

    setrlimit(RLIMIT_NOFILE, &rl);
    for (int i = 0; i < n; i++)
        if ((fds[i] = dial(path)) >= 0)
            open_++;
    for (int sec = 0; sec < seconds && cut < open_; sec++) {
        for (int i = 0; i < n; i++) {
            char buf[4096];
            ssize_t r;
            if (fds[i] < 0)
                continue;
            send(fds[i], &req[sec % (sizeof(req) - 1)], 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            while ((r = recv(fds[i], buf, sizeof(buf), MSG_DONTWAIT)) > 0)
                errors += memmem(buf, (size_t)r, "\"error\"", 7) != NULL;
            if (r == 0 || (r < 0 && errno != EAGAIN)) {
                close(fds[i]);
                fds[i] = -1;
                cut++;
                last_cut = now_us() - start;
            }
        }
        if (cut < open_)
            sleep_ms(1000);
    }
    printf("slowloris connected=%d cut=%d error_lines=%d last_cut_ms=%lld\n", open_, cut, errors,
           (long long)(last_cut / 1000));
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
}

int
main(int argc, char **argv)
{
    int fd;

    if (argc < 4) {
        fprintf(stderr, "usage: sockprobe SOCK "
                        "send|big|stall|halfclose|hold|drop|trickle|noread|latency|slowloris "
                        "ARG...\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(argv[2], "hold") == 0 || strcmp(argv[2], "drop") == 0) {
        int n = atoi(argv[3]), ok = 0, *fds = calloc((size_t)n, sizeof(int));
        bool partial =
            strcmp(argv[2], "drop") == 0 || (argc > 5 && strcmp(argv[5], "partial") == 0);
        struct rlimit rl = {(rlim_t)n + 64, (rlim_t)n + 64};
        setrlimit(RLIMIT_NOFILE, &rl);
        for (int i = 0; i < n; i++) {
            fds[i] = dial(argv[1]);
            if (fds[i] >= 0) {
                ok++;
                if (partial)
                    send_all(fds[i], "{\"jsonrpc\":\"2.0\",", 17);
            }
        }
        printf("connected %d\n", ok);
        if (strcmp(argv[2], "hold") == 0)
            sleep((unsigned)atoi(argv[4]));
        for (int i = 0; i < n; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        free(fds);
        return 0;
    }
    if (strcmp(argv[2], "slowloris") == 0) {
        slowloris(argv[1], atoi(argv[3]), argc > 4 ? atoi(argv[4]) : 30);
        return 0;
    }
    if ((fd = dial(argv[1])) < 0) {
        perror("sockprobe: connect");
        return 1;
    }
    if (strcmp(argv[2], "send") == 0 || strcmp(argv[2], "halfclose") == 0) {
        char *buf = malloc(strlen(argv[3]) + 1);
        size_t n = unescape(argv[3], buf);
        send_all(fd, buf, n);
        if (strcmp(argv[2], "halfclose") == 0)
            shutdown(fd, SHUT_WR);
        replies(fd, 10, argc > 4 ? atoi(argv[4]) : 0);
        free(buf);
    } else if (strcmp(argv[2], "big") == 0) {
        size_t n = (size_t)atol(argv[3]);
        char *buf = malloc(n);
        memset(buf, 'a', n);
        send_all(fd, buf, n);
        replies(fd, 10, 0);
        free(buf);
    } else if (strcmp(argv[2], "stall") == 0) {
        send_all(fd, "{\"jsonrpc\":\"2.0\",\"id\":1,", 24);
        replies(fd, atoi(argv[3]), 0);
    } else if (strcmp(argv[2], "trickle") == 0 && argc > 4) {
        char *buf = calloc(1, strlen(argv[3]) + 1);
        unescape(argv[3], buf);
        trickle(fd, buf, atoi(argv[4]));
        replies(fd, 10, 1);
        free(buf);
    } else if (strcmp(argv[2], "noread") == 0 && argc > 4) {
        char *buf = calloc(1, strlen(argv[4]) + 1);
        unescape(argv[4], buf);
        noread(fd, atoi(argv[3]), buf);
        free(buf);
    } else if (strcmp(argv[2], "latency") == 0 && argc > 4) {
        char *buf = calloc(1, strlen(argv[4]) + 1);
        unescape(argv[4], buf);
        latency(fd, atoi(argv[3]), buf);
        free(buf);
    }
    close(fd);
    return 0;
}
