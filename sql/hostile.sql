--
-- hostile: hostile and broken input through the peer API, called as the
-- peer role calls it.  Every case gets a clear error (SQLSTATE: message)
-- and changes nothing: try() compares a fingerprint of the store, the
-- version vectors, the buffers, the database max counters, the instance
-- counter and the application tables before and after the call and says
-- "[STATE CHANGED]" if they differ; and the fingerprint at the end of the
-- refusals is the one taken before them.  (sync.sql and scopes.sql test
-- more refusals of the same kinds; this file adds the gaps.)
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP DATABASE IF EXISTS regress_hostile;
CREATE DATABASE regress_hostile;
DO $$ BEGIN CREATE ROLE regress_hostile_peer LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
RESET client_min_messages;
\c regress_hostile
\i sql/sync_schema.psql
SELECT morango.grant_peer('regress_hostile_peer');

-- data whose partitions (facility ids) hold SQL and LIKE metacharacters
INSERT INTO facility VALUES ('f1', 'North'), ('ab', 'AB'), ('a_b', 'A_B'), ('%x', 'percent'),
                            ($$o'q\;$$, 'quote, backslash, semicolon');
INSERT INTO member VALUES ('m1', 'f1', 'ann', 1);
SELECT morango.serialize() AS serialized;

\i sql/peer_fixture.psql
CREATE FUNCTION unpack(packed text) RETURNS jsonb
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT morango.unpack_chunk(packed)
$$;
-- any text packed as a chunk, JSON or not: deflate stored blocks, by hand
CREATE FUNCTION pack_text(json text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    data bytea := convert_to(json, 'UTF8');
    n integer := length(data);
    z bytea := '\x7801';
    a bigint := 1;
    b bigint := 0;
    pos integer := 0;
    len integer;
BEGIN
    FOR i IN 0 .. n - 1 LOOP
        a := (a + get_byte(data, i)) % 65521;
        b := (b + a) % 65521;
    END LOOP;
    LOOP
        len := least(65535, n - pos);
        z := z || CASE WHEN pos + len >= n THEN '\x01' ELSE '\x00' END::bytea
               || substr(int4send(len), 4, 1) || substr(int4send(len), 3, 1)
               || substr(int4send(65535 - len), 4, 1) || substr(int4send(65535 - len), 3, 1)
               || substr(data, pos + 1, len);
        pos := pos + len;
        EXIT WHEN pos >= n;
    END LOOP;
    RETURN translate(encode(int4send(n) || z || substr(int8send(b * 65536 + a), 5), 'base64'), E'\n', '');
END $$;
-- a well-formed facility record (partition = its id), or of another model
CREATE FUNCTION rec(seq integer, src text, ctr bigint DEFAULT 5, part text DEFAULT NULL,
                    model text DEFAULT 'facility') RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', morango.record_id(COALESCE(part, src), src, model), 'seq', seq, 'profile', 'facilitydata',
        'model_name', model, 'partition', COALESCE(part, src), 'source_id', src,
        'serialized', jsonb_build_object('id', src, 'name', 'pushed'),
        'deleted', false, 'hard_deleted', false,
        'last_saved_instance', 'c0000000-0000-0000-0000-000000000001', 'last_saved_counter', ctr,
        'conflicting_serialized_data', '[]'::jsonb,
        'rmcs', jsonb_build_object('c0000000-0000-0000-0000-000000000001', ctr))
$$;
-- push one chunk to a transfer session
CREATE FUNCTION push(ts text, chunk jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT try(format('SELECT morango.peer_push_chunk(%L, %L)', ts, pack(chunk)))
$$;
-- open a transfer session as a peer would (a peer that relays records of
-- instance c...01: versions of the sender's own instance are checked
-- against its FSIC, attack_counters.sql)
CREATE FUNCTION begin_transfer(ss text, ts text, push boolean, filter text[],
                               profile text DEFAULT 'facilitydata',
                               fsic jsonb DEFAULT '{"super": {}, "sub": {}}', protocol integer DEFAULT 3,
                               options jsonb DEFAULT '{}')
RETURNS text LANGUAGE sql AS $$
    SELECT try(format('SELECT morango.peer_begin(%L, %L, %L, %L, %L, %L, %L, %L, %L)->>''stage''',
                      protocol, ss, ts, profile, push, filter,
                      'c0000000-0000-0000-0000-0000000000aa', fsic, options))
$$;
GRANT EXECUTE ON FUNCTION fingerprint(), try(text), pack(jsonb), unpack(text), pack_text(text), rec(integer, text, bigint, text, text),
                          push(text, jsonb), begin_transfer(text, text, boolean, text[], text, jsonb, integer, jsonb)
    TO regress_hostile_peer;
-- a transfer session this database initiated (client side): no peer may use it
SELECT morango.transfer_open('5e000000-0000-0000-0000-0000000000c1', '7a000000-0000-0000-0000-0000000000c1',
                             'facilitydata', false, false, ARRAY['f1'])->>'stage' AS client_side;

SET ROLE regress_hostile_peer;
-- the transfer sessions the cases use: pushes under f1, under LIKE
-- wildcards and under SQL metacharacters; a pull
SELECT begin_transfer('5e000000-0000-0000-0000-000000000001', '7a000000-0000-0000-0000-000000000001', true, ARRAY['f1']) AS push_f1,
       begin_transfer('5e000000-0000-0000-0000-000000000001', '7a000000-0000-0000-0000-000000000002', true, ARRAY['a_']) AS push_a_,
       begin_transfer('5e000000-0000-0000-0000-000000000001', '7a000000-0000-0000-0000-000000000003', true, ARRAY['%']) AS push_percent,
       begin_transfer('5e000000-0000-0000-0000-000000000001', '7a000000-0000-0000-0000-000000000004', true, ARRAY[$$o'q\$$]) AS push_quote,
       begin_transfer('5e000000-0000-0000-0000-000000000001', '7a000000-0000-0000-0000-000000000005', false, ARRAY['f1']) AS pull_f1;
\set T1 '7a000000-0000-0000-0000-000000000001'
SELECT fingerprint() AS fp0 \gset

-- 1. malformed chunks: not JSON, not an array, elements that are not records
SELECT push_malformed FROM (VALUES
    (try(format('SELECT morango.peer_push_chunk(%L, %L)', :'T1', pack_text('[{"id": ')))),
    (try(format('SELECT morango.peer_push_chunk(%L, %L)', :'T1', pack_text('[1, 2] 3')))),
    (try(format('SELECT morango.peer_push_chunk(%L, %L)', :'T1', pack_text('["\u0000"]')))),
    (try(format('SELECT morango.peer_push_chunk(%L, %L)', :'T1', pack_text('"[]"')))),
    (try(format('SELECT morango.peer_push_chunk(%L, %L)', :'T1', pack_text('null')))),
    (try(format('SELECT morango.peer_push_chunk(%L, %L)', :'T1', NULL))),
    (push(:'T1', '[1]')),
    (push(:'T1', '[null]')),
    (push(:'T1', jsonb_build_array(rec(1, 'f1'), jsonb_build_array(rec(2, 'f1'))))),
    (push(:'T1', jsonb_build_array(rec(1, 'f1'), 'a record'::text)))) AS x(push_malformed);

-- 2. fields of the wrong JSON type or form
SELECT field, push(:'T1', jsonb_build_array(rec(1, 'f1'), rec(2, 'f1a') || jsonb_build_object(field, value))) AS refused
FROM (VALUES ('id', '5'::jsonb), ('id', '"not a uuid"'), ('id', '["1f4f245f-904b-c430-932b-3fcc96bdabc0"]'),
             ('seq', '"2"'), ('seq', '2.5'), ('seq', '1e30'), ('seq', 'true'),
             ('profile', '5'), ('profile', '{"facilitydata": 1}'), ('model_name', '["facility"]'),
             ('partition', '{}'), ('source_id', 'true'), ('source_id', '7'),
             ('deleted', '"false"'), ('deleted', '0'), ('hard_deleted', '"no"'),
             ('last_saved_instance', '"c0000000"'), ('last_saved_instance', '1'),
             ('serialized', '"{\"id\": \"f1a\"}"'), ('conflicting_serialized_data', '{"a": 1}'),
             ('rmcs', '"c0000000-0000-0000-0000-000000000001"'), ('rmcs', '[5]')) AS f(field, value);

-- 3. counters: negative, zero, fractional, huge (> bigint), in the last
--    saved version and in the version vector
SELECT counter, push(:'T1', jsonb_build_array(rec(1, 'f1') || jsonb_build_object('last_saved_counter', counter))) AS last_saved_counter,
       push(:'T1', jsonb_build_array(rec(1, 'f1') || jsonb_build_object('rmcs',
            jsonb_build_object('c0000000-0000-0000-0000-000000000001', 5, 'c0000000-0000-0000-0000-000000000002', counter)))) AS in_version_vector
FROM (VALUES ('-1'::jsonb), ('0'), ('2.5'), ('5.0'), ('9223372036854775808'), ('99999999999999999999999999'),
             ('-9223372036854775809'), ('1e-3')) AS c(counter);

-- 4. ids that do not follow the id rule: another model's id, another
--    partition's id, the id of the record with the source id changed
SELECT case_, push(:'T1', jsonb_build_array(rec(1, 'f1') || jsonb_build_object('id', id))) AS refused
FROM (VALUES ('model member', morango.record_id('f1', 'f1', 'member')),
             ('partition f1x', morango.record_id('f1x', 'f1', 'facility')),
             ('source f2', morango.record_id('f1', 'f2', 'facility')),
             ('nil uuid', '00000000-0000-0000-0000-000000000000'::uuid)) AS c(case_, id);

-- 5. partitions outside the transfer's filter, and LIKE wildcards or SQL
--    metacharacters in filters, which match literally: 'a_' is not a
--    pattern for 'ab', '%' not one for everything
SELECT ts, part, push(ts, jsonb_build_array(rec(1, part))) AS refused
FROM (VALUES (:'T1', 'f2'), (:'T1', 'f'), (:'T1', 'F1'), (:'T1', ' f1'),
             ('7a000000-0000-0000-0000-000000000002', 'ab'),
             ('7a000000-0000-0000-0000-000000000002', 'a'),
             ('7a000000-0000-0000-0000-000000000003', 'f1'),
             ('7a000000-0000-0000-0000-000000000003', 'x%'),
             ('7a000000-0000-0000-0000-000000000004', $$o'q$$),
             ('7a000000-0000-0000-0000-000000000004', $$o''q\$$)) AS c(ts, part);
SELECT push(:'T1', jsonb_build_array(rec(1, 'x', part => ''))) AS empty_partition;

-- 6. the same record twice in one chunk (identical, or with other data)
SELECT push(:'T1', jsonb_build_array(rec(1, 'f1'), rec(1, 'f1'))) AS twice_identical,
       push(:'T1', jsonb_build_array(rec(1, 'f1'), rec(2, 'f1', 6))) AS twice_other_version;

-- 7. sessions: unknown, client-side, the wrong direction, closed
SELECT push('7a000000-0000-0000-0000-0000000000ff', jsonb_build_array(rec(1, 'f1'))) AS unknown_session,
       push('7a000000-0000-0000-0000-0000000000c1', jsonb_build_array(rec(1, 'f1'))) AS client_side_session,
       push('7a000000-0000-0000-0000-000000000005', jsonb_build_array(rec(1, 'f1'))) AS push_to_a_pull;
SELECT try(format('SELECT morango.peer_finish(%L, 0)', '7a000000-0000-0000-0000-0000000000c1')) AS finish_client_side,
       try(format('SELECT morango.peer_pull_chunk(%L, 0, 10)', '7a000000-0000-0000-0000-0000000000c1')) AS pull_client_side;
-- a transfer session id reused under another sync session, direction or
-- filter; a sync session reused for another profile, or that is this
-- database's own (client side)
SELECT begin_transfer('5e000000-0000-0000-0000-000000000002', :'T1', true, ARRAY['f1']) AS other_sync_session,
       begin_transfer('5e000000-0000-0000-0000-000000000001', :'T1', false, ARRAY['f1']) AS other_direction,
       begin_transfer('5e000000-0000-0000-0000-000000000001', :'T1', true, ARRAY['f']) AS other_filter;
SELECT begin_transfer('5e000000-0000-0000-0000-000000000001', '7a000000-0000-0000-0000-000000000006', true, ARRAY['f1'], 'notes') AS other_profile,
       begin_transfer('5e000000-0000-0000-0000-0000000000c1', '7a000000-0000-0000-0000-000000000006', true, ARRAY['f1']) AS client_side_sync_session;
-- pull chunks out of range
SELECT try(format('SELECT morango.peer_pull_chunk(%L, %L, %L)->>''records''', '7a000000-0000-0000-0000-000000000005', a, m)) AS pull_chunk
FROM (VALUES (-1, 10), (0, 0), (0, -5), (0, 100001), (NULL, 10), (0, NULL)) AS p(a, m);

-- 8. peer_begin: protocol versions, filters, FSICs
SELECT p AS protocol, begin_transfer('5e000000-0000-0000-0000-000000000003', '7a000000-0000-0000-0000-000000000007', true, ARRAY['f1'], protocol => p) AS refused
FROM (VALUES (1), (2), (4), (0), (-2), (NULL::integer)) AS v(p);
SELECT f::text AS filter, begin_transfer('5e000000-0000-0000-0000-000000000003', '7a000000-0000-0000-0000-000000000007', true, f) AS refused
FROM (VALUES (ARRAY[NULL]::text[]), (ARRAY['f1', NULL]), (ARRAY[['f1'], ['f2']]), (NULL::text[])) AS v(f);
SELECT begin_transfer('5e000000-0000-0000-0000-000000000003', '7a000000-0000-0000-0000-000000000007', true, ARRAY['f1'], profile => '') AS empty_profile,
       begin_transfer('5e000000-0000-0000-0000-000000000003', '7a000000-0000-0000-0000-000000000007', true, ARRAY['f1'], profile => NULL) AS null_profile;
SELECT fsic::text, begin_transfer('5e000000-0000-0000-0000-000000000003', '7a000000-0000-0000-0000-000000000007', true, ARRAY['f1'], fsic => fsic) AS refused
FROM (VALUES ('[]'::jsonb), ('{"super": {}, "sub": {}, "extra": {}}'), ('{"super": {}, "sub": []}'),
             ('{"super": {}, "sub": {"f1": {"c0000000-0000-0000-0000-000000000001": -1}}}'),
             ('{"super": {}, "sub": {"f1": {"c0000000-0000-0000-0000-000000000001": 2.5}}}'),
             ('{"super": {}, "sub": {"f1": {"c0000000-0000-0000-0000-000000000001": 9223372036854775808}}}'),
             ('{"super": {}, "sub": {"f1": {"c0000000-0000-0000-0000-000000000001": "5"}}}'),
             ('{"super": {}, "sub": {"f1": {"not-an-instance": 5}}}'),
             ('{"super": {}, "sub": {"f1": 5}}')) AS v(fsic);
-- malformed JSON for the FSIC fails as the call's input, before peer_begin runs
SELECT try($$SELECT morango.peer_begin(3, gen_random_uuid(), gen_random_uuid(), 'facilitydata', true,
                                       ARRAY['f1'], gen_random_uuid(), '{"super": {}, "sub": ', '{}')::text$$) AS malformed_fsic;

-- 9. oversized input: a declared size over the 256 MB cap; a small packed
--    chunk declaring up to the cap, or more than its stream can inflate
--    to (refused before anything is allocated); more than 100,000
--    records; JSON nested deeper than the parser allows; a huge signature
SELECT declared, try(format('SELECT morango.peer_push_chunk(%L, %L)', :'T1',
           encode(int4send(declared) || substr(decode(pack_text('[1]'), 'base64'), 5), 'base64'))) AS refused
FROM (VALUES (268435457), (268435456), (1048576), (1033), (2)) AS d(declared);
SELECT push(:'T1', ('[' || repeat('1,', 100000) || '1]')::jsonb) AS too_many_records;
SELECT try(format('SELECT morango.peer_push_chunk(%L, %L)', :'T1',
                  pack_text(repeat('[', 100000) || repeat(']', 100000)))) AS nested_too_deep;
SELECT try(format('SELECT morango.peer_authenticate(%L, %L, %L, %L, %L, %L)', gen_random_uuid(), 'facilitydata',
                  '[]', gen_random_uuid(), gen_random_uuid(), repeat('A', 5000))) AS huge_signature;

-- nothing of all this changed the state
SELECT fingerprint() = :'fp0' AS state_unchanged;

-- 10. what is data, not syntax, is taken verbatim: partitions under the
--     LIKE-wildcard and metacharacter filters; model names holding SQL
--     metacharacters and wildcards (stored, but they name no registered
--     model, so they reach no application table); the largest counter
SELECT push('7a000000-0000-0000-0000-000000000002', jsonb_build_array(rec(1, 'a_c'))) AS under_a_,
       push('7a000000-0000-0000-0000-000000000003', jsonb_build_array(rec(1, '%y'))) AS under_percent,
       push('7a000000-0000-0000-0000-000000000004', jsonb_build_array(rec(1, $$o'q\;2$$))) AS under_quote;
-- a pull under those filters sends only what lies literally under them
SELECT f AS filter, begin_transfer('5e000000-0000-0000-0000-000000000005', ts, false, ARRAY[f]) AS opened,
       (SELECT string_agg(r->>'partition', ' ' ORDER BY r->>'partition' COLLATE "C")
        FROM jsonb_array_elements(unpack(morango.peer_pull_chunk(ts::uuid, 0, 100)->>'packed')) AS r) AS sent,
       morango.peer_finish(ts::uuid, NULL)->>'status' AS finished
FROM (VALUES ('a_', '7a000000-0000-0000-0000-000000000009'), ('%', '7a000000-0000-0000-0000-00000000000a'),
             ($$o'q\$$, '7a000000-0000-0000-0000-00000000000b')) AS v(f, ts);
SELECT push(:'T1', jsonb_build_array(
           rec(1, 'f1', part => 'f1', model => $$facility'; DROP TABLE facility; --$$),
           rec(2, 'f1', part => 'f1', model => 'facilit_'),
           rec(3, 'f1', part => 'f1', model => '%'))) AS odd_model_names,
       push(:'T1', jsonb_build_array(rec(4, 'f1big', 9223372036854775807))) AS largest_counter;
SELECT fingerprint() AS fp1 \gset

-- 11. finishing a push with a count that does not match what arrived
--     (fewer, more, negative, none) changes nothing; the right count merges
SELECT n AS records_total, try(format('SELECT morango.peer_finish(%L, %L)', :'T1', n)) AS refused
FROM (VALUES (3), (5), (-1), (NULL)) AS v(n);
SELECT fingerprint() = :'fp1' AS state_unchanged;
SELECT try(format('SELECT morango.peer_finish(%L, 4)', :'T1')) AS finished,
       try(format('SELECT morango.peer_finish(%L, 1)->>''new''', '7a000000-0000-0000-0000-000000000002')) AS finished_a_,
       try(format('SELECT morango.peer_finish(%L, 1)->>''new''', '7a000000-0000-0000-0000-000000000003')) AS finished_percent,
       try(format('SELECT morango.peer_finish(%L, 1)->>''new''', '7a000000-0000-0000-0000-000000000004')) AS finished_quote;
SELECT fingerprint() AS fp2 \gset

-- 12. chunks for finished sessions: a finished transfer, a transfer of a
--     sync session the client closed (closing it ends its open transfers:
--     a finish then only reports how it ended)
SELECT push(:'T1', jsonb_build_array(rec(5, 'f1x'))) AS finished_transfer;
SELECT begin_transfer('5e000000-0000-0000-0000-000000000004', '7a000000-0000-0000-0000-000000000008', true, ARRAY['f1']) AS opened;
SELECT try(format('SELECT morango.peer_close(%L)', '5e000000-0000-0000-0000-000000000004')) AS closed;
SELECT push('7a000000-0000-0000-0000-000000000008', jsonb_build_array(rec(1, 'f1y'))) AS after_close,
       try(format('SELECT morango.peer_finish(%L, 1)', '7a000000-0000-0000-0000-000000000008')) AS finish_after_close;
SELECT fingerprint() = :'fp2' AS state_unchanged;
RESET ROLE;

-- what landed: the application rows, and the odd model names only in the store
SELECT id, name FROM facility ORDER BY id COLLATE "C";
SELECT model_name, partition, source_id, last_saved_counter, dirty_bit
FROM morango.records WHERE last_saved_instance = 'c0000000-0000-0000-0000-000000000001'
ORDER BY model_name COLLATE "C", partition COLLATE "C";
SELECT count(*) AS buffered FROM morango.buffer WHERE transfer_session_id <> '7a000000-0000-0000-0000-000000000005';
SELECT * FROM morango.check_invariants();
\c contrib_regression
SET client_min_messages = warning;
DROP DATABASE regress_hostile WITH (FORCE);
DROP ROLE regress_hostile_peer;
RESET client_min_messages;
