#!/usr/bin/env bash
# The whole suite with the host code built under GCC's sanitizers:
#   tools/sanitize.sh [address|thread] [ctest arguments...]
#     address  AddressSanitizer + UndefinedBehaviorSanitizer, leak checks on (build folder build-asan)
#     thread   ThreadSanitizer (build-tsan): the host backend's rank threads, the transports' queues, the
#              emulated streams
# The CUDA path is the SIMT emulation here (-DCPSCOPE_CUDA=OFF: nvcc's device code cannot be instrumented); the
# emulation tells both sanitizers when it switches between its fibers' stacks. Any report fails the test it
# comes from (-fno-sanitize-recover). Not part of the test command: two more builds and a 2-15x slower suite
# (about 35 minutes for address on 2 cores) do not fit CI's budget, so run it before changing the executor,
# the transports or the emulation.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-address}
[[ $# -gt 0 ]] && shift
case $kind in
  address) flags=address,undefined; build=${CPSCOPE_BUILD_DIR:-build-asan} ;;
  thread) flags=thread; build=${CPSCOPE_BUILD_DIR:-build-tsan} ;;
  *) echo "usage: tools/sanitize.sh [address|thread] [ctest arguments...]" >&2; exit 2 ;;
esac
bash tools/setup-debian.sh
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCPSCOPE_CUDA=OFF -DCPSCOPE_BENCHMARKS=OFF \
  -DCPSCOPE_SANITIZE="$flags"
cmake --build "$build" -j "$(nproc)"
# (detect_stack_use_after_return makes the emulated kernels 100x slower: a fake frame per fiber switch)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 3000 "$@"
