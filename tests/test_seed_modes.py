"""radam.Adam's seed-system options and radam.Adamax against docs/formulas.md references.

Float64 runs of 200 steps must agree with tests/seed_reference.py to 1e-12
relative. Gradients are fixed random draws (independent of the params), large
enough that the clipping options bite, and params start far from 0 so a
relative comparison is meaningful.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import radam
from seed_reference import SeedAdam, SeedAdamax, halflife_beta

STEPS = 200
SHAPES = [(7, 5), (33,), (1,)]


def _problem(seed: int = 0, dtype=np.float64, scale: float = 3.0, steps: int = STEPS):
    rng = np.random.default_rng(seed)
    params = [rng.uniform(4.0, 6.0, size=s).astype(dtype) for s in SHAPES]
    grads = [[(scale * rng.standard_normal(s)).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return params, grads


def _run_both(options: dict, ref_options: dict | None = None, steps: int = STEPS, seed: int = 0):
    params, grads = _problem(seed, steps=steps)
    ref = SeedAdam([p.copy() for p in params], **(ref_options or options))
    opt = radam.Adam(params, **options)
    for g in grads:
        opt.step(g)
        ref.step(g)
    return params, opt, ref


def _assert_close(actual, expected, rtol=1e-12):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=0)


HALF_LIFE_BETAS = (halflife_beta(7), halflife_beta(69))

MODES = {
    "algorithm1-halflife-betas": dict(lr=1e-3, betas=HALF_LIFE_BETAS, eps=1e-8),
    "algorithm1-beta1-decay": dict(lr=1e-3, beta1_decay=0.99),
    "downhill-0.4.0-default-lambda": dict(
        lr=1e-3, betas=HALF_LIFE_BETAS, beta1_decay=1 - 1e-6, bias_correction="downhill-0.4.0"
    ),
    "downhill-0.4.0-strong-lambda": dict(
        lr=1e-3, betas=HALF_LIFE_BETAS, beta1_decay=0.98, bias_correction="downhill-0.4.0"
    ),
    "efficient-form": dict(lr=1e-3, efficient_form=True),
    "efficient-form-large-eps": dict(lr=1e-3, eps=1e-1, efficient_form=True),
    "efficient-form-beta1-decay": dict(lr=1e-3, efficient_form=True, beta1_decay=0.99),
    "puzzlelib": dict(lr=1e-3, efficient_form=True, maximize=True),
    "momentum": dict(lr=1e-3, momentum=0.9),
    "nesterov": dict(lr=1e-3, momentum=0.9, nesterov=True),
    "nesterov-zero-momentum": dict(lr=1e-3, nesterov=True),
    "momentum-downhill-0.4.0": dict(
        lr=1e-4,
        betas=HALF_LIFE_BETAS,
        beta1_decay=1 - 1e-6,
        bias_correction="downhill-0.4.0",
        momentum=0.5,
        nesterov=True,
    ),
    "clip-elem": dict(lr=1e-3, max_gradient_elem=1.0),
    "clip-norm": dict(lr=1e-3, max_gradient_norm=2.0),
    "clip-norm-inactive": dict(lr=1e-3, max_gradient_norm=1e6),
    "clip-both-elem-wins": dict(lr=1e-3, max_gradient_elem=0.5, max_gradient_norm=2.0),
    "clip-with-momentum": dict(lr=1e-3, max_gradient_norm=2.0, momentum=0.9, nesterov=True),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_mode_matches_reference_float64(mode):
    params, opt, ref = _run_both(MODES[mode])
    _assert_close(params, ref.params)
    for i in range(len(SHAPES)):
        # with maximize both keep the moment of the negated gradient, as torch does
        np.testing.assert_allclose(opt.state[i]["exp_avg"], ref.m[i], rtol=1e-12)
        np.testing.assert_allclose(opt.state[i]["exp_avg_sq"], ref.v[i], rtol=1e-12)


@pytest.mark.parametrize("mode", ["momentum", "nesterov", "nesterov-zero-momentum"])
def test_velocity_state_matches_reference(mode):
    _, opt, ref = _run_both(MODES[mode])
    for i in range(len(SHAPES)):
        np.testing.assert_allclose(opt.state[i]["velocity"], ref.vel[i], rtol=1e-12, atol=1e-300)


def test_no_velocity_without_momentum():
    _, opt, _ = _run_both(MODES["efficient-form"], steps=3)
    assert "velocity" not in opt.state[0]


@pytest.mark.parametrize(
    "mode", ["downhill-0.4.0-strong-lambda", "nesterov", "clip-both-elem-wins"]
)
def test_mode_float32_follows_reference(mode):
    params, grads = _problem(1, dtype=np.float32, steps=50)
    ref = SeedAdam([p.copy() for p in params], **MODES[mode])
    opt = radam.Adam(params, **MODES[mode])
    for g in grads:
        opt.step(g)
        ref.step(g)
    for p, e in zip(params, ref.params):
        assert p.dtype == np.float32
        np.testing.assert_allclose(p, e, rtol=2e-5)


def test_each_option_changes_the_trajectory():
    """Each option really reaches the kernel: its run differs from plain Adam's."""
    base, _, _ = _run_both({"lr": 1e-3, "eps": 1e-1}, steps=20)
    for options in (
        {"efficient_form": True},
        {"beta1_decay": 0.9},
        {"bias_correction": "downhill-0.4.0"},
        {"momentum": 0.5},
        {"nesterov": True, "momentum": 0.5},
        {"max_gradient_elem": 1.0},
        {"max_gradient_norm": 2.0},
    ):
        params, _, _ = _run_both({"lr": 1e-3, "eps": 1e-1, **options}, steps=20)
        assert any(not np.array_equal(a, b) for a, b in zip(params, base)), options


