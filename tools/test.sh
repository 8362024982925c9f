#!/bin/bash
# tools/test.sh: run morango's whole test suite on this machine, as root.
#
#   bash tools/test.sh
#
# Installs the Debian packages it needs, builds and installs the extension,
# starts a throwaway cluster as an unprivileged user on a free loopback port,
# runs pg_regress (sql/), the isolation specs (test/isolation/), the TAP
# tests (test/t/), the benchmark smoke run (test/bench/) and a quick
# valgrind memory check (tools/memcheck.sh; MORANGO_MEMCHECK=full for the
# whole regression suite, =0 for none), stops everything, and ends with the
# line "N passed, N failed".
#
# CI_KEEP=1 keeps the work directory.  For development (CI sets none of
# these): MORANGO_ONLY="regress isolation tap bench memcheck" runs only
# those parts, MORANGO_REGRESS="setup sync" only those pg_regress files,
# MORANGO_TAP="test/t/003_sync.pl" only those TAP files; MG_PORT_BASE moves
# the ports (tools/isolated.sh runs two suites at once).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/tools/lib.sh"

if [ "$(id -u)" != 0 ]; then
    echo "tools/test.sh must run as root (it installs packages and creates a test user)" >&2
    exit 2
fi

mg_install_packages
mg_ensure_user
work=$(mg_prepare_tree "$here") || exit 1
port=$(mg_free_port "${MG_PORT_BASE:-55410}")
data="$work/tmp_check_server"

cleanup() {
    mg_cluster_stop_all
    if [ "${CI_KEEP:-0}" = 1 ]; then
        echo "work directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

mg_cluster_start "$data" "$port" "$work/test/regress.conf"

passed=0
failed=0
log="$work/test-output.log"

# count "... ok" / "... FAILED" lines of pg_regress and pg_isolation_regress
count_regress() {
    local p f
    p=$(grep -cE '\.\.\. ok|^ok [0-9]+' "$1")
    f=$(grep -cE '\.\.\. FAILED|\.\.\. failed|^not ok [0-9]+' "$1")
    passed=$((passed + p))
    failed=$((failed + f))
}

run_suite() {
    local name=$1; shift
    local out="$work/suite-$name.log"
    mg_log "suite $name"
    # the TAP tests' own knobs (MORANGO_SEEDS, MORANGO_STEPS, ...) go through
    local knobs
    knobs=$(env | grep -E '^MORANGO_(SEEDS|STEPS|KEEP_DIR)=' | tr '\n' ' ')
    (cd "$work" && MG_ENV="PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres MORANGO_TEST_PORT_BASE=$((port + 10)) $knobs" \
        mg_as_user make -s installcheck "$@") >"$out" 2>&1
    local rc=$?
    cat "$out"
    echo "$out" >>"$log"
    return $rc
}

only=${MORANGO_ONLY:-regress isolation tap bench memcheck}
wants() { case " $only " in *" $1 "*) return 0 ;; esac; return 1; }
regress_args=()
[ -n "${MORANGO_REGRESS:-}" ] && regress_args=("REGRESS=$MORANGO_REGRESS")
tap_args=()
[ -n "${MORANGO_TAP:-}" ] && tap_args=("PROVE_TESTS=$MORANGO_TAP")

rc_regress=0
wants regress && { run_suite regress ISOLATION= TAP_TESTS= "${regress_args[@]}"; rc_regress=$?; }
wants regress && count_regress "$work/suite-regress.log"
[ $rc_regress != 0 ] && [ -f "$work/regression.diffs" ] && cat "$work/regression.diffs"

rc_iso=0
wants isolation && { run_suite isolation REGRESS= TAP_TESTS=; rc_iso=$?; count_regress "$work/suite-isolation.log"; }
[ $rc_iso != 0 ] && [ -f "$work/output_iso/regression.diffs" ] && cat "$work/output_iso/regression.diffs"

if wants tap && ls "$work"/test/t/*.pl >/dev/null 2>&1; then
    run_suite tap REGRESS= ISOLATION= "${tap_args[@]}"
    rc_tap=$?
    # prove prints one line per file: "test/t/x.pl .. ok" or "... Failed n/m subtests"
    p=$(grep -cE '^test/t/\S+ \.+ ok' "$work/suite-tap.log")
    f=$(grep -cE '^test/t/\S+ \.+ (Failed|Dubious|skipped: .*)' "$work/suite-tap.log")
    passed=$((passed + p)); failed=$((failed + f))
    if [ $rc_tap != 0 ] && [ "$f" = 0 ]; then failed=$((failed + 1)); fi
    if [ $rc_tap != 0 ]; then
        for l in "$work"/tmp_check/log/regress_log_*; do
            [ -f "$l" ] && { echo "---- $l"; tail -n 60 "$l"; }
        done
    fi
fi

if wants bench && [ -x "$work/test/bench/smoke.sh" ]; then
    mg_log "benchmark smoke run"
    if (cd "$work" && MG_PORT=$port bash test/bench/smoke.sh) >"$work/suite-bench.log" 2>&1; then
        passed=$((passed + 1)); cat "$work/suite-bench.log"
    else
        failed=$((failed + 1)); cat "$work/suite-bench.log"
    fi
fi

if wants bench && [ -f "$work/test/bench/sync_bench.sh" ]; then
    mg_log "sync benchmark smoke run (N=1000, one run; correctness only, no timing assertions)"
    if (cd "$work" && BENCH_NS=1000 BENCH_RUNS=1 bash test/bench/sync_bench.sh) >"$work/suite-syncbench.log" 2>&1; then
        passed=$((passed + 1)); tail -n 20 "$work/suite-syncbench.log"
    else
        failed=$((failed + 1)); tail -n 40 "$work/suite-syncbench.log"
    fi
fi

# Memory check (doc/testing.md): by default a quick valgrind run of part of
# the regression suite and the isolation specs (about 3 minutes);
# MORANGO_MEMCHECK=full runs the whole regression suite under valgrind (about
# 30 minutes), MORANGO_MEMCHECK=0 none.
memcheck=${MORANGO_MEMCHECK:-quick}
wants memcheck || memcheck=0
if [ "$memcheck" != 0 ]; then
    if ! unshare --mount --propagation private true 2>/dev/null; then
        mg_log "memcheck skipped: this machine does not allow mount namespaces (unshare)"
    else
        mg_log "memcheck ($memcheck)"
        quick="setup idrule identity register capture serialize deserialize edges hostile"
        [ "$memcheck" = full ] && quick=
        if MEMCHECK_REGRESS="$quick" bash "$here/tools/memcheck.sh" >"$work/suite-memcheck.log" 2>&1; then
            passed=$((passed + 1)); tail -n 2 "$work/suite-memcheck.log"
        else
            failed=$((failed + 1)); tail -n 80 "$work/suite-memcheck.log"
        fi
    fi
fi

if [ $failed != 0 ]; then
    echo "---- server log tail" >&2
    tail -n 40 "$data/server.log" >&2
fi
echo "$passed passed, $failed failed"
[ $failed = 0 ] && [ $passed -gt 0 ]
