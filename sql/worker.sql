--
-- worker: background syncs, single flight, retries, status views
--
\set VERBOSITY default
SET client_min_messages = warning;
DROP DATABASE IF EXISTS regress_morango_w1;
DROP DATABASE IF EXISTS regress_morango_w2;
CREATE DATABASE regress_morango_w1;
CREATE DATABASE regress_morango_w2;
RESET client_min_messages;
SELECT format('host=127.0.0.1 port=%s dbname=regress_morango_w2 user=%s', current_setting('port'), current_user) AS peer
\gset
\c regress_morango_w2
\i sql/sync_schema.psql
INSERT INTO facility VALUES ('f1', 'North School');
INSERT INTO member SELECT 'm' || g, 'f1', 'user ' || g, g FROM generate_series(1, 50) g;
\c regress_morango_w1
\i sql/sync_schema.psql

-- a background sync: the id comes back at once; sync_wait waits for the end
SELECT morango.sync_start(:'peer', 'facilitydata') AS sid \gset
SELECT morango.sync_wait(:'sid', '5 minutes');
SELECT count(*) FROM member;
SELECT status, stage, records_total, records_transferred, records_dequeued, conflicts,
       bytes_received > 0 AS bytes, duration >= '0'::interval AS timed, last_error
FROM morango.syncs WHERE id = :'sid';
SELECT consecutive_failures, last_success_at IS NOT NULL AS succeeded, last_failure_at,
       next_retry_at, last_error, running_session
FROM morango.peers;
-- nothing runs it any more: waiting returns at once, cancelling does nothing
SELECT morango.sync_wait(:'sid');
SELECT morango.sync_cancel(:'sid');
SELECT morango.sync_wait('00000000-0000-0000-0000-000000000000');

-- single flight: while a sync for the same peer, profile, filter and
-- direction holds its lock, another one does not start (a peer by name)
DO $$
BEGIN
    EXECUTE format('CREATE SERVER w2 FOREIGN DATA WRAPPER morango OPTIONS (host %L, port %L, dbname %L)',
                   '127.0.0.1', current_setting('port'), 'regress_morango_w2');
    EXECUTE format('CREATE USER MAPPING FOR CURRENT_USER SERVER w2 OPTIONS (user %L)', current_user);
END $$;
SELECT pg_advisory_lock(hashtext('morango sync'), hashtext('w2|facilitydata|{""}|both'));
SELECT morango.sync('w2', 'facilitydata');
SELECT morango.sync_start('w2', 'facilitydata');
SELECT pg_advisory_unlock(hashtext('morango sync'), hashtext('w2|facilitydata|{""}|both'));
SELECT morango.sync('w2', 'facilitydata') IS NOT NULL AS synced;
-- a different direction is another sync
SELECT pg_advisory_lock(hashtext('morango sync'), hashtext('w2|facilitydata|{""}|both'));
SELECT morango.sync('w2', 'facilitydata', direction => 'pull') IS NOT NULL AS synced;
SELECT pg_advisory_unlock(hashtext('morango sync'), hashtext('w2|facilitydata|{""}|both'));

-- a peer that cannot be reached: the background sync retries with a
-- growing pause, then gives up; the peer view says so
SET morango.retry_limit = 3;
SET morango.retry_delay = '10ms';
SELECT morango.sync_start('host=127.0.0.1 port=1 dbname=nowhere', 'facilitydata') AS sid \gset
SELECT morango.sync_wait(:'sid', '5 minutes');
SELECT peer, consecutive_failures, next_retry_at, split_part(last_error, '(', 1) AS last_error
FROM morango.peers WHERE consecutive_failures > 0;
SELECT status FROM morango.syncs WHERE id = :'sid';
-- errors that retrying cannot fix are not retried
SELECT morango.sync_start('no_such_peer', 'facilitydata') AS sid \gset
SELECT morango.sync_wait(:'sid', '5 minutes');
SELECT peer, consecutive_failures FROM morango.peers WHERE peer = 'no_such_peer';
RESET morango.retry_limit;
RESET morango.retry_delay;

