"""radam.distributed under real MPI: pytest launches ``mpiexec -n 2`` and ``-n 3``
running the scripts in tests/mpi/, with timeouts. Skipped (with the reason) when
mpiexec or mpi4py is missing, except with CI=true, where that is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import radam

HERE = Path(__file__).parent / "mpi"
sys.path.insert(0, str(HERE))

from common import init_params, rank_grads  # noqa: E402


def _missing() -> str | None:
    if shutil.which("mpiexec") is None:
        return "mpiexec not found (apt-get install openmpi-bin libopenmpi-dev)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return 'mpi4py not installed (pip install "radam[mpi]")'
    return None


MISSING = _missing()
if MISSING is not None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but MPI is unavailable: {MISSING}", pytrace=False)
    pytestmark = pytest.mark.skip(reason=MISSING)


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


@pytest.mark.parametrize("ranks", [2, 3])
def test_matches_single_process_adam(ranks):
    """100 steps, several options and every variant, sharded and averaged: within
    1e-6 relative of radam.Adam on the averaged grads; 1/k of the state per rank."""
    out = mpiexec(ranks, "parity.py").stdout
    assert out.count("parity OK") == ranks


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


@pytest.mark.parametrize("case", ["shape", "count", "dtype", "option", "grad"])
def test_mismatches_raise_on_every_rank(case):
    ranks = 3 if case != "grad" else 2
    out = mpiexec(ranks, "failures.py", case, timeout=60).stdout
    assert out.count(f"{case} raised") == ranks, out
    assert out.count("done") == ranks


def test_failure_inside_a_step_aborts_the_job():
    result = mpiexec(3, "failures.py", "abort", timeout=60, check=False)
    assert result.returncode != 0
    assert "aborting the MPI job" in result.stderr
    assert "step returned" not in result.stdout


def test_missing_mpi4py_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("mpi4py"):
            raise ImportError("no mpi4py")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    from radam.distributed import ShardedAdam

    with pytest.raises(ImportError, match=r'pip install "radam\[mpi\]"'):
        ShardedAdam([np.zeros(3, np.float32)])
