/*-------------------------------------------------------------------------
 *
 * dequeue.c
 *		Step 6 of a record's path: the receiver merges the incoming buffer
 *		of a transfer session into its store.
 *
 * morango.dequeue(transfer_session) decides, for every buffered record,
 * set-based and in one transaction (Morango's _dequeue_into_store,
 * semantics section 6), in this order:
 *
 *   ignored (reverse fast-forward): the local version vector already holds
 *     the incoming version (rmc[incoming instance] >= incoming counter);
 *   new: no local record: inserted with its version vector;
 *   fast-forward: the incoming version vector holds the local version:
 *     the incoming record replaces the local one;
 *   conflict: neither holds the other: the local data is kept, the incoming
 *     data goes to the front of the conflict history (bounded, src/history.c:
 *     the oldest entries go first), deletes are sticky
 *     (either side's delete or hard delete wins), and the record gets a new
 *     local version (this instance, a new counter) whose version vector is
 *     the per-instance max of both.
 *
 * Every changed record is marked dirty (morango.store_dirty), for
 * deserialize, and its store row written once.  Then the
 * receiver's database max counters are raised to the sender's (expanded)
 * FSIC for the session's filter (only for the filter's prefixes, the
 * partitions of merged records and rows that exist: counters.c), and the
 * buffer is emptied.
 *
 * Where we differ from Morango, on purpose (doc/design.md): version
 * vectors are always merged by max, never overwritten; the reverse
 * fast-forward touches only this session's buffer; an incoming hard delete
 * survives a conflict (Morango's PostgreSQL path drops it); database max
 * counters are only ever raised; the new local counter is taken under the
 * instance lock, so it follows commit order like serialize's.
 *
 * IDENTIFICATION
 *		src/dequeue.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

#include "fsic.h"
#include "morango.h"

PG_FUNCTION_INFO_V1(morango_dequeue);

/* $1 ts: drop what we already have */
static const char *ignore_sql =
"WITH rff AS ("
"  DELETE FROM morango.buffer b USING morango.record_max_counters r"
"  WHERE b.transfer_session_id = $1 AND r.record_id = b.record_id"
"    AND r.instance_id = b.last_saved_instance AND r.counter >= b.last_saved_counter"
"  RETURNING b.record_id"
"), rmcb AS ("
"  DELETE FROM morango.record_max_counter_buffer x USING rff"
"  WHERE x.transfer_session_id = $1 AND x.record_id = rff.record_id"
")"
" SELECT count(*) FROM rff";

/* $1 ts, $2 local instance, $3 new counter: conflicts */
static const char *conflict_sql =
"WITH cf AS ("
"  SELECT b.* FROM morango.buffer b JOIN morango.store s ON s.id = b.record_id"
"  WHERE b.transfer_session_id = $1"
"    AND NOT EXISTS (SELECT 1 FROM morango.record_max_counter_buffer x"
"                    WHERE x.transfer_session_id = $1 AND x.record_id = b.record_id"
"                      AND x.instance_id = s.last_saved_instance"
"                      AND x.counter >= s.last_saved_counter)"
"), up AS ("
"  UPDATE morango.store s SET"
"    serialized = CASE WHEN s.hard_deleted OR cf.hard_deleted THEN '{}'::jsonb ELSE s.serialized END,"
"    conflicting_serialized_data ="
"      CASE WHEN s.hard_deleted OR cf.hard_deleted THEN '[]'::jsonb"
"           ELSE morango.conflict_history(cf.serialized, s.conflicting_serialized_data) END,"
"    deleted = s.deleted OR cf.deleted,"
"    hard_deleted = s.hard_deleted OR cf.hard_deleted,"
"    last_saved_instance = $2, last_saved_counter = $3, last_transfer_session_id = $1"
"  FROM cf WHERE s.id = cf.record_id"
"  RETURNING s.id, s.partition, s.profile, s.model_name, s.app_key"
/*
 * dirty: the merged record must be written; the data kept is the local
 * one, whose key is app_key (or, if the record was dirty already, what it
 * was then)
 */
