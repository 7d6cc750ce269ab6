"""A stand-in for the slice of PyTorch that tools/gpu/sdpa_compare.py uses, for testing that script without a GPU.

Tensors are numpy arrays. The ones the script hands to cpscope's kernels (randn, empty, zeros) live in the
memory of the kernels' CPU emulation: FAKE_TORCH_DEVICE_LIB names the emulated C ABI library
(libcpscope_kernels_capi_emu.so), whose cps_emu_malloc registers a buffer as device memory, as cudaMalloc does
on the emulation. bf16 and fp16 tensors keep their 16-bit buffer (what data_ptr() gives) next to their values.
torch.nn.functional.scaled_dot_product_attention and torch.autograd.grad compute attention and its gradients in
float64 and round them to the inputs' type, as SDPA returns them. The "cudnn" backend refuses GQA, so the
script's path that expands K/V runs too, and FAKE_TORCH_OLD takes away SDPA's enable_gqa argument (PyTorch
before 2.5) so that every backend needs it. FAKE_TORCH_SDPA_SCALE multiplies SDPA's softmax scale: a wrong
reference the script must catch (tests/tools/sdpa_compare_emu_test.py). FAKE_TORCH_BROKEN=1 makes
torch.backends.cudnn.version() raise (a cuDNN that does not load) and the device copy fail (a CUDA context
broken late in the run): the script must keep what it measured before. torch.cuda._sleep counts its calls in
torch.cuda.slept.
"""
import ctypes
import os
import time

import numpy as np

__version__ = "0.0-fake"


class _DType:
    def __init__(self, name, np_dtype, bits):
        self.name, self.np, self.bits = name, np_dtype, bits

    def __repr__(self):
        return "torch." + self.name


bfloat16 = _DType("bfloat16", np.uint16, 16)
float16 = _DType("float16", np.float16, 16)
float32 = _DType("float32", np.float32, 32)

_lib = None


def _device_lib():
    global _lib
    if _lib is None:
        _lib = ctypes.CDLL(os.environ["FAKE_TORCH_DEVICE_LIB"])
        _lib.cps_emu_malloc.restype = ctypes.c_void_p
        _lib.cps_emu_malloc.argtypes = [ctypes.c_size_t]
    return _lib


def _device_array(shape, np_dtype):
    nbytes = int(np.prod(shape)) * np.dtype(np_dtype).itemsize
    ptr = _device_lib().cps_emu_malloc(max(nbytes, 1))
    if not ptr:
        raise RuntimeError(f"fake torch: cps_emu_malloc({nbytes}) failed")
    raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
    return np.frombuffer(raw, dtype=np.uint8).view(np_dtype).reshape(shape)  # never freed: a test's lifetime


def _to_bf16_bits(x):
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even


def _from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def _round_to(values, dtype):
    if dtype is bfloat16:
        return _from_bf16_bits(_to_bf16_bits(values))
    if dtype is float16:
        return values.astype(np.float16).astype(np.float32)
    return values.astype(np.float32)


