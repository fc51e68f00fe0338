/*
 * store_deltas — changes to the job counters, summed per (queue, uid,
 * state), that a backend collects while a write group runs and applies at
 * its end: one counter update per key and group rather than one per job.
 * Both backends keep their counters this way (SQLite's counters table,
 * PostgreSQL's count_deltas rows); only what they do with the sums
 * differs.
 */
#ifndef JOBQ_STORE_DELTAS_H
#define JOBQ_STORE_DELTAS_H

#include <stdint.h>
#include <sys/types.h>

struct store_delta {
    char *queue;
    uid_t uid;
    int state; /* enum job_state */
    int64_t n;
};

struct store_deltas {
    struct store_delta *v;
    int n, cap;
    /* The amounts at the last mark: a request's savepoint. */
    int64_t *snap;
    int nsnap, capsnap;
};

/* Adds n (negative: jobs left the state) to the key's sum. 0 or -ENOMEM. */
int store_deltas_add(struct store_deltas *d, const char *queue, uid_t uid, int state, int64_t n);
/* Forgets every sum from index `keep` on (0: all); the array stays. */
void store_deltas_truncate(struct store_deltas *d, int keep);
/* Marks the sums as they are, for a rollback to them. 0 or -ENOMEM. */
int store_deltas_mark(struct store_deltas *d);
/* Back to the last mark: keys added since are dropped, amounts restored. */
void store_deltas_rollback(struct store_deltas *d);
void store_deltas_free(struct store_deltas *d);

#endif
