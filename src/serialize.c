/*-------------------------------------------------------------------------
 *
 * serialize.c
 *		Step 2 of a record's path: turn the changes the trigger noted into
 *		store versions, all stamped with one new counter.
 *
 * morango.serialize(profile, filter) locks the current instance row, takes
 * one new counter, and then, for each registered model with changes, runs
 * one set-based statement that
 *   - reads the changed application rows as they are now (to_jsonb,
 *     partition and source id expressions) for every key in
 *     morango.changes,
 *   - writes the store: new records (id by the id rule), updates (partition
 *     and source id stay as first serialized; keys the table lacks are
 *     kept), soft deletes (the last data stays as a tombstone) and hard
 *     deletes (data and conflict history erased),
 *   - raises the records' max counters for this instance,
 *   - and consumes the changes it handled.
 * Then it records this instance's database max counter for each filter
 * prefix (Morango's _serialize_into_store, steps 3-6).
 *
 * Commit order.  The instance row stays locked until the calling
 * transaction ends, so counters are handed out in commit order: a counter
 * becomes visible (in the store and in the database max counters) only
 * together with every record stamped with it.  A change committed after
 * serialize took its snapshot is simply not seen yet: it stays in
 * morango.changes and gets a later counter.  Serialize never locks
 * application rows, so it never waits for application transactions.  See
 * doc/design.md, "Counters and commit order".
 *
 * A row whose partition or source id expression gives no value (NULL, or
 * an empty source id), or whose record id belongs to another row, is not
 * stamped: its change stays pending and a WARNING says so.  An expression
 * that raises an error holds back only its own model, with a WARNING.
 *
 * IDENTIFICATION
 *		src/serialize.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

#include "morango.h"

PG_FUNCTION_INFO_V1(morango_serialize);

/* this instance's claim, for each prefix and each profile in scope ($4; NULL: all registered) */
static const char *dmc_sql =
"INSERT INTO morango.database_max_counters AS d (profile, instance_id, partition, counter)"
" SELECT DISTINCT p.profile, $1, f.prefix, $2"
" FROM pg_catalog.unnest($3::text[]) AS f(prefix),"
"      (SELECT DISTINCT profile FROM morango.models WHERE $4::text IS NULL OR profile = $4"
"       UNION SELECT $4 WHERE $4 IS NOT NULL) AS p"
" ON CONFLICT (profile, instance_id, partition)"
" DO UPDATE SET counter = GREATEST(d.counter, EXCLUDED.counter)";

/*
 * The statement that stamps the changes of model m.  Parameters: $1 the
 * table (oid), $2 profile, $3 model name, $4 filter (text[] or NULL),
 * $5 instance id, $6 counter.  Returns one row: records stamped, rows whose
 * expressions gave no value, rows whose record id is taken.
 */
