"""Per-call overhead of ``step``: k float32 tensors of 100 params each, Python call included.

    python benchmarks/bench_overhead.py                      # the radam this interpreter imports
    python benchmarks/bench_overhead.py --compare A B        # two builds, side by side

At 100 params a tensor the kernel's arithmetic is a few nanoseconds, so what is
timed is the call: flattening the grads, the checks of every array (dtype,
shape, borrows, memory overlap) and the dispatch. ``--compare A B`` runs the
same measurement in subprocesses with ``PYTHONPATH=A`` and ``PYTHONPATH=B``
(each a folder holding a built ``radam`` package), alternating A and B in every
round so that machine noise hits both alike, and prints each build's median
and the median of the per-round ratios B / A.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

TENSORS = (1, 288, 1000)
SIZE = 100


def measure(tensors: int, steps: int, samples: int) -> list[float]:
    """Seconds per step, ``samples`` times, each the mean of ``steps`` back-to-back steps."""
    import gc

    import numpy as np
    import radam

    rng = np.random.default_rng(tensors)
    params = [rng.standard_normal(SIZE, dtype=np.float32) for _ in range(tensors)]
    grads = [rng.standard_normal(SIZE, dtype=np.float32) for _ in range(tensors)]
    opt = radam.Adam(params, lr=1e-3)
    for _ in range(steps):  # warm-up: state created, caches filled
        opt.step(grads)
    out = []
    gc.disable()
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.step(grads)
        out.append((time.perf_counter() - t0) / steps)
    gc.enable()
    return out


def _steps_for(tensors: int) -> int:
    return max(20, 20_000 // tensors)


def child(samples: int) -> None:
    result = {k: statistics.median(measure(k, _steps_for(k), samples)) for k in TENSORS}
    print(json.dumps(result))


def compare(a: str, b: str, rounds: int, samples: int) -> None:
    times: dict[str, dict[int, list[float]]] = {a: {k: [] for k in TENSORS}, b: {}}
    times[b] = {k: [] for k in TENSORS}
    ratios: dict[int, list[float]] = {k: [] for k in TENSORS}
    for r in range(rounds):
        got = {}
        for path in (a, b) if r % 2 == 0 else (b, a):
            env = dict(os.environ, PYTHONPATH=path)
            out = subprocess.run(
                [sys.executable, __file__, "--child", "--samples", str(samples)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            got[path] = {int(k): v for k, v in json.loads(out.stdout).items()}
        for k in TENSORS:
            times[a][k].append(got[a][k])
            times[b][k].append(got[b][k])
            ratios[k].append(got[b][k] / got[a][k])
    print(f"{rounds} rounds, A = {a}, B = {b}; per step, median over rounds")
    print(f"{'tensors':>8} {'A (us)':>10} {'B (us)':>10} {'B / A':>7}  (per-round ratios: min-max)")
    for k in TENSORS:
        ma, mb = statistics.median(times[a][k]), statistics.median(times[b][k])
        rs = ratios[k]
        print(
            f"{k:>8} {ma * 1e6:>10.2f} {mb * 1e6:>10.2f} {statistics.median(rs):>7.3f}"
            f"  ({min(rs):.3f}-{max(rs):.3f})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rounds < 1 or args.samples < 1:
        ap.error("--rounds and --samples must be at least 1")
    if args.child:
        child(args.samples)
    elif args.compare:
        compare(*args.compare, args.rounds, args.samples)
    else:
        for k in TENSORS:
            ts = measure(k, _steps_for(k), args.samples)
            print(f"{k:>5} tensors x {SIZE} params: {statistics.median(ts) * 1e6:8.2f} us per step")


if __name__ == "__main__":
    main()
