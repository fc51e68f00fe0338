/*
 * store_sqlite — the SQLite backend of the store: one sqlite3 connection per
 * struct store_conn, every statement prepared once and bound with
 * parameters, and the job operations of store.h as short statement
 * sequences inside the transaction the front opened. The writer connection
 * runs in WAL mode with synchronous=FULL, so COMMIT returns only after the
 * WAL frames are on disk; readers are read-only connections that never
 * hold a transaction between calls, so checkpoints can always restart the
 * WAL. The schema and the checks at open live in store_sqlite_schema.c.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jobq/limits.h"
#include "store_deltas.h"
#include "store_sqlite_int.h"

static_assert(JOB_SCHEDULED == SQ_SCHEDULED && JOB_QUEUED == SQ_QUEUED &&
                  JOB_RUNNING == SQ_RUNNING && JOB_RETRYING == SQ_RETRYING &&
                  JOB_SUCCEEDED == SQ_SUCCEEDED && JOB_FAILED == SQ_FAILED &&
                  JOB_CANCELED == SQ_CANCELED,
              "job states are stored as integers: renumbering needs a migration");
static_assert(OUTCOME_NONE == 0 && OUTCOME_SPAWN_ERROR == 8,
              "job outcomes are stored as integers: renumbering needs a migration");

/* ---- failure injection: a VFS shim ------------------------------------ */

/*
 * With opts->fault set, the writer's files go through this shim, which asks
 * the hook before every write and fsync and fails them as a full or broken
 * disk would (SQLITE_FULL / SQLITE_IOERR_*). SQLite then takes its real
 * error paths: the same technique as SQLite's own test VFS.
 */
struct fault_vfs {
    sqlite3_vfs base; /* first: SQLite sees a sqlite3_vfs */
    sqlite3_vfs *real;
    int (*fault)(void *arg, enum store_fault_point point);
    void *arg;
    char name[64];
};

struct fault_file {
    sqlite3_file base; /* first: SQLite sees a sqlite3_file */
    struct fault_vfs *vfs;
    sqlite3_file *real; /* the real file, allocated right after this struct */
};

static int
fault_hit(struct fault_vfs *v, enum store_fault_point point, int ioerr)
{
    int rc = v->fault(v->arg, point);

    if (rc == 0)
        return SQLITE_OK;
    return rc == -ENOSPC ? SQLITE_FULL : ioerr;
}

static int
ff_close(sqlite3_file *f)
{
    struct fault_file *ff = (struct fault_file *)f;
    return ff->real->pMethods->xClose(ff->real);
}

static int
ff_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    struct fault_file *ff = (struct fault_file *)f;
    return ff->real->pMethods->xRead(ff->real, buf, n, off);
}

static int
ff_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    struct fault_file *ff = (struct fault_file *)f;
    int rc = fault_hit(ff->vfs, STORE_FAULT_WRITE, SQLITE_IOERR_WRITE);
    return rc != SQLITE_OK ? rc : ff->real->pMethods->xWrite(ff->real, buf, n, off);
}

static int
ff_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    struct fault_file *ff = (struct fault_file *)f;
    return ff->real->pMethods->xTruncate(ff->real, size);
}

static int
ff_sync(sqlite3_file *f, int flags)
{
    struct fault_file *ff = (struct fault_file *)f;
    int rc = fault_hit(ff->vfs, STORE_FAULT_SYNC, SQLITE_IOERR_FSYNC);
    return rc != SQLITE_OK ? rc : ff->real->pMethods->xSync(ff->real, flags);
}

static int
ff_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    struct fault_file *ff = (struct fault_file *)f;
    return ff->real->pMethods->xFileSize(ff->real, size);
}

static int
ff_lock(sqlite3_file *f, int lock)
{
    struct fault_file *ff = (struct fault_file *)f;
    return ff->real->pMethods->xLock(ff->real, lock);
}

static int
ff_unlock(sqlite3_file *f, int lock)
{
    struct fault_file *ff = (struct fault_file *)f;
    return ff->real->pMethods->xUnlock(ff->real, lock);
}

static int
ff_check_reserved(sqlite3_file *f, int *out)
{
    struct fault_file *ff = (struct fault_file *)f;
    return ff->real->pMethods->xCheckReservedLock(ff->real, out);
}

static int
ff_file_control(sqlite3_file *f, int op, void *arg)
{
    struct fault_file *ff = (struct fault_file *)f;
    return ff->real->pMethods->xFileControl(ff->real, op, arg);
}

static int
ff_sector_size(sqlite3_file *f)
{
    struct fault_file *ff = (struct fault_file *)f;
    return ff->real->pMethods->xSectorSize(ff->real);
}

static int
ff_device_characteristics(sqlite3_file *f)
{
    struct fault_file *ff = (struct fault_file *)f;
    return ff->real->pMethods->xDeviceCharacteristics(ff->real);
}

static int
ff_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **p)
{
    struct fault_file *ff = (struct fault_file *)f;
    return ff->real->pMethods->xShmMap(ff->real, pg, pgsz, extend, p);
}

static int
ff_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    struct fault_file *ff = (struct fault_file *)f;
    return ff->real->pMethods->xShmLock(ff->real, offset, n, flags);
}

static void
ff_shm_barrier(sqlite3_file *f)
{
    struct fault_file *ff = (struct fault_file *)f;
    ff->real->pMethods->xShmBarrier(ff->real);
}

static int
ff_shm_unmap(sqlite3_file *f, int del)
{
    struct fault_file *ff = (struct fault_file *)f;
    return ff->real->pMethods->xShmUnmap(ff->real, del);
}

/* WAL needs the shm methods (iVersion 2); memory-mapped I/O (version 3)
 * stays off so that every write goes through ff_write. */
static const sqlite3_io_methods fault_io = {
    .iVersion = 2,
    .xClose = ff_close,
    .xRead = ff_read,
    .xWrite = ff_write,
    .xTruncate = ff_truncate,
    .xSync = ff_sync,
    .xFileSize = ff_file_size,
    .xLock = ff_lock,
    .xUnlock = ff_unlock,
    .xCheckReservedLock = ff_check_reserved,
    .xFileControl = ff_file_control,
    .xSectorSize = ff_sector_size,
    .xDeviceCharacteristics = ff_device_characteristics,
    .xShmMap = ff_shm_map,
    .xShmLock = ff_shm_lock,
    .xShmBarrier = ff_shm_barrier,
    .xShmUnmap = ff_shm_unmap,
};

static int
fv_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    struct fault_vfs *v = (struct fault_vfs *)vfs;
    struct fault_file *ff = (struct fault_file *)f;
    int rc;

    ff->vfs = v;
    ff->real = (sqlite3_file *)(ff + 1);
    rc = v->real->xOpen(v->real, name, ff->real, flags, out_flags);
    /* SQLite calls xClose only if pMethods is set. */
    ff->base.pMethods = ff->real->pMethods != NULL ? &fault_io : NULL;
    return rc;
}

static int
fv_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    sqlite3_vfs *r = ((struct fault_vfs *)vfs)->real;
    return r->xDelete(r, name, sync_dir);
}

static int
fv_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    sqlite3_vfs *r = ((struct fault_vfs *)vfs)->real;
    return r->xAccess(r, name, flags, out);
}

static int
fv_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    sqlite3_vfs *r = ((struct fault_vfs *)vfs)->real;
    return r->xFullPathname(r, name, n, out);
}

static int
fv_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    sqlite3_vfs *r = ((struct fault_vfs *)vfs)->real;
    return r->xRandomness(r, n, out);
}

static int
fv_sleep(sqlite3_vfs *vfs, int us)
{
    sqlite3_vfs *r = ((struct fault_vfs *)vfs)->real;
    return r->xSleep(r, us);
}

static int
fv_current_time(sqlite3_vfs *vfs, double *t)
{
    sqlite3_vfs *r = ((struct fault_vfs *)vfs)->real;
    return r->xCurrentTime(r, t);
}

static int
fv_last_error(sqlite3_vfs *vfs, int n, char *buf)
{
    sqlite3_vfs *r = ((struct fault_vfs *)vfs)->real;
    return r->xGetLastError(r, n, buf);
}

static int
fv_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *t)
{
    sqlite3_vfs *r = ((struct fault_vfs *)vfs)->real;
    return r->xCurrentTimeInt64(r, t);
}

/* Returns owned *out, registered under a name unique to it
 * (fault_vfs_free unregisters it). */
static int
fault_vfs_new(const struct store_opts *opts, struct fault_vfs **out)
{
    struct fault_vfs *v;
    sqlite3_vfs *real = sqlite3_vfs_find(NULL);

    if (real == NULL)
        return -EIO;
    if ((v = calloc(1, sizeof(*v))) == NULL)
        return -ENOMEM;
    v->real = real;
    v->fault = opts->fault;
    v->arg = opts->fault_arg;
    snprintf(v->name, sizeof(v->name), "jobq-fault-%p", (void *)v);
    v->base.iVersion = 2;
    v->base.szOsFile = (int)sizeof(struct fault_file) + real->szOsFile;
    v->base.mxPathname = real->mxPathname;
    v->base.zName = v->name;
    v->base.xOpen = fv_open;
    v->base.xDelete = fv_delete;
    v->base.xAccess = fv_access;
    v->base.xFullPathname = fv_full_pathname;
    v->base.xRandomness = fv_randomness;
    v->base.xSleep = fv_sleep;
    v->base.xCurrentTime = fv_current_time;
    v->base.xGetLastError = fv_last_error;
    v->base.xCurrentTimeInt64 = fv_current_time64;
    if (sqlite3_vfs_register(&v->base, 0) != SQLITE_OK) {
        free(v);
        return -EIO;
    }
    *out = v;
    return 0;
}

static void
fault_vfs_free(struct fault_vfs *v)
{
    if (v == NULL)
        return;
    sqlite3_vfs_unregister(&v->base);
    free(v);
}

/* ---- connections and statements ---------------------------------------- */

/* The columns of a job, in the order row_job reads them. */
#define JOB_COLS                                                                                   \
    "id, queue, name, priority, command, env, cwd, unique_key, max_attempts, backoff_base_ms, "    \
    "backoff_max_ms, timeout_ms, deadline, run_at, uid, gid, state, attempt, interrupted, "        \
    "created_at, started_at, finished_at, updated_at, outcome, exit_code, signal, error, "         \
    "log_truncated"

enum stmt_id {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_SAVEPOINT,
    S_RELEASE,
    S_ROLLBACK_TO,
    S_NEXT_ID_LOAD,
    S_NEXT_ID_SAVE,
    S_COUNT_ADD,
    S_UNIQUE_FIND,
    S_INSERT,
    S_INSERT_SOME,
    S_INSERT_MANY,
    S_DUE,
    S_PROMOTE,
    S_ACTIVE_QUEUES,
    S_READY_TOP,
    S_START,
    S_EXPIRE,
    S_ATTEMPT_INSERT,
    S_SET_PGID,
    S_ATTEMPT_FINISH,
    S_JOB_BRIEF,
    S_JOB_FINISH,
    S_CANCEL,
    S_OPEN_ATTEMPT,
    S_RETRY,
    S_QUEUE_SET,
    S_PURGE,
    S_RUNNING,
    S_GET,
    S_ATTEMPTS,
    S_LIST,
    S_COUNTERS,
    S_QUEUES,
    S_NEXT_DUE,
    S_PENDING,
    S_NSTMTS
};

