/* The job model: names, spec validation, backoff with full jitter. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jobq/job.h"
#include "jobq/limits.h"

static char *argv_true[] = {"/bin/true", NULL};

static struct job_spec
good_spec(void)
{
    struct job_spec s = {0};
    s.command = argv_true;
    s.max_attempts = 3;
    s.backoff_base_ms = 1000;
    s.backoff_max_ms = 60000;
    s.uid = 1000;
    s.gid = 1000;
    return s;
}

static void
expect_invalid(const struct job_spec *s, const char *needle)
{
    char why[256] = "";
    assert_int_equal(job_spec_validate(s, why, sizeof(why)), -EINVAL);
    if (strstr(why, needle) == NULL)
        fail_msg("reason \"%s\" does not mention \"%s\"", why, needle);
}

static void
test_state_names_round_trip(void **state)
{
    for (int i = 0; i < JOB_NSTATES; i++) {
        enum job_state s;
        assert_int_equal(job_state_parse(job_state_name((enum job_state)i), &s), 0);
        assert_int_equal(s, i);
    }
    enum job_state s;
    assert_int_equal(job_state_parse("bogus", &s), -EINVAL);
    assert_string_equal(job_state_name(JOB_NSTATES), "unknown");
}

static void
test_outcome_names_round_trip(void **state)
{
    for (int i = 0; i < OUTCOME_NOUTCOMES; i++) {
        enum job_outcome o;
        assert_int_equal(job_outcome_parse(job_outcome_name((enum job_outcome)i), &o), 0);
        assert_int_equal(o, i);
    }
    assert_string_equal(job_outcome_name(OUTCOME_SPAWN_ERROR), "spawn_error");
}

static void
test_terminal_states(void **state)
{
    assert_true(job_state_terminal(JOB_SUCCEEDED));
    assert_true(job_state_terminal(JOB_FAILED));
    assert_true(job_state_terminal(JOB_CANCELED));
    assert_false(job_state_terminal(JOB_QUEUED));
    assert_false(job_state_terminal(JOB_RUNNING));
    assert_false(job_state_terminal(JOB_RETRYING));
    assert_false(job_state_terminal(JOB_SCHEDULED));
}

static void
test_validate_accepts_good_spec(void **state)
{
    struct job_spec s = good_spec();
    char *env[] = {"A=1", "B=", NULL};
    char why[128] = "";
    s.env = env;
    s.name = "nightly";
    s.queue = "default";
    s.unique_key = "k-1";
    s.cwd = "/tmp";
    s.priority = -5;
    assert_int_equal(job_spec_validate(&s, why, sizeof(why)), 0);
}

static void
test_validate_rejects_empty_command(void **state)
{
    struct job_spec s = good_spec();
    char *none[] = {NULL};
    char *empty[] = {"", NULL};
    s.command = NULL;
    expect_invalid(&s, "command is empty");
    s.command = none;
    expect_invalid(&s, "command is empty");
    s.command = empty;
    expect_invalid(&s, "command is empty");
}

static void
test_validate_rejects_oversized_command(void **state)
{
    struct job_spec s = good_spec();
    char *big = malloc(JOBQ_COMMAND_MAX_BYTES);
    char *argv[] = {"/bin/echo", big, NULL};
    memset(big, 'x', JOBQ_COMMAND_MAX_BYTES - 1);
    big[JOBQ_COMMAND_MAX_BYTES - 1] = '\0';
    s.command = argv;
    expect_invalid(&s, "command is more than");
    free(big);
}

static void
test_validate_rejects_oversized_env(void **state)
{
    struct job_spec s = good_spec();
    char *big = malloc(JOBQ_ENV_MAX_BYTES + 8);
    char *env[] = {big, NULL};
    memset(big, 'x', JOBQ_ENV_MAX_BYTES + 7);
    big[0] = 'K';
    big[1] = '=';
    big[JOBQ_ENV_MAX_BYTES + 7] = '\0';
    s.env = env;
    expect_invalid(&s, "env is more than");
    free(big);
}

static void
test_validate_rejects_env_without_equals(void **state)
{
    struct job_spec s = good_spec();
    char *env[] = {"A=1", "NOEQUALS", NULL};
    s.env = env;
    expect_invalid(&s, "env[1]");
}

static void
test_validate_rejects_long_names(void **state)
{
    struct job_spec s = good_spec();
    char long_name[JOBQ_NAME_MAX_BYTES + 2];
    memset(long_name, 'q', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    s.queue = long_name;
    expect_invalid(&s, "queue is 201 bytes");
    s.queue = NULL;
    s.name = long_name;
    expect_invalid(&s, "name is 201 bytes");
    s.name = NULL;
    s.unique_key = long_name;
    expect_invalid(&s, "unique key is 201 bytes");
    long_name[JOBQ_NAME_MAX_BYTES] = '\0'; /* exactly at the limit */
    char why[128];
    assert_int_equal(job_spec_validate(&s, why, sizeof(why)), 0);
}

