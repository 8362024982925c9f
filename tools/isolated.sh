#!/bin/bash
# tools/isolated.sh: run a command (as root) with a private copy of
# PostgreSQL's extension directories, so that its `make install` is seen by
# nothing else on the machine: for developers running the suite of two
# branches at once.
#
#   MG_PORT_BASE=57000 bash tools/isolated.sh bash tools/test.sh
#
# The command runs in a private mount namespace (unshare(1)) in which
# pkglibdir and the extension directory are bind-mounted private copies,
# removed at the end.  Give each concurrent run its own MG_PORT_BASE.
# tools/memcheck.sh runs itself through this script.
set -u
if [ "$(id -u)" != 0 ]; then
    echo "tools/isolated.sh must run as root" >&2
    exit 2
fi
# a fresh namespace on every call (a nested call gets its own copies)
if [ "${1:-}" != --in-namespace ]; then
    # packages first, outside the namespace: installed inside it, their
    # files in pkglibdir would land in the private copy and vanish with it
    # (while dpkg records them as installed)
    . "$(dirname "$0")/lib.sh"
    mg_install_packages
    exec unshare --mount --propagation private bash "$0" --in-namespace "$@"
fi
shift
pkglibdir=$(pg_config --pkglibdir)
extdir=$(pg_config --sharedir)/extension
priv=$(mktemp -d /tmp/morango-isolated.XXXXXX)
chmod 755 "$priv"
trap 'umount "$pkglibdir" "$extdir" 2>/dev/null; rm -rf "$priv"' EXIT
n=0
for d in "$pkglibdir" "$extdir"; do
    n=$((n + 1))
    mkdir "$priv/$n"
    cp -a "$d/." "$priv/$n/"
    touch "$priv/$n/.morango-isolated-private"
    mount --bind "$priv/$n" "$d" || { echo "could not bind-mount a private copy over $d" >&2; exit 1; }
    [ -e "$d/.morango-isolated-private" ] || { echo "$d is not the private copy" >&2; exit 1; }
done
"$@"
