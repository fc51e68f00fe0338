/* The log module: byte-exact lines, escaping of hostile values, filtering,
 * reopen after logrotate, whole lines under concurrent writers, and the
 * routing of libevent's and SQLite's messages. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <event2/event.h>
#include <sqlite3.h>

#include "jobq/log.h"

/* 2025-06-01T12:00:00.123Z */
static int64_t
fixed_clock(void)
{
    return 1748779200123LL;
}

struct fx {
    char dir[64];
    char path[128];
};

static int
setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    strcpy(fx->dir, "/tmp/test_log.XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof(fx->path), "%s/jobqd.log", fx->dir);
    assert_int_equal(log_open_file(fx->path), 0);
    log_set_clock(fixed_clock);
    log_set_level(LOG_LEVEL_INFO);
    log_set_format(LOG_FORMAT_TEXT);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *fx = *state;
    char cmd[160];
    log_open_file(NULL);
    log_set_clock(NULL);
    log_set_format(LOG_FORMAT_TEXT);
    log_set_level(LOG_LEVEL_INFO);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

/* Returns the whole file (malloc'd, NUL-terminated). */
static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long n;
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Asserts the file holds exactly want, then empties it. */
static void
expect_log(struct fx *fx, const char *want)
{
    char *got = slurp(fx->path);
    assert_string_equal(got, want);
    free(got);
    assert_int_equal(truncate(fx->path, 0), 0);
}

static cJSON *
parse_line(struct fx *fx)
{
    char *got = slurp(fx->path);
    char *nl = strchr(got, '\n');
    cJSON *j;
    assert_non_null(nl);
    assert_true(nl[1] == '\0'); /* exactly one line */
    j = cJSON_ParseWithLength(got, (size_t)(nl - got));
    assert_non_null(j);
    free(got);
    assert_int_equal(truncate(fx->path, 0), 0);
    return j;
}

static void
test_text_line_is_byte_exact(void **state)
{
    int64_t id = 42, dur_ms = 1530;
    log_info("job.finish", "id=%" PRId64 " attempt=%d exit=%d dur_ms=%" PRId64, id, 1, 0, dur_ms);
    expect_log(*state,
               "2025-06-01T12:00:00.123Z info job.finish id=42 attempt=1 exit=0 dur_ms=1530\n");
}

static void
test_json_line_is_byte_exact(void **state)
{
    log_set_format(LOG_FORMAT_JSON);
    log_info("job.finish", "id=%d attempt=%d exit=%d dur_ms=%d", 42, 1, 0, 1530);
    expect_log(*state, "{\"ts\":\"2025-06-01T12:00:00.123Z\",\"level\":\"info\",\"event\":"
                       "\"job.finish\",\"id\":42,\"attempt\":1,\"exit\":0,\"dur_ms\":1530}\n");
}

static void
test_event_without_fields(void **state)
{
    log_warn("daemon.draining", "");
    expect_log(*state, "2025-06-01T12:00:00.123Z warn daemon.draining\n");
    log_set_format(LOG_FORMAT_JSON);
    log_error("daemon.draining", "");
    expect_log(*state, "{\"ts\":\"2025-06-01T12:00:00.123Z\",\"level\":\"error\",\"event\":"
                       "\"daemon.draining\"}\n");
}

static void
test_json_keeps_numbers_and_booleans_quotes_the_rest(void **state)
{
    log_set_format(LOG_FORMAT_JSON);
    log_info("x", "a=-7 b=1.5 c=2e3 d=007 e=0x10 f=true g=false h=nan i=12ab j= k=%s", log_q("42"));
    expect_log(*state, "{\"ts\":\"2025-06-01T12:00:00.123Z\",\"level\":\"info\",\"event\":\"x\","
                       "\"a\":-7,\"b\":1.5,\"c\":2e3,\"d\":\"007\",\"e\":\"0x10\",\"f\":true,"
                       "\"g\":false,\"h\":\"nan\",\"i\":\"12ab\",\"j\":\"\",\"k\":\"42\"}\n");
}

static void
test_quote_escapes_hostile_value(void **state)
{
    char buf[128];
    assert_string_equal(log_quote(buf, sizeof(buf), "rm -rf \"/tmp/a b\"\n\\\t\r\x01\x7f"),
                        "\"rm -rf \\\"/tmp/a b\\\"\\n\\\\\\t\\r\\x01\\x7f\"");
    assert_string_equal(log_quote(buf, sizeof(buf), NULL), "\"\"");
    assert_string_equal(log_quote(buf, sizeof(buf), ""), "\"\"");
}

static void
test_quote_keeps_utf8_escapes_invalid_bytes(void **state)
{
    char buf[128];
    /* é (valid), a lone continuation byte, an overlong '/', a surrogate, a
     * truncated sequence at the end. */
    assert_string_equal(
        log_quote(buf, sizeof(buf), "caf\xc3\xa9 \x80 \xc0\xaf \xed\xa0\x80 \xe2\x82"),
        "\"caf\xc3\xa9 \\x80 \\xc0\\xaf \\xed\\xa0\\x80 \\xe2\\x82\"");
}

static void
test_quote_cuts_long_value_between_characters(void **state)
{
    char buf[12];
    /* 8 bytes of room inside the quotes, minus "..." */
    assert_string_equal(log_quote(buf, sizeof(buf), "abcdefghijklmnop"), "\"abcdef...\"");
    assert_string_equal(log_quote(buf, sizeof(buf), "abcdefghi"), "\"abcdefghi\"");
    /* An escape is never split. */
    assert_string_equal(log_quote(buf, sizeof(buf), "abcde\n\n\n\n"), "\"abcde...\"");
    assert_string_equal(log_quote(buf, sizeof(buf), "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"),
                        "\"\xc3\xa9\xc3\xa9\xc3\xa9...\"");
}

static void
test_log_q_value_cannot_forge_a_line_or_field(void **state)
{
    const char *evil = "x\"\n2025-06-01T12:00:00.000Z error forged id=1 \" level=error";
    char *got;
    cJSON *j;

    log_info("job.spawn", "id=7 cmd=%s", log_q(evil));
    got = slurp(((struct fx *)*state)->path);
    assert_string_equal(got, "2025-06-01T12:00:00.123Z info job.spawn id=7 cmd=\"x\\\"\\n2025-06-"
                             "01T12:00:00.000Z error forged id=1 \\\" level=error\"\n");
    free(got);
    assert_int_equal(truncate(((struct fx *)*state)->path, 0), 0);

    log_set_format(LOG_FORMAT_JSON);
    log_info("job.spawn", "id=7 cmd=%s", log_q(evil));
    j = parse_line(*state);
    assert_string_equal(cJSON_GetObjectItem(j, "level")->valuestring, "info");
    assert_string_equal(cJSON_GetObjectItem(j, "cmd")->valuestring, evil);
    assert_int_equal(cJSON_GetArraySize(j), 5);
    cJSON_Delete(j);
}

static void
test_unquoted_control_bytes_cannot_break_the_line(void **state)
{
    log_info("x", "path=%s", "a\nb\rc\x1b[31m");
    expect_log(*state, "2025-06-01T12:00:00.123Z info x path=a\\x0ab\\x0dc\\x1b[31m\n");
    log_set_format(LOG_FORMAT_JSON);
    log_info("x", "path=%s", "a\nb\x1b");
    expect_log(*state, "{\"ts\":\"2025-06-01T12:00:00.123Z\",\"level\":\"info\",\"event\":\"x\","
                       "\"path\":\"a\\nb\\u001b\"}\n");
}

static void
test_json_replaces_invalid_utf8(void **state)
{
    log_set_format(LOG_FORMAT_JSON);
    /* Quoted: the \xNN escapes of log_quote decode to the bad bytes, each
     * becomes U+FFFD; valid UTF-8 survives. Unquoted: the same. */
    log_info("x", "q=%s raw=%s", log_q("\xff\xc3\xa9\xc0"), "\xfe\xe2\x82\xac");
    expect_log(*state, "{\"ts\":\"2025-06-01T12:00:00.123Z\",\"level\":\"info\",\"event\":\"x\","
                       "\"q\":\"\xef\xbf\xbd\xc3\xa9\xef\xbf\xbd\",\"raw\":\"\xef\xbf\xbd\xe2\x82"
                       "\xac\"}\n");
}

static void
test_json_collects_non_field_words_in_msg(void **state)
{
    log_set_format(LOG_FORMAT_JSON);
    log_info("x", "id=1 stray words \"in quotes\" n=2 =bad");
    expect_log(*state, "{\"ts\":\"2025-06-01T12:00:00.123Z\",\"level\":\"info\",\"event\":\"x\","
                       "\"id\":1,\"n\":2,\"msg\":\"stray words \\\"in quotes\\\" =bad\"}\n");
}

static void
test_json_half_quoted_value_is_a_string(void **state)
{
    cJSON *j;
    log_set_format(LOG_FORMAT_JSON);
    /* Quotes toggle at each '"', so this is one token whose value is not
     * one quoted string: it is kept verbatim as a string. */
    log_info("x", "a=\"open b=\"x\"y c=\"\\");
    j = parse_line(*state);
    assert_string_equal(cJSON_GetObjectItem(j, "a")->valuestring, "\"open b=\"x\"y c=\"\\");
    assert_int_equal(cJSON_GetArraySize(j), 4);
    cJSON_Delete(j);
}

static void
test_level_filter_drops_lines(void **state)
{
    log_set_level(LOG_LEVEL_WARN);
    log_debug("d", "n=1");
    log_info("i", "n=2");
    log_warn("w", "n=3");
    log_error("e", "n=4");
    expect_log(*state, "2025-06-01T12:00:00.123Z warn w n=3\n"
                       "2025-06-01T12:00:00.123Z error e n=4\n");
    log_set_level(LOG_LEVEL_DEBUG);
    log_debug("d", "n=5");
    expect_log(*state, "2025-06-01T12:00:00.123Z debug d n=5\n");
    assert_true(log_enabled(LOG_LEVEL_DEBUG));
    log_set_level(LOG_LEVEL_ERROR);
    assert_false(log_enabled(LOG_LEVEL_WARN));
    assert_int_equal(log_get_level(), LOG_LEVEL_ERROR);
}

static int calls;

static int
counted(void)
{
    return ++calls;
}

static void
test_filtered_line_does_not_evaluate_arguments(void **state)
{
    calls = 0;
    log_set_level(LOG_LEVEL_INFO);
    log_debug("d", "n=%d", counted());
    assert_int_equal(calls, 0);
    log_info("i", "n=%d", counted());
    assert_int_equal(calls, 1);
    expect_log(*state, "2025-06-01T12:00:00.123Z info i n=1\n");
}

static void
test_level_and_format_names_parse(void **state)
{
    enum log_level l;
    enum log_format f;
    char why[128] = "";
    assert_int_equal(log_level_parse("debug", &l, why, sizeof(why)), 0);
    assert_int_equal(l, LOG_LEVEL_DEBUG);
    assert_int_equal(log_level_parse("warn", &l, why, sizeof(why)), 0);
    assert_int_equal(l, LOG_LEVEL_WARN);
    assert_int_equal(log_level_parse("verbose", &l, why, sizeof(why)), -EINVAL);
    assert_string_equal(why, "bad log level \"verbose\": expected error, warn, info or debug");
    assert_int_equal(log_level_parse("INFO", &l, NULL, 0), -EINVAL);
    assert_int_equal(log_format_parse("json", &f, why, sizeof(why)), 0);
    assert_int_equal(f, LOG_FORMAT_JSON);
    assert_int_equal(log_format_parse("xml", &f, why, sizeof(why)), -EINVAL);
    assert_string_equal(why, "bad log format \"xml\": expected text or json");
    assert_string_equal(log_level_name(LOG_LEVEL_ERROR), "error");
    assert_string_equal(log_format_name(LOG_FORMAT_TEXT), "text");
}

static void
test_long_line_is_cut_at_a_field_boundary(void **state)
{
    char big[600];
    char *got;
    size_t n;
    cJSON *j;

    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    /* Ten 600-byte fields: more than a 4096-byte line. */
    log_info("big", "a=%s b=%s c=%s d=%s e=%s f=%s g=%s h=%s i=%s j=%s", big, big, big, big, big,
             big, big, big, big, big);
    got = slurp(((struct fx *)*state)->path);
    n = strlen(got);
    assert_true(n <= JOBQ_LOG_LINE_MAX_BYTES);
    assert_string_equal(got + n - strlen(" truncated=true\n"), " truncated=true\n");
    assert_non_null(strstr(got, " f=vvv"));
    assert_null(strstr(got, " g=v"));
    free(got);
    assert_int_equal(truncate(((struct fx *)*state)->path, 0), 0);

    log_set_format(LOG_FORMAT_JSON);
    log_info("big", "a=%s b=%s c=%s d=%s e=%s f=%s g=%s h=%s i=%s j=%s", big, big, big, big, big,
             big, big, big, big, big);
    j = parse_line(*state);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "truncated")));
    assert_non_null(cJSON_GetObjectItem(j, "f"));
    assert_null(cJSON_GetObjectItem(j, "g"));
    cJSON_Delete(j);
}

