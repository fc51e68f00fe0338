/*
 * logs — `jobq logs ID [--attempt N] [--follow]`: the captured stdout and
 * stderr of an attempt (the latest by default), written to stdout byte
 * for byte. --follow holds each `logs` call on the daemon (wait_ms) until
 * new output or the attempt's end, and moves on to the next attempt while
 * the job is retrying, until the job is terminal. --json prints the logs
 * results of docs/PROTOCOL.md instead (data in base64, as binary output
 * cannot be a JSON string): one for the whole log, or with --follow one
 * line per result that carries output or ends an attempt.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "fmt.h"
#include "jobq/base64.h"
#include "jobq/proto.h"

enum { LOGS_ATTEMPT = 1, LOGS_FOLLOW };

/* Bytes asked for per call: the protocol's most, so a finished log comes
 * in few round trips. */
#define LOGS_CHUNK_BYTES (256 * 1024)
/* How long one --follow call is held on the daemon; a new call follows at
 * once, so this only bounds how long a dead daemon goes unnoticed. */
#define LOGS_FOLLOW_WAIT_MS 30000

static const struct opt logs_opts[] = {
    {"attempt", 0, true, LOGS_ATTEMPT},
    {"follow", 'f', false, LOGS_FOLLOW},
    OPT_COMMON,
};

static int
logs_parse(struct cli *c, struct req *r, int argc, char **argv, char *why, size_t whylen)
{
    int64_t id = 0, attempt = 0;
    struct optiter it;
    const char *arg;
    int key, rc;

    if ((rc = optiter_init(&it, argc, argv, false)) < 0)
        return rc;
    while ((key = optiter_next(&it, logs_opts, &arg, why, whylen)) > 0) {
        rc = 0;
        if (key == LOGS_ATTEMPT)
            rc = opt_int("--attempt", arg, 1, INT32_MAX, &attempt, why, whylen);
        else if (key == LOGS_FOLLOW)
            r->follow = true;
        else
            opt_common(c, r, key, arg);
        if (rc < 0)
            goto out;
    }
    if ((rc = key) < 0)
        goto out;
    rc = -EINVAL;
    if (it.npos != 1 && !r->help) {
        snprintf(why, whylen, "logs: %s; usage: jobq logs ID [--attempt N] [--follow] [--json]",
                 it.npos == 0 ? "no job id given" : "one job id at a time");
        goto out;
    }
    if (it.npos == 1 && opt_id(it.pos[0], &id, why, whylen) < 0)
        goto out;
    rc = -ENOMEM;
    if ((r->params = cJSON_CreateObject()) == NULL || !json_add_id(r->params, "id", id) ||
        (attempt > 0 && !cJSON_AddNumberToObject(r->params, "attempt", (double)attempt)) ||
        !cJSON_AddNumberToObject(r->params, "offset", 0) ||
        !cJSON_AddNumberToObject(r->params, "limit", LOGS_CHUNK_BYTES) ||
        (r->follow && !cJSON_AddNumberToObject(r->params, "wait_ms", LOGS_FOLLOW_WAIT_MS)))
        goto out;
    rc = 0;
out:
    optiter_free(&it);
    return rc;
}

static bool
terminal(const char *state)
{
    return state != NULL && (strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
                             strcmp(state, "canceled") == 0);
}

/* Sets the number member key of params. */
static int
set_num(cJSON *params, const char *key, int64_t v)
{
    cJSON *n = cJSON_CreateNumber((double)v);

    if (n == NULL)
        return -ENOMEM;
    if (cJSON_HasObjectItem(params, key))
        return cJSON_ReplaceItemInObjectCaseSensitive(params, key, n) ? 0 : -ENOMEM;
    return cJSON_AddItemToObject(params, key, n) ? 0 : -ENOMEM;
}

/* Decodes the base64 data member of a logs result into an owned *buf
 * (free(); NULL when empty). Returns 0 or an exit code. */
static int
decode_data(struct cli *c, const cJSON *res, char **buf, size_t *n)
{
    const char *data = json_str(res, "data");
    size_t len;

    *buf = NULL;
    *n = 0;
    if (data == NULL || (len = strlen(data)) == 0)
        return 0;
    if ((*buf = malloc(base64_decoded_max(len) + 1)) == NULL)
        return cli_errorf(c, EXIT_PROTOCOL, "out of memory");
    if (base64_decode(data, len, *buf, n) < 0) {
        free(*buf);
        *buf = NULL;
        return cli_errorf(c, EXIT_PROTOCOL, "bad reply from jobqd: log data is not base64");
    }
    return 0;
}

/* The bytes of a whole log, for `logs --json` without --follow. */
struct logbuf {
    char *b; /* owned */
    size_t n;
};

/* Puts out one logs result: its bytes as they are; with --json and
 * --follow, the result itself on one line (NDJSON), skipping the empty
 * ones of a hold that ran out; with --json alone, its bytes go into acc to
 * be printed as one result at the end. */
