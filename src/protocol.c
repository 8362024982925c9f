/*-------------------------------------------------------------------------
 *
 * protocol.c
 *		The sync protocol's steps, the same C functions for both sides, and
 *		its replies, encoded and decoded in one place.
 *
 * A transfer has a producer (it serializes, computes its FSIC, queues and
 * sends chunks) and a receiver (it computes its FSIC, receives chunks,
 * merges and deserializes).  The initiator (driver.c, in the sync worker)
 * and the responder (the peer API, peer.c) each play either part,
 * depending on the direction, and both call the steps below:
 *
 *   producer:  morango_step_prepare -> morango_step_queue ->
 *              morango_step_read_chunk -> morango_step_chunk_sent ...
 *   receiver:  morango_step_prepare -> morango_step_received_fsic (the
 *              initiator) -> morango_step_receive_chunk ... ->
 *              morango_step_merge -> morango_step_apply
 *
 * and then morango_transfer_close() (transfer.c).  Each step runs inside
 * SPI in its caller's transaction and moves the transfer's state through
 * transfer.c; the initiator commits after each one, the responder after
 * each peer API call.
 *
 * The replies of the peer API are jsonb objects; the responder builds
 * them from the structs of protocol.h and the initiator reads them back
 * into the same structs (fields by name, once).
 *
 * IDENTIFICATION
 *		src/protocol.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "morango.h"
#include "protocol.h"

/* ---- encoding ---- */

static void
add_key(StringInfo buf, const char *key)
{
	if (buf->len > 1)
		appendStringInfoString(buf, ", ");
	escape_json(buf, key);
	appendStringInfoString(buf, ": ");
}

/* value is json text already (or NULL: null) */
static void
add_json(StringInfo buf, const char *key, const char *value)
{
	add_key(buf, key);
	appendStringInfoString(buf, value ? value : "null");
}

static void
add_string(StringInfo buf, const char *key, const char *value)
{
	if (value == NULL)
		add_json(buf, key, NULL);
	else
	{
		add_key(buf, key);
		escape_json(buf, value);
	}
}

static void
add_int(StringInfo buf, const char *key, int64 value, bool null)
{
	add_json(buf, key, null ? NULL : psprintf(INT64_FORMAT, value));
}

static void
add_bool(StringInfo buf, const char *key, bool value)
{
	add_json(buf, key, value ? "true" : "false");
}

static void
start_object(StringInfo buf)
{
	initStringInfo(buf);
	appendStringInfoChar(buf, '{');
}

static Datum
finish_object(StringInfo buf)
{
	appendStringInfoChar(buf, '}');
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf->data));
}

/*
 * morango_begin_reply_encode
 *		peer_begin's answer: {"active", "resumed", "stage", "status",
 *		"records_total", "records_transferred", "last_seq", "local_fsic",
 *		"remote_fsic", "instance_id"} and, for an active transfer,
 *		"server_fsic" (= local_fsic) and "limits" {"max_chunk_records",
 *		"max_chunk_bytes"}.
 */
Datum
morango_begin_reply_encode(const MorangoBeginReply *r)
{
	StringInfoData buf;

	start_object(&buf);
	add_bool(&buf, "active", r->active);
	add_bool(&buf, "resumed", r->resumed);
	add_string(&buf, "stage", r->stage);
	add_string(&buf, "status", r->status);
	add_int(&buf, "records_total", r->records_total, r->records_total < 0);
	add_int(&buf, "records_transferred", r->records_transferred, false);
	add_int(&buf, "last_seq", r->last_seq, false);
	add_json(&buf, "local_fsic", r->local_fsic);
	add_json(&buf, "remote_fsic", r->remote_fsic);
	add_string(&buf, "instance_id", r->instance_id);
	if (r->has_limits)
	{
		add_json(&buf, "server_fsic", r->local_fsic);
		add_key(&buf, "limits");
		appendStringInfo(&buf, "{\"max_chunk_records\": " INT64_FORMAT ", \"max_chunk_bytes\": " INT64_FORMAT "}",
						 r->max_chunk_records, r->max_chunk_bytes);
	}
	return finish_object(&buf);
}

/* a chunk: {"packed", "last_seq", "records"} */
Datum
morango_chunk_encode(const MorangoChunk *c)
{
	StringInfoData buf;

	start_object(&buf);
	add_string(&buf, "packed", c->packed);
	add_int(&buf, "last_seq", c->last_seq, false);
	add_int(&buf, "records", c->records, false);
	return finish_object(&buf);
}

/*
 * peer_finish's answer: {"stage", "status"} and, for a push merged here,
 * {"new", "fast_forwards", "conflicts", "ignored", "deserialized",
 * "deleted", "failed"}
 */
