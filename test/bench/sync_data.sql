-- test/bench/sync_data.sql: N records (psql variable n): 10 facilities,
-- n/10 users, the rest interaction logs of about 200 bytes each.
INSERT INTO facility
SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'Facility ' || g, '2026-01-01'
FROM generate_series(1, 10) g;
INSERT INTO users
SELECT ('10000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid,
       ('00000000-0000-0000-0000-' || lpad((1 + g % 10)::text, 12, '0'))::uuid,
       'user' || g, 'Learner Number ' || g, '2026-01-01'::timestamptz + g * interval '1 minute', g % 50 = 0
FROM generate_series(1, greatest((:n / 10) - 10, 1)) g;
INSERT INTO logs
SELECT ('20000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid,
       u.id, u.facility_id,
       'content-' || lpad((g % 5000)::text, 6, '0'), CASE WHEN g % 3 = 0 THEN 'exercise' ELSE 'video' END,
       g % 101, (g % 3600) / 7.0, '2026-02-01'::timestamptz + g * interval '1 second', g % 4 = 0,
       repeat('answer text ', 6)
FROM generate_series(1, :n - (:n / 10)) g
JOIN users u ON u.id = ('10000000-0000-0000-0000-' || lpad((1 + g % greatest((:n / 10) - 10, 1))::text, 12, '0'))::uuid;
