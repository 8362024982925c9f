--
-- attack_filters: what a filter costs (issue 12, item 7a).  A peer chooses
-- the filter of its pulls and pushes; before the fix a pull with 8,000
-- prefixes kept the hub busy for half a minute holding its instance lock,
-- 100,000 prefixes for twenty minutes.  Now a filter is bounded
-- (morango.max_filter_prefixes, morango.max_filter_prefix_length, superuser
-- settings) wherever it enters, and matched by binary search in its sorted
-- prefixes (morango.in_filter, morango.above_filter; the FSIC expansion and
-- the queue's diff likewise), which must give exactly what the
-- starts_with() predicates they replace gave.
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP DATABASE IF EXISTS regress_attack_filters;
DROP DATABASE IF EXISTS regress_attack_filters_hub;
CREATE DATABASE regress_attack_filters;
CREATE DATABASE regress_attack_filters_hub;
DO $$ BEGIN CREATE ROLE regress_filter_peer LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
RESET client_min_messages;
SELECT format('host=127.0.0.1 port=%s dbname=regress_attack_filters_hub user=%s',
              current_setting('port'), current_user) AS hub \gset
\c regress_attack_filters_hub
\i sql/sync_schema.psql
SELECT morango.grant_peer('regress_filter_peer');
INSERT INTO facility SELECT 'f' || g, 'Facility ' || g FROM generate_series(1, 5) g;
INSERT INTO member SELECT 'm' || g, 'f' || (1 + g % 5), 'user ' || g, g FROM generate_series(1, 200) g;
SELECT morango.serialize() AS serialized;

\i sql/peer_fixture.psql
-- a pull with this filter, as the peer opens one (and then closes it)
CREATE FUNCTION pull(filter text[]) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    ss uuid := md5('sync ' || filter::text)::uuid;
    result text := try(format('SELECT morango.peer_begin(3, %L, %L, ''facilitydata'', false, %L, %L, %L, ''{}'')->>''records_total''',
                              ss, md5('transfer ' || filter::text)::uuid, filter,
                              'c0000000-0000-0000-0000-000000000001', '{"super": {}, "sub": {}}'));
BEGIN
    PERFORM morango.peer_close(ss);
    RETURN result;
END $$;
-- n prefixes: the five facilities, then made-up ones
CREATE FUNCTION prefixes(n integer) RETURNS text[] LANGUAGE sql AS $$
    SELECT array_agg(CASE WHEN g <= 5 THEN 'f' || g ELSE 'nowhere-' || g END ORDER BY g)
    FROM generate_series(1, n) g
$$;

-- the bounds, as the peer meets them through the peer API: refused before
-- any work (100,000 prefixes took twenty minutes before), nothing changed
SHOW morango.max_filter_prefixes;
SHOW morango.max_filter_prefix_length;
SET ROLE regress_filter_peer;
SET statement_timeout = '60s';
SELECT pull(prefixes(1001));
SELECT pull(prefixes(100000));
SELECT pull(ARRAY['f1', repeat('x', 513)]);
SELECT pull(ARRAY['f1', repeat('é', 257)]);   -- 514 bytes
SELECT pull(ARRAY[NULL]);
-- and cannot raise them
SET morango.max_filter_prefixes = 100000;
-- at the bounds: 1000 prefixes, one of 512 bytes
SELECT pull(prefixes(999) || repeat('x', 512));
RESET statement_timeout;
RESET ROLE;

-- every other way a filter comes in is bounded too (run by the owner)
SELECT try(format('SELECT morango.%s', q)) FROM (VALUES
    ('serialize(''facilitydata'', prefixes(1001))'),
    ('deserialize(''facilitydata'', prefixes(1001))'),
    ('fsic(''facilitydata'', prefixes(1001))'),
    ('fsic_expand(''{"super": {}, "sub": {}}'', prefixes(1001))'),
    ('in_filter(''f1'', prefixes(1001))'),
    ('above_filter(''f1'', prefixes(1001))'),
    ('check_filter(prefixes(1001))'),
    ('sync_start(''nowhere'', ''facilitydata'', prefixes(1001))'),
    ('schedule(''nowhere'', ''* * * * *'', ''facilitydata'', prefixes(1001))')) AS v(q);
SELECT morango.sync('nowhere', 'facilitydata', prefixes(1001));   -- (not in a subtransaction)

-- the cost: a pull with 100,000 prefixes (the bound raised by a superuser
-- for this session), as the peer makes it, is served within the statement
-- timeout (it takes a few seconds; before, 8,000 prefixes took 31 s and
-- the cost grew with the square of their number)
SET morango.max_filter_prefixes = 100000;
SET ROLE regress_filter_peer;
SET statement_timeout = '60s';
SELECT pull(prefixes(100000));
RESET statement_timeout;
RESET ROLE;
RESET morango.max_filter_prefixes;

-- in_filter and above_filter give what the predicates they replace gave,
-- on the edge cases: the empty prefix, duplicates, prefixes of one another,
-- multibyte characters, bytewise order
CREATE FUNCTION old_in(p text, f text[]) RETURNS boolean LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM unnest(f) AS x WHERE starts_with(p, x))
$$;
CREATE FUNCTION old_above(p text, f text[]) RETURNS boolean LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM unnest(f) AS x WHERE starts_with(x, p) AND x <> p)
$$;
SELECT p, f, morango.in_filter(p, f) AS in_filter, morango.in_filter(p, f) = old_in(p, f) AS same,
       morango.above_filter(p, f) AS above, morango.above_filter(p, f) = old_above(p, f) AS same_above
