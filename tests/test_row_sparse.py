"""Row-sparse (lazy) steps: ``radam.RowSparse(indices, values)`` as a grad.

Checked against a NumPy lazy Adam written from docs/formulas.md
(tests/row_sparse_reference.py), against ``torch.optim.SparseAdam`` where torch is
installed, against the dense step (a RowSparse naming every row once is the dense
step, bit for bit, in every storage format), and by a property test that the rows
not named, and their state, never change. Each bad input is a clear error that
leaves everything as it was.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import radam
from helpers import assert_unchanged, f64_tolerance, raises_named, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st
from radam import RowSparse
from row_sparse_reference import LazyAdam, LazyOptions

BF16 = np.dtype(ml_dtypes.bfloat16)


def _torch():
    """torch, or a skip: a missing torch (or one that cannot load) is not a failure."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - a CUDA build without its libraries raises others
        pytest.skip(f"torch is not usable here ({type(e).__name__}); pip install torch")
    return torch


def _batch(rng, rows: int, k: int, shape: tuple[int, ...], dtype=np.float64):
    """k indices (repeats likely) and their values."""
    indices = rng.integers(0, rows, size=k)
    values = rng.standard_normal((k, *shape)).astype(dtype)
    return indices, values


OPTION_SETS = {
    "algorithm-1": {},
    "efficient-form": {"efficient_form": True},
    "amsgrad": {"amsgrad": True},
    "l2": {"weight_decay": 0.1},
    "decoupled": {"weight_decay": 0.1, "decoupled_weight_decay": True},
    "maximize": {"maximize": True},
    "grad-scale": {"grad_scale": 1024.0},
    "elem-clip": {"max_gradient_elem": 0.5, "grad_scale": 4.0},
    "norm-clip": {"max_gradient_norm": 0.7, "grad_scale": 4.0},
}


@pytest.mark.parametrize("name", OPTION_SETS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_the_lazy_reference(name, dtype):
    rng = np.random.default_rng(1)
    options = OPTION_SETS[name]
    table = rng.standard_normal((40, 3, 2)).astype(dtype)
    reference = LazyAdam(table, LazyOptions(lr=0.01, **options))
    opt = radam.Adam([table], lr=0.01, **options)
    for _ in range(6):
        indices, values = _batch(rng, 40, 12, (3, 2), dtype)
        opt.step([RowSparse(indices, values)])
        reference.step(indices, values)
    state = opt.state[0]
    if dtype == np.float64:
        for got, want in [(table, reference.p), (state["exp_avg"], reference.m)]:
            np.testing.assert_allclose(got, want, **f64_tolerance(want))
        np.testing.assert_allclose(state["exp_avg_sq"], reference.v, rtol=1e-12, atol=0)
    else:
        # float32: a few roundings per step of lr-sized moves.
        np.testing.assert_allclose(table, reference.p, rtol=0, atol=1e-5)
        np.testing.assert_allclose(state["exp_avg"], reference.m, rtol=1e-5, atol=1e-6)


def test_an_lr_schedule_is_called_once_per_step_and_applies_to_the_named_rows():
    rng = np.random.default_rng(2)
    table = rng.standard_normal((20, 4))
    reference = LazyAdam(table, LazyOptions())
    opt = radam.Adam([table], lr=lambda count: 0.1 / (count + 1))  # count: steps taken
    for t in range(1, 5):
        indices, values = _batch(rng, 20, 5, (4,))
        opt.step([RowSparse(indices, values)])
        reference.step(indices, values, lr=0.1 / t)
    np.testing.assert_allclose(table, reference.p, **f64_tolerance(reference.p))


def test_bias_corrections_count_the_steps_that_give_the_table_a_grad():
    """torch's SparseAdam rule: the table's count advances only when it gets a grad
    (a None grad skips it), while a dense tensor beside it counts its own steps."""
    rng = np.random.default_rng(9)
    table, dense = rng.standard_normal((20, 3)), rng.standard_normal(4)
    reference = LazyAdam(table, LazyOptions(lr=0.1))
    dense_reference = LazyAdam(dense[None], LazyOptions(lr=0.1))
    opt = radam.Adam([table, dense], lr=0.1)
    for has_grad in [True, False, False, True, True]:
        g_dense = rng.standard_normal(4)
        indices, values = _batch(rng, 20, 6, (3,))
        opt.step([RowSparse(indices, values) if has_grad else None, g_dense])
        if has_grad:
            reference.step(indices, values)
        dense_reference.step(np.array([0]), g_dense[None])
    assert opt.tensor_step_counts == [3, 5]
    np.testing.assert_allclose(table, reference.p, **f64_tolerance(reference.p))
    np.testing.assert_allclose(dense, dense_reference.p[0], **f64_tolerance(dense))


def test_an_empty_row_sparse_grad_counts_a_step_and_changes_nothing_else():
    table = np.ones((3, 2))
    opt = radam.Adam([table])
    opt.step([RowSparse([], np.ones((0, 2)))])
    assert opt.tensor_step_counts == [1]
    assert (table == 1).all()
    assert not opt.state[0]["exp_avg"].any()


def test_repeated_rows_are_summed_before_the_step():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 3))
    b = a.copy()
    values = rng.standard_normal((4, 3))
    opt_a, opt_b = radam.Adam([a]), radam.Adam([b])
    opt_a.step([RowSparse([2, 0, 2, 2], values)])
    summed = np.stack([values[0] + values[2] + values[3], values[1]])
    opt_b.step([RowSparse([2, 0], summed)])
    np.testing.assert_array_equal(a, b)
    for name in opt_a.state[0]:
        np.testing.assert_array_equal(opt_a.state[0][name], opt_b.state[0][name])


