/*
 * The store: the SQLite backend's operations called directly (schema,
 * migrations, integrity checks at open, every job operation, failure
 * injection), then the front (writer thread, group commit, read pool,
 * a full disk on tmpfs, kill -9 of a submitter). Each test uses its own
 * database in a mkdtemp directory. Figures are printed as "FIGURE ...".
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "../daemon/store_sqlite_int.h"
#include "jobq/job.h"
#include "jobq/limits.h"
#include "jobq/runtime.h"
#include "jobq/store.h"

/* 2025-10-09T08:53:20Z: fixed times keep the tests deterministic. */
#define T0 1760000000000LL

static const struct store_backend_ops *ops = &store_sqlite_ops;
static const struct store_who admin = {.uid = 0, .admin = true};

static char *argv_true[] = {"/bin/true", NULL};

struct fx {
    char dir[64];
    char path[128];
    struct store_opts opts;
    struct store_conn *c;
    /* Failure injection: fail the nth consulted point of kind `point`
     * (counting from 1) with `err`, and every later one while sticky. */
    enum store_fault_point point;
    int fail_at;
    int seen;
    int err;
    bool sticky;
    /* Front tests: the store, commit numbering for slow/failing commits,
     * and a tmpfs mounted over dir. */
    struct store *st;
    _Atomic int commits_seen;
    int slow_commit, slow_ms, fail_commit;
    bool mounted;
};

static int
fault_hook(void *arg, enum store_fault_point point)
{
    struct fx *fx = arg;

    if (point == STORE_FAULT_COMMIT && (fx->slow_commit || fx->fail_commit)) {
        int n = ++fx->commits_seen;
        if (n == fx->slow_commit)
            usleep((useconds_t)fx->slow_ms * 1000); /* let others queue up */
        if (n == fx->fail_commit)
            return fx->err;
    }

    if (fx->fail_at == 0 || point != fx->point)
        return 0;
    fx->seen++;
    if (fx->seen == fx->fail_at || (fx->sticky && fx->seen > fx->fail_at))
        return fx->err;
    return 0;
}

static void
rm_rf(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

static struct fx *
fx_new(void)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    strcpy(fx->dir, "/tmp/test_store.XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof(fx->path), "%s/jobq.db", fx->dir);
    fx->opts.path = fx->path;
    fx->opts.boot_id = "00000000-0000-0000-0000-000000000001";
    fx->opts.fault = fault_hook;
    fx->opts.fault_arg = fx;
    return fx;
}

static void
fx_open(struct fx *fx)
{
    char why[256] = "";
    int rc = ops->open(&fx->opts, STORE_WRITER, &fx->c, why, sizeof(why));
    if (rc != 0)
        fail_msg("open: %s (%s)", strerror(-rc), why);
}

static void
fx_close(struct fx *fx)
{
    ops->close(fx->c);
    fx->c = NULL;
}

static int
setup(void **state)
{
    struct fx *fx = fx_new();
    fx_open(fx);
    *state = fx;
    return 0;
}

static int
setup_closed(void **state)
{
    *state = fx_new();
    return 0;
}

static int
teardown(void **state)
{
    struct fx *fx = *state;
    if (fx->c != NULL)
        ops->close(fx->c);
    store_free(fx->st);
    if (fx->mounted)
        umount2(fx->dir, MNT_DETACH);
    rm_rf(fx->dir);
    free(fx);
    return 0;
}

static void
txn(struct fx *fx, enum store_txn op)
{
    assert_int_equal(ops->txn(fx->c, op), 0);
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
submit_at(struct fx *fx, const struct job_spec *sp, int64_t now)
{
    int64_t id = 0;
    bool existed = true;
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->submit(fx->c, sp, 1, now, &id, &existed), 0);
    txn(fx, STORE_COMMIT);
    assert_false(existed);
    assert_true(id > 0);
    return id;
}

static int64_t
submit(struct fx *fx, const struct job_spec *sp)
{
    return submit_at(fx, sp, T0);
}

/* Claims in its own transaction; returns how many. */
static int
claim(struct fx *fx, int64_t now, int max, struct job **jobs)
{
    int n = -1;
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->claim(fx->c, now, max, "boot-a", jobs, &n, NULL, NULL), 0);
    txn(fx, STORE_COMMIT);
    return n;
}

static void
free_jobs(struct job **jobs, int n)
{
    for (int i = 0; i < n; i++)
        job_free(jobs[i]);
}

static int
complete(struct fx *fx, int64_t id, int32_t attempt, enum job_outcome o, enum job_state next,
         int64_t now, int64_t run_at)
{
    struct store_completion c = {
        .id = id,
        .attempt = attempt,
        .finished_at = now,
        .outcome = o,
        .exit_code = o == OUTCOME_SUCCEEDED ? 0 : 1,
        .error = o == OUTCOME_SUCCEEDED ? NULL : "exited with status 1",
        .log_bytes = 12,
        .next = next,
        .run_at = run_at,
    };
    int rc;
    txn(fx, STORE_BEGIN);
    int one;
    rc = ops->complete(fx->c, &c, 1, now, &one);
    if (rc == 0)
        rc = one;
    txn(fx, rc == 0 ? STORE_COMMIT : STORE_ROLLBACK);
    return rc;
}

static struct job *
get(struct fx *fx, int64_t id)
{
    struct job *j = NULL;
    assert_int_equal(ops->get(fx->c, admin, id, &j), 0);
    return j;
}

static enum job_state
state_of(struct fx *fx, int64_t id)
{
    struct job *j = get(fx, id);
    enum job_state s = j->state;
    job_free(j);
    return s;
}

static void
verify(struct fx *fx)
{
    char why[512] = "";
    int rc = ops->verify(fx->c, why, sizeof(why));
    if (rc != 0)
        fail_msg("verify: %s", why);
}

static void
stats(struct fx *fx, struct store_who who, struct store_stats *st)
{
    assert_int_equal(ops->stats(fx->c, who, st), 0);
}

static void
stats_release(struct store_stats *st)
{
    for (int i = 0; i < st->nqueues; i++)
        free(st->queues[i].name);
    free(st->queues);
}

/* Reads a whole file; returns owned bytes and sets *len. */
static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int
sql_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int v = -1;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static void
sql_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    char *err = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
                     SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", sql, err);
    sqlite3_close(db);
}

/* ---- schema, migrations, integrity at open ----------------------------- */

static void
test_open_creates_latest_schema_with_app_id(void **state)
{
    struct fx *fx = *state;
    fx_close(fx);
    assert_int_equal(sql_int(fx->path, "PRAGMA user_version"), store_sqlite_schema_version());
    assert_int_equal(sql_int(fx->path, "PRAGMA application_id"), STORE_SQLITE_APP_ID);
    fx_open(fx);
}

static void
test_open_sets_wal_and_pragmas(void **state)
{
    struct fx *fx = *state;
    submit(fx, &(struct job_spec){.command = argv_true, .max_attempts = 1, .uid = 1, .gid = 1});
    assert_int_equal(sql_int(fx->path, "PRAGMA journal_mode = WAL") >= 0, 1);
    sqlite3 *db;
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    sqlite3_close(db);
}

static void
test_empty_file_gets_latest_schema(void **state)
{
    struct fx *fx = *state;
    int fd = open(fx->path, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    fx_open(fx);
    fx_close(fx);
    assert_int_equal(sql_int(fx->path, "PRAGMA user_version"), store_sqlite_schema_version());
}

static void
test_newer_schema_version_is_refused_unmodified(void **state)
{
    struct fx *fx = *state;
    char why[256] = "", pragma[64];
    size_t n1, n2;
    fx_open(fx);
    fx_close(fx);
    snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", store_sqlite_schema_version() + 1);
    sql_exec(fx->path, pragma);
    char *before = slurp(fx->path, &n1);
    assert_int_equal(ops->open(&fx->opts, STORE_WRITER, &fx->c, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "newer"));
    print_message("FIGURE refused: %s\n", why);
    char *after = slurp(fx->path, &n2);
    assert_true(n1 == n2 && memcmp(before, after, n1) == 0);
    free(before);
    free(after);
}

/* The schema as sqlite_schema records it, one line per object. */
static char *
schema_dump(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(1, cap);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT type, name, tbl_name, coalesce(sql, '') FROM "
                                        "sqlite_schema ORDER BY type, name",
                                        -1, &s, NULL),
                     SQLITE_OK);
    while (sqlite3_step(s) == SQLITE_ROW) {
        len += (size_t)snprintf(out + len, cap - len, "%s|%s|%s|%s\n", sqlite3_column_text(s, 0),
                                sqlite3_column_text(s, 1), sqlite3_column_text(s, 2),
                                sqlite3_column_text(s, 3));
        assert_true(len < cap);
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
}

/* Every earlier version, built with the migrations up to it, migrates to
 * exactly the schema a new database gets. */
static void
test_migrations_from_every_version_reach_fresh_schema(void **state)
{
    struct fx *fx = *state;
    char fresh_path[160], why[256];
    int latest = store_sqlite_schema_version();
    snprintf(fresh_path, sizeof(fresh_path), "%s/fresh.db", fx->dir);
    struct store_opts o = fx->opts;
    o.path = fresh_path;
    struct store_conn *c;
    assert_int_equal(ops->open(&o, STORE_WRITER, &c, why, sizeof(why)), 0);
    ops->close(c);
    char *fresh = schema_dump(fresh_path);
    for (int v = 0; v < latest; v++) {
        sqlite3 *db;
        unlink(fx->path);
        assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
        assert_int_equal(store_sqlite_migrate(db, v, why, sizeof(why)), 0);
        sqlite3_close(db);
        assert_int_equal(sql_int(fx->path, "PRAGMA user_version"), v);
        fx_open(fx);
        fx_close(fx);
        assert_int_equal(sql_int(fx->path, "PRAGMA user_version"), latest);
        char *migrated = schema_dump(fx->path);
        assert_string_equal(migrated, fresh);
        free(migrated);
        print_message("FIGURE migrated version %d -> %d\n", v, latest);
    }
    free(fresh);
}

static void
expect_refused_unmodified(struct fx *fx, const char *needle)
{
    char why[512] = "";
    size_t n1, n2;
    char *before = slurp(fx->path, &n1);
    struct store_conn *c = NULL;
    int rc = ops->open(&fx->opts, STORE_WRITER, &c, why, sizeof(why));
    if (rc == 0) {
        ops->close(c);
        fail_msg("a damaged or foreign database was accepted");
    }
    assert_true(rc == -EINVAL || rc == -EIO);
    if (strstr(why, needle) == NULL)
        fail_msg("reason \"%s\" does not say \"%s\"", why, needle);
    print_message("FIGURE refused: %s\n", why);
    char *after = slurp(fx->path, &n2);
    assert_true(n1 == n2 && memcmp(before, after, n1) == 0);
    free(before);
    free(after);
    /* Nothing was created beside it either. */
    char side[192];
    snprintf(side, sizeof(side), "%s-wal", fx->path);
    assert_int_equal(access(side, F_OK), -1);
}

/* A database with a few hundred jobs, closed (WAL checkpointed away). */
static void
populate_and_close(struct fx *fx, int n)
{
    char name[32];
    fx_open(fx);
    txn(fx, STORE_BEGIN);
    for (int i = 0; i < n; i++) {
        struct job_spec sp = spec_q("default", i % 7);
        int64_t id;
        bool ex;
        snprintf(name, sizeof(name), "job-%d", i);
        sp.name = name;
        assert_int_equal(ops->submit(fx->c, &sp, 1, T0, &id, &ex), 0);
    }
    txn(fx, STORE_COMMIT);
    fx_close(fx);
}

static void
test_foreign_database_is_refused_unmodified(void **state)
{
    struct fx *fx = *state;
    sql_exec(fx->path, "PRAGMA application_id = 1234; CREATE TABLE t (x); INSERT INTO t "
                       "VALUES (1)");
    expect_refused_unmodified(fx, "not a jobq database");
}

static void
test_unmarked_database_with_tables_is_refused(void **state)
{
    struct fx *fx = *state;
    sql_exec(fx->path, "CREATE TABLE mine (x); INSERT INTO mine VALUES (42)");
    expect_refused_unmodified(fx, "not a jobq database");
}

static void
test_non_sqlite_file_is_refused_unmodified(void **state)
{
    struct fx *fx = *state;
    FILE *f = fopen(fx->path, "w");
    fputs("#!/bin/sh\necho this is a script, not a database\n", f);
    fclose(f);
    expect_refused_unmodified(fx, "not an SQLite database");
}

static void
test_truncated_database_is_refused_unmodified(void **state)
{
    struct fx *fx = *state;
    struct stat sb;
    populate_and_close(fx, 3000);
    assert_int_equal(stat(fx->path, &sb), 0);
    assert_int_equal(truncate(fx->path, sb.st_size / 2), 0);
    expect_refused_unmodified(fx, "damaged");
}

