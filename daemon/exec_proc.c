/*
 * exec_proc — finds a job's processes where killing its process group is
 * not enough: processes that left the group while the job ran (at the
 * job's end), and the jobs of a crashed daemon (at start-up); and the
 * registry of the daemon's children, which tells job leaders from the
 * orphans the daemon adopted and reaps the latter.
 *
 * A process belongs to a job if it is in the job's session while the
 * leader is still unreaped (the leader's pid, which is the session id, is
 * then reserved and cannot name anyone else), or if its environment carries
 * the job's marker, JOBQ_INSTANCE=<instance> and JOBQ_JOB_ID=<id>, which
 * exec_spawn sets and every descendant inherits unless it clears its
 * environment. Nothing else is ever killed: after a crash a recorded pid or
 * pgid may name someone else's process. Owns nothing between calls.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kcmp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec_int.h"
#include "jobq/runtime.h"
#include "jobq/store.h"

/* ---- reading /proc ------------------------------------------------------ */

/* State, process group and session of pid from /proc/<pid>/stat; -errno
 * (-ENOENT: gone). */
static int
proc_stat(pid_t pid, char *state, pid_t *pgid, pid_t *sid)
{
    char path[64], buf[512];
    const char *p;
    int fd, ppid, pg, s;
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return -errno;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -ENOENT;
    buf[n] = '\0';
    /* comm may hold spaces and parentheses: the fields resume after the
     * last ')'. */
    if ((p = strrchr(buf, ')')) == NULL ||
        sscanf(p + 1, " %c %d %d %d", state, &ppid, &pg, &s) != 4)
        return -EIO;
    *pgid = pg;
    *sid = s;
    return 0;
}

struct marker {
    const char *instance;
    size_t ilen;
    bool inst_seen, inst_ok, id_seen;
    int64_t id;
};

/* The first JOBQ_INSTANCE and JOBQ_JOB_ID count, as for getenv. */
static void
marker_entry(struct marker *m, const char *e, size_t len)
{
    static const char ki[] = "JOBQ_INSTANCE=", kj[] = "JOBQ_JOB_ID=";
    const size_t li = sizeof(ki) - 1, lj = sizeof(kj) - 1;

    if (!m->inst_seen && len >= li && memcmp(e, ki, li) == 0) {
        m->inst_seen = true;
        m->inst_ok = len - li == m->ilen && memcmp(e + li, m->instance, m->ilen) == 0;
    } else if (!m->id_seen && len > lj && len - lj <= 19 && memcmp(e, kj, lj) == 0) {
        int64_t v = 0;
        for (size_t i = lj; i < len; i++) {
            if (e[i] < '0' || e[i] > '9')
                return;
            v = v * 10 + (e[i] - '0');
        }
        m->id_seen = true;
        m->id = v;
    }
}

/* 1 with *id if pid's environment carries instance's marker, 0 if not,
 * -EAGAIN if it has none to read (between execve's switch to the new
 * memory and its copy of the environment; or a zombie), -errno if it
 * cannot be read (gone, or another user's: not a job of ours then, since
 * jobs of a non-root daemon run as its uid). Streams the file: an
 * environment may be megabytes; entries longer than the buffer cannot be
 * a marker and are skipped. */
static int
proc_marker(pid_t pid, const char *instance, int64_t *id)
{
    struct marker m = {.instance = instance, .ilen = strlen(instance)};
    char path[64], buf[8192];
    size_t have = 0, total = 0;
    bool skipping = false;
    int fd, rc = 0;

    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return -errno;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof(buf) - have);
        size_t start = 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto out;
        }
        if (n == 0) {
            if (have > 0 && !skipping)
                marker_entry(&m, buf, have);
            break;
        }
        total += (size_t)n;
        have += (size_t)n;
        for (size_t i = 0; i < have; i++) {
            if (buf[i] != '\0')
                continue;
            if (!skipping)
                marker_entry(&m, buf + start, i - start);
            skipping = false;
            start = i + 1;
        }
        if (start == 0 && have == sizeof(buf)) {
            skipping = true; /* an entry longer than buf */
            have = 0;
            continue;
        }
        memmove(buf, buf + start, have - start);
        have -= start;
    }
    if (m.inst_ok && m.id_seen) {
        *id = m.id;
        rc = 1;
    } else if (total == 0) {
        rc = -EAGAIN;
    }
