/*
 * The jobq client without a daemon: command lines into requests, the
 * socket default chain, reply parsing and pipelining over a real socket,
 * the HTTP transport against a child playing the server, tables and
 * shortening, error messages and exit codes.
 *
 * The client's objects are in no library the test rule links, so its
 * sources (all but main.c) are compiled into this test; their static
 * names are unique across client/ for that reason, and a new .c file in
 * client/ gets its #include here.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../client/cli.c"
#include "../client/control.c"
#include "../client/errmsg.c"
#include "../client/fmt.c"
#include "../client/info.c"
#include "../client/list.c"
#include "../client/logs.c"
#include "../client/opt.c"
#include "../client/rpc.c"
#include "../client/show.c"
#include "../client/submit.c"
#include "../client/wait.c"

/* 2026-12-04T16:18:16.123Z */
#define NOW_MS 1796401096123LL

static char *test_env[] = {"TOKEN=s3cret", "HOME=/home/ann", NULL};

static struct cli
test_cli(void)
{
    struct cli c = {
        .cwd = "/home/ann/src",
        .now_ms = NOW_MS,
        .columns = 80,
        .environ = test_env,
        .in = stdin,
        .out = stdout,
        .err = stderr,
    };
    return c;
}

/* Parses argv (NULL-terminated, argv[0] "jobq") into r. */
static int
parse_argv(struct cli *c, struct req *r, char **argv, char *why, size_t whylen)
{
    int argc = 0;

    while (argv[argc] != NULL)
        argc++;
    why[0] = '\0';
    return cli_parse(c, argc, argv, r, why, whylen);
}

/* The params of r as compact JSON; static buffer. */
static const char *
params_of(const struct req *r)
{
    static char buf[4096];
    char *s = cJSON_PrintUnformatted(r->params);
    snprintf(buf, sizeof(buf), "%s", s != NULL ? s : "(null)");
    free(s);
    return buf;
}

#define PARSE_OK(c, r, ...)                                                                        \
    do {                                                                                           \
        char *argv_[] = {"jobq", __VA_ARGS__, NULL};                                               \
        char why_[512];                                                                            \
        int rc_ = parse_argv((c), (r), argv_, why_, sizeof(why_));                                 \
        if (rc_ != 0)                                                                              \
            fail_msg("parse failed: %s", why_);                                                    \
    } while (0)

/* Expects a usage error whose message is exactly want. */
#define PARSE_FAILS(want, ...)                                                                     \
    do {                                                                                           \
        struct cli c_ = test_cli();                                                                \
        struct req r_;                                                                             \
        char *argv_[] = {"jobq", __VA_ARGS__, NULL};                                               \
        char why_[512];                                                                            \
        assert_int_equal(parse_argv(&c_, &r_, argv_, why_, sizeof(why_)), -EINVAL);                \
        assert_string_equal(why_, (want));                                                         \
        req_clear(&r_);                                                                            \
    } while (0)

/* ---- argv -> request ---------------------------------------------------- */

static void
test_submit_builds_spec_with_protocol_field_names(void **state)
{
    struct cli c = test_cli();
    struct req r;

    PARSE_OK(&c, &r, "submit", "--queue", "mail", "--name", "nightly", "--priority", "-5",
             "--attempts", "3", "--backoff", "2s:1m", "--timeout", "30s", "--deadline",
             "2026-12-05T00:00:00Z", "--delay", "90", "--unique", "k1", "--env", "A=1", "--env",
             "TOKEN", "--cwd", "/tmp", "--", "echo", "hi there");
    assert_string_equal(r.cmd->name, "submit");
    assert_string_equal(
        params_of(&r),
        "{\"command\":[\"echo\",\"hi there\"],\"queue\":\"mail\",\"name\":\"nightly\","
        "\"priority\":-5,\"max_attempts\":3,\"backoff_base_ms\":2000,\"backoff_max_ms\":60000,"
        "\"timeout_ms\":30000,\"deadline\":\"2026-12-05T00:00:00.000Z\",\"delay_ms\":90000,"
        "\"unique_key\":\"k1\",\"env\":[\"A=1\",\"TOKEN=s3cret\"],\"cwd\":\"/tmp\"}");
    assert_false(r.wait);
    req_clear(&r);
}

static void
test_submit_minimal_runs_in_current_directory(void **state)
{
    struct cli c = test_cli();
    struct req r;

    PARSE_OK(&c, &r, "submit", "--", "true");
    assert_string_equal(params_of(&r), "{\"command\":[\"true\"],\"cwd\":\"/home/ann/src\"}");
    req_clear(&r);
}

static void
test_submit_command_keeps_its_own_options(void **state)
{
    struct cli c = test_cli();
    struct req r;

    PARSE_OK(&c, &r, "submit", "--wait", "ls", "-l", "--json");
    assert_string_equal(params_of(&r),
                        "{\"command\":[\"ls\",\"-l\",\"--json\"],\"cwd\":\"/home/ann/src\"}");
    assert_true(r.wait);
    assert_false(c.json);
    req_clear(&r);
}

static void
test_submit_times_relative_and_at(void **state)
{
    struct cli c = test_cli();
    struct req r;
    char want[256], d[40], a[40];

    PARSE_OK(&c, &r, "submit", "--deadline", "+1h", "--at", "+10m", "--cwd", "sub/dir", "x");
    snprintf(want, sizeof(want),
             "{\"command\":[\"x\"],\"deadline\":\"%s\",\"run_at\":\"%s\","
             "\"cwd\":\"/home/ann/src/sub/dir\"}",
             time_format_rfc3339(NOW_MS + 3600000, d, sizeof(d)),
             time_format_rfc3339(NOW_MS + 600000, a, sizeof(a)));
    assert_string_equal(params_of(&r), want);
    req_clear(&r);
}

static void
test_submit_usage_errors_say_what_is_wrong(void **state)
{
    PARSE_FAILS("--timeout: bad duration \"5x\": unit must be ms, s, m, h or d", "submit",
                "--timeout", "5x", "--", "true");
    PARSE_FAILS("submit: no command given; usage: jobq submit [options] -- CMD [ARG...]", "submit",
                "--queue", "q");
    PARSE_FAILS("--at and --delay exclude each other: give one start time", "submit", "--at", "+1m",
                "--delay", "5s", "true");
    PARSE_FAILS("--attempts: expected an integer from 1 to 1000, got \"0\"", "submit", "--attempts",
                "0", "true");
    PARSE_FAILS("--backoff: the maximum (1s) is below the base (5s)", "submit", "--backoff",
                "5s:1s", "true");
    PARSE_FAILS("--env: NOPE is not set here; give its value as NOPE=VALUE", "submit", "--env",
                "NOPE", "true");
    PARSE_FAILS("--env: expected NAME=VALUE, got \"=x\"", "submit", "--env", "=x", "true");
    PARSE_FAILS("submit: unknown option '--queu' (see 'jobq help submit')", "submit", "--queu", "q",
                "true");
    PARSE_FAILS("submit: --timeout needs a value (see 'jobq help submit')", "submit", "--timeout");
    PARSE_FAILS("--deadline: bad time \"tomorrow\": expected RFC 3339 (2026-01-31T09:00:00Z) or "
                "+DURATION (+10m)",
                "submit", "--deadline", "tomorrow", "true");
    PARSE_FAILS("submit: --batch takes the jobs from f.ndjson, not from the command line ('x')",
                "submit", "--batch", "f.ndjson", "x");
}

