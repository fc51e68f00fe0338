/*
 * store_pg — the PostgreSQL backend of the store, for several jobqd nodes
 * sharing one database (docs/POSTGRES.md). One libpq connection per
 * struct store_conn; statements are prepared once per connection and bound
 * with parameters; batches travel as arrays (unnest) or one JSON document
 * (jsonb_to_recordset), so a claim or a completion of 256 jobs is a handful
 * of round trips whatever its size.
 *
 * The front's single writer thread works per node: each node has one write
 * connection and its own group commits, and the nodes meet in the
 * database. Claims take ready jobs FOR UPDATE SKIP LOCKED, so two nodes
 * never claim the same job and never wait for each other; a queue with a
 * concurrency limit is claimed under a transaction-level advisory lock of
 * that queue and counts the running jobs of the whole cluster. Completions
 * lock their job rows and are fenced by (id, attempt). Every claim records
 * this node's lease (jobq.nodes) with the attempt, under a KEY SHARE lock
 * of the lease row, so a node that takes a dead node's jobs over
 * (store_pg_node.c) sees every attempt the dead one committed. Counters
 * are appended to jobq.count_deltas (no row is updated by two nodes) and
 * folded into jobq.counts by one node at a time.
 *
 * The front's savepoints cost nothing here: a request refused for its own
 * reasons (a stale completion, a bad state) is refused before it writes,
 * and every SQL error is a storage error, which fails the whole group. The
 * "savepoint" is a snapshot of what the transaction will write at COMMIT
 * (counter changes, notifications).
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "jobq/limits.h"
#include "store_pg_int.h"

static_assert(JOB_SCHEDULED == 0 && JOB_QUEUED == 1 && JOB_RUNNING == 2 && JOB_RETRYING == 3 &&
                  JOB_SUCCEEDED == 4 && JOB_FAILED == 5 && JOB_CANCELED == 6,
              "job states are stored as integers: renumbering needs a migration");
static_assert(OUTCOME_NONE == 0 && OUTCOME_SPAWN_ERROR == 8,
              "job outcomes are stored as integers: renumbering needs a migration");

/* The columns of a job, in the order row_job reads them. */
#define JOB_COLS                                                                                   \
    "id, queue, name, priority, command, env, cwd, unique_key, max_attempts, backoff_base_ms, "    \
    "backoff_max_ms, timeout_ms, deadline, run_at, uid, gid, state, attempt, interrupted, "        \
    "created_at, started_at, finished_at, updated_at, outcome, exit_code, signal, error, "         \
    "log_truncated"

/* The open attempts of nodes: the previous runs of this node's name (all
 * but the newest row of that name, which is this run's), or given ids. */
#define RUNNING_COLS "j.id, j.attempt, j.run_pgid, j.run_boot, j.run_started"

enum stmt_id {
    S_LEASE_CHECK,
    S_INSERT,
    S_UNIQUE_FIND,
    S_IDS,
    S_INSERT_BATCH,
    S_PROMOTE,
    S_ACTIVE,
    S_QUEUE_LOCK,
    S_RUNNING_COUNT,
    S_CANDIDATES,
    S_EXPIRE,
    S_START,
    S_SET_PGID,
    S_BRIEFS,
    S_ATTEMPT_FINISH,
    S_JOB_FINISH,
    S_CANCEL,
    S_OPEN_ATTEMPT,
    S_RETRY,
    S_QUEUE_SET,
    S_PURGE,
    S_RUNNING_MINE,
    S_OPEN_OF_NODES,
    S_DELETE_NODES,
    S_GET,
    S_ATTEMPTS,
    S_LIST,
    S_COUNTERS,
    S_QUEUES,
    S_NEXT_DUE,
    S_PENDING,
    S_SIZE,
    S_FLUSH,
    S_NSTMTS
};

/* The columns a brief holds, in brief_read's order. */
#define BRIEF_COLS                                                                                 \
    "j.id, j.state, j.attempt, j.interrupted, j.uid, j.deadline, j.backoff_base_ms, "              \
    "j.backoff_max_ms, j.max_attempts, j.run_at, j.queue, "                                        \
    "coalesce((SELECT q.max_running FROM jobq.queues q WHERE q.name = j.queue), 0), j.ctid, "      \
    "j.run_started <> 0"

/* Partial-index conditions are repeated word for word (store_pg_schema.c)
 * so the planner can use them. */
static const char *const stmt_sql[S_NSTMTS] = {
    /* Held until COMMIT: a node taking this one's jobs over locks the row
     * FOR UPDATE first, so it waits for this claim and then sees it. With
     * the schema's version: a node of an older jobqd must not start jobs
     * the way its schema did once a newer node has migrated. */
    [S_LEASE_CHECK] = "SELECT (SELECT max(version) FROM jobq.schema_version) FROM jobq.nodes "
                      "WHERE id = $1 FOR KEY SHARE",
    [S_INSERT] =
        "INSERT INTO jobq.jobs (id, queue, name, priority, command, env, cwd, unique_key, "
        "max_attempts, backoff_base_ms, backoff_max_ms, timeout_ms, deadline, run_at, uid, gid, "
        "state, created_at, updated_at) VALUES (nextval('jobq.jobs_id_seq'), $1, $2, $3, "
        "$4::jsonb, $5::jsonb, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17) "
        "ON CONFLICT (uid, unique_key) WHERE unique_key IS NOT NULL DO NOTHING RETURNING id",
    [S_UNIQUE_FIND] = "SELECT id FROM jobq.jobs WHERE uid = $1 AND unique_key = $2",
    [S_IDS] = "SELECT nextval('jobq.jobs_id_seq') FROM generate_series(1, $1::int)",
    [S_INSERT_BATCH] =
        "INSERT INTO jobq.jobs (id, queue, name, priority, command, env, cwd, max_attempts, "
        "backoff_base_ms, backoff_max_ms, timeout_ms, deadline, run_at, uid, gid, state, "
        "created_at, updated_at) SELECT x.id, x.queue, x.name, x.priority, x.command, x.env, "
        "x.cwd, x.max_attempts, x.backoff_base_ms, x.backoff_max_ms, x.timeout_ms, x.deadline, "
        "x.run_at, x.uid, x.gid, x.state, $2, $2 FROM jsonb_to_recordset($1::jsonb) AS x(id "
        "bigint, queue text, name text, priority integer, command jsonb, env jsonb, cwd text, "
        "max_attempts integer, backoff_base_ms bigint, backoff_max_ms bigint, timeout_ms bigint, "
        "deadline bigint, run_at bigint, uid bigint, gid bigint, state smallint)",
    [S_PROMOTE] = "WITH d AS (SELECT id, state FROM jobq.jobs WHERE state IN (0, 3) AND "
                  "run_at <= $1 ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED) "
                  "UPDATE jobq.jobs j SET state = 1, updated_at = $1 FROM d WHERE j.id = d.id "
                  "RETURNING j.queue, j.uid, d.state",
    /* The queues that have ready jobs, one index probe each (a skip scan
     * of jobs_ready), with their settings; paused ones left out. */
    [S_ACTIVE] = "WITH RECURSIVE a(queue) AS ((SELECT queue FROM jobq.jobs WHERE state = 1 "
                 "ORDER BY queue LIMIT 1) UNION ALL SELECT (SELECT j.queue FROM jobq.jobs j "
                 "WHERE j.state = 1 AND j.queue > a.queue ORDER BY j.queue LIMIT 1) FROM a "
                 "WHERE a.queue IS NOT NULL) SELECT a.queue, coalesce(q.max_running, 0) FROM a "
                 "LEFT JOIN jobq.queues q ON q.name = a.queue WHERE a.queue IS NOT NULL AND "
                 "NOT coalesce(q.paused, false) ORDER BY a.queue",
    /* One claimer at a time per limited queue, cluster-wide, until COMMIT;
     * taken in name order so two nodes never wait for each other in a
     * circle. */
    [S_QUEUE_LOCK] = "SELECT pg_advisory_xact_lock(hashtextextended('jobq.queue:' || q, 0)) "
                     "FROM unnest($1::text[]) q",
    [S_RUNNING_COUNT] = "SELECT queue, count(*) FROM jobq.jobs WHERE run_started > 0 AND "
                        "state = 2 AND queue = ANY($1::text[]) GROUP BY queue",
    [S_CANDIDATES] =
        "SELECT j.id, j.priority, j.run_at, j.deadline, j.uid, j.queue, j.ctid "
        "FROM unnest($1::text[], $2::int[]) AS a(queue, take), LATERAL (SELECT id, "
        "priority, run_at, deadline, uid, queue, ctid FROM jobq.jobs WHERE state = 1 AND "
        "queue = a.queue ORDER BY priority DESC, run_at, id LIMIT a.take FOR UPDATE "
        "SKIP LOCKED) j",
    [S_EXPIRE] =
        "UPDATE jobq.jobs SET state = 5, finished_at = $2, updated_at = $2, outcome = 5, "
        "error = 'deadline passed before the job could start' WHERE id = ANY($1::bigint[])",
    /* By the candidates' row addresses, which their locks hold still: a
     * TID scan. "id = ANY(...) AND state = 1" let the planner AND the
     * primary key with a scan of the whole jobs_ready index, dead entries
     * and all (3 of a claim's 4 ms at 100,000 jobs). */
    /* The attempt it opens lives on the row (schema 3). */
    [S_START] = "UPDATE jobq.jobs SET state = 2, attempt = attempt + 1, started_at = CASE "
                "started_at WHEN 0 THEN $2 ELSE started_at END, updated_at = $2, run_started = $2, "
                "run_boot = $3, run_node = $4, run_pgid = 0 WHERE ctid = ANY($1::tid[]) "
                "RETURNING " JOB_COLS,
    /* "run_started <> 0" where the primary key finds the row: "> 0" is
     * jobs_open's predicate, and the planner may prefer a scan of that
     * whole index, dead entries and all (see S_ATTEMPT_FINISH). */
    [S_SET_PGID] = "UPDATE jobq.jobs SET run_pgid = $3 WHERE id = $1 AND attempt = $2 AND "
                   "run_started <> 0",
    [S_BRIEFS] = "SELECT " BRIEF_COLS " FROM jobq.jobs j WHERE j.id = ANY($1::bigint[]) "
                 "ORDER BY j.id FOR UPDATE OF j",
    /* An attempt is written once, when it ends, from its job's run_*
     * (the rows briefs() locked, by ctid; before S_JOB_FINISH moves them).
     * Fenced on the open attempt: "run_started <> 0", not "> 0", which is
     * jobs_open's predicate (schema 1's "finished_at = 0" on attempts_open
     * made the planner scan that whole index, dead entries and all,
     * instead of probing the key). */
    [S_ATTEMPT_FINISH] =
        "INSERT INTO jobq.attempts (job_id, attempt, started_at, finished_at, outcome, "
        "exit_code, signal, error, log_bytes, log_truncated, pgid, boot_id, node_id) SELECT "
        "j.id, j.attempt, j.run_started, v.at, v.outcome, v.exit_code, v.signal, v.error, "
        "v.log_bytes, v.trunc, j.run_pgid, j.run_boot, j.run_node FROM unnest($1::tid[], "
        "$2::int[], $3::bigint[], $4::smallint[], $5::int[], $6::int[], $7::text[], $8::bigint[], "
        "$9::bool[]) AS v(tid, attempt, at, outcome, exit_code, signal, error, log_bytes, trunc) "
        "JOIN jobq.jobs j ON j.ctid = v.tid WHERE j.attempt = v.attempt AND j.run_started <> 0",
    /* By the row addresses briefs() read, which its locks hold still: a
     * TID scan instead of a primary key probe per job. */
    [S_JOB_FINISH] =
        "UPDATE jobq.jobs j SET state = v.state, run_at = CASE WHEN v.run_at > 0 THEN v.run_at "
        "ELSE j.run_at END, finished_at = CASE WHEN v.fin >= 0 THEN v.fin ELSE j.finished_at END, "
        "updated_at = $11, outcome = v.outcome, exit_code = v.exit_code, signal = v.signal, "
        "error = v.error, interrupted = j.interrupted + v.intr, log_truncated = CASE WHEN "
        "v.lt >= 0 THEN v.lt = 1 ELSE j.log_truncated END, run_started = 0, run_node = NULL, "
        "run_boot = '', run_pgid = 0 FROM unnest($1::tid[], "
        "$2::smallint[], $3::bigint[], $4::bigint[], $5::smallint[], $6::int[], $7::int[], "
        "$8::text[], $9::int[], $10::int[]) AS v(tid, state, run_at, fin, outcome, exit_code, "
        "signal, error, intr, lt) WHERE j.ctid = v.tid",
    /* $3: not running (store_sqlite.c's S_CANCEL says why). */
    [S_CANCEL] = "UPDATE jobq.jobs SET state = 6, finished_at = $2, updated_at = $2, "
                 "error = CASE WHEN $3::bigint = 0 THEN error WHEN coalesce(error, '') = '' "
                 "THEN 'canceled' ELSE 'canceled before its next attempt (the last one: ' "
                 "|| error || ')' END WHERE id = $1",
    [S_OPEN_ATTEMPT] = "SELECT 1 FROM jobq.jobs WHERE id = $1 AND run_started <> 0",
    [S_RETRY] = "UPDATE jobq.jobs SET state = $3, run_at = $4, finished_at = 0, updated_at = $2, "
                "max_attempts = $5 WHERE id = $1",
    [S_QUEUE_SET] = "INSERT INTO jobq.queues (name, paused, max_running) VALUES ($1, "
                    "coalesce($2::bool, false), greatest($3::int, 0)) ON CONFLICT (name) DO "
                    "UPDATE SET paused = coalesce($2::bool, jobq.queues.paused), max_running = "
                    "CASE WHEN $3::int >= 0 THEN $3::int ELSE jobq.queues.max_running END",
    /* The jobs and their attempts (no foreign key cascades: schema 2). */
    [S_PURGE] = "WITH d AS (DELETE FROM jobq.jobs WHERE id IN (SELECT id FROM jobq.jobs WHERE "
                "state >= 4 AND finished_at < $1 AND ($2::int >> state::int) & 1 = 1 AND "
                "($4::bigint IS NULL OR uid = $4) ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP "
                "LOCKED) RETURNING id, queue, uid, state), a AS (DELETE FROM jobq.attempts WHERE "
                "job_id IN (SELECT id FROM d)) SELECT id, queue, uid, state FROM d",
    [S_RUNNING_MINE] = "SELECT " RUNNING_COLS " FROM jobq.jobs j JOIN jobq.nodes n ON "
                       "n.id = j.run_node WHERE j.run_started > 0 AND n.name = $1 AND n.id < "
                       "(SELECT max(id) FROM jobq.nodes WHERE name = $1) ORDER BY j.id",
    [S_OPEN_OF_NODES] = "SELECT " RUNNING_COLS " FROM jobq.jobs j WHERE j.run_started > 0 "
                        "AND j.run_node = ANY($1::bigint[]) ORDER BY j.id",
    [S_DELETE_NODES] = "DELETE FROM jobq.nodes WHERE id = ANY($1::bigint[])",
    [S_GET] = "SELECT " JOB_COLS " FROM jobq.jobs WHERE id = $1",
    /* The ended ones, and the open one from its job's row. */
    [S_ATTEMPTS] = "SELECT attempt, started_at, finished_at, outcome, exit_code, signal, error, "
                   "log_bytes, log_truncated, pgid, boot_id FROM jobq.attempts WHERE job_id = $1 "
                   "UNION ALL SELECT attempt, run_started, 0, 0, -1, 0, NULL, 0, false, run_pgid, "
                   "run_boot FROM jobq.jobs WHERE id = $1 AND run_started <> 0 ORDER BY 1",
    [S_LIST] = "SELECT " JOB_COLS " FROM jobq.jobs WHERE id < $1 AND ($2::text IS NULL OR "
               "queue = $2) AND ($3::bigint IS NULL OR uid = $3) AND ($5::int >> state::int) & 1 "
               "= 1 ORDER BY id DESC LIMIT $4",
    /* One statement, one snapshot: the folded counts and the changes not
     * folded yet add up exactly whatever the folding node does. */
    [S_COUNTERS] = "SELECT queue, state, sum(n) FROM (SELECT queue, state, uid, n FROM "
                   "jobq.counts UNION ALL SELECT queue, state, uid, n FROM jobq.count_deltas) c "
                   "WHERE $1::bigint IS NULL OR uid = $1 GROUP BY queue, state HAVING sum(n) <> 0",
    [S_QUEUES] = "SELECT name, paused, max_running FROM jobq.queues ORDER BY name",
    [S_NEXT_DUE] = "SELECT coalesce((SELECT run_at FROM jobq.jobs WHERE state IN (0, 3) "
                   "ORDER BY run_at LIMIT 1), 0)",
    [S_PENDING] = "SELECT coalesce(sum(n), 0) FROM (SELECT state, n FROM jobq.counts UNION ALL "
                  "SELECT state, n FROM jobq.count_deltas) c WHERE state IN (0, 1, 3)",
    [S_SIZE] = "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN "
               "pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = 'jobq' AND "
               "c.relkind = 'r'",
    [S_FLUSH] = "WITH d AS (INSERT INTO jobq.count_deltas (queue, state, uid, n) SELECT * FROM "
                "unnest($1::text[], $2::smallint[], $3::bigint[], $4::bigint[])) SELECT "
                "pg_notify('" PG_CHANNEL "', p) FROM unnest($5::text[]) p",
};

