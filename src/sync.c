/*-------------------------------------------------------------------------
 *
 * sync.c
 *		morango.sync(): one whole sync session with a peer, driven by a
 *		background worker that commits as it goes.
 *
 * The caller's backend starts a dynamic background worker (no
 * shared_preload_libraries needed), hands it the arguments through a
 * dynamic shared memory segment and waits for it.  The worker connects to
 * the peer over libpq (transport.c) and runs, for each direction (a pull,
 * then a push, for 'both'), Morango's transfer stages:
 *
 *   pull: our FSIC -> peer_begin (the peer serializes, answers its FSIC,
 *         queues) -> peer_pull_chunk ... -> receive_chunk (validated) ->
 *         dequeue -> deserialize -> peer_finish -> close
 *   push: serialize, our FSIC -> peer_begin (the peer answers its FSIC) ->
 *         queue -> read_chunk -> peer_push_chunk (validated there) ... ->
 *         peer_finish (the peer dequeues and deserializes) -> close
 *
 * Every local step is its own transaction, and every remote call commits
 * on the peer, so the state of both sides is always on disk.  A sync that
 * stops (connection lost, worker killed, peer restarted) resumes where it
 * stopped when morango.sync() is called again with the same peer, profile,
 * filter and direction: the same sync and transfer sessions are picked
 * up, the stage they reached is skipped, and a transfer goes on after the
 * last chunk the receiver holds.  Receiving a chunk twice adds nothing;
 * dequeue runs once per transfer session.
 *
 * The same SQL functions serve the worker (locally, through SPI), the peer
 * (as the peer_* API) and users (doc/protocol.md).  Every remote call is a
 * plain SELECT morango.peer_x($1, ...), the only form the peer's guard
 * takes (src/peer.c); the json answers are decoded here (reply_fields).
 * peer_begin carries our chunk limits and answers the peer's: a push is
 * cut to the lower of both.
 *
 * IDENTIFICATION
 *		src/sync.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/timestamp.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"
#include "utils/wait_event.h"

#include "libpq-fe.h"
#include "morango.h"
#include "transport.h"

PG_FUNCTION_INFO_V1(morango_sync);
PG_FUNCTION_INFO_V1(morango_sync_start);

PGDLLEXPORT void morango_sync_worker_main(Datum main_arg);

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

/* the worker's state across its transactions */
typedef struct Driver
{
	MemoryContext cxt;			/* lives for the whole sync */
	SyncArgs   *args;
	PGconn	   *conn;
	const char *peer;			/* as given */
	const char *peer_display;	/* without password */
	const char *profile;
	const char *filter;			/* text[] literal */
	const char *session;		/* sync session id, text */
	const char *instance;		/* our instance id, text */
	TimestampTz stage_deadline; /* 0: none */
} Driver;

/* the channel of progress events (doc/protocol.md, "Progress") */
#define PROGRESS_CHANNEL "morango_progress"

/* ---- local steps: one transaction each, through SPI ---- */

static void
local_begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
local_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Run sql locally with text parameters (NULL values are SQL NULLs); copy
 * the first row's columns (as text; NULL stays NULL) into out[] in the
 * driver's context.  Returns the number of rows.  Must be inside
 * local_begin/local_commit.
 */
static uint64
local_exec(Driver *d, const char *sql, int nargs, const char **args, int nout, char **out)
{
	Oid		   *types = palloc(sizeof(Oid) * Max(nargs, 1));
	Datum	   *values = palloc(sizeof(Datum) * Max(nargs, 1));
	char	   *nulls = palloc(Max(nargs, 1) + 1);
	int			ret;
	uint64		n;

	for (int i = 0; i < nargs; i++)
	{
		types[i] = TEXTOID;
		values[i] = args[i] ? CStringGetTextDatum(args[i]) : (Datum) 0;
		nulls[i] = args[i] ? ' ' : 'n';
	}
	ret = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);
	if (ret < 0)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
	n = SPI_processed;
	for (int i = 0; i < nout; i++)
	{
		char	   *v = NULL;

		if (n > 0 && SPI_tuptable != NULL && i < SPI_tuptable->tupdesc->natts)
			v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1);
		out[i] = v ? MemoryContextStrdup(d->cxt, v) : NULL;
	}
	return n;
}

/* One local step: begin, exec, commit. */
static uint64
local_step(Driver *d, const char *activity, const char *sql, int nargs, const char **args,
		   int nout, char **out)
{
	uint64		n;

	local_begin(activity);
	n = local_exec(d, sql, nargs, args, nout, out);
	local_commit();
	return n;
}

/* ---- remote calls ---- */

/* Start a stage: its remote calls must finish within morango.stage_timeout. */
static void
stage_begin(Driver *d)
{
	d->stage_deadline = d->args->stage_timeout_ms > 0
		? TimestampTzPlusMilliseconds(GetCurrentTimestamp(), d->args->stage_timeout_ms)
		: 0;
}

/* The timeout of the next remote call, in ms (0: none). */
static int
call_timeout(Driver *d)
{
	int			t = d->args->peer_timeout_ms;

	if (d->stage_deadline != 0)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), d->stage_deadline);

		if (left <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("sync stage took longer than morango.stage_timeout (%d ms)",
							d->args->stage_timeout_ms)));
		if (t == 0 || left < t)
			t = (int) left;
	}
	return t;
}

/*
 * Send sql to the peer with text parameters, without waiting for its
 * result (remote_result() reads it).  The wire is UTF8 (transport.c):
 * parameters are converted from the database encoding (conversions need a
 * transaction for their catalog lookups).
 */
static void
remote_send(Driver *d, const char *sql, int nargs, const char **args)
{
	const char **wire = palloc(sizeof(char *) * Max(nargs, 1));
	bool		convert = GetDatabaseEncoding() != PG_UTF8;

	if (convert)
		StartTransactionCommand();
	for (int i = 0; i < nargs; i++)
		wire[i] = (args[i] && convert)
			? MemoryContextStrdup(d->cxt, pg_server_to_any(args[i], strlen(args[i]), PG_UTF8))
			: args[i];
	if (convert)
		CommitTransactionCommand();

	pgstat_report_activity(STATE_RUNNING, sql);
	morango_peer_send(d->conn, sql, nargs, NULL, wire, call_timeout(d));
}

/*
 * Wait for the result of the statement remote_send() sent (sql, for
 * messages); copy the first row's columns into out[] (NULL stays NULL),
 * converted to the database encoding, in the driver's context.
 */
