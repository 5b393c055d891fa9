"""Data-parallel Adam over MPI: sharded optimizer state (ZeRO stage 1) or plain averaging.

Launch one process per rank (``mpiexec -n 4 python train.py``); every rank
builds the optimizer over its own copy of the same params, computes gradients
on its part of the batch, and calls ``step(grads)``. Needs mpi4py and an MPI
library: ``pip install "radam[mpi]"`` and, on Debian/Ubuntu, ``apt-get install
openmpi-bin libopenmpi-dev``.

:class:`ShardedAdam` (ZeRO stage 1). Every rank holds the full params; the
optimizer state is split into k balanced shards over ONE flat index space
that runs through all tensors in order (tensors of one dtype are contiguous in
it; a shard may start or end inside a tensor, and with more ranks than
elements a shard is empty). A step:

1. copies the grads into a flat buffer (allocated once, at construction);
2. ``Reduce_scatter`` sums it across ranks into this rank's shard, which is
   divided by k (the average gradient);
3. the Rust kernel steps this rank's shard: a :class:`radam.Adam` (or the
   variant given as ``optimizer=``) built over 1-D views of the params' pieces
   in the shard, so its state is exactly the shard's;
4. ``Allgatherv`` (in place, in the same flat buffer) brings every rank's
   updated piece, copied back into the params.

Per step a rank sends about 2(k-1)/k of the param bytes (ring algorithms) and
allocates nothing of param size. Per-tensor norm clipping
(``max_gradient_norm``) is exact: the shard's partial sums of squares are
summed across ranks (one small ``Allreduce``) and the clip factor applied
before the kernel. ``skip_nonfinite`` is agreed across ranks (one tiny
``Allreduce``): if any rank's shard of the average holds a NaN or Inf, every
rank skips the step.

:class:`AveragedAdam` is plain data parallelism (PuzzleLib's ``nodeinfo``):
params broadcast from rank 0 at construction, gradients averaged with one
``Allreduce`` per dtype before every update, the full state on every rank.
It sends about twice what ``ShardedAdam`` sends with ring all-reduce (the
same 2(k-1)/k) but keeps k times the state.

Both take the variant as a class, ``optimizer=radam.NAdam`` (default
:class:`radam.Adam`), and any option of that class as keywords.

**Consistency and failures.** Construction checks that every rank has the
same number of params, shapes, dtypes, groups and options; a mismatch raises
the same ``ValueError`` on every rank (nothing hangs). ``step`` checks the
grads locally, then all ranks agree (one 1-int ``Allreduce``) before any data
moves: a bad grad on one rank raises there and a ``RuntimeError`` naming that
rank on the others, with params and state untouched everywhere. Only where a
hang is possible, an exception inside the collective part of a step or a
checkpoint (between two collectives, so other ranks would wait forever),
the rank prints the traceback and calls ``comm.Abort(1)``, ending the job.
Exceptions in your own code between steps are yours: run the script with
``python -m mpi4py train.py`` so that an uncaught exception aborts the job.

Checkpoints: :meth:`ShardedAdam.save` gathers the state to rank 0, which
writes one file (atomically, :mod:`radam.checkpoint`) exactly as a
single-process optimizer over the same params would: it loads into
``radam.Adam``, and into a ``ShardedAdam`` of any world size
(:meth:`ShardedAdam.load`: rank 0 reads it and scatters each rank's shard).
The path is rank 0's; only rank 0 touches the file system.
"""

from ._averaged import AveragedAdam
from ._common import MPI_EXTRA
from ._sharded import ShardedAdam

__all__ = ["MPI_EXTRA", "AveragedAdam", "ShardedAdam"]