static char *
stamp_sql(MorangoModel *m)
{
	char	   *qualname = morango_qualified_name(m->relid);
	StringInfoData sql,
				key_columns,
				key_match;
	ListCell   *lc;
	int			i = 0;

	initStringInfo(&key_columns);
	initStringInfo(&key_match);
	foreach(lc, m->pk_columns)
	{
		const char *col = quote_identifier((char *) lfirst(lc));

		appendStringInfo(&key_columns, "%skr.%s AS _morango_k%d", i ? ", " : "", col, i);
		appendStringInfo(&key_match, "%st.%s = kk._morango_k%d", i ? " AND " : "", col, i);
		i++;
	}

	initStringInfo(&sql);
	appendStringInfo(&sql,
	/* the changed keys, with every change row that names them */
					 "WITH k AS ("
					 "  SELECT c.key AS _morango_key, bool_or(c.hard) AS _morango_hard,"
					 "         array_agg(c.ctid) AS _morango_cids"
					 "  FROM morango.changes c WHERE c.model = $1::regclass GROUP BY c.key"
	/* typed key values, to find the application row by its primary key */
					 "), kk AS ("
					 "  SELECT k.*, %s FROM k, %s AS kr"
	/*
	 * each key's application row (if any), read as it is now; only
	 * _morango_* names are visible from outside, so the registered
	 * expressions can only name the table's columns
	 */
					 "), rows AS ("
					 "  SELECT kk._morango_key, kk._morango_hard, kk._morango_cids, r.j, r.p, r.sid"
					 "  FROM kk LEFT JOIN LATERAL ("
					 "    SELECT pg_catalog.to_jsonb(t) AS j, (%s)::text AS p, (%s)::text AS sid"
					 "    FROM ONLY %s AS t WHERE %s"
					 "  ) AS r ON true"
	/* ... and its store record (if any) */
					 "), cur AS ("
					 "  SELECT rows._morango_key AS key, rows._morango_hard AS hard,"
					 "         rows._morango_cids AS cids, rows.j, rows.p, rows.sid,"
					 "         s.id AS store_id, s.partition AS store_partition,"
					 "         s.serialized AS old, s.deleted AS old_deleted, s.dirty_bit AS old_dirty"
					 "  FROM rows LEFT JOIN morango.store s"
					 "    ON s.profile = $2 AND s.model_name = $3 AND s.app_key = rows._morango_key"
					 "), c2 AS ("
					 "  SELECT cur.*,"
					 "         COALESCE(cur.store_id, morango.record_id(cur.p, cur.sid, $3)) AS rid,"
					 "         COALESCE(cur.store_partition, cur.p) AS part,"
					 "         (cur.store_id IS NULL AND cur.j IS NULL) AS nothing,"
					 "         (cur.store_id IS NULL AND cur.j IS NOT NULL"
					 "          AND (cur.p IS NULL OR cur.sid IS NULL OR cur.sid = '')) AS bad,"
					 "         (cur.store_id IS NOT NULL AND cur.j IS NOT NULL AND NOT cur.old_deleted"
					 "          AND NOT cur.old_dirty AND (cur.old || cur.j) = cur.old) AS unchanged"
					 "  FROM cur"
					 "), c3 AS ("
					 "  SELECT c2.*, ($4::text[] IS NULL OR morango.in_filter(c2.part, $4::text[])) AS in_scope"
					 "  FROM c2"
					 "), todo AS ("
	/*
	 * One row per record.  Two keys can name one record when a primary key
	 * changed and the source id does not depend on it: the live row wins
	 * and takes the record over.
	 */
					 "  SELECT DISTINCT ON (rid) * FROM c3"
					 "  WHERE in_scope AND NOT nothing AND NOT bad AND NOT unchanged"
					 "  ORDER BY rid, (j IS NULL), key"
	/* write the store; a new row never takes over another live row's record */
					 "), w AS ("
					 "  INSERT INTO morango.store AS s (id, profile, model_name, partition, source_id,"
					 "      app_key, serialized, deleted, hard_deleted,"
					 "      last_saved_instance, last_saved_counter)"
					 "  SELECT rid, $2, $3, part, COALESCE(sid, '-'), key, COALESCE(j, '{}'::jsonb),"
					 "         j IS NULL, j IS NULL AND hard, $5, $6"
					 "  FROM todo"
					 "  ON CONFLICT (id) DO UPDATE SET"
					 "    app_key = EXCLUDED.app_key,"
					 "    serialized = CASE WHEN EXCLUDED.hard_deleted THEN '{}'::jsonb"
					 "                      WHEN EXCLUDED.deleted THEN s.serialized"
					 "                      ELSE s.serialized || EXCLUDED.serialized END,"
					 "    deleted = EXCLUDED.deleted,"
					 "    hard_deleted = EXCLUDED.hard_deleted,"
					 "    conflicting_serialized_data ="
					 "      CASE WHEN EXCLUDED.hard_deleted THEN '[]'::jsonb"
					 "           WHEN s.dirty_bit"
					 "             THEN pg_catalog.jsonb_build_array(s.serialized) || s.conflicting_serialized_data"
					 "           ELSE s.conflicting_serialized_data END,"
					 "    dirty_bit = false,"
					 "    deserialization_error = NULL,"
					 "    last_saved_instance = EXCLUDED.last_saved_instance,"
					 "    last_saved_counter = EXCLUDED.last_saved_counter,"
					 "    last_transfer_session_id = NULL"
					 "  WHERE s.app_key IS NULL OR s.app_key = EXCLUDED.app_key OR s.deleted"
					 "     OR NOT EXISTS (SELECT 1 FROM ONLY %s AS t2, %s AS kr2 WHERE %s)"
					 "  RETURNING s.id, s.app_key"
					 "), rmc AS ("
					 "  INSERT INTO morango.record_max_counters AS r (record_id, instance_id, counter)"
					 "  SELECT id, $5, $6 FROM w"
					 "  ON CONFLICT (record_id, instance_id)"
					 "  DO UPDATE SET counter = GREATEST(r.counter, EXCLUDED.counter)"
	/* consume what was handled: written, nothing to write, or unchanged */
					 "), del AS ("
					 "  DELETE FROM morango.changes c"
					 "  WHERE c.ctid IN (SELECT pg_catalog.unnest(c3.cids) FROM c3"
					 "                   WHERE c3.nothing OR (c3.in_scope AND c3.unchanged)"
					 "                      OR c3.key IN (SELECT app_key FROM w)"
					 "                      OR c3.rid IN (SELECT id FROM w))"
					 ")"
					 " SELECT (SELECT count(*) FROM w),"
					 "        (SELECT count(*) FROM c3 WHERE bad),"
					 "        (SELECT count(*) FROM todo WHERE key NOT IN (SELECT app_key FROM w))",
					 key_columns.data,
					 morango_key_record_sql(m, qualname, "k._morango_key::jsonb"),
					 m->partition_expr, m->source_id_expr, qualname, key_match.data,
					 qualname, morango_key_record_sql(m, qualname, "s.app_key::jsonb"),
					 morango_pk_equal_sql(m, "t2", "kr2"));
	return sql.data;
}

