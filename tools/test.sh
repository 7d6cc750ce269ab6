#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, builds everything, executes every
# notebook headless (fails when a cell raises), then runs the whole GoogleTest suite with ctest.
# GPU tests (label `gpu`) skip, not pass, on a machine without a device.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/setup-debian.sh
build=${CPSCOPE_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)"

export CP_SIM="$PWD/$build/tools/cp-sim"
export CP_TRACE="$PWD/$build/tools/cp-trace"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for nb in notebooks/*.ipynb; do
  [[ -e $nb ]] || continue
  echo "notebook: executing $nb"
  (cd notebooks && /usr/bin/jupyter-nbconvert --to notebook --execute --ExecutePreprocessor.timeout=600 \
     --output-dir "$out" "$(basename "$nb")" >/dev/null 2>"$out/log") || { cat "$out/log" >&2; echo "notebook FAILED: $nb" >&2; exit 1; }
done

ctest --test-dir "$build" --output-on-failure -j "$(nproc)"
