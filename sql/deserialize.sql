--
-- deserialize: store rows received from peers -> application tables
--
\set VERBOSITY default
-- enrol sorts before room, so the registry order is children first;
-- deserialize must still write rooms first
CREATE TABLE room (
    id text PRIMARY KEY,
    name text NOT NULL,
    parent_id text REFERENCES room
);
CREATE TABLE enrol (
    id integer PRIMARY KEY,
    room_id text NOT NULL REFERENCES room,
    note text,
    n integer NOT NULL DEFAULT 42
);
-- room trusts the partition peers declare (verify => false): the tests
-- below give two records of it one key, in different partitions, which a
-- verified model refuses before its keys are looked at (attack_forgery.sql)
SELECT morango.register_model('room', 'school', partition => $$'school'$$, verify => false);
SELECT morango.register_model('enrol', 'school', partition => $$'school:' || room_id$$);

-- a batch from a peer: a child room listed before its parent, enrolments
-- listed before their rooms
SELECT receive('enrol', 'school:r2', '1', '{"id": 1, "room_id": "r2", "note": "first", "n": 1}', profile => 'school') IS NOT NULL;
SELECT receive('room', 'school', 'r2', '{"id": "r2", "name": "Annex", "parent_id": "r1"}', profile => 'school') IS NOT NULL;
SELECT receive('room', 'school', 'r1', '{"id": "r1", "name": "Main", "parent_id": null}', profile => 'school') IS NOT NULL;
SELECT receive('enrol', 'school:r1', '2', '{"id": 2, "room_id": "r1", "note": "second"}', profile => 'school') IS NOT NULL;
SELECT * FROM morango.deserialize('school');
SELECT * FROM room ORDER BY id;
SELECT * FROM enrol ORDER BY id;
-- the store is clean, and writing the tables did not echo back as local changes
SELECT model_name, source_id, dirty, changed, error FROM store_view
WHERE model_name IN ('room', 'enrol') ORDER BY 1, 2;

-- nothing dirty: nothing to do
SELECT * FROM morango.deserialize('school');

-- an update; keys the record lacks keep their local value
SELECT receive('enrol', 'school:r1', '2', '{"id": 2, "room_id": "r1", "n": 7}', profile => 'school', ctr => 2) IS NOT NULL;
SELECT * FROM morango.deserialize('school');
SELECT * FROM enrol WHERE id = 2;

-- bad records do not stop the good ones; they stay dirty with an error
SELECT receive('enrol', 'school:r9', '3', '{"id": 3, "room_id": "r9", "note": "no such room"}', profile => 'school') IS NOT NULL;
SELECT receive('enrol', 'school:r1', '4', '{"id": 4, "room_id": "r1", "n": "not a number"}', profile => 'school') IS NOT NULL;
SELECT receive('enrol', 'school:r1', '5', '{"id": 5, "room_id": "r1", "bogus": true}', profile => 'school') IS NOT NULL;
SELECT receive('enrol', 'school:r1', '6', '{"id": 6, "room_id": "r1", "n": null}', profile => 'school') IS NOT NULL;
SELECT receive('enrol', 'school:r1', '7', '{"id": 7, "room_id": "r1", "note": "fine"}', profile => 'school') IS NOT NULL;
SELECT receive('room', 'elsewhere', 'r1', '{"id": "r1", "name": "Another r1"}', profile => 'school') IS NOT NULL;
SELECT * FROM morango.deserialize('school');
SELECT id, note, n FROM enrol ORDER BY id;
SELECT model_name, source_id, partition, dirty, error FROM store_view
WHERE model_name IN ('room', 'enrol') AND dirty ORDER BY 1, 2, 3;
-- errors are retried: once the parent exists, the child goes in
SELECT receive('room', 'school', 'r9', '{"id": "r9", "name": "Late room"}', profile => 'school') IS NOT NULL;
SELECT * FROM morango.deserialize('school');
SELECT id, room_id FROM enrol WHERE id = 3;
SELECT count(*) AS still_failing FROM morango.records WHERE dirty_bit AND profile = 'school';

-- when a batch fails, its records go in one by one; a child listed before
-- its parent in the same table still goes in after it
SELECT receive('room', 'school', 'r20', '{"id": "r20", "name": "Wing", "parent_id": "r21"}', profile => 'school') IS NOT NULL;
SELECT receive('room', 'school', 'r21', '{"id": "r21", "name": "Block", "parent_id": null}', profile => 'school') IS NOT NULL;
SELECT receive('room', 'school', 'r22', '{"id": "r22", "name": null}', profile => 'school') IS NOT NULL;
SELECT * FROM morango.deserialize('school');
SELECT id, parent_id FROM room WHERE id LIKE 'r2_' ORDER BY id;
SELECT source_id, error FROM store_view WHERE model_name = 'room' AND dirty ORDER BY 1;

-- tombstones: children are deleted before their parents
SELECT receive('room', 'school', 'r9', '{"id": "r9", "name": "Late room"}', is_deleted => true, profile => 'school', ctr => 3) IS NOT NULL;
SELECT receive('enrol', 'school:r9', '3', '{"id": 3, "room_id": "r9"}', is_deleted => true, profile => 'school', ctr => 3) IS NOT NULL;
SELECT * FROM morango.deserialize('school');
SELECT count(*) AS r9_rows FROM room WHERE id = 'r9';
SELECT count(*) AS enrol_3_rows FROM enrol WHERE id = 3;

