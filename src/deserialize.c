/*-------------------------------------------------------------------------
 *
 * deserialize.c
 *		Last step of a record's path: write store rows received from peers
 *		(the dirty ones: morango.store_dirty) into the application tables.
 *
 * For each registered model, parents before children (order from the
 * foreign keys among registered tables), one set-based statement upserts
 * every dirty live record by primary key; then, children before parents,
 * one statement deletes the application rows of dirty tombstones.  A batch
 * runs in a subtransaction; if it fails, its records are retried one by
 * one so that a bad row (constraint violation, missing parent, wrong type)
 * does not hold back the rest: it stays dirty with its error set
 * (store_dirty.error) and is retried next time.  Records that already carry an error skip
 * the batch attempt.
 *
 * Keys.  A record's application key (app_key) is computed from the typed
 * primary key values of its serialized data, under fixed formatting
 * settings, so it is the text the capture trigger computes for the same
 * row.  A record whose key changed (a peer changed the primary key) is
 * re-keyed: the old row is deleted and the new one written.
 *
 * Local edits win.  A record whose application row was changed locally
 * since the last serialize (a key in morango.changes) is not written: the
 * next serialize makes the local version the newest and keeps the incoming
 * one in the conflict history (Morango's rule, semantics 3.1 c).  To make
 * that airtight, store rows and existing application rows are locked first
 * (SKIP LOCKED: a row some transaction is changing right now is left for
 * the next run), and the write statement itself leaves out keys with a
 * committed local change and rows inserted meanwhile (ON CONFLICT DO
 * NOTHING); only the records actually written are marked clean.  Waits on
 * application transactions (an insert of the same new key) are bounded by
 * a short lock_timeout, and deadlock checks run 1ms into a wait, so
 * deserialize gives up on that record for this run rather than make an
 * application transaction a deadlock victim (doc/design.md, section 6).
 *
 * No echo.  Each write statement tells the capture trigger which keys it
 * writes; rows it changes by cascade, and rows application triggers
 * change, are noted as local changes.
 *
 * Rights.  Every statement that reads or writes the application table, or
 * builds a value of its row type, runs as the table's owner (owner.c) over
 * arrays read from the store by our own statements, and touches no table of
 * ours; what it returns (the ids written) our statements then mark clean.
 *
 * Received data.  For a model registered with verify, a record whose data
 * does not give its partition (and key-derived source id) under this
 * database's expressions is never written and loses its key (doc/design.md
 * 6.1): receive refuses such records, this catches those that arrived
 * before the model was registered here.
 *
 * IDENTIFICATION
 *		src/deserialize.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "morango.h"

PG_FUNCTION_INFO_V1(morango_deserialize);

/* A registered model with the statements deserialize needs for it. */
typedef struct DeserModel
{
	MorangoModel *m;
	char	   *qualname;
	/* as the table's owner (owner.c); $1 ids uuid[], $2 keys text[] */
	char	   *upsert_sql;		/* $3 data jsonb[]: write these live records -> ids */
	char	   *insert_sql;		/* the same when none of them has a row yet */
	char	   *delete_sql;		/* delete these tombstones' rows -> ids */
	char	   *lock_sql;		/* -> (id, has row) of those whose row is ours to write */
	char	   *keys_sql;		/* $1 data jsonb[] -> (index, key, partition, source id) */
	char	   *rekey_sql;		/* $1 keys text[]: delete the rows of these old keys */
	/* as us */
	char	   *unchanged_sql;	/* $1 uuid[] -> (id, app_key, data) without local changes */
	char	   *fetch_sql;		/* $1 uuid[] -> (id, what keys_sql reads) */
	Datum		columns;		/* text[]: every column of the table */
} DeserModel;

typedef struct DeserCounts
{
	int64		applied;
	int64		deleted;
	int64		failed;
} DeserCounts;

/* the partition filter predicate over store alias s, filter in $n */
#define FILTER_PRED(n) \
	"($" #n "::text[] IS NULL OR morango.in_filter(s.partition, $" #n "::text[]))"

static const char *candidates_sql =
"SELECT s.id, s.app_key FROM morango.store_dirty d JOIN morango.store s ON s.id = d.id"
" WHERE d.profile = $1 AND d.model_name = $2"
"   AND s.deleted = $3 AND s.app_key IS NOT NULL"
"   AND (d.error IS NULL) = $4"
"   AND " FILTER_PRED(5)
"   AND (s.deleted OR d.keyed"	/* (receive saw no column the table lacks) */
"        OR NOT EXISTS (SELECT 1 FROM pg_catalog.jsonb_object_keys(s.serialized) AS k"
"                       WHERE k <> ALL ($6::text[])))"
"   AND ($7::uuid IS NULL OR d.id > $7)"
" ORDER BY d.id LIMIT $8"
" FOR UPDATE OF s SKIP LOCKED";

/*
 * Records are taken in batches of morango.batch_size, in id order (the
 * primary key of store_dirty), each batch's memory freed before the next:
 * deserialize's memory does not grow with the number of records.
 */

/*
 * The keys of a model (oid in the format) changed locally since the last
 * serialize, read once per statement: morango.changes has no index (the
 * capture trigger only appends), so a lookup per record would scan it per
 * record.
 */
#define CHANGED_KEYS \
	"SELECT c.key FROM morango.changes c WHERE c.model = %u::oid::regclass"

static const char *set_errors_sql =
"UPDATE morango.store_dirty d SET error = e.msg"
" FROM ROWS FROM (pg_catalog.unnest($1::uuid[]), pg_catalog.unnest($2::text[])) AS e(id, msg)"
" WHERE d.profile = $3 AND d.model_name = $4 AND d.id = e.id";

static char *fetch_query(DeserModel *dm);
static char *keys_query(DeserModel *dm);
static Datum spi_uuid_array(int *n, pg_uuid_t *last);
static Datum text_array(char **elems, int n);

/*
 * Build the statements for model m.  Runs inside SPI with the pinned
 * search_path, so deparsed defaults are qualified as needed.
 */
