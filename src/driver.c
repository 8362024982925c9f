/*-------------------------------------------------------------------------
 *
 * driver.c
 *		The initiator's side of a sync: the stages of each transfer, in the
 *		sync worker (worker.c), over the protocol's steps (protocol.c) and
 *		the peer API's typed replies.
 *
 * For each direction (a pull, then a push, for 'both') one transfer,
 * driven by run_transfer(), whose direction decides which side produces:
 *
 *   prepare (a producer serializes; both take their FSIC) -> peer_begin
 *   (the peer prepares too; as producer it queues) -> queue (if we
 *   produce) -> chunks: read_chunk + peer_push_chunk, or peer_pull_chunk
 *   + receive_chunk (validated), pipelined -> merge and apply (the
 *   receiver: here, or the peer in peer_finish) -> peer_finish -> close
 *
 * Every local step is its own transaction, and every remote call commits
 * on the peer, so the state of both sides is always on disk.  A sync that
 * stops (connection lost, worker killed, peer restarted) resumes where it
 * stopped when morango.sync() is called again with the same peer, profile,
 * filter and direction: the same sync and transfer sessions are picked
 * up (transfer.c's resume rules), the stages they passed are skipped, and
 * a transfer goes on after the last chunk the receiver holds.  Receiving a
 * chunk twice adds nothing; a transfer is merged once.
 *
 * Every remote call is a plain SELECT morango.peer_x($1, ...), the only
 * form the peer's guard takes (src/peer.c); each answer is decoded once
 * into its struct (protocol.h).  peer_begin carries our chunk limits and
 * answers the peer's: a push is cut to the lower of both.
 *
 * IDENTIFICATION
 *		src/driver.c
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
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "utils/wait_event.h"

#include "libpq-fe.h"
#include "morango.h"
#include "driver.h"
#include "protocol.h"
#include "textutil.h"
#include "transport.h"

/* the channel of progress events (doc/protocol.md, "Progress") */
#define PROGRESS_CHANNEL "morango_progress"

/* ---- local steps: one transaction each, through SPI ---- */

static void
local_begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	morango_spi_connect();
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
	uint64		n;

	for (int i = 0; i < nargs; i++)
	{
		types[i] = TEXTOID;
		values[i] = args[i] ? CStringGetTextDatum(args[i]) : (Datum) 0;
		nulls[i] = args[i] ? ' ' : 'n';
	}
	n = morango_spi_exec(sql, nargs, types, values, nulls, MORANGO_SPI_OK_ANY);
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
 * Wait for the answer to a plain peer API call (sql, for messages): its
 * one value, json text converted to the database encoding, in the
 * driver's context.
 */
static char *
remote_reply(Driver *d, const char *sql)
{
	char	   *raw[1];

	remote_result(d, sql, 1, raw);
	return raw[0];
}

/* Wait for the answer to a call whose value we do not read. */
static void
remote_wait(Driver *d, const char *sql)
{
	char	   *v = remote_reply(d, sql);

	if (v)
		pfree(v);
}

static bool
is_true(const char *s)
{
	return s != NULL && (strcmp(s, "t") == 0 || strcmp(s, "true") == 0);
}

/*
 * Decoding a reply may need an encoding conversion (a \u escape): with a
 * database encoding other than UTF8, inside a transaction.
 */
static void
decode_begin(void)
{
	if (GetDatabaseEncoding() != PG_UTF8)
		StartTransactionCommand();
}

static void
decode_end(void)
{
	if (GetDatabaseEncoding() != PG_UTF8)
		CommitTransactionCommand();
}

static char *
int64_text(int64 v)
{
	return psprintf(INT64_FORMAT, v);
}

/*
 * A uuid given as text (ours, or from the peer's reply), as a Datum in the
 * driver's context; a peer's answer that is not one is a protocol
 * violation.
 */
static Datum
uuid_datum(Driver *d, const char *text)
{
	pg_uuid_t  *v = MemoryContextAlloc(d->cxt, sizeof(pg_uuid_t));

	if (!morango_uuid_parse(text, strlen(text), v, NULL))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("\"%s\" is not a uuid", text)));
	return UUIDPGetDatum(v);
}

