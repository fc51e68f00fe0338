/*
 * jobjson — job objects and submit specs as JSON. Encoding never fails
 * short of memory; decoding is strict and names the offending member, since
 * a typo in a spec ("timout_ms") must not silently run a job without its
 * limit.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq/duration.h"
#include "jobq/jobjson.h"
#include "jobq/limits.h"

#define JSON_INT_MAX 9007199254740992.0 /* 2^53: larger doubles lose integers */

/* Defaults of a spec (docs/PROTOCOL.md 7.1). */
#define SPEC_BACKOFF_BASE_MS 1000
#define SPEC_BACKOFF_MAX_MS 600000

static cJSON *
add_time(cJSON *o, const char *name, int64_t ms)
{
    char buf[32];
    if (ms == 0)
        return cJSON_AddNullToObject(o, name);
    return cJSON_AddStringToObject(o, name, time_format_rfc3339(ms, buf, sizeof(buf)));
}

static cJSON *
add_str(cJSON *o, const char *name, const char *s)
{
    return s ? cJSON_AddStringToObject(o, name, s) : cJSON_AddNullToObject(o, name);
}

static cJSON *
add_strv(cJSON *o, const char *name, char *const *v)
{
    cJSON *a = cJSON_AddArrayToObject(o, name);
    for (size_t i = 0; a != NULL && v != NULL && v[i] != NULL; i++) {
        cJSON *s = cJSON_CreateString(v[i]);
        if (s == NULL || !cJSON_AddItemToArray(a, s)) {
            cJSON_Delete(s);
            return NULL;
        }
    }
    return a;
}

/* exit_code and signal as the protocol shows them: null when absent. */
static void
add_status(cJSON *o, enum job_outcome outcome, int32_t exit_code, int32_t sig)
{
    bool has_exit = exit_code >= 0 && outcome != OUTCOME_NONE && outcome != OUTCOME_SIGNALED &&
                    outcome != OUTCOME_INTERRUPTED;
    if (has_exit)
        cJSON_AddNumberToObject(o, "exit_code", exit_code);
    else
        cJSON_AddNullToObject(o, "exit_code");
    if (sig > 0)
        cJSON_AddNumberToObject(o, "signal", sig);
    else
        cJSON_AddNullToObject(o, "signal");
}

static cJSON *
attempt_json(const struct job_attempt *a)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    cJSON_AddNumberToObject(o, "attempt", a->attempt);
    add_time(o, "started_at", a->started_at);
    add_time(o, "finished_at", a->finished_at);
    if (a->outcome == OUTCOME_NONE)
        cJSON_AddNullToObject(o, "outcome");
    else
        cJSON_AddStringToObject(o, "outcome", job_outcome_name(a->outcome));
    add_status(o, a->outcome, a->exit_code, a->signal);
    add_str(o, "error", a->error);
    cJSON_AddNumberToObject(o, "log_bytes", (double)a->log_bytes);
    cJSON_AddBoolToObject(o, "log_truncated", a->log_truncated);
    return o;
}

