#!/usr/bin/env python3
# Usage: python3 tools/gen_hardware_profiles.py profiles/hardware   (rewrites the five built-in profiles)
# Generates profiles/hardware/*.json. The attention rate tables follow a two-parameter saturation
# model fitted to published FlashAttention benchmarks (see "sources" in each file):
#   tflops(q, kv) = R / (1 + 0.3*c/q + 0.7*c/kv)
# R is the long-sequence plateau and c the sequence length at which the rate is R/2 on a square block.
import json, sys, os, re
OUT = sys.argv[1]
GRID = [128 * 2**i for i in range(11)]  # 128 .. 131072

def table(pass_, mask, hd, R, c, peak):
    rows = []
    for q in GRID:
        row = []
        for kv in GRID:
            v = R / (1 + 0.3 * c / q + 0.7 * c / kv)
            row.append(round(min(v, peak), 1))
        rows.append(row)
    return {"pass": pass_, "mask": mask, "head_dim": hd, "q_tokens": GRID, "kv_tokens": GRID, "tflops": rows}

def tables(p, peak):
    out = []
    for hd, scale in ((64, p["hd64_scale"]), (128, 1.0)):
        for pass_ in ("fwd", "bwd"):
            for mask in ("full", "causal"):
                R, c = p[pass_ + "_" + mask]
                out.append(table(pass_, mask, hd, round(R * scale, 1), c, peak))
    return out

MiB = 1024 * 1024
EST = "ESTIMATE, replace by calibration: "

# H100 SXM fits to FlashAttention-3 (Shah et al. 2024, arXiv:2407.08608, Fig. 5-6, BF16, H100 80GB SXM5,
# B*S = 16k tokens, H*D = 2048): hdim128 fwd non-causal 467..648 TFLOP/s (S = 512..16k),
# fwd causal 292..616, bwd non-causal 316..561; bwd hdim64 272..~500 (0.85 of hdim128).
H100_RATES = {"fwd_full": (656, 207), "fwd_causal": (639, 608), "bwd_full": (575, 420),
              "bwd_causal": (560, 1230), "hd64_scale": 0.85}
H100_RATE_SRC = (EST + "fit R/(1+0.3c/q+0.7c/kv) to FlashAttention-3 (arXiv:2407.08608, benchmark "
                 "figures; BF16, H100 80GB SXM5): hdim128 fwd full 467/565/625/638/646/648, fwd causal 292/423/521/579/602/616, "
                 "bwd full 316/424/501/542/559/561 TFLOP/s at S=512..16k; (R,c): fwd full (656,207), "
                 "fwd causal (639,608), bwd full (575,420), bwd causal (560,1230, not published: c scaled like fwd); "
                 "hdim64 = 0.85 x hdim128 (FA3 bwd hdim64 272/363/422 vs 316/424/501). Square blocks at S match "
                 "the paper within ~8%; rectangular blocks and q,kv < 512 or > 16k are extrapolations")

COMMON_SRC = {
    "launch_latency_ns": EST + "~2 us per kernel including launch gap and ramp/tail on a busy stream "
                         "(typical back-to-back kernel gaps in Nsight Systems traces of FlashAttention steps)",
    "comm_compute_interference": EST + "NCCL kernels occupy SMs (by default up to 16-32 CTAs on Hopper) while "
                                 "an attention kernel runs beside them; 10-20% attention slowdown is typical of "
                                 "overlapped CP/TP traces; 1.15 assumed",
    "nvlink.latency_ns": EST + "NCCL point-to-point message latency through NVSwitch, ~5 us (NCCL tuning model "
                         "src/graph/tuning.cc: Simple-protocol ring base latency 8.4 us + NVLink hop 3.4 us per "
                         "collective step; a single p2p message is cheaper)",
    "network.latency_ns": EST + "NCCL point-to-point latency over InfiniBand with GPUDirect RDMA and the proxy "
                          "thread, ~10 us (nccl-tests sendrecv_perf small-message times across nodes)",
    "gpus_per_node": "8-GPU HGX/DGX baseboard with NVSwitch (all-to-all NVLink)",
    "nics_per_node": "one compute-fabric NIC per GPU on DGX/HGX reference designs (8 per node)",
}

