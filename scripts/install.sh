#!/usr/bin/env bash
# Installs banger on a Debian/Ubuntu host, as root: the packages it uses,
# banger and banger-agent (statically linked) under /usr/local, and
# Firecracker from its GitHub releases page when none is on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(debootstrap e2fsprogs nftables iproute2 openssh-client busybox-static cpio kmod dmsetup ca-certificates curl)
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"

target=x86_64-unknown-linux-gnu
for package in . src/agent; do
  RUSTFLAGS='-C target-feature=+crt-static' cargo install --locked --path "$package" --target "$target" --root /usr/local
done

if ! command -v firecracker >/dev/null; then
  version=v1.12.1
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL -o "$tmp/fc.tgz" \
    "https://github.com/firecracker-microvm/firecracker/releases/download/$version/firecracker-$version-x86_64.tgz"
  tar -xzf "$tmp/fc.tgz" -C "$tmp"
  install -m 0755 "$tmp/release-$version-x86_64/firecracker-$version-x86_64" /usr/local/bin/firecracker
fi
banger doctor || true
