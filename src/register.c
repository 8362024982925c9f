/*-------------------------------------------------------------------------
 *
 * register.c
 *		morango.register_model() and morango.unregister_model(): put an
 *		application table under sync (triggers, morango.models row, initial
 *		load of its existing rows into the store) and take it out again.
 *
 * IDENTIFICATION
 *		src/register.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/index.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "optimizer/optimizer.h"
#include "parser/parser.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/rel.h"

#include "morango.h"

PG_FUNCTION_INFO_V1(morango_register_model);
PG_FUNCTION_INFO_V1(morango_unregister_model);

/* error context while checking or first evaluating the expressions */
typedef struct ExprContextInfo
{
	const char *table;
	const char *what;
} ExprContextInfo;

static void
expr_error_callback(void *arg)
{
	ExprContextInfo *info = (ExprContextInfo *) arg;

	errcontext("%s of morango model for table \"%s\"", info->what, info->table);
}

/*
 * check_single_expression
 *		Refuse anything but one scalar SQL expression (no statement
 *		separators, no FROM/WHERE smuggled in).  `what` names the argument
 *		in the error.
 */
typedef struct ParseContextInfo
{
	const char *sql;
	const char *what;
} ParseContextInfo;

/* report a syntax error's position inside our statement, not the caller's */
static void
parse_error_callback(void *arg)
{
	ParseContextInfo *info = (ParseContextInfo *) arg;
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery(info->sql);
	}
	errcontext("checking the %s expression", info->what);
}

static void
check_single_expression(const char *expr, const char *what)
{
	char	   *sql = psprintf("SELECT (%s)", expr);
	List	   *stmts;
	SelectStmt *sel;
	ParseContextInfo info = {sql, what};
	ErrorContextCallback errcallback;

	errcallback.callback = parse_error_callback;
	errcallback.arg = &info;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	stmts = raw_parser(sql, RAW_PARSE_DEFAULT);
	error_context_stack = errcallback.previous;
	if (list_length(stmts) != 1 ||
		!IsA(((RawStmt *) linitial(stmts))->stmt, SelectStmt))
		goto bad;
	sel = (SelectStmt *) ((RawStmt *) linitial(stmts))->stmt;
	if (list_length(sel->targetList) != 1 || sel->fromClause != NIL ||
		sel->whereClause != NULL || sel->groupClause != NIL ||
		sel->havingClause != NULL || sel->windowClause != NIL ||
		sel->sortClause != NIL || sel->limitCount != NULL ||
		sel->limitOffset != NULL || sel->lockingClause != NIL ||
		sel->withClause != NULL || sel->distinctClause != NIL ||
		sel->intoClause != NULL || sel->valuesLists != NIL ||
		sel->op != SETOP_NONE)
		goto bad;
	return;

bad:
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s must be a single SQL expression", what),
			 errdetail("Got: %s", expr)));
}

/*
 * The columns a registered expression reads, found in its raw parse tree
 * (pure: no catalog access but the column names given).  A reference to
 * the whole row, or to a name that is not a column, means every column.
 */
typedef struct ColumnsContext
{
	List	   *names;			/* the table's columns (char *) */
	List	   *found;			/* columns read so far */
	bool		all;			/* the whole row is read */
} ColumnsContext;

/* is name in names (a List of char *)? */
static bool
name_in(List *names, const char *name)
{
	ListCell   *lc;

	foreach(lc, names)
	{
		if (strcmp((char *) lfirst(lc), name) == 0)
			return true;
	}
	return false;
}

static bool
columns_walker(Node *node, ColumnsContext *cxt)
{
	if (node == NULL)
		return false;
	if (IsA(node, ColumnRef))
	{
		Node	   *last = llast(((ColumnRef *) node)->fields);

		/* t.*, or t (or any name that is no column) as a whole-row reference */
		if (!IsA(last, String) || !name_in(cxt->names, strVal(last)))
			cxt->all = true;
		else if (!name_in(cxt->found, strVal(last)))
			cxt->found = lappend(cxt->found, pstrdup(strVal(last)));
		return false;
	}
	return raw_expression_tree_walker(node, columns_walker, (void *) cxt);
}

/* are all of cols (NIL: the whole row) among names? */
static bool
columns_within(List *cols, List *names)
{
	ListCell   *lc;

	if (cols == NIL)
		return false;
	foreach(lc, cols)
	{
		if (!name_in(names, (char *) lfirst(lc)))
			return false;
	}
	return true;
}

