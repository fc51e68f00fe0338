/*
 * config — the table of jobqd's settings and the parsers that fill struct
 * config from defaults, the config file, JOBQD_* variables and flags, in
 * that order so that later sources win. It owns the config's strings and
 * the copies of the sources that config_reload replays. Nothing here logs
 * or prints: every failure is -EINVAL with a reason for main to show.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "jobq/config.h"
#include "jobq/duration.h"
#include "jobq/limits.h"

#define STATE_DIR_DEFAULT "/var/lib/jobq"

enum config_type {
    CONFIG_STRING,
    CONFIG_PATH,     /* made absolute */
    CONFIG_INT,      /* int, within [min, max] */
    CONFIG_MODE,     /* int, a file mode in octal (0660), within [min, max] */
    CONFIG_BOOL,     /* true/false/yes/no/on/off/1/0 */
    CONFIG_DURATION, /* int64_t ms, within [min, max] */
    CONFIG_SIZE,     /* int64_t bytes, within [min, max] */
    CONFIG_LEVEL,    /* enum log_level */
    CONFIG_FORMAT,   /* enum log_format */
    CONFIG_ADDR,     /* struct config_addr */
    CONFIG_QUEUES,   /* the queues list; each value adds or replaces entries */
};

#define KEY_LIVE 0x1   /* applied on SIGHUP without a restart */
#define KEY_NOFILE 0x2 /* flag and environment only */
#define KEY_EMPTY 0x4  /* "" is a value: unset, off, stderr */

struct config_key {
    const char *name;
    enum config_type type;
    size_t off;
    /* The default, written as a user would; NULL: from config_defaults. */
    const char *def;
    int64_t min, max;
    unsigned flags;
    const char *metavar;
    const char *help;
    /* Extra validation of the parsed value (NULL: none). */
    int (*check)(const struct config *cfg, char *why, size_t whylen);
};

