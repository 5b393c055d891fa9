"""A row-sparse (lazy) step of an embedding table: radam vs its dense step vs torch.

    python benchmarks/bench_row_sparse.py                       # 1e6 x 64 float32
    python benchmarks/bench_row_sparse.py --rows 100000 --repeats 5
    python benchmarks/bench_row_sparse.py --device gpu --rows 100000 --fractions 0.01

One float32 table of ``--rows`` x ``--dim`` (1e6 x 64 by default). Per repeat, in
a rotating order: radam's dense step (a full gradient), and for each fraction of
rows (0.1%, 1%, 10%; indices drawn uniformly, so some repeat) radam's step with a
``radam.RowSparse`` grad and ``torch.optim.SparseAdam`` on a sparse COO gradient of
the same indices and values (skipped with a note without torch). Every optimizer
steps its own copy of the table. Before each timed step a case takes untimed steps
for ``--settle`` seconds (at least one): torch's OpenMP threads spin for
milliseconds after its steps, which would steal the cores from the next case.
Figures are medians over the repeats; ratios are medians of per-repeat ratios
(both timed in the same repeat).

``--device gpu``: radam's steps run on the GPU (adam.wgsl; torch stays on the CPU,
skipped). Both keep the host table current: the dense step uploads the whole
gradient and reads the whole table back, the row-sparse one uploads and reads back
the named rows. ``dense kernel`` is the dense step with the gradient already on the
device (a ``radam.gpu.DeviceArray``), ended by a wait for the queue: the kernel
without the transfers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import radam


def _torch():
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - a CUDA build without its libraries raises others
        print(f"torch is not usable here ({type(e).__name__}: {e}); its columns are skipped")
        return None
    return torch


def _timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=float, default=1e6)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--fractions", default="0.001,0.01,0.1")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--settle", type=float, default=0.05)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    args = parser.parse_args()
    rows, dim, device = int(args.rows), args.dim, args.device
    fractions = [float(f) for f in args.fractions.split(",")]
    torch = _torch() if device == "cpu" else None
    rng = np.random.default_rng(0)
    start = rng.standard_normal((rows, dim), dtype=np.float32)

    dense_table = start.copy()
    dense = radam.Adam([dense_table], lr=1e-3, device=device)
    dense_grad = rng.standard_normal((rows, dim), dtype=np.float32)
    lazy_table = start.copy()
    lazy = radam.Adam([lazy_table], lr=1e-3, device=device)
    batches = {}
    for f in fractions:
        k = max(1, int(rows * f))
        indices = rng.integers(0, rows, size=k)
        values = rng.standard_normal((k, dim), dtype=np.float32)
        batches[f] = (indices, values, radam.RowSparse(indices, values))
    cases = {"dense": lambda: dense.step([dense_grad])}
    if device == "gpu":
        from radam import gpu

        kernel = radam.Adam([start.copy()], lr=1e-3, device="gpu")
        device_grad = gpu.DeviceArray.from_numpy(dense_grad)

        def kernel_step() -> None:
            kernel.step([device_grad])
            gpu.wait()

        cases["dense kernel"] = kernel_step
    for f, (_, _, grad) in batches.items():
        cases[f"radam {f:g}"] = lambda grad=grad: lazy.step([grad])
    if torch is not None:
        weight = torch.from_numpy(start.copy()).requires_grad_()
        torch_opt = torch.optim.SparseAdam([weight], lr=1e-3)
        for f, (indices, values, _) in batches.items():
            coo = torch.sparse_coo_tensor(
                torch.from_numpy(indices)[None],
                torch.from_numpy(values),
                (rows, dim),
                check_invariants=False,
            )

            def torch_step(coo=coo):
                weight.grad = coo
                torch_opt.step()

            cases[f"torch {f:g}"] = torch_step
    for step in cases.values():  # warm-up: state allocated, pages touched
        step()
        step()
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            settled = time.perf_counter() + args.settle
            cases[name]()
            while time.perf_counter() < settled:
                cases[name]()
            times[name].append(_timed(cases[name]))

    def ms(name: str) -> str:
        return f"{1e3 * statistics.median(times[name]):9.3f} ms"

    def ratio(slow: str, fast: str) -> float:
        return statistics.median(a / b for a, b in zip(times[slow], times[fast]))

    threads = radam.num_threads()
    where = f"on {gpu.adapter_name()}" if device == "gpu" else f"{threads} radam threads"
    print(f"table {rows} x {dim} float32, {where}, {args.repeats} repeats")
    print(f"load average before/after: {os.getloadavg()}")
    print(f"dense radam step: {ms('dense')}")
    if device == "gpu":
        print(f"dense kernel (grad on the device, no readback): {ms('dense kernel')}")
    for f in fractions:
        lazy_name = f"radam {f:g}"
        line = (
            f"rows {f:6.1%}: radam {ms(lazy_name)}  dense/radam {ratio('dense', lazy_name):7.1f}x"
        )
        if device == "gpu":
            line += f"  dense kernel/radam {ratio('dense kernel', lazy_name):6.1f}x"
        if torch is not None:
            line += (
                f"  torch SparseAdam {ms(f'torch {f:g}')}"
                f"  torch/radam {ratio(f'torch {f:g}', lazy_name):6.1f}x"
            )
        print(line)


if __name__ == "__main__":
    main()
