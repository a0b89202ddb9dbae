# Shared by banger's scripts (sourced, not run): messages, finding cargo
# under sudo, handing files back to the user who ran sudo, and commands
# whose failure is reported as one line saying what failed and what to do.
# shellcheck shell=bash

# The script's name, prefixed to every message.
script_name=$(basename "$0")
# The checkout these scripts belong to.
checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { echo "$script_name: $*" >&2; }
die() {
  say "$*"
  exit 1
}

# Commands run when the script exits, in the order given to at_exit.
exit_hooks=()
run_exit_hooks() {
  local status=$? hook
  for hook in "${exit_hooks[@]}"; do eval "$hook" || true; done
  exit "$status"
}
at_exit() {
  exit_hooks+=("$1")
  trap run_exit_hooks EXIT
}

# The home directory of the user who ran sudo, or nothing.
sudo_user_home() {
  [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] || return 0
  getent passwd "$SUDO_USER" | cut -d: -f6
}

# Makes `cargo` (from rustup) runnable. sudo's secure_path drops
# ~/.cargo/bin and its HOME makes rustup look in /root/.rustup, so when cargo
# is not on PATH this takes $CARGO_HOME/bin, else the invoking user's
# ~/.cargo/bin with their ~/.rustup (unless RUSTUP_HOME is set), else ~/.cargo/bin.
find_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    local home dir candidates=()
    home=$(sudo_user_home)
    [ -n "${CARGO_HOME:-}" ] && candidates+=("$CARGO_HOME/bin")
    [ -n "$home" ] && candidates+=("$home/.cargo/bin")
    [ "$home" = "$HOME" ] || candidates+=("$HOME/.cargo/bin")
    for dir in "${candidates[@]}"; do
      [ -x "$dir/cargo" ] || continue
      export PATH="$dir:$PATH"
      if [ -n "$home" ] && [ "$dir" = "$home/.cargo/bin" ]; then
        say "using cargo from $dir (sudo dropped it from PATH)"
        if [ -z "${RUSTUP_HOME:-}" ] && [ -d "$home/.rustup" ]; then
          export RUSTUP_HOME="$home/.rustup"
        fi
      else
        say "using cargo from $dir (it was not on PATH)"
      fi
      break
    done
    command -v cargo >/dev/null 2>&1 ||
      die "cargo not found on PATH or in ${candidates[*]}; install Rust 1.89 or newer with rustup (https://rustup.rs), then run this again"
  fi
  local version
  version=$(cargo --version 2>&1) ||
    die "$(command -v cargo) does not run (${version%%$'\n'*}); install a toolchain with rustup (rustup default stable), then run this again"
}

# When running as root through sudo in a checkout that belongs to the user
# who ran sudo, gives each PATH (recursively) back to that user on exit, so
# what cargo and the downloads wrote there stays theirs to rebuild and remove.
hand_back_on_exit() {
  [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_UID:-}" ] && [ "$SUDO_UID" != 0 ] || return 0
  [ "$(stat -c %u "$checkout")" = "$SUDO_UID" ] || return 0
  [ ${#hand_back_paths[@]} -gt 0 ] || at_exit hand_back
  hand_back_paths+=("$@")
}
hand_back_paths=()
hand_back() {
  local path
  for path in "${hand_back_paths[@]}"; do
    [ ! -e "$path" ] || chown -hR "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$path"
  done
}

# The line of a failed command's output that says why: the last error line
# (curl, pip, apt, cargo; for cargo's chains the innermost cause; for pip's
# retries the connection error), else the last line, without the tool's prefix.
failure_reason() {
  local line
  line=$(sed -n "s/.*after connection broken by '\(.*\)': .*/\1/p" "$1" | tail -n 1)
  [ -n "$line" ] || grep -q '^Caused by:' "$1" ||
    line=$(grep -E '^(curl: |ERROR: |E: |error: |sudo: )' "$1" | tail -n 1)
  [ -n "$line" ] || line=$(grep -v '^[[:space:]]*$' "$1" | tail -n 1)
  printf '%s' "$line" | sed -E 's/^(curl: \([0-9]+\) |ERROR: |E: |error: |sudo: )//; s/^[[:space:]]+//'
}

# attempt WHAT HINT COMMAND...: runs COMMAND with its output kept aside.
# On failure prints the output's last lines, then
#   could not WHAT (TOOL: why). HINT
# (also left in $attempt_failure) and returns COMMAND's status, leaving it
# to the caller to stop or carry on.
attempt_failure=""
attempt() {
  local what=$1 hint=$2 log status=0
  shift 2
  log=$(mktemp)
  "$@" >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    # The tool's name, past `sudo`, `env NAME=VALUE` and `python3 -m`.
    local words=("$@") i=0 tool
    while [ $((i + 1)) -lt ${#words[@]} ]; do
      case ${words[i]} in sudo | env | *=*) i=$((i + 1)) ;; *) break ;; esac
    done
    tool=${words[i]##*/}
    [ "$tool" = python3 ] && [ "${words[i + 1]:-}" = -m ] && tool=${words[i + 2]:-python3}
    # More than the one line quoted below: show the end of it, repeats once.
    if [ "$(grep . "$log" | uniq | wc -l)" -gt 1 ]; then
      grep . "$log" | uniq | tail -n 15 | sed 's/^/  | /' >&2
    fi
    attempt_failure="could not $what ($tool: $(failure_reason "$log")). $hint"
    say "$attempt_failure"
  fi
  rm -f "$log"
  return "$status"
}
