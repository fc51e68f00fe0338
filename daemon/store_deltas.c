/*
 * store_deltas — see store_deltas.h. A group touches a handful of keys, so
 * a linear search beats any index.
 */
#include "store_deltas.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int
store_deltas_add(struct store_deltas *d, const char *queue, uid_t uid, int state, int64_t n)
{
    struct store_delta *e;

    for (int i = 0; i < d->n; i++) {
        e = &d->v[i];
        if (e->state == state && e->uid == uid && strcmp(e->queue, queue) == 0) {
            e->n += n;
            return 0;
        }
    }
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 8;
        if ((e = realloc(d->v, (size_t)cap * sizeof(*e))) == NULL)
            return -ENOMEM;
        d->v = e;
        d->cap = cap;
    }
    e = &d->v[d->n];
    if ((e->queue = strdup(queue)) == NULL)
        return -ENOMEM;
    e->uid = uid;
    e->state = state;
    e->n = n;
    d->n++;
    return 0;
}

void
store_deltas_truncate(struct store_deltas *d, int keep)
{
    for (int i = keep; i < d->n; i++)
        free(d->v[i].queue);
    if (d->n > keep)
        d->n = keep;
}

int
store_deltas_mark(struct store_deltas *d)
{
    if (d->n > d->capsnap) {
        int64_t *v = realloc(d->snap, (size_t)d->n * 2 * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        d->snap = v;
        d->capsnap = d->n * 2;
    }
    for (int i = 0; i < d->n; i++)
        d->snap[i] = d->v[i].n;
    d->nsnap = d->n;
    return 0;
}

void
store_deltas_rollback(struct store_deltas *d)
{
    store_deltas_truncate(d, d->nsnap);
    for (int i = 0; i < d->n; i++)
        d->v[i].n = d->snap[i];
}

void
store_deltas_free(struct store_deltas *d)
{
    store_deltas_truncate(d, 0);
    free(d->v);
    free(d->snap);
    *d = (struct store_deltas){0};
}
