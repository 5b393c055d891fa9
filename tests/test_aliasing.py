"""A grad that shares memory with anything the step writes is refused, whatever
object it comes through (issue 12, item 1).

rust-numpy's borrow checker sees only views of the same base object; the
step also compares byte ranges, as ``np.may_share_memory`` does (a strided
array counts from its lowest to its highest byte). Each refusal names the
grad and what it overlaps, and leaves every byte of params and state as it was.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import radam
from helpers import raises_named
from hypothesis import given, settings
from hypothesis import strategies as st
from radam._engine import TensorBuffers
from radam._options import engine_options


def _bytes(opt, params):
    """Every byte a failed step must leave alone, and the step count."""
    state = {k: {n: a.tobytes() for n, a in e.items()} for k, e in opt.state.items()}
    return [p.tobytes() for p in params], state, opt.step_count


def _ctypes_view(array, dtype=None, count=None, offset=0):
    """A new array over ``array``'s memory reached through ctypes (another base object)."""
    dtype = np.dtype(dtype or array.dtype)
    count = array.size if count is None else count
    raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(array.ctypes.data + offset)
    return np.frombuffer(raw, dtype)


def _stepped(n=8, dtype=np.float32, **options):
    w = np.linspace(-1, 1, n).astype(dtype)
    opt = radam.Adam([w], lr=0.1, amsgrad=True, **options)
    opt.step([np.ones(n, dtype)])
    return w, opt


VIEWS = {
    "as_strided": lambda a: np.lib.stride_tricks.as_strided(a),
    "frombuffer-memoryview": lambda a: np.frombuffer(memoryview(a), a.dtype).reshape(a.shape),
    "ctypes": lambda a: _ctypes_view(a).reshape(a.shape),
}


@pytest.mark.parametrize("view", VIEWS, ids=str)
def test_grad_through_another_object_aliasing_the_param_is_refused(view):
    # The reproductions: these passed the borrow checker.
    w, opt = _stepped()
    before = _bytes(opt, [w])
    with raises_named(ValueError, "grads[0]", "params[0]"):
        opt.step([VIEWS[view](w)])
    assert _bytes(opt, [w]) == before