def profile(name, desc, peak, mem_mib, hbm_peak, hbm_eff, nvl_line, nvl_eff, nvl_src, net_line_gbps,
            net_eff, net_src, rates, rate_src, extra_src):
    p = {
        "name": name,
        "description": desc,
        "gpus_per_node": 8,
        "memory_bytes": mem_mib * MiB,
        "peak_tflops_bf16": peak,
        "memory_bandwidth_GBps": round(hbm_peak * hbm_eff),
        "launch_latency_ns": 2000,
        "nvlink": {"bandwidth_GBps": round(nvl_line * nvl_eff), "latency_ns": 5000},
        "network": {"bandwidth_GBps": round(net_line_gbps / 8 * net_eff, 1), "latency_ns": 10000},
        "nics_per_node": 8,
        "comm_compute_interference": 1.15,
        "attention": tables(rates, peak),
    }
    src = dict(COMMON_SRC)
    src.update({
        "memory_bandwidth_GBps": EST + f"{hbm_eff:.0%} of the datasheet HBM bandwidth {hbm_peak} GB/s "
                                 "(typical achieved copy/elementwise bandwidth)",
        "nvlink.bandwidth_GBps": EST + nvl_src + f"; {nvl_eff:.0%} of the {nvl_line} GB/s per-direction line rate "
                                 "assumed achievable by NCCL send/recv (nccl-tests busbw is typically 75-85% of line rate)",
        "network.bandwidth_GBps": EST + net_src + f"; {net_line_gbps} Gb/s = {net_line_gbps/8:g} GB/s per direction "
                                  f"line rate, {net_eff:.0%} assumed achievable (nccl-tests inter-node busbw)",
        "attention": rate_src,
    })
    src.update(extra_src)
    p["sources"] = src
    return p

profiles = [
    profile("h100-sxm", "NVIDIA H100 SXM5 80GB, 8 per node (HGX/DGX H100), NVLink 4 + NVSwitch, 8x ConnectX-7 "
            "400 Gb/s InfiniBand NDR. FlashAttention-3 rates.",
            989.4, 81559, 3350, 0.85, 450, 0.8,
            "NVIDIA H100 datasheet: NVLink 900 GB/s bidirectional per GPU (18 links x 50 GB/s)",
            400, 0.9, "DGX H100 user guide: 8x single-port ConnectX-7 400 Gb/s InfiniBand NDR compute ports",
            H100_RATES, H100_RATE_SRC,
            {"peak_tflops_bf16": "NVIDIA H100 SXM5 datasheet: BF16 tensor core 1979 TFLOPS with sparsity, 989.4 dense",
             "memory_bytes": "nvidia-smi memory.total of H100 80GB HBM3 SXM5: 81559 MiB"}),
    profile("h200-sxm", "NVIDIA H200 SXM 141GB, 8 per node (HGX H200), NVLink 4 + NVSwitch, 8x ConnectX-7 400 Gb/s "
            "InfiniBand NDR. Same GH100 compute as H100: H100 FlashAttention-3 rates.",
            989.4, 143771, 4800, 0.85, 450, 0.8,
            "NVIDIA H200 datasheet: NVLink 900 GB/s bidirectional per GPU",
            400, 0.9, "HGX H200 reference design: 8x ConnectX-7 400 Gb/s InfiniBand NDR (one per GPU)",
            H100_RATES, H100_RATE_SRC + "; H200 uses the H100 fit (same GH100 die and clocks, attention is compute "
            "bound)",
            {"peak_tflops_bf16": "NVIDIA H200 datasheet: BF16 1979 TFLOPS with sparsity, 989.4 dense (same as H100)",
             "memory_bytes": "nvidia-smi memory.total of H200 141GB HBM3e: 143771 MiB"}),
    profile("h800-sxm", "NVIDIA H800 SXM5 80GB, 8 per node, NVLink reduced to 400 GB/s bidirectional, 8x 400 Gb/s "
            "InfiniBand NDR. Same compute as H100: H100 FlashAttention-3 rates.",
            989.4, 81559, 3350, 0.85, 200, 0.8,
            "NVIDIA H800: NVLink 400 GB/s bidirectional per GPU (export variant of H100); DeepSeek-V3 technical "
            "report (arXiv:2412.19437) reports ~160 GB/s achievable NVLink and 50 GB/s IB per GPU on H800 nodes",
            400, 0.9, "DeepSeek-V3 technical report: H800 nodes with 400 Gb/s InfiniBand per GPU (50 GB/s)",
            H100_RATES, H100_RATE_SRC + "; H800 uses the H100 fit (same GH100 compute)",
            {"peak_tflops_bf16": "H800 SXM5: BF16 dense 989.4 TFLOPS, same tensor cores as H100 SXM5",
             "memory_bytes": "H800 80GB HBM3: 81559 MiB as H100 80GB"}),
    profile("a100-sxm-80gb", "NVIDIA A100 SXM4 80GB, 8 per node (DGX A100), NVLink 3 + NVSwitch, 8x ConnectX-6 "
            "200 Gb/s InfiniBand HDR. FlashAttention-2 rates.",
            312.0, 81920, 2039, 0.85, 300, 0.8,
            "NVIDIA A100 datasheet: NVLink 3 600 GB/s bidirectional per GPU (12 links x 50 GB/s); a public "
            "nccl-tests sendrecv_perf run on 8x A100 measured 195 GB/s busbw",
            200, 0.9, "DGX A100 user guide: 8x single-port ConnectX-6 200 Gb/s InfiniBand HDR compute ports",
            {"fwd_full": (235, 300), "fwd_causal": (225, 800), "bwd_full": (200, 500), "bwd_causal": (190, 1300),
             "hd64_scale": 0.85},
            EST + "fit R/(1+0.3c/q+0.7c/kv) to FlashAttention-2 (Dao 2023, arXiv:2307.08691, benchmark figures; "
            "A100 80GB SXM4): fwd up to ~230 TFLOP/s (73% of peak), fwd+bwd up to ~225 at hdim128; (R,c): fwd full (235,300), "
            "fwd causal (225,800), bwd full (200,500), bwd causal (190,1300); hdim64 = 0.85 x hdim128",
            {"peak_tflops_bf16": "NVIDIA A100 datasheet: BF16 tensor core 312 TFLOPS dense (624 with sparsity)",
             "memory_bytes": "nvidia-smi memory.total of A100-SXM4-80GB: 81920 MiB"}),
    profile("b200", "NVIDIA B200 180GB (HGX/DGX B200), 8 per node, NVLink 5 + NVSwitch, 8x ConnectX-7 400 Gb/s "
            "InfiniBand NDR. FlashAttention-4 / cuDNN rates (estimated).",
            2250.0, 183359, 8000, 0.85, 900, 0.8,
            "NVIDIA Blackwell/HGX B200 datasheet: NVLink 5 1.8 TB/s bidirectional per GPU",
            400, 0.9, "DGX B200 user guide: 8x single-port ConnectX-7 400 Gb/s (4 twin-port OSFP cages)",
            {"fwd_full": (1680, 400), "fwd_causal": (1640, 1100), "bwd_full": (1250, 700), "bwd_causal": (1200, 2000),
             "hd64_scale": 0.8},
            EST + "fit R/(1+0.3c/q+0.7c/kv): FlashAttention-4 paper (Zadouri, Hoehnerbach, Shah, Liu, Thakkar, Dao, 2026) reports up to 1613 TFLOP/s "
            "forward BF16 on B200 (71% of peak), 1.3x cuDNN 9.13; backward assumed 0.75x forward as on H100; "
            "c about 2x the H100 fit (larger tiles, 148 SMs); (R,c): fwd full (1680,400), fwd causal (1640,1100), "
            "bwd full (1250,700), bwd causal (1200,2000); hdim64 = 0.8 x hdim128. Least certain profile: calibrate",
            {"peak_tflops_bf16": "HGX B200 datasheet (1000 W): BF16 tensor core 4.5 PFLOPS with sparsity, 2250 TFLOPS dense",
             "memory_bytes": "nvidia-smi memory.total of B200 in HGX/DGX B200 (180 GB usable of 192 GB HBM3e): 183359 MiB"}),
]

