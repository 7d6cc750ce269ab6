"""torch.nn.attention of the fake torch: the backend a `with sdpa_kernel(...)` block selects."""
import contextlib
import enum


class SDPBackend(enum.Enum):
    MATH = 0
    FLASH_ATTENTION = 1
    EFFICIENT_ATTENTION = 2
    CUDNN_ATTENTION = 3


current = [SDPBackend.MATH]


@contextlib.contextmanager
def sdpa_kernel(backend):
    current.append(backend)
    try:
        yield
    finally:
        current.pop()
