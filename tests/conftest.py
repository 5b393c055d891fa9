"""What some tests need from the machine, checked in one place.

Tests that need a WebGPU adapter take the ``adapter`` fixture; tests that launch
Open MPI take the ``mpi`` fixture. Where the machine lacks it they skip, with a
reason that names the Debian packages (and the extra) to install; with ``CI=true``
they fail instead, so that CI cannot pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"

GPU_HOW = (
    "apt-get install mesa-vulkan-drivers (Mesa's Vulkan drivers; lavapipe runs on the CPU) "
    'and pip install "radam[gpu]"'
)
MPI_HOW = 'apt-get install openmpi-bin libopenmpi-dev and pip install "radam[mpi]"'


def unavailable(what: str, how: str) -> None:
    """Skip the test, or fail it under CI=true: ``what`` is missing here."""
    if IN_CI:
        pytest.fail(f"CI=true, so this test must run, but {what}; {how}", pytrace=False)
    pytest.skip(f"{what}; to run it: {how}")


@pytest.fixture(scope="session")
def adapter() -> str:
    """The WebGPU adapter's name (Mesa's lavapipe is a real Vulkan driver on the CPU)."""
    from radam import gpu

    if sys.version_info < (3, 11):
        # Not something the machine lacks: wgpu-py 0.32 itself needs Python 3.11+.
        pytest.skip("device='gpu' needs wgpu-py 0.32, which needs Python 3.11 or newer")
    try:
        return gpu.adapter_name()
    except gpu.GpuError as err:
        unavailable(f"there is no WebGPU adapter ({err})", GPU_HOW)
        raise  # not reached: unavailable() skips or fails


def mpi_missing() -> str | None:
    """Why mpiexec cannot run radam.distributed here, or None if it can."""
    if shutil.which("mpiexec") is None:
        return "mpiexec is not on PATH"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed"
    # Loading the MPI library (without initialising MPI) in a child process: the
    # mpi4py wheel raises RuntimeError there when no libmpi can be found.
    probe = "import mpi4py; mpi4py.rc.initialize = False; from mpi4py import MPI"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        return f"mpi4py cannot load an MPI library ({last})"
    return None


@pytest.fixture(scope="session")
def mpi() -> None:
    """Open MPI's mpiexec and mpi4py, usable from this interpreter."""
    missing = mpi_missing()
    if missing is not None:
        unavailable(missing, MPI_HOW)
