/*
 * metrics — counters, a 60-second ring for throughput, and fixed-bucket
 * histograms. Buckets are cumulative only when rendered, so recording is
 * one relaxed increment per bucket hit and the sum.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobq/metrics.h"

#define RING_SECONDS 60
#define QUEUES_MAX 256 /* further queues fold into "other" in the series */

/* Seconds: from a millisecond job to a day-long one. */
static const double duration_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,  1,
                                          2.5,   5,    10,    30,   60,  300,  1800, 7200};
/* Seconds: a group commit is one fsync, about 0.1-10 ms on real disks. */
static const double commit_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                        0.01,   0.025,   0.05,   0.1,   0.25,   1};
/* Requests per group commit. */
static const double batch_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

#define NB(a) (sizeof(a) / sizeof((a)[0]))

struct hist {
    const double *bounds;
    size_t n;
    atomic_uint_fast64_t counts[17]; /* n + 1 (+Inf) at most */
    _Atomic double sum;
    atomic_uint_fast64_t total;
};

struct queue_series {
    char name[64];
    atomic_uint_fast64_t completed[OUTCOME_NOUTCOMES];
};

struct metrics {
    atomic_uint_fast64_t submitted_total;
    struct {
        _Atomic int64_t second;
        atomic_uint_fast64_t submitted, finished;
    } ring[RING_SECONDS];
    struct hist duration, wait, commit, batch;
    pthread_mutex_t lock;
    struct queue_series *queues[QUEUES_MAX];
    int nqueues;
};

static void
hist_init(struct hist *h, const double *bounds, size_t n)
{
    h->bounds = bounds;
    h->n = n;
}

