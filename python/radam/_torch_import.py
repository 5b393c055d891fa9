"""Import of a torch optimizer's ``state_dict`` (``Adam.load_torch_state_dict``).

Every torch optimizer radam has: ``torch.optim.Adam`` and ``AdamW`` (into
``radam.Adam``/``AdamW``), ``NAdam``, ``RAdam`` and ``Adamax`` (into the radam
class of the same name). torch is not a dependency: tensors are recognised by
their ``detach``/``numpy`` methods, so the same code also takes a dict whose
tensors are NumPy arrays.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from . import _bnb
from ._engine import EXP_AVG, MASTER, VELOCITY
from ._params import HALF_DTYPES
from ._tensors import scalar as _scalar
from ._tensors import to_numpy as _to_numpy


class TorchKind(NamedTuple):
    """What one torch optimizer's state_dict holds, and where it loads."""

    torch_name: str
    radam_name: str
    # group keys mapped onto radam options of the same name and meaning
    options: tuple[str, ...]
    # group keys that older torch versions do not write, and what their absence meant
    optional: dict[str, Any]
    # each param's state
    state: tuple[str, ...]


# The group options every one of them has, and those that older torch versions
# do not write for NAdam, RAdam and Adamax (with what their absence meant).
_COMMON = ("lr", "betas", "eps", "weight_decay")
_NOT_IN_OLDER_TORCH = {"maximize": False, "decoupled_weight_decay": False}
# By radam update rule (``Adam._algorithm``). torch's Adam and AdamW write the same
# keys; decoupled_weight_decay (torch >= 2.6) tells them apart (see _decoupled).
KINDS = {
    "adam": TorchKind(
        "torch.optim.Adam or AdamW",
        "radam.Adam or radam.AdamW",
        (*_COMMON, "amsgrad", "maximize"),
        {},
        ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    ),
    "nadam": TorchKind(
        "torch.optim.NAdam",
        "radam.NAdam",
        (*_COMMON, "momentum_decay"),
        _NOT_IN_OLDER_TORCH,
        ("step", "mu_product", "exp_avg", "exp_avg_sq"),
    ),
    # RAdam and Adamax: the common options, and two moments (Adamax's second is exp_inf).
    **{
        rule: TorchKind(
            f"torch.optim.{name}", f"radam.{name}", _COMMON, _NOT_IN_OLDER_TORCH, ("step", *state)
        )
        for rule, name, state in (
            ("radam", "RAdam", ("exp_avg", "exp_avg_sq")),
            ("adamax", "Adamax", ("exp_avg", "exp_inf")),
        )
    },
}
# Keys only one kind has: they say which optimizer wrote a state_dict.
MARKERS = {
    "amsgrad": "adam",
    "max_exp_avg_sq": "adam",
    "momentum_decay": "nadam",
    "mu_product": "nadam",
    "exp_inf": "adamax",
}
# torch group keys that choose an implementation, not the math, and those that
# torch's LR schedulers write into the groups (initial_lr: their base lr;
# OneCycleLR's and CyclicLR's bounds): ignored, the lr and betas in effect are
# "lr" and "betas".
IGNORED = (
    "foreach",
    "fused",
    "capturable",
    "differentiable",
    "initial_lr",
    "max_lr",
    "min_lr",
    "base_momentum",
    "max_momentum",
)
# The 8-bit buffers on the signed map (the others hold non-negative values).
SIGNED = (EXP_AVG, VELOCITY)
ALL_NAMES = "torch.optim.Adam or AdamW, NAdam, RAdam and Adamax"


