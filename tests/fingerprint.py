"""An optimizer's exact state as plain comparable data: the bytes of every param
and state array, the step, NAdam's carries and every option, for checks that a
failed call changed nothing at all (a NaN equals itself, -0.0 differs from 0.0)."""

from __future__ import annotations

from typing import Any

import numpy as np


def fingerprint(opt: Any) -> Any:
    """Everything ``opt.state_dict()`` holds, and the params, as comparable data."""
    params = [p for g in opt.param_groups for p in g["params"]]
    return exact({"params": params, "state_dict": opt.state_dict()})


def exact(value: Any) -> Any:
    """``value`` (arrays, numbers, containers) as comparable data."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (float, np.floating)):
        return (type(value).__name__, float(value).hex())
    if isinstance(value, dict):
        return ("dict", [(exact(k), exact(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [exact(v) for v in value])
    return value
