"""Real numbers as users give them, checked once for every front module.

:func:`real` is the one check of a real-valued argument: the option table's
(whose ranges the Rust core owns), the schedules', downhill's and PuzzleLib's
hyperparameters and the half-life helpers all call it, so that each takes the
same values (Python and NumPy numbers, 0-d arrays; never a bool) and refuses
the rest with the same words, naming the argument.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def as_number(value: Any) -> Any:
    """A NumPy scalar or 0-d array as the Python number it holds (np.True_ as
    True), so that it is taken wherever that number is; anything else as it is."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    return value


def is_real(value: Any) -> bool:
    """Whether ``value`` (as :func:`as_number` gives it) is a real number: a bool is not."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def real(
    value: Any,
    what: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float, or TypeError (not a real number) or ValueError (out
    of range) naming ``what``.

    With neither bound any float passes, NaN and inf included (the caller, or the
    Rust core, owns the range). With ``low`` (and ``high``) the value must be
    finite and at least ``low`` (above it with ``low_open``), and at most
    ``high`` (below it with ``high_open``).
    """
    value = as_number(value)
    if not is_real(value):
        raise TypeError(f"{what} must be a real number, got {value!r}")
    try:
        v = float(value)
    except OverflowError:  # an int past float64's range, e.g. 10**400
        # Its bit length, not its digits: str() of a huge int is slow or refused.
        bits = int(value).bit_length()
        raise ValueError(
            f"{what} is too large: an integer of {bits} bits, past float64's range"
        ) from None
    if low is None and high is None:
        return v
    above_low = low is None or (v > low if low_open else v >= low)
    below_high = high is None or (v < high if high_open else v <= high)
    if not (math.isfinite(v) and above_low and below_high):
        raise ValueError(f"{what} must be {_range(low, high, low_open, high_open)}, got {value!r}")
    return v


def _range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """The words of a range: "a finite number >= 0", "in [0, 1)"."""
    if high is None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
