/*-------------------------------------------------------------------------
 *
 * queue.c
 *		Step 3 of a record's path: the producer fills the outgoing buffer of
 *		a transfer session with what the receiver lacks.
 *
 * morango.queue(transfer_session) reads the two FSICs the transfer
 * session holds (this side's, as producer, and the receiver's), expands
 * both for the session's filter and diffs them (fsic.c, pure).  It reads
 * the candidates (records of the profile under the filter newer than the
 * lowest counter the receiver needs of their instance) through a cursor,
 * keeps those whose last saved version is newer than what the receiver has
 * for their partition and instance (a binary search in the diff's sorted
 * partitions, queue_instances), and then copies them, in one statement,
 * into morango.buffer, numbered in a stable order (seq), together with
 * every entry of their version vectors (record_max_counter_buffer).
 * Morango's _queue_into_buffer_v2, without its string-built SQL, its
 * 100,000-entry limit and its cost of (diff partitions) x (records).
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
 * be sent (its counter is above every claim it is given now).  Queue holds
 * the instance lock from before it reads its candidates until its
 * transaction ends, so that no such version commits between the
 * candidates and their copy into the buffer (the copy would take it, above
 * the claim).  A pull serializes, takes its FSIC and queues in one
 * transaction under the instance lock (morango.peer_begin()), so the
 * bound keeps nothing back there.
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

#include "fsic.h"
#include "morango.h"

PG_FUNCTION_INFO_V1(morango_queue);

/*
 * What the receiver lacks of one instance: the FSIC diff's partitions for
 * it, sorted and prefix-free (filter.c), each with its counter as value
 * ("send the versions above it"), and the lowest of those counters.
 */
typedef struct QueueInstance
{
	pg_uuid_t	inst;
	MorangoPrefix *floors;
	int			nfloors;
	int64		min_counter;
} QueueInstance;

/*
 * The most instance ranges, or partition ranges, written into the
 * candidates query.  A hub's
 * FSIC names every instance it holds versions of under a device's filter,
 * and a device cannot claim instances it has never seen a version of
 * (counters.c), so the diff of a single-user device against a hub names
 * nearly every instance the hub knows: a thousand OR terms cost more to
 * plan than the few records under the filter cost to read.  Above this
 * many, the candidates are the records under the filter, and
 * queue_wanted() alone picks those the receiver lacks.
 */
#define QUEUE_MAX_RANGES 64

/*
 * The candidates: the store records of the profile under the filter whose
 * last saved version is above the lowest counter the receiver needs of its
 * instance.  $1 profile, $2 filter; then per instance i, $(3+2i) the
 * instance and $(4+2i) that counter; then $(3+2n) this database's current
 * instance and $(4+2n) the claim our FSIC makes for it (the bound in the
 * header comment); then per filter prefix j, the range of partitions that
 * start with it, $(5+2n+2j) to $(6+2n+2j) (morango_prefix_upper; none
 * when a prefix has no upper bound, say '').  The (instance, counter) and
 * partition ranges are written out so that the planner sees how many
 * records each holds: an index scan of store_version for the few records
 * an incremental sync needs, of store_partition for the few under a
 * narrow filter, a sequential scan for a full sync.
 */
static char *
candidates_sql(int ninst, int nranges)
{
	StringInfoData sql;
	int			first_range = 5 + 2 * ninst;

	initStringInfo(&sql);
	/*
	 * records with a version of our own instance above our claim (by I1, a
	 * record's version vector holds its last saved version, so this covers
	 * that too); usually none, read from record_max_counters_instance
	 */
	appendStringInfo(&sql,
					 "WITH over AS MATERIALIZED ("
					 "  SELECT r.record_id FROM morango.record_max_counters r"
					 "  WHERE r.instance_id = $%d AND r.counter > $%d"
					 ")"
					 " SELECT s.id, s.partition, s.last_saved_instance, s.last_saved_counter"
					 " FROM morango.store s"
					 " WHERE s.profile = $1 AND morango.in_filter(s.partition, $2::text[])"
					 "   AND NOT EXISTS (SELECT 1 FROM over WHERE over.record_id = s.id)",
					 3 + 2 * ninst, 4 + 2 * ninst);
	/* the partitions under the filter, as ranges of store_partition */
	for (int i = 0; i < nranges; i++)
		appendStringInfo(&sql, "%s(s.partition COLLATE \"C\" >= $%d AND s.partition COLLATE \"C\" < $%d)%s",
						 i ? " OR " : " AND (", first_range + 2 * i, first_range + 2 * i + 1,
						 i == nranges - 1 ? ")" : "");
	/* the records of the instances in the diff */
	if (ninst == 0)
		appendStringInfoString(&sql, " AND false");
	else if (ninst <= QUEUE_MAX_RANGES)
		for (int i = 0; i < ninst; i++)
			appendStringInfo(&sql, "%s(s.last_saved_instance = $%d AND s.last_saved_counter > $%d)%s",
							 i ? " OR " : " AND (", 3 + 2 * i, 4 + 2 * i, i == ninst - 1 ? ")" : "");
	return sql.data;
}

