"""A plain NumPy Adam, the oracle of the parity tests.

Written from docs/formulas.md, sections "Adam (Algorithm 1)" (Kingma & Ba: eps
outside the root of the bias-corrected second moment) and "Options PyTorch adds"
(``torch.optim.Adam``'s documented options):

- ``maximize``: the gradient is negated first;
- ``weight_decay`` without ``decoupled_weight_decay``: L2, ``g += wd * p``;
- ``decoupled_weight_decay`` (AdamW): ``p *= 1 - lr * wd`` before the update;
- ``amsgrad``: a running max of the (uncorrected) second moment, used in the
  denominator instead of ``v``.

Everything is computed in float64 whatever the dtype of the arrays it is
given, one tensor at a time, in the most direct form, so that it shares no
code and no evaluation order with the Rust kernel under test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Options:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = False
    amsgrad: bool = False
    maximize: bool = False


@dataclass
class TensorState:
    m: np.ndarray
    v: np.ndarray
    v_max: np.ndarray


@dataclass
class RefAdam:
    """Reference Adam over float64 copies of the params.

    ``params`` is a list of arrays (copied to float64); ``options[i]`` holds the
    options of tensor i (tensors of one group share an Options).
    """

    params: list[np.ndarray]
    options: list[Options]
    t: int = 0
    state: list[TensorState] = field(default_factory=list)

    @classmethod
    def create(cls, params, options) -> RefAdam:
        if isinstance(options, Options):
            options = [options] * len(params)
        copies = [np.array(p, dtype=np.float64, copy=True) for p in params]
        state = [TensorState(np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)) for p in copies]
        return cls(copies, list(options), 0, state)

    def step(self, grads) -> None:
        assert len(grads) == len(self.params)
        self.t += 1
        t = self.t
        for p, g_in, o, s in zip(self.params, grads, self.options, self.state):
            beta1, beta2 = o.betas
            g = np.array(g_in, dtype=np.float64, copy=True)
            if o.maximize:
                g = -g
            if o.weight_decay != 0.0:
                if o.decoupled_weight_decay:
                    p *= 1.0 - o.lr * o.weight_decay
                else:
                    g = g + o.weight_decay * p
            s.m[...] = beta1 * s.m + (1.0 - beta1) * g
            s.v[...] = beta2 * s.v + (1.0 - beta2) * g * g
            m_hat = s.m / (1.0 - beta1**t)
            if o.amsgrad:
                s.v_max[...] = np.maximum(s.v_max, s.v)
                v_hat = s.v_max / (1.0 - beta2**t)
            else:
                v_hat = s.v / (1.0 - beta2**t)
            p -= o.lr * m_hat / (np.sqrt(v_hat) + o.eps)
