/*-------------------------------------------------------------------------
 *
 * transfer.h
 *		The state of sync and transfer sessions: their stages and statuses
 *		as C enums (mirrored by the CHECK constraints of
 *		morango.transfer_sessions and morango.sync_sessions), and the one
 *		module (transfer.c) that writes them.
 *
 * Every write of a session's state goes through transfer.c: the
 * transition function checks it against the state diagram of
 * doc/protocol.md ("Session states") and refuses an illegal one with an
 * error, so that no step can move a session silently where it should not
 * be.  Buffers are emptied here too, and only here.
 *
 * IDENTIFICATION
 *		src/transfer.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MORANGO_TRANSFER_H
#define MORANGO_TRANSFER_H

#include "postgres.h"

/* a transfer session's stage, in the order a transfer goes through them */
typedef enum MorangoStage
{
	MORANGO_STAGE_INITIALIZING = 0,
	MORANGO_STAGE_SERIALIZING,
	MORANGO_STAGE_QUEUING,
	MORANGO_STAGE_TRANSFERRING,
	MORANGO_STAGE_DEQUEUING,
	MORANGO_STAGE_DESERIALIZING,
	MORANGO_STAGE_CLEANUP
} MorangoStage;

#define MORANGO_NSTAGES (MORANGO_STAGE_CLEANUP + 1)

/* a transfer session's status within its stage */
typedef enum MorangoStatus
{
	MORANGO_STATUS_PENDING = 0,
	MORANGO_STATUS_STARTED,
	MORANGO_STATUS_COMPLETED,
	MORANGO_STATUS_ERRORED
} MorangoStatus;

#define MORANGO_NSTATUSES (MORANGO_STATUS_ERRORED + 1)

/* a sync session's status */
typedef enum MorangoSyncStatus
{
	MORANGO_SYNC_STARTED = 0,
	MORANGO_SYNC_COMPLETED,
	MORANGO_SYNC_ERRORED,
	MORANGO_SYNC_CANCELLED
} MorangoSyncStatus;

#define MORANGO_NSYNCSTATUSES (MORANGO_SYNC_CANCELLED + 1)

extern const char *morango_stage_name(MorangoStage stage);
extern const char *morango_status_name(MorangoStatus status);
extern const char *morango_sync_status_name(MorangoSyncStatus status);

/*
 * A transfer session's state, as fetched (and locked) by
 * morango_transfer_fetch().  The transition functions keep it up to date
 * with what they write.
 */
typedef struct MorangoTransfer
{
	Datum		id;				/* uuid */
	char	   *name;			/* its text, for messages */
	Datum		sync_session;	/* uuid */
	Datum		profile;		/* text */
	Datum		filter;			/* text[] */
	int			nfilter;
	const char **prefixes;
	bool		active;
	bool		push;			/* the initiator sends (Morango's sense, both sides) */
	bool		is_server;		/* this side is the responder */
	bool		receiver;		/* this side receives the records */
	MorangoStage stage;
	MorangoStatus status;
	int64		records_total;	/* -1: not known yet */
	int64		records_transferred;
	char	   *local_fsic;		/* jsonb text; NULL if not set */
	char	   *remote_fsic;
	char	   *peer_options;	/* jsonb text; NULL if not set */
	char	   *sync_peer_role; /* the role owning the sync session (server side) */
} MorangoTransfer;

/*
 * What a transition writes besides the stage and the status.  Start from
 * MORANGO_TRANSFER_KEEP (nothing else changes) and set what changes.
 */
typedef struct MorangoTransferUpdate
{
	int64		records_total;	/* -1: keep */
	int64		records_transferred;	/* -1: keep */
	int64		transferred_add;	/* added to records_transferred */
	int64		records_dequeued;	/* -1: keep */
	int64		conflicts;		/* -1: keep */
	int64		bytes_sent_add;
	int64		bytes_received_add;
	const char *local_fsic;		/* jsonb text; NULL: keep */
	const char *remote_fsic;
	const char *peer_options;

	/*
	 * Going back to an earlier stage (only to queuing or before, or to
	 * initializing from a closed, errored session): the data starts over,
	 * so the buffers are emptied and the transferred, dequeued and
	 * conflict counts reset.  Without it, a stage never goes back.
	 */
	bool		restart;
	bool		forget_fsics;	/* with restart: local and remote FSIC too */
} MorangoTransferUpdate;

extern const MorangoTransferUpdate MORANGO_TRANSFER_KEEP;

/* reading */
extern MorangoTransfer *morango_transfer_fetch(Datum ts);
extern MorangoTransfer *morango_transfer_find(Datum ts);
extern bool morango_transfer_past(MorangoTransfer *t, MorangoStage stage);

/* the one transition function, and closing */
extern void morango_transfer_transition(MorangoTransfer *t, MorangoStage to,
										MorangoStatus status,
										const MorangoTransferUpdate *u);
extern void morango_transfer_close(MorangoTransfer *t, const char *error);
extern void morango_transfer_clear_buffers(Datum ts);

/* opening (both sides) */
typedef struct MorangoOpenArgs
{
	Datum		sync_session;	/* uuid */
	Datum		transfer_session;	/* uuid */
	const char *profile;
	bool		is_server;
	bool		push;
	Datum		filter;			/* text[] */
	const char *peer;			/* the client's peer, as displayed; NULL */
	Datum		peer_instance;	/* uuid; 0 with peer_instance_null */
	bool		peer_instance_null;
	const char *direction;		/* the client's; NULL */
} MorangoOpenArgs;

extern void morango_open_args(MorangoOpenArgs *a, Datum sync_session, Datum transfer_session,
							  const char *profile, bool is_server, bool push, Datum filter);
extern MorangoTransfer *morango_transfer_open(const MorangoOpenArgs *a, bool *resumed);
extern int64 morango_transfer_last_seq(Datum ts);

/* sets of transfers, and sync sessions */
extern void morango_transfers_close_all(Datum sync_session, const char *error);
extern void morango_transfers_fail_all(Datum sync_session, const char *error);
extern void morango_sync_session_client_start(Datum id, const char *peer, const char *profile,
											  Datum filter, const char *direction,
											  Datum instance);
extern void morango_sync_session_end(Datum id, MorangoSyncStatus status, const char *error);
extern void morango_sync_session_interrupt(Datum id, MorangoSyncStatus status, const char *error);
extern void morango_sync_session_touch(Datum id, Datum peer_instance, bool peer_instance_null);
extern int64 morango_sessions_expire(Datum older_than);

#endif							/* MORANGO_TRANSFER_H */
