/*
 * store_pg_schema — the PostgreSQL backend's schema (its own PostgreSQL
 * schema, jobq), its forward migrations and jobq.submit(), the SQL
 * function an application calls inside its own transaction. The version
 * lives in jobq.schema_version; migration N is migrations[N - 1], so a new
 * version is one more array entry. Nodes starting together migrate one at
 * a time: everything runs in one transaction that first takes a
 * transaction-level advisory lock, so the second node waits and then finds
 * the schema current. A schema jobq that is not ours, or one from a newer
 * jobqd, is refused and never touched.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_pg_int.h"

/* pg_advisory_xact_lock key of migrations: "jobqmigr" in ASCII. */
#define PG_MIGRATE_LOCK "7695843520137922930"

/*
 * States and outcomes are the integers of job.h (store_pg.c pins them);
 * the partial indexes name states literally, and the queries of store_pg.c
 * repeat their conditions word for word so the planner uses them.
 *
 * Times are Unix milliseconds (bigint), as the rest of jobq computes them;
 * only the leases (jobq.nodes) are timestamptz, on the database's clock,
 * so that clock skew between nodes cannot break them.
 */
static const char *const migrations[] = {
    /* 1: the initial schema. */
    "CREATE TABLE jobq.nodes ("
    "  id bigserial PRIMARY KEY,"
    "  name text NOT NULL," /* host:state-dir; the same across restarts */
    "  boot_id text NOT NULL DEFAULT '',"
    "  instance text NOT NULL DEFAULT ''," /* marker of its jobs' processes */
    "  pid integer NOT NULL DEFAULT 0,"
    "  lease_ms integer NOT NULL,"
    "  started_at timestamptz NOT NULL DEFAULT now(),"
    "  heartbeat_at timestamptz NOT NULL DEFAULT now()"
    ");"
    "CREATE INDEX nodes_name ON jobq.nodes (name);"
    "CREATE SEQUENCE jobq.jobs_id_seq;"
    "CREATE TABLE jobq.jobs ("
    "  id bigint PRIMARY KEY DEFAULT nextval('jobq.jobs_id_seq'),"
    "  queue text NOT NULL,"
    "  name text,"
    "  priority integer NOT NULL,"
    "  command jsonb NOT NULL," /* array of strings */
    "  env jsonb,"              /* array of \"K=V\" strings */
    "  cwd text,"
    "  unique_key text,"
    "  max_attempts integer NOT NULL,"
    "  backoff_base_ms bigint NOT NULL,"
    "  backoff_max_ms bigint NOT NULL,"
    "  timeout_ms bigint NOT NULL,"
    "  deadline bigint NOT NULL,"
    "  run_at bigint NOT NULL,"
    "  uid bigint NOT NULL,"
    "  gid bigint NOT NULL,"
    "  state smallint NOT NULL CHECK (state BETWEEN 0 AND 6),"
    "  attempt integer NOT NULL DEFAULT 0,"
    "  interrupted integer NOT NULL DEFAULT 0,"
    "  created_at bigint NOT NULL,"
    "  started_at bigint NOT NULL DEFAULT 0,"
    "  finished_at bigint NOT NULL DEFAULT 0,"
    "  updated_at bigint NOT NULL,"
    "  outcome smallint NOT NULL DEFAULT 0,"
    "  exit_code integer NOT NULL DEFAULT -1,"
    "  signal integer NOT NULL DEFAULT 0,"
    "  error text,"
    "  log_truncated boolean NOT NULL DEFAULT false"
    ");"
    "ALTER SEQUENCE jobq.jobs_id_seq OWNED BY jobq.jobs.id;"
    /* Ready jobs per queue in dispatch order: a claim reads the head of
     * each active queue (and finds the queues by skipping through it). */
    "CREATE INDEX jobs_ready ON jobq.jobs (queue, priority DESC, run_at, id) WHERE state = 1;"
    /* Scheduled and retrying jobs by due time: promotion and next_due. */
    "CREATE INDEX jobs_due ON jobq.jobs (run_at) WHERE state IN (0, 3);"
    /* Running jobs per queue: a limited queue's cluster-wide count. */
    "CREATE INDEX jobs_running ON jobq.jobs (queue) WHERE state = 2;"
    /* Terminal jobs by age: purge. */
    "CREATE INDEX jobs_finished ON jobq.jobs (finished_at) WHERE state >= 4;"
    /* Idempotent submit: one job per (submitter, key) until purged. */
    "CREATE UNIQUE INDEX jobs_unique ON jobq.jobs (uid, unique_key) WHERE unique_key IS NOT NULL;"
    "CREATE TABLE jobq.attempts ("
    "  job_id bigint NOT NULL REFERENCES jobq.jobs (id) ON DELETE CASCADE,"
    "  attempt integer NOT NULL,"
    "  started_at bigint NOT NULL,"
    "  finished_at bigint NOT NULL DEFAULT 0,"
    "  outcome smallint NOT NULL DEFAULT 0,"
    "  exit_code integer NOT NULL DEFAULT -1,"
    "  signal integer NOT NULL DEFAULT 0,"
    "  error text,"
    "  log_bytes bigint NOT NULL DEFAULT 0,"
    "  log_truncated boolean NOT NULL DEFAULT false,"
    "  pgid integer NOT NULL DEFAULT 0,"
    "  boot_id text NOT NULL DEFAULT '',"
    "  node_id bigint," /* the lease it ran under (jobq.nodes; kept after the node left) */
    "  PRIMARY KEY (job_id, attempt)"
    ");"
    /* Open attempts per node: recovery and take-over without history. */
    "CREATE INDEX attempts_open ON jobq.attempts (node_id) WHERE finished_at = 0;"
    "CREATE TABLE jobq.queues ("
    "  name text PRIMARY KEY,"
    "  paused boolean NOT NULL DEFAULT false,"
    "  max_running integer NOT NULL DEFAULT 0" /* cluster-wide; 0: no limit */
    ");"
    /* Jobs per (queue, state, uid): the folded counts, and the changes
     * each transaction appends (no row is updated by two nodes at once);
     * one node at a time folds the second into the first. */
    "CREATE TABLE jobq.counts ("
    "  queue text NOT NULL,"
    "  state smallint NOT NULL,"
    "  uid bigint NOT NULL,"
    "  n bigint NOT NULL,"
    "  PRIMARY KEY (queue, state, uid)"
    ");"
    "CREATE TABLE jobq.count_deltas ("
    "  queue text NOT NULL,"
    "  state smallint NOT NULL,"
    "  uid bigint NOT NULL,"
    "  n bigint NOT NULL"
    ");"
    /* The counters key on queue and uid, so a job never changes either. */
    "CREATE FUNCTION jobq.owner_fixed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    "  RAISE EXCEPTION 'the queue and uid of a job cannot change'; END $$;"
    "CREATE TRIGGER jobs_owner_fixed BEFORE UPDATE OF queue, uid ON jobq.jobs FOR EACH ROW"
    "  WHEN (OLD.queue <> NEW.queue OR OLD.uid <> NEW.uid) EXECUTE FUNCTION jobq.owner_fixed();"
    /*
     * Transactional enqueue (docs/POSTGRES.md): a job exists if and only
     * if the caller's transaction commits, and the NOTIFY that wakes every
     * node's dispatcher is delivered only then. The checks are
     * job_spec_validate's (common/job.c), limits.h's numbers.
     */
    "CREATE FUNCTION jobq.submit("
    "  command text[],"
    "  uid bigint,"
    "  gid bigint,"
    "  queue text DEFAULT 'default',"
    "  name text DEFAULT NULL,"
    "  priority integer DEFAULT 0,"
    "  max_attempts integer DEFAULT 1,"
    "  backoff_base_ms bigint DEFAULT 1000,"
    "  backoff_max_ms bigint DEFAULT NULL,"
    "  timeout_ms bigint DEFAULT 0,"
    "  deadline timestamptz DEFAULT NULL,"
    "  run_at timestamptz DEFAULT NULL,"
    "  unique_key text DEFAULT NULL,"
    "  env text[] DEFAULT NULL,"
    "  cwd text DEFAULT NULL"
    ") RETURNS bigint LANGUAGE plpgsql AS $$\n"
    "#variable_conflict use_column\n"
    "DECLARE\n"
    "  now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;\n"
    "  at_ms bigint := coalesce((extract(epoch FROM run_at) * 1000)::bigint, 0);\n"
    "  dl_ms bigint := coalesce((extract(epoch FROM deadline) * 1000)::bigint, 0);\n"
    "  bmax bigint := coalesce(backoff_max_ms, greatest(backoff_base_ms, 600000));\n"
    "  st smallint;\n"
    "  new_id bigint;\n"
    "BEGIN\n"
    "  IF command IS NULL OR cardinality(command) = 0 OR command[1] IS NULL OR command[1] = '' "
    "THEN\n"
    "    RAISE EXCEPTION 'jobq.submit: command is empty';\n"
    "  END IF;\n"
    "  IF array_position(command, NULL) IS NOT NULL OR cardinality(command) > 4096 OR\n"
    "     octet_length(array_to_string(command, 'x')) + cardinality(command) > 262144 THEN\n"
    "    RAISE EXCEPTION 'jobq.submit: command has a NULL, or is over 4096 arguments or 256 KiB';\n"
    "  END IF;\n"
    "  IF env IS NOT NULL AND (array_position(env, NULL) IS NOT NULL OR\n"
    "     octet_length(array_to_string(env, 'x')) + cardinality(env) > 65536 OR\n"
    "     EXISTS (SELECT 1 FROM unnest(env) e WHERE position('=' IN e) < 2)) THEN\n"
    "    RAISE EXCEPTION 'jobq.submit: env entries must be K=V, 64 KiB in all';\n"
    "  END IF;\n"
    "  IF queue IS NULL OR queue !~ '^[A-Za-z0-9._:-]{1,200}$' THEN\n"
    "    RAISE EXCEPTION 'jobq.submit: queue must be 1-200 of A-Z a-z 0-9 . _ : -';\n"
    "  END IF;\n"
    "  IF octet_length(name) > 200 OR octet_length(unique_key) > 200 OR name ~ '[[:cntrl:]]' THEN\n"
    "    RAISE EXCEPTION 'jobq.submit: name or unique_key over 200 bytes, or name has control "
    "characters';\n"
    "  END IF;\n"
    "  IF cwd IS NOT NULL AND (left(cwd, 1) <> '/' OR octet_length(cwd) > 4096) THEN\n"
    "    RAISE EXCEPTION 'jobq.submit: cwd must be an absolute path';\n"
    "  END IF;\n"
    "  IF uid IS NULL OR gid IS NULL OR uid < 0 OR gid < 0 OR uid >= 4294967295 OR\n"
    "     gid >= 4294967295 THEN\n"
    "    RAISE EXCEPTION 'jobq.submit: uid and gid are required (the job runs as them)';\n"
    "  END IF;\n"
    "  IF priority NOT BETWEEN -1000000 AND 1000000 OR max_attempts NOT BETWEEN 1 AND 1000 OR\n"
    "     backoff_base_ms NOT BETWEEN 0 AND 316224000000 OR bmax NOT BETWEEN backoff_base_ms AND\n"
    "     316224000000 OR timeout_ms NOT BETWEEN 0 AND 316224000000 THEN\n"
    "    RAISE EXCEPTION 'jobq.submit: priority, max_attempts, backoff or timeout out of range';\n"
    "  END IF;\n"
    "  IF at_ms <= 0 THEN at_ms := now_ms; END IF;\n"
    "  st := CASE WHEN at_ms > now_ms THEN 0 ELSE 1 END;\n"
    "  INSERT INTO jobq.jobs (queue, name, priority, command, env, cwd, unique_key,\n"
    "      max_attempts, backoff_base_ms, backoff_max_ms, timeout_ms, deadline, run_at, uid, gid,\n"
    "      state, created_at, updated_at)\n"
    "    VALUES (submit.queue, submit.name, submit.priority, to_jsonb(submit.command),\n"
    "      to_jsonb(submit.env), submit.cwd, submit.unique_key, submit.max_attempts,\n"
    "      submit.backoff_base_ms, bmax, submit.timeout_ms, dl_ms, at_ms, submit.uid, submit.gid,\n"
    "      st, now_ms, now_ms)\n"
    "    ON CONFLICT (uid, unique_key) WHERE unique_key IS NOT NULL DO NOTHING\n"
    "    RETURNING id INTO new_id;\n"
    "  IF new_id IS NULL THEN\n"
    "    SELECT j.id INTO new_id FROM jobq.jobs j WHERE j.uid = submit.uid AND\n"
    "      j.unique_key = submit.unique_key;\n"
    "    RETURN new_id;\n"
    "  END IF;\n"
    "  INSERT INTO jobq.count_deltas (queue, state, uid, n) VALUES (submit.queue, st, submit.uid, "
    "1);\n"
    "  PERFORM pg_notify('" PG_CHANNEL "', '0 W');\n"
    "  RETURN new_id;\n"
    "END $$;",
    /* 2: attempts without the foreign key to jobs. Its check on every
     * attempt inserted (a lookup and a KEY SHARE lock of a row the claim
     * already holds FOR UPDATE) was a tenth of the server's time in a
     * claim+complete cycle; only jobqd writes attempts, always for a job it
     * has locked, and purge deletes a job's attempts with it (S_PURGE).
     * store_verify looks for attempts without their job. */
    "ALTER TABLE jobq.attempts DROP CONSTRAINT attempts_job_id_fkey;",
    /*
     * 3: the open attempt lives on its job's row (run_*), and jobq.attempts
     * holds ended attempts only, each written once when it ends. An
     * attempt row inserted at the claim and updated at the end, with the
     * partial index of open attempts, was two of the seven index entries
     * and one of the four row versions each job cost (PostgreSQL's update
     * writes a new version). jobs_open replaces jobs_running and
     * attempts_open: the jobs with an open attempt, by queue (a limited
     * queue's count) and, scanned whole, by node (take-over; it holds only
     * what runs now). run_started > 0 is "an attempt is open", as
     * finished_at = 0 was.
     */
    "ALTER TABLE jobq.jobs ADD COLUMN run_started bigint NOT NULL DEFAULT 0,"
    "  ADD COLUMN run_node bigint," /* the lease the open attempt runs under */
    "  ADD COLUMN run_boot text NOT NULL DEFAULT '',"
    "  ADD COLUMN run_pgid integer NOT NULL DEFAULT 0;"
    "UPDATE jobq.jobs j SET run_started = a.started_at, run_node = a.node_id, run_boot = a.boot_id,"
    "  run_pgid = a.pgid FROM jobq.attempts a WHERE a.job_id = j.id AND a.attempt = j.attempt AND"
    "  a.finished_at = 0;"
    "DELETE FROM jobq.attempts WHERE finished_at = 0;"
    "DROP INDEX jobq.attempts_open;"
    "DROP INDEX jobq.jobs_running;"
    "CREATE INDEX jobs_open ON jobq.jobs (queue) WHERE run_started > 0;",
};

