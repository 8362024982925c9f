--
-- setup: install the extension and the helpers the other tests share.
--
CREATE EXTENSION morango;

-- the schema and its catalog
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'morango' AND c.relkind = 'r' ORDER BY 1;

-- a fresh database has one current identity, counter 0
SELECT count(*) AS identities, bool_and(counter = 0) AS counter_zero
FROM morango.instances WHERE current;
SELECT morango.instance_id() IS NOT NULL AS has_instance,
       morango.database_id() IS NOT NULL AS has_database;

-- PUBLIC may use the getters and the id rule, nothing else
DO $$ BEGIN CREATE ROLE regress_morango_app LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
SET ROLE regress_morango_app;
SELECT morango.instance_id() IS NOT NULL AS getter_works, morango.record_id('', 'x', 'y') IS NOT NULL AS id_rule_works;
SELECT count(*) FROM morango.store;
SELECT morango.serialize();
SELECT morango.deserialize();
SELECT morango.register_model('pg_class', 'p');
RESET ROLE;

/*
 * Test helper: put a version of a record into the store as if it had
 * arrived from a peer (what the dequeue step does): dirty, stamped by a
 * foreign instance.
 */
CREATE FUNCTION receive(model text, part text, src text, data jsonb,
                        is_deleted boolean DEFAULT false, is_hard boolean DEFAULT false,
                        profile text DEFAULT 'facilitydata', ctr bigint DEFAULT 1)
RETURNS uuid LANGUAGE sql AS $$
    WITH s AS (
        INSERT INTO morango.store AS s (id, profile, model_name, partition, source_id, serialized,
                                        deleted, hard_deleted, last_saved_instance, last_saved_counter)
        VALUES (morango.record_id(part, src, model), profile, model, part, src,
                CASE WHEN is_hard THEN '{}' ELSE data END, is_deleted OR is_hard, is_hard,
                'aaaaaaaa-0000-0000-0000-000000000000', ctr)
        ON CONFLICT (id) DO UPDATE SET serialized = EXCLUDED.serialized, deleted = EXCLUDED.deleted,
            hard_deleted = EXCLUDED.hard_deleted, last_saved_instance = EXCLUDED.last_saved_instance,
            last_saved_counter = EXCLUDED.last_saved_counter
        RETURNING id, profile, model_name
    ), d AS (
        -- dirty, its key not computed yet
        INSERT INTO morango.store_dirty AS d (profile, model_name, id)
        SELECT profile, model_name, id FROM s
        ON CONFLICT (profile, model_name, id) DO UPDATE SET keyed = false, error = NULL
    )
    -- and its version vector holds that version, as after a dequeue
    INSERT INTO morango.record_max_counters AS r (record_id, instance_id, counter)
    SELECT id, 'aaaaaaaa-0000-0000-0000-000000000000', ctr FROM s
    ON CONFLICT (record_id, instance_id) DO UPDATE SET counter = GREATEST(r.counter, EXCLUDED.counter)
    RETURNING record_id
$$;

-- Test helper: the store as a readable table (no random ids); "changed"
-- says a local change of the record waits for serialize
CREATE VIEW store_view AS
SELECT s.model_name, s.partition, s.source_id, s.serialized, s.deleted, s.hard_deleted,
       s.last_saved_counter AS ctr,
       CASE WHEN s.last_saved_instance = morango.instance_id() THEN 'local' ELSE 'peer' END AS lsi,
       EXISTS (SELECT 1 FROM morango.changes c JOIN morango.models m ON m.model = c.model
               WHERE m.profile = s.profile AND m.model_name = s.model_name AND c.key = s.app_key) AS changed,
       s.dirty_bit AS dirty, s.deserialization_error AS error,
       jsonb_array_length(s.conflicting_serialized_data) AS conflicts
FROM morango.records s;

-- Test helper: the changes waiting for serialize
CREATE VIEW changes_view AS
SELECT model::text AS model, key, hard FROM morango.changes;
