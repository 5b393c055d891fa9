"""16-bit state and params: bfloat16/float16 moments against float32 ones, the
rounding, 16-bit params with and without a float32 master copy.

The drift bounds are the README's: measured after 1000 steps (the figures in
the comments) with a margin of about 2x.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import radam

BF16 = np.dtype(ml_dtypes.bfloat16)


def quadratic(state_dtype, steps=1000, seed=0, lr=1e-2, dtype=np.float32, **options):
    """A noisy quadratic with curvatures spread over 2.6 decades, its params (and
    grads) of ``dtype``."""
    rng = np.random.default_rng(seed)
    n = 10000
    a = np.exp(rng.uniform(-3, 3, n)).astype(np.float32)
    x = rng.standard_normal(n).astype(np.float32).astype(dtype)
    opt = radam.Adam([x], lr=lr, state_dtype=state_dtype, **options)
    noise = np.random.default_rng(seed + 1)
    for _ in range(steps):
        opt.step([(a * x.astype(np.float32) + 0.1 * noise.standard_normal(n)).astype(dtype)])
    return x, float(0.5 * np.sum(a * x.astype(np.float64) ** 2)), opt


def train_demo(model, state_dtype, steps=1000, seed=0):
    """One of the demo's models (``"logreg"``, ``"mlp"``) on scikit-learn's digits,
    minibatches of 64: its params, test accuracy and optimizer."""
    demo = pytest.importorskip("radam.demo")
    pytest.importorskip("sklearn")
    init, loss, logits = (getattr(demo, f"_{model}_{part}") for part in ("init", "loss", "logits"))
    data = demo.load_data(seed)
    params = init(np.random.default_rng(seed), data.x_train.shape[1], 10)
    opt = radam.Adam(params, lr=1e-2, state_dtype=state_dtype)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(data.y_train), 64)
        _, grads = loss(params, data.x_train[idx], data.y_train[idx])
        opt.step(grads)
    accuracy = float((logits(params, data.x_test).argmax(1) == data.y_test).mean())
    return params, accuracy, opt


def logistic_regression(state_dtype, steps=1000, seed=0):
    """The demo's logistic regression on scikit-learn's digits, minibatches of 64."""
    params, accuracy, _ = train_demo("logreg", state_dtype, steps, seed)
    return params, accuracy


def relative(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


def test_bfloat16_and_float16_state_drift_on_a_quadratic():
    x32, f32, _ = quadratic(None)
    x_bf, f_bf, opt = quadratic("bfloat16")
    x_h, f_h, _ = quadratic("float16")
    assert opt.state[0]["exp_avg"].dtype == BF16
    assert relative(x_bf, x32) < 0.1  # measured 0.048
    assert abs(f_bf - f32) < 0.2 * f32  # measured 8%
    assert relative(x_h, x32) < 0.01  # measured 0.0035
    assert abs(f_h - f32) < 0.02 * f32  # measured 0.3%


def test_stochastic_rounding_keeps_the_updates_16_bit_params_lose():
    # lr 1e-3: most steps are under half an ulp of a bfloat16 param near 1 (2^-8),
    # so rounding to nearest drops them and the params stall; stochastic rounding
    # keeps them on average. The README's table; the figures measured, in comments.
    x32, f32, _ = quadratic(None, lr=1e-3)
    rows = {}
    for dtype in (BF16, np.dtype(np.float16)):
        for rounding in (False, True):
            x, f, _ = quadratic(None, lr=1e-3, dtype=dtype, stochastic_rounding=rounding)
            rows[dtype.name, rounding] = (relative(x, x32), f / f32)
    for (name, rounding), (drift, loss) in rows.items():
        print(
            f"{name} params, {'stochastic' if rounding else 'nearest'}: drift {drift:.3g}, "
            f"loss {loss:.3f}x float32's ({f32:.1f})"
        )
    # For the README: a float32 master copy instead, and the same at lr 1e-2.
    x, f, _ = quadratic(None, lr=1e-3, dtype=BF16, master_weights=True)
    print(f"bfloat16 params, master weights: drift {relative(x, x32):.2g}, loss {f / f32:.3f}x")
    x32_2, f32_2, _ = quadratic(None)
    for rounding in (False, True):
        x, f, _ = quadratic(None, dtype=BF16, stochastic_rounding=rounding)
        print(f"lr 1e-2, bfloat16 params, stochastic {rounding}: loss {f / f32_2:.4f}x")
    assert rows["bfloat16", False][1] > 3  # measured 4.64x: the params stall
    assert rows["bfloat16", True][0] < 0.13  # measured 0.064
    assert abs(rows["bfloat16", True][1] - 1) < 0.03  # measured 1.014x
    assert rows["float16", False][1] > 1.1  # measured 1.22x
    assert rows["float16", True][0] < 0.022  # measured 0.0108
    assert abs(rows["float16", True][1] - 1) < 0.003  # measured 1.001x


def test_bfloat16_state_drift_on_the_demo_logistic_regression():
    p32, acc32 = logistic_regression(None)
    p_bf, acc_bf = logistic_regression("bfloat16")
    drift = max(relative(p_bf[k], p32[k]) for k in p32)
    assert drift < 0.1  # measured 0.043
    assert abs(acc_bf - acc32) < 0.02  # measured 0.960 vs 0.962


def test_state_is_rounded_to_nearest_even_from_the_float32_step():
    rng = np.random.default_rng(0)
    w32 = rng.standard_normal(1000).astype(np.float32)
    w16 = w32.copy()
    g = rng.standard_normal(1000).astype(np.float32)
    a = radam.Adam([w32], lr=1e-2)
    b = radam.Adam([w16], lr=1e-2, state_dtype="bfloat16")
    a.step([g])
    b.step([g])
    # After one step from zero state the float32 step is the same; the stored
    # moments are its moments rounded by ml_dtypes (round to nearest even).
    assert np.array_equal(w32, w16)
    for name in ("exp_avg", "exp_avg_sq"):
        assert b.state[0][name].dtype == BF16
        assert np.array_equal(b.state[0][name], a.state[0][name].astype(BF16))


@pytest.mark.parametrize("dtype", [np.float16, BF16])
def test_master_weights_keep_updates_that_16_bits_would_lose(dtype):
    w_plain = np.ones(100, dtype)
    w_master = np.ones(100, dtype)
    plain = radam.Adam([w_plain], lr=1e-5)
    master = radam.Adam([w_master], lr=1e-5, master_weights=True)
    g = np.ones(100, dtype)
    for _ in range(1000):
        plain.step([g])
        master.step([g])
    # Each step of 1e-5 is below half an ulp of 1.0 in 16 bits: lost without a master.
    assert np.all(w_plain == 1)
    m = master.state[0]["master_param"]
    assert m.dtype == np.float32
    assert np.allclose(m, 1 - 1e-2, rtol=1e-3)
    assert np.array_equal(w_master, m.astype(dtype))


def test_sixteen_bit_state_round_trips_through_a_state_dict():
    rng = np.random.default_rng(2)
    w = rng.standard_normal(64).astype(np.float32)
    opt = radam.Adam([w], state_dtype="float16", amsgrad=True)
    for _ in range(5):
        opt.step([rng.standard_normal(64).astype(np.float32)])
    w2 = w.copy()
    opt2 = radam.Adam([w2], state_dtype="float16", amsgrad=True)
    opt2.load_state_dict(opt.state_dict())
    g = rng.standard_normal(64).astype(np.float32)
    opt.step([g])
    opt2.step([g])
    assert np.array_equal(w, w2)
    # A float32 state dict does not load into a float16-state optimizer.
    other = radam.Adam([w.copy()], amsgrad=True)
    other.step([g])
    with pytest.raises(ValueError, match="dtype"):
        opt2.load_state_dict(other.state_dict())


def test_bad_state_dtypes_are_rejected():
    with pytest.raises(ValueError, match="state_dtype"):
        radam.Adam([np.ones(3, np.float32)], state_dtype="int8")
    with pytest.raises(ValueError, match="float64"):
        radam.Adam([np.ones(3)], state_dtype="bfloat16")
    with pytest.raises(TypeError, match="master_weights"):
        radam.Adam([np.ones(3, np.float16)], master_weights="yes")
    w = np.ones(3, np.float16)
    opt = radam.Adam([w])
    with pytest.raises(TypeError, match=r"grads\[0\].*float16"):
        opt.step([np.ones(3, np.float32)])
    assert np.all(w == 1)
