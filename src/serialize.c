/*-------------------------------------------------------------------------
 *
 * serialize.c
 *		Step 2 of a record's path: turn the changes the trigger noted into
 *		store versions, all stamped with one new counter.
 *
 * morango.serialize(profile, filter) locks the current instance row, takes
 * one new counter (counters.c), and then, for each registered model with changes, in
 * batches of morango.batch_size changed keys, reads the batch's rows as the
 * table's owner (owner.c: their to_jsonb and the partition and source id
 * expressions, as they are now), and runs one set-based statement that
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
#include "storage/itemptr.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "morango.h"

PG_FUNCTION_INFO_V1(morango_serialize);

/*
 * Serializing one model runs, per batch of morango.batch_size changed keys,
 * statements of two kinds (owner.c): the ones that read the application
 * table (its rows, to_jsonb, the registered expressions) run as the table's
 * owner and touch none of morango's tables; the ones that read and write
 * the store run as us and touch no application table.  Values pass
 * between them as array parameters.
 *
 *   changes_sql (us, a cursor)   every change of the model, ordered by key
 *   rows_sql (owner)             the batch's keys -> their rows as they are
 *                                now: data, partition, source id
 *   others_sql (us)              keys of other live-looking records a new
 *                                row's record id would take over
 *   live_sql (owner)             which of those still have a row (rare)
 *   stamp_sql (us)               write the store, version vectors, consume
 *                                the changes handled
 *
 * The changes are read first (snapshot 1), the rows later (2), the store
 * last (3): a change committed between 1 and 2 is in the data read at 2
 * and its row in morango.changes stays for the next serialize, which finds
 * nothing new (a change is consumed by its ctid, as read at 1).
 */
static const char *changes_sql =
"SELECT c.key, c.hard, c.ctid FROM morango.changes c WHERE c.model = $1::pg_catalog.regclass"
" ORDER BY c.key";

/* $1 keys text[] -> (index into $1, data, partition, source id) of the rows that exist */
static char *
rows_sql(MorangoModel *m, const char *qualname)
{
	return psprintf("SELECT k.i, r.j, r.p, r.sid"
					" FROM pg_catalog.unnest($1::text[]) WITH ORDINALITY AS k(_morango_key, i),"
					"      %s AS kr,"
					"      LATERAL (SELECT pg_catalog.to_jsonb(t) AS j, (%s)::text AS p, (%s)::text AS sid"
					"               FROM ONLY %s AS t WHERE %s) AS r",
					morango_key_record_sql(m, qualname, "k._morango_key::jsonb"),
					m->partition_expr, m->source_id_expr, qualname,
					morango_pk_equal_sql(m, "t", "kr"));
}

/*
 * $1 profile, $2 model name, $3 keys, $4 partitions, $5 source ids: the
 * application keys of live records that a new row's record id (by the id
 * rule) already belongs to; a new row takes such a record over only if its
 * row is gone (live_sql).
 */
static const char *others_sql =
"SELECT DISTINCT s.app_key"
" FROM ROWS FROM (pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::text[]),"
"                pg_catalog.unnest($5::text[])) AS v(key, p, sid)"
" JOIN morango.store s ON s.id = morango.record_id(v.p, v.sid, $2)"
" WHERE s.app_key IS NOT NULL AND s.app_key <> v.key AND NOT s.deleted"
"   AND NOT EXISTS (SELECT 1 FROM morango.store c"
"                   WHERE c.profile = $1 AND c.model_name = $2 AND c.app_key = v.key)";

/* $1 keys text[] -> those that have an application row */
static char *
live_sql(MorangoModel *m, const char *qualname)
{
	return psprintf("SELECT u.k FROM pg_catalog.unnest($1::text[]) AS u(k), %s AS kr"
					" WHERE EXISTS (SELECT 1 FROM ONLY %s AS t WHERE %s)",
					morango_key_record_sql(m, qualname, "u.k::jsonb"),
					qualname, morango_pk_equal_sql(m, "t", "kr"));
}

/*
 * The statement that stamps a batch of changes.  Parameters: $1 unused
 * (the table's oid), $2 profile, $3 model name, $4 filter (text[] or
 * NULL), $5 instance id, $6 counter; the batch: $7 keys, $8 hard flags,
 * $9 data (NULL: no row), $10 partitions, $11 source ids (from rows_sql),
 * $12 the ctids of the changes read and $13 the index of each one's key in
 * $7; $14 application keys of other records that still have a row;
 * $15 and $16 whether the model's records must keep the partition and the
 * source id their expressions give.  Returns one row: records stamped, rows whose
 * expressions gave no value, rows whose record id is taken, rows that would
 * move their record.
 */
