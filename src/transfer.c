/*-------------------------------------------------------------------------
 *
 * transfer.c
 *		The home of session state: every write of a sync or transfer
 *		session's stage, status and counters, and every emptying of a
 *		transfer's buffers, is a function of this file.
 *
 * A transfer session goes through the stages of transfer.h in order
 * (doc/protocol.md, "Session states", draws it):
 *
 *   initializing -> serializing -> queuing -> transferring -> dequeuing
 *     -> deserializing -> cleanup
 *
 * skipping those its side does not run (a receiver does not queue).  One
 * function, morango_transfer_transition(), moves it; a move to an earlier
 * stage is an error unless it restarts the transfer's data (the buffers
 * are emptied, the counts reset), and a closed transfer moves no more,
 * except that the responder takes up again a transfer that
 * morango.cleanup() expired while its initiator still wanted it.
 * morango_transfer_close() ends one (its buffers emptied at once).  The
 * steps (queue.c, buffer.c, dequeue.c, protocol.c), the initiator's
 * driver (driver.c) and the responder (peer.c) all go through here; so
 * does SQL (transfer_open, transfer_close, cleanup, sync_cancel).
 *
 * IDENTIFICATION
 *		src/transfer.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "morango.h"
#include "transfer.h"

PG_FUNCTION_INFO_V1(morango_transfer_open_sql);
PG_FUNCTION_INFO_V1(morango_transfer_close_sql);
PG_FUNCTION_INFO_V1(morango_sessions_expire_sql);
PG_FUNCTION_INFO_V1(morango_sync_session_interrupt_sql);
PG_FUNCTION_INFO_V1(morango_session_states);
PG_FUNCTION_INFO_V1(morango_transfer_transition_sql);

/* the names, as the tables' CHECK constraints spell them */
static const char *const stage_names[MORANGO_NSTAGES] = {
	"initializing", "serializing", "queuing", "transferring", "dequeuing",
	"deserializing", "cleanup"
};
static const char *const status_names[MORANGO_NSTATUSES] = {
	"pending", "started", "completed", "errored"
};
static const char *const sync_status_names[MORANGO_NSYNCSTATUSES] = {
	"started", "completed", "errored", "cancelled"
};

const MorangoTransferUpdate MORANGO_TRANSFER_KEEP = {
	.records_total = -1,
	.records_transferred = -1,
	.records_dequeued = -1,
	.conflicts = -1,
};

const char *
morango_stage_name(MorangoStage stage)
{
	Assert(stage >= 0 && stage < MORANGO_NSTAGES);
	return stage_names[stage];
}

const char *
morango_status_name(MorangoStatus status)
{
	Assert(status >= 0 && status < MORANGO_NSTATUSES);
	return status_names[status];
}

const char *
morango_sync_status_name(MorangoSyncStatus status)
{
	Assert(status >= 0 && status < MORANGO_NSYNCSTATUSES);
	return sync_status_names[status];
}

/* The enum value of a name read from the tables (their CHECK holds). */
static int
name_index(const char *const *names, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	elog(ERROR, "unknown session state \"%s\"", name);
	return -1;					/* keep compiler quiet */
}

/* text of a datum, or NULL */
static char *
text_or_null(HeapTuple tup, TupleDesc desc, int col)
{
	return SPI_getvalue(tup, desc, col);
}

/*
 * Fetch transfer session ts into a MorangoTransfer (NULL if it does not
 * exist), locking it FOR UPDATE until the end of the transaction.  Runs
 * inside SPI; the result is allocated in the current memory context.
 */
