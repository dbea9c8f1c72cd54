# Development tasks of the merchant data platform.
# Run through the wrapper, which installs `just` when missing:
#     ./scripts/just up      ./scripts/just test      ./scripts/just --list

set shell := ["bash", "-euo", "pipefail", "-c"]
# Recipe arguments reach the commands as "$@", quoted as given.
set positional-arguments

# List the recipes.
default:
    @{{just_executable()}} --justfile {{justfile()}} --list --unsorted

# Install and start what the platform needs (RabbitMQ, MariaDB, Redis, source DB). Idempotent.
setup:
    @scripts/setup.sh

# Build every binary (six services and mdp-loadgen).
build:
    cargo build --workspace --bins

# Run all tests against the local services (nextest if installed; env: see scripts/test.sh).
test *args: setup
    @scripts/test.sh "$@"

# Start the demo: schema + seed, six services (two window-compute replicas), load generator.
up: setup build
    @scripts/demo.sh up

# Stop the processes `up` started (by their recorded pids).
down:
    @scripts/demo.sh down

# Show the processes `up` started.
status:
    @scripts/demo.sh status

# Follow the logs of one process (e.g. `query`, `window-compute`) or of all.
logs name="":
    @scripts/demo.sh logs "$@"

# Write demo changes into the source database, e.g. `just loadgen --rate 1000 --duration-s 30`.
loadgen *args: build
    @"${CARGO_TARGET_DIR:-target}/debug/mdp-loadgen" --url "$(scripts/source-db.sh url)/shop" "$@"

# The binlog source database: start | stop | status | url.
source-db action="status":
    @scripts/source-db.sh "$@"

# Validate docker/compose.yml (installs docker-compose with apt when missing).
compose-check:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v docker-compose >/dev/null 2>&1; then
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
    fi
    docker-compose -f docker/compose.yml config -q
    echo "docker/compose.yml is valid"

# Build the image and run the whole platform in Docker (needs a Docker engine).
compose-up:
    docker compose -f docker/compose.yml up --build

# Engine benchmark in release (about 15 min after the build): per-window compute as the day grows
# 100k → 10M orders, the MariaDB re-run baseline (127.0.0.1:3306, `just setup`), sustained changes/s.
# Tuning variables are listed in docs/benchmarks.md.
bench-engine:
    cargo bench -p mdp-window-compute --bench engine --no-run
    timeout --signal=INT 30m cargo bench -p mdp-window-compute --bench engine

# End-to-end benchmark in release (about 5 min after the build): the six services on loopback,
# backlog throughput (changes/s until every report equals MariaDB), commit → query API
# freshness at 5k changes/s, and cached reads of the query API (requests/s, latency).
# Tuning variables (MDP_BENCH_*) are listed in docs/benchmarks.md.
bench: setup
    cargo build --release --workspace --bins
    MDP_BIN_DIR="${CARGO_TARGET_DIR:-target}/release" timeout --signal=INT --kill-after=60s 40m "${CARGO_TARGET_DIR:-target}/release/mdp-bench"

# Chaos run (about 5 min after the build; loopback only, stops by itself): its own RabbitMQ,
# Redis and MariaDB (scripts/chaos-infra.sh), continuous load, every service SIGKILLed, broker,
# cache and database restarted and crashed, a window-compute replica killed for good; per-fault
# recovery time and replays, then every report row against MariaDB. Env: MDP_CHAOS_* (see mdp-chaos).
chaos: setup build
    timeout --signal=INT --kill-after=60s 30m "${CARGO_TARGET_DIR:-target}/debug/mdp-chaos"

# Format every crate.
fmt:
    cargo fmt --all

# Lint every crate and target.
lint:
    cargo clippy --workspace --all-targets
