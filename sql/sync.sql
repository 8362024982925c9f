--
-- sync: two and three databases of one cluster syncing over loopback libpq
--
-- three databases a, b, c; a initiates unless said otherwise
\set VERBOSITY default
SET client_min_messages = warning;
DROP DATABASE IF EXISTS regress_morango_a;
DROP DATABASE IF EXISTS regress_morango_b;
DROP DATABASE IF EXISTS regress_morango_c;
DROP DATABASE IF EXISTS regress_morango_d;
CREATE DATABASE regress_morango_a;
CREATE DATABASE regress_morango_b;
CREATE DATABASE regress_morango_c;
CREATE DATABASE regress_morango_d;
RESET client_min_messages;
SELECT format('host=127.0.0.1 port=%s dbname=regress_morango_b user=%s', current_setting('port'), current_user) AS peer_b,
       format('host=127.0.0.1 port=%s dbname=regress_morango_c user=%s', current_setting('port'), current_user) AS peer_c,
       format('host=127.0.0.1 port=%s dbname=regress_morango_a user=%s', current_setting('port'), current_user) AS peer_a,
       format('host=127.0.0.1 port=%s dbname=regress_morango_d user=%s', current_setting('port'), current_user) AS peer_d
\gset

-- the same schema everywhere
\c regress_morango_b
\i sql/sync_schema.psql
\c regress_morango_c
\i sql/sync_schema.psql
\c regress_morango_d
\i sql/sync_schema.psql
\c regress_morango_a
\i sql/sync_schema.psql

-- a view of a database's data that does not depend on ids or counters
CREATE VIEW sync_state AS
SELECT 'facility' AS t, id, name AS v FROM facility
UNION ALL SELECT 'member', id, username || '/' || score FROM member
UNION ALL SELECT 'attempt', id, item || '/' || correct FROM attempt;

-- data on a, and different data on b
INSERT INTO facility VALUES ('f1', 'North School');
INSERT INTO member VALUES ('m1', 'f1', 'ann', 1), ('m2', 'f1', 'bob', 2);
INSERT INTO attempt VALUES ('a1', 'm1', 'f1', 'q1', true), ('a2', 'm2', 'f1', 'q1', false);
\c regress_morango_b
INSERT INTO facility VALUES ('f2', 'South School');
INSERT INTO member VALUES ('m3', 'f2', 'cid', 3);
\c regress_morango_a

-- a full sync, both ways: a pulls b's data and pushes its own
SELECT morango.sync(:'peer_b', 'facilitydata') IS NOT NULL AS synced;
SELECT * FROM sync_state ORDER BY 1, 2;
SELECT push, stage, status, active, records_total, records_transferred
FROM morango.transfer_sessions ORDER BY push;
SELECT status, active, is_server FROM morango.sync_sessions;
SELECT count(*) AS buffered FROM morango.buffer;
\c regress_morango_b
CREATE VIEW sync_state AS
SELECT 'facility' AS t, id, name AS v FROM facility
UNION ALL SELECT 'member', id, username || '/' || score FROM member
UNION ALL SELECT 'attempt', id, item || '/' || correct FROM attempt;
SELECT * FROM sync_state ORDER BY 1, 2;
SELECT push, stage, status, active, records_total, records_transferred
FROM morango.transfer_sessions ORDER BY push;
SELECT status, active, is_server FROM morango.sync_sessions;
\c regress_morango_a

-- nothing changed: nothing moves
SELECT morango.sync(:'peer_b', 'facilitydata') IS NOT NULL AS synced;
SELECT push, records_total FROM morango.transfer_sessions t
JOIN morango.sync_sessions s ON s.id = t.sync_session_id
ORDER BY s.started_at DESC, push LIMIT 2;

-- multi-hop: c gets a's data through b
\c regress_morango_c
CREATE VIEW sync_state AS
SELECT 'facility' AS t, id, name AS v FROM facility
UNION ALL SELECT 'member', id, username || '/' || score FROM member
UNION ALL SELECT 'attempt', id, item || '/' || correct FROM attempt;
SELECT morango.sync(:'peer_b', 'facilitydata', direction => 'pull') IS NOT NULL AS synced;
SELECT * FROM sync_state ORDER BY 1, 2;
-- the versions came along: a's records carry a's instance
SELECT count(DISTINCT last_saved_instance) AS writers FROM morango.store;
\c regress_morango_a

