/*
 * exec — runs one attempt of a job as a process tree and captures its
 * output. Spawns the command in a new session and process group with one
 * clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD) (the child does only raw
 * system calls up to execve), awaits the leader through its pidfd in the
 * runtime, copies stdout and stderr (one pipe, interleaved) into a capped
 * per-attempt log file, and ends the job like systemd's
 * KillMode=control-group: when the leader exits, or when the attempt's
 * context ends (SIGTERM, SIGKILL after the grace), nothing the job started
 * outlives it. At start-up it kills what a crashed daemon left running.
 * docs/EXEC.md explains each choice.
 *
 * Owns the job's process, its pidfd, the capture pipe and the log file
 * while exec_run runs; owns nothing between calls (no state of its own:
 * every function reads its settings from a borrowed struct exec_opts).
 *
 * Threads: exec_run parks its coroutine, never its scheduler thread:
 * opening files, NSS lookups, the spawn and /proc reads go through
 * rt_blocking; only the copier's small page-cache writes to the log run on
 * the scheduler thread. The functions marked "Blocking" must run on a
 * helper thread (rt_blocking) or outside the runtime.
 */
#ifndef JOBQ_EXEC_H
#define JOBQ_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "jobq/job.h"

struct ctx;
struct store_running;
struct exec_idents;
struct exec_children;

struct exec_opts {
    /* <state-dir>/logs: attempt logs live below it, created on demand
     * (directories 0750, files 0640, owned by the daemon). */
    const char *log_dir;
    /* Output kept per attempt; 0: JOBQ_LOG_CAP_BYTES. */
    int64_t log_cap_bytes;
    /* SIGTERM to the group -> SIGKILL; 0: JOBQ_KILL_GRACE_MS. */
    int64_t kill_grace_ms;
    /* Value of JOBQ_INSTANCE in every job's environment (the database
     * path): with JOBQ_JOB_ID it marks this daemon's processes, so that
     * escapees and a crashed daemon's leftovers can be found. NULL: "". */
    const char *instance;
    /* The daemon runs as root: run each job as job->spec.uid/gid with the
     * uid's supplementary groups, and HOME/USER/LOGNAME of that user. */
    bool as_submitter;
    /* Working directory of jobs without spec.cwd; NULL: the daemon's. */
    const char *default_cwd;
    /* exec_kill_leftovers: the current boot id; NULL reads
     * /proc/sys/kernel/random/boot_id (tests set it). */
    const char *boot_id;
    /* The daemon's children (exec_children_new), shared by every exec_run;
     * NULL: the daemon adopts no orphans, and every child of ours is taken
     * for a job's leader. */
    struct exec_children *children;
    /* Cache of submitters' identities (exec_idents_new); NULL: look each
     * one up for every job. */
    struct exec_idents *idents;
};

struct exec_result {
    int64_t started_at, finished_at; /* Unix ms: spawn, leader's end */
    pid_t pgid;                      /* = the leader's pid and session id; 0 if none started */
    /* 0: the job ended by itself. RT_ECANCELED / RT_EDEADLINE: the context
     * ended it (SIGTERM, then SIGKILL after the grace) and the fields below
     * say how the leader died; with pgid 0 the context had ended before
     * anything was started. The caller maps it to timeout, deadline,
     * canceled or interrupted. */
    int stopped;
    /* OUTCOME_SUCCEEDED, _EXITED, _SIGNALED or _SPAWN_ERROR (OUTCOME_NONE
     * if nothing was started because the context had ended). */
    enum job_outcome outcome;
    int32_t exit_code; /* -1 if none; 127 command not found, 126 cannot execute */
    int32_t signal;    /* the leader's terminating signal, or 0 */
    /* One line for people when something went wrong ("command not found:
     * foo", "log capture failed: No space left on device"), else "". A
     * capture failure leaves the outcome alone. */
    char error[256];
    int64_t log_bytes;    /* size of the log file: output kept + truncation marker */
    int64_t output_bytes; /* everything the job wrote, kept or dropped */
    bool log_truncated;   /* over the cap (marked in the log), or capture failed */
};

