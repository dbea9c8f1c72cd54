#!/usr/bin/env bash
# Private infrastructure for fault-injection runs: a RabbitMQ node, a Redis
# server and a binlog-enabled source MariaDB that this script starts on their
# own ports and data directories, so a chaos run can stop and restart them
# without touching the machine's shared servers.
#
#   scripts/chaos-infra.sh start   COMPONENT   start it; no-op when it already runs
#   scripts/chaos-infra.sh stop    COMPONENT   stop it gracefully (SIGTERM), wait for exit
#   scripts/chaos-infra.sh kill    COMPONENT   SIGKILL it, as a crash would
#   scripts/chaos-infra.sh status  COMPONENT   exit 0 when it answers
#   scripts/chaos-infra.sh url     COMPONENT   print its URL
#   scripts/chaos-infra.sh down                stop all three
#
# COMPONENT is broker (RabbitMQ), cache (Redis) or source (MariaDB with binlog).
# Only processes whose pid this script recorded are ever signalled.
#
# Environment: MDP_VAR (default <repo>/var) holds everything under chaos/;
# MDP_CHAOS_BROKER_PORT (5673), MDP_CHAOS_CACHE_PORT (6380),
# MDP_CHAOS_SOURCE_PORT (3317) choose the ports.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
var="${MDP_VAR:-$repo/var}/chaos"
broker_port="${MDP_CHAOS_BROKER_PORT:-5673}"
cache_port="${MDP_CHAOS_CACHE_PORT:-6380}"
source_port="${MDP_CHAOS_SOURCE_PORT:-3317}"
start_timeout_s="${MDP_CHAOS_START_TIMEOUT_S:-60}"
stop_timeout_s="${MDP_CHAOS_STOP_TIMEOUT_S:-60}"
export PATH="$PATH:/usr/sbin:/sbin:/usr/lib/rabbitmq/bin"

die() {
    echo "chaos-infra: $*" >&2
    exit 1
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# The recorded pid of COMPONENT when that process still runs the expected program.
recorded_pid() {
    local pidfile="$var/$1/pid" comm="$2" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == "$comm"* ]] || return 1
    echo "$pid"
}

wait_until() {
    local what="$1" deadline=$((SECONDS + start_timeout_s))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || die "$what did not answer within ${start_timeout_s}s"
        sleep 0.2
    done
}

# The RabbitMQ server script that runs in the foreground as the calling user
# (the /usr/sbin wrapper switches to the rabbitmq user, who cannot write here).
rabbitmq_server_bin() {
    local b
    for b in /usr/lib/rabbitmq/bin/rabbitmq-server "$(command -v rabbitmq-server || true)"; do
        [[ -x "$b" ]] && {
            echo "$b"
            return 0
        }
    done
    die "rabbitmq-server not found (scripts/setup.sh installs it)"
}

broker_amqp_ok() {
    # A broker that accepts TCP but does not answer the protocol header is not up.
    timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$broker_port; printf 'AMQP\x00\x00\x09\x01' >&3; head -c 1 <&3 | grep -q ." 2>/dev/null
}

start_broker() {
    local dir="$var/broker"
    if recorded_pid broker beam && broker_amqp_ok; then
        return 0
    fi
    port_open "$broker_port" && die "port $broker_port is taken by a process this script did not start"
    mkdir -p "$dir/mnesia" "$dir/log"
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$broker_port
loopback_users = none
EOF
    echo "[]." >"$dir/enabled_plugins"
    : >"$dir/rabbitmq-env.conf"
    (
        export HOME="$dir"
        export RABBITMQ_NODENAME="mdpchaos$broker_port@localhost"
        export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
        export RABBITMQ_NODE_PORT="$broker_port"
        export RABBITMQ_DIST_PORT=$((broker_port + 20000))
        export RABBITMQ_MNESIA_BASE="$dir/mnesia"
        export RABBITMQ_LOG_BASE="$dir/log"
        export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
        export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
        export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
        export RABBITMQ_PID_FILE="$dir/pid"
        export ERL_EPMD_ADDRESS=127.0.0.1
        rm -f "$dir/pid"
        setsid "$(rabbitmq_server_bin)" </dev/null >>"$dir/server.log" 2>&1 &
    )
    wait_until "RabbitMQ on $broker_port" broker_amqp_ok
    recorded_pid broker beam >/dev/null || die "RabbitMQ on $broker_port runs but wrote no pid file"
}

start_cache() {
    local dir="$var/cache"
    if recorded_pid cache redis-server >/dev/null && port_open "$cache_port"; then
        return 0
    fi
    port_open "$cache_port" && die "port $cache_port is taken by a process this script did not start"
    mkdir -p "$dir"
    setsid redis-server --port "$cache_port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$dir" --logfile "$dir/redis.log" </dev/null >/dev/null 2>&1 &
    echo $! >"$dir/pid"
    wait_until "Redis on $cache_port" redis_ok
}

redis_ok() {
    [[ "$(redis-cli -p "$cache_port" ping 2>/dev/null)" == PONG ]]
}

source_db() {
    MDP_VAR="$var" MDP_SOURCE_PORT="$source_port" "$repo/scripts/source-db.sh" "$@"
}

signal_and_wait() {
    local component="$1" comm="$2" signal="$3" pid
    pid="$(recorded_pid "$component" "$comm")" || return 0
    kill "-$signal" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + stop_timeout_s))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || die "$component (pid $pid) did not exit within ${stop_timeout_s}s"
        sleep 0.1
    done
}

component_comm() {
    case "$1" in
    broker) echo beam ;;
    cache) echo redis-server ;;
    *) die "unknown component '$1' (broker, cache, source)" ;;
    esac
}

cmd="${1:-}"
component="${2:-}"
case "$cmd" in
start)
    case "$component" in
    broker) start_broker ;;
    cache) start_cache ;;
    source) source_db start ;;
    *) die "unknown component '$component' (broker, cache, source)" ;;
    esac
    ;;
stop | kill)
    signal=TERM
    [[ "$cmd" == kill ]] && signal=KILL
    if [[ "$component" == source ]]; then
        if [[ "$signal" == KILL ]]; then
            pid="$(cat "$var/source-db/source-db.pid" 2>/dev/null || true)"
            if [[ "$pid" =~ ^[0-9]+$ && "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == mariadbd ]]; then
                kill -KILL "$pid"
                while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
            fi
        else
            source_db stop
        fi
    else
        signal_and_wait "$component" "$(component_comm "$component")" "$signal"
    fi
    ;;
status)
    case "$component" in
    broker) recorded_pid broker beam >/dev/null && broker_amqp_ok ;;
    cache) recorded_pid cache redis-server >/dev/null && redis_ok ;;
    source) source_db status >/dev/null ;;
    *) die "unknown component '$component' (broker, cache, source)" ;;
    esac
    ;;
url)
    case "$component" in
    broker) echo "amqp://guest:guest@127.0.0.1:$broker_port/%2f" ;;
    cache) echo "redis://127.0.0.1:$cache_port/0" ;;
    source) source_db url ;;
    *) die "unknown component '$component' (broker, cache, source)" ;;
    esac
    ;;
down)
    signal_and_wait broker beam TERM
    signal_and_wait cache redis-server TERM
    source_db stop
    ;;
*)
    sed -n '2,20p' "$0" >&2
    exit 2
    ;;
esac