static const int stmt_nparams[S_NSTMTS] = {
    [S_LEASE_CHECK] = 1,   [S_INSERT] = 17,      [S_UNIQUE_FIND] = 2,    [S_IDS] = 1,
    [S_INSERT_BATCH] = 2,  [S_PROMOTE] = 2,      [S_ACTIVE] = 0,         [S_QUEUE_LOCK] = 1,
    [S_RUNNING_COUNT] = 1, [S_CANDIDATES] = 2,   [S_EXPIRE] = 2,         [S_START] = 4,
    [S_SET_PGID] = 3,      [S_BRIEFS] = 1,       [S_ATTEMPT_FINISH] = 9, [S_JOB_FINISH] = 11,
    [S_CANCEL] = 3,        [S_OPEN_ATTEMPT] = 1, [S_RETRY] = 5,          [S_QUEUE_SET] = 3,
    [S_PURGE] = 4,         [S_RUNNING_MINE] = 1, [S_OPEN_OF_NODES] = 1,  [S_DELETE_NODES] = 1,
    [S_GET] = 1,           [S_ATTEMPTS] = 1,     [S_LIST] = 5,           [S_COUNTERS] = 1,
    [S_QUEUES] = 0,        [S_NEXT_DUE] = 0,     [S_PENDING] = 0,        [S_SIZE] = 0,
    [S_FLUSH] = 5,
};

static_assert(S_NSTMTS <= 64, "store_conn.prepared holds 64 statements");

/* ---- errors and connections -------------------------------------------- */

int
pg_errno(const PGresult *r)
{
    const char *st = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

    if (st == NULL)
        return -EIO; /* no answer: the connection is gone */
    if (strcmp(st, "53100") == 0)
        return -ENOSPC; /* disk_full */
    if (strcmp(st, "53200") == 0)
        return -ENOMEM;
    /* Waits that ended: lock_timeout, statement_timeout, a deadlock or a
     * serialization failure between nodes. Nothing was committed. */
    if (strcmp(st, "55P03") == 0 || strcmp(st, "57014") == 0 || strcmp(st, "40P01") == 0 ||
        strcmp(st, "40001") == 0)
        return -ETIMEDOUT;
    if (strcmp(st, "25006") == 0)
        return -EROFS; /* a read-only standby */
    if (strcmp(st, "42501") == 0 || strncmp(st, "28", 2) == 0)
        return -EACCES;
    return -EIO;
}

int
pg_connect(const char *url, const char *app, PGconn **out, char *why, size_t whylen)
{
    /* The URL comes first: the settings after it are jobqd's. */
    char timeout[16];
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {url, timeout, app, NULL};
    PGconn *pg;

    snprintf(timeout, sizeof(timeout), "%d", JOBQ_PG_CONNECT_TIMEOUT_S);
    if ((pg = PQconnectdbParams(keys, vals, 1)) == NULL)
        return -ENOMEM;
    if (PQstatus(pg) != CONNECTION_OK) {
        char *m = PQerrorMessage(pg);
        snprintf(why, whylen, "cannot connect to PostgreSQL: %.*s", (int)strcspn(m, "\n"), m);
        PQfinish(pg);
        return -EIO;
    }
    *out = pg;
    return 0;
}

int
pg_exec(PGconn *pg, const char *sql, char *why, size_t whylen)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType s = PQresultStatus(r);
    int rc = 0;

    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(pg);
        rc = pg_errno(r);
        if (why != NULL)
            snprintf(why, whylen, "%.*s", (int)strcspn(m, "\n"), m);
    }
    PQclear(r);
    return rc;
}

/* Notes a failed result's message; returns its errno. Takes r. */
static int
fail(struct store_conn *c, PGresult *r)
{
    const char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(c->pg);
    int rc = pg_errno(r);

    snprintf(c->err, sizeof(c->err), "%.*s", (int)strcspn(m, "\n"), m);
    PQclear(r);
    return rc;
}

/* Runs statement id with params; returns owned *out (PQclear) on success.
 * Prepares it on first use on this connection. */
