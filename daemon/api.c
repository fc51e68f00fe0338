/*
 * api — the methods of docs/PROTOCOL.md section 7, one handler each, and
 * the table that names them: a new method is one row. Handlers validate
 * their params strictly (an unknown member is invalid_params), map store
 * errors to protocol codes in one place (store_fail), and park their
 * coroutine on the store, the events hub or the blocking pool, never their
 * thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "jobq/base64.h"
#include "jobq/dispatch.h"
#include "jobq/events.h"
#include "jobq/exec.h"
#include "jobq/jobjson.h"
#include "jobq/limits.h"
#include "jobq/log.h"
#include "jobq/metrics.h"
#include "jobq/notify.h"
#include "jobq/proto.h"
#include "jobq/rpc.h"
#include "jobq/runtime.h"
#include "jobq/server.h"
#include "jobq/store.h"

/* Per-call bounds of docs/PROTOCOL.md section 4. */
#define API_IDS_MAX 1000
#define API_LIST_MAX 1000
#define API_LIST_DEFAULT 100
#define API_LOGS_MAX (256 * 1024)
#define API_LOGS_DEFAULT (64 * 1024)
#define API_LOGS_WAIT_MAX_MS 3600000
/* A list page stops growing near this many bytes of reply. */
#define API_REPLY_SOFT_BYTES (1024 * 1024)
/* A retry held for a stopping attempt waits the kill grace plus this: the
 * time to reap the killed group and commit the attempt's end, with room
 * for a loaded machine. */
#define API_RETRY_STOP_MARGIN_MS 2000

static struct store_who
who(const struct api_call *c)
{
    return (struct store_who){.uid = c->peer->uid, .admin = c->peer->admin};
}

static cJSON *
data_str(const char *k, const char *v)
{
    cJSON *o = cJSON_CreateObject();
    if (o != NULL && k != NULL)
        cJSON_AddStringToObject(o, k, v);
    return o;
}

static cJSON *
data_id(int64_t id)
{
    cJSON *o = cJSON_CreateObject();
    if (o != NULL)
        cJSON_AddNumberToObject(o, "id", (double)id);
    return o;
}

static cJSON *__attribute__((format(printf, 3, 4)))
bad_param(struct api_call *c, const char *field, const char *fmt, ...)
{
    char reason[400];
    va_list ap;
    cJSON *data = cJSON_CreateObject();

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (data != NULL) {
        if (field != NULL && field[0] != '\0')
            cJSON_AddStringToObject(data, "field", field);
        cJSON_AddStringToObject(data, "reason", reason);
    }
    return api_fail(c, PROTO_INVALID_PARAMS, data, "%s", reason);
}

/* The protocol error for a store error; every handler goes through here. */
static cJSON *
store_fail(struct api_call *c, int rc, int64_t id)
{
    switch (rc) {
    case -ENOENT:
        return api_fail(c, PROTO_NOT_FOUND, data_id(id), "no job %" PRId64, id);
    case -EAGAIN: {
        cJSON *data = cJSON_CreateObject();
        int64_t pending = 0;
        store_count_pending(c->d->store, &pending);
        if (data != NULL) {
            cJSON_AddNumberToObject(data, "queued", (double)pending);
            cJSON_AddNumberToObject(data, "max_queued", c->d->cfg->max_queued);
        }
        return api_fail(c, PROTO_QUEUE_FULL, data,
                        "queue full: %" PRId64 " jobs wait (--max-queued %d); retry later", pending,
                        c->d->cfg->max_queued);
    }
    case -ENOMEM:
        return NULL;
    default:
        if (store_error_is_storage(rc))
            return api_fail(c, PROTO_STORAGE_ERROR, data_str("reason", strerror(-rc)),
                            "storage error: %s", strerror(-rc));
        return api_fail(c, PROTO_INTERNAL_ERROR, data_str("reason", strerror(-rc)),
                        "internal error: %s", strerror(-rc));
    }
}

static cJSON *
shutting_down(struct api_call *c)
{
    return api_fail(c, PROTO_SHUTTING_DOWN, NULL, "jobqd is shutting down; retry once it is back");
}

/* Refuses members of params not in allowed (NULL-terminated). */
static bool
only(struct api_call *c, const cJSON *params, const char *const *allowed)
{
    const cJSON *m;
    cJSON_ArrayForEach (m, params) {
        bool ok = false;
        for (size_t i = 0; allowed[i] != NULL && !ok; i++)
            ok = m->string != NULL && strcmp(m->string, allowed[i]) == 0;
        if (!ok) {
            bad_param(c, m->string, "unknown member \"%s\"", m->string ? m->string : "");
            return false;
        }
    }
    return true;
}

static const cJSON *
member(const cJSON *params, const char *name)
{
    const cJSON *m = params ? cJSON_GetObjectItemCaseSensitive(params, name) : NULL;
    return m != NULL && !cJSON_IsNull(m) ? m : NULL;
}

/* An optional integer member; *out keeps its default when absent. */
static bool
int_param(struct api_call *c, const cJSON *params, const char *name, int64_t lo, int64_t hi,
          int64_t *out)
{
    const cJSON *m = member(params, name);
    if (m == NULL)
        return true;
    if (jobjson_int(m, lo, hi, out) < 0) {
        bad_param(c, name, "%s must be an integer from %" PRId64 " to %" PRId64, name, lo, hi);
        return false;
    }
    return true;
}

