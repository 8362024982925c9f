/*-------------------------------------------------------------------------
 *
 * filter.c
 *		Partition filters: their bounds, and matching partitions against
 *		them in O(log n) per partition.  No SPI, no libpq.
 *
 * A filter is a set of partition prefixes; a record is inside it when its
 * partition starts with one of them.  The empty prefix '' covers every
 * partition.  Prefixes and partitions are compared as bytes
 * (morango_starts_with and morango_prefix_cmp, textutil.h), as
 * starts_with() compares them under a deterministic collation; a byte
 * prefix of valid text in a server encoding ends on a character boundary
 * (the encodings PostgreSQL allows on the server are self-synchronising),
 * so byte and character prefixes agree.
 *
 * A filter comes from a peer as often as from the administrator, so its
 * size is bounded (morango.max_filter_prefixes prefixes, each at most
 * morango.max_filter_prefix_length bytes; morango_check_filter, which
 * every function that takes a filter calls), and matching it costs
 * O((n + m) log n) for m partitions against n prefixes instead of the
 * O(n * m) of testing every prefix against every partition:
 *
 *   - morango_prefixes_sort() sorts the prefixes bytewise, once, drops
 *     duplicates and, for matching, every prefix that starts with a
 *     shorter one (it covers nothing the shorter one does not);
 *   - morango_prefixes_cover() then finds by binary search the only
 *     prefix that can start a partition (the proof is at the function);
 *   - morango_prefixes_extend() answers the other question the FSIC
 *     asks: is the partition a strict prefix of one of the filter's
 *     prefixes (a "super" partition)?
 *
 * The SQL functions morango.in_filter() and morango.above_filter() keep the
 * sorted set of the filter they were last called with in fn_extra, so a
 * statement that tests a million partitions against one filter (a
 * parameter) sorts it once.  morango.filter_key() gives an immutable
 * fixed-size key of a filter, for unique indexes over filters too long
 * for a btree entry.
 *
 * IDENTIFICATION
 *		src/filter.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "fmgr.h"
#include "nodes/primnodes.h"
#include "port/pg_bswap.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "morango.h"
#include "textutil.h"

PG_FUNCTION_INFO_V1(morango_in_filter_sql);
PG_FUNCTION_INFO_V1(morango_above_filter_sql);
PG_FUNCTION_INFO_V1(morango_check_filter_sql);
PG_FUNCTION_INFO_V1(morango_filter_key_sql);
PG_FUNCTION_INFO_V1(morango_prefix_upper_sql);

/*
 * filter_elements
 *		Check a filter array (one-dimensional, non-empty, no nulls, within
 *		morango.max_filter_prefixes and morango.max_filter_prefix_length)
 *		and return its number of prefixes; *elems gets them.  Raises on a
 *		bad filter.  Never echoes a prefix (it may be long).
 */
static int
filter_elements(ArrayType *filter, Datum **elems)
{
	bool	   *nulls;
	int			n;

	if (ARR_NDIM(filter) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("filter must be a one-dimensional array of partition prefixes")));
	if (ARR_ELEMTYPE(filter) != TEXTOID)
		elog(ERROR, "a filter must be a text array, not of type %u", ARR_ELEMTYPE(filter));
	/* the bound first: nothing is deconstructed for a filter that is too large */
	n = ArrayGetNItems(ARR_NDIM(filter), ARR_DIMS(filter));
	if (n > morango_max_filter_prefixes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("filter has %d partition prefixes, more than the %d allowed",
						n, morango_max_filter_prefixes),
				 errhint("The limit is the superuser setting morango.max_filter_prefixes.")));
	deconstruct_array(filter, TEXTOID, -1, false, TYPALIGN_INT, elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("filter must not be empty"),
				 errhint("Pass NULL for every partition, or ARRAY[''].")));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("filter must not contain null prefixes")));
		if (VARSIZE_ANY_EXHDR(DatumGetPointer((*elems)[i])) > (Size) morango_max_filter_prefix_length)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("partition prefix %d of the filter is %zu bytes long, more than the %d allowed",
							i + 1, VARSIZE_ANY_EXHDR(DatumGetPointer((*elems)[i])),
							morango_max_filter_prefix_length),
					 errhint("The limit is the superuser setting morango.max_filter_prefix_length.")));
	}
	return n;
}

/*
 * morango_check_filter
 *		Refuse a filter array that is not a one-dimensional, non-empty array
 *		of non-null prefixes within the bounds of morango.max_filter_prefixes
 *		and morango.max_filter_prefix_length.
 */