/*
 * expression_columns
 *		The columns of rel that exprs (a List of SQL expression texts, each
 *		checked by check_single_expression) read, or NIL if they read the
 *		whole row.
 */
static List *
expression_columns(List *exprs, Relation rel)
{
	ColumnsContext cxt = {NIL, NIL, false};
	TupleDesc	desc = RelationGetDescr(rel);
	ListCell   *lc;

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped)
			cxt.names = lappend(cxt.names, pstrdup(NameStr(att->attname)));
	}
	foreach(lc, exprs)
	{
		List	   *stmts = raw_parser(psprintf("SELECT (%s)", (char *) lfirst(lc)), RAW_PARSE_DEFAULT);
		SelectStmt *sel = (SelectStmt *) ((RawStmt *) linitial(stmts))->stmt;

		(void) columns_walker(((ResTarget *) linitial(sel->targetList))->val, &cxt);
	}
	return cxt.all ? NIL : cxt.found;
}

/*
 * The primary key columns of rel, in key order, as a List of names.
 * Errors if rel has none.
 */
static List *
primary_key_columns(Relation rel)
{
	Oid			pkoid = RelationGetPrimaryKeyIndex(rel);
	Relation	idx;
	List	   *cols = NIL;

	if (!OidIsValid(pkoid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("table \"%s\" has no primary key", RelationGetRelationName(rel)),
				 errhint("morango identifies application rows by their primary key; add one.")));
	idx = index_open(pkoid, AccessShareLock);
	for (int i = 0; i < idx->rd_index->indnkeyatts; i++)
	{
		AttrNumber	att = idx->rd_index->indkey.values[i];

		cols = lappend(cols, get_attname(RelationGetRelid(rel), att, false));
	}
	index_close(idx, AccessShareLock);
	return cols;
}

/* what check_expressions() checks, and for whom */
typedef struct CheckArgs
{
	Relation	rel;
	ExprContextInfo *info;
	const char *partition_expr;
	const char *source_id_expr;
	const char *qualname;
	bool		verify;
	bool		source_volatile;	/* out */
} CheckArgs;

/*
 * Prepare expr (what names it in errors) over a row of rel; returns
 * whether it is volatile (then a receiver cannot compute it again from a
 * record's data and expect what the sender got).
 */
static bool
check_one_expression(CheckArgs *a, const char *expr, const char *what)
{
	Oid			argtypes[1] = {a->rel->rd_rel->reltype};
	SPIPlanPtr	plan;
	ListCell   *lc;
	bool		volatile_expr = false;

	a->info->what = what;
	plan = morango_spi_prepare(psprintf("SELECT (%s)::text FROM (SELECT ($1).*) AS t", expr),
							   1, argtypes);
	foreach(lc, SPI_plan_get_plan_sources(plan))
		volatile_expr |= contain_volatile_functions((Node *) ((CachedPlanSource *) lfirst(lc))->query_list);
	return volatile_expr;
}

/*
 * check_expressions (run as the table's owner)
 *		Prepare both expressions, then evaluate them over the existing rows:
 *		errors, NULLs, empty source ids and record id collisions are refused.
 */
static void
check_expressions(void *arg)
{
	CheckArgs  *a = (CheckArgs *) arg;
	const char *table = RelationGetRelationName(a->rel);
	char	   *sql;
	bool		isnull;
	int64		nullp,
				nulls,
				dups;

	if (check_one_expression(a, a->partition_expr, "partition expression") && a->verify)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the partition expression of table \"%s\" is volatile", table),
				 errdetail("A receiver computes a record's partition again from its data and must get "
						   "the partition the sender got."),
				 errhint("Use an expression over the row's columns, or pass verify => false "
						 "to trust the partition peers declare.")));
	a->source_volatile = check_one_expression(a, a->source_id_expr, "source_id expression");

	a->info->what = "evaluation of the partition and source_id expressions";
	sql = psprintf("SELECT count(*) FILTER (WHERE p IS NULL),"
				   "       count(*) FILTER (WHERE sid IS NULL OR sid = ''),"
				   "       count(*) - count(DISTINCT (p, sid))"
				   " FROM (SELECT (%s)::text AS p, (%s)::text AS sid FROM ONLY %s AS t) AS e",
				   a->partition_expr, a->source_id_expr, a->qualname);
	morango_spi_exec(sql, 0, NULL, NULL, NULL, SPI_OK_SELECT);
	nullp = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	nulls = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	dups = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	if (nullp > 0)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("partition expression is null for " INT64_FORMAT " rows of table \"%s\"",
						nullp, table),
				 errhint("Use coalesce() to give those rows a partition.")));
	if (nulls > 0)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("source_id expression is null or empty for " INT64_FORMAT " rows of table \"%s\"",
						nulls, table)));
	if (dups > 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("partition and source_id are not unique over the rows of table \"%s\"", table),
				 errdetail(INT64_FORMAT " rows share the record id of another row.", dups),
				 errhint("The source_id expression must be unique within a partition.")));
}

