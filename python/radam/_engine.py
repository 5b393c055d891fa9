"""The engine contract: what ``radam.Adam`` hands an engine and asks of it.

An engine steps a fixed list of tensors in place: ``radam._core.CpuEngine``
(the Rust kernel on NumPy arrays) and ``radam.gpu.GpuEngine`` (the WGSL
kernel). Both are built from one :class:`TensorBuffers` record per tensor and
implement :class:`Engine`. The state buffers a tensor has, and their names
(the keys of ``opt.state[key]``, of state dicts and checkpoints), are
:func:`state_names`' (and MASTER's, for a master copy); the arrays that hold
them, with their shapes and dtypes, the record's state format's
(``radam._formats``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ._formats import (
    StateFormat,
    absmax_name,  # noqa: F401  (tests import it from here)
    of_state,
)
from ._options import EngineOptions

# The kernel counts steps in 64 bits: the number of the last step it can take.
LAST_STEP = 2**64 - 1

# The state buffers, in the engines' order: the first moment; the second (AdaMax's
# infinity norm is EXP_INF, as torch.optim.Adamax names it); AMSGrad's running max;
# the momentum velocity; the float32 master copy of a 16-bit param.
EXP_AVG, EXP_AVG_SQ, EXP_INF = "exp_avg", "exp_avg_sq", "exp_inf"
MAX_EXP_AVG_SQ, VELOCITY, MASTER = "max_exp_avg_sq", "velocity", "master_param"
# Those that hold running means or maxima of non-negative values.
NON_NEGATIVE = (EXP_AVG_SQ, EXP_INF, MAX_EXP_AVG_SQ)


def state_names(options: EngineOptions) -> tuple[str, ...]:
    """The moments a group's tensors keep, in the engines' order (a 16-bit param
    with master weights also has MASTER, last)."""
    names = [EXP_AVG, EXP_INF if options.algorithm == "adamax" else EXP_AVG_SQ]
    if options.amsgrad:
        names.append(MAX_EXP_AVG_SQ)
    if options.uses_velocity:
        names.append(VELOCITY)
    return tuple(names)


@dataclass(frozen=True)
class TensorBuffers:
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
    # How it keeps its moments (the format for its size, see StateFormat.for_size),
    # which the engines dispatch on; a record made without one gets its state's.
    format: StateFormat = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.format is None:
            object.__setattr__(self, "format", of_state(self.state))


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
