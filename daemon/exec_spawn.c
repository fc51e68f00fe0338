/*
 * exec_spawn — the spawn path of exec: looks up the submitter's groups,
 * builds the job's environment, resolves the command, and starts the child
 * with a single clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD), as glibc's
 * posix_spawn does, but with what posix_spawn cannot do (a new session,
 * setgroups/setresgid/setresuid, chdir, close_range) in the same child.
 *
 * Runs on a helper thread (rt_blocking): NSS and path lookups touch the
 * file system, and CLONE_VFORK holds the calling thread until the child
 * has called execve. Everything the child needs is prepared here first:
 * between clone and execve the child shares our memory and may only make
 * raw system calls (no malloc, no locks, no errno-setting libc wrappers
 * that sanitizers intercept). Owns nothing past the call but the pidfd it
 * hands out.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "exec_int.h"

extern char **environ;

/* ---- the submitter's identity ------------------------------------------- */

struct ident {
    uid_t uid;
    gid_t gid;
    gid_t *groups; /* owned; the supplementary groups, gid included */
    int ngroups;
    char *home, *user; /* owned; NULL if the uid has no passwd entry */
};

static void
ident_free(struct ident *id)
{
    free(id->groups);
    free(id->home);
    free(id->user);
}

/* NSS is not async-signal-safe, so it runs here, before the clone. A uid
 * without a passwd entry (a container's arbitrary uid) runs with its gid
 * as its only group. */
