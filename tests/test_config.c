/* jobqd's configuration: every type's parser, the precedence flag > env >
 * file > default, error messages that name their source, queue lists,
 * help, dump and reload. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "jobq/config.h"
#include "jobq/limits.h"

struct fx {
    char dir[64];
    char cwd[PATH_MAX];
    char why[512];
    struct config *cfg;
};

static const struct config_defaults defaults = {7, "/srv/jobq"};

static int
setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    strcpy(fx->dir, "/tmp/test_config.XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    assert_non_null(getcwd(fx->cwd, sizeof(fx->cwd)));
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *fx = *state;
    char cmd[160];
    config_free(fx->cfg);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

/* Writes fx->dir/name; returns its path (static buffer per call site is
 * not needed: the caller copies). */
static void
write_file(struct fx *fx, const char *name, const char *content, char *path, size_t len)
{
    FILE *f;
    snprintf(path, len, "%s/%s", fx->dir, name);
    assert_non_null(f = fopen(path, "w"));
    assert_int_equal(fwrite(content, 1, strlen(content), f), strlen(content));
    fclose(f);
}

/* Loads a fresh config from argv and env (NULL-terminated lists, argv
 * without the program name). Returns config_load's status; fx->cfg holds
 * the config either way. */
static int
load(struct fx *fx, const char *const *args, const char *const *env)
{
    char *argv[64] = {"jobqd"};
    int argc = 1;
    for (; args && args[argc - 1]; argc++)
        argv[argc] = (char *)args[argc - 1];
    config_free(fx->cfg);
    fx->cfg = NULL;
    assert_int_equal(config_new(&defaults, &fx->cfg), 0);
    fx->why[0] = '\0';
    return config_load(fx->cfg, argc, argv, (char **)env, fx->why, sizeof(fx->why));
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NONE ((const char *const *)NULL)

/* Loads a config file with the given content through --config. */
static int
load_file(struct fx *fx, const char *content, char *path, size_t len)
{
    write_file(fx, "jobqd.conf", content, path, len);
    return load(fx, ARGS("--config", path), NONE);
}

/* Asserts that loading fails with exactly this reason. */
static void
expect_error(struct fx *fx, int rc, const char *want)
{
    assert_int_equal(rc, -EINVAL);
    assert_string_equal(fx->why, want);
}

static void
test_defaults_match_the_table_and_limits(void **state)
{
    struct fx *fx = *state;
    struct config *cfg;

    assert_int_equal(load(fx, NONE, NONE), 0);
    cfg = fx->cfg;
    assert_null(cfg->config_file);
    assert_string_equal(cfg->state_dir, "/srv/jobq");
    assert_string_equal(cfg->socket, "/srv/jobq/jobq.sock");
    assert_int_equal(cfg->threads, 7);
    assert_int_equal(cfg->concurrency, 64);
    assert_int_equal(cfg->max_queued, 1000000);
    assert_int_equal(cfg->shutdown_grace_ms, 30000);
    assert_int_equal(cfg->request_timeout_ms, 10000);
    assert_int_equal(cfg->max_connections, 4096);
    assert_null(cfg->http.host);
    assert_int_equal(cfg->log_level, LOG_LEVEL_INFO);
    assert_int_equal(cfg->log_format, LOG_FORMAT_TEXT);
    assert_null(cfg->log_file);
    assert_int_equal(cfg->log_cap_bytes, JOBQ_LOG_CAP_BYTES);
    assert_int_equal(cfg->kill_grace_ms, JOBQ_KILL_GRACE_MS);
    assert_false(cfg->foreground);
    assert_int_equal(cfg->queues.n, 0);
    assert_null(cfg->store);
    assert_false(cfg->help);
    assert_false(cfg->version);
}

static void
test_threads_default_is_the_callers_cpu_count(void **state)
{
    struct config *cfg;
    struct config_defaults d = {0, NULL};

    assert_int_equal(config_new(&d, &cfg), 0);
    assert_int_equal(cfg->threads, 1); /* never below one */
    assert_string_equal(cfg->state_dir, "/var/lib/jobq");
    config_free(cfg);
    d.threads = 3;
    assert_int_equal(config_new(&d, &cfg), 0);
    assert_int_equal(cfg->threads, 3);
    config_free(cfg);
    assert_int_equal(config_new(NULL, &cfg), 0);
    assert_int_equal(cfg->threads, 1);
    config_free(cfg);
}

static void
test_int_values_and_ranges(void **state)
{
    struct fx *fx = *state;

    assert_int_equal(load(fx, ARGS("--threads", "12"), NONE), 0);
    assert_int_equal(fx->cfg->threads, 12);
    expect_error(fx, load(fx, ARGS("--threads", "0"), NONE),
                 "--threads: 0 is out of range: must be from 1 to 1024");
    expect_error(fx, load(fx, ARGS("--threads=4x"), NONE),
                 "--threads: bad number \"4x\": expected a whole number from 1 to 1024");
    expect_error(fx, load(fx, ARGS("--threads="), NONE), "--threads: empty value");
    expect_error(fx, load(fx, ARGS("--threads", "+4"), NONE),
                 "--threads: bad number \"+4\": expected a whole number from 1 to 1024");
    expect_error(fx, load(fx, ARGS("--max-queued", "99999999999999999999999"), NONE),
                 "--max-queued: 99999999999999999999999 is out of range: must be from 1 to "
                 "1000000000");
    expect_error(fx, load(fx, ARGS("--concurrency", "-3"), NONE),
                 "--concurrency: -3 is out of range: must be from 1 to 1000000");
}

static void
test_bool_spellings(void **state)
{
    struct fx *fx = *state;
    const char *yes[] = {"true", "yes", "on", "1", "TRUE", "Yes"};
    const char *no[] = {"false", "no", "off", "0", "OFF"};
    char flag[32];

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        snprintf(flag, sizeof(flag), "--foreground=%s", yes[i]);
        assert_int_equal(load(fx, ARGS(flag), NONE), 0);
        assert_true(fx->cfg->foreground);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        snprintf(flag, sizeof(flag), "--foreground=%s", no[i]);
        assert_int_equal(load(fx, ARGS(flag), NONE), 0);
        assert_false(fx->cfg->foreground);
    }
    expect_error(fx, load(fx, ARGS("--foreground=maybe"), NONE),
                 "--foreground: bad boolean \"maybe\": expected true or false (yes/no, on/off, "
                 "1/0)");
}

