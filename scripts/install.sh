#!/usr/bin/env bash
# Installs banger on a Debian/Ubuntu host. Run it as yourself (it uses sudo
# for the privileged steps) with a Rust toolchain from rustup (1.89 or newer):
#   - the packages banger uses (apt),
#   - banger and banger-agent, linked statically, into /usr/local/bin,
#   - Firecracker from its GitHub releases page, when none is on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
command -v cargo >/dev/null || { echo "install.sh: cargo not found; install Rust with rustup first" >&2; exit 1; }

packages=(debootstrap e2fsprogs nftables iproute2 openssh-client busybox-static cpio kmod dmsetup ca-certificates curl)
$sudo apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"

# The agent is copied into guest images, so both binaries are built static.
target=x86_64-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static' cargo build --locked --release --workspace --exclude vmm-shim --target "$target"
$sudo install -m 0755 "target/$target/release/banger" "target/$target/release/banger-agent" /usr/local/bin/

if ! command -v firecracker >/dev/null; then
  version=v1.12.1
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL -o "$tmp/fc.tgz" \
    "https://github.com/firecracker-microvm/firecracker/releases/download/$version/firecracker-$version-x86_64.tgz"
  tar -xzf "$tmp/fc.tgz" -C "$tmp"
  $sudo install -m 0755 "$tmp/release-$version-x86_64/firecracker-$version-x86_64" /usr/local/bin/firecracker
fi
$sudo /usr/local/bin/banger doctor || true