static int
check_socket(const struct config *cfg, char *why, size_t whylen)
{
    size_t n = cfg->socket ? strlen(cfg->socket) : 0;
    if (n >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        snprintf(why, whylen, "socket path is %zu bytes; a Unix socket path holds at most %zu", n,
                 sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        return -EINVAL;
    }
    return 0;
}

/* A PostgreSQL URL (libpq's conninfo URI) or nothing. The value may hold a
 * password, so the reason never repeats it. */
static int
check_store(const struct config *cfg, char *why, size_t whylen)
{
    const char *s = cfg->store;

    if (s == NULL || s[0] == '\0' || strncmp(s, "postgresql://", 13) == 0 ||
        strncmp(s, "postgres://", 11) == 0)
        return 0;
    snprintf(why, whylen,
             "store must be a postgresql:// (or postgres://) URL, or empty for SQLite in "
             "STATE_DIR/jobq.db");
    return -EINVAL;
}

#define OFF(field) offsetof(struct config, field)

/* Every key of jobqd: one row each. Flags are --NAME, variables
 * JOBQD_NAME, file keys NAME. */
static const struct config_key keys[] = {
    {"config", CONFIG_PATH, OFF(config_file), "", 0, 0, KEY_NOFILE | KEY_EMPTY, "FILE",
     "read settings from FILE: \"key = value\" lines named like these flags, # comment lines. "
     "No file is read unless one is named here or in JOBQD_CONFIG",
     NULL},
    {"state-dir", CONFIG_PATH, OFF(state_dir), NULL, 0, 0, 0, "DIR",
     "where the database (jobq.db), the socket and the job output logs (logs/) live", NULL},
    {"socket", CONFIG_PATH, OFF(socket), "", 0, 0, KEY_EMPTY, "PATH",
     "Unix socket the jobq client connects to; empty: STATE_DIR/jobq.sock", check_socket},
    {"socket-mode", CONFIG_MODE, OFF(socket_mode), "0660", 0, 0777, 0, "MODE",
     "permissions of the socket jobqd creates, in octal: who may connect at all. Any uid that "
     "can connect sees and controls only its own jobs, except root and jobqd's own uid",
     NULL},
    {"threads", CONFIG_INT, OFF(threads), NULL, 1, JOBQ_THREADS_MAX, 0, "N",
     "scheduler threads; the default is the number of CPUs this process may use (CPU affinity, "
     "capped by the cgroup CPU quota)",
     NULL},
    {"concurrency", CONFIG_INT, OFF(concurrency), "64", 1, JOBQ_CONCURRENCY_MAX, KEY_LIVE, "N",
     "jobs running at once, all queues together. 64 keeps a few cores busy with short jobs while "
     "a burst of submits cannot fork-bomb the host; raise it for jobs that mostly wait",
     NULL},
    {"queue", CONFIG_QUEUES, OFF(queues), NULL, 1, JOBQ_CONCURRENCY_MAX, KEY_LIVE, "NAME=N",
     "at most N jobs of queue NAME run at once, within --concurrency; repeat it (or separate "
     "entries with commas) for more queues. Queues not listed share --concurrency",
     NULL},
    {"max-queued", CONFIG_INT, OFF(max_queued), "1000000", 1, JOBQ_QUEUED_MAX, KEY_LIVE, "N",
     "jobs waiting to run (scheduled, queued, retrying) beyond which submit is refused with a "
     "queue-full error, so a runaway producer is stopped before the disk fills",
     NULL},
    {"shutdown-grace", CONFIG_DURATION, OFF(shutdown_grace_ms), "30s", 0, JOBQ_DURATION_MAX_MS,
     KEY_LIVE, "DUR",
     "on SIGTERM or SIGINT, how long running jobs may finish before they are stopped and "
     "recorded as interrupted (re-run at the next start)",
     NULL},
    {"request-timeout", CONFIG_DURATION, OFF(request_timeout_ms), "10s",
     JOBQ_REQUEST_TIMEOUT_MIN_MS, JOBQ_REQUEST_TIMEOUT_MAX_MS, 0, "DUR",
     "a connection that sent part of a message and then nothing for this long gets an error "
     "reply and is closed; idle connections between messages may stay",
     NULL},
    {"max-connections", CONFIG_INT, OFF(max_connections), "4096", 1, JOBQ_CONNECTIONS_MAX, 0, "N",
     "client connections at once; beyond it a new connection gets an error reply and is closed. "
     "Each costs a file descriptor: keep it under RLIMIT_NOFILE",
     NULL},
    {"max-connections-per-uid", CONFIG_INT, OFF(max_connections_per_uid), "1024", 1,
     JOBQ_CONNECTIONS_MAX, KEY_LIVE, "N",
     "client connections at once from one uid, root and jobqd's own uid excepted; beyond it a "
     "new connection from that uid gets an error reply and is closed, so that one user cannot "
     "take every connection from the others",
     NULL},
    {"http", CONFIG_ADDR, OFF(http), "", 0, 0, KEY_EMPTY, "ADDR:PORT",
     "serve /livez, /readyz and /metrics over HTTP on ADDR:PORT (127.0.0.1:9090, [::1]:9090, or "
     ":9090 for every address); empty or off: no HTTP",
     NULL},
    {"http-token-file", CONFIG_PATH, OFF(http_token_file), "", 0, 0, KEY_LIVE | KEY_EMPTY, "FILE",
     "serve JSON-RPC at POST /rpc on --http to clients that send this file's token as "
     "\"Authorization: Bearer TOKEN\"; they act as jobqd's own uid, an administrator, so the "
     "token is a full-access credential (use TLS in front). The file must not be readable by "
     "others; it is read at start and on every SIGHUP. Empty: no /rpc",
     NULL},
    {"log-level", CONFIG_LEVEL, OFF(log_level), "info", 0, 0, KEY_LIVE, "LEVEL",
     "error, warn, info (one line per job event) or debug", NULL},
    {"log-format", CONFIG_FORMAT, OFF(log_format), "text", 0, 0, KEY_LIVE, "FORMAT",
     "text (time level event key=value...) or json (one object per line)", NULL},
    {"log-file", CONFIG_PATH, OFF(log_file), "", 0, 0, KEY_LIVE | KEY_EMPTY, "PATH",
     "append log lines to PATH, reopened on SIGHUP (for logrotate); empty: stderr (journald, "
     "kubectl logs)",
     NULL},
    {"log-cap", CONFIG_SIZE, OFF(log_cap_bytes), "10MiB", 0, JOBQ_LOG_CAP_MAX_BYTES, 0, "SIZE",
     "captured stdout and stderr kept per attempt; the rest is counted, dropped and marked "
     "truncated",
     NULL},
    {"kill-grace", CONFIG_DURATION, OFF(kill_grace_ms), "5s", 0, JOBQ_KILL_GRACE_MAX_MS, 0, "DUR",
     "between SIGTERM to the process group of a job being stopped (timeout, deadline, cancel, "
     "shutdown) and SIGKILL",
     NULL},
    {"foreground", CONFIG_BOOL, OFF(foreground), "false", 0, 0, 0, "",
     "stay in the foreground (systemd, containers, make run); without it jobqd detaches from "
     "the terminal once it is ready",
     NULL},
    {"store", CONFIG_STRING, OFF(store), "", 0, 0, KEY_EMPTY, "URL",
     "a PostgreSQL database shared by several jobqd nodes, as a libpq URL "
     "(postgresql://user@host/db?sslmode=require; docs/POSTGRES.md); empty: SQLite in "
     "STATE_DIR/jobq.db",
     check_store},
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

/* What config_load read, for config_reload to read again. */
struct config_src {
    int argc;
    char **argv; /* argv[0..argc), each owned */
    char **env;  /* the JOBQD_* entries, NULL-terminated, each owned */
    char *cwd;   /* base of relative paths in flags and variables */
    int def_threads;
    char *def_state_dir;
};

static void
strv_free(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

/* Drops the saved argv, environment and cwd. */
static void
src_clear(struct config_src *src)
{
    size_t n = 0;

    strv_free(src->argv, (size_t)src->argc);
    while (src->env != NULL && src->env[n] != NULL)
        n++;
    strv_free(src->env, n);
    free(src->cwd);
    src->argv = src->env = NULL;
    src->argc = 0;
    src->cwd = NULL;
}

static void
src_free(struct config_src *src)
{
    if (src == NULL)
        return;
    src_clear(src);
    free(src->def_state_dir);
    free(src);
}

static void *
field(struct config *cfg, const struct config_key *k)
{
    return (char *)cfg + k->off;
}

static const void *
cfield(const struct config *cfg, const struct config_key *k)
{
    return (const char *)cfg + k->off;
}

static void
queues_clear(struct config *cfg)
{
    for (size_t i = 0; i < cfg->queues.n; i++)
        free(cfg->queues.v[i].name);
    free(cfg->queues.v);
    cfg->queues.v = NULL;
    cfg->queues.n = 0;
}

/* Releases what the key's field owns and zeroes it. */
static void
field_clear(struct config *cfg, const struct config_key *k)
{
    void *f = field(cfg, k);

    switch (k->type) {
    case CONFIG_STRING:
    case CONFIG_PATH:
        free(*(char **)f);
        *(char **)f = NULL;
        break;
    case CONFIG_ADDR:
        free(((struct config_addr *)f)->host);
        ((struct config_addr *)f)->host = NULL;
        ((struct config_addr *)f)->port = 0;
        break;
    case CONFIG_QUEUES:
        queues_clear(cfg);
        break;
    default:
        break;
    }
}

void
config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < NKEYS; i++)
        field_clear(cfg, &keys[i]);
    src_free(cfg->src);
    free(cfg);
}

/* ---- value parsers ---------------------------------------------------- */

/* Renders s for a message: at most 64 bytes, control bytes as '?', so a
 * reason stays one readable line whatever the input held. */
static const char *
shown(const char *s, char *buf, size_t len)
{
    size_t i, n = strlen(s);

    for (i = 0; i < n && i + 4 < len && i < 64; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (i < n)
        buf[i++] = '.', buf[i++] = '.', buf[i++] = '.';
    buf[i] = '\0';
    return buf;
}

static int
parse_int(const struct config_key *k, const char *s, int64_t *out, char *why, size_t whylen)
{
    char sb[80];
    long long v = 0;
    const char *p = s;
    bool neg = false;

    if (*p == '-')
        neg = true, p++;
    if (!isdigit((unsigned char)*p))
        goto bad;
    for (; isdigit((unsigned char)*p); p++) {
        if (v > (LLONG_MAX - (*p - '0')) / 10) {
            v = LLONG_MAX;
            while (isdigit((unsigned char)*p))
                p++;
            break;
        }
        v = v * 10 + (*p - '0');
    }
    if (*p != '\0')
        goto bad;
    if (neg)
        v = -v;
    if (v < k->min || v > k->max) {
        snprintf(why, whylen, "%s is out of range: must be from %lld to %lld",
                 shown(s, sb, sizeof(sb)), (long long)k->min, (long long)k->max);
        return -EINVAL;
    }
    *out = v;
    return 0;
bad:
    snprintf(why, whylen, "bad number \"%s\": expected a whole number from %lld to %lld",
             shown(s, sb, sizeof(sb)), (long long)k->min, (long long)k->max);
    return -EINVAL;
}

static int
parse_bool(const char *s, bool *out, char *why, size_t whylen)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    char sb[80];

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    snprintf(why, whylen, "bad boolean \"%s\": expected true or false (yes/no, on/off, 1/0)",
             shown(s, sb, sizeof(sb)));
    return -EINVAL;
}

int
config_parse_size(const char *s, int64_t *bytes, char *why, size_t whylen)
{
    static const struct {
        const char *unit;
        double mul;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"k", 1024.0},
        {"kib", 1024.0},
        {"kb", 1e3},
        {"m", 1048576.0},
        {"mib", 1048576.0},
        {"mb", 1e6},
        {"g", 1073741824.0},
        {"gib", 1073741824.0},
        {"gb", 1e9},
        {"t", 1099511627776.0},
        {"tib", 1099511627776.0},
        {"tb", 1e12},
    };
    const char *p = s;
    double v;
    char sb[80];
    int rc;

    if ((rc = decimal_scan(&p, 1e18, &v)) == -ERANGE)
        goto big;
    if (rc < 0)
        goto bad;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(p, units[i].unit) == 0) {
            v *= units[i].mul;
            if (v >= 9.2e18)
                goto big;
            *bytes = (int64_t)v;
            return 0;
        }
    }