static void
remote_result(Driver *d, const char *sql, int nout, char **out)
{
	PGresult   *volatile res = NULL;
	bool		convert = GetDatabaseEncoding() != PG_UTF8;

	PG_TRY();
	{
		res = morango_peer_result(d->conn, sql, call_timeout(d));
		for (int i = 0; i < nout; i++)
		{
			if (PQntuples(res) > 0 && i < PQnfields(res) && !PQgetisnull(res, 0, i))
			{
				char	   *v = PQgetvalue(res, 0, i);

				if (convert)
				{
					StartTransactionCommand();
					out[i] = MemoryContextStrdup(d->cxt, pg_any_to_server(v, strlen(v), PG_UTF8));
					CommitTransactionCommand();
				}
				else
					out[i] = MemoryContextStrdup(d->cxt, v);
			}
			else
				out[i] = NULL;
		}
	}
	PG_FINALLY();
	{
		if (res)
			PQclear(res);
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Run sql on the peer and read its first row (remote_send + remote_result). */
static void
remote_call(Driver *d, const char *sql, int nargs, const char **args, int nout, char **out)
{
	remote_send(d, sql, nargs, args);
	remote_result(d, sql, nout, out);
}

/*
 * The fields keys[] of the json object json that the peer answered sql
 * with, as ->> gives them (strings unquoted, other values as JSON text,
 * NULL for a missing field or json null), in the driver's context.  The
 * peer API answers with one plain call, SELECT morango.peer_x(...), whose
 * one value is that object (its guard refuses anything else).  Parsing
 * happens in a context of its own, freed before returning; a \u escape
 * may need an encoding conversion, so with a database encoding other
 * than UTF8 it runs in a transaction.
 */
static void
reply_fields(Driver *d, const char *sql, const char *json, int nkeys, const char *const *keys,
			 char **out)
{
	bool		convert = GetDatabaseEncoding() != PG_UTF8;
	MemoryContext tmp;
	MemoryContext oldcxt;
	Jsonb	   *jb;

	if (json == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("the peer answered \"%s\" with no value", sql)));
	tmp = AllocSetContextCreate(d->cxt, "morango reply", ALLOCSET_DEFAULT_SIZES);
	if (convert)
		StartTransactionCommand();
	oldcxt = MemoryContextSwitchTo(tmp);
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
	if (!JB_ROOT_IS_OBJECT(jb))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("the peer answered \"%s\" with something other than a json object", sql)));
	for (int i = 0; i < nkeys; i++)
	{
		JsonbValue *v = getKeyJsonValueFromContainer(&jb->root, keys[i], strlen(keys[i]), NULL);
		const char *text;

		if (v == NULL || v->type == jbvNull)
			text = NULL;
		else if (v->type == jbvString)
			text = pnstrdup(v->val.string.val, v->val.string.len);
		else if (v->type == jbvNumeric)
			text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
		else if (v->type == jbvBool)
			text = v->val.boolean ? "true" : "false";
		else
			text = JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
		out[i] = text ? MemoryContextStrdup(d->cxt, text) : NULL;
	}
	MemoryContextSwitchTo(oldcxt);
	if (convert)
		CommitTransactionCommand();
	MemoryContextDelete(tmp);
}

/* Wait for the answer to a plain peer API call and decode its fields. */
static void
remote_reply(Driver *d, const char *sql, int nkeys, const char *const *keys, char **out)
{
	char	   *raw[1];

	remote_result(d, sql, 1, raw);
	reply_fields(d, sql, raw[0], nkeys, keys, out);
	if (raw[0])
		pfree(raw[0]);
}

/* Make a plain peer API call and decode the fields of its answer. */
static void
remote_reply_call(Driver *d, const char *sql, int nargs, const char **args,
				  int nkeys, const char *const *keys, char **out)
{
	remote_send(d, sql, nargs, args);
	remote_reply(d, sql, nkeys, keys, out);
}

static int64
atoi64_or(const char *s, int64 dflt)
{
	return s ? strtoi64(s, NULL, 10) : dflt;
}

static bool
is_true(const char *s)
{
	return s != NULL && (strcmp(s, "t") == 0 || strcmp(s, "true") == 0);
}

/* Is a json value read as text (s) there, neither SQL NULL nor json null? */
static bool
is_present(const char *s)
{
	return s != NULL && strcmp(s, "null") != 0;
}

/*
 * Send a progress event (NOTIFY on PROGRESS_CHANNEL, delivered when the
 * step commits): {"session", "transfer", "direction", "event", "status",
 * "records_transferred", "records_total"}.  Inside a local step.
 */
static void
notify(Driver *d, const char *ts, const char *event, const char *status)
{
	local_exec(d, "SELECT pg_catalog.pg_notify('" PROGRESS_CHANNEL "', pg_catalog.jsonb_build_object("
			   "  'session', $1::uuid, 'transfer', t.id,"
			   "  'direction', CASE WHEN t.push THEN 'push' WHEN t.id IS NOT NULL THEN 'pull' END,"
			   "  'event', $3, 'status', $4,"
			   "  'records_transferred', t.records_transferred, 'records_total', t.records_total)::text)"
			   " FROM (SELECT 1) AS one"
			   " LEFT JOIN morango.transfer_sessions t ON t.id = $2::uuid",
			   4, (const char *[]) {d->session, ts, event, status}, 0, NULL);
}

/* One local step that only sends a progress event. */
static void
notify_step(Driver *d, const char *ts, const char *event, const char *status)
{
	local_begin("morango sync: progress");
	notify(d, ts, event, status);
	local_commit();
}

/* ---- the two directions ---- */

/*
 * peer_begin, and the fields of its answer that the directions read.
 * Its last argument, options, carries our chunk limits; "limits" in the
 * answer are the peer's.
 */
static const char *begin_remote_sql =
"SELECT morango.peer_begin($1::integer, $2::uuid, $3::uuid, $4, $5::boolean, $6::text[],"
"                          $7::uuid, $8::jsonb, $9::jsonb)";
static const char *const begin_fields[] =
{"active", "resumed", "stage", "records_total", "last_seq", "server_fsic", "instance_id", "limits"};

#define BEGIN_NFIELDS lengthof(begin_fields)
#define BEGIN_LIMITS 7

/* Our chunk limits, as peer_begin's options (the receiving side's settings). */
static char *
begin_options(void)
{
	return psprintf("{\"max_chunk_records\": %d, \"max_chunk_bytes\": %d}",
					morango_max_chunk_records, morango_max_chunk_bytes);
}