"), dirty AS ("
"  INSERT INTO morango.store_dirty AS d (profile, model_name, id, keyed)"
"  SELECT up.profile, up.model_name, up.id, up.app_key IS NOT NULL FROM up"
"  ON CONFLICT (profile, model_name, id) DO UPDATE SET keyed = d.keyed AND EXCLUDED.keyed, error = NULL"
"), rmc AS ("
"  INSERT INTO morango.record_max_counters AS r (record_id, instance_id, counter)"
"  SELECT v.record_id, v.instance_id, max(v.counter) FROM ("
"    SELECT x.record_id, x.instance_id, x.counter"
"    FROM morango.record_max_counter_buffer x JOIN up ON up.id = x.record_id"
"    WHERE x.transfer_session_id = $1"
"    UNION ALL SELECT up.id, $2, $3 FROM up"
"  ) AS v GROUP BY v.record_id, v.instance_id"
"  ON CONFLICT (record_id, instance_id)"
"  DO UPDATE SET counter = GREATEST(r.counter, EXCLUDED.counter)"
"), db AS ("
"  DELETE FROM morango.buffer b USING up"
"  WHERE b.transfer_session_id = $1 AND b.record_id = up.id"
"), dr AS ("
"  DELETE FROM morango.record_max_counter_buffer x USING up"
"  WHERE x.transfer_session_id = $1 AND x.record_id = up.id"
")"
" SELECT count(*), pg_catalog.array_agg(DISTINCT up.partition) FROM up";

/*
 * $1 ts: what is left is new records and fast-forwards; a history longer
 * than this database keeps is cut (src/history.c).
 *
 * Each record's store row is written once.  A new record takes the
 * application key receive computed for it (buffer.app_key) unless another
 * record holds it or another record of this buffer has it too (deserialize
 * then sorts them out), and is marked dirty with keyed set, so that
 * deserialize only writes it; a new hard-deleted record has nothing to
 * write and is not marked dirty.  A fast-forward keeps its key; it is
 * keyed if receive computed the same key.  No other transaction inserts
 * store rows meanwhile (the instance lock, taken before this statement,
 * is held by every writer of the store), so the insert needs no ON
 * CONFLICT.
 */
static const char *forward_sql =
"WITH ins AS ("
"  INSERT INTO morango.store AS s (id, profile, model_name, partition, source_id, serialized,"
"      deleted, hard_deleted, last_saved_instance, last_saved_counter,"
"      conflicting_serialized_data, last_transfer_session_id, app_key)"
"  SELECT b.record_id, b.profile, b.model_name, b.partition, b.source_id, b.serialized,"
"         b.deleted, b.hard_deleted, b.last_saved_instance, b.last_saved_counter,"
"         morango.conflict_history(NULL, b.conflicting_serialized_data), $1,"
"         CASE WHEN b.app_key IS NOT NULL"
"               AND count(*) OVER (PARTITION BY b.profile, b.model_name, b.app_key) = 1"
"               AND NOT EXISTS (SELECT 1 FROM morango.store o"
"                               WHERE o.profile = b.profile AND o.model_name = b.model_name"
"                                 AND o.app_key = b.app_key)"
"              THEN b.app_key END"
"  FROM morango.buffer b WHERE b.transfer_session_id = $1"
"    AND NOT EXISTS (SELECT 1 FROM morango.store o WHERE o.id = b.record_id)"
"  RETURNING s.id, s.profile, s.model_name, s.app_key, s.hard_deleted"
"), upd AS ("
"  UPDATE morango.store s SET"
"    serialized = b.serialized,"
"    deleted = b.deleted,"
"    hard_deleted = b.hard_deleted,"
"    last_saved_instance = b.last_saved_instance,"
"    last_saved_counter = b.last_saved_counter,"
"    conflicting_serialized_data = morango.conflict_history(NULL, b.conflicting_serialized_data),"
"    last_transfer_session_id = b.transfer_session_id"
"  FROM morango.buffer b WHERE b.transfer_session_id = $1 AND s.id = b.record_id"
"  RETURNING s.id, s.profile, s.model_name, COALESCE(b.app_key = s.app_key, false) AS keyed"
"), rmc AS ("
"  INSERT INTO morango.record_max_counters AS r (record_id, instance_id, counter)"
"  SELECT x.record_id, x.instance_id, x.counter"
"  FROM morango.record_max_counter_buffer x"
"  JOIN (SELECT id FROM ins UNION ALL SELECT id FROM upd) AS up ON up.id = x.record_id"
"  WHERE x.transfer_session_id = $1"
"  ON CONFLICT (record_id, instance_id)"
"  DO UPDATE SET counter = GREATEST(r.counter, EXCLUDED.counter)"
"), dirty AS ("
"  INSERT INTO morango.store_dirty AS d (profile, model_name, id, keyed)"
"  SELECT ins.profile, ins.model_name, ins.id, ins.app_key IS NOT NULL FROM ins"
"  WHERE NOT ins.hard_deleted"
"  UNION ALL SELECT upd.profile, upd.model_name, upd.id, upd.keyed FROM upd"
"  ON CONFLICT (profile, model_name, id) DO UPDATE SET keyed = EXCLUDED.keyed, error = NULL"
")"
" SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upd)";


