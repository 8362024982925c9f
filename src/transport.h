/*-------------------------------------------------------------------------
 *
 * transport.h
 *		The libpq transport a sync uses to talk to a peer database, from a
 *		backend or a background worker (src/transport.c).
 *
 * A peer is named either by a libpq connection string (keyword=value
 * pairs or a postgres:// URI) or by the name of a foreign server of the
 * foreign-data wrapper "morango" (connection options on the server, user
 * and password in the user mapping of the current user or PUBLIC).
 *
 * Every wait is interruptible (query cancel, statement_timeout,
 * terminate, postmaster death) and bounded by the caller's timeouts.
 * Peer connections are plain libpq connections, malloc'd by libpq and not
 * tied to a memory context or resource owner: whoever connects must
 * disconnect, on error paths too (PG_TRY/PG_FINALLY), and must PQclear
 * every PGresult it is handed.
 *
 * Text crosses the wire in UTF8 (client_encoding is always UTF8): SQL text
 * and parameter values given to morango_peer_exec() must be UTF8, and
 * result values are UTF8 (convert with pg_server_to_any() and
 * pg_any_to_server() when the local database encoding is not UTF8).
 * Errors raised by the transport itself are already converted.
 *
 * IDENTIFICATION
 *		src/transport.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MORANGO_TRANSPORT_H
#define MORANGO_TRANSPORT_H

#include "libpq-fe.h"

/*
 * Payload bytes moved by morango_peer_exec() in this backend since it
 * started: SQL text plus parameter values sent, and result values
 * received (PQgetlength of every field of every result).  Protocol
 * overhead is not counted.  Never reset by the transport: read it before
 * and after a piece of work and take the difference.
 */
typedef struct MorangoPeerStats
{
	uint64		calls;			/* morango_peer_exec() calls */
	uint64		bytes_out;		/* SQL text and parameter values sent */
	uint64		bytes_in;		/* result values received */
} MorangoPeerStats;

extern MorangoPeerStats morango_peer_stats;

extern bool morango_peer_is_conninfo(const char *peer);
extern char *morango_peer_display(const char *peer);
extern bool morango_peer_has_secret(const char *peer);
extern PGconn *morango_peer_connect(const char *peer, const char *application_name,
									int connect_timeout_s);
extern PGresult *morango_peer_exec(PGconn *conn, const char *sql, int nparams,
								   const Oid *types, const char *const *values,
								   int timeout_ms);
extern void morango_peer_send(PGconn *conn, const char *sql, int nparams,
							  const Oid *types, const char *const *values, int timeout_ms);
extern PGresult *morango_peer_result(PGconn *conn, const char *sql, int timeout_ms);
extern void morango_peer_disconnect(PGconn *conn);

#endif							/* MORANGO_TRANSPORT_H */
