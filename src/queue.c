/*-------------------------------------------------------------------------
 *
 * queue.c
 *		Step 3 of a record's path: the producer fills the outgoing buffer of
 *		a transfer session with what the receiver lacks.
 *
 * morango.queue(transfer_session) reads the two FSICs the transfer
 * session holds (this side's, as producer, and the receiver's), expands
 * both for the session's filter and diffs them (fsic.c, pure), and then
 * copies, in one statement, every store record under the filter whose last
 * saved version is newer than what the receiver has for its partition and
 * instance into morango.buffer, numbered in a stable order (seq), together
 * with every entry of its version vector (record_max_counter_buffer).
 * Morango's _queue_into_buffer_v2, without its string-built SQL and its
 * 100,000-entry limit: the diff goes in as one jsonb parameter.
 *
 * One bound on top (own_claim_sql): no record is sent with a version of
 * this database's current instance above what the FSIC this side sent
 * claims for that instance (its highest counter over the FSIC's
 * partitions).  The receiver refuses a chunk holding such a version
 * (src/buffer.c: a sender cannot hold versions of its own above its own
 * claim, so they cannot be real).  An honest producer could otherwise send
 * one: a push serializes and takes its FSIC in one transaction and queues
 * in a later one, and in between a concurrent sync's conflict merge can
 * stamp a new version of our own on a record under the filter.  Such a
 * record is left for the next sync, whose FSIC covers its new version;
 * the receiver loses nothing by not getting it now, because the version
 * it would have got then is superseded by that new version, which it will
 * be sent (its counter is above every claim it is given now).  A pull
 * serializes, takes its FSIC and queues in one transaction under the
 * instance lock (morango.peer_begin()), so the bound keeps nothing back
 * there.
 *
 * IDENTIFICATION
 *		src/queue.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "fsic.h"
#include "morango.h"

PG_FUNCTION_INFO_V1(morango_queue);

/*
 * The queue statement, for a diff naming ninst instances.  $1 ts, $2 the
 * FSIC diff {partition: {instance: counter}}, $3 profile, $4 filter; then
 * per instance i, $(5+2i) the instance and $(6+2i) the lowest counter any
 * partition needs of it; then $(5+2n) this database's current instance and
 * $(6+2n) the claim our FSIC makes for it (the bound in the header
 * comment).  The candidates are read by those (instance,
 * counter) ranges, written as constants so that the planner sees how many
 * records each range holds: an index scan of store_version for the few
 * records an incremental sync needs, a sequential scan for a full one.
 * The exact per-partition test follows on the candidates only.
 */
static char *
queue_sql(int ninst)
{
	int			own = 5 + 2 * ninst;	/* the own-instance bound's parameters */
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfoString(&sql,
						   "WITH d AS ("
						   "  SELECT p.key AS part, i.key::uuid AS inst, (i.value)::bigint AS ctr"
						   "  FROM pg_catalog.jsonb_each($2) AS p, pg_catalog.jsonb_each_text(p.value) AS i"
						   "), cand AS MATERIALIZED ("
						   "  SELECT s.id, s.partition, s.last_saved_instance, s.last_saved_counter"
						   "  FROM morango.store s"
						   "  WHERE s.profile = $3 AND (");
	for (int i = 0; i < ninst; i++)
		appendStringInfo(&sql, "%s(s.last_saved_instance = $%d AND s.last_saved_counter > $%d)",
						 i ? " OR " : "", 5 + 2 * i, 6 + 2 * i);
	if (ninst == 0)
		appendStringInfoString(&sql, "false");
	appendStringInfoString(&sql,
						   ")"
						   "), ");
	/*
	 * records with a version of our own instance above our claim (by I1, a
	 * record's version vector holds its last saved version, so this covers
	 * that too); usually none, read from record_max_counters_instance
	 */
	appendStringInfo(&sql,
					 "over AS MATERIALIZED ("
					 "  SELECT r.record_id FROM morango.record_max_counters r"
					 "  WHERE r.instance_id = $%d AND r.counter > $%d"
					 "), ", own, own + 1);
	appendStringInfoString(&sql,
						   "sel AS ("
						   "  SELECT DISTINCT c.id FROM d JOIN cand c"
						   "    ON c.last_saved_instance = d.inst AND c.last_saved_counter > d.ctr"
						   "   AND pg_catalog.starts_with(c.partition, d.part)"
						   "  WHERE EXISTS (SELECT 1 FROM pg_catalog.unnest($4::text[]) AS f(prefix)"
						   "                WHERE pg_catalog.starts_with(c.partition, f.prefix))"
						   "    AND NOT EXISTS (SELECT 1 FROM over WHERE over.record_id = c.id)"
						   "), ins AS ("
						   "  INSERT INTO morango.buffer (transfer_session_id, seq, record_id, profile, model_name,"
						   "      partition, source_id, serialized, deleted, hard_deleted,"
						   "      last_saved_instance, last_saved_counter, conflicting_serialized_data)"
						   "  SELECT $1, row_number() OVER (ORDER BY s.id), s.id, s.profile, s.model_name,"
						   "         s.partition, s.source_id, s.serialized, s.deleted, s.hard_deleted,"
						   "         s.last_saved_instance, s.last_saved_counter, s.conflicting_serialized_data"
						   "  FROM sel JOIN morango.store s ON s.id = sel.id"
						   "  RETURNING record_id"
						   "), rm AS ("
						   "  INSERT INTO morango.record_max_counter_buffer (transfer_session_id, record_id, instance_id, counter)"
						   "  SELECT $1, r.record_id, r.instance_id, r.counter"
						   "  FROM morango.record_max_counters r JOIN ins ON ins.record_id = r.record_id"
						   ")"
						   " SELECT count(*) FROM ins");
	return sql.data;
}

