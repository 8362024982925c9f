--
-- edges: keys, settings, cascades and privileges at the edges of capture,
-- serialize and deserialize
--
\set VERBOSITY default

-- a role without rights on morango can still drop its own objects (the
-- event trigger that follows drops runs as the extension owner) ...
SET ROLE regress_morango_app;
CREATE TEMP TABLE scratch_app (id int PRIMARY KEY);
DROP TABLE scratch_app;
-- ... but cannot attach the capture trigger to a table of its own
CREATE TEMP TABLE sneaky (id int PRIMARY KEY);
CREATE TRIGGER t AFTER INSERT ON sneaky FOR EACH ROW EXECUTE FUNCTION morango.capture_trigger();
RESET ROLE;

-- a primary key change when the source id does not depend on the key: the
-- record follows the row, in one serialize, in both directions
CREATE TABLE pkmove (id int PRIMARY KEY, name text NOT NULL);
SELECT morango.register_model('pkmove', 'edges', source_id => 'name');
INSERT INTO pkmove VALUES (2, 'a');
SELECT morango.serialize('edges');
UPDATE pkmove SET id = 1;
SELECT morango.serialize('edges');
SELECT app_key, deleted FROM morango.store WHERE model_name = 'pkmove';
UPDATE pkmove SET id = 3;
SELECT morango.serialize('edges');
SELECT app_key, deleted FROM morango.store WHERE model_name = 'pkmove';
SELECT count(*) AS waiting FROM morango.changes;

-- keys do not depend on the session's settings
CREATE TABLE reading (device int, at timestamptz, v float8, PRIMARY KEY (device, at));
SELECT morango.register_model('reading', 'edges');
SET TimeZone = 'UTC';
INSERT INTO reading VALUES (1, '2024-01-01 00:00:00+00', 1);
SELECT morango.serialize('edges');
SET TimeZone = 'America/New_York';
DELETE FROM reading;
SELECT morango.serialize('edges');
SELECT app_key, deleted FROM morango.store WHERE model_name = 'reading';
SET TimeZone = 'Asia/Tokyo';
INSERT INTO reading VALUES (1, '2024-01-01 00:00:00+00', 2);
UPDATE reading SET v = 3;
SELECT morango.serialize('edges');
SELECT count(*) AS records, bool_and(NOT deleted) AS alive,
       min(serialized->>'at') AS at_in_store
FROM morango.store WHERE model_name = 'reading';
RESET TimeZone;
CREATE TABLE fkey (k float8 PRIMARY KEY, v int);
SELECT morango.register_model('fkey', 'edges');
INSERT INTO fkey VALUES (0.1 + 0.2, 1);
SELECT morango.serialize('edges');
SET extra_float_digits = 0;
UPDATE fkey SET v = 2;
SELECT morango.serialize('edges');
RESET extra_float_digits;
SELECT app_key, serialized->>'v' AS v FROM morango.store WHERE model_name = 'fkey';

