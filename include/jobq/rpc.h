/*
 * rpc — jobqd's side of the JSON-RPC 2.0 protocol (docs/PROTOCOL.md): a
 * request line in, a reply line out. Checks the text (UTF-8, nesting, NUL)
 * before cJSON sees it, validates the envelope, looks the method up in the
 * table of daemon/api.c, runs it, and encodes the reply or the error.
 * Batches run their requests one after another and reply with one array.
 */
#ifndef JOBQ_RPC_H
#define JOBQ_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

struct daemon;
struct ctx;

/* Who is calling, from SO_PEERCRED, and the connection's context. */
struct rpc_peer {
    uid_t uid;
    gid_t gid;
    pid_t pid;
    bool admin;      /* root or the daemon's own uid */
    struct ctx *ctx; /* ends when the connection goes away or the daemon stops */
};

/*
 * What a method handler gets. On failure the handler returns NULL after
 * api_fail() filled code, message and data.
 */
struct api_call {
    struct daemon *d;
    const struct rpc_peer *peer;
    int code;
    char message[512];
    cJSON *data; /* owned by the call until the reply takes it */
};

/* Sets the call's error; data (may be NULL: {}) is taken. Returns NULL so
 * a handler can `return api_fail(...)`. */
cJSON *api_fail(struct api_call *c, int code, cJSON *data, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

typedef cJSON *(*api_fn)(struct api_call *c, const cJSON *params);

/* Returns the handler of method, or NULL (daemon/api.c). Borrows name. */
api_fn api_find(const char *method);

/*
 * Handles one request line (without its line feed). Returns an owned reply
 * line ending in "\n" (free()), or NULL when nothing is to be sent (only
 * notifications) — *oom is set if NULL came from running out of memory.
 * Parks the calling coroutine while the methods run. Borrows everything.
 */
char *rpc_handle(struct daemon *d, const struct rpc_peer *peer, const char *line, size_t len,
                 bool *oom);

/* A JSON-RPC error object {"code", "message", "data"}; takes data (NULL:
 * {}). Returns owned (cJSON_Delete), NULL when memory runs out. */
cJSON *rpc_error_object(int code, const char *message, cJSON *data);

/* A connection-level error line ({"id": null}): too_large, request_timeout,
 * too_many_connections. Returns owned (free()). */
char *rpc_error_line(int code, const char *message, const char *data_key, int64_t data_value);

/* The text checks, exposed for the fuzz target: 0, or -EINVAL with a reason
 * (invalid UTF-8, a NUL byte or \u0000 escape, nesting deeper than
 * JOBQ_JSON_MAX_DEPTH). */
int rpc_check_text(const char *s, size_t len, char *why, size_t whylen);

#endif
