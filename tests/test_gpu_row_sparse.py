"""Row-sparse (lazy) steps on device="gpu" (adam.wgsl's adam_step_rows): against the
CPU's row-sparse step, against the GPU's own dense step of the coalesced gradient
(bit for bit), untouched rows and their state bit for bit, and the refusals."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import radam
from helpers import assert_unchanged, raises_named, snapshot
from radam import RowSparse
from test_gpu import assert_close

ROWS, ROW = 40, (3, 4)


def _table(seed=0, dtype=np.float32, rows=ROWS):
    return np.random.default_rng(seed).standard_normal((rows, *ROW)).astype(dtype)


def _batch(rng, k, dtype=np.float32, rows=ROWS):
    """k indices over half the rows (so some rows are never named, some repeat)."""
    indices = rng.integers(0, rows // 2, k) * 2
    return indices, rng.standard_normal((k, *ROW)).astype(dtype)


def _state(opt):
    return [{n: a.copy() for n, a in opt.state[k].items()} for k in opt.state]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"amsgrad": True, "weight_decay": 0.1, "decoupled_weight_decay": True},
        {"weight_decay": 0.01, "max_gradient_norm": 0.5, "maximize": True},
        {"efficient_form": True},
        {"state_dtype": "bfloat16"},
        {"state_dtype": "float16", "momentum": 0.9},
    ],
    ids=["plain", "amsgrad-decoupled", "l2-norm-max", "efficient", "bf16-state", "f16-momentum"],
)
def test_matches_the_cpu_row_sparse_step(adapter, options):
    rng = np.random.default_rng(1)
    start, other = _table(), rng.standard_normal(5).astype(np.float32)
    params = {d: {"table": start.copy(), "other": other.copy()} for d in ("cpu", "gpu")}
    opts = {d: radam.Adam(params[d], lr=1e-2, device=d, **options) for d in params}
    # A dense step first, so every row's state is nonzero before the lazy steps.
    for d in opts:
        opts[d].step({"table": np.ones_like(start), "other": np.ones_like(other)})
    opts["gpu"].sync()
    after_dense = params["gpu"]["table"].copy(), _state(opts["gpu"])
    for _ in range(3):
        indices, values = _batch(rng, 12)
        dense = rng.standard_normal(5).astype(np.float32)
        for d in opts:
            opts[d].step({"table": RowSparse(indices, values.copy()), "other": dense})
    opts["gpu"].sync()
    for name in ("table", "other"):
        assert_close(params["gpu"][name], params["cpu"][name], f"params[{name!r}]")
        for k, a in opts["cpu"].state[name].items():
            assert_close(opts["gpu"].state[name][k].astype(np.float64), a.astype(np.float64), k)
    # The odd rows were never named: they and their state are as the dense step left them.
    table, state = params["gpu"]["table"], opts["gpu"].state["table"]
    assert table[1::2].tobytes() == after_dense[0][1::2].tobytes()
    for k, a in state.items():
        assert a[1::2].tobytes() == after_dense[1][0][k][1::2].tobytes(), k
    assert not np.array_equal(table[0::2], after_dense[0][0::2])


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, "bfloat16"])
def test_naming_rows_is_the_dense_gpu_step_of_the_summed_rows_bit_for_bit(
    adapter, monkeypatch, chunked, dtype
):
    """Every row named (shuffled; float32: some several times): the dense GPU step
    of the values summed in the order given, in float32, bit for bit (bfloat16 values
    are named once each: their float32 sums are no bfloat16 dense grad); chunked:
    the table spans several bindings."""
    from radam import gpu

    if chunked:
        monkeypatch.setattr(gpu._engine, "_MAX_BINDING_BYTES", 1024)
    dtype = np.dtype(dtype) if dtype == np.float32 else np.dtype(ml_dtypes.bfloat16)
    rng = np.random.default_rng(2)
    repeats = rng.integers(0, ROWS, 30 if dtype == np.float32 else 0)
    indices = rng.permutation(np.r_[np.arange(ROWS), repeats])
    values = rng.standard_normal((len(indices), *ROW)).astype(dtype)
    summed = np.zeros((ROWS, *ROW), np.float32)
    seen = np.zeros(ROWS, bool)
    for r, v in zip(indices, values.astype(np.float32)):
        summed[r] = summed[r] + v if seen[r] else v
        seen[r] = True
    sparse, dense = _table(3, dtype), _table(3, dtype)
    rounding = {"stochastic_rounding": dtype != np.float32}  # keyed by index in the tensor
    opts = [
        radam.Adam([p], lr=1e-2, amsgrad=True, device="gpu", **rounding) for p in (sparse, dense)
    ]
    for _ in range(2):
        opts[0].step([RowSparse(indices, values)])
        opts[1].step([summed.astype(dtype)])
    for o in opts:
        o.sync()
    assert sparse.tobytes() == dense.tobytes()
    for k in opts[1].state[0]:
        assert opts[0].state[0][k].tobytes() == opts[1].state[0][k].tobytes(), k


def test_an_empty_row_sparse_grad_counts_a_step_and_changes_nothing_else(adapter):
    table, twin = _table(), _table()
    opt = radam.Adam([table], device="gpu")
    ref = radam.Adam([twin], device="cpu")
    empty = RowSparse(np.zeros(0, np.int64), np.zeros((0, *ROW), np.float32))
    for o in (opt, ref):
        o.step([empty])
    opt.sync()
    assert table.tobytes() == _table().tobytes()
    indices, values = _batch(np.random.default_rng(4), 6)
    for o in (opt, ref):
        o.step([RowSparse(indices, values)])  # bias corrected for step 2 on both
    opt.sync()
    assert_close(table, twin, "params")


def test_a_row_sparse_step_after_device_grads_brings_the_whole_table_back(adapter):
    from radam import gpu

    table, twin = _table(), _table()
    opt = radam.Adam([table], device="gpu")
    ref = radam.Adam([twin], device="cpu")
    grad = np.ones_like(table)
    opt.step([gpu.DeviceArray.from_numpy(grad)])  # nothing read back
    ref.step([grad])
    indices, values = _batch(np.random.default_rng(5), 6)
    for o in (opt, ref):
        o.step([RowSparse(indices, values)])
    assert_close(table, twin, "params")  # no sync: the step read it all back


def test_skip_nonfinite_skips_a_step_whose_rows_or_their_sum_are_not_finite(adapter):
    opt, table, other = _gpu_fresh(skip_nonfinite=True)
    big = np.full((2, 4), 3e38, np.float32)  # finite, but their sum overflows
    for values, indices in ((np.array([[np.nan] * 4], np.float32), [1]), (big, [2, 2])):
        before = snapshot(opt)
        opt.step({"table": RowSparse(indices, values), "other": np.ones_like(other)})
        opt.sync()
        assert_unchanged(opt, before)
    opt.step({"table": RowSparse([2, 3], np.ones((2, 4), np.float32)), "other": other * 0})
    opt.sync()
    assert opt.step_count == 2 and table[2:4].tobytes() != before["params"][0][2:4].tobytes()


def _gpu_fresh(**options):
    table = np.arange(24, dtype=np.float32).reshape(6, 4)
    other = np.ones(3, np.float32)
    opt = radam.Adam({"table": table, "other": other}, device="gpu", **options)
    opt.step({"table": np.ones_like(table), "other": np.ones_like(other)})
    opt.sync()
    return opt, table, other


def _refused(opt, other, grad, exc, *names):
    before = snapshot(opt)
    with raises_named(exc, *names):
        opt.step({"table": grad, "other": np.ones_like(other)})
    opt.sync()
    assert_unchanged(opt, before)


def test_bad_row_sparse_grads_are_refused_and_change_nothing(adapter):
    opt, table, other = _gpu_fresh()
    ones = np.ones((2, 4), np.float32)
    _refused(opt, other, RowSparse([1, 6], ones), IndexError, "grads['table'].indices[1]", "6")
    _refused(opt, other, RowSparse([1, 2], np.ones((2, 4))), TypeError, "values", "float64")
    _refused(opt, other, RowSparse([1, 2], np.ones((2, 5), np.float32)), ValueError, "values")
    _refused(opt, other, RowSparse([0, 1], table[2:4]), ValueError, "values", "shares memory")
    state = opt.state["table"]["exp_avg"]
    _refused(opt, other, RowSparse([0], state[:1]), ValueError, "values", "shares memory")
    before = snapshot(opt)
    with raises_named(ValueError, "grads['other']", "two or more dimensions"):
        opt.step({"table": np.ones_like(table), "other": RowSparse([0], np.ones((1, 1)))})
    opt.sync()
    assert_unchanged(opt, before)


def test_eight_bit_state_refuses_row_sparse_grads_on_the_gpu(adapter):
    table = np.ones((64, 256), np.float32)  # large enough to keep 8-bit state
    opt = radam.Adam([table], state_dtype="8bit", device="gpu")
    opt.step([np.ones_like(table)])
    opt.sync()
    assert opt.state[0]["exp_avg"].dtype == np.uint8
    before = snapshot(opt)
    with raises_named(TypeError, "grads[0]", "RowSparse", "8-bit", "device='cpu'"):
        opt.step([RowSparse([1], np.ones((1, 256), np.float32))])
    opt.sync()
    assert_unchanged(opt, before)
