"""Shared pieces of the reliability tests (checkpoints, integrations, dtypes, adversarial input).

A small parameter tree with every kind of leaf normopt reads differently (a Dense kernel, a bias, a stack of
matrices, a conv kernel under a path containing "conv"), a deterministic loss, and every optimizer normopt ships,
built from its public factory. Add new optimizers to ``OPTIMIZERS``: every reliability test runs over it.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import normopt


def small_params(dtype=jnp.float32, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)  # numpy, not jax.random: compiling the PRNG costs seconds on CPU
    normal = lambda shape, scale: jnp.asarray(rng.standard_normal(shape) * scale, dtype)
    return {
        "dense": {"kernel": normal((8, 16), 1 / 3), "bias": normal((16,), 1 / 3)},
        "stack": normal((2, 8, 8), 1 / 3),
        "conv": {"kernel": normal((3, 3, 4, 8), 1 / 6)},
    }


def loss(params: dict, step: jax.Array) -> jax.Array:
    """A smooth non-quadratic loss whose gradient changes with ``step``, so momentum states keep evolving."""
    total = 0.0
    for i, leaf in enumerate(jax.tree.leaves(params)):
        target = jnp.sin(jnp.arange(leaf.size, dtype=jnp.float32).reshape(leaf.shape) * (0.37 + i) + step)
        x = leaf.astype(jnp.float32)
        total = total + jnp.sum((x - target) ** 2) + 0.1 * jnp.sum(jnp.tanh(x) ** 4)
    return total


_grad = jax.jit(jax.grad(loss))


def grads(params: dict, step) -> dict:
    return _grad(params, jnp.asarray(step, jnp.float32))


def _matrix_or_vector(path, leaf):
    return "rms_to_rms" if leaf.ndim >= 2 else "rms"


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "muon": lambda lr=0.02, **kw: normopt.muon(lr, **({"weight_decay": 0.01} | kw)),
    "scion": lambda lr=0.02, **kw: normopt.scion(lr, constrained=True, **kw),
    "steepest_descent": lambda lr=0.02, **kw: normopt.steepest_descent(
        lr, _matrix_or_vector, **({"momentum": 0.9, "nesterov": True, "weight_decay": 0.01} | kw)
    ),
    "sign_sgd": lambda lr=0.02, **kw: normopt.sign_sgd(lr, momentum=0.9, **kw),
    "normalized_sgd": lambda lr=0.02, **kw: normopt.normalized_sgd(lr, momentum=0.9, **kw),
    "dualize": lambda lr=0.02, **kw: optax.chain(
        normopt.dualize(_matrix_or_vector, mode="regularized", **kw), optax.scale_by_learning_rate(lr)
    ),
    "momentum": lambda lr=0.02, **kw: optax.chain(
        normopt.momentum(0.9, nesterov=True, **kw), optax.scale_by_learning_rate(lr)
    ),
    "dion": lambda lr=0.02, **kw: normopt.dion(lr, **({"weight_decay": 0.01} | kw)),
    "fadam": lambda lr=0.02, **kw: normopt.fadam(lr, **kw),
    "shampoo": lambda lr=0.02, **kw: normopt.shampoo(lr, **kw),
    "mirror_descent": lambda lr=0.02, **kw: normopt.mirror_descent(lr, mirror_map="euclidean", **kw),
    "manifold_muon": lambda lr=0.02, **kw: normopt.manifold_muon(lr, **kw),
    "prox_l1": lambda lr=0.02, **kw: optax.chain(optax.sgd(lr, momentum=0.9), normopt.prox_l1(lr, strength=0.01), **kw),
    "soap": lambda lr=0.02, **kw: normopt.soap(lr, **({"weight_decay": 0.01} | kw)),
    "splus": lambda lr=0.02, **kw: normopt.splus(lr, **kw),
    "normuon": lambda lr=0.02, **kw: normopt.normuon(lr, **({"weight_decay": 0.01} | kw)),
    "muonh": lambda lr=0.02, **kw: normopt.muonh(lr, **kw),
    "adamh": lambda lr=0.02, **kw: normopt.adamh(lr, **kw),
}
"""name -> factory(lr, **kwargs): every optimizer and transformation normopt ships, with momentum switched on
where it has any (so that its state is not trivial)."""

FRONTIER = ("normuon", "muonh", "adamh", "manifold_muon", "soap", "splus")
"""The 2025–26 optimizers: their own test files run in the fast suite, their sweeps over this registry with the slow
tests (``make test-slow``), so that the fast suite stays under 3 minutes on 2 cores."""


FAMILY = ("dion", "fadam", "shampoo", "mirror_descent", "prox_l1")
"""The wider family: each has its own fast test file; its sweeps over this registry also run with the slow tests."""


def cases(names) -> list:
    """``names`` as pytest parameters, the :data:`FRONTIER` and :data:`FAMILY` ones marked slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in FRONTIER + FAMILY else n for n in names]


DECAY = {"muon": 0.01, "scion": 1.0, "steepest_descent": 0.01, "dion": 0.01, "normuon": 0.01, "soap": 0.01}
"""Decoupled weight decay λ of each default optimizer above on its normed leaves (scion: constrained, λ = 1)."""

ADAMW_FALLBACK = ("muon", "dion", "normuon", "muonh", "adamh", "manifold_muon")
"""Optimizers that send vectors (< 2-D leaves) to optax's AdamW, with Adam's ε and its ν = g²."""

SECOND_MOMENTS = ("fadam", "shampoo", "soap", "splus", *ADAMW_FALLBACK)
"""Optimizers whose state holds squared gradients (Adam's ν, Shampoo's G Gᵀ): not scale-free, and in fp32 their
squares underflow below |g| ≈ 1e-19 and overflow above ≈ 1e19 (see docs/reliability.md)."""

FP32_STATE = ("shampoo", "dion", "normuon", "muonh", "adamh", "soap", "splus")
"""Optimizers that keep (part of) their state in fp32 whatever the params' dtype (Kronecker factors, Dion's Q)."""


@functools.cache
def optimizer(name: str) -> optax.GradientTransformation:
    """The default optimizer called ``name``, one object per name so that jit caches are shared across tests."""
    return OPTIMIZERS[name]()


@functools.cache
def update(name: str) -> Callable:
    """``optimizer(name).update`` jitted as ``(params, state, grads) -> (updates, state)``, shared across tests
    (compilations dominate the test time on CPU)."""
    tx = optimizer(name)
    return jax.jit(lambda params, state, g: tx.update(g, state, params))


def is_finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact))
