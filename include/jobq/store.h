/*
 * store — durable job state. One writer thread owns the write connection and
 * commits all pending writes in one transaction (group commit; with
 * PostgreSQL a second writer does the same for claims alone); callers
 * resume only after their write is on disk, so an id handed to a client
 * survives kill -9 and power loss. Readers use their own connections, off
 * the scheduler threads (the runtime's blocking pool). The database itself
 * sits behind a narrow backend interface (struct store_backend_ops):
 * SQLite (one daemon, a file in its state directory) or PostgreSQL
 * (several daemons, "nodes", sharing one database: docs/POSTGRES.md).
 * docs/STORE.md has the schema, the transactions and the durability
 * argument.
 *
 * Every function returns 0 (or a count) or a negative errno:
 *   -EINVAL     bad input (a spec failing job_spec_validate, a bad state)
 *   -ENOENT     no such job, or not visible to the caller
 *   -ESTALE     a completion or pgid for an attempt that is no longer open
 *   -EALREADY   cancel of a job already terminal
 *   -EBUSY      retry of a job that is not failed/canceled, or whose
 *               canceled attempt has not been completed yet
 *   -EAGAIN     submit refused: max_queued jobs already wait
 *   storage errors (store_error_is_storage): -ENOSPC (disk full), -EIO
 *               (I/O error, corruption found while running), -ETIMEDOUT
 *               (database locked by another process), -ENOMEM, -EROFS,
 *               -EACCES; nothing of the request was committed.
 *   After a failed sync of the database files the store is *stopped*: it
 *   calls opts->on_fatal once, and every later write fails with -EIO at
 *   once without touching the files (reads still work). What the files
 *   hold after a failed fsync is unknown (the kernel may have dropped the
 *   pages it could not write, and reports that only once: "fsyncgate"),
 *   so the owner must close the store and open it again, which rebuilds
 *   the state from what is on disk. A failed write or a full disk is not
 *   fatal: the request fails and later writes work again.
 *
 * Blocking: the write and read calls park the calling coroutine (not its
 * thread) until done; called from a plain thread (main, tests) they block
 * that thread. Never call them while holding a lock the writer needs.
 */
#ifndef JOBQ_STORE_H
#define JOBQ_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "jobq/job.h"

struct store;
/* One backend connection; its body belongs to the backend. */
struct store_conn;

/* ---- options ---------------------------------------------------------- */

/* Durability of a commit. FULL is the product; the others exist so a
 * benchmark can build a big database quickly and must not be used to serve
 * clients (an acknowledged job could be lost on power failure). */
enum store_sync { STORE_SYNC_FULL, STORE_SYNC_NORMAL, STORE_SYNC_OFF };

/* Where an injected failure strikes (tests). */
enum store_fault_point {
    STORE_FAULT_COMMIT, /* just before COMMIT of a group */
    STORE_FAULT_WRITE,  /* each write the backend makes to its files */
    STORE_FAULT_SYNC,   /* each fsync the backend makes */
};

/* What another node did that this one must act on (PostgreSQL). */
enum store_event {
    STORE_EVENT_WAKE,    /* work may be claimable: kick the dispatcher */
    STORE_EVENT_CHANGED, /* job id changed state (id 0: maybe any job) */
    STORE_EVENT_CANCEL,  /* job id was canceled: stop it if it runs here */
    /* This node's lease ran out (it was cut off from the database, or
     * stalled, longer than the lease): other nodes run its jobs again, so
     * it must stop every one of them now. Writes fail from now on. */
    STORE_EVENT_LEASE_LOST,
};

struct store_running;

