"""The variants of Adam on the same engine: AdamW, AdaMax, NAdam and RAdam.

Each class is an entry of ``radam._options.VARIANTS`` (its update rule, the
defaults that differ from Adam's, the options it fixes), from which its
signature, defaults and the options part of its docstring are made; the rest
(validation, state, steps, checkpoints) is ``radam.Adam``'s.
"""

from __future__ import annotations

from ._signatures import from_table
from .optimizer import Adam


@from_table("AdamW")
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``:
    ``param *= 1 - lr * weight_decay`` before the Adam step instead of L2
    regularisation (``radam.Adam`` with ``decoupled_weight_decay=True``)."""


@from_table("Adamax")
class Adamax(Adam):
    """AdaMax, the paper's Algorithm 2: u = max(beta2 * u, |g| + eps) replaces sqrt(v),
    and theta -= lr / (1 - beta1^t) * m / u. ``eps`` defaults to 1e-8, as
    ``torch.optim.Adamax``'s; ``eps=0`` is the paper's form (where u is then 0,
    every gradient so far was 0 and the update is 0). State: ``exp_avg`` and
    ``exp_inf``."""


@from_table("NAdam")
class NAdam(Adam):
    """NAdam (Dozat, 2016), as ``torch.optim.NAdam``: Nesterov momentum in Adam,
    with the first moment's coefficient mu_t = beta1 * (1 - 0.5 * 0.96^(t *
    momentum_decay)). ``decoupled_weight_decay=True`` is NAdamW. The running
    product of the mu_t is kept on the host and saved as ``mu_product``."""


@from_table("RAdam")
class RAdam(Adam):
    """Rectified Adam (Liu et al., 2019), as ``torch.optim.RAdam``. (The package's
    name means "Rust Adam"; this class is the rectified variant.) While the
    variance rectification term is undefined (rho_t <= 5, the first steps) the
    step is the un-adapted ``lr * m / (1 - beta1^t)``; after that, Adam's step
    scaled by the rectification, with eps added to the uncorrected sqrt(v) as
    torch does. ``decoupled_weight_decay=True`` gives its AdamW form."""
