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

from __future__ import annotations

import pickle
import sys
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._params import HALF_DTYPES, Layout, flatten_grads, layout_of
from .optimizer import Adam

MPI_EXTRA = 'pip install "radam[mpi]"'
_KEEP_LOCAL = "<radam.distributed: this rank's own value>"


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise ImportError(
            "radam.distributed needs mpi4py and an MPI library: "
            f"{MPI_EXTRA} (and e.g. apt-get install openmpi-bin libopenmpi-dev)"
        ) from err
    return MPI


def _mpi_type(MPI: Any, dtype: np.dtype) -> Any:  # noqa: N803
    if dtype == np.float32:
        return MPI.FLOAT
    if dtype == np.float64:
        return MPI.DOUBLE
    if dtype.itemsize == 2:  # float16, bfloat16: moved, never summed
        return MPI.UINT16_T
    raise TypeError(f"no MPI type for {dtype}")


def _raw(array: np.ndarray) -> np.ndarray:
    """A view MPI can name: 16-bit floats as uint16."""
    return array.view(np.uint16) if array.dtype in HALF_DTYPES else array


def _comm_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype gradients are summed in: float64 for float64 params, else float32."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


@dataclass
class _Bucket:
    """The tensors of one param dtype: a contiguous run [start, stop) of the flat space."""

    dtype: np.dtype
    start: int
    stop: int
    tensors: list[int]
    grads: np.ndarray  # flat, in _comm_dtype: grads in, (same-dtype) params out
    params: np.ndarray  # flat param-dtype buffer for the all-gather (``grads`` when it can)


def _make_buckets(layout: Layout) -> tuple[list[_Bucket], list[int]]:
    """Buckets by dtype (in first-seen order) and each tensor's offset in the flat space."""
    dtypes: list[np.dtype] = []
    for t in layout.tensors:
        if t.array.dtype not in dtypes:
            dtypes.append(t.array.dtype)
    offsets = [0] * len(layout.tensors)
    buckets, position = [], 0
    for dtype in dtypes:
        members = [i for i, t in enumerate(layout.tensors) if t.array.dtype == dtype]
        start = position
        for i in members:
            offsets[i] = position
            position += layout.tensors[i].array.size
        grads = np.zeros(position - start, _comm_dtype(dtype))
        params = grads if _comm_dtype(dtype) == dtype else np.zeros(position - start, dtype)
        buckets.append(_Bucket(dtype, start, position, members, grads, params))
    return buckets, offsets


def _views(buckets: list[_Bucket], offsets: list[int], layout: Layout, which: str) -> list:
    """Each tensor's shaped view of its bucket's ``grads`` or ``params`` buffer."""
    views = []
    for i, t in enumerate(layout.tensors):
        bucket = next(b for b in buckets if i in b.tensors)
        flat = getattr(bucket, which)
        start = offsets[i] - bucket.start
        views.append(flat[start : start + t.array.size].reshape(t.array.shape))
    return views


def _as_grads(layout: Layout, grads: list[np.ndarray]) -> Any:
    """Flat grads in the structure ``radam.Adam.step`` takes for this layout."""
    if layout.kind == "dict":
        return {t.name: g for t, g in zip(layout.tensors, grads)}
    return grads


def _structure(params: Any, pieces: list[np.ndarray], layout: Layout) -> Any:
    """``params``' structure (list, dict or group dicts) with ``pieces`` in place of the arrays."""
    if layout.kind == "list":
        return list(pieces)
    if layout.kind == "dict":
        return {t.name: p for t, p in zip(layout.tensors, pieces)}
    groups = []
    for gi, group in enumerate(params):
        members = [(t, p) for t, p in zip(layout.tensors, pieces) if t.group == gi]
        named = all(t.name is not None for t, _ in members)
        arrays = {t.name: p for t, p in members} if named else [p for _, p in members]
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": arrays})
    return groups


def _portable(value: Any) -> Any:
    """``value`` if it pickles, else a marker: the receiving rank keeps its own."""
    try:
        pickle.dumps(value)
    except Exception:
        return _KEEP_LOCAL
    return value


