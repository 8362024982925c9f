/*-------------------------------------------------------------------------
 *
 * fsic.c
 *		Filter-specific instance counters (FSIC, Morango's v2 format), pure:
 *		no SPI, no libpq, no catalog access.
 *
 * Before a transfer each side summarises what it holds as an FSIC: for
 * each partition, the highest counter of each instance it holds all
 * versions up to.  On the wire that is a raw v2 FSIC,
 * {"super": map, "sub": map}, each map {partition: {instance_id: counter}}.
 * morango_fsic_expand() turns a raw FSIC into the map used for filtering
 * (Morango's expand_fsic_for_use), and morango_fsic_diff() computes, per
 * sender partition and instance, the counter above which the receiver
 * lacks versions (Morango's calculate_directional_fsic_diff_v2).  See
 * section 4.2 of the Morango semantics reference.
 *
 * JSON is read with json-c (FSICs are the peers' input, checked here
 * once), which allocates with malloc: every json-c object is freed in a
 * PG_FINALLY block or before an error is raised, and what is kept of it is
 * copied into palloc'd arrays first.  No JSON is written here: results are
 * maps (fsic.h), which the callers hand on as SQL arrays or jsonb.  This
 * file must not include utils/builtins.h (its json_object() clashes with
 * json-c's type).
 *
 * Maps are checked (object shapes, instance ids of 32 hex digits or the
 * 8-4-4-4-12 form, morango_uuid_parse_fsic_key in textutil.c, non-negative
 * int64 counters, at most MORANGO_FSIC_MAX_ENTRIES entries) and turned into
 * sorted arrays.  Instead of comparing every partition with every other
 * one, as Morango does, the algorithms sort and then walk the names in
 * order with a stack of the names the current one starts with (the names
 * starting with a given one are contiguous in sorted order): the diff and
 * the expansion are O(n log n) in the number of entries of their input and
 * output, whatever the shape of the partitions (a peer sends its FSIC).
 * Results list partitions and instances in sorted order (bytewise).
 *
 * IDENTIFICATION
 *		src/fsic.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <json-c/json.h>

#include "fsic.h"
#include "textutil.h"

/* An instance id. */
typedef pg_uuid_t FsicInst;

/*
 * A map, its partitions and their entries are fsic.h's; inside this file a
 * partition's first is -1 for a filter prefix added by morango_fsic_expand().
 */
typedef MorangoFsicEntry FsicEntry;
typedef MorangoFsicPart FsicPart;
typedef MorangoFsicMap FsicMap;

/* An entry of either side of a diff, for the instance-major walk. */
typedef struct FsicDiffItem
{
	FsicInst	inst;
	int32		rank;			/* of the partition in the merged name list */
	int32		side;			/* FSIC_RECEIVER sorts before FSIC_SENDER */
	int64		counter;
} FsicDiffItem;

#define FSIC_RECEIVER 0
#define FSIC_SENDER 1

/* A receiver partition on the prefix stack of the diff walk. */
typedef struct FsicDiffLevel
{
	int32		rank;
	int64		running_max;	/* max counter of this level and those below */
} FsicDiffLevel;

/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------
 */

/*
 * fsic_is_prefix
 *		Does partition p start with partition q (or equal it)?
 */
static inline bool
fsic_is_prefix(const FsicPart *q, const FsicPart *p)
{
	return morango_starts_with(p->name, p->len, q->name, q->len);
}

/*
 * fsic_name_cmp
 *		Bytewise order of two partition names; a prefix sorts first.
 */
static int
fsic_name_cmp(const FsicPart *a, const FsicPart *b)
{
	return morango_prefix_cmp(a->name, a->len, b->name, b->len);
}

/* qsort comparator for FsicPart, by name */
static int
fsic_part_cmp(const void *a, const void *b)
{
	return fsic_name_cmp((const FsicPart *) a, (const FsicPart *) b);
}

/*
 * qsort comparator for FsicPart, by name, then partitions of the map
 * before added filter prefixes (first == -1).
 */
static int
fsic_part_added_cmp(const void *a, const void *b)
{
	const FsicPart *pa = (const FsicPart *) a;
	const FsicPart *pb = (const FsicPart *) b;
	int			c = fsic_name_cmp(pa, pb);

	if (c != 0)
		return c;
	return (pa->first < 0) - (pb->first < 0);
}

/* order of two instance ids */
static inline int
fsic_inst_cmp(const FsicInst *a, const FsicInst *b)
{
	return memcmp(a->data, b->data, UUID_LEN);
}

/* qsort comparator for FsicEntry, by instance */
static int
fsic_entry_cmp(const void *a, const void *b)
{
	return fsic_inst_cmp(&((const FsicEntry *) a)->inst, &((const FsicEntry *) b)->inst);
}

