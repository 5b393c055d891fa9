"""Learning-rate schedules: ``lr`` as a function of the step count.

Any group's ``lr`` (and the ``lr`` argument of the optimizers) may be a float or
a callable ``schedule(count) -> float``. The convention, shared with optax and
with PyTorch's LR schedulers:

- ``count`` is the number of updates already taken: 0 for the first update,
  ``opt.step_count`` in general. The value returned is the lr of the update
  about to happen.
- The optimizer calls the schedule once per ``step()`` per group, on the host,
  in float64, before anything changes. The value is validated like a float lr
  (a finite number >= 0): a bad value, or an exception inside the schedule,
  raises an error naming ``param_groups[i]['lr']`` and the step does not
  happen (params, state and step count untouched).
- ``opt.current_lr`` gives each group's lr for the next step (it calls the
  schedules with ``opt.step_count``).
- A schedule's position is the optimizer's step count, so it survives
  ``state_dict``/``load_state_dict`` and ``save``/``load`` with nothing extra.

The built-in schedules below are small immutable callable classes with a
readable ``repr``, equality by value and a JSON description
(:meth:`Schedule.config`, :func:`from_config`) that checkpoints store.
Arguments follow optax's names (``init_value``, ``peak_value``,
``end_value``, ``warmup_steps``, ``decay_steps``, ``transition_steps``,
``decay_rate``) and PyTorch's for :class:`StepDecay` (``step_size``,
``gamma``). Any other callable works too; it just cannot be written into a
checkpoint (see :meth:`radam.Adam.load`).

>>> import radam
>>> s = radam.schedules.WarmupCosineDecay(peak_value=1e-3, warmup_steps=100, decay_steps=1000)
>>> s(0), s(100), s(1000)
(0.0, 0.001, 0.0)
"""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar

__all__ = [
    "Constant",
    "ExponentialDecay",
    "LinearWarmup",
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
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{cls}: {name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        rule = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"{cls}: {name} must be {rule}, got {value!r}")
    return v


def _steps(cls: str, name: str, value: Any, *, positive: bool = False) -> int:
    """A whole number of steps >= 0 (> 0 with ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{cls}: {name} must be an integer number of steps, got {value!r}")
    v = int(value)
    if v < 0 or (positive and v == 0):
        rule = "> 0" if positive else ">= 0"
        raise ValueError(f"{cls}: {name} must be {rule}, got {value!r}")
    return v


def _count(cls: str, count: Any) -> int:
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
        raise TypeError(f"{cls}: the step count must be an integer >= 0, got {count!r}")
    return int(count)


class Schedule:
    """Base of the built-in schedules: ``schedule(count) -> float``.

    Subclasses set ``_args`` (the constructor's argument names, in order) and
    store each as an attribute; ``repr``, equality, hashing and the JSON
    description follow from that. Instances are immutable.
    """

    _args: ClassVar[tuple[str, ...]] = ()
    _registry: ClassVar[dict[str, type[Schedule]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Schedule._registry[cls.__name__] = cls

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

    _args = ("value",)

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

    _args = ("peak_value", "warmup_steps", "init_value")

    def __init__(self, peak_value: float, warmup_steps: int, init_value: float = 0.0) -> None:
        self.peak_value = _value("LinearWarmup", "peak_value", peak_value)
        self.warmup_steps = _steps("LinearWarmup", "warmup_steps", warmup_steps)
        self.init_value = _value("LinearWarmup", "init_value", init_value)
        self._freeze()

    def _value(self, count: int) -> float:
        if count >= self.warmup_steps:
            return self.peak_value
        frac = count / self.warmup_steps
        return self.init_value + (self.peak_value - self.init_value) * frac


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

    _args = ("peak_value", "decay_steps", "warmup_steps", "init_value", "end_value")

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
            frac = count / self.warmup_steps
            return self.init_value + (self.peak_value - self.init_value) * frac
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

    _args = (
        "init_value",
        "decay_rate",
        "transition_steps",
        "transition_begin",
        "staircase",
        "end_value",
    )

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

    _args = ("init_value", "step_size", "gamma")

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
