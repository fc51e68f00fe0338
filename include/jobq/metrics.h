/*
 * metrics — jobqd's counters and histograms: what `stats` reports as
 * throughput and what /metrics exposes in the Prometheus text format.
 * Recording is lock-free on the hot paths (relaxed atomics); per-queue
 * series live in a small table under a mutex taken once per finished job.
 */
#ifndef JOBQ_METRICS_H
#define JOBQ_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "jobq/job.h"

struct metrics;

/* Returns owned *out (metrics_free). */
int metrics_new(struct metrics **out);
void metrics_free(struct metrics *m);

void metrics_submitted(struct metrics *m, int64_t n);
/* A finished attempt: queue (borrowed; NULL = "default"), outcome, how long
 * it ran and how long it waited from due to start, in ms. */
void metrics_finished(struct metrics *m, const char *queue, enum job_outcome outcome,
                      int64_t run_ms, int64_t wait_ms);
/* A store group commit: how long COMMIT took and how many requests. */
void metrics_commit(struct metrics *m, int64_t ns, int64_t requests);

/* Over the last window_s seconds (<= 60). */
struct metrics_rate {
    int window_s;
    int64_t submitted;
    int64_t finished;
};
void metrics_rate(struct metrics *m, struct metrics_rate *out);

/*
 * Appends the Prometheus text exposition of the counters and histograms to
 * *buf (realloc'd; *len and *cap track it). Returns 0 or -ENOMEM. The
 * caller adds the gauges it knows (jobs by state, running, coroutines).
 */
int metrics_render(struct metrics *m, char **buf, size_t *len, size_t *cap);

/* printf-append into a growable buffer; the helper render uses. */
int metrics_appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
