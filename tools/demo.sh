#!/bin/bash
# tools/demo.sh: the main job, as root on a fresh machine:
#
#   bash tools/demo.sh
#
# Installs the Debian packages it needs, builds and installs morango, and
# starts two throwaway PostgreSQL clusters as an unprivileged user on free
# loopback ports: "school" (a school server) and "laptop" (a teacher's
# laptop).  Both get the same school-like schema; each creates data of its
# own, both edit the same learner (a conflict), the school deletes a log;
# then the laptop syncs with the school (pull, then push) and the demo
# prints both sides.  Stops and removes everything at the end.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/tools/lib.sh"
[ "$(id -u)" = 0 ] || { echo "tools/demo.sh must run as root" >&2; exit 2; }

mg_install_packages
mg_ensure_user
work=$(mg_prepare_tree "$here")
trap 'mg_cluster_stop_all; rm -rf "$work"' EXIT
school_port=$(mg_free_port 55450)
mg_cluster_start "$work/school_data" "$school_port" "$work/test/regress.conf"
laptop_port=$(mg_free_port $((school_port + 1)))
mg_cluster_start "$work/laptop_data" "$laptop_port" "$work/test/regress.conf"

on() {  # on school|laptop [psql args...]
    local port=$school_port
    [ "$1" = laptop ] && port=$laptop_port
    shift
    mg_as_user psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"
}

echo "== two databases: school (port $school_port) and laptop (port $laptop_port)"
on school -f "$work/tools/demo_schema.sql"
on laptop -f "$work/tools/demo_schema.sql"

# the school has a facility, learners and their logs
on school <<'SQL'
INSERT INTO facility VALUES ('riverside', 'Riverside School');
INSERT INTO learner VALUES ('amina', 'riverside', 'amina'), ('bo', 'riverside', 'bo');
INSERT INTO attempt_log
SELECT 'log' || g, CASE WHEN g % 2 = 0 THEN 'amina' ELSE 'bo' END, 'riverside',
       'exercise-' || g, g % 3 <> 0
FROM generate_series(1, 6) g;
SQL
# the laptop first gets the school's data
on laptop -c "SELECT morango.sync('host=127.0.0.1 port=$school_port dbname=postgres user=postgres', 'facilitydata') IS NOT NULL AS first_sync" >/dev/null
echo "== the laptop pulled the school's data; now both sides work offline"

# offline: both rename amina (a conflict), the school deletes a log, the laptop adds a learner
on school <<'SQL'
UPDATE learner SET username = 'amina.k (school)' WHERE id = 'amina';
DELETE FROM attempt_log WHERE id = 'log6';
SELECT morango.serialize() \g /dev/null
SQL
on laptop <<'SQL'
UPDATE learner SET username = 'amina.k (laptop)' WHERE id = 'amina';
INSERT INTO learner VALUES ('chidi', 'riverside', 'chidi');
INSERT INTO attempt_log VALUES ('log7', 'chidi', 'riverside', 'exercise-7', true);
SELECT morango.serialize() \g /dev/null
SQL

echo "== the laptop syncs with the school (pull, then push)"
on laptop <<SQL
\pset footer off
SELECT morango.sync('host=127.0.0.1 port=$school_port dbname=postgres user=postgres', 'facilitydata') AS sid \gset
SELECT CASE WHEN t.push THEN 'push' ELSE 'pull' END AS direction,
       t.records_total AS records, t.conflicts
FROM morango.transfer_sessions t WHERE t.sync_session_id = :'sid'
ORDER BY t.push;
SQL

summary='
\pset footer off
SELECT l.id AS learner, l.username,
       (SELECT count(*) FROM attempt_log a WHERE a.learner_id = l.id) AS logs
FROM learner l ORDER BY l.id;
SELECT s.conflicting_serialized_data->0->>$$username$$ AS "kept as conflict history for amina"
FROM morango.store s WHERE s.model_name = $$learner$$ AND s.source_id = $$amina$$;
SELECT count(*) AS "log6 rows (deleted at the school)" FROM attempt_log WHERE id = $$log6$$;
SELECT md5(string_agg(format($$%s|%s|%s$$, t, id, v), $$,$$ ORDER BY t, id)) AS "data fingerprint"
FROM (SELECT $$f$$ AS t, id, name AS v FROM facility
      UNION ALL SELECT $$l$$, id, username FROM learner
      UNION ALL SELECT $$a$$, id, item FROM attempt_log) d;
'
echo "== school"
on school <<<"$summary"
echo "== laptop"
on laptop <<<"$summary"
s=$(on school -At -c "SELECT md5(string_agg(format('%s|%s|%s', t, id, v), ',' ORDER BY t, id)) FROM (SELECT 'f' AS t, id, name AS v FROM facility UNION ALL SELECT 'l', id, username FROM learner UNION ALL SELECT 'a', id, item FROM attempt_log) d")
l=$(on laptop -At -c "SELECT md5(string_agg(format('%s|%s|%s', t, id, v), ',' ORDER BY t, id)) FROM (SELECT 'f' AS t, id, name AS v FROM facility UNION ALL SELECT 'l', id, username FROM learner UNION ALL SELECT 'a', id, item FROM attempt_log) d")
if [ "$s" = "$l" ]; then
    echo "== both sides hold the same data; the laptop (the initiator) won the conflict, the school's version is kept in the conflict history, and the deleted log is gone on both"
else
    echo "== the two sides differ" >&2
    exit 1
fi
