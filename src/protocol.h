/*-------------------------------------------------------------------------
 *
 * protocol.h
 *		The sync protocol's steps, which both sides run (protocol.c), and
 *		its replies as structs: the responder (peer.c) encodes them, the
 *		initiator (driver.c) decodes them, each in one place.
 *
 * IDENTIFICATION
 *		src/protocol.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MORANGO_PROTOCOL_H
#define MORANGO_PROTOCOL_H

#include "postgres.h"

#include "transfer.h"

/* the version of the sync protocol (doc/protocol.md); both sides check it */
#define MORANGO_PROTOCOL_VERSION 3

/* the answer to peer_begin: the responder's transfer and what it offers */
typedef struct MorangoBeginReply
{
	bool		active;			/* false: it finished this transfer already */
	bool		resumed;		/* it went on with what it held */
	const char *stage;
	const char *status;
	int64		records_total;	/* -1: null */
	int64		records_transferred;
	int64		last_seq;		/* the highest sequence it holds */
	const char *local_fsic;		/* its FSIC, json text (or NULL) */
	const char *remote_fsic;	/* ours, as it holds it */
	const char *instance_id;	/* its instance */
	bool		has_limits;		/* an active transfer's answer has them */
	int64		max_chunk_records;	/* its limits: what it takes */
	int64		max_chunk_bytes;
} MorangoBeginReply;

/* a chunk: the answer to peer_pull_chunk, and what read_chunk gives */
typedef struct MorangoChunk
{
	const char *packed;
	int64		last_seq;
	int64		records;
} MorangoChunk;

/* the answer to peer_finish */
typedef struct MorangoFinishReply
{
	const char *stage;
	const char *status;
	bool		merged;			/* the counts below are set (a push) */
	int64		dequeue[4];		/* new, fast_forwards, conflicts, ignored */
	int64		deserialize[3]; /* deserialized, deleted, failed */
} MorangoFinishReply;

/* the answer to peer_authenticate */
typedef struct MorangoAuthReply
{
	const char *chain;			/* json text */
	const char *signature;
} MorangoAuthReply;

/* encoding (the responder): each reply as the jsonb it sends */
extern Datum morango_begin_reply_encode(const MorangoBeginReply *r);
extern Datum morango_chunk_encode(const MorangoChunk *c);
extern Datum morango_finish_reply_encode(const MorangoFinishReply *r);

/* decoding (the initiator): json text -> struct, strings in mcxt */
extern void morango_begin_reply_decode(const char *what, const char *json, MemoryContext mcxt,
									   MorangoBeginReply *r);
extern void morango_chunk_decode(const char *what, const char *json, MemoryContext mcxt,
								 MorangoChunk *c);
extern void morango_limits_decode(const char *what, const char *json, MemoryContext mcxt,
								  int64 *max_chunk_records, int64 *max_chunk_bytes);
extern void morango_auth_reply_decode(const char *what, const char *json, MemoryContext mcxt,
									  MorangoAuthReply *r);

/* the begin reply of transfer t (resumed, instance and limits given) */
extern void morango_begin_reply_of(MorangoTransfer *t, bool resumed, MorangoBeginReply *r);

/*
 * The protocol's steps (doc/design.md, "A record's path"): each runs inside
 * SPI, in the caller's transaction, on either side.
 */
extern char *morango_step_prepare(MorangoTransfer *t, const char *remote_fsic,
								  const char *peer_options);
extern int64 morango_step_queue(MorangoTransfer *t, const char *remote_fsic);
extern void morango_step_received_fsic(MorangoTransfer *t, bool resumed, const char *remote_fsic,
									   int64 records_total, const char *peer_options);
extern void morango_step_read_chunk(MorangoTransfer *t, int64 after_seq, int max_records,
									int64 max_bytes, MorangoChunk *c);
extern void morango_step_chunk_sent(MorangoTransfer *t, int64 last_seq, int64 bytes);
extern int64 morango_step_receive_chunk(Datum ts, text *packed);
extern void morango_step_merge(Datum ts, int64 *counts);
extern void morango_step_apply(MorangoTransfer *t, int64 *counts);

#endif							/* MORANGO_PROTOCOL_H */
