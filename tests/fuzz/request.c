/*
 * request — libFuzzer target for what a request line goes through in
 * jobqd: the text checks, cJSON, the JSON-RPC envelope, the method table,
 * every handler's parameter checks, the strict spec decoder and the job
 * validator, the store (SQLite in a temporary directory), and the reply
 * encoder. It drives rpc_handle on a real daemon as server.c does: the
 * input is split into lines at line feeds, a CR before the feed is dropped,
 * blank lines are skipped, and each line runs in its own coroutine.
 *
 * What is left out, and why: the dispatcher is created but never started,
 * so no submitted command is ever run (the fuzzer writes commands); and
 * the caller's connection is already gone (its context canceled), so a
 * held `wait` or `logs` returns at once instead of holding the fuzzer.
 * Every reply must be one line of valid JSON.
 */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "jobq/config.h"
#include "jobq/dispatch.h"
#include "jobq/events.h"
#include "jobq/limits.h"
#include "jobq/log.h"
#include "jobq/metrics.h"
#include "jobq/rpc.h"
#include "jobq/runtime.h"
#include "jobq/store.h"

/* Jobs the store may hold waiting: submits beyond it are refused, which
 * bounds the database a long run builds. */
#define FUZZ_MAX_QUEUED 2000

/* The daemon of the whole run, and its temporary state directory: the
 * fuzzer calls in with nothing but the input. */
static struct daemon daemon_;
static struct rpc_peer peers[2];
static char state_dir[64];

struct line {
    const char *text;
    size_t len;
    const struct rpc_peer *peer;
};

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void
remove_state(void)
{
    if (state_dir[0] != '\0')
        nftw(state_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void
die(const char *what, int rc, const char *why)
{
    fprintf(stderr, "fuzz request: %s: %s %s\n", what, strerror(rc < 0 ? -rc : rc), why ? why : "");
    exit(1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct daemon *d = &daemon_;
    struct config_defaults defs = {.threads = 2, .state_dir = "/nonexistent"};
    struct store_opts so = {0};
    struct rt_opts ro = {.threads = 2};
    struct ctx *gone;
    const char *tmp = getenv("TMPDIR");
    char why[512] = "";
    int rc;

    (void)argc;
    (void)argv;
    log_set_level(LOG_LEVEL_ERROR);
    snprintf(state_dir, sizeof(state_dir), "%s/jobq-fuzz.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(state_dir) == NULL)
        die("mkdtemp", errno, state_dir);
    atexit(remove_state);
    d->uid = geteuid();
    d->started_ms = job_now_ms();
    if ((rc = config_new(&defs, &d->cfg)) < 0)
        die("config", rc, NULL);
    snprintf(d->log_dir, sizeof(d->log_dir), "%s/logs", state_dir);
    snprintf(d->db_path, sizeof(d->db_path), "%s/jobq.db", state_dir);
    if (mkdir(d->log_dir, 0700) < 0)
        die("mkdir", errno, d->log_dir);
    d->exec.log_dir = d->log_dir;
    d->exec.instance = d->db_path;
    so.path = d->db_path;
    so.sync = STORE_SYNC_OFF; /* nothing here needs to survive a crash */
    so.max_queued = FUZZ_MAX_QUEUED;
    if ((rc = store_new(&so, &d->store, why, sizeof(why))) < 0)
        die("store", rc, why);
    if ((rc = rt_new(&ro, &d->rt)) < 0 || (rc = events_new(&d->events)) < 0 ||
        (rc = metrics_new(&d->metrics)) < 0 || (rc = dispatch_new(d, &d->dispatch)) < 0)
        die("start", rc, NULL);
    if ((rc = ctx_new(NULL, &gone)) < 0)
        die("ctx", rc, NULL);
    ctx_cancel(gone);
    /* An administrator (root) and an ordinary uid: the access checks of
     * every handler run both ways. */
    peers[0] = (struct rpc_peer){.uid = 0, .gid = 0, .pid = 1, .admin = true, .ctx = gone};
    peers[1] = (struct rpc_peer){.uid = 4242, .gid = 4242, .pid = 1, .admin = false, .ctx = gone};
    return 0;
}

static void
check_reply(const char *reply)
{
    size_t n = strlen(reply);
    cJSON *j;

    /* One line, ending in its line feed, holding one JSON text. */
    if (n == 0 || reply[n - 1] != '\n' || memchr(reply, '\n', n - 1) != NULL)
        __builtin_trap();
    if ((j = cJSON_ParseWithLength(reply, n - 1)) == NULL)
        __builtin_trap();
    cJSON_Delete(j);
}

static void
run_line(void *arg)
{
    struct line *l = arg;
    bool oom = false;
    char *reply = rpc_handle(&daemon_, l->peer, l->text, l->len, &oom);

    if (reply != NULL)
        check_reply(reply);
    free(reply);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    char *copy;

    if (size > JOBQ_REQUEST_MAX_BYTES)
        return -1; /* the server refuses these before parsing */
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        struct line l;
        size_t blank = 0;

        if (len > 0 && p[len - 1] == '\r')
            len--;
        while (blank < len && (p[blank] == ' ' || p[blank] == '\t'))
            blank++;
        /* A copy of exactly len bytes plus the NUL the server adds, so
         * ASan sees any read past the line. Odd lengths come from the
         * ordinary uid. */
        if (blank < len && (copy = malloc(len + 1)) != NULL) {
            memcpy(copy, p, len);
            copy[len] = '\0';
            l = (struct line){copy, len, &peers[len % 2]};
            rt_run(daemon_.rt, "request", run_line, &l);
            free(copy);
        }
        p = nl ? nl + 1 : end;
    }
    return 0;
}
