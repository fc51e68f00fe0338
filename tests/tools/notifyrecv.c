/*
 * notifyrecv — a stand-in for the service manager's end of sd_notify, for
 * the integration tests:
 *   notifyrecv [--pid] ADDRESS
 * binds a Unix datagram socket at ADDRESS (a path, or "@name" for an
 * abstract name, as $NOTIFY_SOCKET spells them) and prints each message it
 * receives on one line, its assignments separated by a TAB ("READY=1\t
 * MAINPID=42\tSTATUS=..."), flushed at once. --pid prefixes each line with
 * "pid=N\t", the sender's pid as the kernel reports it (SO_PASSCRED), which
 * is what systemd trusts. Runs until killed; a path it bound is removed on
 * SIGTERM/SIGINT.
 */
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t stop; /* set by the signal handler */

static void
on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int
main(int argc, char **argv)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    bool with_pid = false;
    const char *addr;
    socklen_t len;
    int fd, one = 1;
    struct sigaction act = {.sa_handler = on_signal};

    if (argc == 3 && strcmp(argv[1], "--pid") == 0) {
        with_pid = true;
        argv++;
        argc--;
    }
    if (argc != 2 || strlen(argv[1]) < 2 || strlen(argv[1]) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "usage: notifyrecv [--pid] PATH|@NAME\n");
        return 2;
    }
    addr = argv[1];
    memcpy(sa.sun_path, addr, strlen(addr));
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(addr));
    if (addr[0] == '@')
        sa.sun_path[0] = '\0';
    else
        unlink(addr);
    if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&sa, len) < 0) {
        perror("notifyrecv");
        return 1;
    }
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);
    while (!stop) {
        char buf[4096], cbuf[CMSG_SPACE(sizeof(struct ucred))];
        struct iovec iov = {buf, sizeof(buf) - 1};
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
        ssize_t n = recvmsg(fd, &mh, 0);
        long pid = 0;

        if (n < 0)
            continue; /* EINTR: look at stop */
        buf[n] = '\0';
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] == '\n')
                buf[i] = '\t';
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                struct ucred cr;
                memcpy(&cr, CMSG_DATA(c), sizeof(cr));
                pid = (long)cr.pid;
            }
        if (with_pid)
            printf("pid=%ld\t%s\n", pid, buf);
        else
            printf("%s\n", buf);
        fflush(stdout);
    }
    if (addr[0] != '@')
        unlink(addr);
    return 0;
}