struct store_opts {
    /* SQLite: the database file, created if absent. PostgreSQL: a libpq
     * URL (postgresql://...), which selects that backend. */
    const char *path;
    const char *backend; /* "sqlite" or "postgresql"; NULL: by path */
    enum store_sync sync;
    int readers;         /* read connections; 0: JOBQ_STORE_READERS */
    int busy_timeout_ms; /* 0: JOBQ_STORE_BUSY_TIMEOUT_MS */
    /* Checkpoint policy; 0: JOBQ_STORE_CHECKPOINT_COMMITS / _IDLE_MS. */
    int checkpoint_commits;
    int checkpoint_idle_ms;
    /* How long the writer waits for the requesters of its last group to
     * come back before it starts the next; 0: JOBQ_STORE_GATHER_US, < 0:
     * never. */
    int gather_us;
    /* How long a lazy write waits for a group to ride in; 0:
     * JOBQ_STORE_LAZY_MS. */
    int lazy_ms;
    /* How long a group of patient writes may wait for more; 0:
     * JOBQ_STORE_LINGER_US, < 0: never. */
    int linger_us;
    /* Skip the integrity check at open (benchmarks reopening a database
     * they just built); the product always checks. */
    bool skip_check;
    /* Recorded with each attempt; NULL: read /proc/sys/kernel/random/boot_id. */
    const char *boot_id;
    /* Submits are refused with -EAGAIN while this many jobs are scheduled,
     * queued or retrying; 0: no limit. store_set_max_queued changes it. */
    int64_t max_queued;
    /* Seed of the jitter generator used by recovery; 0: from the clock. */
    uint64_t seed;
    /* Called once, on a writer thread, when a sync of the database has
     * failed and the store has stopped writing (see the top of this file);
     * err is the error of the failed request. Must not block. NULL: none. */
    void (*on_fatal)(void *arg, int err);
    void *on_fatal_arg;
    /*
     * Failure injection, consulted at each point: return 0 to proceed, or
     * -ENOSPC / -EIO to make that step fail as the disk would. Called on
     * a writer thread. NULL in the product.
     */
    int (*fault)(void *arg, enum store_fault_point point);
    void *fault_arg;
    /* Called on a writer thread after each successful group commit with
     * how long COMMIT took and how many requests the group carried (the
     * daemon feeds its histograms with it). Must not block. NULL: none. */
    void (*on_commit)(void *arg, int64_t commit_ns, int64_t requests);
    void *on_commit_arg;
    /* Called on the claiming thread, after the commit, for each job a claim
     * failed because its deadline passed before it could start: nobody
     * else learns of that change (the daemon wakes its waiters). NULL:
     * none. */
    void (*on_expired)(void *arg, int64_t id);
    void *on_expired_arg;

    /* ---- PostgreSQL only (docs/POSTGRES.md) ---- */
    /* This node's name, the same across its restarts (jobqd: host name
     * and state directory): a restart recovers the attempts its previous
     * run left open. NULL: the host name. */
    const char *node_name;
    /* The marker of this node's jobs (exec_opts.instance), kept with its
     * lease so that a node of the same machine can kill what a dead one
     * left running (on_reap). NULL: "". */
    const char *instance;
    /* How long the lease lasts without renewal; 0: JOBQ_PG_LEASE_MS. */
    int lease_ms;
    /* Called on the store's node thread for what other nodes did (their
     * submits, cancels, completions) and when this node's lease is lost.
     * Must not block. NULL: none. */
    void (*on_event)(void *arg, enum store_event ev, int64_t id);
    void *on_event_arg;
    /* Called on the node thread before the open attempts of a node whose
     * lease expired are recorded as interrupted: kill those that still
     * run on this machine (r[i].boot_id names the boot that ran each;
     * instance is the dead node's marker). Return 0 to go on, < 0 to
     * leave them for a later round. Borrows instance and r. NULL: none. */
    int (*on_reap)(void *arg, const char *instance, const struct store_running *r, size_t n);
    void *on_reap_arg;
};

/* Who asks: a non-admin sees and controls only jobs of its own uid (others
 * are -ENOENT, as if absent). */
struct store_who {
    uid_t uid;
    bool admin;
};

/* ---- records ---------------------------------------------------------- */

/* The end of an attempt, as the dispatcher decided it. */
struct store_completion {
    int64_t id;
    int32_t attempt;     /* the fence: must be the job's open attempt */
    int64_t finished_at; /* Unix ms; 0: now */
    enum job_outcome outcome;
    int32_t exit_code; /* -1 if none */
    int32_t signal;
    const char *error; /* borrowed; NULL if none */
    int64_t log_bytes;
    bool log_truncated;
    /* JOB_SUCCEEDED, JOB_FAILED, JOB_RETRYING (at run_at) or JOB_QUEUED.
     * Ignored when the job was canceled while running: it stays canceled. */
    enum job_state next;
    int64_t run_at;
    /* The caller can wait: the writer may hold the group open up to
     * JOBQ_STORE_LINGER_US for other writes to share its fsync, when the
     * last fsync was that recent. The dispatcher sets it while many jobs
     * run, whose completions come close together. */
    bool patient;
};

/* list filter. */
struct store_filter {
    unsigned states;   /* bits (1u << JOB_x); 0: every state */
    const char *queue; /* borrowed; NULL: every queue */
    bool by_uid;       /* admin only: just this uid's jobs */
    uid_t uid;
    int64_t before_id; /* keyset pagination: ids below this; 0: newest */
    int limit;         /* 1..JOBQ_STORE_LIST_MAX; 0: 100 */
};

