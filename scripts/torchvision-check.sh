#!/usr/bin/env bash
# Loads torchvision's own ResNet-18 and ResNet-34 state dicts (torch.save files made by
# PyTorch 2.0.1 / torchvision 0.15.2 in a virtual environment, random weights, nothing
# downloaded but the packages) into HEAL's network with [model.init] layout "torchvision",
# and compares HEAL's logits with PyTorch's: prints the largest difference, relative to the
# largest logit, and fails above 1e-4.
#
#   scripts/torchvision-check.sh [OUT_DIR]
#
# The environment is cached in ${HEAL_TORCHVISION_VENV:-$HOME/.cache/heal/torchvision-venv}.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/torchvision-check}
venv=${HEAL_TORCHVISION_VENV:-$HOME/.cache/heal/torchvision-venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import torch, torchvision' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "torch==2.0.1" "torchvision==0.15.2" "numpy<2"
fi
"$venv/bin/python" scripts/torchvision_reference.py "$out"
cargo build --release -q -p training --example torchvision_check
for net in resnet18 resnet34; do
  target/release/examples/torchvision_check "$out/$net.pth" "$out/$net.json"
done