-- the merge matrix (semantics section 6); a syncs with b both ways each time
-- fast-forward: an edit on one side only
UPDATE member SET score = 10 WHERE id = 'm1';
SELECT morango.sync(:'peer_b', 'facilitydata') IS NOT NULL AS synced;
\c regress_morango_b
SELECT * FROM sync_state WHERE id = 'm1';
-- conflict: both sides change the same record (and serialize) before syncing;
-- the initiator's data wins and the other version stays in the history
UPDATE member SET username = 'ann (b)' WHERE id = 'm1';
SELECT morango.serialize() > 0 AS stamped;
\c regress_morango_a
UPDATE member SET username = 'ann (a)' WHERE id = 'm1';
SELECT morango.serialize() > 0 AS stamped;
SELECT morango.sync(:'peer_b', 'facilitydata') IS NOT NULL AS synced;
SELECT conflicts FROM morango.transfer_sessions t JOIN morango.sync_sessions s ON s.id = t.sync_session_id
WHERE NOT t.push ORDER BY s.started_at DESC LIMIT 1;
SELECT * FROM sync_state WHERE id = 'm1';
SELECT conflicting_serialized_data->0->>'username' AS history FROM morango.store WHERE source_id = 'm1';
\c regress_morango_b
SELECT * FROM sync_state WHERE id = 'm1';
SELECT conflicting_serialized_data->0->>'username' AS history FROM morango.store WHERE source_id = 'm1';
-- a local edit not serialized yet while a version arrives: the local edit wins
UPDATE member SET score = 20 WHERE id = 'm3';
SELECT morango.serialize() > 0 AS stamped;
\c regress_morango_a
UPDATE member SET score = 30 WHERE id = 'm3';
SELECT morango.sync(:'peer_b', 'facilitydata') IS NOT NULL AS synced;
SELECT * FROM sync_state WHERE id = 'm3';
\c regress_morango_b
SELECT * FROM sync_state WHERE id = 'm3';
-- delete against update: the delete wins (deletes are sticky)
DELETE FROM attempt WHERE member_id = 'm2';
UPDATE member SET score = 99 WHERE id = 'm2';
SELECT morango.serialize() > 0 AS stamped;
\c regress_morango_a
DELETE FROM member WHERE id = 'm2';
SELECT morango.serialize() > 0 AS stamped;
SELECT morango.sync(:'peer_b', 'facilitydata') IS NOT NULL AS synced;
SELECT * FROM sync_state WHERE id IN ('m2', 'a2');
SELECT deleted FROM morango.store WHERE source_id = 'm2';
\c regress_morango_b
SELECT * FROM sync_state WHERE id IN ('m2', 'a2');
SELECT deleted FROM morango.store WHERE source_id = 'm2';
-- hard delete against update: the hard delete wins and the data is erased everywhere
\c regress_morango_a
INSERT INTO member VALUES ('m4', 'f1', 'dee', 4);
SELECT morango.sync(:'peer_b', 'facilitydata') IS NOT NULL AS synced;
\c regress_morango_b
UPDATE member SET username = 'dee (b)' WHERE id = 'm4';
SELECT morango.serialize() > 0 AS stamped;
\c regress_morango_a
SELECT morango.hard_delete('member', 'm4');
SELECT morango.serialize() > 0 AS stamped;
SELECT morango.sync(:'peer_b', 'facilitydata') IS NOT NULL AS synced;
SELECT serialized, deleted, hard_deleted, conflicting_serialized_data FROM morango.store WHERE source_id = 'm4';
\c regress_morango_b
SELECT count(*) AS m4_rows FROM member WHERE id = 'm4';
SELECT serialized, deleted, hard_deleted, conflicting_serialized_data FROM morango.store WHERE source_id = 'm4';
-- re-create after delete: the record comes back on the other side
\c regress_morango_a
INSERT INTO member VALUES ('m5', 'f1', 'eve', 5);
SELECT morango.sync(:'peer_b', 'facilitydata') IS NOT NULL AS synced;
DELETE FROM member WHERE id = 'm5';
SELECT morango.sync(:'peer_b', 'facilitydata') IS NOT NULL AS synced;
\c regress_morango_b
SELECT count(*) AS m5_rows FROM member WHERE id = 'm5';
\c regress_morango_a
INSERT INTO member VALUES ('m5', 'f1', 'eve again', 6);
SELECT morango.sync(:'peer_b', 'facilitydata') IS NOT NULL AS synced;
\c regress_morango_b
SELECT * FROM sync_state WHERE id = 'm5';
-- in the end both sides hold the same data
SELECT * FROM sync_state ORDER BY 1, 2;
\c regress_morango_a
SELECT * FROM sync_state ORDER BY 1, 2;
-- and c catches up through b, deletes and hard deletes included
\c regress_morango_c
SELECT morango.sync(:'peer_b', 'facilitydata') IS NOT NULL AS synced;
SELECT * FROM sync_state ORDER BY 1, 2;
SELECT source_id, deleted, hard_deleted FROM morango.store WHERE deleted ORDER BY 1;
\c regress_morango_a

