"""The state formats are declared once (radam._formats), and the rest asks the
declaration (issue 21, item 3): the option's choices, allocation, and the
engines, which dispatch on each record's declared format, never on a dtype.
A packed 4-bit format's codes would be uint8 too, so a format the engines have
no codec of is refused by name, with nothing written."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import radam
from radam import _core
from radam._engine import TensorBuffers
from radam._formats import BY_NAME, EIGHT_BIT, FLOAT32, StateArray, StateFormat
from radam._options import BY_NAME as OPTIONS
from radam._options import engine_options

# A format the engines have no codec of: uint8 codes like 8-bit state's, two to a byte.
PACKED4 = StateFormat(
    "4bit",
    "q4",
    (
        StateArray("", np.dtype(np.uint8), False, holds=""),
        StateArray("_absmax", np.dtype(np.float32), True),
    ),
    block=256,
)


def _config():
    return engine_options({**radam.Adam([np.ones(1)]).defaults}, "").config


def test_state_dtype_takes_the_declared_names():
    # float64 is a float64 param's own format, not a choice.
    declared = {f.name for f in BY_NAME.values()} - {"float64"}
    assert set(OPTIONS["state_dtype"].choices) == {None, *declared}


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16", "8bit"])
def test_allocation_follows_the_declaration(name):
    shapes = [(70, 100), (3, 5)]  # 7000 elements (8-bit if declared), 15 (under any minimum)
    params = [np.zeros(s, np.float32) for s in shapes]
    opt = radam.Adam(params, state_dtype=name, amsgrad=True)
    opt.step([np.zeros_like(p) for p in params])  # state appears at the first step
    for i, shape in enumerate(shapes):
        fmt = BY_NAME[name]
        if fmt.min_size and np.prod(shape) < fmt.min_size:
            fmt = BY_NAME[fmt.small]
        want = {}
        for buffer in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            for a in fmt.arrays:
                n = -(-int(np.prod(shape)) // fmt.block)
                want[buffer + a.suffix] = ((n,) if a.per_block else shape, a.dtype)
        got = {k: (v.shape, v.dtype) for k, v in opt.state[i].items()}
        assert got == want
    if name == "8bit":  # written out: 7000 elements are 28 blocks of 256
        assert opt.state[0]["exp_avg_absmax"].shape == (28,)
        assert opt.state[0]["exp_avg"].dtype == np.uint8
        assert opt.state[1]["exp_avg"].dtype == np.float32


def test_the_8_bit_declaration_is_the_codecs():
    assert EIGHT_BIT.block == _core.Q8_BLOCK == 256
    assert EIGHT_BIT.min_size == 4096 and BY_NAME[EIGHT_BIT.small] is FLOAT32
    codes, absmax = EIGHT_BIT.encode(np.full((3, 100), -2.0, np.float32), True)
    assert (codes.dtype, codes.shape, absmax.dtype, absmax.shape) == (
        np.uint8,
        (3, 100),
        np.float32,
        (2,),
    )
    np.testing.assert_array_equal(absmax, [2.0, 2.0])


def _q8_record(fmt=None):
    p = np.linspace(-1, 1, 300).astype(np.float32)
    state = {
        "exp_avg": np.zeros(300, np.uint8),
        "exp_avg_absmax": np.zeros(2, np.float32),
        "exp_avg_sq": np.zeros(300, np.uint8),
        "exp_avg_sq_absmax": np.zeros(2, np.float32),
    }
    return TensorBuffers("[0]", 0, p, state, 0, format=fmt)


def test_a_record_without_a_format_gets_its_states():
    assert _q8_record().format is EIGHT_BIT
    p = np.zeros(4, np.float32)
    record = TensorBuffers("[0]", 0, p, {"exp_avg": p.copy(), "exp_avg_sq": p.copy()}, 0)
    assert record.format is FLOAT32


def test_the_cpu_engine_steps_the_declared_format():
    record = _q8_record(EIGHT_BIT)
    engine = _core.CpuEngine([record])
    engine.step([np.ones(300, np.float32)], [_config()])
    assert (record.state["exp_avg_absmax"] > 0).all()


def test_uint8_arrays_declared_float32_are_not_taken_for_8_bit():
    record = _q8_record(FLOAT32)
    before = {k: a.tobytes() for k, a in record.state.items()}, record.param.tobytes()
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg_absmax'\].*no state of that name"):
        _core.CpuEngine([record])
    assert ({k: a.tobytes() for k, a in record.state.items()}, record.param.tobytes()) == before


def test_a_format_without_a_cpu_codec_is_refused_by_name():
    with pytest.raises(ValueError, match=r"state\[0\]: format 4bit has storage kind \"q4\""):
        _core.CpuEngine([_q8_record(PACKED4)])


def test_a_format_without_a_gpu_codec_is_refused_by_name():
    pytest.importorskip("wgpu")
    from radam.gpu._engine import GpuEngine

    with pytest.raises(TypeError, match=r"state\[0\]: device='gpu' has no codec of 4bit"):
        GpuEngine([_q8_record(PACKED4)])


def test_a_plain_format_is_one_array_per_buffer():
    for fmt in BY_NAME.values():
        assert fmt.plain == (fmt.kind == "plain")
        assert dataclasses.replace(fmt).shapes(["m"], (2, 3)) == fmt.shapes(["m"], (2, 3))