#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

int
pg_schema_version(void)
{
    return NMIGRATIONS;
}

/* One value of a one-row query, or -1 if it returned no row. */
static int
query_int(PGconn *pg, const char *sql, long long *v, char *why, size_t whylen)
{
    PGresult *r = PQexec(pg, sql);
    int rc = 0;

    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char *m = PQresultErrorMessage(r);
        snprintf(why, whylen, "%.*s", (int)strcspn(m, "\n"), m);
        rc = pg_errno(r);
    } else {
        *v =
            PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    }
    PQclear(r);
    return rc;
}

static int
migrate(PGconn *pg, int target, char *why, size_t whylen)
{
    char sql[128], what[256] = "";
    long long ours = 0, tables = 0, version = 0;
    int rc;

    if ((rc = pg_exec(pg, "SELECT pg_advisory_xact_lock(" PG_MIGRATE_LOCK ")", what,
                      sizeof(what))) < 0)
        goto fail;
    if ((rc = query_int(pg,
                        "SELECT count(*) FROM pg_tables WHERE schemaname = 'jobq' AND "
                        "tablename = 'schema_version'",
                        &ours, what, sizeof(what))) < 0 ||
        (rc = query_int(pg,
                        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = "
                        "c.relnamespace WHERE n.nspname = 'jobq'",
                        &tables, what, sizeof(what))) < 0)
        goto fail;
    if (ours == 0 && tables > 0) {
        snprintf(why, whylen,
                 "the database has a schema jobq that is not jobq's (no jobq.schema_version); "
                 "refusing to touch it");
        return -EINVAL;
    }
    if (ours == 0 &&
        (rc = pg_exec(pg,
                      "CREATE SCHEMA IF NOT EXISTS jobq; CREATE TABLE jobq.schema_version ("
                      "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                      what, sizeof(what))) < 0)
        goto fail;
    if ((rc = query_int(pg, "SELECT coalesce(max(version), 0) FROM jobq.schema_version", &version,
                        what, sizeof(what))) < 0)
        goto fail;
    if (version > NMIGRATIONS) {
        snprintf(why, whylen,
                 "the jobq schema has version %lld, newer than this jobqd knows (%d): use a newer "
                 "jobqd",
                 version, NMIGRATIONS);
        return -EINVAL;
    }
    for (; version < target; version++) {
        if ((rc = pg_exec(pg, migrations[version], what, sizeof(what))) < 0)
            goto fail;
        snprintf(sql, sizeof(sql), "INSERT INTO jobq.schema_version (version) VALUES (%lld)",
                 version + 1);
        if ((rc = pg_exec(pg, sql, what, sizeof(what))) < 0)
            goto fail;
    }
    return 0;
fail:
    snprintf(why, whylen, "cannot migrate the jobq schema to version %d: %s", target, what);
    return rc;
}

int
pg_migrate(PGconn *pg, int target, char *why, size_t whylen)
{
    char what[256];
    int rc;

    if (target > NMIGRATIONS)
        target = NMIGRATIONS;
    /* All or nothing, and one node at a time: the lock is released by
     * COMMIT or ROLLBACK. */
    if ((rc = pg_exec(pg, "BEGIN", what, sizeof(what))) < 0) {
        snprintf(why, whylen, "cannot migrate the jobq schema: %s", what);
        return rc;
    }
    if ((rc = migrate(pg, target, why, whylen)) < 0) {
        pg_exec(pg, "ROLLBACK", NULL, 0);
        return rc;
    }
    if ((rc = pg_exec(pg, "COMMIT", what, sizeof(what))) < 0)
        snprintf(why, whylen, "cannot migrate the jobq schema: %s", what);
    return rc;
}