/*
 * Push transfer session ts: we produce, the peer receives.  Returns true
 * if ts was begun by an earlier attempt (it sends what was serialized and
 * queued then, not what changed since).
 */
static bool
run_push(Driver *d, const char *ts)
{
	const char *read_sql = "SELECT packed, last_seq, records"
		" FROM morango.read_packed_chunk($1::uuid, $2::bigint, $3::integer, $4::bigint)";
	const char *push_sql = "SELECT morango.peer_push_chunk($1::uuid, $2)";
	const char *const limit_fields[] = {"max_chunk_records", "max_chunk_bytes"};
	char	   *c[3];
	char	   *st[4];
	char	   *r[BEGIN_NFIELDS];
	char	   *lim[2];
	char	   *local_fsic;
	bool		continued;
	char		version[16];
	char		chunk_size[16];
	char		chunk_bytes[32];
	int64		total;
	char	   *last_seq;

	snprintf(version, sizeof(version), "%d", MORANGO_PROTOCOL_VERSION);

	local_step(d, "morango sync: open push",
			   "SELECT r->>'active', r->>'stage', (r->'local_fsic')::text, r->>'records_total'"
			   " FROM morango.transfer_open($1::uuid, $2::uuid, $3, false, true, $4::text[],"
			   "                            $5, NULL, $6) AS r",
			   6, (const char *[]) {d->session, ts, d->profile, d->filter, d->peer_display,
				   d->args->direction}, 4, st);
	if (!is_true(st[0]))
		return false;
	continued = is_present(st[2]);
	notify_step(d, ts, "queuing", "started");
	stage_begin(d);

	/* serialize and take our FSIC once; a resumed push keeps them */
	local_fsic = st[2];
	if (!is_present(local_fsic))
	{
		char	   *out[2];

		local_begin("morango sync: serialize");
		local_exec(d, "SELECT morango.serialize($1, $2::text[])", 2,
				   (const char *[]) {d->profile, d->filter}, 0, NULL);
		local_exec(d, "UPDATE morango.transfer_sessions"
				   " SET local_fsic = morango.fsic($3, $2::text[]), stage = 'serializing', status = 'started',"
				   "     last_activity_at = now()"
				   " WHERE id = $1::uuid RETURNING local_fsic::text, morango.instance_id()::text",
				   3, (const char *[]) {ts, d->filter, d->profile}, 2, out);
		local_commit();
		local_fsic = out[0];

		/*
		 * The peer checks our versions of the instance we tell it against
		 * our FSIC's claim for it: tell it the instance serialize stamped
		 * with (a copy of a database gets its own only at its first
		 * serialize, after the session was started).
		 */
		d->instance = out[1];
	}

	remote_reply_call(d, begin_remote_sql, 9,
					  (const char *[]) {version, d->session, ts, d->profile, "true", d->filter,
						  d->instance, local_fsic, begin_options()}, BEGIN_NFIELDS, begin_fields, r);
	if (!is_true(r[0]))
	{
		/* the peer finished this transfer before we heard of it */
		local_step(d, "morango sync: close push", "SELECT morango.transfer_close($1::uuid)",
				   1, (const char *[]) {ts}, 0, NULL);
		return continued;
	}

	/* queue once; again if the peer started this transfer afresh */
	if (st[3] == NULL || !is_true(r[1]))
	{
		char	   *out[1];

		local_begin("morango sync: queue");
		local_exec(d, "UPDATE morango.transfer_sessions SET remote_fsic = $2::jsonb"
				   " WHERE id = $1::uuid",
				   2, (const char *[]) {ts, r[5]}, 0, NULL);
		local_exec(d, "SELECT morango.queue($1::uuid)", 1, (const char *[]) {ts}, 1, out);
		notify(d, ts, "queuing", "completed");
		local_commit();
		total = atoi64_or(out[0], 0);
	}
	else
	{
		total = atoi64_or(st[3], 0);
		notify_step(d, ts, "queuing", "completed");
	}

	/*
	 * Chunks the peer takes: within its limits (the answer to peer_begin)
	 * and ours, and of at most chunk_size records.
	 */
	reply_fields(d, begin_remote_sql, r[BEGIN_LIMITS], 2, limit_fields, lim);
	snprintf(chunk_size, sizeof(chunk_size), "%d",
			 (int) Min(Min(d->args->chunk_size, morango_max_chunk_records),
					   atoi64_or(lim[0], MORANGO_MAX_CHUNK_RECORDS)));
	snprintf(chunk_bytes, sizeof(chunk_bytes), INT64_FORMAT,
			 Min((int64) morango_max_chunk_bytes, atoi64_or(lim[1], MORANGO_MAX_CHUNK_BYTES)));

	/*
	 * send the chunks the peer does not hold yet, pipelined: while the
	 * peer validates and stores one chunk, we read the next
	 */
	notify_step(d, ts, "transferring", "started");
	stage_begin(d);
	last_seq = r[4] ? r[4] : "0";

	/*
	 * What the peer holds counts as sent, also when an earlier attempt
	 * failed after the peer stored a chunk but before we recorded it.
	 */
	local_begin("morango sync: read chunk");
	local_exec(d, "UPDATE morango.transfer_sessions SET records_transferred = $2::bigint,"
			   " peer_options = $3::jsonb WHERE id = $1::uuid",
			   3, (const char *[]) {ts, last_seq, r[BEGIN_LIMITS]}, 0, NULL);
	local_exec(d, read_sql, 4, (const char *[]) {ts, last_seq, chunk_size, chunk_bytes}, 3, c);
	local_commit();
	while (atoi64_or(c[2], 0) > 0)
	{
		char	   *next[3];
		char	   *n[1];

		CHECK_FOR_INTERRUPTS();
		remote_send(d, push_sql, 2, (const char *[]) {ts, c[0]});
		local_step(d, "morango sync: read chunk", read_sql,
				   4, (const char *[]) {ts, c[1], chunk_size, chunk_bytes}, 3, next);
		remote_result(d, push_sql, 1, n);
		local_begin("morango sync: chunk sent");
		local_exec(d, "UPDATE morango.transfer_sessions"
				   " SET records_transferred = $2::bigint, bytes_sent = bytes_sent + $3::bigint,"
				   "     stage = 'transferring', status = 'started', last_activity_at = now()"
				   " WHERE id = $1::uuid",
				   3, (const char *[]) {ts, c[1], psprintf("%zu", strlen(c[0]))}, 0, NULL);
		notify(d, ts, "transferring", "in_progress");
		local_commit();
		pfree(c[0]);
		memcpy(c, next, sizeof(c));
	}

	notify_step(d, ts, "transferring", "completed");

	/* the peer dequeues and deserializes */
	notify_step(d, ts, "dequeuing", "started");
	stage_begin(d);
	remote_call(d, "SELECT morango.peer_finish($1::uuid, $2::bigint)", 2,
				(const char *[]) {ts, psprintf(INT64_FORMAT, total)}, 0, NULL);
	local_begin("morango sync: close push");
	local_exec(d, "SELECT morango.transfer_close($1::uuid)", 1, (const char *[]) {ts}, 0, NULL);
	notify(d, ts, "dequeuing", "completed");
	local_commit();
	return continued;
}