static void
test_submit_batch_options_become_defaults(void **state)
{
    struct cli c = test_cli();
    struct req r;
    cJSON *params = NULL;
    int *lines = NULL;
    char why[256];
    const char *text = "{\"command\":[\"a\"]}\n"
                       "\n"
                       "  \n"
                       "{\"command\":[\"b\"],\"queue\":\"own\",\"cwd\":\"rel\"}\r\n"
                       "{\"command\":[\"c\"],\"cwd\":null}";

    PARSE_OK(&c, &r, "submit", "--batch", "-", "--queue", "bulk");
    assert_string_equal(r.batch, "-");
    assert_int_equal(
        submit_batch_params(&c, text, strlen(text), r.params, &params, &lines, why, sizeof(why)),
        0);
    char *s = cJSON_PrintUnformatted(params);
    assert_string_equal(s, "{\"jobs\":[{\"command\":[\"a\"],\"queue\":\"bulk\",\"cwd\":\"/home/"
                           "ann/src\"},{\"command\":[\"b\"],\"queue\":\"own\",\"cwd\":\"/home/ann/"
                           "src/rel\"},{\"command\":[\"c\"],\"cwd\":null,\"queue\":\"bulk\"}]}");
    assert_int_equal(lines[0], 1);
    assert_int_equal(lines[1], 4);
    assert_int_equal(lines[2], 5);
    free(s);
    free(lines);
    cJSON_Delete(params);
    req_clear(&r);
}

static void
test_submit_batch_names_the_bad_line(void **state)
{
    struct cli c = test_cli();
    cJSON *params = NULL;
    char why[256];
    const char *bad = "{\"command\":[\"a\"]}\n[1,2]\n";
    const char *nocmd = "{\"command\":[\"a\"]}\n\n{\"name\":\"x\"}\n";

    assert_int_equal(
        submit_batch_params(&c, bad, strlen(bad), NULL, &params, NULL, why, sizeof(why)), -EINVAL);
    assert_string_equal(why, "line 2: not a JSON object (job specs are JSON objects like "
                             "{\"command\": [\"echo\", \"hi\"]})");
    assert_int_equal(
        submit_batch_params(&c, nocmd, strlen(nocmd), NULL, &params, NULL, why, sizeof(why)),
        -EINVAL);
    assert_string_equal(why, "line 3: no \"command\" array (like \"command\": [\"echo\", \"hi\"])");
    assert_int_equal(submit_batch_params(&c, "\n \n", 3, NULL, &params, NULL, why, sizeof(why)),
                     -EINVAL);
    assert_string_equal(why, "no job specs in it (JSON objects like {\"command\": [\"true\"]})");
}

static void
test_submit_batch_takes_pretty_objects_and_arrays(void **state)
{
    struct cli c = test_cli();
    cJSON *params = NULL;
    int *lines = NULL;
    char why[256];
    /* What `jobq show --json` prints for one id, then for two. */
    const char *text = "{\n  \"id\": 4,\n  \"command\": [\"a\"]\n}\n"
                       "[\n  {\n    \"command\": [\"b\"]\n  },\n  {\"command\": [\"c\"]}\n]"
                       "{\"command\":[\"d\"]} []\n";
    const char *bad = "[{\"command\":[\"a\"]},\n{\n \"name\": \"x\"\n}]";
    const char *open = "[{\"command\":[\"a\"]}\n\n";
    const char *junk = "{\"command\":[\"a\"]}\n{\"command\":\n[\"b\" x]}";

    assert_int_equal(
        submit_batch_params(&c, text, strlen(text), NULL, &params, &lines, why, sizeof(why)), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(params, "jobs")), 4);
    assert_int_equal(lines[0], 1);
    assert_int_equal(lines[1], 6);
    assert_int_equal(lines[2], 9);
    assert_int_equal(lines[3], 10);
    free(lines);
    cJSON_Delete(params);
    assert_int_equal(
        submit_batch_params(&c, bad, strlen(bad), NULL, &params, NULL, why, sizeof(why)), -EINVAL);
    assert_string_equal(why, "line 2: no \"command\" array (like \"command\": [\"echo\", \"hi\"])");
    assert_int_equal(
        submit_batch_params(&c, open, strlen(open), NULL, &params, NULL, why, sizeof(why)),
        -EINVAL);
    assert_string_equal(why,
                        "line 3: expected ',' or ']' in the array of job specs opened on line 1");
    assert_int_equal(
        submit_batch_params(&c, junk, strlen(junk), NULL, &params, NULL, why, sizeof(why)),
        -EINVAL);
    assert_string_equal(why, "line 2: not valid JSON (job specs are JSON objects like "
                             "{\"command\": [\"echo\", \"hi\"]})");
}

static void
test_list_parse_filters_and_limit(void **state)
{
    struct cli c = test_cli();
    struct req r;

    PARSE_OK(&c, &r, "list", "--state", "running,queued", "--state=failed", "--queue", "q",
             "--limit", "5", "--json");
    assert_string_equal(params_of(&r),
                        "{\"state\":[\"running\",\"queued\",\"failed\"],\"queue\":\"q\","
                        "\"limit\":5}");
    assert_true(c.json);
    assert_int_equal(r.limit, 5);
    req_clear(&r);

    c = test_cli();
    PARSE_OK(&c, &r, "list", "--limit", "0");
    assert_string_equal(params_of(&r), "{\"limit\":1000}");
    assert_int_equal(r.limit, 0);
    req_clear(&r);

    PARSE_FAILS("--state: unknown state \"runing\" (expected scheduled, queued, running, "
                "retrying, succeeded, failed or canceled, separated by commas)",
                "list", "--state", "runing");
    PARSE_FAILS("list: unexpected argument 'x' (see 'jobq help list')", "list", "x");
}

static void
test_wait_cancel_retry_take_ids(void **state)
{
    struct cli c = test_cli();
    struct req r;

    PARSE_OK(&c, &r, "wait", "4", "--timeout", "1.5s", "5");
    assert_string_equal(params_of(&r), "{\"ids\":[4,5],\"timeout_ms\":1500}");
    assert_int_equal(r.nids, 2);
    req_clear(&r);

    PARSE_OK(&c, &r, "cancel", "7", "8");
    assert_string_equal(params_of(&r), "{\"ids\":[7,8]}");
    req_clear(&r);

    PARSE_OK(&c, &r, "retry", "9");
    assert_string_equal(params_of(&r), "{\"ids\":[9]}");
    req_clear(&r);

    /* Ids go out with every digit, up to 2^53-1; beyond it, a usage error. */
    PARSE_OK(&c, &r, "cancel", "9007199254740991", "1000000000000001");
    assert_string_equal(params_of(&r), "{\"ids\":[9007199254740991,1000000000000001]}");
    req_clear(&r);
    PARSE_OK(&c, &r, "logs", "9007199254740991");
    assert_string_equal(params_of(&r), "{\"id\":9007199254740991,\"offset\":0,\"limit\":262144}");
    req_clear(&r);
    PARSE_OK(&c, &r, "show", "9007199254740991");
    assert_string_equal(params_of(&r), "{\"id\":9007199254740991}");
    req_clear(&r);
    PARSE_FAILS("bad job id \"9007199254740992\": too large (ids go up to 9007199254740991, "
                "2^53-1)",
                "show", "9007199254740992");
    PARSE_FAILS("bad job id \"99999999999999999999\": too large (ids go up to 9007199254740991, "
                "2^53-1)",
                "wait", "99999999999999999999");
    PARSE_FAILS("bad job id \"x7\": expected a positive integer like 42", "wait", "x7");
    PARSE_FAILS("bad job id \"0\": expected a positive integer like 42", "cancel", "0");
    PARSE_FAILS("wait: no job id given; usage: jobq wait ID... [--timeout DUR]", "wait");
}

