"""scaled_dot_product_attention of the fake torch, forward and (through torch.autograd.grad) backward, in float64."""
import math
import os

import numpy as np

import torch
from torch.nn import attention


def _expand(x, h):  # GQA: each KV head serves h / hkv consecutive query heads
    return np.repeat(x, h // x.shape[1], axis=1)


def _probs(q, k, causal, scale):
    s = np.einsum("bhqd,bhkd->bhqk", q, k) * scale
    if causal:
        lq, lk = s.shape[-2:]
        s = np.where(np.tril(np.ones((lq, lk), dtype=bool)), s, -np.inf)
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    return p / p.sum(axis=-1, keepdims=True)


def scaled_dot_product_attention(q, k, v, is_causal=False, **kwargs):
    # FAKE_TORCH_OLD: a PyTorch before 2.5, whose SDPA has no enable_gqa argument.
    if os.environ.get("FAKE_TORCH_OLD") and "enable_gqa" in kwargs:
        raise TypeError("scaled_dot_product_attention() got an unexpected keyword argument 'enable_gqa'")
    enable_gqa = kwargs.pop("enable_gqa", False)
    if kwargs:
        raise TypeError(f"scaled_dot_product_attention() got unexpected keyword arguments {sorted(kwargs)}")
    backend = attention.current[-1]
    hq, hkv = q.shape[1], k.shape[1]
    if hq != hkv and not enable_gqa:
        raise RuntimeError("fake sdpa: query and key/value head counts differ without enable_gqa")
    if hq != hkv and backend == attention.SDPBackend.CUDNN_ATTENTION:
        raise RuntimeError("fake sdpa: the cuDNN backend does not take GQA")
    scale = float(os.environ.get("FAKE_TORCH_SDPA_SCALE", "1")) / math.sqrt(q.shape[-1])
    qv, kv_, vv = (t._sync().astype(np.float64) for t in (q, k, v))
    kx, vx = _expand(kv_, hq), _expand(vv, hq)
    p = _probs(qv, kx, is_causal, scale)
    o = np.einsum("bhqk,bhkd->bhqd", p, vx)
    out = torch.Tensor(torch._round_to(o, q.dtype), q.dtype)
    out._saved = (qv, kx, vx, p, o, scale, hkv, q.dtype)
    return out


def _sdpa_backward(out, inputs, grad_output):
    qv, kx, vx, p, o, scale, hkv, dtype = out._saved
    do = grad_output._sync().astype(np.float64)
    dv = np.einsum("bhqk,bhqd->bhkd", p, do)
    dp = np.einsum("bhqd,bhkd->bhqk", do, vx)
    ds = p * (dp - (do * o).sum(axis=-1, keepdims=True))
    dq = np.einsum("bhqk,bhkd->bhqd", ds, kx) * scale
    dk = np.einsum("bhqk,bhqd->bhkd", ds, qv) * scale
    b, h, s, d = dk.shape
    if hkv != h:  # sum each KV head's query-head group
        dk = dk.reshape(b, hkv, h // hkv, s, d).sum(axis=2)
        dv = dv.reshape(b, hkv, h // hkv, s, d).sum(axis=2)
    return tuple(torch.Tensor(torch._round_to(g, dtype), dtype) for g in (dq, dk, dv))