bad:
    snprintf(why, whylen,
             "bad size \"%s\": expected bytes or a number with a unit, like 512k, 10MiB, 1G",
             shown(s, sb, sizeof(sb)));
    return -EINVAL;
big:
    snprintf(why, whylen, "size \"%s\" is too large", shown(s, sb, sizeof(sb)));
    return -EINVAL;
}

/* A duration or size in the largest unit that divides it exactly ("90s",
 * "10MiB"), so that messages are short and a dump reads back exactly. */
static const char *
exact_text(const struct config_key *k, int64_t v, char *buf, size_t len)
{
    static const char *const dnames[] = {"d", "h", "m", "s", "ms"};
    static const int64_t dmuls[] = {86400000, 3600000, 60000, 1000, 1};
    static const char *const snames[] = {"TiB", "GiB", "MiB", "KiB", ""};
    static const int64_t smuls[] = {1LL << 40, 1LL << 30, 1LL << 20, 1LL << 10, 1};
    const char *const *names = k->type == CONFIG_DURATION ? dnames : snames;
    const int64_t *muls = k->type == CONFIG_DURATION ? dmuls : smuls;
    size_t i = 0;

    while (i < 4 && (v == 0 || v % muls[i] != 0))
        i++;
    snprintf(buf, len, "%lld%s", (long long)(v / muls[i]), names[i]);
    return buf;
}

static int
check_range(const struct config_key *k, const char *s, int64_t v, char *why, size_t whylen)
{
    char sb[80], lo[32], hi[32];

    if (v >= k->min && v <= k->max)
        return 0;
    exact_text(k, k->min, lo, sizeof(lo));
    exact_text(k, k->max, hi, sizeof(hi));
    snprintf(why, whylen, "\"%s\" is out of range: must be from %s to %s", shown(s, sb, sizeof(sb)),
             lo, hi);
    return -EINVAL;
}

/* Valid UTF-8 without control bytes. */
static bool
text_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p) {
        int more;
        if (*p < 0x20 || *p == 0x7f)
            return false;
        if (*p < 0x80)
            more = 0;
        else if (*p >= 0xc2 && *p <= 0xdf)
            more = 1;
        else if (*p >= 0xe0 && *p <= 0xef)
            more = 2;
        else if (*p >= 0xf0 && *p <= 0xf4)
            more = 3;
        else
            return false;
        for (p++; more > 0; more--, p++)
            if ((*p & 0xc0) != 0x80)
                return false;
    }
    return true;
}

static int
parse_addr(const char *s, struct config_addr *out, char *why, size_t whylen)
{
    const char *colon, *host = s;
    size_t hlen;
    char sb[80], *h;
    long port = 0;

    if (*s == '\0' || strcmp(s, "off") == 0) {
        *out = (struct config_addr){NULL, 0};
        return 0;
    }
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':') {
            snprintf(why, whylen, "bad address \"%s\": expected [IPV6]:PORT",
                     shown(s, sb, sizeof(sb)));
            return -EINVAL;
        }
        host = s + 1;
        hlen = (size_t)(rb - host);
        colon = rb + 1;
        if (hlen == 0)
            goto bad;
    } else {
        if ((colon = strrchr(s, ':')) == NULL)
            goto bad;
        hlen = (size_t)(colon - s);
        if (memchr(s, ':', hlen) != NULL) {
            snprintf(why, whylen,
                     "bad address \"%s\": put an IPv6 address in brackets, like [::1]:9090",
                     shown(s, sb, sizeof(sb)));
            return -EINVAL;
        }
    }
    for (const char *p = colon + 1; *p; p++) {
        if (!isdigit((unsigned char)*p) || port > 65535)
            goto bad;
        port = port * 10 + (*p - '0');
    }
    if (colon[1] == '\0' || port < 1 || port > 65535) {
        snprintf(why, whylen, "bad address \"%s\": the port must be from 1 to 65535",
                 shown(s, sb, sizeof(sb)));
        return -EINVAL;
    }
    /* A host name or an IP address (':' in brackets, '%' for an IPv6
     * zone): nothing that config_dump would have to quote, so a dump reads
     * back ("['#0]:9" did not; found by tests/fuzz/config.c). */
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)host[i];
        if (!isalnum(c) && strchr(".-_:%", c) == NULL)
            goto bad;
    }
    if (hlen > 255)
        goto bad;
    h = hlen == 0 ? strdup("0.0.0.0") : strndup(host, hlen);
    if (h == NULL)
        return -ENOMEM;
    *out = (struct config_addr){h, (int)port};
    return 0;
bad:
    snprintf(why, whylen, "bad address \"%s\": expected ADDR:PORT, like 127.0.0.1:9090",
             shown(s, sb, sizeof(sb)));
    return -EINVAL;
}

static int
queue_cmp(const void *a, const void *b)
{
    return strcmp(((const struct config_queue *)a)->name, ((const struct config_queue *)b)->name);
}

/* Adds or replaces one NAME=N taken from s[0..n). */
static int
queue_put(struct config *cfg, const struct config_key *k, const char *s, size_t n, char *why,
          size_t whylen)
{
    char *entry = strndup(s, n), *eq, sb[80];
    struct config_queue *v;
    int64_t c;
    int rc;

    if (entry == NULL)
        return -ENOMEM;
    if ((eq = strchr(entry, '=')) == NULL || eq == entry) {
        snprintf(why, whylen, "bad queue limit \"%s\": expected NAME=N, like build=2",
                 shown(entry, sb, sizeof(sb)));
        rc = -EINVAL;
        goto out;
    }
    *eq = '\0';
    if (!text_ok(entry) || strpbrk(entry, " \t") != NULL || strlen(entry) > JOBQ_NAME_MAX_BYTES) {
        snprintf(why, whylen,
                 "bad queue name \"%s\": at most %d bytes of UTF-8 without spaces or control "
                 "characters",
                 shown(entry, sb, sizeof(sb)), JOBQ_NAME_MAX_BYTES);
        rc = -EINVAL;
        goto out;
    }
    if ((rc = parse_int(k, eq + 1, &c, why, whylen)) < 0) {
        char inner[200];
        snprintf(inner, sizeof(inner), "%s", why);
        snprintf(why, whylen, "queue '%s': %s", shown(entry, sb, sizeof(sb)), inner);
        goto out;
    }
    for (size_t i = 0; i < cfg->queues.n; i++) {
        if (strcmp(cfg->queues.v[i].name, entry) == 0) {
            cfg->queues.v[i].concurrency = (int)c;
            rc = 0;
            goto out;
        }
    }
    if (cfg->queues.n >= JOBQ_CONFIG_QUEUES_MAX) {
        snprintf(why, whylen, "more than %d queues", JOBQ_CONFIG_QUEUES_MAX);
        rc = -EINVAL;
        goto out;
    }
    if ((v = realloc(cfg->queues.v, (cfg->queues.n + 1) * sizeof(*v))) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    cfg->queues.v = v;
    v[cfg->queues.n++] = (struct config_queue){entry, (int)c};
    entry = NULL; /* the config owns it now */
    qsort(v, cfg->queues.n, sizeof(*v), queue_cmp);
    rc = 0;
out:
    free(entry);
    return rc;
}

static int
parse_queues(struct config *cfg, const struct config_key *k, const char *s, char *why,
             size_t whylen)
{
    int rc;

    if (*s == '\0') {
        snprintf(why, whylen, "empty queue limit: expected NAME=N, like build=2");
        return -EINVAL;
    }
    for (const char *p = s;; p++) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n > 0 && (*p == ' ' || *p == '\t'))
            p++, n--;
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if ((rc = queue_put(cfg, k, p, n, why, whylen)) < 0)
            return rc;
        if (end == NULL)
            return 0;
        p = end;
    }
}