static DeserModel *
build_model(MorangoModel *m)
{
	DeserModel *dm = palloc0(sizeof(DeserModel));
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(m->relid)};
	StringInfoData set,
				cols,
				sel,
				upd_ret,
				pk_list,
				sql;
	int			nset = 0;
	char	   *keyrec;
	char	   *pkeq_tk;

	dm->m = m;
	dm->qualname = morango_qualified_name(m->relid);

	morango_spi_query("SELECT a.attname, a.attgenerated <> '' AS generated,"
					  "       a.attidentity = 'a' AS identity_always,"
					  "       COALESCE(pg_catalog.pg_get_expr(d.adbin, d.adrelid),"
					  "                CASE WHEN a.attidentity <> '' THEN"
					  "                  'pg_catalog.nextval(' || pg_catalog.quote_literal("
					  "                    pg_catalog.pg_get_serial_sequence(a.attrelid::regclass::text, a.attname))"
					  "                  || '::pg_catalog.regclass)' END) AS def"
					  " FROM pg_catalog.pg_attribute a"
					  " LEFT JOIN pg_catalog.pg_attrdef d"
					  "   ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
					  " WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped"
					  " ORDER BY a.attnum",
					  1, argtypes, values, NULL, 0);

	initStringInfo(&set);
	initStringInfo(&cols);
	initStringInfo(&sel);
	{
		Datum	   *names = palloc(sizeof(Datum) * Max(SPI_processed, 1));

		for (uint64 i = 0; i < SPI_processed; i++)
			names[i] = CStringGetTextDatum(SPI_getvalue(SPI_tuptable->vals[i],
														SPI_tuptable->tupdesc, 1));
		dm->columns = PointerGetDatum(construct_array(names, (int) SPI_processed, TEXTOID,
													  -1, false, TYPALIGN_INT));
	}
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *name = SPI_getvalue(tup, desc, 1);
		bool		isnull;
		bool		generated = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
		bool		identity_always = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		char	   *def = SPI_getvalue(tup, desc, 4);
		const char *qname = quote_identifier(name);
		char	   *lit = quote_literal_cstr(name);
		bool		is_pk = false;
		ListCell   *lc;

		foreach(lc, m->pk_columns)
		{
			if (strcmp((char *) lfirst(lc), name) == 0)
				is_pk = true;
		}

		if (generated)
			continue;

		appendStringInfo(&cols, "%s%s", cols.len ? ", " : "", qname);
		appendStringInfo(&sel, "%sCASE WHEN src._morango_j ? %s THEN src.%s ELSE %s END",
						 sel.len ? ", " : "", lit, qname, def ? def : "NULL");
		if (!is_pk && !identity_always)
		{
			appendStringInfo(&set, "%s%s = CASE WHEN src._morango_j ? %s THEN src.%s ELSE t.%s END",
							 nset ? ", " : "", qname, lit, qname, qname);
			nset++;
		}
	}

	initStringInfo(&upd_ret);
	initStringInfo(&pk_list);
	{
		ListCell   *lc;
		bool		first = true;

		foreach(lc, m->pk_columns)
		{
			appendStringInfo(&upd_ret, "%st.%s", first ? "" : ", ",
							 quote_identifier((char *) lfirst(lc)));
			appendStringInfo(&pk_list, "%s%s", first ? "" : ", ",
							 quote_identifier((char *) lfirst(lc)));
			first = false;
		}
	}

	/*
	 * upsert: UPDATE existing rows (keeping columns the record lacks),
	 * INSERT the rest (a row inserted meanwhile is left alone), mark clean
	 * what was written.  Records with a local change are left out.  $1
	 * holds candidates this transaction locked FOR UPDATE while dirty, so
	 * they still are: no test of store_dirty, which would only make the
	 * planner walk it instead of probing the primary key.
	 *
	 * Only records whose data carries the key they hold are written: a
	 * record whose re-key was refused (the new key is another record's)
	 * keeps its old key and must not write over the other record's row.
	 *
	 * The insert-only variant serves batches none of whose records has an
	 * application row (a first sync): joining the batch to a table that
	 * grows batch after batch is what the planner would otherwise do.
	 */
	for (int variant = 0; variant < 2; variant++)
	{
		bool		insert_only = (variant == 1);

		initStringInfo(&sql);
		appendStringInfo(&sql,
						 "WITH src AS ("
						 "  SELECT u._morango_id, u._morango_j, r.*"
						 "  FROM ROWS FROM (pg_catalog.unnest($1::uuid[]), pg_catalog.unnest($2::text[]),"
						 "                  pg_catalog.unnest($3::jsonb[])) AS u(_morango_id, _morango_key, _morango_j),"
						 "       pg_catalog.jsonb_populate_record(NULL::%s, u._morango_j) AS r,"
						 "       %s AS kr"
						 "  WHERE %s"
						 "), upd AS (",
						 dm->qualname,
						 morango_key_record_sql(m, dm->qualname, "u._morango_key::jsonb"),
						 morango_pk_equal_sql(m, "r", "kr"));
		if (insert_only)
			appendStringInfo(&sql, "SELECT %s FROM ONLY %s AS t WHERE false",
							 upd_ret.data, dm->qualname);
		else if (nset > 0)
			appendStringInfo(&sql, "UPDATE ONLY %s AS t SET %s FROM src WHERE %s RETURNING %s",
							 dm->qualname, set.data, morango_pk_equal_sql(m, "t", "src"),
							 upd_ret.data);
		else
			appendStringInfo(&sql, "SELECT %s FROM ONLY %s AS t JOIN src ON %s",
							 upd_ret.data, dm->qualname, morango_pk_equal_sql(m, "t", "src"));
		appendStringInfo(&sql,
						 "), ins AS ("
						 "  INSERT INTO %s AS t (%s) OVERRIDING SYSTEM VALUE"
						 "  SELECT %s FROM src"
						 "  WHERE NOT EXISTS (SELECT 1 FROM upd AS t WHERE %s)"
						 "  ON CONFLICT (%s) DO NOTHING"
						 "  RETURNING %s"
						 ") SELECT src._morango_id FROM src"
						 "  WHERE EXISTS (SELECT 1 FROM upd AS t WHERE %s)"
						 "     OR EXISTS (SELECT 1 FROM ins AS t WHERE %s)",
						 dm->qualname, cols.data, sel.data,
						 morango_pk_equal_sql(m, "t", "src"),
						 pk_list.data, upd_ret.data,
						 morango_pk_equal_sql(m, "t", "src"),
						 morango_pk_equal_sql(m, "t", "src"));
		if (insert_only)
			dm->insert_sql = sql.data;
		else
			dm->upsert_sql = sql.data;
	}

	keyrec = morango_key_record_sql(m, dm->qualname, "u._morango_key::jsonb");
	pkeq_tk = morango_pk_equal_sql(m, "t", "k");

	dm->delete_sql = psprintf("WITH k AS ("
							  "  SELECT u._morango_id, r.*"
							  "  FROM ROWS FROM (pg_catalog.unnest($1::uuid[]), pg_catalog.unnest($2::text[]))"
							  "       AS u(_morango_id, _morango_key), %s AS r"
							  "), del AS ("
							  "  DELETE FROM ONLY %s AS t USING k WHERE %s"
							  ") SELECT k._morango_id FROM k",
							  keyrec, dm->qualname, pkeq_tk);

	/*
	 * (id, has_row) of the records whose application row we could lock or
	 * that have none.  One primary key probe per record for each (the
	 * limits keep the planner from turning them into joins with the whole
	 * table, which grows batch after batch in a first sync).
	 */
	dm->lock_sql = psprintf("WITH k AS ("
							"  SELECT u._morango_id, r.*"
							"  FROM ROWS FROM (pg_catalog.unnest($1::uuid[]), pg_catalog.unnest($2::text[]))"
							"       AS u(_morango_id, _morango_key), %s AS r"
							") SELECT k._morango_id, lk.x IS NOT NULL FROM k"
							" LEFT JOIN LATERAL (SELECT 1 AS x FROM ONLY %s AS t WHERE %s"
							"                    LIMIT 1 FOR UPDATE OF t SKIP LOCKED) AS lk ON true"
							" LEFT JOIN LATERAL (SELECT 1 AS x FROM ONLY %s AS t WHERE %s LIMIT 1) AS ex ON true"
							" WHERE lk.x IS NOT NULL OR ex.x IS NULL",
							keyrec, dm->qualname, pkeq_tk, dm->qualname, pkeq_tk);

	/* the data of records not changed locally (a new snapshot sees every commit) */
	dm->unchanged_sql = psprintf("WITH ch AS MATERIALIZED (" CHANGED_KEYS ")"
								 " SELECT s.id, s.app_key, s.serialized FROM morango.store s"
								 " WHERE s.id = ANY($1)"
								 "   AND NOT EXISTS (SELECT 1 FROM ch WHERE ch.key = s.app_key)",
								 m->relid);

	dm->rekey_sql = psprintf("DELETE FROM ONLY %s AS t"
							 " USING pg_catalog.unnest($1::text[]) AS u(_morango_key), %s AS k"
							 " WHERE %s",
							 dm->qualname, keyrec, pkeq_tk);
	dm->fetch_sql = fetch_query(dm);
	dm->keys_sql = keys_query(dm);
	return dm;
}

