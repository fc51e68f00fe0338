/*
 * wait — the verbs that take a list of job ids: `jobq wait ID...
 * [--timeout DUR]`, which holds on the daemon's `wait` until every job is
 * terminal and exits with the outcome of the first job that did not
 * succeed (errmsg.c maps outcomes to codes; `submit --wait` uses it too),
 * and `cancel` and `retry`, which report per job. All three split a long
 * list into calls of JOBQ_CALL_MAX_IDS ids.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "fmt.h"
#include "jobq/duration.h"

enum { WAIT_TIMEOUT = 1 };

static const struct opt wait_opts[] = {
    {"timeout", 0, true, WAIT_TIMEOUT},
    OPT_COMMON,
};

/* Job ids from positional arguments into r->ids; at least one. */
static int
parse_ids(struct req *r, char **pos, size_t npos, char *why, size_t whylen)
{
    if (npos == 0 && !r->help) {
        snprintf(why, whylen, "%s: no job id given; usage: jobq %s %s", r->cmd->name, r->cmd->name,
                 r->cmd->args);
        return -EINVAL;
    }
    if ((r->ids = calloc(npos + 1, sizeof(*r->ids))) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < npos; i++)
        if (opt_id(pos[i], &r->ids[i], why, whylen) < 0)
            return -EINVAL;
    r->nids = npos;
    return 0;
}

static cJSON *
ids_array(const int64_t *ids, size_t n)
{
    cJSON *a = cJSON_CreateArray();

    for (size_t i = 0; a != NULL && i < n; i++)
        if (!cJSON_AddItemToArray(a, json_id_new(ids[i]))) {
            cJSON_Delete(a);
            return NULL;
        }
    return a;
}

/* Params {"ids": [...], "timeout_ms": N}; timeout_ms < 0 leaves it out. */
static cJSON *
wait_params(const int64_t *ids, size_t n, int64_t timeout_ms)
{
    cJSON *p = cJSON_CreateObject(), *a = ids_array(ids, n);

    if (p == NULL || a == NULL || !cJSON_AddItemToObject(p, "ids", a) ||
        (timeout_ms >= 0 && !cJSON_AddNumberToObject(p, "timeout_ms", (double)timeout_ms))) {
        if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(p, "ids")))
            cJSON_Delete(a);
        cJSON_Delete(p);
        return NULL;
    }
    return p;
}

static int
wait_parse(struct cli *c, struct req *r, int argc, char **argv, char *why, size_t whylen)
{
    struct optiter it;
    const char *arg;
    int key, rc;

    if ((rc = optiter_init(&it, argc, argv, false)) < 0)
        return rc;
    while ((key = optiter_next(&it, wait_opts, &arg, why, whylen)) > 0) {
        if (key == WAIT_TIMEOUT)
            rc = opt_duration("--timeout", arg, &r->timeout_ms, why, whylen);
        else
            rc = opt_common(c, r, key, arg) ? 0 : -EINVAL;
        if (rc < 0)
            goto out;
    }
    if ((rc = key) < 0 || (rc = parse_ids(r, it.pos, it.npos, why, whylen)) < 0)
        goto out;
    /* The first call's params, for tests; wait_ids builds its own. */
    if ((r->params = wait_params(r->ids, r->nids < JOBQ_CALL_MAX_IDS ? r->nids : JOBQ_CALL_MAX_IDS,
                                 r->timeout_ms)) == NULL)
        rc = -ENOMEM;
out:
    optiter_free(&it);
    return rc;
}

static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Moves the jobs of one reply into all. */
static void
jobs_take(cJSON *all, cJSON *res)
{
    cJSON *jobs = cJSON_GetObjectItemCaseSensitive(res, "jobs"), *j;

    while (cJSON_IsArray(jobs) && (j = cJSON_DetachItemFromArray(jobs, 0)) != NULL)
        cJSON_AddItemToArray(all, j);
}

