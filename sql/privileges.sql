--
-- privileges: code that the owner of a registered table wrote (its
-- triggers, column defaults, domain checks, a cast to json of a column's
-- type, functions in the registered expressions) runs as that owner, never
-- with morango's rights, whoever runs the step: a peer's push merged on the
-- hub, a peer's pull serialized there, a superuser's own serialize,
-- deserialize, registration and hard delete (issue 12, item 3).
--
-- The application role owns its schema and tables, as a migration tool
-- would make them, and is not a superuser; a superuser registers its table.
-- Every piece of its code records who ran it and tries to make the role a
-- superuser: each must run as the role, and fail.
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP DATABASE IF EXISTS regress_priv_hub;
DROP DATABASE IF EXISTS regress_priv_laptop;
CREATE DATABASE regress_priv_hub;
CREATE DATABASE regress_priv_laptop;
DO $$ BEGIN CREATE ROLE regress_priv_owner LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE regress_priv_peer LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
ALTER ROLE regress_priv_owner NOSUPERUSER;
RESET client_min_messages;
SELECT format('host=127.0.0.1 port=%s dbname=regress_priv_hub user=regress_priv_peer',
              current_setting('port')) AS hub \gset

\c regress_priv_hub
CREATE EXTENSION morango;
SELECT morango.grant_peer('regress_priv_peer');
CREATE SCHEMA app AUTHORIZATION regress_priv_owner;
SET ROLE regress_priv_owner;
-- who ran the role's code, and what came of its attempt to escalate
CREATE TABLE app.ran (via text, who name, was_superuser boolean, escalation text);
CREATE FUNCTION app.escalate(via text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    outcome text := 'escalated';
BEGIN
    BEGIN
        EXECUTE 'ALTER ROLE regress_priv_owner SUPERUSER';
    EXCEPTION WHEN OTHERS THEN
        outcome := 'refused';
    END;
    INSERT INTO app.ran VALUES (via, current_user,
                                (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), outcome);
    RETURN true;
END $$;
-- a type with a cast to json (to_jsonb of a row calls it)
CREATE TYPE app.mood AS ENUM ('calm', 'cross');
CREATE FUNCTION app.mood_json(app.mood) RETURNS json LANGUAGE sql AS $$
    SELECT CASE WHEN app.escalate('cast to json') THEN to_json($1::text) END
$$;
CREATE CAST (app.mood AS json) WITH FUNCTION app.mood_json(app.mood);
-- a domain whose check runs the role's function
CREATE FUNCTION app.label_ok(text) RETURNS boolean LANGUAGE sql AS $$ SELECT app.escalate('domain check') $$;
CREATE DOMAIN app.label AS text CHECK (app.label_ok(VALUE));
-- a function the registered partition expression calls
CREATE FUNCTION app.zone(text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN app.escalate('partition expression') THEN 'z:' || $1 END
$$;
CREATE TABLE app.item (
    id integer PRIMARY KEY,
    zone text NOT NULL,
    label app.label NOT NULL,
    mood app.mood NOT NULL DEFAULT 'calm',
    stamp text
);
INSERT INTO app.item VALUES (1, 'a', 'one', 'calm', 'local');
RESET ROLE;
-- a superuser registers it: the expressions and the initial load run as the owner
SELECT morango.register_model('app.item', 'facilitydata', partition => $$app.zone(zone)$$);
SELECT via, who, was_superuser, escalation, count(*) FROM app.ran GROUP BY 1, 2, 3, 4 ORDER BY 1;
DELETE FROM app.ran;
-- then the role adds a row trigger and a column default, its own functions
SET ROLE regress_priv_owner;
CREATE FUNCTION app.on_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM app.escalate('row trigger');
    RETURN NEW;
END $$;
CREATE TRIGGER on_write BEFORE INSERT OR UPDATE ON app.item FOR EACH ROW EXECUTE FUNCTION app.on_write();
CREATE FUNCTION app.stamp() RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN app.escalate('column default') THEN 'default' END
$$;
ALTER TABLE app.item ALTER COLUMN stamp SET DEFAULT app.stamp();
RESET ROLE;

-- the laptop: the same table, owned by its superuser (it runs nothing of the role's)
\c regress_priv_laptop
CREATE EXTENSION morango;
CREATE TABLE item (id integer PRIMARY KEY, zone text NOT NULL, label text NOT NULL,
                   mood text NOT NULL DEFAULT 'calm');
SELECT morango.register_model('item', 'facilitydata', partition => $$'z:' || zone$$);
-- a pull: the hub serializes (the cast to json, the partition expression)
SELECT morango.sync(:'hub', 'facilitydata', direction => 'pull') IS NOT NULL AS pulled;
-- (the laptop's table has no column stamp: the pulled row waits here)
SELECT source_id, deserialization_error FROM morango.records WHERE dirty_bit;
-- a push of a new row without a stamp: the hub's column default fills it
INSERT INTO item VALUES (2, 'b', 'two', 'cross');
SELECT morango.sync(:'hub', 'facilitydata', direction => 'push') IS NOT NULL AS pushed;

\c regress_priv_hub
SELECT id, zone, label, mood, stamp FROM app.item ORDER BY id;
-- every piece of the role's code ran as the role, and its escalation failed
SELECT via, who, was_superuser, escalation FROM app.ran GROUP BY 1, 2, 3, 4 ORDER BY 1;
DELETE FROM app.ran;
-- and so when a superuser runs the steps here itself (after the
-- application's own write, which runs the trigger as the application)
SET ROLE regress_priv_owner;
UPDATE app.item SET mood = 'cross' WHERE id = 1;
RESET ROLE;
SELECT morango.serialize() AS serialized;
SELECT morango.hard_delete('app.item', '2') AS hard_deleted;
SELECT via, who, was_superuser, escalation FROM app.ran GROUP BY 1, 2, 3, 4 ORDER BY 1;
SELECT rolsuper AS owner_is_superuser FROM pg_roles WHERE rolname = 'regress_priv_owner';
-- the statements that ran as the owner touched none of morango's tables:
-- the owner still may not read them
SET ROLE regress_priv_owner;
SELECT count(*) FROM morango.store;
RESET ROLE;
SELECT * FROM morango.check_invariants();

\c contrib_regression
SET client_min_messages = warning;
DROP DATABASE regress_priv_hub WITH (FORCE);
DROP DATABASE regress_priv_laptop WITH (FORCE);
DROP ROLE regress_priv_owner;
DROP ROLE regress_priv_peer;
RESET client_min_messages;
