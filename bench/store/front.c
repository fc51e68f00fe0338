/*
 * front — the store as jobqd uses it: the front API from coroutines on the
 * runtime, the writer thread's group commit, synchronous=FULL. Measures
 * concurrent submits, the latency of one submitter, batch submits, and
 * claim+complete cycles. bench/store/raw.c measures the references.
 *
 * usage: front DIR [submit | batch | cycle]   (one figure alone; cycle is
 * the reference of bench/postgres.sh)
 */
#include <errno.h>
#include <stdatomic.h>
#include <unistd.h>

#include "bench.h"
#include "jobq/runtime.h"
#include "jobq/store.h"

#define SUBMITTERS 64
#define PER_SUBMITTER 2500
#define LAT_SUBMITS 3000
#define BATCH_SPECS 10000
#define BATCHES 50
#define CYCLE_JOBS 100000
#define WORKERS 4
#define CLAIM_BATCH 256

struct bench {
    const char *dir;
    struct store *st;
    struct wg *wg;
    atomic_int errors;
    atomic_long left; /* claim+complete: jobs still to finish */
    bool only_submit; /* `front DIR submit`: the first figure alone (profiling) */
    bool only_cycle;  /* `front DIR cycle`: claim+complete alone */
    bool only_batch;  /* `front DIR batch`: batch submits alone (profiling) */
};

static struct store *
open_store(const char *dir, const char *name)
{
    struct store_opts o = {0};
    struct store *st;
    char path[512], why[256];
    int rc;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
    o.path = path;
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

/* SUBMITTERS coroutines, each submitting one job at a time: what many
 * clients do, each waiting for its id. */
static void
bench_submit_rate(void *arg)
{
    struct bench *b = arg;
    struct store_stats s;
    int64_t t0;

    b->st = open_store(b->dir, "submit.db");
    wg_add(b->wg, SUBMITTERS);
    t0 = bench_ns();
    for (int i = 0; i < SUBMITTERS; i++)
        if (coro_spawn(coro_rt(), "submitter", submitter, b) < 0)
            bench_die("coro_spawn", -EAGAIN, NULL);
    wg_wait(b->wg, NULL, RT_FOREVER);
    double rate = (double)SUBMITTERS * PER_SUBMITTER * 1e9 / (double)(bench_ns() - t0);
    store_stats(b->st, (struct store_who){.admin = true}, &s);
    bench_result("store.submit_rate", rate, "jobs/s");
    bench_result("store.submit_group_avg", (double)s.requests / (double)s.commits, "requests");
    store_stats_free(&s);
}

/* One submitter: each submit waits for its own fsync. */
static void
bench_submit_latency(void *arg)
{
    struct bench *b = arg;
    struct job_spec sp = bench_spec();
    int64_t *lat = calloc(LAT_SUBMITS, sizeof(*lat));
    char why[128];

    for (int i = 0; i < LAT_SUBMITS; i++) {
        int64_t id, t0 = bench_ns();
        int rc = store_submit(b->st, &sp, &id, NULL, why, sizeof(why));
        if (rc < 0)
            bench_die("submit", rc, why);
        lat[i] = bench_ns() - t0;
    }
    bench_result("store.submit_lat_p50_us", (double)bench_pct(lat, LAT_SUBMITS, 50) / 1000.0, "us");
    bench_result("store.submit_lat_p99_us", (double)bench_pct(lat, LAT_SUBMITS, 99) / 1000.0, "us");
    free(lat);
}

/* `jobq submit --batch` of BATCH_SPECS specs: one request, one commit.
 * Like raw.insert_batch1000_rate, BATCHES * BATCH_SPECS = 500,000 rows
 * into an empty database. */
static void
bench_batch(void *arg)
{
    struct bench *b = arg;
    struct job_spec *specs = calloc(BATCH_SPECS, sizeof(*specs));
    int64_t *ids = calloc(BATCH_SPECS, sizeof(*ids)), t0;
    char why[128];

    for (int i = 0; i < BATCH_SPECS; i++)
        specs[i] = bench_spec();
    t0 = bench_ns();
    for (int i = 0; i < BATCHES; i++) {
        int rc = store_submit_batch(b->st, specs, BATCH_SPECS, ids, NULL, why, sizeof(why));
        if (rc < 0)
            bench_die("submit batch", rc, why);
    }
    bench_result("store.batch_submit_rate",
                 (double)BATCHES * BATCH_SPECS * 1e9 / (double)(bench_ns() - t0), "jobs/s");
    free(specs);
    free(ids);
}

/* A dispatcher-like worker: claim a batch, complete every job of it in
 * one call (each completion fenced on its own), again. */
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
        for (int i = 0; i < n; i++) {
            c[i] = (struct store_completion){.id = jobs[i]->id,
                                             .attempt = jobs[i]->attempt,
                                             .outcome = OUTCOME_SUCCEEDED,
                                             .exit_code = 0,
                                             .next = JOB_SUCCEEDED};
        }
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
bench_claim_complete(void *arg)
{
    struct bench *b = arg;
    struct job_spec *specs = calloc(BATCH_SPECS, sizeof(*specs));
    int64_t *ids = calloc(BATCH_SPECS, sizeof(*ids)), t0;
    char why[128];

    b->st = open_store(b->dir, "cycle.db");
    for (int i = 0; i < BATCH_SPECS; i++)
        specs[i] = bench_spec();
    for (int i = 0; i < CYCLE_JOBS / BATCH_SPECS; i++) {
        int rc = store_submit_batch(b->st, specs, BATCH_SPECS, ids, NULL, why, sizeof(why));
        if (rc < 0)
            bench_die("submit batch", rc, why);
    }
    atomic_store(&b->left, CYCLE_JOBS);
    wg_add(b->wg, WORKERS);
    t0 = bench_ns();
    for (int i = 0; i < WORKERS; i++)
        if (coro_spawn(coro_rt(), "worker", worker, b) < 0)
            bench_die("coro_spawn", -EAGAIN, NULL);
    wg_wait(b->wg, NULL, RT_FOREVER);
    if (atomic_load(&b->left) > 0)
        bench_die("claim+complete", -EIO, "jobs left unclaimed");
    bench_result("store.claim_complete_rate", (double)CYCLE_JOBS * 1e9 / (double)(bench_ns() - t0),
                 "jobs/s");
    free(specs);
    free(ids);
}

static void
bench_main(void *arg)
{
    struct bench *b = arg;

    if (b->only_batch) {
        b->st = open_store(b->dir, "batch.db");
        bench_batch(b);
        store_free(b->st);
        return;
    }
    if (b->only_cycle) {
        bench_claim_complete(b);
        store_free(b->st);
        return;
    }
    bench_submit_rate(b);
    if (b->only_submit) {
        store_free(b->st);
        return;
    }
    bench_submit_latency(b);
    store_free(b->st);
    b->st = open_store(b->dir, "batch.db");
    bench_batch(b);
    store_free(b->st);
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
        fprintf(stderr, "usage: front DIR [submit | batch | cycle]\n");
        return 64;
    }
    b.dir = argv[1];
    b.only_submit = argc > 2 && strcmp(argv[2], "submit") == 0;
    b.only_cycle = argc > 2 && strcmp(argv[2], "cycle") == 0;
    b.only_batch = argc > 2 && strcmp(argv[2], "batch") == 0;
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
