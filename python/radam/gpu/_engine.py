"""The ``device="gpu"`` optimizer backend: ``GpuEngine``, which packs the tensors
into flat GPU buffers (laid out by ``_layout.py``) and dispatches the kernel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _core
from .._engine import (
    LAST_STEP,
    MASTER,
    MAX_EXP_AVG_SQ,
    VELOCITY,
    TensorBuffers,
)
from .._row_sparse import RowSparse
from . import _blocked
from ._arrays import DeviceArray
from ._blocked import BLOCK
from ._device import (
    _FLOAT32,
    BLOCKED_GROUP,
    WORKGROUP_SIZE,
    GpuError,
    _forget_context,
    _get_context,
    check_params,
    check_state_dtype,
)
from ._layout import ROUND_FIRST, ROUND_KEY, STEP_WORDS, Layout
from ._rows import Rows, coalesce

# Lowers the adapter's max_storage_buffer_binding_size for engines built while it is set:
# the tests use it to exercise chunking on small arrays.
_MAX_BINDING_BYTES: int | None = None


class GpuEngine:
    """Steps a fixed list of tensors (float32, or bfloat16/float16 computed in float32)
    on the GPU (the ``device="gpu"`` backend), as ``radam._engine.Engine`` says.
    A tensor's state is float32 or 16-bit, or 8-bit: each moment's uint8 codes of
    the param's shape beside its float32 absmax per 256-element block (under
    ``radam._engine.absmax_name``), as bitsandbytes' blockwise quantization.

    A grad may be a ``radam.RowSparse`` (except with 8-bit state): adam.wgsl's
    ``adam_step_rows`` steps its named rows alone, uploaded and read back alone.

    Built from one ``radam._engine.TensorBuffers`` per tensor, as
    ``radam._core.CpuEngine``. Building uploads the params and state; the host
    arrays stay the user's, current after :meth:`sync`.
    """

    def __init__(self, tensors: Sequence[TensorBuffers]) -> None:
        labels = [t.label for t in tensors]
        params = [t.param for t in tensors]
        check_params(params, labels)
        n = len(tensors)
        masters = [t.state.get(MASTER) for t in tensors]
        # Which tensors keep blocked (8-bit) state, and each tensor's moments, in the
        # engines' order (radam._engine.state_names); blocked: (codes, absmax) per moment.
        for t in tensors:
            if not t.format.plain and not _blocked.steps(t.format):
                raise TypeError(f"state{t.label}: device='gpu' has no codec of {t.format.name}")
        self._in_blocks = [not t.format.plain for t in tensors]
        self._block_moments = [
            _blocked.moments(t) if b else [] for t, b in zip(tensors, self._in_blocks)
        ]
        moments = [
            [] if b else [a for name, a in t.state.items() if name != MASTER]
            for t, b in zip(tensors, self._in_blocks)
        ]
        self._param_dtype = params[0].dtype if n else _FLOAT32
        self._masters = masters
        for label, p, master in zip(labels, params, masters):
            if (master is None) != (masters[0] is None) or (
                master is not None and (master.dtype != _FLOAT32 or master.shape != p.shape)
            ):
                raise TypeError(
                    f"state{label}['{MASTER}']: device='gpu' needs a float32 master copy "
                    "of the param's shape for every param, or none"
                )
        # The format the kernel rounds each stored param to: none with master copies
        # (the params buffer holds them) or float32 params.
        self._param_round = self._param_dtype if masters and masters[0] is None else _FLOAT32
        # One storage type for the state that is not 8-bit: float32, bfloat16 or float16.
        self._state_dtype = next((m[0].dtype for m in moments if m), _FLOAT32)
        if any(self._in_blocks) and self._state_dtype != _FLOAT32:
            raise TypeError(
                f"state{labels[self._in_blocks.index(True)]} is 8-bit, but the state of smaller "
                f"tensors is {self._state_dtype}; with 8-bit state they keep float32"
            )
        for label, arrays in zip(labels, moments):
            for a in arrays:
                if a.dtype != self._state_dtype:
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
        self._labels = labels
        self._params = params
        self._moments = moments
        self._tensor_group = [t.group for t in tensors]
        self._records = list(tensors)
        self._host_layout = [(a.shape, a.dtype) for _, a in self._hosts()]
        self._broken: str | None = None
        # Whether the host params are behind the device (a step of device grads only
        # reads nothing back): then a row-sparse step reads its whole tensor back.
        self._stale = False
        n_groups = max(self._tensor_group) + 1 if n else 0
        self._n_groups = n_groups
        # Each group's step count and carry: a group steps as one here, so its
        # tensors must stand at one count (a None grad, which would part them, is refused).
        self._counts: list[tuple[int, float]] = [(0, 1.0)] * n_groups
        for gi in range(n_groups):
            stands = {(t.step, t.carry if t.step else 1.0) for t in tensors if t.group == gi}
            if len(stands) > 1:
                raise ValueError(
                    f"param_groups[{gi}]: its params stand at different step counts "
                    f"({sorted(c for c, _ in stands)}); device='gpu' steps a group's params "
                    "together, at one count: use device='cpu'"
                )
            self._counts[gi] = stands.pop() if stands else (0, 1.0)
        # Each group's state names (those of its first tensor: a group shares them).
        firsts = [next((t for t in tensors if t.group == gi), None) for gi in range(n_groups)]
        self._group_state = [() if t is None else tuple(t.state) for t in firsts]
        # Each group's moments per element: the names that are neither a master copy
        # nor an array beside a moment's first (an absmax).
        n_moments = [
            0
            if t is None
            else sum(name != MASTER and t.format.companion(name) is None for name in t.state)
            for t in firsts
        ]
        # Two layout groups per parameter group: its tensors with float32 or 16-bit
        # state (2 g), then those with 8-bit state (2 g + 1), each stepped with the
        # group's options.
        self._layout = layout = Layout(
            [p.size for p in params],
            [2 * t.group + b for t, b in zip(tensors, self._in_blocks)],
            [n_moments[lg // 2] for lg in range(2 * n_groups)],
            self._per_word,
            ctx.limits,
            _MAX_BINDING_BYTES,
            [lg % 2 == 1 for lg in range(2 * n_groups)],
        )
        self._groups = layout.groups
        self._offsets = layout.offsets
        # Host-side staging, reused every step: the packed grads and the uniforms.
        self._staging = np.zeros(layout.n_elements, _FLOAT32)
        self._grad_views = [
            self._staging[o : o + p.size].reshape(p.shape) for o, p in zip(self._offsets, params)
        ]
        self._ustride = layout.uniform_stride
        self._uniforms = layout.uniforms()

        usage = wgpu.BufferUsage

        def buffer(label: str, words: int, use: Any) -> Any:
            return ctx.device.create_buffer(label=f"radam {label}", size=4 * words, usage=use)

        try:
            copies = usage.COPY_DST | usage.COPY_SRC
            self._param_buf = buffer("params", layout.n_elements, usage.STORAGE | copies)
            self._grad_buf = buffer("grads", layout.n_elements, usage.STORAGE | usage.COPY_DST)
            self._state_buf = buffer("state", layout.n_state_words, usage.STORAGE | copies)
            self._uniform_buf = buffer(
                "step scalars", self._uniforms.size, usage.UNIFORM | usage.COPY_DST
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
        if group.block > 1:
            state_first = group.state_start + start // BLOCK * group.record
            state_words = length // BLOCK * group.record
        else:
            state_first = group.state_start + start * group.words
            state_words = length * group.words
        entries = [
            {
                # One slot of the uniforms, chosen per dispatch by the dynamic offset.
                "binding": 0,
                "resource": {"buffer": self._uniform_buf, "offset": 0, "size": STEP_WORDS * 4},
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
                    "offset": 4 * state_first,
                    "size": 4 * state_words,
                },
            },
        ]
        if group.block == 1:
            return self._ctx.device.create_bind_group(layout=self._ctx.layout, entries=entries)
        maps = self._ctx.maps()
        entries.append({"binding": 4, "resource": {"buffer": maps, "offset": 0, "size": maps.size}})
        return self._ctx.device.create_bind_group(layout=self._ctx.layout_blocked, entries=entries)

    def _state_pairs(self, image: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every host state array beside its view in a flat image of the state
        buffer (``image``: its bytes as state values, float32 or 16-bit, contiguous):
        what uploading copies one way and ``sync`` the other. A moment of float32 or
        16-bit state is a strided column of its tensor's rows, of the host array's
        shape; blocked (8-bit) state is its codes and absmax in its block records
        (``_blocked.record_pairs``)."""
        pairs = []
        words = image.view(np.uint32)
        for i, (p, moments) in enumerate(zip(self._params, self._moments)):
            if not self._in_blocks[i]:
                rows = self._layout.state_rows(i, image)
                pairs += [(h, rows[:, k].reshape(p.shape)) for k, h in enumerate(moments)]
                continue
            records = self._layout.block_records(i, words)
            pairs += _blocked.record_pairs(records, self._block_moments[i])
        return pairs

    def _upload(self) -> None:
        """Params (or their master copies) and state from the host arrays into the
        GPU buffers."""
        queue = self._ctx.device.queue
        for view, p, master in zip(self._grad_views, self._params, self._masters):
            np.copyto(view, p if master is None else master)
        queue.write_buffer(self._param_buf, 0, self._staging)
        image = np.zeros(self._layout.n_state_words * self._per_word, self._state_dtype)
        for host, view in self._state_pairs(image):
            if view.shape != host.shape:  # 8-bit codes, in whole blocks
                host = _blocked.to_blocks(host, view.shape)
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
            if isinstance(grad, RowSparse):
                kinds.append(self._check_rows(i, grad, what))
            elif isinstance(grad, np.ndarray):
                if grad.dtype != param.dtype:
                    raise TypeError(
                        f"{what} has dtype {grad.dtype} but its param has dtype {param.dtype}; "
                        f"radam never casts, pass a {param.dtype} array"
                    )
                if grad.shape != param.shape:
                    raise ValueError(
                        f"{what} has shape {grad.shape} but its param has shape {param.shape}"
                    )
                hosts = [param, *self._records[i].state.values()]
                if any(np.may_share_memory(grad, h) for h in hosts):
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
                    f"{what} must be a numpy.ndarray, a radam.RowSparse, a "
                    f"radam.gpu.DeviceArray or a wgpu.GPUBuffer, got {type(grad).__name__}"
                )
        return kinds

    def _check_rows(self, i: int, grad: RowSparse, what: str) -> Rows:
        """Row-sparse grad ``what`` of tensor ``i`` checked and coalesced, or refused
        where adam_step_rows cannot step it."""
        record = self._records[i]
        if self._in_blocks[i]:
            raise TypeError(
                f"{what} is a radam.RowSparse, but state{record.label} is 8-bit: "
                "device='gpu' steps row-sparse grads with float32 or 16-bit state_dtype "
                "only; use device='cpu'"
            )
        if record.offset or record.param.size >= 2**32:
            raise ValueError(
                f"{what} is a radam.RowSparse, but its param is a shard or has 2**32 "
                "elements or more: device='gpu' steps rows of whole tensors under 2**32 "
                "elements only; use device='cpu'"
            )
        hosts = [record.param, *record.state.values()]
        return coalesce(grad, record.param, hosts, what)

    def _hosts(self) -> list[tuple[str, np.ndarray]]:
        """Every host array that steps and ``sync`` write, with its name."""
        hosts = []
        for t in self._records:
            hosts.append((f"params{t.label}", t.param))
            hosts += [(f"state{t.label}[{n!r}]", a) for n, a in t.state.items()]
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

    def _steps(self, configs: Sequence[Any]) -> list[Any]:
        """Each group's ``radam._core.GpuStep`` of its next step: the Rust core's rows
        and pipeline constants (rust/uniform.rs, from the CPU kernel's own formulas)."""
        steps = []
        for gi, (config, (count, carry)) in enumerate(zip(configs, self._counts)):
            if count >= LAST_STEP:
                raise OverflowError(
                    f"param_groups[{gi}]: the step count is {count}: the kernel counts steps "
                    f"in 64 bits, and {LAST_STEP} is its last"
                )
            try:
                steps.append(_core.GpuStep(config, count + 1, float(carry)))
            except ValueError as err:
                raise ValueError(f"param_groups[{gi}]: {err}") from None
        return steps

    @staticmethod
    def _per_tensor(s: Any, group: Any, rows: dict[int, Rows]) -> bool:
        """Whether a group steps a dispatch per tensor (``group.per_tensor``): when
        clipping by norm or rounding stochastically (per-tensor rows), with 8-bit
        state, or when one of its tensors has a row-sparse grad."""
        return bool(s.clips_norm or s.rounds or group.block > 1 or rows.keys() & set(group.tensors))

    def _write_uniforms(self, steps: list[Any], rows: dict[int, Rows]) -> int:
        """Each group's rows into its uniform slots; returns how many slots the step
        uses. ``rows``: the row-sparse grads, by tensor."""
        used = self._layout.whole_slots
        words = self._uniforms.view(np.uint32)
        for lg, group in enumerate(self._groups):
            s = steps[lg // 2]
            row = s.row
            for d in group.whole:
                self._uniforms[d.slot, : len(row)] = row
            if not self._per_tensor(s, group, rows):
                continue
            # Each tensor's row holds its own norm-clipping factor, from its raw
            # (loss-scaled) float32 gradient as packed for upload, and its own
            # stochastic rounding key, from its position in the optimizer; 8-bit
            # state is stepped a tensor at a time (its blocks end where the tensor does),
            # and so is a row-sparse grad (its norm is the coalesced rows').
            used = len(self._uniforms)
            tensor_rows = {
                i: s.tensor_row(rows[i].values if i in rows else self._grad_views[i])
                if s.clips_norm
                else row
                for i in group.tensors
            }
            for d in group.per_tensor:
                self._uniforms[d.slot, : len(row)] = tensor_rows[d.tensor]
                # adam_step_rows finds its elements by their index in the tensor.
                words[d.slot, ROUND_FIRST] = self._records[d.tensor].offset + d.first
                if s.rounds:
                    record = self._records[d.tensor]
                    words[d.slot, ROUND_KEY] = s.round_key(record.position)
                    words[d.slot, ROUND_FIRST] = record.offset + d.first
        return used

    def counts(self) -> tuple[list[int], list[float]]:
        """Each tensor's step count and carry (its group's: a group steps as one here)."""
        per = [self._counts[g] for g in self._tensor_group]
        return [c for c, _ in per], [m for _, m in per]

    def step(
        self, grads: Sequence[Any], configs: Sequence[Any], skip_nonfinite: bool = False
    ) -> bool:
        """One step of every tensor with each group's ``radam._core.AdamConfig``, each
        group at its own count. Returns False when ``skip_nonfinite`` found a NaN or
        Inf in a gradient (then nothing was written), as ``CpuEngine.step``. Every
        grad is checked before anything is written; on an error nothing changed.
        A None grad (which ``CpuEngine`` skips) is refused: a group steps as one here.
        """
        if self._broken:
            raise GpuError(self._broken)
        self._check_hosts()
        if len(configs) != self._n_groups:
            raise ValueError(f"expected options for {self._n_groups} groups, got {len(configs)}")
        for label, grad in zip(self._labels, grads):
            if grad is None:
                raise ValueError(
                    f"grads{label} is None: device='gpu' steps every param (a group's params "
                    "share one step count there); skipping a param is for device='cpu'"
                )
        steps = self._steps(configs)
        for lg, group in enumerate(self._groups):
            if not steps[lg // 2].rounds:
                continue
            # The shader hashes element indices under 2^32 only (a step checks, as the CPU's).
            for i in group.tensors:
                record = self._records[i]
                if self._param_round == _FLOAT32 or record.offset + record.param.size > 2**32:
                    raise ValueError(
                        f"params{record.label}: stochastic_rounding on the GPU is for bfloat16 "
                        "and float16 params without master weights, of under 2**32 elements"
                    )
        for gi, (names, s) in enumerate(zip(self._group_state, steps)):
            held = (MAX_EXP_AVG_SQ in names, VELOCITY in names)
            if held != (bool(s.constants["AMSGRAD"]), bool(s.constants["MOMENTUM"])):
                raise ValueError(
                    f"param_groups[{gi}]: its options do not match the optimizer's state "
                    "(amsgrad, momentum)"
                )
        kinds = self._check_grads(grads)
        rows = {i: k for i, k in enumerate(kinds) if isinstance(k, Rows)}
        on_device = [i for i, k in enumerate(kinds) if isinstance(k, tuple)]
        if on_device and skip_nonfinite:
            raise ValueError(
                f"grads{self._labels[on_device[0]]} is a device array, but skip_nonfinite=True "
                "checks gradients on the host: pass NumPy grads, or skip_nonfinite=False"
            )
        for i in on_device:
            gi = self._tensor_group[i]
            if steps[gi].clips_norm:
                raise ValueError(
                    f"grads{self._labels[i]} is a device array, but param_groups[{gi}] clips "
                    "by max_gradient_norm, whose norm is measured on the host: pass NumPy grads"
                )
        dense = [i for i, k in enumerate(kinds) if k is None]
        host_grads = bool(dense or rows)
        for i in dense:
            np.copyto(self._grad_views[i], grads[i])
        if skip_nonfinite and not (
            all(np.isfinite(self._grad_views[i]).all() for i in dense)
            and all(
                np.isfinite(r.given).all() and np.isfinite(r.values).all() for r in rows.values()
            )
        ):
            return False  # nothing was sent to the GPU
        used = self._write_uniforms(steps, rows)
        # The tensors whose whole params come back: all but the row-sparse ones, whose
        # named rows come back, unless the host params are behind the device.
        whole = [i for i in range(len(kinds)) if self._stale or i not in rows]
        ctx, wgpu = self._ctx, self._ctx.wgpu
        dev, queue = ctx.device, ctx.device.queue
        submitted = False
        try:
            for lo, hi in self._runs(dense):
                queue.write_buffer(self._grad_buf, 4 * lo, self._staging[lo:hi])
            queue.write_buffer(self._uniform_buf, 0, self._uniforms[:used])
            row_groups, row_back = self._row_buffers(rows)
            encoder = dev.create_command_encoder(label="radam step")
            for offset, (kind, p) in zip(self._offsets, zip(kinds, self._params)):
                if isinstance(kind, tuple) and p.nbytes:
                    encoder.copy_buffer_to_buffer(
                        kind[0], kind[1], self._grad_buf, 4 * offset, p.nbytes
                    )
            compute = encoder.begin_compute_pass(label="radam adam_step")
            for lg, group in enumerate(self._groups):
                s = steps[lg // 2]
                if not group.size:
                    continue
                per_tensor = self._per_tensor(s, group, rows)
                args = (s.constants, self._state_dtype, self._param_round)
                for d in group.per_tensor if per_tensor else group.whole:
                    n, per_group = (
                        d.hi - d.lo,
                        BLOCKED_GROUP if group.block > 1 else WORKGROUP_SIZE,
                    )
                    if d.tensor in rows:
                        if d.tensor not in row_groups:
                            continue  # no rows named
                        compute.set_pipeline(ctx.pipeline(*args, rows=True))
                        compute.set_bind_group(1, row_groups[d.tensor][0])
                        n, per_group = rows[d.tensor].values.size, WORKGROUP_SIZE
                    else:
                        compute.set_pipeline(ctx.pipeline(*args, group.block > 1))
                    offset = [d.slot * self._ustride]
                    compute.set_bind_group(0, self._bind_groups[d.bind_group], offset)
                    x, y = ctx.grid(n, per_group)
                    compute.dispatch_workgroups(x, y, 1)
            compute.end()
            if host_grads and whole:
                if self._readback is None:
                    self._readback = dev.create_buffer(
                        label="radam params readback",
                        size=self._layout.n_elements * 4,
                        usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST,
                    )
                for lo, hi in self._runs(whole):
                    encoder.copy_buffer_to_buffer(
                        self._param_buf, 4 * lo, self._readback, 4 * lo, 4 * (hi - lo)
                    )
            for i, (_, buffer, at) in row_groups.items():
                head = 4 * (1 + len(rows[i].rows))  # the values follow the rows
                encoder.copy_buffer_to_buffer(buffer, head, row_back, at, rows[i].values.nbytes)
            commands = encoder.finish()
            queue.submit([commands])
            submitted = True
            if host_grads and whole:
                self._readback.map_sync(wgpu.MapMode.READ)
                try:
                    flat = np.frombuffer(self._readback.read_mapped(copy=False), _FLOAT32)
                    self._params_from(flat, whole)
                finally:
                    self._readback.unmap()
            if row_groups:
                row_back.map_sync(wgpu.MapMode.READ)
                try:
                    flat = np.frombuffer(row_back.read_mapped(copy=False), _FLOAT32)
                    for i, (_, _, at) in row_groups.items():
                        if not self._stale:
                            size = rows[i].values.size
                            self._rows_from(i, rows[i], flat[at // 4 : at // 4 + size])
                finally:
                    row_back.unmap()
        except (wgpu.GPUError, RuntimeError) as err:
            error = self._error("running a step", err)
            if submitted:
                # The GPU may have stepped without us reading it back: refuse to go on.
                self._broken = f"{error}; this optimizer cannot continue on the GPU"
                _forget_context(ctx)
            raise error from err
        self._stale = not host_grads
        self._counts = [(c + 1, s.mu_product) for (c, _), s in zip(self._counts, steps)]
        return True

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
        self._stale = False
        for host, view in self._state_pairs(image):
            if view.shape != host.shape:  # 8-bit codes, in whole blocks
                view = _blocked.from_blocks(view, host)
            np.copyto(host, view)

    def _runs(self, tensors: Sequence[int]) -> list[tuple[int, int]]:
        """The elements of the flat buffers that ``tensors`` (ascending) take, as
        runs ``(lo, hi)`` of adjacent tensors: what one copy moves."""
        runs: list[tuple[int, int]] = []
        for i in tensors:
            lo = self._offsets[i]
            hi = lo + self._params[i].size
            if runs and runs[-1][1] == lo:
                runs[-1] = (runs[-1][0], hi)
            elif hi > lo:
                runs.append((lo, hi))
        return runs

    def _row_buffers(self, rows: dict[int, Rows]) -> tuple[dict[int, tuple[Any, Any, int]], Any]:
        """Each row-sparse grad naming a row uploaded as adam_step_rows reads it (the
        number of rows, the rows, their values): its bind group 1, its buffer, and
        the byte offset in the returned readback buffer where its values go, which
        its new params replace."""
        dev, usage = self._ctx.device, self._ctx.wgpu.BufferUsage
        groups: dict[int, tuple[Any, Any, int]] = {}
        total = 0
        for i, r in rows.items():
            if not len(r.rows):
                continue
            words = np.concatenate([[len(r.rows)], r.rows, r.values.view(np.uint32).ravel()])
            buffer = dev.create_buffer_with_data(
                label="radam rows",
                data=words.astype(np.uint32),
                usage=usage.STORAGE | usage.COPY_SRC,
            )
            entry = {"binding": 0, "resource": {"buffer": buffer, "offset": 0, "size": buffer.size}}
            group = dev.create_bind_group(layout=self._ctx.layout_rows, entries=[entry])
            groups[i] = (group, buffer, total)
            total += r.values.nbytes
        back = None
        if total:
            back = dev.create_buffer(
                label="radam row params readback", size=total, usage=usage.MAP_READ | usage.COPY_DST
            )
        return groups, back

    def _rows_from(self, i: int, r: Rows, flat: np.ndarray) -> None:
        """Tensor ``i``'s named rows ``r.rows`` on the host from their new params
        (``flat``, float32, row after row), as :meth:`_params_from` writes a whole one."""
        p, master = self._params[i], self._masters[i]
        values = flat.reshape((len(r.rows), *p.shape[1:]))
        if master is not None:
            master[r.rows] = values
        p[r.rows] = values.astype(p.dtype)

    def _params_from(self, flat: np.ndarray, tensors: Sequence[int] | None = None) -> None:
        """The host params (and master copies) of ``tensors`` (default all) from the
        params buffer's contents: 16-bit params receive their values (exact) or their
        master copies rounded to nearest even, as the CPU's staging does."""
        for i in range(len(self._params)) if tensors is None else tensors:
            o, p, master = self._offsets[i], self._params[i], self._masters[i]
            values = flat[o : o + p.size].reshape(p.shape)
            if master is not None:
                np.copyto(master, values)
            np.copyto(p, values, casting="unsafe")

    def __len__(self) -> int:
        return len(self._params)
