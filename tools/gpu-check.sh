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
#     3. cp-profile loopback --check for every schedule (forward+backward, causal and full) and the
#        backward-only path of three;
#     4. cpscope's kernels against PyTorch SDPA (flash, cuDNN) in one process, 4K and 16K tokens,
#        causal and full, forward and backward, plus SDPA block shapes and copy bandwidth;
#     5. ring timings: zigzag-ring loopback cp=8 and replay of one rank of cp=8 at 128K tokens;
#     6. CUPTI tracing overhead (--tracing-overhead: alternating untraced/traced iterations, target <= 2%);
#     7. calibration and validation set: 25 replay configs (ring, zigzag-ring, allgather, ulysses, hybrid;
#        N in {2,4,8}; 2K-32K tokens per rank; causal and full; fwd and fwd+bwd) plus 3 loopback runs,
#        each a CUPTI-traced cp-profile --json, and cp-profile bench --backend cuda (kernel grid);
#        then cp-sim calibrate (-o calibrated.json) and cp-sim validate --leave-one-out on them;
#     8. compute-sanitizer memcheck, racecheck and synccheck of the kernel tests (the flash kernels, the copy and
#        fill kernels) in the time left before the deadline: what the CPU emulation cannot see (shared-memory
#        races between warps that really run concurrently, misaligned vector accesses). It usually needs
#        the second call, GPU_CHECK_STEPS=8; without a compute-sanitizer on the machine it says so and skips.
#   GPU_CHECK_STEPS="3 7" runs step 1 and only those (default all): a second call, while the machine is still
#   warm, for a step the first run lost to a crash or to the budget.
#   It writes gpu-check.json (everything, with card and versions), gpu-check.log, sdpa_compare.json,
#   calibration.tar.gz (profiles/*.json, calibrated.json, validation.json/.txt, overhead.json) and the
#   gtest results under OUTDIR/tests/, and must finish in 8 minutes on an H100 (each step has its own
#   time limit; step 7 stops starting runs when its budget is spent).
#   Without gpu-bundle/ the run step builds on the GPU machine first (needs the Debian -dev packages).
#
#   bash tools/gpu-check.sh all [OUTDIR]  prepare then run (a machine with both toolkit and GPU).
#
#   bash tools/gpu-check.sh rehearse BUILDDIR OUTDIR
#                                        the run step without a GPU, on the CPU SIMT emulation: cp-profile-emu
#                                        and cp-sim from BUILDDIR, token counts divided by 64, 8/8 heads,
#                                        head_dim 64, at most 1 warm-up and 2 timed iterations, a 1-repeat
#                                        bench up to 1 MiB, per-run time limits x4 and no overall budget.
#                                        Same steps, same flags, same JSON; replay and the bench run on the
#                                        emulation's one-rank NCCL. Only the gpu tests (ctest runs them as
#                                        emu.*) and SDPA (PyTorch on a GPU: only its --help runs) are left
#                                        out. tests/tools/gpu_check_rehearsal_test.cc runs it in CI, so a
#                                        broken flag or a slip in the summary shows before a device session.
#
#   bash tools/gpu-check.sh plan         prints step 7's run list, the bench's block lengths and the shape
#                                        (tests/tools/gpu_check_plan_test.cc simulates and validates them).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build-gpu
BUNDLE=$ROOT/gpu-bundle
# What the run step runs with: the bundle's binaries at the sizes the issue asks for. `rehearse` changes these.
BIN=$BUNDLE/bin
REHEARSAL=0
SCALE=1
SLOW=1  # factor on the per-run time limits
HEADS="--heads 32 --kv-heads 8 --head-dim 128"
BENCH_REPEATS="--repeats 5"  # and the bench's largest transfer: its default 256 MiB

# Is step $1 selected? GPU_CHECK_STEPS lists the steps after the first (default all: "2 3 4 5 6 7 8"), so that a
# session whose first run lost a step to a crash or the budget can run that step alone while the machine is warm.
want() { [[ " ${GPU_CHECK_STEPS:-2 3 4 5 6 7 8} " == *" $1 "* ]]; }
pick() { want "$1" || { echo "not selected (GPU_CHECK_STEPS)"; return 1; }; }
# Token count $1 at this run's scale.
tok() { echo $(($1 / SCALE)); }
# "--warmup W --iters I" (a rehearsal caps them at 1 and 2).
reps() {
  local w=$1 i=$2
  if [ "$REHEARSAL" = 1 ]; then w=$((w < 1 ? w : 1)); i=$((i < 2 ? i : 2)); fi
  echo "--warmup $w --iters $i"
}
# A token count as a name part: 2k, or 32 below 1024.
klabel() { if [ "$1" -ge 1024 ]; then echo "$(($1 / 1024))k"; else echo "$1"; fi; }