static int
ident_lookup(uid_t uid, gid_t gid, struct ident *id)
{
    struct passwd pw, *found = NULL;
    char *buf = NULL;
    size_t buflen = 4096;
    int rc, ng = 32;

    memset(id, 0, sizeof(*id));
    id->uid = uid;
    id->gid = gid;
    for (;;) {
        char *nb = realloc(buf, buflen);
        if (nb == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        buf = nb;
        rc = getpwuid_r(uid, &pw, buf, buflen, &found);
        if (rc != ERANGE || buflen >= 1024 * 1024)
            break;
        buflen *= 2;
    }
    if (rc != 0 && rc != ENOENT && rc != ESRCH) {
        rc = -rc;
        goto out;
    }
    if (found == NULL) {
        if ((id->groups = malloc(sizeof(gid_t))) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        id->groups[0] = gid;
        id->ngroups = 1;
        rc = 0;
        goto out;
    }
    if ((id->home = strdup(pw.pw_dir)) == NULL || (id->user = strdup(pw.pw_name)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (;;) {
        int want = ng;
        gid_t *g = realloc(id->groups, (size_t)ng * sizeof(gid_t));
        if (g == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        id->groups = g;
        if (getgrouplist(pw.pw_name, gid, id->groups, &ng) >= 0)
            break;
        /* ng now holds the size needed (glibc), or is unchanged. */
        if (ng <= want)
            ng = want * 2;
        if (ng > 65536) {
            rc = -E2BIG;
            goto out;
        }
    }
    id->ngroups = ng;
    rc = 0;
out:
    free(buf);
    if (rc < 0)
        ident_free(id);
    return rc;
}

/* ---- the identity cache ------------------------------------------------- */

struct exec_idents {
    pthread_mutex_t lock;
    struct {
        struct ident id; /* id.groups == NULL: the slot is free */
        int64_t at;      /* CLOCK_MONOTONIC ms of the lookup */
    } slot[JOBQ_EXEC_IDENT_CACHE];
};

int
exec_idents_new(struct exec_idents **out)
{
    struct exec_idents *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return 0;
}

void
exec_idents_free(struct exec_idents *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < JOBQ_EXEC_IDENT_CACHE; i++)
        ident_free(&c->slot[i].id);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Fills *dst with owned copies of src's parts. */
static int
ident_copy(struct ident *dst, const struct ident *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->uid = src->uid;
    dst->gid = src->gid;
    dst->ngroups = src->ngroups;
    if ((dst->groups = malloc((size_t)src->ngroups * sizeof(gid_t))) == NULL ||
        (src->home != NULL && (dst->home = strdup(src->home)) == NULL) ||
        (src->user != NULL && (dst->user = strdup(src->user)) == NULL)) {
        ident_free(dst);
        memset(dst, 0, sizeof(*dst));
        return -ENOMEM;
    }
    memcpy(dst->groups, src->groups, (size_t)src->ngroups * sizeof(gid_t));
    return 0;
}

/* ident_lookup through the cache (c may be NULL). The lookup itself runs
 * outside the lock: NSS may take a network round trip. */
static int
ident_get(struct exec_idents *c, uid_t uid, gid_t gid, struct ident *id)
{
    int64_t now = mono_ms();
    int rc, oldest = 0;

    if (c == NULL)
        return ident_lookup(uid, gid, id);
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < JOBQ_EXEC_IDENT_CACHE; i++) {
        if (c->slot[i].id.groups != NULL && c->slot[i].id.uid == uid && c->slot[i].id.gid == gid &&
            now - c->slot[i].at < JOBQ_EXEC_IDENT_TTL_MS) {
            rc = ident_copy(id, &c->slot[i].id);
            pthread_mutex_unlock(&c->lock);
            return rc;
        }
    }
    pthread_mutex_unlock(&c->lock);
    if ((rc = ident_lookup(uid, gid, id)) < 0)
        return rc;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < JOBQ_EXEC_IDENT_CACHE; i++) {
        if (c->slot[i].id.groups == NULL ||
            (c->slot[i].id.uid == uid && c->slot[i].id.gid == gid)) {
            oldest = i;
            break;
        }
        if (c->slot[i].at < c->slot[oldest].at)
            oldest = i;
    }
    ident_free(&c->slot[oldest].id);
    if (ident_copy(&c->slot[oldest].id, id) == 0)
        c->slot[oldest].at = now;
    pthread_mutex_unlock(&c->lock);
    return 0;
}

/* ---- environment ------------------------------------------------------- */

/* Sources of a job's environment, weakest first: a key set by a stronger
 * one replaces the weaker's. The JOBQ_* markers are strongest, so a job
 * cannot hide from exec_kill_leftovers by setting its own. */
enum env_rank { ENV_DAEMON, ENV_IDENTITY, ENV_JOB, ENV_JOBQ };

struct env_entry {
    const char *s;
    size_t keylen;
    int rank;
    size_t order;
};

#define ENV_OWN_MAX 8

struct env {
    char **envp; /* owned array; strings borrowed or in own[] */
    char *own[ENV_OWN_MAX];
    int nown;
    const char *path; /* PATH=... value the job will see, NULL if none */
};

static void
env_free(struct env *e)
{
    free(e->envp);
    for (int i = 0; i < e->nown; i++)
        free(e->own[i]);
}

static int
env_cmp(const void *a, const void *b)
{
    const struct env_entry *x = a, *y = b;
    size_t n = x->keylen < y->keylen ? x->keylen : y->keylen;
    int c = memcmp(x->s, y->s, n);

    if (c != 0)
        return c;
    if (x->keylen != y->keylen)
        return x->keylen < y->keylen ? -1 : 1;
    if (x->rank != y->rank)
        return x->rank > y->rank ? -1 : 1;
    return x->order > y->order ? -1 : x->order < y->order;
}

static int env_own(struct env *e, char **slot, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
env_own(struct env *e, char **slot, const char *fmt, ...)
{
    va_list ap;
    int rc;

    if (e->nown == ENV_OWN_MAX)
        return -ENOMEM;
    va_start(ap, fmt);
    rc = vasprintf(&e->own[e->nown], fmt, ap);
    va_end(ap);
    if (rc < 0) {
        e->own[e->nown] = NULL;
        return -ENOMEM;
    }
    *slot = e->own[e->nown++];
    return 0;
}

static void
env_add(struct env_entry *v, size_t *n, const char *s, int rank)
{
    const char *eq = strchr(s, '=');

    if (eq == NULL || eq == s)
        return; /* not K=V: nothing a program could look up */
    v[*n] = (struct env_entry){.s = s, .keylen = (size_t)(eq - s), .rank = rank, .order = *n};
    (*n)++;
}

/* The daemon's environment, the submitter's HOME/USER/LOGNAME (as_submitter),
 * the job's entries, and the JOBQ_* markers, one entry per key. */
static int
env_build(const struct exec_spawn *sp, const struct ident *id, struct env *e)
{
    const struct job *job = sp->job;
    const char *instance = sp->o->instance ? sp->o->instance : "";
    const char *queue = job->spec.queue ? job->spec.queue : "default";
    struct env_entry *v = NULL;
    size_t nd = 0, nj = 0, n = 0, out = 0;
    char *s;
    int rc;

    memset(e, 0, sizeof(*e));
    while (environ != NULL && environ[nd] != NULL)
        nd++;
    while (job->spec.env != NULL && job->spec.env[nj] != NULL)
        nj++;
    if ((v = calloc(nd + nj + ENV_OWN_MAX, sizeof(*v))) == NULL ||
        (e->envp = calloc(nd + nj + ENV_OWN_MAX + 1, sizeof(char *))) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nd; i++)
        env_add(v, &n, environ[i], ENV_DAEMON);
    if (id != NULL) {
        const char *user = id->user;
        char uidbuf[16];
        if (user == NULL) {
            snprintf(uidbuf, sizeof(uidbuf), "%u", (unsigned)id->uid);
            user = uidbuf;
        }
        if ((rc = env_own(e, &s, "HOME=%s", id->home ? id->home : "/")) < 0)
            goto out;
        env_add(v, &n, s, ENV_IDENTITY);
        if ((rc = env_own(e, &s, "USER=%s", user)) < 0)
            goto out;
        env_add(v, &n, s, ENV_IDENTITY);
        if ((rc = env_own(e, &s, "LOGNAME=%s", user)) < 0)
            goto out;
        env_add(v, &n, s, ENV_IDENTITY);
    }
    for (size_t i = 0; i < nj; i++)
        env_add(v, &n, job->spec.env[i], ENV_JOB);
    if ((rc = env_own(e, &s, "JOBQ_JOB_ID=%" PRId64, job->id)) < 0)
        goto out;
    env_add(v, &n, s, ENV_JOBQ);
    if ((rc = env_own(e, &s, "JOBQ_ATTEMPT=%" PRId32, sp->attempt)) < 0)
        goto out;
    env_add(v, &n, s, ENV_JOBQ);
    if ((rc = env_own(e, &s, "JOBQ_QUEUE=%s", queue)) < 0)
        goto out;
    env_add(v, &n, s, ENV_JOBQ);
    if ((rc = env_own(e, &s, "JOBQ_INSTANCE=%s", instance)) < 0)
        goto out;
    env_add(v, &n, s, ENV_JOBQ);

    /* Sorted by key, strongest first within a key: keep the first of each. */
    qsort(v, n, sizeof(*v), env_cmp);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && v[i].keylen == v[i - 1].keylen && memcmp(v[i].s, v[i - 1].s, v[i].keylen) == 0)
            continue;
        e->envp[out++] = (char *)v[i].s;
        if (v[i].keylen == 4 && memcmp(v[i].s, "PATH", 4) == 0)
            e->path = v[i].s + 5;
    }
    e->envp[out] = NULL;
    rc = 0;
out:
    free(v);
    if (rc < 0)
        env_free(e);
    return rc;
}

/* ---- command resolution ------------------------------------------------ */

/* Whether who may execute st: the kernel's rule, checked here because the
 * daemon (root) is not who will run it. Root needs one x bit. */
static bool
may_exec(const struct stat *st, const struct ident *who)
{
    if (who->uid == 0)
        return (st->st_mode & (S_IXUSR | S_IXGRP | S_IXOTH)) != 0;
    if (st->st_uid == who->uid)
        return (st->st_mode & S_IXUSR) != 0;
    for (int i = 0; i < who->ngroups; i++)
        if (st->st_gid == who->groups[i])
            return (st->st_mode & S_IXGRP) != 0;
    return (st->st_mode & S_IXOTH) != 0;
}

/*
 * execvp's search, done before the clone: a command without '/' is looked
 * up in the PATH the job will see (its own if its env sets one, else the
 * daemon's, else the system default), relative entries taken from the
 * job's cwd. The first executable regular file wins; a non-executable one
 * is kept in case nothing better follows (execve then says EACCES: 126).
 * Returns 0 with the path in out, or -ENOENT.
 */
static int
resolve(const char *cmd, const char *path, const char *cwd, const struct ident *who, char *out,
        size_t outlen)
{
    bool have_fallback = false;
    const char *p;

    if (strchr(cmd, '/') != NULL) {
        if ((size_t)snprintf(out, outlen, "%s", cmd) >= outlen)
            return -ENAMETOOLONG;
        return 0;
    }
    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (p = path;; p++) {
        const char *end = strchrnul(p, ':');
        char cand[PATH_MAX];
        int len = (int)(end - p);
        struct stat st;
        bool relative = len == 0 || p[0] != '/';
        int w;

        if (relative && cwd != NULL)
            w = snprintf(cand, sizeof(cand), "%s/%.*s%s%s", cwd, len, p, len ? "/" : "", cmd);
        else
            w = snprintf(cand, sizeof(cand), "%.*s%s%s", len, p, len ? "/" : "", cmd);
        if (w > 0 && (size_t)w < sizeof(cand) && stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
            bool ok =
                who != NULL ? may_exec(&st, who) : faccessat(AT_FDCWD, cand, X_OK, AT_EACCESS) == 0;
            if (ok || !have_fallback) {
                if ((size_t)snprintf(out, outlen, "%s", cand) >= outlen)
                    return -ENAMETOOLONG;
                have_fallback = true;
            }
            if (ok)
                return 0;
        }
        if (*end == '\0')
            break;
        p = end;
    }
    return have_fallback ? 0 : -ENOENT;
}

/* ---- the child ----------------------------------------------------------- */

/* Where the child failed, for the parent's message. */
enum child_stage {
    CHILD_OK,
    CHILD_SETSID,
    CHILD_GROUPS,
    CHILD_GID,
    CHILD_UID,
    CHILD_CWD,
    CHILD_FDS,
    CHILD_EXEC,
};

/* Shared with the child (CLONE_VM): it reads the first part and writes
 * stage and err before it exits if execve could not happen. */
struct child {
    const char *path;   /* resolved by the daemon; NULL: search below */
    const char *search; /* PATH for the child's own search (path NULL) */
    const char *cmd;    /* argv[0], for that search */
    char *const *argv;
    char *const *envp;
    const char *cwd; /* NULL: stay in the daemon's */
    int out_fd;
    bool set_ids;
    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    size_t ngroups;
    long max_fd; /* close_range fallback (kernels before 5.9) */
    volatile int stage;
    volatile int err;
};

/* The kernel's struct sigaction: all zero is SIG_DFL, no flags, empty
 * mask. Same layout on x86_64 and aarch64. */
struct ksigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

#define CHILD_NO_SANITIZE __attribute__((no_sanitize("address", "thread", "undefined")))

#if defined(JOBQ_TSAN)
/* TSan intercepts clone() as a fork and resets its own state in the child,
 * which here shares our memory: the daemon's threads would lose their
 * happens-before edges. glibc's alias is not intercepted (posix_spawn
 * goes around it the same way). */
extern int __clone(int (*fn)(void *), void *stack, int flags, void *arg, ...);
#define spawn_clone __clone
#else
#define spawn_clone clone
#endif

/* Records why and ends the child; the parent resumes (CLONE_VFORK) and
 * reads it. exit_group, not exit: nothing of ours (atexit, stdio) may run
 * in a child that shares our memory. */
CHILD_NO_SANITIZE static int
child_fail(struct child *c, enum child_stage stage)
{
    c->err = errno;
    c->stage = stage;
    syscall(SYS_exit_group, 127);
    return 127;
}

/*
 * execvp's loop, run by the child once it is the submitter: a PATH entry
 * only the submitter may enter (a 0700 home under a daemon without
 * CAP_DAC_READ_SEARCH) is found as they would find it. Returns only if no
 * entry could be executed, with errno EACCES if one was refused for
 * permissions (126), else ENOENT (127). Raw calls and plain loops only.
 */
CHILD_NO_SANITIZE static void
child_search(const struct child *c)
{
    char cand[PATH_MAX];
    bool refused = false;
    const char *p = c->search;

    for (;;) {
        const char *e = p;
        size_t n = 0;
        while (*e != '\0' && *e != ':')
            e++;
        for (const char *q = p; q < e && n < sizeof(cand) - 2; q++)
            cand[n++] = *q;
        if (n > 0)
            cand[n++] = '/';
        for (const char *q = c->cmd; *q != '\0' && n < sizeof(cand) - 1; q++)
            cand[n++] = *q;
        cand[n] = '\0';
        syscall(SYS_execve, cand, c->argv, c->envp);
        if (errno == EACCES) {
            /* A file the submitter may not run is "permission denied"; a
             * directory they may not enter (the daemon's PATH through
             * /root) just does not have it, as a shell would say. */
            struct stat st;
            if (syscall(SYS_newfstatat, AT_FDCWD, cand, &st, 0) == 0)
                refused = true;
        } else if (errno != ENOENT && errno != ENOTDIR) {
            return; /* a real failure of a file that is there */
        }
        if (*e == '\0')
            break;
        p = e + 1;
    }
    errno = refused ? EACCES : ENOENT;
}

/*
 * Runs in the new process on a stack of its own, sharing our memory until
 * execve: raw system calls only. The order matters: the session first (so
 * the job is never in our group), identity before chdir (the directory is
 * checked with the job's rights), fds, then signal dispositions and the
 * mask last (every signal stays blocked, inherited from the parent's
 * clone, until nothing of ours can run on its delivery).
 */
CHILD_NO_SANITIZE static int
child_main(void *arg)
{
    struct child *c = arg;
    struct ksigaction dfl = {0};
    uint64_t none = 0;
    long fd, nul;

    /* A session, not only a group: the job can neither join our process
     * group nor reach our controlling terminal, and its session id names
     * it even for processes that leave its group. */
    if (syscall(SYS_setsid) < 0)
        return child_fail(c, CHILD_SETSID);
    /* Raw calls: glibc's setgroups/setresuid would broadcast the change to
     * every thread of the daemon (SIGSETXID), whose memory we share. */
    if (c->set_ids) {
        if (syscall(SYS_setgroups, c->ngroups, c->groups) < 0)
            return child_fail(c, CHILD_GROUPS);
        if (syscall(SYS_setresgid, c->gid, c->gid, c->gid) < 0)
            return child_fail(c, CHILD_GID);
        if (syscall(SYS_setresuid, c->uid, c->uid, c->uid) < 0)
            return child_fail(c, CHILD_UID);
    }
    if (c->cwd != NULL && syscall(SYS_chdir, c->cwd) < 0)
        return child_fail(c, CHILD_CWD);
    fd = c->out_fd;
    if (fd < 3 && (fd = syscall(SYS_fcntl, fd, F_DUPFD, 3)) < 0)
        return child_fail(c, CHILD_FDS);
    if ((nul = syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY)) < 0)
        return child_fail(c, CHILD_FDS);
    if (nul != 0 && syscall(SYS_dup3, nul, 0, 0) < 0)
        return child_fail(c, CHILD_FDS);
    if (syscall(SYS_dup3, fd, 1, 0) < 0 || syscall(SYS_dup3, fd, 2, 0) < 0)
        return child_fail(c, CHILD_FDS);
    /* Nothing of the daemon's (the database, sockets, other jobs' pipes)
     * reaches the job, even an fd someone opened without O_CLOEXEC. */
    if (syscall(SYS_close_range, 3, ~0U, 0) < 0) {
        if (errno != ENOSYS)
            return child_fail(c, CHILD_FDS);
        for (long i = 3; i < c->max_fd; i++)
            syscall(SYS_close, i);
    }
    /* execve resets caught signals but keeps ignored ones (SIGPIPE is
     * ignored in the daemon): start every job from the defaults. */
    for (int sig = 1; sig < _NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(none));
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof(none));
    if (c->path != NULL)
        syscall(SYS_execve, c->path, c->argv, c->envp);
    else
        child_search(c);
    return child_fail(c, CHILD_EXEC);
}

