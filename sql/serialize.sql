--
-- serialize: stamp pending rows with one new counter; record max counters
-- and database max counters
--
\set VERBOSITY default
CREATE TEMP TABLE c0 AS SELECT counter FROM morango.instances WHERE current;

-- everything pending gets the same, new counter
SELECT count(*) AS pending FROM morango.store WHERE pending IS NOT NULL;
SELECT morango.serialize() AS stamped;
SELECT counter - (SELECT counter FROM c0) AS advanced_by FROM morango.instances WHERE current;
SELECT count(DISTINCT ctr) AS counters, bool_and(lsi = 'local') AS all_local
FROM store_view WHERE ctr > (SELECT counter FROM c0);
SELECT count(*) AS still_pending FROM morango.store WHERE pending IS NOT NULL;

-- nothing pending: no new counter (Morango bumps anyway; we do not)
SELECT morango.serialize() AS stamped;
SELECT counter - (SELECT counter FROM c0) AS advanced_by FROM morango.instances WHERE current;

-- the record max counter of this instance follows each stamp
UPDATE learner SET score = score + 1 WHERE id = 7;
SELECT morango.serialize() AS stamped;
SELECT r.counter = s.last_saved_counter AS rmc_follows, r.counter - (SELECT counter FROM c0) AS rel
FROM morango.store s JOIN morango.record_max_counters r
  ON r.record_id = s.id AND r.instance_id = morango.instance_id()
WHERE s.model_name = 'learner' AND s.source_id = '7';
-- the database max counter for the whole database ('')
SELECT partition, counter = (SELECT counter FROM morango.instances WHERE current) AS is_current
FROM morango.database_max_counters WHERE instance_id = morango.instance_id() ORDER BY 1;

-- deletes, hard deletes and data
SELECT source_id, deleted, hard_deleted, serialized = '{}' AS erased, conflicts
FROM store_view WHERE model_name = 'learner' AND source_id IN ('3', '4', '5', '6') ORDER BY 1;
-- a hard delete clears the conflict history too
SELECT source_id, conflicts FROM store_view WHERE model_name = 'learner' AND source_id = '8';
SELECT morango.hard_delete('learner', '8');
SELECT morango.serialize() AS stamped;
SELECT serialized, deleted, hard_deleted, conflicts FROM store_view
WHERE model_name = 'learner' AND source_id = '8';
-- re-creating a hard-deleted key brings it back to life
INSERT INTO learner VALUES (8, '00000000-0000-0000-0000-0000000000f1', 'gus returns', 0);
SELECT morango.serialize() AS stamped;
SELECT serialized->>'username' AS name, deleted, hard_deleted FROM store_view
WHERE model_name = 'learner' AND source_id = '8';
-- delete then re-create before a serialize: the record stays alive (Morango
-- leaves it deleted)
DELETE FROM learner WHERE id = 8;
INSERT INTO learner VALUES (8, '00000000-0000-0000-0000-0000000000f1', 'gus again', 0);
SELECT morango.serialize() AS stamped;
SELECT serialized->>'username' AS name, deleted FROM store_view
WHERE model_name = 'learner' AND source_id = '8';
-- keys the application table does not have survive a local update (a peer
-- with a newer schema may have sent them)
UPDATE morango.store SET serialized = serialized || '{"nickname": "g"}'
WHERE model_name = 'learner' AND source_id = '8';
UPDATE learner SET score = 10 WHERE id = 8;
SELECT morango.serialize() AS stamped;
SELECT serialized->>'nickname' AS kept, serialized->>'score' AS score FROM store_view
WHERE model_name = 'learner' AND source_id = '8';

-- scope: by profile and by partition prefix
INSERT INTO gadget VALUES (10, 'zed');
INSERT INTO learner VALUES (10, '00000000-0000-0000-0000-0000000000f2', 'in f2', 0),
                           (11, '00000000-0000-0000-0000-0000000000f1', 'in f1', 0);
SELECT morango.serialize('otherprofile') AS stamped;
SELECT morango.serialize('facilitydata', ARRAY['00000000-0000-0000-0000-0000000000f2']) AS stamped;
SELECT source_id, pending FROM store_view WHERE source_id IN ('10', '11', 'zed') ORDER BY 1;
SELECT partition FROM morango.database_max_counters
WHERE instance_id = morango.instance_id() ORDER BY 1;
SELECT morango.serialize('facilitydata', ARRAY['00000000-0000-0000-0000-0000000000f1', 'zed']) AS stamped;
SELECT count(*) AS still_pending FROM morango.store WHERE pending IS NOT NULL;
-- database max counters only rise
UPDATE morango.database_max_counters SET counter = counter + 1000
WHERE instance_id = morango.instance_id() AND partition = 'zed';
UPDATE gadget SET owner = 'zed' WHERE id = 10;
SELECT morango.serialize(filter => ARRAY['zed']) AS stamped;
SELECT counter > (SELECT counter FROM morango.instances WHERE current) AS kept_higher
FROM morango.database_max_counters WHERE instance_id = morango.instance_id() AND partition = 'zed';
-- LIKE wildcards in a prefix are plain characters
INSERT INTO gadget VALUES (12, 'a_b'), (13, 'axb');
SELECT morango.serialize(filter => ARRAY['a_']) AS stamped;
SELECT partition, pending FROM morango.store WHERE model_name = 'gadget' AND partition IN ('a_b', 'axb') ORDER BY 1;
SELECT morango.serialize() AS stamped;

-- bad filters
SELECT morango.serialize(filter => '{}');
SELECT morango.serialize(filter => ARRAY[NULL]::text[]);
SELECT morango.serialize(filter => ARRAY[['a'], ['b']]);