/*
 * Order models parents first, following foreign keys among them (Kahn's
 * algorithm; models in a cycle keep their registry order at the end).
 */
static pg_noinline List *
order_models(List *models)
{
	int			n = list_length(models);
	Oid		   *oids = palloc(sizeof(Oid) * Max(n, 1));
	int		   *indeg = palloc0(sizeof(int) * Max(n, 1));
	bool	   *done = palloc0(sizeof(bool) * Max(n, 1));
	bool	  **edge = palloc(sizeof(bool *) * Max(n, 1));	/* edge[p][c]: c references p */
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	Oid			argtypes[1] = {OIDARRAYOID};
	Datum		values[1];
	List	   *result = NIL;

	if (n == 0)
		return NIL;
	for (int i = 0; i < n; i++)
	{
		oids[i] = ((DeserModel *) list_nth(models, i))->m->relid;
		elems[i] = ObjectIdGetDatum(oids[i]);
		edge[i] = palloc0(sizeof(bool) * n);
	}
	values[0] = PointerGetDatum(construct_array(elems, n, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
	morango_spi_query("SELECT DISTINCT conrelid, confrelid FROM pg_catalog.pg_constraint"
					  " WHERE contype = 'f' AND conrelid = ANY($1) AND confrelid = ANY($1)"
					  "   AND conrelid <> confrelid",
					  1, argtypes, values, NULL, 0);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Oid			child = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
		Oid			parent = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull));
		int			ci = -1,
					pi = -1;

		for (int i = 0; i < n; i++)
		{
			if (oids[i] == child)
				ci = i;
			if (oids[i] == parent)
				pi = i;
		}
		if (ci >= 0 && pi >= 0 && !edge[pi][ci])
		{
			edge[pi][ci] = true;
			indeg[ci]++;
		}
	}

	for (;;)
	{
		int			pick = -1;

		for (int i = 0; i < n; i++)
			if (!done[i] && indeg[i] == 0)
			{
				pick = i;
				break;
			}
		if (pick < 0)
			break;
		done[pick] = true;
		result = lappend(result, list_nth(models, pick));
		for (int c = 0; c < n; c++)
			if (edge[pick][c])
				indeg[c]--;
	}
	/* a cycle: append the rest in registry order */
	for (int i = 0; i < n; i++)
		if (!done[i])
			result = lappend(result, list_nth(models, i));
	return result;
}

/*
 * One write: a statement of dm run as the table's owner over records ids
 * (with their keys and, for upserts, data), then the records it wrote
 * marked clean by us.
 */
typedef struct WriteArgs
{
	DeserModel *dm;
	const char *sql;
	Datum		ids;
	Datum		keys;
	Datum		data;
	int64		written;
} WriteArgs;

static void
write_batch_run(void *arg)
{
	WriteArgs  *a = (WriteArgs *) arg;
	Oid			argtypes[3] = {UUIDARRAYOID, TEXTARRAYOID, JSONBARRAYOID};
	Datum		values[3] = {a->ids, a->keys, a->data};
	Datum		done;
	int			n;

	morango_owner_exec(a->dm->m->relid, a->sql, a->data ? 3 : 2, argtypes, values, NULL,
					   SPI_OK_SELECT);
	done = spi_uuid_array(&n, NULL);
	SPI_freetuptable(SPI_tuptable);
	a->written = 0;
	if (n > 0)
		a->written = (int64) morango_spi_exec("DELETE FROM morango.store_dirty d"
											  " WHERE d.profile = $2 AND d.model_name = $3"
											  "   AND d.id = ANY($1::uuid[])",
											  3, (Oid[]) {UUIDARRAYOID, TEXTOID, TEXTOID},
											  (Datum[]) {done, CStringGetTextDatum(a->dm->m->profile),
											  CStringGetTextDatum(a->dm->m->model_name)},
											  NULL, SPI_OK_DELETE);
}