/* one batch of the initial load's keys, read as the table's owner */
typedef struct LoadArgs
{
	const char *sql;
	Portal		portal;
	uint64		fetched;
} LoadArgs;

static void
load_fetch(void *arg)
{
	LoadArgs   *a = (LoadArgs *) arg;

	a->fetched = morango_spi_cursor_fetch(a->portal, morango_batch_size);
}

static void
load_open(void *arg)
{
	LoadArgs   *a = (LoadArgs *) arg;

	a->portal = morango_spi_cursor_open(a->sql, 0, NULL, NULL, NULL, true);
}

/*
 * initial_load
 *		Note every existing row of relid as changed: its keys are read as
 *		the table's owner (computing a key may run the owner's casts), in
 *		batches, and written to morango.changes by us.
 */
static void
initial_load(Oid relid, List *pk, const char *qualname)
{
	LoadArgs	a;

	a.sql = psprintf("SELECT %s FROM ONLY %s AS t",
					 morango_app_key_sql(pk, "pg_catalog.to_jsonb(t)"), qualname);
	morango_as_owner(relid, load_open, &a);
	for (;;)
	{
		ArrayBuildState *astate;

		morango_as_owner(relid, load_fetch, &a);
		if (a.fetched == 0)
			break;
		astate = initArrayResult(TEXTOID, CurrentMemoryContext, false);
		for (uint64 i = 0; i < a.fetched; i++)
		{
			bool		isnull;
			Datum		key = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

			astate = accumArrayResult(astate, key, isnull, TEXTOID, CurrentMemoryContext);
		}
		SPI_freetuptable(SPI_tuptable);
		morango_spi_exec("INSERT INTO morango.changes (model, key, hard)"
						 " SELECT $1::regclass, k, false FROM pg_catalog.unnest($2::text[]) AS k",
						 2, (Oid[]) {OIDOID, TEXTARRAYOID},
						 (Datum[]) {ObjectIdGetDatum(relid), makeArrayResult(astate, CurrentMemoryContext)},
						 NULL, SPI_OK_INSERT);
	}
	SPI_cursor_close(a.portal);
}

/*
 * morango.register_model(model regclass, profile text, partition text
 *                        DEFAULT '', source_id text DEFAULT NULL,
 *                        model_name text DEFAULT NULL,
 *                        verify boolean DEFAULT true) -> void
 *
 * partition and source_id are SQL expressions over the table's columns
 * (partition '' means the empty partition; source_id NULL means the primary
 * key as text, or for a multi-column key the jsonb array of its values).
 * With verify (the default), received records must have the partition (and
 * a key-derived source id) the expressions give for their data
 * (doc/design.md 6.1), so the partition expression must not be volatile.
 * Installs the capture triggers and notes every existing row as changed, so
 * the next serialize puts it in the store.  The expressions are checked and
 * the initial load read as the table's owner (owner.c).  The table is
 * locked against writes for the duration, so no change slips between the
 * initial load and the triggers.
 */
