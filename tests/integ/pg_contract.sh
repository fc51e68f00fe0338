#!/bin/bash
# pg_contract — the contract's integration scripts again, with the
# PostgreSQL store: verbs (every verb, its output and exit code),
# lifecycle (timeouts, deadlines, cancel, priorities, retries, drain,
# kill -9 and recovery) and access (uids, modes, jobs run as their
# submitter). Each runs as written, against a fresh jobq schema, with
# JOBQ_TEST_STORE set so that lib.sh's start_daemon adds --store; its
# cases are reported as "pg: <case>". The other scripts (logs, load,
# badinput, http, the chaos runs, packaging) exercise the server, the
# executor or the files, which do not depend on the store, and run with
# SQLite only: docs/POSTGRES.md, "Tests".
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pglib.sh"

if ! pg_start; then
    skip "pg_contract" "$PG_SKIP"
    exit 0
fi

for script in verbs lifecycle access; do
    psql_c "DROP SCHEMA IF EXISTS jobq CASCADE" >/dev/null 2>&1
    JOBQ_TEST_STORE=$PGURL bash "$(dirname "$0")/$script.sh" 2>&1 |
        sed -E 's/^(PASS|FAIL|SKIP): /\1: pg: /' |
        while IFS= read -r line; do
            echo "$line"
            [[ $line == FAIL:* ]] && echo x >>"$T/failed"
        done
done
[ ! -s "$T/failed" ]