FROM (VALUES ('', ARRAY['']), ('abc', ARRAY['']), ('', ARRAY['a']), ('a', ARRAY['a', 'a']),
             ('ab', ARRAY['abc', 'a', 'ab']), ('ab', ARRAY['abc']), ('abd', ARRAY['abc', 'ab']),
             ('ab', ARRAY['ab', 'abc']), ('b', ARRAY['a', 'c']), ('a:x', ARRAY['b', 'a:']),
             ('a', ARRAY['a:']), ('été', ARRAY['é']), ('été', ARRAY['ét', 'z']), ('e', ARRAY['é']),
             ('é', ARRAY['e']), ('é', ARRAY['été']), ('x', ARRAY['é', 'y', 'x', 'a'])) AS v(p, f)
ORDER BY 1, 2;
-- bad filters are refused, a NULL filter or partition gives NULL
SELECT morango.in_filter('a', ARRAY[NULL]);
SELECT morango.in_filter('a', ARRAY['a', NULL]);
SELECT morango.in_filter('a', '{}');
SELECT morango.in_filter('a', ARRAY[['a'], ['b']]);
SELECT morango.above_filter('a', ARRAY[NULL]);
SELECT morango.in_filter('a', NULL) IS NULL AS null_filter, morango.in_filter(NULL, ARRAY['a']) IS NULL AS null_partition;
-- in one statement over many rows and several filters (the cache follows
-- the filter)
SELECT f, count(*) FILTER (WHERE morango.in_filter(p, f)) AS inside,
       bool_and(morango.in_filter(p, f) = old_in(p, f)) AS same
FROM (VALUES (ARRAY['f1']), (ARRAY['f2', 'f3:']), (ARRAY['']), (ARRAY['f1']))
     AS v(f), (SELECT 'f' || g || ':' || g FROM generate_series(1, 30) g) AS x(p)
GROUP BY f ORDER BY f;

-- ... and on random partitions and filters: in_filter, above_filter,
-- filter_within, the FSIC expansion and the FSIC of this database against
-- the definitions they replace (fixed seed)
SELECT setseed(0.4242);
CREATE FUNCTION rnd_part() RETURNS text LANGUAGE sql AS $$
    SELECT COALESCE(string_agg(substr('ab:é', 1 + floor(random() * 4)::int, 1), ''), '')
    FROM generate_series(1, floor(random() * 5)::int)
$$;
CREATE FUNCTION rnd_filter() RETURNS text[] LANGUAGE sql AS $$
    SELECT array_agg(rnd_part()) FROM generate_series(1, 1 + floor(random() * 5)::int)
