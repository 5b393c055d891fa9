"""The options of radam's optimizers, declared once.

:data:`OPTIONS` is the table: each option's name, default, kind of value,
and which update rules use it. :data:`VARIANTS`
says what each class changes. From these two come every class's defaults
(:func:`defaults_of`; its signature and option docs are made from them in
``_signatures.py``), the group options (:func:`group_defaults`),
:class:`EngineOptions` (the record the Rust core's ``AdamConfig`` is read
from), the checks of a group (:func:`engine_options`) and the options a
checkpoint holds schedules in (:data:`SCHEDULABLE`). Which options a device
implements is its backend's to say (``radam._backends``).

Adding an option: one :class:`Option` here, its field in ``rust/config.rs``'s
``AdamConfig`` (read by name in ``rust/python/config.rs``) and its arithmetic
in the kernels; the tests walk this table (``tests/test_option_table.py``).
"""

from __future__ import annotations

import math
import numbers
from collections import namedtuple
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import _core
from ._errors import ReentrantCallError
from ._formats import CHOICES as STATE_FORMATS
from ._formats import q8_map  # noqa: F401  (tests import the map from here)
from ._numbers import as_number, is_real, real

RULES = _core.ALGORITHMS  # the update rules: "adam", "adamax", "nadam", "radam"


@dataclass(frozen=True)
class Option:
    """One option of the optimizers."""

    name: str
    default: Any
    # How a value is checked here (its range is the core's): "real", "schedulable"
    # (a real or a schedule), "betas" (a pair; beta1 may be a schedule), "flag" (True,
    # False, 1 or 0), "switch" (True or False only), "choice", "state_dtype", "seed"
    # (a whole number from 0 to 2**64 - 1).
    kind: str
    doc: str
    # In the signature before the keyword-only options.
    positional: bool = False
    # A parameter group's option (in param_groups and EngineOptions), or one of the
    # whole optimizer (an attribute of it).
    group: bool = True
    # The update rules it applies to (None: every rule). The classes of other rules
    # take it too, and the core refuses any value but the default there, unless
    # ``only_its_rules``: then they do not take it at all.
    rules: tuple[str, ...] | None = None
    only_its_rules: bool = False
    choices: tuple[Any, ...] = ()

    def applies_to(self, rule: str) -> bool:
        return self.rules is None or rule in self.rules

    def taken_by(self, rule: str) -> bool:
        """Whether the classes of update rule ``rule`` take this option."""
        return self.applies_to(rule) or not self.only_its_rules


