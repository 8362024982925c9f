--
-- attack_forgery: a peer whose certificate lets it write one learner's
-- partition pushes records that say they are in that partition while their
-- data belongs elsewhere (issue 12, item 1 and 6c): another learner's grade,
-- a staff memo, a row whose key is not its source id, a tombstone aimed at
-- another learner's row.  Every one is refused with the chunk, nothing
-- changes; an honest record in the same partition goes in.  Records of a
-- model not registered here are stored, and checked when the model is.
--
-- The attacker is a peer role holding a valid single-user certificate for
-- learner u1, and talks to the peer API as a device would.
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP DATABASE IF EXISTS regress_forgery;
CREATE DATABASE regress_forgery;
DO $$ BEGIN CREATE ROLE regress_forger LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
RESET client_min_messages;
\c regress_forgery
CREATE EXTENSION morango;
SELECT morango.grant_peer('regress_forger');
INSERT INTO morango.scope_definitions
    (id, profile, primary_scope_param_key, read_write_filter_template, read_filter_template,
     write_filter_template)
VALUES ('full-facility', 'facilitydata', 'dataset_id', '${dataset_id}', '', ''),
       ('single-user', 'facilitydata', 'dataset_id', '${dataset_id}:user-rw:${user_id}',
        E'${dataset_id}:allusers-ro\n${dataset_id}:user-ro:${user_id}', '${dataset_id}:anonymous');
SELECT morango.create_root_certificate('full-facility') AS root \gset
SELECT replace(:'root', '-', '') AS ds \gset
SELECT morango.issue_certificate(:'root', 'single-user',
                                 jsonb_build_object('dataset_id', :'ds', 'user_id', 'u1')) AS u1cert \gset

-- the facility's data: grades per learner, staff memos
CREATE TABLE grade (id text PRIMARY KEY, dataset text NOT NULL, user_id text NOT NULL, grade text NOT NULL);
CREATE TABLE memo (id text PRIMARY KEY, dataset text NOT NULL, body text NOT NULL);
SELECT morango.register_model('grade', 'facilitydata', partition => $$dataset || ':user-rw:' || user_id$$);
SELECT morango.register_model('memo', 'facilitydata', partition => $$dataset || ':staff'$$);
INSERT INTO grade VALUES ('g2', :'ds', 'u2', 'B');
INSERT INTO memo VALUES ('m1', :'ds', 'staff only');
SELECT morango.serialize() AS serialized;

\i sql/peer_fixture.psql
-- a record as a device sends it, stamped by the attacker's instance
CREATE FUNCTION rec(seq integer, model text, part text, src text, data jsonb,
                    is_deleted boolean DEFAULT false, is_hard boolean DEFAULT false) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', morango.record_id(part, src, model), 'seq', seq, 'profile', 'facilitydata',
        'model_name', model, 'partition', part, 'source_id', src,
        'serialized', CASE WHEN is_hard THEN '{}'::jsonb ELSE data END,
        'deleted', is_deleted OR is_hard, 'hard_deleted', is_hard,
        'last_saved_instance', 'c0000000-0000-0000-0000-000000000001', 'last_saved_counter', 5,
        'conflicting_serialized_data', '[]'::jsonb,
        'rmcs', jsonb_build_object('c0000000-0000-0000-0000-000000000001', 5))