STORAGE = {
    "float32": ({}, np.float32),
    "float64": ({}, np.float64),
    "bfloat16-params": ({}, BF16),
    "float16-params": ({}, np.float16),
    "bfloat16-master": ({"master_weights": True}, BF16),
    "bfloat16-state": ({"state_dtype": "bfloat16"}, np.float32),
    "float16-state": ({"state_dtype": "float16"}, np.float32),
    "8bit-state": ({"state_dtype": "8bit"}, np.float32),
    "stochastic-rounding": ({"stochastic_rounding": True, "rounding_seed": 7}, BF16),
    "amsgrad-momentum": ({"amsgrad": True, "momentum": 0.5, "nesterov": True}, np.float32),
    "adamax": ({"algorithm": "adamax"}, np.float32),
}


def _optimizer(options, table):
    """The optimizer of STORAGE's ``options`` (its "algorithm" picks the class) over ``table``."""
    options = dict(options)
    cls = radam.Adamax if options.pop("algorithm", None) == "adamax" else radam.Adam
    return cls([table], lr=0.01, **options)


def _pair(options, dtype, shape, seed=4):
    """Two optimizers over equal tables (and the tables)."""
    rng = np.random.default_rng(seed)
    start = rng.standard_normal(shape).astype(dtype)
    a, b = start.copy(), start.copy()
    return _optimizer(options, a), _optimizer(options, b), a, b, rng


@pytest.mark.parametrize("name", STORAGE)
def test_naming_every_row_once_is_the_dense_step_bit_for_bit(name):
    """Every storage format steps a named row as the dense step steps its elements:
    rows permuted, over a table large enough for the step to use the threads."""
    options, dtype = STORAGE[name]
    rows, row = 700, (2, 128)  # 179200 elements: past SERIAL_MAX; whole 8-bit blocks
    dense, lazy, a, b, rng = _pair(options, dtype, (rows, *row))
    for _ in range(3):
        grad = rng.standard_normal((rows, *row)).astype(dtype)
        order = rng.permutation(rows)
        dense.step([grad])
        lazy.step([RowSparse(order, grad[order].copy())])
    assert a.tobytes() == b.tobytes()
    for key in dense.state[0]:
        assert dense.state[0][key].tobytes() == lazy.state[0][key].tobytes(), key


@pytest.mark.parametrize("name", [n for n in STORAGE if n != "stochastic-rounding"])
def test_the_named_rows_step_as_a_dense_table_of_just_those_rows(name):
    """A lazy step of some rows equals the dense step of a table holding only those
    rows (and their state): each row is stepped on its own. (Stochastic rounding
    draws by the element's index in its tensor: it is compared with all rows above.)"""
    options, dtype = STORAGE[name]
    rows, row = (64, 256)  # 8-bit state: one block per row, so one absmax per row
    lazy, _, table, _, rng = _pair(options, dtype, (rows, row))
    chosen = np.sort(rng.choice(rows, 20, replace=False))
    small = table[chosen].copy()
    dense = _optimizer(options, small)
    for _ in range(3):
        grad = rng.standard_normal((20, row)).astype(dtype)
        lazy.step([RowSparse(chosen, grad)])
        dense.step([grad])
    assert table[chosen].tobytes() == small.tobytes()
    for key, full in lazy.state[0].items():
        assert full[chosen].tobytes() == dense.state[0][key].tobytes(), key


