"""bitsandbytes' 8-bit Adam state dicts, in and out.

bitsandbytes' ``Adam8bit``/``AdamW8bit`` keep what ``state_dtype="8bit"``
keeps, in the same format (blocks of 256, one float32 absmax each, the same
dynamic maps): per param ``state1``/``state2`` (the moments: uint8 codes, or
float32 for a param under 4096 elements), ``absmax1``/``absmax2`` and the
maps ``qmap1``/``qmap2``, wrapped in its state dict under
``"__bnb_optimizer_quant_state__"``. Its 8-bit Adam decays weights
decoupled (``p *= 1 - lr * weight_decay``) in both classes, so a dict with
``weight_decay != 0`` loads into ``radam.AdamW`` (or ``decoupled_weight_decay=True``).
Neither torch nor bitsandbytes is a dependency: tensors are read through
their ``numpy`` methods; only :func:`export` makes torch tensors (bitsandbytes
loads nothing else).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._engine import EIGHT_BIT, EXP_AVG, EXP_AVG_SQ, absmax_name
from ._options import BY_NAME, q8_map

WRAPPED = "__bnb_optimizer_quant_state__"
# bitsandbytes' names of each buffer and its absmax, with radam's, and its map.
BUFFERS = (
    ("state1", "absmax1", "qmap1", EXP_AVG, True),
    ("state2", "absmax2", "qmap2", EXP_AVG_SQ, False),
)
# Group keys of bitsandbytes' Adam: the options radam maps, and those of AdEMAMix
# (which share the class) with the values that mean plain Adam.
OPTIONS = ("lr", "betas", "eps", "weight_decay")
ADAM_ONLY = {"alpha": 0.0, "t_alpha": None, "t_beta3": None}
# The options an export writes only at these values (bitsandbytes' Adam has no other).
DEFAULTS_ONLY = (
    "amsgrad",
    "maximize",
    "momentum",
    "nesterov",
    "max_gradient_elem",
    "max_gradient_norm",
    "grad_scale",
    "efficient_form",
    "beta1_decay",
    "bias_correction",
)


def is_bnb(state_dict: Mapping[str, Any]) -> bool:
    """Whether ``state_dict`` was written by bitsandbytes' 8-bit optimizers."""
    state = state_dict.get("state")
    if not isinstance(state, Mapping):
        return False
    return any(isinstance(e, Mapping) and (WRAPPED in e or "qmap1" in e) for e in state.values())