class Tensor:
    """values: the numbers (float32, or float64 inside SDPA); buf: the device buffer when data_ptr() may be asked."""

    def __init__(self, values, dtype=float32, buf=None):
        self.values, self.dtype, self.buf = values, dtype, buf
        self._saved = None  # an SDPA output: what autograd.grad needs

    @property
    def shape(self):
        return self.values.shape

    def data_ptr(self):
        if self.buf is None or not self.buf.flags.c_contiguous:
            raise RuntimeError("fake torch: data_ptr() of a tensor that is not a contiguous device buffer")
        return self.buf.ctypes.data

    def _sync(self):  # a 16-bit device tensor's values from its buffer (a kernel may have written it)
        if self.buf is not None and self.dtype is bfloat16:
            self.values = _from_bf16_bits(self.buf)
        elif self.buf is not None and self.dtype is float16:
            self.values = self.buf.astype(np.float32)
        return self.values

    def transpose(self, a, b):
        self._sync()
        return Tensor(np.swapaxes(self.values, a, b), self.dtype)

    def repeat_interleave(self, n, dim):
        return Tensor(np.repeat(self._sync(), n, axis=dim), self.dtype)

    def detach(self):
        t = Tensor(self._sync(), self.dtype)
        t._saved = self._saved
        return t

    def requires_grad_(self, flag=True):
        return self

    def float(self):
        return Tensor(self._sync().astype(np.float32), float32)

    def __sub__(self, other):
        return Tensor(self._sync() - other._sync(), float32)

    def __truediv__(self, other):
        return Tensor(self._sync() / (other._sync() if isinstance(other, Tensor) else other), float32)

    def abs(self):
        return Tensor(np.abs(self._sync()), float32)

    def max(self):
        return Tensor(np.max(self._sync()), float32)

    def item(self):
        return float(self._sync())

    def reshape(self, *shape):
        return Tensor(self._sync().reshape(shape), self.dtype)

    def sum(self, dim):
        return Tensor(self._sync().sum(axis=dim), self.dtype)

    def zero_(self):
        (self.buf if self.buf is not None else self.values)[...] = 0
        self._sync()
        return self

    def copy_(self, other):
        if os.environ.get("FAKE_TORCH_BROKEN"):
            raise RuntimeError("CUDA error: an illegal memory access was encountered (fake)")
        if self.buf is not None and other.buf is not None:
            np.copyto(self.buf, other.buf)
        else:
            np.copyto(self.values, other._sync())
        self._sync()
        return self

    def numel(self):
        return int(self.values.size)


def _new(shape, dtype, fill):
    shape = tuple(int(s) for s in shape)
    if dtype is float32:
        buf = _device_array(shape, np.float32)
        buf[...] = fill(shape)
        return Tensor(buf, float32, buf)
    values = _round_to(fill(shape), dtype)
    buf = _device_array(shape, np.uint16 if dtype is bfloat16 else np.float16)
    buf[...] = _to_bf16_bits(values) if dtype is bfloat16 else values.astype(np.float16)
    return Tensor(values, dtype, buf)


_rng = np.random.default_rng(0)


def manual_seed(seed):
    global _rng
    _rng = np.random.default_rng(seed)


def randn(*shape, device=None, dtype=float32):
    return _new(shape, dtype, lambda s: _rng.standard_normal(s, dtype=np.float32))


def empty(*shape, device=None, dtype=float32):
    return _new(shape, dtype, lambda s: np.zeros(s, np.float32))


zeros = empty


def empty_like(t):
    return empty(*t.shape, dtype=t.dtype)


def device(name):
    return name


class _Version:
    cuda = "13.0-fake"


version = _Version()


class _Cudnn:
    @staticmethod
    def version():
        if os.environ.get("FAKE_TORCH_BROKEN"):
            raise RuntimeError("cuDNN version incompatibility (fake)")
        return 90000


class _Backends:
    cudnn = _Cudnn()


backends = _Backends()


class _Props:
    name = "fake GPU (CPU emulation)"
    multi_processor_count = 1
    total_memory = 1 << 30


class _Event:
    def __init__(self, enable_timing=False):
        self.t = None

    def record(self):
        self.t = time.perf_counter()

    def elapsed_time(self, end):
        return (end.t - self.t) * 1e3


class _Stream:
    cuda_stream = 0  # the legacy default stream: the emulation runs its work at once


class _Nccl:
    @staticmethod
    def version():
        return (2, 28, 9)


class _Cuda:
    Event = _Event
    nccl = _Nccl()
    slept = 0

    @staticmethod
    def _sleep(cycles):  # the GPU spins; here nothing runs ahead, so nothing to wait for
        if not isinstance(cycles, int) or cycles < 0:
            raise TypeError(f"_sleep takes a non-negative int of cycles, not {cycles!r}")
        _Cuda.slept += 1

    @staticmethod
    def get_device_properties(dev):
        return _Props()

    @staticmethod
    def synchronize():
        pass

    @staticmethod
    def current_stream():
        return _Stream()

    @staticmethod
    def empty_cache():
        pass


cuda = _Cuda()


class _Autograd:
    @staticmethod
    def grad(out, inputs, grad_output, retain_graph=False):
        from torch.nn.functional import _sdpa_backward
        return _sdpa_backward(out, inputs, grad_output)


autograd = _Autograd()

from torch import nn  # noqa: E402,F401  (torch.nn.functional, torch.nn.attention)
