#!/usr/bin/env bash
# Binlog-enabled MariaDB used as the business source database in development
# and tests (the database ingest captures).
#
#   scripts/source-db.sh start    start it (first start initialises the datadir); no-op when running
#   scripts/source-db.sh stop     stop the server this script started (by its recorded pid)
#   scripts/source-db.sh status   exit 0 and print "running (pid N, port P)" when it answers, else exit 1
#   scripts/source-db.sh url [DB] print the mysql:// URL of the server (root, no password, TCP)
#
# Environment: MDP_VAR (default <repo>/var) holds the datadir `source-db`;
# MDP_SOURCE_PORT (default 3307) is the TCP port on 127.0.0.1.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
var="${MDP_VAR:-$repo/var}"
datadir="$var/source-db"
port="${MDP_SOURCE_PORT:-3307}"
socket="$datadir/mysqld.sock"
pidfile="$datadir/source-db.pid"
logfile="$datadir/mariadbd.log"
start_timeout_s="${MDP_SOURCE_START_TIMEOUT_S:-30}"
stop_timeout_s="${MDP_SOURCE_STOP_TIMEOUT_S:-30}"

die() {
    echo "source-db: $*" >&2
    exit 1
}

# The pid this script started, when that process is still a mariadbd.
recorded_pid() {
    [[ -f "$pidfile" ]] || return 1
    local pid
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    local comm
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    [[ "$comm" == mariadbd || "$comm" == mysqld ]] || return 1
    echo "$pid"
}

ping_ok() {
    mariadb-admin --no-defaults --socket="$socket" -uroot --connect-timeout=2 ping >/dev/null 2>&1
}

tcp_ok() {
    mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot --connect-timeout=2 -e 'SELECT 1' >/dev/null 2>&1
}

# A server on the port that this checkout did not start (another checkout's,
# or one started by hand) is used as it is when it has the binlog settings CDC
# needs; anything else on the port is an error.
foreign_binlog_server() {
    local settings
    settings="$(mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot --connect-timeout=2 -N -B \
        -e 'SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata' 2>/dev/null)" || return 1
    [[ "$(tr -s '\t ' ' ' <<<"$settings")" == "1 ROW FULL FULL" ]]
}

# A mariadbd this script started for a checkout that has since been deleted
# (a CI clone, say) keeps the port but can no longer create databases: its
# datadir is gone. Prints its pid: a mariadbd process whose command line is
# this script's (`--datadir=<…>/source-db --port=<port>`) and whose datadir no
# longer exists.
orphaned_pid() {
    local dir pid cmdline
    dir="$(mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot --connect-timeout=2 -N -B \
        -e 'SELECT @@datadir' 2>/dev/null)" || return 1
    [[ -n "$dir" && ! -d "$dir" && "${dir%/}" == */source-db ]] || return 1
    for pid in $(pgrep -x mariadbd); do
        cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
        if [[ "$cmdline" == *"--datadir=${dir%/} "* && "$cmdline" == *"--port=$port "* ]]; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

stop_orphan() {
    local pid
    pid="$(orphaned_pid)" || return 0
    echo "source-db: stopping mariadbd pid $pid on port $port: its datadir was deleted" >&2
    kill -TERM "$pid"
    local deadline=$((SECONDS + stop_timeout_s))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || die "orphaned mariadbd (pid $pid) did not stop within ${stop_timeout_s}s"
        sleep 0.2
    done
}

initialise() {
    mkdir -p "$datadir"
    if [[ ! -d "$datadir/mysql" ]]; then
        mariadb-install-db --no-defaults --user=root --datadir="$datadir" \
            --auth-root-authentication-method=normal --skip-test-db >"$datadir/install.log" 2>&1 \
            || die "mariadb-install-db failed, see $datadir/install.log"
    fi
}

start() {
    if recorded_pid >/dev/null && ping_ok; then
        return 0
    fi
    if ping_ok; then
        die "a server already answers on $socket but was not started by this script (no pid in $pidfile)"
    fi
    stop_orphan
    if foreign_binlog_server; then
        return 0
    fi
    if tcp_ok; then
        die "port $port is taken by a server without log_bin, binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL (set MDP_SOURCE_PORT to another port)"
    fi
    initialise
    rm -f "$pidfile"
    # setsid: the server outlives the shell that started it and gets none of its signals.
    # 9>&-: it must not inherit the lock's descriptor, or it would hold the lock while it runs.
    setsid mariadbd --no-defaults --user=root --datadir="$datadir" \
        --port="$port" --bind-address=127.0.0.1 --socket="$socket" \
        --pid-file="$datadir/mariadbd.pid" --log-error="$logfile" \
        --log-bin="$datadir/binlog" --server-id=1 \
        --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL \
        --max-connections=500 --skip-name-resolve \
        </dev/null >>"$logfile" 2>&1 9>&- &
    local pid=$!
    echo "$pid" >"$pidfile"
    local deadline=$((SECONDS + start_timeout_s))
    until ping_ok; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pidfile"
            die "mariadbd exited during start, see $logfile"
        fi
        if ((SECONDS >= deadline)); then
            die "mariadbd did not answer within ${start_timeout_s}s, see $logfile"
        fi
        sleep 0.2
    done
    # Root with an empty password over TCP from 127.0.0.1 (name resolution is off,
    # so the 127.0.0.1 host entry is the one that matches).
    mariadb --no-defaults --socket="$socket" -uroot -e "
        CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
        FLUSH PRIVILEGES;" || die "could not grant root access over TCP"
    tcp_ok || die "root cannot connect over TCP to 127.0.0.1:$port"
}

stop() {
    local pid
    if ! pid="$(recorded_pid)"; then
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid"
    local deadline=$((SECONDS + stop_timeout_s))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            die "mariadbd (pid $pid) did not stop within ${stop_timeout_s}s"
        fi
        sleep 0.2
    done
    rm -f "$pidfile"
}

status() {
    local pid
    if pid="$(recorded_pid)" && ping_ok; then
        echo "running (pid $pid, port $port)"
        return 0
    fi
    if foreign_binlog_server; then
        echo "running (not started from this checkout, port $port)"
        return 0
    fi
    echo "stopped"
    return 1
}

url() {
    echo "mysql://root@127.0.0.1:$port${1:+/$1}"
}

# Serialise start/stop: tests of several crates may call this at the same time.
lock() {
    mkdir -p "$var"
    exec 9>"$var/source-db.lock"
    flock -w 120 9 || die "could not take the lock $var/source-db.lock"
}

case "${1:-}" in
start)
    lock
    start
    ;;
stop)
    lock
    stop
    ;;
status) status ;;
url) url "${2:-}" ;;
*)
    echo "usage: $0 start|stop|status|url" >&2
    exit 2
    ;;
esac
