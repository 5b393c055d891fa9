"""failures.py CASE: mismatched params across ranks, a bad (or None) grad on one rank, a failure
inside a step (which must abort the job), an error in user code between steps (which
ends the job when run as ``python -m mpi4py failures.py``)."""

from __future__ import annotations

import sys

import numpy as np
from mpi4py import MPI
from radam.distributed import AveragedAdam, ShardedAdam

comm = MPI.COMM_WORLD
rank, k = comm.Get_rank(), comm.Get_size()
case = sys.argv[1]
last = rank == k - 1


def expect(error: type, words: list[str], fn) -> None:
    try:
        fn()
    except error as err:
        message = str(err)
        assert all(w in message for w in words), (words, message)
        print(f"rank {rank}: {case} raised {error.__name__}: {message}", flush=True)
        return
    raise AssertionError(f"rank {rank}: {case} did not raise")


if case == "shape":
    params = [np.zeros(3, np.float32), np.zeros((4, 5) if last else (4, 4), np.float32)]
    expect(ValueError, ["params[1]", "shape", f"rank {k - 1}"], lambda: ShardedAdam(params))
elif case == "count":
    params = [np.zeros(3, np.float32)] * 1 + ([np.zeros(2, np.float32)] if last else [])
    expect(ValueError, ["params", f"rank {k - 1} has 2 params"], lambda: ShardedAdam(params))
elif case == "dtype":
    params = [np.zeros(3, np.float64 if last else np.float32)]
    expect(ValueError, ["params[0]", "float64"], lambda: ShardedAdam(params))
elif case == "option":  # a bad option on one rank only: every rank raises
    if last:
        expect(ValueError, ["lr"], lambda: ShardedAdam([np.zeros(3, np.float32)], lr=-1.0))
    else:
        expect(RuntimeError, [f"rank {k - 1}"], lambda: ShardedAdam([np.zeros(3, np.float32)]))
elif case == "grad":  # a bad grad on one rank: it raises ValueError, the others RuntimeError
    p = np.ones(6, np.float32)
    opt = ShardedAdam([p])
    g = np.ones(5 if last else 6, np.float32)
    expect(
        ValueError if last else RuntimeError,
        ["grads[0]" if last else "rank"],
        lambda: opt.step([g]),
    )
    assert opt.step_count == 0 and np.all(p == 1) and not opt.state
    opt.step([np.ones(6, np.float32)])  # and the job goes on
    assert opt.step_count == 1
elif case == "none-grad":  # a None grad on one rank (radam.Adam skips it; here it is refused)
    p = np.ones(6, np.float32)
    opt = ShardedAdam([p, np.ones(3, np.float32)])
    g = None if last else np.ones(6, np.float32)
    expect(
        TypeError if last else RuntimeError,
        ["grads[0] is None", "not supported"] if last else ["rank"],
        lambda: opt.step([g, np.ones(3, np.float32)]),
    )
    assert opt.step_count == 0 and np.all(p == 1) and not opt.state
elif case == "abort":  # an error between collectives: the job must end, not hang
    opt = ShardedAdam([np.ones(10, np.float32)])
    if last:

        def broken(grads):
            raise MemoryError("injected failure inside the step")

        opt.optimizer.step = broken
    opt.step([np.ones(10, np.float32)])
    print(f"rank {rank}: step returned", flush=True)
    comm.Barrier()
elif case in ("load-readonly", "load-option"):
    # AveragedAdam.load that the last rank cannot take: every rank raises, none
    # changes (it used to apply on rank 0 first, then abort the job).
    p = np.ones(6, np.float32)
    opt = AveragedAdam([p])
    opt.step([np.ones(6, np.float32)])
    opt.save(sys.argv[2])
    opt.step([np.full(6, 2.0, np.float32)])
    if last and case == "load-readonly":
        p.flags.writeable = False
    if last and case == "load-option":
        opt.param_groups[0]["lr_typo"] = 1e-3
    kept = (p.copy(), {n: a.copy() for n, a in opt.optimizer.state[0].items()})
    expect(
        ValueError if last else RuntimeError,
        ["read-only" if case == "load-readonly" else "lr_typo"] if last else [f"rank {k - 1}"],
        lambda: opt.load(sys.argv[2]),
    )
    assert opt.step_count == 2 and p.tobytes() == kept[0].tobytes()
    for n, a in opt.optimizer.state[0].items():
        assert a.tobytes() == kept[1][n].tobytes(), n
    p.flags.writeable = True
    opt.param_groups[0].pop("lr_typo", None)
    opt.load(sys.argv[2])  # fixed: it loads on every rank
    assert opt.step_count == 1
elif case in ("user-raise", "user-exit"):  # an error in the user's code, not in radam
    opt = ShardedAdam([np.ones(10, np.float32)])
    opt.step([np.ones(10, np.float32)])
    print(f"rank {rank}: first step done", flush=True)
    if last:
        if case == "user-exit":
            sys.exit(3)
        raise ValueError("injected error in user code")
    opt.step([np.ones(10, np.float32)])  # waits in a collective for the last rank
    print(f"rank {rank}: second step returned", flush=True)
print(f"rank {rank}: done", flush=True)
