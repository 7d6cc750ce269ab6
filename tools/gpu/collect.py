#!/usr/bin/env python3
"""Files a GPU check's results into the repository: profiles/measured/<card>/ and profiles/calibrated/<card>.json.

usage: collect.py RESULTS [--repo ROOT] [--commit REV]

RESULTS is the directory `tools/gpu-check.sh run` wrote (gpu-check.json, gpu-check.log, sdpa_compare.json,
calibration.tar.gz). <card> comes from the device name the profiles recorded ("NVIDIA H200" -> h200).
Written:
  profiles/measured/<card>/*.json     the traced profiles (cpscope.profile/1) and bench.json (cpscope.bench/1):
                                      what cp-sim calibrate/validate and notebooks/sim-vs-measured.ipynb read
  profiles/measured/<card>/check/     the run's summary, log, SDPA comparison, tracing-overhead runs and the
                                      validation as the run computed it (kept out of the inputs' glob)
  profiles/measured/<card>/README.md  card, versions, date, and the tables: leave-one-out validation, kernels
                                      against SDPA, loopback checks, ring timings, tracing overhead
  profiles/calibrated/<card>.json     the profile cp-sim calibrate fitted to all the runs
An existing profiles/measured/<card>/ is replaced whole. Exit 2 when RESULTS lacks what the run writes.
"""
import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile


def fail(msg):
    print(f"collect: {msg}", file=sys.stderr)
    sys.exit(2)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"error": str(e)}


def slug(name):
    s = re.sub(r"^nvidia\s+", "", name.strip().lower())
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-") or "unknown-gpu"


def ms(ns):
    return f"{ns / 1e6:.3f} ms"


def pct(x):
    return "n/a" if x is None else f"{100 * x:+.1f}%"


