"""radam.distributed under real MPI: pytest launches ``mpiexec -n 2`` and ``-n 3``
running the scripts in tests/mpi/, with timeouts. The ``mpi`` fixture (conftest.py)
skips them, naming what to install, where Open MPI or mpi4py is missing, except with
CI=true, where that is a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import radam

HERE = Path(__file__).parent / "mpi"
sys.path.insert(0, str(HERE))

from common import init_params, rank_grads  # noqa: E402

needs_mpi = pytest.mark.usefixtures("mpi")


def mpiexec(n: int, *args: str, timeout: float = 90, check: bool = True):
    command = ["mpiexec", "--oversubscribe", "-n", str(n)]
    env = dict(os.environ)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env.setdefault("RAYON_NUM_THREADS", "1")  # k ranks on 2 cores
    result = subprocess.run(
        [*command, sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=HERE,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"mpiexec -n {n} {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_matches_single_process_adam(ranks):
    """100 steps, several options and every variant, sharded and averaged: within
    1e-6 relative of radam.Adam on the averaged grads; 1/k of the state per rank."""
    out = mpiexec(ranks, "parity.py").stdout
    assert out.count("parity OK") == ranks


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_stochastic_rounding_matches_single_process_adam_bit_for_bit(ranks):
    """bfloat16 and float16 params, shards cutting tensors: each element's random
    bits hash its place in the whole tensor (tests/mpi/rounding.py)."""
    out = mpiexec(ranks, "rounding.py").stdout
    assert out.count("rounding OK") == ranks


@needs_mpi
def test_checkpoint_reshards_from_3_to_2_ranks_and_one_process(tmp_path):
    path, saved, loaded = tmp_path / "ck.radam", tmp_path / "s3.npz", tmp_path / "l2.npz"
    mpiexec(3, "checkpoint.py", "save", str(path), str(saved))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.radam", "s3.npz"]  # no temp files left
    mpiexec(2, "checkpoint.py", "load", str(path), str(loaded))

    # One process: the same file loads into radam.NAdam and continues the same way.
    params = [np.zeros_like(p) for p in init_params()]
    opt = radam.NAdam(params, lr=1e-2, weight_decay=0.01, max_gradient_norm=2.0)
    opt.load(path)
    assert opt.step_count == 10
    n = len(params)
    with np.load(saved) as a, np.load(loaded) as b:
        want = [a[f"arr_{j}"] for j in range(len(a.files))]
        got2 = [b[f"arr_{j}"] for j in range(len(b.files))]
    for step in range(10, 20):
        opt.step(rank_grads(step, 0))
        for i, p in enumerate(params):
            reference = want[(step - 10) * n + i]
            scale = float(np.max(np.abs(reference)))
            assert np.max(np.abs(p - reference)) <= 1e-6 * scale
            assert np.max(np.abs(got2[(step - 10) * n + i] - reference)) <= 1e-6 * scale


@needs_mpi
@pytest.mark.parametrize("case", ["shape", "count", "dtype", "option", "grad", "none-grad"])
def test_mismatches_raise_on_every_rank(case):
    ranks = 3 if case not in ("grad", "none-grad") else 2
    out = mpiexec(ranks, "failures.py", case, timeout=60).stdout
    assert out.count(f"{case} raised") == ranks, out
    assert out.count("done") == ranks


@needs_mpi
@pytest.mark.parametrize("case", ["load-readonly", "load-option"])
def test_averaged_load_that_one_rank_refuses_changes_no_rank(case, tmp_path):
    out = mpiexec(3, "failures.py", case, str(tmp_path / "ck.radam"), timeout=90).stdout
    assert out.count(f"{case} raised") == 3, out
    assert out.count("done") == 3


@needs_mpi
def test_failure_inside_a_step_aborts_the_job():
    result = mpiexec(3, "failures.py", "abort", timeout=60, check=False)
    assert result.returncode != 0
    assert "aborting the MPI job" in result.stderr
    assert "step returned" not in result.stdout


@needs_mpi
@pytest.mark.parametrize("case", ["user-raise", "user-exit"])
def test_an_error_in_user_code_ends_the_job_under_python_m_mpi4py(case):
    """An uncaught exception or sys.exit(3) on one rank, between steps, while the
    others wait in the next step's collective: without mpi4py's runner the job hangs;
    ``python -m mpi4py`` aborts it. The timeout only bounds a regression."""
    result = mpiexec(3, "-m", "mpi4py", "failures.py", case, timeout=90, check=False)
    assert result.returncode != 0
    assert result.stdout.count("first step done") == 3, result.stdout
    assert "second step returned" not in result.stdout
    if case == "user-raise":
        assert "injected error in user code" in result.stderr


@needs_mpi
def test_the_data_parallel_demo_runs_as_the_readme_launches_it():
    pytest.importorskip("sklearn", reason="scikit-learn is in the test extra")
    out = mpiexec(
        2, "-m", "mpi4py", "-m", "radam", "demo", "--data-parallel", "--epochs", "2"
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("data parallel on 2 ranks"))
    gap = float(line.rsplit(" ", 1)[1])  # the largest difference from one process
    assert gap <= 1e-5, line


@pytest.mark.parametrize(
    "failure",
    [
        ImportError("No module named 'mpi4py'"),  # no mpi4py
        RuntimeError("cannot load MPI library"),  # the mpi4py wheel, no libmpi
        OSError("libmpi.so.40: cannot open shared object file"),
    ],
)
def test_failing_to_load_mpi_is_one_clear_error(monkeypatch, failure):
    import builtins

    from radam.compat.puzzlelib import Adam as PuzzleLibAdam
    from radam.distributed import AveragedAdam, ShardedAdam

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("mpi4py"):
            raise failure
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    for make in (ShardedAdam, AveragedAdam, lambda p: PuzzleLibAdam(nodeinfo=object())):
        with pytest.raises(ImportError) as info:
            make([np.zeros(3, np.float32)])
        message = str(info.value)
        assert 'pip install "radam[mpi]"' in message
        assert "apt-get install openmpi-bin libopenmpi-dev" in message
        assert str(failure) in message


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_eight_bit_state_shards_on_blocks(ranks, tmp_path):
    """8-bit state: each rank's piece of a tensor starts on a 256-element block;
    with 2 ranks (whose average of equal gradients is exact) the sharded run and
    its gathered checkpoint equal one process bit for bit."""
    out = mpiexec(ranks, "eight_bit.py", str(tmp_path / "ck.radam")).stdout
    assert out.count("eight-bit OK") == ranks
