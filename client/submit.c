/*
 * submit — `jobq submit [options] -- CMD [ARG...]` and `jobq submit --batch
 * FILE|-`. Options become a job spec with the protocol's field names; a
 * batch is JSON specs (NDJSON, or the pretty-printed objects and arrays of
 * `show --json`) sent as one `submit {"jobs": [...]}` request, one
 * transaction, with the options as defaults for fields a spec lacks. The
 * job runs in the submitter's current directory unless --cwd says
 * otherwise, as at(1) and batch(1) do.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "fmt.h"
#include "jobq/duration.h"
#include "jobq/limits.h"
#include "jobq/proto.h"

enum {
    SUBMIT_QUEUE = 1,
    SUBMIT_NAME,
    SUBMIT_PRIORITY,
    SUBMIT_ATTEMPTS,
    SUBMIT_BACKOFF,
    SUBMIT_TIMEOUT,
    SUBMIT_DEADLINE,
    SUBMIT_DELAY,
    SUBMIT_AT,
    SUBMIT_UNIQUE,
    SUBMIT_ENV,
    SUBMIT_CWD,
    SUBMIT_WAIT,
    SUBMIT_BATCH,
};

static const struct opt submit_opts[] = {
    {"queue", 0, true, SUBMIT_QUEUE},
    {"name", 0, true, SUBMIT_NAME},
    {"priority", 0, true, SUBMIT_PRIORITY},
    {"attempts", 0, true, SUBMIT_ATTEMPTS},
    {"backoff", 0, true, SUBMIT_BACKOFF},
    {"timeout", 0, true, SUBMIT_TIMEOUT},
    {"deadline", 0, true, SUBMIT_DEADLINE},
    {"delay", 0, true, SUBMIT_DELAY},
    {"at", 0, true, SUBMIT_AT},
    {"unique", 0, true, SUBMIT_UNIQUE},
    {"env", 0, true, SUBMIT_ENV},
    {"cwd", 0, true, SUBMIT_CWD},
    {"wait", 0, false, SUBMIT_WAIT},
    {"batch", 0, true, SUBMIT_BATCH},
    OPT_COMMON,
};

/* The options as typed, before they become a spec. */
struct submit_opts {
    const char *queue, *name, *unique, *cwd;
    bool priority_set, attempts_set, backoff_set, backoff_max_set, timeout_set;
    int64_t priority, attempts, backoff_base, backoff_max, timeout_ms;
    int64_t deadline, run_at, delay_ms; /* -1 unset */
    cJSON *env;                         /* array of "K=V", owned */
};

/* "BASE[:MAX]" */
static int
parse_backoff(struct submit_opts *so, const char *arg, char *why, size_t whylen)
{
    char base[64];
    const char *colon = strchr(arg, ':');
    size_t n = colon != NULL ? (size_t)(colon - arg) : strlen(arg);
    int rc;

    snprintf(base, sizeof(base), "%.*s", (int)n, arg);
    if ((rc = opt_duration("--backoff", base, &so->backoff_base, why, whylen)) < 0)
        return rc;
    so->backoff_set = true;
    if (colon == NULL)
        return 0;
    if ((rc = opt_duration("--backoff", colon + 1, &so->backoff_max, why, whylen)) < 0)
        return rc;
    if (so->backoff_max < so->backoff_base) {
        snprintf(why, whylen, "--backoff: the maximum (%s) is below the base (%.*s)", colon + 1,
                 (int)n, arg);
        return -EINVAL;
    }
    so->backoff_max_set = true;
    return 0;
}

