/*-------------------------------------------------------------------------
 *
 * subxact.c
 *		Run a piece of work in a subtransaction and hand back its error
 *		instead of throwing it, so that one bad record or model does not
 *		abort a whole serialize or deserialize.
 *
 * IDENTIFICATION
 *		src/subxact.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "morango.h"

/*
 * morango_try
 *		Run fn(arg) in a subtransaction.  On success return NULL (the
 *		subtransaction is committed into the current transaction); on error
 *		roll it back and return the error, allocated in the caller's memory
 *		context.  Query cancel, shutdown and out-of-memory errors are
 *		rethrown, never swallowed.  May be called inside SPI.
 */
ErrorData *
morango_try(void (*fn) (void *arg), void *arg)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData  *volatile result = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;

		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN ||
			edata->sqlerrcode == ERRCODE_OUT_OF_MEMORY)
			ReThrowError(edata);
		result = edata;
	}
	PG_END_TRY();
	return result;
}
