#!/usr/bin/env bash
# Which training choices matter for a deep polynomial network (issue 39, docs/DEEP.md): the
# ResNet-20-class network of configs/resnet-organamnist.toml trained briefly (3 epochs on 8,000
# training images) with one choice changed at a time, and its ReLU twin; prints each run's
# final training accuracy and test accuracy / AUC on the official test split.
#   scripts/deep-ablation.sh [OUT]      (needs target/release/client, or $HEAL_CLIENT, and $HEAL_DATA_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/deep-ablation}
mkdir -p "$out"
base=configs/resnet-organamnist.toml
client=${HEAL_CLIENT:-target/release/client}
[ -x "$client" ] || { echo "build first: cargo build --release -p client" >&2; exit 1; }

variant() { # name, then a sed expression applied to the base config
  local name=$1 expr=$2
  sed -e "$expr" "$base" > "$out/$name.toml"
  grep -q . "$out/$name.toml"
}
cp "$base" "$out/default.toml"
# a ReLU-like start instead of the near-identity one (x² weight 0.2, slope 0.5, offset 0.2)
variant relu-like-start 's/^activation = "poly"$/activation = "poly"\npoly_init = [0.2, 0.5, 0.2]/'
# the x² weight free in (0, 1000] (the default keeps it in [0.01, 1]; it must stay positive)
variant unbounded 's/^activation = "poly"$/activation = "poly"\npoly_bounds = [0.000001, 1000.0]/'
# no gradient clipping
variant no-clip '/^grad_clip = /d'
# a fixed x² for every channel (the depth-5 family's activation) instead of a trained one
variant square 's/^activation = "poly"$/activation = "square"/'

run() { # name, extra args
  local name=$1; shift
  "$client" baseline "$out/${name%-relu}.toml" --out "$out/$name" --epochs 3 --max-train 8000 --quiet "$@" \
    > "$out/$name.log" 2>&1 || { echo "$name: failed (see $out/$name.log)"; return 0; }
  python3 - "$out/$name" "$name" <<'PY'
import csv, json, sys
d, name = sys.argv[1], sys.argv[2]
s = json.load(open(f"{d}/summary.json"))
h = list(csv.DictReader(open(f"{d}/history.csv")))
print(f"{name:16} train acc {float(h[-1]['train_acc']):.4f}  train loss {float(h[-1]['train_loss']):.4g}  "
      f"test acc {s['test_acc']:.4f}  test AUC {s['test_auc']:.4f}")
PY
}
for v in default relu-like-start unbounded no-clip square; do run "$v"; done
run default-relu --activation relu