out:
    close(fd);
    return rc;
}

/* ---- the daemon's children ---------------------------------------------- */

struct slot {
    pid_t pid; /* 0: free */
    int n;     /* registrations: a pid reused before its removal counts twice */
};

/*
 * Strangers: processes whose environment a sweep read and found without
 * this daemon's marker. At every job's end the range probe reads the
 * environment of the processes started during the job's life that it
 * cannot attribute; with other jobq nodes or busy neighbours on the
 * machine most of them are strangers, and one stranger is in the range of
 * every job that ends while it lives (a 0.2 s job of another node, in some
 * 36 of ours at 180 jobs a second). One read is enough: a pid names the
 * same process until the pid counter wraps (pids are handed out in
 * increasing order, skipping those in use), which the range probe assumes
 * too. So the set is emptied when the counter is seen more than
 * JOBQ_EXEC_PROBE_MAX_PIDS below the highest value seen since the set
 * began (it wrapped; sweeps on other threads may pass a value read a
 * moment earlier, a little below) or more than STRANGER_SPAN pids past its
 * start, or when it is older than JOBQ_EXEC_PROBE_MAX_MS; a process whose
 * environment came back empty (in an execve) or with our marker is never
 * put in it.
 */
#define STRANGER_SLOTS 4096 /* a power of two; at most half full */
#define STRANGER_SPAN 65536

struct strangers {
    pid_t slot[STRANGER_SLOTS]; /* 0: free */
    int used;
    pid_t base;    /* ns_last_pid when the set began */
    pid_t hi;      /* the highest seen since: far below it, the counter wrapped */
    int64_t since; /* when the set began, ms */
    char *instance;
};

struct exec_children {
    pthread_mutex_t lock; /* the table, and strangers */
    struct slot *slot;
    size_t cap, used; /* cap a power of two; used <= cap / 2 */
    size_t reserved;  /* room promised to spawns in flight */
    /* Spawns in flight and a generation bumped by each: a reap pass that
     * saw none in flight and no new generation cannot take a leader that
     * exists but is not registered yet. */
    atomic_int inflight;
    atomic_uint_fast64_t gen;
    struct strangers strangers;
    atomic_long env_reads, stranger_hits; /* exec_children_sweep_stats */
};

static size_t
slot_of(const struct exec_children *c, pid_t pid)
{
    size_t i = ((size_t)(uint32_t)pid * 2654435761u) & (c->cap - 1);
    while (c->slot[i].pid != 0 && c->slot[i].pid != pid)
        i = (i + 1) & (c->cap - 1);
    return i;
}

static int
grow(struct exec_children *c, size_t need)
{
    struct slot *old = c->slot;
    size_t oldcap = c->cap, cap = c->cap ? c->cap : 64;

    while (need * 2 > cap)
        cap *= 2;
    if (cap == oldcap)
        return 0;
    if ((c->slot = calloc(cap, sizeof(*c->slot))) == NULL) {
        c->slot = old;
        return -ENOMEM;
    }
    c->cap = cap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].pid != 0)
            c->slot[slot_of(c, old[i].pid)] = old[i];
    free(old);
    return 0;
}

static bool
has_leader(struct exec_children *c, pid_t pid)
{
    bool found;

    pthread_mutex_lock(&c->lock);
    found = c->cap > 0 && c->slot[slot_of(c, pid)].pid == pid;
    pthread_mutex_unlock(&c->lock);
    return found;
}