/* Looks NAME up in the client's environment, for `--env NAME`. */
static const char *
env_lookup(const struct cli *c, const char *name)
{
    size_t n = strlen(name);

    for (char *const *e = c->environ; e != NULL && *e != NULL; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

/* "K=V", or "K" to pass the client's own value along. */
static int
parse_env(const struct cli *c, struct submit_opts *so, const char *arg, char *why, size_t whylen)
{
    const char *eq = strchr(arg, '=');
    char *entry = NULL;
    int rc = 0;

    if (arg[0] == '=' || arg[0] == '\0') {
        snprintf(why, whylen, "--env: expected NAME=VALUE, got \"%s\"", arg);
        return -EINVAL;
    }
    if (eq == NULL) {
        const char *v = env_lookup(c, arg);
        if (v == NULL) {
            snprintf(why, whylen, "--env: %s is not set here; give its value as %s=VALUE", arg,
                     arg);
            return -EINVAL;
        }
        if (asprintf(&entry, "%s=%s", arg, v) < 0)
            return -ENOMEM;
        arg = entry;
    }
    if (so->env == NULL && (so->env = cJSON_CreateArray()) == NULL)
        rc = -ENOMEM;
    else if (!cJSON_AddItemToArray(so->env, cJSON_CreateString(arg)))
        rc = -ENOMEM;
    free(entry);
    return rc;
}

/* An absolute directory: relative ones are taken from the client's cwd.
 * Returns owned *out. */
static int
resolve_dir(const struct cli *c, const char *dir, char **out, char *why, size_t whylen)
{
    if (dir[0] == '/') {
        *out = strdup(dir);
    } else if (c->cwd == NULL) {
        snprintf(why, whylen, "--cwd: \"%s\" is relative and the current directory is unknown",
                 dir);
        return -EINVAL;
    } else if (strcmp(dir, ".") == 0) {
        *out = strdup(c->cwd);
    } else if (asprintf(out, "%s%s%s", c->cwd, strcmp(c->cwd, "/") == 0 ? "" : "/", dir) < 0) {
        *out = NULL;
    }
    return *out != NULL ? 0 : -ENOMEM;
}

static cJSON *
add_time(cJSON *spec, const char *key, int64_t ms)
{
    char buf[40];
    return cJSON_AddStringToObject(spec, key, time_format_rfc3339(ms, buf, sizeof(buf)));
}

/* Adds the spec fields the options set, in the protocol's order. Takes
 * so->env. */
static int
spec_fill(const struct cli *c, struct submit_opts *so, cJSON *spec, char *why, size_t whylen)
{
    char *cwd = NULL;
    int rc = -ENOMEM;

    if ((so->queue != NULL && !cJSON_AddStringToObject(spec, "queue", so->queue)) ||
        (so->name != NULL && !cJSON_AddStringToObject(spec, "name", so->name)) ||
        (so->priority_set && !cJSON_AddNumberToObject(spec, "priority", (double)so->priority)) ||
        (so->attempts_set &&
         !cJSON_AddNumberToObject(spec, "max_attempts", (double)so->attempts)) ||
        (so->backoff_set &&
         !cJSON_AddNumberToObject(spec, "backoff_base_ms", (double)so->backoff_base)) ||
        (so->backoff_max_set &&
         !cJSON_AddNumberToObject(spec, "backoff_max_ms", (double)so->backoff_max)) ||
        (so->timeout_set && !cJSON_AddNumberToObject(spec, "timeout_ms", (double)so->timeout_ms)) ||
        (so->deadline >= 0 && !add_time(spec, "deadline", so->deadline)) ||
        (so->run_at >= 0 && !add_time(spec, "run_at", so->run_at)) ||
        (so->delay_ms >= 0 && !cJSON_AddNumberToObject(spec, "delay_ms", (double)so->delay_ms)) ||
        (so->unique != NULL && !cJSON_AddStringToObject(spec, "unique_key", so->unique)))
        goto out;
    if (so->env != NULL) {
        cJSON_AddItemToObject(spec, "env", so->env);
        so->env = NULL;
    }
    if (so->cwd != NULL) {
        if ((rc = resolve_dir(c, so->cwd, &cwd, why, whylen)) < 0)
            goto out;
    } else if (c->cwd != NULL && (cwd = strdup(c->cwd)) == NULL) {
        goto out;
    }
    if (cwd != NULL && !cJSON_AddStringToObject(spec, "cwd", cwd))
        goto out;
    rc = 0;
out:
    free(cwd);
    return rc;
}

static int
submit_option(struct cli *c, struct req *r, struct submit_opts *so, int key, const char *arg,
              char *why, size_t whylen)
{
    switch (key) {
    case SUBMIT_QUEUE:
        so->queue = arg;
        return 0;
    case SUBMIT_NAME:
        so->name = arg;
        return 0;
    case SUBMIT_PRIORITY:
        so->priority_set = true;
        return opt_int("--priority", arg, JOBQ_PRIORITY_MIN, JOBQ_PRIORITY_MAX, &so->priority, why,
                       whylen);
    case SUBMIT_ATTEMPTS:
        so->attempts_set = true;
        return opt_int("--attempts", arg, 1, JOBQ_ATTEMPTS_MAX, &so->attempts, why, whylen);
    case SUBMIT_BACKOFF:
        return parse_backoff(so, arg, why, whylen);
    case SUBMIT_TIMEOUT:
        so->timeout_set = true;
        return opt_duration("--timeout", arg, &so->timeout_ms, why, whylen);
    case SUBMIT_DEADLINE:
        return opt_time(c, "--deadline", arg, &so->deadline, why, whylen);
    case SUBMIT_DELAY:
        return opt_duration("--delay", arg, &so->delay_ms, why, whylen);
    case SUBMIT_AT:
        return opt_time(c, "--at", arg, &so->run_at, why, whylen);
    case SUBMIT_UNIQUE:
        so->unique = arg;
        return 0;
    case SUBMIT_ENV:
        return parse_env(c, so, arg, why, whylen);
    case SUBMIT_CWD:
        so->cwd = arg;
        return 0;
    case SUBMIT_WAIT:
        r->wait = true;
        return 0;
    case SUBMIT_BATCH:
        r->batch = arg;
        return 0;
    }
    return opt_common(c, r, key, arg) ? 0 : -EINVAL;
}

static int
submit_parse(struct cli *c, struct req *r, int argc, char **argv, char *why, size_t whylen)
{
    struct submit_opts so = {.deadline = -1, .run_at = -1, .delay_ms = -1};
    bool at = false, delay = false;
    struct optiter it;
    const char *arg;
    cJSON *spec = NULL, *cmd;
    int key, rc;

    /* The first argument that is not an option starts the command, so
     * `jobq submit ls -l` leaves -l to ls. */
    if ((rc = optiter_init(&it, argc, argv, true)) < 0)
        return rc;
    while ((key = optiter_next(&it, submit_opts, &arg, why, whylen)) > 0) {
        at |= key == SUBMIT_AT;
        delay |= key == SUBMIT_DELAY;
        if ((rc = submit_option(c, r, &so, key, arg, why, whylen)) < 0)
            goto out;
    }
    if ((rc = key) < 0)
        goto out;
    rc = -EINVAL;
    if (at && delay) {
        snprintf(why, whylen, "--at and --delay exclude each other: give one start time");
        goto out;
    }
    if (r->batch != NULL && it.npos > 0) {
        snprintf(why, whylen,
                 "submit: --batch takes the jobs from %s, not from the command line ('%s')",
                 r->batch, it.pos[0]);
        goto out;
    }
    if (r->batch == NULL && it.npos == 0 && !r->help) {
        snprintf(why, whylen,
                 "submit: no command given; usage: jobq submit [options] -- CMD [ARG...]");
        goto out;
    }
    rc = -ENOMEM;
    if ((spec = cJSON_CreateObject()) == NULL)
        goto out;
    if (r->batch == NULL) {
        if ((cmd = cJSON_AddArrayToObject(spec, "command")) == NULL)
            goto out;
        for (size_t i = 0; i < it.npos; i++)
            if (!cJSON_AddItemToArray(cmd, cJSON_CreateString(it.pos[i])))
                goto out;
    }
    if ((rc = spec_fill(c, &so, spec, why, whylen)) < 0)
        goto out;
    r->params = spec;
    spec = NULL;
out:
    cJSON_Delete(spec);
    cJSON_Delete(so.env);
    optiter_free(&it);
    return rc;
}

/* Adds to spec a copy of each member of defaults that spec lacks. */
static int
spec_merge(cJSON *spec, const cJSON *defaults)
{
    const cJSON *d;

    cJSON_ArrayForEach (d, defaults) {
        if (cJSON_HasObjectItem(spec, d->string))
            continue;
        if (!cJSON_AddItemToObject(spec, d->string, cJSON_Duplicate(d, true)))
            return -ENOMEM;
    }
    return 0;
}

/* Where the batch parser is in the text, and on which line. */
struct cursor {
    const char *p, *end;
    int line;
};

/* Steps over whitespace, counting lines. */
static void
skip_space(struct cursor *k)
{
    for (; k->p < k->end; k->p++) {
        if (*k->p != ' ' && *k->p != '\t' && *k->p != '\r' && *k->p != '\n')
            break;
        k->line += *k->p == '\n';
    }
}

/* The growing result of a batch: the jobs array and each spec's line. */
struct batch {
    const struct cli *c;
    const cJSON *defaults;
    cJSON *jobs;
    int *lines; /* owned */
    int n;
};

/* Parses the spec that starts at k (a line with its first byte), merges the
 * defaults in and appends it to b. */
static int
batch_add(struct batch *b, struct cursor *k, char *why, size_t whylen)
{
    const char *vend = NULL;
    int line = k->line, rc = -EINVAL;
    cJSON *spec = NULL;
    const cJSON *cwd;
    char *dir = NULL;

    if (b->n >= JOBQ_BATCH_MAX_JOBS) {
        snprintf(why, whylen, "line %d: more than %d jobs; split the file", line,
                 JOBQ_BATCH_MAX_JOBS);
        goto out;
    }
    spec = cJSON_ParseWithLengthOpts(k->p, (size_t)(k->end - k->p), &vend, false);
    if (spec == NULL) {
        snprintf(why, whylen,
                 "line %d: not valid JSON (job specs are JSON objects like "
                 "{\"command\": [\"echo\", \"hi\"]})",
                 line);
        goto out;
    }
    for (; k->p < vend; k->p++)
        k->line += *k->p == '\n';
    if (!cJSON_IsObject(spec)) {
        snprintf(why, whylen,
                 "line %d: not a JSON object (job specs are JSON objects like "
                 "{\"command\": [\"echo\", \"hi\"]})",
                 line);
        goto out;
    }
    if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(spec, "command"))) {
        snprintf(why, whylen,
                 "line %d: no \"command\" array (like \"command\": [\"echo\", \"hi\"])", line);
        goto out;
    }
    rc = -ENOMEM;
    if (spec_merge(spec, b->defaults) < 0)
        goto out;
    /* Relative directories mean the same as with --cwd. */
    cwd = cJSON_GetObjectItemCaseSensitive(spec, "cwd");
    if (cJSON_IsString(cwd) && cwd->valuestring[0] != '/') {
        if ((rc = resolve_dir(b->c, cwd->valuestring, &dir, why, whylen)) < 0)
            goto out;
        rc = -ENOMEM;
        if (!cJSON_ReplaceItemInObjectCaseSensitive(spec, "cwd", cJSON_CreateString(dir)))
            goto out;
    }
    int *nln = realloc(b->lines, (size_t)(b->n + 1) * sizeof(*nln));
    if (nln == NULL)
        goto out;
    b->lines = nln;
    b->lines[b->n++] = line;
    cJSON_AddItemToArray(b->jobs, spec);
    spec = NULL;
    rc = 0;
out:
    free(dir);
    cJSON_Delete(spec);
    return rc;
}

