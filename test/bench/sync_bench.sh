#!/bin/bash
# test/bench/sync_bench.sh: the sync benchmark (issue 6): for each N, full
# sync, COPY baseline, incremental, no-op, memory and bytes on the wire,
# median / min / max of R runs, printed as one table.
#
#   bash test/bench/sync_bench.sh                       # as root; N = 10000 100000, R = 3
#   BENCH_NS="10000 100000 1000000" BENCH_RUNS=3 bash test/bench/sync_bench.sh
#   BENCH_NS=1000 BENCH_RUNS=1 bash test/bench/sync_bench.sh   # the smoke run
#   BENCH_TOP=15 ...      # also print each side's 15 costliest statements
#
# Two throwaway clusters on this machine (fsync off on both, for sync and
# baseline alike), the school-like workload of sync_schema.sql and
# sync_data.sql (10 facilities, N/10 users, the rest ~200-byte logs). Each
# run uses fresh databases. Measured:
#   full      a fresh peer pulls everything: morango.sync(direction =>
#             'pull') on the laptop, from the call until the laptop's
#             application tables are filled; the server's rows were just
#             inserted, so the server serializes them inside the sync.
#             Stage times come from pg_stat_statements (track = all) on both
#             clusters: serialize, queue (server), dequeue, deserialize
#             (laptop); "transfer" is the rest (chunks read, sent over
#             libpq, validated and buffered).
#   copy      COPY (SELECT * FROM t) TO STDOUT | COPY t FROM STDIN between
#             the same clusters, into empty tables with the same indexes.
#   floors    the same work written as the best set-based statements on
#             the same rows, in a scratch database: floor_serialize one
#             INSERT ... SELECT of every row's to_jsonb into a store-like
#             table (what serialize does at least); floor_receive one
#             store write and one application write per record (INSERT
#             ... SELECT, then INSERT ... SELECT jsonb_populate_record,
#             parents first: what dequeue + deserialize do at least);
#             *_over_floor are our stages over them.
#   incr      1% of the records change on the server (0.8% updated, 0.1%
#             deleted, 0.1% inserted), then the laptop pulls; next to
#             "full 1%": a fresh peer pulling a dataset of N/100 records.
#   noop      the same pull again, nothing changed (right after the full
#             sync: it walks the dead index entries the full sync left).
#   noop_vacuumed  a no-op pull at the end of the run, after VACUUM ANALYZE
#             of both databases (what autovacuum does a minute later).
#   memory    peak private (RssAnon) memory of any process of the server
#             cluster (the backend serving the sync) and of the laptop
#             cluster (the sync worker), sampled every 50 ms.
#   wire      bytes of chunk payload received by the laptop, against the
#             bytes of the application rows (their COPY text).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/tools/lib.sh"
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
NS=${BENCH_NS:-10000 100000}
RUNS=${BENCH_RUNS:-3}

mg_install_packages
mg_ensure_user
work=$(mg_prepare_tree "$here")
trap 'mg_cluster_stop_all; rm -rf "$work"' EXIT
{
    cat "$work/test/regress.conf"
    echo "shared_preload_libraries = 'pg_stat_statements'"
    echo "pg_stat_statements.track = all"
} >"$work/bench.conf"
p1=$(mg_free_port $(( ${MG_PORT_BASE:-55410} + 290 )))
mg_cluster_start "$work/server" "$p1" "$work/bench.conf"
p2=$(mg_free_port $((p1 + 1)))
mg_cluster_start "$work/laptop" "$p2" "$work/bench.conf"

