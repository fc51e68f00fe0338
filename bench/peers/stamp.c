/*
 * stamp — the job of bench-peers' start-latency workload, the same for
 * every system: writes CLOCK_REALTIME in nanoseconds to FILE as early as
 * it can, then exits. The driver (drive.c, node/drive.js) compares it
 * with the wall-clock time at which it began the submit (one clock, one
 * host).
 *
 * bench/peers.sh builds it with -DSTAMP_NOLIBC -nostdlib -static on
 * x86-64: then it is its own _start and reads the clock before anything
 * else, with no loader and no libc to initialise. A static glibc program
 * takes about 0.6 ms on this VM from its execve to main (page faults, as
 * bench/e2e/stamp.c found), which would be added to every system's figure
 * alike and hide the differences. The libc build is the fallback.
 *
 * usage: stamp FILE
 */
#include <fcntl.h>
#include <stdint.h>
#include <time.h>

/* Writes ns in decimal and a newline into buf; returns the length. */
static int
format_ns(int64_t ns, char *buf)
{
    char tmp[24];
    int n = 0, len = 0;

    do {
        tmp[n++] = (char)('0' + ns % 10);
        ns /= 10;
    } while (ns > 0);
    while (n > 0)
        buf[len++] = tmp[--n];
    buf[len++] = '\n';
    return len;
}

#if defined(STAMP_NOLIBC) && defined(__x86_64__)
#include <sys/syscall.h>

static long
sys4(long nr, long a, long b, long c, long d)
{
    register long r10 __asm__("r10") = d;
    long ret;

    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}

void stamp_start(long *sp);

/* The kernel leaves argc, then argv, at the stack pointer: hand that to C
 * on an aligned stack. */
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "\txor %ebp, %ebp\n"
        "\tmov %rsp, %rdi\n"
        "\tand $-16, %rsp\n"
        "\tcall stamp_start\n"
        "\thlt\n");

__attribute__((noreturn, used)) void
stamp_start(long *sp)
{
    char **argv = (char **)(sp + 1), buf[32];
    struct timespec ts;
    long fd;
    int len;

    sys4(SYS_clock_gettime, CLOCK_REALTIME, (long)&ts, 0, 0);
    len = format_ns((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, buf);
    if (sp[0] != 2 ||
        (fd = sys4(SYS_openat, AT_FDCWD, (long)argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0 ||
        sys4(SYS_write, fd, (long)buf, len, 0) != len || sys4(SYS_close, fd, 0, 0, 0) < 0)
        sys4(SYS_exit_group, 1, 0, 0, 0);
    sys4(SYS_exit_group, 0, 0, 0, 0);
    for (;;)
        ;
}
#else
#include <unistd.h>

int
main(int argc, char **argv)
{
    struct timespec ts;
    char buf[32];
    int fd, len;

    clock_gettime(CLOCK_REALTIME, &ts);
    len = format_ns((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, buf);
    if (argc != 2)
        return 2;
    /* The drivers wait for IN_CLOSE_WRITE: the file is whole when seen. */
    if ((fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0)
        return 1;
    if (write(fd, buf, (size_t)len) != len)
        return 1;
    return close(fd) < 0;
}
#endif