/* The elements of a top-level array, k just past its '['. Parsed one by one
 * rather than as one value so that an error names the element's line. */
static int
batch_add_array(struct batch *b, struct cursor *k, char *why, size_t whylen)
{
    int open = k->line, rc;

    skip_space(k);
    if (k->p < k->end && *k->p == ']') {
        k->p++;
        return 0;
    }
    for (;;) {
        if ((rc = batch_add(b, k, why, whylen)) < 0)
            return rc;
        skip_space(k);
        if (k->p < k->end && *k->p == ',') {
            k->p++;
            skip_space(k);
            continue;
        }
        if (k->p < k->end && *k->p == ']') {
            k->p++;
            return 0;
        }
        snprintf(why, whylen,
                 "line %d: expected ',' or ']' in the array of job specs opened on line %d",
                 k->line, open);
        return -EINVAL;
    }
}

int
submit_batch_params(const struct cli *c, const char *text, size_t len, const cJSON *defaults,
                    cJSON **params, int **lines, char *why, size_t whylen)
{
    struct cursor k = {.p = text, .end = text + len, .line = 1};
    struct batch b = {.c = c, .defaults = defaults};
    cJSON *root = NULL;
    int rc = -ENOMEM;

    if ((root = cJSON_CreateObject()) == NULL ||
        (b.jobs = cJSON_AddArrayToObject(root, "jobs")) == NULL)
        goto out;
    /* JSON texts one after another, as NDJSON, pretty-printed objects (what
     * `jobq show --json` prints) or arrays of specs, so that output can be
     * submitted again as it is. */
    for (skip_space(&k); k.p < k.end; skip_space(&k)) {
        if (*k.p == '[') {
            k.p++;
            rc = batch_add_array(&b, &k, why, whylen);
        } else {
            rc = batch_add(&b, &k, why, whylen);
        }
        if (rc < 0)
            goto out;
    }
    if (b.n == 0) {
        snprintf(why, whylen, "no job specs in it (JSON objects like {\"command\": [\"true\"]})");
        rc = -EINVAL;
        goto out;
    }
    *params = root;
    root = NULL;
    if (lines != NULL) {
        *lines = b.lines;
        b.lines = NULL;
    }
    rc = 0;
out:
    free(b.lines);
    cJSON_Delete(root);
    return rc;
}

