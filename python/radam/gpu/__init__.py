"""radam.gpu: Adam on any WebGPU adapter (AMD, Intel, Apple, NVIDIA, or Mesa's
lavapipe on the CPU), through the WGSL kernel ``shaders/adam.wgsl`` and wgpu-py.

Install with ``pip install "radam[gpu]"``. ``radam.Adam(params, device="gpu")``
uses this module; users also get:

* :func:`device` -- the one ``wgpu.GPUDevice`` radam uses in this process (create
  your own ``wgpu.GPUBuffer`` grads on it);
* :class:`DeviceArray` / :func:`asarray` -- a float32 array kept in a GPU buffer,
  made from NumPy and read back with :meth:`DeviceArray.numpy`;
* :func:`adapter_name` -- which adapter that is.

How the optimizer lays out its buffers (``GpuEngine``; the arithmetic is ``_layout.py``'s):

* every parameter group's tensors are packed one after another into one flat
  ``params`` buffer and one flat ``grads`` buffer (groups start at offsets
  aligned to ``min_storage_buffer_offset_alignment``), and the optimizer state
  into one ``state`` buffer, interleaved per element: ``m, v`` (AdaMax: ``m, u``),
  then AMSGrad's ``max_v`` and momentum's ``velocity`` when used. A dispatch binds
  three storage buffers whatever the options, so every variant also runs where
  ``max_storage_buffers_per_shader_stage`` < 5;
* a group is stepped in chunks that each fit ``max_storage_buffer_binding_size``
  (128 MiB on lavapipe), bound at aligned offsets: one dispatch per chunk, not
  one per tensor. A dispatch is 2-D when a chunk needs more than 65535
  workgroups;
* the per-step scalars (bias corrections, decay factors, NAdam's and RAdam's
  terms, momentum and clipping factors) are the CPU kernel's own coefficients:
  the Rust core computes them in float64 and rounds them once to float32
  (``radam._core.GpuStep``, rust/uniform.rs), as rows in the exact order of the
  shader's ``Step`` struct (``radam._core.STEP_FIELDS``), so the host computes
  no formula. Each row is written, with its dispatch's element range, to a
  uniform buffer bound with a dynamic offset. The update rule (Adam, AdaMax,
  NAdam, RAdam's un-adapted step), AMSGrad, momentum, L2 and element clipping
  are override constants of the pipeline, also from the core, chosen per step
  (RAdam switches rule at its step 6 with the default betas);
* ``max_gradient_norm`` (per tensor, as on the CPU): the norm is measured on the
  host by the core, in float64 in the CPU step's summation order
  (``GpuStep.tensor_row``), from the float32 grads as packed for upload; the group
  is then dispatched once per tensor per chunk, each with its own row. It needs
  NumPy grads: device grads in a group that clips by norm are refused with a
  ValueError;
* ``skip_nonfinite``: the packed NumPy grads are checked on the host
  (``np.isfinite``) before anything is sent; a step with device grads and
  ``skip_nonfinite=True`` is refused with a ValueError;
* 16-bit state (``state_dtype`` bfloat16/float16, float32 params): the state
  buffer holds the values two per u32 word (WGSL has 16-bit storage only with the
  optional ``shader-f16`` feature), in the order above with the first of each
  pair in the low half: ``(m, v)`` fill one word per element, ``(max_v,
  velocity)`` a second one (half of it padding when only one is used), so every
  invocation writes only its own words. The kernel widens each value exactly and
  rounds each stored value once to nearest even, on the bits, as rust/convert.rs
  does, so the stored 16-bit values are the CPU's (up to the last-ulp differences
  of an unfused ``fma``). The host arrays are 16-bit NumPy arrays as on the CPU;
* 16-bit params (float16/bfloat16, all params of one optimizer of one dtype) are
  computed as on the CPU: widened, stepped in float32, and rounded once to nearest
  even when stored. The params and grads buffers stay float32 (4 bytes per value on
  the device, holding the 16-bit values exactly; NumPy grads are widened on the host
  when packed): without ``master_weights`` the kernel rounds each param it stores
  (adam.wgsl's ``PARAM``); with ``master_weights`` the params buffer holds the
  float32 master copies, and the host rounds them into the 16-bit params when it
  reads them back. Their grads must be NumPy arrays of the params' dtype (device
  arrays are float32). ``device="auto"`` picks the CPU for them;
* ``stochastic_rounding`` (16-bit params without master weights): the kernel rounds
  each stored param by the CPU's rule (adam.wgsl's ``STOCHASTIC``) with random bits
  ``lowbias32(index in the tensor ^ round_key)``; the core computes each tensor's
  ``round_key`` from (seed, step, the tensor's position) as the CPU does
  (``GpuStep.round_key``), so the group is dispatched once per tensor per chunk, as
  for norm clipping, each row with its tensor's key and the index in the tensor of
  its first element (``round_first``).
* 8-bit state (``state_dtype="8bit"``, bitsandbytes' blockwise format: uint8
  codes and a float32 absmax per 256-element block; tensors under 4096 elements
  keep float32 state): each group's 8-bit tensors are laid out apart from its
  others, each from a block boundary, in chunks of whole blocks; the state buffer
  holds one record per block, the 64 words of each state value's codes (four to a
  word, element 4i + j's in byte j, so the words viewed as bytes are the host's
  code array) and then each value's absmax. The entry point ``adam_step_q8`` steps
  a tensor at a time, one workgroup of 64 invocations per block: decode through
  the Rust core's maps, the float32 update of ``adam_step`` (one WGSL function
  for both), the block's new absmax reduced in workgroup memory, and the encode of
  rust/quant/codec.rs (``1 / absmax`` correctly rounded, the nearest code
  estimated by arithmetic and settled against the float32 midpoints beside it,
  ties to the even code), so the bytes
  are the CPU's up to the odd code an unfused ``fma`` moves across a midpoint.
  16-bit params are rounded as ``adam_step`` rounds them, stochastically too (the
  per-tensor dispatches carry ``round_key`` and ``round_first``).

When the host arrays are current: the NumPy params and state arrays the
optimizer was given (``opt.state[...]``) are the GPU buffers' host copies.

* params: after every ``step`` that received at least one NumPy grad (NumPy in,
  NumPy out: the optimizer reads the params back, so the next gradient can be
  computed on the host), and after ``opt.sync()`` / ``opt.state_dict()``. A step
  whose grads are all device arrays or ``wgpu.GPUBuffer`` leaves the host params
  as they were until the next ``sync()``.
* state (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``): only after
  ``opt.sync()`` or ``opt.state_dict()``.
* writes to the host arrays are not sent to the GPU (the GPU copy is the
  master); to change params or state, use ``load_state_dict`` or a new optimizer.
* after an error (out of GPU memory, a lost device) the host arrays hold what
  they held after the last readback: they are never partly written.
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
