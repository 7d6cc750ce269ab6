#!/usr/bin/env bash
# Builds the libFuzzer targets of the trace readers and of the calibration inputs (profiles, bench files,
# hardware profiles: tests/fuzz/fuzz_profile.cc) with clang (-fsanitize=fuzzer,address,undefined),
# seeds them with the test fixtures and the kept crashers (tests/fuzz/crashers/<target>/), and runs each
# for SECONDS (default 60). A crash leaves crash-* in the work folder and fails the script: minimise
# it, add it to tests/fuzz/crashers/<target>/ as a regression input, and fix the reader.
#   tests/fuzz/run.sh [SECONDS]          (needs clang and libclang-rt-dev from Debian)
#   FUZZ_TARGETS="profile" tests/fuzz/run.sh 600      (one target)
set -euo pipefail
cd "$(dirname "$0")/../.."
# Not part of the test command (tools/setup-debian.sh leaves clang out to keep CI's install small).
if ! command -v clang++ >/dev/null; then
  echo "fuzz: needs clang with libFuzzer: apt-get install clang libclang-rt-14-dev" >&2
  exit 2
fi
secs=${1:-60}
work=${FUZZ_WORK:-build-fuzz}
mkdir -p "$work"
work=$(realpath "$work")
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I.)
# Only what the readers use: no engine, no embedded hardware profiles, so this needs no CMake build.
srcs=(sim/trace/kineto.cc sim/trace/nsys.cc sim/trace/classify.cc sim/trace/trace.cc sim/trace/source.cc
      sim/timeline.cc)
libs=(-lfmt -lsqlite3 -lz)
clang++ -std=c++20 -O1 -I. tests/fuzz/make_seeds.cc -o "$work/make_seeds" -lsqlite3
"$work/make_seeds" "$work/seeds"
# The profile target needs the whole simulator (calibrate simulates each profile's workload) and the
# compiled-in hardware profiles, generated here as CMake would.
cmake -DPROFILE_DIR="$PWD/profiles/hardware" -DOUT="$work/builtin_profiles.cc" -P cmake/embed_profiles.cmake
mkdir -p "$work/seeds/profile"
cp profiles/measured/host-cpu/*.json profiles/hardware/*.json tests/fuzz/seeds/profile/*.json "$work/seeds/profile/"
sim_srcs=(sim/workload*.cc sim/schedule*.cc sim/generators/*.cc sim/timeline*.cc sim/hardware*.cc sim/cost*.cc
          sim/engine*.cc sim/analysis*.cc sim/report*.cc sim/planner*.cc sim/progress*.cc sim/calibrate*.cc
          "$work/builtin_profiles.cc")
status=0
for target in ${FUZZ_TARGETS:-kineto nsys profile}; do
  echo "fuzz: building $target"
  if [[ $target == profile ]]; then
    target_srcs=("${sim_srcs[@]}")
    target_libs=(-lfmt -I/usr/include/eigen3)
  else
    target_srcs=("${srcs[@]}")
    target_libs=("${libs[@]}")
  fi
  clang++ "${flags[@]}" "tests/fuzz/fuzz_$target.cc" "${target_srcs[@]}" "${target_libs[@]}" \
    -o "$work/fuzz_$target"
  mkdir -p "$work/corpus_$target"
  seeds=("$work/seeds/$target")
  [[ -d tests/fuzz/crashers/$target ]] && seeds+=("$PWD/tests/fuzz/crashers/$target")
  echo "fuzz: running $target for ${secs}s"
  (cd "$work" && ./"fuzz_$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
     -artifact_prefix="crash-$target-" "corpus_$target" "${seeds[@]}") || status=1
done
exit $status