Datum
morango_finish_reply_encode(const MorangoFinishReply *r)
{
	static const char *const dq[] = {"new", "fast_forwards", "conflicts", "ignored"};
	static const char *const ds[] = {"deserialized", "deleted", "failed"};
	StringInfoData buf;

	start_object(&buf);
	add_string(&buf, "stage", r->stage);
	add_string(&buf, "status", r->status);
	if (r->merged)
	{
		for (int i = 0; i < 4; i++)
			add_int(&buf, dq[i], r->dequeue[i], false);
		for (int i = 0; i < 3; i++)
			add_int(&buf, ds[i], r->deserialize[i], false);
	}
	return finish_object(&buf);
}

/*
 * morango_begin_reply_of
 *		The begin reply describing transfer t on this side (the responder):
 *		its state and what it holds.  instance_id and the limits are the
 *		caller's to add.  Runs inside SPI.
 */
void
morango_begin_reply_of(MorangoTransfer *t, bool resumed, MorangoBeginReply *r)
{
	memset(r, 0, sizeof(*r));
	r->active = t->active;
	r->resumed = resumed;
	r->stage = morango_stage_name(t->stage);
	r->status = morango_status_name(t->status);
	r->records_total = t->records_total;
	r->records_transferred = t->records_transferred;
	r->last_seq = morango_transfer_last_seq(t->id);
	r->local_fsic = t->local_fsic;
	r->remote_fsic = t->remote_fsic;
}

/* ---- decoding ---- */

/*
 * The fields keys[] of the json object json (the answer to `what`), as
 * ->> gives them (strings unquoted, other values as JSON text, NULL for a
 * missing field or json null), in mcxt.  A reply that is not a json
 * object is a protocol violation.  Parsing garbage goes into a context
 * of its own.  A \u escape may need an encoding conversion: with a
 * database encoding other than UTF8, call inside a transaction.
 */
static void
json_fields(const char *what, const char *json, MemoryContext mcxt,
			int nkeys, const char *const *keys, char **out)
{
	MemoryContext tmp;
	MemoryContext oldcxt;
	Jsonb	   *jb;

	if (json == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("the peer answered \"%s\" with no value", what)));
	tmp = AllocSetContextCreate(mcxt, "morango reply", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(tmp);
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
	if (!JB_ROOT_IS_OBJECT(jb))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("the peer answered \"%s\" with something other than a json object", what)));
	for (int i = 0; i < nkeys; i++)
	{
		JsonbValue *v = getKeyJsonValueFromContainer(&jb->root, keys[i], strlen(keys[i]), NULL);
		const char *text;

		if (v == NULL || v->type == jbvNull)
			text = NULL;
		else if (v->type == jbvString)
			text = pnstrdup(v->val.string.val, v->val.string.len);
		else if (v->type == jbvNumeric)
			text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
		else if (v->type == jbvBool)
			text = v->val.boolean ? "true" : "false";
		else
			text = JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
		out[i] = text ? MemoryContextStrdup(mcxt, text) : NULL;
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(tmp);
}

/* an integer field of a reply; dflt if it is missing */
static int64
int_field(const char *what, const char *key, const char *s, int64 dflt)
{
	int64		v;
	char	   *end;

	if (s == NULL)
		return dflt;
	errno = 0;
	v = strtoi64(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("the peer answered \"%s\" with a %s that is not an integer", what, key)));
	return v;
}

static bool
bool_field(const char *s)
{
	return s != NULL && strcmp(s, "true") == 0;
}

/*
 * morango_begin_reply_decode
 *		The answer to peer_begin (`what`, for messages) as a struct.
 */
void
morango_begin_reply_decode(const char *what, const char *json, MemoryContext mcxt,
						   MorangoBeginReply *r)
{
	static const char *const keys[] = {"active", "resumed", "stage", "status", "records_total",
		"records_transferred", "last_seq", "server_fsic", "remote_fsic", "instance_id", "limits"};
	char	   *f[lengthof(keys)];

	json_fields(what, json, mcxt, lengthof(keys), keys, f);
	memset(r, 0, sizeof(*r));
	r->active = bool_field(f[0]);
	r->resumed = bool_field(f[1]);
	r->stage = f[2];
	r->status = f[3];
	r->records_total = int_field(what, "records_total", f[4], -1);
	r->records_transferred = int_field(what, "records_transferred", f[5], 0);
	r->last_seq = int_field(what, "last_seq", f[6], 0);
	r->local_fsic = f[7];
	r->remote_fsic = f[8];
	r->instance_id = f[9];
	r->has_limits = f[10] != NULL;
	morango_limits_decode(what, f[10], mcxt, &r->max_chunk_records, &r->max_chunk_bytes);
}