-- partial sync: a filter syncs only the partitions under it
\c regress_morango_c
INSERT INTO facility VALUES ('f3', 'East School');
INSERT INTO member VALUES ('m6', 'f3', 'fay', 0);
INSERT INTO member VALUES ('m7', 'f1', 'gus', 0);
\c regress_morango_a
SELECT morango.sync(:'peer_c', 'facilitydata', filter => ARRAY['f3']) IS NOT NULL AS synced;
SELECT * FROM sync_state WHERE id IN ('f3', 'm6', 'm7') ORDER BY 1, 2;
SELECT morango.sync(:'peer_c', 'facilitydata', filter => ARRAY['f1:user:m7']) IS NOT NULL AS synced;
SELECT * FROM sync_state WHERE id IN ('f3', 'm6', 'm7') ORDER BY 1, 2;

-- a partial peer (d, a learner's tablet holding only its own partition)
-- and two full peers: what the tablet writes reaches the second full peer
-- through the first (semantics 4.5), and edits made elsewhere reach the
-- tablet through either
\c regress_morango_d
INSERT INTO facility VALUES ('f1', 'North School');
INSERT INTO member VALUES ('t1', 'f1', 'tia', 0);
INSERT INTO attempt VALUES ('ta1', 't1', 'f1', 'q9', true);
SELECT morango.sync(:'peer_a', 'facilitydata', filter => ARRAY['f1:user:t1']) IS NOT NULL AS synced;
SELECT t, id FROM (SELECT 'member' AS t, id FROM member UNION ALL SELECT 'attempt', id FROM attempt) x
ORDER BY 1, 2;
\c regress_morango_b
SELECT morango.sync(:'peer_a', 'facilitydata') IS NOT NULL AS synced;
SELECT * FROM sync_state WHERE id IN ('t1', 'ta1') ORDER BY 1, 2;
UPDATE member SET score = 5 WHERE id = 't1';
\c regress_morango_d
SELECT morango.sync(:'peer_b', 'facilitydata', filter => ARRAY['f1:user:t1']) IS NOT NULL AS synced;
SELECT id, username, score FROM member ORDER BY id;
\c regress_morango_a
SELECT morango.sync(:'peer_b', 'facilitydata') IS NOT NULL AS synced;
SELECT * FROM sync_state WHERE id IN ('t1', 'ta1') ORDER BY 1, 2;

-- profiles do not cover each other: syncing one profile says nothing about
-- another's records, even under the same partitions
CREATE TABLE note (id text PRIMARY KEY, body text NOT NULL);
SELECT FROM morango.register_model('note', 'notes', partition => $$'f1'$$);
\c regress_morango_b
CREATE TABLE note (id text PRIMARY KEY, body text NOT NULL);
SELECT FROM morango.register_model('note', 'notes', partition => $$'f1'$$);
\c regress_morango_a
INSERT INTO note VALUES ('n1', 'a note');
SELECT morango.serialize('notes') > 0 AS stamped;
INSERT INTO member VALUES ('m8', 'f1', 'hal', 0);
SELECT morango.sync(:'peer_b', 'facilitydata', direction => 'push') IS NOT NULL AS synced;
SELECT morango.sync(:'peer_b', 'notes', direction => 'push') IS NOT NULL AS synced;
\c regress_morango_b
SELECT * FROM note;

-- a peer that cleaned up (closed) a half-done sync: the next sync starts
-- that transfer over there and completes
CREATE TABLE refuse (on_off boolean);
CREATE FUNCTION refuse_store() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM public.refuse WHERE on_off) THEN
        RAISE EXCEPTION 'refused for the test';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON morango.store
    FOR EACH ROW EXECUTE FUNCTION refuse_store();