static MorangoTransfer *
transfer_read(Datum ts)
{
	MorangoTransfer *t;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;
	Datum	   *elems;
	MemoryContext cxt = CurrentMemoryContext;

	morango_spi_exec("SELECT s.profile, t.filter, t.active, t.push, s.is_server,"
					 "       t.stage, t.status, t.records_total, t.records_transferred,"
					 "       t.local_fsic::text, t.remote_fsic::text, t.peer_options::text,"
					 "       t.sync_session_id, s.peer_role"
					 " FROM morango.transfer_sessions t"
					 " JOIN morango.sync_sessions s ON s.id = t.sync_session_id"
					 " WHERE t.id = $1 FOR UPDATE OF t",
					 1, (Oid[]) {UUIDOID}, &ts, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return NULL;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	MemoryContextSwitchTo(cxt);
	t = palloc0(sizeof(MorangoTransfer));
	t->id = PointerGetDatum(palloc(UUID_LEN));
	memcpy(DatumGetPointer(t->id), DatumGetPointer(ts), UUID_LEN);
	t->name = DatumGetCString(DirectFunctionCall1(uuid_out, ts));
	t->profile = PointerGetDatum(DatumGetTextPCopy(SPI_getbinval(tup, desc, 1, &isnull)));
	t->filter = PointerGetDatum(DatumGetArrayTypePCopy(SPI_getbinval(tup, desc, 2, &isnull)));
	deconstruct_array(DatumGetArrayTypeP(t->filter), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, NULL, &t->nfilter);
	t->prefixes = palloc(sizeof(char *) * Max(t->nfilter, 1));
	for (int i = 0; i < t->nfilter; i++)
		t->prefixes[i] = TextDatumGetCString(elems[i]);
	t->active = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	t->push = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
	t->is_server = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
	t->receiver = (t->push == t->is_server);
	t->stage = name_index(stage_names, MORANGO_NSTAGES, SPI_getvalue(tup, desc, 6));
	t->status = name_index(status_names, MORANGO_NSTATUSES, SPI_getvalue(tup, desc, 7));
	d = SPI_getbinval(tup, desc, 8, &isnull);
	t->records_total = isnull ? -1 : DatumGetInt64(d);
	t->records_transferred = DatumGetInt64(SPI_getbinval(tup, desc, 9, &isnull));
	t->local_fsic = text_or_null(tup, desc, 10);
	t->remote_fsic = text_or_null(tup, desc, 11);
	t->peer_options = text_or_null(tup, desc, 12);
	d = SPI_getbinval(tup, desc, 13, &isnull);
	t->sync_session = PointerGetDatum(palloc(UUID_LEN));
	memcpy(DatumGetPointer(t->sync_session), DatumGetPointer(d), UUID_LEN);
	t->sync_peer_role = text_or_null(tup, desc, 14);
	return t;
}

/*
 * morango_transfer_find
 *		The state of transfer session ts, locked FOR UPDATE until the end
 *		of the transaction, or NULL if there is none.  Runs inside SPI.
 */
MorangoTransfer *
morango_transfer_find(Datum ts)
{
	return transfer_read(ts);
}

/*
 * morango_transfer_fetch
 *		As morango_transfer_find(), but a missing session is an error.
 */
MorangoTransfer *
morango_transfer_fetch(Datum ts)
{
	MorangoTransfer *t = transfer_read(ts);

	if (t == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("transfer session %s does not exist",
						DatumGetCString(DirectFunctionCall1(uuid_out, ts)))));
	return t;
}

/*
 * morango_transfer_past
 *		Has the transfer session reached stage `stage` or a later one?
 */
bool
morango_transfer_past(MorangoTransfer *t, MorangoStage stage)
{
	return t->stage >= stage;
}

/*
 * morango_transfer_clear_buffers
 *		Empty transfer session ts's buffers (the records and their version
 *		vectors).  Runs inside SPI.
 */
void
morango_transfer_clear_buffers(Datum ts)
{
	morango_spi_exec("WITH b AS (DELETE FROM morango.buffer WHERE transfer_session_id = $1)"
					 " DELETE FROM morango.record_max_counter_buffer WHERE transfer_session_id = $1",
					 1, (Oid[]) {UUIDOID}, &ts, NULL, SPI_OK_DELETE);
}

/* Datum of an int64 that may be "keep" (-1): NULL then. */
static void
opt_int8(int64 v, Datum *value, char *null)
{
	*value = Int64GetDatum(v);
	*null = v < 0 ? 'n' : ' ';
}

static void
opt_jsonb(const char *v, Datum *value, char *null)
{
	*value = v ? DirectFunctionCall1(jsonb_in, CStringGetDatum(v)) : (Datum) 0;
	*null = v ? ' ' : 'n';
}

/*
 * The one statement that writes a transfer session's state.  $2 stage,
 * $3 status, $4 active; $5..$8 records_total, records_transferred,
 * records_dequeued, conflicts (NULL: keep, or reset on a restart);
 * $9 added to records_transferred; $10, $11 bytes sent and received to
 * add; $12..$14 local_fsic, remote_fsic, peer_options (NULL: keep);
 * $15 restart, $16 forget the FSICs and the total (with restart);
 * $17 error (closing), $18 ending.
 */
