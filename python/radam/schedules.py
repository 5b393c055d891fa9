"""Schedules: ``lr`` (and ``betas[0]``) as a function of the step count.

Any group's ``lr`` (and the ``lr`` argument of the optimizers) may be a float or
a callable ``schedule(count) -> float``, and so may ``betas[0]`` (beta1, e.g.
:meth:`OneCycle.momentum`; its value is checked like a float beta1, in [0, 1)).
The convention, shared with optax and with PyTorch's LR schedulers:

- ``count`` is the number of updates already taken: 0 for the first update,
  ``opt.step_count`` in general. The value returned is the lr of the update
  about to happen.
- The optimizer calls the schedule once per ``step()`` per group, on the host,
  in float64, before anything changes. The value is validated like a float lr
  (a finite number >= 0): a bad value, or an exception inside the schedule,
  raises an error naming ``param_groups[i]['lr']`` and the step does not
  happen (params, state and step count untouched).
- ``opt.current_lr`` gives each group's lr for the next step (it calls the
  schedules with ``opt.step_count``), ``opt.current_betas`` its betas; past
  the end of a schedule (:class:`ScheduleEnded`) there is no next step, and
  they give that group's last step's. ``opt.last_lr`` and ``opt.last_betas``
  give the values the last step used (torch's ``get_last_lr()``).
- A schedule's position is the optimizer's step count, so it survives
  ``state_dict``/``load_state_dict`` and ``save``/``load`` with nothing extra.

The built-in schedules below are small immutable callable classes with a
readable ``repr``, equality by value and a JSON description
(:meth:`Schedule.config`, :func:`from_config`) that checkpoints store.
Arguments follow optax's names (``init_value``, ``peak_value``,
``end_value``, ``warmup_steps``, ``decay_steps``, ``transition_steps``,
``decay_rate``, ``pct_start``, ``div_factor``, ``final_div_factor``) and
PyTorch's for :class:`StepDecay` (``step_size``, ``gamma``) and for what
optax lacks in :class:`OneCycle` (``anneal_strategy``, ``three_phase``).
Any other callable works too; it just cannot be written into a checkpoint
(see :meth:`radam.Adam.load`).

>>> import radam
>>> s = radam.schedules.WarmupCosineDecay(peak_value=1e-3, warmup_steps=100, decay_steps=1000)
>>> s(0), s(100), s(1000)
(0.0, 0.001, 0.0)
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, ClassVar

from ._errors import Error
from ._numbers import as_number, real

__all__ = [
    "Constant",
    "ExponentialDecay",
    "LinearWarmup",
    "OneCycle",
    "OneCycleMomentum",
    "Schedule",
    "StepDecay",
    "WarmupCosineDecay",
    "constant_schedule",
    "exponential_decay",
    "from_config",
    "warmup_cosine_decay_schedule",
]


def _value(cls: str, name: str, value: Any, *, positive: bool = False) -> float:
    """A finite real number >= 0 (> 0 with ``positive``)."""
    return real(value, f"{cls}: {name}", 0, low_open=positive)


def _steps(cls: str, name: str, value: Any, *, positive: bool = False) -> int:
    """A whole number of steps >= 0 (> 0 with ``positive``)."""
    value = as_number(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{cls}: {name} must be an integer number of steps, got {value!r}")
    v = int(value)
    if v < 0 or (positive and v == 0):
        rule = "> 0" if positive else ">= 0"
        raise ValueError(f"{cls}: {name} must be {rule}, got {value!r}")
    return v


def _count(cls: str, count: Any) -> int:
    count = as_number(count)
    if isinstance(count, bool) or not isinstance(count, numbers.Integral):
        raise TypeError(f"{cls}: the step count must be an integer >= 0, got {count!r}")
    if count < 0:
        raise ValueError(f"{cls}: the step count must be an integer >= 0, got {count!r}")
    return int(count)


def _warmup(init_value: float, peak_value: float, frac: float) -> float:
    """The linear warmup's value ``frac`` of the way from ``init_value`` to ``peak_value``."""
    return init_value + (peak_value - init_value) * frac


class ScheduleEnded(Error, ValueError):
    """A schedule called past its last update (:class:`OneCycle` after its
    ``transition_steps`` updates), where it has no value. A step there fails;
    ``opt.current_lr`` reports the last step's values instead."""