/*
 * Pull transfer session ts: the peer produces, we receive.  Returns true
 * if ts was begun by an earlier attempt (the peer queued what it held
 * then, not what changed since).
 */
static bool
run_pull(Driver *d, const char *ts)
{
	const char *pull_sql = "SELECT morango.peer_pull_chunk($1::uuid, $2::bigint, $3::integer)";
	const char *const chunk_fields[] = {"packed", "last_seq", "records"};
	char	   *st[5];
	char	   *r[BEGIN_NFIELDS];
	char	   *local_fsic;
	bool		continued = false;
	char		version[16];
	char		chunk_size[16];
	char	   *last_seq;

	snprintf(version, sizeof(version), "%d", MORANGO_PROTOCOL_VERSION);
	snprintf(chunk_size, sizeof(chunk_size), "%d", d->args->chunk_size);

	local_step(d, "morango sync: open pull",
			   "SELECT r->>'active', r->>'stage', (r->'local_fsic')::text, r->>'records_total',"
			   "       r->>'last_seq'"
			   " FROM morango.transfer_open($1::uuid, $2::uuid, $3, false, false, $4::text[],"
			   "                            $5, NULL, $6) AS r",
			   6, (const char *[]) {d->session, ts, d->profile, d->filter, d->peer_display,
				   d->args->direction}, 5, st);
	if (!is_true(st[0]))
		return false;
	continued = is_present(st[2]);

	if (strcmp(st[1], "deserializing") != 0 && strcmp(st[1], "cleanup") != 0)
	{
		notify_step(d, ts, "queuing", "started");
		stage_begin(d);

		/* our FSIC, as receiver, once */
		local_fsic = st[2];
		if (!is_present(local_fsic))
		{
			char	   *out[1];

			local_step(d, "morango sync: fsic",
					   "UPDATE morango.transfer_sessions"
					   " SET local_fsic = morango.fsic($3, $2::text[]), stage = 'serializing', status = 'started',"
					   "     last_activity_at = now()"
					   " WHERE id = $1::uuid RETURNING local_fsic::text",
					   3, (const char *[]) {ts, d->filter, d->profile}, 1, out);
			local_fsic = out[0];
		}

		/* the peer serializes, answers its FSIC and queues */
		remote_reply_call(d, begin_remote_sql, 9,
						  (const char *[]) {version, d->session, ts, d->profile, "false", d->filter,
							  d->instance, local_fsic, begin_options()},
						  BEGIN_NFIELDS, begin_fields, r);
		if (!is_true(r[0]))
		{
			local_step(d, "morango sync: close pull", "SELECT morango.transfer_close($1::uuid)",
					   1, (const char *[]) {ts}, 0, NULL);
			return continued;
		}

		/*
		 * Record the peer's FSIC and total.  If the peer queued afresh (it
		 * lost the session), what we hold from an earlier attempt is stale.
		 */
		local_begin("morango sync: queued");

		/*
		 * No claim of the peer may be above our own counter; and the
		 * chunks' versions of the peer's own instance are checked against
		 * its claims (src/buffer.c), for the instance it says it is
		 */
		local_exec(d, "SELECT morango.fsic_claims_check($1::jsonb)", 1, (const char *[]) {r[5]}, 0, NULL);
		local_exec(d, "UPDATE morango.sync_sessions SET peer_instance_id = $2::uuid WHERE id = $1::uuid",
				   2, (const char *[]) {d->session, r[6]}, 0, NULL);
		if (!is_true(r[1]))
		{
			local_exec(d, "DELETE FROM morango.buffer WHERE transfer_session_id = $1::uuid",
					   1, (const char *[]) {ts}, 0, NULL);
			local_exec(d, "DELETE FROM morango.record_max_counter_buffer WHERE transfer_session_id = $1::uuid",
					   1, (const char *[]) {ts}, 0, NULL);
			local_exec(d, "UPDATE morango.transfer_sessions SET records_transferred = 0 WHERE id = $1::uuid",
					   1, (const char *[]) {ts}, 0, NULL);
		}
		local_exec(d, "UPDATE morango.transfer_sessions"
				   " SET remote_fsic = $2::jsonb, records_total = $3::bigint, peer_options = $4::jsonb,"
				   "     stage = 'queuing', status = 'completed', last_activity_at = now()"
				   " WHERE id = $1::uuid",
				   4, (const char *[]) {ts, r[5], r[3], r[BEGIN_LIMITS]}, 0, NULL);
		local_exec(d, "SELECT COALESCE(max(seq), 0) FROM morango.buffer WHERE transfer_session_id = $1::uuid",
				   1, (const char *[]) {ts}, 1, &last_seq);
		notify(d, ts, "queuing", "completed");
		local_commit();

		/* fetch the chunks we do not hold yet */
		notify_step(d, ts, "transferring", "started");
		stage_begin(d);
		/*
		 * Pipelined: as soon as a chunk arrives, ask for the next one, so
		 * that the peer reads it while we store this one.
		 */
		remote_send(d, pull_sql, 3, (const char *[]) {ts, last_seq, chunk_size});
		for (;;)
		{
			char	   *c[3];

			CHECK_FOR_INTERRUPTS();
			remote_reply(d, pull_sql, 3, chunk_fields, c);
			if (atoi64_or(c[2], 0) == 0)
				break;
			remote_send(d, pull_sql, 3, (const char *[]) {ts, c[1], chunk_size});
			local_begin("morango sync: receive chunk");
			local_exec(d, "SELECT morango.receive_packed_chunk($1::uuid, $2)",
					   2, (const char *[]) {ts, c[0]}, 0, NULL);
			notify(d, ts, "transferring", "in_progress");
			local_commit();
			last_seq = c[1];
			pfree(c[0]);
		}

		notify_step(d, ts, "transferring", "completed");

		/* merge, all or nothing */
		notify_step(d, ts, "dequeuing", "started");
		local_begin("morango sync: dequeue");
		local_exec(d, "SELECT * FROM morango.dequeue($1::uuid)", 1, (const char *[]) {ts}, 0, NULL);
		notify(d, ts, "dequeuing", "completed");
		local_commit();
	}

	local_begin("morango sync: deserialize");
	local_exec(d, "SELECT * FROM morango.deserialize($1, $2::text[])", 2,
			   (const char *[]) {d->profile, d->filter}, 0, NULL);
	local_exec(d, "UPDATE morango.transfer_sessions SET stage = 'cleanup', status = 'started',"
			   " last_activity_at = now() WHERE id = $1::uuid",
			   1, (const char *[]) {ts}, 0, NULL);
	local_commit();

	stage_begin(d);
	remote_call(d, "SELECT morango.peer_finish($1::uuid, NULL)", 1,
				(const char *[]) {ts}, 0, NULL);
	local_step(d, "morango sync: close pull", "SELECT morango.transfer_close($1::uuid)",
			   1, (const char *[]) {ts}, 0, NULL);
	return continued;
}

