/*-------------------------------------------------------------------------
 *
 * morango.c
 *		Module entry point of the morango extension: PG_MODULE_MAGIC,
 *		_PG_init and the definitions of the morango.* settings.
 *
 * IDENTIFICATION
 *		src/morango.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "morango.h"

PG_MODULE_MAGIC;

/* morango.hard_delete: DELETE statements on registered tables purge data */
bool		morango_hard_delete_guc = false;

/* morango.chunk_size: records per chunk of a transfer */
int			morango_chunk_size = 5000;

/* morango.batch_size: records deserialize writes per statement */
int			morango_batch_size = 10000;

/* morango.connect_timeout: seconds to wait for a peer connection */
int			morango_connect_timeout = 30;

/* morango.peer_timeout: milliseconds one remote call may take (0: no limit) */
int			morango_peer_timeout = 600000;

/* morango.stage_timeout: milliseconds one stage of a sync may take (0: no limit) */
int			morango_stage_timeout = 0;

/* morango.retry_*: how a background sync retries */
int			morango_retry_limit = 5;
int			morango_retry_delay = 10000;
int			morango_retry_max_delay = 900000;

/*
 * morango.max_conflict_entries, morango.max_conflict_bytes: the bound on a
 * record's conflict history (src/history.c)
 */
int			morango_max_conflict_entries = 20;
int			morango_max_conflict_bytes = 65536;

/* morango.allow_uncertified_sync: sync without certificates where we hold some */
bool		morango_allow_uncertified_sync = false;

/*
 * The peer API's limits (superuser only, so that a peer role cannot raise
 * them in its own session): the largest chunk this database receives or
 * builds, in records and unpacked JSON bytes; open server-side transfer
 * sessions per peer role and in all; entries of a client's FSIC.
 */
int			morango_max_chunk_records = 10000;
int			morango_max_chunk_bytes = 32 * 1024 * 1024;
int			morango_max_peer_transfers = 10;
int			morango_max_open_transfers = 100;
int			morango_max_fsic_entries = 100000;

/*
 * morango.max_filter_prefixes, morango.max_filter_prefix_length: the
 * largest filter accepted from anyone (filter.c).  Kolibri's filters have
 * one to three prefixes and a hub may sync a few hundred facilities in one
 * filter: 1000 leaves room for that.  A partition in Morango is at most 128
 * characters (512 bytes of UTF-8): a longer prefix matches nothing there.
 * The upper limit of the length keeps a prefix, which becomes a key of
 * morango.database_max_counters, well inside a btree entry (2704 bytes).
 */
int			morango_max_filter_prefixes = 1000;
int			morango_max_filter_prefix_length = 512;

/*
 * morango.max_peer_certificates: certificates (and, separately, revocations)
 * one peer role may store through the peer API
 */
int			morango_max_peer_certificates_guc = 1000;

void		_PG_init(void);

PG_FUNCTION_INFO_V1(morango_uncertified_sync_allowed);
PG_FUNCTION_INFO_V1(morango_max_peer_certificates);

/*
 * _PG_init
 *		Define the settings and let each subsystem set itself up.
 */