/*
 * Run one write of dm (sql) for records ids, whose application keys are
 * keys[0..nkeys-1] (also as the text[] keyarr; data: their jsonb[] data,
 * or 0 for deletes), in a subtransaction, telling the capture trigger
 * those keys are ours.  Returns NULL on success (*written: records marked
 * clean), else the error message.
 */
static char *
try_write_batch(DeserModel *dm, const char *sql, Datum ids, Datum keyarr, Datum data,
				char **keys, int nkeys, int64 *written)
{
	WriteArgs	args = {dm, sql, ids, keyarr, data, 0};
	ErrorData  *volatile edata = NULL;
	void	   *previous = morango_capture_deserializing_push();
	char	   *err;

	for (int i = 0; i < nkeys; i++)
		morango_capture_deserializing_add(dm->m->relid, keys[i]);
	PG_TRY();
	{
		edata = morango_try(write_batch_run, &args);
	}
	PG_FINALLY();
	{
		morango_capture_deserializing_pop(previous);
	}
	PG_END_TRY();

	*written = args.written;
	if (edata == NULL)
		return NULL;
	if (edata->detail)
		err = psprintf("%s (%s)", edata->message, edata->detail);
	else
		err = pstrdup(edata->message);
	FreeErrorData(edata);
	return err;
}

/*
 * Collect column 1 (uuid) of the current SPI result as a uuid[] Datum; *n
 * gets the count and, if there is a row, *last a copy of the last id.
 */
static Datum
spi_uuid_array(int *n, pg_uuid_t *last)
{
	Datum	   *elems;

	*n = (int) SPI_processed;
	if (*n == 0)
		return (Datum) 0;
	elems = palloc(sizeof(Datum) * (*n));
	for (int i = 0; i < *n; i++)
	{
		bool		isnull;
		pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

		memcpy(u, DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)),
			   sizeof(pg_uuid_t));
		elems[i] = UUIDPGetDatum(u);
	}
	if (last)
		memcpy(last, DatumGetUUIDP(elems[*n - 1]), sizeof(pg_uuid_t));
	return PointerGetDatum(construct_array(elems, *n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
}

/*
 * Run page query sql, whose parameter values[cursor] is the last id of the
 * previous page (NULL for the first) and values[cursor + 1] the page size,
 * ordered by id; *ids gets the ids of this page as a uuid[] (in the
 * current memory context), and *n their number; if keys is not NULL,
 * *keys gets column 2 as a text[].  Moves the cursor past
 * them (*last holds the id it points to, so it must outlive the page's
 * memory) and returns whether another page may follow.
 */
static bool
next_page(const char *sql, int nargs, Oid *argtypes, Datum *values, char *nulls,
		  int cursor, pg_uuid_t *last, Datum *ids, int *n, Datum *keys)
{
	morango_spi_exec(sql, nargs, argtypes, values, nulls, SPI_OK_SELECT);
	*ids = spi_uuid_array(n, last);
	if (keys != NULL && *n > 0)
	{
		char	  **k = palloc(sizeof(char *) * (*n));

		for (int i = 0; i < *n; i++)
			k[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		*keys = text_array(k, *n);
	}
	SPI_freetuptable(SPI_tuptable);
	if (*n == 0)
		return false;
	values[cursor] = UUIDPGetDatum(last);
	nulls[cursor] = ' ';
	return *n == DatumGetInt32(values[cursor + 1]);
}

/*
 * Set the error of dirty records ids (list of pg_uuid_t *) of dm to msgs
 * (list of char *).
 */
static void
set_errors(DeserModel *dm, List *ids, List *msgs)
{
	int			ne = list_length(ids);
	Datum	   *ue = palloc(sizeof(Datum) * ne);
	Datum	   *me = palloc(sizeof(Datum) * ne);

	for (int i = 0; i < ne; i++)
	{
		ue[i] = PointerGetDatum(list_nth(ids, i));
		me[i] = CStringGetTextDatum((char *) list_nth(msgs, i));
	}
	morango_spi_exec(set_errors_sql, 4, (Oid[]) {UUIDARRAYOID, TEXTARRAYOID, TEXTOID, TEXTOID},
					 (Datum[]) {PointerGetDatum(construct_array(ue, ne, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR)),
					 PointerGetDatum(construct_array(me, ne, TEXTOID, -1, false, TYPALIGN_INT)),
					 CStringGetTextDatum(dm->m->profile), CStringGetTextDatum(dm->m->model_name)},
					 NULL, SPI_OK_UPDATE);
}

/*
 * The records of a prepare_keys() batch: ids, current keys, and the part
 * of their data keys_sql reads; after keys_run, their new keys and, for a
 * verified model, the partition and source id their data gives (NULL
 * where none could be computed).
 */
typedef struct KeysArgs
{
	DeserModel *dm;
	int			n;
	Datum	   *ids;
	char	  **old;
	Datum	   *data;			/* jsonb */
	char	  **new_key;
	char	  **p;
	char	  **sid;
	int			first;			/* keys_run works on records first .. first+count-1 */
	int			count;
} KeysArgs;

/* keys_sql over some of the records, as the table's owner */
static void
keys_run(void *arg)
{
	KeysArgs   *a = (KeysArgs *) arg;
	Oid			argtypes[1] = {JSONBARRAYOID};
	Datum		data = PointerGetDatum(construct_array(&a->data[a->first], a->count, JSONBOID,
													   -1, false, TYPALIGN_INT));

	morango_owner_exec(a->dm->m->relid, a->dm->keys_sql, 1, argtypes, &data, NULL, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int			i = a->first + (int) DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)) - 1;

		a->new_key[i] = SPI_getvalue(tup, desc, 2);
		a->p[i] = SPI_getvalue(tup, desc, 3);
		a->sid[i] = SPI_getvalue(tup, desc, 4);
	}
	SPI_freetuptable(SPI_tuptable);
}

