"""The ``device="gpu"`` optimizer backend: option checks and ``GpuEngine``, which packs
the tensors into flat GPU buffers and dispatches the kernel."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _core
from ._arrays import DeviceArray
from ._device import (
    _FLOAT32,
    GpuError,
    _forget_context,
    _get_context,
    check_params,
    check_state_dtype,
)

# The uniform `Step` struct of adam.wgsl: 13 f32 scalars, the element range lo..hi, a pad.
_STEP_WORDS = 16
_LO, _HI = 13, 14


# The options the kernel implements: every EngineOptions field today. A field added
# later must keep the value plain ``radam.Adam`` gives it (its keyword default) until
# the kernel implements it.
_KERNEL_OPTIONS = frozenset(
    (
        "lr",
        "beta1",
        "beta2",
        "eps",
        "weight_decay",
        "decoupled_weight_decay",
        "amsgrad",
        "maximize",
        "efficient_form",
        "beta1_decay",
        "momentum",
        "nesterov",
        "max_gradient_elem",
        "max_gradient_norm",
        "bias_correction",
        "algorithm",
        "momentum_decay",
        "grad_scale",
    )
)


@functools.cache
def _plain_adam() -> tuple[dict[str, Any], frozenset[str]]:
    """The plain-Adam value of every other option, and the options of other rules only."""
    import inspect

    from .. import _options
    from ..optimizer import Adam

    plain = {
        name: p.default
        for name, p in inspect.signature(Adam.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    plain["algorithm"] = "adam"
    rules = getattr(_options, "RULE_OPTIONS", {})
    other_rules = frozenset(f for rule, names in rules.items() if rule != "adam" for f in names)
    return plain, other_rules


def unsupported_option(options: Any) -> str | None:
    """``"name=value"`` of the first option the GPU kernel does not implement, else None."""
    plain, other_rules = _plain_adam()
    for name in getattr(options, "_fields", ()):
        if name in _KERNEL_OPTIONS or (name in other_rules and name not in plain):
            continue
        value = getattr(options, name)
        if name not in plain or value != plain[name]:
            return f"{name}={value!r}"
    return None


def check_options(options: Any, where: str) -> None:
    bad = unsupported_option(options)
    if bad is not None:
        raise ValueError(
            f"{where}: {bad} is not supported with device='gpu' (the GPU kernel does not "
            "implement it yet); use device='cpu'"
        )


# Lowers the adapter's max_storage_buffer_binding_size for engines built while it is set:
# the tests use it to exercise chunking on small arrays.
_MAX_BINDING_BYTES: int | None = None


def _align(n: int, to: int) -> int:
    return -(-n // to) * to


class _Group:
    """Where one parameter group lives in the flat buffers, its chunks and dispatches."""

    def __init__(self, amsgrad: bool, velocity: bool, per_word: int = 1) -> None:
        self.amsgrad = amsgrad
        self.velocity = velocity
        # State values per element: m, v[, max_v][, velocity].
        self.stride = 2 + int(amsgrad) + int(velocity)
        # Their slots (16-bit state: padded to whole u32 words) and words per element.
        self.slots = _align(self.stride, per_word)
        self.words = self.slots // per_word
        self.start = 0  # first element in params/grads
        self.state_start = 0  # first word in state
        self.size = 0
        self.tensors: list[int] = []  # engine tensor indices, in order
        self.chunks: list[tuple[int, int]] = []  # (first element in the group, length)
        self.bind_groups: list[int] = []  # per chunk, index into the engine's bind groups
        # Dispatches as (uniform slot, bind group, lo, hi, tensor or -1): one per chunk,
        # and (when norm clipping, whose factor is per tensor) one per tensor per chunk.
        self.whole: list[tuple[int, int, int, int, int]] = []
        self.per_tensor: list[tuple[int, int, int, int, int]] = []


class GpuEngine:
    """Steps a fixed list of tensors (float32, or bfloat16/float16 computed in float32)
    on the GPU (the ``device="gpu"`` backend).

    Same constructor and ``step`` as ``radam._core.CpuEngine``, plus ``sync()``.
    Building uploads the params and state; the host arrays stay the user's.
    """

    def __init__(
        self,
        labels: Sequence[str],
        params: Sequence[np.ndarray],
        exp_avgs: Sequence[np.ndarray],
        exp_avg_sqs: Sequence[np.ndarray],
        max_exp_avg_sqs: Sequence[np.ndarray | None],
        velocities: Sequence[np.ndarray | None],
        groups: Sequence[int],
        masters: Sequence[np.ndarray | None] | None = None,
    ) -> None:
        check_params(params, labels)
        n = len(params)
        masters = [None] * n if masters is None else list(masters)
        lists = (labels, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, velocities, groups, masters)
        if any(len(x) != n for x in lists):
            raise ValueError("labels, params, states and groups must have one entry per tensor")
        self._param_dtype = params[0].dtype if n else _FLOAT32
        self._masters = masters
        for label, p, master in zip(labels, params, masters):
            if (master is None) != (masters[0] is None) or (
                master is not None and (master.dtype != _FLOAT32 or master.shape != p.shape)
            ):
                raise TypeError(
                    f"state{label}['master_param']: device='gpu' needs a float32 master copy "
                    "of the param's shape for every param, or none"
                )
        # The format the kernel rounds each stored param to: none with master copies
        # (the params buffer holds them) or float32 params.
        self._param_round = self._param_dtype if masters and masters[0] is None else _FLOAT32
        # One storage type for the whole state: float32, bfloat16 or float16.
        self._state_dtype = exp_avgs[0].dtype if n else _FLOAT32
        for label, arrays in zip(labels, zip(exp_avgs, exp_avg_sqs, max_exp_avg_sqs, velocities)):
            for a in arrays:
                if a is not None and a.dtype != self._state_dtype:
                    check_state_dtype(a.dtype)
                    raise TypeError(
                        f"state{label} has dtype {a.dtype}, but the optimizer's state is "
                        f"{self._state_dtype}; device='gpu' stores all state in one dtype"
                    )
        check_state_dtype(self._state_dtype)
        # State values per u32 word of the state buffer.
        self._per_word = 4 // self._state_dtype.itemsize
        ctx = _get_context()
        self._ctx = ctx
        wgpu = ctx.wgpu
        self._labels = list(labels)
        self._params = list(params)
        self._exp_avgs = list(exp_avgs)
        self._exp_avg_sqs = list(exp_avg_sqs)
        self._maxes = list(max_exp_avg_sqs)
        self._velocities = list(velocities)
        self._tensor_group = list(groups)
        self._host_layout = [(a.shape, a.dtype) for _, a in self._hosts()]
        self._broken: str | None = None
        limits = ctx.limits
        align_bytes = max(limits["min-storage-buffer-offset-alignment"], 4)
        align = align_bytes // 4
        binding = limits["max-storage-buffer-binding-size"]
        if _MAX_BINDING_BYTES is not None:
            binding = min(binding, _MAX_BINDING_BYTES)

        n_groups = max(groups) + 1 if groups else 0

        def uses(arrays: list[Any], gi: int) -> bool:
            return any(a is not None for a, g in zip(arrays, groups) if g == gi)

        self._groups = [
            _Group(uses(self._maxes, gi), uses(self._velocities, gi), self._per_word)
            for gi in range(n_groups)
        ]
        # Each tensor's first element in the flat params/grads buffers.
        self._offsets = [0] * len(self._params)
        elements, words = 0, 0
        for gi, group in enumerate(self._groups):
            group.start, group.state_start = elements, words
            for i, g in enumerate(groups):
                if g == gi:
                    self._offsets[i] = elements + group.size
                    group.size += self._params[i].size
                    group.tensors.append(i)
            elements = _align(elements + group.size, align)
            words = _align(words + group.size * group.words, align)
            chunk = (binding // (4 * max(group.words, 1))) // align * align
            if chunk <= 0:
                raise GpuError(f"the adapter's storage binding limit ({binding} B) is too small")
            group.chunks = [(s, min(chunk, group.size - s)) for s in range(0, group.size, chunk)]
        self._n_elements = max(elements, 1)
        self._n_state_words = max(words, 1)
        for what, nbytes in (("params", self._n_elements * 4), ("state", self._n_state_words * 4)):
            if nbytes > limits["max-buffer-size"]:
                raise GpuError(
                    f"the {what} buffer would need {nbytes} bytes, over the adapter's "
                    f"max_buffer_size of {limits['max-buffer-size']} bytes ({ctx.name}); "
                    "use device='cpu' for a model this size"
                )

        # Host-side staging, reused every step: the packed grads and the uniforms.
        self._staging = np.zeros(self._n_elements, _FLOAT32)
        self._grad_views = [
            self._staging[o : o + p.size].reshape(p.shape)
            for o, p in zip(self._offsets, self._params)
        ]
        self._ustride = _align(
            _STEP_WORDS * 4, max(limits["min-uniform-buffer-offset-alignment"], 16)
        )
        # Uniform slots: first one per chunk (every step uploads those), then one per
        # tensor per chunk (uploaded only by steps that clip by norm).
        slots, bind_group = 0, 0
        for group in self._groups:
            for _, length in group.chunks:
                group.bind_groups.append(bind_group)
                group.whole.append((slots, bind_group, 0, length, -1))
                slots, bind_group = slots + 1, bind_group + 1
        self._whole_slots = slots
        for group in self._groups:
            for (start, length), bg in zip(group.chunks, group.bind_groups):
                for i in group.tensors:
                    first = self._offsets[i] - group.start - start
                    lo, hi = max(first, 0), min(first + self._params[i].size, length)
                    if lo < hi:
                        group.per_tensor.append((slots, bg, lo, hi, i))
                        slots += 1
        self._uniforms = np.zeros((max(slots, 1), self._ustride // 4), _FLOAT32)
        ranges = self._uniforms.view(np.uint32)
        for group in self._groups:
            for slot, _, lo, hi, _ in group.whole + group.per_tensor:
                ranges[slot, _LO], ranges[slot, _HI] = lo, hi

        usage = wgpu.BufferUsage
        dev = ctx.device
        try:
            self._param_buf = dev.create_buffer(
                label="radam params",
                size=self._n_elements * 4,
                usage=usage.STORAGE | usage.COPY_DST | usage.COPY_SRC,
            )
            self._grad_buf = dev.create_buffer(
                label="radam grads", size=self._n_elements * 4, usage=usage.STORAGE | usage.COPY_DST
            )
            self._state_buf = dev.create_buffer(
                label="radam state",
                size=self._n_state_words * 4,
                usage=usage.STORAGE | usage.COPY_DST | usage.COPY_SRC,
            )
            self._uniform_buf = dev.create_buffer(
                label="radam step scalars",
                size=self._uniforms.nbytes,
                usage=usage.UNIFORM | usage.COPY_DST,
            )
            self._readback: Any = None  # created at the first step that reads params back
            self._bind_groups = [
                self._bind_group(gi, start, length)
                for gi, g in enumerate(self._groups)
                for start, length in g.chunks
            ]
            self._upload()
        except wgpu.GPUError as err:
            raise self._error("building the GPU optimizer", err) from err

    def _bind_group(self, gi: int, start: int, length: int) -> Any:
        group = self._groups[gi]
        first = group.start + start
        entries = [
            {
                # One slot of the uniforms, chosen per dispatch by the dynamic offset.
                "binding": 0,
                "resource": {"buffer": self._uniform_buf, "offset": 0, "size": _STEP_WORDS * 4},
            },
            {
                "binding": 1,
                "resource": {"buffer": self._param_buf, "offset": 4 * first, "size": 4 * length},
            },
            {
                "binding": 2,
                "resource": {"buffer": self._grad_buf, "offset": 4 * first, "size": 4 * length},
            },
            {
                "binding": 3,
                "resource": {
                    "buffer": self._state_buf,
                    "offset": 4 * (group.state_start + start * group.words),
                    "size": 4 * length * group.words,
                },
            },
        ]
        return self._ctx.device.create_bind_group(layout=self._ctx.layout, entries=entries)

    def _state_views(self, image: np.ndarray) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """For each tensor: (host array, its strided view in a flat state image) per role.
        ``image`` is the state buffer's bytes as state values (float32 or 16-bit)."""
        out = []
        for i, p in enumerate(self._params):
            group = self._groups[self._tensor_group[i]]
            first = group.state_start * self._per_word
            first += (self._offsets[i] - group.start) * group.slots
            rows = image[first : first + p.size * group.slots].reshape(p.size, group.slots)
            hosts = [self._exp_avgs[i], self._exp_avg_sqs[i]]
            if group.amsgrad:
                hosts.append(self._maxes[i])
            if group.velocity:
                hosts.append(self._velocities[i])
            out.append([(h, rows[:, k].reshape(p.shape)) for k, h in enumerate(hosts)])
        return out

    def _upload(self) -> None:
        """Params (or their master copies) and state from the host arrays into the
        GPU buffers."""
        queue = self._ctx.device.queue
        for view, p, master in zip(self._grad_views, self._params, self._masters):
            np.copyto(view, p if master is None else master)
        queue.write_buffer(self._param_buf, 0, self._staging)
        image = np.zeros(self._n_state_words * self._per_word, self._state_dtype)
        for roles in self._state_views(image):
            for host, view in roles:
                np.copyto(view, host)
        queue.write_buffer(self._state_buf, 0, image.view(np.uint32))
        self._staging[:] = 0

    def _error(self, doing: str, err: BaseException) -> GpuError:
        wgpu, text = self._ctx.wgpu, str(err)
        if "lost" in text.lower():
            what = "the GPU device was lost"
            _forget_context(self._ctx)  # the next optimizer gets a new device
        elif isinstance(err, wgpu.GPUOutOfMemoryError) or "out of memory" in text.lower():
            what = "out of GPU memory"
        else:
            what = "the GPU failed"
        return GpuError(
            f"{what} while {doing} on {self._ctx.name}: {text.strip()}\n"
            "The host arrays are intact: params as of the last step with NumPy grads or "
            "sync(), state as of the last sync() or state_dict()"
        )

    # -- the step ----------------------------------------------------------------------------

    def _check_grads(self, grads: Sequence[Any]) -> list[Any]:
        """Every grad checked before anything is written; returns its kind per tensor."""
        if len(grads) != len(self._params):
            raise ValueError(
                f"expected {len(self._params)} grads (one per param), got {len(grads)}"
            )
        wgpu = self._ctx.wgpu
        kinds = []
        for i, (grad, param) in enumerate(zip(grads, self._params)):
            what = f"grads{self._labels[i]}"
            if isinstance(grad, np.ndarray):
                if grad.dtype != param.dtype:
                    raise TypeError(
                        f"{what} has dtype {grad.dtype} but its param has dtype {param.dtype}; "
                        f"radam never casts, pass a {param.dtype} array"
                    )
                if grad.shape != param.shape:
                    raise ValueError(
                        f"{what} has shape {grad.shape} but its param has shape {param.shape}"
                    )
                hosts = [
                    param,
                    self._masters[i],
                    self._exp_avgs[i],
                    self._exp_avg_sqs[i],
                    self._maxes[i],
                    self._velocities[i],
                ]
                if any(h is not None and np.may_share_memory(grad, h) for h in hosts):
                    raise ValueError(
                        f"{what} shares memory with a param or optimizer state; "
                        "pass a separate gradient array"
                    )
                kinds.append(None)
            elif param.dtype != _FLOAT32 and isinstance(grad, (DeviceArray, wgpu.GPUBuffer)):
                raise TypeError(
                    f"{what} is a float32 device array but its param has dtype {param.dtype}; "
                    f"radam never casts: pass a NumPy {param.dtype} grad"
                )
            elif isinstance(grad, DeviceArray):
                if grad.shape != param.shape:
                    raise ValueError(
                        f"{what} has shape {grad.shape} but its param has shape {param.shape}"
                    )
                self._check_buffer(grad.buffer, what)
                kinds.append((grad.buffer, grad.offset))
            elif isinstance(grad, wgpu.GPUBuffer):
                if grad.size != param.nbytes:
                    raise ValueError(
                        f"{what} is a GPUBuffer of {grad.size} bytes but its param (float32, "
                        f"shape {param.shape}) has {param.nbytes}"
                    )
                self._check_buffer(grad, what)
                kinds.append((grad, 0))
            else:
                raise TypeError(
                    f"{what} must be a numpy.ndarray, a radam.gpu.DeviceArray or a "
                    f"wgpu.GPUBuffer, got {type(grad).__name__}"
                )
        return kinds

    def _hosts(self) -> list[tuple[str, np.ndarray]]:
        """Every host array that steps and ``sync`` write, with its name."""
        names = ("master_param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "velocity")
        hosts = []
        for i, label in enumerate(self._labels):
            hosts.append((f"params{label}", self._params[i]))
            state = (
                self._masters[i],
                self._exp_avgs[i],
                self._exp_avg_sqs[i],
                self._maxes[i],
                self._velocities[i],
            )
            hosts += [(f"state{label}[{n!r}]", a) for n, a in zip(names, state) if a is not None]
        return hosts

    def _check_hosts(self) -> None:
        """The host arrays that steps and ``sync`` write (params, master copies,
        state) are still writable, of their shape and dtype: checked before the
        device steps, which could not be undone (the optimizer would be out of
        step with its host arrays from then on)."""
        for (what, array), (shape, dtype) in zip(self._hosts(), self._host_layout):
            if array.shape != shape or array.dtype != dtype:
                raise ValueError(
                    f"{what} has shape {array.shape} and dtype {array.dtype}, but the optimizer "
                    f"was built with shape {shape} and dtype {dtype}; it must keep both"
                )
            if not array.flags.writeable:
                raise ValueError(f"{what} is read-only; the optimizer updates it in place")

    def _check_buffer(self, buffer: Any, what: str) -> None:
        usage = self._ctx.wgpu.BufferUsage
        if getattr(buffer, "_device", None) is not self._ctx.device:
            raise ValueError(f"{what} lives on another GPU device; create it on radam.gpu.device()")
        if not buffer.usage & usage.COPY_SRC:
            raise ValueError(
                f"{what} is a GPUBuffer without COPY_SRC usage; the optimizer copies it"
            )
        if buffer.map_state != "unmapped":
            raise ValueError(f"{what} is mapped; unmap it before the step")

    def _scalars(
        self, t: int, options: Sequence[Any], carries: Sequence[float]
    ) -> tuple[list[dict[str, Any]], list[float]]:
        """Each group's scalars of step ``t`` in f64, from the Rust core (rust/scalars.rs,
        the CPU path's own formulas), and the carries for the next step."""
        scalars, next_carries = [], []
        for gi, (o, carry) in enumerate(zip(options, carries)):
            try:
                values, carry = _core.step_scalars(o, t, float(carry))
            except ValueError as err:
                raise ValueError(f"param_groups[{gi}]: {err}") from None
            scalars.append(values)
            next_carries.append(carry)
        return scalars, next_carries

    @staticmethod
    def _clips_norm(s: dict[str, Any]) -> bool:
        """Norm clipping is on (element clipping wins), as StepScalars::clips_norm."""
        return s["max_gradient_norm"] > 0.0 and s["max_gradient_elem"] == 0.0

    def _write_uniforms(self, scalars: list[dict[str, Any]]) -> int:
        """Round each group's scalars once to f32 into its uniform slots, as
        StepScalars::coeffs does; returns how many slots the step uses."""
        used = self._whole_slots
        for group, s in zip(self._groups, scalars):
            sign = -1.0 if s["maximize"] else 1.0
            clip = s["max_gradient_elem"] * s["grad_scale"] if s["max_gradient_elem"] > 0 else 0.0
            row = np.array(
                [
                    s["step_size"],
                    s["inv_bias_correction2_sqrt"],
                    s["one_minus_beta1"],
                    s["beta2"],
                    s["one_minus_beta2"],
                    s["eps"],
                    s["l2"],
                    s["decay"],
                    sign / s["grad_scale"],
                    clip,
                    s["nadam_grad"],
                    s["momentum_keep"],
                    s["momentum_step"],
                ],
                np.float64,
            ).astype(_FLOAT32)
            for slot, *_ in group.whole:
                self._uniforms[slot, : len(row)] = row
            if not self._clips_norm(s):
                continue
            # The factor of each tensor's gradient, whose raw (loss-scaled) L2 norm
            # is measured on the host in f64 from the packed float32 grads.
            used = len(self._uniforms)
            factors = {}
            for i in group.tensors:
                norm = _core.grad_norm(self._grad_views[i]) / s["grad_scale"]
                scale = s["max_gradient_norm"] / norm if norm > s["max_gradient_norm"] else 1.0
                factors[i] = np.float32(sign * scale / s["grad_scale"])
            for slot, _, _, _, i in group.per_tensor:
                self._uniforms[slot, : len(row)] = row
                self._uniforms[slot, 8] = factors[i]
        return used

    def step(
        self,
        grads: Sequence[Any],
        step: int,
        options: Sequence[Any],
        carries: Sequence[float],
        skip_nonfinite: bool = False,
    ) -> list[float] | None:
        """One step (number ``step``, from 1) with per-group options (``EngineOptions``)
        and what each group carries from the previous step (NAdam's ``mu_product``).

        Returns the carries for the next step, or None when ``skip_nonfinite`` found
        a NaN or Inf in a gradient (then nothing was written), as ``CpuEngine.step``.
        Every grad is checked before anything is written; on an error nothing changed.
        """
        if self._broken:
            raise GpuError(self._broken)
        self._check_hosts()
        if len(options) != len(self._groups):
            raise ValueError(f"expected options for {len(self._groups)} groups, got {len(options)}")
        if len(carries) != len(self._groups):
            raise ValueError("carries must have one entry per group")
        for gi, (group, o) in enumerate(zip(self._groups, options)):
            check_options(o, f"param_groups[{gi}]")
            if bool(o.amsgrad) != group.amsgrad or bool(o.uses_velocity) != group.velocity:
                raise ValueError(
                    f"param_groups[{gi}]: its options do not match the optimizer's state "
                    "(amsgrad, momentum)"
                )
        kinds = self._check_grads(grads)
        scalars, next_carries = self._scalars(step, options, carries)
        on_device = [i for i, k in enumerate(kinds) if k is not None]
        if on_device and skip_nonfinite:
            raise ValueError(
                f"grads{self._labels[on_device[0]]} is a device array, but skip_nonfinite=True "
                "checks gradients on the host: pass NumPy grads, or skip_nonfinite=False"
            )
        for i in on_device:
            gi = self._tensor_group[i]
            if self._clips_norm(scalars[gi]):
                raise ValueError(
                    f"grads{self._labels[i]} is a device array, but param_groups[{gi}] clips "
                    "by max_gradient_norm, whose norm is measured on the host: pass NumPy grads"
                )
        host_grads = len(on_device) < len(kinds)
        for view, grad, kind in zip(self._grad_views, grads, kinds):
            if kind is None:
                np.copyto(view, grad)
        if skip_nonfinite and not np.isfinite(self._staging).all():
            return None  # nothing was sent to the GPU
        used = self._write_uniforms(scalars)
        ctx, wgpu = self._ctx, self._ctx.wgpu
        dev, queue = ctx.device, ctx.device.queue
        submitted = False
        try:
            if host_grads:
                queue.write_buffer(self._grad_buf, 0, self._staging)
            queue.write_buffer(self._uniform_buf, 0, self._uniforms[:used])
            encoder = dev.create_command_encoder(label="radam step")
            for offset, (kind, p) in zip(self._offsets, zip(kinds, self._params)):
                if kind is not None and p.nbytes:
                    encoder.copy_buffer_to_buffer(
                        kind[0], kind[1], self._grad_buf, 4 * offset, p.nbytes
                    )
            compute = encoder.begin_compute_pass(label="radam adam_step")
            for group, s in zip(self._groups, scalars):
                compute.set_pipeline(
                    ctx.pipeline(
                        amsgrad=group.amsgrad,
                        momentum=group.velocity,
                        l2=s["l2"] != 0.0,
                        clip=s["max_gradient_elem"] > 0.0,
                        rule=s["rule"],
                        state=self._state_dtype,
                        param=self._param_round,
                    )
                )
                dispatches = group.per_tensor if self._clips_norm(s) else group.whole
                for slot, bind_group, lo, hi, _ in dispatches:
                    compute.set_bind_group(0, self._bind_groups[bind_group], [slot * self._ustride])
                    x, y = ctx.grid(hi - lo)
                    compute.dispatch_workgroups(x, y, 1)
            compute.end()
            if host_grads:
                if self._readback is None:
                    self._readback = dev.create_buffer(
                        label="radam params readback",
                        size=self._n_elements * 4,
                        usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST,
                    )
                encoder.copy_buffer_to_buffer(
                    self._param_buf, 0, self._readback, 0, self._n_elements * 4
                )
            commands = encoder.finish()
            queue.submit([commands])
            submitted = True
            if host_grads:
                self._readback.map_sync(wgpu.MapMode.READ)
                try:
                    self._params_from(
                        np.frombuffer(self._readback.read_mapped(copy=False), _FLOAT32)
                    )
                finally:
                    self._readback.unmap()
        except (wgpu.GPUError, RuntimeError) as err:
            error = self._error(f"running step {step}", err)
            if submitted:
                # The GPU may have stepped without us reading it back: refuse to go on.
                self._broken = f"{error}; this optimizer cannot continue on the GPU"
                _forget_context(ctx)
            raise error from err
        return next_carries

    def sync(self) -> None:
        """Copy params and state from the GPU into the host arrays."""
        if self._broken:
            raise GpuError(self._broken)
        self._check_hosts()
        queue = self._ctx.device.queue
        try:
            flat = np.frombuffer(queue.read_buffer(self._param_buf), _FLOAT32)
            image = np.frombuffer(queue.read_buffer(self._state_buf), self._state_dtype)
        except (self._ctx.wgpu.GPUError, RuntimeError) as err:
            raise self._error("reading params and state back", err) from err
        self._params_from(flat)
        for roles in self._state_views(image):
            for host, view in roles:
                np.copyto(host, view)

    def _params_from(self, flat: np.ndarray) -> None:
        """The host params (and master copies) from the params buffer's contents:
        16-bit params receive their values (exact) or their master copies rounded
        to nearest even, as the CPU's staging does."""
        for o, p, master in zip(self._offsets, self._params, self._masters):
            values = flat[o : o + p.size].reshape(p.shape)
            if master is not None:
                np.copyto(master, values)
            np.copyto(p, values, casting="unsafe")

    def __len__(self) -> int:
        return len(self._params)