static const char *stamp_sql =
"WITH cur AS ("
"  SELECT v.key, v.hard, v.j, v.p, v.sid, v.i,"
"         s.id AS store_id, s.partition AS store_partition, s.source_id AS store_source_id,"
"         s.serialized AS old, s.deleted AS old_deleted,"
"         (s.id IS NOT NULL AND EXISTS (SELECT 1 FROM morango.store_dirty d"
"                  WHERE d.profile = $2 AND d.model_name = $3 AND d.id = s.id)) AS old_dirty"
"  FROM ROWS FROM (pg_catalog.unnest($7::text[]), pg_catalog.unnest($8::boolean[]),"
"                  pg_catalog.unnest($9::jsonb[]), pg_catalog.unnest($10::text[]),"
"                  pg_catalog.unnest($11::text[])) WITH ORDINALITY AS v(key, hard, j, p, sid, i)"
"  LEFT JOIN morango.store s"
"    ON s.profile = $2 AND s.model_name = $3 AND s.app_key = v.key"
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
"  SELECT c2.*, ($4::text[] IS NULL OR morango.in_filter(c2.part, $4::text[])) AS in_scope,"
/*
 * A verified model's record keeps the partition and source id its
 * expressions gave at its first serialization, and every receiver checks
 * that they still give them for the data: a row that would now give others
 * is not stamped (its change stays, with a warning).
 */
"         (c2.store_id IS NOT NULL AND c2.j IS NOT NULL AND NOT c2.unchanged"
"          AND (($15 AND c2.p IS DISTINCT FROM c2.store_partition)"
"               OR ($16 AND c2.sid IS DISTINCT FROM c2.store_source_id))) AS moved"
"  FROM c2"
"), todo AS ("
/*
 * One row per record.  Two keys can name one record when a primary key
 * changed and the source id does not depend on it: the live row wins and
 * takes the record over.
 */
"  SELECT DISTINCT ON (rid) * FROM c3"
"  WHERE in_scope AND NOT nothing AND NOT bad AND NOT unchanged AND NOT moved"
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
/*
 * a tombstone stamped on a hard-deleted record (a local delete noted
 * before a peer's hard delete arrived) stays hard-deleted: deletes are
 * sticky, and a soft tombstone without data would be one no receiver can
 * check against its data
 */
"    hard_deleted = EXCLUDED.hard_deleted OR (EXCLUDED.deleted AND s.hard_deleted),"
"    conflicting_serialized_data ="
"      CASE WHEN EXCLUDED.hard_deleted OR (EXCLUDED.deleted AND s.hard_deleted) THEN '[]'::jsonb"
"           WHEN EXISTS (SELECT 1 FROM morango.store_dirty d"
"                        WHERE d.profile = $2 AND d.model_name = $3 AND d.id = s.id)"
"             THEN morango.conflict_history(s.serialized, s.conflicting_serialized_data)"
"           ELSE s.conflicting_serialized_data END,"
"    last_saved_instance = EXCLUDED.last_saved_instance,"
"    last_saved_counter = EXCLUDED.last_saved_counter,"
"    last_transfer_session_id = NULL"
"  WHERE s.app_key IS NULL OR s.app_key = EXCLUDED.app_key OR s.deleted"
"     OR s.app_key <> ALL ($14::text[])"
"  RETURNING s.id, s.app_key"
"), clean AS ("	/* the local version wins over a waiting incoming one */
"  DELETE FROM morango.store_dirty d USING w"
"  WHERE d.profile = $2 AND d.model_name = $3 AND d.id = w.id"
"), rmc AS ("
"  INSERT INTO morango.record_max_counters AS r (record_id, instance_id, counter)"
"  SELECT id, $5, $6 FROM w"
"  ON CONFLICT (record_id, instance_id)"
"  DO UPDATE SET counter = GREATEST(r.counter, EXCLUDED.counter)"
/* consume what was handled: written, nothing to write, or unchanged */
"), del AS ("
"  DELETE FROM morango.changes c"
"  WHERE c.ctid = ANY (ARRAY("
"    SELECT u.cid FROM ROWS FROM (pg_catalog.unnest($12::tid[]), pg_catalog.unnest($13::integer[]))"
"         AS u(cid, i)"
"    JOIN c3 ON c3.i = u.i"
"    WHERE c3.nothing OR (c3.in_scope AND c3.unchanged)"
"       OR c3.key IN (SELECT app_key FROM w)"
"       OR c3.rid IN (SELECT id FROM w)))"
")"
" SELECT (SELECT count(*) FROM w),"
"        (SELECT count(*) FROM c3 WHERE bad),"
"        (SELECT count(*) FROM todo WHERE key NOT IN (SELECT app_key FROM w)),"
"        (SELECT count(*) FROM c3 WHERE moved AND in_scope)";

