"""What both data-parallel optimizers share: MPI access, flat buckets of params,
the cross-rank consistency checks, and the collective-failure handling."""

from __future__ import annotations

import pickle
import sys
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._params import HALF_DTYPES, Layout, flatten_grads, layout_of
from .._row_sparse import RowSparse
from ..optimizer import Adam

MPI_EXTRA = 'pip install "radam[mpi]"'
MPI_SYSTEM = "apt-get install openmpi-bin libopenmpi-dev"
_KEEP_LOCAL = "<radam.distributed: this rank's own value>"


def _mpi() -> Any:
    """mpi4py's MPI module. Any failure to load it (no mpi4py: ImportError; an mpi4py
    wheel that finds no MPI library: RuntimeError; a broken library: OSError) becomes
    one ImportError that says what to install."""
    try:
        from mpi4py import MPI
    except Exception as err:
        raise ImportError(
            f"radam.distributed needs mpi4py and an MPI library, and loading them failed "
            f"({type(err).__name__}: {err}). Install mpi4py with {MPI_EXTRA} and an MPI "
            f"library from the system, e.g. on Debian/Ubuntu: {MPI_SYSTEM}"
        ) from err
    return MPI


def _mpi_type(MPI: Any, dtype: np.dtype) -> Any:  # noqa: N803
    if dtype == np.float32:
        return MPI.FLOAT
    if dtype == np.float64:
        return MPI.DOUBLE
    if dtype.itemsize == 2:  # float16, bfloat16: moved, never summed
        return MPI.UINT16_T
    if dtype.itemsize == 1:  # a state format's one-byte codes: moved, never summed
        return MPI.UINT8_T
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
    construction (this rank's optimizer, checked the same on every rank, then
    the buffers, then the params broadcast from rank 0) and the group access.
    A mode says how it builds its local optimizer (``_local_optimizer``) and
    its buffers (``_make_buffers``)."""

    def __init__(
        self,
        params: Any,
        comm: Any = None,
        *,
        optimizer: type = Adam,
        broadcast_params: bool = True,
        **options: Any,
    ) -> None:
        self._connect(comm)

        def build(layout: Layout) -> Adam:
            _check_optimizer(optimizer)
            return self._local_optimizer(params, layout, optimizer, options)

        self.optimizer, self._layout = self._check_same(build, params, options)
        self._make_buffers(self._layout)
        if broadcast_params:
            self._broadcast_params(self._layout)

    def _local_optimizer(
        self, params: Any, layout: Layout, optimizer: type, options: dict[str, Any]
    ) -> Adam:  # pragma: no cover - each mode has its own
        raise NotImplementedError

    def _make_buffers(self, layout: Layout) -> None:  # pragma: no cover - each mode has its own
        raise NotImplementedError

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The local optimizer's groups (change options identically on every rank)."""
        return self.optimizer.param_groups

    @property
    def step_count(self) -> int:
        return self.optimizer.step_count

    def _connect(self, comm: Any) -> None:
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
            if isinstance(g, RowSparse):
                raise TypeError(
                    f"grads{t.label} is a radam.RowSparse, but radam.distributed averages "
                    "dense gradients across ranks (every rank's rows would differ): pass a "
                    "dense gradient, or step row-sparse gradients with radam.Adam on one rank"
                )
            if g is None:
                raise TypeError(
                    f"grads{t.label} is None: the distributed optimizers step every param on "
                    "every rank (a None grad, which radam.Adam skips, is not supported here)"
                )
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
