/*-------------------------------------------------------------------------
 *
 * peer.c
 *		The peer API: the responder's side of the sync protocol, the
 *		morango.peer_* functions a peer calls (doc/protocol.md).  Each is a
 *		thin C entry point that checks its caller (the guard below, and the
 *		calling role's ownership of the sessions it names) and its
 *		arguments, then runs the protocol's steps (protocol.c), the same
 *		ones the initiator's driver runs (driver.c), and answers with a
 *		reply encoded by protocol.c.  The certificate handshake's entry
 *		points call their SQL steps (certificate administration stays in
 *		the install script).
 *
 * The peer API functions are SECURITY DEFINER, so inside them current_user
 * is the extension's owner and session_user the role that logged in.  The
 * role a call acts for is the one outside every security definer function:
 * the login role, or the role it switched to with SET ROLE.
 *
 * The guard.  A peer API call takes locks that others wait for (the
 * instance row while serialize stamps, database max counters and
 * application rows while a push is merged, its session rows).  They must
 * end with the call: morango_peer_guard_check(), the first step of every
 * peer API function, refuses a call made by a role that is not a superuser
 * unless the call is the whole top-level statement (SELECT
 * morango.<name>(...) with parameters or constants as arguments) outside
 * any transaction block or pipeline, and then marks the transaction for
 * commit as soon as the statement completes (as PreventInTransactionBlock()
 * does for VACUUM), so that the extended protocol does not keep it open
 * until the client's Sync.  One case remains: a client can Execute with a
 * row limit, which leaves the portal suspended and the transaction open
 * while the backend waits for the client's next message.  A watchdog timer
 * armed by the guard checks once a second, until the transaction ends,
 * whether the backend is waiting for its client inside that transaction,
 * and if so terminates the connection, which releases the locks.
 *
 * IDENTIFICATION
 *		src/peer.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "morango.h"
#include "protocol.h"
#include "transfer.h"

PG_FUNCTION_INFO_V1(morango_peer_role);
PG_FUNCTION_INFO_V1(morango_peer_limits);
PG_FUNCTION_INFO_V1(morango_protocol_version);
PG_FUNCTION_INFO_V1(morango_peer_begin);
PG_FUNCTION_INFO_V1(morango_peer_begin_v2);
PG_FUNCTION_INFO_V1(morango_peer_pull_chunk);
PG_FUNCTION_INFO_V1(morango_peer_push_chunk);
PG_FUNCTION_INFO_V1(morango_peer_finish);
PG_FUNCTION_INFO_V1(morango_peer_close);
PG_FUNCTION_INFO_V1(morango_peer_nonce);
PG_FUNCTION_INFO_V1(morango_peer_authenticate);
PG_FUNCTION_INFO_V1(morango_peer_revocations);
PG_FUNCTION_INFO_V1(morango_peer_certificate_sign);

/* how often the watchdog looks at a guarded transaction, in ms */
#define GUARD_TICK_MS 1000

/* the watchdog: registered once per backend */
static bool guard_registered = false;
static TimeoutId guard_timeout;
/* a guarded peer call's transaction is open (read by the timer's handler) */
static volatile sig_atomic_t guard_armed = false;
/* the handler ended the connection: said in the log as the backend exits */
static volatile sig_atomic_t guard_fired = false;
/* the login role of the guarded call, for that log line (no catalog access then) */
static char guard_role[NAMEDATALEN];

/*
 * morango.peer_role() -> name
 *		The role the current peer API call acts for (GetOuterUserId(): SET
 *		ROLE counts, SECURITY DEFINER does not).  Sessions, transfers and
 *		signing grants belong to this role.
 */
Datum
morango_peer_role(PG_FUNCTION_ARGS)
{
	char	   *name = GetUserNameFromId(GetOuterUserId(), false);

	PG_RETURN_DATUM(DirectFunctionCall1(namein, CStringGetDatum(name)));
}

/*
 * plain_arg
 *		Is n an argument a plain call may have: a parameter ($n) or a
 *		constant, possibly cast (any number of times), possibly named?
 */
static bool
plain_arg(Node *n)
{
	while (n != NULL)
	{
		if (IsA(n, ParamRef) || IsA(n, A_Const))
			return true;
		if (IsA(n, TypeCast))
			n = ((TypeCast *) n)->arg;
		else if (IsA(n, NamedArgExpr))
			n = (Node *) ((NamedArgExpr *) n)->arg;
		else
			return false;
	}
	return false;
}

