"""Shared test helpers: float64 numpy references and input families."""

import numpy as np
import pytest


def random_matrix(rng: np.random.Generator, m: int, n: int, cond: float = 1.0) -> np.ndarray:
    """U diag(s) Vᵀ with log-spaced singular values from 1 down to 1/cond (float64)."""
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    k = min(m, n)
    s = np.logspace(0, -np.log10(cond), k)
    return (u[:, :k] * s) @ v[:, :k].T


def polar_np(g: np.ndarray, rtol: float = 1e-12) -> np.ndarray:
    """Exact polar factor U Vᵀ of the reduced SVD (float64); singular values ≤ rtol·σ_max count as zero."""
    u, s, vt = np.linalg.svd(g, full_matrices=False)
    keep = s > s.max(initial=0) * rtol
    return (u[:, keep]) @ vt[keep]


@pytest.fixture
def rng():
    return np.random.default_rng(0)