/*
 * One attempt at the whole sync: connect, run the directions, close the
 * session on both sides.  The session was chosen by start_session().
 */
/*
 * The certificate handshake (doc/protocol.md, "Certificates"): get a nonce
 * from the peer, send our chain and our signature of the handshake message
 * (nonce, session, both certificates, profile), then check the peer's
 * chain and its signature of the same message.  Both
 * sides bind the session to the two certificates; transfer_open then
 * checks every transfer's filter against their scopes.  Then the two sides
 * exchange the revocations they hold under the session's root
 * (peer_revocations), and we check again that neither certificate has
 * been revoked: a revocation reaches every database that syncs.
 */
static void
authenticate(Driver *d)
{
	char	   *nonce[1];
	char	   *mine[2];
	char	   *theirs[2];
	char	   *revocations[1];

	if (d->args->certificate[0] == '\0')
		return;
	remote_call(d, "SELECT morango.peer_nonce()", 0, NULL, 1, nonce);
	local_step(d, "morango sync: sign",
			   "SELECT morango.certificate_chain($1::uuid)::text,"
			   "       morango.certificate_sign($1::uuid,"
			   "           morango.handshake_message($2::uuid, $3::uuid, $1::uuid, $4::uuid, $5))",
			   5, (const char *[]) {d->args->certificate, nonce[0], d->session,
				   d->args->peer_certificate, d->profile}, 2, mine);
	remote_reply_call(d, "SELECT morango.peer_authenticate($1::uuid, $2, $3::jsonb, $4::uuid, $5::uuid, $6)",
					  6, (const char *[]) {d->session, d->profile, mine[0], d->args->peer_certificate,
						  nonce[0], mine[1]}, 2, (const char *const[]) {"chain", "signature"}, theirs);
	local_step(d, "morango sync: verify the peer",
			   "SELECT morango.session_authenticate($1::uuid, $2, $3::uuid, $4::uuid, $5::jsonb, $6, $7::uuid),"
			   "       morango.revocations_of(morango.certificate_root($3::uuid))::text",
			   7, (const char *[]) {d->session, d->profile, d->args->certificate,
				   d->args->peer_certificate, theirs[0], theirs[1], nonce[0]}, 2, mine);

	/* one function call, parameters only: the shape every peer call has */
	remote_call(d, "SELECT morango.peer_revocations($1, $2)",
				2, (const char *[]) {d->session, mine[1]}, 1, revocations);
	local_step(d, "morango sync: store revocations",
			   "SELECT morango.session_revocations($1::uuid, $2::jsonb)",
			   2, (const char *[]) {d->session, revocations[0]}, 0, NULL);
	local_step(d, "morango sync: check revocations",
			   "SELECT morango.certificate_assert_usable($1::uuid),"
			   "       morango.certificate_assert_usable($2::uuid)",
			   2, (const char *[]) {d->args->peer_certificate, d->args->certificate}, 0, NULL);
}

/* the unfinished transfer of a direction ($2: push) of sync session $1, or a new id */
static const char *transfer_sql =
"SELECT COALESCE((SELECT id FROM morango.transfer_sessions"
"                 WHERE sync_session_id = $1::uuid AND push = $2::boolean AND active"
"                 ORDER BY started_at DESC LIMIT 1),"
"                pg_catalog.gen_random_uuid())";

/* A fresh transfer session id, as text, in the driver's context. */
static char *
new_transfer_id(Driver *d)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(d->cxt);
	char	   *id = DatumGetCString(DirectFunctionCall1(uuid_out,
														 OidFunctionCall0(F_GEN_RANDOM_UUID)));

	MemoryContextSwitchTo(oldcxt);
	return id;
}

static void
sync_run(Driver *d)
{
	char	   *out[1];
	bool		pull = strcmp(d->args->direction, "push") != 0;
	bool		push = strcmp(d->args->direction, "pull") != 0;

	/* catalog lookups (a peer given by name) need a transaction */
	stage_begin(d);
	StartTransactionCommand();
	d->conn = morango_peer_connect(d->peer, "morango sync", d->args->connect_timeout_s);
	CommitTransactionCommand();
	authenticate(d);

	/*
	 * Each direction goes on with its unfinished transfer, if an earlier
	 * attempt left one.  That transfer carries the snapshot it was queued
	 * from, so the direction then runs once more from a fresh one: what
	 * changed since the earlier attempt is not left for the next sync.
	 */
	if (pull)
	{
		local_step(d, "morango sync: pull", transfer_sql, 2,
				   (const char *[]) {d->session, "false"}, 1, out);
		if (run_pull(d, out[0]))
			run_pull(d, new_transfer_id(d));
	}
	if (push)
	{
		local_step(d, "morango sync: push", transfer_sql, 2,
				   (const char *[]) {d->session, "true"}, 1, out);
		if (run_push(d, out[0]))
			run_push(d, new_transfer_id(d));
	}

	local_begin("morango sync: done");
	/* nothing stays open with the session (no buffer outlives it) */
	local_exec(d, "SELECT morango.transfer_close(id) FROM morango.transfer_sessions"
			   " WHERE sync_session_id = $1::uuid AND active",
			   1, (const char *[]) {d->session}, 0, NULL);
	local_exec(d, "UPDATE morango.sync_sessions SET active = false, status = 'completed',"
			   " last_error = NULL, ended_at = now(), last_activity_at = now() WHERE id = $1::uuid",
			   1, (const char *[]) {d->session}, 0, NULL);
	local_exec(d, "UPDATE morango.peer_status SET last_success_at = now(), consecutive_failures = 0,"
			   " next_retry_at = NULL, last_error = NULL, running_session = NULL"
			   " WHERE peer = $1 AND profile = $2 AND filter = $3::text[] AND direction = $4",
			   4, (const char *[]) {d->peer_display, d->profile, d->filter, d->args->direction}, 0, NULL);
	notify(d, NULL, "session", "completed");
	local_commit();
	remote_call(d, "SELECT morango.peer_close($1::uuid)", 1, (const char *[]) {d->session}, 0, NULL);
}

