#!/usr/bin/env bash
# The main job's HE ÷ plaintext wall ratio (issue 15), measured as alternating pairs so that a
# noisy shared machine slows both sides alike:
#
#   scripts/wall-ratio.sh [PAIRS] [-- extra simulate arguments]
#
# Runs `coordinator simulate` (the embedded default unless a config is passed) encrypted and
# with --plaintext, PAIRS times each (default 3; the order alternates), at the SIMD level in HEAL_SIMD (default: the
# CPU's best), and prints each pair with its final test AUCs, the medians and their ratio. Needs the release binaries
# (`cargo build --release -p client -p coordinator`) and HEAL_DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-3}
shift || true
[[ ${1:-} == -- ]] && shift
bin=target/release/coordinator
[[ -x $bin && -x target/release/client ]] || {
  echo "build first: cargo build --release -p client -p coordinator" >&2
  exit 1
}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
wall() { # prints the run's wall seconds and final test AUC from simulate's last lines
  "$bin" simulate --out "$out/run" --force "$@" >"$out/log" 2>&1 || true
  local w a
  w=$(sed -n 's/^done in \([0-9.]*\) s.*/\1/p' "$out/log" | tail -1)
  a=$(sed -n 's/^final test AUC \([0-9.]*\),.*/\1/p' "$out/log" | tail -1)
  [[ -n $w ]] && echo "$w ${a:-?}"
}
he=() pt=() h= p= ha= pa=
for ((i = 1; i <= pairs; i++)); do
  # ABBA order: a run reuses memory the run before it just freed, which costs no page faults
  # (on a virtual machine whose host reclaims freed memory a cold first touch costs ~2 s per
  # GB), so neither pipeline may always go first
  if ((i % 2)); then
    read -r h ha < <(wall "$@") || true
    read -r p pa < <(wall --plaintext "$@") || true
  else
    read -r p pa < <(wall --plaintext "$@") || true
    read -r h ha < <(wall "$@") || true
  fi
  [[ -n $h && -n $p ]] || { echo "pair $i: a run failed (see coordinator simulate's output)" >&2; exit 1; }
  he+=("$h") pt+=("$p")
  echo "pair $i: HE $h s (AUC $ha), plaintext $p s (AUC $pa) ($(awk -v a="$h" -v b="$p" 'BEGIN { printf "%.3f", a / b }'))"
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mh=$(median "${he[@]}") mp=$(median "${pt[@]}")
echo "level ${HEAL_SIMD:-auto}: median HE $mh s, plaintext $mp s, ratio $(awk -v a="$mh" -v b="$mp" 'BEGIN { printf "%.3f", a / b }')"
