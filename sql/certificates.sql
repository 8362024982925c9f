--
-- certificates: keys and signatures, scope templates and the subset rule,
-- certificate chains (create, issue, export, verify and save), nonces.
--

-- errors with ids masked, so the output does not depend on random keys
CREATE FUNCTION cert_try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(regexp_replace(SQLERRM,
        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'g'),
        '[0-9a-f]{32}', '<hex>', 'g');
END
$$;
CREATE FUNCTION hex(u uuid) RETURNS text LANGUAGE sql IMMUTABLE RETURN replace(u::text, '-', '');

-- scope templates (Kolibri's two scopes, and one for another profile)
INSERT INTO morango.scope_definitions
    (id, profile, primary_scope_param_key, read_filter_template, write_filter_template,
     read_write_filter_template)
VALUES ('full-facility', 'facilitydata', 'dataset_id', '', '', '${dataset_id}'),
       ('single-user', 'facilitydata', 'dataset_id',
        E'${dataset_id}:allusers-ro\n${dataset_id}:user-ro:${user_id}',
        '${dataset_id}:anonymous', '${dataset_id}:user-rw:${user_id}'),
       ('other-profile', 'otherdata', 'dataset_id', '', '', '${dataset_id}');

-- expansion: lines, parameters, numbers, duplicates and empty lines dropped
SELECT morango.scope_filter(ARRAY['${a}:x', E'${a}:y\n\n${a}:${n}', '${a}:x'], '{"a": "d", "n": 7}');
SELECT morango.scope_filter(ARRAY['', ''], '{}') AS no_lines_grant_nothing;
SELECT cert_try($$SELECT morango.scope_filter(ARRAY['${a}:${user_id}'], '{"a": "d"}')$$) AS missing;
SELECT cert_try($$SELECT morango.scope_filter(ARRAY['${a}:${u}'], '{"a": "d", "u": ""}')$$) AS empty_value;
SELECT cert_try($$SELECT morango.scope_filter(ARRAY['${a}:${u}'], '{"a": "d", "u": "x\ny"}')$$) AS line_break;
SELECT cert_try($$SELECT morango.scope_filter(ARRAY['${a}:${u}'], '{"a": "d", "u": [1]}')$$) AS not_scalar;
SELECT cert_try($$SELECT morango.scope_filter(ARRAY['${a'], '{"a": "d"}')$$) AS unterminated;

-- the subset rule: every prefix of a under some prefix of b
SELECT morango.filter_within(ARRAY['d:u1', 'd:ro'], ARRAY['d']) AS narrower,
       morango.filter_within(ARRAY['d'], ARRAY['d:u1']) AS wider,
       morango.filter_within(ARRAY['d:u1', 'e'], ARRAY['d']) AS partly_outside,
       morango.filter_within(ARRAY[]::text[], ARRAY['d']) AS empty_within,
       morango.filter_within(ARRAY['x'], ARRAY['']) AS under_everything;

-- keys and signatures: PKCS#1 v1.5 is deterministic; tampering is detected
CREATE TEMP TABLE kp AS SELECT * FROM morango.key_generate();
SELECT morango.sign(private_key, 'm') = morango.sign(private_key, 'm') AS deterministic,
       morango.verify(public_key, 'm', morango.sign(private_key, 'm')) AS verifies,
       morango.verify(public_key, 'M', morango.sign(private_key, 'm')) AS other_message,
       morango.verify(public_key, 'm', 'not base64!') AS garbage_signature,
       morango.verify(public_key, 'm', 'AAAA') AS short_signature,
       morango.public_key(public_key) = public_key AS canonical,
       length(public_key) AS public_key_chars
FROM kp;
SELECT cert_try($$SELECT morango.verify('bm90IGEga2V5', 'm', 'AAAA')$$) AS bad_public_key;
SELECT cert_try($$SELECT morango.sign('not a key', 'm')$$) AS bad_private_key;

-- a root certificate: its scope is its own id
SELECT morango.create_root_certificate('full-facility') AS root \gset
SELECT parent_id IS NULL AS is_root, profile, scope_params = jsonb_build_object('dataset_id', hex(id)) AS params,
       read_filter = ARRAY[hex(id)] AND write_filter = ARRAY[hex(id)] AS scope_is_id,
       EXISTS (SELECT 1 FROM morango.certificate_keys k WHERE k.certificate_id = c.id) AS holds_key
FROM morango.certificates c WHERE id = :'root';
SELECT cert_try(format($$SELECT morango.create_root_certificate('nope')$$)) AS unknown_scope;

-- a single-user child, with a key made here
SELECT morango.issue_certificate(:'root', 'single-user',
                                 jsonb_build_object('dataset_id', hex(:'root'), 'user_id', 'learner-one')) AS learner \gset
SELECT array_to_string(read_filter, ' ') = format('%1$s:user-rw:learner-one %1$s:allusers-ro %1$s:user-ro:learner-one', hex(:'root')) AS reads,
       array_to_string(write_filter, ' ') = format('%1$s:user-rw:learner-one %1$s:anonymous', hex(:'root')) AS writes,
       parent_id = :'root' AS parent, length(salt) AS salt_chars
FROM morango.certificates WHERE id = :'learner';

-- a child for someone else's key (a signing request): no private key here
SELECT morango.issue_certificate(:'root', 'full-facility', jsonb_build_object('dataset_id', hex(:'root')),
                                 (SELECT public_key FROM kp)) AS device \gset
SELECT public_key = (SELECT public_key FROM kp) AS their_key,
       NOT EXISTS (SELECT 1 FROM morango.certificate_keys WHERE certificate_id = :'device') AS no_key_here
FROM morango.certificates WHERE id = :'device';

-- key rotation: a new key under the same parent and scope; the old key is gone
SELECT morango.issue_certificate(:'root', 'single-user',
                                 jsonb_build_object('dataset_id', hex(:'root'), 'user_id', 'u9')) AS old \gset
SELECT morango.rotate_certificate(:'old') AS rotated \gset
SELECT n.public_key <> o.public_key AS new_key, n.parent_id = o.parent_id AS same_parent,
       n.read_filter = o.read_filter AND n.write_filter = o.write_filter AS same_scope,
       (SELECT array_agg(certificate_id = n.id) FROM morango.certificate_keys
        WHERE certificate_id IN (n.id, o.id)) AS keys_held
FROM morango.certificates n, morango.certificates o WHERE n.id = :'rotated' AND o.id = :'old';
SELECT cert_try(format('SELECT morango.rotate_certificate(%L)', :'root')) AS rotate_root;
SELECT cert_try(format('SELECT morango.rotate_certificate(%L)', :'old')) AS rotate_again;
DELETE FROM morango.certificates WHERE id IN (:'rotated', :'old');

SELECT count(*) AS certificates_before_refusals FROM morango.certificates;

-- refusals: wider than the parent, another dataset, another profile, no key
SELECT cert_try(format($$SELECT morango.issue_certificate(%L, 'full-facility', %L)$$,
                       :'learner', jsonb_build_object('dataset_id', hex(:'root')))) AS wider_than_parent;
SELECT cert_try(format($$SELECT morango.issue_certificate(%L, 'full-facility', '{"dataset_id": "other"}')$$,
                       :'root')) AS other_dataset;
SELECT cert_try(format($$SELECT morango.issue_certificate(%L, 'other-profile', %L)$$,
                       :'root', jsonb_build_object('dataset_id', hex(:'root')))) AS other_profile;
SELECT cert_try(format($$SELECT morango.issue_certificate(%L, 'single-user', %L)$$,
                       :'device', jsonb_build_object('dataset_id', hex(:'root'), 'user_id', 'u2'))) AS no_parent_key;
SELECT cert_try(format($$SELECT morango.issue_certificate(%L, 'single-user', %L, 'bm90IGEga2V5')$$,
                       :'root', jsonb_build_object('dataset_id', hex(:'root'), 'user_id', 'u2'))) AS bad_key;

-- a root whose scope is not its own id
SELECT cert_try($$
    SELECT morango.certificate_check(s, morango.sign(k.private_key, s))
    FROM kp k, LATERAL (SELECT morango.certificate_serialize(
        morango.sha2_uuid(k.public_key || ':facilitydata'), NULL, 'facilitydata', '', 'full-facility', 1,
        '{"dataset_id": "someone-elses-dataset"}', k.public_key) AS s) x$$) AS root_outside_its_id;

-- chains: export, then verify and save on a database that lacks them
SELECT jsonb_array_length(morango.certificate_chain(:'learner')) AS chain_length,
       morango.certificate_chain(:'learner')->0->>'serialized' =
           (SELECT serialized FROM morango.certificates WHERE id = :'root') AS root_first;
CREATE TEMP TABLE chain AS SELECT morango.certificate_chain(:'learner') AS c;
DELETE FROM morango.certificates WHERE id = :'learner';
DELETE FROM morango.certificates WHERE id = :'device';
DELETE FROM morango.certificates WHERE id = :'root';
SELECT morango.save_certificate_chain(c) = :'learner' AS saved FROM chain;
SELECT count(*) AS stored, count(k.certificate_id) AS with_keys
FROM morango.certificates c LEFT JOIN morango.certificate_keys k ON k.certificate_id = c.id;
SELECT morango.save_certificate_chain(c) = :'learner' AS saved_again FROM chain;

-- forged and broken chains change nothing
DELETE FROM morango.certificates WHERE id = :'learner';
SELECT cert_try(format($$SELECT morango.save_certificate_chain(%L)$$,
    jsonb_set(c, '{1,serialized}', to_jsonb(replace(c->1->>'serialized', 'learner-one', 'learner-two'))))) AS tampered
FROM chain;
SELECT cert_try(format($$SELECT morango.save_certificate_chain(%L)$$,
    jsonb_set(c, '{1,signature}', c->0->'signature'))) AS wrong_signature
FROM chain;
SELECT cert_try(format($$SELECT morango.save_certificate_chain(%L)$$,
    jsonb_set(c, '{1,serialized}', to_jsonb(replace(c->1->>'serialized', hex(:'learner'), repeat('0', 32)))))) AS wrong_id
FROM chain;
SELECT cert_try(format($$SELECT morango.save_certificate_chain(%L)$$, jsonb_build_array(c->1, c->0))) AS out_of_order
FROM chain;
SELECT cert_try(format($$SELECT morango.save_certificate_chain(%L)$$, jsonb_build_array(c->1))) AS no_root
FROM chain;
SELECT cert_try($$SELECT morango.save_certificate_chain('[{"serialized": "{", "signature": ""}]')$$) AS not_json;
SELECT cert_try($$SELECT morango.save_certificate_chain('[{"serialized": "{\"id\": 1}", "signature": ""}]')$$) AS malformed;
SELECT cert_try($$SELECT morango.save_certificate_chain('[]')$$) AS empty;
SELECT cert_try(format($$SELECT morango.save_certificate_chain(%L)$$,
    jsonb_set(c, '{0,signature}', c->1->'signature'))) AS known_root_differs
FROM chain;
-- a root unknown here verifies by itself: it only ever covers its own id
DELETE FROM morango.certificates WHERE id = :'root';
SELECT cert_try(format($$SELECT morango.save_certificate_chain(%L)$$,
    jsonb_build_array(c->0, jsonb_build_object('serialized', c->1->'serialized',
        'signature', (SELECT morango.sign(private_key, c->1->>'serialized') FROM kp))))) AS signed_by_another_key
FROM chain;
SELECT count(*) AS stored_after_refusals FROM morango.certificates;

-- nonces: single use, 60 seconds
SELECT morango.nonce() AS nonce \gset
SELECT cert_try(format('SELECT morango.nonce_use(%L)', :'nonce')) AS first_use,
       cert_try(format('SELECT morango.nonce_use(%L)', :'nonce')) AS second_use,
       cert_try(format('SELECT morango.nonce_use(%L)', gen_random_uuid())) AS unknown;
INSERT INTO morango.nonces (id, created_at) VALUES ('00000000-0000-0000-0000-00000000000e', now() - interval '61 seconds');
SELECT cert_try($$SELECT morango.nonce_use('00000000-0000-0000-0000-00000000000e')$$) AS expired;

-- private keys: not for PUBLIC, in tables or through functions
SET ROLE regress_morango_app;
SELECT cert_try('SELECT count(*) FROM morango.certificate_keys') AS read_keys;
SELECT cert_try('SELECT count(*) FROM morango.certificates') AS read_certificates;
SELECT cert_try('SELECT morango.key_generate()') AS generate;
SELECT cert_try($$SELECT morango.sign('k', 'm')$$) AS sign;
SELECT cert_try(format('SELECT morango.issue_certificate(%L, %L, %L)', :'root', 'full-facility', '{}')) AS issue;
RESET ROLE;

DELETE FROM morango.certificates;
DELETE FROM morango.scope_definitions;
DELETE FROM morango.nonces;
DROP FUNCTION cert_try(text);
DROP FUNCTION hex(uuid);
