/*-------------------------------------------------------------------------
 *
 * capture.c
 *		Step 1 of a record's path: the row trigger on registered tables
 *		notes which rows changed, in morango.changes.
 *
 * The trigger is a hot path, so it does the least that keeps the change:
 * it computes the row's application key (its primary key as a jsonb
 * array, the same text morango.store.app_key holds) and appends
 * (table, key, hard delete?) to morango.changes with a direct heap insert:
 * no SPI, no SQL, no index.  Everything else (the row's jsonb, partition,
 * source id, record id, version) is done by serialize.c for all pending
 * changes at once, set-based, when it stamps them with one counter under
 * the instance lock: that is what keeps counters in commit order.
 *
 * While deserialize.c writes application tables it tells us which keys it
 * is writing; changes to those rows are not captured (no echo).  Every
 * other change made meanwhile (cascades, application triggers) is.
 *
 * IDENTIFICATION
 *		src/capture.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "morango.h"

PG_FUNCTION_INFO_V1(morango_capture_trigger);
PG_FUNCTION_INFO_V1(morango_hard_delete_key);
PG_FUNCTION_INFO_V1(morango_hard_delete_record);

/* columns of morango.changes */
#define Natts_changes			3
#define Anum_changes_model		1
#define Anum_changes_key		2
#define Anum_changes_hard		3

/* What the trigger needs to know about one table's primary key. */
typedef struct CaptureEntry
{
	Oid			relid;			/* hash key */
	bool		valid;
	int			npk;
	AttrNumber *pk_attnums;
	FmgrInfo   *to_jsonb;		/* one to_jsonb() call per key column */
	bool		pin;			/* key text depends on settings: pin them */
} CaptureEntry;

static HTAB *capture_cache = NULL;
static Oid	changes_relid = InvalidOid;

/* keys a deserialize.c statement is writing right now; NULL otherwise */
static HTAB *deserializing_keys = NULL;

/*
 * Relcache callback: forget what we know of a table whose definition
 * changed (or of every table, on a global invalidation).
 */
static void
capture_relcache_callback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	CaptureEntry *entry;

	(void) arg;
	if (relid == InvalidOid || relid == changes_relid)
		changes_relid = InvalidOid;
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
 * Does to_jsonb() of a value of this type print the same whatever the
 * session's settings (TimeZone, DateStyle, IntervalStyle,
 * extra_float_digits, bytea_output)?  Conservative: types not listed are
 * taken to depend on them.
 */
static bool
settings_independent(Oid type)
{
	switch (getBaseType(type))
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
		case NUMERICOID:
		case BOOLOID:
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
		case NAMEOID:
		case CHAROID:
		case UUIDOID:
		case DATEOID:
		case TIMESTAMPOID:
		case TIMEOID:
			return true;
		default:
			return false;
	}
}

/*
 * Find or build the cache entry of rel: its primary key columns and a
 * to_jsonb() call set up for each one's type.
 */
static CaptureEntry *
capture_get_entry(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	CaptureEntry *entry;
	bool		found;
	Oid			pkoid;
	Relation	idx;
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
		/* the old FmgrInfos and arrays stay allocated; tables rarely change */
	}
	entry->valid = false;

	pkoid = RelationGetPrimaryKeyIndex(rel);
	if (!OidIsValid(pkoid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("table \"%s\" is registered with morango but has no primary key",
						RelationGetRelationName(rel)),
				 errhint("Add the primary key back, or unregister the table.")));

	idx = index_open(pkoid, AccessShareLock);
	old = MemoryContextSwitchTo(CacheMemoryContext);
	entry->npk = idx->rd_index->indnkeyatts;
	entry->pk_attnums = palloc(sizeof(AttrNumber) * entry->npk);
	entry->to_jsonb = palloc(sizeof(FmgrInfo) * entry->npk);
	entry->pin = false;
	for (int i = 0; i < entry->npk; i++)
	{
		AttrNumber	att = idx->rd_index->indkey.values[i];
		Form_pg_attribute attr = TupleDescAttr(RelationGetDescr(rel), att - 1);

		entry->pk_attnums[i] = att;
		if (!settings_independent(attr->atttypid))
			entry->pin = true;
		fmgr_info_cxt(F_TO_JSONB, &entry->to_jsonb[i], CacheMemoryContext);
		/* to_jsonb(anyelement) learns its argument's type from fn_expr */
		entry->to_jsonb[i].fn_expr = (Node *)
			makeFuncExpr(F_TO_JSONB, JSONBOID,
						 list_make1(makeNullConst(attr->atttypid, attr->atttypmod,
												  attr->attcollation)),
						 InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
	}
	MemoryContextSwitchTo(old);
	index_close(idx, AccessShareLock);
	entry->relid = relid;
	entry->valid = true;
	return entry;
}

