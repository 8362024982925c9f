--
-- certificates: keys and signatures, scope templates and the subset rule,
-- certificate chains (create, issue, export, verify and save), nonces,
-- expiry, revocation, signing requests' validity and the peer quota.
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

-- Expiry.  With one, the signed JSON has one more key at its end; without,
-- it is Morango's bytes exactly.
SELECT morango.create_root_certificate('full-facility', expires => '2100-01-01 00:00:00+00') AS xroot \gset
SELECT serialized LIKE '%"public_key_string": "%", "expires": "2100-01-01T00:00:00Z"}' AS expires_last,
       expires_at = '2100-01-01 00:00:00+00' AS expires_at
FROM morango.certificates WHERE id = :'xroot';
SELECT morango.create_root_certificate('full-facility') AS nroot \gset
SELECT expires_at IS NULL AS never, NOT serialized::jsonb ? 'expires' AS no_key,
       serialized = morango.certificate_serialize(id, parent_id, profile, salt, scope_definition_id,
                                                  scope_version, scope_params, public_key) AS morango_form
FROM morango.certificates WHERE id = :'nroot';
-- a child expires with its parent by default, never after it
SELECT morango.issue_certificate(:'xroot', 'full-facility', jsonb_build_object('dataset_id', hex(:'xroot'))) AS xa \gset
SELECT expires_at = '2100-01-01 00:00:00+00' AS child_expires_with_parent
FROM morango.certificates WHERE id = :'xa';
SELECT cert_try(format($$SELECT morango.issue_certificate(%L, 'full-facility', %L, expires => '2100-01-01 00:00:01+00')$$,
                       :'xroot', jsonb_build_object('dataset_id', hex(:'xroot')))) AS outlives_parent;
-- a child signed by hand without an expiry, under a parent that has one
SELECT cert_try(format($$
    SELECT morango.certificate_check(s, morango.sign(k.private_key, s))
    FROM morango.certificate_keys k, kp,
         LATERAL (SELECT morango.certificate_serialize(
             morango.sha2_uuid(kp.public_key || ':facilitydata:s1'), %1$L, 'facilitydata', 's1',
             'full-facility', 1, %2$L, kp.public_key) AS s) x
    WHERE k.certificate_id = %1$L$$, :'xroot', jsonb_build_object('dataset_id', hex(:'xroot')))) AS never_expires_under_parent;
-- "expires" must be YYYY-MM-DDTHH:MM:SSZ
CREATE FUNCTION kp_root(extra text) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(morango.certificate_serialize(id, NULL, 'facilitydata', '', 'full-facility', 1,
                       jsonb_build_object('dataset_id', replace(id::text, '-', '')), public_key), '}$', extra || '}')
    FROM (SELECT morango.sha2_uuid(public_key || ':facilitydata') AS id, public_key FROM kp) k
$$;
SELECT e AS expires,
       cert_try(format('SELECT morango.certificate_check(%L, morango.sign(%L, %L))',
                       kp_root(', "expires": ' || e), private_key, kp_root(', "expires": ' || e))) AS checked
FROM kp, (VALUES ('"2100-01-01T00:00:00Z"'), ('"2100-01-01"'), ('"2100-02-30T00:00:00Z"'),
                 ('"2100-01-01T00:00:00+01:00"'), ('20300101'), ('null')) v(e);
-- past expiries may be issued, but such a certificate can neither be used nor sign
SELECT morango.issue_certificate(:'xroot', 'single-user',
           jsonb_build_object('dataset_id', hex(:'xroot'), 'user_id', 'u1'), expires => '2001-01-01 00:00:00+00') AS expired \gset
