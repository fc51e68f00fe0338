/*
 * proto — the wire vocabulary shared by jobqd and jobq: JSON-RPC 2.0 error
 * codes and their names. The encoding and the framing live with each side;
 * docs/PROTOCOL.md is the specification.
 */
#ifndef JOBQ_PROTO_H
#define JOBQ_PROTO_H

/* Bumped on an incompatible change; `version` reports it. */
#define JOBQ_PROTOCOL_VERSION 1

enum proto_error {
    /* JSON-RPC 2.0 standard codes. */
    PROTO_PARSE_ERROR = -32700,
    PROTO_INVALID_REQUEST = -32600,
    PROTO_METHOD_NOT_FOUND = -32601,
    PROTO_INVALID_PARAMS = -32602,
    PROTO_INTERNAL_ERROR = -32603,
    /* jobq application codes. */
    PROTO_NOT_FOUND = -32001,            /* no such job (or not visible to the caller) */
    PROTO_PERMISSION_DENIED = -32002,    /* the caller's uid may not do this */
    PROTO_QUEUE_FULL = -32003,           /* --max-queued reached: retry later */
    PROTO_STORAGE_ERROR = -32004,        /* the store could not commit (disk full, I/O error) */
    PROTO_SHUTTING_DOWN = -32005,        /* the daemon is draining */
    PROTO_TOO_LARGE = -32006,            /* message over the size limit; connection closed */
    PROTO_REQUEST_TIMEOUT = -32007,      /* message stalled mid-line; connection closed */
    PROTO_TOO_MANY_CONNECTIONS = -32008, /* connection cap reached; connection closed */
    PROTO_CONFLICT = -32009, /* the job's state does not allow it (retry a running job) */
};

/* Returns a static snake_case name ("parse_error", "not_found", ...) or
 * "unknown_error". */
const char *proto_error_name(int code);

#endif
