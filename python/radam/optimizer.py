"""``radam.Adam``: the optimizer users hold (its variants are in ``radam.variants``)."""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from . import _core
from ._errors import ReentrantCallError
from ._frozen import FrozenMapping, ParamList
from ._options import EngineOptions, betas_pair, engine_options, state_names
from ._params import (
    HALF_DTYPES,
    Tensor,
    check_state_dtype,
    flatten_grads,
    layout_of,
    resolve_state_dtype,
)

DEVICES = ("cpu", "gpu", "auto")
# The kernel counts steps in 64 bits: the number of the last step it can take.
LAST_STEP = 2**64 - 1
# Every live optimizer, for the fork handlers below.
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()
# How long a fork waits for a step in flight on another thread to finish.
FORK_WAIT_S = 60.0
# _busy of an optimizer in a child forked while a call of it did not end.
_TORN = "fork"
_FORK_LOCK = threading.Lock()  # one fork at a time goes through the handlers
_FORK_HELD: list[Any] = []


def _before_fork() -> None:
    """Let steps in flight finish, and hold every optimizer's lock across the
    fork: a child must not start with a lock held by a thread it does not
    have, nor with params half written by it."""
    _FORK_LOCK.acquire()
    for opt in list(_LIVE):
        if opt._lock.acquire(timeout=FORK_WAIT_S):
            _FORK_HELD.append(opt)
        else:  # a call that does not end (a schedule waiting on this thread?)
            opt._torn_by_fork = True


def _after_fork(child: bool) -> None:
    # The forking thread holds what _before_fork acquired, in the child too.
    for opt in _FORK_HELD:
        opt._lock.release()
    _FORK_HELD.clear()
    for opt in list(_LIVE):
        if opt._torn_by_fork and child:
            # Its lock is held by a thread the child does not have, mid-call.
            opt._lock = threading.RLock()
            opt._busy = _TORN
        opt._torn_by_fork = False
    _FORK_LOCK.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=lambda: _after_fork(child=False),
        after_in_child=lambda: _after_fork(child=True),
    )

