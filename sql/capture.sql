--
-- capture: the trigger notes changed rows in morango.changes; serialize
-- turns them into store versions
--
\set VERBOSITY default

-- insert: the key is noted, nothing else happens yet
INSERT INTO learner VALUES (3, '00000000-0000-0000-0000-0000000000f1', 'cy', 5);
SELECT * FROM changes_view;
SELECT count(*) FROM morango.store WHERE model_name = 'learner' AND source_id = '3';
-- serialize writes the record, with the id of the id rule
SELECT morango.serialize();
SELECT s.id = morango.record_id('00000000-0000-0000-0000-0000000000f1:user:3', '3', 'learner') AS rule_id,
       s.app_key, s.serialized, s.deleted
FROM morango.store s WHERE model_name = 'learner' AND source_id = '3';
SELECT * FROM changes_view;

-- update: noted; the stamped version is untouched until serialize
UPDATE learner SET username = 'cyrus' WHERE id = 3;
SELECT * FROM changes_view;
SELECT serialized->>'username' AS stamped_name, changed FROM store_view
WHERE model_name = 'learner' AND source_id = '3';
-- an update that changes nothing makes no new version
UPDATE learner SET score = score WHERE id = 3;
SELECT morango.serialize();
SELECT morango.serialize() AS nothing_left;
UPDATE learner SET score = score WHERE id = 3;
SELECT morango.serialize() AS unchanged_row;
SELECT count(*) AS consumed FROM morango.changes;

-- partition and source id are frozen at the first serialization, and
-- receivers check that a record's data still gives them: an update that
-- would move the record to another partition is not stamped (it waits,
-- with a warning) ...
INSERT INTO facility VALUES ('00000000-0000-0000-0000-0000000000f2', 'South', NULL);
UPDATE learner SET facility_id = '00000000-0000-0000-0000-0000000000f2' WHERE id = 3;
SELECT morango.serialize();
SELECT partition, serialized->>'facility_id' AS now_in
FROM morango.store WHERE model_name = 'learner' AND source_id = '3';
SELECT count(*) FROM morango.store WHERE model_name = 'learner' AND source_id = '3';
-- ... until the row is put back
UPDATE learner SET facility_id = '00000000-0000-0000-0000-0000000000f1' WHERE id = 3;
SELECT morango.serialize();
SELECT * FROM changes_view;
-- a table registered with verify => false keeps the record where it was
-- first serialized and stamps the new data (receivers trust the partition)
CREATE TABLE moving (id int PRIMARY KEY, zone text NOT NULL);
SELECT morango.register_model('moving', 'facilitydata', partition => 'zone', verify => false);
INSERT INTO moving VALUES (1, 'a');
SELECT morango.serialize();
UPDATE moving SET zone = 'b';
SELECT morango.serialize();
SELECT partition, serialized->>'zone' AS now_in FROM morango.store WHERE model_name = 'moving';
SELECT morango.unregister_model('moving');
DROP TABLE moving;
DELETE FROM morango.store WHERE model_name = 'moving';

-- delete: a soft delete keeps the last data as a tombstone
DELETE FROM learner WHERE id = 3;
SELECT * FROM changes_view;
SELECT morango.serialize();
SELECT deleted, hard_deleted, serialized->>'username' AS kept FROM morango.store
WHERE model_name = 'learner' AND source_id = '3';
-- re-inserting the deleted key un-deletes the same record
INSERT INTO learner VALUES (3, '00000000-0000-0000-0000-0000000000f1', 'cy again', 1);
SELECT morango.serialize();
SELECT count(*), bool_and(NOT deleted) AS alive, min(serialized->>'username') AS name
FROM morango.store WHERE model_name = 'learner' AND source_id = '3';
-- a row inserted and deleted between two serializes leaves nothing
INSERT INTO learner VALUES (30, '00000000-0000-0000-0000-0000000000f1', 'brief', 1);
DELETE FROM learner WHERE id = 30;
SELECT morango.serialize();
SELECT count(*) FROM morango.store WHERE model_name = 'learner' AND source_id = '30';
SELECT count(*) FROM morango.changes;

