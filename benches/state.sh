#!/usr/bin/env bash
# Durable state, measured (benches/README.md, "Durable state"). Four parts; each prints its
# table (markdown, on stdout) as soon as it is done:
#
#   1  snapshot pass, snapshot write and restore of one shard at 1M and 10M users, through the
#      shard node and the store: `cargo bench -p presenced-store --bench shard_state`
#      (criterion; its medians are read back from the target directory);
#   2  the transition log during a storm: the daemon with state on (1 shard), --storm-users
#      (1M) users of presence-loadgen's storm (interval 2 s, grace 500 ms: everyone logs in,
#      all go silent and time out within one 2-s period, all reconnect at once, all log out);
#      `presencectl stats --json` polled every 0.1 s: records logged per second at the peak,
#      how far the log fell behind the transitions emitted, syncs, errors, what was shed;
#   3  a restart with --restart-users (10M) saved, with 1 and with 2 shards (--restart-shards):
#      fill (every user's first heartbeat within --fill-interval, 10 s), SIGTERM (every shard
#      snapshots at stop) timed to exit with the peak RSS (VmHWM sampled every 20 ms), start
#      again on the same directory timed from spawn to READY=1 on a NOTIFY_SOCKET this script
#      listens on; restore_ms, users from snapshots and transitions replayed from stats. Twice
#      per run: SIGTERM right after the fill, and SIGTERM once every shard has written a
#      periodic snapshot after the fill (state.snapshot_interval=10s);
#   4  snapshots under load, A/B/C in one run: fresh daemons in turn (1 shard) with snapshots
#      back to back (state.snapshot_interval=1s), state on without periodic snapshots (1d),
#      and state off, each under the same presence-loadgen churn (2,000 logins and logouts a
#      second) at a constant --rate (2M heartbeats/s) with --stall-users (1M) users:
#      heartbeats accepted/s, transition latency p50/p99, the daemon's own latency, snapshots
#      written, kernel drops. Medians, and the ratios between the modes.
#
# Usage: benches/state.sh [--parts "1 2 3 4"] [--runs R] [--storm-users N] [--restart-users N]
#            [--restart-shards "1 2"] [--fill-interval SECONDS] [--stall-users "1M 10M"]
#            [--rate R] [--duration D] [--bin DIR] [--no-build]
# Environment (same meaning; flags win): PARTS, RUNS (3), STORM_USERS (1M), RESTART_USERS
# (10M), RESTART_SHARDS ("1 2"), FILL_INTERVAL (10), STALL_USERS (1M), RATE (2M), DURATION
# (20s), BIN, NO_BUILD=1; KEEP_WORK=1 keeps the temporary directory (logs, JSON, stats polls).
# Builds release binaries with cargo (CARGO_TARGET_DIR is honoured) unless --no-build or --bin
# DIR (a directory holding presenced, presencectl and presence-loadgen; part 1 always runs
# cargo bench). State directories go in a temporary directory under TMPDIR (10M users: about
# 1.5 GB; part 1 puts its files under STORE_BENCH_DIR or TMPDIR), removed on exit. On the
# 2-core VM: part 1 about 6 minutes, part 2 about 1.5, part 3 about 1 per run, variant and
# shard count, part 4 about 0.5 per run and mode; up to 3 GB of memory.
#
# Needs: cargo, python3, taskset (util-linux). Loopback only: presenced on 127.0.0.1:7570
# (heartbeats; shard ports from 7571) and :7560 (push link). Every daemon started is stopped
# on exit.
set -euo pipefail

PARTS=${PARTS:-1 2 3 4}
RUNS=${RUNS:-3}
STORM_USERS=${STORM_USERS:-1M}
RESTART_USERS=${RESTART_USERS:-10M}
RESTART_SHARDS=${RESTART_SHARDS:-1 2}
FILL_INTERVAL=${FILL_INTERVAL:-10}
STALL_USERS=${STALL_USERS:-1M}
RATE=${RATE:-2M}
DURATION=${DURATION:-20s}
BIN=${BIN:-}
NO_BUILD=${NO_BUILD:-0}
while [ $# -gt 0 ]; do
    case "$1" in
        --parts) PARTS=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --storm-users) STORM_USERS=$2; shift 2 ;;
        --restart-users) RESTART_USERS=$2; shift 2 ;;
        --restart-shards) RESTART_SHARDS=$2; shift 2 ;;
        --fill-interval) FILL_INTERVAL=$2; shift 2 ;;
        --stall-users) STALL_USERS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --bin) BIN=$2; NO_BUILD=1; shift 2 ;;
        --no-build) NO_BUILD=1; shift ;;
        -h|--help) sed -n '2,/^set -e/{/^set -e/!p}' "$0"; exit 0 ;;
        *) echo "state.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