static const char *transition_sql =
"UPDATE morango.transfer_sessions SET"
"  stage = $2, status = $3, active = $4,"
"  records_total = COALESCE($5, CASE WHEN $16 THEN NULL ELSE records_total END),"
"  records_transferred = COALESCE($6, CASE WHEN $15 THEN 0 ELSE records_transferred END) + $9,"
"  records_dequeued = COALESCE($7, CASE WHEN $15 THEN 0 ELSE records_dequeued END),"
"  conflicts = COALESCE($8, CASE WHEN $15 THEN 0 ELSE conflicts END),"
"  bytes_sent = bytes_sent + $10, bytes_received = bytes_received + $11,"
"  local_fsic = COALESCE($12, CASE WHEN $16 THEN NULL ELSE local_fsic END),"
"  remote_fsic = COALESCE($13, CASE WHEN $16 THEN NULL ELSE remote_fsic END),"
"  peer_options = COALESCE($14, peer_options),"
"  last_error = CASE WHEN $18 THEN $17 WHEN $15 THEN NULL ELSE last_error END,"
"  ended_at = CASE WHEN $18 THEN now() WHEN $15 THEN NULL ELSE ended_at END,"
"  last_activity_at = now()"
" WHERE id = $1";

/* write the state, unchecked (the callers check) */
static void
transition_write(MorangoTransfer *t, MorangoStage to, MorangoStatus status, bool active,
				 const MorangoTransferUpdate *u, const char *error, bool ending)
{
	Datum		v[18];
	char		n[19];

	memset(n, ' ', sizeof(n));
	n[18] = '\0';
	v[0] = t->id;
	v[1] = CStringGetTextDatum(stage_names[to]);
	v[2] = CStringGetTextDatum(status_names[status]);
	v[3] = BoolGetDatum(active);
	opt_int8(u->records_total, &v[4], &n[4]);
	opt_int8(u->records_transferred, &v[5], &n[5]);
	opt_int8(u->records_dequeued, &v[6], &n[6]);
	opt_int8(u->conflicts, &v[7], &n[7]);
	v[8] = Int64GetDatum(u->transferred_add);
	v[9] = Int64GetDatum(u->bytes_sent_add);
	v[10] = Int64GetDatum(u->bytes_received_add);
	opt_jsonb(u->local_fsic, &v[11], &n[11]);
	opt_jsonb(u->remote_fsic, &v[12], &n[12]);
	opt_jsonb(u->peer_options, &v[13], &n[13]);
	v[14] = BoolGetDatum(u->restart);
	v[15] = BoolGetDatum(u->restart && u->forget_fsics);
	v[16] = error ? CStringGetTextDatum(error) : (Datum) 0;
	n[16] = error ? ' ' : 'n';
	v[17] = BoolGetDatum(ending);
	morango_spi_exec(transition_sql, 18,
					 (Oid[]) {UUIDOID, TEXTOID, TEXTOID, BOOLOID, INT8OID, INT8OID, INT8OID,
						 INT8OID, INT8OID, INT8OID, INT8OID, JSONBOID, JSONBOID, JSONBOID,
					 BOOLOID, BOOLOID, TEXTOID, BOOLOID},
					 v, n, SPI_OK_UPDATE);

	/* keep the caller's copy in step */
	t->stage = to;
	t->status = status;
	t->active = active;
	if (u->restart)
	{
		t->records_transferred = 0;
		if (u->forget_fsics)
		{
			t->records_total = -1;
			t->local_fsic = t->remote_fsic = NULL;
		}
	}
	if (u->records_total >= 0)
		t->records_total = u->records_total;
	if (u->records_transferred >= 0)
		t->records_transferred = u->records_transferred;
	t->records_transferred += u->transferred_add;
	if (u->local_fsic)
		t->local_fsic = pstrdup(u->local_fsic);
	if (u->remote_fsic)
		t->remote_fsic = pstrdup(u->remote_fsic);
	if (u->peer_options)
		t->peer_options = pstrdup(u->peer_options);
}

/*
 * morango_transfer_transition
 *		Move transfer session t (fetched in this transaction, so locked)
 *		to stage `to` with status `status`, writing what u says too.
 *		Legal: a later stage, or the same stage with any status, for an
 *		active transfer; with u->restart, an earlier stage up to queuing
 *		(the buffers are emptied and the counts reset, in this same
 *		transaction), or initializing for a closed, errored transfer (the
 *		responder takes it up again).  Anything else raises 55000 and
 *		writes nothing.  Runs inside SPI.
 */
void
morango_transfer_transition(MorangoTransfer *t, MorangoStage to, MorangoStatus status,
							const MorangoTransferUpdate *u)
{
	bool		reopen = !t->active && u->restart && to == MORANGO_STAGE_INITIALIZING &&
		t->status == MORANGO_STATUS_ERRORED;

	if (!t->active && !reopen)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("transfer session %s is finished", t->name)));
	if (u->restart && to > MORANGO_STAGE_QUEUING)
		elog(ERROR, "a transfer restarts at queuing or before, not at %s", stage_names[to]);
	if (to < t->stage && !u->restart)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("transfer session %s cannot go back from stage %s to %s",
						t->name, stage_names[t->stage], stage_names[to])));
	if (u->restart)
		morango_transfer_clear_buffers(t->id);
	transition_write(t, to, status, true, u, NULL, false);
}

