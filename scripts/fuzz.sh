#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) under build-fuzz/ and fuzzes each reader
# of outside bytes for SECONDS (default 60) of wall time, one core each, one after another:
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   targets: idx idx_gzip checkpoint flags svhn_mat runs_csv
# Starts from the committed seeds (fuzz/corpus/<target>/, never written to) plus what earlier
# runs found (build-fuzz/work/<target>/). Prints executions, coverage and crashes per target;
# a crashing input lands in build-fuzz/crashes/<target>/ and the script exits 1. Fix the
# reader, then keep the input under fuzz/regressions/<target>/ (tests/test_fuzz_regressions.cpp
# replays it in the normal build). EQUIVAE_FUZZ_DIR overrides the build directory.
set -euo pipefail
cd "$(dirname "$0")/.."
script=fuzz
source scripts/common.sh

seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(idx idx_gzip checkpoint flags svhn_mat runs_csv)

# clang with its runtime libraries (libFuzzer), cmake, and the readers' dependencies.
packages=(clang libclang-rt-dev cmake pkg-config zlib1g-dev libdeflate-dev nlohmann-json3-dev libmatio-dev)
install_packages "${packages[@]}"

build_dir=${EQUIVAE_FUZZ_DIR:-build-fuzz}
log="$build_dir/build.log"
configure_once "$build_dir" env CC=clang CXX=clang++ cmake -S fuzz -B "$build_dir"
build_quietly "$build_dir" -j"$(nproc)"

status=0
printf '%-11s %8s %12s %10s %6s %8s\n' target seconds executions execs/s cov crashes
for t in "${targets[@]}"; do
  work="$build_dir/work/$t" crashes="$build_dir/crashes/$t"
  mkdir -p "$work" "$crashes"
  dict=()
  [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
  before=$(find "$crashes" -type f | wc -l)
  # -timeout: an input that takes 10 s is a hang; -rss_limit_mb (and the malloc limit that
  # follows it): using 2 GB on a few-KB input is a bug too.
  # A run that ends before its time (a crash on a seed, a target that does not start, the
  # out-of-memory killer) is a failure whether or not it left a crash file.
  rc=0
  "$build_dir/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "${dict[@]}" -artifact_prefix="$crashes/" "$work" "fuzz/corpus/$t" \
    >"$build_dir/fuzz_$t.log" 2>&1 || rc=$?
  after=$(find "$crashes" -type f | wc -l)
  # Each may be absent from the log (a crash before the first report): "?" then, not an exit.
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$build_dir/fuzz_$t.log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$build_dir/fuzz_$t.log" | tail -1)
  cov=$({ grep -o 'cov: [0-9]*' "$build_dir/fuzz_$t.log" || true; } | tail -1 | cut -d' ' -f2)
  printf '%-11s %8s %12s %10s %6s %8s\n' "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" \
    "$((after - before))"
  if ((after > before || rc != 0)); then
    status=1
    echo "fuzz: $t exited with status $rc (log: $build_dir/fuzz_$t.log)"
    grep -m1 -A12 -E "ERROR|runtime error|invariant failed|deadly signal" "$build_dir/fuzz_$t.log" ||
      tail -n 12 "$build_dir/fuzz_$t.log"
    find "$crashes" -type f -newer "$log" -printf '  kept: %p\n'
  fi
done
exit $status