static void
test_bool_flag_alone_is_true_and_takes_no_value(void **state)
{
    struct fx *fx = *state;

    assert_int_equal(load(fx, ARGS("--foreground"), NONE), 0);
    assert_true(fx->cfg->foreground);
    /* The next word is not its value. */
    expect_error(fx, load(fx, ARGS("--foreground", "false"), NONE),
                 "unexpected argument 'false': jobqd takes only --flags (see --help)");
}

static void
test_duration_values_and_ranges(void **state)
{
    struct fx *fx = *state;

    assert_int_equal(
        load(fx, ARGS("--shutdown-grace", "1m30s", "--kill-grace=90", "--request-timeout", "250ms"),
             NONE),
        0);
    assert_int_equal(fx->cfg->shutdown_grace_ms, 90000);
    assert_int_equal(fx->cfg->kill_grace_ms, 90000);
    assert_int_equal(fx->cfg->request_timeout_ms, 250);
    expect_error(fx, load(fx, ARGS("--kill-grace", "5x"), NONE),
                 "--kill-grace: bad duration \"5x\": unit must be ms, s, m, h or d");
    expect_error(fx, load(fx, ARGS("--request-timeout", "0"), NONE),
                 "--request-timeout: \"0\" is out of range: must be from 10ms to 1d");
    expect_error(fx, load(fx, ARGS("--kill-grace", "2h"), NONE),
                 "--kill-grace: \"2h\" is out of range: must be from 0ms to 1h");
}

static int64_t
size_of(const char *s)
{
    char why[128];
    int64_t v = -1;
    assert_int_equal(config_parse_size(s, &v, why, sizeof(why)), 0);
    return v;
}

static void
test_size_units(void **state)
{
    assert_int_equal(size_of("0"), 0);
    assert_int_equal(size_of("100"), 100);
    assert_int_equal(size_of("100B"), 100);
    assert_int_equal(size_of("512k"), 512 * 1024);
    assert_int_equal(size_of("512K"), 512 * 1024);
    assert_int_equal(size_of("10MiB"), 10 * 1024 * 1024);
    assert_int_equal(size_of("10m"), 10 * 1024 * 1024);
    assert_int_equal(size_of("1.5M"), 1536 * 1024);
    assert_int_equal(size_of("2G"), 2LL << 30);
    assert_int_equal(size_of("1TiB"), 1LL << 40);
    assert_int_equal(size_of("10MB"), 10000000);
    assert_int_equal(size_of("4kB"), 4000);
}

static void
test_size_rejects_garbage_with_reason(void **state)
{
    const char *bad[] = {"", "k", "5 M", "12XB", "-1", "1..5M", "5MiBs", "99999999999999999999T"};
    char why[128];
    int64_t v;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        assert_int_equal(config_parse_size(bad[i], &v, why, sizeof(why)), -EINVAL);
        assert_true(strlen(why) > 0);
    }
    assert_int_equal(config_parse_size("12XB", &v, why, sizeof(why)), -EINVAL);
    assert_string_equal(why, "bad size \"12XB\": expected bytes or a number with a unit, like "
                             "512k, 10MiB, 1G");
}

static void
test_size_key_range(void **state)
{
    struct fx *fx = *state;

    assert_int_equal(load(fx, ARGS("--log-cap", "512k"), NONE), 0);
    assert_int_equal(fx->cfg->log_cap_bytes, 512 * 1024);
    expect_error(fx, load(fx, ARGS("--log-cap", "2T"), NONE),
                 "--log-cap: \"2T\" is out of range: must be from 0 to 1TiB");
}