-- why a certificate cannot be used, ids and revocation times masked
CREATE FUNCTION problem(c uuid) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(regexp_replace(p.problem || ' / ' || p.detail,
               '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'g'),
               'revoked by <id> at [0-9T:Z-]{20}', 'revoked by <id> at <time>')
    FROM morango.certificate_problem(c) p
$$;
SELECT problem(:'expired') AS expired, problem(:'xa') IS NULL AS xa_usable;
SELECT cert_try(format($$SELECT morango.issue_certificate(%L, 'single-user', %L)$$, :'expired',
                       jsonb_build_object('dataset_id', hex(:'xroot'), 'user_id', 'u1'))) AS sign_when_expired;
SELECT cert_try(format('SELECT morango.rotate_certificate(%L)', :'expired')) AS rotate_when_expired;
SELECT cert_try(format('SELECT morango.certificate_assert_usable(%L)', :'expired')) AS assert_usable;

-- Revocation: signed by the nearest ancestor whose key is here; the
-- certificate and everything under it can no longer be used
SELECT morango.issue_certificate(:'xa', 'single-user',
           jsonb_build_object('dataset_id', hex(:'xroot'), 'user_id', 'u1')) AS xb \gset
SELECT morango.issue_certificate(:'xa', 'single-user',
           jsonb_build_object('dataset_id', hex(:'xroot'), 'user_id', 'u2')) AS xc \gset
SELECT morango.issue_certificate(:'xb', 'single-user',
           jsonb_build_object('dataset_id', hex(:'xroot'), 'user_id', 'u1')) AS xd \gset
SELECT morango.revoke_certificate(:'xb', 'device lost') = :'xa' AS signed_by_parent;
SELECT problem(:'xb') AS revoked, problem(:'xd') AS descendant, problem(:'xc') IS NULL AS sibling_usable;
SELECT cert_try(format($$SELECT morango.issue_certificate(%L, 'single-user', %L)$$, :'xb',
                       jsonb_build_object('dataset_id', hex(:'xroot'), 'user_id', 'u1'))) AS sign_when_revoked;
SELECT cert_try(format('SELECT morango.revoke_certificate(%L)', :'xroot')) AS revoke_root,
       cert_try(format('SELECT morango.revoke_certificate(%L, %L)', :'xc', repeat('x', 501))) AS long_reason,
       cert_try(format('SELECT morango.revoke_certificate(%L)', gen_random_uuid())) AS unknown;
-- the nearest ancestor whose key is here signs: with xb's and xa's keys
-- dropped, the root
DELETE FROM morango.certificate_keys WHERE certificate_id IN (:'xa', :'xb');
SELECT morango.revoke_certificate(:'xd') = :'xroot' AS signed_by_grandparent;
-- what travels: {"serialized", "signature"}, checked by whoever receives it
SELECT jsonb_array_length(morango.revocations_of(:'xroot')) AS revocations,
       jsonb_array_length(morango.revocations_of(:'nroot')) AS other_root;
CREATE TEMP TABLE rv AS
SELECT r FROM jsonb_array_elements(morango.revocations_of(:'xroot')) r
WHERE (r->>'serialized')::jsonb->>'certificate_id' = hex(:'xb');
SELECT (morango.revocation_check(r->>'serialized', r->>'signature')).certificate_id = :'xb' AS checks FROM rv;
SELECT cert_try(format('SELECT morango.revocation_check(%L, %L)', replace(r->>'serialized', 'lost', 'found'),
                       r->>'signature')) AS tampered FROM rv;
CREATE FUNCTION revocation(cert uuid, signer uuid, signing_key uuid) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('serialized', d, 'signature', morango.sign(k.private_key, d))
    FROM morango.certificate_keys k,
         LATERAL (SELECT morango.revocation_serialize(cert, signer, '2026-01-01 00:00:00+00', 'test') AS d) x
    WHERE k.certificate_id = signing_key
$$;
SELECT cert_try(format('SELECT morango.revocation_check(%L, %L)', r->>'serialized', r->>'signature')) AS by_sibling
FROM (SELECT revocation(:'xd', :'xc', :'xc') AS r) x;
SELECT cert_try(format('SELECT morango.revocation_check(%L, %L)', r->>'serialized', r->>'signature')) AS by_itself
FROM (SELECT revocation(:'xc', :'xc', :'xc') AS r) x;
SELECT cert_try(format('SELECT morango.revocation_check(%L, %L)', r->>'serialized', r->>'signature')) AS wrong_key
FROM (SELECT revocation(:'xc', :'xroot', :'xc') AS r) x;
SELECT cert_try($$SELECT morango.revocation_check('{"certificate_id": 1}', 'AAAA')$$) AS malformed,
       cert_try($$SELECT morango.revocation_check('{"certificate_id": "x", "signer_id": "y", "revoked_at": "z", "reason": ""}', 'AAAA')$$) AS bad_ids,
       (morango.revocation_check(morango.revocation_serialize(gen_random_uuid(), gen_random_uuid(), now(), ''), 'AAAA'))
           IS NULL AS unknown_signer_skipped;
-- several at once: all or nothing, under the session's root only, bounded
SELECT count(*) AS stored_before FROM morango.certificate_revocations \gset
SELECT cert_try(format('SELECT morango.revocations_save(%L, %L)',
                       jsonb_build_array(revocation(:'xc', :'xroot', :'xroot'),
                                         revocation(:'xd', :'xc', :'xc')), :'xroot')) AS one_bad;
SELECT morango.issue_certificate(:'nroot', 'full-facility', jsonb_build_object('dataset_id', hex(:'nroot'))) AS na \gset
SELECT cert_try(format('SELECT morango.revocations_save(%L, %L)',
                       jsonb_build_array(revocation(:'na', :'nroot', :'nroot')), :'xroot')) AS other_root;
SELECT cert_try(format('SELECT morango.revocations_save(%L, %L)', '{}', :'xroot')) AS not_array,
       cert_try(format('SELECT morango.revocations_save(%L, %L)',
                       (SELECT jsonb_agg(r) FROM rv, generate_series(1, 1001)), :'xroot')) AS too_many,
       cert_try(format('SELECT morango.revocations_save(%L, %L)', '[{"serialized": 1}]', :'xroot')) AS element_shape;
SELECT count(*) = :stored_before AS nothing_stored, problem(:'xc') IS NULL AS xc_usable
FROM morango.certificate_revocations;
SELECT morango.revocations_save(jsonb_build_array(r, r), :'xroot') AS stored_again_none FROM rv;
-- what travels is bounded (1000 a call): revocations of certificates known
-- here first, so that many a device signs for unknown ones (ids that sort
-- first) cannot crowd them out
SELECT morango.revocations_save(jsonb_agg(revocation(
           format('00000000-0000-0000-0000-%s', lpad(i::text, 12, '0'))::uuid, :'xc', :'xc')), :'xroot') AS junk
FROM generate_series(1, 1000) i;
SELECT jsonb_array_length(v) AS sent, v @> jsonb_build_array((SELECT r FROM rv)) AS known_sent
FROM (SELECT morango.revocations_of(:'xroot') AS v) x;
DELETE FROM morango.certificate_revocations WHERE certificate_id::text LIKE '00000000-0000-0000-0000-%';
-- a revocation of a certificate not known here is kept, and counts once the
-- certificate is known and only if its signer is an ancestor
SELECT morango.issue_certificate(:'xroot', 'full-facility', jsonb_build_object('dataset_id', hex(:'xroot'))) AS xe \gset
CREATE TEMP TABLE ec AS
SELECT morango.certificate_chain(:'xe') AS c, private_key FROM morango.certificate_keys WHERE certificate_id = :'xe';
DELETE FROM morango.certificates WHERE id = :'xe';
SELECT morango.revocations_save(jsonb_build_array(revocation(:'xe', :'xc', :'xc')), :'xroot') AS by_stranger_stored;
SELECT morango.save_certificate_chain(c) = :'xe' AS known_again FROM ec;
SELECT problem(:'xe') IS NULL AS stranger_counts_for_nothing;
SELECT morango.revocations_save(jsonb_build_array(revocation(:'xe', :'xroot', :'xroot')), :'xroot') AS by_root_stored;
SELECT problem(:'xe') AS by_root_counts;

-- Sessions: the handshake (client side here) and every transfer's scope
-- check refuse expired and revoked certificates
SELECT gen_random_uuid() AS ss, gen_random_uuid() AS nonce \gset
SELECT cert_try(format('SELECT morango.session_authenticate(%L, %L, %L, %L, %L, %L, %L)',
           :'ss', 'facilitydata', :'xc', :'expired', morango.certificate_chain(:'expired'),
           morango.certificate_sign(:'expired', morango.handshake_message(:'nonce', :'ss', :'xc', :'expired', 'facilitydata')),
           :'nonce')) AS peer_expired;
SELECT cert_try(format('SELECT morango.session_authenticate(%L, %L, %L, %L, %L, %L, %L)',
           :'ss', 'facilitydata', :'expired', :'xc', morango.certificate_chain(:'xc'),
           morango.certificate_sign(:'xc', morango.handshake_message(:'nonce', :'ss', :'expired', :'xc', 'facilitydata')),
           :'nonce')) AS ours_expired;
SELECT cert_try(format('SELECT morango.session_authenticate(%L, %L, %L, %L, %L, %L, %L)',
           :'ss', 'facilitydata', :'xc', :'xe', morango.certificate_chain(:'xe'),
           morango.sign(private_key, morango.handshake_message(:'nonce', :'ss', :'xc', :'xe', 'facilitydata')),
           :'nonce')) AS peer_revoked
FROM ec;
SELECT count(*) AS sessions_bound FROM morango.session_certificates;
-- bound while valid, expired since: the next transfer is refused
BEGIN;
SELECT morango.issue_certificate(:'xroot', 'full-facility', jsonb_build_object('dataset_id', hex(:'xroot')),
                                 expires => now() + interval '2 seconds') AS soon \gset
SELECT morango.session_bind(:'ss', 'facilitydata', :'xc', :'soon');
SELECT morango.session_scope_check(:'ss', 'facilitydata', true, ARRAY[hex(:'xroot') || ':user-rw:u2']) IS NOT NULL AS before_expiry;
COMMIT;
CREATE FUNCTION wait_until(t timestamptz) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..300 LOOP    -- at most 30 s
        EXIT WHEN clock_timestamp() > t;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN clock_timestamp() > t;
END
$$;
SELECT wait_until(expires_at) AS expired_now FROM morango.certificates WHERE id = :'soon';
SELECT cert_try(format('SELECT morango.session_scope_check(%L, %L, true, %L)', :'ss', 'facilitydata',
                       ARRAY[hex(:'xroot') || ':user-rw:u2'])) AS after_expiry;
-- bound while valid, revoked since
SELECT gen_random_uuid() AS ss2 \gset
SELECT morango.session_bind(:'ss2', 'facilitydata', :'xc', :'xa');
SELECT morango.session_scope_check(:'ss2', 'facilitydata', false, ARRAY[hex(:'xroot') || ':user-rw:u2']) IS NOT NULL AS before_revocation;
SELECT morango.revoke_certificate(:'xc') = :'xroot' AS revoked;
SELECT cert_try(format('SELECT morango.session_scope_check(%L, %L, false, %L)', :'ss2', 'facilitydata',
                       ARRAY[hex(:'xroot') || ':user-rw:u2'])) AS after_revocation;
DELETE FROM morango.session_certificates;

-- Signing requests over the peer API: the grant's validity, capped at the
-- parent's expiry; the role the call acts for (SET ROLE counts); a quota
SET client_min_messages = warning;
DO $$ BEGIN
    CREATE ROLE regress_cert_peer LOGIN;
    CREATE ROLE regress_cert_other LOGIN;
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
RESET client_min_messages;
SELECT morango.grant_peer('regress_cert_peer'), morango.grant_peer('regress_cert_other');
SELECT cert_try(format($$SELECT morango.grant_certificate_signing('regress_cert_peer', %L, 'single-user', '{}', '0 days')$$,
                       :'xroot')) AS zero_validity;
SELECT morango.grant_certificate_signing('regress_cert_peer', :'xroot', 'single-user', '{}', '30 days');
SELECT public_key AS pub FROM kp \gset
SELECT jsonb_build_object('dataset_id', hex(:'xroot'), 'user_id', 'u5') AS u5 \gset
SET ROLE regress_cert_peer;
SELECT morango.peer_certificate_sign(:'xroot', 'single-user', :'u5', :'pub')->-1->>'serialized' AS s30 \gset
RESET ROLE;
SELECT expires_at BETWEEN now() + interval '30 days' - interval '1 minute' AND now() + interval '30 days' AS thirty_days,
       stored_by
FROM morango.certificates WHERE serialized = :'s30';
SELECT morango.grant_certificate_signing('regress_cert_peer', :'xroot', 'single-user', '{}', '100 years');
SET ROLE regress_cert_peer;
SELECT morango.peer_certificate_sign(:'xroot', 'single-user', :'u5', :'pub')->-1->>'serialized' AS s100 \gset
RESET ROLE;
SELECT expires_at = '2100-01-01 00:00:00+00' AS capped_at_parent FROM morango.certificates WHERE serialized = :'s100';
-- another role, reached with SET ROLE from a superuser login, has no grant
SET ROLE regress_cert_other;
SELECT cert_try(format('SELECT morango.peer_certificate_sign(%L, %L, %L, %L)', :'xroot', 'single-user', :'u5', :'pub')) AS other_role;
RESET ROLE;
-- the quota: 2 stored, a third refused; only a superuser sets it
SELECT count(*) AS certificates_before FROM morango.certificates \gset
SET morango.max_peer_certificates = 2;
SET ROLE regress_cert_peer;
SELECT cert_try(format('SELECT morango.peer_certificate_sign(%L, %L, %L, %L)', :'xroot', 'single-user', :'u5', :'pub')) AS over_quota;
SELECT cert_try('SET morango.max_peer_certificates = 100') AS set_by_peer;
RESET ROLE;
DELETE FROM morango.certificates WHERE id = :'xe';
SELECT cert_try(format('SELECT morango.save_certificate_chain(%L, %L)', c, 'regress_cert_peer')) AS chain_over_quota FROM ec;
SELECT morango.save_certificate_chain(c) = :'xe' AS chain_stored_locally FROM ec;
SET morango.max_peer_certificates = 0;
SELECT cert_try(format('SELECT morango.revocations_save(%L, %L, %L)',
                       jsonb_build_array(revocation(:'xa', :'xroot', :'xroot')), :'xroot', 'regress_cert_peer')) AS revocations_over_quota;
RESET morango.max_peer_certificates;
SELECT count(*) = :certificates_before AS nothing_more_stored,
       (SELECT count(*) FROM morango.certificate_revocations WHERE stored_by IS NOT NULL) AS peer_revocations
FROM morango.certificates;
SELECT current_setting('morango.max_peer_certificates') AS default_quota;

DROP OWNED BY regress_cert_peer, regress_cert_other;
DROP ROLE regress_cert_peer;
DROP ROLE regress_cert_other;
DROP FUNCTION kp_root(text);
DROP FUNCTION problem(uuid);
DROP FUNCTION revocation(uuid, uuid, uuid);
DROP FUNCTION wait_until(timestamptz);

DELETE FROM morango.certificates;
DELETE FROM morango.scope_definitions;
DELETE FROM morango.nonces;
DROP FUNCTION cert_try(text);
DROP FUNCTION hex(uuid);
