#!/usr/bin/env bash
# `vm run --rm -- true` from a warm pool over a cold `vm run --rm -- true` of
# the same image, side by side: N runs of each, interleaved, and the ratio
# of their medians (warm/cold), with the warm run's stages (--timings).
# As root, in a private banger state and network namespace.
#   benches/warm-run.sh [-n N] [--vmm qemu|firecracker] [IMAGE_DIR]
# IMAGE_DIR holds vmlinux, initrd.img, rootfs.ext4 and work-seed.ext4 (what
# `banger image build` writes); default: the newest complete one under
# target/test-images/. It is imported twice, as `warm` (with a pool of one)
# and `cold` (without), so that cold runs claim nothing. Before every run
# the pool is full again and nothing else boots, so each run is measured
# alone (but for the refill a claim starts: that is the warm path's). The
# VMM: --vmm, else Firecracker where `banger doctor` says it runs guests,
# else banger-vmm-qemu. BANGER_BIN picks banger (default:
# target/release/banger, else target/debug/banger); BANGER_TEST_DEPS the
# fixtures (default: target/test-deps).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
usage() { echo "usage: benches/warm-run.sh [-n N] [--vmm qemu|firecracker] [IMAGE_DIR]" >&2; exit 2; }
runs=3 image="" vmm=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) runs=${2:?}; shift 2 ;;
    --vmm) vmm=${2:?}; shift 2 ;;
    -h|--help|-*) usage ;;
    *) [ -z "$image" ] || usage; image=$1; shift ;;
  esac
done
case "$runs" in ''|*[!0-9]*|0) echo "-n wants a positive number, not '$runs'" >&2; exit 2 ;; esac
case "$vmm" in ''|qemu|firecracker) ;; *) echo "--vmm is qemu or firecracker, not '$vmm'" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "benches/warm-run.sh runs as root" >&2; exit 2; }
command -v python3 >/dev/null || { echo "benches/warm-run.sh needs python3" >&2; exit 2; }

complete() { for f in vmlinux initrd.img rootfs.ext4 work-seed.ext4; do [ -f "$1/$f" ] || return 1; done; }
if [ -z "$image" ]; then
  newest=0
  for dir in "$root"/target/test-images/*/; do
    dir=${dir%/}
    complete "$dir" || continue
    t=$(stat -c %Y "$dir/rootfs.ext4")
    if [ "$t" -gt "$newest" ]; then newest=$t image=$dir; fi
  done
fi
[ -n "$image" ] || { echo "no image under target/test-images (run the guest tests once, or name one)" >&2; exit 2; }
complete "$image" || { echo "$image lacks one of vmlinux, initrd.img, rootfs.ext4, work-seed.ext4" >&2; exit 2; }

banger=${BANGER_BIN:-$root/target/release/banger}
[ -x "$banger" ] || banger=$root/target/debug/banger
[ -x "$banger" ] || { echo "no banger binary: cargo build, or set BANGER_BIN" >&2; exit 2; }
bindir=$(dirname "$banger")
deps=${BANGER_TEST_DEPS:-$root/target/test-deps}
export PATH="$deps/bin:$PATH"
if [ -z "$vmm" ]; then
  if "$banger" doctor 2>/dev/null | grep -q 'auto picks firecracker: it has run guests'; then
    vmm=firecracker
  else
    vmm=qemu
  fi
fi

work=$(mktemp -d /tmp/bgwarm.XXXXXX)
ns="bgwarm-$$"
inns() { ip netns exec "$ns" "$@"; }
cleanup() {
  set +e
  inns "$banger" pool rm warm >/dev/null 2>&1
  for vm in $(inns "$banger" vm list --all --quiet 2>/dev/null); do
    inns "$banger" vm delete "$vm" --force >/dev/null 2>&1
  done
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
trap cleanup EXIT
ip netns add "$ns"
export BANGER_HOME="$work/home" BANGER_RUN_DIR="$work/run" BANGER_CONFIG="$work/config.toml"
export BANGER_FIRECRACKER="${BANGER_FIRECRACKER:-$deps/bin/firecracker}" BANGER_VMM=$vmm
if [ "$vmm" = qemu ]; then
  export BANGER_VMM_QEMU="${BANGER_VMM_QEMU:-$bindir/banger-vmm-qemu}"
  [ -x "$BANGER_VMM_QEMU" ] || { echo "no $BANGER_VMM_QEMU: cargo build --workspace" >&2; exit 2; }
fi
echo 'tap_pool_size = 2' > "$BANGER_CONFIG"
for name in warm cold; do
  "$banger" image import "$name" --kernel "$image/vmlinux" --rootfs "$image/rootfs.ext4" \
    --initrd "$image/initrd.img" --work-seed "$image/work-seed.ext4" >/dev/null
done
inns "$banger" pool set warm --size 1 2>/dev/null
echo "vmm: $vmm; runs: $runs; image: $image"

# Waits until the pool is full and its fill has exited.
full() {
  local deadline=$((SECONDS + 600))
  until inns "$banger" pool ls --json | python3 -c '
import json, sys
p = json.load(sys.stdin)[0]
sys.exit(0 if p["ready"] == p["size"] and p["filling"] == 0 else 1)' &&
    ! pgrep -f "banger pool fill" >/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "the pool did not fill:"; cat "$BANGER_HOME/pool-fill.log"; exit 1; } >&2
    sleep 0.5
  done
}
now_ms() { date +%s%3N; }
for i in $(seq "$runs"); do
  for name in cold warm; do
    full
    t0=$(now_ms)
    inns "$banger" vm run --rm --image "$name" --timings -- true 2>"$work/timings" >/dev/null ||
      { echo "vm run of $name failed:" >&2; cat "$work/timings" >&2; exit 1; }
    t1=$(now_ms)
    grep -q "pool         warm" "$work/timings" && got=warm || got=cold
    [ "$got" = "$name" ] || { echo "a $name run came $got:" >&2; cat "$work/timings" >&2; exit 1; }
    stage() { awk -v s="$1" '$1 == s { v = sprintf("%.0f", $2) } END { print (v == "" ? "-" : v) }' "$work/timings"; }
    echo "$name $((t1 - t0)) $(stage claim) $(stage ready) $(stage total)" >> "$work/rows"
    echo "  $(tail -1 "$work/rows")" >&2
  done
done
median() { sort -n | awk '{a[NR]=$1} END { if (NR == 0) print "-"; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2) }'; }
col() { awk -v n="$1" -v c="$2" '$1 == n && $c != "-" { print $c }' "$work/rows" | median; }
cold=$(col cold 2) warm=$(col warm 2)
echo
printf '%-6s %10s %10s %10s %14s\n' "" "e2e ms" "claim ms" "ready ms" "before ssh ms"
for name in cold warm; do
  printf '%-6s %10s %10s %10s %14s\n' "$name" "$(col "$name" 2)" "$(col "$name" 3)" "$(col "$name" 4)" "$(col "$name" 5)"
done
echo "warm/cold: $(awk -v w="$warm" -v c="$cold" 'BEGIN { printf "%.3f", w / c }')"
echo "(medians of $runs; e2e is the wall time of \`vm run --rm -- true\`; \"before ssh\" is banger's"
echo " stages up to the command: claim or create and start, then the wait; the rest of e2e is"
echo " the SSH session and the delete)"