static void
test_log_level_and_format_values(void **state)
{
    struct fx *fx = *state;

    assert_int_equal(load(fx, ARGS("--log-level", "debug", "--log-format=json"), NONE), 0);
    assert_int_equal(fx->cfg->log_level, LOG_LEVEL_DEBUG);
    assert_int_equal(fx->cfg->log_format, LOG_FORMAT_JSON);
    expect_error(fx, load(fx, ARGS("--log-level", "loud"), NONE),
                 "--log-level: bad log level \"loud\": expected error, warn, info or debug");
    expect_error(fx, load(fx, ARGS("--log-format", "xml"), NONE),
                 "--log-format: bad log format \"xml\": expected text or json");
}

static void
test_http_address_forms(void **state)
{
    struct fx *fx = *state;

    assert_int_equal(load(fx, ARGS("--http", "127.0.0.1:9090"), NONE), 0);
    assert_string_equal(fx->cfg->http.host, "127.0.0.1");
    assert_int_equal(fx->cfg->http.port, 9090);
    assert_int_equal(load(fx, ARGS("--http", "[::1]:8080"), NONE), 0);
    assert_string_equal(fx->cfg->http.host, "::1");
    assert_int_equal(fx->cfg->http.port, 8080);
    assert_int_equal(load(fx, ARGS("--http", ":9090"), NONE), 0);
    assert_string_equal(fx->cfg->http.host, "0.0.0.0");
    assert_int_equal(load(fx, ARGS("--http", "localhost:1"), NONE), 0);
    assert_string_equal(fx->cfg->http.host, "localhost");
    assert_int_equal(load(fx, ARGS("--http", "off"), NONE), 0);
    assert_null(fx->cfg->http.host);
    assert_int_equal(load(fx, ARGS("--http="), NONE), 0);
    assert_null(fx->cfg->http.host);
}

static void
test_http_address_errors(void **state)
{
    struct fx *fx = *state;

    expect_error(fx, load(fx, ARGS("--http", "9090"), NONE),
                 "--http: bad address \"9090\": expected ADDR:PORT, like 127.0.0.1:9090");
    expect_error(fx, load(fx, ARGS("--http", "::1:80"), NONE),
                 "--http: bad address \"::1:80\": put an IPv6 address in brackets, like "
                 "[::1]:9090");
    expect_error(fx, load(fx, ARGS("--http", "host:0"), NONE),
                 "--http: bad address \"host:0\": the port must be from 1 to 65535");
    expect_error(fx, load(fx, ARGS("--http", "host:70000"), NONE),
                 "--http: bad address \"host:70000\": the port must be from 1 to 65535");
    expect_error(fx, load(fx, ARGS("--http", "[::1]80"), NONE),
                 "--http: bad address \"[::1]80\": expected [IPV6]:PORT");
    expect_error(fx, load(fx, ARGS("--http", "a b:80"), NONE),
                 "--http: bad address \"a b:80\": expected ADDR:PORT, like 127.0.0.1:9090");
    expect_error(fx, load(fx, ARGS("--http", "['#0]:9"), NONE),
                 "--http: bad address \"['#0]:9\": expected ADDR:PORT, like 127.0.0.1:9090");
}

static void
test_relative_paths_resolve_against_start_dir_or_file_dir(void **state)
{
    struct fx *fx = *state;
    char path[256], want[PATH_MAX + 32];

    assert_int_equal(load(fx, ARGS("--state-dir", "./var", "--log-file", "logs/d.log"), NONE), 0);
    snprintf(want, sizeof(want), "%s/var", fx->cwd);
    assert_string_equal(fx->cfg->state_dir, want);
    snprintf(want, sizeof(want), "%s/var/jobq.sock", fx->cwd);
    assert_string_equal(fx->cfg->socket, want);
    snprintf(want, sizeof(want), "%s/logs/d.log", fx->cwd);
    assert_string_equal(fx->cfg->log_file, want);

    assert_int_equal(
        load_file(fx, "state-dir = state\nsocket = /run/jobq.sock\n", path, sizeof(path)), 0);
    snprintf(want, sizeof(want), "%s/state", fx->dir);
    assert_string_equal(fx->cfg->state_dir, want);
    assert_string_equal(fx->cfg->socket, "/run/jobq.sock");
    assert_string_equal(fx->cfg->config_file, path);
}

static void
test_socket_path_must_fit_sun_path(void **state)
{
    struct fx *fx = *state;
    char longp[200], flag[220];

    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    snprintf(flag, sizeof(flag), "--socket=%s", longp);
    expect_error(fx, load(fx, ARGS(flag), NONE),
                 "--socket: socket path is 199 bytes; a Unix socket path holds at most 107");
    snprintf(flag, sizeof(flag), "--state-dir=%s", longp);
    expect_error(fx, load(fx, ARGS(flag), NONE),
                 "state-dir is too long for the default socket (set --socket): socket path is "
                 "209 bytes; a Unix socket path holds at most 107");
    /* With an explicit socket a long state dir is fine. */
    assert_int_equal(load(fx, ARGS(flag, "--socket", "/run/j.sock"), NONE), 0);
}

