"""Type stubs for the Rust extension module ``radam._core`` (checked against the
built extension by ``python -m mypy.stubtest radam._core`` in CI)."""

from collections.abc import Sequence
from typing import Literal, final

import numpy as np

from radam._options import EngineOptions

__all__ = [
    "__version__",
    "ADAM_WGSL",
    "validate_options",
    "step_scalars",
    "grad_norm",
    "simd_level",
    "num_threads",
    "_rmw_probe",
    "_copy_probe",
    "CpuEngine",
]

__version__: str
ADAM_WGSL: str
"""The WGSL source of the GPU kernel (shaders/adam.wgsl), embedded at build time."""

def validate_options(options: EngineOptions) -> None:
    """Raise ValueError naming the first option of an EngineOptions out of range."""

def step_scalars(
    options: EngineOptions, step: int, mu_product: float
) -> tuple[dict[str, float | bool | str], float]:
    """The f64 scalars of step ``step`` of a group given its carried mu_product, as
    rust/scalars.rs computes them (``rule`` as "adam", "adamax", "nadam" or
    "unadapted", three flags as bools, the rest floats), and the mu_product to carry on."""

def grad_norm(grad: np.ndarray) -> float:
    """The L2 norm of a C-contiguous float32 array, summed in f64 as the CPU step does."""

def simd_level() -> Literal["avx512", "avx2+fma", "neon", "scalar"]:
    """The instruction set the kernels use here."""

def num_threads() -> int:
    """Threads a step may use (set RAYON_NUM_THREADS before import to change it)."""

def _rmw_probe(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray) -> None:
    """Benchmark probe: p += g; m += g; v += g (float32, multi-threaded)."""

def _copy_probe(dst: np.ndarray, src: np.ndarray) -> None:
    """Benchmark probe: dst[:] = src (float32, multi-threaded)."""

@final
class CpuEngine:
    """Steps a fixed list of tensors in place: params of float32, float64,
    float16 or bfloat16; state in the compute type or 16 bits."""

    def __new__(
        cls,
        labels: Sequence[str],
        params: Sequence[np.ndarray],
        exp_avgs: Sequence[np.ndarray],
        exp_avg_sqs: Sequence[np.ndarray],
        max_exp_avg_sqs: Sequence[np.ndarray | None],
        velocities: Sequence[np.ndarray | None],
        groups: Sequence[int],
        masters: Sequence[np.ndarray | None] | None = None,
    ) -> CpuEngine: ...
    def step(
        self,
        grads: Sequence[np.ndarray],
        step: int,
        groups: Sequence[EngineOptions],
        carries: Sequence[float],
        skip_nonfinite: bool = False,
    ) -> list[float] | None:
        """One step. Returns the next carries (NAdam's mu_product per group), or None
        if ``skip_nonfinite`` found a NaN or Inf (then nothing was written)."""
    def __len__(self) -> int: ...
