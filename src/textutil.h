/*-------------------------------------------------------------------------
 *
 * textutil.h
 *		Pure text helpers (no SPI, no catalog access, no JSON library):
 *		the byte-prefix predicate and order of partition names, and the
 *		one uuid parser (textutil.c).
 *
 * This header includes nothing but postgres.h and utils/uuid.h, so that
 * every file can use it, fsic.c (json-c) as well as the files that include
 * utils/builtins.h.
 *
 * IDENTIFICATION
 *		src/textutil.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MORANGO_TEXTUTIL_H
#define MORANGO_TEXTUTIL_H

#include "postgres.h"

#include "utils/uuid.h"

/*
 * morango_starts_with
 *		Does s (slen bytes, not necessarily NUL-terminated) start with
 *		prefix (plen bytes)?  The partition filter's predicate: bytewise,
 *		as starts_with() compares under a deterministic collation (see
 *		filter.c for why bytes and characters agree).  Equal strings count.
 */
static inline bool
morango_starts_with(const char *s, size_t slen, const char *prefix, size_t plen)
{
	return plen <= slen && memcmp(s, prefix, plen) == 0;
}

/*
 * morango_prefix_cmp
 *		Bytewise order of two strings given with their lengths; a string
 *		sorts before every longer string it is a prefix of.  In this order
 *		the strings that start with a given one are contiguous and follow
 *		it, which the filter and FSIC algorithms rely on.
 */
static inline int
morango_prefix_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int			c = memcmp(a, b, Min(alen, blen));

	if (c != 0)
		return c;
	return (alen > blen) - (alen < blen);
}

/*
 * How a uuid was written, as morango_uuid_parse() found it: in braces or
 * not, with an uppercase hex digit or not, and where its dashes were (bit
 * k of dashes: one after hex digit 4 * (k + 1), k = 0 .. 6).
 */
typedef struct MorangoUuidForm
{
	bool		braces;
	bool		upper;
	uint8		dashes;
} MorangoUuidForm;

/* the dashes of the 8-4-4-4-12 form (after hex digits 8, 12, 16 and 20) */
#define MORANGO_UUID_DASHES_8_4_4_4_12 0x1e

/* the length of a uuid's canonical text, without the NUL */
#define MORANGO_UUID_TEXT_LEN 36

extern bool morango_uuid_parse(const char *s, size_t len, pg_uuid_t *out,
							   MorangoUuidForm *form);
extern bool morango_uuid_parse_fsic_key(const char *s, size_t len, pg_uuid_t *out);
extern bool morango_uuid_parse_vector_key(const char *s, size_t len, pg_uuid_t *out);
extern void morango_uuid_format(const pg_uuid_t *uuid, char *buf);

#endif							/* MORANGO_TEXTUTIL_H */
