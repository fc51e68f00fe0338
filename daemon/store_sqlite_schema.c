/*
 * store_sqlite_schema — the SQLite backend's schema, its forward migrations
 * and the checks a database file must pass before jobqd writes to it. The
 * schema version lives in PRAGMA user_version and our mark in PRAGMA
 * application_id; migration N is migrations[N - 1], so a new version is one
 * more array entry (and a test builds a database at every earlier version
 * and migrates it). A file that fails a check is refused, never repaired
 * or recreated: it may be the only copy of someone's jobs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_sqlite_int.h"

/*
 * States and outcomes are stored as the integers of job.h (store_sqlite.c
 * pins them with static asserts); the partial indexes below name the
 * states literally because SQLite only uses a partial index when the
 * query repeats its WHERE clause with the same constants. They use = and
 * >=, not IN (...): SQLite evaluates an IN list in an index's WHERE by
 * building a temporary table for every statement that writes a row, which
 * halved the insert rate.
 *
 * command and env are JSON arrays of strings: readable in the sqlite3
 * shell, and what PostgreSQL's jsonb would hold.
 *
 * counters(queue, state, uid) holds the number of jobs in each state. The
 * backend adds every insert, state change and delete to it in the same
 * transaction, summed per transaction (one row update for a group commit
 * of 10000 submits, where a trigger would make 10000), so stats and the
 * per-queue running count are O(queues) reads, never COUNT(*) over jobs.
 */
static const char *const migrations[] = {
    /* 1: the initial schema. */
    "CREATE TABLE jobs ("
    "  id INTEGER PRIMARY KEY," /* assigned from meta.next_id: never reused */
    "  queue TEXT NOT NULL,"
    "  name TEXT,"
    "  priority INTEGER NOT NULL,"
    "  command TEXT NOT NULL,"
    "  env TEXT,"
    "  cwd TEXT,"
    "  unique_key TEXT,"
    "  max_attempts INTEGER NOT NULL,"
    "  backoff_base_ms INTEGER NOT NULL,"
    "  backoff_max_ms INTEGER NOT NULL,"
    "  timeout_ms INTEGER NOT NULL,"
    "  deadline INTEGER NOT NULL,"
    "  run_at INTEGER NOT NULL,"
    "  uid INTEGER NOT NULL,"
    "  gid INTEGER NOT NULL,"
    "  state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 6),"
    "  attempt INTEGER NOT NULL DEFAULT 0,"
    "  interrupted INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL,"
    "  started_at INTEGER NOT NULL DEFAULT 0,"
    "  finished_at INTEGER NOT NULL DEFAULT 0,"
    "  updated_at INTEGER NOT NULL,"
    "  outcome INTEGER NOT NULL DEFAULT 0,"
    "  exit_code INTEGER NOT NULL DEFAULT -1,"
    "  signal INTEGER NOT NULL DEFAULT 0,"
    "  error TEXT,"
    "  log_truncated INTEGER NOT NULL DEFAULT 0"
    ");"
    /* Ready jobs per queue in dispatch order: a claim reads the head of
     * each active queue and never walks a paused queue's jobs. */
    "CREATE INDEX jobs_ready ON jobs (queue, priority DESC, run_at, id) WHERE state = 1;"
    /* Scheduled and retrying jobs by due time: promotion and next_due. */
    "CREATE INDEX jobs_due ON jobs (run_at) WHERE state = 0 OR state = 3;"
    /* Terminal jobs by age: purge. */
    "CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state >= 4;"
    /* Idempotent submit: one job per (submitter, key) until purged. */
    "CREATE UNIQUE INDEX jobs_unique ON jobs (uid, unique_key) WHERE unique_key IS NOT NULL;"
    "CREATE TABLE attempts ("
    "  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  attempt INTEGER NOT NULL,"
    "  started_at INTEGER NOT NULL,"
    "  finished_at INTEGER NOT NULL DEFAULT 0,"
    "  outcome INTEGER NOT NULL DEFAULT 0,"
    "  exit_code INTEGER NOT NULL DEFAULT -1,"
    "  signal INTEGER NOT NULL DEFAULT 0,"
    "  error TEXT,"
    "  log_bytes INTEGER NOT NULL DEFAULT 0,"
    "  log_truncated INTEGER NOT NULL DEFAULT 0,"
    "  pgid INTEGER NOT NULL DEFAULT 0,"
    "  boot_id TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY (job_id, attempt)"
    ") WITHOUT ROWID;"
    /* Open attempts: recovery finds them without reading history. */
    "CREATE INDEX attempts_open ON attempts (job_id) WHERE finished_at = 0;"
    "CREATE TABLE queues ("
    "  name TEXT PRIMARY KEY,"
    "  paused INTEGER NOT NULL DEFAULT 0,"
    "  max_running INTEGER NOT NULL DEFAULT 0" /* 0: no limit */
    ") WITHOUT ROWID;"
    /* Per uid too: a non-admin's stats count only its own jobs. */
    "CREATE TABLE counters ("
    "  queue TEXT NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  uid INTEGER NOT NULL,"
    "  n INTEGER NOT NULL,"
    "  PRIMARY KEY (queue, state, uid)"
    ") WITHOUT ROWID;"
    /* next_id: the id the next job gets. Kept here rather than by
     * AUTOINCREMENT, which rewrites sqlite_sequence on every insert. */
    "CREATE TABLE meta ("
    "  key TEXT PRIMARY KEY,"
    "  value INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "INSERT INTO meta (key, value) VALUES ('next_id', 1);"
    /* The counters key on queue and uid, so a job never changes either. */
    "CREATE TRIGGER jobs_owner_fixed BEFORE UPDATE OF queue, uid ON jobs"
    "  WHEN OLD.queue <> NEW.queue OR OLD.uid <> NEW.uid BEGIN"
    "  SELECT RAISE (ABORT, 'the queue and uid of a job cannot change');"
    "END;",
};