static void
test_scribbled_database_is_refused_unmodified(void **state)
{
    struct fx *fx = *state;
    struct stat sb;
    populate_and_close(fx, 3000);
    assert_int_equal(stat(fx->path, &sb), 0);
    /* Garbage over whole pages in the middle of the file, as a bad disk
     * or a stray write would leave it. */
    int fd = open(fx->path, O_WRONLY);
    char junk[4096];
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < sizeof(junk); i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        junk[i] = (char)x;
    }
    for (off_t off = 4096 * 2; off < sb.st_size / 2; off += 4096 * 3)
        assert_int_equal(pwrite(fd, junk, sizeof(junk), off), (ssize_t)sizeof(junk));
    close(fd);
    expect_refused_unmodified(fx, "damaged");
}

static void
test_scribbled_header_is_refused_unmodified(void **state)
{
    struct fx *fx = *state;
    populate_and_close(fx, 10);
    int fd = open(fx->path, O_WRONLY);
    assert_int_equal(pwrite(fd, "XXXXXXXX", 8, 0), 8);
    close(fd);
    expect_refused_unmodified(fx, "not an SQLite database");
}

/* ---- submit, get, unique ----------------------------------------------- */

static void
test_submit_round_trips_every_field(void **state)
{
    struct fx *fx = *state;
    char *cmd[] = {"/bin/sh",  "-c", "echo \"$X\" \\ done\n\ttab", "h\xc3\xa9 \xf0\x9f\x98\x80",
                   "\x01\x1f", NULL};
    char *env[] = {"X=1", "Y=a b", NULL};
    struct job_spec sp = spec_q("mail", 7);
    sp.command = cmd;
    sp.env = env;
    sp.name = "nightly";
    sp.cwd = "/srv";
    sp.unique_key = "k1";
    sp.timeout_ms = 5000;
    sp.deadline = T0 + 3600000;
    sp.uid = 1234;
    sp.gid = 99;
    int64_t id = submit(fx, &sp);
    struct job *j = get(fx, id);
    assert_int_equal(j->id, id);
    for (int i = 0; cmd[i]; i++)
        assert_string_equal(j->spec.command[i], cmd[i]);
    assert_null(j->spec.command[5]);
    assert_string_equal(j->spec.env[0], "X=1");
    assert_string_equal(j->spec.env[1], "Y=a b");
    assert_null(j->spec.env[2]);
    assert_string_equal(j->spec.queue, "mail");
    assert_string_equal(j->spec.name, "nightly");
    assert_string_equal(j->spec.cwd, "/srv");
    assert_string_equal(j->spec.unique_key, "k1");
    assert_int_equal(j->spec.priority, 7);
    assert_int_equal(j->spec.max_attempts, 3);
    assert_int_equal(j->spec.backoff_base_ms, 1000);
    assert_int_equal(j->spec.backoff_max_ms, 60000);
    assert_int_equal(j->spec.timeout_ms, 5000);
    assert_int_equal(j->spec.deadline, T0 + 3600000);
    assert_int_equal(j->spec.run_at, T0);
    assert_int_equal(j->spec.uid, 1234);
    assert_int_equal(j->spec.gid, 99);
    assert_int_equal(j->state, JOB_QUEUED);
    assert_int_equal(j->attempt, 0);
    assert_int_equal(j->created_at, T0);
    assert_int_equal(j->started_at, 0);
    assert_int_equal(j->finished_at, 0);
    assert_int_equal(j->outcome, OUTCOME_NONE);
    assert_int_equal(j->exit_code, -1);
    assert_null(j->error);
    assert_int_equal(j->nattempts, 0);
    job_free(j);
    verify(fx);
}

static void
test_submit_defaults_queue_and_null_env(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q(NULL, 0);
    int64_t id = submit(fx, &sp);
    struct job *j = get(fx, id);
    assert_string_equal(j->spec.queue, "default");
    assert_null(j->spec.env);
    assert_null(j->spec.name);
    job_free(j);
}

static void
test_submit_ids_increase_and_are_never_reused(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    int64_t a = submit(fx, &sp), b = submit(fx, &sp);
    assert_true(b > a);
    /* Finish and purge the newest: its id must not come back. */
    struct job *j[1];
    assert_int_equal(claim(fx, T0, 1, j), 1);
    job_free(j[0]);
    assert_int_equal(claim(fx, T0, 1, j), 1);
    assert_int_equal(complete(fx, j[0]->id, 1, OUTCOME_SUCCEEDED, JOB_SUCCEEDED, T0, 0), 0);
    job_free(j[0]);
    int64_t ids[4];
    int n;
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->purge(fx->c, admin, T0 + 1, 0, 10, ids, &n), 0);
    txn(fx, STORE_COMMIT);
    assert_int_equal(n, 1);
    assert_true(submit(fx, &sp) > b);
}

static void
test_future_run_at_is_scheduled(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    sp.run_at = T0 + 60000;
    int64_t id = submit(fx, &sp);
    assert_int_equal(state_of(fx, id), JOB_SCHEDULED);
    struct job *j[4];
    assert_int_equal(claim(fx, T0 + 59999, 4, j), 0);
    assert_int_equal(claim(fx, T0 + 60000, 4, j), 1);
    assert_int_equal(j[0]->id, id);
    free_jobs(j, 1);
    verify(fx);
}

static void
test_unique_key_returns_existing_job(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    sp.unique_key = "nightly-2025-10-09";
    int64_t id = submit(fx, &sp), again;
    bool existed = false;
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->submit(fx->c, &sp, 1, T0 + 5, &again, &existed), 0);
    txn(fx, STORE_COMMIT);
    assert_true(existed);
    assert_int_equal(again, id);
    /* Another uid has its own key space. */
    sp.uid = 2000;
    int64_t other = submit(fx, &sp);
    assert_int_not_equal(other, id);
    struct store_stats st;
    stats(fx, admin, &st);
    assert_int_equal(st.count[JOB_QUEUED], 2);
    stats_release(&st);
}

static void
test_unique_key_twice_in_one_transaction_creates_one_job(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    int64_t a, b;
    bool ea, eb;
    sp.unique_key = "dup";
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->submit(fx->c, &sp, 1, T0, &a, &ea), 0);
    assert_int_equal(ops->submit(fx->c, &sp, 1, T0, &b, &eb), 0);
    txn(fx, STORE_COMMIT);
    assert_false(ea);
    assert_true(eb);
    assert_int_equal(a, b);
}

/* ---- claim ------------------------------------------------------------- */

static void
test_claim_follows_priority_then_run_at_then_id(void **state)
{
    struct fx *fx = *state;
    struct job_spec lo = spec_q("q", 1), hi = spec_q("q", 10), mid = spec_q("q", 5);
    int64_t l1 = submit_at(fx, &lo, T0), h1 = submit_at(fx, &hi, T0 + 2);
    int64_t m1 = submit_at(fx, &mid, T0), h0 = submit_at(fx, &hi, T0 + 1);
    int64_t m2 = submit_at(fx, &mid, T0);
    struct job *j[8];
    assert_int_equal(claim(fx, T0 + 10, 8, j), 5);
    int64_t want[] = {h0, h1, m1, m2, l1};
    for (int i = 0; i < 5; i++)
        assert_int_equal(j[i]->id, want[i]);
    free_jobs(j, 5);
}

static void
test_claim_merges_queues_in_priority_order(void **state)
{
    struct fx *fx = *state;
    struct job_spec a = spec_q("a", 1), b = spec_q("b", 9), c = spec_q("c", 5);
    int64_t ia = submit(fx, &a), ib = submit(fx, &b), ic = submit(fx, &c);
    struct job *j[2];
    assert_int_equal(claim(fx, T0, 2, j), 2);
    assert_int_equal(j[0]->id, ib);
    assert_int_equal(j[1]->id, ic);
    free_jobs(j, 2);
    assert_int_equal(claim(fx, T0, 2, j), 1);
    assert_int_equal(j[0]->id, ia);
    free_jobs(j, 1);
}

static void
test_claim_marks_running_and_records_attempt(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    int64_t id = submit(fx, &sp);
    struct job *j[1];
    assert_int_equal(claim(fx, T0 + 100, 1, j), 1);
    assert_int_equal(j[0]->state, JOB_RUNNING);
    assert_int_equal(j[0]->attempt, 1);
    assert_int_equal(j[0]->started_at, T0 + 100);
    assert_string_equal(j[0]->spec.command[0], "/bin/true");
    job_free(j[0]);
    struct job *g = get(fx, id);
    assert_int_equal(g->nattempts, 1);
    assert_int_equal(g->attempts[0].attempt, 1);
    assert_int_equal(g->attempts[0].started_at, T0 + 100);
    assert_int_equal(g->attempts[0].finished_at, 0);
    assert_int_equal(g->attempts[0].outcome, OUTCOME_NONE);
    assert_string_equal(g->attempts[0].boot_id, "boot-a");
    job_free(g);
    verify(fx);
}

static void
test_claim_skips_paused_queue(void **state)
{
    struct fx *fx = *state;
    struct job_spec p = spec_q("paused", 100), o = spec_q("open", 0);
    int64_t ip = submit(fx, &p), io = submit(fx, &o);
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->queue_set(fx->c, "paused", 1, -1), 0);
    txn(fx, STORE_COMMIT);
    struct job *j[4];
    assert_int_equal(claim(fx, T0, 4, j), 1);
    assert_int_equal(j[0]->id, io);
    free_jobs(j, 1);
    assert_int_equal(claim(fx, T0, 4, j), 0);
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->queue_set(fx->c, "paused", 0, -1), 0);
    txn(fx, STORE_COMMIT);
    assert_int_equal(claim(fx, T0, 4, j), 1);
    assert_int_equal(j[0]->id, ip);
    free_jobs(j, 1);
}

static void
test_pausing_unknown_queue_creates_it(void **state)
{
    struct fx *fx = *state;
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->queue_set(fx->c, "later", 1, -1), 0);
    txn(fx, STORE_COMMIT);
    struct store_stats st;
    stats(fx, admin, &st);
    assert_int_equal(st.nqueues, 1);
    assert_string_equal(st.queues[0].name, "later");
    assert_true(st.queues[0].paused);
    stats_release(&st);
    struct job_spec sp = spec_q("later", 0);
    submit(fx, &sp);
    struct job *j[1];
    assert_int_equal(claim(fx, T0, 1, j), 0);
}

static void
test_claim_honours_queue_concurrency_limit(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("narrow", 0), w = spec_q("wide", 0);
    for (int i = 0; i < 5; i++)
        submit(fx, &sp);
    submit(fx, &w);
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->queue_set(fx->c, "narrow", -1, 2), 0);
    txn(fx, STORE_COMMIT);
    struct job *j[10];
    int n = claim(fx, T0, 10, j);
    assert_int_equal(n, 3); /* 2 narrow + 1 wide */
    int narrow = 0;
    for (int i = 0; i < n; i++)
        narrow += strcmp(j[i]->spec.queue, "narrow") == 0;
    assert_int_equal(narrow, 2);
    /* Full: nothing more until one finishes. */
    struct job *k[10];
    assert_int_equal(claim(fx, T0, 10, k), 0);
    for (int i = 0; i < n; i++) {
        if (strcmp(j[i]->spec.queue, "narrow") == 0) {
            assert_int_equal(complete(fx, j[i]->id, 1, OUTCOME_SUCCEEDED, JOB_SUCCEEDED, T0 + 1, 0),
                             0);
            break;
        }
    }
    assert_int_equal(claim(fx, T0 + 2, 10, k), 1);
    assert_string_equal(k[0]->spec.queue, "narrow");
    free_jobs(k, 1);
    free_jobs(j, n);
    verify(fx);
}

static void
test_claim_promotes_due_retrying_job(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    int64_t id = submit(fx, &sp);
    struct job *j[1];
    assert_int_equal(claim(fx, T0, 1, j), 1);
    job_free(j[0]);
    assert_int_equal(complete(fx, id, 1, OUTCOME_EXITED, JOB_RETRYING, T0 + 10, T0 + 5000), 0);
    assert_int_equal(state_of(fx, id), JOB_RETRYING);
    int64_t due = 0;
    assert_int_equal(ops->next_due(fx->c, &due), 0);
    assert_int_equal(due, T0 + 5000);
    assert_int_equal(claim(fx, T0 + 4999, 1, j), 0);
    assert_int_equal(claim(fx, T0 + 5000, 1, j), 1);
    assert_int_equal(j[0]->attempt, 2);
    job_free(j[0]);
    assert_int_equal(ops->next_due(fx->c, &due), 0);
    assert_int_equal(due, 0);
    verify(fx);
}

static void
test_claim_fails_job_whose_deadline_passed(void **state)
{
    struct fx *fx = *state;
    struct job_spec late = spec_q("q", 5), ok = spec_q("q", 0);
    late.deadline = T0 + 1000;
    int64_t il = submit(fx, &late), io = submit(fx, &ok);
    struct job *j[2];
    assert_int_equal(claim(fx, T0 + 1000, 2, j), 1);
    assert_int_equal(j[0]->id, io);
    free_jobs(j, 1);
    struct job *g = get(fx, il);
    assert_int_equal(g->state, JOB_FAILED);
    assert_int_equal(g->outcome, OUTCOME_DEADLINE);
    assert_int_equal(g->nattempts, 0);
    assert_non_null(g->error);
    job_free(g);
    verify(fx);
}

