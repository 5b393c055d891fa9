"""``mpiexec -n 3 python -m mpi4py -m radam demo --data-parallel``: the demo's MLP
trained data parallel with :class:`radam.distributed.ShardedAdam` (each rank takes its
slice of every mini-batch and holds 1/k of the optimizer state), checked against one
process with ``radam.Adam`` on the whole batch. Needs the ``demo`` and ``mpi`` extras.

``python -m mpi4py`` makes an uncaught exception on any rank abort the whole job
(without it, the other ranks would wait for that one in a collective forever). Open
MPI also needs ``--oversubscribe`` for more ranks than cores, and
``--allow-run-as-root`` as root.
"""

from __future__ import annotations

import time

import numpy as np

import radam


def main(epochs: int, batch_size: int, seed: int) -> int:
    from mpi4py import MPI

    from radam.demo import MODELS, epochs_of_batches, load_data
    from radam.distributed import ShardedAdam

    comm = MPI.COMM_WORLD
    rank, k = comm.Get_rank(), comm.Get_size()
    data = load_data(seed)
    model = MODELS[-1]
    n, d = data.x_train.shape
    classes = int(data.y_train.max()) + 1
    init = model.init(np.random.default_rng(seed), d, classes)
    params = {name: a.copy() for name, a in init.items()}
    single = {name: a.copy() for name, a in init.items()}
    opt = ShardedAdam(params, lr=1e-2)
    ref = radam.Adam(single, lr=1e-2) if rank == 0 else None
    start = time.perf_counter()
    for batches in epochs_of_batches(n, epochs, batch_size, seed):
        for idx in batches:
            mine = np.array_split(idx, k)[rank]  # this rank's slice of the batch
            # Weight each slice's mean by its share, so the average over ranks is the batch mean.
            _, grads = model.loss_and_grads(params, data.x_train[mine], data.y_train[mine])
            share = k * len(mine) / len(idx)
            opt.step({name: (g * share).astype(g.dtype) for name, g in grads.items()})
            if ref is not None:
                _, full = model.loss_and_grads(single, data.x_train[idx], data.y_train[idx])
                ref.step(full)
    seconds = time.perf_counter() - start
    if rank == 0:
        loss = model.loss_and_grads(params, data.x_train, data.y_train)[0]
        acc = float((model.logits(params, data.x_test).argmax(axis=1) == data.y_test).mean())
        gap = max(float(np.max(np.abs(params[p] - single[p]))) for p in params)
        print(
            f"data parallel on {k} ranks ({model.name}, ShardedAdam, {epochs} epochs, "
            f"{seconds:.1f} s): train loss {loss:.4f}, test accuracy {acc:.3f}; "
            f"state per rank {opt.state_nbytes() / 1e3:.1f} kB; largest difference from "
            f"one process with radam.Adam: {gap:.2e}"
        )
    return 0
