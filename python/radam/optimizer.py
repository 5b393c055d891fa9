"""``radam.Adam``: the optimizer users hold (its variants are in ``radam.variants``)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from . import _backends, _fork, _state_dict
from ._engine import (
    MASTER,
    Engine,
    TensorBuffers,
    state_names,
)
from ._errors import ReentrantCallError
from ._formats import FLOAT32, FLOAT64, StateFormat, resolve
from ._frozen import STATE_INSTEAD, ParamList, state_entry, state_mapping
from ._option_cache import OptionCache
from ._options import (
    BY_NAME,
    VARIANTS,
    EngineOptions,
    betas_pair,
    check_choice,
    check_switch,
    engine_options,
    group_defaults,
)
from ._params import (
    HALF_DTYPES,
    Tensor,
    check_state_format,
    flatten_grads,
    layout_of,
)
from ._signatures import from_table
from .schedules import ScheduleEnded


class _Evaluated(NamedTuple):
    """Every group's validated options: as Python reads them, and as the engines
    take them (``radam._core.AdamConfig``)."""

    options: list[EngineOptions]
    configs: list[Any]
    # Each group's (lr, betas), which a step records as its last (kept here, with
    # the options it is read from, so that a step whose options were reused
    # does not build it again).
    values: list[tuple[float, tuple[float, float]]]


@from_table("Adam")
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
    "radam[gpu]"``; float32, bfloat16 or float16 params, all of one dtype, with
    float32, 16-bit or 8-bit state, and master weights; every other option above;
    ``skip_nonfinite`` and ``max_gradient_norm`` need NumPy grads there,
    being checked and measured on the host) with params and state resident on the
    GPU; ``device="auto"`` picks it only when a non-CPU adapter exists. The host
    arrays are then copies: see :meth:`sync` for when they are current.
    """

    # from_table sets _variant, this class's entry of radam._options.VARIANTS, from
    # which come its __init__ (whose options _setup takes) and its docstring's end.

    def _setup(self, params: Any, options: dict[str, Any]) -> None:
        """Construction, with the options checked against the class's signature."""
        self.defaults = group_defaults(VARIANTS[self._variant], options)
        engine_options({**self.defaults, "algorithm": self._algorithm}, "")
        self.skip_nonfinite = check_switch(options["skip_nonfinite"], "skip_nonfinite")
        self.skipped_steps = 0  # steps skipped for a NaN or Inf gradient
        self.master_weights = check_switch(options["master_weights"], "master_weights")
        # The state format, declared in radam._formats (None: each param's compute
        # type); state_dtype shows it as it always has, a NumPy dtype or a name.
        self._state_format = resolve(options["state_dtype"], BY_NAME["state_dtype"].choices)
        fmt = self._state_format
        self.state_dtype = None if fmt is None else fmt.dtype if fmt.plain else fmt.name
        device = check_choice(options["device"], "device")
        self._layout, overrides = layout_of(params)
        check_state_format(fmt, self._layout.tensors)
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
        options_list = [
            engine_options(g, f"params[{i}]").options for i, g in enumerate(self.param_groups)
        ]
        self._check_rounding(options_list, "params[{}]")
        # Each param's first element's index in its whole tensor, which stochastic
        # rounding hashes: 0, but for the shards radam.distributed steps.
        self._first_elements = [0] * len(self._layout)
        self._backend = _backends.resolve(
            device, self._layout.tensors, options_list, self._state_format
        )
        self.device = self._backend.name
        self._group_params = [g["params"] for g in self.param_groups]
        # The length of a list of grads that is passed as it is (-1: none is).
        self._flat_list = len(self._layout) if self._layout.kind == "list" else -1
        self._state = state_mapping({})
        # key -> the size of the whole tensor a param is a shard of (set by
        # radam.distributed), which decides whether it keeps 8-bit state.
        self._whole_sizes: dict[Any, int] = {}
        self._step = 0
        self._engine: Engine | None = None
        self._state_names: list[tuple[str, ...]] = []  # per group, fixed once state exists
        # Reentrant, so that a schedule may read the optimizer (current_lr,
        # state_dict) while step holds it. _busy names the call whose schedules
        # are running: a call that changes the optimizer from inside them (a
        # schedule calling step) is refused instead of corrupting it, and
        # current_lr reads the lrs last computed (it would call itself).
        self._lock = threading.RLock()
        self._busy: str | None = None
        self._last_lrs = [o.lr for o in options_list]
        self._last_betas = [(o.beta1, o.beta2) for o in options_list]
        # Each group's (lr, betas) in the last step this object took (None: none yet).
        self._stepped: list[tuple[float, tuple[float, float]]] | None = None
        self._option_cache: OptionCache[_Evaluated] = OptionCache()
        _fork.track(self)  # its lock is held across forks (radam._fork)

    @property
    def _algorithm(self) -> str:
        """The update rule of this class: "adam", "adamax", "nadam" or "radam"."""
        return VARIANTS[self._variant].rule

    @property
    def step_count(self) -> int:
        """The number of steps taken: what schedules are called with, and the ``t``
        of the bias corrections of every tensor that had a gradient in each (see
        :attr:`tensor_step_counts`)."""
        return self._step

    @property
    def tensor_step_counts(self) -> list[int]:
        """Each param's own step count, in the flat order of params: the ``t`` of
        its bias corrections (torch.optim's ``state[p]["step"]``). A param whose
        grad was None in a step did not advance."""
        with self._lock:
            return self._tensor_counts()[0]

    def _tensor_counts(self) -> tuple[list[int], list[float]]:
        """Each tensor's step count and carry (NAdam's mu_product). Under the lock."""
        if self._engine is None:
            return [0] * len(self._layout), [1.0] * len(self._layout)
        return self._engine.counts()

    @property
    def state(self) -> Mapping[Any, Mapping[str, np.ndarray]]:
        """key -> {name: array}: the arrays the kernel updates in place. Read-only:
        change the arrays in place, or load a whole state with :meth:`load_state_dict`."""
        return self._state

    @state.setter
    def state(self, value: Any) -> None:
        raise AttributeError(
            "opt.state cannot be replaced: the optimizer updates the arrays it holds in "
            f"place; {STATE_INSTEAD}"
        )

    def _refuse_reentry(self, call: str) -> None:
        """Refuse ``call``, which changes the optimizer, made from inside the
        schedules another call is running (which it would corrupt). Under the lock."""
        _fork.refuse_torn(self, call)
        if self._busy is not None:
            raise ReentrantCallError(
                f"{call}() was called from an lr schedule that {self._busy}() of the same "
                "optimizer was running; a schedule may read the optimizer but not change it"
            )

    # -- schedules, checkpoints, torch import (radam.schedules, radam.checkpoint) --

    @property
    def current_lr(self) -> list[float]:
        """Each group's lr for the next step: the float, or the group's schedule
        called with ``step_count`` (see ``radam.schedules`` for the convention).
        Past the end of a group's schedule (``OneCycle`` after its
        ``transition_steps`` updates: :class:`radam.schedules.ScheduleEnded`)
        there is no next step, and that group's :attr:`last_lr` is given.
        Read from inside a schedule of this optimizer, the lrs last computed
        (those of the last step, or of construction)."""
        with self._lock:
            if self._busy is not None:
                return list(self._last_lrs)
            return [lr for lr, _ in self._next_values("current_lr")]

    @property
    def current_betas(self) -> list[tuple[float, float]]:
        """Each group's (beta1, beta2) for the next step: betas[0] may be a
        schedule (e.g. ``radam.schedules.OneCycle.momentum()``), called like lr's
        (past its end, the last step's, as :attr:`current_lr`)."""
        with self._lock:
            if self._busy is not None:
                return list(self._last_betas)
            return [betas for _, betas in self._next_values("current_betas")]

    @property
    def last_lr(self) -> list[float]:
        """Each group's lr in the last step taken (torch's ``get_last_lr()``).
        Before this optimizer steps (built, or just loaded), the float or the
        schedule at ``step_count - 1``, the lr of the step counted last (at 0
        before any step: the first step's, as torch gives before stepping)."""
        with self._lock:
            return [lr for lr, _ in self._last_values("last_lr")]

    @property
    def last_betas(self) -> list[tuple[float, float]]:
        """Each group's (beta1, beta2) in the last step taken, as :attr:`last_lr`."""
        with self._lock:
            return [betas for _, betas in self._last_values("last_betas")]

    def _next_values(self, caller: str) -> list[tuple[float, tuple[float, float]]]:
        """Each group's (lr, betas) for the next step, a schedule that has ended
        giving its value in the last step instead (see :attr:`current_lr`).
        Under the lock."""
        try:
            return _values(self._options(caller).options)
        except ValueError as err:
            if self._step == 0 or not isinstance(err.__cause__, ScheduleEnded):
                raise
        last = self._last_values(caller)
        values = []
        for i, group in enumerate(self.param_groups):
            group = dict(group)
            if self._has_ended(group.get("lr"), caller):
                group["lr"] = last[i][0]
            betas = group.get("betas")
            if (
                isinstance(betas, (tuple, list))
                and len(betas) == 2
                and self._has_ended(betas[0], caller)
            ):
                group["betas"] = (last[i][1][0], betas[1])
            self._busy = caller
            try:
                values += _values([engine_options(group, f"param_groups[{i}]", self._step).options])
            finally:
                self._busy = None
        return values

    def _has_ended(self, schedule: Any, caller: str) -> bool:
        """Whether ``schedule`` (a group's lr or betas[0]) is a schedule past its
        end at the next step. Under the lock."""
        if not callable(schedule):
            return False
        self._busy = caller
        try:
            schedule(self._step)
        except ScheduleEnded:
            return True
        except Exception:  # reported as it is by engine_options
            return False
        finally:
            self._busy = None
        return False

    def _last_values(self, caller: str) -> list[tuple[float, tuple[float, float]]]:
        """Each group's (lr, betas) in the last step taken (see :attr:`last_lr`).
        Under the lock."""
        if self._stepped is not None:
            return self._stepped
        if self._busy is not None:  # inside a schedule: the values last computed
            return list(zip(self._last_lrs, self._last_betas))
        count = max(self._step - 1, 0)
        return _values(
            [self._group_options(i, count, caller) for i in range(len(self.param_groups))]
        )

    def _group_options(self, i: int, count: int, caller: str) -> EngineOptions:
        """Group ``i``'s options, its schedules called at ``count`` as part of
        ``caller``. Under the lock."""
        self._busy = caller
        try:
            return engine_options(self.param_groups[i], f"param_groups[{i}]", count).options
        finally:
            self._busy = None

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
        """Load the ``state_dict()`` of the torch optimizer matching this class (users
        moving over; torch itself is not needed): ``torch.optim.Adam`` or ``AdamW`` into
        radam.Adam/AdamW (bitsandbytes' ``Adam8bit``/``AdamW8bit`` into one with
        ``state_dtype="8bit"``: its maps must be radam's, and its decoupled decay needs
        a decoupled decay here when ``weight_decay != 0``; its ``Adam32bit`` too), and
        ``NAdam`` (its ``mu_product``), ``RAdam`` and ``Adamax`` into the radam class of
        the same name;
        another optimizer's dict is an error that names it. This optimizer must be built
        over the same params in the same order and groups, as NumPy arrays. Tensors
        become NumPy copies, ``step`` tensors ints; the options both have map one to
        one; foreach, fused, capturable, differentiable and the LR schedulers'
        initial_lr, max_lr, min_lr, base_momentum and max_momentum are ignored (they do
        not change the math: the lr and betas in effect are in lr and betas); other keys
        are rejected. For torch < 2.6, whose AdamW state_dict does not say that its
        decay is decoupled, pass ``decoupled_weight_decay=True`` for AdamW. Options
        torch lacks keep this optimizer's values. What this optimizer keeps and the
        dict lacks is made from what it has: with ``master_weights``, the float32
        master copies from the params now; with 8-bit state, float32 moments quantized
        (to the nearest code, as radam's steps store them). Checked fully before
        anything changes; an error names the dict's key and what it must hold.
        """
        from ._torch_import import load_torch_state_dict

        load_torch_state_dict(self, state_dict, decoupled_weight_decay)

    def bitsandbytes_state_dict(self) -> dict[str, Any]:
        """This optimizer's state as bitsandbytes' ``Adam8bit``/``AdamW8bit``
        ``state_dict`` (torch tensors; needs torch), which their
        ``load_state_dict`` takes: for radam.Adam/AdamW with ``state_dtype="8bit"``
        and only the options bitsandbytes' 8-bit Adam has (lr, betas, eps, a
        decoupled weight decay). The other way, ``load_torch_state_dict`` takes
        their state dicts (the maps checked equal to radam's)."""
        from . import _bnb

        with self._lock:
            return _bnb.export(self)

    def _options(self, caller: str = "step") -> _Evaluated:
        """Every group's options, validated. Validating costs microseconds per
        group, the whole budget of a small step: the last result is reused
        while no group's options changed (see :class:`radam._option_cache.OptionCache`)."""
        groups = self.param_groups
        cached = self._option_cache.get(groups, self._state_names)
        if cached is not None:
            return cached
        self._check_groups()
        evaluated = self._evaluate(groups, "param_groups[{}]", self._step, caller)
        self._check_state_names(evaluated.options)
        self._option_cache.put(groups, self._state_names, evaluated)
        return evaluated

    def _check_state_names(self, options: list[EngineOptions]) -> None:
        if self._engine is not None:
            for i, (opts, names) in enumerate(zip(options, self._state_names)):
                if state_names(opts) != names:
                    raise ValueError(
                        f"param_groups[{i}]: amsgrad, and whether momentum is on, "
                        "cannot change once state exists"
                    )

    def _check_savable(self, caller: str) -> None:
        """Refuse to write (``caller``: state_dict, save) what ``load_state_dict``
        would refuse: each group's options checked as a load checks them (its
        schedules called at count 0), and the state arrays' values. From inside
        a schedule of this optimizer only the state is checked: the options are
        being checked by the call that runs the schedule. Under the lock."""
        try:
            if self._busy is None:
                self._check_groups()
                self._check_state_names(
                    self._validate(self.param_groups, "param_groups[{}]", 0, caller).options
                )
            _state_dict.check_values(self)
        except ReentrantCallError:
            raise
        except (TypeError, ValueError) as err:
            raise type(err)(
                f"{caller}() refused: {err}; radam writes only what load_state_dict() "
                "accepts (nothing was written)"
            ) from None

    def _evaluate(self, groups: list[Any], where: str, count: int, caller: str) -> _Evaluated:
        """:meth:`_validate`, and keep the lrs and betas computed (which
        ``current_lr`` reads from inside a schedule)."""
        evaluated = self._validate(groups, where, count, caller)
        self._last_lrs = [o.lr for o in evaluated.options]
        self._last_betas = [(o.beta1, o.beta2) for o in evaluated.options]
        return evaluated

    def _validate(self, groups: list[Any], where: str, count: int, caller: str) -> _Evaluated:
        """Validate each group's options, calling its schedules at ``count``
        (``where`` names group i once formatted with i) as part of ``caller``
        (marked busy meanwhile). Under the lock."""
        self._busy = caller
        try:
            checked = [engine_options(g, where.format(i), count) for i, g in enumerate(groups)]
        finally:
            self._busy = None
        options = [c.options for c in checked]
        self._check_rounding(options, where)
        for i, o in enumerate(options):
            _backends.check_options(self._backend, o, where.format(i))
        return _Evaluated(options, [c.config for c in checked], _values(options))

    def _check_rounding(self, options: list[EngineOptions], where: str) -> None:
        """stochastic_rounding only where every param of the group is bfloat16 or
        float16, stepped without a float32 master copy (``where`` names group i
        once formatted with i)."""
        for gi, o in enumerate(options):
            if not o.stochastic_rounding:
                continue
            if self.master_weights:
                raise ValueError(
                    f"{where.format(gi)}: stochastic_rounding is for 16-bit params without "
                    "master weights (master_weights=True keeps float32 copies, rounded to "
                    "nearest); use one or the other"
                )
            for t in self._layout.tensors:
                if t.group == gi and t.array.dtype not in HALF_DTYPES:
                    raise ValueError(
                        f"{where.format(gi)}: stochastic_rounding is for bfloat16 and float16 "
                        f"params, but params{t.label} is {t.array.dtype}"
                    )

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

    def _build(
        self,
        state: Mapping[Any, Mapping[str, np.ndarray]],
        counts: list[int] | None = None,
        carries: list[float] | None = None,
    ) -> Engine:
        """The engine of this optimizer's device over the params and ``state``, each
        tensor at its step count and carry (none taken when not given)."""
        n = len(self._layout)
        counts, carries = counts or [0] * n, carries or [1.0] * n
        records = [
            TensorBuffers(
                t.label,
                t.group,
                t.array,
                dict(state[t.key]),
                i,
                offset,
                counts[i],
                carries[i],
                self._moment_format(t),
            )
            for i, (t, offset) in enumerate(zip(self._layout.tensors, self._first_elements))
        ]
        return self._backend.engine(records)

    def _moment_format(self, t: Tensor) -> StateFormat:
        """How tensor ``t`` keeps its moments: the state format for its size (a shard
        of a tensor, in radam.distributed, keeps the whole tensor's), or by default
        its param's compute type."""
        fmt = self._state_format or (FLOAT64 if t.array.dtype == np.float64 else FLOAT32)
        return fmt.for_size(self._whole_sizes.get(t.key, t.array.size))

    def _tensor_state(
        self, names: list[tuple[str, ...]], t: Tensor
    ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """The state arrays of tensor ``t``, key -> (shape, dtype): the moments' in
        its format (8-bit: codes and absmax, see ``radam._formats``), and for a
        16-bit param with ``master_weights`` its float32 copy."""
        arrays = self._moment_format(t).shapes(names[t.group], t.array.shape)
        if self.master_weights and t.array.dtype in HALF_DTYPES:
            arrays[MASTER] = (t.array.shape, np.dtype(np.float32))
        return arrays

    def _fresh_state(
        self, names: list[tuple[str, ...]], keys: list[Any] | None = None
    ) -> Mapping[Any, Any]:
        """Zeroed state (a master copy: the param's values) of every tensor, or of ``keys``'."""
        state = {}
        wanted = None if keys is None else set(keys)
        for t in self._layout.tensors:
            if wanted is not None and t.key not in wanted:
                continue
            arrays = self._tensor_state(names, t)
            entry = {n: np.zeros(shape, d) for n, (shape, d) in arrays.items()}
            if MASTER in entry:
                entry[MASTER][...] = t.array
            state[t.key] = state_entry(t.key, entry)
        return state_mapping(state)

    def step(self, grads: Any) -> None:
        """One Adam step: every param moves in place. ``grads`` mirrors ``params``;
        a grad may be None (not on the GPU): that param is left as it is and its
        step count does not advance (each param keeps its own, as torch.optim's
        ``state[p]["step"]``; :attr:`tensor_step_counts`).

        The grad of a param of two or more dimensions may be a
        :class:`radam.RowSparse` (rows of an embedding table, say): only the rows
        it names, and their state, change (docs/formulas.md, "Row-sparse (lazy)
        steps"; on the CPU only).

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
            # The cache's hit inline: the common case, and a small step's budget.
            hit = self._option_cache.get(self.param_groups, self._state_names)
            evaluated = hit or self._options("step")
            engine, state, names = self._engine, self._state, self._state_names
            if engine is None:
                names = [state_names(o) for o in evaluated.options]
                state = self._fresh_state(names)
                engine = self._build(state)
            if not engine.step(flat, evaluated.configs, self.skip_nonfinite):
                # a NaN or Inf gradient: the whole step was skipped
                self.skipped_steps += 1
                return
            self._engine, self._state, self._state_names = engine, state, names
            self._step += 1
            self._stepped = evaluated.values

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
        if self._engine is not None and self._backend.resident:
            self._engine.sync()

    def state_dict(self) -> dict[str, Any]:
        """A copy of the optimizer's state, laid out as ``torch.optim``'s.

        ``{"state": {index: {"step", "exp_avg", "exp_avg_sq"[, "max_exp_avg_sq"]}},
        "param_groups": [{options..., "params": [indices][, "param_names": [...]]}]}``.
        The arrays are copies: later steps do not change a saved dict.

        It holds only what :meth:`load_state_dict` accepts: options that a step
        refuses (set in ``param_groups`` since), or a state holding values no
        healthy run reaches (a NaN), raise the error a load would, naming them.
        """
        return self._saved_state("state_dict")

    def _saved_state(self, caller: str) -> dict[str, Any]:
        """:meth:`state_dict`, as part of ``caller`` (which its errors name)."""
        with self._lock:
            _fork.refuse_torn(self, caller)
            self._sync_host()
            self._check_savable(caller)
            return _state_dict.build(self)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` saved from an optimizer over params of the
        same structure, shapes and dtypes. Everything is checked before anything
        changes, values included (a state no run of this optimizer can reach,
        such as a negative second moment, is refused); the arrays are copied in.
        A resumed run continues bit for bit.
        """
        with self._lock:
            self._refuse_reentry("load_state_dict")
            self._apply_state_dict(_state_dict.check(self, state_dict, "load_state_dict"))

    def _apply_state_dict(
        self, loaded: _state_dict.Loaded, params: list[np.ndarray] | None = None
    ) -> None:
        """Apply a :func:`radam._state_dict.check` result and, if given, copy ``params``
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
            if params is not None and self._backend.resident and loaded.state:
                # A device engine uploads the params when it is built: copy them in
                # first, and put the old values back if the build fails.
                previous = [t.array.copy() for t in tensors]
                _copy_params(tensors, params)
                _fresh_masters(tensors, loaded)
                try:
                    engine = self._build(loaded.state, loaded.counts, loaded.carries)
                except BaseException:
                    _copy_params(tensors, previous)
                    raise
            else:
                engine = (
                    self._build(loaded.state, loaded.counts, loaded.carries)
                    if loaded.state
                    else None
                )
                if params is not None:
                    _copy_params(tensors, params)  # checked above: cannot fail
                    _fresh_masters(tensors, loaded)
            for ours, group in zip(self.param_groups, loaded.groups):
                ours.update({k: v for k, v in group.items() if k not in ("params", "param_names")})
            self._engine, self._state, self._state_names = engine, loaded.state, loaded.names
            self._step = loaded.step
            self._stepped = None  # last_lr: computed from the loaded groups until a step
            self._option_cache.clear()

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} (device={self.device!r}, step={self._step})"]
        for i, g in enumerate(self.param_groups):
            opts = ", ".join(f"{k}={g[k]!r}" for k in self.defaults)
            lines.append(f"  group {i}: {len(g['params'])} params, {opts}")
        return "\n".join(lines)


def _values(options: list[EngineOptions]) -> list[tuple[float, tuple[float, float]]]:
    """Each group's (lr, (beta1, beta2))."""
    return [(o.lr, (o.beta1, o.beta2)) for o in options]


def _copy_params(tensors: list[Tensor], values: list[np.ndarray]) -> None:
    for t, value in zip(tensors, values):
        np.copyto(t.array, value)


def _fresh_masters(tensors: list[Tensor], loaded: _state_dict.Loaded) -> None:
    """The master copy of a tensor that has not stepped (it had no state entry) is
    its param's value: that of the param restored with the state."""
    for t, count in zip(tensors, loaded.counts):
        if count == 0 and MASTER in loaded.state.get(t.key, {}):
            np.copyto(loaded.state[t.key][MASTER], t.array)
