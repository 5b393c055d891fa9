"""Tensors of other libraries (torch's, or anything with ``.numpy()``) as NumPy
arrays and numbers, without importing those libraries: for the importers of
their state dicts (``_torch_import``, ``_bnb``)."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(value: Any, what: str) -> Any:
    """A torch tensor (or anything with ``.numpy()``) as a NumPy array copy."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        tensor = value.detach()
        if hasattr(tensor, "cpu"):
            tensor = tensor.cpu()
        if getattr(tensor, "is_complex", lambda: False)():
            raise TypeError(f"{what} is complex; radam optimizes real float arrays")
        try:
            return np.array(tensor.numpy(), copy=True)
        except TypeError as err:  # e.g. torch.bfloat16, which NumPy cannot hold
            raise TypeError(
                f"{what}: cannot convert a {tensor.dtype} tensor to NumPy: {err}"
            ) from err
    raise TypeError(f"{what} must be a tensor or a numpy.ndarray, got {type(value).__name__}")


def scalar(value: Any, what: str) -> Any:
    """A Python number from a number, a 0-d tensor or a 0-d array."""
    if hasattr(value, "detach") or isinstance(value, np.ndarray):
        array = to_numpy(value, what)
        if array.shape not in ((), (1,)):
            raise ValueError(f"{what} must be a scalar, got shape {array.shape}")
        return array.reshape(()).item()
    if isinstance(value, np.generic):
        return value.item()
    return value
