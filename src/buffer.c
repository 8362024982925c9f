/*-------------------------------------------------------------------------
 *
 * buffer.c
 *		Step 5 of a record's path: a chunk of records arriving from the
 *		producer goes into the receiver's incoming buffer, after every
 *		record in it has been validated.
 *
 * A chunk is a json array of records as morango.read_chunk() makes them
 * (see doc/protocol.md).  Nothing from a chunk lands unless all of it is
 * valid: each record must be a json object whose fields have their json
 * types (check_chunk_types), its id must follow the id rule over
 * (partition, source id, model name), its partition must lie under the transfer session's
 * filter, its profile must be the session's, its counters positive, its
 * version vector must contain its last saved version, its serialized data
 * a jsonb object ('{}' for a hard delete), and no record may appear twice.
 * No version may be one that cannot be real (check_chunk_counters): one of
 * this database's own instance above its counter, or one of the sending
 * instance above what the sender's FSIC claims for it.  And the records of
 * models registered here must have the partition their data gives
 * (verify_chunk).
 * The first bad record is named in the error.  Receiving the same chunk
 * twice (a resumed transfer) adds nothing the second time.
 *
 * IDENTIFICATION
 *		src/buffer.c
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
#include "utils/numeric.h"
#include "utils/uuid.h"

#include "morango.h"
#include "textutil.h"

PG_FUNCTION_INFO_V1(morango_receive_chunk);
PG_FUNCTION_INFO_V1(morango_version_vector_check);

/* the chunk as rows; $2 is the chunk */
#define CHUNK_ROWS \
	"SELECT * FROM pg_catalog.jsonb_to_recordset($2) AS x(" \
	"  id uuid, seq bigint, profile text, model_name text, partition text, source_id text," \
	"  serialized jsonb, deleted boolean, hard_deleted boolean," \
	"  last_saved_instance uuid, last_saved_counter bigint," \
	"  conflicting_serialized_data jsonb, rmcs jsonb)"

/*
 * $1 ts, $2 chunk, $3 profile, $4 filter, $5 and $6 the application keys of
 * records (chunk_keys): one pass over the chunk.  The first bad record, if
 * any, is returned and then nothing is inserted; otherwise the records not
 * buffered yet are inserted with their keys, and their number returned.
 */
static const char *receive_sql =
"WITH c AS MATERIALIZED (" CHUNK_ROWS "), v AS ("
"  SELECT c.id, c.seq, CASE"
"    WHEN c.id IS NULL THEN 'the record has no id'"
"    WHEN c.seq IS NULL OR c.seq <= 0 THEN 'its sequence number is missing or not positive'"
"    WHEN c.profile IS DISTINCT FROM $3 THEN 'its profile is not the session''s profile ' || pg_catalog.quote_literal($3)"
"    WHEN c.model_name IS NULL OR c.model_name = '' THEN 'it has no model name'"
"    WHEN c.partition IS NULL THEN 'it has no partition'"
"    WHEN c.source_id IS NULL OR c.source_id = '' THEN 'it has no source id'"
"    WHEN morango.record_id(c.partition, c.source_id, c.model_name) <> c.id"
"      THEN 'its id does not follow the id rule for its partition, source id and model name'"
"    WHEN NOT morango.in_filter(c.partition, $4::text[])"
"      THEN 'its partition ' || pg_catalog.quote_literal(c.partition) || ' is outside the transfer session''s filter'"
"    WHEN c.last_saved_instance IS NULL OR c.last_saved_counter IS NULL"
"      THEN 'it has no last saved version'"
"    WHEN c.last_saved_counter <= 0 THEN 'its last saved counter is not positive'"
"    WHEN c.deleted IS NULL OR c.hard_deleted IS NULL THEN 'its deleted flags are missing'"
"    WHEN c.hard_deleted AND NOT c.deleted THEN 'it is hard-deleted but not deleted'"
"    WHEN pg_catalog.jsonb_typeof(c.serialized) IS DISTINCT FROM 'object'"
"      THEN 'its serialized data is not a json object'"
"    WHEN c.hard_deleted AND c.serialized <> '{}' THEN 'it is hard-deleted but carries data'"
"    WHEN c.conflicting_serialized_data IS NOT NULL"
"         AND pg_catalog.jsonb_typeof(c.conflicting_serialized_data) <> 'array'"
"      THEN 'its conflict history is not a json array'"
"    WHEN morango.version_vector_check(c.rmcs, c.last_saved_instance, c.last_saved_counter) IS NOT NULL"
"      THEN morango.version_vector_check(c.rmcs, c.last_saved_instance, c.last_saved_counter)"
"    END AS reason"
"  FROM c"
"), dup AS ("
"  SELECT id, NULL::bigint AS seq, 'it appears more than once in the chunk' AS reason"
"  FROM c GROUP BY id HAVING count(*) > 1"
"  UNION ALL"
"  SELECT NULL, seq, 'its sequence number appears more than once in the chunk'"
"  FROM c GROUP BY seq HAVING count(*) > 1"
"  UNION ALL"
"  SELECT c.id, c.seq, 'its sequence number is taken by another record of this transfer'"
"  FROM c JOIN morango.buffer b ON b.transfer_session_id = $1 AND b.seq = c.seq"
"   AND b.record_id <> c.id"
"), bad AS MATERIALIZED ("
"  SELECT id::text AS id, seq, reason FROM v WHERE reason IS NOT NULL"
"  UNION ALL SELECT id::text, seq, reason FROM dup"
"  LIMIT 1"
"), ins AS ("
"  INSERT INTO morango.buffer (transfer_session_id, seq, record_id, profile, model_name,"
"      partition, source_id, serialized, deleted, hard_deleted,"
"      last_saved_instance, last_saved_counter, conflicting_serialized_data, app_key)"
"  SELECT $1, c.seq, c.id, c.profile, c.model_name, c.partition, c.source_id, c.serialized,"
"         c.deleted, c.hard_deleted, c.last_saved_instance, c.last_saved_counter,"
"         COALESCE(c.conflicting_serialized_data, '[]'::jsonb), k.key"
"  FROM c LEFT JOIN ROWS FROM (pg_catalog.unnest($5::uuid[]), pg_catalog.unnest($6::text[]))"
"         AS k(id, key) ON k.id = c.id"
"  WHERE NOT EXISTS (SELECT 1 FROM bad)"
"  ON CONFLICT (transfer_session_id, record_id) DO NOTHING"
"  RETURNING record_id"
"), rm AS ("
"  INSERT INTO morango.record_max_counter_buffer (transfer_session_id, record_id, instance_id, counter)"
"  SELECT $1, c.id, e.key::uuid, (e.value)::bigint"
"  FROM c JOIN ins ON ins.record_id = c.id, pg_catalog.jsonb_each_text(c.rmcs) AS e"
")"
" SELECT (SELECT count(*) FROM ins), bad.id, bad.seq, bad.reason"
" FROM (SELECT) AS one LEFT JOIN bad ON true";

