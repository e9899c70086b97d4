#!/usr/bin/env bash
# A signed-garbage flood on the shared heartbeat port beside valid gateways, A/B of two builds
# in one run: fresh daemons of build A and build B in turn (A, B, A, B, …), each
# authenticating (a key file of its own), with a short deadline (interval 1 s, grace 500 ms:
# a user silent for 2 s goes offline); each build's load generator keeps --users users online
# (`steady`, signed, from 127.0.0.1) for 25 s while, from second 7, `presence-flood` sends
# random, forged and replayed datagrams from 127.0.0.3 with FLOOD_THREADS threads for 12 s.
# Every offline the generator did not cause is a false transition (`spurious`): a valid
# datagram lost in the kernel while the flood filled the socket. Prints each run's flood rate,
# false transitions, the daemon's kernel drops and the generator's late beats. See
# benches/README.md ("Garbage flood").
#
# Usage: benches/flood.sh DIR_A DIR_B [--runs R]
# DIR_A and DIR_B hold release binaries `presenced`, `presence-loadgen`, `presence-flood`.
# Environment: RUNS (2), USERS (50k), FLOOD_THREADS (2), SET_A and SET_B (extra daemon
# settings, e.g. SET_B="ingest.allow=127.0.0.1/32").
#
# Needs: python3. Loopback only: the daemon's default ports (127.0.0.1:7070 heartbeats,
# :7060 push link, shard ports from :7071). Stopped on exit.
set -euo pipefail

[ $# -ge 2 ] || { sed -n '2,19p' "$0"; exit 2; }
A=$1
B=$2
shift 2
RUNS=${RUNS:-2}
USERS=${USERS:-50k}
FLOOD_THREADS=${FLOOD_THREADS:-2}
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "flood.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for dir in "$A" "$B"; do
    for bin in presenced presence-loadgen presence-flood; do
        [ -x "$dir/$bin" ] || { echo "flood.sh: $dir/$bin is missing (build with cargo build --release)" >&2; exit 1; }
    done
done
command -v python3 >/dev/null || { echo "flood.sh: python3 is needed to read the summaries" >&2; exit 1; }

# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
work_dir

KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$KEY" >"$WORK/key"
# Gateways 1..4 (the generator's) and the clean-up gateway, each with the key.
{
    echo "[gateways]"
    for g in 1 2 3 4 4294967295; do echo "$g = \"$KEY\""; done
} >"$WORK/keys.toml"
chmod 600 "$WORK/key" "$WORK/keys.toml"

for run in $(seq "$RUNS"); do
    for side in A B; do
        side_of "$side"
        "$dir/presenced" --set "auth.keys_file=$WORK/keys.toml" --set state.enabled=false \
            --set presence.heartbeat_interval=1s --set presence.grace=500ms "${sets[@]}" \
            >"$WORK/presenced.log" 2>&1 &
        PD_PID=$!
        wait_port udp 7060 "$PD_PID" "$WORK/presenced.log"
        "$dir/presence-loadgen" --key-file "$WORK/key" --scenario steady --users "$USERS" \
            --devices 1 --duration 25s --quiet --json >"$WORK/$side.$run.json" &
        gen=$!
        sleep 7
        "$dir/presence-flood" --target 127.0.0.1:7070 --source 127.0.0.3 \
            --threads "$FLOOD_THREADS" --duration 12s --json >"$WORK/$side.$run.flood"
        wait "$gen" || true
        stop_daemon
        echo "flood.sh: run $run, $side done" >&2
    done
done

python3 - "$WORK" "$RUNS" "$A" "$B" "${SET_A:-}" "${SET_B:-}" <<'PY'
import json, sys
work, runs, a_dir, b_dir, set_a, set_b = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
print(f"\nA = {a_dir} {set_a}\nB = {b_dir} {set_b}\n")
print("| run | side | flood datagrams/s | false transitions | missing | kernel dropped | accepted/s | late beats |")
print("|---:|---|---:|---:|---:|---:|---:|---:|")
for r in range(1, runs + 1):
    for side in "AB":
        g = json.load(open(f"{work}/{side}.{r}.json"))
        f = json.load(open(f"{work}/{side}.{r}.flood"))
        t, d = g["transitions"], g["daemon"]
        print(f"| {r} | {side} | {f['rate_per_s'] / 1e3:.0f}k | {t['spurious']} | {t['missing']} "
              f"| {d['kernel_dropped']:,} | {d['accepted_per_s'] / 1e3:.1f}k | {g['sent']['late']} |")
PY