/* qsort comparator for FsicDiffItem: by instance, partition, side */
static int
fsic_item_cmp(const void *a, const void *b)
{
	const FsicDiffItem *ia = (const FsicDiffItem *) a;
	const FsicDiffItem *ib = (const FsicDiffItem *) b;
	int			c = fsic_inst_cmp(&ia->inst, &ib->inst);

	if (c != 0)
		return c;
	if (ia->rank != ib->rank)
		return ia->rank < ib->rank ? -1 : 1;
	return (ia->side > ib->side) - (ia->side < ib->side);
}

/* qsort comparator for FsicDiffItem: by partition, then instance */
static int
fsic_item_out_cmp(const void *a, const void *b)
{
	const FsicDiffItem *ia = (const FsicDiffItem *) a;
	const FsicDiffItem *ib = (const FsicDiffItem *) b;

	if (ia->rank != ib->rank)
		return ia->rank < ib->rank ? -1 : 1;
	return fsic_inst_cmp(&ia->inst, &ib->inst);
}

/*
 * fsic_type_name
 *		A JSON value's kind, for error messages ("an array", "a number").
 */
static const char *
fsic_type_name(json_object *v)
{
	switch (json_object_get_type(v))
	{
		case json_type_null:
			return "null";
		case json_type_boolean:
			return "a boolean";
		case json_type_double:
		case json_type_int:
			return "a number";
		case json_type_object:
			return "an object";
		case json_type_array:
			return "an array";
		case json_type_string:
			return "a string";
	}
	return "an unknown value";
}

/*
 * fsic_where
 *		The " of \"sub\"" suffix naming the section of a raw FSIC that a
 *		partition belongs to, or "" for a plain map.  palloc'd or static.
 */
static const char *
fsic_where(const char *section)
{
	return section ? psprintf(" of \"%s\"", section) : "";
}

/* ------------------------------------------------------------------------
 * Reading JSON
 * ------------------------------------------------------------------------
 */

/*
 * fsic_tokener_message
 *		Our wording of a json-c parse error.
 */
static const char *
fsic_tokener_message(enum json_tokener_error err)
{
	switch (err)
	{
		case json_tokener_continue:
		case json_tokener_error_parse_eof:
			return "unexpected end of input";
		case json_tokener_error_depth:
			return "nesting too deep";
		case json_tokener_error_parse_unexpected:
			return "unexpected character";
		case json_tokener_error_parse_null:
			return "invalid null literal";
		case json_tokener_error_parse_boolean:
			return "invalid boolean literal";
		case json_tokener_error_parse_number:
			return "invalid number";
		case json_tokener_error_parse_array:
			return "invalid array";
		case json_tokener_error_parse_object_key_name:
			return "expected a string as object key";
		case json_tokener_error_parse_object_key_sep:
			return "expected \":\" after an object key";
		case json_tokener_error_parse_object_value_sep:
			return "expected \",\" or \"}\" after an object value";
		case json_tokener_error_parse_string:
			return "invalid string";
		case json_tokener_error_parse_comment:
			return "unexpected comment";
		case json_tokener_error_parse_utf8_string:
			return "invalid utf-8";
		case json_tokener_error_size:
			return "input too large";
		default:
			return "syntax error";
	}
}

/*
 * fsic_scan_text
 *		Look, in JSON text that json-c accepted, for what json-c lets
 *		through but we refuse: a \u0000 escape (json-c would cut an object
 *		key short at it) and a single quote outside a string (json-c
 *		accepts 'single-quoted' strings even in strict mode).  Returns 0 if
 *		there is neither, 1 for \u0000, 2 for a quote, with its byte offset
 *		in *offset.  Never throws.
 */
static int
fsic_scan_text(const char *text, size_t len, size_t *offset)
{
	bool		in_string = false;

	for (size_t i = 0; i < len; i++)
	{
		char		c = text[i];

		if (in_string)
		{
			if (c == '\\')
			{
				if (i + 5 < len && text[i + 1] == 'u' && memcmp(text + i + 2, "0000", 4) == 0)
				{
					*offset = i;
					return 1;
				}
				i++;			/* skip the escaped character */
			}
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '\'')
		{
			*offset = i;
			return 2;
		}
	}
	return 0;
}

/*
 * fsic_parse_json
 *		Parse text as one strict JSON document.  Returns a json-c object
 *		that the caller must free with json_object_put(); throws (holding
 *		no json-c memory) if the text is not valid JSON.  what names the
 *		input in error messages ("fsic", "sender fsic").
 */
