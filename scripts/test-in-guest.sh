#!/usr/bin/env bash
# The in-guest tier: runs the host tests that need what a user's Debian or
# Ubuntu host has and this one may not (device-mapper, systemd-resolved)
# inside one Debian guest booted under banger's QEMU VMM, as root.
#   scripts/test-in-guest.sh [--test NAME]... [-- TEST ARGS]
# builds the test binaries (by default host_disk, host_dns, in_guest_dm and
# in_guest_resolved) with fault injection, copies them into the guest with
# banger, vmm-fake and the kernel fixture, streams their output and exits
# with their status. Prints the counts of the dm, resolved and other tests
# (also written to $BANGER_IN_GUEST_SUMMARY when set). Where the tier cannot
# run (not root, no QEMU, no debootstrap) it says why and exits 0; the skip
# lands in $BANGER_TEST_SKIPS like any test's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
find_cargo
hand_back_on_exit "$root/target"
export PATH="$root/target/test-deps/bin:$PATH"
export BANGER_TEST_DEPS="${BANGER_TEST_DEPS:-$root/target/test-deps}"
target=${CARGO_TARGET_DIR:-$root/target}

tests=()
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --test)
      [ $# -ge 2 ] || die "--test needs a test target's name"
      tests+=("$2")
      shift 2
      ;;
    --)
      shift
      args+=("$@")
      break
      ;;
    *)
      args+=("$1")
      shift
      ;;
  esac
done
[ ${#tests[@]} -gt 0 ] || tests=(host_disk host_dns in_guest_dm in_guest_resolved)

if [ -z "${BANGER_AGENT:-}" ]; then
  # The guest agent goes into images, so it is linked statically.
  RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build -q --release -p banger-agent --target x86_64-unknown-linux-gnu
  export BANGER_AGENT="$target/x86_64-unknown-linux-gnu/release/banger-agent"
fi

features=(--features banger/fault-injection)
cargo build -q -p banger -p vmm-fake -p banger-vmm-qemu --bins "${features[@]}"
cargo build -q -p banger-testkit --example in-guest "${features[@]}"
test_args=()
for t in "${tests[@]}"; do test_args+=(--test "$t"); done
mapfile -t binaries < <(
  cargo test -q -p banger --no-run --message-format=json "${features[@]}" "${test_args[@]}" |
    sed -n 's/.*"executable":"\([^"]*\/deps\/[^"]*\)".*/\1/p'
)
[ ${#binaries[@]} -gt 0 ] || die "cargo built no test binary for ${tests[*]}"
exec "$target/debug/examples/in-guest" "${binaries[@]}" -- "${args[@]}"
