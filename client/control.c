/*
 * control — the verbs that steer the daemon rather than one job: `pause
 * Q` and `resume Q` (dispatch from a queue) and `purge [--older-than DUR]
 * [--state S]` (delete terminal jobs).
 */
#include <errno.h>
#include <string.h>

#include "client.h"
#include "fmt.h"

static const struct opt queue_opts[] = {
    OPT_COMMON,
};

static int
queue_parse(struct cli *c, struct req *r, int argc, char **argv, char *why, size_t whylen)
{
    struct optiter it;
    const char *arg;
    int key, rc;

    if ((rc = optiter_init(&it, argc, argv, false)) < 0)
        return rc;
    while ((key = optiter_next(&it, queue_opts, &arg, why, whylen)) > 0)
        opt_common(c, r, key, arg);
    if ((rc = key) < 0)
        goto out;
    rc = -EINVAL;
    if (it.npos != 1 && !r->help) {
        snprintf(why, whylen, "%s: %s; usage: jobq %s QUEUE", r->cmd->name,
                 it.npos == 0 ? "no queue given" : "one queue at a time", r->cmd->name);
        goto out;
    }
    rc = -ENOMEM;
    if ((r->params = cJSON_CreateObject()) == NULL ||
        (it.npos == 1 && !cJSON_AddStringToObject(r->params, "queue", it.pos[0])))
        goto out;
    rc = 0;
out:
    optiter_free(&it);
    return rc;
}

static int
queue_run(struct cli *c, struct req *r)
{
    cJSON *res = NULL;
    const char *q;
    int code;

    code = cli_call(c, r->cmd->name, r->params, &res);
    r->params = NULL;
    if (code != 0)
        return code;
    q = json_str(res, "queue");
    if (c->json)
        fmt_json(c->out, res);
    else
        fprintf(c->out, "queue %s %s\n", q != NULL ? q : "?",
                json_bool(res, "paused") ? "paused" : "resumed");
    cJSON_Delete(res);
    return EXIT_OK;
}

const struct cmd_entry cmd_pause_entry = {
    .name = "pause",
    .args = "QUEUE",
    .summary = "stop starting jobs from a queue (running ones go on)",
    .help = "  (submitting to a paused queue still works; 'jobq resume' restarts it)\n",
    .parse = queue_parse,
    .run = queue_run,
};

const struct cmd_entry cmd_resume_entry = {
    .name = "resume",
    .args = "QUEUE",
    .summary = "start jobs from a paused queue again",
    .help = "",
    .parse = queue_parse,
    .run = queue_run,
};

enum { PURGE_OLDER = 1, PURGE_STATE };

static const struct opt purge_opts[] = {
    {"older-than", 0, true, PURGE_OLDER},
    {"state", 0, true, PURGE_STATE},
    OPT_COMMON,
};

static int
purge_parse(struct cli *c, struct req *r, int argc, char **argv, char *why, size_t whylen)
{
    cJSON *states = NULL;
    int64_t older = -1;
    struct optiter it;
    const char *arg;
    int key, rc;

    if ((rc = optiter_init(&it, argc, argv, false)) < 0)
        return rc;
    while ((key = optiter_next(&it, purge_opts, &arg, why, whylen)) > 0) {
        rc = 0;
        if (key == PURGE_OLDER)
            rc = opt_duration("--older-than", arg, &older, why, whylen);
        else if (key == PURGE_STATE)
            rc = opt_states("--state", arg, true, &states, why, whylen);
        else
            opt_common(c, r, key, arg);
        if (rc < 0)
            goto out;
    }
    if ((rc = key) < 0)
        goto out;
    if (it.npos > 0) {
        snprintf(why, whylen, "purge: unexpected argument '%s' (see 'jobq help purge')", it.pos[0]);
        rc = -EINVAL;
        goto out;
    }
    rc = -ENOMEM;
    if ((r->params = cJSON_CreateObject()) == NULL ||
        (older >= 0 && !cJSON_AddNumberToObject(r->params, "older_than_ms", (double)older)))
        goto out;
    if (states != NULL) {
        cJSON_AddItemToObject(r->params, "states", states);
        states = NULL;
    }
    rc = 0;
out:
    cJSON_Delete(states);
    optiter_free(&it);
    return rc;
}

static int
purge_run(struct cli *c, struct req *r)
{
    cJSON *res = NULL;
    int64_t n;
    int code;

    code = cli_call(c, "purge", r->params, &res);
    r->params = NULL;
    if (code != 0)
        return code;
    n = json_int(res, "purged", 0);
    if (c->json)
        fmt_json(c->out, res);
    else
        fprintf(c->out, "purged %lld job%s\n", (long long)n, n == 1 ? "" : "s");
    cJSON_Delete(res);
    return EXIT_OK;
}

const struct cmd_entry cmd_purge_entry = {
    .name = "purge",
    .args = "[--older-than DUR] [--state S[,S]]",
    .summary = "delete finished jobs and their logs",
    .help = "  --older-than DUR    only jobs that finished at least DUR ago\n"
            "  --state S[,S]       only these final states: succeeded, failed, canceled\n"
            "                      (default: all three)\n",
    .parse = purge_parse,
    .run = purge_run,
};
