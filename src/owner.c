/*-------------------------------------------------------------------------
 *
 * owner.c
 *		Run a statement that touches an application table with the rights
 *		of that table's owner, never with ours.
 *
 * The steps of a record's path run as the extension's owner (the peer API
 * is SECURITY DEFINER) or as whoever called them (often a superuser).  Any
 * statement that reads or writes an application table, evaluates its
 * registered expressions, or builds a value of its row type can run code
 * the table's owner wrote: its triggers, column defaults, domain checks,
 * casts to json, functions named in the expressions.  Run with our rights,
 * that code would give the table's owner ours.  So, as PostgreSQL's own
 * maintenance commands and logical replication's apply worker do, every
 * such statement runs as the table's owner, inside a security-restricted
 * operation (no SET ROLE, no temporary objects, no deferred work escaping
 * it), and any setting the code changes is undone afterwards.
 *
 * The statements run here touch no table of morango's (the owner has no
 * rights on them): the steps read what they need from the store first and
 * pass it in as parameters, and write what comes back afterwards, each as
 * themselves.  doc/design.md, "Privileges", lists which statement runs as
 * whom.
 *
 * IDENTIFICATION
 *		src/owner.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "morango.h"

/*
 * morango_table_owner
 *		The owner of relation relid.  Errors if it does not exist.
 */
Oid
morango_table_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with oid %u does not exist", relid)));
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * morango_as_owner
 *		Call fn(arg) as the owner of relation relid, in a security-restricted
 *		operation; settings fn's code changes are reverted when it returns.
 *		On error the previous user is restored before the error propagates
 *		(a subtransaction or transaction abort would restore it too).
 */
void
morango_as_owner(Oid relid, void (*fn) (void *arg), void *arg)
{
	Oid			owner = morango_table_owner(relid);
	Oid			save_userid;
	int			save_sec_context;
	int			nestlevel;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context |
						   SECURITY_RESTRICTED_OPERATION | SECURITY_LOCAL_USERID_CHANGE);
	nestlevel = NewGUCNestLevel();
	PG_TRY();
	{
		fn(arg);
	}
	PG_CATCH();
	{
		SetUserIdAndSecContext(save_userid, save_sec_context);
		PG_RE_THROW();
	}
	PG_END_TRY();
	AtEOXact_GUC(false, nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

typedef struct OwnerExec
{
	const char *sql;
	int			nargs;
	Oid		   *argtypes;
	Datum	   *values;
	const char *nulls;
	int			expected;
	uint64		processed;
} OwnerExec;

static void
owner_exec_run(void *arg)
{
	OwnerExec  *e = (OwnerExec *) arg;

	e->processed = morango_spi_exec(e->sql, e->nargs, e->argtypes, e->values,
									e->nulls, e->expected);
}

/*
 * morango_owner_exec
 *		morango_spi_exec() of sql as the owner of relation relid (see
 *		morango_as_owner).  sql must not name any of morango's tables.
 *		Returns SPI_processed; the result is in SPI_tuptable.  Runs inside
 *		SPI.
 */
uint64
morango_owner_exec(Oid relid, const char *sql, int nargs, Oid *argtypes, Datum *values,
				   const char *nulls, int expected)
{
	OwnerExec	e = {sql, nargs, argtypes, values, nulls, expected, 0};

	morango_as_owner(relid, owner_exec_run, &e);
	return e.processed;
}