static void
test_format_overflow_drops_the_partial_field(void **state)
{
    static char huge[JOBQ_LOG_LINE_MAX_BYTES * 2];
    char *got;

    memset(huge, 'w', sizeof(huge) - 1);
    log_info("huge", "a=1 b=%s", huge);
    got = slurp(((struct fx *)*state)->path);
    assert_string_equal(got, "2025-06-01T12:00:00.123Z info huge a=1 truncated=true\n");
    free(got);
}

static void
test_errno_is_preserved(void **state)
{
    errno = EXDEV;
    log_info("x", "a=1");
    assert_int_equal(errno, EXDEV);
}

static void
test_reopen_after_rename_writes_the_new_file(void **state)
{
    struct fx *fx = *state;
    char rotated[160], *got;

    log_info("one", "n=1");
    snprintf(rotated, sizeof(rotated), "%s.1", fx->path);
    assert_int_equal(rename(fx->path, rotated), 0);
    log_info("two", "n=2"); /* still the renamed file: no reopen yet */
    assert_int_equal(log_reopen(), 0);
    log_info("three", "n=3");
    got = slurp(rotated);
    assert_string_equal(got, "2025-06-01T12:00:00.123Z info one n=1\n"
                             "2025-06-01T12:00:00.123Z info two n=2\n");
    free(got);
    expect_log(fx, "2025-06-01T12:00:00.123Z info three n=3\n");
}