/* The ids member: 1..API_IDS_MAX positive integers. Returns owned array. */
static int64_t *
ids_param(struct api_call *c, const cJSON *params, size_t *n)
{
    const cJSON *a = member(params, "ids"), *e;
    int64_t *ids;
    size_t i = 0;

    if (a == NULL && member(params, "id") != NULL) {
        /* A lone id is accepted as a one-element list. */
        if ((ids = malloc(sizeof(*ids))) == NULL)
            return NULL;
        if (jobjson_int(member(params, "id"), 1, INT64_MAX >> 10, ids) < 0) {
            free(ids);
            bad_param(c, "id", "id must be a positive integer");
            return NULL;
        }
        *n = 1;
        return ids;
    }
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) == 0 || cJSON_GetArraySize(a) > API_IDS_MAX) {
        bad_param(c, "ids", "ids must be an array of 1 to %d job ids", API_IDS_MAX);
        return NULL;
    }
    if ((ids = calloc((size_t)cJSON_GetArraySize(a), sizeof(*ids))) == NULL)
        return NULL;
    cJSON_ArrayForEach (e, a) {
        if (jobjson_int(e, 1, INT64_MAX >> 10, &ids[i]) < 0) {
            free(ids);
            bad_param(c, "ids", "ids must hold positive integers");
            return NULL;
        }
        i++;
    }
    *n = i;
    return ids;
}

static bool
id_param(struct api_call *c, const cJSON *params, int64_t *id)
{
    const cJSON *m = member(params, "id");
    if (m == NULL || jobjson_int(m, 1, INT64_MAX >> 10, id) < 0) {
        bad_param(c, "id", "id must be a positive integer");
        return false;
    }
    return true;
}

/* A `state` array of names into bits. terminal_only: purge's rule. */
static bool
states_param(struct api_call *c, const cJSON *params, const char *name, bool terminal_only,
             unsigned *bits)
{
    const cJSON *a = member(params, name), *e;
    *bits = 0;
    if (a == NULL)
        return true;
    if (cJSON_IsString(a)) {
        enum job_state s;
        if (job_state_parse(a->valuestring, &s) < 0 || (terminal_only && !job_state_terminal(s))) {
            bad_param(c, name, "unknown%s state \"%s\"", terminal_only ? " terminal" : "",
                      a->valuestring);
            return false;
        }
        *bits = 1u << s;
        return true;
    }
    if (!cJSON_IsArray(a)) {
        bad_param(c, name, "%s must be an array of state names", name);
        return false;
    }
    cJSON_ArrayForEach (e, a) {
        enum job_state s;
        if (!cJSON_IsString(e) || job_state_parse(e->valuestring, &s) < 0 ||
            (terminal_only && !job_state_terminal(s))) {
            bad_param(c, name, "%s holds an unknown%s state", name,
                      terminal_only ? " or non-terminal" : "");
            return false;
        }
        *bits |= 1u << s;
    }
    return true;
}

/* ---- submit ----------------------------------------------------------- */

static bool
may_submit(struct api_call *c)
{
    struct daemon *d = c->d;
    if (atomic_load(&d->draining)) {
        shutting_down(c);
        return false;
    }
    /* Only a root daemon can run a job as its submitter; any other daemon
     * would run it as itself, which the submitter never asked for. */
    if (d->uid != 0 && c->peer->uid != d->uid) {
        api_fail(c, PROTO_PERMISSION_DENIED,
                 data_str("reason", "this jobqd runs jobs only for its own uid"),
                 "permission denied: jobqd runs as uid %u and runs jobs only for it",
                 (unsigned)d->uid);
        return false;
    }
    return true;
}

static int
parse_spec(struct api_call *c, const cJSON *obj, int64_t now, struct job_spec *spec, int index)
{
    char field[64], why[400];
    int rc = jobjson_spec(obj, now, spec, field, sizeof(field), why, sizeof(why));

    if (rc == 0) {
        spec->uid = c->peer->uid;
        spec->gid = c->peer->gid;
        if ((rc = job_spec_validate(spec, why, sizeof(why))) < 0) {
            field[0] = '\0';
            job_spec_free(spec);
        }
    }
    if (rc == -EINVAL) {
        cJSON *data = cJSON_CreateObject();
        if (data != NULL) {
            if (field[0] != '\0')
                cJSON_AddStringToObject(data, "field", field);
            cJSON_AddStringToObject(data, "reason", why);
            if (index >= 0)
                cJSON_AddNumberToObject(data, "index", index);
        }
        if (index >= 0)
            api_fail(c, PROTO_INVALID_PARAMS, data, "job %d of the batch: %s", index, why);
        else
            api_fail(c, PROTO_INVALID_PARAMS, data, "%s", why);
    }
    return rc;
}

static cJSON *
submit_batch(struct api_call *c, const cJSON *jobs, int64_t now)
{
    struct daemon *d = c->d;
    int n = cJSON_GetArraySize(jobs), i = 0, rc;
    struct job_spec *specs = NULL;
    int64_t *ids = NULL;
    bool *existed = NULL;
    cJSON *result = NULL, *arr;
    const cJSON *e;
    char why[400];

    if (n < 1 || n > JOBQ_BATCH_MAX_JOBS)
        return bad_param(c, "jobs", "jobs must hold 1 to %d specs", JOBQ_BATCH_MAX_JOBS);
    specs = calloc((size_t)n, sizeof(*specs));
    ids = calloc((size_t)n, sizeof(*ids));
    existed = calloc((size_t)n, sizeof(*existed));
    if (specs == NULL || ids == NULL || existed == NULL)
        goto out;
    cJSON_ArrayForEach (e, jobs) {
        if (parse_spec(c, e, now, &specs[i], i) < 0)
            goto out;
        i++;
    }
    if ((rc = store_submit_batch(d->store, specs, (size_t)n, ids, existed, why, sizeof(why))) < 0) {
        if (rc == -EINVAL)
            bad_param(c, "jobs", "%s", why);
        else
            store_fail(c, rc, 0);
        goto out;
    }
    metrics_submitted(d->metrics, n);
    dispatch_kick(d->dispatch);
    for (int k = 0; k < n; k++)
        if (!existed[k])
            log_info("job.submit", "id=%" PRId64 " queue=%s state=%s max_attempts=%d uid=%u",
                     ids[k], log_q(specs[k].queue ? specs[k].queue : "default"),
                     job_state_name(specs[k].run_at > now ? JOB_SCHEDULED : JOB_QUEUED),
                     specs[k].max_attempts, (unsigned)c->peer->uid);
    if ((result = cJSON_CreateObject()) == NULL ||
        (arr = cJSON_AddArrayToObject(result, "jobs")) == NULL)
        goto out;
    for (int k = 0; k < n; k++) {
        enum job_state st = specs[k].run_at > now ? JOB_SCHEDULED : JOB_QUEUED;
        if (existed[k]) {
            struct job *j = NULL;
            if (store_get(d->store, who(c), ids[k], &j) == 0)
                st = j->state;
            job_free(j);
        }
        cJSON_AddItemToArray(arr, jobjson_summary(ids[k], st, existed[k]));
    }
out:
    for (int k = 0; k < i; k++)
        job_spec_free(&specs[k]);
    free(specs);
    free(ids);
    free(existed);
    return result;
}

