--
-- capture: the trigger records INSERT / UPDATE / DELETE in the store as pending
--
\set VERBOSITY default
SELECT morango.serialize() >= 0 AS serialized_earlier_rows;

-- insert: a pending row with the record id from the id rule
INSERT INTO learner VALUES (3, '00000000-0000-0000-0000-0000000000f1', 'cy', 5);
SELECT s.id = morango.record_id('00000000-0000-0000-0000-0000000000f1:user:' || '${id}', '3', 'learner') AS template_id,
       s.id = morango.record_id('00000000-0000-0000-0000-0000000000f1:user:3', '3', 'learner') AS rule_id,
       s.app_key, s.pending, s.pending_serialized, s.last_saved_counter
FROM morango.store s WHERE model_name = 'learner' AND source_id = '3';

-- update: still one store row, new pending data; the stamped version is untouched
SELECT morango.serialize() > 0 AS stamped;
UPDATE learner SET username = 'cyrus' WHERE id = 3;
SELECT serialized->>'username' AS stamped_name, pending, pending_serialized->>'username' AS pending_name
FROM morango.store WHERE model_name = 'learner' AND source_id = '3';

-- partition and source id are frozen at the first serialization: a change of
-- the columns they come from does not move the record
INSERT INTO facility VALUES ('00000000-0000-0000-0000-0000000000f2', 'South', NULL);
UPDATE learner SET facility_id = '00000000-0000-0000-0000-0000000000f2' WHERE id = 3;
SELECT partition, pending_serialized->>'facility_id' AS now_in
FROM morango.store WHERE model_name = 'learner' AND source_id = '3';
SELECT count(*) FROM morango.store WHERE model_name = 'learner' AND source_id = '3';

-- delete: a soft delete keeps the data
DELETE FROM learner WHERE id = 3;
SELECT pending, pending_serialized->>'username' AS kept FROM morango.store
WHERE model_name = 'learner' AND source_id = '3';
-- re-inserting the deleted key un-deletes the same record
INSERT INTO learner VALUES (3, '00000000-0000-0000-0000-0000000000f1', 'cy again', 1);
SELECT count(*), min(pending) AS pending, min(pending_serialized->>'username') AS name
FROM morango.store WHERE model_name = 'learner' AND source_id = '3';

-- hard delete through the setting, for a plain DELETE statement
BEGIN;
SET LOCAL morango.hard_delete = on;
DELETE FROM learner WHERE id = 3;
COMMIT;
SHOW morango.hard_delete;
SELECT pending, pending_serialized FROM morango.store WHERE model_name = 'learner' AND source_id = '3';

-- hard delete through the function, by key and by record id
INSERT INTO learner VALUES (4, '00000000-0000-0000-0000-0000000000f1', 'dee', 1),
                           (5, '00000000-0000-0000-0000-0000000000f1', 'eve', 1);
SELECT morango.hard_delete('learner', '4');
SELECT count(*) FROM learner WHERE id = 4;
SELECT morango.hard_delete(morango.record_id('00000000-0000-0000-0000-0000000000f1:user:5', '5', 'learner'));
SELECT count(*) FROM learner WHERE id = 5;
SELECT source_id, pending, pending_serialized IS NULL AS erased FROM morango.store
WHERE model_name = 'learner' AND source_id IN ('4', '5') ORDER BY 1;
-- an unknown key or record is not an error: false
SELECT morango.hard_delete('learner', '999');
SELECT morango.hard_delete('00000000-0000-0000-0000-000000000000'::uuid);
SELECT morango.hard_delete('nokey_at_all', '1');
-- a key that is not of the key's type
SELECT morango.hard_delete('learner', 'abc');

-- TRUNCATE is refused
TRUNCATE learner;
TRUNCATE facility CASCADE;

-- a changed primary key moves the row: old key deleted, new key recorded
INSERT INTO learner VALUES (6, '00000000-0000-0000-0000-0000000000f1', 'fay', 1);
UPDATE learner SET id = 7 WHERE id = 6;
SELECT source_id, app_key, pending FROM morango.store
WHERE model_name = 'learner' AND source_id IN ('6', '7') ORDER BY 1;

