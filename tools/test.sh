#!/bin/bash
# tools/test.sh: run morango's whole test suite on this machine, as root.
#
#   bash tools/test.sh
#
# Installs the Debian packages it needs, builds the extension twice with
# -Werror (once with assertions, -DUSE_ASSERT_CHECKING), runs pg_regress
# (sql/) and the isolation specs (test/isolation/) with the assertion build
# installed, each in a temporary instance of its own (the Makefile's
# installcheck), then installs the ordinary build and runs the TAP tests
# (test/t/, clusters of their own), the benchmark smoke runs (test/bench/,
# on a throwaway cluster) and a quick valgrind memory check
# (tools/memcheck.sh; MORANGO_MEMCHECK=full for the whole regression suite,
# =0 for none), all as an unprivileged user; stops everything, and ends
# with the line "N passed, N failed".  doc/testing.md says why so.
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

only=${MORANGO_ONLY:-regress isolation tap bench memcheck}
wants() { case " $only " in *" $1 "*) return 0 ;; esac; return 1; }

port_base=${MG_PORT_BASE:-55410}
cleanup() {
    mg_cluster_stop_all
    if [ "${CI_KEEP:-0}" = 1 ]; then
        echo "work directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
}

mg_install_packages
mg_ensure_user
# Every file compiles without a warning (-Werror), with assertions too; the
# assertion build is the one pg_regress and the isolation specs run with,
# the ordinary one (rebuilt below) the one the rest runs with.
build=-Werror
{ wants regress || wants isolation; } && build="-Werror -DUSE_ASSERT_CHECKING"
mg_log "building with $build"
work=$(COPT=$build mg_prepare_tree "$here") || { echo "build failed ($build)"; echo "0 passed, 1 failed"; exit 1; }
trap cleanup EXIT
passed=0
failed=0
log="$work/test-output.log"

# count_regress LOG RC: count the "... ok" / "... FAILED" lines of
# pg_regress and pg_isolation_regress; a run that failed without a failed
# test (the temporary instance did not start, ...) or reported no test at
# all is one failure more
count_regress() {
    local p f
    p=$(grep -cE '\.\.\. ok|^ok [0-9]+' "$1")
    f=$(grep -cE '\.\.\. FAILED|\.\.\. failed|^not ok [0-9]+' "$1")
    if { [ "$2" != 0 ] && [ "$f" = 0 ]; } || [ $((p + f)) = 0 ]; then
        echo "$(basename "$1"): exit code $2, $p passed, $f failed"
        f=$((f + 1))
    fi
    passed=$((passed + p))
    failed=$((failed + f))
}

# run_suite NAME MAKE-ARGS...: make installcheck as MG_USER (pg_regress and
# the isolation tester in a temporary instance on a free port from
# MG_PORT_BASE + 100, the TAP tests in clusters of their own)
run_suite() {
    local name=$1; shift
    local out="$work/suite-$name.log"
    mg_log "suite $name ($build)"
    # the TAP tests' own knobs (MORANGO_SEEDS, MORANGO_STEPS, ...) go through
    local knobs
    knobs=$(env | grep -E '^MORANGO_(SEEDS|STEPS|KEEP_DIR)=' | tr '\n' ' ')
    (cd "$work" && MG_ENV="$knobs" \
        mg_as_user make -s installcheck TEST_PORT="$(mg_free_port $((port_base + 100)))" "$@") >"$out" 2>&1
    local rc=$?
    cat "$out"
    echo "$out" >>"$log"
    return $rc
}

regress_args=()
[ -n "${MORANGO_REGRESS:-}" ] && regress_args=("REGRESS=$MORANGO_REGRESS")
tap_args=()
[ -n "${MORANGO_TAP:-}" ] && tap_args=("PROVE_TESTS=$MORANGO_TAP")

rc_regress=0
wants regress && { run_suite regress ISOLATION= TAP_TESTS= "${regress_args[@]}"; rc_regress=$?; }
wants regress && count_regress "$work/suite-regress.log" $rc_regress
if [ $rc_regress != 0 ]; then
    [ -f "$work/regression.diffs" ] && cat "$work/regression.diffs"
    [ -f "$work/log/postmaster.log" ] && { echo "---- server log tail (pg_regress)"; tail -n 40 "$work/log/postmaster.log" | cut -c1-400; }
fi

rc_iso=0
wants isolation && { run_suite isolation REGRESS= TAP_TESTS=; rc_iso=$?; count_regress "$work/suite-isolation.log" $rc_iso; }
if [ $rc_iso != 0 ]; then
    [ -f "$work/output_iso/regression.diffs" ] && cat "$work/output_iso/regression.diffs"
    [ -f "$work/output_iso/log/postmaster.log" ] && { echo "---- server log tail (isolation)"; tail -n 40 "$work/output_iso/log/postmaster.log" | cut -c1-400; }
fi

# the rest runs with the ordinary build (what users install)
if [ "$build" != -Werror ] && { wants tap || wants bench; }; then
    build=-Werror
    mg_log "building with $build"
    if ! COPT=$build mg_build "$work"; then
        echo "build failed ($build)"
        echo "$passed passed, $((failed + 1)) failed"
        exit 1
    fi
fi

if wants tap && ls "$work"/test/t/*.pl >/dev/null 2>&1; then
    run_suite tap REGRESS= ISOLATION= "${tap_args[@]}"
    rc_tap=$?
    # prove prints "test/t/x.pl .. ok" for each file that passed; every
    # other file given failed (or did not run: prove missing, a bail-out)
    p=$(grep -cE '^test/t/\S+ \.+ ok' "$work/suite-tap.log")
    want=$(cd "$work" && ls ${MORANGO_TAP:-test/t/*.pl} | wc -l)
    f=$((want - p))
    [ $f -lt 0 ] && f=0
    [ $rc_tap != 0 ] && [ $f = 0 ] && f=1
    [ $f != 0 ] && echo "TAP: $p of $want files passed, exit code $rc_tap"
    passed=$((passed + p)); failed=$((failed + f))
    if [ $rc_tap != 0 ]; then
        for l in "$work"/tmp_check/log/regress_log_*; do
            [ -f "$l" ] && { echo "---- $l"; tail -n 60 "$l"; }
        done
    fi
fi

# test/bench/smoke.sh needs a running server: a throwaway cluster
if wants bench && [ -x "$work/test/bench/smoke.sh" ]; then
    port=$(mg_free_port "$port_base")
    data="$work/tmp_check_server"
    mg_log "benchmark smoke run (cluster on port $port)"
    if mg_cluster_start "$data" "$port" "$work/test/regress.conf" &&
        (cd "$work" && MG_PORT=$port bash test/bench/smoke.sh) >"$work/suite-bench.log" 2>&1; then
        passed=$((passed + 1)); cat "$work/suite-bench.log"
    else
        failed=$((failed + 1)); cat "$work/suite-bench.log" 2>/dev/null
        echo "---- server log tail (benchmark smoke run)"
        tail -n 40 "$data/server.log" 2>/dev/null | cut -c1-400
    fi
    mg_cluster_stop_all
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

echo "$passed passed, $failed failed"
[ $failed = 0 ] && [ $passed -gt 0 ]
