/*
 * morango--0.1.0.sql
 *
 * Install script of the morango extension: the catalog (identity, store,
 * counters, buffers, sessions, registered models) and the SQL API.
 *
 * Every object lives in schema morango (fixed by morango.control).  Tables
 * hold sync state that only the extension and its owner touch; application
 * roles write their own tables, and the C trigger notes their changes with
 * a direct heap insert that needs no privilege (doc/design.md,
 * "Privileges").
 *
 * Column meanings follow Morango's data model (doc/design.md maps every
 * table to its Morango counterpart and lists where we deliberately differ).
 */

\echo Use "CREATE EXTENSION morango" to load this file. \quit

-- -------------------------------------------------------------------------
-- Identity
-- -------------------------------------------------------------------------

/*
 * One row per database identity this database has had.  Exactly one is
 * current.  A database that was restored or copied gets a new one, either
 * from morango.reset_database_id() or automatically when the cluster's
 * system identifier or the database oid no longer match the ones recorded
 * here.
 */
CREATE TABLE morango.database_ids (
    id                  uuid PRIMARY KEY,
    current             boolean NOT NULL DEFAULT true,
    system_identifier   bigint NOT NULL,
    database_oid        oid NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX database_ids_current ON morango.database_ids (current) WHERE current;

/*
 * One row per instance id.  A version of a record is (instance id, counter);
 * the counter of the current instance only ever grows.  The current row is
 * also the lock that orders counter allocation (see morango.serialize()).
 */
CREATE TABLE morango.instances (
    id                  uuid PRIMARY KEY,
    database_id         uuid NOT NULL REFERENCES morango.database_ids (id),
    counter             bigint NOT NULL DEFAULT 0 CHECK (counter >= 0),
    current             boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX instances_current ON morango.instances (current) WHERE current;

-- -------------------------------------------------------------------------
-- Registered application tables
-- -------------------------------------------------------------------------

CREATE TABLE morango.models (
    model               regclass PRIMARY KEY,
    profile             text NOT NULL CHECK (profile <> ''),
    model_name          text NOT NULL CHECK (model_name <> ''),
    partition_expr      text NOT NULL,
    source_id_expr      text NOT NULL,
    pk_columns          text[] NOT NULL,
    -- received records must have the partition and source id these
    -- expressions give for their data (doc/design.md, "Received records")
    verify              boolean NOT NULL DEFAULT true,
    -- ... and the source id too (verify, and it is a function of the key)
    verify_source       boolean NOT NULL DEFAULT true,
    expr_columns        text[],          -- the columns the expressions read; NULL: all
    registered_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (profile, model_name)
);

-- -------------------------------------------------------------------------
-- Store and counters
-- -------------------------------------------------------------------------

/*
 * Changes the capture trigger noted and serialize() has not stamped yet:
 * one row per changed application row (table, primary key as a jsonb array
 * in text form, hard delete?).  Written by the trigger with a plain heap
 * insert; no index, constraint or trigger, on purpose.
 */
CREATE TABLE morango.changes (
    model               regclass NOT NULL,
    key                 text NOT NULL,
    hard                boolean NOT NULL
);

/*
 * The store: one serialized copy of every syncable record, local or
 * received, at its last version (last_saved_instance, last_saved_counter).
 * app_key ties a record to its application row.  Whether a record is
 * dirty (Morango's dirty_bit) is kept apart, in morango.store_dirty, so
 * that marking it clean does not rewrite this wide row and its indexes.
 */
CREATE TABLE morango.store (
    id                          uuid PRIMARY KEY,
    profile                     text NOT NULL,
    model_name                  text NOT NULL,
    partition                   text NOT NULL,
    source_id                   text NOT NULL CHECK (source_id <> ''),
    serialized                  jsonb NOT NULL CHECK (jsonb_typeof(serialized) = 'object'),
    deleted                     boolean NOT NULL DEFAULT false,
    hard_deleted                boolean NOT NULL DEFAULT false,
    last_saved_instance         uuid NOT NULL,
    last_saved_counter          bigint NOT NULL CHECK (last_saved_counter > 0),
    conflicting_serialized_data jsonb NOT NULL DEFAULT '[]'
        CHECK (jsonb_typeof(conflicting_serialized_data) = 'array'),
    last_transfer_session_id    uuid,
    app_key                     text
);
CREATE UNIQUE INDEX store_app_key ON morango.store (profile, model_name, app_key);
CREATE INDEX store_version ON morango.store (last_saved_instance, last_saved_counter);
-- queue reads the records under a narrow filter (one user's device) by
-- partition ranges (morango.prefix_upper), in byte order
CREATE INDEX store_partition ON morango.store (profile, partition COLLATE "C");

/*
 * The dirty records: a row per store record that holds a version from a
 * peer not yet written to its application table (Morango's dirty_bit).
 * dequeue inserts it, deserialize deletes it once the row is written, or
 * sets error when the record cannot be written yet; a local edit
 * (serialize) deletes it too, its version winning.  keyed says app_key was
 * computed from this version's data (at receive, from the registration of
 * the time), so that deserialize does not compute it again.  Narrow on
 * purpose: no foreign key to the store (its rows are never deleted by the
 * extension; deserialize joins the store), one index.
 */
CREATE TABLE morango.store_dirty (
    profile             text NOT NULL,
    model_name          text NOT NULL,
    id                  uuid NOT NULL,
    keyed               boolean NOT NULL DEFAULT false,
    error               text,
    PRIMARY KEY (profile, model_name, id)
);

/*
 * The store as users read it: every record with its dirty mark and the
 * reason it could not be written, if any.
 */
CREATE VIEW morango.records AS
SELECT s.id, s.profile, s.model_name, s.partition, s.source_id, s.serialized,
       s.deleted, s.hard_deleted, s.last_saved_instance, s.last_saved_counter,
       s.conflicting_serialized_data, d.id IS NOT NULL AS dirty_bit,
       d.error AS deserialization_error, s.last_transfer_session_id, s.app_key
FROM morango.store s
LEFT JOIN morango.store_dirty d
  ON d.profile = s.profile AND d.model_name = s.model_name AND d.id = s.id;

/*
 * Version vector of each record: the highest counter of every instance that
 * wrote it.  No foreign key to the store: its rows are only ever written
 * by the statements that write their store row (serialize, dequeue), and
 * a key check per version vector row cost a measurable share of both
 * (doc/design.md, "Performance"); a deleted store row takes its version
 * vector and its dirty mark with it (morango.store_deleted()).
 */
CREATE TABLE morango.record_max_counters (
    record_id           uuid NOT NULL,
    instance_id         uuid NOT NULL,
    counter             bigint NOT NULL CHECK (counter > 0),
    PRIMARY KEY (record_id, instance_id)
);
CREATE INDEX record_max_counters_instance ON morango.record_max_counters (instance_id, counter);

/*
 * The extension never deletes store rows; when an administrator does, the
 * records' version vectors and dirty marks go too.  A statement trigger:
 * it costs nothing on the inserts and updates of a sync.
 */
CREATE FUNCTION morango.store_deleted()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM morango.record_max_counters r USING gone g WHERE r.record_id = g.id;
    DELETE FROM morango.store_dirty d USING gone g
    WHERE d.profile = g.profile AND d.model_name = g.model_name AND d.id = g.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER store_deleted AFTER DELETE ON morango.store
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION morango.store_deleted();

/*
 * "For records of profile `profile` under partition prefix `partition`,
 * this database holds every version written by instance_id with a counter
 * up to `counter`."  (Morango keys this by instance and partition only; a
 * claim made while syncing one profile must not cover another's records.)
 */
CREATE TABLE morango.database_max_counters (
    profile             text NOT NULL,
    instance_id         uuid NOT NULL,
    partition           text NOT NULL,
    counter             bigint NOT NULL CHECK (counter >= 0),
    PRIMARY KEY (profile, instance_id, partition)
);
-- fsic() reads the partitions under and above a filter (a hub holds rows
-- for every device's partitions: it must not read them all)
CREATE INDEX database_max_counters_partition
    ON morango.database_max_counters (profile, partition COLLATE "C");

-- -------------------------------------------------------------------------
-- Sessions and buffers
-- -------------------------------------------------------------------------

/*
 * A sync session: one run of morango.sync() between this database and a
 * peer, on both sides (is_server says which side this row is).  filter and
 * direction are what the initiator asked for; a later morango.sync() with
 * the same peer, profile, filter and direction resumes an unfinished one.
 * On the server side, peer_role is the role that opened it (peer_begin, as
 * morango.peer_role()): only that role may use it or its transfers.
 */
CREATE TABLE morango.sync_sessions (
    id                      uuid PRIMARY KEY,
    profile                 text NOT NULL,
    is_server               boolean NOT NULL,
    peer                    text,
    filter                  text[],
    direction               text CHECK (direction IN ('push', 'pull', 'both')),
    local_instance_id       uuid,
    peer_instance_id        uuid,
    local_certificate_id    uuid,
    peer_certificate_id     uuid,
    active                  boolean NOT NULL DEFAULT true,
    status                  text NOT NULL DEFAULT 'started'
        CHECK (status IN ('started', 'completed', 'errored', 'cancelled')),
    process_id              integer,
    started_at              timestamptz NOT NULL DEFAULT now(),
    last_activity_at        timestamptz NOT NULL DEFAULT now(),
    ended_at                timestamptz,
    last_error              text,
    peer_role               name
);
CREATE INDEX sync_sessions_resume ON morango.sync_sessions (peer, profile) WHERE active;

/*
 * A transfer session: one direction of a sync session.  push is from the
 * initiator's point of view (Morango's), on both sides.  The stage and
 * status follow Morango's; records_transferred counts records that reached
 * the receiver's buffer.  local_fsic is this side's FSIC, remote_fsic the
 * peer's.  peer_options are the limits the peer announced in peer_begin
 * (on the server, the client's; on the client, the server's):
 * {"max_chunk_records", "max_chunk_bytes"}.
 */
CREATE TABLE morango.transfer_sessions (
    id                      uuid PRIMARY KEY,
    sync_session_id         uuid NOT NULL REFERENCES morango.sync_sessions (id) ON DELETE CASCADE,
    push                    boolean NOT NULL,
    filter                  text[] NOT NULL,
    active                  boolean NOT NULL DEFAULT true,
    stage                   text NOT NULL DEFAULT 'initializing'
        CHECK (stage IN ('initializing', 'serializing', 'queuing', 'transferring',
                         'dequeuing', 'deserializing', 'cleanup')),
    status                  text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'started', 'completed', 'errored')),
    records_total           bigint,
    records_transferred     bigint NOT NULL DEFAULT 0,
    bytes_sent              bigint NOT NULL DEFAULT 0,
    bytes_received          bigint NOT NULL DEFAULT 0,
    conflicts               bigint NOT NULL DEFAULT 0,
    records_dequeued        bigint NOT NULL DEFAULT 0,
    local_fsic              jsonb,
    remote_fsic             jsonb,
    started_at              timestamptz NOT NULL DEFAULT now(),
    last_activity_at        timestamptz NOT NULL DEFAULT now(),
    ended_at                timestamptz,
    last_error              text,
    peer_options            jsonb
);
CREATE INDEX transfer_sessions_sync ON morango.transfer_sessions (sync_session_id);

/*
 * The buffer: outgoing on the producer, incoming on the receiver (the
 * transfer session says which), one row per record in a transfer.
 *
 * No foreign key to transfer_sessions: queue() and receive_chunk() check
 * the session before they write, transfer sessions are never deleted, and
 * a per-row key check cost a measurable share of a sync (two checks per
 * record on each side; doc/design.md, "Performance").
 */
CREATE TABLE morango.buffer (
    transfer_session_id         uuid NOT NULL,
    seq                         bigint NOT NULL,
    record_id                   uuid NOT NULL,
    profile                     text NOT NULL,
    model_name                  text NOT NULL,
    partition                   text NOT NULL,
    source_id                   text NOT NULL,
    serialized                  jsonb NOT NULL,
    deleted                     boolean NOT NULL,
    hard_deleted                boolean NOT NULL,
    last_saved_instance         uuid NOT NULL,
    last_saved_counter          bigint NOT NULL CHECK (last_saved_counter > 0),
    conflicting_serialized_data jsonb NOT NULL DEFAULT '[]',
    -- on the receiver: the application key the record's data gives under
    -- this database's registration of its model, computed at receive
    -- (NULL where it could not be: dequeue leaves those to deserialize)
    app_key                     text,
    PRIMARY KEY (transfer_session_id, record_id),
    UNIQUE (transfer_session_id, seq)
);

CREATE TABLE morango.record_max_counter_buffer (
    transfer_session_id uuid NOT NULL,   -- no foreign key: see morango.buffer
    record_id           uuid NOT NULL,
    instance_id         uuid NOT NULL,
    counter             bigint NOT NULL CHECK (counter > 0),
    PRIMARY KEY (transfer_session_id, record_id, instance_id)
);

-- Keep user data in these tables across pg_dump / restore.  Not the
-- identity: a restored database is a copy and must make versions under an
-- instance id of its own (CREATE EXTENSION in the restore makes one).
SELECT pg_catalog.pg_extension_config_dump('morango.models', '');
SELECT pg_catalog.pg_extension_config_dump('morango.changes', '');
SELECT pg_catalog.pg_extension_config_dump('morango.store', '');
SELECT pg_catalog.pg_extension_config_dump('morango.store_dirty', '');
SELECT pg_catalog.pg_extension_config_dump('morango.record_max_counters', '');
SELECT pg_catalog.pg_extension_config_dump('morango.database_max_counters', '');
SELECT pg_catalog.pg_extension_config_dump('morango.sync_sessions', '');
SELECT pg_catalog.pg_extension_config_dump('morango.transfer_sessions', '');

-- -------------------------------------------------------------------------
-- Identity functions
-- -------------------------------------------------------------------------

/*
 * Make a new database id and a new instance id (counter 0) and make them
 * current.  Old rows stay, marked not current, so history remains readable.
 */
CREATE FUNCTION morango.reset_database_id()
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_db  uuid := gen_random_uuid();
BEGIN
    -- Serialize with every counter allocation (they lock the current row).
    PERFORM 1 FROM morango.instances WHERE current FOR UPDATE;
    UPDATE morango.instances SET current = false WHERE current;
    UPDATE morango.database_ids SET current = false WHERE current;
    INSERT INTO morango.database_ids (id, system_identifier, database_oid)
        SELECT new_db, s.system_identifier, d.oid
        FROM pg_control_system() s, pg_database d
        WHERE d.datname = current_database();
    INSERT INTO morango.instances (id, database_id) VALUES (gen_random_uuid(), new_db);
    RETURN new_db;
END
$$;
COMMENT ON FUNCTION morango.reset_database_id() IS
    'give this database a new database id and instance id (after a restore or copy)';

SELECT morango.reset_database_id();

/*
 * Lock the current instance row and return it; the lock orders counter
 * allocation by commit order and is held until the transaction ends.  If the
 * database was copied to another cluster or database (system identifier or
 * database oid changed), a new identity is made first, so that a copy never
 * reuses (instance id, counter) pairs.
 */
CREATE FUNCTION morango.lock_instance(OUT instance_id uuid, OUT counter bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1
                   FROM morango.database_ids d, pg_control_system() s, pg_database p
                   WHERE d.current
                     AND p.datname = current_database()
                     AND d.system_identifier = s.system_identifier
                     AND d.database_oid = p.oid) THEN
        RAISE NOTICE 'morango: this database was copied or restored; making a new instance id';
        PERFORM morango.reset_database_id();
    END IF;
    SELECT i.id, i.counter INTO instance_id, counter
    FROM morango.instances i WHERE i.current FOR UPDATE;
END
$$;
COMMENT ON FUNCTION morango.lock_instance() IS
    'lock the current instance row (orders counter allocation) and return its id and counter';

/*
 * This database's current instance and its counter, if this database made
 * it: the test lock_instance() makes (system identifier and database oid of
 * its database id).  No row in a copy that has not noticed yet that it is
 * one (its current instance is its original's until lock_instance() makes
 * a new one).  Only this instance's counter is one a receiver can check
 * received versions against: an old instance's recorded counter may be
 * below versions that are real (after a reset_database_id() that follows a
 * restore or a failover, or an identity inherited from a copied database),
 * so old instances are not checked.  Not locked: a reader, not a counter
 * taker.
 */
CREATE FUNCTION morango.own_instance(OUT id uuid, OUT counter bigint)
RETURNS SETOF record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.id, i.counter
    FROM morango.instances i JOIN morango.database_ids d ON d.id = i.database_id,
         pg_control_system() s, pg_database p
    WHERE i.current AND d.current AND p.datname = current_database()
      AND d.system_identifier = s.system_identifier AND d.database_oid = p.oid
$$;
COMMENT ON FUNCTION morango.own_instance() IS
    'this database''s current instance and counter, if this database made it (not a copy''s inherited one)';

CREATE FUNCTION morango.instance_id()
RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT id FROM morango.instances WHERE current $$;
COMMENT ON FUNCTION morango.instance_id() IS 'this database''s current instance id';

CREATE FUNCTION morango.database_id()
RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT id FROM morango.database_ids WHERE current $$;
COMMENT ON FUNCTION morango.database_id() IS 'this database''s current database id';

-- -------------------------------------------------------------------------
-- The id rule
-- -------------------------------------------------------------------------

CREATE FUNCTION morango.record_id(partition text, source_id text, model_name text)
RETURNS uuid
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'morango_record_id_sql';
COMMENT ON FUNCTION morango.record_id(text, text, text) IS
    'record id: the first 32 hex digits of sha256(partition || ''::'' || source_id || ''::'' || model_name)';

-- -------------------------------------------------------------------------
-- Registration and capture
-- -------------------------------------------------------------------------

CREATE FUNCTION morango.capture_trigger()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'morango_capture_trigger';
COMMENT ON FUNCTION morango.capture_trigger() IS
    'row trigger on registered tables: notes changed rows in morango.changes';

CREATE FUNCTION morango.register_model(model regclass, profile text,
                                       "partition" text DEFAULT '',
                                       source_id text DEFAULT NULL,
                                       model_name text DEFAULT NULL,
                                       verify boolean DEFAULT true)
RETURNS void
LANGUAGE C
AS 'MODULE_PATHNAME', 'morango_register_model';
COMMENT ON FUNCTION morango.register_model(regclass, text, text, text, text, boolean) IS
    'register an application table for sync: install triggers and record its existing rows';

CREATE FUNCTION morango.unregister_model(model regclass)
RETURNS void
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'morango_unregister_model';
COMMENT ON FUNCTION morango.unregister_model(regclass) IS
    'stop syncing an application table: remove its triggers, keep its store rows';

CREATE FUNCTION morango.hard_delete(model regclass, key text)
RETURNS boolean
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'morango_hard_delete_key';
COMMENT ON FUNCTION morango.hard_delete(regclass, text) IS
    'delete an application row and erase its serialized data on every peer (key: primary key as text)';

CREATE FUNCTION morango.hard_delete(record_id uuid)
RETURNS boolean
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'morango_hard_delete_record';
COMMENT ON FUNCTION morango.hard_delete(uuid) IS
    'erase a record''s serialized data on every peer, deleting its application row if present';

-- -------------------------------------------------------------------------
-- Serialize and deserialize
-- -------------------------------------------------------------------------

CREATE FUNCTION morango.serialize(profile text DEFAULT NULL, filter text[] DEFAULT NULL)
RETURNS bigint
LANGUAGE C
AS 'MODULE_PATHNAME', 'morango_serialize';
COMMENT ON FUNCTION morango.serialize(text, text[]) IS
    'write changed rows in scope to the store, all stamped with one new counter; returns the number of records stamped';

CREATE FUNCTION morango.deserialize(profile text DEFAULT NULL, filter text[] DEFAULT NULL,
                                    OUT applied bigint, OUT deleted bigint, OUT failed bigint)
RETURNS record
LANGUAGE C
AS 'MODULE_PATHNAME', 'morango_deserialize';
COMMENT ON FUNCTION morango.deserialize(text, text[]) IS
    'write store rows received from peers into the application tables';

-- -------------------------------------------------------------------------
-- Peers: FOREIGN DATA WRAPPER morango.  A peer is a foreign server of this
-- wrapper (libpq connection options) with a user mapping (user, password);
-- the transport (src/transport.c) also takes plain connection strings.
-- -------------------------------------------------------------------------

CREATE FUNCTION morango.fdw_validator(options text[], catalog oid)
RETURNS void
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'morango_fdw_validator';
COMMENT ON FUNCTION morango.fdw_validator(text[], oid) IS
    'validator of FOREIGN DATA WRAPPER morango: libpq connection options on servers, user and password in user mappings';

CREATE FOREIGN DATA WRAPPER morango VALIDATOR morango.fdw_validator;
COMMENT ON FOREIGN DATA WRAPPER morango IS
    'morango peers: one server per peer database, CREATE SERVER p FOREIGN DATA WRAPPER morango OPTIONS (host ..., dbname ...)';

-- -------------------------------------------------------------------------
-- FSICs (filter-specific instance counters), pure functions
-- -------------------------------------------------------------------------

CREATE FUNCTION morango.fsic_expand(fsic jsonb, filter text[])
RETURNS jsonb
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'morango_fsic_expand_sql';
COMMENT ON FUNCTION morango.fsic_expand(jsonb, text[]) IS
    'expand a raw v2 FSIC ({"super": ..., "sub": ...}) for a filter into {partition: {instance: counter}} (Morango''s expand_fsic_for_use); a NULL filter means every partition';

CREATE FUNCTION morango.fsic_diff(sender jsonb, receiver jsonb)
RETURNS jsonb
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'morango_fsic_diff_sql';
COMMENT ON FUNCTION morango.fsic_diff(jsonb, jsonb) IS
    'per sender partition and instance, the receiver''s counter where it is below the sender''s (Morango''s calculate_directional_fsic_diff_v2, on expanded FSICs)';

-- Partition filters (src/filter.c): bounded, matched in O(log n) per partition

CREATE FUNCTION morango.in_filter(partition text, filter text[])
RETURNS boolean
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'morango_in_filter_sql';
COMMENT ON FUNCTION morango.in_filter(text, text[]) IS
    'does the partition start with one of the filter''s prefixes? (binary search in the sorted filter)';

CREATE FUNCTION morango.above_filter(partition text, filter text[])
RETURNS boolean
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'morango_above_filter_sql';
COMMENT ON FUNCTION morango.above_filter(text, text[]) IS
    'is the partition a strict prefix of one of the filter''s prefixes (a super partition of its FSIC)?';

CREATE FUNCTION morango.prefix_upper(prefix text)
RETURNS text
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'morango_prefix_upper_sql';
COMMENT ON FUNCTION morango.prefix_upper(text) IS
    'a string above, in byte order, every string that starts with prefix (NULL: none): the end of its btree range';

CREATE FUNCTION morango.check_filter(filter text[])
RETURNS void
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'morango_check_filter_sql';
COMMENT ON FUNCTION morango.check_filter(text[]) IS
    'raise unless the filter is a non-empty array of non-null prefixes within morango.max_filter_prefixes and morango.max_filter_prefix_length (NULL passes)';

CREATE FUNCTION morango.filter_key(filter text[])
RETURNS text
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'morango_filter_key_sql';
COMMENT ON FUNCTION morango.filter_key(text[]) IS
    'a fixed-size key of a filter (hex sha256 of its elements), for unique indexes';

-- -------------------------------------------------------------------------
-- Sync: FSICs, queue, chunks, dequeue (doc/protocol.md)
-- -------------------------------------------------------------------------

/*
 * This database's filter-specific instance counters for filter (v2 form,
 * {"super": {...}, "sub": {...}}): from the database max counters, the
 * partitions under a filter prefix (sub) and those that are strict prefixes
 * of one (super).
 */
CREATE FUNCTION morango.fsic(profile text, filter text[])
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result jsonb;
BEGIN
    PERFORM morango.check_filter(filter);
    -- through EXECUTE ... USING, the plan is made for this filter, which
    -- in_filter and above_filter then sort once (src/filter.c)
    --
    -- Only the rows it needs are read (database_max_counters_partition):
    -- sub, the partitions in the byte ranges of the filter's prefixes
    -- (morango.prefix_upper), tested exactly; super, the strict prefixes
    -- of the filter's prefixes, looked up by value.
    EXECUTE $q$
        WITH f AS (
            SELECT DISTINCT x.p, morango.prefix_upper(x.p) AS hi
            FROM pg_catalog.unnest($2) AS x(p)
        ), c AS (
            SELECT d.partition, d.instance_id, d.counter
            FROM f, LATERAL (
                SELECT d.partition, d.instance_id, d.counter
                FROM morango.database_max_counters d
                WHERE d.profile = $1 AND d.partition COLLATE "C" >= f.p
                  AND d.partition COLLATE "C" < f.hi
                OFFSET 0) AS d   -- (a range scan per prefix, never a join)
            WHERE f.hi IS NOT NULL AND morango.in_filter(d.partition, $2)
            UNION   -- (prefixes without an upper bound, say '')
            SELECT d.partition, d.instance_id, d.counter
            FROM f, LATERAL (
                SELECT d.partition, d.instance_id, d.counter
                FROM morango.database_max_counters d
                WHERE d.profile = $1 AND d.partition COLLATE "C" >= f.p
                OFFSET 0) AS d
            WHERE f.hi IS NULL AND morango.in_filter(d.partition, $2)
        ), sub AS (
            SELECT c.partition, jsonb_object_agg(c.instance_id, c.counter) AS m
            FROM c GROUP BY c.partition
        ), sup AS (
            SELECT d.partition, jsonb_object_agg(d.instance_id, d.counter) AS m
            FROM morango.database_max_counters d
            WHERE d.profile = $1
              AND d.partition COLLATE "C" = ANY (ARRAY(
                  SELECT DISTINCT pg_catalog.left(f.p, n)
                  FROM f, pg_catalog.generate_series(0, pg_catalog.length(f.p) - 1) AS n))
              AND morango.above_filter(d.partition, $2)
              AND NOT morango.in_filter(d.partition, $2)
            GROUP BY d.partition
        )
        SELECT jsonb_build_object(
            'super', COALESCE((SELECT jsonb_object_agg(partition, m) FROM sup), '{}'::jsonb),
            'sub', COALESCE((SELECT jsonb_object_agg(partition, m) FROM sub), '{}'::jsonb))
    $q$ INTO result USING profile, filter;
    RETURN result;
END
$$;
COMMENT ON FUNCTION morango.fsic(text, text[]) IS
    'this database''s filter-specific instance counters of a profile for a filter (FSIC v2: super and sub partitions)';

/*
 * Refuse an FSIC (raw v2, from a peer) that claims a counter of this
 * database's own instance (morango.own_instance()) above that instance's
 * counter: only this database makes versions of it, so no peer can hold
 * one above its counter.  Such a claim, believed, would make this database
 * skip its own later versions for that peer (or, raised into its database
 * max counters, for every peer).  Checks the FSIC's form first
 * (fsic_expand raises on a bad one).
 */
CREATE FUNCTION morango.fsic_claims_check(fsic jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad record;
BEGIN
    PERFORM morango.fsic_expand(fsic, ARRAY['']);  -- its form (raises on a bad one)
    SELECT p.key AS part, (i.value)::bigint AS claim, o.id, o.counter INTO bad
    FROM morango.own_instance() o,
         (SELECT fsic->'super' UNION ALL SELECT fsic->'sub') AS m(map),
         jsonb_each(m.map) AS p, jsonb_each_text(p.value) AS i
    WHERE i.key::uuid = o.id AND (i.value)::bigint > o.counter
    ORDER BY p.key LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'the peer''s FSIC claims counter % of this database''s instance % for partition %, above that instance''s counter %',
            bad.claim, bad.id, quote_literal(bad.part), bad.counter
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Only this database makes versions of its own instance.';
    END IF;
END
$$;
COMMENT ON FUNCTION morango.fsic_claims_check(jsonb) IS
    'raise if a peer''s FSIC claims a counter of this database''s own instance above its counter';

CREATE FUNCTION morango.queue(transfer_session uuid)
RETURNS bigint
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'morango_queue';
COMMENT ON FUNCTION morango.queue(uuid) IS
    'fill the outgoing buffer of a transfer session with what the receiver lacks (FSIC diff); returns the number of records';

/*
 * Up to max_records records of a transfer session's buffer after sequence
 * number after_seq, and no more than max_bytes bytes of JSON (NULL: no
 * bound; the first record is always in, so a record larger than max_bytes
 * makes a chunk of one record, larger than max_bytes), as one json array
 * (the wire form of a chunk), with the last sequence number in it, the
 * number of records and the chunk's length in bytes.
 */
CREATE FUNCTION morango.read_chunk(transfer_session uuid, after_seq bigint, max_records integer,
                                   max_bytes bigint DEFAULT NULL,
                                   OUT chunk json, OUT last_seq bigint, OUT records integer,
                                   OUT bytes bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- json, not jsonb: the chunk is sent as text, and building text is
    -- about twice as fast as building a jsonb value and printing it.
    -- json_agg writes "[", the elements separated by ", ", and "]": the
    -- running sum of each element's length plus 2 is the length of the
    -- chunk made of the elements up to it.
    SELECT COALESCE(json_agg(r.j ORDER BY r.seq), '[]'::json),
           COALESCE(max(r.seq), after_seq),
           count(*)::integer,
           COALESCE(max(r.run), 2)
    FROM (SELECT e.seq, e.j,
                 sum(octet_length(e.j::text) + 2) OVER (ORDER BY e.seq) AS run,
                 row_number() OVER (ORDER BY e.seq) AS n
          FROM (SELECT b.seq, json_build_object(
                    'id', b.record_id, 'seq', b.seq, 'profile', b.profile,
                    'model_name', b.model_name, 'partition', b.partition, 'source_id', b.source_id,
                    'serialized', b.serialized, 'deleted', b.deleted, 'hard_deleted', b.hard_deleted,
                    'last_saved_instance', b.last_saved_instance,
                    'last_saved_counter', b.last_saved_counter,
                    'conflicting_serialized_data', b.conflicting_serialized_data,
                    'rmcs', (SELECT json_object_agg(x.instance_id, x.counter)
                             FROM morango.record_max_counter_buffer x
                             WHERE x.transfer_session_id = b.transfer_session_id
                               AND x.record_id = b.record_id)) AS j
                FROM (SELECT * FROM morango.buffer
                      WHERE transfer_session_id = $1 AND seq > $2
                      ORDER BY seq LIMIT $3) AS b) AS e) AS r
    WHERE r.n = 1 OR max_bytes IS NULL OR r.run <= max_bytes
$$;
COMMENT ON FUNCTION morango.read_chunk(uuid, bigint, integer, bigint) IS
    'the next chunk of a transfer session''s buffer, as the json array sent over the wire (packed)';

/*
 * The next chunk of a transfer, packed for the wire, cut to max_records
 * records and max_bytes bytes of JSON: the lower of the sender's and the
 * receiver's limits (morango.max_chunk_records, morango.max_chunk_bytes,
 * which both sides announce in peer_begin).  A single record larger than
 * max_bytes cannot be sent: a clear error, before anything is packed.
 */
CREATE FUNCTION morango.read_packed_chunk(transfer_session uuid, after_seq bigint, max_records integer,
                                          max_bytes bigint,
                                          OUT packed text, OUT last_seq bigint, OUT records integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
BEGIN
    SELECT * INTO c FROM morango.read_chunk(transfer_session, after_seq, max_records, max_bytes);
    IF c.bytes > max_bytes THEN
        RAISE EXCEPTION 'record % of transfer session % is too large to send: % bytes of JSON, more than the % bytes a chunk may hold',
            c.chunk->0->>'id', transfer_session, c.bytes - 2, max_bytes
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Raise morango.max_chunk_bytes (a superuser setting) on both databases.';
    END IF;
    packed := morango.pack_chunk(c.chunk);
    last_seq := c.last_seq;
    records := c.records;
END
$$;
COMMENT ON FUNCTION morango.read_packed_chunk(uuid, bigint, integer, bigint) IS
    'the next chunk of a transfer, cut to a number of records and bytes, packed for the wire';

CREATE FUNCTION morango.version_vector_check(rmcs jsonb, last_saved_instance uuid, last_saved_counter bigint)
RETURNS text
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'morango_version_vector_check';
COMMENT ON FUNCTION morango.version_vector_check(jsonb, uuid, bigint) IS
    'NULL if a received version vector is well formed and holds the last saved version, else why not';

CREATE FUNCTION morango.receive_chunk(transfer_session uuid, chunk jsonb)
RETURNS bigint
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'morango_receive_chunk';
COMMENT ON FUNCTION morango.receive_chunk(uuid, jsonb) IS
    'validate a chunk of records and add it to the incoming buffer (all or nothing); returns the number added';

/* Chunks on the wire are packed: deflated JSON text in base64 (src/pack.c). */
CREATE FUNCTION morango.pack_chunk(chunk json)
RETURNS text
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'morango_pack_chunk';
COMMENT ON FUNCTION morango.pack_chunk(json) IS 'a chunk as it travels between peers: deflated, base64';

CREATE FUNCTION morango.unpack_chunk(packed text)
RETURNS jsonb
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'morango_unpack_chunk';
COMMENT ON FUNCTION morango.unpack_chunk(text) IS 'the chunk a packed chunk holds';

CREATE FUNCTION morango.receive_packed_chunk(transfer_session uuid, packed text)
RETURNS bigint
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'morango_receive_packed_chunk';
COMMENT ON FUNCTION morango.receive_packed_chunk(uuid, text) IS
    'receive_chunk() of a packed chunk; the session counts the packed bytes';

CREATE FUNCTION morango.dequeue(transfer_session uuid,
                                OUT new bigint, OUT fast_forwards bigint,
                                OUT conflicts bigint, OUT ignored bigint)
RETURNS record
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'morango_dequeue';
COMMENT ON FUNCTION morango.dequeue(uuid) IS
    'merge the incoming buffer of a transfer session into the store (one transaction)';

/*
 * A record's conflict history after newest (NULL: none) is put in front of
 * history (jsonb array, newest first; NULL: empty), bounded by
 * morango.max_conflict_entries and morango.max_conflict_bytes: the oldest
 * entries are dropped first, the newest one is always kept (src/history.c).
 */
CREATE FUNCTION morango.conflict_history(newest jsonb, history jsonb)
RETURNS jsonb
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'morango_conflict_history';
COMMENT ON FUNCTION morango.conflict_history(jsonb, jsonb) IS
    'a conflict history with newest in front, bounded in entries and bytes (oldest dropped first)';

/*
 * Session state (src/transfer.c, the one writer of sync and transfer
 * sessions' stages and statuses; doc/protocol.md, "Session states").
 *
 * Open a transfer session (and its sync session) on this side, or find
 * the one that exists: returns its state.  Used by the initiator and, as
 * is_server, by morango.peer_begin().
 */
CREATE FUNCTION morango.transfer_open(sync_session uuid, transfer_session uuid, profile text,
                                      is_server boolean, push boolean, filter text[],
                                      peer text DEFAULT NULL, peer_instance uuid DEFAULT NULL,
                                      direction text DEFAULT NULL)
RETURNS jsonb
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'morango_transfer_open_sql';
COMMENT ON FUNCTION morango.transfer_open(uuid, uuid, text, boolean, boolean, text[], text, uuid, text) IS
    'open or find a transfer session and its sync session on this side; returns its state';

/*
 * Close a transfer session on this side: empty its buffer, mark it done.
 */
CREATE FUNCTION morango.transfer_close(transfer_session uuid, error text DEFAULT NULL)
RETURNS void
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'morango_transfer_close_sql';
COMMENT ON FUNCTION morango.transfer_close(uuid, text) IS
    'close a transfer session on this side (completed, or errored with error); its buffers are emptied';

/*
 * Close, as errored, transfer and sync sessions idle for longer than
 * older_than, emptying their buffers (and any buffer a closed transfer
 * still holds); returns the number of transfer sessions expired.
 */
CREATE FUNCTION morango.sessions_expire(older_than interval)
RETURNS bigint
LANGUAGE C STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'morango_sessions_expire_sql';

/*
 * A sync session that stops without ending: errored (a failed attempt) or
 * cancelled (morango.sync_cancel()); it stays active, so that a later sync
 * resumes it.
 */
CREATE FUNCTION morango.sync_session_interrupt(sync_session uuid, status text, error text)
RETURNS void
LANGUAGE C STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'morango_sync_session_interrupt_sql';

/*
 * Move a transfer session to stage and status through the one checked
 * transition function (src/transfer.c): a later stage, or the same stage,
 * of an active transfer; anything else is refused.  For administrators.
 */
CREATE FUNCTION morango.transfer_transition(transfer_session uuid, stage text, status text)
RETURNS void
LANGUAGE C STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'morango_transfer_transition_sql';

/* The stages and statuses as the C code knows them (a test compares them with the tables). */
CREATE FUNCTION morango.session_states(OUT kind text, OUT "position" integer, OUT name text)
RETURNS SETOF record
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'morango_session_states';

/*
 * Expire transfer and sync sessions idle for longer than older_than: their
 * buffers are emptied and they are closed as errored.  Then forget closed
 * sync sessions that ended longer ago than keep, with their transfer
 * sessions and certificate bindings (and bindings of sessions that never
 * began), so that the sync history of a hub does not grow for ever.
 * Returns the number of transfer sessions expired.
 */
CREATE FUNCTION morango.cleanup(older_than interval DEFAULT '6 hours', keep interval DEFAULT '30 days')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    n := morango.sessions_expire(older_than);
    -- history: closed sessions ended before keep (transfer sessions go by
    -- their foreign key), and certificate bindings nothing uses any more
    WITH old AS (
        DELETE FROM morango.sync_sessions s
        WHERE NOT s.active AND s.ended_at < now() - keep
          AND NOT EXISTS (SELECT 1 FROM morango.transfer_sessions t
                          WHERE t.sync_session_id = s.id AND t.active)
        RETURNING s.id
    )
    DELETE FROM morango.session_certificates c
    WHERE c.sync_session_id IN (SELECT id FROM old)
       OR (c.authenticated_at < now() - keep
           AND NOT EXISTS (SELECT 1 FROM morango.sync_sessions s WHERE s.id = c.sync_session_id));
    RETURN n;
END
$$;
COMMENT ON FUNCTION morango.cleanup(interval, interval) IS
    'close sync and transfer sessions idle for longer than older_than, empty their buffers, and forget sessions that ended before keep';

-- -------------------------------------------------------------------------
-- The peer side of the protocol (doc/protocol.md).  A peer connects as a
-- role that may call these functions and nothing else; they run as the
-- extension owner and check everything they receive.
-- -------------------------------------------------------------------------

CREATE FUNCTION morango.protocol_version()
RETURNS integer
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 'morango_protocol_version';
COMMENT ON FUNCTION morango.protocol_version() IS 'version of the sync protocol this extension speaks';

/*
 * The role a peer API call acts for: the login role, or the one it SET ROLE
 * to (inside the SECURITY DEFINER peer functions, session_user ignores SET
 * ROLE and current_user is the extension owner).
 */
CREATE FUNCTION morango.peer_role()
RETURNS name
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'morango_peer_role';

/* this database's peer API limits, from its superuser-only settings */
CREATE FUNCTION morango.peer_limits()
RETURNS jsonb
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'morango_peer_limits';

/*
 * The options a client sends in peer_begin, checked: a json object of at
 * most 64 kB; of its keys (others are ignored, for later versions)
 * max_chunk_records (1 to 100000) and max_chunk_bytes (1024 to 268435456),
 * integers, are the client's chunk limits.  Returns those limits.
 */
CREATE FUNCTION morango.peer_options_check(options jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result jsonb := '{}';
    k      text;
    lo     numeric;
    hi     numeric;
    v      jsonb;
BEGIN
    IF jsonb_typeof(options) IS DISTINCT FROM 'object' OR pg_column_size(options) > 65536 THEN
        RAISE EXCEPTION 'peer_begin: options must be a json object of at most 64 kB'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR k, lo, hi IN VALUES ('max_chunk_records', 1, 100000), ('max_chunk_bytes', 1024, 268435456) LOOP
        v := options->k;
        CONTINUE WHEN v IS NULL;
        IF jsonb_typeof(v) <> 'number' OR v::text::numeric NOT BETWEEN lo AND hi
           OR v::text::numeric <> trunc(v::text::numeric) THEN
            RAISE EXCEPTION 'peer_begin: option % must be an integer from % to %', k, lo, hi
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        result := result || jsonb_build_object(k, v::text::numeric);
    END LOOP;
    RETURN result;
END
$$;

/*
 * The peer API proper (src/peer.c): thin C entry points that check their
 * caller (morango_peer_guard_check, the calling role's ownership of the
 * sessions named) and their arguments, then run the protocol's steps
 * (src/protocol.c), the same the initiator runs.
 *
 * peer_begin: open (or resume) a transfer session on the server side.  The
 * client sends its FSIC and its options (its chunk limits); for a pull the
 * server serializes, computes its FSIC and queues; for a push it computes
 * its receiver FSIC.  Returns the server's state, FSIC, identity and
 * limits.  The sync session and the transfer session belong to the role
 * that opens them; open ones are counted per role and in all.
 */
CREATE FUNCTION morango.peer_begin(protocol integer, sync_session uuid, transfer_session uuid,
                                   profile text, push boolean, filter text[],
                                   client_instance uuid, client_fsic jsonb, options jsonb)
RETURNS jsonb
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'morango_peer_begin';
COMMENT ON FUNCTION morango.peer_begin(integer, uuid, uuid, text, boolean, text[], uuid, jsonb, jsonb) IS
    'peer API: open or resume a transfer session on this (server) side';

/*
 * peer_begin as protocol version 2 called it (without options): refused,
 * naming the version this database speaks, so that an older peer gets a
 * clear error rather than "function does not exist".
 */
CREATE FUNCTION morango.peer_begin(protocol integer, sync_session uuid, transfer_session uuid,
                                   profile text, push boolean, filter text[],
                                   client_instance uuid, client_fsic jsonb)
RETURNS jsonb
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'morango_peer_begin_v2';
COMMENT ON FUNCTION morango.peer_begin(integer, uuid, uuid, text, boolean, text[], uuid, jsonb) IS
    'peer API of protocol version 2: refused with the version this database speaks';

/*
 * The next chunk of a pull: the records after after_seq, at most
 * max_records, and within the lower of the client's limits (announced in
 * peer_begin) and ours.
 */
CREATE FUNCTION morango.peer_pull_chunk(transfer_session uuid, after_seq bigint, max_records integer)
RETURNS jsonb
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'morango_peer_pull_chunk';
COMMENT ON FUNCTION morango.peer_pull_chunk(uuid, bigint, integer) IS
    'peer API: the next chunk of a pull, packed';

CREATE FUNCTION morango.peer_push_chunk(transfer_session uuid, packed text)
RETURNS bigint
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'morango_peer_push_chunk';
COMMENT ON FUNCTION morango.peer_push_chunk(uuid, text) IS
    'peer API: a packed chunk of a push (validated, all or nothing)';

/*
 * Finish a transfer on the server side: for a push, check that all
 * records_total records arrived, dequeue and deserialize; for a pull,
 * drop the outgoing buffer.  Closes the transfer session.
 */
CREATE FUNCTION morango.peer_finish(transfer_session uuid, records_total bigint)
RETURNS jsonb
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'morango_peer_finish';
COMMENT ON FUNCTION morango.peer_finish(uuid, bigint) IS
    'peer API: finish a transfer (a push is dequeued and deserialized here)';

/*
 * Close a sync session on the server side, and any of its transfer
 * sessions still open (as errored, their buffers emptied at once).  An
 * unknown session is nothing to close; another role's is refused.
 */
CREATE FUNCTION morango.peer_close(sync_session uuid, error text DEFAULT NULL)
RETURNS void
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'morango_peer_close';
COMMENT ON FUNCTION morango.peer_close(uuid, text) IS 'peer API: close a sync session on this side';

/*
 * Let role call the peer API (and nothing else of morango): what a peer
 * that syncs with this database connects as.
 */
CREATE FUNCTION morango.grant_peer(role regrole)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA morango TO %s', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION morango.protocol_version(), '
                   'morango.peer_begin(integer, uuid, uuid, text, boolean, text[], uuid, jsonb, jsonb), '
                   'morango.peer_begin(integer, uuid, uuid, text, boolean, text[], uuid, jsonb), '
                   'morango.peer_pull_chunk(uuid, bigint, integer), '
                   'morango.peer_push_chunk(uuid, text), '
                   'morango.peer_finish(uuid, bigint), '
                   'morango.peer_close(uuid, text), '
                   'morango.peer_nonce(), '
                   'morango.peer_authenticate(uuid, text, jsonb, uuid, uuid, text), '
                   'morango.peer_revocations(uuid, jsonb), '
                   'morango.peer_certificate_sign(uuid, text, jsonb, text) TO %s', role);
END
$$;
COMMENT ON FUNCTION morango.grant_peer(regrole) IS
    'let a role (the one peers connect as) call the peer API';

/*
 * Run one whole sync with a peer (a foreign server of the morango wrapper,
 * or a libpq connection string): pull, push or both (pull then push).
 * Runs in a background worker that commits as it goes, so an interrupted
 * sync resumes where it stopped when called again.  Returns the sync
 * session id; raises the sync's error if it failed.
 */
CREATE FUNCTION morango.sync(peer text, profile text, filter text[] DEFAULT NULL,
                             direction text DEFAULT 'both', chunk_size integer DEFAULT NULL,
                             certificate uuid DEFAULT NULL, peer_certificate uuid DEFAULT NULL)
RETURNS uuid
LANGUAGE C
AS 'MODULE_PATHNAME', 'morango_sync';
COMMENT ON FUNCTION morango.sync(text, text, text[], text, integer, uuid, uuid) IS
    'sync with a peer (pull, push or both) and return the sync session id';

-- -------------------------------------------------------------------------
-- Background syncs, their status, and scheduling (doc/design.md, "Worker")
-- -------------------------------------------------------------------------

/*
 * Per peer, profile, filter and direction (as this database initiates):
 * how the syncs went, and when a background sync tries again.
 */
CREATE TABLE morango.peer_status (
    peer                    text NOT NULL,
    profile                 text NOT NULL,
    filter                  text[] NOT NULL,
    direction               text NOT NULL,
    last_attempt_at         timestamptz,
    last_success_at         timestamptz,
    last_failure_at         timestamptz,
    consecutive_failures    integer NOT NULL DEFAULT 0,
    next_retry_at           timestamptz,
    last_error              text,
    running_session         uuid
);
-- the filter by its key: a filter may be longer than a btree entry can be
CREATE UNIQUE INDEX peer_status_key
    ON morango.peer_status (peer, profile, morango.filter_key(filter), direction);
SELECT pg_catalog.pg_extension_config_dump('morango.peer_status', '');

CREATE FUNCTION morango.sync_start(peer text, profile text, filter text[] DEFAULT NULL,
                                   direction text DEFAULT 'both', chunk_size integer DEFAULT NULL,
                                   certificate uuid DEFAULT NULL, peer_certificate uuid DEFAULT NULL)
RETURNS uuid
LANGUAGE C
AS 'MODULE_PATHNAME', 'morango_sync_start';
COMMENT ON FUNCTION morango.sync_start(text, text, text[], text, integer, uuid, uuid) IS
    'start a sync in a background worker (with retries) and return its session id at once';

/* a sync session's worker, if one runs it now */
CREATE FUNCTION morango.sync_worker(sync_session uuid)
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.pid FROM morango.sync_sessions s
    JOIN pg_stat_get_activity(s.process_id) a ON a.pid = s.process_id
    WHERE s.id = sync_session AND NOT s.is_server AND a.backend_type = 'morango sync'
$$;

/*
 * Wait until the sync has finished (no worker runs it any more), at most
 * for timeout (NULL: for ever); return its status: 'completed', 'errored',
 * 'cancelled', or 'running' if the timeout came first.
 */
CREATE FUNCTION morango.sync_wait(sync_session uuid, timeout interval DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout;
    st       text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM morango.sync_sessions WHERE id = sync_session) THEN
        RAISE EXCEPTION 'sync session % does not exist', sync_session
            USING ERRCODE = 'undefined_object';
    END IF;
    LOOP
        PERFORM pg_stat_clear_snapshot();
        IF morango.sync_worker(sync_session) IS NULL THEN
            SELECT status INTO st FROM morango.sync_sessions WHERE id = sync_session;
            RETURN st;
        END IF;
        IF deadline IS NOT NULL AND clock_timestamp() >= deadline THEN
            RETURN 'running';
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
COMMENT ON FUNCTION morango.sync_wait(uuid, interval) IS
    'wait for a sync to finish (at most timeout) and return its status';

/*
 * Stop a running sync: its worker is terminated (which cancels the peer's
 * query), the session stays open so that a later sync resumes it.  Returns
 * false if no worker ran it.
 */
CREATE FUNCTION morango.sync_cancel(sync_session uuid)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w integer := morango.sync_worker(sync_session);
BEGIN
    IF w IS NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_terminate_backend(w, 10000);
    PERFORM morango.sync_session_interrupt(sync_session, 'cancelled', 'cancelled by morango.sync_cancel()');
    UPDATE morango.peer_status SET running_session = NULL WHERE running_session = sync_session;
    RETURN true;
END
$$;
COMMENT ON FUNCTION morango.sync_cancel(uuid) IS
    'stop a running sync (the peer''s query is cancelled; the sync resumes when started again)';

/* Every sync this database initiated or served, running and past. */
CREATE VIEW morango.syncs AS
SELECT s.id, s.peer, s.profile, s.filter, s.direction, s.is_server,
       CASE WHEN s.is_server THEN s.status
            WHEN morango.sync_worker(s.id) IS NOT NULL THEN 'running'
            WHEN s.status = 'started' THEN 'interrupted'
            ELSE s.status END AS status,
       t.stage, t.records_total, t.records_transferred, t.records_dequeued, t.conflicts,
       t.bytes_sent, t.bytes_received,
       s.started_at, s.ended_at, COALESCE(s.ended_at, now()) - s.started_at AS duration,
       COALESCE(s.last_error, t.last_error) AS last_error
FROM morango.sync_sessions s
LEFT JOIN LATERAL (
    SELECT (array_agg(x.stage ORDER BY x.active DESC, x.push DESC))[1] AS stage,
           sum(x.records_total) AS records_total,
           sum(x.records_transferred) AS records_transferred,
           sum(x.records_dequeued) AS records_dequeued,
           sum(x.conflicts) AS conflicts,
           sum(x.bytes_sent) AS bytes_sent, sum(x.bytes_received) AS bytes_received,
           (array_agg(x.last_error) FILTER (WHERE x.last_error IS NOT NULL))[1] AS last_error
    FROM morango.transfer_sessions x WHERE x.sync_session_id = s.id
) AS t ON true;
COMMENT ON VIEW morango.syncs IS 'every sync, running and past, with its progress';

/* Per peer: last success, last failure, consecutive failures, next retry. */
CREATE VIEW morango.peers AS
SELECT p.peer, p.profile, p.filter, p.direction, p.last_attempt_at, p.last_success_at,
       p.last_failure_at, p.consecutive_failures, p.next_retry_at, p.last_error,
       CASE WHEN morango.sync_worker(p.running_session) IS NOT NULL THEN p.running_session END
           AS running_session
FROM morango.peer_status p;
COMMENT ON VIEW morango.peers IS 'per peer: how its syncs went and when the next retry is';

CREATE FUNCTION morango.peer_has_secret(peer text)
RETURNS boolean
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'morango_peer_has_secret_sql';
COMMENT ON FUNCTION morango.peer_has_secret(text) IS
    'does the peer''s connection string carry a password (any form libpq reads: keyword=value, URI, dbname)?';

/*
 * Schedule a recurring background sync with pg_cron: the job only calls
 * morango.sync_start().  pg_cron must be installed in this database
 * (cron.database_name).  Returns the pg_cron job id.
 */
CREATE FUNCTION morango.schedule(peer text, cron text, profile text, filter text[] DEFAULT NULL,
                                 direction text DEFAULT 'both', certificate uuid DEFAULT NULL,
                                 peer_certificate uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cmd  text := format('SELECT morango.sync_start(%L, %L, %L::text[], %L, NULL, %L::uuid, %L::uuid)',
                        peer, profile, filter, direction, certificate, peer_certificate);
    name text := format('morango sync %s %s %s %s', peer, profile,
                        COALESCE(filter::text, '{}'), direction);
BEGIN
    -- the job's command is stored in cron.job and logged by pg_cron: no
    -- secrets in it (libpq's own parser, so URIs and dbname= count too);
    -- and no error here shows the peer or the command
    IF morango.peer_has_secret(peer) THEN
        RAISE EXCEPTION 'a scheduled peer must not carry a password in its connection string'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the peer with CREATE SERVER ... FOREIGN DATA WRAPPER morango and keep the password in its user mapping.';
    END IF;
    PERFORM morango.check_filter(filter);
    IF to_regprocedure('cron.schedule_in_database(text,text,text,text,text,boolean)') IS NULL THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING ERRCODE = 'undefined_function',
                  DETAIL = 'morango.schedule() registers a pg_cron job that calls morango.sync_start().',
                  HINT = format('Add pg_cron to shared_preload_libraries, set cron.database_name = %L, '
                                'restart, and CREATE EXTENSION pg_cron here; or, from the cron database, '
                                'schedule with cron.schedule_in_database(..., %L) a job that runs '
                                'SELECT morango.sync_start(...) with these arguments.',
                                current_database(), current_database());
    END IF;
    RETURN cron.schedule_in_database(name, cron, cmd, current_database());
END
$$;
COMMENT ON FUNCTION morango.schedule(text, text, text, text[], text, uuid, uuid) IS
    'schedule a recurring background sync through pg_cron; returns the job id';

CREATE FUNCTION morango.unschedule(peer text, profile text, filter text[] DEFAULT NULL,
                                   direction text DEFAULT 'both')
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regprocedure('cron.unschedule(name)') IS NULL THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING ERRCODE = 'undefined_function';
    END IF;
    RETURN cron.unschedule(format('morango sync %s %s %s %s', peer, profile,
                                  COALESCE(filter::text, '{}'), direction)::name);
END
$$;
COMMENT ON FUNCTION morango.unschedule(text, text, text[], text) IS
    'remove the pg_cron job of morango.schedule()';

-- -------------------------------------------------------------------------
-- Certificates and scopes (doc/design.md §10)
--
-- A certificate grants a public key a scope: read and write partition
-- filters made from a scope definition's templates and the certificate's
-- parameters.  A root certificate is self-signed and its filters must start
-- with its own id (a hash of its key), so a forged root only ever covers its
-- own namespace; every other certificate is signed by its parent's key and
-- its scope lies within its parent's.  Private keys live in
-- morango.certificate_keys, readable by the extension's owner alone, and no
-- function returns them.
-- -------------------------------------------------------------------------

CREATE TABLE morango.scope_definitions (
    id                          text PRIMARY KEY,
    profile                     text NOT NULL,
    version                     integer NOT NULL DEFAULT 1,
    primary_scope_param_key     text NOT NULL,
    description                 text NOT NULL DEFAULT '',
    read_filter_template        text NOT NULL DEFAULT '',
    write_filter_template       text NOT NULL DEFAULT '',
    read_write_filter_template  text NOT NULL DEFAULT '',
    CHECK (id <> '' AND profile <> '' AND primary_scope_param_key <> '')
);
COMMENT ON TABLE morango.scope_definitions IS
    'scope templates: read = read_write + read lines, write = read_write + write lines, ${param} placeholders';

CREATE TABLE morango.certificates (
    id                  uuid PRIMARY KEY,
    parent_id           uuid REFERENCES morango.certificates (id),
    profile             text NOT NULL,
    scope_definition_id text NOT NULL,
    scope_version       integer NOT NULL,
    scope_params        jsonb NOT NULL,
    public_key          text NOT NULL,
    salt                text NOT NULL DEFAULT '',
    serialized          text NOT NULL,   -- the signed bytes, kept verbatim
    signature           text NOT NULL,
    read_filter         text[] NOT NULL, -- the scope, expanded when verified
    write_filter        text[] NOT NULL,
    expires_at          timestamptz,     -- "expires" of serialized; NULL: never
    created_at          timestamptz NOT NULL DEFAULT now(),
    stored_by           name             -- the peer role that stored it (quota); NULL: stored here
);
CREATE INDEX ON morango.certificates (parent_id);
CREATE INDEX ON morango.certificates (stored_by) WHERE stored_by IS NOT NULL;
COMMENT ON TABLE morango.certificates IS
    'verified certificates, root first; serialized + signature are what travels';

CREATE TABLE morango.certificate_keys (
    certificate_id  uuid PRIMARY KEY REFERENCES morango.certificates (id) ON DELETE CASCADE,
    private_key     text NOT NULL
);
COMMENT ON TABLE morango.certificate_keys IS
    'private keys of the certificates this database holds; readable by the extension owner only';

CREATE TABLE morango.nonces (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE morango.nonces IS 'single-use handshake nonces, valid for 60 seconds';

/*
 * Revocations: a signed statement by a strict ancestor of a certificate
 * that the certificate (and so everything under it) may no longer be used.
 * The revoked certificate need not be known here (revocations are relayed
 * through databases that never saw it): a revocation counts once the
 * certificate is known and its signer is one of its strict ancestors.
 */
CREATE TABLE morango.certificate_revocations (
    certificate_id  uuid NOT NULL,        -- the revoked certificate
    signer_id       uuid NOT NULL REFERENCES morango.certificates (id) ON DELETE CASCADE,
    root_id         uuid NOT NULL,        -- the signer's root: revocations travel per root
    revoked_at      timestamptz NOT NULL,
    reason          text NOT NULL,
    serialized      text NOT NULL,        -- the signed bytes, kept verbatim
    signature       text NOT NULL,
    stored_by       name,                 -- the peer role that stored it (quota); NULL: stored here
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (certificate_id, signer_id)
);
CREATE INDEX ON morango.certificate_revocations (root_id);
CREATE INDEX ON morango.certificate_revocations (stored_by) WHERE stored_by IS NOT NULL;
COMMENT ON TABLE morango.certificate_revocations IS
    'signed revocations of certificates (morango.revoke_certificate(), or received in syncs)';

SELECT pg_catalog.pg_extension_config_dump('morango.scope_definitions', '');
SELECT pg_catalog.pg_extension_config_dump('morango.certificates', '');
SELECT pg_catalog.pg_extension_config_dump('morango.certificate_keys', '');
SELECT pg_catalog.pg_extension_config_dump('morango.certificate_revocations', '');

CREATE FUNCTION morango.key_generate(OUT private_key text, OUT public_key text)
RETURNS record
AS 'MODULE_PATHNAME', 'morango_key_generate_sql'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION morango.key_generate() IS 'a new RSA-2048 key pair (internal)';

CREATE FUNCTION morango.sign(private_key text, message text)
RETURNS text
AS 'MODULE_PATHNAME', 'morango_sign_sql'
LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION morango.sign(text, text) IS
    'RSASSA-PKCS1-v1_5/SHA-256 signature of the message, base64 (internal)';

CREATE FUNCTION morango.verify(public_key text, message text, signature text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'morango_verify_sql'
LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION morango.verify(text, text, text) IS
    'does the signature sign the message under the public key?';

CREATE FUNCTION morango.public_key(key text)
RETURNS text
AS 'MODULE_PATHNAME', 'morango_public_key_sql'
LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION morango.public_key(text) IS
    'the canonical public key string (base64 PKCS#1) of a public key in any accepted form';

CREATE FUNCTION morango.scope_filter(templates text[], params jsonb)
RETURNS text[]
AS 'MODULE_PATHNAME', 'morango_scope_filter_sql'
LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION morango.scope_filter(text[], jsonb) IS
    'the partition filter of scope templates expanded with parameters';

CREATE FUNCTION morango.filter_within(a text[], b text[])
RETURNS boolean
AS 'MODULE_PATHNAME', 'morango_filter_within_sql'
LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION morango.filter_within(text[], text[]) IS
    'is every partition under filter a also under filter b?';

-- the id rule of certificates: first 32 hex digits of sha256
CREATE FUNCTION morango.sha2_uuid(value text)
RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
RETURN substr(encode(sha256(convert_to(value, 'UTF8')), 'hex'), 1, 32)::uuid;

/*
 * morango.utc_text(t) -> text: t as ISO 8601 UTC to the second,
 * "2027-01-01T00:00:00Z", the form expiries and revocation times travel in
 * (and are shown in messages), whatever the session's TimeZone.
 */
CREATE FUNCTION morango.utc_text(t timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
RETURN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');

/*
 * morango.utc_parse(text) -> timestamptz: the inverse of utc_text(); NULL
 * unless the text is exactly in that form.
 */
CREATE FUNCTION morango.utc_parse(value text)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t timestamptz;
BEGIN
    IF value !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$' THEN
        RETURN NULL;
    END IF;
    t := value::timestamptz;
    RETURN CASE WHEN morango.utc_text(t) = value THEN t END;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
    RETURN NULL;
END
$$;

/*
 * The signed form of a certificate: Morango's JSON, in its key order, with
 * ids as 32 hex digits and the parameters as a JSON string.  A certificate
 * with an expiry has one more key at the end, "expires" (utc_text());
 * without one the bytes are exactly Morango's.  Morango's deserialize reads
 * the keys it knows and ignores others, so Morango devices still store and
 * verify such certificates (but do not enforce the expiry).
 */
CREATE FUNCTION morango.certificate_serialize(id uuid, parent_id uuid, profile text, salt text,
                                              scope_definition_id text, scope_version integer,
                                              scope_params jsonb, public_key text,
                                              expires timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN format('{"id": %s, "parent_id": %s, "profile": %s, "salt": %s, '
              '"scope_definition_id": %s, "scope_version": %s, "scope_params": %s, '
              '"public_key_string": %s%s}',
              to_json(replace(id::text, '-', '')),
              COALESCE(to_json(replace(parent_id::text, '-', ''))::text, 'null'),
              to_json(profile), to_json(salt), to_json(scope_definition_id),
              scope_version, to_json(scope_params::text), to_json(public_key),
              ', "expires": ' || to_json(morango.utc_text(expires)));

/*
 * morango.certificate_check(serialized, signature) -> morango.certificates
 *
 * Verify one certificate against what this database already trusts: its id
 * is the hash of its key, profile and salt; its scope definition is known;
 * a root signs itself and its filters start with its id; a child's parent
 * is stored here, signed it, has the same profile and a scope covering the
 * child's and that does not expire after it (nor never, under a parent
 * that expires).  Whether a certificate has expired or was revoked is not
 * checked here but where it is used (certificate_assert_usable()).
 * Returns the row to store; raises invalid_authorization_specification
 * naming the rule broken.  Stores nothing.
 */
CREATE FUNCTION morango.certificate_check(serialized text, signature text)
RETURNS morango.certificates
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    doc     jsonb;
    c       morango.certificates;
    parent  morango.certificates;
    sd      morango.scope_definitions;
    hexid   text;
BEGIN
    IF serialized IS NULL OR signature IS NULL
       OR octet_length(serialized) > 65536 OR octet_length(signature) > 4096 THEN
        RAISE EXCEPTION 'a certificate needs its serialized form and a signature of bounded size'
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    BEGIN
        doc := serialized::jsonb;
        IF jsonb_typeof(doc) <> 'object'
           OR jsonb_typeof(doc->'id') IS DISTINCT FROM 'string'
           OR COALESCE(jsonb_typeof(doc->'parent_id'), 'missing') NOT IN ('string', 'null')
           OR jsonb_typeof(doc->'profile') IS DISTINCT FROM 'string'
           OR jsonb_typeof(doc->'salt') IS DISTINCT FROM 'string'
           OR jsonb_typeof(doc->'scope_definition_id') IS DISTINCT FROM 'string'
           OR jsonb_typeof(doc->'scope_version') IS DISTINCT FROM 'number'
           OR jsonb_typeof(doc->'scope_params') IS DISTINCT FROM 'string'
           OR jsonb_typeof(doc->'public_key_string') IS DISTINCT FROM 'string'
           OR COALESCE(jsonb_typeof(doc->'expires'), 'string') <> 'string' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_text_representation';
        END IF;
        c.expires_at := morango.utc_parse(doc->>'expires');
        IF doc ? 'expires' AND c.expires_at IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_text_representation';
        END IF;
        c.id := (doc->>'id')::uuid;
        c.parent_id := (doc->>'parent_id')::uuid;
        c.scope_version := (doc->>'scope_version')::integer;
        c.scope_params := (doc->>'scope_params')::jsonb;
        IF jsonb_typeof(c.scope_params) <> 'object' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_text_representation';
        END IF;
    EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range
                   OR invalid_parameter_value THEN
        RAISE EXCEPTION 'malformed certificate'
            USING ERRCODE = 'invalid_authorization_specification',
                  DETAIL = 'A certificate is a JSON object with id, parent_id, profile, salt, '
                           'scope_definition_id, scope_version, scope_params and public_key_string, '
                           'and optionally expires (YYYY-MM-DDTHH:MM:SSZ).';
    END;
    c.profile := doc->>'profile';
    c.salt := doc->>'salt';
    c.scope_definition_id := doc->>'scope_definition_id';
    c.public_key := doc->>'public_key_string';
    c.serialized := serialized;
    c.signature := signature;
    c.created_at := now();
    hexid := replace(c.id::text, '-', '');

    IF c.id IS DISTINCT FROM morango.sha2_uuid(concat_ws(':', NULLIF(c.public_key, ''),
                                                              NULLIF(c.profile, ''),
                                                              NULLIF(c.salt, ''))) THEN
        RAISE EXCEPTION 'certificate % has an invalid id', c.id
            USING ERRCODE = 'invalid_authorization_specification',
                  DETAIL = 'The id must be the hash of the public key, the profile and the salt.';
    END IF;

    SELECT * INTO sd FROM morango.scope_definitions WHERE id = c.scope_definition_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'certificate % names unknown scope definition "%"', c.id, c.scope_definition_id
            USING ERRCODE = 'invalid_authorization_specification',
                  HINT = 'Both sides need the same rows in morango.scope_definitions.';
    END IF;
    IF sd.profile <> c.profile THEN
        RAISE EXCEPTION 'certificate % has profile "%" but its scope definition is for "%"',
            c.id, c.profile, sd.profile USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    c.read_filter := morango.scope_filter(ARRAY[sd.read_write_filter_template,
                                                sd.read_filter_template], c.scope_params);
    c.write_filter := morango.scope_filter(ARRAY[sd.read_write_filter_template,
                                                 sd.write_filter_template], c.scope_params);

    IF c.parent_id IS NULL THEN
        IF NOT morango.verify(c.public_key, serialized, signature) THEN
            RAISE EXCEPTION 'certificate % has an invalid signature', c.id
                USING ERRCODE = 'invalid_authorization_specification',
                      DETAIL = 'A root certificate must be signed by its own key.';
        END IF;
        IF EXISTS (SELECT 1 FROM unnest(c.read_filter || c.write_filter) f
                   WHERE NOT starts_with(f, hexid)) THEN
            RAISE EXCEPTION 'root certificate % has a scope outside its own id', c.id
                USING ERRCODE = 'invalid_authorization_specification',
                      DETAIL = 'Every filter of a root certificate must start with its id.';
        END IF;
    ELSE
        SELECT * INTO parent FROM morango.certificates WHERE id = c.parent_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the parent % of certificate % is unknown', c.parent_id, c.id
                USING ERRCODE = 'invalid_authorization_specification',
                      HINT = 'Send the whole chain, root first.';
        END IF;
        IF NOT morango.verify(parent.public_key, serialized, signature) THEN
            RAISE EXCEPTION 'certificate % has an invalid signature', c.id
                USING ERRCODE = 'invalid_authorization_specification',
                      DETAIL = format('It must be signed by the key of its parent %s.', c.parent_id);
        END IF;
        IF parent.profile <> c.profile THEN
            RAISE EXCEPTION 'certificate % has profile "%" but its parent has "%"',
                c.id, c.profile, parent.profile USING ERRCODE = 'invalid_authorization_specification';
        END IF;
        IF NOT morango.filter_within(c.read_filter, parent.read_filter)
           OR NOT morango.filter_within(c.write_filter, parent.write_filter) THEN
            RAISE EXCEPTION 'certificate % is not within the scope of its parent %', c.id, c.parent_id
                USING ERRCODE = 'invalid_authorization_specification',
                      DETAIL = format('Read %s, write %s; the parent reads %s and writes %s.',
                                      c.read_filter, c.write_filter,
                                      parent.read_filter, parent.write_filter);
        END IF;
        IF parent.expires_at < COALESCE(c.expires_at, 'infinity') THEN
            RAISE EXCEPTION 'certificate % outlives its parent %', c.id, c.parent_id
                USING ERRCODE = 'invalid_authorization_specification',
                      DETAIL = format('The parent expires at %s, the certificate %s.',
                                      morango.utc_text(parent.expires_at),
                                      COALESCE('at ' || morango.utc_text(c.expires_at), 'never')),
                      HINT = 'A certificate must expire no later than its parent.';
        END IF;
    END IF;
    RETURN c;
END
$$;

/*
 * morango.certificate_ancestry(certificate) -> (id, parent_id, depth): a
 * stored certificate (depth 0) and its ancestors up to the root (the row
 * whose parent_id is NULL), each with its distance from the certificate.
 * No rows for an unknown certificate.
 */
CREATE FUNCTION morango.certificate_ancestry(certificate uuid)
RETURNS TABLE (id uuid, parent_id uuid, depth integer)
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE up AS (
        SELECT c.id, c.parent_id, 0 AS depth FROM morango.certificates c WHERE c.id = certificate
        UNION ALL
        SELECT p.id, p.parent_id, up.depth + 1
        FROM morango.certificates p JOIN up ON p.id = up.parent_id
        WHERE up.depth < 1000
    )
    SELECT id, parent_id, depth FROM up
$$;

/*
 * morango.certificate_root(certificate) -> uuid: the root of a stored
 * certificate's chain (NULL for an unknown certificate).
 */
CREATE FUNCTION morango.certificate_root(certificate uuid)
RETURNS uuid
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
RETURN (SELECT a.id FROM morango.certificate_ancestry(certificate) a WHERE a.parent_id IS NULL);

/*
 * morango.certificate_problem(certificate) -> (problem, detail)
 *
 * Why a stored certificate may not be used, or NULLs when it may: it or
 * one of its ancestors has expired, or has a revocation signed by one of
 * its own strict ancestors (a revocation signed by anyone else counts for
 * nothing).  The certificate itself is named first.
 */
CREATE FUNCTION morango.certificate_problem(certificate uuid, OUT problem text, OUT detail text)
RETURNS record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH up AS (
        SELECT a.id, a.depth, c.expires_at
        FROM morango.certificate_ancestry(certificate) a JOIN morango.certificates c ON c.id = a.id
    ), bad AS (
        SELECT u.depth, u.id, 'expired' AS what,
               format('%s expired at %s.', u.id, morango.utc_text(u.expires_at)) AS why
        FROM up u WHERE u.expires_at <= now()
        UNION ALL
        SELECT u.depth, u.id, 'been revoked',
               format('%s was revoked by %s at %s%s', u.id, r.signer_id, morango.utc_text(r.revoked_at),
                      CASE WHEN r.reason = '' THEN '.' ELSE ': ' || r.reason END)
        FROM up u
        JOIN morango.certificate_revocations r ON r.certificate_id = u.id
        JOIN up a ON a.id = r.signer_id AND a.depth > u.depth
    )
    SELECT CASE WHEN depth = 0 THEN format('certificate %s has %s', certificate, what)
                ELSE format('certificate %s cannot be used: its ancestor %s has %s', certificate, id, what)
           END,
           why
    FROM bad ORDER BY depth, what LIMIT 1
$$;

/*
 * morango.certificate_assert_usable(certificate): raise
 * invalid_authorization_specification when the certificate has expired or
 * been revoked, or an ancestor has (certificate_problem()).  Every use of a
 * certificate goes through this: the handshake on both sides, the scope
 * check of every transfer, signing a child, rotating.
 */
CREATE FUNCTION morango.certificate_assert_usable(certificate uuid)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
BEGIN
    SELECT * INTO p FROM morango.certificate_problem(certificate);
    IF p.problem IS NOT NULL THEN
        RAISE EXCEPTION '%', p.problem
            USING ERRCODE = 'invalid_authorization_specification', DETAIL = p.detail;
    END IF;
END
$$;

/*
 * morango.scope_definition_get(id, params): the scope definition, raising
 * when it does not exist or the parameters are not a JSON object.
 */
CREATE FUNCTION morango.scope_definition_get(scope_definition text, params jsonb)
RETURNS morango.scope_definitions
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sd  morango.scope_definitions;
BEGIN
    SELECT * INTO sd FROM morango.scope_definitions WHERE id = scope_definition;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'scope definition "%" does not exist', scope_definition
            USING ERRCODE = 'undefined_object';
    END IF;
    IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
        RAISE EXCEPTION 'scope parameters must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN sd;
END
$$;

/*
 * morango.private_key(certificate, hint) -> text: the private key of one of
 * our certificates, raising (with `hint`, if given) when this database does
 * not hold it.  Internal: never granted, never returned by the API.
 */
CREATE FUNCTION morango.private_key(certificate uuid, hint text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
BEGIN
    SELECT private_key INTO k FROM morango.certificate_keys WHERE certificate_id = certificate;
    IF NOT FOUND AND hint IS NULL THEN
        RAISE EXCEPTION 'this database does not hold the private key of certificate %', certificate
            USING ERRCODE = 'invalid_authorization_specification';
    ELSIF NOT FOUND THEN
        RAISE EXCEPTION 'this database does not hold the private key of certificate %', certificate
            USING ERRCODE = 'invalid_authorization_specification', HINT = hint;
    END IF;
    RETURN k;
END
$$;

/*
 * morango.certificate_add(serialized, signing_key, private_key) -> uuid
 *
 * Sign a new certificate with signing_key, verify it like any received one
 * (certificate_check), store it and, when given, its own private key.
 */
CREATE FUNCTION morango.certificate_add(serialized text, signing_key text, private_key text)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c morango.certificates;
BEGIN
    c := morango.certificate_check(serialized, morango.sign(signing_key, serialized));
    INSERT INTO morango.certificates SELECT (c).*;
    IF private_key IS NOT NULL THEN
        INSERT INTO morango.certificate_keys VALUES (c.id, private_key);
    END IF;
    RETURN c.id;
END
$$;

/*
 * morango.create_root_certificate(scope_definition, params, expires) -> uuid
 *
 * A new key pair and the self-signed certificate over it: the root of a
 * dataset.  The scope's primary parameter is the certificate's own id.
 * With `expires` (kept to the second), the root and so everything under it
 * can no longer be used from then on.
 */
CREATE FUNCTION morango.create_root_certificate(scope_definition text, params jsonb DEFAULT '{}',
                                                expires timestamptz DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sd  morango.scope_definitions;
    kp  record;
    cid uuid;
BEGIN
    sd := morango.scope_definition_get(scope_definition, params);
    kp := morango.key_generate();
    cid := morango.sha2_uuid(kp.public_key || ':' || sd.profile);
    params := params || jsonb_build_object(sd.primary_scope_param_key, replace(cid::text, '-', ''));
    RETURN morango.certificate_add(
        morango.certificate_serialize(cid, NULL, sd.profile, '', sd.id, sd.version, params,
                                      kp.public_key, expires),
        kp.private_key, kp.private_key);
END
$$;

/*
 * morango.issue_certificate(parent, scope_definition, params, public_key,
 *                           expires) -> uuid
 *
 * Sign a child of `parent` (whose private key this database holds, and
 * which has neither expired nor been revoked).  With a public key, the
 * child is for someone else (a signing request); without, a key pair is
 * made here and its private key kept.  Without `expires`, the child
 * expires with its parent (never, if the parent does not); an expiry after
 * the parent's is refused.
 */
CREATE FUNCTION morango.issue_certificate(parent uuid, scope_definition text, params jsonb,
                                          public_key text DEFAULT NULL,
                                          expires timestamptz DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sd      morango.scope_definitions;
    pkey    text;
    kp      record;
    pub     text;
    own     text;           -- the new private key, when made here
    salt    text := replace(gen_random_uuid()::text, '-', '');
    cid     uuid;
BEGIN
    pkey := morango.private_key(parent);
    PERFORM morango.certificate_assert_usable(parent);
    sd := morango.scope_definition_get(scope_definition, params);
    expires := COALESCE(expires, (SELECT c.expires_at FROM morango.certificates c WHERE c.id = parent));
    IF public_key IS NULL THEN
        kp := morango.key_generate();
        pub := kp.public_key;
        own := kp.private_key;
    ELSE
        pub := morango.public_key(public_key);
    END IF;
    cid := morango.sha2_uuid(pub || ':' || sd.profile || ':' || salt);
    RETURN morango.certificate_add(
        morango.certificate_serialize(cid, parent, sd.profile, salt, sd.id, sd.version, params, pub,
                                      expires),
        pkey, own);
END
$$;

/*
 * morango.rotate_certificate(certificate) -> uuid
 *
 * Replace a certificate's key pair: issue a new certificate with the same
 * parent, scope definition and parameters for a new key (this database must
 * hold the parent's private key), drop the old private key, and move
 * signing grants to the new certificate.  The new certificate expires
 * when the old one does.  The old certificate stays known (others may hang
 * under it) but can no longer be used from here.  A root cannot be
 * rotated: its id is the dataset id; an expired or revoked certificate
 * cannot be either (its replacement would undo the revocation).
 */
CREATE FUNCTION morango.rotate_certificate(certificate uuid)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old     morango.certificates;
    fresh   uuid;
BEGIN
    PERFORM morango.private_key(certificate);
    PERFORM morango.certificate_assert_usable(certificate);
    SELECT * INTO old FROM morango.certificates WHERE id = certificate;
    IF old.parent_id IS NULL THEN
        RAISE EXCEPTION 'a root certificate cannot be rotated'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Its id, derived from its key, is the dataset id.';
    END IF;
    PERFORM morango.private_key(old.parent_id,
                                'Ask the holder of the parent again with morango.request_certificate().');
    fresh := morango.issue_certificate(old.parent_id, old.scope_definition_id, old.scope_params,
                                       expires => old.expires_at);
    DELETE FROM morango.certificate_keys WHERE certificate_id = certificate;
    UPDATE morango.certificate_signers SET parent_id = fresh WHERE parent_id = certificate;
    RETURN fresh;
END
$$;

/*
 * morango.certificate_chain(certificate uuid) -> jsonb
 *
 * The chain from the root down to `certificate`, as an array of
 * {"serialized": ..., "signature": ...}: what a peer needs to verify it.
 */
CREATE FUNCTION morango.certificate_chain(certificate uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    chain jsonb;
BEGIN
    SELECT jsonb_agg(jsonb_build_object('serialized', c.serialized, 'signature', c.signature)
                     ORDER BY a.depth DESC)
    INTO chain
    FROM morango.certificate_ancestry(certificate) a JOIN morango.certificates c ON c.id = a.id;
    IF chain IS NULL THEN
        RAISE EXCEPTION 'certificate % does not exist', certificate USING ERRCODE = 'undefined_object';
    END IF;
    RETURN chain;
END
$$;

/*
 * morango.peer_quota_lock(role): serialize, per peer role, the calls that
 * store certificates or revocations for it, so that their quota check
 * (peer_quota_check()) sees the other calls' rows.
 * morango.peer_quota_check(role, what, stored): raise
 * configuration_limit_exceeded when `stored` (the role's rows, counting
 * those about to be stored) is over morango.max_peer_certificates.
 */
CREATE FUNCTION morango.peer_quota_lock(role name)
RETURNS void
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
RETURN pg_advisory_xact_lock(hashtext('morango peer quota'), hashtext(role));

CREATE FUNCTION morango.peer_quota_check(role name, what text, stored bigint)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF stored > morango.max_peer_certificates() THEN
        RAISE EXCEPTION 'role "%" may not store more than % % on this database',
            role, morango.max_peer_certificates(), what
            USING ERRCODE = 'configuration_limit_exceeded',
                  HINT = 'A superuser can raise morango.max_peer_certificates.';
    END IF;
END
$$;

/*
 * morango.save_certificate_chain(chain jsonb, stored_by name) -> uuid
 *
 * Verify a chain (root first, each element the parent of the next) and store
 * the certificates not yet known; returns the last one's id.  A certificate
 * already stored must be byte-identical.  All or nothing.  With stored_by
 * (the peer API: the role the call acts for), the new certificates are
 * recorded as that role's and its quota applies.
 */
CREATE FUNCTION morango.save_certificate_chain(chain jsonb, stored_by name DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    elem    jsonb;
    cid     uuid;
    cparent uuid;
    c       morango.certificates;
    known   morango.certificates;
    prev    uuid;
    i       integer := 0;
BEGIN
    IF jsonb_typeof(chain) IS DISTINCT FROM 'array' OR jsonb_array_length(chain) = 0
       OR jsonb_array_length(chain) > 32 THEN
        RAISE EXCEPTION 'a certificate chain is a JSON array of 1 to 32 certificates, root first'
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    IF stored_by IS NOT NULL THEN
        PERFORM morango.peer_quota_lock(stored_by);
    END IF;
    FOR elem IN SELECT e FROM jsonb_array_elements(chain) e LOOP
        IF jsonb_typeof(elem->'serialized') IS DISTINCT FROM 'string'
           OR jsonb_typeof(elem->'signature') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'element % of the certificate chain needs "serialized" and "signature"', i
                USING ERRCODE = 'invalid_authorization_specification';
        END IF;
        BEGIN
            cid := ((elem->>'serialized')::jsonb->>'id')::uuid;
            cparent := ((elem->>'serialized')::jsonb->>'parent_id')::uuid;
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION 'malformed certificate at element % of the chain', i
                USING ERRCODE = 'invalid_authorization_specification';
        END;
        IF cid IS NULL OR cparent IS DISTINCT FROM prev THEN
            RAISE EXCEPTION 'the certificate chain is broken at element %', i
                USING ERRCODE = 'invalid_authorization_specification',
                      DETAIL = 'The first certificate must be a root and each next one a child of the one before.';
        END IF;
        SELECT * INTO known FROM morango.certificates WHERE id = cid;
        IF FOUND THEN
            IF known.serialized <> elem->>'serialized' OR known.signature <> elem->>'signature' THEN
                RAISE EXCEPTION 'certificate % differs from the one stored here', cid
                    USING ERRCODE = 'invalid_authorization_specification';
            END IF;
        ELSE
            c := morango.certificate_check(elem->>'serialized', elem->>'signature');
            c.stored_by := save_certificate_chain.stored_by;
            INSERT INTO morango.certificates SELECT (c).*;
        END IF;
        prev := cid;
        i := i + 1;
    END LOOP;
    IF stored_by IS NOT NULL THEN   -- over the quota: raising undoes what this call stored
        PERFORM morango.peer_quota_check(stored_by, 'certificates',
            (SELECT count(*) FROM morango.certificates x WHERE x.stored_by = save_certificate_chain.stored_by));
    END IF;
    RETURN prev;
END
$$;

/*
 * Revocations (doc/design.md §10).  A revocation travels as
 * {"serialized": <text>, "signature": <base64>}: `serialized` is the JSON
 * {"certificate_id", "signer_id", "revoked_at", "reason"} (ids as 32 hex
 * digits, the time as utc_text()), signed with the signer's key.
 */
CREATE FUNCTION morango.revocation_serialize(certificate uuid, signer uuid, revoked_at timestamptz,
                                             reason text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
RETURN format('{"certificate_id": %s, "signer_id": %s, "revoked_at": %s, "reason": %s}',
              to_json(replace(certificate::text, '-', '')), to_json(replace(signer::text, '-', '')),
              to_json(morango.utc_text(revoked_at)), to_json(reason));

/*
 * morango.revocation_check(serialized, signature) -> morango.certificate_revocations
 *
 * Verify one received revocation: bounded sizes, well formed, signed by
 * the key of its signer, and, when the revoked certificate is known here,
 * the signer is one of its strict ancestors.  Returns the row to store, or
 * NULL when the signer is not known here (it cannot be verified: it is not
 * stored; the peer sends it again in later syncs).  Raises
 * invalid_authorization_specification naming the rule broken.  Stores
 * nothing.
 */
CREATE FUNCTION morango.revocation_check(serialized text, signature text)
RETURNS morango.certificate_revocations
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    doc     jsonb;
    r       morango.certificate_revocations;
    signer  morango.certificates;
BEGIN
    IF serialized IS NULL OR signature IS NULL
       OR octet_length(serialized) > 2048 OR octet_length(signature) > 4096 THEN
        RAISE EXCEPTION 'a revocation needs its serialized form (at most 2048 bytes) and a signature'
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    BEGIN
        doc := serialized::jsonb;
        IF jsonb_typeof(doc) <> 'object'
           OR jsonb_typeof(doc->'certificate_id') IS DISTINCT FROM 'string'
           OR jsonb_typeof(doc->'signer_id') IS DISTINCT FROM 'string'
           OR jsonb_typeof(doc->'revoked_at') IS DISTINCT FROM 'string'
           OR jsonb_typeof(doc->'reason') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_text_representation';
        END IF;
        r.certificate_id := (doc->>'certificate_id')::uuid;
        r.signer_id := (doc->>'signer_id')::uuid;
        r.revoked_at := morango.utc_parse(doc->>'revoked_at');
        IF r.revoked_at IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_text_representation';
        END IF;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'malformed revocation'
            USING ERRCODE = 'invalid_authorization_specification',
                  DETAIL = 'A revocation is a JSON object with certificate_id, signer_id, '
                           'revoked_at (YYYY-MM-DDTHH:MM:SSZ) and reason.';
    END;
    r.reason := doc->>'reason';
    r.serialized := serialized;
    r.signature := signature;
    r.received_at := now();

    SELECT * INTO signer FROM morango.certificates WHERE id = r.signer_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF NOT morango.verify(signer.public_key, serialized, signature) THEN
        RAISE EXCEPTION 'the revocation of certificate % has an invalid signature', r.certificate_id
            USING ERRCODE = 'invalid_authorization_specification',
                  DETAIL = format('It must be signed by the key of its signer %s.', r.signer_id);
    END IF;
    IF EXISTS (SELECT 1 FROM morango.certificates WHERE id = r.certificate_id)
       AND NOT EXISTS (SELECT 1 FROM morango.certificate_ancestry(r.certificate_id) a
                       WHERE a.id = r.signer_id AND a.depth > 0) THEN
        RAISE EXCEPTION 'the revocation of certificate % is not signed by one of its ancestors',
            r.certificate_id
            USING ERRCODE = 'invalid_authorization_specification',
                  DETAIL = format('It is signed by %s.', r.signer_id);
    END IF;
    r.root_id := morango.certificate_root(r.signer_id);
    RETURN r;
END
$$;

/*
 * morango.revocations_save(revocations jsonb, root uuid, stored_by name)
 *   -> integer
 *
 * Verify received revocations (a JSON array of at most 1000) and store the
 * new ones: all or nothing.  Every one must check out
 * (revocation_check()) and be signed under `root` (the root of the sync
 * session's certificates); those whose signer is unknown here are left
 * out.  With stored_by (the peer API), they are recorded as that role's
 * and its quota applies.  Returns the number stored.
 */
CREATE FUNCTION morango.revocations_save(revocations jsonb, root uuid, stored_by name DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad     bigint;
    checked morango.certificate_revocations[];
    n       integer;
BEGIN
    IF jsonb_typeof(revocations) IS DISTINCT FROM 'array' OR jsonb_array_length(revocations) > 1000
       OR octet_length(revocations::text) > 2097152 THEN
        RAISE EXCEPTION 'revocations are a JSON array of at most 1000 revocations (2 MB)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT min(i) INTO bad FROM jsonb_array_elements(revocations) WITH ORDINALITY AS e(v, i)
    WHERE jsonb_typeof(v->'serialized') IS DISTINCT FROM 'string'
       OR jsonb_typeof(v->'signature') IS DISTINCT FROM 'string';
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'element % of the revocations needs "serialized" and "signature"', bad - 1
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    SELECT array_agg(r) INTO checked
    FROM (SELECT morango.revocation_check(v->>'serialized', v->>'signature') AS r
          FROM jsonb_array_elements(revocations) AS e(v)) x
    WHERE (r).signer_id IS NOT NULL;
    IF EXISTS (SELECT 1 FROM unnest(checked) r WHERE r.root_id IS DISTINCT FROM root) THEN
        RAISE EXCEPTION 'the revocation of certificate % is signed under another root',
            (SELECT r.certificate_id FROM unnest(checked) r WHERE r.root_id IS DISTINCT FROM root
             ORDER BY 1 LIMIT 1)
            USING ERRCODE = 'invalid_authorization_specification',
                  DETAIL = format('This sync session runs under root %s.', root);
    END IF;
    IF stored_by IS NOT NULL THEN
        PERFORM morango.peer_quota_lock(stored_by);
    END IF;
    INSERT INTO morango.certificate_revocations
    SELECT (r).certificate_id, (r).signer_id, (r).root_id, (r).revoked_at, (r).reason, (r).serialized,
           (r).signature, revocations_save.stored_by, (r).received_at
    FROM unnest(checked) r
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF stored_by IS NOT NULL AND n > 0 THEN   -- over the quota: raising undoes the insert
        PERFORM morango.peer_quota_check(stored_by, 'revocations',
            (SELECT count(*) FROM morango.certificate_revocations x
             WHERE x.stored_by = revocations_save.stored_by));
    END IF;
    RETURN n;
END
$$;

/*
 * morango.revocations_of(root) -> jsonb: the revocations this database
 * holds under a root, as they travel: at most 1000 (the most a peer takes
 * in one call), those of certificates known here first, then those whose
 * signer is nearest the root, so that revocations anyone can check, and
 * those made high up, are not crowded out by many that a device signed
 * for certificates nobody here knows.
 */
CREATE FUNCTION morango.revocations_of(root uuid)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(jsonb_agg(jsonb_build_object('serialized', serialized, 'signature', signature)
                              ORDER BY certificate_id, signer_id), '[]')
    FROM (SELECT r.serialized, r.signature, r.certificate_id, r.signer_id
          FROM morango.certificate_revocations r
          WHERE r.root_id = root
          ORDER BY NOT EXISTS (SELECT 1 FROM morango.certificates c WHERE c.id = r.certificate_id),
                   (SELECT max(a.depth) FROM morango.certificate_ancestry(r.signer_id) a),
                   r.certificate_id, r.signer_id
          LIMIT 1000) r
$$;

/*
 * morango.revoke_certificate(certificate, reason) -> uuid
 *
 * Revoke a certificate: sign a revocation with the key of its nearest
 * strict ancestor whose private key this database holds, and store it.
 * From then on the certificate and everything under it can no longer be
 * used here, and the revocation travels with every certified sync of its
 * root.  Returns the signer's id.
 */
CREATE FUNCTION morango.revoke_certificate(certificate uuid, reason text DEFAULT '')
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    signer  uuid;
    doc     text;
    at      timestamptz := date_trunc('second', now());
BEGIN
    IF NOT EXISTS (SELECT 1 FROM morango.certificates WHERE id = certificate) THEN
        RAISE EXCEPTION 'certificate % does not exist', certificate USING ERRCODE = 'undefined_object';
    END IF;
    IF reason IS NULL OR length(reason) > 500 THEN
        RAISE EXCEPTION 'a revocation reason is a text of at most 500 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT a.id INTO signer
    FROM morango.certificate_ancestry(certificate) a
    JOIN morango.certificate_keys k ON k.certificate_id = a.id
    WHERE a.depth > 0
    ORDER BY a.depth LIMIT 1;
    IF signer IS NULL THEN
        RAISE EXCEPTION 'this database holds the private key of no ancestor of certificate %', certificate
            USING ERRCODE = 'invalid_authorization_specification',
                  HINT = 'A revocation is signed by an ancestor of the certificate: revoke it where one is held.';
    END IF;
    doc := morango.revocation_serialize(certificate, signer, at, reason);
    INSERT INTO morango.certificate_revocations
        (certificate_id, signer_id, root_id, revoked_at, reason, serialized, signature)
    VALUES (certificate, signer, morango.certificate_root(signer), at, reason, doc,
            morango.certificate_sign(signer, doc))
    ON CONFLICT DO NOTHING;
    RETURN signer;
END
$$;

/*
 * morango.nonce() -> uuid: a fresh single-use nonce.
 * morango.nonce_use(uuid): consume it; raises unless it exists and is under
 * 60 seconds old.  Expired nonces are purged on the way.
 */
CREATE FUNCTION morango.nonce()
RETURNS uuid
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    DELETE FROM morango.nonces WHERE created_at < clock_timestamp() - interval '60 seconds';
    INSERT INTO morango.nonces DEFAULT VALUES RETURNING id;
END;

CREATE FUNCTION morango.nonce_use(nonce uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    made timestamptz;
BEGIN
    DELETE FROM morango.nonces WHERE id = nonce RETURNING created_at INTO made;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown or already used nonce'
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    IF made < clock_timestamp() - interval '60 seconds' THEN
        RAISE EXCEPTION 'expired nonce'
            USING ERRCODE = 'invalid_authorization_specification',
                  HINT = 'A nonce must be used within 60 seconds.';
    END IF;
END
$$;

/*
 * Which certificates a sync session runs under, on each side: ours and the
 * peer's, proven by the handshake (peer_authenticate on the server,
 * session_authenticate on the client).  A session is bound to its
 * certificates: authenticating it again with others is refused.
 */
CREATE TABLE morango.session_certificates (
    sync_session_id         uuid PRIMARY KEY,
    local_certificate_id    uuid NOT NULL REFERENCES morango.certificates (id),
    peer_certificate_id     uuid NOT NULL REFERENCES morango.certificates (id),
    peer_role               name,            -- server side: the role the client connected as
    authenticated_at        timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('morango.session_certificates', '');

/*
 * Who may obtain certificates from this database over the peer API
 * (morango.peer_certificate_sign): members of `role`, for children of
 * `parent_id` with this scope definition and parameters that contain
 * `params` (so '{"user_id": "u1"}' limits a role to user u1's scope),
 * valid for `validity` from signing (NULL: as long as the parent).
 */
CREATE TABLE morango.certificate_signers (
    role                oid NOT NULL,    -- pg_authid oid
    parent_id           uuid NOT NULL REFERENCES morango.certificates (id) ON DELETE CASCADE,
    scope_definition_id text NOT NULL REFERENCES morango.scope_definitions (id) ON DELETE CASCADE,
    params              jsonb NOT NULL DEFAULT '{}',
    validity            interval CHECK (validity > interval '0'),
    PRIMARY KEY (role, parent_id, scope_definition_id, params)
);
SELECT pg_catalog.pg_extension_config_dump('morango.certificate_signers', '');

CREATE FUNCTION morango.uncertified_sync_allowed()
RETURNS boolean
AS 'MODULE_PATHNAME', 'morango_uncertified_sync_allowed'
LANGUAGE C STABLE;
COMMENT ON FUNCTION morango.uncertified_sync_allowed() IS
    'the value of morango.allow_uncertified_sync (superuser-only setting)';

CREATE FUNCTION morango.max_peer_certificates()
RETURNS integer
AS 'MODULE_PATHNAME', 'morango_max_peer_certificates'
LANGUAGE C STABLE;
COMMENT ON FUNCTION morango.max_peer_certificates() IS
    'the value of morango.max_peer_certificates (superuser-only setting)';

/*
 * morango.certificate_sign(certificate, message) -> text: sign with the
 * private key of one of our certificates (internal).
 */
CREATE FUNCTION morango.certificate_sign(certificate uuid, message text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN morango.sign(morango.private_key(certificate), message);

/*
 * morango.session_bind(sync_session, profile, local, peer, peer_role): check
 * both certificates are for the profile and record them (and, on the
 * server, the role the client connected as) for the session.
 */
CREATE FUNCTION morango.session_bind(sync_session uuid, profile text, local_certificate uuid,
                                     peer_certificate uuid, peer_role name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bound morango.session_certificates;
BEGIN
    IF EXISTS (SELECT 1 FROM morango.certificates c
               WHERE c.id IN (local_certificate, peer_certificate)
                 AND c.profile <> session_bind.profile) THEN
        RAISE EXCEPTION 'the certificates of sync session % are not for profile "%"', sync_session, profile
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    SELECT * INTO bound FROM morango.session_certificates WHERE sync_session_id = sync_session;
    IF NOT FOUND THEN
        INSERT INTO morango.session_certificates (sync_session_id, local_certificate_id,
                                                  peer_certificate_id, peer_role)
        VALUES (sync_session, local_certificate, peer_certificate, peer_role);
    ELSIF bound.local_certificate_id <> local_certificate OR bound.peer_certificate_id <> peer_certificate
          OR bound.peer_role IS DISTINCT FROM session_bind.peer_role THEN
        RAISE EXCEPTION 'sync session % runs under other certificates', sync_session
            USING ERRCODE = 'invalid_authorization_specification';
    ELSE
        UPDATE morango.session_certificates SET authenticated_at = now()
        WHERE sync_session_id = sync_session;
    END IF;
END
$$;

/*
 * morango.handshake_message(nonce, sync_session, client_certificate,
 *                           server_certificate, profile) -> text
 *
 * What both sides sign: it names both certificates, so a signature made for
 * one server cannot be relayed to another.
 */
CREATE FUNCTION morango.handshake_message(nonce uuid, sync_session uuid, client_certificate uuid,
                                          server_certificate uuid, profile text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN format('morango:%s:%s:%s:%s:%s', nonce, sync_session, client_certificate,
              server_certificate, profile);

/*
 * morango.peer_nonce() -> uuid: a nonce for the handshake (peer API).
 */
CREATE FUNCTION morango.peer_nonce()
RETURNS uuid
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'morango_peer_nonce';

/*
 * morango.peer_authenticate(sync_session, profile, client_chain,
 *                           server_certificate, nonce, signature) -> jsonb
 *
 * The server's half of the handshake (peer API).  The client sends its
 * certificate chain and its signature of handshake_message() made with its
 * certificate's key; the server verifies and stores the chain, checks the
 * signature against the message rebuilt with its own certificate, consumes
 * the nonce, binds the session to both certificates and to the role the
 * call acts for (peer_role()), and answers {"chain": its own chain,
 * "signature": its signature of the same message}, proving it holds
 * server_certificate's key.  Refused, before anything is stored: a chain
 * under another root than the server's certificate (such a session could
 * never transfer anything), more certificates than the role's quota, and,
 * on either side, a certificate that has expired or been revoked.
 */
CREATE FUNCTION morango.peer_authenticate(sync_session uuid, profile text, client_chain jsonb,
                                          server_certificate uuid, nonce uuid, signature text)
RETURNS jsonb
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'morango_peer_authenticate';

/*
 * The responder's half of the certificate handshake, behind
 * peer_authenticate (which checked its caller and its arguments): use the
 * nonce, check this side's certificate, store and check the client's
 * chain and signature, bind the session; answers this side's chain and
 * its signature of the same message.
 */
CREATE FUNCTION morango.handshake_respond(sync_session uuid, profile text, client_chain jsonb,
                                          server_certificate uuid, nonce uuid, signature text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    client      uuid;
    message     text;
    root        uuid;
    client_root uuid;
BEGIN
    PERFORM morango.nonce_use(nonce);
    IF NOT EXISTS (SELECT 1 FROM morango.certificate_keys WHERE certificate_id = server_certificate) THEN
        RAISE EXCEPTION 'this peer does not hold certificate %', server_certificate
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    PERFORM morango.certificate_assert_usable(server_certificate);
    root := morango.certificate_root(server_certificate);
    BEGIN
        client_root := ((client_chain->0->>'serialized')::jsonb->>'id')::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        client_root := NULL;    -- save_certificate_chain() names what is wrong
    END;
    IF client_root <> root THEN
        RAISE EXCEPTION 'the client''s certificate chain starts at root %, not at this peer''s root %',
            client_root, root
            USING ERRCODE = 'invalid_authorization_specification',
                  DETAIL = 'A session between two roots could never transfer anything: '
                           'the filters of a root start with its own id.';
    END IF;
    client := morango.save_certificate_chain(client_chain, morango.peer_role());
    PERFORM morango.certificate_assert_usable(client);
    message := morango.handshake_message(nonce, sync_session, client, server_certificate, profile);
    IF NOT morango.verify((SELECT public_key FROM morango.certificates WHERE id = client), message, signature) THEN
        RAISE EXCEPTION 'the client''s signature does not match certificate %', client
            USING ERRCODE = 'invalid_authorization_specification',
                  DETAIL = 'The client must sign the handshake message (doc/protocol.md) naming this '
                           'server''s certificate with its own certificate''s key.';
    END IF;
    PERFORM morango.session_bind(sync_session, profile, server_certificate, client, morango.peer_role());
    RETURN jsonb_build_object('chain', morango.certificate_chain(server_certificate),
                              'signature', morango.certificate_sign(server_certificate, message));
END
$$;

/*
 * morango.session_authenticate(sync_session, profile, local_certificate,
 *                              peer_certificate, peer_chain, peer_signature, nonce)
 *
 * The client's half: verify and store the server's chain, check it is the
 * certificate we asked for and that its key signed the handshake message,
 * that neither certificate has expired or been revoked, and bind the
 * session to both certificates.
 */
CREATE FUNCTION morango.session_authenticate(sync_session uuid, profile text, local_certificate uuid,
                                             peer_certificate uuid, peer_chain jsonb,
                                             peer_signature text, nonce uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    got uuid;
BEGIN
    got := morango.save_certificate_chain(peer_chain);
    IF got <> peer_certificate THEN
        RAISE EXCEPTION 'the peer presented certificate % instead of %', got, peer_certificate
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    IF peer_signature IS NULL
       OR NOT morango.verify((SELECT public_key FROM morango.certificates WHERE id = got),
                             morango.handshake_message(nonce, sync_session, local_certificate, got,
                                                       profile),
                             peer_signature) THEN
        RAISE EXCEPTION 'the peer could not prove it holds certificate %', got
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    PERFORM morango.certificate_assert_usable(local_certificate);
    PERFORM morango.certificate_assert_usable(got);
    PERFORM morango.session_bind(sync_session, profile, local_certificate, got);
END
$$;

/*
 * morango.peer_revocations(sync_session, revocations) -> jsonb
 *
 * Revocations travel with every certified sync (peer API; the initiator
 * calls it right after the handshake).  On a session authenticated by
 * peer_authenticate() for the role the call acts for, store the valid new
 * revocations the client sends (revocations_save(): at most 1000, all or
 * nothing, counted in the role's quota) and answer this database's
 * revocations under the root of the session's certificates.  A client
 * revoked by what arrives is refused at its next transfer_open().
 */
CREATE FUNCTION morango.peer_revocations(sync_session uuid, revocations jsonb)
RETURNS jsonb
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'morango_peer_revocations';

/*
 * The responder's revocation exchange, behind peer_revocations (which
 * checked its caller and its arguments): the session must be
 * authenticated by this role; the revocations it sends are stored, ours
 * under the session's root answered.
 */
CREATE FUNCTION morango.revocations_exchange(sync_session uuid, revocations jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bound   morango.session_certificates;
    root    uuid;
BEGIN
    SELECT * INTO bound FROM morango.session_certificates WHERE sync_session_id = sync_session;
    IF NOT FOUND OR bound.peer_role IS NULL THEN
        RAISE EXCEPTION 'sync session % is not authenticated', sync_session
            USING ERRCODE = 'invalid_authorization_specification',
                  HINT = 'Call morango.peer_authenticate() first.';
    END IF;
    IF bound.peer_role <> morango.peer_role() THEN
        RAISE EXCEPTION 'sync session % belongs to another role', sync_session
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    PERFORM morango.certificate_assert_usable(bound.local_certificate_id);
    PERFORM morango.certificate_assert_usable(bound.peer_certificate_id);
    root := morango.certificate_root(bound.local_certificate_id);
    PERFORM morango.revocations_save(revocations, root, morango.peer_role());
    RETURN morango.revocations_of(root);
END
$$;
COMMENT ON FUNCTION morango.peer_revocations(uuid, jsonb) IS
    'peer API: exchange the revocations under the root of an authenticated sync session';

/*
 * morango.session_revocations(sync_session, revocations) -> integer
 *
 * The initiator's half of peer_revocations(): store the valid new
 * revocations the peer answered, under the root of the session's
 * certificates.  Returns the number stored.
 */
CREATE FUNCTION morango.session_revocations(sync_session uuid, revocations jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bound morango.session_certificates;
BEGIN
    SELECT * INTO bound FROM morango.session_certificates WHERE sync_session_id = sync_session;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sync session % is not authenticated', sync_session
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    RETURN morango.revocations_save(revocations, morango.certificate_root(bound.local_certificate_id));
END
$$;

/*
 * morango.session_scope_check(sync_session, profile, we_receive, filter)
 *   -> text[]
 *
 * May records under `filter` flow in this transfer?  With certificates, the
 * filter must lie within the sender's write scope and the receiver's read
 * scope (Morango's rule: push, within the client's write and the server's
 * read; pull, the reverse).  Without, the session is refused when this
 * database holds a certificate for the profile, unless
 * morango.allow_uncertified_sync is on.  A session whose certificates (or
 * their ancestors) have expired or been revoked since the handshake is
 * refused.  Returns the sender's write filter, or NULL for an uncertified
 * session.
 */
CREATE FUNCTION morango.session_scope_check(sync_session uuid, profile text, we_receive boolean,
                                            filter text[])
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bound   morango.session_certificates;
    mine    morango.certificates;
    theirs  morango.certificates;
    sender  morango.certificates;
    recv    morango.certificates;
BEGIN
    filter := COALESCE(filter, ARRAY['']);
    SELECT * INTO bound FROM morango.session_certificates WHERE sync_session_id = sync_session;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM morango.certificates c
                   JOIN morango.certificate_keys k ON k.certificate_id = c.id
                   WHERE c.profile = session_scope_check.profile)
           AND NOT morango.uncertified_sync_allowed() THEN
            RAISE EXCEPTION 'this database requires a certificate to sync profile "%"', profile
                USING ERRCODE = 'invalid_authorization_specification',
                      HINT = 'Pass certificate and peer_certificate to morango.sync(), '
                             'or set morango.allow_uncertified_sync between trusted servers.';
        END IF;
        RETURN NULL;
    END IF;
    IF bound.peer_role IS DISTINCT FROM NULL AND bound.peer_role <> morango.peer_role() THEN
        RAISE EXCEPTION 'sync session % belongs to another role', sync_session
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    PERFORM morango.certificate_assert_usable(bound.local_certificate_id);
    PERFORM morango.certificate_assert_usable(bound.peer_certificate_id);
    SELECT * INTO mine FROM morango.certificates WHERE id = bound.local_certificate_id;
    SELECT * INTO theirs FROM morango.certificates WHERE id = bound.peer_certificate_id;
    IF mine.profile <> profile OR theirs.profile <> profile THEN
        RAISE EXCEPTION 'sync session % runs under certificates of another profile', sync_session
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    IF we_receive THEN
        sender := theirs; recv := mine;
    ELSE
        sender := mine; recv := theirs;
    END IF;
    IF NOT morango.filter_within(filter, sender.write_filter) THEN
        RAISE EXCEPTION 'filter % is outside the write scope of the sender''s certificate', filter
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Certificate %s writes %s.', sender.id, sender.write_filter);
    END IF;
    IF NOT morango.filter_within(filter, recv.read_filter) THEN
        RAISE EXCEPTION 'filter % is outside the read scope of the receiver''s certificate', filter
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Certificate %s reads %s.', recv.id, recv.read_filter);
    END IF;
    RETURN sender.write_filter;
END
$$;

/*
 * morango.grant_certificate_signing(role, parent, scope_definition, params,
 *                                   validity)
 *
 * Let members of `role`, connected as a peer, obtain children of `parent`
 * with this scope definition and parameters containing `params`, each
 * expiring `validity` after it is signed (capped at the parent's expiry;
 * NULL: when the parent does).  Granting the same again replaces the
 * validity.
 */
CREATE FUNCTION morango.grant_certificate_signing(role regrole, parent uuid, scope_definition text,
                                                  params jsonb DEFAULT '{}',
                                                  validity interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM morango.private_key(parent);
    PERFORM morango.scope_definition_get(scope_definition, params);
    IF validity <= interval '0' THEN
        RAISE EXCEPTION 'the validity of a certificate must be positive'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO morango.certificate_signers AS s (role, parent_id, scope_definition_id, params, validity)
    VALUES (role::oid, parent, scope_definition, params, validity)
    ON CONFLICT ON CONSTRAINT certificate_signers_pkey
    DO UPDATE SET validity = EXCLUDED.validity;
END
$$;

/*
 * morango.peer_certificate_sign(parent, scope_definition, params, public_key)
 *   -> jsonb
 *
 * The server side of a certificate signing request (peer API): if the role
 * the call acts for (peer_role()) may obtain this scope
 * (morango.certificate_signers), sign a child of `parent` for `public_key`,
 * expiring as the grant says (the longest of the matching grants), and
 * return its chain.  The new certificate counts in the role's quota
 * (morango.max_peer_certificates).
 */
CREATE FUNCTION morango.peer_certificate_sign(parent uuid, scope_definition text, params jsonb,
                                              public_key text)
RETURNS jsonb
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'morango_peer_certificate_sign';

/*
 * A signing request, behind peer_certificate_sign (which checked its
 * caller and its arguments): the calling role must hold a signing grant
 * for the parent, scope and parameters, and fit its certificate quota;
 * answers the new certificate's chain.
 */
CREATE FUNCTION morango.certificate_sign_request(parent uuid, scope_definition text, params jsonb,
                                                 public_key text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    issued      uuid;
    who         name := morango.peer_role();
    grants      bigint;
    forever     boolean;
    validity    interval;
BEGIN
    SELECT count(*), bool_or(s.validity IS NULL), max(s.validity) INTO grants, forever, validity
    FROM morango.certificate_signers s
    WHERE s.parent_id = parent AND s.scope_definition_id = scope_definition
      AND certificate_sign_request.params @> s.params
      AND CASE WHEN EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = s.role)
               THEN pg_has_role(who, s.role, 'MEMBER') ELSE false END;
    IF grants = 0 THEN
        RAISE EXCEPTION 'role "%" may not obtain certificates of scope "%" under certificate %',
            who, scope_definition, parent
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'On that database, run morango.grant_certificate_signing().';
    END IF;
    PERFORM morango.peer_quota_lock(who);
    PERFORM morango.peer_quota_check(who, 'certificates',
        (SELECT count(*) + 1 FROM morango.certificates c WHERE c.stored_by = who));
    -- two statements: the chain must see the new certificate; the expiry
    -- is capped at the parent's by issue_certificate's default
    issued := morango.issue_certificate(parent, scope_definition, params, public_key,
        LEAST(CASE WHEN NOT forever THEN now() + validity END,
              (SELECT c.expires_at FROM morango.certificates c WHERE c.id = parent)));
    UPDATE morango.certificates SET stored_by = who WHERE id = issued;
    RETURN morango.certificate_chain(issued);
END
$$;

/*
 * morango.peer_request_signature(peer, parent, scope_definition, params,
 *                                public_key) -> jsonb
 *
 * Call peer_certificate_sign on a peer over libpq (internal).
 */
CREATE FUNCTION morango.peer_request_signature(peer text, parent uuid, scope_definition text,
                                               params jsonb, public_key text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'morango_peer_request_signature'
LANGUAGE C VOLATILE STRICT;

/*
 * morango.request_certificate(peer, parent, scope_definition, params) -> uuid
 *
 * Make a key pair, have the peer sign a certificate for it under `parent`
 * (the peer decides by the role we connect as), verify and store the chain
 * with our private key.  Returns the new certificate's id.
 */
CREATE FUNCTION morango.request_certificate(peer text, parent uuid, scope_definition text,
                                            params jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kp  record;
    cid uuid;
BEGIN
    kp := morango.key_generate();
    cid := morango.save_certificate_chain(
        morango.peer_request_signature(peer, parent, scope_definition, params, kp.public_key));
    IF (SELECT public_key FROM morango.certificates WHERE id = cid) <> kp.public_key
       OR (SELECT parent_id FROM morango.certificates WHERE id = cid) IS DISTINCT FROM parent THEN
        RAISE EXCEPTION 'the peer answered with a certificate for another key or parent'
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    INSERT INTO morango.certificate_keys VALUES (cid, kp.private_key);
    RETURN cid;
END
$$;

-- -------------------------------------------------------------------------
-- Keep morango.models in step with dropped tables
-- -------------------------------------------------------------------------

CREATE FUNCTION morango.on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM morango.models m
    USING pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = m.model::oid AND d.objsubid = 0;
    DELETE FROM morango.changes c
    USING pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.model::oid AND d.objsubid = 0;
END
$$;
CREATE EVENT TRIGGER morango_sql_drop ON sql_drop EXECUTE FUNCTION morango.on_sql_drop();

-- -------------------------------------------------------------------------
-- Invariants (doc/invariants.md): what must hold between steps, whatever
-- failed or crashed before.  Tests run this after they change things.
-- -------------------------------------------------------------------------

CREATE FUNCTION morango.check_invariants(OUT invariant text, OUT detail text)
RETURNS SETOF record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    (SELECT 'I1 a store record''s version vector holds its last saved version',
            'record ' || s.id
     FROM morango.store s
     WHERE NOT EXISTS (SELECT 1 FROM morango.record_max_counters r
                       WHERE r.record_id = s.id AND r.instance_id = s.last_saved_instance
                         AND r.counter >= s.last_saved_counter)
     ORDER BY s.id LIMIT 5)
    UNION ALL
    (SELECT 'I2 no counter of a local instance above the instance''s counter',
            'instance ' || i.id || ' at ' || i.counter || ' has counter ' || r.counter
            || ' in the version vector of record ' || r.record_id
     FROM morango.record_max_counters r JOIN morango.instances i ON i.id = r.instance_id
     WHERE r.counter > i.counter
     ORDER BY r.record_id LIMIT 5)
    UNION ALL
    (SELECT 'I2 no counter of a local instance above the instance''s counter',
            'instance ' || i.id || ' at ' || i.counter || ' has database max counter ' || d.counter
            || ' for partition ' || quote_literal(d.partition)
     FROM morango.database_max_counters d JOIN morango.instances i ON i.id = d.instance_id
     WHERE d.counter > i.counter
     ORDER BY d.partition LIMIT 5)
    UNION ALL
    (SELECT 'I3 a store record''s id follows the id rule',
            'record ' || s.id
     FROM morango.store s
     WHERE morango.record_id(s.partition, s.source_id, s.model_name) <> s.id
     ORDER BY s.id LIMIT 5)
    UNION ALL
    (SELECT 'I4 a hard-deleted record is deleted and keeps no data',
            'record ' || s.id
     FROM morango.store s
     WHERE s.hard_deleted AND (NOT s.deleted OR s.serialized <> '{}'
                               OR s.conflicting_serialized_data <> '[]')
     ORDER BY s.id LIMIT 5)
    UNION ALL
    (SELECT 'I5 no buffered record without an active transfer session',
            'transfer session ' || o.ts || ': ' || o.what
     FROM (SELECT b.transfer_session_id AS ts, count(*) || ' records' AS what
           FROM morango.buffer b GROUP BY 1
           UNION ALL
           SELECT x.transfer_session_id, count(*) || ' version vector entries'
           FROM morango.record_max_counter_buffer x GROUP BY 1) AS o
     WHERE NOT EXISTS (SELECT 1 FROM morango.transfer_sessions t WHERE t.id = o.ts AND t.active)
     ORDER BY 2 LIMIT 5)
    UNION ALL
    (SELECT 'I6 a buffered version vector belongs to a buffered record',
            'transfer session ' || x.transfer_session_id || ', record ' || x.record_id
     FROM morango.record_max_counter_buffer x
     WHERE NOT EXISTS (SELECT 1 FROM morango.buffer b
                       WHERE b.transfer_session_id = x.transfer_session_id
                         AND b.record_id = x.record_id)
     ORDER BY 2 LIMIT 5)
    UNION ALL
    (SELECT 'I7 a finished transfer session moved every record it counted',
            'transfer session ' || t.id || ': ' || t.records_transferred || ' of ' || t.records_total
     FROM morango.transfer_sessions t
     WHERE NOT t.active AND t.stage = 'cleanup' AND t.status = 'completed'
       AND t.records_total >= 0 AND t.records_transferred <> t.records_total
     ORDER BY t.id LIMIT 5)
$$;
COMMENT ON FUNCTION morango.check_invariants() IS
    'the invariants of doc/invariants.md that do not hold, with examples (no rows: all hold)';

-- -------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC but the identity getters, the id rule and
-- the protocol version.  Firing a trigger needs no EXECUTE right, so the
-- trigger function is not granted: only those who may register tables can
-- attach it to a table.
-- -------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA morango FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA morango FROM PUBLIC;
GRANT USAGE ON SCHEMA morango TO PUBLIC;
GRANT EXECUTE ON FUNCTION morango.instance_id() TO PUBLIC;
GRANT EXECUTE ON FUNCTION morango.database_id() TO PUBLIC;
GRANT EXECUTE ON FUNCTION morango.record_id(text, text, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION morango.protocol_version() TO PUBLIC;
