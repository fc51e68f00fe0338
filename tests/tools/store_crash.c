/*
 * store_crash — the victim of the store's kill -9 test (tests/test_store.c,
 * test_kill9_loses_no_acknowledged_write). It opens the store as jobqd
 * would (recovering attempts a previous victim left open), then writes as
 * fast as it can from several threads: submitters (single jobs and
 * batches) and a worker that claims and completes jobs. Every write is
 * printed to stdout only after store_* returned 0, that is after COMMIT:
 *
 *   S <id>            a submit was acknowledged
 *   C <id> <state>    a completion to a terminal state was acknowledged
 *   R <retrying> <failed>   recovery at start-up
 *
 * Lines are written whole with one write(2) each, so a SIGKILL can cut the
 * stream only between lines. The driver kills it at a random moment and
 * checks every acknowledged line against the reopened database.
 *
 * usage: store_crash DBPATH SEED
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jobq/job.h"
#include "jobq/store.h"

#define SUBMITTERS 4

static struct store *st;
static uint64_t seed;

static void
say(const char *line)
{
    size_t n = strlen(line);
    /* One write per line: atomic with respect to the other threads' lines
     * (a pipe write of at most PIPE_BUF bytes is never interleaved). */
    if (write(STDOUT_FILENO, line, n) != (ssize_t)n)
        _exit(3);
}

static uint64_t
next_rand(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void *
submitter(void *arg)
{
    uint64_t x = seed ^ ((uintptr_t)arg * 0x9e3779b97f4a7c15ULL) ^ 1;
    char *argv[] = {"/bin/echo", "crash", "test", NULL};
    char why[256], line[64];
    struct job_spec specs[8];
    int64_t ids[8];

    for (;;) {
        size_t n = next_rand(&x) % 4 == 0 ? 1 + next_rand(&x) % 8 : 1;
        for (size_t i = 0; i < n; i++) {
            memset(&specs[i], 0, sizeof(specs[i]));
            specs[i].command = argv;
            specs[i].queue = next_rand(&x) % 2 ? "a" : "b";
            specs[i].priority = (int32_t)(next_rand(&x) % 5);
            specs[i].max_attempts = 2;
            specs[i].backoff_base_ms = 0;
            specs[i].backoff_max_ms = 0;
            specs[i].uid = 1000;
            specs[i].gid = 1000;
        }
        int rc = store_submit_batch(st, specs, n, ids, NULL, why, sizeof(why));
        if (rc < 0) {
            fprintf(stderr, "store_crash: submit: %s (%s)\n", strerror(-rc), why);
            _exit(2);
        }
        for (size_t i = 0; i < n; i++) {
            snprintf(line, sizeof(line), "S %" PRId64 "\n", ids[i]);
            say(line);
        }
    }
    return NULL;
}

static void *
worker(void *arg)
{
    uint64_t x = seed ^ 0x5bd1e995;
    struct job *jobs[16];
    char line[64];
    int n;

    for (;;) {
        int rc = store_claim(st, job_now_ms(), 16, jobs, &n);
        if (rc < 0) {
            fprintf(stderr, "store_crash: claim: %s\n", strerror(-rc));
            _exit(2);
        }
        for (int i = 0; i < n; i++) {
            uint64_t r = next_rand(&x) % 3;
            struct store_completion c = {
                .id = jobs[i]->id,
                .attempt = jobs[i]->attempt,
                .outcome = r == 0 ? OUTCOME_SUCCEEDED : OUTCOME_EXITED,
                .exit_code = r == 0 ? 0 : 1,
                .next = r == 0   ? JOB_SUCCEEDED
                        : r == 1 ? JOB_FAILED
                                 : JOB_RETRYING,
                .run_at = job_now_ms(),
            };
            if ((rc = store_complete(st, &c)) < 0) {
                fprintf(stderr, "store_crash: complete: %s\n", strerror(-rc));
                _exit(2);
            }
            if (job_state_terminal(c.next)) {
                snprintf(line, sizeof(line), "C %" PRId64 " %s\n", c.id, job_state_name(c.next));
                say(line);
            }
            job_free(jobs[i]);
        }
        if (n == 0)
            usleep(1000);
    }
    return NULL;
}

int
main(int argc, char **argv)
{
    struct store_opts opts = {0};
    struct store_running *open = NULL;
    int64_t retrying, failed;
    pthread_t t[SUBMITTERS + 1];
    char why[512], line[96];
    size_t n;
    int rc;

    if (argc != 3) {
        fprintf(stderr, "usage: store_crash DBPATH SEED\n");
        return 64;
    }
    opts.path = argv[1];
    seed = strtoull(argv[2], NULL, 10) | 1;
    if ((rc = store_new(&opts, &st, why, sizeof(why))) < 0) {
        fprintf(stderr, "store_crash: %s\n", why);
        return 1;
    }
    /* What jobqd does at start: find the attempts a killed daemon left
     * open, then record them as interrupted. */
    if ((rc = store_recover_list(st, &open, &n)) < 0 ||
        (rc = store_recover(st, job_now_ms(), &retrying, &failed)) < 0) {
        fprintf(stderr, "store_crash: recovery: %s\n", strerror(-rc));
        return 1;
    }
    free(open);
    snprintf(line, sizeof(line), "R %" PRId64 " %" PRId64 "\n", retrying, failed);
    say(line);
    for (uintptr_t i = 0; i < SUBMITTERS; i++)
        pthread_create(&t[i], NULL, submitter, (void *)i);
    pthread_create(&t[SUBMITTERS], NULL, worker, NULL);
    /* Runs until killed. */
    pthread_join(t[0], NULL);
    return 0;
}
