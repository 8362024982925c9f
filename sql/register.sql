--
-- register: morango.register_model() / unregister_model() and their errors
--
\set VERBOSITY default
CREATE TABLE facility (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    parent_id uuid REFERENCES facility ON DELETE CASCADE
);
CREATE TABLE learner (
    id integer PRIMARY KEY,
    facility_id uuid NOT NULL REFERENCES facility ON DELETE CASCADE,
    username text NOT NULL,
    score numeric DEFAULT 0
);
INSERT INTO facility VALUES ('00000000-0000-0000-0000-0000000000f1', 'North', NULL);

-- existing rows are noted as changes at registration; serialize stores them
SELECT morango.register_model('facility', 'facilitydata', partition => 'id::text', source_id => 'name');
SELECT * FROM changes_view;
SELECT morango.serialize();
SELECT model_name, partition, source_id, changed, ctr FROM store_view;
SELECT model::text, profile, model_name, partition_expr, source_id_expr, pk_columns FROM morango.models;
-- triggers installed
SELECT tgname FROM pg_trigger WHERE tgrelid = 'facility'::regclass AND NOT tgisinternal ORDER BY 1;

-- errors
SELECT morango.register_model('facility', 'facilitydata');
CREATE TABLE nokey (a int, b text);
SELECT morango.register_model('nokey', 'facilitydata');
SELECT morango.register_model('learner', 'facilitydata', model_name => 'facility');
SELECT morango.register_model('learner', 'facilitydata', partition => 'no_such_column');
SELECT morango.register_model('learner', 'facilitydata', source_id => 'username || nope');
SELECT morango.register_model('learner', 'facilitydata', partition => '1); DROP TABLE learner; SELECT (1');
SELECT morango.register_model('learner', 'facilitydata', partition => 'id FROM pg_class');
SELECT morango.register_model('learner', '');
SELECT morango.register_model('learner', NULL);
SELECT morango.register_model('learner', 'facilitydata', model_name => '');
CREATE VIEW learner_view AS SELECT * FROM learner;
SELECT morango.register_model('learner_view', 'facilitydata');
SELECT morango.register_model('no_such_table', 'facilitydata');
-- an expression that fails on the existing rows
INSERT INTO learner VALUES (1, '00000000-0000-0000-0000-0000000000f1', 'ann', 0);
SELECT morango.register_model('learner', 'facilitydata', partition => $$(1 / score)::text$$);
-- a failed registration leaves nothing behind
SELECT count(*) FROM morango.models WHERE model = 'learner'::regclass;
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'learner'::regclass AND NOT tgisinternal;
-- a role that does not own the table
SET ROLE regress_morango_app;
SELECT morango.register_model('learner', 'facilitydata');
RESET ROLE;
GRANT EXECUTE ON FUNCTION morango.register_model(regclass, text, text, text, text, boolean) TO regress_morango_app;
SET ROLE regress_morango_app;
SELECT morango.register_model('learner', 'facilitydata');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION morango.register_model(regclass, text, text, text, text, boolean) FROM regress_morango_app;

-- the good registration: partition per facility, source id default (the key)
SELECT morango.register_model('learner', 'facilitydata',
                              partition => $$facility_id || ':user:' || id$$);
SELECT * FROM changes_view;
SELECT morango.serialize();
SELECT model_name, partition, source_id, ctr, lsi FROM store_view WHERE model_name = 'learner';

-- unregister keeps store rows; writes are no longer recorded, pending
-- changes are dropped
UPDATE learner SET username = 'ann2' WHERE id = 1;
SELECT morango.unregister_model('learner');
SELECT * FROM changes_view;
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'learner'::regclass AND NOT tgisinternal;
INSERT INTO learner VALUES (2, '00000000-0000-0000-0000-0000000000f1', 'ben', 0);
TRUNCATE nokey;
SELECT source_id FROM store_view WHERE model_name = 'learner' ORDER BY 1;
SELECT morango.unregister_model('learner');
SELECT morango.unregister_model('nokey');
-- registering again picks up the existing store row by key, adds the new one
SELECT morango.register_model('learner', 'facilitydata',
                              partition => $$facility_id || ':user:' || id$$);
SELECT source_id, changed FROM store_view WHERE model_name = 'learner' ORDER BY 1;
SELECT morango.serialize();
SELECT source_id, serialized->>'username' AS username, ctr FROM store_view
WHERE model_name = 'learner' ORDER BY 1;

-- dropping a registered table removes its registration, keeps its store rows
CREATE TABLE scratch (k text PRIMARY KEY);
INSERT INTO scratch VALUES ('x');
SELECT morango.register_model('scratch', 'other');
SELECT morango.serialize();
INSERT INTO scratch VALUES ('y');
DROP TABLE scratch;
SELECT count(*) FROM morango.models WHERE model_name = 'scratch';
SELECT count(*) FROM morango.changes;
SELECT model_name, source_id FROM store_view WHERE model_name = 'scratch';
DROP TABLE nokey;
DROP VIEW learner_view;