$$;
-- Morango's expand_fsic_for_use, written out (doc/protocol.md)
CREATE FUNCTION old_expand(raw jsonb, filter text[]) RETURNS jsonb LANGUAGE sql AS $$
    WITH subs AS (SELECT k FROM jsonb_object_keys(raw->'sub') AS k UNION SELECT unnest(filter)),
    sup AS (SELECT p.key AS part, i.key AS inst, i.value::bigint AS c
            FROM jsonb_each(raw->'super') AS p, jsonb_each_text(p.value) AS i),
    own AS (SELECT p.key AS part, i.key AS inst, i.value::bigint AS c
            FROM jsonb_each(raw->'sub') AS p, jsonb_each_text(p.value) AS i),
    top AS (SELECT s.k FROM subs s
            WHERE NOT EXISTS (SELECT 1 FROM subs t WHERE t.k <> s.k AND starts_with(s.k, t.k))),
    raised AS (SELECT top.k AS part, sup.inst, max(sup.c) AS c FROM top JOIN sup ON starts_with(top.k, sup.part)
               GROUP BY 1, 2 HAVING max(sup.c) > 0),
    e AS (SELECT part, inst, max(c) AS c FROM (SELECT * FROM own UNION ALL SELECT * FROM raised) AS x
          GROUP BY 1, 2)
    SELECT COALESCE(jsonb_object_agg(part, m), '{}')
    FROM (SELECT part, jsonb_object_agg(inst, c) AS m FROM e GROUP BY part) AS y
$$;
-- random raw FSICs: per case and section, a few partitions with up to four
-- instances each, some with none
CREATE TABLE cases AS
WITH e AS (
    SELECT g, w, rnd_part() AS p,
           CASE WHEN random() < 0.8 THEN 'c000000' || floor(random() * 4)::int || '-0000-0000-0000-000000000000' END AS i,
           floor(random() * 6)::int AS c
    FROM generate_series(1, 600) AS g, (VALUES ('super'), ('sub')) AS v(w), generate_series(1, 8) AS k
    WHERE random() < 0.5
), m AS (
    SELECT g, w, p, COALESCE(jsonb_object_agg(i, c) FILTER (WHERE i IS NOT NULL), '{}') AS m
    FROM (SELECT DISTINCT ON (g, w, p, i) * FROM e ORDER BY g, w, p, i) AS x GROUP BY g, w, p
), raw AS (
    SELECT g, jsonb_object_agg(w, mm) AS raw
    FROM (SELECT g, w, jsonb_object_agg(p, m) AS mm FROM m GROUP BY g, w) AS y GROUP BY g
)
SELECT g, rnd_part() AS p, rnd_filter() AS f, rnd_filter() AS f2,
       jsonb_build_object('super', COALESCE(raw->'super', '{}'), 'sub', COALESCE(raw->'sub', '{}')) AS raw
FROM generate_series(1, 600) AS g LEFT JOIN raw USING (g);
SELECT count(*) AS cases,
       count(*) FILTER (WHERE morango.in_filter(p, f) = old_in(p, f)) AS in_filter_same,
       count(*) FILTER (WHERE morango.above_filter(p, f) = old_above(p, f)) AS above_filter_same,
       count(*) FILTER (WHERE morango.filter_within(f2, f) = (SELECT bool_and(old_in(x, f)) FROM unnest(f2) AS x))
           AS filter_within_same,
       count(*) FILTER (WHERE morango.fsic_expand(raw, f) = old_expand(raw, f)) AS fsic_expand_same,
       count(*) FILTER (WHERE morango.in_filter(p, f)) > 100 AND count(*) FILTER (WHERE morango.above_filter(p, f)) > 50
           AND count(*) FILTER (WHERE morango.fsic_expand(raw, f) <> '{}') > 100 AS both_answers_seen