def tables(results, profiles, validation, gpu_check, sdpa, device, card, commit, base):
    out = io.StringIO()
    w = lambda s="": print(s, file=out)  # noqa: E731

    def table(header, rows):  # a Markdown table: header cells, then one list of cells per row
        w("| " + " | ".join(header) + " |")
        w("|" + "---|" * len(header))
        for r in rows:
            w("| " + " | ".join(str(c) for c in r) + " |")
        w()
    info = sdpa.get("device", {}) if "error" not in sdpa else {}
    log_date = ""
    log_path = os.path.join(results, "gpu-check.log")
    if os.path.exists(log_path):
        m = re.search(r"== 1\. machine \(([^)]*)\)", open(log_path, errors="replace").read())
        log_date = m.group(1) if m else ""
    w(f"# {device.get('name', 'unknown GPU')}: the GPU check's measurements")
    w()
    w(f"Measured by `bash tools/gpu-check.sh run` on {log_date or 'an unrecorded date'}, cpscope commit {commit}:")
    w(f"{device.get('name')} ({device.get('sm_count')} SMs), driver {info.get('driver', device.get('driver'))}, "
      f"CUDA {device.get('cuda')}, NCCL {device.get('nccl')}"
      + (f", PyTorch {info['torch']} (CUDA {info.get('cuda')}, cuDNN {info.get('cudnn')})" if "torch" in info else "")
      + ". Filed by `tools/gpu/collect.py`.")
    w()
    w(f"- `*.json`: the {len(profiles)} CUPTI-traced profiles of step 7 and `bench.json` (the kernel grid and the")
    w("  transport's self-transfers), the inputs of `cp-sim calibrate` / `validate` and of")
    w("  `notebooks/sim-vs-measured.ipynb`;")
    w("- `check/`: the run's summary (`gpu-check.json`), its log, `sdpa_compare.json`, the tracing-overhead runs")
    w("  and the validation as the run computed it;")
    w(f"- the fitted profile: `profiles/calibrated/{card}.json`.")
    w()
    w(f"## Leave-one-out validation (`cp-sim validate --leave-one-out`, base {base}, with the bench)")
    w()
    rows = validation.get("rows", [])
    if rows:
        table(["run", "schedule", "N", "tokens per rank", "mask", "pass", "measured", "predicted", "error"],
              [[os.path.basename(r["profile"]), r["workload"]["schedule"], r["workload"]["cp"],
                r["workload"]["seq"] // r["workload"]["cp"], r["workload"]["mask"], r["workload"]["pass"],
                ms(r["measured_ns"]), ms(r["predicted_ns"]), pct(r["error"])] for r in rows])
        w(f"Mean absolute error {100 * validation['mean_abs_error']:.2f}%, max {100 * validation['max_abs_error']:.2f}% "
          f"({os.path.basename(validation.get('worst', ''))}); target 5%, goal 2%.")
    else:
        w(f"No validation: {validation.get('error', 'no rows')}")
    w()
    w("## cpscope's kernels against PyTorch SDPA (same process, throughput ratio)")
    w()
    ratios = sdpa.get("ratios", [])
    if ratios:
        ratio = lambda r, k: f"{r[k]:.2f}x" if k in r else "n/a"  # noqa: E731
        table(["tokens", "mask", "pass", "vs SDPA flash", "vs SDPA cuDNN"],
              [[r["seq"], r["mask"], r["pass"], ratio(r, "vs_sdpa_flash"), ratio(r, "vs_sdpa_cudnn")] for r in ratios])
        w("Targets: forward >= 0.5x and backward >= 0.4x flash; goal 0.9x.")
        for f_ in sdpa.get("failures", []):
            w(f"- FAILURE: {f_}")
    else:
        w(f"No comparison: {sdpa.get('error', 'no ratios')}")
    w()
    w("## Loopback `--check` of every schedule")
    w()
    checks = gpu_check.get("checks", [])
    passed = sum(1 for c in checks if c.get("exit") == 0)
    w(f"{passed} of {len(checks)} exit 0.")
    for c in checks:
        if c.get("exit") != 0:
            w(f"- {c['schedule']} {c['pass']} {c['mask']}: exit {c['exit']}")
    w()
    w("## Ring timings and tracing overhead")
    w()
    for t in gpu_check.get("timings", []):
        res = t.get("result") or {}
        w(f"- `{t['args']}`: exit {t['exit']}, step {ms(res['step_time_ns']) if 'step_time_ns' in res else 'n/a'}")
    for k, v in (gpu_check.get("tracing_overhead") or {}).items():
        w(f"- tracing overhead, {k}: " + (f"traced/untraced {v['ratio']:.4f}" if isinstance(v, dict) and "ratio" in v
                                          else f"n/a ({v})"))
    san = gpu_check.get("sanitizer") or []
    if san:
        w("- compute-sanitizer: " + ", ".join(f"{x['tool']} {x['verdict']}" for x in san))
    w(f"- gpu tests passed: {gpu_check.get('tests_passed')}; the run took {gpu_check.get('seconds')} s "
      f"(steps {gpu_check.get('steps', '2 3 4 5 6 7 8')})")
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--repo", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    ap.add_argument("--commit", help="the cpscope revision the run was made with (default: the repo's HEAD)")
    a = ap.parse_args()

    archive = os.path.join(a.results, "calibration.tar.gz")
    if not os.path.isfile(archive):
        fail(f"{archive}: missing (step 7 of the run writes it)")
    gpu_check = load(os.path.join(a.results, "gpu-check.json"))
    if "error" in gpu_check:
        fail(f"{a.results}/gpu-check.json: {gpu_check['error']}")
    sdpa = load(os.path.join(a.results, "sdpa_compare.json"))
    commit = a.commit or subprocess.run(["git", "-C", a.repo, "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True).stdout.strip() or "unknown"

    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive) as t:
            t.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(tmp)
        pdir = os.path.join(tmp, "profiles")
        profiles = sorted(f for f in os.listdir(pdir) if f.endswith(".json")) if os.path.isdir(pdir) else []
        if not profiles:
            fail(f"{archive}: no profiles")
        device = load(os.path.join(pdir, profiles[0])).get("device", {})
        card = slug(device.get("name", ""))
        validation = load(os.path.join(tmp, "validation.json"))
        base = validation.get("hardware", "?")  # the card's built-in profile: cp-sim validate --hardware auto

        dest = os.path.join(a.repo, "profiles", "measured", card)
        staging = dest + ".collect-tmp"
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(os.path.join(staging, "check"))
        for f in profiles:
            shutil.copy(os.path.join(pdir, f), staging)
        if os.path.exists(os.path.join(tmp, "bench.json")):
            shutil.copy(os.path.join(tmp, "bench.json"), staging)
        for f in ("overhead.json", "overhead_replay.json", "validation.json", "validation.txt", "bench.txt"):
            if os.path.exists(os.path.join(tmp, f)):
                shutil.copy(os.path.join(tmp, f), os.path.join(staging, "check"))
        for f in ("gpu-check.json", "gpu-check.log", "sdpa_compare.json"):
            if os.path.exists(os.path.join(a.results, f)):
                shutil.copy(os.path.join(a.results, f), os.path.join(staging, "check"))
        with open(os.path.join(staging, "README.md"), "w") as f:
            f.write(tables(a.results, profiles, validation, gpu_check, sdpa, device, card, commit, base))
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(staging, dest)

        calibrated = os.path.join(tmp, "calibrated.json")
        fitted = os.path.exists(calibrated)
        if fitted:
            cdir = os.path.join(a.repo, "profiles", "calibrated")
            os.makedirs(cdir, exist_ok=True)
            shutil.copy(calibrated, os.path.join(cdir, card + ".json.tmp"))
            os.replace(os.path.join(cdir, card + ".json.tmp"), os.path.join(cdir, card + ".json"))
    print(f"collect: {len(profiles)} profiles into profiles/measured/{card}/, "
          + ("the fitted profile into profiles/calibrated/" + card + ".json" if fitted
             else "no fitted profile (calibrate did not run)"))
    if validation.get("rows"):
        print(f"leave-one-out mean absolute error {100 * validation['mean_abs_error']:.2f}%, "
              f"max {100 * validation['max_abs_error']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
