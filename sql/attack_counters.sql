--
-- attack_counters: a hostile peer against counters, conflict histories and
-- database max counters, through the peer API as the peer role calls it
-- (issue 12, items 4, 5 and 7b).  A hostile server is played by a second
-- database whose superuser plants what it sends.  attempt() runs a call as
-- its caller and says "[STATE CHANGED]" if it changed the store, version
-- vectors, buffers, database max counters, instance counters or the
-- application tables (sql/peer_fixture.psql); this database's instance id
-- is shown as <A>.
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP DATABASE IF EXISTS regress_attack_counters;
DROP DATABASE IF EXISTS regress_attack_hub;
CREATE DATABASE regress_attack_counters;
CREATE DATABASE regress_attack_hub;
DO $$ BEGIN CREATE ROLE regress_attack_peer LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
RESET client_min_messages;
SELECT format('host=127.0.0.1 port=%s dbname=regress_attack_hub user=%s',
              current_setting('port'), current_user) AS hub \gset
\c regress_attack_hub
\i sql/sync_schema.psql
\c regress_attack_counters
\i sql/sync_schema.psql
SELECT morango.grant_peer('regress_attack_peer');
INSERT INTO facility VALUES ('f1', 'North');
INSERT INTO member VALUES ('m1', 'f1', 'ann', 1), ('h1', 'f1', 'hana', 0);
SELECT morango.serialize() AS serialized;
SELECT morango.instance_id() AS me, counter AS ctr FROM morango.instances WHERE current \gset

\i sql/peer_fixture.psql
-- try(), with our instance id shown as <A>
CREATE FUNCTION attempt(q text) RETURNS text LANGUAGE sql AS $$
    SELECT replace(try(q), morango.instance_id()::text, '<A>')
$$;
-- a member record of facility f1 as a peer sends it
CREATE FUNCTION member_rec(seq integer, src text, lsi uuid, lsc bigint, rmcs jsonb,
                           data jsonb DEFAULT '{}', history jsonb DEFAULT '[]',
                           hard boolean DEFAULT false) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', morango.record_id('f1:user:' || src, src, 'member'), 'seq', seq,
        'profile', 'facilitydata', 'model_name', 'member', 'partition', 'f1:user:' || src,
        'source_id', src,
        'serialized', CASE WHEN hard THEN '{}'::jsonb
                           ELSE jsonb_build_object('id', src, 'facility_id', 'f1', 'username', src,
                                                   'score', 0) || data END,
        'deleted', hard, 'hard_deleted', hard,
        'last_saved_instance', lsi, 'last_saved_counter', lsc,
        'conflicting_serialized_data', history, 'rmcs', rmcs)
$$;
-- an FSIC claiming counter for instance in partition
CREATE FUNCTION claim(instance uuid, counter bigint, part text DEFAULT 'f1') RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('super', '{}'::jsonb, 'sub',
                              jsonb_build_object(part, jsonb_build_object(instance, counter)))
$$;
-- open a push transfer as peer instance P (c1...01) would
CREATE FUNCTION open_push(ts uuid, fsic jsonb, profile text DEFAULT 'facilitydata',
                          push boolean DEFAULT true) RETURNS text LANGUAGE sql AS $$
    SELECT attempt(format('SELECT morango.peer_begin(3, %L, %L, %L, %L, ARRAY[''f1''], %L, %L, ''{}'')->>''stage''',
                          '5e000000-0000-0000-0000-0000000000a1', ts, profile, push,
                          'c1000000-0000-0000-0000-000000000001', fsic))