static void
test_queue_list_accumulates_and_merges_by_name(void **state)
{
    struct fx *fx = *state;
    char path[256], arg[300];
    struct config *cfg;

    write_file(fx, "q.conf", "queue = build=5\nqueue = deploy=1\nqueue = zeta=9, alpha=4\n", path,
               sizeof(path));
    snprintf(arg, sizeof(arg), "--config=%s", path);
    assert_int_equal(load(fx, ARGS(arg, "--queue", "build=2", "--queue", "new=7"),
                          ARGS("JOBQD_QUEUE=test=3,deploy=2")),
                     0);
    cfg = fx->cfg;
    assert_int_equal(cfg->queues.n, 6);
    /* Sorted by name; the flag beat the file for build, the env for deploy. */
    const char *names[] = {"alpha", "build", "deploy", "new", "test", "zeta"};
    const int limits[] = {4, 2, 2, 7, 3, 9};
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(cfg->queues.v[i].name, names[i]);
        assert_int_equal(cfg->queues.v[i].concurrency, limits[i]);
    }
}

static void
test_queue_entry_errors(void **state)
{
    struct fx *fx = *state;

    expect_error(fx, load(fx, ARGS("--queue", "build"), NONE),
                 "--queue: bad queue limit \"build\": expected NAME=N, like build=2");
    expect_error(fx, load(fx, ARGS("--queue", "=2"), NONE),
                 "--queue: bad queue limit \"=2\": expected NAME=N, like build=2");
    expect_error(fx, load(fx, ARGS("--queue", "build=0"), NONE),
                 "--queue: queue 'build': 0 is out of range: must be from 1 to 1000000");
    expect_error(fx, load(fx, ARGS("--queue", "build=x"), NONE),
                 "--queue: queue 'build': bad number \"x\": expected a whole number from 1 to "
                 "1000000");
    expect_error(fx, load(fx, ARGS("--queue", "a,b=1"), NONE),
                 "--queue: bad queue limit \"a\": expected NAME=N, like build=2");
    expect_error(fx, load(fx, ARGS("--queue", "bu ild=2"), NONE),
                 "--queue: bad queue name \"bu ild\": at most 200 bytes of UTF-8 without spaces "
                 "or control characters");
    expect_error(fx, load(fx, ARGS("--queue", ""), NONE), "--queue: empty value");
    /* UTF-8 names are fine. */
    assert_int_equal(load(fx, ARGS("--queue", "\xc3\xa9t\xc3\xa9=3"), NONE), 0);
    assert_string_equal(fx->cfg->queues.v[0].name, "\xc3\xa9t\xc3\xa9");
}

static void
test_precedence_flag_over_env_over_file_over_default(void **state)
{
    struct fx *fx = *state;
    char path[256], arg[300];
    struct config *cfg;

    write_file(fx, "p.conf",
               "threads = 2\nconcurrency = 10\nmax-queued = 5\nlog-level = warn\n"
               "log-format = json\n",
               path, sizeof(path));
    snprintf(arg, sizeof(arg), "--config=%s", path);
    assert_int_equal(
        load(fx, ARGS(arg, "--threads", "4", "--log-level=error"),
             ARGS("JOBQD_THREADS=3", "JOBQD_CONCURRENCY=20", "JOBQD_LOG_LEVEL=debug", "PATH=/bin")),
        0);
    cfg = fx->cfg;
    assert_int_equal(cfg->threads, 4);                 /* flag > env > file */
    assert_int_equal(cfg->log_level, LOG_LEVEL_ERROR); /* flag > env > file */
    assert_int_equal(cfg->concurrency, 20);            /* env > file */
    assert_int_equal(cfg->max_queued, 5);              /* file > default */
    assert_int_equal(cfg->log_format, LOG_FORMAT_JSON);
    assert_int_equal(cfg->kill_grace_ms, 5000); /* default */
}

static void
test_last_flag_wins(void **state)
{
    struct fx *fx = *state;

    assert_int_equal(load(fx, ARGS("--threads", "2", "--threads=3"), NONE), 0);
    assert_int_equal(fx->cfg->threads, 3);
}

static void
test_env_names_the_config_file(void **state)
{
    struct fx *fx = *state;
    char path[256], env[300];

    write_file(fx, "e.conf", "threads = 9\n", path, sizeof(path));
    snprintf(env, sizeof(env), "JOBQD_CONFIG=%s", path);
    assert_int_equal(load(fx, NONE, ARGS(env)), 0);
    assert_int_equal(fx->cfg->threads, 9);
    assert_string_equal(fx->cfg->config_file, path);
    /* A --config flag beats JOBQD_CONFIG. */
    assert_int_equal(load(fx, ARGS("--config", "/nonexistent/x.conf"), ARGS(env)), -EINVAL);
    assert_string_equal(fx->why,
                        "--config: cannot read /nonexistent/x.conf: No such file or directory");
}