/* Joins a relative path to base; drops leading "./". Returns owned. */
static char *
path_abs(const char *s, const char *base)
{
    char *out;

    if (s[0] == '/' || base == NULL)
        return strdup(s);
    while (s[0] == '.' && s[1] == '/')
        for (s += 2; *s == '/'; s++)
            ;
    if (strcmp(s, ".") == 0 || *s == '\0')
        return strdup(base);
    if (asprintf(&out, "%s%s%s", base, base[strlen(base) - 1] == '/' ? "" : "/", s) < 0)
        return NULL;
    return out;
}

/*
 * Sets key k from the text s. base is the directory relative paths are
 * resolved against. On error the config may be partly changed (a queue
 * list keeps the entries before the bad one): callers discard it.
 */
static int
key_set(struct config *cfg, const struct config_key *k, const char *s, const char *base, char *why,
        size_t whylen)
{
    void *f = field(cfg, k);
    char *str = NULL, sb[80];
    struct config_addr addr;
    int64_t v;
    bool b;
    int rc;

    if (*s == '\0' && !(k->flags & KEY_EMPTY)) {
        snprintf(why, whylen, "empty value");
        return -EINVAL;
    }
    switch (k->type) {
    case CONFIG_STRING:
    case CONFIG_PATH:
        if (*s != '\0') {
            if (!text_ok(s)) {
                snprintf(why, whylen, "\"%s\" holds control characters or invalid UTF-8",
                         shown(s, sb, sizeof(sb)));
                return -EINVAL;
            }
            str = k->type == CONFIG_PATH ? path_abs(s, base) : strdup(s);
            if (str == NULL)
                return -ENOMEM;
            if (k->type == CONFIG_PATH && strlen(str) >= PATH_MAX) {
                snprintf(why, whylen, "path \"%s\" is longer than %d bytes",
                         shown(s, sb, sizeof(sb)), PATH_MAX - 1);
                free(str);
                return -EINVAL;
            }
        }
        free(*(char **)f);
        *(char **)f = str;
        break;
    case CONFIG_INT:
        if ((rc = parse_int(k, s, &v, why, whylen)) < 0)
            return rc;
        *(int *)f = (int)v;
        break;
    case CONFIG_MODE: {
        char *end;
        errno = 0;
        v = strtoll(s, &end, 8);
        if (*s == '\0' || *end != '\0' || errno != 0 || v < k->min || v > k->max) {
            snprintf(why, whylen, "bad mode \"%s\": expected octal from 0 to 0777, like 0660",
                     shown(s, sb, sizeof(sb)));
            return -EINVAL;
        }
        *(int *)f = (int)v;
        break;
    }
    case CONFIG_BOOL:
        if ((rc = parse_bool(s, &b, why, whylen)) < 0)
            return rc;
        *(bool *)f = b;
        break;
    case CONFIG_DURATION:
        if ((rc = duration_parse_ms(s, &v, why, whylen)) < 0 ||
            (rc = check_range(k, s, v, why, whylen)) < 0)
            return rc;
        *(int64_t *)f = v;
        break;
    case CONFIG_SIZE:
        if ((rc = config_parse_size(s, &v, why, whylen)) < 0 ||
            (rc = check_range(k, s, v, why, whylen)) < 0)
            return rc;
        *(int64_t *)f = v;
        break;
    case CONFIG_LEVEL:
        return log_level_parse(s, (enum log_level *)f, why, whylen);
    case CONFIG_FORMAT:
        return log_format_parse(s, (enum log_format *)f, why, whylen);
    case CONFIG_ADDR:
        if ((rc = parse_addr(s, &addr, why, whylen)) < 0)
            return rc;
        free(((struct config_addr *)f)->host);
        *(struct config_addr *)f = addr;
        break;
    case CONFIG_QUEUES:
        return parse_queues(cfg, k, s, why, whylen);
    }
    return k->check ? k->check(cfg, why, whylen) : 0;
}

/* ---- keys by name ----------------------------------------------------- */

static const struct config_key *
key_find(const char *name, size_t n)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strlen(keys[i].name) == n && memcmp(keys[i].name, name, n) == 0)
            return &keys[i];
    return NULL;
}

/* Edit distance, for "did you mean"; names are short (<= 32 compared). */
static size_t
edit_distance(const char *a, size_t n, const char *b)
{
    size_t m = strlen(b), row[33], prev, tmp;

    if (n > 32 || m > 32)
        return SIZE_MAX;
    for (size_t j = 0; j <= m; j++)
        row[j] = j;
    for (size_t i = 1; i <= n; i++) {
        prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= m; j++) {
            size_t best = prev + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            tmp = row[j];
            row[j] = best;
            prev = tmp;
        }
    }
    return row[m];
}

/* The key a mistyped name probably meant, or NULL: within two edits, or
 * a part of the key ("level" for "log-level"). */
static const struct config_key *
key_suggest(const char *name, size_t n)
{
    const struct config_key *best = NULL;
    size_t bestd = 3;

    for (size_t i = 0; i < NKEYS; i++) {
        size_t d = edit_distance(name, n, keys[i].name);
        if (d < bestd)
            best = &keys[i], bestd = d;
    }
    for (size_t i = 0; best == NULL && n >= 4 && i < NKEYS; i++)
        if (memmem(keys[i].name, strlen(keys[i].name), name, n) != NULL)
            best = &keys[i];
    return best;
}

int
config_key_live(const char *name)
{
    const struct config_key *k = key_find(name, strlen(name));
    if (k == NULL)
        return -ENOENT;
    return (k->flags & KEY_LIVE) != 0;
}

/* ---- defaults --------------------------------------------------------- */

