--
-- fsic: filter-specific instance counters (Morango's v2 format):
-- morango.fsic_expand() (expand_fsic_for_use) and morango.fsic_diff()
-- (calculate_directional_fsic_diff_v2).
--

-- Test helpers.  Morango's test vectors name instances with letters;
-- fsic_u() turns each letter into a uuid (a -> 00000000-...-000000000061)
-- and fsic_l() turns such uuids back into letters.
CREATE FUNCTION fsic_u(m jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(jsonb_object_agg(p.key,
               (SELECT COALESCE(jsonb_object_agg('00000000-0000-0000-0000-0000000000' || to_hex(ascii(i.key)),
                                                 i.value), '{}')
                FROM jsonb_each(p.value) AS i)), '{}')
    FROM jsonb_each(m) AS p
$$;
CREATE FUNCTION fsic_l(m jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(jsonb_object_agg(p.key,
               (SELECT COALESCE(jsonb_object_agg(chr(('x' || right(i.key, 2))::bit(8)::int), i.value), '{}')
                FROM jsonb_each(p.value) AS i)), '{}')
    FROM jsonb_each(m) AS p
$$;
-- a raw v2 FSIC from two lettered maps
CREATE FUNCTION fsic_raw(super jsonb, sub jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('super', fsic_u(super), 'sub', fsic_u(sub))
$$;
-- the diff of two lettered raw FSICs expanded for a filter, in letters
CREATE FUNCTION fsic_sync(sender jsonb, receiver jsonb, filter text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT fsic_l(morango.fsic_diff(morango.fsic_expand(fsic_raw(sender->'super', sender->'sub'), filter),
                                    morango.fsic_expand(fsic_raw(receiver->'super', receiver->'sub'), filter)))
$$;
-- The same C functions bound to text arguments, to reach the JSON syntax
-- checks (jsonb input is always well-formed JSON; C callers pass text).
CREATE FUNCTION fsic_expand_text(fsic text, filter text[]) RETURNS jsonb
LANGUAGE C IMMUTABLE AS 'morango', 'morango_fsic_expand_sql';
CREATE FUNCTION fsic_diff_text(sender text, receiver text) RETURNS jsonb
LANGUAGE C IMMUTABLE STRICT AS 'morango', 'morango_fsic_diff_sql';

--
-- Diff
--

-- Morango's vector (test_fsic_utils.py: test_calculate_directional_fsic_diff_v2)
SELECT fsic_l(morango.fsic_diff(
    fsic_u('{"p": {"a": 5, "c": 7}, "p1": {"b": 9, "d": 2}, "p1i": {"a": 7, "e": 6, "f": 1}, "p2": {"a": 8, "q": 5}}'),
    fsic_u('{"p": {"a": 3, "b": 4, "c": 9}, "p1": {"b": 9, "d": 2}, "p1i": {"a": 6, "e": 5, "c": 9}, "p3": {"a": 2, "c": 3}}')))
    AS diff;
-- the same, as it comes out (canonical uuids, partitions and instances sorted)
SELECT morango.fsic_diff(
    fsic_u('{"p": {"a": 5, "c": 7}, "p1": {"b": 9, "d": 2}, "p1i": {"a": 7, "e": 6, "f": 1}, "p2": {"a": 8, "q": 5}}'),
    fsic_u('{"p": {"a": 3, "b": 4, "c": 9}, "p1": {"b": 9, "d": 2}, "p1i": {"a": 6, "e": 5, "c": 9}, "p3": {"a": 2, "c": 3}}'))
    AS diff;
-- identical FSICs: nothing to send
SELECT fsic_l(morango.fsic_diff(m, m)) AS identical
FROM fsic_u('{"p": {"a": 5, "c": 7}, "p1": {"b": 9, "d": 2}, "p1i": {"a": 7, "e": 6, "f": 1}, "p2": {"a": 8, "q": 5}}') AS m;
-- the receiver is higher everywhere: nothing to send
SELECT fsic_l(morango.fsic_diff(
    fsic_u('{"p": {"a": 5, "c": 7}, "p1": {"b": 9, "d": 2}, "p1i": {"a": 7, "e": 6, "f": 1}, "p2": {"a": 8, "q": 5}}'),
    fsic_u('{"p": {"a": 6, "c": 9}, "p1": {"b": 11, "d": 12}, "p1i": {"a": 71, "e": 16, "f": 21}, "p2": {"a": 48, "q": 51}}')))
    AS receiver_higher;
-- empty sides; an empty receiver lacks everything from 0
SELECT fsic_l(morango.fsic_diff('{}', '{}')) AS both_empty,
       fsic_l(morango.fsic_diff('{}', fsic_u('{"p": {"a": 1}}'))) AS sender_empty,
       fsic_l(morango.fsic_diff(fsic_u('{"p": {"a": 1, "b": 0}, "q": {}}'), '{}')) AS receiver_empty;
-- the receiver's counter comes from its partitions that the sender's
-- partition starts with (itself included), the highest of them; a longer
-- receiver partition does not count
SELECT fsic_l(morango.fsic_diff(fsic_u('{"pq": {"a": 9, "b": 9, "c": 9}}'),
                                fsic_u('{"": {"a": 2}, "p": {"a": 4, "b": 1}, "pq": {"b": 3}, "pqr": {"c": 8}, "q": {"c": 7}}')))
    AS prefix_max;
-- the empty partition covers every partition
SELECT fsic_l(morango.fsic_diff(fsic_u('{"x": {"a": 3}, "y": {"a": 5}}'), fsic_u('{"": {"a": 4}}'))) AS empty_prefix;
-- the result is a map of the same shape, fit for the queuing step
SELECT p.key AS partition, i.key::uuid AS instance, i.value::bigint AS above
FROM jsonb_each(morango.fsic_diff(fsic_u('{"p1": {"a": 5}, "p2": {"b": 2}}'), fsic_u('{"p1": {"a": 1}}'))) AS p,
     jsonb_each(p.value) AS i
ORDER BY 1, 2;

--
-- Expansion
--

-- Morango's vector (test_fsic_utils.py: test_expand_fsic_for_use)
SELECT fsic_l(morango.fsic_expand(fsic_raw(
    '{"r": {"a": 5, "b": 3, "c": 7}, "q": {"f": 5}}',
    '{"rp1": {"a": 1, "b": 9, "d": 2}, "rp1i": {"e": 5}, "rp2i": {"e": 5}, "tt": {}}'),
    ARRAY['rp1', 'rp2', 'q1', 't'])) AS expanded;
-- (a) a filter prefix is added; empty, it is dropped again (c)
SELECT fsic_l(morango.fsic_expand(fsic_raw('{}', '{}'), ARRAY['p'])) AS nothing,
       fsic_l(morango.fsic_expand(fsic_raw('{"": {"a": 1}}', '{}'), ARRAY['p'])) AS raised_filter_prefix;
-- (b) a super partition raises a sub partition it is a prefix of, where higher
SELECT fsic_l(morango.fsic_expand(fsic_raw('{"p": {"a": 5, "c": 7}}', '{"p1": {"a": 1, "b": 9}}'),
                                  ARRAY['p1'])) AS super_raises_sub;
-- a super partition of the same name counts too; a sibling does not
SELECT fsic_l(morango.fsic_expand(fsic_raw('{"p1": {"a": 3}, "p2": {"b": 3}}', '{"p1": {"a": 1}}'),
                                  ARRAY['p1'])) AS same_name_not_sibling;
-- every super partition along the chain, the highest counter each
SELECT fsic_l(morango.fsic_expand(fsic_raw('{"": {"a": 1, "b": 5}, "p": {"a": 4}, "pq": {"c": 2}, "px": {"d": 9}}', '{}'),
                                  ARRAY['pqr'])) AS chain;
-- a sub partition prefixed by another sub partition is not raised
SELECT fsic_l(morango.fsic_expand(fsic_raw('{"p": {"a": 5}}', '{"p1x": {"b": 1}}'),
                                  ARRAY['p1'])) AS subordinate_not_raised;
-- (c) empty sub partitions are dropped; a super counter of 0 adds nothing
SELECT fsic_l(morango.fsic_expand(fsic_raw('{"p": {"a": 0}}', '{"p1": {}, "p2": {"b": 1}}'),
                                  ARRAY['p1', 'p2'])) AS empty_dropped;
-- sub partitions outside the filter are kept as they are (the queuing step refuses them)
SELECT fsic_l(morango.fsic_expand(fsic_raw('{}', '{"q": {"a": 1}}'), ARRAY['p'])) AS outside_filter;
-- a NULL filter means every partition (ARRAY['']); duplicates in a filter are harmless
SELECT fsic_l(morango.fsic_expand(fsic_raw('{}', '{"p1": {"a": 1}}'), NULL)) AS null_filter,
       fsic_l(morango.fsic_expand(fsic_raw('{}', '{"": {"b": 2}, "p1": {"a": 1}}'), ARRAY['', ''])) AS everything;
-- NULL in, NULL out
SELECT morango.fsic_expand(NULL, ARRAY['p']) IS NULL AS expand_null,
       morango.fsic_diff(NULL, '{}') IS NULL AS diff_null;

--
-- Morango's regression scenarios (sync/test_operations.py:
-- FSICPartitionEdgeCaseQueuingTestCase), as expand + diff
--

-- SoUD -> full -> full, filter p: the middle server holds the tablet's i1 in
-- p1 (a sub partition) and the laptop's i3 in p; the receiver has i3 up to 3
-- and i4.  Both i1 (from 0) and i3 (from 3) must be sent.
SELECT fsic_sync('{"super": {}, "sub": {"p": {"c": 5}, "p1": {"a": 6}}}',
                 '{"super": {}, "sub": {"p": {"c": 3, "d": 7}}}', ARRAY['p']) AS soud_full_full;
-- the same with the laptop's counter given as a super partition
SELECT fsic_sync('{"super": {"p": {"c": 5}}, "sub": {"p1": {"a": 6}}}',
                 '{"super": {}, "sub": {"p": {"c": 3, "d": 7}}}', ARRAY['p']) AS soud_full_full_super;
-- SoUD -> full -> SoUD, filter p1 and p2: the laptop's i3 is known under p
-- (super); the new tablet has nothing.  i3 and i1 are sent in p1 and p2.
SELECT fsic_sync('{"super": {"p": {"c": 5}}, "sub": {"p1": {"a": 6}, "p2": {"a": 1}}}',
                 '{"super": {}, "sub": {}}', ARRAY['p1', 'p2']) AS soud_full_soud;
-- sub-partition inclusion, filter p1: i1 is sent under p1 (and so in p1a,
-- p1b); i2, known only in p2, is not
SELECT fsic_sync('{"super": {}, "sub": {"p1": {"a": 5}}}',
                 '{"super": {}, "sub": {}}', ARRAY['p1']) AS subpartition;

--
-- Canonical forms
--

-- instance ids in any case, with or without dashes, come out lowercase and dashed
SELECT morango.fsic_diff('{"p": {"AAAAAAAABBBBCCCCDDDDEEEEEEEEEEEE": 2}}',
                         '{"p": {"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee": 1}}') AS canonical;
SELECT morango.fsic_expand('{"super": {}, "sub": {"p": {"0A0A0A0A-0000-0000-0000-00000000000B": 1}}}', ARRAY['p']) AS canonical;
-- partition names are any text; counters go up to 2^63 - 1
SELECT morango.fsic_diff(
    jsonb_build_object('école/"ü"\x', jsonb_build_object('aaaaaaaa-0000-0000-0000-000000000000', 9223372036854775807),
                       E'tab\there', '{"aaaaaaaa-0000-0000-0000-000000000000": 1}'::jsonb),
    '{"": {"aaaaaaaa-0000-0000-0000-000000000000": 0}}') AS names;
-- text input: whitespace around the document is fine
SELECT fsic_diff_text(E' {"p": {"aaaaaaaa-0000-0000-0000-000000000000": 2}}\n', '{}') AS text_input;

--
-- Errors
--

-- malformed JSON (only text input can be)
SELECT fsic_expand_text('{"super": {}, "sub": {', ARRAY['p']);
SELECT fsic_expand_text('', ARRAY['p']);
SELECT fsic_expand_text('{"super": {}, "sub": {}} x', ARRAY['p']);
SELECT fsic_expand_text('{"super": {}, "sub": {},}', ARRAY['p']);
SELECT fsic_expand_text('{"super" {}}', ARRAY['p']);
SELECT fsic_expand_text('{''super'': {}, ''sub'': {}}', ARRAY['p']);
SELECT fsic_expand_text('{"super": {}, "sub": {"p\u0000x": {}}}', ARRAY['p']);
SELECT fsic_diff_text('{"p": {"aaaaaaaa-0000-0000-0000-000000000000": 01}}', '{}');
SELECT fsic_diff_text('{}', '{"p": nul}');
SELECT fsic_diff_text('{}', '{"p": {}} /* comment */');
-- a raw FSIC of the wrong shape
SELECT morango.fsic_expand('[]', ARRAY['p']);
SELECT morango.fsic_expand('{"sub": {}}', ARRAY['p']);
SELECT morango.fsic_expand('{"super": {}}', ARRAY['p']);
SELECT morango.fsic_expand('{"super": {}, "sub": {}, "extra": {}}', ARRAY['p']);
SELECT morango.fsic_expand('{"super": [], "sub": {}}', ARRAY['p']);
SELECT morango.fsic_expand('{"super": {}, "sub": {"p": 1}}', ARRAY['p']);
-- a map of the wrong shape
SELECT morango.fsic_diff('"p"', '{}');
SELECT morango.fsic_diff('{}', '{"p": ["aaaaaaaa-0000-0000-0000-000000000000"]}');
-- (a raw FSIC is no map: "super" would be a partition, its keys instance ids)
SELECT morango.fsic_diff('{"super": {"p": {}}, "sub": {}}', '{}');
-- counters that are not non-negative integers
SELECT morango.fsic_diff('{"p": {"aaaaaaaa-0000-0000-0000-000000000000": -1}}', '{}');
SELECT morango.fsic_diff('{"p": {"aaaaaaaa-0000-0000-0000-000000000000": 1.5}}', '{}');
SELECT morango.fsic_diff('{"p": {"aaaaaaaa-0000-0000-0000-000000000000": 1.0}}', '{}');
SELECT morango.fsic_diff('{}', '{"p": {"aaaaaaaa-0000-0000-0000-000000000000": "1"}}');
SELECT morango.fsic_diff('{"p": {"aaaaaaaa-0000-0000-0000-000000000000": null}}', '{}');
SELECT morango.fsic_diff('{"p": {"aaaaaaaa-0000-0000-0000-000000000000": true}}', '{}');
SELECT morango.fsic_diff('{"p": {"aaaaaaaa-0000-0000-0000-000000000000": 9223372036854775808}}', '{}');
SELECT morango.fsic_diff('{"p": {"aaaaaaaa-0000-0000-0000-000000000000": 1e30}}', '{}');
SELECT fsic_diff_text('{"p": {"aaaaaaaa-0000-0000-0000-000000000000": 1e3}}', '{}');
SELECT morango.fsic_expand('{"super": {"p": {"aaaaaaaa-0000-0000-0000-000000000000": -5}}, "sub": {}}', ARRAY['p']);
-- instance ids that are not uuids
SELECT morango.fsic_diff('{"p": {"a": 1}}', '{}');
SELECT morango.fsic_diff('{"p": {"aaaaaaaa-0000-0000-0000-00000000000": 1}}', '{}');
SELECT morango.fsic_diff('{"p": {"{aaaaaaaa-0000-0000-0000-000000000000}": 1}}', '{}');
SELECT morango.fsic_diff('{"p": {"aaaaaaaa0-000-0000-0000-000000000000": 1}}', '{}');
SELECT morango.fsic_diff('{"p": {"gaaaaaaa-0000-0000-0000-000000000000": 1}}', '{}');
SELECT morango.fsic_expand('{"super": {}, "sub": {"p": {"": 1}}}', ARRAY['p']);
-- one instance spelt two ways in a partition
SELECT morango.fsic_diff('{}', '{"p": {"AAAAAAAA-0000-0000-0000-000000000000": 1, "aaaaaaaa000000000000000000000000": 2}}');
-- bad filters
SELECT morango.fsic_expand('{"super": {}, "sub": {}}', ARRAY[]::text[]);
SELECT morango.fsic_expand('{"super": {}, "sub": {}}', ARRAY['p', NULL]);
SELECT morango.fsic_expand('{"super": {}, "sub": {}}', ARRAY[ARRAY['p'], ARRAY['q']]);
-- size bound: 1,000,000 entries, a partition or a counter being one each
-- (here 1 super and 1,000,000 sub partitions)
SELECT morango.fsic_expand(jsonb_build_object('super', '{"": {}}'::jsonb,
                                              'sub', (SELECT jsonb_object_agg('p' || i, '{}'::jsonb)
                                                      FROM generate_series(1, 1000000) i)),
                           ARRAY['p']);
-- ... and for an expansion that would grow past it: 500,001 filter
-- prefixes, each raised to one counter (above morango.max_filter_prefixes,
-- which a superuser may raise)
SET morango.max_filter_prefixes = 1000000;
SELECT morango.fsic_expand('{"super": {"": {"aaaaaaaa-0000-0000-0000-000000000000": 1}}, "sub": {}}',
                           (SELECT array_agg(lpad(i::text, 6, '0')) FROM generate_series(1, 500001) i));
RESET morango.max_filter_prefixes;

DROP FUNCTION fsic_sync(jsonb, jsonb, text[]);
DROP FUNCTION fsic_raw(jsonb, jsonb);
DROP FUNCTION fsic_u(jsonb);
DROP FUNCTION fsic_l(jsonb);
DROP FUNCTION fsic_expand_text(text, text[]);
DROP FUNCTION fsic_diff_text(text, text);