Datum
morango_register_model(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *profile;
	char	   *partition_expr;
	char	   *source_id_expr;
	char	   *model_name;
	Relation	rel;
	List	   *pk;
	char	   *qualname;
	Oid			argtypes[9];
	Datum		values[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	ArrayBuildState *astate;
	ListCell   *lc;
	ExprContextInfo info;
	ErrorContextCallback errcallback;
	int			nestlevel;
	bool		verify = PG_ARGISNULL(5) ? true : PG_GETARG_BOOL(5);
	List	   *expr_columns;
	CheckArgs	check;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("model and profile must not be null")));
	relid = PG_GETARG_OID(0);
	profile = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (profile[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("profile must not be empty")));

	rel = table_open(relid, ShareRowExclusiveLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel)),
				 errdetail("Only plain tables can be registered with morango.")));
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, RelationGetRelationName(rel));

	qualname = morango_qualified_name(relid);
	info.table = RelationGetRelationName(rel);

	partition_expr = PG_ARGISNULL(2) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(2));
	model_name = PG_ARGISNULL(4) ? pstrdup(RelationGetRelationName(rel))
		: text_to_cstring(PG_GETARG_TEXT_PP(4));
	if (model_name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model_name must not be empty")));

	pk = primary_key_columns(rel);

	if (partition_expr[0] == '\0')
		partition_expr = "''";
	else
		check_single_expression(partition_expr, "partition");

	if (PG_ARGISNULL(3))
	{
		StringInfoData buf;

		initStringInfo(&buf);
		if (list_length(pk) == 1)
			appendStringInfo(&buf, "%s::text", quote_identifier(linitial(pk)));
		else
		{
			/* the key as a jsonb array: unambiguous, unlike a joined string */
			bool		first = true;

			appendStringInfoString(&buf, "pg_catalog.jsonb_build_array(");
			foreach(lc, pk)
			{
				appendStringInfo(&buf, "%s%s", first ? "" : ", ", quote_identifier(lfirst(lc)));
				first = false;
			}
			appendStringInfoString(&buf, ")::text");
		}
		source_id_expr = buf.data;
	}
	else
	{
		source_id_expr = text_to_cstring(PG_GETARG_TEXT_PP(3));
		check_single_expression(source_id_expr, "source_id");
	}

	morango_spi_connect();

	/* registered already?  model name taken? */
	if (morango_registry_lookup(relid, CurrentMemoryContext) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("table \"%s\" is already registered with morango",
						RelationGetRelationName(rel)),
				 errhint("Call morango.unregister_model() first to change its registration.")));
	argtypes[0] = TEXTOID;
	argtypes[1] = TEXTOID;
	values[0] = CStringGetTextDatum(profile);
	values[1] = CStringGetTextDatum(model_name);
	if (morango_spi_query("SELECT model::text FROM morango.models"
						  " WHERE profile = $1 AND model_name = $2",
						  2, argtypes, values, NULL, 1) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("model name \"%s\" is already taken in profile \"%s\"", model_name, profile),
				 errdetail("Table %s is registered under that name.",
						   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
				 errhint("Pass a different model_name.")));

	expr_columns = expression_columns(list_make2(partition_expr, source_id_expr), rel);

	/*
	 * Check the expressions, as the table's owner (planning them may run
	 * its functions, and so does evaluating them): each alone first, so an
	 * error names the right one, then over the existing rows.  All under the
	 * pinned settings the steps use.
	 */
	nestlevel = morango_pin_settings(true);
	errcallback.callback = expr_error_callback;
	errcallback.arg = &info;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	check.rel = rel;
	check.info = &info;
	check.partition_expr = partition_expr;
	check.source_id_expr = source_id_expr;
	check.qualname = qualname;
	check.verify = verify;
	morango_as_owner(relid, check_expressions, &check);

	/*
	 * Record the registration.  With verify, receivers check a record's
	 * partition against its data always, and its source id when it is a
	 * function of the primary key alone (the default): a source id taken
	 * from other columns (Morango's Facility uses its name) stays what it
	 * was at the first serialization while those columns change.
	 */
	astate = initArrayResult(TEXTOID, CurrentMemoryContext, false);
	foreach(lc, pk)
		astate = accumArrayResult(astate, CStringGetTextDatum(lfirst(lc)), false,
								  TEXTOID, CurrentMemoryContext);
	argtypes[0] = OIDOID;
	argtypes[1] = TEXTOID;
	argtypes[2] = TEXTOID;
	argtypes[3] = TEXTOID;
	argtypes[4] = TEXTOID;
	argtypes[5] = TEXTARRAYOID;
	values[0] = ObjectIdGetDatum(relid);
	values[1] = CStringGetTextDatum(profile);
	values[2] = CStringGetTextDatum(model_name);
	values[3] = CStringGetTextDatum(partition_expr);
	values[4] = CStringGetTextDatum(source_id_expr);
	values[5] = makeArrayResult(astate, CurrentMemoryContext);
	argtypes[6] = BOOLOID;
	values[6] = BoolGetDatum(verify);
	argtypes[8] = BOOLOID;
	values[8] = BoolGetDatum(verify && !check.source_volatile &&
							 columns_within(expression_columns(list_make1(source_id_expr), rel), pk));
	argtypes[7] = TEXTARRAYOID;
	nulls[7] = 'n';
	values[7] = (Datum) 0;
	if (expr_columns != NIL)
	{
		astate = initArrayResult(TEXTOID, CurrentMemoryContext, false);
		foreach(lc, expr_columns)
			astate = accumArrayResult(astate, CStringGetTextDatum(lfirst(lc)), false,
									  TEXTOID, CurrentMemoryContext);
		values[7] = makeArrayResult(astate, CurrentMemoryContext);
		nulls[7] = ' ';
	}
	morango_spi_exec("INSERT INTO morango.models"
					 " (model, profile, model_name, partition_expr, source_id_expr, pk_columns,"
					 "  verify, expr_columns, verify_source)"
					 " VALUES ($1::regclass, $2, $3, $4, $5, $6, $7, $8, $9)",
					 9, argtypes, values, nulls, SPI_OK_INSERT);

	/*
	 * records waiting to be written had their keys computed under the
	 * registration of their time, or none: compute them again under this
	 * one
	 */
	morango_spi_exec("UPDATE morango.store_dirty SET keyed = false"
					 " WHERE profile = $1 AND model_name = $2 AND keyed",
					 2, (Oid[]) {TEXTOID, TEXTOID}, (Datum[]) {values[1], values[2]}, NULL,
					 SPI_OK_UPDATE);

	/* triggers first; the lock we hold keeps writers out until we commit */
	morango_spi_exec(psprintf("CREATE TRIGGER morango_capture"
							  " AFTER INSERT OR UPDATE OR DELETE ON %s"
							  " FOR EACH ROW EXECUTE FUNCTION morango.capture_trigger()",
							  qualname), 0, NULL, NULL, NULL, SPI_OK_UTILITY);
	morango_spi_exec(psprintf("CREATE TRIGGER morango_no_truncate"
							  " BEFORE TRUNCATE ON %s"
							  " FOR EACH STATEMENT EXECUTE FUNCTION morango.capture_trigger()",
							  qualname), 0, NULL, NULL, NULL, SPI_OK_UTILITY);

	/* initial load: every existing row is a change for the next serialize */
	info.what = "initial load";
	initial_load(relid, pk, qualname);

	error_context_stack = errcallback.previous;
	morango_unpin_settings(nestlevel);

	SPI_finish();
	table_close(rel, NoLock);
	PG_RETURN_VOID();
}

