"""Import of a ``torch.optim.Adam`` / ``AdamW`` ``state_dict`` (``Adam.load_torch_state_dict``).

torch is not a dependency: tensors are recognised by their ``detach``/``numpy``
methods, so the same code also takes a dict whose tensors are NumPy arrays.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

# torch group keys mapped onto radam options of the same name and meaning.
MAPPED = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
# torch group keys that choose an implementation, not the math: ignored.
# initial_lr is written into the group by torch's LR schedulers (their base lr);
# the lr in effect is "lr".
IGNORED = ("foreach", "fused", "capturable", "differentiable", "initial_lr")
STATE_KEYS = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _to_numpy(value: Any, what: str) -> Any:
    """A torch tensor (or anything with ``.numpy()``) as a NumPy array copy."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        tensor = value.detach()
        if hasattr(tensor, "cpu"):
            tensor = tensor.cpu()
        if getattr(tensor, "is_complex", lambda: False)():
            raise TypeError(f"{what} is complex; radam optimizes real float arrays")
        try:
            return np.array(tensor.numpy(), copy=True)
        except TypeError as err:  # e.g. torch.bfloat16, which NumPy cannot hold
            raise TypeError(
                f"{what}: cannot convert a {tensor.dtype} tensor to NumPy: {err}"
            ) from err
    raise TypeError(f"{what} must be a tensor or a numpy.ndarray, got {type(value).__name__}")


def _scalar(value: Any, what: str) -> Any:
    """A Python number from a number, a 0-d tensor or a 0-d array."""
    if hasattr(value, "detach") or isinstance(value, np.ndarray):
        array = _to_numpy(value, what)
        if array.shape not in ((), (1,)):
            raise ValueError(f"{what} must be a scalar, got shape {array.shape}")
        return array.reshape(()).item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_radam_state_dict(
    torch_sd: Mapping[str, Any], decoupled_weight_decay: bool | None = None
) -> dict[str, Any]:
    """The radam ``state_dict`` equivalent to a torch Adam/AdamW one.

    Group options: ``lr, betas, eps, weight_decay, amsgrad, maximize`` map
    one to one; ``foreach, fused, capturable, differentiable`` (implementation
    choices) and ``initial_lr`` (an LR scheduler's base value) are ignored;
    ``decoupled_weight_decay`` comes from the group (torch >= 2.6 writes it;
    True for AdamW) or from the argument, which must agree with the group if
    both are there. Without either, a group with ``weight_decay != 0`` is an
    error: torch < 2.6's AdamW and Adam state dicts look alike, so say
    ``decoupled_weight_decay=True`` for AdamW. Any other key (from another
    torch optimizer, or an option radam lacks) is an error.
    """
    if decoupled_weight_decay is not None and not isinstance(decoupled_weight_decay, bool):
        raise TypeError(
            f"decoupled_weight_decay must be True, False or None, got {decoupled_weight_decay!r}"
        )
    if not isinstance(torch_sd, Mapping) or set(torch_sd) != {"state", "param_groups"}:
        keys = sorted(torch_sd) if isinstance(torch_sd, Mapping) else type(torch_sd).__name__
        raise ValueError(
            f"state_dict must be a torch optimizer's state_dict, with keys 'state' and "
            f"'param_groups'; got {keys}"
        )
    groups = []
    for gi, group in enumerate(torch_sd["param_groups"]):
        where = f"state_dict['param_groups'][{gi}]"
        if not isinstance(group, Mapping) or "params" not in group:
            raise ValueError(f"{where} must be a dict with 'params'")
        known = set(MAPPED) | set(IGNORED) | {"params", "param_names", "decoupled_weight_decay"}
        unknown = sorted(set(group) - known)
        if unknown:
            raise ValueError(
                f"{where} has option(s) {unknown} that radam's Adam does not have: is this a "
                f"torch.optim.Adam or AdamW state_dict? (mapped: {list(MAPPED)}, "
                f"ignored: {list(IGNORED)})"
            )
        missing = [k for k in MAPPED if k not in group]
        if missing:
            raise ValueError(f"{where} lacks {missing}")
        options: dict[str, Any] = {
            "lr": _scalar(group["lr"], f"{where}['lr']"),
            "betas": tuple(_scalar(b, f"{where}['betas']") for b in group["betas"]),
            "eps": _scalar(group["eps"], f"{where}['eps']"),
            "weight_decay": _scalar(group["weight_decay"], f"{where}['weight_decay']"),
            "amsgrad": group["amsgrad"],
            "maximize": group["maximize"],
        }
        options["decoupled_weight_decay"] = _decoupled(
            group, decoupled_weight_decay, options["weight_decay"], where
        )
        options["params"] = list(group["params"])
        if "param_names" in group:
            options["param_names"] = list(group["param_names"])
        groups.append(options)

    # torch numbers params 0..n-1 in group order; state is keyed by those ids.
    order = [pid for g in groups for pid in g["params"]]
    if order != list(range(len(order))):
        raise ValueError(
            f"state_dict['param_groups'] params must number 0..{len(order) - 1} in order, "
            f"got {order}"
        )
    saved = torch_sd["state"]
    if not isinstance(saved, Mapping):
        raise ValueError("state_dict['state'] must be a dict param id -> state")
    if saved and sorted(saved) != list(range(len(order))):
        raise ValueError(
            f"state_dict['state'] has entries for params {sorted(saved)} only; radam keeps state "
            f"for every param (0..{len(order) - 1}): take the state_dict after a step in which "
            "every param had a gradient"
        )
    state = {}
    for pid in sorted(saved):
        entry, where = saved[pid], f"state_dict['state'][{pid}]"
        unknown = sorted(set(entry) - set(STATE_KEYS))
        if unknown:
            raise ValueError(f"{where} has unknown state {unknown} (known: {list(STATE_KEYS)})")
        converted = {}
        for k, v in entry.items():
            if k == "step":
                step = _scalar(v, f"{where}['step']")
                if (
                    not isinstance(step, numbers.Real)
                    or isinstance(step, bool)
                    or step != int(step)
                ):
                    raise ValueError(f"{where}['step'] must be a whole number, got {step!r}")
                converted[k] = int(step)
            else:
                converted[k] = _to_numpy(v, f"{where}[{k!r}]")
        state[pid] = converted
    return {"state": state, "param_groups": groups}