/*
 * Stamp the changes of one model, in a subtransaction: an error (say, an
 * expression that divides by zero for some row) holds back this model
 * only.  Returns the number of records stamped; warns about rows it could
 * not stamp.
 */
typedef struct StampArgs
{
	const char *sql;
	Oid		   *argtypes;
	Datum	   *values;
	char	   *nulls;
	int64		result[3];		/* stamped, no partition/source id, id taken */
} StampArgs;

static void
stamp_run(void *arg)
{
	StampArgs  *a = (StampArgs *) arg;
	int			ret;
	bool		isnull;

	ret = SPI_execute_with_args(a->sql, 6, a->argtypes, a->values, a->nulls, false, 0);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
	for (int i = 0; i < 3; i++)
		a->result[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, i + 1, &isnull));
}

static int64
stamp_model(MorangoModel *m, Datum filter, bool filter_null, Datum instance, int64 counter)
{
	Oid			argtypes[6] = {OIDOID, TEXTOID, TEXTOID, TEXTARRAYOID, UUIDOID, INT8OID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', filter_null ? 'n' : ' ', ' ', ' '};
	StampArgs	args;
	ErrorData  *edata;
	int64		stamped,
				bad,
				taken;

	values[0] = ObjectIdGetDatum(m->relid);
	values[1] = CStringGetTextDatum(m->profile);
	values[2] = CStringGetTextDatum(m->model_name);
	values[3] = filter;
	values[4] = instance;
	values[5] = Int64GetDatum(counter);
	args.sql = stamp_sql(m);
	args.argtypes = argtypes;
	args.values = values;
	args.nulls = nulls;

	edata = morango_try(stamp_run, &args);
	if (edata != NULL)
	{
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("could not serialize the changes of morango model \"%s\": %s",
						m->model_name, edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
				 errhint("The changes stay pending; fix the rows or the registered expressions.")));
		FreeErrorData(edata);
		return 0;
	}
	stamped = args.result[0];
	bad = args.result[1];
	taken = args.result[2];

	if (bad > 0)
		ereport(WARNING,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg(INT64_FORMAT " changed rows of morango model \"%s\" have no partition or source id",
						bad, m->model_name),
				 errdetail("The partition expression gave NULL or the source_id expression gave NULL or ''."),
				 errhint("The changes stay pending; fix the rows or re-register the table.")));
	if (taken > 0)
		ereport(WARNING,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg(INT64_FORMAT " changed rows of morango model \"%s\" have the record id of another row",
						taken, m->model_name),
				 errdetail("Their partition and source id are those of a row already in the store."),
				 errhint("The source_id expression must be unique within a partition; the changes stay pending.")));
	return stamped;
}

