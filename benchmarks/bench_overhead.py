"""Per-call overhead of ``step``: k float32 tensors of 100 params each, Python call included.

    python benchmarks/bench_overhead.py                  # the radam this interpreter imports
    python benchmarks/bench_overhead.py --compare A B    # two builds, side by side

At 100 params a tensor the kernel's arithmetic is a few nanoseconds, so what is
timed is the call: flattening the grads, the checks of every array (dtype,
shape, borrows, memory overlap) and the dispatch. ``--compare A B`` takes two
folders that each hold a built ``radam`` package (e.g. two checkouts' ``python``
folders after ``maturin develop``), copies the packages under two names into a
temporary folder and imports both into this one process (radam's imports are
relative), then alternates them batch by batch, so that machine noise hits both
alike. It prints each build's median time per step and the median of the
per-batch ratios B / A, with their spread.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TENSORS = (1, 288, 1000)
SIZE = 100


def _problem(tensors: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(tensors)
    params = [rng.standard_normal(SIZE, dtype=np.float32) for _ in range(tensors)]
    grads = [rng.standard_normal(SIZE, dtype=np.float32) for _ in range(tensors)]
    return params, grads


def _steps_for(tensors: int) -> int:
    """Back-to-back steps per timed batch: about 2 ms of work."""
    return max(5, 1000 // tensors)


def _batch(opt: Any, grads: list[np.ndarray], steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step(grads)
    return (time.perf_counter() - t0) / steps


def measure(modules: list[Any], tensors: int, batches: int) -> list[list[float]]:
    """Seconds per step of each module's Adam, ``batches`` batches each, interleaved
    (the order alternates from batch to batch)."""
    params, grads = _problem(tensors)
    opts = [m.Adam([p.copy() for p in params], lr=1e-3) for m in modules]
    steps = _steps_for(tensors)
    for opt in opts:  # warm-up: state made, caches filled
        _batch(opt, grads, steps)
    times: list[list[float]] = [[] for _ in opts]
    gc.collect()
    gc.disable()
    try:
        for b in range(batches):
            order = range(len(opts)) if b % 2 == 0 else reversed(range(len(opts)))
            for i in order:
                times[i].append(_batch(opts[i], grads, steps))
    finally:
        gc.enable()
    return times


def _import_as(folder: str, name: str, into: str) -> Any:
    source = os.path.join(folder, "radam")
    if not os.path.isfile(os.path.join(source, "__init__.py")):
        sys.exit(f"{folder} holds no radam package (expected {source}/__init__.py)")
    shutil.copytree(source, os.path.join(into, name), ignore=shutil.ignore_patterns("__pycache__"))
    return importlib.import_module(name)


def write_json(path: str, **fields: Any) -> None:
    """Write a benchmark's results with when and how it ran (for ``--json``)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    when = datetime.datetime.now().isoformat(timespec="seconds")
    out.write_text(json.dumps({"when": when, "argv": sys.argv, **fields}, indent=1))
    print(f"wrote {out}", file=sys.stderr)


def compare(a: str, b: str, batches: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, tmp)
        modules = [_import_as(a, "radam_build_a", tmp), _import_as(b, "radam_build_b", tmp)]
        print(f"A = {a}\nB = {b}\n{batches} batches each, alternated; per step:")
        print(f"{'tensors':>8} {'A median':>10} {'B median':>10} {'B / A':>7}  (ratios' IQR)")
        for k in TENSORS:
            ta, tb = measure(modules, k, batches)
            ratios = sorted(y / x for x, y in zip(ta, tb))
            q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
            ma, mb = statistics.median(ta) * 1e6, statistics.median(tb) * 1e6
            print(
                f"{k:>8} {ma:>8.2f}us {mb:>8.2f}us {statistics.median(ratios):>7.3f}"
                f"  ({q1:.3f}-{q3:.3f})"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    ap.add_argument("--batches", type=int, default=201)
    args = ap.parse_args()
    if args.batches < 1:
        ap.error("--batches must be at least 1")
    if args.compare:
        compare(*args.compare, args.batches)
        return
    import radam

    for k in TENSORS:
        (times,) = measure([radam], k, args.batches)
        print(f"{k:>5} tensors x {SIZE} params: {statistics.median(times) * 1e6:8.2f} us per step")


if __name__ == "__main__":
    main()
