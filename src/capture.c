/*-------------------------------------------------------------------------
 *
 * capture.c
 *		Step 1 of a record's path: the row trigger on registered tables puts
 *		each change into the store as *pending*.
 *
 * The trigger does the jsonb work eagerly (to_jsonb of the row, partition,
 * source id, record id) and leaves the store row marked pending; it never
 * touches counters.  serialize.c later stamps every pending row with one
 * new counter under a lock, so that counters follow commit order.
 *
 * One SQL statement does the whole store write (an upsert keyed by the
 * application key), prepared once per table and backend and kept in a
 * cache invalidated by relcache callbacks.  It runs with the extension
 * owner's rights and a pinned search_path, so application roles need no
 * privileges on morango's tables and cannot hijack the registered
 * expressions.
 *
 * Deserialization writes application tables too; those writes must not be
 * captured again (no echo).  deserialize.c tells us the trigger depth of
 * its own statements; changes made deeper (cascaded by foreign keys) are
 * still captured.
 *
 * IDENTIFICATION
 *		src/capture.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "morango.h"

PG_FUNCTION_INFO_V1(morango_capture_trigger);
PG_FUNCTION_INFO_V1(morango_hard_delete_key);
PG_FUNCTION_INFO_V1(morango_hard_delete_record);
PG_FUNCTION_INFO_V1(morango_expression_failed);

/* One cache entry per registered table seen by this backend. */
typedef struct CaptureEntry
{
	Oid			relid;			/* hash key */
	bool		valid;
	SPIPlanPtr	plan;			/* the store upsert, SPI_keepplan'd */
	char	   *profile;		/* in CacheMemoryContext */
	char	   *model_name;
	int			npk;
	AttrNumber *pk_attnums;
} CaptureEntry;

static HTAB *capture_cache = NULL;

/* the extension owner, looked up once per backend */
static Oid	extension_owner = InvalidOid;

/* true while deserialize.c writes application tables */
static bool deserializing = false;

/*
 * Relcache callback: forget the cached plan of a table whose definition
 * changed (or of every table, on a global invalidation).
 */
static void
capture_relcache_callback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	CaptureEntry *entry;

	if (capture_cache == NULL)
		return;
	hash_seq_init(&status, capture_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (relid == InvalidOid || entry->relid == relid)
			entry->valid = false;
	}
}

/*
 * morango_capture_init
 *		Called from _PG_init: register the cache invalidation callback.
 */
void
morango_capture_init(void)
{
	CacheRegisterRelcacheCallback(capture_relcache_callback, (Datum) 0);
}

/*
 * morango_capture_deserializing
 *		Set whether deserialize.c is writing application tables; returns the
 *		previous setting.  While it is, the trigger leaves alone rows whose
 *		store record is dirty (a version from a peer being written: no echo)
 *		and still records every other change (cascades, application
 *		triggers).
 */
bool
morango_capture_deserializing(bool on)
{
	bool		old = deserializing;

	deserializing = on;
	return old;
}

/*
 * morango_capture_sql
 *		The statement that records rows of model m in the store as pending.
 *
 * rowsource is a FROM item that yields the application rows under the alias
 * t: "(SELECT ($1).*) AS t" for the trigger (one row, passed as $1), or the
 * table itself for the initial load at registration.  Parameters: $1 the
 * row (may be unused), $2 profile, $3 model name, $4 the pending kind
 * ('update', 'delete' or 'hard_delete').
 *
 * A row that is already in the store (same application key) keeps its
 * record id (partition and source id are frozen at the first
 * serialization) and gets its pending change replaced; a new row gets the
 * id of the id rule.  If the store held a version received from a peer
 * that was not yet written to the application table, that version moves
 * to the conflict history (the local change wins, Morango's rule).
 *
 * A new row whose id belongs to another live row's record is not recorded
 * (the statement reports 0 rows): the caller raises the error.
 */