class Schedule:
    """Base of the built-in schedules: ``schedule(count) -> float``.

    ``_args`` is the constructor's argument names, in order (read from its
    signature); subclasses store each as an attribute. ``repr``, equality,
    hashing and the JSON description follow from that. Instances are immutable.
    """

    _args: ClassVar[tuple[str, ...]] = ()
    _registry: ClassVar[dict[str, type[Schedule]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Schedule._registry[cls.__name__] = cls
        cls._args = tuple(inspect.signature(cls.__init__).parameters)[1:]

    def __call__(self, count: int) -> float:
        return self._value(_count(type(self).__name__, count))

    def _value(self, count: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """A JSON-ready description: ``{"name": class name, "args": {...}}``;
        :func:`from_config` rebuilds an equal schedule from it."""
        return {"name": type(self).__name__, "args": {k: getattr(self, k) for k in self._args}}

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"{type(self).__name__} is immutable; build a new schedule")
        object.__setattr__(self, name, value)

    def _freeze(self) -> None:
        object.__setattr__(self, "_frozen", True)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.config() == other.config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(getattr(self, k) for k in self._args)))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._args)
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """``value`` at every step (optax's ``constant_schedule``)."""

    def __init__(self, value: float) -> None:
        self.value = _value("Constant", "value", value)
        self._freeze()

    def _value(self, count: int) -> float:
        return self.value


class LinearWarmup(Schedule):
    """Linear from ``init_value`` (at count 0) to ``peak_value`` (at count
    ``warmup_steps``), then ``peak_value``:
    ``init + (peak - init) * min(count, warmup_steps) / warmup_steps``.

    Note that with the default ``init_value=0`` the first update has lr 0 (as
    in optax); pass a small ``init_value`` or, like PyTorch's ``LinearLR``, a
    fraction of the peak to avoid it.
    """

    def __init__(self, peak_value: float, warmup_steps: int, init_value: float = 0.0) -> None:
        self.peak_value = _value("LinearWarmup", "peak_value", peak_value)
        self.warmup_steps = _steps("LinearWarmup", "warmup_steps", warmup_steps)
        self.init_value = _value("LinearWarmup", "init_value", init_value)
        self._freeze()

    def _value(self, count: int) -> float:
        if count >= self.warmup_steps:
            return self.peak_value
        return _warmup(self.init_value, self.peak_value, count / self.warmup_steps)


class WarmupCosineDecay(Schedule):
    """Optional linear warmup, then cosine decay (optax's
    ``warmup_cosine_decay_schedule``, with PyTorch's ``CosineAnnealingLR``
    shape after the warmup).

    - ``count < warmup_steps``: linear from ``init_value`` to ``peak_value``;
    - ``warmup_steps <= count <= decay_steps``: with
      ``T = decay_steps - warmup_steps`` and ``c = count - warmup_steps``,
      ``end_value + (peak_value - end_value) * (1 + cos(pi * c / T)) / 2``;
    - afterwards: ``end_value``.

    ``decay_steps`` counts the warmup too, as in optax. ``warmup_steps=0``
    (the default) is plain cosine decay from ``peak_value``.
    """

    def __init__(
        self,
        peak_value: float,
        decay_steps: int,
        warmup_steps: int = 0,
        init_value: float = 0.0,
        end_value: float = 0.0,
    ) -> None:
        name = "WarmupCosineDecay"
        self.peak_value = _value(name, "peak_value", peak_value)
        self.decay_steps = _steps(name, "decay_steps", decay_steps, positive=True)
        self.warmup_steps = _steps(name, "warmup_steps", warmup_steps)
        if self.warmup_steps > self.decay_steps:
            raise ValueError(
                f"{name}: warmup_steps ({warmup_steps}) must be <= decay_steps ({decay_steps}); "
                "decay_steps counts the warmup too"
            )
        self.init_value = _value(name, "init_value", init_value)
        self.end_value = _value(name, "end_value", end_value)
        self._freeze()

    def _value(self, count: int) -> float:
        if count < self.warmup_steps:
            return _warmup(self.init_value, self.peak_value, count / self.warmup_steps)
        span = self.decay_steps - self.warmup_steps
        if count >= self.decay_steps or span == 0:
            return self.end_value if count >= self.decay_steps else self.peak_value
        cosine = 0.5 * (1.0 + math.cos(math.pi * (count - self.warmup_steps) / span))
        return self.end_value + (self.peak_value - self.end_value) * cosine