# What the CUDA runtime calls each card (cudaDeviceProp::name, as cp-profile records under "device"): `cp-sim
# calibrate --base auto` takes the built-in profile with the longest of these inside the measured name.
DEVICE_NAMES = {"h100-sxm": ["H100"], "h200-sxm": ["H200"], "h800-sxm": ["H800"], "a100-sxm-80gb": ["A100"],
                "b200": ["B200"]}
for i, p in enumerate(profiles):
    items = list(p.items())
    items.insert(2, ("device_names", DEVICE_NAMES[p["name"]]))
    p = profiles[i] = dict(items)
    p["sources"]["device_names"] = ("substrings of the CUDA device name (cudaDeviceProp::name, e.g. 'NVIDIA "
                                    + {"h100-sxm": "H100 80GB HBM3", "h200-sxm": "H200", "h800-sxm": "H800",
                                       "a100-sxm-80gb": "A100-SXM4-80GB", "b200": "B200"}[p["name"]]
                                    + "') that cp-sim calibrate/validate --base auto map to this profile")

for p in profiles:
    with open(os.path.join(OUT, p["name"] + ".json"), "w") as f:
        text = json.dumps(p, indent=2)
        # Numeric arrays (token grids, table rows) on one line each.
        text = re.sub(r"\[\s*([-0-9.,\s]+?)\s*\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
        f.write(text + "\n")
print("ok")
