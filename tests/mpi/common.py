"""Shared by the MPI scripts: the params, the per-rank grads and the averaged reference."""

from __future__ import annotations

import numpy as np

SHAPES = [(5, 3), (7,), (1,), (4, 2), (9,)]


def init_params(dtype=np.float32) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def rank_grads(step: int, rank: int, dtype=np.float32) -> list[np.ndarray]:
    rng = np.random.default_rng(1000 * step + rank)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def averaged(step: int, world_size: int, dtype=np.float32) -> list[np.ndarray]:
    """The mean over ranks of their grads (in float64, rounded once)."""
    per_rank = [rank_grads(step, r, np.float64) for r in range(world_size)]
    per_rank = [[g.astype(dtype).astype(np.float64) for g in gs] for gs in per_rank]
    return [np.mean([gs[i] for gs in per_rank], axis=0).astype(dtype) for i in range(len(SHAPES))]


def assert_close(got: list[np.ndarray], want: list[np.ndarray], what: str, rtol=1e-6) -> None:
    """Relative to the largest magnitude of each reference tensor."""
    for i, (g, w) in enumerate(zip(got, want)):
        scale = float(np.max(np.abs(w))) or 1.0
        err = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))) / scale
        assert err <= rtol, f"{what}: params[{i}] differ by {err:.3g} relative (> {rtol})"
