--
-- scopes: certificates in sync sessions.  The seed's story: Facility owns
-- a dataset; Home (a learner's device, single-user scope) gets a
-- certificate through a signing request and syncs its own data and the
-- facility-wide read-only data; City (full facility) syncs with Facility,
-- then with Cloud; a second City device syncing with Cloud then holds
-- Facility's data.  Then every refusal, each changing nothing; and
-- Facility revokes Home, which reaches Cloud through City.
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP DATABASE IF EXISTS regress_scope_facility;
DROP DATABASE IF EXISTS regress_scope_home;
DROP DATABASE IF EXISTS regress_scope_city;
DROP DATABASE IF EXISTS regress_scope_city2;
DROP DATABASE IF EXISTS regress_scope_cloud;
DROP DATABASE IF EXISTS regress_scope_stranger;
CREATE DATABASE regress_scope_facility;
CREATE DATABASE regress_scope_home;
CREATE DATABASE regress_scope_city;
CREATE DATABASE regress_scope_city2;
CREATE DATABASE regress_scope_cloud;
CREATE DATABASE regress_scope_stranger;
-- the roles peers connect as: a plain peer, an admin, learner u1
DO $$ BEGIN
    CREATE ROLE regress_scope_peer LOGIN;
    CREATE ROLE regress_scope_admin LOGIN;
    CREATE ROLE regress_scope_u1 LOGIN;
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
RESET client_min_messages;
SELECT format('host=127.0.0.1 port=%s dbname=%%s user=%%s', current_setting('port')) AS conn \gset
SELECT current_user AS me \gset
SELECT format(:'conn', 'regress_scope_facility', 'regress_scope_peer') AS facility,
       format(:'conn', 'regress_scope_facility', 'regress_scope_admin') AS facility_admin,
       format(:'conn', 'regress_scope_facility', 'regress_scope_u1') AS facility_u1,
       format(:'conn', 'regress_scope_cloud', 'regress_scope_peer') AS cloud,
       format(:'conn', 'regress_scope_cloud', 'regress_scope_admin') AS cloud_admin
\gset

\c regress_scope_facility
\i sql/scopes_schema.psql

-- Facility: the root of the dataset, its data, and who may get certificates
SELECT morango.create_root_certificate('full-facility') AS root \gset
SELECT replace(:'root', '-', '') AS ds \gset
SELECT morango.grant_peer('regress_scope_peer'), morango.grant_peer('regress_scope_admin'),
       morango.grant_peer('regress_scope_u1');
SELECT morango.grant_certificate_signing('regress_scope_admin', :'root', 'full-facility');
SELECT morango.grant_certificate_signing('regress_scope_u1', :'root', 'single-user', '{"user_id": "u1"}');
INSERT INTO note VALUES ('n1', :'ds', 'allusers-ro', 'timetable'),
                        ('n2', :'ds', 'user-ro:u1', 'u1 grades'),
                        ('n3', :'ds', 'user-rw:u1', 'u1 essay'),
                        ('n4', :'ds', 'user-rw:u2', 'u2 essay'),
                        ('n5', :'ds', 'user-ro:u2', 'u2 grades'),
                        ('n6', :'ds', 'staff', 'staff notes');

-- Home: learner u1's device asks Facility for a single-user certificate
\c regress_scope_home
\i sql/scopes_schema.psql
SELECT morango.request_certificate(:'facility_u1', :'root', 'single-user',
           jsonb_build_object('dataset_id', :'ds', 'user_id', 'u1')) AS home \gset
SELECT (SELECT count(*) FROM morango.certificates) AS chain_stored,
       (SELECT count(*) FROM morango.certificate_keys) AS keys_here,
       (SELECT certificate_id FROM morango.certificate_keys) = :'home' AS key_is_home;
-- Home pulls what it may read, and pushes what it may write
SELECT morango.sync(:'facility', 'facilitydata',
                    ARRAY[:'ds' || ':user-rw:u1', :'ds' || ':allusers-ro', :'ds' || ':user-ro:u1'],
                    'pull', certificate => :'home', peer_certificate => :'root') IS NOT NULL AS pulled;
SELECT * FROM notes;
INSERT INTO note VALUES ('n7', :'ds', 'user-rw:u1', 'u1 homework');
SELECT morango.sync(:'facility', 'facilitydata', ARRAY[:'ds' || ':user-rw:u1'], 'push',
                    certificate => :'home', peer_certificate => :'root') IS NOT NULL AS pushed;
\c regress_scope_facility
SELECT * FROM notes WHERE id = 'n7';
SELECT count(*) AS sessions_bound FROM morango.session_certificates;

-- City: a full-facility device, through the admin role
\c regress_scope_city
\i sql/scopes_schema.psql
SELECT morango.request_certificate(:'facility_admin', :'root', 'full-facility',
           jsonb_build_object('dataset_id', :'ds')) AS city \gset
SELECT morango.sync(:'facility', 'facilitydata', ARRAY[:'ds'],
                    certificate => :'city', peer_certificate => :'root') IS NOT NULL AS synced;
SELECT * FROM notes;

-- Cloud: its own full-facility certificate; City syncs with it
\c regress_scope_cloud
\i sql/scopes_schema.psql
SELECT morango.grant_peer('regress_scope_peer'), morango.grant_peer('regress_scope_admin');
SELECT morango.request_certificate(:'facility_admin', :'root', 'full-facility',
           jsonb_build_object('dataset_id', :'ds')) AS cloud_cert \gset
SELECT morango.grant_certificate_signing('regress_scope_admin', :'cloud_cert', 'full-facility');
\c regress_scope_city
SELECT morango.sync(:'cloud', 'facilitydata', ARRAY[:'ds'],
                    certificate => :'city', peer_certificate => :'cloud_cert') IS NOT NULL AS synced;
\c regress_scope_cloud
SELECT count(*) AS cloud_notes FROM note;

-- a second City device, certified by Cloud, gets Facility's data from Cloud
\c regress_scope_city2
\i sql/scopes_schema.psql
SELECT morango.request_certificate(:'cloud_admin', :'cloud_cert', 'full-facility',
           jsonb_build_object('dataset_id', :'ds')) AS city2 \gset
SELECT jsonb_array_length(morango.certificate_chain(:'city2')) AS chain_length;
SELECT morango.sync(:'cloud', 'facilitydata', ARRAY[:'ds'], 'pull',
                    certificate => :'city2', peer_certificate => :'cloud_cert') IS NOT NULL AS pulled;
SELECT * FROM notes;

-- Refusals.  Home: a filter outside its read scope, a push outside its
-- write scope, a sync without certificates (it holds one).  Errors show
-- their SQLSTATE only, then their text without ids.
\c regress_scope_home
\set VERBOSITY sqlstate
SELECT count(*) AS home_store_before FROM morango.store \gset
SELECT morango.sync(:'facility', 'facilitydata', ARRAY[:'ds'], 'pull',
                    certificate => :'home', peer_certificate => :'root');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate, mask(:'LAST_ERROR_MESSAGE') AS refused;
SELECT morango.sync(:'facility', 'facilitydata', ARRAY[:'ds' || ':user-rw:u2'], 'push',
                    certificate => :'home', peer_certificate => :'root');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate, mask(:'LAST_ERROR_MESSAGE') AS refused;
SELECT morango.sync(:'facility', 'facilitydata', ARRAY[:'ds' || ':user-rw:u1'], 'push',
                    certificate => :'home', peer_certificate => :'city');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate, mask(:'LAST_ERROR_MESSAGE') AS refused;
SELECT morango.sync(:'facility', 'facilitydata', ARRAY[:'ds' || ':user-rw:u1'], 'pull');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate, mask(:'LAST_ERROR_MESSAGE') AS refused;
SELECT morango.sync(:'facility', 'facilitydata', certificate => :'home');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate, mask(:'LAST_ERROR_MESSAGE') AS refused;
SELECT * FROM notes;
SELECT count(*) = :home_store_before AS home_store_unchanged FROM morango.store;
\set VERBOSITY terse
-- learner u1 may not get u2's certificate, nor a full-facility one
SELECT masked(format($$SELECT morango.request_certificate(%5$L, %3$L, 'single-user',
           jsonb_build_object('dataset_id', %1$L, 'user_id', 'u2'))$$, :'ds', :'home', :'root', :'city', :'facility_u1', :'facility')) AS refused;
SELECT masked(format($$SELECT morango.request_certificate(%5$L, %3$L, 'full-facility',
           jsonb_build_object('dataset_id', %1$L))$$, :'ds', :'home', :'root', :'city', :'facility_u1', :'facility')) AS refused;
-- a plain peer role may not get any
SELECT masked(format($$SELECT morango.request_certificate(%6$L, %3$L, 'single-user',
           jsonb_build_object('dataset_id', %1$L, 'user_id', 'u1'))$$, :'ds', :'home', :'root', :'city', :'facility_u1', :'facility')) AS refused;
SELECT count(*) AS home_certificates FROM morango.certificates;

-- Stranger: no certificate; Facility, which holds one, refuses it
\c regress_scope_stranger
\i sql/scopes_schema.psql
\set VERBOSITY sqlstate
SELECT morango.sync(:'facility', 'facilitydata', direction => 'pull');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate, mask(:'LAST_ERROR_MESSAGE') AS refused;
\set VERBOSITY terse
SELECT count(*) AS stranger_notes FROM note;
-- the peer role cannot lift that; a superuser can, for trusted servers
\c regress_scope_facility
SET ROLE regress_scope_peer;
SET morango.allow_uncertified_sync = on;
SELECT masked($$SELECT morango.peer_begin(3, gen_random_uuid(), gen_random_uuid(), 'facilitydata', false,
                                          ARRAY[''], gen_random_uuid(), '{"super": {}, "sub": {}}', '{}')$$)
       AS placeholder_set_by_peer;
SET morango.allow_uncertified_sync = on;
RESET ROLE;
ALTER DATABASE regress_scope_facility SET morango.allow_uncertified_sync = on;
\c regress_scope_stranger
SELECT morango.sync(:'facility', 'facilitydata', direction => 'pull') IS NOT NULL AS trusted_sync;
SELECT count(*) AS stranger_notes FROM note;
ALTER DATABASE regress_scope_facility RESET morango.allow_uncertified_sync;

-- The handshake by hand, as the peer role: a reused nonce, a wrong
-- signature, a session bound to other certificates
\c regress_scope_home
SELECT gen_random_uuid() AS ss \gset
SELECT morango.certificate_chain(:'home') AS home_chain \gset
\c regress_scope_facility
SET ROLE regress_scope_peer;
SELECT morango.peer_nonce() AS nonce \gset
\c regress_scope_home
SELECT morango.certificate_sign(:'home', morango.handshake_message(:'nonce', :'ss', :'home', :'root',
                                                                  'facilitydata')) AS sig \gset
-- what Home would sign for another server (City): a relay of it must fail
SELECT morango.certificate_sign(:'home', morango.handshake_message(:'nonce', :'ss', :'home', :'city',
                                                                  'facilitydata')) AS relayed \gset
\c regress_scope_facility
SET ROLE regress_scope_peer;
SELECT masked(format('SELECT morango.peer_authenticate(%L, %L, %L, %L, %L, %L)',
              :'ss', 'facilitydata', :'home_chain', :'root', :'nonce', 'AAAA')) AS wrong_signature;
SELECT masked(format('SELECT morango.peer_authenticate(%L, %L, %L, %L, %L, %L)',
              :'ss', 'facilitydata', :'home_chain', :'root', :'nonce', :'relayed')) AS relayed_signature;
SELECT masked(format('SELECT morango.peer_authenticate(%L, %L, %L, %L, %L, %L)',
              :'ss', 'facilitydata', :'home_chain', :'root', :'nonce', :'sig')) AS authenticated;
SELECT masked(format('SELECT morango.peer_authenticate(%L, %L, %L, %L, %L, %L)',
              :'ss', 'facilitydata', :'home_chain', :'root', :'nonce', :'sig')) AS reused_nonce;
-- the session is bound: a push of another learner's partition is refused
SELECT masked(format($$SELECT morango.peer_begin(3, %L, gen_random_uuid(), 'facilitydata', true, %L,
                                                 gen_random_uuid(), '{"super": {}, "sub": {}}', '{}')$$,
              :'ss', ARRAY[:'ds' || ':user-rw:u2'])) AS push_outside_write_scope;
SELECT masked(format($$SELECT morango.peer_begin(3, %L, gen_random_uuid(), 'facilitydata', false, %L,
                                                 gen_random_uuid(), '{"super": {}, "sub": {}}', '{}')$$,
              :'ss', ARRAY[:'ds'])) AS pull_outside_read_scope;
-- inside its scope a push opens, but a chunk carrying a record of another
-- learner's partition is refused whole, naming the record
SELECT masked(format($$SELECT morango.peer_begin(3, %L, '22222222-2222-2222-2222-222222222222',
                                                 'facilitydata', true, %L, gen_random_uuid(),
                                                 '{"super": {}, "sub": {}}', '{}')->>'stage'$$,
              :'ss', ARRAY[:'ds' || ':user-rw:u1'])) AS push_inside_scope;
RESET ROLE;
CREATE FUNCTION crafted(seq integer, part text, src text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object(
        'id', morango.record_id(part, src, 'note'), 'seq', seq, 'profile', 'facilitydata',
        'model_name', 'note', 'partition', part, 'source_id', src,
        'serialized', jsonb_build_object('id', src, 'dataset', split_part(part, ':', 1),
                                         'scope', substr(part, 34), 'body', 'forged'),
        'deleted', false, 'hard_deleted', false,
        'last_saved_instance', 'aaaaaaaa-0000-0000-0000-000000000000', 'last_saved_counter', 9,
        'conflicting_serialized_data', '[]'::jsonb,
        'rmcs', jsonb_build_object('aaaaaaaa-0000-0000-0000-000000000000', 9))
$$;
SELECT morango.pack_chunk(jsonb_build_array(crafted(1, :'ds' || ':user-rw:u1', 'n8'),
                                           crafted(2, :'ds' || ':user-rw:u2', 'n4'))::json) AS crafted_chunk \gset
SET ROLE regress_scope_peer;
SELECT masked(format('SELECT morango.peer_push_chunk(%L, %L)', '22222222-2222-2222-2222-222222222222',
              :'crafted_chunk')) AS outside_write_scope;
SELECT masked(format('SELECT morango.peer_finish(%L, 0)', '22222222-2222-2222-2222-222222222222')) AS finished;
-- the session is bound to the role that authenticated it: another login
-- that learns its id cannot use it
-- (a login that is not a superuser may only make plain peer API calls)
SELECT format('{%s:user-rw:u1}', :'ds') AS u1_filter \gset
\c regress_scope_facility regress_scope_admin
\set VERBOSITY sqlstate
SELECT morango.peer_begin(3, :'ss', '33333333-3333-3333-3333-333333333333', 'facilitydata', false,
                          :'u1_filter', '44444444-4444-4444-4444-444444444444', '{"super": {}, "sub": {}}', '{}');
\set VERBOSITY terse
\c regress_scope_facility :me
SET ROLE regress_scope_peer;
-- a forged chain (the learner's scope widened by hand) is refused
SELECT morango.peer_nonce() AS nonce2 \gset
SELECT masked(format('SELECT morango.peer_authenticate(%L, %L, %L, %L, %L, %L)',
              gen_random_uuid(), 'facilitydata',
              jsonb_set(:'home_chain'::jsonb, '{1,serialized}',
                        to_jsonb(replace(:'home_chain'::jsonb->1->>'serialized', 'u1', 'u2'))),
              :'root', :'nonce2', :'sig')) AS forged_chain;
-- the peer role reads and writes no table
SELECT masked('SELECT count(*) FROM morango.certificates') AS read_certificates,
       masked('SELECT count(*) FROM morango.certificate_keys') AS read_keys,
       masked('SELECT count(*) FROM note') AS read_app_table,
       masked($$INSERT INTO morango.certificate_signers VALUES (0, gen_random_uuid(), 'x')$$) AS write_signers;
RESET ROLE;
SELECT * FROM notes;
-- the session is bound to the role the calls act for (SET ROLE counts),
-- not to the login
SELECT peer_role FROM morango.session_certificates WHERE sync_session_id = :'ss';

-- Revocations by hand, as the peer role: only on an authenticated session
-- of the calling role, and only valid ones (Home is no ancestor of City)
\c regress_scope_home
SELECT morango.revocation_serialize(:'city', :'home', '2026-01-01 00:00:00+00', 'hostile') AS hostile_doc \gset
SELECT jsonb_build_array(jsonb_build_object('serialized', :'hostile_doc',
           'signature', morango.certificate_sign(:'home', :'hostile_doc'))) AS hostile \gset
\c regress_scope_facility
SET ROLE regress_scope_peer;
SELECT masked(format('SELECT morango.peer_revocations(%L, %L)', :'ss', :'hostile')) AS not_an_ancestor,
       masked(format('SELECT morango.peer_revocations(%L, %L)', gen_random_uuid(), '[]')) AS not_authenticated,
       masked(format('SELECT morango.peer_revocations(%L, %L)', :'ss', '[]')) AS valid_call;
\c regress_scope_facility regress_scope_admin
-- (a login that is not a superuser may only make plain peer API calls)
\set VERBOSITY sqlstate
SELECT morango.peer_revocations(:'ss', '[]') AS session_of_another_role;
\set VERBOSITY terse
\c regress_scope_facility :me
SELECT count(*) AS facility_revocations FROM morango.certificate_revocations;

-- A client chain under another root is refused before anything is stored
\c regress_scope_stranger
SELECT morango.create_root_certificate('full-facility') AS sroot \gset
SELECT morango.certificate_chain(:'sroot') AS stranger_chain, gen_random_uuid() AS ss3 \gset
\c regress_scope_facility
SELECT count(*) AS facility_certificates FROM morango.certificates \gset
SET ROLE regress_scope_peer;
SELECT morango.peer_nonce() AS nonce3 \gset
\c regress_scope_stranger
SELECT morango.certificate_sign(:'sroot', morango.handshake_message(:'nonce3', :'ss3', :'sroot', :'root',
                                                                   'facilitydata')) AS ssig \gset
\c regress_scope_facility
SET ROLE regress_scope_peer;
SELECT masked(format('SELECT morango.peer_authenticate(%L, %L, %L, %L, %L, %L)',
              :'ss3', 'facilitydata', :'stranger_chain', :'root', :'nonce3', :'ssig')) AS other_root;
-- and a chain with more new certificates than the role's quota (City2's:
-- Facility knows its root and Cloud's certificate, not City2's)
\c regress_scope_city2
SELECT morango.certificate_chain(:'city2') AS city2_chain \gset
\c regress_scope_facility
SET morango.max_peer_certificates = 0;
SET ROLE regress_scope_peer;
SELECT morango.peer_nonce() AS nonce4 \gset
SELECT masked(format('SELECT morango.peer_authenticate(%L, %L, %L, %L, %L, %L)',
              gen_random_uuid(), 'facilitydata', :'city2_chain', :'root', :'nonce4', 'AAAA')) AS over_quota;
RESET ROLE;
RESET morango.max_peer_certificates;
SELECT count(*) = :facility_certificates AS nothing_stored,
       count(*) FILTER (WHERE stored_by IS NOT NULL) AS stored_by_peer_roles
FROM morango.certificates;

-- A revocation travels with sync.  Home syncs with Cloud too; then
-- Facility revokes Home (the laptop was lost)
\c regress_scope_home
SELECT morango.sync(:'cloud', 'facilitydata', ARRAY[:'ds' || ':user-rw:u1'], 'pull',
                    certificate => :'home', peer_certificate => :'cloud_cert') IS NOT NULL AS pulled_from_cloud;
\c regress_scope_facility
SELECT morango.revoke_certificate(:'home', 'laptop lost') = :'root' AS revoked_by_root;
SELECT count(*) AS facility_sessions_before FROM morango.session_certificates \gset
-- the session Home authenticated before is refused at its next transfer
SET ROLE regress_scope_peer;
SELECT masked(format($$SELECT morango.peer_begin(3, %L, gen_random_uuid(), 'facilitydata', true, %L,
                                                 gen_random_uuid(), '{"super": {}, "sub": {}}', '{}')$$,
              :'ss', ARRAY[:'ds' || ':user-rw:u1'])) AS bound_session_revoked;
RESET ROLE;
-- Facility refuses Home's next sync; Cloud, which has not heard, does not yet
\c regress_scope_home
\set VERBOSITY sqlstate
SELECT morango.sync(:'facility', 'facilitydata', ARRAY[:'ds' || ':user-rw:u1'], 'pull',
                    certificate => :'home', peer_certificate => :'root');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate, mask(:'LAST_ERROR_MESSAGE') AS refused;
\set VERBOSITY terse
\c regress_scope_facility
SELECT count(*) = :facility_sessions_before AS refused_in_the_handshake FROM morango.session_certificates;
\c regress_scope_home
SELECT morango.sync(:'cloud', 'facilitydata', ARRAY[:'ds' || ':user-rw:u1'], 'pull',
                    certificate => :'home', peer_certificate => :'cloud_cert') IS NOT NULL AS cloud_has_not_heard;
-- City syncs with Facility and hears of it, then tells Cloud
\c regress_scope_city
SELECT morango.sync(:'facility', 'facilitydata', ARRAY[:'ds'], 'pull',
                    certificate => :'city', peer_certificate => :'root') IS NOT NULL AS synced;
SELECT count(*) AS city_revocations FROM morango.certificate_revocations;
SELECT morango.sync(:'cloud', 'facilitydata', ARRAY[:'ds'], 'pull',
                    certificate => :'city', peer_certificate => :'cloud_cert') IS NOT NULL AS synced;
\c regress_scope_cloud
SELECT certificate_id = :'home' AS home_revoked, signer_id = :'root' AS by_root, reason, stored_by
FROM morango.certificate_revocations;
-- now Cloud refuses Home too, and nothing moved
\c regress_scope_home
SELECT count(*) AS home_store_before FROM morango.store \gset
\set VERBOSITY sqlstate
SELECT morango.sync(:'cloud', 'facilitydata', ARRAY[:'ds' || ':user-rw:u1'], 'pull',
                    certificate => :'home', peer_certificate => :'cloud_cert');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate, mask(:'LAST_ERROR_MESSAGE') AS refused;
\set VERBOSITY terse
SELECT count(*) = :home_store_before AS home_store_unchanged FROM morango.store;

-- the invariants hold in every database the syncs touched (doc/invariants.md)
\c regress_scope_facility :me
SELECT * FROM morango.check_invariants();
\c regress_scope_home :me
SELECT * FROM morango.check_invariants();
\c regress_scope_city :me
SELECT * FROM morango.check_invariants();
\c regress_scope_cloud :me
SELECT * FROM morango.check_invariants();
\c regress_scope_city2 :me
SELECT * FROM morango.check_invariants();
\c contrib_regression
SET client_min_messages = warning;
DROP DATABASE regress_scope_facility;
DROP DATABASE regress_scope_home;
DROP DATABASE regress_scope_city;
DROP DATABASE regress_scope_city2;
DROP DATABASE regress_scope_cloud;
DROP DATABASE regress_scope_stranger;
DROP ROLE regress_scope_peer;
DROP ROLE regress_scope_admin;
DROP ROLE regress_scope_u1;
RESET client_min_messages;
