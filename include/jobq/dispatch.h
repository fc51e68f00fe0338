/*
 * dispatch — the job lifecycle. One dispatcher coroutine claims due jobs
 * from the store in batches up to the free capacity of a bounded pool of
 * job coroutines (--concurrency), and sleeps until it is kicked (a submit,
 * a finished job, a resume, a retry) or until the next run_at is due; it
 * never polls. Each job coroutine runs one attempt through exec, decides
 * what comes next (succeeded, retrying after a full-jitter backoff, failed)
 * and records it, fenced by the attempt number.
 *
 * Owns the pool, the table of running jobs (to cancel them), and the
 * per-attempt contexts: a context's deadline is the earlier of the
 * attempt's timeout and the job's absolute deadline, on the monotonic
 * clock, so a wall-clock jump moves neither.
 */
#ifndef JOBQ_DISPATCH_H
#define JOBQ_DISPATCH_H

#include <stdint.h>

struct daemon;
struct dispatch;
struct ctx;

/* Returns owned *out (dispatch_free). Borrows d for its lifetime. */
int dispatch_new(struct daemon *d, struct dispatch **out);
/* NULL-safe. After dispatch_stop. */
void dispatch_free(struct dispatch *dp);

/* The dispatcher's loop; spawn it as a coroutine (arg: the dispatch). It
 * returns after dispatch_stop. */
void dispatch_main(void *arg);

/* Wakes the loop to claim now. Safe from any thread; never blocks. */
void dispatch_kick(struct dispatch *dp);

/* Stops the running attempt of job id (cancel): SIGTERM to its process
 * group, SIGKILL after the kill grace. Returns -ENOENT if it does not run
 * here. */
int dispatch_cancel(struct dispatch *dp, int64_t id);

/* Changes the pool bound (SIGHUP). */
void dispatch_set_concurrency(struct dispatch *dp, int concurrency);

/* Jobs running now. */
int dispatch_running(struct dispatch *dp);

/*
 * Shutdown: stops claiming, lets running jobs finish for up to grace_ms,
 * then stops the rest (SIGKILL to their groups) and records their attempts
 * as interrupted so they run again at the next start. Returns when every
 * job coroutine has ended and the loop has returned. Parks the caller.
 */
void dispatch_stop(struct dispatch *dp, int64_t grace_ms);

#endif
