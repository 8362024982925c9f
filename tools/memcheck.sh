#!/bin/bash
# tools/memcheck.sh: run the pg_regress suite and the isolation specs against
# a server under valgrind memcheck, as root; fail on any report whose own
# stack is in our code (src/*.c, morango.so).  About 31 minutes for the
# whole suite on 2 cores: not part of tools/test.sh or CI.  doc/testing.md
# says what this catches and what not.
#
#   bash tools/memcheck.sh        or: make memcheck
#
#   MEMCHECK_REGRESS="setup capture ..."   only these pg_regress files
#                          (setup first; default: the Makefile's REGRESS)
#   MEMCHECK_ISOLATION=0   skip the isolation specs
#   CI_KEEP=1              keep the work directory (logs, raw reports)
#
# The extension is built with -Og -g (exact lines in reports); initdb runs
# as usual, then the postmaster and every backend run under memcheck with
# --track-origins=yes and tools/valgrind.supp (PostgreSQL's own known
# reports only, each commented).
#
# The memcheck build is installed only inside a private mount namespace:
# the script re-runs itself through tools/isolated.sh (unshare(1), private
# copies bind-mounted over PostgreSQL's pkglibdir and extension directory),
# so the system's installation, and any other test run on this machine,
# never sees it.
#
# Ends with "memcheck: N passed, N failed" (regress, isolation, and the
# reports check) and exits non-zero on any report in our code or any
# failed regression test.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/tools/lib.sh"

if [ "$(id -u)" != 0 ]; then
    echo "tools/memcheck.sh must run as root (it installs packages, creates a test user and a mount namespace)" >&2
    exit 2
fi

# --- a private mount namespace for the instrumented install ----------------
if [ "${1:-}" != --isolated ]; then
    exec bash "$here/tools/isolated.sh" bash "$0" --isolated "$@"
fi
shift

MG_PACKAGES="$MG_PACKAGES valgrind"
mg_install_packages
mg_ensure_user

started=$(date +%s)
pkglibdir=$(pg_config --pkglibdir)
extdir=$(pg_config --sharedir)/extension
priv=$(mktemp -d /tmp/morango-memcheck.XXXXXX)
chmod 755 "$priv"
work=
data=

cleanup() {
    mg_cluster_stop_all
    if [ -n "$work" ]; then
        if [ "${CI_KEEP:-0}" = 1 ]; then
            echo "work directory kept: $work" >&2
        else
            rm -rf "$work"
        fi
    fi
    rm -rf "$priv"
}
trap cleanup EXIT

mg_log "private install dirs $pkglibdir and $extdir (tools/isolated.sh: this namespace only)"

passed=0
failed=0

# count "... ok" / "... FAILED" lines of pg_regress and pg_isolation_regress
count_regress() {
    local p f
    p=$(grep -cE '\.\.\. ok|^ok [0-9]+' "$1")
    f=$(grep -cE '\.\.\. FAILED|\.\.\. failed|^not ok [0-9]+' "$1")
    echo "$p $f"
}

# run_suite NAME MAKE-ARGS...: make installcheck as MG_USER; 0 when clean
run_suite() {
    local name=$1; shift
    local out="$work/suite-$name.log" rc t0 diffs
    mg_log "suite $name under valgrind"
    t0=$(date +%s)
    # EXISTING_SERVER=1: against this server, not a temporary instance
    (cd "$work" && MG_ENV="PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres" \
        mg_as_user make -s installcheck EXISTING_SERVER=1 "$@") >"$out" 2>&1
    rc=$?
    cat "$out"
    set -- $(count_regress "$out")
    mg_log "suite $name: $1 ok, $2 failed, $(( $(date +%s) - t0 )) s"
    if [ $rc != 0 ] || [ "$2" != 0 ] || [ "$1" = 0 ]; then
        for diffs in "$work/regression.diffs" "$work/output_iso/regression.diffs"; do
            [ -f "$diffs" ] && cat "$diffs"
        done
        return 1
    fi
    return 0
}

mg_log "building the extension (-Og -g)"
# PGXS appends COPT to CFLAGS: -Og after Debian's -O2 wins
export COPT="-Og -g"
work=$(mg_prepare_tree "$here") || { echo "memcheck: build failed"; echo "memcheck: 0 passed, 1 failed"; exit 1; }
unset COPT
data="$work/tmp_check_server"
port=$(mg_free_port $(( ${MG_PORT_BASE:-55410} + 890 )))

conf="$priv/memcheck.conf"
{
    cat "$here/test/regress.conf"
    # no LLVM JIT under valgrind: slow, and none of our code
    echo "jit = off"
} >"$conf"

# initdb and the configuration as usual, then the server again under
# valgrind (mg_cluster_start starts it with pg_ctl, which cannot put a
# wrapper in front of postgres)
mg_cluster_start "$data" "$port" "$conf" || { echo "memcheck: 0 passed, 1 failed"; exit 1; }
mg_as_user pg_ctl -D "$data" -m fast -w -t 60 stop >/dev/null
mg_log "starting the server under valgrind on port $port"
mg_as_user sh -c "exec valgrind --tool=memcheck --quiet --trace-children=no \
    --error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END \
    --suppressions='$work/tools/valgrind.supp' --gen-suppressions=all \
    --track-origins=yes --num-callers=30 --read-var-info=no --leak-check=no \
    --fullpath-after='$work/' \
    --log-file='$data/valgrind.%p.log' \
    postgres -D '$data' >>'$data/server.log' 2>&1 </dev/null" &
