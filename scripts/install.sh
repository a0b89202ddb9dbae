#!/usr/bin/env bash
# Installs banger on a Debian/Ubuntu host. Run it as yourself (it uses sudo
# for the privileged steps) with a Rust toolchain from rustup (1.89 or newer):
#   - the packages banger uses, QEMU for its software-CPU fallback, and gcc
#     to build it (apt),
#   - Firecracker from its GitHub releases page, as /usr/local/bin/firecracker,
#     unless a supported one is on PATH or in BANGER_FIRECRACKER already
#     (without it banger runs every VM under QEMU: a warning, not a failure),
#   - vhost-device-vsock 0.3.0 (built from crates.io) unless it is on PATH,
#   - banger, banger-agent and banger-vmm-qemu, linked statically, into
#     /usr/local/bin,
# then runs `banger doctor`. Exits non-zero when something it needs to run a
# VM is missing, after saying what and what to do.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
  why="install.sh uses sudo for apt-get, /usr/local/bin and banger doctor"
  command -v sudo >/dev/null ||
    die "sudo not found ($why): as root, apt-get install sudo and adduser $(id -un) sudo, or run install.sh as root"
  # Asks for the password now rather than after the build.
  sudo -v || die "sudo does not let $(id -un) run commands as root ($why; its message is above)"
fi
find_cargo
hand_back_on_exit "$root/target"
tmp=$(mktemp -d)
at_exit "rm -rf $(printf %q "$tmp")"
again="then run scripts/install.sh again"
# Said as they happen, and again after doctor's report: problems stop a VM
# from running (the exit status says so); warnings do not.
problems=()
warnings=()
problem() {
  say "$*"
  problems+=("$*")
}
warning() {
  say "warning: $*"
  warnings+=("$*")
}

# banger calls debootstrap, mkfs.ext4/e2fsck/resize2fs/debugfs, nft, ssh,
# depmod, dmsetup and xz/zstd (for compressed kernel modules); banger-vmm-qemu
# runs qemu-system-x86_64; curl fetches Firecracker; gcc and libc6-dev link
# banger statically.
packages=(debootstrap debian-archive-keyring e2fsprogs nftables openssh-client kmod dmsetup xz-utils zstd qemu-system-x86 ca-certificates curl gcc libc6-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} with apt-get"
  attempt "update the package lists with apt-get" "Going on with the lists as they are." \
    $sudo apt-get update -q || true
  attempt "install ${missing[*]} with apt-get from the host's apt sources" \
    "Install them another way (README.md, \"Installing by hand\"), $again" \
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || exit 1
fi

fc_version=v1.12.1
fc_tgz=firecracker-$fc_version-x86_64.tgz
fc_releases=https://github.com/firecracker-microvm/firecracker/releases
fc_dest=/usr/local/bin/firecracker

# The version BIN reports as Firecracker (1.12.1), or nothing.
fc_version_of() {
  { "$1" --version 2>/dev/null || true; } | sed -n '1s/^Firecracker v\([0-9][0-9.]*\).*/\1/p'
}
# Whether VERSION is one banger runs: v1.10 or newer (doctor warns past v1.12).
fc_usable() {
  local major minor
  IFS=. read -r major minor _ <<<"$1"
  [ -n "$minor" ] && { [ "$major" -gt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -ge 10 ]; }; }
}

# What BIN is, given the VERSION it reported.
fc_describe() {
  if [ -n "$2" ]; then
    echo "it is v$2"
  elif [ -x "$1" ]; then
    echo "\`$1 --version\` does not say Firecracker vX.Y.Z"
  else
    echo "no executable file there"
  fi
}

