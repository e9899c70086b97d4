#!/usr/bin/env bash
# Resident memory per online user with the default settings on a many-core configuration:
# the daemon with --shards 16 (1M users per shard: room for 16M), N single-device users put
# online by presence-loadgen (steady, as fast as it goes, for DURATION), then the daemon's
# VmRSS read while they are all online. Prints a Markdown table: RSS idle, RSS with N users,
# bytes per user of growth and of the whole, and the peak (VmHWM, which includes the moment a
# table growing into a larger array holds both arrays).
#
#   bash benches/memory.sh                 # N = 10k, 1M, 10M; builds release binaries
#   USERS="10000 1000000" bash benches/memory.sh
#   BIN=../baseline/target/release bash benches/memory.sh   # given binaries, no build
#
# Talks only to 127.0.0.1 (ports LINK_PORT, default 7060, and LISTEN_PORT, default 7070, and
# the SHARDS ports after it must be free), cleans up, stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh

USERS=${USERS:-"10000 1000000 10000000"}
SHARDS=${SHARDS:-16}
DURATION=${DURATION:-5s}
LINK_PORT=${LINK_PORT:-7060}
LISTEN_PORT=${LISTEN_PORT:-7070}
if [ -z "${BIN:-}" ]; then
    cargo build --release --bin presenced -p presenced >&2
    cargo build --release -p presenced-tools --bin presence-loadgen >&2
    BIN="${CARGO_TARGET_DIR:-target}/release"
fi
WORK=$(mktemp -d)
trap 'kill "${PD_PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "| users online | RSS idle (MB) | RSS with them (MB) | peak RSS (MB) | growth per user (B) | RSS per user (B) |"
echo "|---:|---:|---:|---:|---:|---:|"
for n in $USERS; do
    "$BIN/presenced" --shards "$SHARDS" --listen "127.0.0.1:$LISTEN_PORT" --link-listen "127.0.0.1:$LINK_PORT" \
        --set shards.pin=false --set "state.dir=$WORK/state-$n" \
        >"$WORK/presenced.log" 2>&1 &
    PD_PID=$!
    wait_port udp "$LINK_PORT" "$PD_PID" "$WORK/presenced.log"
    sleep 1
    idle=$(mem_b "$PD_PID" VmRSS)
    "$BIN/presence-loadgen" --link "127.0.0.1:$LINK_PORT" --scenario steady --max --users "$n" \
        --watch 1000 --duration "$DURATION" --no-logout --json >"$WORK/lg.json" 2>"$WORK/lg.err" ||
        { cat "$WORK/lg.err" >&2; exit 1; }
    full=$(mem_b "$PD_PID" VmRSS)
    peak=$(mem_b "$PD_PID" VmHWM)
    kill "$PD_PID"
    wait "$PD_PID" 2>/dev/null || true
    awk -v n="$n" -v i="$idle" -v f="$full" -v p="$peak" 'BEGIN {
        printf "| %d | %.1f | %.1f | %.1f | %.1f | %.1f |\n", n, i / 1e6, f / 1e6, p / 1e6, (f - i) / n, f / n }'
done