def _decoupled(group: Mapping[str, Any], arg: bool | None, weight_decay: Any, where: str) -> Any:
    if "decoupled_weight_decay" in group:
        value = group["decoupled_weight_decay"]
        if arg is not None and bool(value) != arg:
            raise ValueError(
                f"decoupled_weight_decay={arg} contradicts {where}['decoupled_weight_decay'] "
                f"= {value!r}"
            )
        return value
    if arg is not None:
        return arg
    if weight_decay == 0:
        return False  # no decay: both forms are the same update
    raise ValueError(
        f"{where} has weight_decay={weight_decay!r} but does not say whether the decay is "
        "decoupled (older torch writes the same state_dict for Adam and AdamW): pass "
        "decoupled_weight_decay=True for torch.optim.AdamW, False for torch.optim.Adam"
    )


def load_torch_state_dict(
    opt: Any, torch_sd: Mapping[str, Any], decoupled_weight_decay: bool | None = None
) -> None:
    """Convert, then ``opt.load_state_dict``: everything is checked before
    anything changes. Options torch does not have keep ``opt``'s values."""
    sd = to_radam_state_dict(torch_sd, decoupled_weight_decay)
    if opt._algorithm != "adam":
        raise ValueError(
            f"a torch Adam/AdamW state_dict loads into radam.Adam or AdamW, not "
            f"{type(opt).__name__} (update rule {opt._algorithm!r})"
        )
    opt.load_state_dict(sd)
