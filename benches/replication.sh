#!/usr/bin/env bash
# The cost of replication in a presenced cluster, A/B in one run: one etcd, then two fresh
# members with cluster.replicas=1 (A) and two with cluster.replicas=2 (B) in turn (A, B, A, B,
# …), each pair driven by `presence-loadgen --cluster` at a fixed --rate (steady: every user
# online, each device heartbeating on its own schedule). Prints, per run and as medians, the
# CPU-seconds of all members together (user + system, from /proc, from just before the load
# generator starts until it ends: heartbeats, the observers' pushes, the logout sweep) per
# accepted user heartbeat, and B ÷ A. An accepted user heartbeat counts each user heartbeat
# entry once, however many replicas got it: the load generator's
# cluster.accepted_user_entries (the members' applied heartbeats × user entries ÷ entries
# sent to replicas). See benches/README.md "Cluster: the cost of replication".
#
# Usage: benches/replication.sh DIR [--runs R] [--rate N] [--users N] [--duration D]
# DIR holds release binaries `presenced`, `presence-loadgen` and `presencectl`. Environment:
# RUNS (3), RATE (20k: heartbeats a second offered, each once), USERS (20k, one device each),
# DURATION (10s), DAEMON_CORES (0: both members), GEN_CORES (1-).
#
# Needs: etcd (Debian's etcd-server), python3, taskset (util-linux), 2 cores or more.
# Loopback only: 127.0.0.1:7479 and :7480 (etcd), :7471-7472 (heartbeats), :7461-7462 (push
# links). Stopped on exit.
set -euo pipefail

[ $# -ge 1 ] || { sed -n '2,20p' "$0"; exit 2; }
DIR=$1
shift
RUNS=${RUNS:-3}
RATE=${RATE:-20k}
USERS=${USERS:-20k}
DURATION=${DURATION:-10s}
DAEMON_CORES=${DAEMON_CORES:-0}
GEN_CORES=${GEN_CORES:-1-$(($(nproc) - 1))}
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --users) USERS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "replication.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for bin in presenced presence-loadgen presencectl; do
    [ -x "$DIR/$bin" ] || { echo "replication.sh: $DIR/$bin is missing (build with cargo build --release)" >&2; exit 1; }
