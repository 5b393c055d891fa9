"""``radam.Adam``: the optimizer users hold (its variants are in ``radam.variants``)."""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from . import _core
from ._options import EngineOptions, engine_options, state_names
from ._params import (
    HALF_DTYPES,
    Tensor,
    check_state_dtype,
    flatten_grads,
    layout_of,
    resolve_state_dtype,
)

DEVICES = ("cpu", "gpu", "auto")


class Adam:
    """Adam (Kingma & Ba, Algorithm 1) over NumPy arrays, updated in place.

    Same results as ``torch.optim.Adam`` for the same options. ``params`` is a
    list of arrays, a dict name -> array, or a list of group dicts with
    per-group options; ``step(grads)`` takes grads with the same structure.
    With ``decoupled_weight_decay=True`` the decay is AdamW's. ``lr`` (and any
    group's "lr") may be a schedule, a callable of the step count, and so may
    ``betas[0]``: see ``radam.schedules``, :attr:`current_lr`,
    :attr:`current_betas`, :meth:`save` and :meth:`load`.

    State (``opt.state[key]``, a read-only mapping of arrays that the kernel
    updates in place, so change them in place too, e.g. with ``np.copyto``:
    ``exp_avg``, ``exp_avg_sq`` and with AMSGrad
    ``max_exp_avg_sq``) is created at the first step as NumPy arrays beside the
    params. ``key`` is the name for dict params, the flat index otherwise.
    ``step`` is thread-safe: concurrent calls run one after the other.

    Keyword-only options reproduce the seed systems (see docs/formulas.md):
    ``efficient_form`` (the paper's step-size form, eps on the uncorrected
    root; Keras, PuzzleLib), ``beta1_decay`` (lambda: beta1_t = beta1 *
    lambda^(t-1) in the first moment), ``momentum``/``nesterov`` (downhill's
    velocity on top of the Adam step; state gains ``velocity``),
    ``max_gradient_elem``/``max_gradient_norm`` (per-tensor clipping of the raw
    gradient; element clipping wins) and ``bias_correction="downhill-0.4.0"``
    (the released downhill's constant rescale, a legacy choice).

    ``device="gpu"`` runs the WGSL kernel through wgpu-py (``pip install
    "radam[gpu]"``; float32 params and state only, every other option above;
    ``skip_nonfinite`` and ``max_gradient_norm`` need NumPy grads there,
    being checked and measured on the host) with params and state resident on the
    GPU; ``device="auto"`` picks it only when a non-CPU adapter exists. The host
    arrays are then copies: see :meth:`sync` for when they are current.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        amsgrad: bool = False,
        maximize: bool = False,
        device: str = "cpu",
        *,
        efficient_form: bool = False,
        beta1_decay: float = 1.0,
        momentum: float = 0.0,
        nesterov: bool = False,
        max_gradient_elem: float = 0.0,
        max_gradient_norm: float = 0.0,
        bias_correction: str = "adam",
        grad_scale: float = 1.0,
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        master_weights: bool = False,
    ) -> None:
        self.defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "efficient_form": efficient_form,
            "beta1_decay": beta1_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "max_gradient_elem": max_gradient_elem,
            "max_gradient_norm": max_gradient_norm,
            "bias_correction": bias_correction,
            "grad_scale": grad_scale,
        }
        self.defaults.update(self._extra_defaults)
        self._check_defaults()
        if not isinstance(skip_nonfinite, bool):
            raise TypeError(f"skip_nonfinite must be True or False, got {skip_nonfinite!r}")
        self.skip_nonfinite = skip_nonfinite
        self.skipped_steps = 0  # steps skipped for a NaN or Inf gradient
        if not isinstance(master_weights, bool):
            raise TypeError(f"master_weights must be True or False, got {master_weights!r}")
        self.master_weights = master_weights
        self.state_dtype = resolve_state_dtype(state_dtype)
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        self._layout, overrides = layout_of(params)
        check_state_dtype(self.state_dtype, self._layout.tensors)
        self.param_groups: list[dict[str, Any]] = []
        for gi, override in enumerate(overrides):
            group = {**self.defaults, **override, "algorithm": self._algorithm}
            if "betas" in override:
                group["betas"] = (
                    tuple(group["betas"]) if hasattr(group["betas"], "__len__") else group["betas"]
                )
            engine_options(group, f"params[{gi}]")
            members = [t for t in self._layout.tensors if t.group == gi]
            group["params"] = [t.array for t in members]
            if all(t.name is not None for t in members):
                group["param_names"] = [t.name for t in members]
            self.param_groups.append(group)
        self.device = _resolve_device(
            device,
            self._layout.tensors,
            [engine_options(g, f"params[{i}]") for i, g in enumerate(self.param_groups)],
            self.state_dtype,
        )
        self.state: dict[Any, dict[str, np.ndarray]] = {}
        self._step = 0
        self._engine: Any = None
        self._state_names: list[tuple[str, ...]] = []  # per group, fixed once state exists
        # What each group carries from step to step on the host (NAdam's mu_product).
        self._carries = [1.0] * len(self.param_groups)
        self._lock = threading.Lock()
        self._options_cache: tuple[Any, list[Any], list[EngineOptions]] | None = None
        # The fast check: each group's keys and values as tuples, kept only while
        # every option value is immutable (so equal tuples mean equal options).
        self._options_fast: tuple[Any, list[Any], list[EngineOptions]] | None = None

    # The update rule of this class ("adam", "adamax", "nadam" or "radam"), and
    # the options only it has, with their defaults.
    _algorithm = "adam"
    _extra_defaults: dict[str, Any] = {}

    def _check_defaults(self) -> None:
        self.defaults["algorithm"] = self._algorithm
        engine_options(self.defaults, "")
        del self.defaults["algorithm"]

    @property
    def step_count(self) -> int:
        """The number of steps taken (the ``t`` of the bias corrections)."""
        return self._step

    # -- schedules, checkpoints, torch import (radam.schedules, radam.checkpoint) --

    @property
    def current_lr(self) -> list[float]:
        """Each group's lr for the next step: the float, or the group's schedule
        called with ``step_count`` (see ``radam.schedules`` for the convention)."""
        with self._lock:
            return [o.lr for o in self._options()]

    @property
    def current_betas(self) -> list[tuple[float, float]]:
        """Each group's (beta1, beta2) for the next step: betas[0] may be a
        schedule (e.g. ``radam.schedules.OneCycle.momentum()``), called like lr's."""
        with self._lock:
            return [(o.beta1, o.beta2) for o in self._options()]

    def save(self, path: Any, *, include_params: bool = True) -> None:
        """Write a checkpoint to ``path`` atomically: options (a built-in
        schedule as its description), step, every state array and, unless
        ``include_params=False``, the params. A crash or kill at any moment
        leaves the previous checkpoint or the new one at ``path``, never a
        broken file. Format: see ``radam.checkpoint``.
        """
        from . import checkpoint

        checkpoint.save(self, path, include_params=include_params)

    def load(self, path: Any, *, restore_params: bool = True) -> None:
        """Restore a :meth:`save` checkpoint into this optimizer, built over params
        of the same structure, shapes and dtypes: options, step (hence each
        schedule's position), state, and the params (copied into this
        optimizer's arrays) when the file has them and ``restore_params``.
        A resumed run continues bit for bit.

        The checkpoint's options win, as with :meth:`load_state_dict`. A group
        whose lr was a built-in schedule gets it back (this optimizer's schedule
        object is kept when equal). A custom callable lr cannot be stored: the
        group's lr here must then be a callable, which is kept as it is (it is
        not compared). A file that is missing (FileNotFoundError), not a
        checkpoint, truncated, corrupted, of a newer format version, or that
        does not fit these params raises :class:`radam.checkpoint.CheckpointError`
        (a ValueError) and nothing changes.
        """
        from . import checkpoint

        checkpoint.load(self, path, restore_params=restore_params)

    def load_torch_state_dict(
        self, state_dict: Mapping[str, Any], *, decoupled_weight_decay: bool | None = None
    ) -> None:
        """Load the ``state_dict()`` of the torch optimizer matching this class
        (users moving over; torch itself is not needed): ``torch.optim.Adam`` or
        ``AdamW`` into radam.Adam/AdamW, and ``NAdam`` (its ``mu_product``),
        ``RAdam`` and ``Adamax`` into the radam class of the same name; another
        optimizer's dict is an error that names it. This optimizer must be built
        over the same params in the same order and groups, as NumPy arrays.
        Tensors become NumPy copies, ``step`` tensors ints; the options both
        have map one to one; foreach, fused, capturable, differentiable and the
        LR schedulers' initial_lr, max_lr, min_lr, base_momentum and
        max_momentum are ignored (they do not change the math: the lr and
        betas in effect are in lr and betas); other keys are rejected. For
        torch < 2.6, whose AdamW state_dict does not say that its decay is
        decoupled, pass ``decoupled_weight_decay=True`` for AdamW. Options
        torch lacks keep this optimizer's values. Checked fully before anything
        changes.
        """
        from ._torch_import import load_torch_state_dict

        load_torch_state_dict(self, state_dict, decoupled_weight_decay)

    def _options(self) -> list[EngineOptions]:
        # Validating costs microseconds per group, the whole budget of a small
        # step: reuse the last result while no group's options changed.
        fast = self._options_fast
        if fast is not None and fast[0] is self._state_names:
            # Tuples compare items by identity first: a few hundred ns per group.
            if [(tuple(g), tuple(g.values())) for g in self.param_groups] == fast[1]:
                return fast[2]
        snapshot = [_option_values(g) for g in self.param_groups]
        cached = self._options_cache
        if cached is not None and cached[0] is self._state_names and None not in snapshot:
            try:
                if cached[1] == snapshot:
                    return cached[2]
            except Exception:  # an odd value (e.g. an array): validate it below
                pass
        options = [
            engine_options(g, f"param_groups[{i}]", self._step)
            for i, g in enumerate(self.param_groups)
        ]
        if self._engine is not None:
            for i, (opts, names) in enumerate(zip(options, self._state_names)):
                if state_names(opts) != names:
                    raise ValueError(
                        f"param_groups[{i}]: amsgrad, and whether momentum is on, "
                        "cannot change once state exists"
                    )
        self._options_cache = (self._state_names, snapshot, options)
        groups = self.param_groups
        if all(_immutable_options(g) for g in groups):
            keyed = [(tuple(g), tuple(g.values())) for g in groups]
            self._options_fast = (self._state_names, keyed, options)
        else:
            self._options_fast = None
        return options

    def _build(self, state: dict[Any, dict[str, np.ndarray]]) -> Any:
        tensors = self._layout.tensors
        entries = [state[t.key] for t in tensors]
        # AdaMax keeps its infinity norm where Adam keeps v.
        second = [e["exp_inf"] if "exp_inf" in e else e["exp_avg_sq"] for e in entries]
        if self.device == "gpu":
            from .gpu import GpuEngine as engine_class
        else:
            engine_class = _core.CpuEngine
        return engine_class(
            [t.label for t in tensors],
            [t.array for t in tensors],
            [e["exp_avg"] for e in entries],
            second,
            [e.get("max_exp_avg_sq") for e in entries],
            [e.get("velocity") for e in entries],
            [t.group for t in tensors],
            [e.get("master_param") for e in entries],
        )

    def _tensor_state(self, names: list[tuple[str, ...]], t: Tensor) -> dict[str, np.dtype]:
        """The state arrays of tensor ``t`` and their dtypes: the moments in the
        state dtype, and for a 16-bit param with ``master_weights`` its float32 copy."""
        dtype = self.state_dtype or (
            np.dtype(np.float64) if t.array.dtype == np.float64 else np.dtype(np.float32)
        )
        arrays = {name: dtype for name in names[t.group]}
        if self.master_weights and t.array.dtype in HALF_DTYPES:
            arrays["master_param"] = np.dtype(np.float32)
        return arrays

    def _fresh_state(self, names: list[tuple[str, ...]]) -> dict[Any, dict[str, np.ndarray]]:
        state = {}
        for t in self._layout.tensors:
            entry = {n: np.zeros(t.array.shape, d) for n, d in self._tensor_state(names, t).items()}
            if "master_param" in entry:
                entry["master_param"][...] = t.array
            state[t.key] = MappingProxyType(entry)
        return state

    def step(self, grads: Any) -> None:
        """One Adam step: every param moves in place. ``grads`` mirrors ``params``.

        On any error (a missing, misshapen, mistyped or aliasing grad, a bad
        option) a clear exception is raised and params and state are untouched.
        """
        if grads is None:
            raise TypeError("grads is None: pass the gradients, with the structure of params")
        flat = flatten_grads(self._layout, grads)
        with self._lock:
            options = self._options()
            engine, state, names = self._engine, self.state, self._state_names
            if engine is None:
                names = [state_names(o) for o in options]
                state = self._fresh_state(names)
                engine = self._build(state)
            t = self._step + 1
            carries = engine.step(flat, t, options, self._carries, self.skip_nonfinite)
            if carries is None:  # a NaN or Inf gradient: the whole step was skipped
                self.skipped_steps += 1
                return
            self._engine, self.state, self._state_names, self._step = engine, state, names, t
            self._carries = carries

    def sync(self) -> None:
        """Copy params and state from the device into the host arrays (no-op on the CPU).

        With ``device="gpu"`` the host arrays (the params given and ``opt.state``)
        are current after ``sync()`` and ``state_dict()``; the params also after
        every ``step`` that received a NumPy grad. A step with device grads
        (``radam.gpu.DeviceArray`` or ``wgpu.GPUBuffer``) leaves them as they were.
        """
        with self._lock:
            self._sync_host()

    def _sync_host(self) -> None:
        if self._engine is not None and self.device == "gpu":
            self._engine.sync()

    def state_dict(self) -> dict[str, Any]:
        """A copy of the optimizer's state, laid out as ``torch.optim``'s.

        ``{"state": {index: {"step", "exp_avg", "exp_avg_sq"[, "max_exp_avg_sq"]}},
        "param_groups": [{options..., "params": [indices][, "param_names": [...]]}]}``.
        The arrays are copies: later steps do not change a saved dict.
        """
        with self._lock:
            self._sync_host()
            state = {}
            for i, t in enumerate(self._layout.tensors):
                if t.key in self.state:
                    entry = {"step": self._step}
                    if self.param_groups[t.group].get("algorithm") == "nadam":
                        entry["mu_product"] = self._carries[t.group]
                    entry.update({k: v.copy() for k, v in self.state[t.key].items()})
                    state[i] = entry
            groups, start = [], 0
            for g in self.param_groups:
                saved = {k: v for k, v in g.items() if k != "params"}
                saved["betas"] = tuple(g["betas"])
                saved["params"] = list(range(start, start + len(g["params"])))
                if "param_names" in g:
                    saved["param_names"] = list(g["param_names"])
                start += len(g["params"])
                groups.append(saved)
            return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` saved from an optimizer over params of the
        same structure, shapes and dtypes. Everything is checked before anything
        changes; the arrays are copied in. A resumed run continues bit for bit.
        """
        self._apply_state_dict(self._checked_state_dict(state_dict))

    def _checked_state_dict(self, state_dict: Mapping[str, Any]) -> _Loaded:
        """What loading ``state_dict`` applies, every part checked (options,
        state arrays copied); changes nothing."""
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(saved_groups)} param groups, this optimizer has "
                f"{len(self.param_groups)}"
            )
        new_groups = []
        for i, (saved, ours) in enumerate(zip(saved_groups, self.param_groups)):
            where = f"state_dict['param_groups'][{i}]"
            if not isinstance(saved, Mapping):
                raise TypeError(f"{where} must be a dict, got {type(saved).__name__}")
            n_saved, n_ours = len(saved.get("params", ())), len(ours["params"])
            if n_saved != n_ours:
                raise ValueError(f"{where} has {n_saved} params, this group has {n_ours}")
            if (
                "param_names" in saved
                and "param_names" in ours
                and list(saved["param_names"]) != ours["param_names"]
            ):
                raise ValueError(f"{where}['param_names'] differ from this optimizer's")
            options = {k: v for k, v in saved.items() if k not in ("params", "param_names")}
            if options.get("algorithm", self._algorithm) != self._algorithm:
                raise ValueError(
                    f"{where} was saved by {options['algorithm']!r}, not {self._algorithm!r}"
                )
            group = {**ours, **options}
            new_groups.append((group, engine_options(group, where)))
        names = [state_names(o) for _, o in new_groups]
        step, state = self._check_saved_state(state_dict["state"], names)
        carries = self._saved_carries(state_dict["state"], [o for _, o in new_groups])
        return _Loaded([g for g, _ in new_groups], names, step, state, carries)

    def _apply_state_dict(self, loaded: _Loaded, params: list[np.ndarray] | None = None) -> None:
        """Apply a :meth:`_checked_state_dict` result and, if given, copy ``params``
        (one array per tensor) into the param arrays, all or nothing: whatever
        can fail (a param that is read-only or no longer of that shape and
        dtype, building the engine) is checked or done before the first change."""
        tensors = self._layout.tensors
        with self._lock:
            for t, value in zip(tensors, params or ()):
                if not t.array.flags.writeable:
                    raise ValueError(f"params{t.label} is read-only, so it cannot be restored")
                if t.array.shape != value.shape or t.array.dtype != value.dtype:
                    raise ValueError(
                        f"params{t.label} has shape {t.array.shape} and dtype {t.array.dtype}, "
                        f"the values to restore {value.shape} and {value.dtype}"
                    )
            self._sync_host()  # a GPU engine's params reach the host before the new one uploads
            if params is not None and self.device != "cpu" and loaded.state:
                # A device engine uploads the params when it is built: copy them in
                # first, and put the old values back if the build fails.
                previous = [t.array.copy() for t in tensors]
                _copy_params(tensors, params)
                try:
                    engine = self._build(loaded.state)
                except BaseException:
                    _copy_params(tensors, previous)
                    raise
            else:
                engine = self._build(loaded.state) if loaded.state else None
                if params is not None:
                    _copy_params(tensors, params)  # checked above: cannot fail
            for ours, group in zip(self.param_groups, loaded.groups):
                ours.update({k: v for k, v in group.items() if k not in ("params", "param_names")})
            self._engine, self.state, self._state_names = engine, loaded.state, loaded.names
            self._step, self._carries = loaded.step, loaded.carries

    def _saved_carries(self, saved: Mapping, options: list[EngineOptions]) -> list[float]:
        """NAdam's mu_product per group, from the state entries of its params."""
        carries = [1.0] * len(options)
        for i, t in enumerate(self._layout.tensors):
            if options[t.group].algorithm != "nadam" or not saved:
                continue
            value = saved[i].get("mu_product")
            if isinstance(value, np.ndarray) and value.shape == ():
                value = value.item()
            finite = False
            if isinstance(value, (float, int, np.floating)) and not isinstance(value, bool):
                with contextlib.suppress(OverflowError):  # an int past float64's range
                    finite = math.isfinite(value)
            if not finite:
                raise ValueError(
                    f"state_dict['state'][{i}]['mu_product'] must be a finite number, got {value!r}"
                )
            carries[t.group] = float(value)
        return carries

    def _check_saved_state(self, saved: Any, names: list[tuple[str, ...]]) -> tuple[int, dict]:
        if not isinstance(saved, Mapping):
            raise ValueError("state_dict['state'] must be a dict index -> state")
        tensors = self._layout.tensors
        if not saved:
            return 0, {}
        if sorted(saved) != list(range(len(tensors))):
            raise ValueError(
                f"state_dict['state'] must have an entry for each of the {len(tensors)} params "
                f"(indices 0..{len(tensors) - 1}), got {sorted(saved)}"
            )
        steps, state = set(), {}
        for i, t in enumerate(tensors):
            entry, where = saved[i], f"state_dict['state'][{i}]"
            dtypes = self._tensor_state(names, t)
            missing = [n for n in (*dtypes, "step") if n not in entry]
            if missing:
                raise ValueError(f"{where} lacks {missing}")
            step = entry["step"]
            if isinstance(step, np.ndarray) and step.shape == ():
                step = step.item()
            if (
                isinstance(step, bool)
                or not isinstance(step, (int, np.integer, float))
                or (isinstance(step, float) and not math.isfinite(step))
                or step != int(step)
                or step < 1
            ):
                raise ValueError(f"{where}['step'] must be a whole number >= 1, got {step!r}")
            steps.add(int(step))
            copies = {}
            for n in dtypes:
                value = entry[n]
                if not isinstance(value, np.ndarray):
                    raise TypeError(
                        f"{where}[{n!r}] must be a numpy.ndarray, got {type(value).__name__}"
                    )
                if value.shape != t.array.shape or value.dtype != dtypes[n]:
                    raise ValueError(
                        f"{where}[{n!r}] has shape {value.shape} and dtype {value.dtype}; "
                        f"this optimizer's has shape {t.array.shape} and dtype {dtypes[n]}"
                    )
                copies[n] = np.array(value, order="C", copy=True)
            state[t.key] = MappingProxyType(copies)
        if len(steps) != 1:
            raise ValueError(f"state_dict['state'] entries disagree on 'step': {sorted(steps)}")
        return steps.pop(), state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} (device={self.device!r}, step={self._step})"]
        for i, g in enumerate(self.param_groups):
            opts = ", ".join(f"{k}={g[k]!r}" for k in self.defaults)
            lines.append(f"  group {i}: {len(g['params'])} params, {opts}")
        return "\n".join(lines)


class _Loaded(NamedTuple):
    """A checked state_dict, ready to apply: each group's options, state names,
    step, state arrays (copies) and carries."""

    groups: list[dict[str, Any]]
    names: list[tuple[str, ...]]
    step: int
    state: dict[Any, Any]
    carries: list[float]


def _copy_params(tensors: list[Tensor], values: list[np.ndarray]) -> None:
    for t, value in zip(tensors, values):
        np.copyto(t.array, value)


_SCALARS = (float, int, bool, str, type(None))


def _immutable_options(group: dict[str, Any]) -> bool:
    """Whether every option of a group (params aside) is an immutable scalar or
    a tuple of them, so that an equal value can only mean an equal option."""
    for k, v in group.items():
        if k == "params" or k == "param_names":
            continue
        if type(v) is tuple:
            if not all(type(x) in _SCALARS for x in v):
                return False
        elif type(v) not in _SCALARS:
            return False
    return True


def _option_values(group: dict[str, Any]) -> list[tuple[str, Any]] | None:
    """A group's options as plain values (lists copied to tuples), to detect
    changes; None when one is callable (a schedule: it changes every step),
    or holds one (a beta1 schedule in betas)."""
    values = []
    for k, v in group.items():
        if k == "params" or k == "param_names":
            continue
        if callable(v) or (type(v) in (tuple, list) and any(callable(x) for x in v)):
            return None
        values.append((k, tuple(v) if type(v) is list else v))
    return values


def _resolve_device(
    device: str, tensors: list[Any], options: list[EngineOptions], state_dtype: Any = None
) -> str:
    """The backend: for "gpu", check the params (float32) and options and set up
    the device now, so a missing wgpu or adapter is a clear error at construction;
    "auto" is "gpu" only with a non-CPU adapter, float32 params (their state in
    float32, bfloat16 or float16), and options the GPU kernel implements."""
    if device == "cpu":
        return "cpu"
    from . import gpu

    if device == "auto":
        if (
            all(t.array.dtype == np.float32 for t in tensors)
            and all(gpu.unsupported_option(o) is None for o in options)
            and gpu.available(allow_cpu_adapter=False)
        ):
            return "gpu"
        return "cpu"
    gpu.check_params([t.array for t in tensors], [t.label for t in tensors])
    gpu.check_state_dtype(state_dtype)
    for i, o in enumerate(options):
        gpu.check_options(o, f"params[{i}]")
    gpu.device()
    return "gpu"
