/*
 * config — jobqd's settings. One table in config.c lists every key (name,
 * type, default, range, help, where the value lives in struct config), as
 * redis's configs[] does: a new key is one row, and the flags, the config
 * file, the environment, --help and the dump all follow from it.
 *
 * Sources, highest precedence first:
 *   flags        --threads 4, --threads=4, --foreground (a bool alone is true)
 *   environment  JOBQD_THREADS=4 (the name upper-cased, dashes as
 *                underscores); an empty value counts as unset
 *   config file  "threads = 4" lines, named by --config or JOBQD_CONFIG
 *   defaults     the table's
 * `queue` (NAME=N, per-queue concurrency) is repeatable and merges by
 * name across sources: --queue build=2 overrides the file's build=5 and
 * keeps its deploy=1. Commas separate several entries in one value
 * (JOBQD_QUEUE=build=2,deploy=1).
 *
 * Config file syntax: one `key = value` per line, the names of the flags
 * without the dashes; blank lines and lines starting with # are ignored
 * (# after a value is part of the value); a value may be wrapped in
 * "double quotes" (with \" and \\ escapes) or 'single quotes' (literal).
 * Relative paths are resolved against the directory the daemon started in
 * (flags, environment) or the config file's directory (file), so they
 * survive a later chdir.
 *
 * Every bad value, line or name is -EINVAL with a reason that names its
 * source exactly: "/etc/jobq/jobqd.conf:12: key 'kill-grace': bad duration
 * \"5x\": ...", "JOBQD_THREADS: ...", "--threads: ...". Unknown keys are
 * errors in every source (with a "did you mean" for near misses).
 */
#ifndef JOBQ_CONFIG_H
#define JOBQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jobq/log.h"

/* What some defaults depend on, supplied by main so tests can fake them. */
struct config_defaults {
    /* Default --threads: main passes rt_cpu_count(NULL) (affinity and the
     * cgroup CPU quota). Values below 1 mean 1. */
    int threads;
    /* Default --state-dir; NULL means "/var/lib/jobq". */
    const char *state_dir;
};

/* One --queue NAME=N. */
struct config_queue {
    char *name; /* owned by the config */
    int concurrency;
};

/* --http ADDR:PORT. host NULL means off. */
struct config_addr {
    char *host; /* "127.0.0.1", "::1" (brackets removed), "0.0.0.0" for ":PORT" */
    int port;
};

struct config_src; /* private to config.c: the sources, kept for reload */

/*
 * The settings, as plain data. An exception to "struct bodies stay in the
 * .c": config has no behaviour and no invariant beyond what config_load
 * checked, every subsystem reads a few fields of it, and twenty accessors
 * would add nothing. Read-only outside config.c; owned by whoever got it
 * from config_new or config_reload (config_free).
 */
struct config {
    char *config_file;         /* config: absolute path, NULL = no file */
    char *state_dir;           /* state-dir: absolute */
    char *socket;              /* socket: absolute; STATE_DIR/jobq.sock unless set */
    int socket_mode;           /* socket-mode: permissions of the socket file */
    int threads;               /* threads */
    int concurrency;           /* concurrency: live */
    int max_queued;            /* max-queued: live */
    int64_t shutdown_grace_ms; /* shutdown-grace: live (read when the drain starts) */
    int64_t request_timeout_ms;
    int max_connections;
    int max_connections_per_uid; /* root and jobqd's own uid are exempt */
    struct config_addr http;
    char *http_token_file;      /* http-token-file: absolute, NULL = no /rpc; live */
    enum log_level log_level;   /* live */
    enum log_format log_format; /* live */
    char *log_file;             /* log-file: absolute, NULL = stderr; live */
    int64_t log_cap_bytes;      /* log-cap */
    int64_t kill_grace_ms;
    bool foreground;
    struct {
        struct config_queue *v; /* sorted by name */
        size_t n;
    } queues;    /* queue: live */
    char *store; /* store: a postgresql:// URL; NULL: SQLite in state-dir */

    /* --help / --version were given: main prints config_usage() or the
     * version and exits 0. config_load stops reading sources when it sees
     * either. Not keys. */
    bool help;
    bool version;

    struct config_src *src;
};

/* A config holding the defaults. Returns owned *out (config_free). Borrows
 * d (NULL: threads 1, state-dir /var/lib/jobq). */
int config_new(const struct config_defaults *d, struct config **out);
/* NULL-safe. */
void config_free(struct config *cfg);

/*
 * Fills cfg (fresh from config_new) from the sources: argv (argv[0] is the
 * program and is skipped; nothing but --flags may follow), envp (the
 * JOBQD_* entries of a NULL-terminated "NAME=value" array; NULL: none) and
 * the config file they name. -EINVAL with the reason in why on the first
 * bad flag, variable, line or value; -ENOMEM. Copies what config_reload
 * needs. Borrows argv and envp.
 */
int config_load(struct config *cfg, int argc, char **argv, char **envp, char *why, size_t whylen);

/*
 * For SIGHUP: builds a new config from cur's flags and environment (as
 * config_load saw them) and the config file read again. Returns owned *out
 * (config_free); cur is untouched, so on error the caller keeps it. The
 * caller swaps and applies the live keys (config_key_live); the others
 * keep their old value until a restart (config_diff names them). Borrows
 * cur.
 */
int config_reload(const struct config *cur, struct config **out, char *why, size_t whylen);

/*
 * Parses a config file held in memory (len bytes, NULs and all) into cfg,
 * line by line, later lines winning. name is the file's name in messages
 * and its directory the base of relative paths. The entry point for fuzzing
 * (with config_new and config_free around it). Borrows everything.
 */
int config_parse_buf(struct config *cfg, const char *name, const char *buf, size_t len, char *why,
                     size_t whylen);

/* 1 if key applies on SIGHUP without a restart, 0 if it needs one, -ENOENT
 * if there is no such key. Borrows name. */
int config_key_live(const char *name);

/*
 * Compares two configs key by key. Writes the names of the keys that differ
 * into live (applied on reload) and restart (need a restart), separated by
 * spaces ("" if none; either buffer may be NULL). Returns how many keys
 * differ. Borrows a and b.
 */
int config_diff(const struct config *a, const struct config *b, char *live, size_t livelen,
                char *restart, size_t restartlen);

/* The --help text, generated from the table, with the defaults d yields.
 * Returns owned *out (free). Borrows d. */
int config_usage(const struct config_defaults *d, char **out);

/* Every key's effective value as config file lines ("threads = 4\n"),
 * which config_parse_buf reads back to the same values. Returns owned *out
 * (free). Borrows cfg. */
int config_dump(const struct config *cfg, char **out);

/* Parses a size: bytes, or a number (fractions allowed) with a unit: k, M,
 * G, T (1024-based, also KiB, MiB, GiB, TiB) or kB, MB, GB, TB (1000-based);
 * units are case-insensitive. -EINVAL with a reason. Borrows s. */
int config_parse_size(const char *s, int64_t *bytes, char *why, size_t whylen);

#endif