def test_norm_clipping_is_per_tensor():
    """Only the tensor whose own norm exceeds the limit is rescaled."""
    small = np.full(4, 5.0)
    large = np.full(4, 5.0)
    opt = radam.Adam([small, large], lr=1e-2, max_gradient_norm=1.0, efficient_form=True)
    ref = SeedAdam(
        [small.copy(), large.copy()], lr=1e-2, max_gradient_norm=1.0, efficient_form=True
    )
    grads = [np.full(4, 0.1), np.full(4, 10.0)]  # norms 0.2 and 20
    for _ in range(5):
        opt.step(grads)
        ref.step(grads)
    _assert_close([small, large], ref.params)
    # Second moments: the small tensor saw its raw gradient, the large one a rescaled one.
    assert opt.state[0]["exp_avg_sq"][0] == pytest.approx(0.01 * (1 - 0.999**5), rel=1e-12)
    assert opt.state[1]["exp_avg_sq"][0] == pytest.approx(0.25 * (1 - 0.999**5), rel=1e-12)


def test_halflife_helpers():
    assert radam.halflife_to_beta(7) == pytest.approx(2 ** (-1 / 7), rel=1e-15)
    assert radam.halflife_to_beta(69) == pytest.approx(0.990005, abs=1e-6)
    assert radam.halflife_to_beta(7) == pytest.approx(0.905724, abs=1e-6)
    for h in (0.5, 1.0, 7.0, 69.0, 1e4):
        assert radam.beta_to_halflife(radam.halflife_to_beta(h)) == pytest.approx(h, rel=1e-12)
    assert radam.beta_to_halflife(0.5) == pytest.approx(1.0, rel=1e-15)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_halflife_to_beta_rejects_bad_halflife(bad):
    with pytest.raises(ValueError):
        radam.halflife_to_beta(bad)


