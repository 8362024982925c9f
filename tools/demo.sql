-- tools/demo.sql: a small school-like schema under morango (run by tools/demo.sh)
\set ON_ERROR_STOP on
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION morango;

CREATE TABLE facility (id uuid PRIMARY KEY, name text NOT NULL);
CREATE TABLE learner (
    id uuid PRIMARY KEY,
    facility_id uuid NOT NULL REFERENCES facility,
    username text NOT NULL
);
CREATE TABLE attempt_log (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    learner_id uuid NOT NULL REFERENCES learner,
    facility_id uuid NOT NULL,
    item text NOT NULL,
    correct boolean NOT NULL,
    at timestamptz NOT NULL DEFAULT '2026-11-26 10:00:00+00'
);

-- partitions: per facility for users, per facility and user for logs
\o /dev/null
SELECT FROM morango.register_model('facility', 'facilitydata', partition => 'id::text');
SELECT FROM morango.register_model('learner', 'facilitydata',
                              partition => $$facility_id || ':user:' || id$$);
SELECT FROM morango.register_model('attempt_log', 'facilitydata',
                              partition => $$facility_id || ':user:' || learner_id || ':log'$$);
\o

INSERT INTO facility VALUES ('f0000000-0000-0000-0000-000000000001', 'Riverside School');
INSERT INTO learner VALUES
    ('a0000000-0000-0000-0000-000000000001', 'f0000000-0000-0000-0000-000000000001', 'amina'),
    ('a0000000-0000-0000-0000-000000000002', 'f0000000-0000-0000-0000-000000000001', 'bo');
INSERT INTO attempt_log (learner_id, facility_id, item, correct)
SELECT ('a0000000-0000-0000-0000-00000000000' || (1 + g % 2))::uuid, 'f0000000-0000-0000-0000-000000000001',
       'exercise-' || g, g % 3 <> 0
FROM generate_series(1, 6) g;

\echo
\echo '1. The trigger notes each changed row (table, primary key) in morango.changes:'
SELECT model AS "table", count(*) AS changed_rows, min(key) AS a_key
FROM morango.changes GROUP BY model ORDER BY 1;

\echo '2. morango.serialize() writes them to the store, all stamped with one new version (instance, counter):'
SELECT morango.serialize() AS stamped;
SELECT model_name, partition FROM morango.store ORDER BY model_name, partition LIMIT 4;
SELECT model_name, count(*) AS records, min(last_saved_counter) AS counter,
       bool_and(last_saved_instance = morango.instance_id()) AS by_this_instance
FROM morango.store GROUP BY model_name ORDER BY model_name;

\echo '3. An update and a delete become new versions; the delete keeps its data as a tombstone:'
UPDATE learner SET username = 'amina.k' WHERE username = 'amina';
DELETE FROM attempt_log WHERE item = 'exercise-6';
SELECT morango.serialize() AS stamped;
SELECT model_name, serialized->>'username' AS username, serialized->>'item' AS item,
       deleted, last_saved_counter AS counter
FROM morango.store WHERE last_saved_counter = 2 ORDER BY model_name;

\echo '4. What this database knows it holds, per partition prefix (database max counters):'
SELECT partition = '' AS whole_database, counter FROM morango.database_max_counters;

\echo '5. A version arriving from a peer is written back into the tables by morango.deserialize():'
INSERT INTO morango.store (id, profile, model_name, partition, source_id, serialized,
                           last_saved_instance, last_saved_counter, dirty_bit)
SELECT morango.record_id(p, s, 'learner'), 'facilitydata', 'learner', p, s,
       jsonb_build_object('id', s, 'facility_id', 'f0000000-0000-0000-0000-000000000001', 'username', 'chidi'),
       'bbbbbbbb-0000-0000-0000-000000000000', 1, true
FROM (SELECT 'f0000000-0000-0000-0000-000000000001:user:a0000000-0000-0000-0000-000000000003' AS p,
             'a0000000-0000-0000-0000-000000000003' AS s) v;
SELECT * FROM morango.deserialize('facilitydata');
SELECT username FROM learner ORDER BY username;
