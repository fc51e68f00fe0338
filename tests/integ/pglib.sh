# pglib.sh — a private PostgreSQL for the tests of the PostgreSQL store,
# sourced after lib.sh. pg_start makes a cluster in $T/pg (initdb once per
# build directory into a template, then a copy per test), run by an
# unprivileged user (postgres, or nobody), listening on a Unix socket in
# $T/pg only, and sets PGURL (a libpq URL for jobqd's --store) and PSQL.
# The cluster is stopped when the script exits. If PostgreSQL is not
# installed and cannot be (scripts/deps.sh postgresql), pg_start prints
# why and returns 1: the caller SKIPs.
#
# fsync is off: these tests are about jobq's semantics across nodes, and
# PostgreSQL's own durability is PostgreSQL's; make bench-postgres runs
# at PostgreSQL's defaults.

PG_DIR=$T/pg
PG_USER=
PG_BIN=
PGURL=

pg_find() {
    PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V |
        tail -n 1)
    [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ]
}

# pg_setup: the package and the template; sets PG_SKIP with the reason.
pg_setup() {
    local src=${JOBQ_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)} tpl lock
    PG_SKIP=
    if ! pg_find; then
        if ! "$src/scripts/deps.sh" postgresql >"$T/pgdeps.log" 2>&1 || ! pg_find; then
            PG_SKIP="PostgreSQL is not installed and cannot be: $(tail -n 1 "$T/pgdeps.log")"
            return 1
        fi
    fi
    if id postgres >/dev/null 2>&1; then PG_USER=postgres; else PG_USER=nobody; fi
    if [ "$(id -u)" != 0 ]; then
        PG_SKIP="the PostgreSQL tests run the server as $PG_USER and need root to do so"
        return 1
    fi
    # One initdb per build directory and server version (a few seconds);
    # each test copies it.
    tpl=$JOBQ_BUILD/pgtemplate/$(basename "$(dirname "$PG_BIN")")
    lock=$JOBQ_BUILD/pgtemplate.lock
    mkdir -p "$JOBQ_BUILD/pgtemplate"
    (
        flock 9
        if [ ! -f "$tpl/data/PG_VERSION" ]; then
            rm -rf "$tpl"
            mkdir -p "$tpl"
            chown "$PG_USER" "$tpl"
            if ! runuser -u "$PG_USER" -- "$PG_BIN/initdb" -D "$tpl/data" -U postgres \
                --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$T/initdb.log" 2>&1; then
                rm -rf "$tpl"
                exit 1
            fi
        fi
    ) 9>"$lock" || {
        PG_SKIP="initdb failed: $(tail -n 1 "$T/initdb.log" 2>/dev/null)"
        return 1
    }
    PG_TEMPLATE=$tpl/data
}

# pg_start: a fresh cluster for this test; PGURL points at it.
pg_start() {
    pg_setup || return 1
    mkdir -p "$PG_DIR"
    cp -a "$PG_TEMPLATE" "$PG_DIR/data"
    chown -R "$PG_USER" "$PG_DIR"
    chmod 700 "$PG_DIR/data"
    if ! runuser -u "$PG_USER" -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/pg.log" \
        -o "-c listen_addresses='' -c unix_socket_directories=$PG_DIR -c fsync=off -c max_connections=200" \
        -w -t 60 start >/dev/null 2>&1; then
        PG_SKIP="the PostgreSQL server did not start: $(tail -n 3 "$PG_DIR/pg.log" | tr '\n' ' ')"
        return 1
    fi
    PG_RUNNING=1
    PGURL="postgresql:///postgres?host=$PG_DIR&user=postgres"
    PSQL="$PG_BIN/psql -X -q -A -t -v ON_ERROR_STOP=1 -h $PG_DIR -U postgres -d postgres"
}

pg_stop() {
    if [ -n "${PG_RUNNING:-}" ]; then
        runuser -u "$PG_USER" -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop \
            >/dev/null 2>&1
        PG_RUNNING=
    fi
}

# psql_c SQL: one statement's result, unaligned.
psql_c() { PGOPTIONS="-c client_min_messages=warning" $PSQL -c "$1"; }

# The cluster goes before lib.sh's cleanup removes its directory.
trap 'pg_stop; cleanup' EXIT