struct store_queue_stats {
    char *name; /* owned by the enclosing store_stats */
    bool paused;
    int32_t limit; /* concurrency limit, 0: none */
    int64_t count[JOB_NSTATES];
};

struct store_stats {
    int64_t count[JOB_NSTATES];       /* over every queue */
    struct store_queue_stats *queues; /* owned (store_stats_free) */
    int nqueues;
    /* The writer since store_new: transactions committed and failed,
     * requests carried, the largest group. commits < requests shows group
     * commit at work. */
    uint64_t commits;
    uint64_t commit_failures;
    uint64_t lazy_failures; /* lazy requests (store_set_pgid_lazy) that failed */
    uint64_t requests;
    uint64_t max_group;
    uint64_t checkpoints;
    uint64_t commit_ns; /* time spent in COMMIT, total */
    /* Files on disk now. */
    int64_t db_bytes;
    int64_t wal_bytes;
};

/* An attempt left open by a daemon that stopped (recovery, step 1). */
struct store_running {
    int64_t id;
    int32_t attempt;
    int32_t pgid; /* 0: never recorded */
    char boot_id[JOBQ_BOOT_ID_BYTES];
    int64_t started_at;
};

/* ---- front: what the daemon calls -------------------------------------- */

/*
 * Opens (creating or migrating) the database and starts the writer thread.
 * A corrupt database, a file that is not a jobq database, or one written by
 * a newer jobqd is refused (-EINVAL, or the storage error) with a reason in
 * why; it is never modified or recreated. Returns owned *out (store_free).
 * Borrows opts (copied).
 */
int store_new(const struct store_opts *opts, struct store **out, char *why, size_t whylen);
/* NULL-safe. Commits what the writer holds, stops it, closes everything.
 * No call may be in flight. */
void store_free(struct store *st);

/* True for the errors that mean "not on disk" rather than "refused". */
bool store_error_is_storage(int rc);

/* Validates and inserts a job (queued, or scheduled if run_at is in the
 * future). With a unique key already used by this uid, sets *id to that
 * job and *existed to true instead. Borrows spec; why gets the reason of
 * -EINVAL. existed may be NULL. */
int store_submit(struct store *st, const struct job_spec *spec, int64_t *id, bool *existed,
                 char *why, size_t whylen);
/* As store_submit for n specs in one transaction: all or none. ids and
 * existed (may be NULL) hold n entries. -EINVAL names the bad spec's index
 * in why. Borrows specs. */
int store_submit_batch(struct store *st, const struct job_spec *specs, size_t n, int64_t *ids,
                       bool *existed, char *why, size_t whylen);

/*
 * Claims up to max (<= JOBQ_STORE_CLAIM_MAX) due jobs in dispatch order
 * (priority desc, run_at, id), honouring paused queues and per-queue
 * limits: each becomes running with attempt + 1 and an open attempt row.
 * Scheduled and retrying jobs whose run_at has passed are made ready first;
 * a job whose deadline passed before it could start fails instead. Fills
 * jobs[0..*n) with returned owned jobs (job_free each).
 */
int store_claim(struct store *st, int64_t now, int max, struct job **jobs, int *n);
/* Records the process group of an open attempt (-ESTALE if not open). */
int store_set_pgid(struct store *st, int64_t id, int32_t attempt, int32_t pgid);
/*
 * The same without waiting: the record rides in the writer's next group,
 * or commits on its own once it has waited JOBQ_STORE_LAZY_MS, and always
 * before any request queued after it. Returns 0 once queued, or the
 * store's fatal error, -ESHUTDOWN, -ENOMEM; a record that fails later
 * (-ESTALE aside) counts in store_stats.lazy_failures.
 */
int store_set_pgid_lazy(struct store *st, int64_t id, int32_t attempt, int32_t pgid);
/* Ends an open attempt, fenced by (id, attempt): -ESTALE, and nothing
 * changes, if it is not the job's open attempt. Borrows c. */
int store_complete(struct store *st, const struct store_completion *c);
/* As store_complete for n completions in one group; rcs[i] gets each
 * result; returns 0 or the storage error that failed them all. */
int store_complete_batch(struct store *st, const struct store_completion *c, size_t n, int *rcs);

/* Cancels a job that is not terminal (already canceled: 0, no change;
 * succeeded or failed: -EALREADY). *was_running (may be NULL) tells the
 * daemon to stop it: its attempt stays open until the daemon completes it
 * (outcome canceled); *attempt (may be NULL) is that attempt. */
int store_cancel(struct store *st, struct store_who who, int64_t id, bool *was_running,
                 int32_t *attempt);
