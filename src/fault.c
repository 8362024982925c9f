/*-------------------------------------------------------------------------
 *
 * fault.c
 *		Fault injection for the reliability tests: make a sync fail, or
 *		kill the server process running it, at a chosen point of a
 *		record's path.
 *
 * The superuser-only setting morango.fault_injection names one fault:
 *
 *		point[:k]:action
 *
 * point is where the steps call morango_fault(): serialize (its end),
 * queue_candidates (queue, between reading its candidates and buffering
 * them), queue (its end), send_chunk (a chunk packed to be sent), receive_chunk
 * (a chunk stored), dequeue (between the merge into the store and the
 * emptying of the buffer) or deserialize (after a batch is written).  The
 * fault fires at the k-th time this process reaches the point (1 if k is
 * left out); setting the value again starts counting anew.  action is
 * error (an ERROR there), kill (SIGKILL of this process there, before its
 * transaction commits) or kill_after_commit (SIGKILL as soon as the
 * transaction that reached the point has committed) or wait (take the
 * transaction-level advisory lock MORANGO_FAULT_WAIT_LOCK, 8111, so that a
 * test holding pg_advisory_lock(8111) decides when the step goes on: the
 * isolation specs use it to place a concurrent transaction exactly
 * there).  A killed backend
 * makes the postmaster restart the server as after a crash.
 *
 * The same step functions serve the sync worker and the peer API, so
 * setting the value in the database of one side (ALTER DATABASE ... SET)
 * injects the fault on that side only.  Empty (the default) injects
 * nothing, and costs one pointer test per point.
 *
 * IDENTIFICATION
 *		src/fault.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"

#include "morango.h"

/* the advisory lock the wait action takes (pg_advisory_lock(8111) in a test) */
#define MORANGO_FAULT_WAIT_LOCK 8111

typedef enum FaultAction
{
	FAULT_ERROR,
	FAULT_KILL,
	FAULT_KILL_AFTER_COMMIT,
	FAULT_WAIT
} FaultAction;

/* the parsed setting (GUC "extra" data: one malloc'd block) */
typedef struct Fault
{
	char		point[32];
	int			k;
	FaultAction action;
} Fault;

static const char *const fault_points[] = {
	"serialize", "queue_candidates", "queue", "send_chunk", "receive_chunk", "dequeue", "deserialize"
};

static char *fault_setting = NULL;
static Fault *fault = NULL;		/* NULL: none */
static int	fault_hits = 0;		/* times this process reached fault->point */
static bool kill_at_commit = false;

/*
 * Parse "point[:k]:action" into *f; false (with a GUC detail) if it is
 * not one.
 */
static bool
fault_parse(const char *value, Fault *f)
{
	char	   *copy = pstrdup(value);
	char	   *parts[3];
	int			n = 0;
	char	   *p = copy;
	const char *action;
	bool		known = false;

	for (;;)
	{
		char	   *colon = strchr(p, ':');

		if (n == 3)
		{
			GUC_check_errdetail("Expected two or three fields separated by colons.");
			return false;
		}
		parts[n++] = p;
		if (colon == NULL)
			break;
		*colon = '\0';
		p = colon + 1;
	}
	if (n < 2)
	{
		GUC_check_errdetail("Expected two or three fields separated by colons.");
		return false;
	}

	for (size_t i = 0; i < lengthof(fault_points); i++)
		if (strcmp(parts[0], fault_points[i]) == 0)
			known = true;
	if (!known)
	{
		GUC_check_errdetail("Unknown fault point \"%s\".", parts[0]);
		return false;
	}
	strlcpy(f->point, parts[0], sizeof(f->point));

	f->k = 1;
	if (n == 3)
	{
		char	   *end;
		long		k = strtol(parts[1], &end, 10);

		if (*parts[1] == '\0' || *end != '\0' || k < 1 || k > INT_MAX)
		{
			GUC_check_errdetail("The count must be a positive integer.");
			return false;
		}
		f->k = (int) k;
	}

	action = parts[n - 1];
	if (strcmp(action, "error") == 0)
		f->action = FAULT_ERROR;
	else if (strcmp(action, "kill") == 0)
		f->action = FAULT_KILL;
	else if (strcmp(action, "kill_after_commit") == 0)
		f->action = FAULT_KILL_AFTER_COMMIT;
	else if (strcmp(action, "wait") == 0)
		f->action = FAULT_WAIT;
	else
	{
		GUC_check_errdetail("The action must be error, kill, kill_after_commit or wait.");
		return false;
	}
	return true;
}

static bool
fault_check(char **newval, void **extra, GucSource source)
{
	Fault		f;
	Fault	   *copy;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (!fault_parse(*newval, &f))
	{
		GUC_check_errmsg("invalid value for morango.fault_injection: \"%s\"", *newval);
		GUC_check_errhint("Use point[:k]:action, for example receive_chunk:2:kill.");
		return false;
	}
	/* GUC extra data is released with free() (PostgreSQL 15) */
	copy = malloc(sizeof(Fault));
	if (copy == NULL)
	{
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		return false;
	}
	*copy = f;
	*extra = copy;
	return true;
}

static void
fault_assign(const char *newval, void *extra)
{
	fault = (Fault *) extra;
	fault_hits = 0;
}

/* Kill this process once the transaction that reached the point commits. */
static void
fault_xact_callback(XactEvent event, void *arg)
{
	if (!kill_at_commit)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		ereport(LOG, (errmsg("morango: injected fault: killing this process after commit")));
		kill(MyProcPid, SIGKILL);
	}
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		kill_at_commit = false;
}

/*
 * morango_fault_init
 *		Define morango.fault_injection (from _PG_init).
 */
void
morango_fault_init(void)
{
	DefineCustomStringVariable("morango.fault_injection",
							   "Injects a fault at a point of the sync steps (tests only).",
							   "point[:k]:action; empty injects nothing.  See src/fault.c.",
							   &fault_setting,
							   "",
							   PGC_SUSET,
							   GUC_NOT_IN_SAMPLE,
							   fault_check, fault_assign, NULL);
	RegisterXactCallback(fault_xact_callback, NULL);
}

/*
 * morango_fault
 *		The steps call this at each fault point.  If morango.fault_injection
 *		names this point and this is the k-th time this process reaches
 *		it, fail (ERROR) or kill the process, now or after commit.
 */
void
morango_fault(const char *point)
{
	if (likely(fault == NULL) || strcmp(fault->point, point) != 0)
		return;
	if (++fault_hits != fault->k)
		return;

	switch (fault->action)
	{
		case FAULT_ERROR:
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("injected fault at %s (%d)", point, fault->k)));
			break;
		case FAULT_KILL:
			ereport(LOG,
					(errmsg("morango: injected fault at %s (%d): killing this process",
							point, fault->k)));
			kill(MyProcPid, SIGKILL);
			break;
		case FAULT_KILL_AFTER_COMMIT:
			kill_at_commit = true;
			break;
		case FAULT_WAIT:
			/* until the test releases its lock: an interleaving, on cue */
			(void) DirectFunctionCall1(pg_advisory_xact_lock_int8,
									   Int64GetDatum(MORANGO_FAULT_WAIT_LOCK));
			break;
	}
}
