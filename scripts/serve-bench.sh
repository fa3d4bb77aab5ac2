#!/usr/bin/env bash
# Measures mode (b) served over loopback QUIC with mutual TLS, as a hospital meets it: a
# two-hospital kit provisioned in a temporary directory, `coordinator serve-inference --model`
# on a free 127.0.0.1 port, and `client infer` asking for IMAGES BreastMNIST test images in one
# request, twice (the first pays the process's first plan; the second is the figure). Prints
# the server's evaluation per image (every refresh round trip of a deep network included), the
# whole command and the bytes; server and requester share this machine's cores.
#
#   HEAL_DATA_DIR=../shared/datasets/medmnist scripts/serve-bench.sh NETWORK.json [IMAGES=4]
#
# HEAL_SIMD (scalar|avx2|avx512|ifma) applies to both processes; BIN=DIR takes the binaries from
# DIR instead of building them (for a before/after in one window).
set -euo pipefail
cd "$(dirname "$0")/.."
net=$(realpath "${1:?usage: scripts/serve-bench.sh NETWORK.json [IMAGES]}")
images=${2:-4}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p client -p coordinator
  BIN=target/release
fi
BIN=$(realpath "$BIN")
work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/fed.toml" <<'EOF'
[federation]
name = "serve-bench"
hospitals = 2
threshold = 2
rounds = 1
min_hospitals = 2

[dataset]
kind = "medmnist"
name = "breastmnist"
offline = true
EOF
"$BIN/coordinator" provision "$work/fed.toml" --out "$work/fed" > "$work/provision.log"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/coordinator" serve-inference --listen "127.0.0.1:$port" --model "$net" \
  --dir "$work/fed/coordinator" > "$work/serve.log" 2>&1 &
server=$!
list=()
for i in $(seq 1 "$images"); do list+=("breastmnist:test:$i"); done
for run in 1 2; do
  start=$(date +%s.%N)
  # the server may still be starting: a bounded number of tries
  for try in $(seq 1 30); do
    if "$BIN/client" infer --timeout-s 900 --server "127.0.0.1:$port" \
      --site "$work/fed/hospital-1/site.toml" --json "$work/answer-$run.json" "${list[@]}" \
      > "$work/infer-$run.log" 2>&1; then break; fi
    [ "$try" = 30 ] && { cat "$work/infer-$run.log" >&2; exit 1; }
    sleep 1
  done
  end=$(date +%s.%N)
  echo "request $run: whole command $(python3 -c "print(f'{$end - $start:.2f}')") s"
done
python3 - "$work/answer-2.json" "$images" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
t, b = v["timings"], v["bytes"]
print(f"server's evaluation {t['evaluate_s']:.2f} s for {n} images: {t['evaluate_s'] / n:.2f} s per image "
      f"({b['refreshes']} refreshes; refresh bytes {b['refresh_received'] / 1e6:.1f} MB received, "
      f"{b['refresh_sent'] / 1e6:.1f} MB sent; keys {b['keys_sent'] / 1e6:.0f} MB)")
print("labels:", [i["label"] for i in v["images"]])
PY