# Step 7's calibration and validation set, one run per line: transport schedule N tokens-per-rank mask pass
# (full-size token counts; the run divides them by SCALE). `plan` prints it, and
# tests/tools/gpu_check_plan_test.cc predicts it leave-one-out from simulated runs, so a change here that
# leaves a run's block shapes outside what the others and the bench measure shows before a device session.
cal_configs() {
  local sched
  for sched in ring zigzag-ring allgather ulysses hybrid; do
    if [ "$sched" = hybrid ]; then
      echo "replay $sched 4 2048 causal fwd+bwd"; echo "replay $sched 4 32768 full fwd"
    else
      echo "replay $sched 2 2048 causal fwd+bwd"; echo "replay $sched 2 32768 full fwd"
    fi
    echo "replay $sched 4 4096 full fwd+bwd"; echo "replay $sched 4 16384 causal fwd"; echo "replay $sched 8 8192 causal fwd+bwd"
  done
  echo "loopback zigzag-ring 4 4096 causal fwd+bwd"; echo "loopback ring 2 8192 full fwd"; echo "loopback ulysses 4 4096 causal fwd+bwd"
}
# The block lengths of the bench's kernel grid (full size). They span the set's blocks: zigzag halves of
# 2K-token chunks are 1K, and the 2-rank 32K runs have 32K blocks. A leave-one-out prediction takes a shape
# nobody else measured from the base table's trend, scaled as at the nearest measured shape. With perfect
# measurements simulated on a GPU whose rates do not follow the base's (gpu_check_plan_test), this grid
# leaves every run within 2.4%; without 32K the ulysses N=8 run (64K-token blocks) misses by 4.9%.
bench_blocks() { echo 1024 2048 4096 8192 16384 32768; }