/*
 * plain_call
 *		Is the query string q exactly one statement SELECT morango.fname(args)
 *		(with an optional column alias), whose arguments are all plain_arg()s?
 *		Nothing else may be in it: no FROM, WHERE, GROUP BY, HAVING, WINDOW,
 *		ORDER BY, LIMIT, locking clause, WITH, DISTINCT, INTO, VALUES or set
 *		operation, no second target, no aggregate or window decoration.  A
 *		string that does not parse is not a plain call.
 */
static bool
plain_call(const char *q, const char *fname)
{
	MemoryContext cxt;
	MemoryContext old;
	List	   *volatile tree = NIL;
	volatile bool ok = false;

	if (q == NULL)
		return false;
	cxt = AllocSetContextCreate(CurrentMemoryContext, "morango peer guard", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		tree = raw_parser(q, RAW_PARSE_DEFAULT);
	}
	PG_CATCH();
	{
		/* a syntax error: the parser holds no resources, only memory */
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		tree = NIL;
	}
	PG_END_TRY();

	if (list_length(tree) == 1 && IsA(((RawStmt *) linitial(tree))->stmt, SelectStmt))
	{
		SelectStmt *s = (SelectStmt *) ((RawStmt *) linitial(tree))->stmt;

		if (s->distinctClause == NIL && s->intoClause == NULL && s->fromClause == NIL &&
			s->whereClause == NULL && s->groupClause == NIL && !s->groupDistinct &&
			s->havingClause == NULL && s->windowClause == NIL && s->valuesLists == NIL &&
			s->sortClause == NIL && s->limitOffset == NULL && s->limitCount == NULL &&
			s->lockingClause == NIL && s->withClause == NULL && s->op == SETOP_NONE &&
			list_length(s->targetList) == 1)
		{
			ResTarget  *rt = linitial_node(ResTarget, s->targetList);
			FuncCall   *fc = (FuncCall *) rt->val;

			if (rt->indirection == NIL && fc != NULL && IsA(fc, FuncCall) &&
				list_length(fc->funcname) == 2 &&
				strcmp(strVal(linitial(fc->funcname)), "morango") == 0 &&
				strcmp(strVal(lsecond(fc->funcname)), fname) == 0 &&
				fc->agg_order == NIL && fc->agg_filter == NULL && fc->over == NULL &&
				!fc->agg_within_group && !fc->agg_star && !fc->agg_distinct &&
				!fc->func_variadic)
			{
				ListCell   *lc;

				ok = true;
				foreach(lc, fc->args)
					ok = ok && plain_arg(lfirst(lc));
			}
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return ok;
}

/*
 * guard_tick
 *		The watchdog's timer handler (signal context): if a guarded peer
 *		call's transaction is still open while this backend waits for its
 *		client, end the connection as pg_terminate_backend() would.
 */
static void
guard_tick(void)
{
	if (guard_armed && MyProc != NULL && MyProc->wait_event_info == WAIT_EVENT_CLIENT_READ)
	{
		guard_fired = true;
		ProcDiePending = true;
		InterruptPending = true;
	}
	SetLatch(MyLatch);
}

/*
 * guard_xact_end
 *		Transaction callback: the guarded transaction ended, the watchdog
 *		stops.  If it ended the connection, say why in the log.
 */
static void
guard_xact_end(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			if (guard_armed)
			{
				guard_armed = false;
				disable_timeout(guard_timeout, false);
				if (guard_fired)
					ereport(LOG,
							(errmsg("morango: ended the connection of role \"%s\": it kept a peer API call's "
									"transaction open while it waited", guard_role),
							 errdetail("A peer API call must commit as soon as it returns; a suspended portal "
									   "(an Execute with a row limit) keeps its locks.")));
			}
			break;
		default:
			break;
	}
}

/*
 * morango_peer_guard_check
 *		The first step of every peer API function morango.<fname>.  For
 *		a session user that is not a superuser, refuses the call unless it
 *		is the whole top-level statement, outside any transaction block or
 *		pipeline (see the file header); then makes the transaction commit
 *		as soon as the statement completes and arms the watchdog.
 *		Superusers (tests, and an administrator calling the API by hand)
 *		are not restricted.
 */
static void
morango_peer_guard_check(const char *fname)
{
	if (superuser_arg(GetSessionUserId()))
		return;

	if (IsTransactionBlock() || IsSubTransaction() || (MyXactFlags & XACT_FLAGS_PIPELINING))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("morango.%s() cannot run inside a transaction block or pipeline", fname),
				 errdetail("A peer API call commits its own work as it returns, so that no peer "
						   "holds this database's locks between calls."),
				 errhint("Send each peer API call as a query of its own, outside BEGIN ... COMMIT.")));
	if (!plain_call(debug_query_string, fname))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("morango.%s() must be called on its own", fname),
				 errdetail("The statement must be exactly SELECT morango.%s(...), with parameters "
						   "or constants as arguments, and nothing else in the query.", fname),
				 errhint("A peer role may not wrap peer API calls in other statements or functions.")));

	/* commit when the statement completes, not at the client's Sync */
	MyXactFlags |= XACT_FLAGS_NEEDIMMEDIATECOMMIT;

	if (!guard_registered)
	{
		guard_timeout = RegisterTimeout(USER_TIMEOUT, guard_tick);
		RegisterXactCallback(guard_xact_end, NULL);
		guard_registered = true;
	}
	if (!guard_armed)
	{
		strlcpy(guard_role, GetUserNameFromId(GetSessionUserId(), false), sizeof(guard_role));
		guard_armed = true;
		enable_timeout_every(guard_timeout,
							 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), GUARD_TICK_MS),
							 GUARD_TICK_MS);
	}
}

