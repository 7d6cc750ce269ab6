#!/usr/bin/env bash
# The GPU check: one script a session with a GPU runs as a single call.
#
#   bash tools/gpu-check.sh prepare      on the build machine (CUDA toolkit, no GPU needed): builds for
#                                        sm_90 into build-gpu/ and packs gpu-bundle/ (binaries, the
#                                        kernels' C ABI, and every shared library they need that a
#                                        CUDA+PyTorch machine may lack: fmt, MPI, ...)
#   bash tools/gpu-check.sh run [OUTDIR] on the GPU machine, from the repository root with gpu-bundle/
#                                        present (OUTDIR defaults to $OUT, else ./gpu-check-out):
#     1. device, driver and library facts (nvidia-smi, where libnccl/libcupti/nvcc are);
#     2. the gpu-labelled tests (kernels against a CPU reference, the CUDA backend's loopback checks);
#     3. cp-profile loopback --check for every schedule, forward+backward and backward only;
#     4. cpscope's kernels against PyTorch SDPA (flash, cuDNN) in one process, 4K and 16K tokens,
#        causal and full, forward and backward, plus SDPA block shapes and copy bandwidth;
#     5. ring timings: zigzag-ring loopback cp=8 and replay of one rank of cp=8 at 128K tokens.
#   It writes gpu-check.json (everything, with card and versions) and the raw outputs under OUTDIR,
#   and must finish in 8 minutes on an H100 (each step has its own time limit).
#   Without gpu-bundle/ the run step builds on the GPU machine first (needs the Debian -dev packages).
#
#   bash tools/gpu-check.sh all [OUTDIR]  prepare then run (a machine with both toolkit and GPU).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build-gpu
BUNDLE=$ROOT/gpu-bundle