/*
 * Read a json number written as an integer within the range of bigint
 * (not "5.0", not 1e30) into *value.  Returns false if it is not one.
 */
static bool
numeric_to_int64(Numeric num, int64 *value)
{
	char	   *str = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(num)));
	char	   *p = str;
	bool		negative = (*p == '-');
	int			ndigits;
	uint64		magnitude = 0;

	if (negative)
		p++;
	for (ndigits = 0; p[ndigits] >= '0' && p[ndigits] <= '9'; ndigits++)
		magnitude = magnitude * 10 + (uint64) (p[ndigits] - '0');
	if (p[ndigits] != '\0' || ndigits == 0 || ndigits > 19 || magnitude > (uint64) PG_INT64_MAX)
		return false;
	*value = negative ? -(int64) magnitude : (int64) magnitude;
	return true;
}

/* A version vector counter: a positive integer no larger than a bigint. */
static bool
parse_counter(Numeric num, int64 *counter)
{
	return numeric_to_int64(num, counter) && *counter > 0;
}

/*
 * morango.version_vector_check(rmcs jsonb, last_saved_instance uuid,
 *                              last_saved_counter bigint) -> text
 *		NULL if rmcs is a json object of (instance uuid: positive integer)
 *		entries holding the record's last saved version (an entry for that
 *		instance at least that counter); else why not, as receive_chunk()
 *		reports it.  An instance uuid must be lowercase, with dashes only
 *		where the 8-4-4-4-12 form has them (morango_uuid_parse_vector_key).
 *		One pass over the object, no SQL.
 */
Datum
morango_version_vector_check(PG_FUNCTION_ARGS)
{
	Jsonb	   *jb;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	pg_uuid_t	key;
	bool		key_is_last = false;
	bool		found = false;
	pg_uuid_t  *last = PG_ARGISNULL(1) ? NULL : PG_GETARG_UUID_P(1);
	int64		last_counter = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2);

	if (PG_ARGISNULL(0))
		PG_RETURN_TEXT_P(cstring_to_text("its version vector is missing or not a json object"));
	jb = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_OBJECT(jb))
		PG_RETURN_TEXT_P(cstring_to_text("its version vector is missing or not a json object"));

	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			if (!morango_uuid_parse_vector_key(v.val.string.val, v.val.string.len, &key))
				PG_RETURN_TEXT_P(cstring_to_text("its version vector has an entry that is not (instance uuid: positive integer)"));
			key_is_last = (last != NULL && memcmp(key.data, last->data, UUID_LEN) == 0);
		}
		else if (tok == WJB_VALUE)
		{
			int64		counter;

			if (v.type != jbvNumeric || !parse_counter(v.val.numeric, &counter))
				PG_RETURN_TEXT_P(cstring_to_text("its version vector has an entry that is not (instance uuid: positive integer)"));
			if (key_is_last && counter >= last_counter)
				found = true;
		}
	}
	if (!found)
		PG_RETURN_TEXT_P(cstring_to_text("its version vector does not contain its last saved version"));
	PG_RETURN_NULL();
}