char *
morango_capture_sql(MorangoModel *m, const char *rowsource)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "INSERT INTO morango.store AS s"
					 " (id, profile, model_name, partition, source_id, app_key, pending, pending_serialized)"
					 " SELECT COALESCE((SELECT o.id FROM morango.store o"
					 "                  WHERE o.profile = $2 AND o.model_name = $3 AND o.app_key = c.k),"
					 "                 morango.record_id(c.p, c.sid, $3)),"
					 "        $2, $3, c.p, c.sid, c.k, $4,"
					 "        CASE WHEN $4 = 'hard_delete' THEN NULL ELSE c.j END"
					 " FROM (SELECT j, p, sid, %s AS k FROM"
					 "        (SELECT pg_catalog.to_jsonb(t) AS j,"
					 "                COALESCE((%s)::text, morango.expression_failed('partition', $3)) AS p,"
					 "                COALESCE(NULLIF((%s)::text, ''), morango.expression_failed('source_id', $3)) AS sid"
					 "         FROM %s) AS r) AS c"
					 " WHERE NOT ($5 AND EXISTS (SELECT 1 FROM morango.store d"
					 "                           WHERE d.profile = $2 AND d.model_name = $3"
					 "                             AND d.app_key = c.k AND d.dirty_bit))"
					 " ON CONFLICT (id) DO UPDATE SET"
					 "  app_key = EXCLUDED.app_key,"
					 "  pending = EXCLUDED.pending,"
					 "  pending_serialized = EXCLUDED.pending_serialized,"
					 "  conflicting_serialized_data ="
					 "    CASE WHEN s.dirty_bit AND s.serialized IS NOT NULL"
					 "         THEN pg_catalog.jsonb_build_array(s.serialized) || s.conflicting_serialized_data"
					 "         ELSE s.conflicting_serialized_data END,"
					 "  dirty_bit = false,"
					 "  deserialization_error = NULL"
					 " WHERE s.app_key IS NULL OR s.app_key = EXCLUDED.app_key"
					 "    OR s.deleted OR s.pending IN ('delete', 'hard_delete')",
					 morango_app_key_sql(m->pk_columns, "r.j"),
					 m->partition_expr, m->source_id_expr, rowsource);
	return buf.data;
}

/* error context: which table's change we were recording */
static void
capture_error_callback(void *arg)
{
	CaptureEntry *entry = (CaptureEntry *) arg;

	errcontext("recording a change of morango model \"%s\" (profile \"%s\")",
			   entry->model_name, entry->profile);
}

/*
 * Find or build the cache entry of rel.  Must run inside SPI, as the
 * extension owner and with the pinned search_path.
 */
static CaptureEntry *
capture_get_entry(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	CaptureEntry *entry;
	bool		found;
	MorangoModel *m;
	char	   *sql;
	Oid			argtypes[5];
	SPIPlanPtr	plan;
	MemoryContext old;

	if (capture_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(CaptureEntry);
		capture_cache = hash_create("morango capture cache", 32, &ctl,
									HASH_ELEM | HASH_BLOBS);
	}

	entry = hash_search(capture_cache, &relid, HASH_ENTER, &found);
	if (found && entry->valid)
		return entry;
	if (found)
	{
		if (entry->plan)
			SPI_freeplan(entry->plan);
		if (entry->profile)
			pfree(entry->profile);
		if (entry->model_name)
			pfree(entry->model_name);
		if (entry->pk_attnums)
			pfree(entry->pk_attnums);
	}
	entry->valid = false;
	entry->plan = NULL;
	entry->profile = NULL;
	entry->model_name = NULL;
	entry->pk_attnums = NULL;

	m = morango_registry_lookup(relid, CurrentMemoryContext);
	if (m == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" has a morango trigger but is not registered",
						RelationGetRelationName(rel)),
				 errhint("Drop the trigger, or register the table with morango.register_model().")));

	sql = morango_capture_sql(m, "(SELECT ($1).*) AS t");
	argtypes[0] = rel->rd_rel->reltype;
	argtypes[1] = TEXTOID;
	argtypes[2] = TEXTOID;
	argtypes[3] = TEXTOID;
	argtypes[4] = BOOLOID;

	plan = SPI_prepare(sql, 5, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);

	old = MemoryContextSwitchTo(CacheMemoryContext);
	entry->profile = pstrdup(m->profile);
	entry->model_name = pstrdup(m->model_name);
	entry->npk = list_length(m->pk_columns);
	entry->pk_attnums = palloc(sizeof(AttrNumber) * entry->npk);
	MemoryContextSwitchTo(old);
	for (int i = 0; i < entry->npk; i++)
	{
		char	   *col = list_nth(m->pk_columns, i);

		entry->pk_attnums[i] = get_attnum(relid, col);
		if (entry->pk_attnums[i] == InvalidAttrNumber)
			elog(ERROR, "primary key column \"%s\" of \"%s\" not found",
				 col, RelationGetRelationName(rel));
	}
	entry->plan = plan;
	entry->valid = true;
	return entry;
}

