"""ShardedAdam: the optimizer state sharded across ranks (ZeRO stage 1)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._formats import FLOAT32, StateFormat, named
from .._params import Layout
from ..optimizer import Adam
from ._common import (
    _as_grads,
    _DataParallel,
    _local_groups,
    _make_buckets,
    _mpi_type,
    _portable_groups,
    _raw,
    _structure,
    _views,
)


def _shard_range(numel: int, world_size: int, rank: int) -> tuple[int, int]:
    """Rank ``rank``'s part [lo, hi) of ``numel`` elements: sizes differ by at most one."""
    return rank * numel // world_size, (rank + 1) * numel // world_size


def _block_ranges(
    numel: int, world_size: int, offsets: list[int], sizes: list[int], block: int
) -> list:
    """Each rank's part [lo, hi) as :func:`_shard_range`'s, every cut inside a tensor
    moved down to a boundary of its state format's blocks, so that each block (and
    what it shares, 8-bit state's absmax) lives on one rank, as in a single process."""
    cuts = []
    for r in range(world_size + 1):
        cut = r * numel // world_size
        for offset, size in zip(offsets, sizes):
            if offset < cut < offset + size:
                cut = offset + (cut - offset) // block * block
                break
        cuts.append(cut)
    return list(zip(cuts[:-1], cuts[1:]))


def _extents(
    row: list, fmt: StateFormat, name: str, shape: tuple[int, ...]
) -> tuple[list, list, tuple]:
    """The counts and displacements of each rank's part of state array ``name`` (of
    format ``fmt``) of a tensor of ``shape`` cut into ``row``'s pieces, and the whole
    array's shape: elements, or blocks for an array with one element per block (8-bit
    state's absmax; the pieces start on blocks)."""
    if not fmt.array(name).per_block:
        return [n for _, n in row], [s for s, _ in row], shape
    b = fmt.block
    counts = [-(-(s + n) // b) - s // b if n else 0 for s, n in row]
    displs = [s // b for s, _ in row]
    return counts, displs, (fmt.blocks(math.prod(shape)),)


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

    def _local_optimizer(
        self, params: Any, layout: Layout, optimizer: type, options: dict[str, Any]
    ) -> Adam:
        self._optimizer_class = optimizer
        self._params = params
        self._options = dict(options)
        k, rank = self.world_size, self.rank
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
        # The state format, if state_dtype names a blocked one (the local optimizer
        # checks the option).
        self._format = named(options.get("state_dtype")) or FLOAT32
        if self._format.block > 1:
            self._ranges = _block_ranges(self.numel, k, self._offsets, sizes, self._format.block)
        else:
            self._ranges = [_shard_range(self.numel, k, r) for r in range(k)]
        self.shard = self._ranges[rank]
        # Each tensor's piece on each rank: (start within the tensor, size).
        self._pieces = []
        for i, size in enumerate(sizes):
            row = []
            for r in range(k):
                lo, hi = self._ranges[r]
                a = min(max(self._offsets[i], lo), self._offsets[i] + size)
                b = max(min(self._offsets[i] + size, hi), a)
                row.append((a - self._offsets[i], b - a))
            self._pieces.append(row)
        pieces = [
            t.array.reshape(-1)[start : start + n]
            for t, (start, n) in zip(layout.tensors, (row[rank] for row in self._pieces))
        ]
        inner = {**options, "skip_nonfinite": False}  # agreed across ranks here instead
        local = optimizer(_structure(params, pieces, layout), **inner)
        # Stochastic rounding hashes each element's index in its whole tensor.
        local._first_elements = [row[rank][0] for row in self._pieces]
        # Each piece keeps its whole tensor's kind of state (8-bit from 4096 elements).
        local._whole_sizes = {t.key: size for t, size in zip(local._layout.tensors, sizes)}
        return local

    def _make_buffers(self, layout: Layout) -> None:
        self._setup_buffers()
        self.skipped_steps = 0
        self._sumsq = np.zeros(len(layout.tensors), np.float64)

    def _setup_buffers(self) -> None:
        MPI = self._MPI  # noqa: N806
        tensors = self._layout.tensors
        self._pack = _views(self._buckets, self._offsets, self._layout, "grads")
        self._gather = _views(self._buckets, self._offsets, self._layout, "params")
        ranges = self._ranges
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
            out = {}
            for name, value in entry.items():
                if not isinstance(value, np.ndarray):
                    out[name] = value
                    continue
                counts, displs, shape = _extents(row, self._format, name, t.array.shape)
                kind = _mpi_type(MPI, value.dtype)
                whole = np.empty(shape, value.dtype) if root else None
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
            out = {}
            for name, value in entry.items():
                if not (isinstance(value, tuple) and value[:1] == ("array",)):
                    out[name] = value
                    continue
                counts, displs, _ = _extents(
                    row, self._format, name, self._layout.tensors[i].array.shape
                )
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
