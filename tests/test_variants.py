"""radam.NAdam and radam.RAdam against references written from their papers
and PyTorch's documentation (float64, 1e-12 relative, 200 steps)."""

from __future__ import annotations

import numpy as np
import pytest
import radam
from test_option_table import EXAMPLES
from variant_reference import RefNAdam, RefRAdam, radam_rho


def assert_close_f64(got, want):
    # 1e-12 relative, with a floor of 1e-12 times the tensor's largest value
    # for entries that pass near zero.
    scale = max(float(np.max(np.abs(want))), 1e-300)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * scale)


def run_pair(make_ours, ref, shapes, steps=200, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in shapes]
    ours = [p.copy() for p in params]
    opt = make_ours(ours)
    for _ in range(steps):
        grads = [rng.standard_normal(s) for s in shapes]
        opt.step(grads)
        ref.step(grads)
    return ours, opt


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"lr": 1e-2, "betas": (0.8, 0.99)},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        {"momentum_decay": 0.1, "eps": 1e-3},
    ],
)
def test_nadam_matches_its_reference(options):
    shapes = [(37,), (4, 5)]
    rng = np.random.default_rng(0)
    ref = RefNAdam([rng.standard_normal(s) for s in shapes], **options)
    ours, opt = run_pair(lambda ps: radam.NAdam(ps, **options), ref, shapes)
    for a, b in zip(ours, ref.p):
        assert_close_f64(a, b)
    assert opt.state_dict()["state"][0]["mu_product"] == pytest.approx(ref.mu_product, rel=1e-15)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"lr": 1e-2, "betas": (0.9, 0.99)},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        {"betas": (0.5, 0.9)},
    ],
)
def test_radam_matches_its_reference_across_the_switch(options):
    shapes = [(37,), (3, 3)]
    rng = np.random.default_rng(0)
    ref = RefRAdam([rng.standard_normal(s) for s in shapes], **options)
    ours, _ = run_pair(lambda ps: radam.RAdam(ps, **options), ref, shapes)
    for a, b in zip(ours, ref.p):
        assert_close_f64(a, b)
    # The run crossed the switch from un-adapted to rectified steps.
    assert not ref.adaptive_steps[0] and ref.adaptive_steps[-1]


def test_radam_switch_step_is_where_rho_exceeds_5():
    # beta2 = 0.999: rho_t <= 5 for t <= 5, and > 5 from t = 6 (Liu et al.).
    assert [radam_rho(0.999, t) > 5 for t in range(1, 8)] == [False] * 5 + [True] * 2
    # One step on each side of the switch, checked against the two formulas.
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(10)
    ref = RefRAdam([p0.copy()])
    ours = p0.copy()
    opt = radam.RAdam([ours])
    for _ in range(1, 8):
        g = rng.standard_normal(10)
        opt.step([g])
        ref.step([g])
        assert_close_f64(ours, ref.p[0])


def test_nadam_resumes_bit_for_bit_from_a_state_dict():
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(50) for _ in range(20)]
    a = rng.standard_normal(50)
    b = a.copy()
    opt_a = radam.NAdam([a])
    for g in grads[:10]:
        opt_a.step([g])
    opt_b = radam.NAdam([b])
    b[...] = a
    opt_b.load_state_dict(opt_a.state_dict())
    for g in grads[10:]:
        opt_a.step([g])
        opt_b.step([g])
    assert np.array_equal(a, b)


def test_variants_reject_options_they_do_not_have():
    w = np.ones(3)
    with pytest.raises(ValueError, match="amsgrad"):
        radam.RAdam([w], amsgrad=True)
    with pytest.raises(ValueError, match="efficient_form"):
        radam.NAdam([w], efficient_form=True)
    with pytest.raises(TypeError, match="momentum_decay"):
        radam.Adam([{"params": [w], "momentum_decay": 0.1}])
    with pytest.raises(ValueError, match="momentum_decay"):
        radam.NAdam([w], momentum_decay=-1.0)


def test_variants_converge_on_a_quadratic():
    for cls, lr in ((radam.NAdam, 0.05), (radam.RAdam, 0.05)):
        x = np.array([3.0, -2.0, 1.0])
        opt = cls([x], lr=lr)
        for _ in range(3000):
            opt.step([2 * x])
        assert np.max(np.abs(x)) < 1e-3, cls.__name__


# A value other than the default for every option of radam.Adam (issue 12, item 8):
# test_option_table's, but for NAdam's own momentum_decay and device (not stepped here).
OPTION_VALUES = {k: v for k, v in EXAMPLES.items() if k not in ("momentum_decay", "device")}
# Options only the Adam update rule has (the variants refuse them by name).
ADAM_RULE_ONLY = ("amsgrad", "efficient_form", "bias_correction")
WHOLE_OPTIMIZER = ("skip_nonfinite", "state_dtype", "master_weights")


def test_the_option_table_covers_every_option_of_adam():
    import inspect

    signature = inspect.signature(radam.Adam.__init__).parameters
    assert set(OPTION_VALUES) == set(signature) - {"self", "params", "device"}


@pytest.mark.parametrize("name", OPTION_VALUES)
@pytest.mark.parametrize("cls", [radam.Adam, radam.AdamW, radam.Adamax, radam.NAdam, radam.RAdam])
def test_every_class_takes_every_option(cls, name):
    # AdamW took none of the keyword-only options (TypeError for skip_nonfinite,
    # state_dtype, master_weights, efficient_form...) while the others took them all.
    import ml_dtypes

    value = OPTION_VALUES[name]
    sixteen = name in ("master_weights", "stochastic_rounding")
    dtype = ml_dtypes.bfloat16 if sixteen else np.float32

    def params():
        return [np.linspace(-1, 1, 6).astype(dtype), np.ones(3, dtype)]

    def grads(k):
        return [np.full(6, 0.5 + k, dtype), np.full(3, -1.0 - k, dtype)]

    if cls is not radam.AdamW and cls is not radam.Adam and name in ADAM_RULE_ONLY:
        with pytest.raises(ValueError, match=name):
            cls(params(), **{name: value})
        return
    ours = params()
    opt = cls(ours, **{name: value})
    if name in WHOLE_OPTIMIZER:
        assert getattr(opt, name) == (
            np.dtype(ml_dtypes.bfloat16) if name == "state_dtype" else value
        )
    else:
        assert opt.param_groups[0][name] == value
    for k in range(3):
        opt.step(grads(k))
    if cls is radam.AdamW:
        # AdamW is Adam with decoupled decay of 1e-2: the same bits, option included.
        same = params()
        options = {"decoupled_weight_decay": True, "weight_decay": 1e-2, name: value}
        twin = radam.Adam(same, **options)
        for k in range(3):
            twin.step(grads(k))
        for a, b in zip(ours, same):
            assert a.tobytes() == b.tobytes()


def test_adamw_decay_stays_decoupled():
    w = np.ones(3)
    assert radam.AdamW([w], decoupled_weight_decay=True).param_groups[0]["decoupled_weight_decay"]
    with pytest.raises(ValueError, match="decoupled_weight_decay"):
        radam.AdamW([w], decoupled_weight_decay=False)