static int
run(struct store_conn *c, enum stmt_id id, const char *const *params, PGresult **out)
{
    char name[16];
    PGresult *r;
    ExecStatusType s;

    *out = NULL;
    snprintf(name, sizeof(name), "jq%d", (int)id);
    if (!c->prepared[id]) {
        r = PQprepare(c->pg, name, stmt_sql[id], stmt_nparams[id], NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            return fail(c, r);
        PQclear(r);
        c->prepared[id] = true;
    }
    r = PQexecPrepared(c->pg, name, stmt_nparams[id], params, NULL, NULL, 0);
    s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
        return fail(c, r);
    *out = r;
    return 0;
}

/* As run, for statements whose rows do not matter; *rows (may be NULL)
 * gets how many it changed. */
static int
run_done(struct store_conn *c, enum stmt_id id, const char *const *params, int64_t *rows)
{
    PGresult *r;
    int rc = run(c, id, params, &r);

    if (rc == 0 && rows != NULL)
        *rows = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return rc;
}

static int64_t
v64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static int32_t
v32(const PGresult *r, int row, int col)
{
    return (int32_t)strtol(PQgetvalue(r, row, col), NULL, 10);
}

static bool
vbool(const PGresult *r, int row, int col)
{
    return PQgetvalue(r, row, col)[0] == 't';
}

/* Copies a column as an owned string, NULL for SQL NULL. */
static int
vdup(const PGresult *r, int row, int col, char **out)
{
    *out = NULL;
    if (PQgetisnull(r, row, col))
        return 0;
    return (*out = strdup(PQgetvalue(r, row, col))) != NULL ? 0 : -ENOMEM;
}

/* ---- parameters -------------------------------------------------------- */

/* Text parameters of one statement: numbers formatted into num[]. */
struct params {
    const char *v[20];
    char num[20][24];
    int n;
};

static void
p_i64(struct params *p, int64_t x)
{
    snprintf(p->num[p->n], sizeof(p->num[0]), "%" PRId64, x);
    p->v[p->n] = p->num[p->n];
    p->n++;
}

static void
p_str(struct params *p, const char *s)
{
    p->v[p->n++] = s; /* NULL is SQL NULL */
}

static int
buf_put(struct pg_buf *b, const char *s, size_t n)
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

static int
buf_str(struct pg_buf *b, const char *s)
{
    return buf_put(b, s, strlen(s));
}

static void
buf_free(struct pg_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Array literals ({1,2,"a b",NULL}): arr_start, one arr_* per element,
 * arr_end. */
static int
arr_sep(struct pg_buf *b)
{
    if (b->len == 0)
        return buf_put(b, "{", 1);
    return buf_put(b, ",", 1);
}

static int
arr_i64(struct pg_buf *b, int64_t x)
{
    char num[24];
    int rc;

    if ((rc = arr_sep(b)) < 0)
        return rc;
    snprintf(num, sizeof(num), "%" PRId64, x);
    return buf_str(b, num);
}

/* A text element, quoted; NULL is SQL NULL. */
static int
arr_text(struct pg_buf *b, const char *s)
{
    int rc;

    if ((rc = arr_sep(b)) < 0)
        return rc;
    if (s == NULL)
        return buf_put(b, "NULL", 4);
    if ((rc = buf_put(b, "\"", 1)) < 0)
        return rc;
    for (const char *run = s;; s++) {
        if (*s == '"' || *s == '\\' || *s == '\0') {
            if ((rc = buf_put(b, run, (size_t)(s - run))) < 0)
                return rc;
            if (*s == '\0')
                break;
            if ((rc = buf_put(b, "\\", 1)) < 0)
                return rc;
            run = s;
        }
    }
    return buf_put(b, "\"", 1);
}

static int
arr_bool(struct pg_buf *b, bool v)
{
    int rc;

    if ((rc = arr_sep(b)) < 0)
        return rc;
    return buf_put(b, v ? "t" : "f", 1);
}

/* The literal of the array built in b ("{}" if empty). Borrowed from b. */
static const char *
arr_end(struct pg_buf *b)
{
    if (b->len == 0 && buf_put(b, "{", 1) < 0)
        return NULL;
    if (buf_put(b, "}", 1) < 0)
        return NULL;
    return b->p;
}

/* ---- per-transaction state: counters and notifications ----------------- */

/* Records that n jobs of (queue, uid) entered state (n < 0: left it). */
static int
count(struct store_conn *c, const char *queue, uid_t uid, int state, int64_t n)
{
    return store_deltas_add(&c->d, queue, uid, state, n);
}

static int
count_move(struct store_conn *c, const char *queue, uid_t uid, int from, int to)
{
    int rc;

    if (from == to)
        return 0;
    if ((rc = count(c, queue, uid, from, -1)) < 0)
        return rc;
    return count(c, queue, uid, to, 1);
}

/* Job id to a notification list ("12,13,"). */
static int
note_id(struct pg_buf *b, int64_t id)
{
    char num[24];

    snprintf(num, sizeof(num), "%" PRId64 ",", id);
    return buf_str(b, num);
}

static void
txn_forget(struct store_conn *c)
{
    store_deltas_truncate(&c->d, 0);
    c->wake = false;
    c->changed.len = 0;
    c->canceled.len = 0;
    if (c->changed.p)
        c->changed.p[0] = '\0';
    if (c->canceled.p)
        c->canceled.p[0] = '\0';
}

static int
snap_take(struct store_conn *c)
{
    int rc;

    if ((rc = store_deltas_mark(&c->d)) < 0)
        return rc;
    c->snap_wake = c->wake;
    c->snap_changed = c->changed.len;
    c->snap_canceled = c->canceled.len;
    return 0;
}

static void
snap_restore(struct store_conn *c)
{
    store_deltas_rollback(&c->d);
    c->wake = c->snap_wake;
    c->changed.len = c->snap_changed;
    c->canceled.len = c->snap_canceled;
    if (c->changed.p)
        c->changed.p[c->changed.len] = '\0';
    if (c->canceled.p)
        c->canceled.p[c->canceled.len] = '\0';
}

/* Adds "<node> <kind><ids>" payloads to arr, chunked under the NOTIFY
 * payload limit. ids is "1,2,3," (may be empty). */
static int
payloads(struct pg_buf *arr, int64_t node, char kind, const char *ids, size_t len)
{
    char head[40], *chunk;
    size_t start = 0;
    int rc = 0;

    while (start < len) {
        size_t end =
            start + JOBQ_PG_NOTIFY_MAX_BYTES < len ? start + JOBQ_PG_NOTIFY_MAX_BYTES : len;
        while (end < len && end > start && ids[end - 1] != ',')
            end--;
        snprintf(head, sizeof(head), "%" PRId64 " %c", node, kind);
        if (asprintf(&chunk, "%s%.*s", head, (int)(end - start - 1), ids + start) < 0)
            return -ENOMEM;
        rc = arr_text(arr, chunk);
        free(chunk);
        if (rc < 0)
            return rc;
        start = end;
    }
    return 0;
}

int
pg_flush(struct store_conn *c)
{
    struct pg_buf q = {0}, s = {0}, u = {0}, n = {0}, p = {0};
    struct params pp = {0};
    char head[40];
    bool any = false;
    int rc = 0;

    for (int i = 0; i < c->d.n; i++) {
        if (c->d.v[i].n == 0)
            continue;
        any = true;
        if ((rc = arr_text(&q, c->d.v[i].queue)) < 0 || (rc = arr_i64(&s, c->d.v[i].state)) < 0 ||
            (rc = arr_i64(&u, c->d.v[i].uid)) < 0 || (rc = arr_i64(&n, c->d.v[i].n)) < 0)
            goto out;
    }
    /* The sender's lease id first: a node ignores its own. */
    if (c->wake) {
        snprintf(head, sizeof(head), "%" PRId64 " W", c->node_id);
        if ((rc = arr_text(&p, head)) < 0)
            goto out;
        any = true;
    }
    if (c->changed.len > 0) {
        if ((rc = payloads(&p, c->node_id, 'J', c->changed.p, c->changed.len)) < 0)
            goto out;
        any = true;
    }
    if (c->canceled.len > 0) {
        if ((rc = payloads(&p, c->node_id, 'C', c->canceled.p, c->canceled.len)) < 0)
            goto out;
        any = true;
    }
    if (!any)
        goto out;
    p_str(&pp, arr_end(&q));
    p_str(&pp, arr_end(&s));
    p_str(&pp, arr_end(&u));
    p_str(&pp, arr_end(&n));
    p_str(&pp, arr_end(&p));
    for (int i = 0; i < 5; i++)
        if (pp.v[i] == NULL) {
            rc = -ENOMEM;
            goto out;
        }
    rc = run_done(c, S_FLUSH, pp.v, NULL);
out:
    buf_free(&q);
    buf_free(&s);
    buf_free(&u);
    buf_free(&n);
    buf_free(&p);
    if (rc == 0)
        txn_forget(c);
    return rc;
}

/* ---- open, close, transactions ----------------------------------------- */

static void
conn_close(struct store_conn *c)
{
    if (c == NULL)
        return;
    if (!c->node_borrowed)
        pg_node_stop(c->node);
    store_deltas_free(&c->d);
    buf_free(&c->changed);
    buf_free(&c->canceled);
    if (c->pg != NULL)
        PQfinish(c->pg);
    free(c->url);
    free(c->node_name);
    free(c);
}

/* Session settings, again after a reconnect. */
static int
conn_setup(struct store_conn *c, const struct store_opts *opts, char *why, size_t whylen)
{
    char sql[160];
    int rc;

    memset(c->prepared, 0, sizeof(c->prepared));
    /* Times are Unix ms computed by jobqd; the session's zone and style
     * must not matter to anything it reads. */
    snprintf(sql, sizeof(sql),
             "SET lock_timeout = %d; SET TIME ZONE 'UTC'; SET synchronous_commit = %s",
             JOBQ_PG_LOCK_TIMEOUT_MS, opts == NULL || opts->sync == STORE_SYNC_FULL ? "on" : "off");
    if ((rc = pg_exec(c->pg, sql, why, whylen)) < 0)
        return rc;
    if (c->role == STORE_READER &&
        (rc = pg_exec(c->pg, "SET default_transaction_read_only = on", why, whylen)) < 0)
        return rc;
    return 0;
}

static int
node_name_default(const struct store_opts *opts, char **out)
{
    char host[256] = "localhost";

    if (opts->node_name != NULL)
        return (*out = strdup(opts->node_name)) != NULL ? 0 : -ENOMEM;
    gethostname(host, sizeof(host) - 1);
    return (*out = strdup(host)) != NULL ? 0 : -ENOMEM;
}

int
pg_conn_open(const struct store_opts *opts, enum store_role role, struct store_conn **out,
             char *why, size_t whylen)
{
    struct store_conn *c;
    int rc;

    if (opts->path == NULL || opts->path[0] == '\0') {
        snprintf(why, whylen, "no PostgreSQL URL");
        return -EINVAL;
    }
    if ((rc = pg_lib_load(why, whylen)) < 0)
        return rc;
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return -ENOMEM;
    c->role = role;
    c->fault = opts->fault;
    c->fault_arg = opts->fault_arg;
    if ((c->url = strdup(opts->path)) == NULL ||
        (rc = node_name_default(opts, &c->node_name)) < 0) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = pg_connect(opts->path, "jobqd", &c->pg, why, whylen)) < 0 ||
        (rc = conn_setup(c, opts, why, whylen)) < 0)
        goto out;
    *out = c;
    c = NULL;
out:
    conn_close(c);
    return rc;
}

