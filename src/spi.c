/*-------------------------------------------------------------------------
 *
 * spi.c
 *		Checked SPI calls: the one place where the steps' statements meet
 *		SPI's return codes.
 *
 * SPI raises every error a statement can run into (syntax, permissions,
 * constraints, a lock timeout) itself, with ereport.  What its return code
 * can still say is that the caller's idea of the statement was wrong: it
 * was written as a SELECT and turned out to be something else, or SPI is
 * not connected.  That cannot happen in a correct program, so it is
 * reported as PostgreSQL reports can't-happen conditions, with elog(ERROR)
 * and no SQLSTATE of its own, here and nowhere else.
 *
 * Every SPI call leaves CurrentMemoryContext at the SPI procedure context.
 * The functions here return in the caller's memory context instead, so
 * that a caller working in a short-lived context (a batch) keeps
 * allocating there.  Results are where SPI puts them: SPI_processed and
 * SPI_tuptable, in SPI's memory until SPI_freetuptable() or SPI_finish().
 *
 * Statements that touch an application table run as its owner through
 * morango_owner_exec() (owner.c), which calls morango_spi_exec().
 *
 * IDENTIFICATION
 *		src/spi.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"

#include "morango.h"

/*
 * check_result
 *		Raise (elog: it cannot happen) if SPI result code ret is not
 *		`expected`: an SPI_OK_* code, or MORANGO_SPI_OK_ANY for any
 *		success.  what names the SPI function.
 */
static void
check_result(const char *what, int ret, int expected)
{
	if (expected == MORANGO_SPI_OK_ANY ? ret < 0 : ret != expected)
		elog(ERROR, "%s returned %s, expected %s", what, SPI_result_code_string(ret),
			 expected == MORANGO_SPI_OK_ANY ? "success" : SPI_result_code_string(expected));
}

/*
 * spi_run
 *		SPI_execute_with_args() checked against `expected`, returning
 *		SPI_processed in the caller's memory context.
 */
static uint64
spi_run(const char *sql, int nargs, Oid *argtypes, Datum *values, const char *nulls,
		bool read_only, long tcount, int expected)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			ret = SPI_execute_with_args(sql, nargs, argtypes, values, nulls, read_only, tcount);

	MemoryContextSwitchTo(cxt);
	check_result("SPI_execute_with_args", ret, expected);
	return SPI_processed;
}

/*
 * morango_spi_connect
 *		SPI_connect(), raising if it fails.  Pair it with SPI_finish().
 */
void
morango_spi_connect(void)
{
	check_result("SPI_connect", SPI_connect(), SPI_OK_CONNECT);
}

/*
 * morango_spi_exec
 *		Run sql with nargs parameters (argtypes, values, and nulls as SPI
 *		takes them: NULL, or ' ' / 'n' per parameter), read-write (a new
 *		snapshot, and the statement sees what earlier ones of this
 *		transaction wrote), every row.  Raises if the result is not
 *		`expected` (an SPI_OK_* code, or MORANGO_SPI_OK_ANY).  Returns
 *		SPI_processed, in the caller's memory context.  Runs inside SPI.
 */
uint64
morango_spi_exec(const char *sql, int nargs, Oid *argtypes, Datum *values,
				 const char *nulls, int expected)
{
	return spi_run(sql, nargs, argtypes, values, nulls, false, 0, expected);
}

/*
 * morango_spi_value
 *		Column col (1-based) of the first row of the last SPI result; sets
 *		*isnull.  The caller knows that there is a row (an aggregate, or
 *		it checked SPI_processed).
 */
Datum
morango_spi_value(int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, isnull);
}

/*
 * morango_spi_int8
 *		Column col of the first row of the last SPI result as an int8
 *		(a count): 0 if it is null.
 */
int64
morango_spi_int8(int col)
{
	bool		isnull;
	Datum		v = morango_spi_value(col, &isnull);

	return isnull ? 0 : DatumGetInt64(v);
}

/*
 * morango_spi_query
 *		Run the read-only query sql (parameters as morango_spi_exec's) on the
 *		caller's snapshot, SPI's read_only (no new snapshot, no command
 *		counter increment), for at most tcount rows (0: all).  Raises if it
 *		is not a SELECT.  Returns SPI_processed, in the caller's memory
 *		context.  Runs inside SPI.
 */
uint64
morango_spi_query(const char *sql, int nargs, Oid *argtypes, Datum *values,
				  const char *nulls, long tcount)
{
	return spi_run(sql, nargs, argtypes, values, nulls, true, tcount, SPI_OK_SELECT);
}

/*
 * morango_spi_cursor_open
 *		An unnamed cursor over the query sql (parameters as
 *		morango_spi_exec's; read_only as SPI's), in the caller's memory
 *		context.  SPI raises every error of its own here; close the cursor
 *		with SPI_cursor_close().  Runs inside SPI.
 */
Portal
morango_spi_cursor_open(const char *sql, int nargs, Oid *argtypes, Datum *values,
						const char *nulls, bool read_only)
{
	MemoryContext cxt = CurrentMemoryContext;
	Portal		portal = SPI_cursor_open_with_args(NULL, sql, nargs, argtypes, values, nulls,
												   read_only, 0);

	MemoryContextSwitchTo(cxt);
	if (portal == NULL)
		elog(ERROR, "SPI_cursor_open_with_args failed: %s", SPI_result_code_string(SPI_result));
	return portal;
}

/*
 * morango_spi_cursor_fetch
 *		The next count rows of cursor portal, forward, into SPI_tuptable.
 *		Returns SPI_processed (0 at the end), in the caller's memory
 *		context.  Runs inside SPI.
 */
uint64
morango_spi_cursor_fetch(Portal portal, long count)
{
	MemoryContext cxt = CurrentMemoryContext;

	SPI_cursor_fetch(portal, true, count);
	MemoryContextSwitchTo(cxt);
	return SPI_processed;
}

/*
 * morango_spi_prepare
 *		SPI_prepare(sql, nargs, argtypes), raising if it gives no plan.
 *		The plan lives until SPI_finish() (SPI_keepplan() to keep it
 *		longer).  Returns in the caller's memory context.  Runs inside SPI.
 */
SPIPlanPtr
morango_spi_prepare(const char *sql, int nargs, Oid *argtypes)
{
	MemoryContext cxt = CurrentMemoryContext;
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	MemoryContextSwitchTo(cxt);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	return plan;
}
