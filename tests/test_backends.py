"""The backend registry: ``device=`` names one of ``radam._backends.BACKENDS``, the
optimizer asks its backend (not the device string) what it supports, and a
backend that lacks an option refuses it naming the group, with nothing changed."""

import numpy as np
import pytest
import radam
from helpers import assert_unchanged, snapshot
from radam import _backends, _options


def test_the_device_option_offers_each_registered_backend_and_auto():
    assert _options.BY_NAME["device"].choices == (*_backends.BACKENDS, "auto")
    assert all(name == b.name for name, b in _backends.BACKENDS.items())


def test_the_cpu_backend_steps_the_host_arrays_themselves():
    w = np.ones(4, np.float32)
    opt = radam.Adam([w], lr=0.1, device="cpu")
    assert opt._backend is _backends.BACKENDS["cpu"] and not opt._backend.resident
    opt.step([np.ones(4, np.float32)])
    np.testing.assert_allclose(w, 0.9, rtol=1e-6)  # Adam's first step is lr * sign(g)


def _lacks_nesterov(options):
    return "nesterov=True" if options.nesterov else None


@pytest.mark.usefixtures("adapter")
def test_an_option_a_backend_lacks_is_refused_at_construction_and_step(monkeypatch):
    gpu = _backends.BACKENDS["gpu"]
    monkeypatch.setattr(gpu, "unsupported", _lacks_nesterov)
    w = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"params\[0\]: nesterov=True .* device='gpu'"):
        radam.Adam([w], device="gpu", momentum=0.5, nesterov=True)
    opt = radam.Adam([w], device="gpu", momentum=0.5)
    assert opt._backend is gpu and opt._backend.resident
    opt.step([np.ones(4, np.float32)])
    opt.param_groups[0]["nesterov"] = True
    before = snapshot(opt)
    with pytest.raises(ValueError, match=r"param_groups\[0\]: nesterov=True .* device='gpu'"):
        opt.step([np.ones(4, np.float32)])
    assert_unchanged(opt, before)


@pytest.mark.usefixtures("adapter")
def test_auto_passes_over_a_backend_that_lacks_an_option(monkeypatch):
    gpu = _backends.BACKENDS["gpu"]
    monkeypatch.setattr(gpu, "unsupported", _lacks_nesterov)
    monkeypatch.setattr(radam.gpu, "available", lambda allow_cpu_adapter=True: True)
    w = np.ones(4, np.float32)
    assert radam.Adam([w], device="auto", momentum=0.5).device == "gpu"
    assert radam.Adam([w], device="auto", momentum=0.5, nesterov=True).device == "cpu"
    assert radam.Adam([w.astype(np.float16)], device="auto").device == "cpu"