/*
 * morango.peer_limits() -> jsonb
 *		This database's peer API limits, from its superuser-only settings
 *		(read here, in C, so that the module is loaded and a placeholder a
 *		peer role set before that cannot stand in for them):
 *		{"max_chunk_records", "max_chunk_bytes", "max_peer_transfers",
 *		 "max_open_transfers", "max_fsic_entries"}.
 */
Datum
morango_peer_limits(PG_FUNCTION_ARGS)
{
	char	   *json = psprintf("{\"max_chunk_records\": %d, \"max_chunk_bytes\": %d, "
								"\"max_peer_transfers\": %d, \"max_open_transfers\": %d, "
								"\"max_fsic_entries\": %d}",
								morango_max_chunk_records, morango_max_chunk_bytes,
								morango_max_peer_transfers, morango_max_open_transfers,
								morango_max_fsic_entries);

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

/* ---- the peer API: the responder's side of the protocol ---- */

/* run a check written in SQL (it raises if its argument is bad) */
static void
sql_check(const char *sql, int nargs, Oid *types, Datum *values)
{
	morango_spi_exec(sql, nargs, types, values, NULL, SPI_OK_SELECT);
}

/*
 * Does the calling peer role own sync session ss?  Raises 28000 ("what
 * belongs to another role") if the session exists here but is not a
 * responder's session opened by this role, or if the certificate
 * handshake bound it to another role.  Returns false if the session is
 * unknown here, true if it is the caller's.  Runs inside SPI.
 */
static bool
peer_owns(Datum ss, const char *what)
{
	bool		isnull;
	bool		known;
	bool		other;

	morango_spi_exec("SELECT EXISTS (SELECT 1 FROM morango.sync_sessions WHERE id = $1),"
					 "       EXISTS (SELECT 1 FROM morango.sync_sessions"
					 "               WHERE id = $1 AND (NOT is_server OR peer_role IS DISTINCT FROM morango.peer_role()))"
					 "    OR EXISTS (SELECT 1 FROM morango.session_certificates b"
					 "               WHERE b.sync_session_id = $1 AND b.peer_role IS DISTINCT FROM morango.peer_role())",
					 1, (Oid[]) {UUIDOID}, &ss, NULL, SPI_OK_SELECT);
	known = DatumGetBool(morango_spi_value(1, &isnull));
	other = DatumGetBool(morango_spi_value(2, &isnull));
	if (other)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("%s belongs to another role", what)));
	return known;
}

static char *
uuid_text(Datum id)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, id));
}

/*
 * The responder's transfer session ts, checked: it exists, belongs to the
 * calling role, is active (unless finished_ok) and goes the direction
 * wanted (want_push: 1 push, 0 pull, -1 either).  Locked until the call
 * commits.  Runs inside SPI.
 */
