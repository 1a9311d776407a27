# shellcheck shell=bash
#
# scripts/lib.sh: functions shared by scripts/dev and scripts/test.
#
# Sourced, never run. It starts private, throwaway Postgres and Redis servers on loopback
# for local development and for the test suite, so neither needs a system service.
#
# Conventions:
#   - every function returns non-zero (or exits, for unrecoverable setup problems) with a
#     message on stderr that says what to do about it;
#   - servers are started in their own session (setsid) so that a Ctrl-C in the terminal reaches
#     only the calling script, whose trap then stops things in order (the Herald processes first,
#     while Redis and Postgres are still up, then Redis and Postgres);
#   - Postgres refuses to run as root, so when we are root, initdb/pg_ctl run as the `postgres`
#     OS user on directories chowned to it.

# Guard against being sourced twice.
if [[ -n "${HERALD_LIB_SOURCED:-}" ]]; then
    return 0
fi
HERALD_LIB_SOURCED=1

# ----------------------------------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------------------------------

# A short progress line: "==> starting postgres on 127.0.0.1:5432".
log() {
    printf '==> %s\n' "$*" >&2
}

warn() {
    printf 'warning: %s\n' "$*" >&2
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Print the last lines of a log file (to stderr), to explain a server that would not start.
show_log_tail() {
    local file=$1 lines=${2:-30}
    if [[ -r "$file" ]]; then
        printf -- '--- last %s lines of %s ---\n' "$lines" "$file" >&2
        tail -n "$lines" -- "$file" >&2 || true
        printf -- '--- end of %s ---\n' "$file" >&2
    fi
}

# ----------------------------------------------------------------------------------------------
# Privileges
# ----------------------------------------------------------------------------------------------

is_root() {
    [[ "$(id -u)" -eq 0 ]]
}

# Run a command as the `postgres` OS user when we are root (Postgres refuses to run as root),
# otherwise as ourselves. Runs from / so that a current directory the postgres user cannot
# enter (e.g. /root) does not produce warnings; callers pass absolute paths.
as_pg_user() {
    if is_root; then
        if command -v runuser >/dev/null 2>&1; then
            (cd / && runuser -u postgres -- "$@")
        else
            local cmd
            cmd=$(printf '%q ' "$@")
            (cd / && su -s /bin/sh postgres -c "$cmd")
        fi
    else
        "$@"
    fi
}

# When root, make sure the `postgres` OS user exists (the Debian package creates it; a machine
# with hand-installed binaries may not have it).
ensure_pg_os_user() {
    is_root || return 0
    if ! id postgres >/dev/null 2>&1; then
        log "creating the postgres OS user (Postgres refuses to run as root)"
        useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
}

# ----------------------------------------------------------------------------------------------
# Packages
# ----------------------------------------------------------------------------------------------

# Find the directory holding initdb and pg_ctl, and print it. Tries, in order:
#   $HERALD_PG_BINDIR, `pg_config --bindir`, the highest /usr/lib/postgresql/*/bin (Debian keeps
#   the server binaries there, off PATH), then initdb on PATH.
pg_bindir() {
    local dir candidate
    local -a candidates=()

    if [[ -n "${HERALD_PG_BINDIR:-}" ]]; then
        candidates+=("$HERALD_PG_BINDIR")
    fi
    if command -v pg_config >/dev/null 2>&1; then
        # pg_config may come from libpq-dev alone, so its bindir is checked like any other.
        dir=$(pg_config --bindir 2>/dev/null || true)
        [[ -n "$dir" ]] && candidates+=("$dir")
    fi
    # Highest version first: sort the version directories numerically, descending.
    while IFS= read -r candidate; do
        candidates+=("$candidate")
    done < <(
        for candidate in /usr/lib/postgresql/*/bin; do
            [[ -d "$candidate" ]] && printf '%s\n' "$candidate"
        done | sort -V -r
    )
    if command -v initdb >/dev/null 2>&1; then
        candidates+=("$(dirname -- "$(command -v initdb)")")
    fi

    for candidate in "${candidates[@]}"; do
        if [[ -x "$candidate/initdb" && -x "$candidate/pg_ctl" ]]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

# The first of the given commands found in the Postgres bin dir or on PATH, printed as a path.
pg_tool() {
    local name=$1 dir
    if dir=$(pg_bindir) && [[ -x "$dir/$name" ]]; then
        printf '%s\n' "$dir/$name"
    elif command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
    else
        return 1
    fi
}

# Can we (or may we) run apt-get as root? Prints the prefix to use ("" or "sudo -n").
apt_prefix() {
    command -v apt-get >/dev/null 2>&1 || return 1
    if is_root; then
        printf '%s\n' ""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        printf '%s\n' "sudo -n"
    else
        return 1
    fi
}

# ensure_browser
#
# Make sure Debian's Chromium and ChromeDriver are installed (the dashboard's browser test drives
# them headless), installing them like ensure_packages does.
ensure_browser() {
    if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
        return 0
    fi
    local prefix
    if prefix=$(apt_prefix); then
        log "installing chromium and chromium-driver (for the dashboard's browser test)"
        # shellcheck disable=SC2086 # $prefix is empty or "sudo -n", split on purpose.
        $prefix env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        # shellcheck disable=SC2086
        $prefix env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
    else
        printf 'error: missing chromium/chromedriver; install them (as root) with:\n' >&2
        printf "    sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver\n" >&2
        exit 1
    fi
    command -v chromedriver >/dev/null 2>&1 || die "chromium-driver was installed but chromedriver is not on PATH"
}

# ensure_packages [postgres] [redis] [promtool]
#
# Make sure the servers we are about to start are installed (postgres and redis when no
# argument is given), and promtool when asked for (the suite checks and unit-tests the alert
# rules in docker/prometheus with it).
# Installs Debian's packages when we are root (or have passwordless sudo) and apt-get exists;
# otherwise prints the exact command to run and exits non-zero.
ensure_packages() {
    local want_pg=0 want_redis=0 want_promtool=0 what prefix
    if [[ $# -eq 0 ]]; then
        want_pg=1
        want_redis=1
    fi
    for what in "$@"; do
        case "$what" in
            postgres) want_pg=1 ;;
            redis) want_redis=1 ;;
            promtool) want_promtool=1 ;;
            *) die "ensure_packages: unknown package group '$what'" ;;
        esac
    done

    local -a missing=()
    if ((want_pg)) && ! pg_bindir >/dev/null; then
        missing+=(postgresql)
    fi
    if ((want_redis)) && ! command -v redis-server >/dev/null 2>&1; then
        missing+=(redis-server)
    fi
    # The clients come with the servers' packages; check them too, they are what we talk with.
    if ((want_pg)) && ! pg_tool psql >/dev/null; then
        [[ " ${missing[*]} " == *" postgresql "* ]] || missing+=(postgresql)
    fi
    if ((want_redis)) && ! command -v redis-cli >/dev/null 2>&1; then
        [[ " ${missing[*]} " == *" redis-server "* ]] || missing+=(redis-server)
    fi

    if [[ ${#missing[@]} -gt 0 ]]; then
        # Install both whenever one is missing: it is one apt run, and the message stays simple.
        local install="apt-get update -qq && apt-get install -y -qq redis-server postgresql"
        if prefix=$(apt_prefix); then
            log "installing redis-server and postgresql (missing: ${missing[*]})"
            # shellcheck disable=SC2086 # $prefix is empty or "sudo -n", split on purpose.
            $prefix env DEBIAN_FRONTEND=noninteractive apt-get update -qq
            # shellcheck disable=SC2086
            $prefix env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server postgresql
        else
            printf 'error: missing %s; install them (as root) with:\n' "${missing[*]}" >&2
            printf "    sudo env DEBIAN_FRONTEND=noninteractive sh -c '%s'\n" "$install" >&2
            exit 1
        fi
        if ((want_pg)) && ! pg_bindir >/dev/null; then
            die "postgresql was installed but initdb/pg_ctl were not found (set HERALD_PG_BINDIR)"
        fi
        if ((want_redis)) && ! command -v redis-server >/dev/null 2>&1; then
            die "redis-server was installed but is not on PATH"
        fi
    fi
    if ((want_promtool)) && ! command -v promtool >/dev/null 2>&1; then
        install_promtool
    fi
    if ((want_pg)); then
        ensure_pg_os_user
    fi
}

# install_promtool
#
# Install Debian's `prometheus` package for its /usr/bin/promtool; the server it also brings is
# not wanted, and must not be left listening on :9090. So: no recommends (they add
# node-exporter, another service), and a policy-rc.d that refuses every service start for the
# length of the install (Debian's way; only when the machine has none, and removed again by
# the same root shell, whatever happens to apt-get). Where systemd runs, the unit the package
# enables is disabled again, so it does not start at the next boot either.
install_promtool() {
    local prefix
    local install="apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus"
    if ! prefix=$(apt_prefix); then
        printf 'error: missing promtool; install it (as root) with:\n' >&2
        printf "    sudo env DEBIAN_FRONTEND=noninteractive sh -c '%s'\n" "$install" >&2
        exit 1
    fi
    log "installing prometheus, for promtool (it checks docker/prometheus/alerts.yml); its server stays off"
    # shellcheck disable=SC2086 # $prefix is empty or "sudo -n", split on purpose.
    $prefix env DEBIAN_FRONTEND=noninteractive sh -c '
        policy=/usr/sbin/policy-rc.d
        made=0
        if [ ! -e "$policy" ]; then
            printf "#!/bin/sh\nexit 101\n" >"$policy" && chmod 755 "$policy" && made=1
        fi
        trap "if [ \$made = 1 ]; then rm -f \"\$policy\"; fi" EXIT
        trap "exit 130" INT TERM
        '"$install"'
    ' || die "could not install prometheus (for promtool)"
    if [[ -d /run/systemd/system ]]; then
        # shellcheck disable=SC2086
        $prefix systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
    command -v promtool >/dev/null 2>&1 || die "prometheus was installed but promtool is not on PATH"
}

# ----------------------------------------------------------------------------------------------
# Ports and processes
# ----------------------------------------------------------------------------------------------

# Is something accepting TCP connections on HOST:PORT?
port_open() {
    local host=$1 port=$2
    # A subshell so the descriptor is closed whatever happens; bash's /dev/tcp needs no tool.
    (exec 3<>"/dev/tcp/$host/$port") >/dev/null 2>&1
}

# Print a TCP port that is free on 127.0.0.1 right now: the kernel picks one (bind to port 0).
# Without python3, try random ports in 20000..60999 until one is not accepting connections.
free_port() {
    local port
    if command -v python3 >/dev/null 2>&1; then
        python3 - <<'EOF'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
        return 0
    fi
    local tries
    for ((tries = 0; tries < 100; tries++)); do
        port=$((20000 + RANDOM % 41000))
        if ! port_open 127.0.0.1 "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    die "could not find a free TCP port"
}

# Is PID a live process (not a zombie waiting to be reaped)?
proc_alive() {
    local pid=$1 state
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/stat" ]]; then
        # Field 3 of /proc/PID/stat is the state; the command name (field 2) may hold spaces,
        # so take what follows the last ')'.
        state=$(sed -e 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || true
        [[ "$state" != "Z" ]]
    else
        state=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
        [[ "$state" != Z* ]]
    fi
}

# The command name of PID (possibly truncated to 15 characters by the kernel), or nothing.
proc_name() {
    local pid=$1
    if [[ -r "/proc/$pid/comm" ]]; then
        cat "/proc/$pid/comm" 2>/dev/null || true
    else
        ps -o comm= -p "$pid" 2>/dev/null || true
    fi
}

# Seconds since the epoch (for deadlines).
now() {
    date +%s
}

# wait_for_port HOST PORT TIMEOUT_SECONDS [PID]
#
# Poll until HOST:PORT accepts TCP connections, or fail after TIMEOUT_SECONDS. With PID, fail at
# once if that process dies first (a server that crashed at start will never listen).
wait_for_port() {
    local host=$1 port=$2 timeout=$3 pid=${4:-}
    local deadline=$(($(now) + timeout))
    until port_open "$host" "$port"; do
        if [[ -n "$pid" ]] && ! proc_alive "$pid"; then
            printf 'error: process %s exited before %s:%s accepted connections\n' "$pid" "$host" "$port" >&2
            return 1
        fi
        if (($(now) >= deadline)); then
            printf 'error: %s:%s did not accept connections within %ss\n' "$host" "$port" "$timeout" >&2
            return 1
        fi
        sleep 0.1
    done
}

# wait_for_exit TIMEOUT_SECONDS PID...
#
# Poll until every PID has exited, or TIMEOUT_SECONDS have passed. Returns non-zero if some are
# still alive at the deadline.
wait_for_exit() {
    local timeout=$1
    shift
    local deadline=$(($(now) + timeout)) pid alive
    while :; do
        alive=0
        for pid in "$@"; do
            if proc_alive "$pid"; then
                alive=1
                break
            fi
        done
        ((alive)) || return 0
        (($(now) < deadline)) || return 1
        sleep 0.1
    done
}

# The prefix that runs a command in a new session, when setsid exists, so a terminal's Ctrl-C
# reaches only the calling script (which then stops its children in order). Use it as
# `"${DETACH[@]}" cmd ... &` on a simple command: bash forks once and setsid(1), which is not a
# process group leader in a non-interactive script, execs in place, so $! is the command's pid.
# (Wrapping it in a function would make $! the pid of a subshell instead.)
DETACH=()
if command -v setsid >/dev/null 2>&1; then
    DETACH=(setsid)
fi

# ----------------------------------------------------------------------------------------------
# Postgres
# ----------------------------------------------------------------------------------------------

# Print the pid of the postmaster that owns DATADIR, if one is really running. A postmaster.pid
# left by a crash may name a dead pid, or one since reused by an unrelated process: both count as
# not running.
pg_running_pid() {
    local datadir=$1 pid
    [[ -f "$datadir/postmaster.pid" ]] || return 1
    pid=$(head -n 1 "$datadir/postmaster.pid" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    proc_alive "$pid" || return 1
    [[ "$(proc_name "$pid")" == postgres* ]] || return 1
    printf '%s\n' "$pid"
}

# Remove what a crashed server leaves behind so the next start is not refused: the lock file
# and the unix socket (and its lock) in the data dir, which is our socket directory.
pg_clear_stale_files() {
    local datadir=$1
    if [[ -e "$datadir/postmaster.pid" ]]; then
        warn "removing stale $datadir/postmaster.pid (its server is gone)"
        rm -f -- "$datadir/postmaster.pid"
    fi
    rm -f -- "$datadir"/.s.PGSQL.*
}

# start_postgres DATADIR PORT [NAME=VALUE...]
#
# Start a private Postgres for DATADIR, listening on 127.0.0.1:PORT only, with its unix socket in
# DATADIR and its log in DATADIR/../postgres.log. The cluster is created on first use
# (`initdb -A trust -U herald`: a superuser named herald, no password, on loopback only).
# Extra NAME=VALUE arguments become `-c NAME=VALUE` server settings (the tests pass fsync=off and
# friends). A server left running for DATADIR by an earlier run is stopped and started afresh,
# so the settings asked for now are the ones in force.
start_postgres() {
    local datadir=$1 port=$2
    shift 2
    local bindir logfile parent setting pid
    bindir=$(pg_bindir) || die "initdb/pg_ctl not found (run ensure_packages first)"

    mkdir -p -- "$datadir"
    datadir=$(cd -- "$datadir" && pwd -P)
    parent=$(dirname -- "$datadir")
    logfile="$parent/postgres.log"

    # pg_ctl passes -o to a shell: keep our paths free of characters it would reinterpret.
    if [[ "$datadir" == *[\'\"\$\`\\]* ]]; then
        die "the Postgres data directory path must not contain quotes, \$, \` or \\: $datadir"
    fi

    if is_root; then
        ensure_pg_os_user
        # The postgres user must reach the data dir through every parent directory.
        if ! as_pg_user test -x "$parent"; then
            die "the postgres OS user cannot enter $parent: chmod o+x its parents, move the repository, or set HERALD_DATABASE_URL"
        fi
        # Postgres insists on owning its data dir; fix it when it is new or was made by someone
        # else (e.g. an earlier run as another user).
        if [[ "$(stat -c %U -- "$datadir")" != postgres ]]; then
            chown -R postgres:postgres -- "$datadir"
        fi
        touch -- "$logfile"
        chown postgres:postgres -- "$logfile"
    else
        touch -- "$logfile"
    fi

    if [[ ! -f "$datadir/PG_VERSION" ]]; then
        log "initializing a postgres cluster in $datadir"
        if ! as_pg_user "$bindir/initdb" -D "$datadir" -A trust -U herald --encoding=UTF8 --no-locale \
            >>"$logfile" 2>&1; then
            show_log_tail "$logfile"
            die "initdb failed for $datadir"
        fi
    fi

    if pid=$(pg_running_pid "$datadir"); then
        warn "a postgres (pid $pid) left running for $datadir by an earlier run: restarting it"
        stop_postgres "$datadir"
    fi
    pg_clear_stale_files "$datadir"

    # The unix socket goes in the data dir (private to us), unless that path is too long for a
    # socket name (108 bytes on Linux); then TCP alone, which is all we use anyway.
    local sockdir="$datadir"
    if ((${#datadir} + 20 > 100)); then
        sockdir=""
    fi
    local opts="-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$sockdir'"
    for setting in "$@"; do
        [[ "$setting" =~ ^[a-z_.]+=[A-Za-z0-9_.:/-]*$ ]] || die "start_postgres: bad setting '$setting'"
        opts+=" -c $setting"
    done

    log "starting postgres on 127.0.0.1:$port (data: $datadir, log: $logfile)"
    # pg_ctl -w waits until the server accepts connections (or fails); -t bounds that wait.
    # pg_ctl puts the postmaster in its own session, so terminal signals do not reach it.
    if ! as_pg_user "$bindir/pg_ctl" -D "$datadir" -l "$logfile" -w -t 60 -o "$opts" start \
        >/dev/null 2>&1 </dev/null; then
        show_log_tail "$logfile"
        die "postgres did not start on 127.0.0.1:$port (is the port taken?)"
    fi
    if ! wait_for_port 127.0.0.1 "$port" 30; then
        show_log_tail "$logfile"
        die "postgres started but does not accept connections on 127.0.0.1:$port"
    fi
}

# stop_postgres DATADIR
#
# Stop the server for DATADIR if it runs: a fast shutdown (disconnects clients, rolls back open
# transactions), then an immediate one if that did not finish within 30 s.
stop_postgres() {
    local datadir=$1 bindir pid
    pid=$(pg_running_pid "$datadir") || return 0
    bindir=$(pg_bindir) || {
        kill -TERM "$pid" 2>/dev/null || true
        return 0
    }
    log "stopping postgres (pid $pid)"
    if ! as_pg_user "$bindir/pg_ctl" -D "$datadir" -m fast -w -t 30 stop >/dev/null 2>&1; then
        warn "postgres did not stop within 30s; stopping it immediately"
        as_pg_user "$bindir/pg_ctl" -D "$datadir" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    if proc_alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

# pg_psql PORT DB ARGS...: psql as the herald superuser over TCP (no password: trust on loopback).
pg_psql() {
    local port=$1 db=$2
    shift 2
    local psql
    psql=$(pg_tool psql) || die "psql not found"
    "$psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U herald -d "$db" "$@"
}

# ensure_database PORT NAME: create database NAME (owner herald) unless it exists.
ensure_database() {
    local port=$1 name=$2 exists
    [[ "$name" =~ ^[a-z_][a-z0-9_]*$ ]] || die "ensure_database: bad database name '$name'"
    exists=$(pg_psql "$port" postgres -tA -c "select 1 from pg_database where datname = '$name'")
    if [[ "$exists" != 1 ]]; then
        log "creating database $name"
        pg_psql "$port" postgres -c "create database $name owner herald"
    fi
}

# ----------------------------------------------------------------------------------------------
# Redis
# ----------------------------------------------------------------------------------------------

# Print the pid recorded in DIR/redis.pid if that process is a live redis-server.
redis_running_pid() {
    local dir=$1 pid
    [[ -f "$dir/redis.pid" ]] || return 1
    pid=$(head -n 1 "$dir/redis.pid" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    proc_alive "$pid" || return 1
    [[ "$(proc_name "$pid")" == redis-server* ]] || return 1
    printf '%s\n' "$pid"
}

# start_redis DIR PORT [CONFIG-LINE...]
#
# Start a private redis-server on 127.0.0.1:PORT with its data (append-only file: every write is
# logged, so a restart loses nothing acknowledged more than a second ago; no RDB snapshots) and
# its log in DIR, running in the background with its pid recorded in DIR/redis.pid. Its settings
# (and any CONFIG-LINEs, such as "cluster-enabled yes") are written to DIR/redis.conf, so the
# same server can be started again from that file alone (`redis-server DIR/redis.conf`: the
# cluster failover test restarts a master it killed that way). Waits until it answers PING (it
# answers LOADING while it replays a large AOF). A redis left running for DIR by an earlier run
# is stopped first.
start_redis() {
    local dir=$1 port=$2 pid
    shift 2
    mkdir -p -- "$dir"
    dir=$(cd -- "$dir" && pwd -P)

    if pid=$(redis_running_pid "$dir"); then
        warn "a redis (pid $pid) left running for $dir by an earlier run: restarting it"
        stop_redis "$dir" "$(redis_port_of "$dir")"
    fi

    # daemonize no and our own `&`: we keep the pid and can wait for and stop the process.
    # save "": no RDB snapshots; the AOF is the durable copy.
    {
        printf '%s\n' "port $port" "bind 127.0.0.1" "dir $dir" "appendonly yes" 'save ""' \
            "daemonize no" "logfile $dir/redis.log"
        (($# == 0)) || printf '%s\n' "$@"
    } >"$dir/redis.conf"
    log "starting redis on 127.0.0.1:$port (data: $dir)"
    "${DETACH[@]}" redis-server "$dir/redis.conf" </dev/null >/dev/null 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$dir/redis.pid"
    # Remember the port, so a later run can shut down a server left behind on another port.
    printf '%s\n' "$port" >"$dir/redis.port"

    if ! wait_for_port 127.0.0.1 "$port" 30 "$pid"; then
        show_log_tail "$dir/redis.log"
        stop_redis "$dir" "$port"
        die "redis did not start on 127.0.0.1:$port (is the port taken?)"
    fi
    local deadline=$(($(now) + 60)) reply=""
    until reply=$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) && [[ "$reply" == PONG ]]; do
        if ! proc_alive "$pid" || (($(now) >= deadline)); then
            show_log_tail "$dir/redis.log"
            stop_redis "$dir" "$port"
            die "redis on 127.0.0.1:$port did not answer PING (last answer: ${reply:-none})"
        fi
        sleep 0.1
    done
}

# The port recorded by start_redis for DIR (empty if unknown).
redis_port_of() {
    local dir=$1
    if [[ -f "$dir/redis.port" ]]; then
        head -n 1 "$dir/redis.port" 2>/dev/null || true
    fi
}

# stop_redis DIR [PORT]
#
# Stop the redis started for DIR: SHUTDOWN NOSAVE (the AOF is already written and fsynced by the
# shutdown itself), then SIGTERM, then SIGKILL if it is still alive after a deadline. Also reaps
# it if it is our child.
stop_redis() {
    local dir=$1 port=${2:-} pid
    [[ -n "$port" ]] || port=$(redis_port_of "$dir")
    pid=$(redis_running_pid "$dir") || {
        rm -f -- "$dir/redis.pid"
        return 0
    }
    log "stopping redis (pid $pid)"
    if [[ -n "$port" ]]; then
        redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    fi
    if ! wait_for_exit 10 "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_for_exit 10 "$pid"; then
            warn "redis (pid $pid) ignored SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    # Reap it if it is our child; harmless otherwise.
    wait "$pid" 2>/dev/null || true
    rm -f -- "$dir/redis.pid"
}

# start_redis_cluster DIR
#
# A Redis Cluster on loopback: six servers (DIR/node-1 .. node-6, each started by start_redis)
# made into three masters with a replica each. The cluster bus ports are picked too (a bus port
# is the client port + 10000 unless set, which fails above 55535). A master that stops is
# replaced by its replica after 2 s (cluster-node-timeout), and the slots still served keep
# answering meanwhile (cluster-require-full-coverage no). Waits until every node reports
# cluster_state:ok, then sets REDIS_CLUSTER_NODES to "127.0.0.1:port,..." (the seed list).
start_redis_cluster() {
    local dir=$1 i port bus used=" " nodes=()
    mkdir -p -- "$dir"
    for i in 1 2 3 4 5 6; do
        port=$(free_port)
        while [[ "$used" == *" $port "* ]]; do port=$(free_port); done
        used+="$port "
        bus=$(free_port)
        while [[ "$used" == *" $bus "* ]]; do bus=$(free_port); done
        used+="$bus "
        start_redis "$dir/node-$i" "$port" "cluster-enabled yes" "cluster-port $bus" \
            "cluster-config-file nodes.conf" "cluster-node-timeout 2000" \
            "cluster-require-full-coverage no"
        nodes+=("127.0.0.1:$port")
    done
    log "making a cluster of ${nodes[*]} (three masters, a replica each)"
    if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
        >"$dir/create.log" 2>&1; then
        cat -- "$dir/create.log" >&2
        die "redis-cli --cluster create failed"
    fi
    # Up means: every node sees the cluster ok and three replicas, and every replica has
    # synced with its master (a failover before that would promote an empty replica).
    local node info deadline=$(($(now) + 60))
    for node in "${nodes[@]}"; do
        until redis-cli -h 127.0.0.1 -p "${node##*:}" cluster info 2>/dev/null |
            grep -q '^cluster_state:ok' &&
            (($(redis-cli -h 127.0.0.1 -p "${node##*:}" cluster nodes | grep -c slave) == 3)) &&
            info=$(redis-cli -h 127.0.0.1 -p "${node##*:}" info replication) &&
            { [[ "$info" == *role:master* ]] || [[ "$info" == *master_link_status:up* ]]; }; do
            (($(now) < deadline)) || die "the Redis Cluster did not come up (see $dir/node-*/redis.log)"
            sleep 0.1
        done
    done
    REDIS_CLUSTER_NODES=$(
        IFS=,
        printf '%s' "${nodes[*]}"
    )
}

# stop_redis_cluster DIR: stops every node start_redis_cluster started in DIR.
stop_redis_cluster() {
    local node
    for node in "$1"/node-*; do
        [[ -d "$node" ]] && stop_redis "$node"
    done
}

# start_redis_sentinel DIR
#
# A primary with one replica (DIR/primary, DIR/replica, each started by start_redis) watched by
# a Redis Sentinel (DIR/sentinel) that knows the primary as "herald" and fails over one second
# after it stops answering. Waits until the replica has synced and the sentinel has seen it,
# then sets REDIS_SENTINEL_URL to "redis+sentinel://127.0.0.1:<sentinel port>/herald".
start_redis_sentinel() {
    local dir=$1 primary replica sentinel pid
    mkdir -p -- "$dir/sentinel"
    primary=$(free_port)
    replica=$(free_port)
    while [[ "$replica" == "$primary" ]]; do replica=$(free_port); done
    sentinel=$(free_port)
    while [[ "$sentinel" == "$primary" || "$sentinel" == "$replica" ]]; do sentinel=$(free_port); done
    start_redis "$dir/primary" "$primary"
    start_redis "$dir/replica" "$replica" "replicaof 127.0.0.1 $primary"

    local sdir
    sdir=$(cd -- "$dir/sentinel" && pwd -P)
    # The sentinel rewrites its own file as it learns the replica and any failover.
    printf '%s\n' "port $sentinel" "bind 127.0.0.1" "dir $sdir" "daemonize no" \
        "logfile $sdir/redis.log" "sentinel monitor herald 127.0.0.1 $primary 1" \
        "sentinel down-after-milliseconds herald 1000" "sentinel failover-timeout herald 10000" \
        >"$sdir/sentinel.conf"
    log "starting a Redis Sentinel on 127.0.0.1:$sentinel watching 127.0.0.1:$primary"
    "${DETACH[@]}" redis-server "$sdir/sentinel.conf" --sentinel </dev/null >/dev/null 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$sdir/redis.pid"
    printf '%s\n' "$sentinel" >"$sdir/redis.port"
    local deadline=$(($(now) + 60))
    until redis-cli -h 127.0.0.1 -p "$replica" info replication 2>/dev/null |
        grep -q '^master_link_status:up' &&
        redis-cli -h 127.0.0.1 -p "$sentinel" sentinel replicas herald 2>/dev/null |
        grep -q "^$replica\$"; do
        (($(now) < deadline)) || die "the Redis Sentinel setup did not come up (see $dir/*/redis.log)"
        sleep 0.1
    done
    REDIS_SENTINEL_URL="redis+sentinel://127.0.0.1:$sentinel/herald"
}

# stop_redis_sentinel DIR: stops the sentinel, the primary and the replica.
stop_redis_sentinel() {
    local node
    for node in "$1/sentinel" "$1/primary" "$1/replica"; do
        [[ -d "$node" ]] && stop_redis "$node"
    done
}
