#!/usr/bin/env python3
"""cpscope's attention kernels against PyTorch scaled_dot_product_attention, in one process.

Runs on the GPU machine (tools/gpu-check.sh calls it). Same tensors, same card, same run: PyTorch SDPA
with the flash and the cuDNN backends, and cpscope's kernels loaded through a C ABI
(libcpscope_kernels_capi.so, tools/gpu/kernels_capi.cc). Shapes: batch 1, 32 query heads, 8 KV heads,
head_dim 128, bf16, local lengths 4K and 16K, causal and full, forward and backward. Also a grid of
SDPA block shapes and the device copy bandwidth, which the simulator's hardware profile needs.

FLOPs as the simulator counts them: 4*B*H*D per visible (query, key) pair forward, 2.5x backward.
Writes one JSON file (--out); prints a table. Exit 0 even when a backend is unavailable (recorded as
an error in the row), 1 when cpscope's kernels disagree with SDPA beyond bf16 tolerance.
"""
import argparse
import ctypes
import json
import math
import os
import platform
import subprocess
import sys
import time


def visible_pairs(q, k, causal):
    if not causal:
        return q * k
    # square blocks here: query i sees keys 0..i
    return q * (q + 1) // 2 if q == k else sum(min(i + 1, k) for i in range(q))


def flops(b, h, d, q, k, causal, pass_):
    f = 4 * b * h * d * visible_pairs(q, k, causal)
    return f * 2.5 if pass_ == "bwd" else f


# GPU clock cycles per millisecond for torch.cuda._sleep: about an H100/H200's boost clock. A slower clock
# only makes the sleep longer than asked, which is harmless.
SLEEP_CYCLES_PER_MS = 2_000_000