static cJSON *
api_submit(struct api_call *c, const cJSON *params)
{
    struct daemon *d = c->d;
    struct job_spec spec;
    struct job j;
    int64_t now = job_now_ms(), id;
    bool existed = false;
    char why[400];
    cJSON *o;
    int rc;

    if (!may_submit(c))
        return NULL;
    if (params != NULL && cJSON_GetObjectItemCaseSensitive(params, "jobs") != NULL) {
        static const char *const allowed[] = {"jobs", NULL};
        if (!only(c, params, allowed))
            return NULL;
        return submit_batch(c, cJSON_GetObjectItemCaseSensitive(params, "jobs"), now);
    }
    if (params == NULL)
        return bad_param(c, "command", "command is required: an array of strings");
    if (parse_spec(c, params, now, &spec, -1) < 0)
        return NULL;
    if ((rc = store_submit(d->store, &spec, &id, &existed, why, sizeof(why))) < 0) {
        job_spec_free(&spec);
        if (rc == -EINVAL)
            return bad_param(c, NULL, "%s", why);
        return store_fail(c, rc, 0);
    }
    metrics_submitted(d->metrics, 1);
    if (existed) {
        struct job *ej = NULL;
        job_spec_free(&spec);
        if ((rc = store_get(d->store, who(c), id, &ej)) < 0)
            return store_fail(c, rc, id);
        o = jobjson_job(ej, true);
        job_free(ej);
        if (o != NULL)
            cJSON_AddTrueToObject(o, "existing");
        return o;
    }
    /* Even a job due later: the loop's timer must move up to its run_at. */
    dispatch_kick(d->dispatch);
    log_info("job.submit", "id=%" PRId64 " queue=%s state=%s max_attempts=%d uid=%u", id,
             log_q(spec.queue ? spec.queue : "default"),
             job_state_name(spec.run_at > now ? JOB_SCHEDULED : JOB_QUEUED), spec.max_attempts,
             (unsigned)c->peer->uid);
    /* The job as committed, built without reading it back: a submit is the
     * hot path and the store just told us everything that differs from the
     * spec. */
    memset(&j, 0, sizeof(j));
    j.id = id;
    j.spec = spec;
    j.state = spec.run_at > now ? JOB_SCHEDULED : JOB_QUEUED;
    j.created_at = j.updated_at = now;
    if (j.spec.run_at == 0)
        j.spec.run_at = now;
    j.exit_code = -1;
    o = jobjson_job(&j, true);
    job_spec_free(&j.spec);
    return o;
}

/* ---- get, list -------------------------------------------------------- */

static cJSON *
api_get(struct api_call *c, const cJSON *params)
{
    static const char *const allowed[] = {"id", NULL};
    struct job *j = NULL;
    int64_t id;
    cJSON *o;
    int rc;

    if (!only(c, params, allowed) || !id_param(c, params, &id))
        return NULL;
    if ((rc = store_get(c->d->store, who(c), id, &j)) < 0)
        return store_fail(c, rc, id);
    o = jobjson_job(j, true);
    job_free(j);
    return o;
}

static size_t
job_weight(const struct job *j)
{
    size_t n = 600; /* the fixed fields */
    for (char **p = j->spec.command; p && *p; p++)
        n += strlen(*p) + 4;
    for (char **p = j->spec.env; p && *p; p++)
        n += strlen(*p) + 4;
    if (j->spec.cwd)
        n += strlen(j->spec.cwd);
    if (j->error)
        n += strlen(j->error);
    return n;
}

static cJSON *
api_list(struct api_call *c, const cJSON *params)
{
    static const char *const allowed[] = {"state", "queue", "limit", "before_id", NULL};
    struct store_filter f = {0};
    struct job **jobs = NULL;
    int64_t limit = API_LIST_DEFAULT, before = 0;
    const cJSON *q;
    cJSON *result = NULL, *arr;
    size_t weight = 0;
    int n = 0, rc, shown = 0;

    if (!only(c, params, allowed) || !states_param(c, params, "state", false, &f.states) ||
        !int_param(c, params, "limit", 1, API_LIST_MAX, &limit) ||
        !int_param(c, params, "before_id", 1, INT64_MAX >> 10, &before))
        return NULL;
    if ((q = member(params, "queue")) != NULL) {
        if (!cJSON_IsString(q))
            return bad_param(c, "queue", "queue must be a string");
        f.queue = q->valuestring;
    }
    f.before_id = before;
    f.limit = (int)limit;
    if ((rc = store_list(c->d->store, who(c), &f, &jobs, &n)) < 0)
        return store_fail(c, rc, 0);
    if ((result = cJSON_CreateObject()) == NULL ||
        (arr = cJSON_AddArrayToObject(result, "jobs")) == NULL)
        goto out;
    for (int i = 0; i < n; i++) {
        /* Keep the reply near 1 MiB: the page ends early, and
         * next_before_id carries on from there. */
        weight += job_weight(jobs[i]);
        if (shown > 0 && weight > API_REPLY_SOFT_BYTES)
            break;
        cJSON_AddItemToArray(arr, jobjson_job(jobs[i], false));
        shown++;
    }
    if (shown > 0 && (shown < n || n == (int)limit))
        cJSON_AddNumberToObject(result, "next_before_id", (double)jobs[shown - 1]->id);
    else
        cJSON_AddNullToObject(result, "next_before_id");
out:
    store_jobs_free(jobs, n);
    return result;
}

