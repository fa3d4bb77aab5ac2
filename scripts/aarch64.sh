#!/usr/bin/env bash
# HEAL on aarch64 (ARM servers, Apple-silicon Linux VMs): installs Debian's cross linker and
# qemu-user and the Rust standard library for aarch64-unknown-linux-gnu, then
#   scripts/aarch64.sh            builds he-agg and runs its tests under qemu-user
#   scripts/aarch64.sh --workspace  also builds every crate of the workspace for aarch64
#   scripts/aarch64.sh --count      instructions executed per forward NTT, each kernel (qemu
#                                   single-steps and logs every instruction; this machine class
#                                   cannot time ARM, but it can count)
# Cross builds go to target/aarch64-unknown-linux-gnu; nothing here needs an ARM machine.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu

# HEAL_AARCH64_OPTIONAL=1 (CI): a machine that cannot install the tools skips, with the reason;
# a test that fails still fails
unavailable() {
  echo "aarch64: $1"
  if [ "${HEAL_AARCH64_OPTIONAL:-0}" = 1 ]; then echo "aarch64: skipped"; exit 0; fi
  exit 1
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  echo "== Debian's cross linker and qemu-user"
  { as_root apt-get update -qq &&
    as_root apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user; } ||
    unavailable "cannot install gcc-aarch64-linux-gnu and qemu-user (Debian packages)"
fi
if ! rustup target list --installed | grep -qx "$target"; then
  echo "== the Rust standard library for $target"
  rustup target add "$target" || unavailable "rustup cannot add $target"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar

if [ "${1:-}" = --count ]; then
  echo "== instructions per forward NTT on $target (qemu-aarch64 -singlestep, one log line per instruction)"
  cargo build -q --release -p he-agg --example profile_ntt --target "$target"
  bin=target/$target/release/examples/profile_ntt
  count() { # kernel log_n bits reps -> instructions executed by the whole process
    qemu-aarch64 -L /usr/aarch64-linux-gnu -singlestep -d nochain,exec -D /dev/stdout "$bin" "$@" | grep -c '^Trace'
  }
  for log_n in 12 13; do
    for bits in 40 60; do
      for k in Shoup Tfhe FloatNeon; do
        [ "$bits" = 60 ] && [ "$k" = FloatNeon ] && continue
        base=$(count "$k" "$log_n" "$bits" 0)
        four=$(count "$k" "$log_n" "$bits" 4)
        echo "N=2^$log_n ${bits}-bit $k: $(( (four - base) / 4 )) instructions per forward NTT"
      done
    done
  done
  exit 0
fi

echo "== he-agg's tests on $target under qemu-user, at each level (neon, the default, and scalar)"
# The residual networks' evaluations are left out under emulation: they run portable code that
# the x86 levels test, and take ~200 s natively (an hour and more under qemu, past CI's limit);
# what is aarch64's own (the NEON and Shoup NTTs) is checked word for word by ring::ntt's tests.
# The device engine's deep-model test (its CPU stand-in evaluating a deep network segment by
# segment, ~20 s natively) is left out for the same reason.
skip=(--skip infer::residual_tests --skip infer::batched_residual_tests
  --skip infer::device_tests::the_device_evaluates_a_deep_model_segment_by_segment_as_the_cpu_does)
time cargo test -q -p he-agg --lib --target "$target" -- "${skip[@]}"
HEAL_SIMD=scalar cargo test -q -p he-agg --lib --target "$target" -- "${skip[@]}"

if [ "${1:-}" = --workspace ]; then
  echo "== every crate of the workspace for $target"
  time cargo build --workspace --bins --lib --target "$target"
fi
