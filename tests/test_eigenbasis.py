"""SOAP and SPlus (normopt.family.eigenbasis) against float64 numpy ports of the authors' code:

* SPlus: kvfrans/splus ``optax/splus.py`` at d96bd16bc6c937256e2a28e5bf2cbd8c4984da68 (update_fn + shape_scaling);
* SOAP: nikhilvyas/SOAP ``soap.py`` at a1e553530fde97d0e6b307d7c82ac6d38b072340 (step, update_preconditioner,
  get_orthogonal_matrix, get_orthogonal_matrix_QR), i.e. Algorithms 3 and 4 of arXiv:2409.11321.

The ports are re-implemented from reading the code (nothing is imported). Stacked leaves are compared slice by
slice (each slice its own matrix, normopt's reading; the references see one 2-D matrix at a time).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import normopt
from normopt.family import eigenbasis
from normopt.family.eigenbasis import scale_by_eigenbasis, soap, splus, splus_eval_params


# ------------------------------------------------------------------------------------------- SPlus reference
class SPlusRef:
    """kvfrans/splus optax/splus.py for one 2-D matrix or one vector, float64."""

    def __init__(self, shape, b1, b2, ema_rate, k, max_dim, constant, nonstandard=False):
        self.b1, self.b2, self.ema_rate, self.k = b1, b2, ema_rate, k
        self.m, self.ema, self.step = np.zeros(shape), np.zeros(shape), 0
        two_d = len(shape) == 2
        self.sides = [np.zeros((d, d)) if d < max_dim else None for d in shape] if two_d else None
        self.q = [np.eye(d) if d < max_dim else None for d in shape] if two_d else None
        standard = two_d and not nonstandard and shape[0] < max_dim and shape[1] < max_dim
        self.scale = 2 / (shape[0] + shape[1]) if standard else constant

    def update(self, g, params, lr, wd):
        self.step += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        if self.q is None:
            u = np.sign(self.m)
        else:
            r = self.m
            r = self.q[0].T @ r if self.q[0] is not None else r
            r = r @ self.q[1] if self.q[1] is not None else r
            u = np.sign(r)
            u = self.q[0] @ u if self.q[0] is not None else u
            u = u @ self.q[1].T if self.q[1] is not None else u
            outer = [g @ g.T, g.T @ g]
            self.sides = [
                None if s is None else self.b2 * s + (1 - self.b2) * o for s, o in zip(self.sides, outer, strict=True)
            ]
        self.ema = self.ema_rate * self.ema + (1 - self.ema_rate) * params
        if self.q is not None and (self.step % self.k == 0 or self.step == 1):
            self.q = [None if s is None else np.linalg.eigh(s + 1e-30 * np.eye(len(s)))[1] for s in self.sides]
        return -lr * (u + wd * params) * self.scale


# -------------------------------------------------------------------------------------------- SOAP reference
class SoapRef:
    """nikhilvyas/SOAP soap.py (merge_dims=False, precondition_1d=False, weight_decay=0) for one 2-D matrix or one
    vector, float64. Q[i] is None for a side that is not preconditioned."""

    def __init__(self, shape, b1, b2, shampoo_beta, eps, f, max_dim):
        self.b1, self.b2, self.beta, self.eps, self.f = b1, b2, shampoo_beta, eps, f
        self.exp_avg, self.exp_avg_sq, self.step, self.q = np.zeros(shape), np.zeros(shape), 0, None
        self.gg = [np.zeros((d, d)) if d <= max_dim else None for d in shape] if len(shape) == 2 else [None]

    def project(self, x):
        if self.q[0] is not None:
            x = self.q[0].T @ x
        if len(self.q) == 2 and self.q[1] is not None:
            x = x @ self.q[1]
        return x

    def project_back(self, x):
        if self.q[0] is not None:
            x = self.q[0] @ x
        if len(self.q) == 2 and self.q[1] is not None:
            x = x @ self.q[1].T
        return x

    def update_preconditioner(self, g):
        if self.q is not None:
            self.exp_avg = self.project_back(self.exp_avg)
        if g.ndim == 2:
            outer = [g @ g.T, g.T @ g]
            self.gg = [
                None if s is None else self.beta * s + (1 - self.beta) * o for s, o in zip(self.gg, outer, strict=True)
            ]
        if self.q is None:  # eigh, eigenvalues descending
            self.q = [None if s is None else np.flip(np.linalg.eigh(s + 1e-30 * np.eye(len(s)))[1], 1) for s in self.gg]
        if self.step > 0 and self.step % self.f == 0:
            new = []
            for ind, (s, o) in enumerate(zip(self.gg, self.q, strict=True)):
                if s is None:
                    new.append(None)
                    continue
                order = np.argsort(-np.diag(o.T @ s @ o), kind="stable")
                self.exp_avg_sq = np.take(self.exp_avg_sq, order, axis=ind)
                new.append(np.linalg.qr(s @ o[:, order])[0])
            self.q = new
        if self.step > 0:
            self.exp_avg = self.project(self.exp_avg)

    def update(self, g, lr):
        if self.q is None:  # the first gradient only builds the preconditioner
            self.update_preconditioner(g)
            return np.zeros_like(g)
        gp = self.project(g)
        self.step += 1
        self.exp_avg = self.b1 * self.exp_avg + (1 - self.b1) * gp
        self.exp_avg_sq = self.b2 * self.exp_avg_sq + (1 - self.b2) * gp**2
        denom = np.sqrt(self.exp_avg_sq) + self.eps
        step_size = lr * np.sqrt(1 - self.b2**self.step) / (1 - self.b1**self.step)
        u = -step_size * self.project_back(self.exp_avg / denom)
        self.update_preconditioner(g)
        return u


def _slices(x):
    """A leaf as a list of 2-D matrices (a stack: its slices) or of itself (a matrix or a vector)."""
    return list(x) if x.ndim == 3 else [x]


def _range_projector(g):
    u, s, _ = np.linalg.svd(g, full_matrices=False)
    u = u[:, s > 1e-10 * s[0]]
    return u @ u.T


def test_splus_matches_the_authors_update_step_by_step():
    """12 steps, eigendecompositions at steps 1, 5, 10; a tall matrix (both sides rotated), a wide one whose long
    side exceeds max_dim (one side rotated, constant scale), a stack of two matrices marked nonstandard (the
    authors' "embed"/"layernorm" rule: constant scale) and a vector; weight decay, the shape scale and the params
    EMA included.

    After the step-1 eigh, L = G₁G₁ᵀ of the 6×4 matrix has a 2-dimensional null space whose eigenbasis is
    arbitrary (any orthonormal basis is right; sign(·) depends on it): for updates 2–5 (the refresh at step 5
    follows its update) that leaf is compared on range(G₁), where the basis is unique; from step 6 on the basis
    comes from a full-rank L and the whole update is compared."""
    rng = np.random.default_rng(0)
    shapes = {"w": (6, 4), "wide": (3, 12), "stack": (2, 3, 3), "b": (5,)}
    lr, b1, b2, wd, r, k, max_dim, c = 0.3, 0.9, 0.8, 0.1, 0.7, 5, 10, 0.001
    params = {n: rng.standard_normal(s) for n, s in shapes.items()}
    refs = {
        n: [SPlusRef(x.shape, b1, b2, r, k, max_dim, c, nonstandard=n == "stack") for x in _slices(params[n])]
        for n in shapes
    }
    with jax.enable_x64(True):
        tx = splus(
            lr,
            b1=b1,
            b2=b2,
            weight_decay=wd,
            precondition_frequency=k,
            max_precond_dim=max_dim - 1,
            nonstandard={n: n == "stack" for n in shapes},
            nonstandard_constant=c,
            ema_rate=r,
        )
        state = tx.init(jax.tree.map(jnp.asarray, params))
        step = jax.jit(tx.update)
        for t in range(1, 13):
            g = {n: rng.standard_normal(s) for n, s in shapes.items()}
            if t == 1:
                projector = _range_projector(g["w"])
            want = {
                n: np.stack(
                    [
                        ref.update(gs, ps, lr, wd)
                        for ref, gs, ps in zip(refs[n], _slices(g[n]), _slices(params[n]), strict=True)
                    ]
                )
                for n in shapes
            }
            want = {n: w.reshape(shapes[n]) for n, w in want.items()}
            u, state = step(jax.tree.map(jnp.asarray, g), state, jax.tree.map(jnp.asarray, params))
            for n in shapes:
                got, ref = np.asarray(u[n]), want[n]
                if n == "w" and 2 <= t <= k:  # updates 2..5 use the step-1 basis
                    got, ref = projector @ got, projector @ ref
                np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12, err_msg=f"step {t} {n}")
            params = {n: params[n] + want[n] for n in shapes}  # both driven by the reference's params
        ema = splus_eval_params(state)
        for n in shapes:
            want = np.stack([ref.ema / (1 - r**12) for ref in refs[n]]).reshape(shapes[n])
            np.testing.assert_allclose(ema[n], want, rtol=1e-12, err_msg=n)
        assert step._cache_size() == 1  # the refreshes ran under lax.switch: one compilation


def test_soap_matches_the_reference_code_step_by_step():
    """12 gradients (the first only builds the basis), QR power-iteration refreshes at SOAP steps 3, 6, 9, 12; a
    square matrix, a wide one whose long side exceeds max_precond_dim (one side rotated), a stack of two matrices
    and a vector (plain Adam); the reference permutes V, normopt re-orders the basis instead."""
    rng = np.random.default_rng(1)
    shapes = {"w": (4, 4), "wide": (3, 8), "stack": (2, 3, 3), "b": (5,)}
    lr, b1, b2, beta, eps, f, max_dim = 0.05, 0.9, 0.8, 0.7, 1e-3, 3, 6
    refs = {
        n: [SoapRef(x.shape, b1, b2, beta, eps, f, max_dim) for x in _slices(np.zeros(s))] for n, s in shapes.items()
    }
    with jax.enable_x64(True):
        tx = soap(lr, b1=b1, b2=b2, eps=eps, shampoo_beta=beta, precondition_frequency=f, max_precond_dim=max_dim)
        state = tx.init({n: jnp.zeros(s, jnp.float64) for n, s in shapes.items()})
        step = jax.jit(tx.update)
        for t in range(12):
            g = {n: rng.standard_normal(s) for n, s in shapes.items()}
            want = {
                n: np.stack([ref.update(gs, lr) for ref, gs in zip(refs[n], _slices(g[n]), strict=True)])
                for n in shapes
            }
            u, state = step(jax.tree.map(jnp.asarray, g), state)
            for n in shapes:
                np.testing.assert_allclose(u[n], want[n].reshape(shapes[n]), rtol=1e-9, atol=1e-12, err_msg=f"{t} {n}")
        assert step._cache_size() == 1


# ------------------------------------------------------------------------------------------ adversarial input
@pytest.fixture(scope="module")
def runs():
    """One fp32 compilation each of soap and splus (refresh every 2nd step); stacks: the reference tests."""
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    txs = {"soap": soap(0.1, precondition_frequency=2), "splus": splus(0.1, precondition_frequency=2)}
    return params, {n: (tx, jax.jit(tx.update)) for n, tx in txs.items()}


@pytest.mark.parametrize("name", ["soap", "splus"])
def test_zero_gradient_is_a_zero_step_across_refreshes(runs, name):
    params, txs = runs
    tx, step = txs[name]
    state = tx.init(params)
    for _ in range(4):  # eigh on zero factors, then power/eigh refreshes of zero factors
        u, state = step(jax.tree.map(jnp.zeros_like, params), state, params)
        assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(u))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state))


@pytest.mark.parametrize("name", ["soap", "splus"])
def test_nan_stays_visible_and_degenerate_gradients_stay_finite(runs, name):
    params, txs = runs
    tx, step = txs[name]
    rng = np.random.default_rng(2)
    rank_one = {
        k: jnp.asarray(rng.standard_normal(x.shape[:-1] + (1,)) * rng.standard_normal(x.shape[-1]))
        for k, x in params.items()
    }
    scales = jnp.asarray(np.logspace(0, -6, 3), jnp.float32)
    state = tx.init(params)
    for g in (rank_one, {k: v * scales[: v.shape[-1]] if v.shape[-1] == 3 else v for k, v in rank_one.items()}):
        u, state = step(g, state, params)  # rank-1, then columns scaled over 6 decades
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((u, state)))
    bad = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), rank_one)
    u, _ = step(bad, state, params)
    assert all(not bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))
    u, _ = step(bad, tx.init(params), params)  # also on SOAP's warm-up step (0·G)
    assert all(not bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))


def test_factors_and_bases_are_fp32_for_low_precision_params():
    params = {"w": jnp.ones((4, 3), jnp.bfloat16), "b": jnp.ones(3, jnp.float16)}
    for tx in (soap(0.1), splus(0.1)):
        state = tx.init(params)
        inner = state[0]
        for tree in (inner.left, inner.right, inner.q_left, inner.q_right, inner.mu):
            assert {x.dtype for x in jax.tree.leaves(tree)} == {jnp.dtype(jnp.float32)}
    assert tx.init(params)[0].left["b"].shape == ()  # vectors keep no factor


def test_large_sides_keep_no_factor():
    state = soap(0.1, max_precond_dim=5).init({"w": jnp.ones((3, 8))})[0]
    assert state.left["w"].shape == (3, 3) and state.right["w"].shape == () and state.q_right["w"].shape == ()


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "factory,kwargs,error",
    [
        (soap, {"precondition_frequency": 0}, ValueError),
        (soap, {"precondition_frequency": 2.0}, TypeError),
        (soap, {"precondition_frequency": jnp.asarray(2)}, TypeError),
        (soap, {"b1": 1.0}, ValueError),
        (soap, {"b2": -0.1}, ValueError),
        (soap, {"eps": -1.0}, ValueError),
        (soap, {"shampoo_beta": 1.5}, ValueError),
        (soap, {"max_precond_dim": 0}, ValueError),
        (soap, {"weight_decay": -1.0}, ValueError),
        (splus, {"precondition_frequency": True}, TypeError),
        (splus, {"b1": 1.0}, ValueError),
        (splus, {"b2": 1.5}, ValueError),
        (splus, {"ema_rate": 1.0}, ValueError),
        (splus, {"nonstandard_constant": -1.0}, ValueError),
        (splus, {"dims": (0, 1)}, TypeError),
    ],
)
def test_bad_arguments_raise_at_construction(factory, kwargs, error):
    name = next(iter(kwargs))
    with pytest.raises(error, match=name if name != "dims" else "dims"):
        factory(0.1, **kwargs)


def test_wrapper_arguments():
    with pytest.raises(TypeError, match="inner"):
        scale_by_eigenbasis(lambda g: g, b1=0.9, beta=0.9, frequency=1)
    with pytest.raises(ValueError, match="refresh"):
        scale_by_eigenbasis(eigenbasis._sign(), b1=0.9, beta=0.9, frequency=1, refresh="qr")
    with pytest.raises(ValueError, match="ema_rate=None"):
        splus(0.1).update({"b": jnp.ones(2)}, splus(0.1).init({"b": jnp.ones(2)}))
    with pytest.raises(ValueError, match="found 0"):
        splus_eval_params(splus(0.1, ema_rate=None).init({"w": jnp.ones((2, 2))}))
    with pytest.raises(TypeError, match="static_args"):  # the static ints must be named under inject_hyperparams
        optax.inject_hyperparams(splus)(learning_rate=0.1).init({"w": jnp.ones((2, 2))})
    tx = optax.inject_hyperparams(splus, static_args=("precondition_frequency", "max_precond_dim"))(learning_rate=0.1)
    assert float(tx.init({"w": jnp.ones((2, 2))}).hyperparams["b1"]) == pytest.approx(0.9)


@pytest.mark.slow  # several compilations (the fast suite stays under 3 minutes)
def test_low_precision_params_across_refreshes(runs):
    """A bf16 matrix and an fp16 vector: updates keep the dtype, factors/bases/moments stay fp32, steps through
    refreshes are finite (the third gradient peaks at 6e4, near fp16's maximum, and squares to 3.6e9 in the fp32
    factors), and SOAP stays close to the fp32 run."""
    params, txs = runs
    low = {"w": params["w"].astype(jnp.bfloat16), "b": params["b"].astype(jnp.float16)}
    rng = np.random.default_rng(4)
    g = [{k: rng.standard_normal(x.shape) for k, x in params.items()} for _ in range(3)]
    g[2] = {k: x / np.abs(x).max() * 6e4 for k, x in g[2].items()}
    for name, (tx, step) in txs.items():
        state, state32 = tx.init(low), tx.init(params)
        low_step = jax.jit(tx.update)
        for t, gt in enumerate(g):
            u, state = low_step(jax.tree.map(lambda x, p: jnp.asarray(x, p.dtype), gt, low), state, low)
            u32, state32 = step(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), gt), state32, params)
            assert jax.tree.map(lambda x: x.dtype, u) == jax.tree.map(lambda x: x.dtype, low)
            assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((u, state)))
            floats = [x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
            assert set(floats) == {jnp.dtype(jnp.float32)}, name
            if name == "soap":  # Adam's diagonal is continuous in G; sign(·) may flip tiny rotated entries
                for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(u32), strict=True):
                    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
                    assert np.linalg.norm(a - b) <= 0.05 * np.linalg.norm(b) + 1e-6, (name, t)


# ------------------------------------------------------------------------------------- layouts and describe
class LinenStem(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Conv(8, (3, 3), name="stem")(x)  # a conv whose name says nothing: [3, 3, 4, 8]


def _grads(shapes, seed, steps):
    rng = np.random.default_rng(seed)
    return [
        {n: {k: rng.standard_normal(s) for k, s in leaf.items()} for n, leaf in shapes.items()} for _ in range(steps)
    ]


@pytest.mark.slow  # several compilations (the fast suite stays under 3 minutes)
def test_soap_reads_a_conv_kernel_as_one_matrix_like_the_reference():
    """A conv kernel [3, 3, 4, 8] is one 36 × 8 matrix (factors 36 × 36 and 8 × 8), stepped like the reference
    code on the reshaped matrix; the bias is a vector (Adam). L = G₀G₀ᵀ has rank 8 after the warm-up, so its
    eigenbasis is arbitrary on a 28-dimensional null space (the module note): the reference is handed normopt's
    first basis (in its descending order); the power refresh at step 5 then acts on a full-rank L."""
    shapes = {"kernel": (3, 3, 4, 8), "bias": (8,)}
    lr, b1, b2, beta, eps, f = 0.05, 0.9, 0.8, 0.7, 1e-3, 5
    refs = {k: SoapRef((36, 8) if k == "kernel" else s, b1, b2, beta, eps, f, 10000) for k, s in shapes.items()}
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        tx = soap(lr, b1=b1, b2=b2, eps=eps, shampoo_beta=beta, precondition_frequency=f)
        state = tx.init({"conv": {k: jnp.zeros(s, jnp.float64) for k, s in shapes.items()}})
        assert state[0].left["conv"]["kernel"].shape == (36, 36) and state[0].right["conv"]["kernel"].shape == (8, 8)
        assert state[0].left["conv"]["bias"].shape == ()
        step = jax.jit(tx.update)
        for t in range(7):
            g = {k: rng.standard_normal(s) for k, s in shapes.items()}
            u, state = step({"conv": jax.tree.map(jnp.asarray, g)}, state)
            for k, ref in refs.items():
                want = ref.update(g[k].reshape(ref.exp_avg.shape), lr).reshape(shapes[k])
                np.testing.assert_allclose(u["conv"][k], want, rtol=1e-9, atol=1e-12, err_msg=f"{t} {k}")
            if t == 0:
                q = state[0].q_left["conv"]["kernel"], state[0].q_right["conv"]["kernel"]
                refs["kernel"].q = [np.flip(np.asarray(x), 1) for x in q]


@pytest.mark.slow  # several compilations (the fast suite stays under 3 minutes)
def test_a_linen_layout_reads_a_custom_named_conv_like_explicit_dims():
    """layouts.linen reads ``stem`` (no "conv" in its name) as one 36 × 8 matrix: the same state and updates as
    ``dims=MatrixDims.conv(4)``; from the names alone it is 9 matrices of 4 × 8, and strict=True refuses it."""
    x = jnp.zeros((1, 5, 5, 4))
    layout = normopt.layouts.linen(LinenStem(), x)
    params = jax.tree.map(jnp.ones_like, jax.eval_shape(LinenStem().init, jax.random.key(0), x)["params"])
    conv = normopt.MatrixDims.conv(4)
    for factory in (soap, splus):
        state = jax.eval_shape(factory(0.1, layout=layout).init, params)[0]
        assert state.left["stem"]["kernel"].shape == (36, 36) and state.right["stem"]["kernel"].shape == (8, 8)
        assert state == jax.eval_shape(factory(0.1, dims=conv).init, params)[0]
        names = jax.eval_shape(factory(0.1).init, params)[0]
        assert names.left["stem"]["kernel"].shape == (3, 3, 4, 4)  # from the names: [kh, kw] stacked 4 × 8 matrices
        with pytest.raises(ValueError, match="stem/kernel.*strict=True"):
            factory(0.1, strict=True).init(params)
        jax.eval_shape(factory(0.1, layout=layout, strict=True).init, params)  # nothing read from names
        with pytest.raises(ValueError, match="layout or dims"):
            factory(0.1, layout=layout, dims=conv)
    by_layout, by_dims = splus(0.1, layout=layout, ema_rate=None), splus(0.1, dims=conv, ema_rate=None)
    s1, s2 = by_layout.init(params), by_dims.init(params)
    step1, step2 = jax.jit(by_layout.update), jax.jit(by_dims.update)
    for g in _grads({"stem": {"kernel": (3, 3, 4, 8), "bias": (8,)}}, 6, 2):  # Q = I, then the 36 × 36 basis
        g = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), g)
        u1, s1 = step1(g, s1)
        u2, s2 = step2(g, s2)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), u1, u2)
        assert float(jnp.max(jnp.abs(u1["stem"]["kernel"]))) > 0


@pytest.mark.slow  # several compilations (the fast suite stays under 3 minutes)
def test_splus_steps_embeddings_and_vectors_with_the_nonstandard_constant():
    """First step (Q = I): u = −η·s·sign(G), s = 2/(m + n) for a hidden matrix, the constant for the embedding
    (role "embedding") and the norm scale (a vector); nonstandard= replaces the role rule."""
    params = {
        "embed": {"embedding": jnp.zeros((10, 4))},
        "proj": {"kernel": jnp.zeros((4, 6))},
        "ln": {"scale": jnp.zeros(4)},
    }
    g = jax.tree.map(lambda x: jnp.asarray(np.random.default_rng(7).standard_normal(x.shape), jnp.float32), params)
    lr, c = 0.2, 0.01
    tx = splus(lr, nonstandard_constant=c, ema_rate=None)
    u, _ = jax.jit(tx.update)(g, tx.init(params))
    want = {"embed": {"embedding": c}, "proj": {"kernel": 2 / 10}, "ln": {"scale": c}}
    jax.tree.map(lambda u, g, s: np.testing.assert_allclose(u, -lr * s * np.sign(g), rtol=1e-6), u, g, want)
    none = jax.tree.map(lambda _: False, params)
    tx = splus(lr, nonstandard_constant=c, ema_rate=None, nonstandard=none)  # the override: 2/(m + n) for all
    rows = {r["path"]: r["norm"] for r in normopt.describe(params, tx, print_fn=None)}
    assert rows == {"embed/embedding": "splus", "proj/kernel": "splus", "ln/scale": "sign (nonstandard)"}


def test_describe_prints_the_reading_and_the_step_of_every_leaf():
    params = {
        "conv": {"kernel": jnp.zeros((3, 3, 4, 8)), "bias": jnp.zeros(8)},
        "embed": {"embedding": jnp.zeros((20, 8))},
        "blocks": {"kernel": jnp.zeros((2, 8, 8))},
    }
    lines = []
    rows = {
        r["path"]: r for r in normopt.describe(params, normopt.soap(1e-3, max_precond_dim=16), print_fn=lines.append)
    }
    assert "conv/kernel" in lines[0] and "soap" in lines[0]
    kernel = rows["conv/kernel"]
    assert (kernel["norm"], kernel["role"], kernel["fan_in"], kernel["fan_out"]) == ("soap", "hidden", 36, 8)
    assert rows["conv/bias"]["norm"] == "adam" and rows["conv/bias"]["role"] == "vector"
    assert (rows["embed/embedding"]["role"], rows["embed/embedding"]["norm"]) == ("embedding", "soap")  # 8 ≤ 16
    assert rows["blocks/kernel"]["batch_axes"] == "(0,)"
    rows = {r["path"]: r["norm"] for r in normopt.describe(params, splus(0.1, max_precond_dim=16), print_fn=None)}
    assert rows == {
        "conv/bias": "sign (nonstandard)",
        "conv/kernel": "splus (nonstandard)",  # a side of 36 > 16: the constant
        "embed/embedding": "splus (nonstandard)",
        "blocks/kernel": "splus",
    }
    rows = normopt.describe(params, splus(0.1, dims=normopt.MatrixDims()), print_fn=None)  # dims: all hidden
    assert {r["path"]: (r["role"], r["fan_in"], r["source"]) for r in rows}["conv/kernel"] == ("hidden", 4, "dims")
    tx = optax.chain(scale_by_eigenbasis(eigenbasis._sign(), b1=0.9, beta=0.9, frequency=1, max_dim=16))
    assert {r["norm"] for r in normopt.describe(params, tx, print_fn=None)} == {"eigenbasis", "inner"}
