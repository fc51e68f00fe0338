/*
 * show — `jobq show ID... [--json]`: everything about a job, then a table
 * of its attempts. Several ids are fetched with pipelined `get` calls
 * (all sent, then the replies collected by id) and printed in the order
 * given; --json prints the job object exactly as `get` returns it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "fmt.h"
#include "jobq/duration.h"

static const struct opt show_opts[] = {
    OPT_COMMON,
};

static int
show_parse(struct cli *c, struct req *r, int argc, char **argv, char *why, size_t whylen)
{
    struct optiter it;
    const char *arg;
    int key, rc;

    if ((rc = optiter_init(&it, argc, argv, false)) < 0)
        return rc;
    while ((key = optiter_next(&it, show_opts, &arg, why, whylen)) > 0)
        opt_common(c, r, key, arg);
    if ((rc = key) < 0)
        goto out;
    if (it.npos == 0 && !r->help) {
        snprintf(why, whylen, "show: no job id given; usage: jobq show ID... [--json]");
        rc = -EINVAL;
        goto out;
    }
    rc = -ENOMEM;
    if ((r->ids = calloc(it.npos + 1, sizeof(*r->ids))) == NULL)
        goto out;
    for (size_t i = 0; i < it.npos; i++)
        if ((rc = opt_id(it.pos[i], &r->ids[i], why, whylen)) < 0)
            goto out;
    r->nids = it.npos;
    /* The first call's params, for tests; the run builds one per id. */
    rc = -ENOMEM;
    if (r->nids > 0 &&
        ((r->params = cJSON_CreateObject()) == NULL || !json_add_id(r->params, "id", r->ids[0])))
        goto out;
    rc = 0;
out:
    optiter_free(&it);
    return rc;
}

/* One "key:  value" line; value cleaned of control characters. */
static void
field(FILE *out, const char *key, const char *value)
{
    char *v = fmt_clean(value != NULL ? value : "-");
    fprintf(out, "%-12s %s\n", key, v != NULL ? v : "?");
    free(v);
}

/* A time member with its age: "2026-12-04T16:18:16.100Z (3m ago)". */
static void
field_time(const struct cli *c, FILE *out, const char *key, const cJSON *job, const char *member)
{
    char buf[96], age[32];
    int64_t ms;

    if (json_time(job, member, &ms) < 0) {
        field(out, key, "-");
        return;
    }
    if (ms > c->now_ms)
        snprintf(buf, sizeof(buf), "%s (in %s)", json_str(job, member),
                 duration_format(ms - c->now_ms, age, sizeof(age)));
    else
        snprintf(buf, sizeof(buf), "%s (%s)", json_str(job, member),
                 fmt_age(c->now_ms, ms, age, sizeof(age)));
    field(out, key, buf);
}

/* An integer member, or "-" when null. */
static void
field_int(FILE *out, const char *key, const cJSON *job, const char *member)
{
    char buf[32];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(job, member);

    if (!cJSON_IsNumber(v)) {
        field(out, key, "-");
        return;
    }
    snprintf(buf, sizeof(buf), "%lld", (long long)v->valuedouble);
    field(out, key, buf);
}

static const char *
signal_text(int64_t sig, char *buf, size_t len)
{
    const char *name = sig > 0 && sig < 128 ? sigabbrev_np((int)sig) : NULL;
    snprintf(buf, len, "%lld%s%s%s", (long long)sig, name ? " (SIG" : "", name ? name : "",
             name ? ")" : "");
    return buf;
}

static void
attempts_table(const struct cli *c, const cJSON *attempts, FILE *out)
{
    static const char *const headers[] = {"ATTEMPT", "STARTED", "DURATION", "OUTCOME",
                                          "EXIT",    "SIGNAL",  "LOG",      "ERROR"};
    struct table *t;
    const cJSON *a;

    if (cJSON_GetArraySize(attempts) == 0 || table_new(8, headers, &t) < 0)
        return;
    cJSON_ArrayForEach (a, attempts) {
        char num[24], dur[48], code[24], sig[48], log[48], d[32];
        int64_t start, end;

        snprintf(num, sizeof(num), "%lld", (long long)json_int(a, "attempt", 0));
        if (json_time(a, "started_at", &start) < 0)
            snprintf(dur, sizeof(dur), "-");
        else if (json_time(a, "finished_at", &end) == 0)
            snprintf(dur, sizeof(dur), "%s", duration_format(end - start, d, sizeof(d)));
        else
            snprintf(dur, sizeof(dur), "%s so far",
                     duration_format(c->now_ms - start, d, sizeof(d)));
        snprintf(code, sizeof(code), "-");
        if (json_int(a, "exit_code", -1) >= 0)
            snprintf(code, sizeof(code), "%lld", (long long)json_int(a, "exit_code", -1));
        snprintf(sig, sizeof(sig), "-");
        if (json_int(a, "signal", 0) > 0 && sigabbrev_np((int)json_int(a, "signal", 0)))
            snprintf(sig, sizeof(sig), "SIG%s", sigabbrev_np((int)json_int(a, "signal", 0)));
        else if (json_int(a, "signal", 0) > 0)
            snprintf(sig, sizeof(sig), "%lld", (long long)json_int(a, "signal", 0));
        snprintf(log, sizeof(log), "%lld%s", (long long)json_int(a, "log_bytes", 0),
                 json_bool(a, "log_truncated") ? " (truncated)" : "");
        const char *row[] = {num,  json_str(a, "started_at"),
                             dur,  json_str(a, "outcome") ? json_str(a, "outcome") : "running",
                             code, sig,
                             log,  json_str(a, "error")};
        table_add(t, row);
    }
    fputc('\n', out);
    /* Not cut to the terminal: the error column is the point of it. */
    table_print(t, out, 0);
    table_free(t);
}