/* One batch of changed keys of a model, and what serializing it needs. */
typedef struct StampBatch
{
	MorangoModel *m;
	const char *qualname;
	const char *rows_sql;
	const char *live_sql;
	Datum		filter;
	bool		filter_null;
	Datum		instance;
	int64		counter;
	/* the batch */
	int			nkeys;
	int			maxkeys;
	Datum	   *keys;			/* text */
	bool	   *hard;
	int			ncids;
	int			maxcids;
	ItemPointerData *cids;
	Datum	   *cid_key;		/* int4: 1-based index into keys */
	/* totals over the model */
	int64		result[4];		/* stamped, no partition/source id, id taken, moved */
} StampBatch;

static Datum
array_of(Datum *elems, bool *nulls, int n, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, type,
											  typlen, typbyval, typalign));
}

/* the text[] of column col of the current SPI result */
static Datum
spi_text_array(int col)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(SPI_processed, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(SPI_processed, 1));

	for (uint64 i = 0; i < SPI_processed; i++)
		elems[i] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, col, &nulls[i]);
	return array_of(elems, nulls, (int) SPI_processed, TEXTOID);
}

/*
 * Serialize the batch b holds: read its rows as the table's owner, then
 * stamp the store.  Adds to b->result and empties the batch.
 */
static void
stamp_batch(StampBatch *b)
{
	int			n = b->nkeys;
	Datum		keys = array_of(b->keys, NULL, n, TEXTOID);
	Datum	   *j = palloc0(sizeof(Datum) * n);
	Datum	   *p = palloc0(sizeof(Datum) * n);
	Datum	   *sid = palloc0(sizeof(Datum) * n);
	bool	   *jnull = palloc(sizeof(bool) * n);
	bool	   *pnull = palloc(sizeof(bool) * n);
	bool	   *snull = palloc(sizeof(bool) * n);
	Datum		parr,
				sarr,
				live;
	Datum	   *cidd = palloc(sizeof(Datum) * Max(b->ncids, 1));
	Datum		values[16];
	char		nulls[16];
	Oid			argtypes[16] = {OIDOID, TEXTOID, TEXTOID, TEXTARRAYOID, UUIDOID, INT8OID,
		TEXTARRAYOID, BOOLARRAYOID, JSONBARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	TIDARRAYOID, INT4ARRAYOID, TEXTARRAYOID, BOOLOID, BOOLOID};

	for (int i = 0; i < n; i++)
		jnull[i] = pnull[i] = snull[i] = true;

	/* the rows, as the table's owner */
	morango_owner_exec(b->m->relid, b->rows_sql, 1, (Oid[]) {TEXTARRAYOID}, &keys, NULL,
					   SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int			i = (int) DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)) - 1;

		j[i] = SPI_getbinval(tup, desc, 2, &jnull[i]);
		p[i] = SPI_getbinval(tup, desc, 3, &pnull[i]);
		sid[i] = SPI_getbinval(tup, desc, 4, &snull[i]);
	}
	parr = array_of(p, pnull, n, TEXTOID);
	sarr = array_of(sid, snull, n, TEXTOID);
	values[8] = array_of(j, jnull, n, JSONBOID);
	/* the arrays hold copies: the rows' result goes (SPI keeps it otherwise) */
	SPI_freetuptable(SPI_tuptable);

	/* other records a new row would take over: do they still have a row? */
	morango_spi_exec(others_sql, 5, (Oid[]) {TEXTOID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID},
					 (Datum[]) {CStringGetTextDatum(b->m->profile), CStringGetTextDatum(b->m->model_name),
					 keys, parr, sarr},
					 NULL, SPI_OK_SELECT);
	live = spi_text_array(1);
	if (SPI_processed > 0)
	{
		SPI_freetuptable(SPI_tuptable);
		morango_owner_exec(b->m->relid, b->live_sql, 1, (Oid[]) {TEXTARRAYOID}, &live, NULL,
						   SPI_OK_SELECT);
		live = spi_text_array(1);
	}
	SPI_freetuptable(SPI_tuptable);

	for (int i = 0; i < b->ncids; i++)
		cidd[i] = PointerGetDatum(&b->cids[i]);
	memset(nulls, ' ', sizeof(nulls));
	values[0] = ObjectIdGetDatum(b->m->relid);
	values[1] = CStringGetTextDatum(b->m->profile);
	values[2] = CStringGetTextDatum(b->m->model_name);
	values[3] = b->filter;
	nulls[3] = b->filter_null ? 'n' : ' ';
	values[4] = b->instance;
	values[5] = Int64GetDatum(b->counter);
	values[6] = keys;
	{
		Datum	   *h = palloc(sizeof(Datum) * n);

		for (int i = 0; i < n; i++)
			h[i] = BoolGetDatum(b->hard[i]);
		values[7] = array_of(h, NULL, n, BOOLOID);
	}
	values[9] = parr;
	values[10] = sarr;
	values[11] = array_of(cidd, NULL, b->ncids, TIDOID);
	values[12] = array_of(b->cid_key, NULL, b->ncids, INT4OID);
	values[13] = live;
	values[14] = BoolGetDatum(b->m->verify);
	values[15] = BoolGetDatum(b->m->verify_source);
	morango_spi_exec(stamp_sql, 16, argtypes, values, nulls, SPI_OK_SELECT);
	if (SPI_processed != 1)
		elog(ERROR, "the stamp statement returned no row");
	for (int i = 0; i < 4; i++)
	{
		bool		isnull;

		b->result[i] += DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
													i + 1, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	b->nkeys = 0;
	b->ncids = 0;
}