static void
test_claim_of_zero_or_nothing_ready_is_empty(void **state)
{
    struct fx *fx = *state;
    struct job *j[1];
    assert_int_equal(claim(fx, T0, 1, j), 0);
    struct job_spec sp = spec_q("q", 0);
    submit(fx, &sp);
    assert_int_equal(claim(fx, T0, 0, j), 0);
}

/* ---- pgid, complete ---------------------------------------------------- */

static int64_t
submit_and_claim(struct fx *fx, int32_t *attempt)
{
    struct job_spec sp = spec_q("q", 0);
    struct job *j[1];
    int64_t id = submit(fx, &sp);
    assert_int_equal(claim(fx, T0, 1, j), 1);
    assert_int_equal(j[0]->id, id);
    *attempt = j[0]->attempt;
    job_free(j[0]);
    return id;
}

static void
test_set_pgid_of_open_attempt(void **state)
{
    struct fx *fx = *state;
    int32_t a;
    int64_t id = submit_and_claim(fx, &a);
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->set_pgid(fx->c, id, a, 4242), 0);
    assert_int_equal(ops->set_pgid(fx->c, id, a + 1, 1), -ESTALE);
    txn(fx, STORE_COMMIT);
    struct job *g = get(fx, id);
    assert_int_equal(g->attempts[0].pgid, 4242);
    job_free(g);
}

static void
test_complete_succeeded_is_terminal(void **state)
{
    struct fx *fx = *state;
    int32_t a;
    int64_t id = submit_and_claim(fx, &a);
    assert_int_equal(complete(fx, id, a, OUTCOME_SUCCEEDED, JOB_SUCCEEDED, T0 + 50, 0), 0);
    struct job *g = get(fx, id);
    assert_int_equal(g->state, JOB_SUCCEEDED);
    assert_int_equal(g->finished_at, T0 + 50);
    assert_int_equal(g->outcome, OUTCOME_SUCCEEDED);
    assert_int_equal(g->exit_code, 0);
    assert_int_equal(g->attempts[0].finished_at, T0 + 50);
    assert_int_equal(g->attempts[0].outcome, OUTCOME_SUCCEEDED);
    assert_int_equal(g->attempts[0].log_bytes, 12);
    job_free(g);
    verify(fx);
}

static void
test_stale_completion_is_refused_and_changes_nothing(void **state)
{
    struct fx *fx = *state;
    int32_t a;
    int64_t id = submit_and_claim(fx, &a);
    /* Wrong attempt number. */
    assert_int_equal(complete(fx, id, a + 1, OUTCOME_SUCCEEDED, JOB_SUCCEEDED, T0 + 5, 0), -ESTALE);
    /* Unknown job. */
    assert_int_equal(complete(fx, id + 100, 1, OUTCOME_SUCCEEDED, JOB_SUCCEEDED, T0 + 5, 0),
                     -ESTALE);
    assert_int_equal(state_of(fx, id), JOB_RUNNING);
    assert_int_equal(complete(fx, id, a, OUTCOME_EXITED, JOB_FAILED, T0 + 6, 0), 0);
    /* The same completion again (a duplicate from a restarted executor). */
    struct job *before = get(fx, id);
    assert_int_equal(complete(fx, id, a, OUTCOME_SUCCEEDED, JOB_SUCCEEDED, T0 + 7, 0), -ESTALE);
    struct job *after = get(fx, id);
    assert_int_equal(after->state, JOB_FAILED);
    assert_int_equal(after->updated_at, before->updated_at);
    assert_int_equal(after->attempts[0].finished_at, T0 + 6);
    assert_int_equal(after->attempts[0].outcome, OUTCOME_EXITED);
    job_free(before);
    job_free(after);
    verify(fx);
}

static void
test_complete_rejects_bad_next_state(void **state)
{
    struct fx *fx = *state;
    int32_t a;
    int64_t id = submit_and_claim(fx, &a);
    assert_int_equal(complete(fx, id, a, OUTCOME_SUCCEEDED, JOB_RUNNING, T0, 0), -EINVAL);
    assert_int_equal(complete(fx, id, a, OUTCOME_NONE, JOB_SUCCEEDED, T0, 0), -EINVAL);
    assert_int_equal(state_of(fx, id), JOB_RUNNING);
}

static void
test_interrupted_completion_keeps_budget(void **state)
{
    struct fx *fx = *state;
    int32_t a;
    int64_t id = submit_and_claim(fx, &a);
    assert_int_equal(complete(fx, id, a, OUTCOME_INTERRUPTED, JOB_QUEUED, T0 + 1, 0), 0);
    struct job *g = get(fx, id);
    assert_int_equal(g->state, JOB_QUEUED);
    assert_int_equal(g->attempt, 1);
    assert_int_equal(g->interrupted, 1);
    job_free(g);
}

/* ---- cancel, retry, access --------------------------------------------- */

static int
cancel(struct fx *fx, struct store_who who, int64_t id, bool *was_running, int32_t *attempt)
{
    int rc;
    txn(fx, STORE_BEGIN);
    rc = ops->cancel(fx->c, who, id, T0 + 20, was_running, attempt);
    txn(fx, rc == 0 ? STORE_COMMIT : STORE_ROLLBACK);
    return rc;
}

static int
retry(struct fx *fx, struct store_who who, int64_t id, int64_t now)
{
    int rc;
    txn(fx, STORE_BEGIN);
    rc = ops->retry(fx->c, who, id, now);
    txn(fx, rc == 0 ? STORE_COMMIT : STORE_ROLLBACK);
    return rc;
}

static void
test_cancel_queued_job_never_runs(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    int64_t id = submit(fx, &sp);
    bool running = true;
    int32_t a = -1;
    assert_int_equal(cancel(fx, admin, id, &running, &a), 0);
    assert_false(running);
    assert_int_equal(a, 0);
    struct job *j[1];
    assert_int_equal(claim(fx, T0 + 30, 1, j), 0);
    struct job *g = get(fx, id);
    assert_int_equal(g->state, JOB_CANCELED);
    assert_int_equal(g->finished_at, T0 + 20);
    job_free(g);
    /* Twice is fine; a finished job is a conflict. */
    assert_int_equal(cancel(fx, admin, id, &running, &a), 0);
    verify(fx);
}

static void
test_cancel_running_job_keeps_attempt_open_until_completed(void **state)
{
    struct fx *fx = *state;
    int32_t a, att = 0;
    bool running = false;
    int64_t id = submit_and_claim(fx, &a);
    assert_int_equal(cancel(fx, admin, id, &running, &att), 0);
    assert_true(running);
    assert_int_equal(att, a);
    assert_int_equal(state_of(fx, id), JOB_CANCELED);
    verify(fx);
    /* Retry must wait until the process is gone. */
    assert_int_equal(retry(fx, admin, id, T0 + 21), -EBUSY);
    /* The daemon's completion closes the attempt; the job stays canceled
     * whatever next state the dispatcher proposed. */
    assert_int_equal(complete(fx, id, a, OUTCOME_CANCELED, JOB_RETRYING, T0 + 25, T0 + 99), 0);
    struct job *g = get(fx, id);
    assert_int_equal(g->state, JOB_CANCELED);
    assert_int_equal(g->finished_at, T0 + 20);
    assert_int_equal(g->attempts[0].outcome, OUTCOME_CANCELED);
    assert_int_equal(g->attempts[0].finished_at, T0 + 25);
    job_free(g);
    assert_int_equal(retry(fx, admin, id, T0 + 30), 0);
    verify(fx);
}

static void
test_cancel_finished_job_is_conflict(void **state)
{
    struct fx *fx = *state;
    int32_t a;
    int64_t id = submit_and_claim(fx, &a);
    assert_int_equal(complete(fx, id, a, OUTCOME_SUCCEEDED, JOB_SUCCEEDED, T0 + 1, 0), 0);
    assert_int_equal(cancel(fx, admin, id, NULL, NULL), -EALREADY);
    assert_int_equal(cancel(fx, admin, id + 1, NULL, NULL), -ENOENT);
}

static void
test_retry_failed_job_keeps_history_and_gives_one_more_attempt(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    sp.max_attempts = 1;
    int64_t id = submit(fx, &sp);
    struct job *j[1];
    assert_int_equal(claim(fx, T0, 1, j), 1);
    job_free(j[0]);
    assert_int_equal(complete(fx, id, 1, OUTCOME_EXITED, JOB_FAILED, T0 + 1, 0), 0);
    assert_int_equal(retry(fx, admin, id, T0 + 2), 0);
    struct job *g = get(fx, id);
    assert_int_equal(g->state, JOB_QUEUED);
    assert_int_equal(g->finished_at, 0);
    assert_int_equal(g->spec.max_attempts, 2);
    assert_int_equal(g->nattempts, 1);
    job_free(g);
    assert_int_equal(claim(fx, T0 + 3, 1, j), 1);
    assert_int_equal(j[0]->attempt, 2);
    job_free(j[0]);
    verify(fx);
}

static void
test_retry_of_active_or_succeeded_job_is_conflict(void **state)
{
    struct fx *fx = *state;
    int32_t a;
    int64_t id = submit_and_claim(fx, &a);
    assert_int_equal(retry(fx, admin, id, T0), -EBUSY);
    assert_int_equal(complete(fx, id, a, OUTCOME_SUCCEEDED, JOB_SUCCEEDED, T0 + 1, 0), 0);
    assert_int_equal(retry(fx, admin, id, T0 + 2), -EBUSY);
    assert_int_equal(retry(fx, admin, id + 7, T0 + 2), -ENOENT);
}

static void
test_retry_after_deadline_is_conflict(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    sp.deadline = T0 + 100;
    int64_t id = submit(fx, &sp);
    assert_int_equal(cancel(fx, admin, id, NULL, NULL), 0);
    assert_int_equal(retry(fx, admin, id, T0 + 100), -EBUSY);
    assert_int_equal(retry(fx, admin, id, T0 + 99), 0);
}

static void
test_other_uid_sees_nothing_of_anothers_job(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    sp.uid = 1000;
    int64_t id = submit(fx, &sp);
    struct store_who owner = {.uid = 1000}, other = {.uid = 1001};
    struct job *g = NULL;
    assert_int_equal(ops->get(fx->c, other, id, &g), -ENOENT);
    assert_int_equal(ops->get(fx->c, owner, id, &g), 0);
    job_free(g);
    assert_int_equal(cancel(fx, other, id, NULL, NULL), -ENOENT);
    struct job **l = NULL;
    int n = -1;
    struct store_filter f = {0};
    assert_int_equal(ops->list(fx->c, other, &f, &l, &n), 0);
    assert_int_equal(n, 0);
    free(l);
    struct store_stats st;
    stats(fx, other, &st);
    assert_int_equal(st.count[JOB_QUEUED], 0);
    stats_release(&st);
    stats(fx, owner, &st);
    assert_int_equal(st.count[JOB_QUEUED], 1);
    stats_release(&st);
    assert_int_equal(cancel(fx, owner, id, NULL, NULL), 0);
    assert_int_equal(retry(fx, other, id, T0 + 30), -ENOENT);
    int64_t ids[4];
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->purge(fx->c, other, T0 + 100, 0, 4, ids, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ops->purge(fx->c, owner, T0 + 100, 0, 4, ids, &n), 0);
    assert_int_equal(n, 1);
    txn(fx, STORE_COMMIT);
}

/* ---- list, stats, pending, purge --------------------------------------- */

static void
test_list_pages_newest_first_with_keyset(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    int64_t ids[25];
    for (int i = 0; i < 25; i++)
        ids[i] = submit(fx, &sp);
    struct store_filter f = {.limit = 10};
    int64_t seen = 0, expect = 24;
    for (int page = 0; page < 3; page++) {
        struct job **l = NULL;
        int n = 0;
        assert_int_equal(ops->list(fx->c, admin, &f, &l, &n), 0);
        assert_int_equal(n, page < 2 ? 10 : 5);
        for (int i = 0; i < n; i++, expect--, seen++)
            assert_int_equal(l[i]->id, ids[expect]);
        f.before_id = l[n - 1]->id;
        for (int i = 0; i < n; i++)
            job_free(l[i]);
        free(l);
    }
    assert_int_equal(seen, 25);
}