/*
 * The JSON type each field of a record must have, checked before the
 * chunk is cast to rows: a string where a number belongs, 5.5 or 1e30 for
 * a counter, "yes" for a boolean or a malformed uuid is named here rather
 * than failing a cast (or, for "yes" or "5", slipping through one).  A
 * json null, or an absent field, is let through: receive_sql names it.
 * serialized, conflicting_serialized_data and rmcs are checked there.
 */
typedef enum
{
	FIELD_UUID,
	FIELD_TEXT,
	FIELD_BIGINT,
	FIELD_BOOL
} FieldKind;

static const struct
{
	const char *name;
	FieldKind	kind;
}			record_fields[] =
{
	{"id", FIELD_UUID},
	{"seq", FIELD_BIGINT},
	{"profile", FIELD_TEXT},
	{"model_name", FIELD_TEXT},
	{"partition", FIELD_TEXT},
	{"source_id", FIELD_TEXT},
	{"deleted", FIELD_BOOL},
	{"hard_deleted", FIELD_BOOL},
	{"last_saved_instance", FIELD_UUID},
	{"last_saved_counter", FIELD_BIGINT},
};

/* a json value's type, for an error message */
static const char *
json_type_name(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvBool:
			return "a boolean";
		case jbvNull:
			return "null";
		case jbvBinary:
			return JsonContainerIsObject(v->val.binary.data) ? "an object" : "an array";
		default:
			return "not a json value";
	}
}

/*
 * check_chunk_types
 *		Every element of chunk jb is a json object whose fields have the
 *		types a record's fields must have; else raise, naming the first bad
 *		record by its position in the chunk (it may have no usable id).
 */
static void
check_chunk_types(Jsonb *jb, const char *tsname)
{
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbValue	elem;
	JsonbIteratorToken tok;
	int			pos = 0;
	int64		integer;
	pg_uuid_t	uuid;

	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		char	   *problem = NULL;

		if (tok != WJB_ELEM)
			continue;
		pos++;
		if (elem.type != jbvBinary || !JsonContainerIsObject(elem.val.binary.data))
			problem = psprintf("is %s, not a json object", json_type_name(&elem));
		for (int i = 0; i < (int) lengthof(record_fields) && problem == NULL; i++)
		{
			const char *field = record_fields[i].name;
			JsonbValue *f = getKeyJsonValueFromContainer(elem.val.binary.data, field,
														 strlen(field), NULL);
			const char *want;

			if (f == NULL || f->type == jbvNull)
				continue;
			switch (record_fields[i].kind)
			{
				case FIELD_BOOL:
					want = "a boolean";
					break;
				case FIELD_BIGINT:
					want = "a number";
					break;
				default:
					want = "a string";
					break;
			}
			if (strcmp(json_type_name(f), want) != 0)
				problem = psprintf("has \"%s\": %s, not %s", field, json_type_name(f), want);
			else if (record_fields[i].kind == FIELD_UUID &&
					 !morango_uuid_parse(f->val.string.val, f->val.string.len, &uuid, NULL))
				problem = psprintf("has \"%s\": a string that is not a uuid", field);
			else if (record_fields[i].kind == FIELD_BIGINT &&
					 !numeric_to_int64(f->val.numeric, &integer))
				problem = psprintf("has \"%s\": a number that is not an integer within the range of bigint",
								   field);
		}
		if (problem != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("rejected a chunk for transfer session %s: the record at position %d %s",
							tsname, pos, problem),
					 errdetail("Nothing from this chunk was stored.")));
	}
}

/* error context while a chunk's records are checked against their data */
static void
verify_error_callback(void *arg)
{
	errcontext("checking the records of morango model \"%s\" in a received chunk against their data",
			   (const char *) arg);
}

/*
 * The records of chunk $1 (x) with their data as rows of the model's table
 * (r; format arguments: the table, the part of x.serialized to read) and
 * what its expressions give (the third argument: morango_expressions_sql)
 */
#define CHUNK_AS_ROWS \
	" FROM pg_catalog.jsonb_to_recordset($1) AS x(id uuid, model_name text," \
	"      partition text, source_id text, serialized jsonb, deleted boolean," \
	"      hard_deleted boolean)," \
	"      pg_catalog.jsonb_populate_record(NULL::%s," \
	"          CASE WHEN pg_catalog.jsonb_typeof(x.serialized) = 'object'" \
	"               THEN %s ELSE '{}'::jsonb END) AS r, %s"

/*
 * A record of chunk_keys whose data has only columns of the table ($4), or
 * a tombstone: deserialize refuses live records with others (they get no
 * key here, and deserialize names the columns)
 */