static void
test_file_syntax_comments_quotes_crlf_bom(void **state)
{
    struct fx *fx = *state;
    char path[256];

    assert_int_equal(load_file(fx,
                               "\xef\xbb\xbf# jobqd.conf\n"
                               "\n"
                               "   # indented comment\n"
                               "threads=3\r\n"
                               "  concurrency   =   11  \n"
                               "log-file = \"/var/log/a \\\"b\\\" #c.log\"\n"
                               "store = ''\n"
                               "socket = '/run/x\\y.sock'\n"
                               "\t\n"
                               "http = \"\"\n",
                               path, sizeof(path)),
                     0);
    assert_int_equal(fx->cfg->threads, 3);
    assert_int_equal(fx->cfg->concurrency, 11);
    assert_string_equal(fx->cfg->log_file, "/var/log/a \"b\" #c.log");
    assert_null(fx->cfg->store);
    assert_string_equal(fx->cfg->socket, "/run/x\\y.sock");
    assert_null(fx->cfg->http.host);
}

static void
test_file_error_names_file_line_and_key(void **state)
{
    struct fx *fx = *state;
    char path[256], want[512];
    int rc;

    rc = load_file(fx, "# c\nthreads = 2\nkill-grace = 5x\n", path, sizeof(path));
    snprintf(want, sizeof(want),
             "%s:3: key 'kill-grace': bad duration \"5x\": unit must be ms, s, m, h or d", path);
    expect_error(fx, rc, want);
    rc = load_file(fx, "threads = 4 # four\n", path, sizeof(path));
    snprintf(want, sizeof(want),
             "%s:1: key 'threads': bad number \"4 # four\": expected a whole number from 1 to 1024",
             path);
    expect_error(fx, rc, want);
}

static void
test_file_keys_take_underscores_for_dashes(void **state)
{
    struct fx *fx = *state;
    char path[256];

    assert_int_equal(
        load_file(fx, "max_queued = 5\nkill_grace = 2s\nmax-connections = 9\n", path, sizeof(path)),
        0);
    assert_int_equal(fx->cfg->max_queued, 5);
    assert_int_equal(fx->cfg->kill_grace_ms, 2000);
    assert_int_equal(fx->cfg->max_connections, 9);
}

static void
test_file_unknown_key_is_an_error_with_suggestion(void **state)
{
    struct fx *fx = *state;
    char path[256], want[512];
    int rc;

    rc = load_file(fx, "threads = 2\nthread = 3\n", path, sizeof(path));
    snprintf(want, sizeof(want), "%s:2: unknown key 'thread' (did you mean 'threads'?)", path);
    expect_error(fx, rc, want);
    rc = load_file(fx, "state_dri = /x\n", path, sizeof(path));
    snprintf(want, sizeof(want), "%s:1: unknown key 'state_dri' (did you mean 'state-dir'?)", path);
    expect_error(fx, rc, want);
    rc = load_file(fx, "level = debug\n", path, sizeof(path));
    snprintf(want, sizeof(want), "%s:1: unknown key 'level' (did you mean 'log-level'?)", path);
    expect_error(fx, rc, want);
    rc = load_file(fx, "colour = blue\n", path, sizeof(path));
    snprintf(want, sizeof(want), "%s:1: unknown key 'colour'", path);
    expect_error(fx, rc, want);
}

static void
test_file_malformed_lines(void **state)
{
    struct fx *fx = *state;
    char path[256], want[512];
    int rc;

    rc = load_file(fx, "threads 4\n", path, sizeof(path));
    snprintf(want, sizeof(want), "%s:1: expected \"key = value\", got \"threads 4\"", path);
    expect_error(fx, rc, want);
    rc = load_file(fx, "\n = 4\n", path, sizeof(path));
    snprintf(want, sizeof(want), "%s:2: missing key before '='", path);
    expect_error(fx, rc, want);
    rc = load_file(fx, "log-file = \"/a\n", path, sizeof(path));
    snprintf(want, sizeof(want), "%s:1: key 'log-file': unterminated double quote", path);
    expect_error(fx, rc, want);
    rc = load_file(fx, "log-file = \"/a\" x\n", path, sizeof(path));
    snprintf(want, sizeof(want), "%s:1: key 'log-file': text after the closing quote", path);
    expect_error(fx, rc, want);
    rc = load_file(fx, "config = /etc/other.conf\n", path, sizeof(path));
    snprintf(want, sizeof(want),
             "%s:1: key 'config': only --config or JOBQD_CONFIG can name the config file", path);
    expect_error(fx, rc, want);
    rc = load_file(fx, "log-file = /a\x01\n", path, sizeof(path));
    snprintf(want, sizeof(want),
             "%s:1: key 'log-file': \"/a?\" holds control characters or invalid UTF-8", path);
    expect_error(fx, rc, want);
}

static void
test_parse_buf_rejects_nul_bytes(void **state)
{
    struct config *cfg;
    char why[256];
    static const char buf[] = "threads = 2\nthreads\0 = 3\n";

    assert_int_equal(config_new(&defaults, &cfg), 0);
    assert_int_equal(config_parse_buf(cfg, "mem.conf", buf, sizeof(buf) - 1, why, sizeof(why)),
                     -EINVAL);
    assert_string_equal(why, "mem.conf:2: NUL byte in the line (is this a text file?)");
    assert_int_equal(cfg->threads, 2); /* lines before it were applied */
    config_free(cfg);
}

