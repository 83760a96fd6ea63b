"""Draws the unit ball of every normopt norm, with a gradient g and its dualization, into docs/img/ball_<norm>.png.

    python docs/make_figures.py

The balls are computed, not drawn by hand: each picture is the level set ``norm(x) = 1`` of the library's own
``normopt.norms`` objects on a grid, the dot is ``dualize(g)`` from the same object, and the dashed line is
``{t : ⟨g, t⟩ = dual_norm(g)}``, which touches the ball exactly at the dot (the dualization is the point of the
ball furthest along g).

Vector norms are pictured on ℝ². A matrix norm is pictured on three planes of matrices, each spanned by two unit
entries E₁, E₂ (so ⟨a E₁ + b E₂, c E₁ + d E₂⟩ = ac + bd): the diagonal (A₀₀ = a, A₁₁ = b), one fan-in row
(A₀₀ = a, A₀₁ = b) and one fan-out column (A₀₀ = a, A₁₀ = b). Every dualization below maps these planes into
themselves, so the dot lies in the picture.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import normopt

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUT = Path(__file__).resolve().parent / "img"
G = np.array([1.0, 0.45])  # the gradient drawn in every panel (slice coordinates)

VECTOR_NORMS = {
    "l2": normopt.norms.l2(),
    "rms": normopt.norms.rms(),
    "linf": normopt.norms.linf(),
    "l1": normopt.norms.l1(),
}

# name -> (norm, matrix shape [fan_in, fan_out], what the shape stands for)
MATRIX_NORMS = {
    "spectral": (normopt.norms.spectral(method="svd"), (2, 2), "2×2"),
    "rms_to_rms": (normopt.norms.rms_to_rms(method="svd"), (2, 8), "hidden layer 2 → 8"),
    "l1_to_rms": (normopt.norms.l1_to_rms(), (2, 8), "embedding, 2 tokens → 8 features"),
    "rms_to_linf": (normopt.norms.rms_to_linf(), (8, 2), "head, 8 features → 2 logits"),
}
SLICES = {"diagonal": ((0, 0), (1, 1)), "one fan-in row": ((0, 0), (0, 1)), "one fan-out column": ((0, 0), (1, 0))}


def _embed(ab: jax.Array, shape: tuple[int, ...], where: tuple[tuple[int, int], ...]) -> jax.Array:
    """The matrix a·E₁ + b·E₂ of ``shape`` for ``ab = (a, b)``."""
    m = jnp.zeros(shape, ab.dtype)
    return m.at[where[0]].set(ab[0]).at[where[1]].set(ab[1])


def _panel(ax, norm, embed, restrict, title: str) -> None:
    """Draws the ball {norm(embed(a, b)) ≤ 1}, g, dualize(g) and the supporting line ⟨g, t⟩ = dual_norm(g)."""
    g = embed(jnp.asarray(G, jnp.float32))
    d = np.asarray(restrict(norm.dualize(g)))
    # Axis range: 1.4 × the larger of the ball's radii along the two axes.
    radii = [1.0 / float(norm.norm(embed(jnp.asarray(e, jnp.float32)))) for e in np.eye(2)]
    limit = 1.4 * max(radii + [float(np.abs(d).max())])
    grid = np.linspace(-limit, limit, 241)
    a, b = np.meshgrid(grid, grid)
    points = jnp.asarray(np.stack([a.ravel(), b.ravel()], axis=1), jnp.float32)
    values = np.asarray(jax.jit(jax.vmap(lambda p: norm.norm(embed(p))))(points)).reshape(a.shape)
    ax.contourf(a, b, values, levels=[0, 1], colors=["#cfe0f3"])
    ax.contour(a, b, values, levels=[1], colors=["#1f5fa8"], linewidths=2)

    dual = float(norm.dual_norm(g))
    # Supporting line {t : g·t = dual}, drawn as a segment through d along the direction orthogonal to g.
    along = np.array([-G[1], G[0]]) / np.linalg.norm(G)
    line = d[None, :] + np.linspace(-2, 2, 2)[:, None] * limit * along[None, :]
    np.testing.assert_allclose(G @ d, dual, rtol=1e-4, atol=1e-6)  # the dot really is on that line
    ax.plot(line[:, 0], line[:, 1], "--", color="#888888", linewidth=1)
    arrow = G / np.linalg.norm(G) * 0.45 * limit
    ax.annotate("", xy=arrow, xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": "#b2182b"})
    ax.text(*(arrow * 1.05 + [0.0, 0.05 * limit]), "g", color="#b2182b")
    ax.plot(*d, "o", color="#b2182b")
    ax.text(d[0] - 0.6 * limit, d[1] + 0.1 * limit, "dualize(g)", color="#b2182b", fontsize=8)
    ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal", title=title)
    ax.axhline(0, color="#dddddd", linewidth=0.5, zorder=0)
    ax.axvline(0, color="#dddddd", linewidth=0.5, zorder=0)
    ax.tick_params(labelsize=7)


def vector_figure(name: str, norm) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(3.2, 3.2))
    _panel(ax, norm, lambda p: p, lambda d: d, f"{name} on ℝ²")
    fig.tight_layout()
    return fig


def matrix_figure(name: str, norm, shape: tuple[int, int], label: str) -> plt.Figure:
    fig, axes = plt.subplots(1, len(SLICES), figsize=(3.0 * len(SLICES), 3.2))
    for ax, (slice_name, where) in zip(axes, SLICES.items(), strict=True):
        embed = lambda p, where=where: _embed(p, shape, where)
        restrict = lambda m, where=where: np.array([m[where[0]], m[where[1]]])
        _panel(ax, norm, embed, restrict, slice_name)
    fig.suptitle(f"{name}: {label}", fontsize=10)
    fig.tight_layout()
    return fig


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    figures = {name: vector_figure(name, norm) for name, norm in VECTOR_NORMS.items()}
    figures.update({name: matrix_figure(name, *spec) for name, spec in MATRIX_NORMS.items()})
    for name, fig in figures.items():
        fig.savefig(OUT / f"ball_{name}.png", dpi=90)
        plt.close(fig)
        print(OUT / f"ball_{name}.png")


if __name__ == "__main__":
    main()
