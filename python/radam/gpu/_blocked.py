"""The GPU side of blocked state: the 8-bit format (``radam._formats.EIGHT_BIT``)
as adam.wgsl's ``adam_step_q8`` steps it. Its entry point and the maps uniform it
reads, the block record each block of a tensor's state takes in the state buffer,
and the upload and readback of the codes and absmax. The layout, the device and
the engine ask this module; none of them names the format.
"""

from __future__ import annotations

import re

import numpy as np

from .._engine import MASTER, TensorBuffers
from .._formats import EIGHT_BIT, StateFormat, q8_map

_FLOAT32, _UINT8 = np.dtype(np.float32), np.dtype(np.uint8)
# Elements per block (one absmax each), and code words per block of one state value
# (four codes to a u32), as adam.wgsl's Q8_BLOCK and Q8_LANES.
BLOCK = EIGHT_BIT.block
BLOCK_WORDS = BLOCK // 4
# The entry point that steps blocked state.
ENTRY_POINT = "adam_step_q8"


def group(wgsl: str) -> int:
    """The entry point's elements per workgroup: the blocks per workgroup that
    the shader's source ``wgsl`` declares, times the block."""
    return int(re.search(r"const Q8_GROUP_BLOCKS: u32 = (\d+)u;", wgsl)[1]) * BLOCK


def steps(fmt: StateFormat) -> bool:
    """Whether ``fmt`` is a blocked format the shader steps (with ``ENTRY_POINT``)."""
    return fmt.kind == EIGHT_BIT.kind


def record_words(moments: int) -> int:
    """The words of one block's record of ``moments`` state values: per state value
    its codes, then per state value its absmax."""
    return moments * (BLOCK_WORDS + 1)


def maps() -> np.ndarray:
    """The entry point's uniform ``Maps``: the signed and unsigned maps of the Rust
    core (``radam._formats.q8_map``), then each one's float32 midpoints, as float32
    words."""
    values = np.zeros((2, 256), _FLOAT32)
    mids = np.zeros((2, 256), _FLOAT32)
    for k, signed in enumerate((True, False)):
        values[k] = q8_map(signed)
        mids[k, :255] = (values[k, :-1] + values[k, 1:]) * np.float32(0.5)
    return np.concatenate([values.ravel(), mids.ravel()])


def moments(t: TensorBuffers) -> list[tuple[np.ndarray, np.ndarray]]:
    """A tensor's blocked state, checked against its format: (uint8 codes of the
    param's shape, float32 absmax of one per block) per moment, in the engines' order."""
    fmt = t.format
    codes_of, absmax_of = fmt.arrays
    blocks = fmt.blocks(t.param.size)
    pairs = []
    for name, codes in t.state.items():
        if name == MASTER or fmt.companion(name):
            continue
        scale = fmt.keys(name)[1]
        absmax = t.state.get(scale)
        if codes.dtype != codes_of.dtype or codes.shape != t.param.shape:
            raise TypeError(
                f"state{t.label}[{name!r}] has dtype {codes.dtype} and shape {codes.shape}; "
                f"8-bit state needs {codes_of.dtype} codes of the param's shape {t.param.shape}"
            )
        if absmax is None or absmax.dtype != absmax_of.dtype or absmax.shape != (blocks,):
            raise TypeError(
                f"state{t.label}[{scale!r}] must be a {absmax_of.dtype} array of shape "
                f"({blocks},), one absmax per block of {fmt.block} elements"
            )
        pairs.append((codes, absmax))
    return pairs


def record_pairs(
    records: np.ndarray, moments: list[tuple[np.ndarray, np.ndarray]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """A tensor's host arrays (``moments``: as :func:`moments`) beside their views in
    its block records (``records``: u32 words, one row per block): its codes, as the
    records' code words seen as uint8 (blocks, BLOCK), whose last block runs past the
    tensor (see :func:`to_blocks`), and its absmax, the records' absmax words seen as
    float32."""
    pairs = []
    k = len(moments)
    for j, (codes, absmax) in enumerate(moments):
        code_words = records[:, j * BLOCK_WORDS : (j + 1) * BLOCK_WORDS]
        pairs.append((codes, code_words.view(_UINT8)))
        pairs.append((absmax, records[:, k * BLOCK_WORDS + j].view(_FLOAT32)))
    return pairs


def to_blocks(codes: np.ndarray, blocks: tuple[int, ...]) -> np.ndarray:
    """A tensor's codes as whole blocks, of shape ``blocks`` (count, BLOCK): the
    codes past the tensor, in its last block, are 0."""
    padded = np.zeros(blocks, _UINT8)
    padded.reshape(-1)[: codes.size] = codes.reshape(-1)
    return padded


def from_blocks(view: np.ndarray, host: np.ndarray) -> np.ndarray:
    """The codes of a tensor of ``host``'s shape in ``view``, its whole blocks."""
    return view.reshape(-1)[: host.size].reshape(host.shape)
