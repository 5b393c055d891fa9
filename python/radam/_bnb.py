"""bitsandbytes' 8-bit Adam state dicts, in and out.

bitsandbytes' ``Adam8bit``/``AdamW8bit`` keep what ``state_dtype="8bit"``
keeps, in the same format (blocks of 256, one float32 absmax each, the same
dynamic maps): per param ``state1``/``state2`` (the moments: uint8 codes, or
float32 for a param under 4096 elements), ``absmax1``/``absmax2`` and the
maps ``qmap1``/``qmap2``, wrapped in its state dict under
``"__bnb_optimizer_quant_state__"``. Its 8-bit Adam decays weights
decoupled (``p *= 1 - lr * weight_decay``) in both classes, so a dict with
``weight_decay != 0`` loads into ``radam.AdamW`` (or ``decoupled_weight_decay=True``).
Its ``Adam32bit``/``AdamW32bit`` keep float32 ``state1``/``state2`` (no
absmax, no map) in the same wrapper: :func:`to_radam` takes those too (into
float32 state, or quantized on import into 8-bit state: see
``_torch_import._fit``). Neither torch nor bitsandbytes is a dependency:
tensors are read through their ``numpy`` methods; only :func:`export` makes
torch tensors (bitsandbytes loads nothing else).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._engine import EXP_AVG, EXP_AVG_SQ
from ._formats import EIGHT_BIT, absmax_name, q8_map
from ._options import BY_NAME
from ._tensors import scalar, to_numpy

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
    """Whether ``state_dict`` was written by bitsandbytes' 8-bit or 32-bit Adam."""
    state = state_dict.get("state")
    if not isinstance(state, Mapping):
        return False
    return any(
        isinstance(e, Mapping) and (WRAPPED in e or "qmap1" in e or "state1" in e)
        for e in state.values()
    )


def _flat_entries(bnb_sd: Mapping[str, Any]) -> dict[Any, dict[str, Any]]:
    """Each param's state with bitsandbytes' wrapper unwrapped."""
    entries = {}
    for pid, entry in bnb_sd["state"].items():
        where = f"state_dict['state'][{pid}]"
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where} must be a dict name -> value, got {type(entry).__name__}")
        flat = dict(entry)
        wrapped = flat.pop(WRAPPED, {})
        if not isinstance(wrapped, Mapping):
            raise TypeError(f"{where}[{WRAPPED!r}] must be a dict, got {type(wrapped).__name__}")
        flat.update(wrapped)
        entries[pid] = flat
    return entries


def _kind(entries: Mapping[Any, Mapping[str, Any]]) -> str:
    """Which bitsandbytes Adam wrote the state: "8-bit" (uint8 codes, with their
    maps) or "32-bit" (``Adam32bit``/``AdamW32bit``: float32 moments, no map)."""
    if any("qmap1" in e or "qmap2" in e for e in entries.values()):
        return "8-bit"
    return "32-bit"


def _group_options(group: Any, gi: int, decoupled: bool | None, ours: Mapping) -> dict:
    """radam's options of bitsandbytes group ``gi``, every key checked and named."""
    where = f"state_dict['param_groups'][{gi}]"
    if not isinstance(group, Mapping):
        raise TypeError(f"{where} must be a dict, got {type(group).__name__}")
    unknown = sorted(set(group) - {*OPTIONS, *ADAM_ONLY, "params", "param_names"}, key=repr)
    if unknown:
        raise ValueError(f"{where} has option(s) {unknown} that bitsandbytes' Adam lacks")
    missing = [k for k in (*OPTIONS, "params") if k not in group]
    if missing:
        raise ValueError(
            f"{where} lacks {missing}; bitsandbytes' Adam writes {[*OPTIONS, 'params']} "
            "in every group"
        )
    for key, plain in ADAM_ONLY.items():
        if group.get(key, plain) != plain:
            raise ValueError(
                f"{where}[{key!r}] is {group[key]!r}: that is bitsandbytes' AdEMAMix, "
                "which radam does not implement"
            )
    options = {k: scalar(group[k], f"{where}[{k!r}]") for k in OPTIONS if k != "betas"}
    options["betas"] = _betas(group["betas"], f"{where}['betas']")
    wd = options["weight_decay"]
    decoupled_here = True if decoupled is None else decoupled
    if wd != 0 and not decoupled_here:
        raise ValueError(
            f"{where} has weight_decay={wd!r}: bitsandbytes' Adam decays weights "
            "decoupled (as AdamW), so it loads with decoupled_weight_decay=True only"
        )
    options["decoupled_weight_decay"] = (
        decoupled_here if wd != 0 else ours.get("decoupled_weight_decay", False)
    )
    options["params"] = list(group["params"])
    return options


def _betas(betas: Any, what: str) -> tuple[float, float]:
    """A saved (beta1, beta2): two numbers (or 0-d tensors)."""
    try:
        if isinstance(betas, (str, bytes)) or len(betas) != 2:
            raise TypeError
        pair = tuple(float(scalar(b, what)) for b in betas)
    except (TypeError, ValueError):
        raise ValueError(
            f"{what} must be a pair of numbers (beta1, beta2), got {betas!r}"
        ) from None
    return pair[0], pair[1]


