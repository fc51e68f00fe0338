/*
 * store_pg_node — one jobqd node of a PostgreSQL cluster: its lease, its
 * ears and its share of the housekeeping, on a thread of its own with a
 * connection of its own (jobq-pg-node).
 *
 * The lease is a row of jobq.nodes whose heartbeat_at the thread renews
 * every lease/5 with the database's clock (now()), so clock skew between
 * machines cannot break it. A node whose row has not been renewed for its
 * lease_ms is dead to the others: the first one to lock its row records its
 * open attempts as interrupted and re-queues their jobs (at-least-once,
 * like SQLite's recovery), after on_reap has killed whatever of them still
 * runs on this machine. Claims hold a KEY SHARE lock on their own lease
 * row until they commit, and the taker locks the row FOR UPDATE, so it sees
 * every attempt the dead node committed and no claim can follow.
 *
 * A node that cannot renew stops before anyone may take over: once lease *
 * 2/3 has passed on its monotonic clock since it sent its last successful
 * renewal (the database stamped that renewal later, so the others' count
 * started later), or once it finds its row gone, the lease is lost for
 * good: on_event(STORE_EVENT_LEASE_LOST) tells jobqd to kill its jobs and
 * exit, and every later write of this node fails. Its late completions are
 * refused anyway: they are fenced by attempt.
 *
 * The same thread LISTENs on the "jobq" channel: other nodes' submits,
 * completions, cancels and take-overs become on_event calls (a node ignores
 * its own notifications; the daemon already knows). Every JOBQ_PG_POLL_MS
 * it also sends a WAKE by itself, the fallback for a notification lost
 * with a connection. It folds jobq.count_deltas into jobq.counts, one node
 * at a time (a try-lock), every JOBQ_PG_COMPACT_MS.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "jobq/limits.h"
#include "store_pg_int.h"

/* pg_try_advisory_xact_lock key of the counter folding: "jobqcnts". */
#define PG_COMPACT_LOCK "7695843520137920115"

struct pg_node {
    struct store_conn *c; /* this thread's own connection */
    int64_t id;
    int lease_ms;
    char *name, *instance, *boot_id;
    uint64_t seed;
    void (*on_event)(void *arg, enum store_event ev, int64_t id);
    void *on_event_arg;
    struct store_opts reap; /* on_reap and its arg only */
    int stop_fd;            /* eventfd: wakes the thread's poll to stop */
    pthread_t thread;
    bool started;
    _Atomic bool lost, told;
    int64_t last_ok_ns; /* monotonic: when the last successful renewal was sent */
};

static int64_t
mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
event(struct pg_node *n, enum store_event ev, int64_t id)
{
    if (n->on_event != NULL)
        n->on_event(n->on_event_arg, ev, id);
}

int64_t
pg_node_id(const struct pg_node *n)
{
    return n->id;
}

bool
pg_node_lost(const struct pg_node *n)
{
    return atomic_load(&n->lost);
}

void
pg_node_set_lost(struct pg_node *n)
{
    atomic_store(&n->lost, true);
    if (!atomic_exchange(&n->told, true))
        event(n, STORE_EVENT_LEASE_LOST, 0);
}

/* Runs sql with text parameters on the node's connection; returns owned
 * *out (may be NULL: not wanted). */
static int
q(struct pg_node *n, const char *sql, int np, const char *const *v, PGresult **out)
{
    PGresult *r = PQexecParams(n->c->pg, sql, np, NULL, v, NULL, NULL, 0);
    ExecStatusType s = PQresultStatus(r);

    if (out != NULL)
        *out = NULL;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        int rc = pg_errno(r);
        PQclear(r);
        return rc;
    }
    if (out != NULL)
        *out = r;
    else
        PQclear(r);
    return 0;
}

