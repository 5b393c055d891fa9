"""radam.minimize, directly and as scipy.optimize.minimize's custom method."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import radam

scipy_optimize = pytest.importorskip("scipy.optimize", reason="scipy is in the test extra")


def rosen_pair(x):
    return scipy_optimize.rosen(x), scipy_optimize.rosen_der(x)


def test_rosenbrock_through_scipy():
    res = scipy_optimize.minimize(
        rosen_pair,
        [-1.2, 1.0],
        jac=True,
        method=radam.minimize,
        options={"lr": 2e-2, "maxiter": 20000, "gtol": 1e-6},
    )
    assert isinstance(res, scipy_optimize.OptimizeResult)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-4)
    assert res.fun < 1e-8
    assert np.max(np.abs(res.jac)) <= 1e-6
    assert res.nfev == res.nit + 1 and 0 < res.nit < 20000
    f, g = rosen_pair(res.x)
    assert res.fun == f and np.array_equal(res.jac, g)


def test_direct_call_callable_jac_and_args():
    a = np.array([1.0, -2.0, 3.0])

    def fun(x, shift):
        return float(((x - a - shift) ** 2).sum())

    def jac(x, shift):
        return 2 * (x - a - shift)

    x0 = np.zeros(3)
    res = radam.minimize(fun, x0, args=(1.0,), jac=jac, lr=0.1, maxiter=5000)
    assert res.success
    np.testing.assert_allclose(res.x, a + 1.0, atol=1e-5)
    np.testing.assert_array_equal(x0, np.zeros(3))  # x0 is not changed
    via_scipy = scipy_optimize.minimize(
        fun, x0, args=(1.0,), jac=jac, method=radam.minimize, options={"lr": 0.1, "maxiter": 5000}
    )
    np.testing.assert_array_equal(via_scipy.x, res.x)


def test_maxiter_and_float32():
    x0 = np.array([-1.2, 1.0], dtype=np.float32)
    res = radam.minimize(
        lambda x: (scipy_optimize.rosen(x), scipy_optimize.rosen_der(x)), x0, maxiter=10
    )
    assert not res.success and res.status == 1 and res.nit == 10 and res.nfev == 11
    assert res.x.dtype == np.float32


def test_tol_sets_gtol():
    res = scipy_optimize.minimize(
        lambda x: (float(x @ x), 2 * x),
        [3.0, -4.0],
        jac=True,
        method=radam.minimize,
        tol=1e-2,
        options={"lr": 0.05, "maxiter": 100000},
    )
    assert res.success and np.max(np.abs(res.jac)) <= 1e-2
    assert np.max(np.abs(res.jac)) > 1e-5  # it stopped at tol, not at the default gtol


def test_callback_and_stop_iteration():
    seen = []

    def callback(xk):
        seen.append(xk)
        if len(seen) == 5:
            raise StopIteration

    res = radam.minimize(lambda x: (float(x @ x), 2 * x), np.ones(2), callback=callback)
    assert res.nit == 5 and not res.success and res.status == 99
    results = []
    radam.minimize(
        lambda x: (float(x @ x), 2 * x),
        np.ones(2),
        maxiter=3,
        callback=lambda intermediate_result: results.append(intermediate_result),
    )
    assert len(results) == 3 and {"x", "fun"} <= set(results[0])


def test_non_finite_stops():
    res = radam.minimize(lambda x: (float("nan"), x.copy()), np.ones(2))
    assert not res.success and "non-finite" in res.message and res.nit == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hess": lambda x: np.eye(2)}, "hess"),
        ({"hessp": lambda x, p: p}, "hessp"),
        ({"bounds": [(0, 1), (0, 1)]}, "bounds"),
        ({"constraints": {"type": "eq", "fun": lambda x: x[0]}}, "constraints"),
        ({"jac": False}, "jac"),
        ({"jac": "2-point"}, "jac"),
        ({"maxiter": -1}, "maxiter"),
        ({"gtol": -1.0}, "gtol"),
        ({"lr": -1.0}, "lr"),
    ],
)
def test_what_it_cannot_honour_is_refused(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        radam.minimize(rosen_pair, [0.0, 0.0], **kwargs)


def test_unknown_option_through_scipy():
    with pytest.raises(TypeError, match="learning_rate"):
        scipy_optimize.minimize(
            rosen_pair, [0.0, 0.0], jac=True, method=radam.minimize, options={"learning_rate": 1}
        )
    with pytest.raises(ValueError, match="bounds"):
        scipy_optimize.minimize(
            rosen_pair, [0.0, 0.0], jac=True, method=radam.minimize, bounds=[(0, 1), (0, 1)]
        )


def test_adam_options_pass_through():
    a = radam.minimize(rosen_pair, [-1.2, 1.0], maxiter=50, lr=1e-2)
    b = radam.minimize(rosen_pair, [-1.2, 1.0], maxiter=50, lr=1e-2, amsgrad=True, eps=1e-3)
    assert not np.array_equal(a.x, b.x)


def test_missing_scipy_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    with pytest.raises(ImportError, match="pip install scipy"):
        radam.minimize(rosen_pair, [0.0, 0.0])
