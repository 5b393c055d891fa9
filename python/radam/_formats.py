"""The state formats, each declared once.

A :class:`StateFormat` says how a tensor keeps each state buffer: its name
(what ``state_dtype`` takes), the arrays that hold one buffer (their key
suffixes, dtypes and shapes), its block size, the smallest tensor it applies to
(smaller ones keep another format), the storage kind the engines dispatch on
(Rust's ``StoredMut`` variant) and its codec. Everything else asks the
declaration: the option's choices, allocation, state-dict checks, checkpoints,
sharding, and the engines, which get each tensor's format in its
``TensorBuffers`` record. No code tells a format by an array's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from . import _core


@dataclass(frozen=True)
class StateArray:
    """One array that holds (part of) a state buffer."""

    suffix: str  # its opt.state key is the buffer's name followed by this
    dtype: np.dtype
    per_block: bool  # one element per block (else one per element, the param's shape)
    # What a loaded array may hold: None, the buffer's values (checked as the buffer
    # is); "" any element (codes, each a value of the map); else the reason its
    # elements must be finite.
    holds: str | None = None


@dataclass(frozen=True)
class StateFormat:
    """How a tensor keeps its state buffers."""

    name: str  # what state_dtype takes
    kind: str  # the storage kind the engines dispatch on: "plain" or "q8"
    arrays: tuple[StateArray, ...]  # per buffer; the first holds its values or codes
    block: int = 1  # elements per block of the per_block arrays
    # Tensors under min_size elements keep the format named `small` instead.
    min_size: int = 0
    small: str | None = None
    # The codec: float32 values of one buffer -> its arrays, in `arrays`' order
    # (``signed``: the buffer takes negative values). None for plain formats.
    encode: Callable[[np.ndarray, bool], tuple[np.ndarray, ...]] | None = None

    @property
    def dtype(self) -> np.dtype:
        """The dtype of a buffer's first array (a plain format's state dtype)."""
        return self.arrays[0].dtype

    @property
    def plain(self) -> bool:
        """Whether a buffer is one array of the param's shape in ``dtype``."""
        return len(self.arrays) == 1

    def array(self, key: str) -> StateArray:
        """The array that state key ``key`` names (a buffer's first, or one beside it)."""
        extra = self.companion(key)
        return self.arrays[0] if extra is None else extra[1]

    def blocks(self, n: int) -> int:
        """The blocks of a tensor of ``n`` elements."""
        return -(-n // self.block)

    def for_size(self, numel: int) -> StateFormat:
        """The format a tensor of ``numel`` elements keeps under this one."""
        return BY_NAME[self.small] if self.small and numel < self.min_size else self

    def keys(self, name: str) -> tuple[str, ...]:
        """The opt.state keys of buffer ``name``'s arrays."""
        return tuple(name + a.suffix for a in self.arrays)

    def companion(self, key: str) -> tuple[str, StateArray] | None:
        """(buffer name, array) when ``key`` names an array beside a buffer's first."""
        for a in self.arrays[1:]:
            if key.endswith(a.suffix):
                return key[: -len(a.suffix)], a
        return None

    def shapes(
        self, names: Sequence[str], shape: tuple[int, ...]
    ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """The arrays that hold buffers ``names`` of a tensor of ``shape``, key ->
        (shape, dtype), in ``opt.state``'s order: each buffer's arrays in turn."""
        blocks = (self.blocks(math.prod(shape)),)
        return {
            name + a.suffix: (blocks if a.per_block else shape, a.dtype)
            for name in names
            for a in self.arrays
        }

    def __repr__(self) -> str:
        return f"StateFormat({self.name!r})"


def _plain(dtype: Any) -> StateFormat:
    dtype = np.dtype(dtype)
    return StateFormat(dtype.name, "plain", (StateArray("", dtype, False),))


def _q8_encode(values: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    codes, absmax = _core._q8_encode(flat, signed)
    return codes.reshape(values.shape), absmax


# bitsandbytes' blockwise 8-bit state: uint8 codes of the param's shape (the signed
# dynamic map for the first moment and the velocity, the unsigned one for the others)
# and the float32 absmax of each block; smaller tensors keep float32, as
# bitsandbytes' min_8bit_size. Its codec is rust/quant/ (shaders/adam.wgsl on the GPU).
EIGHT_BIT = StateFormat(
    "8bit",
    "q8",
    (
        StateArray("", np.dtype(np.uint8), False, holds=""),
        StateArray(
            "_absmax",
            np.dtype(np.float32),
            True,
            holds="an 8-bit buffer's absmax is a block's largest finite magnitude (negated "
            "where the block holds an infinity): finite",
        ),
    ),
    block=_core.Q8_BLOCK,
    min_size=4096,
    small="float32",
    encode=_q8_encode,
)
FLOAT32, FLOAT64 = _plain(np.float32), _plain(np.float64)
# Every format, by name; all but float64 (a float64 param's own) are state_dtype's
# choices besides None.
FORMATS = (FLOAT32, FLOAT64, _plain(ml_dtypes.bfloat16), _plain(np.float16), EIGHT_BIT)
BY_NAME: Mapping[str, StateFormat] = {f.name: f for f in FORMATS}
CHOICES = tuple(f.name for f in FORMATS if f is not FLOAT64)


def resolve(state_dtype: Any, choices: Sequence[Any]) -> StateFormat | None:
    """The format ``state_dtype`` names (a name or a NumPy dtype), or None (the
    param's compute type). ``choices`` are the option table's, for the message."""
    if state_dtype is None:
        return None
    if isinstance(state_dtype, StateFormat):
        state_dtype = state_dtype.name
    if isinstance(state_dtype, str) and state_dtype in CHOICES:
        return BY_NAME[state_dtype]
    try:
        name = np.dtype(state_dtype).name
    except TypeError:
        name = None
    if name not in CHOICES or not BY_NAME[name].plain:
        names = ", ".join(repr(c) for c in choices)
        raise ValueError(f"state_dtype must be one of {names}, got {state_dtype!r}")
    return BY_NAME[name]


def named(state_dtype: Any) -> StateFormat | None:
    """The format ``state_dtype`` names if it is a format's name, else None (no check:
    for callers that look before the optimizer checks its options)."""
    return BY_NAME.get(state_dtype) if isinstance(state_dtype, str) else None


def of_state(state: Mapping[str, Any]) -> StateFormat:
    """The format of a tensor's state built without one (``TensorBuffers`` made by
    hand): the format whose extra arrays its keys name, else the plain format of its
    first buffer's dtype (float32 when that is no format's)."""
    for f in FORMATS:
        if not f.plain and any(f.companion(k) for k in state):
            return f
    first = next(iter(state.values()), None)
    name = getattr(getattr(first, "dtype", None), "name", None)
    return BY_NAME[name] if name in BY_NAME and BY_NAME[name].plain else FLOAT32


def array_shape(key: str, shape: Sequence[int]) -> list[int]:
    """The shape of state array ``key`` of a tensor of ``shape`` in whichever format
    has an array of that key: one element per block, or the param's shape."""
    for f in FORMATS:
        extra = f.companion(key)
        if extra and extra[1].per_block:
            return [f.blocks(math.prod(shape))]
    return list(shape)


# The codec of the 8-bit format as the importers of other libraries' state use it.
def q8_map(signed: bool) -> np.ndarray:
    """The 256 values of the signed or unsigned dynamic map of 8-bit state."""
    return _core._q8_map(signed)


def absmax_name(name: str) -> str:
    """The ``opt.state`` key of the absmax array of 8-bit buffer ``name``."""
    return EIGHT_BIT.keys(name)[1]
