/*-------------------------------------------------------------------------
 *
 * session.c
 *		Reading a transfer session's state, for the steps that act on one
 *		(queue.c, buffer.c, dequeue.c), and a checked SPI call helper.
 *
 * IDENTIFICATION
 *		src/session.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "morango.h"

/*
 * morango_analyze_store
 *		After a step wrote `written` store records, ANALYZE the store and
 *		the version vectors if that is a large part of them (more than a
 *		tenth of what the planner believes they hold, and over 1,000), as
 *		autovacuum would a minute later: the next steps of the same sync
 *		plan their statements on these statistics, and an empty store that
 *		just received a million records would otherwise be scanned whole
 *		where an index probe is meant.  Skipped (silently) when the current
 *		role does not own the store.  Runs inside SPI, in the caller's
 *		transaction: until it ends, the store and the version vectors hold
 *		ANALYZE's SHARE UPDATE EXCLUSIVE lock (a manual VACUUM or CREATE
 *		INDEX CONCURRENTLY on them waits), and an error in it aborts the
 *		caller's step.
 */
void
morango_analyze_store(int64 written)
{
	bool		isnull;
	float4		reltuples;
	Oid			owner;

	if (written <= 1000)
		return;
	morango_spi_exec("SELECT c.reltuples, c.relowner FROM pg_catalog.pg_class c"
					 " WHERE c.oid = 'morango.store'::pg_catalog.regclass",
					 0, NULL, NULL, NULL, SPI_OK_SELECT);
	reltuples = DatumGetFloat4(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (reltuples >= 0 && written <= reltuples / 10)
		return;
	if (!has_privs_of_role(GetUserId(), owner))
		return;
	morango_spi_exec("ANALYZE morango.store, morango.record_max_counters",
					 0, NULL, NULL, NULL, SPI_OK_UTILITY);
}

/*
 * morango_transfer_fetch
 *		The state of transfer session ts, locked FOR UPDATE until the end
 *		of the transaction.  Errors if it does not exist.  Runs inside SPI;
 *		the result is allocated in the current memory context.
 */
MorangoTransfer *
morango_transfer_fetch(Datum ts)
{
	Oid			argtypes[1] = {UUIDOID};
	MorangoTransfer *t = palloc0(sizeof(MorangoTransfer));
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;
	Datum	   *elems;

	t->id = ts;
	t->name = DatumGetCString(DirectFunctionCall1(uuid_out, ts));
	morango_spi_exec("SELECT s.profile, t.filter, t.active, (t.push = s.is_server) AS receiver,"
					 "       t.stage, t.records_total, t.records_transferred,"
					 "       t.local_fsic::text, t.remote_fsic::text"
					 " FROM morango.transfer_sessions t"
					 " JOIN morango.sync_sessions s ON s.id = t.sync_session_id"
					 " WHERE t.id = $1 FOR UPDATE OF t",
					 1, argtypes, &ts, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("transfer session %s does not exist", t->name)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	t->profile = PointerGetDatum(DatumGetTextPCopy(SPI_getbinval(tup, desc, 1, &isnull)));
	t->filter = PointerGetDatum(DatumGetArrayTypePCopy(SPI_getbinval(tup, desc, 2, &isnull)));
	deconstruct_array(DatumGetArrayTypeP(t->filter), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, NULL, &t->nfilter);
	t->prefixes = palloc(sizeof(char *) * Max(t->nfilter, 1));
	for (int i = 0; i < t->nfilter; i++)
		t->prefixes[i] = TextDatumGetCString(elems[i]);
	t->active = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	t->receiver = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
	t->stage = SPI_getvalue(tup, desc, 5);
	d = SPI_getbinval(tup, desc, 6, &isnull);
	t->records_total = isnull ? -1 : DatumGetInt64(d);
	t->records_transferred = DatumGetInt64(SPI_getbinval(tup, desc, 7, &isnull));
	t->local_fsic = SPI_getvalue(tup, desc, 8);
	t->remote_fsic = SPI_getvalue(tup, desc, 9);
	return t;
}

/*
 * morango_transfer_past
 *		Has the transfer session reached stage `stage` or a later one?
 */
bool
morango_transfer_past(MorangoTransfer *t, const char *stage)
{
	static const char *const order[] = {"initializing", "serializing", "queuing",
	"transferring", "dequeuing", "deserializing", "cleanup"};
	int			have = -1,
				want = -1;

	for (int i = 0; i < (int) lengthof(order); i++)
	{
		if (strcmp(order[i], t->stage) == 0)
			have = i;
		if (strcmp(order[i], stage) == 0)
			want = i;
	}
	return have >= want;
}
