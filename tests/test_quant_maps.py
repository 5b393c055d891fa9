"""The 8-bit state building blocks against bitsandbytes and a NumPy reference.

radam's maps must be bitsandbytes' ``create_dynamic_map`` bit for bit, its
blockwise codes must decode the same through bitsandbytes' ``dequantize_blockwise``
(and bitsandbytes' codes through radam), and where the two encoders choose
different codes, every difference must be explained by the rule each one
follows. radam follows the rule of bitsandbytes' CUDA kernels: the nearest code,
judged against the float32 midpoint of each neighbouring pair, ties to the even
code. bitsandbytes 0.50's CPU ``quantize_blockwise`` instead rounds
``y = x / absmax`` to one of 65536 bins over [-1, 1] and takes the code a
precomputed table holds for the bin, and writes code 0 for a block of zeros.

The tests that need bitsandbytes skip without it (it is never a dependency of
radam); the NumPy-reference tests always run.
"""

from __future__ import annotations

import numpy as np
import pytest
from radam import _core

BLOCK = 256
BNB_REASON = (
    "bitsandbytes and torch are not installed here (they are never dependencies of "
    "radam); these tests run in an environment that has them"
)


def _bnb():
    try:
        import bitsandbytes.functional as bnb_functional
        import torch
    except ImportError:
        pytest.skip(BNB_REASON)
    return bnb_functional, torch


def midpoints(values):
    """The float32 midpoints of neighbouring codes, as bitsandbytes computes them."""
    return ((values[:-1] + values[1:]) * np.float32(0.5)).astype(np.float32)


def reference_codes(values, y):
    """The nearest code to each y: past every midpoint below it, and past one
    equal to it when the upper code of that pair is even."""
    mids = midpoints(values)
    below = np.searchsorted(mids, y, side="left")
    tie = (below < 255) & (mids[np.minimum(below, 254)] == y) & ((below + 1) % 2 == 0)
    return (below + tie).astype(np.uint8)


def reference_encode(values, x):
    """Blockwise codes and absmax, from the rules alone."""
    zero = int(np.flatnonzero(values == 0)[0])
    codes, absmax = np.empty(x.size, np.uint8), []
    for start in range(0, x.size, BLOCK):
        block = x[start : start + BLOCK]
        infinite = np.isinf(block)
        if np.isnan(block).any():
            codes[start : start + block.size], a = zero, np.float32(np.nan)
        elif infinite.any():
            # Kept: absmax negated (the largest finite |x|), +inf at code 255, -inf
            # at code 0, the finite values' codes kept off those.
            c, a = reference_encode(values, np.where(infinite, np.float32(0), block))
            c = np.clip(c, 1 if zero == 127 else 0, 254)
            c[infinite] = np.where(block[infinite] > 0, 255, 0)
            codes[start : start + block.size], a = c, -a[0]
        elif not block.any():
            codes[start : start + block.size], a = zero, np.float32(0)
        else:
            a = np.abs(block).max()
            codes[start : start + block.size] = reference_codes(values, block * (np.float32(1) / a))
        absmax.append(a)
    return codes, np.array(absmax, np.float32)


