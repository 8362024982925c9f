/*
 * morango--0.1.0.sql
 *
 * Install script of the morango extension: the catalog (identity, store,
 * counters, buffers, sessions, registered models) and the SQL API.
 *
 * Every object lives in schema morango (fixed by morango.control).  Tables
 * hold sync state that only the extension and its owner touch; application
 * roles write their own tables and the C trigger writes the store with the
 * extension owner's rights (see doc/design.md, "Privileges").
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
 * dirty_bit means "holds a version from a peer not yet written to the
 * application table".  app_key ties a record to its application row.
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
    dirty_bit                   boolean NOT NULL DEFAULT false,
    deserialization_error       text,
    last_transfer_session_id    uuid,
    app_key                     text
);
CREATE UNIQUE INDEX store_app_key ON morango.store (profile, model_name, app_key);
CREATE INDEX store_partition ON morango.store (partition text_pattern_ops);
CREATE INDEX store_dirty ON morango.store (profile, model_name) WHERE dirty_bit;

/* Version vector of each record: the highest counter of every instance that wrote it. */
CREATE TABLE morango.record_max_counters (
    record_id           uuid NOT NULL REFERENCES morango.store (id) ON DELETE CASCADE,
    instance_id         uuid NOT NULL,
    counter             bigint NOT NULL CHECK (counter > 0),
    PRIMARY KEY (record_id, instance_id)
);

/*
 * "For records under partition prefix `partition`, this database holds every
 * version written by instance_id with a counter up to `counter`."
 */
CREATE TABLE morango.database_max_counters (
    instance_id         uuid NOT NULL,
    partition           text NOT NULL,
    counter             bigint NOT NULL CHECK (counter >= 0),
    PRIMARY KEY (instance_id, partition)
);

-- -------------------------------------------------------------------------
-- Sessions and buffers
-- -------------------------------------------------------------------------

CREATE TABLE morango.sync_sessions (
    id                      uuid PRIMARY KEY,
    profile                 text NOT NULL,
    is_server               boolean NOT NULL,
    peer                    text,
    local_instance_id       uuid,
    peer_instance_id        uuid,
    local_certificate_id    uuid,
    peer_certificate_id     uuid,
    active                  boolean NOT NULL DEFAULT true,
    process_id              integer,
    started_at              timestamptz NOT NULL DEFAULT now(),
    last_activity_at        timestamptz NOT NULL DEFAULT now(),
    ended_at                timestamptz,
    last_error              text
);

CREATE TABLE morango.transfer_sessions (
    id                      uuid PRIMARY KEY,
    sync_session_id         uuid NOT NULL REFERENCES morango.sync_sessions (id) ON DELETE CASCADE,
    push                    boolean NOT NULL,
    filter                  text[] NOT NULL DEFAULT '{}',
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
    local_fsic              jsonb,
    remote_fsic             jsonb,
    started_at              timestamptz NOT NULL DEFAULT now(),
    last_activity_at        timestamptz NOT NULL DEFAULT now(),
    ended_at                timestamptz,
    last_error              text
);
CREATE INDEX transfer_sessions_sync ON morango.transfer_sessions (sync_session_id);

/*
 * The buffer: outgoing on the producer, incoming on the receiver (the
 * transfer session says which), one row per record in a transfer.
 */
CREATE TABLE morango.buffer (
    transfer_session_id         uuid NOT NULL REFERENCES morango.transfer_sessions (id) ON DELETE CASCADE,
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
    PRIMARY KEY (transfer_session_id, record_id),
    UNIQUE (transfer_session_id, seq)
);

CREATE TABLE morango.record_max_counter_buffer (
    transfer_session_id uuid NOT NULL REFERENCES morango.transfer_sessions (id) ON DELETE CASCADE,
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
                                       model_name text DEFAULT NULL)
RETURNS void
LANGUAGE C
AS 'MODULE_PATHNAME', 'morango_register_model';
COMMENT ON FUNCTION morango.register_model(regclass, text, text, text, text) IS
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
-- Keep morango.models in step with dropped tables
-- -------------------------------------------------------------------------

CREATE FUNCTION morango.on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql
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
-- Privileges: nothing for PUBLIC but the identity getters and the id rule.
-- The trigger function must stay executable by whoever writes a
-- registered table.
-- -------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA morango FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA morango FROM PUBLIC;
GRANT USAGE ON SCHEMA morango TO PUBLIC;
GRANT EXECUTE ON FUNCTION morango.capture_trigger() TO PUBLIC;
GRANT EXECUTE ON FUNCTION morango.instance_id() TO PUBLIC;
GRANT EXECUTE ON FUNCTION morango.database_id() TO PUBLIC;
GRANT EXECUTE ON FUNCTION morango.record_id(text, text, text) TO PUBLIC;