INSERT INTO refuse VALUES (true);
\c regress_morango_a
INSERT INTO note VALUES ('n2', 'second note');
SELECT morango.sync(:'peer_b', 'notes', direction => 'push') IS NOT NULL AS synced;
\c regress_morango_b
SELECT morango.cleanup('0 seconds') > 0 AS expired;
DROP TRIGGER refuse ON morango.store;
\c regress_morango_a
SELECT morango.sync(:'peer_b', 'notes', direction => 'push') IS NOT NULL AS synced;
SELECT status FROM morango.syncs WHERE profile = 'notes' AND NOT is_server ORDER BY started_at;
\c regress_morango_b
SELECT * FROM note ORDER BY id;

-- a peer cannot make this database skip versions it never saw: claims in a
-- sender's FSIC are capped at counters seen here
\c regress_morango_a
SELECT morango.instance_id() AS a_instance \gset
\c regress_morango_b
SELECT morango.peer_begin(3, '55555555-5555-5555-5555-555555555555', '66666666-6666-6666-6666-666666666666',
                          'notes', true, ARRAY[''], 'bbbbbbbb-0000-0000-0000-000000000000',
                          jsonb_build_object('super', '{}'::jsonb, 'sub',
                              jsonb_build_object('', jsonb_build_object(:'a_instance', 9000000000000000000))), '{}')->>'stage';
SELECT morango.peer_finish('66666666-6666-6666-6666-666666666666', 0)->>'status';
SELECT counter < 1000 AS capped FROM morango.database_max_counters
WHERE profile = 'notes' AND instance_id = :'a_instance' AND partition = '';
\c regress_morango_a
INSERT INTO note VALUES ('n3', 'third note');
SELECT morango.sync(:'peer_b', 'notes', direction => 'push') IS NOT NULL AS synced;
\c regress_morango_b
SELECT * FROM note ORDER BY id;
\c regress_morango_a

-- chunk boundaries: 0, 1, the chunk size and one more record (chunk_size 3)
CREATE TABLE bulk (id integer PRIMARY KEY, v text);
SELECT FROM morango.register_model('bulk', 'bulkdata', partition => $$'bulk'$$);
\c regress_morango_b
CREATE TABLE bulk (id integer PRIMARY KEY, v text);
SELECT FROM morango.register_model('bulk', 'bulkdata', partition => $$'bulk'$$);
\c regress_morango_a
CREATE FUNCTION push_bulk(n integer) RETURNS void LANGUAGE sql AS $$
    INSERT INTO bulk SELECT g, 'v' || g
    FROM generate_series((SELECT COALESCE(max(id), 0) + 1 FROM bulk),
                         (SELECT COALESCE(max(id), 0) + n FROM bulk)) g;
