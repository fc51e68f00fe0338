/*
 * client — what the verbs of the jobq command-line client share: the
 * invocation context (struct cli: the process's surroundings and the global
 * options), the parsed request (struct req), the command table row (struct
 * cmd_entry, one per verb, as tmux's cmd_entry), the option parser and the
 * exit codes. Private to client/.
 *
 * A verb is two functions. parse turns argv into a request and touches
 * nothing outside its arguments, so tests check argv -> JSON directly. run
 * performs the request through rpc.c, prints, and returns the exit code.
 */
#ifndef JOBQ_CLIENT_H
#define JOBQ_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "rpc.h"

/* Exit codes. The job outcomes are those of `wait` and `submit --wait`,
 * modeled on timeout(1) and the shell; the client's own failures use
 * sysexits(3) numbers so they sit apart from the usual command statuses. */
enum exit_code {
    EXIT_OK = 0,
    EXIT_JOB_FAILED = 1,       /* failed with no status of its own (interrupted) */
    EXIT_USAGE = 64,           /* bad command line */
    EXIT_INVALID = 65,         /* rejected: invalid_params, conflict, too_large, bad batch */
    EXIT_NOJOB = 66,           /* not_found */
    EXIT_UNREACHABLE = 69,     /* cannot connect, or the daemon hung up */
    EXIT_PROTOCOL = 70,        /* protocol or internal error */
    EXIT_STORAGE = 74,         /* storage_error on the daemon, or a local I/O error */
    EXIT_TEMPFAIL = 75,        /* queue_full, shutting_down, too_many_connections */
    EXIT_DENIED = 77,          /* permission_denied, or the socket's permissions */
    EXIT_WAIT_TIMEOUT = 79,    /* wait --timeout elapsed first */
    EXIT_JOB_TIMEOUT = 124,    /* failed by timeout or deadline */
    EXIT_JOB_CANCELED = 125,   /* canceled */
    EXIT_JOB_NOEXEC = 126,     /* could not be executed */
    EXIT_JOB_NOTFOUND = 127,   /* command not found */
    EXIT_JOB_SIGNAL_BASE = 128 /* + N: killed by signal N */
};

/* The process's surroundings (filled by main.c, or by a test) and the
 * global options. Strings are borrowed for the whole run. */
struct cli {
    const char *socket_flag;     /* --socket, or NULL */
    const char *env_socket;      /* $JOBQ_SOCKET, or NULL */
    const char *url_flag;        /* --url, or NULL */
    const char *env_url;         /* $JOBQ_URL, or NULL */
    const char *token_file_flag; /* --token-file, or NULL */
    const char *env_token_file;  /* $JOBQ_TOKEN_FILE, or NULL */
    const char *env_xdg_state;   /* $XDG_STATE_HOME, or NULL */
    const char *env_home;        /* $HOME, or NULL */
    char *const *environ;        /* the environment, for `--env K`; may be NULL */
    const char *cwd;             /* current directory; NULL if unknown */
    int64_t now_ms;              /* wall clock at start, for +DUR and ages */
    size_t columns;              /* table width */
    FILE *in, *out, *err;
    bool json; /* --json */
    /* Set by cli_connect; rpc is owned (rpc_free). */
    struct rpc *rpc;
    char socket_path[4096];
    bool socket_fallback; /* nothing in the default chain existed */
    const char *url;      /* set by cli_connect when jobqd is reached over HTTP */
    const char *verb;     /* the verb being run, for messages */
};

/* A parsed command line. Owned by whoever called cli_parse (req_clear). */
struct req {
    const struct cmd_entry *cmd;
    cJSON *params; /* the request's params (owned) */
    bool help;     /* --help: print the verb's help, run nothing */
    /* Client-side settings a verb's parse leaves for its run. */
    bool wait;          /* submit --wait */
    bool follow;        /* logs --follow */
    const char *batch;  /* submit --batch: a path or "-", borrowed from argv */
    int64_t timeout_ms; /* wait --timeout; -1 for none */
    int64_t limit;      /* list --limit; 0 for all */
    int64_t *ids;       /* show's and wait's ids (owned) */
    size_t nids;
    bool client_only; /* version: the client's own only (jobq --version) */
};

/* NULL-safe; frees what req owns and zeroes it. */
void req_clear(struct req *r);

