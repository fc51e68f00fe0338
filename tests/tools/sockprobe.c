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
 * Replies are read with a 10 s limit and printed one per line; "EOF" marks
 * the server closing. Exit 0 unless the socket cannot be reached.
 */
#include <errno.h>
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

int
main(int argc, char **argv)
{
    int fd;

    if (argc < 4) {
        fprintf(stderr, "usage: sockprobe SOCK send|big|stall|halfclose|hold|drop ARG...\n");
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
    } else if (strcmp(argv[2], "big") == 0) {
        size_t n = (size_t)atol(argv[3]);
        char *buf = malloc(n);
        memset(buf, 'a', n);
        send_all(fd, buf, n);
        replies(fd, 10, 0);
    } else if (strcmp(argv[2], "stall") == 0) {
        send_all(fd, "{\"jsonrpc\":\"2.0\",\"id\":1,", 24);
        replies(fd, atoi(argv[3]), 0);
    }
    close(fd);
    return 0;
}