/*
 * morango_transfer_close
 *		End transfer session t on this side: cleanup, completed (error
 *		NULL) or errored with error, its buffers emptied.  Closing a
 *		closed transfer does nothing.  Runs inside SPI.
 */
void
morango_transfer_close(MorangoTransfer *t, const char *error)
{
	if (!t->active)
		return;
	morango_transfer_clear_buffers(t->id);
	transition_write(t, MORANGO_STAGE_CLEANUP,
					 error ? MORANGO_STATUS_ERRORED : MORANGO_STATUS_COMPLETED,
					 false, &MORANGO_TRANSFER_KEEP, error, true);
}

/*
 * morango_transfers_close_all
 *		Close every transfer of sync session ss still active (errored with
 *		error, or completed if NULL), their buffers emptied.  Runs inside
 *		SPI.
 */
void
morango_transfers_close_all(Datum ss, const char *error)
{
	morango_spi_exec("WITH t AS ("
					 "  UPDATE morango.transfer_sessions"
					 "  SET active = false, stage = 'cleanup',"
					 "      status = CASE WHEN $2::text IS NULL THEN 'completed' ELSE 'errored' END,"
					 "      last_error = $2, ended_at = now(), last_activity_at = now()"
					 "  WHERE sync_session_id = $1 AND active RETURNING id"
					 "), b AS (DELETE FROM morango.buffer USING t WHERE transfer_session_id = t.id)"
					 " DELETE FROM morango.record_max_counter_buffer USING t"
					 " WHERE transfer_session_id = t.id",
					 2, (Oid[]) {UUIDOID, TEXTOID},
					 (Datum[]) {ss, error ? CStringGetTextDatum(error) : (Datum) 0},
					 error ? "  " : " n", SPI_OK_DELETE);
}

/*
 * morango_transfers_fail_all
 *		A failed attempt: every active transfer of sync session ss is
 *		errored in its stage, with error; it stays active (a later attempt
 *		resumes it) and its last activity is not touched (a sync that
 *		keeps failing still expires).  Runs inside SPI.
 */
void
morango_transfers_fail_all(Datum ss, const char *error)
{
	morango_spi_exec("UPDATE morango.transfer_sessions SET status = 'errored', last_error = $2"
					 " WHERE sync_session_id = $1 AND active",
					 2, (Oid[]) {UUIDOID, TEXTOID}, (Datum[]) {ss, CStringGetTextDatum(error)},
					 NULL, SPI_OK_UPDATE);
}

/*
 * morango_sync_session_client_start
 *		Record the initiator's sync session id (made, or resumed: then
 *		started again by this process).  Runs inside SPI.
 */
void
morango_sync_session_client_start(Datum id, const char *peer, const char *profile,
								  Datum filter, const char *direction, Datum instance)
{
	morango_spi_exec("INSERT INTO morango.sync_sessions (id, profile, is_server, peer, filter, direction,"
					 "                                   local_instance_id, process_id)"
					 " VALUES ($1, $3, false, $2, $4, $5, $6, pg_catalog.pg_backend_pid())"
					 " ON CONFLICT (id) DO UPDATE SET process_id = EXCLUDED.process_id, status = 'started',"
					 "     last_activity_at = now()",
					 6, (Oid[]) {UUIDOID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID, UUIDOID},
					 (Datum[]) {id, CStringGetTextDatum(peer), CStringGetTextDatum(profile),
						 filter, CStringGetTextDatum(direction), instance},
					 NULL, SPI_OK_INSERT);
}

/*
 * morango_sync_session_end
 *		Close sync session id if it is active: status (completed, errored,
 *		cancelled) and error (kept to 1,000 characters).  Its transfers are
 *		the caller's to close first.  Runs inside SPI.
 */
void
morango_sync_session_end(Datum id, MorangoSyncStatus status, const char *error)
{
	Assert(status != MORANGO_SYNC_STARTED);
	morango_spi_exec("UPDATE morango.sync_sessions"
					 " SET active = false, status = $2, last_error = pg_catalog.left($3, 1000),"
					 "     ended_at = now(), last_activity_at = now()"
					 " WHERE id = $1 AND active",
					 3, (Oid[]) {UUIDOID, TEXTOID, TEXTOID},
					 (Datum[]) {id, CStringGetTextDatum(sync_status_names[status]),
					 error ? CStringGetTextDatum(error) : (Datum) 0},
					 error ? NULL : "  n", SPI_OK_UPDATE);
}