void
morango_check_filter(ArrayType *filter)
{
	Datum	   *elems;

	(void) filter_elements(filter, &elems);
	pfree(elems);
}

/* qsort comparator for MorangoPrefix */
static int
prefix_qsort_cmp(const void *a, const void *b)
{
	const MorangoPrefix *pa = (const MorangoPrefix *) a;
	const MorangoPrefix *pb = (const MorangoPrefix *) b;

	return morango_prefix_cmp(pa->str, pa->len, pb->str, pb->len);
}

/*
 * morango_prefixes_sort
 *		Sort the n prefixes bytewise, in place, and drop duplicates; with
 *		reduce, also drop every prefix that starts with another one (it
 *		covers no partition the other does not), which leaves a prefix-free
 *		set, as morango_prefixes_find() needs.  Of equal or covering
 *		prefixes, the first (the shortest) is kept, with its value.  Returns
 *		the new count.
 *
 *		Reducing in one pass is right because, in sorted order, the strings
 *		that start with a string x are contiguous and follow x.  Let y start
 *		with some other prefix of the set and let m be the shortest one it
 *		starts with: no prefix of m is in the set (it would be a shorter
 *		prefix of y), so m is kept; everything between m and y starts with
 *		m and is dropped (by induction, it is compared with m); so y is
 *		compared with m, and dropped.  A y that starts with no other prefix
 *		is compared with the last kept one, which it does not start with,
 *		and kept.
 */
int
morango_prefixes_sort(MorangoPrefix *prefixes, int n, bool reduce)
{
	int			kept = 0;

	if (n <= 1)
		return n;
	qsort(prefixes, n, sizeof(MorangoPrefix), prefix_qsort_cmp);
	for (int i = 0; i < n; i++)
	{
		const MorangoPrefix *last = kept > 0 ? &prefixes[kept - 1] : NULL;

		if (last != NULL &&
			(reduce ? morango_starts_with(prefixes[i].str, prefixes[i].len, last->str, last->len)
			 : morango_prefix_cmp(prefixes[i].str, prefixes[i].len, last->str, last->len) == 0))
			continue;
		prefixes[kept++] = prefixes[i];
	}
	return kept;
}

/*
 * lower_bound
 *		The index of the first of the n sorted prefixes that is >= s (or
 *		greater, with strict), n if there is none.
 */
