/*
 * errmsg — what the client says when something goes wrong, and which exit
 * code goes with it: error replies from the daemon, failures to reach it,
 * and the outcome of a finished job. One line each, saying what to do.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "fmt.h"
#include "jobq/proto.h"

int
errmsg_exit_code(int code)
{
    switch (code) {
    case PROTO_INVALID_PARAMS:
    case PROTO_CONFLICT:
    case PROTO_TOO_LARGE:
        return EXIT_INVALID;
    case PROTO_NOT_FOUND:
        return EXIT_NOJOB;
    case PROTO_PERMISSION_DENIED:
        return EXIT_DENIED;
    case PROTO_QUEUE_FULL:
    case PROTO_SHUTTING_DOWN:
    case PROTO_TOO_MANY_CONNECTIONS:
        return EXIT_TEMPFAIL;
    case PROTO_STORAGE_ERROR:
        return EXIT_STORAGE;
    default: /* parse, invalid request, unknown method, internal, timeout */
        return EXIT_PROTOCOL;
    }
}

/* "it already succeeded", "it is running": what goes before the state. */
static const char *
state_phrase(const char *state)
{
    if (strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0)
        return "it already ";
    if (strcmp(state, "canceled") == 0)
        return "it is already ";
    return "it is ";
}

void
errmsg_format(const char *verb, const struct rpc_error *e, char *buf, size_t len)
{
    const cJSON *d = e->data;
    const char *reason = json_str(d, "reason");
    const char *field = json_str(d, "field");
    long long id = (long long)json_int(d, "id", 0);

    switch (e->code) {
    case PROTO_NOT_FOUND:
        if (id > 0 && json_int(d, "attempt", 0) > 0)
            snprintf(buf, len, "job %lld has no attempt %lld (see 'jobq show %lld')", id,
                     (long long)json_int(d, "attempt", 0), id);
        else if (id > 0)
            snprintf(buf, len, "no job %lld (see 'jobq list')", id);
        else
            snprintf(buf, len, "%s (see 'jobq list')", e->message);
        return;
    case PROTO_INVALID_PARAMS:
        if (field != NULL && reason != NULL)
            snprintf(buf, len, "jobqd rejected the request: %s: %s (see 'jobq help %s')", field,
                     reason, verb);
        else
            snprintf(buf, len, "jobqd rejected the request: %s (see 'jobq help %s')",
                     reason != NULL ? reason : e->message, verb);
        return;
    case PROTO_CONFLICT: {
        const char *state = json_str(d, "state");
        /* jobqd's reason names what stands in the way, the state included
         * when that is it; the state alone is for a reason-less reply. */
        if (id > 0 && reason != NULL)
            snprintf(buf, len, "cannot %s job %lld: %s", verb, id, reason);
        else if (id > 0 && state != NULL)
            snprintf(buf, len, "cannot %s job %lld: %s%s", verb, id, state_phrase(state), state);
        else
            snprintf(buf, len, "cannot %s: %s", verb, e->message);
        return;
    }
    case PROTO_PERMISSION_DENIED:
        snprintf(buf, len, "permission denied: %s (ask the daemon's owner or root)",
                 reason != NULL ? reason : e->message);
        return;
    case PROTO_QUEUE_FULL:
        if (json_int(d, "max_queued", -1) >= 0)
            snprintf(buf, len,
                     "jobqd is full: %lld jobs waiting, its --max-queued is %lld; try again "
                     "later",
                     (long long)json_int(d, "queued", 0), (long long)json_int(d, "max_queued", 0));
        else
            snprintf(buf, len, "jobqd is full (%s); try again later", e->message);
        return;
    case PROTO_STORAGE_ERROR:
        snprintf(buf, len,
                 "jobqd could not store the change: %s (check the disk under its state "
                 "directory, and its log)",
                 reason != NULL ? reason : e->message);
        return;
    case PROTO_SHUTTING_DOWN:
        snprintf(buf, len, "jobqd is shutting down; try again once it is back");
        return;
    case PROTO_TOO_LARGE:
        snprintf(buf, len, "the request is over jobqd's limit of %lld bytes; split it",
                 (long long)json_int(d, "limit", JOBQ_REQUEST_MAX_BYTES));
        return;
    case PROTO_TOO_MANY_CONNECTIONS:
        snprintf(buf, len, "jobqd has too many connections open; try again in a moment");
        return;
    case PROTO_REQUEST_TIMEOUT:
        snprintf(buf, len, "jobqd gave up reading the request: %s", e->message);
        return;
    case PROTO_METHOD_NOT_FOUND:
        snprintf(buf, len,
                 "jobqd does not know '%s'; it is older than this client (see 'jobq version')",
                 json_str(d, "method") != NULL ? json_str(d, "method") : verb);
        return;
    case PROTO_INTERNAL_ERROR:
        snprintf(buf, len, "jobqd failed: %s (see its log)", reason != NULL ? reason : e->message);
        return;
    default:
        snprintf(buf, len, "protocol error from jobqd: %s (%s, %d)", e->message,
                 proto_error_name(e->code), e->code);
        return;
    }
}