for p in $PARTS; do
    case $p in 1|2|3|4) ;; *) echo "state.sh: no part $p (1 to 4)" >&2; exit 2 ;; esac
done
if [ -n "$BIN" ]; then
    [ -d "$BIN" ] || { echo "state.sh: no directory $BIN" >&2; exit 1; }
    BIN=$(cd "$BIN" && pwd)
fi
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "state.sh: python3 is needed" >&2; exit 1; }
command -v taskset >/dev/null || { echo "state.sh: taskset (util-linux) is needed" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-target}
if [ "$NO_BUILD" != 1 ]; then
    cargo build --release -p presenced -p presenced-tools \
        --bin presenced --bin presencectl --bin presence-loadgen
fi
BIN=${BIN:-$TARGET/release}
for bin in presenced presencectl presence-loadgen; do
    [ -x "$BIN/$bin" ] || { echo "state.sh: $BIN/$bin is missing" >&2; exit 1; }
done

# shellcheck source=benches/lib.sh
. benches/lib.sh

HB=7570
LINK=7560
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "state.sh: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

say() { echo "state.sh: $*" >&2; }
# `10M` → 10000000.
count() {
    python3 -c 'import sys; s=sys.argv[1]; m={"k":10**3,"M":10**6,"G":10**9}
print(int(float(s[:-1])*m[s[-1]]) if s[-1] in m else int(s))' "$1"
}
now_ns() { date +%s%N; }
stats() { "$BIN/presencectl" --link "127.0.0.1:$LINK" stats --json; }
# The generator on the last core, away from shard 0 (pinned to the first).
gen() { taskset -c "$(($(nproc) - 1))" "$BIN/presence-loadgen" --link "127.0.0.1:$LINK" "$@"; }

# wait_ready LOG: waits for the daemon's "presenced ready" line (printed once every socket is
# bound, the state restored and every thread started); exits with the log if it stops first.
wait_ready() {
    for _ in $(seq 3000); do
        grep -q '^presenced ready' "$1" && return 0
        if ! kill -0 "$PD" 2>/dev/null; then
            say "the daemon exited (is another one on port $HB or $LINK?):"
            cat "$1" >&2
            exit 1
        fi
        sleep 0.02
    done
    say "the daemon was not ready in 60 s"
    exit 1
}

# start_daemon LOG ARGS...: starts presenced on the bench ports and waits until it is ready.
PD=
start_daemon() {
    local log=$1
    shift
    "$BIN/presenced" --listen "127.0.0.1:$HB" --link-listen "127.0.0.1:$LINK" "$@" \
        >"$log" 2>&1 &
    PD=$!
    PIDS+=("$PD")
    wait_ready "$log"
}

# stop_daemon: SIGTERM, then waits for the exit; prints the ms it took and the last VmHWM
# (bytes) sampled every 20 ms until then.
stop_daemon() {
    local t0 hwm=0 h
    t0=$(now_ns)
    kill -TERM "$PD"
    while kill -0 "$PD" 2>/dev/null; do
        h=$(mem_b "$PD" VmHWM 2>/dev/null || true)
        [ -n "$h" ] || break
        hwm=$h
        sleep 0.02
    done
    wait "$PD" 2>/dev/null || true
    echo "$((($(now_ns) - t0) / 1000000)) $hwm"
    PD=
}

# poll_stats FILE: appends "unix-ns json" lines every 0.1 s while the daemon runs.
poll_stats() {
    while kill -0 "$PD" 2>/dev/null; do
        local t s
        t=$(now_ns)
        s=$(stats 2>/dev/null) && echo "$t $s" >>"$1"
        sleep 0.1
    done
}

echo "state.sh: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1e6 }' /proc/meminfo), \
load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')\
$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')" >&2