static void
test_list_filters_by_states_and_queue(void **state)
{
    struct fx *fx = *state;
    struct job_spec a = spec_q("a", 0), b = spec_q("b", 0);
    int64_t a1 = submit(fx, &a), b1 = submit(fx, &b), a2 = submit(fx, &a);
    struct job *j[1];
    assert_int_equal(claim(fx, T0, 1, j), 1); /* a1 (oldest) runs */
    assert_int_equal(j[0]->id, a1);
    job_free(j[0]);
    struct store_filter f = {.states = 1u << JOB_QUEUED | 1u << JOB_RUNNING, .queue = "a"};
    struct job **l = NULL;
    int n = 0;
    assert_int_equal(ops->list(fx->c, admin, &f, &l, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(l[0]->id, a2);
    assert_int_equal(l[1]->id, a1);
    for (int i = 0; i < n; i++)
        job_free(l[i]);
    free(l);
    f = (struct store_filter){.states = 1u << JOB_QUEUED, .limit = 1};
    assert_int_equal(ops->list(fx->c, admin, &f, &l, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(l[0]->id, a2);
    job_free(l[0]);
    free(l);
    (void)b1;
}

static void
test_stats_come_from_counters(void **state)
{
    struct fx *fx = *state;
    struct job_spec a = spec_q("a", 0), b = spec_q("b", 0);
    for (int i = 0; i < 4; i++)
        submit(fx, &a);
    submit(fx, &b);
    struct job *j[2];
    assert_int_equal(claim(fx, T0, 2, j), 2);
    assert_int_equal(complete(fx, j[0]->id, 1, OUTCOME_SUCCEEDED, JOB_SUCCEEDED, T0 + 1, 0), 0);
    free_jobs(j, 2);
    struct store_stats st;
    stats(fx, admin, &st);
    assert_int_equal(st.count[JOB_QUEUED], 3);
    assert_int_equal(st.count[JOB_RUNNING], 1);
    assert_int_equal(st.count[JOB_SUCCEEDED], 1);
    assert_int_equal(st.nqueues, 2);
    int64_t total = 0;
    for (int q = 0; q < st.nqueues; q++)
        for (int s = 0; s < JOB_NSTATES; s++)
            total += st.queues[q].count[s];
    assert_int_equal(total, 5);
    assert_true(st.db_bytes > 0);
    stats_release(&st);
    int64_t pending = 0;
    assert_int_equal(ops->pending(fx->c, &pending), 0);
    assert_int_equal(pending, 3);
    verify(fx);
}

static void
test_hot_queries_use_their_index(void **state)
{
    /* Stats and the pending count read counters only (O(queues)); the
     * claim, promotion and timer queries walk their partial index from
     * its head and stop after LIMIT rows: never the jobs table, never a
     * sort. */
    struct fx *fx = *state;
    sqlite3 *db;
    sqlite3_stmt *s;
    const struct {
        const char *sql, *index;
    } q[] = {
        {"SELECT queue, state, sum(n) FROM counters WHERE ?1 IS NULL OR uid = ?1 GROUP BY "
         "queue, state",
         NULL},
        {"SELECT coalesce(sum(n), 0) FROM counters WHERE state IN (0, 1, 3)", NULL},
        {"SELECT id, priority, run_at, deadline FROM jobs INDEXED BY jobs_ready WHERE state = 1 "
         "AND queue = ?1 ORDER BY priority DESC, run_at, id LIMIT ?2",
         "jobs_ready"},
        {"SELECT coalesce((SELECT run_at FROM jobs INDEXED BY jobs_due WHERE state = 0 OR "
         "state = 3 ORDER BY run_at LIMIT 1), 0)",
         "jobs_due"},
        {"SELECT id, queue, uid, state FROM jobs INDEXED BY jobs_due WHERE (state = 0 OR "
         "state = 3) AND run_at <= ?1 ORDER BY run_at LIMIT ?2",
         "jobs_due"},
        {"SELECT id FROM jobs INDEXED BY jobs_finished WHERE state >= 4 AND finished_at < ?1 "
         "ORDER BY finished_at LIMIT ?3",
         "jobs_finished"},
    };
    fx_close(fx);
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
        char sql[1024];
        bool indexed = q[i].index == NULL;
        snprintf(sql, sizeof(sql), "EXPLAIN QUERY PLAN %s", q[i].sql);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
        while (sqlite3_step(s) == SQLITE_ROW) {
            const char *d = (const char *)sqlite3_column_text(s, 3);
            print_message("FIGURE plan %zu: %s\n", i, d);
            if (strstr(d, "jobs") != NULL && strstr(d, "INDEX") == NULL &&
                strstr(d, "PRIMARY KEY") == NULL)
                fail_msg("query %zu reads the jobs table without an index: %s", i, d);
            assert_null(strstr(d, "TEMP B-TREE"));
            if (q[i].index != NULL && strstr(d, q[i].index) != NULL)
                indexed = true;
        }
        sqlite3_finalize(s);
        assert_true(indexed);
    }
    sqlite3_close(db);
}

static void
test_purge_deletes_in_bounded_chunks(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    const int n = 2500;
    txn(fx, STORE_BEGIN);
    for (int i = 0; i < n; i++) {
        int64_t id;
        bool ex;
        assert_int_equal(ops->submit(fx->c, &sp, 1, T0, &id, &ex), 0);
    }
    txn(fx, STORE_COMMIT);
    /* Cancel all but one: canceled is terminal. */
    struct store_filter f = {.limit = JOBQ_STORE_LIST_MAX};
    struct job **l;
    int got;
    assert_int_equal(ops->list(fx->c, admin, &f, &l, &got), 0);
    txn(fx, STORE_BEGIN);
    for (int i = 1; i < got; i++)
        assert_int_equal(ops->cancel(fx->c, admin, l[i]->id, T0 + 1, NULL, NULL), 0);
    txn(fx, STORE_COMMIT);
    for (int i = 0; i < got; i++)
        job_free(l[i]);
    free(l);
    int64_t *ids = calloc(JOBQ_STORE_PURGE_CHUNK, sizeof(*ids)), total = 0;
    int chunks = 0, k;
    do {
        txn(fx, STORE_BEGIN);
        assert_int_equal(
            ops->purge(fx->c, admin, T0 + 2, 1u << JOB_CANCELED, JOBQ_STORE_PURGE_CHUNK, ids, &k),
            0);
        txn(fx, STORE_COMMIT);
        assert_true(k <= JOBQ_STORE_PURGE_CHUNK);
        total += k;
        chunks += k > 0;
    } while (k > 0);
    free(ids);
    print_message("FIGURE purge: %" PRId64 " jobs in %d chunks of at most %d\n", total, chunks,
                  JOBQ_STORE_PURGE_CHUNK);
    assert_int_equal(total, n - 1);
    assert_int_equal(chunks, 3);
    struct store_stats st;
    stats(fx, admin, &st);
    assert_int_equal(st.count[JOB_CANCELED], 0);
    assert_int_equal(st.count[JOB_QUEUED], 1);
    stats_release(&st);
    verify(fx);
}

static void
test_purge_respects_age_and_states(void **state)
{
    struct fx *fx = *state;
    int32_t a;
    int64_t old = submit_and_claim(fx, &a);
    assert_int_equal(complete(fx, old, a, OUTCOME_SUCCEEDED, JOB_SUCCEEDED, T0 + 10, 0), 0);
    int64_t young = submit_and_claim(fx, &a);
    assert_int_equal(complete(fx, young, a, OUTCOME_SUCCEEDED, JOB_SUCCEEDED, T0 + 1000, 0), 0);
    int64_t failed = submit_and_claim(fx, &a);
    assert_int_equal(complete(fx, failed, a, OUTCOME_EXITED, JOB_FAILED, T0 + 10, 0), 0);
    int64_t ids[8];
    int n;
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->purge(fx->c, admin, T0 + 500, 1u << JOB_SUCCEEDED, 8, ids, &n), 0);
    txn(fx, STORE_COMMIT);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], old);
    struct job *g = NULL;
    assert_int_equal(ops->get(fx->c, admin, old, &g), -ENOENT);
    job_free(get(fx, young));
    job_free(get(fx, failed));
    verify(fx);
}

/* ---- recovery ---------------------------------------------------------- */

static void
test_recovery_lists_then_marks_interrupted(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0), dl = spec_q("q", 0);
    dl.deadline = T0 + 500;
    int64_t id1 = submit(fx, &sp), id2 = submit(fx, &dl);
    struct job *j[2];
    assert_int_equal(claim(fx, T0, 2, j), 2);
    free_jobs(j, 2);
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->set_pgid(fx->c, id1, 1, 777), 0);
    txn(fx, STORE_COMMIT);
    fx_close(fx); /* the daemon "crashes" */
    fx_open(fx);
    struct store_running *r = NULL;
    size_t n = 0;
    assert_int_equal(ops->running(fx->c, &r, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(r[0].id, id1);
    assert_int_equal(r[0].attempt, 1);
    assert_int_equal(r[0].pgid, 777);
    assert_string_equal(r[0].boot_id, "boot-a");
    free(r);
    int64_t retrying = 0, failed = 0;
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->recover(fx->c, T0 + 1000, 42, &retrying, &failed), 0);
    txn(fx, STORE_COMMIT);
    assert_int_equal(retrying, 1);
    assert_int_equal(failed, 1);
    struct job *g = get(fx, id1);
    assert_int_equal(g->state, JOB_RETRYING);
    assert_int_equal(g->interrupted, 1);
    assert_true(g->spec.run_at >= T0 + 1000 && g->spec.run_at <= T0 + 2000);
    assert_int_equal(g->attempts[0].outcome, OUTCOME_INTERRUPTED);
    assert_int_equal(g->attempts[0].finished_at, T0 + 1000);
    job_free(g);
    g = get(fx, id2);
    assert_int_equal(g->state, JOB_FAILED);
    assert_int_equal(g->outcome, OUTCOME_INTERRUPTED);
    job_free(g);
    assert_int_equal(ops->running(fx->c, &r, &n), 0);
    assert_int_equal(n, 0);
    free(r);
    verify(fx);
}

static void
test_interrupted_attempt_does_not_use_up_budget(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    sp.max_attempts = 1;
    sp.backoff_base_ms = 0;
    sp.backoff_max_ms = 0;
    int64_t id = submit(fx, &sp);
    for (int round = 1; round <= 3; round++) {
        struct job *j[1];
        int64_t r, f;
        assert_int_equal(claim(fx, T0 + round * 10, 1, j), 1);
        assert_int_equal(j[0]->attempt, round);
        job_free(j[0]);
        txn(fx, STORE_BEGIN);
        assert_int_equal(ops->recover(fx->c, T0 + round * 10 + 1, 1, &r, &f), 0);
        txn(fx, STORE_COMMIT);
        assert_int_equal(r, 1);
    }
    struct job *g = get(fx, id);
    assert_int_equal(g->interrupted, 3);
    assert_int_equal(g->attempt - g->interrupted, 0);
    job_free(g);
}

/* ---- failure injection ------------------------------------------------- */

static void
test_commit_fault_rolls_back_everything(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    int64_t kept = submit(fx, &sp), lost;
    bool ex;
    fx->point = STORE_FAULT_COMMIT;
    fx->fail_at = 1;
    fx->err = -ENOSPC;
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->submit(fx->c, &sp, 1, T0, &lost, &ex), 0);
    assert_int_equal(ops->txn(fx->c, STORE_COMMIT), -ENOSPC);
    struct job *g = NULL;
    assert_int_equal(ops->get(fx->c, admin, lost, &g), -ENOENT);
    job_free(get(fx, kept));
    fx->fail_at = 0;
    assert_true(submit(fx, &sp) > kept);
    verify(fx);
}

static void
test_write_fault_fails_commit_with_storage_error(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    int64_t kept = submit(fx, &sp), lost;
    bool ex;
    /* Every write from now on fails as on a full disk. */
    fx->point = STORE_FAULT_WRITE;
    fx->fail_at = 1;
    fx->sticky = true;
    fx->err = -ENOSPC;
    txn(fx, STORE_BEGIN);
    int rc = ops->submit(fx->c, &sp, 1, T0, &lost, &ex);
    if (rc == 0)
        rc = ops->txn(fx->c, STORE_COMMIT);
    else
        ops->txn(fx->c, STORE_ROLLBACK);
    assert_int_equal(rc, -ENOSPC);
    /* Reads still work while writes fail. */
    job_free(get(fx, kept));
    struct job *g = NULL;
    assert_int_equal(ops->get(fx->c, admin, lost, &g), -ENOENT);
    /* Space returns: writes work again on the same connection. */
    fx->fail_at = 0;
    int64_t after = submit(fx, &sp);
    assert_true(after > kept);
    verify(fx);
}

static void
test_sync_fault_fails_commit_with_io_error(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    int64_t lost;
    bool ex;
    fx->point = STORE_FAULT_SYNC;
    fx->fail_at = 1;
    fx->err = -EIO;
    txn(fx, STORE_BEGIN);
    assert_int_equal(ops->submit(fx->c, &sp, 1, T0, &lost, &ex), 0);
    assert_int_equal(ops->txn(fx->c, STORE_COMMIT), -EIO);
    /* The backend remembers it; the policy (stop) is the front's. */
    assert_true(ops->sync_failed(fx->c));
    fx->fail_at = 0;
    submit(fx, &sp);
    verify(fx);
}

