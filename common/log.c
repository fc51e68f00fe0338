/*
 * log — formats and writes every log line of jobq and jobqd. It owns the
 * log sink (level, format, the descriptor lines go to and the path behind
 * it), the one piece of global state that logging needs. A line is built
 * in a per-thread scratch buffer, in text or JSON, and written with a
 * single write(2); the hot path reads the sink with relaxed atomic loads
 * and takes no lock. Only changing the file (open, reopen) takes the
 * sink's mutex.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jobq/duration.h"
#include "jobq/limits.h"
#include "jobq/log.h"

/* Event names are literals in the code; a longer one is cut so the JSON
 * header always fits in a line. */
#define LOG_EVENT_MAX_BYTES 96
/* Kept free at the end of a line for " truncated=true\n" or
 * ,"truncated":true}\n. */
#define LOG_TRAILER_BYTES 24

/*
 * The log sink: one of the three mutable globals STYLE.md allows. Every
 * thread writes through it, so the fields the hot path reads are atomics;
 * mu serialises log_open_file and log_reopen and guards path and owned.
 * fd is the descriptor lines go to: STDERR_FILENO until a file is opened,
 * then a descriptor of our own whose number never changes (later files are
 * dup3()ed over it), so a writer that loaded it never writes to a recycled
 * number.
 */
static struct {
    _Atomic int level;
    _Atomic int format;
    _Atomic int fd;
    _Atomic uint64_t write_errors;
    _Atomic(int64_t (*)(void)) clock;
    pthread_mutex_t mu;
    char *path; /* the file's path for log_reopen; NULL while on stderr */
    bool owned; /* fd is ours (a file), not STDERR_FILENO */
} sink = {
    .level = LOG_LEVEL_INFO,
    .format = LOG_FORMAT_TEXT,
    .fd = STDERR_FILENO,
    .mu = PTHREAD_MUTEX_INITIALIZER,
};

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const char *const format_names[] = {"text", "json"};

const char *
log_level_name(enum log_level level)
{
    if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
        return "unknown";
    return level_names[level];
}

const char *
log_format_name(enum log_format format)
{
    if ((unsigned)format >= sizeof(format_names) / sizeof(format_names[0]))
        return "unknown";
    return format_names[format];
}

int
log_level_parse(const char *s, enum log_level *level, char *why, size_t whylen)
{
    for (unsigned i = 0; s != NULL && i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *level = (enum log_level)i;
            return 0;
        }
    }
    if (why != NULL)
        snprintf(why, whylen, "bad log level \"%s\": expected error, warn, info or debug",
                 s ? s : "");
    return -EINVAL;
}

int
log_format_parse(const char *s, enum log_format *format, char *why, size_t whylen)
{
    for (unsigned i = 0; s != NULL && i < sizeof(format_names) / sizeof(format_names[0]); i++) {
        if (strcmp(s, format_names[i]) == 0) {
            *format = (enum log_format)i;
            return 0;
        }
    }
    if (why != NULL)
        snprintf(why, whylen, "bad log format \"%s\": expected text or json", s ? s : "");
    return -EINVAL;
}

void
log_set_level(enum log_level level)
{
    atomic_store_explicit(&sink.level, (int)level, memory_order_relaxed);
}

enum log_level
log_get_level(void)
{
    return (enum log_level)atomic_load_explicit(&sink.level, memory_order_relaxed);
}

void
log_set_format(enum log_format format)
{
    atomic_store_explicit(&sink.format, (int)format, memory_order_relaxed);
}

enum log_format
log_get_format(void)
{
    return (enum log_format)atomic_load_explicit(&sink.format, memory_order_relaxed);
}

bool
log_enabled(enum log_level level)
{
    return (int)level <= atomic_load_explicit(&sink.level, memory_order_relaxed);
}

void
log_set_clock(int64_t (*now_ms)(void))
{
    atomic_store_explicit(&sink.clock, now_ms, memory_order_release);
}

uint64_t
log_write_errors(void)
{
    return atomic_load_explicit(&sink.write_errors, memory_order_relaxed);
}

static int
sink_open(const char *path)
{
    /* 0640: commands and their errors may carry secrets. */
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    return fd < 0 ? -errno : fd;
}

/* Makes nfd the sink (consuming it). Called with sink.mu held. */
static int
sink_install(int nfd)
{
    int rc = 0;

    if (!sink.owned) {
        atomic_store_explicit(&sink.fd, nfd, memory_order_release);
        sink.owned = true;
        return 0;
    }
    if (dup3(nfd, atomic_load_explicit(&sink.fd, memory_order_relaxed), O_CLOEXEC) < 0)
        rc = -errno;
    close(nfd);
    return rc;
}