static int
pg_open(const struct store_opts *opts, enum store_role role, struct store_conn **out, char *why,
        size_t whylen)
{
    struct store_conn *c = NULL;
    int rc;

    if ((rc = pg_conn_open(opts, role, &c, why, whylen)) < 0)
        return rc;
    if (role == STORE_WRITER) {
        if ((rc = pg_migrate(c->pg, pg_schema_version(), why, whylen)) < 0 ||
            (rc = pg_node_start(opts, &c->node, why, whylen)) < 0)
            goto out;
        c->node_id = pg_node_id(c->node);
    }
    *out = c;
    c = NULL;
out:
    conn_close(c);
    return rc;
}

/* Claims run on a connection of their own, under the writer's node:
 * PostgreSQL takes concurrent writers, and a claim and the completions of
 * the jobs it started then run side by side (SKIP LOCKED keeps them out
 * of each other's rows; a claim waits on no row lock). */
static int
pg_open_claims(struct store_conn *w, const struct store_opts *opts, struct store_conn **out,
               char *why, size_t whylen)
{
    struct store_conn *c = NULL;
    int rc;

    if ((rc = pg_conn_open(opts, STORE_WRITER, &c, why, whylen)) < 0)
        return rc;
    c->node = w->node;
    c->node_borrowed = true;
    c->node_id = w->node_id;
    *out = c;
    return 0;
}

/* A connection the server or the network dropped is opened again at the
 * next transaction; what was in flight failed with a storage error. */
static int
conn_revive(struct store_conn *c)
{
    char why[128];

    if (PQstatus(c->pg) == CONNECTION_OK)
        return 0;
    PQreset(c->pg);
    if (PQstatus(c->pg) != CONNECTION_OK)
        return -EIO;
    return conn_setup(c, NULL, why, sizeof(why));
}

static int
simple(struct store_conn *c, const char *sql)
{
    PGresult *r = PQexec(c->pg, sql);

    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return fail(c, r);
    PQclear(r);
    return 0;
}

static bool
pg_sync_failed(struct store_conn *c)
{
    /* Not a sync: the lease. After it is lost the node must stop, as
     * after a failed fsync, and for the same reason: what it believes it
     * owns, others now own. */
    return c->node != NULL && pg_node_lost(c->node);
}

static int
pg_txn(struct store_conn *c, enum store_txn op)
{
    PGresult *r;
    int rc;

    switch (op) {
    case STORE_BEGIN:
        txn_forget(c);
        if (c->node != NULL && pg_node_lost(c->node))
            return -EIO;
        if ((rc = conn_revive(c)) < 0)
            return rc;
        return simple(c, "BEGIN");
    case STORE_COMMIT:
        if (c->fault != NULL && (rc = c->fault(c->fault_arg, STORE_FAULT_COMMIT)) < 0) {
            pg_txn(c, STORE_ROLLBACK);
            return rc;
        }
        if ((rc = pg_flush(c)) < 0) {
            pg_txn(c, STORE_ROLLBACK);
            return rc;
        }
        r = PQexec(c->pg, "COMMIT");
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            return fail(c, r);
        /* COMMIT of a transaction that had failed answers ROLLBACK. */
        rc = strcmp(PQcmdStatus(r), "COMMIT") == 0 ? 0 : -EIO;
        PQclear(r);
        return rc;
    case STORE_ROLLBACK:
        txn_forget(c);
        if (PQtransactionStatus(c->pg) == PQTRANS_IDLE)
            return 0;
        return simple(c, "ROLLBACK");
    case STORE_SAVEPOINT:
        return snap_take(c);
    case STORE_RELEASE:
        return 0;
    case STORE_ROLLBACK_TO:
        /* Refusals come before writes; an SQL error is a storage error
         * and never gets here with the transaction still usable. */
        if (PQtransactionStatus(c->pg) != PQTRANS_INTRANS)
            return -EIO;
        snap_restore(c);
        return 0;
    }
    return -EINVAL;
}

/* ---- jobs as JSON and rows --------------------------------------------- */

/* Returns owned *out (free): ["a","b"]. */
static int
strv_json(char *const *v, char **out)
{
    cJSON *a = cJSON_CreateArray();

    *out = NULL;
    if (a == NULL)
        return -ENOMEM;
    for (size_t i = 0; v[i] != NULL; i++) {
        cJSON *s = cJSON_CreateString(v[i]);
        if (s == NULL || !cJSON_AddItemToArray(a, s)) {
            cJSON_Delete(s);
            cJSON_Delete(a);
            return -ENOMEM;
        }
    }
    *out = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return *out != NULL ? 0 : -ENOMEM;
}

/* Returns owned *out, a NULL-terminated array. Anything but an array of
 * strings is corruption: -EIO. */