/*
 * morango_limits_decode
 *		A side's chunk limits, {"max_chunk_records", "max_chunk_bytes"} as
 *		json text (NULL: none; then, and for a missing key, the hard
 *		ceilings MORANGO_MAX_CHUNK_RECORDS and MORANGO_MAX_CHUNK_BYTES):
 *		the peer's in its begin reply, the client's as the responder kept
 *		them (transfer_sessions.peer_options).
 */
void
morango_limits_decode(const char *what, const char *json, MemoryContext mcxt,
					  int64 *max_chunk_records, int64 *max_chunk_bytes)
{
	static const char *const limit_keys[] = {"max_chunk_records", "max_chunk_bytes"};
	char	   *l[2] = {NULL, NULL};

	if (json)
		json_fields(what, json, mcxt, 2, limit_keys, l);
	*max_chunk_records = int_field(what, "max_chunk_records", l[0], MORANGO_MAX_CHUNK_RECORDS);
	*max_chunk_bytes = int_field(what, "max_chunk_bytes", l[1], MORANGO_MAX_CHUNK_BYTES);
}

/*
 * morango_chunk_decode
 *		The answer to peer_pull_chunk as a struct.
 */
void
morango_chunk_decode(const char *what, const char *json, MemoryContext mcxt, MorangoChunk *c)
{
	static const char *const keys[] = {"packed", "last_seq", "records"};
	char	   *f[3];

	json_fields(what, json, mcxt, 3, keys, f);
	c->packed = f[0];
	c->last_seq = int_field(what, "last_seq", f[1], 0);
	c->records = int_field(what, "records", f[2], 0);
	if (c->records > 0 && c->packed == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("the peer answered \"%s\" with records but no packed chunk", what)));
}

/*
 * morango_auth_reply_decode
 *		The answer to peer_authenticate as a struct.
 */
void
morango_auth_reply_decode(const char *what, const char *json, MemoryContext mcxt,
						  MorangoAuthReply *r)
{
	static const char *const keys[] = {"chain", "signature"};
	char	   *f[2];

	json_fields(what, json, mcxt, 2, keys, f);
	r->chain = f[0];
	r->signature = f[1];
}

/* ---- the steps ---- */

/*
 * Each step that does a record's work runs it as one statement of its SQL
 * function (SELECT morango.serialize(...), queue(...), dequeue(...),
 * deserialize(...)), on both sides: its cost shows under that name in
 * pg_stat_statements and pg_stat_activity, wherever it ran, and the
 * benchmarks read their stage times from there.
 */

/* the first column of the first row of the last SPI result, as text */
static char *
spi_text(void)
{
	return SPI_processed > 0 ? SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : NULL;
}

/*
 * morango_step_prepare
 *		The first step of either side: a producer stamps its local changes
 *		(serialize), then either side computes its FSIC for the transfer's
 *		filter.  The transfer moves to serializing: completed if the peer's
 *		FSIC (remote_fsic) is known already (the responder learns it in
 *		peer_begin), started otherwise.  peer_options, if given, are the
 *		peer's limits.  Returns this side's FSIC (json text).
 */
char *
morango_step_prepare(MorangoTransfer *t, const char *remote_fsic, const char *peer_options)
{
	MorangoTransferUpdate u = MORANGO_TRANSFER_KEEP;
	char	   *fsic;

	if (!t->receiver)
		morango_spi_exec("SELECT morango.serialize($1, $2)", 2, (Oid[]) {TEXTOID, TEXTARRAYOID},
						 (Datum[]) {t->profile, t->filter}, NULL, SPI_OK_SELECT);
	morango_spi_exec("SELECT morango.fsic($1, $2)::text", 2, (Oid[]) {TEXTOID, TEXTARRAYOID},
					 (Datum[]) {t->profile, t->filter}, NULL, SPI_OK_SELECT);
	fsic = spi_text();
	u.local_fsic = fsic;
	u.remote_fsic = remote_fsic;
	u.peer_options = peer_options;
	morango_transfer_transition(t, MORANGO_STAGE_SERIALIZING,
								remote_fsic ? MORANGO_STATUS_COMPLETED : MORANGO_STATUS_STARTED, &u);
	return fsic;
}

/*
 * morango_step_queue
 *		The producer's queue: with the receiver's FSIC (remote_fsic, if
 *		not recorded yet), fill the outgoing buffer with what it lacks
 *		(morango.queue(), queue.c); t is read again after it.  Returns the
 *		number of records queued.
 */
int64
morango_step_queue(MorangoTransfer *t, const char *remote_fsic)
{
	int64		total;

	if (remote_fsic)
	{
		MorangoTransferUpdate u = MORANGO_TRANSFER_KEEP;

		u.remote_fsic = remote_fsic;
		morango_transfer_transition(t, t->stage, t->status, &u);
	}
	morango_spi_exec("SELECT morango.queue($1)", 1, (Oid[]) {UUIDOID}, &t->id, NULL, SPI_OK_SELECT);
	total = morango_spi_int8(1);
	*t = *morango_transfer_fetch(t->id);	/* queue moved it */
	return total;
}

