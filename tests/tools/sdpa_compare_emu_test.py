#!/usr/bin/env python3
"""tools/gpu/sdpa_compare.py without a GPU: cpscope's kernels on the CPU emulation, PyTorch replaced by a numpy stand-in.

usage: sdpa_compare_emu_test.py LIBCPSCOPE_KERNELS_CAPI_EMU.so SDPA_COMPARE.py

The GPU check runs the script once per device session, so a slip in it (a ctypes signature, a BSHD/BHSD transpose,
the GQA gradient sum, a JSON field) would cost that session its SDPA comparison. Here the script runs for real on
one sequence length, both masks, forward and backward: its correctness rows must be within the bf16 tolerance and
its JSON complete, also with a PyTorch whose SDPA has no enable_gqa. Then, with the stand-in's SDPA given a wrong softmax scale, it must report the mismatch and exit 1.
And with a cuDNN that does not load and a device copy that fails at the end (a broken CUDA context), it must keep
every row measured before, say where it stopped and exit 1.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run(lib, script, out, extra_env):
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "fake_torch"), FAKE_TORCH_DEVICE_LIB=lib, **extra_env)
    cmd = [sys.executable, script, "--lib", lib, "--out", out, "--seqs", "128", "--iters", "1", "--warmup", "0",
           "--quick", "--copy-mib", "1"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=800)
    print(p.stdout, p.stderr, sep="\n")
    return p.returncode


def main():
    lib, script = sys.argv[1], sys.argv[2]
    try:
        import numpy  # noqa: F401  (the stand-in's arrays; the script itself runs under this interpreter too)
    except ImportError:
        print(f"sdpa_compare on the emulation: {sys.executable} cannot import numpy, which the PyTorch stand-in "
              "needs: apt-get install python3-numpy (tools/setup-debian.sh does), or reconfigure with a python3 that "
              "has it first on PATH", file=sys.stderr)
        return 1
    problems = []

    def expect(cond, what):
        if not cond:
            problems.append(what)

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "sdpa.json")
        rc = run(lib, script, out, {})
        expect(rc == 0, f"exit {rc}, want 0")
        expect(not os.path.exists(out + ".tmp"), "a temporary file was left behind")
        j = json.load(open(out)) if os.path.exists(out) else {}
        expect(j.get("schema") == "cpscope.gpu_compare/1", f"schema {j.get('schema')}")
        expect(j.get("failures") == [], f"failures: {j.get('failures')}")
        rows = j.get("rows", [])
        checks = {(r["check"], r["mask"]): r["relative_error"] for r in rows if "check" in r}
        for mask in ("causal", "full"):
            for c in ("cpscope_fwd_vs_sdpa_flash", "cpscope_bwd_dq_vs_sdpa_flash", "cpscope_bwd_dk_vs_sdpa_flash",
                      "cpscope_bwd_dv_vs_sdpa_flash"):
                err = checks.get((c, mask))
                expect(err is not None and err <= 2e-2, f"{c} {mask}: relative error {err}")
        timed = {(r["kernel"], r["mask"], r["pass"]) for r in rows if "ms" in r}
        for kernel in ("cpscope", "sdpa_flash", "sdpa_cudnn"):  # cuDNN ran with expanded K/V (the stand-in's has no GQA)
            for mask in ("causal", "full"):
                for p in ("fwd", "bwd"):
                    expect((kernel, mask, p) in timed, f"no timing row for {kernel} {mask} {p}")
        errors = [r for r in rows if "error" in r]
        expect(not errors, f"rows with errors: {errors}")
        ratios = j.get("ratios", [])
        expect(len(ratios) == 4 and all("vs_sdpa_flash" in r and "vs_sdpa_cudnn" in r for r in ratios),
               f"ratios: {ratios}")
        expect(j.get("copy_bandwidth_GBps", 0) > 0, "no copy bandwidth")
        expect(j.get("device", {}).get("nccl") == "2.28.9", f"device: {j.get('device')}")
        expect(j.get("complete") is True, f"complete: {j.get('complete')}")

        # A PyTorch without enable_gqa: every backend runs on expanded K/V, and the check sums the gradients of each
        # KV head's copies.
        old = os.path.join(tmp, "old.json")
        rc = run(lib, script, old, {"FAKE_TORCH_OLD": "1"})
        expect(rc == 0, f"without enable_gqa: exit {rc}, want 0")
        jo = json.load(open(old)) if os.path.exists(old) else {}
        old_checks = [r for r in jo.get("rows", []) if "check" in r]
        expect(len(old_checks) == 8 and all(r["relative_error"] <= 2e-2 for r in old_checks),
               f"without enable_gqa: checks {old_checks}")

        # A reference that is wrong (softmax scale x1.5) is caught: failures named, exit 1, the JSON still written.
        bad = os.path.join(tmp, "bad.json")
        rc = run(lib, script, bad, {"FAKE_TORCH_SDPA_SCALE": "1.5"})
        expect(rc == 1, f"with a wrong reference: exit {rc}, want 1")
        jb = json.load(open(bad)) if os.path.exists(bad) else {}
        expect(any("differs from SDPA flash" in f for f in jb.get("failures", [])),
               f"with a wrong reference: failures {jb.get('failures')}")

        # cuDNN does not load, and the last step (the copy) fails as a broken CUDA context would: the rows measured
        # before it are in the file, which says where the run stopped.
        broken = os.path.join(tmp, "broken.json")
        rc = run(lib, script, broken, {"FAKE_TORCH_BROKEN": "1"})
        expect(rc == 1, f"with a failure at the end: exit {rc}, want 1")
        jk = json.load(open(broken)) if os.path.exists(broken) else {}
        expect(jk.get("complete") is False, f"with a failure at the end: complete {jk.get('complete')}")
        expect(str(jk.get("device", {}).get("cudnn", "")).startswith("unknown (cuDNN version incompatibility"),
               f"with a failure at the end: device {jk.get('device')}")
        expect(any(f.startswith("stopped: RuntimeError: CUDA error: an illegal memory access") for f in
                   jk.get("failures", [])), f"with a failure at the end: failures {jk.get('failures')}")
        kept = {(r["kernel"], r["mask"], r["pass"]) for r in jk.get("rows", []) if "ms" in r}
        expect(kept == timed, f"with a failure at the end: kept timings {sorted(kept)}, want {sorted(timed)}")
        expect(not os.path.exists(broken + ".tmp"), "with a failure at the end: a temporary file was left behind")

    for p in problems:
        print("FAIL:", p)
    print("sdpa_compare on the emulation:", "FAILED" if problems else "passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
