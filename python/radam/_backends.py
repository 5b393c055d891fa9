"""The device backends of ``radam.Adam``, and the one registry of them.

A :class:`Backend` says whether it can run here, checks the params and options it
is given (so that a missing driver is a clear error at construction), builds the
engine that steps them (``radam._engine.Engine``) and says whether its host
arrays lag the device (then the optimizer syncs before it reads them).
:data:`BACKENDS` lists them by the ``device`` name users pass; ``device="auto"``
picks the first device backend that :meth:`Backend.suits` the params, else the
CPU. Adding a backend: a class satisfying the protocol, its entry here and its
name in the ``device`` option's choices (``radam._options``; a test holds the two
equal), and an extra in ``pyproject.toml`` for its Python dependency.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from . import _core
from ._engine import Engine, TensorBuffers
from ._options import EngineOptions


class Backend(Protocol):
    """One device ``radam.Adam`` can step on."""

    name: str  # what ``device=`` names it
    # Whether the params and state live on the device, the host arrays being copies
    # that a sync brings up to date (and that are uploaded when the engine is built).
    resident: bool

    def suits(self, tensors: Sequence[Any], options: Sequence[EngineOptions]) -> bool:
        """Whether ``device="auto"`` should pick it for these params and options."""
        ...

    def check(
        self, tensors: Sequence[Any], options: Sequence[EngineOptions], state_format: Any
    ) -> None:
        """Refuse params, options or a state format (``radam._formats``) it cannot
        step, naming them, and set the device up (so a missing driver is an error
        now, not at the first step)."""
        ...

    def unsupported(self, options: EngineOptions) -> str | None:
        """``"name=value"`` of an option it does not implement, else None."""
        ...

    def engine(self, records: list[TensorBuffers]) -> Engine:
        """The engine over these tensors."""
        ...


class CpuBackend:
    """The Rust kernel on the NumPy arrays themselves: every option, every dtype."""

    name = "cpu"
    resident = False

    def suits(self, tensors: Sequence[Any], options: Sequence[EngineOptions]) -> bool:
        return True

    def check(
        self, tensors: Sequence[Any], options: Sequence[EngineOptions], state_format: Any
    ) -> None:
        pass

    def unsupported(self, options: EngineOptions) -> str | None:
        return None

    def engine(self, records: list[TensorBuffers]) -> Engine:
        return _core.CpuEngine(records)


class GpuBackend:
    """The WGSL kernel through wgpu-py (``radam.gpu``), imported only when used."""

    name = "gpu"
    resident = True

    def suits(self, tensors: Sequence[Any], options: Sequence[EngineOptions]) -> bool:
        """float32 params (16-bit ones step on the CPU), options the kernel has, and a
        real (non-CPU) adapter."""
        from . import gpu

        return (
            all(t.array.dtype == np.float32 for t in tensors)
            and all(self.unsupported(o) is None for o in options)
            and gpu.available(allow_cpu_adapter=False)
        )

    def check(
        self, tensors: Sequence[Any], options: Sequence[EngineOptions], state_format: Any
    ) -> None:
        from . import gpu

        gpu.check_params([t.array for t in tensors], [t.label for t in tensors])
        gpu.check_state_dtype(state_format)
        gpu.device()

    def unsupported(self, options: EngineOptions) -> str | None:
        return None  # the WGSL kernel implements every option

    def engine(self, records: list[TensorBuffers]) -> Engine:
        from .gpu import GpuEngine

        return GpuEngine(records)


# By the name ``device=`` takes, the CPU first; "auto" tries the others in order.
BACKENDS: dict[str, Backend] = {b.name: b for b in (CpuBackend(), GpuBackend())}


def resolve(
    device: str, tensors: Sequence[Any], options: Sequence[EngineOptions], state_format: Any
) -> Backend:
    """The backend of ``device`` (a name of :data:`BACKENDS`, or "auto"), its checks
    passed; "auto" is the first device backend that suits the params and options
    and finds its device, else the CPU."""
    if device == "auto":
        for backend in BACKENDS.values():
            if backend.resident and backend.suits(tensors, options):
                return backend
        return BACKENDS["cpu"]
    backend = BACKENDS[device]
    for i, o in enumerate(options):
        check_options(backend, o, f"params[{i}]")
    backend.check(tensors, options, state_format)
    return backend


def check_options(backend: Backend, options: EngineOptions, where: str) -> None:
    """Refuse a group's options that ``backend`` does not implement."""
    bad = backend.unsupported(options)
    if bad is not None:
        raise ValueError(
            f"{where}: {bad} is not supported with device={backend.name!r} (its kernel "
            "does not implement it); use device='cpu'"
        )