/* ---- logs ------------------------------------------------------------- */

struct log_read {
    const struct exec_opts *o;
    int64_t id;
    int32_t attempt;
    int64_t offset;
    void *buf;
    size_t len, n;
    int64_t size;
};

static int
log_read_blocking(void *arg)
{
    struct log_read *r = arg;
    return exec_log_read(r->o, r->id, r->attempt, r->offset, r->buf, r->len, &r->n, &r->size);
}

static const struct job_attempt *
find_attempt(const struct job *j, int32_t attempt)
{
    for (int32_t i = 0; i < j->nattempts; i++)
        if (j->attempts[i].attempt == attempt)
            return &j->attempts[i];
    return NULL;
}

static cJSON *
api_logs(struct api_call *c, const cJSON *params)
{
    static const char *const allowed[] = {"id", "attempt", "offset", "limit", "wait_ms", NULL};
    struct daemon *d = c->d;
    int64_t id, attempt = 0, offset = 0, limit = API_LOGS_DEFAULT, wait_ms = 0;
    int64_t deadline;
    struct watcher *w = NULL;
    struct job *j = NULL;
    struct log_read rd = {.o = &d->exec};
    cJSON *result = NULL;
    char *b64 = NULL;
    bool asked;
    int rc;

    if (!only(c, params, allowed) || !id_param(c, params, &id) ||
        !int_param(c, params, "attempt", 1, JOBQ_ATTEMPTS_MAX * 1000LL, &attempt) ||
        !int_param(c, params, "offset", 0, INT64_MAX >> 10, &offset) ||
        !int_param(c, params, "limit", 1, API_LOGS_MAX, &limit) ||
        !int_param(c, params, "wait_ms", 0, API_LOGS_WAIT_MAX_MS, &wait_ms))
        return NULL;
    asked = attempt > 0;
    if ((rd.buf = malloc((size_t)limit)) == NULL)
        return NULL;
    /* Watch before the first look, so output written in between wakes us. */
    if (wait_ms > 0 && (rc = watcher_new(d->events, &id, 1, &w)) < 0)
        goto out;
    deadline = rt_now_ns() + wait_ms * 1000000;
    for (;;) {
        const struct job_attempt *a;
        bool done, terminal;
        int32_t at;

        job_free(j);
        j = NULL;
        if ((rc = store_get(d->store, who(c), id, &j)) < 0) {
            store_fail(c, rc, id);
            goto out;
        }
        terminal = job_state_terminal(j->state);
        at = asked ? (int32_t)attempt : j->attempt;
        a = at > 0 ? find_attempt(j, at) : NULL;
        /* The attempt after the last one reads as empty: open while the
         * job may still start it, ended (done) once the job is terminal,
         * so a follower moving on to it is told the job ended there. */
        if (at > 0 && a == NULL && at != j->attempt + 1) {
            cJSON *data = data_id(id);
            if (data != NULL)
                cJSON_AddNumberToObject(data, "attempt", at);
            api_fail(c, PROTO_NOT_FOUND, data, "job %" PRId64 " has no attempt %d", id, at);
            goto out;
        }
        /* An attempt not started yet is empty; it has ended with the job. */
        done = a != NULL ? a->finished_at != 0 : terminal;
        rd.id = id;
        rd.attempt = at;
        rd.offset = offset;
        rd.len = (size_t)limit;
        rd.n = 0;
        rd.size = 0;
        if (a != NULL && (rc = rt_blocking(c->peer->ctx, log_read_blocking, &rd)) < 0) {
            if (rc == RT_ECANCELED || rc == RT_EDEADLINE)
                goto out;
            api_fail(c, PROTO_INTERNAL_ERROR, data_str("reason", strerror(-rc)),
                     "cannot read the log: %s", strerror(-rc));
            goto out;
        }
        int64_t left = deadline - rt_now_ns();
        if (rd.n > 0 || done || w == NULL || left <= 0) {
            size_t b64len = base64_encoded_len(rd.n);
            if ((b64 = malloc(b64len + 1)) == NULL)
                goto out;
            base64_encode(rd.buf, rd.n, b64);
            if ((result = cJSON_CreateObject()) == NULL)
                goto out;
            cJSON_AddNumberToObject(result, "id", (double)id);
            cJSON_AddNumberToObject(result, "attempt", at);
            cJSON_AddNumberToObject(result, "offset", (double)offset);
            cJSON_AddNumberToObject(result, "next_offset", (double)(offset + (int64_t)rd.n));
            cJSON_AddStringToObject(result, "data", b64);
            cJSON_AddBoolToObject(result, "eof", offset + (int64_t)rd.n >= rd.size);
            cJSON_AddBoolToObject(result, "done", done);
            cJSON_AddBoolToObject(result, "truncated", a != NULL && a->log_truncated);
            cJSON_AddStringToObject(result, "state", job_state_name(j->state));
            goto out;
        }
        rc = watcher_wait(w, c->peer->ctx, left);
        if (rc == RT_ECANCELED || rc == RT_EDEADLINE) {
            if (atomic_load(&d->draining))
                shutting_down(c);
            goto out;
        }
    }
out:
    watcher_free(w);
    job_free(j);
    free(rd.buf);
    free(b64);
    return result;
}