#define KNOWN_COLUMNS \
	"(x.deleted OR (pg_catalog.jsonb_typeof(x.serialized) = 'object'" \
	" AND NOT EXISTS (SELECT 1 FROM pg_catalog.jsonb_object_keys(x.serialized) AS _morango_k" \
	"                 WHERE _morango_k <> ALL ($4::text[]))))"

/*
 * What chunk_keys learned from a chunk: the application keys of its
 * records (ids[i] has keys[i]), the first record whose data does not give
 * its partition (forged, the error to raise), and the verified models
 * whose records' data could not be read at all (verify_chunk names the
 * first bad one).
 */
typedef struct ChunkKeys
{
	int			n;
	int			max;
	Datum	   *ids;			/* uuid */
	Datum	   *keys;			/* text */
	char	   *forged;
	List	   *unread;			/* MorangoModel * */
} ChunkKeys;

/* one model's keys statement, as the table's owner (morango_try) */
typedef struct KeysRun
{
	MorangoModel *m;
	const char *sql;
	Datum		chunk;
	ChunkKeys  *ck;
	const char *tsname;
	Datum		columns;		/* text[]: the table's columns */
} KeysRun;

/* the forged-record error of chunk_keys and verify_chunk */
static char *
forged_message(MorangoModel *m, const char *tsname, HeapTuple tup, TupleDesc desc, int first)
{
	char	   *id = SPI_getvalue(tup, desc, first);
	char	   *part = SPI_getvalue(tup, desc, first + 1);
	char	   *src = SPI_getvalue(tup, desc, first + 2);
	char	   *p = SPI_getvalue(tup, desc, first + 3);
	char	   *sid = SPI_getvalue(tup, desc, first + 4);
	char	   *what = m->verify_source ?
		psprintf("partition %s and source id %s", quote_literal_cstr(part), quote_literal_cstr(src)) :
		psprintf("partition %s", quote_literal_cstr(part));
	char	   *gives = m->verify_source ?
		psprintf("%s and %s", p ? quote_literal_cstr(p) : "NULL", sid ? quote_literal_cstr(sid) : "NULL") :
		(p ? quote_literal_cstr(p) : "NULL");

	return psprintf("rejected a chunk for transfer session %s: record %s has %s, but its data gives %s"
					" under this database's registration of model \"%s\"",
					tsname, id, what, gives, m->model_name);
}

static void
keys_run(void *arg)
{
	KeysRun    *k = (KeysRun *) arg;
	ChunkKeys  *ck = k->ck;
	uint64		n;

	n = morango_owner_exec(k->m->relid, k->sql, 4, (Oid[]) {JSONBOID, TEXTOID, BOOLOID, TEXTARRAYOID},
						   (Datum[]) {k->chunk, CStringGetTextDatum(k->m->model_name),
						   BoolGetDatum(k->m->verify_source), k->columns},
						   NULL, SPI_OK_SELECT);
	if (ck->n + (int) n > ck->max)
	{
		ck->max = Max(ck->max * 2, ck->n + (int) n);
		ck->ids = repalloc(ck->ids, sizeof(Datum) * ck->max);
		ck->keys = repalloc(ck->keys, sizeof(Datum) * ck->max);
	}
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *key = SPI_getvalue(tup, desc, 2);

		if (DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull)) && ck->forged == NULL)
			ck->forged = forged_message(k->m, k->tsname, tup, desc, 4);
		if (key == NULL)
			continue;
		ck->ids[ck->n] = DirectFunctionCall1(uuid_in, CStringGetDatum(SPI_getvalue(tup, desc, 1)));
		ck->keys[ck->n] = CStringGetTextDatum(key);
		ck->n++;
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * chunk_keys
 *		For every record of chunk (a jsonb array not yet validated by
 *		receive_sql, but by check_chunk_types) whose model is registered
 *		here for the session's profile: the application key its data gives
 *		(the text the capture trigger computes for the same row, under the
 *		pinned settings), so that dequeue can insert a new record with its
 *		key and deserialize need not compute it; and, for a model registered
 *		with verify, whether its data gives its partition (and source id):
 *		see verify_chunk.  Records without data (hard deletes, tombstones
 *		without data) and records whose key has a null get no key.  One
 *		statement per model in the chunk, as the table's owner, in a
 *		subtransaction: if a record's data cannot be read (a value of the
 *		wrong type), none of that model's records get a key here
 *		(deserialize computes them, one by one if need be), and a verified
 *		model is checked by verify_chunk after receive_sql, as before.
 */
