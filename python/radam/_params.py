"""Normalising what users pass as ``params`` and ``grads`` into flat lists.

``params`` may be a list of arrays, a dict name -> array, or a list of group
dicts ``{"params": [...] or {...}, "lr": ..., ...}`` as in PyTorch. Everything
downstream sees one flat list of tensors, each with a label for messages, a
key for ``opt.state`` and the index of its group. Validation happens here,
once, at construction.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from ._formats import StateFormat

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
# 16-bit params are computed in float32 (optionally with a float32 master copy).
HALF_DTYPES = (np.dtype(np.float16), BFLOAT16)
SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), *HALF_DTYPES)


@dataclass(frozen=True)
class Tensor:
    """One parameter array as the optimizer sees it."""

    array: np.ndarray
    label: str  # how messages name it, e.g. "[0]", "['w']", "[1][0]"
    key: Hashable  # its key in ``opt.state``: the flat index, or the name
    group: int
    name: Hashable | None  # the dict key, for named params (which may be None)
    named: bool  # whether it came from a dict, so ``name`` is its key


@dataclass(frozen=True)
class Layout:
    """The structure of ``params``: how grads must mirror it."""

    kind: str  # "list", "dict" or "groups"
    tensors: list[Tensor]
    group_sizes: list[int]
    names: dict[Hashable, int] | None  # name -> flat index, when every param is named

    def __len__(self) -> int:
        return len(self.tensors)


def _members(params: Any, where: str) -> tuple[list[Any], list[Hashable] | None]:
    """The arrays of a list or dict, and their names (None for a list)."""
    if isinstance(params, np.ndarray):
        raise TypeError(
            f"{where} must be a list or dict of arrays, not a single array: wrap it as [array]"
        )
    if isinstance(params, Mapping):
        return list(params.values()), list(params.keys())
    if isinstance(params, (str, bytes)) or not hasattr(params, "__iter__"):
        raise TypeError(
            f"{where} must be a list of arrays, a dict name -> array or a list of group dicts, "
            f"got {type(params).__name__}"
        )
    return list(params), None


def check_param(array: Any, label: str) -> None:
    """A param must be a writable, C-contiguous ndarray of a supported float dtype."""
    what = f"params{label}"
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what} must be a numpy.ndarray, got {type(array).__name__}")
    if array.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{what} has dtype {array.dtype}; radam updates float32, float64, float16 and "
            "bfloat16 arrays (convert with .astype(np.float32))"
        )
    if not array.flags.c_contiguous:
        raise ValueError(
            f"{what} is not C-contiguous, so it cannot be updated in place; "
            "make the array you train contiguous (np.ascontiguousarray) and pass that one"
        )
    if not array.flags.writeable:
        raise ValueError(f"{what} is read-only; the optimizer updates params in place")


def _check_disjoint(tensors: list[Tensor]) -> None:
    """No two params may share memory (the same array twice, or overlapping views)."""
    spans = []
    for t in tensors:
        if t.array.nbytes:
            start = t.array.__array_interface__["data"][0]
            spans.append((start, start + t.array.nbytes, t.label))
    spans.sort()
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise ValueError(
                f"params{second} shares memory with params{first}; each param must be its own array"
            )


def layout_of(params: Any) -> tuple[Layout, list[dict[str, Any]]]:
    """Flatten ``params``; also return the per-group option overrides (with "params" removed)."""
    members, names = _members(params, "params")
    if not members:
        raise ValueError("params is empty: pass at least one array to optimize")
    is_groups = names is None and all(isinstance(m, Mapping) for m in members)
    if names is None and not is_groups and any(isinstance(m, Mapping) for m in members):
        raise TypeError("params mixes arrays and group dicts; pass one or the other")

    # ``members`` again, not ``params``: a generator is consumed by the first pass.
    groups = members if is_groups else [{"params": params if names is not None else members}]
    tensors: list[Tensor] = []
    overrides: list[dict[str, Any]] = []
    group_sizes = []
    for gi, group in enumerate(groups):
        where = f"params[{gi}]['params']" if is_groups else "params"
        if is_groups and "params" not in group:
            raise ValueError(f"params[{gi}] is a group dict without a 'params' entry")
        arrays, group_names = _members(group["params"], where)
        if not arrays:
            raise ValueError(f"{where} is empty: every group needs at least one array")
        named = group_names is not None
        for j, array in enumerate(arrays):
            name = group_names[j] if named else None
            index = repr(name) if named else str(j)
            label = f"[{index}]" if not is_groups else f"[{gi}][{index}]"
            check_param(array, label)
            key = name if (named and not is_groups) else len(tensors)
            tensors.append(Tensor(array, label, key, gi, name, named))
        group_sizes.append(len(arrays))
        overrides.append({k: v for k, v in group.items() if k != "params"} if is_groups else {})
    _check_disjoint(tensors)

    named = [t.name for t in tensors]
    names_map = None
    if all(t.named for t in tensors) and len(set(named)) == len(named):
        names_map = {n: i for i, n in enumerate(named)}
    kind = "groups" if is_groups else ("dict" if names is not None else "list")
    return Layout(kind, tensors, group_sizes, names_map), overrides


def flatten_grads(layout: Layout, grads: Any) -> list[Any]:
    """Grads in the order of ``layout.tensors``; the Rust side checks each array.
    (``Adam.step`` passes a plain list for flat list params on as it is.)"""
    n = len(layout.tensors)
    if grads is None:
        raise TypeError("grads is None: pass the gradients, with the structure of params")
    if isinstance(grads, Mapping):
        if layout.names is None:
            raise TypeError("grads is a dict, but params are not all named: pass a list")
        missing = [k for k in layout.names if k not in grads]
        extra = [k for k in grads if k not in layout.names]
        if missing or extra:
            raise ValueError(
                "grads must have exactly the keys of params"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {extra}" if extra else "")
            )
        return [grads[k] for k in layout.names]
    if not isinstance(grads, (list, tuple)):
        raise TypeError(
            f"grads must mirror params (a {'dict' if layout.kind == 'dict' else 'list'} "
            f"of arrays), got {type(grads).__name__}"
        )
    if layout.kind == "dict":
        raise TypeError("params is a dict, so grads must be a dict with the same keys")
    nested = (
        layout.kind == "groups"
        and len(grads) == len(layout.group_sizes)
        and all(isinstance(g, (list, tuple, Mapping)) for g in grads)
    )
    if nested:
        flat: list[Any] = []
        for gi, (group_grads, size) in enumerate(zip(grads, layout.group_sizes)):
            if isinstance(group_grads, Mapping):
                names = [t.name for t in layout.tensors if t.group == gi]
                if set(group_grads) != set(names):
                    raise ValueError(f"grads[{gi}] must have exactly the keys of params[{gi}]")
                members = [group_grads[k] for k in names]
            else:
                members = list(group_grads)
            if len(members) != size:
                raise ValueError(f"grads[{gi}] has {len(members)} arrays, its group has {size}")
            flat.extend(members)
        return flat
    if len(grads) != n:
        raise ValueError(f"expected {n} grads (one per param), got {len(grads)}")
    return list(grads)


def check_state_format(state_format: StateFormat | None, tensors: list[Tensor]) -> None:
    """16-bit, 8-bit or float32 state is for params computed in float32, not float64 ones."""
    if state_format is None:
        return
    for t in tensors:
        if t.array.dtype == np.float64:
            raise ValueError(
                f"state_dtype={state_format.name} does not go with "
                f"params{t.label}, which is float64 (its state is float64)"
            )