-- hard delete through the setting, for a plain DELETE statement
BEGIN;
SET LOCAL morango.hard_delete = on;
DELETE FROM learner WHERE id = 3;
COMMIT;
SHOW morango.hard_delete;
SELECT * FROM changes_view;
SELECT morango.serialize();
SELECT serialized, deleted, hard_deleted FROM morango.store
WHERE model_name = 'learner' AND source_id = '3';

-- hard delete through the function, by key and by record id, and of a
-- record that is already a tombstone
INSERT INTO learner VALUES (4, '00000000-0000-0000-0000-0000000000f1', 'dee', 1),
                           (5, '00000000-0000-0000-0000-0000000000f1', 'eve', 1),
                           (6, '00000000-0000-0000-0000-0000000000f1', 'fin', 1);
SELECT morango.serialize();
DELETE FROM learner WHERE id = 6;
SELECT morango.serialize();
SELECT morango.hard_delete('learner', '4');
SELECT count(*) FROM learner WHERE id = 4;
SELECT morango.hard_delete(morango.record_id('00000000-0000-0000-0000-0000000000f1:user:5', '5', 'learner'));
SELECT count(*) FROM learner WHERE id = 5;
SELECT morango.hard_delete('learner', '6');
SELECT * FROM changes_view ORDER BY key;
SELECT morango.serialize();
SELECT source_id, deleted, hard_deleted, serialized = '{}' AS erased FROM morango.store
WHERE model_name = 'learner' AND source_id IN ('4', '5', '6') ORDER BY 1;
-- unknown keys and records: false
SELECT morango.hard_delete('learner', '999');
SELECT morango.hard_delete('00000000-0000-0000-0000-000000000000'::uuid);
-- errors
SELECT morango.hard_delete('no_such_table', '1');
SELECT morango.hard_delete('learner', 'abc');
CREATE TABLE unregistered (id int PRIMARY KEY);
SELECT morango.hard_delete('unregistered', '1');
DROP TABLE unregistered;

-- TRUNCATE is refused
TRUNCATE learner;
TRUNCATE facility CASCADE;

-- a changed primary key moves the row: old key deleted, new key recorded
INSERT INTO learner VALUES (7, '00000000-0000-0000-0000-0000000000f1', 'gil', 1);
SELECT morango.serialize();
UPDATE learner SET id = 70 WHERE id = 7;
SELECT * FROM changes_view ORDER BY key;
SELECT morango.serialize();
SELECT source_id, app_key, deleted FROM morango.store
WHERE model_name = 'learner' AND source_id IN ('7', '70') ORDER BY 1;

-- rows whose expressions give no value stay pending, with a warning; the
-- other rows go on
CREATE TABLE gadget (id int PRIMARY KEY, owner text);
SELECT morango.register_model('gadget', 'facilitydata', partition => $$coalesce(owner, '')$$,
                              source_id => $$nullif(owner, 'nobody')$$);
INSERT INTO gadget VALUES (1, 'nobody'), (2, 'somebody');
SELECT morango.serialize();
SELECT partition, source_id FROM morango.store WHERE model_name = 'gadget';
SELECT * FROM changes_view;
-- a row with the record id of another row (the source id is not unique)
-- stays pending, with a warning
UPDATE gadget SET owner = 'anybody' WHERE id = 1;
INSERT INTO gadget VALUES (3, 'somebody');
SELECT morango.serialize();
SELECT partition, source_id, app_key FROM morango.store WHERE model_name = 'gadget' ORDER BY 1;
SELECT * FROM changes_view;
DELETE FROM gadget WHERE id = 3;
SELECT morango.serialize();
SELECT * FROM changes_view;
-- registration refuses a source id that is not unique over existing rows
SELECT morango.unregister_model('gadget');
INSERT INTO gadget VALUES (4, 'anybody');
SELECT morango.register_model('gadget', 'facilitydata', partition => $$coalesce(owner, '')$$,
                              source_id => 'owner');
DELETE FROM gadget WHERE id = 4;
-- an expression that fails for one row holds back its own model only
SELECT morango.register_model('gadget', 'facilitydata',
                              partition => $$(10 / id)::text$$, source_id => 'owner');
