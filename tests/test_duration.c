/* Durations and times as users type them, in the client and the config. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "jobq/duration.h"

static int64_t
dur(const char *s)
{
    char why[128];
    int64_t ms = -1;
    assert_int_equal(duration_parse_ms(s, &ms, why, sizeof(why)), 0);
    return ms;
}

static void
test_duration_units(void **state)
{
    assert_int_equal(dur("250ms"), 250);
    assert_int_equal(dur("30s"), 30000);
    assert_int_equal(dur("5m"), 300000);
    assert_int_equal(dur("2h"), 7200000);
    assert_int_equal(dur("1d"), 86400000);
    assert_int_equal(dur("1h30m"), 5400000);
    assert_int_equal(dur("1.5s"), 1500);
    assert_int_equal(dur("0"), 0);
}

static void
test_duration_plain_number_is_seconds(void **state)
{
    assert_int_equal(dur("90"), 90000);
    assert_int_equal(dur("0.25"), 250);
}

static void
test_duration_rejects_garbage_with_reason(void **state)
{
    const char *bad[] = {"", "s", "-5s", "5x", "5 s", "1e9", "5s5", "..5s", "99999999999999999d"};
    char why[128];
    int64_t ms;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        assert_int_equal(duration_parse_ms(bad[i], &ms, why, sizeof(why)), -EINVAL);
        assert_true(strlen(why) > 0);
    }
}

static void
test_time_rfc3339_and_offsets(void **state)
{
    char why[128];
    int64_t t;
    assert_int_equal(time_parse_ms("1970-01-01T00:00:00Z", 0, &t, why, sizeof(why)), 0);
    assert_int_equal(t, 0);
    assert_int_equal(time_parse_ms("2026-12-04T16:18:16.123Z", 0, &t, why, sizeof(why)), 0);
    assert_int_equal(t, 1796401096123LL);
    assert_int_equal(time_parse_ms("2026-12-04T17:18:16.123+01:00", 0, &t, why, sizeof(why)), 0);
    assert_int_equal(t, 1796401096123LL);
    assert_int_equal(time_parse_ms("2024-02-29 00:00:00Z", 0, &t, why, sizeof(why)), 0);
    assert_int_equal(time_parse_ms("2023-02-29T00:00:00Z", 0, &t, why, sizeof(why)), -EINVAL);
    assert_int_equal(time_parse_ms("2026-13-01T00:00:00Z", 0, &t, why, sizeof(why)), -EINVAL);
    assert_int_equal(time_parse_ms("2026-12-04T16:18:16", 0, &t, why, sizeof(why)), -EINVAL);
}

static void
test_time_relative(void **state)
{
    char why[128];
    int64_t t;
    assert_int_equal(time_parse_ms("+10m", 1000, &t, why, sizeof(why)), 0);
    assert_int_equal(t, 1000 + 600000);
    assert_int_equal(time_parse_ms("+", 0, &t, why, sizeof(why)), -EINVAL);
}

static void
test_time_format_roundtrip(void **state)
{
    char buf[32], why[64];
    int64_t t;
    time_format_rfc3339(1796401096123LL, buf, sizeof(buf));
    assert_string_equal(buf, "2026-12-04T16:18:16.123Z");
    assert_int_equal(time_parse_ms(buf, 0, &t, why, sizeof(why)), 0);
    assert_int_equal(t, 1796401096123LL);
}

static void
test_duration_format_human(void **state)
{
    char buf[32];
    assert_string_equal(duration_format(850, buf, sizeof(buf)), "850ms");
    assert_string_equal(duration_format(12300, buf, sizeof(buf)), "12.3s");
    assert_string_equal(duration_format(200000, buf, sizeof(buf)), "3m20s");
    assert_string_equal(duration_format(7500000, buf, sizeof(buf)), "2h5m");
    assert_string_equal(duration_format(3 * 86400000LL + 4 * 3600000LL, buf, sizeof(buf)), "3d4h");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_plain_number_is_seconds),
        cmocka_unit_test(test_duration_rejects_garbage_with_reason),
        cmocka_unit_test(test_time_rfc3339_and_offsets),
        cmocka_unit_test(test_time_relative),
        cmocka_unit_test(test_time_format_roundtrip),
        cmocka_unit_test(test_duration_format_human),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