static void
chunk_keys(MorangoTransfer *t, Datum chunk, const char *tsname, ChunkKeys *ck)
{
	List	   *models = NIL;
	ListCell   *lc;
	int			nestlevel;

	memset(ck, 0, sizeof(ChunkKeys));
	ck->max = 64;
	ck->ids = palloc(sizeof(Datum) * ck->max);
	ck->keys = palloc(sizeof(Datum) * ck->max);

	morango_spi_exec("SELECT m.model::oid FROM morango.models m"
					 " WHERE m.profile = $1"
					 "   AND m.model_name IN (SELECT x.model_name"
					 "                        FROM pg_catalog.jsonb_to_recordset($2) AS x(model_name text))"
					 " ORDER BY m.model_name",
					 2, (Oid[]) {TEXTOID, JSONBOID}, (Datum[]) {t->profile, chunk}, NULL,
					 SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		models = lappend_oid(models, DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
																	SPI_tuptable->tupdesc, 1, &isnull)));
	}
	SPI_freetuptable(SPI_tuptable);

	nestlevel = morango_pin_settings(true);
	foreach(lc, models)
	{
		MorangoModel *m = morango_registry_lookup(lfirst_oid(lc), CurrentMemoryContext);
		char	   *qualname = morango_qualified_name(m->relid);
		StringInfoData key,
					notnull,
					cols;
		ListCell   *c;
		bool		first = true;
		KeysRun		k;
		ErrorData  *edata;
		bool		isnull;

		initStringInfo(&key);
		initStringInfo(&notnull);
		initStringInfo(&cols);
		foreach(c, m->pk_columns)
		{
			const char *col = quote_identifier((char *) lfirst(c));
			char	   *lit = quote_literal_cstr((char *) lfirst(c));

			appendStringInfo(&key, "%spg_catalog.to_jsonb(r.%s)", first ? "" : ", ", col);
			appendStringInfo(&notnull, "%sr.%s IS NOT NULL", first ? "" : " AND ", col);
			appendStringInfo(&cols, "%s%s, x.serialized -> %s", first ? "" : ", ", lit, lit);
			first = false;
		}
		/* the table's columns: a live record with another key is not keyed here */
		morango_spi_exec("SELECT pg_catalog.array_agg(a.attname::text) FROM pg_catalog.pg_attribute a"
						 " WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
						 1, (Oid[]) {OIDOID}, (Datum[]) {ObjectIdGetDatum(m->relid)}, NULL,
						 SPI_OK_SELECT);
		k.columns = PointerGetDatum(PG_DETOAST_DATUM_COPY(morango_spi_value(1, &isnull)));
		k.m = m;
		k.chunk = chunk;
		k.ck = ck;
		k.tsname = tsname;
		if (m->verify)
			k.sql = psprintf("SELECT x.id::text,"
							 "       CASE WHEN %s AND " KNOWN_COLUMNS " THEN pg_catalog.jsonb_build_array(%s)::text END,"
							 "       NOT (x.deleted AND x.serialized = '{}'::jsonb)"
							 "       AND (_morango_e._morango_p IS DISTINCT FROM x.partition"
							 "            OR ($3 AND _morango_e._morango_sid IS DISTINCT FROM x.source_id)),"
							 "       x.id::text, x.partition, x.source_id, _morango_e._morango_p,"
							 "       _morango_e._morango_sid"
							 CHUNK_AS_ROWS
							 " WHERE x.model_name = $2 AND x.hard_deleted IS NOT TRUE AND x.id IS NOT NULL",
							 notnull.data, key.data, qualname,
							 morango_columns_json_sql(m, "x.serialized", true),
							 morango_expressions_sql(m, "r"));
		else
			k.sql = psprintf("SELECT x.id::text,"
							 "       CASE WHEN %s AND " KNOWN_COLUMNS " THEN pg_catalog.jsonb_build_array(%s)::text END,"
							 "       false"
							 " FROM pg_catalog.jsonb_to_recordset($1) AS x(id uuid, model_name text,"
							 "      serialized jsonb, deleted boolean, hard_deleted boolean),"
							 "      pg_catalog.jsonb_populate_record(NULL::%s,"
							 "          CASE WHEN pg_catalog.jsonb_typeof(x.serialized) = 'object'"
							 "               THEN pg_catalog.jsonb_build_object(%s) ELSE '{}'::jsonb END) AS r"
							 " WHERE x.model_name = $2 AND x.hard_deleted IS NOT TRUE AND x.id IS NOT NULL"
							 "   AND $3 IS NOT NULL",
							 notnull.data, key.data, qualname, cols.data);
		edata = morango_try(keys_run, &k);
		if (edata != NULL)
		{
			FreeErrorData(edata);
			if (m->verify)
				ck->unread = lappend(ck->unread, m);
		}
	}
	morango_unpin_settings(nestlevel);
}