static void
test_logs_show_pause_purge_parse(void **state)
{
    struct cli c = test_cli();
    struct req r;

    PARSE_OK(&c, &r, "logs", "12", "--attempt", "2", "-f");
    assert_string_equal(params_of(&r), "{\"id\":12,\"attempt\":2,\"offset\":0,\"limit\":262144,"
                                       "\"wait_ms\":30000}");
    assert_true(r.follow);
    req_clear(&r);

    PARSE_OK(&c, &r, "logs", "12");
    assert_string_equal(params_of(&r), "{\"id\":12,\"offset\":0,\"limit\":262144}");
    req_clear(&r);

    PARSE_OK(&c, &r, "show", "3", "1");
    assert_int_equal(r.nids, 2);
    assert_int_equal(r.ids[1], 1);
    req_clear(&r);

    PARSE_OK(&c, &r, "pause", "mail");
    assert_string_equal(params_of(&r), "{\"queue\":\"mail\"}");
    req_clear(&r);

    PARSE_OK(&c, &r, "purge", "--older-than", "7d", "--state", "succeeded,canceled");
    assert_string_equal(params_of(&r), "{\"older_than_ms\":604800000,\"states\":[\"succeeded\","
                                       "\"canceled\"]}");
    req_clear(&r);

    PARSE_OK(&c, &r, "purge");
    assert_string_equal(params_of(&r), "{}");
    req_clear(&r);

    PARSE_FAILS("--state: \"running\" is not a final state; only succeeded, failed and canceled "
                "jobs can be purged",
                "purge", "--state", "running");
    PARSE_FAILS("logs: one job id at a time; usage: jobq logs ID [--attempt N] [--follow] [--json]",
                "logs", "1", "2");
    PARSE_FAILS("resume: no queue given; usage: jobq resume QUEUE", "resume");
}

static void
test_global_options_before_and_after_the_verb(void **state)
{
    struct cli c = test_cli();
    struct req r;

    PARSE_OK(&c, &r, "--socket", "/a.sock", "--json", "stats");
    assert_string_equal(c.socket_flag, "/a.sock");
    assert_true(c.json);
    req_clear(&r);

    c = test_cli();
    PARSE_OK(&c, &r, "ping", "--socket=/b.sock");
    assert_string_equal(c.socket_flag, "/b.sock");
    req_clear(&r);

    PARSE_OK(&c, &r, "help", "submit");
    assert_true(r.help);
    assert_string_equal(r.cmd->name, "submit");
    req_clear(&r);

    PARSE_OK(&c, &r, "list", "-h");
    assert_true(r.help);
    req_clear(&r);

    PARSE_OK(&c, &r, "--version");
    assert_true(r.client_only);
    req_clear(&r);

    PARSE_FAILS("unknown command 'lsit' (see 'jobq help')", "lsit");
    PARSE_FAILS("unknown option '--sock' (see 'jobq help')", "--sock", "x", "ping");
    PARSE_FAILS("ping: unexpected argument 'x' (see 'jobq help ping')", "ping", "x");
    PARSE_FAILS("ping: --json takes no value (see 'jobq help ping')", "ping", "--json=1");
}

static void
test_every_verb_of_the_contract_has_a_row(void **state)
{
    const char *verbs[] = {"submit", "list",   "show",  "logs",  "wait", "cancel", "retry",
                           "pause",  "resume", "stats", "purge", "ping", "version"};
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        const struct cmd_entry *e = cmd_find(verbs[i]);
        assert_non_null(e);
        assert_non_null(e->parse);
        assert_non_null(e->run);
        assert_non_null(e->help);
    }
}

/* ---- the socket default chain ---------------------------------------- */

static void
touch(const char *path)
{
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
}

static void
test_socket_chain_order(void **state)
{
    char tmp[] = "/tmp/jobq-test-XXXXXX", old[PATH_MAX], p[PATH_MAX + 64], buf[PATH_MAX];
    struct rpc_where w = {0};
    bool fallback;

    assert_non_null(mkdtemp(tmp));
    assert_non_null(getcwd(old, sizeof(old)));
    assert_int_equal(chdir(tmp), 0);

    /* --socket beats everything, $JOBQ_SOCKET beats the chain. */
    w.flag = "/flag.sock";
    w.env = "/env.sock";
    assert_int_equal(rpc_socket_path(&w, buf, sizeof(buf), &fallback), 0);
    assert_string_equal(buf, "/flag.sock");
    w.flag = NULL;
    assert_int_equal(rpc_socket_path(&w, buf, sizeof(buf), &fallback), 0);
    assert_string_equal(buf, "/env.sock");
    w.env = "";

    /* Nothing exists: the system socket, marked as the fallback unless the
     * machine running the test has one. */
    w.home = tmp;
    assert_int_equal(rpc_socket_path(&w, buf, sizeof(buf), &fallback), 0);
    assert_string_equal(buf, "/run/jobq/jobq.sock");
    assert_int_equal(fallback, access("/run/jobq/jobq.sock", F_OK) != 0);

    /* The per-user socket under $HOME/.local/state. */
    snprintf(p, sizeof(p), "%s/.local", tmp);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/.local/state", tmp);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/.local/state/jobq", tmp);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/.local/state/jobq/jobq.sock", tmp);
    touch(p);
    assert_int_equal(rpc_socket_path(&w, buf, sizeof(buf), &fallback), 0);
    assert_string_equal(buf, p);
    assert_false(fallback);

    /* $XDG_STATE_HOME replaces $HOME/.local/state; a relative one is
     * ignored, as the XDG spec says. */
    w.xdg_state = "/nonexistent-xdg";
    assert_int_equal(rpc_socket_path(&w, buf, sizeof(buf), &fallback), 0);
    assert_string_equal(buf, "/run/jobq/jobq.sock");
    w.xdg_state = "relative";
    assert_int_equal(rpc_socket_path(&w, buf, sizeof(buf), &fallback), 0);
    assert_string_equal(buf, p);

    /* ./var/jobq.sock of a checkout comes first. */
    assert_int_equal(mkdir("var", 0700), 0);
    touch("var/jobq.sock");
    assert_int_equal(rpc_socket_path(&w, buf, sizeof(buf), &fallback), 0);
    assert_string_equal(buf, "./var/jobq.sock");

    unlink("var/jobq.sock");
    rmdir("var");
    unlink(p);
    snprintf(p, sizeof(p), "%s/.local/state/jobq", tmp);
    rmdir(p);
    snprintf(p, sizeof(p), "%s/.local/state", tmp);
    rmdir(p);
    snprintf(p, sizeof(p), "%s/.local", tmp);
    rmdir(p);
    assert_int_equal(chdir(old), 0);
    rmdir(tmp);
}

/* ---- rpc ---------------------------------------------------------------- */

