/*-------------------------------------------------------------------------
 *
 * worker.c
 *		morango.sync() and morango.sync_start(): the sync worker, a dynamic
 *		background worker that runs the driver (driver.c) for one sync
 *		session, and the caller's side that launches it.
 *
 * The caller's backend starts the worker (no shared_preload_libraries
 * needed), hands it the arguments through a dynamic shared memory segment
 * and waits for it.  The worker takes the session (single flight per
 * peer, profile, filter and direction), tells the caller which one, and
 * runs attempts: one for morango.sync(), with exponential backoff for
 * morango.sync_start() until one succeeds, an error is not worth retrying,
 * or morango.retry_limit attempts were made.  Signals: SIGTERM ends the
 * worker (a cancel of the waiting caller, morango.sync_cancel()); the
 * peer's running query is cancelled as the connection closes
 * (transport.c).  Each attempt's work lives in the driver's memory
 * context, and every local step is its own transaction.
 *
 * IDENTIFICATION
 *		src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "utils/wait_event.h"

#include "morango.h"
#include "driver.h"
#include "textutil.h"
#include "transport.h"

PG_FUNCTION_INFO_V1(morango_sync);
PG_FUNCTION_INFO_V1(morango_sync_start);

PGDLLEXPORT void morango_sync_worker_main(Datum main_arg);

/* Is this error worth another attempt later (the peer or the link)? */
static bool
retryable(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_CONNECTION_EXCEPTION:	/* 08: connect, lost connection */
		case ERRCODE_OPERATOR_INTERVENTION: /* 57: cancel, timeout, shutdown */
		case ERRCODE_INSUFFICIENT_RESOURCES:	/* 53 */
		case ERRCODE_TRANSACTION_ROLLBACK:	/* 40: deadlock, serialization */
		case ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE:	/* 55: lock timeout, busy */
			return true;
		default:
			return false;
	}
}

/* Tell the caller (if it still waits) that the handshake fields are set. */
static void
wake_caller(SyncArgs *args)
{
	PGPROC	   *proc = BackendPidGetProc(args->caller_pid);

	args->ready = true;
	if (proc)
		SetLatch(&proc->procLatch);
}

/*
 * morango_sync_worker_main
 *		Entry point of the sync worker.  main_arg is the dsm handle of the
 *		SyncArgs.  Runs one attempt (morango.sync()) or, in the background
 *		(morango.sync_start()), attempts with exponential backoff until one
 *		succeeds, an error is not worth retrying, or retry_limit attempts
 *		were made.
 */
void
morango_sync_worker_main(Datum main_arg)
{
	dsm_segment *seg;
	SyncArgs   *args;
	Driver		d;
	char	   *running = NULL;
	volatile int attempt = 0;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	seg = dsm_attach(DatumGetUInt32(main_arg));
	if (seg == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("morango sync worker could not attach to its arguments")));
	args = dsm_segment_address(seg);

	BackgroundWorkerInitializeConnectionByOid(args->dboid, args->useroid, 0);

	/*
	 * The steps are a few large statements: compiling them costs tens of
	 * milliseconds each and gains nothing measurable.
	 */
	SetConfigOption("jit", "off", PGC_USERSET, PGC_S_SESSION);

	memset(&d, 0, sizeof(d));
	d.session_cxt = AllocSetContextCreate(TopMemoryContext, "morango sync", ALLOCSET_DEFAULT_SIZES);
	d.cxt = d.session_cxt;
	d.args = args;
	d.peer = MemoryContextStrdup(d.cxt, args->data + args->peer_off);
	d.profile = MemoryContextStrdup(d.cxt, args->data + args->profile_off);
	d.filter = MemoryContextStrdup(d.cxt, args->data + args->filter_off);
	d.peer_display = MemoryContextStrdup(d.cxt, morango_peer_display(d.peer));
	{
		char		appname[NAMEDATALEN];

		snprintf(appname, sizeof(appname), "morango sync %s %s", d.profile, d.peer_display);
		pgstat_report_appname(appname);
	}

	PG_TRY();
	{
		if (!morango_driver_start(&d, &running))
		{
			args->already_running = true;
			args->have_session = running != NULL &&
				morango_uuid_parse(running, strlen(running), &args->session, NULL);
		}
		else
		{
			args->have_session = morango_uuid_parse(d.session, strlen(d.session),
													&args->session, NULL);
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(d.cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		args->ok = false;
		args->sqlerrcode = edata->sqlerrcode;
		strlcpy(args->error, edata->message, sizeof(args->error));
		args->done = true;
		wake_caller(args);
		proc_exit(0);
	}
	PG_END_TRY();
	wake_caller(args);
	if (args->already_running)
	{
		args->done = true;
		dsm_detach(seg);
		proc_exit(0);
	}

	for (;;)
	{
		ErrorData  *volatile edata = NULL;
		volatile int delay = 0;

		/* what an attempt allocates goes with it */
		d.cxt = AllocSetContextCreate(d.session_cxt, "morango sync attempt", ALLOCSET_DEFAULT_SIZES);
		attempt++;
		PG_TRY();
		{
			morango_driver_run(&d);
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(d.cxt);
			edata = CopyErrorData();
			FlushErrorState();
			AbortOutOfAnyTransaction();
		}
		PG_END_TRY();
		morango_peer_disconnect(d.conn);
		d.conn = NULL;

		if (edata == NULL)
		{
			args->ok = true;
			break;
		}

		args->ok = false;
		args->sqlerrcode = edata->sqlerrcode;
		strlcpy(args->error, edata->message ? edata->message : "unknown error", sizeof(args->error));
		if (edata->detail)
		{
			size_t		len = strlen(args->error);

			snprintf(args->error + len, sizeof(args->error) - len, " (%s)", edata->detail);
		}
		if (args->background && retryable(edata->sqlerrcode) && attempt < args->retry_limit)
		{
			/* exponential backoff, capped */
			double		ms = (double) args->retry_delay_ms;

			for (int i = 1; i < attempt && ms < args->retry_max_delay_ms; i++)
				ms *= 2;
			delay = (int) Min(ms, (double) args->retry_max_delay_ms);
			if (delay < 1)
				delay = 1;
		}
		ereport(LOG,
				(errmsg("morango sync with peer \"%s\" failed (attempt %d): %s%s",
						d.peer_display, attempt, args->error,
						delay > 0 ? psprintf("; retrying in %d ms", delay) : "")));
		morango_driver_failed(&d, args->error, delay);
		MemoryContextSwitchTo(d.session_cxt);
		MemoryContextDelete(d.cxt);
		d.cxt = d.session_cxt;
		if (delay == 0)
			break;

		/* wait for the next attempt; a cancel or shutdown ends the worker */
		{
			TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);

			for (;;)
			{
				long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

				if (left <= 0)
					break;
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 left, PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
				CHECK_FOR_INTERRUPTS();
			}
		}
	}

	args->done = true;
	dsm_detach(seg);
	proc_exit(0);
}

