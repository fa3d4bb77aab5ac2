#!/usr/bin/env bash
# Builds HEAL's Debian packages into target/debian/:
#   heal-coordinator  /usr/bin/heal-coordinator, heal-coordinator.service, /etc/heal/coordinator.env
#   heal-node         /usr/bin/heal-client, heal-node.service, heal-pacs.service, /etc/heal/node.env
# both with /usr/share/<package>/{prometheus,grafana}: alert rules, a scrape config, the dashboard
# both with a system user `heal` made on install, and the state in /var/lib/heal/*.
#
#   scripts/deb.sh                 # release build, then the packages
#   scripts/deb.sh --profile dev   # from the debug build
#   scripts/deb.sh --no-build      # package what target/<profile> already holds (what CI tests)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
profile=release
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "usage: scripts/deb.sh [--profile release|dev] [--no-build]" >&2; exit 2 ;;
  esac
done
case "$profile" in dev) dir=debug ;; *) dir=$profile ;; esac
for tool in dpkg-deb dpkg; do
  command -v "$tool" >/dev/null || { echo "scripts/deb.sh needs $tool (Debian's dpkg)" >&2; exit 1; }
done
if [ "$build" = 1 ]; then
  cargo build --profile "$profile" -p client -p coordinator
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
out="$root/target/debian"
mkdir -p "$out"
# the newest glibc symbol the binaries use: the package's libc6 dependency
glibc=$(objdump -T "target/$dir/coordinator" "target/$dir/client" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1 | sed 's/GLIBC_//')
glibc=${glibc:-2.31}

# package NAME BINARY INSTALLED-NAME "UNIT…" ENV DESCRIPTION LONG
package() {
  local name=$1 bin=$2 installed=$3 unit=$4 env=$5 summary=$6 long=$7
  local stage
  stage=$(mktemp -d)
  install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/heal" \
    "$stage/usr/share/doc/$name"
  # debug information stays out of the package
  objcopy --strip-debug "target/$dir/$bin" "$stage/usr/bin/$installed"
  chmod 0755 "$stage/usr/bin/$installed"
  for u in $unit; do
    install -m 0644 "packaging/systemd/$u" "$stage/lib/systemd/system/$u"
  done
  install -m 0640 "packaging/etc/$env" "$stage/etc/heal/$env"
  install -m 0644 README.md "$stage/usr/share/doc/$name/README.md"
  install -m 0644 configs/federation-example.toml "$stage/usr/share/doc/$name/federation-example.toml"
  # what an operator imports first: the alert rules, a scrape config and the Grafana dashboard
  # (each package its own copy under /usr/share/<package>: both may be on one host)
  install -d "$stage/usr/share/$name/prometheus" "$stage/usr/share/$name/grafana"
  install -m 0644 packaging/prometheus/heal-alerts.yml "$stage/usr/share/$name/prometheus/"
  sed "s|/usr/share/heal/|/usr/share/$name/|" packaging/prometheus/prometheus-scrape.yml \
    > "$stage/usr/share/$name/prometheus/prometheus-scrape.yml"
  install -m 0644 packaging/grafana/heal-dashboard.json "$stage/usr/share/$name/grafana/"
  echo "/etc/heal/$env" > "$stage/DEBIAN/conffiles"
  local size
  size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
  cat > "$stage/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: HEAL maintainers <maintainers@heal.invalid>
Depends: libc6 (>= $glibc), adduser
Section: science
Priority: optional
Installed-Size: $size
Homepage: https://example.invalid/heal
Description: $summary
$long
CONTROL
  cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if ! getent passwd heal >/dev/null; then
    adduser --system --group --home /var/lib/heal --no-create-home --quiet heal
  fi
  # kits (certificates and keys) go under /etc/heal, readable by the service's group only
  chown root:heal /etc/heal
  chmod 0750 /etc/heal
  for f in /etc/heal/*.env; do [ -e "$f" ] && chown root:heal "$f"; done
  if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null || true; fi
fi
exit 0
POSTINST
  cat > "$stage/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null || true; fi
# the state in /var/lib/heal and the user heal are kept, even on purge: a federation's keys
# and audit log are not the package's to delete
exit 0
POSTRM
  chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/postrm"
  local deb="$out/${name}_${version}_${arch}.deb"
  dpkg-deb --root-owner-group -Zxz -z6 --build "$stage" "$deb" >/dev/null
  rm -rf "$stage"
  echo "$deb"
}

package heal-coordinator coordinator heal-coordinator heal-coordinator.service coordinator.env \
  "HEAL federation coordinator (encrypted federated learning)" \
  " Coordinates a consortium of hospitals that train a CNN together while their model
 updates stay encrypted (CKKS, collective keys, t-of-N re-encryption). Serves
 encrypted diagnosis. Also provisions a federation and simulates one on a machine.
 Run as heal-coordinator.service with the provisioned kit in /etc/heal/coordinator."
package heal-node client heal-client "heal-node.service heal-pacs.service" node.env \
  "HEAL hospital node (encrypted federated learning)" \
  " A hospital's side of a HEAL federation: trains on its own images, encrypts its
 update, takes part in re-encryption, and serves the clinicians' portal and
 encrypted inference requests. Run as heal-node.service with the hospital's kit in
 /etc/heal/node; heal-pacs.service diagnoses new PACS series over DICOMweb."