def _numpy(value: Any, what: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        return np.array(value.detach().cpu().numpy(), copy=True)
    raise TypeError(f"{what} must be a tensor or a numpy.ndarray, got {type(value).__name__}")


def to_radam(opt: Any, bnb_sd: Mapping[str, Any], decoupled: bool | None) -> dict[str, Any]:
    """The radam ``state_dict`` of a bitsandbytes Adam8bit/AdamW8bit one, every part
    checked that radam reads differently: the maps (equal to radam's bit for bit),
    the AdEMAMix options (off), the form of the decay."""
    if opt._algorithm != "adam" or opt.state_dtype != EIGHT_BIT:
        raise ValueError(
            "a bitsandbytes 8-bit Adam state_dict loads into radam.Adam or radam.AdamW "
            f"built with state_dtype='8bit', not {type(opt).__name__} with "
            f"state_dtype={opt.state_dtype!r}"
        )
    maps = {True: q8_map(True), False: q8_map(False)}
    groups = []
    for gi, group in enumerate(bnb_sd["param_groups"]):
        where = f"state_dict['param_groups'][{gi}]"
        known = {*OPTIONS, *ADAM_ONLY, "params", "param_names"}
        unknown = sorted(set(group) - known)
        if unknown:
            raise ValueError(f"{where} has option(s) {unknown} that bitsandbytes' Adam8bit lacks")
        for key, plain in ADAM_ONLY.items():
            if group.get(key, plain) != plain:
                raise ValueError(
                    f"{where}[{key!r}] is {group[key]!r}: that is bitsandbytes' AdEMAMix, "
                    "which radam does not implement"
                )
        options = {k: group[k] for k in OPTIONS}
        options["betas"] = tuple(float(b) for b in group["betas"])
        wd = float(group["weight_decay"])
        decoupled_here = True if decoupled is None else decoupled
        if wd != 0 and not decoupled_here:
            raise ValueError(
                f"{where} has weight_decay={wd!r}: bitsandbytes' 8-bit Adam decays weights "
                "decoupled (as AdamW), so it loads with decoupled_weight_decay=True only"
            )
        options["decoupled_weight_decay"] = (
            decoupled_here if wd != 0 else opt.param_groups[gi].get("decoupled_weight_decay", False)
        )
        options["params"] = list(group["params"])
        groups.append(options)
    state = {}
    for pid, entry in bnb_sd["state"].items():
        where = f"state_dict['state'][{pid}]"
        flat = dict(entry)
        flat.update(flat.pop(WRAPPED, {}))
        out: dict[str, Any] = {"step": int(flat.get("step", 0))}
        for codes, scale, qmap, name, signed in BUFFERS:
            if codes not in flat:
                raise ValueError(f"{where} lacks {codes!r}, which bitsandbytes' Adam8bit keeps")
            value = _numpy(flat[codes], f"{where}[{codes!r}]")
            out[name] = value
            if value.dtype != np.uint8:
                continue  # a small param's float32 moment
            for key in (scale, qmap):
                if key not in flat:
                    raise ValueError(f"{where} lacks {key!r}, which 8-bit state keeps")
            theirs = _numpy(flat[qmap], f"{where}[{qmap!r}]")
            ours = maps[signed]
            if (
                theirs.dtype != np.float32
                or theirs.shape != ours.shape
                or (theirs.view(np.uint32) != ours.view(np.uint32)).any()
            ):
                kind = "signed" if signed else "unsigned"
                raise ValueError(
                    f"{where}[{qmap!r}] is not the {kind} dynamic map radam's 8-bit state "
                    "uses (bitsandbytes' create_dynamic_map(signed="
                    f"{signed})): codes of another map cannot be imported"
                )
            out[absmax_name(name)] = _numpy(flat[scale], f"{where}[{scale!r}]").reshape(-1)
        state[pid] = out
    return {"state": state, "param_groups": groups}


def export(opt: Any) -> dict[str, Any]:
    """``opt``'s state as bitsandbytes' Adam8bit/AdamW8bit ``state_dict`` (torch
    tensors), for an optimizer whose every option bitsandbytes' Adam has."""
    try:
        import torch
    except ImportError as err:
        raise ImportError("bitsandbytes_state_dict() makes torch tensors: it needs torch") from err
    if opt._algorithm != "adam" or opt.state_dtype != EIGHT_BIT:
        raise ValueError(
            "bitsandbytes_state_dict() is for radam.Adam or radam.AdamW with "
            f"state_dtype='8bit', not {type(opt).__name__} with state_dtype={opt.state_dtype!r}"
        )
    sd = opt.state_dict()
    groups = []
    for gi, group in enumerate(sd["param_groups"]):
        where = f"param_groups[{gi}]"
        for key in DEFAULTS_ONLY:
            if group.get(key) != BY_NAME[key].default:
                raise ValueError(
                    f"{where}[{key!r}] is {group[key]!r}; bitsandbytes' 8-bit Adam has no "
                    "such option, so this state has no bitsandbytes equivalent"
                )
        if group["weight_decay"] != 0 and not group["decoupled_weight_decay"]:
            raise ValueError(
                f"{where} has an L2 weight decay; bitsandbytes' 8-bit Adam decays weights "
                "decoupled only (use radam.AdamW)"
            )
        for key in ("lr", "betas"):
            values = group[key] if key == "betas" else (group[key],)
            if not all(isinstance(v, (int, float)) for v in values):
                raise ValueError(f"{where}[{key!r}] is a schedule; export the numbers in effect")
        groups.append(
            {
                "lr": group["lr"],
                "betas": tuple(group["betas"]),
                "eps": group["eps"],
                "weight_decay": group["weight_decay"],
                **ADAM_ONLY,
                "params": group["params"],
            }
        )
    state = {}
    maps = [torch.from_numpy(q8_map(signed).copy()) for signed in (True, False)]
    for pid, entry in sd["state"].items():
        wrapped: dict[str, Any] = {}
        for (codes, scale, qmap, name, _), book in zip(BUFFERS, maps):
            wrapped[codes] = torch.from_numpy(np.ascontiguousarray(entry[name]))
            if entry[name].dtype == np.uint8:
                wrapped[scale] = torch.from_numpy(entry[absmax_name(name)])
                wrapped[qmap] = book.clone()
        state[pid] = {"step": entry["step"], WRAPPED: wrapped}
    return {"state": state, "param_groups": groups}
