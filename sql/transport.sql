--
-- transport: the libpq transport to a peer database (src/transport.c),
-- against a second database of this cluster, through test-only wrappers.
--
CREATE DATABASE regress_morango_peer;

-- Test helpers: exported by the module, declared only here
CREATE FUNCTION peer_query(peer text, sql text, args text[] DEFAULT NULL,
                           timeout_ms int DEFAULT 0, connect_timeout_s int DEFAULT 0)
RETURNS text LANGUAGE C AS '$libdir/morango', 'morango_peer_query_test';
CREATE FUNCTION peer_display(peer text) RETURNS text
LANGUAGE C STRICT AS '$libdir/morango', 'morango_peer_display_test';
CREATE FUNCTION peer_stats() RETURNS bigint[]
LANGUAGE C AS '$libdir/morango', 'morango_peer_stats_test';

-- Test helper: how many peer backends run query q, polled until none does
-- (at most ~10 s; the loop ends as soon as the count is 0)
CREATE FUNCTION peer_running(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    FOR i IN 1..200 LOOP
        PERFORM pg_stat_clear_snapshot();
        SELECT count(*) INTO n FROM pg_stat_activity
        WHERE datname = 'regress_morango_peer' AND state = 'active' AND query = q;
        EXIT WHEN n = 0;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN n;
END
$$;

-- The peer as a connection string.  Port and user differ between runs, so
-- they go through psql variables (the echo shows the variable names) and a
-- setting for DO blocks.
SELECT current_setting('port') AS port, current_user AS me \gset
SELECT format('host=127.0.0.1 port=%s user=%s dbname=regress_morango_peer', :'port', :'me') AS peer \gset
SELECT set_config('regress_morango.peer', :'peer', false) IS NOT NULL AS peer_set;

SELECT peer_query(:'peer', 'SELECT current_database()');

-- parameters are values, never SQL: they round-trip exactly
CREATE TEMP TABLE vals (n int, v text);
INSERT INTO vals VALUES
    (1, 'plain'), (2, $$it's$$), (3, E'back\\slash \\n'), (4, E'two\nlines\r\n'),
    (5, E'tab\there'), (6, 'ünïcödé € 😀'), (7, $$'); DROP TABLE vals; --$$),
    (8, ''), (9, NULL), (10, repeat('x', 100000));
SELECT n, peer_query(:'peer', 'SELECT $1::text', ARRAY[v]) IS NOT DISTINCT FROM v AS same,
       peer_query(:'peer', 'SELECT $1::text IS NULL', ARRAY[v]) AS remote_null
FROM vals ORDER BY n;
SELECT peer_query(:'peer', 'SELECT format(''%s|%s|%s'', $1::text, $2::int + 1, $3::text IS NULL)',
                  ARRAY['a', '41', NULL]);
SELECT peer_query(:'peer', 'SELECT 1 WHERE false') IS NULL AS no_row_is_null;

-- command tags; the session's search_path is pg_catalog, so qualify names
SELECT peer_query(:'peer', 'CREATE TABLE public.t (a int)');
SELECT peer_query(:'peer', 'INSERT INTO public.t SELECT generate_series(1, $1::int)', '{3}');
SELECT peer_query(:'peer', 'SELECT sum(a)::text FROM public.t');

-- the peer session is pinned; options of the peer come first, ours win
SELECT peer_query(:'peer', $$SELECT concat_ws(' ', current_setting('search_path'),
    current_setting('datestyle'), current_setting('intervalstyle'),
    current_setting('extra_float_digits'), current_setting('client_encoding'),
    current_setting('application_name'))$$);
SELECT peer_query(:'peer' || $$ options='-c work_mem=123kB -c search_path=public'$$,
    $$SELECT current_setting('work_mem') || ' ' || current_setting('search_path')$$);

-- a remote notice does not reach the client (it goes to the server log)
SELECT peer_query(:'peer', $q$DO $$ BEGIN RAISE NOTICE 'from the peer'; END $$$q$);

-- remote errors come back with their SQLSTATE, detail, hint and context
SELECT peer_query(:'peer', 'SELECT 1/0');
SELECT peer_query(:'peer', E'SELECT *\n  FROM public.no_such_table');
SELECT peer_query(:'peer', $q$DO $$ BEGIN RAISE EXCEPTION 'custom failure %', 42
    USING ERRCODE = '22023', DETAIL = 'Remote detail.', HINT = 'Remote hint.'; END $$$q$);
SELECT peer_query(:'peer', 'SELECT 1; SELECT 2');
DO $$
BEGIN
    PERFORM peer_query(current_setting('regress_morango.peer'), 'SELECT 1/0');
EXCEPTION WHEN division_by_zero THEN
    RAISE NOTICE 'caught division_by_zero: % (%)', SQLERRM, SQLSTATE;
END
$$;
-- payload bytes are counted: 'SELECT $1 || $2' + 'abc' + 'de' out, 'abcde' in
SELECT peer_stats() AS before \gset
SELECT peer_query(:'peer', 'SELECT $1 || $2', ARRAY['abc', 'de']);
SELECT s[1] - b[1] AS calls, s[2] - b[2] AS bytes_out, s[3] - b[3] AS bytes_in
FROM peer_stats() s, CAST(:'before' AS bigint[]) b;

-- peers that cannot be reached: refused, no such database, no such role
DO $$
DECLARE
    d text;
BEGIN
    PERFORM peer_query('host=127.0.0.1 port=1 dbname=x user=regress password=hunter2', 'SELECT 1');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RAISE NOTICE '%: %', SQLSTATE, SQLERRM;
    RAISE NOTICE 'refused: %, password shown: %', d LIKE '%Connection refused%',
        (SQLERRM || d) LIKE '%hunter2%';
END
$$;
DO $$
DECLARE
    d text;
BEGIN
    PERFORM peer_query(current_setting('regress_morango.peer') || ' dbname=regress_no_such_db', 'SELECT 1');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RAISE NOTICE '%: % ..., detail names the database: %', SQLSTATE, split_part(SQLERRM, ' "', 1),
        d LIKE '%database "regress_no_such_db" does not exist%';
END
$$;
DO $$
DECLARE
    d text;
BEGIN
    PERFORM peer_query(current_setting('regress_morango.peer') || ' user=regress_no_such_role', 'SELECT 1');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RAISE NOTICE '%: % ..., detail names the role: %', SQLSTATE, split_part(SQLERRM, ' "', 1),
        d LIKE '%role "regress_no_such_role" does not exist%';
END
$$;
SELECT peer_query('host=127.0.0.1 port=1 password=hunter2 bogus=1', 'SELECT 1');
SELECT peer_query($$host=127.0.0.1 password='unterminated$$, 'SELECT 1');
SELECT peer_query('host=127.0.0.1 replication=database', 'SELECT 1');

-- display: safe to store and log, no password
SELECT peer_display('host=db.example port=5432 dbname=app user=sync password=hunter2');
SELECT peer_display('postgresql://sync:hunter2@db.example:5432/app?sslmode=require');
SELECT peer_display($$host='a b' password='x y' options='-c work_mem=1MB' dbname='host=x password=hunter2'$$);
SELECT peer_display($$host=x password='unterminated$$);
SELECT peer_display('regress_peer');

-- peers by name: FOREIGN DATA WRAPPER morango
SELECT peer_query('regress_no_such_peer', 'SELECT 1');
CREATE FOREIGN DATA WRAPPER regress_other_fdw;
CREATE SERVER regress_other FOREIGN DATA WRAPPER regress_other_fdw;
SELECT peer_query('regress_other', 'SELECT 1');
CREATE SERVER regress_peer FOREIGN DATA WRAPPER morango
    OPTIONS (host '127.0.0.1', port :'port', dbname 'regress_morango_peer');
CREATE USER MAPPING FOR CURRENT_USER SERVER regress_peer OPTIONS (user :'me');
SELECT peer_query('regress_peer', 'SELECT current_database()');
SELECT peer_query('regress_peer', $$SELECT current_setting('application_name')$$);

-- the validator
\set VERBOSITY terse
CREATE SERVER regress_bad FOREIGN DATA WRAPPER morango OPTIONS (bogus 'x');
CREATE SERVER regress_bad FOREIGN DATA WRAPPER morango OPTIONS (replication 'database');
CREATE SERVER regress_bad FOREIGN DATA WRAPPER morango OPTIONS (sslpassword 'x');
\set VERBOSITY default
CREATE SERVER regress_bad FOREIGN DATA WRAPPER morango OPTIONS (user 'x');
CREATE SERVER regress_bad FOREIGN DATA WRAPPER morango OPTIONS (password 'x');
CREATE SERVER regress_bad FOREIGN DATA WRAPPER morango OPTIONS (client_encoding 'LATIN1');
CREATE SERVER regress_bad FOREIGN DATA WRAPPER morango OPTIONS (fallback_application_name 'x');
ALTER SERVER regress_peer OPTIONS (ADD password 'x');
CREATE USER MAPPING FOR PUBLIC SERVER regress_peer OPTIONS (host 'x');
CREATE USER MAPPING FOR PUBLIC SERVER regress_peer OPTIONS (sslpassword 'x');
ALTER FOREIGN DATA WRAPPER morango OPTIONS (host 'x');
CREATE SERVER regress_ok FOREIGN DATA WRAPPER morango
    OPTIONS (host 'h', port '5432', dbname 'd', sslmode 'prefer', options '-c work_mem=1MB',
             application_name 'a', connect_timeout '5', keepalives_idle '30');
DROP SERVER regress_ok;

-- non-superusers: USAGE on the server, a user mapping, and a password the
-- peer asks for (this cluster trusts everyone, so it never asks)
CREATE ROLE regress_morango_peer_user;
SET ROLE regress_morango_peer_user;
SELECT peer_query('regress_peer', 'SELECT 1');
RESET ROLE;
GRANT USAGE ON FOREIGN SERVER regress_peer TO regress_morango_peer_user;
SET ROLE regress_morango_peer_user;
SELECT peer_query('regress_peer', 'SELECT 1');
RESET ROLE;
-- the PUBLIC mapping serves users without their own; it has no password
CREATE USER MAPPING FOR PUBLIC SERVER regress_peer OPTIONS (user :'me');
SET ROLE regress_morango_peer_user;
SELECT peer_query('regress_peer', 'SELECT 1');
RESET ROLE;
CREATE USER MAPPING FOR regress_morango_peer_user SERVER regress_peer
    OPTIONS (user :'me', password 'hunter2');
SET ROLE regress_morango_peer_user;
SELECT peer_query('regress_peer', 'SELECT 1');
SELECT peer_query(:'peer', 'SELECT 1');
SELECT peer_query(:'peer' || ' password=hunter2', 'SELECT 1');
RESET ROLE;

-- timeout_ms: the call is cancelled on the peer, which stops running it
SELECT peer_query(:'peer', 'SELECT pg_sleep(30)', NULL, 200);
SELECT peer_running('SELECT pg_sleep(30)');
DO $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    PERFORM peer_query(current_setting('regress_morango.peer'), 'SELECT pg_sleep(30)', NULL, 100);
EXCEPTION WHEN query_canceled THEN
    RAISE NOTICE '% (%), returned within 10 s: %', SQLERRM, SQLSTATE,
        clock_timestamp() - t0 < interval '10 s';
END
$$;
SELECT peer_running('SELECT pg_sleep(30)');

-- a local interrupt (statement_timeout) cancels the remote call too
SET statement_timeout = '300ms';
SELECT peer_query(:'peer', 'SELECT pg_sleep(31)');
RESET statement_timeout;
SELECT peer_running('SELECT pg_sleep(31)');

-- clean up
DROP USER MAPPING FOR regress_morango_peer_user SERVER regress_peer;
DROP USER MAPPING FOR PUBLIC SERVER regress_peer;
DROP USER MAPPING FOR CURRENT_USER SERVER regress_peer;
DROP SERVER regress_peer;
DROP ROLE regress_morango_peer_user;
DROP SERVER regress_other;
DROP FOREIGN DATA WRAPPER regress_other_fdw;
DROP FUNCTION peer_query(text, text, text[], int, int);
DROP FUNCTION peer_display(text);
DROP FUNCTION peer_stats();
DROP FUNCTION peer_running(text);
DROP DATABASE regress_morango_peer WITH (FORCE);