static void
test_reopen_failure_keeps_the_old_file_and_says_so(void **state)
{
    struct fx *fx = *state;
    char sub[96], path[128], moved[96], movedpath[160], *got;

    snprintf(sub, sizeof(sub), "%s/sub", fx->dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(path, sizeof(path), "%s/d.log", sub);
    assert_int_equal(log_open_file(path), 0);
    log_info("one", "n=1");
    /* The directory moves away: the path can't be created again. */
    snprintf(moved, sizeof(moved), "%s/moved", fx->dir);
    assert_int_equal(rename(sub, moved), 0);
    assert_int_equal(log_reopen(), -ENOENT);
    log_info("two", "n=2");
    snprintf(movedpath, sizeof(movedpath), "%s/d.log", moved);
    got = slurp(movedpath);
    char want[512];
    snprintf(want, sizeof(want),
             "2025-06-01T12:00:00.123Z info one n=1\n"
             "2025-06-01T12:00:00.123Z error log.reopen_failed path=\"%s\" err=\"No such file or "
             "directory\"\n"
             "2025-06-01T12:00:00.123Z info two n=2\n",
             path);
    assert_string_equal(got, want);
    free(got);
}

static void
test_open_file_failure_keeps_the_sink(void **state)
{
    assert_int_equal(log_open_file("/nonexistent-dir/x/y.log"), -ENOENT);
    log_info("still", "n=1");
    expect_log(*state, "2025-06-01T12:00:00.123Z info still n=1\n");
}

static void
test_null_path_returns_to_stderr(void **state)
{
    int p[2], saved;
    char buf[256];
    ssize_t n;

    assert_int_equal(pipe(p), 0);
    saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
    assert_int_equal(log_open_file(NULL), 0);
    log_info("on", "stderr=true");
    assert_int_equal(log_reopen(), 0); /* nothing to reopen */
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(p[1]);
    n = read(p[0], buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    close(p[0]);
    assert_string_equal(buf, "2025-06-01T12:00:00.123Z info on stderr=true\n");
    expect_log(*state, "");
}

#define WRITERS 8
#define LINES_EACH 2000

static void *
writer(void *arg)
{
    int id = (int)(intptr_t)arg;
    char pad[1200];

    for (int i = 0; i < LINES_EACH; i++) {
        size_t n = (size_t)(i * 37 + id * 101) % sizeof(pad);
        memset(pad, 'a' + id, n);
        pad[n] = '\0';
        log_info("w", "writer=%d seq=%d pad=%s end=1", id, i, pad);
    }
    return NULL;
}

static void
test_concurrent_writers_produce_whole_lines(void **state)
{
    pthread_t t[WRITERS];
    int next[WRITERS] = {0};
    char *got, *line, *save;
    int lines = 0;

    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, writer, (void *)(intptr_t)i), 0);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(t[i], NULL);
    got = slurp(((struct fx *)*state)->path);
    for (line = strtok_r(got, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int w, seq, off = 0;
        assert_int_equal(
            sscanf(line, "2025-06-01T12:00:00.123Z info w writer=%d seq=%d pad=%n", &w, &seq, &off),
            2);
        assert_true(w >= 0 && w < WRITERS);
        assert_int_equal(seq, next[w]); /* each writer's lines in order, none lost */
        next[w]++;
        size_t n = strspn(line + off, (char[]){(char)('a' + w), 0});
        assert_string_equal(line + off + n, " end=1");
        lines++;
    }
    free(got);
    assert_int_equal(lines, WRITERS * LINES_EACH);
    assert_int_equal(log_write_errors(), 0);
}

static void
test_libevent_messages_are_routed(void **state)
{
    struct event_base *base;
    char *got;

    log_route_libevent();
    log_set_level(LOG_LEVEL_DEBUG);
    event_enable_debug_logging(EVENT_DBG_ALL);
    base = event_base_new();
    assert_non_null(base);
    event_base_free(base);
    event_enable_debug_logging(EVENT_DBG_NONE);
    got = slurp(((struct fx *)*state)->path);
    if (got[0] == '\0') {
        free(got);
        skip(); /* this libevent was built without debug logging */
    }
    assert_non_null(strstr(got, "2025-06-01T12:00:00.123Z debug libevent msg=\""));
    free(got);
}

static void
test_sqlite_errors_are_routed(void **state)
{
    sqlite3 *db;
    char *got;

    assert_int_equal(log_route_sqlite(), 0);
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db, "SELEKT 1", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    got = slurp(((struct fx *)*state)->path);
    assert_non_null(strstr(got, "2025-06-01T12:00:00.123Z error sqlite code=1 name=\"SQL logic "
                                "error\" msg=\"near \\\"SELEKT\\\": syntax error"));
    free(got);
    /* Once SQLite is initialised the log can no longer be routed. */
    assert_int_equal(log_route_sqlite(), -EBUSY);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_text_line_is_byte_exact),
        T(test_json_line_is_byte_exact),
        T(test_event_without_fields),
        T(test_json_keeps_numbers_and_booleans_quotes_the_rest),
        T(test_quote_escapes_hostile_value),
        T(test_quote_keeps_utf8_escapes_invalid_bytes),
        T(test_quote_cuts_long_value_between_characters),
        T(test_log_q_value_cannot_forge_a_line_or_field),
        T(test_unquoted_control_bytes_cannot_break_the_line),
        T(test_json_replaces_invalid_utf8),
        T(test_json_collects_non_field_words_in_msg),
        T(test_json_half_quoted_value_is_a_string),
        T(test_level_filter_drops_lines),
        T(test_filtered_line_does_not_evaluate_arguments),
        T(test_level_and_format_names_parse),
        T(test_long_line_is_cut_at_a_field_boundary),
        T(test_format_overflow_drops_the_partial_field),
        T(test_errno_is_preserved),
        T(test_reopen_after_rename_writes_the_new_file),
        T(test_reopen_failure_keeps_the_old_file_and_says_so),
        T(test_open_file_failure_keeps_the_sink),
        T(test_null_path_returns_to_stderr),
        T(test_concurrent_writers_produce_whole_lines),
        T(test_libevent_messages_are_routed),
        T(test_sqlite_errors_are_routed),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
