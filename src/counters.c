/*-------------------------------------------------------------------------
 *
 * counters.c
 *		This database's counters: the instance lock, the next counter, and
 *		the database max counters.  Used by serialize.c and dequeue.c, the
 *		two steps that make versions.
 *
 * Every version this database makes carries its current instance and a
 * counter.  A step that makes versions takes the next counter
 * (morango_next_counter: it locks the current instance row until the
 * transaction ends), stamps its versions with it, and, if it wrote any,
 * makes it the instance's counter (morango_counter_used), all in one
 * transaction.  Under the lock every earlier counter is committed, so
 * counters are handed out in commit order (doc/design.md, "Counters and
 * commit order").
 *
 * The database max counters say, per profile, instance and partition
 * prefix, up to which counter this database holds every version.  They
 * are only ever raised, and only here: for this database's own instance
 * (morango_raise_own_max_counters, under the lock) and to what a sender
 * claims to have held (morango_raise_claimed_max_counters, after a
 * dequeue).  Nothing else writes morango.instances' counters or
 * morango.database_max_counters.
 *
 * Everything here runs inside SPI, in the caller's transaction.
 *
 * IDENTIFICATION
 *		src/counters.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

#include "fsic.h"
#include "morango.h"

/*
 * $1 instance, $2 counter, $3 prefixes, $4 profile (NULL: every profile
 * registered): this database holds every version of $1 up to $2 under
 * each prefix, for each profile
 */
static const char *own_sql =
"INSERT INTO morango.database_max_counters AS d (profile, instance_id, partition, counter)"
" SELECT DISTINCT p.profile, $1, f.prefix, $2"
" FROM pg_catalog.unnest($3::text[]) AS f(prefix),"
"      (SELECT DISTINCT profile FROM morango.models WHERE $4::text IS NULL OR profile = $4"
"       UNION SELECT $4 WHERE $4 IS NOT NULL) AS p"
" ON CONFLICT (profile, instance_id, partition)"
" DO UPDATE SET counter = GREATEST(d.counter, EXCLUDED.counter)";

/*
 * $1, $6, $7 the instances, partitions and counters of a map {partition:
 * {instance: counter}}, $2 profile, $3 ts, $4 the session's filter, $5
 * the partitions of this transfer's conflicts: raise
 * the database max counters to the sender's claims, but never above a
 * counter of that instance this database has seen in a version vector (or
 * its own counter): a sender cannot make us skip versions we never heard
 * of.  Claiming less than the sender only means records may be sent again.
 *
 * Rows are only added where they mean something here: for a filter
 * prefix, for the partition of a record this transfer merged (its new
 * records and fast-forwards are still in the buffer, its conflicts are $5)
 * or where a row exists already (raising it does not grow the table); and
 * only for instances this database knows.  A sender cannot grow the table
 * with claims for partitions it invents (the claims it may make are
 * bounded by the FSIC's size, but they would each be a row here for ever).
 * Must run before the buffer is emptied.
 */
static const char *claimed_sql =
"INSERT INTO morango.database_max_counters AS d (profile, instance_id, partition, counter)"
" SELECT $2, c.inst, c.part, LEAST(c.ctr, k.known)"
" FROM ROWS FROM (pg_catalog.unnest($1::uuid[]), pg_catalog.unnest($6::text[]),"
"                 pg_catalog.unnest($7::bigint[])) AS c(inst, part, ctr)"
"      LEFT JOIN (SELECT pg_catalog.unnest($4::text[])"
"                 UNION SELECT pg_catalog.unnest($5::text[])"
"                 UNION SELECT b.partition FROM morango.buffer b WHERE b.transfer_session_id = $3)"
"        AS m(part) ON m.part = c.part,"
"      LATERAL (SELECT GREATEST((SELECT max(r.counter) FROM morango.record_max_counters r"
"                                WHERE r.instance_id = c.inst),"
"                               (SELECT i.counter FROM morango.instances i WHERE i.id = c.inst))"
"               AS known) AS k"
" WHERE k.known IS NOT NULL"
"   AND (m.part IS NOT NULL"
"        OR EXISTS (SELECT 1 FROM morango.database_max_counters e"
"                   WHERE e.profile = $2 AND e.instance_id = c.inst AND e.partition = c.part))"
" ON CONFLICT (profile, instance_id, partition)"
" DO UPDATE SET counter = GREATEST(d.counter, EXCLUDED.counter)";

/*
 * morango_lock_instance
 *		Lock this database's current instance row until the end of the
 *		transaction (morango.lock_instance(), which first makes a new
 *		instance if the database was copied); return its id, palloc'd, and
 *		set *counter to its counter.
 */
