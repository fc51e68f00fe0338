/*
 * bench.h — what the store benchmarks share: the job row they all write
 * (the shape of a small real job), percentiles, timing and the RESULT
 * line format of bench/run.sh. Header-only: each .c beside it is one
 * program.
 */
#ifndef JOBQ_BENCH_STORE_H
#define JOBQ_BENCH_STORE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobq/job.h"

static char *bench_argv[] = {"/bin/true", NULL};

/* The row every benchmark writes: a no-op command, default queue and
 * policy, as `jobq submit -- /bin/true` would store it. */
static inline struct job_spec
bench_spec(void)
{
    struct job_spec s;
    memset(&s, 0, sizeof(s));
    s.command = bench_argv;
    s.queue = "default";
    s.max_attempts = 1;
    s.backoff_base_ms = 1000;
    s.backoff_max_ms = 600000;
    s.uid = 1000;
    s.gid = 1000;
    return s;
}

static inline int64_t
bench_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int
bench_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* p in [0, 100]; sorts v. */
static inline int64_t
bench_pct(int64_t *v, size_t n, double p)
{
    size_t i;
    qsort(v, n, sizeof(*v), bench_cmp_i64);
    i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static inline void
bench_result(const char *key, double value, const char *unit)
{
    printf("RESULT %s %.*f %s\n", key, value >= 100 ? 0 : 2, value, unit);
    fflush(stdout);
}

_Noreturn static inline void
bench_die(const char *what, int rc, const char *why)
{
    fprintf(stderr, "bench: %s: %s%s%s\n", what, strerror(rc < 0 ? -rc : rc), why ? ": " : "",
            why ? why : "");
    exit(1);
}

#endif
