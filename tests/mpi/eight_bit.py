"""ShardedAdam with 8-bit state: shards cut on the state's 256-element blocks.

Every rank gets the same gradients, so with 2 ranks their average is exactly
that gradient and the sharded run must equal one process bit for bit; its
checkpoint, gathered to rank 0, must hold the single process's state bit for
bit and load back at any world size."""

from __future__ import annotations

import sys

import numpy as np
import radam
from mpi4py import MPI
from radam.distributed import ShardedAdam

comm = MPI.COMM_WORLD
k, rank = comm.Get_size(), comm.Get_rank()
# A tensor cut by every world size, small tensors beside it (float32 state), and one
# over 4096 elements of which a rank may hold fewer (it keeps the tensor's 8-bit state).
SHAPES = [(5000,), (30, 10), (9000,), (4100,)]
OPTIONS = {"lr": 1e-2, "state_dtype": "8bit", "amsgrad": True, "weight_decay": 0.01}


def params():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def grads(step):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


path = sys.argv[1]
ours, theirs = params(), params()
opt = ShardedAdam(ours, **OPTIONS)
ref = radam.Adam(theirs, **OPTIONS)
for step in range(10):
    opt.step(grads(step))
    ref.step(grads(step))
# Each rank's pieces of a tensor start on a block boundary of it.
for row in opt._pieces:
    assert all(start % 256 == 0 or n == 0 for start, n in row), row
total = comm.allreduce(opt.state_nbytes())
assert total == sum(a.nbytes for e in ref.state.values() for a in e.values())
opt.save(path)
if rank == 0:
    saved = radam.Adam(params(), **OPTIONS)
    saved.load(path)
    exact = k == 2  # the average of 2 equal gradients is that gradient
    for key in ref.state:
        for name, array in ref.state[key].items():
            got = saved.state[key][name]
            assert got.dtype == array.dtype and got.shape == array.shape, name
            if exact:
                assert got.tobytes() == array.tobytes(), (key, name)
    if exact:
        for a, b in zip(ours, theirs):
            assert a.tobytes() == b.tobytes()
# The file loads back into the shards and the run goes on in step with one process.
opt.load(path)
for step in range(10, 13):
    opt.step(grads(step))
    ref.step(grads(step))
if k == 2:
    for a, b in zip(ours, theirs):
        assert a.tobytes() == b.tobytes()
print("eight-bit OK")