int
exec_children_new(struct exec_children **out)
{
    struct exec_children *c;
    int rc;

    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        return -errno;
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return -ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    if ((rc = grow(c, 1)) < 0) {
        exec_children_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void
exec_children_free(struct exec_children *c)
{
    if (c == NULL)
        return;
    pthread_mutex_destroy(&c->lock);
    free(c->slot);
    free(c->strangers.instance);
    free(c);
}

void
exec_children_sweep_stats(struct exec_children *c, long *env_reads, long *stranger_hits)
{
    *env_reads = c != NULL ? atomic_load(&c->env_reads) : 0;
    *stranger_hits = c != NULL ? atomic_load(&c->stranger_hits) : 0;
}

/* With lock held: empties the set if it may name other processes by now
 * (see struct strangers), or was kept for another instance. */
static void
strangers_fresh(struct strangers *st, const char *instance, pid_t last, int64_t now_ms)
{
    if (st->used > 0 &&
        (st->hi - last > JOBQ_EXEC_PROBE_MAX_PIDS || last - st->base > STRANGER_SPAN ||
         now_ms - st->since > JOBQ_EXEC_PROBE_MAX_MS || strcmp(st->instance, instance) != 0)) {
        memset(st->slot, 0, sizeof(st->slot));
        st->used = 0;
    }
    if (st->used == 0) {
        st->base = last;
        st->since = now_ms;
    }
    if (last > st->hi || st->used == 0)
        st->hi = last;
}

static size_t
stranger_slot(const struct strangers *st, pid_t p)
{
    size_t i = ((size_t)(uint32_t)p * 2654435761u) & (STRANGER_SLOTS - 1);
    while (st->slot[i] != 0 && st->slot[i] != p)
        i = (i + 1) & (STRANGER_SLOTS - 1);
    return i;
}

/* Whether p's environment was read since the set began and is not ours. */
static bool
stranger_known(struct exec_children *c, const char *instance, pid_t p, pid_t last, int64_t now_ms)
{
    bool known;

    pthread_mutex_lock(&c->lock);
    strangers_fresh(&c->strangers, instance, last, now_ms);
    known = c->strangers.used > 0 && c->strangers.slot[stranger_slot(&c->strangers, p)] == p;
    pthread_mutex_unlock(&c->lock);
    if (known)
        atomic_fetch_add(&c->stranger_hits, 1);
    return known;
}

static void
stranger_add(struct exec_children *c, const char *instance, pid_t p, pid_t last, int64_t now_ms)
{
    struct strangers *st = &c->strangers;
    size_t i;

    pthread_mutex_lock(&c->lock);
    strangers_fresh(st, instance, last, now_ms);
    if (st->instance == NULL || strcmp(st->instance, instance) != 0) {
        char *copy = strdup(instance);
        if (copy == NULL)
            goto out; /* then nothing is remembered */
        free(st->instance);
        st->instance = copy;
    }
    if (st->used < STRANGER_SLOTS / 2 && st->slot[i = stranger_slot(st, p)] == 0) {
        st->slot[i] = p;
        st->used++;
    }
out:
    pthread_mutex_unlock(&c->lock);
}

int
exec_children_spawning(struct exec_children *c)
{
    int rc;

    if (c == NULL)
        return 0;
    /* inflight before gen: a reap pass reads them in the other order. */
    atomic_fetch_add(&c->inflight, 1);
    atomic_fetch_add(&c->gen, 1);
    pthread_mutex_lock(&c->lock);
    if ((rc = grow(c, c->used + c->reserved + 1)) == 0)
        c->reserved++;
    pthread_mutex_unlock(&c->lock);
    if (rc < 0)
        atomic_fetch_sub(&c->inflight, 1);
    return rc;
}

void
exec_children_spawned(struct exec_children *c, pid_t pid)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    c->reserved--;
    if (pid > 0) {
        struct slot *s = &c->slot[slot_of(c, pid)];
        if (s->pid == 0) {
            s->pid = pid;
            c->used++;
        }
        s->n++;
    }
    pthread_mutex_unlock(&c->lock);
    atomic_fetch_sub(&c->inflight, 1);
}

void
exec_children_remove(struct exec_children *c, pid_t pid)
{
    size_t i, j;

    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    i = slot_of(c, pid);
    if (c->slot[i].pid != pid || --c->slot[i].n > 0)
        goto out;
    /* Backward-shift deletion keeps linear probing free of tombstones. */
    c->slot[i].pid = 0;
    c->used--;
    for (j = (i + 1) & (c->cap - 1); c->slot[j].pid != 0; j = (j + 1) & (c->cap - 1)) {
        size_t home = ((size_t)(uint32_t)c->slot[j].pid * 2654435761u) & (c->cap - 1);
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            c->slot[i] = c->slot[j];
            c->slot[j].pid = 0;
            c->slot[j].n = 0;
            i = j;
        }
    }
out:
    pthread_mutex_unlock(&c->lock);
}

