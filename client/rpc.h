/*
 * rpc — the client side of the jobq protocol (docs/PROTOCOL.md): finding
 * the socket, connecting, sending JSON-RPC requests as NDJSON lines and
 * reading the replies, matched by id so several requests can be in flight
 * at once (pipelining). Or, for a remote jobqd (jobq --url), the same
 * requests as HTTP POSTs to its /rpc, one exchange per request, with the
 * same calls. Knows nothing about verbs or printing.
 */
#ifndef JOBQ_CLIENT_RPC_H
#define JOBQ_CLIENT_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "jobq/limits.h"

/* Longest reply line accepted. Larger than requests: a job object repeats
 * a spec that may nearly fill a 1 MiB request, plus its attempts. */
#define RPC_REPLY_MAX_BYTES (4 * JOBQ_REQUEST_MAX_BYTES)

/* An error reply: code from include/jobq/proto.h, message for people, data
 * as the daemon sent it (an object, or NULL). */
struct rpc_error {
    int code;
    char message[512];
    cJSON *data; /* owned (rpc_error_clear) */
};

/* NULL-safe; frees data and zeroes e. */
void rpc_error_clear(struct rpc_error *e);

/* What decides where the socket is. Strings are borrowed. */
struct rpc_where {
    const char *flag;      /* --socket */
    const char *env;       /* $JOBQ_SOCKET */
    const char *xdg_state; /* $XDG_STATE_HOME */
    const char *home;      /* $HOME */
};

/* The system service's socket: the last link of the default chain. */
#define RPC_SYSTEM_SOCKET "/run/jobq/jobq.sock"
/* The socket of a checkout running `make run`. */
#define RPC_CHECKOUT_SOCKET "./var/jobq.sock"

/*
 * Picks the socket: w->flag, else w->env, else the first that exists of
 * ./var/jobq.sock, ${XDG_STATE_HOME:-$HOME/.local/state}/jobq/jobq.sock
 * and /run/jobq/jobq.sock; when none exists, /run/jobq/jobq.sock with
 * *fallback set. Writes the path into buf. 0, or -ENAMETOOLONG.
 */
int rpc_socket_path(const struct rpc_where *w, char *buf, size_t len, bool *fallback);

struct rpc;

/* Connects to path. Returns owned *out (rpc_free), or -errno from socket
 * or connect (-ENOENT, -ECONNREFUSED, -EACCES, ...). Paths longer than
 * sun_path are reached through /proc/self/fd. Borrows path. */
int rpc_connect(const char *path, struct rpc **out);
/* NULL-safe; closes the connection and drops pending replies. */
void rpc_free(struct rpc *r);

/*
 * The HTTP transport (docs/PROTOCOL.md, "HTTP transport"). url is
 * http://HOST[:PORT][/PREFIX] (HOST a name, an IPv4 address or [IPv6];
 * PORT 80 by default); requests go to PREFIX/rpc. No https: TLS ends at a
 * proxy or tunnel. token (NULL: none) is sent as a bearer token; it is
 * copied. Nothing is connected yet: rpc_send queues a request and
 * rpc_recv makes its exchange on a connection of its own, so pipelined
 * requests are made one after another. A held `wait` is cut into pieces
 * of at most RPC_HTTP_HOLD_MAX_MS (and a `logs` wait_ms capped to it) so
 * that proxies' idle timeouts do not end it. Returns owned *out
 * (rpc_free); -EINVAL with why for a bad URL. Borrows url.
 */
int rpc_open_url(const char *url, const char *token, size_t token_len, struct rpc **out, char *why,
                 size_t whylen);

/* Longest a request is held server-side in one HTTP exchange: below the
 * 60 s idle timeout of common proxies (nginx, cloud load balancers). */
#define RPC_HTTP_HOLD_MAX_MS 50000

/* Reads a bearer token file for rpc_open_url: its content without
 * trailing white space, visible ASCII only. Returns owned *token (free
 * after use; it is a secret) and its length; -errno from open or read,
 * -EINVAL when it holds no token or characters a header cannot carry.
 * Borrows path. */
int rpc_token_read(const char *path, char **token, size_t *len);

/*
 * After an HTTP exchange failed: the status of a reply that was not
 * 200 (401, 404, 502, ...) with its reason phrase in *reason, or 0 when no
 * reply came; *detail says more about a transport failure ("cannot
 * resolve HOST: ...", "connecting", "waiting for the reply"), or "".
 * HTTP failures are -EPROTO from rpc_recv. Borrows r.
 */
int rpc_http_status(const struct rpc *r, const char **reason, const char **detail);

/* Sends one request and sets *id to its id. Takes params (NULL: none).
 * -EMSGSIZE if the line would exceed JOBQ_REQUEST_MAX_BYTES; -EPIPE or
 * -ECONNRESET if the daemon hung up; -ENOMEM. */
int rpc_send(struct rpc *r, const char *method, cJSON *params, int64_t *id);

/*
 * Reads replies until the one for id; replies to other requests in flight
 * are kept for their own rpc_recv. Returns 0 and owned *result
 * (cJSON_Delete); -EREMOTEIO with *err filled (rpc_error_clear) for an
 * error reply, including a connection-level error (id null) that ends the
 * connection; -ECONNRESET if the daemon closed first; -EMSGSIZE for a line
 * over RPC_REPLY_MAX_BYTES; -EBADMSG for a line that is not a reply. Over
 * HTTP also: -EPROTO for an HTTP status other than 200 (rpc_http_status),
 * -ENXIO when the host name does not resolve, -ETIMEDOUT, and connect's
 * -errno (-ECONNREFUSED, -EHOSTUNREACH, ...).
 */
int rpc_recv(struct rpc *r, int64_t id, cJSON **result, struct rpc_error *err);

/* rpc_send then rpc_recv. Takes params. */
int rpc_call(struct rpc *r, const char *method, cJSON *params, cJSON **result,
             struct rpc_error *err);

/*
 * Parses one reply line (without its newline). Sets *id (-1 and *id_null
 * for "id": null). Returns 0 with owned *result, -EREMOTEIO with *err
 * filled, or -EBADMSG. Borrows line. Exposed for tests.
 */
int rpc_parse_reply(const char *line, size_t len, int64_t *id, bool *id_null, cJSON **result,
                    struct rpc_error *err);

/* The request line for (id, method, params), without newline. Borrows
 * params. Returns owned (free()) or NULL. Exposed for tests. */
char *rpc_format_request(int64_t id, const char *method, const cJSON *params);

#endif
