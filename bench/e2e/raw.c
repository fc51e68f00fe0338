/*
 * raw — the references of bench-e2e: what this machine allows without
 * jobq, measured in the same run as jobqd's figures.
 *
 *   raw spawn SECONDS WORKERS   WORKERS threads, each a plain loop of
 *                               posix_spawn("/bin/true") + waitpid, for
 *                               SECONDS: "raw.spawn_rate <per second>"
 *   raw start N STAMP           N times, one at a time: posix_spawn of
 *                               STAMP (which prints CLOCK_REALTIME ns) and
 *                               the time from just before the call to the
 *                               time it printed: the floor under jobqd's
 *                               start latency, "raw.spawn_start_p50_us" and
 *                               "_p99_us"
 *   raw fsync DIR N             N appends of 4 KiB + fdatasync to a file in
 *                               DIR, the floor of one durable commit:
 *                               "raw.fsync_p50_us"
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static atomic_bool stop;
static atomic_long spawned;

static int64_t
clock_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

_Noreturn static void
die(const char *what, int err)
{
    fprintf(stderr, "raw: %s: %s\n", what, strerror(err));
    exit(1);
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* p in [0, 100] of v[0..n), which it sorts. */
static int64_t
pct(int64_t *v, size_t n, double p)
{
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    qsort(v, n, sizeof(*v), cmp_i64);
    return v[i < n ? i : n - 1];
}

static void
reap(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            die("waitpid", errno);
}

static void *
spawn_worker(void *arg)
{
    char *argv[] = {"/bin/true", NULL};
    long n = 0;

    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        pid_t pid;
        int rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
        if (rc != 0)
            die("posix_spawn", rc);
        reap(pid);
        n++;
    }
    atomic_fetch_add(&spawned, n);
    return arg;
}

static int
mode_spawn(double secs, int workers)
{
    pthread_t th[64];
    struct timespec ts;
    int64_t t0, t1;

    if (workers < 1 || workers > 64 || secs <= 0) {
        fprintf(stderr, "usage: raw spawn SECONDS WORKERS (1-64)\n");
        return 2;
    }
    t0 = clock_ns(CLOCK_MONOTONIC);
    for (int i = 0; i < workers; i++)
        if (pthread_create(&th[i], NULL, spawn_worker, NULL) != 0)
            die("pthread_create", EAGAIN);
    ts.tv_sec = (time_t)secs;
    ts.tv_nsec = (long)((secs - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
    atomic_store(&stop, true);
    for (int i = 0; i < workers; i++)
        pthread_join(th[i], NULL);
    t1 = clock_ns(CLOCK_MONOTONIC);
    printf("raw.spawn_rate %.0f\n", (double)atomic_load(&spawned) * 1e9 / (double)(t1 - t0));
    return 0;
}

static int
mode_start(long n, char *stamp)
{
    char *argv[] = {stamp, NULL};
    int64_t *lat;

    if (n <= 0 || (lat = malloc(sizeof(*lat) * (size_t)n)) == NULL) {
        fprintf(stderr, "usage: raw start N STAMP\n");
        return 2;
    }
    for (long i = 0; i < n; i++) {
        struct timespec pause = {0, 2000000};
        posix_spawn_file_actions_t fa;
        char buf[64];
        ssize_t got;
        int p[2], rc;
        int64_t t0;
        pid_t pid;

        if (pipe2(p, O_CLOEXEC) < 0)
            die("pipe", errno);
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, p[1], 1);
        t0 = clock_ns(CLOCK_REALTIME);
        if ((rc = posix_spawn(&pid, stamp, &fa, NULL, argv, environ)) != 0)
            die(stamp, rc);
        posix_spawn_file_actions_destroy(&fa);
        close(p[1]);
        while ((got = read(p[0], buf, sizeof(buf) - 1)) < 0 && errno == EINTR)
            ;
        close(p[0]);
        reap(pid);
        if (got <= 0)
            die("stamp printed nothing", EIO);
        buf[got] = '\0';
        lat[i] = strtoll(buf, NULL, 10) - t0;
        nanosleep(&pause, NULL); /* idle between, as for jobqd */
    }
    printf("raw.spawn_start_p50_us %.0f\n", (double)pct(lat, (size_t)n, 50) / 1e3);
    printf("raw.spawn_start_p99_us %.0f\n", (double)pct(lat, (size_t)n, 99) / 1e3);
    free(lat);
    return 0;
}

static int
mode_fsync(const char *dir, long n)
{
    char path[4096], block[4096];
    int64_t *lat;
    int fd;

    if (n <= 0 || (lat = malloc(sizeof(*lat) * (size_t)n)) == NULL) {
        fprintf(stderr, "usage: raw fsync DIR N\n");
        return 2;
    }
    snprintf(path, sizeof(path), "%s/raw-fsync.dat", dir);
    if ((fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600)) < 0)
        die(path, errno);
    memset(block, 'w', sizeof(block));
    /* Appends, as WAL commits are: the size changes, so fdatasync flushes
     * the inode too. */
    for (long i = 0; i < n; i++) {
        int64_t t0 = clock_ns(CLOCK_MONOTONIC);
        if (pwrite(fd, block, sizeof(block), (off_t)i * (off_t)sizeof(block)) < 0 ||
            fdatasync(fd) < 0)
            die(path, errno);
        lat[i] = clock_ns(CLOCK_MONOTONIC) - t0;
    }
    close(fd);
    unlink(path);
    printf("raw.fsync_p50_us %.0f\n", (double)pct(lat, (size_t)n, 50) / 1e3);
    free(lat);
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "spawn") == 0)
        return mode_spawn(atof(argv[2]), atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "start") == 0)
        return mode_start(atol(argv[2]), argv[3]);
    if (argc == 4 && strcmp(argv[1], "fsync") == 0)
        return mode_fsync(argv[2], atol(argv[3]));
    fprintf(stderr, "usage: raw spawn SECONDS WORKERS | start N STAMP | fsync DIR N\n");
    return 2;
}
