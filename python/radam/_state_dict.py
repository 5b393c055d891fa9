"""State dicts: ``Adam.state_dict()`` and the checks of ``load_state_dict``.

:func:`build` lays an optimizer's state out as ``torch.optim``'s. :func:`check`
takes a state dict apart and checks every part of it against the optimizer
(its groups, options, step, each state array's shape, dtype and values, NAdam's
carried product) without changing anything; ``Adam._apply_state_dict`` then
applies the result. ``checkpoint.load`` goes through :func:`check` too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from ._engine import LAST_STEP, MASTER, NON_NEGATIVE, state_names
from ._formats import FLOAT32, StateArray
from ._frozen import FrozenMapping, state_entry, state_mapping
from ._options import EngineOptions


class Loaded(NamedTuple):
    """A checked state_dict, ready to apply: each group's options, state names,
    the optimizer's step count (its tensors' largest), state arrays (copies),
    and each tensor's step count and carry (NAdam's mu_product)."""

    groups: list[dict[str, Any]]
    names: list[tuple[str, ...]]
    step: int
    state: dict[Any, Any]
    counts: list[int]
    carries: list[float]


def build(opt: Any) -> dict[str, Any]:
    """``opt``'s state dict (copies of its arrays). Under its lock, after a sync."""
    state = {}
    counts, carries = opt._tensor_counts()
    for i, t in enumerate(opt._layout.tensors):
        # As torch.optim: a param that has not stepped yet has no entry.
        if t.key in opt._state and counts[i] > 0:
            entry: dict[str, Any] = {"step": counts[i]}
            if opt.param_groups[t.group].get("algorithm") == "nadam":
                entry["mu_product"] = carries[i]
            entry.update({k: v.copy() for k, v in opt._state[t.key].items()})
            state[i] = entry
    groups, start = [], 0
    for g in opt.param_groups:
        saved = {k: v for k, v in g.items() if k != "params"}
        saved["betas"] = tuple(g["betas"])
        saved["params"] = list(range(start, start + len(g["params"])))
        if "param_names" in g:
            saved["param_names"] = list(g["param_names"])
        start += len(g["params"])
        groups.append(saved)
    return {"state": state, "param_groups": groups}


def check(opt: Any, state_dict: Mapping[str, Any], caller: str) -> Loaded:
    """What loading ``state_dict`` into ``opt`` applies, every part checked
    (options, values, state arrays copied), as part of ``caller``; changes
    nothing. Under the optimizer's lock."""
    if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
        raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
    saved_groups = state_dict["param_groups"]
    if not isinstance(saved_groups, (list, tuple)):
        raise TypeError(
            "state_dict['param_groups'] must be a list of group dicts, got "
            f"{type(saved_groups).__name__}"
        )
    opt._check_groups()
    if len(saved_groups) != len(opt.param_groups):
        raise ValueError(
            f"state_dict has {len(saved_groups)} param groups, this optimizer has "
            f"{len(opt.param_groups)}"
        )
    groups = []
    for i, (saved, ours) in enumerate(zip(saved_groups, opt.param_groups)):
        where = f"state_dict['param_groups'][{i}]"
        if not isinstance(saved, Mapping):
            raise TypeError(f"{where} must be a dict, got {type(saved).__name__}")
        n_saved, n_ours = len(saved.get("params", ())), len(ours["params"])
        if n_saved != n_ours:
            raise ValueError(f"{where} has {n_saved} params, this group has {n_ours}")
        if (
            "param_names" in saved
            and "param_names" in ours
            and list(saved["param_names"]) != ours["param_names"]
        ):
            raise ValueError(f"{where}['param_names'] differ from this optimizer's")
        options = {k: v for k, v in saved.items() if k not in ("params", "param_names")}
        if options.get("algorithm", opt._algorithm) != opt._algorithm:
            raise ValueError(
                f"{where} was saved by {options['algorithm']!r}, not {opt._algorithm!r}"
            )
        groups.append({**ours, **options})
    options = opt._evaluate(groups, "state_dict['param_groups'][{}]", 0, caller).options
    names = [state_names(o) for o in options]
    counts, state = _checked_state(opt, state_dict["state"], names)
    carries = _saved_carries(opt, state_dict["state"], options)
    return Loaded(groups, names, max(counts, default=0), state, counts, carries)


def _saved_carries(opt: Any, saved: Mapping, options: list[EngineOptions]) -> list[float]:
    """NAdam's mu_product per tensor, from its state entry: the product of its
    momentum coefficients so far, each in [0, 1), so in [0, 1) once a step was
    taken (0 with beta1 = 0, or once the product underflows: at step 646 with
    beta1 = 0.6); 1.0 for a tensor without an entry (no step taken)."""
    carries = [1.0] * len(opt._layout.tensors)
    for i, t in enumerate(opt._layout.tensors):
        if options[t.group].algorithm != "nadam" or i not in saved:
            continue
        where = f"state_dict['state'][{i}]['mu_product']"
        value = saved[i].get("mu_product")
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (float, int, np.floating)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an int past float64's range
            value = math.inf
        if not 0.0 <= value < 1.0:
            raise ValueError(
                f"{where} is {saved[i].get('mu_product')!r}; NAdam's product of momentum "
                "coefficients is in [0, 1) once a step was taken"
            )
        carries[i] = value
    return carries


