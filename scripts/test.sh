#!/usr/bin/env bash
# Runs every test of the workspace, not stopping at the first failure:
# cargo-nextest when installed, else `cargo test`. Extra arguments go to the
# runner (e.g. `scripts/test.sh -p mdp-report`).
#
# The tests talk to the local services (scripts/setup.sh starts them): RabbitMQ
# 127.0.0.1:5672 guest/guest, MariaDB 127.0.0.1:3306 root without password,
# Redis 127.0.0.1:6379, and the binlog source database whose URL is exported
# here as MDP_TEST_SOURCE_URL (scripts/source-db.sh url). Each test makes its
# own vhost/prefix, database, key prefix and temp dir. TEST_LOG=1 shows logs.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
MDP_TEST_SOURCE_URL="$("$repo/scripts/source-db.sh" url)"
export MDP_TEST_SOURCE_URL
# The demo config must not leak into tests.
unset MDP_CONFIG

# The whole workspace unless packages are named (-p/--package).
scope=(--workspace)
for arg in "$@"; do
    case "$arg" in -p | --package | -p* | --package=*) scope=() ;; esac
done

# The end-to-end tests run the service binaries as processes.
if [[ ${#scope[@]} -gt 0 ]]; then
    cargo build --workspace --bins
fi

if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run "${scope[@]}" --no-fail-fast "$@"
fi

# cargo test prints one summary per test binary; add the total at the end.
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
set +e
cargo test "${scope[@]}" --no-fail-fast "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i+1) ~ /^passed/) p += $i
            if ($(i+1) ~ /^failed/) f += $i
            if ($(i+1) ~ /^ignored/) s += $i
        }
    }
    END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$out"
exit "$status"