# Every step returns on failure itself: `set -e` would not hold where run() calls this as `prepare || ...`.
prepare() {
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DCPSCOPE_BENCHMARKS=OFF >/dev/null || { echo "prepare: configuring $BUILD failed" >&2; return 1; }
  cmake --build "$BUILD" -j "$(nproc)" || { echo "prepare: building $BUILD failed" >&2; return 1; }
  rm -rf "$BUNDLE"
  mkdir -p "$BUNDLE/bin" "$BUNDLE/lib" || return 1
  local bins=("$BUILD/tools/cp-profile" "$BUILD/tools/cp-sim")
  for t in "$BUILD"/tests/runtime/kernels/*_test "$BUILD"/tests/runtime/cuda/*_test "$BUILD"/tests/runtime/instrument/*_test \
           "$BUILD"/runtime/kernels/kernels_bench; do
    [ -x "$t" ] && bins+=("$t")
  done
  cp "${bins[@]}" "$BUNDLE/bin/" || return 1
  if [ -f "$BUILD/tools/libcpscope_kernels_capi.so" ]; then
    cp "$BUILD/tools/libcpscope_kernels_capi.so" "$BUNDLE/lib/" || return 1
  fi
  # Shared libraries the binaries need, except glibc's own (libc, libm, libutil, ...) and libstdc++ (the
  # GPU machine has newer ones) and the CUDA/NCCL/CUPTI/driver libraries (its own must be used).
  for b in "$BUNDLE"/bin/* "$BUNDLE"/lib/*.so; do
    ldd "$b" | awk '/=> \// {print $3}'
  done | sort -u | { grep -Ev '/(libc|libm|libdl|librt|libpthread|libutil|libresolv|libnsl|ld-linux[^/]*|libgcc_s|libstdc\+\+)\.so|lib(cuda|cudart|nccl|cupti|nvidia-ml|nvToolsExt|nvtx)[^/]*\.so' || true; } |
    while read -r lib; do cp -L "$lib" "$BUNDLE/lib/" || exit 1; done || return 1
  du -sh "$BUNDLE"  # the device tool carries at most 64 MiB with the tree (34 MiB at the time of writing)
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

# Back to the caller's stdout and stderr (run() keeps them as 3 and 4 while tee writes the log), and lets tee
# write the log's last lines before $OUT is collected. Reads run()'s tee_pid.
close_log() {
  exec 1>&3 2>&4 3>&- 4>&-
  wait "$tee_pid" 2>/dev/null || true
}

run() {
  local out=${1:-${OUT:-$ROOT/gpu-check-out}}
  mkdir -p "$out"
  local log=$out/gpu-check.log
  exec 3>&1 4>&2 > >(tee "$log") 2>&1
  local tee_pid=$!
  local t0=$SECONDS
  # The whole run must end within 8 minutes: later steps skip what would start after this deadline
  # (and say so), so a slow first step never loses the rest of the output.
  local deadline=$((SECONDS + ${GPU_CHECK_BUDGET_S:-450}))
  echo "== 1. machine ($(date -u +%FT%TZ))"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  command -v nvcc && nvcc --version | tail -1
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "nccl", torch.cuda.nccl.version())' || true
  # The machine's own library path, for PyTorch (step 4): the bundle's Debian libraries and a toolkit's
  # cuDNN or NCCL found first would mix versions under torch's (cuDNN loads its sub-libraries by path).
  local torch_ldp=${LD_LIBRARY_PATH:-}
  export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
  add_libdir libcudart.so
  add_libdir libnccl.so
  add_libdir libcupti.so
  if [ "$REHEARSAL" = 0 ] && [ ! -x "$BIN/cp-profile" ]; then
    echo "no gpu-bundle/: building here"
    if ! prepare; then
      echo "build failed"
      close_log
      return 1
    fi
  fi
  LD_LIBRARY_PATH=$BUNDLE/lib:$LD_LIBRARY_PATH
  export LD_LIBRARY_PATH
  local bin=$BIN
  ldd "$bin/cp-profile" | grep -i "not found" && echo "WARNING: unresolved libraries above"
  # A bundle built on another image can fail to start (a newer glibc or libstdc++ than this machine's): say so
  # once, plainly, before every step fails with the same loader message.
  if ! "$bin/cp-profile" --help >/dev/null 2>"$out/.start.txt"; then
    echo "ERROR: $bin/cp-profile does not start on this machine:"
    head -5 "$out/.start.txt"
  fi
  rm -f "$out/.start.txt"
  # What the steps leave for the summary, present even when a step is not selected.
  : >"$out/.checks.tsv"
  : >"$out/.timings.tsv"
  local cal=$out/.calibration
  rm -rf "$cal"
  mkdir -p "$cal/profiles"
  local tests_ok="" i=0

  echo "== 2. gpu tests"
  if pick 2; then
  tests_ok=1
  mkdir -p "$out/tests"
  for t in "$bin"/*_test; do
    [ -x "$t" ] || continue
    case $t in *mpi_test) continue ;; esac  # needs mpirun and one GPU per rank
    [ $SECONDS -ge $deadline ] && { echo "skipped $(basename "$t"): time budget"; continue; }
    timeout 150 "$t" --gtest_output="json:$out/tests/$(basename "$t").json" || tests_ok=0
  done
  fi

  echo "== 3. loopback --check of every schedule"
  if pick 3; then
  # Each run's profile is kept as .check_<i>.json and listed in .checks.tsv; the summary at the end reads
  # them from there (not from the command line: seventeen profiles are more than one argument list holds).
  local rc
  local common="--transport loopback --seq $(tok 4096) $HEADS $(reps 1 3) --check"
  # Every schedule forward+backward with both masks, and the backward-only path (its inputs come from
  # the GPU reference forward) for three of them: 17 runs.
  local runs=()
  for sched in "ring" "zigzag-ring" "allgather" "allgather --kv-head-groups 2" "ulysses" "hybrid --ulysses 2" \
               "zigzag-ring --dkv input"; do
    runs+=("fwd+bwd causal $sched" "fwd+bwd full $sched")
  done
  runs+=("bwd causal ring" "bwd causal hybrid --ulysses 2" "bwd causal zigzag-ring --dkv input")
  for run_args in "${runs[@]}"; do
    read -r pass mask sched <<<"$run_args"
    i=$((i + 1))
    [ $SECONDS -ge $deadline ] && { echo "skipped --schedule $sched --pass $pass --mask $mask: time budget"; continue; }
    timeout $((60 * SLOW)) "$bin/cp-profile" --backend cuda $common --cp 4 --schedule $sched --pass $pass \
      --mask $mask --json "$out/.check_$i.json" >"$out/.check_$i.txt" 2>&1
    rc=$?
    echo "cp-profile --schedule $sched --pass $pass --mask $mask: exit $rc $(grep -E 'check|median' "$out/.check_$i.txt" | tr '\n' ' ')"
    printf '%s\t%s\t%s\t%s\t%s\n' "$sched" "$pass" "$mask" "$rc" ".check_$i.json" >>"$out/.checks.tsv"
  done
  fi

  echo "== 4. kernels vs PyTorch SDPA (same process)"
  if ! pick 4; then
    :
  elif [ "$REHEARSAL" = 1 ]; then
    echo "rehearsal: SDPA needs PyTorch on a GPU; checking that the script parses its arguments"
    python3 "$ROOT/tools/gpu/sdpa_compare.py" --help >/dev/null
  else
    # (The C API needs only libcudart.so.13, which torch has loaded by then.) It writes its JSON after each
    # shape, so a timeout or a crash keeps what was measured.
    [ $SECONDS -lt $deadline ] && LD_LIBRARY_PATH=$torch_ldp timeout 180 python3 -u "$ROOT/tools/gpu/sdpa_compare.py" \
      --lib "$BUNDLE/lib/libcpscope_kernels_capi.so" --out "$out/sdpa_compare.json"
  fi
  local sdpa_rc=$?
  want 4 && echo "exit $sdpa_rc"

  echo "== 5. ring timings"
  pick 5 &&
  for args in "--transport loopback --schedule zigzag-ring --cp 8 --seq $(tok 32768)" \
              "--transport replay --replay-rank 3 --schedule zigzag-ring --cp 8 --seq $(tok 131072)" \
              "--transport replay --replay-rank 3 --schedule zigzag-ring --cp 8 --seq $(tok 131072) --pass fwd"; do
    i=$((i + 1))
    [ $SECONDS -ge $deadline ] && { echo "skipped $args: time budget"; continue; }
    timeout $((60 * SLOW)) "$bin/cp-profile" --backend cuda $args $HEADS $(reps 2 5) --json "$out/.time_$i.json" 2>&1 |
      grep -E "^median|error"
    printf '%s\t%s\t%s\n' "$args" "${PIPESTATUS[0]}" ".time_$i.json" >>"$out/.timings.tsv"
  done

  echo "== 6. CUPTI tracing overhead (alternating untraced / traced iterations)"
  if pick 6; then
  if [ $SECONDS -lt $deadline ]; then
    timeout $((60 * SLOW)) "$bin/cp-profile" --backend cuda --transport loopback --schedule zigzag-ring --cp 8 \
      --seq "$(tok 65536)" $HEADS $(reps 2 20) --tracing-overhead --json "$cal/overhead.json" 2>&1 | grep -E "tracing overhead|median|error"
  else
    echo "skipped loopback overhead: time budget"
  fi
  if [ $SECONDS -lt $deadline ]; then
    timeout $((60 * SLOW)) "$bin/cp-profile" --backend cuda --transport replay --replay-rank 3 \
      --schedule zigzag-ring --cp 8 --seq "$(tok 131072)" $HEADS $(reps 2 10) --tracing-overhead --json "$cal/overhead_replay.json" 2>&1 |
      grep -E "tracing overhead|median|error"
  else
    echo "skipped replay overhead: time budget"
  fi
  fi

  echo "== 7. calibration and validation set (CUPTI-traced profiles)"
  if pick 7; then
  # Per-rank work grows as N x local^2, so the longest blocks go with the fewest ranks; every run is
  # small enough for ~1-4 s including CUDA and NCCL start-up. Hybrid needs N >= 4 (ulysses 2).
  local cal_t0=$SECONDS cal_budget=${GPU_CHECK_CAL_BUDGET_S:-150} ran=0 skipped=0 failed=0 k=0
  local shape; shape="$HEADS $(reps 1 3)"
  local configs=()
  mapfile -t configs < <(cal_configs)
  for c in "${configs[@]}"; do
    read -r transport sched n local_len mask pass <<<"$c"
    k=$((k + 1))
    if [ $((SECONDS - cal_t0)) -ge $cal_budget ] || [ $SECONDS -ge $deadline ]; then skipped=$((skipped + 1)); continue; fi
    local extra=""
    [ "$sched" = hybrid ] && extra="--ulysses 2"
    [ "$transport" = replay ] && extra="$extra --replay-rank $((n - 1))"
    local_len=$(tok "$local_len")
    local name
    name=$(printf "%02d-%s-%s-cp%d-%s-%s-%s" "$k" "$transport" "$sched" "$n" "$(klabel "$local_len")" "$mask" "$pass")
    if timeout $((40 * SLOW)) "$bin/cp-profile" --backend cuda --transport "$transport" --schedule "$sched" $extra \
         --cp "$n" --seq $((n * local_len)) --mask "$mask" --pass "$pass" $shape --json "$cal/profiles/$name.json" \
         >"$cal/profiles/$name.txt" 2>&1; then
      ran=$((ran + 1)); echo "$name: $(grep -E '^median' "$cal/profiles/$name.txt")"
    else
      failed=$((failed + 1)); echo "$name: FAILED"; tail -3 "$cal/profiles/$name.txt"
    fi
  done
  echo "profiles: $ran ran, $failed failed, $skipped skipped (budget ${cal_budget} s) in $((SECONDS - cal_t0)) s"
  local profiles=("$cal"/profiles/*.json)
  # Isolated kernel timings over block shapes (and the transport's self-transfers, which calibration
  # leaves out of the link fit): cpscope.bench/1 rows that calibrate takes next to the profiles. The 1K-32K grid
  # at 32 heads is 0.28 PFLOP of kernels per repeat, about 9 s with 7 runs of each and the interference rows at
  # 400 TFLOP/s forward and 300 backward; the limit leaves room for kernels at half that.
  local bench=()
  if [ $SECONDS -lt $deadline ] && timeout $((90 * SLOW)) "$bin/cp-profile" bench --backend cuda --transport replay \
       $HEADS --blocks "$(for b in $(bench_blocks); do tok "$b"; done | paste -sd,)" $BENCH_REPEATS --json "$cal/bench.json" \
       >"$cal/bench.txt" 2>&1; then
    bench=("$cal/bench.json")
  else
    echo "bench: skipped or failed"; tail -3 "$cal/bench.txt" 2>/dev/null
  fi
  # The fit starts from the built-in profile of this card (what the runs cannot determine keeps its value):
  # `auto` takes it from the device name the runs record.
  if [ "$ran" -ge 2 ]; then
    timeout 60 "$bin/cp-sim" calibrate --base auto "${profiles[@]}" "${bench[@]}" -o "$cal/calibrated.json" 2>&1 |
      tail -30
    echo "calibrate: exit ${PIPESTATUS[0]}"
    # Each profile predicted from a fit to all the others and the bench rows, as calibrate fitted.
    timeout 120 "$bin/cp-sim" validate --hardware auto --leave-one-out --json "$cal/validation.json" \
      "${profiles[@]}" "${bench[@]}" >"$cal/validation.txt" 2>&1
    echo "validate: exit $?"
    tail -40 "$cal/validation.txt"
  fi
  tar -C "$cal" -czf "$out/calibration.tar.gz" . && rm -rf "$cal/profiles"
  fi

  echo "== 8. compute-sanitizer of the kernel tests (memcheck, racecheck, synccheck)"
  : >"$out/.sanitizer.tsv"
  if pick 8; then
  local san filter='AttnFwd.*:AttnBwd.*:Elementwise.*'
  san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  if [ "$REHEARSAL" = 1 ]; then
    echo "skipped: a rehearsal has no GPU (the emulation checks its own way: tests emu.Emulation.*)"
  elif [ -z "$san" ]; then
    echo "skipped: no compute-sanitizer on this machine (it comes with the CUDA toolkit, not with PyTorch)"
  elif [ ! -x "$bin/kernels_gpu_test" ]; then
    echo "skipped: $bin has no kernels_gpu_test"
  else
    for tool in memcheck racecheck synccheck; do
      local left=$((deadline - SECONDS)) verdict
      if [ $left -lt 30 ]; then
        echo "skipped $tool: time budget (run again with GPU_CHECK_STEPS=8)"
        printf '%s\t%s\t%s\n' "$tool" "skipped" "" >>"$out/.sanitizer.tsv"
        continue
      fi
      timeout $((left < 150 ? left : 150)) "$san" --tool "$tool" --error-exitcode 99 "$bin/kernels_gpu_test" \
        --gtest_filter="$filter" >"$out/sanitizer_$tool.txt" 2>&1
      rc=$?
      case $rc in
        0) verdict=clean ;;
        99) verdict=errors ;;
        124) verdict=timeout ;;
        *) verdict="exit $rc" ;;
      esac
      echo "$tool: $verdict ($(grep -c '^=========' "$out/sanitizer_$tool.txt") sanitizer lines; sanitizer_$tool.txt)"
      [ "$verdict" = clean ] || grep -m8 -E '^=========|FAILED' "$out/sanitizer_$tool.txt"
      printf '%s\t%s\t%s\n' "$tool" "$verdict" "sanitizer_$tool.txt" >>"$out/.sanitizer.tsv"
    done
  fi
  fi

  echo "== done in $((SECONDS - t0)) s"
  python3 - "$out" "$tests_ok" $((SECONDS - t0)) <<'EOF'
import csv, json, os, sys
out, tests_ok, secs = sys.argv[1:4]
def load(p):
    try:
        with open(os.path.join(out, p)) as f: return json.load(f)
    except Exception as e:  # noqa: BLE001
        return {"error": str(e)}
def brief(p):  # a run's profile without its timeline (the calibration profiles keep theirs)
    j = load(p)
    return None if "error" in j else {k: v for k, v in j.items() if k != "timeline"}
def rows(p):
    with open(os.path.join(out, p), newline="") as f:
        return list(csv.reader(f, delimiter="\t"))
checks = [{"schedule": s, "pass": p, "mask": m, "exit": int(rc), "result": brief(f)} for s, p, m, rc, f in rows(".checks.tsv")]
timings = [{"args": a, "exit": int(rc), "result": brief(f)} for a, rc, f in rows(".timings.tsv")]
sanitizer = [{"tool": t, "verdict": v, "log": f} for t, v, f in rows(".sanitizer.tsv")]
def brief_overhead(p):
    j = load(os.path.join(".calibration", p))
    return j.get("tracing_overhead", j)
val = load(os.path.join(".calibration", "validation.json"))
res = {"schema": "cpscope.gpu_check/1", "seconds": int(secs), "tests_passed": None if tests_ok == "" else tests_ok == "1",
       "steps": os.environ.get("GPU_CHECK_STEPS", "2 3 4 5 6 7 8"),
       "checks": checks, "timings": timings, "sanitizer": sanitizer,
       "sdpa_compare": load("sdpa_compare.json"),
       "tracing_overhead": {"loopback": brief_overhead("overhead.json"), "replay": brief_overhead("overhead_replay.json")},
       "validation": {k: val.get(k) for k in ("hardware", "mean_abs_error", "max_abs_error", "worst")} if "rows" in val else val}
tmp = os.path.join(out, "gpu-check.json.tmp")
with open(tmp, "w") as f: json.dump(res, f, indent=2)
os.replace(tmp, os.path.join(out, "gpu-check.json"))
EOF
  rm -f "$out"/.check_* "$out"/.time_* "$out"/.checks.tsv "$out"/.timings.tsv "$out"/.sanitizer.tsv
  rm -rf "$out/.calibration"
  close_log
}

# The run step on the CPU SIMT emulation (see the header): binaries from build directory $1, output in $2.
rehearse() {
  local build=${1:?rehearse BUILDDIR OUTDIR} out=${2:?rehearse BUILDDIR OUTDIR}
  [ -x "$build/tools/cp-profile-emu" ] && [ -x "$build/tools/cp-sim" ] ||
    { echo "rehearse: $build/tools has no cp-profile-emu and cp-sim; build them first" >&2; return 2; }
  mkdir -p "$out"
  BIN=$out/.rehearsal-bin
  rm -rf "$BIN"
  mkdir -p "$BIN"
  ln -s "$(cd "$build/tools" && pwd)/cp-profile-emu" "$BIN/cp-profile"
  ln -s "$(cd "$build/tools" && pwd)/cp-sim" "$BIN/cp-sim"
  REHEARSAL=1
  GPU_CHECK_BUDGET_S=${GPU_CHECK_BUDGET_S:-3600}
  GPU_CHECK_CAL_BUDGET_S=${GPU_CHECK_CAL_BUDGET_S:-3600}
  SCALE=64
  SLOW=4
  HEADS="--heads 8 --kv-heads 8 --head-dim 64"  # Ulysses over 8 ranks splits the KV heads too
  BENCH_REPEATS="--repeats 1 --max-bytes 1048576"
  echo "rehearsal on the CPU SIMT emulation: its timings are meaningless"
  run "$out"
  rm -rf "$BIN"
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  all) shift; prepare && run "$@" ;;
  rehearse) shift; rehearse "$@" ;;
  plan) cal_configs; echo "bench $(bench_blocks)"; echo "heads $HEADS" ;;
  *) sed -n '2,44p' "$0"; exit 2 ;;
esac
