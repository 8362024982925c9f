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

#include "fmgr.h"
#include "utils/guc.h"

#include "morango.h"

PG_MODULE_MAGIC;

/* morango.hard_delete: DELETE statements on registered tables purge data */
bool		morango_hard_delete_guc = false;

void		_PG_init(void);

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

	MarkGUCPrefixReserved("morango");

	morango_capture_init();
}