OPTIONS: tuple[Option, ...] = (
    Option(
        "lr",
        1e-3,
        "schedulable",
        "the step size alpha, >= 0, or a schedule of the step count (radam.schedules)",
        positional=True,
    ),
    Option(
        "betas",
        (0.9, 0.999),
        "betas",
        "(beta1, beta2), the decays of the first and second moments, each in [0, 1); "
        "beta1 may be a schedule",
        positional=True,
    ),
    Option(
        "eps",
        1e-8,
        "real",
        "added to the root of the second moment, >= 0",
        positional=True,
    ),
    Option(
        "weight_decay",
        0.0,
        "real",
        "L2 coefficient, or AdamW's decay with decoupled_weight_decay, >= 0",
        positional=True,
    ),
    Option(
        "momentum_decay",
        4e-3,
        "real",
        "NAdam's psi: mu_t = beta1 * (1 - 0.5 * 0.96^(t * psi)), >= 0",
        positional=True,
        rules=("nadam",),
        only_its_rules=True,
    ),
    Option(
        "decoupled_weight_decay",
        False,
        "flag",
        "AdamW's param *= 1 - lr * weight_decay instead of L2 regularisation",
        positional=True,
    ),
    Option(
        "amsgrad",
        False,
        "flag",
        "divide by the running max of the second moment (AMSGrad); Adam's rule only",
        positional=True,
        rules=("adam",),
    ),
    Option("maximize", False, "flag", "ascend the objective instead", positional=True),
    Option(
        "device",
        "cpu",
        "choice",
        "'cpu', 'gpu' (the WGSL kernel through wgpu-py) or 'auto'",
        positional=True,
        group=False,
        choices=("cpu", "gpu", "auto"),
    ),
    Option(
        "efficient_form",
        False,
        "flag",
        "the paper's efficient form: eps on the uncorrected root (Keras, PuzzleLib); "
        "Adam's rule only",
        rules=("adam",),
    ),
    Option(
        "beta1_decay",
        1.0,
        "real",
        "lambda: the first moment uses beta1 * lambda^(t-1), in (0, 1]",
    ),
    Option(
        "momentum",
        0.0,
        "real",
        "downhill's velocity on top of the Adam step, in [0, 1)",
    ),
    Option("nesterov", False, "flag", "Nesterov's form of that velocity"),
    Option(
        "max_gradient_elem",
        0.0,
        "real",
        "clip each raw gradient element to +-this (0: off)",
    ),
    Option(
        "max_gradient_norm",
        0.0,
        "real",
        "rescale each tensor's raw gradient to at most this L2 norm (0: off; element "
        "clipping wins)",
    ),
    Option(
        "bias_correction",
        "adam",
        "choice",
        "'adam' (1 - beta^t), or 'downhill-0.4.0' (the released downhill's constant "
        "rescale); Adam's rule only",
        rules=("adam",),
        choices=_core.BIAS_CORRECTIONS,
    ),
    Option(
        "grad_scale",
        1.0,
        "real",
        "the loss scale the gradients carry, divided out, in [2^-126, 2^126]",
    ),
    Option(
        "stochastic_rounding",
        False,
        "flag",
        "store each updated bfloat16/float16 param rounded up or down at random, with "
        "probability proportional to its distance (unbiased: updates under half an ulp "
        "survive on average); only for 16-bit params without master_weights",
    ),
    Option(
        "rounding_seed",
        0,
        "seed",
        "the seed of stochastic_rounding's random bits, a hash of (seed, step, tensor "
        "position, element index): the same on every CPU, thread count and the GPU; "
        "0 to 2**64 - 1",
    ),
    Option(
        "skip_nonfinite",
        False,
        "switch",
        "skip a whole step whose gradients hold a NaN or Inf (counted in skipped_steps)",
        group=False,
    ),
    Option(
        "state_dtype",
        None,
        "state_dtype",
        "None (the param's compute type), 'float32', 'bfloat16', 'float16' or '8bit' "
        "(blockwise 8-bit moments, bitsandbytes' format; tensors under 4096 elements keep "
        "float32 state)",
        group=False,
        choices=(None, *STATE_FORMATS),
    ),
    Option(
        "master_weights",
        False,
        "switch",
        "keep a float32 master copy of each 16-bit param, stepped instead of it",
        group=False,
    ),
)
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


class Variant(NamedTuple):
    """What a class changes: its update rule, the defaults that differ from
    Adam's, and the options it fixes (a keyword may repeat the value, no other)."""

    rule: str
    defaults: dict[str, Any]
    fixed: dict[str, Any]


VARIANTS: dict[str, Variant] = {
    "Adam": Variant("adam", {}, {}),
    "AdamW": Variant("adam", {"weight_decay": 1e-2}, {"decoupled_weight_decay": True}),
    "Adamax": Variant("adamax", {"lr": 2e-3}, {}),
    "NAdam": Variant("nadam", {"lr": 2e-3}, {}),
    "RAdam": Variant("radam", {}, {}),
}
# Options whose value may be (or hold) a schedule, which a checkpoint stores by description.
SCHEDULABLE = tuple(o.name for o in OPTIONS if o.kind in ("schedulable", "betas"))
# Group keys that are not options: the arrays, their names, and the update rule
# (set by the class, not by users).
NOT_OPTIONS = ("params", "param_names", "algorithm")


def options_of(variant: Variant) -> list[Option]:
    """The options the class of ``variant`` takes, in signature order."""
    return [o for o in OPTIONS if o.taken_by(variant.rule)]


def defaults_of(variant: Variant) -> dict[str, Any]:
    """Every option the class of ``variant`` takes, with its default there."""
    return {
        o.name: variant.fixed.get(o.name, variant.defaults.get(o.name, o.default))
        for o in options_of(variant)
    }