static json_object *
fsic_parse_json(const char *text, const char *what)
{
	size_t		len = strlen(text);
	json_tokener *tok;
	json_object *root;
	enum json_tokener_error err;
	size_t		end;
	int			bad;

	if (len >= (size_t) PG_INT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("invalid %s: input too large", what)));

	tok = json_tokener_new();
	if (tok == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	/* the length includes the NUL, so the end of input ends the document */
	root = json_tokener_parse_ex(tok, text, (int) len + 1);
	err = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);

	if (root == NULL || err != json_tokener_success)
	{
		bool		at_end = (err == json_tokener_continue ||
							  err == json_tokener_error_parse_eof);

		if (root != NULL)
			json_object_put(root);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid %s: malformed json: %s", what, fsic_tokener_message(err)),
				 at_end ? 0 : errdetail("The error is at byte offset %zu.", end)));
	}

	/* strict mode refuses trailing data; make sure of it */
	while (end < len && (text[end] == ' ' || text[end] == '\t' ||
						 text[end] == '\n' || text[end] == '\r'))
		end++;
	if (end < len && text[end] != '\0')
	{
		json_object_put(root);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid %s: malformed json: unexpected data after the document", what),
				 errdetail("The error is at byte offset %zu.", end)));
	}

	bad = fsic_scan_text(text, len, &end);
	if (bad != 0)
	{
		json_object_put(root);
		if (bad == 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("invalid %s: partition names and instance ids must not contain \\u0000", what),
					 errdetail("The error is at byte offset %zu.", end)));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid %s: malformed json: %s", what,
						fsic_tokener_message(json_tokener_error_parse_unexpected)),
				 errdetail("The error is at byte offset %zu.", end)));
	}
	return root;
}

/*
 * fsic_count_map
 *		Check that v is a map {partition: {...}} and count its partitions,
 *		its instance counters and the bytes its partition names need.
 *		section is NULL for a plain map, else "super" or "sub".  Throws on
 *		a wrong shape (the caller frees the json-c tree in PG_FINALLY).
 */
static void
fsic_count_map(json_object *v, const char *what, const char *section,
			   int64 *nparts, int64 *nentries, size_t *namebytes)
{
	struct json_object_iterator it;
	struct json_object_iterator end;

	if (!json_object_is_type(v, json_type_object))
	{
		if (section)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: \"%s\" is %s, not a json object",
							what, section, fsic_type_name(v))));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: expected a json object of partitions, found %s",
						what, fsic_type_name(v))));
	}

	it = json_object_iter_begin(v);
	end = json_object_iter_end(v);
	while (!json_object_iter_equal(&it, &end))
	{
		const char *name = json_object_iter_peek_name(&it);
		json_object *insts = json_object_iter_peek_value(&it);

		if (!json_object_is_type(insts, json_type_object))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: partition \"%s\"%s is %s, not a json object of instance counters",
							what, name, fsic_where(section), fsic_type_name(insts))));
		*nparts += 1;
		*nentries += json_object_object_length(insts);
		*namebytes += strlen(name) + 1;
		json_object_iter_next(&it);
	}
}

/*
 * fsic_check_size
 *		Refuse more than MORANGO_FSIC_MAX_ENTRIES entries.
 */
static void
fsic_check_size(int64 nparts, int64 nentries, const char *what)
{
	if (nparts + nentries > MORANGO_FSIC_MAX_ENTRIES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("invalid %s: more than %d entries", what, MORANGO_FSIC_MAX_ENTRIES),
				 errdetail("It has " INT64_FORMAT " partitions and " INT64_FORMAT " instance counters; each counts as one entry.",
						   nparts, nentries)));
}

/*
 * fsic_alloc_map
 *		Make room in map for nparts partitions, nentries entries and
 *		namebytes bytes of names.
 */
static void
fsic_alloc_map(FsicMap *map, int64 nparts, int64 nentries, size_t namebytes)
{
	map->parts = palloc(sizeof(FsicPart) * Max(nparts, 1));
	map->nparts = 0;
	map->entries = palloc(sizeof(FsicEntry) * Max(nentries, 1));
	map->nentries = 0;
	map->names = palloc(Max(namebytes, 1));
	map->names_used = 0;
}

/*
 * fsic_fill_map
 *		Copy the map v (shape checked by fsic_count_map, room made by
 *		fsic_alloc_map) into map, checking instance ids and counters.
 *		Throws on a bad id or counter (the caller frees the json-c tree in
 *		PG_FINALLY).  Partitions and entries are left unsorted.
 */