static void
test_rpc_parses_replies(void **state)
{
    struct rpc_error e;
    cJSON *res = NULL;
    int64_t id;
    bool idnull;
    const char *ok = "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"id\":42}}";
    const char *err = "{\"jsonrpc\":\"2.0\",\"id\":4,\"error\":{\"code\":-32001,\"message\":"
                      "\"no job 9\",\"data\":{\"id\":9}}}";
    const char *conn = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32008,"
                       "\"message\":\"too many\"}}";

    assert_int_equal(rpc_parse_reply(ok, strlen(ok), &id, &idnull, &res, &e), 0);
    assert_int_equal(id, 3);
    assert_int_equal(json_int(res, "id", 0), 42);
    cJSON_Delete(res);

    assert_int_equal(rpc_parse_reply(err, strlen(err), &id, &idnull, &res, &e), -EREMOTEIO);
    assert_int_equal(e.code, -32001);
    assert_string_equal(e.message, "no job 9");
    assert_int_equal(json_int(e.data, "id", 0), 9);
    rpc_error_clear(&e);

    assert_int_equal(rpc_parse_reply(conn, strlen(conn), &id, &idnull, &res, &e), -EREMOTEIO);
    assert_true(idnull);
    assert_int_equal(e.code, -32008);
    rpc_error_clear(&e);

    const char *bad[] = {"nope", "[]", "{\"jsonrpc\":\"1.0\",\"id\":1,\"result\":1}",
                         "{\"jsonrpc\":\"2.0\",\"id\":1}",
                         "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":1,\"error\":{\"code\":1}}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(rpc_parse_reply(bad[i], strlen(bad[i]), &id, &idnull, &res, &e), -EBADMSG);
}

static void
test_rpc_request_line(void **state)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddNumberToObject(p, "id", 42);
    char *line = rpc_format_request(7, "get", p);
    assert_string_equal(line, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"get\",\"params\":{"
                              "\"id\":42}}");
    free(line);
    line = rpc_format_request(8, "ping", NULL);
    assert_string_equal(line, "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"ping\"}");
    free(line);
    cJSON_Delete(p);
}

/* A listening socket in a temporary directory; the test plays the daemon
 * by accepting and writing replies by hand. */
struct fake_server {
    char dir[32];
    char path[64];
    int lfd;
};

static void
server_start(struct fake_server *s)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    snprintf(s->dir, sizeof(s->dir), "/tmp/jobq-rpc-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->path, sizeof(s->path), "%s/s.sock", s->dir);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", s->path);
    s->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(s->lfd, 4), 0);
}

static void
server_stop(struct fake_server *s)
{
    close(s->lfd);
    unlink(s->path);
    rmdir(s->dir);
}

static void
write_str(int fd, const char *s)
{
    assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* Reads until n newlines have arrived. */
static void
read_lines(int fd, int n)
{
    char c;
    while (n > 0) {
        assert_int_equal(read(fd, &c, 1), 1);
        n -= c == '\n';
    }
}

static void
test_rpc_pipelined_replies_match_by_id(void **state)
{
    struct fake_server s;
    struct rpc *r = NULL;
    struct rpc_error e;
    int64_t ids[3];
    cJSON *res;
    int fd;

    server_start(&s);
    assert_int_equal(rpc_connect(s.path, &r), 0);
    fd = accept(s.lfd, NULL, NULL);
    for (int i = 0; i < 3; i++) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddNumberToObject(p, "id", 100 + i);
        assert_int_equal(rpc_send(r, "get", p, &ids[i]), 0);
    }
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[2], 3);
    read_lines(fd, 3);
    /* Newest first, the second as an error, split across writes. */
    write_str(fd, "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":\"three\"}\n{\"jsonrpc\":\"2.0\",");
    write_str(fd, "\"id\":2,\"error\":{\"code\":-32001,\"message\":\"no job 101\"}}\r\n\n");
    write_str(fd, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"one\"}\n");
    assert_int_equal(rpc_recv(r, ids[0], &res, &e), 0);
    assert_string_equal(res->valuestring, "one");
    cJSON_Delete(res);
    assert_int_equal(rpc_recv(r, ids[1], &res, &e), -EREMOTEIO);
    assert_int_equal(e.code, -32001);
    rpc_error_clear(&e);
    assert_int_equal(rpc_recv(r, ids[2], &res, &e), 0);
    assert_string_equal(res->valuestring, "three");
    cJSON_Delete(res);

    /* A connection-level error answers every request still waiting. */
    assert_int_equal(rpc_send(r, "ping", NULL, &ids[0]), 0);
    assert_int_equal(rpc_send(r, "ping", NULL, &ids[1]), 0);
    write_str(fd, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32007,\"message\":"
                  "\"stalled\"}}\n");
    close(fd);
    assert_int_equal(rpc_recv(r, ids[0], &res, &e), -EREMOTEIO);
    assert_int_equal(e.code, -32007);
    rpc_error_clear(&e);
    assert_int_equal(rpc_recv(r, ids[1], &res, &e), -EREMOTEIO);
    assert_int_equal(e.code, -32007);
    rpc_error_clear(&e);
    rpc_free(r);
    server_stop(&s);
}

static void
test_rpc_hangup_and_oversized_reply(void **state)
{
    struct fake_server s;
    struct rpc *r = NULL;
    struct rpc_error e;
    int64_t id;
    cJSON *res;
    pid_t pid;
    int fd;

    server_start(&s);
    assert_int_equal(rpc_connect(s.path, &r), 0);
    fd = accept(s.lfd, NULL, NULL);
    assert_int_equal(rpc_send(r, "ping", NULL, &id), 0);
    close(fd);
    assert_int_equal(rpc_recv(r, id, &res, &e), -ECONNRESET);
    rpc_free(r);

    /* A reply line over the limit is refused rather than buffered without
     * end; a child writes it, since no socket buffer holds 4 MiB. */
    assert_int_equal(rpc_connect(s.path, &r), 0);
    fd = accept(s.lfd, NULL, NULL);
    if ((pid = fork()) == 0) {
        static char chunk[65536];
        memset(chunk, 'x', sizeof(chunk));
        signal(SIGPIPE, SIG_IGN);
        for (size_t sent = 0; sent <= RPC_REPLY_MAX_BYTES + sizeof(chunk);)
            if (write(fd, chunk, sizeof(chunk)) <= 0)
                break;
            else
                sent += sizeof(chunk);
        _exit(0);
    }
    close(fd);
    assert_int_equal(rpc_send(r, "ping", NULL, &id), 0);
    assert_int_equal(rpc_recv(r, id, &res, &e), -EMSGSIZE);
    rpc_free(r);
    waitpid(pid, NULL, 0);
    server_stop(&s);

    /* Nothing listening. */
    assert_int_equal(rpc_connect("/nonexistent/jobq.sock", &r), -ENOENT);
}

/* ---- the HTTP transport ------------------------------------------------ */