@pytest.mark.parametrize("variant", ["nadam", "radam", "momentum", "downhill"])
def test_other_rules_step_the_named_rows_lazily(variant):
    """Every rule runs lazily: the named rows as a dense table of those rows."""
    cls, options = {
        "nadam": (radam.NAdam, {}),
        "radam": (radam.RAdam, {}),
        "momentum": (radam.Adam, {"momentum": 0.9}),
        "downhill": (radam.Adam, {"bias_correction": "downhill-0.4.0", "beta1_decay": 0.99}),
    }[variant]
    rng = np.random.default_rng(5)
    table = rng.standard_normal((30, 8))
    chosen = np.array([3, 4, 17, 29])
    small = table[chosen].copy()
    lazy, dense = cls([table], **options), cls([small], **options)
    for _ in range(8):
        grad = rng.standard_normal((4, 8))
        lazy.step([RowSparse(chosen, grad)])
        dense.step([grad])
    np.testing.assert_array_equal(table[chosen], small)


def test_matches_torch_sparse_adam():
    torch = _torch()
    rng = np.random.default_rng(6)
    start = rng.standard_normal((50, 6))
    table = start.copy()
    opt = radam.Adam([table], lr=0.05, betas=(0.8, 0.99), eps=1e-6, efficient_form=True)
    weight = torch.tensor(start, requires_grad=True)
    torch_opt = torch.optim.SparseAdam([weight], lr=0.05, betas=(0.8, 0.99), eps=1e-6)
    for step in range(10):
        if step in (3, 4):  # no grad: neither steps, nor counts the step
            opt.step([None])
            weight.grad = None
            torch_opt.step()
            continue
        indices, values = _batch(rng, 50, 20, (6,))  # repeats: torch coalesces them
        opt.step([RowSparse(indices, values)])
        weight.grad = torch.sparse_coo_tensor(
            torch.tensor(indices)[None], torch.tensor(values), (50, 6), check_invariants=True
        )
        torch_opt.step()
    want = weight.detach().numpy()
    np.testing.assert_allclose(table, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    state = torch_opt.state[weight]
    np.testing.assert_allclose(opt.state[0]["exp_avg"], state["exp_avg"].numpy(), atol=1e-14)


def test_dense_and_row_sparse_grads_mix_in_one_step():
    rng = np.random.default_rng(7)
    table, bias = rng.standard_normal((10, 3)), rng.standard_normal(3).astype(np.float32)
    small = rng.standard_normal((5, 3)).astype(np.float32)
    small_start = small.copy()
    ref_table = LazyAdam(table, LazyOptions())
    opt = radam.Adam({"table": table, "bias": bias, "small": small})
    dense = radam.Adam([bias.copy(), small.copy()])
    for _ in range(3):
        g_bias, g_small = rng.standard_normal(3).astype(np.float32), rng.standard_normal((5, 3))
        indices, values = _batch(rng, 10, 4, (3,))
        rows = RowSparse([1, 1], g_small[[1, 1]].astype(np.float32))
        opt.step({"table": RowSparse(indices, values), "bias": g_bias, "small": rows})
        ref_table.step(indices, values)
        full = np.zeros((5, 3), np.float32)
        full[1] = g_small[1].astype(np.float32) * 2
        dense.step([g_bias, full])
    np.testing.assert_allclose(table, ref_table.p, **f64_tolerance(ref_table.p))
    dense_bias, dense_small = dense.param_groups[0]["params"]
    np.testing.assert_array_equal(bias, dense_bias)
    np.testing.assert_array_equal(small[1], dense_small[1])
    np.testing.assert_array_equal(small[[0, 2, 3, 4]], small_start[[0, 2, 3, 4]])


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 30),
    row=st.sampled_from([(1,), (3,), (2, 5), (17,)]),
    steps=st.lists(st.lists(st.integers(0, 29), max_size=12), min_size=1, max_size=4),
    options=st.sampled_from(
        [{}, {"amsgrad": True}, {"momentum": 0.5}, {"state_dtype": "bfloat16"}]
        + [{"weight_decay": 0.1, "decoupled_weight_decay": True}, {"max_gradient_norm": 0.1}]
    ),
    dtype=st.sampled_from([np.float32, np.float64, np.float16]),
)
def test_untouched_rows_and_their_state_never_change(rows, row, steps, options, dtype):
    if dtype == np.float64 and "state_dtype" in options:
        options = {}
    rng = np.random.default_rng(rows)
    table = rng.standard_normal((rows, *row)).astype(dtype)
    opt = radam.Adam([table], lr=0.1, **options)
    opt.step([rng.standard_normal(table.shape).astype(dtype)])  # every row has state
    for named in steps:
        indices = np.array([i % rows for i in named], dtype=np.int64)
        before = [table.copy(), {k: v.copy() for k, v in opt.state[0].items()}]
        values = rng.standard_normal((len(indices), *row)).astype(dtype)
        opt.step([RowSparse(indices, values)])
        untouched = np.setdiff1d(np.arange(rows), indices)
        assert table[untouched].tobytes() == before[0][untouched].tobytes()
        for key, array in opt.state[0].items():
            assert array[untouched].tobytes() == before[1][key][untouched].tobytes(), key
        if len(indices):
            moved = opt.state[0]["exp_avg"][indices]
            assert not np.array_equal(moved, before[1]["exp_avg"][indices])


