#!/usr/bin/env bash
# banger's test command: unit tests everywhere; host, Firecracker and guest
# tiers when run as root with the fixtures from scripts/test-deps.sh; then
# the in-guest tier (scripts/test-in-guest.sh: dm-snapshot and
# systemd-resolved inside a Debian guest), whose counts end the summary.
# Ends with what was skipped and why (cargo hides it: a skipped test passes).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
find_cargo
hand_back_on_exit "$root/target"
export PATH="$root/target/test-deps/bin:$PATH"
export BANGER_TEST_DEPS="$root/target/test-deps"

# The guest agent goes into images, so it is linked statically.
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release -p banger-agent --target x86_64-unknown-linux-gnu
export BANGER_AGENT="$root/target/x86_64-unknown-linux-gnu/release/banger-agent"

# Each skipping test appends "<test file>::<test> — <tier> — <why>" here.
BANGER_TEST_SKIPS=$(mktemp -t banger-skips.XXXXXX)
export BANGER_TEST_SKIPS
at_exit 'rm -f "$BANGER_TEST_SKIPS"'

# Prints `skipped: N`, then one line per reason with the files it hit,
# and under it the tests.
summarize_skips() {
  local count
  count=$(grep -c . "$BANGER_TEST_SKIPS" || true)
  echo
  if [ "$count" -eq 0 ]; then
    echo "skipped: none"
    return
  fi
  echo "skipped: $count"
  sort "$BANGER_TEST_SKIPS" | awk -F ' — ' '
    {
      test = $1
      reason = substr($0, length($1) + length(" — ") + 1)
      file = test
      sub(/::.*/, "", file)
      if (!(reason in seen)) { seen[reason] = 1; order[++n] = reason }
      key = reason SUBSEP file
      if (!(key in files)) { files[key] = 0; file_order[reason] = file_order[reason] SUBSEP file }
      files[key]++
      tests[reason] = tests[reason] "\n  " test
    }
    END {
      for (i = 1; i <= n; i++) {
        reason = order[i]
        split(substr(file_order[reason], 2), fs, SUBSEP)
        where = ""
        for (j = 1; j in fs; j++) {
          k = files[reason SUBSEP fs[j]]
          where = where (j > 1 ? ", " : "") fs[j] ": " k (k == 1 ? " test" : " tests")
        }
        print "skipped: " reason " (" where ")" tests[reason]
      }
    }'
}

# fault-injection: the crash tests abort banger after each stage (src/fault.rs).
features=(--features banger/fault-injection)
status=0
cargo build --workspace --all-targets "${features[@]}" &&
  cargo test --workspace --no-fail-fast "${features[@]}" -- --test-threads=2 || status=$?

BANGER_IN_GUEST_SUMMARY=$(mktemp -t banger-in-guest.XXXXXX)
export BANGER_IN_GUEST_SUMMARY
at_exit 'rm -f "$BANGER_IN_GUEST_SUMMARY"'
echo
echo "in-guest tier (scripts/test-in-guest.sh)"
in_guest=0
scripts/test-in-guest.sh || in_guest=$?
[ "$in_guest" -eq 0 ] || status=$in_guest

summarize_skips
echo
if [ -s "$BANGER_IN_GUEST_SUMMARY" ]; then
  cat "$BANGER_IN_GUEST_SUMMARY"
else
  echo "in-guest tier: did not run (see the skips above)"
fi
exit "$status"
