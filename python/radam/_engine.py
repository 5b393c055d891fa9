"""The engine contract: what ``radam.Adam`` hands an engine and asks of it.

An engine steps a fixed list of tensors in place: ``radam._core.CpuEngine``
(the Rust kernel on NumPy arrays) and ``radam.gpu.GpuEngine`` (the WGSL
kernel). Both are built from one :class:`TensorBuffers` record per tensor and
implement :class:`Engine`. The state buffers a tensor has, and their names
(the keys of ``opt.state[key]``, of state dicts and checkpoints), are
:func:`state_names`' (and MASTER's, for a master copy); the arrays that hold
them, with their shapes and dtypes, :func:`state_arrays`'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from ._options import Q8_BLOCK, EngineOptions

# The kernel counts steps in 64 bits: the number of the last step it can take.
LAST_STEP = 2**64 - 1

# The state buffers, in the engines' order: the first moment; the second (AdaMax's
# infinity norm is EXP_INF, as torch.optim.Adamax names it); AMSGrad's running max;
# the momentum velocity; the float32 master copy of a 16-bit param.
EXP_AVG, EXP_AVG_SQ, EXP_INF = "exp_avg", "exp_avg_sq", "exp_inf"
MAX_EXP_AVG_SQ, VELOCITY, MASTER = "max_exp_avg_sq", "velocity", "master_param"
# Those that hold running means or maxima of non-negative values.
NON_NEGATIVE = (EXP_AVG_SQ, EXP_INF, MAX_EXP_AVG_SQ)


# 8-bit state (state_dtype="8bit", bitsandbytes' blockwise format): each buffer of a
# tensor of at least MIN_8BIT_SIZE elements is held as uint8 codes of the param's shape
# (the signed dynamic map for the first moment and the velocity, the unsigned one for
# the others) and the float32 absmax of each block of Q8_BLOCK elements, under
# absmax_name(name). Smaller tensors keep float32 state, as bitsandbytes' min_8bit_size.
EIGHT_BIT = "8bit"
MIN_8BIT_SIZE = 4096
ABSMAX = "_absmax"
CODES, SCALES = np.dtype(np.uint8), np.dtype(np.float32)


def absmax_name(name: str) -> str:
    """The ``opt.state`` key of the absmax array of 8-bit buffer ``name``."""
    return name + ABSMAX


def is_eight_bit(state_dtype: Any, numel: int) -> bool:
    """Whether a tensor of ``numel`` elements keeps 8-bit state under ``state_dtype``."""
    return state_dtype == EIGHT_BIT and numel >= MIN_8BIT_SIZE


def state_arrays(
    names: Sequence[str], shape: tuple[int, ...], dtype: Any, eight_bit: bool
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The arrays that hold buffers ``names`` of a tensor of ``shape``, name ->
    (shape, dtype), in ``opt.state``'s order: each buffer in ``dtype`` (a NumPy
    dtype; float32 for "8bit" when not ``eight_bit``), or, when ``eight_bit``,
    its codes followed by its absmax."""
    if not eight_bit:
        dtype = SCALES if dtype == EIGHT_BIT else np.dtype(dtype)
        return {n: (shape, dtype) for n in names}
    blocks = (-(-math.prod(shape) // Q8_BLOCK),)
    arrays = {}
    for n in names:
        arrays[n] = (shape, CODES)
        arrays[absmax_name(n)] = (blocks, SCALES)
    return arrays


def state_names(options: EngineOptions) -> tuple[str, ...]:
    """The moments a group's tensors keep, in the engines' order (a 16-bit param
    with master weights also has MASTER, last)."""
    names = [EXP_AVG, EXP_INF if options.algorithm == "adamax" else EXP_AVG_SQ]
    if options.amsgrad:
        names.append(MAX_EXP_AVG_SQ)
    if options.uses_velocity:
        names.append(VELOCITY)
    return tuple(names)


class TensorBuffers(NamedTuple):
    """One tensor an engine steps."""

    label: str  # how messages name it, e.g. "[0]" or "['w']"
    group: int  # the index of its parameter group
    param: np.ndarray
    state: Mapping[str, np.ndarray]  # its opt.state entry, in state_names' order
    # Where its elements sit in the optimizer, which stochastic rounding's random bits
    # depend on: its position over all groups, and the index of its first element in
    # the whole tensor (a shard of radam.distributed starts past 0).
    position: int
    offset: int = 0
    # The steps it has taken (each tensor keeps its own: one without a grad in a
    # step does not advance), and what its last step carried (NAdam's mu_product).
    step: int = 0
    carry: float = 1.0


class Engine(Protocol):
    """What ``radam.Adam`` asks of an engine, built as ``Engine(tensors)`` from one
    :class:`TensorBuffers` per tensor. The records' arrays are the host copies of
    the params and state: current after every step on the CPU, after
    :meth:`sync` on a device."""

    def step(
        self, grads: Sequence[Any], configs: Sequence[Any], skip_nonfinite: bool = False
    ) -> bool:
        """One step of each tensor whose grad is not None, at its own step count,
        with each group's ``radam._core.AdamConfig``; a tensor whose grad is None
        is left as it is, its count too. Returns False when ``skip_nonfinite``
        found a NaN or Inf in a gradient (then nothing was written). Every check
        runs before anything is written: on an error nothing changed."""
        ...

    def counts(self) -> tuple[list[int], list[float]]:
        """Each tensor's step count, and what its last step carried (1.0 before its first)."""
        ...

    def sync(self) -> None:
        """Copy the params and state from the device into the records' arrays."""
        ...

    def __len__(self) -> int: ...