int
errmsg_transport(int rc, const char *path, bool fallback, char *buf, size_t len)
{
    const char *hint = fallback
                           ? "is it running? see 'make run', or point --socket or JOBQ_SOCKET at it"
                           : "is it running? see 'make run'";

    switch (rc) {
    case -ENOENT:
        snprintf(buf, len, "cannot reach jobqd at %s: no such file (%s)", path, hint);
        return EXIT_UNREACHABLE;
    case -ECONNREFUSED:
        snprintf(buf, len, "cannot reach jobqd at %s: connection refused (%s)", path, hint);
        return EXIT_UNREACHABLE;
    case -EACCES:
    case -EPERM:
        snprintf(buf, len,
                 "cannot reach jobqd at %s: permission denied (ask for the socket's group, or "
                 "run your own daemon)",
                 path);
        return EXIT_DENIED;
    case -ENOTSOCK:
    case -ENOTDIR:
        snprintf(buf, len,
                 "cannot reach jobqd at %s: not a socket (check --socket and JOBQ_SOCKET)", path);
        return EXIT_UNREACHABLE;
    case -ENAMETOOLONG:
        snprintf(buf, len, "cannot reach jobqd at %s: path too long", path);
        return EXIT_UNREACHABLE;
    case -ECONNRESET:
    case -EPIPE:
        snprintf(buf, len,
                 "jobqd at %s closed the connection before replying (did it stop? see its log)",
                 path);
        return EXIT_UNREACHABLE;
    case -EMSGSIZE:
        snprintf(buf, len,
                 "message over the protocol's size limit (a request is at most %d "
                 "bytes); split it",
                 JOBQ_REQUEST_MAX_BYTES);
        return EXIT_INVALID;
    case -EBADMSG:
        snprintf(buf, len,
                 "bad reply from jobqd at %s (is that socket really jobqd? see 'jobq version')",
                 path);
        return EXIT_PROTOCOL;
    default:
        snprintf(buf, len, "talking to jobqd at %s: %s", path, strerror(-rc));
        return EXIT_PROTOCOL;
    }
}

int
errmsg_http(int rc, const char *url, int status, const char *reason, const char *detail, char *buf,
            size_t len)
{
    const char *hint = "is jobqd running with --http there? check --url or JOBQ_URL";

    if (rc == -EPROTO) {
        switch (status) {
        case 401:
        case 403:
            snprintf(buf, len,
                     "jobqd at %s refused the request (HTTP %d): bad or missing token: "
                     "see --token-file",
                     url, status);
            return EXIT_DENIED;
        case 404:
            snprintf(buf, len,
                     "no JSON-RPC at %s (HTTP 404): jobqd serves /rpc only with "
                     "--http-token-file; check --url",
                     url);
            return EXIT_UNREACHABLE;
        case 413:
            snprintf(buf, len,
                     "jobqd at %s refused the request as too large (HTTP 413: at most %d bytes); "
                     "split it",
                     url, JOBQ_REQUEST_MAX_BYTES);
            return EXIT_INVALID;
        case 429:
        case 503:
            snprintf(buf, len, "jobqd at %s cannot take requests now (HTTP %d %s); retry", url,
                     status, reason);
            return EXIT_TEMPFAIL;
        case 502:
        case 504:
            snprintf(buf, len, "cannot reach jobqd behind %s (HTTP %d %s from a proxy; %s)", url,
                     status, reason, hint);
            return EXIT_UNREACHABLE;
        default:
            snprintf(buf, len,
                     "%s answered HTTP %d %s (is that jobqd's --http address? see "
                     "'jobq version')",
                     url, status, reason);
            return EXIT_PROTOCOL;
        }
    }
    switch (rc) {
    case -ENXIO:
        snprintf(buf, len, "cannot reach jobqd at %s: %s (check --url or JOBQ_URL)", url, detail);
        return EXIT_UNREACHABLE;
    case -ECONNREFUSED:
        snprintf(buf, len, "cannot reach jobqd at %s: connection refused (%s)", url, hint);
        return EXIT_UNREACHABLE;
    case -EHOSTUNREACH:
    case -ENETUNREACH:
    case -EADDRNOTAVAIL:
    case -EAFNOSUPPORT:
        snprintf(buf, len, "cannot reach jobqd at %s: %s (%s)", url,
                 rc == -EHOSTUNREACH    ? "no route to the host"
                 : rc == -ENETUNREACH   ? "the network is unreachable"
                 : rc == -EADDRNOTAVAIL ? "no address to connect from"
                                        : "no such address family here",
                 hint);
        return EXIT_UNREACHABLE;
    case -ETIMEDOUT:
        snprintf(buf, len, "cannot reach jobqd at %s: %s (%s)", url,
                 detail[0] != '\0' ? detail : strerror(-rc), hint);
        return EXIT_UNREACHABLE;
    case -ECONNRESET:
    case -EPIPE:
        snprintf(buf, len,
                 "jobqd at %s closed the connection before replying (did it stop? see its log)",
                 url);
        return EXIT_UNREACHABLE;
    case -EMSGSIZE:
        snprintf(buf, len,
                 "message over the protocol's size limit (a request is at most %d bytes, a reply "
                 "%d); split it",
                 JOBQ_REQUEST_MAX_BYTES, RPC_REPLY_MAX_BYTES);
        return EXIT_INVALID;
    case -EBADMSG:
        snprintf(buf, len, "bad reply from %s (is that jobqd's --http address? see 'jobq version')",
                 url);
        return EXIT_PROTOCOL;
    default:
        snprintf(buf, len, "talking to jobqd at %s: %s", url, strerror(-rc));
        return EXIT_PROTOCOL;
    }
}

