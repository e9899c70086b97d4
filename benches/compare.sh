#!/usr/bin/env bash
# presenced vs the seed design's presence in Redis (SET … PX ttl per heartbeat, keyspace
# `expired` notifications for offline, logins found by SET … GET and published), loaded by the
# same presence-loadgen on the same schedule: steady --max, churn at half of each server's own
# accepted rate (transition latency), storm. Prints a side-by-side table with ratios. See
# benches/README.md.
#
# Usage: benches/compare.sh [--users N] [--duration D] [--interval D] [--grace D]
# Environment (same meaning; flags win): USERS (100k), DURATION (10s: the steady --max run),
# INTERVAL (2s) and GRACE (500ms) (both servers' timings: timeout = INTERVAL + 2 × GRACE),
# CHURN (logins + logouts per second in the churn run: 2000 per 100k users watched, so that
# every run times ~20k transitions), CHURN_DURATION (10s),
# REDIS_PORT (6399), GATEWAYS (4), NO_BUILD=1 (use the binaries already in BIN, default
# $CARGO_TARGET_DIR/release or target/release).
# Scale up with `--users 1M` (memory and expiry lateness with 1M users expiring together).
# RESTART_DURATION (20s): the restart runs (steady on schedule, the server restarted halfway
# while the gateways keep beating): presenced by SIGTERM and started again with the same
# arguments and state directory (its observers reconnect by themselves); redis-server by
# SHUTDOWN NOSAVE and started again on the same port, once without persistence and once with
# an append-only file (appendfsync everysec; a clean shutdown flushes it). Second table: false
# transitions, users changed across the restart (presenced), keys missing after it (Redis),
# reconnect times, beats lost while the server was down (Redis). RESTART=0 skips them.
# REDIS=0 measures presenced alone (for a host without redis-server; its column shows "–").
#
# Cores: each server and the generator run on cores of their own, as benches/scaling.sh does:
# SERVER_CORES (default "0-1" with four cores or more, else "0") for presenced and for
# redis-server alike, GEN_CORES (default: the cores after them) for presence-loadgen. With two
# server cores presenced keeps the first for its hub, link and store threads
# (shards.service_cores = 1) and pins its shard to the second; with one, everything shares it.
#
# Needs: cargo, python3 (to read the JSON summaries), taskset (util-linux), redis-server and
# redis-cli (installed with apt-get if missing). Loopback only: presenced on 127.0.0.1:7070
# (heartbeats) and :7060 (push link), redis-server on 127.0.0.1:$REDIS_PORT. Both are stopped
# on exit.
set -euo pipefail

USERS=${USERS:-100k}
DURATION=${DURATION:-10s}
INTERVAL=${INTERVAL:-2s}
GRACE=${GRACE:-500ms}
REDIS_PORT=${REDIS_PORT:-6399}
GATEWAYS=${GATEWAYS:-4}
CHURN_DURATION=${CHURN_DURATION:-10s}
while [ $# -gt 0 ]; do
    case "$1" in
        --users) USERS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --interval) INTERVAL=$2; shift 2 ;;
        --grace) GRACE=$2; shift 2 ;;
        -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "compare.sh: python3 is needed to read the summaries" >&2; exit 1; }
