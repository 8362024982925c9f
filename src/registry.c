/*-------------------------------------------------------------------------
 *
 * registry.c
 *		Read access to morango.models, the list of registered application
 *		tables, plus small helpers every step needs (the SQL that computes
 *		and matches a record's application key, pinned settings).
 *
 * Nothing here writes; registration itself lives in register.c.
 *
 * IDENTIFICATION
 *		src/registry.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/table.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "morango.h"

/*
 * Build a MorangoModel from the current SPI tuple table row `row`
 * (columns: model, profile, model_name, partition_expr, source_id_expr,
 * pk_columns, verify, verify_source, expr_columns).  Allocates in the caller's memory context `mcxt`.
 */
static MorangoModel *
model_from_spi_row(int row, MemoryContext mcxt)
{
	HeapTuple	tup = SPI_tuptable->vals[row];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	MemoryContext old = MemoryContextSwitchTo(mcxt);
	MorangoModel *m = palloc0(sizeof(MorangoModel));
	bool		isnull;
	Datum		d;
	ArrayType  *arr;
	Datum	   *elems;
	int			nelems;

	m->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
	m->profile = SPI_getvalue(tup, desc, 2);
	m->model_name = SPI_getvalue(tup, desc, 3);
	m->partition_expr = SPI_getvalue(tup, desc, 4);
	m->source_id_expr = SPI_getvalue(tup, desc, 5);
	d = SPI_getbinval(tup, desc, 6, &isnull);
	arr = DatumGetArrayTypeP(d);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, NULL, &nelems);
	for (int i = 0; i < nelems; i++)
		m->pk_columns = lappend(m->pk_columns, TextDatumGetCString(elems[i]));
	m->verify = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
	m->verify_source = DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull));
	d = SPI_getbinval(tup, desc, 9, &isnull);
	if (!isnull)
	{
		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, NULL, &nelems);
		for (int i = 0; i < nelems; i++)
			m->expr_columns = lappend(m->expr_columns, TextDatumGetCString(elems[i]));
	}
	MemoryContextSwitchTo(old);
	return m;
}

#define MODEL_COLUMNS \
	"model::oid, profile, model_name, partition_expr, source_id_expr, pk_columns," \
	" verify, verify_source, expr_columns"

/*
 * morango_registry_lookup
 *		Return the registration of table relid, or NULL if it is not
 *		registered.  Must be called inside an SPI connection; the result is
 *		allocated in mcxt.
 */
MorangoModel *
morango_registry_lookup(Oid relid, MemoryContext mcxt)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};

	if (morango_spi_query("SELECT " MODEL_COLUMNS " FROM morango.models WHERE model = $1::regclass",
						  1, argtypes, values, NULL, 1) == 0)
		return NULL;
	return model_from_spi_row(0, mcxt);
}

/*
 * morango_registry_models
 *		All registered models of `profile` (all profiles if NULL) whose
 *		table still exists, as a List of MorangoModel *, ordered by profile
 *		and model name.  Must be called inside an SPI connection; allocates
 *		in mcxt.
 */
List *
morango_registry_models(const char *profile, MemoryContext mcxt)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	char		nulls[1] = {' '};
	List	   *result = NIL;
	MemoryContext old;

	if (profile)
		values[0] = CStringGetTextDatum(profile);
	else
	{
		values[0] = (Datum) 0;
		nulls[0] = 'n';
	}
	morango_spi_query("SELECT " MODEL_COLUMNS " FROM morango.models"
					  " WHERE ($1::text IS NULL OR profile = $1)"
					  " ORDER BY profile, model_name",
					  1, argtypes, values, nulls, 0);

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		MorangoModel *m = model_from_spi_row((int) i, mcxt);

		old = MemoryContextSwitchTo(mcxt);
		result = lappend(result, m);
		MemoryContextSwitchTo(old);
	}
	return result;
}

/*
 * morango_app_key_sql
 *		SQL text computing a record's application key from a jsonb
 *		expression holding the serialized row: the jsonb array of its
 *		primary key values, as text.  The same text results from an
 *		application row (to_jsonb) and from a store row's serialized data,
 *		so the two can be matched.
 */
char *
morango_app_key_sql(List *pk_columns, const char *jsonb_expr)
{
	StringInfoData buf;
	ListCell   *lc;
	bool		first = true;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "pg_catalog.jsonb_build_array(");
	foreach(lc, pk_columns)
	{
		if (!first)
			appendStringInfoString(&buf, ", ");
		appendStringInfo(&buf, "(%s) -> %s", jsonb_expr,
						 quote_literal_cstr((char *) lfirst(lc)));
		first = false;
	}
	appendStringInfoString(&buf, ")::text");
	return buf.data;
}

/*
 * morango_key_record_sql
 *		SQL text of a FROM item: a one-row record of table qualname holding
 *		only the primary key values taken from keyjson_expr, a jsonb array
 *		in the form morango_app_key_sql() produces.
 */
