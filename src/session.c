/*-------------------------------------------------------------------------
 *
 * session.c
 *		The store's statistics after a step wrote much of it (session
 *		state itself is transfer.c's; the SPI helper is spi.c's, the
 *		instance lock counters.c's).
 *
 * IDENTIFICATION
 *		src/session.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "morango.h"

/*
 * morango_analyze_store
 *		After a step wrote `written` store records, ANALYZE the store and
 *		the version vectors if that is a large part of them (more than a
 *		tenth of what the planner believes they hold, and over 1,000), as
 *		autovacuum would a minute later: the next steps of the same sync
 *		plan their statements on these statistics, and an empty store that
 *		just received a million records would otherwise be scanned whole
 *		where an index probe is meant.  Skipped (silently) when the current
 *		role does not own the store.  Runs inside SPI, in the caller's
 *		transaction: until it ends, the store and the version vectors hold
 *		ANALYZE's SHARE UPDATE EXCLUSIVE lock (a manual VACUUM or CREATE
 *		INDEX CONCURRENTLY on them waits), and an error in it aborts the
 *		caller's step.
 */
void
morango_analyze_store(int64 written)
{
	bool		isnull;
	float4		reltuples;
	Oid			owner;

	if (written <= 1000)
		return;
	morango_spi_exec("SELECT c.reltuples, c.relowner FROM pg_catalog.pg_class c"
					 " WHERE c.oid = 'morango.store'::pg_catalog.regclass",
					 0, NULL, NULL, NULL, SPI_OK_SELECT);
	reltuples = DatumGetFloat4(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (reltuples >= 0 && written <= reltuples / 10)
		return;
	if (!has_privs_of_role(GetUserId(), owner))
		return;
	morango_spi_exec("ANALYZE morango.store, morango.record_max_counters, morango.store_dirty",
					 0, NULL, NULL, NULL, SPI_OK_UTILITY);
}