def sample(signed, n=16 * BLOCK + 77, seed=0):
    """Blocks of very different scales, a block of zeros, and values on code boundaries."""
    rng = np.random.default_rng(seed)
    scales = np.repeat(10.0 ** rng.uniform(-8, 3, n // BLOCK + 1), BLOCK)[:n]
    x = (rng.standard_normal(n) * scales).astype(np.float32)
    x[BLOCK : 2 * BLOCK] = 0
    values = _core._q8_map(signed)
    boundary = np.concatenate([midpoints(values), values])
    boundary = np.concatenate([boundary, np.nextafter(boundary, np.float32(2))])
    x[2 * BLOCK : 2 * BLOCK + BLOCK - 1] = rng.choice(boundary, BLOCK - 1)
    x[3 * BLOCK - 1] = 1.0  # absmax 1 in that block: y is the boundary value itself
    return x if signed else np.abs(x)


def bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("signed", [True, False])
def test_encode_and_decode_follow_the_reference(signed):
    values = _core._q8_map(signed)
    x = sample(signed)
    x[5 * BLOCK + 3] = np.nan  # poisons its block only
    codes, absmax = _core._q8_encode(x, signed)
    want_codes, want_absmax = reference_encode(values, x)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(bits(absmax), bits(want_absmax))
    decoded = _core._q8_decode(codes, absmax, signed)
    np.testing.assert_array_equal(
        bits(decoded), bits(values[codes] * np.repeat(absmax, BLOCK)[: x.size])
    )
    assert np.isnan(decoded[5 * BLOCK : 6 * BLOCK]).all()
    assert np.isfinite(np.delete(decoded, np.s_[5 * BLOCK : 6 * BLOCK])).all()


def test_bad_arguments_are_errors_naming_them():
    with pytest.raises(ValueError, match="absmax"):
        _core._q8_decode(np.zeros(300, np.uint8), np.ones(1, np.float32), True)
    with pytest.raises(ValueError, match="level"):
        _core._q8_encode(np.ones(3, np.float32), True, level="sse9")
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        _core._q8_encode(np.ones(6, np.float32)[::2], True)


@pytest.mark.parametrize("signed", [True, False])
def test_maps_are_bitsandbytes_maps_bit_for_bit(signed):
    bnb, _ = _bnb()
    theirs = bnb.create_dynamic_map(signed=signed).numpy()
    np.testing.assert_array_equal(bits(_core._q8_map(signed)), bits(theirs))


def bnb_cpu_codes(values, x, absmax):
    """bitsandbytes 0.50's CPU rule, transcribed: y = x * (1 / absmax) in float32,
    bin = uint16(((clamp(y) + 1) * 0.5) * 65535 + 0.5) (the last step fused or
    not, as the compiler may contract it: both are returned), and the code its
    table holds for the bin: the first whose midpoint is not below the bin's
    value -1 + 2 * bin / 65535; code 0 in blocks of zeros."""
    f32 = np.float32
    mids = midpoints(values)
    grid = (f32(-1) + (f32(2) * np.arange(65536, dtype=f32)) / f32(65535)).astype(f32)
    table = np.searchsorted(mids, grid, side="left").astype(np.uint8)
    scale = np.repeat(absmax, BLOCK)[: x.size]
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.clip(x * (f32(1) / scale), f32(-1), f32(1)).astype(f32)
    half = ((y + f32(1)) * f32(0.5)).astype(f32)
    unfused = (half * f32(65535)).astype(f32) + f32(0.5)
    fused = (half.astype(np.float64) * 65535 + 0.5).astype(f32)
    out = []
    for t in (unfused, fused):
        codes = table[np.nan_to_num(t, nan=0).astype(np.uint16)]
        codes[scale == 0] = 0
        out.append(codes)
    return out


@pytest.mark.parametrize("signed", [True, False])
def test_codes_interchange_with_bitsandbytes_and_the_flips_are_explained(signed):
    bnb, torch = _bnb()
    code = bnb.create_dynamic_map(signed=signed)
    values = code.numpy()
    x = sample(signed, seed=3)

    ours, absmax = _core._q8_encode(x, signed)
    theirs, state = bnb.quantize_blockwise(torch.from_numpy(x), code=code, blocksize=BLOCK)
    theirs, their_absmax = theirs.numpy(), state.absmax.numpy()
    np.testing.assert_array_equal(bits(absmax), bits(their_absmax))

    # Each side decodes the other's codes to the same bits as the other does.
    bnb_decodes_ours = bnb.dequantize_blockwise(
        torch.from_numpy(ours), absmax=torch.from_numpy(absmax), code=code, blocksize=BLOCK
    ).numpy()
    np.testing.assert_array_equal(
        bits(bnb_decodes_ours), bits(_core._q8_decode(ours, absmax, signed))
    )
    bnb_decodes_theirs = bnb.dequantize_blockwise(
        torch.from_numpy(theirs), absmax=state.absmax, code=code, blocksize=BLOCK
    ).numpy()
    np.testing.assert_array_equal(
        bits(_core._q8_decode(theirs, absmax, signed)), bits(bnb_decodes_theirs)
    )

    # The flips: ours follow the nearest rule, bitsandbytes' CPU codes its bin table.
    np.testing.assert_array_equal(ours, reference_encode(values, x)[0])
    candidates = bnb_cpu_codes(values, x, absmax)
    assert any((theirs == c).all() for c in candidates), (
        "bitsandbytes' CPU rule is not the one transcribed"
    )
    flips = np.flatnonzero(ours != theirs)
    zero_blocks = np.repeat(absmax == 0, BLOCK)[: x.size]
    by_zero_block = zero_blocks[flips].sum()
    by_bins = flips.size - by_zero_block
    print(
        f"signed={signed}: {flips.size} of {x.size} codes differ from bitsandbytes' CPU encoder: "
        f"{by_zero_block} in a block of zeros (code 0 there, decoded to {values[0] * 0}), "
        f"{by_bins} where its 65536-bin table picks another code"
    )
    assert by_zero_block == (BLOCK if signed else 0)  # unsigned: code 0 is the code of 0
    assert by_bins > 0  # small |y| share a bin 3e-5 wide, where the codes are 1e-6 apart

    # Where they differ outside blocks of zeros, ours is the nearer code, up to
    # the rounding of the float32 midpoint both rules compare with (an ulp of y).
    flips = flips[~zero_blocks[flips]]
    y = x[flips] * (np.float32(1) / np.repeat(absmax, BLOCK)[: x.size][flips])
    ours_err = np.abs(y.astype(np.float64) - values[ours[flips]])
    theirs_err = np.abs(y.astype(np.float64) - values[theirs[flips]])
    assert (ours_err <= theirs_err + np.spacing(np.abs(y))).all()
    scale = np.repeat(absmax, BLOCK)[: x.size]
    squared_error = [
        ((values[c] * scale - x).astype(np.float64) ** 2).sum() for c in (ours, theirs)
    ]
    assert squared_error[0] <= squared_error[1]