static int
json_strv(const char *s, char ***out)
{
    cJSON *a = cJSON_Parse(s), *e;
    char **v = NULL;
    size_t n = 0;
    int rc = 0;

    if (a == NULL || !cJSON_IsArray(a)) {
        rc = -EIO;
        goto out;
    }
    if ((v = calloc((size_t)cJSON_GetArraySize(a) + 1, sizeof(*v))) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    cJSON_ArrayForEach (e, a) {
        if (!cJSON_IsString(e)) {
            rc = -EIO;
            goto out;
        }
        if ((v[n++] = strdup(e->valuestring)) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
    }
    *out = v;
    v = NULL;
out:
    if (v != NULL) {
        for (size_t i = 0; i < n; i++)
            free(v[i]);
        free(v);
    }
    cJSON_Delete(a);
    return rc;
}

/* Reads row i of JOB_COLS. Returns owned *out (job_free). */
static int
row_job(const PGresult *r, int i, struct job **out)
{
    struct job *j;
    int rc;

    if ((j = calloc(1, sizeof(*j))) == NULL)
        return -ENOMEM;
    j->id = v64(r, i, 0);
    if ((rc = vdup(r, i, 1, &j->spec.queue)) < 0 || (rc = vdup(r, i, 2, &j->spec.name)) < 0)
        goto out;
    j->spec.priority = v32(r, i, 3);
    if ((rc = json_strv(PQgetvalue(r, i, 4), &j->spec.command)) < 0)
        goto out;
    if (!PQgetisnull(r, i, 5) && (rc = json_strv(PQgetvalue(r, i, 5), &j->spec.env)) < 0)
        goto out;
    if ((rc = vdup(r, i, 6, &j->spec.cwd)) < 0 || (rc = vdup(r, i, 7, &j->spec.unique_key)) < 0)
        goto out;
    j->spec.max_attempts = v32(r, i, 8);
    j->spec.backoff_base_ms = v64(r, i, 9);
    j->spec.backoff_max_ms = v64(r, i, 10);
    j->spec.timeout_ms = v64(r, i, 11);
    j->spec.deadline = v64(r, i, 12);
    j->spec.run_at = v64(r, i, 13);
    j->spec.uid = (uid_t)v64(r, i, 14);
    j->spec.gid = (gid_t)v64(r, i, 15);
    j->state = (enum job_state)v32(r, i, 16);
    j->attempt = v32(r, i, 17);
    j->interrupted = v32(r, i, 18);
    j->created_at = v64(r, i, 19);
    j->started_at = v64(r, i, 20);
    j->finished_at = v64(r, i, 21);
    j->updated_at = v64(r, i, 22);
    j->outcome = (enum job_outcome)v32(r, i, 23);
    j->exit_code = v32(r, i, 24);
    j->signal = v32(r, i, 25);
    if ((rc = vdup(r, i, 26, &j->error)) < 0)
        goto out;
    j->log_truncated = vbool(r, i, 27);
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

/* ---- submit ------------------------------------------------------------ */

static const char *
queue_of(const struct job_spec *s)
{
    return s->queue ? s->queue : "default";
}

static int
submit_one(struct store_conn *c, const struct job_spec *sp, int64_t now, int64_t *id, bool *existed)
{
    int64_t run_at = sp->run_at > 0 ? sp->run_at : now;
    int state = run_at > now ? JOB_SCHEDULED : JOB_QUEUED;
    char *cmd = NULL, *env = NULL;
    struct params p = {0};
    PGresult *r = NULL;
    int rc;

    *existed = false;
    if ((rc = strv_json(sp->command, &cmd)) < 0 ||
        (sp->env != NULL && (rc = strv_json(sp->env, &env)) < 0))
        goto out;
    p_str(&p, queue_of(sp));
    p_str(&p, sp->name);
    p_i64(&p, sp->priority);
    p_str(&p, cmd);
    p_str(&p, env);
    p_str(&p, sp->cwd);
    p_str(&p, sp->unique_key);
    p_i64(&p, sp->max_attempts);
    p_i64(&p, sp->backoff_base_ms);
    p_i64(&p, sp->backoff_max_ms);
    p_i64(&p, sp->timeout_ms);
    p_i64(&p, sp->deadline);
    p_i64(&p, run_at);
    p_i64(&p, sp->uid);
    p_i64(&p, sp->gid);
    p_i64(&p, state);
    p_i64(&p, now);
    /* A key in use (here, or committed meanwhile by another node, whose
     * commit the insert waited for): that job is the answer. Twice, in
     * case the holder was purged in between. */
    for (int tries = 0; tries < 2; tries++) {
        struct params f = {0};
        if ((rc = run(c, S_INSERT, p.v, &r)) < 0)
            goto out;
        if (PQntuples(r) == 1) {
            *id = v64(r, 0, 0);
            c->wake = true;
            rc = count(c, queue_of(sp), sp->uid, state, 1);
            goto out;
        }
        PQclear(r);
        r = NULL;
        p_i64(&f, sp->uid);
        p_str(&f, sp->unique_key);
        if ((rc = run(c, S_UNIQUE_FIND, f.v, &r)) < 0)
            goto out;
        if (PQntuples(r) == 1) {
            *id = v64(r, 0, 0);
            *existed = true;
            goto out;
        }
        PQclear(r);
        r = NULL;
    }
    rc = -EIO;
out:
    PQclear(r);
    free(cmd);
    free(env);
    return rc;
}

static int
json_add_str(cJSON *o, const char *k, const char *v)
{
    return (v == NULL ? cJSON_AddNullToObject(o, k) : cJSON_AddStringToObject(o, k, v)) != NULL
               ? 0
               : -ENOMEM;
}

static int
json_add_num(cJSON *o, const char *k, int64_t v)
{
    /* Doubles hold every integer of these fields exactly (< 2^53). */
    return cJSON_AddNumberToObject(o, k, (double)v) != NULL ? 0 : -ENOMEM;
}

/* One job of a batch as a JSON object of jsonb_to_recordset. */
static int
job_json(cJSON *arr, const struct job_spec *sp, int64_t id, int64_t now)
{
    int64_t run_at = sp->run_at > 0 ? sp->run_at : now;
    cJSON *o = cJSON_CreateObject(), *cmd = NULL, *env = NULL;
    int rc = -ENOMEM;

    if (o == NULL || !cJSON_AddItemToArray(arr, o)) {
        cJSON_Delete(o);
        return -ENOMEM;
    }
    if ((cmd = cJSON_CreateArray()) == NULL)
        return -ENOMEM;
    for (size_t i = 0; sp->command[i] != NULL; i++)
        cJSON_AddItemToArray(cmd, cJSON_CreateString(sp->command[i]));
    if (cJSON_GetArraySize(cmd) == 0 || !cJSON_AddItemToObject(o, "command", cmd)) {
        cJSON_Delete(cmd);
        return -ENOMEM;
    }
    if (sp->env != NULL) {
        if ((env = cJSON_CreateArray()) == NULL)
            return -ENOMEM;
        for (size_t i = 0; sp->env[i] != NULL; i++)
            cJSON_AddItemToArray(env, cJSON_CreateString(sp->env[i]));
        if (!cJSON_AddItemToObject(o, "env", env)) {
            cJSON_Delete(env);
            return -ENOMEM;
        }
    }
    if (json_add_num(o, "id", id) < 0 || json_add_str(o, "queue", queue_of(sp)) < 0 ||
        json_add_str(o, "name", sp->name) < 0 || json_add_num(o, "priority", sp->priority) < 0 ||
        json_add_str(o, "cwd", sp->cwd) < 0 ||
        json_add_num(o, "max_attempts", sp->max_attempts) < 0 ||
        json_add_num(o, "backoff_base_ms", sp->backoff_base_ms) < 0 ||
        json_add_num(o, "backoff_max_ms", sp->backoff_max_ms) < 0 ||
        json_add_num(o, "timeout_ms", sp->timeout_ms) < 0 ||
        json_add_num(o, "deadline", sp->deadline) < 0 || json_add_num(o, "run_at", run_at) < 0 ||
        json_add_num(o, "uid", sp->uid) < 0 || json_add_num(o, "gid", sp->gid) < 0 ||
        json_add_num(o, "state", run_at > now ? JOB_SCHEDULED : JOB_QUEUED) < 0)
        return rc;
    return 0;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* n (>= 2) specs without unique keys in two round trips: their ids, then
 * one INSERT of a JSON document. */
static int
submit_many(struct store_conn *c, const struct job_spec *specs, size_t n, int64_t now, int64_t *ids)
{
    struct params p = {0};
    cJSON *arr = NULL;
    char *doc = NULL;
    PGresult *r = NULL;
    int rc;

    p_i64(&p, (int64_t)n);
    if ((rc = run(c, S_IDS, p.v, &r)) < 0)
        return rc;
    if ((size_t)PQntuples(r) != n) {
        rc = -EIO;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = v64(r, (int)i, 0);
    /* A sequence only grows: ascending ids follow the specs' order. */
    qsort(ids, n, sizeof(*ids), cmp_i64);
    if ((arr = cJSON_CreateArray()) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if ((rc = job_json(arr, &specs[i], ids[i], now)) < 0)
            goto out;
    if ((doc = cJSON_PrintUnformatted(arr)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    memset(&p, 0, sizeof(p));
    p_str(&p, doc);
    p_i64(&p, now);
    if ((rc = run_done(c, S_INSERT_BATCH, p.v, NULL)) < 0)
        goto out;
    for (size_t i = 0; i < n && rc == 0; i++) {
        int64_t run_at = specs[i].run_at > 0 ? specs[i].run_at : now;
        rc = count(c, queue_of(&specs[i]), specs[i].uid, run_at > now ? JOB_SCHEDULED : JOB_QUEUED,
                   1);
    }
    c->wake = true;
out:
    PQclear(r);
    cJSON_Delete(arr);
    free(doc);
    return rc;
}

static int
pg_submit(struct store_conn *c, const struct job_spec *specs, size_t n, int64_t now, int64_t *ids,
          bool *existed)
{
    size_t i = 0, k;
    int rc = 0;

    /* Runs of specs without a key go in one statement each; keyed ones
     * one by one (a key may repeat within the batch). */
    while (i < n && rc == 0) {
        for (k = 0; i + k < n && specs[i + k].unique_key == NULL; k++)
            existed[i + k] = false;
        if (k >= 2) {
            rc = submit_many(c, &specs[i], k, now, &ids[i]);
            i += k;
        } else {
            rc = submit_one(c, &specs[i], now, &ids[i], &existed[i]);
            i++;
        }
    }
    return rc;
}

/* ---- claim ------------------------------------------------------------- */

struct cand {
    int64_t id, run_at, deadline;
    int32_t priority;
    uid_t uid;
    char *queue;
    char tid[32]; /* the locked row's ctid, "(block,offset)" */
};

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

static int
promote(struct store_conn *c, int64_t now)
{
    struct params p = {0};
    PGresult *r;
    int rc;

    p_i64(&p, now);
    p_i64(&p, JOBQ_STORE_PROMOTE_MAX);
    if ((rc = run(c, S_PROMOTE, p.v, &r)) < 0)
        return rc;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++)
        rc = count_move(c, PQgetvalue(r, i, 0), (uid_t)v64(r, i, 1), v32(r, i, 2), JOB_QUEUED);
    PQclear(r);
    return rc;
}

/* The queues to claim from and how many each may start: *qs and *takes
 * are array literals. */
static int
active(struct store_conn *c, int max, struct pg_buf *qs, struct pg_buf *takes, int *nq)
{
    struct pg_buf lim = {0};
    PGresult *r = NULL, *cr = NULL;
    struct params p = {0};
    int nlim = 0, rc;

    *nq = 0;
    if ((rc = run(c, S_ACTIVE, NULL, &r)) < 0)
        return rc;
    for (int i = 0; i < PQntuples(r); i++)
        if (v32(r, i, 1) > 0 && (rc = arr_text(&lim, PQgetvalue(r, i, 0))) == 0)
            nlim++;
    if (rc < 0)
        goto out;
    /* Limited queues: lock each (in name order: S_ACTIVE's), then count
     * what runs of it on every node, in a statement that starts after the
     * locks are held and so sees every claim committed before. */
    if (nlim > 0) {
        p_str(&p, arr_end(&lim));
        if ((rc = run_done(c, S_QUEUE_LOCK, p.v, NULL)) < 0 ||
            (rc = run(c, S_RUNNING_COUNT, p.v, &cr)) < 0)
            goto out;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *q = PQgetvalue(r, i, 0);
        int64_t limit = v32(r, i, 1), take = max;
        if (limit > 0) {
            int64_t running = 0;
            for (int k = 0; k < PQntuples(cr); k++)
                if (strcmp(PQgetvalue(cr, k, 0), q) == 0)
                    running = v64(cr, k, 1);
            if (limit - running < take)
                take = limit - running;
        }
        if (take <= 0)
            continue;
        if ((rc = arr_text(qs, q)) < 0 || (rc = arr_i64(takes, take)) < 0)
            goto out;
        ++*nq;
    }
out:
    PQclear(r);
    PQclear(cr);
    buf_free(&lim);
    return rc;
}

static void
cands_free(struct cand *v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i].queue);
    free(v);
}

static int
candidates(struct store_conn *c, struct pg_buf *qs, struct pg_buf *takes, struct cand **out, int *n)
{
    struct params p = {0};
    struct cand *v = NULL;
    PGresult *r;
    int cnt, rc;

    p_str(&p, arr_end(qs));
    p_str(&p, arr_end(takes));
    if ((rc = run(c, S_CANDIDATES, p.v, &r)) < 0)
        return rc;
    cnt = PQntuples(r);
    if ((v = calloc((size_t)cnt + 1, sizeof(*v))) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < cnt; i++) {
        v[i].id = v64(r, i, 0);
        v[i].priority = v32(r, i, 1);
        v[i].run_at = v64(r, i, 2);
        v[i].deadline = v64(r, i, 3);
        v[i].uid = (uid_t)v64(r, i, 4);
        snprintf(v[i].tid, sizeof(v[i].tid), "%s", PQgetvalue(r, i, 6));
        if ((v[i].queue = strdup(PQgetvalue(r, i, 5))) == NULL) {
            cands_free(v, i);
            v = NULL;
            rc = -ENOMEM;
            goto out;
        }
    }
    qsort(v, (size_t)cnt, sizeof(*v), cand_cmp);
    *out = v;
    *n = cnt;
out:
    PQclear(r);
    return rc;
}

/* A row of S_START's result by its job's id. */
struct row_id {
    int64_t id;
    int row;
};

static int
row_id_cmp(const void *a, const void *b)
{
    const struct row_id *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

static int
claim(struct store_conn *c, int64_t now, int max, const char *boot_id, struct job **jobs, int *n,
      int64_t *expired, int *nexpired)
{
    struct pg_buf qs = {0}, takes = {0}, exp = {0}, tids = {0};
    struct params p = {0};
    struct cand *cand = NULL;
    struct row_id *rows_by_id = NULL;
    PGresult *r = NULL;
    int ncand = 0, nq = 0, nstart = 0, nexp = 0, got = 0, rc;
    int64_t rows, version;

    *n = 0;
    if (nexpired != NULL)
        *nexpired = 0;
    if (max <= 0)
        return 0;
    if (max > JOBQ_STORE_CLAIM_MAX)
        max = JOBQ_STORE_CLAIM_MAX;
    if (c->node != NULL) {
        p_i64(&p, c->node_id);
        if ((rc = run(c, S_LEASE_CHECK, p.v, &r)) < 0)
            return rc;
        rows = PQntuples(r);
        version = rows == 1 ? v64(r, 0, 0) : 0;
        PQclear(r);
        r = NULL;
        if (rows != 1 || version > pg_schema_version()) {
            /* Taken over by another node, or a newer jobqd migrated the
             * schema (a restart then refuses it, naming both versions):
             * nothing may start here now. */
            pg_node_set_lost(c->node);
            return -EIO;
        }
    }
    if ((rc = promote(c, now)) < 0 || (rc = active(c, max, &qs, &takes, &nq)) < 0 || nq == 0)
        goto out;
    if ((rc = candidates(c, &qs, &takes, &cand, &ncand)) < 0)
        goto out;
    for (int i = 0; i < ncand && nstart < max; i++) {
        if (cand[i].deadline > 0 && cand[i].deadline <= now) {
            if (expired != NULL && *nexpired + nexp >= JOBQ_STORE_CLAIM_MAX)
                continue; /* no room to report it: the next claim expires it */
            if ((rc = arr_i64(&exp, cand[i].id)) < 0 ||
                (rc = count_move(c, cand[i].queue, cand[i].uid, JOB_QUEUED, JOB_FAILED)) < 0 ||
                (rc = note_id(&c->changed, cand[i].id)) < 0)
                goto out;
            if (expired != NULL)
                expired[*nexpired + nexp] = cand[i].id;
            nexp++;
            continue;
        }
        if ((rc = arr_text(&tids, cand[i].tid)) < 0)
            goto out;
        nstart++;
    }
    if (nexp > 0) {
        memset(&p, 0, sizeof(p));
        p_str(&p, arr_end(&exp));
        p_i64(&p, now);
        if ((rc = run_done(c, S_EXPIRE, p.v, NULL)) < 0)
            goto out;
        if (nexpired != NULL)
            *nexpired += nexp;
    }
    if (nstart == 0)
        goto out;
    if (arr_end(&tids) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    memset(&p, 0, sizeof(p));
    p_str(&p, tids.p);
    p_i64(&p, now);
    p_str(&p, boot_id ? boot_id : "");
    if (c->node != NULL)
        p_i64(&p, c->node_id);
    else
        p_str(&p, NULL);
    if ((rc = run(c, S_START, p.v, &r)) < 0)
        goto out;
    if (PQntuples(r) != nstart) {
        rc = -EIO; /* locked rows that are not ready: cannot happen */
        goto out;
    }
    /* RETURNING has no order: put the jobs back in dispatch order, each
     * row found by id among the rows sorted once (parsing every row's id
     * for every candidate was most of this thread's time). */
    if ((rows_by_id = calloc((size_t)nstart, sizeof(*rows_by_id))) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (int row = 0; row < nstart; row++)
        rows_by_id[row] = (struct row_id){.id = v64(r, row, 0), .row = row};
    qsort(rows_by_id, (size_t)nstart, sizeof(*rows_by_id), row_id_cmp);
    for (int i = 0; i < ncand && got < nstart; i++) {
        struct row_id key = {.id = cand[i].id}, *hit;
        hit = bsearch(&key, rows_by_id, (size_t)nstart, sizeof(*rows_by_id), row_id_cmp);
        if (hit == NULL)
            continue; /* expired, not started */
        if ((rc = row_job(r, hit->row, &jobs[got])) < 0)
            goto out;
        got++;
    }
    for (int i = 0; i < got; i++)
        if ((rc = count_move(c, jobs[i]->spec.queue, jobs[i]->spec.uid, JOB_QUEUED, JOB_RUNNING)) <
            0)
            goto out;
    *n = got;
    got = 0;
out:
    for (int i = 0; i < got; i++)
        job_free(jobs[i]);
    PQclear(r);
    free(rows_by_id);
    cands_free(cand, ncand);
    buf_free(&qs);
    buf_free(&takes);
    buf_free(&exp);
    buf_free(&tids);
    return rc;
}

static int
pg_set_pgid(struct store_conn *c, int64_t id, int32_t attempt, int32_t pgid)
{
    struct params p = {0};
    int64_t rows = 0;
    int rc;

    p_i64(&p, id);
    p_i64(&p, attempt);
    p_i64(&p, pgid);
    if ((rc = run_done(c, S_SET_PGID, p.v, &rows)) < 0)
        return rc;
    return rows == 0 ? -ESTALE : 0;
}

/* ---- complete, cancel, retry ------------------------------------------- */

struct brief {
    int64_t id;
    int state;
    int32_t attempt, interrupted, max_attempts, limit;
    uid_t uid;
    int64_t deadline, backoff_base_ms, backoff_max_ms, run_at;
    char queue[JOBQ_NAME_MAX_BYTES + 1];
    char tid[32]; /* the locked row's ctid: S_JOB_FINISH's key */
    bool open;    /* it has an open attempt (run_started) */
};

static void
brief_read(const PGresult *r, int i, struct brief *b)
{
    b->id = v64(r, i, 0);
    b->state = v32(r, i, 1);
    b->attempt = v32(r, i, 2);
    b->interrupted = v32(r, i, 3);
    b->uid = (uid_t)v64(r, i, 4);
    b->deadline = v64(r, i, 5);
    b->backoff_base_ms = v64(r, i, 6);
    b->backoff_max_ms = v64(r, i, 7);
    b->max_attempts = v32(r, i, 8);
    b->run_at = v64(r, i, 9);
    snprintf(b->queue, sizeof(b->queue), "%s", PQgetvalue(r, i, 10));
    b->limit = v32(r, i, 11);
    snprintf(b->tid, sizeof(b->tid), "%s", PQgetvalue(r, i, 12));
    b->open = vbool(r, i, 13);
}

/* Locks the jobs ids[0..n) and reads their briefs, by id. Returns owned
 * *out of *nb (free). */
static int
briefs(struct store_conn *c, const int64_t *ids, size_t n, struct brief **out, int *nb)
{
    struct pg_buf a = {0};
    struct params p = {0};
    struct brief *b = NULL;
    PGresult *r = NULL;
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++)
        rc = arr_i64(&a, ids[i]);
    if (rc < 0)
        goto out;
    p_str(&p, arr_end(&a));
    if ((rc = run(c, S_BRIEFS, p.v, &r)) < 0)
        goto out;
    if ((b = calloc((size_t)PQntuples(r) + 1, sizeof(*b))) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < PQntuples(r); i++)
        brief_read(r, i, &b[i]);
    *nb = PQntuples(r);
    *out = b;
    b = NULL;
out:
    PQclear(r);
    buf_free(&a);
    free(b);
    return rc;
}

static struct brief *
brief_find(struct brief *b, int n, int64_t id)
{
    for (int i = 0; i < n; i++)
        if (b[i].id == id)
            return &b[i];
    return NULL;
}

static int
brief_one(struct store_conn *c, int64_t id, struct brief *out)
{
    struct brief *b = NULL;
    int n = 0, rc;

    if ((rc = briefs(c, &id, 1, &b, &n)) < 0)
        return rc;
    if (n == 1)
        *out = b[0];
    free(b);
    return n == 1 ? 0 : -ENOENT;
}

/* The arrays of a set-based end of attempts (S_ATTEMPT_FINISH) and of the
 * jobs' new values (S_JOB_FINISH). */
struct finish_set {
    struct pg_buf a_tid, a_att, a_at, a_out, a_exit, a_sig, a_err, a_log, a_trunc;
    struct pg_buf j_tid, j_state, j_run, j_fin, j_out, j_exit, j_sig, j_err, j_intr, j_lt;
    int n;
};

static void
finish_set_free(struct finish_set *f)
{
    struct pg_buf *all[] = {&f->a_tid,   &f->a_att, &f->a_at,   &f->a_out,   &f->a_exit,
                            &f->a_sig,   &f->a_err, &f->a_log,  &f->a_trunc, &f->j_tid,
                            &f->j_state, &f->j_run, &f->j_fin,  &f->j_out,   &f->j_exit,
                            &f->j_sig,   &f->j_err, &f->j_intr, &f->j_lt};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        buf_free(all[i]);
}

/* One attempt's end and its job's new values (the job by its row's ctid,
 * locked by briefs()). */
static int
finish_add(struct finish_set *f, const char *tid, int32_t attempt, int64_t at, int outcome,
           int32_t exit_code, int32_t sig, const char *error, int64_t log_bytes, bool trunc,
           int state, int64_t run_at, int64_t fin, int32_t intr, int lt, const char *job_error)
{
    int rc;

    if ((rc = arr_text(&f->a_tid, tid)) < 0 || (rc = arr_i64(&f->a_att, attempt)) < 0 ||
        (rc = arr_i64(&f->a_at, at)) < 0 || (rc = arr_i64(&f->a_out, outcome)) < 0 ||
        (rc = arr_i64(&f->a_exit, exit_code)) < 0 || (rc = arr_i64(&f->a_sig, sig)) < 0 ||
        (rc = arr_text(&f->a_err, error)) < 0 || (rc = arr_i64(&f->a_log, log_bytes)) < 0 ||
        (rc = arr_bool(&f->a_trunc, trunc)) < 0 || (rc = arr_text(&f->j_tid, tid)) < 0 ||
        (rc = arr_i64(&f->j_state, state)) < 0 || (rc = arr_i64(&f->j_run, run_at)) < 0 ||
        (rc = arr_i64(&f->j_fin, fin)) < 0 || (rc = arr_i64(&f->j_out, outcome)) < 0 ||
        (rc = arr_i64(&f->j_exit, exit_code)) < 0 || (rc = arr_i64(&f->j_sig, sig)) < 0 ||
        (rc = arr_text(&f->j_err, job_error)) < 0 || (rc = arr_i64(&f->j_intr, intr)) < 0 ||
        (rc = arr_i64(&f->j_lt, lt)) < 0)
        return rc;
    f->n++;
    return 0;
}

static int
finish_run(struct store_conn *c, struct finish_set *f, int64_t now)
{
    struct params p = {0};
    int rc;

    if (f->n == 0)
        return 0;
    p_str(&p, arr_end(&f->a_tid));
    p_str(&p, arr_end(&f->a_att));
    p_str(&p, arr_end(&f->a_at));
    p_str(&p, arr_end(&f->a_out));
    p_str(&p, arr_end(&f->a_exit));
    p_str(&p, arr_end(&f->a_sig));
    p_str(&p, arr_end(&f->a_err));
    p_str(&p, arr_end(&f->a_log));
    p_str(&p, arr_end(&f->a_trunc));
    for (int i = 0; i < p.n; i++)
        if (p.v[i] == NULL)
            return -ENOMEM;
    if ((rc = run_done(c, S_ATTEMPT_FINISH, p.v, NULL)) < 0)
        return rc;
    memset(&p, 0, sizeof(p));
    p_str(&p, arr_end(&f->j_tid));
    p_str(&p, arr_end(&f->j_state));
    p_str(&p, arr_end(&f->j_run));
    p_str(&p, arr_end(&f->j_fin));
    p_str(&p, arr_end(&f->j_out));
    p_str(&p, arr_end(&f->j_exit));
    p_str(&p, arr_end(&f->j_sig));
    p_str(&p, arr_end(&f->j_err));
    p_str(&p, arr_end(&f->j_intr));
    p_str(&p, arr_end(&f->j_lt));
    for (int i = 0; i < p.n; i++)
        if (p.v[i] == NULL)
            return -ENOMEM;
    p_i64(&p, now);
    return run_done(c, S_JOB_FINISH, p.v, NULL);
}

static int
pg_complete(struct store_conn *c, const struct store_completion *done, size_t n, int64_t now,
            int *rcs)
{
    struct finish_set f = {0};
    struct brief *b = NULL;
    int64_t *ids = NULL;
    int nb = 0, rc = 0;

    if ((ids = calloc(n + 1, sizeof(*ids))) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        ids[i] = done[i].id;
    /* Locked in id order: two nodes' batches never wait in a circle. */
    if ((rc = briefs(c, ids, n, &b, &nb)) < 0)
        goto out;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct store_completion *d = &done[i];
        struct brief *j = brief_find(b, nb, d->id);
        int64_t at = d->finished_at > 0 ? d->finished_at : now, run_at = 0, fin = -1;
        int state = d->next;

        rcs[i] = 0;
        if ((unsigned)d->outcome >= OUTCOME_NOUTCOMES || d->outcome == OUTCOME_NONE) {
            rcs[i] = -EINVAL;
            continue;
        }
        switch (d->next) {
        case JOB_SUCCEEDED:
        case JOB_FAILED:
            fin = at;
            break;
        case JOB_RETRYING:
            run_at = d->run_at > 0 ? d->run_at : now;
            fin = 0;
            break;
        case JOB_QUEUED:
            run_at = now;
            fin = 0;
            break;
        default:
            rcs[i] = -EINVAL;
            continue;
        }
        /* The fence: only the job's open attempt may end (not one a
         * take-over already ended, though the job was canceled since). */
        if (j == NULL || j->attempt != d->attempt || !j->open ||
            (j->state != JOB_RUNNING && j->state != JOB_CANCELED) || j->attempt < 0) {
            rcs[i] = -ESTALE;
            continue;
        }
        if (j->state == JOB_CANCELED) {
            state = JOB_CANCELED;
            run_at = 0;
            fin = -1;
        }
        if ((rc = finish_add(&f, j->tid, d->attempt, at, d->outcome, d->exit_code, d->signal,
                             d->error, d->log_bytes, d->log_truncated, state, run_at, fin,
                             d->outcome == OUTCOME_INTERRUPTED, d->log_truncated, d->error)) < 0 ||
            (rc = count_move(c, j->queue, j->uid, j->state, state)) < 0 ||
            (rc = note_id(&c->changed, d->id)) < 0)
            break;
        /* Work for the cluster: a retry, or a slot of a limited queue. */
        if (state == JOB_QUEUED || state == JOB_RETRYING || j->limit > 0)
            c->wake = true;
        /* A second completion of the same attempt in this batch is stale. */
        j->attempt = -1;
    }
    if (rc == 0)
        rc = finish_run(c, &f, now);
out:
    finish_set_free(&f);
    free(b);
    free(ids);
    return rc;
}

static bool
visible(struct store_who who, uid_t owner)
{
    return who.admin || who.uid == owner;
}

static int
pg_cancel(struct store_conn *c, struct store_who who, int64_t id, int64_t now, bool *was_running,
          int32_t *attempt)
{
    struct params p = {0};
    struct brief b;
    int rc;

    if (was_running != NULL)
        *was_running = false;
    if (attempt != NULL)
        *attempt = 0;
    if ((rc = brief_one(c, id, &b)) < 0)
        return rc;
    if (!visible(who, b.uid))
        return -ENOENT;
    if (b.state == JOB_CANCELED)
        return 0;
    if (job_state_terminal(b.state))
        return -EALREADY;
    p_i64(&p, id);
    p_i64(&p, now);
    p_i64(&p, b.state != JOB_RUNNING);
    if ((rc = run_done(c, S_CANCEL, p.v, NULL)) < 0 ||
        (rc = count_move(c, b.queue, b.uid, b.state, JOB_CANCELED)) < 0 ||
        (rc = note_id(&c->changed, id)) < 0)
        return rc;
    if (b.state == JOB_RUNNING) {
        /* The node that runs it stops it; its slot is free already. */
        if ((rc = note_id(&c->canceled, id)) < 0)
            return rc;
        c->wake = c->wake || b.limit > 0;
    }
    if (was_running != NULL)
        *was_running = b.state == JOB_RUNNING;
    if (attempt != NULL)
        *attempt = b.state == JOB_RUNNING ? b.attempt : 0;
    return 0;
}

static int
pg_retry(struct store_conn *c, struct store_who who, int64_t id, int64_t now)
{
    struct params p = {0};
    PGresult *r;
    struct brief b;
    int32_t used, max_attempts;
    int next, open, rc;

    if ((rc = brief_one(c, id, &b)) < 0)
        return rc;
    if (!visible(who, b.uid))
        return -ENOENT;
    if (b.state != JOB_FAILED && b.state != JOB_CANCELED)
        return -EBUSY;
    if (b.deadline > 0 && b.deadline <= now)
        return -EBUSY;
    p_i64(&p, id);
    if ((rc = run(c, S_OPEN_ATTEMPT, p.v, &r)) < 0)
        return rc;
    open = PQntuples(r);
    PQclear(r);
    if (open > 0)
        return -EBUSY; /* its process may still live */
    used = b.attempt - b.interrupted;
    max_attempts = used >= b.max_attempts ? used + 1 : b.max_attempts;
    if (max_attempts > JOBQ_ATTEMPTS_MAX)
        return -EBUSY;
    next = b.run_at > now ? JOB_SCHEDULED : JOB_QUEUED;
    memset(&p, 0, sizeof(p));
    p_i64(&p, id);
    p_i64(&p, now);
    p_i64(&p, next);
    p_i64(&p, b.run_at > now ? b.run_at : now);
    p_i64(&p, max_attempts);
    if ((rc = run_done(c, S_RETRY, p.v, NULL)) < 0 ||
        (rc = count_move(c, b.queue, b.uid, b.state, next)) < 0 ||
        (rc = note_id(&c->changed, id)) < 0)
        return rc;
    c->wake = true;
    return 0;
}

static int
pg_queue_set(struct store_conn *c, const char *queue, int paused, int32_t limit)
{
    struct params p = {0};

    if (queue == NULL || limit < -1)
        return -EINVAL;
    p_str(&p, queue);
    p_str(&p, paused < 0 ? NULL : paused ? "true" : "false");
    p_i64(&p, limit);
    c->wake = true; /* a resume or a wider limit frees work everywhere */
    return run_done(c, S_QUEUE_SET, p.v, NULL);
}

#define TERMINAL_MASK ((1u << JOB_SUCCEEDED) | (1u << JOB_FAILED) | (1u << JOB_CANCELED))

static int
pg_purge(struct store_conn *c, struct store_who who, int64_t before, unsigned states, int max,
         int64_t *ids, int *n)
{
    struct params p = {0};
    PGresult *r;
    int rc;

    *n = 0;
    states = states ? states & TERMINAL_MASK : TERMINAL_MASK;
    if (states == 0 || max <= 0)
        return 0;
    p_i64(&p, before);
    p_i64(&p, states);
    p_i64(&p, max);
    if (who.admin)
        p_str(&p, NULL);
    else
        p_i64(&p, who.uid);
    if ((rc = run(c, S_PURGE, p.v, &r)) < 0)
        return rc;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        if (*n < max)
            ids[(*n)++] = v64(r, i, 0);
        rc = count(c, PQgetvalue(r, i, 1), (uid_t)v64(r, i, 2), v32(r, i, 3), -1);
    }
    PQclear(r);
    if (rc < 0)
        *n = 0;
    return rc;
}

/* ---- recovery and take-over -------------------------------------------- */

static int
running_rows(const PGresult *r, struct store_running **out, size_t *n)
{
    struct store_running *v;
    size_t cnt = (size_t)PQntuples(r);

    if ((v = calloc(cnt + 1, sizeof(*v))) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cnt; i++) {
        v[i].id = v64(r, (int)i, 0);
        v[i].attempt = v32(r, (int)i, 1);
        v[i].pgid = v32(r, (int)i, 2);
        snprintf(v[i].boot_id, sizeof(v[i].boot_id), "%s", PQgetvalue(r, (int)i, 3));
        v[i].started_at = v64(r, (int)i, 4);
    }
    *out = v;
    *n = cnt;
    return 0;
}

/* splitmix64, as the SQLite backend's recovery: reproducible jitter. */
static uint64_t
mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

int
pg_interrupt_nodes(struct store_conn *c, const int64_t *ids, int n, int64_t now, uint64_t seed,
                   const struct store_opts *opts, const char *instance, int64_t *retrying,
                   int64_t *failed)
{
    static const char interrupted[] = "jobqd stopped during the attempt";
    struct pg_buf a = {0};
    struct params p = {0};
    struct finish_set f = {0};
    struct store_running *open = NULL;
    struct brief *b = NULL;
    int64_t *jids = NULL, dummy_r = 0, dummy_f = 0;
    size_t nopen = 0;
    PGresult *r = NULL;
    int nb = 0, rc = 0;

    if (retrying == NULL)
        retrying = &dummy_r;
    if (failed == NULL)
        failed = &dummy_f;
    for (int i = 0; i < n && rc == 0; i++)
        rc = arr_i64(&a, ids[i]);
    if (rc < 0 || n == 0)
        goto out;
    p_str(&p, arr_end(&a));
    if ((rc = run(c, S_OPEN_OF_NODES, p.v, &r)) < 0 || (rc = running_rows(r, &open, &nopen)) < 0)
        goto out;
    /* Their processes must be gone before the jobs may run again. */
    if (nopen > 0 && opts != NULL && opts->on_reap != NULL &&
        (rc = opts->on_reap(opts->on_reap_arg, instance ? instance : "", open, nopen)) < 0)
        goto out;
    if (nopen > 0) {
        if ((jids = calloc(nopen, sizeof(*jids))) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < nopen; i++)
            jids[i] = open[i].id;
        if ((rc = briefs(c, jids, nopen, &b, &nb)) < 0)
            goto out;
    }
    for (size_t i = 0; i < nopen && rc == 0; i++) {
        struct brief *j = brief_find(b, nb, open[i].id);
        int state;
        int64_t run_at = 0, fin = -1;
        const char *err = interrupted;
        int32_t intr = 0, used;
        if (j == NULL)
            continue;
        if (j->state != JOB_RUNNING || j->attempt != open[i].attempt) {
            state = j->state; /* canceled while running: stays canceled */
        } else if (j->deadline > 0 && j->deadline <= now) {
            state = JOB_FAILED;
            fin = now;
            err = "jobqd stopped during the attempt and the deadline has passed";
            ++*failed;
        } else {
            used = j->attempt - j->interrupted;
            state = JOB_RETRYING;
            run_at = now + job_backoff_ms(j->backoff_base_ms, j->backoff_max_ms,
                                          used > 0 ? used : 1, mix64(seed ^ (uint64_t)open[i].id));
            fin = 0;
            intr = 1;
            ++*retrying;
        }
        if ((rc = finish_add(&f, j->tid, open[i].attempt, now, OUTCOME_INTERRUPTED, -1, 0,
                             interrupted, 0, false, state, run_at, fin, intr, -1, err)) < 0 ||
            (rc = count_move(c, j->queue, j->uid, j->state, state)) < 0 ||
            (rc = note_id(&c->changed, open[i].id)) < 0)
            break;
    }
    if (rc < 0 || (rc = finish_run(c, &f, now)) < 0)
        goto out;
    if (nopen > 0)
        c->wake = true;
    rc = run_done(c, S_DELETE_NODES, p.v, NULL);
out:
    PQclear(r);
    finish_set_free(&f);
    buf_free(&a);
    free(open);
    free(b);
    free(jids);
    return rc;
}

/* The previous runs of this node's name, locked (a node taking them over
 * at the same moment waits, then finds nothing left). */
static int
previous_runs(struct store_conn *c, int64_t **ids, int *n)
{
    const char *v[2] = {c->node_name, NULL};
    char me[24];
    PGresult *r;
    int64_t *out;
    int rc = 0;

    snprintf(me, sizeof(me), "%" PRId64, c->node_id);
    v[1] = me;
    r = PQexecParams(c->pg,
                     "SELECT id FROM jobq.nodes WHERE name = $1 AND id < $2::bigint ORDER BY id "
                     "FOR UPDATE",
                     2, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return fail(c, r);
    if ((out = calloc((size_t)PQntuples(r) + 1, sizeof(*out))) == NULL)
        rc = -ENOMEM;
    for (int i = 0; out != NULL && i < PQntuples(r); i++)
        out[i] = v64(r, i, 0);
    *n = PQntuples(r);
    *ids = out;
    PQclear(r);
    return rc;
}

static int
pg_recover(struct store_conn *c, int64_t now, uint64_t seed, int64_t *retrying, int64_t *failed)
{
    int64_t *ids = NULL;
    int n = 0, rc;

    *retrying = *failed = 0;
    /* Only this node's own previous runs: the others are alive, or are
     * taken over when their lease expires (store_pg_node.c). The caller
     * has already killed what of them was left running here. */
    if ((rc = previous_runs(c, &ids, &n)) == 0 && n > 0)
        rc = pg_interrupt_nodes(c, ids, n, now, seed, NULL, NULL, retrying, failed);
    free(ids);
    return rc;
}

static int
pg_maintain(struct store_conn *c)
{
    return 0; /* the server checkpoints and vacuums by itself */
}

/* ---- reads ------------------------------------------------------------- */

static int
pg_running(struct store_conn *c, struct store_running **out, size_t *n)
{
    struct params p = {0};
    PGresult *r;
    int rc;

    p_str(&p, c->node_name);
    if ((rc = run(c, S_RUNNING_MINE, p.v, &r)) < 0)
        return rc;
    rc = running_rows(r, out, n);
    PQclear(r);
    return rc;
}

static int
attempts_of(struct store_conn *c, struct job *j)
{
    struct params p = {0};
    struct job_attempt *a;
    PGresult *r;
    int n, rc;

    p_i64(&p, j->id);
    if ((rc = run(c, S_ATTEMPTS, p.v, &r)) < 0)
        return rc;
    n = PQntuples(r);
    if ((a = calloc((size_t)n + 1, sizeof(*a))) == NULL) {
        PQclear(r);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        a[i].attempt = v32(r, i, 0);
        a[i].started_at = v64(r, i, 1);
        a[i].finished_at = v64(r, i, 2);
        a[i].outcome = (enum job_outcome)v32(r, i, 3);
        a[i].exit_code = v32(r, i, 4);
        a[i].signal = v32(r, i, 5);
        if ((rc = vdup(r, i, 6, &a[i].error)) < 0) {
            job_attempts_free(a, i);
            PQclear(r);
            return rc;
        }
        a[i].log_bytes = v64(r, i, 7);
        a[i].log_truncated = vbool(r, i, 8);
        a[i].pgid = v32(r, i, 9);
        snprintf(a[i].boot_id, sizeof(a[i].boot_id), "%s", PQgetvalue(r, i, 10));
    }
    PQclear(r);
    j->attempts = a;
    j->nattempts = n;
    return 0;
}

/* A read outside a transaction on a reader: a dropped connection is
 * opened again first. */
static int
read_ready(struct store_conn *c)
{
    if (PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        return 0; /* inside the writer's transaction */
    return conn_revive(c);
}

static int
pg_get(struct store_conn *c, struct store_who who, int64_t id, struct job **out)
{
    struct params p = {0};
    struct job *j = NULL;
    PGresult *r;
    int rc;

    if ((rc = read_ready(c)) < 0)
        return rc;
    p_i64(&p, id);
    if ((rc = run(c, S_GET, p.v, &r)) < 0)
        return rc;
    if (PQntuples(r) != 1)
        rc = -ENOENT;
    else if ((rc = row_job(r, 0, &j)) == 0 && !visible(who, j->spec.uid))
        rc = -ENOENT;
    PQclear(r);
    /* A job and its attempts are two statements: read them in one
     * snapshot only inside a transaction; outside, a completion between
     * them is seen by the attempts (newer), which is what a reader wants. */
    if (rc == 0 && (rc = attempts_of(c, j)) == 0) {
        *out = j;
        j = NULL;
    }
    job_free(j);
    return rc;
}

static int
pg_list(struct store_conn *c, struct store_who who, const struct store_filter *f, struct job ***out,
        int *n)
{
    struct params p = {0};
    struct job **v = NULL;
    int limit = f->limit > 0 ? f->limit : 100;
    unsigned states = f->states ? f->states : (1u << JOB_NSTATES) - 1;
    PGresult *r = NULL;
    int got = 0, rc;

    if ((rc = read_ready(c)) < 0)
        return rc;
    if (limit > JOBQ_STORE_LIST_MAX)
        limit = JOBQ_STORE_LIST_MAX;
    p_i64(&p, f->before_id > 0 ? f->before_id : INT64_MAX);
    p_str(&p, f->queue);
    if (!who.admin)
        p_i64(&p, who.uid);
    else if (f->by_uid)
        p_i64(&p, f->uid);
    else
        p_str(&p, NULL);
    p_i64(&p, limit);
    p_i64(&p, states);
    if ((rc = run(c, S_LIST, p.v, &r)) < 0)
        return rc;
    if ((v = calloc((size_t)PQntuples(r) + 1, sizeof(*v))) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (; got < PQntuples(r); got++)
        if ((rc = row_job(r, got, &v[got])) < 0)
            goto out;
    *out = v;
    *n = got;
    v = NULL;
    got = 0;
out:
    PQclear(r);
    for (int i = 0; i < got; i++)
        job_free(v[i]);
    free(v);
    return rc;
}

static int
queue_index(struct store_stats *out, const char *name, int *idx)
{
    struct store_queue_stats *q;

    for (int i = 0; i < out->nqueues; i++)
        if (strcmp(out->queues[i].name, name) == 0) {
            *idx = i;
            return 0;
        }
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
pg_stats(struct store_conn *c, struct store_who who, struct store_stats *out)
{
    struct params p = {0};
    PGresult *r = NULL;
    int idx, rc;

    memset(out, 0, sizeof(*out));
    if ((rc = read_ready(c)) < 0)
        return rc;
    if ((rc = run(c, S_QUEUES, NULL, &r)) < 0)
        goto out;
    for (int i = 0; i < PQntuples(r); i++) {
        if ((rc = queue_index(out, PQgetvalue(r, i, 0), &idx)) < 0)
            goto out;
        out->queues[idx].paused = vbool(r, i, 1);
        out->queues[idx].limit = v32(r, i, 2);
    }
    PQclear(r);
    r = NULL;
    if (who.admin)
        p_str(&p, NULL);
    else
        p_i64(&p, who.uid);
    if ((rc = run(c, S_COUNTERS, p.v, &r)) < 0)
        goto out;
    for (int i = 0; i < PQntuples(r); i++) {
        int state = v32(r, i, 1);
        int64_t n = v64(r, i, 2);
        if ((unsigned)state >= JOB_NSTATES) {
            rc = -EIO;
            goto out;
        }
        if ((rc = queue_index(out, PQgetvalue(r, i, 0), &idx)) < 0)
            goto out;
        out->queues[idx].count[state] += n;
        out->count[state] += n;
    }
    PQclear(r);
    r = NULL;
    if ((rc = run(c, S_SIZE, NULL, &r)) < 0)
        goto out;
    out->db_bytes = v64(r, 0, 0);
out:
    PQclear(r);
    if (rc < 0)
        store_stats_free(out);
    return rc;
}

static int
one_int64(struct store_conn *c, enum stmt_id id, int64_t *v)
{
    PGresult *r;
    int rc;

    if ((rc = read_ready(c)) < 0 || (rc = run(c, id, NULL, &r)) < 0)
        return rc;
    *v = PQntuples(r) == 1 ? v64(r, 0, 0) : 0;
    PQclear(r);
    return 0;
}

static int
pg_next_due(struct store_conn *c, int64_t *run_at)
{
    return one_int64(c, S_NEXT_DUE, run_at);
}

static int
pg_pending(struct store_conn *c, int64_t *n)
{
    return one_int64(c, S_PENDING, n);
}

/* Each query returns a row describing the first inconsistency, or none. */
static const struct {
    const char *what;
    const char *sql;
} verify_checks[] = {
    {"counter differs from a recount (queue, state, counter)",
     "WITH c AS (SELECT queue, state, uid, sum(n) n FROM (SELECT * FROM jobq.counts UNION ALL "
     "SELECT * FROM jobq.count_deltas) x GROUP BY 1, 2, 3), j AS (SELECT queue, state, uid, "
     "count(*) n FROM jobq.jobs GROUP BY 1, 2, 3) SELECT coalesce(c.queue, j.queue), "
     "coalesce(c.state, j.state), coalesce(c.n, 0) FROM c FULL JOIN j USING (queue, state, uid) "
     "WHERE coalesce(c.n, 0) <> coalesce(j.n, 0) LIMIT 1"},
    {"running job without its open attempt (id, attempt)",
     "SELECT id, attempt, '' FROM jobq.jobs WHERE state = 2 AND run_started = 0 LIMIT 1"},
    {"open attempt of a job neither running nor canceled (id, attempt, state)",
     "SELECT id, attempt, state FROM jobq.jobs WHERE run_started <> 0 AND state NOT IN (2, 6) "
     "LIMIT 1"},
    {"open attempt of no node (id, attempt, node)",
     "SELECT j.id, j.attempt, j.run_node FROM jobq.jobs j WHERE j.run_started <> 0 AND "
     "j.run_node IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jobq.nodes n WHERE n.id = j.run_node) "
     "LIMIT 1"},
    {"ended attempt still open, or open attempt ended (id, attempt)",
     "SELECT a.job_id, a.attempt, '' FROM jobq.attempts a WHERE a.finished_at = 0 OR EXISTS "
     "(SELECT 1 FROM jobq.jobs j WHERE j.id = a.job_id AND j.attempt = a.attempt AND "
     "j.run_started <> 0) LIMIT 1"},
    {"attempt of no job (id, attempt)",
     "SELECT a.job_id, a.attempt, '' FROM jobq.attempts a WHERE NOT EXISTS (SELECT 1 FROM "
     "jobq.jobs j WHERE j.id = a.job_id) LIMIT 1"},
    {"attempt rows differ from the job's attempt count (id, attempt)",
     "SELECT id, attempt, '' FROM jobq.jobs j WHERE attempt <> (SELECT count(*) FROM "
     "jobq.attempts a WHERE a.job_id = j.id) + (run_started <> 0)::int LIMIT 1"},
    {"finished_at does not match the state (id, state, finished_at)",
     "SELECT id, state, finished_at FROM jobq.jobs WHERE (state IN (4, 5, 6)) <> "
     "(finished_at > 0) LIMIT 1"},
};

static int
pg_verify(struct store_conn *c, char *why, size_t whylen)
{
    int rc;

    if ((rc = read_ready(c)) < 0)
        return rc;
    for (size_t i = 0; i < sizeof(verify_checks) / sizeof(verify_checks[0]) && rc == 0; i++) {
        PGresult *r = PQexec(c->pg, verify_checks[i].sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(why, whylen, "%s: %s", verify_checks[i].what, PQresultErrorMessage(r));
            rc = pg_errno(r);
        } else if (PQntuples(r) > 0) {
            snprintf(why, whylen, "%s: %s, %s, %s", verify_checks[i].what, PQgetvalue(r, 0, 0),
                     PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
            rc = -EIO;
        }
        PQclear(r);
    }
    return rc;
}

const struct store_backend_ops store_pg_ops = {
    .name = "postgresql",
    .open = pg_open,
    .open_claims = pg_open_claims,
    .close = conn_close,
    .txn = pg_txn,
    .submit = pg_submit,
    .claim = claim,
    .set_pgid = pg_set_pgid,
    .complete = pg_complete,
    .cancel = pg_cancel,
    .retry = pg_retry,
    .queue_set = pg_queue_set,
    .purge = pg_purge,
    .recover = pg_recover,
    .maintain = pg_maintain,
    .sync_failed = pg_sync_failed,
    .get = pg_get,
    .list = pg_list,
    .stats = pg_stats,
    .next_due = pg_next_due,
    .pending = pg_pending,
    .running = pg_running,
    .verify = pg_verify,
};
