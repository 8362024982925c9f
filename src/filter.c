/*-------------------------------------------------------------------------
 *
 * filter.c
 *		Partition filters, pure: no SPI, no libpq.
 *
 * A filter is a set of partition prefixes; a record is inside it when its
 * partition starts with one of them.  The empty prefix '' covers every
 * partition.
 *
 * IDENTIFICATION
 *		src/filter.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"

#include "morango.h"

/*
 * morango_check_filter
 *		Refuse a filter array that is not a one-dimensional, non-empty array
 *		of non-null prefixes.
 */
void
morango_check_filter(ArrayType *filter)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (ARR_NDIM(filter) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("filter must be a one-dimensional array of partition prefixes")));
	deconstruct_array(filter, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("filter must not be empty"),
				 errhint("Pass NULL for every partition, or ARRAY[''].")));
	for (int i = 0; i < n; i++)
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("filter must not contain null prefixes")));
}

/*
 * morango_partition_in_filter
 *		Is `partition` under one of the `nprefixes` prefixes?
 */
bool
morango_partition_in_filter(const char *partition, const char *const *prefixes, int nprefixes)
{
	for (int i = 0; i < nprefixes; i++)
	{
		size_t		len = strlen(prefixes[i]);

		if (strncmp(partition, prefixes[i], len) == 0)
			return true;
	}
	return false;
}
