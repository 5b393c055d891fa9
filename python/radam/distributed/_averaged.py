"""AveragedAdam: plain data parallelism, the full state on every rank."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import checkpoint
from .._params import Layout
from ..optimizer import Adam
from ._common import (
    _as_grads,
    _DataParallel,
    _local_groups,
    _make_buckets,
    _portable_groups,
    _raw,
    _views,
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

    def _local_optimizer(
        self, params: Any, layout: Layout, optimizer: type, options: dict[str, Any]
    ) -> Adam:
        return optimizer(params, **options)

    def _make_buffers(self, layout: Layout) -> None:
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
        """Rank 0 reads the checkpoint; every rank checks it against its own
        optimizer, and it is applied only where every rank can take it (state,
        and params when ``restore_params``): otherwise every rank raises (the
        failing one its error, the others a RuntimeError naming it) and nothing
        changed on any rank."""
        if not isinstance(restore_params, bool):
            raise TypeError(f"restore_params must be True or False, got {restore_params!r}")
        with self._lock:
            read = self._root_result(lambda: checkpoint.read_state(self.optimizer, path), "load")
            sd, params = read if read is not None else (None, None)
            with self._collective("load"):
                sd = _bcast_state_dict(self, sd, self.optimizer)
            local, loaded, error = self.optimizer, None, None
            try:
                with local._lock:
                    loaded = checkpoint.check_state(local, str(path), sd)
                    if restore_params:
                        for t in self._layout.tensors:
                            if not t.array.flags.writeable:
                                raise ValueError(
                                    f"params{t.label} is read-only, so it cannot be restored"
                                )
            except Exception as err:
                error = err
            self._agree(error, "load")
            with self._collective("load"):
                local._apply_state_dict(loaded, params if restore_params else None)
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
