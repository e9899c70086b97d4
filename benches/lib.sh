# Shell helpers shared by the bench scripts (compare.sh, scaling.sh, ab.sh, fanout.sh,
# flood.sh); sourced, not run.

# CPU seconds (user + system) a process has used.
cpu_s() {
    local ticks
    ticks=$(sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}')
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t / hz }'
}

# A /proc/<pid>/status field, in bytes.
mem_b() { awk -v f="$2:" '$1 == f { print $2 * 1024 }' "/proc/$1/status"; }

# wait_port tcp|udp PORT PID LOG: waits until 127.0.0.1:PORT is open and it is PID that opened
# it (not a stale server); exits with PID's log if PID exits or never opens it.
wait_port() {
    for _ in $(seq 100); do
        if ! kill -0 "$3" 2>/dev/null; then
            echo "$(basename "$0"): the server exited (is another one already on port $2?):" >&2
            cat "$4" >&2
            exit 1
        fi
        if ss -lnp"${1:0:1}" | grep "127.0.0.1:$2 " | grep -q "pid=$3,"; then return 0; fi
        sleep 0.1
    done
    echo "$(basename "$0"): nothing of pid $3 listens on $1 port $2" >&2
    exit 1
}

# A scratch directory in $WORK, and a trap that stops the daemon in $PD_PID (when set) and
# removes the directory when the script exits.
work_dir() {
    WORK=$(mktemp -d)
    PD_PID=
    trap 'cleanup_work' EXIT INT TERM
}
cleanup_work() {
    if [ -n "${PD_PID:-}" ]; then kill "$PD_PID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$WORK"
}

# side_of SIDE: for an A/B script given DIR_A in $A and DIR_B in $B, sets `dir` to SIDE's
# build directory and `sets` to its extra daemon settings ($SET_A or $SET_B, "key=value"
# words) as --set arguments.
side_of() {
    local extra pair
    if [ "$1" = A ]; then dir=$A; extra=${SET_A:-}; else dir=$B; extra=${SET_B:-}; fi
    sets=()
    for pair in $extra; do sets+=(--set "$pair"); done
}

# Stops the daemon in $PD_PID and forgets it.
stop_daemon() {
    kill "$PD_PID"
    wait "$PD_PID" 2>/dev/null || true
    PD_PID=
}
