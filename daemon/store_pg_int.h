/*
 * store_pg_int — what the PostgreSQL backend's files share: the connection
 * body (store_pg.c), the schema and its migrations (store_pg_schema.c) and
 * the node thread that holds this jobqd's lease, listens for the other
 * nodes' notifications and takes over the jobs of nodes whose lease ran
 * out (store_pg_node.c). Private to daemon/store_pg*.c and the store
 * tests; the rest of jobqd sees only store.h.
 */
#ifndef JOBQ_STORE_PG_INT_H
#define JOBQ_STORE_PG_INT_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jobq/store.h"
#include "store_deltas.h"

/*
 * libpq's entry points, loaded at the first open (store_pg_lib.c): jobqd
 * does not link libpq, so SQLite users do not load it and its twenty
 * dependencies. The macros below let the backend call them by their names.
 */
struct pg_api {
    __typeof__(PQclear) *PQclear;
    __typeof__(PQntuples) *PQntuples;
    __typeof__(PQgetvalue) *PQgetvalue;
    __typeof__(PQresultStatus) *PQresultStatus;
    __typeof__(PQstatus) *PQstatus;
    __typeof__(PQexec) *PQexec;
    __typeof__(PQtransactionStatus) *PQtransactionStatus;
    __typeof__(PQresultErrorMessage) *PQresultErrorMessage;
    __typeof__(PQerrorMessage) *PQerrorMessage;
    __typeof__(PQgetisnull) *PQgetisnull;
    __typeof__(PQreset) *PQreset;
    __typeof__(PQfinish) *PQfinish;
    __typeof__(PQexecParams) *PQexecParams;
    __typeof__(PQcmdTuples) *PQcmdTuples;
    __typeof__(PQsocket) *PQsocket;
    __typeof__(PQresultErrorField) *PQresultErrorField;
    __typeof__(PQprepare) *PQprepare;
    __typeof__(PQnotifies) *PQnotifies;
    __typeof__(PQfreemem) *PQfreemem;
    __typeof__(PQexecPrepared) *PQexecPrepared;
    __typeof__(PQconsumeInput) *PQconsumeInput;
    __typeof__(PQconnectdbParams) *PQconnectdbParams;
    __typeof__(PQcmdStatus) *PQcmdStatus;
};
extern struct pg_api pg_api;
/* Loads libpq once; -ENOENT with a reason if it cannot be had. */
int pg_lib_load(char *why, size_t whylen);

#ifndef JOBQ_PG_API_ITSELF /* store_pg_lib.c names the entries themselves */
#define PQclear pg_api.PQclear
#define PQntuples pg_api.PQntuples
#define PQgetvalue pg_api.PQgetvalue
#define PQresultStatus pg_api.PQresultStatus
#define PQstatus pg_api.PQstatus
#define PQexec pg_api.PQexec
#define PQtransactionStatus pg_api.PQtransactionStatus
#define PQresultErrorMessage pg_api.PQresultErrorMessage
#define PQerrorMessage pg_api.PQerrorMessage
#define PQgetisnull pg_api.PQgetisnull
#define PQreset pg_api.PQreset
#define PQfinish pg_api.PQfinish
#define PQexecParams pg_api.PQexecParams
#define PQcmdTuples pg_api.PQcmdTuples
#define PQsocket pg_api.PQsocket
#define PQresultErrorField pg_api.PQresultErrorField
#define PQprepare pg_api.PQprepare
#define PQnotifies pg_api.PQnotifies
#define PQfreemem pg_api.PQfreemem
#define PQexecPrepared pg_api.PQexecPrepared
#define PQconsumeInput pg_api.PQconsumeInput
#define PQconnectdbParams pg_api.PQconnectdbParams
#define PQcmdStatus pg_api.PQcmdStatus
#endif

/* The LISTEN/NOTIFY channel every node listens on. */
#define PG_CHANNEL "jobq"

struct pg_node;

/* Changes to jobq.counts(queue, state, uid), summed per key until the
 * transaction commits. */
