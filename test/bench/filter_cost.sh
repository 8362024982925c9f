#!/bin/bash
# test/bench/filter_cost.sh: what a filter with many partition prefixes costs
# a hub (issue 12, item 7a).
#
#   bash tools/isolated.sh bash test/bench/filter_cost.sh     # as root
#   BENCH_PREFIXES="1000 2000 4000 8000" BENCH_REFUSE="1001 100000" \
#   BENCH_RECORDS=2000 BENCH_TIMEOUT=600 bash tools/isolated.sh bash test/bench/filter_cost.sh
#
# One throwaway cluster (fsync off), two databases per measurement, both
# fresh: "hub" holds the school-like workload of sync_schema.sql and
# sync_data.sql (BENCH_RECORDS records, not serialized yet: the pull
# serializes them), "device" is empty.  A filter of N prefixes is the ten
# facility ids (so the pull moves every record) followed by N - 10
# invented facility ids.  For each N in BENCH_PREFIXES it times:
#   sync       the device's morango.sync(hub, 'facilitydata', filter,
#              'pull'), from the call until the device's tables are
#              filled (serialize, fsic, queue, chunks, dequeue,
#              deserialize);
#   peer_begin one morango.peer_begin() of a pull with that filter, called
#              as a peer role on a fresh hub: the call a hostile peer makes.
#              It serializes, computes the FSIC and queues in one
#              transaction holding the hub's instance lock, so this is also
#              how long every other serialize and sync of the hub waits.
# For these runs the bound (morango.max_filter_prefixes, a superuser
# setting) is raised to BENCH_RAISE in both databases (ALTER DATABASE), so
# that the figures show how the cost grows past it.  For each N in
# BENCH_REFUSE it makes the same peer_begin with the default bound and
# prints its error and how long it took to come back (a filter above the
# bound is refused before any work).  A call that
# runs longer than BENCH_TIMEOUT seconds is cancelled (statement_timeout)
# and printed as "> timeout".
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/tools/lib.sh"
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
PREFIXES=${BENCH_PREFIXES:-1000 2000 4000 8000 16000 32000}
REFUSE=${BENCH_REFUSE:-1001 100000}
RECORDS=${BENCH_RECORDS:-2000}
TIMEOUT=${BENCH_TIMEOUT:-600}
RAISE=${BENCH_RAISE:-100000}

mg_install_packages
mg_ensure_user
work=$(mg_prepare_tree "$here")
trap 'mg_cluster_stop_all; rm -rf "$work"' EXIT
port=$(mg_free_port $(( ${MG_PORT_BASE:-55410} + 390 )))
mg_cluster_start "$work/cluster" "$port" "$work/test/regress.conf"

on() {  # on DB [psql args]
    local db=$1; shift
    mg_as_user psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"
}
val() { on "$@" -At; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
count_sql="SELECT (SELECT count(*) FROM facility) + (SELECT count(*) FROM users) + (SELECT count(*) FROM logs)"
# the filter of n prefixes, as an SQL expression
filter() {
    echo "(SELECT array_agg(f ORDER BY g) FROM (
             SELECT g, CASE WHEN g <= 10 THEN '00000000-0000-0000-0000-' || lpad(g::text, 12, '0')
                            ELSE '30000000-0000-0000-0000-' || lpad(g::text, 12, '0') END
             FROM generate_series(1, $1) g) AS x(g, f))"
}

val postgres -c "DO \$\$ BEGIN CREATE ROLE bench_peer LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" >/dev/null
# templates: the hub with its data (not serialized), the empty device
val postgres -c "CREATE DATABASE hub_template" >/dev/null
on hub_template -v register=on -f "$work/test/bench/sync_schema.sql"
on hub_template -v n="$RECORDS" -f "$work/test/bench/sync_data.sql"
val hub_template -c "SELECT morango.grant_peer('bench_peer')" >/dev/null
val postgres -c "CREATE DATABASE device_template" >/dev/null
on device_template -v register=on -f "$work/test/bench/sync_schema.sql"
records=$(val hub_template -c "$count_sql")

fresh() {  # fresh DB TEMPLATE [max_filter_prefixes]
    val postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1 TEMPLATE $2" >/dev/null
    if [ -n "${3:-}" ]; then
        val postgres -c "ALTER DATABASE $1 SET morango.max_filter_prefixes = $3" >/dev/null
    fi
}
# run one statement, print "seconds" or "> timeout" (or the error with -e)
timed() {  # timed DB ROLE SQL
    local t0 t1 out rc=0
    t0=$(now)
    out=$(MG_ENV="PGOPTIONS=-cstatement_timeout=${TIMEOUT}s" mg_as_user psql -X -q -h 127.0.0.1 -p "$port" \
        -U "$2" -d "$1" -v ON_ERROR_STOP=1 -v VERBOSITY=terse -At -c "$3" 2>&1) || rc=$?
    t1=$(now)
    if [ $rc = 0 ]; then
        echo "$(secs "$t0" "$t1")"
    elif grep -q "statement timeout" <<<"$out"; then
        echo "> $TIMEOUT"
    else
        echo "$(secs "$t0" "$t1") $(head -1 <<<"$out")"
    fi
}
peer_begin_sql() {
    echo "SELECT morango.peer_begin(2, gen_random_uuid(), gen_random_uuid(), 'facilitydata', false,
              $(filter "$1"), gen_random_uuid(), '{\"super\": {}, \"sub\": {}}')->>'records_total'"
}

echo "machine: $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(val postgres -c 'SHOW server_version')"
echo "commit: $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown); records on the hub: $records"
echo "settings: max_filter_prefixes = $(val postgres -c "LOAD 'morango'" -c "SELECT current_setting('morango.max_filter_prefixes', true)"), raised to $RAISE for the timed runs"
printf '%-9s %12s %16s\n' prefixes sync_s peer_begin_s
for n in $PREFIXES; do
    fresh hub hub_template "$RAISE"
    fresh device device_template "$RAISE"
    s=$(timed device postgres "SELECT morango.sync('host=127.0.0.1 port=$port dbname=hub user=bench_peer',
                                                  'facilitydata', $(filter "$n"), 'pull') IS NOT NULL")
    case "$s" in
        *" "*) ;;   # an error: printed as it is
        *) got=$(val device -c "$count_sql")
           [ "$got" = "$records" ] || { echo "N=$n: the device holds $got records, expected $records" >&2; exit 1; } ;;
    esac
    fresh hub hub_template "$RAISE"
    b=$(timed hub bench_peer "$(peer_begin_sql "$n")")
    printf '%-9s %12s %16s\n' "$n" "$s" "$b"
done
for n in $REFUSE; do
    fresh hub hub_template
    printf '%-9s peer_begin: %s\n' "$n" "$(timed hub bench_peer "$(peer_begin_sql "$n")")"
done