static Datum
text_array(char **elems, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
	{
		nulls[i] = (elems[i] == NULL);
		d[i] = elems[i] ? CStringGetTextDatum(elems[i]) : (Datum) 0;
	}
	return PointerGetDatum(construct_md_array(d, nulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * $1 ids -> (id, app_key, the data keys_sql reads): the primary key
 * columns and, for a verified model, the columns its expressions read
 * (only those: a value of another column that does not fit its type must
 * not stop the key from being read).
 */
static char *
fetch_query(DeserModel *dm)
{
	StringInfoData obj;
	ListCell   *lc;
	bool		first = true;

	if (dm->m->verify)
		return psprintf("SELECT s.id, s.app_key, %s FROM morango.store s WHERE s.id = ANY($1)",
						morango_columns_json_sql(dm->m, "s.serialized", true));
	initStringInfo(&obj);
	foreach(lc, dm->m->pk_columns)
	{
		char	   *lit = quote_literal_cstr((char *) lfirst(lc));

		appendStringInfo(&obj, "%s%s, s.serialized -> %s", first ? "" : ", ", lit, lit);
		first = false;
	}
	return psprintf("SELECT s.id, s.app_key, pg_catalog.jsonb_build_object(%s)"
					" FROM morango.store s WHERE s.id = ANY($1)", obj.data);
}

/*
 * $1 data jsonb[] -> (index, key text, partition, source id): the typed
 * key of each (the text the capture trigger computes for the same row),
 * and for a verified model what its expressions give (run as the table's
 * owner, under the pinned settings).
 */
static char *
keys_query(DeserModel *dm)
{
	StringInfoData k;
	ListCell   *lc;
	bool		first = true;

	initStringInfo(&k);
	appendStringInfoString(&k, "pg_catalog.jsonb_build_array(");
	foreach(lc, dm->m->pk_columns)
	{
		appendStringInfo(&k, "%spg_catalog.to_jsonb(r.%s)", first ? "" : ", ",
						 quote_identifier((char *) lfirst(lc)));
		first = false;
	}
	appendStringInfoString(&k, ")::text");
	if (!dm->m->verify)
		return psprintf("SELECT u.i, %s, NULL::text, NULL::text"
						" FROM pg_catalog.unnest($1::jsonb[]) WITH ORDINALITY AS u(_morango_j, i),"
						"      pg_catalog.jsonb_populate_record(NULL::%s, u._morango_j) AS r",
						k.data, dm->qualname);
	return psprintf("SELECT u.i, %s, _morango_e._morango_p, _morango_e._morango_sid"
					" FROM pg_catalog.unnest($1::jsonb[]) WITH ORDINALITY AS u(_morango_j, i),"
					"      pg_catalog.jsonb_populate_record(NULL::%s, u._morango_j) AS r, %s",
					k.data, dm->qualname, morango_expressions_sql(dm->m, "r"));
}

/*
 * The SQL that gives records their keys; see prepare_keys_batch().  $1
 * ids, $2 current keys, $3 new keys, $4 profile, $5 model name, $6 and $7
 * the partitions and source ids the data gives, $8 and $9 whether to check
 * them, $10 the table's columns.  Returns a row per record refused (NULL)
 * and per record re-keyed (its old key, whose row the caller deletes).
 * Records that now hold the key of their data, and no column the table
 * lacks, are marked keyed.
 */
static const char *assign_sql =
"WITH a AS ("
"  SELECT v.*, s.partition AS part, s.source_id AS src,"
"         (s.deleted OR NOT EXISTS (SELECT 1 FROM pg_catalog.jsonb_object_keys(s.serialized) AS c"
"                                   WHERE c <> ALL ($10::text[]))) AS known"
"  FROM ROWS FROM (pg_catalog.unnest($1::uuid[]), pg_catalog.unnest($2::text[]),"
"                  pg_catalog.unnest($3::text[]), pg_catalog.unnest($6::text[]),"
"                  pg_catalog.unnest($7::text[])) AS v(id, old, k, p, sid)"
"  JOIN morango.store s ON s.id = v.id"
/*
 * A record of a verified model whose data does not give its partition
 * (and, where checked, its source id) is never written: it loses its key,
 * so no application row, present or future, is tied to it.
 */
"), forged AS ("
"  SELECT a.* FROM a"
"  WHERE ($8 AND a.p IS DISTINCT FROM a.part) OR ($9 AND a.sid IS DISTINCT FROM a.src)"
"), v AS ("
"  SELECT a.id, a.old, a.k FROM a"
"  WHERE a.old IS DISTINCT FROM a.k AND a.id NOT IN (SELECT id FROM forged)"
"), ok AS ("
"  SELECT DISTINCT ON (v.k) v.* FROM v"
"  WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(v.k::jsonb) AS e"
"                    WHERE e.value = 'null'::jsonb)"
"  ORDER BY v.k, v.id"
"), taken AS MATERIALIZED ("
/*
 * one probe of the unique key index per key, whatever the statistics say
 * (a store that just received its records has none, or stale ones)
 */
"  SELECT o.id, o.app_key FROM ok,"
"    LATERAL (SELECT o.id, o.app_key FROM morango.store o"
"             WHERE o.profile = $4 AND o.model_name = $5 AND o.app_key = ok.k"
"             LIMIT 1) AS o"	/* the limit keeps the planner from flattening it into a join */
"), free AS ("
"  SELECT ok.* FROM ok WHERE NOT EXISTS (SELECT 1 FROM taken o"
"    WHERE o.app_key = ok.k AND o.id <> ok.id)"
"), upd AS ("
"  UPDATE morango.store s SET app_key = free.k FROM free WHERE s.id = free.id"
"  RETURNING s.id, free.old"
"), unlink AS ("
"  UPDATE morango.store s SET app_key = NULL FROM forged f WHERE s.id = f.id AND s.app_key IS NOT NULL"
"), unlink_err AS ("
"  UPDATE morango.store_dirty d SET error ="
"    'its data gives partition ' || COALESCE(pg_catalog.quote_literal(f.p), 'NULL')"
"    || CASE WHEN $9 THEN ' and source id ' || COALESCE(pg_catalog.quote_literal(f.sid), 'NULL') ELSE '' END"
"    || ' under this database''s registration of model ' || $5 || ', not the record''s '"
"    || pg_catalog.quote_literal(f.part)"
"    || CASE WHEN $9 THEN ' and ' || pg_catalog.quote_literal(f.src) ELSE '' END"
"    || ': it is not written'"
"  FROM forged f WHERE d.profile = $4 AND d.model_name = $5 AND d.id = f.id"
"  RETURNING d.id"
"), err AS ("
"  UPDATE morango.store_dirty d SET error ="
"    CASE WHEN v.id IN (SELECT id FROM ok)"
"         THEN 'its primary key ' || v.k || ' is already used by another record of model ' || $5"
"         ELSE 'its primary key ' || v.k || ' is null or repeats another record''s' END"
"  FROM v WHERE d.profile = $4 AND d.model_name = $5 AND d.id = v.id"
"    AND v.id NOT IN (SELECT id FROM upd)"
"  RETURNING d.id"
/* the others hold the key of their data now: deserialize need not compute it again */
"), keyed AS ("
"  UPDATE morango.store_dirty d SET keyed = true FROM a"
"  WHERE d.profile = $4 AND d.model_name = $5 AND d.id = a.id"
"    AND a.id NOT IN (SELECT id FROM forged) AND a.known"
"    AND (a.old = a.k OR a.id IN (SELECT id FROM upd))"
")"
" SELECT upd.old FROM upd WHERE upd.old IS NOT NULL"
" UNION ALL SELECT NULL FROM unlink_err"
" UNION ALL SELECT NULL FROM err";

/*
 * Give the n records ids of dm their keys (see prepare_keys); returns the
 * number refused.
 */
static int64
prepare_keys_batch(DeserModel *dm, Datum ids, int n)
{
	KeysArgs	ka;
	ErrorData  *edata;
	List	   *err_ids = NIL;
	List	   *err_msgs = NIL;
	int64		refused = 0;
	int			nestlevel;
	int			ngood = 0;
	List	   *rekeyed = NIL;

	/* what the keys are computed from, read by us */
	morango_spi_exec(dm->fetch_sql, 1, (Oid[]) {UUIDARRAYOID}, &ids, NULL, SPI_OK_SELECT);
	memset(&ka, 0, sizeof(ka));
	ka.dm = dm;
	ka.n = (int) SPI_processed;
	ka.ids = palloc(sizeof(Datum) * Max(ka.n, 1));
	ka.old = palloc(sizeof(char *) * Max(ka.n, 1));
	ka.data = palloc(sizeof(Datum) * Max(ka.n, 1));
	ka.new_key = palloc0(sizeof(char *) * Max(ka.n, 1));
	ka.p = palloc0(sizeof(char *) * Max(ka.n, 1));
	ka.sid = palloc0(sizeof(char *) * Max(ka.n, 1));
	for (int i = 0; i < ka.n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

		memcpy(u, DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull)), sizeof(pg_uuid_t));
		ka.ids[i] = UUIDPGetDatum(u);
		ka.old[i] = SPI_getvalue(tup, desc, 2);
		ka.data[i] = PointerGetDatum(DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 3, &isnull)));
	}
	SPI_freetuptable(SPI_tuptable);
	if (ka.n == 0)
		return 0;

	/* all at once; one by one if some record's key cannot be read */
	nestlevel = morango_pin_settings(true);
	ka.first = 0;
	ka.count = ka.n;
	edata = morango_try(keys_run, &ka);
	if (edata != NULL)
	{
		FreeErrorData(edata);
		for (int i = 0; i < ka.n; i++)
		{
			ka.first = i;
			ka.count = 1;
			ka.new_key[i] = NULL;
			edata = morango_try(keys_run, &ka);
			if (edata != NULL)
			{
				err_ids = lappend(err_ids, DatumGetPointer(ka.ids[i]));
				err_msgs = lappend(err_msgs,
								   psprintf(dm->m->verify ?
											"its primary key, partition or source id cannot be read: %s" :
											"its primary key cannot be read: %s",
											edata->message));
				FreeErrorData(edata);
			}
		}
	}
	morango_unpin_settings(nestlevel);

	/* keep the records whose key could be read */
	for (int i = 0; i < ka.n; i++)
	{
		if (ka.new_key[i] == NULL)
			continue;
		ka.ids[ngood] = ka.ids[i];
		ka.old[ngood] = ka.old[i];
		ka.new_key[ngood] = ka.new_key[i];
		ka.p[ngood] = ka.p[i];
		ka.sid[ngood] = ka.sid[i];
		ngood++;
	}

	/* refuse forged records, null and taken keys; assign new keys, re-key changed ones */
	if (ngood > 0)
	{
		morango_spi_exec(assign_sql, 10,
						 (Oid[]) {UUIDARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTOID, TEXTOID,
						 TEXTARRAYOID, TEXTARRAYOID, BOOLOID, BOOLOID, TEXTARRAYOID},
						 (Datum[]) {PointerGetDatum(construct_array(ka.ids, ngood, UUIDOID, UUID_LEN,
																	false, TYPALIGN_CHAR)),
						 text_array(ka.old, ngood), text_array(ka.new_key, ngood),
						 CStringGetTextDatum(dm->m->profile), CStringGetTextDatum(dm->m->model_name),
						 text_array(ka.p, ngood), text_array(ka.sid, ngood),
						 BoolGetDatum(dm->m->verify), BoolGetDatum(dm->m->verify_source),
						 dm->columns},
						 NULL, SPI_OK_SELECT);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			char	   *old = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);

			if (old == NULL)
				refused++;
			else
				rekeyed = lappend(rekeyed, old);
		}
		SPI_freetuptable(SPI_tuptable);
	}

	/* the rows of re-keyed records' old keys go, as the table's owner */
	if (rekeyed != NIL)
	{
		char	  **olds = palloc(sizeof(char *) * list_length(rekeyed));
		Datum		arr;
		ListCell   *lc;

		foreach(lc, rekeyed)
			olds[foreach_current_index(lc)] = (char *) lfirst(lc);
		arr = text_array(olds, list_length(rekeyed));
		morango_owner_exec(dm->m->relid, dm->rekey_sql, 1, (Oid[]) {TEXTARRAYOID}, &arr, NULL,
						   SPI_OK_DELETE);
	}

	if (err_ids != NIL)
	{
		set_errors(dm, err_ids, err_msgs);
		refused += list_length(err_ids);
	}
	return refused;
}