up=0
for _ in $(seq 1 240); do
    if mg_as_user pg_isready -q -h 127.0.0.1 -p "$port"; then up=1; break; fi
    sleep 0.5
done
if [ $up != 1 ]; then
    echo "the server under valgrind did not start; its log:" >&2
    tail -n 20 "$data/server.log" >&2
    echo "memcheck: 0 passed, 1 failed"
    exit 1
fi

regress_clean=1
regress_args=(ISOLATION= TAP_TESTS=)
[ -n "${MEMCHECK_REGRESS:-}" ] && regress_args+=("REGRESS=$MEMCHECK_REGRESS")
if run_suite regress "${regress_args[@]}"; then
    passed=$((passed + 1))
else
    failed=$((failed + 1)); regress_clean=0
fi
if [ "${MEMCHECK_ISOLATION:-1}" = 1 ]; then
    if run_suite isolation REGRESS= TAP_TESTS=; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1)); regress_clean=0
    fi
fi

# stop the server: every process has written its reports when it is down
mg_log "stopping the server"
mg_as_user pg_ctl -D "$data" -m fast -w -t 120 stop >/dev/null 2>&1 ||
    mg_as_user pg_ctl -D "$data" -m immediate -w stop >/dev/null 2>&1 || true

# the reports, one block each (between the error markers), blank-line
# separated; a report is morango's when a frame of it is in morango.so
reports="$work/valgrind-reports.txt"
for f in "$data"/valgrind.*.log; do
    [ -f "$f" ] || continue
    # the report, then the suppression valgrind wrote for it ({ ... })
    awk -v file="$(basename "$f")" '
        /VALGRINDERROR-BEGIN/ { inblk = 1; blk = "# " file; next }
        /VALGRINDERROR-END/ { inblk = 0; after = 1; next }
        inblk { blk = blk "\n" $0; next }
        after && /^[{]/ { insupp = 1 }
        insupp { blk = blk "\n" $0; if (/^[}]/) { insupp = 0; after = 0; print blk "\n" }; next }
        after && !/^==/ { after = 0; print blk "\n" }
        END { if (after) print blk "\n" }' "$f"
done >"$reports"
# Ours: a frame of the error's own stack (the "at"/"by" lines right after its
# first line) is in our sources (src/*.c, shown as "(src/x.c:N)" thanks to
# --fullpath-after) or in morango.so.  Our code only in the stack that
# allocated or freed the block, or created the uninitialized value, is
# printed apart and does not fail the run: without USE_VALGRIND that stack is
# the malloc of the memory context block, whoever pallocs in it later.
classify='
    function ours(line) { return line ~ /\(src\/[A-Za-z0-9_]+\.c:[0-9]+\)|morango\.so/ }
    BEGIN { RS = ""; ORS = "\n\n" }
    {
        n = split($0, l, "\n"); err = 0; any = 0; instack = 1
        for (i = 3; i <= n; i++) {
            if (instack && l[i] !~ /^==[0-9]+== +(at|by) /) instack = 0
            if (ours(l[i])) { any = 1; if (instack) err = 1 }
        }
        kind = err ? "ours" : (any ? "origin" : "other")
        if (want == "") count[kind]++
        else if (want == kind) print
    }
    END { if (want == "") print count["ours"] + 0, count["origin"] + 0, count["other"] + 0 }'
set -- $(awk -v want= "$classify" "$reports")
in_morango=$1 origin=$2 other=$3
if [ "$in_morango" != 0 ]; then
    echo "---- $in_morango valgrind report(s) in morango's code:"
    awk -v want=ours "$classify" "$reports"
fi
if [ "$origin" != 0 ]; then
    echo "---- $origin valgrind report(s) in PostgreSQL's code on memory first allocated under morango's code (look, but most are PostgreSQL's own):"
    awk -v want=origin "$classify" "$reports"
fi
if [ "$other" != 0 ]; then
    echo "---- $other valgrind report(s) elsewhere (PostgreSQL's own? then a commented entry in tools/valgrind.supp):"
    awk -v want=other "$classify" "$reports"
fi
# what valgrind said besides its reports: a process it saw die, its own failures
said=$(cat "$data"/valgrind.*.log 2>/dev/null |
    awk '/VALGRINDERROR-BEGIN/ { e = 1 } /^[{]/ { e = 1 } !e { print } /VALGRINDERROR-END|^[}]/ { e = 0 }' |
    sed -E 's/^==[0-9]+== ?//' | grep -v '^[[:space:]]*$' | sort | uniq -c | sort -rn)
checker_ok=1
if [ -n "$said" ]; then
    echo "---- valgrind said besides its reports (count, line):"
    echo "$said" | head -n 40
    if echo "$said" | grep -qE "Process terminating|impossible happened|out of memory|unhandled instruction"; then
        checker_ok=0
    fi
fi
if [ "$in_morango" = 0 ] && [ $checker_ok = 1 ]; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
fi
if [ $failed != 0 ]; then
    echo "---- server log tail" >&2
    tail -n 40 "$data/server.log" >&2
fi

echo "memcheck: valgrind, $in_morango report(s) in morango's code, $((origin + other)) elsewhere, regression $([ $regress_clean = 1 ] && echo clean || echo 'NOT clean'), $(( $(date +%s) - started )) s"
echo "memcheck: $passed passed, $failed failed"
[ $failed = 0 ] && [ $passed -gt 0 ]