def test_state_dicts_and_checkpoints_keep_the_dense_state(tmp_path):
    rng = np.random.default_rng(8)
    table = rng.standard_normal((12, 4)).astype(np.float32)
    opt = radam.Adam([table], lr=0.1)
    opt.step([RowSparse([1, 5], rng.standard_normal((2, 4)).astype(np.float32))])
    saved = opt.state_dict()
    assert saved["state"][0]["exp_avg"].shape == (12, 4)
    copy = table.copy()
    resumed = radam.Adam([copy], lr=0.1)
    resumed.load_state_dict(saved)
    path = tmp_path / "opt.npz"
    opt.save(path)
    loaded_table = table.copy()
    loaded = radam.Adam([loaded_table], lr=0.1)
    loaded.load(path)
    grad = RowSparse([5, 7], rng.standard_normal((2, 4)).astype(np.float32))
    for o in (opt, resumed, loaded):
        o.step([grad])
    assert copy.tobytes() == table.tobytes() == loaded_table.tobytes()


def test_skip_nonfinite_skips_a_step_whose_named_rows_hold_a_nan_or_overflow():
    table = np.ones((4, 2), np.float32)
    opt = radam.Adam([table], skip_nonfinite=True)
    opt.step([np.ones((4, 2), np.float32)])
    before = snapshot(opt)
    opt.step([RowSparse([2], np.array([[np.nan, 1]], np.float32))])
    big = np.full((2, 2), 3e38, np.float32)  # each finite, their sum not
    opt.step([RowSparse([1, 1], big)])
    assert_unchanged(opt, before)
    assert opt.skipped_steps == 2


# -- bad input: a clear error naming the argument, and nothing changed --------------


def _fresh(dtype=np.float32, **options):
    table = np.arange(24, dtype=dtype).reshape(6, 4)
    other = np.ones(3, dtype=dtype)
    opt = radam.Adam({"table": table, "other": other}, **options)
    opt.step({"table": np.ones_like(table), "other": np.ones_like(other)})
    return opt, table, other


def _refused(opt, other, grad, exc, *names):
    before = snapshot(opt)
    with raises_named(exc, *names):
        opt.step({"table": grad, "other": np.ones_like(other)})
    assert_unchanged(opt, before)


def test_an_index_out_of_range_is_refused():
    opt, table, other = _fresh()
    values = np.ones((2, 4), np.float32)
    _refused(opt, other, RowSparse([1, 6], values), IndexError, "grads['table'].indices[1]", "6")


@pytest.mark.parametrize(
    "indices, exc, names",
    [
        ([1, -1], IndexError, ("indices[1]", "-1")),
        ([1.0, 2.0], TypeError, ("indices", "integers")),
        ([[1, 2]], ValueError, ("indices", "1-D")),
        ([True, False], TypeError, ("indices", "integers")),
        (np.array([2**63], dtype=np.uint64), IndexError, ("indices[0]",)),
    ],
)
def test_bad_indices_are_refused_when_the_row_sparse_grad_is_made(indices, exc, names):
    with raises_named(exc, *names):
        RowSparse(indices, np.ones((2, 4), np.float32))


@pytest.mark.parametrize(
    "values, exc, names",
    [
        (np.ones((2, 3), np.float32), ValueError, ("grads['table'].values", "(2, 4)")),
        (np.ones((2, 4), np.float64), TypeError, ("grads['table'].values", "float64")),
    ],
)
def test_values_of_the_wrong_shape_or_dtype_are_refused(values, exc, names):
    opt, table, other = _fresh()
    _refused(opt, other, RowSparse([0, 3], values), exc, *names)


def test_values_not_one_row_per_index_or_not_an_array_are_refused():
    with raises_named(ValueError, "values", "one row per index"):
        RowSparse([0, 1, 2], np.ones((2, 4)))
    with raises_named(TypeError, "values", "list"):
        RowSparse([0, 1], [[1.0] * 4] * 2)


