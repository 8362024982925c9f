--
-- attack_sessions: a hostile peer role against the peer API's sessions and
-- limits (issue 12, items 2, 5, 6a, 6b and the argument bounds), called
-- the way an attacker would: connected as the peer role, which is not a
-- superuser, with plain calls.  A refused call shows its error and changes
-- nothing: state() covers the store, version vectors, buffers,
-- counters, sessions, transfers, nonces and application tables.
--
\set VERBOSITY terse
\set SHOW_CONTEXT never
SET client_min_messages = warning;
DROP DATABASE IF EXISTS regress_attack;
DROP DATABASE IF EXISTS regress_attack_client;
CREATE DATABASE regress_attack;
CREATE DATABASE regress_attack_client;
DO $$ BEGIN CREATE ROLE regress_attack_u1 LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE regress_attack_u2 LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
RESET client_min_messages;
SELECT current_user AS me,
       format('host=127.0.0.1 port=%s dbname=regress_attack user=regress_attack_u1',
              current_setting('port')) AS server_u1 \gset
\c regress_attack_client
\i sql/sync_schema.psql
\c regress_attack
\i sql/sync_schema.psql
SELECT morango.grant_peer('regress_attack_u1'), morango.grant_peer('regress_attack_u2');
INSERT INTO facility SELECT 'f' || i, 'school ' || i FROM generate_series(1, 7) AS i;
SELECT morango.serialize() AS serialized;

\i sql/peer_fixture.psql
-- and the sessions, transfers, certificate bindings and nonces
CREATE FUNCTION state() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT md5(fingerprint() || string_agg(t, E'\n' ORDER BY t)) FROM (
        SELECT 'ss ' || s::text FROM morango.sync_sessions s
        UNION ALL SELECT 'ts ' || t::text FROM morango.transfer_sessions t
        UNION ALL SELECT 'sc ' || c::text FROM morango.session_certificates c
        UNION ALL SELECT 'nonce ' || n::text FROM morango.nonces n) AS x(t)
$$;
-- a chunk of facility records as a client packs it: n records after after
-- (stamped by an instance the client relays, not its own: those are
-- checked against its FSIC, attack_counters.sql)
CREATE FUNCTION chunk(after integer, n integer, body text DEFAULT 'pushed') RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT morango.pack_chunk(json_agg(json_build_object(
        'id', morango.record_id('g' || i, 'g' || i, 'facility'), 'seq', i, 'profile', 'facilitydata',
        'model_name', 'facility', 'partition', 'g' || i, 'source_id', 'g' || i,
        'serialized', json_build_object('id', 'g' || i, 'name', body),
        'deleted', false, 'hard_deleted', false,
        'last_saved_instance', 'cc000000-0000-0000-0000-000000000001', 'last_saved_counter', 1,
        'conflicting_serialized_data', '[]'::json,
        'rmcs', json_build_object('cc000000-0000-0000-0000-000000000001', 1))))
    FROM generate_series(after + 1, after + n) AS i
$$;
-- what a packed chunk declares: its bytes of JSON, and its records
CREATE FUNCTION declared(packed text) RETURNS text
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT format('%s records, %s bytes', jsonb_array_length(morango.unpack_chunk(packed)),
                  ('x' || encode(substr(decode(packed, 'base64'), 1, 4), 'hex'))::bit(32)::integer)
$$;
-- the text of a plain peer_begin call (run with \gexec, one query each)
CREATE FUNCTION begin_call(ss text, ts text, push boolean, filter text,
                           instance text DEFAULT 'c0000000-0000-0000-0000-000000000001',
                           options text DEFAULT '{}', fsic text DEFAULT '{"super": {}, "sub": {}}')
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT format('SELECT morango.peer_begin(3, %L, %L, %L, %L, %L, %L, %L, %L)',
                  ss, ts, 'facilitydata', push, filter, instance, fsic, options)
$$;
-- the open server-side transfer sessions of a role
CREATE FUNCTION open_transfers(role name) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT count(*) FROM morango.transfer_sessions t JOIN morango.sync_sessions s ON s.id = t.sync_session_id
    WHERE t.active AND s.is_server AND s.peer_role = role
