"""Thread safety: concurrent ``step`` calls on one optimizer run one after the other."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import radam


def _options():
    return {"lr": 1e-3, "weight_decay": 0.01, "amsgrad": True}


@pytest.mark.parametrize("n_threads", [2, 4])
def test_concurrent_steps_equal_sequential_steps(n_threads):
    n_steps = 25
    rng = np.random.default_rng(0)
    # Big enough that the kernel runs multi-threaded with the GIL released.
    p0 = [rng.standard_normal(300_001).astype(np.float32), rng.standard_normal((64, 65))]
    grads = [np.asarray(rng.standard_normal(p.shape), dtype=p.dtype) for p in p0]

    shared = [p.copy() for p in p0]
    opt = radam.Adam(shared, **_options())
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def worker():
        try:
            barrier.wait()
            for _ in range(n_steps):
                opt.step(grads)
        except BaseException as e:  # noqa: B036 - a PanicException must be seen too
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert opt.step_count == n_threads * n_steps

    alone = [p.copy() for p in p0]
    seq = radam.Adam(alone, **_options())
    for _ in range(n_threads * n_steps):
        seq.step(grads)
    for a, b in zip(shared, alone):
        np.testing.assert_array_equal(a, b)
    for key in seq.state:
        for name in seq.state[key]:
            np.testing.assert_array_equal(opt.state[key][name], seq.state[key][name])


def test_state_dict_while_stepping_is_consistent():
    # Every snapshot taken during concurrent steps is the state after a whole step:
    # resuming from it reproduces the sequential run up to that step.
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(200_000)
    grad = rng.standard_normal(200_000)
    p = p0.copy()
    opt = radam.Adam([p], lr=1e-2)
    snapshots, errors = [], []
    done = threading.Event()

    def stepper():
        try:
            for _ in range(30):
                opt.step([grad])
        except BaseException as e:  # noqa: B036
            errors.append(e)
        finally:
            done.set()

    def saver():
        try:
            while not done.is_set():
                snapshots.append(opt.state_dict())
        except BaseException as e:  # noqa: B036
            errors.append(e)

    threads = [threading.Thread(target=stepper), threading.Thread(target=saver)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # The sequential states, step by step.
    q = p0.copy()
    seq = radam.Adam([q], lr=1e-2)
    expected = {}
    for k in range(1, 31):
        seq.step([grad])
        expected[k] = seq.state[0]["exp_avg"].copy()
    for sd in snapshots:
        if sd["state"]:
            k = sd["state"][0]["step"]
            np.testing.assert_array_equal(sd["state"][0]["exp_avg"], expected[k])