prepare() {
  set -e
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DCPSCOPE_BENCHMARKS=OFF >/dev/null
  cmake --build "$BUILD" -j "$(nproc)"
  rm -rf "$BUNDLE"
  mkdir -p "$BUNDLE/bin" "$BUNDLE/lib"
  local bins=("$BUILD/tools/cp-profile")
  for t in "$BUILD"/tests/runtime/kernels/*_test "$BUILD"/tests/runtime/cuda/*_test "$BUILD"/runtime/kernels/kernels_bench; do
    [ -x "$t" ] && bins+=("$t")
  done
  cp "${bins[@]}" "$BUNDLE/bin/"
  [ -f "$BUILD/tools/libcpscope_kernels_capi.so" ] && cp "$BUILD/tools/libcpscope_kernels_capi.so" "$BUNDLE/lib/"
  # Shared libraries the binaries need, except glibc/libstdc++ (the GPU machine has newer ones) and the
  # CUDA/NCCL/CUPTI/driver libraries (the GPU machine's own must be used).
  for b in "$BUNDLE"/bin/* "$BUNDLE"/lib/*.so; do
    ldd "$b" | awk '/=> \// {print $3}'
  done | sort -u | grep -Ev '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libgcc_s|libstdc\+\+)\.so|lib(cuda|cudart|nccl|cupti|nvidia-ml|nvToolsExt|nvtx)[^/]*\.so' |
    while read -r lib; do cp -L "$lib" "$BUNDLE/lib/"; done
  du -sh "$BUNDLE"
  set +e
}

# Adds the directory holding `name` (searched in the CUDA toolkit, then PyTorch's nvidia wheels).
add_libdir() {
  local name=$1 dir
  for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
    if ls "$dir"/"$name"* >/dev/null 2>&1; then LD_LIBRARY_PATH=$dir:$LD_LIBRARY_PATH; echo "$name: $dir"; return; fi
  done
  dir=$(python3 - "$name" <<'EOF' 2>/dev/null
import glob, os, sys
try:
    import nvidia
    for base in nvidia.__path__:
        for hit in glob.glob(os.path.join(base, "**", sys.argv[1] + "*"), recursive=True):
            print(os.path.dirname(hit)); raise SystemExit
except ImportError:
    pass
EOF
)
  if [ -n "$dir" ]; then LD_LIBRARY_PATH=$dir:$LD_LIBRARY_PATH; echo "$name: $dir (pip wheel)"; else echo "$name: NOT FOUND"; fi
}

run() {
  local out=${1:-${OUT:-$ROOT/gpu-check-out}}
  mkdir -p "$out"
  local log=$out/gpu-check.log
  exec > >(tee "$log") 2>&1
  local t0=$SECONDS
  echo "== 1. machine ($(date -u +%FT%TZ))"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  command -v nvcc && nvcc --version | tail -1
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "nccl", torch.cuda.nccl.version())' || true
  export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
  add_libdir libcudart.so
  add_libdir libnccl.so
  add_libdir libcupti.so
  if [ ! -x "$BUNDLE/bin/cp-profile" ]; then
    echo "no gpu-bundle/: building here"
    prepare || { echo "build failed"; return 1; }
  fi
  LD_LIBRARY_PATH=$BUNDLE/lib:$LD_LIBRARY_PATH
  export LD_LIBRARY_PATH
  local bin=$BUNDLE/bin
  ldd "$bin/cp-profile" | grep -i "not found" && echo "WARNING: unresolved libraries above"

  echo "== 2. gpu tests"
  local tests_ok=1
  for t in "$bin"/*_test; do
    [ -x "$t" ] || continue
    case $t in *mpi_test) continue ;; esac  # needs mpirun and one GPU per rank
    timeout 150 "$t" --gtest_output="json:$out/$(basename "$t").json" || tests_ok=0
  done

  echo "== 3. loopback --check of every schedule"
  local checks=() rc
  local common="--transport loopback --seq 4096 --heads 32 --kv-heads 8 --head-dim 128 --warmup 1 --iters 3 --check"
  local i=0
  for sched in "ring" "zigzag-ring" "allgather" "allgather --kv-head-groups 2" "ulysses" "hybrid --ulysses 2" \
               "zigzag-ring --dkv input"; do
    for pass in fwd+bwd bwd; do
      for mask in causal full; do
        i=$((i + 1))
        timeout 60 "$bin/cp-profile" --backend cuda $common --cp 4 --schedule $sched --pass $pass --mask $mask \
          --json "$out/.check_$i.json" >"$out/.check_$i.txt" 2>&1
        rc=$?
        echo "cp-profile --schedule $sched --pass $pass --mask $mask: exit $rc $(grep -E 'check|median' "$out/.check_$i.txt" | tr '\n' ' ')"
        checks+=("{\"schedule\": \"$sched\", \"pass\": \"$pass\", \"mask\": \"$mask\", \"exit\": $rc, \"result\": $(cat "$out/.check_$i.json" 2>/dev/null || echo null)}")
      done
    done
  done

  echo "== 4. kernels vs PyTorch SDPA (same process)"
  timeout 180 python3 "$ROOT/tools/gpu/sdpa_compare.py" --lib "$BUNDLE/lib/libcpscope_kernels_capi.so" \
    --out "$out/sdpa_compare.json"
  echo "exit $?"

  echo "== 5. ring timings"
  local timings=()
  for args in "--transport loopback --schedule zigzag-ring --cp 8 --seq 32768" \
              "--transport replay --replay-rank 3 --schedule zigzag-ring --cp 8 --seq 131072" \
              "--transport replay --replay-rank 3 --schedule zigzag-ring --cp 8 --seq 131072 --pass fwd"; do
    i=$((i + 1))
    timeout 60 "$bin/cp-profile" --backend cuda $args --warmup 2 --iters 5 --json "$out/.time_$i.json" 2>&1 | tail -3
    timings+=("{\"args\": \"$args\", \"result\": $(cat "$out/.time_$i.json" 2>/dev/null || echo null)}")
  done

  echo "== done in $((SECONDS - t0)) s"
  local IFS=,
  python3 - "$out" "${checks[*]}" "${timings[*]}" "$tests_ok" $((SECONDS - t0)) <<'EOF'
import json, os, sys
out, checks, timings, tests_ok, secs = sys.argv[1:6]
def load(p):
    try:
        with open(os.path.join(out, p)) as f: return json.load(f)
    except Exception as e:  # noqa: BLE001
        return {"error": str(e)}
res = {"schema": "cpscope.gpu_check/1", "seconds": int(secs), "tests_passed": tests_ok == "1",
       "checks": json.loads("[" + checks + "]"), "timings": json.loads("[" + timings + "]"),
       "sdpa_compare": load("sdpa_compare.json")}
tmp = os.path.join(out, "gpu-check.json.tmp")
with open(tmp, "w") as f: json.dump(res, f, indent=2)
os.replace(tmp, os.path.join(out, "gpu-check.json"))
EOF
  rm -f "$out"/.check_* "$out"/.time_*
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  all) shift; prepare && run "$@" ;;
  *) sed -n '2,22p' "$0"; exit 2 ;;
esac