int
config_new(const struct config_defaults *d, struct config **out)
{
    struct config *cfg;
    char why[256];
    int rc = 0;

    if ((cfg = calloc(1, sizeof(*cfg))) == NULL)
        return -ENOMEM;
    if ((cfg->src = calloc(1, sizeof(*cfg->src))) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    cfg->src->def_threads = d && d->threads > 1 ? d->threads : 1;
    if (cfg->src->def_threads > JOBQ_THREADS_MAX)
        cfg->src->def_threads = JOBQ_THREADS_MAX;
    cfg->src->def_state_dir = strdup(d && d->state_dir ? d->state_dir : STATE_DIR_DEFAULT);
    if (cfg->src->def_state_dir == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < NKEYS; i++) {
        const struct config_key *k = &keys[i];
        if (k->def != NULL)
            rc = key_set(cfg, k, k->def, NULL, why, sizeof(why));
        else if (k->off == OFF(threads))
            cfg->threads = cfg->src->def_threads;
        else if (k->off == OFF(state_dir))
            rc = (cfg->state_dir = strdup(cfg->src->def_state_dir)) ? 0 : -ENOMEM;
        if (rc < 0)
            goto out;
    }
    *out = cfg;
    cfg = NULL; /* the caller owns it now */
out:
    config_free(cfg);
    return rc;
}

/* ---- the config file -------------------------------------------------- */

static bool
is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Removes the quotes of a quoted value in place. -EINVAL with a reason if
 * they don't close or something follows them. */
static int
unquote(char *v, char *why, size_t whylen)
{
    char q = v[0], *r = v + 1, *w = v;

    if (q != '"' && q != '\'')
        return 0;
    for (; *r && *r != q; r++) {
        if (q == '"' && *r == '\\' && (r[1] == '"' || r[1] == '\\'))
            r++;
        *w++ = *r;
    }
    if (*r != q) {
        snprintf(why, whylen, "unterminated %s quote", q == '"' ? "double" : "single");
        return -EINVAL;
    }
    for (r++; is_blank(*r); r++)
        ;
    if (*r != '\0') {
        snprintf(why, whylen, "text after the closing quote");
        return -EINVAL;
    }
    *w = '\0';
    return 0;
}

/* Adds "PREFIX" in front of the reason already in why. */
__attribute__((format(printf, 3, 4))) static void
why_prefix(char *why, size_t whylen, const char *fmt, ...)
{
    char reason[512], prefix[512];
    va_list ap;

    if (why == NULL || whylen == 0)
        return;
    snprintf(reason, sizeof(reason), "%s", why);
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    snprintf(why, whylen, "%s%s", prefix, reason);
}

/* One line of a config file, NUL-terminated, without its newline. */
static int
parse_line(struct config *cfg, const char *name, int lineno, char *line, const char *base,
           char *why, size_t whylen)
{
    const struct config_key *k, *alt;
    char *key = line, *eq, *val, *end, sb[80], dashed[64];
    int rc;

    while (is_blank(*key))
        key++;
    if (*key == '\0' || *key == '#')
        return 0;
    if ((eq = strchr(key, '=')) == NULL) {
        snprintf(why, whylen, "%s:%d: expected \"key = value\", got \"%s\"", name, lineno,
                 shown(key, sb, sizeof(sb)));
        return -EINVAL;
    }
    for (end = eq; end > key && is_blank(end[-1]); end--)
        ;
    *end = '\0';
    if (*key == '\0') {
        snprintf(why, whylen, "%s:%d: missing key before '='", name, lineno);
        return -EINVAL;
    }
    /* max_queued = max-queued: the env form (JOBQD_MAX_QUEUED) suggests
     * underscores, and nothing is gained by refusing them. */
    snprintf(dashed, sizeof(dashed), "%s", key);
    for (char *p = dashed; *p != '\0'; p++)
        if (*p == '_')
            *p = '-';
    if ((k = key_find(dashed, strlen(dashed))) == NULL) {
        alt = key_suggest(dashed, strlen(dashed));
        snprintf(why, whylen, "%s:%d: unknown key '%s'%s%s%s", name, lineno,
                 shown(key, sb, sizeof(sb)), alt ? " (did you mean '" : "", alt ? alt->name : "",
                 alt ? "'?)" : "");
        return -EINVAL;
    }
    if (k->flags & KEY_NOFILE) {
        snprintf(why, whylen, "%s:%d: key '%s': only --%s or JOBQD_CONFIG can name the config file",
                 name, lineno, k->name, k->name);
        return -EINVAL;
    }
    for (val = eq + 1; is_blank(*val); val++)
        ;
    for (end = val + strlen(val); end > val && is_blank(end[-1]); end--)
        ;
    *end = '\0';
    if ((rc = unquote(val, why, whylen)) < 0 ||
        (rc = key_set(cfg, k, val, base, why, whylen)) < 0) {
        if (rc == -EINVAL)
            why_prefix(why, whylen, "%s:%d: key '%s': ", name, lineno, k->name);
        return rc;
    }
    return 0;
}

/* The directory of path (absolute if path is), or the cwd for a bare
 * name. Returns owned, or NULL. */
static char *
dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    char cwd[PATH_MAX];

    if (slash == NULL)
        return getcwd(cwd, sizeof(cwd)) ? strdup(cwd) : strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

int
config_parse_buf(struct config *cfg, const char *name, const char *buf, size_t len, char *why,
                 size_t whylen)
{
    char *base = NULL, *line = NULL;
    const char *p = buf, *end = buf + len;
    int lineno = 0, rc = 0;

    if ((base = dir_of(name)) == NULL)
        return -ENOMEM;
    /* A UTF-8 byte-order mark, as some Windows editors write. */
    if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (nl ? nl : end) - p;

        lineno++;
        if (memchr(p, '\0', n) != NULL) {
            snprintf(why, whylen, "%s:%d: NUL byte in the line (is this a text file?)", name,
                     lineno);
            rc = -EINVAL;
            goto out;
        }
        if (n > 0 && p[n - 1] == '\r')
            n--;
        free(line);
        if ((line = strndup(p, n)) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        if ((rc = parse_line(cfg, name, lineno, line, base, why, whylen)) < 0)
            goto out;
        p = nl ? nl + 1 : end;
    }
out:
    free(line);
    free(base);
    return rc;
}

/* Reads the whole file at path (at most JOBQ_CONFIG_FILE_MAX_BYTES).
 * Returns owned *buf (free). */
static int
file_read(const char *path, char **buf, size_t *len, char *why, size_t whylen)
{
    size_t cap = 4096, n = 0;
    char *b = NULL, *nb;
    struct stat st;
    int fd, rc = 0;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        rc = -errno;
        snprintf(why, whylen, "cannot read %s: %s", path, strerror(-rc));
        return rc == -ENOMEM ? rc : -EINVAL;
    }
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(why, whylen, "cannot read %s: it is a directory", path);
        rc = -EINVAL;
        goto out;
    }
    for (;;) {
        ssize_t r;
        if (n == cap || b == NULL) {
            if (n >= JOBQ_CONFIG_FILE_MAX_BYTES) {
                snprintf(why, whylen, "%s is larger than %d bytes: is it a config file?", path,
                         JOBQ_CONFIG_FILE_MAX_BYTES);
                rc = -EINVAL;
                goto out;
            }
            cap = b == NULL ? cap : cap * 2;
            if ((nb = realloc(b, cap + 1)) == NULL) {
                rc = -ENOMEM;
                goto out;
            }
            b = nb;
        }
        if ((r = read(fd, b + n, cap - n)) < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            snprintf(why, whylen, "cannot read %s: %s", path, strerror(-rc));
            rc = -EINVAL;
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    b = NULL; /* the caller owns it now */
out:
    free(b);
    close(fd);
    return rc;
}

/* ---- flags and environment -------------------------------------------- */

/* One assignment from a flag or a variable, in the order given. */
struct assign {
    const struct config_key *key;
    const char *value; /* borrowed from argv or envp */
    const char *from;  /* borrowed: the variable's name for messages (env) */
    size_t fromlen;
};

/* Scans argv into assignments. Sets cfg->help/version. */
static int
flags_scan(struct config *cfg, int argc, char **argv, struct assign *out, size_t *nout, char *why,
           size_t whylen)
{
    const struct config_key *k, *alt;
    char sb[80];
    int rc = 0;

    *nout = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *name, *eq, *val;
        size_t n;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cfg->help = true;
            continue;
        }
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            cfg->version = true;
            continue;
        }
        if (rc < 0)
            continue; /* look on for --help, which wins over errors */
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0' || a[2] == '-' || a[2] == '=') {
            snprintf(why, whylen, "unexpected argument '%s': jobqd takes only --flags (see --help)",
                     shown(a, sb, sizeof(sb)));
            rc = -EINVAL;
            continue;
        }
        name = a + 2;
        eq = strchr(name, '=');
        n = eq ? (size_t)(eq - name) : strlen(name);
        if ((k = key_find(name, n)) == NULL) {
            alt = key_suggest(name, n);
            snprintf(why, whylen, "--%.*s: unknown flag%s%s%s", (int)(n > 64 ? 64 : n), name,
                     alt ? " (did you mean --" : " (see --help)", alt ? alt->name : "",
                     alt ? "?)" : "");
            rc = -EINVAL;
            continue;
        }
        if (eq != NULL) {
            val = eq + 1;
        } else if (k->type == CONFIG_BOOL) {
            val = "true";
        } else if (i + 1 >= argc) {
            snprintf(why, whylen, "--%s: missing value (--%s %s)", k->name, k->name, k->metavar);
            rc = -EINVAL;
            continue;
        } else if (strncmp(argv[i + 1], "--", 2) == 0 && argv[i + 1][2] != '\0') {
            snprintf(why, whylen,
                     "--%s: missing value: '%s' is the next flag (write --%s=%s if you mean it)",
                     k->name, shown(argv[i + 1], sb, sizeof(sb)), k->name,
                     shown(argv[i + 1], sb, sizeof(sb)));
            rc = -EINVAL;
            continue;
        } else {
            val = argv[++i];
        }
        out[(*nout)++] = (struct assign){k, val, NULL, 0};
    }
    return rc;
}