/* ---- wait ------------------------------------------------------------- */

/* Terminal, and for a canceled job also its process gone (the canceled
 * attempt is closed once the process has exited). */
static bool
settled(const struct job *j)
{
    if (!job_state_terminal(j->state))
        return false;
    for (int32_t i = 0; i < j->nattempts; i++)
        if (j->attempts[i].finished_at == 0)
            return false;
    return true;
}

static cJSON *
api_wait(struct api_call *c, const cJSON *params)
{
    static const char *const allowed[] = {"ids", "id", "timeout_ms", NULL};
    struct daemon *d = c->d;
    int64_t *ids, timeout_ms = -1, deadline;
    struct job **jobs = NULL;
    struct watcher *w = NULL;
    cJSON *result = NULL, *arr;
    bool timed_out = false;
    size_t n = 0;
    int rc;

    /* The timeout first: ids_param allocates. */
    if (!only(c, params, allowed) ||
        !int_param(c, params, "timeout_ms", 0, JOBQ_DURATION_MAX_MS, &timeout_ms) ||
        (ids = ids_param(c, params, &n)) == NULL)
        return NULL;
    deadline = timeout_ms >= 0 ? rt_now_ns() + timeout_ms * 1000000 : INT64_MAX;
    if ((jobs = calloc(n, sizeof(*jobs))) == NULL || (rc = watcher_new(d->events, ids, n, &w)) < 0)
        goto out;
    for (;;) {
        bool all = true;
        for (size_t i = 0; i < n; i++) {
            if (jobs[i] != NULL && settled(jobs[i]))
                continue;
            job_free(jobs[i]);
            jobs[i] = NULL;
            if ((rc = store_get(d->store, who(c), ids[i], &jobs[i])) < 0) {
                /* Purged while we waited counts as not found too. */
                store_fail(c, rc, ids[i]);
                goto out;
            }
            all &= settled(jobs[i]);
        }
        if (all)
            break;
        if (atomic_load(&d->draining)) {
            shutting_down(c);
            goto out;
        }
        int64_t left = deadline == INT64_MAX ? RT_FOREVER : deadline - rt_now_ns();
        if (left != RT_FOREVER && left <= 0) {
            timed_out = true;
            break;
        }
        rc = watcher_wait(w, c->peer->ctx, left);
        if (rc == RT_ETIMEDOUT) {
            timed_out = true;
            /* One last look: the change may have come with the timeout. */
            continue;
        }
        if (rc < 0) {
            if (atomic_load(&d->draining))
                shutting_down(c);
            goto out; /* the connection is gone: nobody to answer */
        }
    }
    if ((result = cJSON_CreateObject()) == NULL ||
        (arr = cJSON_AddArrayToObject(result, "jobs")) == NULL)
        goto out;
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, jobjson_job(jobs[i], false));
    cJSON_AddBoolToObject(result, "timed_out", timed_out);
out:
    watcher_free(w);
    for (size_t i = 0; jobs != NULL && i < n; i++)
        job_free(jobs[i]);
    free(jobs);
    free(ids);
    return result;
}

/* ---- cancel, retry ---------------------------------------------------- */

/* The per-id conflict of a cancel or retry. Its reason follows from the
 * job as it is now, so that it names what stands in the way and never
 * contradicts the state. */
static cJSON *
conflict_entry(struct api_call *c, int64_t id, bool cancel)
{
    struct job *j = NULL;
    char msg[200], what[120];
    cJSON *data = data_id(id);
    const char *state = "unknown";

    if (store_get(c->d->store, who(c), id, &j) == 0)
        state = job_state_name(j->state);
    if (j == NULL)
        snprintf(what, sizeof(what), "its state does not allow it");
    else if (cancel)
        snprintf(what, sizeof(what), "it already %s", state);
    else if (j->state != JOB_FAILED && j->state != JOB_CANCELED)
        snprintf(what, sizeof(what), "it %s %s; only a failed or canceled job can be retried",
                 j->state == JOB_SUCCEEDED ? "already" : "is", state);
    else if (j->spec.deadline > 0 && j->spec.deadline <= job_now_ms())
        snprintf(what, sizeof(what), "its deadline has passed");
    else
        snprintf(what, sizeof(what), "it has had the most attempts a job may have (%d)",
                 JOBQ_ATTEMPTS_MAX);
    snprintf(msg, sizeof(msg), "job %" PRId64 " cannot be %s: %s", id,
             cancel ? "canceled" : "retried", what);
    if (data != NULL) {
        cJSON_AddStringToObject(data, "state", state);
        cJSON_AddStringToObject(data, "reason", what);
    }
    job_free(j);
    return rpc_error_object(PROTO_CONFLICT, msg, data);
}

/* Failed or canceled, with an attempt still open: a cancel's SIGTERM to
 * SIGKILL is under way, and the job may be retried once it has ended. */
static bool
stopping(struct api_call *c, int64_t id)
{
    struct job *j = NULL;
    bool r = false;

    if (store_get(c->d->store, who(c), id, &j) == 0)
        r = (j->state == JOB_FAILED || j->state == JOB_CANCELED) && !settled(j) &&
            (j->spec.deadline == 0 || j->spec.deadline > job_now_ms());
    job_free(j);
    return r;
}

/*
 * store_retry, held while the job's last attempt is being stopped, so that
 * `jobq cancel ID && jobq retry ID` runs the job again. The store still
 * refuses while that attempt is open, which keeps the job from running
 * twice at once; the completion's events_notify wakes us, as it wakes
 * `wait`. *until (0: not set yet) bounds the hold over all of a call's ids.
 * Returns store_retry's result, -EINPROGRESS if the bound passed with the
 * attempt still open, -ESHUTDOWN if the drain began, or -ECANCELED if the
 * connection went away.
 */
