/*
 * events — watchers of job ids. A fixed hash of buckets, each a list of
 * nodes (one node per id a watcher follows), and a list of every watcher
 * for notify_all. A watcher owns a channel of capacity one: notify does a
 * non-blocking send, so a burst of changes leaves one wake-up pending and
 * never blocks the notifier.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "jobq/events.h"
#include "jobq/runtime.h"

#define EVENTS_BUCKETS 4096

struct node {
    int64_t id;
    struct watcher *w;
    struct node *prev, *next;
};

struct watcher {
    struct events *ev;
    struct chan *ch;
    struct node *nodes;
    size_t n;
    struct watcher *prev, *next;
};

struct events {
    pthread_mutex_t lock;
    struct node *buckets[EVENTS_BUCKETS];
    struct watcher *all;
};

static size_t
bucket(int64_t id)
{
    return (size_t)((uint64_t)id * 0x9E3779B97F4A7C15ull >> 52) % EVENTS_BUCKETS;
}

int
events_new(struct events **out)
{
    struct events *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return -ENOMEM;
    pthread_mutex_init(&ev->lock, NULL);
    *out = ev;
    return 0;
}

void
events_free(struct events *ev)
{
    if (ev == NULL)
        return;
    pthread_mutex_destroy(&ev->lock);
    free(ev);
}

int
watcher_new(struct events *ev, const int64_t *ids, size_t n, struct watcher **out)
{
    struct watcher *w = calloc(1, sizeof(*w));
    int rc;

    if (w == NULL)
        return -ENOMEM;
    if ((rc = chan_new(0, 1, &w->ch)) < 0)
        goto fail;
    if (n > 0 && (w->nodes = calloc(n, sizeof(*w->nodes))) == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    w->ev = ev;
    w->n = n;
    pthread_mutex_lock(&ev->lock);
    for (size_t i = 0; i < n; i++) {
        struct node *nd = &w->nodes[i], **b = &ev->buckets[bucket(ids[i])];
        nd->id = ids[i];
        nd->w = w;
        nd->next = *b;
        if (*b != NULL)
            (*b)->prev = nd;
        *b = nd;
    }
    w->next = ev->all;
    if (ev->all != NULL)
        ev->all->prev = w;
    ev->all = w;
    pthread_mutex_unlock(&ev->lock);
    *out = w;
    return 0;
fail:
    chan_free(w->ch);
    free(w);
    return rc;
}

void
watcher_free(struct watcher *w)
{
    struct events *ev;

    if (w == NULL)
        return;
    ev = w->ev;
    pthread_mutex_lock(&ev->lock);
    for (size_t i = 0; i < w->n; i++) {
        struct node *nd = &w->nodes[i];
        if (nd->prev != NULL)
            nd->prev->next = nd->next;
        else
            ev->buckets[bucket(nd->id)] = nd->next;
        if (nd->next != NULL)
            nd->next->prev = nd->prev;
    }
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        ev->all = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    pthread_mutex_unlock(&ev->lock);
    chan_free(w->ch);
    free(w->nodes);
    free(w);
}

int
watcher_wait(struct watcher *w, struct ctx *ctx, int64_t timeout_ns)
{
    return chan_recv(w->ch, NULL, ctx, timeout_ns);
}

void
events_notify(struct events *ev, int64_t id)
{
    pthread_mutex_lock(&ev->lock);
    for (struct node *nd = ev->buckets[bucket(id)]; nd != NULL; nd = nd->next)
        if (nd->id == id)
            chan_send(nd->w->ch, NULL, NULL, 0); /* full: a wake-up is pending */
    pthread_mutex_unlock(&ev->lock);
}

void
events_notify_all(struct events *ev)
{
    pthread_mutex_lock(&ev->lock);
    for (struct watcher *w = ev->all; w != NULL; w = w->next)
        chan_send(w->ch, NULL, NULL, 0);
    pthread_mutex_unlock(&ev->lock);
}