cJSON *
jobjson_job(const struct job *j, bool attempts)
{
    const struct job_spec *s = &j->spec;
    cJSON *o = cJSON_CreateObject();

    if (o == NULL)
        return NULL;
    cJSON_AddNumberToObject(o, "id", (double)j->id);
    add_str(o, "name", s->name);
    cJSON_AddStringToObject(o, "queue", s->queue ? s->queue : "default");
    cJSON_AddStringToObject(o, "state", job_state_name(j->state));
    cJSON_AddNumberToObject(o, "priority", s->priority);
    add_strv(o, "command", s->command);
    add_strv(o, "env", s->env);
    add_str(o, "cwd", s->cwd);
    add_str(o, "unique_key", s->unique_key);
    cJSON_AddNumberToObject(o, "attempt", j->attempt);
    cJSON_AddNumberToObject(o, "max_attempts", s->max_attempts);
    cJSON_AddNumberToObject(o, "backoff_base_ms", (double)s->backoff_base_ms);
    cJSON_AddNumberToObject(o, "backoff_max_ms", (double)s->backoff_max_ms);
    if (s->timeout_ms > 0)
        cJSON_AddNumberToObject(o, "timeout_ms", (double)s->timeout_ms);
    else
        cJSON_AddNullToObject(o, "timeout_ms");
    add_time(o, "deadline", s->deadline);
    add_time(o, "run_at", s->run_at);
    add_time(o, "created_at", j->created_at);
    add_time(o, "started_at", j->started_at);
    add_time(o, "finished_at", j->finished_at);
    add_time(o, "updated_at", j->updated_at ? j->updated_at : j->created_at);
    if (j->outcome == OUTCOME_NONE)
        cJSON_AddNullToObject(o, "outcome");
    else
        cJSON_AddStringToObject(o, "outcome", job_outcome_name(j->outcome));
    add_status(o, j->outcome, j->exit_code, j->signal);
    add_str(o, "error", j->error);
    cJSON_AddNumberToObject(o, "uid", (double)s->uid);
    cJSON_AddBoolToObject(o, "log_truncated", j->log_truncated);
    if (attempts) {
        cJSON *a = cJSON_AddArrayToObject(o, "attempts");
        for (int32_t i = 0; a != NULL && i < j->nattempts; i++) {
            cJSON *x = attempt_json(&j->attempts[i]);
            if (x == NULL || !cJSON_AddItemToArray(a, x)) {
                cJSON_Delete(x);
                a = NULL;
            }
        }
        if (a == NULL) {
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

cJSON *
jobjson_summary(int64_t id, enum job_state state, bool existing)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    cJSON_AddNumberToObject(o, "id", (double)id);
    cJSON_AddStringToObject(o, "state", job_state_name(state));
    if (existing)
        cJSON_AddTrueToObject(o, "existing");
    return o;
}

int
jobjson_int(const cJSON *item, int64_t lo, int64_t hi, int64_t *out)
{
    double v;
    if (!cJSON_IsNumber(item))
        return -EINVAL;
    v = item->valuedouble;
    if (!isfinite(v) || v != floor(v) || fabs(v) > JSON_INT_MAX || v < (double)lo || v > (double)hi)
        return -EINVAL;
    *out = (int64_t)v;
    return 0;
}

/* ---- spec decoding ----------------------------------------------------- */

struct dec {
    char *field;
    size_t fieldlen;
    char *why;
    size_t whylen;
};

static int __attribute__((format(printf, 3, 4)))
bad(struct dec *d, const char *field, const char *fmt, ...)
{
    va_list ap;
    snprintf(d->field, d->fieldlen, "%s", field);
    va_start(ap, fmt);
    vsnprintf(d->why, d->whylen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static bool
is_null(const cJSON *x)
{
    return x == NULL || cJSON_IsNull(x);
}

static int
dec_str(struct dec *d, const cJSON *x, const char *field, char **out)
{
    if (is_null(x))
        return 0;
    if (!cJSON_IsString(x) || x->valuestring == NULL)
        return bad(d, field, "%s must be a string", field);
    if ((*out = strdup(x->valuestring)) == NULL)
        return -ENOMEM;
    return 0;
}

static int
dec_strv(struct dec *d, const cJSON *x, const char *field, char ***out)
{
    size_t n, i = 0;
    char **v;
    const cJSON *e;

    if (is_null(x))
        return 0;
    if (!cJSON_IsArray(x))
        return bad(d, field, "%s must be an array of strings", field);
    n = (size_t)cJSON_GetArraySize(x);
    if (n > JOBQ_COMMAND_MAX_ARGS)
        return bad(d, field, "%s has too many elements", field);
    if ((v = calloc(n + 1, sizeof(*v))) == NULL)
        return -ENOMEM;
    cJSON_ArrayForEach (e, x) {
        if (!cJSON_IsString(e) || e->valuestring == NULL) {
            for (size_t k = 0; k < i; k++)
                free(v[k]);
            free(v);
            return bad(d, field, "%s must be an array of strings", field);
        }
        if ((v[i++] = strdup(e->valuestring)) == NULL) {
            for (size_t k = 0; k < i; k++)
                free(v[k]);
            free(v);
            return -ENOMEM;
        }
    }
    *out = v;
    return 0;
}

static int
dec_int(struct dec *d, const cJSON *x, const char *field, int64_t lo, int64_t hi, int64_t *out)
{
    char range[96];
    if (is_null(x))
        return 0;
    if (jobjson_int(x, lo, hi, out) == 0)
        return 0;
    snprintf(range, sizeof(range), "%s must be an integer from %lld to %lld", field, (long long)lo,
             (long long)hi);
    return bad(d, field, "%s", range);
}

static int
dec_time(struct dec *d, const cJSON *x, const char *field, int64_t now_ms, int64_t *out)
{
    char why[160];
    if (is_null(x))
        return 0;
    if (!cJSON_IsString(x) || x->valuestring == NULL || x->valuestring[0] == '+')
        return bad(d, field, "%s must be an RFC 3339 time string", field);
    if (time_parse_ms(x->valuestring, now_ms, out, why, sizeof(why)) < 0)
        return bad(d, field, "%s", why);
    return 0;
}

/* The job object's members that a spec may carry and the server ignores. */
static const char *const readonly_members[] = {
    "id",          "state",      "attempt",       "created_at", "started_at",
    "finished_at", "updated_at", "outcome",       "exit_code",  "signal",
    "error",       "uid",        "log_truncated", "attempts",   "existing",
};

static const char *const spec_members[] = {
    "command",         "queue",          "name",       "priority", "max_attempts",
    "backoff_base_ms", "backoff_max_ms", "timeout_ms", "deadline", "run_at",
    "delay_ms",        "unique_key",     "env",        "cwd",
};

static bool
member_known(const char *name)
{
    for (size_t i = 0; i < sizeof(spec_members) / sizeof(spec_members[0]); i++)
        if (strcmp(name, spec_members[i]) == 0)
            return true;
    for (size_t i = 0; i < sizeof(readonly_members) / sizeof(readonly_members[0]); i++)
        if (strcmp(name, readonly_members[i]) == 0)
            return true;
    return false;
}

int
jobjson_spec(const cJSON *obj, int64_t now_ms, struct job_spec *spec, char *field, size_t fieldlen,
             char *why, size_t whylen)
{
    struct dec d = {field, fieldlen, why, whylen};
    const cJSON *m;
    int64_t v, delay = -1;
    int rc;

    memset(spec, 0, sizeof(*spec));
    field[0] = why[0] = '\0';
    if (!cJSON_IsObject(obj))
        return bad(&d, "", "%s", "a job spec must be an object");
    cJSON_ArrayForEach (m, obj) {
        if (m->string == NULL || !member_known(m->string)) {
            rc = bad(&d, m->string ? m->string : "", "unknown member \"%s\"",
                     m->string ? m->string : "");
            goto fail;
        }
    }
    spec->max_attempts = 1;
    spec->backoff_base_ms = SPEC_BACKOFF_BASE_MS;
    spec->backoff_max_ms = -1;

    m = cJSON_GetObjectItemCaseSensitive(obj, "command");
    if (is_null(m)) {
        rc = bad(&d, "command", "%s", "command is required: an array of strings");
        goto fail;
    }
    if ((rc = dec_strv(&d, m, "command", &spec->command)) < 0 ||
        (rc = dec_strv(&d, cJSON_GetObjectItemCaseSensitive(obj, "env"), "env", &spec->env)) < 0 ||
        (rc = dec_str(&d, cJSON_GetObjectItemCaseSensitive(obj, "queue"), "queue", &spec->queue)) <
            0 ||
        (rc = dec_str(&d, cJSON_GetObjectItemCaseSensitive(obj, "name"), "name", &spec->name)) <
            0 ||
        (rc = dec_str(&d, cJSON_GetObjectItemCaseSensitive(obj, "unique_key"), "unique_key",
                      &spec->unique_key)) < 0 ||
        (rc = dec_str(&d, cJSON_GetObjectItemCaseSensitive(obj, "cwd"), "cwd", &spec->cwd)) < 0)
        goto fail;
    if (spec->command[0] == NULL) {
        rc = bad(&d, "command", "%s", "command must have at least one element");
        goto fail;
    }
    v = 0;
    if ((rc = dec_int(&d, cJSON_GetObjectItemCaseSensitive(obj, "priority"), "priority",
                      JOBQ_PRIORITY_MIN, JOBQ_PRIORITY_MAX, &v)) < 0)
        goto fail;
    spec->priority = (int32_t)v;
    v = 1;
    if ((rc = dec_int(&d, cJSON_GetObjectItemCaseSensitive(obj, "max_attempts"), "max_attempts", 1,
                      JOBQ_ATTEMPTS_MAX, &v)) < 0)
        goto fail;
    spec->max_attempts = (int32_t)v;
    if ((rc = dec_int(&d, cJSON_GetObjectItemCaseSensitive(obj, "backoff_base_ms"),
                      "backoff_base_ms", 0, JOBQ_DURATION_MAX_MS, &spec->backoff_base_ms)) < 0 ||
        (rc = dec_int(&d, cJSON_GetObjectItemCaseSensitive(obj, "backoff_max_ms"), "backoff_max_ms",
                      0, JOBQ_DURATION_MAX_MS, &spec->backoff_max_ms)) < 0 ||
        (rc = dec_int(&d, cJSON_GetObjectItemCaseSensitive(obj, "timeout_ms"), "timeout_ms", 0,
                      JOBQ_DURATION_MAX_MS, &spec->timeout_ms)) < 0 ||
        (rc = dec_int(&d, cJSON_GetObjectItemCaseSensitive(obj, "delay_ms"), "delay_ms", 0,
                      JOBQ_DURATION_MAX_MS, &delay)) < 0 ||
        (rc = dec_time(&d, cJSON_GetObjectItemCaseSensitive(obj, "deadline"), "deadline", now_ms,
                       &spec->deadline)) < 0 ||
        (rc = dec_time(&d, cJSON_GetObjectItemCaseSensitive(obj, "run_at"), "run_at", now_ms,
                       &spec->run_at)) < 0)
        goto fail;
    if (spec->backoff_max_ms < 0)
        spec->backoff_max_ms = spec->backoff_base_ms > SPEC_BACKOFF_MAX_MS ? spec->backoff_base_ms
                                                                           : SPEC_BACKOFF_MAX_MS;
    if (spec->backoff_max_ms < spec->backoff_base_ms) {
        rc = bad(&d, "backoff_max_ms", "%s", "backoff_max_ms must be at least backoff_base_ms");
        goto fail;
    }
    if (delay >= 0) {
        if (spec->run_at != 0) {
            rc = bad(&d, "delay_ms", "%s", "give run_at or delay_ms, not both");
            goto fail;
        }
        spec->run_at = delay > 0 ? now_ms + delay : 0;
    }
    if (spec->run_at != 0 && spec->run_at <= now_ms)
        spec->run_at = 0; /* a time in the past means now */
    if (spec->deadline != 0 && spec->deadline <= now_ms) {
        rc = bad(&d, "deadline", "%s", "deadline must be in the future");
        goto fail;
    }
    if (spec->run_at > now_ms + JOBQ_DURATION_MAX_MS ||
        spec->deadline > now_ms + JOBQ_DURATION_MAX_MS) {
        rc = bad(&d, spec->run_at > now_ms + JOBQ_DURATION_MAX_MS ? "run_at" : "deadline", "%s",
                 "times are limited to 10 years ahead");
        goto fail;
    }
    if (spec->cwd != NULL && spec->cwd[0] != '/') {
        rc = bad(&d, "cwd", "%s", "cwd must be an absolute path");
        goto fail;
    }
    return 0;
fail:
    job_spec_free(spec);
    memset(spec, 0, sizeof(*spec));
    return rc;
}