/* a text[] literal, as a Datum in the current context (inside a transaction) */
static Datum
text_array(const char *literal)
{
	return OidInputFunctionCall(F_ARRAY_IN, (char *) literal, TEXTOID, -1);
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

/* ---- a transfer, either direction ---- */

/*
 * peer_begin, and the pipelined chunk calls.  peer_begin's last argument,
 * options, carries our chunk limits; "limits" in the answer are the
 * peer's.
 */
static const char *begin_sql =
"SELECT morango.peer_begin($1::integer, $2::uuid, $3::uuid, $4, $5::boolean, $6::text[],"
"                          $7::uuid, $8::jsonb, $9::jsonb)";
static const char *pull_sql = "SELECT morango.peer_pull_chunk($1::uuid, $2::bigint, $3::integer)";
static const char *push_sql = "SELECT morango.peer_push_chunk($1::uuid, $2)";
static const char *finish_sql = "SELECT morango.peer_finish($1::uuid, $2::bigint)";

/* Our chunk limits, as peer_begin's options (the receiving side's settings). */
static char *
begin_options(void)
{
	return psprintf("{\"max_chunk_records\": %d, \"max_chunk_bytes\": %d}",
					morango_max_chunk_records, morango_max_chunk_bytes);
}

/* The peer's limits from its begin reply, as the jsonb we keep them as. */
static char *
peer_limits(const MorangoBeginReply *b)
{
	return psprintf("{\"max_chunk_records\": " INT64_FORMAT ", \"max_chunk_bytes\": " INT64_FORMAT "}",
					b->max_chunk_records, b->max_chunk_bytes);
}

/* What the driver keeps of its transfer between transactions. */
typedef struct Run
{
	const char *ts;				/* transfer session id, text */
	Datum		ts_id;			/* uuid */
	bool		push;
	MorangoStage stage;			/* as opened */
	const char *local_fsic;		/* our FSIC, or NULL */
	int64		records_total;	/* -1: not known */
	int64		total;			/* a producer's count queued */
	MorangoBeginReply begin;
} Run;

/* Open (or find again) transfer r->ts on this side and read its state. */
static bool
open_local(Driver *d, Run *r)
{
	MorangoOpenArgs a;
	MorangoTransfer *t;
	bool		resumed;
	MemoryContext oldcxt;

	local_begin(r->push ? "morango sync: open push" : "morango sync: open pull");
	morango_open_args(&a, d->session_id, r->ts_id, d->profile, false, r->push, text_array(d->filter));
	a.peer = d->peer_display;
	a.direction = d->args->direction;
	t = morango_transfer_open(&a, &resumed);
	oldcxt = MemoryContextSwitchTo(d->cxt);
	r->stage = t->stage;
	r->local_fsic = t->local_fsic ? pstrdup(t->local_fsic) : NULL;
	r->records_total = t->records_total;
	MemoryContextSwitchTo(oldcxt);
	local_commit();
	return t->active;
}

/* The local transfer, in a local step. */
static MorangoTransfer *
local_transfer(Run *r)
{
	return morango_transfer_fetch(r->ts_id);
}

/* Close the transfer on this side, with a progress event, in one step. */
static void
close_local(Driver *d, Run *r, const char *event)
{
	local_begin(r->push ? "morango sync: close push" : "morango sync: close pull");
	morango_transfer_close(local_transfer(r), NULL);
	if (event)
		notify(d, r->ts, event, "completed");
	local_commit();
}

/*
 * Prepare (our FSIC once: a resumed transfer keeps it; as producer we
 * serialize first), then peer_begin.  The peer checks our versions of the
 * instance we tell it against our FSIC's claim for it: tell it the
 * instance serialize stamped with (a copy of a database gets its own only
 * at its first serialize, after the session was started).
 */
static void
begin_transfer(Driver *d, Run *r)
{
	char		version[16];
	char	   *json;

	if (r->local_fsic == NULL)
	{
		char	   *fsic;

		local_begin(r->push ? "morango sync: serialize" : "morango sync: fsic");
		fsic = morango_step_prepare(local_transfer(r), NULL, NULL);
		r->local_fsic = MemoryContextStrdup(d->cxt, fsic);
		if (r->push)
		{
			morango_spi_exec("SELECT morango.instance_id()::text", 0, NULL, NULL, NULL, SPI_OK_SELECT);
			d->instance = MemoryContextStrdup(d->session_cxt,
											  SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		}
		local_commit();
	}

	snprintf(version, sizeof(version), "%d", MORANGO_PROTOCOL_VERSION);
	remote_send(d, begin_sql, 9,
				(const char *[]) {version, d->session, r->ts, d->profile, r->push ? "true" : "false",
				d->filter, d->instance, r->local_fsic, begin_options()});
	json = remote_reply(d, begin_sql);
	decode_begin();
	morango_begin_reply_decode(begin_sql, json, d->cxt, &r->begin);
	decode_end();
}

/*
 * After peer_begin: the producer queues (once; again if the peer started
 * this transfer afresh); the receiver records the producer's FSIC, total
 * and limits, checking first that no claim of the peer is above our own
 * counter (the chunks' versions of the peer's own instance are checked
 * against its claims, src/buffer.c, for the instance it says it is).
 * Returns the sequence number after which the chunks go on.
 */
static int64
queue_transfer(Driver *d, Run *r)
{
	const MorangoBeginReply *b = &r->begin;
	int64		last_seq;

	local_begin(r->push ? "morango sync: queue" : "morango sync: queued");
	if (r->push)
	{
		MorangoTransfer *t = local_transfer(r);

		if (r->records_total < 0 || !b->resumed)
			r->total = morango_step_queue(t, b->local_fsic);
		else
			r->total = r->records_total;
		last_seq = b->last_seq;
	}
	else
	{
		MorangoTransfer *t;

		if (b->local_fsic == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("the peer answered peer_begin without its FSIC")));
		morango_spi_exec("SELECT morango.fsic_claims_check($1::jsonb)", 1, (Oid[]) {TEXTOID},
						 (Datum[]) {CStringGetTextDatum(b->local_fsic)}, NULL, SPI_OK_SELECT);
		morango_sync_session_touch(d->session_id,
								   b->instance_id ? uuid_datum(d, b->instance_id) : (Datum) 0,
								   b->instance_id == NULL);
		t = local_transfer(r);
		morango_step_received_fsic(t, b->resumed, b->local_fsic, b->records_total, peer_limits(b));
		last_seq = morango_transfer_last_seq(r->ts_id);
	}
	notify(d, r->ts, "queuing", "completed");
	local_commit();
	return last_seq;
}

/*
 * Send the chunks the peer does not hold yet, pipelined: while the peer
 * validates and stores one chunk, we read the next.  Chunks are within
 * the peer's limits (its begin reply) and ours, of at most chunk_size
 * records.  What the peer holds (last_seq) counts as sent, also when an
 * earlier attempt failed after the peer stored a chunk but before we
 * recorded it.
 */
static void
push_chunks(Driver *d, Run *r, int64 last_seq)
{
	int			chunk_size = (int) Min(Min((int64) d->args->chunk_size, (int64) morango_max_chunk_records),
									   r->begin.max_chunk_records);
	int64		chunk_bytes = Min((int64) morango_max_chunk_bytes, r->begin.max_chunk_bytes);
	MorangoChunk c;
	MemoryContext oldcxt;

	local_begin("morango sync: read chunk");
	{
		MorangoTransfer *t = local_transfer(r);
		MorangoTransferUpdate u = MORANGO_TRANSFER_KEEP;

		u.records_transferred = last_seq;
		u.peer_options = peer_limits(&r->begin);
		morango_transfer_transition(t, t->stage, t->status, &u);
		oldcxt = MemoryContextSwitchTo(d->cxt);
		morango_step_read_chunk(t, last_seq, chunk_size, chunk_bytes, &c);
		MemoryContextSwitchTo(oldcxt);
	}
	local_commit();
	while (c.records > 0)
	{
		MorangoChunk next;

		CHECK_FOR_INTERRUPTS();
		remote_send(d, push_sql, 2, (const char *[]) {r->ts, c.packed});
		local_begin("morango sync: read chunk");
		oldcxt = MemoryContextSwitchTo(d->cxt);
		morango_step_read_chunk(local_transfer(r), c.last_seq, chunk_size, chunk_bytes, &next);
		MemoryContextSwitchTo(oldcxt);
		local_commit();
		remote_wait(d, push_sql);
		local_begin("morango sync: chunk sent");
		morango_step_chunk_sent(local_transfer(r), c.last_seq, strlen(c.packed));
		notify(d, r->ts, "transferring", "in_progress");
		local_commit();
		pfree((char *) c.packed);
		c = next;
	}
}

/*
 * Fetch the chunks we do not hold yet, pipelined: as soon as a chunk
 * arrives, ask for the next one, so that the peer reads it while we store
 * this one.
 */
static void
pull_chunks(Driver *d, Run *r, int64 last_seq)
{
	char		chunk_size[16];

	snprintf(chunk_size, sizeof(chunk_size), "%d", d->args->chunk_size);
	remote_send(d, pull_sql, 3, (const char *[]) {r->ts, int64_text(last_seq), chunk_size});
	for (;;)
	{
		MorangoChunk c;
		char	   *json;

		CHECK_FOR_INTERRUPTS();
		json = remote_reply(d, pull_sql);
		decode_begin();
		morango_chunk_decode(pull_sql, json, d->cxt, &c);
		decode_end();
		pfree(json);
		if (c.records == 0)
			break;
		remote_send(d, pull_sql, 3, (const char *[]) {r->ts, int64_text(c.last_seq), chunk_size});
		local_begin("morango sync: receive chunk");
		(void) morango_step_receive_chunk(r->ts_id, cstring_to_text(c.packed));
		notify(d, r->ts, "transferring", "in_progress");
		local_commit();
		pfree((char *) c.packed);
	}
}

/*
 * Transfer session ts in one direction (push: we produce, the peer
 * receives; pull: the other way).  Returns true if ts was begun by an
 * earlier attempt: it carried what was serialized and queued then, not
 * what changed since.
 */
static bool
run_transfer(Driver *d, const char *ts, bool push)
{
	Run			r;
	bool		continued;
	int64		last_seq;

	memset(&r, 0, sizeof(r));
	r.ts = ts;
	r.ts_id = uuid_datum(d, ts);
	r.push = push;
	if (!open_local(d, &r))
		return false;
	continued = r.local_fsic != NULL;

	/* a pull merged already only has to be applied and finished */
	if (push || r.stage < MORANGO_STAGE_DESERIALIZING)
	{
		notify_step(d, ts, "queuing", "started");
		stage_begin(d);
		begin_transfer(d, &r);
		if (!r.begin.active)
		{
			/* the peer finished this transfer before we heard of it */
			close_local(d, &r, NULL);
			return continued;
		}
		last_seq = queue_transfer(d, &r);

		notify_step(d, ts, "transferring", "started");
		stage_begin(d);
		if (push)
			push_chunks(d, &r, last_seq);
		else
			pull_chunks(d, &r, last_seq);
		notify_step(d, ts, "transferring", "completed");

		notify_step(d, ts, "dequeuing", "started");
		if (push)
		{
			/* the peer merges and applies */
			stage_begin(d);
			remote_send(d, finish_sql, 2, (const char *[]) {ts, int64_text(r.total)});
			remote_wait(d, finish_sql);
			close_local(d, &r, "dequeuing");
			return continued;
		}

		/* merge, all or nothing */
		local_begin("morango sync: dequeue");
		{
			int64		counts[4];

			morango_step_merge(r.ts_id, counts);
		}
		notify(d, ts, "dequeuing", "completed");
		local_commit();
	}

	local_begin("morango sync: deserialize");
	{
		int64		counts[3];

		morango_step_apply(local_transfer(&r), counts);
	}
	local_commit();

	stage_begin(d);
	remote_send(d, finish_sql, 2, (const char *[]) {ts, NULL});
	remote_wait(d, finish_sql);
	close_local(d, &r, NULL);
	return continued;
}

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
	MorangoAuthReply theirs;
	char	   *revocations[1];
	char	   *json;
	const char *auth_sql = "SELECT morango.peer_authenticate($1::uuid, $2, $3::jsonb, $4::uuid, $5::uuid, $6)";

	if (d->args->certificate[0] == '\0')
		return;
	remote_call(d, "SELECT morango.peer_nonce()", 0, NULL, 1, nonce);
	local_step(d, "morango sync: sign",
			   "SELECT morango.certificate_chain($1::uuid)::text,"
			   "       morango.certificate_sign($1::uuid,"
			   "           morango.handshake_message($2::uuid, $3::uuid, $1::uuid, $4::uuid, $5))",
			   5, (const char *[]) {d->args->certificate, nonce[0], d->session,
				   d->args->peer_certificate, d->profile}, 2, mine);
	remote_send(d, auth_sql, 6, (const char *[]) {d->session, d->profile, mine[0], d->args->peer_certificate,
				nonce[0], mine[1]});
	json = remote_reply(d, auth_sql);
	decode_begin();
	morango_auth_reply_decode(auth_sql, json, d->cxt, &theirs);
	decode_end();
	local_step(d, "morango sync: verify the peer",
			   "SELECT morango.session_authenticate($1::uuid, $2, $3::uuid, $4::uuid, $5::jsonb, $6, $7::uuid),"
			   "       morango.revocations_of(morango.certificate_root($3::uuid))::text",
			   7, (const char *[]) {d->session, d->profile, d->args->certificate,
				   d->args->peer_certificate, theirs.chain, theirs.signature, nonce[0]}, 2, mine);

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

/*
 * morango_driver_run
 *		One attempt at the whole sync: connect, authenticate, run the
 *		directions, close the session on both sides.  The session was
 *		chosen by morango_driver_start().
 */
void
morango_driver_run(Driver *d)
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
		if (run_transfer(d, out[0], false))
			run_transfer(d, new_transfer_id(d), false);
	}
	if (push)
	{
		local_step(d, "morango sync: push", transfer_sql, 2,
				   (const char *[]) {d->session, "true"}, 1, out);
		if (run_transfer(d, out[0], true))
			run_transfer(d, new_transfer_id(d), true);
	}

	local_begin("morango sync: done");
	/* nothing stays open with the session (no buffer outlives it) */
	morango_transfers_close_all(d->session_id, NULL);
	morango_sync_session_end(d->session_id, MORANGO_SYNC_COMPLETED, NULL);
	local_exec(d, "UPDATE morango.peer_status SET last_success_at = now(), consecutive_failures = 0,"
			   " next_retry_at = NULL, last_error = NULL, running_session = NULL"
			   " WHERE peer = $1 AND profile = $2 AND filter = $3::text[] AND direction = $4",
			   4, (const char *[]) {d->peer_display, d->profile, d->filter, d->args->direction}, 0, NULL);
	notify(d, NULL, "session", "completed");
	local_commit();
	remote_call(d, "SELECT morango.peer_close($1::uuid)", 1, (const char *[]) {d->session}, 0, NULL);
}

