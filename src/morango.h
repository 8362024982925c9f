/*-------------------------------------------------------------------------
 *
 * morango.h
 *		Declarations shared by the morango extension's source files.
 *
 * Each step of a record's path has its own file: capture.c (trigger ->
 * morango.changes), serialize.c (changes -> store, stamped), queue.c
 * (store -> outgoing buffer), pack.c + transport.c (the wire), buffer.c
 * (incoming buffer), dequeue.c (merge into the store), deserialize.c
 * (store -> application table).  registry.c knows which tables are
 * registered; idrule.c, filter.c and fsic.c are pure.  The steps share
 * spi.c (checked SPI calls), owner.c (statements as a table's owner),
 * counters.c (the instance lock, counters, database max counters) and
 * textutil.c (uuid parsing, the prefix predicate; pure, textutil.h).
 * The control plane: transfer.c (session state, transfer.h), protocol.c
 * (the steps both sides run, the typed replies, protocol.h), peer.c (the
 * responder), driver.c and worker.c (the initiator, driver.h).
 * Dependencies point one way: worker -> driver -> protocol <- peer;
 * protocol -> steps -> transfer -> registry -> pure parts.
 *
 * IDENTIFICATION
 *		src/morango.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MORANGO_H
#define MORANGO_H

#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "utils/array.h"
#include "utils/uuid.h"

#include "transfer.h"

/*
 * The hard ceilings of a chunk, whatever the settings say: records, and
 * bytes of JSON (packed or unpacked).  Without a ceiling on bytes, a
 * megabyte from a peer could inflate to a gigabyte.
 */
#define MORANGO_MAX_CHUNK_RECORDS 100000
#define MORANGO_MAX_CHUNK_BYTES (256 * 1024 * 1024)

/* GUC variables (morango.c) */
extern bool morango_hard_delete_guc;
extern int	morango_chunk_size;
extern int	morango_batch_size;
extern int	morango_connect_timeout;
extern int	morango_peer_timeout;
extern int	morango_stage_timeout;
extern int	morango_retry_limit;
extern int	morango_retry_delay;
extern int	morango_retry_max_delay;
extern int	morango_max_conflict_entries;
extern int	morango_max_conflict_bytes;
extern int	morango_max_chunk_records;
extern int	morango_max_chunk_bytes;
extern int	morango_max_peer_transfers;
extern int	morango_max_open_transfers;
extern int	morango_max_fsic_entries;
extern int	morango_max_filter_prefixes;
extern int	morango_max_filter_prefix_length;

/*
 * spi.c: checked SPI calls.  `expected` is an SPI_OK_* code, or
 * MORANGO_SPI_OK_ANY for any success; a result other than the one expected
 * cannot happen and raises (elog).  All return in the caller's memory
 * context.
 */
#define MORANGO_SPI_OK_ANY 0
extern void morango_spi_connect(void);
extern uint64 morango_spi_exec(const char *sql, int nargs, Oid *argtypes, Datum *values,
							   const char *nulls, int expected);
extern Datum morango_spi_value(int col, bool *isnull);
extern int64 morango_spi_int8(int col);
extern uint64 morango_spi_query(const char *sql, int nargs, Oid *argtypes, Datum *values,
								const char *nulls, long tcount);
extern Portal morango_spi_cursor_open(const char *sql, int nargs, Oid *argtypes, Datum *values,
									  const char *nulls, bool read_only);
extern uint64 morango_spi_cursor_fetch(Portal portal, long count);
extern SPIPlanPtr morango_spi_prepare(const char *sql, int nargs, Oid *argtypes);

/* fault.c: fault injection for the reliability tests (off by default) */
extern void morango_fault_init(void);
extern void morango_fault(const char *point);

/* idrule.c: the record id rule (pure, no SPI) */
extern void morango_compute_record_id(const char *partition, const char *source_id,
									  const char *model_name, pg_uuid_t *out);

/*
 * A registered application table, as recorded in morango.models
 * (registry.c).  All strings are palloc'd in the context the loader was
 * called in.
 */
typedef struct MorangoModel
{
	Oid			relid;
	char	   *profile;
	char	   *model_name;
	char	   *partition_expr;
	char	   *source_id_expr;
	List	   *pk_columns;		/* list of C strings, in key order */
	bool		verify;			/* received records' partition must match their data */
	bool		verify_source;	/* ... and their source id */
	List	   *expr_columns;	/* columns the expressions read; NIL: all */
} MorangoModel;

