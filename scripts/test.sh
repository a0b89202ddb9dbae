#!/usr/bin/env bash
# banger's test command: unit tests everywhere; host, Firecracker and guest
# tiers when run as root with the fixtures from scripts/test-deps.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
find_cargo
hand_back_on_exit "$root/target"
export PATH="$root/target/test-deps/bin:$PATH"
export BANGER_TEST_DEPS="$root/target/test-deps"

# The guest agent goes into images, so it is linked statically.
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release -p banger-agent --target x86_64-unknown-linux-gnu
export BANGER_AGENT="$root/target/x86_64-unknown-linux-gnu/release/banger-agent"

# fault-injection: the crash tests abort banger after each stage (src/fault.rs).
features=(--features banger/fault-injection)
cargo build --workspace --all-targets "${features[@]}"
cargo test --workspace "${features[@]}" -- --test-threads=2