static void
test_config_file_must_be_a_readable_small_file(void **state)
{
    struct fx *fx = *state;
    char want[512], path[256];
    FILE *f;

    snprintf(want, sizeof(want), "--config: cannot read %s: it is a directory", fx->dir);
    expect_error(fx, load(fx, ARGS("--config", fx->dir), NONE), want);
    snprintf(path, sizeof(path), "%s/big.conf", fx->dir);
    assert_non_null(f = fopen(path, "w"));
    for (int i = 0; i < JOBQ_CONFIG_FILE_MAX_BYTES / 16 + 1; i++)
        fputs("# padding......\n", f);
    fclose(f);
    snprintf(want, sizeof(want), "--config: %s is larger than %d bytes: is it a config file?", path,
             JOBQ_CONFIG_FILE_MAX_BYTES);
    expect_error(fx, load(fx, ARGS("--config", path), NONE), want);
    expect_error(fx, load(fx, NONE, ARGS("JOBQD_CONFIG=/nonexistent.conf")),
                 "JOBQD_CONFIG: cannot read /nonexistent.conf: No such file or directory");
}

static void
test_flag_errors_name_the_flag(void **state)
{
    struct fx *fx = *state;

    expect_error(fx, load(fx, ARGS("--thread", "3"), NONE),
                 "--thread: unknown flag (did you mean --threads?)");
    expect_error(fx, load(fx, ARGS("--frobnicate"), NONE),
                 "--frobnicate: unknown flag (see --help)");
    expect_error(fx, load(fx, ARGS("--log-level"), NONE),
                 "--log-level: missing value (--log-level LEVEL)");
    expect_error(fx, load(fx, ARGS("--log-file", "--foreground"), NONE),
                 "--log-file: missing value: '--foreground' is the next flag (write "
                 "--log-file=--foreground if you mean it)");
    expect_error(fx, load(fx, ARGS("serve"), NONE),
                 "unexpected argument 'serve': jobqd takes only --flags (see --help)");
    expect_error(fx, load(fx, ARGS("-threads", "3"), NONE),
                 "unexpected argument '-threads': jobqd takes only --flags (see --help)");
    expect_error(fx, load(fx, ARGS("--"), NONE),
                 "unexpected argument '--': jobqd takes only --flags (see --help)");
    expect_error(fx, load(fx, ARGS("--store", "mysql://db/jobq"), NONE),
                 "--store: store must be a postgresql:// (or postgres://) URL, or empty for "
                 "SQLite in STATE_DIR/jobq.db");
    assert_int_equal(load(fx, ARGS("--store", "postgres://db/jobq"), NONE), 0);
    assert_string_equal(fx->cfg->store, "postgres://db/jobq");
}

static void
test_env_errors_name_the_variable(void **state)
{
    struct fx *fx = *state;

    expect_error(fx, load(fx, NONE, ARGS("JOBQD_THREADS=lots")),
                 "JOBQD_THREADS: bad number \"lots\": expected a whole number from 1 to 1024");
    expect_error(fx, load(fx, NONE, ARGS("JOBQD_THREAD=2")),
                 "JOBQD_THREAD: unknown variable (did you mean JOBQD_THREADS?)");
    expect_error(fx, load(fx, NONE, ARGS("JOBQD_state_dir=/x")),
                 "JOBQD_state_dir: unknown variable (did you mean JOBQD_STATE_DIR?)");
    expect_error(fx, load(fx, NONE, ARGS("JOBQD_FROBNICATE=1")),
                 "JOBQD_FROBNICATE: unknown variable (jobqd reads no other JOBQD_* variables)");
    /* Empty means unset; other prefixes are not ours. */
    assert_int_equal(load(fx, NONE, ARGS("JOBQD_THREADS=", "JOBQ_SOCKET=/x", "JOBQDX=1")), 0);
    assert_int_equal(fx->cfg->threads, 7);
    assert_int_equal(load(fx, NONE, ARGS("JOBQD_STATE_DIR=/data/jobq", "JOBQD_FOREGROUND=yes")), 0);
    assert_string_equal(fx->cfg->state_dir, "/data/jobq");
    assert_true(fx->cfg->foreground);
}

static void
test_help_and_version_win_over_everything(void **state)
{
    struct fx *fx = *state;

    assert_int_equal(
        load(fx, ARGS("--bogus", "--help", "--config", "/nonexistent"), ARGS("JOBQD_NOPE=1")), 0);
    assert_true(fx->cfg->help);
    assert_int_equal(load(fx, ARGS("--version"), NONE), 0);
    assert_true(fx->cfg->version);
    assert_false(fx->cfg->help);
    assert_int_equal(load(fx, ARGS("-h"), NONE), 0);
    assert_true(fx->cfg->help);
}

