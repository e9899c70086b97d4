#!/usr/bin/env bash
# A/B of two builds of presenced in one run: fresh daemons of build A and build B in turn
# (A, B, A, B, …; each with an empty state directory of its own), one shard pinned to core 0, each build's own load generator (`steady --max`,
# 1M single-device users) pinned to core 1, so that machine noise falls on both alike. Prints
# each run, the medians of the accepted heartbeats/s and of the daemon's heartbeats per
# CPU-second, and B ÷ A. See benches/README.md.
#
# Usage: benches/ab.sh DIR_A DIR_B [--runs R] [--users N] [--duration D] [--scrape-b]
# DIR_A and DIR_B hold release binaries `presenced` and `presence-loadgen` (e.g.
# ../baseline/target/release and target/release). Environment: RUNS (5), USERS (1M),
# DURATION (10s), A_ARGS and B_ARGS (more flags for that side's daemon, split at spaces: the
# same binaries under two settings, e.g. B_ARGS="--set presence.table_max_load_permille=920").
#
# --scrape-b: the cost of scraping. Both daemons serve the metrics endpoint
# (127.0.0.1:7364) and B's is scraped 10 times a second (GET /metrics, python3, on core 1)
# through the run; give the same directory twice.
#
# Needs: python3, taskset (util-linux), 2 cores or more. Loopback only: 127.0.0.1:7370
# (heartbeats), :7360 (push link) and, with --scrape-b, :7364 (metrics). Stopped on exit.
set -euo pipefail

[ $# -ge 2 ] || { sed -n '2,19p' "$0"; exit 2; }
A=$1
B=$2
shift 2
RUNS=${RUNS:-5}
USERS=${USERS:-1M}
DURATION=${DURATION:-10s}
SCRAPE_B=
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --users) USERS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --scrape-b) SCRAPE_B=1; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "ab.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for dir in "$A" "$B"; do
    for bin in presenced presence-loadgen; do
        [ -x "$dir/$bin" ] || { echo "ab.sh: $dir/$bin is missing (build with cargo build --release)" >&2; exit 1; }
    done
done
command -v python3 >/dev/null || { echo "ab.sh: python3 is needed to read the summaries" >&2; exit 1; }
command -v taskset >/dev/null || { echo "ab.sh: taskset (util-linux) is needed to pin" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "ab.sh: needs 2 cores (daemon and generator apart)" >&2; exit 1; }

WORK=$(mktemp -d)
PD_PID=
SCRAPER_PID=
cleanup() {
    [ -n "$PD_PID" ] && kill "$PD_PID" 2>/dev/null || true
    [ -n "$SCRAPER_PID" ] && kill "$SCRAPER_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"

for run in $(seq "$RUNS"); do
    for side in A B; do
        dir=$A
        [ "$side" = B ] && dir=$B
        metrics=()
        [ -n "$SCRAPE_B" ] && metrics=(--set metrics.listen=127.0.0.1:7364)
        extra_var=${side}_ARGS
        read -r -a extra <<<"${!extra_var:-}"
        taskset -c 0 "$dir/presenced" --shards 1 --listen 127.0.0.1:7370 \
            --link-listen 127.0.0.1:7360 --set "presence.users_per_shard=$USERS" \
            --set "state.dir=$WORK/state.$side.$run" "${metrics[@]}" "${extra[@]}" \
            >"$WORK/presenced.log" 2>&1 &
        PD_PID=$!
        wait_port udp 7360 "$PD_PID" "$WORK/presenced.log"
        if [ -n "$SCRAPE_B" ] && [ "$side" = B ]; then
            taskset -c 1 python3 - "$WORK/scrapes.$run" <<'PY' &
import sys, time, urllib.request
ok = 0
try:
    while True:
        started = time.monotonic()
        with urllib.request.urlopen("http://127.0.0.1:7364/metrics", timeout=2) as r:
            r.read()
        ok += 1
        open(sys.argv[1], "w").write(str(ok))
        time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
except Exception:
    pass
PY
            SCRAPER_PID=$!
        fi
        before=$(cpu_s "$PD_PID")
        taskset -c 1 "$dir/presence-loadgen" --link 127.0.0.1:7360 --scenario steady --max \
            --users "$USERS" --devices 1 --threads 1 --watch 1000 --duration "$DURATION" \
            --quiet --json >"$WORK/$side.$run.json"
        after=$(cpu_s "$PD_PID")
        echo "$before $after" >"$WORK/$side.$run.cpu"
        if [ -n "$SCRAPER_PID" ]; then
            kill "$SCRAPER_PID" 2>/dev/null || true
            wait "$SCRAPER_PID" 2>/dev/null || true
            SCRAPER_PID=
            echo "ab.sh: run $run, B scraped $(cat "$WORK/scrapes.$run" 2>/dev/null || echo 0) times" >&2
        fi
        kill "$PD_PID"
        wait "$PD_PID" 2>/dev/null || true
        PD_PID=
        echo "ab.sh: run $run, $side done" >&2
    done
done

python3 - "$WORK" "$RUNS" "$A" "$B" <<'PY'
import json, statistics, sys
work, runs, a_dir, b_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = {"A": [], "B": []}
for side in rows:
    for r in range(1, runs + 1):
        s = json.load(open(f"{work}/{side}.{r}.json"))
        before, after = map(float, open(f"{work}/{side}.{r}.cpu").read().split())
        d = s["daemon"]
        accepted = d["accepted_per_s"]
        per_cpu = d["heartbeats"] / (after - before) if after > before else 0.0
        rows[side].append((accepted, per_cpu, s["violations"]))
print(f"\nA = {a_dir}\nB = {b_dir}\n")
print("| run | A accepted/s | B accepted/s | A per daemon CPU-s | B per daemon CPU-s |")
print("|---:|---:|---:|---:|---:|")
for r in range(runs):
    a, b = rows["A"][r], rows["B"][r]
    print(f"| {r + 1} | {a[0] / 1e6:.2f} M | {b[0] / 1e6:.2f} M | {a[1] / 1e6:.2f} M | {b[1] / 1e6:.2f} M |")
med = {side: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for side, v in rows.items()}
viol = {side: sum(x[2] for x in v) for side, v in rows.items()}
print(f"| median | {med['A'][0] / 1e6:.2f} M | {med['B'][0] / 1e6:.2f} M | {med['A'][1] / 1e6:.2f} M | {med['B'][1] / 1e6:.2f} M |")
print(f"\nB / A: accepted {med['B'][0] / med['A'][0]:.3f}, per daemon CPU-second {med['B'][1] / med['A'][1]:.3f}; violations A {viol['A']}, B {viol['B']}")
PY