/*
 * Serialize every change of model b->m (run in a subtransaction by
 * stamp_model): read the changes in key order through a cursor and stamp
 * them in batches of morango.batch_size keys, each batch's memory freed
 * before the next.  A key's changes never straddle two batches.
 */
static void
stamp_run(void *arg)
{
	StampBatch *b = (StampBatch *) arg;
	MemoryContext batchcxt = AllocSetContextCreate(CurrentMemoryContext,
												   "morango serialize batch",
												   ALLOCSET_DEFAULT_SIZES);
	MemoryContext outer = CurrentMemoryContext;
	Portal		portal;
	char	   *last = NULL;

	b->maxkeys = morango_batch_size;
	b->maxcids = morango_batch_size;
	portal = morango_spi_cursor_open(changes_sql, 1, (Oid[]) {OIDOID},
									 (Datum[]) {ObjectIdGetDatum(b->m->relid)}, NULL, true);
	MemoryContextSwitchTo(batchcxt);
	b->keys = palloc(sizeof(Datum) * b->maxkeys);
	b->hard = palloc(sizeof(bool) * b->maxkeys);
	b->cids = palloc(sizeof(ItemPointerData) * b->maxcids);
	b->cid_key = palloc(sizeof(Datum) * b->maxcids);
	b->nkeys = 0;
	b->ncids = 0;
	for (;;)
	{
		SPITupleTable *tt;
		uint64		nrows;

		nrows = morango_spi_cursor_fetch(portal, morango_batch_size);
		/* stamp_batch() below runs statements: keep this fetch's result */
		tt = SPI_tuptable;
		if (nrows == 0)
			break;
		for (uint64 r = 0; r < nrows; r++)
		{
			bool		isnull;
			char	   *key = SPI_getvalue(tt->vals[r], tt->tupdesc, 1);
			bool		hard = DatumGetBool(SPI_getbinval(tt->vals[r], tt->tupdesc, 2, &isnull));
			ItemPointer cid = (ItemPointer) DatumGetPointer(SPI_getbinval(tt->vals[r], tt->tupdesc, 3, &isnull));

			if (last == NULL || strcmp(last, key) != 0)
			{
				if (b->nkeys == b->maxkeys)
				{
					/* the batch is full: stamp it, then start the next one afresh */
					stamp_batch(b);
					MemoryContextSwitchTo(outer);
					MemoryContextReset(batchcxt);
					MemoryContextSwitchTo(batchcxt);
					key = SPI_getvalue(tt->vals[r], tt->tupdesc, 1);
					b->keys = palloc(sizeof(Datum) * b->maxkeys);
					b->hard = palloc(sizeof(bool) * b->maxkeys);
					b->cids = palloc(sizeof(ItemPointerData) * b->maxcids);
					b->cid_key = palloc(sizeof(Datum) * b->maxcids);
					CHECK_FOR_INTERRUPTS();
				}
				b->keys[b->nkeys] = CStringGetTextDatum(key);
				b->hard[b->nkeys] = hard;
				b->nkeys++;
				last = key;
			}
			else
				b->hard[b->nkeys - 1] |= hard;
			if (b->ncids == b->maxcids)
			{
				b->maxcids *= 2;
				b->cids = repalloc(b->cids, sizeof(ItemPointerData) * b->maxcids);
				b->cid_key = repalloc(b->cid_key, sizeof(Datum) * b->maxcids);
			}
			ItemPointerCopy(cid, &b->cids[b->ncids]);
			b->cid_key[b->ncids] = Int32GetDatum(b->nkeys);
			b->ncids++;
		}
		/* the keys of this fetch were copied (SPI_getvalue) into batchcxt */
		SPI_freetuptable(tt);
	}
	if (b->nkeys > 0)
		stamp_batch(b);
	SPI_cursor_close(portal);
	MemoryContextSwitchTo(outer);
	MemoryContextDelete(batchcxt);
}

