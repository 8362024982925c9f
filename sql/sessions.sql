--
-- sessions: the states of sync and transfer sessions and their one
-- transition function (src/transfer.c)
--
\set VERBOSITY terse

-- the C enums and the tables' CHECK constraints name the same states, in
-- the same order
WITH c AS (
    SELECT CASE WHEN conrelid = 'morango.sync_sessions'::regclass THEN 'sync_status'
                WHEN pg_get_constraintdef(oid) LIKE '%stage%' THEN 'stage'
                ELSE 'status' END AS kind,
           ARRAY(SELECT m[1] FROM regexp_matches(pg_get_constraintdef(oid), '''([a-z_]+)''', 'g') AS m)
               AS names
    FROM pg_constraint
    WHERE contype = 'c'
      AND ((conrelid = 'morango.transfer_sessions'::regclass
            AND (pg_get_constraintdef(oid) LIKE '%(stage%' OR pg_get_constraintdef(oid) LIKE '%(status%'))
        OR (conrelid = 'morango.sync_sessions'::regclass AND pg_get_constraintdef(oid) LIKE '%(status%'))
)
SELECT c.kind, c.names = ARRAY(SELECT s.name FROM morango.session_states() s
                              WHERE s.kind = c.kind ORDER BY s.position) AS same
FROM c ORDER BY c.kind;

CREATE TABLE thing (id int PRIMARY KEY, name text);
SELECT morango.register_model('thing', 'sessions', $$'t'$$);

-- a transfer moves forward, or stays in its stage
SELECT morango.transfer_open('5a000000-0000-0000-0000-000000000001', '7b000000-0000-0000-0000-000000000001',
                             'sessions', false, false, ARRAY['t'])->>'stage' AS opened;
SELECT morango.transfer_transition('7b000000-0000-0000-0000-000000000001', 'serializing', 'started');
SELECT morango.transfer_transition('7b000000-0000-0000-0000-000000000001', 'serializing', 'completed');
SELECT morango.transfer_transition('7b000000-0000-0000-0000-000000000001', 'transferring', 'started');
SELECT stage, status FROM morango.transfer_sessions WHERE id = '7b000000-0000-0000-0000-000000000001';
-- never back, and only to states that exist
SELECT morango.transfer_transition('7b000000-0000-0000-0000-000000000001', 'queuing', 'completed');
SELECT morango.transfer_transition('7b000000-0000-0000-0000-000000000001', 'dequeuing', 'done');
SELECT morango.transfer_transition('7b000000-0000-0000-0000-000000000001', 'finished', 'started');
SELECT morango.transfer_transition('7b000000-0000-0000-0000-0000000000ff', 'cleanup', 'started');
SELECT stage, status FROM morango.transfer_sessions WHERE id = '7b000000-0000-0000-0000-000000000001';
-- a closed transfer moves no more; closing it again does nothing
SELECT morango.transfer_close('7b000000-0000-0000-0000-000000000001', 'stopped for the test');
SELECT morango.transfer_transition('7b000000-0000-0000-0000-000000000001', 'cleanup', 'completed');
SELECT morango.transfer_close('7b000000-0000-0000-0000-000000000001');
SELECT active, stage, status, last_error FROM morango.transfer_sessions
WHERE id = '7b000000-0000-0000-0000-000000000001';
-- ... and the initiator cannot reopen it, nor a closed sync session
SELECT morango.transfer_open('5a000000-0000-0000-0000-000000000001', '7b000000-0000-0000-0000-000000000001',
                             'sessions', false, false, ARRAY['t'])->>'active' AS still_active;
UPDATE morango.sync_sessions SET active = false WHERE id = '5a000000-0000-0000-0000-000000000001';
SELECT morango.transfer_open('5a000000-0000-0000-0000-000000000001', '7b000000-0000-0000-0000-000000000002',
                             'sessions', false, false, ARRAY['t']);

-- the responder takes up again a transfer that expired while its
-- initiator still wanted it: started over, its data and FSICs forgotten
SELECT morango.transfer_open('5a000000-0000-0000-0000-000000000003', '7b000000-0000-0000-0000-000000000003',
                             'sessions', true, true, ARRAY['t'])->>'resumed' AS resumed;
UPDATE morango.transfer_sessions SET local_fsic = '{"super": {}, "sub": {}}', records_total = 5
WHERE id = '7b000000-0000-0000-0000-000000000003';
SELECT morango.transfer_transition('7b000000-0000-0000-0000-000000000003', 'transferring', 'started');
SELECT morango.cleanup('0 seconds') AS expired;
SELECT active, stage, status FROM morango.transfer_sessions WHERE id = '7b000000-0000-0000-0000-000000000003';
SELECT r->>'resumed' AS resumed, r->>'active' AS active, r->>'stage' AS stage, r->>'status' AS status,
       r->'local_fsic' AS local_fsic, r->'records_total' AS records_total
FROM morango.transfer_open('5a000000-0000-0000-0000-000000000003', '7b000000-0000-0000-0000-000000000003',
                           'sessions', true, true, ARRAY['t']) AS r;

-- a sync session is interrupted as errored or cancelled, nothing else
SELECT morango.sync_session_interrupt('5a000000-0000-0000-0000-000000000003', 'completed', 'x');
SELECT morango.sync_session_interrupt('5a000000-0000-0000-0000-000000000003', 'cancelled', 'by the test');
SELECT active, status, last_error FROM morango.sync_sessions WHERE id = '5a000000-0000-0000-0000-000000000003';

-- none of this is for PUBLIC
SET ROLE regress_morango_app;
SELECT morango.transfer_transition('7b000000-0000-0000-0000-000000000003', 'cleanup', 'started');
RESET ROLE;

SELECT morango.unregister_model('thing');
DROP TABLE thing;
DELETE FROM morango.sync_sessions WHERE id::text LIKE '5a000000-%';
