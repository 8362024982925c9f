/*-------------------------------------------------------------------------
 *
 * pack.c
 *		Chunks on the wire: a chunk (a jsonb array of records) travels
 *		between peers compressed, as text.
 *
 * A packed chunk is the base64 text of
 *
 *		4 bytes		the length of the chunk's JSON text, big-endian
 *		rest		that JSON text in UTF-8, deflated (zlib format)
 *
 * The text is UTF-8 whatever the encodings of the two databases, as
 * libpq's client_encoding conversion would have made it.
 * Records repeat their field names, profile, model name and partition
 * prefixes, so a chunk compresses several times; base64 keeps it text,
 * which is how every remote call travels (doc/protocol.md).  Unpacking
 * trusts nothing: the declared length is capped, and must be one the
 * stream could inflate to (deflate expands at most 1032 times) before it is
 * allocated; the stream must inflate to exactly that length, and the result
 * is parsed as any jsonb input.
 *
 * IDENTIFICATION
 *		src/pack.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <zlib.h>

#include "common/base64.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "morango.h"

PG_FUNCTION_INFO_V1(morango_pack_chunk);
PG_FUNCTION_INFO_V1(morango_unpack_chunk);
PG_FUNCTION_INFO_V1(morango_receive_packed_chunk);

/* zlib level: 1 compresses JSON nearly as well as 6, several times faster */
#define PACK_LEVEL 1

/*
 * The most JSON a chunk may hold, packed or unpacked, is
 * MORANGO_MAX_CHUNK_BYTES (morango.h) whatever the settings say; a chunk
 * received from a peer may hold at most morango.max_chunk_bytes unpacked.
 * Deflate inflates up to about 1000 times, so without a bound a megabyte
 * from a peer could make us allocate and parse a gigabyte.
 */

/*
 * morango_pack
 *		Pack the JSON text json (len bytes) as described above; returns a
 *		palloc'd text datum.
 */
static text *
morango_pack(const char *json, size_t len)
{
	uLongf		zlen;
	unsigned char *raw;
	int			rc;
	int			enclen;
	text	   *out;

	if (len > MORANGO_MAX_CHUNK_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("chunk of %zu bytes is too large to send", len),
				 errhint("Lower morango.chunk_size.")));
	zlen = compressBound((uLong) len);
	raw = palloc(4 + zlen);
	raw[0] = (len >> 24) & 0xff;
	raw[1] = (len >> 16) & 0xff;
	raw[2] = (len >> 8) & 0xff;
	raw[3] = len & 0xff;
	rc = compress2(raw + 4, &zlen, (const Bytef *) json, (uLong) len, PACK_LEVEL);
	if (rc != Z_OK)
		elog(ERROR, "zlib compress2 failed: %d", rc);

	enclen = pg_b64_enc_len(4 + (int) zlen);
	out = (text *) palloc(VARHDRSZ + enclen);
	enclen = pg_b64_encode((const char *) raw, 4 + (int) zlen, VARDATA(out), enclen);
	if (enclen < 0)
		elog(ERROR, "base64 encoding of a chunk failed");
	SET_VARSIZE(out, VARHDRSZ + enclen);
	pfree(raw);
	return out;
}

/*
 * morango_unpack
 *		The JSON text (NUL-terminated, palloc'd) of packed chunk p, which
 *		may hold at most limit bytes of JSON; raises ERRCODE_DATA_CORRUPTED
 *		if p is not a packed chunk and ERRCODE_PROGRAM_LIMIT_EXCEEDED if it
 *		is larger, both before inflating anything.  Every buffer but the
 *		result is freed before it returns.
 */
