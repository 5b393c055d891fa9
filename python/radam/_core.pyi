"""Type stubs for the Rust extension module ``radam._core``."""

from collections.abc import Sequence
from typing import Any

import numpy as np

__version__: str
ADAM_WGSL: str
"""The WGSL source of the GPU kernel (shaders/adam.wgsl), embedded at build time."""

def validate_options(options: Any) -> None:
    """Raise ValueError naming the first option of an EngineOptions out of range."""

def step_scalars(options: Any, step: int, mu_product: float) -> tuple[dict[str, Any], float]:
    """The f64 scalars of step ``step`` of a group (an EngineOptions) given its carried
    mu_product, as rust/scalars.rs computes them, and the mu_product to carry on."""

def grad_norm(grad: np.ndarray) -> float:
    """The L2 norm of a C-contiguous float32 array, summed in f64 as the CPU step does."""

def simd_level() -> str:
    """The instruction set the kernels use here: "avx512", "avx2+fma", "neon" or "scalar"."""

def num_threads() -> int:
    """Threads a step may use (set RAYON_NUM_THREADS before import to change it)."""

def _rmw_probe(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray) -> None:
    """Benchmark probe: p += g; m += g; v += g (float32, multi-threaded)."""

def _copy_probe(dst: np.ndarray, src: np.ndarray) -> None:
    """Benchmark probe: dst[:] = src (float32, multi-threaded)."""

def _q8_map(signed: bool) -> np.ndarray:
    """Test hook: the 256 float32 values of the signed or unsigned dynamic tree map."""

def _q8_encode(
    x: np.ndarray, signed: bool, level: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Test hook: blockwise 8-bit codes (uint8) and absmax (float32 per 256) of float32 x."""

def _q8_decode(
    codes: np.ndarray, absmax: np.ndarray, signed: bool, level: str | None = None
) -> np.ndarray:
    """Test hook: values[codes] * absmax, block by block (float32)."""

class CpuEngine:
    """Steps a fixed list of tensors in place: params of float32, float64,
    float16 or bfloat16; state in the compute type or 16 bits."""

    def __init__(
        self,
        labels: Sequence[str],
        params: Sequence[np.ndarray],
        exp_avgs: Sequence[np.ndarray],
        exp_avg_sqs: Sequence[np.ndarray],
        max_exp_avg_sqs: Sequence[np.ndarray | None],
        velocities: Sequence[np.ndarray | None],
        groups: Sequence[int],
        masters: Sequence[np.ndarray | None] | None = None,
    ) -> None: ...
    def step(
        self,
        grads: Sequence[Any],
        step: int,
        groups: Sequence[Any],
        carries: Sequence[float],
        skip_nonfinite: bool = False,
    ) -> list[float] | None:
        """One step; ``groups`` are ``radam._options.EngineOptions``. Returns the
        next carries (NAdam's mu_product per group), or None if skipped."""
    def __len__(self) -> int: ...
