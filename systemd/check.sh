#!/usr/bin/env bash
# Holds the unit to its hardening: `systemd-analyze security` exposure at most 2.0 (lower is
# better, 0.0 to 10.0) and `systemd-analyze verify` silent. Needs systemd-analyze with
# `security --offline` (systemd 250 or later); no running systemd.
#
#   bash systemd/check.sh              the repository's unit; verify checks a copy whose
#                                      ExecStart= names a stand-in binary, without man pages
#   bash systemd/check.sh --installed  the unit the Debian package installed, as it is: its
#                                      binary and man page (Documentation=man:...) must exist
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXPOSURE=2.0
installed=false
case "${1:-}" in
  --installed) installed=true ;;
  "") ;;
  *) echo "usage: $0 [--installed]" >&2; exit 2 ;;
esac

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "check.sh: systemd-analyze not found (apt-get install systemd)" >&2
  exit 1
fi
version=$(systemd-analyze --version | awk 'NR == 1 { print $2 }')
if [ "${version%%.*}" -lt 250 ]; then
  echo "check.sh: systemd $version; security --offline needs 250 or later" >&2
  exit 1
fi

if $installed; then
  unit=/usr/lib/systemd/system/presenced.service
  [ -e "$unit" ] || unit=/lib/systemd/system/presenced.service
else
  unit=systemd/presenced.service
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "== systemd-analyze security --offline=true $unit"
systemd-analyze security --offline=true --no-pager "$unit" >"$scratch/security" 2>&1 || true
grep -v '✓' "$scratch/security" || true
exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$scratch/security")
if [ -z "$exposure" ]; then
  echo "check.sh: no exposure figure in systemd-analyze's output:" >&2
  cat "$scratch/security" >&2
  exit 1
fi
if awk -v e="$exposure" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(e > max) }'; then
  echo "check.sh: exposure $exposure is over $MAX_EXPOSURE" >&2
  exit 1
fi
echo "exposure $exposure (at most $MAX_EXPOSURE): ok"

echo "== systemd-analyze verify $unit"
if $installed && command -v man >/dev/null 2>&1; then
  verify=(systemd-analyze verify "$unit")
elif $installed; then
  # No man(1) here to look Documentation=man:presenced(8) up: check the page's file instead.
  [ -f /usr/share/man/man8/presenced.8.gz ] || {
    echo "check.sh: /usr/share/man/man8/presenced.8.gz is missing" >&2
    exit 1
  }
  verify=(systemd-analyze verify --man=no "$unit")
else
  # The unit names /usr/bin/presenced, which verify wants executable: point a copy at a
  # stand-in; the man page is checked with --installed.
  printf '#!/bin/sh\nexit 0\n' >"$scratch/presenced"
  chmod 755 "$scratch/presenced"
  sed "s|^ExecStart=/usr/bin/presenced |ExecStart=$scratch/presenced |" "$unit" \
    >"$scratch/presenced.service"
  grep -q "^ExecStart=$scratch/presenced " "$scratch/presenced.service" || {
    echo "check.sh: the unit's ExecStart= no longer starts /usr/bin/presenced" >&2
    exit 1
  }
  verify=(systemd-analyze verify --man=no "$scratch/presenced.service")
fi
if ! "${verify[@]}" >"$scratch/verify" 2>&1 || [ -s "$scratch/verify" ]; then
  echo "check.sh: systemd-analyze verify complains:" >&2
  cat "$scratch/verify" >&2
  exit 1
fi
echo "verify: clean"
