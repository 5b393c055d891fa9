"""Plain NumPy references for the seed systems' modes, written from docs/formulas.md.

Each formula is transcribed from docs/formulas.md as directly as possible,
in float64, one tensor at a time, sharing no code with radam: the oracle of
test_seed_modes.py, test_compat_downhill.py and test_compat_puzzlelib.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def halflife_beta(h: float) -> float:
    """docs/formulas.md, downhill's half-lives: beta = exp(-ln 2 / h) = 2^(-1/h)."""
    return 2.0 ** (-1.0 / h)


def clip(g: np.ndarray, max_elem: float, max_norm: float) -> np.ndarray:
    """downhill's per-tensor clipping of the raw gradient (element wins)."""
    if max_elem > 0:
        return np.clip(g, -max_elem, max_elem)
    if max_norm > 0:
        norm = math.sqrt(float((g * g).sum()))
        if norm > 0:
            return g * min(1.0, max_norm / norm)
    return g


@dataclass
class SeedAdam:
    """Adam with the options of docs/formulas.md (the paper, the efficient form, downhill).

    - ``bias_correction="adam"``: Algorithm 1 (eps outside sqrt(v_hat)), or with
      ``efficient_form`` the paper's efficient form (alpha_t, eps outside sqrt(v));
    - ``bias_correction="downhill-0.4.0"``: m/(1-beta1_t), sqrt(v/(1-beta2));
    - ``beta1_decay`` lambda: beta1_t = beta1 * lambda^(t-1) in the first moment;
      Algorithm 1's and the efficient form's corrections keep beta1^t;
    - ``momentum``/``nesterov``: downhill's velocity on top of the step Delta;
    - clipping of the raw gradient before everything; ``maximize`` negates it.
    """

    params: list[np.ndarray]
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    efficient_form: bool = False
    beta1_decay: float = 1.0
    momentum: float = 0.0
    nesterov: bool = False
    max_gradient_elem: float = 0.0
    max_gradient_norm: float = 0.0
    bias_correction: str = "adam"
    maximize: bool = False
    t: int = 0
    m: list[np.ndarray] = field(default_factory=list)
    v: list[np.ndarray] = field(default_factory=list)
    vel: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.params = [np.array(p, dtype=np.float64) for p in self.params]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.vel = [np.zeros_like(p) for p in self.params]

    def step(self, grads) -> None:
        self.t += 1
        t = self.t
        beta1, beta2 = self.betas
        beta1_t = beta1 * self.beta1_decay ** (t - 1)
        for i, p in enumerate(self.params):
            g = clip(
                np.array(grads[i], dtype=np.float64), self.max_gradient_elem, self.max_gradient_norm
            )
            if self.maximize:
                g = -g
            self.m[i] = beta1_t * self.m[i] + (1 - beta1_t) * g
            self.v[i] = beta2 * self.v[i] + (1 - beta2) * g * g
            m, v = self.m[i], self.v[i]
            if self.bias_correction == "downhill-0.4.0":
                delta = self.lr * (m / (1 - beta1_t)) / (np.sqrt(v / (1 - beta2)) + self.eps)
            elif self.efficient_form:
                lr_t = self.lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                delta = lr_t * m / (np.sqrt(v) + self.eps)
            else:
                m_hat = m / (1 - beta1**t)
                v_hat = v / (1 - beta2**t)
                delta = self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
            mu = self.momentum
            if self.nesterov:
                self.vel[i] = mu * mu * self.vel[i] - (1 + mu) * delta
                p += self.vel[i]
            elif mu > 0:
                self.vel[i] = mu * self.vel[i] - delta
                p += self.vel[i]
            else:
                p -= delta


@dataclass
class SeedAdamax:
    """AdaMax, the paper's Algorithm 2 (no eps; where u == 0 the step is 0)."""

    params: list[np.ndarray]
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.999)
    maximize: bool = False
    t: int = 0
    m: list[np.ndarray] = field(default_factory=list)
    u: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.params = [np.array(p, dtype=np.float64) for p in self.params]
        self.m = [np.zeros_like(p) for p in self.params]
        self.u = [np.zeros_like(p) for p in self.params]

    def step(self, grads) -> None:
        self.t += 1
        beta1, beta2 = self.betas
        for i, p in enumerate(self.params):
            g = np.array(grads[i], dtype=np.float64)
            if self.maximize:
                g = -g
            self.m[i] = beta1 * self.m[i] + (1 - beta1) * g
            self.u[i] = np.maximum(beta2 * self.u[i], np.abs(g))
            ratio = np.divide(self.m[i], self.u[i], out=np.zeros_like(p), where=self.u[i] != 0)
            p -= (self.lr / (1 - beta1**self.t)) * ratio


@dataclass
class PuzzleLibAdam:
    """PuzzleLib's update (docs/formulas.md, PuzzleLib's Adam), as its code computes it:
    grads hold the NEGATIVE loss gradient, and the update adds."""

    params: dict[str, np.ndarray]
    alpha: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    t: int = 0
    learnRate: float = 0.0  # noqa: N815 (PuzzleLib's name)
    m: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.params = {k: np.array(p, dtype=np.float64) for k, p in self.params.items()}
        self.m = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.v = {k: np.zeros_like(p) for k, p in self.params.items()}

    def update(self, grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        t = self.t
        self.learnRate = self.alpha * math.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        for k, p in self.params.items():
            g = np.array(grads[k], dtype=np.float64)
            self.m[k] += (1 - self.beta1) * (g - self.m[k])
            self.v[k] += (1 - self.beta2) * (g * g - self.v[k])
            p += self.learnRate * self.m[k] / (np.sqrt(self.v[k]) + self.epsilon)