def test_values_aliasing_the_param_or_its_state_are_refused():
    opt, table, other = _fresh()
    _refused(opt, other, RowSparse([0, 1], table[2:4]), ValueError, "values", "params['table']")
    state = opt.state["table"]["exp_avg"]
    _refused(opt, other, RowSparse([0], state[:1]), ValueError, "values", "exp_avg")


def test_a_row_sparse_grad_of_a_one_dimensional_param_is_refused():
    opt, table, other = _fresh()
    before = snapshot(opt)
    with raises_named(ValueError, "grads['other']", "two or more dimensions"):
        opt.step({"table": np.ones_like(table), "other": RowSparse([0], np.ones((1, 1)))})
    assert_unchanged(opt, before)


def test_eight_bit_state_needs_rows_of_whole_blocks():
    table = np.zeros((64, 100), np.float32)  # 6400 elements: 8-bit state, rows of 100
    opt = radam.Adam([table], state_dtype="8bit")
    opt.step([np.ones_like(table)])
    before = snapshot(opt)
    with raises_named(ValueError, "state_dtype='8bit'", "100 elements", "params[0]"):
        opt.step([RowSparse([3], np.ones((1, 100), np.float32))])
    assert_unchanged(opt, before)


def test_sharded_optimizers_refuse_row_sparse_grads(mpi):
    from radam.distributed import ShardedAdam

    table = np.ones((8, 4), np.float32)
    opt = ShardedAdam([table])
    before = table.copy()
    with raises_named(TypeError, "grads[0]", "RowSparse", "dense"):
        opt.step([RowSparse([1], np.ones((1, 4), np.float32))])
    assert table.tobytes() == before.tobytes()


# -- radam.torch.SparseAdam ------------------------------------------------------------


def _embeddings(torch, n=2):
    torch.manual_seed(0)
    first = torch.nn.Embedding(30, 5, sparse=True).double()
    others = [torch.nn.Embedding(30, 5, sparse=True).double() for _ in range(n - 1)]
    for e in others:
        e.load_state_dict(first.state_dict())
    return [first, *others]


def _step_alike(pairs, rows) -> None:
    """One step of each (embedding, optimizer) pair on the same rows (None: no grad)."""
    for module, opt in pairs:
        opt.zero_grad(set_to_none=True)
        if rows is not None:
            module(rows).pow(2).sum().backward()
        opt.step()


def test_radam_torch_sparse_adam_matches_torch_sparse_adam():
    torch = _torch()
    from radam.torch import SparseAdam

    ours, theirs = _embeddings(torch)
    opt = SparseAdam(ours.parameters(), lr=0.05, betas=(0.8, 0.99))
    torch_opt = torch.optim.SparseAdam(theirs.parameters(), lr=0.05, betas=(0.8, 0.99))

    def assert_equal() -> None:
        want = theirs.weight.detach().numpy()
        np.testing.assert_allclose(ours.weight.detach().numpy(), want, rtol=1e-12, atol=1e-14)

    for step in range(8):
        # Repeats in the rows: the embedding's grad holds them. No grad at step 3:
        # neither optimizer steps nor counts it.
        rows = torch.randint(0, 30, (12,)) if step != 3 else None
        _step_alike([(ours, opt), (theirs, torch_opt)], rows)
    assert_equal()
    # The state dicts interchange: torch's optimizer continues from radam's state,
    resumed = torch.optim.SparseAdam(theirs.parameters(), lr=0.05, betas=(0.8, 0.99))
    resumed.load_state_dict(opt.state_dict())
    assert opt.state_dict()["state"][0]["step"] == 7  # an int, as torch's SparseAdam keeps
    _step_alike([(ours, opt), (theirs, resumed)], torch.tensor([1, 1, 4]))
    assert_equal()
    # and radam's from torch's.
    again = SparseAdam(ours.parameters(), lr=0.05, betas=(0.8, 0.99))
    again.load_state_dict(resumed.state_dict())
    _step_alike([(ours, again), (theirs, resumed)], torch.tensor([2, 4]))
    assert_equal()


def test_radam_torch_sparse_adam_refuses_a_dense_grad_and_changes_nothing():
    torch = _torch()
    from radam.torch import SparseAdam

    (emb,) = _embeddings(torch, 1)
    opt = SparseAdam(emb.parameters())
    before = emb.weight.detach().clone()
    emb.weight.grad = torch.ones_like(emb.weight)
    with raises_named(TypeError, "['params'][0]", "strided", "radam.torch.Adam"):
        opt.step()
    assert torch.equal(emb.weight.detach(), before)
