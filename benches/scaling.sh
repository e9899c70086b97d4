#!/usr/bin/env bash
# The thread-per-core scaling curve: presenced with 1, 2, 4, 8 … shards, each shard pinned to
# a core of its own, and presence-loadgen (`steady --max`, shard-aware) on the cores after
# them, so that daemon and generator never share a core. Prints accepted heartbeats/s and the
# per-shard efficiency (rate with N shards ÷ N × the rate with 1). See benches/README.md.
#
# Usage: benches/scaling.sh [--shards "1 2 4 8"] [--users N] [--duration D] [--runs R]
# Environment (same meaning; flags win): SHARDS ("1 2 4 8"), USERS (1M), DURATION (10s),
# RUNS (2: the median is reported), GEN_THREADS (generator threads per shard, 1),
# NO_BUILD=1 (use the binaries already in target/release).
# A configuration that needs more cores than the machine has (N shards + N × GEN_THREADS
# generator threads) is skipped, and says so; with a core to spare, the daemon's hub and QUIC
# threads get it, else they share the shards' cores.
#
# Needs: cargo, python3, taskset (util-linux). Loopback only: presenced on 127.0.0.1:7270
# (heartbeats; shard ports from 7271) and :7260 (push link). Stopped on exit.
set -euo pipefail

SHARDS=${SHARDS:-1 2 4 8}
USERS=${USERS:-1M}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-2}
GEN_THREADS=${GEN_THREADS:-1}
while [ $# -gt 0 ]; do
    case "$1" in
        --shards) SHARDS=$2; shift 2 ;;
        --users) USERS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "scaling.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "scaling.sh: python3 is needed to read the summaries" >&2; exit 1; }
command -v taskset >/dev/null || { echo "scaling.sh: taskset (util-linux) is needed to pin" >&2; exit 1; }
if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release -p presenced -p presenced-tools --bin presenced --bin presence-loadgen
fi
BIN=target/release
CORES=$(nproc)
WORK=$(mktemp -d)
PD_PID=
cleanup() {
    [ -n "$PD_PID" ] && kill "$PD_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# shellcheck source=benches/lib.sh
. benches/lib.sh

echo "machine: $CORES cores; $USERS users, steady --max for $DURATION, median of $RUNS runs" >&2
for n in $SHARDS; do
    gen=$((n * GEN_THREADS))
    if [ $((n + gen)) -gt "$CORES" ]; then
        echo "scaling.sh: $n shard(s) need $((n + gen)) cores, this machine has $CORES: skipped" >&2
        continue
    fi
    # The daemon's cores: its shards', plus one for the hub and QUIC threads if there is one.
    last=$((n + gen < CORES ? n : n - 1))
    for run in $(seq "$RUNS"); do
        # Shards pin themselves to the first n cores the process may use; the hub and QUIC
        # threads float over the daemon's cores (no core kept for them, as when the curve was
        # first recorded); the generator gets the cores after them.
        taskset -c "0-$last" "$BIN/presenced" --shards "$n" --listen 127.0.0.1:7270 \
            --link-listen 127.0.0.1:7260 --set "presence.users_per_shard=$USERS" \
            --set shards.service_cores=0 \
            >"$WORK/presenced.log" 2>&1 &
        PD_PID=$!
        wait_port udp 7260 "$PD_PID" "$WORK/presenced.log"
        taskset -c "$((last + 1))-$((last + gen))" "$BIN/presence-loadgen" --link 127.0.0.1:7260 \
            --scenario steady --max --shard-aware --users "$USERS" --devices 1 \
            --threads "$gen" --gateways "$((gen * 4))" --watch 1000 --duration "$DURATION" \
            --quiet --json >"$WORK/$n.$run.json"
        kill "$PD_PID"
        wait "$PD_PID" 2>/dev/null || true
        PD_PID=
        echo "scaling.sh: $n shard(s), run $run done" >&2
    done
done

python3 - "$WORK" "$SHARDS" "$RUNS" <<'EOF'
import json, os, statistics, sys
work, shards, runs = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
rows = []
for n in shards:
    files = [f"{work}/{n}.{r}.json" for r in range(1, runs + 1)]
    if not all(os.path.exists(f) for f in files):
        continue
    rates, violations = [], 0
    for f in files:
        s = json.load(open(f))
        rates.append(s["daemon"]["accepted_per_s"])
        violations += s["violations"]
    rows.append((int(n), statistics.median(rates), rates, violations))
if not rows:
    sys.exit("scaling.sh: no configuration fitted on this machine")
base = rows[0][1] / rows[0][0]
print("\n| shards | accepted heartbeats/s (median) | runs | per shard | efficiency | violations |")
print("|---:|---:|---|---:|---:|---:|")
for n, rate, rates, violations in rows:
    runs_txt = ", ".join(f"{r / 1e6:.2f} M" for r in rates)
    print(f"| {n} | {rate / 1e6:.2f} M/s | {runs_txt} | {rate / n / 1e6:.2f} M/s "
          f"| {rate / n / base:.2f} | {violations} |")
print("\nefficiency: (rate with N shards ÷ N) ÷ (rate of the first row ÷ its shards)")
EOF