done
command -v etcd >/dev/null || { echo "replication.sh: etcd (Debian's etcd-server) is needed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "replication.sh: python3 is needed to read the summaries" >&2; exit 1; }
command -v taskset >/dev/null || { echo "replication.sh: taskset (util-linux) is needed to pin" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "replication.sh: needs 2 cores (members and generator apart)" >&2; exit 1; }

# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
work_dir
ETCD_PID=
MEMBERS=()
stop_all() {
    local pid
    for pid in "${MEMBERS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${MEMBERS[@]}"; do wait "$pid" 2>/dev/null || true; done
    MEMBERS=()
}
trap 'stop_all; if [ -n "$ETCD_PID" ]; then kill "$ETCD_PID" 2>/dev/null || true; fi; cleanup_work' EXIT INT TERM

etcd --name default --data-dir "$WORK/etcd" \
    --listen-client-urls http://127.0.0.1:7479 --advertise-client-urls http://127.0.0.1:7479 \
    --listen-peer-urls http://127.0.0.1:7480 --initial-advertise-peer-urls http://127.0.0.1:7480 \
    --initial-cluster default=http://127.0.0.1:7480 --log-level error --logger zap \
    >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
wait_port tcp 7479 "$ETCD_PID" "$WORK/etcd.log"

# start_members NAME REPLICAS: two members of cluster NAME, waited for until both are in its
# map and warm.
start_members() {
    local i
    for i in 1 2; do
        taskset -c "$DAEMON_CORES" "$DIR/presenced" --shards 1 --listen "127.0.0.1:747$i" \
            --link-listen "127.0.0.1:746$i" --set state.enabled=false --set ingest.shard_ports=false \
            --set cluster.etcd=http://127.0.0.1:7479 --set "cluster.name=$1" \
            --set "cluster.member=m$i" --set "cluster.replicas=$2" --set cluster.warm=1s \
            >"$WORK/m$i.log" 2>&1 &
        MEMBERS+=($!)
        wait_port udp "746$i" "$!" "$WORK/m$i.log"
    done
    for _ in $(seq 100); do
        if "$DIR/presencectl" --cluster 127.0.0.1:7461 members --json 2>/dev/null | python3 -c '
import json, sys, time
m = json.loads(sys.stdin.read())
ok = len(m["members"]) == 2 and all(x["warm_at_ms"] <= time.time() * 1000 for x in m["members"])
sys.exit(0 if ok else 1)' 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    echo "replication.sh: the members of $1 did not both join and warm within 20 s" >&2
    cat "$WORK"/m*.log >&2
    exit 1
}

members_cpu() {
    local pid total=0
    for pid in "${MEMBERS[@]}"; do total=$(awk -v a="$total" -v b="$(cpu_s "$pid")" 'BEGIN { printf "%.3f", a + b }'); done
    echo "$total"
}

for run in $(seq "$RUNS"); do
    for side in A B; do
        replicas=1
        [ "$side" = B ] && replicas=2
        start_members "repl-$run-$side" "$replicas"
        before=$(members_cpu)
        taskset -c "$GEN_CORES" "$DIR/presence-loadgen" --cluster 127.0.0.1:7461,127.0.0.1:7462 \
            --users "$USERS" --devices 1 --rate "$RATE" --duration "$DURATION" --quiet --json \
            >"$WORK/$side.$run.json"
        after=$(members_cpu)
        echo "$before $after" >"$WORK/$side.$run.cpu"
        stop_all
        echo "replication.sh: run $run, $side (replicas $replicas) done" >&2
    done
done

python3 - "$WORK" "$RUNS" "$RATE" "$USERS" "$DURATION" <<'PY'
import json, statistics, sys
work, runs, rate, users, duration = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
rows = {"A": [], "B": []}
for side in rows:
    for r in range(1, runs + 1):
        s = json.load(open(f"{work}/{side}.{r}.json"))
        before, after = map(float, open(f"{work}/{side}.{r}.cpu").read().split())
        c = s["cluster"]
        accepted = c["accepted_user_entries"]
        cpu = after - before
        rows[side].append({
            "accepted": accepted, "cpu": cpu, "us_per": cpu / accepted * 1e6 if accepted else 0.0,
            "replica_entries": c["replica_entries"], "user_entries": c["user_entries"],
            "applied": c["applied"], "violations": s["violations"],
            "loss": s["loss"]["entries"],
        })
print(f"\n--rate {rate} --users {users} --devices 1 --duration {duration}; "
      "A = cluster.replicas=1, B = cluster.replicas=2; two members\n")
print("| run | side | user entries | to replicas | applied | accepted | members' CPU s | µs CPU per accepted heartbeat | entry loss | violations |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in range(runs):
    for side in "AB":
        x = rows[side][r]
        print(f"| {r + 1} | {side} | {x['user_entries']} | {x['replica_entries']} | {x['applied']} | "
              f"{x['accepted']:.0f} | {x['cpu']:.2f} | {x['us_per']:.2f} | {100 * x['loss']:.3f} % | {x['violations']} |")
med = {side: statistics.median(x["us_per"] for x in v) for side, v in rows.items()}
for side in "AB":
    print(f"| median | {side} | | | | | | {med[side]:.2f} | | |")
ratio = med["B"] / med["A"] if med["A"] > 0 else float("nan")
print(f"\nCPU per accepted user heartbeat, all members: replicas=1 {med['A']:.2f} µs, "
      f"replicas=2 {med['B']:.2f} µs; B / A {ratio:.3f}")
PY
