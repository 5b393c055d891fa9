"""checkpoint.py save PATH OUT | load PATH OUT: save after 10 steps and record the next
10 steps' params; or load at this world size and record the same 10 steps."""

from __future__ import annotations

import sys

import numpy as np
import radam
from common import init_params, rank_grads
from mpi4py import MPI
from radam.distributed import ShardedAdam

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
mode, path, out = sys.argv[1:4]
OPTIONS = {"lr": 1e-2, "weight_decay": 0.01, "max_gradient_norm": 2.0}
# Every rank gets the same grads, so the average is the same at every world size.
params = init_params() if mode == "save" else [np.zeros_like(p) for p in init_params()]
opt = ShardedAdam(params, optimizer=radam.NAdam, **OPTIONS)
if mode == "save":
    for step in range(10):
        opt.step(rank_grads(step, 0))
    opt.save(path)
else:
    opt.load(path)
    assert opt.step_count == 10
trajectory = []
for step in range(10, 20):
    opt.step(rank_grads(step, 0))
    trajectory.append([p.copy() for p in params])
if rank == 0:
    np.savez(out, *[p for snap in trajectory for p in snap])
print(f"rank {rank}: {mode} OK")
