"""Drop-in layers for users of the seed systems radam reproduces.

- :mod:`radam.compat.downhill`: downhill's ``Adam`` with its training driver
  (``iterate``, ``minimize``, early stopping), over NumPy arrays.
- :mod:`radam.compat.puzzlelib`: PuzzleLib's ``Adam`` optimizer API
  (``setupOn``, ``update``, ``save``/``load``) over NumPy arrays.

Each gives the seed's trajectory for the same gradients (to float rounding),
with the kernel doing the arithmetic; each module's docstring says what it
computes and where it differs from the original on purpose.
"""

from . import downhill, puzzlelib

__all__ = ["downhill", "puzzlelib"]
