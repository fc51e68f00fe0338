/*
 * duration — parsing and printing of durations and times for humans. Both
 * binaries and the config file use it, so "30s" means the same everywhere.
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "jobq/duration.h"
#include "jobq/limits.h"

static int64_t
unit_ms(const char *u, size_t n)
{
    static const struct {
        const char *name;
        int64_t ms;
    } units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}, {"d", 86400 * 1000},
    };
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strlen(units[i].name) == n && memcmp(units[i].name, u, n) == 0)
            return units[i].ms;
    return 0;
}

int
decimal_scan(const char **p, double max, double *v)
{
    const char *q = *p;
    double scale = 1;
    bool digits = false, dot = false;

    *v = 0;
    for (; isdigit((unsigned char)*q) || (*q == '.' && !dot); q++) {
        if (*q == '.') {
            dot = true;
            continue;
        }
        digits = true;
        if (dot) {
            scale /= 10;
            *v += (*q - '0') * scale;
        } else {
            *v = *v * 10 + (*q - '0');
        }
        if (*v > max)
            return -ERANGE;
    }
    if (!digits)
        return -EINVAL;
    *p = q;
    return 0;
}

int
duration_parse_ms(const char *s, int64_t *ms, char *why, size_t whylen)
{
    const char *p = s;
    double total = 0;
    bool any = false;

    if (s == NULL || *s == '\0') {
        snprintf(why, whylen, "empty duration");
        return -EINVAL;
    }
    while (*p) {
        const char *unit;
        double v;
        int64_t mul;

        if (decimal_scan(&p, 1e15, &v) < 0)
            goto bad;
        unit = p;
        while (isalpha((unsigned char)*p))
            p++;
        if (p == unit) {
            /* "90" means seconds: scripts written for `sleep` expect that. */
            if (*p != '\0' || any)
                goto bad;
            mul = 1000;
        } else if ((mul = unit_ms(unit, (size_t)(p - unit))) == 0) {
            snprintf(why, whylen, "bad duration \"%s\": unit must be ms, s, m, h or d", s);
            return -EINVAL;
        }
        total += v * (double)mul;
        any = true;
    }
    if (total > (double)JOBQ_DURATION_MAX_MS) {
        snprintf(why, whylen, "duration \"%s\" is too long (at most 10 years)", s);
        return -EINVAL;
    }
    *ms = (int64_t)(total + 0.5);
    return 0;
bad:
    snprintf(why, whylen,
             "bad duration \"%s\": expected a number with a unit, like 250ms, 30s, 5m, 2h, 1d", s);
    return -EINVAL;
}

/* Reads exactly n digits; returns -1 if any is missing. */
static int
digits(const char **p, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (!isdigit((unsigned char)**p))
            return -1;
        v = v * 10 + (**p - '0');
    }
    return v;
}

static int64_t
days_from_civil(int64_t y, int m, int d)
{
    /* Howard Hinnant's algorithm: exact for the proleptic Gregorian calendar
     * without timegm's dependence on TZ or its int overflow at year 2038
     * on 32-bit time_t. */
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int
rfc3339_parse(const char *s, int64_t *out)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const char *p = s;
    int y, mo, d, h, mi, sec, ms = 0;
    int64_t off_min = 0;

    if ((y = digits(&p, 4)) < 0 || *p++ != '-' || (mo = digits(&p, 2)) < 0 || *p++ != '-' ||
        (d = digits(&p, 2)) < 0)
        return -EINVAL;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -EINVAL;
    p++;
    if ((h = digits(&p, 2)) < 0 || *p++ != ':' || (mi = digits(&p, 2)) < 0 || *p++ != ':' ||
        (sec = digits(&p, 2)) < 0)
        return -EINVAL;
    if (*p == '.') {
        int scale = 100;
        p++;
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        for (; isdigit((unsigned char)*p); p++, scale /= 10)
            ms += (*p - '0') * scale;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if ((oh = digits(&p, 2)) < 0 || *p++ != ':' || (om = digits(&p, 2)) < 0 || oh > 23 ||
            om > 59)
            return -EINVAL;
        off_min = sign * (oh * 60 + om);
    } else {
        return -EINVAL;
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 ||
        sec > 60)
        return -EINVAL;
    if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return -EINVAL;
    if (sec == 60) /* a leap second is the next second's start */
        sec = 59, ms = 999;
    int64_t days = days_from_civil(y, mo, d);
    *out = ((days * 86400 + h * 3600 + mi * 60 + sec) - off_min * 60) * 1000 + ms;
    return 0;
}

int
time_parse_ms(const char *s, int64_t now_ms, int64_t *unix_ms, char *why, size_t whylen)
{
    int64_t ms;
    int rc;

    if (s == NULL || *s == '\0') {
        snprintf(why, whylen, "empty time");
        return -EINVAL;
    }
    if (s[0] == '+') {
        if ((rc = duration_parse_ms(s + 1, &ms, why, whylen)) < 0)
            return rc;
        *unix_ms = now_ms + ms;
        return 0;
    }
    if (rfc3339_parse(s, unix_ms) < 0) {
        snprintf(why, whylen,
                 "bad time \"%s\": expected RFC 3339 (2026-01-31T09:00:00Z) or +DURATION (+10m)",
                 s);
        return -EINVAL;
    }
    return 0;
}

char *
time_format_rfc3339(int64_t unix_ms, char *buf, size_t len)
{
    /* Floor division written so that INT64_MIN does not overflow (found by
     * tests/fuzz/duration.c): times before 1970 round down. */
    int64_t sec = unix_ms / 1000, rem = unix_ms % 1000;
    time_t t;
    int ms;
    struct tm tm;

    if (rem < 0) {
        sec--;
        rem += 1000;
    }
    t = (time_t)sec;
    ms = (int)rem;

    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(buf, len, "invalid-time");
        return buf;
    }
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    return buf;
}

char *
duration_format(int64_t ms, char *buf, size_t len)
{
    const char *sign = ms < 0 ? "-" : "";
    /* The magnitude unsigned: -INT64_MIN does not fit an int64_t (found by
     * tests/fuzz/duration.c), and days of a huge value do not fit an int. */
    uint64_t u = ms < 0 ? -(uint64_t)ms : (uint64_t)ms;

    if (u < 1000)
        snprintf(buf, len, "%s%ums", sign, (unsigned)u);
    else if (u < 60 * 1000)
        snprintf(buf, len, "%s%u.%us", sign, (unsigned)(u / 1000), (unsigned)(u % 1000 / 100));
    else if (u < 3600 * 1000)
        snprintf(buf, len, "%s%um%us", sign, (unsigned)(u / 60000), (unsigned)(u / 1000 % 60));
    else if (u < 86400ULL * 1000)
        snprintf(buf, len, "%s%uh%um", sign, (unsigned)(u / 3600000), (unsigned)(u / 60000 % 60));
    else
        snprintf(buf, len, "%s%llud%uh", sign, (unsigned long long)(u / 86400000),
                 (unsigned)(u / 3600000 % 24));
    return buf;
}