/*
 * verify_chunk
 *		Every live or soft-deleted record of chunk (already validated by
 *		receive_sql) whose model is registered here for the session's
 *		profile with verify must have the partition, and for a key-derived
 *		source id the source id, that this database's registered
 *		expressions give for its data (morango-semantics.md 2.1; issue 12
 *		item 1): else a peer could file data under a partition its scope
 *		allows while the data says it belongs to another one (a learner
 *		writing another's grade).  chunk_keys checked that on the way; this
 *		raises the first bad record it found, and checks here, naming the
 *		error, the models whose data chunk_keys could not read.  The
 *		caller's transaction then stores nothing.  Hard-deleted records,
 *		and tombstones without data (Morango's own conflict merge makes
 *		some), carry nothing to check: their id alone (the id rule) ties
 *		them to their partition, and they can only delete the row of a
 *		record with that id.  Records of models not registered here are
 *		checked by deserialize, before they are ever written into a table.
 */
static void
verify_chunk(ChunkKeys *ck, Datum chunk, const char *tsname)
{
	ListCell   *lc;
	int			nestlevel;

	if (ck->forged != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg_internal("%s", ck->forged),
				 errdetail("Nothing from this chunk was stored.")));
	if (ck->unread == NIL)
		return;

	nestlevel = morango_pin_settings(true);
	foreach(lc, ck->unread)
	{
		MorangoModel *m = (MorangoModel *) lfirst(lc);
		char	   *qualname = morango_qualified_name(m->relid);
		char	   *sql;
		ErrorContextCallback errcallback;

		sql = psprintf("SELECT x.id::text, x.partition, x.source_id, _morango_e._morango_p,"
					   "       _morango_e._morango_sid"
					   CHUNK_AS_ROWS
					   " WHERE x.model_name = $2 AND x.hard_deleted IS NOT TRUE"
					   "   AND NOT (x.deleted AND x.serialized = '{}'::jsonb)"
					   "   AND (_morango_e._morango_p IS DISTINCT FROM x.partition"
					   "        OR ($3 AND _morango_e._morango_sid IS DISTINCT FROM x.source_id))"
					   " LIMIT 1",
					   qualname, morango_columns_json_sql(m, "x.serialized", false),
					   morango_expressions_sql(m, "r"));
		errcallback.callback = verify_error_callback;
		errcallback.arg = m->model_name;
		errcallback.previous = error_context_stack;
		error_context_stack = &errcallback;
		morango_owner_exec(m->relid, sql, 3, (Oid[]) {JSONBOID, TEXTOID, BOOLOID},
						   (Datum[]) {chunk, CStringGetTextDatum(m->model_name),
						   BoolGetDatum(m->verify_source)},
						   NULL, SPI_OK_SELECT);
		error_context_stack = errcallback.previous;
		if (SPI_processed > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg_internal("%s", forged_message(m, tsname, SPI_tuptable->vals[0],
														  SPI_tuptable->tupdesc, 1)),
					 errdetail("Nothing from this chunk was stored.")));
		SPI_freetuptable(SPI_tuptable);
	}
	morango_unpin_settings(nestlevel);
}

/*
 * Counters that cannot be real.  A version of this database's own instance
 * above that instance's counter was made by nobody (only this database
 * makes them): believed, it raises the record's version vector and then
 * the database max counter of our own instance above our counter, and our
 * own later versions of that partition are never sent anywhere again (the
 * issue's poison, which check_invariants reports as I2).  A version of the
 * sending instance above the sender's own claim for it, in the FSIC it
 * sent for this transfer, is one the sender says it does not hold (an
 * honest sender never sends one: src/queue.c bounds what it queues by
 * that claim).  Other instances' counters cannot be checked here.
 */
typedef struct CounterLimit
{
	pg_uuid_t	instance;
	int64		limit;
	bool		own;			/* our instance (else the sender's) */
} CounterLimit;

/*
 * $1 ts: the limits, at most two rows: this database's own instance
 * (morango.own_instance()) at its counter, and the sending instance (the
 * sync session's peer_instance_id, kept current by transfer_open) at the
 * highest counter the transfer's remote FSIC claims for it (0 if none).
 */
static const char *limits_sql =
"SELECT o.id, o.counter, true FROM morango.own_instance() AS o"
" UNION ALL"
" SELECT s.peer_instance_id,"
"        COALESCE((SELECT max((e.value)::bigint)"
"                  FROM (SELECT t.remote_fsic->'super' UNION ALL SELECT t.remote_fsic->'sub') AS m(map),"
"                       pg_catalog.jsonb_each(m.map) AS p, pg_catalog.jsonb_each_text(p.value) AS e"
"                  WHERE e.key::uuid = s.peer_instance_id), 0),"
"        false"
" FROM morango.transfer_sessions t JOIN morango.sync_sessions s ON s.id = t.sync_session_id"
" WHERE t.id = $1 AND s.peer_instance_id IS NOT NULL AND t.remote_fsic IS NOT NULL";

/*
 * load_counter_limits
 *		The limits for transfer session ts (limits_sql), read once per
 *		chunk, palloc'd; sets *n.  Runs inside SPI.
 */