# ------------------------------------------------------------------------------------------
# 1. Snapshot write and restore, criterion.
part1() {
    say "part 1: cargo bench -p presenced-store --bench shard_state (about 5 minutes)"
    cargo bench -p presenced-store --bench shard_state 2>&1 | tee "$WORK/criterion.log" >&2
    python3 - "$TARGET/criterion/shard_state" "$WORK/criterion.log" <<'PY' >"$WORK/part1.md"
import json, re, sys
base, log = sys.argv[1], open(sys.argv[2]).read()
print("| users | snapshot pass, shard side (per round of 4Ki slots) | snapshot written (file) | restore |")
print("|---|---|---|---|")
for label, n in (("1M_users", 1e6), ("10M_users", 1e7)):
    med = {}
    for b in ("pass", "write", "restore"):
        try:
            e = json.load(open(f"{base}/{b}/{label}/new/estimates.json"))
            med[b] = e["median"]["point_estimate"] / 1e9
        except OSError:
            med[b] = float("nan")
    rounds = re.findall(rf"\[{label}\] pass: .*?, (\d+) rounds of \d+ slots, (\d+) µs a round", log)
    size = re.findall(rf"\[{label}\] snapshot file: (\d+) bytes", log)
    per_round = sorted(int(r[1]) for r in rounds)
    pr = f"{per_round[len(per_round) // 2]} µs" if per_round else "?"
    sz = f"{int(size[-1]) / 1e6:.0f} MB, {int(size[-1]) / n:.1f} B/user" if size else "?"
    print(f"| {label.replace('_users', '')} | {med['pass']:.3f} s ({pr}) | {med['write']:.3f} s ({sz}) | {med['restore']:.3f} s |")
PY
}

# ------------------------------------------------------------------------------------------
# 2. The log during a storm.
part2() {
    local users interval=2s
    users=$(count "$STORM_USERS")
    for run in $(seq "$RUNS"); do
        say "part 2, run $run: storm of $STORM_USERS users (interval $interval, grace 500ms)"
        rm -rf "$WORK/state2"
        start_daemon "$WORK/storm.$run.log" --shards 1 --set "presence.users_per_shard=$users" \
            --set presence.heartbeat_interval=$interval --set presence.grace=500ms \
            --set "state.dir=$WORK/state2"
        poll_stats "$WORK/storm.$run.stats" &
        local poller=$!
        PIDS+=("$poller")
        gen --scenario storm --users "$STORM_USERS" --devices 1 --threads 1 --watch 1000 \
            --quiet --json >"$WORK/storm.$run.json" || true
        now_ns >"$WORK/storm.$run.gen_done"
        # Until the log holds every transition emitted (at most 30 s more).
        for _ in $(seq 300); do
            stats >"$WORK/storm.$run.final"
            python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))
sys.exit(s["state"]["log_records"] + s["state"]["log_dropped"] + sum(x["log_shed"] for x in s["shards"]) < sum(x["transitions"] for x in s["shards"]))' \
                "$WORK/storm.$run.final" && break
            sleep 0.1
        done
        now_ns >"$WORK/storm.$run.caught_up"
        stop_daemon >/dev/null
        wait "$poller" 2>/dev/null || true
    done
    python3 - "$WORK" "$RUNS" <<'PY' >"$WORK/part2.md"
import json, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
rows = []
for r in range(1, runs + 1):
    polls = []
    for line in open(f"{work}/storm.{r}.stats"):
        t, s = line.split(" ", 1)
        s = json.loads(s)
        st = s["state"]
        emitted = sum(x["transitions"] for x in s["shards"])
        polls.append((int(t) / 1e9, st["log_records"], emitted))
    final = json.load(open(f"{work}/storm.{r}.final"))
    st = final["state"]
    emitted = sum(x["transitions"] for x in final["shards"])
    log_shed = sum(x.get("log_shed", 0) for x in final["shards"])
    # Peak records/s over windows of at least 0.5 s between polls; the largest lag of the log
    # behind the transitions emitted, at any poll.
    peak = 0.0
    for i in range(len(polls)):
        for j in range(i + 1, len(polls)):
            dt = polls[j][0] - polls[i][0]
            if dt >= 0.5:
                peak = max(peak, (polls[j][1] - polls[i][1]) / dt)
                break
    lag = max((e - l for _, l, e in polls), default=0)
    g = json.load(open(f"{work}/storm.{r}.json"))
    done = int(open(f"{work}/storm.{r}.gen_done").read()) / 1e9
    caught = int(open(f"{work}/storm.{r}.caught_up").read()) / 1e9
    behind_at_end = emitted - st["log_records"] - st["log_dropped"] - log_shed
    catch_up = f"{caught - done:.1f} s" if behind_at_end <= 0 else f"not in {caught - done:.0f} s"
    rows.append(dict(records=st["log_records"], emitted=emitted, peak=peak, lag=lag,
                     catch_up=catch_up,
                     dropped=st["log_dropped"], shed=log_shed, syncs=st["syncs"],
                     max_sync=st["max_sync_us"], errors=sum(st["errors"].values()),
                     violations=g.get("violations", "?"), polls=len(polls)))
