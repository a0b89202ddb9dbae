#!/usr/bin/env bash
# Boots an image N times (`banger vm run --timings -- true` of a fresh VM,
# then `vm delete`) and prints the medians of its boot stages; with a
# baseline image, boots both interleaved and prints the ratio new/baseline.
# As root, in a private banger state and network namespace.
#   benches/boot.sh [-n N] [--vmm qemu|firecracker] [--baseline IMAGE_DIR] [IMAGE_DIR]
# An IMAGE_DIR holds vmlinux, initrd.img, rootfs.ext4 and work-seed.ext4 (what
# `banger image build` writes). Default IMAGE_DIR: the newest complete one
# under target/test-images/, else one built now with `banger image build`
# (needs BANGER_AGENT). N defaults to 3. The VMM: --vmm, else Firecracker
# where `banger doctor` says it runs guests, else banger-vmm-qemu (QEMU's
# software CPU). BANGER_BIN picks banger (default: target/release/banger,
# else target/debug/banger); BANGER_TEST_DEPS the Firecracker and
# vhost-device-vsock fixtures (default: target/test-deps).
#
# Stages, in seconds of the guest's clock (from the console log, else the
# guest's journal over `vm ssh`): kernel = until "Run /init"; initramfs =
# from there to systemd's first line; agent / sshd = from systemd's first
# line to banger-agent.service started / sshd listening. ready is banger's
# own stage (agent answers and sshd accepts), e2e the wall time of
# `vm run -- true` plus `vm delete`. Once per image it saves
# `systemd-analyze blame` and `critical-chain` and prints their heads
# (BOOT_BENCH_KEEP=DIR keeps them, the rows and the consoles).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
usage() { echo "usage: benches/boot.sh [-n N] [--vmm qemu|firecracker] [--baseline IMAGE_DIR] [IMAGE_DIR]" >&2; exit 2; }
runs=3 baseline="" image="" vmm=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) runs=${2:?}; shift 2 ;;
    --baseline) baseline=${2:?}; shift 2 ;;
    --vmm) vmm=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) [ -z "$image" ] || usage; image=$1; shift ;;
  esac
done
case "$runs" in ''|*[!0-9]*|0) echo "-n wants a positive number, not '$runs'" >&2; exit 2 ;; esac
case "$vmm" in ''|qemu|firecracker) ;; *) echo "--vmm is qemu or firecracker, not '$vmm'" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "benches/boot.sh runs as root" >&2; exit 2; }

complete() { for f in vmlinux initrd.img rootfs.ext4 work-seed.ext4; do [ -f "$1/$f" ] || return 1; done; }
for dir in $baseline $image; do
  complete "$dir" || { echo "$dir lacks one of vmlinux, initrd.img, rootfs.ext4, work-seed.ext4" >&2; exit 2; }
done

banger=${BANGER_BIN:-$root/target/release/banger}
[ -x "$banger" ] || banger=$root/target/debug/banger
[ -x "$banger" ] || { echo "no banger binary: cargo build, or set BANGER_BIN" >&2; exit 2; }
bindir=$(dirname "$banger")
deps=${BANGER_TEST_DEPS:-$root/target/test-deps}
export PATH="$deps/bin:$PATH"

if [ -z "$vmm" ]; then
  # Firecracker only where it has run guests on this host (the user's own
  # banger state says so); otherwise the test VMM.
  if "$banger" doctor 2>/dev/null | grep -q 'auto picks firecracker: it has run guests'; then
    vmm=firecracker
  else
    vmm=qemu
  fi
fi

work=$(mktemp -d /tmp/bgboot.XXXXXX)
ns="bgboot-$$"
cleanup() {
  set +e
  for vm in $(inns "$banger" vm list --quiet 2>/dev/null); do
    inns "$banger" vm delete "$vm" --force >/dev/null 2>&1
  done
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
  # The sidecar and VMMs banger started for this state, wherever they run.
  for p in /proc/[0-9]*; do
    grep -qz "^BANGER_RUN_DIR=$work/run" "$p/environ" 2>/dev/null && kill -9 "${p#/proc/}" 2>/dev/null
  done
  sleep 0.5
  for l in /sys/block/loop*/loop/backing_file; do
    grep -q "^$work" "$l" 2>/dev/null && losetup -d "/dev/$(basename "$(dirname "$(dirname "$l")")")"
  done
  ip netns del "$ns" 2>/dev/null
  rm -rf "$work"
}
inns() { ip netns exec "$ns" "$@"; }
trap cleanup EXIT
ip netns add "$ns"
export BANGER_HOME="$work/home" BANGER_RUN_DIR="$work/run" BANGER_CONFIG="$work/config.toml"
export BANGER_FIRECRACKER="${BANGER_FIRECRACKER:-$deps/bin/firecracker}" BANGER_SIDECAR_GRACE=3s
echo 'tap_pool_size = 0' > "$BANGER_CONFIG"

export BANGER_VMM=$vmm
if [ "$vmm" = qemu ]; then
  export BANGER_VMM_QEMU="${BANGER_VMM_QEMU:-$bindir/banger-vmm-qemu}"
  [ -x "$BANGER_VMM_QEMU" ] || { echo "no $BANGER_VMM_QEMU: cargo build --workspace" >&2; exit 2; }
fi