FROM cases;
-- morango.fsic() against its definition before, on random counters
CREATE FUNCTION old_fsic(profile text, filter text[]) RETURNS jsonb LANGUAGE sql AS $$
    WITH f AS (SELECT DISTINCT prefix FROM unnest(filter) AS prefix),
    sub AS (SELECT d.partition, jsonb_object_agg(d.instance_id, d.counter) AS m
            FROM morango.database_max_counters d
            WHERE d.profile = old_fsic.profile AND EXISTS (SELECT 1 FROM f WHERE starts_with(d.partition, f.prefix))
            GROUP BY d.partition),
    sup AS (SELECT d.partition, jsonb_object_agg(d.instance_id, d.counter) AS m
            FROM morango.database_max_counters d
            WHERE d.profile = old_fsic.profile
              AND EXISTS (SELECT 1 FROM f WHERE starts_with(f.prefix, d.partition) AND f.prefix <> d.partition)
              AND NOT EXISTS (SELECT 1 FROM f WHERE starts_with(d.partition, f.prefix))
            GROUP BY d.partition)
    SELECT jsonb_build_object('super', COALESCE((SELECT jsonb_object_agg(partition, m) FROM sup), '{}'::jsonb),
                              'sub', COALESCE((SELECT jsonb_object_agg(partition, m) FROM sub), '{}'::jsonb))
$$;
INSERT INTO morango.database_max_counters (profile, instance_id, partition, counter)
SELECT DISTINCT ON (p, i) 'fsicprop', i::uuid, p, 1 + floor(random() * 9)::int
FROM (SELECT rnd_part() AS p, 'c000000' || floor(random() * 3)::int || '-0000-0000-0000-000000000000' AS i
      FROM generate_series(1, 60)) AS x;
SELECT count(*) AS filters, count(*) FILTER (WHERE morango.fsic('fsicprop', f) = old_fsic('fsicprop', f)) AS same
FROM cases WHERE g <= 200;
DELETE FROM morango.database_max_counters WHERE profile = 'fsicprop';

