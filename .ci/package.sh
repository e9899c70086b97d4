#!/usr/bin/env bash
# CI: the Debian package, end to end. Builds it (xtask dist for the man pages and completions,
# then cargo deb), checks what it holds, installs it with dpkg (without systemd as PID 1: the
# maintainer scripts must cope), checks the installed files, the presenced user, the unit's
# hardening, `presenced --check-config` on the installed settings and a short run of the daemon
# as the presenced user, reinstalls it (the upgrade path of the scripts), removes it (the
# conffile stays) and purges it (the conffile and the state go). Needs root or sudo; refuses
# to touch a machine where presenced is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "package.sh: installing the package needs root or sudo" >&2
    exit 1
  fi
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

fail() {
  echo "package.sh: $*" >&2
  exit 1
}

if dpkg-query -W -f='${Status}' presenced 2>/dev/null | grep -q installed; then
  fail "presenced is already installed here; this test installs and purges it: remove it first"
fi

echo "== tools"
# systemd-analyze (the unit's checks) and systemd-sysusers (the package's postinst); systemd
# need not run.
if ! command -v systemd-analyze >/dev/null 2>&1 || ! command -v systemd-sysusers >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq systemd
fi
systemd-analyze --version | head -1
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked
fi
cargo deb --version

echo "== unit (systemd/check.sh)"
bash systemd/check.sh

echo "== build: the binaries, the man pages and completions (xtask dist), the package (cargo deb)"
# One `--workspace` build for all three, as cargo deb builds: the same features, no rebuilds.
cargo build --release --workspace --bins
target=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
"$target/release/xtask" dist
# --fast: lighter compression (the debug symbols' .ddeb takes minutes otherwise).
built=$(cargo deb --fast)
echo "$built"
deb=$(grep '/presenced_[^/]*\.deb$' <<<"$built" | tail -n 1)
[ -f "$deb" ] || fail "cargo deb did not print the package's path"

echo "== contents"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
contents=$(dpkg-deb --contents "$deb" | awk '{ print $NF }' | sed 's|^\./|/|')
for path in \
  /usr/bin/presenced /usr/bin/presencectl /usr/bin/presence-loadgen /usr/bin/presence-flood \
  /etc/presenced/presenced.toml \
  /usr/lib/systemd/system/presenced.service \
  /usr/lib/sysusers.d/presenced.conf \
  /usr/lib/sysctl.d/90-presenced.conf \
  /usr/share/man/man8/presenced.8.gz /usr/share/man/man1/presencectl.1.gz \
  /usr/share/bash-completion/completions/presenced \
  /usr/share/zsh/vendor-completions/_presenced \
  /usr/share/fish/vendor_completions.d/presenced.fish \
  /usr/share/bash-completion/completions/presencectl \
  /usr/share/zsh/vendor-completions/_presencectl \
  /usr/share/fish/vendor_completions.d/presencectl.fish \
  /usr/share/doc/presenced/README.md /usr/share/doc/presenced/ARCHITECTURE.md \
  /usr/share/doc/presenced/wire-format/SPEC.md /usr/share/doc/presenced/benches/README.md \
  /usr/share/doc/presenced/copyright; do
  grep -qx "$path" <<<"$contents" || fail "the package lacks $path"
done
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
[ "$conffiles" = "/etc/presenced/presenced.toml" ] || fail "conffiles: $conffiles"
echo "every expected file, and /etc/presenced/presenced.toml as the one conffile"

echo "== install (dpkg -i)"
# A failed check leaves no package behind (the next run would refuse to start).
finished=false
cleanup() {
  if ! $finished && dpkg-query -W -f='${Status}' presenced 2>/dev/null | grep -q 'installed\|config-files'; then
    echo "package.sh: failed; purging the package" >&2
    $SUDO dpkg -P presenced >/dev/null || true
  fi
}
trap cleanup EXIT
$SUDO dpkg -i "$deb"
dpkg-query -W -f='${Package} ${Version} ${Status}\n' presenced
getent passwd presenced || fail "no presenced user"
home=$(getent passwd presenced | cut -d: -f6)
[ "$home" = /var/lib/presenced ] || fail "the presenced user's home is $home"
getent group presenced >/dev/null || fail "no presenced group"
for bin in presenced presencectl presence-loadgen presence-flood; do
  "/usr/bin/$bin" --version
done
[ -x /usr/bin/presenced ] && [ -f /usr/share/man/man8/presenced.8.gz ] || fail "files missing"
zcat /usr/share/man/man8/presenced.8.gz | grep -q 'check\\-config' || fail "presenced.8 lacks --check-config"
zcat /usr/share/man/man1/presencectl.1.gz | grep -q 'PRESENCECTL QUERY' || fail "presencectl.1 lacks query"
grep -q 'presenced' /usr/share/bash-completion/completions/presenced || fail "bash completion"
grep -q 'history' /usr/share/bash-completion/completions/presencectl ||
  fail "presencectl's bash completion lacks history"

