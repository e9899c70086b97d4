#!/usr/bin/env bash
# Fan-out efficiency, A/B of two builds in one run: fresh daemons of build A and build B in
# turn (A, B, A, B, …), SHARDS shards (1), pinned to DAEMON_CORES (0), each build's own load
# generator pinned to GEN_CORES (the rest) running `--scenario fanout`: --churn logins and
# logouts a second among --users users, each transition pushed to --observers links
# subscribed to every user. Prints, per run and as medians, the events delivered (transitions
# observed, summed over the observers) per second of the send window, and per CPU-second of
# the daemon, of each of its thread kinds (hub: every hub-N thread summed, link, shard) and of
# the load generator, and B ÷ A. The side with fewer events per CPU-second is the one that
# limits a host; the load generator's figure says whether the measurement itself did. See
# benches/README.md.
#
# Usage: benches/fanout.sh DIR_A DIR_B [--runs R] [--users N] [--churn N] [--observers K]
#        [--duration D] [--shards S]
# DIR_A and DIR_B hold release binaries `presenced` and `presence-loadgen` (give the same
# directory twice to compare settings). Environment: RUNS (5), USERS (100k), CHURN (50k),
# OBSERVERS (8), DURATION (10s), SHARDS (1), DAEMON_CORES (0), GEN_CORES (1-), SET_A and
# SET_B (extra daemon settings, e.g. SET_B="link.hubs=2 link.endpoints=2"). On a many-core
# host give the daemon several cores and keep some for its service threads, e.g.
# DAEMON_CORES=0-7 SHARDS=4 SET_B="shards.service_cores=4 link.hubs=2" OBSERVERS=64.
#
# Needs: python3, taskset (util-linux), 2 cores or more. Loopback only: 127.0.0.1:7370
# (heartbeats), :7360 (push link). Stopped on exit.
set -euo pipefail

[ $# -ge 2 ] || { sed -n '2,23p' "$0"; exit 2; }
A=$1
B=$2
shift 2
RUNS=${RUNS:-5}
USERS=${USERS:-100k}
CHURN=${CHURN:-50k}
OBSERVERS=${OBSERVERS:-8}
DURATION=${DURATION:-10s}
SHARDS=${SHARDS:-1}
DAEMON_CORES=${DAEMON_CORES:-0}
GEN_CORES=${GEN_CORES:-1-$(($(nproc) - 1))}
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --users) USERS=$2; shift 2 ;;
        --churn) CHURN=$2; shift 2 ;;
        --observers) OBSERVERS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --shards) SHARDS=$2; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "fanout.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for dir in "$A" "$B"; do
    for bin in presenced presence-loadgen; do
        [ -x "$dir/$bin" ] || { echo "fanout.sh: $dir/$bin is missing (build with cargo build --release)" >&2; exit 1; }
    done
done
command -v python3 >/dev/null || { echo "fanout.sh: python3 is needed to read the summaries" >&2; exit 1; }
command -v taskset >/dev/null || { echo "fanout.sh: taskset (util-linux) is needed to pin" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "fanout.sh: needs 2 cores (daemon and generator apart)" >&2; exit 1; }

# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
work_dir

# CPU seconds of each of a process's threads, one "name seconds" line each.
thread_cpu() {
    local hz t
    hz=$(getconf CLK_TCK)
    for t in /proc/"$1"/task/*; do
        sed 's/.*) //' "$t/stat" | awk -v n="$(cat "$t/comm")" -v hz="$hz" '{ printf "%s %.3f\n", n, ($12 + $13) / hz }'
    done
}

for run in $(seq "$RUNS"); do
    for side in A B; do
        side_of "$side"
        taskset -c "$DAEMON_CORES" "$dir/presenced" --shards "$SHARDS" --listen 127.0.0.1:7370 \
            --link-listen 127.0.0.1:7360 --set state.enabled=false "${sets[@]}" \
            >"$WORK/presenced.log" 2>&1 &
        PD_PID=$!
        wait_port udp 7360 "$PD_PID" "$WORK/presenced.log"
        thread_cpu "$PD_PID" >"$WORK/$side.$run.before"
        /usr/bin/env time -f "%U %S" -o "$WORK/$side.$run.gen" \
            taskset -c "$GEN_CORES" "$dir/presence-loadgen" --link 127.0.0.1:7360 \
            --scenario fanout --observers "$OBSERVERS" --users "$USERS" --devices 1 \
            --churn "$CHURN" --duration "$DURATION" --quiet --json >"$WORK/$side.$run.json"
        thread_cpu "$PD_PID" >"$WORK/$side.$run.after"
        stop_daemon
        echo "fanout.sh: run $run, $side done" >&2
    done
done

python3 - "$WORK" "$RUNS" "$A" "$B" "${SET_A:-}" "${SET_B:-}" <<'PY'
import collections, json, statistics, sys
work, runs, a_dir, b_dir, set_a, set_b = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]

def threads(path):
    kinds = collections.Counter()
    for line in open(path):
        name, secs = line.split()
        # Threads are named shard-N, hub-N (hub before link.hubs), link, store, …
        kind = name.split("-")[0] if name.startswith(("shard-", "hub-")) else name
        kinds[kind if kind in ("hub", "link", "shard") else "other"] += float(secs)
    return kinds

KINDS = ["daemon", "hub", "link", "shard", "loadgen"]
rows = {"A": [], "B": []}
for side in rows:
    for r in range(1, runs + 1):
        s = json.load(open(f"{work}/{side}.{r}.json"))
        events = s["transitions"]["observed"]
        before, after = threads(f"{work}/{side}.{r}.before"), threads(f"{work}/{side}.{r}.after")
        used = {k: after[k] - before[k] for k in after}
        used["daemon"] = sum(used.values())
        user, system = map(float, open(f"{work}/{side}.{r}.gen").read().split())
        used["loadgen"] = user + system
        per = {k: events / used[k] if used.get(k, 0) > 0 else 0.0 for k in KINDS}
        # Delivered a second of the send window: what a host pushes, where per CPU-second
        # says what it costs.
        rate = events / s["sent"]["seconds"] if s["sent"]["seconds"] > 0 else 0.0
        rows[side].append((events, per, s["violations"], s["daemon"]["events_dropped"], rate))
print(f"\nA = {a_dir} {set_a}\nB = {b_dir} {set_b}\n")
print("Events delivered per CPU-second (M):\n")
print("| run | side | events | events/s | " + " | ".join(KINDS) + " | dropped |")
print("|---:|---|---:|---:|" + "---:|" * len(KINDS) + "---:|")
for r in range(runs):
    for side in "AB":
        ev, per, _, dropped, rate = rows[side][r]
        cells = " | ".join(f"{per[k] / 1e6:.2f}" for k in KINDS)
        print(f"| {r + 1} | {side} | {ev / 1e6:.2f} M | {rate / 1e6:.2f} M | {cells} | {dropped} |")
med = {side: {k: statistics.median(x[1][k] for x in v) for k in KINDS} for side, v in rows.items()}
for side in "AB":
    cells = " | ".join(f"{med[side][k] / 1e6:.2f}" for k in KINDS)
    rate = statistics.median(x[4] for x in rows[side])
    print(f"| median | {side} | | {rate / 1e6:.2f} M | {cells} | |")
ratios = ", ".join(f"{k} {med['B'][k] / med['A'][k]:.3f}" for k in KINDS if med["A"][k] > 0)
viol = {side: sum(x[2] for x in v) for side, v in rows.items()}
print(f"\nB / A per CPU-second: {ratios}; violations A {viol['A']}, B {viol['B']}")
PY
