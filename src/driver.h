/*-------------------------------------------------------------------------
 *
 * driver.h
 *		The initiator's side of a sync: what the caller hands the sync
 *		worker (worker.c) and the driver it runs (driver.c).
 *
 * IDENTIFICATION
 *		src/driver.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MORANGO_DRIVER_H
#define MORANGO_DRIVER_H

#include "postgres.h"

#include "libpq-fe.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* What the caller hands the worker, and what the worker hands back. */
typedef struct SyncArgs
{
	Oid			dboid;
	Oid			useroid;
	pid_t		caller_pid;		/* to wake when the session is known */
	bool		background;		/* sync_start: retry, nobody waits */
	int			chunk_size;
	int			retry_limit;	/* attempts, in the background */
	int			retry_delay_ms; /* first pause between attempts */
	int			retry_max_delay_ms;
	int			peer_timeout_ms;
	int			stage_timeout_ms;
	int			connect_timeout_s;
	char		direction[8];
	char		certificate[UUID_LEN * 2 + 5];	/* ours, text; "" for none */
	char		peer_certificate[UUID_LEN * 2 + 5];
	/* handshake: the worker says which session it runs (or is running) */
	bool		ready;
	bool		already_running;
	/* result */
	bool		done;
	bool		ok;
	int			sqlerrcode;
	pg_uuid_t	session;
	bool		have_session;
	char		error[2048];
	/* peer, profile, filter (a text[] literal), NUL-terminated, in data */
	int			peer_off;
	int			profile_off;
	int			filter_off;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} SyncArgs;

/* the driver's state across its transactions */
typedef struct Driver
{
	MemoryContext session_cxt;	/* lives for the whole sync */
	MemoryContext cxt;			/* the current attempt's (or session_cxt) */
	SyncArgs   *args;
	PGconn	   *conn;
	const char *peer;			/* as given */
	const char *peer_display;	/* without password */
	const char *profile;
	const char *filter;			/* text[] literal */
	const char *session;		/* sync session id, text */
	Datum		session_id;		/* the same, uuid */
	const char *instance;		/* our instance id, text */
	TimestampTz stage_deadline; /* 0: none */
} Driver;

extern bool morango_driver_start(Driver *d, char **running);
extern void morango_driver_run(Driver *d);
extern void morango_driver_failed(Driver *d, const char *message, int retry_in_ms);

#endif							/* MORANGO_DRIVER_H */
