"""The optimizers whose state dicts and checkpoints ``tests/saved`` holds, as
radam wrote them before the option table, the one-way core and the buffer
record (commit d0199a7), and how those files are encoded.

``python tests/saved/make.py`` (from the repository root) wrote
``state_dicts.json`` and the ``*.ckpt`` files with that build;
``tests/test_saved_files.py`` loads them into this one.
Each case: a class and its options, params of some shapes and dtypes, a few
steps (so the state is past its zero start), then the state dict, the
checkpoint, one more gradient and what one more step gave: the params and
state bytes that the loaded optimizer must reproduce.
"""

from __future__ import annotations

import base64
from typing import Any

import ml_dtypes
import numpy as np
import radam
from radam import schedules

BF16 = np.dtype(ml_dtypes.bfloat16)


def _schedule_lr() -> Any:
    return schedules.WarmupCosineDecay(
        peak_value=1e-2, warmup_steps=2, decay_steps=10, end_value=1e-4
    )


# name: (class, options, param shapes, param dtype, steps before the save)
CASES: dict[str, tuple[Any, dict[str, Any], list[tuple[int, ...]], Any, int]] = {
    "adam": (radam.Adam, {"lr": 1e-2}, [(5,), (2, 3)], np.float32, 3),
    "adam_amsgrad_l2_f64": (
        radam.Adam,
        {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1},
        [(4,), (3, 2)],
        np.float64,
        4,
    ),
    "adamw": (radam.AdamW, {"lr": 1e-2}, [(6,)], np.float32, 3),
    "adamax": (radam.Adamax, {}, [(5,), (2, 2)], np.float32, 3),
    "nadam": (radam.NAdam, {"momentum_decay": 5e-3}, [(5,), (3,)], np.float64, 5),
    "radam": (radam.RAdam, {"lr": 1e-2}, [(7,)], np.float32, 7),
    "momentum_nesterov": (
        radam.Adam,
        {"momentum": 0.5, "nesterov": True, "max_gradient_norm": 1.0},
        [(5,), (4,)],
        np.float32,
        3,
    ),
    "bfloat16_state": (radam.Adam, {"state_dtype": "bfloat16"}, [(9,)], np.float32, 3),
    "float16_master_weights": (
        radam.Adam,
        {"master_weights": True, "lr": 1e-2},
        [(6,), (2, 2)],
        np.float16,
        3,
    ),
    "schedules": (
        radam.Adam,
        {"lr": _schedule_lr(), "betas": (schedules.OneCycle(1e-2, 12).momentum(), 0.99)},
        [(5,)],
        np.float32,
        4,
    ),
}


def params_of(name: str) -> list[np.ndarray]:
    _, _, shapes, dtype, _ = CASES[name]
    rng = np.random.default_rng(len(name))
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def grads_of(params: list[np.ndarray], k: int) -> list[np.ndarray]:
    rng = np.random.default_rng(100 + k)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """An array as its exact bytes (little-endian, C order)."""
    return {
        "dtype": a.dtype.name,
        "shape": list(a.shape),
        "bytes": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii"),
    }


def decode_array(record: dict[str, Any]) -> np.ndarray:
    dtype = BF16 if record["dtype"] == "bfloat16" else np.dtype(record["dtype"])
    data = base64.b64decode(record["bytes"])
    return np.frombuffer(data, dtype).reshape(record["shape"]).copy()


def encode_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"array": encode_array(value)}
    if isinstance(value, schedules.Schedule):
        return {"schedule": value.config()}
    if isinstance(value, (tuple, list)):
        return {"sequence": [encode_value(v) for v in value], "tuple": isinstance(value, tuple)}
    return value


def decode_value(value: Any) -> Any:
    if isinstance(value, dict) and "array" in value:
        return decode_array(value["array"])
    if isinstance(value, dict) and "schedule" in value:
        return schedules.from_config(value["schedule"])
    if isinstance(value, dict) and "sequence" in value:
        items = [decode_value(v) for v in value["sequence"]]
        return tuple(items) if value["tuple"] else items
    return value


def encode_state_dict(sd: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": {
            str(i): {k: encode_value(v) for k, v in entry.items()}
            for i, entry in sd["state"].items()
        },
        "param_groups": [{k: encode_value(v) for k, v in g.items()} for g in sd["param_groups"]],
    }


def decode_state_dict(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": {
            int(i): {k: decode_value(v) for k, v in entry.items()}
            for i, entry in record["state"].items()
        },
        "param_groups": [
            {k: decode_value(v) for k, v in g.items()} for g in record["param_groups"]
        ],
    }
