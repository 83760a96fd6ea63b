"""Orthogonalization kernels: the polar factor ``U Vᵀ`` of ``X = U Σ Vᵀ``.

Every iterative method here is an odd polynomial iteration on ``X₀ = X / (s·‖X‖_F + ε)``, run on the short
side (``A = X Xᵀ`` is the smaller Gram matrix)::

    A = X Xᵀ ;  X ← a·X + (b·A + c·A²)·X          # one row (a, b, c) of a (steps, 3) table

which maps every singular value σ ↦ aσ + bσ³ + cσ⁵ and leaves the singular vectors alone. A method is a
coefficient table (data) plus the input safety factor ``s``. Tables:

* Newton–Schulz cubic (1.5, −0.5, 0) and quintic/Padé (15/8, −10/8, 3/8): converge, but slowly from small σ.
* Jordan (3.4445, −4.7750, 2.0315), the Muon/optax default: fast, but only maps σ into a band ≈ [0.7, 1.1].
* You's 5- and 6-step tables (per-step coefficients, as used by Dion and optax's ``"dion"`` preset).
* Polar Express (Amsel, Persson, Musco, Gower 2025, arXiv:2505.16932): each step is the minimax-optimal odd
  quintic for the current interval of σ, greedily composed; converges to ``U Vᵀ`` for σ ∈ [10⁻³, 1]. Default,
  with safety ``s = 1.01`` so that round-off (bf16) cannot push σ above the interval.

Gram Newton–Schulz (Zhang, Amsel, Chen, Dao 2026) iterates on ``R = X Xᵀ`` instead of ``X``: with ``X_k = Q_k X₀``
and ``P_k = a I + b R_k + c R_k²`` it keeps ``Q_{k+1} = P_k Q_k`` and ``R_{k+1} = P_k R_k P_k`` (all polynomials
in R₀, so they commute and stay symmetric), and only touches the long side twice per restart. A restart
recomputes ``R`` from ``X`` to stop round-off drift: after step 2 (fp32/fp16; without it fp32 drifts ~1e-3 from
standard NS), after steps 2 and 4 (bf16). Fewer FLOPs than standard NS from aspect ratio ≈ 1.5 on.

For the Polar Express family the first step also tightens the scale for free: σ_max ≤ ‖X‖_S8 = ‖A²‖_F^(1/4),
much closer to σ_max than ‖X‖_F (1.1–1.5× vs 2–9× on 64–1024-wide matrices with log-spaced spectra), so the
small singular values start higher: worst |σ − 1| ≈ 0.2 instead of ≈ 0.6 at n = 64, spectrum in [1e-3, 1].

``"turbo"`` adds AOL preconditioning (Turbo-Muon, Boissin et al. 2025, arXiv:2512.04632; AOL: Prach & Lampert
2022, arXiv:2208.03160) on the short side, reusing the first step's Gram matrix: with A = X Xᵀ and
D = diag(Σⱼ |Aᵢⱼ|)^(−1/2), ‖D X‖₂ ≤ 1, and the iteration runs on D X (A ← D A D, no extra product), then
Schatten-8-tightened where that bound is smaller, with a 4-step Polar Express table for ℓ = 3·10⁻³. As in
Turbo-Muon, the result is the polar factor of D X, which is *not* U Vᵀ of X unless D ∝ I: a row rescaling of
the gradient (on log-spaced spectra with random singular vectors, ‖polar(D X) − U Vᵀ‖_F/√n ≈ 0.04–0.06). D does
not change σ_min/σ_max there either, so its 4 steps are far less accurate than the default's 5
(benchmarks/results/kernels.md: fro-err 0.29–0.31 vs 0.10). Where the short side's rows have very unequal scales
(256², rows × e^N(0,1)) its output is much closer to orthogonal (worst |σ − 1| 0.28 vs the default's 0.88) but
still not closer to X's U Vᵀ (‖O − U Vᵀ‖_F/√n 0.25 vs 0.22).

Speed (measured with benchmarks/kernels.py on a 2-core CPU): every product whose result is symmetric (``X Xᵀ``,
``A²``, all Gram-NS products) is formed blockwise from its upper triangle (0.6–0.75 of the GEMM FLOPs, exactly
symmetric output); ``polar_express`` switches to Gram-NS from aspect ratio 1.5 (measured 0.8× the standard
iteration's time there); batches of ≥ 64-wide matrices run one matrix at a time (``lax.map``: XLA:CPU's batched
dot was 25–50 % slower); steps run in a ``lax.scan`` over the table (as fast as unrolling here, compiles once).
"""