class ExponentialDecay(Schedule):
    """``init_value * decay_rate ** p`` with ``p = (count - transition_begin) /
    transition_steps`` (floored with ``staircase``; ``init_value`` before
    ``transition_begin``), as optax's ``exponential_decay``; with
    ``transition_steps=1`` it is PyTorch's ``ExponentialLR(gamma=decay_rate)``.
    ``end_value``, if given, bounds the value (a floor when decaying, a ceiling
    when ``decay_rate > 1``).
    """

    def __init__(
        self,
        init_value: float,
        decay_rate: float,
        transition_steps: int = 1,
        transition_begin: int = 0,
        staircase: bool = False,
        end_value: float | None = None,
    ) -> None:
        name = "ExponentialDecay"
        self.init_value = _value(name, "init_value", init_value)
        self.decay_rate = _value(name, "decay_rate", decay_rate, positive=True)
        self.transition_steps = _steps(name, "transition_steps", transition_steps, positive=True)
        self.transition_begin = _steps(name, "transition_begin", transition_begin)
        if not isinstance(staircase, bool):
            raise TypeError(f"{name}: staircase must be True or False, got {staircase!r}")
        self.staircase = staircase
        self.end_value = None if end_value is None else _value(name, "end_value", end_value)
        self._freeze()

    def _value(self, count: int) -> float:
        if count <= self.transition_begin:
            return self.init_value
        p = (count - self.transition_begin) / self.transition_steps
        if self.staircase:
            p = float(math.floor(p))
        try:
            value = self.init_value * self.decay_rate**p
        except OverflowError:
            value = math.inf
        if self.end_value is not None:
            value = (
                max(value, self.end_value) if self.decay_rate < 1 else min(value, self.end_value)
            )
        return value


