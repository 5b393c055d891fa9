"""The process-wide WebGPU device radam uses: finding an adapter, the compiled kernel
and its pipelines, and the checks of what the kernel can step."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import _core
from .._errors import Error
from .._formats import StateFormat
from . import _blocked

WORKGROUP_SIZE = 256
# Elements per workgroup of the blocked state's entry point, from the shader's source.
BLOCKED_GROUP = _blocked.group(_core.ADAM_WGSL)
_FLOAT32 = np.dtype(np.float32)
# adam.wgsl's STATE override: how the state values are stored.
_STATE_KINDS = {"float32": 0, "bfloat16": 1, "float16": 2}
INSTALL_HINT = 'pip install "radam[gpu]" (wgpu-py 0.32, which needs Python 3.11 or newer)'
ADAPTER_HINT = (
    "no WebGPU adapter was found: install a GPU driver with Vulkan, Metal or D3D12 "
    "support, or Mesa's software Vulkan driver lavapipe "
    "(Debian/Ubuntu: apt-get install mesa-vulkan-drivers), or use device='cpu'"
)


class GpuError(Error, RuntimeError):
    """The GPU path is unavailable or failed (no wgpu, no adapter, out of memory,
    lost device). The host arrays are intact when this is raised."""


def _wgpu() -> Any:
    # Without XDG_RUNTIME_DIR the Vulkan loader prints an error line per probe on
    # headless machines; give it a private directory if the process has none.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="radam-xdg-")
    try:
        import wgpu
    except ImportError as err:
        raise GpuError(
            f"device='gpu' needs wgpu-py, which is not installed: {INSTALL_HINT}"
        ) from err
    return wgpu


# -- the process-wide device ---------------------------------------------------------------

_RANK = {"DiscreteGPU": 0, "IntegratedGPU": 1, "VirtualGPU": 2, "Unknown": 3, "CPU": 4}
_BACKEND_RANK = {"Vulkan": 0, "Metal": 0, "D3D12": 0, "OpenGL": 1, "OpenGLES": 1}


def _adapters(wgpu: Any) -> list[Any]:
    """All adapters, best first: real GPUs before software ones, native APIs before GL."""
    adapters = list(wgpu.gpu.enumerate_adapters_sync())
    return sorted(
        adapters,
        key=lambda a: (
            _RANK.get(a.info.get("adapter_type", "Unknown"), 3),
            _BACKEND_RANK.get(a.info.get("backend_type", ""), 2),
        ),
    )


def available(*, allow_cpu_adapter: bool = True) -> bool:
    """Whether wgpu is installed and finds an adapter (with ``allow_cpu_adapter=False``:
    a real, non-CPU one, which is what ``device="auto"`` asks for)."""
    try:
        wgpu = _wgpu()
        adapters = _adapters(wgpu)
    except Exception:
        return False
    if not allow_cpu_adapter:
        adapters = [a for a in adapters if a.info.get("adapter_type") != "CPU"]
    return bool(adapters)


class _Context:
    """One adapter's device, the compiled kernel and its pipelines (created once)."""

    def __init__(self, wgpu: Any) -> None:
        adapters = _adapters(wgpu)
        if not adapters:
            raise GpuError(ADAPTER_HINT)
        adapter = adapters[0]
        info = adapter.info
        self.wgpu = wgpu
        self.name = (
            f"{info.get('device') or info.get('vendor')} "
            f"({info.get('backend_type')}, {info.get('adapter_type')})"
        )
        self.is_cpu = info.get("adapter_type") == "CPU"
        lim = adapter.limits
        try:
            self.device = adapter.request_device_sync(
                label="radam",
                required_limits={
                    "max-buffer-size": lim["max-buffer-size"],
                    "max-storage-buffer-binding-size": lim["max-storage-buffer-binding-size"],
                },
            )
            self.limits = dict(self.device.limits)
            self.module = self.device.create_shader_module(
                label="radam adam.wgsl", code=_core.ADAM_WGSL
            )
            storage = wgpu.BufferBindingType.storage
            entries = [
                _layout_entry(wgpu, 0, wgpu.BufferBindingType.uniform, dynamic=True),
                _layout_entry(wgpu, 1, storage),
                _layout_entry(wgpu, 2, wgpu.BufferBindingType.read_only_storage),
                _layout_entry(wgpu, 3, storage),
            ]
            # The blocked state's entry point also reads the maps, as a uniform.
            maps = _layout_entry(wgpu, 4, wgpu.BufferBindingType.uniform)
            self.layout, self.layout_blocked = (
                self.device.create_bind_group_layout(label=f"radam {entry}", entries=e)
                for entry, e in (
                    ("adam_step", entries),
                    (_blocked.ENTRY_POINT, [*entries, maps]),
                )
            )
            self.pipeline_layout, self.pipeline_layout_blocked = (
                self.device.create_pipeline_layout(bind_group_layouts=[layout])
                for layout in (self.layout, self.layout_blocked)
            )
            # adam_step_rows (row-sparse grads) also reads a second group: one buffer
            # of the rows named and their values.
            self.layout_rows = self.device.create_bind_group_layout(
                label="radam adam_step_rows", entries=[_layout_entry(wgpu, 0, storage)]
            )
            self.pipeline_layout_rows = self.device.create_pipeline_layout(
                bind_group_layouts=[self.layout, self.layout_rows]
            )
        except wgpu.GPUError as err:
            raise GpuError(f"could not set up the GPU device {self.name}: {err}") from err
        self._pipelines: dict[tuple[Any, ...], Any] = {}
        self._maps: Any = None
        self.fence: Any = None  # a 4-byte buffer whose readback waits for the queue

    def pipeline(
        self,
        step: Mapping[str, int],
        state: np.dtype = _FLOAT32,
        param: np.dtype = _FLOAT32,
        blocked: bool = False,
        rows: bool = False,
    ) -> Any:
        """The compute pipeline of one variant, compiled on first use: adam.wgsl's
        override constants that a step sets (``step``: ``radam._core.GpuStep.constants``),
        and those of the buffers: ``state``, how the state is stored, and ``param``, the
        format each stored param is rounded to; ``blocked``: the blocked state's entry point;
        ``rows``: the row-sparse one."""
        key = (*sorted(step.items()), state.name, param.name, blocked, rows)
        if key not in self._pipelines:
            constants = {
                **step,
                "STATE": _STATE_KINDS[state.name],
                "PARAM": _STATE_KINDS[param.name],
                "WORKGROUP_SIZE": WORKGROUP_SIZE,
            }
            self._pipelines[key] = self.device.create_compute_pipeline(
                label="radam adam_step " + " ".join(f"{k}={v}" for k, v in constants.items()),
                layout=(
                    self.pipeline_layout_rows
                    if rows
                    else self.pipeline_layout_blocked
                    if blocked
                    else self.pipeline_layout
                ),
                compute={
                    "module": self.module,
                    "entry_point": "adam_step_rows"
                    if rows
                    else _blocked.ENTRY_POINT
                    if blocked
                    else "adam_step",
                    "constants": constants,
                },
            )
        return self._pipelines[key]

    def maps(self) -> Any:
        """The blocked state's uniform ``Maps`` (``_blocked.maps``), made on first use."""
        if self._maps is None:
            data = _blocked.maps()
            usage = self.wgpu.BufferUsage
            self._maps = self.device.create_buffer_with_data(
                label="radam 8-bit maps", data=data, usage=usage.UNIFORM
            )
        return self._maps

    def grid(self, n: int, per_group: int = WORKGROUP_SIZE) -> tuple[int, int]:
        """Workgroups (x, y) of ``per_group`` elements each covering ``n`` elements; y > 1
        past the per-dimension limit."""
        groups = -(-n // per_group)
        x = min(groups, self.limits["max-compute-workgroups-per-dimension"])
        return x, -(-groups // x)


def _layout_entry(wgpu: Any, binding: int, kind: Any, dynamic: bool = False) -> dict[str, Any]:
    return {
        "binding": binding,
        "visibility": wgpu.ShaderStage.COMPUTE,
        "buffer": {"type": kind, "has_dynamic_offset": dynamic},
    }


_context: _Context | None = None
_context_lock = threading.Lock()


def _get_context() -> _Context:
    global _context
    with _context_lock:
        if _context is None:
            wgpu = _wgpu()
            try:
                _context = _Context(wgpu)
            except GpuError:
                raise
            except Exception as err:  # wgpu-native raises plain errors for a missing driver
                raise GpuError(f"{ADAPTER_HINT} ({type(err).__name__}: {err})") from err
        return _context


def _forget_context(ctx: _Context) -> None:
    """After a lost device: the next use creates a new one."""
    global _context
    with _context_lock:
        if _context is ctx:
            _context = None


def device() -> Any:
    """The ``wgpu.GPUDevice`` radam uses in this process; make your grad buffers on it."""
    return _get_context().device


def adapter_name() -> str:
    """The adapter radam uses, e.g. ``"llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, CPU)"``."""
    return _get_context().name


def wait() -> None:
    """Block until all GPU work submitted so far has finished (for timing)."""
    ctx = _get_context()
    if ctx.fence is None:
        usage = ctx.wgpu.BufferUsage
        ctx.fence = ctx.device.create_buffer(size=4, usage=usage.COPY_SRC | usage.COPY_DST)
    ctx.device.queue.read_buffer(ctx.fence)


def check_params(arrays: Sequence[np.ndarray], labels: Sequence[str]) -> None:
    """The GPU kernel computes in float32 and steps float32, bfloat16 or float16 params,
    all of one dtype: reject anything else before any work is done."""
    for array, label in zip(arrays, labels):
        if array.dtype.name in _STATE_KINDS:
            if array.dtype != arrays[0].dtype:
                raise TypeError(
                    f"params{label} has dtype {array.dtype} but params{labels[0]} has "
                    f"{arrays[0].dtype}; device='gpu' steps params of one dtype per "
                    "optimizer: use one optimizer per dtype, or device='cpu'"
                )
            continue
        raise TypeError(
            f"params{label} has dtype {array.dtype}; device='gpu' updates float32, bfloat16 "
            "and float16 arrays only (WGSL has no float64): convert with "
            ".astype(np.float32) or use device='cpu'"
        )


def check_state_dtype(state_dtype: StateFormat | np.dtype | None) -> None:
    """The kernel stores state as float32, bfloat16 or float16, or in a format it
    has the codec of (``_blocked.steps``)."""
    if isinstance(state_dtype, StateFormat):
        if _blocked.steps(state_dtype):
            return
        state_dtype = state_dtype.dtype
    if state_dtype is not None and np.dtype(state_dtype).name not in _STATE_KINDS:
        raise TypeError(
            f"state_dtype={np.dtype(state_dtype).name}: device='gpu' stores state as "
            "float32, bfloat16 or float16"
        )