-- an expression that gives no value for a row refuses the write
CREATE TABLE gadget (id int PRIMARY KEY, owner text);
SELECT morango.register_model('gadget', 'facilitydata', partition => 'owner');
INSERT INTO gadget VALUES (1, NULL);
SELECT morango.unregister_model('gadget');
SELECT morango.register_model('gadget', 'facilitydata', partition => $$coalesce(owner, '')$$,
                              source_id => $$nullif(owner, 'nobody')$$);
INSERT INTO gadget VALUES (2, 'nobody');
INSERT INTO gadget VALUES (2, 'somebody');
SELECT partition, source_id FROM morango.store WHERE model_name = 'gadget';
-- a source id that is not unique: the second row would take the first one's record
INSERT INTO gadget VALUES (3, 'somebody');
SELECT morango.unregister_model('gadget');
INSERT INTO gadget VALUES (3, 'somebody');
SELECT morango.register_model('gadget', 'facilitydata', partition => $$coalesce(owner, '')$$,
                              source_id => 'owner');
DELETE FROM gadget WHERE id = 3;
SELECT morango.register_model('gadget', 'facilitydata', partition => $$coalesce(owner, '')$$,
                              source_id => 'owner');

-- multi-column keys
CREATE TABLE attempt (learner_id int, n int, result text, PRIMARY KEY (learner_id, n));
SELECT morango.register_model('attempt', 'facilitydata', partition => $$'attempts:' || learner_id$$);
INSERT INTO attempt VALUES (1, 1, 'ok'), (1, 2, 'fail');
UPDATE attempt SET result = 'ok' WHERE n = 2;
SELECT source_id, app_key, pending, pending_serialized->>'result' AS result
FROM morango.store WHERE model_name = 'attempt' ORDER BY 1;
SELECT morango.hard_delete('attempt', '1');

-- a role that only has rights on the application table can write it;
-- the store is written with the extension owner's rights
GRANT SELECT, INSERT, UPDATE, DELETE ON learner TO regress_morango_app;
GRANT SELECT ON facility TO regress_morango_app;
SET ROLE regress_morango_app;
INSERT INTO learner VALUES (8, '00000000-0000-0000-0000-0000000000f1', 'gus', 1);
UPDATE learner SET score = 2 WHERE id = 8;
SELECT count(*) FROM morango.store;
-- and cannot redirect the registered expressions through search_path
RESET ROLE;
CREATE SCHEMA evil;
CREATE FUNCTION evil.textcat(text, text) RETURNS text LANGUAGE sql AS $$ SELECT 'hijacked' $$;
CREATE OPERATOR evil.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.textcat);
GRANT USAGE ON SCHEMA evil TO regress_morango_app;
SET ROLE regress_morango_app;
SET search_path = evil, pg_catalog, public;
INSERT INTO learner VALUES (9, '00000000-0000-0000-0000-0000000000f1', 'hal', 1);
RESET search_path;
RESET ROLE;
SELECT partition FROM morango.store WHERE model_name = 'learner' AND source_id = '9';
DROP SCHEMA evil CASCADE;
SELECT source_id, pending FROM morango.store WHERE model_name = 'learner' AND source_id IN ('8', '9') ORDER BY 1;

-- a local edit while a received version waits to be deserialized: the local
-- edit wins and the received version goes to the conflict history
SELECT receive('learner', '00000000-0000-0000-0000-0000000000f1:user:8', '8',
               '{"id": 8, "facility_id": "00000000-0000-0000-0000-0000000000f1", "username": "gus (peer)", "score": 9}');
SELECT dirty, conflicts FROM store_view WHERE model_name = 'learner' AND source_id = '8';
UPDATE learner SET username = 'gus (local)' WHERE id = 8;
SELECT dirty_bit, pending, pending_serialized->>'username' AS local_name,
       jsonb_array_length(conflicting_serialized_data) AS conflicts,
       conflicting_serialized_data->0->>'username' AS history
FROM morango.store WHERE model_name = 'learner' AND source_id = '8';
