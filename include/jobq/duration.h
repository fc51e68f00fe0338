/*
 * duration — the human time syntax shared by jobq, jobqd and the config
 * file: durations ("250ms", "30s", "5m", "2h", "1d", "1h30m", "1.5s", or
 * plain seconds "90") and times (RFC 3339, or "+DUR" from now).
 */
#ifndef JOBQ_DURATION_H
#define JOBQ_DURATION_H

#include <stddef.h>
#include <stdint.h>

/* Scans an unsigned decimal number ("12", "1.5", ".5") at *p and moves *p
 * past it: the number syntax the duration and size parsers share. Returns
 * 0, -EINVAL when no digit is there, -ERANGE above max. */
int decimal_scan(const char **p, double max, double *v);

/* Parses a duration into *ms. Negative values, unknown units, overflow and
 * values above JOBQ_DURATION_MAX_MS are -EINVAL with a reason in why.
 * Borrows s. */
int duration_parse_ms(const char *s, int64_t *ms, char *why, size_t whylen);

/* Parses RFC 3339 ("2026-12-04T16:18:16Z", fractional seconds and numeric
 * offsets accepted; a space may replace the T) or "+DUR" relative to
 * now_ms, into Unix ms. -EINVAL with a reason in why. Borrows s. */
int time_parse_ms(const char *s, int64_t now_ms, int64_t *unix_ms, char *why, size_t whylen);

/* Writes "2026-12-04T16:18:16.123Z" (UTC, milliseconds) into buf, which
 * must hold at least 25 bytes. Returns buf. */
char *time_format_rfc3339(int64_t unix_ms, char *buf, size_t len);

/* Writes a short human duration ("850ms", "12s", "3m20s", "2h5m", "3d4h")
 * into buf (at least 16 bytes). Returns buf. */
char *duration_format(int64_t ms, char *buf, size_t len);

#endif