#define ENV_PREFIX "JOBQD_"

/* JOBQD_STATE_DIR for state-dir. */
static const char *
env_name(const struct config_key *k, char *buf, size_t len)
{
    size_t n = strlen(ENV_PREFIX), i;

    memcpy(buf, ENV_PREFIX, n);
    for (i = 0; k->name[i] && n + i + 1 < len; i++)
        buf[n + i] = k->name[i] == '-' ? '_' : (char)toupper((unsigned char)k->name[i]);
    buf[n + i] = '\0';
    return buf;
}

/* Scans the JOBQD_* entries of envp into assignments. */
static int
env_scan(char **envp, struct assign *out, size_t *nout, char *why, size_t whylen)
{
    const struct config_key *k;
    char key[64], eb[80];

    *nout = 0;
    for (size_t i = 0; envp != NULL && envp[i] != NULL; i++) {
        const char *e = envp[i], *name, *eq;
        bool canonical = true;
        size_t n;

        if (strncmp(e, ENV_PREFIX, strlen(ENV_PREFIX)) != 0 || (eq = strchr(e, '=')) == NULL)
            continue;
        name = e + strlen(ENV_PREFIX);
        n = (size_t)(eq - name);
        k = NULL;
        if (n < sizeof(key)) {
            /* Only the upper-case spelling is the documented name. */
            for (size_t j = 0; j < n; j++) {
                key[j] = name[j] == '_' ? '-' : (char)tolower((unsigned char)name[j]);
                canonical &= name[j] != '-' && !islower((unsigned char)name[j]);
            }
            key[n] = '\0';
            k = key_find(key, n);
        }
        if (k == NULL || !canonical) {
            /* JOBQD_threads: this key's right spelling; else a near miss. */
            const struct config_key *alt = k ? k : n < sizeof(key) ? key_suggest(key, n) : NULL;
            snprintf(why, whylen, "%.*s: unknown variable%s%s%s", (int)(eq - e > 64 ? 64 : eq - e),
                     e,
                     alt ? " (did you mean " : " (jobqd reads no other " ENV_PREFIX "* variables)",
                     alt ? env_name(alt, eb, sizeof(eb)) : "", alt ? "?)" : "");
            return -EINVAL;
        }
        if (eq[1] == '\0')
            continue; /* empty means unset */
        out[(*nout)++] = (struct assign){k, eq + 1, e, (size_t)(eq - e)};
    }
    return 0;
}

static int
assign_apply(struct config *cfg, const struct assign *a, size_t n, const char *base, char *why,
             size_t whylen)
{
    int rc;

    for (size_t i = 0; i < n; i++) {
        if ((rc = key_set(cfg, a[i].key, a[i].value, base, why, whylen)) < 0) {
            if (rc != -EINVAL)
                return rc;
            if (a[i].from != NULL)
                why_prefix(why, whylen, "%.*s: ", (int)a[i].fromlen, a[i].from);
            else
                why_prefix(why, whylen, "--%s: ", a[i].key->name);
            return rc;
        }
    }
    return 0;
}

static char **
strv_dup(char **v, size_t n)
{
    char **out = calloc(n + 1, sizeof(*out));

    for (size_t i = 0; out != NULL && i < n; i++) {
        if ((out[i] = strdup(v[i])) == NULL) {
            strv_free(out, i);
            return NULL;
        }
    }
    return out;
}