#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

int
store_sqlite_schema_version(void)
{
    return NMIGRATIONS;
}

int
store_sqlite_errno(int src)
{
    switch (src & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -ETIMEDOUT;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_PERM:
    case SQLITE_AUTH:
    case SQLITE_CANTOPEN:
        return -EACCES;
    case SQLITE_CONSTRAINT:
        return -EEXIST;
    case SQLITE_TOOBIG:
        return -E2BIG;
    default: /* IOERR, CORRUPT, NOTADB, PROTOCOL, ... */
        return -EIO;
    }
}

static int
pragma_int(sqlite3 *db, const char *sql, int *v)
{
    sqlite3_stmt *s = NULL;
    int src;

    if ((src = sqlite3_prepare_v2(db, sql, -1, &s, NULL)) != SQLITE_OK)
        goto out;
    if ((src = sqlite3_step(s)) == SQLITE_ROW) {
        *v = sqlite3_column_int(s, 0);
        src = SQLITE_OK;
    }
out:
    sqlite3_finalize(s);
    return src;
}

static int
exec_sql(sqlite3 *db, const char *sql, char *why, size_t whylen, const char *what)
{
    char *msg = NULL;
    int src, rc = 0;

    if ((src = sqlite3_exec(db, sql, NULL, NULL, &msg)) != SQLITE_OK) {
        snprintf(why, whylen, "%s: %s", what, msg ? msg : sqlite3_errstr(src));
        rc = store_sqlite_errno(src);
        if (rc == 0 || rc == -EEXIST)
            rc = -EIO;
    }
    sqlite3_free(msg);
    return rc;
}

int
store_sqlite_migrate(sqlite3 *db, int target, char *why, size_t whylen)
{
    char sql[96];
    int version = 0, src, rc = 0;

    if (target > NMIGRATIONS)
        target = NMIGRATIONS;
    if ((src = pragma_int(db, "PRAGMA user_version", &version)) != SQLITE_OK) {
        snprintf(why, whylen, "cannot read the schema version: %s", sqlite3_errmsg(db));
        return store_sqlite_errno(src);
    }
    if (version > NMIGRATIONS) {
        snprintf(why, whylen,
                 "database schema version %d is newer than this jobqd knows (%d): "
                 "use a newer jobqd",
                 version, NMIGRATIONS);
        return -EINVAL;
    }
    /* One transaction per step: a crash between steps leaves a database at
     * a version this code (and the next start) knows how to continue. */
    for (; version < target; version++) {
        if ((rc = exec_sql(db, "BEGIN IMMEDIATE", why, whylen, "migration")) < 0)
            return rc;
        snprintf(sql, sizeof(sql), "PRAGMA application_id = %d; PRAGMA user_version = %d",
                 STORE_SQLITE_APP_ID, version + 1);
        if ((rc = exec_sql(db, migrations[version], why, whylen, "migration")) < 0 ||
            (rc = exec_sql(db, sql, why, whylen, "migration")) < 0 ||
            (rc = exec_sql(db, "COMMIT", why, whylen, "migration")) < 0) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            snprintf(why + strlen(why), whylen - strlen(why), " (to version %d)", version + 1);
            return rc;
        }
    }
    return 0;
}

/* The first 16 bytes of every SQLite 3 database. */
static int
check_header(const char *path, char *why, size_t whylen)
{
    static const char magic[16] = "SQLite format 3";
    char head[16];
    ssize_t got;
    int fd, rc = 0;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        rc = -errno;
        snprintf(why, whylen, "cannot open %s: %s", path, strerror(errno));
        return rc;
    }
    got = pread(fd, head, sizeof(head), 0);
    if (got != (ssize_t)sizeof(head) || memcmp(head, magic, sizeof(head)) != 0) {
        snprintf(why, whylen, "%s is not an SQLite database (bad header); refusing to touch it",
                 path);
        rc = -EINVAL;
    }
    close(fd);
    return rc;
}