static int
retry_held(struct api_call *c, int64_t id, int64_t *until)
{
    struct daemon *d = c->d;
    struct watcher *w = NULL;
    int64_t grace = d->exec.kill_grace_ms > 0 ? d->exec.kill_grace_ms : JOBQ_KILL_GRACE_MS;
    int rc;

    if ((rc = store_retry(d->store, who(c), id)) != -EBUSY || !stopping(c, id))
        return rc;
    if ((rc = watcher_new(d->events, &id, 1, &w)) < 0)
        return rc;
    if (*until == 0)
        *until = rt_now_ns() + (grace + API_RETRY_STOP_MARGIN_MS) * 1000000;
    for (;;) {
        /* Look again now that we watch: the attempt may have ended since. */
        if ((rc = store_retry(d->store, who(c), id)) != -EBUSY || !stopping(c, id))
            break;
        if (atomic_load(&d->draining)) {
            rc = -ESHUTDOWN;
            break;
        }
        int64_t left = *until - rt_now_ns();
        if (left <= 0) {
            rc = -EINPROGRESS;
            break;
        }
        rc = watcher_wait(w, c->peer->ctx, left);
        if (rc < 0 && rc != RT_ETIMEDOUT && !atomic_load(&d->draining)) {
            rc = -ECANCELED;
            break;
        }
    }
    watcher_free(w);
    return rc;
}

/* The per-id error of a retry whose hold ended with the attempt open. */
static cJSON *
not_stopped_entry(struct api_call *c, int64_t id, int rc)
{
    struct job *j = NULL;
    char msg[160];
    cJSON *data;

    if (rc == -ESHUTDOWN)
        return rpc_error_object(PROTO_SHUTTING_DOWN,
                                "jobqd is shutting down; retry once it is back", NULL);
    data = data_id(id);
    if (data != NULL && store_get(c->d->store, who(c), id, &j) == 0)
        cJSON_AddStringToObject(data, "state", job_state_name(j->state));
    if (data != NULL)
        cJSON_AddStringToObject(data, "reason", "its last attempt is still stopping");
    job_free(j);
    snprintf(msg, sizeof(msg), "job %" PRId64 " is still stopping; retry it once it has stopped",
             id);
    return rpc_error_object(PROTO_CONFLICT, msg, data);
}

static cJSON *
per_id(struct api_call *c, const cJSON *params, bool cancel)
{
    static const char *const allowed[] = {"ids", "id", NULL};
    struct daemon *d = c->d;
    int64_t *ids;
    size_t n = 0;
    cJSON *result = NULL, *arr;
    bool kick = false;
    int64_t until = 0;

    if (!only(c, params, allowed) || (ids = ids_param(c, params, &n)) == NULL)
        return NULL;
    if (atomic_load(&d->draining)) {
        free(ids);
        return shutting_down(c);
    }
    if ((result = cJSON_CreateObject()) == NULL ||
        (arr = cJSON_AddArrayToObject(result, "results")) == NULL)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        cJSON *e = NULL;
        bool running = false;
        int rc;

        if (cancel)
            rc = store_cancel(d->store, who(c), ids[i], &running, NULL);
        else
            rc = retry_held(c, ids[i], &until);
        if (rc == 0) {
            const char *st = "canceled";
            struct job *j = NULL;
            if (cancel && running)
                dispatch_cancel(d->dispatch, ids[i]);
            if (cancel)
                notify_changed(d->notify);
            /* The job as it is now: retry's reply names its state, and the
             * lifecycle line names its queue and attempt. */
            if ((!cancel || log_enabled(LOG_LEVEL_INFO)) &&
                store_get(d->store, who(c), ids[i], &j) == 0) {
                if (!cancel)
                    st = job_state_name(j->state);
                log_info(cancel ? "job.cancel" : "job.retry",
                         "id=%" PRId64 " queue=%s attempt=%d state=%s was_running=%s uid=%u",
                         ids[i], log_q(j->spec.queue ? j->spec.queue : "default"), j->attempt,
                         job_state_name(j->state), running ? "true" : "false",
                         (unsigned)c->peer->uid);
            }
            kick |= !cancel;
            events_notify(d->events, ids[i]);
            if ((e = cJSON_CreateObject()) != NULL) {
                cJSON_AddNumberToObject(e, "id", (double)ids[i]);
                cJSON_AddStringToObject(e, "state", st);
            }
            job_free(j);
        } else if (rc == -ENOENT) {
            char msg[64];
            snprintf(msg, sizeof(msg), "no job %" PRId64, ids[i]);
            if ((e = cJSON_CreateObject()) != NULL) {
                cJSON_AddNumberToObject(e, "id", (double)ids[i]);
                cJSON_AddItemToObject(e, "error",
                                      rpc_error_object(PROTO_NOT_FOUND, msg, data_id(ids[i])));
            }
        } else if (rc == -EINPROGRESS || rc == -ESHUTDOWN) {
            if ((e = cJSON_CreateObject()) != NULL) {
                cJSON_AddNumberToObject(e, "id", (double)ids[i]);
                cJSON_AddItemToObject(e, "error", not_stopped_entry(c, ids[i], rc));
            }
        } else if (rc == -ECANCELED) {
            /* The connection is gone: nobody to answer. */
            if (kick)
                dispatch_kick(d->dispatch);
            goto fail;
        } else if (rc == -EALREADY || rc == -EBUSY) {
            if ((e = cJSON_CreateObject()) != NULL) {
                cJSON_AddNumberToObject(e, "id", (double)ids[i]);
                cJSON_AddItemToObject(e, "error", conflict_entry(c, ids[i], cancel));
            }
        } else {
            int64_t bad_id = ids[i];
            cJSON_Delete(result);
            free(ids);
            return store_fail(c, rc, bad_id);
        }
        if (e == NULL)
            goto fail;
        cJSON_AddItemToArray(arr, e);
    }
    if (kick)
        dispatch_kick(d->dispatch);
    free(ids);
    return result;