/*
 * The application key of a row: its primary key values as a jsonb array,
 * in jsonb's text form ("[5]", "[1, \"a\"]"), exactly what
 * pg_catalog.jsonb_build_array(key columns)::text gives in SQL.
 */
static char *
row_app_key(CaptureEntry *entry, TupleDesc desc, HeapTuple tuple)
{
	StringInfoData buf;
	int			nestlevel = entry->pin ? morango_pin_settings(false) : 0;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (int i = 0; i < entry->npk; i++)
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, entry->pk_attnums[i], desc, &isnull);

		if (i > 0)
			appendStringInfoString(&buf, ", ");
		if (isnull)
			appendStringInfoString(&buf, "null");
		else
		{
			Jsonb	   *jb = DatumGetJsonbP(FunctionCall1(&entry->to_jsonb[i], d));

			(void) JsonbToCString(&buf, &jb->root, VARSIZE(jb));
		}
	}
	appendStringInfoChar(&buf, ']');
	if (entry->pin)
		morango_unpin_settings(nestlevel);
	return buf.data;
}

/* hash of (table, key) for the set of keys deserialize is writing */
static uint64
key_hash(Oid relid, const char *key)
{
	uint64		h = hash_bytes_extended((const unsigned char *) key, strlen(key), relid);

	return h;
}

/*
 * morango_capture_deserializing_push / _add / _pop
 *		deserialize.c announces the keys one statement of its own is about
 *		to write, so that the trigger does not note those writes as local
 *		changes (rows that statement changes by cascade are still noted).
 *		_push starts an empty set and returns the previous one (nested
 *		deserializes are allowed); _pop restores it.  Call _pop on error
 *		too.
 */