def _keys(torch_sd: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The keys of the groups, and of the param states, of a state_dict."""
    group_keys = {k for g in torch_sd["param_groups"] if isinstance(g, Mapping) for k in g}
    state_keys = {k for e in torch_sd["state"].values() if isinstance(e, Mapping) for k in e}
    return group_keys, state_keys


def torch_kind(torch_sd: Mapping[str, Any]) -> str | None:
    """The radam update rule whose torch optimizer wrote ``torch_sd``, from the
    keys only one of them has; None for a dict without any (an Adamax, or an
    older torch's RAdam, before their first step: their options are alike).
    Raises ValueError for a dict with keys none of them writes, or that mixes
    the keys of several."""
    group_keys, state_keys = _keys(torch_sd)
    known = {"params", "param_names", "decoupled_weight_decay", *IGNORED}
    for kind in KINDS.values():
        known.update(kind.options, kind.optional, kind.state)
    foreign = sorted((group_keys | state_keys) - known)
    if foreign:
        raise ValueError(
            f"state_dict has key(s) {foreign} that none of {ALL_NAMES} writes: radam imports "
            "the state_dicts of those optimizers only"
        )
    found = {MARKERS[k]: k for k in sorted(group_keys | state_keys) if k in MARKERS}
    if len(found) > 1:
        described = ", ".join(f"{KINDS[kind].torch_name}'s {k!r}" for kind, k in found.items())
        raise ValueError(f"state_dict mixes the keys of several torch optimizers: {described}")
    if found:
        return next(iter(found))
    if "decoupled_weight_decay" in group_keys or "exp_avg_sq" in state_keys:
        return "radam"
    return None


def to_radam_state_dict(
    torch_sd: Mapping[str, Any], algorithm: str, decoupled_weight_decay: bool | None = None
) -> dict[str, Any]:
    """The radam ``state_dict`` equivalent to a torch one of the optimizer that
    matches radam update rule ``algorithm`` (``KINDS``).

    Group options: those of ``KINDS[algorithm].options`` map one to one (the
    ``optional`` ones, which older torch does not write, take the value their
    absence meant); ``foreach, fused, capturable, differentiable``
    (implementation choices) and the LR schedulers' ``initial_lr, max_lr,
    min_lr, base_momentum, max_momentum`` are ignored. For Adam/AdamW,
    ``decoupled_weight_decay`` comes from the group (torch >= 2.6 writes it;
    True for AdamW) or from the argument, which must agree with the group if
    both are there. Without either, a group with ``weight_decay != 0`` is an
    error: torch < 2.6's AdamW and Adam state dicts look alike, so say
    ``decoupled_weight_decay=True`` for AdamW. Any other key is an error.
    """
    if decoupled_weight_decay is not None and not isinstance(decoupled_weight_decay, bool):
        raise TypeError(
            f"decoupled_weight_decay must be True, False or None, got {decoupled_weight_decay!r}"
        )
    kind = KINDS[algorithm]
    groups = []
    for gi, group in enumerate(torch_sd["param_groups"]):
        where = f"state_dict['param_groups'][{gi}]"
        if not isinstance(group, Mapping) or "params" not in group:
            raise ValueError(f"{where} must be a dict with 'params'")
        known = {*kind.options, *kind.optional, *IGNORED, "params", "param_names"}
        known.add("decoupled_weight_decay")
        unknown = sorted(set(group) - known)
        if unknown:
            raise ValueError(
                f"{where} has option(s) {unknown} that {kind.torch_name} does not have: "
                f"radam imports the state_dicts of {ALL_NAMES} (mapped: {list(kind.options)}, "
                f"ignored: {list(IGNORED)})"
            )
        missing = [k for k in kind.options if k not in group]
        if missing:
            raise ValueError(f"{where} lacks {missing}, which {kind.torch_name} writes")
        options: dict[str, Any] = {}
        for k in kind.options:
            if k == "betas":
                options[k] = tuple(_scalar(b, f"{where}['betas']") for b in group[k])
            elif k in ("amsgrad", "maximize"):
                options[k] = group[k]
            else:
                options[k] = _scalar(group[k], f"{where}[{k!r}]")
        for k, absent in kind.optional.items():
            if k != "decoupled_weight_decay":
                options[k] = group.get(k, absent)
        if algorithm == "adam":
            decoupled = _decoupled(group, decoupled_weight_decay, options["weight_decay"], where)
        else:
            decoupled = group.get("decoupled_weight_decay", False)
            if decoupled_weight_decay is not None and bool(decoupled) != decoupled_weight_decay:
                raise ValueError(
                    f"decoupled_weight_decay={decoupled_weight_decay} contradicts {where}: "
                    f"its {kind.torch_name} decay is "
                    f"{'decoupled' if decoupled else 'an L2 term (not decoupled)'}"
                )
        options["decoupled_weight_decay"] = decoupled
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
    # A param that has not stepped yet has no entry, in torch as in radam.
    saved = torch_sd["state"]
    state = {}
    for pid in sorted(saved):
        entry, where = saved[pid], f"state_dict['state'][{pid}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a dict of the param's state")
        unknown = sorted(set(entry) - set(kind.state))
        if unknown:
            raise ValueError(
                f"{where} has state {unknown} that {kind.torch_name} does not keep "
                f"(it keeps {list(kind.state)})"
            )
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
            elif k == "mu_product":
                converted[k] = _scalar(v, f"{where}['mu_product']")
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


def _check_shape(torch_sd: Any) -> None:
    if not isinstance(torch_sd, Mapping) or set(torch_sd) != {"state", "param_groups"}:
        keys = sorted(torch_sd) if isinstance(torch_sd, Mapping) else type(torch_sd).__name__
        raise ValueError(
            f"state_dict must be a torch optimizer's state_dict, with keys 'state' and "
            f"'param_groups'; got {keys}"
        )
    if not isinstance(torch_sd["param_groups"], (list, tuple)):
        raise ValueError("state_dict['param_groups'] must be a list of group dicts")
    if not isinstance(torch_sd["state"], Mapping):
        raise ValueError("state_dict['state'] must be a dict param id -> state")


def load_torch_state_dict(
    opt: Any, torch_sd: Mapping[str, Any], decoupled_weight_decay: bool | None = None
) -> None:
    """Check that ``torch_sd`` comes from the torch optimizer matching ``opt``'s
    class, convert, then ``opt.load_state_dict``: everything is checked before
    anything changes. Options torch does not have keep ``opt``'s values. A
    bitsandbytes 8-bit Adam's dict goes through ``_bnb.to_radam``."""
    _check_shape(torch_sd)
    if _bnb.is_bnb(torch_sd):
        opt.load_state_dict(_fit(opt, _bnb.to_radam(opt, torch_sd, decoupled_weight_decay)))
        return
    algorithm = opt._algorithm
    found = torch_kind(torch_sd)
    if found != algorithm and not (found is None and algorithm in ("adamax", "radam")):
        if found is None:
            what = "torch.optim.Adamax (or an older torch's RAdam)"
            where = "radam.Adamax (or radam.RAdam)"
            why = f"it has none of {sorted(MARKERS)} nor 'decoupled_weight_decay'"
        else:
            what, where = KINDS[found].torch_name, KINDS[found].radam_name
            markers = sorted(k for k, v in MARKERS.items() if v == found)
            why = "it has " + (" or ".join(repr(m) for m in markers) or "'decoupled_weight_decay'")
            if not markers:
                why += f" and none of {sorted(MARKERS)}"
        raise ValueError(
            f"this is a {what} state_dict ({why}): it loads into {where}, not radam."
            f"{type(opt).__name__}, which takes a {KINDS[algorithm].torch_name} one"
        )
    opt.load_state_dict(_fit(opt, to_radam_state_dict(torch_sd, algorithm, decoupled_weight_decay)))


def _fit(opt: Any, sd: dict[str, Any]) -> dict[str, Any]:
    """``sd`` (a converted dict, changed in place) with what ``opt`` keeps and
    torch or bitsandbytes do not, made from what they have: with
    ``master_weights``, each 16-bit param's float32 master copy, its value now
    (they step the 16-bit params themselves, so that is the value they would
    go on from); and where ``opt`` keeps 8-bit state, float32 moments quantized
    to it (a torch Adam or bitsandbytes Adam32bit dict), each to the nearest
    code, as radam's own steps store them."""
    state = sd["state"]
    if not state:
        return sd
    opt.sync()  # the host params, on the GPU
    for i, t in enumerate(opt._layout.tensors):
        entry = state.get(i)
        if not isinstance(entry, dict):
            continue  # load_state_dict says what is wrong
        if opt.master_weights and t.array.dtype in HALF_DTYPES and MASTER not in entry:
            entry[MASTER] = t.array.astype(np.float32)
        fmt = opt._moment_format(t)
        if fmt.encode is None:
            continue  # a plain format: load_state_dict takes the moments as they are
        for name, value in list(entry.items()):
            keys = fmt.keys(name)
            if (
                isinstance(value, np.ndarray)
                and value.dtype in (np.float32, np.float64) + HALF_DTYPES
                and value.shape == t.array.shape
                and name != MASTER
                and not any(k in entry for k in keys[1:])
            ):
                entry.update(zip(keys, fmt.encode(value, name in SIGNED)))
    return sd
