#!/usr/bin/env bash
# Runs duet's fuzz targets (fuzz/, cargo-fuzz + libFuzzer) for a given time each.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
#   scripts/fuzz.sh 60                 every target for 60 s
#   scripts/fuzz.sh 300 session store_open
#
# SECONDS is per target (default 60); the targets default to all of them
# (`cargo fuzz list`). For each target it prints the runs executed, runs per
# second, and whether it found a crash. A crash stops that target's run (unless
# FUZZ_KEEP_GOING=1) and lands in fuzz/artifacts/<target>/; to keep it as a
# regression test, copy it to fuzz/regressions/<target>/ and
# `cargo test -p duet-sync --test fuzz_corpus` replays it on stable.
#
# The committed seeds in fuzz/corpus/<target>/ are read, never written: what
# the fuzzer finds goes to fuzz/work/<target>/ (ignored by git), so later runs
# start from it. Full logs: fuzz/work/<target>.log.
#
# Environment:
#   FUZZ_JOBS=N         targets fuzzed at once (default 1; the machine has 2 cores)
#   FUZZ_SANITIZER=S    address (default) or none. The machine's Rust is stable:
#                       the sanitizer flags need RUSTC_BOOTSTRAP=1, set here.
#   FUZZ_KEEP_GOING=1   go on after a crash (libFuzzer's -fork=1 -ignore_crashes=1)
#   FUZZ_ARGS="..."     more libFuzzer arguments, such as -max_len=65536
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
if [[ $# -gt 0 ]]; then shift; fi
if ! [[ $seconds =~ ^[0-9]+$ ]] || [[ $seconds -eq 0 ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]  (SECONDS per target, a whole number)" >&2
  exit 2
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)..." >&2
  cargo install cargo-fuzz --locked
fi

# cargo-fuzz's sanitizer and coverage flags are -Z flags: allowed on stable
# with RUSTC_BOOTSTRAP=1 (there is no nightly toolchain on these machines).
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-address}
build_flags=(--sanitizer "$sanitizer")

if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
known=$(cargo fuzz list)
for t in "${targets[@]}"; do
  if ! grep -qx "$t" <<<"$known"; then
    echo "error: no fuzz target '$t' (targets: $(echo $known))" >&2
    exit 2
  fi
done

# The store target writes a database file per run: keep that in memory.
if [[ -d /dev/shm && -w /dev/shm ]]; then
  export TMPDIR=/dev/shm/duet-fuzz
  mkdir -p "$TMPDIR"
fi

echo "building ${#targets[@]} fuzz target(s) (sanitizer: $sanitizer)..." >&2
if [[ ${#targets[@]} -eq 1 ]]; then
  cargo fuzz build "${build_flags[@]}" "${targets[0]}"
else
  cargo fuzz build "${build_flags[@]}"
fi

mkdir -p fuzz/work fuzz/artifacts
extra=()
if [[ ${FUZZ_KEEP_GOING:-0} == 1 ]]; then
  extra+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
fi
# shellcheck disable=SC2206
extra+=(${FUZZ_ARGS:-})

run_one() {
  local t=$1 log=fuzz/work/$1.log
  mkdir -p "fuzz/work/$t" "fuzz/corpus/$t" "fuzz/artifacts/$t"
  local before
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  local status=0
  cargo fuzz run "${build_flags[@]}" "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=20 -rss_limit_mb=4096 \
    "${extra[@]}" >"$log" 2>&1 || status=$?
  local after runs rate found
  after=$(find "fuzz/artifacts/$t" -type f | wc -l)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [[ -z $runs ]]; then
    # Fork mode (or an early stop): the last status line, "#N ... exec/s: R".
    runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    rate=$(grep -oE 'exec/s: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || true)
  fi
  if [[ $status -eq 0 && $after -eq $before ]]; then
    found="no crash"
  else
    found="CRASH (exit $status, $((after - before)) new in fuzz/artifacts/$t/, log $log)"
  fi
  printf '%-18s %7ss %12s runs %8s runs/s   %s\n' "$t" "$seconds" "${runs:-?}" "${rate:-?}" "$found" |
    tee "fuzz/work/$t.result"
}

jobs_max=${FUZZ_JOBS:-1}
echo "fuzzing ${#targets[@]} target(s) for ${seconds}s each, $jobs_max at a time..." >&2
printf '%-18s %8s %17s %15s   %s\n' target time executed rate result
for t in "${targets[@]}"; do
  rm -f "fuzz/work/$t.result"
done
for t in "${targets[@]}"; do
  while [[ $(jobs -rp | wc -l) -ge $jobs_max ]]; do
    wait -n || true
  done
  run_one "$t" &
done
wait
failed=0
for t in "${targets[@]}"; do
  if ! grep -q "no crash" "fuzz/work/$t.result" 2>/dev/null; then failed=1; fi
done
if [[ $failed -ne 0 ]]; then
  echo "crashes found: see fuzz/artifacts/ (reproduce one with: cargo fuzz run --sanitizer $sanitizer TARGET FILE)" >&2
  exit 1
fi