from __future__ import annotations

import functools
import itertools
import operator

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from normopt import _numerics

# Polar Express table published with the paper (ℓ = 1e-3, degree 5, cushion 0.02407327424182761, no safety).
POLAR_EXPRESS_TABLE = np.array(
    [
        (8.28721201814563, -23.595886519098837, 17.300387312530933),
        (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
        (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
        (3.3184196573706015, -2.488488024314874, 0.51004894012372),
        (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
        (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
        (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
        (1.875, -1.25, 0.375),
    ]
)
POLAR_EXPRESS_SAFETY = 1.01


def _with_safety(table: np.ndarray, safety: float) -> np.ndarray:
    """Rows but the last become (a/s, b/s³, c/s⁵): p(σ/s), robust to σ overshooting by a factor s."""
    out = np.array(table, dtype=np.float64)
    out[:-1] /= safety ** np.array([1.0, 3.0, 5.0])
    return out


COEFFICIENTS: dict[str, np.ndarray] = {
    "polar_express": _with_safety(POLAR_EXPRESS_TABLE, POLAR_EXPRESS_SAFETY),
    "jordan": np.array([(3.4445, -4.7750, 2.0315)]),
    "you": np.array(
        [
            (4.0848, -6.8946, 2.9270),
            (3.9505, -6.3029, 2.6377),
            (3.7418, -5.5913, 2.3037),
            (2.8769, -3.1427, 1.2046),
            (2.8366, -3.0525, 1.2012),
        ]
    ),
    "you6": np.array(
        [
            (3955, -8306, 5008),
            (3735, -6681, 3463),
            (3799, -6499, 3211),
            (4019, -6385, 2906),
            (2677, -3029, 1162),
            (2172, -1833, 682),
        ]
    )
    / 1024,
    "newton_schulz": np.array([(1.5, -0.5, 0.0)]),
    "newton_schulz_quintic": np.array([(15 / 8, -10 / 8, 3 / 8)]),
}
COEFFICIENTS["gram_newton_schulz"] = COEFFICIENTS["polar_express"]
# The authors' iteration as published (Amsel et al. 2025, Alg. 1 and its code): the same table on X₀ = G/(1.01·‖G‖_F),
# without normopt's Schatten-8 tightening or its switch to Gram-NS for non-square inputs.
COEFFICIENTS["polar_express_reference"] = COEFFICIENTS["polar_express"]
# Input is divided by s·‖X‖_F; s > 1 only for the Polar Express family (REFERENCES §2).
_INPUT_SAFETY = {
    "polar_express": POLAR_EXPRESS_SAFETY,
    "gram_newton_schulz": POLAR_EXPRESS_SAFETY,
    "polar_express_reference": POLAR_EXPRESS_SAFETY,
    "turbo": POLAR_EXPRESS_SAFETY,
}
# The methods whose input is rescaled by its Schatten-8 norm (a tighter bound on σ_max than ‖X‖_F).
_TIGHTENED = {"polar_express", "gram_newton_schulz", "turbo"}
# The methods that run on D X, D = AOL's diagonal row rescale of the short side (Turbo-Muon).
_AOL = {"turbo"}
# Tables that may be repeated past their length: single-row schedules, and Polar Express (last row = Padé).
_REPEATABLE = {
    "polar_express",
    "gram_newton_schulz",
    "polar_express_reference",
    "turbo",
    "jordan",
    "newton_schulz",
    "newton_schulz_quintic",
}
# Polar Express switches to Gram-NS at this aspect ratio (long/short side), measured in benchmarks/kernels.py.
GRAM_ASPECT_RATIO = 1.5


def default_steps(method: str | ArrayLike) -> int | None:
    """The step count :func:`orthogonalize` uses when ``steps=None``.

    Args:
      method: a name in ``METHODS`` or a coefficient table of shape (steps, 3).

    Returns:
      5 for every named iteration but ``"turbo"`` (4), the row count of a table, ``None`` for ``"svd"``.

    Raises:
      ValueError: for an unknown method name.
    """
    if isinstance(method, str):
        _check_name(method)
        return None if method == "svd" else TURBO_STEPS if method == "turbo" else 5
    return int(np.shape(method)[0])


def check_kernel(method: str | ArrayLike, steps: int | None, compute_dtype: str | None) -> None:
    """Checks a kernel choice; called by :func:`orthogonalize` and by every optimizer when it is built.

    Args:
      method: a name in ``METHODS`` or a coefficient table of shape (steps, 3).
      steps: ``None`` or a static Python int, at least 1 and, for a table that does not repeat its last row, at
        most its row count.
      compute_dtype: ``None`` or a floating dtype (name).

    Raises:
      ValueError: naming the argument, for an unknown method, a table of the wrong shape, ``steps`` out of range
        or a ``compute_dtype`` that is not a floating dtype.
      TypeError: when ``steps`` is not an int (a traced value under ``optax.inject_hyperparams`` included).
    """
    if isinstance(steps, jax.core.Tracer) or isinstance(steps, jax.Array):
        raise TypeError(
            "`steps` must be a static Python int, got a traced value; under optax.inject_hyperparams list it in "
            "`static_args` (e.g. optax.inject_hyperparams(normopt.muon, static_args=('steps',)))."
        )
    if isinstance(method, str):
        _check_name(method)
        name = "you6" if steps == 6 and method == "you" else method
        rows = None if name in _REPEATABLE or name == "svd" else len(COEFFICIENTS[name])
    else:
        shape = np.shape(method)
        if len(shape) != 2 or shape[1] != 3 or shape[0] < 1:
            raise ValueError(f"method: a coefficient table must have shape (steps, 3), got {shape}.")
        rows = shape[0]
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
            raise TypeError(f"steps must be a Python int or None, got {steps!r}")
        if steps < 1 or (rows is not None and steps > rows):
            allowed = "≥ 1" if rows is None else f"between 1 and {rows} (the rows of the {method!r} table)"
            raise ValueError(f"steps={steps} is out of range for method {method!r}; allowed: {allowed}.")
    _numerics.check_dtype("compute_dtype", compute_dtype)


def _check_name(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"Unknown orthogonalization method {method!r}; valid names: {', '.join(METHODS)}.")


def _optimal_odd_polynomial(lo: float, hi: float, degree: int) -> tuple[np.ndarray, float]:
    """Minimax odd polynomial p(t) = Σⱼ cⱼ t^(2j+1) of ``degree`` approximating 1 on [lo, hi] (Remez exchange),
    and max p on [lo, hi]. The error equioscillates at k + 1 = (degree + 3)/2 points: lo, the interior critical
    points of p, and hi."""
    k = (degree + 1) // 2
    powers = 2 * np.arange(k) + 1
    if lo / hi >= 1 - 5e-6:  # interval collapsed onto its midpoint: the Padé (Newton–Schulz) limit there
        pade = {3: [1.5, -0.5], 5: [15 / 8, -10 / 8, 3 / 8]}[degree]
        return np.array(pade) / ((lo + hi) / 2) ** powers, 1.0
    pts = lo + (hi - lo) * (1 - np.cos(np.pi * np.arange(k + 1) / k)) / 2
    signs = (-1.0) ** np.arange(k + 1)
    err = np.inf
    for _ in range(100):
        system = np.column_stack([pts[:, None] ** powers, signs])
        *coef, new_err = np.linalg.solve(system, np.ones(k + 1))
        coef, err_changed, err = np.array(coef), abs(new_err - err), new_err
        # critical points: p'(t) = Σ (2j+1) cⱼ t^(2j) = 0, a polynomial in t².
        roots = np.roots((powers * coef)[::-1])
        crit = np.sqrt(roots.real[(np.abs(roots.imag) < 1e-12) & (roots.real > 0)])
        crit = np.sort(crit[(crit > lo) & (crit < hi)])
        if err_changed <= 1e-15 or len(crit) != k - 1:
            break
        pts = np.concatenate([[lo], crit, [hi]])
    return coef, 1 + abs(err)


def polar_express_coefficients(
    steps: int = 8,
    lower: float = 1e-3,
    safety: float = 1.01,
    degree: int = 5,
    cushion: float = 0.02407327424182761,
    safety_in_recursion: bool = False,
) -> np.ndarray:
    """Polar Express schedule (Amsel et al. 2025, arXiv:2505.16932, Alg. 1 and App. G), shape (steps, 3).

    Greedy: with σ ∈ [ℓ, u] (ℓ = ``lower``, u = 1), step t uses the minimax odd polynomial p for
    [max(ℓ, cushion·u), u], rescaled so that p(ℓ) and p(u) sit symmetrically around 1; then
    ℓ ← p(ℓ), u ← 2 − ℓ. The cushion keeps the first steps' slope bounded (robust to round-off). ``safety`` s
    divides each row but the last as (a/s, b/s³, c/s⁵); ``orthogonalize`` then also divides its input by s.
    With the defaults and ``safety=1`` this regenerates ``POLAR_EXPRESS_TABLE`` (rows 1–7 to ~1e-12; row 8 is
    the Padé quintic (15/8, −10/8, 3/8)). ``degree=3`` gives cubic rows (a, b, 0). Runs offline in numpy.

    Args:
      steps: number of rows (iteration steps), ≥ 1.
      lower: ℓ, the smallest singular value (relative to the largest) the schedule is built for, in (0, 1).
      safety: s ≥ 1, the factor by which σ may overshoot 1 (round-off) without harm; 1 for the published table.
      degree: 5 (quintic rows (a, b, c)) or 3 (cubic rows (a, b, 0)).
      cushion: lower bound on the interval each step is optimal for, relative to its upper end.
      safety_in_recursion: apply the safety factor to each row *before* the next interval is computed (ℓ ← p(ℓ/s)),
        as the authors' generator does (and the tables of modded-nanogpt and ``pytorch-optimizer``); the default
        builds the schedule without it and scales the rows afterwards (≈1.4 % apart at ``safety=1.01``).

    Returns:
      A float64 numpy array of shape (steps, 3), usable as ``method`` of :func:`orthogonalize`.

    Raises:
      ValueError: for ``degree`` not 3 or 5, ``lower`` outside (0, 1), ``safety < 1`` or ``steps < 1``.

    Examples:
      >>> import numpy as np
      >>> from normopt import polar
      >>> table = polar.polar_express_coefficients(safety=1.0)
      >>> table.shape
      (8, 3)
      >>> bool(np.allclose(table, polar.POLAR_EXPRESS_TABLE, rtol=0, atol=1e-9))
      True
      >>> polar.polar_express_coefficients(steps=3, lower=0.1).round(3)  # for better-conditioned inputs
      array([[  5.548, -13.475,   9.261],
             [  2.11 ,  -1.467,   0.382],
             [  1.879,  -1.255,   0.375]])

    References:
      Amsel, Persson, Musco & Gower, `The Polar Express: optimal matrix sign methods and their application to the
      Muon algorithm <https://arxiv.org/abs/2505.16932>`_, 2025.
    """
    if degree not in (3, 5):
        raise ValueError(f"degree must be 3 or 5 (a (steps, 3) table), got {degree}.")
    if not 0 < lower < 1 or safety < 1 or steps < 1:
        raise ValueError(f"Need 0 < lower < 1, safety >= 1, steps >= 1; got {lower=}, {safety=}, {steps=}.")
    lo, hi = float(lower), 1.0
    rows = []
    odd = 2 * np.arange((degree + 1) // 2) + 1
    for t in range(steps):
        coef, p_hi = _optimal_odd_polynomial(max(lo, cushion * hi), hi, degree)
        p_lo = coef @ lo**odd
        coef = coef * 2 / (p_lo + p_hi)  # recentre: p(ℓ) and p(u) symmetric around 1
        if safety_in_recursion and t < steps - 1:
            coef = coef / safety**odd
        lo = coef @ lo**odd  # the new interval [ℓ', 2 − ℓ']
        hi = 2 - lo
        rows.append(np.pad(coef, (0, 3 - len(coef))))
    return np.array(rows) if safety_in_recursion else _with_safety(np.array(rows), safety)


# Turbo-Muon's AOL-preconditioned Polar Express: 4 steps by default, rows for the interval [3e-3, 1] (8 rows:
# rows 5–8 continue to the Padé quintic, so steps > 4 converge).
TURBO_STEPS = 4
TURBO_LOWER = 3e-3
COEFFICIENTS["turbo"] = polar_express_coefficients(8, lower=TURBO_LOWER, safety=POLAR_EXPRESS_SAFETY)
METHODS = (*COEFFICIENTS, "svd")


# ----------------------------------------------------------------------------------------------------------- JAX
# Symmetric products are split into blocks while the output side is at least this (at 256², splitting from 256 or
# 128 measured no faster: the 15 products of 5 steps already run at the single-GEMM rate there).
_MIN_SPLIT = 384
_MAP_MIN = 64  # batches of matrices with at least this short side are iterated one matrix at a time


def _sym_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` for a product known to be symmetric, from its upper block triangle (recursive 2×2 blocks)."""
    n = a.shape[-2]
    if n < _MIN_SPLIT:
        return a @ b
    h = n // 2
    c11 = _sym_matmul(a[..., :h, :], b[..., :, :h])
    c22 = _sym_matmul(a[..., h:, :], b[..., :, h:])
    c12 = a[..., :h, :] @ b[..., :, h:]
    top = jnp.concatenate([c11, c12], axis=-1)
    bottom = jnp.concatenate([jnp.swapaxes(c12, -1, -2), c22], axis=-1)
    return jnp.concatenate([top, bottom], axis=-2)


def _gram(x: jax.Array) -> jax.Array:
    return _sym_matmul(x, jnp.swapaxes(x, -1, -2))


def _prescale(x: jax.Array, safety: jax.Array, tighten: bool, aol: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """X, A = X Xᵀ and A² for the first step, with X first replaced by D X (``aol``: D = diag(Σⱼ|Aᵢⱼ|)^(−1/2), so
    ‖D X‖₂ ≤ 1 and A ← D A D) and then rescaled so that its bound on σ_max becomes 1/safety: the Schatten-8 norm
    ‖X‖_S8 = ‖A²‖_F^(1/4) = (Σσ⁸)^(1/8) ≥ σ_max (``tighten``; with ``aol`` the smaller of it and 1), else 1.
    ‖X‖_S8 is much closer to σ_max than ‖X‖_F, so small singular values start higher (better accuracy at equal
    steps). Neither costs an extra product: the first step needs A and A² anyway."""
    a = _gram(x)
    if aol:  # row sums in ≥ fp32; a zero row (zero input) gets d = 0 and stays zero
        rows = jnp.sum(jnp.abs(a.astype(safety.dtype)), axis=-1, keepdims=True)
        d = jnp.where(rows > 0, jax.lax.rsqrt(jnp.where(rows > 0, rows, 1)), 0)
        x = (d * x).astype(x.dtype)
        a = (d * a * jnp.swapaxes(d, -1, -2)).astype(a.dtype)
    a2 = _sym_matmul(a, a)
    if not tighten:
        alpha = jnp.asarray(1 / safety, x.dtype)
        return alpha * x, alpha**2 * a, alpha**4 * a2
    s8 = jnp.sum(jnp.square(a2.astype(safety.dtype)), axis=(-2, -1), keepdims=True) ** 0.125
    if aol:
        s8 = jnp.minimum(s8, 1)
    alpha = jnp.where(s8 > 0, 1 / (safety * jnp.where(s8 > 0, s8, 1)), 1).astype(x.dtype)
    return alpha * x, alpha**2 * a, alpha**4 * a2


def _combine(*terms: ArrayLike) -> jax.Array:
    """Σᵢ cᵢ·Mᵢ for ``terms = (c₁, M₁, c₂, M₂, ...)``, computed in the coefficients' ≥ fp32 dtype and stored in
    M₁'s dtype (PyTorch's "opmath" for bf16: coefficients are not rounded to bf16, only the result is)."""
    dtype = terms[1].dtype
    acc_dtype = jnp.promote_types(jnp.result_type(*terms[::2]), jnp.float32)
    acc = sum(c * m.astype(acc_dtype) for c, m in zip(terms[::2], terms[1::2], strict=True))
    return acc.astype(dtype)


def _newton_schulz(x: jax.Array, table: jax.Array, safety: jax.Array, tighten: bool, aol: bool) -> jax.Array:
    """Standard iteration, 3 products per step (two of them symmetric): X ← aX + (bA + cA²)X, A = X Xᵀ."""

    def step(x, abc, a=None, a2=None):
        if a is None:
            a = _gram(x)
        ca2 = _sym_matmul(_combine(abc[2], a), a) if a2 is None else _combine(abc[2], a2)  # (c·A)·A: optax's order
        return _combine(abc[0], x, 1.0, _combine(abc[1], a, 1.0, ca2) @ x)

    if tighten or aol:
        x, a, a2 = _prescale(x, safety, tighten, aol)
        x = step(x, table[0], a, a2)
        table = table[1:]
    return jax.lax.scan(lambda x, abc: (step(x, abc), None), x, table)[0]


def _gram_newton_schulz(
    x: jax.Array, table: jax.Array, safety: jax.Array, tighten: bool, aol: bool, restarts: tuple[int, ...]
) -> jax.Array:
    """Gram Newton–Schulz: X_k = Q_k X₀ with R = X Xᵀ, P = aI + bR + cR², Q ← PQ, R ← P(PR)."""
    eye = jnp.eye(x.shape[-2], dtype=x.dtype)
    poly = lambda r, r2, abc: abc[0] * eye + abc[1] * r + abc[2] * r2
    bounds = [0, *sorted(k for k in set(restarts) if 0 < k < table.shape[0]), table.shape[0]]
    for start, stop in itertools.pairwise(bounds):
        if (tighten or aol) and start == 0:
            x, r, r2 = _prescale(x, safety, tighten, aol)
        else:
            r = _gram(x)
            r2 = _sym_matmul(r, r)
        q = poly(r, r2, table[start])
        if stop - start > 1:
            r = _sym_matmul(q, _sym_matmul(q, r))

            def step(carry, abc):
                q, r = carry
                p = poly(r, _sym_matmul(r, r), abc)
                return (_sym_matmul(p, q), _sym_matmul(p, _sym_matmul(p, r))), None

            q, r = jax.lax.scan(step, (q, r), table[start + 1 : stop - 1])[0]
            q = _sym_matmul(poly(r, _sym_matmul(r, r), table[stop - 1]), q)
        x = q @ x
    return x


def _svd_polar(x: jax.Array) -> jax.Array:
    """Exact U Vᵀ from the reduced SVD; directions with σ ≤ n·eps·σ_max (including all of x = 0) map to 0."""
    u, s, vh = jnp.linalg.svd(x, full_matrices=False)
    tol = max(x.shape[-2:]) * jnp.finfo(x.dtype).eps * s[..., :1]
    return (u * (s > tol)[..., None, :]) @ vh


@functools.partial(jax.jit, static_argnames=("kind", "compute_dtype", "tighten", "aol", "restarts"))
def _orthogonalize(
    x, table, scale, eps, *, kind: str, compute_dtype: str, tighten: bool, aol: bool, restarts: tuple[int, ...]
):
    out_dtype = x.dtype
    acc = _numerics.compute_dtype(jnp.dtype(compute_dtype))  # normalization in ≥ fp32
    x = x.astype(acc)
    if kind == "svd":
        return _svd_polar(x).astype(out_dtype)
    tall = x.shape[-2] > x.shape[-1]
    if tall:  # work on the short side: A = X Xᵀ is the smaller Gram matrix
        x = jnp.swapaxes(x, -1, -2)
    scale = jnp.asarray(scale, acc)
    # The standard iteration keeps its coefficients in ≥ fp32 (bf16 would run Jordan's 3.4445 as 3.4375, and a
    # bf16 result 2–3× further from fp32's). Gram-NS, precision-fragile, diverged in bf16 on square inputs with fp32
    # coefficients (σ_max 17 vs 1.9 on 64×64 Gaussians), so it keeps the compute-dtype arithmetic it was tuned with.
    table = table.astype(acc if kind == "ns" else compute_dtype)

    def iterate(x):
        x = (x / (scale * jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) + eps)).astype(compute_dtype)
        if kind == "gram":
            return _gram_newton_schulz(x, table, scale, tighten, aol, restarts)
        return _newton_schulz(x, table, scale, tighten, aol)

    shape = x.shape
    if x.ndim > 2 and shape[-2] >= _MAP_MIN:  # one matrix at a time: XLA:CPU's batched dot is ~25 % slower
        x = jax.lax.map(iterate, x.reshape(-1, *shape[-2:])).reshape(shape)
    else:
        x = iterate(x)
    if tall:
        x = jnp.swapaxes(x, -1, -2)
    return x.astype(out_dtype)


def orthogonalize(
    x: jax.Array,
    method: str | ArrayLike = "polar_express",
    steps: int | None = None,
    *,
    compute_dtype: str | None = None,
    eps: float = 1e-7,
) -> jax.Array:
    """Approximate polar factor ``U Vᵀ`` of each matrix ``x[..., :, :] = U Σ Vᵀ`` (leading axes are batch axes).

    Every iterative method maps X₀ = x / (s·‖x‖_F + ε) through ``steps`` odd polynomial steps, on the short side::

        A = X Xᵀ ;  X ← a·X + (b·A + c·A²)·X          # one row (a, b, c) of the method's (steps, 3) table

    so each singular value σ ↦ aσ + bσ³ + cσ⁵ and the singular vectors stay. Polar Express (the default)
    converges to ``U Vᵀ`` for σ ∈ [10⁻³, 1]·σ_max: worst |σ − 1| ≈ 0.12 after 5 steps, ≈ 1e-3 after 6; Jordan's
    table only maps σ into a band ≈ [0.7, 1.1].

    Args:
      x: array of shape (..., m, n); the same shape and dtype come back. ``x = 0`` gives exactly 0.
      method: one of ``METHODS`` — ``"polar_express"`` (default; Gram-NS automatically when
        max(m, n)/min(m, n) ≥ ``GRAM_ASPECT_RATIO``), ``"jordan"``, ``"you"`` (``steps=6`` selects ``"you6"``),
        ``"newton_schulz"``, ``"newton_schulz_quintic"``, ``"gram_newton_schulz"`` (Polar Express polynomial),
        ``"polar_express_reference"`` (the authors' iteration exactly: X₀ = G/(1.01·‖G‖_F + eps), standard steps,
        no Schatten-8 rescale, no Gram-NS switch), ``"turbo"`` (Turbo-Muon: AOL-preconditioned Polar Express,
        4 steps by default; returns the polar factor of D x for a diagonal row rescale D of the short side, not
        exactly x's U Vᵀ — see the module notes), ``"svd"`` (exact reference) — or a coefficient table of shape
        (steps, 3), applied with safety 1.
      steps: static Python int; ``None`` means ``default_steps(method)``. Polar Express and single-row tables
        repeat their last row; other tables allow at most their row count. Under ``optax.inject_hyperparams``
        pass it in ``static_args``.
      compute_dtype: dtype to iterate in: ``"float32"``, ``"bfloat16"`` (TPU default), ... ``None`` means float32
        (float64 for float64 input). Normalization is always done in ≥ float32.
      eps: added to the denominator s·‖x‖_F.

    Returns:
      An array of the shape and dtype of ``x``: each matrix's approximate ``U Vᵀ`` (singular values near 1).

    Raises:
      ValueError: for ``x`` with fewer than 2 dimensions or an invalid ``method``, ``steps`` or ``compute_dtype``
        (:func:`check_kernel`).
      TypeError: for a non-floating ``x`` or a ``steps`` that is not a Python int.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import normopt
      >>> g = jax.random.normal(jax.random.key(0), (64, 32))
      >>> u = normopt.orthogonalize(g)  # Polar Express, 5 steps
      >>> u.shape, u.dtype
      ((64, 32), dtype('float32'))
      >>> sigma = jnp.linalg.svd(normopt.orthogonalize(g, steps=8), compute_uv=False)
      >>> bool(jnp.allclose(sigma, 1.0, atol=1e-5))
      True
      >>> exact = normopt.orthogonalize(g, "svd")  # reference U Vᵀ from the SVD, for tests

    References:
      Jordan et al., `Muon: an optimizer for hidden layers in neural networks
      <https://kellerjordan.github.io/posts/muon/>`_, 2024.

      Amsel, Persson, Musco & Gower, `The Polar Express: optimal matrix sign methods and their application to the
      Muon algorithm <https://arxiv.org/abs/2505.16932>`_, 2025.

      Bernstein & Newhouse, `Old optimizer, new norm: an anthology <https://arxiv.org/abs/2409.20325>`_, 2024.

      Boissin, Massena, Mamalet & Serrurier, `Turbo-Muon: accelerating orthogonality-based optimization with
      pre-conditioning <https://arxiv.org/abs/2512.04632>`_, 2025.
    """
    check_kernel(method, steps, compute_dtype)
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"orthogonalize needs an array of shape (..., m, n), got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"orthogonalize needs a floating-point array, got dtype {x.dtype}; cast it first.")
    if compute_dtype is None:
        compute_dtype = _numerics.compute_dtype(x).name
    compute_dtype = jnp.dtype(compute_dtype).name
    name = method if isinstance(method, str) else None
    if name is None:
        table = np.asarray(method) if not isinstance(method, jax.Array) else method
    else:
        if name == "you" and steps == 6:
            name = "you6"
        table = COEFFICIENTS.get(name)
    steps = default_steps(method) if steps is None else operator.index(steps)
    if name == "svd":
        kind, table = "svd", np.zeros((1, 3))
    else:
        if steps > table.shape[0]:
            table = np.concatenate([table, np.repeat(table[-1:], steps - table.shape[0], axis=0)])
        table = table[:steps]
        m, n = x.shape[-2:]
        wide = max(m, n) >= GRAM_ASPECT_RATIO * min(m, n)
        gram = name == "gram_newton_schulz" or (name in ("polar_express", "turbo") and wide)
        kind = "gram" if gram else "ns"
    restarts = (2, 4) if compute_dtype == "bfloat16" else (2,)
    # Schatten-8 tightening only for the Polar Express family (designed for σ ∈ [ℓ, 1]); fp16 would underflow σ⁸.
    tighten = name in _TIGHTENED and compute_dtype != "float16"
    return _orthogonalize(
        x,
        jnp.asarray(table),
        _INPUT_SAFETY.get(name, 1.0),
        eps,
        kind=kind,
        compute_dtype=compute_dtype,
        tighten=tighten,
        aol=name in _AOL,
        restarts=restarts,
    )