/*
 * Give every dirty record of dm its application key, computed from the
 * typed primary key values of its serialized data under the canonical
 * settings (the text the capture trigger computes for the same row).  A
 * live record whose key changed is re-keyed: the row with the old key is
 * deleted and the record takes the new key.  Records whose key cannot be
 * read (a wrong type), is null, or is held by another record get an error
 * and stay dirty.  Dirty hard-deleted records without a key have nothing
 * to delete here: they are marked clean.  Live records holding columns the
 * table does not have get an error too.  Works in batches of
 * morango.batch_size records.  Returns the number of records refused.
 */
static int64
prepare_keys(DeserModel *dm, Datum filter, bool filter_null)
{
	Oid			argtypes[6] = {TEXTOID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID, UUIDOID, INT4OID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', filter_null ? 'n' : ' ', ' ', 'n', ' '};
	int64		refused = 0;
	pg_uuid_t	last;
	MemoryContext batchcxt = AllocSetContextCreate(CurrentMemoryContext,
												   "morango deserialize batch",
												   ALLOCSET_DEFAULT_SIZES);

	values[0] = CStringGetTextDatum(dm->m->profile);
	values[1] = CStringGetTextDatum(dm->m->model_name);
	values[2] = filter;
	values[3] = dm->columns;
	values[5] = Int32GetDatum(morango_batch_size);

	/* the records that need a key: new ones, and live ones (their key may have changed) */
	for (bool more = true; more;)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(batchcxt);
		Datum		ids;
		int			n;

		more = next_page("SELECT s.id FROM morango.store_dirty d JOIN morango.store s ON s.id = d.id"
						 " WHERE d.profile = $1 AND d.model_name = $2 AND NOT d.keyed"
						 "   AND NOT s.hard_deleted AND (s.app_key IS NULL OR NOT s.deleted)"
						 "   AND " FILTER_PRED(3)
						 "   AND ($5::uuid IS NULL OR d.id > $5)"
						 " ORDER BY d.id LIMIT $6",
						 6, argtypes, values, nulls, 4, &last, &ids, &n, NULL);
		if (n > 0)
			refused += prepare_keys_batch(dm, ids, n);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(batchcxt);
		CHECK_FOR_INTERRUPTS();
	}
	MemoryContextDelete(batchcxt);

	morango_spi_exec("DELETE FROM morango.store_dirty d USING morango.store s"
					 " WHERE d.profile = $1 AND d.model_name = $2 AND NOT d.keyed AND s.id = d.id"
					 "   AND s.app_key IS NULL AND s.hard_deleted AND " FILTER_PRED(3),
					 3, argtypes, values, nulls, SPI_OK_DELETE);

	/* live records with columns the table lacks are refused, not truncated */
	morango_spi_exec("UPDATE morango.store_dirty d SET error ="
					 "  'table has no column ' || (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(k), ', ' ORDER BY k)"
					 "    FROM pg_catalog.jsonb_object_keys(s.serialized) AS k WHERE k <> ALL ($4::text[]))"
					 "  || ' of the record'"
					 " FROM morango.store s"
					 " WHERE d.profile = $1 AND d.model_name = $2 AND NOT d.keyed AND s.id = d.id"
					 "   AND NOT s.deleted"
					 "   AND " FILTER_PRED(3)
					 "   AND EXISTS (SELECT 1 FROM pg_catalog.jsonb_object_keys(s.serialized) AS k"
					 "               WHERE k <> ALL ($4::text[]))",
					 4, argtypes, values, nulls, SPI_OK_UPDATE);
	refused += (int64) SPI_processed;
	return refused;
}

