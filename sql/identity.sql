--
-- identity: instance id, database id, reset, automatic rotation on copy
--
CREATE TEMP TABLE before AS
SELECT morango.instance_id() AS inst, morango.database_id() AS db;

CREATE TEMP TABLE reset_result AS SELECT morango.reset_database_id() AS db;
SELECT db = morango.database_id() AS returns_new FROM reset_result;
SELECT morango.instance_id() <> inst AS new_instance, morango.database_id() <> db AS new_database
FROM before;
-- old identity is kept, not current; the new one starts at counter 0
SELECT count(*) FILTER (WHERE current) AS current_rows, count(*) >= 2 AS kept_old
FROM morango.instances;
SELECT counter FROM morango.instances WHERE current;
SELECT i.database_id = morango.database_id() AS linked FROM morango.instances i WHERE current;

-- a database that finds itself in another cluster (restored copy) makes a
-- new identity before handing out a counter
UPDATE before SET inst = morango.instance_id();
UPDATE morango.database_ids SET system_identifier = 1 WHERE current;
SELECT instance_id <> (SELECT inst FROM before) AS rotated FROM morango.lock_instance();
SELECT instance_id = morango.instance_id() AS stable FROM morango.lock_instance();
