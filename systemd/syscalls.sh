#!/usr/bin/env bash
# Checks that the unit's system call filter lets presenced work: every system call in an strace
# log of the daemon (`strace -f -o LOG presenced ...`, through start, traffic, SIGHUP and
# SIGTERM) must be one that the unit's SystemCallFilter= lines allow. .ci/package.sh records
# such a log from the installed package.
#
#   bash systemd/syscalls.sh LOG [UNIT]     (UNIT: systemd/presenced.service by default)
set -euo pipefail
cd "$(dirname "$0")/.."

log=${1:?usage: $0 STRACE_LOG [UNIT]}
unit=${2:-systemd/presenced.service}

# The system calls of a group, its nested groups expanded (systemd-analyze syscall-filter prints
# the group's name first, then its members, one per line, and # comments).
expand() {
  case $1 in
    @*)
      systemd-analyze syscall-filter "$1" 2>/dev/null |
        awk 'NR > 1 && !/^[ \t]*#/ && NF { print $1 }' |
        while read -r member; do expand "$member"; done
      ;;
    *) echo "$1" ;;
  esac
}

# systemd's order: the first line without ~ starts an allow list; a ~ line removes from it, a
# later line without ~ adds to it again.
allowed=$(mktemp)
trap 'rm -f "$allowed" "$allowed.next" "$allowed.items"' EXIT
: >"$allowed"
lines=0
while IFS= read -r value; do
  lines=$((lines + 1))
  deny=false
  case $value in "~"*) deny=true; value=${value#\~} ;; esac
  for item in $value; do expand "$item"; done | sort -u >"$allowed.items"
  if $deny; then
    comm -23 "$allowed" "$allowed.items" >"$allowed.next"
  else
    sort -u "$allowed" "$allowed.items" >"$allowed.next"
  fi
  mv "$allowed.next" "$allowed"
done < <(sed -n 's/^SystemCallFilter=//p' "$unit")
[ "$lines" -gt 0 ] || { echo "syscalls.sh: $unit has no SystemCallFilter=" >&2; exit 1; }
[ -s "$allowed" ] || { echo "syscalls.sh: the filter allows nothing" >&2; exit 1; }

used=$(awk '{ call = $2; sub(/\(.*/, "", call); if (call ~ /^[a-z_0-9]+$/) print call }' "$log" |
  sort -u)
[ -n "$used" ] || { echo "syscalls.sh: no system calls in $log" >&2; exit 1; }
refused=$(comm -23 <(echo "$used") "$allowed")
echo "$(wc -l <<<"$used") distinct system calls in $log; $(wc -l <"$allowed") allowed by $unit"
if [ -n "$refused" ]; then
  echo "syscalls.sh: presenced made system calls the unit's filter refuses:" $refused >&2
  exit 1
fi
echo "every one allowed"