# What opt.state and its entries say to do instead of replacing an array.
_STATE_INSTEAD = (
    "change the arrays in place (np.copyto(opt.state[key]['exp_avg'], new)) or load a "
    "whole state with load_state_dict"
)


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
    ``step`` is thread-safe: concurrent calls run one after the other. An lr
    schedule may read the optimizer; one that steps or loads it raises a
    RuntimeError.

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
                group["betas"] = betas_pair(group["betas"], f"params[{gi}]: betas")
            members = [t for t in self._layout.tensors if t.group == gi]
            group["params"] = ParamList(t.array for t in members)
            if all(t.named for t in members):
                group["param_names"] = [t.name for t in members]
            self.param_groups.append(group)
        options = [engine_options(g, f"params[{i}]") for i, g in enumerate(self.param_groups)]
        self.device = _resolve_device(device, self._layout.tensors, options, self.state_dtype)
        self._group_params = [g["params"] for g in self.param_groups]
        # The length of a list of grads that is passed as it is (-1: none is).
        self._flat_list = len(self._layout) if self._layout.kind == "list" else -1
        self._state = FrozenMapping({}, "opt.state", _STATE_INSTEAD)
        self._step = 0
        self._engine: Any = None
        self._state_names: list[tuple[str, ...]] = []  # per group, fixed once state exists
        # What each group carries from step to step on the host (NAdam's mu_product).
        self._carries = [1.0] * len(self.param_groups)
        # Reentrant, so that a schedule may read the optimizer (current_lr,
        # state_dict) while step holds it. _busy names the call whose schedules
        # are running: a call that changes the optimizer from inside them (a
        # schedule calling step) is refused instead of corrupting it, and
        # current_lr reads the lrs last computed (it would call itself).
        self._lock = threading.RLock()
        self._busy: str | None = None
        self._torn_by_fork = False  # set while a fork could not wait for a call of it
        self._last_lrs = [o.lr for o in options]
        self._last_betas = [(o.beta1, o.beta2) for o in options]
        self._options_cache: tuple[Any, list[Any], list[EngineOptions]] | None = None
        # The fast check: each group's keys and values as tuples, kept only
        # while every option value is immutable (so equal tuples mean equal
        # options).
        self._options_fast: tuple[Any, list[Any], list[EngineOptions]] | None = None
        _LIVE.add(self)

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

    @property
    def state(self) -> Mapping[Any, Mapping[str, np.ndarray]]:
        """key -> {name: array}: the arrays the kernel updates in place. Read-only:
        change the arrays in place, or load a whole state with :meth:`load_state_dict`."""
        return self._state

    @state.setter
    def state(self, value: Any) -> None:
        raise AttributeError(
            "opt.state cannot be replaced: the optimizer updates the arrays it holds in "
            f"place; {_STATE_INSTEAD}"
        )

    def _refuse_reentry(self, call: str) -> None:
        """Refuse ``call``, which changes the optimizer, made from inside the
        schedules another call is running (which it would corrupt). Under the lock."""
        self._refuse_torn(call)
        if self._busy is not None:
            raise ReentrantCallError(
                f"{call}() was called from an lr schedule that {self._busy}() of the same "
                "optimizer was running; a schedule may read the optimizer but not change it"
            )

    # -- schedules, checkpoints, torch import (radam.schedules, radam.checkpoint) --

    def _refuse_torn(self, call: str) -> None:
        if self._busy == _TORN:
            raise RuntimeError(
                f"{call}(): this process was forked while another thread was inside a call "
                f"of this optimizer that did not end within {FORK_WAIT_S:.0f} s, so its params "
                "and state may be half-written here; build a new optimizer"
            )

    @property
    def current_lr(self) -> list[float]:
        """Each group's lr for the next step: the float, or the group's schedule
        called with ``step_count`` (see ``radam.schedules`` for the convention).
        Read from inside a schedule of this optimizer, the lrs last computed
        (those of the last step, or of construction)."""
        with self._lock:
            if self._busy is not None:
                return list(self._last_lrs)
            return [o.lr for o in self._options("current_lr")]

    @property
    def current_betas(self) -> list[tuple[float, float]]:
        """Each group's (beta1, beta2) for the next step: betas[0] may be a
        schedule (e.g. ``radam.schedules.OneCycle.momentum()``), called like lr's."""
        with self._lock:
            if self._busy is not None:
                return list(self._last_betas)
            return [(o.beta1, o.beta2) for o in self._options("current_betas")]

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

    def _options(self, caller: str = "step") -> list[EngineOptions]:
        # Validating costs microseconds per group, the whole budget of a small
        # step: reuse the last result while no group's options changed.
        groups = self.param_groups
        fast = self._options_fast
        if fast is not None and fast[0] is self._state_names:
            # Tuples compare items by identity first: a few hundred ns per group
            # (a group's ParamList compares by identity: a replaced one differs).
            try:
                if [(tuple(g), tuple(g.values())) for g in groups] == fast[1]:
                    return fast[2]
            except Exception:  # an odd value (e.g. an array): validate it below
                pass
        self._check_groups()
        snapshot = [_option_values(g) for g in groups]
        cached = self._options_cache
        if cached is not None and cached[0] is self._state_names and None not in snapshot:
            try:
                if cached[1] == snapshot:
                    return cached[2]
            except Exception:  # an odd value (e.g. an array): validate it below
                pass
        options = self._evaluate(groups, "param_groups[{}]", self._step, caller)
        if self._engine is not None:
            for i, (opts, names) in enumerate(zip(options, self._state_names)):
                if state_names(opts) != names:
                    raise ValueError(
                        f"param_groups[{i}]: amsgrad, and whether momentum is on, "
                        "cannot change once state exists"
                    )
        self._options_cache = (self._state_names, snapshot, options)
        if all(_immutable_options(g) for g in groups):
            keyed = [(tuple(g), tuple(g.values())) for g in groups]
            self._options_fast = (self._state_names, keyed, options)
        else:
            self._options_fast = None
        return options

    def _evaluate(
        self, groups: list[Any], where: str, count: int, caller: str
    ) -> list[EngineOptions]:
        """Validate each group's options, calling its schedules at ``count``
        (``where`` names group i once formatted with i) as part of ``caller``
        (marked busy meanwhile). Under the lock."""
        self._busy = caller
        try:
            options = [engine_options(g, where.format(i), count) for i, g in enumerate(groups)]
        finally:
            self._busy = None
        self._last_lrs = [o.lr for o in options]
        self._last_betas = [(o.beta1, o.beta2) for o in options]
        return options

    def _check_groups(self) -> None:
        """param_groups still has the groups this optimizer was built with, each a
        dict holding the params list it was given (the engine steps those arrays)."""
        groups = self.param_groups
        if not isinstance(groups, list) or len(groups) != len(self._group_params):
            raise ValueError(
                f"param_groups must stay a list of the {len(self._group_params)} groups this "
                "optimizer was built with; groups cannot be added or removed (build a new "
                "optimizer)"
            )
        for i, (g, params) in enumerate(zip(groups, self._group_params)):
            if not isinstance(g, dict):
                raise TypeError(f"param_groups[{i}] must be a dict, got {type(g).__name__}")
            if g.get("params") is not params:
                raise ValueError(
                    f"param_groups[{i}]['params'] was replaced: the optimizer steps the arrays "
                    "it was built with; build a new optimizer over new params"
                )

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

    def _fresh_state(self, names: list[tuple[str, ...]]) -> FrozenMapping:
        state = {}
        for t in self._layout.tensors:
            entry = {n: np.zeros(t.array.shape, d) for n, d in self._tensor_state(names, t).items()}
            if "master_param" in entry:
                entry["master_param"][...] = t.array
            state[t.key] = _frozen_entry(t.key, entry)
        return _frozen_state(state)

    def step(self, grads: Any) -> None:
        """One Adam step: every param moves in place. ``grads`` mirrors ``params``.

        On any error (a missing, misshapen, mistyped or aliasing grad, a bad
        option) a clear exception is raised and params and state are untouched.
        """
        # A list of as many arrays as a flat list of params is passed as it is.
        if type(grads) is list and len(grads) == self._flat_list:
            flat = grads
        else:
            flat = flatten_grads(self._layout, grads)
        with self._lock:
            if self._busy is not None:  # called from a schedule, or torn by a fork
                self._refuse_reentry("step")
            options = self._options("step")
            engine, state, names = self._engine, self._state, self._state_names
            if engine is None:
                names = [state_names(o) for o in options]
                state = self._fresh_state(names)
                engine = self._build(state)
            t = self._step + 1
            try:
                carries = engine.step(flat, t, options, self._carries, self.skip_nonfinite)
            except OverflowError:
                if t <= LAST_STEP:
                    raise
                raise OverflowError(
                    f"the step count is {self._step}: the kernel counts steps in 64 bits, "
                    f"and {LAST_STEP} is its last"
                ) from None
            if carries is None:  # a NaN or Inf gradient: the whole step was skipped
                self.skipped_steps += 1
                return
            self._engine, self._state, self._state_names, self._step = engine, state, names, t
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
            self._refuse_torn("state_dict")
            self._sync_host()
            state = {}
            for i, t in enumerate(self._layout.tensors):
                if t.key in self._state:
                    entry = {"step": self._step}
                    if self.param_groups[t.group].get("algorithm") == "nadam":
                        entry["mu_product"] = self._carries[t.group]
                    entry.update({k: v.copy() for k, v in self._state[t.key].items()})
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
        changes, values included (a state no run of this optimizer can reach,
        such as a negative second moment, is refused); the arrays are copied in.
        A resumed run continues bit for bit.
        """
        with self._lock:
            self._refuse_reentry("load_state_dict")
            self._apply_state_dict(self._checked_state_dict(state_dict, "load_state_dict"))

    def _checked_state_dict(self, state_dict: Mapping[str, Any], caller: str) -> _Loaded:
        """What loading ``state_dict`` applies, every part checked (options,
        values, state arrays copied), as part of ``caller``; changes nothing.
        Under the lock."""
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, (list, tuple)):
            raise TypeError(
                "state_dict['param_groups'] must be a list of group dicts, got "
                f"{type(saved_groups).__name__}"
            )
        self._check_groups()
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(saved_groups)} param groups, this optimizer has "
                f"{len(self.param_groups)}"
            )
        groups = []
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
            groups.append({**ours, **options})
        options = self._evaluate(groups, "state_dict['param_groups'][{}]", 0, caller)
        names = [state_names(o) for o in options]
        step, state = self._check_saved_state(state_dict["state"], names)
        carries = self._saved_carries(state_dict["state"], options)
        return _Loaded(groups, names, step, state, carries)

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
            self._engine, self._state, self._state_names = engine, loaded.state, loaded.names
            self._step, self._carries = loaded.step, loaded.carries
            self._options_cache = self._options_fast = None

    def _saved_carries(self, saved: Mapping, options: list[EngineOptions]) -> list[float]:
        """NAdam's mu_product per group, from the state entries of its params: the
        product of the group's momentum coefficients so far, each in [0, 1), so
        in [0, 1) once a step was taken (0 with beta1 = 0, or once the product
        underflows: at step 646 with beta1 = 0.6)."""
        carries = [1.0] * len(options)
        seen: dict[int, tuple[float, int]] = {}
        for i, t in enumerate(self._layout.tensors):
            if options[t.group].algorithm != "nadam" or not saved:
                continue
            where = f"state_dict['state'][{i}]['mu_product']"
            value = saved[i].get("mu_product")
            if isinstance(value, np.ndarray) and value.shape == ():
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, (float, int, np.floating)):
                raise ValueError(f"{where} must be a number, got {value!r}")
            try:
                value = float(value)
            except OverflowError:  # an int past float64's range
                value = math.inf
            if not 0.0 <= value < 1.0:
                raise ValueError(
                    f"{where} is {saved[i].get('mu_product')!r}; NAdam's product of momentum "
                    "coefficients is in [0, 1) once a step was taken"
                )
            first = seen.setdefault(t.group, (value, i))
            if first[0] != value:
                raise ValueError(
                    f"{where} is {value!r} but state_dict['state'][{first[1]}]['mu_product'] "
                    f"of the same group is {first[0]!r}; a group's params share one product"
                )
            carries[t.group] = value
        return carries

    def _check_saved_state(
        self, saved: Any, names: list[tuple[str, ...]]
    ) -> tuple[int, FrozenMapping]:
        if not isinstance(saved, Mapping):
            raise ValueError("state_dict['state'] must be a dict index -> state")
        tensors = self._layout.tensors
        if not saved:
            return 0, _frozen_state({})
        indices = list(range(len(tensors)))
        if set(saved) != set(indices):
            raise ValueError(
                f"state_dict['state'] must have an entry for each of the {len(tensors)} params "
                f"(indices 0..{len(tensors) - 1}), got {sorted(saved, key=repr)}"
            )
        steps, state = set(), {}
        for i, t in enumerate(tensors):
            entry, where = saved[i], f"state_dict['state'][{i}]"
            if not isinstance(entry, Mapping):
                raise TypeError(f"{where} must be a dict name -> value, got {type(entry).__name__}")
            dtypes = self._tensor_state(names, t)
            missing = [n for n in (*dtypes, "step") if n not in entry]
            if missing:
                raise ValueError(f"{where} lacks {missing}")
            steps.add(_saved_step(entry["step"], f"{where}['step']"))
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
                _check_reachable(value, n, f"{where}[{n!r}]")
                copies[n] = np.array(value, order="C", copy=True)
            state[t.key] = _frozen_entry(t.key, copies)
        if len(steps) != 1:
            raise ValueError(f"state_dict['state'] entries disagree on 'step': {sorted(steps)}")
        return steps.pop(), _frozen_state(state)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} (device={self.device!r}, step={self._step})"]
        for i, g in enumerate(self.param_groups):
            opts = ", ".join(f"{k}={g[k]!r}" for k in self.defaults)
            lines.append(f"  group {i}: {len(g['params'])} params, {opts}")
        return "\n".join(lines)


# What each state array can hold after any number of steps, from the update
# rules. A second moment (a running mean of squares), AMSGrad's running max of
# it and AdaMax's infinity norm (a running max of |g| + eps) are >= 0, and +Inf
# when a finite gradient's square (or |g|) passes the storage type's range:
# that element's update is then 0, in the run that saved it and after a load.
# The other arrays (the first moment, the velocity, a master copy) are finite
# until the params themselves turn Inf or NaN, and NaN appears nowhere before
# that: a state holding those would make the next steps' params NaN.
_NON_NEGATIVE = ("exp_avg_sq", "max_exp_avg_sq", "exp_inf")


def _check_reachable(value: np.ndarray, name: str, where: str) -> None:
    """Refuse a state array that no healthy run produces and that would turn
    the params into NaN: a NaN anywhere, an Inf in the first moment, velocity
    or master copy, a negative second moment or infinity norm."""
    if name in _NON_NEGATIVE:
        with np.errstate(invalid="ignore"):
            bad = ~(value >= 0)  # NaN fails the comparison too
        rule = f"{name} is a running mean or max of non-negative values: >= 0 (+Inf allowed)"
    else:
        bad = ~np.isfinite(value)
        rule = f"{name} is finite in any run whose params are"
    if bad.any():
        at = tuple(int(x) for x in np.argwhere(bad)[0])
        raise ValueError(f"{where} holds {value[at]!r} at index {at}; {rule}")


def _saved_step(step: Any, where: str) -> int:
    """A saved step count: a whole number >= 1 whose next step fits the kernel's counter."""
    if isinstance(step, np.ndarray) and step.shape == ():
        step = step.item()
    if isinstance(step, bool) or not isinstance(step, (int, np.integer, float, np.floating)):
        raise ValueError(f"{where} must be a whole number >= 1, got {step!r}")
    if isinstance(step, (float, np.floating)):
        if not math.isfinite(step) or step != math.floor(step):
            raise ValueError(f"{where} must be a whole number >= 1, got {step!r}")
    count = int(step)
    if not 1 <= count < LAST_STEP:
        raise ValueError(
            f"{where} must be a whole number from 1 to 2**64 - 2 (the next step's number "
            f"must fit 64 bits), got {step!r}"
        )
    return count


def _frozen_entry(key: Any, arrays: dict[str, np.ndarray]) -> FrozenMapping:
    return FrozenMapping(arrays, f"opt.state[{key!r}]", _STATE_INSTEAD)


def _frozen_state(entries: dict[Any, FrozenMapping]) -> FrozenMapping:
    return FrozenMapping(entries, "opt.state", _STATE_INSTEAD)


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