static CounterLimit *
load_counter_limits(Datum ts, int *n)
{
	CounterLimit *limits;
	bool		isnull;

	*n = (int) morango_spi_exec(limits_sql, 1, (Oid[]) {UUIDOID}, &ts, NULL, SPI_OK_SELECT);
	limits = palloc(sizeof(CounterLimit) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		memcpy(&limits[i].instance, DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull)), sizeof(pg_uuid_t));
		limits[i].limit = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		limits[i].own = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	}
	return limits;
}

/*
 * counter_problem
 *		If version (instance, counter) is above a limit for that instance,
 *		why, as receive_chunk() reports it, and *own says whether the limit
 *		is our own instance's; else NULL.  Pure.
 */
static char *
counter_problem(const pg_uuid_t *instance, int64 counter, const char *where,
				const CounterLimit *limits, int nlimits, bool *own)
{
	for (int i = 0; i < nlimits; i++)
	{
		char	   *id;

		if (counter <= limits[i].limit ||
			memcmp(instance->data, limits[i].instance.data, UUID_LEN) != 0)
			continue;
		id = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&limits[i].instance)));
		*own = limits[i].own;
		if (limits[i].own)
			return psprintf("has %s counter " INT64_FORMAT " of this database's own instance %s, "
							"above that instance's counter " INT64_FORMAT,
							where, counter, id, limits[i].limit);
		return psprintf("has %s counter " INT64_FORMAT " of the sending instance %s, "
						"above the " INT64_FORMAT " the sender claims for it in its FSIC",
						where, counter, id, limits[i].limit);
	}
	return NULL;
}

/*
 * check_chunk_counters
 *		Refuse chunk jb (already validated by check_chunk_types and
 *		receive_sql; the caller's transaction undoes its insert) if
 *		a record has a version (its last saved version or a version vector
 *		entry) above a limit of load_counter_limits(), naming the record;
 *		or if a hard-deleted record carries a conflict history (I4: a hard
 *		delete keeps no data anywhere).  One pass over the chunk, no SQL
 *		but the limits, read once.
 */
static void
check_chunk_counters(Jsonb *jb, const char *tsname, Datum ts)
{
	int			nlimits;
	CounterLimit *limits = load_counter_limits(ts, &nlimits);
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;
	int			pos = 0;

	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		JsonbContainer *rec;
		JsonbValue *f;
		JsonbValue *g;
		char	   *problem = NULL;
		bool		own = false;
		pg_uuid_t	inst;
		int64		counter;

		if (tok != WJB_ELEM || elem.type != jbvBinary)
			continue;
		pos++;
		rec = elem.val.binary.data;

		/* the last saved version */
		f = getKeyJsonValueFromContainer(rec, "last_saved_instance", strlen("last_saved_instance"), NULL);
		g = getKeyJsonValueFromContainer(rec, "last_saved_counter", strlen("last_saved_counter"), NULL);
		if (nlimits > 0 && f != NULL && f->type == jbvString && g != NULL && g->type == jbvNumeric &&
			numeric_to_int64(g->val.numeric, &counter) &&
			morango_uuid_parse(f->val.string.val, f->val.string.len, &inst, NULL))
			problem = counter_problem(&inst, counter, "last saved version with", limits, nlimits, &own);

		/* every entry of the version vector */
		f = getKeyJsonValueFromContainer(rec, "rmcs", strlen("rmcs"), NULL);
		if (problem == NULL && nlimits > 0 && f != NULL && f->type == jbvBinary &&
			JsonContainerIsObject(f->val.binary.data))
		{
			JsonbIterator *vit = JsonbIteratorInit(f->val.binary.data);
			JsonbValue	v;
			JsonbIteratorToken vtok;
			bool		have_key = false;

			while (problem == NULL && (vtok = JsonbIteratorNext(&vit, &v, true)) != WJB_DONE)
			{
				if (vtok == WJB_KEY)
					have_key = morango_uuid_parse_vector_key(v.val.string.val, v.val.string.len, &inst);
				else if (vtok == WJB_VALUE && have_key && v.type == jbvNumeric &&
						 numeric_to_int64(v.val.numeric, &counter))
					problem = counter_problem(&inst, counter, "a version vector entry with",
											  limits, nlimits, &own);
			}
		}

		/* I4: a hard delete travels without data, its history included */
		f = getKeyJsonValueFromContainer(rec, "hard_deleted", strlen("hard_deleted"), NULL);
		g = getKeyJsonValueFromContainer(rec, "conflicting_serialized_data",
										 strlen("conflicting_serialized_data"), NULL);
		if (problem == NULL && f != NULL && f->type == jbvBool && f->val.boolean &&
			g != NULL && g->type == jbvBinary && JsonContainerIsArray(g->val.binary.data) &&
			JsonContainerSize(g->val.binary.data) > 0)
			problem = pstrdup("is hard-deleted but carries a conflict history");

		if (problem != NULL)
		{
			f = getKeyJsonValueFromContainer(rec, "id", strlen("id"), NULL);
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("rejected a chunk for transfer session %s: record %s %s",
							tsname,
							(f != NULL && f->type == jbvString) ?
							pnstrdup(f->val.string.val, f->val.string.len) :
							psprintf("at position %d", pos),
							problem),
					 errdetail("Nothing from this chunk was stored."),
					 own ? errhint("Only this database makes versions of its own instance.  If it was restored "
								   "from a backup or is a promoted standby, run morango.reset_database_id().") : 0));
		}
	}
}