extern MorangoModel *morango_registry_lookup(Oid relid, MemoryContext mcxt);
extern List *morango_registry_models(const char *profile, MemoryContext mcxt);
extern char *morango_app_key_sql(List *pk_columns, const char *jsonb_expr);
extern char *morango_key_record_sql(MorangoModel *m, const char *qualname,
									const char *keyjson_expr);
extern char *morango_pk_equal_sql(MorangoModel *m, const char *a, const char *b);
extern char *morango_qualified_name(Oid relid);
extern char *morango_columns_json_sql(MorangoModel *m, const char *jsonb_expr, bool with_key);
extern char *morango_expressions_sql(MorangoModel *m, const char *row);
extern int	morango_pin_settings(bool search_path);
extern void morango_unpin_settings(int nestlevel);

/* filter.c: partition filters, their bounds and O(log n) matching (no SPI) */
typedef struct MorangoPrefix
{
	const char *str;			/* not necessarily NUL-terminated */
	int			len;			/* in bytes */
	int64		value;			/* the caller's, carried along by the sort */
} MorangoPrefix;

extern void morango_check_filter(ArrayType *filter);
extern int	morango_prefixes_sort(MorangoPrefix *prefixes, int n, bool reduce);
extern int	morango_prefixes_find(const MorangoPrefix *set, int n, const char *s, int len);
extern bool morango_prefixes_cover(const MorangoPrefix *set, int n, const char *s, int len);
extern bool morango_prefixes_extend(const MorangoPrefix *set, int n, const char *s, int len);
extern char *morango_prefix_upper(const char *s, int len, int *outlen);

/* scope.c: certificate scopes (pure) */
extern char *morango_scope_expand_line(const char *line,
									   const char *(*lookup) (const char *name, void *arg),
									   void *arg);
extern bool morango_filter_within(const char *const *a, int na,
								  const char *const *b, int nb);

/* crypto.c: RSA keys and signatures (libcrypto, pure) */
extern bool morango_verify(const char *public_key, const char *msg, size_t len,
						   const char *sig_b64);

/* owner.c: statements that touch an application table run as its owner */
extern Oid	morango_table_owner(Oid relid);
extern void morango_as_owner(Oid relid, void (*fn) (void *arg), void *arg);
extern uint64 morango_owner_exec(Oid relid, const char *sql, int nargs, Oid *argtypes,
								 Datum *values, const char *nulls, int expected);

/* subxact.c */
extern ErrorData *morango_try(void (*fn) (void *arg), void *arg);

/* serialize.c */
extern int64 morango_serialize_internal(Datum profile, bool profile_null,
										Datum filter, bool filter_null);

/* deserialize.c */
extern void morango_deserialize_internal(const char *profile, Datum filter, bool filter_null,
										 int64 *applied, int64 *deleted, int64 *failed);

/* session.c: statistics of the store */
extern void morango_analyze_store(int64 written);

/* counters.c: the instance lock, the next counter, database max counters */
extern pg_uuid_t *morango_lock_instance(int64 *counter);
extern int64 morango_next_counter(pg_uuid_t **instance);
extern void morango_counter_used(const pg_uuid_t *instance, int64 counter);
extern void morango_raise_own_max_counters(const pg_uuid_t *instance, int64 counter,
										   Datum profile, bool profile_null,
										   Datum prefixes, bool prefixes_null);
struct MorangoFsicMap;			/* fsic.h */
extern void morango_raise_claimed_max_counters(const struct MorangoFsicMap *claims, Datum profile,
											   Datum ts, Datum filter, Datum conflict_parts,
											   bool conflict_parts_null);

/* queue.c, buffer.c, dequeue.c */
extern int64 morango_queue_internal(Datum ts);
extern int64 morango_queue_transfer(MorangoTransfer *t);
extern int64 morango_receive_chunk_internal(Datum ts, Datum chunk, int64 nbytes);
extern void morango_dequeue_internal(Datum ts, int64 *counts);

/* pack.c */
extern int64 morango_receive_packed(Datum ts, text *packed);

/* capture.c */
extern void morango_capture_init(void);
extern Oid	morango_changes_relid(void);
extern void *morango_capture_deserializing_push(void);
extern void morango_capture_deserializing_add(Oid relid, const char *key);
extern void morango_capture_deserializing_pop(void *previous);

#endif							/* MORANGO_H */