/* The queries that must stay O(K) name their index (INDEXED BY): the
 * planner has no statistics and may otherwise walk the wrong one, and a
 * missing index becomes an error at prepare time instead of a silent
 * table scan. Partial-index conditions are repeated word for word
 * (store_sqlite_schema.c). */
static const char *const stmt_sql[S_NSTMTS] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_SAVEPOINT] = "SAVEPOINT req",
    [S_RELEASE] = "RELEASE req",
    [S_ROLLBACK_TO] = "ROLLBACK TO req",
    [S_NEXT_ID_LOAD] = "SELECT max((SELECT value FROM meta WHERE key = 'next_id'), "
                       "coalesce((SELECT max(id) FROM jobs), 0) + 1)",
    [S_NEXT_ID_SAVE] = "UPDATE meta SET value = ?1 WHERE key = 'next_id'",
    [S_COUNT_ADD] = "INSERT INTO counters (queue, state, uid, n) VALUES (?1, ?2, ?3, ?4) "
                    "ON CONFLICT (queue, state, uid) DO UPDATE SET n = n + ?4",
    [S_UNIQUE_FIND] = "SELECT id FROM jobs WHERE uid = ?1 AND unique_key = ?2 "
                      "AND unique_key IS NOT NULL",
    /* S_INSERT, S_INSERT_SOME and S_INSERT_MANY are built by insert_sql(). */
    [S_DUE] = "SELECT id, queue, uid, state FROM jobs INDEXED BY jobs_due "
              "WHERE (state = 0 OR state = 3) AND run_at <= ?1 ORDER BY run_at LIMIT ?2",
    [S_PROMOTE] = "UPDATE jobs SET state = 1, updated_at = ?2 WHERE id = ?1",
    [S_ACTIVE_QUEUES] = "SELECT c.queue, coalesce(q.paused, 0), coalesce(q.max_running, 0), "
                        "(SELECT coalesce(sum(n), 0) FROM counters r WHERE r.queue = c.queue "
                        "AND r.state = 2) FROM (SELECT queue FROM counters WHERE state = 1 "
                        "GROUP BY queue HAVING sum(n) > 0) c "
                        "LEFT JOIN queues q ON q.name = c.queue",
    [S_READY_TOP] = "SELECT id, priority, run_at, deadline, uid FROM jobs INDEXED BY jobs_ready "
                    "WHERE state = 1 AND queue = ?1 ORDER BY priority DESC, run_at, id LIMIT ?2",
    [S_START] = "UPDATE jobs SET state = 2, attempt = attempt + 1, started_at = CASE started_at "
                "WHEN 0 THEN ?2 ELSE started_at END, updated_at = ?2 WHERE id = ?1 AND "
                "state = 1 RETURNING " JOB_COLS,
    [S_EXPIRE] = "UPDATE jobs SET state = 5, finished_at = ?2, updated_at = ?2, outcome = ?3, "
                 "error = ?4 WHERE id = ?1",
    [S_ATTEMPT_INSERT] = "INSERT INTO attempts (job_id, attempt, started_at, boot_id) "
                         "VALUES (?1, ?2, ?3, ?4)",
    [S_SET_PGID] = "UPDATE attempts SET pgid = ?3 WHERE job_id = ?1 AND attempt = ?2 AND "
                   "finished_at = 0",
    [S_ATTEMPT_FINISH] = "UPDATE attempts SET finished_at = ?3, outcome = ?4, exit_code = ?5, "
                         "signal = ?6, error = ?7, log_bytes = ?8, log_truncated = ?9 "
                         "WHERE job_id = ?1 AND attempt = ?2 AND finished_at = 0",
    [S_JOB_BRIEF] = "SELECT state, attempt, interrupted, uid, deadline, backoff_base_ms, "
                    "backoff_max_ms, max_attempts, run_at, queue FROM jobs WHERE id = ?1",
    [S_JOB_FINISH] = "UPDATE jobs SET state = ?2, run_at = CASE WHEN ?3 > 0 THEN ?3 ELSE run_at "
                     "END, finished_at = CASE WHEN ?4 >= 0 THEN ?4 ELSE finished_at END, "
                     "updated_at = ?5, outcome = ?6, exit_code = ?7, signal = ?8, error = ?9, "
                     "interrupted = interrupted + ?10, log_truncated = CASE WHEN ?11 >= 0 "
                     "THEN ?11 ELSE log_truncated END WHERE id = ?1",
    /* ?3: not running. A running job's error comes with its attempt's
     * end; one canceled between attempts says so, with the last error. */
    [S_CANCEL] = "UPDATE jobs SET state = 6, finished_at = ?2, updated_at = ?2, "
                 "error = CASE WHEN ?3 = 0 THEN error WHEN coalesce(error, '') = '' "
                 "THEN 'canceled' ELSE 'canceled before its next attempt (the last one: ' "
                 "|| error || ')' END WHERE id = ?1",
    [S_OPEN_ATTEMPT] = "SELECT 1 FROM attempts WHERE job_id = ?1 AND finished_at = 0",
    [S_RETRY] = "UPDATE jobs SET state = ?3, run_at = ?4, finished_at = 0, updated_at = ?2, "
                "max_attempts = ?5 WHERE id = ?1",
    [S_QUEUE_SET] = "INSERT INTO queues (name, paused, max_running) "
                    "VALUES (?1, max(?2, 0), max(?3, 0)) ON CONFLICT (name) DO UPDATE SET "
                    "paused = CASE WHEN ?2 >= 0 THEN ?2 ELSE paused END, "
                    "max_running = CASE WHEN ?3 >= 0 THEN ?3 ELSE max_running END",
    [S_PURGE] = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_finished "
                "WHERE state >= 4 AND finished_at < ?1 AND (?2 >> state) & 1 AND "
                "(?4 IS NULL OR uid = ?4) ORDER BY finished_at LIMIT ?3) "
                "RETURNING id, queue, uid, state",
    [S_RUNNING] = "SELECT job_id, attempt, pgid, boot_id, started_at FROM attempts "
                  "INDEXED BY attempts_open WHERE finished_at = 0 ORDER BY job_id",
    [S_GET] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1",
    [S_ATTEMPTS] = "SELECT attempt, started_at, finished_at, outcome, exit_code, signal, error, "
                   "log_bytes, log_truncated, pgid, boot_id FROM attempts WHERE job_id = ?1 "
                   "ORDER BY attempt",
    [S_LIST] = "SELECT " JOB_COLS " FROM jobs WHERE id < ?1 AND (?2 IS NULL OR queue = ?2) AND "
               "(?3 IS NULL OR uid = ?3) AND (?5 >> state) & 1 ORDER BY id DESC LIMIT ?4",
    [S_COUNTERS] = "SELECT queue, state, sum(n) FROM counters WHERE ?1 IS NULL OR uid = ?1 "
                   "GROUP BY queue, state HAVING sum(n) <> 0",
    [S_QUEUES] = "SELECT name, paused, max_running FROM queues ORDER BY name",
    [S_NEXT_DUE] = "SELECT coalesce((SELECT run_at FROM jobs INDEXED BY jobs_due "
                   "WHERE state = 0 OR state = 3 ORDER BY run_at LIMIT 1), 0)",
    [S_PENDING] = "SELECT coalesce(sum(n), 0) FROM counters WHERE state IN (0, 1, 3)",
};

struct store_conn {
    sqlite3 *db;
    enum store_role role;
    int busy_ms; /* the connection's busy timeout, restored after maintain */
    /* Configured FULL: only then may a commit be relaxed to NORMAL (a
     * benchmark's NORMAL or OFF is never raised). */
    bool sync_full;
    char *path;
    int (*fault)(void *arg, enum store_fault_point point);
    void *fault_arg;
    struct fault_vfs *vfs;
    sqlite3_stmt *stmts[S_NSTMTS];
    /* Writer only: the next job id, and whether meta must learn it. */
    int64_t next_id;
    bool next_id_dirty;
    /*
     * Counter changes not yet written, summed per key: they are written
     * once per transaction, just before COMMIT (or earlier by a claim,
     * which reads the counters), not once per request. They are marked
     * when a request's savepoint is opened, so that rolling the savepoint
     * back rolls them back too.
     */
    struct store_deltas pend;
    bool in_savepoint;
    bool sync_failed; /* an fsync of our files failed: see store.h */
};

/* Columns an insert binds per job, in bind_job's order. */
#define INSERT_COLS 19
/* Jobs one INSERT statement writes in a batch submit: a statement's fixed
 * cost (setup, halt) spread over 16 rows made batch inserts 30% faster
 * than one row each, over 64 rows 12% faster again (bench-store, batches
 * of 10,000). The tail of a batch goes 8 rows at a time, then one by one. */
#define INSERT_MANY_ROWS 64
#define INSERT_SOME_ROWS 8

/* "INSERT INTO jobs (...) VALUES (?, ...), ..." for rows jobs. Returns
 * owned SQL (sqlite3_free). */
static char *
insert_sql(int rows)
{
    sqlite3_str *q = sqlite3_str_new(NULL);

    sqlite3_str_appendall(q, "INSERT INTO jobs (id, queue, name, priority, command, env, cwd, "
                             "unique_key, max_attempts, backoff_base_ms, backoff_max_ms, "
                             "timeout_ms, deadline, run_at, uid, gid, state, created_at, "
                             "updated_at) VALUES ");
    for (int r = 0; r < rows; r++) {
        sqlite3_str_appendall(q, r ? ", (" : "(");
        for (int k = 0; k < INSERT_COLS; k++)
            sqlite3_str_appendall(q, k ? ", ?" : "?");
        sqlite3_str_appendall(q, ")");
    }
    return sqlite3_str_finish(q);
}

/* Returns borrowed *out (reset by the caller before it returns). */
static int
prep(struct store_conn *c, enum stmt_id id, sqlite3_stmt **out)
{
    int src;

    *out = NULL;
    if (c->stmts[id] == NULL) {
        char *sql = NULL;
        if (id == S_INSERT || id == S_INSERT_SOME || id == S_INSERT_MANY) {
            int rows = id == S_INSERT        ? 1
                       : id == S_INSERT_SOME ? INSERT_SOME_ROWS
                                             : INSERT_MANY_ROWS;
            if ((sql = insert_sql(rows)) == NULL)
                return -ENOMEM;
        }
        src = sqlite3_prepare_v3(c->db, sql ? sql : stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                 &c->stmts[id], NULL);
        sqlite3_free(sql);
        if (src != SQLITE_OK)
            return store_sqlite_errno(src);
    }
    *out = c->stmts[id];
    return 0;
}

