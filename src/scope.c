/*-------------------------------------------------------------------------
 *
 * scope.c
 *		Certificate scopes: filter templates and the subset rule.  Pure: no
 *		SPI, no libpq.
 *
 * A scope definition holds filter templates, one partition prefix per line,
 * with ${param} placeholders.  A certificate's read filter is its read-write
 * template plus its read template, its write filter the read-write template
 * plus the write template, each expanded with the certificate's parameters.
 *
 * Expansion is stricter than Morango's: lines are split before substitution
 * and a parameter value may not be empty or hold a line break, so a value
 * can never widen a scope (an empty user id would turn
 * "${dataset_id}:user-rw:${user_id}" into a prefix of every user's data).
 * Empty lines are dropped; a template set with no lines grants nothing
 * (Morango grants everything there).
 *
 * IDENTIFICATION
 *		src/scope.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "morango.h"

PG_FUNCTION_INFO_V1(morango_scope_filter_sql);
PG_FUNCTION_INFO_V1(morango_filter_within_sql);

/*
 * morango_scope_expand_line
 *		Substitute ${name} placeholders in one template line.  lookup(name)
 *		returns the value or NULL when the parameter is unknown.  Raises on
 *		an unknown parameter, an unterminated placeholder, or a value that is
 *		empty or holds a line break.  Returns a palloc'd string.
 */
char *
morango_scope_expand_line(const char *line,
						  const char *(*lookup) (const char *name, void *arg),
						  void *arg)
{
	StringInfoData out;
	const char *p = line;

	initStringInfo(&out);
	while (*p)
	{
		const char *end;
		char	   *name;
		const char *val;

		if (p[0] != '$' || p[1] != '{')
		{
			appendStringInfoChar(&out, *p++);
			continue;
		}
		end = strchr(p + 2, '}');
		if (end == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unterminated placeholder in scope template \"%s\"", line)));
		name = pnstrdup(p + 2, end - (p + 2));
		val = lookup(name, arg);
		if (val == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("scope parameter \"%s\" is missing", name),
					 errdetail("The template is \"%s\".", line)));
		if (val[0] == '\0' || strpbrk(val, "\r\n") != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("scope parameter \"%s\" must be a non-empty single line", name)));
		appendStringInfoString(&out, val);
		pfree(name);
		p = end + 1;
	}
	return out.data;
}

/*
 * morango_filter_within
 *		Is every prefix of `a` under some prefix of `b`?  Then every partition
 *		`a` covers is covered by `b`.  An empty `a` is within anything.
 *		O((na + nb) log nb): `b` is sorted once (filter.c), each prefix of
 *		`a` is looked up by binary search.
 */
bool
morango_filter_within(const char *const *a, int na, const char *const *b, int nb)
{
	MorangoPrefix *set = palloc(sizeof(MorangoPrefix) * Max(nb, 1));
	int			n;
	bool		within = true;

	for (int i = 0; i < nb; i++)
	{
		set[i].str = b[i];
		set[i].len = (int) strlen(b[i]);
		set[i].value = 0;
	}
	n = morango_prefixes_sort(set, nb, true);
	for (int i = 0; i < na && within; i++)
		within = morango_prefixes_cover(set, n, a[i], (int) strlen(a[i]));
	pfree(set);
	return within;
}

/* lookup callback over a jsonb object: strings as they are, numbers as text */
static const char *
jsonb_param(const char *name, void *arg)
{
	Jsonb	   *params = (Jsonb *) arg;
	JsonbValue	key;
	JsonbValue *v;

	key.type = jbvString;
	key.val.string.val = (char *) name;
	key.val.string.len = strlen(name);
	v = findJsonbValueFromContainer(&params->root, JB_FOBJECT, &key);
	if (v == NULL)
		return NULL;
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out,
												   NumericGetDatum(v->val.numeric)));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("scope parameter \"%s\" must be a string or a number", name)));
	return NULL;				/* keep compiler quiet */
}

/* deconstruct a text[] into C strings, refusing nulls */
static int
text_array(ArrayType *arr, char ***out, const char *what)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", what)));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	*out = palloc(sizeof(char *) * (n + 1));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain nulls", what)));
		(*out)[i] = TextDatumGetCString(elems[i]);
	}
	return n;
}

/*
 * morango.scope_filter(templates text[], params jsonb) -> text[]
 *
 * The filter the templates give with these parameters: every line of every
 * template, expanded, empty lines dropped, duplicates removed, in order.
 */
Datum
morango_scope_filter_sql(PG_FUNCTION_ARGS)
{
	ArrayType  *templates = PG_GETARG_ARRAYTYPE_P(0);
	Jsonb	   *params = PG_GETARG_JSONB_P(1);
	char	  **tmpl;
	int			nt;
	ArrayBuildState *acc = NULL;
	List	   *seen = NIL;

	if (!JB_ROOT_IS_OBJECT(params) || JB_ROOT_IS_SCALAR(params))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("scope parameters must be a JSON object")));
	nt = text_array(templates, &tmpl, "scope templates");
	acc = initArrayResult(TEXTOID, CurrentMemoryContext, false);
	for (int i = 0; i < nt; i++)
	{
		char	   *rest = tmpl[i];
		char	   *line;

		while ((line = strsep(&rest, "\n")) != NULL)
		{
			char	   *f;
			ListCell   *lc;
			bool		dup = false;
			size_t		l = strlen(line);

			if (l > 0 && line[l - 1] == '\r')
				line[l - 1] = '\0';
			if (line[0] == '\0')
				continue;
			f = morango_scope_expand_line(line, jsonb_param, params);
			foreach(lc, seen)
				if (strcmp((char *) lfirst(lc), f) == 0)
					dup = true;
			if (dup)
				continue;
			seen = lappend(seen, f);
			accumArrayResult(acc, CStringGetTextDatum(f), false, TEXTOID,
							 CurrentMemoryContext);
		}
	}
	PG_RETURN_DATUM(makeArrayResult(acc, CurrentMemoryContext));
}

/*
 * morango.filter_within(a text[], b text[]) -> boolean
 *
 * True when every partition filter `a` covers is covered by `b`.
 */
Datum
morango_filter_within_sql(PG_FUNCTION_ARGS)
{
	char	  **a;
	char	  **b;
	int			na = text_array(PG_GETARG_ARRAYTYPE_P(0), &a, "filter");
	int			nb = text_array(PG_GETARG_ARRAYTYPE_P(1), &b, "filter");

	PG_RETURN_BOOL(morango_filter_within((const char *const *) a, na,
										 (const char *const *) b, nb));
}
