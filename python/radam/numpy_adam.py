"""A careful in-place NumPy Adam: the baseline radam's benchmarks compare with.

It allocates nothing per step (one scratch buffer per tensor, reused) and
computes Algorithm 1 with ``out=`` ufuncs, which is about as fast as NumPy
gets: each ufunc is one more pass over memory, which is what the fused
kernel avoids.
"""

from __future__ import annotations

import math

import numpy as np


class NumpyAdam:
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(params)
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.scratch = [np.empty_like(p) for p in self.params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step_size = self.lr / (1 - b1**self.t)
        inv_bc2_sqrt = 1 / math.sqrt(1 - b2**self.t)
        for p, g, m, v, tmp in zip(self.params, grads, self.m, self.v, self.scratch):
            m *= b1  # m = b1 m + (1 - b1) g
            np.multiply(g, 1 - b1, out=tmp)
            m += tmp
            v *= b2  # v = b2 v + (1 - b2) g^2
            np.multiply(g, g, out=tmp)
            tmp *= 1 - b2
            v += tmp
            np.sqrt(v, out=tmp)  # denom = sqrt(v / bc2) + eps
            tmp *= inv_bc2_sqrt
            tmp += self.eps
            np.divide(m, tmp, out=tmp)
            tmp *= -step_size
            p += tmp