$$;
CREATE FUNCTION push_chunk(ts uuid, chunk jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT attempt(format('SELECT morango.peer_push_chunk(%L, %L)', ts, pack(chunk)))
$$;
-- one whole push transfer of one record; the merge's counts
CREATE FUNCTION push_one(ts uuid, fsic jsonb, rec jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT open_push(ts, fsic) || ' / ' || push_chunk(ts, jsonb_build_array(rec)) || ' / '
           || attempt(format('SELECT morango.peer_finish(%L, 1) - ''stage'' - ''status''', ts))
$$;
GRANT EXECUTE ON FUNCTION fingerprint(), try(text), attempt(text), pack(jsonb),
    member_rec(integer, text, uuid, bigint, jsonb, jsonb, jsonb, boolean), claim(uuid, bigint, text),
    open_push(uuid, jsonb, text, boolean), push_chunk(uuid, jsonb), push_one(uuid, jsonb, jsonb)
    TO regress_attack_peer;
\set P 'c1000000-0000-0000-0000-000000000001'
\set X 'c2000000-0000-0000-0000-000000000002'

-- 1. Counter poisoning (item 4).  Peer P opens a push under f1 claiming
--    its own instance up to 10; every poisoned chunk is refused whole,
--    naming the record, and changes nothing.
SET ROLE regress_attack_peer;
SELECT open_push('7a000000-0000-0000-0000-0000000000a1', claim(:'P', 10)) AS opened;
\set T1 '7a000000-0000-0000-0000-0000000000a1'
SELECT fingerprint() AS fp0 \gset
SELECT poison, push_chunk(:'T1', jsonb_build_array(rec)) AS refused FROM (VALUES
    -- the issue's poison: our own instance at 2^63-1 in the version vector
    ('own instance at 2^63-1', member_rec(1, 'p1', :'P', 5, jsonb_build_object(:'P', 5, :'me', 9223372036854775807))),
    ('own instance one above its counter', member_rec(1, 'p1', :'P', 5, jsonb_build_object(:'P', 5, :'me', :ctr + 1))),
    ('own instance as last saved version', member_rec(1, 'p1', :'me', :ctr + 1, jsonb_build_object(:'me', :ctr + 1))),
    ('sender above its own claim', member_rec(1, 'p1', :'P', 11, jsonb_build_object(:'P', 11))),
    ('sender above its claim in the vector', member_rec(1, 'p1', :'X', 3, jsonb_build_object(:'X', 3, :'P', 11))),
    ('hard delete with a history', member_rec(1, 'p1', :'P', 5, jsonb_build_object(:'P', 5),
                                              history => '[{"id": "p1", "username": "old"}]', hard => true))
    ) AS c(poison, rec);
-- one poisoned record refuses its whole chunk
SELECT push_chunk(:'T1', jsonb_build_array(member_rec(1, 'p1', :'P', 5, jsonb_build_object(:'P', 5)),
                                           member_rec(2, 'p2', :'P', 6, jsonb_build_object(:'P', 6, :'me', 9223372036854775807))))
       AS mixed_chunk;
-- FSIC claims on our own instance above its counter: refused by
-- peer_begin (push or pull, in sub or super), before any session exists
SELECT replace(fsic::text, :'me', '<A>') AS fsic, open_push(ts, fsic, push => push) AS refused FROM (VALUES
    ('7a000000-0000-0000-0000-0000000000a2'::uuid, claim(:'me', :ctr + 1), true),
    ('7a000000-0000-0000-0000-0000000000a3', jsonb_build_object('super', jsonb_build_object('', jsonb_build_object(:'me', 9223372036854775807)), 'sub', '{}'::jsonb), true),
    ('7a000000-0000-0000-0000-0000000000a4', claim(:'me', 9223372036854775807), false)) AS c(ts, fsic, push);
SELECT fingerprint() = :'fp0' AS state_unchanged;
-- what may come: our own instance up to its counter, the sender up to its
-- claim, a third instance (not checkable here) at any counter
SELECT push_chunk(:'T1', jsonb_build_array(member_rec(1, 'p1', :'P', 10, jsonb_build_object(:'P', 10, :'me', :ctr)),
                                           member_rec(2, 'p2', :'X', 99, jsonb_build_object(:'X', 99)))) AS accepted;
SELECT attempt(format('SELECT morango.peer_finish(%L, 2)->>''new''', :'T1')) AS merged;
RESET ROLE;
SELECT count(*) AS sessions_opened FROM morango.transfer_sessions
WHERE id IN ('7a000000-0000-0000-0000-0000000000a2', '7a000000-0000-0000-0000-0000000000a3',
             '7a000000-0000-0000-0000-0000000000a4');
-- the poison that made check_invariants report I2 never landed
SELECT * FROM morango.check_invariants();
SELECT count(*) AS own_claims, bool_and(counter <= :ctr) AS within_own_counter
FROM morango.database_max_counters WHERE instance_id = :'me';

-- 2. Conflict history (item 5).  Peer P pushes 43 versions of member h1,
--    each concurrent with ours, one transfer each: every merge is a
--    conflict, and the history stays within max_conflict_entries (20) and
--    max_conflict_bytes, oldest dropped first, the newest always kept.
CREATE FUNCTION history_of(src text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT jsonb_array_length(conflicting_serialized_data) || ' entries: '
           || COALESCE((SELECT string_agg(e->>'username', ' ' ORDER BY n)
                        FROM jsonb_array_elements(conflicting_serialized_data) WITH ORDINALITY AS x(e, n)), '')
    FROM morango.store WHERE model_name = 'member' AND source_id = src
$$;
-- version i of h1 by P, with pad bytes of padding
CREATE FUNCTION concurrent(i integer, pad integer) RETURNS text LANGUAGE sql AS $$
    SELECT push_one(('7a000000-0000-0000-0000-' || lpad(to_hex(256 + i), 12, '0'))::uuid,
                    claim('c1000000-0000-0000-0000-000000000001', 100 + i),
                    member_rec(1, 'h1', 'c1000000-0000-0000-0000-000000000001', 100 + i,
                               jsonb_build_object('c1000000-0000-0000-0000-000000000001', 100 + i),
                               jsonb_build_object('username', 'v' || i, 'pad', repeat('x', pad))))
$$;
GRANT EXECUTE ON FUNCTION concurrent(integer, integer) TO regress_attack_peer;
SHOW morango.max_conflict_entries;
SHOW morango.max_conflict_bytes;
SET ROLE regress_attack_peer;
SELECT count(*) FILTER (WHERE merged LIKE '%"conflicts": 1%') AS conflicts, count(*) AS pushes
FROM (SELECT concurrent(i, 500) AS merged FROM generate_series(1, 21) i) AS x;
RESET ROLE;
SELECT history_of('h1') AS after_21;  -- 20 entries, v1 dropped
-- a tighter byte bound: entries of about 1.6 kB, two fit in 4 kB
SET morango.max_conflict_bytes = '4kB';
SET ROLE regress_attack_peer;
SELECT count(*) FILTER (WHERE merged LIKE '%"conflicts": 1%') AS conflicts, count(*) AS pushes
FROM (SELECT concurrent(i, 1500) AS merged FROM generate_series(22, 42) i) AS x;
RESET ROLE;
SELECT history_of('h1') AS after_42;
-- one version larger than the bound: it is kept, alone
SET ROLE regress_attack_peer;
SELECT concurrent(43, 10000) AS merged;
-- a peer cannot change the bounds
SELECT attempt('SELECT set_config(''morango.max_conflict_entries'', ''1000000'', false)') AS set_bound;
RESET ROLE;
SELECT history_of('h1') AS after_43;
-- a fast-forward (and a new record) arriving with a long history: trimmed,
-- not refused
SELECT jsonb_agg(jsonb_build_object('username', 'old' || g)) AS long_history
FROM generate_series(1, 30) g \gset
SELECT jsonb_object_agg(r.instance_id, r.counter) || jsonb_build_object(:'P', 200) AS h1_vector
FROM morango.record_max_counters r JOIN morango.store s ON s.id = r.record_id WHERE s.source_id = 'h1' \gset
SET ROLE regress_attack_peer;
SELECT push_one('7a000000-0000-0000-0000-0000000002ff', claim(:'P', 200),
                member_rec(1, 'h1', :'P', 200, :'h1_vector'::jsonb,
                           jsonb_build_object('username', 'ff'), :'long_history'))
       AS fast_forward;
SELECT push_one('7a000000-0000-0000-0000-0000000003ff', claim(:'P', 201),
                member_rec(1, 'n1', :'P', 201, jsonb_build_object(:'P', 201), '{}', :'long_history'))
       AS new_record;
RESET ROLE;
SELECT history_of('h1') AS fast_forwarded, history_of('n1') AS new_record;
RESET morango.max_conflict_bytes;
-- the function itself
SET morango.max_conflict_entries = 2;
SELECT morango.conflict_history('{"a": 1}', '[{"b": 2}, {"c": 3}]') AS newest_in_front,
       morango.conflict_history(NULL, '[{"b": 2}, {"c": 3}, {"d": 4}]') AS trimmed,
       morango.conflict_history(NULL, NULL) AS empty;
SELECT morango.conflict_history('{"a": 1}', '{"b": 2}');
RESET morango.max_conflict_entries;
SELECT * FROM morango.check_invariants();

-- 3. Database max counters (item 7b).  Claims only land for profiles this
--    database has, for the filter's prefixes, for partitions of records
--    the transfer merged and for rows that exist: three transfers claiming
--    10,000 invented partitions each add nothing.
SELECT count(*) AS dmc_before FROM morango.database_max_counters \gset
SET ROLE regress_attack_peer;
SELECT attempt(format('SELECT morango.peer_begin(3, %L, %L, ''invented'', true, ARRAY[''f1''], %L, %L, ''{}'')->>''stage''',
                      '5e000000-0000-0000-0000-0000000004ff', '7a000000-0000-0000-0000-0000000004ff',
                      :'P', claim(:'P', 5))) AS invented_profile;
SELECT i, open_push(('7a000000-0000-0000-0000-00000000050' || i)::uuid,
                    jsonb_build_object('super', '{}'::jsonb, 'sub',
                        (SELECT jsonb_object_agg('f1:zz' || g || ':' || i, jsonb_build_object(:'P', 300, :'me', 1))
                         FROM generate_series(1, 10000) g))) AS opened,
       attempt(format('SELECT morango.peer_finish(%L, 0)->>''new''', '7a000000-0000-0000-0000-00000000050' || i)) AS finished
FROM generate_series(1, 3) i;
-- a claim for the partition of a record the transfer merges lands
SELECT push_one('7a000000-0000-0000-0000-0000000006ff',
                jsonb_build_object('super', '{}'::jsonb, 'sub',
                    jsonb_build_object('f1:user:q1', jsonb_build_object(:'P', 301), 'f1:user:q2', jsonb_build_object(:'P', 301))),
                member_rec(1, 'q1', :'P', 301, jsonb_build_object(:'P', 301))) AS merged;
RESET ROLE;
SELECT count(*) - :dmc_before AS dmc_added FROM morango.database_max_counters;
SELECT partition, counter FROM morango.database_max_counters
WHERE instance_id = :'P' ORDER BY partition COLLATE "C";
SELECT count(*) AS invented_sessions FROM morango.sync_sessions WHERE profile = 'invented';
-- on the initiator's side too
SELECT attempt($$SELECT morango.transfer_open(gen_random_uuid(), gen_random_uuid(), 'invented', false, false,
                                               ARRAY['x'])::text$$) AS initiator_invented_profile;

-- 4. A hostile server, as the initiator of a pull sees it: its FSIC
--    claims our instance above our counter; then it sends a record whose
--    version vector does.  The sync fails with the reason and nothing
--    lands here; an honest pull from the same server then works.
\c regress_attack_hub
INSERT INTO facility VALUES ('f1', 'North (hub)');
SELECT morango.serialize() AS serialized;
\c regress_attack_counters
SELECT morango.instance_id() AS me \gset
SELECT fingerprint() AS fp4 \gset
-- the last sync's error, with our instance as <A> and other ids as <uuid>
CREATE FUNCTION last_error() RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(replace(last_error, morango.instance_id()::text, '<A>'),
                          '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g')
    FROM morango.sync_sessions WHERE NOT is_server ORDER BY started_at DESC LIMIT 1
$$;
\c regress_attack_hub
INSERT INTO morango.database_max_counters VALUES ('facilitydata', :'me', 'f1', 9223372036854775807);
\c regress_attack_counters
\set VERBOSITY sqlstate
SELECT morango.sync(:'hub', 'facilitydata', ARRAY['f1'], 'pull');
\set VERBOSITY terse
SELECT last_error() AS hostile_fsic;
SELECT morango.cleanup('0 seconds') > 0 AS closed;
\c regress_attack_hub
SELECT morango.cleanup('0 seconds') > 0 AS closed;
DELETE FROM morango.database_max_counters WHERE instance_id = :'me';
INSERT INTO morango.database_max_counters VALUES ('facilitydata', :'X', 'f1', 7);
INSERT INTO morango.store (id, profile, model_name, partition, source_id, serialized,
                           last_saved_instance, last_saved_counter)
VALUES (morango.record_id('f1:user:z1', 'z1', 'member'), 'facilitydata', 'member', 'f1:user:z1', 'z1',
        '{"id": "z1", "facility_id": "f1", "username": "z", "score": 0}', :'X', 7);
INSERT INTO morango.record_max_counters VALUES (morango.record_id('f1:user:z1', 'z1', 'member'), :'X', 7),
                                               (morango.record_id('f1:user:z1', 'z1', 'member'), :'me', 9223372036854775807);
\c regress_attack_counters
\set VERBOSITY sqlstate
SELECT morango.sync(:'hub', 'facilitydata', ARRAY['f1'], 'pull');
\set VERBOSITY terse
SELECT last_error() AS hostile_record;
SELECT fingerprint() = :'fp4' AS state_unchanged;
SELECT morango.cleanup('0 seconds') > 0 AS closed;
\c regress_attack_hub
SELECT morango.cleanup('0 seconds') > 0 AS closed;
DELETE FROM morango.store WHERE source_id = 'z1';
\c regress_attack_counters
SELECT morango.sync(:'hub', 'facilitydata', ARRAY['f1'], 'pull') IS NOT NULL AS honest_pull;
SELECT name FROM facility;

-- 5. An honest producer never sends a version of its own instance above
--    the claim of the FSIC it sent: a push takes its FSIC, a concurrent
--    sync's conflict merge then stamps a new version of m1 here, and the
--    push queues later; m1 waits for the next transfer, whose FSIC covers it.
-- a push transfer of sync session b1 as run_push() starts it: serialize,
-- then take our FSIC, in one transaction; and what queuing it sends
CREATE FUNCTION start_push(ts uuid) RETURNS text LANGUAGE sql AS $$
    SELECT morango.transfer_open('5e000000-0000-0000-0000-0000000000b1', ts, 'facilitydata', false, true,
                                 ARRAY['f1'], 'test', NULL, 'push');
    SELECT morango.serialize('facilitydata', ARRAY['f1']);
    UPDATE morango.transfer_sessions
    SET local_fsic = morango.fsic('facilitydata', ARRAY['f1']), remote_fsic = '{"super": {}, "sub": {}}'
    WHERE id = ts RETURNING 'FSIC taken';
$$;
CREATE FUNCTION queue_sends(ts uuid) RETURNS text LANGUAGE sql AS $$
    SELECT morango.queue(ts);
    SELECT string_agg(source_id, ' ' ORDER BY source_id) FROM morango.buffer WHERE transfer_session_id = ts;
$$;
UPDATE member SET score = 5 WHERE id = 'm1';
SELECT start_push('7a000000-0000-0000-0000-0000000000b1') AS push;
-- the concurrent sync: a version of m1 from X that conflicts with ours
SELECT morango.transfer_open('5e000000-0000-0000-0000-0000000000b2', '7a000000-0000-0000-0000-0000000000b2',
                             'facilitydata', false, false, ARRAY['f1'], 'test', :'X', 'pull')->>'stage' AS pull_opened;
UPDATE morango.transfer_sessions SET remote_fsic = claim(:'X', 8), records_total = 1
WHERE id = '7a000000-0000-0000-0000-0000000000b2';
SELECT morango.receive_chunk('7a000000-0000-0000-0000-0000000000b2',
           jsonb_build_array(member_rec(1, 'm1', :'X', 8, jsonb_build_object(:'X', 8), '{"username": "from x"}'))) AS received;
SELECT conflicts FROM morango.dequeue('7a000000-0000-0000-0000-0000000000b2');
SELECT queue_sends('7a000000-0000-0000-0000-0000000000b1') AS without_m1;
-- the next transfer sends it
SELECT start_push('7a000000-0000-0000-0000-0000000000b3') AS next_push;
SELECT queue_sends('7a000000-0000-0000-0000-0000000000b3') AS with_m1;
SELECT morango.transfer_close(id, 'test') FROM morango.transfer_sessions WHERE id IN
    ('7a000000-0000-0000-0000-0000000000b1', '7a000000-0000-0000-0000-0000000000b2',
     '7a000000-0000-0000-0000-0000000000b3');
SELECT * FROM morango.check_invariants();

\c contrib_regression
SET client_min_messages = warning;
DROP DATABASE regress_attack_counters WITH (FORCE);
DROP DATABASE regress_attack_hub WITH (FORCE);
DROP ROLE regress_attack_peer;
RESET client_min_messages;