/*
 * morango.unregister_model(model regclass) -> void
 *		Remove the triggers and the registration; the store rows stay (they
 *		still sync; re-registering the table picks them up again by key).
 *		Changes not serialized yet are dropped: serialize first to keep them.
 */
Datum
morango_unregister_model(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Relation	rel;
	char	   *qualname;
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};

	rel = table_open(relid, ShareRowExclusiveLock);
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, RelationGetRelationName(rel));
	qualname = morango_qualified_name(relid);

	morango_spi_connect();
	if (morango_spi_exec("DELETE FROM morango.models WHERE model = $1::regclass",
						 1, argtypes, values, NULL, SPI_OK_DELETE) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("table \"%s\" is not registered with morango",
						RelationGetRelationName(rel))));
	morango_spi_exec(psprintf("DROP TRIGGER IF EXISTS morango_capture ON %s", qualname),
					 0, NULL, NULL, NULL, SPI_OK_UTILITY);
	morango_spi_exec(psprintf("DROP TRIGGER IF EXISTS morango_no_truncate ON %s", qualname),
					 0, NULL, NULL, NULL, SPI_OK_UTILITY);
	/* changes not serialized yet are dropped; registering again notes every row */
	morango_spi_exec("DELETE FROM morango.changes WHERE model = $1::regclass",
					 1, argtypes, values, NULL, SPI_OK_DELETE);
	SPI_finish();
	table_close(rel, NoLock);
	PG_RETURN_VOID();
}