/*
 * Single flight and the session.  Take the advisory lock of (peer,
 * profile, filter, direction), held until the worker exits; if another
 * worker holds it, return false with the session that one runs in
 * *running.  Otherwise find the unfinished sync session to resume (or
 * make one), record it, and return true.
 */
static bool
start_session(Driver *d, char **running)
{
	char	   *out[3];
	const char *key[4] = {d->peer_display, d->profile, d->filter, d->args->direction};

	local_step(d, "morango sync: single flight",
			   "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('morango sync'),"
			   "    pg_catalog.hashtext($1 || '|' || $2 || '|' || $3 || '|' || $4))",
			   4, key, 1, out);
	if (!is_true(out[0]))
	{
		/* the holder records its session as soon as it has the lock */
		for (int i = 0; i < 100; i++)
		{
			local_step(d, "morango sync: find the running sync",
					   "SELECT running_session FROM morango.peer_status"
					   " WHERE peer = $1 AND profile = $2 AND filter = $3::text[] AND direction = $4",
					   4, key, 1, out);
			if (out[0] != NULL)
				break;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 20L, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		*running = out[0];
		return false;
	}

	local_begin("morango sync: start");
	/* resume only a session bound to the same certificates (or to none) */
	local_exec(d, "SELECT COALESCE((SELECT id FROM morango.sync_sessions s"
			   "                 WHERE active AND NOT is_server AND peer = $1 AND profile = $2"
			   "                   AND filter = $3::text[] AND direction = $4"
			   "                   AND NOT EXISTS (SELECT 1 FROM morango.session_certificates b"
			   "                                   WHERE b.sync_session_id = s.id"
			   "                                     AND (b.local_certificate_id IS DISTINCT FROM $5::uuid"
			   "                                          OR b.peer_certificate_id IS DISTINCT FROM $6::uuid))"
			   "                 ORDER BY started_at DESC LIMIT 1),"
			   "                pg_catalog.gen_random_uuid()),"
			   "       morango.instance_id()",
			   6, (const char *[]) {key[0], key[1], key[2], key[3],
				   d->args->certificate[0] ? d->args->certificate : NULL,
				   d->args->certificate[0] ? d->args->peer_certificate : NULL}, 2, out);
	d->session = out[0];
	d->instance = out[1];
	local_exec(d, "INSERT INTO morango.sync_sessions (id, profile, is_server, peer, filter, direction,"
			   "                                   local_instance_id, process_id)"
			   " VALUES ($1::uuid, $3, false, $2, $4::text[], $5, $6::uuid, pg_catalog.pg_backend_pid())"
			   " ON CONFLICT (id) DO UPDATE SET process_id = EXCLUDED.process_id, status = 'started',"
			   "     last_activity_at = now()",
			   6, (const char *[]) {d->session, d->peer_display, d->profile, d->filter,
				   d->args->direction, d->instance}, 0, NULL);
	local_exec(d, "INSERT INTO morango.peer_status AS p (peer, profile, filter, direction,"
			   "                                      last_attempt_at, running_session)"
			   " VALUES ($1, $2, $3::text[], $4, now(), $5::uuid)"
			   " ON CONFLICT (peer, profile, morango.filter_key(filter), direction)"
			   " DO UPDATE SET last_attempt_at = now(), running_session = EXCLUDED.running_session",
			   5, (const char *[]) {d->peer_display, d->profile, d->filter, d->args->direction,
				   d->session}, 0, NULL);
	notify(d, NULL, "session", "started");
	local_commit();
	return true;
}

/*
 * Record a failed attempt: the session rows (they stay active, so a later
 * sync resumes them) and the peer's status, with the time of the next
 * retry if there will be one.  Runs in a fresh transaction.
 */
static void
record_failure(Driver *d, const char *message, int retry_in_ms)
{
	char		delay[32];

	if (d->session == NULL)
		return;
	snprintf(delay, sizeof(delay), "%d", retry_in_ms);
	local_begin("morango sync: failed");
	/* last_activity_at is not touched: a sync that keeps failing still expires */
	local_exec(d, "UPDATE morango.sync_sessions SET status = 'errored', last_error = $2"
			   " WHERE id = $1::uuid AND active",
			   2, (const char *[]) {d->session, message}, 0, NULL);
	local_exec(d, "UPDATE morango.transfer_sessions SET status = 'errored', last_error = $2"
			   " WHERE sync_session_id = $1::uuid AND active",
			   2, (const char *[]) {d->session, message}, 0, NULL);
	local_exec(d, "UPDATE morango.peer_status SET last_failure_at = now(),"
			   " consecutive_failures = consecutive_failures + 1, last_error = $5,"
			   " next_retry_at = CASE WHEN $6::integer > 0"
			   "                      THEN now() + $6::integer * interval '1 millisecond' END"
			   " WHERE peer = $1 AND profile = $2 AND filter = $3::text[] AND direction = $4",
			   6, (const char *[]) {d->peer_display, d->profile, d->filter, d->args->direction,
				   message, delay}, 0, NULL);
	notify(d, NULL, "session", "errored");
	local_commit();
}

/* Is this error worth another attempt later (the peer or the link)? */
static bool
retryable(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_CONNECTION_EXCEPTION:	/* 08: connect, lost connection */
		case ERRCODE_OPERATOR_INTERVENTION: /* 57: cancel, timeout, shutdown */
		case ERRCODE_INSUFFICIENT_RESOURCES:	/* 53 */
		case ERRCODE_TRANSACTION_ROLLBACK:	/* 40: deadlock, serialization */
		case ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE:	/* 55: lock timeout, busy */
			return true;
		default:
			return false;
	}
}

