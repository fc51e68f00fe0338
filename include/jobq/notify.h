/*
 * notify — the service manager's notification protocol (sd_notify(3)),
 * spoken directly on $NOTIFY_SOCKET without libsystemd. Each message is
 * one datagram of newline-separated VAR=VALUE assignments sent to a Unix
 * datagram socket: a path ("/run/systemd/notify") or an abstract name
 * ("@name", a leading NUL on the wire). What jobqd sends, and when:
 *
 *   READY=1, MAINPID=<pid>, STATUS=...   once the store is open, recovery
 *                                        is done and the job socket listens
 *   STATUS=running 3, queued 12, 1520 done
 *                                        when the counts change, at most
 *                                        one per JOBQ_NOTIFY_STATUS_MIN_MS;
 *                                        nothing while nothing changes
 *   RELOADING=1, MONOTONIC_USEC=<us>     SIGHUP: the reload begins
 *   READY=1, STATUS=...                  the reload is done
 *   STOPPING=1, STATUS=draining ...      SIGTERM/SIGINT: the drain begins
 *   WATCHDOG=1                           every WATCHDOG_USEC/2, only when
 *                                        $WATCHDOG_USEC is set and
 *                                        $WATCHDOG_PID (if set) is ours,
 *                                        and only while every scheduler
 *                                        thread still runs its coroutines
 *
 * A notifier exists only when $NOTIFY_SOCKET is set: every function takes
 * NULL and does nothing then, so the daemon calls them unconditionally.
 * Sends never block a scheduler thread (MSG_DONTWAIT): a status update
 * the manager's queue has no room for is dropped (the next one carries
 * the same counts), READY/RELOADING/STOPPING are tried again for a short
 * while. docs/OPERATIONS.md describes the protocol for operators.
 */
#ifndef JOBQ_NOTIFY_H
#define JOBQ_NOTIFY_H

#include <stddef.h>
#include <stdint.h>

struct notify;
struct rt;

/*
 * Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from envp (a
 * NULL-terminated "NAME=value" array). Returns 0 with *out NULL when
 * NOTIFY_SOCKET is unset or empty; -EINVAL with a reason in why for an
 * address that is neither an absolute path nor "@name" (or too long);
 * -errno if the socket cannot be made. Returns owned *out (notify_free).
 * Borrows envp. The caller unsets the variables afterwards so that jobs do
 * not inherit them.
 */
int notify_new(char *const *envp, struct notify **out, char *why, size_t whylen);
/* NULL-safe. After notify_stop. */
void notify_free(struct notify *n);

/* The watchdog interval asked for, in microseconds; 0 if none (or n is
 * NULL). */
int64_t notify_watchdog_usec(const struct notify *n);

/* Sends one datagram: msg as given (assignments separated by "\n").
 * Returns 0, -EAGAIN when the manager's queue stayed full, or -errno.
 * Borrows msg. Safe from any thread. */
int notify_send(struct notify *n, const char *msg);

/* READY=1, MAINPID=getpid() and STATUS=status (omitted if NULL or "").
 * Borrows status. */
int notify_ready(struct notify *n, const char *status);
/* RELOADING=1 with MONOTONIC_USEC (what Type=notify-reload expects). */
int notify_reloading(struct notify *n);
/* STOPPING=1 and STATUS=status (omitted if NULL or ""). Borrows status. */
int notify_stopping(struct notify *n, const char *status);

/* Composes the live status line into buf (NUL-terminated); returns 0 or
 * -errno (then nothing is sent). Runs on a coroutine and may park. */
typedef int (*notify_status_fn)(void *arg, char *buf, size_t len);

/*
 * Starts the coroutines: one that sends STATUS=<status()> after each
 * notify_changed (coalesced, at most one per min_interval_ns, 0 meaning
 * JOBQ_NOTIFY_STATUS_MIN_MS, and only when the text differs from the last
 * one sent), and when the watchdog is on, one per scheduler thread whose
 * ticks prove that thread still schedules, the first of them sending
 * WATCHDOG=1. Idle, none of them wakes except the watchdog's. status may
 * be NULL (no status updates). Call from a coroutine of rt or before
 * rt_run. Borrows rt and arg until notify_stop.
 */
int notify_start(struct notify *n, struct rt *rt, notify_status_fn status, void *arg,
                 int64_t min_interval_ns);
/* Something the status reports changed. Never blocks; safe from any
 * thread and from event callbacks. */
void notify_changed(struct notify *n);
/* Ends the coroutines and waits for them (parks the calling coroutine).
 * Idempotent. */
void notify_stop(struct notify *n);

/* The daemon's status line: "running 3, queued 12, 1520 done", with
 * "N scheduled", "N retrying" and "draining: " when they apply. arg is the
 * struct daemon. Matches notify_status_fn. */
int notify_daemon_status(void *arg, char *buf, size_t len);

#endif