/* the largest chunk we accept, in records */
#define MAX_CHUNK_RECORDS 100000

/*
 * morango_receive_chunk_internal
 *		Validate chunk (a jsonb array) for transfer session ts, where this
 *		side must be the receiver, and add its records to the incoming
 *		buffer.  All or nothing.  Returns the number of records added.
 *		nbytes is the chunk's size on the wire, for the session's byte
 *		count.  Runs inside SPI.
 */
int64
morango_receive_chunk_internal(Datum ts, Datum chunk, int64 nbytes)
{
	Oid			argtypes[6] = {UUIDOID, JSONBOID, TEXTOID, TEXTARRAYOID, UUIDARRAYOID, TEXTARRAYOID};
	Datum		values[6];
	ChunkKeys	ck;
	bool		isnull;
	Jsonb	   *jb = DatumGetJsonbP(chunk);
	MorangoTransfer *t;
	char	   *tsname = DatumGetCString(DirectFunctionCall1(uuid_out, ts));
	int64		added;

	if (!JB_ROOT_IS_ARRAY(jb) || JB_ROOT_IS_SCALAR(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("chunk for transfer session %s is not a json array of records", tsname)));
	/* the largest chunk this database takes, in records (a setting) */
	if (JB_ROOT_COUNT(jb) > (uint32) morango_max_chunk_records)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("chunk for transfer session %s has %u records, more than %d",
						tsname, JB_ROOT_COUNT(jb), morango_max_chunk_records),
				 errdetail("This database takes chunks of at most %d records (morango.max_chunk_records).",
						   morango_max_chunk_records),
				 errhint("The sender must cut its chunks to the limits peer_begin announces.")));

	/* the session: active, this side receives, still transferring */
	t = morango_transfer_fetch(ts);
	if (!t->active)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("transfer session %s is finished", tsname)));
	if (!t->receiver)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this side sends in transfer session %s; it cannot receive a chunk", tsname)));
	if (morango_transfer_past(t, MORANGO_STAGE_DEQUEUING))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("transfer session %s is past transferring (stage %s)", tsname,
						morango_stage_name(t->stage))));
	check_chunk_types(jb, tsname);
	chunk_keys(t, chunk, tsname, &ck);
	values[0] = ts;
	values[1] = chunk;
	values[2] = t->profile;
	values[3] = t->filter;
	values[4] = PointerGetDatum(construct_array(ck.ids, ck.n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	values[5] = PointerGetDatum(construct_array(ck.keys, ck.n, TEXTOID, -1, false, TYPALIGN_INT));
	morango_spi_exec(receive_sql, 6, argtypes, values, NULL, SPI_OK_SELECT);
	if (SPI_processed != 1)
		elog(ERROR, "receive statement returned no row");
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);
	if (!isnull)
	{
		char	   *id = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		char	   *seq = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
		char	   *reason = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);

		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("rejected a chunk for transfer session %s: record %s %s",
						tsname, id ? id : (seq ? psprintf("number %s", seq) : "?"), reason),
				 errdetail("Nothing from this chunk was stored.")));
	}
	added = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	/*
	 * Counters that cannot be real, then records against their data, on
	 * a chunk otherwise valid (so that receive_sql's more basic reasons
	 * come first): an error here undoes the insert above with the rest of
	 * the transaction.
	 */
	check_chunk_counters(jb, tsname, ts);
	verify_chunk(&ck, chunk, tsname);

	{
		MorangoTransferUpdate u = MORANGO_TRANSFER_KEEP;

		u.transferred_add = added;
		u.bytes_received_add = nbytes;
		morango_transfer_transition(t, MORANGO_STAGE_TRANSFERRING, MORANGO_STATUS_STARTED, &u);
	}
	morango_fault("receive_chunk");
	return added;
}

/*
 * morango.receive_chunk(transfer_session uuid, chunk jsonb) -> bigint
 *		Validate a chunk and add it to the incoming buffer; returns the
 *		number of records added.
 */
Datum
morango_receive_chunk(PG_FUNCTION_ARGS)
{
	int64		added;
	Datum		chunk = PG_GETARG_DATUM(1);

	morango_spi_connect();
	added = morango_receive_chunk_internal(PG_GETARG_DATUM(0), chunk,
										   VARSIZE_ANY(DatumGetPointer(chunk)));
	SPI_finish();
	PG_RETURN_INT64(added);
}
