"""Thread safety: concurrent ``step`` calls on one optimizer run one after the other."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import radam
from helpers import assert_same_run


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
    assert_same_run(alone, shared, seq, opt)


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


def _big_problem(seed):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(300_001).astype(np.float32)
    g = rng.standard_normal(300_001).astype(np.float32)
    return p, g


def test_different_optimizers_step_at_once():
    # Two Python threads stepping two optimizers share the step's helper
    # threads; each result equals its optimizer stepped alone.
    problems = [_big_problem(s) for s in (2, 3)]
    shared = [p.copy() for p, _ in problems]
    opts = [radam.Adam([p], lr=1e-2) for p in shared]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(opt, g):
        try:
            barrier.wait()
            for _ in range(30):
                opt.step([g])
        except BaseException as e:  # noqa: B036
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(o, g)) for o, (_, g) in zip(opts, problems)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for p_shared, (p0, g) in zip(shared, problems):
        alone = p0.copy()
        opt = radam.Adam([alone], lr=1e-2)
        for _ in range(30):
            opt.step([g])
        np.testing.assert_array_equal(p_shared, alone)


def _step_in_child(conn):
    p, g = _big_problem(4)
    opt = radam.Adam([p], lr=1e-2)
    for _ in range(3):
        opt.step([g])
    conn.send(p)
    conn.close()


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_forked_child_steps_after_parent_did():
    # The parent's helper threads do not exist in a forked child: a step there
    # must start its own instead of waiting for them forever.
    p, g = _big_problem(4)
    opt = radam.Adam([p], lr=1e-2)
    for _ in range(3):
        opt.step([g])  # the parent's helpers are running now
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_step_in_child, args=(send,))
    child.start()
    got = recv.poll(60) and recv.recv()
    child.join(10)
    if child.is_alive():
        child.kill()
    assert got is not False, "the forked child's step did not finish within 60 s"
    np.testing.assert_array_equal(got, p)
    assert child.exitcode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("threads", [1, 3])
def test_thread_count_is_caller_plus_helpers(threads):
    # RAYON_NUM_THREADS = n: a step runs on the caller and n - 1 helper
    # threads (no spare idle worker competing for the cores).
    # A new thread names itself once it first runs, which on a loaded machine may
    # be after the step has returned: count the named helpers until all are up
    # (or 10 s have passed), so that a slow start reads as late, not missing.
    code = (
        "import os, time, numpy as np, radam\n"
        "p = np.ones(300_001, np.float32)\n"
        "radam.Adam([p]).step([p.copy()])\n"
        "def helpers():\n"
        "    names = [open(f'/proc/self/task/{t}/comm').read().strip()"
        " for t in os.listdir('/proc/self/task')]\n"
        "    return sum(n.startswith('radam-helper') for n in names)\n"
        "deadline = time.monotonic() + 10\n"
        f"while helpers() < {threads - 1} and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print(radam.num_threads(), helpers())\n"
    )
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [str(threads), str(threads - 1)]
