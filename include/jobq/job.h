/*
 * job — the job model shared by the store, the protocol, the dispatcher
 * and the executor: states, the spec a client submits, the stored job with
 * its attempts, and the retry policy. Plain data with explicit owners; no
 * I/O here.
 *
 * Times: wall-clock fields are Unix milliseconds (int64, 0 = unset) because
 * they are persisted and shown; per-attempt timeouts are durations and are
 * enforced on the monotonic clock by the runtime.
 */
#ifndef JOBQ_JOB_H
#define JOBQ_JOB_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "jobq/limits.h"

enum job_state {
    JOB_SCHEDULED, /* waiting for its first run time */
    JOB_QUEUED,    /* ready to run */
    JOB_RUNNING,
    JOB_RETRYING,  /* an attempt failed; waiting for its backoff */
    JOB_SUCCEEDED, /* terminal */
    JOB_FAILED,    /* terminal: attempts exhausted, deadline passed, not retryable */
    JOB_CANCELED,  /* terminal */
    JOB_NSTATES
};

/* How one attempt ended. */
enum job_outcome {
    OUTCOME_NONE,        /* still running */
    OUTCOME_SUCCEEDED,   /* exited 0 */
    OUTCOME_EXITED,      /* exited non-zero (exit_code) */
    OUTCOME_SIGNALED,    /* killed by a signal it did not get from us (signal) */
    OUTCOME_TIMEOUT,     /* per-attempt timeout: we stopped it */
    OUTCOME_DEADLINE,    /* the job's absolute deadline: we stopped it */
    OUTCOME_CANCELED,    /* canceled while running: we stopped it */
    OUTCOME_INTERRUPTED, /* the daemon stopped or crashed under it */
    OUTCOME_SPAWN_ERROR, /* could not start (error says why; exit_code 126/127) */
    OUTCOME_NOUTCOMES
};

/* Returns a static lower-case name ("queued", "timeout", ...). */
const char *job_state_name(enum job_state s);
const char *job_outcome_name(enum job_outcome o);
/* Returns 0 and sets *s, or -EINVAL for an unknown name. Borrows name. */
int job_state_parse(const char *name, enum job_state *s);
bool job_state_terminal(enum job_state s);
/* Returns 0 and sets *o, or -EINVAL for an unknown name. Borrows name. */
int job_outcome_parse(const char *name, enum job_outcome *o);

/* What a client submits. Every pointer is owned by the spec
 * (job_spec_free); arrays are NULL-terminated. */
struct job_spec {
    char *name;           /* may be NULL */
    char *queue;          /* NULL means "default" */
    int32_t priority;     /* higher runs first */
    char **command;       /* argv, at least one element */
    char **env;           /* "K=V" entries added to the daemon's base env; may be NULL */
    char *cwd;            /* NULL: the daemon's job directory default */
    char *unique_key;     /* NULL: no idempotency key */
    int32_t max_attempts; /* >= 1, including the first */
    int64_t backoff_base_ms;
    int64_t backoff_max_ms;
    int64_t timeout_ms; /* per attempt; 0 = none */
    int64_t deadline;   /* Unix ms; 0 = none */
    int64_t run_at;     /* Unix ms; 0 = now */
    /* Filled by the server from SO_PEERCRED, never from the request. */
    uid_t uid;
    gid_t gid;
};

void job_spec_free(struct job_spec *spec);

/*
 * Checks a spec against limits.h before it reaches the store: sizes, UTF-8
 * in every string, an empty command, numbers out of range. Returns 0, or
 * -EINVAL with a one-line reason in why. Borrows spec.
 */
int job_spec_validate(const struct job_spec *spec, char *why, size_t whylen);

/* One attempt as stored. */
struct job_attempt {
    int32_t attempt;     /* 1-based */
    int64_t started_at;  /* Unix ms */
    int64_t finished_at; /* Unix ms, 0 while running */
    enum job_outcome outcome;
    int32_t exit_code;  /* valid for OUTCOME_EXITED/SUCCEEDED/SPAWN_ERROR, else -1 */
    int32_t signal;     /* the terminating signal, 0 if none */
    char *error;        /* owned; NULL if none */
    int64_t log_bytes;  /* captured output kept */
    bool log_truncated; /* output beyond the cap was dropped */
    int32_t pgid;       /* process group while running, 0 if none */
    /* Kernel boot id when the attempt started: a pgid from another boot
     * names no leftover process. Empty if unknown. */
    char boot_id[JOBQ_BOOT_ID_BYTES];
};

/* A job as stored, with its spec. Owned by the caller (job_free). */
struct job {
    int64_t id;
    struct job_spec spec;
    enum job_state state;
    int32_t attempt; /* attempts started so far */
    /* Attempts interrupted by the daemon stopping: they do not use up the
     * budget, which is max_attempts - (attempt - interrupted). */
    int32_t interrupted;
    int64_t created_at;
    int64_t started_at;  /* first attempt's start, 0 if never started */
    int64_t finished_at; /* when it became terminal, 0 if not */
    int64_t updated_at;
    /* Outcome of the last finished attempt. */
    enum job_outcome outcome;
    int32_t exit_code; /* -1 if none */
    int32_t signal;
    char *error;        /* owned; NULL if none */
    bool log_truncated; /* the last finished attempt's output went over the cap */
    /* Filled by store_job_get only; NULL/0 elsewhere. Owned. */
    struct job_attempt *attempts;
    int32_t nattempts;
};

/* NULL-safe. Frees the spec, attempts and the job itself. */
void job_free(struct job *job);
/* Frees what the attempts point to and the array. NULL-safe. */
void job_attempts_free(struct job_attempt *a, int32_t n);

/*
 * Backoff before attempt `attempt + 1`, after attempt `attempt` (1-based)
 * failed: full jitter over base * 2^(attempt-1), capped at max. rnd is a
 * uniform random 64-bit value (the caller's generator, so tests are
 * deterministic). Returns ms in [0, min(max, base * 2^(attempt-1))].
 */
int64_t job_backoff_ms(int64_t base_ms, int64_t max_ms, int32_t attempt, uint64_t rnd);

/* Wall clock, Unix milliseconds. */
int64_t job_now_ms(void);

#endif
