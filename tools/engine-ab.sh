#!/bin/bash
# Paired speed comparison of two versions of the simulator engine (README, "Tests and benchmarks").
# Each version's sim/ sources are compiled into a shared library; a driver loads both into one process
# and alternates them on one zigzag-ring schedule, one simulate() each, and prints both medians and the
# median of the paired ratios B/A. On a shared VM whose speed drifts by tens of percent from minute to
# minute, separate benchmark runs cannot show a 10% change; the paired ratio can. Its own noise: A/A
# runs (one revision against itself) read 0.995-1.017 at N=128 and N=1024 in a quiet spell and
# 1.07 (quartiles 0.97-1.14) at N=1024 with 10 rounds in a busy one: repeat, or add rounds, before
# trusting a difference of a few percent.
#
#   tools/engine-ab.sh [-n RANKS] [-r ROUNDS] REV_A [REV_B]
#
# REV_A, REV_B: git revisions, or - for the working tree (REV_B's default). Each library is built from its
# revision's sim/ and embedded hardware profiles; the driver builds the schedule with the working
# tree's code, so both revisions must have the working tree's Schedule layout (sim/schedule.h).
# Needs g++, cmake, fmt and nlohmann-json (tools/setup-debian.sh installs them).
set -euo pipefail

usage() {
  sed -n '9p' "$0" | sed 's/^# *//'
}
N=1024
ROUNDS=10
while getopts "n:r:h" opt; do
  case $opt in
    n) N=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage >&2; exit 2; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for rev in "$@"; do
  if [ "$rev" = - ]; then continue; fi
  git -C "$ROOT" rev-parse --verify --quiet "$rev^{commit}" > /dev/null || { echo "engine-ab: $rev is not a revision" >&2; exit 2; }
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# engine_lib REV|- NAME: $WORK/NAME.so from the revision's (or, for -, the working tree's) sim/ and
# profiles, compiled as the Release build compiles them.
engine_lib() {
  local dir="$WORK/$2"
  mkdir -p "$dir"
  if [ "$1" = - ]; then
    cp -r "$ROOT/sim" "$ROOT/profiles" "$ROOT/cmake" "$dir/"
  else
    git -C "$ROOT" archive "$1" sim profiles/hardware cmake | tar -x -C "$dir"
  fi
  cmake -DPROFILE_DIR="$dir/profiles/hardware" -DOUT="$dir/builtin_profiles.cc" -P "$dir/cmake/embed_profiles.cmake"
  (cd "$dir" && g++ -O3 -DNDEBUG -std=c++20 -fPIC -shared -Wl,-Bsymbolic -I. \
    sim/workload*.cc sim/schedule*.cc sim/generators/*.cc sim/timeline*.cc sim/hardware*.cc sim/cost*.cc \
    sim/engine*.cc builtin_profiles.cc "$ROOT/tests/bench/engine_ab/entry.cc" -lfmt -pthread -o "$WORK/$2.so")
}
echo "engine-ab: compiling A (${1/#-/working tree}) and B (${2:-working tree})..." >&2
engine_lib "$1" a &
engine_lib "${2:--}" b
wait $!
(cd "$ROOT" && g++ -O2 -std=c++20 -I. tests/bench/engine_ab/engine_ab.cc sim/workload*.cc sim/schedule*.cc \
  sim/generators/*.cc -lfmt -ldl -o "$WORK/engine_ab")
"$WORK/engine_ab" "$N" "$ROUNDS" "$WORK/a.so" "$WORK/b.so"