/* The child could not exec: a result for people (126/127) or, for what a
 * later retry may not meet again (fds, memory, process limits), -errno. */
static int
child_error(struct exec_spawn *sp, const struct child *c, const char *cmd)
{
    int err = c->err;

    switch (c->stage) {
    case CHILD_GROUPS:
    case CHILD_GID:
    case CHILD_UID:
        if (err == EAGAIN || err == ENOMEM)
            return -err;
        sp->code = 126;
        snprintf(sp->error, sizeof(sp->error), "cannot run as uid %u gid %u: %s", (unsigned)c->uid,
                 (unsigned)c->gid, strerror(err));
        return 0;
    case CHILD_CWD:
        sp->code = 126;
        snprintf(sp->error, sizeof(sp->error), "cannot change directory to %s: %s", c->cwd,
                 strerror(err));
        return 0;
    case CHILD_EXEC:
        if (err == EAGAIN || err == ENOMEM)
            return -err;
        if (err == ENOENT) {
            sp->code = 127;
            snprintf(sp->error, sizeof(sp->error), "command not found: %s", cmd);
        } else if (err == EACCES) {
            sp->code = 126;
            snprintf(sp->error, sizeof(sp->error), "permission denied: %s", cmd);
        } else {
            sp->code = 126;
            snprintf(sp->error, sizeof(sp->error), "cannot execute %s: %s", cmd, strerror(err));
        }
        return 0;
    default:
        return err > 0 ? -err : -EIO;
    }
}