static int
lower_bound(const MorangoPrefix *set, int n, const char *s, int len, bool strict)
{
	int			lo = 0,
				hi = n;

	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;
		int			c = morango_prefix_cmp(set[mid].str, set[mid].len, s, len);

		if (c < 0 || (strict && c == 0))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * morango_prefixes_find
 *		The index of the prefix of set that the partition s (len bytes)
 *		starts with, or -1 if there is none.  set must be sorted and
 *		prefix-free (morango_prefixes_sort with reduce), so there is at
 *		most one.  O(log n) comparisons.
 *
 *		In a sorted prefix-free set, the only prefix that can start s is the
 *		greatest element g <= s.  Proof: let f in the set start s; then f <=
 *		s.  Suppose some h in the set had f < h <= s.  h does not start with
 *		f (the set is prefix-free), so f and h differ first at a position i
 *		< len(f), with f[i] < h[i].  s agrees with f up to and including i
 *		(f starts s), hence with h before i, and s[i] = f[i] < h[i]: s < h,
 *		a contradiction.  So f is the greatest element <= s.
 */
int
morango_prefixes_find(const MorangoPrefix *set, int n, const char *s, int len)
{
	int			i = lower_bound(set, n, s, len, true) - 1;	/* greatest <= s */

	return (i >= 0 && morango_starts_with(s, len, set[i].str, set[i].len)) ? i : -1;
}

/*
 * morango_prefixes_cover
 *		Does the partition s (len bytes) start with one of the n prefixes of
 *		set, which must be sorted and prefix-free?  (morango_prefixes_find)
 */
bool
morango_prefixes_cover(const MorangoPrefix *set, int n, const char *s, int len)
{
	return morango_prefixes_find(set, n, s, len) >= 0;
}

/*
 * morango_prefixes_extend
 *		Is the partition s (len bytes) a strict prefix of one of the n
 *		prefixes of set, which must be sorted and without duplicates
 *		(morango_prefixes_sort without reduce)?  O(log n) comparisons.
 *
 *		The elements that start with s are contiguous and come first among
 *		those >= s: an element y >= s that does not start with s differs
 *		from s first at a position i < len(s), with y[i] > s[i], and so is
 *		greater than every string that starts with s.  So the first element
 *		greater than s is the one to look at.
 */
bool
morango_prefixes_extend(const MorangoPrefix *set, int n, const char *s, int len)
{
	int			i = lower_bound(set, n, s, len, true);	/* first > s */

	return i < n && morango_starts_with(set[i].str, set[i].len, s, len);
}

/*
 * morango_prefix_upper
 *		An upper bound, in byte order (COLLATE "C"), of the strings that
 *		start with s[0..len-1]: every such string is < the result, so that
 *		"x >= s AND x < result" is a btree range holding them all (and
 *		perhaps a few more: callers test the prefix exactly too).  The
 *		result is s cut after its last ASCII byte below 0x7f, that byte
 *		incremented: still valid UTF-8.  NULL (no bound) when s has no such
 *		byte, say ''.  *outlen gets the result's length.  Pure.
 */
char *
morango_prefix_upper(const char *s, int len, int *outlen)
{
	char	   *r;

	while (len > 0 && (unsigned char) s[len - 1] >= 0x7f)
		len--;
	if (len == 0)
		return NULL;
	r = palloc(len + 1);
	memcpy(r, s, len);
	r[len - 1]++;
	r[len] = '\0';
	*outlen = len;
	return r;
}

/*
 * What in_filter() and above_filter() keep in fn_extra: the filter array
 * they last saw (a copy, to recognise it) and its sorted prefixes, which
 * point into the copy.
 */
typedef struct FilterCache
{
	MemoryContext cxt;			/* holds everything below; reset on a new
								 * filter */
	bool		constant;		/* the argument is a Const (arg_is_const) */
	ArrayType  *filter;			/* NULL until the first call */
	MorangoPrefix *set;
	int			n;
} FilterCache;

/*
 * arg_is_const
 *		Is argument argno of the call a Const node of its expression?  Then
 *		it is the same value at every call through this FmgrInfo.
 */
static bool
arg_is_const(FmgrInfo *flinfo, int argno)
{
	List	   *args;

	if (flinfo->fn_expr == NULL || !IsA(flinfo->fn_expr, FuncExpr))
		return false;
	args = ((FuncExpr *) flinfo->fn_expr)->args;
	return argno < list_length(args) && IsA(list_nth(args, argno), Const);
}

/*
 * filter_cache
 *		The sorted prefix set (reduced when `reduce`) of the filter in
 *		argument argno, from fn_extra if it is the filter of the last call,
 *		else checked, sorted and kept there.
 *
 *		A filter that is a constant of the expression (a statement
 *		parameter of SPI_execute_with_args, of a cursor or of a PL/pgSQL
 *		EXECUTE ... USING becomes one: the plan is made for its value) is
 *		sorted at the first call and never looked at again: O(log n) per
 *		call.  Any other filter (a column, a PL/pgSQL variable) is
 *		recognised by comparing its bytes with the cached copy, O(size of
 *		the filter) per call: keep a large filter a parameter of the
 *		statement.
 */
static FilterCache *
filter_cache(FunctionCallInfo fcinfo, int argno, bool reduce)
{
	FilterCache *fc = (FilterCache *) fcinfo->flinfo->fn_extra;
	ArrayType  *filter;
	Size		size;
	MemoryContext old;
	Datum	   *elems;

	if (fc != NULL && fc->constant && fc->filter != NULL)
		return fc;
	filter = PG_GETARG_ARRAYTYPE_P(argno);
	size = VARSIZE(filter);
	if (fc == NULL)
	{
		fc = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(FilterCache));
		fc->cxt = AllocSetContextCreate(fcinfo->flinfo->fn_mcxt, "morango filter",
										ALLOCSET_SMALL_SIZES);
		fc->constant = arg_is_const(fcinfo->flinfo, argno);
		fcinfo->flinfo->fn_extra = fc;
	}
	else if (fc->filter != NULL && VARSIZE(fc->filter) == size &&
			 memcmp(fc->filter, filter, size) == 0)
		return fc;

	MemoryContextReset(fc->cxt);
	fc->filter = NULL;
	old = MemoryContextSwitchTo(fc->cxt);
	{
		ArrayType  *copy = palloc(size);

		memcpy(copy, filter, size);
		fc->n = filter_elements(copy, &elems);
		fc->set = palloc(sizeof(MorangoPrefix) * fc->n);
		for (int i = 0; i < fc->n; i++)
		{
			fc->set[i].str = VARDATA_ANY(DatumGetPointer(elems[i]));
			fc->set[i].len = (int) VARSIZE_ANY_EXHDR(DatumGetPointer(elems[i]));
			fc->set[i].value = 0;
		}
		fc->n = morango_prefixes_sort(fc->set, fc->n, reduce);
		fc->filter = copy;		/* only now: a failed check caches nothing */
	}
	MemoryContextSwitchTo(old);
	return fc;
}