$$;
GRANT EXECUTE ON FUNCTION state(), chunk(integer, integer, text), declared(text), open_transfers(name)
    TO regress_attack_u1, regress_attack_u2;

-- ---------------------------------------------------------------------
-- 1. Session hijack (item 2).  u1 opens a push (with a chunk buffered)
--    and a pull; u2, with its own valid login, calls every peer function
--    with u1's session and transfer ids: refused, nothing changed.
-- ---------------------------------------------------------------------
\c - regress_attack_u1
-- (a plain call's answer is read afterwards: even ->> on it is refused)
SELECT morango.peer_begin(3, '51000000-0000-0000-0000-000000000001', '71000000-0000-0000-0000-000000000001',
                          'facilitydata', true, '{g}', 'c0000000-0000-0000-0000-000000000001',
                          '{"super": {}, "sub": {}}', '{}') AS r \gset
SELECT :'r'::jsonb->>'stage' AS u1_push;
SELECT chunk(0, 2) AS u1_chunk \gset
SELECT morango.peer_push_chunk('71000000-0000-0000-0000-000000000001', :'u1_chunk') AS u1_pushed;
SELECT morango.peer_begin(3, '51000000-0000-0000-0000-000000000001', '71000000-0000-0000-0000-000000000002',
                          'facilitydata', false, '{f}', 'c0000000-0000-0000-0000-000000000001',
                          '{"super": {}, "sub": {}}', '{}') AS r \gset
SELECT :'r'::jsonb->>'records_total' AS u1_pull_total;
SELECT chunk(2, 1, 'hijacked') AS u2_chunk \gset

\c - regress_attack_u2
SELECT state() AS fp0 \gset
-- u1's sync session with a new transfer of either direction (51..., 72...),
-- and u1's transfers under a sync session of u2's own (52..., 71...)
SELECT begin_call(ss, ts, push, filter, 'c0000000-0000-0000-0000-000000000002')
FROM (VALUES ('51000000-0000-0000-0000-000000000001', '72000000-0000-0000-0000-000000000001', true, '{g}'),
             ('51000000-0000-0000-0000-000000000001', '72000000-0000-0000-0000-000000000002', false, '{f}'),
             ('52000000-0000-0000-0000-000000000001', '71000000-0000-0000-0000-000000000001', true, '{g}'),
             ('52000000-0000-0000-0000-000000000001', '71000000-0000-0000-0000-000000000002', false, '{f}'))
     AS v(ss, ts, push, filter) \gexec
-- every other call
SELECT morango.peer_pull_chunk('71000000-0000-0000-0000-000000000002', 0, 100);
SELECT morango.peer_push_chunk('71000000-0000-0000-0000-000000000001', :'u2_chunk');
SELECT morango.peer_finish('71000000-0000-0000-0000-000000000001', 2);
SELECT morango.peer_finish('71000000-0000-0000-0000-000000000002', NULL);
SELECT morango.peer_close('51000000-0000-0000-0000-000000000001');
SELECT morango.peer_close('51000000-0000-0000-0000-000000000001', 'closed by u2');
SELECT state() = :'fp0' AS state_unchanged;
-- an unknown transfer is reported as such; ids are random uuids that
-- peer_begin must in any case tell apart (it opens unknown ones), so
-- hiding that elsewhere would gain nothing
SELECT morango.peer_finish('7f000000-0000-0000-0000-000000000000', 0);

-- a session bound by the certificate handshake to u1 (before u1's
-- peer_begin made its row): u2 cannot open it either
\c - :me
INSERT INTO morango.scope_definitions (id, profile, primary_scope_param_key,
                                       read_write_filter_template, read_filter_template, write_filter_template)
VALUES ('other-full', 'other', 'dataset_id', '${dataset_id}', '', '');
SELECT morango.create_root_certificate('other-full') AS root \gset
INSERT INTO morango.session_certificates (sync_session_id, local_certificate_id, peer_certificate_id, peer_role)
VALUES ('53000000-0000-0000-0000-000000000001', :'root', :'root', 'regress_attack_u1');
\c - regress_attack_u2
SELECT morango.peer_begin(3, '53000000-0000-0000-0000-000000000001', '73000000-0000-0000-0000-000000000001',
                          'facilitydata', true, '{g}', 'c0000000-0000-0000-0000-000000000002',
                          '{"super": {}, "sub": {}}', '{}');

-- u1 carries on: pulls its chunk, finishes both transfers, closes
\c - regress_attack_u1
SELECT morango.peer_pull_chunk('71000000-0000-0000-0000-000000000002', 0, 100) AS pulled \gset
SELECT (:'pulled'::jsonb)->>'records' AS u1_pulled_records;
SELECT morango.peer_finish('71000000-0000-0000-0000-000000000001', 2) AS r \gset
SELECT :'r'::jsonb->>'new' AS u1_push_merged;
SELECT morango.peer_finish('71000000-0000-0000-0000-000000000002', NULL) AS r \gset
SELECT :'r'::jsonb->>'status' AS u1_pull_finished;
SELECT morango.peer_close('51000000-0000-0000-0000-000000000001');
\c - :me
SELECT id, name FROM facility WHERE id LIKE 'g%' ORDER BY id;
SELECT peer_role, active, status FROM morango.sync_sessions WHERE id = '51000000-0000-0000-0000-000000000001';

-- ---------------------------------------------------------------------
-- 2. The guard (item 6b): a peer role's call must be the whole statement,
--    outside any transaction block, and commits as it returns.  Refused:
--    inside BEGIN, in a multi-statement query, beside another call in
--    the same statement, over FROM, as a table function or subquery, in a
--    DO block, a prepared statement or a function of its own (pg_temp is
--    writable by anyone), with an argument that is an expression.
-- ---------------------------------------------------------------------
\c - regress_attack_u1
SELECT state() AS fp1 \gset
BEGIN;
SELECT morango.peer_nonce();
ROLLBACK;
SELECT morango.peer_nonce() \; SELECT 1 AS second;
SELECT morango.peer_nonce(), pg_sleep(0);
SELECT morango.peer_nonce() FROM generate_series(1, 2);
SELECT * FROM morango.peer_nonce();
SELECT n FROM (SELECT morango.peer_nonce() AS n) AS s;
SELECT morango.peer_nonce() LIMIT 1;
SELECT morango.peer_nonce()::text;
WITH w AS (SELECT 1) SELECT morango.peer_nonce();
SELECT morango.peer_close(('51000000-0000-0000-0000-00000000000' || '1')::uuid);
SELECT morango.peer_close((SELECT '51000000-0000-0000-0000-000000000001'::uuid));
DO $$ BEGIN PERFORM morango.peer_nonce(); END $$;
PREPARE p AS SELECT morango.peer_nonce();
EXECUTE p;
CREATE FUNCTION pg_temp.wrapped() RETURNS uuid LANGUAGE sql AS 'SELECT morango.peer_nonce()';
SELECT pg_temp.wrapped();
SELECT state() = :'fp1' AS state_unchanged;
-- the plain call, with constants (cast or named) or parameters, goes through
SELECT morango.peer_close(sync_session => '5f000000-0000-0000-0000-000000000000'::uuid);
SELECT morango.peer_nonce() AS nonce \gset
SELECT state() <> :'fp1' AS the_plain_call_made_a_nonce;
-- protocol version 2 (peer_begin without options) gets a clear error
SELECT morango.peer_begin(2, '54000000-0000-0000-0000-000000000001', '74000000-0000-0000-0000-000000000001',
                          'facilitydata', true, '{g}', 'c0000000-0000-0000-0000-000000000001',
                          '{"super": {}, "sub": {}}');
\set VERBOSITY default
SELECT morango.peer_begin(2, '54000000-0000-0000-0000-000000000001', '74000000-0000-0000-0000-000000000001',
                          'facilitydata', true, '{g}', 'c0000000-0000-0000-0000-000000000001',
                          '{"super": {}, "sub": {}}');
BEGIN;
SELECT morango.peer_nonce();
ROLLBACK;
\set VERBOSITY terse

-- ---------------------------------------------------------------------
-- 3. Quotas (item 6a): open transfers per peer role, and in all.  u2 at
--    its quota is refused (with a hint); u1 still syncs.
-- ---------------------------------------------------------------------
\c - :me
ALTER DATABASE regress_attack SET morango.max_peer_transfers = 3;
ALTER DATABASE regress_attack SET morango.max_open_transfers = 5;
\c - regress_attack_u2
-- three transfers (their answers, with instance ids, are not shown), then
-- the first one again, which is no new one
\o /dev/null
SELECT begin_call('55000000-0000-0000-0000-000000000001', '75000000-0000-0000-0000-00000000000' || n, true, '{g}',
                  'c0000000-0000-0000-0000-000000000002')
FROM (VALUES (1), (2), (3), (1)) AS v(n) \gexec
\o
SELECT open_transfers('regress_attack_u2') AS u2_open;
\set VERBOSITY default
SELECT morango.peer_begin(3, '55000000-0000-0000-0000-000000000001', '75000000-0000-0000-0000-000000000004',
                          'facilitydata', true, '{g}', 'c0000000-0000-0000-0000-000000000002',
                          '{"super": {}, "sub": {}}', '{}');
\set VERBOSITY terse
\c - regress_attack_u1
\o /dev/null
SELECT begin_call('56000000-0000-0000-0000-000000000001', '76000000-0000-0000-0000-00000000000' || n, true, '{g}')
FROM generate_series(1, 2) AS n \gexec
\o
SELECT open_transfers('regress_attack_u1') AS u1_opens_two;
-- five open in all: the total bound
SELECT morango.peer_begin(3, '56000000-0000-0000-0000-000000000001', '76000000-0000-0000-0000-000000000003',
                          'facilitydata', true, '{g}', 'c0000000-0000-0000-0000-000000000001',
                          '{"super": {}, "sub": {}}', '{}');
-- u2 closes its session (its transfers with it): both may open again
\c - regress_attack_u2
SELECT morango.peer_close('55000000-0000-0000-0000-000000000001');
SELECT morango.peer_begin(3, '55000000-0000-0000-0000-000000000002', '75000000-0000-0000-0000-000000000005',
                          'facilitydata', true, '{g}', 'c0000000-0000-0000-0000-000000000002',
                          '{"super": {}, "sub": {}}', '{}') AS r \gset
SELECT :'r'::jsonb->>'stage' AS u2_opens_again, open_transfers('regress_attack_u2') AS u2_open;
SELECT morango.peer_close('55000000-0000-0000-0000-000000000002');
\c - regress_attack_u1
SELECT morango.peer_close('56000000-0000-0000-0000-000000000001');
\c - :me
ALTER DATABASE regress_attack RESET morango.max_peer_transfers;
ALTER DATABASE regress_attack RESET morango.max_open_transfers;

-- ---------------------------------------------------------------------
-- 4. Chunk bounds (item 5): this database takes chunks of at most 3
--    records and 4 kB of JSON.  Larger ones are refused, the byte bound
--    before anything is unpacked; peer_begin announces the limits; a pull
--    is cut to the lower of the client's and ours; a record too large for
--    the receiver is a clear error.
-- ---------------------------------------------------------------------
ALTER DATABASE regress_attack SET morango.max_chunk_records = 3;
ALTER DATABASE regress_attack SET morango.max_chunk_bytes = 4096;
INSERT INTO facility VALUES ('h1', repeat('x', 5000));
SELECT morango.serialize() AS serialized;
\c - regress_attack_u1
SELECT morango.peer_begin(3, '57000000-0000-0000-0000-000000000001', '77000000-0000-0000-0000-000000000001',
                          'facilitydata', true, '{g}', 'c0000000-0000-0000-0000-000000000001',
                          '{"super": {}, "sub": {}}', '{}') AS r \gset
SELECT :'r'::jsonb->'limits' AS announced;
SELECT state() AS fp2 \gset
SELECT chunk(0, 4) AS four \gset
SELECT chunk(0, 1, repeat('y', 5000)) AS large \gset
SELECT declared(:'four') AS four, declared(:'large') AS large;
SELECT morango.peer_push_chunk('77000000-0000-0000-0000-000000000001', :'four');
SELECT morango.peer_push_chunk('77000000-0000-0000-0000-000000000001', :'large');
-- a packed text longer than any 4 kB chunk packs to is not even decoded
SELECT repeat('A', 8000) AS long_text \gset
SELECT morango.peer_push_chunk('77000000-0000-0000-0000-000000000001', :'long_text');
SELECT state() = :'fp2' AS state_unchanged;
SELECT chunk(0, 3) AS three \gset
SELECT morango.peer_push_chunk('77000000-0000-0000-0000-000000000001', :'three') AS within_limits;
-- pulls: the client asks for 2 records, or 1 kB; it asks for 100 and
-- says it takes 100, but we send no more than our own 3.  (Run as u1 under
-- a superuser's session, which the guard lets through, so that one query
-- can begin or resume the pull with those options and take its first chunk.)
\c - :me
CREATE FUNCTION pull_with(options jsonb) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM morango.peer_begin(3, '57000000-0000-0000-0000-000000000001', '77000000-0000-0000-0000-000000000002',
                               'facilitydata', false, '{f}', 'c0000000-0000-0000-0000-000000000001',
                               '{"super": {}, "sub": {}}', options);
    RETURN declared(morango.peer_pull_chunk('77000000-0000-0000-0000-000000000002', 0, 100)->>'packed');
END $$;
SET ROLE regress_attack_u1;
SELECT o AS client_options, pull_with(o) AS first_chunk
FROM (VALUES ('{"max_chunk_records": 2}'::jsonb), ('{"max_chunk_bytes": 1024}'), ('{"max_chunk_records": 100}')) AS v(o);
RESET ROLE;
\c - regress_attack_u1
-- finished after 3 of its 7 records: closed, but not as completed
SELECT morango.peer_finish('77000000-0000-0000-0000-000000000002', NULL) AS r \gset
SELECT :'r'::jsonb->>'status' AS finished;
-- h1 alone is over 4 kB
SELECT morango.peer_begin(3, '57000000-0000-0000-0000-000000000001', '77000000-0000-0000-0000-000000000003',
                          'facilitydata', false, '{h}', 'c0000000-0000-0000-0000-000000000001',
                          '{"super": {}, "sub": {}}', '{}') AS r \gset
SELECT :'r'::jsonb->>'records_total' AS total;
SELECT morango.peer_pull_chunk('77000000-0000-0000-0000-000000000003', 0, 100);
SELECT morango.peer_close('57000000-0000-0000-0000-000000000001');
-- options that are not limits
SELECT state() AS fp3 \gset
SELECT begin_call('58000000-0000-0000-0000-000000000001', '78000000-0000-0000-0000-000000000001', true, '{g}',
                  options => o)
FROM (VALUES ('[]'), (NULL), ('{"max_chunk_records": 0}'), ('{"max_chunk_records": 2.5}'),
             ('{"max_chunk_bytes": "4096"}'), ('{"max_chunk_bytes": 268435457}')) AS v(o) \gexec
SELECT state() = :'fp3' AS state_unchanged;

-- ---------------------------------------------------------------------
-- 5. A real sync against those limits, though the client's chunk_size is
--    5000: the client takes chunks of 2 records at most, so the server
--    pulls it chunks of 2 (not its own 3); the client pushes records of
--    3 kB, one per chunk, within the server's 4 kB (not its own 32 MB).
-- ---------------------------------------------------------------------
\c regress_attack_client :me
ALTER DATABASE regress_attack_client SET morango.max_chunk_records = 2;
\c regress_attack_client
INSERT INTO facility SELECT 'k' || i, repeat('c', 2500) FROM generate_series(1, 7) AS i;
SELECT morango.sync(:'server_u1', 'facilitydata', ARRAY['f', 'k']) IS NOT NULL AS synced;
SELECT (SELECT count(*) FROM facility WHERE id LIKE 'f%') AS pulled,
       (SELECT count(*) FROM facility WHERE id LIKE 'k%') AS local;
SELECT t.push, t.records_total, t.records_transferred, t.peer_options
FROM morango.transfer_sessions t ORDER BY t.push;
SELECT * FROM morango.check_invariants();
\c regress_attack
SELECT t.push, t.records_total, t.records_transferred, t.peer_options
FROM morango.transfer_sessions t JOIN morango.sync_sessions s ON s.id = t.sync_session_id
WHERE s.filter = '{f,k}' ORDER BY t.push;
SELECT count(*) AS pushed_here FROM facility WHERE id LIKE 'k%';
ALTER DATABASE regress_attack RESET morango.max_chunk_records;
ALTER DATABASE regress_attack RESET morango.max_chunk_bytes;

-- ---------------------------------------------------------------------
-- 6. Argument bounds: FSIC entries, profile, peer_close's error text
-- ---------------------------------------------------------------------
ALTER DATABASE regress_attack SET morango.max_fsic_entries = 3;
\c - regress_attack_u1
SELECT state() AS fp4 \gset
SELECT morango.peer_begin(3, '59000000-0000-0000-0000-000000000001', '79000000-0000-0000-0000-000000000001',
                          'facilitydata', true, '{g}', 'c0000000-0000-0000-0000-000000000001',
                          '{"super": {"": {"c0000000-0000-0000-0000-000000000001": 1}},
                            "sub": {"g1": {"c0000000-0000-0000-0000-000000000001": 1,
                                           "c0000000-0000-0000-0000-000000000002": 1},
                                    "g2": {"c0000000-0000-0000-0000-000000000001": 1}}}', '{}');
SELECT repeat('p', 1001) AS long_profile, repeat('e', 70000) AS long_error \gset
SELECT morango.peer_begin(3, '59000000-0000-0000-0000-000000000001', '79000000-0000-0000-0000-000000000001',
                          :'long_profile', true, '{g}', 'c0000000-0000-0000-0000-000000000001',
                          '{"super": {}, "sub": {}}', '{}');
SELECT morango.peer_close('59000000-0000-0000-0000-000000000001', :'long_error');
SELECT state() = :'fp4' AS state_unchanged;
SELECT morango.peer_begin(3, '59000000-0000-0000-0000-000000000001', '79000000-0000-0000-0000-000000000001',
                          'facilitydata', true, '{g}', 'c0000000-0000-0000-0000-000000000001',
                          '{"super": {}, "sub": {"g1": {"c0000000-0000-0000-0000-000000000001": 1,
                                                       "c0000000-0000-0000-0000-000000000002": 1},
                                              "g2": {"c0000000-0000-0000-0000-000000000001": 1}}}',
                          '{}') AS r \gset
