#!/usr/bin/env bash
# `banger vm cp` of one file into a guest against plain `scp` with the same
# ssh options (banger's key, pinned known_hosts, via `vm ssh-config`) to the
# same VM, interleaved, RUNS times each. As root; uses an existing running VM
# of your banger state (or the one BANGER_HOME etc. point at).
#   benches/cp.sh VM [SIZE_MB] [RUNS]     (defaults: 100 MB, 3 runs)
# BANGER_BIN picks the binary (default: target/release/banger, else `banger`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
vm=${1:?usage: benches/cp.sh VM [SIZE_MB] [RUNS]}
size_mb=${2:-100}
runs=${3:-3}
banger="${BANGER_BIN:-$root/target/release/banger}"
[ -x "$banger" ] || banger=banger
work=$(mktemp -d /tmp/bgcp.XXXXXX)
trap 'rm -rf "$work"' EXIT
head -c "$((size_mb << 20))" /dev/urandom > "$work/blob"
"$banger" vm ssh-config "$vm" > "$work/ssh_config"
now() { date +%s.%N; }
for i in $(seq "$runs"); do
  t0=$(now)
  "$banger" vm cp "$work/blob" "$vm:/root/blob-cp"
  t1=$(now)
  scp -q -F "$work/ssh_config" "$work/blob" "$vm:/root/blob-scp"
  t2=$(now)
  "$banger" vm ssh "$vm" -- rm -f /root/blob-cp /root/blob-scp
  echo "run $i: vm cp $(echo "$t1 - $t0" | bc) s, scp $(echo "$t2 - $t1" | bc) s" \
       "(ratio $(echo "scale=2; ($t1 - $t0) / ($t2 - $t1)" | bc))"
done
