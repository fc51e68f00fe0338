/*
 * cli — the jobq command line: the command table, global options, the
 * dispatch from a verb to its row, help, and the glue every verb uses to
 * call the daemon and report failures. main.c only gathers the process's
 * surroundings into a struct cli and calls cli_main.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "jobq/proto.h"

/* One row per verb, in the order `jobq help` lists them. */
static const struct cmd_entry *const cmd_table[] = {
    &cmd_submit_entry, &cmd_list_entry,  &cmd_show_entry,    &cmd_logs_entry,   &cmd_wait_entry,
    &cmd_cancel_entry, &cmd_retry_entry, &cmd_pause_entry,   &cmd_resume_entry, &cmd_stats_entry,
    &cmd_purge_entry,  &cmd_ping_entry,  &cmd_version_entry,
};

const struct cmd_entry *
cmd_find(const char *name)
{
    for (size_t i = 0; i < sizeof(cmd_table) / sizeof(cmd_table[0]); i++)
        if (strcmp(cmd_table[i]->name, name) == 0)
            return cmd_table[i];
    return NULL;
}

void
req_clear(struct req *r)
{
    if (r == NULL)
        return;
    cJSON_Delete(r->params);
    free(r->ids);
    memset(r, 0, sizeof(*r));
    r->timeout_ms = -1;
}

static const char help_overview[] =
    "usage: jobq [--socket PATH | --url URL [--token-file FILE]] [--json] COMMAND [options]\n"
    "            [ARG...]\n"
    "\n"
    "Submit commands to jobqd, the job-queue daemon, and follow them.\n"
    "\n"
    "commands:\n";

static const char help_rest[] =
    "  help [COMMAND]      this text, or a command's options\n"
    "\n"
    "options of every command:\n"
    "  --socket PATH       the daemon's socket (see below)\n"
    "  --url URL           a remote daemon's --http listener, http://HOST:PORT (see below)\n"
    "  --token-file FILE   the bearer token for --url (see below)\n"
    "  --json              print JSON instead of text\n"
    "  -h, --help          help; 'jobq help COMMAND' for a command's options\n"
    "  --version           print this client's version and exit\n"
    "\n"
    "socket: --socket PATH, else $JOBQ_SOCKET, else the first of these that exists:\n"
    "  ./var/jobq.sock                                        a checkout running 'make run'\n"
    "  ${XDG_STATE_HOME:-$HOME/.local/state}/jobq/jobq.sock   a per-user daemon\n"
    "  /run/jobq/jobq.sock                                    the system service (the fallback)\n"
    "\n"
    "remote: --url URL, else $JOBQ_URL unless --socket is given, reaches jobqd's POST /rpc\n"
    "  over HTTP with the token in --token-file FILE, else $JOBQ_TOKEN_FILE (jobqd\n"
    "  --http-token-file). Plain HTTP: across networks, through a tunnel or a TLS proxy.\n"
    "\n"
    "durations: 250ms, 30s, 5m, 2h, 1d, 1h30m, or plain seconds (90)\n"
    "times: RFC 3339 (2026-01-31T09:00:00Z or with an offset) or +DURATION from now (+10m)\n"
    "\n"
    "exit status:\n"
    "  0      success; for wait and submit --wait: every job succeeded\n"
    "  1-255  wait and submit --wait: the command's own exit status when it failed by\n"
    "         exiting non-zero (several ids: the first job that did not succeed)\n"
    "  124    ... the job failed by timeout or deadline\n"
    "  125    ... the job was canceled\n"
    "  126    ... its command could not be executed\n"
    "  127    ... its command was not found\n"
    "  128+N  ... it was killed by signal N\n"
    "  1      ... it failed with no status of its own (interrupted)\n"
    "  64     usage error: bad command line\n"
    "  65     request rejected as invalid (bad parameters, a state that does not allow it,\n"
    "         a bad --batch file, too large)\n"
    "  66     no such job\n"
    "  69     jobqd unreachable (not running, wrong socket or URL, hung up)\n"
    "  70     protocol or internal error\n"
    "  74     storage failure on the daemon, or writing the output failed\n"
    "  75     refused for now: queue full, shutting down, too many connections; retry\n"
    "  77     permission denied (another user's job, the socket's permissions, a bad or\n"
    "         missing token)\n"
    "  79     wait --timeout elapsed before the job(s) finished\n"
    "A command's own status can coincide with 64-79; 'jobq show ID' tells them apart.\n";

