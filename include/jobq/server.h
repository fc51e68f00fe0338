/*
 * server — the Unix socket: listening (created safely, or inherited from
 * systemd socket activation), one coroutine per connection, framing of
 * NDJSON lines, the limits of docs/PROTOCOL.md section 4 (1 MiB per
 * message, a deadline per message, the connection cap), SO_PEERCRED, and
 * one coroutine per request so pipelined requests share group commits.
 * Owns the listening socket, every connection and their buffers.
 */
#ifndef JOBQ_SERVER_H
#define JOBQ_SERVER_H

#include <stddef.h>

struct daemon;
struct server;

/*
 * Opens the listening socket: the one systemd passed to this process
 * (LISTEN_FDS; the descriptor named "jobq" in LISTEN_FDNAMES, else the
 * first listening Unix stream socket), else cfg->socket, refusing to replace a path
 * that is not a socket or a socket a live daemon listens on (a stale one is
 * removed). Returns owned *out (server_free); -EADDRINUSE when another
 * daemon listens there. why gets a reason for people.
 */
int server_new(struct daemon *d, struct server **out, char *why, size_t whylen);
/* NULL-safe. After server_close_all. Removes the socket file it created. */
void server_free(struct server *s);

/* The accept loop; spawn it as a coroutine (arg: the server). Returns
 * after server_stop. */
void server_main(void *arg);
/* Stops accepting: the listener closes, connections stay. */
void server_stop(struct server *s);
/* Ends every connection (after in-flight requests are answered, within a
 * short bound) and waits until all are gone. Parks the caller. */
void server_close_all(struct server *s);

/* Client connections open now. */
int server_connections(struct server *s);
/* The path served, for messages ("" if inherited without one). */
const char *server_path(struct server *s);

#endif
