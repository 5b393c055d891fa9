"""Betas as half-lives, downhill's parametrisation of Adam: the decay whose
weights halve every ``h`` steps is ``2^(-1/h)``. ``radam.halflife_to_beta`` and
``radam.compat.downhill`` both use these."""

from __future__ import annotations

import math

from ._numbers import real


def halflife_to_beta(halflife: float) -> float:
    """The decay whose weights halve every ``halflife`` steps: 2^(-1/h) = exp(-ln 2 / h),
    as downhill parametrises Adam (its defaults 7 and 69 give betas ~0.9057 and ~0.9900)."""
    h = real(halflife, "halflife", 0, low_open=True)
    return 2.0 ** (-1.0 / h)


def beta_to_halflife(beta: float) -> float:
    """The inverse of :func:`halflife_to_beta`: -1 / log2(beta)."""
    b = real(beta, "beta", 0, 1, low_open=True, high_open=True)
    return -1.0 / math.log2(b)