void
cli_help(FILE *out, const struct cmd_entry *cmd)
{
    if (cmd == NULL) {
        fputs(help_overview, out);
        for (size_t i = 0; i < sizeof(cmd_table) / sizeof(cmd_table[0]); i++) {
            char usage[128];
            snprintf(usage, sizeof(usage), "%s %s", cmd_table[i]->name, cmd_table[i]->args);
            if (strlen(usage) > 18)
                fprintf(out, "  %s\n  %-18s  %s\n", usage, "", cmd_table[i]->summary);
            else
                fprintf(out, "  %-18s  %s\n", usage, cmd_table[i]->summary);
        }
        fputs(help_rest, out);
        return;
    }
    fprintf(out, "usage: jobq %s%s%s\n\n%s\n", cmd->name, cmd->args[0] != '\0' ? " " : "",
            cmd->args, cmd->summary);
    fprintf(out, "\noptions:\n%s", cmd->help);
    fputs("  --json              print JSON instead of text\n"
          "  --socket PATH       the daemon's socket (see 'jobq help')\n"
          "  --url URL           a remote daemon, http://HOST:PORT (see 'jobq help')\n"
          "  --token-file FILE   the bearer token for --url\n"
          "  -h, --help          this help\n",
          out);
}

/* Global options come before the command; each is also accepted after it. */
int
cli_parse(struct cli *c, int argc, char **argv, struct req *r, char *why, size_t whylen)
{
    const struct cmd_entry *cmd;
    int i;

    memset(r, 0, sizeof(*r));
    r->timeout_ms = -1;
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            c->json = true;
        } else if (strcmp(a, "--socket") == 0) {
            if (++i == argc) {
                snprintf(why, whylen, "--socket needs a value (see 'jobq help')");
                return -EINVAL;
            }
            c->socket_flag = argv[i];
        } else if (strncmp(a, "--socket=", 9) == 0) {
            c->socket_flag = a + 9;
        } else if (strcmp(a, "--url") == 0 || strcmp(a, "--token-file") == 0) {
            if (++i == argc) {
                snprintf(why, whylen, "%s needs a value (see 'jobq help')", a);
                return -EINVAL;
            }
            *(a[2] == 'u' ? &c->url_flag : &c->token_file_flag) = argv[i];
        } else if (strncmp(a, "--url=", 6) == 0) {
            c->url_flag = a + 6;
        } else if (strncmp(a, "--token-file=", 13) == 0) {
            c->token_file_flag = a + 13;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            r->help = true;
            return 0;
        } else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            r->cmd = &cmd_version_entry;
            r->client_only = true;
            return 0;
        } else {
            snprintf(why, whylen, "unknown option '%s' (see 'jobq help')", a);
            return -EINVAL;
        }
    }
    if (i == argc) {
        snprintf(why, whylen, "no command given (see 'jobq help')");
        return -EINVAL;
    }
    if (strcmp(argv[i], "help") == 0) {
        r->help = true;
        /* "jobq help help" is the general help, as "jobq help". */
        if (i + 1 < argc && strcmp(argv[i + 1], "help") != 0 &&
            (r->cmd = cmd_find(argv[i + 1])) == NULL) {
            snprintf(why, whylen, "unknown command '%s' (see 'jobq help')", argv[i + 1]);
            return -EINVAL;
        }
        return 0;
    }
    if ((cmd = cmd_find(argv[i])) == NULL) {
        snprintf(why, whylen, "unknown command '%s' (see 'jobq help')", argv[i]);
        return -EINVAL;
    }
    r->cmd = cmd;
    return cmd->parse(c, r, argc - i, argv + i, why, whylen);
}

int
cli_errorf(struct cli *c, int code, const char *fmt, ...)
{
    va_list ap;

    fputs("jobq: ", c->err);
    va_start(ap, fmt);
    vfprintf(c->err, fmt, ap);
    va_end(ap);
    fputc('\n', c->err);
    fflush(c->err);
    return code;
}

