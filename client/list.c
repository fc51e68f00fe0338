/*
 * list — `jobq list [--state S[,S]] [--queue Q] [--limit N] [--json]`:
 * the newest jobs first, as an aligned table whose last column (the
 * job's name, else its command) is shortened to the terminal's width.
 * Pages through the daemon's `list` with before_id until the limit.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "fmt.h"

enum { LIST_STATE = 1, LIST_QUEUE, LIST_LIMIT };

/* Jobs the daemon returns per `list` call at most. */
#define LIST_PAGE_MAX 1000
/* Jobs shown without --limit: a screenful or two, not the whole history. */
#define LIST_DEFAULT_LIMIT 100

static const struct opt list_opts[] = {
    {"state", 0, true, LIST_STATE},
    {"queue", 0, true, LIST_QUEUE},
    {"limit", 0, true, LIST_LIMIT},
    OPT_COMMON,
};

static int
list_parse(struct cli *c, struct req *r, int argc, char **argv, char *why, size_t whylen)
{
    const char *queue = NULL, *arg;
    cJSON *states = NULL;
    struct optiter it;
    int key, rc;

    r->limit = LIST_DEFAULT_LIMIT;
    if ((rc = optiter_init(&it, argc, argv, false)) < 0)
        return rc;
    while ((key = optiter_next(&it, list_opts, &arg, why, whylen)) > 0) {
        rc = 0;
        if (key == LIST_STATE)
            rc = opt_states("--state", arg, false, &states, why, whylen);
        else if (key == LIST_QUEUE)
            queue = arg;
        else if (key == LIST_LIMIT)
            rc = opt_int("--limit", arg, 0, INT32_MAX, &r->limit, why, whylen);
        else
            opt_common(c, r, key, arg);
        if (rc < 0)
            goto out;
    }
    if ((rc = key) < 0)
        goto out;
    if (it.npos > 0) {
        snprintf(why, whylen, "list: unexpected argument '%s' (see 'jobq help list')", it.pos[0]);
        rc = -EINVAL;
        goto out;
    }
    rc = -ENOMEM;
    if ((r->params = cJSON_CreateObject()) == NULL)
        goto out;
    if (states != NULL) {
        cJSON_AddItemToObject(r->params, "state", states);
        states = NULL;
    }
    if ((queue != NULL && !cJSON_AddStringToObject(r->params, "queue", queue)) ||
        !cJSON_AddNumberToObject(
            r->params, "limit",
            (double)(r->limit == 0 || r->limit > LIST_PAGE_MAX ? LIST_PAGE_MAX : r->limit)))
        goto out;
    rc = 0;
out:
    cJSON_Delete(states);
    optiter_free(&it);
    return rc;
}

void
list_print_table(const struct cli *c, const cJSON *jobs, FILE *out)
{
    static const char *const headers[] = {"ID",       "STATE", "QUEUE",
                                          "ATTEMPTS", "AGE",   "NAME/COMMAND"};
    struct table *t;
    const cJSON *j;

    if (table_new(6, headers, &t) < 0)
        return;
    cJSON_ArrayForEach (j, jobs) {
        char id[24], attempts[48], age[32], *what;
        int64_t created;

        snprintf(id, sizeof(id), "%lld", (long long)json_int(j, "id", 0));
        snprintf(attempts, sizeof(attempts), "%lld/%lld", (long long)json_int(j, "attempt", 0),
                 (long long)json_int(j, "max_attempts", 0));
        if (json_time(j, "created_at", &created) == 0)
            fmt_age(c->now_ms, created, age, sizeof(age));
        else
            snprintf(age, sizeof(age), "-");
        if (json_str(j, "name") != NULL)
            what = strdup(json_str(j, "name"));
        else
            what = fmt_command(cJSON_GetObjectItemCaseSensitive(j, "command"));
        const char *row[] = {id, json_str(j, "state"), json_str(j, "queue"), attempts, age, what};
        table_add(t, row);
        free(what);
    }
    table_print(t, out, c->columns);
    table_free(t);
}

static int
list_run(struct cli *c, struct req *r)
{
    cJSON *all = cJSON_CreateArray(), *res = NULL, *params = NULL;
    int64_t left = r->limit, before = -1;
    int code = EXIT_OK;

    do {
        int64_t page = left == 0 || left > LIST_PAGE_MAX ? LIST_PAGE_MAX : left;
        cJSON *jobs, *j;

        if (all == NULL || (params = cJSON_Duplicate(r->params, true)) == NULL ||
            !cJSON_ReplaceItemInObjectCaseSensitive(params, "limit",
                                                    cJSON_CreateNumber((double)page)) ||
            (before > 0 && !cJSON_AddNumberToObject(params, "before_id", (double)before))) {
            cJSON_Delete(params);
            code = cli_errorf(c, EXIT_PROTOCOL, "out of memory");
            goto out;
        }
        if ((code = cli_call(c, "list", params, &res)) != 0)
            goto out;
        jobs = cJSON_GetObjectItemCaseSensitive(res, "jobs");
        while (cJSON_IsArray(jobs) && (j = cJSON_DetachItemFromArray(jobs, 0)) != NULL) {
            cJSON_AddItemToArray(all, j);
            if (r->limit > 0 && --left == 0)
                break;
        }
        before = json_int(res, "next_before_id", -1);
        cJSON_Delete(res);
        res = NULL;
    } while (before > 0 && (r->limit == 0 || left > 0));
    if (c->json)
        fmt_json(c->out, all);
    else
        list_print_table(c, all, c->out);
out:
    cJSON_Delete(res);
    cJSON_Delete(all);
    return code;
}

const struct cmd_entry cmd_list_entry = {
    .name = "list",
    .args = "[--state S[,S]] [--queue Q] [--limit N]",
    .summary = "list jobs, newest first",
    .help = "  --state S[,S]       only jobs in these states (scheduled, queued, running,\n"
            "                      retrying, succeeded, failed, canceled); repeatable\n"
            "  --queue Q           only jobs of queue Q\n"
            "  --limit N           at most N jobs (default 100; 0: all)\n",
    .parse = list_parse,
    .run = list_run,
};