/* "12 J1,2,3": the sender's lease, a kind, ids. */
static void
on_notify(struct pg_node *n, const char *payload)
{
    char *end;
    int64_t from = strtoll(payload, &end, 10), id;
    char kind;

    if (end == payload || *end != ' ' || from == n->id)
        return;
    kind = end[1];
    end += 2;
    if (kind == 'W') {
        event(n, STORE_EVENT_WAKE, 0);
        return;
    }
    if (kind != 'J' && kind != 'C')
        return;
    while (*end != '\0') {
        id = strtoll(end, &end, 10);
        if (id > 0)
            event(n, kind == 'J' ? STORE_EVENT_CHANGED : STORE_EVENT_CANCEL, id);
        if (*end != ',')
            break;
        end++;
    }
}

static void
drain_notifies(struct pg_node *n)
{
    PGnotify *nf;

    while ((nf = PQnotifies(n->c->pg)) != NULL) {
        on_notify(n, nf->extra);
        PQfreemem(nf);
    }
}

/* After a lost connection: connect again and listen again; what was said
 * meanwhile is unknown, so every dispatcher and waiter looks again. */
static void
revive(struct pg_node *n)
{
    PQreset(n->c->pg);
    if (PQstatus(n->c->pg) != CONNECTION_OK)
        return;
    if (pg_exec(n->c->pg, "SET TIME ZONE 'UTC'; LISTEN " PG_CHANNEL, NULL, 0) < 0)
        return;
    event(n, STORE_EVENT_WAKE, 0);
    event(n, STORE_EVENT_CHANGED, 0);
}

static void
renew(struct pg_node *n)
{
    char id[24];
    const char *v[1] = {id};
    int64_t t0 = mono_ns();
    PGresult *r;

    snprintf(id, sizeof(id), "%" PRId64, n->id);
    if (q(n,
          "UPDATE jobq.nodes SET heartbeat_at = now() WHERE id = $1 RETURNING (SELECT "
          "max(version) FROM jobq.schema_version)",
          1, v, &r) == 0) {
        bool mine = PQntuples(r) == 1;
        long long version = mine ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
        PQclear(r);
        if (!mine) {
            pg_node_set_lost(n); /* taken over: it thought this node dead */
            return;
        }
        if (version > pg_schema_version()) {
            /* A newer jobqd migrated the schema: this node's writes would
             * follow the old one. It stops as if its lease were lost; a
             * restart of this jobqd is refused with both versions named. */
            pg_node_set_lost(n);
            return;
        }
        n->last_ok_ns = t0;
    }
    if (mono_ns() - n->last_ok_ns >
        (int64_t)n->lease_ms * 1000000 * JOBQ_PG_LEASE_SELF_NUM / JOBQ_PG_LEASE_SELF_DEN)
        pg_node_set_lost(n);
}

/* Takes over one node whose lease expired, if nobody else is at it. */
static int
take_over(struct pg_node *n, int64_t dead)
{
    char id[24];
    const char *v[1] = {id};
    PGresult *r = NULL;
    char *instance = NULL;
    int64_t retrying = 0, failed = 0;
    int rc;

    snprintf(id, sizeof(id), "%" PRId64, dead);
    if ((rc = store_pg_ops.txn(n->c, STORE_BEGIN)) < 0)
        return rc;
    /* Re-checked under the lock: it may have renewed, or been taken. */
    if ((rc = q(n,
                "SELECT instance FROM jobq.nodes WHERE id = $1 AND heartbeat_at < now() - "
                "lease_ms * interval '1 millisecond' FOR UPDATE SKIP LOCKED",
                1, v, &r)) < 0)
        goto out;
    if (PQntuples(r) != 1)
        goto out;
    if ((instance = strdup(PQgetvalue(r, 0, 0))) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = pg_interrupt_nodes(n->c, &dead, 1, job_now_ms(), n->seed ^ (uint64_t)dead, &n->reap,
                                 instance, &retrying, &failed)) < 0)
        goto out;
    rc = store_pg_ops.txn(n->c, STORE_COMMIT);
    if (rc == 0) {
        /* This node's own dispatcher and waiters, too. */
        event(n, STORE_EVENT_WAKE, 0);
        event(n, STORE_EVENT_CHANGED, 0);
    }
