"""radam's options under the seed systems' names: what downhill's ``Adam`` and
PuzzleLib's ``Adam`` call each option of one group that they set.

They are declared here, not in the option table: they are facts about those two
packages (fixed: neither grows new options) that only this layer reads, and the
table (``radam._options.OPTIONS``) stays radam's own. A test holds each name
here to an option of the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

# seed name (a pair for betas) -> radam's option
DOWNHILL: dict[str | tuple[str, str], str] = {
    "learning_rate": "lr",
    ("beta1_halflife", "beta2_halflife"): "betas",
    "rms_regularizer": "eps",
    "beta1_decay": "beta1_decay",
    "momentum": "momentum",
    "nesterov": "nesterov",
    "max_gradient_elem": "max_gradient_elem",
    "max_gradient_norm": "max_gradient_norm",
}
PUZZLELIB: dict[str | tuple[str, str], str] = {
    "alpha": "lr",
    ("beta1", "beta2"): "betas",
    "epsilon": "eps",
}


def from_seed(names: Mapping[Any, str], value_of: Callable[[str], Any]) -> dict[str, Any]:
    """radam's options from a seed system's (:data:`DOWNHILL`, :data:`PUZZLELIB`):
    ``value_of(name)`` is the value, as radam takes it, of the seed's option ``name``."""
    return {
        option: tuple(value_of(n) for n in seed) if isinstance(seed, tuple) else value_of(seed)
        for seed, option in names.items()
    }
