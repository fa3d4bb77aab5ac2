#!/usr/bin/env bash
# Measures a hospital's local training throughput on a device against another, as `client
# baseline` reports it per epoch: the BreastMNIST default network and the ResNet-20-class
# network, each at the configs' batch of 32 and at a larger one. Prints one line per run: the
# images/s of every epoch, and the median of those after the first (a fresh process compiles
# and autotunes its GPU kernels in its first epoch; on the GPU the second can still be tuning,
# so compare the later ones).
#
#   HEAL_DATA_DIR=../shared/datasets/medmnist scripts/gpu-train-bench.sh [DEVICE=wgpu] [EPOCHS=5]
#
# BIN=DIR takes `client` from DIR (a GPU machine without a toolchain: carry a `--features wgpu`
# build); otherwise it is built here with `--features wgpu` when DEVICE is wgpu. On a headless
# NVIDIA host whose Vulkan ICD names libGLX_nvidia.so.0 and fails, the script points
# VK_ICD_FILENAMES at an ICD file naming libEGL_nvidia.so.0 (it leaves a VK_ICD_FILENAMES you
# set alone). Run it with DEVICE=cpu on the machine to compare with.
set -euo pipefail
cd "$(dirname "$0")/.."
device=${1:-wgpu}
epochs=${2:-5}
if [ -z "${BIN:-}" ]; then
  case "$device" in
    wgpu*) cargo build --release -q -p client --features wgpu ;;
    *) cargo build --release -q -p client ;;
  esac
  BIN=target/release
fi
BIN=$(realpath "$BIN")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ "$device" == wgpu* && -z "${VK_ICD_FILENAMES:-}" ]] && ldconfig -p | grep -q libEGL_nvidia.so.0; then
  printf '{"file_format_version":"1.0.0","ICD":{"library_path":"libEGL_nvidia.so.0","api_version":"1.3.0"}}\n' \
    > "$work/icd.json"
  export VK_ICD_FILENAMES="$work/icd.json"
fi
echo "device $device, $epochs epochs, $(nproc) cores"
for run in "default baseline-breastmnist.toml 32" "default baseline-breastmnist.toml 256" \
           "resnet resnet-breastmnist.toml 32" "resnet resnet-breastmnist.toml 128"; do
  set -- $run
  sed "s/^batch_size = .*/batch_size = $3/" "configs/$2" > "$work/c.toml"
  if ! RUST_BACKTRACE=0 "$BIN/client" --quiet baseline "$work/c.toml" --offline --device "$device" \
      --epochs "$epochs" --out "$work/out" > "$work/log" 2>&1; then
    echo "$1, batch $3: failed:"; { grep -m 1 -A 1 "panicked at" "$work/log"; tail -3 "$work/log"; } | cut -c1-400
    continue
  fi
  # images_per_s is the last column of history.csv; awk, since a GPU host may lack Python
  awk -F, -v name="$1" -v batch="$3" 'NR > 1 { v[NR - 1] = $NF }
    END {
      n = NR - 1; line = ""
      for (i = 1; i <= n; i++) line = line (i > 1 ? ", " : "") sprintf("%.0f", v[i])
      m = 0; for (i = 2; i <= n; i++) later[++m] = v[i]
      if (m == 0) { later[1] = v[1]; m = 1 }
      for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (later[j] < later[i]) { t = later[i]; later[i] = later[j]; later[j] = t }
      med = (m % 2) ? later[(m + 1) / 2] : (later[m / 2] + later[m / 2 + 1]) / 2
      printf "%s, batch %s: images/s per epoch %s; median after the first %.0f\n", name, batch, line, med
    }' "$work/out/history.csv"
  rm -rf "$work/out"
done