@pytest.mark.parametrize(
    "options, name",
    [
        ({"bias_correction": "downhill"}, "bias_correction"),
        ({"momentum": -0.1}, "momentum"),
        ({"momentum": 1.0}, "momentum"),
        ({"beta1_decay": 0.0}, "beta1_decay"),
        ({"beta1_decay": 1.5}, "beta1_decay"),
        ({"max_gradient_elem": -1.0}, "max_gradient_elem"),
        ({"max_gradient_norm": math.nan}, "max_gradient_norm"),
        ({"efficient_form": "yes"}, "efficient_form"),
        ({"nesterov": 2}, "nesterov"),
    ],
)
def test_bad_seed_option_is_named(options, name):
    w = np.ones(3)
    with pytest.raises((TypeError, ValueError), match=name):
        radam.Adam([w], **options)
    opt = radam.Adam([w])
    opt.step([np.ones(3)])
    before = (w.copy(), opt.state[0]["exp_avg"].copy())
    opt.param_groups[0].update(options)
    with pytest.raises((TypeError, ValueError), match=name):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(w, before[0])
    np.testing.assert_array_equal(opt.state[0]["exp_avg"], before[1])


def test_momentum_state_dict_resume_is_exact():
    params, grads = _problem(2, steps=40)
    options = dict(lr=1e-3, momentum=0.9, nesterov=True, max_gradient_norm=2.0)
    straight = [p.copy() for p in params]
    opt = radam.Adam(straight, **options)
    for g in grads:
        opt.step(g)
    first = [p.copy() for p in params]
    opt1 = radam.Adam(first, **options)
    for g in grads[:20]:
        opt1.step(g)
    saved = opt1.state_dict()
    assert "velocity" in saved["state"][0]
    opt2 = radam.Adam(first, **options)
    opt2.load_state_dict(saved)
    for g in grads[20:]:
        opt2.step(g)
    for a, b in zip(first, straight):
        np.testing.assert_array_equal(a, b)


# -- AdaMax ---------------------------------------------------------------------------------


def test_adamax_matches_algorithm2_float64():
    params, grads = _problem(3)
    ref = SeedAdamax([p.copy() for p in params])
    opt = radam.Adamax(params, eps=0.0)  # the paper's form
    for g in grads:
        opt.step(g)
        ref.step(g)
    _assert_close(params, ref.params)
    for i in range(len(SHAPES)):
        assert set(opt.state[i]) == {"exp_avg", "exp_inf"}
        np.testing.assert_allclose(opt.state[i]["exp_avg"], ref.m[i], rtol=1e-12)
        np.testing.assert_allclose(opt.state[i]["exp_inf"], ref.u[i], rtol=1e-12)


def test_adamax_maximize_and_options():
    params, grads = _problem(4)
    ref = SeedAdamax([p.copy() for p in params], lr=1e-2, betas=(0.8, 0.99), maximize=True)
    opt = radam.Adamax(params, lr=1e-2, betas=(0.8, 0.99), maximize=True, eps=0.0)
    for g in grads:
        opt.step(g)
        ref.step(g)
    _assert_close(params, ref.params)


def test_adamax_zero_gradient_gives_zero_update():
    w = np.array([1.0, 2.0, 3.0])
    opt = radam.Adamax([w], eps=0.0)  # the paper's form: u stays 0 where g was 0
    for _ in range(5):
        opt.step([np.array([0.0, 0.0, 0.5])])
    assert w[0] == 1.0 and w[1] == 2.0
    assert np.isfinite(w).all() and w[2] < 3.0
    opt.step([np.array([0.0, 1.0, 0.5])])
    assert w[0] == 1.0 and w[1] < 2.0


def test_adamax_defaults():
    opt = radam.Adamax([np.ones(2)])
    group = opt.param_groups[0]
    # torch.optim.Adamax's defaults (eps=0 is the paper's form, asked for explicitly)
    assert group["lr"] == 2e-3 and tuple(group["betas"]) == (0.9, 0.999) and group["eps"] == 1e-8
