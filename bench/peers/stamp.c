/*
 * stamp — the job of bench-peers' start-latency workload, the same for
 * every system: writes CLOCK_REALTIME in nanoseconds to FILE as early as a
 * C program can, then exits. bench/peers.sh links a static copy (no
 * dynamic loader, no shared libraries to map), so the stamp is within
 * some tens of microseconds of the execve that started it. The driver
 * (drive.c) compares it with the wall-clock time at which it began the
 * submit (one clock, one host).
 *
 * usage: stamp FILE
 */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int
main(int argc, char **argv)
{
    struct timespec ts;
    char buf[32];
    int fd, n;

    clock_gettime(CLOCK_REALTIME, &ts);
    if (argc != 2)
        return 2;
    n = snprintf(buf, sizeof(buf), "%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    /* The driver watches for IN_CLOSE_WRITE: the file is whole when seen. */
    if ((fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0)
        return 1;
    if (write(fd, buf, (size_t)n) != n)
        return 1;
    return close(fd) < 0;
}
