"""Type stubs for the Rust extension module ``radam._core``."""

from collections.abc import Sequence
from typing import Any

import numpy as np

__version__: str
ADAM_WGSL: str
"""The WGSL source of the GPU kernel (shaders/adam.wgsl), embedded at build time."""

def validate_config(lr: float, beta1: float, beta2: float, eps: float, weight_decay: float) -> None:
    """Raise ValueError naming the first option out of range."""

def simd_level() -> str:
    """The instruction set the kernels use here: "avx512", "avx2+fma", "neon" or "scalar"."""

def num_threads() -> int:
    """Threads a step may use (set RAYON_NUM_THREADS before import to change it)."""

GroupOptions = tuple[float, float, float, float, float, bool, bool, bool]

def _rmw_probe(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray) -> None:
    """Benchmark probe: p += g; m += g; v += g (float32, multi-threaded)."""

class CpuEngine:
    """Steps a fixed list of float32/float64 arrays in place."""

    def __init__(
        self,
        labels: Sequence[str],
        params: Sequence[np.ndarray],
        exp_avgs: Sequence[np.ndarray],
        exp_avg_sqs: Sequence[np.ndarray],
        max_exp_avg_sqs: Sequence[np.ndarray | None],
        groups: Sequence[int],
    ) -> None: ...
    def step(self, grads: Sequence[Any], step: int, groups: Sequence[GroupOptions]) -> None: ...
    def __len__(self) -> int: ...
