#!/usr/bin/env bash
# Makes this machine ready to build, test and run the platform. Idempotent and
# quiet when everything is already there; every wait is bounded.
#
# 1. Installs with apt what is missing (only when the binary is missing):
#    MariaDB server + client, RabbitMQ, Redis, pip.
# 2. Starts RabbitMQ (5672), MariaDB (3306) and Redis (6379) when they do not
#    answer, with the commands the machine itself uses. Services that answer
#    are left exactly as they are: never reconfigured, never stopped.
# 3. Starts the binlog-enabled source database (scripts/source-db.sh, 3307).
#
# Environment: SETUP_WAIT_S (default 60) bounds each service's start.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wait_s="${SETUP_WAIT_S:-60}"
export DEBIAN_FRONTEND=noninteractive

say() { echo "setup: $*" >&2; }
die() {
    echo "setup: error: $*" >&2
    exit 1
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root to run: $*"
    fi
}

# Polls "$@" until it succeeds or $wait_s seconds pass.
wait_for() {
    local what="$1"
    shift
    local deadline=$((SECONDS + wait_s))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

# ---------------------------------------------------------------- packages
apt_updated=0
apt_install() {
    if ((apt_updated == 0)); then
        as_root timeout 600 apt-get update -qq >/dev/null || die "apt-get update failed"
        apt_updated=1
    fi
    say "installing $*"
    as_root timeout 1200 apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
        die "apt-get install $* failed"
}

installed_mariadb=0
missing=()
if ! command -v mariadbd >/dev/null 2>&1 && [[ ! -x /usr/sbin/mariadbd ]]; then
    missing+=(mariadb-server)
    installed_mariadb=1
fi
command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
command -v rabbitmq-server >/dev/null 2>&1 || [[ -x /usr/sbin/rabbitmq-server ]] || missing+=(rabbitmq-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ((${#missing[@]} > 0)); then
    apt_install "${missing[@]}"
fi
export PATH="$PATH:/usr/sbin:/sbin"

# ---------------------------------------------------------------- RabbitMQ
if ! port_open 5672; then
    say "starting RabbitMQ"
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
    # `rabbitmqctl await_startup` can return before the node is usable.
    wait_for rabbitmq as_root rabbitmq-diagnostics -q check_running ||
        die "RabbitMQ did not start within ${wait_s}s (see /var/log/rabbitmq/)"
    wait_for "rabbitmq port" port_open 5672 || die "RabbitMQ does not listen on 5672"
fi

# ---------------------------------------------------------------- MariaDB (results, 3306)
if ! port_open 3306; then
    say "starting MariaDB"
    as_root mkdir -p /run/mysqld
    as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
    # --user=mysql: the machine's my.cnf says so too; Debian's stock one does not.
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql ||
        die "could not start mariadbd"
    wait_for mariadb port_open 3306 || die "MariaDB did not answer on 3306 within ${wait_s}s (see /var/log/mysql/)"
fi
if ((installed_mariadb == 1)); then
    # A server installed just now: let root in over TCP without a password, as
    # on the development machines (results DB at mysql://root@127.0.0.1:3306).
    as_root mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');" ||
        die "could not enable root TCP login on the new MariaDB"
fi
mariadb --no-defaults -h127.0.0.1 -P3306 -uroot --connect-timeout=5 -e 'SELECT 1' >/dev/null 2>&1 ||
    say "warning: root cannot log in to MariaDB on 127.0.0.1:3306 without a password; set MDP__RESULTS__URL"

# ---------------------------------------------------------------- Redis
if ! port_open 6379; then
    say "starting Redis"
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null ||
        die "could not start redis-server"
    wait_for redis redis-cli -h 127.0.0.1 -p 6379 ping || die "Redis did not answer on 6379 within ${wait_s}s"
fi

# ---------------------------------------------------------------- source DB (binlog, 3307)
[[ -x "$repo/scripts/source-db.sh" ]] || die "scripts/source-db.sh is missing"
"$repo/scripts/source-db.sh" start || die "the source database did not start (scripts/source-db.sh start)"