print("| run | records logged | transitions emitted | peak records/s (≥ 0.5 s window) | most records behind | log complete after the run | log_dropped | log_shed | syncs | longest sync | errors | violations |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for i, x in enumerate(rows, 1):
    print(f"| {i} | {x['records']:,} | {x['emitted']:,} | {x['peak'] / 1e6:.2f} M | {x['lag']:,} | {x['catch_up']} | {x['dropped']} | {x['shed']} | {x['syncs']} | {x['max_sync'] / 1000:.1f} ms | {x['errors']} | {x['violations']} |")
print(f"| median | | | {statistics.median(x['peak'] for x in rows) / 1e6:.2f} M | {statistics.median(x['lag'] for x in rows):,.0f} | | | | | {statistics.median(x['max_sync'] for x in rows) / 1000:.1f} ms | | |")
PY
}

# ------------------------------------------------------------------------------------------
# 3. Restart with many users saved.
part3() {
    local users per_shard key
    users=$(count "$RESTART_USERS")
    for shards in $RESTART_SHARDS; do
        # Room for the users of each shard, 2 % over their share.
        per_shard=$((users / shards + users / shards / 50 + 1000))
        for variant in stop periodic; do
            for run in $(seq "$RUNS"); do
                key=$variant.$shards.$run
                say "part 3, $variant, $shards shard(s), run $run: fill $RESTART_USERS users"
                rm -rf "$WORK/state3"
                # stop: only the snapshot at start (of nothing) and the one at SIGTERM;
                # periodic: SIGTERM once every shard has written a periodic snapshot after the
                # fill, so the restart has one whatever the stop manages.
                local interval=1d
                [ "$variant" = periodic ] && interval=10s
                local common=(--shards "$shards" --set "presence.users_per_shard=$per_shard"
                    --set "presence.heartbeat_interval=${FILL_INTERVAL}s"
                    --set "state.dir=$WORK/state3" --set "state.snapshot_interval=$interval")
                start_daemon "$WORK/fill.$key.log" "${common[@]}"
                # Every user's first heartbeat falls in the first interval (a second one for
                # a generator that fell behind to catch up).
                gen --scenario steady --users "$RESTART_USERS" --devices 1 --threads 1 \
                    --shard-aware --watch 1000 --duration "$((2 * FILL_INTERVAL + 2))s" --no-logout \
                    --quiet --json >"$WORK/fill.$key.json" || true
                stats >"$WORK/fill.$key.stats"
                if [ "$variant" = periodic ]; then
                    local before now_snaps
                    before=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"]["snapshots"])' "$WORK/fill.$key.stats")
                    for _ in $(seq 600); do
                        now_snaps=$(stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"]["snapshots"])')
                        [ "$now_snaps" -ge $((before + shards + 1)) ] && break
                        sleep 0.1
                    done
                    stats >"$WORK/fill.$key.stats"
                fi
                say "part 3: SIGTERM with $(python3 -c 'import json,sys; print(sum(s["users"] for s in json.load(open(sys.argv[1]))["shards"]))' "$WORK/fill.$key.stats") users"
                stop_daemon >"$WORK/stop.$key"
                # The newest snapshot of each shard (file names are zero-padded log positions).
                for d in "$WORK"/state3/shard-*; do
                    find "$d" -maxdepth 1 -name 'snap-*.snap' | sort | tail -1
                done | xargs -r stat -c %s | awk '{ s += $1 } END { print s + 0 }' \
                    >"$WORK/snapbytes.$key"
                # The store logs each kind of error at most once every 10 s: a line means at
                # least one shard's final snapshot was refused.
                grep -c 'too_large' "$WORK/fill.$key.log" >"$WORK/refused.$key" || true

                # Start again: spawn → READY=1 on our notify socket.
                rm -f "$WORK/notify.sock" "$WORK/ready"
                python3 - "$WORK/notify.sock" "$WORK/ready" <<'PY' &
import socket, sys, time, os
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
open(sys.argv[2] + ".bound", "w").close()
s.settimeout(120)
while True:
    msg = s.recv(4096)
    if b"READY=1" in msg.split(b"\n"):
        t = time.time_ns()
        break
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(t))
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
PY
                local listener=$!
                PIDS+=("$listener")
                while [ ! -e "$WORK/ready.bound" ]; do sleep 0.01; done
                local t0
                t0=$(now_ns)
                NOTIFY_SOCKET="$WORK/notify.sock" "$BIN/presenced" --listen "127.0.0.1:$HB" \
                    --link-listen "127.0.0.1:$LINK" "${common[@]}" \
                    >"$WORK/restart.$key.log" 2>&1 &
                PD=$!
                PIDS+=("$PD")
                wait "$listener"
                echo $((($(cat "$WORK/ready") - t0) / 1000000)) >"$WORK/ready_ms.$key"
                rm -f "$WORK/ready.bound"
                mem_b "$PD" VmHWM >"$WORK/restart_hwm.$key"
                stats >"$WORK/restart.$key.stats"
                stop_daemon >/dev/null
                say "part 3: ready after $(cat "$WORK/ready_ms.$key") ms"
            done
        done
    done
    python3 - "$WORK" "$RUNS" "$RESTART_SHARDS" <<'PY' >"$WORK/part3.md"
import json, statistics, sys
work, runs, shard_counts = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
names = {"stop": "SIGTERM after the fill", "periodic": "SIGTERM after a periodic snapshot"}
print("| shards | SIGTERM | run | users at stop | SIGTERM → exit | peak RSS (fill + stop) | final snapshot | newest snapshot of each shard | spawn → READY=1 | restore_ms | users from snapshots | transitions replayed | RSS after restore |")
print("|---:|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
for n in shard_counts:
    for v in ("stop", "periodic"):
        rows = []
        for r in range(1, runs + 1):
            k = f"{v}.{n}.{r}"
            p = lambda name: open(f"{work}/{name}.{k}").read().split()
            fill = json.load(open(f"{work}/fill.{k}.stats"))
            rs = json.load(open(f"{work}/restart.{k}.stats"))["state"]
            stop, hwm = map(int, p("stop"))
            refused = int((p("refused") or ["0"])[0])
            rows.append(dict(users=sum(s["users"] for s in fill["shards"]), stop=stop,
                             hwm=hwm / 2**20, snap=int(p("snapbytes")[0]) / 1e6,
                             final="refused (too_large)" if refused else "written",
                             ready=int(p("ready_ms")[0]), restore=rs["restore_ms"],
                             restored=rs["restored_users"], replayed=rs["restored_transitions"],
                             rhwm=int(p("restart_hwm")[0]) / 2**20))
        for i, x in enumerate(rows, 1):
            print(f"| {n} | {names[v]} | {i} | {x['users']:,} | {x['stop']} ms | {x['hwm']:.0f} MiB | {x['final']} | {x['snap']:.0f} MB | {x['ready']} ms | {x['restore']} ms | {x['restored']:,} | {x['replayed']:,} | {x['rhwm']:.0f} MiB |")
        m = lambda k: statistics.median(x[k] for x in rows)
        print(f"| {n} | {names[v]} | median | | {m('stop'):.0f} ms | {m('hwm'):.0f} MiB | | | {m('ready'):.0f} ms | {m('restore'):.0f} ms | | | {m('rhwm'):.0f} MiB |")
PY
}

# ------------------------------------------------------------------------------------------
# 4. Snapshots under load: A/B/C in turn.
part4() {
    local users per_shard rate interval
    rate=$(count "$RATE")
    for u in $STALL_USERS; do
        users=$(count "$u")
        per_shard=$((users + users / 50))
        # The daemon's interval: each device beats every users ÷ rate s at the offered rate;
        # the daemon's heartbeat_interval is at least that, and its timeout 1 s more.
        interval=$(python3 -c "import math; print(max(1, math.ceil($users / $rate)))")s
        for run in $(seq "$RUNS"); do
            for mode in snap nosnap off; do
                local extra=()
                case $mode in
                    snap) extra=(--set state.snapshot_interval=1s) ;;
                    nosnap) extra=(--set state.snapshot_interval=1d) ;;
                    off) extra=(--set state.enabled=false) ;;
                esac
                rm -rf "$WORK/state4"
                start_daemon "$WORK/stall.$u.$mode.$run.log" --shards 1 \
                    --set "presence.users_per_shard=$per_shard" \
                    --set "presence.heartbeat_interval=$interval" --set presence.grace=500ms \
                    --set "state.dir=$WORK/state4" "${extra[@]}"
                gen --scenario churn --users "$u" --devices 1 --rate "$RATE" --churn 2000 \
                    --watch "$((users < 100000 ? users : 100000))" --threads 1 --duration "$DURATION" --quiet --json \
                    >"$WORK/stall.$u.$mode.$run.json" || true
                stats >"$WORK/stall.$u.$mode.$run.stats"
                stop_daemon >/dev/null
                say "part 4, $u users, run $run, $mode done"
            done
        done
    done
    python3 - "$WORK" "$RUNS" "$STALL_USERS" <<'PY' >"$WORK/part4.md"