/*
 * filter_match
 *		The test of in_filter (`in`) or above_filter for argument 0, the
 *		partition, against the filter in argument 1.
 */
static bool
filter_match(FunctionCallInfo fcinfo, bool in)
{
	text	   *partition = PG_GETARG_TEXT_PP(0);
	FilterCache *fc = filter_cache(fcinfo, 1, in);
	const char *s = VARDATA_ANY(partition);
	int			len = (int) VARSIZE_ANY_EXHDR(partition);

	return in ? morango_prefixes_cover(fc->set, fc->n, s, len) :
		morango_prefixes_extend(fc->set, fc->n, s, len);
}

/*
 * morango.in_filter(partition text, filter text[]) -> boolean
 *		Does partition start with one of the filter's prefixes?  The same
 *		as EXISTS (SELECT 1 FROM unnest(filter) f WHERE starts_with(partition,
 *		f)) for a valid filter, in O(log n).  Strict; raises on a filter
 *		morango_check_filter refuses.
 */
Datum
morango_in_filter_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(filter_match(fcinfo, true));
}

/*
 * morango.above_filter(partition text, filter text[]) -> boolean
 *		Is partition a strict prefix of one of the filter's prefixes (a
 *		"super" partition of the filter's FSIC)?  O(log n).  Strict; raises
 *		on a filter morango_check_filter refuses.
 */
Datum
morango_above_filter_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(filter_match(fcinfo, false));
}

/*
 * morango.check_filter(filter text[]) -> void
 *		Raise if the filter is not one morango accepts (morango_check_filter);
 *		NULL (every partition) is accepted.
 */
Datum
morango_check_filter_sql(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0))
		morango_check_filter(PG_GETARG_ARRAYTYPE_P(0));
	PG_RETURN_VOID();
}

/*
 * morango.prefix_upper(prefix text) -> text
 *		morango_prefix_upper() of prefix, NULL for no bound.
 */
Datum
morango_prefix_upper_sql(PG_FUNCTION_ARGS)
{
	text	   *prefix = PG_GETARG_TEXT_PP(0);
	int			len;
	char	   *r = morango_prefix_upper(VARDATA_ANY(prefix), (int) VARSIZE_ANY_EXHDR(prefix), &len);

	if (r == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text_with_len(r, len));
}

/*
 * morango.filter_key(filter text[]) -> text
 *		A fixed-size key of a filter: the hex SHA-256 of its lower bound,
 *		then of each element in order its length (4 bytes, big-endian, or
 *		0xffffffff for a null) and bytes.  Two filters have the same key
 *		exactly when they are equal (=) as one-dimensional arrays.
 *		Immutable: for unique indexes over filters, which can be longer
 *		than a btree entry may be.
 */
Datum
morango_filter_key_sql(PG_FUNCTION_ARGS)
{
	ArrayType  *filter = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	char		hex[2 * PG_SHA256_DIGEST_LENGTH + 1];
	pg_cryptohash_ctx *ctx;
	bool		ok;
	uint32		word;

	if (ARR_NDIM(filter) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("filter must be a one-dimensional array of partition prefixes")));
	deconstruct_array(filter, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	ctx = pg_cryptohash_create(PG_SHA256);
	word = pg_hton32((uint32) (ARR_NDIM(filter) == 1 ? ARR_LBOUND(filter)[0] : 1));
	ok = ctx != NULL && pg_cryptohash_init(ctx) == 0 &&
		pg_cryptohash_update(ctx, (const uint8 *) &word, sizeof(word)) == 0;
	for (int i = 0; ok && i < n; i++)
	{
		Size		len = nulls[i] ? 0 : VARSIZE_ANY_EXHDR(DatumGetPointer(elems[i]));

		word = pg_hton32(nulls[i] ? PG_UINT32_MAX : (uint32) len);
		ok = pg_cryptohash_update(ctx, (const uint8 *) &word, sizeof(word)) == 0 &&
			(len == 0 ||
			 pg_cryptohash_update(ctx, (const uint8 *) VARDATA_ANY(DatumGetPointer(elems[i])), len) == 0);
	}
	ok = ok && pg_cryptohash_final(ctx, digest, sizeof(digest)) == 0;
	if (ctx != NULL)
		pg_cryptohash_free(ctx);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute sha256 for a filter key")));
	hex_encode((const char *) digest, sizeof(digest), hex);
	hex[sizeof(hex) - 1] = '\0';
	PG_RETURN_TEXT_P(cstring_to_text(hex));
}
