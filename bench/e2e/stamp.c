/*
 * stamp — the job of the start-latency benchmark: prints CLOCK_REALTIME
 * in nanoseconds as early as a C program can, then exits. bench/e2e.sh
 * builds a static copy of it (no dynamic loader, no shared libraries to
 * map), so what it prints is within some tens of microseconds of the
 * execve that started it. The client compares it to the wall-clock time
 * at which the submit's reply reached it (one clock, one host).
 */
#include <stdio.h>
#include <time.h>

int
main(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    printf("%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    return 0;
}