/*
 * morango_sync_session_interrupt
 *		Sync session id stops without ending, still active so that a later
 *		attempt resumes it: errored (a failed attempt; its last activity
 *		is not touched, so a sync that keeps failing still expires) or
 *		cancelled (morango.sync_cancel()).  Runs inside SPI.
 */
void
morango_sync_session_interrupt(Datum id, MorangoSyncStatus status, const char *error)
{
	Assert(status == MORANGO_SYNC_ERRORED || status == MORANGO_SYNC_CANCELLED);
	morango_spi_exec("UPDATE morango.sync_sessions SET status = $3, last_error = $2,"
					 "    last_activity_at = CASE WHEN $3 = 'cancelled' THEN now() ELSE last_activity_at END"
					 " WHERE id = $1 AND active",
					 3, (Oid[]) {UUIDOID, TEXTOID, TEXTOID},
					 (Datum[]) {id, CStringGetTextDatum(error),
					 CStringGetTextDatum(sync_status_names[status])},
					 NULL, SPI_OK_UPDATE);
}

/*
 * morango_sync_session_touch
 *		Sync session id was active just now; if given, the peer's instance
 *		is the one it names now.  Runs inside SPI.
 */
void
morango_sync_session_touch(Datum id, Datum peer_instance, bool peer_instance_null)
{
	morango_spi_exec("UPDATE morango.sync_sessions SET last_activity_at = now(),"
					 "    peer_instance_id = COALESCE($2, peer_instance_id)"
					 " WHERE id = $1",
					 2, (Oid[]) {UUIDOID, UUIDOID}, (Datum[]) {id, peer_instance},
					 peer_instance_null ? " n" : NULL, SPI_OK_UPDATE);
}

/*
 * morango_transfer_last_seq
 *		The highest sequence number in transfer session ts's buffer (0 if
 *		it is empty): on the receiver, what it holds.
 */
int64
morango_transfer_last_seq(Datum ts)
{
	morango_spi_exec("SELECT COALESCE(max(seq), 0) FROM morango.buffer WHERE transfer_session_id = $1",
					 1, (Oid[]) {UUIDOID}, &ts, NULL, SPI_OK_SELECT);
	return morango_spi_int8(1);
}

/*
 * morango_open_args
 *		Fill *a for morango_transfer_open(): the sessions, profile, side,
 *		direction and filter; no peer, peer instance or client direction
 *		(the caller sets those it has).
 */
void
morango_open_args(MorangoOpenArgs *a, Datum sync_session, Datum transfer_session,
				  const char *profile, bool is_server, bool push, Datum filter)
{
	memset(a, 0, sizeof(*a));
	a->sync_session = sync_session;
	a->transfer_session = transfer_session;
	a->profile = profile;
	a->is_server = is_server;
	a->push = push;
	a->filter = filter;
	a->peer_instance_null = true;
}

/*
 * morango_transfer_open
 *		Open, or find again, transfer session a->transfer_session and its
 *		sync session on this side (the initiator: is_server false; the
 *		responder: true), checking them against each other and the
 *		certificates the session is bound to.  *resumed says whether the
 *		transfer existed (and goes on) rather than being new or started
 *		over.  Returns its state, locked.  Runs inside SPI.
 *
 *		The resume rules: an unknown sync session is made (on the
 *		responder it belongs to the calling peer role); a closed one is
 *		an error for the initiator and taken up again by the responder (it
 *		closed it, morango.cleanup(), while the initiator still wanted
 *		it).  An unknown transfer is made; a closed, errored one is started
 *		over by the responder; any other is returned as it is.
 */