/*
 * Write one batch: the n records ids of dm (taken and locked by the
 * candidates query).  Keeps those whose application row we can lock (or
 * that have none) and that were not changed locally; writes them as one
 * statement, or one by one if that fails.  fresh: the records had no
 * error before (records that failed before go one by one at once).
 */
static void
write_records(DeserModel *dm, bool deleted, bool fresh, Datum ids, Datum keyarr,
			  DeserCounts *counts)
{
	const char *write_sql = deleted ? dm->delete_sql : dm->upsert_sql;
	Oid			idtype[1] = {UUIDARRAYOID};
	bool		have_rows = false;
	int			n;
	Datum	   *elems;
	Datum	   *data;
	char	  **keys;
	int64		written;
	int64		nok = 0;
	List	   *err_ids = NIL;
	List	   *err_msgs = NIL;

	/*
	 * keep only records whose application row we could lock (or that have
	 * none): as the table's owner
	 */
	morango_owner_exec(dm->m->relid, dm->lock_sql, 2, (Oid[]) {UUIDARRAYOID, TEXTARRAYOID},
					   (Datum[]) {ids, keyarr}, NULL, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull)))
			have_rows = true;
	}
	ids = spi_uuid_array(&n, NULL);
	SPI_freetuptable(SPI_tuptable);
	if (n == 0)
		return;
	if (!deleted && !have_rows)
		write_sql = dm->insert_sql;

	/* ... and that were not changed locally (a new snapshot sees every commit) */
	morango_spi_exec(dm->unchanged_sql, 1, idtype, &ids, NULL, SPI_OK_SELECT);
	n = (int) SPI_processed;
	if (n == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		return;
	}
	elems = palloc(sizeof(Datum) * n);
	keys = palloc(sizeof(char *) * n);
	data = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

		memcpy(u, DatumGetUUIDP(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull)),
			   sizeof(pg_uuid_t));
		elems[i] = UUIDPGetDatum(u);
		keys[i] = SPI_getvalue(tup, SPI_tuptable->tupdesc, 2);
		data[i] = deleted ? (Datum) 0 :
			PointerGetDatum(DatumGetJsonbPCopy(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull)));
	}
	SPI_freetuptable(SPI_tuptable);

	if (fresh &&
		try_write_batch(dm, write_sql,
						PointerGetDatum(construct_array(elems, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR)),
						text_array(keys, n),
						deleted ? (Datum) 0 :
						PointerGetDatum(construct_array(data, n, JSONBOID, -1, false, TYPALIGN_INT)),
						keys, n, &written) == NULL)
	{
		if (deleted)
			counts->deleted += written;
		else
			counts->applied += written;
		return;
	}

	/*
	 * One by one, to find the records that fail.  Repeat over the failures
	 * while some succeed: a row whose parent is in the same batch (a
	 * self-referencing table) goes in once its parent has.
	 */
	for (;;)
	{
		int			progress = 0;
		int			nfail = 0;

		list_free(err_ids);
		list_free(err_msgs);
		err_ids = NIL;
		err_msgs = NIL;
		for (int i = 0; i < n; i++)
		{
			char	   *err;

			CHECK_FOR_INTERRUPTS();
			err = try_write_batch(dm, deleted ? dm->delete_sql : dm->upsert_sql,
								  PointerGetDatum(construct_array(&elems[i], 1, UUIDOID, UUID_LEN,
																  false, TYPALIGN_CHAR)),
								  text_array(&keys[i], 1),
								  deleted ? (Datum) 0 :
								  PointerGetDatum(construct_array(&data[i], 1, JSONBOID, -1,
																  false, TYPALIGN_INT)),
								  &keys[i], 1, &written);
			if (err == NULL)
			{
				nok += written;
				progress++;
			}
			else
			{
				err_ids = lappend(err_ids, DatumGetPointer(elems[i]));
				err_msgs = lappend(err_msgs, err);
				keys[nfail] = keys[i];
				data[nfail] = data[i];
				elems[nfail++] = elems[i];
			}
		}
		n = nfail;
		if (progress == 0 || n == 0)
			break;
	}
	if (deleted)
		counts->deleted += nok;
	else
		counts->applied += nok;
	counts->failed += list_length(err_ids);
	if (err_ids != NIL)
		set_errors(dm, err_ids, err_msgs);
}

