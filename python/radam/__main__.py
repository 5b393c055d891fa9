"""``python -m radam``: what radam sees on this machine, and one step timed.

``python -m radam demo`` trains models on real data instead (see radam.demo).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import radam
from radam.numpy_adam import NumpyAdam

BYTES_PER_PARAM = 28  # fp32 Adam reads p, g, m, v and writes p, m, v


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first touch of the state, thread pool start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["demo"]:
        from radam import demo

        demo_args = demo.parse(args_in[1:])
        if demo_args.data_parallel:
            from radam.demo_mpi import main as data_parallel

            return data_parallel(demo_args.epochs, demo_args.batch_size, demo_args.seed)
        return demo.run(demo_args)
    parser = argparse.ArgumentParser(
        prog="python -m radam",
        description=__doc__,
        epilog="python -m radam demo [--quick] [--plot PATH]: Adam vs SGD on real data",
    )
    parser.add_argument("--params", type=float, default=1e7, help="parameters (default 1e7)")
    parser.add_argument("--repeats", type=int, default=15, help="timed steps (default 15)")
    args = parser.parse_args(args_in)
    n = int(args.params)

    print(f"radam {radam.__version__}")
    print(f"SIMD level: {radam.simd_level()}")
    print(f"threads:    {radam.num_threads()}")
    print(f"one Adam step on {n:,} float32 parameters, median of {args.repeats}:")

    rng = np.random.default_rng(0)
    grad = rng.standard_normal(n, dtype=np.float32)
    rows = []
    for name, make in (("radam.Adam", radam.Adam), ("NumPy (in place)", NumpyAdam)):
        param = rng.standard_normal(n, dtype=np.float32)
        opt = make([param], lr=1e-3)
        seconds = _median_seconds(lambda opt=opt: opt.step([grad]), args.repeats)
        rows.append((name, seconds))
    for name, seconds in rows:
        gbps = BYTES_PER_PARAM * n / seconds / 1e9
        print(f"  {name:<18} {seconds * 1e3:8.2f} ms  {gbps:6.1f} GB/s effective")
    print(f"radam is {rows[1][1] / rows[0][1]:.1f}x faster than NumPy here")
    return 0


if __name__ == "__main__":
    sys.exit(main())