static MorangoTransfer *
peer_session(Datum ts, int want_push, bool finished_ok)
{
	MorangoTransfer *t = morango_transfer_find(ts);

	if (t == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("transfer session %s does not exist", uuid_text(ts))));
	(void) peer_owns(t->sync_session, psprintf("transfer session %s", t->name));
	if (!t->active && !finished_ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("transfer session %s is finished", t->name)));
	if (want_push >= 0 && t->push != (want_push == 1))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("transfer session %s is a %s, not a %s", t->name,
						t->push ? "push" : "pull", want_push ? "push" : "pull")));
	return t;
}

static void
spi_begin(void)
{
	morango_spi_connect();
}

/* this database's instance id, as text */
static char *
own_instance_text(void)
{
	morango_spi_exec("SELECT morango.instance_id()::text", 0, NULL, NULL, NULL, SPI_OK_SELECT);
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * A peer speaking a protocol version this database does not speak (the
 * first argument of peer_begin, either form): the same error for every
 * version.
 */
static void
protocol_refuse(FunctionCallInfo fcinfo)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("morango protocol version %s is not supported",
					PG_ARGISNULL(0) ? "<NULL>" : psprintf("%d", PG_GETARG_INT32(0))),
			 errdetail("This peer speaks protocol version %d.", MORANGO_PROTOCOL_VERSION),
			 errhint("Install the same morango version on both sides.")));
}

/*
 * morango.protocol_version() -> integer
 *		The version of the sync protocol this extension speaks: the one
 *		source of it is MORANGO_PROTOCOL_VERSION.
 */
Datum
morango_protocol_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(MORANGO_PROTOCOL_VERSION);
}

/*
 * The open-transfer quotas: a transfer not open here yet (new, or one
 * expired here that transfer_open starts over) must fit this role's quota
 * (morango.max_peer_transfers, counted under a lock so that concurrent
 * calls cannot all pass) and the total (morango.max_open_transfers,
 * counted without one: it may be passed by as many calls as run at once).
 */
static void
check_quotas(Datum ts)
{
	bool		isnull;
	int64		mine;
	int64		all;
	char	   *me;

	morango_spi_exec("SELECT NOT EXISTS (SELECT 1 FROM morango.transfer_sessions"
					 "                   WHERE id = $1 AND (active OR status <> 'errored')),"
					 "       morango.peer_role()::text",
					 1, (Oid[]) {UUIDOID}, &ts, NULL, SPI_OK_SELECT);
	if (!DatumGetBool(morango_spi_value(1, &isnull)))
		return;
	me = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	morango_spi_exec("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('morango peer transfers'),"
					 "                                        pg_catalog.hashtext($1))",
					 1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(me)}, NULL, SPI_OK_SELECT);
	morango_spi_exec("SELECT count(*) FILTER (WHERE s.peer_role = $1), count(*)"
					 " FROM morango.transfer_sessions t"
					 " JOIN morango.sync_sessions s ON s.id = t.sync_session_id"
					 " WHERE t.active AND s.is_server",
					 1, (Oid[]) {NAMEOID}, (Datum[]) {DirectFunctionCall1(namein, CStringGetDatum(me))},
					 NULL, SPI_OK_SELECT);
	mine = morango_spi_int8(1);
	all = morango_spi_int8(2);
	if (mine >= morango_max_peer_transfers)
		ereport(ERROR,
				(errcode(ERRCODE_TOO_MANY_CONNECTIONS),
				 errmsg("role \"%s\" has %d open transfer sessions on this peer, its quota",
						me, morango_max_peer_transfers),
				 errdetail("morango.max_peer_transfers bounds the open transfer sessions of one peer role."),
				 errhint("Finish or close them (peer_finish, peer_close), or wait for morango.cleanup() "
						 "on the peer to expire idle ones.")));
	if (all >= morango_max_open_transfers)
		ereport(ERROR,
				(errcode(ERRCODE_TOO_MANY_CONNECTIONS),
				 errmsg("too many open transfer sessions on this peer"),
				 errdetail("morango.max_open_transfers bounds the open transfer sessions of all peer roles."),
				 errhint("Run morango.cleanup() on the peer, or wait for running syncs to end.")));
}

/*
 * The client's FSIC, checked before anything walks it: its shape, its
 * size (entries and bytes), its form (fsic_expand raises on bad shapes and
 * counters) and its claims (none above our own counter).
 */
