"""radam: Adam done well, for NumPy arrays, with a Rust kernel.

>>> import numpy as np, radam
>>> w = np.ones(3, dtype=np.float32)
>>> opt = radam.Adam([w], lr=0.1)
>>> opt.step([2 * w])          # w changes in place
"""

from . import schedules
from ._core import __version__, num_threads, simd_level
from ._errors import Error, ReentrantCallError
from ._halflife import beta_to_halflife, halflife_to_beta
from ._minimize import minimize
from .checkpoint import CheckpointError
from .optimizer import Adam
from .variants import Adamax, AdamW, NAdam, RAdam

__all__ = [
    "Adam",
    "AdamW",
    "Adamax",
    "CheckpointError",
    "Error",
    "NAdam",
    "RAdam",
    "ReentrantCallError",
    "__version__",
    "beta_to_halflife",
    "halflife_to_beta",
    "minimize",
    "num_threads",
    "schedules",
    "simd_level",
]