/*
 * morango_driver_start
 *		Single flight and the session.  Take the advisory lock of (peer,
 * profile, filter, direction), held until the worker exits; if another
 * worker holds it, return false with the session that one runs in
 * *running.  Otherwise find the unfinished sync session to resume (or
 * make one), record it, and return true.
 */
bool
morango_driver_start(Driver *d, char **running)
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
	d->session_id = uuid_datum(d, d->session);
	d->instance = out[1];
	morango_sync_session_client_start(d->session_id, d->peer_display, d->profile, text_array(d->filter),
									  d->args->direction, uuid_datum(d, d->instance));
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
 * morango_driver_failed
 *		Record a failed attempt: the session rows (they stay active, so a later
 * sync resumes them) and the peer's status, with the time of the next
 * retry if there will be one.  Runs in a fresh transaction.
 */
void
morango_driver_failed(Driver *d, const char *message, int retry_in_ms)
{
	char		delay[32];

	if (d->session == NULL)
		return;
	snprintf(delay, sizeof(delay), "%d", retry_in_ms);
	local_begin("morango sync: failed");
	/* last_activity_at is not touched: a sync that keeps failing still expires */
	morango_sync_session_interrupt(d->session_id, MORANGO_SYNC_ERRORED, message);
	morango_transfers_fail_all(d->session_id, message);
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

