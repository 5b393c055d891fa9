"""Runs of an optimizer described by plain data (JSON), so that another
process (one with another thread count) can replay them exactly.

A case is a dict: ``cls`` (a class name of radam), ``options`` (its keyword
arguments, with ``lr`` either a float or ``["WarmupCosineDecay", args...]``),
``dtypes`` (one per param: "float32", "float64", "float16", "bfloat16"),
``shapes``, ``seed``, ``steps`` and ``nonfinite_at`` (the step whose grads get
a NaN, or -1). Grads are drawn from the seed, so every replay sees the same.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

import ml_dtypes
import numpy as np
import radam

DTYPES = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}


def make_params(case: dict[str, Any]) -> list[np.ndarray]:
    rng = np.random.default_rng(case["seed"])
    return [
        np.asarray(rng.standard_normal(shape), DTYPES[d])
        for shape, d in zip(case["shapes"], case["dtypes"])
    ]


def grads_at(case: dict[str, Any], step: int) -> list[np.ndarray]:
    """The grads of step ``step`` (from 0): standard normal times the loss scale."""
    rng = np.random.default_rng([case["seed"], step])
    scale = case["options"].get("grad_scale", 1.0)
    grads = [
        np.asarray(rng.standard_normal(shape) * scale, DTYPES[d])
        for shape, d in zip(case["shapes"], case["dtypes"])
    ]
    if step == case["nonfinite_at"]:
        for g in grads:
            if g.size:
                g.reshape(-1)[rng.integers(g.size)] = np.nan
                break
    return grads


def build(case: dict[str, Any], params: list[np.ndarray]) -> Any:
    options = dict(case["options"])
    if isinstance(options.get("lr"), list):
        name, *args = options["lr"]
        options["lr"] = getattr(radam.schedules, name)(*args)
    return getattr(radam, case["cls"])(params, **options)


def snapshot(opt: Any, params: list[np.ndarray]) -> dict[str, Any]:
    """Everything a step changes, as bytes (compared exactly, NaN bits included)."""
    return {
        "params": [p.tobytes() for p in params],
        "state": {
            k: {n: (a.dtype.str, a.tobytes()) for n, a in entry.items()}
            for k, entry in opt.state.items()
        },
        "step": opt.step_count,
        "skipped": opt.skipped_steps,
    }


def digest(opt: Any, params: list[np.ndarray]) -> str:
    snap = snapshot(opt, params)
    h = hashlib.sha256()
    for p in snap["params"]:
        h.update(p)
    for k in sorted(snap["state"], key=repr):
        for n in sorted(snap["state"][k]):
            h.update(n.encode())
            dtype, data = snap["state"][k][n]
            h.update(dtype.encode())
            h.update(data)
    h.update(repr((snap["step"], snap["skipped"])).encode())
    return h.hexdigest()


def run(case: dict[str, Any], steps: range | None = None, opt: Any = None, params: Any = None):
    """Take ``steps`` (default: all) on a new optimizer, or on ``opt`` over ``params``."""
    if opt is None:
        params = make_params(case)
        opt = build(case, params)
    for t in range(case["steps"]) if steps is None else steps:
        opt.step(grads_at(case, t))
    return opt, params


def serve() -> None:
    """Replay cases read as JSON lines from stdin; write each digest as a line."""
    for line in sys.stdin:
        case = json.loads(line)
        opt, params = run(case)
        sys.stdout.write(json.dumps({"digest": digest(opt, params)}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