bool
exec_children_orphan_waiting(struct exec_children *c)
{
    siginfo_t si;

    si.si_pid = 0;
    if (c == NULL || waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
        return false;
    /* A leader between its exit and its reap may hide an orphan behind
     * it; that one is left to the next pass (SIGCHLD, the next job). */
    return si.si_pid != 0 && !has_leader(c, si.si_pid);
}

int
exec_children_reap(struct exec_children *c)
{
    uint_fast64_t gen;
    DIR *d;
    struct dirent *e;
    int n = 0;

    if (c == NULL)
        return 0;
    gen = atomic_load(&c->gen);
    if (atomic_load(&c->inflight) != 0 || (d = opendir("/proc/self/task")) == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        char path[300], buf[4096], *p, *end;
        ssize_t got;
        int fd;

        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/children", e->d_name);
        if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            continue;
        /* A thread with more children than fit is looked at again on the
         * next pass. */
        got = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (got <= 0)
            continue;
        buf[got] = '\0';
        /* A cut-off last number is no pid: drop it. */
        if ((size_t)got == sizeof(buf) - 1 && (p = strrchr(buf, ' ')) != NULL)
            *p = '\0';
        for (p = buf;; p = end) {
            siginfo_t si;
            long pid = strtol(p, &end, 10);
            if (end == p)
                break;
            if (pid <= 0 || has_leader(c, (pid_t)pid))
                continue;
            si.si_pid = 0;
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT | __WALL) < 0 ||
                si.si_pid == 0)
                continue; /* alive */
            if (atomic_load(&c->gen) != gen)
                goto out; /* a spawn began: its child may be this zombie */
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | __WALL) == 0 && si.si_pid != 0)
                n++;
        }
    }
out:
    closedir(d);
    return n;
}

/* ---- a job's escapees --------------------------------------------------- */

/* Whether p leads a job of ours: registered, or, without a registry, any
 * child of ours (we adopt nothing then). */
static bool
is_job_leader(struct exec_children *c, pid_t p)
{
    siginfo_t si;

    if (c != NULL)
        return has_leader(c, p);
    return waitid(P_PID, (id_t)p, &si, WEXITED | WNOHANG | WNOWAIT | __WALL) == 0;
}

enum verdict {
    V_SKIP,  /* not the job's: ours, another running job's, or gone */
    V_KILL,  /* in the job's session: the job's */
    V_CHECK, /* unattributed: the job's if its environment says so */
};

static enum verdict
classify(const struct exec_sweep *sw, pid_t p, pid_t self_sid)
{
    pid_t s, leader = sw->leader;

    if (p == leader || is_job_leader(sw->children, p))
        return V_SKIP;
    /* Our own threads and our session's processes are never a job's: jobs
     * start in sessions of their own. */
    /* Session 0: kernel threads. */
    if ((s = getsid(p)) <= 0 || s == self_sid)
        return V_SKIP;
    if (leader > 0 && s == leader)
        return V_KILL;
    if (is_job_leader(sw->children, s))
        return V_SKIP; /* in another running job's session */
    /* Another job's leader between our clone and its execve shares our
     * memory, and no job's descendant does. Under load there is nearly
     * always one in the range: without this check every job's end read
     * its environment on a helper thread. */
    if (syscall(SYS_kcmp, getpid(), p, KCMP_VM, 0, 0) == 0)
        return V_SKIP;
    return V_CHECK;
}

/* SIGKILLs p and, if it leads a process group, the group. Returns 1 if p
 * was signaled. */