/* Tell the caller (if it still waits) that the handshake fields are set. */
static void
wake_caller(SyncArgs *args)
{
	PGPROC	   *proc = BackendPidGetProc(args->caller_pid);

	args->ready = true;
	if (proc)
		SetLatch(&proc->procLatch);
}

/*
 * morango_sync_worker_main
 *		Entry point of the sync worker.  main_arg is the dsm handle of the
 *		SyncArgs.  Runs one attempt (morango.sync()) or, in the background
 *		(morango.sync_start()), attempts with exponential backoff until one
 *		succeeds, an error is not worth retrying, or retry_limit attempts
 *		were made.
 */
void
morango_sync_worker_main(Datum main_arg)
{
	dsm_segment *seg;
	SyncArgs   *args;
	Driver		d;
	char	   *running = NULL;
	volatile int attempt = 0;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	seg = dsm_attach(DatumGetUInt32(main_arg));
	if (seg == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("morango sync worker could not attach to its arguments")));
	args = dsm_segment_address(seg);

	BackgroundWorkerInitializeConnectionByOid(args->dboid, args->useroid, 0);

	/*
	 * The steps are a few large statements: compiling them costs tens of
	 * milliseconds each and gains nothing measurable.
	 */
	SetConfigOption("jit", "off", PGC_USERSET, PGC_S_SESSION);

	memset(&d, 0, sizeof(d));
	d.cxt = AllocSetContextCreate(TopMemoryContext, "morango sync", ALLOCSET_DEFAULT_SIZES);
	d.args = args;
	d.peer = MemoryContextStrdup(d.cxt, args->data + args->peer_off);
	d.profile = MemoryContextStrdup(d.cxt, args->data + args->profile_off);
	d.filter = MemoryContextStrdup(d.cxt, args->data + args->filter_off);
	d.peer_display = MemoryContextStrdup(d.cxt, morango_peer_display(d.peer));
	{
		char		appname[NAMEDATALEN];

		snprintf(appname, sizeof(appname), "morango sync %s %s", d.profile, d.peer_display);
		pgstat_report_appname(appname);
	}

	PG_TRY();
	{
		if (!start_session(&d, &running))
		{
			args->already_running = true;
			if (running)
				memcpy(args->session.data,
					   DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(running)))->data,
					   UUID_LEN);
			args->have_session = running != NULL;
		}
		else
		{
			memcpy(args->session.data,
				   DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(d.session)))->data,
				   UUID_LEN);
			args->have_session = true;
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(d.cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		args->ok = false;
		args->sqlerrcode = edata->sqlerrcode;
		strlcpy(args->error, edata->message, sizeof(args->error));
		args->done = true;
		wake_caller(args);
		proc_exit(0);
	}
	PG_END_TRY();
	wake_caller(args);
	if (args->already_running)
	{
		args->done = true;
		dsm_detach(seg);
		proc_exit(0);
	}

	for (;;)
	{
		ErrorData  *volatile edata = NULL;
		volatile int delay = 0;

		attempt++;
		PG_TRY();
		{
			sync_run(&d);
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(d.cxt);
			edata = CopyErrorData();
			FlushErrorState();
			AbortOutOfAnyTransaction();
		}
		PG_END_TRY();
		morango_peer_disconnect(d.conn);
		d.conn = NULL;

		if (edata == NULL)
		{
			args->ok = true;
			break;
		}

		args->ok = false;
		args->sqlerrcode = edata->sqlerrcode;
		strlcpy(args->error, edata->message ? edata->message : "unknown error", sizeof(args->error));
		if (edata->detail)
		{
			size_t		len = strlen(args->error);

			snprintf(args->error + len, sizeof(args->error) - len, " (%s)", edata->detail);
		}
		if (args->background && retryable(edata->sqlerrcode) && attempt < args->retry_limit)
		{
			/* exponential backoff, capped */
			double		ms = (double) args->retry_delay_ms;

			for (int i = 1; i < attempt && ms < args->retry_max_delay_ms; i++)
				ms *= 2;
			delay = (int) Min(ms, (double) args->retry_max_delay_ms);
			if (delay < 1)
				delay = 1;
		}
		ereport(LOG,
				(errmsg("morango sync with peer \"%s\" failed (attempt %d): %s%s",
						d.peer_display, attempt, args->error,
						delay > 0 ? psprintf("; retrying in %d ms", delay) : "")));
		record_failure(&d, args->error, delay);
		if (delay == 0)
			break;

		/* wait for the next attempt; a cancel or shutdown ends the worker */
		{
			TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);

			for (;;)
			{
				long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

				if (left <= 0)
					break;
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 left, PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
				CHECK_FOR_INTERRUPTS();
			}
		}
	}

	args->done = true;
	dsm_detach(seg);
	proc_exit(0);
}

/*
 * Wait, interruptibly, until the worker has stopped or *until (if given)
 * is set, checking every poll_ms (the worker's exit or SetLatch wakes us
 * sooner).  If we are cancelled, the worker is stopped too.
 */
