/*-------------------------------------------------------------------------
 *
 * serialize.c
 *		Step 2 of a record's path: stamp pending store rows with a version.
 *
 * morango.serialize(profile, filter) locks the current instance row, takes
 * one new counter, stamps every pending store row in scope with (instance
 * id, counter), raises the records' max counters, and records this
 * instance's database max counter for each filter prefix (Morango's
 * _serialize_into_store, steps 3-6, done in three set-based statements).
 *
 * Commit order.  The instance row stays locked until the calling
 * transaction ends, so counters are handed out in commit order: a counter
 * becomes visible (in the store and in the database max counters) only
 * together with every row stamped with it, and no later-committing
 * transaction can stamp a lower counter.  A store row that another
 * transaction is changing right now is skipped (FOR UPDATE SKIP LOCKED);
 * it stays pending and gets a later counter, so serialize never waits for
 * application transactions and cannot deadlock with them.  See
 * doc/design.md, "Counters and commit order".
 *
 * IDENTIFICATION
 *		src/serialize.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

#include "morango.h"

PG_FUNCTION_INFO_V1(morango_serialize);

static const char *stamp_sql =
"WITH p AS ("
"  SELECT id FROM morango.store"
"  WHERE pending IS NOT NULL"
"    AND ($1::text IS NULL OR profile = $1)"
"    AND ($2::text[] IS NULL OR EXISTS"
"         (SELECT 1 FROM pg_catalog.unnest($2::text[]) AS f(prefix)"
"          WHERE pg_catalog.starts_with(partition, f.prefix)))"
"  FOR UPDATE SKIP LOCKED"
"), u AS ("
"  UPDATE morango.store AS s SET"
"    serialized = CASE WHEN s.pending = 'hard_delete' THEN '{}'::jsonb"
"                      ELSE COALESCE(s.serialized, '{}'::jsonb)"
"                           || COALESCE(s.pending_serialized, '{}'::jsonb) END,"
"    deleted = s.pending <> 'update',"
"    hard_deleted = s.pending = 'hard_delete',"
"    conflicting_serialized_data = CASE WHEN s.pending = 'hard_delete' THEN '[]'::jsonb"
"                                       ELSE s.conflicting_serialized_data END,"
"    last_saved_instance = $3,"
"    last_saved_counter = $4,"
"    pending = NULL,"
"    pending_serialized = NULL,"
"    last_transfer_session_id = NULL"
"  FROM p WHERE s.id = p.id"
"  RETURNING s.id"
")"
" INSERT INTO morango.record_max_counters AS r (record_id, instance_id, counter)"
" SELECT id, $3, $4 FROM u"
" ON CONFLICT (record_id, instance_id)"
" DO UPDATE SET counter = GREATEST(r.counter, EXCLUDED.counter)";

static const char *dmc_sql =
"INSERT INTO morango.database_max_counters AS d (instance_id, partition, counter)"
" SELECT DISTINCT $1, f.prefix, $2 FROM pg_catalog.unnest($3::text[]) AS f(prefix)"
" ON CONFLICT (instance_id, partition)"
" DO UPDATE SET counter = GREATEST(d.counter, EXCLUDED.counter)";

/*
 * morango_serialize_internal
 *		Stamp pending rows of `profile` (NULL: all) whose partition starts
 *		with one of `filter` (NULL: all).  Returns the number of rows
 *		stamped.  Must run inside SPI; leaves the instance row locked until
 *		the transaction ends.
 */
int64
morango_serialize_internal(Datum profile, bool profile_null,
						   Datum filter, bool filter_null)
{
	int			ret;
	bool		isnull;
	Datum		instance;
	int64		counter;
	int64		stamped;
	Oid			argtypes[4] = {TEXTOID, TEXTARRAYOID, UUIDOID, INT8OID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	pg_uuid_t  *inst_copy;

	ret = SPI_execute("SELECT instance_id, counter FROM morango.lock_instance()", false, 0);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not lock the morango instance row");
	instance = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	inst_copy = palloc(sizeof(pg_uuid_t));
	memcpy(inst_copy, DatumGetUUIDP(instance), sizeof(pg_uuid_t));
	counter = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

	values[0] = profile;
	nulls[0] = profile_null ? 'n' : ' ';
	values[1] = filter;
	nulls[1] = filter_null ? 'n' : ' ';
	values[2] = UUIDPGetDatum(inst_copy);
	values[3] = Int64GetDatum(counter + 1);
	ret = SPI_execute_with_args(stamp_sql, 4, argtypes, values, nulls, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
	stamped = (int64) SPI_processed;

	if (stamped > 0)
	{
		Oid			t2[2] = {UUIDOID, INT8OID};

		counter++;
		ret = SPI_execute_with_args("UPDATE morango.instances SET counter = $2 WHERE id = $1",
									2, t2, &values[2], NULL, false, 0);
		if (ret != SPI_OK_UPDATE || SPI_processed != 1)
			elog(ERROR, "could not advance the morango instance counter");
	}

	/*
	 * This database holds every version this instance ever wrote up to
	 * `counter` (we hold the lock: every earlier counter is committed), so
	 * record that for each prefix of the filter ('' when unfiltered).
	 */
	if (counter > 0)
	{
		Oid			t3[3] = {UUIDOID, INT8OID, TEXTARRAYOID};
		Datum		v3[3];

		v3[0] = UUIDPGetDatum(inst_copy);
		v3[1] = Int64GetDatum(counter);
		if (filter_null)
		{
			Datum		empty = CStringGetTextDatum("");

			v3[2] = PointerGetDatum(construct_array(&empty, 1, TEXTOID, -1, false, TYPALIGN_INT));
		}
		else
			v3[2] = filter;
		ret = SPI_execute_with_args(dmc_sql, 3, t3, v3, NULL, false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
	}
	return stamped;
}

/*
 * morango.serialize(profile text DEFAULT NULL, filter text[] DEFAULT NULL)
 *		-> bigint: number of store rows stamped.
 */
Datum
morango_serialize(PG_FUNCTION_ARGS)
{
	int64		stamped;

	if (!PG_ARGISNULL(1))
		morango_check_filter(PG_GETARG_ARRAYTYPE_P(1));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	stamped = morango_serialize_internal(PG_GETARG_DATUM(0), PG_ARGISNULL(0),
										 PG_GETARG_DATUM(1), PG_ARGISNULL(1));
	SPI_finish();
	PG_RETURN_INT64(stamped);
}