int
exec_spawn(void *arg)
{
    struct exec_spawn *sp = arg;
    const struct job *job = sp->job;
    const char *cmd = job->spec.command[0];
    const char *cwd = job->spec.cwd ? job->spec.cwd : sp->o->default_cwd;
    struct ident id = {0};
    bool have_id = false;
    struct env env = {0};
    bool have_env = false;
    struct child c = {0};
    struct rlimit rl;
    sigset_t all, old;
    char path[PATH_MAX];
    /* The child's stack: ours is a helper thread's, deep enough. */
    char stack[JOBQ_EXEC_CHILD_STACK_BYTES] __attribute__((aligned(64)));
    int pidfd = -1, err, rc;
    pid_t pid;

    sp->pid = 0;
    sp->pidfd = -1;
    sp->code = 0;
    sp->error[0] = '\0';
    if (sp->o->as_submitter) {
        if ((rc = ident_get(sp->o->idents, job->spec.uid, job->spec.gid, &id)) < 0)
            goto out;
        have_id = true;
    }
    if ((rc = env_build(sp, have_id ? &id : NULL, &env)) < 0)
        goto out;
    have_env = true;
    if ((rc = resolve(cmd, env.path, cwd, have_id ? &id : NULL, path, sizeof(path))) == 0) {
        c.path = path;
    } else if (rc == -ENOENT && have_id) {
        /* Not visible to the daemon; perhaps to the submitter, who may
         * enter directories we may not: the child searches as them. */
        c.search = env.path != NULL ? env.path : "/usr/local/bin:/usr/bin:/bin";
        c.cmd = cmd;
    } else {
        if (rc != -ENOENT && rc != -ENAMETOOLONG)
            goto out;
        sp->code = 127;
        snprintf(sp->error, sizeof(sp->error), "command not found: %s", cmd);
        rc = 0;
        goto out;
    }
    c.argv = job->spec.command;
    c.envp = env.envp;
    c.cwd = cwd;
    c.out_fd = sp->out_fd;
    c.set_ids = have_id;
    c.uid = id.uid;
    c.gid = id.gid;
    c.groups = id.groups;
    c.ngroups = (size_t)id.ngroups;
    c.max_fd =
        getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? (long)rl.rlim_cur : 65536;

    /* From here until the leader is registered, exec_children_reap holds
     * off: it must never reap a leader whose status we are owed. */
    if ((rc = exec_children_spawning(sp->o->children)) < 0)
        goto out;
    /* Every signal blocked across the clone: a handler of ours must never
     * run in the child, which shares our memory. The child unblocks once
     * its dispositions are back to the defaults. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = spawn_clone(child_main, stack + sizeof(stack),
                      CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &c, &pidfd);
    err = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        exec_children_spawned(sp->o->children, 0);
        rc = -err;
        goto out;
    }
    if (c.stage != CHILD_OK) {
        siginfo_t si;
        while (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR)
            ;
        close(pidfd);
        exec_children_spawned(sp->o->children, 0);
        rc = child_error(sp, &c, cmd);
        goto out;
    }
    exec_children_spawned(sp->o->children, pid);
    sp->pid = pid;
    sp->pidfd = pidfd;
    rc = 0;
out:
    if (have_env)
        env_free(&env);
    if (have_id)
        ident_free(&id);
    return rc;
}