static int
emit(struct cli *c, struct req *r, const cJSON *res, struct logbuf *acc)
{
    char *buf, *line;
    size_t n;
    int code;

    if (c->json && r->follow) {
        const char *data = json_str(res, "data");
        if ((data == NULL || *data == '\0') && !json_bool(res, "done"))
            return 0;
        if ((line = cJSON_PrintUnformatted(res)) == NULL)
            return cli_errorf(c, EXIT_PROTOCOL, "out of memory");
        fprintf(c->out, "%s\n", line);
        free(line);
        return 0;
    }
    if ((code = decode_data(c, res, &buf, &n)) != 0 || n == 0)
        return code;
    if (!c->json) {
        fwrite(buf, 1, n, c->out);
    } else {
        char *nb = realloc(acc->b, acc->n + n);
        if (nb == NULL) {
            free(buf);
            return cli_errorf(c, EXIT_PROTOCOL, "out of memory");
        }
        memcpy(nb + acc->n, buf, n);
        acc->b = nb;
        acc->n += n;
    }
    free(buf);
    return 0;
}

/* Prints the last result of a whole read with offset 0 and data holding
 * every byte read, as if one call had returned the whole log. */
static int
emit_whole(struct cli *c, cJSON *last, const struct logbuf *acc)
{
    char *data = malloc(base64_encoded_len(acc->n) + 1);
    cJSON *d;

    if (data == NULL)
        return cli_errorf(c, EXIT_PROTOCOL, "out of memory");
    base64_encode(acc->b, acc->n, data);
    d = cJSON_CreateString(data);
    free(data);
    if (d == NULL || !cJSON_ReplaceItemInObjectCaseSensitive(last, "data", d)) {
        cJSON_Delete(d); /* not attached */
        return cli_errorf(c, EXIT_PROTOCOL, "out of memory");
    }
    if (set_num(last, "offset", 0) < 0)
        return cli_errorf(c, EXIT_PROTOCOL, "out of memory");
    fmt_json(c->out, last);
    return 0;
}

static int
logs_run(struct cli *c, struct req *r)
{
    bool fixed = cJSON_HasObjectItem(r->params, "attempt"), next_attempt = false;
    int64_t attempt = json_int(r->params, "attempt", 0), offset = 0;
    cJSON *res = NULL, *params = NULL;
    struct logbuf acc = {0};
    struct rpc_error e = {0};
    int code, rc;

    if ((code = cli_connect(c)) != 0)
        return code;
    for (;;) {
        if ((params = cJSON_Duplicate(r->params, true)) == NULL ||
            set_num(params, "offset", offset) < 0 ||
            (attempt > 0 && set_num(params, "attempt", attempt) < 0)) {
            cJSON_Delete(params);
            code = cli_errorf(c, EXIT_PROTOCOL, "out of memory");
            break;
        }
        rc = rpc_call(c->rpc, "logs", params, &res, &e);
        if (rc == -EREMOTEIO && next_attempt && e.code == PROTO_NOT_FOUND) {
            code = EXIT_OK; /* the job ended without another attempt */
            break;
        }
        if (rc < 0) {
            code = cli_fail(c, rc, &e);
            break;
        }
        if ((code = emit(c, r, res, &acc)) != 0)
            break;
        if (r->follow)
            fflush(c->out);
        attempt = json_int(res, "attempt", 0);
        int64_t was = offset;
        offset = json_int(res, "next_offset", offset);
        next_attempt = false;
        if (!json_bool(res, "eof") && offset > was)
            goto next; /* more is there already */
        if (!r->follow)
            break;
        if (!json_bool(res, "done"))
            goto next; /* held again until output or the end */
        if (fixed || terminal(json_str(res, "state")))
            break;
        if (attempt > 0) {
            /* The attempt ended and the job will run again: follow the
             * next attempt from its first byte. */
            attempt++;
            offset = 0;
            next_attempt = true;
        }
    next:
        cJSON_Delete(res);
        res = NULL;
    }
    if (code == EXIT_OK && c->json && !r->follow && res != NULL)
        code = emit_whole(c, res, &acc);
    free(acc.b);
    rpc_error_clear(&e);
    cJSON_Delete(res);
    return code;
}

const struct cmd_entry cmd_logs_entry = {
    .name = "logs",
    .args = "ID [--attempt N] [--follow] [--json]",
    .summary = "captured stdout and stderr of a job, byte for byte",
    .help = "  --attempt N         that attempt (default: the latest)\n"
            "  -f, --follow        keep printing new output until the job finishes\n"
            "  --json              print the result of the protocol's logs method\n"
            "                      (docs/PROTOCOL.md 7.4: id, attempt, offset,\n"
            "                      next_offset, data in base64, eof, done, truncated,\n"
            "                      state) for the whole log; with --follow, one such\n"
            "                      object per line (NDJSON) for each chunk of output\n"
            "                      and for the end of each attempt\n",
    .parse = logs_parse,
    .run = logs_run,
};