static void
test_usage_is_generated_from_the_table(void **state)
{
    char *u;

    assert_int_equal(config_usage(&defaults, &u), 0);
    assert_non_null(strstr(u, "Usage: jobqd"));
    const char *lines[] = {
        "  --config FILE ",
        "  --state-dir DIR ",
        "  --socket PATH ",
        "  --threads N ",
        "  --concurrency N ",
        "  --queue NAME=N ",
        "  --max-queued N ",
        "  --shutdown-grace DUR ",
        "  --request-timeout DUR ",
        "  --max-connections N ",
        "  --max-connections-per-uid N\n", /* too long: help on the next line */
        "  --http ADDR:PORT ",
        "  --http-token-file FILE ",
        "  --log-level LEVEL ",
        "  --log-format FORMAT ",
        "  --log-file PATH ",
        "  --log-cap SIZE ",
        "  --kill-grace DUR ",
        "  --foreground ",
        "  --store URL ",
        "  --help ",
        "  --version ",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        assert_non_null(strstr(u, lines[i]));
    assert_non_null(strstr(u, "Default: 7 here."));
    assert_non_null(strstr(u, "Default: /srv/jobq."));
    assert_non_null(strstr(u, "30s. [live]"));
    int live = 0;
    for (char *p = u; (p = strstr(p, "[live]")) != NULL; p++)
        live++;
    assert_int_equal(live, 1 + 9); /* the intro, then each live key */
    for (char *l = u; *l; l = strchr(l, '\n') + 1)
        assert_true(strchr(l, '\n') - l <= 100); /* wrapped at 100 columns */
    free(u);
}

static void
test_dump_reads_back_to_the_same_config(void **state)
{
    struct fx *fx = *state;
    struct config *back;
    char *text, live[256], restart[256];

    assert_int_equal(load(fx,
                          ARGS("--queue", "b=2,a=1", "--http", "[::1]:9090", "--log-cap", "1536k",
                               "--kill-grace", "1500ms", "--log-file", "/var/log/a b#.log",
                               "--foreground", "--log-format", "json", "--shutdown-grace", "2h"),
                          NONE),
                     0);
    assert_int_equal(config_dump(fx->cfg, &text), 0);
    assert_non_null(strstr(text, "log-cap = 1536KiB\n"));
    assert_non_null(strstr(text, "kill-grace = 1500ms\n"));
    assert_non_null(strstr(text, "shutdown-grace = 2h\n"));
    assert_non_null(strstr(text, "http = [::1]:9090\n"));
    assert_non_null(strstr(text, "log-file = \"/var/log/a b#.log\"\n"));
    assert_non_null(strstr(text, "queue = a=1\nqueue = b=2\n"));
    assert_int_equal(config_new(&defaults, &back), 0);
    assert_int_equal(config_parse_buf(back, "dump", text, strlen(text), fx->why, sizeof(fx->why)),
                     0);
    assert_int_equal(config_diff(fx->cfg, back, live, sizeof(live), restart, sizeof(restart)), 0);
    assert_string_equal(live, "");
    assert_string_equal(restart, "");
    config_free(back);
    free(text);
}

static void
test_reload_rereads_the_file_under_the_same_flags_and_env(void **state)
{
    struct fx *fx = *state;
    char path[256], arg[300], live[256], restart[256];
    struct config *next = NULL;

    write_file(fx, "r.conf", "threads = 2\nconcurrency = 10\nqueue = build=1\n", path,
               sizeof(path));
    snprintf(arg, sizeof(arg), "--config=%s", path);
    assert_int_equal(load(fx, ARGS(arg, "--concurrency", "5"), ARGS("JOBQD_MAX_QUEUED=77")), 0);
    write_file(fx, "r.conf",
               "threads = 3\nconcurrency = 20\nmax-queued = 1\nlog-level = debug\n"
               "queue = build=4\nqueue = test=1\n",
               path, sizeof(path));
    assert_int_equal(config_reload(fx->cfg, &next, fx->why, sizeof(fx->why)), 0);
    assert_int_equal(next->concurrency, 5); /* the flag still wins */
    assert_int_equal(next->max_queued, 77); /* so does the environment */
    assert_int_equal(next->threads, 3);
    assert_int_equal(next->log_level, LOG_LEVEL_DEBUG);
    assert_int_equal(next->queues.n, 2);
    assert_int_equal(config_diff(fx->cfg, next, live, sizeof(live), restart, sizeof(restart)), 3);
    assert_string_equal(live, "queue log-level");
    assert_string_equal(restart, "threads");
    /* A reload of the reload still knows the sources. */
    struct config *again = NULL;
    assert_int_equal(config_reload(next, &again, fx->why, sizeof(fx->why)), 0);
    assert_int_equal(config_diff(next, again, NULL, 0, NULL, 0), 0);
    config_free(again);
    config_free(next);
}

static void
test_reload_error_leaves_the_current_config(void **state)
{
    struct fx *fx = *state;
    char path[256], arg[300], want[512];
    struct config *next = NULL;

    write_file(fx, "r.conf", "threads = 2\n", path, sizeof(path));
    snprintf(arg, sizeof(arg), "--config=%s", path);
    assert_int_equal(load(fx, ARGS(arg), NONE), 0);
    write_file(fx, "r.conf", "threads = 2\nlog-level = chatty\n", path, sizeof(path));
    assert_int_equal(config_reload(fx->cfg, &next, fx->why, sizeof(fx->why)), -EINVAL);
    assert_null(next);
    snprintf(want, sizeof(want),
             "%s:2: key 'log-level': bad log level \"chatty\": expected error, warn, info or debug",
             path);
    assert_string_equal(fx->why, want);
    assert_int_equal(fx->cfg->threads, 2);
    assert_int_equal(fx->cfg->log_level, LOG_LEVEL_INFO);
}

static void
test_reload_resolves_relative_flags_against_the_start_dir(void **state)
{
    struct fx *fx = *state;
    struct config *next = NULL;
    char want[PATH_MAX + 16];

    assert_int_equal(load(fx, ARGS("--state-dir", "var"), NONE), 0);
    assert_int_equal(chdir(fx->dir), 0);
    assert_int_equal(config_reload(fx->cfg, &next, fx->why, sizeof(fx->why)), 0);
    assert_int_equal(chdir(fx->cwd), 0);
    snprintf(want, sizeof(want), "%s/var", fx->cwd);
    assert_string_equal(next->state_dir, want);
    config_free(next);
}

static void
test_live_keys(void **state)
{
    const char *live[] = {
        "log-level",      "log-format", "log-file",       "concurrency",
        "queue",          "max-queued", "shutdown-grace", "max-connections-per-uid",
        "http-token-file"};
    const char *restart[] = {"config",          "state-dir",  "socket",  "threads",
                             "request-timeout", "http",       "log-cap", "kill-grace",
                             "max-connections", "foreground", "store"};
    for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++)
        assert_int_equal(config_key_live(live[i]), 1);
    for (size_t i = 0; i < sizeof(restart) / sizeof(restart[0]); i++)
        assert_int_equal(config_key_live(restart[i]), 0);
    assert_int_equal(config_key_live("threadz"), -ENOENT);
}

