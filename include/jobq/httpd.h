/*
 * httpd — the optional HTTP endpoint (--http ADDR:PORT) for probes and
 * scrapers, served by libevent's evhttp on the event base of one
 * scheduler thread:
 *
 *   GET /livez    200 "ok": the callback ran, so that thread's event loop
 *                 serves and the process is alive
 *   GET /readyz   200 "ready" while the store is open and the daemon is
 *                 not draining; 503 "draining" once SIGTERM arrived
 *   GET /metrics  Prometheus text exposition (version 0.0.4) of the
 *                 counters and histograms of metrics.c, the job counts of
 *                 the store, the runtime and the process
 *   POST /rpc     with --http-token-file only: one JSON-RPC request or
 *                 batch as the body, authenticated by a bearer token; the
 *                 reply is the body (docs/PROTOCOL.md, "HTTP transport")
 *
 * HEAD works wherever GET does; any other method gets 405, any other path
 * 404. Callbacks never block: /livez and /readyz answer from atomics,
 * /metrics hands the request to a coroutine on the same thread that reads
 * the store's counters (parking, not blocking) and then answers every
 * scrape waiting for it, and each /rpc request gets a coroutine of its own
 * (on any thread) whose reply goes back to that thread to be sent, so a
 * held `wait` pins nothing. An HTTP peer has no SO_PEERCRED: a valid token
 * makes it jobqd's own uid, an administrator. The listener never runs
 * jobs, has its own connection cap (JOBQ_HTTP_CONNECTIONS_MAX), header and
 * body limits, and gives each request --request-timeout from the
 * connection's first byte (or the previous reply) to arrive whole, so a
 * slow or oversized request is cut off without touching the job socket.
 * Owns the listening socket, the evhttp, its connections and the token.
 */
#ifndef JOBQ_HTTPD_H
#define JOBQ_HTTPD_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct daemon;
struct httpd;

/*
 * Binds and listens on d->cfg->http (which must be set), so a port in use
 * is an error at start-up, and reads d->cfg->http_token_file if set.
 * Returns owned *out (httpd_free); why gets a reason for people ("cannot
 * listen on 127.0.0.1:9090: Address already in use"); -EINVAL for a bad
 * address or token file. Borrows d for the httpd's lifetime.
 */
int httpd_new(struct daemon *d, struct httpd **out, char *why, size_t whylen);
/* NULL-safe. After httpd_stop (or if httpd_start was never called). */
void httpd_free(struct httpd *h);

/* Starts serving: spawns the server coroutine on scheduler thread 0 of
 * d->rt, which owns the evhttp from then on. Call from a coroutine. */
int httpd_start(struct httpd *h);
/* Stops serving: answers the scrapes in progress, closes every HTTP
 * connection and the listener. Parks the caller until done. NULL-safe,
 * idempotent. */
void httpd_stop(struct httpd *h);

/* The port listened on. */
int httpd_port(const struct httpd *h);

/* SIGHUP: reads cfg->http_token_file again (the path or the token in it
 * may have changed; empty turns /rpc off). On failure the current token
 * stays and the reason is logged. NULL-safe. Borrows cfg. */
void httpd_reload(struct httpd *h, const struct config *cfg);

/*
 * Reads a bearer token file: a regular file, not readable, writable or
 * executable by others nor writable by its group, holding one token of
 * JOBQ_HTTP_TOKEN_MIN_BYTES to JOBQ_HTTP_TOKEN_MAX_BYTES visible ASCII
 * characters (trailing white space ignored). Returns owned *out
 * (httpd_token_free) and its length; -EINVAL, -EACCES or -errno with a
 * reason in why that never quotes the file's content. Borrows path.
 */
int httpd_token_read(const char *path, char **out, size_t *len, char *why, size_t whylen);
/* NULL-safe; wipes the token before freeing it. */
void httpd_token_free(char *token, size_t len);
/* Whether got equals want, in a time that depends on wantlen only. Borrows
 * both. */
bool httpd_token_equal(const char *got, size_t gotlen, const char *want, size_t wantlen);

#endif
