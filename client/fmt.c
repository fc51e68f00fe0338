/*
 * fmt — the client's output helpers: tables, shortening, ages, commands,
 * JSON. Widths count code points: job names and commands are mostly
 * ASCII, and counting without the locale keeps output the same for every
 * user and every test.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "fmt.h"
#include "jobq/duration.h"

#define ELLIPSIS "\xe2\x80\xa6" /* U+2026, one column */

/* Length of the valid UTF-8 sequence at s and its code point, or 0 if s
 * does not start one (overlong forms and surrogates are invalid). */
static size_t
utf8_next(const unsigned char *s, uint32_t *cp)
{
    size_t n;
    uint32_t c = s[0], min;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, c &= 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, c &= 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, c &= 0x07, min = 0x10000;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return n;
}

size_t
fmt_width(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t w = 0;

    while (*p) {
        uint32_t cp;
        size_t n = utf8_next(p, &cp);
        p += n ? n : 1;
        w++;
    }
    return w;
}

char *
fmt_clean(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    char *out, *o;

    if ((out = malloc(strlen(s) + 1)) == NULL)
        return NULL;
    o = out;
    while (*p) {
        uint32_t cp;
        size_t n = utf8_next(p, &cp);
        if (n == 0 || cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0)) {
            *o++ = '?';
            p += n ? n : 1;
            continue;
        }
        memcpy(o, p, n);
        o += n;
        p += n;
    }
    *o = '\0';
    return out;
}

char *
fmt_shorten(const char *s, size_t width)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t keep;
    char *out;

    if (fmt_width(s) <= width)
        return strdup(s);
    if (width == 0)
        return strdup("");
    /* Keep width - 1 columns, then the ellipsis. */
    for (keep = 0; keep < width - 1 && *p; keep++) {
        uint32_t cp;
        size_t n = utf8_next(p, &cp);
        p += n ? n : 1;
    }
    size_t bytes = (size_t)(p - (const unsigned char *)s);
    if ((out = malloc(bytes + sizeof(ELLIPSIS))) == NULL)
        return NULL;
    memcpy(out, s, bytes);
    memcpy(out + bytes, ELLIPSIS, sizeof(ELLIPSIS));
    return out;
}

/* Characters a shell leaves alone in a word. */
static int
shell_safe(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-",
                   *s) == NULL)
            return 0;
    return 1;
}

char *
fmt_command(const cJSON *argv)
{
    const cJSON *a;
    size_t len = 1;
    char *out, *o;

    cJSON_ArrayForEach (a, argv) {
        const char *s = cJSON_IsString(a) ? a->valuestring : "?";
        len += 4 * strlen(s) + 3; /* worst case: every char a quote -> '\'' */
    }
    if ((out = malloc(len)) == NULL)
        return NULL;
    o = out;
    cJSON_ArrayForEach (a, argv) {
        const char *s = cJSON_IsString(a) ? a->valuestring : "?";
        if (o != out)
            *o++ = ' ';
        if (shell_safe(s)) {
            o = stpcpy(o, s);
            continue;
        }
        *o++ = '\'';
        for (; *s; s++) {
            if (*s == '\'')
                o = stpcpy(o, "'\\''");
            else
                *o++ = *s;
        }
        *o++ = '\'';
    }
    *o = '\0';
    return out;
}

char *
fmt_age(int64_t now_ms, int64_t then_ms, char *buf, size_t len)
{
    int64_t s = (now_ms - then_ms) / 1000;

    if (s < 0) /* clock skew between the daemon's commit and our start */
        s = 0;
    if (s < 60)
        snprintf(buf, len, "%llds ago", (long long)s);
    else if (s < 3600)
        snprintf(buf, len, "%lldm ago", (long long)(s / 60));
    else if (s < 86400)
        snprintf(buf, len, "%lldh ago", (long long)(s / 3600));
    else
        snprintf(buf, len, "%lldd ago", (long long)(s / 86400));
    return buf;
}

static void
indent(FILE *out, int depth)
{
    fputc('\n', out);
    for (int i = 0; i < depth; i++)
        fputs("  ", out);
}

