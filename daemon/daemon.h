/*
 * daemon.h — struct daemon, the one owner of jobqd's state, private to
 * daemon/. main.c builds it in dependency order (config, log, store,
 * runtime, events, dispatch, server), runs it, drains it and frees it in
 * reverse; every subsystem gets a borrowed pointer to it and reads the
 * others through it. Nothing here is a global.
 */
#ifndef JOBQ_DAEMON_H
#define JOBQ_DAEMON_H

#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "jobq/config.h"
#include "jobq/exec.h"

struct rt;
struct ctx;
struct store;
struct events;
struct dispatch;
struct server;
struct metrics;
struct httpd;
struct notify;

struct daemon {
    struct config *cfg; /* current; replaced by SIGHUP's reload (owned) */
    struct rt *rt;
    struct store *store;
    struct events *events;
    struct dispatch *dispatch;
    struct server *server;
    struct metrics *metrics;
    struct httpd *httpd;   /* NULL without --http */
    struct notify *notify; /* NULL without $NOTIFY_SOCKET */
    struct exec_opts exec; /* points into the strings below */
    char log_dir[PATH_MAX];
    char db_path[PATH_MAX];
    uid_t uid;          /* the daemon's own uid: it and root administer */
    int64_t started_ms; /* Unix ms */
    /* Set when the drain starts: new work is refused with shutting_down. */
    atomic_bool draining;
    /* The store is PostgreSQL (fixed at start: store is a restart key), read
     * by the store's own threads where d->cfg may be swapped by a reload. */
    bool pg_store;
    /* Set when a sync of the database failed (store_fatal in main.c): the
     * drain then has no grace and jobqd exits 1. */
    atomic_bool store_failed;
};

#endif
