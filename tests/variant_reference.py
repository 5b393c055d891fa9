"""NAdam and RAdam written from docs/formulas.md (their papers as PyTorch documents
them: torch.optim.NAdam, torch.optim.RAdam), plainly, in float64, one tensor at a time.
"""

from __future__ import annotations

import math

import numpy as np


def decay_and_moments(ref, p, g, m, v):
    """The steps NAdam and RAdam share with Adam, on one tensor of reference
    ``ref``: weight decay (decoupled, AdamW's, on ``p``; else L2, on the
    gradient), then both moments' moving averages. Returns the gradient used."""
    g = np.asarray(g, dtype=np.float64)
    if ref.decoupled:
        p *= 1 - ref.lr * ref.wd
    else:
        g = g + ref.wd * p
    m[...] = ref.b1 * m + (1 - ref.b1) * g
    v[...] = ref.b2 * v + (1 - ref.b2) * g * g
    return g


class RefNAdam:
    """Dozat's NAdam with PyTorch's momentum_decay schedule:
    mu_t = beta1 (1 - 0.5 * 0.96^(t psi)); the update mixes the gradient and the
    first moment, each with its own bias correction by the product of the mu's."""

    def __init__(
        self,
        params,
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        momentum_decay=4e-3,
        decoupled_weight_decay=False,
    ):
        self.p = [np.array(x, dtype=np.float64) for x in params]
        self.m = [np.zeros_like(x) for x in self.p]
        self.v = [np.zeros_like(x) for x in self.p]
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.wd, self.psi, self.decoupled = weight_decay, momentum_decay, decoupled_weight_decay
        self.t, self.mu_product = 0, 1.0

    def step(self, grads):
        self.t += 1
        t, b1, b2, lr = self.t, self.b1, self.b2, self.lr
        mu = b1 * (1 - 0.5 * 0.96 ** (t * self.psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * self.psi))
        self.mu_product *= mu
        bc2 = 1 - b2**t
        for p, g, m, v in zip(self.p, grads, self.m, self.v):
            g = decay_and_moments(self, p, g, m, v)
            denom = np.sqrt(v / bc2) + self.eps
            p -= lr * (1 - mu) / (1 - self.mu_product) * g / denom
            p -= lr * mu_next / (1 - self.mu_product * mu_next) * m / denom


def radam_rho(beta2: float, t: int) -> float:
    """The length of the approximated SMA, rho_t (Liu et al., eq. 4)."""
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * t * beta2**t / (1 - beta2**t)


class RefRAdam:
    """Liu et al.'s rectified Adam as torch.optim.RAdam computes it: while
    rho_t <= 5 the step is the un-adapted lr * m_hat; after, the adaptive step
    lr * m_hat * r_t * sqrt(1 - beta2^t) / (sqrt(v) + eps)."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        decoupled_weight_decay=False,
    ):
        self.p = [np.array(x, dtype=np.float64) for x in params]
        self.m = [np.zeros_like(x) for x in self.p]
        self.v = [np.zeros_like(x) for x in self.p]
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.wd, self.decoupled = weight_decay, decoupled_weight_decay
        self.t = 0
        self.adaptive_steps: list[bool] = []

    def step(self, grads):
        self.t += 1
        t, b1, b2, lr = self.t, self.b1, self.b2, self.lr
        rho_inf = 2 / (1 - b2) - 1
        rho_t = radam_rho(b2, t)
        adaptive = rho_t > 5
        self.adaptive_steps.append(adaptive)
        for p, g, m, v in zip(self.p, grads, self.m, self.v):
            g = decay_and_moments(self, p, g, m, v)
            m_hat = m / (1 - b1**t)
            if adaptive:
                rect = math.sqrt(
                    (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
                )
                p -= lr * m_hat * rect * math.sqrt(1 - b2**t) / (np.sqrt(v) + self.eps)
            else:
                p -= lr * m_hat
