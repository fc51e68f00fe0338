/*
 * job — the job model's plain-data helpers: state and outcome names, freeing
 * specs and jobs, the checks a spec must pass before it reaches the store
 * (sizes, UTF-8, ranges: see limits.h), the retry backoff with full jitter,
 * and the wall clock. Shared by the daemon and the client; no I/O.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobq/job.h"
#include "jobq/limits.h"

/* Unix ms of 9999-12-31T23:59:59.999Z: later times are typos, and the
 * RFC 3339 printer has four year digits. */
#define JOB_TIME_MAX_MS 253402300799999LL

static const char *const state_names[JOB_NSTATES] = {
    [JOB_SCHEDULED] = "scheduled", [JOB_QUEUED] = "queued",       [JOB_RUNNING] = "running",
    [JOB_RETRYING] = "retrying",   [JOB_SUCCEEDED] = "succeeded", [JOB_FAILED] = "failed",
    [JOB_CANCELED] = "canceled",
};

static const char *const outcome_names[OUTCOME_NOUTCOMES] = {
    [OUTCOME_NONE] = "none",
    [OUTCOME_SUCCEEDED] = "succeeded",
    [OUTCOME_EXITED] = "exited",
    [OUTCOME_SIGNALED] = "signaled",
    [OUTCOME_TIMEOUT] = "timeout",
    [OUTCOME_DEADLINE] = "deadline",
    [OUTCOME_CANCELED] = "canceled",
    [OUTCOME_INTERRUPTED] = "interrupted",
    [OUTCOME_SPAWN_ERROR] = "spawn_error",
};

const char *
job_state_name(enum job_state s)
{
    if ((unsigned)s >= JOB_NSTATES)
        return "unknown";
    return state_names[s];
}

const char *
job_outcome_name(enum job_outcome o)
{
    if ((unsigned)o >= OUTCOME_NOUTCOMES)
        return "unknown";
    return outcome_names[o];
}

int
job_state_parse(const char *name, enum job_state *s)
{
    if (name == NULL)
        return -EINVAL;
    for (int i = 0; i < JOB_NSTATES; i++) {
        if (strcmp(name, state_names[i]) == 0) {
            *s = (enum job_state)i;
            return 0;
        }
    }
    return -EINVAL;
}

int
job_outcome_parse(const char *name, enum job_outcome *o)
{
    if (name == NULL)
        return -EINVAL;
    for (int i = 0; i < OUTCOME_NOUTCOMES; i++) {
        if (strcmp(name, outcome_names[i]) == 0) {
            *o = (enum job_outcome)i;
            return 0;
        }
    }
    return -EINVAL;
}

bool
job_state_terminal(enum job_state s)
{
    return s == JOB_SUCCEEDED || s == JOB_FAILED || s == JOB_CANCELED;
}

static void
strv_free(char **v)
{
    if (v == NULL)
        return;
    for (char **p = v; *p != NULL; p++)
        free(*p);
    free(v);
}

void
job_spec_free(struct job_spec *spec)
{
    if (spec == NULL)
        return;
    free(spec->name);
    free(spec->queue);
    strv_free(spec->command);
    strv_free(spec->env);
    free(spec->cwd);
    free(spec->unique_key);
    memset(spec, 0, sizeof(*spec));
}

void
job_attempts_free(struct job_attempt *a, int32_t n)
{
    if (a == NULL)
        return;
    for (int32_t i = 0; i < n; i++)
        free(a[i].error);
    free(a);
}

void
job_free(struct job *job)
{
    if (job == NULL)
        return;
    job_spec_free(&job->spec);
    free(job->error);
    job_attempts_free(job->attempts, job->nattempts);
    free(job);
}

/*
 * Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above
 * U+10FFFF. Returns the offset of the first bad byte, or -1 if valid. Every
 * string goes through this because the store keeps JSON text and clients
 * in other languages reject invalid sequences when they read it back.
 */
