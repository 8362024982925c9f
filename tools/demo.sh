#!/bin/bash
# tools/demo.sh: the main job at this stage, as root on a fresh machine:
#
#   bash tools/demo.sh
#
# Installs the Debian packages it needs, builds and installs morango, starts
# a throwaway PostgreSQL cluster as an unprivileged user on a free loopback
# port, registers a small school-like schema (tools/demo.sql) and shows rows
# landing in the store, being stamped with versions, and coming back from
# the store into the tables.  Stops and removes everything at the end.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/tools/lib.sh"
[ "$(id -u)" = 0 ] || { echo "tools/demo.sh must run as root" >&2; exit 2; }

mg_install_packages
mg_ensure_user
work=$(mg_prepare_tree "$here")
trap 'mg_cluster_stop_all; rm -rf "$work"' EXIT
port=$(mg_free_port 55450)
mg_cluster_start "$work/demo_data" "$port"
mg_as_user psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c "CREATE DATABASE school" >/dev/null
mg_as_user psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d school -f "$work/tools/demo.sql"
