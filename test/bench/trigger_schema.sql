-- test/bench/trigger_schema.sql: the tables of the trigger benchmark and its
-- smoke run.  psql variables: rows (pre-populated rows), profile.
--
-- Two identical tables, a bigint key and 9 columns of mixed types; bench_reg
-- is registered with morango, bench_plain is not.  Registering notes every
-- existing row as changed; serialize() stamps them, as a first sync would.
CREATE EXTENSION IF NOT EXISTS morango;
CREATE TABLE bench_plain (
    id          bigint PRIMARY KEY,
    name        text NOT NULL,
    qty         integer NOT NULL,
    created_at  timestamptz NOT NULL,
    active      boolean NOT NULL,
    price       numeric(12,2) NOT NULL,
    note        text,
    score       double precision,
    ref         uuid,
    updated_at  timestamptz
);
CREATE TABLE bench_reg (LIKE bench_plain INCLUDING ALL);
CREATE SEQUENCE bench_plain_id_seq;
CREATE SEQUENCE bench_reg_id_seq;
INSERT INTO bench_plain
SELECT g, 'item ' || g, g % 1000, now() - g * interval '1 minute', g % 2 = 0,
       (g % 100000) / 100.0, repeat('n', 40), random(), gen_random_uuid(), NULL
FROM generate_series(1, :rows) AS g;
INSERT INTO bench_reg SELECT * FROM bench_plain;
SELECT setval('bench_plain_id_seq', :rows), setval('bench_reg_id_seq', :rows) \g /dev/null
SELECT morango.register_model('bench_reg'::regclass, :'profile') \g /dev/null
SELECT morango.serialize(:'profile') \g /dev/null
