/*
 * log — the only code that writes log lines, for both binaries. A line is a
 * time, a level, an event name and key=value fields:
 *
 *   2025-06-01T12:00:00.123Z info job.finish id=42 attempt=1 exit=0 dur_ms=1530
 *   {"ts":"2025-06-01T12:00:00.123Z","level":"info","event":"job.finish","id":42,...}
 *
 * Callers write the fields with a printf format; in json format log.c
 * parses them back into members (bare numbers stay numbers, true/false stay
 * booleans, everything else becomes a string). Free text (commands, paths,
 * error messages, anything a user or a job chose) goes through log_q() or
 * log_quote(), which quote and escape it: a value with spaces, quotes,
 * newlines, control bytes or invalid UTF-8 can neither break a line nor
 * forge a field or a line. log.c also escapes control bytes that reach it
 * unquoted, so a line is always one line.
 *
 * Each line is formatted on the caller's stack and written with one
 * write(2) on the sink (stderr, or a file opened O_APPEND): nothing is
 * buffered that a crash would lose, lines of up to JOBQ_LOG_LINE_MAX_BYTES
 * (PIPE_BUF) never interleave, and the hot path takes no lock. Every
 * function is safe from any thread.
 *
 * Field keys are lower_snake and must not be ts, level or event.
 */
#ifndef JOBQ_LOG_H
#define JOBQ_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jobq/limits.h"

/* Ordered by verbosity: a sink at level L writes every line at L or below. */
enum log_level {
    LOG_LEVEL_ERROR, /* something failed and an operator should look */
    LOG_LEVEL_WARN,  /* something odd that the daemon worked around */
    LOG_LEVEL_INFO,  /* lifecycle: start, stop, one line per job event */
    LOG_LEVEL_DEBUG, /* for developers; noisy */
};

enum log_format {
    LOG_FORMAT_TEXT, /* the line above: greppable, for terminals and journald */
    LOG_FORMAT_JSON, /* one JSON object per line, for log shippers */
};

/* Returns a static name: "error", "warn", "info", "debug" / "text", "json". */
const char *log_level_name(enum log_level level);
const char *log_format_name(enum log_format format);
/* Parses those names (exactly, lower case). -EINVAL with a reason in why
 * (may be NULL). Borrows s. */
int log_level_parse(const char *s, enum log_level *level, char *why, size_t whylen);
int log_format_parse(const char *s, enum log_format *format, char *why, size_t whylen);

/* Take effect for the next line, in every thread. The defaults are info and
 * text. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_set_format(enum log_format format);
enum log_format log_get_format(void);

/* Whether a line at level would be written: one relaxed atomic load. */
bool log_enabled(enum log_level level);

/*
 * Sends lines to the file at path from now on (created 0640 if missing,
 * appended to), or back to stderr when path is NULL or "". The descriptor
 * number the writers use never changes once a file is open (the new file
 * is dup2()ed over it), so a line being written while the sink changes
 * lands whole in the old or the new file. On failure the sink is
 * unchanged. Borrows path (copied, for log_reopen).
 */
int log_open_file(const char *path);
/*
 * Opens the sink's path again (after logrotate renamed the file: SIGHUP).
 * 0 if the sink is stderr. If the path cannot be opened, the old file
 * stays the sink, a log.reopen_failed line is written to it, and the error
 * is returned.
 */
int log_reopen(void);
/* Writes that failed (disk full, closed pipe) since start: the lost lines
 * can't be logged, so stats report this count instead. */
uint64_t log_write_errors(void);

/* Test hook: the clock for the ts field, Unix ms. NULL restores the real
 * clock (CLOCK_REALTIME). */
void log_set_clock(int64_t (*now_ms)(void));

/*
 * Writes one line at level: event names what happened (a literal:
 * "job.finish"), fmt produces the space-separated key=value fields (may be
 * ""). Prefer the macros below, which skip the formatting, and the
 * evaluation of the arguments, when the level is filtered out. Borrows
 * every argument.
 */
void log_emit(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The arguments are not evaluated when the level is off: no side effects
 * in them. fmt must be a string literal; the " " in front of it lets an
 * event without fields pass "" without a zero-length-format warning (the
 * fields parser skips leading spaces). */
#define log_at_(level, event, ...)                                                                 \
    do {                                                                                           \
        if (log_enabled(level))                                                                    \
            log_emit(level, event, " " __VA_ARGS__);                                               \
    } while (0)
#define log_error(event, ...) log_at_(LOG_LEVEL_ERROR, event, __VA_ARGS__)
#define log_warn(event, ...) log_at_(LOG_LEVEL_WARN, event, __VA_ARGS__)
#define log_info(event, ...) log_at_(LOG_LEVEL_INFO, event, __VA_ARGS__)
#define log_debug(event, ...) log_at_(LOG_LEVEL_DEBUG, event, __VA_ARGS__)

/*
 * Writes s into buf as a double-quoted value: \" \\ \n \r \t escape
 * themselves, other control bytes, DEL and bytes that are not valid UTF-8
 * become \xNN; valid UTF-8 stays as it is. A value that does not fit ends
 * in ... inside the quotes, cut between characters, so the result is always
 * one well-formed token. NULL s gives "". len >= 8. Returns buf. Borrows s.
 */
char *log_quote(char *buf, size_t len, const char *s);

/* log_quote into a JOBQ_LOG_VALUE_MAX_BYTES buffer on the caller's stack,
 * valid until the end of the enclosing statement or block:
 *   log_warn("job.spawn_failed", "id=%" PRId64 " cmd=%s err=%s", id, log_q(cmd),
 *            log_q(strerror(-rc)));
 */
#define log_q(s) log_quote((char[JOBQ_LOG_VALUE_MAX_BYTES]){""}, JOBQ_LOG_VALUE_MAX_BYTES, (s))

/*
 * Routing of the libraries' own logs, in daemon/log_route.c because only
 * the daemon links libevent and SQLite.
 */

/* libevent's messages become event=libevent lines (its debug, msg, warn and
 * err map to debug, info, warn, error) with a quoted msg field. */
void log_route_libevent(void);
/* SQLite's error log (SQLITE_CONFIG_LOG) becomes event=sqlite lines with
 * code, name and msg. Must run before SQLite is first used (before the
 * store opens): -EBUSY otherwise. */
int log_route_sqlite(void);

#endif
