#!/usr/bin/env bash
# Measures `client pacs` against a real Orthanc on this machine (Debian's orthanc and
# orthanc-dicomweb, started here on a free 127.0.0.1 port with its own storage): synthetic 256²
# CT series (datasets' synthetic_ct example) uploaded through Orthanc's REST API, then one pass
# of `client pacs --once` diagnosing them encrypted on this node (mode b) and storing a report in
# each study. Prints the seconds per series (fetch, diagnose, report) at the best SIMD level and
# at AVX2 forced, each on its own fresh series (one record: the second pass settles the first's).
#
#   scripts/pacs-bench.sh [SERIES=3] [SLICES=20] [NETWORK.json]
#
# Without NETWORK.json it trains configs/baseline-ct256.toml on 30 synthetic slices (2 epochs).
set -euo pipefail
cd "$(dirname "$0")/.."
series=${1:-3}
slices=${2:-20}
net=${3:-}
plugin=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
if ! command -v Orthanc >/dev/null || [ ! -e "$plugin" ]; then
  echo "needs Orthanc and its DICOMweb plugin: apt-get install orthanc orthanc-dicomweb" >&2
  exit 1
fi
cargo build --release -q -p client -p datasets --example synthetic_ct
work=$(mktemp -d)
orthanc_pid=""
cleanup() {
  [ -n "$orthanc_pid" ] && kill "$orthanc_pid" 2>/dev/null && wait "$orthanc_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "$net" ]; then
  target/release/examples/synthetic_ct "$work/train" 30 1 256 >/dev/null
  sed 's|^path = "ct256/manifest.csv"|path = "manifest.csv"|' configs/baseline-ct256.toml > "$work/train/ct256.toml"
  echo "training configs/baseline-ct256.toml on 30 synthetic slices (2 epochs)…"
  target/release/client --quiet baseline --epochs 2 --out "$work/net" "$work/train/ct256.toml" >/dev/null 2>"$work/train.log"
  net="$work/net/network.json"
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/orthanc"
cat > "$work/orthanc.json" <<JSON
{"Name": "HEAL bench PACS", "StorageDirectory": "$work/orthanc", "IndexDirectory": "$work/orthanc",
 "HttpPort": $port, "RemoteAccessAllowed": false, "AuthenticationEnabled": true,
 "RegisteredUsers": {"heal": "bench"}, "DicomServerEnabled": false, "Plugins": ["$plugin"],
 "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}}
JSON
Orthanc "$work/orthanc.json" 2>"$work/orthanc.log" &
orthanc_pid=$!
for _ in $(seq 1 150); do
  curl -sf -u heal:bench "http://127.0.0.1:$port/system" >/dev/null && break
  sleep 0.2
done
curl -sf -u heal:bench "http://127.0.0.1:$port/system" >/dev/null || { echo "Orthanc did not start" >&2; exit 1; }

echo bench > "$work/pacs.password"
cat > "$work/site.toml" <<TOML
[site]
index = 1
federation = "$(printf 'ab%.0s' $(seq 16))"
name = "bench"
coordinator = "127.0.0.1:9"
hospitals = 3
threshold = 2
inference = "released"

[he]

[dataset]
kind = "medmnist"
name = "breastmnist"

[pacs]
url = "http://127.0.0.1:$port/dicom-web"
auth = "basic"
username = "heal"
password_file = "pacs.password"
TOML

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $series series of $slices slices (256²)"
for level in best avx2; do
  target/release/examples/synthetic_ct "$work/series-$level" "$series" "$slices" 256 >/dev/null
  for f in "$work/series-$level"/*/*.dcm; do
    curl -sf -u heal:bench -X POST -H 'Content-Type: application/dicom' --data-binary "@$f" \
      "http://127.0.0.1:$port/instances" -o /dev/null
  done
  simd=$([ "$level" = best ] && echo auto || echo avx2)
  start=$(date +%s.%N)
  line=$(HEAL_SIMD=$simd target/release/client --quiet pacs --once --site "$work/site.toml" \
    --out "$work/node" --network "$net" 2>"$work/pacs-$level.log" | sed -n 's/^HEAL-PACS-PASS //p')
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  LEVEL=$level WALL=$wall LINE=$line python3 - <<'PY'
import json, os
p = json.loads(os.environ["LINE"])
print(f"HEAL_SIMD={os.environ['LEVEL']}: pass {float(os.environ['WALL']):.2f} s wall, "
      f"{len(p['diagnosed'])} diagnosed (settled {p['settled']}, refused {len(p['refused'])}, deferred {len(p['deferred'])})")
for t in p["times"]:
    print(f"  series …{t['series'][-12:]}: {t['images']} images, fetch {t['fetch_s']:.3f} s, "
          f"diagnose {t['diagnose_s']:.2f} s ({t['diagnose_s'] / t['images']:.3f} s/image), report {t['report_s']:.3f} s")
PY
done