fail:
    cJSON_Delete(result);
    free(ids);
    return NULL;
}

static cJSON *
api_cancel(struct api_call *c, const cJSON *params)
{
    return per_id(c, params, true);
}

static cJSON *
api_retry(struct api_call *c, const cJSON *params)
{
    return per_id(c, params, false);
}

/* ---- pause, resume, stats, purge, ping, version ----------------------- */

static cJSON *
pause_resume(struct api_call *c, const cJSON *params, bool paused)
{
    static const char *const allowed[] = {"queue", NULL};
    const cJSON *q;
    struct job_spec probe = {0};
    char why[200];
    cJSON *o;
    int rc;

    if (!only(c, params, allowed))
        return NULL;
    if ((q = member(params, "queue")) == NULL || !cJSON_IsString(q))
        return bad_param(c, "queue", "queue must be a string");
    /* The queue name rules of a spec. */
    char *argv[] = {"x", NULL};
    probe.queue = q->valuestring;
    probe.command = argv;
    probe.max_attempts = 1;
    if (job_spec_validate(&probe, why, sizeof(why)) < 0 || q->valuestring[0] == '\0')
        return bad_param(c, "queue", "%s", q->valuestring[0] ? why : "queue is empty");
    if (!c->peer->admin)
        return api_fail(c, PROTO_PERMISSION_DENIED,
                        data_str("reason", "only root or the daemon's user may pause queues"),
                        "permission denied: only root or the daemon's user may %s queues",
                        paused ? "pause" : "resume");
    if ((rc = store_queue_pause(c->d->store, q->valuestring, paused)) < 0)
        return store_fail(c, rc, 0);
    if (!paused)
        dispatch_kick(c->d->dispatch);
    log_info(paused ? "queue.pause" : "queue.resume", "queue=%s uid=%u", log_q(q->valuestring),
             (unsigned)c->peer->uid);
    if ((o = cJSON_CreateObject()) != NULL) {
        cJSON_AddStringToObject(o, "queue", q->valuestring);
        cJSON_AddBoolToObject(o, "paused", paused);
    }
    return o;
}

static cJSON *
api_pause(struct api_call *c, const cJSON *params)
{
    return pause_resume(c, params, true);
}

static cJSON *
api_resume(struct api_call *c, const cJSON *params)
{
    return pause_resume(c, params, false);
}

static cJSON *
states_obj(const int64_t *count)
{
    cJSON *o = cJSON_CreateObject();
    for (int s = 0; o != NULL && s < JOB_NSTATES; s++)
        cJSON_AddNumberToObject(o, job_state_name((enum job_state)s), (double)count[s]);
    return o;
}

static cJSON *
api_stats(struct api_call *c, const cJSON *params)
{
    static const char *const allowed[] = {NULL};
    struct daemon *d = c->d;
    struct store_stats ss;
    struct rt_stats rs;
    struct metrics_rate mr;
    cJSON *o, *qs, *t, *co, *st;
    int rc;

    if (!only(c, params, allowed))
        return NULL;
    if ((rc = store_stats(d->store, who(c), &ss)) < 0)
        return store_fail(c, rc, 0);
    rt_stats(d->rt, &rs);
    metrics_rate(d->metrics, &mr);
    if ((o = cJSON_CreateObject()) == NULL)
        goto out;
    cJSON_AddItemToObject(o, "states", states_obj(ss.count));
    qs = cJSON_AddObjectToObject(o, "queues");
    for (int i = 0; qs != NULL && i < ss.nqueues; i++) {
        struct store_queue_stats *q = &ss.queues[i];
        cJSON *x = cJSON_AddObjectToObject(qs, q->name);
        if (x == NULL)
            continue;
        cJSON_AddBoolToObject(x, "paused", q->paused);
        if (q->limit > 0)
            cJSON_AddNumberToObject(x, "concurrency", q->limit);
        else
            cJSON_AddNullToObject(x, "concurrency");
        cJSON_AddNumberToObject(x, "running", (double)q->count[JOB_RUNNING]);
        cJSON_AddItemToObject(x, "states", states_obj(q->count));
    }
    cJSON_AddNumberToObject(o, "running", (double)ss.count[JOB_RUNNING]);
    cJSON_AddNumberToObject(o, "concurrency", d->cfg->concurrency);
    if (d->cfg->max_queued > 0)
        cJSON_AddNumberToObject(o, "max_queued", d->cfg->max_queued);
    else
        cJSON_AddNullToObject(o, "max_queued");
    if ((t = cJSON_AddObjectToObject(o, "throughput")) != NULL) {
        cJSON_AddNumberToObject(t, "window_s", mr.window_s);
        cJSON_AddNumberToObject(t, "submitted", (double)mr.submitted);
        cJSON_AddNumberToObject(t, "finished", (double)mr.finished);
        cJSON_AddNumberToObject(t, "finished_per_s",
                                mr.window_s ? (double)mr.finished / mr.window_s : 0);
    }
    if ((co = cJSON_AddObjectToObject(o, "coroutines")) != NULL) {
        uint64_t parked = 0;
        for (int r = 0; r < CORO_WAIT_NREASONS; r++)
            parked += rs.parked[r];
        cJSON_AddNumberToObject(co, "total", (double)rs.live);
        cJSON_AddNumberToObject(co, "running", (double)rs.running);
        cJSON_AddNumberToObject(co, "ready", (double)rs.runnable);
        cJSON_AddNumberToObject(co, "parked", (double)parked);
        for (int r = 0; r < CORO_WAIT_NREASONS; r++) {
            char key[32];
            snprintf(key, sizeof(key), "parked_%s", coro_wait_name((enum coro_wait)r));
            cJSON_AddNumberToObject(co, key, (double)rs.parked[r]);
        }
        cJSON_AddNumberToObject(co, "peak", (double)rs.peak);
        cJSON_AddNumberToObject(co, "spawned", (double)rs.spawned);
        cJSON_AddNumberToObject(co, "threads", rs.threads);
        cJSON_AddNumberToObject(co, "stack_bytes_in_use", (double)rs.stack_bytes_in_use);
        cJSON_AddNumberToObject(co, "stacks_guarded", (double)rs.stacks_guarded);
        cJSON_AddNumberToObject(co, "blocking_queued", (double)rs.blocking_queued);
        cJSON_AddNumberToObject(co, "blocking_running", (double)rs.blocking_running);
    }
    if ((st = cJSON_AddObjectToObject(o, "store")) != NULL) {
        int64_t jobs = 0;
        for (int s = 0; s < JOB_NSTATES; s++)
            jobs += ss.count[s];
        cJSON_AddNumberToObject(st, "jobs", (double)jobs);
        cJSON_AddNumberToObject(st, "db_bytes", (double)ss.db_bytes);
        cJSON_AddNumberToObject(st, "wal_bytes", (double)ss.wal_bytes);
        cJSON_AddNumberToObject(st, "commits", (double)ss.commits);
        cJSON_AddNumberToObject(st, "commit_failures", (double)ss.commit_failures);
        cJSON_AddNumberToObject(st, "lazy_failures", (double)ss.lazy_failures);
        cJSON_AddNumberToObject(st, "commit_avg_ms",
                                ss.commits ? (double)ss.commit_ns / (double)ss.commits / 1e6 : 0);
        cJSON_AddNumberToObject(st, "writes_per_commit_avg",
                                ss.commits ? (double)ss.requests / (double)ss.commits : 0);
        cJSON_AddNumberToObject(st, "max_group", (double)ss.max_group);
        cJSON_AddNumberToObject(st, "checkpoints", (double)ss.checkpoints);
    }
    cJSON_AddNumberToObject(o, "connections", server_connections(d->server));
    cJSON_AddNumberToObject(o, "uptime_ms", (double)(job_now_ms() - d->started_ms));
out:
    store_stats_free(&ss);
    return o;
}