char *
morango_key_record_sql(MorangoModel *m, const char *qualname, const char *keyjson_expr)
{
	StringInfoData buf;
	ListCell   *lc;
	int			i = 0;

	initStringInfo(&buf);
	appendStringInfo(&buf, "pg_catalog.jsonb_populate_record(NULL::%s, pg_catalog.jsonb_build_object(",
					 qualname);
	foreach(lc, m->pk_columns)
	{
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		appendStringInfo(&buf, "%s, (%s) -> %d",
						 quote_literal_cstr((char *) lfirst(lc)), keyjson_expr, i);
		i++;
	}
	appendStringInfoString(&buf, "))");
	return buf.data;
}

/*
 * morango_pk_equal_sql
 *		SQL text "a.k1 = b.k1 AND a.k2 = b.k2 ..." over the primary key.
 */
char *
morango_pk_equal_sql(MorangoModel *m, const char *a, const char *b)
{
	StringInfoData buf;
	ListCell   *lc;
	bool		first = true;

	initStringInfo(&buf);
	foreach(lc, m->pk_columns)
	{
		const char *col = quote_identifier((char *) lfirst(lc));

		appendStringInfo(&buf, "%s%s.%s = %s.%s", first ? "" : " AND ", a, col, b, col);
		first = false;
	}
	return buf.data;
}

/*
 * morango_columns_json_sql
 *		SQL text of a jsonb object holding, of the serialized data in
 *		jsonb_expr, only what the registered expressions read (and, with
 *		with_key, the primary key columns): so that a value of another
 *		column that does not fit its type cannot stop them from being
 *		computed.  The whole data when the expressions read the whole row.
 */
char *
morango_columns_json_sql(MorangoModel *m, const char *jsonb_expr, bool with_key)
{
	StringInfoData buf;
	List	   *cols = NIL;
	ListCell   *lc;
	bool		first = true;

	if (m->expr_columns == NIL)
		return psprintf("(%s)", jsonb_expr);
	if (with_key)
		cols = list_copy(m->pk_columns);
	foreach(lc, m->expr_columns)
	{
		ListCell   *k;
		bool		dup = false;

		foreach(k, cols)
			dup |= (strcmp((char *) lfirst(k), (char *) lfirst(lc)) == 0);
		if (!dup)
			cols = lappend(cols, lfirst(lc));
	}
	initStringInfo(&buf);
	appendStringInfoString(&buf, "pg_catalog.jsonb_build_object(");
	foreach(lc, cols)
	{
		char	   *lit = quote_literal_cstr((char *) lfirst(lc));

		appendStringInfo(&buf, "%s%s, (%s) -> %s", first ? "" : ", ", lit, jsonb_expr, lit);
		first = false;
	}
	appendStringInfoString(&buf, ")");
	return buf.data;
}

/*
 * morango_expressions_sql
 *		SQL text of a LATERAL FROM item computing the registered partition
 *		and source id expressions over `row` (a value of the table's row
 *		type), as columns _morango_p and _morango_sid.  The expressions see
 *		the table's columns, and the row as t, exactly as at registration.
 *		Run it as the table's owner (owner.c), under pinned settings.
 */
char *
morango_expressions_sql(MorangoModel *m, const char *row)
{
	return psprintf("LATERAL (SELECT (%s)::text AS _morango_p, (%s)::text AS _morango_sid"
					" FROM (SELECT (%s).*) AS t) AS _morango_e",
					m->partition_expr, m->source_id_expr, row);
}

/*
 * morango_qualified_name
 *		"schema"."table" of relid, quoted as needed.
 */
char *
morango_qualified_name(Oid relid)
{
	char	   *relname = get_rel_name(relid);
	char	   *nspname = get_namespace_name(get_rel_namespace(relid));

	if (relname == NULL || nspname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with oid %u does not exist", relid)));
	return quote_qualified_identifier(nspname, relname);
}

/*
 * The settings that change how values print.  Keys, source ids and
 * serialized data are computed under these fixed values, so that every
 * session and every peer computes the same text for the same value.
 */
static const char *const canonical_settings[][2] = {
	{"TimeZone", "UTC"},
	{"DateStyle", "ISO, MDY"},
	{"IntervalStyle", "postgres"},
	{"extra_float_digits", "1"},
	{"bytea_output", "hex"},
};

/*
 * morango_pin_settings
 *		Until the matching morango_unpin_settings(), set the canonical
 *		formatting settings above and, if search_path is true, search_path
 *		to "pg_catalog, pg_temp" (registered expressions are parsed and run
 *		under it, so a caller's search_path can never change what they
 *		call).  Returns the GUC nest level to pass to unpin.
 */
int
morango_pin_settings(bool search_path)
{
	int			nestlevel = NewGUCNestLevel();

	for (size_t i = 0; i < lengthof(canonical_settings); i++)
		(void) set_config_option(canonical_settings[i][0], canonical_settings[i][1],
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	if (search_path)
		(void) set_config_option("search_path", "pg_catalog, pg_temp",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

void
morango_unpin_settings(int nestlevel)
{
	AtEOXact_GUC(true, nestlevel);
}
