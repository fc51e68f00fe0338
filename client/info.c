/*
 * info — the verbs that ask about the daemon itself: `stats`, `ping` and
 * `version` (the client's version, then the daemon's).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "fmt.h"
#include "jobq/duration.h"
#include "jobq/proto.h"

#ifndef JOBQ_VERSION
#define JOBQ_VERSION "0.0.0"
#endif
#ifndef JOBQ_GIT_REV
#define JOBQ_GIT_REV "unknown"
#endif

static const char *const state_order[] = {"scheduled", "queued", "running", "retrying",
                                          "succeeded", "failed", "canceled"};
#define NSTATES (sizeof(state_order) / sizeof(state_order[0]))

static const struct opt plain_opts[] = {
    OPT_COMMON,
};

/* Verbs without arguments: only the common options. */
static int
plain_parse(struct cli *c, struct req *r, int argc, char **argv, char *why, size_t whylen)
{
    struct optiter it;
    const char *arg;
    int key, rc;

    if ((rc = optiter_init(&it, argc, argv, false)) < 0)
        return rc;
    while ((key = optiter_next(&it, plain_opts, &arg, why, whylen)) > 0)
        opt_common(c, r, key, arg);
    rc = key;
    if (rc == 0 && it.npos > 0) {
        snprintf(why, whylen, "%s: unexpected argument '%s' (see 'jobq help %s')", r->cmd->name,
                 it.pos[0], r->cmd->name);
        rc = -EINVAL;
    }
    optiter_free(&it);
    return rc;
}

/* Prints "key value  key value ..." for the members of obj, numbers as
 * integers when they are. */
static void
print_pairs(FILE *out, const char *label, const cJSON *obj)
{
    const char *sep = " "; /* two spaces between pairs, none at the end */
    const cJSON *v;

    fprintf(out, "%-12s", label);
    cJSON_ArrayForEach (v, obj) {
        if (cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) &&
            fabs(v->valuedouble) < 1e15)
            fprintf(out, "%s%s %lld", sep, v->string, (long long)v->valuedouble);
        else if (cJSON_IsNumber(v))
            fprintf(out, "%s%s %.2f", sep, v->string, v->valuedouble);
        else if (cJSON_IsString(v))
            fprintf(out, "%s%s %s", sep, v->string, v->valuestring);
        else if (cJSON_IsBool(v))
            fprintf(out, "%s%s %s", sep, v->string, cJSON_IsTrue(v) ? "yes" : "no");
        else
            continue;
        sep = "  ";
    }
    fputc('\n', out);
}

static void
queues_table(const struct cli *c, const cJSON *queues, FILE *out)
{
    static const char *const headers[] = {"QUEUE",  "PAUSED",   "RUNNING",   "LIMIT",  "SCHEDULED",
                                          "QUEUED", "RETRYING", "SUCCEEDED", "FAILED", "CANCELED"};
    struct table *t;
    const cJSON *q;

    if (cJSON_GetArraySize(queues) == 0 || table_new(10, headers, &t) < 0)
        return;
    cJSON_ArrayForEach (q, queues) {
        char nums[2 + NSTATES][24];
        const cJSON *states = cJSON_GetObjectItemCaseSensitive(q, "states");
        const char *row[10] = {q->string, json_bool(q, "paused") ? "yes" : "no"};

        snprintf(nums[0], sizeof(nums[0]), "%lld", (long long)json_int(q, "running", 0));
        if (json_int(q, "concurrency", -1) >= 0)
            snprintf(nums[1], sizeof(nums[1]), "%lld", (long long)json_int(q, "concurrency", 0));
        else
            snprintf(nums[1], sizeof(nums[1]), "-");
        row[2] = nums[0];
        row[3] = nums[1];
        /* Running is in its own column already. */
        for (size_t i = 0, k = 4; i < NSTATES; i++) {
            if (strcmp(state_order[i], "running") == 0)
                continue;
            snprintf(nums[2 + i], sizeof(nums[2 + i]), "%lld",
                     (long long)json_int(states, state_order[i], 0));
            row[k++] = nums[2 + i];
        }
        table_add(t, row);
    }
    fputc('\n', out);
    table_print(t, out, c->columns);
    table_free(t);
}

