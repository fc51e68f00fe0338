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
 *
 * HEAD works wherever GET does; any other method gets 405, any other path
 * 404. Callbacks never block: /livez and /readyz answer from atomics, and
 * /metrics hands the request to a coroutine on the same thread that reads
 * the store's counters (parking, not blocking) and then answers every
 * scrape waiting for it. The listener never runs jobs, has its own
 * connection cap (JOBQ_HTTP_CONNECTIONS_MAX), header and body limits, and
 * gives each request --request-timeout from the connection's first byte
 * (or the previous reply) to arrive whole, so a slow or oversized request
 * is cut off without touching the job socket. Owns the listening socket,
 * the evhttp and its connections.
 */
#ifndef JOBQ_HTTPD_H
#define JOBQ_HTTPD_H

#include <stddef.h>

struct daemon;
struct httpd;

/*
 * Binds and listens on d->cfg->http (which must be set), so a port in use
 * is an error at start-up. Returns owned *out (httpd_free); why gets a
 * reason for people ("cannot listen on 127.0.0.1:9090: Address already in
 * use"). Borrows d for the httpd's lifetime.
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

#endif
