#!/bin/bash
# test/bench/sync_full.sh: a full sync of N records between two clusters,
# next to a plain COPY of the same rows between the same clusters.
#
#   bash test/bench/sync_full.sh            # as root; N=100000
#   BENCH_N=10000 BENCH_CHUNK=5000 bash test/bench/sync_full.sh
#
# Two throwaway clusters on this machine ("server", "laptop"), the
# school-like workload of test/bench/sync_schema.sql and sync_data.sql.
# Measures, one run each:
#   serialize: the server stamps the N freshly inserted rows;
#   sync:      the laptop pulls everything: morango.sync(direction =>
#              'pull'), from the call until the application tables on the
#              laptop are filled (the sync includes its own deserialize);
#   copy:      COPY (SELECT * FROM t) TO STDOUT on the server piped into
#              COPY t FROM STDIN on the laptop, into empty tables with the
#              same indexes, for the same three tables.
# Prints records per second and the ratio sync / copy.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/tools/lib.sh"
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
N=${BENCH_N:-100000}
CHUNK=${BENCH_CHUNK:-}

mg_install_packages
mg_ensure_user
work=$(mg_prepare_tree "$here")
trap 'mg_cluster_stop_all; rm -rf "$work"' EXIT
p1=$(mg_free_port 55700)
mg_cluster_start "$work/server" "$p1" "$work/test/regress.conf"
p2=$(mg_free_port $((p1 + 1)))
mg_cluster_start "$work/laptop" "$p2" "$work/test/regress.conf"

on() {  # on PORT [psql args]
    local port=$1; shift
    mg_as_user psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

on "$p1" -v register=on -f "$work/test/bench/sync_schema.sql"
on "$p2" -v register=on -f "$work/test/bench/sync_schema.sql"
on "$p2" -c "CREATE SCHEMA copytarget" \
         -c "SET search_path = copytarget" -v register=off -f "$work/test/bench/sync_schema.sql"
on "$p1" -v n="$N" -f "$work/test/bench/sync_data.sql"
records=$(on "$p1" -At -c "SELECT (SELECT count(*) FROM facility) + (SELECT count(*) FROM users) + (SELECT count(*) FROM logs)")
bytes=$(on "$p1" -At -c "SELECT pg_total_relation_size('logs') + pg_total_relation_size('users') + pg_total_relation_size('facility')")

t0=$(now)
on "$p1" -At -c "SELECT morango.serialize()" >/dev/null
t1=$(now)
chunk_arg=""
[ -n "$CHUNK" ] && chunk_arg=", chunk_size => $CHUNK"
on "$p2" -At -c "SELECT morango.sync('host=127.0.0.1 port=$p1 dbname=postgres user=postgres', 'facilitydata', direction => 'pull'$chunk_arg)" >/dev/null
t2=$(now)
got=$(on "$p2" -At -c "SELECT (SELECT count(*) FROM facility) + (SELECT count(*) FROM users) + (SELECT count(*) FROM logs)")
[ "$got" = "$records" ] || { echo "the laptop holds $got records, expected $records" >&2; exit 1; }

t3=$(now)
for t in facility users logs; do
    mg_as_user psql -X -q -h 127.0.0.1 -p "$p1" -U postgres -d postgres -c "COPY (SELECT * FROM $t) TO STDOUT" |
        mg_as_user psql -X -q -h 127.0.0.1 -p "$p2" -U postgres -d postgres -c "COPY copytarget.$t FROM STDIN"
done
t4=$(now)
copied=$(on "$p2" -At -c "SELECT (SELECT count(*) FROM copytarget.facility) + (SELECT count(*) FROM copytarget.users) + (SELECT count(*) FROM copytarget.logs)")
[ "$copied" = "$records" ] || { echo "COPY moved $copied rows, expected $records" >&2; exit 1; }
stages=$(on "$p2" -At -c "SELECT records_total, bytes_received FROM morango.transfer_sessions WHERE NOT push" | tr '|' ' ')

sync_s=$(secs "$t1" "$t2"); ser_s=$(secs "$t0" "$t1"); copy_s=$(secs "$t3" "$t4")
echo "machine: $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(on "$p1" -At -c 'SHOW server_version')"
echo "records: $records (10 facilities, users, logs); application tables on disk: $((bytes / 1024 / 1024)) MB"
echo "chunk_size: ${CHUNK:-default ($(on "$p1" -At -c "LOAD 'morango'" -c 'SHOW morango.chunk_size'))}; transferred (records, bytes): $stages"
printf '%-34s %10s %14s\n' step seconds records/s
printf '%-34s %10s %14.0f\n' "serialize on the server" "$ser_s" "$(awk -v n="$records" -v s="$ser_s" 'BEGIN { print n / s }')"
printf '%-34s %10s %14.0f\n' "full sync (pull, until deserialized)" "$sync_s" "$(awk -v n="$records" -v s="$sync_s" 'BEGIN { print n / s }')"
printf '%-34s %10s %14.0f\n' "baseline: COPY between clusters" "$copy_s" "$(awk -v n="$records" -v s="$copy_s" 'BEGIN { print n / s }')"
echo "sync / copy: $(awk -v a="$sync_s" -v b="$copy_s" 'BEGIN { printf "%.1f", a / b }')x"
