/*
 * duration — libFuzzer target for the human time syntax both binaries and
 * the config file read (common/duration.c) and for sizes
 * (config_parse_size). The first byte picks the parser, the rest is its
 * text; every result is checked against the contract in the headers, and
 * what parses is printed and parsed back to the same value.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq/config.h"
#include "jobq/duration.h"
#include "jobq/limits.h"

/* A fixed "now" so that "+DUR" results are reproducible. */
#define NOW_MS 1796400000000LL /* 2026-12-04T16:00:00Z */
/* Years time_format_rfc3339 writes with four digits, so that its text is
 * RFC 3339 again. */
#define YEAR_0000_MS (-62167219200000LL)
#define YEAR_10000_MS 253402300800000LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

/* The reason buffer must always hold a terminated message. */
static void
check_why(int rc, const char *why)
{
    check(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
    if (rc == -EINVAL)
        check(why[0] != '\0' && strlen(why) < 256);
}

static void
fuzz_duration(const char *s)
{
    char why[256] = "", buf[32], back[64];
    int64_t ms, again;
    int rc = duration_parse_ms(s, &ms, why, sizeof(why));

    check_why(rc, why);
    if (rc < 0)
        return;
    check(ms >= 0 && ms <= JOBQ_DURATION_MAX_MS);
    /* duration_format is for humans (rounded); "Nms" must read back. */
    duration_format(ms, buf, 16);
    check(strlen(buf) < 16);
    snprintf(back, sizeof(back), "%" PRId64 "ms", ms);
    check(duration_parse_ms(back, &again, why, sizeof(why)) == 0 && again == ms);
}

static void
fuzz_time(const char *s)
{
    char why[256] = "", buf[32];
    int64_t ms, again;
    int rc = time_parse_ms(s, NOW_MS, &ms, why, sizeof(why));

    check_why(rc, why);
    if (rc < 0)
        return;
    if (s[0] == '+')
        check(ms >= NOW_MS && ms <= NOW_MS + JOBQ_DURATION_MAX_MS);
    if (ms < YEAR_0000_MS || ms >= YEAR_10000_MS)
        return;
    /* Printed in UTC with milliseconds, it reads back as the same instant. */
    time_format_rfc3339(ms, buf, sizeof(buf));
    check(time_parse_ms(buf, NOW_MS, &again, why, sizeof(why)) == 0 && again == ms);
}

static void
fuzz_size(const char *s)
{
    char why[256] = "";
    int64_t bytes;
    int rc = config_parse_size(s, &bytes, why, sizeof(why));

    check_why(rc, why);
    if (rc == 0)
        check(bytes >= 0);
}

/* The printers take any value a caller might compute (a negative or huge
 * duration from clock arithmetic): they must stay inside their buffer. */
static void
fuzz_format(const uint8_t *data, size_t size)
{
    char buf[32];
    int64_t v = 0;

    memcpy(&v, data, size < sizeof(v) ? size : sizeof(v));
    duration_format(v, buf, 16);
    check(strlen(buf) < 16);
    time_format_rfc3339(v, buf, 25);
    check(strlen(buf) < 25);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s;

    if (size < 1 || size > 4096)
        return -1;
    if ((s = malloc(size)) == NULL)
        return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    switch (data[0] % 4) {
    case 0:
        fuzz_duration(s);
        break;
    case 1:
        fuzz_time(s);
        break;
    case 2:
        fuzz_size(s);
        break;
    default:
        fuzz_format(data + 1, size - 1);
        break;
    }
    free(s);
    return 0;
}