-- an incoming key written another way (uuid without dashes) is the same key:
-- no local change is noted and no second record appears (the source id is
-- Morango's: 32 hex digits)
CREATE TABLE gizmo (id uuid PRIMARY KEY, label text);
SELECT morango.register_model('gizmo', 'edges', source_id => $$replace(id::text, '-', '')$$);
SELECT receive('gizmo', '', 'd4c3f5f7287ece80fff143b43b16d521',
               '{"id": "d4c3f5f7287ece80fff143b43b16d521", "label": "from peer"}', profile => 'edges') IS NOT NULL;
SELECT * FROM morango.deserialize('edges');
SELECT * FROM gizmo;
SELECT count(*) AS noted FROM morango.changes;
SELECT morango.serialize('edges');
SELECT count(*) AS records, min(app_key) AS app_key FROM morango.store WHERE model_name = 'gizmo';

-- a peer changed a record's primary key: the row moves
SELECT receive('pkmove', '', 'a', '{"id": 7, "name": "a"}', profile => 'edges', ctr => 9) IS NOT NULL;
SELECT * FROM morango.deserialize('edges');
SELECT * FROM pkmove;
SELECT app_key FROM morango.store WHERE model_name = 'pkmove';
SELECT morango.serialize('edges');
SELECT count(*) AS records FROM morango.store WHERE model_name = 'pkmove';

-- a record whose key has the wrong type does not stop the others
SELECT receive('pkmove', '', 'b', '{"id": "not a number", "name": "b"}', profile => 'edges') IS NOT NULL;
SELECT receive('pkmove', '', 'c', '{"id": 8, "name": "c"}', profile => 'edges') IS NOT NULL;
SELECT * FROM morango.deserialize('edges');
SELECT * FROM pkmove ORDER BY id;
SELECT source_id, error FROM store_view WHERE model_name = 'pkmove' AND dirty;
DELETE FROM morango.store WHERE model_name = 'pkmove' AND source_id = 'b';

-- a cascade during deserialize is noted, even for a row written earlier in
-- the same run
CREATE TABLE par (id int PRIMARY KEY);
CREATE TABLE chi (id int PRIMARY KEY, par_id int REFERENCES par ON DELETE CASCADE, v text);
SELECT morango.register_model('par', 'edges');
SELECT morango.register_model('chi', 'edges');
INSERT INTO par VALUES (1);
INSERT INTO chi VALUES (1, 1, 'x');
SELECT morango.serialize('edges');
SELECT receive('chi', '', '1', '{"id": 1, "par_id": 1, "v": "y"}', profile => 'edges', ctr => 2) IS NOT NULL;
SELECT receive('par', '', '1', '{"id": 1}', is_deleted => true, profile => 'edges', ctr => 2) IS NOT NULL;
SELECT * FROM morango.deserialize('edges');
SELECT count(*) AS chi_rows FROM chi;
SELECT * FROM changes_view;
SELECT morango.serialize('edges');
SELECT source_id, deleted FROM morango.store WHERE model_name IN ('par', 'chi') ORDER BY model_name;

-- deserialize inside a trigger of a table deserialize writes: no crash
CREATE FUNCTION nested() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM morango.deserialize('no such profile');
    RETURN NEW;
END $$;
CREATE TRIGGER nested AFTER INSERT ON gizmo FOR EACH ROW EXECUTE FUNCTION nested();
SELECT receive('gizmo', '', '0000000000000000000000000000000a',
               '{"id": "0000000000000000000000000000000a", "label": "nested"}', profile => 'edges') IS NOT NULL;
SELECT * FROM morango.deserialize('edges');
SELECT count(*) AS noted FROM morango.changes;
DROP TRIGGER nested ON gizmo;

-- hard_delete by key uses the key column's exact type
CREATE TABLE code (code char(3) PRIMARY KEY);
SELECT morango.register_model('code', 'edges');
INSERT INTO code VALUES ('abc'), ('a');
SELECT morango.serialize('edges');
SELECT morango.hard_delete('code', 'abc');
SELECT code FROM code;

-- the default source id of a multi-column key is unambiguous
CREATE TABLE pair (a text, b text, PRIMARY KEY (a, b));
SELECT morango.register_model('pair', 'edges');
INSERT INTO pair VALUES ('x:y', 'z'), ('x', 'y:z');
SELECT morango.serialize('edges');
SELECT source_id FROM morango.store WHERE model_name = 'pair' ORDER BY 1;

-- an identity column the record lacks gets its default
CREATE TABLE numbered (id int PRIMARY KEY, seqno int GENERATED BY DEFAULT AS IDENTITY, v text);
SELECT morango.register_model('numbered', 'edges');
SELECT receive('numbered', '', '1', '{"id": 1, "v": "x"}', profile => 'edges') IS NOT NULL;
SELECT * FROM morango.deserialize('edges');
SELECT id, seqno IS NOT NULL AS numbered, v FROM numbered;
SELECT morango.serialize('edges') >= 0 AS ok;

-- a local delete noted before a peer's hard delete of the same record
-- arrives: the tombstone serialize stamps stays hard-deleted (deletes are
-- sticky) and keeps no data (found by the convergence test: a soft
-- tombstone without data, which no receiver could check against its data)
CREATE TABLE gone (id int PRIMARY KEY, v text);
SELECT morango.register_model('gone', 'edges');
INSERT INTO gone VALUES (1, 'x');
SELECT morango.serialize('edges') > 0 AS stamped;
DELETE FROM gone WHERE id = 1;
SELECT receive('gone', '', '1', NULL, is_hard => true, profile => 'edges', ctr => 9) IS NOT NULL;
SELECT morango.serialize('edges') > 0 AS stamped;
SELECT deleted, hard_deleted, serialized, conflicting_serialized_data
FROM morango.store WHERE model_name = 'gone';
