/*
 * raw — the reference figures of bench-store: what this disk and SQLite
 * allow with the store's pragmas (WAL, synchronous=FULL, same cache) and
 * the store's row shape (the same columns, values bound the same way),
 * without the store: a plain table, a plain loop, no writer thread, no
 * secondary indexes, no counters; then the same loop on a table with the
 * store's indexes. Also the latency of one 4 KiB append plus fdatasync,
 * the floor of any durable commit.
 *
 * usage: raw DIR    (DIR on the disk under test)
 */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <unistd.h>

#include "bench.h"
#include "jobq/limits.h"

#define FSYNC_ROUNDS 400

static void
bench_fsync(const char *dir)
{
    char path[512], block[4096];
    int64_t lat[FSYNC_ROUNDS];
    int fd;

    snprintf(path, sizeof(path), "%s/fsync.dat", dir);
    if ((fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600)) < 0)
        bench_die(path, -errno, NULL);
    memset(block, 'w', sizeof(block));
    /* Appends, as WAL commits are: the size changes, so fdatasync flushes
     * the inode too. */
    for (int i = 0; i < FSYNC_ROUNDS; i++) {
        int64_t t0 = bench_ns();
        if (pwrite(fd, block, sizeof(block), (off_t)i * (off_t)sizeof(block)) < 0 ||
            fdatasync(fd) < 0)
            bench_die("fsync", -errno, NULL);
        lat[i] = bench_ns() - t0;
    }
    close(fd);
    unlink(path);
    bench_result("raw.fsync_us", (double)bench_pct(lat, FSYNC_ROUNDS, 50) / 1000.0, "us");
}

static void
exec_or_die(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "bench: %s: %s\n", sql, err);
        exit(1);
    }
}

static sqlite3 *
raw_open(const char *dir, bool indexed)
{
    char path[512], sql[600];
    sqlite3 *db;

    snprintf(path, sizeof(path), "%s/raw.db", dir);
    unlink(path);
    snprintf(sql, sizeof(sql), "%s-wal", path);
    unlink(sql);
    if (sqlite3_open(path, &db) != SQLITE_OK)
        bench_die(path, -EIO, NULL);
    exec_or_die(db, "PRAGMA journal_mode = WAL");
    exec_or_die(db, "PRAGMA synchronous = FULL");
    snprintf(sql, sizeof(sql), "PRAGMA cache_size = -%d", JOBQ_STORE_CACHE_KIB);
    exec_or_die(db, sql);
    snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit = %lld",
             (long long)JOBQ_STORE_WAL_LIMIT_BYTES);
    exec_or_die(db, sql);
    /* The columns of the store's jobs table, with the same defaults. */
    exec_or_die(db, "CREATE TABLE jobs (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, name TEXT, "
                    "priority INTEGER NOT NULL, command TEXT NOT NULL, env TEXT, cwd TEXT, "
                    "unique_key TEXT, max_attempts INTEGER NOT NULL, backoff_base_ms INTEGER "
                    "NOT NULL, backoff_max_ms INTEGER NOT NULL, timeout_ms INTEGER NOT NULL, "
                    "deadline INTEGER NOT NULL, run_at INTEGER NOT NULL, uid INTEGER NOT NULL, "
                    "gid INTEGER NOT NULL, state INTEGER NOT NULL, attempt INTEGER NOT NULL "
                    "DEFAULT 0, interrupted INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT "
                    "NULL, started_at INTEGER NOT NULL DEFAULT 0, finished_at INTEGER NOT NULL "
                    "DEFAULT 0, updated_at INTEGER NOT NULL, outcome INTEGER NOT NULL DEFAULT 0, "
                    "exit_code INTEGER NOT NULL DEFAULT -1, signal INTEGER NOT NULL DEFAULT 0, "
                    "error TEXT, log_truncated INTEGER NOT NULL DEFAULT 0)");
    /* The second reference: the same table with the store's indexes
     * (store_sqlite_schema.c), still a plain loop. The gap between the two
     * is what the dispatch index costs SQLite itself. */
    if (indexed)
        exec_or_die(db, "CREATE INDEX jobs_ready ON jobs (queue, priority DESC, run_at, id) "
                        "WHERE state = 1; CREATE INDEX jobs_due ON jobs (run_at) WHERE "
                        "state = 0 OR state = 3; CREATE INDEX jobs_finished ON jobs "
                        "(finished_at) WHERE state >= 4; CREATE UNIQUE INDEX jobs_unique ON "
                        "jobs (uid, unique_key) WHERE unique_key IS NOT NULL");
    return db;
}