SELECT :'r'::jsonb->>'stage' AS three_entries;

-- ---------------------------------------------------------------------
-- 7. Closing a session empties its buffers at once (I5 holds without
--    cleanup()); cleanup() forgets sessions that ended before keep
-- ---------------------------------------------------------------------
SELECT chunk(0, 2) AS two \gset
SELECT morango.peer_push_chunk('79000000-0000-0000-0000-000000000001', :'two') AS buffered;
SELECT morango.peer_close('59000000-0000-0000-0000-000000000001', 'given up');
\c - :me
ALTER DATABASE regress_attack RESET morango.max_fsic_entries;
SELECT count(*) AS buffered FROM morango.buffer;
SELECT * FROM morango.check_invariants();
UPDATE morango.sync_sessions SET ended_at = now() - interval '40 days'
WHERE id IN ('51000000-0000-0000-0000-000000000001', '55000000-0000-0000-0000-000000000001');
UPDATE morango.session_certificates SET authenticated_at = now() - interval '40 days';
SELECT (SELECT count(*) FROM morango.sync_sessions) AS sync_sessions,
       (SELECT count(*) FROM morango.transfer_sessions) AS transfer_sessions,
       (SELECT count(*) FROM morango.session_certificates) AS bindings;
SELECT morango.cleanup(keep => '50 days') AS expired;
SELECT count(*) AS sync_sessions FROM morango.sync_sessions;
SELECT morango.cleanup() AS expired;
SELECT (SELECT count(*) FROM morango.sync_sessions) AS sync_sessions,
       (SELECT count(*) FROM morango.transfer_sessions) AS transfer_sessions,
       (SELECT count(*) FROM morango.session_certificates) AS bindings;
SELECT id FROM morango.sync_sessions
WHERE id IN ('51000000-0000-0000-0000-000000000001', '55000000-0000-0000-0000-000000000001');
SELECT * FROM morango.check_invariants();

\c contrib_regression
SET client_min_messages = warning;
DROP DATABASE regress_attack WITH (FORCE);
DROP DATABASE regress_attack_client WITH (FORCE);
DROP ROLE regress_attack_u1;
DROP ROLE regress_attack_u2;
RESET client_min_messages;