/*
 * Wait, interruptibly, until the worker has stopped or *until (if given)
 * is set, checking every poll_ms (the worker's exit or SetLatch wakes us
 * sooner).  If we are cancelled, the worker is stopped too.
 */
static void
wait_for_worker(BackgroundWorkerHandle *handle, volatile bool *until, long poll_ms)
{
	PG_TRY();
	{
		for (;;)
		{
			pid_t		pid;
			BgwHandleStatus status;

			if (until != NULL && *until)
				break;
			status = GetBackgroundWorkerPid(handle, &pid);
			if (status == BGWH_STOPPED)
				break;
			if (status == BGWH_POSTMASTER_DIED)
				ereport(FATAL,
						(errcode(ERRCODE_ADMIN_SHUTDOWN),
						 errmsg("postmaster exited during a morango sync")));
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 poll_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_CATCH();
	{
		TerminateBackgroundWorker(handle);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * Start a sync worker for (peer, profile, filter, direction) and wait
 * until it has chosen its session (or found the one running).  Returns
 * the worker handle; *seg_out gets the dsm segment (args in it).
 */
static BackgroundWorkerHandle *
launch(FunctionCallInfo fcinfo, bool background, dsm_segment **seg_out)
{
	char	   *peer;
	char	   *profile;
	char	   *filter;
	char	   *direction;
	int			chunk_size;
	Size		size;
	dsm_segment *seg;
	SyncArgs   *args;
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("peer and profile must not be null")));
	peer = text_to_cstring(PG_GETARG_TEXT_PP(0));
	profile = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (profile[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("profile must not be empty")));
	if (PG_ARGISNULL(2))
		filter = "{\"\"}";
	else
	{
		Oid			typoutput;
		bool		isvarlena;

		morango_check_filter(PG_GETARG_ARRAYTYPE_P(2));
		getTypeOutputInfo(TEXTARRAYOID, &typoutput, &isvarlena);
		filter = OidOutputFunctionCall(typoutput, PG_GETARG_DATUM(2));
	}
	direction = PG_ARGISNULL(3) ? "both" : text_to_cstring(PG_GETARG_TEXT_PP(3));
	if (strcmp(direction, "both") != 0 && strcmp(direction, "push") != 0 &&
		strcmp(direction, "pull") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("direction must be 'both', 'push' or 'pull', not \"%s\"", direction)));
	chunk_size = PG_ARGISNULL(4) ? morango_chunk_size : PG_GETARG_INT32(4);
	if (PG_ARGISNULL(5) != PG_ARGISNULL(6))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("certificate and peer_certificate go together"),
				 errhint("Pass this database's certificate and the one the peer is to prove it holds.")));
	if (chunk_size < 1 || chunk_size > 100000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("chunk_size must be between 1 and 100000")));

	size = offsetof(SyncArgs, data) + strlen(peer) + strlen(profile) + strlen(filter) + 3;
	seg = dsm_create(size, 0);
	args = dsm_segment_address(seg);
	memset(args, 0, size);
	args->dboid = MyDatabaseId;
	args->useroid = GetUserId();
	args->caller_pid = MyProcPid;
	args->background = background;
	args->chunk_size = chunk_size;
	args->retry_limit = morango_retry_limit;
	args->retry_delay_ms = morango_retry_delay;
	args->retry_max_delay_ms = morango_retry_max_delay;
	args->peer_timeout_ms = morango_peer_timeout;
	args->stage_timeout_ms = morango_stage_timeout;
	args->connect_timeout_s = morango_connect_timeout;
	strlcpy(args->direction, direction, sizeof(args->direction));
	if (!PG_ARGISNULL(5))
	{
		strlcpy(args->certificate,
				DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(5))),
				sizeof(args->certificate));
		strlcpy(args->peer_certificate,
				DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(6))),
				sizeof(args->peer_certificate));
	}
	args->peer_off = 0;
	strcpy(args->data, peer);
	args->profile_off = strlen(peer) + 1;
	strcpy(args->data + args->profile_off, profile);
	args->filter_off = args->profile_off + strlen(profile) + 1;
	strcpy(args->data + args->filter_off, filter);

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "morango", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "morango_sync_worker_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "morango sync", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "morango sync", BGW_MAXLEN);
	worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not start a morango sync worker"),
				 errhint("Raise max_worker_processes, or wait for other workers to finish.")));

	/* wait until the worker has chosen its session (or exited) */
	wait_for_worker(handle, &args->ready, 100L);

	*seg_out = seg;
	return handle;
}

