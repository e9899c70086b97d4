#!/usr/bin/env bash
# Resident memory per online user with the default settings on a many-core configuration:
# the daemon with --shards 16 (1M users per shard: room for 16M), N single-device users put
# online by presence-loadgen (steady, as fast as it goes, for DURATION), then the daemon's
# VmRSS read while they are all online. Prints a Markdown table: RSS idle, RSS with N users,
# bytes per user of growth and of the whole.
#
#   bash benches/memory.sh                 # N = 10k, 1M, 10M; builds release binaries
#   USERS="10000 1000000" bash benches/memory.sh
#
# Talks only to 127.0.0.1 (ports 7060/7070 must be free), cleans up, stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh

USERS=${USERS:-"10000 1000000 10000000"}
SHARDS=${SHARDS:-16}
DURATION=${DURATION:-5s}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --bin presenced -p presenced >&2
cargo build --release -p presenced-tools --bin presence-loadgen >&2
BIN="$TARGET/release"
WORK=$(mktemp -d)
trap 'kill "${PD_PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "| users online | RSS idle (MB) | RSS with them (MB) | growth per user (B) | RSS per user (B) |"
echo "|---:|---:|---:|---:|---:|"
for n in $USERS; do
    "$BIN/presenced" --shards "$SHARDS" --listen 127.0.0.1:7070 --link-listen 127.0.0.1:7060 \
        --set shards.pin=false --set "state.dir=$WORK/state-$n" \
        >"$WORK/presenced.log" 2>&1 &
    PD_PID=$!
    wait_port udp 7060 "$PD_PID" "$WORK/presenced.log"
    sleep 1
    idle=$(mem_b "$PD_PID" VmRSS)
    "$BIN/presence-loadgen" --link 127.0.0.1:7060 --scenario steady --max --users "$n" \
        --watch 1000 --duration "$DURATION" --no-logout --json >"$WORK/lg.json" 2>"$WORK/lg.err" ||
        { cat "$WORK/lg.err" >&2; exit 1; }
    full=$(mem_b "$PD_PID" VmRSS)
    kill "$PD_PID"
    wait "$PD_PID" 2>/dev/null || true
    awk -v n="$n" -v i="$idle" -v f="$full" 'BEGIN {
        printf "| %d | %.1f | %.1f | %.1f | %.1f |\n", n, i / 1e6, f / 1e6, (f - i) / n, f / n }'
done
