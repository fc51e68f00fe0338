/*
 * exec_int.h — what exec.c shares with its two halves: exec_spawn.c (the
 * spawn path, run on a helper thread) and exec_proc.c (finding a job's
 * processes in /proc: escapees at a job's end, leftovers at start-up).
 * Private to daemon/.
 */
#ifndef JOBQ_EXEC_INT_H
#define JOBQ_EXEC_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "jobq/exec.h"
#include "jobq/limits.h"

/* ---- exec_spawn.c ------------------------------------------------------ */

struct exec_spawn {
    /* in, borrowed */
    const struct exec_opts *o;
    const struct job *job;
    int32_t attempt;
    int out_fd; /* write end of the capture pipe: the job's stdout and stderr */
    /* out */
    pid_t pid;
    int pidfd; /* owned by the caller when code == 0 */
    int code;  /* 0: started; 126/127: could not execute (error says why) */
    char error[256];
};

/* Blocking: run through rt_blocking (NSS, the file system, and CLONE_VFORK
 * holds the thread until the child has exec'd). Resolves the command,
 * builds the environment and starts the job in a new session. Returns 0
 * (then see sp->code) or -errno when nothing could be started (fds, memory,
 * process limits): the caller retries the attempt later. Borrows sp. */
int exec_spawn(void *sp);

/* ---- exec_proc.c ------------------------------------------------------- */

/* The pids a job-end sweep looks at and what it found. */
struct exec_sweep {
    struct exec_children *children; /* NULL: every child of ours is a leader */
    const char *instance;           /* the marker: JOBQ_INSTANCE=instance ... */
    int64_t id;                     /* ... and JOBQ_JOB_ID=id */
    /* The job's leader, still unreaped: its pid names the job's session,
     * whose members are the job's without a look at their environment.
     * 0 once reaped (the number may then be reused): marker only. */
    pid_t leader;
    /* Pids above from (the leader's at first) are probed; upto is where
     * the probe stopped: the next round starts there. */
    pid_t from, upto;
    bool full; /* scan all of /proc instead of cand */
    int ncand, capcand;
    /* cand_inline, or, once the probe found more, an array on the heap
     * that exec_sweep_fini frees. */
    pid_t *cand;
    pid_t cand_inline[JOBQ_EXEC_PROBE_CANDIDATES];
    int killed;
};

/* Not blocking (getsid/waitid/kill only): probes the pids allocated after
 * sw->from, kills members of the job's session that left its group, and
 * collects processes it cannot attribute in sw->cand (or sets sw->full)
 * for exec_sweep_check. ran_ms: how long the job ran (the first round of
 * a long job is a full scan: its pids may have wrapped). */
void exec_sweep_probe(struct exec_sweep *sw, int64_t ran_ms);
/* Frees what the probe allocated. */
void exec_sweep_fini(struct exec_sweep *sw);

/* Blocking: reads the environment of sw->cand (or of every process if
 * sw->full) and SIGKILLs those carrying the job's marker, with their
 * process groups. Returns how many it killed this time. */
int exec_sweep_check(void *sw);

/* ---- the registry of leaders (exec_proc.c) ------------------------------ */

/* Before the clone: counts a spawn in flight (exec_children_reap holds off)
 * and makes room for one more leader, so that registering it cannot fail.
 * NULL-safe. Returns 0 or -ENOMEM. */
int exec_children_spawning(struct exec_children *c);
/* After the clone: registers pid (0 if none was started) and ends the
 * spawn in flight. NULL-safe. */
void exec_children_spawned(struct exec_children *c, pid_t pid);
/* After the leader is reaped (not before: an unregistered zombie would be
 * fair game for exec_children_reap). NULL-safe. */
void exec_children_remove(struct exec_children *c, pid_t pid);
/* Whether an exited child that is not a registered leader waits to be
 * reaped: one waitid, to skip a pass over /proc/self/task when none does. */
bool exec_children_orphan_waiting(struct exec_children *c);

#endif