int
fmt_json(FILE *out, const cJSON *item)
{
    /* cJSON_Print indents with tabs and puts a tab after each colon;
     * reindent its compact form the way jq prints, which people read and
     * diff more easily. */
    char *s = cJSON_PrintUnformatted(item);
    bool in_string = false;
    int depth = 0;

    if (s == NULL)
        return -ENOMEM;
    for (const char *p = s; *p; p++) {
        if (in_string) {
            fputc(*p, out);
            if (*p == '\\' && p[1] != '\0')
                fputc(*++p, out);
            else if (*p == '"')
                in_string = false;
            continue;
        }
        switch (*p) {
        case '"':
            in_string = true;
            fputc(*p, out);
            break;
        case '{':
        case '[':
            fputc(*p, out);
            if (p[1] == '}' || p[1] == ']') {
                fputc(*++p, out); /* {} and [] stay on one line */
                break;
            }
            indent(out, ++depth);
            break;
        case '}':
        case ']':
            indent(out, --depth);
            fputc(*p, out);
            break;
        case ',':
            fputc(',', out);
            indent(out, depth);
            break;
        case ':':
            fputs(": ", out);
            break;
        default:
            fputc(*p, out);
        }
    }
    fputc('\n', out);
    free(s);
    return 0;
}

cJSON *
json_id_new(int64_t id)
{
    char buf[24];

    snprintf(buf, sizeof(buf), "%" PRId64, id);
    return cJSON_CreateRaw(buf);
}

bool
json_add_id(cJSON *obj, const char *key, int64_t id)
{
    cJSON *n = json_id_new(id);

    if (n == NULL || !cJSON_AddItemToObject(obj, key, n)) {
        cJSON_Delete(n);
        return false;
    }
    return true;
}

int64_t
json_int(const cJSON *obj, const char *key, int64_t dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : dflt;
}

const char *
json_str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

bool
json_bool(const cJSON *obj, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, key));
}

int
json_time(const cJSON *obj, const char *key, int64_t *ms)
{
    const char *s = json_str(obj, key);
    char why[160];

    if (s == NULL)
        return -ENOENT;
    return time_parse_ms(s, 0, ms, why, sizeof(why));
}

struct table {
    size_t ncols;
    size_t nrows; /* including the header row */
    size_t cap;
    char **cells; /* nrows * ncols, owned */
};

int
table_add(struct table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **nc = realloc(t->cells, cap * t->ncols * sizeof(*nc));
        if (nc == NULL)
            return -ENOMEM;
        t->cells = nc;
        t->cap = cap;
    }
    for (size_t i = 0; i < t->ncols; i++) {
        char *c = fmt_clean(cells[i] != NULL ? cells[i] : "-");
        if (c == NULL) {
            while (i-- > 0)
                free(t->cells[t->nrows * t->ncols + i]);
            return -ENOMEM;
        }
        t->cells[t->nrows * t->ncols + i] = c;
    }
    t->nrows++;
    return 0;
}

int
table_new(size_t ncols, const char *const *headers, struct table **out)
{
    struct table *t;
    int rc;

    if ((t = calloc(1, sizeof(*t))) == NULL)
        return -ENOMEM;
    t->ncols = ncols;
    if ((rc = table_add(t, headers)) < 0) {
        table_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void
table_print(const struct table *t, FILE *out, size_t width)
{
    size_t w[16] = {0}, used = 0, last;

    if (t->ncols == 0 || t->ncols > sizeof(w) / sizeof(w[0]))
        return;
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c + 1 < t->ncols; c++) {
            size_t cw = fmt_width(t->cells[r * t->ncols + c]);
            if (cw > w[c])
                w[c] = cw;
        }
    for (size_t c = 0; c + 1 < t->ncols; c++)
        used += w[c] + 2;
    /* The last column gets what is left, but never fewer than 10 columns:
     * a table wider than a tiny terminal beats one with no command. */
    last = width == 0 ? SIZE_MAX : width > used + 10 ? width - used : 10;
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c + 1 < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c];
            fprintf(out, "%s%*s", s, (int)(w[c] - fmt_width(s) + 2), "");
        }
        char *s = fmt_shorten(t->cells[r * t->ncols + t->ncols - 1], last);
        fprintf(out, "%s\n", s != NULL ? s : "");
        free(s);
    }
}

void
table_free(struct table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}