void *
morango_capture_deserializing_push(void)
{
	HTAB	   *previous = deserializing_keys;
	HASHCTL		ctl;

	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(uint64);
	ctl.hcxt = CurrentMemoryContext;
	deserializing_keys = hash_create("morango deserializing keys", 256, &ctl,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	return previous;
}

void
morango_capture_deserializing_add(Oid relid, const char *key)
{
	uint64		h = key_hash(relid, key);

	if (deserializing_keys == NULL)
		elog(ERROR, "morango: no deserializing key set");
	(void) hash_search(deserializing_keys, &h, HASH_ENTER, NULL);
}

void
morango_capture_deserializing_pop(void *previous)
{
	if (deserializing_keys)
		hash_destroy(deserializing_keys);
	deserializing_keys = (HTAB *) previous;
}

/* Is (relid, key) being written by deserialize right now? */
static bool
being_deserialized(Oid relid, const char *key)
{
	uint64		h;

	if (deserializing_keys == NULL)
		return false;
	h = key_hash(relid, key);
	return hash_search(deserializing_keys, &h, HASH_FIND, NULL) != NULL;
}

/*
 * morango_changes_relid
 *		The oid of morango.changes (cached).
 */
Oid
morango_changes_relid(void)
{
	if (!OidIsValid(changes_relid))
	{
		Oid			nsp = get_namespace_oid("morango", false);

		changes_relid = get_relname_relid("changes", nsp);
		if (!OidIsValid(changes_relid))
			elog(ERROR, "table morango.changes does not exist");
	}
	return changes_relid;
}

/*
 * Append (relid, key, hard) to morango.changes.  A plain heap insert: the
 * table has no index, constraint or trigger, and its rows are only ever
 * read and deleted by serialize.
 */
static void
record_change(Oid relid, const char *key, bool hard)
{
	Relation	rel = table_open(morango_changes_relid(), RowExclusiveLock);
	Datum		values[Natts_changes];
	bool		nulls[Natts_changes] = {false, false, false};
	HeapTuple	tup;

	values[Anum_changes_model - 1] = ObjectIdGetDatum(relid);
	values[Anum_changes_key - 1] = CStringGetTextDatum(key);
	values[Anum_changes_hard - 1] = BoolGetDatum(hard);
	tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	simple_heap_insert(rel, tup);
	heap_freetuple(tup);
	table_close(rel, RowExclusiveLock);
}

/* Capture one row version (unless deserialize is writing it). */
static void
capture_tuple(Relation rel, CaptureEntry *entry, HeapTuple tuple, bool hard)
{
	char	   *key = row_app_key(entry, RelationGetDescr(rel), tuple);

	if (!being_deserialized(RelationGetRelid(rel), key))
		record_change(RelationGetRelid(rel), key, hard);
	pfree(key);
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

/*
 * morango.capture_trigger()
 *		AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW on a registered table:
 *		note the changed key in morango.changes.  Also installed as BEFORE
 *		TRUNCATE FOR EACH STATEMENT, where it refuses the TRUNCATE.
 *
 * A DELETE while morango.hard_delete is on is noted as a hard delete.  An
 * UPDATE that changes the primary key notes the old key (deleted) and the
 * new one.
 */
Datum
morango_capture_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TriggerEvent ev;
	Relation	rel;
	CaptureEntry *entry;

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

	entry = capture_get_entry(rel);

	if (TRIGGER_FIRED_BY_INSERT(ev))
		capture_tuple(rel, entry, trigdata->tg_trigtuple, false);
	else if (TRIGGER_FIRED_BY_UPDATE(ev))
	{
		if (primary_key_changed(entry, RelationGetDescr(rel),
								trigdata->tg_trigtuple, trigdata->tg_newtuple))
			capture_tuple(rel, entry, trigdata->tg_trigtuple, morango_hard_delete_guc);
		capture_tuple(rel, entry, trigdata->tg_newtuple, false);
	}
	else if (TRIGGER_FIRED_BY_DELETE(ev))
		capture_tuple(rel, entry, trigdata->tg_trigtuple, morango_hard_delete_guc);

	return PointerGetDatum(NULL);
}

/*
 * Hard-delete store record `id` of registered model relid whose
 * application key is app_key: delete its application row (the trigger notes
 * a hard delete), or, if there is none (already deleted), note the hard
 * delete directly.  Runs inside SPI.
 */
static void
hard_delete(MorangoModel *m, const char *app_key)
{
	char	   *qualname = morango_qualified_name(m->relid);
	StringInfoData sql;
	Oid			ktypes[1] = {TEXTOID};
	Datum		kvalues[1] = {CStringGetTextDatum(app_key)};
	bool		save = morango_hard_delete_guc;
	volatile uint64 deleted = 0;	/* set inside PG_TRY, read after it */

	initStringInfo(&sql);
	appendStringInfo(&sql, "DELETE FROM ONLY %s AS t USING %s AS k WHERE %s",
					 qualname,
					 morango_key_record_sql(m, qualname, "$1::jsonb"),
					 morango_pk_equal_sql(m, "t", "k"));
	/* the delete fires the table's triggers: as its owner (owner.c) */
	morango_hard_delete_guc = true;
	PG_TRY();
	{
		deleted = morango_owner_exec(m->relid, sql.data, 1, ktypes, kvalues, NULL, SPI_OK_DELETE);
	}
	PG_FINALLY();
	{
		morango_hard_delete_guc = save;
	}
	PG_END_TRY();
	if (deleted == 0)
		record_change(m->relid, app_key, true);
}

/*
 * Find the registered model of a store record and its application key.
 * Returns NULL if there is no such record; errors if its model is not
 * registered.  Runs inside SPI.
 */
static MorangoModel *
record_model(Datum id, char **app_key)
{
	Oid			argtypes[1] = {UUIDOID};
	Datum		values[1] = {id};
	bool		isnull;
	Datum		d;
	char	   *model_name;

	if (morango_spi_query("SELECT m.model::oid, s.app_key, s.model_name"
						  " FROM morango.store s"
						  " LEFT JOIN morango.models m"
						  "   ON m.profile = s.profile AND m.model_name = s.model_name"
						  " WHERE s.id = $1",
						  1, argtypes, values, NULL, 1) == 0)
		return NULL;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	*app_key = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	model_name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("model \"%s\" of this record is not registered here", model_name),
				 errhint("Register its table with morango.register_model() first.")));
	if (*app_key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("record has no application key yet"),
				 errhint("Run morango.deserialize() first.")));
	return morango_registry_lookup(DatumGetObjectId(d), CurrentMemoryContext);
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
	MorangoModel *m;
	char	   *app_key = NULL;

	morango_spi_connect();
	m = record_model(PG_GETARG_DATUM(0), &app_key);
	if (m)
		hard_delete(m, app_key);
	SPI_finish();
	PG_RETURN_BOOL(m != NULL);
}