def time_ms(torch, fn, warmup, iters, target_ms=10.0):
    """GPU time of one call of fn: the median over `iters` samples, each n calls back to back between two
    events, n chosen so that a sample lasts about target_ms. Before each sample the GPU is kept busy
    (torch.cuda._sleep) for longer than the host takes to queue the n calls, so the interval holds the
    kernels alone: no host launch time (Python, SDPA's checks, autograd) between them. A call that took
    tens of microseconds would otherwise be timed with its launch, off by a large factor."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    # One call, to size the samples: its GPU time (an overestimate: the GPU was idle when it was queued)
    # and the host time to queue it.
    t0 = time.perf_counter()
    start.record()
    fn()
    end.record()
    host_ms = (time.perf_counter() - t0) * 1e3
    torch.cuda.synchronize()
    n = max(1, min(1000, int(target_ms / max(start.elapsed_time(end), 1e-3))))
    sleep = getattr(torch.cuda, "_sleep", None)  # private but long-standing; without it, launches may show
    times = []
    for _ in range(iters):
        if sleep is not None:
            sleep(int(min(1.5 * n * host_ms + 1.0, 500.0) * SLEEP_CYCLES_PER_MS))
        start.record()
        for _ in range(n):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / n)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", required=True, help="path of libcpscope_kernels_capi.so")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--seqs", default="4096,16384")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip the SDPA block-shape grid")
    ap.add_argument("--copy-mib", type=int, default=1024, help="size of the device copy that times the bandwidth")
    a = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        driver = f"unknown ({e})"
    try:  # a tuple (2, 28, 9) in recent PyTorch, possibly with a suffix; absent in builds without NCCL
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        nccl = f"unknown ({e})"
    try:
        cudnn = torch.backends.cudnn.version()
    except Exception as e:  # noqa: BLE001 - a cuDNN that does not load is recorded, and its rows say why
        cudnn = f"unknown ({e})"
    info = {
        "name": props.name, "sm_count": props.multi_processor_count, "memory_bytes": props.total_memory,
        "driver": driver, "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": cudnn, "nccl": nccl,
        "python": platform.python_version(),
    }

    rows, ratios, failures, grid = [], [], [], []
    result = {"schema": "cpscope.gpu_compare/1", "device": info, "rows": rows, "ratios": ratios, "sdpa_grid": grid,
              "copy_bandwidth_GBps": None, "failures": failures, "complete": False,
              "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def save():
        # After every shape: a crash, a hang cut by the caller's timeout, or a broken CUDA context later
        # keeps what was measured so far (written to a temporary name, then renamed).
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, a.out)

    save()
    try:
        measure(a, torch, F, SDPBackend, sdpa_kernel, dev, rows, ratios, failures, grid, result, save)
        result["complete"] = True
    except Exception as e:  # noqa: BLE001 - recorded: everything measured before it is kept
        failures.append(f"stopped: {type(e).__name__}: {str(e)[:300]}")
    finally:
        save()
    print(f"{info['name']} ({info['sm_count']} SMs), driver {info['driver']}, torch {info['torch']}, "
          f"CUDA {info['cuda']}, cuDNN {info['cudnn']}, NCCL {info['nccl']}")
    for r in rows:
        if "ms" in r:
            print(f"  {r['kernel']:<11} S={r['seq']:>6} {r['mask']:<6} {r['pass']}: {r['ms']:9.3f} ms "
                  f"{r['tflops']:7.1f} TFLOP/s")
        else:
            print("  ", r)
    for r in ratios:
        print("  ratio", r)
    if result["copy_bandwidth_GBps"] is not None:
        print(f"  copy bandwidth {result['copy_bandwidth_GBps']:.0f} GB/s (read+write)")
    for f in failures:
        print("FAILURE:", f)
    return 1 if failures else 0


def measure(a, torch, F, SDPBackend, sdpa_kernel, dev, rows, ratios, failures, grid, result, save):
    lib = ctypes.CDLL(a.lib)
    lib.cps_last_error.restype = ctypes.c_char_p
    vp, i64, ci = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.cps_attn_fwd.argtypes = [ci, ci, ci, vp, vp, vp, vp, vp, i64, ci, ci, ci, vp]
    lib.cps_attn_bwd.argtypes = [ci, ci, ci, vp, vp, vp, vp, vp, vp, vp, vp, vp, vp, i64, ci, ci, ci, vp]

    def call(fn, *args):
        if fn(*args) != 0:
            raise RuntimeError(lib.cps_last_error().decode())

    B, H, HKV, D = 1, 32, 8, 128
    torch.manual_seed(0)
    for S in [int(s) for s in a.seqs.split(",")]:
        q = torch.randn(B, S, H, D, device=dev, dtype=torch.bfloat16)
        k = torch.randn(B, S, HKV, D, device=dev, dtype=torch.bfloat16)
        v = torch.randn(B, S, HKV, D, device=dev, dtype=torch.bfloat16)
        do = torch.randn(B, S, H, D, device=dev, dtype=torch.bfloat16)
        o32 = torch.empty(B, S, H, D, device=dev, dtype=torch.float32)
        lse = torch.empty(B, H, S, device=dev, dtype=torch.float32)
        delta = torch.empty(B, H, S, device=dev, dtype=torch.float32)
        dq = torch.zeros(B, S, H, D, device=dev, dtype=torch.float32)
        dk = torch.zeros(B, S, HKV, D, device=dev, dtype=torch.float32)
        dv = torch.zeros(B, S, HKV, D, device=dev, dtype=torch.float32)
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        for causal in (True, False):
            mask = "causal" if causal else "full"

            def ours_fwd():
                call(lib.cps_attn_fwd, 0, D, B, q.data_ptr(), k.data_ptr(), v.data_ptr(), o32.data_ptr(),
                     lse.data_ptr(), S, H, HKV, int(causal), stream)

            def ours_bwd():
                call(lib.cps_attn_bwd, 0, D, B, q.data_ptr(), k.data_ptr(), v.data_ptr(), o32.data_ptr(),
                     do.data_ptr(), lse.data_ptr(), delta.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
                     S, H, HKV, int(causal), stream)

            measured = {}
            # PyTorch first: cpscope's kernels have never run on this card, and a fault in them would break
            # the CUDA context for everything after.
            qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
            dot = do.transpose(1, 2)
            flash = None  # SDPA flash's output and its gradient inputs, for the correctness check below
            for name, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
                try:
                    gqa = {"enable_gqa": True}
                    kk, vv = kt, vt
                    with sdpa_kernel(backend):
                        try:
                            F.scaled_dot_product_attention(qt, kk, vv, is_causal=causal, **gqa)
                        except (RuntimeError, TypeError):
                            # this backend has no GQA (TypeError: a PyTorch before 2.5, without enable_gqa):
                            # give it the expanded K/V (same FLOPs)
                            gqa = {}
                            kk = kt.repeat_interleave(H // HKV, dim=1)
                            vv = vt.repeat_interleave(H // HKV, dim=1)
                        qg = qt.detach().requires_grad_(True)
                        kg = kk.detach().requires_grad_(True)
                        vg = vv.detach().requires_grad_(True)
                        fwd = lambda: F.scaled_dot_product_attention(qt, kk, vv, is_causal=causal, **gqa)  # noqa: E731
                        measured[(name, "fwd")] = time_ms(torch, fwd, a.warmup, a.iters)
                        out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal, **gqa)
                        bwd = lambda: torch.autograd.grad(out, (qg, kg, vg), dot, retain_graph=True)  # noqa: E731
                        measured[(name, "bwd")] = time_ms(torch, bwd, a.warmup, a.iters)
                        if name == "sdpa_flash":
                            flash = (out, qg, kg, vg, gqa)
                        else:
                            del out, qg, kg, vg
                except Exception as e:  # noqa: BLE001
                    rows.append({"kernel": name, "seq": S, "mask": mask, "error": str(e)[:300]})
            # cpscope
            try:
                measured[("cpscope", "fwd")] = time_ms(torch, ours_fwd, a.warmup, a.iters)
                # dq/dk/dv keep accumulating: timing only
                measured[("cpscope", "bwd")] = time_ms(torch, ours_bwd, a.warmup, a.iters)
            except Exception as e:  # noqa: BLE001
                failures.append(f"cpscope S={S} {mask}: {e}")
            # correctness spot check against SDPA flash (math on fp32 would be too slow at 16K)
            if flash is not None and ("cpscope", "fwd") in measured:
                out, qg, kg, vg, gqa = flash
                ours_fwd()
                ref = out.detach().transpose(1, 2).float()
                err = ((o32 - ref).abs().max() / ref.abs().max()).item()
                rows.append({"check": "cpscope_fwd_vs_sdpa_flash", "seq": S, "mask": mask, "relative_error": err})
                if not err <= 2e-2:
                    failures.append(f"cpscope forward differs from SDPA flash: S={S} {mask} rel {err:.3e}")
                if ("cpscope", "bwd") in measured:
                    g = torch.autograd.grad(out, (qg, kg, vg), dot, retain_graph=True)
                    refs = [x.transpose(1, 2).float() for x in g]
                    if not gqa:  # expanded K/V: sum the gradients of each KV head's copies
                        refs[1:] = [x.reshape(B, S, HKV, H // HKV, D).sum(3) for x in refs[1:]]
                    for t in (dq, dk, dv):
                        t.zero_()
                    ours_bwd()
                    for gname, mine, ref in zip(("dq", "dk", "dv"), (dq, dk, dv), refs):
                        err = ((mine - ref).abs().max() / ref.abs().max()).item()
                        rows.append({"check": f"cpscope_bwd_{gname}_vs_sdpa_flash", "seq": S, "mask": mask,
                                     "relative_error": err})
                        if not err <= 2e-2:
                            failures.append(f"cpscope backward {gname} differs from SDPA flash: S={S} {mask} "
                                            f"rel {err:.3e}")
            flash = None
            for (kernel, p), ms in sorted(measured.items()):
                tf = flops(B, H, D, S, S, causal, p) / (ms * 1e-3) / 1e12
                rows.append({"kernel": kernel, "seq": S, "mask": mask, "pass": p, "batch": B, "heads": H,
                             "kv_heads": HKV, "head_dim": D, "dtype": "bf16", "ms": ms, "tflops": tf})
            for p in ("fwd", "bwd"):
                ours = measured.get(("cpscope", p))
                r = {"seq": S, "mask": mask, "pass": p}
                for base in ("sdpa_flash", "sdpa_cudnn"):
                    if ours and measured.get((base, p)):
                        r["vs_" + base] = measured[(base, p)] / ours  # throughput ratio ours/base
                ratios.append(r)
            save()
        del q, k, v, do, o32, lse, delta, dq, dk, dv
        torch.cuda.empty_cache()

    if not a.quick:
        # SDPA flash throughput over block shapes (what a ring step attends), for the simulator's rate table.
        for (qlen, klen) in [(1024, 1024), (2048, 2048), (4096, 4096), (8192, 8192), (2048, 8192), (8192, 2048)]:
            q = torch.randn(B, H, qlen, D, device=dev, dtype=torch.bfloat16)
            k = torch.randn(B, H, klen, D, device=dev, dtype=torch.bfloat16)
            v = torch.randn(B, H, klen, D, device=dev, dtype=torch.bfloat16)
            for causal in ((True, False) if qlen == klen else (False,)):
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    ms = time_ms(torch, lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                                 a.warmup, a.iters)
                grid.append({"kernel": "sdpa_flash", "q": qlen, "kv": klen, "mask": "causal" if causal else "full",
                             "pass": "fwd", "ms": ms,
                             "tflops": flops(B, H, D, qlen, klen, causal, "fwd") / (ms * 1e-3) / 1e12})
        save()
    # Device copy bandwidth (read + write bytes per second), 1 GiB unless --copy-mib says otherwise.
    x = torch.empty(a.copy_mib << 19, device=dev, dtype=torch.float16)
    y = torch.empty_like(x)
    ms = time_ms(torch, lambda: y.copy_(x), 3, 10)
    result["copy_bandwidth_GBps"] = 2 * x.numel() * 2 / (ms * 1e-3) / 1e9

if __name__ == "__main__":
    sys.exit(main())
