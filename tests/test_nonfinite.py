"""The non-finite guard and loss scaling."""

from __future__ import annotations

import numpy as np
import pytest
import radam


def test_nan_and_inf_at_random_steps_and_tensors_never_change_anything():
    rng = np.random.default_rng(0)
    shapes = [(50,), (7, 3), (1,), (200_000,)]  # the last is big enough to be checked in parallel
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    guarded = radam.Adam(params, lr=1e-2, skip_nonfinite=True, amsgrad=True)
    clean = [p.copy() for p in params]
    reference = radam.Adam(clean, lr=1e-2, amsgrad=True)
    skipped = 0
    for step in range(60):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        if rng.random() < 0.4:
            bad = [np.nan, np.inf, -np.inf][rng.integers(3)]
            which = rng.integers(len(shapes))
            grads[which].reshape(-1)[rng.integers(grads[which].size)] = bad
            before = [p.copy() for p in params]
            state = {k: {n: a.copy() for n, a in v.items()} for k, v in guarded.state.items()}
            guarded.step(grads)
            skipped += 1
            assert all(np.array_equal(a, b) for a, b in zip(params, before)), step
            for k, v in state.items():
                assert all(np.array_equal(guarded.state[k][n], a) for n, a in v.items())
        else:
            guarded.step(grads)
            reference.step(grads)
    assert guarded.skipped_steps == skipped > 0
    assert guarded.step_count == reference.step_count == 60 - skipped
    # Skipped steps left no trace: the guarded run equals a run without them.
    assert all(np.array_equal(a, b) for a, b in zip(params, clean))


def test_without_the_guard_a_nan_propagates():
    w = np.ones(4, np.float32)
    opt = radam.Adam([w])
    opt.step([np.array([np.nan, 1, 1, 1], np.float32)])
    assert np.isnan(w[0]) and np.all(np.isfinite(w[1:]))


@pytest.mark.parametrize("scale", [1024.0, 0.5, 3.0])
def test_grad_scale_divides_the_gradient(scale):
    rng = np.random.default_rng(1)
    g = rng.standard_normal(100)
    a, b = rng.standard_normal(100), None
    b = a.copy()
    plain = radam.Adam([a], lr=1e-2, max_gradient_elem=0.5)
    scaled = radam.Adam([b], lr=1e-2, max_gradient_elem=0.5, grad_scale=scale)
    for _ in range(20):
        plain.step([g])
        scaled.step([g * scale])
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_guard_with_sixteen_bit_grads():
    w = np.ones(8, np.float16)
    opt = radam.Adam([w], skip_nonfinite=True, master_weights=True)
    g = np.ones(8, np.float16)
    g[3] = np.inf
    opt.step([g])
    assert opt.skipped_steps == 1 and opt.step_count == 0 and np.all(w == 1)


def test_bad_guard_options():
    with pytest.raises(TypeError, match="skip_nonfinite"):
        radam.Adam([np.ones(2)], skip_nonfinite=1)
    with pytest.raises(ValueError, match="grad_scale"):
        radam.Adam([np.ones(2)], grad_scale=0.0)
