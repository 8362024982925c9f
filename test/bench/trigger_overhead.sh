#!/bin/bash
# test/bench/trigger_overhead.sh: what does morango's capture trigger cost a
# writer?  Run as root from the repository root:
#
#   bash test/bench/trigger_overhead.sh
#
# Builds and installs the extension from a copy of the tree, starts one
# throwaway cluster (as the unprivileged MG_USER, on a free loopback port),
# creates two identical 10-column tables in one database, registers one of
# them with morango.register_model(), and runs pgbench against each:
#
#   insert   one single-row INSERT per transaction, key from a sequence
#   update   one single-row UPDATE of a random pre-populated row
#
# Each (workload, table) pair runs BENCH_REPEAT times for BENCH_SECONDS,
# registered and unregistered runs alternating (and the order flipping every
# repeat, so drift hits both sides alike); the table printed at the end holds
# the median tps of each and the ratio registered / unregistered.
#
# Between runs (untimed): morango.serialize() stamps what the last run
# changed (as a periodic sync would), then VACUUM ANALYZE and CHECKPOINT, so
# every run starts from the same kind of state.
#
# Settings (environment):
#   BENCH_SECONDS  duration of one pgbench run         (default 15)
#   BENCH_CLIENTS  pgbench -c                          (default 2)
#   BENCH_JOBS     pgbench -j                          (default BENCH_CLIENTS)
#   BENCH_REPEAT   runs per (workload, table)          (default 3)
#   BENCH_ROWS     rows pre-populated in each table    (default 100000)
#   BENCH_KEEP=1   keep the work directory (cluster data, scripts, logs)
#
# The server runs with PostgreSQL's default settings except what tools/lib.sh
# sets: listen address, port, socket directory and fsync = off.  With
# fsync off commits never wait for the disk, so absolute tps are higher than
# on a durable server and the ratio shows the CPU cost of the trigger
# (a durable server's commit flush would dilute it).
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/tools/lib.sh"

if [ "$(id -u)" != 0 ]; then
    echo "test/bench/trigger_overhead.sh must run as root (it installs packages and creates a test user)" >&2
    exit 2
fi

SECONDS_PER_RUN=${BENCH_SECONDS:-15}
CLIENTS=${BENCH_CLIENTS:-2}
JOBS=${BENCH_JOBS:-$CLIENTS}
REPEAT=${BENCH_REPEAT:-3}
ROWS=${BENCH_ROWS:-100000}
for v in SECONDS_PER_RUN CLIENTS JOBS REPEAT ROWS; do
    case ${!v} in
        '' | *[!0-9]* | 0) echo "$v must be a positive integer, got '${!v}'" >&2; exit 2 ;;
    esac
done

mg_install_packages
mg_ensure_user
work=$(mg_prepare_tree "$here")
port=$(mg_free_port 55600)
data="$work/bench_data"
scripts="$work/bench_scripts"