/*
 * morango_dequeue_internal
 *		Merge the incoming buffer of transfer session ts into the store.
 *		This side must be the receiver, every record must have arrived
 *		(records_transferred = records_total), and the session must not
 *		have been dequeued before.  Fills counts[4] with (new,
 *		fast-forwards, conflicts, ignored).  Runs inside SPI, in the
 *		caller's transaction (all or nothing).
 */
void
morango_dequeue_internal(Datum ts, int64 *counts)
{
	Oid			t1[1] = {UUIDOID};
	char	   *tsname = DatumGetCString(DirectFunctionCall1(uuid_out, ts));
	MorangoTransfer *t;
	pg_uuid_t  *instance;
	int64		counter;
	Datum		conflict_parts;
	bool		conflict_parts_null;

	memset(counts, 0, sizeof(int64) * 4);

	t = morango_transfer_fetch(ts);
	if (!t->receiver)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this side sends in transfer session %s; only the receiver dequeues", tsname)));
	if (!t->active || morango_transfer_past(t, MORANGO_STAGE_DESERIALIZING))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("transfer session %s was dequeued already", tsname)));
	if (t->records_total >= 0 && t->records_transferred > t->records_total)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("transfer session %s received " INT64_FORMAT " records, more than the " INT64_FORMAT " sent",
						tsname, t->records_transferred, t->records_total)));
	if (t->records_total < 0 || t->records_transferred != t->records_total)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("transfer session %s is incomplete: " INT64_FORMAT " of %s records arrived",
						tsname, t->records_transferred,
						t->records_total < 0 ? "?" : psprintf(INT64_FORMAT, t->records_total)),
				 errhint("Finish the transfer before dequeuing.")));
	if (t->remote_fsic == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("transfer session %s has no FSIC from the sender", tsname)));

	/* a transfer that sent nothing (a no-op sync) only raises the counters */
	conflict_parts = (Datum) 0;
	conflict_parts_null = true;
	if (t->records_total == 0)
		goto claims;

	/* 1. what we already have */
	morango_spi_exec(ignore_sql, 1, t1, &ts, NULL, SPI_OK_SELECT);
	counts[3] = morango_spi_int8(1);

	/* 2. conflicts, under a new local counter taken under the instance lock */
	counter = morango_next_counter(&instance);
	morango_spi_exec(conflict_sql, 3, (Oid[]) {UUIDOID, UUIDOID, INT8OID},
					 (Datum[]) {ts, UUIDPGetDatum(instance), Int64GetDatum(counter)},
					 NULL, SPI_OK_SELECT);
	counts[2] = morango_spi_int8(1);
	conflict_parts = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &conflict_parts_null);
	if (!conflict_parts_null)
		conflict_parts = PointerGetDatum(PG_DETOAST_DATUM_COPY(conflict_parts));
	if (counts[2] > 0)
	{
		/* the new version exists now: advance the counter, and own it */
		morango_counter_used(instance, counter);
		morango_raise_own_max_counters(instance, counter, t->profile, false, (Datum) 0, true);
	}

	/* 3. new records and fast-forwards */
	morango_spi_exec(forward_sql, 1, t1, &ts, NULL, SPI_OK_SELECT);
	counts[0] = morango_spi_int8(1);
	counts[1] = morango_spi_int8(2);
	/* deserialize's plans need to know how many records wait (session.c) */
	morango_analyze_store(counts[0] + counts[1]);

claims:
	morango_fault("dequeue");

	/* 4. we now hold what the sender held, for this filter */
	morango_raise_claimed_max_counters(morango_fsic_expand(t->remote_fsic, t->prefixes, t->nfilter),
									   t->profile, ts, t->filter, conflict_parts, conflict_parts_null);

	/* what was merged leaves the buffer (transfer.c empties buffers) */
	morango_transfer_clear_buffers(ts);

	{
		MorangoTransferUpdate u = MORANGO_TRANSFER_KEEP;

		u.conflicts = counts[2];
		u.records_dequeued = counts[0] + counts[1] + counts[2] + counts[3];
		morango_transfer_transition(t, MORANGO_STAGE_DESERIALIZING, MORANGO_STATUS_PENDING, &u);
	}
}

/*
 * morango.dequeue(transfer_session uuid, OUT new bigint, OUT fast_forwards
 *                 bigint, OUT conflicts bigint, OUT ignored bigint)
 */
Datum
morango_dequeue(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	int64		counts[4];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	morango_spi_connect();
	morango_dequeue_internal(PG_GETARG_DATUM(0), counts);
	SPI_finish();
	for (int i = 0; i < 4; i++)
		values[i] = Int64GetDatum(counts[i]);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
