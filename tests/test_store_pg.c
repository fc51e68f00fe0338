/*
 * The PostgreSQL store (daemon/store_pg*.c): its backend operations called
 * directly, several nodes (writer connections) on one database, leases and
 * their take-over, notifications between nodes, jobq.submit() inside an
 * application's transaction, and the front on a postgresql:// URL. Needs
 * a server: JOBQ_TEST_PG is its libpq URL (tests/integ/pg_store.sh starts
 * a private one and runs this). Without it, nothing runs. Each test starts
 * from an empty database (DROP SCHEMA jobq).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "jobq/job.h"
#include "jobq/limits.h"
#include "jobq/store.h"

#define T0 1760000000000LL

static const struct store_backend_ops *ops = &store_pg_ops;
static const struct store_who admin = {.uid = 0, .admin = true};
static const char *url;
static char *argv_true[] = {"/bin/true", NULL};

/* What a node's callbacks saw. */
struct seen {
    atomic_int wake, lost, reaped;
    _Atomic int64_t changed, canceled;
};

static void
on_event(void *arg, enum store_event ev, int64_t id)
{
    struct seen *s = arg;
    switch (ev) {
    case STORE_EVENT_WAKE:
        atomic_fetch_add(&s->wake, 1);
        break;
    case STORE_EVENT_CHANGED:
        atomic_store(&s->changed, id);
        break;
    case STORE_EVENT_CANCEL:
        atomic_store(&s->canceled, id);
        break;
    case STORE_EVENT_LEASE_LOST:
        atomic_fetch_add(&s->lost, 1);
        break;
    }
}

static int
on_reap(void *arg, const char *instance, const struct store_running *r, size_t n)
{
    struct seen *s = arg;
    assert_string_equal(instance, "marker-a");
    atomic_fetch_add(&s->reaped, (int)n);
    return 0;
}

struct node {
    struct store_opts opts;
    struct store_conn *c;
    struct seen seen;
};