/* The exit code for the merged reply, and the line that explains it. */
static int
wait_outcome(struct cli *c, const cJSON *jobs, bool timed_out, int64_t timeout_ms)
{
    const cJSON *j;
    char buf[512], dur[32];

    /* One unfinished job means the wait did not complete, whatever the
     * others did; a daemon that says otherwise is taken at its jobs. */
    cJSON_ArrayForEach (j, jobs) {
        if (job_exit_code(j) == EXIT_WAIT_TIMEOUT)
            timed_out = true;
    }
    cJSON_ArrayForEach (j, jobs) {
        int code = job_exit_code(j);
        if (code == EXIT_OK || timed_out)
            continue;
        job_exit_reason(j, buf, sizeof(buf));
        return cli_errorf(c, code, "%s", buf);
    }
    if (!timed_out)
        return EXIT_OK;
    /* Name the first job that is still not done. */
    cJSON_ArrayForEach (j, jobs) {
        const char *state = json_str(j, "state");
        if (job_exit_code(j) != EXIT_WAIT_TIMEOUT)
            continue;
        long long id = (long long)json_int(j, "id", 0);
        if (timeout_ms < 0)
            return cli_errorf(c, EXIT_WAIT_TIMEOUT,
                              "jobqd ended the wait with job %lld still %s (wait again)", id,
                              state != NULL ? state : "unfinished");
        return cli_errorf(c, EXIT_WAIT_TIMEOUT,
                          "job %lld is still %s after %s (wait again, or 'jobq cancel %lld')", id,
                          state != NULL ? state : "unfinished",
                          duration_format(timeout_ms, dur, sizeof(dur)), id);
    }
    return cli_errorf(c, EXIT_WAIT_TIMEOUT, "timed out after %s",
                      duration_format(timeout_ms, dur, sizeof(dur)));
}

int
wait_ids(struct cli *c, const int64_t *ids, size_t n, int64_t timeout_ms, cJSON **result)
{
    int64_t until = timeout_ms >= 0 ? mono_ms() + timeout_ms : -1;
    cJSON *all = NULL, *jobs, *res = NULL, *params;
    bool timed_out = false;
    int code;

    if (result != NULL)
        *result = NULL;
    if ((all = cJSON_CreateObject()) == NULL ||
        (jobs = cJSON_AddArrayToObject(all, "jobs")) == NULL) {
        cJSON_Delete(all);
        return cli_errorf(c, EXIT_PROTOCOL, "out of memory");
    }
    for (size_t i = 0; i < n; i += JOBQ_CALL_MAX_IDS) {
        size_t k = n - i < JOBQ_CALL_MAX_IDS ? n - i : JOBQ_CALL_MAX_IDS;
        int64_t left = -1;
        if (until >= 0) {
            left = until - mono_ms();
            left = left < 0 || timed_out ? 0 : left;
        }
        if ((params = wait_params(ids + i, k, left)) == NULL) {
            code = cli_errorf(c, EXIT_PROTOCOL, "out of memory");
            goto out;
        }
        if ((code = cli_call(c, "wait", params, &res)) != 0)
            goto out;
        timed_out |= json_bool(res, "timed_out");
        jobs_take(jobs, res);
        cJSON_Delete(res);
        res = NULL;
    }
    if (!cJSON_AddBoolToObject(all, "timed_out", timed_out)) {
        code = cli_errorf(c, EXIT_PROTOCOL, "out of memory");
        goto out;
    }
    code = wait_outcome(c, jobs, timed_out, timeout_ms);
    if (result != NULL) {
        *result = all;
        all = NULL;
    }
out:
    cJSON_Delete(res);
    cJSON_Delete(all);
    return code;
}

static int
wait_run(struct cli *c, struct req *r)
{
    cJSON *res = NULL;
    int code;

    code = wait_ids(c, r->ids, r->nids, r->timeout_ms, c->json ? &res : NULL);
    if (res != NULL)
        fmt_json(c->out, res);
    cJSON_Delete(res);
    return code;
}

const struct cmd_entry cmd_wait_entry = {
    .name = "wait",
    .args = "ID... [--timeout DUR]",
    .summary = "block until the jobs finish; exit with the outcome of the first that failed",
    .help = "  --timeout DUR       give up after DUR (exit 79); the jobs keep running\n",
    .parse = wait_parse,
    .run = wait_run,
};

/* ---- cancel, retry: the same shape over a list of ids ---------------- */

static const struct opt ids_opts[] = {
    OPT_COMMON,
};

