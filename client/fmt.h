/*
 * fmt — how the client prints: aligned tables whose last column is
 * shortened to the terminal with "…", ages ("3m ago"), commands joined
 * for reading, JSON output, and small readers of job-object fields.
 * Everything here writes to a FILE or returns a string; nothing talks to
 * the daemon.
 */
#ifndef JOBQ_CLIENT_FMT_H
#define JOBQ_CLIENT_FMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

/* Columns s takes on a terminal: one per UTF-8 code point (invalid bytes
 * count one each). Borrows s. */
size_t fmt_width(const char *s);
/* Returns an owned copy (free()) of s with control characters and invalid
 * UTF-8 replaced by '?', so job names cannot drive the terminal. NULL on
 * ENOMEM. Borrows s. */
char *fmt_clean(const char *s);
/* Returns an owned copy of s cut to at most width columns, ending in "…"
 * when cut. Borrows s. */
char *fmt_shorten(const char *s, size_t width);
/* Returns an owned string: the argv array joined by spaces, each argument
 * that a shell would split or expand written in single quotes. Borrows
 * argv (a JSON array of strings). */
char *fmt_command(const cJSON *argv);
/* Writes "3m ago" ("12s ago", "2h ago", "4d ago") for then_ms seen at now_ms
 * into buf. Returns buf. */
char *fmt_age(int64_t now_ms, int64_t then_ms, char *buf, size_t len);

/* Prints item as indented JSON and a newline. 0 or -ENOMEM. Borrows item. */
int fmt_json(FILE *out, const cJSON *item);

/* Readers of object members (borrowed): the value, or dflt when the member
 * is missing, null or of another type. */
int64_t json_int(const cJSON *obj, const char *key, int64_t dflt);
const char *json_str(const cJSON *obj, const char *key);
bool json_bool(const cJSON *obj, const char *key);
/* A time member (RFC 3339 string) as Unix ms; -ENOENT if null or absent,
 * -EINVAL if unreadable. */
int json_time(const cJSON *obj, const char *key, int64_t *ms);
/* A job id as a JSON number with all its digits (cJSON's printer keeps
 * only 15 significant ones). Returns owned (cJSON_Delete), NULL if out of
 * memory. */
cJSON *json_id_new(int64_t id);
/* Adds json_id_new(id) to obj as key; false if out of memory. */
bool json_add_id(cJSON *obj, const char *key, int64_t id);

/* An aligned table: columns separated by two spaces, the last column cut
 * to fit the width. */
struct table;

/* Returns owned *out (table_free). Borrows headers (ncols strings). */
int table_new(size_t ncols, const char *const *headers, struct table **out);
/* Adds a row of ncols cells (copied and cleaned; NULL prints as "-"). */
int table_add(struct table *t, const char *const *cells);
/* Prints; width 0 means no limit. */
void table_print(const struct table *t, FILE *out, size_t width);
/* NULL-safe. */
void table_free(struct table *t);

#endif