/* Maps a step or bind result; SQLITE_ROW and SQLITE_DONE are success. */
static int
sq_rc(int src)
{
    return store_sqlite_errno(src);
}

/* Runs a statement that returns no rows, and resets it. */
static int
step_done(sqlite3_stmt *s)
{
    int src = sqlite3_step(s);
    int rc = src == SQLITE_DONE ? 0 : sq_rc(src == SQLITE_ROW ? SQLITE_MISUSE : src);

    sqlite3_reset(s);
    return rc;
}

static int
bind_text_or_null(sqlite3_stmt *s, int i, const char *v)
{
    if (v == NULL)
        return sqlite3_bind_null(s, i);
    return sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

/* Copies column i as an owned string, NULL for SQL NULL. */
static int
col_strdup(sqlite3_stmt *s, int i, char **out)
{
    const unsigned char *v = sqlite3_column_text(s, i);

    *out = NULL;
    if (v == NULL)
        return sqlite3_column_type(s, i) == SQLITE_NULL ? 0 : -ENOMEM;
    if ((*out = strdup((const char *)v)) == NULL)
        return -ENOMEM;
    return 0;
}

/* Records that n jobs of (queue, uid) entered state (n < 0: left it). */
static int
count(struct store_conn *c, const char *queue, uid_t uid, enum job_state state, int64_t n)
{
    return store_deltas_add(&c->pend, queue, uid, (int)state, n);
}

/* A state change: one job of (queue, uid) went from one state to another. */
static int
count_move(struct store_conn *c, const char *queue, uid_t uid, enum job_state from,
           enum job_state to)
{
    int rc;

    if (from == to)
        return 0;
    if ((rc = count(c, queue, uid, from, -1)) < 0)
        return rc;
    return count(c, queue, uid, to, 1);
}

/* Writes the pending counter changes; their amounts drop to zero (the keys
 * stay, so a savepoint snapshot still lines up with them). */
static int
counters_write(struct store_conn *c)
{
    sqlite3_stmt *s;
    int rc = 0;

    for (int i = 0; i < c->pend.n && rc == 0; i++) {
        struct store_delta *e = &c->pend.v[i];
        if (e->n == 0)
            continue;
        if ((rc = prep(c, S_COUNT_ADD, &s)) < 0)
            break;
        sqlite3_bind_text(s, 1, e->queue, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, e->state);
        sqlite3_bind_int64(s, 3, e->uid);
        sqlite3_bind_int64(s, 4, e->n);
        if ((rc = step_done(s)) == 0)
            e->n = 0;
    }
    return rc;
}

/* Just before COMMIT: the transaction's counts and the next job id. */
static int
txn_flush(struct store_conn *c)
{
    sqlite3_stmt *s;
    int rc;

    if ((rc = counters_write(c)) < 0)
        return rc;
    store_deltas_truncate(&c->pend, 0);
    if (c->next_id_dirty) {
        if ((rc = prep(c, S_NEXT_ID_SAVE, &s)) < 0)
            return rc;
        sqlite3_bind_int64(s, 1, c->next_id);
        if ((rc = step_done(s)) < 0)
            return rc;
        c->next_id_dirty = false;
    }
    return 0;
}

static void
txn_forget(struct store_conn *c)
{
    store_deltas_truncate(&c->pend, 0);
    c->in_savepoint = false;
    /* next_id stays ahead: an id of a rolled-back job is simply skipped. */
}

static int
next_id_load(struct store_conn *c, char *why, size_t whylen)
{
    sqlite3_stmt *s;
    int src, rc;

    if ((rc = prep(c, S_NEXT_ID_LOAD, &s)) < 0) {
        snprintf(why, whylen, "cannot read the next job id: %s", sqlite3_errmsg(c->db));
        return rc;
    }
    if ((src = sqlite3_step(s)) == SQLITE_ROW) {
        c->next_id = sqlite3_column_int64(s, 0);
        rc = 0;
    } else {
        snprintf(why, whylen, "cannot read the next job id: %s", sqlite3_errmsg(c->db));
        rc = sq_rc(src == SQLITE_DONE ? SQLITE_CORRUPT : src);
    }
    sqlite3_reset(s);
    return rc;
}

static void
conn_close(struct store_conn *c)
{
    if (c == NULL)
        return;
    store_deltas_free(&c->pend);
    for (int i = 0; i < S_NSTMTS; i++)
        sqlite3_finalize(c->stmts[i]);
    /* The last connection to close checkpoints the WAL and removes it;
     * not after a failed sync: the WAL on disk is what the next open must
     * recover from, and nothing more is written. */
    if (c->sync_failed)
        sqlite3_db_config(c->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
    sqlite3_close(c->db);
    fault_vfs_free(c->vfs);
    free(c->path);
    free(c);
}

static int
exec_pragma(struct store_conn *c, const char *sql, char *why, size_t whylen)
{
    char *msg = NULL;
    int src = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
    int rc = 0;

    if (src != SQLITE_OK) {
        snprintf(why, whylen, "%s: %s", sql, msg ? msg : sqlite3_errstr(src));
        rc = sq_rc(src);
    }
    sqlite3_free(msg);
    return rc;
}

static const char *
sync_pragma(enum store_sync s)
{
    switch (s) {
    case STORE_SYNC_OFF:
        return "PRAGMA synchronous = OFF";
    case STORE_SYNC_NORMAL:
        return "PRAGMA synchronous = NORMAL";
    default:
        return "PRAGMA synchronous = FULL";
    }
}

/* WAL is what lets readers run beside the writer and makes a commit one
 * sequential append plus one fsync; refuse to run without it. */
static int
set_wal(struct store_conn *c, char *why, size_t whylen)
{
    sqlite3_stmt *s = NULL;
    int src, rc = 0;

    src = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
    if (src == SQLITE_OK)
        src = sqlite3_step(s);
    if (src != SQLITE_ROW) {
        snprintf(why, whylen, "cannot enable WAL on %s: %s", c->path, sqlite3_errmsg(c->db));
        rc = src == SQLITE_OK || src == SQLITE_DONE ? -EIO : sq_rc(src);
    } else if (strcmp((const char *)sqlite3_column_text(s, 0), "wal") != 0) {
        snprintf(why, whylen, "%s stays in journal mode %s, not WAL", c->path,
                 (const char *)sqlite3_column_text(s, 0));
        rc = -EINVAL;
    }
    sqlite3_finalize(s);
    return rc;
}

/*
 * Process-wide SQLite settings, applied once before the first connection:
 * without memory statistics every sqlite3_malloc/free skips a global
 * mutex, which cost a tenth of the writer's time under group commit. Only
 * legal before sqlite3_initialize; if something opened a database
 * earlier, SQLite keeps its defaults and the store still works.
 */
static void
sqlite_global_init(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

static int
sq_open(const struct store_opts *opts, enum store_role role, struct store_conn **out, char *why,
        size_t whylen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    struct store_conn *c;
    char sql[96];
    int flags, src, rc;
    int busy = opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : JOBQ_STORE_BUSY_TIMEOUT_MS;

    if (opts->path == NULL || opts->path[0] == '\0') {
        snprintf(why, whylen, "no database path");
        return -EINVAL;
    }
    pthread_once(&once, sqlite_global_init);
    if ((c = calloc(1, sizeof(*c))) == NULL || (c->path = strdup(opts->path)) == NULL) {
        free(c);
        return -ENOMEM;
    }
    c->role = role;
    c->fault = opts->fault;
    c->fault_arg = opts->fault_arg;
    if (role == STORE_WRITER) {
        if ((rc = store_sqlite_check(opts->path, opts->skip_check, why, whylen)) < 0)
            goto out;
        if (opts->fault != NULL && (rc = fault_vfs_new(opts, &c->vfs)) < 0)
            goto out;
        flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    } else {
        flags = SQLITE_OPEN_READONLY;
    }
    /* NOMUTEX: a connection is used by one thread at a time (the writer,
     * or a reader checked out of the pool), so SQLite's own per-call lock
     * is pure overhead. */
    flags |= SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
    src = sqlite3_open_v2(opts->path, &c->db, flags, c->vfs ? c->vfs->name : NULL);
    if (src != SQLITE_OK) {
        snprintf(why, whylen, "cannot open %s: %s", opts->path,
                 c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(src));
        rc = sq_rc(src);
        goto out;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, busy);
    c->busy_ms = busy;
    c->sync_full = opts->sync == STORE_SYNC_FULL;
    if (role == STORE_WRITER) {
        snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit = %lld",
                 (long long)JOBQ_STORE_WAL_LIMIT_BYTES);
        if ((rc = set_wal(c, why, whylen)) < 0 ||
            (rc = exec_pragma(c, sync_pragma(opts->sync), why, whylen)) < 0 ||
            (rc = exec_pragma(c, "PRAGMA foreign_keys = ON", why, whylen)) < 0 ||
            (rc = exec_pragma(c, sql, why, whylen)) < 0)
            goto out;
        snprintf(sql, sizeof(sql), "PRAGMA cache_size = -%d", JOBQ_STORE_CACHE_KIB);
        if ((rc = exec_pragma(c, sql, why, whylen)) < 0 ||
            (rc = exec_pragma(c, "PRAGMA temp_store = MEMORY", why, whylen)) < 0)
            goto out;
        if ((rc = store_sqlite_migrate(c->db, store_sqlite_schema_version(), why, whylen)) < 0 ||
            (rc = next_id_load(c, why, whylen)) < 0)
            goto out;
    } else {
        snprintf(sql, sizeof(sql), "PRAGMA cache_size = -%d", JOBQ_STORE_READ_CACHE_KIB);
        if ((rc = exec_pragma(c, sql, why, whylen)) < 0)
            goto out;
    }
    *out = c;
    c = NULL;
    rc = 0;
out:
    conn_close(c);
    return rc;
}

/* Remembers whether the error rc that c's last statement ended with was a
 * failed fsync (of the WAL, the database or the directory). Returns rc. */
static int
note_sync(struct store_conn *c, int rc)
{
    int x = sqlite3_extended_errcode(c->db);

    if (rc < 0 && (x == SQLITE_IOERR_FSYNC || x == SQLITE_IOERR_DIR_FSYNC))
        c->sync_failed = true;
    return rc;
}

static bool
sq_sync_failed(struct store_conn *c)
{
    return c->sync_failed;
}

static int
sq_txn(struct store_conn *c, enum store_txn op)
{
    sqlite3_stmt *s;
    int rc;

    switch (op) {
    case STORE_BEGIN:
        txn_forget(c);
        if ((rc = prep(c, S_BEGIN, &s)) < 0)
            return rc;
        return step_done(s);
    case STORE_COMMIT:
        if (c->fault != NULL && (rc = c->fault(c->fault_arg, STORE_FAULT_COMMIT)) < 0) {
            sq_txn(c, STORE_ROLLBACK);
            return rc;
        }
        if ((rc = txn_flush(c)) < 0 || (rc = prep(c, S_COMMIT, &s)) < 0 ||
            (rc = step_done(s)) < 0) {
            note_sync(c, rc);
            sq_txn(c, STORE_ROLLBACK);
        }
        return rc;
    case STORE_ROLLBACK:
        txn_forget(c);
        /* SQLite may already have rolled back after a full disk or an I/O
         * error; then there is nothing to do. */
        if (sqlite3_get_autocommit(c->db))
            return 0;
        if ((rc = prep(c, S_ROLLBACK, &s)) < 0)
            return rc;
        return step_done(s);
    case STORE_SAVEPOINT:
        /* One level: the front's per-request savepoint. */
        if (c->in_savepoint)
            return -EINVAL;
        if ((rc = store_deltas_mark(&c->pend)) < 0 || (rc = prep(c, S_SAVEPOINT, &s)) < 0 ||
            (rc = step_done(s)) < 0)
            return rc;
        c->in_savepoint = true;
        return 0;
    case STORE_RELEASE:
        if ((rc = prep(c, S_RELEASE, &s)) < 0 || (rc = step_done(s)) < 0)
            return rc;
        c->in_savepoint = false;
        return 0;
    case STORE_ROLLBACK_TO:
        /* ROLLBACK TO keeps the savepoint open; release it too, or every
         * failed request would nest one more. A transaction SQLite rolled
         * back itself has no savepoint left, and this fails: the front
         * then fails the whole group. */
        if (sqlite3_get_autocommit(c->db) || !c->in_savepoint)
            return -EIO;
        if ((rc = prep(c, S_ROLLBACK_TO, &s)) < 0 || (rc = step_done(s)) < 0)
            return rc;
        store_deltas_rollback(&c->pend); /* the counts follow the savepoint */
        return sq_txn(c, STORE_RELEASE);
    }
    return -EINVAL;
}

/* ---- command and env as JSON arrays ------------------------------------ */

struct buf {
    char *p;
    size_t len, cap;
};

static int
buf_put(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;
        while (cap < b->len + n + 1)
            cap *= 2;
        if ((p = realloc(b->p, cap)) == NULL)
            return -ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* Returns owned *out (free) holding ["a","b"]: strings are valid UTF-8
 * (job_spec_validate), so only quotes, backslashes and control characters
 * need escapes. */
static int
strv_to_json(char *const *v, char **out, size_t *len)
{
    struct buf b = {0};
    char esc[8];
    int rc = 0;

    if ((rc = buf_put(&b, "[", 1)) < 0)
        goto out;
    for (size_t i = 0; v[i] != NULL; i++) {
        const char *p = v[i], *run = p;
        if ((i > 0 && (rc = buf_put(&b, ",", 1)) < 0) || (rc = buf_put(&b, "\"", 1)) < 0)
            goto out;
        for (; *p; p++) {
            unsigned char ch = (unsigned char)*p;
            if (ch >= 0x20 && ch != '"' && ch != '\\')
                continue;
            if ((rc = buf_put(&b, run, (size_t)(p - run))) < 0)
                goto out;
            if (ch == '"' || ch == '\\')
                snprintf(esc, sizeof(esc), "\\%c", ch);
            else
                snprintf(esc, sizeof(esc), "\\u%04x", ch);
            if ((rc = buf_put(&b, esc, strlen(esc))) < 0)
                goto out;
            run = p + 1;
        }
        if ((rc = buf_put(&b, run, (size_t)(p - run))) < 0 || (rc = buf_put(&b, "\"", 1)) < 0)
            goto out;
    }
    if ((rc = buf_put(&b, "]", 1)) < 0)
        goto out;
    *out = b.p;
    *len = b.len;
    b.p = NULL;
out:
    free(b.p);
    return rc;
}

static int
hex4(const char *p, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = p[i];
        unsigned d;
        if (ch >= '0' && ch <= '9')
            d = (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            d = (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F')
            d = (unsigned)(ch - 'A' + 10);
        else
            return -EIO;
        *v = *v << 4 | d;
    }
    return 0;
}

static int
put_utf8(struct buf *b, unsigned cp)
{
    char u[4];
    size_t n;

    if (cp < 0x80) {
        u[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
    } else {
        u[0] = (char)(0xf0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), u[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
    }
    return buf_put(b, u, n);
}

/* One JSON string at *pp (just past its opening quote), into an owned
 * string. Accepts every escape of RFC 8259, in case another tool wrote the
 * row. */
static int
json_string(const char **pp, char **out)
{
    const char *p = *pp;
    struct buf b = {0};
    unsigned cp, lo;
    int rc = 0;

    if ((rc = buf_put(&b, "", 0)) < 0)
        goto out;
    while (*p != '"') {
        const char *run = p;
        while (*p && *p != '"' && *p != '\\')
            p++;
        if ((rc = buf_put(&b, run, (size_t)(p - run))) < 0)
            goto out;
        if (*p == '\0') {
            rc = -EIO;
            goto out;
        }
        if (*p == '"')
            break;
        p++; /* backslash */
        switch (*p) {
        case '"':
        case '\\':
        case '/':
            rc = buf_put(&b, p, 1);
            break;
        case 'b':
            rc = buf_put(&b, "\b", 1);
            break;
        case 'f':
            rc = buf_put(&b, "\f", 1);
            break;
        case 'n':
            rc = buf_put(&b, "\n", 1);
            break;
        case 'r':
            rc = buf_put(&b, "\r", 1);
            break;
        case 't':
            rc = buf_put(&b, "\t", 1);
            break;
        case 'u':
            if ((rc = hex4(p + 1, &cp)) < 0)
                goto out;
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && p[1] == '\\' && p[2] == 'u' &&
                hex4(p + 3, &lo) == 0 && lo >= 0xdc00 && lo <= 0xdfff) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }
            /* A NUL would cut the C string short: refuse the row. */
            rc = cp == 0 ? -EIO : put_utf8(&b, cp);
            break;
        default:
            rc = -EIO;
        }
        if (rc < 0)
            goto out;
        p++;
    }
    *pp = p + 1;
    *out = b.p;
    b.p = NULL;
out:
    free(b.p);
    return rc;
}

static const char *
skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

/* Returns owned *out, a NULL-terminated array (as job_spec owns it). */
static int
json_to_strv(const char *s, char ***out)
{
    const char *p = skip_ws(s);
    char **v = NULL, **nv;
    size_t n = 0, cap = 0;
    int rc = 0;

    if (*p++ != '[')
        return -EIO;
    if ((v = calloc(1, sizeof(*v))) == NULL)
        return -ENOMEM;
    p = skip_ws(p);
    if (*p == ']')
        goto done;
    for (;;) {
        if (*p++ != '"') {
            rc = -EIO;
            goto out;
        }
        if (n + 2 > cap) {
            cap = cap ? cap * 2 : 8;
            if ((nv = realloc(v, cap * sizeof(*v))) == NULL) {
                rc = -ENOMEM;
                goto out;
            }
            v = nv;
        }
        v[n + 1] = NULL;
        if ((rc = json_string(&p, &v[n])) < 0)
            goto out;
        v[++n] = NULL;
        p = skip_ws(p);
        if (*p == ']')
            break;
        if (*p++ != ',') {
            rc = -EIO;
            goto out;
        }
        p = skip_ws(p);
    }
done:
    *out = v;
    v = NULL;
out:
    if (v != NULL) {
        for (size_t i = 0; i < n; i++)
            free(v[i]);
        free(v);
    }
    return rc;
}

/* ---- rows -------------------------------------------------------------- */

/* Reads a row of JOB_COLS. Returns owned *out (job_free). A command or env
 * that does not decode is corruption: -EIO. */
static int
row_job(sqlite3_stmt *s, struct job **out)
{
    struct job *j;
    const char *env;
    int rc;

    if ((j = calloc(1, sizeof(*j))) == NULL)
        return -ENOMEM;
    j->id = sqlite3_column_int64(s, 0);
    if ((rc = col_strdup(s, 1, &j->spec.queue)) < 0 || (rc = col_strdup(s, 2, &j->spec.name)) < 0)
        goto out;
    j->spec.priority = sqlite3_column_int(s, 3);
    if ((rc = json_to_strv((const char *)sqlite3_column_text(s, 4), &j->spec.command)) < 0)
        goto out;
    if ((env = (const char *)sqlite3_column_text(s, 5)) != NULL &&
        (rc = json_to_strv(env, &j->spec.env)) < 0)
        goto out;
    if ((rc = col_strdup(s, 6, &j->spec.cwd)) < 0 ||
        (rc = col_strdup(s, 7, &j->spec.unique_key)) < 0)
        goto out;
    j->spec.max_attempts = sqlite3_column_int(s, 8);
    j->spec.backoff_base_ms = sqlite3_column_int64(s, 9);
    j->spec.backoff_max_ms = sqlite3_column_int64(s, 10);
    j->spec.timeout_ms = sqlite3_column_int64(s, 11);
    j->spec.deadline = sqlite3_column_int64(s, 12);
    j->spec.run_at = sqlite3_column_int64(s, 13);
    j->spec.uid = (uid_t)sqlite3_column_int64(s, 14);
    j->spec.gid = (gid_t)sqlite3_column_int64(s, 15);
    j->state = (enum job_state)sqlite3_column_int(s, 16);
    j->attempt = sqlite3_column_int(s, 17);
    j->interrupted = sqlite3_column_int(s, 18);
    j->created_at = sqlite3_column_int64(s, 19);
    j->started_at = sqlite3_column_int64(s, 20);
    j->finished_at = sqlite3_column_int64(s, 21);
    j->updated_at = sqlite3_column_int64(s, 22);
    j->outcome = (enum job_outcome)sqlite3_column_int(s, 23);
    j->exit_code = sqlite3_column_int(s, 24);
    j->signal = sqlite3_column_int(s, 25);
    if ((rc = col_strdup(s, 26, &j->error)) < 0)
        goto out;
    j->log_truncated = sqlite3_column_int(s, 27) != 0;
    if ((unsigned)j->state >= JOB_NSTATES || (unsigned)j->outcome >= OUTCOME_NOUTCOMES) {
        rc = -EIO;
        goto out;
    }
    *out = j;
    j = NULL;
out:
    job_free(j);
    return rc;
}

/* ---- writes ------------------------------------------------------------ */

/* One job's values for rows [base + 1, base + INSERT_COLS] of an insert.
 * cmd and env are its JSON, bound without copies: they must outlive the
 * step. */
static void
bind_job(sqlite3_stmt *s, int base, const struct job_spec *spec, int64_t id, int64_t now,
         const char *cmd, size_t cmdlen, const char *env, size_t envlen)
{
    int64_t run_at = spec->run_at > 0 ? spec->run_at : now;

    sqlite3_bind_int64(s, base + 1, id);
    bind_text_or_null(s, base + 2, spec->queue ? spec->queue : "default");
    bind_text_or_null(s, base + 3, spec->name);
    sqlite3_bind_int(s, base + 4, spec->priority);
    sqlite3_bind_text(s, base + 5, cmd, (int)cmdlen, SQLITE_STATIC);
    if (env != NULL)
        sqlite3_bind_text(s, base + 6, env, (int)envlen, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, base + 6);
    bind_text_or_null(s, base + 7, spec->cwd);
    bind_text_or_null(s, base + 8, spec->unique_key);
    sqlite3_bind_int(s, base + 9, spec->max_attempts);
    sqlite3_bind_int64(s, base + 10, spec->backoff_base_ms);
    sqlite3_bind_int64(s, base + 11, spec->backoff_max_ms);
    sqlite3_bind_int64(s, base + 12, spec->timeout_ms);
    sqlite3_bind_int64(s, base + 13, spec->deadline);
    sqlite3_bind_int64(s, base + 14, run_at);
    sqlite3_bind_int64(s, base + 15, spec->uid);
    sqlite3_bind_int64(s, base + 16, spec->gid);
    sqlite3_bind_int(s, base + 17, run_at > now ? JOB_SCHEDULED : JOB_QUEUED);
    sqlite3_bind_int64(s, base + 18, now);
    sqlite3_bind_int64(s, base + 19, now);
}

/* Inserts n (1, INSERT_SOME_ROWS or INSERT_MANY_ROWS) jobs with one
 * statement and gives them the next ids. */
static int
insert_jobs(struct store_conn *c, const struct job_spec *specs, size_t n, int64_t now, int64_t *ids)
{
    sqlite3_stmt *s;
    char *cmd[INSERT_MANY_ROWS] = {0}, *env[INSERT_MANY_ROWS] = {0};
    size_t cmdlen[INSERT_MANY_ROWS], envlen[INSERT_MANY_ROWS] = {0};
    int rc;

    if ((rc = prep(c,
                   n == 1                  ? S_INSERT
                   : n == INSERT_SOME_ROWS ? S_INSERT_SOME
                                           : S_INSERT_MANY,
                   &s)) < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if ((rc = strv_to_json(specs[i].command, &cmd[i], &cmdlen[i])) < 0 ||
            (specs[i].env != NULL && (rc = strv_to_json(specs[i].env, &env[i], &envlen[i])) < 0))
            goto out;
        bind_job(s, (int)i * INSERT_COLS, &specs[i], c->next_id + (int64_t)i, now, cmd[i],
                 cmdlen[i], env[i], envlen[i]);
    }
    if ((rc = step_done(s)) < 0)
        goto out;
    for (size_t i = 0; i < n && rc == 0; i++) {
        int64_t run_at = specs[i].run_at > 0 ? specs[i].run_at : now;
        ids[i] = c->next_id++;
        rc = count(c, specs[i].queue ? specs[i].queue : "default", specs[i].uid,
                   run_at > now ? JOB_SCHEDULED : JOB_QUEUED, 1);
    }
    c->next_id_dirty = true;
out:
    for (size_t i = 0; i < n; i++) {
        free(cmd[i]);
        free(env[i]);
    }
    return rc;
}

static int
submit_one(struct store_conn *c, const struct job_spec *spec, int64_t now, int64_t *id,
           bool *existed)
{
    sqlite3_stmt *s;
    int src, rc;

    *existed = false;
    if (spec->unique_key != NULL) {
        if ((rc = prep(c, S_UNIQUE_FIND, &s)) < 0)
            return rc;
        sqlite3_bind_int64(s, 1, spec->uid);
        sqlite3_bind_text(s, 2, spec->unique_key, -1, SQLITE_STATIC);
        src = sqlite3_step(s);
        if (src == SQLITE_ROW) {
            *id = sqlite3_column_int64(s, 0);
            *existed = true;
        }
        sqlite3_reset(s);
        if (src == SQLITE_ROW)
            return 0;
        if (src != SQLITE_DONE)
            return sq_rc(src);
    }
    return insert_jobs(c, spec, 1, now, id);
}

static int
sq_submit(struct store_conn *c, const struct job_spec *specs, size_t n, int64_t now, int64_t *ids,
          bool *existed)
{
    size_t i = 0, run;
    int rc = 0;

    /* In order, so ids follow the specs: runs of INSERT_MANY_ROWS (or
     * INSERT_SOME_ROWS) jobs without a unique key go in one statement
     * each; the rest one by one (a key must be looked up, and may repeat
     * within the batch). */
    while (i < n && rc == 0) {
        for (run = 0; i + run < n && run < INSERT_MANY_ROWS && specs[i + run].unique_key == NULL;
             run++)
            existed[i + run] = false;
        if (run == INSERT_MANY_ROWS || run >= INSERT_SOME_ROWS) {
            run = run == INSERT_MANY_ROWS ? run : INSERT_SOME_ROWS;
            rc = insert_jobs(c, &specs[i], run, now, &ids[i]);
            i += run;
        } else {
            rc = submit_one(c, &specs[i], now, &ids[i], &existed[i]);
            i++;
        }
    }
    return rc;
}

struct cand {
    int64_t id, run_at, deadline;
    int32_t priority;
    uid_t uid;
    const char *queue; /* borrowed from the active_queue array */
};

/* Dispatch order: priority desc, run_at, id. */
static int
cand_cmp(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;

    if (x->priority != y->priority)
        return x->priority > y->priority ? -1 : 1;
    if (x->run_at != y->run_at)
        return x->run_at < y->run_at ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

struct active_queue {
    char *name;
    int take;
};

/* Queues with ready jobs that may start some now: not paused, below their
 * concurrency limit. Returns owned *out (names and array). */
static int
active_queues(struct store_conn *c, int max, struct active_queue **out, int *n)
{
    sqlite3_stmt *s;
    struct active_queue *q = NULL, *nq;
    int cap = 0, cnt = 0, src, rc;

    if ((rc = prep(c, S_ACTIVE_QUEUES, &s)) < 0)
        return rc;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        int paused = sqlite3_column_int(s, 1);
        int64_t limit = sqlite3_column_int64(s, 2), running = sqlite3_column_int64(s, 3);
        int64_t take = max;
        if (paused)
            continue;
        if (limit > 0 && limit - running < take)
            take = limit - running;
        if (take <= 0)
            continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 8;
            if ((nq = realloc(q, (size_t)cap * sizeof(*q))) == NULL) {
                rc = -ENOMEM;
                goto out;
            }
            q = nq;
        }
        if ((rc = col_strdup(s, 0, &q[cnt].name)) < 0)
            goto out;
        q[cnt++].take = (int)take;
    }
    if (src != SQLITE_DONE) {
        rc = sq_rc(src);
        goto out;
    }
    *out = q;
    *n = cnt;
    q = NULL;
    cnt = 0;
out:
    sqlite3_reset(s);
    for (int i = 0; i < cnt; i++)
        free(q[i].name);
    free(q);
    return rc;
}

/* The head of each active queue, merged in dispatch order. Returns owned
 * *out, whose queue names are borrowed from q. */
static int
candidates(struct store_conn *c, const struct active_queue *q, int nq, struct cand **out, size_t *n)
{
    sqlite3_stmt *s;
    struct cand *v = NULL, *nv;
    size_t cnt = 0, cap = 0;
    int src = SQLITE_DONE, rc;

    if ((rc = prep(c, S_READY_TOP, &s)) < 0)
        return rc;
    for (int i = 0; i < nq; i++) {
        sqlite3_bind_text(s, 1, q[i].name, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, q[i].take);
        while ((src = sqlite3_step(s)) == SQLITE_ROW) {
            if (cnt == cap) {
                cap = cap ? cap * 2 : 64;
                if ((nv = realloc(v, cap * sizeof(*v))) == NULL) {
                    rc = -ENOMEM;
                    goto out;
                }
                v = nv;
            }
            v[cnt].id = sqlite3_column_int64(s, 0);
            v[cnt].priority = sqlite3_column_int(s, 1);
            v[cnt].run_at = sqlite3_column_int64(s, 2);
            v[cnt].deadline = sqlite3_column_int64(s, 3);
            v[cnt].uid = (uid_t)sqlite3_column_int64(s, 4);
            v[cnt].queue = q[i].name;
            cnt++;
        }
        sqlite3_reset(s);
        if (src != SQLITE_DONE) {
            rc = sq_rc(src);
            goto out;
        }
    }
    if (cnt > 1)
        qsort(v, cnt, sizeof(*v), cand_cmp);
    *out = v;
    *n = cnt;
    v = NULL;
out:
    sqlite3_reset(s);
    free(v);
    return rc;
}

/* Due scheduled and retrying jobs become ready, oldest first, at most
 * JOBQ_STORE_PROMOTE_MAX per claim so a claim stays O(K). */
static int
promote(struct store_conn *c, int64_t now)
{
    sqlite3_stmt *s, *u;
    struct due {
        int64_t id;
        uid_t uid;
        enum job_state state;
        char *queue;
    } *v = NULL, *nv;
    size_t n = 0, cap = 0;
    int src, rc;

    if ((rc = prep(c, S_DUE, &s)) < 0 || (rc = prep(c, S_PROMOTE, &u)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, now);
    sqlite3_bind_int(s, 2, JOBQ_STORE_PROMOTE_MAX);
    /* Collected first: the updates move rows out of the index s walks. */
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            if ((nv = realloc(v, cap * sizeof(*v))) == NULL) {
                rc = -ENOMEM;
                goto out;
            }
            v = nv;
        }
        v[n].id = sqlite3_column_int64(s, 0);
        v[n].uid = (uid_t)sqlite3_column_int64(s, 2);
        v[n].state = (enum job_state)sqlite3_column_int(s, 3);
        if ((rc = col_strdup(s, 1, &v[n].queue)) < 0)
            goto out;
        n++;
    }
    sqlite3_reset(s);
    if (src != SQLITE_DONE) {
        rc = sq_rc(src);
        goto out;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        sqlite3_bind_int64(u, 1, v[i].id);
        sqlite3_bind_int64(u, 2, now);
        if ((rc = step_done(u)) == 0)
            rc = count_move(c, v[i].queue, v[i].uid, v[i].state, JOB_QUEUED);
    }
out:
    sqlite3_reset(s);
    for (size_t i = 0; i < n; i++)
        free(v[i].queue);
    free(v);
    return rc;
}

/* A ready job whose deadline passed before it could start: failed, and no
 * attempt is recorded because none ran. */
static int
expire(struct store_conn *c, const struct cand *k, int64_t now)
{
    sqlite3_stmt *s;
    int rc;

    if ((rc = prep(c, S_EXPIRE, &s)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, k->id);
    sqlite3_bind_int64(s, 2, now);
    sqlite3_bind_int(s, 3, OUTCOME_DEADLINE);
    sqlite3_bind_text(s, 4, "deadline passed before the job could start", -1, SQLITE_STATIC);
    if ((rc = step_done(s)) < 0)
        return rc;
    return count_move(c, k->queue, k->uid, JOB_QUEUED, JOB_FAILED);
}

/* Marks one ready job running and records its attempt. Returns owned *out. */
static int
start(struct store_conn *c, int64_t id, int64_t now, const char *boot_id, struct job **out)
{
    sqlite3_stmt *s, *a;
    struct job *j = NULL;
    int src, rc;

    if ((rc = prep(c, S_START, &s)) < 0 || (rc = prep(c, S_ATTEMPT_INSERT, &a)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, now);
    if ((src = sqlite3_step(s)) != SQLITE_ROW) {
        rc = src == SQLITE_DONE ? -ESTALE : sq_rc(src);
        goto out;
    }
    if ((rc = row_job(s, &j)) < 0)
        goto out;
    /* Finish the RETURNING statement before the next write. */
    if ((src = sqlite3_step(s)) != SQLITE_DONE) {
        rc = sq_rc(src);
        goto out;
    }
    sqlite3_reset(s);
    sqlite3_bind_int64(a, 1, id);
    sqlite3_bind_int(a, 2, j->attempt);
    sqlite3_bind_int64(a, 3, now);
    sqlite3_bind_text(a, 4, boot_id ? boot_id : "", -1, SQLITE_STATIC);
    if ((rc = step_done(a)) < 0 ||
        (rc = count_move(c, j->spec.queue, j->spec.uid, JOB_QUEUED, JOB_RUNNING)) < 0)
        goto out;
    *out = j;
    j = NULL;
out:
    sqlite3_reset(s);
    job_free(j);
    return rc;
}

static int
claim(struct store_conn *c, int64_t now, int max, const char *boot_id, struct job **jobs, int *n,
      int64_t *expired, int *nexpired)
{
    struct active_queue *q = NULL;
    struct cand *cand = NULL;
    size_t ncand = 0;
    int nq = 0, got = 0, rc;

    *n = 0;
    if (nexpired != NULL)
        *nexpired = 0;
    if (max <= 0)
        return 0;
    if (max > JOBQ_STORE_CLAIM_MAX)
        max = JOBQ_STORE_CLAIM_MAX;
    /* Due scheduled/retrying jobs become ready first, so they compete in
     * priority order with the rest; their counts are written now because
     * active_queues reads the counters. */
    if ((rc = promote(c, now)) < 0 || (rc = counters_write(c)) < 0)
        return rc;
    if ((rc = active_queues(c, max, &q, &nq)) < 0 || nq == 0)
        goto out;
    if ((rc = candidates(c, q, nq, &cand, &ncand)) < 0)
        goto out;
    for (size_t i = 0; i < ncand && got < max; i++) {
        if (cand[i].deadline > 0 && cand[i].deadline <= now) {
            if (expired != NULL && *nexpired >= JOBQ_STORE_CLAIM_MAX)
                continue; /* no room to report it: the next claim expires it */
            if ((rc = expire(c, &cand[i], now)) < 0)
                goto out;
            if (expired != NULL)
                expired[(*nexpired)++] = cand[i].id;
            continue;
        }
        if ((rc = start(c, cand[i].id, now, boot_id, &jobs[got])) < 0)
            goto out;
        got++;
    }
    *n = got;
    got = 0;
out:
    for (int i = 0; i < got; i++)
        job_free(jobs[i]);
    for (int i = 0; i < nq; i++)
        free(q[i].name);
    free(q);
    free(cand);
    return rc;
}

static int
sq_set_pgid(struct store_conn *c, int64_t id, int32_t attempt, int32_t pgid)
{
    sqlite3_stmt *s;
    int rc;

    if ((rc = prep(c, S_SET_PGID, &s)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int(s, 2, attempt);
    sqlite3_bind_int(s, 3, pgid);
    if ((rc = step_done(s)) < 0)
        return rc;
    return sqlite3_changes(c->db) == 0 ? -ESTALE : 0;
}

struct brief {
    enum job_state state;
    int32_t attempt, interrupted, max_attempts;
    uid_t uid;
    int64_t deadline, backoff_base_ms, backoff_max_ms, run_at;
    char queue[JOBQ_NAME_MAX_BYTES + 1];
};

static int
job_brief(struct store_conn *c, int64_t id, struct brief *b)
{
    sqlite3_stmt *s;
    const unsigned char *queue;
    int src, rc;

    if ((rc = prep(c, S_JOB_BRIEF, &s)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    if ((src = sqlite3_step(s)) == SQLITE_ROW) {
        b->state = (enum job_state)sqlite3_column_int(s, 0);
        b->attempt = sqlite3_column_int(s, 1);
        b->interrupted = sqlite3_column_int(s, 2);
        b->uid = (uid_t)sqlite3_column_int64(s, 3);
        b->deadline = sqlite3_column_int64(s, 4);
        b->backoff_base_ms = sqlite3_column_int64(s, 5);
        b->backoff_max_ms = sqlite3_column_int64(s, 6);
        b->max_attempts = sqlite3_column_int(s, 7);
        b->run_at = sqlite3_column_int64(s, 8);
        queue = sqlite3_column_text(s, 9);
        snprintf(b->queue, sizeof(b->queue), "%s", queue ? (const char *)queue : "");
        rc = 0;
    } else {
        rc = src == SQLITE_DONE ? -ENOENT : sq_rc(src);
    }
    sqlite3_reset(s);
    return rc;
}

/* Closes an open attempt; -ESTALE if (id, attempt) is not open. */
static int
attempt_finish(struct store_conn *c, int64_t id, int32_t attempt, int64_t at,
               enum job_outcome outcome, int32_t exit_code, int32_t sig, const char *error,
               int64_t log_bytes, bool log_truncated)
{
    sqlite3_stmt *s;
    int rc;

    if ((rc = prep(c, S_ATTEMPT_FINISH, &s)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int(s, 2, attempt);
    sqlite3_bind_int64(s, 3, at);
    sqlite3_bind_int(s, 4, outcome);
    sqlite3_bind_int(s, 5, exit_code);
    sqlite3_bind_int(s, 6, sig);
    bind_text_or_null(s, 7, error);
    sqlite3_bind_int64(s, 8, log_bytes);
    sqlite3_bind_int(s, 9, log_truncated);
    if ((rc = step_done(s)) < 0)
        return rc;
    return sqlite3_changes(c->db) == 0 ? -ESTALE : 0;
}

/* A job row's new values after an attempt ended. */
struct finish {
    enum job_state state;
    int64_t run_at;      /* 0: keep */
    int64_t finished_at; /* -1: keep */
    enum job_outcome outcome;
    int32_t exit_code, signal;
    const char *error;
    int32_t interrupted; /* added to the job's count */
    int log_truncated;   /* -1: keep */
};

/* Writes f to the job b describes, and counts the state change. */
static int
job_finish(struct store_conn *c, int64_t id, const struct brief *b, int64_t now,
           const struct finish *f)
{
    sqlite3_stmt *s;
    int rc;

    if ((rc = prep(c, S_JOB_FINISH, &s)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int(s, 2, f->state);
    sqlite3_bind_int64(s, 3, f->run_at);
    sqlite3_bind_int64(s, 4, f->finished_at);
    sqlite3_bind_int64(s, 5, now);
    sqlite3_bind_int(s, 6, f->outcome);
    sqlite3_bind_int(s, 7, f->exit_code);
    sqlite3_bind_int(s, 8, f->signal);
    bind_text_or_null(s, 9, f->error);
    sqlite3_bind_int(s, 10, f->interrupted);
    sqlite3_bind_int(s, 11, f->log_truncated);
    if ((rc = step_done(s)) < 0)
        return rc;
    return count_move(c, b->queue, b->uid, b->state, f->state);
}

/* One completion. Semantic refusals (-EINVAL, -ESTALE) come before any
 * write, so they leave nothing to undo. */
static int
complete_one(struct store_conn *c, const struct store_completion *d, int64_t now)
{
    struct brief b;
    int64_t at = d->finished_at > 0 ? d->finished_at : now;
    struct finish f = {
        .state = d->next,
        .finished_at = -1,
        .outcome = d->outcome,
        .exit_code = d->exit_code,
        .signal = d->signal,
        .error = d->error,
        /* The daemon stopping is not the job's failure: it keeps its
         * budget. */
        .interrupted = d->outcome == OUTCOME_INTERRUPTED,
        .log_truncated = d->log_truncated,
    };
    int rc;

    if ((unsigned)d->outcome >= OUTCOME_NOUTCOMES || d->outcome == OUTCOME_NONE)
        return -EINVAL;
    switch (d->next) {
    case JOB_SUCCEEDED:
    case JOB_FAILED:
        f.finished_at = at;
        break;
    case JOB_RETRYING:
        f.run_at = d->run_at > 0 ? d->run_at : now;
        f.finished_at = 0;
        break;
    case JOB_QUEUED:
        f.run_at = now;
        f.finished_at = 0;
        break;
    default:
        return -EINVAL;
    }
    if ((rc = job_brief(c, d->id, &b)) < 0)
        return rc == -ENOENT ? -ESTALE : rc;
    if (b.attempt != d->attempt || (b.state != JOB_RUNNING && b.state != JOB_CANCELED))
        return -ESTALE;
    if (b.state == JOB_CANCELED) {
        /* Canceled while running: the attempt is recorded as it ended and
         * the job stays canceled. */
        f.state = JOB_CANCELED;
        f.run_at = 0;
        f.finished_at = -1;
    }
    if ((rc = attempt_finish(c, d->id, d->attempt, at, d->outcome, d->exit_code, d->signal,
                             d->error, d->log_bytes, d->log_truncated)) < 0)
        return rc;
    return job_finish(c, d->id, &b, now, &f);
}

static bool
semantic(int rc)
{
    return rc == -EINVAL || rc == -ESTALE;
}

static int
sq_complete(struct store_conn *c, const struct store_completion *done, size_t n, int64_t now,
            int *rcs)
{
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        rcs[i] = complete_one(c, &done[i], now);
        if (rcs[i] < 0 && !semantic(rcs[i]))
            rc = rcs[i];
    }
    return rc;
}

static bool
visible(struct store_who who, uid_t owner)
{
    return who.admin || who.uid == owner;
}

static int
cancel(struct store_conn *c, struct store_who who, int64_t id, int64_t now, bool *was_running,
       int32_t *attempt)
{
    sqlite3_stmt *s;
    struct brief b;
    int rc;

    if (was_running != NULL)
        *was_running = false;
    if (attempt != NULL)
        *attempt = 0;
    if ((rc = job_brief(c, id, &b)) < 0)
        return rc;
    if (!visible(who, b.uid))
        return -ENOENT;
    /* Canceling twice is not an error (a client retrying its request). */
    if (b.state == JOB_CANCELED)
        return 0;
    if (job_state_terminal(b.state))
        return -EALREADY;
    if ((rc = prep(c, S_CANCEL, &s)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, now);
    sqlite3_bind_int(s, 3, b.state != JOB_RUNNING);
    if ((rc = step_done(s)) < 0 || (rc = count_move(c, b.queue, b.uid, b.state, JOB_CANCELED)) < 0)
        return rc;
    if (was_running != NULL)
        *was_running = b.state == JOB_RUNNING;
    if (attempt != NULL)
        *attempt = b.state == JOB_RUNNING ? b.attempt : 0;
    return 0;
}

static int
sq_cancel(struct store_conn *c, struct store_who who, int64_t id, int64_t now, bool *was_running,
          int32_t *attempt)
{
    return cancel(c, who, id, now, was_running, attempt);
}

static int
retry(struct store_conn *c, struct store_who who, int64_t id, int64_t now)
{
    sqlite3_stmt *s;
    struct brief b;
    enum job_state next;
    int32_t used, max_attempts;
    int src, rc;

    if ((rc = job_brief(c, id, &b)) < 0)
        return rc;
    if (!visible(who, b.uid))
        return -ENOENT;
    if (b.state != JOB_FAILED && b.state != JOB_CANCELED)
        return -EBUSY;
    /* No attempt may start past the deadline, so a retry could only fail. */
    if (b.deadline > 0 && b.deadline <= now)
        return -EBUSY;
    /* A job canceled while running may still have its process: running it
     * again before that attempt is closed could run it twice at once. */
    if ((rc = prep(c, S_OPEN_ATTEMPT, &s)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    src = sqlite3_step(s);
    sqlite3_reset(s);
    if (src == SQLITE_ROW)
        return -EBUSY;
    if (src != SQLITE_DONE)
        return sq_rc(src);
    /* Used up: exactly one more attempt (docs/PROTOCOL.md, retry). */
    used = b.attempt - b.interrupted;
    max_attempts = used >= b.max_attempts ? used + 1 : b.max_attempts;
    if (max_attempts > JOBQ_ATTEMPTS_MAX)
        return -EBUSY;
    next = b.run_at > now ? JOB_SCHEDULED : JOB_QUEUED;
    if ((rc = prep(c, S_RETRY, &s)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, now);
    sqlite3_bind_int(s, 3, next);
    sqlite3_bind_int64(s, 4, b.run_at > now ? b.run_at : now);
    sqlite3_bind_int(s, 5, max_attempts);
    if ((rc = step_done(s)) < 0)
        return rc;
    return count_move(c, b.queue, b.uid, b.state, next);
}

static int
sq_retry(struct store_conn *c, struct store_who who, int64_t id, int64_t now)
{
    return retry(c, who, id, now);
}

static int
sq_queue_set(struct store_conn *c, const char *queue, int paused, int32_t limit)
{
    sqlite3_stmt *s;
    int rc;

    if (queue == NULL || limit < -1)
        return -EINVAL;
    if ((rc = prep(c, S_QUEUE_SET, &s)) < 0)
        return rc;
    sqlite3_bind_text(s, 1, queue, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, paused < 0 ? -1 : paused != 0);
    sqlite3_bind_int(s, 3, limit);
    return step_done(s);
}

#define TERMINAL_MASK ((1u << JOB_SUCCEEDED) | (1u << JOB_FAILED) | (1u << JOB_CANCELED))

static int
purge(struct store_conn *c, struct store_who who, int64_t before, unsigned states, int max,
      int64_t *ids, int *n)
{
    sqlite3_stmt *s;
    int src, rc = 0;

    if ((rc = prep(c, S_PURGE, &s)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, before);
    sqlite3_bind_int(s, 2, (int)states);
    sqlite3_bind_int(s, 3, max);
    if (who.admin)
        sqlite3_bind_null(s, 4);
    else
        sqlite3_bind_int64(s, 4, who.uid);
    /* RETURNING rows come after the whole DELETE ran; all are read. */
    while ((src = sqlite3_step(s)) == SQLITE_ROW && rc == 0) {
        const unsigned char *queue = sqlite3_column_text(s, 1);
        if (*n < max)
            ids[(*n)++] = sqlite3_column_int64(s, 0);
        rc = count(c, queue ? (const char *)queue : "", (uid_t)sqlite3_column_int64(s, 2),
                   (enum job_state)sqlite3_column_int(s, 3), -1);
    }
    sqlite3_reset(s);
    if (rc == 0 && src != SQLITE_DONE)
        rc = sq_rc(src);
    return rc;
}

static int
sq_purge(struct store_conn *c, struct store_who who, int64_t before, unsigned states, int max,
         int64_t *ids, int *n)
{
    int rc;

    *n = 0;
    states = states ? states & TERMINAL_MASK : TERMINAL_MASK;
    if (states == 0 || max <= 0)
        return 0;
    if ((rc = purge(c, who, before, states, max, ids, n)) < 0)
        *n = 0;
    return rc;
}

static int
sq_running(struct store_conn *c, struct store_running **out, size_t *n)
{
    sqlite3_stmt *s;
    struct store_running *v = NULL, *nv;
    size_t cnt = 0, cap = 0;
    int src, rc;

    if ((rc = prep(c, S_RUNNING, &s)) < 0)
        return rc;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        const unsigned char *boot = sqlite3_column_text(s, 3);
        if (cnt == cap) {
            cap = cap ? cap * 2 : 64;
            if ((nv = realloc(v, cap * sizeof(*v))) == NULL) {
                rc = -ENOMEM;
                goto out;
            }
            v = nv;
        }
        memset(&v[cnt], 0, sizeof(v[cnt]));
        v[cnt].id = sqlite3_column_int64(s, 0);
        v[cnt].attempt = sqlite3_column_int(s, 1);
        v[cnt].pgid = sqlite3_column_int(s, 2);
        snprintf(v[cnt].boot_id, sizeof(v[cnt].boot_id), "%s", boot ? (const char *)boot : "");
        v[cnt].started_at = sqlite3_column_int64(s, 4);
        cnt++;
    }
    if (src != SQLITE_DONE) {
        rc = sq_rc(src);
        goto out;
    }
    *out = v;
    *n = cnt;
    v = NULL;
out:
    sqlite3_reset(s);
    free(v);
    return rc;
}

/* splitmix64: one well-mixed value per (seed, job), so recovery's jitter
 * is reproducible in tests and different per job. */
static uint64_t
mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static int
recover(struct store_conn *c, int64_t now, uint64_t seed, int64_t *retrying, int64_t *failed)
{
    static const char interrupted[] = "jobqd stopped during the attempt";
    struct store_running *open = NULL;
    size_t n = 0;
    int rc;

    /* Collected first: updating the rows a statement is still scanning is
     * undefined in SQLite. */
    if ((rc = sq_running(c, &open, &n)) < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        struct brief b;
        struct finish f = {
            .finished_at = -1,
            .outcome = OUTCOME_INTERRUPTED,
            .exit_code = -1,
            .error = interrupted,
            .log_truncated = -1,
        };
        int32_t used;
        if ((rc = attempt_finish(c, open[i].id, open[i].attempt, now, OUTCOME_INTERRUPTED, -1, 0,
                                 interrupted, 0, false)) < 0 ||
            (rc = job_brief(c, open[i].id, &b)) < 0)
            goto out;
        if (b.state != JOB_RUNNING || b.attempt != open[i].attempt) {
            f.state = b.state; /* canceled while running: stays canceled */
        } else if (b.deadline > 0 && b.deadline <= now) {
            f.state = JOB_FAILED;
            f.finished_at = now;
            f.error = "jobqd stopped during the attempt and the deadline has passed";
            ++*failed;
        } else {
            /* Not the job's failure: the attempt does not use up the
             * budget, but the backoff still spaces out a crash loop. */
            used = b.attempt - b.interrupted;
            f.state = JOB_RETRYING;
            f.run_at =
                now + job_backoff_ms(b.backoff_base_ms, b.backoff_max_ms, used > 0 ? used : 1,
                                     mix64(seed ^ (uint64_t)open[i].id));
            f.finished_at = 0;
            f.interrupted = 1;
            ++*retrying;
        }
        if ((rc = job_finish(c, open[i].id, &b, now, &f)) < 0)
            goto out;
    }
out:
    free(open);
    return rc;
}

static int
sq_recover(struct store_conn *c, int64_t now, uint64_t seed, int64_t *retrying, int64_t *failed)
{
    *retrying = *failed = 0;
    return recover(c, now, seed, retrying, failed);
}

/* SQLite refuses to change the safety level inside a transaction: the
 * front calls this between them. In WAL mode NORMAL still writes the WAL
 * at COMMIT (a crash of the process loses nothing) and leaves the fsync to
 * the next FULL commit or checkpoint. */
static int
sq_set_durable(struct store_conn *c, bool durable)
{
    char why[128];
    if (!c->sync_full)
        return 0;
    return exec_pragma(c, durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                       why, sizeof(why));
}

static int
sq_maintain(struct store_conn *c)
{
    int src, log = 0, done = 0;

    /* RESTART waits (busy_timeout) for readers to leave the old WAL, then
     * makes the next writer start it from the beginning: with readers that
     * never hold a transaction between calls, the WAL stays bounded. */
    /* Without a busy timeout: the writer must not sit in here for
     * busy_timeout while requests queue behind it because a reader is in
     * the middle of a long read. A busy RESTART is retried at the next idle
     * moment; meanwhile SQLite's own passive checkpoints keep copying. */
    sqlite3_busy_timeout(c->db, 0);
    src = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_RESTART, &log, &done);
    sqlite3_busy_timeout(c->db, c->busy_ms);
    if (src == SQLITE_BUSY)
        return -EAGAIN;
    return note_sync(c, sq_rc(src));
}

/* ---- reads ------------------------------------------------------------- */

static int
attempts_of(struct store_conn *c, struct job *j)
{
    sqlite3_stmt *s;
    struct job_attempt *a = NULL, *na;
    int32_t n = 0, cap = 0;
    int src, rc;

    if ((rc = prep(c, S_ATTEMPTS, &s)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, j->id);
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        const unsigned char *boot;
        if (n == cap) {
            cap = cap ? cap * 2 : 4;
            if ((na = realloc(a, (size_t)cap * sizeof(*a))) == NULL) {
                rc = -ENOMEM;
                goto out;
            }
            a = na;
        }
        memset(&a[n], 0, sizeof(a[n]));
        a[n].attempt = sqlite3_column_int(s, 0);
        a[n].started_at = sqlite3_column_int64(s, 1);
        a[n].finished_at = sqlite3_column_int64(s, 2);
        a[n].outcome = (enum job_outcome)sqlite3_column_int(s, 3);
        a[n].exit_code = sqlite3_column_int(s, 4);
        a[n].signal = sqlite3_column_int(s, 5);
        if ((rc = col_strdup(s, 6, &a[n].error)) < 0)
            goto out;
        a[n].log_bytes = sqlite3_column_int64(s, 7);
        a[n].log_truncated = sqlite3_column_int(s, 8) != 0;
        a[n].pgid = sqlite3_column_int(s, 9);
        if ((boot = sqlite3_column_text(s, 10)) != NULL)
            snprintf(a[n].boot_id, sizeof(a[n].boot_id), "%s", (const char *)boot);
        n++;
    }
    if (src != SQLITE_DONE) {
        rc = sq_rc(src);
        goto out;
    }
    j->attempts = a;
    j->nattempts = n;
    a = NULL;
    n = 0;
out:
    sqlite3_reset(s);
    job_attempts_free(a, n);
    return rc;
}

static int
sq_get(struct store_conn *c, struct store_who who, int64_t id, struct job **out)
{
    sqlite3_stmt *s;
    struct job *j = NULL;
    int src, rc;

    if ((rc = prep(c, S_GET, &s)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    if ((src = sqlite3_step(s)) != SQLITE_ROW) {
        rc = src == SQLITE_DONE ? -ENOENT : sq_rc(src);
        goto out;
    }
    if ((rc = row_job(s, &j)) < 0)
        goto out;
    sqlite3_reset(s);
    if (!visible(who, j->spec.uid)) {
        rc = -ENOENT;
        goto out;
    }
    if ((rc = attempts_of(c, j)) < 0)
        goto out;
    *out = j;
    j = NULL;
out:
    sqlite3_reset(s);
    job_free(j);
    return rc;
}

/*
 * Newest first with keyset pagination (id < before_id), walking the
 * primary key down from before_id. A filter on a rare state reads more
 * rows before the page fills; no index on state exists because it would
 * cost every insert and every state change a fifth of its time.
 */
static int
sq_list(struct store_conn *c, struct store_who who, const struct store_filter *f, struct job ***out,
        int *n)
{
    sqlite3_stmt *s;
    struct job **v = NULL;
    int limit = f->limit > 0 ? f->limit : 100;
    unsigned states = f->states ? f->states : (1u << JOB_NSTATES) - 1;
    int got = 0, src, rc;

    if (limit > JOBQ_STORE_LIST_MAX)
        limit = JOBQ_STORE_LIST_MAX;
    if ((v = calloc((size_t)limit, sizeof(*v))) == NULL)
        return -ENOMEM;
    if ((rc = prep(c, S_LIST, &s)) < 0)
        goto out;
    sqlite3_bind_int64(s, 1, f->before_id > 0 ? f->before_id : INT64_MAX);
    bind_text_or_null(s, 2, f->queue);
    if (!who.admin)
        sqlite3_bind_int64(s, 3, who.uid);
    else if (f->by_uid)
        sqlite3_bind_int64(s, 3, f->uid);
    else
        sqlite3_bind_null(s, 3);
    sqlite3_bind_int(s, 4, limit);
    sqlite3_bind_int(s, 5, (int)states);
    while (got < limit && (src = sqlite3_step(s)) == SQLITE_ROW)
        if ((rc = row_job(s, &v[got++])) < 0)
            goto out;
    if (got < limit && src != SQLITE_DONE) {
        rc = sq_rc(src);
        goto out;
    }
    *out = v;
    *n = got;
    v = NULL;
    got = 0;
out:
    sqlite3_reset(s);
    for (int i = 0; i < got; i++)
        job_free(v[i]);
    free(v);
    return rc;
}

static int
find_queue(struct store_stats *out, const char *name)
{
    for (int i = 0; i < out->nqueues; i++)
        if (strcmp(out->queues[i].name, name) == 0)
            return i;
    return -1;
}

static int
add_queue(struct store_stats *out, sqlite3_stmt *s, int *idx)
{
    struct store_queue_stats *q;
    const char *name = (const char *)sqlite3_column_text(s, 0);

    if (name == NULL)
        return -EIO;
    if ((*idx = find_queue(out, name)) >= 0)
        return 0;
    if ((q = realloc(out->queues, (size_t)(out->nqueues + 1) * sizeof(*q))) == NULL)
        return -ENOMEM;
    out->queues = q;
    q = &q[out->nqueues];
    memset(q, 0, sizeof(*q));
    if ((q->name = strdup(name)) == NULL)
        return -ENOMEM;
    *idx = out->nqueues++;
    return 0;
}

static int
sq_stats(struct store_conn *c, struct store_who who, struct store_stats *out)
{
    sqlite3_stmt *s = NULL;
    struct stat sb;
    char *wal = NULL;
    int idx, src = SQLITE_DONE, rc;

    memset(out, 0, sizeof(*out));
    if ((rc = prep(c, S_QUEUES, &s)) < 0)
        return rc;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        if ((rc = add_queue(out, s, &idx)) < 0)
            goto out;
        out->queues[idx].paused = sqlite3_column_int(s, 1) != 0;
        out->queues[idx].limit = sqlite3_column_int(s, 2);
    }
    sqlite3_reset(s);
    if (src != SQLITE_DONE || (rc = prep(c, S_COUNTERS, &s)) < 0) {
        rc = rc < 0 ? rc : sq_rc(src);
        goto out;
    }
    if (who.admin)
        sqlite3_bind_null(s, 1);
    else
        sqlite3_bind_int64(s, 1, who.uid);
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        int state = sqlite3_column_int(s, 1);
        int64_t n = sqlite3_column_int64(s, 2);
        if ((unsigned)state >= JOB_NSTATES) {
            rc = -EIO;
            goto out;
        }
        if ((rc = add_queue(out, s, &idx)) < 0)
            goto out;
        out->queues[idx].count[state] += n;
        out->count[state] += n;
    }
    if (src != SQLITE_DONE) {
        rc = sq_rc(src);
        goto out;
    }
    if (stat(c->path, &sb) == 0)
        out->db_bytes = sb.st_size;
    if (asprintf(&wal, "%s-wal", c->path) >= 0 && stat(wal, &sb) == 0)
        out->wal_bytes = sb.st_size;
out:
    if (s != NULL)
        sqlite3_reset(s);
    free(wal);
    if (rc < 0) {
        for (int i = 0; i < out->nqueues; i++)
            free(out->queues[i].name);
        free(out->queues);
        memset(out, 0, sizeof(*out));
    }
    return rc;
}

static int
one_int64(struct store_conn *c, enum stmt_id id, int64_t *v)
{
    sqlite3_stmt *s;
    int src, rc;

    if ((rc = prep(c, id, &s)) < 0)
        return rc;
    if ((src = sqlite3_step(s)) == SQLITE_ROW) {
        *v = sqlite3_column_int64(s, 0); /* NULL reads as 0 */
        rc = 0;
    } else {
        rc = sq_rc(src == SQLITE_DONE ? SQLITE_CORRUPT : src);
    }
    sqlite3_reset(s);
    return rc;
}

static int
sq_next_due(struct store_conn *c, int64_t *run_at)
{
    return one_int64(c, S_NEXT_DUE, run_at);
}

static int
sq_pending(struct store_conn *c, int64_t *n)
{
    return one_int64(c, S_PENDING, n);
}

/* Each query returns a row describing the first inconsistency, or none. */
static const struct {
    const char *what;
    const char *sql;
} verify_checks[] = {
    {"counter differs from a recount (queue, state, counter)",
     "SELECT queue, state, n FROM counters c WHERE n <> (SELECT count(*) FROM jobs j "
     "WHERE j.queue = c.queue AND j.state = c.state AND j.uid = c.uid) LIMIT 1"},
    {"jobs without a counter (queue, state, jobs)",
     "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state, uid "
     "EXCEPT SELECT queue, state, n FROM counters LIMIT 1"},
    {"running job without its open attempt (id, attempt)",
     "SELECT id, attempt FROM jobs j WHERE state = 2 AND NOT EXISTS (SELECT 1 FROM attempts a "
     "WHERE a.job_id = j.id AND a.attempt = j.attempt AND a.finished_at = 0) LIMIT 1"},
    {"open attempt of a job neither running nor canceled (id, attempt, state)",
     "SELECT a.job_id, a.attempt, j.state FROM attempts a JOIN jobs j ON j.id = a.job_id "
     "WHERE a.finished_at = 0 AND (j.state NOT IN (2, 6) OR a.attempt <> j.attempt) LIMIT 1"},
    {"attempt rows differ from the job's attempt count (id, attempt)",
     "SELECT id, attempt FROM jobs j WHERE attempt <> (SELECT count(*) FROM attempts a "
     "WHERE a.job_id = j.id) LIMIT 1"},
    {"meta.next_id is not above every job id (next_id, max id)",
     "SELECT (SELECT value FROM meta WHERE key = 'next_id') AS n, (SELECT max(id) FROM jobs) "
     "AS m WHERE n <= m"},
    {"finished_at does not match the state (id, state, finished_at)",
     "SELECT id, state, finished_at FROM jobs WHERE (state IN (4, 5, 6)) <> (finished_at > 0) "
     "LIMIT 1"},
    {"foreign key violation (table, rowid)", "PRAGMA foreign_key_check"},
};

static int
sq_verify(struct store_conn *c, char *why, size_t whylen)
{
    int rc = 0;

    for (size_t i = 0; i < sizeof(verify_checks) / sizeof(verify_checks[0]) && rc == 0; i++) {
        sqlite3_stmt *s = NULL;
        int src = sqlite3_prepare_v2(c->db, verify_checks[i].sql, -1, &s, NULL);
        if (src == SQLITE_OK)
            src = sqlite3_step(s);
        if (src == SQLITE_ROW) {
            snprintf(why, whylen, "%s: %s, %s, %s", verify_checks[i].what,
                     sqlite3_column_text(s, 0) ? (const char *)sqlite3_column_text(s, 0) : "",
                     sqlite3_column_text(s, 1) ? (const char *)sqlite3_column_text(s, 1) : "",
                     sqlite3_column_text(s, 2) ? (const char *)sqlite3_column_text(s, 2) : "");
            rc = -EIO;
        } else if (src != SQLITE_DONE) {
            snprintf(why, whylen, "%s: %s", verify_checks[i].what, sqlite3_errmsg(c->db));
            rc = sq_rc(src);
        }
        sqlite3_finalize(s);
    }
    return rc;
}

const struct store_backend_ops store_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = conn_close,
    .txn = sq_txn,
    .submit = sq_submit,
    .claim = claim,
    .set_pgid = sq_set_pgid,
    .complete = sq_complete,
    .cancel = sq_cancel,
    .retry = sq_retry,
    .queue_set = sq_queue_set,
    .purge = sq_purge,
    .recover = sq_recover,
    .set_durable = sq_set_durable,
    .maintain = sq_maintain,
    .sync_failed = sq_sync_failed,
    .get = sq_get,
    .list = sq_list,
    .stats = sq_stats,
    .next_due = sq_next_due,
    .pending = sq_pending,
    .running = sq_running,
    .verify = sq_verify,
};