/* Keeps copies of argv and the JOBQD_* entries of envp in cfg->src. */
static int
src_save(struct config_src *src, int argc, char **argv, char **envp, const char *cwd)
{
    size_t ne = 0, j = 0;
    char **env;

    src_clear(src); /* a second config_load replaces the first's */
    for (size_t i = 0; envp != NULL && envp[i] != NULL; i++)
        ne += strncmp(envp[i], ENV_PREFIX, strlen(ENV_PREFIX)) == 0;
    if ((env = calloc(ne + 1, sizeof(*env))) == NULL)
        return -ENOMEM;
    for (size_t i = 0; envp != NULL && envp[i] != NULL; i++) {
        if (strncmp(envp[i], ENV_PREFIX, strlen(ENV_PREFIX)) != 0)
            continue;
        if ((env[j++] = strdup(envp[i])) == NULL) {
            strv_free(env, j);
            return -ENOMEM;
        }
    }
    src->env = env;
    if ((src->argv = strv_dup(argv, (size_t)argc)) == NULL)
        return -ENOMEM;
    src->argc = argc;
    if ((src->cwd = strdup(cwd)) == NULL)
        return -ENOMEM;
    return 0;
}

static int
load(struct config *cfg, int argc, char **argv, char **envp, const char *cwd, char *why,
     size_t whylen)
{
    struct assign *flags = NULL, *env = NULL;
    size_t nflags, nenv, ne = 0;
    const struct assign *named = NULL;
    char *buf = NULL, *path = NULL;
    size_t len;
    int rc;

    for (size_t i = 0; envp != NULL && envp[i] != NULL; i++)
        ne++;
    flags = calloc((size_t)(argc > 0 ? argc : 1), sizeof(*flags));
    env = calloc(ne + 1, sizeof(*env));
    if (flags == NULL || env == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    rc = flags_scan(cfg, argc, argv, flags, &nflags, why, whylen);
    if (cfg->help || cfg->version) {
        rc = 0;
        goto out;
    }
    if (rc < 0 || (rc = env_scan(envp, env, &nenv, why, whylen)) < 0)
        goto out;

    /* The file named last by a flag, else by JOBQD_CONFIG. */
    for (size_t i = 0; i < nenv; i++)
        if (env[i].key->off == OFF(config_file))
            named = &env[i];
    for (size_t i = 0; i < nflags; i++)
        if (flags[i].key->off == OFF(config_file))
            named = &flags[i];
    if (named != NULL && *named->value != '\0') {
        if ((path = path_abs(named->value, cwd)) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        if ((rc = file_read(path, &buf, &len, why, whylen)) < 0 ||
            (rc = config_parse_buf(cfg, path, buf, len, why, whylen)) < 0) {
            if (rc == -EINVAL && buf == NULL) {
                if (named->from != NULL)
                    why_prefix(why, whylen, "%.*s: ", (int)named->fromlen, named->from);
                else
                    why_prefix(why, whylen, "--config: ");
            }
            goto out;
        }
    }
    if ((rc = assign_apply(cfg, env, nenv, cwd, why, whylen)) < 0 ||
        (rc = assign_apply(cfg, flags, nflags, cwd, why, whylen)) < 0)
        goto out;

    if (cfg->socket == NULL) {
        if (asprintf(&cfg->socket, "%s/jobq.sock", cfg->state_dir) < 0) {
            cfg->socket = NULL;
            rc = -ENOMEM;
            goto out;
        }
        if ((rc = check_socket(cfg, why, whylen)) < 0) {
            why_prefix(why, whylen,
                       "state-dir is too long for the default socket (set --socket): ");
            goto out;
        }
    }
out:
    free(buf);
    free(path);
    free(flags);
    free(env);
    return rc;
}

int
config_load(struct config *cfg, int argc, char **argv, char **envp, char *why, size_t whylen)
{
    char cwd[PATH_MAX];
    int rc;

    if (getcwd(cwd, sizeof(cwd)) == NULL) {
        rc = -errno;
        snprintf(why, whylen, "cannot find the current directory: %s", strerror(-rc));
        return rc;
    }
    if ((rc = load(cfg, argc, argv, envp, cwd, why, whylen)) < 0)
        return rc;
    return src_save(cfg->src, argc, argv, envp, cwd);
}

int
config_reload(const struct config *cur, struct config **out, char *why, size_t whylen)
{
    struct config_defaults d = {cur->src->def_threads, cur->src->def_state_dir};
    const struct config_src *src = cur->src;
    struct config *cfg = NULL;
    int rc;

    if ((rc = config_new(&d, &cfg)) < 0)
        goto out;
    if ((rc = load(cfg, src->argc, src->argv, src->env, src->cwd, why, whylen)) < 0)
        goto out;
    if ((rc = src_save(cfg->src, src->argc, src->argv, src->env, src->cwd)) < 0)
        goto out;
    *out = cfg;
    cfg = NULL; /* the caller owns it now */
out:
    config_free(cfg);
    return rc;
}

/* ---- output ----------------------------------------------------------- */

/* A growing string; on allocation failure it stays failed. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

__attribute__((format(printf, 2, 3))) static void
sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->oom)
        return;
    va_start(ap, fmt);
    n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if (b->p == NULL || b->len + (size_t)n >= b->cap) {
        size_t cap = (b->cap ? b->cap : 256);
        char *np;
        while (cap <= b->len + (size_t)n)
            cap *= 2;
        if ((np = realloc(b->p, cap)) == NULL) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

static int
sb_finish(struct sbuf *b, char **out)
{
    if (b->oom || b->p == NULL) {
        free(b->p);
        return -ENOMEM;
    }
    *out = b->p;
    return 0;
}

/* Appends text wrapped at 100 columns, continuation lines indented. */
static void
sb_wrap(struct sbuf *b, const char *text, size_t col, size_t indent)
{
    const char *p = text;

    while (*p) {
        const char *w = p;
        size_t n;
        while (*w && *w != ' ')
            w++;
        n = (size_t)(w - p);
        if (col > indent && col + 1 + n > 100) {
            sb_printf(b, "\n%*s", (int)indent, "");
            col = indent;
        } else if (col > indent) {
            sb_printf(b, " ");
            col++;
        }
        sb_printf(b, "%.*s", (int)n, p);
        col += n;
        for (p = w; *p == ' '; p++)
            ;
    }
    sb_printf(b, "\n");
}

int
config_usage(const struct config_defaults *d, char **out)
{
    struct sbuf b = {0};
    char text[1024];
    int threads = d && d->threads > 1 ? d->threads : 1;

    sb_printf(&b, "Usage: jobqd [--FLAG VALUE | --FLAG=VALUE]...\n\n");
    sb_wrap(&b,
            "The jobq daemon: runs the jobs that jobq(1) submits. Each flag is also a config file "
            "key (\"threads = 4\") and an environment variable (JOBQD_THREADS=4). A flag beats the "
            "environment, which beats the file, which beats the default. Keys marked [live] are "
            "applied again on SIGHUP; the others need a restart.",
            0, 0);
    sb_printf(&b, "\n");
    for (size_t i = 0; i < NKEYS; i++) {
        const struct config_key *k = &keys[i];
        char left[64];
        const char *def = k->def;
        char defbuf[32];
        size_t n;

        n = (size_t)snprintf(left, sizeof(left), "  --%s%s%s", k->name, *k->metavar ? " " : "",
                             k->metavar);
        if (k->off == OFF(threads)) {
            snprintf(defbuf, sizeof(defbuf), "%d here", threads);
            def = defbuf;
        } else if (k->off == OFF(state_dir)) {
            def = d && d->state_dir ? d->state_dir : STATE_DIR_DEFAULT;
        }
        snprintf(text, sizeof(text), "%s.%s%s%s%s", k->help, def && *def ? " Default: " : "",
                 def && *def ? def : "", def && *def ? "." : "",
                 k->flags & KEY_LIVE ? " [live]" : "");
        sb_printf(&b, "%s", left);
        if (n + 2 > 28) {
            sb_printf(&b, "\n%28s", "");
            n = 28;
        } else {
            sb_printf(&b, "%*s", (int)(28 - n), "");
            n = 28;
        }
        sb_wrap(&b, text, n, 28);
    }
    sb_printf(&b, "%-28s%s\n", "  --help", "print this help and exit");
    sb_printf(&b, "%-28s%s\n\n", "  --version", "print the version and exit");
    sb_wrap(
        &b,
        "DUR is 250ms, 30s, 5m, 2h, 1d, a sum like 1h30m, or plain seconds. SIZE is bytes or a "
        "number with k, M, G or T (1024-based; KiB, MiB, GiB and TiB too; kB, MB, GB and TB are "
        "1000-based). Booleans are true/false, yes/no, on/off or 1/0; a boolean flag alone "
        "means true.",
        0, 0);
    sb_printf(&b, "\n");
    sb_wrap(&b,
            "Signals: SIGTERM and SIGINT drain and exit 0; SIGHUP reloads the config file and "
            "reopens the log file.",
            0, 0);
    return sb_finish(&b, out);
}

/* Writes a value in config file syntax: quoted when it could be misread. */
static void
sb_value(struct sbuf *b, const char *s)
{
    if (*s != '\0' && strpbrk(s, "\"'\\ \t#") == NULL && !is_blank(s[strlen(s) - 1])) {
        sb_printf(b, "%s", s);
        return;
    }
    sb_printf(b, "\"");
    for (; *s; s++)
        sb_printf(b, "%s%c", *s == '"' || *s == '\\' ? "\\" : "", *s);
    sb_printf(b, "\"");
}

static void
sb_field(struct sbuf *b, const struct config *cfg, const struct config_key *k)
{
    const void *f = cfield(cfg, k);
    const struct config_addr *a;
    char buf[32];

    switch (k->type) {
    case CONFIG_STRING:
    case CONFIG_PATH:
        sb_value(b, *(char *const *)f ? *(char *const *)f : "");
        break;
    case CONFIG_INT:
        sb_printf(b, "%d", *(const int *)f);
        break;
    case CONFIG_MODE:
        sb_printf(b, "%04o", (unsigned)*(const int *)f);
        break;
    case CONFIG_BOOL:
        sb_printf(b, "%s", *(const bool *)f ? "true" : "false");
        break;
    case CONFIG_DURATION:
    case CONFIG_SIZE:
        sb_printf(b, "%s", exact_text(k, *(const int64_t *)f, buf, sizeof(buf)));
        break;
    case CONFIG_LEVEL:
        sb_printf(b, "%s", log_level_name(*(const enum log_level *)f));
        break;
    case CONFIG_FORMAT:
        sb_printf(b, "%s", log_format_name(*(const enum log_format *)f));
        break;
    case CONFIG_ADDR:
        a = f;
        if (a->host == NULL)
            sb_printf(b, "off");
        else
            sb_printf(b, strchr(a->host, ':') ? "[%s]:%d" : "%s:%d", a->host, a->port);
        break;
    case CONFIG_QUEUES:
        break; /* one line per queue, by the caller */
    }
}

int
config_dump(const struct config *cfg, char **out)
{
    struct sbuf b = {0};

    for (size_t i = 0; i < NKEYS; i++) {
        const struct config_key *k = &keys[i];
        if (k->flags & KEY_NOFILE)
            continue;
        if (k->type == CONFIG_QUEUES) {
            for (size_t q = 0; q < cfg->queues.n; q++) {
                char entry[JOBQ_NAME_MAX_BYTES + 16];
                snprintf(entry, sizeof(entry), "%s=%d", cfg->queues.v[q].name,
                         cfg->queues.v[q].concurrency);
                sb_printf(&b, "%s = ", k->name);
                sb_value(&b, entry);
                sb_printf(&b, "\n");
            }
            continue;
        }
        sb_printf(&b, "%s = ", k->name);
        sb_field(&b, cfg, k);
        sb_printf(&b, "\n");
    }
    return sb_finish(&b, out);
}

static bool
str_eq(const char *a, const char *b)
{
    return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

static bool
field_eq(const struct config *a, const struct config *b, const struct config_key *k)
{
    const void *fa = cfield(a, k), *fb = cfield(b, k);

    switch (k->type) {
    case CONFIG_STRING:
    case CONFIG_PATH:
        return str_eq(*(char *const *)fa, *(char *const *)fb);
    case CONFIG_INT:
    case CONFIG_MODE:
        return *(const int *)fa == *(const int *)fb;
    case CONFIG_BOOL:
        return *(const bool *)fa == *(const bool *)fb;
    case CONFIG_DURATION:
    case CONFIG_SIZE:
        return *(const int64_t *)fa == *(const int64_t *)fb;
    case CONFIG_LEVEL:
        return *(const enum log_level *)fa == *(const enum log_level *)fb;
    case CONFIG_FORMAT:
        return *(const enum log_format *)fa == *(const enum log_format *)fb;
    case CONFIG_ADDR:
        return str_eq(((const struct config_addr *)fa)->host,
                      ((const struct config_addr *)fb)->host) &&
               ((const struct config_addr *)fa)->port == ((const struct config_addr *)fb)->port;
    case CONFIG_QUEUES:
        /* Both lists are sorted by name. */
        if (a->queues.n != b->queues.n)
            return false;
        for (size_t i = 0; i < a->queues.n; i++)
            if (strcmp(a->queues.v[i].name, b->queues.v[i].name) != 0 ||
                a->queues.v[i].concurrency != b->queues.v[i].concurrency)
                return false;
        return true;
    }
    return false;
}

static void
name_append(char *buf, size_t len, const char *name)
{
    size_t n;

    if (buf == NULL || len == 0)
        return;
    n = strlen(buf);
    snprintf(buf + n, len - n, "%s%s", n ? " " : "", name);
}

int
config_diff(const struct config *a, const struct config *b, char *live, size_t livelen,
            char *restart, size_t restartlen)
{
    int n = 0;

    if (live != NULL && livelen > 0)
        live[0] = '\0';
    if (restart != NULL && restartlen > 0)
        restart[0] = '\0';
    for (size_t i = 0; i < NKEYS; i++) {
        if (field_eq(a, b, &keys[i]))
            continue;
        n++;
        if (keys[i].flags & KEY_LIVE)
            name_append(live, livelen, keys[i].name);
        else
            name_append(restart, restartlen, keys[i].name);
    }
    return n;
}