static void
sql(const char *q)
{
    PGconn *pg = PQconnectdb(url);
    PGresult *r;
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    PQclear(PQexec(pg, "SET client_min_messages TO warning")); /* DROP ... CASCADE */
    r = PQexec(pg, q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", q, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(pg);
}

static int64_t
sql_int(const char *q)
{
    PGconn *pg = PQconnectdb(url);
    PGresult *r;
    int64_t v = -1;
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    r = PQexec(pg, q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", q, PQresultErrorMessage(r));
    if (PQntuples(r) > 0)
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(pg);
    return v;
}

static void
node_open(struct node *n, const char *name, int lease_ms)
{
    char why[256] = "";
    int rc;
    memset(n, 0, sizeof(*n));
    n->opts.path = url;
    n->opts.node_name = name;
    n->opts.instance = strcmp(name, "a") == 0 ? "marker-a" : "marker-b";
    n->opts.boot_id = "boot-1";
    n->opts.lease_ms = lease_ms;
    n->opts.on_event = on_event;
    n->opts.on_event_arg = &n->seen;
    n->opts.on_reap = on_reap;
    n->opts.on_reap_arg = &n->seen;
    if ((rc = ops->open(&n->opts, STORE_WRITER, &n->c, why, sizeof(why))) < 0)
        fail_msg("open: %s (%s)", strerror(-rc), why);
}

static void
node_close(struct node *n)
{
    ops->close(n->c);
    n->c = NULL;
}

static int
setup(void **state)
{
    sql("DROP SCHEMA IF EXISTS jobq CASCADE");
    *state = NULL;
    return 0;
}

static void
txn(struct node *n, enum store_txn op)
{
    assert_int_equal(ops->txn(n->c, op), 0);
}

static struct job_spec
spec_q(const char *queue, int32_t priority)
{
    struct job_spec s = {0};
    s.command = argv_true;
    s.queue = (char *)queue;
    s.priority = priority;
    s.max_attempts = 3;
    s.backoff_base_ms = 1000;
    s.backoff_max_ms = 60000;
    s.uid = 1000;
    s.gid = 1000;
    return s;
}

static int64_t
submit(struct node *n, const struct job_spec *sp)
{
    int64_t id = 0;
    bool existed = true;
    txn(n, STORE_BEGIN);
    assert_int_equal(ops->submit(n->c, sp, 1, T0, &id, &existed), 0);
    txn(n, STORE_COMMIT);
    assert_false(existed);
    return id;
}

static int
claim_open(struct node *n, int64_t now, int max, struct job **jobs)
{
    int k = -1;
    txn(n, STORE_BEGIN);
    assert_int_equal(ops->claim(n->c, now, max, "boot-1", jobs, &k, NULL, NULL), 0);
    return k;
}

static int
claim(struct node *n, int64_t now, int max, struct job **jobs)
{
    int k = claim_open(n, now, max, jobs);
    txn(n, STORE_COMMIT);
    return k;
}

static int
complete(struct node *n, int64_t id, int32_t attempt, enum job_state next)
{
    struct store_completion c = {.id = id,
                                 .attempt = attempt,
                                 .finished_at = T0 + 5,
                                 .outcome =
                                     next == JOB_SUCCEEDED ? OUTCOME_SUCCEEDED : OUTCOME_EXITED,
                                 .exit_code = next == JOB_SUCCEEDED ? 0 : 1,
                                 .error = next == JOB_SUCCEEDED ? NULL : "exited \"1\"\\",
                                 .next = next,
                                 .run_at = T0 + 1000};
    int one = 0, rc;
    txn(n, STORE_BEGIN);
    rc = ops->complete(n->c, &c, 1, T0 + 5, &one);
    if (rc == 0)
        rc = one;
    txn(n, rc == 0 ? STORE_COMMIT : STORE_ROLLBACK);
    return rc;
}

/* Cancels job id through n, in its own transaction; it was running. */
static void
cancel_running(struct node *n, int64_t id)
{
    bool running = false;
    txn(n, STORE_BEGIN);
    assert_int_equal(ops->cancel(n->c, admin, id, T0 + 1, &running, NULL), 0);
    txn(n, STORE_COMMIT);
    assert_true(running);
}

static struct job *
get(struct node *n, int64_t id)
{
    struct job *j = NULL;
    assert_int_equal(ops->get(n->c, admin, id, &j), 0);
    return j;
}

static void
verify(struct node *n)
{
    char why[512] = "";
    if (ops->verify(n->c, why, sizeof(why)) != 0)
        fail_msg("verify: %s", why);
}

/* Polls cond (a statement) every 20 ms for up to ms. */
#define WAIT_FOR(cond, ms)                                                                         \
    do {                                                                                           \
        for (int waited_ = 0; !(cond) && waited_ < (ms); waited_ += 20)                            \
            usleep(20000);                                                                         \
    } while (0)

/* ---- schema ------------------------------------------------------------- */

static void
test_open_creates_schema_and_two_nodes_open_together(void **state)
{
    struct node a, b;
    node_open(&a, "a", 0);
    node_open(&b, "b", 0);
    assert_int_equal(sql_int("SELECT max(version) FROM jobq.schema_version"), 3);
    assert_int_equal(sql_int("SELECT count(*) FROM jobq.nodes"), 2);
    node_close(&a);
    node_close(&b);
    /* A clean close without open attempts takes the lease away. */
    assert_int_equal(sql_int("SELECT count(*) FROM jobq.nodes"), 0);
}

/* store_pg_schema.c's, for a database of an older version. */
int pg_migrate(PGconn *pg, int target, char *why, size_t whylen);

/* A database of schema 1, as a jobqd of then left it (an attempt open on a
 * node, ended ones, the foreign key to jobs), migrates to the current
 * schema with nothing lost: the open attempt moves to its job's row, the
 * ended ones stay. Purge then deletes a job's attempts itself (no foreign
 * key cascades), and verify finds an attempt left without its job. */
static void
test_schema_1_migrates_with_its_attempts(void **state)
{
    PGconn *pg = PQconnectdb(url);
    char why[512] = "";
    struct node a;
    int64_t ids[4];
    int n = 0;
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    if (pg_migrate(pg, 1, why, sizeof(why)) < 0)
        fail_msg("migrate to 1: %s", why);
    PQfinish(pg);
    assert_int_equal(sql_int("SELECT max(version) FROM jobq.schema_version"), 1);
    sql("INSERT INTO jobq.nodes (id, name, boot_id, lease_ms) VALUES (7, 'old', 'b0', 600000);"
        "INSERT INTO jobq.jobs (id, queue, priority, command, max_attempts, backoff_base_ms, "
        "backoff_max_ms, timeout_ms, deadline, run_at, uid, gid, state, attempt, created_at, "
        "started_at, finished_at, updated_at) VALUES "
        "(1, 'q', 0, '[\"/bin/true\"]', 3, 1000, 60000, 0, 0, 1, 1000, 1000, 2, 2, 1, 2, 0, 5),"
        "(2, 'q', 0, '[\"/bin/true\"]', 3, 1000, 60000, 0, 0, 1, 1000, 1000, 4, 1, 1, 2, 3, 3);"
        "INSERT INTO jobq.attempts (job_id, attempt, started_at, finished_at, outcome, exit_code, "
        "pgid, boot_id, node_id) VALUES (1, 1, 2, 3, 2, 1, 70, 'b0', 7), "
        "(1, 2, 5, 0, 0, -1, 77, 'b0', 7), (2, 1, 2, 3, 1, 0, 71, 'b0', 7);"
        "INSERT INTO jobq.counts (queue, state, uid, n) VALUES ('q', 2, 1000, 1), "
        "('q', 4, 1000, 1)");

    node_open(&a, "a", 0);
    assert_int_equal(sql_int("SELECT max(version) FROM jobq.schema_version"), 3);
    assert_int_equal(sql_int("SELECT count(*) FROM pg_constraint WHERE conrelid = "
                             "'jobq.attempts'::regclass AND contype = 'f'"),
                     0);
    assert_int_equal(sql_int("SELECT count(*) FROM jobq.attempts"), 2);
    assert_int_equal(sql_int("SELECT run_started * 1000000 + run_node * 1000 + run_pgid FROM "
                             "jobq.jobs WHERE id = 1 AND run_boot = 'b0'"),
                     5007077);
    verify(&a);
    struct job *j = get(&a, 1);
    assert_int_equal(j->nattempts, 2);
    assert_int_equal(j->attempts[0].finished_at, 3);
    assert_int_equal(j->attempts[1].attempt, 2);
    assert_int_equal(j->attempts[1].started_at, 5);
    assert_int_equal(j->attempts[1].finished_at, 0);
    assert_int_equal(j->attempts[1].pgid, 77);
    job_free(j);
    /* The open attempt ends as any other. */
    assert_int_equal(complete(&a, 1, 2, JOB_SUCCEEDED), 0);
    assert_int_equal(sql_int("SELECT pgid FROM jobq.attempts WHERE job_id = 1 AND attempt = 2"),
                     77);
    verify(&a);

    txn(&a, STORE_BEGIN);
    assert_int_equal(ops->purge(a.c, admin, 4, 1u << JOB_SUCCEEDED, 4, ids, &n), 0);
    txn(&a, STORE_COMMIT);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 2);
    assert_int_equal(sql_int("SELECT count(*) FROM jobq.attempts WHERE job_id = 2"), 0);
    verify(&a);

    sql("INSERT INTO jobq.attempts (job_id, attempt, started_at, finished_at) VALUES "
        "(424242, 1, 1, 2)");
    assert_int_not_equal(ops->verify(a.c, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "attempt of no job"));
    node_close(&a);
}

static void
test_newer_or_foreign_schema_is_refused(void **state)
{
    struct store_opts o = {.path = url};
    struct store_conn *c = NULL;
    char why[256] = "";
    struct node a;
    node_open(&a, "a", 0);
    node_close(&a);
    sql("INSERT INTO jobq.schema_version (version) VALUES (99)");
    assert_int_equal(ops->open(&o, STORE_WRITER, &c, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "newer than this jobqd knows"));
    sql("DROP SCHEMA jobq CASCADE; CREATE SCHEMA jobq; CREATE TABLE jobq.mine (x int)");
    assert_int_equal(ops->open(&o, STORE_WRITER, &c, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "not jobq's"));
    assert_int_equal(sql_int("SELECT count(*) FROM jobq.mine"), 0); /* untouched */
}

/* ---- operations ------------------------------------------------------------- */

static void
test_submit_round_trips_every_field(void **state)
{
    struct node a;
    char *cmd[] = {"/bin/sh", "-c", "echo \"$X\" \\ done\n\ttab", "h\xc3\xa9 {a,b}", NULL};
    char *env[] = {"X=1", "Y=a b", NULL};
    struct job_spec sp = spec_q("mail", 7);
    node_open(&a, "a", 0);
    sp.command = cmd;
    sp.env = env;
    sp.name = "nightly";
    sp.cwd = "/srv";
    sp.unique_key = "k1";
    sp.timeout_ms = 5000;
    sp.deadline = T0 + 3600000;
    int64_t id = submit(&a, &sp);
    struct job *j = get(&a, id);
    for (int i = 0; cmd[i]; i++)
        assert_string_equal(j->spec.command[i], cmd[i]);
    assert_null(j->spec.command[4]);
    assert_string_equal(j->spec.env[1], "Y=a b");
    assert_string_equal(j->spec.queue, "mail");
    assert_string_equal(j->spec.name, "nightly");
    assert_string_equal(j->spec.cwd, "/srv");
    assert_string_equal(j->spec.unique_key, "k1");
    assert_int_equal(j->spec.priority, 7);
    assert_int_equal(j->spec.deadline, T0 + 3600000);
    assert_int_equal(j->state, JOB_QUEUED);
    assert_int_equal(j->created_at, T0);
    job_free(j);
    /* The same key again: the same job. */
    int64_t again = 0;
    bool existed = false;
    txn(&a, STORE_BEGIN);
    assert_int_equal(ops->submit(a.c, &sp, 1, T0, &again, &existed), 0);
    txn(&a, STORE_COMMIT);
    assert_true(existed);
    assert_int_equal(again, id);
    verify(&a);
    node_close(&a);
}

static void
test_batch_ids_follow_the_specs(void **state)
{
    struct node a;
    struct job_spec sp[40];
    int64_t ids[40];
    bool existed[40];
    node_open(&a, "a", 0);
    for (int i = 0; i < 40; i++) {
        sp[i] = spec_q("q", i);
        if (i == 17)
            sp[i].unique_key = "mid";
    }
    txn(&a, STORE_BEGIN);
    assert_int_equal(ops->submit(a.c, sp, 40, T0, ids, existed), 0);
    txn(&a, STORE_COMMIT);
    for (int i = 0; i < 40; i++) {
        struct job *j = get(&a, ids[i]);
        assert_int_equal(j->spec.priority, i);
        if (i > 0)
            assert_true(ids[i] > ids[i - 1]);
        job_free(j);
    }
    verify(&a);
    node_close(&a);
}

static void
test_claim_order_fence_cancel_retry(void **state)
{
    struct node a;
    struct job *j[8];
    node_open(&a, "a", 0);
    struct job_spec lo = spec_q("q", 1), hi = spec_q("q", 10), other = spec_q("r", 5);
    int64_t l = submit(&a, &lo), h = submit(&a, &hi), o = submit(&a, &other);
    assert_int_equal(claim(&a, T0 + 10, 8, j), 3);
    assert_int_equal(j[0]->id, h);
    assert_int_equal(j[1]->id, o);
    assert_int_equal(j[2]->id, l);
    assert_int_equal(j[0]->state, JOB_RUNNING);
    assert_int_equal(j[0]->attempt, 1);
    for (int i = 0; i < 3; i++)
        job_free(j[i]);
    /* Fenced: a wrong attempt changes nothing. */
    assert_int_equal(complete(&a, h, 2, JOB_SUCCEEDED), -ESTALE);
    assert_int_equal(complete(&a, h, 1, JOB_SUCCEEDED), 0);
    assert_int_equal(complete(&a, h, 1, JOB_SUCCEEDED), -ESTALE);
    assert_int_equal(complete(&a, l, 1, JOB_FAILED), 0);
    struct job *g = get(&a, l);
    assert_string_equal(g->error, "exited \"1\"\\");
    assert_string_equal(g->attempts[0].error, "exited \"1\"\\");
    job_free(g);
    /* Cancel while running keeps the attempt open; retry waits for it. */
    bool running = false;
    int32_t att = 0;
    txn(&a, STORE_BEGIN);
    assert_int_equal(ops->cancel(a.c, admin, o, T0 + 20, &running, &att), 0);
    txn(&a, STORE_COMMIT);
    assert_true(running);
    txn(&a, STORE_BEGIN);
    assert_int_equal(ops->retry(a.c, admin, o, T0 + 21), -EBUSY);
    txn(&a, STORE_ROLLBACK);
    assert_int_equal(complete(&a, o, 1, JOB_RETRYING), 0);
    g = get(&a, o);
    assert_int_equal(g->state, JOB_CANCELED);
    job_free(g);
    txn(&a, STORE_BEGIN);
    assert_int_equal(ops->retry(a.c, admin, l, T0 + 22), 0);
    txn(&a, STORE_COMMIT);
    assert_int_equal(claim(&a, T0 + 30, 8, j), 1);
    assert_int_equal(j[0]->id, l);
    assert_int_equal(j[0]->attempt, 2);
    job_free(j[0]);
    struct store_stats st;
    assert_int_equal(ops->stats(a.c, admin, &st), 0);
    assert_int_equal(st.count[JOB_RUNNING], 1);
    assert_int_equal(st.count[JOB_SUCCEEDED], 1);
    assert_int_equal(st.count[JOB_CANCELED], 1);
    store_stats_free(&st);
    verify(&a);
    node_close(&a);
}

/* ---- several nodes ------------------------------------------------------------ */

static void
test_two_nodes_never_claim_the_same_job(void **state)
{
    struct node a, b;
    struct job *ja[8], *jb[8];
    node_open(&a, "a", 0);
    node_open(&b, "b", 0);
    struct job_spec sp = spec_q("q", 0);
    for (int i = 0; i < 6; i++)
        submit(&a, &sp);
    /* a's claim is not committed yet: b skips its rows, never waits. */
    int na = claim_open(&a, T0, 4, ja);
    int nb = claim(&b, T0, 8, jb);
    txn(&a, STORE_COMMIT);
    assert_int_equal(na, 4);
    assert_int_equal(nb, 2);
    for (int i = 0; i < na; i++)
        for (int k = 0; k < nb; k++)
            assert_int_not_equal(ja[i]->id, jb[k]->id);
    for (int i = 0; i < na; i++)
        job_free(ja[i]);
    for (int i = 0; i < nb; i++)
        job_free(jb[i]);
    verify(&a);
    node_close(&a);
    node_close(&b);
}

static void
test_queue_limit_holds_across_nodes(void **state)
{
    struct node a, b;
    struct job *j[8];
    node_open(&a, "a", 0);
    node_open(&b, "b", 0);
    struct job_spec sp = spec_q("narrow", 0);
    for (int i = 0; i < 5; i++)
        submit(&a, &sp);
    txn(&a, STORE_BEGIN);
    assert_int_equal(ops->queue_set(a.c, "narrow", -1, 2), 0);
    txn(&a, STORE_COMMIT);
    assert_int_equal(claim(&a, T0, 1, j), 1);
    job_free(j[0]);
    assert_int_equal(claim(&b, T0, 8, j), 1); /* one slot was left, cluster-wide */
    int64_t id = j[0]->id;
    job_free(j[0]);
    assert_int_equal(claim(&a, T0, 8, j), 0);
    assert_int_equal(complete(&b, id, 1, JOB_SUCCEEDED), 0);
    assert_int_equal(claim(&a, T0, 8, j), 1);
    job_free(j[0]);
    node_close(&a);
    node_close(&b);
}

static void
test_notifications_reach_the_other_node(void **state)
{
    struct node a, b;
    struct job *j[1];
    node_open(&a, "a", 0);
    node_open(&b, "b", 0);
    struct job_spec sp = spec_q("q", 0);
    int64_t id = submit(&a, &sp);
    WAIT_FOR(atomic_load(&b.seen.wake) > 0, 3000);
    assert_true(atomic_load(&b.seen.wake) > 0);
    assert_int_equal(claim(&a, T0, 1, j), 1);
    job_free(j[0]);
    cancel_running(&b, id);
    /* The node that runs it hears of the cancel, and of the change. */
    WAIT_FOR(atomic_load(&a.seen.canceled) == id, 3000);
    assert_int_equal(atomic_load(&a.seen.canceled), id);
    assert_int_equal(atomic_load(&a.seen.changed), id);
    node_close(&a);
    node_close(&b);
}

static void
test_sql_submit_exists_only_if_the_transaction_commits(void **state)
{
    struct node a;
    struct job *j[1];
    node_open(&a, "a", 0);
    sql("BEGIN; SELECT jobq.submit(ARRAY['echo', 'rolled back'], 1000, 1000); ROLLBACK");
    assert_int_equal(sql_int("SELECT count(*) FROM jobq.jobs"), 0);
    int before = atomic_load(&a.seen.wake);
    sql("BEGIN; SELECT jobq.submit(ARRAY['echo', 'hi'], 1000, 1000, queue => 'app', "
        "priority => 3, unique_key => 'order-7'); COMMIT");
    WAIT_FOR(atomic_load(&a.seen.wake) > before, 3000);
    assert_true(atomic_load(&a.seen.wake) > before);
    int64_t id = sql_int("SELECT jobq.submit(ARRAY['echo', 'hi'], 1000, 1000, "
                         "unique_key => 'order-7')");
    assert_int_equal(sql_int("SELECT count(*) FROM jobq.jobs"), 1);
    assert_int_equal(claim(&a, job_now_ms() + 1000, 1, j), 1);
    assert_int_equal(j[0]->id, id);
    assert_string_equal(j[0]->spec.command[1], "hi");
    assert_string_equal(j[0]->spec.queue, "app");
    job_free(j[0]);
    verify(&a);
    node_close(&a);
}

static void
test_expired_lease_is_taken_over_and_late_completion_refused(void **state)
{
    struct node a, b;
    struct job *j[2];
    node_open(&a, "a", 300);
    struct job_spec sp = spec_q("q", 0);
    int64_t id = submit(&a, &sp), canceled = submit(&a, &sp);
    assert_int_equal(claim(&a, T0, 2, j), 2);
    job_free(j[0]);
    job_free(j[1]);
    /* One is canceled while it runs: its attempt stays open until a says
     * the process is gone, which a never does. */
    cancel_running(&a, canceled);
    /* a stops renewing, its attempts still open: its lease stays, expires. */
    ops->close(a.c);
    assert_int_equal(sql_int("SELECT count(*) FROM jobq.nodes WHERE name = 'a'"), 1);
    node_open(&b, "b", 300);
    WAIT_FOR(sql_int("SELECT count(*) FROM jobq.nodes WHERE name = 'a'") == 0, 5000);
    assert_int_equal(atomic_load(&b.seen.reaped), 2);
    struct job *g = get(&b, id);
    assert_int_equal(g->state, JOB_RETRYING);
    assert_int_equal(g->attempts[0].outcome, OUTCOME_INTERRUPTED);
    assert_int_equal(g->interrupted, 1);
    job_free(g);
    g = get(&b, canceled);
    assert_int_equal(g->state, JOB_CANCELED);
    assert_int_equal(g->attempts[0].outcome, OUTCOME_INTERRUPTED);
    job_free(g);
    /* The presumed dead node's completions come too late, also that of the
     * canceled job, whose attempt the take-over ended. */
    assert_int_equal(complete(&b, id, 1, JOB_SUCCEEDED), -ESTALE);
    assert_int_equal(complete(&b, canceled, 1, JOB_SUCCEEDED), -ESTALE);
    g = get(&b, canceled);
    assert_int_equal(g->attempts[0].outcome, OUTCOME_INTERRUPTED);
    job_free(g);
    verify(&b);
    node_close(&b);
}

static void
test_lost_lease_stops_the_node(void **state)
{
    struct node a;
    node_open(&a, "a", 500);
    sql("DELETE FROM jobq.nodes WHERE name = 'a'"); /* someone took it over */
    WAIT_FOR(atomic_load(&a.seen.lost) > 0, 3000);
    assert_int_equal(atomic_load(&a.seen.lost), 1);
    assert_int_equal(ops->txn(a.c, STORE_BEGIN), -EIO);
    assert_true(ops->sync_failed(a.c));
    node_close(&a);
}

/* A newer jobqd migrated the schema under running nodes: a claim of an
 * older one fails at once, and its heartbeat finds it too; either way it
 * stops as if its lease were lost, and opening again is refused. */
static void
test_newer_schema_stops_older_nodes(void **state)
{
    struct node a, b;
    struct job *j[2];
    struct store_conn *c = NULL;
    char why[256] = "";
    int k = -1;
    node_open(&a, "a", 600000); /* no heartbeat during the test */
    node_open(&b, "b", 500);
    struct job_spec sp = spec_q("q", 0);
    submit(&a, &sp);
    sql("INSERT INTO jobq.schema_version (version) VALUES (99)");

    txn(&a, STORE_BEGIN);
    assert_int_equal(ops->claim(a.c, T0, 1, "boot-1", j, &k, NULL, NULL), -EIO);
    txn(&a, STORE_ROLLBACK);
    assert_int_equal(k, 0);
    assert_int_equal(atomic_load(&a.seen.lost), 1);

    WAIT_FOR(atomic_load(&b.seen.lost) > 0, 3000);
    assert_int_equal(atomic_load(&b.seen.lost), 1);
    assert_int_equal(ops->txn(b.c, STORE_BEGIN), -EIO);

    struct store_opts o = {.path = url};
    assert_int_not_equal(ops->open(&o, STORE_WRITER, &c, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "newer"));
    node_close(&a);
    node_close(&b);
}

static void
test_restart_recovers_its_own_previous_run_only(void **state)
{
    struct node a, b, a2;
    struct job *j[2];
    struct store_running *r = NULL;
    size_t n = 0;
    int64_t retrying = -1, failed = -1;
    node_open(&a, "a", 0);
    node_open(&b, "b", 0);
    struct job_spec sp = spec_q("q", 0);
    int64_t ia = submit(&a, &sp), ib = submit(&a, &sp);
    assert_int_equal(claim(&a, T0, 1, j), 1);
    assert_int_equal(j[0]->id, ia);
    job_free(j[0]);
    assert_int_equal(claim(&b, T0, 1, j), 1);
    assert_int_equal(j[0]->id, ib);
    job_free(j[0]);
    ops->close(a.c); /* crashed: its attempt is open */
    node_open(&a2, "a", 0);
    assert_int_equal(ops->running(a2.c, &r, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(r[0].id, ia);
    assert_string_equal(r[0].boot_id, "boot-1");
    free(r);
    txn(&a2, STORE_BEGIN);
    assert_int_equal(ops->recover(a2.c, T0 + 100, 1, &retrying, &failed), 0);
    txn(&a2, STORE_COMMIT);
    assert_int_equal(retrying, 1);
    struct job *g = get(&a2, ib);
    assert_int_equal(g->state, JOB_RUNNING); /* b's is b's */
    job_free(g);
    verify(&a2);
    node_close(&a2);
    node_close(&b);
}

/* ---- the front ------------------------------------------------------------------ */

/* The end of a front test: job id is in state want, the store verifies,
 * and is freed. */
static void
front_done(struct store *st, int64_t id, enum job_state want)
{
    struct job *g = NULL;
    char why[256] = "";
    assert_int_equal(store_get(st, admin, id, &g), 0);
    assert_int_equal(g->state, want);
    job_free(g);
    if (store_verify(st, why, sizeof(why)) != 0)
        fail_msg("verify: %s", why);
    store_free(st);
}

static void
test_front_on_a_url(void **state)
{
    struct store_opts o = {.path = url, .node_name = "front"};
    struct store *st = NULL;
    struct job_spec sp = spec_q("q", 0);
    struct job *j[4];
    char why[256] = "";
    int64_t id;
    int n = 0;
    assert_int_equal(store_new(&o, &st, why, sizeof(why)), 0);
    assert_int_equal(store_submit(st, &sp, &id, NULL, why, sizeof(why)), 0);
    assert_int_equal(store_claim(st, job_now_ms(), 4, j, &n), 0);
    assert_int_equal(n, 1);
    struct store_completion c = {.id = id,
                                 .attempt = j[0]->attempt,
                                 .outcome = OUTCOME_SUCCEEDED,
                                 .exit_code = 0,
                                 .next = JOB_SUCCEEDED};
    job_free(j[0]);
    assert_int_equal(store_complete(st, &c), 0);
    assert_int_equal(store_complete(st, &c), -ESTALE);
    front_done(st, id, JOB_SUCCEEDED);
}

struct stuck_cancel {
    struct store *st;
    int64_t id;
    int rc;
    atomic_bool done;
};

static void *
stuck_cancel_main(void *arg)
{
    struct stuck_cancel *c = arg;
    bool was_running = false;
    int32_t attempt = 0;
    c->rc = store_cancel(c->st, admin, c->id, &was_running, &attempt);
    atomic_store(&c->done, true);
    return NULL;
}

/* Claims have a connection of their own: a claim does not wait behind a
 * write that waits on a row lock (here a cancel, the row held by another
 * session), and the write goes on once the lock is gone. */
static void
test_front_claims_beside_a_stuck_write(void **state)
{
    struct store_opts o = {.path = url, .node_name = "front"};
    struct store *st = NULL;
    struct job_spec held = spec_q("held", 0), free_q = spec_q("free", 0);
    struct stuck_cancel c = {0};
    struct job *j[4];
    char why[256] = "", q[160];
    int64_t held_id, free_id;
    pthread_t t;
    int n = 0;
    (void)state;
    assert_int_equal(store_new(&o, &st, why, sizeof(why)), 0);
    assert_int_equal(store_submit(st, &held, &held_id, NULL, why, sizeof(why)), 0);
    assert_int_equal(store_submit(st, &free_q, &free_id, NULL, why, sizeof(why)), 0);

    PGconn *locker = PQconnectdb(url);
    assert_int_equal(PQstatus(locker), CONNECTION_OK);
    PQclear(PQexec(locker, "BEGIN"));
    snprintf(q, sizeof(q), "SELECT 1 FROM jobq.jobs WHERE id = %" PRId64 " FOR UPDATE", held_id);
    PGresult *r = PQexec(locker, q);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);

    c.st = st;
    c.id = held_id;
    assert_int_equal(pthread_create(&t, NULL, stuck_cancel_main, &c), 0);
    /* Until the cancel's UPDATE waits on the lock. */
    for (int i = 0; i < 500 && sql_int("SELECT count(*) FROM pg_stat_activity WHERE "
                                       "wait_event_type = 'Lock' AND query LIKE 'UPDATE%'") < 1;
         i++)
        usleep(10 * 1000);
    assert_false(atomic_load(&c.done));

    assert_int_equal(store_claim(st, job_now_ms(), 4, j, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(j[0]->id, free_id); /* the held one is skipped, not waited for */
    job_free(j[0]);
    assert_false(atomic_load(&c.done));

    PQclear(PQexec(locker, "COMMIT"));
    PQfinish(locker);
    pthread_join(t, NULL);
    assert_int_equal(c.rc, 0);
    front_done(st, held_id, JOB_CANCELED);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_open_creates_schema_and_two_nodes_open_together, setup),
        cmocka_unit_test_setup(test_newer_or_foreign_schema_is_refused, setup),
        cmocka_unit_test_setup(test_schema_1_migrates_with_its_attempts, setup),
        cmocka_unit_test_setup(test_submit_round_trips_every_field, setup),
        cmocka_unit_test_setup(test_batch_ids_follow_the_specs, setup),
        cmocka_unit_test_setup(test_claim_order_fence_cancel_retry, setup),
        cmocka_unit_test_setup(test_two_nodes_never_claim_the_same_job, setup),
        cmocka_unit_test_setup(test_queue_limit_holds_across_nodes, setup),
        cmocka_unit_test_setup(test_notifications_reach_the_other_node, setup),
        cmocka_unit_test_setup(test_sql_submit_exists_only_if_the_transaction_commits, setup),
        cmocka_unit_test_setup(test_expired_lease_is_taken_over_and_late_completion_refused, setup),
        cmocka_unit_test_setup(test_lost_lease_stops_the_node, setup),
        cmocka_unit_test_setup(test_newer_schema_stops_older_nodes, setup),
        cmocka_unit_test_setup(test_restart_recovers_its_own_previous_run_only, setup),
        cmocka_unit_test_setup(test_front_on_a_url, setup),
        cmocka_unit_test_setup(test_front_claims_beside_a_stuck_write, setup),
    };

    if ((url = getenv("JOBQ_TEST_PG")) == NULL || url[0] == '\0') {
        /* run-tests.sh runs every binary as is; tests/integ/pg_store.sh
         * runs this one again against a server it starts. */
        fprintf(stderr, "test_store_pg: JOBQ_TEST_PG is unset: nothing to run here "
                        "(tests/integ/pg_store.sh runs it against a private server)\n");
        return 0;
    }
    return cmocka_run_group_tests_name("store_pg", tests, NULL, NULL);
}