static long
utf8_bad_offset(const char *str)
{
    const unsigned char *s = (const unsigned char *)str, *p = s;

    while (*p) {
        unsigned c = *p;
        int n;
        unsigned min, cp;

        if (c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1, min = 0x80, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2, min = 0x800, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return (long)(p - s);
        }
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return (long)(p - s);
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return (long)(p - s);
        p += n + 1;
    }
    return -1;
}

/* A name-like field: optional (NULL), else non-empty, short, valid UTF-8. */
static int
check_name(const char *field, const char *v, size_t max, char *why, size_t whylen)
{
    size_t n;
    long bad;

    if (v == NULL)
        return 0;
    n = strlen(v);
    if (n == 0) {
        snprintf(why, whylen, "%s is empty", field);
        return -EINVAL;
    }
    if (n > max) {
        snprintf(why, whylen, "%s is %zu bytes, more than the limit of %zu", field, n, max);
        return -EINVAL;
    }
    if ((bad = utf8_bad_offset(v)) >= 0) {
        snprintf(why, whylen, "%s is not valid UTF-8 (byte %ld)", field, bad);
        return -EINVAL;
    }
    return 0;
}

/* An argv-like array: counts bytes (each string with its NUL, as execve
 * does) against max_bytes and checks each string. */
static int
check_strv(const char *field, char *const *v, size_t max_bytes, bool env, char *why, size_t whylen)
{
    size_t total = 0, i;
    long bad;

    for (i = 0; v[i] != NULL; i++) {
        size_t n = strlen(v[i]);
        if (i >= JOBQ_COMMAND_MAX_ARGS) {
            snprintf(why, whylen, "%s has more than %d entries", field, JOBQ_COMMAND_MAX_ARGS);
            return -EINVAL;
        }
        total += n + 1;
        if (total > max_bytes) {
            snprintf(why, whylen, "%s is more than the limit of %zu bytes", field, max_bytes);
            return -EINVAL;
        }
        if ((bad = utf8_bad_offset(v[i])) >= 0) {
            snprintf(why, whylen, "%s[%zu] is not valid UTF-8 (byte %ld)", field, i, bad);
            return -EINVAL;
        }
        /* An entry without '=' or with an empty name would be dropped or
         * misread by execve's consumers. */
        if (env && (v[i][0] == '=' || strchr(v[i], '=') == NULL)) {
            snprintf(why, whylen, "%s[%zu] is not of the form NAME=VALUE", field, i);
            return -EINVAL;
        }
    }
    return 0;
}

/* A-Z a-z 0-9 . _ : -. A test per byte, not strspn: strspn builds its
 * 256-entry table on every call, and a batch validates 10,000 queues. */
static bool
queue_chars_ok(const char *q)
{
    for (const unsigned char *p = (const unsigned char *)q; *p != '\0'; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == ':' || *p == '-'))
            return false;
    return true;
}

static bool
has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static int
check_range(const char *field, int64_t v, int64_t lo, int64_t hi, char *why, size_t whylen)
{
    if (v < lo || v > hi) {
        snprintf(why, whylen, "%s %lld is out of range [%lld, %lld]", field, (long long)v,
                 (long long)lo, (long long)hi);
        return -EINVAL;
    }
    return 0;
}

