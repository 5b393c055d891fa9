"""radam.gpu: Adam on any WebGPU adapter (AMD, Intel, Apple, NVIDIA, or Mesa's
lavapipe on the CPU), through the WGSL kernel ``shaders/adam.wgsl`` and wgpu-py.

Install with ``pip install "radam[gpu]"``; ``radam.Adam(params, device="gpu")`` uses
this module. Its public names:

* :func:`device` -- the one ``wgpu.GPUDevice`` radam uses in this process;
* :class:`DeviceArray` / :func:`asarray` -- a float32 array kept in a GPU buffer;
* :func:`adapter_name`, :func:`available`, :func:`wait`;
* :class:`GpuError`.

How the buffers are laid out, and when the host arrays are current: the docs' GPU
page (docs/gpu.md).
"""

# Re-exported: the public names (__all__), and the others radam.optimizer, the tests
# and the benchmarks use.
from ._arrays import DeviceArray, asarray
from ._device import (  # noqa: F401
    ADAPTER_HINT,
    INSTALL_HINT,
    WORKGROUP_SIZE,
    GpuError,
    _forget_context,
    _get_context,
    adapter_name,
    available,
    check_params,
    check_state_dtype,
    device,
    wait,
)
from ._engine import GpuEngine  # noqa: F401  (radam.optimizer builds it; not in __all__)

# The API; GpuEngine is the optimizer's backend, not for users.
__all__ = [
    "DeviceArray",
    "GpuError",
    "adapter_name",
    "asarray",
    "available",
    "device",
    "wait",
]