echo "== presenced --check-config /etc/presenced/presenced.toml"
/usr/bin/presenced --check-config /etc/presenced/presenced.toml
set +e
out=$(/usr/bin/presenced --check-config /etc/presenced/presenced.toml --set presence.grace=2h 2>&1)
rc=$?
set -e
echo "$out"
[ "$rc" = 2 ] || fail "--check-config with an invalid setting exited $rc, not 2"
grep -q 'presence.grace' <<<"$out" || fail "the error does not name presence.grace"

echo "== the installed unit (systemd/check.sh --installed)"
bash systemd/check.sh --installed

echo "== a short run as the presenced user, traced (what the unit runs, without systemd)"
# Every system call it makes through start (shard pinning included), traffic, SIGHUP and
# SIGTERM must pass the unit's SystemCallFilter= (systemd/syscalls.sh).
if ! command -v strace >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq strace curl
fi
# systemd's StateDirectory= would create it; here, by hand, as the unit would have it.
$SUDO install -d -o presenced -g presenced -m 0700 /var/lib/presenced
run=$(mktemp -d)
chmod 0777 "$run"
$SUDO setpriv --reuid presenced --regid presenced --clear-groups \
  strace -f -qq -o "$run/trace" \
  /usr/bin/presenced --config /etc/presenced/presenced.toml \
  --listen 127.0.0.1:27070 --link-listen 127.0.0.1:27060 --shards 2 >"$run/log" 2>&1 &
tracer=$!
for _ in $(seq 100); do
  grep -q 'presenced ready' "$run/log" && break
  sleep 0.1
done
grep -q 'presenced ready' "$run/log" || { cat "$run/log"; fail "presenced did not start"; }
daemon=$(pgrep -u presenced -x presenced)
ctl() { /usr/bin/presencectl --link 127.0.0.1:27060 "$@"; }
ctl send 42
sleep 0.5
query=$(ctl query 42)
echo "$query"
grep -q ' online ' <<<"$query" || fail "user 42 is not online"
ctl history 42
ctl stats >/dev/null
if grep -q '^\[metrics\]' /etc/presenced/presenced.toml; then
  metrics=$(sed -n '/^\[metrics\]/,/^\[/s/^listen *= *"\(.*\)"/\1/p' /etc/presenced/presenced.toml)
  if [ -n "$metrics" ]; then
    body=$(curl -sf "http://$metrics/metrics") || fail "no metrics on http://$metrics/metrics"
    echo "metrics on $metrics: $(wc -l <<<"$body") lines"
  fi
fi
$SUDO kill -HUP "$daemon"
sleep 0.5
$SUDO kill -TERM "$daemon"
wait "$tracer" || true
cat "$run/log"
bash systemd/syscalls.sh "$run/trace" /usr/lib/systemd/system/presenced.service
rm -rf "$run"
$SUDO find /var/lib/presenced -type f | head -3
[ -n "$($SUDO find /var/lib/presenced -type f)" ] || fail "no state written to /var/lib/presenced"

echo "== reinstall (the upgrade path of the maintainer scripts)"
$SUDO dpkg -i "$deb"

echo "== remove (dpkg -r): the conffile stays"
$SUDO dpkg -r presenced
dpkg-query -W -f='${Status}\n' presenced | grep -q 'config-files' || fail "not in config-files state"
for path in /usr/bin/presenced /usr/bin/presencectl /usr/lib/systemd/system/presenced.service \
  /usr/share/man/man8/presenced.8.gz /usr/lib/sysctl.d/90-presenced.conf; do
  [ ! -e "$path" ] || fail "$path is still there after dpkg -r"
done
[ -f /etc/presenced/presenced.toml ] || fail "dpkg -r removed the conffile"
echo "binaries, unit and man pages gone; /etc/presenced/presenced.toml kept"

echo "== purge (dpkg -P): the conffile and the state go"
$SUDO dpkg -P presenced
if dpkg-query -W -f='${Status}' presenced 2>/dev/null | grep -q 'installed\|config-files'; then
  fail "presenced is still known to dpkg after the purge"
fi
for path in /etc/presenced/presenced.toml /etc/presenced /var/lib/presenced; do
  [ ! -e "$path" ] || fail "$path is still there after dpkg -P"
done
echo "conffile, /etc/presenced and /var/lib/presenced gone (the presenced user stays, as Debian leaves system users)"
finished=true
echo "== package: ok"