/* First row of PRAGMA quick_check: "ok" or the first problem found. */
static int
quick_check(sqlite3 *db, const char *path, char *why, size_t whylen)
{
    sqlite3_stmt *s = NULL;
    int src, rc = 0;

    if ((src = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &s, NULL)) != SQLITE_OK ||
        (src = sqlite3_step(s)) != SQLITE_ROW) {
        snprintf(why, whylen, "%s is damaged: %s; restore it from a backup", path,
                 sqlite3_errmsg(db));
        rc = -EINVAL;
        goto out;
    }
    if (strcmp((const char *)sqlite3_column_text(s, 0), "ok") != 0) {
        snprintf(why, whylen, "%s is damaged (quick_check: %.200s); restore it from a backup", path,
                 (const char *)sqlite3_column_text(s, 0));
        rc = -EINVAL;
    }
out:
    sqlite3_finalize(s);
    return rc;
}

/*
 * A read-only URI for path. Without a WAL beside it the file is opened
 * immutable: no -wal or -shm is created next to a file we may refuse. With
 * one (jobqd was killed), SQLite must read the WAL to see the committed
 * state, which uses the files that are already there. Returns owned *out
 * (sqlite3_free).
 */
static int
check_uri(const char *path, char **out)
{
    static const char keep[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                               "0123456789-._~/";
    char *wal = sqlite3_mprintf("%s-wal", path), *enc, *p;
    bool immutable;

    if (wal == NULL)
        return -ENOMEM;
    immutable = access(wal, F_OK) != 0;
    sqlite3_free(wal);
    if ((enc = sqlite3_malloc64(strlen(path) * 3 + 1)) == NULL)
        return -ENOMEM;
    for (p = enc; *path; path++) {
        if (strchr(keep, *path) != NULL)
            *p++ = *path;
        else
            p += sprintf(p, "%%%02X", (unsigned char)*path);
    }
    *p = '\0';
    *out = sqlite3_mprintf("file:%s?mode=ro%s", enc, immutable ? "&immutable=1" : "");
    sqlite3_free(enc);
    return *out != NULL ? 0 : -ENOMEM;
}

int
store_sqlite_check(const char *path, bool skip_check, char *why, size_t whylen)
{
    sqlite3 *db = NULL;
    struct stat sb;
    char *uri = NULL;
    int app = 0, version = 0, tables = 0, src, rc;

    if (stat(path, &sb) < 0) {
        if (errno == ENOENT)
            return 0; /* a new database */
        rc = -errno;
        snprintf(why, whylen, "cannot stat %s: %s", path, strerror(errno));
        return rc;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(why, whylen, "%s is not a regular file", path);
        return -EINVAL;
    }
    if (sb.st_size == 0)
        return 0; /* created but never written: SQLite treats it as empty */
    if ((rc = check_header(path, why, whylen)) < 0)
        return rc;
    /* Read-only: nothing below may change a file we end up refusing. */
    if ((rc = check_uri(path, &uri)) < 0)
        return rc;
    src = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI,
                          NULL);
    if (src != SQLITE_OK) {
        snprintf(why, whylen, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : "no memory");
        rc = store_sqlite_errno(src);
        goto out;
    }
    if ((src = pragma_int(db, "PRAGMA application_id", &app)) != SQLITE_OK ||
        (src = pragma_int(db, "PRAGMA user_version", &version)) != SQLITE_OK ||
        (src = pragma_int(db, "SELECT count(*) FROM sqlite_schema", &tables)) != SQLITE_OK) {
        snprintf(why, whylen, "%s is damaged (%s); restore it from a backup", path,
                 sqlite3_errmsg(db));
        rc = -EINVAL;
        goto out;
    }
    if (app != STORE_SQLITE_APP_ID && !(app == 0 && version == 0 && tables == 0)) {
        snprintf(why, whylen,
                 "%s is not a jobq database (application_id 0x%08x, expected 0x%08x); "
                 "refusing to touch it",
                 path, (unsigned)app, (unsigned)STORE_SQLITE_APP_ID);
        rc = -EINVAL;
        goto out;
    }
    if (version > NMIGRATIONS) {
        snprintf(why, whylen,
                 "%s has schema version %d, newer than this jobqd knows (%d): use a newer jobqd",
                 path, version, NMIGRATIONS);
        rc = -EINVAL;
        goto out;
    }
    if (!skip_check && (rc = quick_check(db, path, why, whylen)) < 0)
        goto out;
    rc = 0;
out:
    sqlite3_close(db);
    sqlite3_free(uri);
    return rc;
}