/* Makes a failed or canceled job queued again (scheduled if its run_at is
 * ahead), keeping its attempt history. If its attempts were used up,
 * max_attempts becomes one more than those used: exactly one more try.
 * -EBUSY if it is not failed/canceled, its deadline has passed, or its
 * canceled attempt is still open. */
int store_retry(struct store *st, struct store_who who, int64_t id);
/* Pauses or resumes dispatch from a queue (which need not have jobs yet).
 * Borrows queue. */
int store_queue_pause(struct store *st, const char *queue, bool paused);
/* Per-queue concurrency limit; 0 removes it. Borrows queue. */
int store_queue_set_limit(struct store *st, const char *queue, int32_t limit);
/* Deletes terminal jobs in `states` (bits; 0: every terminal state) that
 * finished before finished_before (Unix ms) and that who may see,
 * JOBQ_STORE_PURGE_CHUNK per transaction so other writers go between
 * chunks. After each chunk commits, on_chunk (may be NULL) gets the ids
 * deleted (borrowed for the call: the daemon removes their log files).
 * *deleted may be NULL. */
int store_purge(struct store *st, struct store_who who, int64_t finished_before, unsigned states,
                void (*on_chunk)(void *arg, const int64_t *ids, int n), void *arg,
                int64_t *deleted);

/* Recovery, step 1: the attempts left open by a previous daemon, with the
 * process group and boot id to find leftovers. Returns owned *out (free()). */
int store_recover_list(struct store *st, struct store_running **out, size_t *n);
/* Recovery, step 2 (after the leftovers are dead): every open attempt is
 * recorded as interrupted; its job becomes retrying (backoff as the job's
 * policy says; an interrupted attempt does not use up the budget) or failed
 * if its deadline has passed. Counts may be NULL. */
int store_recover(struct store *st, int64_t now, int64_t *retrying, int64_t *failed);

/* Returns owned *out (job_free) with its attempts. */
int store_get(struct store *st, struct store_who who, int64_t id, struct job **out);
/* Newest first. Returns owned *out (store_jobs_free) of *n jobs, without
 * attempts. Borrows f. */
int store_list(struct store *st, struct store_who who, const struct store_filter *f,
               struct job ***out, int *n);
/* Fills *out (store_stats_free); counts come from counters kept with every
 * state change: O(queues x uids), never a table scan. A non-admin's counts
 * cover only its own jobs; the writer figures are daemon-wide. */
int store_stats(struct store *st, struct store_who who, struct store_stats *out);
/* Earliest run_at of scheduled and retrying jobs, or 0 if none. */
int store_next_due(struct store *st, int64_t *run_at);
/* Jobs scheduled, queued or retrying (what max_queued bounds). */
int store_count_pending(struct store *st, int64_t *n);
/* Consistency check over the whole database (O(jobs)): counters equal a
 * recount, open attempts match running jobs. why gets the first problem. */
int store_verify(struct store *st, char *why, size_t whylen);

void store_set_max_queued(struct store *st, int64_t max_queued);

/* NULL-safe. Frees each job and the array. */
void store_jobs_free(struct job **jobs, int n);
/* NULL-safe; frees what *s points to, not s itself. */
void store_stats_free(struct store_stats *s);

/* ---- backend interface ------------------------------------------------- */

enum store_role {
    STORE_WRITER, /* the single writer: checks, creates and migrates at open */
    STORE_READER, /* read-only */
};

enum store_txn {
    STORE_BEGIN,       /* a write transaction, locks taken now (BEGIN IMMEDIATE) */
    STORE_COMMIT,      /* durable when it returns 0 */
    STORE_ROLLBACK,    /* of the whole transaction; safe if none is open */
    STORE_SAVEPOINT,   /* opens the one per-request savepoint */
    STORE_RELEASE,     /* keeps the request's changes */
    STORE_ROLLBACK_TO, /* undoes them; the transaction goes on */
};

/*
 * A backend: synchronous functions, each called by one thread at a time on
 * a connection (the writer thread for writes, a blocking-pool thread for
 * reads). Write operations run inside a transaction the front opened
 * (STORE_BEGIN) and change nothing on error beyond what STORE_ROLLBACK_TO
 * undoes. Specs reach the backend validated. The shape is what a shared
 * PostgreSQL database also supports: claim is one statement class
 * (SELECT ... FOR UPDATE SKIP LOCKED, then UPDATE), completion is fenced by
 * (id, attempt), and nothing relies on a single process.
 */
