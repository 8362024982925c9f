/*-------------------------------------------------------------------------
 *
 * peer.c
 *		Helpers of the peer API (the morango.peer_* functions a peer calls,
 *		doc/protocol.md): who is calling, how it may call, and the limits
 *		this database announces.
 *
 * The peer API functions are SECURITY DEFINER, so inside them current_user
 * is the extension's owner and session_user the role that logged in.  The
 * role a call acts for is the one outside every security definer function:
 * the login role, or the role it switched to with SET ROLE.
 *
 * The guard.  A peer API call takes locks that others wait for (the
 * instance row while serialize stamps, database max counters and
 * application rows while a push is merged, its session rows).  They must
 * end with the call: morango.peer_guard(), the first statement of every
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

PG_FUNCTION_INFO_V1(morango_peer_role);
PG_FUNCTION_INFO_V1(morango_peer_guard);
PG_FUNCTION_INFO_V1(morango_peer_limits);

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
 * morango.peer_guard(fname text) -> void
 *		The first statement of every peer API function morango.<fname>.  For
 *		a session user that is not a superuser, refuses the call unless it
 *		is the whole top-level statement, outside any transaction block or
 *		pipeline (see the file header); then makes the transaction commit
 *		as soon as the statement completes and arms the watchdog.
 *		Superusers (tests, and an administrator calling the API by hand)
 *		are not restricted.
 */
Datum
morango_peer_guard(PG_FUNCTION_ARGS)
{
	char	   *fname = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (superuser_arg(GetSessionUserId()))
		PG_RETURN_VOID();

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
	PG_RETURN_VOID();
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