def _checked_state(
    opt: Any, saved: Any, names: list[tuple[str, ...]]
) -> tuple[list[int], FrozenMapping]:
    """Each tensor's step count and state arrays (copies) from a state dict's
    ``state``. As in torch.optim's, a param without an entry has not stepped
    yet: its count is 0 and its state fresh."""
    if not isinstance(saved, Mapping):
        raise ValueError("state_dict['state'] must be a dict index -> state")
    tensors = opt._layout.tensors
    if not saved:
        return [0] * len(tensors), state_mapping({})
    indices = list(range(len(tensors)))
    if not set(saved) <= set(indices):
        raise ValueError(
            f"state_dict['state'] must have entries for params among the {len(tensors)} "
            f"(indices 0..{len(tensors) - 1}), got {sorted(saved, key=repr)}"
        )
    counts, state = [0] * len(tensors), {}
    missing = [t.key for i, t in enumerate(tensors) if i not in saved]
    fresh = opt._fresh_state(names, missing) if missing else {}
    for i, t in enumerate(tensors):
        if i not in saved:
            state[t.key] = fresh[t.key]
            continue
        entry, where = saved[i], f"state_dict['state'][{i}]"
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where} must be a dict name -> value, got {type(entry).__name__}")
        arrays = opt._tensor_state(names, t)
        fmt = opt._moment_format(t)
        missing = [n for n in (*arrays, "step") if n not in entry]
        if missing:
            raise ValueError(f"{where} lacks {missing}")
        counts[i] = _saved_step(entry["step"], f"{where}['step']")
        copies = {}
        for n, (shape, dtype) in arrays.items():
            value = entry[n]
            if not isinstance(value, np.ndarray):
                raise TypeError(
                    f"{where}[{n!r}] must be a numpy.ndarray, got {type(value).__name__}"
                )
            if value.shape != shape or value.dtype != dtype:
                raise ValueError(
                    f"{where}[{n!r}] has shape {value.shape} and dtype {value.dtype}; "
                    f"this optimizer's has shape {shape} and dtype {dtype}"
                )
            held = (FLOAT32 if n == MASTER else fmt).array(n)
            _check_reachable(value, n, held, f"{where}[{n!r}]")
            copies[n] = np.array(value, order="C", copy=True)
        state[t.key] = state_entry(t.key, copies)
    return counts, state_mapping(state)


def check_values(opt: Any) -> None:
    """Refuse ``opt``'s state if a load would: :func:`_check_reachable` of every
    state array (a NaN written into the state, or left by a NaN gradient)."""
    for t in opt._layout.tensors:
        fmt = opt._moment_format(t)
        for name, value in opt._state.get(t.key, {}).items():
            held = (FLOAT32 if name == MASTER else fmt).array(name)
            _check_reachable(value, name, held, f"opt.state[{t.key!r}][{name!r}]")


def _check_reachable(value: np.ndarray, name: str, held: StateArray, where: str) -> None:
    """Refuse a state array that no healthy run produces and that would turn
    the params into NaN: a NaN anywhere, an Inf in the first moment, velocity
    or master copy, a negative second moment or infinity norm.

    What each state array can hold after any number of steps, from the update
    rules: a second moment (a running mean of squares), AMSGrad's running max
    of it and AdaMax's infinity norm (a running max of |g| + eps) are >= 0, and
    +Inf when a finite gradient's square (or |g|) passes the storage type's
    range: that element's update is then 0, in the run that saved it and after
    a load. The other arrays (the first moment, the velocity, a master copy)
    are finite until the params themselves turn Inf or NaN, and NaN appears
    nowhere before that: a state holding those would make the next steps'
    params NaN. 8-bit codes may hold any code; an absmax is finite (a block's
    largest finite magnitude, negated where the block holds an infinity, as a
    second moment whose gradient's square overflowed does; an Inf would decode
    its zeros to NaN). What an array of a state format holds, ``held`` (the
    array of its format that it is) says."""
    if held.holds == "":
        return  # codes: every code is a value of its map
    if held.holds is not None:
        bad = ~np.isfinite(value)
        rule = held.holds
    elif name in NON_NEGATIVE:
        with np.errstate(invalid="ignore"):
            bad = ~(value >= 0)  # NaN fails the comparison too
        rule = f"{name} is a running mean or max of non-negative values: >= 0 (+Inf allowed)"
    else:
        bad = ~np.isfinite(value)
        rule = f"{name} is finite in any run whose params are"
    if bad.any():
        at = tuple(int(x) for x in np.argwhere(bad)[0])
        raise ValueError(f"{where} holds {value[at]!r} at index {at}; {rule}")


def _saved_step(step: Any, where: str) -> int:
    """A saved step count: a whole number >= 1 whose next step fits the kernel's counter."""
    if isinstance(step, np.ndarray) and step.shape == ():
        step = step.item()
    if isinstance(step, bool) or not isinstance(step, (int, np.integer, float, np.floating)):
        raise ValueError(f"{where} must be a whole number >= 1, got {step!r}")
    if isinstance(step, (float, np.floating)):
        if not math.isfinite(step) or step != math.floor(step):
            raise ValueError(f"{where} must be a whole number >= 1, got {step!r}")
    count = int(step)
    if not 1 <= count < LAST_STEP:
        raise ValueError(
            f"{where} must be a whole number from 1 to 2**64 - 2 (the next step's number "
            f"must fit 64 bits), got {step!r}"
        )
    return count