static void
test_http_url_forms(void **state)
{
    struct rpc *r = NULL;
    char why[256];

    assert_int_equal(rpc_open_url("http://jobq.example:9090", "tok", 3, &r, why, sizeof(why)), 0);
    assert_string_equal(r->http->host, "jobq.example");
    assert_string_equal(r->http->port, "9090");
    assert_string_equal(r->http->authority, "jobq.example:9090");
    assert_string_equal(r->http->path, "/rpc");
    assert_string_equal(r->http->token, "tok");
    rpc_free(r);
    assert_int_equal(rpc_open_url("HTTP://[::1]/jobq/", NULL, 0, &r, why, sizeof(why)), 0);
    assert_string_equal(r->http->host, "::1");
    assert_string_equal(r->http->port, "80");
    assert_string_equal(r->http->authority, "[::1]");
    assert_string_equal(r->http->path, "/jobq/rpc");
    assert_null(r->http->token);
    rpc_free(r);
    /* A URL that already names the endpoint is taken as it is. */
    assert_int_equal(rpc_open_url("http://10.0.0.1:80/rpc", NULL, 0, &r, why, sizeof(why)), 0);
    assert_string_equal(r->http->path, "/rpc");
    rpc_free(r);
    r = NULL;
    const char *bad[][2] = {
        {"https://jobq.example", "https is not spoken by jobq itself"},
        {"jobq.example:9090", "expected http://HOST:PORT"},
        {"http://ann:pw@jobq.example", "the token goes in --token-file"},
        {"http://jobq.example/?x=1", "no query or fragment"},
        {"http://jobq.example:0", "the port must be a number from 1 to 65535"},
        {"http://jobq.example:99999", "the port must be a number from 1 to 65535"},
        {"http://jobq.example:", "expected :PORT after the host"},
        {"http://:9090", "no host"},
        {"http://[::1:9090", "unclosed '['"},
        {"http://h/a b", "must be percent-encoded"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        assert_int_equal(rpc_open_url(bad[i][0], NULL, 0, &r, why, sizeof(why)), -EINVAL);
        assert_non_null(strstr(why, bad[i][1]));
        assert_null(r);
    }
}

static void
test_http_token_file(void **state)
{
    char path[] = "/tmp/jobq-token-XXXXXX", *tok;
    size_t len;
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    write_str(fd, "s3cret-token \r\n\n");
    assert_int_equal(rpc_token_read(path, &tok, &len), 0);
    assert_string_equal(tok, "s3cret-token");
    assert_int_equal(len, 12);
    free(tok);
    assert_int_equal(ftruncate(fd, 0), 0);
    assert_int_equal(rpc_token_read(path, &tok, &len), -EINVAL); /* empty */
    assert_int_equal(pwrite(fd, "two\nlines\n", 10, 0), 10);
    assert_int_equal(rpc_token_read(path, &tok, &len), -EINVAL); /* no header holds it */
    close(fd);
    unlink(path);
    assert_int_equal(rpc_token_read(path, &tok, &len), -ENOENT);
}

/* A TCP server on 127.0.0.1 played by a child: it answers each of the
 * next connections with the next of replies (raw HTTP, written in two
 * parts to split headers and body), after reading the whole request, and
 * appends each request to the file record. */
static pid_t
http_server(int *port, const char *record, const char *const *replies, int n)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof(sa);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    pid_t pid;

    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 8), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &salen), 0);
    *port = ntohs(sa.sin_port);
    if ((pid = fork()) != 0) {
        close(lfd);
        return pid;
    }
    signal(SIGPIPE, SIG_IGN);
    alarm(10); /* a failed test leaves it waiting */
    for (int i = 0; i < n; i++) {
        static char req[1 << 20];
        size_t got = 0, need = 0;
        int fd = accept(lfd, NULL, NULL), out;
        char *end = NULL;

        while ((end == NULL || got < need) && got < sizeof(req) - 1) {
            ssize_t k = read(fd, req + got, sizeof(req) - 1 - got);
            if (k <= 0)
                break;
            got += (size_t)k;
            req[got] = '\0';
            if (end == NULL && (end = strstr(req, "\r\n\r\n")) != NULL) {
                const char *cl = strstr(req, "Content-Length: ");
                need = (size_t)(end + 4 - req) + (cl ? strtoul(cl + 16, NULL, 10) : 0);
            }
        }
        if ((out = open(record, O_WRONLY | O_APPEND | O_CREAT, 0600)) >= 0) {
            (void)!write(out, req, got);
            (void)!write(out, "\n--\n", 4);
            close(out);
        }
        const char *split = strstr(replies[i], "\r\n\r\n");
        size_t head = split ? (size_t)(split + 4 - replies[i]) : strlen(replies[i]);
        (void)!write(fd, replies[i], head);
        usleep(10000);
        (void)!write(fd, replies[i] + head, strlen(replies[i]) - head);
        close(fd);
    }
    _exit(0);
}

static char *
slurp(const char *path)
{
    static char buf[1 << 16];
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

    buf[n > 0 ? n : 0] = '\0';
    if (fd >= 0)
        close(fd);
    return buf;
}

static void
test_http_exchanges(void **state)
{
    static const char *const replies[] = {
        /* 100 Continue first, then a chunked reply with an extension and
         * a trailer. */
        "HTTP/1.1 100 Continue\r\n\r\n"
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "11;x=y\r\n{\"jsonrpc\":\"2.0\",\r\n1B\r\n\"id\":1,\"result\":\"chunked\"}\n\r\n"
        "0\r\nX-Trailer: 1\r\n\r\n",
        /* No length: the body ends with the connection. */
        "HTTP/1.1 200 OK\r\nConnection: "
        "close\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":\"eof\"}",
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nno\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n{",
        "SMTP ready\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: "
        "41\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":9,\"result\":\"pong\"}\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 86\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":7,"
        "\"error\":{\"code\":-32001,\"message\":\"no job 4\",\"data\":{\"id\":4}}}\n",
    };
    char record[] = "/tmp/jobq-http-XXXXXX", url[64], why[256];
    const char *reason, *detail;
    struct rpc *r = NULL;
    struct rpc_error e;
    cJSON *res;
    int port, fd = mkstemp(record);
    pid_t pid;

    close(fd);
    pid = http_server(&port, record, replies, 7);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/pre", port);
    assert_int_equal(rpc_open_url(url, "tok", 3, &r, why, sizeof(why)), 0);
    assert_int_equal(rpc_call(r, "ping", NULL, &res, &e), 0);
    assert_string_equal(res->valuestring, "chunked");
    cJSON_Delete(res);
    assert_non_null(strstr(slurp(record), "POST /pre/rpc HTTP/1.1\r\n"));
    assert_non_null(strstr(slurp(record), "\r\nAuthorization: Bearer tok\r\n"));
    assert_non_null(strstr(slurp(record), "\r\nHost: 127.0.0.1:"));
    assert_non_null(strstr(slurp(record), "\r\nContent-Length: 40\r\n"));
    assert_non_null(
        strstr(slurp(record), "\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n--\n"));
    assert_int_equal(rpc_call(r, "ping", NULL, &res, &e), 0);
    assert_string_equal(res->valuestring, "eof");
    cJSON_Delete(res);
    assert_int_equal(rpc_call(r, "ping", NULL, &res, &e), -EPROTO);
    assert_int_equal(rpc_http_status(r, &reason, &detail), 401);
    assert_string_equal(reason, "Unauthorized");
    assert_int_equal(rpc_call(r, "ping", NULL, &res, &e), -EMSGSIZE);
    assert_int_equal(rpc_call(r, "ping", NULL, &res, &e), -EBADMSG);
    /* A reply to another id is not this request's. */
    assert_int_equal(rpc_call(r, "ping", NULL, &res, &e), -EBADMSG);
    /* An error reply comes back as over the socket. */
    assert_int_equal(rpc_send(r, "get", NULL, &(int64_t){0}), 0);
    assert_int_equal(rpc_recv(r, 7, &res, &e), -EREMOTEIO);
    assert_int_equal(e.code, -32001);
    rpc_error_clear(&e);
    rpc_free(r);
    waitpid(pid, NULL, 0);
    unlink(record);

    /* Nothing listens there any more. */
    assert_int_equal(rpc_open_url(url, NULL, 0, &r, why, sizeof(why)), 0);
    assert_int_equal(rpc_call(r, "ping", NULL, &res, &e), -ECONNREFUSED);
    rpc_free(r);
}

static void
test_http_wait_goes_in_pieces(void **state)
{
    static const char *const replies[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 62\r\n\r\n"
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"jobs\":[],\"timed_out\":true}}",
        "HTTP/1.1 200 OK\r\nContent-Length: 62\r\n\r\n"
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"jobs\":[],\"timed_out\":true}}",
        "HTTP/1.1 200 OK\r\nContent-Length: 63\r\n\r\n"
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"jobs\":[],\"timed_out\":false}}",
        "HTTP/1.1 200 OK\r\nContent-Length: 62\r\n\r\n"
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"jobs\":[],\"timed_out\":true}}",
        "HTTP/1.1 200 OK\r\nContent-Length: 87\r\n\r\n"
        "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"id\":5,\"data\":\"\",\"eof\":true,\"done\":"
        "false,"
        "\"offset\":0}}",
    };
    char record[] = "/tmp/jobq-http-XXXXXX", url[64], why[256], *rec, *p;
    struct rpc *r = NULL;
    struct rpc_error e;
    cJSON *res, *params;
    int port, fd = mkstemp(record), n = 0;
    pid_t pid;

    close(fd);
    pid = http_server(&port, record, replies, 5);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    assert_int_equal(rpc_open_url(url, NULL, 0, &r, why, sizeof(why)), 0);
    /* No timeout: pieces of RPC_HTTP_HOLD_MAX_MS until one is not timed out. */
    params = cJSON_Parse("{\"ids\":[5]}");
    assert_int_equal(rpc_call(r, "wait", params, &res, &e), 0);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(res, "timed_out")));
    cJSON_Delete(res);
    rec = slurp(record);
    for (p = rec; (p = strstr(p, "\"timeout_ms\":50000}")) != NULL; p++)
        n++;
    assert_int_equal(n, 3);
    /* Its own timeout spent: the timed-out piece is the answer. */
    params = cJSON_Parse("{\"ids\":[5],\"timeout_ms\":0}");
    assert_int_equal(rpc_call(r, "wait", params, &res, &e), 0);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(res, "timed_out")));
    cJSON_Delete(res);
    /* A longer logs hold is capped: the method may always return early. */
    params = cJSON_Parse("{\"id\":5,\"wait_ms\":600000}");
    assert_int_equal(rpc_call(r, "logs", params, &res, &e), 0);
    cJSON_Delete(res);
    assert_non_null(strstr(slurp(record), "\"wait_ms\":50000}"));
    rpc_free(r);
    waitpid(pid, NULL, 0);
    unlink(record);
}