$$;
SELECT push_bulk(0);
SELECT morango.sync(:'peer_b', 'bulkdata', direction => 'push', chunk_size => 3) AS sid \gset
SELECT records_total, records_transferred FROM morango.transfer_sessions WHERE sync_session_id = :'sid';
SELECT push_bulk(1);
SELECT morango.sync(:'peer_b', 'bulkdata', direction => 'push', chunk_size => 3) AS sid \gset
SELECT records_total, records_transferred FROM morango.transfer_sessions WHERE sync_session_id = :'sid';
SELECT push_bulk(3);
SELECT morango.sync(:'peer_b', 'bulkdata', direction => 'push', chunk_size => 3) AS sid \gset
SELECT records_total, records_transferred FROM morango.transfer_sessions WHERE sync_session_id = :'sid';
SELECT push_bulk(4);
SELECT morango.sync(:'peer_b', 'bulkdata', direction => 'push', chunk_size => 3) AS sid \gset
SELECT records_total, records_transferred FROM morango.transfer_sessions WHERE sync_session_id = :'sid';
\c regress_morango_b
SELECT count(*), min(id), max(id) FROM bulk;
-- and the same sizes pulled
INSERT INTO bulk SELECT g, 'b' || g FROM generate_series(101, 104) g;
\c regress_morango_a
SELECT morango.sync(:'peer_b', 'bulkdata', direction => 'pull', chunk_size => 3) AS sid \gset
SELECT records_total, records_transferred FROM morango.transfer_sessions WHERE sync_session_id = :'sid';
SELECT count(*) FROM bulk WHERE id > 100;

-- what a peer receives is validated record by record; a bad record rejects
-- its whole chunk and nothing changes (the peer, abab..., relays records of
-- instance aaaa...; its own are checked against its FSIC: attack_counters)
\c regress_morango_b
SELECT count(*) AS store_before FROM morango.store \gset
SELECT morango.peer_begin(3, '11111111-1111-1111-1111-111111111111', '22222222-2222-2222-2222-222222222222',
                          'facilitydata', true, ARRAY['f1'], 'abababab-0000-0000-0000-000000000000',
                          '{"super": {}, "sub": {}}', '{}')->>'stage' AS stage;
