#!/bin/bash
# test/bench/hub_bench.sh: a single-user device against a hub that serves
# many devices (issue 14, "Scale").  Prints the no-op sync and the 1-record
# incremental sync of the device, against a plain hub and against the same
# hub once its database max counters hold 1,000 instances and 10,000
# partitions, median / min / max of R runs each, in one run.
#
#   bash test/bench/hub_bench.sh                    # as root; R = 5
#   HUB_INSTANCES=1000 HUB_PARTITIONS=10000 HUB_PER_PARTITION=10 HUB_RUNS=5 bash test/bench/hub_bench.sh
#   BENCH_TOP=15 ...      # also print each side's 15 costliest statements
#
# The hub holds the school-like workload of sync_schema.sql / sync_data.sql
# (N = 10,000 records).  The crowd of other devices is made with one INSERT
# into morango.database_max_counters (what their pushes would have left):
# HUB_PARTITIONS user partitions ("<facility>:user:<fake user>", spread over
# the 10 facilities), each holding counters of HUB_PER_PARTITION of the
# HUB_INSTANCES instances, and every instance's counter at each facility
# prefix.  The device syncs (direction both) one real user's partition,
# "<facility>:user:<user>" (its users table without the foreign key to
# facility, which is outside the filter): first a full sync, then the
# timed ones.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/tools/lib.sh"
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
INSTANCES=${HUB_INSTANCES:-1000}
PARTITIONS=${HUB_PARTITIONS:-10000}
PER=${HUB_PER_PARTITION:-10}
RUNS=${HUB_RUNS:-5}

mg_install_packages
mg_ensure_user
work=$(mg_prepare_tree "$here")
trap 'mg_cluster_stop_all; rm -rf "$work"' EXIT
{
    cat "$work/test/regress.conf"
    echo "shared_preload_libraries = 'pg_stat_statements'"
    echo "pg_stat_statements.track = all"
} >"$work/bench.conf"
p1=$(mg_free_port $(( ${MG_PORT_BASE:-55410} + 270 )))
mg_cluster_start "$work/hub" "$p1" "$work/bench.conf"
p2=$(mg_free_port $((p1 + 1)))
mg_cluster_start "$work/device" "$p2" "$work/bench.conf"

on() {  # on PORT DB [psql args]
    local port=$1 db=$2; shift 2
    mg_as_user psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"
}
val() { on "$@" -At; }
now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }

results="$work/results.txt"
: >"$results"
user=10000000-0000-0000-0000-000000000017
facility=$(printf '00000000-0000-0000-0000-%012d' $((1 + 17 % 10)))
filter="ARRAY['$facility:user:$user']"