/* One row of the command table. */
struct cmd_entry {
    const char *name;
    const char *args;    /* usage after the verb: "ID... [--timeout DUR]" */
    const char *summary; /* one line for `jobq help` */
    const char *help;    /* the verb's options, one per line, for `jobq help VERB` */
    /* Borrows argv (argv[0] is the verb); fills r. 0, or -EINVAL with why. */
    int (*parse)(struct cli *c, struct req *r, int argc, char **argv, char *why, size_t whylen);
    /* Returns an exit code; prints its own error line. */
    int (*run)(struct cli *c, struct req *r);
};

/* Returns the row for name, or NULL. Borrowed from a static table. */
const struct cmd_entry *cmd_find(const char *name);

/*
 * Parses a whole command line (argv[0] is the program) into r: global
 * options, the verb, its arguments. Returns 0, or -EINVAL with a one-line
 * reason in why (the caller prints "jobq: " why and exits EXIT_USAGE). An
 * empty command line or `help` set r->help (with r->cmd NULL for the
 * overview). Borrows argv for as long as r lives.
 */
int cli_parse(struct cli *c, int argc, char **argv, struct req *r, char *why, size_t whylen);
/* Parses, runs and returns the exit code. Frees c->rpc. */
int cli_main(struct cli *c, int argc, char **argv);
/* Prints the overview (cmd NULL) or a verb's help. */
void cli_help(FILE *out, const struct cmd_entry *cmd);

/* ---- option parsing ------------------------------------------------ */

/* One option of a verb. The common options (--json, --socket, --help)
 * come from OPT_COMMON at the end of every table. */
struct opt {
    const char *name; /* long name, without "--"; NULL ends the table */
    char shortname;   /* 0 if none */
    bool has_arg;
    int key;
};

enum { OPT_JSON = 1000, OPT_SOCKET, OPT_HELP, OPT_URL, OPT_TOKEN_FILE };

#define OPT_COMMON                                                                                 \
    {"json", 0, false, OPT_JSON}, {"socket", 0, true, OPT_SOCKET}, {"url", 0, true, OPT_URL},      \
        {"token-file", 0, true, OPT_TOKEN_FILE}, {"help", 'h', false, OPT_HELP},                   \
    {                                                                                              \
        NULL, 0, false, 0                                                                          \
    }

/* Walks a verb's arguments: options anywhere ("--opt VAL", "--opt=VAL",
 * "-x VAL"), positionals collected in pos; "--" ends the options. With
 * stop_at_positional the first positional ends them too (a command's own
 * options belong to it). */
struct optiter {
    int argc;
    char **argv;
    int i;
    bool stop_at_positional;
    bool done;
    const char *verb;
    char **pos; /* owned array of borrowed strings */
    size_t npos;
    char name[64]; /* the option being parsed, as "--name", for messages */
};

/* Borrows argv (argv[0] is the verb). 0 or -ENOMEM. */
int optiter_init(struct optiter *it, int argc, char **argv, bool stop_at_positional);
/* Returns the next option's key with *arg set (NULL for a flag), 0 at the
 * end, or -EINVAL with why (unknown option, missing value). */
int optiter_next(struct optiter *it, const struct opt *opts, const char **arg, char *why,
                 size_t whylen);
void optiter_free(struct optiter *it);
/* Handles OPT_JSON, OPT_SOCKET, OPT_URL, OPT_TOKEN_FILE and OPT_HELP;
 * returns 1 if key was one. */
int opt_common(struct cli *c, struct req *r, int key, const char *arg);

/* Value parsers for option arguments; why names the option (opt). */
int opt_duration(const char *opt, const char *arg, int64_t *ms, char *why, size_t whylen);
int opt_time(const struct cli *c, const char *opt, const char *arg, int64_t *unix_ms, char *why,
             size_t whylen);
int opt_int(const char *opt, const char *arg, int64_t min, int64_t max, int64_t *v, char *why,
            size_t whylen);
/* A job id: a positive integer. */
int opt_id(const char *arg, int64_t *id, char *why, size_t whylen);
/* Parses "a,b" state names into a new JSON array (appended to *arr, created
 * if NULL). terminal_only restricts to succeeded, failed, canceled. */