void
show_print_job(const struct cli *c, const cJSON *job, FILE *out)
{
    char buf[256], d1[32], d2[32];
    const char *outcome = json_str(job, "outcome");
    const cJSON *env = cJSON_GetObjectItemCaseSensitive(job, "env");
    char *s;

    field_int(out, "id:", job, "id");
    field(out, "name:", json_str(job, "name"));
    if (outcome != NULL && strcmp(outcome, "succeeded") != 0)
        snprintf(buf, sizeof(buf), "%s (last attempt: %s)", json_str(job, "state"), outcome);
    else
        snprintf(buf, sizeof(buf), "%s", json_str(job, "state") ? json_str(job, "state") : "?");
    field(out, "state:", buf);
    field(out, "queue:", json_str(job, "queue"));
    field_int(out, "priority:", job, "priority");
    s = fmt_command(cJSON_GetObjectItemCaseSensitive(job, "command"));
    field(out, "command:", s);
    free(s);
    field(out, "cwd:", json_str(job, "cwd"));
    s = cJSON_GetArraySize(env) > 0 ? fmt_command(env) : NULL;
    field(out, "env:", s);
    free(s);
    snprintf(buf, sizeof(buf), "%lld of %lld", (long long)json_int(job, "attempt", 0),
             (long long)json_int(job, "max_attempts", 0));
    field(out, "attempts:", buf);
    if (json_int(job, "timeout_ms", 0) > 0)
        field(out, "timeout:", duration_format(json_int(job, "timeout_ms", 0), d1, sizeof(d1)));
    else
        field(out, "timeout:", "none");
    snprintf(buf, sizeof(buf), "%s, doubling up to %s",
             duration_format(json_int(job, "backoff_base_ms", 0), d1, sizeof(d1)),
             duration_format(json_int(job, "backoff_max_ms", 0), d2, sizeof(d2)));
    field(out, "backoff:", buf);
    field_time(c, out, "deadline:", job, "deadline");
    field(out, "unique key:", json_str(job, "unique_key"));
    field_time(c, out, "created:", job, "created_at");
    field_time(c, out, "run at:", job, "run_at");
    field_time(c, out, "started:", job, "started_at");
    field_time(c, out, "finished:", job, "finished_at");
    field_int(out, "exit code:", job, "exit_code");
    if (json_int(job, "signal", 0) > 0)
        field(out, "signal:", signal_text(json_int(job, "signal", 0), buf, sizeof(buf)));
    else
        field(out, "signal:", "-");
    field(out, "error:", json_str(job, "error"));
    field_int(out, "uid:", job, "uid");
    if (json_bool(job, "log_truncated"))
        field(out, "log:", "truncated: output over the cap was dropped");
    attempts_table(c, cJSON_GetObjectItemCaseSensitive(job, "attempts"), out);
}

static int
show_run(struct cli *c, struct req *r)
{
    int64_t *rid = NULL;
    cJSON *all = NULL, *job;
    struct rpc_error e;
    int code, first = EXIT_OK, rc;
    size_t sent = 0;

    if ((code = cli_connect(c)) != 0)
        return code;
    if ((rid = calloc(r->nids, sizeof(*rid))) == NULL || (all = cJSON_CreateArray()) == NULL) {
        first = cli_errorf(c, EXIT_PROTOCOL, "out of memory");
        goto out;
    }
    /* Pipelined: every request goes out before the first reply is read. */
    for (; sent < r->nids; sent++) {
        cJSON *p = cJSON_CreateObject();
        if (p == NULL || !json_add_id(p, "id", r->ids[sent])) {
            cJSON_Delete(p);
            first = cli_errorf(c, EXIT_PROTOCOL, "out of memory");
            goto out;
        }
        if ((rc = rpc_send(c->rpc, "get", p, &rid[sent])) < 0)
            break;
    }
    for (size_t i = 0; i < r->nids; i++) {
        if (i >= sent)
            rc = rpc_recv(c->rpc, 0, &job, &e); /* the daemon's reason for hanging up */
        else
            rc = rpc_recv(c->rpc, rid[i], &job, &e);
        if (rc < 0) {
            code = cli_fail(c, rc, &e);
            rpc_error_clear(&e);
            if (first == EXIT_OK)
                first = code;
            if (rc != -EREMOTEIO || i >= sent)
                break; /* the connection is gone */
            continue;
        }
        if (c->json) {
            cJSON_AddItemToArray(all, job);
            continue;
        }
        if (i > 0)
            fputc('\n', c->out);
        show_print_job(c, job, c->out);
        cJSON_Delete(job);
    }
    if (c->json && r->nids == 1 && cJSON_GetArraySize(all) == 1)
        fmt_json(c->out, cJSON_GetArrayItem(all, 0));
    else if (c->json && cJSON_GetArraySize(all) > 0)
        fmt_json(c->out, all);
out:
    cJSON_Delete(all);
    free(rid);
    return first;
}

const struct cmd_entry cmd_show_entry = {
    .name = "show",
    .args = "ID... [--json]",
    .summary = "everything about a job and its attempts",
    .help = "  (--json prints the job object of docs/PROTOCOL.md; with several ids, an array)\n",
    .parse = show_parse,
    .run = show_run,
};