static void
fsic_fill_map(json_object *v, const char *what, const char *section, FsicMap *map)
{
	struct json_object_iterator it = json_object_iter_begin(v);
	struct json_object_iterator end = json_object_iter_end(v);

	while (!json_object_iter_equal(&it, &end))
	{
		const char *name = json_object_iter_peek_name(&it);
		json_object *insts = json_object_iter_peek_value(&it);
		FsicPart   *part = &map->parts[map->nparts++];
		struct json_object_iterator iit = json_object_iter_begin(insts);
		struct json_object_iterator iend = json_object_iter_end(insts);
		size_t		len = strlen(name);

		memcpy(map->names + map->names_used, name, len + 1);
		part->name = map->names + map->names_used;
		part->len = len;
		part->first = map->nentries;
		part->count = 0;
		map->names_used += len + 1;

		while (!json_object_iter_equal(&iit, &iend))
		{
			const char *inst = json_object_iter_peek_name(&iit);
			json_object *c = json_object_iter_peek_value(&iit);
			FsicEntry  *e = &map->entries[map->nentries];
			int64		counter;

			if (!morango_uuid_parse_fsic_key(inst, strlen(inst), &e->inst))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s: instance id \"%s\" in partition \"%s\"%s is not a uuid",
								what, inst, name, fsic_where(section))));

			/*
			 * json-c clamps integers beyond int64 to INT64_MAX (or to
			 * UINT64_MAX as uint64); only a true INT64_MAX reads back the
			 * same as uint64.  Fractions and exponents are doubles.
			 */
			if (!json_object_is_type(c, json_type_int) ||
				(counter = json_object_get_int64(c)) < 0 ||
				(counter == PG_INT64_MAX &&
				 json_object_get_uint64(c) != (uint64) PG_INT64_MAX))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s: counter for instance \"%s\" in partition \"%s\"%s is not a non-negative integer",
								what, inst, name, fsic_where(section)),
						 errdetail("Counters are integers from 0 to " INT64_FORMAT ".",
								   PG_INT64_MAX)));
			e->counter = counter;
			map->nentries++;
			part->count++;
			json_object_iter_next(&iit);
		}
		json_object_iter_next(&it);
	}
}

/*
 * fsic_sort_map
 *		Sort a filled map: partitions by name, each partition's entries by
 *		instance.  Throws if an instance appears twice in a partition
 *		(two spellings of one uuid).
 */
static void
fsic_sort_map(FsicMap *map, const char *what, const char *section)
{
	qsort(map->parts, map->nparts, sizeof(FsicPart), fsic_part_cmp);
	for (int i = 0; i < map->nparts; i++)
	{
		FsicPart   *p = &map->parts[i];
		FsicEntry  *e = map->entries + p->first;

		if (p->count > 1)
			qsort(e, p->count, sizeof(FsicEntry), fsic_entry_cmp);
		for (int k = 1; k < p->count; k++)
		{
			if (fsic_inst_cmp(&e[k - 1].inst, &e[k].inst) == 0)
			{
				char		buf[MORANGO_UUID_TEXT_LEN + 1];

				morango_uuid_format(&e[k].inst, buf);
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s: instance %s appears twice in partition \"%s\"%s",
								what, buf, p->name, fsic_where(section)),
						 errdetail("Instance ids are compared in canonical form (lowercase, with dashes).")));
			}
		}
	}
}

/*
 * fsic_free_map
 *		Free what fsic_alloc_map allocated.
 */
static void
fsic_free_map(FsicMap *map)
{
	pfree(map->parts);
	pfree(map->entries);
	pfree(map->names);
}

/*
 * fsic_read_map
 *		Parse and check a map {partition: {instance_id: counter}} into
 *		*map, sorted.  Throws on invalid input, after freeing json-c's
 *		memory.
 */
static void
fsic_read_map(const char *text, const char *what, FsicMap *map)
{
	json_object *root = fsic_parse_json(text, what);

	PG_TRY();
	{
		int64		nparts = 0;
		int64		nentries = 0;
		size_t		namebytes = 0;

		fsic_count_map(root, what, NULL, &nparts, &nentries, &namebytes);
		fsic_check_size(nparts, nentries, what);
		fsic_alloc_map(map, nparts, nentries, namebytes);
		fsic_fill_map(root, what, NULL, map);
	}
	PG_FINALLY();
	{
		json_object_put(root);
	}
	PG_END_TRY();

	fsic_sort_map(map, what, NULL);
}

/*
 * fsic_read_raw
 *		Parse and check a raw v2 FSIC {"super": map, "sub": map} into
 *		*super and *sub, sorted.  Other keys are refused.  Throws on
 *		invalid input, after freeing json-c's memory.
 */