def group_defaults(variant: Variant, given: Mapping[str, Any]) -> dict[str, Any]:
    """A class's per-group options: ``given`` over its defaults."""
    defaults = defaults_of(variant)
    return {o.name: given.get(o.name, defaults[o.name]) for o in options_of(variant) if o.group}


def _engine_fields() -> tuple[str, ...]:
    """The group options of :data:`OPTIONS`, ``betas`` as ``beta1`` and ``beta2``,
    then the group's update rule."""
    fields: list[str] = []
    for o in OPTIONS:
        if o.group:
            fields += ["beta1", "beta2"] if o.name == "betas" else [o.name]
    return (*fields, "algorithm")


_EngineFields = namedtuple("_EngineFields", _engine_fields())  # type: ignore[misc]


class EngineOptions(_EngineFields):  # type: ignore[misc,valid-type]
    """One group's validated options, as the Rust core's ``AdamConfig`` reads
    them (by field name): the group options of :data:`OPTIONS`, with ``betas``
    as ``beta1`` and ``beta2``, and the group's update rule ``algorithm``."""

    __slots__ = ()

    @property
    def uses_velocity(self) -> bool:
        """Whether the state holds a momentum velocity."""
        return self.momentum != 0.0 or self.nesterov


class Checked(NamedTuple):
    """One group's options, validated: as Python reads them and as the core does."""

    options: EngineOptions
    config: Any  # radam._core.AdamConfig


def betas_pair(betas: Any, what: str = "betas") -> tuple[Any, Any]:
    """``betas`` as a tuple (beta1, beta2): from a sequence of two (a tuple, a
    list, a 1-d array), not from a set (no order), a dict or a string."""
    if (
        isinstance(betas, (str, bytes, Mapping, Set))
        or not hasattr(betas, "__len__")
        or not hasattr(betas, "__getitem__")
        or (isinstance(betas, np.ndarray) and betas.ndim != 1)
        or len(betas) != 2
    ):
        raise TypeError(f"{what} must be a pair (beta1, beta2), got {betas!r}")
    return betas[0], betas[1]


def _seed(value: Any, what: str) -> int:
    """A seed: a whole number from 0 to 2**64 - 1 (the core's u64)."""
    value = as_number(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if not 0 <= value < 2**64:
        # Its bit length past 256 bits: str() of a huge int is slow or refused.
        shown = repr(value) if value.bit_length() <= 256 else f"{value.bit_length()} bits"
        raise ValueError(f"{what} must be from 0 to 2**64 - 1, got {shown}")
    return value


def _flag(value: Any, what: str) -> bool:
    value = as_number(value)
    if not isinstance(value, (bool, numbers.Integral)) or value not in (0, 1):
        raise TypeError(f"{what} must be True or False, got {value!r}")
    return bool(value)


def check_switch(value: Any, what: str) -> bool:
    """A whole-optimizer switch: True or False (np.True_ too), nothing else."""
    value = as_number(value) if isinstance(value, (np.bool_, np.ndarray)) else value
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, got {value!r}")
    return value


def check_choice(value: Any, what: str) -> Any:
    choices = BY_NAME[what].choices
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{what} must be one of {choices}, got {value!r}")
    return value


def _schedule_value(schedule: Any, what: str, count: int) -> float:
    """A schedule's value for the update after ``count`` updates, as a float;
    errors name ``what`` (e.g. ``param_groups[0]['lr']``) and the schedule."""
    try:
        value = schedule(count)
    except ReentrantCallError:
        raise
    except Exception as err:
        raise ValueError(
            f"{what}: the schedule {schedule!r} failed at step count {count}: "
            f"{type(err).__name__}: {err}"
        ) from err
    value = as_number(value)
    if not is_real(value):
        raise TypeError(
            f"{what}: the schedule {schedule!r} returned {value!r} at step count {count}; "
            "a schedule must return a real number"
        )
    return real(value, f"{what}: the value of the schedule {schedule!r} at step count {count}")


def _lr(lr: Any, where: str, count: int) -> float:
    """A group's lr for the update after ``count`` updates: the float itself, or
    the schedule's value, checked here so that errors name ``[...]['lr']``."""
    if not callable(lr):
        return real(lr, f"{where}: lr" if where else "lr")
    what = f"{where}['lr']" if where else "lr"
    value = _schedule_value(lr, what, count)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"{what}: the schedule {lr!r} returned {value!r} at step count {count}; "
            "lr must be a finite number >= 0"
        )
    return value


