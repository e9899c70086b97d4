#!/usr/bin/env bash
# The issue-13 figures that need a host of many cores (8 or more; the figures at the top of
# benches/README.md were taken on 16), in one run of release binaries already built:
#
#  1. churn latency at half load with USERS (1M) users, the daemon on cores of its own
#     (benches/compare.sh, RESTART=0; presenced alone where redis-server is not installed);
#  2. fan-out, one hub against HUBS (benches/fanout.sh, RUNS runs of DURATION each side): 2
#     shards, 64 links watching every one of USERS users, CHURN (160k) logins and logouts a
#     second, so 64 × 160k = 10.2 M events a second offered; the daemon on the first 5/8 of
#     the cores (service cores: all but the shards'), the load generator on the rest. HUBS is
#     half the service cores, 2 to 8.
#
# Usage: benches/many-core.sh [DIR]   (DIR holds presenced and presence-loadgen; default
# $CARGO_TARGET_DIR/release or target/release). Environment: USERS, CHURN, RUNS (3),
# DURATION (8s), HUBS, CORES (nproc), DRY=1 (print the two commands, run nothing).
# Needs what compare.sh and fanout.sh need: python3, taskset. Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath -m "${1:-${CARGO_TARGET_DIR:-target}/release}")
CORES=${CORES:-$(nproc)}
USERS=${USERS:-1M}
CHURN=${CHURN:-160k}
[ "$CORES" -ge 8 ] || { echo "many-core.sh: needs 8 cores or more (this host has $CORES)" >&2; exit 1; }
daemon=$((CORES * 5 / 8))
shards=2
service=$((daemon - shards))
half=$((service / 2))
hubs=${HUBS:-$((half > 8 ? 8 : half < 2 ? 2 : half))}
command -v redis-server >/dev/null && redis=1 || redis=0

compare=(env BIN="$BIN" NO_BUILD=1 USERS="$USERS" RESTART=0 REDIS="$redis" bash benches/compare.sh)
fanout=(env RUNS="${RUNS:-3}" DURATION="${DURATION:-8s}" USERS="$USERS" SHARDS="$shards"
    OBSERVERS=64 CHURN="$CHURN" DAEMON_CORES="0-$((daemon - 1))" GEN_CORES="$daemon-$((CORES - 1))"
    SET_A="shards.service_cores=$service link.hubs=1"
    SET_B="shards.service_cores=$service link.hubs=$hubs"
    bash benches/fanout.sh "$BIN" "$BIN")
if [ "${DRY:-0}" = 1 ]; then
    printf '%q ' "${compare[@]}"; echo
    printf '%q ' "${fanout[@]}"; echo
    exit 0
fi
echo "== 1. churn latency at half load, $USERS users (benches/compare.sh)"
"${compare[@]}"
echo "== 2. fan-out: 1 hub against $hubs, $shards shards, 64 observers, churn $CHURN/s (benches/fanout.sh)"
"${fanout[@]}"