static void
test_http_failures_exit_as_documented(void **state)
{
    char buf[512];
    const char *u = "http://jobq.example:9090";

    assert_int_equal(errmsg_http(-EPROTO, u, 401, "Unauthorized", "", buf, sizeof(buf)), 77);
    assert_non_null(strstr(buf, "bad or missing token: see --token-file"));
    assert_int_equal(errmsg_http(-EPROTO, u, 403, "Forbidden", "", buf, sizeof(buf)), 77);
    assert_int_equal(errmsg_http(-EPROTO, u, 404, "Not Found", "", buf, sizeof(buf)), 69);
    assert_non_null(strstr(buf, "--http-token-file"));
    assert_int_equal(errmsg_http(-EPROTO, u, 413, "", "", buf, sizeof(buf)), 65);
    assert_int_equal(errmsg_http(-EPROTO, u, 502, "Bad Gateway", "", buf, sizeof(buf)), 69);
    assert_int_equal(errmsg_http(-EPROTO, u, 503, "", "", buf, sizeof(buf)), 75);
    assert_int_equal(errmsg_http(-EPROTO, u, 418, "I'm a teapot", "", buf, sizeof(buf)), 70);
    assert_int_equal(errmsg_http(-ECONNREFUSED, u, 0, "", "", buf, sizeof(buf)), 69);
    assert_string_equal(buf, "cannot reach jobqd at http://jobq.example:9090: connection "
                             "refused (is jobqd running with --http there? check --url or "
                             "JOBQ_URL)");
    assert_int_equal(errmsg_http(-ENXIO, u, 0, "", "cannot resolve x: y", buf, sizeof(buf)), 69);
    assert_int_equal(errmsg_http(-ETIMEDOUT, u, 0, "", "", buf, sizeof(buf)), 69);
    assert_int_equal(errmsg_http(-ECONNRESET, u, 0, "", "", buf, sizeof(buf)), 69);
    assert_int_equal(errmsg_http(-EBADMSG, u, 0, "", "", buf, sizeof(buf)), 70);
}

static void
test_url_options_and_environment(void **state)
{
    struct cli c = test_cli();
    struct req r;

    PARSE_OK(&c, &r, "--url", "http://a:1", "--token-file=/t", "ping");
    assert_string_equal(c.url_flag, "http://a:1");
    assert_string_equal(c.token_file_flag, "/t");
    req_clear(&r);
    c = test_cli();
    PARSE_OK(&c, &r, "ping", "--url=http://b:2", "--token-file", "/u");
    assert_string_equal(c.url_flag, "http://b:2");
    assert_string_equal(c.token_file_flag, "/u");
    req_clear(&r);
    c = test_cli();
    c.err = fopen("/dev/null", "w");
    c.url_flag = "http://a:1";
    c.socket_flag = "/s.sock";
    assert_int_equal(cli_connect(&c), EXIT_USAGE);
    c.socket_flag = NULL;
    c.url_flag = "ftp://a";
    assert_int_equal(cli_connect(&c), EXIT_USAGE);
    c.url_flag = "http://a:1";
    c.token_file_flag = "/nonexistent/token";
    assert_int_equal(cli_connect(&c), EXIT_DENIED);
    /* JOBQ_URL, unless --socket names a socket. */
    c.url_flag = c.token_file_flag = NULL;
    c.env_url = "http://a:1";
    assert_int_equal(cli_connect(&c), 0);
    assert_string_equal(c.url, "http://a:1");
    rpc_free(c.rpc);
    fclose(c.err);
}

static void
test_rpc_connects_through_long_paths(void **state)
{
    char dir[PATH_MAX], path[PATH_MAX + 16];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct rpc *r = NULL;
    int lfd, dfd;

    /* sun_path holds 108 bytes; bind relative to the directory instead. */
    snprintf(dir, sizeof(dir), "/tmp/jobq-long-XXXXXX");
    assert_non_null(mkdtemp(dir));
    size_t base = strlen(dir);
    while (strlen(dir) < 150) {
        strcat(dir, "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_int_equal(mkdir(dir, 0700), 0);
    }
    snprintf(path, sizeof(path), "%s/jobq.sock", dir);
    dfd = open(dir, O_PATH | O_DIRECTORY);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/jobq.sock", dfd);
    lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 1), 0);
    assert_int_equal(rpc_connect(path, &r), 0);
    rpc_free(r);
    close(lfd);
    close(dfd);
    unlink(path);
    while (strlen(dir) > base) {
        rmdir(dir);
        *strrchr(dir, '/') = '\0';
    }
    rmdir(dir);
}

/* ---- formatting --------------------------------------------------------- */

static void
test_shorten_counts_columns_not_bytes(void **state)
{
    char *s;

    assert_int_equal(fmt_width("héllo…"), 6);
    s = fmt_shorten("abcdefghij", 5);
    assert_string_equal(s, "abcd…");
    free(s);
    s = fmt_shorten("abc", 5);
    assert_string_equal(s, "abc");
    free(s);
    s = fmt_shorten("ééééé", 4);
    assert_string_equal(s, "ééé…");
    free(s);
    s = fmt_clean("a\tb\x1b[31m\xff");
    assert_string_equal(s, "a?b?[31m?");
    free(s);
}

static void
test_command_is_quoted_for_reading(void **state)
{
    cJSON *argv = cJSON_Parse("[\"sh\",\"-c\",\"echo 'hi' > /tmp/x\",\"\",\"a=b,c/d\"]");
    char *s = fmt_command(argv);
    assert_string_equal(s, "sh -c 'echo '\\''hi'\\'' > /tmp/x' '' a=b,c/d");
    free(s);
    cJSON_Delete(argv);
}

