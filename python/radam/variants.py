"""The variants of Adam on the same engine: AdamW, AdaMax, NAdam and RAdam.

Each class only fixes its update rule (``_algorithm``), its own options and
its defaults; validation, state, steps and checkpoints are ``radam.Adam``'s.
"""

from __future__ import annotations

from typing import Any

from .optimizer import Adam


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``.
    The keyword-only options are Adam's (the variants below take them too)."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        maximize: bool = False,
        device: str = "cpu",
        **options: Any,
    ) -> None:
        if options.pop("decoupled_weight_decay", True) is not True:
            raise ValueError(
                "AdamW's weight decay is always decoupled: decoupled_weight_decay must be True "
                "(radam.Adam with decoupled_weight_decay=False is L2 regularisation)"
            )
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=True,
            amsgrad=amsgrad,
            maximize=maximize,
            device=device,
            **options,
        )


class Adamax(Adam):
    """AdaMax, the paper's Algorithm 2: u = max(beta2 * u, |g| + eps) replaces sqrt(v),
    and theta -= lr / (1 - beta1^t) * m / u. ``eps`` defaults to 1e-8, as
    ``torch.optim.Adamax``'s; ``eps=0`` is the paper's form (where u is then 0,
    every gradient so far was 0 and the update is 0). State: ``exp_avg`` and
    ``exp_inf``. The other options are Adam's.
    """

    _algorithm = "adamax"

    def __init__(
        self,
        params: Any,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        maximize: bool = False,
        device: str = "cpu",
        **options: Any,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            device=device,
            **options,
        )


class NAdam(Adam):
    """NAdam (Dozat, 2016), as ``torch.optim.NAdam``: Nesterov momentum in Adam,
    with the first moment's coefficient mu_t = beta1 * (1 - 0.5 * 0.96^(t *
    momentum_decay)). ``decoupled_weight_decay=True`` is NAdamW. The running
    product of the mu_t is kept on the host and saved as ``mu_product``.
    """

    _algorithm = "nadam"
    _extra_defaults = {"momentum_decay": 4e-3}

    def __init__(
        self,
        params: Any,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        maximize: bool = False,
        device: str = "cpu",
        **options: Any,
    ) -> None:
        self._extra_defaults = {"momentum_decay": momentum_decay}
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            device=device,
            **options,
        )


class RAdam(Adam):
    """Rectified Adam (Liu et al., 2019), as ``torch.optim.RAdam``. (The package's
    name means "Rust Adam"; this class is the rectified variant.) While the
    variance rectification term is undefined (rho_t <= 5, the first steps) the
    step is the un-adapted ``lr * m / (1 - beta1^t)``; after that, Adam's step
    scaled by the rectification, with eps added to the uncorrected sqrt(v) as
    torch does. ``decoupled_weight_decay=True`` gives its AdamW form.
    """

    _algorithm = "radam"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        maximize: bool = False,
        device: str = "cpu",
        **options: Any,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            device=device,
            **options,
        )