/*
 * Runs attempt `attempt` of job to its end in the calling coroutine (which
 * parks; its thread does not). Calls on_started(arg, pgid) once the
 * process group exists (the dispatcher records it durably) and
 * on_output(arg) after each chunk written to the log (wakes `logs
 * --follow`); on_output may be NULL. If on_started fails, the group is
 * killed and its error is returned.
 *
 * Returns 0 with *res filled (a command that could not be executed is a
 * result: OUTCOME_SPAWN_ERROR), or -errno if nothing could be attempted
 * (no fds for the pipe, fork refused with EAGAIN/ENOMEM): the caller
 * retries later. Borrows o, job, ctx (NULL: no deadline) and arg.
 */
int exec_run(const struct exec_opts *o, const struct job *job, int32_t attempt, struct ctx *ctx,
             int (*on_started)(void *arg, pid_t pgid), void (*on_output)(void *arg), void *arg,
             struct exec_result *res);

/* Writes the path of an attempt's log, <log_dir>/<id / 1000>/<id>.<attempt>.log,
 * into buf (len >= PATH_MAX is always enough). -ENAMETOOLONG if it does not
 * fit. Borrows o. */
int exec_log_path(const struct exec_opts *o, int64_t id, int32_t attempt, char *buf, size_t len);

/* Blocking. Reads up to len bytes at offset of an attempt's log into buf;
 * *n = 0 at the end; *size is the file's current size. A missing file is
 * an empty log (jobs that print nothing have none). Borrows o, buf. */
int exec_log_read(const struct exec_opts *o, int64_t id, int32_t attempt, int64_t offset, void *buf,
                  size_t len, size_t *n, int64_t *size);

/* Blocking. Removes every attempt log of job id (purge); 0 if it had none. */
int exec_log_remove(const struct exec_opts *o, int64_t id);

/*
 * Blocking; at start-up, before the attempts are recorded as interrupted
 * and their jobs re-queued. For each of the n open attempts of r whose
 * boot id is this boot's (or unknown), SIGKILLs every process carrying the
 * attempt's marker (JOBQ_INSTANCE = o->instance and JOBQ_JOB_ID = its id:
 * this finds processes that left the group, and attempts whose pgid was
 * never recorded) and the process groups they are in, then waits until
 * they are gone (JOBQ_EXEC_LEFTOVER_WAIT_MS), so a job never runs twice
 * at once. A group without a marked process is never touched: after a
 * crash its number may name someone else's group. *killed counts the
 * processes killed. -ETIMEDOUT with a reason in why if some survive.
 * Borrows o, r.
 */
int exec_kill_leftovers(const struct exec_opts *o, const struct store_running *r, size_t n,
                        int *killed, char *why, size_t whylen);

/*
 * The daemon's children. exec_run registers each job's leader here for as
 * long as it waits for it; any other child is an orphan the daemon adopted
 * as the reaper of its jobs' descendants (PR_SET_CHILD_SUBREAPER): a
 * process a job left behind whose parent died comes to us instead of init.
 * exec_run kills and reaps those of its own job before it returns, so
 * nothing a job started outlives it, not even as a zombie, also where init
 * does not reap (jobqd as pid 1 in a container, some VMs). The registry
 * also lets a job's sweep pass over other jobs' sessions at a glance.
 * One per daemon; every function is safe from any thread.
 */

/* Makes the calling process a child subreaper. Returns owned *out
 * (exec_children_free). */
int exec_children_new(struct exec_children **out);
/* NULL-safe. No exec_run may be running. */
void exec_children_free(struct exec_children *c);

/* Submitters' identities (passwd entry, supplementary groups) kept for
 * JOBQ_EXEC_IDENT_TTL_MS, so a root daemon does not ask NSS for every job.
 * Safe from any thread. Returns owned *out (exec_idents_free). */
int exec_idents_new(struct exec_idents **out);
/* NULL-safe. No exec_run may be running. */
void exec_idents_free(struct exec_idents *c);
/*
 * Reaps every exited child that is not a registered leader. exec_run
 * calls it when its job left processes behind; call it also when SIGCHLD
 * arrives (coalescing is fine), for orphans that exit while their job
 * runs. Never blocks (it skips its pass while a spawn is in flight, so as
 * never to take a leader that is not registered yet). Returns how many it
 * reaped.
 */
int exec_children_reap(struct exec_children *c);
/* How many environments jobs' sweeps have read, and how many reads they
 * skipped because the process had been read before and found a stranger
 * (docs/EXEC.md). NULL-safe. */
void exec_children_sweep_stats(struct exec_children *c, long *env_reads, long *stranger_hits);

#endif