/*
 * morango.hard_delete(model regclass, key text) -> boolean
 *		The same, naming the record by its table and primary key value (as
 *		text; tables with a single-column key only).  False if neither an
 *		application row nor a store record has that key.
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
	bool		found = false;
	Oid			keytype;
	int32		keytypmod;
	char	   *app_key;
	int			nestlevel;

	morango_spi_connect();

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

	/* the key in app_key form, and whether a row or a record has it */
	{
		AttrNumber	att = get_attnum(relid, linitial(m->pk_columns));
		Oid			collation;

		get_atttypetypmodcoll(relid, att, &keytype, &keytypmod, &collation);
	}
	/* the key as the table's owner reads it (a domain's check may run) */
	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT k, EXISTS (SELECT 1 FROM ONLY %s AS t WHERE t.%s = CAST($1 AS %s))"
					 " FROM (SELECT pg_catalog.jsonb_build_array(CAST($1 AS %s))::text AS k) AS v",
					 morango_qualified_name(relid), quote_identifier(linitial(m->pk_columns)),
					 format_type_extended(keytype, keytypmod,
										  FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY),
					 format_type_extended(keytype, keytypmod,
										  FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY));
	values[0] = PointerGetDatum(key);
	nestlevel = morango_pin_settings(true);
	morango_owner_exec(relid, sql.data, 1, argtypes, values, NULL, SPI_OK_SELECT);
	morango_unpin_settings(nestlevel);
	app_key = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	found = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2), "t") == 0;
	/* ... and whether a record has it */
	if (!found)
		found = morango_spi_exec("SELECT 1 FROM morango.store"
								 " WHERE profile = $1 AND model_name = $2 AND app_key = $3",
								 3, argtypes,
								 (Datum[]) {CStringGetTextDatum(m->profile),
								 CStringGetTextDatum(m->model_name), CStringGetTextDatum(app_key)},
								 NULL, SPI_OK_SELECT) > 0;
	if (found)
		hard_delete(m, app_key);
	SPI_finish();
	PG_RETURN_BOOL(found);
}
