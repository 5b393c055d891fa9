"""The GPU engine's layout (radam.gpu._layout): plain arithmetic on sizes and an
adapter's limits, so it is checked here without a device, against layouts worked
out by hand from the rules in radam.gpu's module doc."""

from __future__ import annotations

import numpy as np
import pytest
from radam import _core
from radam.gpu._device import GpuError
from radam.gpu._layout import HI, LO, STEP_WORDS, Layout

LIMITS = {
    "min-storage-buffer-offset-alignment": 16,  # 4 words
    "max-storage-buffer-binding-size": 64,
    "max-buffer-size": 1 << 20,
    "min-uniform-buffer-offset-alignment": 256,
}


def test_the_step_row_is_the_shaders():
    assert _core.STEP_FIELDS[LO] == "lo" and _core.STEP_FIELDS[HI] == "hi"
    assert STEP_WORDS == 20 and STEP_WORDS * 4 % 16 == 0


def test_groups_chunks_slots_and_dispatches():
    # Tensors of 5 and 3 elements in group 0 (m, v: 2 words each), 10 in group 1
    # (m, v, max_v: 3 words each); 64-byte bindings cut group 0 into chunks of 8
    # elements and group 1 into chunks of 4 (5 would not be a multiple of 4 words).
    layout = Layout([5, 3, 10], [0, 0, 1], [2, 3], 1, LIMITS)
    g0, g1 = layout.groups
    assert layout.offsets == [0, 5, 8]
    assert (g0.start, g0.size, g0.tensors, g0.words) == (0, 8, [0, 1], 2)
    assert (g1.start, g1.size, g1.tensors, g1.words) == (8, 10, [2], 3)
    assert (g0.state_start, g1.state_start) == (0, 16)
    assert g0.chunks == [(0, 8)] and g1.chunks == [(0, 4), (4, 4), (8, 2)]
    assert (layout.n_elements, layout.n_state_words) == (20, 48)
    # One slot per chunk, then one per tensor per chunk for norm clipping.
    # (slot, bind group, lo, hi, tensor, index in the tensor of element lo)
    assert [tuple(d) for d in g0.whole] == [(0, 0, 0, 8, -1, 0)]
    assert [tuple(d) for d in g1.whole] == [
        (1, 1, 0, 4, -1, 0), (2, 2, 0, 4, -1, 0), (3, 3, 0, 2, -1, 0)
    ]  # fmt: skip
    assert [tuple(d) for d in g0.per_tensor] == [(4, 0, 0, 5, 0, 0), (5, 0, 5, 8, 1, 0)]
    assert [tuple(d) for d in g1.per_tensor] == [
        (6, 1, 0, 4, 2, 0), (7, 2, 0, 4, 2, 4), (8, 3, 0, 2, 2, 8)
    ]  # fmt: skip
    assert (layout.whole_slots, layout.n_slots, layout.uniform_stride) == (4, 9, 256)
    uniforms = layout.uniforms()
    assert uniforms.shape == (9, 64) and uniforms.dtype == np.float32
    ranges = uniforms.view(np.uint32)
    assert [(int(r[LO]), int(r[HI])) for r in ranges] == [
        (0, 8), (0, 4), (0, 4), (0, 2), (0, 5), (5, 8), (0, 4), (0, 4), (0, 2)
    ]  # fmt: skip
    # Tensor 1's state: elements 5..8 of group 0, two values each, after tensor 0's.
    image = np.arange(48, dtype=np.float32)
    np.testing.assert_array_equal(layout.state_rows(1, image), [[10, 11], [12, 13], [14, 15]])
    np.testing.assert_array_equal(layout.state_rows(2, image)[0], [16, 17, 18])


def test_sixteen_bit_state_pads_to_whole_words():
    # Two values per word: m, v fill one; m, v, max_v take two (a half-word of padding).
    layout = Layout([4], [0], [3], 2, LIMITS)
    (g,) = layout.groups
    assert (g.slots, g.words) == (4, 2)
    image = np.arange(16, dtype=np.float16)
    np.testing.assert_array_equal(layout.state_rows(0, image)[1], [4, 5, 6, 7])


def test_limits_that_cannot_hold_the_tensors_are_errors():
    small = {**LIMITS, "max-storage-buffer-binding-size": 8}
    with pytest.raises(GpuError, match="binding limit"):
        Layout([5], [0], [4], 1, small)
    with pytest.raises(GpuError, match="max_buffer_size"):
        Layout([1 << 20], [0], [2], 1, LIMITS)
    # A lower binding limit (the tests' chunking switch) cuts finer.
    assert len(Layout([64], [0], [2], 1, LIMITS, max_binding=32).groups[0].chunks) == 16


def test_8_bit_state_lays_tensors_out_in_whole_blocks():
    # Group 0 keeps float32 state (a 10-element tensor), group 1 8-bit state (m, v:
    # records of 2 * 64 code words + 2 absmax words per 256-element block). Tensors 0
    # (300 elements) and 2 (600) each start on a block boundary: 2 + 3 blocks. 4 KiB
    # bindings hold 4 blocks of params (1 KiB each): chunks of 1024 elements.
    limits = {**LIMITS, "max-storage-buffer-binding-size": 4096}
    layout = Layout([300, 10, 600], [1, 0, 1], [2, 2], 1, limits, q8=[False, True])
    g0, g1 = layout.groups
    assert (g0.q8, g1.q8, g1.record) == (False, True, 130)
    assert layout.offsets == [12, 0, 524]
    assert (g1.start, g1.size, g1.state_start) == (12, 1280, 20)
    assert g1.chunks == [(0, 1024), (1024, 256)]
    assert (layout.n_elements, layout.n_state_words) == (1292, 672)
    # 8-bit state is stepped a tensor at a time, each dispatch from a block boundary.
    # The last field: the index in the tensor of element lo (stochastic rounding's).
    assert [tuple(d) for d in g1.per_tensor] == [
        (4, 1, 0, 300, 0, 0),
        (5, 1, 512, 1024, 2, 0),
        (6, 2, 0, 88, 2, 512),
    ]
    # Tensor 2's records: blocks 2..5 of group 1.
    image = np.arange(672, dtype=np.uint32)
    records = layout.block_records(2, image)
    assert records.shape == (3, 130) and records[0, 0] == 20 + 2 * 130