static void
test_ages(void **state)
{
    char buf[32];
    assert_string_equal(fmt_age(NOW_MS, NOW_MS - 500, buf, sizeof(buf)), "0s ago");
    assert_string_equal(fmt_age(NOW_MS, NOW_MS - 59000, buf, sizeof(buf)), "59s ago");
    assert_string_equal(fmt_age(NOW_MS, NOW_MS - 180000, buf, sizeof(buf)), "3m ago");
    assert_string_equal(fmt_age(NOW_MS, NOW_MS - 7200000, buf, sizeof(buf)), "2h ago");
    assert_string_equal(fmt_age(NOW_MS, NOW_MS - 4 * 86400000LL, buf, sizeof(buf)), "4d ago");
    assert_string_equal(fmt_age(NOW_MS, NOW_MS + 5000, buf, sizeof(buf)), "0s ago");
}

/* Runs fn into a string; returns it owned. */
static char *
capture_table(const struct cli *c, const cJSON *jobs)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    list_print_table(c, jobs, f);
    fclose(f);
    return out;
}

static void
test_list_table_is_aligned_and_fits_the_width(void **state)
{
    struct cli c = test_cli();
    cJSON *jobs = cJSON_Parse(
        "[{\"id\":1042,\"state\":\"running\",\"queue\":\"default\",\"attempt\":1,"
        "\"max_attempts\":3,\"created_at\":\"2026-12-04T16:15:16.123Z\",\"name\":null,"
        "\"command\":[\"sh\",\"-c\",\"for i in $(seq 1 100); do echo $i; sleep 1; done\"]},"
        "{\"id\":7,\"state\":\"succeeded\",\"queue\":\"mail\",\"attempt\":1,\"max_attempts\":1,"
        "\"created_at\":\"2026-12-03T16:18:16.123Z\",\"name\":\"nightly\",\"command\":[\"x\"]}]");
    char *out;

    c.columns = 60;
    out = capture_table(&c, jobs);
    /* 44 columns before the last one, which gets the 16 left of 60. */
    assert_string_equal(out, "ID    STATE      QUEUE    ATTEMPTS  AGE     NAME/COMMAND\n"
                             "1042  running    default  1/3       3m ago  sh -c 'for i in…\n"
                             "7     succeeded  mail     1/1       1d ago  nightly\n");
    free(out);
    cJSON_Delete(jobs);

    jobs = cJSON_CreateArray();
    out = capture_table(&c, jobs);
    assert_string_equal(out, "ID  STATE  QUEUE  ATTEMPTS  AGE  NAME/COMMAND\n");
    free(out);
    cJSON_Delete(jobs);
}

static void
test_json_output_is_indented_like_jq(void **state)
{
    cJSON *j = cJSON_Parse("{\"a\":[],\"b\":{\"c\":\"x,\\\"y{:\"},\"d\":[1,2],\"e\":{}}");
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    fmt_json(f, j);
    fclose(f);
    assert_string_equal(out, "{\n"
                             "  \"a\": [],\n"
                             "  \"b\": {\n"
                             "    \"c\": \"x,\\\"y{:\"\n"
                             "  },\n"
                             "  \"d\": [\n"
                             "    1,\n"
                             "    2\n"
                             "  ],\n"
                             "  \"e\": {}\n"
                             "}\n");
    free(out);
    cJSON_Delete(j);
}

/* ---- exit codes and messages ----------------------------------------- */

static int
code_of(const char *job)
{
    cJSON *j = cJSON_Parse(job);
    int code = job_exit_code(j);
    cJSON_Delete(j);
    return code;
}

static void
test_exit_code_from_job_outcome(void **state)
{
    assert_int_equal(code_of("{\"state\":\"succeeded\",\"outcome\":\"succeeded\"}"), 0);
    assert_int_equal(code_of("{\"state\":\"failed\",\"outcome\":\"exited\",\"exit_code\":3}"), 3);
    assert_int_equal(code_of("{\"state\":\"failed\",\"outcome\":\"timeout\",\"signal\":15}"), 124);
    assert_int_equal(code_of("{\"state\":\"failed\",\"outcome\":\"deadline\"}"), 124);
    assert_int_equal(code_of("{\"state\":\"failed\",\"outcome\":\"signaled\",\"signal\":9}"), 137);
    assert_int_equal(code_of("{\"state\":\"canceled\",\"outcome\":\"canceled\",\"signal\":15}"),
                     125);
    assert_int_equal(code_of("{\"state\":\"canceled\",\"outcome\":null}"), 125);
    assert_int_equal(
        code_of("{\"state\":\"failed\",\"outcome\":\"spawn_error\",\"exit_code\":127}"), 127);
    assert_int_equal(
        code_of("{\"state\":\"failed\",\"outcome\":\"spawn_error\",\"exit_code\":126}"), 126);
    assert_int_equal(code_of("{\"state\":\"failed\",\"outcome\":\"interrupted\"}"), 1);
    assert_int_equal(code_of("{\"state\":\"running\"}"), 79);
}

static void
test_exit_reason_lines(void **state)
{
    cJSON *j = cJSON_Parse("{\"id\":42,\"state\":\"failed\",\"outcome\":\"exited\","
                           "\"exit_code\":3,\"error\":\"exited with status 3\"}");
    char buf[256];

    job_exit_reason(j, buf, sizeof(buf));
    assert_string_equal(buf, "job 42 failed: exited with status 3 (see 'jobq logs 42' and "
                             "'jobq show 42')");
    cJSON_Delete(j);
    j = cJSON_Parse("{\"id\":5,\"state\":\"failed\",\"outcome\":\"signaled\",\"signal\":9}");
    job_exit_reason(j, buf, sizeof(buf));
    assert_string_equal(buf, "job 5 failed: killed by signal 9 (SIGKILL) (see 'jobq logs 5' and "
                             "'jobq show 5')");
    cJSON_Delete(j);
    j = cJSON_Parse("{\"id\":5,\"state\":\"succeeded\"}");
    job_exit_reason(j, buf, sizeof(buf));
    assert_string_equal(buf, "");
    cJSON_Delete(j);
}

static void
test_exit_code_for_each_error(void **state)
{
    assert_int_equal(errmsg_exit_code(PROTO_INVALID_PARAMS), 65);
    assert_int_equal(errmsg_exit_code(PROTO_CONFLICT), 65);
    assert_int_equal(errmsg_exit_code(PROTO_TOO_LARGE), 65);
    assert_int_equal(errmsg_exit_code(PROTO_NOT_FOUND), 66);
    assert_int_equal(errmsg_exit_code(PROTO_PARSE_ERROR), 70);
    assert_int_equal(errmsg_exit_code(PROTO_INVALID_REQUEST), 70);
    assert_int_equal(errmsg_exit_code(PROTO_METHOD_NOT_FOUND), 70);
    assert_int_equal(errmsg_exit_code(PROTO_INTERNAL_ERROR), 70);
    assert_int_equal(errmsg_exit_code(PROTO_REQUEST_TIMEOUT), 70);
    assert_int_equal(errmsg_exit_code(PROTO_STORAGE_ERROR), 74);
    assert_int_equal(errmsg_exit_code(PROTO_QUEUE_FULL), 75);
    assert_int_equal(errmsg_exit_code(PROTO_SHUTTING_DOWN), 75);
    assert_int_equal(errmsg_exit_code(PROTO_TOO_MANY_CONNECTIONS), 75);
    assert_int_equal(errmsg_exit_code(PROTO_PERMISSION_DENIED), 77);
}