out:
    if (rc < 0 || PQtransactionStatus(n->c->pg) != PQTRANS_IDLE)
        store_pg_ops.txn(n->c, STORE_ROLLBACK);
    PQclear(r);
    free(instance);
    return rc;
}

static void
reap(struct pg_node *n)
{
    char id[24];
    const char *v[1] = {id};
    PGresult *r;

    snprintf(id, sizeof(id), "%" PRId64, n->id);
    if (q(n,
          "SELECT id FROM jobq.nodes WHERE id <> $1 AND heartbeat_at < now() - lease_ms * "
          "interval '1 millisecond' ORDER BY id",
          1, v, &r) < 0)
        return;
    for (int i = 0; i < PQntuples(r) && !atomic_load(&n->lost); i++)
        take_over(n, strtoll(PQgetvalue(r, i, 0), NULL, 10));
    PQclear(r);
}

/* Folds the counter changes into jobq.counts; one node at a time. */
static void
compact(struct pg_node *n)
{
    PGresult *r = NULL;
    bool got;

    if (q(n, "BEGIN", 0, NULL, NULL) < 0)
        return;
    if (q(n, "SELECT pg_try_advisory_xact_lock(" PG_COMPACT_LOCK ")", 0, NULL, &r) < 0)
        goto out;
    got = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    r = NULL;
    if (!got)
        goto out;
    if (q(n,
          "WITH d AS (DELETE FROM jobq.count_deltas RETURNING queue, state, uid, n) INSERT INTO "
          "jobq.counts (queue, state, uid, n) SELECT queue, state, uid, sum(n) FROM d GROUP BY "
          "queue, state, uid ON CONFLICT (queue, state, uid) DO UPDATE SET n = jobq.counts.n + "
          "excluded.n",
          0, NULL, NULL) < 0 ||
        q(n, "DELETE FROM jobq.counts WHERE n = 0", 0, NULL, NULL) < 0)
        goto out;
    q(n, "COMMIT", 0, NULL, NULL);
    return;
out:
    PQclear(r);
    q(n, "ROLLBACK", 0, NULL, NULL);
}

static void *
node_main(void *arg)
{
    struct pg_node *n = arg;
    int64_t beat_ns = (int64_t)n->lease_ms * 1000000 / JOBQ_PG_RENEWALS_PER_LEASE;
    int64_t now = mono_ns(), next_beat = now + beat_ns,
            next_poll = now + JOBQ_PG_POLL_MS * 1000000LL,
            next_compact = now + JOBQ_PG_COMPACT_MS * 1000000LL;

    for (;;) {
        struct pollfd pf[2] = {{.fd = n->stop_fd, .events = POLLIN},
                               {.fd = PQsocket(n->c->pg), .events = POLLIN}};
        int64_t due = next_beat < next_poll ? next_beat : next_poll, wait_ms;
        if (next_compact < due)
            due = next_compact;
        wait_ms = (due - mono_ns()) / 1000000;
        if (wait_ms < 0)
            wait_ms = 0;
        /* A connection being reset has no socket: just the timer. */
        if (poll(pf, pf[1].fd >= 0 ? 2 : 1, (int)wait_ms) < 0 && errno != EINTR)
            break;
        if (pf[0].revents & POLLIN)
            break;
        if (pf[1].fd >= 0 && (pf[1].revents & (POLLIN | POLLERR | POLLHUP)) &&
            PQconsumeInput(n->c->pg) == 1)
            drain_notifies(n);
        now = mono_ns();
        if (atomic_load(&n->lost))
            continue; /* nothing more to say; wait for the stop */
        if (PQstatus(n->c->pg) != CONNECTION_OK)
            revive(n);
        if (now >= next_beat) {
            next_beat = now + beat_ns;
            renew(n);
            if (!atomic_load(&n->lost))
                reap(n);
            drain_notifies(n);
        }
        if (now >= next_compact) {
            next_compact = now + JOBQ_PG_COMPACT_MS * 1000000LL;
            compact(n);
        }
        if (now >= next_poll) {
            next_poll = now + JOBQ_PG_POLL_MS * 1000000LL;
            event(n, STORE_EVENT_WAKE, 0);
        }
    }
    return NULL;
}