command -v taskset >/dev/null || { echo "compare.sh: taskset (util-linux) is needed to pin" >&2; exit 1; }
CORES=$(nproc)
[ "$CORES" -ge 2 ] || { echo "compare.sh: needs two cores (one for the server, one for the generator)" >&2; exit 1; }
if [ "$CORES" -ge 4 ]; then SERVER_CORES=${SERVER_CORES:-0-1}; else SERVER_CORES=${SERVER_CORES:-0}; fi
GEN_CORES=${GEN_CORES:-$(python3 -c 'import sys; last = int(sys.argv[1].split("-")[-1]); n = int(sys.argv[2])
print(f"{last + 1}-{n - 1}" if last + 1 < n - 1 else str(last + 1))' "$SERVER_CORES" "$CORES")}
# One service core when the servers have two or more, none with one.
SERVICE_CORES=$([ "${SERVER_CORES#*-}" != "$SERVER_CORES" ] && echo 1 || echo 0)
echo "compare.sh: servers on cores $SERVER_CORES, presence-loadgen on $GEN_CORES" >&2
REDIS=${REDIS:-1}
if [ "$REDIS" = 1 ]; then
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
        (apt-get update && apt-get install -y redis-server)
fi

if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release -p presenced -p presenced-tools --bin presenced --bin presence-loadgen
fi
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
WORK=$(mktemp -d)
PD_PID=
RD_PID=
cleanup() {
    [ -n "$PD_PID" ] && kill "$PD_PID" 2>/dev/null || true
    [ -f "$WORK/presenced.pid" ] && kill "$(cat "$WORK/presenced.pid")" 2>/dev/null || true
    [ -n "$RD_PID" ] && kill "$RD_PID" 2>/dev/null || true
    [ -f "$WORK/redis.pid" ] && kill "$(cat "$WORK/redis.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# shellcheck source=benches/lib.sh
. benches/lib.sh

LG=(taskset -c "$GEN_CORES" "$BIN/presence-loadgen" --users "$USERS" --devices 1 --gateways "$GATEWAYS" --quiet --json)
# The users as a number (USERS may be 100k, 1M).
N=$(python3 -c 'import sys; t = sys.argv[1].replace("_", ""); m = {"k": 1e3, "K": 1e3, "M": 1e6}
print(int(float(t[:-1]) * m[t[-1]]) if t[-1] in m else int(t))' "$USERS")
# The steady runs (and Redis's storm, timed by expiry events) watch (subscribe to) only this
# many users, so that the memory figures are the presence state, not the observers'
# subscriptions; presenced's storm watches all; the churn runs watch at most 100k.
STEADY_WATCH=$((N < 1000 ? N : 1000))
CHURN_WATCH=$((N < 100000 ? N : 100000))
# Only watched users' transitions are timed: churn scales so that ~2000/s of them are watched.
CHURN=${CHURN:-$((2000 * N / CHURN_WATCH))}

# Runs presence-loadgen; exit status 1 (violations found) still gives a summary, which the
# table reports.
lg() {
    local rc=0
    "${LG[@]}" "$@" || rc=$?
    [ "$rc" -le 1 ] || { echo "compare.sh: presence-loadgen $* failed ($rc)" >&2; exit 1; }
}

# Half of the accepted rate of a steady --max summary, but each device beating at least once
# per INTERVAL (the churn run's schedule must stay inside the timeout) and at most once per
# 2 ms (the generator's finest schedule; this binds only with a few thousand users).
half_rate() {
    python3 - "$1" "$N" "$INTERVAL" <<'EOF2'
import json, re, sys
acc = json.load(open(sys.argv[1]))["daemon"]["accepted_per_s"]
n, iv = int(sys.argv[2]), sys.argv[3]
m = re.fullmatch(r"(\d+)(us|ms|s|m|h)", iv)
secs = int(m[1]) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[m[2]]
print(int(min(max(acc / 2, n / secs), n / 0.002)))
EOF2
}

# Runs steady --max, churn at half the accepted rate and storm against one server; writes
# $WORK/<name>.*.
measure() { # name pid "storm-only-args" target-args...
    local name=$1 pid=$2 storm_args=$3
    shift 3
    local rss0 cpu0 cpu1 rate
    rss0=$(mem_b "$pid" VmRSS)
    cpu0=$(cpu_s "$pid")
    echo "compare.sh: $name: steady --max for $DURATION, $USERS users" >&2
    lg "$@" --watch "$STEADY_WATCH" --scenario steady --max --duration "$DURATION" \
        >"$WORK/$name.steady.json"
    cpu1=$(cpu_s "$pid")
    echo "$rss0 $(mem_b "$pid" VmHWM) $cpu0 $cpu1" >"$WORK/$name.proc"
    rate=$(half_rate "$WORK/$name.steady.json")
    echo "compare.sh: $name: churn $CHURN/s at $rate heartbeats/s for $CHURN_DURATION" >&2
    # One sender thread: the rate is half of what the server took, which one thread offers,
    # and a second would only compete with the server and the observer for the same cores.
    lg "$@" --watch "$CHURN_WATCH" --scenario churn --rate "$rate" --churn "$CHURN" \
        --threads 1 --duration "$CHURN_DURATION" >"$WORK/$name.churn.json"
    echo "compare.sh: $name: storm (heartbeats every $INTERVAL, then silence), $USERS users" >&2
    # shellcheck disable=SC2086
    lg "$@" $storm_args --scenario storm --interval "$INTERVAL" >"$WORK/$name.storm.json"
}

# Back-off under load is off (ingest.backoff): steady --max overloads the shard on purpose, and
# the interval it would then ask gateways for (deadlines stretched for ingest.backoff_calm
# after) would leave the storm's users online past the run; Redis has no such thing either.
# The table is sized to the users of the run, as an operator sizes it to the users expected
# (Redis grows with its keys): a table's slots fill at random, so once it holds a few users per
# page all of it is resident, and a 1M-slot table under 100k users would be mostly empty room.
taskset -c "$SERVER_CORES" "$BIN/presenced" --shards 1 --listen 127.0.0.1:7070 \
    --link-listen 127.0.0.1:7060 --set "shards.service_cores=$SERVICE_CORES" \
    --set "presence.heartbeat_interval=$INTERVAL" --set "presence.grace=$GRACE" \
    --set "presence.users_per_shard=$N" --set ingest.backoff=false \
    >"$WORK/presenced.log" 2>&1 &
PD_PID=$!
wait_port udp 7060 "$PD_PID" "$WORK/presenced.log"
measure presenced "$PD_PID" "" --link 127.0.0.1:7060
kill "$PD_PID"
wait "$PD_PID" 2>/dev/null || true
PD_PID=

# The restart run: presenced with a state directory, started by a script that the restart
# command runs again (SIGTERM, wait for the exit, start with the same arguments).
RESTART=${RESTART:-1}
RESTART_DURATION=${RESTART_DURATION:-20s}
if [ "$RESTART" = 1 ]; then
    cat >"$WORK/presenced-start.sh" <<EOF
#!/bin/sh
exec taskset -c "$SERVER_CORES" "$(realpath "$BIN")/presenced" --shards 1 \\
    --listen 127.0.0.1:7070 --link-listen 127.0.0.1:7060 --set "shards.service_cores=$SERVICE_CORES" \\
    --set "presence.heartbeat_interval=$INTERVAL" --set "presence.grace=$GRACE" \\
    --set "presence.users_per_shard=$N" --set "state.dir=$WORK/state" --set ingest.backoff=false \\
    >>"$WORK/presenced-restart.log" 2>&1
EOF
    cat >"$WORK/presenced-restart.sh" <<EOF
#!/bin/sh
pid=\$(cat "$WORK/presenced.pid")
kill -TERM "\$pid"
while kill -0 "\$pid" 2>/dev/null; do sleep 0.05; done
sh "$WORK/presenced-start.sh" </dev/null &
echo \$! >"$WORK/presenced.pid"
EOF
    sh "$WORK/presenced-start.sh" </dev/null &
    echo $! >"$WORK/presenced.pid"
    wait_port udp 7060 "$(cat "$WORK/presenced.pid")" "$WORK/presenced-restart.log"
    echo "compare.sh: presenced: steady for $RESTART_DURATION, SIGTERM restart halfway" >&2
    lg --link 127.0.0.1:7060 --watch "$CHURN_WATCH" --scenario steady \
        --duration "$RESTART_DURATION" --restart-cmd "sh $WORK/presenced-restart.sh" \
        >"$WORK/presenced.restart.json"
    kill "$(cat "$WORK/presenced.pid")" 2>/dev/null || true
    rm -f "$WORK/presenced.pid"
fi

if [ "$REDIS" = 1 ]; then
    taskset -c "$SERVER_CORES" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' \
        --appendonly no >"$WORK/redis.log" 2>&1 &
    RD_PID=$!
    wait_port tcp "$REDIS_PORT" "$RD_PID" "$WORK/redis.log"
    measure redis "$RD_PID" "--watch $STEADY_WATCH" --target "redis://127.0.0.1:$REDIS_PORT" \
        --grace "$GRACE"
    kill "$RD_PID"
    wait "$RD_PID" 2>/dev/null || true
    RD_PID=
fi

# The Redis restart runs: redis-server daemonized by a start script (its pid in
# $WORK/redis.pid), restarted by a script that stops it without an RDB save, waits until it no
# longer answers and runs the start script again.
redis_restart() { # name "persistence arguments (shell words)"
    local name=$1 dir=$WORK/$1
    mkdir -p "$dir"
    cat >"$dir/start.sh" <<EOF
#!/bin/sh
exec taskset -c "$SERVER_CORES" redis-server --bind 127.0.0.1 --port $REDIS_PORT --dir "$dir" $2 \\
    --daemonize yes --pidfile "$WORK/redis.pid" --logfile "$dir/redis.log"
EOF
    cat >"$dir/restart.sh" <<EOF
#!/bin/sh
redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1
while redis-cli -p $REDIS_PORT ping >/dev/null 2>&1; do sleep 0.05; done
exec sh "$dir/start.sh"
EOF
    sh "$dir/start.sh"
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    echo "compare.sh: $name: steady for $RESTART_DURATION, SHUTDOWN NOSAVE restart halfway" >&2
    lg --target "redis://127.0.0.1:$REDIS_PORT" --interval "$INTERVAL" --grace "$GRACE" \
        --watch "$CHURN_WATCH" --scenario steady --duration "$RESTART_DURATION" \
        --restart-cmd "sh $dir/restart.sh" >"$WORK/$name.restart.json"
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    while redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
    rm -f "$WORK/redis.pid"
}
if [ "$RESTART" = 1 ] && [ "$REDIS" = 1 ]; then
    redis_restart redis "--save '' --appendonly no"
    redis_restart redis-aof "--save '' --appendonly yes --appendfsync everysec"
fi

python3 - "$WORK" "$USERS" "$DURATION" "$INTERVAL" "$GRACE" "$CHURN" "$CHURN_DURATION" <<'EOF'
import json, sys
work, users, duration, interval, grace, churn_per_s, churn_for = sys.argv[1:8]
def load(name):
    try:
        steady = json.load(open(f"{work}/{name}.steady.json"))
    except FileNotFoundError:  # REDIS=0
        return {}
    churn = json.load(open(f"{work}/{name}.churn.json"))
    storm = json.load(open(f"{work}/{name}.storm.json"))
    rss0, hwm, cpu0, cpu1 = (float(x) for x in open(f"{work}/{name}.proc").read().split())
    n = steady["setup"]["users"]
    hb = steady["daemon"]["heartbeats"]
    cpu = max(cpu1 - cpu0, 1e-3)
    r = {
        "accepted heartbeats/s": steady["daemon"]["accepted_per_s"],
        "server CPU seconds (steady run)": cpu,
        "accepted heartbeats per CPU-second": hb / cpu,
        "churn run: heartbeats/s offered": churn["sent"]["per_s"],
        "transition latency p50 (ms, churn)": churn["latency_us"]["p50"] / 1000,
        "transition latency p99 (ms, churn)": churn["latency_us"]["p99"] / 1000,
        "transitions timed (churn)": churn["latency_us"]["count"],
        "RSS growth per online user (B)": (hwm - rss0) / n,
        "peak RSS per online user (B)": hwm / n,
        "offline lateness p50 (ms)": storm["offline_lateness_us"]["p50"] / 1000,
        "offline lateness p99 (ms)": storm["offline_lateness_us"]["p99"] / 1000,
        "offline lateness max (ms)": storm["offline_lateness_us"]["max"] / 1000,
        "offline events timed (storm)": storm["offline_lateness_us"]["count"],
        "violations (steady + churn + storm)":
            steady["violations"] + churn["violations"] + storm["violations"],
    }
    if name == "redis":
        r["used_memory per online user (B)"] = steady["daemon"]["bytes_per_user"]
        r["expiries missing (storm)"] = storm["expiries"]["missing"]
    return r
p, r = load("presenced"), load("redis")
keys = list(p) + [k for k in r if k not in p]
print(f"\n{users} users × 1 device, steady --max for {duration}; churn {churn_per_s}/s for "
      f"{churn_for} at half each server's accepted rate; storm: heartbeats every "
      f"{interval}, timeout {interval} + 2 × {grace}\n")
print(f"| {'metric':<38} | {'presenced':>14} | {'redis':>14} | {'presenced ÷ redis':>17} |")
print(f"|{'-'*40}|{'-'*16}:|{'-'*16}:|{'-'*18}:|")
def fmt(v):
    if v is None: return "–"
    if isinstance(v, int): return f"{v:,}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}"
for k in keys:
    a, b = p.get(k), r.get(k)
    ratio = f"{a / b:.2f}×" if isinstance(a, float) and isinstance(b, float) and b else "–"
    print(f"| {k:<38} | {fmt(a):>14} | {fmt(b):>14} | {ratio:>17} |")

def restart_rows(name):
    try:
        run = json.load(open(f"{work}/{name}.restart.json"))
    except FileNotFoundError:
        return None
    r = run["restart"]
    downs = [d for o in r["reconnect_down_ms"] for d in o]
    rows = {
        "restart at (s into the run)": r["at_s"],
        "restart command (ms)": r["command_s"] * 1000,
        "server answering again after (ms)": r["back_after_s"] * 1000,
        "observer reconnect, max (ms)": float(max(downs)) if downs else None,
        "observers not reconnected": r["not_reconnected"],
        "false transitions (observers)": r["false_transitions"],
        "violations (whole run)": run["violations"],
    }
    if r["compared"] is not None:
        c = r["compared"]
        rows["changed records (observers)"] = r["changed_records"]
        rows["users read before and after"] = c["users"]
        rows["users with state changed"] = c["state_changed"]
        rows["users with version changed"] = c["version_changed"]
        rows["users with last seen gone back"] = c["last_seen_back"]
    else:
        rows["devices read after the restart"] = r["devices_read"]
        rows["false offline (keys missing)"] = r["false_offline"]
        rows["commands unsent (connection down)"] = run["sent"]["unsent"]
        rows["gateway reconnect, max (ms)"] = run["connections"]["gateway_down_max_us"] / 1000
        rows["spurious expiries"] = run["expiries"]["spurious"]
    return rows
names = [("presenced", "presenced"), ("redis", "redis, no persistence"),
         ("redis-aof", "redis, appendonly")]
runs = [(title, restart_rows(n)) for n, title in names]
runs = [(t, rows) for t, rows in runs if rows is not None]
if runs:
    print(f"\nRestart: steady on schedule (interval {interval}, grace {grace}), {users} users, "
          f"the server restarted halfway\n")
    print(f"| {'metric':<38} | " + " | ".join(f"{t:>22}" for t, _ in runs) + " |")
    print(f"|{'-'*40}|" + "|".join(f"{'-'*23}:" for _ in runs) + "|")
    keys = []
    for _, rows in runs:
        keys += [k for k in rows if k not in keys]
    for k in keys:
        print(f"| {k:<38} | " + " | ".join(f"{fmt(rows.get(k)):>22}" for _, rows in runs) + " |")
EOF