/*
 * $1 ts: this database's current instance and the highest counter this
 * side's FSIC (raw v2, the session's local_fsic) claims for it (0 if none)
 */
static const char *own_claim_sql =
"SELECT i.id, COALESCE((SELECT max((e.value)::bigint)"
"                       FROM (SELECT t.local_fsic->'super' UNION ALL SELECT t.local_fsic->'sub') AS m(map),"
"                            pg_catalog.jsonb_each(m.map) AS p, pg_catalog.jsonb_each_text(p.value) AS e"
"                       WHERE e.key::uuid = i.id), 0)"
" FROM morango.instances i, morango.transfer_sessions t WHERE i.current AND t.id = $1";

/* $1 ts, $2 the ids of the records to queue: into the buffer, numbered by id */
static const char *insert_sql =
"WITH ins AS ("
"  INSERT INTO morango.buffer (transfer_session_id, seq, record_id, profile, model_name,"
"      partition, source_id, serialized, deleted, hard_deleted,"
"      last_saved_instance, last_saved_counter, conflicting_serialized_data)"
"  SELECT $1, row_number() OVER (ORDER BY s.id), s.id, s.profile, s.model_name,"
"         s.partition, s.source_id, s.serialized, s.deleted, s.hard_deleted,"
"         s.last_saved_instance, s.last_saved_counter, s.conflicting_serialized_data"
"  FROM pg_catalog.unnest($2::uuid[]) AS sel(id) JOIN morango.store s ON s.id = sel.id"
"  RETURNING record_id"
"), rm AS ("
"  INSERT INTO morango.record_max_counter_buffer (transfer_session_id, record_id, instance_id, counter)"
"  SELECT $1, r.record_id, r.instance_id, r.counter"
"  FROM morango.record_max_counters r JOIN ins ON ins.record_id = r.record_id"
")"
" SELECT count(*) FROM ins";

/* bsearch comparator: a uuid against a QueueInstance */
static int
queue_instance_cmp(const void *key, const void *elem)
{
	return memcmp(key, &((const QueueInstance *) elem)->inst, UUID_LEN);
}

/* An entry of the diff: its instance, partition and counter. */
typedef struct QueueFloor
{
	const MorangoFsicEntry *e;
	const MorangoFsicPart *p;
} QueueFloor;

/* qsort comparator for QueueFloor, by instance */
static int
queue_floor_cmp(const void *a, const void *b)
{
	return memcmp(&((const QueueFloor *) a)->e->inst, &((const QueueFloor *) b)->e->inst, UUID_LEN);
}

/*
 * queue_instances
 *		The diff {partition: {instance: counter}} by instance, sorted by
 *		instance id; *ninst gets their number.  The floors point into diff.
 *
 *		A record of instance i in partition p is wanted when, for some diff
 *		partition P that p starts with, its counter is above P's counter
 *		for i.  morango_fsic_diff_maps() gives a partition Q the highest counter
 *		of the receiver's partitions that Q starts with, so when P is a
 *		prefix of Q, Q's counter is at least P's: the shortest diff
 *		partition that p starts with has the lowest counter, and it is the
 *		only one that matters.  So the partitions that start with another
 *		one of the same instance are dropped (morango_prefixes_sort with
 *		reduce keeps the shortest), and the one that can start p is found
 *		by binary search: O((d + c) log d) for d diff entries and c
 *		candidates, where comparing every candidate with every diff
 *		partition would be O(d * c).
 */
