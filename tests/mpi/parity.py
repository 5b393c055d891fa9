"""ShardedAdam and AveragedAdam against single-process radam.Adam on the averaged grad."""

from __future__ import annotations

import sys

import numpy as np
import radam
from common import SHAPES, assert_close, averaged, init_params, rank_grads
from mpi4py import MPI
from radam.distributed import AveragedAdam, ShardedAdam

comm = MPI.COMM_WORLD
k, rank = comm.Get_size(), comm.Get_rank()
STEPS = 100

CASES = [
    (radam.Adam, {"lr": 1e-2}),
    (radam.Adam, {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1, "max_gradient_norm": 0.5}),
    (
        radam.Adam,
        {
            "lr": 1e-2,
            "decoupled_weight_decay": True,
            "weight_decay": 0.1,
            "momentum": 0.5,
            "nesterov": True,
            "max_gradient_elem": 0.8,
        },
    ),
    (radam.Adam, {"lr": 1e-2, "efficient_form": True, "maximize": True, "grad_scale": 4.0}),
    (radam.NAdam, {"lr": 1e-2}),
    (radam.RAdam, {"lr": 1e-2, "weight_decay": 0.01}),
    (radam.Adamax, {"lr": 1e-2, "max_gradient_norm": 1.0}),
    (radam.Adam, {"lr": 1e-2, "state_dtype": "bfloat16"}),
]
if len(sys.argv) > 1 and sys.argv[1] == "quick":
    CASES = CASES[:2]

for cls in (ShardedAdam, AveragedAdam):
    for opt_class, options in CASES:
        params, ref_params = init_params(), init_params()
        opt = cls(params, optimizer=opt_class, **options)
        ref = opt_class(ref_params, **options)
        for step in range(STEPS):
            opt.step(rank_grads(step, rank))
            ref.step(averaged(step, k))
        assert_close(params, ref_params, f"{cls.__name__} {opt_class.__name__} {options}")
        assert opt.step_count == STEPS
        # every rank holds the same params
        everyone = comm.allgather([p.copy() for p in params])
        for other in everyone:
            for a, b in zip(other, params):
                assert np.array_equal(a, b), "ranks disagree on the params"
        if cls is ShardedAdam:
            # each rank holds about 1/k of the state, measured in bytes
            full = sum(a.nbytes for e in ref.state.values() for a in e.values())
            mine = opt.state_nbytes()
            total = comm.allreduce(mine)
            assert total == full, (total, full)
            per_elem = full // sum(int(np.prod(s)) for s in SHAPES)
            n = sum(int(np.prod(s)) for s in SHAPES)
            assert mine <= -(-n // k) * per_elem, (mine, n, k)
            assert mine >= (n // k) * per_elem, (mine, n, k)

# dict params
names = [f"w{i}" for i in range(len(SHAPES))]
for cls in (ShardedAdam, AveragedAdam):
    params = dict(zip(names, init_params()))
    ref_params = dict(zip(names, init_params()))
    opt, ref = cls(params, lr=1e-2), radam.Adam(ref_params, lr=1e-2)
    for step in range(20):
        opt.step(dict(zip(names, rank_grads(step, rank))))
        ref.step(dict(zip(names, averaged(step, k))))
    assert_close(list(params.values()), list(ref_params.values()), f"{cls.__name__} dict")

# mixed dtypes (float32 and float64 tensors) in named groups, and skip_nonfinite
params = {"a": init_params()[0], "b": init_params(np.float64)[1]}
ref_params = {"a": params["a"].copy(), "b": params["b"].copy()}
groups = [{"params": {"a": params["a"]}, "lr": 3e-2}, {"params": {"b": params["b"]}}]
ref_groups = [{"params": {"a": ref_params["a"]}, "lr": 3e-2}, {"params": {"b": ref_params["b"]}}]
opt = ShardedAdam(groups, lr=1e-2, skip_nonfinite=True)
ref = radam.Adam(ref_groups, lr=1e-2, skip_nonfinite=True)
for step in range(30):
    g = rank_grads(step, rank)
    grads = [{"a": g[0]}, {"b": g[1].astype(np.float64)}]
    if step == 7 and rank == k - 1:
        grads[1]["b"][0] = np.nan
    avg = averaged(step, k)
    opt.step(grads)
    if step != 7:
        ref.step([{"a": avg[0]}, {"b": averaged(step, k, np.float64)[1]}])
assert opt.skipped_steps == 1 and opt.step_count == 29, (opt.skipped_steps, opt.step_count)
assert_close([params["a"], params["b"]], [ref_params["a"], ref_params["b"]], "mixed dtypes")
print(f"rank {rank}: parity OK")

# radam.compat.puzzlelib with nodeinfo: params broadcast from rank 0, grads averaged.
from radam.compat import puzzlelib  # noqa: E402


class Net:
    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.params = {
            f"w{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(SHAPES)
        }
        self.grads = {n: np.zeros_like(p) for n, p in self.params.items()}


for global_state in (False, True):
    net, ref_net = Net(rank), Net(0)  # rank 0's params win
    opt = puzzlelib.Adam(alpha=1e-2, nodeinfo=comm)
    ref = puzzlelib.Adam(alpha=1e-2)
    opt.setupOn(net, useGlobalState=global_state)
    ref.setupOn(ref_net, useGlobalState=global_state)
    for step in range(30):
        for g, a in zip(net.grads.values(), rank_grads(step, rank)):
            g[...] = a
        for g, a in zip(ref_net.grads.values(), averaged(step, k)):
            g[...] = a
        opt.update()
        ref.update()
    assert opt.t == 30
    assert_close(list(net.params.values()), list(ref_net.params.values()), "puzzlelib nodeinfo")
print(f"rank {rank}: puzzlelib nodeinfo OK")