static void
check_client_fsic(Datum fsic, Datum filter)
{
	bool		isnull;
	int64		entries;
	int64		bytes;
	bool		shaped;

	morango_spi_exec("SELECT jsonb_typeof($1) IS NOT DISTINCT FROM 'object'"
					 "       AND jsonb_typeof($1->'super') IS NOT DISTINCT FROM 'object'"
					 "       AND jsonb_typeof($1->'sub') IS NOT DISTINCT FROM 'object',"
					 "       pg_catalog.pg_column_size($1)",
					 1, (Oid[]) {JSONBOID}, &fsic, NULL, SPI_OK_SELECT);
	shaped = DatumGetBool(morango_spi_value(1, &isnull));
	if (isnull || !shaped)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("peer_begin: the client FSIC must be {\"super\": {...}, \"sub\": {...}}")));
	bytes = DatumGetInt32(morango_spi_value(2, &isnull));
	entries = 0;
	if (bytes <= 256 * (int64) morango_max_fsic_entries)
	{
		morango_spi_exec("SELECT count(*)"
						 " FROM (SELECT * FROM jsonb_each($1->'super')"
						 "       UNION ALL SELECT * FROM jsonb_each($1->'sub')) AS p,"
						 "      LATERAL jsonb_object_keys(CASE WHEN jsonb_typeof(p.value) = 'object'"
						 "                                     THEN p.value ELSE '{}' END) AS i",
						 1, (Oid[]) {JSONBOID}, &fsic, NULL, SPI_OK_SELECT);
		entries = morango_spi_int8(1);
	}
	if (bytes > 256 * (int64) morango_max_fsic_entries || entries > morango_max_fsic_entries)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("peer_begin: the client FSIC is too large"),
				 errdetail("This peer takes FSICs of at most %d (partition, instance) entries "
						   "(morango.max_fsic_entries) and " INT64_FORMAT " bytes.",
						   morango_max_fsic_entries, 256 * (int64) morango_max_fsic_entries)));
	sql_check("SELECT morango.fsic_expand($1, $2)", 2, (Oid[]) {JSONBOID, TEXTARRAYOID},
			  (Datum[]) {fsic, filter});
	sql_check("SELECT morango.fsic_claims_check($1)", 1, (Oid[]) {JSONBOID}, &fsic);
}

/*
 * morango.peer_begin(protocol integer, sync_session uuid, transfer_session
 *   uuid, profile text, push boolean, filter text[], client_instance uuid,
 *   client_fsic jsonb, options jsonb) -> jsonb
 *		Open (or resume) a transfer session on this, the responder's, side.
 *		The client sends its FSIC and its options (its chunk limits); as
 *		the producer (a pull) this side serializes, computes its FSIC and
 *		queues; as the receiver (a push) it computes its FSIC.  Answers a
 *		MorangoBeginReply: the transfer's state, this side's FSIC, instance
 *		and limits.  The sync session and the transfer session belong to
 *		the role that opens them; open ones are counted per role and in
 *		all.
 */