static void
fsic_read_raw(const char *text, const char *what, FsicMap *super, FsicMap *sub)
{
	json_object *root = fsic_parse_json(text, what);

	PG_TRY();
	{
		struct json_object_iterator it;
		struct json_object_iterator end;
		json_object *jsuper;
		json_object *jsub;
		int64		nparts_super = 0;
		int64		nentries_super = 0;
		size_t		names_super = 0;
		int64		nparts_sub = 0;
		int64		nentries_sub = 0;
		size_t		names_sub = 0;

		if (!json_object_is_type(root, json_type_object))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: expected a json object with keys \"super\" and \"sub\", found %s",
							what, fsic_type_name(root))));
		it = json_object_iter_begin(root);
		end = json_object_iter_end(root);
		while (!json_object_iter_equal(&it, &end))
		{
			const char *key = json_object_iter_peek_name(&it);

			if (strcmp(key, "super") != 0 && strcmp(key, "sub") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s: unexpected key \"%s\"", what, key),
						 errdetail("A v2 FSIC has exactly two keys, \"super\" and \"sub\".")));
			json_object_iter_next(&it);
		}
		if (!json_object_object_get_ex(root, "super", &jsuper))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: key \"super\" is missing", what)));
		if (!json_object_object_get_ex(root, "sub", &jsub))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: key \"sub\" is missing", what)));

		fsic_count_map(jsuper, what, "super", &nparts_super, &nentries_super, &names_super);
		fsic_count_map(jsub, what, "sub", &nparts_sub, &nentries_sub, &names_sub);
		fsic_check_size(nparts_super + nparts_sub, nentries_super + nentries_sub, what);
		fsic_alloc_map(super, nparts_super, nentries_super, names_super);
		fsic_alloc_map(sub, nparts_sub, nentries_sub, names_sub);
		fsic_fill_map(jsuper, what, "super", super);
		fsic_fill_map(jsub, what, "sub", sub);
	}
	PG_FINALLY();
	{
		json_object_put(root);
	}
	PG_END_TRY();

	fsic_sort_map(super, what, "super");
	fsic_sort_map(sub, what, "sub");
}

/* ------------------------------------------------------------------------
 * Results
 * ------------------------------------------------------------------------
 */

/*
 * fsic_result
 *		The map of the nparts partitions parts, with the nentries entries
 *		they index, as a palloc'd FsicMap that takes parts and entries over
 *		and holds a copy of the names (which may point into maps the caller
 *		frees, or into the caller's filter).
 */
static FsicMap *
fsic_result(FsicPart *parts, int nparts, FsicEntry *entries, int nentries)
{
	FsicMap    *map = palloc(sizeof(FsicMap));
	size_t		bytes = 0;

	for (int i = 0; i < nparts; i++)
		bytes += parts[i].len + 1;
	map->names = palloc(Max(bytes, 1));
	map->names_used = 0;
	for (int i = 0; i < nparts; i++)
	{
		char	   *name = map->names + map->names_used;

		memcpy(name, parts[i].name, parts[i].len);
		name[parts[i].len] = '\0';
		parts[i].name = name;
		map->names_used += parts[i].len + 1;
	}
	map->parts = parts;
	map->nparts = nparts;
	map->entries = entries;
	map->nentries = nentries;
	return map;
}

/* ------------------------------------------------------------------------
 * Expansion
 * ------------------------------------------------------------------------
 */

/*
 * fsic_out_reserve
 *		Make room for n more entries in the growing output list.
 */
static void
fsic_out_reserve(FsicEntry **out, int *cap, int used, int64 n)
{
	if ((int64) used + n > *cap)
	{
		int64		newcap = Max((int64) *cap * 2, (int64) used + n);

		*out = repalloc(*out, sizeof(FsicEntry) * newcap);
		*cap = (int) newcap;
	}
}

/*
 * fsic_expand_too_big
 *		Throw: the expanded map would be larger than we accept.
 */
static void
fsic_expand_too_big(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("expanded fsic would have more than %d entries",
					MORANGO_FSIC_MAX_ENTRIES),
			 errdetail("Each partition counts as one entry, and so does each instance counter in it.")));
}

/*
 * fsic_lower_bound
 *		The index of the first of the nq partitions parts[queries[0 ..
 *		nq - 1]] (in name order) whose name is >= u's, nq if none.
 */