/* Did an UPDATE change the primary key?  (binary comparison) */
static bool
primary_key_changed(CaptureEntry *entry, TupleDesc desc, HeapTuple oldtup, HeapTuple newtup)
{
	for (int i = 0; i < entry->npk; i++)
	{
		AttrNumber	att = entry->pk_attnums[i];
		Form_pg_attribute attr = TupleDescAttr(desc, att - 1);
		bool		n1,
					n2;
		Datum		d1 = heap_getattr(oldtup, att, desc, &n1);
		Datum		d2 = heap_getattr(newtup, att, desc, &n2);

		if (n1 != n2)
			return true;
		if (!n1 && !datum_image_eq(d1, d2, attr->attbyval, attr->attlen))
			return true;
	}
	return false;
}

/* Execute the cached upsert for one row with the given pending kind. */
static void
capture_row(CaptureEntry *entry, TupleDesc desc, HeapTuple tuple, const char *kind)
{
	Datum		values[5];
	int			ret;

	values[0] = heap_copy_tuple_as_datum(tuple, desc);
	values[1] = CStringGetTextDatum(entry->profile);
	values[2] = CStringGetTextDatum(entry->model_name);
	values[3] = CStringGetTextDatum(kind);
	values[4] = BoolGetDatum(deserializing);

	ret = SPI_execute_plan(entry->plan, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "capture statement failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0 && !deserializing)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("this row of morango model \"%s\" has the record id of another row",
						entry->model_name),
				 errdetail("Its partition and source id are those of a row already in the store."),
				 errhint("The source_id expression must be unique within a partition.")));
}

/*
 * morango.capture_trigger()
 *		AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW on a registered table:
 *		record the change in the store as pending.  Also installed as
 *		BEFORE TRUNCATE FOR EACH STATEMENT, where it refuses the TRUNCATE.
 */