static void
test_validate_rejects_invalid_utf8(void **state)
{
    const char *bad[] = {
        "\xff",             /* never valid */
        "a\xc0\xaf",        /* overlong '/' */
        "\xed\xa0\x80",     /* surrogate U+D800 */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xe2\x82",         /* truncated */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct job_spec s = good_spec();
        char *argv[] = {"/bin/echo", (char *)bad[i], NULL};
        s.command = argv;
        expect_invalid(&s, "not valid UTF-8");
        s = good_spec();
        s.queue = (char *)bad[i];
        expect_invalid(&s, "queue is not valid UTF-8");
    }
    struct job_spec s = good_spec();
    char *ok[] = {"/bin/echo", "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", NULL};
    char why[128];
    s.command = ok;
    assert_int_equal(job_spec_validate(&s, why, sizeof(why)), 0);
}

static void
test_validate_rejects_absurd_numbers(void **state)
{
    struct job_spec s = good_spec();
    s.max_attempts = 0;
    expect_invalid(&s, "max_attempts");
    s = good_spec();
    s.max_attempts = JOBQ_ATTEMPTS_MAX + 1;
    expect_invalid(&s, "max_attempts");
    s = good_spec();
    s.priority = JOBQ_PRIORITY_MAX + 1;
    expect_invalid(&s, "priority");
    s = good_spec();
    s.timeout_ms = -1;
    expect_invalid(&s, "timeout_ms");
    s = good_spec();
    s.run_at = -5;
    expect_invalid(&s, "run_at");
    s = good_spec();
    s.deadline = INT64_MAX;
    expect_invalid(&s, "deadline");
    s = good_spec();
    s.backoff_max_ms = 10;
    expect_invalid(&s, "below its base");
    s = good_spec();
    s.uid = (uid_t)-1;
    expect_invalid(&s, "uid");
}

static void
test_validate_rejects_queue_outside_alphabet(void **state)
{
    struct job_spec s = good_spec();
    s.queue = "mail queue";
    expect_invalid(&s, "outside A-Z");
    s.queue = "mail/x";
    expect_invalid(&s, "outside A-Z");
    s.queue = "Mail-1.eu_west:a";
    char why[128];
    assert_int_equal(job_spec_validate(&s, why, sizeof(why)), 0);
}

static void
test_validate_rejects_control_chars_in_name(void **state)
{
    struct job_spec s = good_spec();
    s.name = "line\nbreak";
    expect_invalid(&s, "control");
}

static void
test_validate_rejects_relative_cwd(void **state)
{
    struct job_spec s = good_spec();
    s.cwd = "work/dir";
    expect_invalid(&s, "absolute");
}

static void
test_backoff_doubles_per_attempt(void **state)
{
    /* rnd = UINT64_MAX - 0 picks values near the cap; the cap itself is
     * reachable with rnd == cap. */
    assert_int_equal(job_backoff_ms(1000, 600000, 1, 1000), 1000);
    assert_int_equal(job_backoff_ms(1000, 600000, 2, 2000), 2000);
    assert_int_equal(job_backoff_ms(1000, 600000, 3, 4000), 4000);
    assert_int_equal(job_backoff_ms(1000, 600000, 4, 8000), 8000);
}

