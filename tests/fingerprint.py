"""An optimizer's exact state as plain comparable data: the bytes of every param
and state array, the step, NAdam's carries and every option, for checks that a
failed call changed nothing at all (a NaN equals itself, -0.0 differs from 0.0)."""

from __future__ import annotations

from typing import Any

import numpy as np


def fingerprint(opt: Any) -> Any:
    """Everything ``opt.state_dict()`` holds, and the params, as comparable data."""
    params = [p for g in opt.param_groups for p in g["params"]]
    return _exact({"params": params, "state_dict": opt.state_dict()})


def _exact(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (float, np.floating)):
        return (type(value).__name__, float(value).hex())
    if isinstance(value, dict):
        return ("dict", [(_exact(k), _exact(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_exact(v) for v in value])
    return value