static int
kill_proc(pid_t p)
{
    pid_t g = getpgid(p);
    int n;

    if (g < 0 || g == getpgrp())
        return 0;
    n = kill(p, SIGKILL) == 0;
    if (g == p)
        kill(-p, SIGKILL);
    return n;
}

static int last_pid_fd = -1;

static void
last_pid_open(void)
{
    last_pid_fd = open("/proc/sys/kernel/ns_last_pid", O_RDONLY | O_CLOEXEC);
}

/* Read at every job's end: the file stays open (a sysctl reads afresh at
 * each pread from 0), which saves its path walk through /proc, a fifth of
 * the probe's cost. */
static pid_t
last_pid(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    char buf[32];
    ssize_t n;

    pthread_once(&once, last_pid_open);
    if (last_pid_fd < 0)
        return -1;
    n = pread(last_pid_fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    return (pid_t)strtol(buf, NULL, 10);
}

/* Room for want candidates in all. A full scan is the fallback, and it
 * reads the environment of every process on the machine: with other jobq
 * nodes or busy neighbours starting processes, more than the inline
 * candidates is common, and a scan per job end cost a quarter of the CPU
 * of four nodes running 650 short jobs a second. The range bounds want
 * (JOBQ_EXEC_PROBE_MAX_PIDS). */
static bool
cand_room(struct exec_sweep *sw, int want)
{
    pid_t *c;

    if (want <= sw->capcand)
        return true;
    if ((c = malloc((size_t)want * sizeof(*c))) == NULL)
        return false;
    memcpy(c, sw->cand, (size_t)sw->ncand * sizeof(*c));
    if (sw->cand != sw->cand_inline)
        free(sw->cand);
    sw->cand = c;
    sw->capcand = want;
    return true;
}

void
exec_sweep_fini(struct exec_sweep *sw)
{
    if (sw->cand != NULL && sw->cand != sw->cand_inline)
        free(sw->cand);
    sw->cand = NULL;
    sw->capcand = 0;
}

void
exec_sweep_probe(struct exec_sweep *sw, int64_t ran_ms)
{
    pid_t self_sid = getsid(0), last = last_pid();
    bool first = sw->from == sw->leader;
    int64_t now_ms = rt_now_ns() / 1000000;

    if (sw->cand == NULL) {
        sw->cand = sw->cand_inline;
        sw->capcand = JOBQ_EXEC_PROBE_CANDIDATES;
    }
    sw->ncand = 0;
    sw->full = false;
    /* Pids are handed out in increasing order (until they wrap at
     * pid_max): whatever the job started has a pid above the leader's.
     * A long job, or a range too wide, may have seen them wrap. */
    if (last <= 0 || last < sw->from || last - sw->from > JOBQ_EXEC_PROBE_MAX_PIDS ||
        (first && ran_ms > JOBQ_EXEC_PROBE_MAX_MS)) {
        sw->full = true;
        sw->upto = last > 0 ? last : sw->from;
        return;
    }
    for (pid_t p = sw->from + 1; p <= last; p++) {
        switch (classify(sw, p, self_sid)) {
        case V_KILL:
            sw->killed += kill_proc(p);
            break;
        case V_CHECK:
            if (sw->children != NULL && stranger_known(sw->children, sw->instance, p, last, now_ms))
                break;
            if (sw->ncand == sw->capcand && !cand_room(sw, sw->ncand + (int)(last - p) + 1)) {
                sw->full = true;
                sw->ncand = 0;
                sw->upto = last;
                return;
            }
            sw->cand[sw->ncand++] = p;
            break;
        case V_SKIP:
            break;
        }
    }
    sw->upto = last;
}

/* Pids whose environment was empty when looked at: asked again once. */
struct again {
    int n;
    pid_t pid[JOBQ_EXEC_PROBE_CANDIDATES];
};

/* What exec_sweep_check knows of the moment: for the strangers set. */
struct when {
    pid_t last;
    int64_t now_ms;
};

static int
sweep_one(struct exec_sweep *sw, pid_t p, enum verdict v, const struct when *w, struct again *ag)
{
    int64_t id;
    int rc;

    if (v == V_KILL)
        return kill_proc(p);
    if (v != V_CHECK)
        return 0;
    /* (The probe's candidates were looked up already; a full scan's not.) */
    if (sw->full && sw->children != NULL &&
        stranger_known(sw->children, sw->instance, p, w->last, w->now_ms))
        return 0;
    rc = proc_marker(p, sw->instance, &id);
    if (sw->children != NULL) {
        atomic_fetch_add(&sw->children->env_reads, 1);
        if (rc == 0) /* read, and nothing of ours in it */
            stranger_add(sw->children, sw->instance, p, w->last, w->now_ms);
    }
    if (rc == 1 && id == sw->id)
        return kill_proc(p);
    if (rc == -EAGAIN && ag != NULL && ag->n < JOBQ_EXEC_PROBE_CANDIDATES)
        ag->pid[ag->n++] = p;
    return 0;
}

int
exec_sweep_check(void *arg)
{
    struct exec_sweep *sw = arg;
    struct again ag = {0};
    struct when w = {last_pid(), rt_now_ns() / 1000000};
    pid_t self_sid = getsid(0);
    int killed = 0;

    if (!sw->full) {
        for (int i = 0; i < sw->ncand; i++)
            killed += sweep_one(sw, sw->cand[i], V_CHECK, &w, &ag);
    } else {
        DIR *d = opendir("/proc");
        struct dirent *e;
        if (d == NULL)
            return -errno;
        while ((e = readdir(d)) != NULL) {
            char *end;
            long p = strtol(e->d_name, &end, 10);
            if (*end != '\0' || p <= 0)
                continue;
            killed += sweep_one(sw, (pid_t)p, classify(sw, (pid_t)p, self_sid), &w, &ag);
        }
        closedir(d);
    }
    /* Caught in the middle of an execve: its environment is there a few
     * microseconds later. */
    if (ag.n > 0) {
        usleep(1000);
        for (int i = 0; i < ag.n; i++)
            killed += sweep_one(sw, ag.pid[i], V_CHECK, &w, NULL);
    }
    sw->killed += killed;
    return killed;
}

/* ---- a crashed daemon's jobs -------------------------------------------- */

static int
read_boot_id(char *buf, size_t len)
{
    ssize_t n;
    int fd;

    buf[0] = '\0';
    if ((fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC)) < 0)
        return -errno;
    n = read(fd, buf, len - 1);
    close(fd);
    if (n <= 0)
        return -EIO;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        n--;
    buf[n] = '\0';
    return 0;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* A live process seen by a leftover scan. */
struct seen {
    pid_t pid, pgid;
    int64_t id; /* the job whose marker it carries, or -1 */
};

struct scan {
    struct seen *v;
    size_t n, cap;
};

/* Every live process but ours, with the job whose marker it carries (if
 * that job is one of ids). *unsure counts those whose environment could
 * not be seen yet (in the middle of an execve): worth another look. */
static int
scan_procs(struct scan *sc, const char *instance, const int64_t *ids, size_t nids, int *unsure)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_t self = getpid();

    sc->n = 0;
    *unsure = 0;
    if (d == NULL)
        return -errno;
    while ((e = readdir(d)) != NULL) {
        char *end, state = '?';
        long p = strtol(e->d_name, &end, 10);
        pid_t pgid = 0, sid = 0;
        int64_t id = -1;

        if (*end != '\0' || p <= 0 || p == self)
            continue;
        /* A zombie has released everything (locks, files): it no longer
         * runs, whoever reaps it. */
        if (proc_stat((pid_t)p, &state, &pgid, &sid) < 0 || state == 'Z' || state == 'X' ||
            sid <= 0)
            continue;
        switch (proc_marker((pid_t)p, instance, &id)) {
        case 1:
            if (bsearch(&id, ids, nids, sizeof(*ids), cmp_i64) == NULL)
                id = -1;
            break;
        case -EAGAIN:
            (*unsure)++;
            id = -1;
            break;
        default:
            id = -1;
        }
        if (sc->n == sc->cap) {
            size_t cap = sc->cap ? sc->cap * 2 : 256;
            struct seen *v = realloc(sc->v, cap * sizeof(*v));
            if (v == NULL) {
                closedir(d);
                return -ENOMEM;
            }
            sc->v = v;
            sc->cap = cap;
        }
        sc->v[sc->n++] = (struct seen){.pid = (pid_t)p, .pgid = pgid, .id = id};
    }
    closedir(d);
    return 0;
}

