/*-------------------------------------------------------------------------
 *
 * idrule.c
 *		The record id rule, pure: no SPI, no catalog access.
 *
 * A record's id is the uuid made of the first 32 hex digits of
 * sha256(partition || '::' || source_id || '::' || model_name), which is
 * Morango's sha2_uuid(partition, source_id, model_name).  Both the trigger
 * (new records) and the receiving side of a sync (validation) use it.
 *
 * IDENTIFICATION
 *		src/idrule.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/cryptohash.h"
#include "common/sha2.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

#include "morango.h"

PG_FUNCTION_INFO_V1(morango_record_id_sql);

/*
 * morango_compute_record_id
 *		Compute the record id of (partition, source_id, model_name) into *out.
 *
 * The inputs are NUL-terminated UTF-8 strings.  Throws only if the hash
 * context cannot be created (out of memory).
 */
void
morango_compute_record_id(const char *partition, const char *source_id,
						  const char *model_name, pg_uuid_t *out)
{
	pg_cryptohash_ctx *ctx;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	static const uint8 sep[2] = {':', ':'};

	ctx = pg_cryptohash_create(PG_SHA256);
	if (ctx == NULL ||
		pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) partition, strlen(partition)) < 0 ||
		pg_cryptohash_update(ctx, sep, 2) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) source_id, strlen(source_id)) < 0 ||
		pg_cryptohash_update(ctx, sep, 2) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) model_name, strlen(model_name)) < 0 ||
		pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
	{
		if (ctx)
			pg_cryptohash_free(ctx);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute sha256 for a record id")));
	}
	pg_cryptohash_free(ctx);

	/* 32 hex digits = the first 16 bytes of the digest */
	memcpy(out->data, digest, UUID_LEN);
}

/*
 * morango.record_id(partition text, source_id text, model_name text) -> uuid
 */
Datum
morango_record_id_sql(PG_FUNCTION_ARGS)
{
	char	   *partition = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *source_id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *model_name = text_to_cstring(PG_GETARG_TEXT_PP(2));
	pg_uuid_t  *result = palloc(sizeof(pg_uuid_t));

	morango_compute_record_id(partition, source_id, model_name, result);
	PG_RETURN_UUID_P(result);
}