Datum
morango_peer_begin(PG_FUNCTION_ARGS)
{
	MorangoOpenArgs a;
	MorangoTransfer *t;
	MorangoBeginReply r;
	bool		resumed;
	ArrayType  *filter;
	Datum		opts;
	Datum		result;
	bool		isnull;

	morango_peer_guard_check("peer_begin");
	if (PG_ARGISNULL(0) || PG_GETARG_INT32(0) != MORANGO_PROTOCOL_VERSION)
		protocol_refuse(fcinfo);
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3) || PG_ARGISNULL(4) || PG_ARGISNULL(6) ||
		VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(3)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("peer_begin: an argument is missing")));
	if (VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(3)) > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("peer_begin: the profile name is longer than 1000 bytes")));

	/* (the filter, once checked below) */
	morango_open_args(&a, PG_GETARG_DATUM(1), PG_GETARG_DATUM(2), text_to_cstring(PG_GETARG_TEXT_PP(3)),
					  true, PG_GETARG_BOOL(4), (Datum) 0);
	a.peer_instance = PG_GETARG_DATUM(6);
	a.peer_instance_null = false;

	spi_begin();
	morango_spi_exec("SELECT morango.peer_options_check($1)", 1, (Oid[]) {JSONBOID},
					 (Datum[]) {PG_ARGISNULL(8) ? (Datum) 0 : PG_GETARG_DATUM(8)},
					 PG_ARGISNULL(8) ? "n" : NULL, SPI_OK_SELECT);
	opts = morango_spi_value(1, &isnull);
	opts = PointerGetDatum(PG_DETOAST_DATUM_COPY(opts));

	/* the sessions named must be unknown here or this role's */
	(void) peer_owns(a.sync_session, psprintf("sync session %s", uuid_text(a.sync_session)));
	morango_spi_exec("SELECT sync_session_id FROM morango.transfer_sessions WHERE id = $1",
					 1, (Oid[]) {UUIDOID}, &a.transfer_session, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		Datum		other = morango_spi_value(1, &isnull);

		if (!DatumGetBool(DirectFunctionCall2(uuid_eq, other, a.sync_session)))
			(void) peer_owns(other, psprintf("transfer session %s", uuid_text(a.transfer_session)));
	}

	/* a non-empty, one-dimensional array of prefixes, within its bounds */
	filter = PG_ARGISNULL(5) ? NULL : PG_GETARG_ARRAYTYPE_P(5);
	if (filter == NULL || ARR_NDIM(filter) != 1 || ArrayGetNItems(ARR_NDIM(filter), ARR_DIMS(filter)) == 0 ||
		array_contains_nulls(filter))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("peer_begin: filter must be a non-empty array of partition prefixes")));
	morango_check_filter(filter);
	a.filter = PointerGetDatum(filter);

	if (PG_ARGISNULL(7))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("peer_begin: the client FSIC must be {\"super\": {...}, \"sub\": {...}}")));
	check_client_fsic(PG_GETARG_DATUM(7), a.filter);
	check_quotas(a.transfer_session);

	t = morango_transfer_open(&a, &resumed);
	if (t->active)
	{
		MorangoTransferUpdate u = MORANGO_TRANSFER_KEEP;
		char	   *client_fsic = JsonbToCString(NULL, &DatumGetJsonbP(PG_GETARG_DATUM(7))->root, -1);

		/* the client's limits, for the chunks we send it (a resume may change them) */
		u.peer_options = JsonbToCString(NULL, &DatumGetJsonbP(opts)->root, -1);
		if (t->remote_fsic == NULL)
		{
			/* the producer stamps its changes, takes its FSIC, then queues */
			(void) morango_step_prepare(t, client_fsic, u.peer_options);
			if (!t->push)
				(void) morango_step_queue(t, NULL);
		}
		else
			morango_transfer_transition(t, t->stage, t->status, &u);
	}
	morango_begin_reply_of(t, resumed, &r);
	r.instance_id = own_instance_text();
	if (t->active)
	{
		r.has_limits = true;
		r.max_chunk_records = morango_max_chunk_records;
		r.max_chunk_bytes = morango_max_chunk_bytes;
	}
	result = SPI_datumTransfer(morango_begin_reply_encode(&r), false, -1);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * morango.peer_begin(...) of protocol version 2 (without options): refused,
 * naming the version this database speaks, so that an older peer gets a
 * clear error rather than "function does not exist".
 */
Datum
morango_peer_begin_v2(PG_FUNCTION_ARGS)
{
	protocol_refuse(fcinfo);
	PG_RETURN_NULL();
}

/*
 * morango.peer_pull_chunk(transfer_session uuid, after_seq bigint,
 *   max_records integer) -> jsonb
 *		The next chunk of a pull (a MorangoChunk): the records after
 *		after_seq, at most max_records, and within the lower of the
 *		client's limits (announced in peer_begin) and ours.
 */
Datum
morango_peer_pull_chunk(PG_FUNCTION_ARGS)
{
	MorangoTransfer *t;
	MorangoChunk c;
	int64		max_records;
	int64		max_bytes;
	Datum		result;

	morango_peer_guard_check("peer_pull_chunk");
	spi_begin();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("transfer session %s does not exist", "<NULL>")));
	t = peer_session(PG_GETARG_DATUM(0), 0, false);
	if (PG_ARGISNULL(1) || PG_GETARG_INT64(1) < 0 || PG_ARGISNULL(2) || PG_GETARG_INT32(2) < 1 ||
		PG_GETARG_INT32(2) > MORANGO_MAX_CHUNK_RECORDS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("peer_pull_chunk: after_seq must be >= 0 and max_records between 1 and 100000")));
	/* the client's limits, as peer_begin kept them, and ours */
	morango_limits_decode("peer_begin options", t->peer_options, CurrentMemoryContext,
						  &max_records, &max_bytes);
	max_records = Min(Min((int64) PG_GETARG_INT32(2), max_records), (int64) morango_max_chunk_records);
	max_bytes = Min(max_bytes, (int64) morango_max_chunk_bytes);
	morango_step_read_chunk(t, PG_GETARG_INT64(1), (int) max_records, max_bytes, &c);
	morango_step_chunk_sent(t, c.last_seq, strlen(c.packed));
	result = SPI_datumTransfer(morango_chunk_encode(&c), false, -1);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * morango.peer_push_chunk(transfer_session uuid, packed text) -> bigint
 *		A packed chunk of a push, validated and buffered (all or nothing);
 *		returns the number of records added.
 */
