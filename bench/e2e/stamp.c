/*
 * stamp — the job of the start-latency benchmark: prints CLOCK_REALTIME
 * in nanoseconds as early as it can, then exits. The client compares it
 * to the wall-clock time at which the submit's reply reached it (one
 * clock, one host).
 *
 * bench/e2e.sh builds it with -DSTAMP_NOLIBC -nostdlib -static: then it
 * is its own _start, reads the clock with the first instruction it runs
 * and has no libc to initialise, no loader, nothing to map. On this VM a
 * static glibc program takes about 0.6 ms from its execve to main (page
 * faults), which is not jobqd's to pay. The Makefile's build (main, libc)
 * is the fallback where the toolchain cannot do that.
 */
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
sys3(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return ret;
}

void _start(void);

__attribute__((force_align_arg_pointer, noreturn)) void
_start(void)
{
    struct timespec ts;
    char buf[32];
    int len;

    sys3(SYS_clock_gettime, CLOCK_REALTIME, (long)&ts, 0);
    len = format_ns((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, buf);
    sys3(SYS_write, 1, (long)buf, len);
    sys3(SYS_exit_group, 0, 0, 0);
    for (;;)
        ;
}
#else
#include <unistd.h>

int
main(void)
{
    struct timespec ts;
    char buf[32];

    clock_gettime(CLOCK_REALTIME, &ts);
    return write(1, buf, (size_t)format_ns((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, buf)) > 0
               ? 0
               : 1;
}
#endif
