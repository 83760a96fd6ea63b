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

# The Polar Express table as published (REFERENCES §2: ℓ = 1e-3, degree 5, cushion 0.02407327424182761, no
# safety), rows 1–7; row 8 is the Padé quintic (15/8, −10/8, 3/8).
POLAR_EXPRESS_PUBLISHED = np.array(
    [
        (8.28721201814563, -23.595886519098837, 17.300387312530933),
        (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
        (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
        (3.3184196573706015, -2.488488024314874, 0.51004894012372),
        (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
        (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
        (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    ]
)

NORMS = ("l2", "rms", "linf", "l1", "spectral", "rms_to_rms", "l1_to_rms", "rms_to_linf", "sign")


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
    if name == "sign":  # Scion's Sign LMO (output layers): the max-entry norm scaled by d_in
        return d_in * np.abs(g).max(), np.abs(g).sum() / d_in, np.sign(g) / d_in
    raise KeyError(name)


# ------------------------------------------------------------------------------------------------ family references
# Written from the papers (and, where the paper leaves a choice, the reference code's documented convention), in
# float64 numpy; nothing here reads normopt.


def project_l2_ball(x: np.ndarray, radius: float) -> np.ndarray:
    """Π_{‖x‖₂ ≤ r}(x) = x·min(1, r/‖x‖₂) in float64 (the vector x is the whole parameter tree, raveled)."""
    x = np.asarray(x, np.float64)
    n = np.linalg.norm(x)
    return x if n <= radius else x * (radius / n)


def dion(grads, q0: np.ndarray, *, mu: float, power_iters: int = 1) -> list[np.ndarray]:
    """Dion (Ahn et al. 2025, Algorithm 1; ``power_iters`` as ``power_iteration`` of microsoft/dion) on one matrix
    B = M read as [long side, short side], Q on the short side: the per-step directions P Qᵀ (before the shape
    factor and learning rate), float64.

        M ← M + G;  repeat k times: P ← orth(M Q), Q ← Mᵀ P;  R = Q;  M ← M − (1 − μ)·P Rᵀ;  Q ← R / ‖R‖_col;  u = P Qᵀ
    """
    q = np.asarray(q0, np.float64)
    m = np.zeros_like(np.asarray(grads[0], np.float64))
    out = []
    for g in grads:
        m = m + np.asarray(g, np.float64)
        r = q
        for _ in range(power_iters):
            p, _ = np.linalg.qr(m @ r)
            r = m.T @ p
        m = m - (1 - mu) * p @ r.T
        q = r / np.linalg.norm(r, axis=0, keepdims=True)
        out.append(p @ q.T)
    return out


def dion_rank(rank_fraction: float, m: int, n: int, multiple: int) -> int:
    """The reference's rank: r = fraction·min(m, n), rounded up to a multiple, capped at min(m, n)."""
    r = rank_fraction * min(m, n)
    return min(int(multiple * np.ceil(r / multiple)), m, n)


def fadam(grads, *, b1, b2, eps, clip, p, placement="outside") -> list[np.ndarray]:
    """FAdam (Hwang 2024, Algorithm 1) without weight decay, float64: the per-step directions m_t.

    ρ_t = β₂(1 − β₂^{t−1})/(1 − β₂^t),  f_t = ρ_t f + (1 − ρ_t) g²,  ε_t = ε·min(1, rms g),
    ḡ = g / D,  ḡ ← ḡ / max(1, rms(ḡ)/c),  m_t = β₁ m + (1 − β₁) ḡ, with the denominator D placed as
    ``placement``: "outside" f^p + ε_t, "power" f^p + ε_t^{2p}, "inside" (f + ε_t²)^p."""
    f = m = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        rho = b2 * (1 - b2 ** (t - 1)) / (1 - b2**t)
        f = rho * f + (1 - rho) * g * g
        e = eps * min(1.0, float(np.sqrt(np.mean(g * g))))
        d = {"outside": f**p + e, "power": f**p + e ** (2 * p), "inside": (f + e * e) ** p}[placement]
        nat = g / d
        nat = nat / max(1.0, float(np.sqrt(np.mean(nat * nat))) / clip)
        m = b1 * m + (1 - b1) * nat
        out.append(m)
    return out


def _sym_power(a: np.ndarray, power: float) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * w**power) @ v.T


def shampoo_absolute(grads, eps: float) -> list[np.ndarray]:
    """Shampoo (Gupta, Koren & Singer 2018, Algorithm 1) for a matrix, float64: L₀ = ε·I, R₀ = ε·I,
    L ← L + G Gᵀ, R ← R + Gᵀ G, the directions L^{−1/4} G R^{−1/4}."""
    g0 = np.asarray(grads[0], np.float64)
    left, right = eps * np.eye(g0.shape[0]), eps * np.eye(g0.shape[1])
    out = []
    for g in grads:
        g = np.asarray(g, np.float64)
        left, right = left + g @ g.T, right + g.T @ g
        out.append(_sym_power(left, -0.25) @ g @ _sym_power(right, -0.25))
    return out