/* Reads all of path ("-": c->in) into an owned buffer, at most max bytes. */
static int
read_input(struct cli *c, const char *path, char **buf, size_t *len, size_t max)
{
    FILE *f = strcmp(path, "-") == 0 ? c->in : fopen(path, "r");
    size_t cap = 65536, n = 0;
    char *b = NULL;
    int rc = 0;

    if (f == NULL)
        return -errno;
    for (;;) {
        if (n == cap || b == NULL) {
            char *nb;
            cap = b == NULL ? cap : cap * 2;
            if ((nb = realloc(b, cap)) == NULL) {
                rc = -ENOMEM;
                break;
            }
            b = nb;
        }
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (n > max) {
            rc = -EFBIG;
            break;
        }
        if (got == 0) {
            if (ferror(f))
                rc = -EIO;
            break;
        }
    }
    if (f != c->in)
        fclose(f);
    if (rc < 0) {
        free(b);
        return rc;
    }
    *buf = b;
    *len = n;
    return 0;
}

/* Reports a rejected batch, naming the line of the spec at fault. */
static int
batch_fail(struct cli *c, struct req *r, const int *lines, int rc, struct rpc_error *e)
{
    int64_t index = rc == -EREMOTEIO ? json_int(e->data, "index", -1) : -1;
    const char *field, *reason;

    if (index < 0 || e->code != PROTO_INVALID_PARAMS)
        return cli_fail(c, rc, e);
    field = json_str(e->data, "field");
    reason = json_str(e->data, "reason");
    return cli_errorf(
        c, EXIT_INVALID, "%s:%d: jobqd rejected this job: %s%s%s; nothing was submitted",
        strcmp(r->batch, "-") == 0 ? "stdin" : r->batch, lines[index], field != NULL ? field : "",
        field != NULL ? ": " : "", reason != NULL ? reason : e->message);
}