MorangoTransfer *
morango_transfer_open(const MorangoOpenArgs *a, bool *resumed)
{
	Datum		profile = CStringGetTextDatum(a->profile);
	bool		isnull;
	MorangoTransfer *t;
	FmgrInfo	array_eq_info;

	/*
	 * Only a profile this database has (a model registered for it, a
	 * scope definition naming it, or a record of it in the store): a peer
	 * cannot make sessions, buffers or database max counters for
	 * invented profiles.
	 */
	morango_spi_exec("SELECT EXISTS (SELECT 1 FROM morango.models m WHERE m.profile = $1)"
					 "    OR EXISTS (SELECT 1 FROM morango.scope_definitions d WHERE d.profile = $1)"
					 "    OR EXISTS (SELECT 1 FROM morango.store s WHERE s.profile = $1)",
					 1, (Oid[]) {TEXTOID}, &profile, NULL, SPI_OK_SELECT);
	if (!DatumGetBool(morango_spi_value(1, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("profile %s is not known on this database",
						quote_literal_cstr(a->profile)),
				 errhint("Register a table of that profile here first (morango.register_model).")));

	/* certificates: may this filter flow, in this direction? (raises if not) */
	morango_spi_exec("SELECT morango.session_scope_check($1, $2, $3, $4)",
					 4, (Oid[]) {UUIDOID, TEXTOID, BOOLOID, TEXTARRAYOID},
					 (Datum[]) {a->sync_session, profile, BoolGetDatum(a->is_server == a->push),
					 a->filter}, NULL, SPI_OK_SELECT);

	/* the sync session */
	morango_spi_exec("SELECT profile, is_server, active FROM morango.sync_sessions WHERE id = $1 FOR UPDATE",
					 1, (Oid[]) {UUIDOID}, (Datum[]) {a->sync_session}, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		/* a responder's session belongs to the role that opens it */
		morango_spi_exec("INSERT INTO morango.sync_sessions (id, profile, is_server, peer, filter, direction,"
						 "                                   local_instance_id, peer_instance_id, process_id,"
						 "                                   peer_role)"
						 " VALUES ($1, $2, $3, $4, $5, $6, morango.instance_id(), $7,"
						 "         pg_catalog.pg_backend_pid(), CASE WHEN $3 THEN morango.peer_role() END)",
						 7, (Oid[]) {UUIDOID, TEXTOID, BOOLOID, TEXTOID, TEXTARRAYOID, TEXTOID, UUIDOID},
						 (Datum[]) {a->sync_session, profile, BoolGetDatum(a->is_server),
							 a->peer ? CStringGetTextDatum(a->peer) : (Datum) 0, a->filter,
							 a->direction ? CStringGetTextDatum(a->direction) : (Datum) 0,
						 a->peer_instance},
						 (char[]) {' ', ' ', ' ', a->peer ? ' ' : 'n', ' ', a->direction ? ' ' : 'n',
						 a->peer_instance_null ? 'n' : ' ', '\0'},
						 SPI_OK_INSERT);
	}
	else
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *ss_profile = SPI_getvalue(tup, desc, 1);
		bool		ss_server = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
		bool		ss_active = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		char	   *ssname = DatumGetCString(DirectFunctionCall1(uuid_out, a->sync_session));

		if (strcmp(ss_profile, a->profile) != 0 || ss_server != a->is_server)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("sync session %s belongs to another profile or side", ssname)));
		if (!ss_active && !a->is_server)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("sync session %s is closed", ssname)));
		if (!ss_active)
		{
			/* the client resumes a session we closed (cleanup): take it up again */
			morango_spi_exec("UPDATE morango.sync_sessions SET active = true, status = 'started',"
							 " ended_at = NULL WHERE id = $1",
							 1, (Oid[]) {UUIDOID}, (Datum[]) {a->sync_session}, NULL, SPI_OK_UPDATE);
		}
	}

	/*
	 * the peer's instance as it says now: what received versions of the
	 * sender's own instance are checked against (src/buffer.c)
	 */
	morango_spi_exec("UPDATE morango.sync_sessions SET last_activity_at = now(),"
					 "    process_id = pg_catalog.pg_backend_pid(),"
					 "    peer_instance_id = COALESCE($2, peer_instance_id)"
					 " WHERE id = $1",
					 2, (Oid[]) {UUIDOID, UUIDOID}, (Datum[]) {a->sync_session, a->peer_instance},
					 a->peer_instance_null ? " n" : NULL, SPI_OK_UPDATE);

	/* the transfer session */
	*resumed = true;
	t = morango_transfer_find(a->transfer_session);
	if (t == NULL)
	{
		*resumed = false;
		morango_spi_exec("INSERT INTO morango.transfer_sessions (id, sync_session_id, push, filter)"
						 " VALUES ($1, $2, $3, $4)",
						 4, (Oid[]) {UUIDOID, UUIDOID, BOOLOID, TEXTARRAYOID},
						 (Datum[]) {a->transfer_session, a->sync_session, BoolGetDatum(a->push), a->filter},
						 NULL, SPI_OK_INSERT);
		return morango_transfer_fetch(a->transfer_session);
	}
	fmgr_info(F_ARRAY_EQ, &array_eq_info);	/* array_eq caches in its flinfo */
	if (!DatumGetBool(DirectFunctionCall2(uuid_eq, t->sync_session, a->sync_session)) ||
		t->push != a->push ||
		!DatumGetBool(FunctionCall2Coll(&array_eq_info, DEFAULT_COLLATION_OID, t->filter, a->filter)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("transfer session %s does not match its sync session, direction or filter",
						t->name)));
	if (!t->active && t->status == MORANGO_STATUS_ERRORED && a->is_server)
	{
		/* expired here (cleanup) while the client still wants it: start it over */
		MorangoTransferUpdate u = MORANGO_TRANSFER_KEEP;

		*resumed = false;
		u.restart = true;
		u.forget_fsics = true;
		morango_transfer_transition(t, MORANGO_STAGE_INITIALIZING, MORANGO_STATUS_PENDING, &u);
	}
	return t;
}

