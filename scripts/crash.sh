#!/usr/bin/env bash
# Crash-safety soak: runs the SIGKILL tests of tests/cli/crash/ longer than
# `cargo test` does, and prints their summary lines (for docs/reliability.md).
#
#   scripts/crash.sh ROUNDS [SEED]
#
#   scripts/crash.sh 500               500 rounds, a fresh seed
#   scripts/crash.sh 200 1234          200 rounds, seed 1234 (decimal or 0x-hex)
#
# ROUNDS is the number of rounds of the main test (in each, a few `duet`
# writers, one-shot syncs and the two homes' `duet serve` run at once and a
# random subset is killed with SIGKILL 0-300 ms in; then every home must open,
# hold every acknowledged edit, and live sync must resume). The big-sync test
# (kill `serve` while a large divergent history is being synced, then the next
# sync must converge) runs ROUNDS/10 kills. `cargo test` runs 25 rounds and 3
# kills.
#
# The same seed repeats the same choices (commands, targets, delays); where a
# kill lands still depends on the machine. Full log: target/crash/crash-<seed>.log.
#
# Environment:
#   CRASH_TARGET_DIR=DIR  build in a target dir of its own (such as
#                         target/crash-build), so that another build on the
#                         machine cannot replace target/debug/duet in the
#                         middle of a long run (the first build takes a while)
#   DUET_TEST_LOG=info    the servers' logs (shown for a slow resume)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-}
if ! [[ $rounds =~ ^[0-9]+$ ]] || [[ $rounds -eq 0 ]]; then
  echo "usage: scripts/crash.sh ROUNDS [SEED]  (ROUNDS a whole number > 0)" >&2
  exit 2
fi
seed=${2:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}
if ! [[ $seed =~ ^([0-9]+|0x[0-9a-fA-F]+)$ ]]; then
  echo "error: SEED must be a number (decimal or 0x-hex), got '$seed'" >&2
  exit 2
fi

if [[ -n ${CRASH_TARGET_DIR:-} ]]; then
  export CARGO_TARGET_DIR=$CRASH_TARGET_DIR
fi
mkdir -p target/crash
log=target/crash/crash-$seed.log
echo "building the CLI tests (dev profile)..." >&2
cargo test -p duet-cli --test cli --no-run >&2

echo "running crash tests: $rounds rounds, seed $seed (log: $log)..." >&2
start=$(date +%s)
status=0
DUET_CRASH_ROUNDS=$rounds DUET_CRASH_SEED=$seed \
  cargo test -p duet-cli --test cli crash:: -- --nocapture --test-threads=1 >"$log" 2>&1 || status=$?
took=$(($(date +%s) - start))

grep -E '^crash summary' "$log" || true
if [[ $status -ne 0 ]]; then
  echo "FAILED after ${took}s (seed $seed): the failure, from $log:" >&2
  grep -E -A 12 "panicked at|^---- " "$log" | head -60 >&2 || tail -40 "$log" >&2
  echo "repeat with: scripts/crash.sh $rounds $seed" >&2
  exit 1
fi
echo "crash: $rounds rounds passed in ${took}s (seed $seed)"