static int
submit_batch_run(struct cli *c, struct req *r)
{
    const char *src = strcmp(r->batch, "-") == 0 ? "stdin" : r->batch;
    cJSON *params = NULL, *result = NULL, *job;
    int64_t *ids = NULL;
    struct rpc_error e = {0};
    char why[512], *text = NULL;
    int *lines = NULL, rc, code;
    size_t len = 0, n = 0;

    /* A file well over the request limit cannot fit even once blanks are
     * dropped; reading it whole would only waste memory. */
    if ((rc = read_input(c, r->batch, &text, &len, 4 * JOBQ_REQUEST_MAX_BYTES)) < 0) {
        if (rc == -EFBIG)
            return cli_errorf(c, EXIT_INVALID,
                              "--batch %s: over %d bytes, the most one request may carry; split it",
                              src, JOBQ_REQUEST_MAX_BYTES);
        return cli_errorf(c, EXIT_USAGE, "--batch %s: %s", src, strerror(-rc));
    }
    rc = submit_batch_params(c, text, len, r->params, &params, &lines, why, sizeof(why));
    free(text);
    if (rc < 0)
        return cli_errorf(c, rc == -ENOMEM ? EXIT_PROTOCOL : EXIT_INVALID, "--batch %s: %s", src,
                          why);
    if ((code = cli_connect(c)) != 0)
        goto out;
    if ((rc = rpc_call(c->rpc, "submit", params, &result, &e)) < 0) {
        params = NULL;
        code = batch_fail(c, r, lines, rc, &e);
        goto out;
    }
    params = NULL;
    n = (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(result, "jobs"));
    if ((ids = calloc(n + 1, sizeof(*ids))) == NULL) {
        code = cli_errorf(c, EXIT_PROTOCOL, "out of memory");
        goto out;
    }
    n = 0;
    cJSON_ArrayForEach (job, cJSON_GetObjectItemCaseSensitive(result, "jobs")) {
        ids[n++] = json_int(job, "id", 0);
        if (!c->json)
            fprintf(c->out, "%lld\n", (long long)ids[n - 1]);
    }
    fflush(c->out);
    code = EXIT_OK;
    if (r->wait) {
        code = wait_ids(c, ids, n, -1, c->json ? &job : NULL);
        if (c->json && job != NULL) {
            fmt_json(c->out, job);
            cJSON_Delete(job);
        }
    } else if (c->json) {
        fmt_json(c->out, result);
    }
out:
    rpc_error_clear(&e);
    cJSON_Delete(params);
    cJSON_Delete(result);
    free(lines);
    free(ids);
    return code;
}

