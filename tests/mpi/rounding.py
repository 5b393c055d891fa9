"""Stochastic rounding under ShardedAdam and AveragedAdam: bit for bit the params
of single-process radam.Adam. Every rank passes the same grads, so their average
is exact, and each element's random bits hash its place in the whole tensor,
wherever the shard boundaries fall."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import radam
from common import init_params, rank_grads
from mpi4py import MPI
from radam.distributed import AveragedAdam, ShardedAdam

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
STEPS = 20

for dtype in (ml_dtypes.bfloat16, np.float16):
    options = {"lr": 1e-3, "stochastic_rounding": True, "rounding_seed": 2**40 + 3}
    reference = init_params(dtype)
    single = radam.Adam([{"params": reference[:2]}, {"params": reference[2:]}], **options)
    for cls in (ShardedAdam, AveragedAdam):
        params = init_params(dtype)
        opt = cls([{"params": params[:2]}, {"params": params[2:]}], comm, **options)
        for step in range(STEPS):
            grads = rank_grads(step, 0, dtype)  # the same on every rank
            opt.step([grads[:2], grads[2:]])
            if cls is ShardedAdam:
                single.step([grads[:2], grads[2:]])
        for i, (p, q) in enumerate(zip(params, reference)):
            assert np.array_equal(p.view(np.uint16), q.view(np.uint16)), (cls.__name__, i)
        # The rounding did something a round to nearest would not.
        nearest = init_params(dtype)
        plain = radam.Adam(nearest, lr=1e-3)
        for step in range(STEPS):
            plain.step(rank_grads(step, 0, dtype))
        assert any(not np.array_equal(p, q) for p, q in zip(params, nearest))
print("rounding OK")
