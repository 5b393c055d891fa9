"""Hyperparameters: defaults, validation, and the record every backend takes."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Set
from typing import Any, NamedTuple

import numpy as np

from . import _core
from ._errors import ReentrantCallError

# Options of Adam's signature (positional order), then the keyword-only ones.
OPTION_NAMES = (
    "lr",
    "betas",
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
    "grad_scale",
)
# Options that only some update rules have.
RULE_OPTIONS = {"nadam": ("momentum_decay",)}
BIAS_CORRECTIONS = ("adam", "downhill-0.4.0")
# Group keys that are not options: the arrays, their names, and (set by the
# class, not by users) the update rule.
NOT_OPTIONS = ("params", "param_names", "algorithm")


class EngineOptions(NamedTuple):
    """One group's validated options as every backend takes them."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled_weight_decay: bool
    amsgrad: bool
    maximize: bool
    efficient_form: bool
    beta1_decay: float
    momentum: float
    nesterov: bool
    max_gradient_elem: float
    max_gradient_norm: float
    bias_correction: str
    algorithm: str  # "adam", "adamax", "nadam" or "radam"
    momentum_decay: float  # NAdam's psi
    grad_scale: float  # the loss scale gradients carry

    @property
    def uses_velocity(self) -> bool:
        """Whether the state holds a momentum velocity."""
        return self.momentum != 0.0 or self.nesterov


def _real(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int past float64's range, e.g. 10**400
        # Its bit length, not its digits: str() of a huge int is slow or refused.
        bits = int(value).bit_length()
        raise ValueError(
            f"{what} is too large: an integer of {bits} bits, past float64's range"
        ) from None


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


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, (bool, numbers.Integral)) or value not in (0, 1):
        raise TypeError(f"{what} must be True or False, got {value!r}")
    return bool(value)


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
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{what}: the schedule {schedule!r} returned {value!r} at step count {count}; "
            "a schedule must return a real number"
        )
    return float(value)


def _lr(lr: Any, where: str, count: int) -> float:
    """A group's lr for the update after ``count`` updates: the float itself, or
    the schedule's value, checked here so that errors name ``[...]['lr']``."""
    if not callable(lr):
        return _real(lr, f"{where}: lr" if where else "lr")
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
        return _real(beta1, f"{where}: betas[0]" if where else "betas[0]")
    return _schedule_value(beta1, f"{where}['betas'][0]" if where else "betas[0]", count)


def engine_options(group: dict[str, Any], where: str, count: int = 0) -> EngineOptions:
    """Validate one group's options; return them as the record backends take.

    ``where`` prefixes messages, e.g. "param_groups[1]". Raises TypeError for a
    value of the wrong kind and ValueError (from the Rust core, which owns the
    ranges) for one out of range. A callable ``lr`` (a schedule, see
    ``radam.schedules``) is called with ``count``, the number of updates
    already taken, and its value checked like a float lr; so is a callable
    ``betas[0]`` (a beta1 schedule).
    """
    prefix = f"{where}: " if where else ""
    algorithm = group.get("algorithm", "adam")
    allowed = set(OPTION_NAMES) | set(NOT_OPTIONS) | set(RULE_OPTIONS.get(algorithm, ()))
    unknown = sorted(set(group) - allowed)
    if unknown:
        raise TypeError(f"{prefix}unknown option(s) {unknown}; known: {list(OPTION_NAMES)}")
    beta1, beta2 = betas_pair(group["betas"], f"{prefix}betas")
    bias_correction = group["bias_correction"]
    if bias_correction not in BIAS_CORRECTIONS:
        raise ValueError(
            f"{prefix}bias_correction must be one of {BIAS_CORRECTIONS}, got {bias_correction!r}"
        )
    options = EngineOptions(
        lr=_lr(group["lr"], where, count),
        beta1=_beta1(beta1, where, count),
        beta2=_real(beta2, f"{prefix}betas[1]"),
        eps=_real(group["eps"], f"{prefix}eps"),
        weight_decay=_real(group["weight_decay"], f"{prefix}weight_decay"),
        decoupled_weight_decay=_flag(
            group["decoupled_weight_decay"], f"{prefix}decoupled_weight_decay"
        ),
        amsgrad=_flag(group["amsgrad"], f"{prefix}amsgrad"),
        maximize=_flag(group["maximize"], f"{prefix}maximize"),
        efficient_form=_flag(group["efficient_form"], f"{prefix}efficient_form"),
        beta1_decay=_real(group["beta1_decay"], f"{prefix}beta1_decay"),
        momentum=_real(group["momentum"], f"{prefix}momentum"),
        nesterov=_flag(group["nesterov"], f"{prefix}nesterov"),
        max_gradient_elem=_real(group["max_gradient_elem"], f"{prefix}max_gradient_elem"),
        max_gradient_norm=_real(group["max_gradient_norm"], f"{prefix}max_gradient_norm"),
        bias_correction=bias_correction,
        algorithm=algorithm,
        momentum_decay=_real(group.get("momentum_decay", 4e-3), f"{prefix}momentum_decay"),
        grad_scale=_real(group["grad_scale"], f"{prefix}grad_scale"),
    )
    try:
        _core.validate_options(options)
    except ValueError as err:
        scheduled = (
            f" (betas[0] is {options.beta1!r} from the schedule {beta1!r} at step count {count})"
            if callable(beta1)
            else ""
        )
        raise ValueError(f"{prefix}{err}{scheduled}") from None
    return options


def state_names(options: EngineOptions) -> tuple[str, ...]:
    """The state arrays a group's tensors hold, in the engine's order."""
    names = ["exp_avg", "exp_inf" if options.algorithm == "adamax" else "exp_avg_sq"]
    if options.amsgrad:
        names.append("max_exp_avg_sq")
    if options.uses_velocity:
        names.append("velocity")
    return tuple(names)


def halflife_to_beta(halflife: float) -> float:
    """The decay whose weights halve every ``halflife`` steps: 2^(-1/h) = exp(-ln 2 / h),
    as downhill parametrises Adam (its defaults 7 and 69 give betas ~0.9057 and ~0.9900)."""
    h = _real(halflife, "halflife")
    if not h > 0:
        raise ValueError(f"halflife must be > 0, got {halflife!r}")
    return 2.0 ** (-1.0 / h)


def beta_to_halflife(beta: float) -> float:
    """The inverse of :func:`halflife_to_beta`: -1 / log2(beta)."""
    import math

    b = _real(beta, "beta")
    if not 0 < b < 1:
        raise ValueError(f"beta must be in (0, 1), got {beta!r}")
    return -1.0 / math.log2(b)