/*
 * $1 this side's FSIC (raw v2): this database's current instance and the
 * highest counter the FSIC claims for it (0 if none)
 */
static const char *own_claim_sql =
"SELECT i.id, COALESCE((SELECT max((e.value)::bigint)"
"                       FROM (SELECT $1->'super' UNION ALL SELECT $1->'sub') AS m(map),"
"                            pg_catalog.jsonb_each(m.map) AS p, pg_catalog.jsonb_each_text(p.value) AS e"
"                       WHERE e.key::uuid = i.id), 0)"
" FROM morango.instances i WHERE i.current";

/*
 * morango_queue_internal
 *		Queue transfer session ts (this side must be its producer and it
 *		must hold both FSICs).  Idempotent: a session queued before is
 *		queued again from scratch.  Returns records_total.  Runs inside SPI.
 */
int64
morango_queue_internal(Datum ts)
{
	Oid			tstype[1] = {UUIDOID};
	Oid		   *argtypes;
	Datum	   *values;
	Datum		diffjson;
	int			ninst;
	int			nargs;
	bool		isnull;
	MorangoTransfer *t = morango_transfer_fetch(ts);
	char	   *diff;
	int64		total;
	Datum		own[2];

	if (t->receiver)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this side receives in transfer session %s; only the producer queues",
						t->name)));
	if (t->local_fsic == NULL || t->remote_fsic == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("transfer session %s has no FSICs yet", t->name),
				 errhint("Both sides' FSICs are exchanged before queuing.")));

	diff = morango_fsic_diff(morango_fsic_expand(t->local_fsic, t->prefixes, t->nfilter),
							 morango_fsic_expand(t->remote_fsic, t->prefixes, t->nfilter));
	diffjson = DirectFunctionCall1(jsonb_in, CStringGetDatum(diff));

	/* start from scratch: a resumed session may have queued before */
	morango_spi_exec("DELETE FROM morango.buffer WHERE transfer_session_id = $1",
					 1, tstype, &ts, NULL, SPI_OK_DELETE);
	morango_spi_exec("DELETE FROM morango.record_max_counter_buffer WHERE transfer_session_id = $1",
					 1, tstype, &ts, NULL, SPI_OK_DELETE);

	/* our instance and our claim for it (see the header comment) */
	if (morango_spi_exec(own_claim_sql, 1, (Oid[]) {JSONBOID},
						 (Datum[]) {DirectFunctionCall1(jsonb_in, CStringGetDatum(t->local_fsic))},
						 NULL, SPI_OK_SELECT) != 1)
		elog(ERROR, "no current morango instance");
	own[0] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	own[1] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

	/* per instance, the lowest counter the receiver needs of it */
	ninst = (int) morango_spi_exec("SELECT i.key::uuid, min((i.value)::bigint)"
								   " FROM pg_catalog.jsonb_each($1) AS p, pg_catalog.jsonb_each_text(p.value) AS i"
								   " GROUP BY 1",
								   1, (Oid[]) {JSONBOID}, &diffjson, NULL, SPI_OK_SELECT);
	nargs = 6 + 2 * ninst;
	argtypes = palloc(sizeof(Oid) * nargs);
	values = palloc(sizeof(Datum) * nargs);
	argtypes[0] = UUIDOID;
	values[0] = ts;
	argtypes[1] = JSONBOID;
	values[1] = diffjson;
	argtypes[2] = TEXTOID;
	values[2] = t->profile;
	argtypes[3] = TEXTARRAYOID;
	values[3] = t->filter;
	for (int i = 0; i < ninst; i++)
	{
		argtypes[4 + 2 * i] = UUIDOID;
		values[4 + 2 * i] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
		argtypes[5 + 2 * i] = INT8OID;
		values[5 + 2 * i] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);
	}
	argtypes[4 + 2 * ninst] = UUIDOID;
	values[4 + 2 * ninst] = own[0];
	argtypes[5 + 2 * ninst] = INT8OID;
	values[5 + 2 * ninst] = own[1];
	/* (the instance ids point into those results, kept until SPI_finish) */
	morango_spi_exec(queue_sql(ninst), nargs, argtypes, values, NULL, SPI_OK_SELECT);
	total = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	morango_spi_exec("UPDATE morango.transfer_sessions"
					 " SET records_total = $2, stage = 'queuing', status = 'completed',"
					 "     last_activity_at = now()"
					 " WHERE id = $1",
					 2, (Oid[]) {UUIDOID, INT8OID}, (Datum[]) {ts, Int64GetDatum(total)},
					 NULL, SPI_OK_UPDATE);
	morango_fault("queue");
	return total;
}

/*
 * morango.queue(transfer_session uuid) -> bigint
 *		Fill the outgoing buffer of a transfer session this side produces
 *		for; returns the number of records queued.
 */
Datum
morango_queue(PG_FUNCTION_ARGS)
{
	int64		total;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	total = morango_queue_internal(PG_GETARG_DATUM(0));
	SPI_finish();
	PG_RETURN_INT64(total);
}
