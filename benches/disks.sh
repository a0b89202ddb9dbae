#!/usr/bin/env bash
# The disks stage of `vm create --no-start` for a nearly empty 64 MB image
# and a 1 GB image holding 600 MB of data, interleaved, RUNS times each, on
# this host's BANGER_HOME filesystem. Each image is imported twice: with
# banger's initramfs (what `banger image build` makes: no writes inside
# disks, an overlay root without dm or reflink) and without an initrd (the
# host strategies, resize2fs and debugfs). As root.
#   benches/disks.sh [RUNS]     (default 7)
# Needs target/release/banger (or BANGER_BIN), scripts/test-deps.sh's
# fixtures, and banger's initramfs (BENCH_INITRD, else the newest
# target/test-images/*/initrd.img the guest tests built).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-7}
banger="${BANGER_BIN:-$root/target/release/banger}"
kernel="$root/target/test-deps/vmlinux"
initrd=${BENCH_INITRD:-$(ls -t "$root"/target/test-images/*/initrd.img 2>/dev/null | head -1)}
if [ -z "$initrd" ] || [ ! -f "$initrd" ]; then
  echo "no initrd from banger image build (set BENCH_INITRD, or run the guest tests once)" >&2
  exit 1
fi
work=$(mktemp -d /var/tmp/bgdisks.XXXXXX)
trap 'rm -rf "$work"' EXIT
export BANGER_HOME="$work/home" BANGER_RUN_DIR="$work/run" BANGER_CONFIG="$work/config.toml"
: > "$BANGER_CONFIG"
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

truncate -s 64M "$work/small.ext4" && mkfs.ext4 -q -F "$work/small.ext4"
truncate -s 1G "$work/big.ext4" && mkfs.ext4 -q -F "$work/big.ext4"
mkdir "$work/mnt"
mount -o loop "$work/big.ext4" "$work/mnt"
head -c 600M /dev/urandom > "$work/mnt/data"
umount "$work/mnt"
for size in small big; do
  "$banger" image import "$size-seeded" --kernel "$kernel" --rootfs "$work/$size.ext4" --initrd "$initrd" >/dev/null
  "$banger" image import "$size-plain" --kernel "$kernel" --rootfs "$work/$size.ext4" >/dev/null
done

disks_ms() { grep -E '^  disks +[0-9.]+ ms' | sed -E 's/^  disks +([0-9.]+) ms.*/\1/'; }
for image in small-seeded big-seeded small-plain big-plain; do : > "$work/$image.ms"; done
for i in $(seq "$runs"); do
  for image in small-seeded big-seeded small-plain big-plain; do
    "$banger" vm create "$image-$i" --image "$image" --no-start --work-size 1G --timings 2>"$work/t" >/dev/null
    disks_ms < "$work/t" >> "$work/$image.ms"
    strategy=$("$banger" vm show "$image-$i" --json | sed -n 's/.*"cow_strategy": *"\([^"]*\)".*/\1/p')
    echo "$strategy" > "$work/$image.strategy"
    "$banger" vm delete "$image-$i" >/dev/null 2>&1
  done
done
printf '%-14s %-12s %10s\n' image strategy "disks ms"
for image in small-seeded big-seeded small-plain big-plain; do
  printf '%-14s %-12s %10s\n' "$image" "$(cat "$work/$image.strategy")" "$(median < "$work/$image.ms")"
done
for kind in seeded plain; do
  awk -v b="$(median < "$work/big-$kind.ms")" -v s="$(median < "$work/small-$kind.ms")" -v k="$kind" \
    'BEGIN {printf "1 GB (600 MB data) over 64 MB, %s: %.2f\n", k, b / s}'
done
