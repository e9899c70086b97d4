#!/usr/bin/env bash
# Browsers per gateway core and the latency browser -> gateway -> daemon -> gateway -> browser:
# the daemon, presence-gateway in front of it, and presence-loadgen --target ws://… with N
# browsers (one WebSocket each, partners watching each other, every page flipping its
# visibility every TOGGLE) for DURATION. Prints a Markdown table: browsers, flips a second,
# the gateway's CPU (cores busy: CPU seconds over the run's wall time, connecting included),
# browsers per gateway core at that flip rate, and the latency percentiles.
#
#   bash benches/gateway.sh                      # N = 1000 5000; builds release binaries
#   BROWSERS="1000 10000" TOGGLE=5s bash benches/gateway.sh
#
# Talks only to 127.0.0.1 (ports 17060/17070/18080 must be free), cleans up, stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh

BROWSERS=${BROWSERS:-"1000 5000"}
DURATION=${DURATION:-30s}
TOGGLE=${TOGGLE:-2s}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --bin presenced -p presenced >&2
cargo build --release -p presenced-tools --bin presence-loadgen --bin presence-gateway >&2
BIN="$TARGET/release"
WORK=$(mktemp -d)
trap 'for p in ${GW_PID:-} ${PD_PID:-}; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
# A socket per browser in the loadgen and one in the gateway: as many files as allowed.
ulimit -n "$(ulimit -Hn)"

echo "| browsers | flips/s | gateway cores busy | browsers per gateway core | latency p50 / p99 / p99.9 / max (ms) | missed |"
echo "|---:|---:|---:|---:|---|---:|"
for n in $BROWSERS; do
    "$BIN/presenced" --listen 127.0.0.1:17070 --link-listen 127.0.0.1:17060 \
        --set shards.pin=false --set "state.dir=$WORK/state-$n" \
        >"$WORK/presenced.log" 2>&1 &
    PD_PID=$!
    wait_port udp 17060 "$PD_PID" "$WORK/presenced.log"
    "$BIN/presence-gateway" serve --listen 127.0.0.1:18080 --link 127.0.0.1:17060 \
        --secret-file "$WORK/secret" --create-secret --max-connections 100000 \
        >"$WORK/gateway.log" 2>&1 &
    GW_PID=$!
    wait_port tcp 18080 "$GW_PID" "$WORK/gateway.log"
    cpu0=$(cpu_s "$GW_PID")
    t0=$(date +%s.%N)
    "$BIN/presence-loadgen" --target ws://127.0.0.1:18080 --gateway-secret-file "$WORK/secret" \
        --users "$n" --duration "$DURATION" --toggle-every "$TOGGLE" --json \
        >"$WORK/lg.json" 2>"$WORK/lg.err" || { cat "$WORK/lg.err" "$WORK/lg.json" >&2; exit 1; }
    t1=$(date +%s.%N)
    cpu1=$(cpu_s "$GW_PID")
    kill "$GW_PID" "$PD_PID"
    wait "$GW_PID" "$PD_PID" 2>/dev/null || true
    GW_PID= PD_PID=
    python3 - "$WORK/lg.json" "$cpu0" "$cpu1" "$t0" "$t1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
cores = (float(sys.argv[3]) - float(sys.argv[2])) / (float(sys.argv[5]) - float(sys.argv[4]))
l = s["latency_us"]
ms = lambda us: f"{us / 1000:.1f}"
print(f"| {s['browsers']} | {s['flips'] / s['duration_s']:.0f} | {cores:.2f} | "
      f"{s['browsers'] / cores:.0f} | {ms(l['p50'])} / {ms(l['p99'])} / {ms(l['p999'])} / "
      f"{ms(l['max'])} | {s['missed']} |")
PY
done