/*
 * Stamp the changes of one model, in a subtransaction: an error (say, an
 * expression that divides by zero for some row) holds back this model
 * only.  Returns the number of records stamped; warns about rows it could
 * not stamp.
 */
static int64
stamp_model(MorangoModel *m, Datum filter, bool filter_null, Datum instance, int64 counter)
{
	StampBatch	b;
	ErrorData  *edata;
	int64		stamped,
				bad,
				taken,
				moved;

	memset(&b, 0, sizeof(b));
	b.m = m;
	b.qualname = morango_qualified_name(m->relid);
	b.rows_sql = rows_sql(m, b.qualname);
	b.live_sql = live_sql(m, b.qualname);
	b.filter = filter;
	b.filter_null = filter_null;
	b.instance = instance;
	b.counter = counter;

	edata = morango_try(stamp_run, &b);
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
	stamped = b.result[0];
	bad = b.result[1];
	taken = b.result[2];
	moved = b.result[3];

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
	if (moved > 0)
		ereport(WARNING,
				(errcode(ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION),
				 errmsg(INT64_FORMAT " changed rows of morango model \"%s\" would move their record to another partition or source id",
						moved, m->model_name),
				 errdetail("A record keeps the partition and source id of its first serialization, and "
						   "receivers check that the registered expressions still give them for its data."),
				 errhint("The changes stay pending: change those columns back, or delete the row and insert it "
						 "with a new key; or register the table with verify => false.")));
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
	bool		isnull;
	pg_uuid_t  *instance;
	int64		next;
	int64		counter;
	int64		stamped = 0;
	List	   *models;
	ListCell   *lc;
	int			nestlevel;

	next = morango_next_counter(&instance);

	/* the models of the profile that have changes */
	{
		Oid			argtypes[1] = {TEXTOID};
		Datum		values[1] = {profile};
		char		nulls[1] = {profile_null ? 'n' : ' '};

		morango_spi_query("SELECT DISTINCT c.model::oid FROM morango.changes c"
						  " JOIN morango.models m ON m.model = c.model"
						  " WHERE $1::text IS NULL OR m.profile = $1",
						  1, argtypes, values, nulls, 0);
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
			stamped += stamp_model(m, filter, filter_null, UUIDPGetDatum(instance), next);
	}
	morango_unpin_settings(nestlevel);
	morango_analyze_store(stamped);

	/* the versions exist now: their counter becomes the instance's */
	if (stamped > 0)
		morango_counter_used(instance, next);

	/*
	 * This database holds every version this instance ever wrote up to its
	 * counter (we hold the lock: every earlier counter is committed), so
	 * record that for each prefix of the filter ('' when unfiltered).
	 */
	counter = stamped > 0 ? next : next - 1;
	if (counter > 0)
		morango_raise_own_max_counters(instance, counter, profile, profile_null,
									   filter, filter_null);
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
	morango_spi_connect();
	stamped = morango_serialize_internal(PG_GETARG_DATUM(0), PG_ARGISNULL(0),
										 PG_GETARG_DATUM(1), PG_ARGISNULL(1));
	SPI_finish();
	PG_RETURN_INT64(stamped);
}