on() {  # on PORT DB [psql args]
    local port=$1 db=$2; shift 2
    mg_as_user psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"
}
val() { on "$@" -At; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
count_sql="SELECT (SELECT count(*) FROM facility) + (SELECT count(*) FROM users) + (SELECT count(*) FROM logs)"
peer() { echo "host=127.0.0.1 port=$p1 dbname=$1 user=postgres"; }

for port in "$p1" "$p2"; do
    val "$port" postgres -c "CREATE EXTENSION pg_stat_statements" >/dev/null
done

# stage time in seconds: total execution time of the statements matching a
# pattern, in one cluster's database
stage() {  # stage PORT DB REGEX
    val "$1" postgres -c "SELECT round(COALESCE(sum(total_exec_time), 0)::numeric / 1000, 3)
        FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
        WHERE d.datname = '$2' AND s.query ~ '$3'"
}

# peak private memory (kB) of any process of the server cluster (the
# backend serving the sync) and of the laptop cluster (the sync worker),
# sampled while a file exists; writes "server laptop"
sample_memory() {  # sample_memory FLAGFILE OUTFILE
    local flag=$1 out=$2 peak1=0 peak2=0 pm1 pm2 pid kb
    pm1=$(head -1 "$work/server/postmaster.pid")
    pm2=$(head -1 "$work/laptop/postmaster.pid")
    while [ -e "$flag" ]; do
        for pid in $(pgrep -P "$pm1"); do
            kb=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
            [ -n "$kb" ] && [ "$kb" -gt "$peak1" ] && peak1=$kb
        done
        for pid in $(pgrep -P "$pm2"); do
            kb=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
            [ -n "$kb" ] && [ "$kb" -gt "$peak2" ] && peak2=$kb
        done
        sleep 0.05
    done
    echo "$peak1 $peak2" >"$out"
}

results="$work/results.txt"
: >"$results"
record() { echo "$1 $2 $3" >>"$results"; }   # record N metric value

for N in $NS; do
    small=$((N / 100))
    for run in $(seq 1 "$RUNS"); do
        s="s_${N}_$run"; l="l_${N}_$run"; c="c_${N}_$run"; t="t_${N}_$run"; m="m_${N}_$run"
        for db in "$s" "$t"; do
            val "$p1" postgres -c "CREATE DATABASE $db" >/dev/null
            on "$p1" "$db" -v register=on -f "$work/test/bench/sync_schema.sql"
        done
        for db in "$l" "$m"; do
            val "$p2" postgres -c "CREATE DATABASE $db" >/dev/null
            on "$p2" "$db" -v register=on -f "$work/test/bench/sync_schema.sql"
        done
        val "$p2" postgres -c "CREATE DATABASE $c" >/dev/null
        on "$p2" "$c" -v register=off -f "$work/test/bench/sync_schema.sql"
        on "$p1" "$s" -v n="$N" -f "$work/test/bench/sync_data.sql"
        on "$p1" "$t" -v n="$small" -f "$work/test/bench/sync_data.sql"
        records=$(val "$p1" "$s" -c "$count_sql")
        val "$p1" "$s" -c "CHECKPOINT" >/dev/null

        # full sync, with memory sampling and stage times
        for port in "$p1" "$p2"; do val "$port" postgres -c "SELECT pg_stat_statements_reset()" >/dev/null; done
        touch "$work/sampling"
        sample_memory "$work/sampling" "$work/peak" &
        sampler=$!
        t0=$(now)
        val "$p2" "$l" -c "SELECT morango.sync('$(peer "$s")', 'facilitydata', direction => 'pull')" >/dev/null
        t1=$(now)
        rm -f "$work/sampling"; wait "$sampler"
        got=$(val "$p2" "$l" -c "$count_sql")
        [ "$got" = "$records" ] || { echo "N=$N: the laptop holds $got records, expected $records" >&2; exit 1; }
        full=$(secs "$t0" "$t1")
        ser=$(stage "$p1" "$s" 'morango\.serialize\(')
        que=$(stage "$p1" "$s" 'morango\.queue\(')
        deq=$(stage "$p2" "$l" 'morango\.dequeue\(')
        des=$(stage "$p2" "$l" 'morango\.deserialize\(')
        if [ -n "${BENCH_TOP:-}" ]; then   # where the time goes, for profiling
            for side in "$p1 $s server" "$p2 $l laptop"; do
                set -- $side
                echo "-- N=$N run $run, $3: statements by total time (ms, calls)" >&2
                val "$1" postgres -F ' | ' -c "SELECT round(total_exec_time), calls,
                        left(regexp_replace(query, '\s+', ' ', 'g'), 110)
                    FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                    WHERE d.datname = '$2' ORDER BY total_exec_time DESC LIMIT ${BENCH_TOP}" >&2
            done
        fi
        record "$N" records "$records"
        record "$N" full_s "$full"
        record "$N" full_rps "$(awk -v n="$records" -v s="$full" 'BEGIN { printf "%.0f", n / s }')"
        record "$N" serialize_s "$ser"
        record "$N" queue_s "$que"
        record "$N" dequeue_s "$deq"
        record "$N" deserialize_s "$des"
        record "$N" transfer_s "$(awk -v f="$full" -v a="$ser" -v b="$que" -v c="$deq" -v d="$des" 'BEGIN { printf "%.3f", f - a - b - c - d }')"
        record "$N" memory_server_mb "$(awk '{ printf "%.0f", $1 / 1024 }' "$work/peak")"
        record "$N" memory_laptop_mb "$(awk '{ printf "%.0f", $2 / 1024 }' "$work/peak")"
        wire=$(val "$p2" "$l" -c "SELECT sum(bytes_received) FROM morango.transfer_sessions")
        app=0
        for tb in facility users logs; do
            b=$(on "$p1" "$s" -c "COPY (SELECT * FROM $tb) TO STDOUT" | wc -c)
            app=$((app + b))
        done
        record "$N" wire_ratio "$(awk -v w="$wire" -v a="$app" 'BEGIN { printf "%.2f", w / a }')"

        # the baseline: COPY of the same rows between the clusters
        t2=$(now)
        for tb in facility users logs; do
            mg_as_user psql -X -q -h 127.0.0.1 -p "$p1" -U postgres -d "$s" -c "COPY (SELECT * FROM $tb) TO STDOUT" |
                mg_as_user psql -X -q -h 127.0.0.1 -p "$p2" -U postgres -d "$c" -c "COPY $tb FROM STDIN"
        done
        t3=$(now)
        [ "$(val "$p2" "$c" -c "$count_sql")" = "$records" ] || { echo "COPY moved too few rows" >&2; exit 1; }
        copy=$(secs "$t2" "$t3")
        record "$N" copy_s "$copy"
        record "$N" sync_over_copy "$(awk -v a="$full" -v b="$copy" 'BEGIN { printf "%.1f", a / b }')"

        # floors: the same work as the best set-based statements, in a
        # scratch database of the laptop's cluster holding the rows
        # unregistered (serialize: one INSERT ... SELECT of the rows'
        # to_jsonb into a store-like table; receive: one store write and
        # one application write per record, INSERT ... SELECT
        # jsonb_populate_record, parents first)
        f="f_${N}_$run"
        val "$p2" postgres -c "CREATE DATABASE $f" >/dev/null
        on "$p2" "$f" -v register=off -f "$work/test/bench/sync_schema.sql"
        on "$p2" "$f" -c "CREATE SCHEMA dst" -c "SET search_path = dst, public" \
            -v register=off -f "$work/test/bench/sync_schema.sql" >/dev/null
        on "$p2" "$f" -v n="$N" -f "$work/test/bench/sync_data.sql"
        on "$p2" "$f" -c "CREATE TABLE floor_store (id uuid PRIMARY KEY, model_name text NOT NULL,
                              partition text NOT NULL, serialized jsonb NOT NULL);
                          CREATE TABLE floor_in (LIKE floor_store INCLUDING ALL); CHECKPOINT"
        floor_ser=$(on "$p2" "$f" -At -c "\\timing on" -c "
            INSERT INTO floor_store SELECT id, 'facility', id::text, to_jsonb(t) FROM facility t;
            INSERT INTO floor_store SELECT id, 'users', facility_id || ':user:' || id, to_jsonb(t) FROM users t;
            INSERT INTO floor_store SELECT id, 'logs', facility_id || ':user:' || user_id || ':log', to_jsonb(t)
            FROM logs t" | awk '/^Time:/ { s += $2 } END { printf "%.3f", s / 1000 }')
        floor_recv=$(on "$p2" "$f" -At -c "\\timing on" -c "
            INSERT INTO floor_in SELECT * FROM floor_store;
            INSERT INTO dst.facility SELECT (jsonb_populate_record(NULL::dst.facility, serialized)).*
            FROM floor_in WHERE model_name = 'facility';
            INSERT INTO dst.users SELECT (jsonb_populate_record(NULL::dst.users, serialized)).*
            FROM floor_in WHERE model_name = 'users';
            INSERT INTO dst.logs SELECT (jsonb_populate_record(NULL::dst.logs, serialized)).*
            FROM floor_in WHERE model_name = 'logs'" | awk '/^Time:/ { s += $2 } END { printf "%.3f", s / 1000 }')
        val "$p2" postgres -c "DROP DATABASE $f" >/dev/null
        record "$N" floor_serialize_s "$floor_ser"
        record "$N" floor_receive_s "$floor_recv"
        record "$N" receive_over_floor "$(awk -v a="$deq" -v b="$des" -v f="$floor_recv" 'BEGIN { printf "%.1f", (a + b) / f }')"
        record "$N" serialize_over_floor "$(awk -v a="$ser" -v f="$floor_ser" 'BEGIN { printf "%.1f", a / f }')"

        # no-op: nothing changed
        t4=$(now)
        val "$p2" "$l" -c "SELECT morango.sync('$(peer "$s")', 'facilitydata', direction => 'pull')" >/dev/null
        t5=$(now)
        record "$N" noop_ms "$(awk -v a="$t4" -v b="$t5" 'BEGIN { printf "%.0f", (b - a) * 1000 }')"

        # incremental: 1% changes on the server, then a pull
        on "$p1" "$s" -c "
            UPDATE logs SET progress = progress + 1, answer = 'changed'
            WHERE id IN (SELECT id FROM logs ORDER BY id LIMIT $((N * 8 / 1000)));
            DELETE FROM logs WHERE id IN (SELECT id FROM logs ORDER BY id DESC LIMIT $((N / 1000)));
            INSERT INTO logs (id, user_id, facility_id, content_id, kind, progress, time_spent,
                              started_at, completed, answer)
            SELECT ('30000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, user_id, facility_id,
                   content_id, kind, 0, 0, started_at, false, 'new'
            FROM (SELECT * FROM logs ORDER BY id LIMIT 1) logs, generate_series(1, $((N / 1000))) g;"
        t6=$(now)
        val "$p2" "$l" -c "SELECT morango.sync('$(peer "$s")', 'facilitydata', direction => 'pull')" >/dev/null
        t7=$(now)
        [ "$(val "$p2" "$l" -c "SELECT count(*) FROM logs")" = "$(val "$p1" "$s" -c "SELECT count(*) FROM logs")" ] ||
            { echo "N=$N: the incremental sync left the logs unequal" >&2; exit 1; }
        record "$N" incr_s "$(secs "$t6" "$t7")"

        # a full sync of the same number of records into an empty peer
        t8=$(now)
        val "$p2" "$m" -c "SELECT morango.sync('$(peer "$t")', 'facilitydata', direction => 'pull')" >/dev/null
        t9=$(now)
        record "$N" full_small_s "$(secs "$t8" "$t9")"
        record "$N" incr_over_full "$(awk -v a="$(secs "$t6" "$t7")" -v b="$(secs "$t8" "$t9")" 'BEGIN { printf "%.2f", a / b }')"

        # no-op again once (auto)vacuum has cleaned what the syncs left:
        # the first no-op after a large sync walks the index entries of the
        # store rows that sync rewrote
        on "$p1" "$s" -c "VACUUM ANALYZE"
        on "$p2" "$l" -c "VACUUM ANALYZE"
        t10=$(now)
        val "$p2" "$l" -c "SELECT morango.sync('$(peer "$s")', 'facilitydata', direction => 'pull')" >/dev/null
        t11=$(now)
        record "$N" noop_vacuumed_ms "$(awk -v a="$t10" -v b="$t11" 'BEGIN { printf "%.0f", (b - a) * 1000 }')"

        for db in "$s" "$t"; do val "$p1" postgres -c "DROP DATABASE $db" >/dev/null; done
        for db in "$l" "$m" "$c"; do val "$p2" postgres -c "DROP DATABASE $db" >/dev/null; done
        echo "N=$N run $run: full ${full}s, copy ${copy}s" >&2
    done
done

# the table: median [min-max] per metric and N
echo "machine: $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), PostgreSQL $(val "$p1" postgres -c 'SHOW server_version'), $RUNS run(s) each"
metrics="records full_s full_rps serialize_s floor_serialize_s serialize_over_floor queue_s transfer_s dequeue_s deserialize_s floor_receive_s receive_over_floor copy_s sync_over_copy incr_s full_small_s incr_over_full noop_ms noop_vacuumed_ms memory_server_mb memory_laptop_mb wire_ratio"
printf '%-16s' metric
for N in $NS; do printf '%28s' "N=$N"; done
echo
for metric in $metrics; do
    printf '%-16s' "$metric"
    for N in $NS; do
        awk -v n="$N" -v m="$metric" '$1 == n && $2 == m { print $3 }' "$results" | sort -g |
            awk '{ v[NR] = $1 } END {
                if (NR == 0) { printf "%28s", "-"; exit }
                med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
                if (NR == 1) printf "%28s", v[1];
                else printf "%28s", sprintf("%g [%g-%g]", med, v[1], v[NR]) }'
    done
    echo
done