static void
test_verify_detects_counter_drift(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    submit(fx, &sp);
    verify(fx);
    fx_close(fx);
    sql_exec(fx->path, "UPDATE counters SET n = n + 1");
    fx_open(fx);
    char why[256] = "";
    assert_int_equal(ops->verify(fx->c, why, sizeof(why)), -EIO);
    assert_non_null(strstr(why, "counter"));
}

static void
test_savepoint_undoes_one_request_only(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    int64_t a, b;
    bool ex;
    txn(fx, STORE_BEGIN);
    txn(fx, STORE_SAVEPOINT);
    assert_int_equal(ops->submit(fx->c, &sp, 1, T0, &a, &ex), 0);
    txn(fx, STORE_RELEASE);
    txn(fx, STORE_SAVEPOINT);
    assert_int_equal(ops->submit(fx->c, &sp, 1, T0, &b, &ex), 0);
    txn(fx, STORE_ROLLBACK_TO);
    txn(fx, STORE_COMMIT);
    struct job *g = NULL;
    job_free(get(fx, a));
    assert_int_equal(ops->get(fx->c, admin, b, &g), -ENOENT);
    verify(fx);
}

static void
test_reader_sees_committed_writes(void **state)
{
    struct fx *fx = *state;
    struct store_conn *r;
    char why[128];
    struct job_spec sp = spec_q("q", 0);
    int64_t id = submit(fx, &sp);
    assert_int_equal(ops->open(&fx->opts, STORE_READER, &r, why, sizeof(why)), 0);
    struct job *g = NULL;
    assert_int_equal(ops->get(r, admin, id, &g), 0);
    job_free(g);
    /* A reader cannot write. */
    int64_t other;
    bool ex;
    assert_int_equal(ops->txn(r, STORE_BEGIN), 0);
    assert_int_equal(ops->submit(r, &sp, 1, T0, &other, &ex), -EROFS);
    assert_int_equal(ops->txn(r, STORE_ROLLBACK), 0);
    ops->close(r);
}

static void
test_wal_stays_bounded_with_open_reader(void **state)
{
    struct fx *fx = *state;
    struct store_conn *r;
    char why[128], wal[160];
    struct stat sb;
    struct job_spec sp = spec_q("q", 0);
    snprintf(wal, sizeof(wal), "%s-wal", fx->path);
    assert_int_equal(ops->open(&fx->opts, STORE_READER, &r, why, sizeof(why)), 0);
    off_t peak = 0;
    for (int round = 0; round < 20; round++) {
        txn(fx, STORE_BEGIN);
        for (int i = 0; i < 500; i++) {
            int64_t id;
            bool ex;
            assert_int_equal(ops->submit(fx->c, &sp, 1, T0, &id, &ex), 0);
        }
        txn(fx, STORE_COMMIT);
        /* The long-lived reader reads between writes. */
        struct store_stats st;
        assert_int_equal(ops->stats(r, admin, &st), 0);
        stats_release(&st);
        assert_int_equal(ops->maintain(fx->c), 0);
        assert_int_equal(stat(wal, &sb), 0);
        peak = sb.st_size > peak ? sb.st_size : peak;
    }
    print_message("FIGURE wal peak %lld bytes over 10000 jobs with a reader open\n",
                  (long long)peak);
    /* Each round restarts the WAL: it never holds more than ~one round. */
    assert_true(peak < 8 * 1024 * 1024);
    ops->close(r);
}

/* ---- the front: writer thread, group commit, read pool ----------------- */

static void
front_open(struct fx *fx)
{
    char why[256] = "";
    int rc = store_new(&fx->opts, &fx->st, why, sizeof(why));
    if (rc != 0)
        fail_msg("store_new: %s (%s)", strerror(-rc), why);
}

static int
setup_front(void **state)
{
    struct fx *fx = fx_new();
    front_open(fx);
    *state = fx;
    return 0;
}

static int64_t
front_submit(struct fx *fx, const struct job_spec *sp)
{
    char why[256] = "";
    int64_t id = 0;
    int rc = store_submit(fx->st, sp, &id, NULL, why, sizeof(why));
    if (rc != 0)
        fail_msg("store_submit: %s (%s)", strerror(-rc), why);
    return id;
}