$$;
-- push a chunk; the dataset id and record ids (random) are masked in the answer
CREATE FUNCTION push(chunk jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(regexp_replace(
               try(format('SELECT morango.peer_push_chunk(%L, %L)',
                          '7a000000-0000-0000-0000-00000000f001', pack(chunk))),
               '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<record>', 'g'),
           '[0-9a-f]{32}', '<ds>', 'g')
$$;
GRANT EXECUTE ON FUNCTION fingerprint(), try(text), pack(jsonb),
    rec(integer, text, text, text, jsonb, boolean, boolean), push(jsonb) TO regress_forger;

-- the device proves it holds u1's certificate (the handshake a sync makes)
\set ss '5e000000-0000-0000-0000-00000000f001'
SELECT morango.peer_nonce() AS nonce \gset
SELECT morango.certificate_sign(:'u1cert',
           morango.handshake_message(:'nonce', :'ss', :'u1cert', :'root', 'facilitydata')) AS sig,
       morango.certificate_chain(:'u1cert') AS chain \gset
SET ROLE regress_forger;
SELECT morango.peer_authenticate(:'ss', 'facilitydata', :'chain', :'root', :'nonce', :'sig') IS NOT NULL
    AS authenticated;
-- and opens a push of its own partition, which its scope allows
SELECT morango.peer_begin(3, :'ss', '7a000000-0000-0000-0000-00000000f001', 'facilitydata', true,
                          ARRAY[:'ds' || ':user-rw:u1'], 'c0000000-0000-0000-0000-000000000001',
                          jsonb_build_object('super', '{}'::jsonb, 'sub', jsonb_build_object(
                              :'ds' || ':user-rw:u1',
                              '{"c0000000-0000-0000-0000-000000000001": 5}'::jsonb)), '{}')->>'stage' AS opened;
SELECT fingerprint() AS fp0 \gset

-- another learner's grade, a staff memo, filed under u1's partition
SELECT push(jsonb_build_array(rec(1, 'grade', :'ds' || ':user-rw:u1', 'g3',
            jsonb_build_object('id', 'g3', 'dataset', :'ds', 'user_id', 'u2', 'grade', 'F'))))
    AS u2s_grade;
SELECT push(jsonb_build_array(rec(1, 'memo', :'ds' || ':user-rw:u1', 'm2',
            jsonb_build_object('id', 'm2', 'dataset', :'ds', 'body', 'forged memo'))))
    AS a_staff_memo;
-- a source id that is not the row's key: the hub's own later row f-new
-- would attach to this record, in u1's partition
SELECT push(jsonb_build_array(rec(1, 'grade', :'ds' || ':user-rw:u1', 'x1',
            jsonb_build_object('id', 'f-new', 'dataset', :'ds', 'user_id', 'u1', 'grade', 'A'))))
    AS key_is_not_source;
-- a tombstone whose data names u2's grade g2 (it would delete that row)
SELECT push(jsonb_build_array(rec(1, 'grade', :'ds' || ':user-rw:u1', 'g2',
            jsonb_build_object('id', 'g2', 'dataset', :'ds', 'user_id', 'u2', 'grade', 'B'), true)))
    AS tombstone_of_u2s_row;
-- a forged record hidden among honest ones still rejects the whole chunk
SELECT push(jsonb_build_array(
            rec(1, 'grade', :'ds' || ':user-rw:u1', 'g1',
                jsonb_build_object('id', 'g1', 'dataset', :'ds', 'user_id', 'u1', 'grade', 'A')),
            rec(2, 'grade', :'ds' || ':user-rw:u1', 'g4',
                jsonb_build_object('id', 'g4', 'dataset', :'ds', 'user_id', 'u2', 'grade', 'A'))))
    AS one_forged_among_honest;
-- data that cannot be read as the partition's columns
SELECT push(jsonb_build_array(rec(1, 'grade', :'ds' || ':user-rw:u1', 'g5',
            jsonb_build_object('id', 'g5', 'dataset', 'x', 'user_id', jsonb_build_array('u1'), 'grade', 'A'))))
    AS unreadable_partition_columns;
SELECT fingerprint() = :'fp0' AS nothing_changed;

-- honest: u1's own grade, a hard delete of a record of u1's (data-less,
-- its id ties it to u1's partition), and a note, a model this database
-- does not have yet, whose data says u2
SELECT push(jsonb_build_array(
            rec(1, 'grade', :'ds' || ':user-rw:u1', 'g1',
                jsonb_build_object('id', 'g1', 'dataset', :'ds', 'user_id', 'u1', 'grade', 'A')),
            rec(2, 'grade', :'ds' || ':user-rw:u1', 'g9', NULL, is_hard => true),
            rec(3, 'note', :'ds' || ':user-rw:u1', 'n1',
                jsonb_build_object('id', 'n1', 'dataset', :'ds', 'user_id', 'u2', 'body', 'forged')),
            rec(4, 'note', :'ds' || ':user-rw:u1', 'n2',
                jsonb_build_object('id', 'n2', 'dataset', :'ds', 'user_id', 'u1', 'body', 'mine'))))
    AS honest;
SELECT morango.peer_finish('7a000000-0000-0000-0000-00000000f001', 4) - 'stage' - 'status' AS finished;
RESET ROLE;
SELECT id, user_id, grade FROM grade ORDER BY id;
SELECT id, body FROM memo ORDER BY id;

-- the note model is registered now: the forged note is never written, and
-- loses its key, so that the hub's own row n1 (u2's) makes a record of its own
CREATE TABLE note (id text PRIMARY KEY, dataset text NOT NULL, user_id text NOT NULL, body text NOT NULL);
SELECT morango.register_model('note', 'facilitydata', partition => $$dataset || ':user-rw:' || user_id$$);
SELECT * FROM morango.deserialize('facilitydata');
SELECT id, user_id, body FROM note ORDER BY id;
SELECT source_id, app_key, dirty_bit, deserialization_error IS NOT NULL AS refused
FROM morango.records WHERE model_name = 'note' ORDER BY source_id;
SELECT regexp_replace(deserialization_error, '[0-9a-f]{32}', '<ds>', 'g') AS why
FROM morango.records WHERE model_name = 'note' AND deserialization_error IS NOT NULL;
INSERT INTO note VALUES ('n1', :'ds', 'u2', 'the hub''s own');
SELECT morango.serialize() AS serialized;
SELECT source_id, replace(partition, :'ds', '<ds>') AS partition, app_key, serialized->>'body' AS body
FROM morango.store WHERE model_name = 'note' ORDER BY source_id, app_key;
SELECT * FROM morango.check_invariants();

\c contrib_regression
SET client_min_messages = warning;
DROP DATABASE regress_forgery WITH (FORCE);
DROP ROLE regress_forger;
RESET client_min_messages;
