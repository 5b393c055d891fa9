"""Data-parallel Adam over MPI: step time, per-rank optimizer memory and bytes sent.

    python benchmarks/bench_distributed.py [--params 4e6] [--steps 20] [--ranks 1 2 3]

launches ``mpiexec -n k`` (k = 1, 2, 3) running this file as a worker, once for
``ShardedAdam`` and once for ``AveragedAdam``, and prints a table. MPI runs over
TCP on loopback (``--mca btl self,tcp``) so that every byte a rank sends goes
through a ``write`` system call, which the kernel counts in ``/proc/self/io``
(``wchar``): "sent/step" is that count per step, measured, beside the textbook
figure for reduce-scatter plus all-gather (or a ring all-reduce), 2(k-1)/k of
the param bytes. Memory is the bytes of optimizer state arrays on each rank
(measured from the arrays) and of the buffers radam allocates once for
communication. Step time is the median over ``--steps`` steps, grads copied in,
averaged, stepped and params gathered; on one machine with k ranks on 2 cores
it measures CPU and loopback, not a network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time


def _wchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def worker(args: argparse.Namespace) -> None:
    import numpy as np
    from mpi4py import MPI
    from radam.distributed import AveragedAdam, ShardedAdam

    comm = MPI.COMM_WORLD
    rank, k = comm.Get_rank(), comm.Get_size()
    n = int(args.params)
    # A few tensors of unequal sizes, as a model has.
    sizes = [n // 2, n // 4, n // 8, n - n // 2 - n // 4 - n // 8]
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s, dtype=np.float32) for s in sizes]
    grads = [rng.standard_normal(s, dtype=np.float32) for s in sizes]
    cls = ShardedAdam if args.mode == "sharded" else AveragedAdam
    opt = cls(params, lr=1e-3)
    for _ in range(3):  # warm-up: state created, pages touched
        opt.step(grads)
    times, sent = [], 0
    for _ in range(args.steps):
        comm.Barrier()
        before = _wchar()
        start = time.perf_counter()
        opt.step(grads)
        times.append(time.perf_counter() - start)
        sent += _wchar() - before
    times = comm.gather(statistics.median(times))
    sent = comm.gather(sent / args.steps)
    if cls is ShardedAdam:
        state, buffers = opt.state_nbytes(), opt.buffer_nbytes()
    else:
        inner = opt.optimizer.state
        state = sum(a.nbytes for e in inner.values() for a in e.values())
        buffers = sum(b.grads.nbytes for b in opt._buckets)
    state, buffers = comm.gather(state), comm.gather(buffers)
    if rank == 0:
        print(
            "RESULT "
            + json.dumps(
                {
                    "mode": args.mode,
                    "ranks": k,
                    "params": n,
                    "step_ms": 1e3 * max(times),
                    "sent_per_rank": max(sent),
                    "state_per_rank": max(state),
                    "buffers_per_rank": max(buffers),
                }
            ),
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=float, default=4e6, help="float32 params (4e6)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (20)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--worker", choices=["sharded", "averaged"], dest="mode")
    args = parser.parse_args()
    if args.mode:
        worker(args)
        return 0
    if shutil.which("mpiexec") is None:
        print("mpiexec not found: apt-get install openmpi-bin libopenmpi-dev", file=sys.stderr)
        return 1
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    rows = []
    for mode in ("sharded", "averaged"):
        for k in args.ranks:
            command = [
                "mpiexec", "--oversubscribe", "--mca", "btl", "self,tcp", "-n", str(k),
                sys.executable, __file__, "--worker", mode,
                "--params", str(args.params), "--steps", str(args.steps),
            ]  # fmt: skip
            out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
            results = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if out.returncode != 0 or not results:
                print(out.stdout, out.stderr, file=sys.stderr)
                return 1
            rows.append(json.loads(results[0][len("RESULT ") :]))
    n = int(args.params)
    param_bytes = 4 * n
    print(f"{n:,} float32 params ({param_bytes / 1e6:.1f} MB), fp32 Adam state 8 B/param")
    print(
        f"{'mode':<9} {'ranks':>5} {'step ms':>8} {'state MB/rank':>14} {'buffers MB/rank':>16} "
        f"{'sent MB/rank/step':>18} {'2(k-1)/k x params MB':>21}"
    )
    for r in rows:
        k = r["ranks"]
        textbook = 2 * (k - 1) / k * param_bytes
        print(
            f"{r['mode']:<9} {k:>5} {r['step_ms']:>8.2f} {r['state_per_rank'] / 1e6:>14.2f} "
            f"{r['buffers_per_rank'] / 1e6:>16.2f} {r['sent_per_rank'] / 1e6:>18.2f} "
            f"{textbook / 1e6:>21.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
