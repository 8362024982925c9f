/*-------------------------------------------------------------------------
 *
 * fsic_sql.c
 *		SQL-callable wrappers of the FSIC functions of fsic.c:
 *		morango.fsic_expand(jsonb, text[]) and morango.fsic_diff(jsonb, jsonb).
 *
 * They give fsic.c their arguments as JSON text and build their jsonb
 * results directly from the maps fsic.c returns; the work, and every check
 * of the FSICs, is in fsic.c.  The C functions also accept text or json
 * arguments when bound with those types (the regression test does, to
 * reach the JSON syntax checks that jsonb input never fails).  This file
 * uses PostgreSQL's jsonb headers and must therefore not include json-c
 * (fsic.c is the other way round).
 *
 * IDENTIFICATION
 *		src/fsic_sql.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "fsic.h"
#include "morango.h"
#include "textutil.h"

PG_FUNCTION_INFO_V1(morango_fsic_expand_sql);
PG_FUNCTION_INFO_V1(morango_fsic_diff_sql);

/*
 * fsic_arg_text
 *		Argument argno as palloc'd JSON text.  The functions are declared
 *		with jsonb arguments (or, when the call has no expression, taken
 *		as jsonb); an argument declared text or json (the regression test's
 *		bindings) is passed through as it is, so that fsic.c's JSON syntax
 *		checks apply to it.
 */
static char *
fsic_arg_text(FunctionCallInfo fcinfo, int argno)
{
	Oid			type = get_fn_expr_argtype(fcinfo->flinfo, argno);

	if (type == JSONBOID || type == InvalidOid)
	{
		Jsonb	   *jb = PG_GETARG_JSONB_P(argno);

		return JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	}
	if (type == TEXTOID || type == JSONOID)
		return TextDatumGetCString(PG_GETARG_DATUM(argno));
	elog(ERROR, "unexpected argument type %u for an fsic", type);
	return NULL;				/* keep the compiler quiet */
}

/*
 * fsic_map_to_jsonb
 *		A map from fsic.c as the jsonb object {partition: {instance:
 *		counter}}, instance ids in canonical form: the value jsonb input
 *		would make of the map's JSON text, without the text.
 */
static Datum
fsic_map_to_jsonb(const MorangoFsicMap *map)
{
	JsonbParseState *state = NULL;
	JsonbValue	v;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < map->nparts; i++)
	{
		const MorangoFsicPart *p = &map->parts[i];

		/* as jsonb input refuses it (a name from text input can be longer) */
		if (p->len > JENTRY_OFFLENMASK)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("string too long to represent as jsonb string"),
					 errdetail("Due to an implementation restriction, jsonb strings cannot exceed %d bytes.",
							   JENTRY_OFFLENMASK)));
		v.type = jbvString;
		v.val.string.val = (char *) p->name;
		v.val.string.len = (int) p->len;
		pushJsonbValue(&state, WJB_KEY, &v);
		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		for (int k = 0; k < p->count; k++)
		{
			const MorangoFsicEntry *e = &map->entries[p->first + k];
			/* pushJsonbValue keeps the pointer until the end */
			char	   *id = palloc(MORANGO_UUID_TEXT_LEN + 1);

			morango_uuid_format(&e->inst, id);
			v.type = jbvString;
			v.val.string.val = id;
			v.val.string.len = MORANGO_UUID_TEXT_LEN;
			pushJsonbValue(&state, WJB_KEY, &v);
			v.type = jbvNumeric;
			v.val.numeric = int64_to_numeric(e->counter);
			pushJsonbValue(&state, WJB_VALUE, &v);
		}
		pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	}
	return JsonbPGetDatum(JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL)));
}

/*
 * morango.fsic_expand(fsic jsonb, filter text[]) -> jsonb
 *		Morango's expand_fsic_for_use: the map {partition: {instance:
 *		counter}} used for queuing, from a raw v2 FSIC and the transfer's
 *		filter.  NULL fsic gives NULL; NULL filter means every partition,
 *		as ARRAY[''] does.  Throws on an invalid FSIC or filter.
 */
Datum
morango_fsic_expand_sql(PG_FUNCTION_ARGS)
{
	char	   *raw;
	const char **prefixes;
	int			nprefixes;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	raw = fsic_arg_text(fcinfo, 0);

	if (PG_ARGISNULL(1))
	{
		prefixes = palloc(sizeof(char *));
		prefixes[0] = "";
		nprefixes = 1;
	}
	else
	{
		ArrayType  *filter = PG_GETARG_ARRAYTYPE_P(1);
		Datum	   *elems;
		bool	   *nulls;

		morango_check_filter(filter);
		deconstruct_array(filter, TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &nulls, &nprefixes);
		prefixes = palloc(sizeof(char *) * nprefixes);
		for (int i = 0; i < nprefixes; i++)
			prefixes[i] = TextDatumGetCString(elems[i]);
	}

	PG_RETURN_DATUM(fsic_map_to_jsonb(morango_fsic_expand(raw, prefixes, nprefixes)));
}

/*
 * morango.fsic_diff(sender jsonb, receiver jsonb) -> jsonb
 *		Morango's calculate_directional_fsic_diff_v2 on two expanded maps:
 *		per sender partition and instance, the receiver's counter where it
 *		is lower than the sender's.  Strict.  Throws on an invalid map.
 */
Datum
morango_fsic_diff_sql(PG_FUNCTION_ARGS)
{
	char	   *sender = fsic_arg_text(fcinfo, 0);
	char	   *receiver = fsic_arg_text(fcinfo, 1);

	PG_RETURN_DATUM(fsic_map_to_jsonb(morango_fsic_diff(sender, receiver)));
}