CREATE FUNCTION good_record(seq integer, part text, src text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object(
        'id', morango.record_id(part, src, 'member'), 'seq', seq, 'profile', 'facilitydata',
        'model_name', 'member', 'partition', part, 'source_id', src,
        'serialized', jsonb_build_object('id', src, 'facility_id', 'f1', 'username', 'x', 'score', 0),
        'deleted', false, 'hard_deleted', false,
        'last_saved_instance', 'aaaaaaaa-0000-0000-0000-000000000000', 'last_saved_counter', 5,
        'conflicting_serialized_data', '[]'::jsonb,
        'rmcs', jsonb_build_object('aaaaaaaa-0000-0000-0000-000000000000', 5))
$$;
CREATE FUNCTION try_packed(packed text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM morango.peer_push_chunk('22222222-2222-2222-2222-222222222222', packed);
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE FUNCTION try_chunk(chunk jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT try_packed(morango.pack_chunk(chunk::json))
$$;
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1'),
                                   good_record(2, 'f1:user:v2', 'v2') || '{"id": "00000000-0000-0000-0000-000000000001"}'));
SELECT try_chunk(jsonb_build_array(good_record(1, 'f2:user:v1', 'v1')));
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1') || '{"profile": "other"}'));
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1') || '{"last_saved_counter": 0}'));
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1') || '{"last_saved_counter": -3}'));
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1') || '{"serialized": [1, 2]}'));
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1') || '{"serialized": null}'));
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1') || '{"hard_deleted": true, "deleted": true}'));
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1') || '{"rmcs": {"aaaaaaaa-0000-0000-0000-000000000000": 4}}'));
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1') || '{"rmcs": {"not-a-uuid": 5}}'));
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1') || '{"rmcs": {"aaaaaaaa-0000-0000-0000-000000000000": 5.5}}'));
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1'), good_record(2, 'f1:user:v1', 'v1')));
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1'), good_record(1, 'f1:user:v2', 'v2')));
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1') || '{"source_id": ""}'));
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1') || '{"id": "not a uuid"}'));
SELECT try_chunk('{"not": "an array"}');
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1') || '{"hard_deleted": true}'));
-- packed chunks (how chunks travel): the same checks, plus the packing
SELECT morango.unpack_chunk(morango.pack_chunk('[{"name": "École Élémentaire ✓"}]')) AS round_trip;
SELECT length(morango.pack_chunk(jsonb_agg(good_record(g, 'f1:user:v' || g, 'v' || g))::json))
       < length(jsonb_agg(good_record(g, 'f1:user:v' || g, 'v' || g))::text) / 4 AS compresses
FROM generate_series(1, 100) g;
SELECT try_packed(morango.pack_chunk(jsonb_build_array(good_record(1, 'f2:user:v1', 'v1'))::json));
SELECT try_packed('not base64 at all!');
SELECT try_packed('');
SELECT try_packed(encode('\x00000010789c'::bytea, 'base64'));
-- a header that lies about the size, small or huge
SELECT try_packed(encode(overlay(decode(morango.pack_chunk('[1, 2, 3]'), 'base64')
                                 placing '\x00000002'::bytea from 1 for 4), 'base64'));
SELECT try_packed(encode(overlay(decode(morango.pack_chunk('[1, 2, 3]'), 'base64')
                                 placing '\x7fffffff'::bytea from 1 for 4), 'base64'));
-- valid packing of text that is not json, or not UTF-8
SELECT try_packed(encode('\x00000003'::bytea || '\x789c4b4c4a0600024d0127'::bytea, 'base64'));
SELECT morango.unpack_chunk(encode('\x00000002'::bytea || '\x789c3bac010001b000ec'::bytea, 'base64'));
-- version vectors, checked in C: entries must be (instance uuid: positive
-- bigint) and hold the last saved version
SELECT v AS rmcs, morango.version_vector_check(v::jsonb, 'aaaaaaaa-0000-0000-0000-000000000000', 5) AS problem
FROM unnest(ARRAY[
    '{"aaaaaaaa-0000-0000-0000-000000000000": 5}',
    '{"aaaaaaaa000000000000000000000000": 7, "bbbbbbbb-0000-0000-0000-000000000000": 1}',
    '{"aaaaaaaa-0000-0000-0000-000000000000": 5.0}',
    '{"aaaaaaaa-0000-0000-0000-000000000000": 9223372036854775807}',
    '{"aaaaaaaa-0000-0000-0000-000000000000": 9223372036854775808}',
    '{"aaaaaaaa-0000-0000-0000-000000000000": 0}',
    '{"aaaaaaaa-0000-0000-0000-000000000000": -5}',
    '{"aaaaaaaa-0000-0000-0000-000000000000": 5.5}',
    '{"aaaaaaaa-0000-0000-0000-000000000000": "5"}',
    '{"AAAAAAAA-0000-0000-0000-000000000000": 5}',
    '{"aaaaaaaa-0000-0000-0000-00000000000": 5}',
    '{"aaaaaaaa-0000-0000-0000-000000000000": 4}',
    '{"bbbbbbbb-0000-0000-0000-000000000000": 9}',
    '{}', '[]', 'null']) AS v;
-- nothing landed
SELECT count(*) = :store_before AS store_unchanged FROM morango.store;
SELECT count(*) AS buffered FROM morango.buffer WHERE transfer_session_id = '22222222-2222-2222-2222-222222222222';
-- a good chunk is accepted; sent again it adds nothing; SQL and LIKE
-- metacharacters are data
SELECT try_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1'), good_record(2, 'f1:user:v2', 'v2')));
SELECT morango.peer_push_chunk('22222222-2222-2222-2222-222222222222',
                               morango.pack_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1'))::json)) AS added_again;
SELECT try_chunk(jsonb_build_array(good_record(3, 'f1:user:x''); DROP TABLE member; --', 'x''); DROP TABLE member; --')));
SELECT try_chunk(jsonb_build_array(good_record(2, 'f1:user:v9', 'v9')));
-- a filter with LIKE wildcards matches them literally
SELECT morango.peer_begin(3, '11111111-1111-1111-1111-111111111111', '44444444-4444-4444-4444-444444444444',
                          'facilitydata', true, ARRAY['f_'], 'abababab-0000-0000-0000-000000000000',
                          '{"super": {}, "sub": {}}', '{}')->>'stage' AS stage;
SELECT morango.peer_push_chunk('44444444-4444-4444-4444-444444444444',
                               morango.pack_chunk(jsonb_build_array(good_record(1, 'f1:user:v1', 'v1'))::json));
-- finishing with a wrong total is refused; the right one merges
SELECT morango.peer_finish('22222222-2222-2222-2222-222222222222', 4);
SELECT morango.peer_finish('22222222-2222-2222-2222-222222222222', 3)->>'new' AS new_records;
SELECT id, username FROM member WHERE id LIKE 'v%' OR id LIKE 'x%' ORDER BY id;
-- the wrong direction, a finished session, an unknown session, a bad protocol version
SELECT morango.peer_pull_chunk('22222222-2222-2222-2222-222222222222', 0, 10);
SELECT try_chunk(jsonb_build_array(good_record(3, 'f1:user:v3', 'v3')));
SELECT morango.peer_push_chunk('33333333-3333-3333-3333-333333333333', morango.pack_chunk('[]'));
SELECT morango.peer_begin(99, gen_random_uuid(), gen_random_uuid(), 'facilitydata', true, ARRAY['f1'],
                          'aaaaaaaa-0000-0000-0000-000000000000', '{"super": {}, "sub": {}}', '{}');
SELECT morango.peer_begin(3, gen_random_uuid(), gen_random_uuid(), 'facilitydata', true, '{}',
                          'aaaaaaaa-0000-0000-0000-000000000000', '{"super": {}, "sub": {}}', '{}');
SELECT morango.peer_begin(3, gen_random_uuid(), gen_random_uuid(), 'facilitydata', true, ARRAY['f1'],
                          'aaaaaaaa-0000-0000-0000-000000000000', '{"sub": {}}', '{}');
DROP FUNCTION try_chunk(jsonb);
DROP FUNCTION good_record(integer, text, text);
\c regress_morango_a

-- errors of the caller: clear, and nothing changes
SELECT count(*) AS sessions_before FROM morango.sync_sessions \gset
SELECT morango.sync('host=127.0.0.1 port=1 dbname=nowhere connect_timeout=5', 'facilitydata');
SELECT morango.sync('no_such_peer', 'facilitydata');
SELECT morango.sync(:'peer_b', 'facilitydata', direction => 'sideways');
SELECT morango.sync(:'peer_b', 'facilitydata', chunk_size => 0);
SELECT morango.sync(:'peer_b', 'facilitydata', filter => '{}');
SELECT morango.sync(:'peer_b', NULL);
BEGIN;
SELECT morango.sync(:'peer_b', 'facilitydata');
ROLLBACK;
-- a peer that cannot be reached leaves an open session that says why (a
-- later sync resumes it, morango.cleanup() closes it)
SELECT count(*) - :sessions_before AS new_sessions FROM morango.sync_sessions;
SELECT peer, status, split_part(last_error, '"', 1) AS error
FROM morango.syncs WHERE status <> 'completed' ORDER BY peer;
SELECT peer, consecutive_failures, last_failure_at IS NOT NULL AS failed, next_retry_at
FROM morango.peers WHERE consecutive_failures > 0 ORDER BY peer;

-- stale sessions are cleaned up: b still has the transfer left open above
\c regress_morango_b
SELECT count(*) AS open_transfers FROM morango.transfer_sessions WHERE active;
SELECT morango.cleanup('1 hour') AS cleaned;
SELECT morango.cleanup('0 seconds') AS cleaned;
SELECT count(*) AS open_transfers FROM morango.transfer_sessions WHERE active;
SELECT count(*) AS buffered FROM morango.buffer;
-- the invariants hold in every database the syncs touched (doc/invariants.md)
\c regress_morango_a
SELECT * FROM morango.check_invariants();
\c regress_morango_b
SELECT * FROM morango.check_invariants();
\c regress_morango_c
SELECT * FROM morango.check_invariants();
\c regress_morango_d
SELECT * FROM morango.check_invariants();
\c contrib_regression
SET client_min_messages = warning;
DROP DATABASE regress_morango_a WITH (FORCE);
DROP DATABASE regress_morango_b WITH (FORCE);
DROP DATABASE regress_morango_c WITH (FORCE);
DROP DATABASE regress_morango_d WITH (FORCE);
RESET client_min_messages;
