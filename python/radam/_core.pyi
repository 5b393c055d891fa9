"""Type stubs for the Rust extension module ``radam._core`` (checked against the
built extension by ``python -m mypy.stubtest radam._core`` in CI)."""

from collections.abc import Mapping, Sequence
from typing import Any, Literal, final

import numpy as np

from radam._row_sparse import RowSparse

__all__ = [
    "__version__",
    "ADAM_WGSL",
    "PROBES_WGSL",
    "ALGORITHMS",
    "BIAS_CORRECTIONS",
    "CONFIG_FIELDS",
    "STEP_FIELDS",
    "Q8_BLOCK",
    "simd_level",
    "num_threads",
    "AdamConfig",
    "CpuEngine",
    "GpuStep",
    "_q8_map",
    "_q8_encode",
    "_q8_decode",
]

__version__: str
ADAM_WGSL: str
PROBES_WGSL: str
"""The WGSL source of the GPU kernel (shaders/adam.wgsl), embedded at build time."""
ALGORITHMS: tuple[str, ...]
"""The update rules' names: "adam", "adamax", "nadam", "radam"."""
BIAS_CORRECTIONS: tuple[str, ...]
"""The bias corrections' names: "adam", "downhill-0.4.0"."""
CONFIG_FIELDS: tuple[str, ...]
"""The fields of the core's AdamConfig, each read from the attribute of its name."""
STEP_FIELDS: tuple[str, ...]
"""The fields of the GPU kernel's ``Step`` uniform struct, in order."""
Q8_BLOCK: int
"""Elements per block of 8-bit state, each block with one float32 absmax."""

def simd_level() -> Literal["avx512", "avx2+fma", "neon", "scalar"]:
    """The instruction set the kernels use here."""

def num_threads() -> int:
    """Threads a step may use (set RAYON_NUM_THREADS before import to change it)."""

@final
class AdamConfig:
    """The core's options of one group, read by field name from a
    ``radam._options.EngineOptions``; ValueError names the first one out of range."""

    def __new__(cls, options: Any) -> AdamConfig: ...

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

@final
class CpuEngine:
    """Steps a fixed list of tensors in place: params of float32, float64,
    float16 or bfloat16; state in the compute type, 16 bits or a blocked format.
    One record per tensor (``radam._engine.TensorBuffers``: label, group, param,
    state, position, offset, step, carry, format: the ``radam._formats`` state
    format whose storage kind it dispatches on)."""

    def __new__(cls, tensors: Sequence[Any]) -> CpuEngine: ...
    def step(
        self,
        grads: Sequence[np.ndarray | RowSparse | None],
        configs: Sequence[AdamConfig],
        skip_nonfinite: bool = False,
    ) -> bool:
        """One step of each tensor whose grad is not None, at its own step count
        (a ``RowSparse`` grad steps only the rows it names).
        Returns False if ``skip_nonfinite`` found a NaN or Inf (then nothing was written)."""
    def counts(self) -> tuple[list[int], list[float]]:
        """Each tensor's step count and its carried mu_product (1.0 before its first step)."""
    def sync(self) -> None:
        """Nothing to copy: the host arrays are the ones stepped."""
    def __len__(self) -> int: ...

@final
class GpuStep:
    """One step of one group on the GPU: the float32 rows of the WGSL ``Step``
    uniform (the fields before ``lo``) and the pipeline's override constants."""

    def __new__(cls, config: AdamConfig, step: int, mu_product: float) -> GpuStep: ...
    @property
    def row(self) -> np.ndarray:
        """The row of a tensor not clipped by norm."""
    def tensor_row(self, grad: np.ndarray) -> np.ndarray:
        """The row of a tensor clipped by norm, from its float32 gradient."""
    @property
    def clips_norm(self) -> bool:
        """Whether each tensor gets its own row."""
    @property
    def rounds(self) -> bool:
        """Whether 16-bit params are rounded stochastically (each tensor gets its own row)."""
    def round_key(self, position: int) -> int:
        """The row's ``round_key`` word for the tensor at ``position`` in the optimizer."""
    @property
    def constants(self) -> Mapping[str, int]:
        """AMSGRAD, MOMENTUM, L2, CLIP, RULE and STOCHASTIC, as the shader names them."""
    @property
    def rule(self) -> Literal["adam", "adamax", "nadam", "unadapted"]:
        """The step's update rule."""
    @property
    def mu_product(self) -> float:
        """NAdam's product to carry to the next step."""
