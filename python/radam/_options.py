"""Hyperparameters: defaults, validation, and the tuple the Rust engine takes."""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

from . import _core

# The order of this tuple is the order of the engine's per-group options.
OPTION_NAMES = (
    "lr",
    "betas",
    "eps",
    "weight_decay",
    "decoupled_weight_decay",
    "amsgrad",
    "maximize",
)


class EngineOptions(NamedTuple):
    """One group's options as every backend takes them (a tuple, in this order)."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled_weight_decay: bool
    amsgrad: bool
    maximize: bool


def _real(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {value!r}")
    return float(value)


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, (bool, numbers.Integral)) or value not in (0, 1):
        raise TypeError(f"{what} must be True or False, got {value!r}")
    return bool(value)


def engine_options(group: dict[str, Any], where: str) -> EngineOptions:
    """Validate one group's options; return them as the engine's tuple.

    ``where`` prefixes messages, e.g. "param_groups[1]". Raises TypeError for a
    value of the wrong kind and ValueError (from the Rust core) for one out of range.
    """
    prefix = f"{where}: " if where else ""
    unknown = sorted(set(group) - set(OPTION_NAMES) - {"params", "param_names"})
    if unknown:
        raise TypeError(f"{prefix}unknown option(s) {unknown}; known: {list(OPTION_NAMES)}")
    betas = group["betas"]
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise TypeError(f"{prefix}betas must be a pair (beta1, beta2), got {betas!r}")
    lr = _real(group["lr"], f"{prefix}lr")
    beta1 = _real(betas[0], f"{prefix}betas[0]")
    beta2 = _real(betas[1], f"{prefix}betas[1]")
    eps = _real(group["eps"], f"{prefix}eps")
    weight_decay = _real(group["weight_decay"], f"{prefix}weight_decay")
    try:
        _core.validate_config(lr, beta1, beta2, eps, weight_decay)
    except ValueError as err:
        raise ValueError(f"{prefix}{err}") from None
    return EngineOptions(
        lr,
        beta1,
        beta2,
        eps,
        weight_decay,
        _flag(group["decoupled_weight_decay"], f"{prefix}decoupled_weight_decay"),
        _flag(group["amsgrad"], f"{prefix}amsgrad"),
        _flag(group["maximize"], f"{prefix}maximize"),
    )
