/*
 * events — who waits for which job. A `wait` call, a `logs --follow` read
 * or anything else that needs to know when a job changes registers a
 * watcher under the job's id; whoever changes the job (the dispatcher, the
 * cancel handler) notifies that id. Wake-ups coalesce: a watcher learns
 * "something changed", then reads the store for what.
 *
 * Owns a hash of watch nodes under one mutex held only for list surgery
 * and non-blocking channel sends; safe from any thread.
 */
#ifndef JOBQ_EVENTS_H
#define JOBQ_EVENTS_H

#include <stddef.h>
#include <stdint.h>

struct events;
struct watcher;
struct ctx;

/* Returns owned *out (events_free). */
int events_new(struct events **out);
/* NULL-safe. No watcher may remain. */
void events_free(struct events *ev);

/* A watcher for n job ids (n may be 0: it then hears only
 * events_notify_all). Returns owned *out (watcher_free), registered from
 * now on, so a change after this call is never missed. Borrows ids. */
int watcher_new(struct events *ev, const int64_t *ids, size_t n, struct watcher **out);
/* NULL-safe. Unregisters and frees. */
void watcher_free(struct watcher *w);
/* Parks until one of the ids was notified since the last call (or since
 * watcher_new). Returns 0, RT_ETIMEDOUT, or the context's status. */
int watcher_wait(struct watcher *w, struct ctx *ctx, int64_t timeout_ns);

/* Wakes the watchers of id. Never blocks. */
void events_notify(struct events *ev, int64_t id);
/* Wakes every watcher (shutdown, purge, changes made inside the store). */
void events_notify_all(struct events *ev);

#endif
