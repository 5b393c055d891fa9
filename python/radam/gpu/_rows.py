"""A ``radam.RowSparse`` gradient as ``GpuEngine`` uploads it for adam.wgsl's
``adam_step_rows``: checked against its param, then coalesced on the host as the
CPU core (rust/rows.rs) coalesces it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._row_sparse import RowSparse

_FLOAT32 = np.dtype(np.float32)


@dataclass(frozen=True)
class Rows:
    """A coalesced row-sparse gradient: the rows named, each once and ascending
    (uint32), and the float32 sum of the values given for each, one row of the
    param's row length per row (a repeated row's values added in the order given)."""

    rows: np.ndarray
    values: np.ndarray
    given: np.ndarray  # the values as given, which skip_nonfinite also checks


def coalesce(grad: RowSparse, param: np.ndarray, hosts: Sequence[np.ndarray], what: str) -> Rows:
    """Check ``grad`` (named ``what``) against ``param`` and the arrays a step
    writes (``hosts``), writing nothing, and coalesce it."""
    if param.ndim < 2:
        raise ValueError(
            f"{what} is a RowSparse, which steps rows of a param of two or more dimensions, "
            f"but its param has shape {param.shape}; pass a dense gradient"
        )
    indices, values = grad.indices, grad.values
    expected = (len(indices), *param.shape[1:])
    if values.shape != expected:
        raise ValueError(
            f"{what}.values has shape {values.shape}, but must have shape {expected}: one "
            f"row of its param (shape {param.shape}) per index"
        )
    if values.dtype != param.dtype:
        raise TypeError(
            f"{what}.values has dtype {values.dtype} but its param has dtype {param.dtype}; "
            f"radam never casts, pass {param.dtype} values"
        )
    if any(np.may_share_memory(values, h) for h in hosts):
        raise ValueError(
            f"{what}.values shares memory with a param or optimizer state; "
            "pass a separate gradient array"
        )
    table_rows = param.shape[0]
    if indices.size and indices.max() >= table_rows:
        position = int(np.argmax(indices >= table_rows))
        raise IndexError(
            f"{what}.indices[{position}] is {indices[position]}, but its param has "
            f"{table_rows} rows"
        )
    # Rows ascending, a repeated row's positions in the order given (a stable sort of
    # the indices, never of the table); each run summed one value at a time, in
    # float32 (exact for 16-bit values), as rust/rows.rs's RowGrad.
    row_len = param.size // table_rows
    given = values.reshape(len(indices), row_len).astype(_FLOAT32, copy=False)
    order = np.argsort(indices, kind="stable")
    ordered, given_ordered = indices[order], given[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]] if len(order) else np.zeros(0, bool)
    starts = np.flatnonzero(first)
    summed = given_ordered[starts]  # a copy
    # The k-th value of each run, for k = 1, 2, ..., added to its run's sum in turn
    # (np.add.reduceat does not add one at a time).
    run = np.cumsum(first) - 1
    rank = np.arange(len(order)) - starts[run] if len(order) else run
    with np.errstate(over="ignore", invalid="ignore"):  # skip_nonfinite checks the sums
        for k in range(1, int(rank.max(initial=0)) + 1):
            at = rank == k
            summed[run[at]] += given_ordered[at]
    return Rows(ordered[starts].astype(np.uint32), summed, given)