static int
submit_run(struct cli *c, struct req *r)
{
    cJSON *job = NULL, *waited = NULL;
    int64_t id;
    int code;

    if (r->batch != NULL)
        return submit_batch_run(c, r);
    code = cli_call(c, "submit", r->params, &job);
    r->params = NULL; /* taken */
    if (code != 0)
        return code;
    id = json_int(job, "id", 0);
    if (!r->wait) {
        if (c->json)
            fmt_json(c->out, job);
        else
            fprintf(c->out, "%lld\n", (long long)id);
        cJSON_Delete(job);
        return EXIT_OK;
    }
    /* The id first, so a user who interrupts the wait can still find it. */
    if (!c->json) {
        fprintf(c->out, "%lld\n", (long long)id);
        fflush(c->out);
    }
    code = wait_ids(c, &id, 1, -1, c->json ? &waited : NULL);
    if (c->json && waited != NULL) {
        /* The job as it finished, like `submit --json` prints it. */
        fmt_json(c->out, cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(waited, "jobs"), 0));
    }
    cJSON_Delete(waited);
    cJSON_Delete(job);
    return code;
}

const struct cmd_entry cmd_submit_entry = {
    .name = "submit",
    .args = "[options] [--] CMD [ARG...] | --batch FILE|-",
    .summary = "enqueue a job and print its id; --batch: JSON job specs, one transaction",
    .help = "  --queue Q           queue name (default \"default\")\n"
            "  --name N            a label shown by list and show\n"
            "  --priority N        higher runs first (default 0)\n"
            "  --attempts N        attempts allowed, the first included (default 1)\n"
            "  --backoff BASE[:MAX]  wait between attempts: random up to BASE*2^(n-1),\n"
            "                      capped at MAX (default 1s:10m)\n"
            "  --timeout DUR       time limit of each attempt\n"
            "  --deadline TIME     no attempt runs past it (RFC 3339 or +DUR)\n"
            "  --delay DUR         start no sooner than DUR from now\n"
            "  --at TIME           start no sooner than TIME\n"
            "  --unique KEY        if a job with KEY exists, print its id instead\n"
            "  --env K=V           add to the job's environment (repeatable);\n"
            "                      --env K passes this shell's value of K\n"
            "  --cwd DIR           run in DIR (default: the current directory)\n"
            "  --wait              wait for the job and exit with its outcome\n"
            "                      (see exit status in 'jobq help')\n"
            "  --batch FILE|-      submit the job specs of FILE (\"-\": stdin), all or none:\n"
            "                      JSON objects with the fields of 'jobq show --json',\n"
            "                      one per line (NDJSON) or any JSON objects and arrays\n"
            "                      of them separated by whitespace, so 'jobq show ID...\n"
            "                      --json | jobq submit --batch -' resubmits jobs.\n"
            "                      Prints the ids one per line. Options given with it\n"
            "                      are defaults for each spec.\n",
    .parse = submit_parse,
    .run = submit_run,
};
