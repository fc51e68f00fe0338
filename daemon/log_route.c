/*
 * log_route — sends libevent's and SQLite's own messages through log.c, so
 * the daemon has one log format and one sink. Separate from common/log.c
 * because only the daemon links these libraries. Owns nothing.
 */
#include <errno.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "jobq/log.h"

/* libevent logs a failed epoll_ctl before it returns, and its caller
 * (coro_wait_fd) reports that call's errno: keep it. */
static void
libevent_log(int severity, const char *msg)
{
    enum log_level level;
    int saved = errno;

    switch (severity) {
    case EVENT_LOG_DEBUG:
        level = LOG_LEVEL_DEBUG;
        break;
    case EVENT_LOG_MSG:
        level = LOG_LEVEL_INFO;
        break;
    case EVENT_LOG_WARN:
        level = LOG_LEVEL_WARN;
        break;
    default:
        level = LOG_LEVEL_ERROR;
        break;
    }
    log_at_(level, "libevent", "msg=%s", log_q(msg));
    errno = saved;
}

void
log_route_libevent(void)
{
    event_set_log_callback(libevent_log);
}

static void
sqlite_log(void *arg, int code, const char *msg)
{
    enum log_level level;

    switch (code & 0xff) {
    case SQLITE_NOTICE:
        level = LOG_LEVEL_INFO;
        break;
    case SQLITE_WARNING:
        level = LOG_LEVEL_WARN;
        break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_SCHEMA:
        /* The store retries these (and SQLite re-prepares on SCHEMA); the
         * store's own lines say when it gives up. */
        level = LOG_LEVEL_DEBUG;
        break;
    default:
        level = LOG_LEVEL_ERROR;
        break;
    }
    log_at_(level, "sqlite", "code=%d name=%s msg=%s", code, log_q(sqlite3_errstr(code)),
            log_q(msg));
}

int
log_route_sqlite(void)
{
    /* Only legal before sqlite3_initialize (or after shutdown). */
    if (sqlite3_config(SQLITE_CONFIG_LOG, sqlite_log, (void *)0) != SQLITE_OK)
        return -EBUSY;
    return 0;
}
