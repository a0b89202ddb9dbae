#!/usr/bin/env bash
# How `vm list --json` and `vm create --no-start` latency grow with the
# number of VMs: measured at 0, 100 and 1000 VMs (made with --no-start) in a
# private state dir and network namespace. As root.
#   benches/list-scaling.sh [SIZES...]      (default: 0 100 1000)
# Needs target/release/banger (or BANGER_BIN) and scripts/test-deps.sh's
# fixtures (in target/test-deps, or BANGER_TEST_DEPS as for the tests).
# The image boots banger's initramfs (BENCH_INITRD, else the newest
# target/test-images/*/initrd.img the guest tests built) when one is there,
# as an image from `banger image build` does; else it has no initrd.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
banger="${BANGER_BIN:-$root/target/release/banger}"
deps="${BANGER_TEST_DEPS:-$root/target/test-deps}"
sizes=("${@:-0 100 1000}")
read -r -a sizes <<< "${sizes[*]}"
work=$(mktemp -d /tmp/bglist.XXXXXX)
ns="bglist-$$"
trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"' EXIT
ip netns add "$ns"
export BANGER_HOME="$work/home" BANGER_RUN_DIR="$work/run" BANGER_CONFIG="$work/config.toml"
export BANGER_FIRECRACKER="$deps/bin/firecracker"
# A /16, so that 1000 VMs get addresses (the default /24 holds 253).
echo 'subnet = "10.200.0.0/16"' > "$BANGER_CONFIG"
b() { ip netns exec "$ns" "$banger" "$@"; }
# Runs banger quietly; a failure prints its error and ends the bench.
must() { b "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }; }
truncate -s 64M "$work/rootfs.ext4" && mkfs.ext4 -q -F "$work/rootfs.ext4"
initrd=${BENCH_INITRD:-$(ls -t "$root"/target/test-images/*/initrd.img 2>/dev/null | head -1)}
if [ -n "$initrd" ] && [ -f "$initrd" ]; then
  must image import bench --kernel "$deps/vmlinux" --rootfs "$work/rootfs.ext4" --initrd "$initrd"
else
  echo "no initrd from banger image build: the image has none (host disk path)" >&2
  must image import bench --kernel "$deps/vmlinux" --rootfs "$work/rootfs.ext4"
fi
now_ms() { date +%s%N | cut -b1-13; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

count=0
# "allocate" is create's row insert (name, address, CID) as --timings
# reports it: the part that depends on the number of VMs. The rest of a
# create is sizing disks and writing the seed drive and known_hosts (with
# no initrd: a sparse copy and e2fsprogs runs), whose time follows the
# host's load and I/O.
printf '%6s %16s %22s %12s\n' VMs "list --json ms" "create --no-start ms" "allocate ms"
for target in "${sizes[@]}"; do
  while [ "$count" -lt "$target" ]; do
    must vm create "v$count" --no-start --work-size 64M
    count=$((count + 1))
  done
  # The creates above leave writes to flush: measure after them, not during.
  sync
  list=$(for _ in 1 2 3 4 5; do t0=$(now_ms); must vm list --json; echo $(( $(now_ms) - t0 )); done | median)
  for i in 1 2 3 4 5; do
    t0=$(now_ms)
    must vm create "probe$i" --no-start --work-size 64M --timings
    echo $(( $(now_ms) - t0 )) >> "$work/create"
    awk '$1 == "allocate" {print $2}' "$work/err" >> "$work/allocate"
  done
  create=$(median < "$work/create") allocate=$(median < "$work/allocate")
  rm "$work/create" "$work/allocate"
  for i in 1 2 3 4 5; do must vm delete "probe$i"; done
  printf '%6s %16s %22s %12s\n' "$target" "$list" "$create" "$allocate"
done
