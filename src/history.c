/*-------------------------------------------------------------------------
 *
 * history.c
 *		The bound on a record's conflict history.
 *
 * A record's conflicting_serialized_data is a jsonb array of the versions
 * that lost a conflict, newest first.  Every concurrent version a peer
 * sends adds one, so without a bound a peer could grow one record's history
 * until the merge itself fails (jsonb arrays stop at 256 MB) and every
 * chunk that carries the record is too large to move.  Wherever a history
 * grows or arrives (dequeue's conflict merge, fast-forwards and new records
 * from a peer, serialize's local-edit-wins) it goes through
 * morango.conflict_history(), which keeps at most morango.max_conflict_entries
 * entries and morango.max_conflict_bytes bytes of them: the oldest are
 * dropped first, and the newest entry is always kept, however large.  An
 * entry's size is its size in jsonb's binary form (close to its text size).
 * A history that arrives longer than the bound is trimmed, not refused:
 * the peer may simply have other settings.
 *
 * IDENTIFICATION
 *		src/history.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "morango.h"

PG_FUNCTION_INFO_V1(morango_conflict_history);

/* the size of a jsonb value (an element of an array), for the byte bound */
static int64
entry_bytes(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvBinary:
			return v->val.binary.len;
		case jbvString:
			return v->val.string.len;
		case jbvNumeric:
			return VARSIZE_ANY(v->val.numeric);
		default:
			return 1;			/* null, true, false */
	}
}

/*
 * morango.conflict_history(newest jsonb, history jsonb) -> jsonb
 *		history (a jsonb array, newest first; NULL is empty) with newest
 *		(NULL: nothing) in front, cut to the first morango.max_conflict_entries
 *		entries whose sizes add up to at most morango.max_conflict_bytes;
 *		the first entry is kept whatever its size.  A history that is not
 *		an array is an error.  A history already within the bounds is
 *		returned as it is.
 */
Datum
morango_conflict_history(PG_FUNCTION_ARGS)
{
	Jsonb	   *newest = PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0);
	Jsonb	   *history = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	JsonbParseState *state = NULL;
	JsonbValue *result;
	int			kept = 0;
	int64		bytes = 0;

	if (history != NULL && (!JB_ROOT_IS_ARRAY(history) || JB_ROOT_IS_SCALAR(history)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a conflict history must be a json array")));

	/* the common case: nothing to add, nothing to cut */
	if (newest == NULL && history != NULL &&
		JB_ROOT_COUNT(history) <= (uint32) morango_max_conflict_entries &&
		(JB_ROOT_COUNT(history) <= 1 ||
		 VARSIZE(history) - VARHDRSZ <= (Size) morango_max_conflict_bytes))
		PG_RETURN_JSONB_P(history);

	pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
	if (newest != NULL)
	{
		JsonbValue	v;

		JsonbToJsonbValue(newest, &v);
		pushJsonbValue(&state, WJB_ELEM, &v);
		kept = 1;
		bytes = VARSIZE(newest) - VARHDRSZ;
	}
	if (history != NULL)
	{
		JsonbIterator *it = JsonbIteratorInit(&history->root);
		JsonbValue	v;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			int64		size;

			if (tok != WJB_ELEM)
				continue;
			size = entry_bytes(&v);
			if (kept >= morango_max_conflict_entries ||
				(kept > 0 && bytes + size > morango_max_conflict_bytes))
				break;			/* this one and every older one go */
			pushJsonbValue(&state, WJB_ELEM, &v);
			kept++;
			bytes += size;
		}
	}
	result = pushJsonbValue(&state, WJB_END_ARRAY, NULL);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(result));
}