/* Raise the error the worker reported before or instead of starting. */
static void
report_start_failure(SyncArgs *args)
{
	if (args->already_running)
		return;
	if (!args->ready && !args->done)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("the morango sync worker exited before it started"),
				 errhint("See the server log.")));
	if (args->done && !args->ok && !args->have_session)
		ereport(ERROR,
				(errcode(args->sqlerrcode ? args->sqlerrcode : ERRCODE_INTERNAL_ERROR),
				 errmsg("could not start the sync: %s", args->error)));
}

/*
 * morango.sync(peer text, profile text, filter text[] DEFAULT NULL,
 *              direction text DEFAULT 'both', chunk_size integer DEFAULT NULL)
 *		-> uuid (the sync session)
 *
 * Starts the sync worker and waits for it: one attempt.  A cancel of this
 * backend stops the worker, which cancels the peer's query; the sync
 * resumes when called again.
 */
Datum
morango_sync(PG_FUNCTION_ARGS)
{
	dsm_segment *seg;
	SyncArgs   *args;
	BackgroundWorkerHandle *handle;
	pg_uuid_t  *result;

	if (IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("morango.sync() cannot run inside a transaction block"),
				 errdetail("A sync commits its progress as it goes, in a worker of its own."),
				 errhint("Call it on its own, outside BEGIN ... COMMIT.")));

	handle = launch(fcinfo, false, &seg);
	args = dsm_segment_address(seg);
	report_start_failure(args);
	if (args->already_running)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("a sync with this peer, profile, filter and direction is already running"),
				 args->have_session ? errdetail("Sync session %s.",
												DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&args->session)))) : 0,
				 errhint("Wait for it with morango.sync_wait(), or stop it with morango.sync_cancel().")));

	wait_for_worker(handle, NULL, 1000L);

	if (!args->done)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("the morango sync worker exited before finishing"),
				 errhint("See the server log; calling morango.sync() again resumes the sync.")));
	if (!args->ok)
		ereport(ERROR,
				(errcode(args->sqlerrcode ? args->sqlerrcode : ERRCODE_INTERNAL_ERROR),
				 errmsg("sync with peer failed: %s", args->error),
				 errhint("Calling morango.sync() again resumes the sync where it stopped.")));

	result = palloc(sizeof(pg_uuid_t));
	memcpy(result, &args->session, sizeof(pg_uuid_t));
	dsm_detach(seg);
	PG_RETURN_UUID_P(result);
}

/*
 * morango.sync_start(peer, profile, filter, direction, chunk_size) -> uuid
 *
 * Starts a sync in a background worker and returns its session id as soon
 * as the worker has chosen it (or the id of the sync already running for
 * the same peer, profile, filter and direction).  The worker retries with
 * exponential backoff (morango.retry_limit, retry_delay, retry_max_delay).
 */
Datum
morango_sync_start(PG_FUNCTION_ARGS)
{
	dsm_segment *seg;
	SyncArgs   *args;
	pg_uuid_t  *result;

	(void) launch(fcinfo, true, &seg);
	args = dsm_segment_address(seg);
	report_start_failure(args);
	if (!args->have_session)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("a sync with this peer, profile, filter and direction is already running")));
	result = palloc(sizeof(pg_uuid_t));
	memcpy(result, &args->session, sizeof(pg_uuid_t));
	dsm_detach(seg);
	PG_RETURN_UUID_P(result);
}