def to_radam(opt: Any, bnb_sd: Mapping[str, Any], decoupled: bool | None) -> dict[str, Any]:
    """The radam ``state_dict`` of a bitsandbytes ``Adam8bit``/``AdamW8bit`` or
    ``Adam32bit``/``AdamW32bit`` one, every part checked that radam reads
    differently (the maps, equal to radam's bit for bit; the AdEMAMix options,
    off; the form of the decay; each buffer's dtype), errors naming the key.
    The step goes through as saved: ``load_state_dict`` checks it as its own."""
    entries = _flat_entries(bnb_sd)
    kind = _kind(entries)
    if opt._algorithm != "adam" or (kind == "8-bit" and opt._state_format is not EIGHT_BIT):
        into = "radam.Adam or radam.AdamW"
        if kind == "8-bit":
            into += " built with state_dtype='8bit'"
        raise ValueError(
            f"a bitsandbytes {kind} Adam state_dict loads into {into}, not "
            f"{type(opt).__name__} with state_dtype={opt.state_dtype!r}"
        )
    ours = opt.param_groups
    groups = [
        _group_options(g, gi, decoupled, ours[gi] if gi < len(ours) else {})
        for gi, g in enumerate(bnb_sd["param_groups"])
    ]
    state = {}
    for pid, flat in entries.items():
        out: dict[str, Any] = {}
        if "step" in flat:
            out["step"] = flat["step"]
            if hasattr(flat["step"], "detach"):  # a 0-d tensor
                out["step"] = to_numpy(flat["step"], f"state_dict['state'][{pid}]['step']")
        for buffer in BUFFERS:
            out.update(_buffer(flat, buffer, f"state_dict['state'][{pid}]"))
        state[pid] = out
    return {"state": state, "param_groups": groups}


def _buffer(flat: Mapping[str, Any], buffer: tuple, where: str) -> dict[str, np.ndarray]:
    """One moment of a param's bitsandbytes state as radam's arrays: float32
    as it is, uint8 codes with their absmax (after checking their map)."""
    codes, scale, qmap, name, signed = buffer
    if codes not in flat:
        raise ValueError(f"{where} lacks {codes!r}, which bitsandbytes' Adam keeps")
    value = to_numpy(flat[codes], f"{where}[{codes!r}]")
    if value.dtype == np.float32:  # a 32-bit optimizer's moment, or a small param's
        return {name: value}
    if value.dtype != np.uint8:
        raise ValueError(
            f"{where}[{codes!r}] has dtype {value.dtype}; bitsandbytes' Adam keeps uint8 "
            "codes there (8-bit state, with an absmax and a map) or float32 moments"
        )
    for key in (scale, qmap):
        if key not in flat:
            raise ValueError(f"{where} lacks {key!r}, which 8-bit state keeps beside its codes")
    theirs, ours = to_numpy(flat[qmap], f"{where}[{qmap!r}]"), q8_map(signed)
    if (
        theirs.dtype != np.float32
        or theirs.shape != ours.shape
        or (theirs.view(np.uint32) != ours.view(np.uint32)).any()
    ):
        kind = "signed" if signed else "unsigned"
        raise ValueError(
            f"{where}[{qmap!r}] is not the {kind} dynamic map radam's 8-bit state uses "
            f"(bitsandbytes' create_dynamic_map(signed={signed})): codes of another map "
            "cannot be imported"
        )
    absmax = to_numpy(flat[scale], f"{where}[{scale!r}]")
    if absmax.dtype != np.float32:
        raise ValueError(
            f"{where}[{scale!r}] has dtype {absmax.dtype}; an 8-bit buffer's absmax is "
            "float32, one per block of 256"
        )
    if (absmax < 0).any():  # radam's mark of a block holding an infinity; never bitsandbytes'
        raise ValueError(
            f"{where}[{scale!r}] holds a negative absmax; bitsandbytes' absmax is a block's "
            "largest magnitude, >= 0"
        )
    return {name: value, absmax_name(name): absmax.reshape(-1)}


def export(opt: Any) -> dict[str, Any]:
    """``opt``'s state as bitsandbytes' Adam8bit/AdamW8bit ``state_dict`` (torch
    tensors), for an optimizer whose every option bitsandbytes' Adam has."""
    try:
        import torch
    except ImportError as err:
        raise ImportError("bitsandbytes_state_dict() makes torch tensors: it needs torch") from err
    if opt._algorithm != "adam" or opt._state_format is not EIGHT_BIT:
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
            if absmax_name(name) in entry:  # an 8-bit buffer (not a small tensor's)
                if (entry[absmax_name(name)] < 0).any():
                    raise ValueError(
                        f"opt.state[{pid!r}][{name!r}] holds a block with an infinite moment "
                        "(its absmax is negated), which bitsandbytes' 8-bit format cannot "
                        "hold; nothing was exported"
                    )
                wrapped[scale] = torch.from_numpy(entry[absmax_name(name)])
                wrapped[qmap] = book.clone()
        state[pid] = {"step": entry["step"], WRAPPED: wrapped}
    return {"state": state, "param_groups": groups}
