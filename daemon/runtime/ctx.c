/*
 * ctx — contexts: cancellation and deadlines flowing down a tree of work,
 * as Go's context package. A context owns the list of waiters parked on it
 * and the list of its children; cancel fires the first and recurses into
 * the second.
 *
 * Deadlines cost no timer of their own: a child's deadline is fixed at
 * creation as the earlier of its own and its parent's, ctx_err compares it
 * with the clock, and every blocking call arms its one timer for the
 * earlier of its timeout and its context's deadline.
 */
#include <errno.h>
#include <stdlib.h>

#include "rt_int.h"

struct ctx {
    struct spin lock;
    atomic_int refs;
    atomic_int err;
    int64_t deadline;
    struct ctx *parent;
    struct ctx *children;
    struct ctx *sib_prev, *sib_next;
    struct ctx *cancel_next; /* scratch list while cancel walks children */
    struct ctx_reg *regs;
};

static void
ctx_unref(struct ctx *c)
{
    while (c != NULL && atomic_fetch_sub(&c->refs, 1) == 1) {
        struct ctx *parent = c->parent;
        free(c);
        c = parent;
    }
}

static int
ctx_make(struct ctx *parent, int64_t deadline, struct ctx **out)
{
    struct ctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return -ENOMEM;
    atomic_init(&c->refs, 1);
    c->deadline = deadline;
    if (parent != NULL) {
        if (parent->deadline < c->deadline)
            c->deadline = parent->deadline;
        atomic_fetch_add(&parent->refs, 1);
        c->parent = parent;
        spin_lock(&parent->lock);
        int perr = atomic_load(&parent->err);
        if (perr != 0) {
            atomic_store(&c->err, perr); /* born done */
        } else {
            c->sib_next = parent->children;
            if (parent->children != NULL)
                parent->children->sib_prev = c;
            parent->children = c;
        }
        spin_unlock(&parent->lock);
    }
    *out = c;
    return 0;
}

int
ctx_new(struct ctx *parent, struct ctx **out)
{
    return ctx_make(parent, INT64_MAX, out);
}

int
ctx_with_deadline(struct ctx *parent, int64_t deadline_ns, struct ctx **out)
{
    return ctx_make(parent, deadline_ns, out);
}

int
ctx_with_timeout(struct ctx *parent, int64_t timeout_ns, struct ctx **out)
{
    int64_t now = rt_now_ns();
    if (timeout_ns < 0)
        return -EINVAL;
    return ctx_make(parent, timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns, out);
}

static void
cancel_with(struct ctx *c, int err)
{
    struct ctx *kids = NULL;
    struct ctx_reg *r;

    spin_lock(&c->lock);
    if (atomic_load(&c->err) != 0) {
        spin_unlock(&c->lock);
        return;
    }
    atomic_store(&c->err, err);
    /* Waiters unregister under this lock, so each is still valid here. */
    while ((r = c->regs) != NULL) {
        c->regs = r->next;
        r->prev = r->next = NULL;
        r->linked = false;
        waiter_fire(r->w, err, -1);
    }
    /* Hold a reference on each child so it survives a concurrent
     * ctx_free until we have canceled it. */
    for (struct ctx *k = c->children; k != NULL; k = k->sib_next) {
        atomic_fetch_add(&k->refs, 1);
        k->cancel_next = kids;
        kids = k;
    }
    spin_unlock(&c->lock);
    while (kids != NULL) {
        struct ctx *k = kids;
        kids = k->cancel_next;
        cancel_with(k, err);
        ctx_unref(k);
    }
}

void
ctx_cancel(struct ctx *c)
{
    if (c != NULL)
        cancel_with(c, RT_ECANCELED);
}

void
ctx_free(struct ctx *c)
{
    struct ctx *parent;

    if (c == NULL)
        return;
    cancel_with(c, RT_ECANCELED);
    if ((parent = c->parent) != NULL) {
        spin_lock(&parent->lock);
        if (c->sib_prev != NULL)
            c->sib_prev->sib_next = c->sib_next;
        else if (parent->children == c)
            parent->children = c->sib_next;
        if (c->sib_next != NULL)
            c->sib_next->sib_prev = c->sib_prev;
        c->sib_prev = c->sib_next = NULL;
        spin_unlock(&parent->lock);
    }
    ctx_unref(c);
}

int
ctx_err(const struct ctx *c)
{
    int e;
    if (c == NULL)
        return 0;
    if ((e = atomic_load_explicit(&((struct ctx *)c)->err, memory_order_acquire)) != 0)
        return e;
    if (c->deadline != INT64_MAX && rt_now_ns() >= c->deadline)
        return RT_EDEADLINE;
    return 0;
}

int64_t
ctx_deadline(const struct ctx *c)
{
    return c ? c->deadline : INT64_MAX;
}

bool
ctx_register(struct ctx *c, struct ctx_reg *reg, struct waiter *w)
{
    spin_lock(&c->lock);
    if (atomic_load(&c->err) != 0) {
        spin_unlock(&c->lock);
        return false;
    }
    reg->ctx = c;
    reg->w = w;
    reg->linked = true;
    reg->prev = NULL;
    reg->next = c->regs;
    if (c->regs != NULL)
        c->regs->prev = reg;
    c->regs = reg;
    spin_unlock(&c->lock);
    return true;
}

void
ctx_unregister(struct ctx_reg *reg)
{
    /* The caller holds its context for the whole call, so reg->ctx is
     * valid; whether cancel already unlinked us is known under the lock. */
    struct ctx *c = reg->ctx;
    spin_lock(&c->lock);
    if (reg->linked) {
        if (reg->prev != NULL)
            reg->prev->next = reg->next;
        else
            c->regs = reg->next;
        if (reg->next != NULL)
            reg->next->prev = reg->prev;
        reg->linked = false;
    }
    spin_unlock(&c->lock);
}