@pytest.mark.parametrize("name", ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"])
@pytest.mark.parametrize("view", VIEWS, ids=str)
def test_grad_through_another_object_aliasing_state_is_refused(view, name):
    w, opt = _stepped()
    before = _bytes(opt, [w])
    with raises_named(ValueError, "grads[0]", f"state[0]['{name}']"):
        opt.step([VIEWS[view](opt.state[0][name])])
    assert _bytes(opt, [w]) == before


def test_grad_aliasing_another_tensors_state_names_it():
    params = {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)}
    opt = radam.Adam(params, lr=0.1)
    opt.step({"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)})
    before = _bytes(opt, list(params.values()))
    grads = {"a": np.ones(4, np.float32), "b": _ctypes_view(opt.state["a"]["exp_avg_sq"])}
    with raises_named(ValueError, "grads['b']", "state['a']['exp_avg_sq']"):
        opt.step(grads)
    assert _bytes(opt, list(params.values())) == before


def test_shifted_overlap_of_2_20_elements_is_refused():
    # The data race: a grad over the second half of one param and the
    # first half of the next (one buffer, two params), 2^20 elements shifted.
    n = 1 << 21
    buffer = np.zeros(2 * n, np.float32)
    a, b = buffer[:n], buffer[n:]
    opt = radam.Adam([a, b], lr=1e-3)
    opt.step([np.ones(n, np.float32), np.ones(n, np.float32)])
    before = _bytes(opt, [a, b])
    shifted = _ctypes_view(buffer, count=n, offset=(n // 2) * 4)
    with raises_named(ValueError, "grads[1]", "params[0]"):
        opt.step([np.ones(n, np.float32), shifted])
    assert _bytes(opt, [a, b]) == before


def test_strided_grad_counts_from_its_lowest_to_its_highest_byte():
    # A reversed grad starts at its highest address; a strided one skips bytes
    # but its extent covers them (as np.may_share_memory's bounds check does).
    buffer = np.zeros(40, np.float32)
    w = buffer[10:20]
    opt = radam.Adam([w], lr=0.1)
    for grad in (
        np.lib.stride_tricks.as_strided(_ctypes_view(buffer, count=1, offset=19 * 4), (10,), (-4,)),
        _ctypes_view(buffer, count=40)[1:40:4][:10],  # every 4th element from 1: passes through w
    ):
        assert np.may_share_memory(grad, w)
        with raises_named(ValueError, "grads[0]", "params[0]"):
            opt.step([grad])
    assert opt.step_count == 0 and not opt.state


def test_neighbouring_memory_is_not_refused():
    # Bytes next to a param, and a grad of 0 elements, share nothing with it.
    buffer = np.zeros(30, np.float32)
    w = buffer[10:20]
    opt = radam.Adam([w, np.zeros(0, np.float32)], lr=0.1)
    below = _ctypes_view(buffer, count=10).copy()  # a plain array for the reference
    opt.step([_ctypes_view(buffer, count=10), _ctypes_view(buffer, count=0, offset=60)])
    opt.step([_ctypes_view(buffer, count=10, offset=80), np.zeros(0, np.float32)])
    ref = np.zeros(10, np.float32)
    ref_opt = radam.Adam([ref], lr=0.1)
    ref_opt.step([below])
    ref_opt.step([np.zeros(10, np.float32)])
    np.testing.assert_array_equal(w, ref)
    np.testing.assert_array_equal(buffer[:10], 0)
    np.testing.assert_array_equal(buffer[20:], 0)


def test_a_param_that_moved_is_seen_at_its_new_address():
    # ndarray.resize can move a param's memory after the optimizer was built:
    # the bytes a step writes are taken anew, so a grad over the new memory is
    # refused (and one over the old, freed memory is not the param's any more).
    w = np.ones(8, np.float32)
    opt = radam.Adam([w, np.ones(3, np.float32)], lr=0.1)
    opt.step([np.ones(8, np.float32), np.ones(3, np.float32)])
    old = w.ctypes.data
    w.resize(1 << 22, refcheck=False)  # large enough to need a new allocation
    w.resize(8, refcheck=False)
    if w.ctypes.data == old:
        pytest.skip("the allocator kept the param in place")
    before = _bytes(opt, [w])
    with raises_named(ValueError, "grads[0]", "params[0]"):
        opt.step([_ctypes_view(w).reshape(8), np.ones(3, np.float32)])
    assert _bytes(opt, [w]) == before
    opt.step([np.ones(8, np.float32), np.ones(3, np.float32)])
    assert opt.step_count == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float16_and_master_copies_are_covered(dtype):
    import ml_dtypes

    w = np.ones(6, ml_dtypes.bfloat16)
    opt = radam.Adam([w, np.ones(2, dtype)], lr=0.1, master_weights=True)
    grads = [np.ones(6, ml_dtypes.bfloat16), np.ones(2, dtype)]
    opt.step(grads)
    before = _bytes(opt, [w])
    master = opt.state[0]["master_param"]
    grads[0] = _ctypes_view(master, ml_dtypes.bfloat16, 6, offset=4)
    with raises_named(ValueError, "grads[0]", "state[0]['master_param']"):
        opt.step(grads)
    assert _bytes(opt, [w]) == before


def test_write_arrays_that_overlap_are_refused_by_the_engine():
    # The optimizer never builds them (params are checked disjoint, state is its
    # own), but the engine checks its writes too, whatever object they come through.
    p = np.zeros(8, np.float32)
    state = np.zeros(16, np.float32)
    m, v = state[:8], _ctypes_view(state, count=8, offset=16)  # v starts inside m
    record = TensorBuffers("[0]", 0, p, {"exp_avg": m, "exp_avg_sq": v}, 0)
    engine = radam._core.CpuEngine([record])
    config = engine_options({**radam.Adam([np.ones(1)]).defaults}, "").config
    before = p.tobytes(), state.tobytes()
    with raises_named(ValueError, "state[0]['exp_avg_sq']", "state[0]['exp_avg']"):
        engine.step([np.ones(8, np.float32)], [config])
    assert (p.tobytes(), state.tobytes()) == before


def test_construction_refuses_params_overlapping_through_another_object():
    a = np.zeros(10, np.float32)
    with raises_named(ValueError, "params[1]", "params[0]"):
        radam.Adam([a, _ctypes_view(a, count=4, offset=8)])
    np.testing.assert_array_equal(a, 0)


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 63),
    strides=st.tuples(st.integers(-12, 12), st.integers(-3, 3)),
)
def test_refused_exactly_when_numpy_bounds_overlap(start, strides):
    """A random strided (2, 5) window over a buffer that holds a (2, 5) param
    at elements 20..29: refused exactly when np.may_share_memory (its bounds
    check) says the window meets the param."""
    arena = np.zeros(64, np.float32)
    w = arena[20:30].reshape(2, 5)
    opt = radam.Adam([w], lr=0.1)
    offsets = [start + i * strides[0] + j * strides[1] for i in range(2) for j in range(5)]
    if min(offsets) < 0 or max(offsets) >= arena.size:
        return  # the window would leave the buffer
    origin = _ctypes_view(arena, count=1, offset=start * 4)  # another base object
    grad = np.lib.stride_tricks.as_strided(origin, (2, 5), (strides[0] * 4, strides[1] * 4))
    before = _bytes(opt, [w]), arena.tobytes()
    if np.may_share_memory(grad, w):
        with raises_named(ValueError, "grads[0]", "params[0]"):
            opt.step([grad])
        assert (_bytes(opt, [w]), arena.tobytes()) == before
    else:
        expected = grad.copy()
        opt.step([grad])
        ref = np.zeros((2, 5), np.float32)
        radam.Adam([ref], lr=0.1).step([expected])
        np.testing.assert_array_equal(w, ref)