int
log_open_file(const char *path)
{
    char *copy = NULL;
    int nfd, rc;

    pthread_mutex_lock(&sink.mu);
    if (path == NULL || *path == '\0') {
        /* Back to stderr: the descriptor number stays ours, now a copy of
         * stderr, so concurrent writers keep a valid descriptor. */
        rc = 0;
        if (sink.owned && dup3(STDERR_FILENO, atomic_load_explicit(&sink.fd, memory_order_relaxed),
                               O_CLOEXEC) < 0)
            rc = -errno;
        if (rc == 0) {
            free(sink.path);
            sink.path = NULL;
        }
        goto out;
    }
    if ((copy = strdup(path)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if ((nfd = sink_open(path)) < 0) {
        rc = nfd;
        goto out;
    }
    if ((rc = sink_install(nfd)) < 0)
        goto out;
    free(sink.path);
    sink.path = copy;
    copy = NULL; /* the sink owns it now */
out:
    pthread_mutex_unlock(&sink.mu);
    free(copy);
    return rc;
}

int
log_reopen(void)
{
    char path[JOBQ_LOG_VALUE_MAX_BYTES] = "";
    int nfd, rc = 0;

    pthread_mutex_lock(&sink.mu);
    if (sink.path == NULL)
        goto out;
    if ((nfd = sink_open(sink.path)) < 0) {
        rc = nfd;
        log_quote(path, sizeof(path), sink.path);
        goto out;
    }
    rc = sink_install(nfd);
out:
    pthread_mutex_unlock(&sink.mu);
    /* Logged here, where the decision to keep the old file is made; the old
     * file is still the sink, so the line lands next to the previous ones. */
    if (rc < 0)
        log_error("log.reopen_failed", "path=%s err=%s", path, log_q(strerror(-rc)));
    return rc;
}

/* ---- building a line -------------------------------------------------- */

/* A bounded output buffer. Once full, appends are dropped and full is set;
 * callers roll back to a field boundary. */
struct lbuf {
    char *p;
    size_t len, cap;
    bool full;
};

static void
lb_put(struct lbuf *b, const void *s, size_t n)
{
    if (b->full || n > b->cap - b->len) {
        b->full = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void
lb_putc(struct lbuf *b, char c)
{
    lb_put(b, &c, 1);
}

static void
lb_puts(struct lbuf *b, const char *s)
{
    lb_put(b, s, strlen(s));
}

static void
lb_hex(struct lbuf *b, const char *prefix, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char x[2] = {hex[c >> 4], hex[c & 15]};
    lb_puts(b, prefix);
    lb_put(b, x, 2);
}

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0:
 * overlong forms, surrogates and code points above U+10FFFF are invalid. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned cp, min;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2, cp = s[0] & 0x1f, min = 0x80;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3, cp = s[0] & 0x0f, min = 0x800;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4, cp = s[0] & 0x07, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

char *
log_quote(char *buf, size_t len, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = strlen((const char *)p), pos = 1, cut = 1;

    buf[0] = '"';
    for (size_t i = 0; i < n;) {
        char piece[4];
        size_t plen = 0, k;

        if (*p == '"' || *p == '\\') {
            piece[plen++] = '\\';
            piece[plen++] = (char)*p;
            k = 1;
        } else if (*p == '\n' || *p == '\r' || *p == '\t') {
            piece[plen++] = '\\';
            piece[plen++] = *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't';
            k = 1;
        } else if (*p < 0x20 || *p == 0x7f || (k = utf8_len(p, n - i)) == 0) {
            static const char hex[] = "0123456789abcdef";
            piece[plen++] = '\\';
            piece[plen++] = 'x';
            piece[plen++] = hex[*p >> 4];
            piece[plen++] = hex[*p & 15];
            k = 1;
        } else {
            memcpy(piece, p, k);
            plen = k;
        }
        /* Room for the closing quote and the NUL. */
        if (pos + plen + 2 > len) {
            memcpy(buf + cut, "...\"", 5);
            return buf;
        }
        memcpy(buf + pos, piece, plen);
        pos += plen;
        /* Where to cut if a later piece does not fit: leaves room for
         * ..." and the NUL. */
        if (pos + 5 <= len)
            cut = pos;
        p += k;
        i += k;
    }
    buf[pos++] = '"';
    buf[pos] = '\0';
    return buf;
}

/*
 * The next field of s[0..n) from *i: skips spaces and returns the token's
 * bounds. A double-quoted section (with backslash escapes) may hold
 * spaces; an unterminated one runs to the end.
 */
static bool
field_next(const char *s, size_t n, size_t *i, size_t *start, size_t *end)
{
    size_t j = *i;
    bool quoted = false;

    while (j < n && s[j] == ' ')
        j++;
    if (j == n)
        return false;
    *start = j;
    for (; j < n && (quoted || s[j] != ' '); j++) {
        if (quoted && s[j] == '\\' && j + 1 < n)
            j++;
        else if (s[j] == '"')
            quoted = !quoted;
    }
    *end = j;
    *i = j;
    return true;
}

/* Copies s[0..n) for a text line: control bytes become \xNN so that
 * nothing that reached log_emit unquoted can end the line. */
static void
text_put(struct lbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            lb_hex(b, "\\x", c);
        else
            lb_putc(b, (char)c);
    }
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The byte at s[*i] (end excluded), decoding log_quote's escapes when
 * quoted; advances *i. */
static unsigned char
field_byte(const char *s, size_t end, size_t *i, bool quoted)
{
    char c = s[(*i)++];
    int h, l;

    if (!quoted || c != '\\' || *i == end)
        return (unsigned char)c;
    c = s[(*i)++];
    switch (c) {
    case 'n':
        return '\n';
    case 'r':
        return '\r';
    case 't':
        return '\t';
    case 'x':
        if (*i + 2 <= end && (h = hexval(s[*i])) >= 0 && (l = hexval(s[*i + 1])) >= 0) {
            *i += 2;
            return (unsigned char)(h << 4 | l);
        }
        return 'x';
    default:
        return (unsigned char)c;
    }
}

/* Appends s[i..end) as the body of a JSON string (no quotes), decoding
 * log_quote escapes when quoted; invalid UTF-8 becomes U+FFFD. */
static void
json_put(struct lbuf *b, const char *s, size_t i, size_t end, bool quoted)
{
    while (i < end) {
        unsigned char u[4];
        size_t at[4], j = i, k = 1, len;

        u[0] = field_byte(s, end, &j, quoted);
        at[0] = j;
        if (u[0] < 0x80) {
            unsigned char c = u[0];
            if (c == '"' || c == '\\') {
                lb_putc(b, '\\');
                lb_putc(b, (char)c);
            } else if (c == '\n') {
                lb_puts(b, "\\n");
            } else if (c == '\r') {
                lb_puts(b, "\\r");
            } else if (c == '\t') {
                lb_puts(b, "\\t");
            } else if (c < 0x20 || c == 0x7f) {
                lb_hex(b, "\\u00", c);
            } else {
                lb_putc(b, (char)c);
            }
            i = j;
            continue;
        }
        /* A multi-byte sequence may span escapes (\xc3\xa9): decode up to
         * four bytes, then keep as many as form one valid character. */
        for (; k < 4 && j < end; k++) {
            u[k] = field_byte(s, end, &j, quoted);
            at[k] = j;
        }
        if ((len = utf8_len(u, k)) == 0) {
            lb_puts(b, "\xef\xbf\xbd"); /* U+FFFD */
            i = at[0];
        } else {
            lb_put(b, u, len);
            i = at[len - 1];
        }
    }
}

/* A bare value that JSON reads as a number: -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)? */
static bool
json_number(const char *s, size_t n)
{
    size_t i = 0, d;

    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0') {
        i++;
    } else {
        for (d = i; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            ;
        if (i == d)
            return false;
    }
    if (i < n && s[i] == '.') {
        for (d = ++i; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            ;
        if (i == d)
            return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        if (++i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        for (d = i; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            ;
        if (i == d)
            return false;
    }
    return i == n;
}

/* Length of the key of a key=value token, or 0 if the token is not one. */
static size_t
field_key(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n && s[i] != '='; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return i < n ? i : 0;
}

/* The index of the closing quote of the quoted value at s[start] (a '"'),
 * or 0 if it is unterminated or anything follows it before end. */
static size_t
quoted_end(const char *s, size_t start, size_t end)
{
    for (size_t i = start + 1; i < end; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1 == end ? i : 0;
    }
    return 0;
}

static void
json_value(struct lbuf *b, const char *s, size_t start, size_t end)
{
    size_t n = end - start, q;

    if (n > 0 && s[start] == '"' && (q = quoted_end(s, start, end)) != 0) {
        lb_putc(b, '"');
        json_put(b, s, start + 1, q, true);
        lb_putc(b, '"');
    } else if (n > 0 && (json_number(s + start, n) || (n == 4 && !memcmp(s + start, "true", 4)) ||
                         (n == 5 && !memcmp(s + start, "false", 5)))) {
        lb_put(b, s + start, n);
    } else {
        lb_putc(b, '"');
        json_put(b, s, start, end, false);
        lb_putc(b, '"');
    }
}

/* Appends the fields of f[0..n) to a JSON line; returns true if some were
 * dropped for space. Tokens that are not key=value are joined into a msg
 * member at the end. */
static bool
json_fields(struct lbuf *b, const char *f, size_t n, bool cut_last)
{
    size_t i = 0, start, end, mark, klen;
    bool junk = false, first = true;

    while (field_next(f, n, &i, &start, &end)) {
        if (cut_last && end == n)
            return true;
        if ((klen = field_key(f + start, end - start)) == 0) {
            junk = true;
            continue;
        }
        mark = b->len;
        lb_puts(b, ",\"");
        json_put(b, f, start, start + klen, false);
        lb_puts(b, "\":");
        json_value(b, f, start + klen + 1, end);
        if (b->full) {
            b->len = mark;
            b->full = false;
            return true;
        }
    }
    if (!junk)
        return cut_last;
    mark = b->len;
    lb_puts(b, ",\"msg\":\"");
    for (i = 0; field_next(f, n, &i, &start, &end);) {
        if (cut_last && end == n)
            break;
        if (field_key(f + start, end - start) != 0)
            continue;
        if (!first)
            lb_putc(b, ' ');
        first = false;
        json_put(b, f, start, end, false);
    }
    lb_putc(b, '"');
    if (b->full) {
        b->len = mark;
        b->full = false;
        return true;
    }
    return cut_last;
}

/* Appends the fields of f[0..n) to a text line; returns true if some were
 * dropped for space. */
static bool
text_fields(struct lbuf *b, const char *f, size_t n, bool cut_last)
{
    size_t i = 0, start, end, mark;

    while (field_next(f, n, &i, &start, &end)) {
        if (cut_last && end == n)
            return true;
        mark = b->len;
        lb_putc(b, ' ');
        text_put(b, f + start, end - start);
        if (b->full) {
            b->len = mark;
            b->full = false;
            return true;
        }
    }
    return cut_last;
}

static int64_t
clock_realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sink_write(const char *p, size_t n)
{
    int fd = atomic_load_explicit(&sink.fd, memory_order_acquire);

    /* One write for the whole line: O_APPEND files and pipes (up to
     * PIPE_BUF) keep it whole. The loop only finishes a short write. */
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            atomic_fetch_add_explicit(&sink.write_errors, 1, memory_order_relaxed);
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/*
 * The line's two 4 KiB buffers, one pair per thread rather than on the
 * caller's stack: every coroutine that logs would otherwise keep two more
 * pages of its 64 KiB stack resident for the rest of its life (frames are
 * probed page by page), which for thousands of running jobs is most of
 * their memory. log_emit never parks and is never re-entered, so one pair
 * serves every coroutine of a thread. Scratch, not state: nothing in them
 * outlives a call.
 */
static _Thread_local struct {
    char fields[JOBQ_LOG_LINE_MAX_BYTES];
    char line[JOBQ_LOG_LINE_MAX_BYTES];
} scratch;

void
log_emit(enum log_level level, const char *event, const char *fmt, ...)
{
    char *fields = scratch.fields, *line = scratch.line, ts[32];
    int64_t (*now)(void) = atomic_load_explicit(&sink.clock, memory_order_acquire);
    struct lbuf b = {line, 0, JOBQ_LOG_LINE_MAX_BYTES - LOG_TRAILER_BYTES, false};
    size_t n, evlen;
    bool cut, truncated;
    int saved = errno, r;
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    r = vsnprintf(fields, JOBQ_LOG_LINE_MAX_BYTES, fmt, ap);
    va_end(ap);
    n = r < 0 ? 0 : (size_t)r;
    /* A format cut by vsnprintf ends in a partial field: drop it. */
    cut = n >= JOBQ_LOG_LINE_MAX_BYTES;
    if (cut)
        n = JOBQ_LOG_LINE_MAX_BYTES - 1;
    time_format_rfc3339(now ? now() : clock_realtime_ms(), ts, sizeof(ts));
    evlen = strnlen(event, LOG_EVENT_MAX_BYTES);

    if (atomic_load_explicit(&sink.format, memory_order_relaxed) == LOG_FORMAT_JSON) {
        lb_puts(&b, "{\"ts\":\"");
        lb_puts(&b, ts);
        lb_puts(&b, "\",\"level\":\"");
        lb_puts(&b, log_level_name(level));
        lb_puts(&b, "\",\"event\":\"");
        json_put(&b, event, 0, evlen, false);
        lb_putc(&b, '"');
        truncated = json_fields(&b, fields, n, cut);
        b.cap = JOBQ_LOG_LINE_MAX_BYTES;
        if (truncated)
            lb_puts(&b, ",\"truncated\":true");
        lb_puts(&b, "}\n");
    } else {
        lb_puts(&b, ts);
        lb_putc(&b, ' ');
        lb_puts(&b, log_level_name(level));
        lb_putc(&b, ' ');
        text_put(&b, event, evlen);
        truncated = text_fields(&b, fields, n, cut);
        b.cap = JOBQ_LOG_LINE_MAX_BYTES;
        if (truncated)
            lb_puts(&b, " truncated=true");
        lb_putc(&b, '\n');
    }
    sink_write(line, b.len);
    errno = saved;
}
