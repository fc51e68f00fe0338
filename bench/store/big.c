/*
 * big — the store at a million jobs: claim latency with 1M queued against
 * 1k queued (a claim must stay O(K), not O(queued)), the time to open and
 * check a 1M-job database, and start-up recovery with 10k attempts left
 * open by a killed daemon. The databases are built through the backend
 * with synchronous=OFF (building is not what is measured); every figure
 * is then taken through the front with synchronous=FULL, as jobqd runs.
 *
 * usage: big DIR [JOBS]    (JOBS default 1000000)
 */
#include <errno.h>
#include <unistd.h>

#include "bench.h"
#include "jobq/runtime.h"
#include "jobq/store.h"

#define BUILD_TXN 10000
#define CLAIM_K 64
#define CLAIM_ROUNDS 200
#define RUNNING 10000

struct big {
    const char *dir;
    long jobs;
};

static void
db_path(const struct big *b, const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", b->dir, name);
}

/* n queued jobs, written fast: the backend directly, no fsync. */
static void
build(const char *path, long n)
{
    struct store_opts o = {.path = path, .sync = STORE_SYNC_OFF};
    const struct store_backend_ops *ops = &store_sqlite_ops;
    struct job_spec *specs = calloc(BUILD_TXN, sizeof(*specs));
    int64_t *ids = calloc(BUILD_TXN, sizeof(*ids)), now = job_now_ms(), t0 = bench_ns();
    bool *existed = calloc(BUILD_TXN, sizeof(*existed));
    struct store_conn *c;
    char why[256];
    int rc;

    unlink(path);
    if ((rc = ops->open(&o, STORE_WRITER, &c, why, sizeof(why))) < 0)
        bench_die("open", rc, why);
    for (int i = 0; i < BUILD_TXN; i++) {
        specs[i] = bench_spec();
        /* A spread of priorities and queues, as a busy daemon has. */
        specs[i].priority = i % 3;
        specs[i].queue = i % 4 == 0 ? "mail" : "default";
    }
    for (long done = 0; done < n; done += BUILD_TXN) {
        size_t k = (size_t)(n - done < BUILD_TXN ? n - done : BUILD_TXN);
        if ((rc = ops->txn(c, STORE_BEGIN)) < 0 ||
            (rc = ops->submit(c, specs, k, now, ids, existed)) < 0 ||
            (rc = ops->txn(c, STORE_COMMIT)) < 0)
            bench_die("build", rc, NULL);
    }
    ops->close(c);
    printf("# built %ld jobs in %.1f s\n", n, (double)(bench_ns() - t0) / 1e9);
    free(specs);
    free(ids);
    free(existed);
}

static struct store *
open_front(const char *path, bool check, int64_t *ms)
{
    struct store_opts o = {.path = path, .skip_check = !check};
    struct store *st;
    char why[512];
    int64_t t0 = bench_ns();
    int rc;

    if ((rc = store_new(&o, &st, why, sizeof(why))) < 0)
        bench_die("store_new", rc, why);
    if (ms != NULL)
        *ms = (bench_ns() - t0) / 1000000;
    return st;
}

/* p50 of a claim of CLAIM_K jobs. Each round then completes what it
 * claimed and submits as many, so the queue keeps its size. */
static double
claim_p50_us(struct store *st)
{
    struct job *jobs[CLAIM_K];
    struct store_completion c[CLAIM_K];
    struct job_spec specs[CLAIM_K];
    int64_t lat[CLAIM_ROUNDS], ids[CLAIM_K];
    int rcs[CLAIM_K], n, rc;
    char why[128];

    for (int i = 0; i < CLAIM_K; i++)
        specs[i] = bench_spec();
    for (int r = 0; r < CLAIM_ROUNDS; r++) {
        int64_t t0 = bench_ns();
        if ((rc = store_claim(st, job_now_ms(), CLAIM_K, jobs, &n)) < 0 || n != CLAIM_K)
            bench_die("claim", rc < 0 ? rc : -EIO, NULL);
        lat[r] = bench_ns() - t0;
        for (int i = 0; i < n; i++) {
            c[i] = (struct store_completion){.id = jobs[i]->id,
                                             .attempt = jobs[i]->attempt,
                                             .outcome = OUTCOME_SUCCEEDED,
                                             .exit_code = 0,
                                             .next = JOB_SUCCEEDED};
            job_free(jobs[i]);
        }
        if ((rc = store_complete_batch(st, c, (size_t)n, rcs)) < 0 ||
            (rc = store_submit_batch(st, specs, CLAIM_K, ids, NULL, why, sizeof(why))) < 0)
            bench_die("refill", rc, why);
    }
    return (double)bench_pct(lat, CLAIM_ROUNDS, 50) / 1000.0;
}

static void
big_main(void *arg)
{
    struct big *b = arg;
    char small[512], large[512];
    struct store *st;
    struct job *jobs[1024];
    int64_t open_ms, retrying, failed, t0;
    struct store_running *open;
    size_t nopen;
    int n, rc;

    db_path(b, "small.db", small, sizeof(small));
    db_path(b, "large.db", large, sizeof(large));
    build(small, 1000);
    build(large, b->jobs);

    st = open_front(small, true, NULL);
    double at_1k = claim_p50_us(st);
    store_free(st);
    st = open_front(large, true, &open_ms);
    double at_1m = claim_p50_us(st);
    bench_result("store.claim_us_at_1k", at_1k, "us");
    bench_result("store.claim_us_at_1m", at_1m, "us");
    bench_result("store.claim_ratio_1m_1k", at_1m / at_1k, "x");
    bench_result("store.open_check_ms_at_1m", (double)open_ms, "ms");

    /* A daemon with RUNNING jobs running is killed: their attempts stay
     * open (closing the store writes nothing more than a kill would). */
    for (int left = RUNNING; left > 0; left -= n) {
        if ((rc = store_claim(st, job_now_ms(), left < 1024 ? left : 1024, jobs, &n)) < 0 || n == 0)
            bench_die("claim", rc < 0 ? rc : -EIO, NULL);
        for (int i = 0; i < n; i++)
            job_free(jobs[i]);
    }
    store_free(st);
    st = open_front(large, false, NULL);
    t0 = bench_ns();
    if ((rc = store_recover_list(st, &open, &nopen)) < 0 ||
        (rc = store_recover(st, job_now_ms(), &retrying, &failed)) < 0)
        bench_die("recover", rc, NULL);
    bench_result("store.recover_ms", (double)(bench_ns() - t0) / 1e6, "ms");
    if (nopen != RUNNING || retrying != RUNNING)
        bench_die("recover", -EIO, "wrong number of recovered attempts");
    free(open);
    store_free(st);
}

int
main(int argc, char **argv)
{
    struct big b = {0};
    struct rt *rt;
    int rc;

    if (argc < 2) {
        fprintf(stderr, "usage: big DIR [JOBS]\n");
        return 64;
    }
    b.dir = argv[1];
    b.jobs = argc > 2 ? atol(argv[2]) : 1000000;
    if ((rc = rt_new(NULL, &rt)) < 0)
        bench_die("rt_new", rc, NULL);
    if ((rc = rt_run(rt, "big", big_main, &b)) < 0)
        bench_die("rt_run", rc, NULL);
    rt_free(rt);
    return 0;
}