/* Inserts rows in transactions of batch rows (1: autocommit); returns
 * rows per second. */
static double
insert_rate(const char *dir, int batch, int rows, bool indexed)
{
    sqlite3 *db = raw_open(dir, indexed);
    sqlite3_stmt *s;
    struct job_spec sp = bench_spec();
    int64_t t0, now = job_now_ms();

    if (sqlite3_prepare_v2(db,
                           "INSERT INTO jobs (queue, name, priority, command, env, cwd, "
                           "unique_key, max_attempts, backoff_base_ms, backoff_max_ms, "
                           "timeout_ms, deadline, run_at, uid, gid, state, created_at, "
                           "updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
                           "?12, ?13, ?14, ?15, ?16, ?17, ?17)",
                           -1, &s, NULL) != SQLITE_OK)
        bench_die("prepare", -EIO, sqlite3_errmsg(db));
    t0 = bench_ns();
    for (int done = 0; done < rows;) {
        if (batch > 1)
            exec_or_die(db, "BEGIN IMMEDIATE");
        for (int i = 0; i < batch && done < rows; i++, done++) {
            sqlite3_bind_text(s, 1, sp.queue, -1, SQLITE_STATIC);
            sqlite3_bind_null(s, 2);
            sqlite3_bind_int(s, 3, sp.priority);
            sqlite3_bind_text(s, 4, "[\"/bin/true\"]", -1, SQLITE_STATIC);
            sqlite3_bind_null(s, 5);
            sqlite3_bind_null(s, 6);
            sqlite3_bind_null(s, 7);
            sqlite3_bind_int(s, 8, sp.max_attempts);
            sqlite3_bind_int64(s, 9, sp.backoff_base_ms);
            sqlite3_bind_int64(s, 10, sp.backoff_max_ms);
            sqlite3_bind_int64(s, 11, 0);
            sqlite3_bind_int64(s, 12, 0);
            sqlite3_bind_int64(s, 13, now);
            sqlite3_bind_int64(s, 14, sp.uid);
            sqlite3_bind_int64(s, 15, sp.gid);
            sqlite3_bind_int(s, 16, JOB_QUEUED);
            sqlite3_bind_int64(s, 17, now);
            if (sqlite3_step(s) != SQLITE_DONE)
                bench_die("insert", -EIO, sqlite3_errmsg(db));
            sqlite3_reset(s);
        }
        if (batch > 1)
            exec_or_die(db, "COMMIT");
    }
    double rate = (double)rows * 1e9 / (double)(bench_ns() - t0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return rate;
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: raw DIR\n");
        return 64;
    }
    bench_fsync(argv[1]);
    bench_result("raw.insert_autocommit_rate", insert_rate(argv[1], 1, 3000, false), "rows/s");
    bench_result("raw.insert_batch64_rate", insert_rate(argv[1], 64, 64 * 4000, false), "rows/s");
    bench_result("raw.insert_batch1000_rate", insert_rate(argv[1], 1000, 500000, false), "rows/s");
    bench_result("raw.insert_batch64_indexed_rate", insert_rate(argv[1], 64, 64 * 4000, true),
                 "rows/s");
    bench_result("raw.insert_batch1000_indexed_rate", insert_rate(argv[1], 1000, 500000, true),
                 "rows/s");
    return 0;
}
