#!/usr/bin/env bash
# Compares `banger vm create --no-wait` with a bare `firecracker --config-file`
# start of the same kernel and rootfs (spawn until "Successfully started"),
# interleaved, RUNS times each, in a private network namespace. As root.
#   benches/create-vs-firecracker.sh [RUNS]     (default 7)
# Needs target/release/banger (cargo build --release; or set BANGER_BIN) and scripts/test-deps.sh's fixtures.
# Both sides boot with banger's initramfs (BENCH_INITRD, else the newest
# target/test-images/*/initrd.img the guest tests built), so banger's side
# takes the path an image from `banger image build` takes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-7}
banger="${BANGER_BIN:-$root/target/release/banger}"
fc="$root/target/test-deps/bin/firecracker"
kernel="$root/target/test-deps/vmlinux"
work=$(mktemp -d /tmp/bgbench.XXXXXX)
ns="bgbench-$$"
cleanup() {
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  sleep 0.5
  for l in /sys/block/loop*/loop/backing_file; do
    grep -q "^$work" "$l" 2>/dev/null && losetup -d "/dev/$(basename "$(dirname "$(dirname "$l")")")" || true
  done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
inns() { ip netns exec "$ns" "$@"; }
export BANGER_HOME="$work/home" BANGER_RUN_DIR="$work/run" BANGER_FIRECRACKER="$fc" BANGER_CONFIG="$work/config.toml"
# Firecracker itself, not whatever `auto` would pick on this host.
export BANGER_VMM=firecracker
echo 'tap_pool_size = 0' > "$BANGER_CONFIG"
truncate -s 512M "$work/rootfs.ext4" && mkfs.ext4 -q -F "$work/rootfs.ext4"
initrd=${BENCH_INITRD:-$(ls -t "$root"/target/test-images/*/initrd.img 2>/dev/null | head -1)}
if [ -z "$initrd" ] || [ ! -f "$initrd" ]; then
  echo "no initrd from banger image build (set BENCH_INITRD, or run the guest tests once)" >&2
  exit 1
fi
"$banger" image import bench --kernel "$kernel" --rootfs "$work/rootfs.ext4" --initrd "$initrd" >/dev/null

now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

inns ip tuntap add bench-tap mode tap
cat > "$work/fc.json" <<JSON
{
  "boot-source": {"kernel_image_path": "$kernel", "initrd_path": "$initrd", "boot_args": "console=ttyS0 reboot=k panic=1 pci=off"},
  "drives": [{"drive_id": "rootfs", "path_on_host": "$work/rootfs-copy.ext4", "is_root_device": true, "is_read_only": false}],
  "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "bench-tap", "guest_mac": "06:00:ac:1e:00:63"}],
  "machine-config": {"vcpu_count": 2, "mem_size_mib": 1024}
}
JSON
: > "$work/banger.ms"; : > "$work/fc.ms"
for i in $(seq "$runs"); do
  # banger: create (disks, TAP, spawn, configure, start), then delete.
  t0=$(now_ms)
  inns "$banger" vm create "b$i" --no-wait --work-size 1G --timings 2>"$work/timings.$i" >/dev/null
  t1=$(now_ms)
  echo $((t1 - t0)) >> "$work/banger.ms"
  inns "$banger" vm delete "b$i" --force >/dev/null 2>&1
  # bare Firecracker with the same kernel and a copy of the rootfs.
  cp --sparse=always "$work/rootfs.ext4" "$work/rootfs-copy.ext4"
  rm -f "$work/fc.sock"
  t0=$(now_ms)
  ip netns exec "$ns" "$fc" --api-sock "$work/fc.sock" --config-file "$work/fc.json" --level Info > "$work/fc.out" 2>&1 &
  pid=$!
  until grep -q "Successfully started" "$work/fc.out" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "firecracker failed:" >&2; cat "$work/fc.out" >&2; exit 1; }
    sleep 0.002
  done
  t1=$(now_ms)
  echo $((t1 - t0)) >> "$work/fc.ms"
  kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
done
b=$(median < "$work/banger.ms"); f=$(median < "$work/fc.ms")
echo "banger vm create --no-wait: median ${b} ms  (runs: $(tr '\n' ' ' < "$work/banger.ms"))"
echo "firecracker --config-file:  median ${f} ms  (runs: $(tr '\n' ' ' < "$work/fc.ms"))"
awk -v b="$b" -v f="$f" 'BEGIN {printf "ratio: %.2f\n", b / f}'
echo "banger's stages, median of the runs (ms):"
for stage in image allocate disks "root disk" tap spawn configure sidecar firewall total; do
  v=$(for i in $(seq "$runs"); do
        sed -nE "s/^  $stage +([0-9.]+) ms.*/\1/p" "$work/timings.$i"
      done | median)
  if [ -n "$v" ]; then printf '  %-10s %8s\n' "$stage" "$v"; fi
done
