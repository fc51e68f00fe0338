#!/bin/bash
# pg_store — the PostgreSQL store's unit tests (tests/test_store_pg.c)
# against a private PostgreSQL server: the backend's operations, several
# nodes on one database, leases, take-over, notifications, jobq.submit().
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pglib.sh"

bin=$JOBQ_BUILD/tests/test_store_pg
if [ ! -x "$bin" ]; then
    skip "pg_store" "$bin is not built"
    exit 0
fi
if ! pg_start; then
    skip "pg_store" "$PG_SKIP"
    exit 0
fi
JOBQ_TEST_PG=$PGURL "$bin"
