/*-------------------------------------------------------------------------
 *
 * fsic.h
 *		Filter-specific instance counters (FSIC, Morango's v2 format): the
 *		pure expansion and diff of fsic.c.
 *
 * An FSIC map is the JSON text {partition: {instance_id: counter}}; a raw
 * v2 FSIC, as exchanged between peers, is {"super": map, "sub": map}.
 * The functions here read FSICs as NUL-terminated JSON text (json-c, in
 * fsic.c: every check of an FSIC is there), never modify their inputs,
 * throw (ereport ERROR) on invalid input, and return their result as a
 * palloc'd MorangoFsicMap, which the callers pass on as they need it (as
 * arrays to SQL, as jsonb from the SQL functions of fsic_sql.c) without
 * a JSON text in between.  This header deliberately does not include
 * json-c, so that files using PostgreSQL's utils/builtins.h can include it.
 *
 * IDENTIFICATION
 *		src/fsic.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MORANGO_FSIC_H
#define MORANGO_FSIC_H

#include "postgres.h"

#include "utils/uuid.h"

/*
 * The most entries an FSIC (or a map computed from one) may have.  A
 * partition counts as one entry, and so does each instance counter in it
 * (the unit of Morango's chunk_fsic_v2).
 */
#define MORANGO_FSIC_MAX_ENTRIES 1000000

/* One instance counter of a partition. */
typedef struct MorangoFsicEntry
{
	pg_uuid_t	inst;
	int64		counter;
} MorangoFsicEntry;

/*
 * A partition of a map: its name and its entries, entries[first] to
 * entries[first + count - 1] of the map, sorted by instance.  (Inside
 * fsic.c, first is -1 for a filter prefix morango_fsic_expand() adds.)
 */
typedef struct MorangoFsicPart
{
	const char *name;			/* NUL-terminated */
	size_t		len;
	int			first;
	int			count;
} MorangoFsicPart;

/*
 * A map {partition: {instance: counter}}: partitions sorted bytewise by
 * name (morango_prefix_cmp), no name twice, no instance twice in a
 * partition, counters from 0 to PG_INT64_MAX.  The maps the functions
 * below return have no partition without entries, and own their names.
 */
typedef struct MorangoFsicMap
{
	MorangoFsicPart *parts;
	int			nparts;
	MorangoFsicEntry *entries;
	int			nentries;
	char	   *names;			/* storage of the partition names */
	size_t		names_used;
} MorangoFsicMap;

extern MorangoFsicMap *morango_fsic_expand(const char *raw_v2_json,
										   const char *const *filter, int nfilter);
extern MorangoFsicMap *morango_fsic_diff(const char *sender_json, const char *receiver_json);
extern MorangoFsicMap *morango_fsic_diff_maps(const MorangoFsicMap *sender,
											  const MorangoFsicMap *receiver);

#endif							/* MORANGO_FSIC_H */