struct purged {
    int64_t *ids;
    size_t n, cap;
};

static void
on_purged(void *arg, const int64_t *ids, int n)
{
    struct purged *p = arg;
    if (p->n + (size_t)n > p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 1024;
        while (cap < p->n + (size_t)n)
            cap *= 2;
        int64_t *v = realloc(p->ids, cap * sizeof(*v));
        if (v == NULL)
            return; /* the logs stay behind; purge itself went through */
        p->ids = v;
        p->cap = cap;
    }
    memcpy(p->ids + p->n, ids, (size_t)n * sizeof(*ids));
    p->n += (size_t)n;
}

struct remove_logs {
    const struct exec_opts *o;
    struct purged *p;
};

static int
remove_logs_blocking(void *arg)
{
    struct remove_logs *r = arg;
    for (size_t i = 0; i < r->p->n; i++)
        exec_log_remove(r->o, r->p->ids[i]);
    return 0;
}

static cJSON *
api_purge(struct api_call *c, const cJSON *params)
{
    static const char *const allowed[] = {"older_than_ms", "states", "state", NULL};
    struct daemon *d = c->d;
    int64_t older = 0, deleted = 0;
    unsigned states = 0, more = 0;
    struct purged p = {0};
    struct remove_logs rl = {.o = &d->exec, .p = &p};
    cJSON *o;
    int rc;

    if (!only(c, params, allowed) ||
        !int_param(c, params, "older_than_ms", 0, JOBQ_DURATION_MAX_MS, &older) ||
        !states_param(c, params, "states", true, &states) ||
        !states_param(c, params, "state", true, &more))
        return NULL;
    if (atomic_load(&d->draining))
        return shutting_down(c);
    rc =
        store_purge(d->store, who(c), job_now_ms() - older, states | more, on_purged, &p, &deleted);
    if (p.n > 0) {
        rt_blocking(NULL, remove_logs_blocking, &rl);
        events_notify_all(d->events);
    }
    free(p.ids);
    if (rc < 0)
        return store_fail(c, rc, 0);
    log_info("jobs.purge", "count=%" PRId64 " uid=%u", deleted, (unsigned)c->peer->uid);
    if ((o = cJSON_CreateObject()) != NULL)
        cJSON_AddNumberToObject(o, "purged", (double)deleted);
    return o;
}

static cJSON *
api_ping(struct api_call *c, const cJSON *params)
{
    static const char *const allowed[] = {NULL};

    if (!only(c, params, allowed))
        return NULL;
    return cJSON_CreateString("pong");
}

static cJSON *
api_version(struct api_call *c, const cJSON *params)
{
    static const char *const allowed[] = {NULL};
    cJSON *o;

    if (!only(c, params, allowed))
        return NULL;
    if ((o = cJSON_CreateObject()) != NULL) {
        cJSON_AddStringToObject(o, "version", JOBQ_VERSION);
        cJSON_AddStringToObject(o, "git", JOBQ_GIT_REV);
        cJSON_AddNumberToObject(o, "protocol", JOBQ_PROTOCOL_VERSION);
    }
    return o;
}

static const struct {
    const char *name;
    api_fn fn;
} methods[] = {
    {"submit", api_submit},   {"get", api_get},       {"list", api_list},   {"logs", api_logs},
    {"wait", api_wait},       {"cancel", api_cancel}, {"retry", api_retry}, {"pause", api_pause},
    {"resume", api_resume},   {"stats", api_stats},   {"purge", api_purge}, {"ping", api_ping},
    {"version", api_version},
};

api_fn
api_find(const char *method)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(methods[i].name, method) == 0)
            return methods[i].fn;
    return NULL;
}
