"""Convergence, as optax tests every optimizer: a parabola and Rosenbrock, float64."""

from __future__ import annotations

import numpy as np
import pytest
import radam

CURVATURE = np.array([1.0, 10.0, 0.1])
MINIMUM = np.array([1.0, -2.0, 3.0])


def parabola_grad(x):
    return CURVATURE * (x - MINIMUM)


def rosenbrock_grad(x, a=1.0, b=100.0):
    """Gradient of (a - x)^2 + b (y - x^2)^2; the minimum is (a, a^2)."""
    return np.array(
        [-2.0 * (a - x[0]) - 4.0 * b * x[0] * (x[1] - x[0] ** 2), 2.0 * b * (x[1] - x[0] ** 2)]
    )


@pytest.mark.parametrize(
    "cls, options",
    [
        (radam.Adam, {}),
        (radam.Adam, {"amsgrad": True}),
        (radam.AdamW, {"weight_decay": 0.0}),
        (radam.Adam, {"maximize": True}),
    ],
    ids=["adam", "amsgrad", "adamw", "maximize"],
)
def test_parabola(cls, options):
    x = np.array([-1.0, 10.0, 1.0])
    opt = cls([x], lr=0.1, **options)
    sign = -1.0 if options.get("maximize") else 1.0  # maximize the negated parabola
    for i in range(3000):
        if i == 1500:
            opt.param_groups[0]["lr"] = 0.01
        opt.step([sign * parabola_grad(x)])
    np.testing.assert_allclose(x, MINIMUM, atol=1e-4)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_rosenbrock(amsgrad):
    x = np.array([-1.2, 1.0])
    opt = radam.Adam([x], lr=1e-2, amsgrad=amsgrad)
    for _ in range(20000):
        opt.step([rosenbrock_grad(x)])
    np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-3)


def test_decoupled_weight_decay_pulls_the_minimum_toward_zero():
    # With AdamW the fixed point of the parabola is where the Adam step balances the
    # decay, strictly between 0 and the undecayed minimum; with L2 it is the
    # minimum of f + wd/2 |x|^2, i.e. curvature (x - c) + wd x = 0.
    wd = 0.5
    x = np.array([-1.0, 10.0, 1.0])
    opt = radam.Adam([x], lr=0.01, weight_decay=wd)
    for _ in range(20000):
        opt.step([parabola_grad(x)])
    np.testing.assert_allclose(x, CURVATURE * MINIMUM / (CURVATURE + wd), atol=1e-3)
    y = np.array([-1.0, 10.0, 1.0])
    opt = radam.AdamW([y], lr=0.01, weight_decay=wd)
    for _ in range(5000):
        opt.step([parabola_grad(y)])
    assert np.all(np.abs(y) < np.abs(MINIMUM)) and np.all(np.sign(y) == np.sign(MINIMUM))