/*
 * morango_step_received_fsic
 *		The initiating receiver heard the producer's answer: its FSIC, the
 *		number of records it queued and its limits.  If the producer did
 *		not go on with what it had (resumed false: it lost the transfer, or
 *		queued afresh), what this side holds from an earlier attempt is
 *		stale: the transfer restarts at queuing.  A transfer that goes on
 *		past queuing keeps its stage.
 */
void
morango_step_received_fsic(MorangoTransfer *t, bool resumed, const char *remote_fsic,
						   int64 records_total, const char *peer_options)
{
	MorangoTransferUpdate u = MORANGO_TRANSFER_KEEP;

	u.remote_fsic = remote_fsic;
	u.records_total = records_total;
	u.peer_options = peer_options;
	if (!resumed)
	{
		u.restart = true;
		morango_transfer_transition(t, MORANGO_STAGE_QUEUING, MORANGO_STATUS_COMPLETED, &u);
	}
	else if (t->stage > MORANGO_STAGE_QUEUING)
		morango_transfer_transition(t, t->stage, t->status, &u);
	else
		morango_transfer_transition(t, MORANGO_STAGE_QUEUING, MORANGO_STATUS_COMPLETED, &u);
}

/*
 * morango_step_read_chunk
 *		The producer's next chunk: the records after after_seq, at most
 *		max_records of them and max_bytes of JSON, packed for the wire.
 */
void
morango_step_read_chunk(MorangoTransfer *t, int64 after_seq, int max_records, int64 max_bytes,
						MorangoChunk *c)
{
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	desc;

	morango_spi_exec("SELECT packed, last_seq, records"
					 " FROM morango.read_packed_chunk($1, $2, $3, $4)",
					 4, (Oid[]) {UUIDOID, INT8OID, INT4OID, INT8OID},
					 (Datum[]) {t->id, Int64GetDatum(after_seq), Int32GetDatum(max_records),
					 Int64GetDatum(max_bytes)}, NULL, SPI_OK_SELECT);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	c->packed = SPI_getvalue(tup, desc, 1);
	c->last_seq = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	c->records = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
}

/*
 * morango_step_chunk_sent
 *		The producer's chunk up to last_seq (bytes long, packed) reached the
 *		receiver: queue numbers records 1..records_total, so the last one
 *		sent is the count sent.
 */
void
morango_step_chunk_sent(MorangoTransfer *t, int64 last_seq, int64 bytes)
{
	MorangoTransferUpdate u = MORANGO_TRANSFER_KEEP;

	u.records_transferred = Max(t->records_transferred, last_seq);
	u.bytes_sent_add = bytes;
	morango_transfer_transition(t, MORANGO_STAGE_TRANSFERRING, MORANGO_STATUS_STARTED, &u);
}

/*
 * morango_step_receive_chunk
 *		The receiver's chunk: unpack, validate and buffer it (pack.c,
 *		buffer.c; all or nothing).  Returns the number of records added.
 */
int64
morango_step_receive_chunk(Datum ts, text *packed)
{
	return morango_receive_packed(ts, packed);
}

/*
 * morango_step_merge
 *		The receiver merges the incoming buffer into the store (dequeue.c):
 *		counts[4] gets (new, fast-forwards, conflicts, ignored).
 */
void
morango_step_merge(Datum ts, int64 *counts)
{
	morango_spi_exec("SELECT * FROM morango.dequeue($1)", 1, (Oid[]) {UUIDOID}, &ts, NULL,
					 SPI_OK_SELECT);
	for (int i = 0; i < 4; i++)
		counts[i] = morango_spi_int8(i + 1);
}

/*
 * morango_step_apply
 *		The receiver writes what the store holds for the transfer's filter
 *		into the application tables (deserialize.c); the transfer moves to
 *		cleanup.  counts[3] gets (deserialized, deleted, failed).
 */
void
morango_step_apply(MorangoTransfer *t, int64 *counts)
{
	morango_spi_exec("SELECT * FROM morango.deserialize($1, $2)", 2, (Oid[]) {TEXTOID, TEXTARRAYOID},
					 (Datum[]) {t->profile, t->filter}, NULL, SPI_OK_SELECT);
	for (int i = 0; i < 3; i++)
		counts[i] = morango_spi_int8(i + 1);
	morango_transfer_transition(t, MORANGO_STAGE_CLEANUP, MORANGO_STATUS_STARTED,
								&MORANGO_TRANSFER_KEEP);
}