static const char *
message_for(const char *verb, int code, const char *message, const char *data)
{
    static char buf[512];
    struct rpc_error e = {.code = code, .data = data ? cJSON_Parse(data) : NULL};

    snprintf(e.message, sizeof(e.message), "%s", message);
    errmsg_format(verb, &e, buf, sizeof(buf));
    rpc_error_clear(&e);
    return buf;
}

static void
test_error_messages_say_what_to_do(void **state)
{
    char buf[512];

    assert_string_equal(message_for("show", PROTO_NOT_FOUND, "no job 42", "{\"id\":42}"),
                        "no job 42 (see 'jobq list')");
    assert_string_equal(message_for("logs", PROTO_NOT_FOUND, "x", "{\"id\":42,\"attempt\":4}"),
                        "job 42 has no attempt 4 (see 'jobq show 42')");
    assert_string_equal(
        message_for("retry", PROTO_CONFLICT, "x", "{\"id\":4,\"state\":\"running\"}"),
        "cannot retry job 4: it is running");
    assert_string_equal(
        message_for("cancel", PROTO_CONFLICT, "x", "{\"id\":4,\"state\":\"succeeded\"}"),
        "cannot cancel job 4: it already succeeded");
    assert_string_equal(message_for("retry", PROTO_CONFLICT, "x",
                                    "{\"id\":96,\"state\":\"failed\",\"reason\":\"its deadline "
                                    "has passed\"}"),
                        "cannot retry job 96: its deadline has passed");
    assert_string_equal(message_for("submit", PROTO_INVALID_PARAMS, "bad",
                                    "{\"field\":\"queue\",\"reason\":\"too long\"}"),
                        "jobqd rejected the request: queue: too long (see 'jobq help submit')");
    assert_string_equal(
        message_for("submit", PROTO_QUEUE_FULL, "full", "{\"queued\":10,\"max_queued\":10}"),
        "jobqd is full: 10 jobs waiting, its --max-queued is 10; try again later");
    assert_string_equal(message_for("pause", PROTO_PERMISSION_DENIED, "denied",
                                    "{\"reason\":\"only root may pause queues\"}"),
                        "permission denied: only root may pause queues (ask the daemon's owner "
                        "or root)");
    assert_string_equal(message_for("submit", PROTO_SHUTTING_DOWN, "bye", NULL),
                        "jobqd is shutting down; try again once it is back");

    assert_int_equal(errmsg_transport(-ENOENT, "./var/jobq.sock", false, buf, sizeof(buf)), 69);
    assert_string_equal(buf, "cannot reach jobqd at ./var/jobq.sock: no such file (is it "
                             "running? see 'make run')");
    assert_int_equal(errmsg_transport(-ECONNREFUSED, "/s", true, buf, sizeof(buf)), 69);
    assert_string_equal(buf, "cannot reach jobqd at /s: connection refused (is it running? see "
                             "'make run', or point --socket or JOBQ_SOCKET at it)");
    assert_int_equal(errmsg_transport(-EACCES, "/s", false, buf, sizeof(buf)), 77);
    assert_int_equal(errmsg_transport(-EBADMSG, "/s", false, buf, sizeof(buf)), 70);
    assert_int_equal(errmsg_transport(-ECONNRESET, "/s", false, buf, sizeof(buf)), 69);
}

static void
test_usage_error_is_one_line_and_exit_64(void **state)
{
    struct cli c = test_cli();
    char *err = NULL;
    size_t len = 0;
    char *argv[] = {"jobq", "wait", "--timeout", "5x", "1", NULL};

    c.err = open_memstream(&err, &len);
    assert_int_equal(cli_main(&c, 5, argv), 64);
    fclose(c.err);
    assert_string_equal(err, "jobq: --timeout: bad duration \"5x\": unit must be ms, s, m, h or "
                             "d\n");
    free(err);
}

/* ---- base64 (the logs method's encoding) ------------------------------ */

static void
test_base64_roundtrip_and_strictness(void **state)
{
    unsigned char bytes[256], back[256];
    char enc[400];
    size_t n;

    for (int i = 0; i < 256; i++)
        bytes[i] = (unsigned char)i;
    for (size_t len = 0; len <= 256; len += 37) {
        assert_int_equal(base64_encode(bytes, len, enc), base64_encoded_len(len));
        assert_int_equal(base64_decode(enc, strlen(enc), back, &n), 0);
        assert_int_equal(n, len);
        assert_memory_equal(back, bytes, len);
    }
    base64_encode("hi\n", 3, enc);
    assert_string_equal(enc, "aGkK");
    base64_encode("bye\n", 4, enc);
    assert_string_equal(enc, "YnllCg==");
    assert_int_equal(base64_decode("YnllCg==", 8, back, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(base64_decode("YnllCg=", 7, back, &n), -EINVAL);
    assert_int_equal(base64_decode("Yn=lCg==", 8, back, &n), -EINVAL);
    assert_int_equal(base64_decode("Ynl!", 4, back, &n), -EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_builds_spec_with_protocol_field_names),
        cmocka_unit_test(test_submit_minimal_runs_in_current_directory),
        cmocka_unit_test(test_submit_command_keeps_its_own_options),
        cmocka_unit_test(test_submit_times_relative_and_at),
        cmocka_unit_test(test_submit_usage_errors_say_what_is_wrong),
        cmocka_unit_test(test_submit_batch_options_become_defaults),
        cmocka_unit_test(test_submit_batch_names_the_bad_line),
        cmocka_unit_test(test_submit_batch_takes_pretty_objects_and_arrays),
        cmocka_unit_test(test_list_parse_filters_and_limit),
        cmocka_unit_test(test_wait_cancel_retry_take_ids),
        cmocka_unit_test(test_logs_show_pause_purge_parse),
        cmocka_unit_test(test_global_options_before_and_after_the_verb),
        cmocka_unit_test(test_every_verb_of_the_contract_has_a_row),
        cmocka_unit_test(test_socket_chain_order),
        cmocka_unit_test(test_rpc_parses_replies),
        cmocka_unit_test(test_rpc_request_line),
        cmocka_unit_test(test_rpc_pipelined_replies_match_by_id),
        cmocka_unit_test(test_rpc_hangup_and_oversized_reply),
        cmocka_unit_test(test_rpc_connects_through_long_paths),
        cmocka_unit_test(test_http_url_forms),
        cmocka_unit_test(test_http_token_file),
        cmocka_unit_test(test_http_exchanges),
        cmocka_unit_test(test_http_wait_goes_in_pieces),
        cmocka_unit_test(test_http_failures_exit_as_documented),
        cmocka_unit_test(test_url_options_and_environment),
        cmocka_unit_test(test_shorten_counts_columns_not_bytes),
        cmocka_unit_test(test_command_is_quoted_for_reading),
        cmocka_unit_test(test_ages),
        cmocka_unit_test(test_list_table_is_aligned_and_fits_the_width),
        cmocka_unit_test(test_json_output_is_indented_like_jq),
        cmocka_unit_test(test_exit_code_from_job_outcome),
        cmocka_unit_test(test_exit_reason_lines),
        cmocka_unit_test(test_exit_code_for_each_error),
        cmocka_unit_test(test_error_messages_say_what_to_do),
        cmocka_unit_test(test_usage_error_is_one_line_and_exit_64),
        cmocka_unit_test(test_base64_roundtrip_and_strictness),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