static QueueInstance *
queue_instances(const MorangoFsicMap *diff, int *ninst)
{
	int			nentries = diff->nentries;
	QueueFloor *floors = palloc(sizeof(QueueFloor) * Max(nentries, 1));
	QueueInstance *insts = palloc(sizeof(QueueInstance) * Max(nentries, 1));
	int			n = 0;

	for (int i = 0; i < diff->nparts; i++)
		for (int k = diff->parts[i].first; k < diff->parts[i].first + diff->parts[i].count; k++)
		{
			floors[k].e = &diff->entries[k];
			floors[k].p = &diff->parts[i];
		}
	qsort(floors, nentries, sizeof(QueueFloor), queue_floor_cmp);
	for (int r = 0, end; r < nentries; r = end)
	{
		QueueInstance *qi = &insts[n++];

		memcpy(&qi->inst, &floors[r].e->inst, UUID_LEN);
		for (end = r + 1; end < nentries; end++)
			if (memcmp(&qi->inst, &floors[end].e->inst, UUID_LEN) != 0)
				break;
		qi->nfloors = end - r;
		qi->floors = palloc(sizeof(MorangoPrefix) * qi->nfloors);
		qi->min_counter = PG_INT64_MAX;
		for (int k = 0; k < qi->nfloors; k++)
		{
			qi->floors[k].str = floors[r + k].p->name;
			qi->floors[k].len = (int) floors[r + k].p->len;
			qi->floors[k].value = floors[r + k].e->counter;
			qi->min_counter = Min(qi->min_counter, qi->floors[k].value);
		}
		qi->nfloors = morango_prefixes_sort(qi->floors, qi->nfloors, true);
	}
	pfree(floors);
	*ninst = n;
	return insts;
}

/*
 * queue_wanted
 *		Is the candidate record (instance, partition, counter) one the
 *		receiver lacks?
 */
static bool
queue_wanted(const QueueInstance *insts, int ninst, pg_uuid_t *inst, text *partition,
			 int64 counter)
{
	const QueueInstance *qi = bsearch(inst, insts, ninst, sizeof(QueueInstance),
									  queue_instance_cmp);
	int			k;

	if (qi == NULL)
		return false;
	k = morango_prefixes_find(qi->floors, qi->nfloors, VARDATA_ANY(partition),
							  (int) VARSIZE_ANY_EXHDR(partition));
	return k >= 0 && counter > qi->floors[k].value;
}

/*
 * queue_select
 *		The ids of the records the receiver lacks, as a uuid[] Datum: the
 *		candidates, read through a cursor in batches, tested in C.  Runs
 *		inside SPI.
 */
