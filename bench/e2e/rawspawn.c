/*
 * rawspawn — the reference of bench-e2e's exec rate: what this machine
 * allows without jobq. WORKERS threads (2, like jobqd's scheduler threads
 * here), each a plain loop of posix_spawn("/bin/true") + waitpid, for
 * SECONDS; prints "raw.spawn_rate <spawns per second>".
 *
 * usage: rawspawn [SECONDS [WORKERS]]
 */
#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static atomic_bool stop;
static atomic_long spawned;

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *
worker(void *arg)
{
    char *argv[] = {"/bin/true", NULL};
    long n = 0;

    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        pid_t pid;
        int status, rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
        if (rc != 0) {
            fprintf(stderr, "rawspawn: posix_spawn: %s\n", strerror(rc));
            exit(1);
        }
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        n++;
    }
    atomic_fetch_add(&spawned, n);
    return arg;
}

int
main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    int workers = argc > 2 ? atoi(argv[2]) : 2;
    pthread_t th[64];
    struct timespec ts;
    int64_t t0, t1;

    if (workers < 1 || workers > 64 || secs <= 0) {
        fprintf(stderr, "usage: rawspawn [SECONDS [WORKERS (1-64)]]\n");
        return 2;
    }
    t0 = now_ns();
    for (int i = 0; i < workers; i++)
        if (pthread_create(&th[i], NULL, worker, NULL) != 0) {
            fprintf(stderr, "rawspawn: pthread_create failed\n");
            return 1;
        }
    ts.tv_sec = (time_t)secs;
    ts.tv_nsec = (long)((secs - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
    atomic_store(&stop, true);
    for (int i = 0; i < workers; i++)
        pthread_join(th[i], NULL);
    t1 = now_ns();
    printf("raw.spawn_rate %.0f\n", (double)atomic_load(&spawned) * 1e9 / (double)(t1 - t0));
    return 0;
}