static void
test_front_submit_claim_complete_get(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    int64_t id = front_submit(fx, &sp);
    struct job *j[4];
    int n;
    assert_int_equal(store_claim(fx->st, job_now_ms(), 4, j, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(j[0]->id, id);
    assert_string_equal(j[0]->attempt ? "ok" : "no", "ok");
    assert_int_equal(store_set_pgid(fx->st, id, 1, 4321), 0);
    struct store_completion c = {
        .id = id, .attempt = 1, .outcome = OUTCOME_SUCCEEDED, .next = JOB_SUCCEEDED};
    assert_int_equal(store_complete(fx->st, &c), 0);
    assert_int_equal(store_complete(fx->st, &c), -ESTALE);
    job_free(j[0]);
    struct job *g = NULL;
    assert_int_equal(store_get(fx->st, admin, id, &g), 0);
    assert_int_equal(g->state, JOB_SUCCEEDED);
    assert_int_equal(g->attempts[0].pgid, 4321);
    /* The real boot id of this machine was recorded. */
    assert_int_equal(strlen(g->attempts[0].boot_id), 36);
    job_free(g);
    char why[256] = "";
    assert_int_equal(store_verify(fx->st, why, sizeof(why)), 0);
}

/* Claims one job on the front and returns its id (attempt 1 open). */
static int64_t
front_claim_one(struct fx *fx)
{
    struct job_spec sp = spec_q("q", 0);
    int64_t id = front_submit(fx, &sp);
    struct job *j[2];
    int n;
    assert_int_equal(store_claim(fx->st, job_now_ms(), 2, j, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(j[0]->id, id);
    job_free(j[0]);
    return id;
}

static int32_t
front_pgid(struct fx *fx, int64_t id)
{
    struct job *g = NULL;
    int32_t pgid;
    assert_int_equal(store_get(fx->st, admin, id, &g), 0);
    assert_true(g->nattempts >= 1);
    pgid = g->attempts[0].pgid;
    job_free(g);
    return pgid;
}

/* Closes the front and opens it again with fx->opts as they are now. */
static void
front_reopen(struct fx *fx)
{
    store_free(fx->st);
    fx->st = NULL;
    front_open(fx);
}

static void
front_reopen_lazy(struct fx *fx, int lazy_ms)
{
    fx->opts.lazy_ms = lazy_ms;
    front_reopen(fx);
}

/* A lazy record costs no commit of its own: it rides in the next group,
 * ahead of what was queued after it (here the completion that closes its
 * attempt, which would make it stale if it came second). */
static void
test_front_lazy_pgid_rides_in_next_group(void **state)
{
    struct fx *fx = *state;
    struct store_stats a, b;
    int64_t id;

    front_reopen_lazy(fx, 600000); /* it can only ride, never go alone */
    id = front_claim_one(fx);
    assert_int_equal(store_stats(fx->st, admin, &a), 0);
    assert_int_equal(store_set_pgid_lazy(fx->st, id, 1, 4321), 0);
    struct store_completion c = {
        .id = id, .attempt = 1, .outcome = OUTCOME_SUCCEEDED, .next = JOB_SUCCEEDED};
    assert_int_equal(store_complete(fx->st, &c), 0);
    assert_int_equal(store_stats(fx->st, admin, &b), 0);
    assert_int_equal(b.commits, a.commits + 1);
    assert_int_equal(b.requests, a.requests + 2);
    assert_int_equal(b.lazy_failures, 0);
    stats_release(&a);
    stats_release(&b);
    assert_int_equal(front_pgid(fx, id), 4321);
}

/* With nothing else to ride in, it commits on its own once it has waited. */
static void
test_front_lazy_pgid_commits_alone(void **state)
{
    struct fx *fx = *state;
    int64_t id, deadline;

    front_reopen_lazy(fx, 20);
    id = front_claim_one(fx);
    assert_int_equal(store_set_pgid_lazy(fx->st, id, 1, 777), 0);
    deadline = job_now_ms() + 10000;
    while (front_pgid(fx, id) != 777 && job_now_ms() < deadline)
        usleep(5000);
    assert_int_equal(front_pgid(fx, id), 777);
    /* A stale record (the attempt is not open) is dropped, not a failure. */
    assert_int_equal(store_set_pgid_lazy(fx->st, id, 9, 1), 0);
    deadline = job_now_ms() + 10000;
    struct store_stats st;
    for (;;) {
        assert_int_equal(store_stats(fx->st, admin, &st), 0);
        uint64_t commits = st.commits;
        stats_release(&st);
        if (commits >= 4 || job_now_ms() >= deadline)
            break;
        usleep(5000);
    }
    assert_int_equal(store_stats(fx->st, admin, &st), 0);
    assert_true(st.commits >= 4); /* submit, claim, pgid, the stale one */
    assert_int_equal(st.lazy_failures, 0);
    stats_release(&st);
}

/* Closing the store commits what is still queued: nothing is dropped. */
static void
test_front_lazy_pgid_flushed_at_close(void **state)
{
    struct fx *fx = *state;
    int64_t id;

    front_reopen_lazy(fx, 600000);
    id = front_claim_one(fx);
    assert_int_equal(store_set_pgid_lazy(fx->st, id, 1, 555), 0);
    front_reopen_lazy(fx, 0);
    assert_int_equal(front_pgid(fx, id), 555);
}

/* A completion sent from another thread, timed. */
struct timed_complete {
    struct store *st;
    struct store_completion c;
    int rc;
    int64_t took_ms;
};

static void *
timed_complete_main(void *arg)
{
    struct timed_complete *t = arg;
    int64_t t0 = job_now_ms();
    t->rc = store_complete(t->st, &t->c);
    t->took_ms = job_now_ms() - t0;
    return NULL;
}

static uint64_t
front_commits(struct fx *fx)
{
    struct store_stats st;
    uint64_t n;
    assert_int_equal(store_stats(fx->st, admin, &st), 0);
    n = st.commits;
    stats_release(&st);
    return n;
}

static void
front_reopen_linger(struct fx *fx, int linger_us)
{
    fx->opts.linger_us = linger_us;
    front_reopen(fx);
}

/* Attempt 1 of id succeeded. */
static struct store_completion
done_ok(int64_t id, bool patient)
{
    return (struct store_completion){.id = id,
                                     .attempt = 1,
                                     .outcome = OUTCOME_SUCCEEDED,
                                     .next = JOB_SUCCEEDED,
                                     .patient = patient};
}

/* Two patient completions 50 ms apart, right after a durable commit: the
 * first waits for the second and both share one commit. */
static void
test_front_patient_completions_share_a_commit(void **state)
{
    struct fx *fx = *state;
    struct timed_complete t = {0};
    pthread_t th;
    int64_t a, b;
    uint64_t c0;

    front_reopen_linger(fx, 500000); /* 0.5 s: the group commits when it ends */
    a = front_claim_one(fx);
    b = front_claim_one(fx); /* its submit is the last durable commit */
    c0 = front_commits(fx);
    t.st = fx->st;
    t.c = done_ok(a, true);
    assert_int_equal(pthread_create(&th, NULL, timed_complete_main, &t), 0);
    usleep(50000);
    struct store_completion cb = done_ok(b, true);
    assert_int_equal(store_complete(fx->st, &cb), 0);
    pthread_join(th, NULL);
    assert_int_equal(t.rc, 0);
    assert_true(t.took_ms >= 40); /* it waited for the second */
    assert_int_equal(front_commits(fx), c0 + 1);
}

/* An impatient write (a submit) ends the wait of a lingering group at once
 * and rides in it. */
static void
test_front_impatient_write_ends_the_linger(void **state)
{
    struct fx *fx = *state;
    struct timed_complete t = {0};
    struct job_spec sp = spec_q("q", 0);
    pthread_t th;
    uint64_t c0;
    int64_t a, t0;

    front_reopen_linger(fx, 60000000); /* a minute: only the submit can end it */
    a = front_claim_one(fx);
    front_submit(fx, &sp); /* a durable commit just now */
    c0 = front_commits(fx);
    t.st = fx->st;
    t.c = done_ok(a, true);
    assert_int_equal(pthread_create(&th, NULL, timed_complete_main, &t), 0);
    usleep(50000);
    t0 = job_now_ms();
    front_submit(fx, &sp);
    assert_true(job_now_ms() - t0 < 30000);
    pthread_join(th, NULL);
    assert_int_equal(t.rc, 0);
    assert_true(t.took_ms < 30000);
    assert_int_equal(front_commits(fx), c0 + 1);
}

/* Lingering needs a recent fsync: a patient completion long after the
 * last durable commit, or an impatient one, commits at once. */
static void
test_front_no_linger_when_idle_or_impatient(void **state)
{
    struct fx *fx = *state;
    struct timed_complete t = {0};
    int64_t a, b;

    front_reopen_linger(fx, 1000000); /* 1 s */
    a = front_claim_one(fx);
    b = front_claim_one(fx);
    /* Impatient, right after a durable commit: no wait. */
    t.st = fx->st;
    t.c = done_ok(a, false);
    timed_complete_main(&t);
    assert_int_equal(t.rc, 0);
    assert_true(t.took_ms < 900);
    /* Patient, but the last fsync is older than the linger: no wait. */
    usleep(1500000);
    t.c = done_ok(b, true);
    timed_complete_main(&t);
    assert_int_equal(t.rc, 0);
    assert_true(t.took_ms < 900);
}

/* A submit from another thread, timed. */
struct timed_submit {
    struct store *st;
    struct job_spec sp;
    int rc;
    int64_t took_ms;
};

static void *
timed_submit_main(void *arg)
{
    struct timed_submit *t = arg;
    char why[128];
    int64_t id, t0 = job_now_ms();
    t->rc = store_submit(t->st, &t->sp, &id, NULL, why, sizeof(why));
    t->took_ms = job_now_ms() - t0;
    return NULL;
}

/* The gather window holds a group open for the requesters of the last
 * one. Once they are all back, the group commits at once: it does not
 * wait out the window for a request nobody is going to send. */
static void
test_front_gathered_group_commits_once_complete(void **state)
{
    struct fx *fx = *state;
    struct timed_submit t[4];
    pthread_t th[4];
    uint64_t c0;

    fx->opts.gather_us = 60000000; /* a minute */
    front_reopen(fx);
    for (int i = 0; i < 4; i++)
        t[i] = (struct timed_submit){.st = fx->st, .sp = spec_q("q", 0)};
    /* A group of two: both queue up while the first commit is slow. */
    fx->commits_seen = 0;
    fx->slow_commit = 1;
    fx->slow_ms = 300;
    assert_int_equal(pthread_create(&th[0], NULL, timed_submit_main, &t[0]), 0);
    usleep(50000);
    assert_int_equal(pthread_create(&th[1], NULL, timed_submit_main, &t[1]), 0);
    assert_int_equal(pthread_create(&th[2], NULL, timed_submit_main, &t[2]), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    fx->slow_commit = 0;
    c0 = front_commits(fx);
    /* The next group starts with one request and gathers the second. */
    assert_int_equal(pthread_create(&th[3], NULL, timed_submit_main, &t[3]), 0);
    usleep(50000);
    t[0].took_ms = 0;
    timed_submit_main(&t[0]);
    pthread_join(th[3], NULL);
    for (int i = 0; i < 4; i++)
        assert_int_equal(t[i].rc, 0);
    assert_true(t[0].took_ms < 30000);
    assert_true(t[3].took_ms < 30000);
    assert_int_equal(front_commits(fx), c0 + 1);
}

/* Threads submitting one job at a time, each job named after its
 * submitter and its turn: several of them share one multi-row INSERT. */
#define MERGE_THREADS 8
#define MERGE_EACH 60

struct merge_submitter {
    struct store *st;
    int t;
    int64_t ids[MERGE_EACH];
    int rcs[MERGE_EACH];
};

static void *
merge_submitter_main(void *arg)
{
    struct merge_submitter *m = arg;
    char name[32], why[128];

    for (int i = 0; i < MERGE_EACH; i++) {
        struct job_spec sp = spec_q("q", 0);
        snprintf(name, sizeof(name), "t%d-%d", m->t, i);
        sp.name = name;
        m->rcs[i] = store_submit(m->st, &sp, &m->ids[i], NULL, why, sizeof(why));
    }
    return NULL;
}

static void
run_merge_submitters(struct fx *fx, struct merge_submitter *m)
{
    pthread_t th[MERGE_THREADS];

    for (int t = 0; t < MERGE_THREADS; t++) {
        m[t] = (struct merge_submitter){.st = fx->st, .t = t};
        assert_int_equal(pthread_create(&th[t], NULL, merge_submitter_main, &m[t]), 0);
    }
    for (int t = 0; t < MERGE_THREADS; t++)
        pthread_join(th[t], NULL);
}

/* Concurrent one-job submits written together still give each caller the
 * id of its own job. */
static void
test_front_merged_submits_keep_each_id(void **state)
{
    struct fx *fx = *state;
    struct merge_submitter m[MERGE_THREADS];
    struct store_stats st;
    char want[32];

    run_merge_submitters(fx, m);
    for (int t = 0; t < MERGE_THREADS; t++) {
        for (int i = 0; i < MERGE_EACH; i++) {
            struct job *g = NULL;
            assert_int_equal(m[t].rcs[i], 0);
            assert_int_equal(store_get(fx->st, admin, m[t].ids[i], &g), 0);
            snprintf(want, sizeof(want), "t%d-%d", t, i);
            assert_string_equal(g->spec.name, want);
            job_free(g);
        }
    }
    assert_int_equal(store_stats(fx->st, admin, &st), 0);
    assert_int_equal(st.count[JOB_QUEUED], MERGE_THREADS * MERGE_EACH);
    stats_release(&st);
}

/* The queue limit counts each job of a merged write: exactly max are
 * accepted, whatever way the submits were grouped. */
static void
test_front_merged_submits_respect_max_queued(void **state)
{
    struct fx *fx = *state;
    struct merge_submitter m[MERGE_THREADS];
    int ok = 0, full = 0;

    store_set_max_queued(fx->st, 100);
    run_merge_submitters(fx, m);
    for (int t = 0; t < MERGE_THREADS; t++)
        for (int i = 0; i < MERGE_EACH; i++) {
            ok += m[t].rcs[i] == 0;
            full += m[t].rcs[i] == -EAGAIN;
        }
    assert_int_equal(ok, 100);
    assert_int_equal(full, MERGE_THREADS * MERGE_EACH - 100);
}

static void
test_front_rejects_bad_spec_before_sql(void **state)
{
    struct fx *fx = *state;
    struct job_spec specs[3] = {spec_q("q", 0), spec_q("q", 0), spec_q("q", 0)};
    char *empty[] = {NULL};
    char why[256] = "";
    int64_t ids[3];
    specs[2].command = empty;
    assert_int_equal(store_submit_batch(fx->st, specs, 3, ids, NULL, why, sizeof(why)), -EINVAL);
    assert_string_equal(why, "job 2: command is empty");
    struct store_stats st;
    assert_int_equal(store_stats(fx->st, admin, &st), 0);
    assert_int_equal(st.count[JOB_QUEUED], 0);
    assert_int_equal(st.requests, 0); /* never reached the writer */
    store_stats_free(&st);
}

static void
test_front_batch_is_one_transaction(void **state)
{
    struct fx *fx = *state;
    struct job_spec specs[100];
    int64_t ids[100];
    bool existed[100];
    char why[128];
    for (int i = 0; i < 100; i++)
        specs[i] = spec_q("q", i);
    specs[99].unique_key = "last";
    specs[50].unique_key = "last"; /* the second occurrence gets the first's job */
    assert_int_equal(store_submit_batch(fx->st, specs, 100, ids, existed, why, sizeof(why)), 0);
    assert_int_equal(ids[99], ids[50]);
    assert_true(existed[99]);
    assert_false(existed[50]);
    struct store_stats st;
    assert_int_equal(store_stats(fx->st, admin, &st), 0);
    assert_int_equal(st.count[JOB_QUEUED], 99);
    assert_int_equal(st.commits, 1);
    store_stats_free(&st);
}

static void
test_front_max_queued_refuses_submit(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0), two[2] = {spec_q("q", 0), spec_q("q", 0)};
    char why[128];
    int64_t ids[2];
    store_set_max_queued(fx->st, 3);
    front_submit(fx, &sp);
    front_submit(fx, &sp);
    /* A batch counts all its jobs. */
    assert_int_equal(store_submit_batch(fx->st, two, 2, ids, NULL, why, sizeof(why)), -EAGAIN);
    front_submit(fx, &sp);
    assert_int_equal(store_submit(fx->st, &sp, ids, NULL, why, sizeof(why)), -EAGAIN);
    int64_t pending = 0;
    assert_int_equal(store_count_pending(fx->st, &pending), 0);
    assert_int_equal(pending, 3);
    /* Running jobs do not count: claiming makes room. */
    struct job *j[1];
    int n;
    assert_int_equal(store_claim(fx->st, job_now_ms(), 1, j, &n), 0);
    job_free(j[0]);
    front_submit(fx, &sp);
}

struct coro_load {
    struct store *st;
    int per;
    atomic_int failures;
    atomic_int done_reads;
    struct wg *wg;
};

static void
submitter_coro(void *arg)
{
    struct coro_load *l = arg;
    struct job_spec sp = spec_q("q", 0);
    char why[128];

    for (int i = 0; i < l->per; i++) {
        int64_t id;
        if (store_submit(l->st, &sp, &id, NULL, why, sizeof(why)) != 0) {
            atomic_fetch_add(&l->failures, 1);
            continue;
        }
        /* A read through the blocking pool, from a coroutine. */
        struct job *g = NULL;
        if (i == 0 && store_get(l->st, admin, id, &g) == 0 && g->id == id)
            atomic_fetch_add(&l->done_reads, 1);
        job_free(g);
    }
    wg_done(l->wg);
}

enum { COROS = 64 };

static void
load_main(void *arg)
{
    struct coro_load *l = arg;

    wg_add(l->wg, COROS);
    for (int i = 0; i < COROS; i++)
        if (coro_spawn(coro_rt(), "submitter", submitter_coro, l) != 0)
            wg_done(l->wg);
    wg_wait(l->wg, NULL, RT_FOREVER);
}

static void
test_group_commit_batches_concurrent_submitters(void **state)
{
    struct fx *fx = *state;
    struct rt_opts ro = {.threads = 2};
    struct rt *rt;
    struct coro_load l = {.st = fx->st, .per = 40};
    assert_int_equal(wg_new(&l.wg), 0);
    assert_int_equal(rt_new(&ro, &rt), 0);
    int64_t t0 = rt_now_ns();
    assert_int_equal(rt_run(rt, "main", load_main, &l), 0);
    int64_t ns = rt_now_ns() - t0;
    /* A round trip through the writer: it has returned from every wg_done
     * of earlier groups, so rt_free cannot race with a wake-up still in
     * flight (the runtime's scheduler must outlive its wakers). */
    assert_int_equal(store_set_pgid(fx->st, 0, 0, 0), -ESTALE);
    assert_int_equal(rt_free(rt), 0);
    wg_free(l.wg);
    assert_int_equal(atomic_load(&l.failures), 0);
    assert_int_equal(atomic_load(&l.done_reads), COROS);
    struct store_stats st;
    assert_int_equal(store_stats(fx->st, admin, &st), 0);
    print_message("FIGURE group commit: %" PRIu64 " requests in %" PRIu64
                  " commits (%.1f per commit, largest %" PRIu64 "), %.0f submits/s\n",
                  st.requests, st.commits, (double)st.requests / (double)st.commits, st.max_group,
                  (double)(COROS * l.per) * 1e9 / (double)ns);
    assert_int_equal(st.requests, COROS * l.per + 1); /* + the barrier */
    assert_int_equal(st.count[JOB_QUEUED], COROS * l.per);
    assert_true(st.commits < st.requests);
    assert_true(st.max_group > 1);
    store_stats_free(&st);
}

struct thread_submit {
    struct fx *fx;
    int rc;
    int64_t id;
    int delay_ms;
};

static void *
thread_submit_main(void *arg)
{
    struct thread_submit *t = arg;
    struct job_spec sp = spec_q("q", 0);
    char why[128];
    usleep((useconds_t)t->delay_ms * 1000);
    t->rc = store_submit(t->fx->st, &sp, &t->id, NULL, why, sizeof(why));
    return NULL;
}

static void
test_failed_commit_acknowledges_nothing(void **state)
{
    struct fx *fx = *state;
    enum { N = 16 };
    pthread_t th[N + 1];
    struct thread_submit t[N + 1];
    /* Commit 1 (the first submit alone) is slow, so the N others queue up
     * behind it and form group 2, whose COMMIT fails. */
    fx->slow_commit = 1;
    fx->slow_ms = 200;
    fx->fail_commit = 2;
    fx->err = -ENOSPC;
    for (int i = 0; i <= N; i++) {
        t[i] = (struct thread_submit){.fx = fx, .delay_ms = i == 0 ? 0 : 50};
        pthread_create(&th[i], NULL, thread_submit_main, &t[i]);
    }
    for (int i = 0; i <= N; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(t[0].rc, 0);
    for (int i = 1; i <= N; i++)
        assert_int_equal(t[i].rc, -ENOSPC);
    struct store_stats st;
    assert_int_equal(store_stats(fx->st, admin, &st), 0);
    print_message("FIGURE failed group: %d requests answered -ENOSPC, %" PRIu64
                  " commit failures, jobs stored %" PRId64 "\n",
                  N, st.commit_failures, st.count[JOB_QUEUED]);
    assert_int_equal(st.commit_failures, 1);
    assert_int_equal(st.count[JOB_QUEUED], 1);
    store_stats_free(&st);
    /* The writer goes on: the next write commits. */
    struct job_spec sp = spec_q("q", 0);
    front_submit(fx, &sp);
    char why[256];
    assert_int_equal(store_verify(fx->st, why, sizeof(why)), 0);
}

static void
count_fatal(void *arg, int err)
{
    struct fx *fx = arg;
    assert_int_equal(err, -EIO);
    fx->seen += 1000; /* distinct from the fault hook's own counting */
}

/* Claims and pgid records are the only writes a power loss may take back
 * (their processes die with the machine): their groups skip the fsync,
 * while submits and completions still reach the disk. */
static void
test_claims_commit_without_fsync(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    struct job *j[4];
    int64_t id;
    int n, before;

    front_open(fx);
    fx->point = STORE_FAULT_SYNC;
    fx->fail_at = INT_MAX; /* count, never fail */
    id = front_submit(fx, &sp);
    assert_true(fx->seen > 0);
    before = fx->seen;
    assert_int_equal(store_claim(fx->st, job_now_ms(), 4, j, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_set_pgid(fx->st, id, 1, 4242), 0);
    assert_int_equal(fx->seen, before);
    struct store_completion c = {
        .id = id, .attempt = 1, .outcome = OUTCOME_SUCCEEDED, .next = JOB_SUCCEEDED};
    assert_int_equal(store_complete(fx->st, &c), 0);
    assert_true(fx->seen > before);
    printf("FIGURE fsyncs: submit %d, claim+pgid 0, complete %d\n", before, fx->seen - before);
    job_free(j[0]);
}

static void
test_failed_sync_stops_writes_for_good(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    char why[256];
    int64_t kept, id = 0;

    fx->opts.on_fatal = count_fatal;
    fx->opts.on_fatal_arg = fx;
    front_open(fx);
    kept = front_submit(fx, &sp);
    fx->point = STORE_FAULT_SYNC;
    fx->fail_at = 1;
    fx->err = -EIO;
    assert_int_equal(store_submit(fx->st, &sp, &id, NULL, why, sizeof(why)), -EIO);
    assert_int_equal(fx->seen, 1001); /* one fsync failed, on_fatal once */
    /* The disk is "fine" again, but the store no longer writes: what the
     * files hold is unknown until they are opened again. */
    fx->fail_at = 0;
    assert_int_equal(store_submit(fx->st, &sp, &id, NULL, why, sizeof(why)), -EIO);
    assert_int_equal(store_queue_pause(fx->st, "q", true), -EIO);
    assert_int_equal(fx->seen, 1001);
    /* Reads go on. */
    struct job *g = NULL;
    assert_int_equal(store_get(fx->st, admin, kept, &g), 0);
    job_free(g);
    /* Closing checkpoints nothing: the WAL stays for the next open. */
    store_free(fx->st);
    fx->st = NULL;
    struct stat sb;
    assert_int_equal(stat(fx->path, &sb), 0);
    char wal[160];
    snprintf(wal, sizeof(wal), "%s-wal", fx->path);
    assert_int_equal(stat(wal, &sb), 0);
    /* Reopened: what was acknowledged is there, and writes work. */
    front_open(fx);
    assert_int_equal(store_get(fx->st, admin, kept, &g), 0);
    job_free(g);
    assert_true(front_submit(fx, &sp) > kept);
    assert_int_equal(store_verify(fx->st, why, sizeof(why)), 0);
}

struct thread_complete {
    struct fx *fx;
    struct store_completion c;
    int rc;
};

static void *
thread_complete_main(void *arg)
{
    struct thread_complete *t = arg;
    usleep(50 * 1000);
    t->rc = store_complete(t->fx->st, &t->c);
    return NULL;
}

static void
test_one_failing_request_does_not_fail_its_group(void **state)
{
    struct fx *fx = *state;
    enum { N = 8 };
    struct job_spec sp = spec_q("q", 0);
    int64_t id = front_submit(fx, &sp);
    struct job *j[1];
    int n;
    assert_int_equal(store_claim(fx->st, job_now_ms(), 1, j, &n), 0);
    job_free(j[0]);
    fx->commits_seen = 0;
    fx->slow_commit = 1;
    fx->slow_ms = 200;
    pthread_t th[N + 2];
    struct thread_submit t[N + 1];
    struct thread_complete stale = {
        .fx = fx,
        .c = {.id = id, .attempt = 7, .outcome = OUTCOME_SUCCEEDED, .next = JOB_SUCCEEDED}};
    for (int i = 0; i <= N; i++) {
        t[i] = (struct thread_submit){.fx = fx, .delay_ms = i == 0 ? 0 : 50};
        pthread_create(&th[i], NULL, thread_submit_main, &t[i]);
    }
    pthread_create(&th[N + 1], NULL, thread_complete_main, &stale);
    for (int i = 0; i <= N + 1; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(stale.rc, -ESTALE);
    for (int i = 0; i <= N; i++)
        assert_int_equal(t[i].rc, 0);
    struct store_stats st;
    assert_int_equal(store_stats(fx->st, admin, &st), 0);
    assert_int_equal(st.count[JOB_QUEUED], N + 1);
    assert_int_equal(st.commit_failures, 0);
    print_message("FIGURE mixed group: largest group %" PRIu64 ", stale completion refused "
                  "alone\n",
                  st.max_group);
    assert_true(st.max_group >= N);
    store_stats_free(&st);
}

static void
test_front_complete_batch_refuses_stale_alone(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    front_submit(fx, &sp);
    front_submit(fx, &sp);
    struct job *j[2];
    int n, rcs[3];
    assert_int_equal(store_claim(fx->st, job_now_ms(), 2, j, &n), 0);
    assert_int_equal(n, 2);
    struct store_completion c[3] = {
        {.id = j[0]->id, .attempt = 1, .outcome = OUTCOME_SUCCEEDED, .next = JOB_SUCCEEDED},
        {.id = j[1]->id, .attempt = 9, .outcome = OUTCOME_SUCCEEDED, .next = JOB_SUCCEEDED},
        {.id = j[1]->id, .attempt = 1, .outcome = OUTCOME_EXITED, .next = JOB_FAILED},
    };
    assert_int_equal(store_complete_batch(fx->st, c, 3, rcs), 0);
    assert_int_equal(rcs[0], 0);
    assert_int_equal(rcs[1], -ESTALE);
    assert_int_equal(rcs[2], 0);
    struct job *g = NULL;
    assert_int_equal(store_get(fx->st, admin, j[1]->id, &g), 0);
    assert_int_equal(g->state, JOB_FAILED);
    job_free(g);
    free_jobs(j, 2);
}

struct chunks {
    int calls;
    int64_t ids;
};

static void
on_chunk(void *arg, const int64_t *ids, int n)
{
    struct chunks *c = arg;
    c->calls++;
    c->ids += n;
    assert_true(ids[0] > 0);
}

static void
test_front_purge_reports_each_chunk(void **state)
{
    struct fx *fx = *state;
    enum { N = 2100 };
    struct job_spec *specs = calloc(N, sizeof(*specs));
    int64_t *ids = calloc(N, sizeof(*ids));
    char why[128];
    for (int i = 0; i < N; i++)
        specs[i] = spec_q("q", 0);
    assert_int_equal(store_submit_batch(fx->st, specs, N, ids, NULL, why, sizeof(why)), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(store_cancel(fx->st, admin, ids[i], NULL, NULL), 0);
    struct chunks c = {0};
    int64_t deleted = 0;
    assert_int_equal(store_purge(fx->st, admin, job_now_ms() + 1000, 0, on_chunk, &c, &deleted), 0);
    assert_int_equal(deleted, N);
    assert_int_equal(c.ids, N);
    assert_int_equal(c.calls, 3);
    free(specs);
    free(ids);
}

static void
test_front_recovery_after_restart(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    int64_t id = front_submit(fx, &sp);
    struct job *j[1];
    int n;
    assert_int_equal(store_claim(fx->st, job_now_ms(), 1, j, &n), 0);
    job_free(j[0]);
    assert_int_equal(store_set_pgid(fx->st, id, 1, 999), 0);
    store_free(fx->st);
    fx->st = NULL;
    front_open(fx);
    struct store_running *r;
    size_t nr;
    assert_int_equal(store_recover_list(fx->st, &r, &nr), 0);
    assert_int_equal(nr, 1);
    assert_int_equal(r[0].pgid, 999);
    free(r);
    int64_t retrying, failed;
    assert_int_equal(store_recover(fx->st, job_now_ms(), &retrying, &failed), 0);
    assert_int_equal(retrying, 1);
    assert_int_equal(failed, 0);
    int64_t due = 0;
    assert_int_equal(store_next_due(fx->st, &due), 0);
    assert_true(due > 0);
}

static void
test_front_open_refuses_damaged_file_with_reason(void **state)
{
    struct fx *fx = *state;
    FILE *f = fopen(fx->path, "w");
    fputs("not a database at all, but long enough to have a header...", f);
    fclose(f);
    char why[256] = "";
    struct store *st = NULL;
    assert_int_equal(store_new(&fx->opts, &st, why, sizeof(why)), -EINVAL);
    assert_null(st);
    assert_non_null(strstr(why, "not an SQLite database"));
}

static void
test_front_idle_writer_checkpoints_wal(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    struct store_stats st;
    store_free(fx->st);
    fx->st = NULL;
    fx->opts.checkpoint_idle_ms = 50;
    front_open(fx);
    for (int i = 0; i < 20; i++)
        front_submit(fx, &sp);
    /* Poll with a deadline: the writer checkpoints once idle for 50 ms. */
    for (int i = 0; i < 200; i++) {
        assert_int_equal(store_stats(fx->st, admin, &st), 0);
        uint64_t n = st.checkpoints;
        store_stats_free(&st);
        if (n > 0)
            break;
        usleep(10 * 1000);
    }
    assert_int_equal(store_stats(fx->st, admin, &st), 0);
    print_message("FIGURE idle checkpoint: %" PRIu64 " checkpoints, wal %" PRId64 " bytes\n",
                  st.checkpoints, st.wal_bytes);
    assert_true(st.checkpoints >= 1);
    store_stats_free(&st);
}

/* A RESTART refused because a reader sits on the WAL is retried once the
 * reader leaves, not dropped until the next commit. */
static void
test_front_busy_checkpoint_is_retried(void **state)
{
    struct fx *fx = *state;
    struct job_spec sp = spec_q("q", 0);
    struct store_stats st;
    sqlite3 *rd;
    uint64_t n = 0;

    store_free(fx->st);
    fx->st = NULL;
    fx->opts.checkpoint_idle_ms = 20;
    front_open(fx);
    assert_int_equal(sqlite3_open_v2(fx->path, &rd, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(rd, "BEGIN; SELECT count(*) FROM jobs;", NULL, NULL, NULL),
                     SQLITE_OK);
    for (int i = 0; i < 20; i++)
        front_submit(fx, &sp);
    usleep(200 * 1000); /* several idle periods, each RESTART busy */
    assert_int_equal(store_stats(fx->st, admin, &st), 0);
    assert_int_equal(st.checkpoints, 0);
    store_stats_free(&st);
    assert_int_equal(sqlite3_exec(rd, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(rd);
    /* Back-off is at most 64 × 20 ms: allow plenty for a loaded machine. */
    for (int i = 0; i < 1000 && n == 0; i++) {
        usleep(10 * 1000);
        assert_int_equal(store_stats(fx->st, admin, &st), 0);
        n = st.checkpoints;
        store_stats_free(&st);
    }
    print_message("FIGURE busy checkpoint: %" PRIu64 " checkpoints after the reader left\n", n);
    assert_true(n >= 1);
}

static void
test_storage_error_during_claim_leaves_counts_consistent(void **state)
{
    struct fx *fx = *state;
    struct job_spec specs[10];
    int64_t ids[10];
    char why[256];
    for (int i = 0; i < 10; i++)
        specs[i] = spec_q(i % 2 ? "a" : "b", i);
    assert_int_equal(store_submit_batch(fx->st, specs, 10, ids, NULL, why, sizeof(why)), 0);
    struct job *j[10];
    int n = -1;
    /* Every write fails: the claim's group rolls back entirely. */
    fx->point = STORE_FAULT_WRITE;
    fx->fail_at = 1;
    fx->sticky = true;
    fx->err = -ENOSPC;
    int rc = store_claim(fx->st, job_now_ms(), 10, j, &n);
    /* Small changes may fit in the page cache until COMMIT writes. */
    assert_true(rc == -ENOSPC);
    assert_int_equal(n, 0);
    fx->fail_at = 0;
    assert_int_equal(store_verify(fx->st, why, sizeof(why)), 0);
    assert_int_equal(store_claim(fx->st, job_now_ms(), 10, j, &n), 0);
    assert_int_equal(n, 10);
    free_jobs(j, n);
    assert_int_equal(store_verify(fx->st, why, sizeof(why)), 0);
    struct store_stats st;
    assert_int_equal(store_stats(fx->st, admin, &st), 0);
    assert_int_equal(st.count[JOB_RUNNING], 10);
    assert_int_equal(st.count[JOB_QUEUED], 0);
    assert_true(st.commit_failures >= 1);
    store_stats_free(&st);
}

/* ---- a real full disk ---------------------------------------------------- */

static void
write_filler(const char *path, size_t bytes)
{
    char buf[65536];
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    assert_true(fd >= 0);
    memset(buf, 'f', sizeof(buf));
    for (size_t done = 0; done < bytes; done += sizeof(buf))
        assert_int_equal(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
    close(fd);
}

static void
test_disk_full_fails_writes_keeps_reads_and_recovers(void **state)
{
    struct fx *fx = fx_new();
    *state = fx;
    if (mount("tmpfs", fx->dir, "tmpfs", 0, "size=16m,mode=0700") != 0) {
        print_message("SKIP: disk-full test: cannot mount a 16 MiB tmpfs on %s: %s (needs "
                      "root)\n",
                      fx->dir, strerror(errno));
        skip();
    }
    fx->mounted = true;
    char filler[160], why[256];
    snprintf(filler, sizeof(filler), "%s/filler", fx->dir);
    write_filler(filler, 4u << 20);
    front_open(fx);
    /* Jobs with 2 KiB commands, 64 per batch, until the disk is full. */
    static char arg[2048];
    memset(arg, 'x', sizeof(arg) - 1);
    char *cmd[] = {"/bin/echo", arg, NULL};
    struct job_spec specs[64];
    for (int i = 0; i < 64; i++) {
        specs[i] = spec_q("q", 0);
        specs[i].command = cmd;
    }
    int64_t *acked = calloc(1 << 16, sizeof(*acked)), ids[64];
    int nacked = 0, rc = 0, batches = 0;
    while (nacked + 64 <= (1 << 16)) {
        rc = store_submit_batch(fx->st, specs, 64, ids, NULL, why, sizeof(why));
        batches++;
        if (rc < 0)
            break;
        memcpy(acked + nacked, ids, sizeof(ids));
        nacked += 64;
    }
    print_message("FIGURE disk full after %d acknowledged jobs: %s\n", nacked, strerror(-rc));
    assert_int_equal(rc, -ENOSPC);
    /* Further writes fail cleanly, reads keep working. */
    assert_int_equal(store_submit_batch(fx->st, specs, 64, ids, NULL, why, sizeof(why)), -ENOSPC);
    struct job *g = NULL;
    assert_int_equal(store_get(fx->st, admin, acked[nacked - 1], &g), 0);
    job_free(g);
    struct store_stats st;
    assert_int_equal(store_stats(fx->st, admin, &st), 0);
    assert_int_equal(st.count[JOB_QUEUED], nacked);
    store_stats_free(&st);
    /* Space returns: writes work again, nothing acknowledged was lost. */
    assert_int_equal(unlink(filler), 0);
    assert_int_equal(store_submit_batch(fx->st, specs, 8, ids, NULL, why, sizeof(why)), 0);
    assert_int_equal(store_verify(fx->st, why, sizeof(why)), 0);
    store_free(fx->st);
    fx->st = NULL;
    front_open(fx);
    for (int i = 0; i < nacked; i++) {
        assert_int_equal(store_get(fx->st, admin, acked[i], &g), 0);
        job_free(g);
    }
    assert_int_equal(store_verify(fx->st, why, sizeof(why)), 0);
    free(acked);
}

/* ---- kill -9 ----------------------------------------------------------- */

struct acks {
    int64_t *sub;
    size_t nsub, capsub;
    struct {
        int64_t id;
        enum job_state state;
    } * done;
    size_t ndone, capdone;
    int64_t recovered;
};

static void
ack_line(struct acks *a, const char *line)
{
    int64_t id, r, f;
    char state[32];
    enum job_state s;

    if (sscanf(line, "S %" SCNd64, &id) == 1) {
        if (a->nsub == a->capsub) {
            a->capsub = a->capsub ? a->capsub * 2 : 4096;
            a->sub = realloc(a->sub, a->capsub * sizeof(*a->sub));
        }
        a->sub[a->nsub++] = id;
    } else if (sscanf(line, "C %" SCNd64 " %31s", &id, state) == 2) {
        assert_int_equal(job_state_parse(state, &s), 0);
        if (a->ndone == a->capdone) {
            a->capdone = a->capdone ? a->capdone * 2 : 4096;
            a->done = realloc(a->done, a->capdone * sizeof(*a->done));
        }
        a->done[a->ndone].id = id;
        a->done[a->ndone++].state = s;
    } else if (sscanf(line, "R %" SCNd64 " %" SCNd64, &r, &f) == 2) {
        a->recovered += r + f;
    }
}

static void
crash_tool(char *buf, size_t len)
{
    const char *b = getenv("JOBQ_BUILD");
    char exe[400];
    ssize_t n;
    if (b != NULL) {
        snprintf(buf, len, "%s/tools/store_crash", b);
        return;
    }
    /* build/tests/test_store -> build/tools/store_crash */
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    assert_true(n > 0);
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(buf, len, "%s/tools/store_crash", exe);
}

/* Runs the victim for ms milliseconds, kills it with SIGKILL, and collects
 * every complete line it printed (each one acknowledged after COMMIT). */
static void
crash_round(const char *tool, const char *db, uint64_t seed, int ms, struct acks *a)
{
    int p[2];
    pid_t pid;
    char seedbuf[32], buf[1 << 16];
    static char line[256];
    static size_t linelen;
    int64_t deadline = rt_now_ns() + (int64_t)ms * 1000000;
    bool killed = false;

    snprintf(seedbuf, sizeof(seedbuf), "%" PRIu64, seed);
    assert_int_equal(pipe(p), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        close(p[0]);
        close(p[1]);
        execl(tool, tool, db, seedbuf, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    linelen = 0;
    for (;;) {
        struct pollfd pfd = {.fd = p[0], .events = POLLIN};
        int64_t left = (deadline - rt_now_ns()) / 1000000;
        if (!killed && left <= 0) {
            kill(pid, SIGKILL);
            killed = true;
        }
        if (poll(&pfd, 1, killed ? -1 : (int)(left > 0 ? left : 0)) <= 0)
            continue;
        ssize_t n = read(p[0], buf, sizeof(buf));
        if (n <= 0)
            break; /* EOF: the victim is dead and its pipe drained */
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != '\n') {
                if (linelen < sizeof(line) - 1)
                    line[linelen++] = buf[i];
                continue;
            }
            line[linelen] = '\0';
            ack_line(a, line);
            linelen = 0;
        }
    }
    close(p[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
        fail_msg("store_crash exited by itself (status 0x%x) before the kill", status);
}

static void
test_kill9_loses_no_acknowledged_write(void **state)
{
    struct fx *fx = *state;
    char tool[512], why[512];
    /* The issue's 50 kill -9s in make test (~30 s); the sanitizer runs,
     * which look for memory and thread errors, not for lost writes, keep
     * 10 (each is several times slower there). */
    const char *env = getenv("JOBQ_CRASH_ROUNDS");
    int rounds = env ? atoi(env) : getenv("JOBQ_SANITIZER") ? 10 : 50;
    uint64_t x = (uint64_t)rt_now_ns() | 1;
    struct acks a = {0};
    size_t lost = 0, wrong = 0;

    crash_tool(tool, sizeof(tool));
    if (access(tool, X_OK) != 0) {
        print_message("SKIP: kill -9 test: %s not built (make tools)\n", tool);
        skip();
    }
    for (int r = 0; r < rounds; r++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int ms = 30 + (int)(x % 400);
        crash_round(tool, fx->path, x, ms, &a);
        /* Reopen as jobqd would: the integrity check and WAL recovery run. */
        fx_open(fx);
        int rc = ops->verify(fx->c, why, sizeof(why));
        if (rc != 0)
            fail_msg("round %d: inconsistent after kill -9: %s", r, why);
        for (size_t i = 0; i < a.nsub; i++) {
            struct job *g = NULL;
            if (ops->get(fx->c, admin, a.sub[i], &g) != 0)
                lost++;
            job_free(g);
        }
        for (size_t i = 0; i < a.ndone; i++) {
            struct job *g = NULL;
            if (ops->get(fx->c, admin, a.done[i].id, &g) != 0 || g->state != a.done[i].state)
                wrong++;
            job_free(g);
        }
        fx_close(fx);
        print_message("FIGURE kill -9 round %d after %d ms: %zu submits and %zu completions "
                      "acknowledged so far, %zu lost, %zu wrong\n",
                      r + 1, ms, a.nsub, a.ndone, lost, wrong);
        assert_int_equal(lost, 0);
        assert_int_equal(wrong, 0);
    }
    print_message("FIGURE kill -9: %d rounds, %zu acked submits, %zu acked completions, "
                  "%" PRId64 " attempts recovered, 0 lost\n",
                  rounds, a.nsub, a.ndone, a.recovered);
    assert_true(a.nsub > 0);
    free(a.sub);
    free(a.done);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates_latest_schema_with_app_id, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_open_sets_wal_and_pragmas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_file_gets_latest_schema, setup_closed, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_version_is_refused_unmodified,
                                        setup_closed, teardown),
        cmocka_unit_test_setup_teardown(test_migrations_from_every_version_reach_fresh_schema,
                                        setup_closed, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_database_is_refused_unmodified, setup_closed,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unmarked_database_with_tables_is_refused, setup_closed,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_non_sqlite_file_is_refused_unmodified, setup_closed,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_truncated_database_is_refused_unmodified, setup_closed,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scribbled_database_is_refused_unmodified, setup_closed,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scribbled_header_is_refused_unmodified, setup_closed,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_submit_round_trips_every_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_defaults_queue_and_null_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_ids_increase_and_are_never_reused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_future_run_at_is_scheduled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unique_key_returns_existing_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unique_key_twice_in_one_transaction_creates_one_job,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_follows_priority_then_run_at_then_id, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_claim_merges_queues_in_priority_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_claim_marks_running_and_records_attempt, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_claim_skips_paused_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pausing_unknown_queue_creates_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_honours_queue_concurrency_limit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_claim_promotes_due_retrying_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_fails_job_whose_deadline_passed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_claim_of_zero_or_nothing_ready_is_empty, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_set_pgid_of_open_attempt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_complete_succeeded_is_terminal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_completion_is_refused_and_changes_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_complete_rejects_bad_next_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_completion_keeps_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_queued_job_never_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_running_job_keeps_attempt_open_until_completed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_finished_job_is_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_retry_failed_job_keeps_history_and_gives_one_more_attempt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_of_active_or_succeeded_job_is_conflict, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_deadline_is_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_uid_sees_nothing_of_anothers_job, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_list_pages_newest_first_with_keyset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_filters_by_states_and_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_come_from_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hot_queries_use_their_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_deletes_in_bounded_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_respects_age_and_states, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery_lists_then_marks_interrupted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_attempt_does_not_use_up_budget, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_commit_fault_rolls_back_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_fault_fails_commit_with_storage_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sync_fault_fails_commit_with_io_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_verify_detects_counter_drift, setup, teardown),
        cmocka_unit_test_setup_teardown(test_savepoint_undoes_one_request_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_sees_committed_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wal_stays_bounded_with_open_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_front_submit_claim_complete_get, setup_front,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_front_lazy_pgid_rides_in_next_group, setup_front,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_front_lazy_pgid_commits_alone, setup_front, teardown),
        cmocka_unit_test_setup_teardown(test_front_lazy_pgid_flushed_at_close, setup_front,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_front_patient_completions_share_a_commit, setup_front,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_front_impatient_write_ends_the_linger, setup_front,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_front_no_linger_when_idle_or_impatient, setup_front,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_front_gathered_group_commits_once_complete,
                                        setup_front, teardown),
        cmocka_unit_test_setup_teardown(test_front_rejects_bad_spec_before_sql, setup_front,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_front_batch_is_one_transaction, setup_front, teardown),
        cmocka_unit_test_setup_teardown(test_front_max_queued_refuses_submit, setup_front,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_front_merged_submits_keep_each_id, setup_front,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_front_merged_submits_respect_max_queued, setup_front,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_batches_concurrent_submitters,
                                        setup_front, teardown),
        cmocka_unit_test_setup_teardown(test_claims_commit_without_fsync, setup_closed, teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_stops_writes_for_good, setup_closed,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failed_commit_acknowledges_nothing, setup_front,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_one_failing_request_does_not_fail_its_group,
                                        setup_front, teardown),
        cmocka_unit_test_setup_teardown(test_front_complete_batch_refuses_stale_alone, setup_front,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_front_purge_reports_each_chunk, setup_front, teardown),
        cmocka_unit_test_setup_teardown(test_front_recovery_after_restart, setup_front, teardown),
        cmocka_unit_test_setup_teardown(test_front_busy_checkpoint_is_retried, setup_front,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_front_idle_writer_checkpoints_wal, setup_front,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_storage_error_during_claim_leaves_counts_consistent,
                                        setup_front, teardown),
        cmocka_unit_test_setup_teardown(test_front_open_refuses_damaged_file_with_reason,
                                        setup_closed, teardown),
        cmocka_unit_test_teardown(test_disk_full_fails_writes_keeps_reads_and_recovers, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_loses_no_acknowledged_write, setup_closed,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
