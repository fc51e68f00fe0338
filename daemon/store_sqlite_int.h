/*
 * store_sqlite_int — what the SQLite backend's files share: the connection
 * body, the schema's version and migrations (store_sqlite_schema.c), and
 * the integrity checks at open. Private to daemon/store_sqlite*.c and the
 * store tests; the rest of jobqd sees only store.h.
 */
#ifndef JOBQ_STORE_SQLITE_INT_H
#define JOBQ_STORE_SQLITE_INT_H

#include <sqlite3.h>
#include <stddef.h>

#include "jobq/store.h"

/* PRAGMA application_id of a jobq database: "jobq" in ASCII. file(1) and
 * other tools tell our files apart by it, and open refuses a database
 * that carries another id. */
#define STORE_SQLITE_APP_ID 0x6a6f6271

/* Stored state and outcome codes are the enum values of job.h; these pin
 * the ones the schema's partial indexes name literally. */
#define SQ_SCHEDULED 0
#define SQ_QUEUED 1
#define SQ_RUNNING 2
#define SQ_RETRYING 3
#define SQ_SUCCEEDED 4
#define SQ_FAILED 5
#define SQ_CANCELED 6

/* The schema version this build writes (the number of migrations). */
int store_sqlite_schema_version(void);

/*
 * Brings db from its user_version up to target (<= the latest), one
 * migration per transaction, each setting user_version. A newer version
 * than this build knows is -EINVAL with a reason. Borrows db.
 */
int store_sqlite_migrate(sqlite3 *db, int target, char *why, size_t whylen);

/*
 * Checks an existing file before anything writes to it: an SQLite header,
 * our application_id (or a database with no tables at all), a schema
 * version this build knows, and PRAGMA quick_check unless skip_check.
 * Opens its own read-only connection, so a refused file is left byte for
 * byte as it was. -EINVAL (or a storage error) with a reason in why.
 * Borrows path.
 */
int store_sqlite_check(const char *path, bool skip_check, char *why, size_t whylen);

/* SQLite result code to -errno (store.h lists the meanings). */
int store_sqlite_errno(int src);

#endif
