#!/usr/bin/env bash
# Installs the packages scripts/deb.sh made (target/debian/*.deb) with dpkg and checks them as a
# hospital's IT would: the binaries run and answer --version, the user heal exists, the systemd
# units verify (systemd-analyze, where present), a provisioned coordinator kit placed where the
# unit reads it answers `status` as the service user, and removal leaves the state alone.
# Needs root (CI runs it as root or with sudo); it changes this machine's /usr, /etc/heal and
# /var/lib/heal, so it is for CI machines and throwaway containers.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if [ "$(id -u)" != 0 ]; then echo "scripts/deb-test.sh must run as root" >&2; exit 1; fi
shopt -s nullglob
debs=(target/debian/heal-coordinator_*.deb target/debian/heal-node_*.deb)
[ ${#debs[@]} = 2 ] || { echo "build the packages first: scripts/deb.sh" >&2; exit 1; }
fail() { echo "deb-test: $*" >&2; exit 1; }

dpkg -i "${debs[@]}"
heal-coordinator --version | grep -q '^coordinator ' || fail "heal-coordinator --version"
heal-client --version | grep -q '^client ' || fail "heal-client --version"
getent passwd heal >/dev/null || fail "no user heal"
for pkg in heal-coordinator heal-node; do
  for f in prometheus/heal-alerts.yml prometheus/prometheus-scrape.yml grafana/heal-dashboard.json; do
    [ -f "/usr/share/$pkg/$f" ] || fail "no /usr/share/$pkg/$f"
  done
  python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "/usr/share/$pkg/grafana/heal-dashboard.json" \
    || fail "$pkg's dashboard is not JSON"
  if command -v promtool >/dev/null; then
    # the installed scrape config names the installed rules
    promtool check config "/usr/share/$pkg/prometheus/prometheus-scrape.yml" || fail "promtool check config ($pkg)"
  else
    echo "promtool not installed: $pkg's rules not checked"
  fi
done
[ "$(stat -c %U:%G:%a /etc/heal)" = root:heal:750 ] || fail "/etc/heal is $(stat -c %U:%G:%a /etc/heal)"
[ "$(stat -c %G /etc/heal/coordinator.env)" = heal ] || fail "coordinator.env not readable by heal"
if command -v systemd-analyze >/dev/null; then
  for unit in heal-coordinator.service heal-node.service heal-pacs.service; do
    # (no systemd running in a container: verify parses and checks the unit and its binary)
    out=$(systemd-analyze verify "/lib/systemd/system/$unit" 2>&1 || true)
    if echo "$out" | grep -v -E 'Failed to connect|System has not been booted|not available' | grep -q .; then
      fail "systemd-analyze verify $unit: $out"
    fi
    echo "systemd-analyze verify $unit: clean"
  done
else
  echo "systemd-analyze not installed: units not verified"
fi

# a kit where heal-coordinator.service reads it; status as the service's user before any run
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
heal-coordinator provision "$root/configs/breastmnist-quick.toml" --out "$tmp/fed" >/dev/null
install -d -o root -g heal -m 0750 /etc/heal/coordinator
cp -r "$tmp/fed/coordinator/." /etc/heal/coordinator/
chown -R root:heal /etc/heal/coordinator
chmod -R g+rX,o-rwx /etc/heal/coordinator
install -d -o heal -g heal -m 0700 /var/lib/heal/coordinator
as_heal() { runuser -u heal -- "$@"; }
text=$(as_heal heal-coordinator status --dir /etc/heal/coordinator --state-dir /var/lib/heal/coordinator)
grep -q 'not started' <<<"$text" || fail "status before the first run: $text"
json=$(as_heal heal-coordinator status --json --dir /etc/heal/coordinator --state-dir /var/lib/heal/coordinator)
grep -q '"federation": "breastmnist-quick"' <<<"$json" || fail "status --json: $json"
# the service's command as its user: it starts, writes its state to the state directory only
runuser -u heal -- heal-coordinator run --dir /etc/heal/coordinator \
  --state-dir /var/lib/heal/coordinator --listen 127.0.0.1:0 2>"$tmp/run.log" &
pid=$!
for _ in $(seq 1 100); do [ -e /var/lib/heal/coordinator/state.redb ] && break; sleep 0.2; done
sleep 1
kill "$pid" 2>/dev/null || fail "the coordinator did not keep running: $(cat "$tmp/run.log")"
wait "$pid" 2>/dev/null || true
[ -e /var/lib/heal/coordinator/state.redb ] || fail "no state written: $(cat "$tmp/run.log")"
grep -q 'listening' "$tmp/run.log" || fail "not listening: $(cat "$tmp/run.log")"
text=$(as_heal heal-coordinator status --dir /etc/heal/coordinator --state-dir /var/lib/heal/coordinator)
grep -q 'phase: Setup' <<<"$text" || fail "status after a start: $text"
# the kit is read-only to the service: nothing of the state is written there
[ ! -e /etc/heal/coordinator/state.redb ] || fail "state written into the kit"

dpkg -r heal-coordinator heal-node
[ ! -e /usr/bin/heal-coordinator ] || fail "heal-coordinator still installed"
[ -d /var/lib/heal/coordinator ] || fail "removal deleted the state"
rm -rf /etc/heal/coordinator /var/lib/heal/coordinator
echo "deb-test: the packages install, run, answer status and uninstall"
