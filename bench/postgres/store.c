/*
 * store — the PostgreSQL store as one jobqd node uses it: the front API
 * from coroutines on the runtime, the writer thread's group commit, one
 * node's connections. Measures submits from 16 concurrent submitters
 * (pg.submit_rate) and claim+complete cycles of no-op jobs with the same
 * workers, batches and job count as bench/store/front.c's SQLite figure
 * (pg.claim_complete_rate), which bench/postgres.sh runs beside it.
 *
 * usage: store URL
 */
#include <errno.h>
#include <stdatomic.h>
#include <unistd.h>

#include "../store/bench.h"
#include "jobq/runtime.h"
#include "jobq/store.h"

#define SUBMITTERS 16
#define PER_SUBMITTER 2000
#define BATCH_SPECS 10000
#define CYCLE_JOBS 100000
#define WORKERS 4
#define CLAIM_BATCH 256

struct bench {
    const char *url;
    struct store *st;
    struct wg *wg;
    atomic_int errors;
    atomic_long left;
};

static struct store *
open_store(const char *url)
{
    struct store_opts o = {0};
    struct store *st;
    char why[256];
    int rc;

    o.path = url;
    o.node_name = "bench";
    if ((rc = store_new(&o, &st, why, sizeof(why))) < 0)
        bench_die("store_new", rc, why);
    return st;
}

static void
submitter(void *arg)
{
    struct bench *b = arg;
    struct job_spec sp = bench_spec();
    char why[128];

    for (int i = 0; i < PER_SUBMITTER; i++) {
        int64_t id;
        if (store_submit(b->st, &sp, &id, NULL, why, sizeof(why)) < 0)
            atomic_fetch_add(&b->errors, 1);
    }
    wg_done(b->wg);
}

static void
bench_submit_rate(struct bench *b)
{
    struct store_stats s;
    int64_t t0;

    wg_add(b->wg, SUBMITTERS);
    t0 = bench_ns();
    for (int i = 0; i < SUBMITTERS; i++)
        if (coro_spawn(coro_rt(), "submitter", submitter, b) < 0)
            bench_die("coro_spawn", -EAGAIN, NULL);
    wg_wait(b->wg, NULL, RT_FOREVER);
    double rate = (double)SUBMITTERS * PER_SUBMITTER * 1e9 / (double)(bench_ns() - t0);
    store_stats(b->st, (struct store_who){.admin = true}, &s);
    bench_result("pg.submit_rate", rate, "jobs/s");
    bench_result("pg.submit_group_avg", (double)s.requests / (double)s.commits, "requests");
    store_stats_free(&s);
}

/* As bench/store/front.c's worker: claim a batch, complete it in one
 * call, again. */
static void
worker(void *arg)
{
    struct bench *b = arg;
    struct job **jobs = calloc(CLAIM_BATCH, sizeof(*jobs));
    struct store_completion *c = calloc(CLAIM_BATCH, sizeof(*c));
    int *rcs = calloc(CLAIM_BATCH, sizeof(*rcs));

    while (atomic_load(&b->left) > 0) {
        int n, rc = store_claim(b->st, job_now_ms(), CLAIM_BATCH, jobs, &n);
        if (rc < 0 || n == 0)
            break;
        for (int i = 0; i < n; i++)
            c[i] = (struct store_completion){.id = jobs[i]->id,
                                             .attempt = jobs[i]->attempt,
                                             .outcome = OUTCOME_SUCCEEDED,
                                             .exit_code = 0,
                                             .next = JOB_SUCCEEDED};
        if (store_complete_batch(b->st, c, (size_t)n, rcs) < 0)
            atomic_fetch_add(&b->errors, 1);
        for (int i = 0; i < n; i++) {
            if (rcs[i] < 0)
                atomic_fetch_add(&b->errors, 1);
            job_free(jobs[i]);
        }
        atomic_fetch_sub(&b->left, n);
    }
    free(jobs);
    free(c);
    free(rcs);
    wg_done(b->wg);
}

static void
bench_claim_complete(struct bench *b)
{
    struct job_spec *specs = calloc(BATCH_SPECS, sizeof(*specs));
    int64_t *ids = calloc(BATCH_SPECS, sizeof(*ids)), t0;
    char why[128];

    for (int i = 0; i < BATCH_SPECS; i++)
        specs[i] = bench_spec();
    t0 = bench_ns();
    for (int i = 0; i < CYCLE_JOBS / BATCH_SPECS; i++) {
        int rc = store_submit_batch(b->st, specs, BATCH_SPECS, ids, NULL, why, sizeof(why));
        if (rc < 0)
            bench_die("submit batch", rc, why);
    }
    bench_result("pg.batch_submit_rate", (double)CYCLE_JOBS * 1e9 / (double)(bench_ns() - t0),
                 "jobs/s");
    atomic_store(&b->left, CYCLE_JOBS);
    wg_add(b->wg, WORKERS);
    t0 = bench_ns();
    for (int i = 0; i < WORKERS; i++)
        if (coro_spawn(coro_rt(), "worker", worker, b) < 0)
            bench_die("coro_spawn", -EAGAIN, NULL);
    wg_wait(b->wg, NULL, RT_FOREVER);
    if (atomic_load(&b->left) > 0)
        bench_die("claim+complete", -EIO, "jobs left unclaimed");
    bench_result("pg.claim_complete_rate", (double)CYCLE_JOBS * 1e9 / (double)(bench_ns() - t0),
                 "jobs/s");
    free(specs);
    free(ids);
}

static void
bench_main(void *arg)
{
    struct bench *b = arg;

    b->st = open_store(b->url);
    bench_submit_rate(b);
    bench_claim_complete(b);
    store_free(b->st);
    b->st = NULL;
}

int
main(int argc, char **argv)
{
    struct rt_opts ro = {0};
    struct bench b = {0};
    struct rt *rt;
    int rc;

    if (argc < 2) {
        fprintf(stderr, "usage: store URL\n");
        return 64;
    }
    b.url = argv[1];
    if ((rc = wg_new(&b.wg)) < 0 || (rc = rt_new(&ro, &rt)) < 0)
        bench_die("runtime", rc, NULL);
    if ((rc = rt_run(rt, "bench", bench_main, &b)) < 0)
        bench_die("rt_run", rc, NULL);
    rt_free(rt);
    wg_free(b.wg);
    if (atomic_load(&b.errors) > 0) {
        fprintf(stderr, "bench: %d store calls failed\n", atomic_load(&b.errors));
        return 1;
    }
    return 0;
}