void
_PG_init(void)
{
	DefineCustomBoolVariable("morango.hard_delete",
							 "Makes DELETE on registered tables a hard delete.",
							 "A hard delete erases the record's serialized data "
							 "on every database it syncs to.  Use SET LOCAL.",
							 &morango_hard_delete_guc,
							 false,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("morango.chunk_size",
							"Records per chunk of a sync transfer.",
							"Each chunk is one round trip and one statement on each side.",
							&morango_chunk_size,
							5000, 1, 100000,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.batch_size",
							"Records deserialize writes per statement.",
							"Deserialize works in batches of this many records, freeing each batch's "
							"memory before the next, so its memory does not grow with the number of records.",
							&morango_batch_size,
							10000, 1, 1000000,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.connect_timeout",
							"Seconds to wait for a connection to a peer.",
							"0 waits for ever.",
							&morango_connect_timeout,
							30, 0, 3600,
							PGC_USERSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.peer_timeout",
							"Longest time one call to a peer may take.",
							"The call is cancelled on the peer after that.  0 means no limit.",
							&morango_peer_timeout,
							600000, 0, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.stage_timeout",
							"Longest time one stage of a sync may take.",
							"The remote calls of a stage are cancelled on the peer after that.  0 means no limit.",
							&morango_stage_timeout,
							0, 0, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.retry_limit",
							"Attempts a background sync makes before it gives up.",
							NULL,
							&morango_retry_limit,
							5, 1, 1000,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.retry_delay",
							"Pause before the second attempt of a background sync; it doubles after each failure.",
							NULL,
							&morango_retry_delay,
							10000, 1, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.retry_max_delay",
							"Longest pause between two attempts of a background sync.",
							NULL,
							&morango_retry_max_delay,
							900000, 1, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.max_conflict_entries",
							"Most entries a record's conflict history keeps.",
							"The oldest are dropped first; the newest is always kept.",
							&morango_max_conflict_entries,
							20, 1, 1000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.max_conflict_bytes",
							"Most bytes of data a record's conflict history keeps.",
							"The oldest entries are dropped first; the newest is always kept, whatever its size.",
							&morango_max_conflict_bytes,
							65536, 0, MaxAllocSize / 4,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("morango.allow_uncertified_sync",
							 "Allows sync sessions without certificates for profiles this database holds a certificate for.",
							 "Only for trusted servers on a trusted network.",
							 &morango_allow_uncertified_sync,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("morango.max_chunk_records",
							"Most records a chunk of a transfer may hold, sent or received.",
							"Both sides announce it in peer_begin; a sender cuts its chunks to the "
							"lower of its own and the receiver's, a receiver refuses a larger chunk.",
							&morango_max_chunk_records,
							10000, 1, MORANGO_MAX_CHUNK_RECORDS,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.max_chunk_bytes",
							"Most bytes of JSON a chunk of a transfer may hold, unpacked, sent or received.",
							"Both sides announce it in peer_begin; a receiver refuses a larger chunk "
							"before unpacking it.",
							&morango_max_chunk_bytes,
							32 * 1024 * 1024, 1024, MORANGO_MAX_CHUNK_BYTES,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.max_filter_prefixes",
							"Most partition prefixes a sync filter may have.",
							"Filters from peers and from local calls above this are refused.",
							&morango_max_filter_prefixes,
							1000, 1, 1000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.max_filter_prefix_length",
							"Longest partition prefix, in bytes, a sync filter may have.",
							"Filters from peers and from local calls with a longer prefix are refused.",
							&morango_max_filter_prefix_length,
							512, 1, 2000,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.max_peer_transfers",
							"Most open server-side transfer sessions one peer role may have.",
							"morango.cleanup() closes idle ones.",
							&morango_max_peer_transfers,
							10, 1, 100000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.max_open_transfers",
							"Most open server-side transfer sessions on this database, all peer roles together.",
							"morango.cleanup() closes idle ones.",
							&morango_max_open_transfers,
							100, 1, 1000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.max_fsic_entries",
							"Most (partition, instance) entries a peer's FSIC may have.",
							"A single device's FSIC has a few; a hub's may have one per partition and instance.",
							&morango_max_fsic_entries,
							100000, 1, 10000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("morango.max_peer_certificates",
							"Certificates, and revocations, one peer role may store through the peer API.",
							"Counted per role, separately for certificates (handshake chains, signing "
							"requests) and revocations; beyond it the call is refused and stores nothing.",
							&morango_max_peer_certificates_guc,
							1000, 0, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	morango_fault_init();

	MarkGUCPrefixReserved("morango");

	morango_capture_init();
}

/*
 * morango.uncertified_sync_allowed() -> boolean
 *
 * The setting as this module sees it (a C function, so the module is loaded
 * and the superuser-only setting is defined before it is read).
 */
Datum
morango_uncertified_sync_allowed(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(morango_allow_uncertified_sync);
}

/*
 * morango.max_peer_certificates() -> integer
 *
 * The setting as this module sees it (read through C for the same reason
 * as morango.uncertified_sync_allowed()).
 */
Datum
morango_max_peer_certificates(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(morango_max_peer_certificates_guc);
}
