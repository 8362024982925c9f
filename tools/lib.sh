# tools/lib.sh: shell helpers shared by tools/test.sh, tools/demo.sh and the
# benchmarks.  Source it; every function is prefixed mg_.
#
# PostgreSQL refuses to run as root, so the scripts run servers as an
# unprivileged system user (MG_USER) in a throwaway directory, on a free
# loopback port, and stop them on exit.

MG_PACKAGES="postgresql-15 postgresql-server-dev-15 postgresql-15-cron libjson-c-dev libpq-dev libssl-dev zlib1g-dev libipc-run-perl openssl pkg-config make gcc"
MG_USER=${MG_USER:-morango_ci}
MG_PGBIN=/usr/lib/postgresql/15/bin
MG_CLUSTERS=()

mg_log() { echo "== $*" >&2; }

# Install the Debian packages that are missing (needs root).
mg_install_packages() {
    local missing=() p
    for p in $MG_PACKAGES; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        mg_log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" >/dev/null
    fi
}

# Create the unprivileged user that owns the test servers.
mg_ensure_user() {
    id "$MG_USER" >/dev/null 2>&1 ||
        useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin "$MG_USER"
}

# Run a command as MG_USER with a clean environment.
mg_as_user() {
    runuser -u "$MG_USER" -- env -i PATH="$MG_PGBIN:/usr/local/bin:/usr/bin:/bin" \
        HOME=/tmp LANG=C.UTF-8 ${MG_ENV:-} "$@"
}

# Print the first free TCP port on 127.0.0.1 at or above $1.
mg_free_port() {
    local port=${1:-55410}
    while (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do
        port=$((port + 1))
    done
    echo "$port"
}

# Copy the source tree (without .git) into a fresh work dir owned by
# MG_USER; build and install the extension as root (mg_build).  Prints the
# work dir; fails when the build does.
mg_prepare_tree() {
    local src=$1 work
    work=$(mktemp -d /tmp/morango.XXXXXX)
    chmod 755 "$work"
    tar -C "$src" --exclude=.git --exclude='tmp_check*' --exclude=results --exclude='suite-*.log' -cf - . | tar -C "$work" -xf -
    mg_build "$work" || { rm -rf "$work"; return 1; }
    echo "$work"
}

# mg_build DIR: build the extension in DIR from clean and install it, as
# root, with the compiler flags in COPT (PGXS appends them to CFLAGS:
# COPT=-Werror, COPT="-Og -g", ...); DIR is then owned by MG_USER.
mg_build() {
    local dir=$1
    make -C "$dir" -s clean >/dev/null 2>&1 || true
    make -C "$dir" -s >&2 && make -C "$dir" -s install >&2 || return 1
    chown -R "$MG_USER" "$dir"
}

# mg_cluster_start DATADIR PORT [CONF_SNIPPET]: initdb and start a server on
# 127.0.0.1:PORT, sockets in DATADIR.  Remembered for mg_cluster_stop_all.
mg_cluster_start() {
    local data=$1 port=$2 conf=${3:-}
    mg_as_user initdb -D "$data" -U postgres -A trust -E UTF8 --no-locale --no-sync >/dev/null
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$data'"
        echo "fsync = off"
        [ -n "$conf" ] && cat "$conf"
    } >>"$data/postgresql.conf"
    if ! mg_as_user pg_ctl -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null; then
        # say why (a port taken meanwhile, shared memory ...), then give up
        echo "could not start the cluster in $data on port $port; its log:" >&2
        tail -n 20 "$data/server.log" >&2 || true
        return 1
    fi
    MG_CLUSTERS+=("$data")
}

mg_cluster_stop_all() {
    local d
    for d in "${MG_CLUSTERS[@]}"; do
        [ -f "$d/postmaster.pid" ] || continue
        mg_as_user pg_ctl -D "$d" -m fast -w -t 30 stop >/dev/null 2>&1 ||
            mg_as_user pg_ctl -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
    done
}