static void
test_backoff_caps_at_max(void **state)
{
    for (int32_t a = 1; a <= 1000; a++) {
        for (uint64_t r = 0; r < 5; r++) {
            int64_t v = job_backoff_ms(1000, 30000, a, r * 0x9e3779b97f4a7c15ULL);
            assert_true(v >= 0 && v <= 30000);
        }
    }
    assert_int_equal(job_backoff_ms(1000, 30000, 1000, 30000), 30000);
    /* No overflow with the largest accepted values. */
    int64_t v = job_backoff_ms(JOBQ_DURATION_MAX_MS, JOBQ_DURATION_MAX_MS, 1000, UINT64_MAX);
    assert_true(v >= 0 && v <= JOBQ_DURATION_MAX_MS);
}

static void
test_backoff_full_jitter_spreads(void **state)
{
    /* Full jitter: values fill [0, cap], not clustered at the cap. */
    uint64_t x = 88172645463325252ULL;
    int64_t lo = INT64_MAX, hi = 0, sum = 0;
    const int n = 10000;
    for (int i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int64_t v = job_backoff_ms(100, 100000, 5, x); /* cap 1600 */
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        sum += v;
    }
    assert_true(lo < 50);
    assert_true(hi > 1550 && hi <= 1600);
    assert_true(sum / n > 700 && sum / n < 900);
    print_message("FIGURE backoff cap=1600 min=%lld max=%lld mean=%lld\n", (long long)lo,
                  (long long)hi, (long long)(sum / n));
}

static void
test_backoff_zero_base_is_immediate(void **state)
{
    assert_int_equal(job_backoff_ms(0, 1000, 3, 12345), 0);
}

static void
test_now_ms_is_wall_clock(void **state)
{
    int64_t t = job_now_ms();
    assert_true(t > 1600000000000LL); /* after 2020 */
}

static void
test_free_is_null_safe(void **state)
{
    job_free(NULL);
    job_spec_free(NULL);
    job_attempts_free(NULL, 0);
    struct job *j = calloc(1, sizeof(*j));
    j->spec.command = calloc(2, sizeof(char *));
    j->spec.command[0] = strdup("x");
    j->spec.queue = strdup("q");
    j->error = strdup("e");
    j->attempts = calloc(1, sizeof(*j->attempts));
    j->attempts[0].error = strdup("boom");
    j->nattempts = 1;
    job_free(j);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_names_round_trip),
        cmocka_unit_test(test_outcome_names_round_trip),
        cmocka_unit_test(test_terminal_states),
        cmocka_unit_test(test_validate_accepts_good_spec),
        cmocka_unit_test(test_validate_rejects_empty_command),
        cmocka_unit_test(test_validate_rejects_oversized_command),
        cmocka_unit_test(test_validate_rejects_oversized_env),
        cmocka_unit_test(test_validate_rejects_env_without_equals),
        cmocka_unit_test(test_validate_rejects_long_names),
        cmocka_unit_test(test_validate_rejects_invalid_utf8),
        cmocka_unit_test(test_validate_rejects_absurd_numbers),
        cmocka_unit_test(test_validate_rejects_queue_outside_alphabet),
        cmocka_unit_test(test_validate_rejects_control_chars_in_name),
        cmocka_unit_test(test_validate_rejects_relative_cwd),
        cmocka_unit_test(test_backoff_doubles_per_attempt),
        cmocka_unit_test(test_backoff_caps_at_max),
        cmocka_unit_test(test_backoff_full_jitter_spreads),
        cmocka_unit_test(test_backoff_zero_base_is_immediate),
        cmocka_unit_test(test_now_ms_is_wall_clock),
        cmocka_unit_test(test_free_is_null_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