/*
 * morango_sessions_expire
 *		Close, as errored, transfer and sync sessions idle for longer than
 *		older_than (an interval), emptying their buffers, and empty any
 *		buffer a closed transfer still holds.  Returns the number of
 *		transfer sessions expired.  Runs inside SPI.
 */
int64
morango_sessions_expire(Datum older_than)
{
	int64		n;

	morango_spi_exec("WITH stale AS ("
					 "    UPDATE morango.transfer_sessions"
					 "    SET active = false, status = 'errored', ended_at = now(),"
					 "        last_error = COALESCE(last_error, 'expired by morango.cleanup()')"
					 "    WHERE active AND last_activity_at < now() - $1"
					 "    RETURNING id"
					 "), b AS ("
					 "    DELETE FROM morango.buffer USING stale WHERE transfer_session_id = stale.id"
					 "), r AS ("
					 "    DELETE FROM morango.record_max_counter_buffer USING stale"
					 "    WHERE transfer_session_id = stale.id"
					 ") SELECT count(*) FROM stale",
					 1, (Oid[]) {INTERVALOID}, &older_than, NULL, SPI_OK_SELECT);
	n = morango_spi_int8(1);

	/* buffers of sessions that are closed are never needed */
	morango_spi_exec("WITH b AS (DELETE FROM morango.buffer b USING morango.transfer_sessions t"
					 "           WHERE t.id = b.transfer_session_id AND NOT t.active)"
					 " DELETE FROM morango.record_max_counter_buffer b USING morango.transfer_sessions t"
					 " WHERE t.id = b.transfer_session_id AND NOT t.active",
					 0, NULL, NULL, NULL, SPI_OK_DELETE);
	morango_spi_exec("UPDATE morango.sync_sessions s"
					 " SET active = false, status = 'errored', ended_at = now(),"
					 "     last_error = COALESCE(last_error, 'expired by morango.cleanup()')"
					 " WHERE active AND last_activity_at < now() - $1"
					 "   AND NOT EXISTS (SELECT 1 FROM morango.transfer_sessions t"
					 "                   WHERE t.sync_session_id = s.id AND t.active)",
					 1, (Oid[]) {INTERVALOID}, &older_than, NULL, SPI_OK_UPDATE);
	return n;
}

/* ---- SQL ---- */

/* the state of t as jsonb, as transfer_open answers it */
static Datum
transfer_state_jsonb(MorangoTransfer *t, bool resumed)
{
	bool		isnull;

	morango_spi_exec("SELECT pg_catalog.jsonb_build_object("
					 "  'resumed', $2, 'active', t.active, 'stage', t.stage, 'status', t.status,"
					 "  'records_total', t.records_total, 'records_transferred', t.records_transferred,"
					 "  'last_seq', (SELECT COALESCE(max(seq), 0) FROM morango.buffer"
					 "               WHERE transfer_session_id = t.id),"
					 "  'local_fsic', t.local_fsic, 'remote_fsic', t.remote_fsic)"
					 " FROM morango.transfer_sessions t WHERE t.id = $1",
					 2, (Oid[]) {UUIDOID, BOOLOID}, (Datum[]) {t->id, BoolGetDatum(resumed)},
					 NULL, SPI_OK_SELECT);
	return SPI_datumTransfer(morango_spi_value(1, &isnull),
							 false, -1);
}

/*
 * morango.transfer_open(sync_session uuid, transfer_session uuid, profile
 *   text, is_server boolean, push boolean, filter text[], peer text,
 *   peer_instance uuid, direction text) -> jsonb
 *		morango_transfer_open() from SQL; answers the transfer's state.
 */