Datum
morango_capture_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TriggerEvent ev;
	Relation	rel;
	TupleDesc	desc;
	CaptureEntry *entry;
	Oid			save_userid;
	int			save_sec_context;
	int			nestlevel;
	ErrorContextCallback errcallback;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("morango.capture_trigger() was not called by the trigger manager")));

	ev = trigdata->tg_event;
	rel = trigdata->tg_relation;

	if (TRIGGER_FIRED_BY_TRUNCATE(ev))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot truncate table \"%s\" because it is registered with morango",
						RelationGetRelationName(rel)),
				 errdetail("TRUNCATE bypasses the row triggers that record changes for sync."),
				 errhint("Use DELETE, or unregister the table with morango.unregister_model() first.")));

	if (!TRIGGER_FIRED_AFTER(ev) || !TRIGGER_FIRED_FOR_ROW(ev))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("morango.capture_trigger() must be an AFTER ROW trigger")));

	desc = RelationGetDescr(rel);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/*
	 * Read the registration and write the store as the extension owner,
	 * with a safe search_path.
	 */
	if (!OidIsValid(extension_owner))
		extension_owner = morango_extension_owner();
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(extension_owner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	nestlevel = morango_pin_search_path();

	entry = capture_get_entry(rel);

	errcallback.callback = capture_error_callback;
	errcallback.arg = entry;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	if (TRIGGER_FIRED_BY_INSERT(ev))
		capture_row(entry, desc, trigdata->tg_trigtuple, "update");
	else if (TRIGGER_FIRED_BY_UPDATE(ev))
	{
		/* a changed primary key moves the row: delete the old key's record */
		if (primary_key_changed(entry, desc, trigdata->tg_trigtuple, trigdata->tg_newtuple))
			capture_row(entry, desc, trigdata->tg_trigtuple,
						morango_hard_delete_guc ? "hard_delete" : "delete");
		capture_row(entry, desc, trigdata->tg_newtuple, "update");
	}
	else if (TRIGGER_FIRED_BY_DELETE(ev))
		capture_row(entry, desc, trigdata->tg_trigtuple,
					morango_hard_delete_guc ? "hard_delete" : "delete");

	morango_unpin_search_path(nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	error_context_stack = errcallback.previous;

	SPI_finish();
	return PointerGetDatum(NULL);
}

/*
 * Mark store record `id` for a hard delete and delete its application row,
 * if its table is registered and the row exists.  Returns false if there is
 * no such store record.  Runs inside SPI.
 */
static bool
hard_delete_record(Datum id)
{
	Oid			argtypes[1] = {UUIDOID};
	Datum		values[1] = {id};
	int			ret;
	Oid			relid = InvalidOid;
	char	   *app_key = NULL;
	bool		isnull;

	ret = SPI_execute_with_args("SELECT m.model::oid, s.app_key"
								" FROM morango.store s"
								" LEFT JOIN morango.models m"
								"   ON m.profile = s.profile AND m.model_name = s.model_name"
								" WHERE s.id = $1 FOR UPDATE OF s",
								1, argtypes, values, NULL, false, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return false;
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			relid = DatumGetObjectId(d);
		app_key = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	}

	/* delete the application row, if any: the trigger records a hard delete */
	if (OidIsValid(relid) && app_key != NULL)
	{
		MorangoModel *m = morango_registry_lookup(relid, CurrentMemoryContext);
		char	   *qualname = morango_qualified_name(relid);
		StringInfoData sql;
		Oid			ktypes[1] = {TEXTOID};
		Datum		kvalues[1] = {CStringGetTextDatum(app_key)};
		bool		save = morango_hard_delete_guc;

		initStringInfo(&sql);
		appendStringInfo(&sql, "DELETE FROM ONLY %s AS t USING %s AS k WHERE %s",
						 qualname,
						 morango_key_record_sql(m, qualname, "$1::jsonb"),
						 morango_pk_equal_sql(m, "t", "k"));
		morango_hard_delete_guc = true;
		PG_TRY();
		{
			ret = SPI_execute_with_args(sql.data, 1, ktypes, kvalues, NULL, false, 0);
		}
		PG_FINALLY();
		{
			morango_hard_delete_guc = save;
		}
		PG_END_TRY();
		if (ret != SPI_OK_DELETE)
			elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
	}

	/* and in any case (already deleted, or table unregistered) mark the record */
	ret = SPI_execute_with_args("UPDATE morango.store SET pending = 'hard_delete',"
								" pending_serialized = NULL, dirty_bit = false,"
								" deserialization_error = NULL"
								" WHERE id = $1",
								1, argtypes, values, NULL, false, 0);
	if (ret != SPI_OK_UPDATE)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
	return true;
}

/*
 * morango.hard_delete(record_id uuid) -> boolean
 *		Hard-delete a store record (live or already soft-deleted): its
 *		application row is deleted and, at the next serialize, its data is
 *		erased here and on every peer it syncs to.  False if no such record.
 */
Datum
morango_hard_delete_record(PG_FUNCTION_ARGS)
{
	bool		found;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	found = hard_delete_record(PG_GETARG_DATUM(0));
	SPI_finish();
	PG_RETURN_BOOL(found);
}

/*
 * morango.hard_delete(model regclass, key text) -> boolean
 *		The same, naming the record by its table and primary key value (as
 *		text; tables with a single-column key only).
 */
Datum
morango_hard_delete_key(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	text	   *key = PG_GETARG_TEXT_PP(1);
	MorangoModel *m;
	StringInfoData sql;
	Oid			argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	int			ret;
	bool		found = false;
	Oid			keytype;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	m = morango_registry_lookup(relid, CurrentMemoryContext);
	if (m == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not registered with morango", get_rel_name(relid))));
	if (list_length(m->pk_columns) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("morango.hard_delete(regclass, text) needs a single-column primary key"),
				 errhint("Use SET LOCAL morango.hard_delete = on and a DELETE statement, "
						 "or morango.hard_delete(record_id uuid).")));

	keytype = get_atttype(relid, get_attnum(relid, linitial(m->pk_columns)));
	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT id FROM morango.store"
					 " WHERE profile = $1 AND model_name = $2"
					 "   AND app_key = pg_catalog.jsonb_build_array(CAST($3 AS %s))::text",
					 format_type_be_qualified(keytype));
	values[0] = CStringGetTextDatum(m->profile);
	values[1] = CStringGetTextDatum(m->model_name);
	values[2] = PointerGetDatum(key);
	ret = SPI_execute_with_args(sql.data, 3, argtypes, values, NULL, false, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
	if (SPI_processed > 0)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		pg_uuid_t  *copy = palloc(sizeof(pg_uuid_t));

		memcpy(copy, DatumGetUUIDP(id), sizeof(pg_uuid_t));
		found = hard_delete_record(UUIDPGetDatum(copy));
	}
	SPI_finish();
	PG_RETURN_BOOL(found);
}

/*
 * morango.expression_failed(what text, model_name text) -> text
 *		Raise the error for a partition (null) or source id (null or empty)
 *		expression that gave no usable value.  The capture statement calls
 *		it only in that case, through COALESCE.
 */
Datum
morango_expression_failed(PG_FUNCTION_ARGS)
{
	char	   *what = PG_ARGISNULL(0) ? "?" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *model = PG_ARGISNULL(1) ? "?" : text_to_cstring(PG_GETARG_TEXT_PP(1));

	if (strcmp(what, "partition") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("partition expression of morango model \"%s\" is null for this row", model),
				 errhint("Use coalesce() in the partition expression, or fix the row.")));
	ereport(ERROR,
			(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
			 errmsg("source_id expression of morango model \"%s\" is null or empty for this row", model)));
	PG_RETURN_NULL();
}
