-- test/bench/sync_schema.sql: the school-like workload of the sync
-- benchmark (psql variable register: 'on' to register the tables).
CREATE EXTENSION IF NOT EXISTS morango;
CREATE TABLE facility (id uuid PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE users (
    id uuid PRIMARY KEY,
    facility_id uuid NOT NULL REFERENCES facility,
    username text NOT NULL,
    full_name text NOT NULL,
    date_joined timestamptz NOT NULL,
    is_staff boolean NOT NULL
);
CREATE TABLE logs (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users,
    facility_id uuid NOT NULL,
    content_id text NOT NULL,
    kind text NOT NULL,
    progress integer NOT NULL,
    time_spent double precision NOT NULL,
    started_at timestamptz NOT NULL,
    completed boolean NOT NULL,
    answer text
);
CREATE INDEX ON users (facility_id);
CREATE INDEX ON logs (user_id);
\if :register
SELECT morango.register_model('facility', 'facilitydata', partition => 'id::text') \g /dev/null
SELECT morango.register_model('users', 'facilitydata',
                              partition => $$facility_id || ':user:' || id$$) \g /dev/null
SELECT morango.register_model('logs', 'facilitydata',
                              partition => $$facility_id || ':user:' || user_id || ':log'$$) \g /dev/null
\endif