pg_uuid_t *
morango_lock_instance(int64 *counter)
{
	bool		isnull;
	pg_uuid_t  *instance;

	if (morango_spi_exec("SELECT instance_id, counter FROM morango.lock_instance()",
						 0, NULL, NULL, NULL, SPI_OK_SELECT) != 1)
		elog(ERROR, "could not lock the morango instance row");
	instance = palloc(sizeof(pg_uuid_t));
	memcpy(instance, DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)),
		   sizeof(pg_uuid_t));
	*counter = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return instance;
}

/*
 * morango_next_counter
 *		Lock the current instance (morango_lock_instance) and return the
 *		counter this transaction's new versions are stamped with: the one
 *		after the instance's.  *instance gets the instance, palloc'd.  The
 *		instance's counter does not change until morango_counter_used().
 */
int64
morango_next_counter(pg_uuid_t **instance)
{
	int64		counter;

	*instance = morango_lock_instance(&counter);
	return counter + 1;
}

/*
 * morango_counter_used
 *		Versions stamped with counter, from morango_next_counter(), were
 *		written: make it the instance's counter.  The instance must be
 *		locked by this transaction.
 */
void
morango_counter_used(const pg_uuid_t *instance, int64 counter)
{
	if (morango_spi_exec("UPDATE morango.instances SET counter = $2 WHERE id = $1",
						 2, (Oid[]) {UUIDOID, INT8OID},
						 (Datum[]) {UUIDPGetDatum(instance), Int64GetDatum(counter)},
						 NULL, SPI_OK_UPDATE) != 1)
		elog(ERROR, "could not advance the morango instance counter");
}

/*
 * morango_raise_own_max_counters
 *		Record that this database holds every version of its own instance
 *		up to counter under each of prefixes (a text[]; NULL: '', every
 *		partition), for profile (text; NULL: every registered profile).
 *		Only true while the instance is locked by this transaction (every
 *		earlier counter is committed then) and counter is the instance's
 *		counter.
 */
void
morango_raise_own_max_counters(const pg_uuid_t *instance, int64 counter,
							   Datum profile, bool profile_null,
							   Datum prefixes, bool prefixes_null)
{
	if (prefixes_null)
	{
		Datum		empty = CStringGetTextDatum("");

		prefixes = PointerGetDatum(construct_array(&empty, 1, TEXTOID, -1, false, TYPALIGN_INT));
	}
	morango_spi_exec(own_sql, 4, (Oid[]) {UUIDOID, INT8OID, TEXTARRAYOID, TEXTOID},
					 (Datum[]) {UUIDPGetDatum(instance), Int64GetDatum(counter), prefixes, profile},
					 profile_null ? "   n" : NULL, SPI_OK_INSERT);
}

/*
 * morango_raise_claimed_max_counters
 *		After transfer session ts (of profile, under filter, both as the
 *		session has them) merged its buffer into the store, and before the
 *		buffer is emptied: raise the database max counters to what the
 *		sender held, claims (the sender's FSIC expanded for the filter),
 *		within the bounds of claimed_sql.  conflict_parts is the text[] of
 *		the partitions of the records merged as conflicts (they left the
 *		buffer), or conflict_parts_null.
 */
void
morango_raise_claimed_max_counters(const MorangoFsicMap *claims, Datum profile, Datum ts,
								   Datum filter, Datum conflict_parts, bool conflict_parts_null)
{
	int			n = claims->nentries;
	Datum	   *insts = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *parts = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *counters = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < claims->nparts; i++)
	{
		const MorangoFsicPart *p = &claims->parts[i];
		Datum		name = PointerGetDatum(cstring_to_text_with_len(p->name, (int) p->len));

		for (int k = p->first; k < p->first + p->count; k++)
		{
			insts[k] = UUIDPGetDatum(&claims->entries[k].inst);
			parts[k] = name;
			counters[k] = Int64GetDatum(claims->entries[k].counter);
		}
	}
	morango_spi_exec(claimed_sql, 7,
					 (Oid[]) {UUIDARRAYOID, TEXTOID, UUIDOID, TEXTARRAYOID, TEXTARRAYOID,
					 TEXTARRAYOID, INT8ARRAYOID},
					 (Datum[]) {PointerGetDatum(construct_array(insts, n, UUIDOID, UUID_LEN, false,
																TYPALIGN_CHAR)),
					 profile, ts, filter, conflict_parts,
					 PointerGetDatum(construct_array(parts, n, TEXTOID, -1, false, TYPALIGN_INT)),
					 PointerGetDatum(construct_array(counters, n, INT8OID, sizeof(int64),
													 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE))},
					 conflict_parts_null ? "    n  " : NULL, SPI_OK_INSERT);
}
