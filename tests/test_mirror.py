"""Mirror descent against its variational definition argmin_z η⟨g,z⟩ + D_ψ(z, x), solved by brute force."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import optimize

import normopt
from normopt import mirror


def test_euclidean_mirror_descent_is_sgd():
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "b": jnp.asarray(rng.normal(size=4))}
    grads = jax.tree.map(lambda x: x * 0.5 + 1.0, params)
    md, sgd = normopt.mirror_descent(0.1, mirror_map="euclidean"), optax.sgd(0.1)
    u_md, _ = md.update(grads, md.init(params), params)
    u_sgd, _ = sgd.update(grads, sgd.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), u_md, u_sgd)


def test_exponentiated_gradient_minimises_linear_plus_kl_on_the_simplex():
    rng = np.random.default_rng(1)
    x = rng.dirichlet(np.ones(5))
    g = rng.normal(size=5)
    eta = 0.7
    with jax.enable_x64(True):
        tx = normopt.exponentiated_gradient(eta)
        u, _ = tx.update(jnp.asarray(g), tx.init(jnp.asarray(x)), jnp.asarray(x))
        new = x + np.asarray(u)
    closed = x * np.exp(-eta * g) / np.sum(x * np.exp(-eta * g))
    np.testing.assert_allclose(new, closed, rtol=1e-12)
    res = optimize.minimize(
        lambda z: eta * g @ z + np.sum(z * np.log(z / x)),
        np.full(5, 0.2),
        method="SLSQP",
        bounds=[(1e-12, 1)] * 5,
        constraints=[{"type": "eq", "fun": lambda z: z.sum() - 1}],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    np.testing.assert_allclose(new, res.x, atol=1e-5)


def test_simplex_map_normalises_each_row_of_a_matrix_leaf():
    x = jnp.full((3, 4), 0.25)
    g = jnp.arange(12.0).reshape(3, 4)
    tx = normopt.exponentiated_gradient(1.0)
    u, _ = tx.update(g, tx.init(x), x)
    new = x + u
    np.testing.assert_allclose(new.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(new[0], np.exp(-np.arange(4.0)) / np.exp(-np.arange(4.0)).sum(), rtol=1e-5)


@pytest.mark.parametrize("p", [1.5, 3.0])
def test_p_norm_step_minimises_linear_plus_bregman(p):
    rng = np.random.default_rng(2)
    x, g = rng.normal(size=(2, 4))
    eta = 0.3
    mm = mirror.p_norm(p)
    with jax.enable_x64(True):
        xj = jnp.asarray(x)
        np.testing.assert_allclose(mm.to_primal(mm.to_dual(xj)), x, rtol=1e-10)  # ∇ψ* inverts ∇ψ
        np.testing.assert_allclose(mm.to_dual(xj), jax.grad(mm.potential)(xj), rtol=1e-10)
        tx = normopt.mirror_descent(eta, mirror_map=mm)
        u, _ = tx.update(jnp.asarray(g), tx.init(xj), xj)
        new = x + np.asarray(u)

    def psi(z):
        return 0.5 * np.sum(np.abs(z) ** p) ** (2 / p)

    def grad_psi(z):
        return np.sign(z) * np.abs(z) ** (p - 1) * np.sum(np.abs(z) ** p) ** (2 / p - 1)

    def objective(z):  # η⟨g, z⟩ + D_ψ(z, x), in numpy float64
        return eta * g @ z + psi(z) - psi(x) - grad_psi(x) @ (z - x)

    res = optimize.minimize(
        objective, x, jac=lambda z: eta * g + grad_psi(z) - grad_psi(x), method="BFGS", options={"gtol": 1e-12}
    )
    np.testing.assert_allclose(new, res.x, atol=1e-5)


def test_bregman_divergences_are_half_squared_distance_and_kl():
    rng = np.random.default_rng(3)
    z, x = rng.dirichlet(np.ones(4), size=2)
    with jax.enable_x64(True):
        zj, xj = jnp.asarray(z), jnp.asarray(x)
        np.testing.assert_allclose(mirror.bregman_divergence(mirror.euclidean(), zj, xj), 0.5 * np.sum((z - x) ** 2))
        np.testing.assert_allclose(mirror.bregman_divergence(mirror.simplex(), zj, xj), np.sum(z * np.log(z / x)))
        np.testing.assert_allclose(
            mirror.bregman_divergence(mirror.entropy(), 2 * zj, xj), np.sum(2 * z * np.log(2 * z / x) - 2 * z + x)
        )


def test_bad_input_raises_with_the_leaf_path():
    tx = normopt.exponentiated_gradient(0.1)
    with pytest.raises(ValueError, match=r"simplex: w: .*sum to 1"):
        tx.init({"w": jnp.array([0.5, 0.6])})
    with pytest.raises(ValueError, match=r"entropy: w: .*> 0"):
        normopt.mirror_descent(0.1, mirror_map="entropy").init({"w": jnp.array([1.0, -1.0])})
    with pytest.raises(ValueError, match="unknown mirror map"):
        normopt.mirror_descent(0.1, mirror_map="kl")
    with pytest.raises(ValueError, match="1 < p < inf"):
        mirror.p_norm(1.0)
    with pytest.raises(ValueError, match="with params"):
        tx.update(jnp.ones(2), tx.init(jnp.array([0.5, 0.5])))