Datum
morango_transfer_open_sql(PG_FUNCTION_ARGS)
{
	MorangoOpenArgs a;
	MorangoTransfer *t;
	bool		resumed;
	Datum		result;

	for (int i = 0; i < 6; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("transfer_open: an argument is missing")));
	morango_open_args(&a, PG_GETARG_DATUM(0), PG_GETARG_DATUM(1),
					  text_to_cstring(PG_GETARG_TEXT_PP(2)), PG_GETARG_BOOL(3), PG_GETARG_BOOL(4),
					  PG_GETARG_DATUM(5));
	a.peer = PG_ARGISNULL(6) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(6));
	a.peer_instance_null = PG_ARGISNULL(7);
	a.peer_instance = a.peer_instance_null ? (Datum) 0 : PG_GETARG_DATUM(7);
	a.direction = PG_ARGISNULL(8) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(8));

	morango_spi_connect();
	t = morango_transfer_open(&a, &resumed);
	result = transfer_state_jsonb(t, resumed);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * morango.transfer_close(transfer_session uuid, error text) -> void
 *		morango_transfer_close() from SQL; an unknown session is nothing to
 *		close.
 */
Datum
morango_transfer_close_sql(PG_FUNCTION_ARGS)
{
	MorangoTransfer *t;

	if (PG_ARGISNULL(0))
		PG_RETURN_VOID();
	morango_spi_connect();
	t = morango_transfer_find(PG_GETARG_DATUM(0));
	if (t)
		morango_transfer_close(t, PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)));
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * morango.sessions_expire(older_than interval) -> bigint
 *		morango_sessions_expire() from SQL (morango.cleanup()).
 */
Datum
morango_sessions_expire_sql(PG_FUNCTION_ARGS)
{
	int64		n;

	morango_spi_connect();
	n = morango_sessions_expire(PG_GETARG_DATUM(0));
	SPI_finish();
	PG_RETURN_INT64(n);
}

/*
 * morango.sync_session_interrupt(sync_session uuid, status text, error text)
 *		morango_sync_session_interrupt() from SQL (morango.sync_cancel()):
 *		status is errored or cancelled.
 */
Datum
morango_sync_session_interrupt_sql(PG_FUNCTION_ARGS)
{
	char	   *status = text_to_cstring(PG_GETARG_TEXT_PP(1));
	MorangoSyncStatus s;

	if (strcmp(status, "errored") == 0)
		s = MORANGO_SYNC_ERRORED;
	else if (strcmp(status, "cancelled") == 0)
		s = MORANGO_SYNC_CANCELLED;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a sync session is interrupted as errored or cancelled, not as \"%s\"", status)));
	morango_spi_connect();
	morango_sync_session_interrupt(PG_GETARG_DATUM(0), s, text_to_cstring(PG_GETARG_TEXT_PP(2)));
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * morango.transfer_transition(transfer_session uuid, stage text, status
 *   text) -> void
 *		morango_transfer_transition() from SQL, writing nothing else: for
 *		administrators and tests (an illegal move raises as it does for the
 *		steps).
 */
Datum
morango_transfer_transition_sql(PG_FUNCTION_ARGS)
{
	char	   *stage = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *status = text_to_cstring(PG_GETARG_TEXT_PP(2));
	int			to = -1;
	int			st = -1;

	for (int i = 0; i < MORANGO_NSTAGES; i++)
		if (strcmp(stage_names[i], stage) == 0)
			to = i;
	for (int i = 0; i < MORANGO_NSTATUSES; i++)
		if (strcmp(status_names[i], status) == 0)
			st = i;
	if (to < 0 || st < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" \"%s\" is not a transfer session state", stage, status),
				 errhint("See morango.session_states().")));
	morango_spi_connect();
	morango_transfer_transition(morango_transfer_fetch(PG_GETARG_DATUM(0)), (MorangoStage) to,
								(MorangoStatus) st, &MORANGO_TRANSFER_KEEP);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * morango.session_states(OUT kind text, OUT position integer, OUT name text)
 *		The stages and statuses as the C enums have them, in order: a test
 *		compares them with the tables' CHECK constraints.
 */
Datum
morango_session_states(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	struct
	{
		const char *kind;
		const char *const *names;
		int			n;
	}			sets[] = {
		{"stage", stage_names, MORANGO_NSTAGES},
		{"status", status_names, MORANGO_NSTATUSES},
		{"sync_status", sync_status_names, MORANGO_NSYNCSTATUSES},
	};

	InitMaterializedSRF(fcinfo, 0);
	for (int s = 0; s < (int) lengthof(sets); s++)
		for (int i = 0; i < sets[s].n; i++)
		{
			Datum		values[3];
			bool		nulls[3] = {false, false, false};

			values[0] = CStringGetTextDatum(sets[s].kind);
			values[1] = Int32GetDatum(i);
			values[2] = CStringGetTextDatum(sets[s].names[i]);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	return (Datum) 0;
}