int
job_spec_validate(const struct job_spec *spec, char *why, size_t whylen)
{
    int rc;

    if (spec->command == NULL || spec->command[0] == NULL || spec->command[0][0] == '\0') {
        snprintf(why, whylen, "command is empty");
        return -EINVAL;
    }
    if ((rc = check_strv("command", spec->command, JOBQ_COMMAND_MAX_BYTES, false, why, whylen)) < 0)
        return rc;
    if (spec->env != NULL &&
        (rc = check_strv("env", spec->env, JOBQ_ENV_MAX_BYTES, true, why, whylen)) < 0)
        return rc;
    if ((rc = check_name("name", spec->name, JOBQ_NAME_MAX_BYTES, why, whylen)) < 0 ||
        (rc = check_name("queue", spec->queue, JOBQ_NAME_MAX_BYTES, why, whylen)) < 0 ||
        (rc = check_name("unique key", spec->unique_key, JOBQ_NAME_MAX_BYTES, why, whylen)) < 0 ||
        (rc = check_name("cwd", spec->cwd, JOBQ_CWD_MAX_BYTES, why, whylen)) < 0)
        return rc;
    /* Queue names go into tables, logs, metrics labels and config keys:
     * the same conservative alphabet everywhere (docs/PROTOCOL.md). */
    if (spec->queue != NULL && !queue_chars_ok(spec->queue)) {
        snprintf(why, whylen, "queue \"%.64s\" has characters outside A-Z a-z 0-9 . _ : -",
                 spec->queue);
        return -EINVAL;
    }
    /* A name is printed in one table cell and one log field. */
    if (spec->name != NULL && has_control(spec->name)) {
        snprintf(why, whylen, "name has control characters");
        return -EINVAL;
    }
    /* Relative to what? The client's directory is not the daemon's. */
    if (spec->cwd != NULL && spec->cwd[0] != '/') {
        snprintf(why, whylen, "cwd \"%.64s\" is not an absolute path", spec->cwd);
        return -EINVAL;
    }
    if ((rc = check_range("priority", spec->priority, JOBQ_PRIORITY_MIN, JOBQ_PRIORITY_MAX, why,
                          whylen)) < 0 ||
        (rc = check_range("max_attempts", spec->max_attempts, 1, JOBQ_ATTEMPTS_MAX, why, whylen)) <
            0 ||
        (rc = check_range("backoff base (ms)", spec->backoff_base_ms, 0, JOBQ_DURATION_MAX_MS, why,
                          whylen)) < 0 ||
        (rc = check_range("backoff max (ms)", spec->backoff_max_ms, 0, JOBQ_DURATION_MAX_MS, why,
                          whylen)) < 0 ||
        (rc = check_range("timeout_ms", spec->timeout_ms, 0, JOBQ_DURATION_MAX_MS, why, whylen)) <
            0 ||
        (rc = check_range("deadline", spec->deadline, 0, JOB_TIME_MAX_MS, why, whylen)) < 0 ||
        (rc = check_range("run_at", spec->run_at, 0, JOB_TIME_MAX_MS, why, whylen)) < 0)
        return rc;
    if (spec->backoff_max_ms < spec->backoff_base_ms) {
        snprintf(why, whylen, "backoff max %lldms is below its base %lldms",
                 (long long)spec->backoff_max_ms, (long long)spec->backoff_base_ms);
        return -EINVAL;
    }
    /* (uid_t)-1 is chown's "unchanged": never a real submitter. */
    if (spec->uid == (uid_t)-1 || spec->gid == (gid_t)-1) {
        snprintf(why, whylen, "uid or gid is unset");
        return -EINVAL;
    }
    return 0;
}

int64_t
job_backoff_ms(int64_t base_ms, int64_t max_ms, int32_t attempt, uint64_t rnd)
{
    int64_t cap = base_ms;

    if (base_ms <= 0 || max_ms <= 0)
        return 0;
    if (attempt < 1)
        attempt = 1;
    /* Double until the cap; stop early so the shift never overflows. */
    for (int32_t i = 1; i < attempt && cap < max_ms; i++)
        cap = cap > INT64_MAX / 2 ? INT64_MAX : cap * 2;
    if (cap > max_ms)
        cap = max_ms;
    /* Full jitter (AWS "Exponential Backoff and Jitter"): uniform in
     * [0, cap], so retries of many jobs failing together spread out. */
    return (int64_t)(rnd % ((uint64_t)cap + 1));
}

int64_t
job_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
