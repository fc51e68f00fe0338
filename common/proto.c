/*
 * proto — names of the JSON-RPC error codes, shared by both binaries so the
 * daemon's replies and the client's messages use the same words.
 */
#include "jobq/proto.h"

const char *
proto_error_name(int code)
{
    static const struct {
        int code;
        const char *name;
    } names[] = {
        {PROTO_PARSE_ERROR, "parse_error"},
        {PROTO_INVALID_REQUEST, "invalid_request"},
        {PROTO_METHOD_NOT_FOUND, "method_not_found"},
        {PROTO_INVALID_PARAMS, "invalid_params"},
        {PROTO_INTERNAL_ERROR, "internal_error"},
        {PROTO_NOT_FOUND, "not_found"},
        {PROTO_PERMISSION_DENIED, "permission_denied"},
        {PROTO_QUEUE_FULL, "queue_full"},
        {PROTO_STORAGE_ERROR, "storage_error"},
        {PROTO_SHUTTING_DOWN, "shutting_down"},
        {PROTO_TOO_LARGE, "too_large"},
        {PROTO_REQUEST_TIMEOUT, "request_timeout"},
        {PROTO_TOO_MANY_CONNECTIONS, "too_many_connections"},
        {PROTO_CONFLICT, "conflict"},
    };
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].code == code)
            return names[i].name;
    return "unknown_error";
}
