#!/bin/bash
# test/bench/smoke.sh: a two-second version of test/bench/trigger_overhead.sh
# for the test suite.  tools/test.sh runs it as root from the prepared work
# tree while its test server runs:
#
#   MG_PORT=$port bash test/bench/smoke.sh
#
# Needs a server on 127.0.0.1:$MG_PORT with superuser postgres, trust auth and
# the morango extension installed.  Creates a scratch database (dropped at
# the end), the benchmark's two tables (one registered with morango), runs
# the insert and update pgbench workloads for about 2 s on each table, prints
# the figures and checks correctness only: every pgbench run exits 0 with no
# failed transactions, each insert run added exactly the rows pgbench counted,
# and after morango.serialize() the registered table has exactly one stamped
# store row per table row, equal to the row.  No timing assertions.
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/tools/lib.sh"

if [ -z "${MG_PORT:-}" ]; then
    echo "usage: MG_PORT=<port of a running test server> bash test/bench/smoke.sh" >&2
    exit 2
fi

DBNAME=morango_bench_smoke
ROWS=10000
SECS=2
conn="PGHOST=127.0.0.1 PGPORT=$MG_PORT PGUSER=postgres PGOPTIONS=-cclient_min_messages=warning"
scripts=$(mktemp -d /tmp/morango-bench-smoke.XXXXXX)
chmod 755 "$scripts"

sql() {
    MG_ENV="$conn PGDATABASE=${DB:-$DBNAME}" mg_as_user psql -X -q -v ON_ERROR_STOP=1 "$@"
}
sql_value() {
    sql -At -c "$1"
}

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

cleanup() {
    DB=postgres sql -c "DROP DATABASE IF EXISTS $DBNAME WITH (FORCE)" || true
    rm -rf "$scripts"
}
trap cleanup EXIT

DB=postgres sql -c "DROP DATABASE IF EXISTS $DBNAME WITH (FORCE)"
DB=postgres sql -c "CREATE DATABASE $DBNAME"
sql -v rows="$ROWS" -v profile=bench_smoke -f "$here/test/bench/trigger_schema.sql"

for t in plain reg; do
    for w in insert update; do
        sed "s/@TABLE@/bench_$t/g" "$here/test/bench/trigger_$w.sql.in" >"$scripts/${w}_$t.sql"
    done
done
chown -R "$MG_USER" "$scripts"

declare -A tps processed
for w in insert update; do
    for t in plain reg; do
        out="$scripts/pgbench_${w}_$t.log"
        rc=0
        MG_ENV="$conn PGDATABASE=$DBNAME" mg_as_user pgbench -n -f "$scripts/${w}_$t.sql" \
            -T "$SECS" -c 2 -j 2 -D rows="$ROWS" >"$out" 2>&1 || rc=$?
        [ $rc = 0 ] || { cat "$out" >&2; fail "pgbench $w on bench_$t exited $rc"; }
        failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
        [ -z "$failed" ] || [ "$failed" = 0 ] || { cat "$out" >&2; fail "pgbench $w on bench_$t: $failed failed transactions"; }
        n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
        [ -n "$n" ] && [ "$n" -gt 0 ] || { cat "$out" >&2; fail "pgbench $w on bench_$t processed no transactions"; }
        tps[${w}_$t]=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$out")
        processed[${w}_$t]=$n
    done
done

printf '%-9s %17s %15s %7s\n' workload unregistered_tps registered_tps ratio
for w in insert update; do
    printf '%-9s %17.1f %15.1f %7s\n' "$w" "${tps[${w}_plain]}" "${tps[${w}_reg]}" \
        "$(awk -v a="${tps[${w}_reg]}" -v b="${tps[${w}_plain]}" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')"
done
echo "(pgbench -n -T $SECS -c 2 -j 2, $ROWS pre-populated rows; figures from a smoke run, not a benchmark)"

# every insert transaction added exactly one row
for t in plain reg; do
    have=$(sql_value "SELECT count(*) FROM bench_$t")
    want=$((ROWS + ${processed[insert_$t]}))
    [ "$have" = "$want" ] || fail "bench_$t has $have rows, expected $ROWS + ${processed[insert_$t]} inserted = $want"
done

# after serialize: one stamped store row per registered row, equal to the row
stamped=$(sql_value "SELECT morango.serialize('bench_smoke')")
read -r table_rows store_rows matching pending <<<"$(sql_value "
    SELECT (SELECT count(*) FROM bench_reg),
           (SELECT count(*) FROM morango.store WHERE profile = 'bench_smoke' AND model_name = 'bench_reg'),
           (SELECT count(*) FROM morango.store s JOIN bench_reg t
              ON s.profile = 'bench_smoke' AND s.model_name = 'bench_reg' AND s.source_id = t.id::text
             AND s.serialized = to_jsonb(t) AND NOT s.deleted
             AND s.last_saved_counter IS NOT NULL),
           (SELECT count(*) FROM morango.changes)" |
    tr '|' ' ')"
echo "serialize stamped $stamped rows; bench_reg: $table_rows rows, store: $store_rows rows, $matching matching, $pending changes waiting"
[ "$store_rows" = "$table_rows" ] || fail "store holds $store_rows rows of bench_reg, table has $table_rows"
[ "$matching" = "$table_rows" ] || fail "only $matching of $table_rows rows of bench_reg match their stamped store row"
[ "$pending" = 0 ] || fail "$pending changes still waiting after serialize"
plain_store=$(sql_value "SELECT count(*) FROM morango.store WHERE model_name = 'bench_plain'")
[ "$plain_store" = 0 ] || fail "the unregistered table has $plain_store store rows"

echo "bench smoke: ok"