Datum
morango_peer_push_chunk(PG_FUNCTION_ARGS)
{
	int64		added;

	morango_peer_guard_check("peer_push_chunk");
	spi_begin();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("transfer session %s does not exist", "<NULL>")));
	(void) peer_session(PG_GETARG_DATUM(0), 1, false);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("peer_push_chunk: the chunk is missing")));
	/* refused before unpacking if over morango.max_chunk_bytes (src/pack.c) */
	added = morango_step_receive_chunk(PG_GETARG_DATUM(0), PG_GETARG_TEXT_PP(1));
	SPI_finish();
	PG_RETURN_INT64(added);
}

/*
 * morango.peer_finish(transfer_session uuid, records_total bigint) -> jsonb
 *		Finish a transfer on the responder's side: for a push, check that
 *		all records_total records arrived, merge and deserialize; for a
 *		pull, drop the outgoing buffer.  Closes the transfer session.
 *		Answers a MorangoFinishReply.
 */
Datum
morango_peer_finish(PG_FUNCTION_ARGS)
{
	MorangoTransfer *t;
	MorangoFinishReply r;
	Datum		result;
	bool		was_active;

	morango_peer_guard_check("peer_finish");
	spi_begin();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("transfer session %s does not exist", "<NULL>")));
	t = peer_session(PG_GETARG_DATUM(0), -1, true);
	was_active = t->active;
	memset(&r, 0, sizeof(r));
	r.stage = morango_stage_name(MORANGO_STAGE_CLEANUP);
	r.status = morango_status_name(MORANGO_STATUS_COMPLETED);
	if (!t->active)
	{
		/* finished before (a resumed client asks again) */
		r.stage = morango_stage_name(t->stage);
		r.status = morango_status_name(t->status);
	}
	else if (t->push)
	{
		MorangoTransferUpdate u = MORANGO_TRANSFER_KEEP;

		if (PG_ARGISNULL(1) || PG_GETARG_INT64(1) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("peer_finish: records_total is required for a push")));
		u.records_total = PG_GETARG_INT64(1);
		morango_transfer_transition(t, t->stage, t->status, &u);
		morango_step_merge(t->id, r.dequeue);
		t = morango_transfer_fetch(t->id);
		morango_step_apply(t, r.deserialize);
		r.merged = true;
		morango_transfer_close(t, NULL);
	}
	else if (t->records_total >= 0 && t->records_transferred < t->records_total)
	{
		/* a pull the client ends before it took every record did not complete */
		morango_transfer_close(t, psprintf("the client finished the pull after " INT64_FORMAT
										   " of " INT64_FORMAT " records",
										   t->records_transferred, t->records_total));
		r.status = morango_status_name(MORANGO_STATUS_ERRORED);
	}
	else
		morango_transfer_close(t, NULL);
	if (was_active)
		morango_sync_session_touch(t->sync_session, (Datum) 0, true);
	result = SPI_datumTransfer(morango_finish_reply_encode(&r), false, -1);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * morango.peer_close(sync_session uuid, error text) -> void
 *		Close a sync session on the responder's side, and any of its
 *		transfer sessions still open (as errored, their buffers emptied at
 *		once).  An unknown session is nothing to close; another role's is
 *		refused.
 */