/*
 * Write the dirty records of dm that are tombstones (deleted) or live
 * (!deleted): first the records that failed before, one by one; then the
 * others in batches of morango.batch_size, each one statement, falling back
 * to one by one if it fails.  Each batch's memory is freed before the
 * next.
 */
static void
process_model(DeserModel *dm, bool deleted, Datum filter, bool filter_null,
			  DeserCounts *counts)
{
	MemoryContext batchcxt = AllocSetContextCreate(CurrentMemoryContext,
												   "morango deserialize batch",
												   ALLOCSET_DEFAULT_SIZES);

	/* records that failed before first, so this run's failures are tried once */
	for (int pass = 0; pass < 2; pass++)
	{
		bool		fresh = (pass == 1);
		Oid			argtypes[8] = {TEXTOID, TEXTOID, BOOLOID, BOOLOID, TEXTARRAYOID, TEXTARRAYOID,
		UUIDOID, INT4OID};
		Datum		values[8];
		char		nulls[8] = {' ', ' ', ' ', ' ', filter_null ? 'n' : ' ', ' ', 'n', ' '};
		pg_uuid_t	last;

		values[0] = CStringGetTextDatum(dm->m->profile);
		values[1] = CStringGetTextDatum(dm->m->model_name);
		values[2] = BoolGetDatum(deleted);
		values[3] = BoolGetDatum(fresh);
		values[4] = filter;
		values[5] = dm->columns;
		values[7] = Int32GetDatum(morango_batch_size);
		for (bool more = true; more;)
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(batchcxt);
			Datum		ids;
			Datum		keys;
			int			n;

			more = next_page(candidates_sql, 8, argtypes, values, nulls, 6, &last, &ids, &n, &keys);
			if (n > 0)
			{
				write_records(dm, deleted, fresh, ids, keys, counts);
				morango_fault("deserialize");
			}
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(batchcxt);
			CHECK_FOR_INTERRUPTS();
		}
	}
	MemoryContextDelete(batchcxt);
}

/*
 * morango_deserialize_internal
 *		Deserialize every dirty store record of `profile` (NULL: all) under
 *		`filter` (NULL: all).  Must run inside SPI.
 */
void
morango_deserialize_internal(const char *profile, Datum filter, bool filter_null,
							 int64 *applied, int64 *deleted, int64 *failed)
{
	List	   *models;
	List	   *dms = NIL;
	List	   *ordered;
	ListCell   *lc;
	DeserCounts counts = {0, 0, 0};
	int			nestlevel;
	bool		isnull;

	*applied = *deleted = *failed = 0;

	/* nothing waits (a no-op sync): no statement to build */
	morango_spi_exec("SELECT EXISTS (SELECT 1 FROM morango.store_dirty d"
					 "               WHERE $1::text IS NULL OR d.profile = $1)",
					 1, (Oid[]) {TEXTOID},
					 (Datum[]) {profile ? CStringGetTextDatum(profile) : (Datum) 0},
					 profile ? NULL : "n", SPI_OK_SELECT);
	if (!DatumGetBool(morango_spi_value(1, &isnull)))
		return;

	models = morango_registry_models(profile, CurrentMemoryContext);

	nestlevel = morango_pin_settings(true);
	foreach(lc, models)
		dms = lappend(dms, build_model((MorangoModel *) lfirst(lc)));
	ordered = order_models(dms);
	morango_unpin_settings(nestlevel);

	foreach(lc, ordered)
		counts.failed += prepare_keys((DeserModel *) lfirst(lc), filter, filter_null);

	/*
	 * Never wait long on an application transaction (an insert of the same
	 * new key): give up on that record for this run instead.
	 *
	 * And if the application already waits for a row this transaction
	 * wrote, such a wait is a deadlock: find it at once (deadlock_timeout's
	 * minimum), so that deserialize is the victim.  Left to the default,
	 * the application's own deadlock check (deadlock_timeout after it
	 * started waiting) could fall inside our wait and pick the application
	 * (test/isolation/specs/deserialize_insert_deadlock.spec).  A
	 * superuser setting: only this backend's checks run sooner.
	 */
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("lock_timeout", "100ms", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("deadlock_timeout", "1ms", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	/* a few large statements per batch: JIT compiling them costs more than it saves */
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	PG_TRY();
	{
		/* upserts parents first, deletes children first */
		foreach(lc, ordered)
			process_model((DeserModel *) lfirst(lc), false, filter, filter_null, &counts);
		for (int i = list_length(ordered) - 1; i >= 0; i--)
			process_model((DeserModel *) list_nth(ordered, i), true, filter, filter_null, &counts);
	}
	PG_FINALLY();
	{
		AtEOXact_GUC(true, nestlevel);
	}
	PG_END_TRY();

	*applied = counts.applied;
	*deleted = counts.deleted;
	*failed = counts.failed;
}

/*
 * morango.deserialize(profile text DEFAULT NULL, filter text[] DEFAULT NULL,
 *                     OUT applied bigint, OUT deleted bigint, OUT failed bigint)
 */
Datum
morango_deserialize(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	int64		applied,
				deleted,
				failed;
	char	   *profile = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (!PG_ARGISNULL(1))
		morango_check_filter(PG_GETARG_ARRAYTYPE_P(1));

	morango_spi_connect();
	morango_deserialize_internal(profile, PG_GETARG_DATUM(1), PG_ARGISNULL(1),
								 &applied, &deleted, &failed);
	SPI_finish();

	values[0] = Int64GetDatum(applied);
	values[1] = Int64GetDatum(deleted);
	values[2] = Int64GetDatum(failed);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
