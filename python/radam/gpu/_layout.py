"""Where a ``GpuEngine``'s tensors live on the device: the flat buffers, each
group's chunks, the uniform slots and the dispatches (see ``radam.gpu``'s
module doc for the why). Plain arithmetic on sizes and the adapter's limits:
no device is touched here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from .. import _core
from ._blocked import BLOCK, record_words
from ._device import GpuError

# The uniform `Step` struct of adam.wgsl, as the Rust core lists its fields.
STEP_WORDS = len(_core.STEP_FIELDS)
LO, HI = _core.STEP_FIELDS.index("lo"), _core.STEP_FIELDS.index("hi")
ROUND_KEY, ROUND_FIRST = (_core.STEP_FIELDS.index(f) for f in ("round_key", "round_first"))


def _align(n: int, to: int) -> int:
    return -(-n // to) * to


class Dispatch(NamedTuple):
    """One dispatch of a step: its uniform slot, its bind group (one chunk), the
    range ``lo..hi`` of the chunk's elements it steps, the tensor whose row its
    slot holds (-1: the group's row) and the index in that tensor of element
    ``lo`` (which stochastic rounding hashes)."""

    slot: int
    bind_group: int
    lo: int
    hi: int
    tensor: int
    first: int = 0


class GroupLayout:
    """Where one parameter group lives in the flat buffers."""

    def __init__(self, moments: int, per_word: int, q8: bool = False) -> None:
        # State values per element (m, v[, max_v][, velocity]), their slots (16-bit
        # state: padded to whole u32 words) and the words they take.
        self.moments = moments
        self.slots = _align(moments, per_word)
        self.words = self.slots // per_word
        # 8-bit state: each tensor starts on a block boundary (of ``block`` elements;
        # 1 for other state), and each block has one record of words
        # (``_blocked.record_words``).
        self.q8 = q8
        self.block = BLOCK if q8 else 1
        self.record = record_words(moments) if q8 else 0
        self.start = 0  # first element in params/grads
        self.state_start = 0  # first word in state
        self.size = 0
        self.tensors: list[int] = []  # engine tensor indices, in order
        self.chunks: list[tuple[int, int]] = []  # (first element in the group, length)
        self.bind_groups: list[int] = []  # per chunk, index into the engine's bind groups
        # One dispatch per chunk; and, for steps that clip by norm (whose factor is
        # per tensor) or round stochastically (whose key is), one per tensor per chunk.
        self.whole: list[Dispatch] = []
        self.per_tensor: list[Dispatch] = []


class Layout:
    """The flat buffers of ``sizes[i]``-element tensors in groups ``groups[i]``,
    each group's tensors holding ``moments[g]`` state values per element stored
    ``per_word`` to a u32 word (or, where ``q8[g]``, as 8-bit codes in blocks), on
    an adapter with ``limits`` (its binding size lowered to ``max_binding`` bytes
    when given)."""

    def __init__(
        self,
        sizes: Sequence[int],
        groups: Sequence[int],
        moments: Sequence[int],
        per_word: int,
        limits: Mapping[str, int],
        max_binding: int | None = None,
        q8: Sequence[bool] | None = None,
    ) -> None:
        align = max(limits["min-storage-buffer-offset-alignment"], 4) // 4
        binding = limits["max-storage-buffer-binding-size"]
        if max_binding is not None:
            binding = min(binding, max_binding)
        q8 = q8 or [False] * len(moments)
        self.groups = [GroupLayout(k, per_word, q) for k, q in zip(moments, q8)]
        # Each tensor's first element in the flat params/grads buffers.
        self.offsets = [0] * len(sizes)
        elements, words = 0, 0
        for gi, group in enumerate(self.groups):
            group.start, group.state_start = elements, words
            # 8-bit state: whole blocks per tensor, so no block spans two tensors.
            to = group.block
            for i, g in enumerate(groups):
                if g == gi:
                    group.size = _align(group.size, to)
                    self.offsets[i] = elements + group.size
                    group.size += sizes[i]
                    group.tensors.append(i)
            group.size = _align(group.size, to)
            elements = _align(elements + group.size, align)
            if group.q8:
                # Chunks of whole blocks, a multiple of `align` of them, so that both
                # the params' and the records' chunks start aligned.
                words = _align(words + group.size // BLOCK * group.record, align)
                blocks = binding // (4 * max(group.record, BLOCK)) // align * align
                chunk = blocks * BLOCK
            else:
                words = _align(words + group.size * group.words, align)
                chunk = (binding // (4 * max(group.words, 1))) // align * align
            if not group.size:
                continue  # e.g. a group with no tensor of 8-bit state
            if chunk <= 0:
                raise GpuError(f"the adapter's storage binding limit ({binding} B) is too small")
            group.chunks = [(s, min(chunk, group.size - s)) for s in range(0, group.size, chunk)]
        self.n_elements = max(elements, 1)
        self.n_state_words = max(words, 1)
        for what, nbytes in (("params", self.n_elements * 4), ("state", self.n_state_words * 4)):
            if nbytes > limits["max-buffer-size"]:
                raise GpuError(
                    f"the {what} buffer would need {nbytes} bytes, over the adapter's "
                    f"max_buffer_size of {limits['max-buffer-size']} bytes; "
                    "use device='cpu' for a model this size"
                )
        self.uniform_stride = _align(
            STEP_WORDS * 4, max(limits["min-uniform-buffer-offset-alignment"], 16)
        )
        # Uniform slots: first one per chunk (every step writes those), then one per
        # tensor per chunk (written only by steps that clip by norm).
        slots, bind_group = 0, 0
        for group in self.groups:
            for _, length in group.chunks:
                group.bind_groups.append(bind_group)
                group.whole.append(Dispatch(slots, bind_group, 0, length, -1))
                slots, bind_group = slots + 1, bind_group + 1
        self.whole_slots = slots
        for group in self.groups:
            for (start, length), bg in zip(group.chunks, group.bind_groups):
                for i in group.tensors:
                    first = self.offsets[i] - group.start - start
                    lo, hi = max(first, 0), min(first + sizes[i], length)
                    if lo < hi:
                        group.per_tensor.append(Dispatch(slots, bg, lo, hi, i, lo - first))
                        slots += 1
        self.n_slots = max(slots, 1)
        self._sizes, self._groups, self._per_word = list(sizes), list(groups), per_word

    def uniforms(self) -> np.ndarray:
        """The uniform rows, one per slot, as float32 words, with each dispatch's
        ``lo`` and ``hi`` in place (a step writes the coefficients, and with
        stochastic rounding ``round_key`` and ``round_first``)."""
        uniforms = np.zeros((self.n_slots, self.uniform_stride // 4), np.float32)
        ranges = uniforms.view(np.uint32)
        for group in self.groups:
            for d in group.whole + group.per_tensor:
                ranges[d.slot, LO], ranges[d.slot, HI] = d.lo, d.hi
        return uniforms

    def state_rows(self, i: int, image: np.ndarray) -> np.ndarray:
        """Tensor ``i``'s state in a flat image of the state buffer (as state
        values, float32 or 16-bit): one row per element, one column per slot."""
        group = self.groups[self._groups[i]]
        first = group.state_start * self._per_word
        first += (self.offsets[i] - group.start) * group.slots
        size = self._sizes[i]
        return image[first : first + size * group.slots].reshape(size, group.slots)

    def block_records(self, i: int, image: np.ndarray) -> np.ndarray:
        """Tensor ``i``'s 8-bit state in a flat image of the state buffer (as u32
        words): one row per block, its record's words (codes of each state value,
        then their absmax)."""
        group = self.groups[self._groups[i]]
        blocks = -(-self._sizes[i] // BLOCK)
        first = group.state_start + (self.offsets[i] - group.start) // BLOCK * group.record
        return image[first : first + blocks * group.record].reshape(blocks, group.record)