static void
node_free(struct pg_node *n)
{
    if (n == NULL)
        return;
    if (n->c != NULL)
        store_pg_ops.close(n->c);
    if (n->stop_fd >= 0)
        close(n->stop_fd);
    free(n->name);
    free(n->instance);
    free(n->boot_id);
    free(n);
}

static char *
dup_or(const char *s, const char *dflt)
{
    return strdup(s != NULL ? s : dflt);
}

int
pg_node_start(const struct store_opts *opts, struct pg_node **out, char *why, size_t whylen)
{
    char host[256] = "localhost", pid[16], lease[16];
    const char *v[5];
    struct pg_node *n;
    sigset_t all, old;
    PGresult *r = NULL;
    int rc;

    if ((n = calloc(1, sizeof(*n))) == NULL)
        return -ENOMEM;
    n->stop_fd = -1;
    gethostname(host, sizeof(host) - 1);
    n->lease_ms = opts->lease_ms > 0 ? opts->lease_ms : JOBQ_PG_LEASE_MS;
    n->on_event = opts->on_event;
    n->on_event_arg = opts->on_event_arg;
    n->reap.on_reap = opts->on_reap;
    n->reap.on_reap_arg = opts->on_reap_arg;
    n->seed = opts->seed ? opts->seed : (uint64_t)mono_ns() ^ (uint64_t)getpid() << 32;
    if ((n->name = dup_or(opts->node_name, host)) == NULL ||
        (n->instance = dup_or(opts->instance, "")) == NULL ||
        (n->boot_id = dup_or(opts->boot_id, "")) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if ((n->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        rc = -errno;
        goto out;
    }
    if ((rc = pg_conn_open(opts, STORE_WRITER, &n->c, why, whylen)) < 0)
        goto out;
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    snprintf(lease, sizeof(lease), "%d", n->lease_ms);
    v[0] = n->name;
    v[1] = n->boot_id;
    v[2] = n->instance;
    v[3] = pid;
    v[4] = lease;
    n->last_ok_ns = mono_ns();
    if ((rc = q(n,
                "INSERT INTO jobq.nodes (name, boot_id, instance, pid, lease_ms) VALUES ($1, $2, "
                "$3, $4, $5) RETURNING id",
                5, v, &r)) < 0) {
        snprintf(why, whylen, "cannot register this node in jobq.nodes: %s",
                 PQerrorMessage(n->c->pg));
        goto out;
    }
    n->id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    n->c->node_id = n->id;
    if ((rc = pg_exec(n->c->pg, "LISTEN " PG_CHANNEL, why, whylen)) < 0)
        goto out;
    /* Signals belong to the daemon's main thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = -pthread_create(&n->thread, NULL, node_main, n);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0) {
        snprintf(why, whylen, "cannot start the store's node thread: %s", strerror(-rc));
        goto out;
    }
    n->started = true;
    pthread_setname_np(n->thread, "jobq-pg-node");
    *out = n;
    n = NULL;
out:
    PQclear(r);
    node_free(n);
    return rc;
}

void
pg_node_stop(struct pg_node *n)
{
    uint64_t one = 1;
    char id[24];
    const char *v[1] = {id};

    if (n == NULL)
        return;
    if (n->started) {
        (void)!write(n->stop_fd, &one, sizeof(one));
        pthread_join(n->thread, NULL);
    }
    /* A clean stop: the lease goes with the node, unless attempts of it
     * are still open (then it expires and another node takes them). */
    if (!atomic_load(&n->lost) && PQstatus(n->c->pg) == CONNECTION_OK) {
        snprintf(id, sizeof(id), "%" PRId64, n->id);
        q(n,
          "DELETE FROM jobq.nodes WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM jobq.jobs "
          "WHERE run_started > 0 AND run_node = $1)",
          1, v, NULL);
    }
    node_free(n);
}
