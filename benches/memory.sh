#!/usr/bin/env bash
# Resident memory per online user with the default settings on a many-core configuration:
# the daemon with --shards 16 (1M users per shard: room for 16M), N single-device users put
# online by presence-loadgen (steady, as fast as it goes, for DURATION), then the daemon's
# VmRSS read while they are online. Prints a Markdown table: the users the daemon holds online
# (its `presenced_shard_users` metric: a first heartbeat the kernel dropped leaves a user out
# until its next one, so at 10M fewer than N may be), RSS idle, RSS with them, the peak (VmHWM,
# which includes the moments a growing table holds its old and new arrays), and bytes per
# online user of growth and of the whole.
#
#   bash benches/memory.sh                 # N = 10k, 1M, 10M; builds release binaries
#   USERS="10000 1000000" bash benches/memory.sh
#   BIN=../baseline/target/release bash benches/memory.sh   # given binaries, no build
#   USERS=10000000 DURATION=30s bash benches/memory.sh     # 5 s brings ~4M of 10M online
#   PRESENCED_ARGS="--set state.enabled=false" bash benches/memory.sh   # more daemon flags
#
# Talks only to 127.0.0.1 (ports LINK_PORT, default 7060, METRICS_PORT, default 7064, and
# LISTEN_PORT, default 7070, and the SHARDS ports after it must be free), cleans up, stops by
# itself. Needs python3 (to read the metrics).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh

USERS=${USERS:-"10000 1000000 10000000"}
SHARDS=${SHARDS:-16}
DURATION=${DURATION:-5s}
LINK_PORT=${LINK_PORT:-7060}
LISTEN_PORT=${LISTEN_PORT:-7070}
METRICS_PORT=${METRICS_PORT:-7064}
# Mean devices per user (presence-loadgen --devices; its own default, 1.5, gives half the users
# a second or third device, each such user an overflow block of max_devices_per_user devices).
DEVICES=${DEVICES:-1}
# More daemon flags, split at spaces.
read -r -a EXTRA <<<"${PRESENCED_ARGS:-}"
if [ -z "${BIN:-}" ]; then
    cargo build --release --bin presenced -p presenced >&2
    cargo build --release -p presenced-tools --bin presence-loadgen >&2
    BIN="${CARGO_TARGET_DIR:-target}/release"
fi
WORK=$(mktemp -d)
trap 'kill "${PD_PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "| users sent | users online | RSS idle (MB) | RSS with them (MB) | peak RSS (MB) | growth per online user (B) | RSS per online user (B) |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for n in $USERS; do
    "$BIN/presenced" --shards "$SHARDS" --listen "127.0.0.1:$LISTEN_PORT" --link-listen "127.0.0.1:$LINK_PORT" \
        --set shards.pin=false --set "state.dir=$WORK/state-$n" \
        --set "metrics.listen=127.0.0.1:$METRICS_PORT" "${EXTRA[@]}" \
        >"$WORK/presenced.log" 2>&1 &
    PD_PID=$!
    wait_port udp "$LINK_PORT" "$PD_PID" "$WORK/presenced.log"
    sleep 1
    idle=$(mem_b "$PD_PID" VmRSS)
    "$BIN/presence-loadgen" --link "127.0.0.1:$LINK_PORT" --scenario steady --max --users "$n" \
        --devices "$DEVICES" --watch 1000 --duration "$DURATION" --no-logout --json >"$WORK/lg.json" 2>"$WORK/lg.err" ||
        { cat "$WORK/lg.err" >&2; exit 1; }
    full=$(mem_b "$PD_PID" VmRSS)
    peak=$(mem_b "$PD_PID" VmHWM)
    sleep 1.5 # the metrics' users are at most a second old
    online=$(python3 - "$METRICS_PORT" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
print(sum(int(float(l.split()[-1])) for l in text.splitlines() if l.startswith("presenced_shard_users{")))
PY
)
    kill "$PD_PID"
    wait "$PD_PID" 2>/dev/null || true
    awk -v s="$n" -v n="$online" -v i="$idle" -v f="$full" -v p="$peak" 'BEGIN {
        printf "| %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f |\n", s, n, i / 1e6, f / 1e6, p / 1e6,
            (f - i) / n, f / n }'
done