for hub in plain crowded; do
    val "$p1" postgres -c "CREATE DATABASE hub_$hub" >/dev/null
    on "$p1" "hub_$hub" -v register=on -f "$work/test/bench/sync_schema.sql"
    on "$p1" "hub_$hub" -v n=10000 -f "$work/test/bench/sync_data.sql"
    val "$p1" "hub_$hub" -c "SELECT morango.serialize()" >/dev/null
    if [ "$hub" = crowded ]; then
        on "$p1" "hub_$hub" -c "
            INSERT INTO morango.database_max_counters (profile, instance_id, partition, counter)
            SELECT 'facilitydata',
                   ('e0000000-0000-0000-0000-' || lpad(((p * 7 + k * 101) % $INSTANCES)::text, 12, '0'))::uuid,
                   ('00000000-0000-0000-0000-' || lpad((1 + p % 10)::text, 12, '0')) || ':user:'
                     || ('f0000000-0000-0000-0000-' || lpad(p::text, 12, '0')),
                   1 + (p + k) % 1000
            FROM generate_series(1, $PARTITIONS) p, generate_series(1, $PER) k
            ON CONFLICT DO NOTHING;
            INSERT INTO morango.database_max_counters (profile, instance_id, partition, counter)
            SELECT 'facilitydata', ('e0000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                   '00000000-0000-0000-0000-' || lpad(f::text, 12, '0'), 1 + i % 1000
            FROM generate_series(0, $INSTANCES - 1) i, generate_series(1, 10) f
            ON CONFLICT DO NOTHING;
            ANALYZE morango.database_max_counters;"
    fi
    rows=$(val "$p1" "hub_$hub" -c "SELECT count(*) FROM morango.database_max_counters")
    parts=$(val "$p1" "hub_$hub" -c "SELECT count(DISTINCT partition) FROM morango.database_max_counters")
    insts=$(val "$p1" "hub_$hub" -c "SELECT count(DISTINCT instance_id) FROM morango.database_max_counters")
    echo "$hub dmc_rows $rows" >>"$results"
    echo "$hub dmc_partitions $parts" >>"$results"
    echo "$hub dmc_instances $insts" >>"$results"

    val "$p2" postgres -c "CREATE DATABASE device_$hub" >/dev/null
    on "$p2" "device_$hub" -v register=on -f "$work/test/bench/sync_schema.sql"
    # the user's facility is outside the device's filter
    on "$p2" "device_$hub" -c "ALTER TABLE users DROP CONSTRAINT users_facility_id_fkey"
    peer="host=127.0.0.1 port=$p1 dbname=hub_$hub user=postgres"
    sync="SELECT morango.sync('$peer', 'facilitydata', $filter)"
    val "$p2" "device_$hub" -c "$sync" >/dev/null
    got=$(val "$p2" "device_$hub" -c "SELECT count(*) FROM logs")
    want=$(val "$p1" "hub_$hub" -c "SELECT count(*) FROM logs WHERE user_id = '$user'")
    [ "$got" = "$want" ] || { echo "$hub: the device holds $got logs, expected $want" >&2; exit 1; }
    echo "$hub device_records $got" >>"$results"
    on "$p1" "hub_$hub" -c "VACUUM ANALYZE"
    on "$p2" "device_$hub" -c "VACUUM ANALYZE"

    for port in "$p1" "$p2"; do
        val "$port" postgres -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
        val "$port" postgres -c "SELECT pg_stat_statements_reset()" >/dev/null
    done
    for run in $(seq 1 "$RUNS"); do
        t0=$(now)
        val "$p2" "device_$hub" -c "$sync" >/dev/null
        t1=$(now)
        echo "$hub noop_ms $(ms "$t0" "$t1")" >>"$results"

        on "$p1" "hub_$hub" -c "UPDATE logs SET progress = progress + 1
                                WHERE id = (SELECT id FROM logs WHERE user_id = '$user' ORDER BY id LIMIT 1)"
        t2=$(now)
        val "$p2" "device_$hub" -c "$sync" >/dev/null
        t3=$(now)
        echo "$hub incr1_ms $(ms "$t2" "$t3")" >>"$results"
        a=$(val "$p1" "hub_$hub" -c "SELECT sum(progress) FROM logs WHERE user_id = '$user'")
        b=$(val "$p2" "device_$hub" -c "SELECT sum(progress) FROM logs")
        [ "$a" = "$b" ] || { echo "$hub: the 1-record sync did not arrive ($a, $b)" >&2; exit 1; }
    done
    if [ -n "${BENCH_TOP:-}" ]; then   # where the time goes, for profiling
        for side in "$p1 hub_$hub hub" "$p2 device_$hub device"; do
            set -- $side
            echo "-- $hub hub, $3: statements by total time over the timed syncs (ms, calls)" >&2
            val "$1" postgres -F ' | ' -c "SELECT round(total_exec_time::numeric, 1), calls,
                    left(regexp_replace(query, '\s+', ' ', 'g'), 120)
                FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                WHERE d.datname = '$2' ORDER BY total_exec_time DESC LIMIT ${BENCH_TOP}" >&2
        done
    fi
done

echo "machine: $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), PostgreSQL $(val "$p1" postgres -c 'SHOW server_version'), $RUNS run(s) each"
printf '%-16s%24s%24s\n' metric "plain hub" "crowded hub"
for metric in dmc_rows dmc_partitions dmc_instances device_records noop_ms incr1_ms; do
    printf '%-16s' "$metric"
    for hub in plain crowded; do
        awk -v h="$hub" -v m="$metric" '$1 == h && $2 == m { print $3 }' "$results" | sort -g |
            awk '{ v[NR] = $1 } END {
                if (NR == 0) { printf "%24s", "-"; exit }
                med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
                if (NR == 1) printf "%24s", v[1];
                else printf "%24s", sprintf("%g [%g-%g]", med, v[1], v[NR]) }'
    done
    echo
done
