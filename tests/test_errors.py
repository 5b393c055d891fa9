"""radam.Error is the base of radam's own exceptions, each keeping its built-in base."""

import numpy as np
import pytest
import radam
from radam import gpu


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (radam.CheckpointError, ValueError),
        (gpu.GpuError, RuntimeError),
        (radam.ReentrantCallError, RuntimeError),
    ],
)
def test_each_error_is_a_radam_error_and_keeps_its_builtin_base(error, builtin):
    assert issubclass(error, radam.Error)
    assert issubclass(error, builtin)


def test_a_damaged_checkpoint_is_caught_as_a_radam_error(tmp_path):
    path = tmp_path / "not-a-checkpoint.ckpt"
    path.write_bytes(b"no zip here")
    opt = radam.Adam([np.zeros(3)])
    with pytest.raises(radam.Error, match="checkpoint"):
        opt.load(path)
    with pytest.raises(ValueError):  # what handlers written before radam.Error catch
        opt.load(path)


def test_a_reentrant_step_is_caught_as_a_radam_error():
    w = np.zeros(3)
    armed = []

    def lr(step):
        if armed:  # not while the constructor checks the schedule
            opt.step([np.ones(3)])
        return 1e-3

    opt = radam.Adam([w], lr=lr)
    armed.append(True)
    with pytest.raises(radam.Error, match="from an lr schedule"):
        opt.step([np.ones(3)])
    assert not w.any()


def test_the_gpu_modules_public_names_are_its_api():
    assert "GpuEngine" not in gpu.__all__
    assert all(not name.startswith("_") for name in gpu.__all__)
