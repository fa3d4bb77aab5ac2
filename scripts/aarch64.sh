#!/usr/bin/env bash
# HEAL on aarch64 (ARM servers, Apple-silicon Linux VMs): installs Debian's cross linker and
# qemu-user and the Rust standard library for aarch64-unknown-linux-gnu, then
#   scripts/aarch64.sh            builds he-agg and runs its tests under qemu-user
#   scripts/aarch64.sh --workspace  also builds every crate of the workspace for aarch64
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

echo "== he-agg's tests on $target under qemu-user"
time cargo test -q -p he-agg --lib --target "$target"

if [ "${1:-}" = --workspace ]; then
  echo "== every crate of the workspace for $target"
  time cargo build --workspace --bins --lib --target "$target"
fi