static Datum
queue_select(MorangoTransfer *t, QueueInstance *insts, int ninst)
{
	int			nranges = t->nfilter;
	int			nargs;
	Oid		   *argtypes;
	Datum	   *values;
	bool		isnull;
	pg_uuid_t  *ids;
	Datum	   *elems;
	int64		nids = 0;
	int64		cap = 1024;
	Portal		portal;

	/*
	 * a prefix without an upper bound: every partition is in range; and
	 * a filter of many prefixes is no narrow one
	 */
	if (nranges > QUEUE_MAX_RANGES)
		nranges = 0;
	for (int j = 0; j < nranges; j++)
	{
		int			len;

		if (morango_prefix_upper(t->prefixes[j], strlen(t->prefixes[j]), &len) == NULL)
			nranges = 0;
	}
	nargs = 4 + 2 * ninst + 2 * nranges;
	argtypes = palloc(sizeof(Oid) * nargs);
	values = palloc(sizeof(Datum) * nargs);
	for (int j = 0; j < nranges; j++)
	{
		int			len;
		char	   *hi = morango_prefix_upper(t->prefixes[j], strlen(t->prefixes[j]), &len);

		argtypes[4 + 2 * ninst + 2 * j] = TEXTOID;
		values[4 + 2 * ninst + 2 * j] = CStringGetTextDatum(t->prefixes[j]);
		argtypes[5 + 2 * ninst + 2 * j] = TEXTOID;
		values[5 + 2 * ninst + 2 * j] = PointerGetDatum(cstring_to_text_with_len(hi, len));
	}
	argtypes[0] = TEXTOID;
	values[0] = t->profile;
	argtypes[1] = TEXTARRAYOID;
	values[1] = t->filter;
	for (int i = 0; i < ninst; i++)
	{
		argtypes[2 + 2 * i] = UUIDOID;
		values[2 + 2 * i] = UUIDPGetDatum(&insts[i].inst);
		argtypes[3 + 2 * i] = INT8OID;
		values[3 + 2 * i] = Int64GetDatum(insts[i].min_counter);
	}
	/* our instance and our claim for it (see the header comment) */
	if (morango_spi_exec(own_claim_sql, 1, (Oid[]) {UUIDOID}, &t->id, NULL, SPI_OK_SELECT) != 1)
		elog(ERROR, "no current morango instance");
	argtypes[2 + 2 * ninst] = UUIDOID;
	values[2 + 2 * ninst] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	argtypes[3 + 2 * ninst] = INT8OID;
	values[3 + 2 * ninst] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	/* (the instance id points into that result, kept until SPI_finish) */
	ids = palloc(sizeof(pg_uuid_t) * cap);
	portal = morango_spi_cursor_open(candidates_sql(ninst, nranges), nargs, argtypes, values, NULL, false);
	while (morango_spi_cursor_fetch(portal, 10000) > 0)
	{
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;

			if (!queue_wanted(insts, ninst,
							  DatumGetUUIDP(SPI_getbinval(tup, desc, 3, &isnull)),
							  DatumGetTextPP(SPI_getbinval(tup, desc, 2, &isnull)),
							  DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull))))
				continue;
			if (nids == cap)
			{
				cap *= 2;
				ids = repalloc_huge(ids, sizeof(pg_uuid_t) * cap);
			}
			memcpy(&ids[nids++], DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull)), UUID_LEN);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	morango_fault("queue_candidates");
	elems = palloc_extended(sizeof(Datum) * Max(nids, 1), MCXT_ALLOC_HUGE);
	for (int64 i = 0; i < nids; i++)
		elems[i] = UUIDPGetDatum(&ids[i]);
	return PointerGetDatum(construct_array(elems, (int) nids, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
}

/*
 * morango_queue_transfer
 *		Queue transfer session t (this side must be its producer and it
 *		must hold both FSICs).  Idempotent: a session queued before is
 *		queued again from scratch (one that went on past queuing restarts
 *		there, transfer.c).  Returns records_total.  Runs inside SPI.
 */
int64
morango_queue_transfer(MorangoTransfer *t)
{
	Datum		ts = t->id;
	QueueInstance *insts;
	int			ninst;
	bool		isnull;
	MorangoFsicMap *diff;
	int64		total;
	int64		counter;
	MorangoTransferUpdate u = MORANGO_TRANSFER_KEEP;

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

	/*
	 * Under the instance lock until this transaction ends: no version of
	 * our own can be committed between reading the candidates and copying
	 * them (a serialize or a conflict merge waits), so what is copied is
	 * what the bound chose.  Without it, such a version was copied above
	 * our claim, and the receiver refused that chunk at every attempt.
	 */
	(void) morango_lock_instance(&counter);

	diff = morango_fsic_diff_maps(morango_fsic_expand(t->local_fsic, t->prefixes, t->nfilter),
								  morango_fsic_expand(t->remote_fsic, t->prefixes, t->nfilter));

	/* start from scratch: a resumed session may have queued before */
	if (t->stage > MORANGO_STAGE_QUEUING)
	{
		u.restart = true;
		morango_transfer_transition(t, MORANGO_STAGE_QUEUING, MORANGO_STATUS_STARTED, &u);
		u = MORANGO_TRANSFER_KEEP;
	}
	else
		morango_transfer_clear_buffers(ts);

	insts = queue_instances(diff, &ninst);
	morango_spi_exec(insert_sql, 2, (Oid[]) {UUIDOID, UUIDARRAYOID},
					 (Datum[]) {ts, queue_select(t, insts, ninst)}, NULL, SPI_OK_SELECT);
	total = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	u.records_total = total;
	morango_transfer_transition(t, MORANGO_STAGE_QUEUING, MORANGO_STATUS_COMPLETED, &u);
	morango_fault("queue");
	return total;
}

/*
 * morango_queue_internal
 *		morango_queue_transfer() of transfer session ts.  Runs inside SPI.
 */
int64
morango_queue_internal(Datum ts)
{
	return morango_queue_transfer(morango_transfer_fetch(ts));
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

	morango_spi_connect();
	total = morango_queue_internal(PG_GETARG_DATUM(0));
	SPI_finish();
	PG_RETURN_INT64(total);
}