static int
fsic_lower_bound(const FsicPart *parts, const int *queries, int nq, const FsicPart *u)
{
	int			lo = 0,
				hi = nq;

	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (fsic_name_cmp(&parts[queries[mid]], u) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * fsic_raise
 *		Step (b) of morango_fsic_expand: for each of the nq partitions
 *		parts[queries[...]] (sorted by name) and each instance, the highest
 *		non-zero counter of that instance among the super partitions the
 *		partition starts with (itself included), if there is one.  Returns
 *		them as a palloc'd array sorted by (partition, instance), rank being
 *		the partition's index in parts; *nout gets their number.  Throws if
 *		there are more than MORANGO_FSIC_MAX_ENTRIES (each is an entry of
 *		the expanded map).
 *
 *		Instance-major, so that the cost is O((e + r) log e) for e super
 *		entries and r results, whatever the shape of the super partitions:
 *		the super entries of one instance are walked in name order with a
 *		stack of those the current name starts with, each holding the
 *		running maximum down to it; the partitions under a super partition
 *		with no super partition of that instance above it (the root of a
 *		stack) are found by binary search and walked along, each taking the
 *		maximum on top of the stack.  (Keeping, per super partition, the
 *		maximum of every instance above it, as an earlier version did, costs
 *		the length of a chain of super partitions times its instances, in
 *		time and memory: a few megabytes of FSIC made it allocate
 *		gigabytes.)
 */
static FsicDiffItem *
fsic_raise(const FsicMap *super, const FsicPart *parts, const int *queries, int nq, int *nout)
{
	FsicDiffItem *items = palloc(sizeof(FsicDiffItem) * Max(super->nentries, 1));
	FsicDiffLevel *stack;
	FsicDiffItem *out;
	int			nitems = 0;
	int			n = 0;
	int			cap = 64;

	/* the super entries that can raise anything (a counter of 0 cannot) */
	for (int u = 0; u < super->nparts; u++)
		for (int k = 0; k < super->parts[u].count; k++)
		{
			const FsicEntry *e = &super->entries[super->parts[u].first + k];

			if (e->counter == 0)
				continue;
			items[nitems].inst = e->inst;
			items[nitems].rank = u;
			items[nitems].side = FSIC_SENDER;
			items[nitems].counter = e->counter;
			nitems++;
		}
	qsort(items, nitems, sizeof(FsicDiffItem), fsic_item_cmp);

	stack = palloc(sizeof(FsicDiffLevel) * Max(nitems, 1));
	out = palloc(sizeof(FsicDiffItem) * cap);
	for (int i = 0; i < nitems;)
	{
		int			end = i;
		int			depth = 0;
		int			q = -1;		/* the next partition to raise, -1: none */

		while (end < nitems && fsic_inst_cmp(&items[end].inst, &items[i].inst) == 0)
			end++;
		for (int k = i; k <= end; k++)
		{
			const FsicPart *u = k < end ? &super->parts[items[k].rank] : NULL;

			/* the partitions before u (all the rest after the last one) */
			while (q >= 0 && q < nq &&
				   (u == NULL || fsic_name_cmp(&parts[queries[q]], u) < 0))
			{
				const FsicPart *p = &parts[queries[q]];

				while (depth > 0 && !fsic_is_prefix(&super->parts[stack[depth - 1].rank], p))
					depth--;
				if (depth == 0)
				{
					q = -1;		/* past the partitions under the stack */
					break;
				}
				if (n >= MORANGO_FSIC_MAX_ENTRIES)
					fsic_expand_too_big();
				if (n == cap)
				{
					cap *= 2;
					out = repalloc(out, sizeof(FsicDiffItem) * cap);
				}
				out[n].inst = items[i].inst;
				out[n].rank = queries[q];
				out[n].side = FSIC_SENDER;
				out[n].counter = stack[depth - 1].running_max;
				n++;
				q++;
			}
			if (u == NULL)
				break;
			while (depth > 0 && !fsic_is_prefix(&super->parts[stack[depth - 1].rank], u))
				depth--;
			if (depth == 0)
				q = fsic_lower_bound(parts, queries, nq, u);
			stack[depth].rank = items[k].rank;
			stack[depth].running_max = depth > 0 ?
				Max(stack[depth - 1].running_max, items[k].counter) : items[k].counter;
			depth++;
		}
		i = end;
	}
	qsort(out, n, sizeof(FsicDiffItem), fsic_item_out_cmp);
	pfree(stack);
	pfree(items);
	*nout = n;
	return out;
}

/*
 * morango_fsic_expand
 *		Morango's expand_fsic_for_use: the map used for queuing and for
 *		raising database max counters, from a raw v2 FSIC and the transfer's
 *		filter prefixes (nfilter of them; none adds no partition).
 *
 *		(a) every filter prefix is added to "sub" as {} if absent;
 *		(b) each sub partition S that does not start with another sub
 *		    partition gets, for every instance, the highest counter of the
 *		    super partitions S starts with (S itself included), where that
 *		    is higher than its own (a counter of 0 adds nothing);
 *		(c) empty sub partitions are dropped.
 *
 *		Returns the resulting map, palloc'd (partitions and instances
 *		sorted).  Throws on an invalid FSIC, or if the result would have
 *		more than MORANGO_FSIC_MAX_ENTRIES entries.
 */
FsicMap *
morango_fsic_expand(const char *raw_v2_json, const char *const *filter, int nfilter)
{
	FsicMap		super;
	FsicMap		sub;
	FsicPart   *parts;
	int			nparts = 0;
	bool	   *subordinate;
	int		   *stack;
	int			depth = 0;
	int		   *queries;
	int			nqueries = 0;
	FsicDiffItem *raised;
	int			nraised;
	int			ri = 0;
	FsicPart   *oparts;
	int			noparts = 0;
	FsicEntry  *oentries;
	int			ocap;
	int			noentries = 0;
	FsicMap    *result;

	Assert(nfilter >= 0);
	fsic_read_raw(raw_v2_json, "fsic", &super, &sub);

	/* (a) the sub partitions and the filter prefixes, sorted, no duplicates */
	parts = palloc(sizeof(FsicPart) * ((Size) sub.nparts + nfilter + 1));
	memcpy(parts, sub.parts, sizeof(FsicPart) * sub.nparts);
	nparts = sub.nparts;
	for (int i = 0; i < nfilter; i++)
	{
		parts[nparts].name = filter[i];
		parts[nparts].len = strlen(filter[i]);
		parts[nparts].first = -1;
		parts[nparts].count = 0;
		nparts++;
	}
	qsort(parts, nparts, sizeof(FsicPart), fsic_part_added_cmp);
	if (nparts > 1)
	{
		int			n = 1;

		for (int i = 1; i < nparts; i++)
			if (fsic_name_cmp(&parts[n - 1], &parts[i]) != 0)
				parts[n++] = parts[i];
		nparts = n;
	}

	/*
	 * Which sub partitions start with another one.  Walking the sorted
	 * names, the stack holds those that the current name starts with: the
	 * names that start with a given one are contiguous in sorted order, so
	 * a name popped for not being a prefix of the current one is no prefix
	 * of any later one.
	 */
	subordinate = palloc(sizeof(bool) * Max(nparts, 1));
	stack = palloc(sizeof(int) * Max(nparts, 1));
	for (int i = 0; i < nparts; i++)
	{
		while (depth > 0 && !fsic_is_prefix(&parts[stack[depth - 1]], &parts[i]))
			depth--;
		subordinate[i] = (depth > 0);
		stack[depth++] = i;
	}

	/* (b): what the super partitions raise, then (c) */
	queries = palloc(sizeof(int) * Max(nparts, 1));
	for (int k = 0; k < nparts; k++)
		if (!subordinate[k])
			queries[nqueries++] = k;
	raised = fsic_raise(&super, parts, queries, nqueries, &nraised);

	oparts = palloc(sizeof(FsicPart) * Max(nparts, 1));
	ocap = Max(sub.nentries, 64);
	oentries = palloc(sizeof(FsicEntry) * ocap);
	for (int k = 0; k < nparts; k++)
	{
		const FsicPart *s = &parts[k];
		const FsicEntry *own = s->first >= 0 ? sub.entries + s->first : NULL;
		int			first = noentries;
		int			nr = 0;
		int			i = 0,
					j = 0;

		/* this partition's raises: raised[ri .. ri + nr - 1], by instance */
		while (ri + nr < nraised && raised[ri + nr].rank == k)
			nr++;
		fsic_out_reserve(&oentries, &ocap, noentries,
						 Min((int64) s->count + nr, (int64) MORANGO_FSIC_MAX_ENTRIES - noentries + 1));
		while (i < s->count || j < nr)
		{
			const FsicDiffItem *r = j < nr ? &raised[ri + j] : NULL;
			int			c = (i >= s->count) ? 1 : (j >= nr) ? -1 : fsic_inst_cmp(&own[i].inst, &r->inst);

			/* this partition and the entry about to be written */
			if ((int64) noparts + 1 + noentries + 1 > MORANGO_FSIC_MAX_ENTRIES)
				fsic_expand_too_big();
			if (c < 0)
				oentries[noentries++] = own[i++];
			else
			{
				oentries[noentries].inst = r->inst;
				oentries[noentries].counter = r->counter;
				if (c == 0 && own[i].counter > r->counter)
					oentries[noentries].counter = own[i].counter;
				if (c == 0)
					i++;
				j++;
				noentries++;
			}
		}
		ri += nr;

		/* (c) only partitions with entries are kept */
		if (noentries > first)
		{
			oparts[noparts] = *s;
			oparts[noparts].first = first;
			oparts[noparts].count = noentries - first;
			noparts++;
		}
	}

	result = fsic_result(oparts, noparts, oentries, noentries);

	pfree(raised);
	pfree(queries);
	pfree(stack);
	pfree(subordinate);
	pfree(parts);
	fsic_free_map(&super);
	fsic_free_map(&sub);
	return result;
}

/* ------------------------------------------------------------------------
 * Diff
 * ------------------------------------------------------------------------
 */

/*
 * morango_fsic_diff_maps
 *		Morango's calculate_directional_fsic_diff_v2, on expanded maps (as
 *		morango_fsic_expand() returns them): for each sender partition P and
 *		instance i with counter c, let r be the highest counter of i in the
 *		receiver's partitions that P starts with (P itself included; 0 if
 *		none); if r < c, the result has P: {i: r}, meaning "send P's
 *		versions of i above r".
 *
 *		Returns the result, palloc'd (no partition when the receiver lacks
 *		nothing; partitions and instances sorted).  The maps are not checked
 *		again: they must be what fsic.h says a map is.
 *
 *		The work is instance-major: all entries of both sides sorted by
 *		(instance, partition, receiver first) and walked with a stack of the
 *		receiver's partitions that the current one starts with, each
 *		holding the maximum counter down to it.
 */
FsicMap *
morango_fsic_diff_maps(const FsicMap *snd, const FsicMap *rcv)
{
	const FsicPart **names;
	int			nnames = 0;
	int32	   *srank;
	int32	   *rrank;
	FsicDiffItem *items;
	int			nitems = 0;
	FsicDiffLevel *stack;
	int			nout = 0;
	FsicPart   *oparts;
	int			noparts = 0;
	FsicEntry  *oentries;
	FsicMap    *result;
	int			i,
				j;

	/* every partition name of either side, sorted once, and its rank */
	names = palloc(sizeof(FsicPart *) * Max(snd->nparts + rcv->nparts, 1));
	srank = palloc(sizeof(int32) * Max(snd->nparts, 1));
	rrank = palloc(sizeof(int32) * Max(rcv->nparts, 1));
	i = j = 0;
	while (i < snd->nparts || j < rcv->nparts)
	{
		int			c = (i >= snd->nparts) ? 1 : (j >= rcv->nparts) ? -1 :
		fsic_name_cmp(&snd->parts[i], &rcv->parts[j]);

		if (c <= 0)
			srank[i] = nnames;
		if (c >= 0)
			rrank[j] = nnames;
		names[nnames++] = (c <= 0) ? &snd->parts[i] : &rcv->parts[j];
		if (c <= 0)
			i++;
		if (c >= 0)
			j++;
	}

	items = palloc(sizeof(FsicDiffItem) * Max(snd->nentries + rcv->nentries, 1));
	for (i = 0; i < rcv->nparts; i++)
		for (int k = 0; k < rcv->parts[i].count; k++)
		{
			const FsicEntry *e = &rcv->entries[rcv->parts[i].first + k];
			FsicDiffItem *it = &items[nitems++];

			it->inst = e->inst;
			it->rank = rrank[i];
			it->side = FSIC_RECEIVER;
			it->counter = e->counter;
		}
	for (i = 0; i < snd->nparts; i++)
		for (int k = 0; k < snd->parts[i].count; k++)
		{
			const FsicEntry *e = &snd->entries[snd->parts[i].first + k];
			FsicDiffItem *it = &items[nitems++];

			it->inst = e->inst;
			it->rank = srank[i];
			it->side = FSIC_SENDER;
			it->counter = e->counter;
		}
	qsort(items, nitems, sizeof(FsicDiffItem), fsic_item_cmp);

	/*
	 * One instance at a time.  Results overwrite the items already walked
	 * (nout never exceeds the index walked), with counter = r.
	 */
	stack = palloc(sizeof(FsicDiffLevel) * Max(rcv->nentries, 1));
	for (i = 0; i < nitems;)
	{
		int			end = i;
		int			depth = 0;

		while (end < nitems && fsic_inst_cmp(&items[end].inst, &items[i].inst) == 0)
			end++;
		for (int k = i; k < end; k++)
		{
			FsicDiffItem it = items[k];
			const FsicPart *p = names[it.rank];

			while (depth > 0 && !fsic_is_prefix(names[stack[depth - 1].rank], p))
				depth--;
			if (it.side == FSIC_RECEIVER)
			{
				int64		m = it.counter;

				if (depth > 0 && stack[depth - 1].running_max > m)
					m = stack[depth - 1].running_max;
				stack[depth].rank = it.rank;
				stack[depth].running_max = m;
				depth++;
			}
			else
			{
				int64		r = depth > 0 ? stack[depth - 1].running_max : 0;

				if (r < it.counter)
				{
					it.counter = r;
					items[nout++] = it;
				}
			}
		}
		i = end;
	}

	/* the result, by partition then instance */
	qsort(items, nout, sizeof(FsicDiffItem), fsic_item_out_cmp);
	oparts = palloc(sizeof(FsicPart) * Max(snd->nparts, 1));
	oentries = palloc(sizeof(FsicEntry) * Max(nout, 1));
	for (i = 0; i < nout; i++)
	{
		if (i == 0 || items[i].rank != items[i - 1].rank)
		{
			oparts[noparts] = *names[items[i].rank];
			oparts[noparts].first = i;
			oparts[noparts].count = 0;
			noparts++;
		}
		oentries[i].inst = items[i].inst;
		oentries[i].counter = items[i].counter;
		oparts[noparts - 1].count++;
	}

	result = fsic_result(oparts, noparts, oentries, nout);

	pfree(stack);
	pfree(items);
	pfree(rrank);
	pfree(srank);
	pfree(names);
	return result;
}

/*
 * morango_fsic_diff
 *		morango_fsic_diff_maps() of two maps {partition: {instance_id:
 *		counter}} given as JSON text, after checking them.  Throws on an
 *		invalid map.
 */
FsicMap *
morango_fsic_diff(const char *sender_json, const char *receiver_json)
{
	FsicMap		snd;
	FsicMap		rcv;
	FsicMap    *result;

	fsic_read_map(sender_json, "sender fsic", &snd);
	fsic_read_map(receiver_json, "receiver fsic", &rcv);
	result = morango_fsic_diff_maps(&snd, &rcv);
	fsic_free_map(&snd);
	fsic_free_map(&rcv);
	return result;
}