cleanup() {
    mg_cluster_stop_all
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "work directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
mg_log "starting a throwaway cluster on 127.0.0.1:$port"
mg_cluster_start "$data" "$port"

conn="PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres"

# psql as MG_USER over TCP; extra arguments are passed on, SQL may come on stdin
sql() {
    MG_ENV="$conn PGDATABASE=${DB:-bench}" mg_as_user psql -X -q -v ON_ERROR_STOP=1 "$@"
}
# one value, unaligned
sql_value() {
    sql -At -c "$1"
}

DB=postgres sql -c "CREATE DATABASE bench"
mg_log "creating and populating bench_plain and bench_reg ($ROWS rows each)"
sql -v rows="$ROWS" -v profile=bench -f "$work/test/bench/trigger_schema.sql"

store_rows=$(sql_value "SELECT count(*) FROM morango.store WHERE model_name = 'bench_reg'")
if [ "$store_rows" != "$ROWS" ]; then
    echo "after register_model + serialize the store holds $store_rows stamped rows of bench_reg, expected $ROWS" >&2
    exit 1
fi

# pgbench scripts, one per (workload, table); readable by MG_USER
mkdir -p "$scripts"
for t in plain reg; do
    for w in insert update; do
        sed "s/@TABLE@/bench_$t/g" "$here/test/bench/trigger_$w.sql.in" >"$scripts/${w}_$t.sql"
    done
done
chown -R "$MG_USER" "$scripts"

# untimed reset between runs: serialize what changed, vacuum, checkpoint
between_runs() {
    sql <<'EOF'
SELECT morango.serialize() \g /dev/null
VACUUM (ANALYZE) bench_plain, bench_reg, morango.store, morango.record_max_counters, morango.changes;
CHECKPOINT;
EOF
}

# run_pgbench WORKLOAD TABLE RUN_NO: one timed run, prints its tps
run_pgbench() {
    local w=$1 t=$2 n=$3 out rc=0 tps failed
    out="$work/pgbench_${n}_${w}_$t.log"
    MG_ENV="$conn PGDATABASE=bench" mg_as_user pgbench -n -f "$scripts/${w}_$t.sql" \
        -T "$SECONDS_PER_RUN" -c "$CLIENTS" -j "$JOBS" -D rows="$ROWS" >"$out" 2>&1 || rc=$?
    if [ $rc != 0 ]; then
        echo "pgbench ($w on bench_$t) exited $rc:" >&2
        cat "$out" >&2
        exit 1
    fi
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
    if [ -n "$failed" ] && [ "$failed" != 0 ]; then
        echo "pgbench ($w on bench_$t): $failed failed transactions" >&2
        cat "$out" >&2
        exit 1
    fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$out")
    if [ -z "$tps" ]; then
        echo "no tps in the output of pgbench ($w on bench_$t):" >&2
        cat "$out" >&2
        exit 1
    fi
    echo "$tps"
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 }
        END { if (NR % 2) printf "%.1f\n", a[(NR + 1) / 2];
              else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

run_no=0
declare -A runs=([insert_plain]="" [insert_reg]="" [update_plain]="" [update_reg]="")
total=$((REPEAT * 4))
for ((r = 1; r <= REPEAT; r++)); do
    for w in insert update; do
        # alternate which table goes first: plain first in repeat 1's
        # insert pair, registered first in its update pair, and so on
        widx=0; [ "$w" = update ] && widx=1
        if [ $(((r + widx) % 2)) = 1 ]; then order="plain reg"; else order="reg plain"; fi
        for t in $order; do
            run_no=$((run_no + 1))
            between_runs
            tps=$(run_pgbench "$w" "$t" "$run_no")
            runs[${w}_$t]+=" $tps"
            mg_log "run $run_no/$total: $w on bench_$t ($([ "$t" = reg ] && echo registered || echo unregistered)): $tps tps"
        done
    done
done

# the registered table's store must hold exactly one stamped row per table row
between_runs
check=$(sql_value "SELECT (SELECT count(*) FROM bench_reg) || ' ' ||
                          (SELECT count(*) FROM morango.store s JOIN bench_reg t
                             ON s.model_name = 'bench_reg' AND s.source_id = t.id::text
                            AND s.serialized = to_jsonb(t))")
read -r table_rows matching <<<"$check"
if [ "$table_rows" != "$matching" ]; then
    echo "store out of step: bench_reg has $table_rows rows but only $matching match their stamped store row" >&2
    exit 1
fi

pgver=$(sql_value "SHOW server_version")
settings=$(sql_value "SELECT string_agg(name || '=' || current_setting(name), ' ' ORDER BY name)
                      FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers',
                                                      'full_page_writes', 'wal_level', 'max_wal_size')")
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)

echo
echo "machine:  nproc=$(nproc), cpu=\"${cpu:-unknown}\", PostgreSQL $pgver, $(uname -sr)"
echo "          load average before: $load_start, after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the runs)"
echo "settings: pgbench -n -c $CLIENTS -j $JOBS -T $SECONDS_PER_RUN (simple protocol, TCP 127.0.0.1), $REPEAT run(s) per cell, median shown;"
echo "          $ROWS pre-populated rows per table; server: $settings"
echo "          (defaults except what tools/lib.sh sets: fsync=off, so commits do not wait for the disk)"
echo
printf '%-9s %17s %15s %7s\n' workload unregistered_tps registered_tps ratio
for w in insert update; do
    # shellcheck disable=SC2086
    p=$(median ${runs[${w}_plain]})
    # shellcheck disable=SC2086
    g=$(median ${runs[${w}_reg]})
    ratio=$(awk -v a="$g" -v b="$p" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
    printf '%-9s %17s %15s %7s\n' "$w" "$p" "$g" "$ratio"
done
echo
echo "ratio = registered_tps / unregistered_tps; runs (tps):"
for k in insert_plain insert_reg update_plain update_reg; do
    echo "  $k:${runs[$k]}"
done
echo "store check: bench_reg has $table_rows rows, each with a matching stamped store row"
exit 0