/* outcome and state of a job object, "" when absent. */
static const char *
str_or_empty(const cJSON *job, const char *key)
{
    const char *s = json_str(job, key);
    return s != NULL ? s : "";
}

static bool
state_is(const cJSON *job, const char *s)
{
    return strcmp(str_or_empty(job, "state"), s) == 0;
}

int
job_exit_code(const cJSON *job)
{
    const char *outcome = str_or_empty(job, "outcome");
    int64_t code = json_int(job, "exit_code", -1), sig = json_int(job, "signal", 0);

    if (state_is(job, "succeeded"))
        return EXIT_OK;
    if (state_is(job, "canceled"))
        return EXIT_JOB_CANCELED;
    if (!state_is(job, "failed"))
        return EXIT_WAIT_TIMEOUT; /* not finished */
    if (strcmp(outcome, "exited") == 0 && code > 0 && code < 256)
        return (int)code;
    if (strcmp(outcome, "timeout") == 0 || strcmp(outcome, "deadline") == 0)
        return EXIT_JOB_TIMEOUT;
    if (strcmp(outcome, "signaled") == 0 && sig > 0 && sig < 128)
        return EXIT_JOB_SIGNAL_BASE + (int)sig;
    if (strcmp(outcome, "spawn_error") == 0)
        return code == EXIT_JOB_NOEXEC ? EXIT_JOB_NOEXEC : EXIT_JOB_NOTFOUND;
    if (strcmp(outcome, "canceled") == 0)
        return EXIT_JOB_CANCELED;
    return EXIT_JOB_FAILED;
}

void
job_exit_reason(const cJSON *job, char *buf, size_t len)
{
    long long id = (long long)json_int(job, "id", 0);
    const char *outcome = str_or_empty(job, "outcome");
    const char *error = json_str(job, "error");
    int64_t sig = json_int(job, "signal", 0);
    char what[256];

    buf[0] = '\0';
    if (state_is(job, "succeeded"))
        return;
    if (state_is(job, "canceled")) {
        /* The daemon's own words when they start with it ("canceled before
         * its next attempt (...)"), not "was canceled: canceled ...". */
        if (error != NULL && strncmp(error, "canceled", 8) == 0)
            snprintf(buf, len, "job %lld was %s", id, error);
        else
            snprintf(buf, len, "job %lld was canceled%s%s", id, error != NULL ? ": " : "",
                     error != NULL ? error : "");
        return;
    }
    if (!state_is(job, "failed")) {
        snprintf(buf, len, "job %lld is still %s", id, str_or_empty(job, "state"));
        return;
    }
    if (strcmp(outcome, "exited") == 0)
        snprintf(what, sizeof(what), "exited with status %lld",
                 (long long)json_int(job, "exit_code", -1));
    else if (strcmp(outcome, "signaled") == 0)
        snprintf(what, sizeof(what), "killed by signal %lld (SIG%s)", (long long)sig,
                 sigabbrev_np((int)sig) != NULL ? sigabbrev_np((int)sig) : "?");
    else if (error != NULL)
        snprintf(what, sizeof(what), "%s", error);
    else if (strcmp(outcome, "timeout") == 0)
        snprintf(what, sizeof(what), "timed out");
    else if (strcmp(outcome, "deadline") == 0)
        snprintf(what, sizeof(what), "its deadline passed");
    else if (strcmp(outcome, "spawn_error") == 0)
        snprintf(what, sizeof(what), "could not start its command");
    else
        snprintf(what, sizeof(what), "%s", outcome[0] ? outcome : "unknown reason");
    snprintf(buf, len, "job %lld failed: %s (see 'jobq logs %lld' and 'jobq show %lld')", id, what,
             id, id);
}