-- queue: the records it buffers are those of the FSIC diff, as the join
-- with starts_with() it replaces chose them, on random stores, FSICs and
-- filters (this side produces: an initiator's push)
INSERT INTO morango.store (id, profile, model_name, partition, source_id, serialized,
                           last_saved_instance, last_saved_counter)
SELECT morango.record_id(p, 's' || g, 'm'), 'qprop', 'm', p, 's' || g, '{}',
       ('c000000' || floor(random() * 4)::int || '-0000-0000-0000-000000000000')::uuid, 1 + floor(random() * 6)::int
FROM (SELECT g, rnd_part() AS p FROM generate_series(1, 400) g) AS x;
CREATE FUNCTION queue_matches(n integer, tag text DEFAULT 'qprop') RETURNS TABLE (rounds bigint, same bigint, queued bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    ts uuid;
    diff jsonb;
    n_same bigint := 0;
    n_queued bigint := 0;
BEGIN
    FOR r IN SELECT a.g, a.f, a.raw AS mine, b.raw AS theirs
             FROM cases a JOIN cases b ON b.g = a.g + 300 WHERE a.g <= n LOOP
        ts := md5(tag || r.g)::uuid;
        PERFORM morango.transfer_open(md5(tag || '-ss' || r.g)::uuid, ts, 'qprop', false, true, r.f);
        UPDATE morango.transfer_sessions SET local_fsic = r.mine, remote_fsic = r.theirs WHERE id = ts;
        PERFORM morango.queue(ts);
        diff := morango.fsic_diff(morango.fsic_expand(r.mine, r.f), morango.fsic_expand(r.theirs, r.f));
        n_queued := n_queued + (SELECT count(*) FROM morango.buffer WHERE transfer_session_id = ts);
        IF (SELECT array_agg(record_id ORDER BY record_id) FROM morango.buffer WHERE transfer_session_id = ts)
           IS NOT DISTINCT FROM
           (SELECT array_agg(s.id ORDER BY s.id) FROM morango.store s
            WHERE s.profile = 'qprop' AND old_in(s.partition, r.f)
              AND EXISTS (SELECT 1 FROM jsonb_each(diff) AS p, jsonb_each_text(p.value) AS i
                          WHERE starts_with(s.partition, p.key) AND i.key::uuid = s.last_saved_instance
                            AND s.last_saved_counter > i.value::bigint)) THEN
            n_same := n_same + 1;
        END IF;
        PERFORM morango.transfer_close(ts);
    END LOOP;
    RETURN QUERY SELECT n::bigint, n_same, n_queued;
END $$;
SELECT rounds, same, queued > 1000 AS many_queued FROM queue_matches(150);
-- ... and when the diff names more instances than the candidates query
-- writes out (a single-user device against a hub: queue.c,
-- QUEUE_MAX_RANGES), with the records of 80 more instances
INSERT INTO morango.store (id, profile, model_name, partition, source_id, serialized,
                           last_saved_instance, last_saved_counter)
SELECT morango.record_id(p, 'h' || g, 'm'), 'qprop', 'm', p, 'h' || g, '{}',
       ('d' || lpad((g % 80)::text, 7, '0') || '-0000-0000-0000-000000000000')::uuid, 1 + g % 5
FROM (SELECT g, rnd_part() AS p FROM generate_series(1, 400) g) AS x
ON CONFLICT DO NOTHING;
UPDATE cases SET raw = jsonb_build_object(
    'super', jsonb_build_object('', (SELECT jsonb_object_agg('d' || lpad(i::text, 7, '0') || '-0000-0000-0000-000000000000',
                                                             2 + (i + g) % 3)
                                     FROM generate_series(0, 79) i)),
    'sub', '{}'::jsonb)
WHERE g <= 40;
UPDATE cases SET raw = jsonb_build_object('super', '{}'::jsonb, 'sub',
    jsonb_build_object(rnd_part(), (SELECT jsonb_object_agg('d' || lpad(i::text, 7, '0') || '-0000-0000-0000-000000000000',
                                                            1 + (i * g) % 4)
                                    FROM generate_series(0, 79, 3) i)))
WHERE g BETWEEN 301 AND 340;
SELECT rounds, same, queued > 100 AS many_queued FROM queue_matches(40, 'qhub');
-- morango.prefix_upper(): every string that starts with a prefix lies in
-- its byte range
SELECT count(*) AS pairs,
       count(*) FILTER (WHERE NOT starts_with(a.p, b.p)
                           OR (a.p COLLATE "C" >= b.p COLLATE "C"
                               AND (morango.prefix_upper(b.p) IS NULL
                                    OR a.p COLLATE "C" < morango.prefix_upper(b.p) COLLATE "C"))) AS in_range,
       count(*) FILTER (WHERE starts_with(a.p, b.p) AND morango.prefix_upper(b.p) IS NOT NULL) > 100 AS bounded_seen
FROM cases a, cases b WHERE a.g <= 100 AND b.g <= 100;
SELECT encode(convert_to(morango.prefix_upper(p), 'UTF8'), 'hex') AS upper
FROM (VALUES ('abc'), ('ab:'), ('abé'), ('é'), (''), ('a~')) AS v(p);
DELETE FROM morango.store WHERE profile = 'qprop';
DELETE FROM morango.transfer_sessions t USING morango.sync_sessions s
WHERE s.id = t.sync_session_id AND s.profile = 'qprop';
DELETE FROM morango.sync_sessions WHERE profile = 'qprop';

-- a sync whose filter is longer than a btree entry (300 facility prefixes,
-- 10 kB): its status row is keyed by the filter's hash (it failed before:
-- "index row size exceeds btree version 4 maximum")
\c regress_attack_filters
\i sql/sync_schema.psql
SELECT morango.sync(:'hub', 'facilitydata',
                    (SELECT array_agg(CASE WHEN g <= 5 THEN 'f' || g ELSE repeat('z', 30) || g END)
                     FROM generate_series(1, 300) g), 'pull') IS NOT NULL AS synced;
SELECT count(*) AS members FROM member;
SELECT cardinality(filter), consecutive_failures, last_success_at IS NOT NULL AS succeeded FROM morango.peers;
-- a second sync with the same filter finds the same row
SELECT morango.sync(:'hub', 'facilitydata',
                    (SELECT array_agg(CASE WHEN g <= 5 THEN 'f' || g ELSE repeat('z', 30) || g END)
                     FROM generate_series(1, 300) g), 'pull') IS NOT NULL AS synced;
SELECT count(*) AS status_rows FROM morango.peer_status;

-- the invariants hold in both databases
SELECT * FROM morango.check_invariants();
\c regress_attack_filters_hub
SELECT * FROM morango.check_invariants();
\c contrib_regression
SET client_min_messages = warning;
DROP DATABASE regress_attack_filters WITH (FORCE);
DROP DATABASE regress_attack_filters_hub WITH (FORCE);
DROP ROLE regress_filter_peer;
RESET client_min_messages;