/*
 * morango_serialize_internal
 *		Stamp the changes of `profile` (NULL: all) whose partition starts
 *		with one of `filter` (NULL: all).  Returns the number of records
 *		stamped.  Must run inside SPI; leaves the instance row locked until
 *		the transaction ends.
 */
int64
morango_serialize_internal(Datum profile, bool profile_null,
						   Datum filter, bool filter_null)
{
	int			ret;
	bool		isnull;
	pg_uuid_t  *instance;
	int64		counter;
	int64		stamped = 0;
	List	   *models;
	ListCell   *lc;
	int			nestlevel;

	instance = morango_lock_instance(&counter);

	/* the models of the profile that have changes */
	{
		Oid			argtypes[1] = {TEXTOID};
		Datum		values[1] = {profile};
		char		nulls[1] = {profile_null ? 'n' : ' '};

		ret = SPI_execute_with_args("SELECT DISTINCT c.model::oid FROM morango.changes c"
									" JOIN morango.models m ON m.model = c.model"
									" WHERE $1::text IS NULL OR m.profile = $1",
									1, argtypes, values, nulls, true, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
		models = NIL;
		for (uint64 i = 0; i < SPI_processed; i++)
			models = lappend_oid(models,
								 DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
																SPI_tuptable->tupdesc, 1, &isnull)));
	}

	/* registered expressions are parsed and run under a pinned search_path */
	nestlevel = morango_pin_settings(true);
	foreach(lc, models)
	{
		MorangoModel *m = morango_registry_lookup(lfirst_oid(lc), CurrentMemoryContext);

		CHECK_FOR_INTERRUPTS();
		if (m != NULL)
			stamped += stamp_model(m, filter, filter_null, UUIDPGetDatum(instance), counter + 1);
	}
	morango_unpin_settings(nestlevel);
	morango_analyze_store(stamped);

	if (stamped > 0)
	{
		Oid			t2[2] = {UUIDOID, INT8OID};
		Datum		v2[2] = {UUIDPGetDatum(instance), Int64GetDatum(counter + 1)};

		counter++;
		ret = SPI_execute_with_args("UPDATE morango.instances SET counter = $2 WHERE id = $1",
									2, t2, v2, NULL, false, 0);
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
		Oid			t3[4] = {UUIDOID, INT8OID, TEXTARRAYOID, TEXTOID};
		Datum		v3[4];
		char		n3[4] = {' ', ' ', ' ', profile_null ? 'n' : ' '};

		v3[0] = UUIDPGetDatum(instance);
		v3[1] = Int64GetDatum(counter);
		if (filter_null)
		{
			Datum		empty = CStringGetTextDatum("");

			v3[2] = PointerGetDatum(construct_array(&empty, 1, TEXTOID, -1, false, TYPALIGN_INT));
		}
		else
			v3[2] = filter;
		v3[3] = profile;
		ret = SPI_execute_with_args(dmc_sql, 4, t3, v3, n3, false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
	}
	morango_fault("serialize");
	return stamped;
}

/*
 * morango.serialize(profile text DEFAULT NULL, filter text[] DEFAULT NULL)
 *		-> bigint: number of records stamped.
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