/* Whether group g holds a marked process. */
static bool
group_marked(const struct scan *sc, pid_t g)
{
    for (size_t i = 0; i < sc->n; i++)
        if (sc->v[i].pgid == g && sc->v[i].id >= 0)
            return true;
    return false;
}

int
exec_kill_leftovers(const struct exec_opts *o, const struct store_running *r, size_t n, int *killed,
                    char *why, size_t whylen)
{
    const char *instance = o->instance ? o->instance : "";
    char boot[JOBQ_BOOT_ID_BYTES];
    struct scan sc = {0};
    int64_t *ids = NULL, deadline;
    pid_t *done = NULL, self_pgrp = getpgrp();
    size_t nids = 0, ndone = 0, capdone = 0;
    int rc;

    *killed = 0;
    if (o->boot_id != NULL)
        snprintf(boot, sizeof(boot), "%s", o->boot_id);
    else
        read_boot_id(boot, sizeof(boot));
    if (n == 0)
        return 0;
    if ((ids = calloc(n, sizeof(*ids))) == NULL)
        return -ENOMEM;
    /* A boot id of another boot names no living process. An unknown one
     * (either side) may be this boot's: the markers keep that safe. */
    for (size_t i = 0; i < n; i++)
        if (r[i].boot_id[0] == '\0' || boot[0] == '\0' || strcmp(r[i].boot_id, boot) == 0)
            ids[nids++] = r[i].id;
    if (nids == 0) {
        rc = 0;
        goto out;
    }
    qsort(ids, nids, sizeof(*ids), cmp_i64);
    deadline = rt_now_ns() + (int64_t)JOBQ_EXEC_LEFTOVER_WAIT_MS * 1000000;
    for (bool looked_again = false;;) {
        size_t alive = 0;
        const struct seen *last = NULL;
        int unsure;

        if ((rc = scan_procs(&sc, instance, ids, nids, &unsure)) < 0)
            goto out;
        for (size_t i = 0; i < sc.n; i++) {
            struct seen *s = &sc.v[i];
            bool in_group = s->pgid > 1 && s->pgid != self_pgrp && group_marked(&sc, s->pgid);
            bool known = false;
            if (s->id < 0 && !in_group)
                continue;
            alive++;
            last = s;
            if (in_group)
                kill(-s->pgid, SIGKILL);
            kill(s->pid, SIGKILL);
            for (size_t j = 0; j < ndone && !known; j++)
                known = done[j] == s->pid;
            if (known)
                continue;
            if (ndone == capdone) {
                size_t cap = capdone ? capdone * 2 : 64;
                pid_t *v = realloc(done, cap * sizeof(*v));
                if (v == NULL) {
                    rc = -ENOMEM;
                    goto out;
                }
                done = v;
                capdone = cap;
            }
            done[ndone++] = s->pid;
        }
        /* Nothing marked left. A process seen without an environment was
         * in the middle of an execve (or started with an empty one):
         * one more look settles it. */
        if (alive == 0 && (unsure == 0 || looked_again)) {
            rc = 0;
            break;
        }
        if (alive == 0)
            looked_again = true;
        else if (rt_now_ns() >= deadline) {
            snprintf(why, whylen,
                     "%zu process(es) of a previous run still alive %d ms after SIGKILL "
                     "(pid %d, pgid %d): uninterruptible sleep?",
                     alive, JOBQ_EXEC_LEFTOVER_WAIT_MS, (int)last->pid, (int)last->pgid);
            rc = -ETIMEDOUT;
            break;
        }
        usleep(JOBQ_EXEC_LEFTOVER_POLL_MS * 1000);
    }
out:
    *killed = (int)ndone;
    free(sc.v);
    free(done);
    free(ids);
    return rc;
}