Datum
morango_peer_close(PG_FUNCTION_ARGS)
{
	char	   *error = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));

	morango_peer_guard_check("peer_close");
	if (error && strlen(error) > 65536)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("peer_close: the error text is longer than 64 kB")));
	if (PG_ARGISNULL(0))
		PG_RETURN_VOID();
	spi_begin();
	if (peer_owns(PG_GETARG_DATUM(0), psprintf("sync session %s", uuid_text(PG_GETARG_DATUM(0)))))
	{
		/*
		 * a transfer still open ends with its sync session: no chunk or
		 * finish is taken for it any more (a peer_begin with the same ids
		 * starts it over)
		 */
		morango_transfers_close_all(PG_GETARG_DATUM(0), "its sync session was closed before it finished");
		morango_sync_session_end(PG_GETARG_DATUM(0),
								 error ? MORANGO_SYNC_ERRORED : MORANGO_SYNC_COMPLETED, error);
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/* ---- the certificate handshake (doc/protocol.md, "Certificates") ---- */

/*
 * Run the SQL step sql (one value, by reference, of length typlen: -1 for
 * jsonb, UUID_LEN for uuid) with the call's own arguments, and return its
 * value, copied out of SPI.
 */
static Datum
call_step(FunctionCallInfo fcinfo, const char *sql, int nargs, Oid *types, int typlen)
{
	Datum	   *values = palloc(sizeof(Datum) * Max(nargs, 1));
	char	   *nulls = palloc(nargs + 1);
	Datum		v;
	bool		isnull;

	for (int i = 0; i < nargs; i++)
	{
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	nulls[nargs] = '\0';
	spi_begin();
	morango_spi_exec(sql, nargs, types, values, nulls, SPI_OK_SELECT);
	v = morango_spi_value(1, &isnull);
	if (isnull)
		elog(ERROR, "%s returned null", sql);
	v = SPI_datumTransfer(v, false, typlen);
	SPI_finish();
	return v;
}

/* the byte length of text or jsonb argument n (as text, for jsonb) */
static int64
arg_bytes(FunctionCallInfo fcinfo, int n, bool is_jsonb)
{
	if (is_jsonb)
		return strlen(JsonbToCString(NULL, &PG_GETARG_JSONB_P(n)->root, -1));
	return VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(n));
}

/*
 * morango.peer_nonce() -> uuid
 *		A fresh nonce for the client to sign (morango.nonce()).
 */
Datum
morango_peer_nonce(PG_FUNCTION_ARGS)
{
	morango_peer_guard_check("peer_nonce");
	PG_RETURN_DATUM(call_step(fcinfo, "SELECT morango.nonce()", 0, NULL, UUID_LEN));
}

/*
 * morango.peer_authenticate(sync_session uuid, profile text, client_chain
 *   jsonb, server_certificate uuid, nonce uuid, signature text) -> jsonb
 *		The responder's half of the handshake (handshake_respond): answers
 *		{"chain", "signature"} (a MorangoAuthReply).
 */
Datum
morango_peer_authenticate(PG_FUNCTION_ARGS)
{
	morango_peer_guard_check("peer_authenticate");
	for (int i = 0; i < 6; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("peer_authenticate: an argument is missing or too large")));
	if (arg_bytes(fcinfo, 5, false) > 4096 || arg_bytes(fcinfo, 2, true) > 1048576)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("peer_authenticate: an argument is missing or too large")));
	PG_RETURN_DATUM(call_step(fcinfo, "SELECT morango.handshake_respond($1, $2, $3, $4, $5, $6)", 6,
							  (Oid[]) {UUIDOID, TEXTOID, JSONBOID, UUIDOID, UUIDOID, TEXTOID}, -1));
}

/*
 * morango.peer_revocations(sync_session uuid, revocations jsonb) -> jsonb
 *		The revocation exchange of an authenticated session
 *		(revocations_exchange): answers the revocations this side holds.
 */
Datum
morango_peer_revocations(PG_FUNCTION_ARGS)
{
	morango_peer_guard_check("peer_revocations");
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("peer_revocations: an argument is missing")));
	PG_RETURN_DATUM(call_step(fcinfo, "SELECT morango.revocations_exchange($1, $2)", 2,
							  (Oid[]) {UUIDOID, JSONBOID}, -1));
}

/*
 * morango.peer_certificate_sign(parent uuid, scope_definition text, params
 *   jsonb, public_key text) -> jsonb
 *		A signing request under a grant (certificate_sign_request):
 *		answers the new certificate's chain.
 */
Datum
morango_peer_certificate_sign(PG_FUNCTION_ARGS)
{
	morango_peer_guard_check("peer_certificate_sign");
	for (int i = 0; i < 4; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("peer_certificate_sign: an argument is missing or too large")));
	if (arg_bytes(fcinfo, 3, false) > 4096 || arg_bytes(fcinfo, 2, true) > 65536)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("peer_certificate_sign: an argument is missing or too large")));
	PG_RETURN_DATUM(call_step(fcinfo, "SELECT morango.certificate_sign_request($1, $2, $3, $4)", 4,
							  (Oid[]) {UUIDOID, TEXTOID, JSONBOID, TEXTOID}, -1));
}
