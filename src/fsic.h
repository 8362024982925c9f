/*-------------------------------------------------------------------------
 *
 * fsic.h
 *		Filter-specific instance counters (FSIC, Morango's v2 format): the
 *		pure expansion and diff of fsic.c.
 *
 * An FSIC map is the JSON text {partition: {instance_id: counter}}; a raw
 * v2 FSIC, as exchanged between peers, is {"super": map, "sub": map}.
 * Every function here takes and returns NUL-terminated JSON text, never
 * modifies its inputs, returns palloc'd results and throws (ereport ERROR)
 * on invalid input.  This header deliberately does not include json-c, so
 * that files using PostgreSQL's utils/builtins.h can include it.
 *
 * IDENTIFICATION
 *		src/fsic.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MORANGO_FSIC_H
#define MORANGO_FSIC_H

#include "postgres.h"

/*
 * The most entries an FSIC (or a map computed from one) may have.  A
 * partition counts as one entry, and so does each instance counter in it
 * (the unit of Morango's chunk_fsic_v2).
 */
#define MORANGO_FSIC_MAX_ENTRIES 1000000

extern char *morango_fsic_expand(const char *raw_v2_json,
								 const char *const *filter, int nfilter);
extern char *morango_fsic_diff(const char *sender_json, const char *receiver_json);

#endif							/* MORANGO_FSIC_H */