class StepDecay(Schedule):
    """``init_value * gamma ** (count // step_size)``: multiply by ``gamma``
    every ``step_size`` updates (PyTorch's ``StepLR``)."""

    def __init__(self, init_value: float, step_size: int, gamma: float = 0.1) -> None:
        self.init_value = _value("StepDecay", "init_value", init_value)
        self.step_size = _steps("StepDecay", "step_size", step_size, positive=True)
        self.gamma = _value("StepDecay", "gamma", gamma)
        self._freeze()

    def _value(self, count: int) -> float:
        try:
            return self.init_value * self.gamma ** (count // self.step_size)
        except OverflowError:
            return math.inf


def _one_cycle_shape(
    cls: str, transition_steps: Any, pct_start: Any, anneal_strategy: Any, three_phase: Any
) -> tuple[int, float, str, bool]:
    """The checked arguments that shape a one-cycle (shared by the lr and the beta1 cycle)."""
    steps = _steps(cls, "transition_steps", transition_steps, positive=True)
    pct = real(pct_start, f"{cls}: pct_start", 0, 1)
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(
            f"{cls}: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}"
        )
    if not isinstance(three_phase, bool):
        raise TypeError(f"{cls}: three_phase must be True or False, got {three_phase!r}")
    if float(pct * steps) - 1 == 0:
        # torch's first phase would then end where it starts: 0/0 at count 0
        raise ValueError(
            f"{cls}: pct_start * transition_steps = 1 makes the first phase 0 steps long "
            f"(pct_start={pct_start!r}, transition_steps={transition_steps!r}); torch's "
            "OneCycleLR divides by zero there"
        )
    return steps, pct, anneal_strategy, three_phase


def _one_cycle_at(schedule: Any, count: int, values: tuple[tuple[float, float], ...]) -> float:
    """The value of a one-cycle at ``count``: torch's ``OneCycleLR.get_lr``, in its
    order of operations, over phases that start and end at ``values``."""
    steps, pct_start = schedule.transition_steps, schedule.pct_start
    if count >= steps:
        raise ScheduleEnded(
            f"{type(schedule).__name__}: step count {count} is past the cycle, whose "
            f"transition_steps={steps} updates have counts 0 to {steps - 1} (torch's OneCycleLR "
            "refuses to go on too); build a longer cycle, or set a number in its place"
        )
    ends: tuple[float, ...] = (float(pct_start * steps) - 1, steps - 1)
    if schedule.three_phase:
        ends = (ends[0], float(2 * pct_start * steps) - 2, steps - 1)
    start_step = 0.0
    for i, end_step in enumerate(ends):
        if count <= end_step or i == len(ends) - 1:
            pct = (count - start_step) / (end_step - start_step)
            start, end = values[i]
            if schedule.anneal_strategy == "cos":
                return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
            return (end - start) * pct + start
        start_step = end_step
    raise AssertionError("unreachable: the last phase takes every count")  # pragma: no cover


class OneCycle(Schedule):
    """The one-cycle policy (Smith & Topin), as ``torch.optim.lr_scheduler.OneCycleLR``
    with optax's argument names: ``peak_value`` is torch's ``max_lr``,
    ``transition_steps`` its ``total_steps``.

    The lr starts at ``peak_value / div_factor``, rises to ``peak_value`` over
    the first ``pct_start`` of the cycle, then falls to ``peak_value /
    div_factor / final_div_factor`` at its end; ``anneal_strategy`` "cos" or
    "linear" shapes each phase; ``three_phase=True`` comes back down to the
    start value symmetrically, then falls to the end value in a third phase.
    Every value is torch's to the bit (the same formulas in the same order):
    with torch's phase ends ``pct_start * transition_steps - 1`` (and
    ``2 * pct_start * transition_steps - 2``) and ``transition_steps - 1``.

    The cycle is ``transition_steps`` updates, counts 0 to ``transition_steps
    - 1``; a later count raises ValueError (a step then fails, naming the
    schedule, and nothing changes). torch raises too, one update later: it
    extrapolates the last phase once, which for "linear" can give a negative lr.
    ``pct_start * transition_steps == 1``, where torch divides by zero, is
    refused here.

    :meth:`momentum` gives the matching beta1 cycle, for ``betas[0]`` (torch's
    ``cycle_momentum``)::

        oc = OneCycle(peak_value=1e-2, transition_steps=1000)
        opt = radam.Adam(params, lr=oc, betas=(oc.momentum(), 0.999))
    """

    def __init__(
        self,
        peak_value: float,
        transition_steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal_strategy: str = "cos",
        three_phase: bool = False,
    ) -> None:
        name = "OneCycle"
        self.peak_value = _value(name, "peak_value", peak_value)
        self.transition_steps, self.pct_start, self.anneal_strategy, self.three_phase = (
            _one_cycle_shape(name, transition_steps, pct_start, anneal_strategy, three_phase)
        )
        self.div_factor = _value(name, "div_factor", div_factor, positive=True)
        self.final_div_factor = _value(name, "final_div_factor", final_div_factor, positive=True)
        self._freeze()

    def _value(self, count: int) -> float:
        initial = self.peak_value / self.div_factor
        final = initial / self.final_div_factor
        if self.three_phase:
            values = ((initial, self.peak_value), (self.peak_value, initial), (initial, final))
        else:
            values = ((initial, self.peak_value), (self.peak_value, final))
        return _one_cycle_at(self, count, values)

    def momentum(self, base: float = 0.85, peak: float = 0.95) -> OneCycleMomentum:
        """The beta1 cycle that goes with this lr cycle, as torch's
        ``cycle_momentum`` with ``base_momentum=base``, ``max_momentum=peak``:
        from ``peak`` down to ``base`` while the lr rises, back up to ``peak``
        while it falls (and, with ``three_phase``, ``peak`` in the third phase)."""
        return OneCycleMomentum(
            self.transition_steps,
            self.pct_start,
            self.anneal_strategy,
            self.three_phase,
            base,
            peak,
        )


class OneCycleMomentum(Schedule):
    """The beta1 (momentum) cycle of :class:`OneCycle` (usually made by
    :meth:`OneCycle.momentum`), for ``betas[0]``: torch's ``OneCycleLR`` with
    ``cycle_momentum=True``, ``base_momentum=base``, ``max_momentum=peak``.
    Same phases, shapes and end of cycle as the lr's; ``base`` and ``peak``
    are in [0, 1)."""

    def __init__(
        self,
        transition_steps: int,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        three_phase: bool = False,
        base: float = 0.85,
        peak: float = 0.95,
    ) -> None:
        name = "OneCycleMomentum"
        self.transition_steps, self.pct_start, self.anneal_strategy, self.three_phase = (
            _one_cycle_shape(name, transition_steps, pct_start, anneal_strategy, three_phase)
        )
        self.base = real(base, f"{name}: base (a beta1)", 0, 1, high_open=True)
        self.peak = real(peak, f"{name}: peak (a beta1)", 0, 1, high_open=True)
        self._freeze()

    def _value(self, count: int) -> float:
        up, down = (self.peak, self.base), (self.base, self.peak)
        values = (up, down, (self.peak, self.peak)) if self.three_phase else (up, down)
        return _one_cycle_at(self, count, values)


# optax's function names, for readers coming from it.
constant_schedule = Constant
warmup_cosine_decay_schedule = WarmupCosineDecay
exponential_decay = ExponentialDecay


def from_config(config: Any) -> Schedule:
    """Rebuild a built-in schedule from :meth:`Schedule.config`'s description."""
    if (
        not isinstance(config, dict)
        or not isinstance(config.get("name"), str)
        or not isinstance(config.get("args"), dict)
    ):
        raise ValueError(
            f"a schedule description is {{'name': ..., 'args': {{...}}}}, got {config!r}"
        )
    cls = Schedule._registry.get(config["name"])
    if cls is None:
        raise ValueError(
            f"unknown schedule {config['name']!r}; known: {sorted(Schedule._registry)}"
        )
    unknown = sorted(set(config["args"]) - set(cls._args))
    if unknown:
        raise ValueError(f"{config['name']}: unknown argument(s) {unknown}")
    return cls(**config["args"])