static char *
morango_unpack(text *p, int limit)
{
	int			plen = VARSIZE_ANY_EXHDR(p);
	int			maxlen;
	unsigned char *raw;
	int			rawlen;
	uLongf		len;
	uLongf		got;
	char	   *json;
	char	   *converted;

	/* packing limit bytes gives at most this much text (deflate, base64) */
	if (plen > pg_b64_enc_len(4 + (int) compressBound((uLong) limit)))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("packed chunk of %d bytes is too large", plen),
				 errdetail("This database takes chunks of at most %d bytes of JSON "
						   "(morango.max_chunk_bytes).", limit)));
	maxlen = pg_b64_dec_len(plen);
	raw = palloc(Max(maxlen, 4));
	rawlen = pg_b64_decode(VARDATA_ANY(p), plen, (char *) raw, maxlen);
	if (rawlen < 4)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("packed chunk is not valid base64 or is too short")));
	len = ((uLongf) raw[0] << 24) | ((uLongf) raw[1] << 16) | ((uLongf) raw[2] << 8) | raw[3];
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("packed chunk declares no records")));
	if (len > (uLongf) limit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("packed chunk declares %lu bytes of records", (unsigned long) len),
				 errdetail("This database takes chunks of at most %d bytes of JSON "
						   "(morango.max_chunk_bytes).", limit),
				 errhint("The sender must cut its chunks to the limits peer_begin announces.")));
	/*
	 * Deflate expands at most 1032 times (a long run of one byte; the zlib
	 * wrapper's 6 bytes only add slack): a declared length the stream cannot
	 * reach is refused before it is allocated, so 30 bytes cannot make us
	 * allocate 256 MB.
	 */
	if (len > (uLongf) (rawlen - 4) * 1032)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("packed chunk declares %lu bytes, more than its %d bytes of deflated data can hold",
						(unsigned long) len, rawlen - 4)));
	json = palloc(len + 1);
	got = len;
	if (uncompress((Bytef *) json, &got, raw + 4, (uLong) (rawlen - 4)) != Z_OK || got != len)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("packed chunk does not inflate to its declared %lu bytes",
						(unsigned long) len)));
	json[len] = '\0';
	pfree(raw);
	/* validates the UTF-8 and converts it to the database encoding */
	converted = pg_any_to_server(json, (int) len, PG_UTF8);
	if (converted != json)
		pfree(json);
	return converted;
}

/*
 * json_to_jsonb
 *		Parse unpacked JSON text as jsonb (errors as jsonb input's), and
 *		free the text.  The parser's working memory (a tree of every value,
 *		several times the text) lives in a context of its own, deleted once
 *		the jsonb value is copied out, so the peak is about twice the text
 *		rather than its sum with the tree.
 */
static Datum
json_to_jsonb(char *json)
{
	MemoryContext parse = AllocSetContextCreate(CurrentMemoryContext, "morango chunk parse",
												ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(parse);
	Datum		parsed = DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
	Datum		result;

	MemoryContextSwitchTo(old);
	pfree(json);
	result = PointerGetDatum(DatumGetJsonbPCopy(parsed));
	MemoryContextDelete(parse);
	return result;
}

/*
 * morango.pack_chunk(chunk json) -> text
 *		The packed form of a chunk (json text, as read_chunk() makes it), as
 *		it travels.  The text is packed as it is: the receiver parses and
 *		validates it.
 */
Datum
morango_pack_chunk(PG_FUNCTION_ARGS)
{
	text	   *json = PG_GETARG_TEXT_PP(0);
	int			len = VARSIZE_ANY_EXHDR(json);
	char	   *utf8 = pg_server_to_any(VARDATA_ANY(json), len, PG_UTF8);

	morango_fault("send_chunk");
	/* pg_server_to_any returns its input unconverted when no conversion is needed */
	PG_RETURN_TEXT_P(morango_pack(utf8, utf8 == VARDATA_ANY(json) ? (size_t) len : strlen(utf8)));
}

/*
 * morango.unpack_chunk(packed text) -> jsonb
 *		The chunk a packed chunk holds; an error if it is not one.
 */
Datum
morango_unpack_chunk(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(json_to_jsonb(morango_unpack(PG_GETARG_TEXT_PP(0), MORANGO_MAX_CHUNK_BYTES)));
}

/*
 * morango.receive_packed_chunk(transfer_session uuid, packed text) -> bigint
 *		receive_chunk() of a packed chunk; the session counts the packed
 *		bytes, the bytes that travelled.  A chunk of more than
 *		morango.max_chunk_bytes of JSON is refused before it is unpacked.
 */
Datum
morango_receive_packed_chunk(PG_FUNCTION_ARGS)
{
	int64		added;

	morango_spi_connect();
	added = morango_receive_packed(PG_GETARG_DATUM(0), PG_GETARG_TEXT_PP(1));
	SPI_finish();
	PG_RETURN_INT64(added);
}

/*
 * morango_receive_packed
 *		Unpack chunk p (refused before unpacking if it holds more than
 *		morango.max_chunk_bytes of JSON) and receive it into transfer
 *		session ts's incoming buffer (buffer.c); the session counts the
 *		packed bytes.  Returns the number of records added.  Runs inside
 *		SPI.
 */
int64
morango_receive_packed(Datum ts, text *p)
{
	Datum		chunk = json_to_jsonb(morango_unpack(p, morango_max_chunk_bytes));

	return morango_receive_chunk_internal(ts, chunk, VARSIZE_ANY_EXHDR(p));
}