-- argument errors come back at once
SELECT morango.sync_start(:'peer', 'facilitydata', direction => 'sideways');
SELECT morango.sync_start(NULL, 'facilitydata');

-- scheduling needs pg_cron in this database (the hint names the fix)
\set VERBOSITY terse
SELECT morango.schedule(:'peer', '*/5 * * * *', 'facilitydata');
\set VERBOSITY default
-- and never stores a password in the job, in any form libpq reads, nor
-- shows one (or the peer, or the job's command) in its errors
SELECT morango.schedule('host=x password=secret', '*/5 * * * *', 'facilitydata');
\set VERBOSITY default
SELECT morango.schedule('postgresql://sync:hunter2@db.example/app', '*/5 * * * *', 'facilitydata');
\set VERBOSITY terse
SELECT morango.schedule('postgresql://sync@db.example/app?password=hunter2', '*/5 * * * *', 'facilitydata');
SELECT morango.schedule('postgresql://sync@db.example/app?pass%77ord=hunter2', '*/5 * * * *', 'facilitydata');
SELECT morango.schedule('postgresql://sync:hunter%32@db.example/app', '*/5 * * * *', 'facilitydata');
SELECT morango.schedule($$dbname='postgresql://sync:hunter2@db.example/app'$$, '*/5 * * * *', 'facilitydata');
SELECT morango.schedule('host=db.example sslpassword=hunter2', '*/5 * * * *', 'facilitydata');
\set VERBOSITY default
SELECT morango.schedule('postgresql://sync:hunter2@[db.example/app', '*/5 * * * *', 'facilitydata');
-- an empty password and a passfile are no secrets: the next check speaks,
-- and its hint does not show the peer either
SELECT morango.schedule('host=hidden.example password=', '*/5 * * * *', 'facilitydata');
\set VERBOSITY terse
SELECT morango.schedule('host=hidden.example passfile=/nonexistent', '*/5 * * * *', 'facilitydata');
SELECT morango.schedule('w2', '*/5 * * * *', 'facilitydata', ARRAY[NULL]);
SELECT p, morango.peer_has_secret(p) FROM (VALUES ('w2'), ('host=x'), ('host=x password=y'),
    ('postgresql://u:p@h/d'), ('postgresql://u@h/d'), ('postgres://h/d?password=%41'),
    ($$dbname='host=x password=y'$$), ($$dbname='host=x'$$)) AS v(p);
-- a peer given with a password is stored and shown without it
SET morango.retry_limit = 1;
SELECT morango.sync_start('postgresql://sync:hunter2@127.0.0.1:1/nowhere', 'facilitydata') AS sid \gset
SELECT morango.sync_wait(:'sid', '5 minutes');
SELECT peer, position('hunter2' IN last_error) AS in_error FROM morango.peers WHERE peer LIKE 'user=sync %';
SELECT peer, position('hunter2' IN last_error) AS in_error FROM morango.sync_sessions WHERE id = :'sid';
RESET morango.retry_limit;
\set VERBOSITY default

-- a database that is not UTF8 syncs with one that is
\c contrib_regression
CREATE DATABASE regress_morango_w3 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c regress_morango_w3
SET client_encoding = 'UTF8';
\i sql/sync_schema.psql
INSERT INTO facility VALUES ('f9', 'École Élémentaire');
SELECT morango.sync(:'peer', 'facilitydata') IS NOT NULL AS synced;
SELECT name FROM facility ORDER BY id;
\c regress_morango_w2
SELECT name FROM facility WHERE id = 'f9';

-- the invariants hold in every database the syncs touched (doc/invariants.md)
\c regress_morango_w1
SELECT * FROM morango.check_invariants();
\c regress_morango_w2
SELECT * FROM morango.check_invariants();
\c regress_morango_w3
SELECT * FROM morango.check_invariants();
\c contrib_regression
SET client_min_messages = warning;
DROP DATABASE regress_morango_w1 WITH (FORCE);
DROP DATABASE regress_morango_w2 WITH (FORCE);
DROP DATABASE regress_morango_w3 WITH (FORCE);
RESET client_min_messages;