static int
ids_parse(struct cli *c, struct req *r, int argc, char **argv, char *why, size_t whylen)
{
    struct optiter it;
    const char *arg;
    int key, rc;

    if ((rc = optiter_init(&it, argc, argv, false)) < 0)
        return rc;
    while ((key = optiter_next(&it, ids_opts, &arg, why, whylen)) > 0)
        opt_common(c, r, key, arg);
    if ((rc = key) < 0 || (rc = parse_ids(r, it.pos, it.npos, why, whylen)) < 0)
        goto out;
    /* The params of a list that fits one call; ids_run splits longer ones. */
    if ((r->params = wait_params(r->ids, r->nids, -1)) == NULL)
        rc = -ENOMEM;
out:
    optiter_free(&it);
    return rc;
}

/* Prints "ID STATE" per job done and one error line per job refused, for
 * the results of one call; *first keeps the code of the first refusal. */
static void
ids_report(struct cli *c, const cJSON *results, int *first)
{
    const cJSON *item, *e;
    int code;

    cJSON_ArrayForEach (item, results) {
        if ((e = cJSON_GetObjectItemCaseSensitive(item, "error")) == NULL) {
            if (!c->json)
                fprintf(c->out, "%lld %s\n", (long long)json_int(item, "id", 0),
                        json_str(item, "state") != NULL ? json_str(item, "state") : "?");
            continue;
        }
        struct rpc_error err = {
            .code = (int)json_int(e, "code", 0),
            .data = cJSON_GetObjectItemCaseSensitive(e, "data"),
        };
        snprintf(err.message, sizeof(err.message), "%s",
                 json_str(e, "message") != NULL ? json_str(e, "message") : "refused");
        fflush(c->out);
        code = cli_fail(c, -EREMOTEIO, &err);
        if (*first == EXIT_OK)
            *first = code;
    }
}

/* Calls cancel or retry with JOBQ_CALL_MAX_IDS ids at a time, as `wait`
 * does, reports per job and exits with the code of the first refusal; a
 * call that fails as a whole stops there with its code. --json prints the
 * calls' results merged into one {"results": [...]}. */
static int
ids_run(struct cli *c, struct req *r)
{
    cJSON *all = NULL, *res = NULL, *params, *results = NULL;
    int code = EXIT_OK, first = EXIT_OK;

    if ((all = cJSON_CreateObject()) == NULL ||
        (results = cJSON_AddArrayToObject(all, "results")) == NULL) {
        code = cli_errorf(c, EXIT_PROTOCOL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < r->nids; i += JOBQ_CALL_MAX_IDS) {
        size_t k = r->nids - i < JOBQ_CALL_MAX_IDS ? r->nids - i : JOBQ_CALL_MAX_IDS;
        if ((params = wait_params(r->ids + i, k, -1)) == NULL) {
            code = cli_errorf(c, EXIT_PROTOCOL, "out of memory");
            goto out;
        }
        if ((code = cli_call(c, r->cmd->name, params, &res)) != 0)
            goto out;
        ids_report(c, cJSON_GetObjectItemCaseSensitive(res, "results"), &first);
        if (c->json) {
            cJSON *item;
            while ((item = cJSON_DetachItemFromArray(
                        cJSON_GetObjectItemCaseSensitive(res, "results"), 0)) != NULL)
                cJSON_AddItemToArray(results, item);
        }
        cJSON_Delete(res);
        res = NULL;
    }
    code = first;
out:
    if (c->json && cJSON_GetArraySize(results) > 0)
        fmt_json(c->out, all);
    cJSON_Delete(res);
    cJSON_Delete(all);
    return code;
}

const struct cmd_entry cmd_cancel_entry = {
    .name = "cancel",
    .args = "ID...",
    .summary = "cancel jobs: a queued one never runs, a running one is terminated",
    .help = "  (prints \"ID canceled\" per job; more than 1000 ids go in several\n"
            "  requests of 1000)\n",
    .parse = ids_parse,
    .run = ids_run,
};

const struct cmd_entry cmd_retry_entry = {
    .name = "retry",
    .args = "ID...",
    .summary = "run failed or canceled jobs again",
    .help = "  (prints \"ID queued\" per job; a job out of attempts gets one more;\n"
            "  more than 1000 ids go in several requests of 1000)\n",
    .parse = ids_parse,
    .run = ids_run,
};