void
stats_print(const struct cli *c, const cJSON *s, FILE *out)
{
    const cJSON *states = cJSON_GetObjectItemCaseSensitive(s, "states");
    const cJSON *tp = cJSON_GetObjectItemCaseSensitive(s, "throughput");
    char d[32];

    fprintf(out, "%-12s", "jobs");
    for (size_t i = 0; i < NSTATES; i++)
        fprintf(out, "%s%s %lld", i == 0 ? " " : "  ", state_order[i],
                (long long)json_int(states, state_order[i], 0));
    fputc('\n', out);
    fprintf(out, "%-12s %lld of %lld at once\n", "running", (long long)json_int(s, "running", 0),
            (long long)json_int(s, "concurrency", 0));
    if (json_int(s, "max_queued", -1) >= 0)
        fprintf(out, "%-12s %lld\n", "max queued", (long long)json_int(s, "max_queued", 0));
    else
        fprintf(out, "%-12s %s\n", "max queued", "no limit");
    if (tp != NULL) {
        const cJSON *rate = cJSON_GetObjectItemCaseSensitive(tp, "finished_per_s");
        fprintf(out, "%-12s %lld finished, %lld submitted in the last %llds (%.2f/s)\n",
                "throughput", (long long)json_int(tp, "finished", 0),
                (long long)json_int(tp, "submitted", 0), (long long)json_int(tp, "window_s", 0),
                cJSON_IsNumber(rate) ? rate->valuedouble : 0.0);
    }
    fprintf(out, "%-12s %lld\n", "connections", (long long)json_int(s, "connections", 0));
    fprintf(out, "%-12s %s\n", "uptime",
            duration_format(json_int(s, "uptime_ms", 0), d, sizeof(d)));
    if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(s, "coroutines")))
        print_pairs(out, "coroutines", cJSON_GetObjectItemCaseSensitive(s, "coroutines"));
    if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(s, "store")))
        print_pairs(out, "store", cJSON_GetObjectItemCaseSensitive(s, "store"));
    queues_table(c, cJSON_GetObjectItemCaseSensitive(s, "queues"), out);
}

static int
stats_run(struct cli *c, struct req *r)
{
    cJSON *res = NULL;
    int code;

    if ((code = cli_call(c, "stats", NULL, &res)) != 0)
        return code;
    if (c->json)
        fmt_json(c->out, res);
    else
        stats_print(c, res, c->out);
    cJSON_Delete(res);
    return EXIT_OK;
}

const struct cmd_entry cmd_stats_entry = {
    .name = "stats",
    .args = "[--json]",
    .summary = "counts per state and queue, running jobs, throughput, runtime and store",
    .help = "",
    .parse = plain_parse,
    .run = stats_run,
};

static int
ping_run(struct cli *c, struct req *r)
{
    cJSON *res = NULL;
    int code;

    if ((code = cli_call(c, "ping", NULL, &res)) != 0)
        return code;
    if (c->json)
        fmt_json(c->out, res);
    else
        fprintf(c->out, "%s\n", cJSON_IsString(res) ? res->valuestring : "pong");
    cJSON_Delete(res);
    return EXIT_OK;
}

const struct cmd_entry cmd_ping_entry = {
    .name = "ping",
    .args = "",
    .summary = "check that jobqd answers (prints pong)",
    .help = "",
    .parse = plain_parse,
    .run = ping_run,
};

static cJSON *
client_version(void)
{
    cJSON *v = cJSON_CreateObject();

    if (v == NULL || !cJSON_AddStringToObject(v, "version", JOBQ_VERSION) ||
        !cJSON_AddStringToObject(v, "git", JOBQ_GIT_REV) ||
        !cJSON_AddNumberToObject(v, "protocol", JOBQ_PROTOCOL_VERSION)) {
        cJSON_Delete(v);
        return NULL;
    }
    return v;
}

static void
version_line(FILE *out, const char *prog, const cJSON *v)
{
    fprintf(out, "%s %s (git %s, protocol %lld)\n", prog,
            json_str(v, "version") ? json_str(v, "version") : "?",
            json_str(v, "git") ? json_str(v, "git") : "?", (long long)json_int(v, "protocol", 0));
}

static int
version_run(struct cli *c, struct req *r)
{
    cJSON *mine = client_version(), *theirs = NULL, *both = NULL;
    int code = EXIT_OK;

    if (mine == NULL)
        return cli_errorf(c, EXIT_PROTOCOL, "out of memory");
    if (!c->json) {
        version_line(c->out, "jobq", mine);
        fflush(c->out);
    }
    if (!r->client_only && (code = cli_call(c, "version", NULL, &theirs)) != 0)
        goto out;
    if (c->json) {
        if ((both = cJSON_CreateObject()) == NULL) {
            code = cli_errorf(c, EXIT_PROTOCOL, "out of memory");
            goto out;
        }
        cJSON_AddItemToObject(both, "client", mine);
        mine = NULL;
        if (theirs != NULL) {
            cJSON_AddItemToObject(both, "daemon", theirs);
            theirs = NULL;
        }
        fmt_json(c->out, both);
    } else if (theirs != NULL) {
        version_line(c->out, "jobqd", theirs);
    }
out:
    cJSON_Delete(both);
    cJSON_Delete(mine);
    cJSON_Delete(theirs);
    return code;
}

const struct cmd_entry cmd_version_entry = {
    .name = "version",
    .args = "",
    .summary = "print the versions of jobq and of the daemon",
    .help = "",
    .parse = plain_parse,
    .run = version_run,
};
