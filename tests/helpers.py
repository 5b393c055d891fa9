"""Shared helpers of the pytest suites: tolerances, snapshots, error checks."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

F32_UNIT_ROUNDOFF = 2.0**-24


def f64_tolerance(reference: np.ndarray) -> dict[str, float]:
    """float64 parity: 1e-12 relative, with an absolute floor of 1e-12 times the
    array's largest magnitude, for elements that pass near 0 (where a relative
    error of a few 1e-16 absolute is meaningless). Measured errors are ~1e-15
    absolute over 200 steps, so this leaves a margin of ~1000."""
    scale = float(np.max(np.abs(reference), initial=0.0))
    return {"rtol": 1e-12, "atol": 1e-12 * scale}


def f32_atol(steps: int, lr: float, scale: float) -> float:
    """float32 parity, as an absolute bound derived from the rounding the kernel does.

    The reference runs in float64, so the whole difference is float32 rounding.
    Per step the kernel rounds the param at most twice (the decoupled decay
    product and the final fused multiply-add): at most 2 * u * |p|, with
    u = 2^-24 and |p| <= ``scale`` (the largest magnitude of the trajectory).
    The normalised update m_hat / (sqrt(v_hat) + eps) is O(1) (|m_hat| <=
    sqrt(v_hat) by Cauchy-Schwarz, times at most 1/sqrt(1 - beta2) in the first
    steps), and its relative error is a few roundings (sqrt, divide, the
    products) plus the rounding errors carried in m and v, which decay
    geometrically (<= 1/(1 - beta1) = 10 roundings): we allow 32 u of lr.
    Errors are summed linearly over the steps (no random-walk assumption).
    Measured: at most ~1/8 of this bound. A formula error (off-by-one t, eps
    inside the root, a wrong decay) moves params by ~lr per step, far above it.
    """
    return steps * F32_UNIT_ROUNDOFF * (2.0 * scale + 32.0 * lr)


def assert_matches_reference(
    actual: np.ndarray, reference: np.ndarray, *, steps: int, lr: float, p0: Any = None
) -> None:
    assert actual.shape == reference.shape
    if actual.dtype == np.float64:
        np.testing.assert_allclose(actual, reference, **f64_tolerance(reference))
    else:
        assert actual.dtype == np.float32
        scale = float(np.max(np.abs(reference), initial=0.0))
        if p0 is not None:
            scale = max(scale, float(np.max(np.abs(p0), initial=0.0)))
        atol = f32_atol(steps, lr, max(scale, 1.0))
        np.testing.assert_allclose(actual, reference, rtol=0, atol=atol)


def snapshot(opt) -> dict[str, Any]:
    """A deep copy of everything a failed call must leave alone."""
    return {
        "params": [np.array(p, copy=True) for g in opt.param_groups for p in g["params"]],
        "state": {k: {n: a.copy() for n, a in v.items()} for k, v in opt.state.items()},
        "step": opt.step_count,
        "groups": [
            {k: copy.copy(v) for k, v in g.items() if k not in ("params",)}
            for g in opt.param_groups
        ],
    }


def assert_unchanged(opt, before: dict[str, Any]) -> None:
    """Params and state byte for byte (NaN payloads and signed zeros included),
    the step count and the groups' options, as ``before`` (a :func:`snapshot`)."""
    after = snapshot(opt)
    assert after["step"] == before["step"]
    assert len(after["params"]) == len(before["params"])
    for a, b in zip(after["params"], before["params"]):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
        assert a.tobytes() == b.tobytes()
    assert after["state"].keys() == before["state"].keys()
    for key in before["state"]:
        assert after["state"][key].keys() == before["state"][key].keys()
        for name in before["state"][key]:
            a, b = after["state"][key][name], before["state"][key][name]
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert len(after["groups"]) == len(before["groups"])
    for a, b in zip(after["groups"], before["groups"]):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], np.ndarray) or isinstance(b[key], np.ndarray):
                assert np.array_equal(a[key], b[key]), key  # e.g. betas set to an array
            else:
                assert a[key] is b[key] or a[key] == b[key], key


def raises_named(exc_type, *names: str):
    """Like pytest.raises, but also fails on a BaseException that is not an
    Exception (pyo3's PanicException is one) and checks that every name is
    in the message."""
    return _RaisesNamed(exc_type, names)


class _RaisesNamed:
    def __init__(self, exc_type, names) -> None:
        self.exc_type, self.names = exc_type, names
        self.value: BaseException | None = None

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if ev is None:
            pytest.fail(f"DID NOT RAISE {self.exc_type}")
        assert type(ev).__name__ != "PanicException", f"a Rust panic reached Python: {ev}"
        assert isinstance(ev, Exception), f"{type(ev).__name__} is not an Exception: {ev}"
        if not isinstance(ev, self.exc_type):
            return False  # re-raise the unexpected exception as the failure
        for name in self.names:
            assert name in str(ev), f"message {str(ev)!r} does not name {name!r}"
        self.value = ev
        return True


def step_both(opt1, opt2, grads, params1, params2, *, exact: bool, assert_close) -> None:
    """One more step on two optimizers that hold the same params and state (one
    moved from the other), then their params (synced to the host): equal bit for
    bit when ``exact`` (the same kernel on both), else ``assert_close(got, want)``."""
    opt1.step(grads)
    opt2.step(grads)
    opt1.sync()
    opt2.sync()
    for want, got in zip(params1, params2):
        if exact:
            np.testing.assert_array_equal(got, want)
        else:
            assert_close(got, want)


def assert_same_run(params_a, params_b, opt_a, opt_b) -> None:
    """Two runs that must agree bit for bit: each param, and each state array of
    ``opt_a``, equal to ``opt_b``'s."""
    for a, b in zip(params_a, params_b):
        np.testing.assert_array_equal(a, b)
    for key in opt_a.state:
        for name in opt_a.state[key]:
            np.testing.assert_array_equal(opt_a.state[key][name], opt_b.state[key][name])
