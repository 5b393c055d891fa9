"""radam.Adam against the plain NumPy reference (tests/reference.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import radam
from helpers import assert_matches_reference, f64_tolerance
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import Options, RefAdam

STEPS = 200
OPTION_COMBOS = [
    {"weight_decay": wd, "decoupled_weight_decay": dec, "amsgrad": ams, "maximize": mx}
    for wd, dec, ams, mx in itertools.product(
        [0.0, 0.1], [False, True], [False, True], [False, True]
    )
]


def combo_id(c):
    return "wd{weight_decay}-dec{decoupled_weight_decay:d}-ams{amsgrad:d}-max{maximize:d}".format(
        **c
    )


def grad_like(rng, p, scale=None):
    """A random gradient with the param's shape and dtype, at a scale that varies
    by step (tiny, unit, large) so that v's history matters; a few exact zeros."""
    if scale is None:
        scale = rng.choice([1e-3, 1.0, 100.0])
    g = rng.standard_normal(p.shape) * scale
    if g.size > 4:
        g.reshape(-1)[:: max(1, g.size // 3)] = 0.0
    return np.asarray(g, dtype=p.dtype)


def run_pair(params, opt, ref, rng, steps, make_grads=None):
    for _ in range(steps):
        grads = [grad_like(rng, p) for p in params] if make_grads is None else make_grads()
        opt.step(grads)
        ref.step(grads)


def check_state_f64(opt, ref, keys):
    for key, s in zip(keys, ref.state):
        st_ = opt.state[key]
        np.testing.assert_allclose(st_["exp_avg"], s.m, **f64_tolerance(s.m))
        np.testing.assert_allclose(st_["exp_avg_sq"], s.v, **f64_tolerance(s.v))
        if "max_exp_avg_sq" in st_:
            np.testing.assert_allclose(st_["max_exp_avg_sq"], s.v_max, **f64_tolerance(s.v_max))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", OPTION_COMBOS, ids=combo_id)
@pytest.mark.parametrize("lr", [1e-3, 3e-2])
def test_every_option_combination_200_steps(dtype, options, lr):
    rng = np.random.default_rng(1234)
    p0 = [rng.standard_normal(n).astype(dtype) for n in (1003, 17)]
    params = [p.copy() for p in p0]
    opt = radam.Adam(params, lr=lr, **options)
    ref = RefAdam.create(p0, Options(lr=lr, **options))
    run_pair(params, opt, ref, rng, STEPS)
    assert opt.step_count == STEPS
    for p, r, q0 in zip(params, ref.params, p0):
        assert p.dtype == dtype
        assert_matches_reference(p, r, steps=STEPS, lr=lr, p0=q0)
        # The params really moved: the comparison is not between two unchanged arrays.
        assert np.abs(p.astype(np.float64) - q0).max() > 10 * lr
    if dtype == np.float64:
        check_state_f64(opt, ref, [0, 1])
    assert ("max_exp_avg_sq" in opt.state[0]) == options["amsgrad"]


SHAPES = [(), (1,), (17,), (1000,), (100003,), (7, 33), (3, 5, 129)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(
    "options",
    [{}, {"weight_decay": 0.05, "amsgrad": True, "maximize": True}],
    ids=["default", "l2-ams-max"],
)
def test_shapes(dtype, shape, options):
    rng = np.random.default_rng(len(shape) * 1000 + int(np.prod(shape)))
    p0 = rng.standard_normal(shape).astype(dtype)
    p = p0.copy()
    lr = 1e-2
    opt = radam.Adam([p], lr=lr, **options)
    ref = RefAdam.create([p0], Options(lr=lr, **options))
    run_pair([p], opt, ref, rng, STEPS)
    assert p.shape == shape
    assert_matches_reference(p, ref.params[0], steps=STEPS, lr=lr, p0=p0)
    assert not np.array_equal(p, p0)


@pytest.mark.parametrize("shape", [(0,), (3, 0)])
def test_empty_tensor_beside_others_is_a_no_op(shape):
    rng = np.random.default_rng(5)
    empty, full = np.zeros(shape), rng.standard_normal(5)
    f0 = full.copy()
    opt = radam.Adam([empty, full], lr=0.1)
    ref = RefAdam.create([f0], Options(lr=0.1))
    for _ in range(3):
        g = rng.standard_normal(5)
        opt.step([np.zeros(shape), g])
        ref.step([g])
    assert empty.shape == shape
    assert_matches_reference(full, ref.params[0], steps=3, lr=0.1)


def test_multi_tensor_list_mixed_dtypes_and_sizes():
    rng = np.random.default_rng(7)
    shapes = [(1,), (17,), (70001,), (4, 4), (), (2, 3, 5)]
    dtypes = [np.float32, np.float64, np.float32, np.float64, np.float32, np.float64]
    p0 = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    params = [p.copy() for p in p0]
    opt = radam.Adam(params, lr=5e-3, weight_decay=0.01, amsgrad=True)
    ref = RefAdam.create(p0, Options(lr=5e-3, weight_decay=0.01, amsgrad=True))
    run_pair(params, opt, ref, rng, 50)
    for p, r, q in zip(params, ref.params, p0):
        assert_matches_reference(p, r, steps=50, lr=5e-3, p0=q)


def test_param_groups_with_their_own_options():
    rng = np.random.default_rng(8)
    a0, b0, c0 = rng.standard_normal(33), rng.standard_normal((4, 5)), rng.standard_normal(9)
    a, b, c = a0.copy(), b0.copy(), c0.copy().astype(np.float32)
    groups = [
        {"params": [a, b], "lr": 0.02, "betas": (0.8, 0.99)},
        {"params": [c], "betas": [0.5, 0.9], "eps": 1e-6, "amsgrad": True, "weight_decay": 0.1},
    ]
    opt = radam.Adam(groups, lr=1e-3, decoupled_weight_decay=True)
    g0 = Options(lr=0.02, betas=(0.8, 0.99), decoupled_weight_decay=True)
    g1 = Options(
        lr=1e-3,
        betas=(0.5, 0.9),
        eps=1e-6,
        amsgrad=True,
        weight_decay=0.1,
        decoupled_weight_decay=True,
    )
    ref = RefAdam.create([a0, b0, c0.astype(np.float32)], [g0, g0, g1])
    assert opt.param_groups[0]["lr"] == 0.02 and opt.param_groups[1]["lr"] == 1e-3
    assert tuple(opt.param_groups[1]["betas"]) == (0.5, 0.9)

    # Flat grads for the first half, nested (one list per group) for the rest.
    def flat():
        return [grad_like(rng, x) for x in (a, b, c)]

    for i in range(100):
        grads = flat()
        opt.step(grads if i < 50 else [grads[:2], grads[2:]])
        ref.step(grads)
    for p, r in zip((a, b, c), ref.params):
        assert_matches_reference(p, r, steps=100, lr=0.02)
    assert "max_exp_avg_sq" in opt.state[2] and "max_exp_avg_sq" not in opt.state[0]


def test_changing_group_lr_between_steps_takes_effect():
    rng = np.random.default_rng(9)
    p0 = rng.standard_normal(10)
    p = p0.copy()
    opt = radam.Adam([p], lr=0.1)
    ref = RefAdam.create([p0], Options(lr=0.1))
    for i in range(20):
        lr = 0.1 / (1 + i)
        opt.param_groups[0]["lr"] = lr
        ref.options[0].lr = lr
        g = rng.standard_normal(10)
        opt.step([g])
        ref.step([g])
    assert_matches_reference(p, ref.params[0], steps=20, lr=0.1)


def test_dict_params_and_dict_grads():
    rng = np.random.default_rng(10)
    p0 = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4).astype(np.float32)}
    params = {k: v.copy() for k, v in p0.items()}
    opt = radam.Adam(params, lr=0.01, maximize=True)
    ref = RefAdam.create([p0["w"], p0["b"]], Options(lr=0.01, maximize=True))
    for _ in range(30):
        grads = {k: grad_like(rng, v) for k, v in params.items()}
        # a dict in another key order works: grads are matched by name
        opt.step(dict(reversed(list(grads.items()))))
        ref.step([grads["w"], grads["b"]])
    assert set(opt.state) == {"w", "b"}
    assert_matches_reference(params["w"], ref.params[0], steps=30, lr=0.01)
    assert_matches_reference(params["b"], ref.params[1], steps=30, lr=0.01)


def test_group_dicts_with_dict_params_and_nested_grads():
    rng = np.random.default_rng(11)
    x0, y0, z0 = rng.standard_normal(6), rng.standard_normal(7), rng.standard_normal(8)
    x, y, z = x0.copy(), y0.copy(), z0.copy()
    opt = radam.Adam(
        [{"params": {"x": x, "y": y}, "lr": 0.05}, {"params": [z], "betas": (0.0, 0.5)}], lr=0.01
    )
    ref = RefAdam.create(
        [x0, y0, z0], [Options(lr=0.05), Options(lr=0.05), Options(lr=0.01, betas=(0.0, 0.5))]
    )
    for _ in range(25):
        gx, gy, gz = (grad_like(rng, v) for v in (x, y, z))
        opt.step([{"y": gy, "x": gx}, [gz]])
        ref.step([gx, gy, gz])
    for p, r in zip((x, y, z), ref.params):
        assert_matches_reference(p, r, steps=25, lr=0.05)


def test_one_param_per_group_nested_grads_are_not_taken_as_flat():
    # With as many groups as params, [[g0], [g1]] has the length of a flat list:
    # it must still be read as nested.
    a, b = np.ones(2), np.ones(3)
    opt = radam.Adam([{"params": [a]}, {"params": [b], "lr": 0.1}], lr=0.01)
    opt.step([[np.ones(2)], [np.ones(3)]])
    ref = RefAdam.create([np.ones(2), np.ones(3)], [Options(lr=0.01), Options(lr=0.1)])
    ref.step([np.ones(2), np.ones(3)])
    assert_matches_reference(a, ref.params[0], steps=1, lr=0.01)
    assert_matches_reference(b, ref.params[1], steps=1, lr=0.1)


def test_grouped_all_named_params_accept_a_flat_dict_of_grads():
    x0, y0 = np.arange(3.0), np.arange(4.0)
    x, y = x0.copy(), y0.copy()
    opt = radam.Adam([{"params": {"x": x}}, {"params": {"y": y}, "lr": 0.1}], lr=0.01)
    ref = RefAdam.create([x0, y0], [Options(lr=0.01), Options(lr=0.1)])
    gx, gy = np.full(3, 0.5), np.full(4, -2.0)
    opt.step({"y": gy, "x": gx})
    ref.step([gx, gy])
    assert_matches_reference(x, ref.params[0], steps=1, lr=0.01)
    assert_matches_reference(y, ref.params[1], steps=1, lr=0.1)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("maximize", [False, True])
def test_adamw_is_adam_with_decoupled_decay_and_torch_defaults(amsgrad, maximize):
    rng = np.random.default_rng(12)
    p0 = rng.standard_normal(257).astype(np.float32)
    pw, pa = p0.copy(), p0.copy()
    w = radam.AdamW([pw], amsgrad=amsgrad, maximize=maximize)
    a = radam.Adam(
        [pa], weight_decay=1e-2, decoupled_weight_decay=True, amsgrad=amsgrad, maximize=maximize
    )
    group = w.param_groups[0]
    # torch.optim.AdamW's defaults
    assert group["lr"] == 1e-3 and tuple(group["betas"]) == (0.9, 0.999)
    assert group["eps"] == 1e-8 and group["weight_decay"] == 1e-2
    assert group["decoupled_weight_decay"] is True
    ref = RefAdam.create(
        [p0],
        Options(weight_decay=1e-2, decoupled_weight_decay=True, amsgrad=amsgrad, maximize=maximize),
    )
    for _ in range(100):
        g = grad_like(rng, p0)
        w.step([g])
        a.step([g])
        ref.step([g])
    np.testing.assert_array_equal(pw, pa)
    assert_matches_reference(pw, ref.params[0], steps=100, lr=1e-3, p0=p0)


def test_adam_defaults_are_torchs():
    opt = radam.Adam([np.zeros(2)])
    g = opt.param_groups[0]
    assert (g["lr"], tuple(g["betas"]), g["eps"], g["weight_decay"]) == (
        1e-3,
        (0.9, 0.999),
        1e-8,
        0.0,
    )
    assert not g["decoupled_weight_decay"] and not g["amsgrad"] and not g["maximize"]


def test_non_contiguous_grad_is_accepted_and_matches_reference():
    rng = np.random.default_rng(13)
    p0 = rng.standard_normal((5, 7)).astype(np.float32)
    p = p0.copy()
    opt = radam.Adam([p], lr=0.01)
    ref = RefAdam.create([p0], Options(lr=0.01))
    for i in range(10):
        big = rng.standard_normal((10, 14)).astype(np.float32)
        # strided, transposed and Fortran-ordered grads, in turn
        g = [big[::2, ::2], big[:7, :5].T, np.asfortranarray(big[:5, :7])][i % 3]
        assert not g.flags.c_contiguous
        opt.step([g])
        ref.step([g])
    assert_matches_reference(p, ref.params[0], steps=10, lr=0.01, p0=p0)


@st.composite
def cases(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shapes = draw(
        st.lists(
            st.lists(st.integers(0, 9), min_size=0, max_size=3).map(tuple), min_size=1, max_size=3
        )
    )
    beta1 = draw(st.floats(0.0, 0.95))
    options = {
        "lr": draw(st.floats(1e-4, 0.3)),
        # beta1 <= beta2 keeps |m_hat| / sqrt(v_hat) bounded, as the f32 tolerance assumes
        # (with beta2 = 0 and L2 decay a gradient can cancel to ~0 and amplify rounding).
        "betas": (beta1, draw(st.floats(max(beta1, 0.5), 0.9999))),
        "eps": draw(st.sampled_from([0.0, 1e-8, 1e-3])),
        "weight_decay": draw(st.sampled_from([0.0, 1e-3, 0.5])),
        "decoupled_weight_decay": draw(st.booleans()),
        "amsgrad": draw(st.booleans()),
        "maximize": draw(st.booleans()),
    }
    steps = draw(st.integers(1, 25))
    seed = draw(st.integers(0, 2**32 - 1))
    return dtype, shapes, options, steps, seed


@settings(max_examples=60, deadline=None)
@given(cases())
def test_random_shapes_and_options_match_reference(case):
    dtype, shapes, options, steps, seed = case
    rng = np.random.default_rng(seed)
    p0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    params = [p.copy() for p in p0]
    opt = radam.Adam(params, **options)
    ref = RefAdam.create(p0, Options(**options))
    for _ in range(steps):
        # eps may be 0: keep every gradient element away from 0 so v > 0
        grads = [
            np.asarray(
                np.sign(rng.standard_normal(p.shape)) * rng.uniform(0.1, 2.0, p.shape), dtype=dtype
            )
            for p in params
        ]
        opt.step(grads)
        ref.step(grads)
    for p, r, q in zip(params, ref.params, p0):
        assert_matches_reference(p, r, steps=steps, lr=options["lr"], p0=q)