import json, statistics, sys
work, runs, user_counts = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
modes = [("snap", "snapshots back to back (1 s)"), ("nosnap", "state on, no periodic snapshot (1 d)"), ("off", "state off")]
for u in user_counts:
    print(f"\n{u} users:\n")
    print("| mode | run | offered/s | accepted/s | latency p50 | p99 | daemon's part p50 / p99 | transitions timed | snapshots | kernel_dropped | late beats | violations |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    med = {}
    for mode, name in modes:
        rows = []
        for r in range(1, runs + 1):
            g = json.load(open(f"{work}/stall.{u}.{mode}.{r}.json"))
            s = json.load(open(f"{work}/stall.{u}.{mode}.{r}.stats"))
            d = g["daemon"]
            lat = g["latency_us"]
            rows.append(dict(offered=g["sent"]["per_s"], accepted=d["accepted_per_s"],
                             p50=lat["p50"] / 1000, p99=lat["p99"] / 1000, n=lat["count"],
                             dp50=s["link"]["latency_us"]["p50"], dp99=s["link"]["latency_us"]["p99"],
                             snaps=s["state"]["snapshots"],
                             kdrop=sum(x["kernel_dropped"] for x in s["shards"]),
                             late=g["sent"].get("late", 0), v=g["violations"]))
        for i, x in enumerate(rows, 1):
            print(f"| {name} | {i} | {x['offered'] / 1e6:.2f} M | {x['accepted'] / 1e6:.2f} M | {x['p50']:.2f} ms | {x['p99']:.2f} ms | {x['dp50']} / {x['dp99']} µs | {x['n']:,} | {x['snaps']} | {x['kdrop']} | {x['late']:,} | {x['v']} |")
        med[mode] = {k: statistics.median(x[k] for x in rows) for k in ("accepted", "p50", "p99", "dp99")}
        m = med[mode]
        print(f"| {name} | median | | {m['accepted'] / 1e6:.2f} M | {m['p50']:.2f} ms | {m['p99']:.2f} ms | – / {m['dp99']:.0f} µs | | | | | |")
    print()
    for a, b in (("snap", "nosnap"), ("nosnap", "off"), ("snap", "off")):
        r = lambda k: med[a][k] / med[b][k] if med[b][k] else float("nan")
        print(f"- {a} ÷ {b}: accepted/s {r('accepted'):.3f}, latency p50 {r('p50'):.2f}, p99 {r('p99'):.2f}, daemon's p99 {r('dp99'):.2f}")
PY
}

# Each part's table is printed as soon as the part is done.
for p in $PARTS; do
    case $p in
        1) part1; title="1. Snapshot of one shard, write and restore (criterion medians)" ;;
        2) part2; title="2. The log during a storm of $STORM_USERS users" ;;
        3) part3; title="3. Restart with $RESTART_USERS users saved" ;;
        4) part4; title="4. Snapshots under load: churn at $RATE heartbeats/s for $DURATION" ;;
    esac
    printf '\n## %s\n\n' "$title"
    cat "$WORK/part$p.md"
done