-- a hard delete from a peer: the row goes, the store keeps no data
SELECT receive('enrol', 'school:r1', '7', NULL, is_hard => true, profile => 'school', ctr => 4) IS NOT NULL;
SELECT * FROM morango.deserialize('school');
SELECT count(*) AS enrol_7_rows FROM enrol WHERE id = 7;
SELECT serialized, deleted, hard_deleted, dirty FROM store_view WHERE model_name = 'enrol' AND source_id = '7';
-- a hard delete of a record never seen here has nothing to delete
SELECT receive('enrol', 'school:r1', '70', NULL, is_hard => true, profile => 'school') IS NOT NULL;
SELECT * FROM morango.deserialize('school');

-- filters: only records under the prefix
SELECT receive('enrol', 'school:r1', '8', '{"id": 8, "room_id": "r1"}', profile => 'school') IS NOT NULL;
SELECT receive('enrol', 'school:r2', '9', '{"id": 9, "room_id": "r2"}', profile => 'school') IS NOT NULL;
SELECT * FROM morango.deserialize('school', ARRAY['school:r2']);
SELECT id FROM enrol WHERE id IN (8, 9) ORDER BY id;
SELECT * FROM morango.deserialize('school', ARRAY['school:r1']);
SELECT id FROM enrol WHERE id IN (8, 9) ORDER BY id;

-- a delete that cascades to rows of another registered table: the cascade
-- is a local change and is recorded as such
SELECT receive('facility', '00000000-0000-0000-0000-0000000000f2', 'South',
               '{"id": "00000000-0000-0000-0000-0000000000f2", "name": "South"}',
               is_deleted => true, ctr => 5) IS NOT NULL;
SELECT id FROM learner WHERE facility_id = '00000000-0000-0000-0000-0000000000f2' ORDER BY id;
SELECT * FROM morango.deserialize('facilitydata');
SELECT count(*) FROM learner WHERE facility_id = '00000000-0000-0000-0000-0000000000f2';
SELECT * FROM changes_view;
SELECT morango.serialize('facilitydata') AS stamped;

-- with no profile, every profile is deserialized
SELECT receive('enrol', 'school:r1', '10', '{"id": 10, "room_id": "r1"}', profile => 'school') IS NOT NULL;
SELECT * FROM morango.deserialize();
SELECT count(*) FROM enrol WHERE id = 10;

-- batches: with morango.batch_size = 2, many records go in two at a time;
-- a bad record fails only itself, and a key taken by a record of an
-- earlier batch is still refused
SET morango.batch_size = 2;
SELECT receive('room', 'school', 'r3' || g, format('{"id": "r3%s", "name": "Batch %s"}', g, g)::jsonb, profile => 'school') IS NOT NULL
FROM generate_series(0, 6) g;
SELECT receive('enrol', 'school:r3' || g, (300 + g)::text,
               format('{"id": %s, "room_id": "r3%s", "n": %s}', 300 + g, g, CASE WHEN g = 3 THEN '"bad"' ELSE g::text END)::jsonb,
               profile => 'school') IS NOT NULL
FROM generate_series(0, 6) g;
SELECT receive('room', 'batch-elsewhere', 'r35', '{"id": "r35", "name": "Twin of r35"}', profile => 'school') IS NOT NULL;
SELECT * FROM morango.deserialize('school');
SELECT count(*) AS batch_rooms, string_agg(name, ', ' ORDER BY id) FILTER (WHERE id = 'r35') AS r35
FROM room WHERE id LIKE 'r3_';
SELECT id, n FROM enrol WHERE id BETWEEN 300 AND 399 ORDER BY id;
SELECT model_name, source_id, partition, error FROM store_view
WHERE dirty AND (source_id LIKE 'r3_' OR source_id LIKE '30_') ORDER BY 1, 2, 3;
RESET morango.batch_size;

-- a re-key onto a key another record holds is refused, and retrying the
-- refused record never writes over the other record's row
SELECT receive('room', 'school', 'rk1', '{"id": "rk1", "name": "one"}', profile => 'school') IS NOT NULL;
SELECT receive('room', 'school', 'rk2', '{"id": "rk2", "name": "two"}', profile => 'school') IS NOT NULL;
SELECT * FROM morango.deserialize('school');
SELECT receive('room', 'school', 'rk1', '{"id": "rk2", "name": "one, renamed onto two"}', profile => 'school', ctr => 2) IS NOT NULL;
SELECT * FROM morango.deserialize('school');
SELECT * FROM morango.deserialize('school');
SELECT id, name FROM room WHERE id IN ('rk1', 'rk2') ORDER BY id;
SELECT source_id, error FROM store_view WHERE model_name = 'room' AND source_id IN ('rk1', 'rk2') AND dirty;

-- bad filters
SELECT * FROM morango.deserialize('school', '{}');

-- the invariants hold (doc/invariants.md) ...
SELECT * FROM morango.check_invariants();
-- ... and the checker reports broken ones
BEGIN;
UPDATE morango.store SET last_saved_counter = last_saved_counter + 1000
WHERE id = (SELECT id FROM morango.store WHERE NOT hard_deleted ORDER BY id LIMIT 1);
UPDATE morango.instances SET counter = 0;
UPDATE morango.store SET source_id = source_id || '-moved'
WHERE id = (SELECT id FROM morango.store WHERE NOT hard_deleted ORDER BY id DESC LIMIT 1);
UPDATE morango.store SET hard_deleted = true, deleted = false
WHERE id = (SELECT id FROM morango.store WHERE NOT hard_deleted ORDER BY id DESC LIMIT 1);
INSERT INTO morango.record_max_counter_buffer (transfer_session_id, record_id, instance_id, counter)
VALUES ('99999999-9999-9999-9999-999999999999', '99999999-9999-9999-9999-999999999999',
        'aaaaaaaa-0000-0000-0000-000000000000', 1);
SELECT DISTINCT invariant FROM morango.check_invariants() ORDER BY 1;
ROLLBACK;