static void
test_parse_buf_survives_arbitrary_bytes(void **state)
{
    /* A smoke test for the fuzz entry point: random and mutated input
     * either parses or fails with a reason, never crashes. */
    static const char seed[] = "threads = 4\nqueue = a=1,b=2\nhttp = [::1]:80\n"
                               "log-file = \"/x \\\" y\"\nlog-cap = 1.5M\nkill-grace = 1h30m\n";
    char buf[256], why[256];
    unsigned r = 12345;

    for (int iter = 0; iter < 20000; iter++) {
        struct config *cfg;
        size_t n = sizeof(seed) - 1;
        memcpy(buf, seed, n);
        for (int m = 0; m < 1 + iter % 8; m++) {
            r = r * 1103515245 + 12345;
            buf[(r >> 8) % n] = (char)(r >> 16);
        }
        assert_int_equal(config_new(&defaults, &cfg), 0);
        why[0] = '\0';
        int rc = config_parse_buf(cfg, "fuzz", buf, n, why, sizeof(why));
        assert_true(rc == 0 || (rc == -EINVAL && why[0] != '\0'));
        config_free(cfg);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_defaults_match_the_table_and_limits),
        T(test_threads_default_is_the_callers_cpu_count),
        T(test_int_values_and_ranges),
        T(test_bool_spellings),
        T(test_bool_flag_alone_is_true_and_takes_no_value),
        T(test_duration_values_and_ranges),
        T(test_size_units),
        T(test_size_rejects_garbage_with_reason),
        T(test_size_key_range),
        T(test_log_level_and_format_values),
        T(test_http_address_forms),
        T(test_http_address_errors),
        T(test_relative_paths_resolve_against_start_dir_or_file_dir),
        T(test_socket_path_must_fit_sun_path),
        T(test_queue_list_accumulates_and_merges_by_name),
        T(test_queue_entry_errors),
        T(test_precedence_flag_over_env_over_file_over_default),
        T(test_last_flag_wins),
        T(test_env_names_the_config_file),
        T(test_file_syntax_comments_quotes_crlf_bom),
        T(test_file_error_names_file_line_and_key),
        T(test_file_keys_take_underscores_for_dashes),
        T(test_file_unknown_key_is_an_error_with_suggestion),
        T(test_file_malformed_lines),
        T(test_parse_buf_rejects_nul_bytes),
        T(test_config_file_must_be_a_readable_small_file),
        T(test_flag_errors_name_the_flag),
        T(test_env_errors_name_the_variable),
        T(test_help_and_version_win_over_everything),
        T(test_usage_is_generated_from_the_table),
        T(test_dump_reads_back_to_the_same_config),
        T(test_reload_rereads_the_file_under_the_same_flags_and_env),
        T(test_reload_error_leaves_the_current_config),
        T(test_reload_resolves_relative_flags_against_the_start_dir),
        T(test_live_keys),
        T(test_parse_buf_survives_arbitrary_bytes),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
