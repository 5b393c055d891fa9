"""Zero copy: params and state are updated in place, through their own memory,
with no allocation proportional to the parameter size during a step."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
import radam
from helpers import assert_matches_reference
from reference import Options, RefAdam


def data_pointer(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_params_and_state_stay_in_place(dtype):
    rng = np.random.default_rng(0)
    p0 = [rng.standard_normal(s).astype(dtype) for s in [(100_003,), (7, 9), ()]]
    params = [p.copy() for p in p0]
    pointers = [data_pointer(p) for p in params]
    views = [p.reshape(-1) for p in params]  # views taken before any step
    opt = radam.Adam(params, lr=0.01, amsgrad=True)
    ref = RefAdam.create(p0, Options(lr=0.01, amsgrad=True))
    g = [np.asarray(rng.standard_normal(p.shape), dtype=dtype) for p in params]
    opt.step(g)
    ref.step(g)
    state_objects = {k: dict(v) for k, v in opt.state.items()}
    state_pointers = {k: {n: data_pointer(a) for n, a in v.items()} for k, v in opt.state.items()}
    for _ in range(5):
        g = [np.asarray(rng.standard_normal(p.shape), dtype=dtype) for p in params]
        opt.step(g)
        ref.step(g)
    for p, ptr, view, r in zip(params, pointers, views, ref.params):
        assert data_pointer(p) == ptr
        np.testing.assert_array_equal(view, p.reshape(-1))  # the views saw the update
        assert_matches_reference(p, r, steps=6, lr=0.01)
    for k, v in opt.state.items():
        for name, arr in v.items():
            assert arr is state_objects[k][name]
            assert data_pointer(arr) == state_pointers[k][name]
            assert arr.dtype == dtype and arr.flags.c_contiguous
    # The state arrays the user sees are the ones the kernel writes.
    for i, s in enumerate(ref.state):
        assert_matches_reference(opt.state[i]["exp_avg"], s.m, steps=6, lr=1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_no_allocation_near_parameter_size_during_a_step(dtype, amsgrad):
    n = 1_000_000
    params = [np.zeros(n, dtype=dtype), np.zeros(1000, dtype=dtype)]
    grads = [np.ones(n, dtype=dtype), np.ones(1000, dtype=dtype)]
    opt = radam.Adam(params, amsgrad=amsgrad)
    opt.step(grads)  # warm-up: creates the state
    gc.collect()
    param_bytes = params[0].nbytes
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for _ in range(3):
            opt.step(grads)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert opt.step_count == 4
    assert peak < param_bytes / 100, f"a step allocated {peak} bytes (param is {param_bytes})"


def test_tracemalloc_does_see_numpy_allocations():
    # The zero-copy test above relies on tracemalloc seeing NumPy's buffers.
    tracemalloc.start()
    try:
        a = np.empty(1_000_000, dtype=np.float32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak >= a.nbytes


def test_state_entries_cannot_be_replaced_only_updated_in_place():
    # The kernel keeps updating the arrays it was built with, so a replaced
    # array would silently fall out of the optimizer: replacing is refused.
    w = np.ones(4)
    opt = radam.Adam([w], lr=0.1)
    opt.step([np.ones(4)])
    with pytest.raises(TypeError):
        opt.state[0]["exp_avg"] = np.zeros(4)
    np.copyto(opt.state[0]["exp_avg"], 0.0)  # in place is the way, and it is seen
    opt.step([np.zeros(4)])
    assert np.all(opt.state[0]["exp_avg"] == 0.0)