INSERT INTO gadget VALUES (0, 'zero');
INSERT INTO learner VALUES (12, '00000000-0000-0000-0000-0000000000f1', 'lou', 1);
SELECT morango.serialize();
SELECT * FROM changes_view ORDER BY key;
DELETE FROM gadget WHERE id = 0;
SELECT morango.serialize();
SELECT morango.unregister_model('gadget');

-- multi-column keys
CREATE TABLE attempt (learner_id int, n int, result text, PRIMARY KEY (learner_id, n));
SELECT morango.register_model('attempt', 'facilitydata', partition => $$'attempts:' || learner_id$$);
INSERT INTO attempt VALUES (1, 1, 'ok'), (1, 2, 'fail');
UPDATE attempt SET result = 'ok' WHERE n = 2;
SELECT * FROM changes_view ORDER BY key;
SELECT morango.serialize();
SELECT source_id, app_key, serialized->>'result' AS result
FROM morango.store WHERE model_name = 'attempt' ORDER BY 1;
SELECT morango.hard_delete('attempt', '1');
BEGIN;
SET LOCAL morango.hard_delete = on;
DELETE FROM attempt WHERE n = 1;
COMMIT;
SELECT morango.serialize();
SELECT source_id, hard_deleted FROM morango.store WHERE model_name = 'attempt' ORDER BY 1;

-- keys of other types: the trigger's key text equals jsonb's
CREATE TABLE odd (ts timestamptz, amount numeric, flag boolean, label text,
                  PRIMARY KEY (ts, amount, flag, label));
SELECT morango.register_model('odd', 'facilitydata');
INSERT INTO odd VALUES ('2026-11-26 10:00:00.5+00', 1.50, true, 'a "quoted" \ label');
SET TimeZone = 'UTC';
SELECT key = (SELECT jsonb_build_array(ts, amount, flag, label)::text FROM odd) AS same_key
FROM morango.changes WHERE model = 'odd'::regclass;
RESET TimeZone;
SELECT morango.serialize();
UPDATE odd SET label = label;
SELECT morango.serialize() AS unchanged;
DELETE FROM odd;
SELECT morango.serialize();
SELECT deleted FROM morango.store WHERE model_name = 'odd';

-- a role that only has rights on the application table can write it
GRANT SELECT, INSERT, UPDATE, DELETE ON learner TO regress_morango_app;
GRANT SELECT ON facility TO regress_morango_app;
SET ROLE regress_morango_app;
INSERT INTO learner VALUES (8, '00000000-0000-0000-0000-0000000000f1', 'gus', 1);
UPDATE learner SET score = 2 WHERE id = 8;
SELECT count(*) FROM morango.changes;
RESET ROLE;
SELECT morango.serialize();

-- registered expressions run with a pinned search_path: a caller's
-- search_path cannot change what they call
CREATE SCHEMA evil;
CREATE FUNCTION evil.textcat(text, text) RETURNS text LANGUAGE sql AS $$ SELECT 'hijacked' $$;
CREATE OPERATOR evil.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.textcat);
INSERT INTO learner VALUES (9, '00000000-0000-0000-0000-0000000000f1', 'hal', 1);
SET search_path = evil, pg_catalog, public;
SELECT morango.serialize();
RESET search_path;
SELECT partition FROM morango.store WHERE model_name = 'learner' AND source_id = '9';
DROP SCHEMA evil CASCADE;

-- a local edit while a received version waits to be deserialized: the
-- local edit wins and the received version goes to the conflict history
SELECT receive('learner', '00000000-0000-0000-0000-0000000000f1:user:8', '8',
               '{"id": 8, "facility_id": "00000000-0000-0000-0000-0000000000f1", "username": "gus (peer)", "score": 9}',
               ctr => 3) IS NOT NULL AS received;
UPDATE learner SET username = 'gus (local)' WHERE id = 8;
SELECT * FROM morango.deserialize('facilitydata');
SELECT username FROM learner WHERE id = 8;
SELECT morango.serialize();
SELECT serialized->>'username' AS name, lsi, dirty, conflicts FROM store_view
WHERE model_name = 'learner' AND source_id = '8';
SELECT conflicting_serialized_data->0->>'username' AS history
FROM morango.store WHERE model_name = 'learner' AND source_id = '8';