int
cli_fail(struct cli *c, int rc, const struct rpc_error *e)
{
    char msg[1024];
    int code;

    if (rc == -EREMOTEIO && e != NULL) {
        errmsg_format(c->verb != NULL ? c->verb : "jobq", e, msg, sizeof(msg));
        code = errmsg_exit_code(e->code);
    } else if (c->url != NULL) {
        const char *reason, *detail;
        int status = rpc_http_status(c->rpc, &reason, &detail);
        code = errmsg_http(rc, c->url, status, reason, detail, msg, sizeof(msg));
    } else {
        code = errmsg_transport(rc, c->socket_path, c->socket_fallback, msg, sizeof(msg));
    }
    return cli_errorf(c, code, "%s", msg);
}

static bool
given(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* --url, else $JOBQ_URL unless --socket: an HTTP transport with the token
 * of --token-file, else $JOBQ_TOKEN_FILE. */
static int
connect_url(struct cli *c, const char *url)
{
    const char *file = given(c->token_file_flag) ? c->token_file_flag : c->env_token_file;
    char why[512], *token = NULL;
    size_t len = 0;
    int rc;

    if (given(file) && (rc = rpc_token_read(file, &token, &len)) < 0)
        return cli_errorf(c, EXIT_DENIED, "cannot read the token file %s: %s (see --token-file)",
                          file,
                          rc == -EINVAL     ? "it holds no token (one line of visible ASCII)"
                          : rc == -EMSGSIZE ? "too long for a token"
                                            : strerror(-rc));
    rc = rpc_open_url(url, token, len, &c->rpc, why, sizeof(why));
    if (token != NULL) {
        explicit_bzero(token, len);
        free(token);
    }
    if (rc == -EINVAL)
        return cli_errorf(c, EXIT_USAGE, "--url %s: %s", url, why);
    if (rc < 0)
        return cli_errorf(c, EXIT_PROTOCOL, "%s", strerror(-rc));
    c->url = url;
    return 0;
}

int
cli_connect(struct cli *c)
{
    struct rpc_where w = {c->socket_flag, c->env_socket, c->env_xdg_state, c->env_home};
    int rc;

    if (c->rpc != NULL)
        return 0;
    if (given(c->url_flag) && given(c->socket_flag))
        return cli_errorf(c, EXIT_USAGE,
                          "--socket and --url name two different daemons; give one of them");
    if (given(c->url_flag))
        return connect_url(c, c->url_flag);
    if (!given(c->socket_flag) && given(c->env_url))
        return connect_url(c, c->env_url);
    if ((rc = rpc_socket_path(&w, c->socket_path, sizeof(c->socket_path), &c->socket_fallback)) < 0)
        return cli_errorf(c, EXIT_USAGE, "the socket path is too long (over %zu bytes)",
                          sizeof(c->socket_path) - 1);
    if ((rc = rpc_connect(c->socket_path, &c->rpc)) < 0)
        return cli_fail(c, rc, NULL);
    return 0;
}

int
cli_call(struct cli *c, const char *method, cJSON *params, cJSON **result)
{
    struct rpc_error e;
    int rc;

    if ((rc = cli_connect(c)) != 0) {
        cJSON_Delete(params);
        return rc;
    }
    if ((rc = rpc_call(c->rpc, method, params, result, &e)) < 0) {
        rc = cli_fail(c, rc, &e);
        rpc_error_clear(&e);
        return rc;
    }
    return 0;
}

int
cli_main(struct cli *c, int argc, char **argv)
{
    struct req r;
    char why[512];
    int code;

    why[0] = '\0';
    if ((code = cli_parse(c, argc, argv, &r, why, sizeof(why))) < 0) {
        req_clear(&r);
        if (code != -EINVAL)
            return cli_errorf(c, EXIT_PROTOCOL, "%s", strerror(-code));
        return cli_errorf(c, EXIT_USAGE, "%s", why);
    }
    if (r.help) {
        cli_help(c->out, r.cmd);
        req_clear(&r);
        return EXIT_OK;
    }
    c->verb = r.cmd->name;
    code = r.cmd->run(c, &r);
    req_clear(&r);
    rpc_free(c->rpc);
    c->rpc = NULL;
    if (fflush(c->out) != 0 && code == EXIT_OK)
        code = cli_errorf(c, EXIT_STORAGE, "writing the output: %s", strerror(errno));
    return code;
}
