"""Issue 5's figures: one step at 2e7 float32 params for radam's variants and
16-bit state, beside float32 Adam (and PyTorch's fused Adam when torch imports),
timed in the same run.

    python benchmarks/bench_variants.py [--params 2e7] [--repeats 21]

Each repeat runs every case once (after one untimed step of the same case),
in a rotating order, so machine noise hits them alike; figures are medians
with the interquartile range, and ratios are medians of the per-repeat ratios
to float32 Adam, beside the ratio of the fastest samples (robust to a busy
machine).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import radam


def quartiles(xs):
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=2e7)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    n = int(args.params)
    rng = np.random.default_rng(0)
    grad = rng.standard_normal(n, dtype=np.float32)

    def make(cls=radam.Adam, **options):
        param = rng.standard_normal(n, dtype=np.float32)
        opt = cls([param], **options)
        return lambda: opt.step([grad])

    cases = {
        "Adam, float32 moments": make(),
        "Adam, bfloat16 moments": make(state_dtype="bfloat16"),
        "Adam, float16 moments": make(state_dtype="float16"),
        "Adam, skip_nonfinite": make(skip_nonfinite=True),
        "NAdam": make(radam.NAdam),
        "RAdam": make(radam.RAdam),
    }
    try:
        import torch

        torch.set_num_threads(radam.num_threads())
        tp = torch.from_numpy(rng.standard_normal(n, dtype=np.float32))
        tp.grad = torch.from_numpy(grad)
        topt = torch.optim.Adam([tp], lr=1e-3, fused=True)
        cases["torch.optim.Adam(fused=True), float32"] = topt.step
    except ImportError:
        print("torch is not installed here: its column is skipped")

    names = list(cases)
    times = {k: [] for k in names}
    for fn in cases.values():  # warm-up: state created, pages touched
        fn()
        fn()
    for r in range(args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            # An untimed step first: the previous case's threads (torch's
            # OpenMP ones spin for milliseconds) have let go of the cores.
            cases[k]()
            start = time.perf_counter()
            cases[k]()
            times[k].append(time.perf_counter() - start)
    base = times[names[0]]
    print(
        f"one step on {n:,} float32 params, {args.repeats} repeats, "
        f"SIMD {radam.simd_level()}, {radam.num_threads()} threads\n"
    )
    print("| case | median ms (IQR) | best ms | ratio to float32 Adam: median | best of each |")
    print("| --- | --- | --- | --- | --- |")
    for k in names:
        lo, med, hi = quartiles(times[k])
        ratio = statistics.median(t / b for t, b in zip(times[k], base))
        best = min(times[k]) / min(base)
        print(
            f"| {k} | {med * 1e3:.2f} ({(hi - lo) * 1e3:.2f}) | {min(times[k]) * 1e3:.2f} "
            f"| {ratio:.2f} | {best:.2f} |"
        )


if __name__ == "__main__":
    main()
