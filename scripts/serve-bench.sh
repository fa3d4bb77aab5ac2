#!/usr/bin/env bash
# Measures mode (b) served over loopback QUIC with mutual TLS, as a hospital meets it: a
# two-hospital kit provisioned in a temporary directory, `coordinator serve-inference --model`
# on a free 127.0.0.1 port, and `client infer` asking for IMAGES BreastMNIST test images in one
# request, twice (the first pays the process's first plan; the second is the figure). Prints
# the server's evaluation per image, per request the images' upload and the wait for the result
# (every refresh round trip of a deep network included), the whole command and the bytes;
# server and requester share this machine's cores.
#
#   HEAL_DATA_DIR=../shared/datasets/medmnist scripts/serve-bench.sh NETWORK.json [IMAGES=4]
#
# HEAL_SIMD (scalar|avx2|avx512|ifma) applies to both processes; BIN=DIR takes the binaries from
# DIR instead of building them (for a before/after in one window); BACKEND=cpu|cuda|auto is the
# server's --backend (default auto: a GPU when one loads); MAX_IMAGES=M caps a request's images
# (`serve-inference --max-images`), so MAX_IMAGES=1 sends IMAGES requests of one image each over
# one connection with the keys sent once, and the per-request figures are what a requester
# waits for once its keys are on the server.
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
  --dir "$work/fed/coordinator" --backend "${BACKEND:-auto}" \
  --max-images "${MAX_IMAGES:-64}" > "$work/serve.log" 2>&1 &
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
    kill -0 "$server" 2>/dev/null || { echo "the server stopped:" >&2; cat "$work/serve.log" >&2; server=""; exit 1; }
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
r = max(b.get("requests", 1), 1)
print(f"per request ({r} requests of {n // r} image(s)): images' upload {t['images_send_s'] / r * 1e3:.1f} ms "
      f"+ wait for the result {t['wait_s'] / r * 1e3:.1f} ms (server's evaluation {t['evaluate_s'] / r * 1e3:.1f} ms) "
      f"= {(t['images_send_s'] + t['wait_s']) / r * 1e3:.1f} ms; encrypt {t['encrypt_s'] / n * 1e3:.1f} ms "
      f"and decrypt {t['decrypt_s'] / n * 1e3:.1f} ms per image at the requester")
print("labels:", [i["label"] for i in v["images"]])
PY
# where the server evaluated, and what its first upload to a device took
grep -E "model compiled|keys and the model uploaded" "$work/serve.log" | sed 's/\x1b\[[0-9;]*m//g' | head -3 || true