def _beta1(beta1: Any, where: str, count: int) -> float:
    """A group's betas[0] for the update after ``count`` updates: the number, or
    a schedule's value (e.g. ``OneCycle.momentum()``), called like lr's. Its
    range is checked with the other options, by the core."""
    if not callable(beta1):
        return real(beta1, f"{where}: betas[0]" if where else "betas[0]")
    return _schedule_value(beta1, f"{where}['betas'][0]" if where else "betas[0]", count)


def _group_value(o: Option, value: Any, where: str, count: int) -> dict[str, Any]:
    """The EngineOptions fields of option ``o`` of a group, its value checked."""
    prefix = f"{where}: " if where else ""
    if o.kind == "schedulable":
        return {o.name: _lr(value, where, count)}
    if o.kind == "betas":
        beta1, beta2 = betas_pair(value, f"{prefix}betas")
        return {"beta1": _beta1(beta1, where, count), "beta2": real(beta2, f"{prefix}betas[1]")}
    if o.kind == "flag":
        return {o.name: _flag(value, f"{prefix}{o.name}")}
    if o.kind == "choice":
        if value not in o.choices:
            raise ValueError(f"{prefix}{o.name} must be one of {o.choices}, got {value!r}")
        return {o.name: value}
    if o.kind == "seed":
        return {o.name: _seed(value, f"{prefix}{o.name}")}
    return {o.name: real(value, f"{prefix}{o.name}")}


def engine_options(group: Mapping[str, Any], where: str, count: int = 0) -> Checked:
    """Validate one group's options; return them as the engines take them.

    ``where`` prefixes messages, e.g. "param_groups[1]". Raises TypeError for an
    unknown option or a value of the wrong kind, and ValueError (from the Rust
    core, which owns the ranges) for one out of range. A callable ``lr`` (a
    schedule, see ``radam.schedules``) is called with ``count``, the number of
    updates already taken, and its value checked like a float lr; so is a
    callable ``betas[0]`` (a beta1 schedule). An option the group lacks takes
    Adam's default.
    """
    prefix = f"{where}: " if where else ""
    rule = group.get("algorithm", "adam")
    taken = [o for o in OPTIONS if o.group and o.taken_by(rule)]
    unknown = sorted(set(group) - {o.name for o in taken} - set(NOT_OPTIONS))
    if unknown:
        known = [o.name for o in taken]
        raise TypeError(f"{prefix}unknown option(s) {unknown}; known: {known}")
    fields: dict[str, Any] = {"algorithm": rule}
    for o in OPTIONS:
        if o.group:
            fields.update(_group_value(o, group.get(o.name, o.default), where, count))
    options = EngineOptions(**fields)
    try:
        config = _core.AdamConfig(options)
    except ValueError as err:
        beta1 = betas_pair(group.get("betas", BY_NAME["betas"].default))[0]
        scheduled = (
            f" (betas[0] is {options.beta1!r} from the schedule {beta1!r} at step count {count})"
            if callable(beta1)
            else ""
        )
        raise ValueError(f"{prefix}{_as_given(str(err), group)}{scheduled}") from None
    return Checked(options, config)


def _as_given(message: str, group: Mapping[str, Any]) -> str:
    """The core's "invalid NAME: VALUE (must be ...)" with the value the user gave
    for a flag or a choice, which the core sees as a code (True as 1, a choice as
    its index)."""
    name, sep, rest = message.partition(": ")
    option = BY_NAME.get(name.removeprefix("invalid "))
    if not sep or option is None or option.kind not in ("flag", "choice"):
        return message
    rule = rest[rest.find(" (must be ") :] if " (must be " in rest else ""
    return f"{name}: {group.get(option.name, option.default)!r}{rule}"
