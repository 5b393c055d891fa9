"""``radam.RowSparse``: a gradient that names rows of a table (an embedding, say),
which ``Adam.step`` takes in place of a dense gradient for a param of two or more
dimensions and steps lazily: only the rows named, and their state, change."""

from __future__ import annotations

from typing import Any

import numpy as np

INDEX_DTYPE = np.dtype(np.int64)


class RowSparse:
    """The gradient of a param of two or more dimensions that is ``values[k]`` at
    row ``indices[k]`` (along axis 0) and zero elsewhere, stepped lazily.

    ``indices``: 1-D integers, row numbers from 0, which may repeat (the values of a
    repeated row are summed, as torch coalesces them). ``values``: an array of shape
    ``(len(indices), *param.shape[1:])`` and the param's dtype. The step checks them
    against the param (shape, dtype, range, memory shared with what it writes).
    """

    __slots__ = ("_indices", "_values")

    def __init__(self, indices: Any, values: Any) -> None:
        index_array = np.asarray(indices)
        if index_array.size == 0 and not isinstance(indices, np.ndarray):
            index_array = index_array.astype(INDEX_DTYPE)  # [] is float64 to NumPy
        if index_array.ndim != 1:
            raise ValueError(
                f"RowSparse: indices must be 1-D (row numbers), got shape {index_array.shape}"
            )
        if index_array.dtype.kind not in "iu":
            raise TypeError(
                f"RowSparse: indices must be integers (row numbers), got dtype {index_array.dtype}"
            )
        if index_array.dtype.kind == "u" and index_array.size and index_array.max() > 2**63 - 1:
            position = int(np.argmax(index_array))
            raise IndexError(
                f"RowSparse: indices[{position}] is {index_array[position]}, beyond any table"
            )
        # A copy only where the indices are not already contiguous int64.
        index_array = np.ascontiguousarray(index_array, dtype=INDEX_DTYPE)
        if index_array.size and index_array.min() < 0:
            position = int(np.argmin(index_array))
            raise IndexError(
                f"RowSparse: indices[{position}] is {index_array[position]}; indices are row "
                "numbers from 0 (negative indices are not counted from the end)"
            )
        if not isinstance(values, np.ndarray):
            raise TypeError(
                f"RowSparse: values must be a numpy.ndarray, got {type(values).__name__}"
            )
        if values.ndim < 2 or values.shape[0] != index_array.shape[0]:
            raise ValueError(
                f"RowSparse: values must have shape (len(indices), *param.shape[1:]), one row "
                f"per index: got {values.shape} for {index_array.shape[0]} indices"
            )
        self._indices = index_array
        self._values = values

    @property
    def indices(self) -> np.ndarray:
        """The rows named (int64, contiguous; possibly repeated)."""
        return self._indices

    @property
    def values(self) -> np.ndarray:
        """One row of gradient per index."""
        return self._values

    def __repr__(self) -> str:
        return (
            f"RowSparse({len(self._indices)} rows of shape {self._values.shape[1:]}, "
            f"{self._values.dtype})"
        )
