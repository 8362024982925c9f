-- tools/demo_schema.sql: the school-like schema of the demo, in each database
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION morango;
CREATE TABLE facility (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE learner (
    id text PRIMARY KEY,
    facility_id text NOT NULL REFERENCES facility,
    username text NOT NULL
);
CREATE TABLE attempt_log (
    id text PRIMARY KEY,
    learner_id text NOT NULL REFERENCES learner ON DELETE CASCADE,
    facility_id text NOT NULL,
    item text NOT NULL,
    correct boolean NOT NULL
);
\o /dev/null
-- partitions: per facility for learners, per facility and learner for logs
SELECT morango.register_model('facility', 'facilitydata', partition => 'id');
SELECT morango.register_model('learner', 'facilitydata',
                              partition => $$facility_id || ':user:' || id$$);
SELECT morango.register_model('attempt_log', 'facilitydata',
                              partition => $$facility_id || ':user:' || learner_id || ':log'$$);
\o