static void
hist_add(struct hist *h, double v)
{
    size_t i = 0;
    while (i < h->n && v > h->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->total, 1, memory_order_relaxed);
    double old = atomic_load_explicit(&h->sum, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&h->sum, &old, old + v, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

int
metrics_new(struct metrics **out)
{
    struct metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    hist_init(&m->duration, duration_buckets, NB(duration_buckets));
    hist_init(&m->wait, duration_buckets, NB(duration_buckets));
    hist_init(&m->commit, commit_buckets, NB(commit_buckets));
    hist_init(&m->batch, batch_buckets, NB(batch_buckets));
    pthread_mutex_init(&m->lock, NULL);
    *out = m;
    return 0;
}

void
metrics_free(struct metrics *m)
{
    if (m == NULL)
        return;
    for (int i = 0; i < m->nqueues; i++)
        free(m->queues[i]);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static int64_t
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/* The ring slot of this second, reset if it last held an older second. */
static int
ring_slot(struct metrics *m)
{
    int64_t s = now_s();
    int i = (int)(s % RING_SECONDS);
    int64_t old = atomic_load(&m->ring[i].second);
    if (old != s && atomic_compare_exchange_strong(&m->ring[i].second, &old, s)) {
        atomic_store(&m->ring[i].submitted, 0);
        atomic_store(&m->ring[i].finished, 0);
    }
    return i;
}

void
metrics_submitted(struct metrics *m, int64_t n)
{
    atomic_fetch_add_explicit(&m->submitted_total, (uint64_t)n, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->ring[ring_slot(m)].submitted, (uint64_t)n, memory_order_relaxed);
}

static struct queue_series *
queue_get(struct metrics *m, const char *queue)
{
    struct queue_series *q = NULL;
    const char *name = queue ? queue : "default";

    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < m->nqueues; i++)
        if (strcmp(m->queues[i]->name, name) == 0)
            q = m->queues[i];
    if (q == NULL && m->nqueues < QUEUES_MAX && (q = calloc(1, sizeof(*q))) != NULL) {
        snprintf(q->name, sizeof(q->name), "%s", m->nqueues < QUEUES_MAX - 1 ? name : "other");
        m->queues[m->nqueues++] = q;
    }
    if (q == NULL && m->nqueues > 0)
        q = m->queues[m->nqueues - 1];
    pthread_mutex_unlock(&m->lock);
    return q;
}

void
metrics_finished(struct metrics *m, const char *queue, enum job_outcome outcome, int64_t run_ms,
                 int64_t wait_ms)
{
    struct queue_series *q = queue_get(m, queue);
    if (q != NULL && (unsigned)outcome < OUTCOME_NOUTCOMES)
        atomic_fetch_add_explicit(&q->completed[outcome], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->ring[ring_slot(m)].finished, 1, memory_order_relaxed);
    hist_add(&m->duration, (double)run_ms / 1000.0);
    if (wait_ms >= 0)
        hist_add(&m->wait, (double)wait_ms / 1000.0);
}

void
metrics_commit(struct metrics *m, int64_t ns, int64_t requests)
{
    hist_add(&m->commit, (double)ns / 1e9);
    hist_add(&m->batch, (double)requests);
}

void
metrics_rate(struct metrics *m, struct metrics_rate *out)
{
    int64_t s = now_s();
    memset(out, 0, sizeof(*out));
    out->window_s = RING_SECONDS;
    for (int i = 0; i < RING_SECONDS; i++) {
        int64_t sec = atomic_load(&m->ring[i].second);
        if (sec > s - RING_SECONDS && sec <= s) {
            out->submitted += (int64_t)atomic_load(&m->ring[i].submitted);
            out->finished += (int64_t)atomic_load(&m->ring[i].finished);
        }
    }
}

int
metrics_appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        size_t room = *cap - *len;
        va_start(ap, fmt);
        n = vsnprintf(*buf ? *buf + *len : NULL, *buf ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -EINVAL;
        if (*buf != NULL && (size_t)n < room) {
            *len += (size_t)n;
            return 0;
        }
        size_t ncap = *cap ? *cap * 2 : 4096;
        while (ncap < *len + (size_t)n + 1)
            ncap *= 2;
        char *nb = realloc(*buf, ncap);
        if (nb == NULL)
            return -ENOMEM;
        *buf = nb;
        *cap = ncap;
    }
}

static int
render_hist(struct hist *h, const char *name, const char *help, char **buf, size_t *len,
            size_t *cap)
{
    uint64_t cum = 0;
    int rc =
        metrics_appendf(buf, len, cap, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (size_t i = 0; rc == 0 && i < h->n; i++) {
        cum += atomic_load(&h->counts[i]);
        rc = metrics_appendf(buf, len, cap, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i],
                             (unsigned long long)cum);
    }
    cum += atomic_load(&h->counts[h->n]);
    if (rc == 0)
        rc = metrics_appendf(buf, len, cap,
                             "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
                             (unsigned long long)cum, name, atomic_load(&h->sum), name,
                             (unsigned long long)atomic_load(&h->total));
    return rc;
}

int
metrics_render(struct metrics *m, char **buf, size_t *len, size_t *cap)
{
    int rc = metrics_appendf(buf, len, cap,
                             "# HELP jobq_jobs_submitted_total Jobs accepted by submit.\n"
                             "# TYPE jobq_jobs_submitted_total counter\n"
                             "jobq_jobs_submitted_total %llu\n"
                             "# HELP jobq_jobs_completed_total Attempts that ended, by queue "
                             "and outcome.\n"
                             "# TYPE jobq_jobs_completed_total counter\n",
                             (unsigned long long)atomic_load(&m->submitted_total));
    pthread_mutex_lock(&m->lock);
    for (int i = 0; rc == 0 && i < m->nqueues; i++)
        for (int o = OUTCOME_SUCCEEDED; rc == 0 && o < OUTCOME_NOUTCOMES; o++) {
            uint64_t v = atomic_load(&m->queues[i]->completed[o]);
            if (v > 0)
                rc = metrics_appendf(buf, len, cap,
                                     "jobq_jobs_completed_total{queue=\"%s\",outcome=\"%s\"} "
                                     "%llu\n",
                                     m->queues[i]->name, job_outcome_name((enum job_outcome)o),
                                     (unsigned long long)v);
        }
    pthread_mutex_unlock(&m->lock);
    if (rc == 0)
        rc = render_hist(&m->duration, "jobq_job_duration_seconds",
                         "How long attempts ran, start to end.", buf, len, cap);
    if (rc == 0)
        rc = render_hist(&m->wait, "jobq_job_wait_seconds",
                         "How long jobs waited from due to start.", buf, len, cap);
    if (rc == 0)
        rc = render_hist(&m->commit, "jobq_store_commit_seconds",
                         "Duration of each store group commit.", buf, len, cap);
    if (rc == 0)
        rc = render_hist(&m->batch, "jobq_store_batch_size", "Requests per store group commit.",
                         buf, len, cap);
    return rc;
}