def _portable_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: _portable(v) for k, v in g.items()} for g in groups]


def _local_groups(groups: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[dict]:
    return [
        {k: (o.get(k) if v == _KEEP_LOCAL else v) for k, v in g.items()}
        for g, o in zip(groups, ours)
    ]


def _signature(opt: Adam, layout: Layout) -> Any:
    """What must be equal on every rank: structure, shapes, dtypes, options."""
    groups = []
    for g in opt.param_groups:
        groups.append(
            sorted(
                (k, repr(v) if not callable(v) else "<callable>")
                for k, v in g.items()
                if k not in ("params", "param_names")
            )
        )
    tensors = [(t.label, t.array.shape, t.array.dtype.str, t.group) for t in layout.tensors]
    return {"optimizer": type(opt).__name__, "tensors": tensors, "groups": groups}


def _describe_difference(mine: Any, theirs: Any, rank: int) -> str:
    if mine["optimizer"] != theirs["optimizer"]:
        return f"rank {rank} uses {mine['optimizer']}, rank 0 uses {theirs['optimizer']}"
    a, b = mine["tensors"], theirs["tensors"]
    if len(a) != len(b):
        return f"rank {rank} has {len(a)} params, rank 0 has {len(b)}"
    for (label, shape, dtype, group), (label0, shape0, dtype0, group0) in zip(a, b):
        if (label, group) != (label0, group0):
            return f"rank {rank} has params{label} where rank 0 has params{label0}"
        if shape != shape0 or dtype != dtype0:
            return (
                f"params{label} has shape {shape} and dtype {np.dtype(dtype)} on rank {rank}, "
                f"shape {shape0} and dtype {np.dtype(dtype0)} on rank 0"
            )
    if mine["options"] != theirs["options"]:
        diff = sorted({k for k, _ in set(mine["options"]) ^ set(theirs["options"])})
        return f"options {diff} differ between rank {rank} and rank 0"
    for gi, (g, g0) in enumerate(zip(mine["groups"], theirs["groups"])):
        if g != g0:
            diff = sorted({k for k, _ in set(g) ^ set(g0)})
            return f"param group {gi}'s options {diff} differ between rank {rank} and rank 0"
    return f"rank {rank} differs from rank 0"


class _DataParallel:
    """What both modes share: the communicator, the agreement on errors, the
    consistency check and broadcast at construction."""

    def __init__(self, comm: Any) -> None:
        MPI = _mpi()  # noqa: N806
        if comm is None:
            comm = MPI.COMM_WORLD
        if not isinstance(comm, MPI.Intracomm):
            raise TypeError(f"comm must be an mpi4py intracommunicator, got {type(comm).__name__}")
        self._MPI = MPI
        # A private duplicate: radam's messages never mix with the caller's.
        self.comm = comm.Dup()
        self.rank = self.comm.Get_rank()
        self.world_size = self.comm.Get_size()
        self._flag = np.zeros(1, np.int64)
        self._lock = threading.Lock()

    # -- agreement: every rank raises, or none does
    def _agree(self, error: BaseException | None, what: str) -> None:
        """One tiny Allreduce: if any rank failed, every rank raises (its own
        error, or a RuntimeError naming the ranks that failed)."""
        self._flag[0] = 1 if error is not None else 0
        self.comm.Allreduce(self._MPI.IN_PLACE, self._flag, op=self._MPI.MAX)
        if not self._flag[0]:
            return
        messages = self.comm.allgather(
            None if error is None else f"{type(error).__name__}: {error}"
        )
        if error is not None:
            raise error
        failed = [(r, m) for r, m in enumerate(messages) if m is not None]
        detail = "; ".join(f"rank {r}: {m}" for r, m in failed)
        raise RuntimeError(f"{what} failed on another rank ({detail}); nothing changed here")

    @contextmanager
    def _collective(self, what: str):
        """Code between collectives: an exception here would leave the other
        ranks waiting forever, so it aborts the job instead."""
        try:
            yield
        except BaseException:
            sys.stderr.write(
                f"radam.distributed: rank {self.rank} failed during {what}; "
                "aborting the MPI job (other ranks would wait forever)\n"
            )
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            self.comm.Abort(1)
            raise  # not reached

    def _root_result(self, fn: Any, what: str) -> Any:
        """Run ``fn`` on rank 0 only; every rank gets its result or raises its error."""
        result, error = None, None
        if self.rank == 0:
            try:
                result = fn()
            except Exception as err:
                error = err
        outcome = self.comm.bcast(None if error is None else _picklable_error(error), root=0)
        if outcome is not None:
            raise error if error is not None else outcome
        return result

    def _check_same(self, build: Any, layout_params: Any, options: dict) -> tuple[Any, Layout]:
        """Build this rank's optimizer and check that all ranks agree (every rank
        raises the same error otherwise)."""
        opt, layout, error, sig = None, None, None, None
        try:
            layout, _ = layout_of(layout_params)
            opt = build(layout)
            sig = _signature(opt, layout)
            sig["options"] = sorted(
                (k, "<callable>" if callable(v) else repr(v)) for k, v in options.items()
            )
        except Exception as err:
            error = err
        self._agree(error, "building the optimizer")
        signatures = self.comm.allgather(sig)
        for r, s in enumerate(signatures):
            if s != signatures[0]:
                raise ValueError(
                    "params (or options) must be the same on every rank: "
                    + _describe_difference(s, signatures[0], r)
                )
        return opt, layout

    def _broadcast_params(self, layout: Layout) -> None:
        with self._collective("the broadcast of the params"):
            for t in layout.tensors:
                self.comm.Bcast(_raw(t.array.reshape(-1)), root=0)

    def _check_grads(self, layout: Layout, grads: Any) -> list[np.ndarray]:
        if grads is None:
            raise TypeError("grads is None: pass the gradients, with the structure of params")
        flat = flatten_grads(layout, grads)
        for t, g in zip(layout.tensors, flat):
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads{t.label} must be a numpy.ndarray, got {type(g).__name__}")
            if g.shape != t.array.shape or g.dtype != t.array.dtype:
                raise ValueError(
                    f"grads{t.label} has shape {g.shape} and dtype {g.dtype}; params{t.label} "
                    f"has shape {t.array.shape} and dtype {t.array.dtype}"
                )
        return flat


def _picklable_error(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _check_optimizer(optimizer: Any) -> None:
    if not (isinstance(optimizer, type) and issubclass(optimizer, Adam)):
        raise TypeError(
            "optimizer must be radam.Adam or one of its variants (a class, e.g. radam.NAdam), "
            f"got {optimizer!r}"
        )


class AveragedAdam(_DataParallel):
    """Plain data-parallel Adam (PuzzleLib's ``nodeinfo``): the params are
    broadcast from rank 0 at construction, the gradients averaged across ranks
    (one in-place ``Allreduce`` per dtype into buffers allocated once) before
    every update, and every rank steps the full state.

    ``optimizer`` is the variant's class (default :class:`radam.Adam`);
    ``**options`` are its keyword options. ``opt.optimizer`` is the local
    optimizer (its ``param_groups``, ``state``, ``state_dict`` are usable as
    usual; they are the same on every rank).
    """

    def __init__(
        self,
        params: Any,
        comm: Any = None,
        *,
        optimizer: type = Adam,
        broadcast_params: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(comm)

        def build(layout: Layout) -> Adam:
            _check_optimizer(optimizer)
            return optimizer(params, **options)

        self.optimizer, layout = self._check_same(build, params, options)
        self._layout = layout
        self._buckets, offsets = _make_buckets(layout)
        self._pack = _views(self._buckets, offsets, layout, "grads")
        self._grad_views = []
        self._casts: list[tuple[np.ndarray, np.ndarray]] = []
        for t, view in zip(layout.tensors, self._pack):
            if view.dtype != t.array.dtype:  # 16-bit params: averaged in float32, cast once
                half = np.zeros(t.array.shape, t.array.dtype)
                self._casts.append((view, half))
                view = half
            self._grad_views.append(view)
        if broadcast_params:
            self._broadcast_params(layout)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def step_count(self) -> int:
        return self.optimizer.step_count

    def step(self, grads: Any) -> None:
        """Average ``grads`` across ranks, then one step of the local optimizer."""
        with self._lock:
            error, flat = None, None
            try:
                flat = self._check_grads(self._layout, grads)
            except Exception as err:
                error = err
            self._agree(error, "step")
            with self._collective("step"):
                inv = 1.0 / self.world_size
                for view, grad in zip(self._pack, flat):
                    np.copyto(view, grad)
                for bucket in self._buckets:
                    self.comm.Allreduce(self._MPI.IN_PLACE, bucket.grads, op=self._MPI.SUM)
                    np.multiply(bucket.grads, inv, out=bucket.grads)
                for source, half in self._casts:
                    np.copyto(half, source, casting="unsafe")
                self.optimizer.step(_as_grads(self._layout, self._grad_views))

    def save(self, path: Any, *, include_params: bool = True) -> None:
        """Rank 0 writes the checkpoint (the state is the same on every rank)."""
        self._root_result(lambda: self.optimizer.save(path, include_params=include_params), "save")

    def load(self, path: Any, *, restore_params: bool = True) -> None:
        """Rank 0 reads the checkpoint; every rank gets its state (and params)."""
        with self._lock:
            sd = self._root_result(
                lambda: (
                    self.optimizer.load(path, restore_params=restore_params),
                    self.optimizer.state_dict(),
                )[1],
                "load",
            )
            with self._collective("load"):
                sd = _bcast_state_dict(self, sd, self.optimizer)
                if self.rank != 0:
                    self.optimizer.load_state_dict(sd)
                if restore_params:
                    self._broadcast_params(self._layout)


def _bcast_state_dict(dp: _DataParallel, sd: Any, local: Adam) -> dict[str, Any]:
    """Rank 0's state_dict on every rank: the layout pickled, the arrays by Bcast."""
    if dp.rank == 0:
        shapes = {
            i: {
                k: ((v.shape, v.dtype.str) if isinstance(v, np.ndarray) else v)
                for k, v in e.items()
            }
            for i, e in sd["state"].items()
        }
        meta = {"state": shapes, "param_groups": _portable_groups(sd["param_groups"])}
    else:
        meta = None
    meta = dp.comm.bcast(meta, root=0)
    state = {}
    for i, entry in meta["state"].items():
        out = {}
        for k, v in entry.items():
            if isinstance(v, tuple):
                array = sd["state"][i][k] if dp.rank == 0 else np.empty(v[0], np.dtype(v[1]))
                dp.comm.Bcast(_raw(array.reshape(-1)), root=0)
                out[k] = array
            else:
                out[k] = v
        state[i] = out
    groups = _local_groups(meta["param_groups"], local.param_groups)
    return {"state": state, "param_groups": groups}


def _shard_range(numel: int, world_size: int, rank: int) -> tuple[int, int]:
    """Rank ``rank``'s part [lo, hi) of ``numel`` elements: sizes differ by at most one."""
    return rank * numel // world_size, (rank + 1) * numel // world_size


class ShardedAdam(_DataParallel):
    """Adam with its state sharded across MPI ranks (ZeRO stage 1); see the module doc.

    ``params`` as for :class:`radam.Adam` (list, dict or group dicts), the same
    on every rank (checked; broadcast from rank 0 unless
    ``broadcast_params=False``). ``comm`` defaults to ``MPI.COMM_WORLD``.
    ``optimizer`` is the variant's class (:class:`radam.Adam` by default,
    e.g. ``radam.NAdam``); ``**options`` are its keyword options, all
    supported (``device`` must stay ``"cpu"``).

    ``step(grads)`` takes this rank's gradients, averages them across ranks
    and updates every rank's params in place. ``opt.optimizer`` is the local
    optimizer over this rank's shard: ``param_groups`` (change lr etc. there,
    identically on every rank), ``state`` (the shard's state, 1-D arrays).
    ``save``/``load`` are collective: call them on every rank.
    """

    def __init__(
        self,
        params: Any,
        comm: Any = None,
        *,
        optimizer: type = Adam,
        broadcast_params: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(comm)
        self._optimizer_class = optimizer
        self._params = params
        self._options = dict(options)
        k, rank = self.world_size, self.rank

        def build(layout: Layout) -> Adam:
            _check_optimizer(optimizer)
            if options.get("device", "cpu") != "cpu":
                raise ValueError(
                    f"device must be 'cpu' for ShardedAdam, got {options['device']!r} "
                    "(use AveragedAdam to train on a GPU with plain averaging)"
                )
            skip = options.get("skip_nonfinite", False)
            if not isinstance(skip, bool):
                raise TypeError(f"skip_nonfinite must be True or False, got {skip!r}")
            self.skip_nonfinite = skip
            sizes = [t.array.size for t in layout.tensors]
            self.numel = sum(sizes)
            self._buckets, self._offsets = _make_buckets(layout)
            self.shard = _shard_range(self.numel, k, rank)
            # Each tensor's piece on each rank: (start within the tensor, size).
            self._pieces = []
            for i, size in enumerate(sizes):
                row = []
                for r in range(k):
                    lo, hi = _shard_range(self.numel, k, r)
                    a = min(max(self._offsets[i], lo), self._offsets[i] + size)
                    b = max(min(self._offsets[i] + size, hi), a)
                    row.append((a - self._offsets[i], b - a))
                self._pieces.append(row)
            pieces = [
                t.array.reshape(-1)[start : start + n]
                for t, (start, n) in zip(layout.tensors, (row[rank] for row in self._pieces))
            ]
            inner = {**options, "skip_nonfinite": False}  # agreed across ranks here instead
            return optimizer(_structure(params, pieces, layout), **inner)

        self.optimizer, layout = self._check_same(build, params, options)
        self._layout = layout
        self._setup_buffers()
        self.skipped_steps = 0
        self._sumsq = np.zeros(len(layout.tensors), np.float64)
        if broadcast_params:
            self._broadcast_params(layout)

    def _setup_buffers(self) -> None:
        MPI, k = self._MPI, self.world_size  # noqa: N806
        tensors = self._layout.tensors
        self._pack = _views(self._buckets, self._offsets, self._layout, "grads")
        self._gather = _views(self._buckets, self._offsets, self._layout, "params")
        ranges = [_shard_range(self.numel, k, r) for r in range(k)]
        self._grad_views: list[np.ndarray] = [None] * len(tensors)  # type: ignore[list-item]
        self._casts: list[tuple[np.ndarray, np.ndarray]] = []
        self._outgoing: list[tuple[np.ndarray, np.ndarray]] = []  # (buffer view, param piece)
        for b in self._buckets:
            local = [(max(lo, b.start), min(hi, b.stop)) for lo, hi in ranges]
            b.counts = [max(0, hi - lo) for lo, hi in local]
            b.displs = [min(lo, b.stop) - b.start for lo, _ in local]
            b.shard = np.zeros(b.counts[self.rank], b.grads.dtype)
            b.grad_type = _mpi_type(MPI, b.grads.dtype)
            b.param_type = _mpi_type(MPI, b.params.dtype)
            mine = self.rank
            for i in b.tensors:
                start, n = self._pieces[i][mine]
                at = self._offsets[i] + start - b.start - b.displs[mine]  # in the shard
                view = b.shard[at : at + n] if n else b.shard[:0]
                piece = tensors[i].array.reshape(-1)[start : start + n]
                if view.dtype != tensors[i].array.dtype:
                    half = np.zeros(n, tensors[i].array.dtype)
                    self._casts.append((view, half))
                    view = half
                self._grad_views[i] = view
                out = self._offsets[i] + start - b.start
                self._outgoing.append((b.params[out : out + n], piece))
        self._clips = any(
            not g.get("max_gradient_elem") and g.get("max_gradient_norm")
            for g in self.optimizer.param_groups
        )

    # -- what users read
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The local optimizer's groups (change options identically on every rank)."""
        return self.optimizer.param_groups

    @property
    def step_count(self) -> int:
        return self.optimizer.step_count

    @property
    def state(self) -> dict[Any, dict[str, np.ndarray]]:
        """This rank's shard of the state: 1-D arrays over the pieces it owns."""
        return self.optimizer.state

    def state_nbytes(self) -> int:
        """Bytes of optimizer state arrays held by this rank (about 1/k of the total)."""
        return sum(a.nbytes for e in self.optimizer.state.values() for a in e.values())

    def buffer_nbytes(self) -> int:
        """Bytes of the communication buffers, allocated once at construction."""
        total = 0
        for b in self._buckets:
            total += b.grads.nbytes + b.shard.nbytes
            total += 0 if b.params is b.grads else b.params.nbytes
        return total + sum(h.nbytes for _, h in self._casts)

    # -- the step
    def step(self, grads: Any) -> None:
        """Average ``grads`` across ranks, step this rank's shard, all-gather the params.
        Collective: call it on every rank."""
        with self._lock:
            error, flat = None, None
            try:
                flat = self._check_grads(self._layout, grads)
                self.optimizer._options()  # a bad option raises here, before any data moves
            except Exception as err:
                error = err
            self._agree(error, "step")
            with self._collective("step"):
                self._step(flat)

    def _step(self, flat: list[np.ndarray]) -> None:
        MPI, inv = self._MPI, 1.0 / self.world_size  # noqa: N806
        for view, grad in zip(self._pack, flat):
            np.copyto(view, grad)
        for b in self._buckets:
            self.comm.Reduce_scatter(
                [b.grads, b.grad_type], [b.shard, b.grad_type], b.counts, op=MPI.SUM
            )
            np.multiply(b.shard, inv, out=b.shard)
        if self.skip_nonfinite:
            bad = any(not np.isfinite(np.sum(b.shard, dtype=np.float64)) for b in self._buckets)
            self._flag[0] = int(bad)
            self.comm.Allreduce(MPI.IN_PLACE, self._flag, op=MPI.MAX)
            if self._flag[0]:
                self.skipped_steps += 1
                return
        saved_norms = self._clip_norms() if self._clips else {}
        for source, half in self._casts:
            np.copyto(half, source, casting="unsafe")
        try:
            self.optimizer.step(_as_grads(self._layout, self._grad_views))
        finally:
            for gi, value in saved_norms.items():
                self.optimizer.param_groups[gi]["max_gradient_norm"] = value
        for view, piece in self._outgoing:
            np.copyto(view, piece)
        for b in self._buckets:
            self.comm.Allgatherv(MPI.IN_PLACE, [b.params, b.counts, b.displs, b.param_type])
        for t, view in zip(self._layout.tensors, self._gather):
            np.copyto(t.array, view)

    def _clip_norms(self) -> dict[int, Any]:
        """Per-tensor norm clipping across shards: sum the pieces' squares over
        ranks, scale each piece as the kernel would scale the whole tensor, and
        turn the kernel's own clipping off for this step (returned: the values
        to restore)."""
        groups = self.optimizer.param_groups
        clipped = {
            gi
            for gi, g in enumerate(groups)
            if not g.get("max_gradient_elem") and g.get("max_gradient_norm")
        }
        if not clipped:
            return {}
        tensors = self._layout.tensors
        for i in range(len(tensors)):
            piece = self._float_piece(i)
            self._sumsq[i] = np.einsum("i,i->", piece, piece, dtype=np.float64) if piece.size else 0
        self.comm.Allreduce(self._MPI.IN_PLACE, self._sumsq, op=self._MPI.SUM)
        for i, t in enumerate(tensors):
            g = groups[t.group]
            if t.group not in clipped:
                continue
            norm = float(np.sqrt(self._sumsq[i])) / float(g.get("grad_scale", 1.0))
            limit = float(g["max_gradient_norm"])
            if norm > limit:
                piece = self._float_piece(i)
                np.multiply(piece, limit / norm, out=piece)
        saved = {gi: groups[gi]["max_gradient_norm"] for gi in clipped}
        for gi in clipped:
            groups[gi]["max_gradient_norm"] = 0.0
        return saved

    def _float_piece(self, i: int) -> np.ndarray:
        """Tensor i's piece of the averaged gradient in the dtype it was summed in."""
        b = next(b for b in self._buckets if i in b.tensors)
        start, n = self._pieces[i][self.rank]
        at = self._offsets[i] + start - b.start - b.displs[self.rank]
        return b.shard[at : at + n]

    # -- checkpoints
    def _reference(self) -> Adam:
        """A single-process optimizer over the full params (rank 0's), as the file holds."""
        return self._optimizer_class(self._params, **self._options)

    def save(self, path: Any, *, include_params: bool = True) -> None:
        """Gather the state to rank 0, which writes ONE checkpoint atomically, the
        file a single-process optimizer over these params writes (it loads into
        ``radam.Adam``, or a ShardedAdam of any world size). Collective."""
        with self._lock:
            with self._collective("save"):
                sd = self.optimizer.state_dict()
                full = self._gather_state(sd["state"])

            def write() -> None:
                ref = self._reference()
                ref.load_state_dict({"state": full, "param_groups": sd["param_groups"]})
                ref.save(path, include_params=include_params)

            self._root_result(write, "save")

    def _gather_state(self, state: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
        MPI, root = self._MPI, self.rank == 0  # noqa: N806
        full: dict[int, dict[str, Any]] = {}
        for i, entry in state.items():
            t, row = self._layout.tensors[i], self._pieces[i]
            counts, displs = [n for _, n in row], [s for s, _ in row]
            out = {}
            for name, value in entry.items():
                if not isinstance(value, np.ndarray):
                    out[name] = value
                    continue
                kind = _mpi_type(MPI, value.dtype)
                whole = np.empty(t.array.shape, value.dtype) if root else None
                recv = [_raw(whole.reshape(-1)), counts, displs, kind] if root else None
                self.comm.Gatherv([_raw(value), kind], recv, root=0)
                out[name] = whole
            full[i] = out
        return full

    def load(self, path: Any, *, restore_params: bool = True) -> None:
        """Load a checkpoint written by :meth:`save` at any world size, or by a
        single-process ``radam`` optimizer over the same params: rank 0 reads and
        checks it, then scatters each rank's shard (and broadcasts the params
        when ``restore_params``). On a bad file every rank raises rank 0's
        error and nothing changes. Collective."""
        with self._lock:

            def read() -> dict[str, Any]:
                ref = self._reference()
                ref.load(path, restore_params=restore_params)
                return ref.state_dict()

            sd = self._root_result(read, "load")
            with self._collective("load"):
                state, groups = self._scatter_state(sd)
                self.optimizer.load_state_dict({"state": state, "param_groups": groups})
                if restore_params:
                    self._broadcast_params(self._layout)

    def _scatter_state(self, sd: dict[str, Any] | None) -> tuple[dict, list]:
        MPI, root = self._MPI, self.rank == 0  # noqa: N806
        meta = None
        if root:
            assert sd is not None
            meta = {
                "groups": _portable_groups(sd["param_groups"]),
                "state": {
                    i: {
                        k: (("array", v.dtype.str) if isinstance(v, np.ndarray) else v)
                        for k, v in e.items()
                    }
                    for i, e in sd["state"].items()
                },
            }
        meta = self.comm.bcast(meta, root=0)
        state = {}
        for i, entry in meta["state"].items():
            row = self._pieces[i]
            counts, displs = [n for _, n in row], [s for s, _ in row]
            out = {}
            for name, value in entry.items():
                if not (isinstance(value, tuple) and value[:1] == ("array",)):
                    out[name] = value
                    continue
                dtype = np.dtype(value[1])
                kind = _mpi_type(MPI, dtype)
                piece = np.empty(counts[self.rank], dtype)
                send = (
                    [
                        _raw(np.ascontiguousarray(sd["state"][i][name]).reshape(-1)),
                        counts,
                        displs,
                        kind,
                    ]
                    if root
                    else None
                )
                self.comm.Scatterv(send, [_raw(piece), kind], root=0)
                out[name] = piece
            state[i] = out
        return state, _local_groups(meta["groups"], self.optimizer.param_groups)