if [ -z "$image" ]; then
  newest=0
  for dir in "$root"/target/test-images/*/; do
    dir=${dir%/}
    complete "$dir" || continue
    t=$(stat -c %Y "$dir/rootfs.ext4")
    if [ "$t" -gt "$newest" ]; then newest=$t image=$dir; fi
  done
fi
if [ -z "$image" ]; then
  echo "no image under target/test-images: building one (banger image build)" >&2
  "$banger" image build new >&2
  image="$BANGER_HOME/images/new"
else
  "$banger" image import new --kernel "$image/vmlinux" --rootfs "$image/rootfs.ext4" \
    --initrd "$image/initrd.img" --work-seed "$image/work-seed.ext4" >/dev/null
fi
names=(new)
if [ -n "$baseline" ]; then
  "$banger" image import baseline --kernel "$baseline/vmlinux" --rootfs "$baseline/rootfs.ext4" \
    --initrd "$baseline/initrd.img" --work-seed "$baseline/work-seed.ext4" >/dev/null
  names=(baseline new)
fi
echo "vmm: $vmm; runs: $runs; new: $image${baseline:+; baseline: $baseline}"

now_ms() { date +%s%3N; }
# mark FILE REGEX: the guest-clock seconds of the first line of FILE matching REGEX.
mark() { grep -aE -m1 "$2" "$1" 2>/dev/null | sed -nE 's/^[^[]*\[ *([0-9]+\.[0-9]+)\].*/\1/p' | head -1; }
# The journal as "[seconds] message", to read like the console.
journal() {
  inns "$banger" vm ssh "$1" -- journalctl -b -o short-monotonic --no-pager 2>/dev/null |
    sed -E 's/^\[ *([0-9.]+)\] [^ ]+ /[\1] /'
}
stage() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "-"; else printf "%.2f\n", b - a }'; }

for i in $(seq "$runs"); do
  for name in "${names[@]}"; do
    vm="$name-$i"
    t0=$(now_ms)
    inns "$banger" vm run --name "$vm" --image "$name" --timings -- true 2>"$work/timings" >/dev/null ||
      { echo "vm run of $name failed:" >&2; cat "$work/timings" >&2; exit 1; }
    t1=$(now_ms)
    ready=$(awk '$1 == "ready" { printf "%.2f", $2 / 1000 }' "$work/timings")
    console=$(echo "$BANGER_HOME"/vms/*/console.log)
    journal "$vm" > "$work/journal"
    if [ "$i" = 1 ]; then
      inns "$banger" vm ssh "$vm" -- systemd-analyze blame > "$work/$name.blame" 2>&1 || true
      inns "$banger" vm ssh "$vm" -- systemd-analyze critical-chain > "$work/$name.chain" 2>&1 || true
      inns "$banger" vm ssh "$vm" -- systemd-analyze > "$work/$name.analyze" 2>&1 || true
      cp "$console" "$work/$name.console" 2>/dev/null || true
    fi
    t2=$(now_ms)
    inns "$banger" vm delete "$vm" --force >/dev/null
    t3=$(now_ms)
    pick() { local m; m=$(mark "$console" "$1"); [ -n "$m" ] || m=$(mark "$work/journal" "$1"); echo "$m"; }
    k=$(pick 'Run /init'); k=${k:+$(printf '%.2f' "$k")}; s=$(pick 'systemd\[1\]:')
    a=$(mark "$work/journal" 'Started banger-agent.service')
    h=$(mark "$work/journal" 'sshd\[[0-9]+\]: Server listening on|Listening on ssh.socket')
    printf '%s %s %s %s %s %s %s\n' "$name" "${k:--}" "$(stage "$k" "$s")" "$(stage "$s" "$a")" \
      "$(stage "$s" "$h")" "$ready" "$(awk -v a=$((t1 - t0 + t3 - t2)) 'BEGIN { printf "%.2f", a / 1000 }')" >> "$work/rows"
    echo "  $(tail -1 "$work/rows")" >&2
  done
done

median() { grep -v '^-$' | sort -n | awk '{a[NR]=$1} END { if (NR == 0) print "-"; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2) }'; }
stages=(kernel initramfs agent sshd ready e2e)
declare -A med
for name in "${names[@]}"; do
  for c in 2 3 4 5 6 7; do
    med[$name,$c]=$(awk -v n="$name" -v c="$c" '$1 == n { print $c }' "$work/rows" | median)
  done
done
echo
printf '%-10s' "seconds"; for s in "${stages[@]}"; do printf '%10s' "$s"; done; echo
for name in "${names[@]}"; do
  printf '%-10s' "$name"; for c in 2 3 4 5 6 7; do printf '%10s' "${med[$name,$c]}"; done; echo
done
if [ -n "$baseline" ]; then
  printf '%-10s' "new/base"
  for c in 2 3 4 5 6 7; do
    printf '%10s' "$(awk -v a="${med[new,$c]}" -v b="${med[baseline,$c]}" \
      'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }')"
  done
  echo
fi
echo "(medians of $runs; kernel = guest clock at \"Run /init\"; agent, sshd from systemd's first line)"
for name in "${names[@]}"; do
  echo
  echo "== $name: $(grep -m1 'Startup finished' "$work/$name.analyze" 2>/dev/null || echo 'systemd-analyze: -')"
  echo "-- systemd-analyze blame (top 12)"; head -12 "$work/$name.blame" 2>/dev/null || true
  echo "-- systemd-analyze critical-chain"; head -20 "$work/$name.chain" 2>/dev/null || true
done
if [ -n "${BOOT_BENCH_KEEP:-}" ]; then
  mkdir -p "$BOOT_BENCH_KEEP"
  cp "$work"/rows "$work"/*.blame "$work"/*.chain "$work"/*.console "$BOOT_BENCH_KEEP"/ 2>/dev/null || true
fi