/* A growing byte string. */
struct pg_buf {
    char *p;
    size_t len, cap;
};

struct store_conn {
    PGconn *pg;
    enum store_role role;
    char *url;
    char *node_name;
    bool prepared[64]; /* by statement id; cleared when the connection is reset */
    char err[256];     /* the server's message for the last failure */
    /* The writer's node: lease, listener, reaper (NULL on readers and on
     * the node thread's own connection). */
    struct pg_node *node;
    bool node_borrowed; /* the claims' connection: node is the writer's */
    int64_t node_id;    /* the lease this connection's claims record */
    int (*fault)(void *arg, enum store_fault_point point);
    void *fault_arg;
    /* Per transaction: counter changes and what to tell the other nodes
     * at COMMIT (NOTIFY is delivered only if the transaction commits). */
    struct store_deltas d;
    bool wake;
    struct pg_buf changed, canceled; /* comma-separated job ids */
    /* The request's "savepoint": the amounts above when it began, so a
     * refused request leaves nothing behind (every SQL error is a storage
     * error that fails the whole group, so no SQL savepoint is needed). */
    size_t snap_changed, snap_canceled;
    bool snap_wake;
};

/* ---- store_pg.c: connections and statements ---- */

/* Connects to url with jobqd's settings. Returns owned *out (PQfinish).
 * why gets libpq's reason (never the URL: it may hold a password). */
int pg_connect(const char *url, const char *app, PGconn **out, char *why, size_t whylen);
/* SQLSTATE (or a lost connection) to -errno: storage errors only. */
int pg_errno(const PGresult *r);
/* Runs sql (no parameters, may hold several statements). 0 or -errno,
 * with the server's message in why. */
int pg_exec(PGconn *pg, const char *sql, char *why, size_t whylen);
/* Opens a connection of role as the backend does (settings, prepared
 * statements on demand) without a node: the node thread's own. Returns
 * owned *out (store_pg_ops.close). */
int pg_conn_open(const struct store_opts *opts, enum store_role role, struct store_conn **out,
                 char *why, size_t whylen);
/*
 * Records the open attempts of the nodes ids[0..n) as interrupted and
 * re-queues their jobs (retrying with backoff, or failed past the
 * deadline), then deletes those nodes; inside a transaction of c, which
 * must hold the nodes' rows FOR UPDATE. on_reap (may be NULL) sees the
 * attempts first and may refuse (-errno: nothing changes). Counts may be
 * NULL.
 */
int pg_interrupt_nodes(struct store_conn *c, const int64_t *ids, int n, int64_t now, uint64_t seed,
                       const struct store_opts *opts, const char *instance, int64_t *retrying,
                       int64_t *failed);
/* Writes the transaction's counter changes and notifications (before
 * COMMIT). */
int pg_flush(struct store_conn *c);

/* ---- store_pg_schema.c ---- */

/* The schema version this build writes. */
int pg_schema_version(void);
/* Creates or migrates the jobq schema under a transaction-level advisory
 * lock, so nodes starting together take turns. A newer version, or a
 * schema jobq that is not ours, is -EINVAL with a reason. */
int pg_migrate(PGconn *pg, int target, char *why, size_t whylen);

/* ---- store_pg_node.c ---- */

/* Registers this node (a row of jobq.nodes: its lease) and starts its
 * thread. Borrows opts (copies what it keeps). Returns owned *out
 * (pg_node_stop). */
int pg_node_start(const struct store_opts *opts, struct pg_node **out, char *why, size_t whylen);
/* NULL-safe. Stops the thread; the lease row goes if no attempt of it is
 * still open (else it expires and is taken over). */
void pg_node_stop(struct pg_node *n);
int64_t pg_node_id(const struct pg_node *n);
/* True once the lease is lost (for good: the node must restart). */
bool pg_node_lost(const struct pg_node *n);
/* The lease is gone (a claim found its row deleted): tell the owner. */
void pg_node_set_lost(struct pg_node *n);

#endif