# Makes `sudo banger` find a Firecracker: the one in BANGER_FIRECRACKER, or on
# PATH or sudo's PATH, when usable (copied to /usr/local/bin unless sudo's
# PATH has it), else the release from GitHub.
install_firecracker() {
  local bin="" version="" seen
  if [ -n "${BANGER_FIRECRACKER:-}" ]; then
    bin=$BANGER_FIRECRACKER
    version=$(fc_version_of "$bin")
    if ! fc_usable "$version"; then
      problem "BANGER_FIRECRACKER=$bin is not Firecracker v1.10 or newer ($(fc_describe "$bin" "$version")); point it at one, or unset it to download $fc_version, $again"
      return
    fi
  else
    # The first usable one on PATH, or on sudo's PATH.
    local candidate found=""
    for candidate in "$(command -v firecracker || true)" "$($sudo sh -c 'command -v firecracker' 2>/dev/null || true)"; do
      if [ -z "$candidate" ] || [ "$candidate" = "$found" ]; then continue; fi
      found=$candidate
      version=$(fc_version_of "$candidate")
      if fc_usable "$version"; then
        bin=$candidate
        break
      fi
      say "not using $candidate ($(fc_describe "$candidate" "$version")): banger needs Firecracker v1.10 or newer"
    done
  fi
  if [ -n "$bin" ]; then
    [[ $version == 1.1[0-2].* ]] || warning "$bin is Firecracker v$version; banger is tested with v1.10 to v1.12"
    seen=$($sudo sh -c 'command -v firecracker' 2>/dev/null || true)
    if [ -n "$seen" ] && [ "$seen" -ef "$bin" ]; then
      say "using $bin (Firecracker v$version)"
    else
      say "installing $bin (Firecracker v$version) as $fc_dest, where sudo banger finds it"
      $sudo install -m 0755 "$bin" "$fc_dest" || problem "could not copy $bin to $fc_dest"
    fi
    return
  fi

  local hint="Until then banger runs VMs under QEMU's software CPU (boots take tens of seconds). For Firecracker without access to that page: put a \`firecracker\` binary (v1.10–v1.12) on PATH, or set BANGER_FIRECRACKER=/path/to/firecracker, $again"
  say "downloading $fc_tgz from $fc_releases"
  attempt "download $fc_tgz from $fc_releases" "$hint" \
    curl -fsSL --retry 2 -o "$tmp/$fc_tgz" "$fc_releases/download/$fc_version/$fc_tgz" ||
    { warnings+=("$attempt_failure"); return; }
  local unpacked="release-$fc_version-x86_64/firecracker-$fc_version-x86_64"
  attempt "unpack $unpacked from $fc_tgz" "$hint" \
    tar -xzf "$tmp/$fc_tgz" -C "$tmp" "$unpacked" ||
    { warnings+=("$attempt_failure"); return; }
  $sudo install -m 0755 "$tmp/$unpacked" "$fc_dest" || problem "could not install $fc_tgz's firecracker as $fc_dest"
}
# Before the build, so a missing Firecracker shows in the first seconds.
install_firecracker

# banger-vmm-qemu runs the vsock backend from sudo's PATH.
vsock_backend=vhost-device-vsock
if command -v "$vsock_backend" >/dev/null || $sudo sh -c "command -v $vsock_backend" >/dev/null 2>&1; then
  say "using $(command -v "$vsock_backend" || $sudo sh -c "command -v $vsock_backend")"
else
  say "building $vsock_backend 0.3.0 from crates.io for QEMU's vsock (a few minutes)"
  if attempt "build $vsock_backend 0.3.0 with cargo install" \
    "Build it elsewhere (cargo install vhost-device-vsock --version 0.3.0) and copy it to /usr/local/bin; until then banger runs VMs under Firecracker only" \
    cargo install -q --locked "$vsock_backend" --version 0.3.0 --root "$tmp/vsock"; then
    $sudo install -m 0755 "$tmp/vsock/bin/$vsock_backend" /usr/local/bin/ ||
      warning "could not copy $vsock_backend to /usr/local/bin"
  else
    warnings+=("$attempt_failure")
  fi
fi

# The agent is copied into guest images, so the binaries are built static.
say "building banger, banger-agent and banger-vmm-qemu (a few minutes the first time)"
target=x86_64-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static' cargo build --locked --release -p banger -p banger-agent -p banger-vmm-qemu --target "$target" ||
  die "cargo could not build banger (its errors are above); it needs Rust 1.89 or newer (rustup update) and gcc with libc6-dev, $again"
$sudo install -m 0755 "target/$target/release/banger" "target/$target/release/banger-agent" "target/$target/release/banger-vmm-qemu" /usr/local/bin/ ||
  die "could not copy banger, banger-agent and banger-vmm-qemu from target/$target/release to /usr/local/bin"
say "installed banger, banger-agent and banger-vmm-qemu in /usr/local/bin; checking the host with banger doctor"

doctor=0
$sudo /usr/local/bin/banger doctor || doctor=$?
for w in "${warnings[@]}"; do say "warning: $w"; done
for p in "${problems[@]}"; do say "$p"; done
[ "$doctor" -eq 0 ] || say "banger doctor found what stops a VM: its FAIL lines above, each with a hint"
if [ "${#problems[@]}" -gt 0 ] || [ "$doctor" -ne 0 ]; then
  say "banger is installed, but cannot run a VM yet"
  exit 1
fi
say "ready: sudo banger vm run --rm -- uname -a (the first run builds the default image, a minute or two)"