int opt_states(const char *opt, const char *arg, bool terminal_only, cJSON **arr, char *why,
               size_t whylen);

/* ---- running ---------------------------------------------------------- */

/* Connects to the daemon if not yet connected. Returns 0 or an exit code
 * after printing why. */
int cli_connect(struct cli *c);
/* Calls method with params (taken) and returns 0 with owned *result
 * (cJSON_Delete), or an exit code after printing one line on c->err. */
int cli_call(struct cli *c, const char *method, cJSON *params, cJSON **result);
/* Prints the line for a failed call (transport rc < 0 or an error reply)
 * and returns the exit code. */
int cli_fail(struct cli *c, int rc, const struct rpc_error *e);
/* Prints "jobq: " and the message on c->err; returns code. */
int cli_errorf(struct cli *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Exit code for a JSON-RPC error code. */
int errmsg_exit_code(int code);
/* Writes the one-line message (without "jobq: ") for an error reply. verb
 * gives context ("retry" in "cannot retry job 4: it is running"). */
void errmsg_format(const char *verb, const struct rpc_error *e, char *buf, size_t len);
/* Writes the message for a transport failure rc on socket path; fallback
 * when the path was the last resort of the default chain. Returns the
 * exit code. */
int errmsg_transport(int rc, const char *path, bool fallback, char *buf, size_t len);
/* The same for the HTTP transport to url: status, reason and detail as
 * rpc_http_status gives them. */
int errmsg_http(int rc, const char *url, int status, const char *reason, const char *detail,
                char *buf, size_t len);

/* The exit code a finished (or unfinished) job object stands for, and the
 * line that explains it (empty for success). */
int job_exit_code(const cJSON *job);
void job_exit_reason(const cJSON *job, char *buf, size_t len);

/* ---- verbs ------------------------------------------------------------ */

/* One entry per verb, each defined in its own file (tmux's cmd_*_entry). */
extern const struct cmd_entry cmd_submit_entry;
extern const struct cmd_entry cmd_list_entry;
extern const struct cmd_entry cmd_show_entry;
extern const struct cmd_entry cmd_logs_entry;
extern const struct cmd_entry cmd_wait_entry;
extern const struct cmd_entry cmd_cancel_entry;
extern const struct cmd_entry cmd_retry_entry;
extern const struct cmd_entry cmd_pause_entry;
extern const struct cmd_entry cmd_resume_entry;
extern const struct cmd_entry cmd_stats_entry;
extern const struct cmd_entry cmd_purge_entry;
extern const struct cmd_entry cmd_ping_entry;
extern const struct cmd_entry cmd_version_entry;

/* Builds the params of a batch from text holding JSON object specs (and
 * arrays of them) separated by whitespace, NDJSON included, defaults (an
 * object, may be NULL) merged in for fields a spec lacks. Returns 0 and
 * owned *params; -EINVAL with why ("line 3: ...", the line a bad spec
 * starts on). *lines receives the line number where each spec starts
 * (owned, free()). Borrows text. */
int submit_batch_params(const struct cli *c, const char *text, size_t len, const cJSON *defaults,
                        cJSON **params, int **lines, char *why, size_t whylen);
/* Prints jobs (a JSON array of job objects) as the list table. */
void list_print_table(const struct cli *c, const cJSON *jobs, FILE *out);
/* Prints a job object (from `get`) for people. */
void show_print_job(const struct cli *c, const cJSON *job, FILE *out);
/* Prints a stats result for people. */
void stats_print(const struct cli *c, const cJSON *stats, FILE *out);
/* Waits for n ids (any number: calls go in chunks of JOBQ_CALL_MAX_IDS)
 * and returns the exit code as `wait` does, after printing the line that
 * explains a failed job or the timeout. When result is not NULL and the
 * calls succeeded, *result is the owned (cJSON_Delete) merged reply
 * {"jobs": [...], "timed_out": bool}. timeout_ms -1 for none. Borrows
 * ids. */
int wait_ids(struct cli *c, const int64_t *ids, size_t n, int64_t timeout_ms, cJSON **result);

/* Ids accepted by one wait, cancel or retry call (docs/PROTOCOL.md). The
 * daemon enforces the same number; it belongs in include/jobq/limits.h
 * once the server defines it there. */
#define JOBQ_CALL_MAX_IDS 1000

#endif
