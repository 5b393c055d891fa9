"""A plain NumPy lazy Adam, the oracle of the row-sparse tests.

Written from docs/formulas.md, sections "Adam (Algorithm 1)", "The efficient form",
"Options PyTorch adds", "downhill's options" (clipping), "Loss scaling" and "Row-sparse
(lazy) steps": the rows named are coalesced (a repeated row's values summed), the raw
gradient of those rows is clipped (element clipping at ``c``, or its L2 norm over the
rows given at ``c``), unscaled and signed, and then each named row is stepped as Adam
steps a dense tensor, with the tensor's own step count ``t``; no other row, and none of
its state, changes. float64 throughout, in the most direct form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from reference import Options


@dataclass
class LazyOptions(Options):
    """The dense reference's options, and those it leaves out."""

    efficient_form: bool = False
    max_gradient_elem: float = 0.0
    max_gradient_norm: float = 0.0
    grad_scale: float = 1.0


def coalesce(indices: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows named, ascending and each once, and the sum of each one's values."""
    rows = np.unique(indices)
    summed = np.zeros((len(rows), *values.shape[1:]))
    for k, row in enumerate(indices):
        summed[np.searchsorted(rows, row)] += values[k]
    return rows, summed


class LazyAdam:
    """Lazy Adam over a float64 copy of one table."""

    def __init__(self, table: np.ndarray, options: LazyOptions) -> None:
        self.p = np.array(table, dtype=np.float64, copy=True)
        self.m = np.zeros_like(self.p)
        self.v = np.zeros_like(self.p)
        self.v_max = np.zeros_like(self.p)
        self.t = 0
        self.o = options

    def step(self, indices: np.ndarray, values: np.ndarray, lr: float | None = None) -> None:
        o = self.o
        lr = o.lr if lr is None else lr
        beta1, beta2 = o.betas
        self.t += 1
        t = self.t
        rows, g = coalesce(indices, np.asarray(values, dtype=np.float64))
        g = g / o.grad_scale
        if o.max_gradient_elem > 0:
            g = np.clip(g, -o.max_gradient_elem, o.max_gradient_elem)
        elif o.max_gradient_norm > 0:
            norm = np.sqrt(np.sum(g * g))
            if norm > o.max_gradient_norm:
                g = g * (o.max_gradient_norm / norm)
        if o.maximize:
            g = -g
        p = self.p[rows]
        if o.weight_decay:
            if o.decoupled_weight_decay:
                p = p * (1.0 - lr * o.weight_decay)
            else:
                g = g + o.weight_decay * p
        m = beta1 * self.m[rows] + (1.0 - beta1) * g
        v = beta2 * self.v[rows] + (1.0 - beta2) * g * g
        self.m[rows], self.v[rows] = m, v
        if o.amsgrad:
            self.v_max[rows] = np.maximum(self.v_max[rows], v)
            v = self.v_max[rows]
        bc1, bc2 = 1.0 - beta1**t, 1.0 - beta2**t
        if o.efficient_form:
            p = p - lr * np.sqrt(bc2) / bc1 * m / (np.sqrt(v) + o.eps)
        else:
            p = p - lr * (m / bc1) / (np.sqrt(v / bc2) + o.eps)
        self.p[rows] = p
