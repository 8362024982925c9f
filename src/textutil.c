/*-------------------------------------------------------------------------
 *
 * textutil.c
 *		The one uuid parser, and the stricter forms some inputs must have,
 *		built on it.  Pure: no SPI, no catalog access, and no error is
 *		raised for text that is not a uuid (the functions return false and
 *		each caller words its own error).
 *
 * morango_uuid_parse() accepts exactly what PostgreSQL's uuid type
 * accepts (string_to_uuid in src/backend/utils/adt/uuid.c): 32 hex digits
 * of either case, optionally in braces, with an optional dash after each
 * group of four digits but the last.  It also reports the form it found,
 * so that an input with a stricter rule checks that rule on the same
 * parse instead of a parser of its own:
 *
 *   morango_uuid_parse_fsic_key: an instance id of an FSIC map must be 32
 *     hex digits or the 8-4-4-4-12 form (either case, no braces), the two
 *     forms Morango and morango write (fsic.c; the regression test fsic
 *     holds the forms refused);
 *   morango_uuid_parse_vector_key: an instance id of a record's version
 *     vector in a chunk must be lowercase, with dashes, if any, only where
 *     the 8-4-4-4-12 form has them, and no braces (buffer.c).
 *
 * IDENTIFICATION
 *		src/textutil.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "textutil.h"

/* value of an ASCII hex digit (setting *upper for A-F), or -1 */
static inline int
hex_value(char c, bool *upper)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
	{
		*upper = true;
		return c - 'A' + 10;
	}
	return -1;
}

/*
 * morango_uuid_parse
 *		Parse s (len bytes, not necessarily NUL-terminated) as the uuid type
 *		reads a uuid into *out, and, if form is not NULL, say how it was
 *		written in *form.  Returns false, leaving *out and *form undefined,
 *		if s is not a uuid.
 */
bool
morango_uuid_parse(const char *s, size_t len, pg_uuid_t *out, MorangoUuidForm *form)
{
	MorangoUuidForm f = {false, false, 0};
	size_t		pos = 0;

	if (pos < len && s[pos] == '{')
	{
		f.braces = true;
		pos++;
	}
	for (int i = 0; i < UUID_LEN; i++)
	{
		int			hi,
					lo;

		if (pos + 2 > len ||
			(hi = hex_value(s[pos], &f.upper)) < 0 ||
			(lo = hex_value(s[pos + 1], &f.upper)) < 0)
			return false;
		out->data[i] = (unsigned char) (hi << 4 | lo);
		pos += 2;
		if (pos < len && s[pos] == '-' && (i % 2) == 1 && i < UUID_LEN - 1)
		{
			f.dashes |= (uint8) (1 << (i / 2));
			pos++;
		}
	}
	if (f.braces)
	{
		if (pos >= len || s[pos] != '}')
			return false;
		pos++;
	}
	if (pos != len)
		return false;
	if (form != NULL)
		*form = f;
	return true;
}

/*
 * morango_uuid_parse_fsic_key
 *		morango_uuid_parse() of an FSIC map's instance id, which must be 32
 *		hex digits or the 8-4-4-4-12 form, either case, without braces.
 */
bool
morango_uuid_parse_fsic_key(const char *s, size_t len, pg_uuid_t *out)
{
	MorangoUuidForm f;

	return morango_uuid_parse(s, len, out, &f) && !f.braces &&
		(f.dashes == 0 || f.dashes == MORANGO_UUID_DASHES_8_4_4_4_12);
}

/*
 * morango_uuid_parse_vector_key
 *		morango_uuid_parse() of a version vector's instance id, which must
 *		be lowercase, without braces, and have dashes only where the
 *		8-4-4-4-12 form has them (each optional).
 */
bool
morango_uuid_parse_vector_key(const char *s, size_t len, pg_uuid_t *out)
{
	MorangoUuidForm f;

	return morango_uuid_parse(s, len, out, &f) && !f.braces && !f.upper &&
		(f.dashes & ~MORANGO_UUID_DASHES_8_4_4_4_12) == 0;
}

/*
 * morango_uuid_format
 *		Write the canonical text of uuid (lowercase, 8-4-4-4-12, as uuid_out
 *		writes it) and a NUL into buf[MORANGO_UUID_TEXT_LEN + 1].
 */
void
morango_uuid_format(const pg_uuid_t *uuid, char *buf)
{
	static const char hex[] = "0123456789abcdef";
	char	   *p = buf;

	for (int i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[uuid->data[i] >> 4];
		*p++ = hex[uuid->data[i] & 0x0f];
	}
	*p = '\0';
}