static void
wait_for_worker(BackgroundWorkerHandle *handle, volatile bool *until, long poll_ms)
{
	PG_TRY();
	{
		for (;;)
		{
			pid_t		pid;
			BgwHandleStatus status;

			if (until != NULL && *until)
				break;
			status = GetBackgroundWorkerPid(handle, &pid);
			if (status == BGWH_STOPPED)
				break;
			if (status == BGWH_POSTMASTER_DIED)
				ereport(FATAL,
						(errcode(ERRCODE_ADMIN_SHUTDOWN),
						 errmsg("postmaster exited during a morango sync")));
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 poll_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_CATCH();
	{
		TerminateBackgroundWorker(handle);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * Start a sync worker for (peer, profile, filter, direction) and wait
 * until it has chosen its session (or found the one running).  Returns
 * the worker handle; *seg_out gets the dsm segment (args in it).
 */
static BackgroundWorkerHandle *
launch(FunctionCallInfo fcinfo, bool background, dsm_segment **seg_out)
{
	char	   *peer;
	char	   *profile;
	char	   *filter;
	char	   *direction;
	int			chunk_size;
	Size		size;
	dsm_segment *seg;
	SyncArgs   *args;
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("peer and profile must not be null")));
	peer = text_to_cstring(PG_GETARG_TEXT_PP(0));
	profile = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (profile[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("profile must not be empty")));
	if (PG_ARGISNULL(2))
		filter = "{\"\"}";
	else
	{
		Oid			typoutput;
		bool		isvarlena;

		morango_check_filter(PG_GETARG_ARRAYTYPE_P(2));
		getTypeOutputInfo(TEXTARRAYOID, &typoutput, &isvarlena);
		filter = OidOutputFunctionCall(typoutput, PG_GETARG_DATUM(2));
	}
	direction = PG_ARGISNULL(3) ? "both" : text_to_cstring(PG_GETARG_TEXT_PP(3));
	if (strcmp(direction, "both") != 0 && strcmp(direction, "push") != 0 &&
		strcmp(direction, "pull") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("direction must be 'both', 'push' or 'pull', not \"%s\"", direction)));
	chunk_size = PG_ARGISNULL(4) ? morango_chunk_size : PG_GETARG_INT32(4);
	if (PG_ARGISNULL(5) != PG_ARGISNULL(6))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("certificate and peer_certificate go together"),
				 errhint("Pass this database's certificate and the one the peer is to prove it holds.")));
	if (chunk_size < 1 || chunk_size > 100000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("chunk_size must be between 1 and 100000")));

	size = offsetof(SyncArgs, data) + strlen(peer) + strlen(profile) + strlen(filter) + 3;
	seg = dsm_create(size, 0);
	args = dsm_segment_address(seg);
	memset(args, 0, size);
	args->dboid = MyDatabaseId;
	args->useroid = GetUserId();
	args->caller_pid = MyProcPid;
	args->background = background;
	args->chunk_size = chunk_size;
	args->retry_limit = morango_retry_limit;
	args->retry_delay_ms = morango_retry_delay;
	args->retry_max_delay_ms = morango_retry_max_delay;
	args->peer_timeout_ms = morango_peer_timeout;
	args->stage_timeout_ms = morango_stage_timeout;
	args->connect_timeout_s = morango_connect_timeout;
	strlcpy(args->direction, direction, sizeof(args->direction));
	if (!PG_ARGISNULL(5))
	{
		strlcpy(args->certificate,
				DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(5))),
				sizeof(args->certificate));
		strlcpy(args->peer_certificate,
				DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(6))),
				sizeof(args->peer_certificate));
	}
	args->peer_off = 0;
	strcpy(args->data, peer);
	args->profile_off = strlen(peer) + 1;
	strcpy(args->data + args->profile_off, profile);
	args->filter_off = args->profile_off + strlen(profile) + 1;
	strcpy(args->data + args->filter_off, filter);

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "morango", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "morango_sync_worker_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "morango sync", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "morango sync", BGW_MAXLEN);
	worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not start a morango sync worker"),
				 errhint("Raise max_worker_processes, or wait for other workers to finish.")));

	/* wait until the worker has chosen its session (or exited) */
	wait_for_worker(handle, &args->ready, 100L);

	*seg_out = seg;
	return handle;
}

/* Raise the error the worker reported before or instead of starting. */
static void
report_start_failure(SyncArgs *args)
{
	if (args->already_running)
		return;
	if (!args->ready && !args->done)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("the morango sync worker exited before it started"),
				 errhint("See the server log.")));
	if (args->done && !args->ok && !args->have_session)
		ereport(ERROR,
				(errcode(args->sqlerrcode ? args->sqlerrcode : ERRCODE_INTERNAL_ERROR),
				 errmsg("could not start the sync: %s", args->error)));
}

/*
 * morango.sync(peer text, profile text, filter text[] DEFAULT NULL,
 *              direction text DEFAULT 'both', chunk_size integer DEFAULT NULL)
 *		-> uuid (the sync session)
 *
 * Starts the sync worker and waits for it: one attempt.  A cancel of this
 * backend stops the worker, which cancels the peer's query; the sync
 * resumes when called again.
 */
Datum
morango_sync(PG_FUNCTION_ARGS)
{
	dsm_segment *seg;
	SyncArgs   *args;
	BackgroundWorkerHandle *handle;
	pg_uuid_t  *result;

	if (IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("morango.sync() cannot run inside a transaction block"),
				 errdetail("A sync commits its progress as it goes, in a worker of its own."),
				 errhint("Call it on its own, outside BEGIN ... COMMIT.")));

	handle = launch(fcinfo, false, &seg);
	args = dsm_segment_address(seg);
	report_start_failure(args);
	if (args->already_running)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("a sync with this peer, profile, filter and direction is already running"),
				 args->have_session ? errdetail("Sync session %s.",
												DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&args->session)))) : 0,
				 errhint("Wait for it with morango.sync_wait(), or stop it with morango.sync_cancel().")));

	wait_for_worker(handle, NULL, 1000L);

	if (!args->done)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("the morango sync worker exited before finishing"),
				 errhint("See the server log; calling morango.sync() again resumes the sync.")));
	if (!args->ok)
		ereport(ERROR,
				(errcode(args->sqlerrcode ? args->sqlerrcode : ERRCODE_INTERNAL_ERROR),
				 errmsg("sync with peer failed: %s", args->error),
				 errhint("Calling morango.sync() again resumes the sync where it stopped.")));

	result = palloc(sizeof(pg_uuid_t));
	memcpy(result, &args->session, sizeof(pg_uuid_t));
	dsm_detach(seg);
	PG_RETURN_UUID_P(result);
}

/*
 * morango.sync_start(peer, profile, filter, direction, chunk_size) -> uuid
 *
 * Starts a sync in a background worker and returns its session id as soon
 * as the worker has chosen it (or the id of the sync already running for
 * the same peer, profile, filter and direction).  The worker retries with
 * exponential backoff (morango.retry_limit, retry_delay, retry_max_delay).
 */
Datum
morango_sync_start(PG_FUNCTION_ARGS)
{
	dsm_segment *seg;
	SyncArgs   *args;
	pg_uuid_t  *result;

	(void) launch(fcinfo, true, &seg);
	args = dsm_segment_address(seg);
	report_start_failure(args);
	if (!args->have_session)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("a sync with this peer, profile, filter and direction is already running")));
	result = palloc(sizeof(pg_uuid_t));
	memcpy(result, &args->session, sizeof(pg_uuid_t));
	dsm_detach(seg);
	PG_RETURN_UUID_P(result);
}
