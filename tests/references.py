"""float64 numpy references shared by the tests, written from the math in REFERENCES.md §1–2 (not from normopt).

* input families: :func:`random_matrix` (log-spaced singular values 1 … 1/cond) and :func:`spectrum_matrix`
  (the same, also returning U, V and the spectrum);
* the polar factor U Vᵀ of the reduced SVD: :func:`polar_factor` (§2: "the exact polar factor — for tests only");
* the closed forms of the table in §1 for every norm: :func:`norm`, :func:`dual_norm`, :func:`dualize`, all three
  at once with :func:`closed_forms`. A matrix is read as [fan_in, fan_out] (Flax layout, y = x @ A); vector norms
  use all entries.

Everything here is plain numpy in float64; nothing imports jax or normopt.
"""

from __future__ import annotations

import numpy as np

NORMS = ("l2", "rms", "linf", "l1", "spectral", "rms_to_rms", "l1_to_rms", "rms_to_linf")


# ------------------------------------------------------------------------------------------------ input families
def random_matrix(rng: np.random.Generator, m: int, n: int, cond: float = 1.0) -> np.ndarray:
    """U diag(s) Vᵀ with log-spaced singular values from 1 down to 1/cond (float64)."""
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    k = min(m, n)
    s = np.logspace(0, -np.log10(cond), k)
    return (u[:, :k] * s) @ v[:, :k].T


def spectrum_matrix(rng: np.random.Generator, m: int, n: int, lo: float = 1e-3):
    """(X, U, V, s): X = U diag(s) Vᵀ with random orthonormal U [m, k], V [n, k] and s log-spaced in [lo, 1]."""
    k = min(m, n)
    u, _ = np.linalg.qr(rng.standard_normal((m, k)))
    v, _ = np.linalg.qr(rng.standard_normal((n, k)))
    s = np.logspace(np.log10(lo), 0, k)
    return (u * s) @ v.T, u, v, s


# ------------------------------------------------------------------------------------------------ polar factor
def polar_factor(g: np.ndarray, rtol: float = 1e-12) -> np.ndarray:
    """Exact polar factor U Vᵀ of the reduced SVD G = U Σ Vᵀ in float64 (REFERENCES §2).

    Singular values ≤ rtol·σ_max are round-off and count as zero (their singular vectors are dropped), so a rank-r
    G gives the rank-r partial isometry; polar_factor(0) = 0."""
    u, s, vt = np.linalg.svd(np.asarray(g, np.float64), full_matrices=False)
    keep = s > s.max(initial=0) * rtol
    return u[:, keep] @ vt[keep]


def relative_error(a, b: np.ndarray) -> float:
    """‖a − b‖_F / ‖b‖_F in float64."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


# ------------------------------------------------------------------------------------------------ norms (§1)
def _safe(a: np.ndarray) -> np.ndarray:
    return np.where(a > 0, a, 1.0)  # dualize(0) = 0: a zero row/column/array stays zero


def norm(name: str, a: np.ndarray) -> float:
    """‖A‖ of the table in REFERENCES §1."""
    return closed_forms(name, a)[0]


def dual_norm(name: str, g: np.ndarray) -> float:
    """The dual norm ‖G‖* of the table in REFERENCES §1."""
    return closed_forms(name, g)[1]


def dualize(name: str, g: np.ndarray, rtol: float = 1e-12) -> np.ndarray:
    """argmax_{‖t‖≤1} ⟨g, t⟩ of the table in REFERENCES §1 (rtol: the polar factor's cut-off, see polar_factor)."""
    return closed_forms(name, g, rtol)[2]


def closed_forms(name: str, g: np.ndarray, rtol: float = 1e-12) -> tuple[float, float, np.ndarray]:
    """(norm, dual_norm, dualize) of a 2-D array read as [fan_in, fan_out], in float64 (REFERENCES §1)."""
    g = np.asarray(g, np.float64)
    n = g.size
    d_in, d_out = g.shape
    l2 = np.linalg.norm(g)
    if name == "l2":
        return l2, l2, g / (l2 or 1.0)
    if name == "rms":
        return l2 / np.sqrt(n), np.sqrt(n) * l2, np.sqrt(n) * g / (l2 or 1.0)
    if name == "linf":
        return np.abs(g).max(), np.abs(g).sum(), np.sign(g)
    if name == "l1":
        k = np.argmax(np.abs(g))
        e = np.zeros(n)
        e[k] = np.sign(g.flat[k])
        return np.abs(g).sum(), np.abs(g).max(), e.reshape(g.shape)
    if name in ("spectral", "rms_to_rms"):
        sv = np.linalg.svd(g, compute_uv=False)
        c = 1.0 if name == "spectral" else np.sqrt(d_out / d_in)
        return sv.max() / c, c * sv.sum(), c * polar_factor(g, rtol)
    if name == "l1_to_rms":
        rows = np.linalg.norm(g, axis=1)
        return rows.max() / np.sqrt(d_out), np.sqrt(d_out) * rows.sum(), np.sqrt(d_out) * g / _safe(rows)[:, None]
    if name == "rms_to_linf":
        cols = np.linalg.norm(g, axis=0)
        return np.sqrt(d_in) * cols.max(), cols.sum() / np.sqrt(d_in), g / (np.sqrt(d_in) * _safe(cols))[None, :]
    raise KeyError(name)