struct store_backend_ops {
    const char *name;
    /* Returns owned *out (close). A writer checks the database (refusing a
     * corrupt or foreign one with a reason in why) and migrates it. */
    int (*open)(const struct store_opts *opts, enum store_role role, struct store_conn **out,
                char *why, size_t whylen);
    void (*close)(struct store_conn *c);
    /* A second write connection beside the writer w, for claims only,
     * sharing w's identity (PostgreSQL: its node and lease); closed
     * before w. The front then runs claims on their own thread, side by
     * side with the other writes. NULL: the database takes one writer at
     * a time (SQLite), and claims queue with everything else. */
    int (*open_claims)(struct store_conn *w, const struct store_opts *opts, struct store_conn **out,
                       char *why, size_t whylen);
    int (*txn)(struct store_conn *c, enum store_txn op);

    /* Writes (inside a transaction). Each operation is all or nothing
     * unless it says otherwise. */
    /* n specs; ids and existed hold n entries. */
    int (*submit)(struct store_conn *c, const struct job_spec *specs, size_t n, int64_t now,
                  int64_t *ids, bool *existed);
    /* Claims up to max (at most JOBQ_STORE_CLAIM_MAX) jobs into jobs, *n
     * of them; on failure *n is 0 and nothing is left to free. expired
     * (may be NULL) gets, up to JOBQ_STORE_CLAIM_MAX, the ids of ready
     * jobs failed instead because their deadline had passed, *nexpired of
     * them (meaningless on failure: rolled back with the request). */
    int (*claim)(struct store_conn *c, int64_t now, int max, const char *boot_id, struct job **jobs,
                 int *n, int64_t *expired, int *nexpired);
    int (*set_pgid)(struct store_conn *c, int64_t id, int32_t attempt, int32_t pgid);
    /* n completions, each fenced on its own: rcs[i] is 0, -ESTALE or
     * -EINVAL, and a refused one changes nothing. Returns 0, or a storage
     * error that fails them all. */
    int (*complete)(struct store_conn *c, const struct store_completion *done, size_t n,
                    int64_t now, int *rcs);
    int (*cancel)(struct store_conn *c, struct store_who who, int64_t id, int64_t now,
                  bool *was_running, int32_t *attempt);
    int (*retry)(struct store_conn *c, struct store_who who, int64_t id, int64_t now);
    /* paused -1 and limit -1 leave that setting as it is. */
    int (*queue_set)(struct store_conn *c, const char *queue, int paused, int32_t limit);
    /* Deletes up to max jobs and fills ids[0..*n) with theirs. */
    int (*purge)(struct store_conn *c, struct store_who who, int64_t finished_before,
                 unsigned states, int max, int64_t *ids, int *n);
    int (*recover)(struct store_conn *c, int64_t now, uint64_t seed, int64_t *retrying,
                   int64_t *failed);
    /*
     * Outside any transaction, on the writer: whether the COMMITs that
     * follow must reach the disk before they return (durable) or may stay
     * in the operating system's cache (not durable: they survive a crash
     * of jobqd, not a power loss). The front asks for the latter only for
     * groups of claims and process-group records, which a power loss may
     * take back harmlessly: the processes they describe die with the
     * machine, and the jobs run again. NULL: every commit is durable.
     */
    int (*set_durable)(struct store_conn *c, bool durable);
    /* Outside any transaction, on the writer: bounds the log (WAL). */
    int (*maintain)(struct store_conn *c);
    /* After a failed txn or maintain: whether a sync of the connection's
     * files failed (then, and for good, it returns true). */
    bool (*sync_failed)(struct store_conn *c);

    /* Reads (any connection; also inside a write transaction). */
    int (*get)(struct store_conn *c, struct store_who who, int64_t id, struct job **out);
    /* Returns owned *out (store_jobs_free). */
    int (*list)(struct store_conn *c, struct store_who who, const struct store_filter *f,
                struct job ***out, int *n);
    int (*stats)(struct store_conn *c, struct store_who who, struct store_stats *out);
    int (*next_due)(struct store_conn *c, int64_t *run_at);
    int (*pending)(struct store_conn *c, int64_t *n);
    int (*running)(struct store_conn *c, struct store_running **out, size_t *n);
    int (*verify)(struct store_conn *c, char *why, size_t whylen);
};

/* The SQLite backend (daemon/store_sqlite.c). */
extern const struct store_backend_ops store_sqlite_ops;
/* The PostgreSQL backend (daemon/store_pg.c). */
extern const struct store_backend_ops store_pg_ops;

/* Returns the backend called name (NULL: the default), or NULL. Borrows
 * name. */
const struct store_backend_ops *store_backend_find(const char *name);

#endif
