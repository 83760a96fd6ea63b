"""One process of the multi-process test (tests/test_sharding.py): a small MLP trained with layer-sharded Muon.

    python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz

joins ``jax.distributed`` on 127.0.0.1:PORT (CPU collectives over gloo, 2 CPU devices per process), shards the
parameters FSDP-style over all processes' devices and writes the final parameters (process 0) to OUT.npz.
``NUM_PROCESSES = 1`` runs the same training on one device without a mesh: the reference.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

SIZES = (16, 32, 32, 8)
STEPS = 3


def init_values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    values = {
        f"w{i}": rng.standard_normal((a, b)) / np.sqrt(a)
        for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True))
    }
    values["b0"] = np.zeros(SIZES[1])
    return {k: v.astype(np.float32) for k, v in values.items()}


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.standard_normal((64, SIZES[0])).astype(np.float32), rng.standard_normal((64, SIZES[-1])).astype(
        np.float32
    )


def loss(params, x, y, gather=lambda w: w):
    params = {k: gather(v) for k, v in params.items()}  # FSDP: weights are gathered for the forward pass
    h = jnp.tanh(x @ params["w0"] + params["b0"])
    h = jnp.tanh(h @ params["w1"])
    return jnp.mean((h @ params["w2"] - y) ** 2)


def train(opt, params, x, y, gather=lambda w: w):
    step = jax.jit(
        lambda p, s: (lambda u_s: (optax.apply_updates(p, u_s[0]), u_s[1]))(
            opt.update(jax.grad(loss)(p, x, y, gather), s, p)
        )
    )
    state = opt.init(params)
    for _ in range(STEPS):
        params, state = step(params, state)
    return params


def main(process_id: int, num_processes: int, port: int, out: str) -> None:
    import normopt

    x, y = data()
    if num_processes == 1:
        final = train(normopt.muon(0.05), jax.tree.map(jnp.asarray, init_values()), x, y)
        np.savez(out, **{k: np.asarray(v) for k, v in final.items()})
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"127.0.0.1:{port}",
        num_processes,
        process_id,
        initialization_timeout=60,
        heartbeat_timeout_seconds=30,
        shutdown_timeout_seconds=30,
    )
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((jax.device_count(),), ("x",))
    specs = {"w0": P("x", None), "w1": P(None, "x"), "w2": P("x", None), "b0": P("x")}
    with jax.set_mesh(mesh):
        params = {
            k: jax.make_array_from_callback(v.shape, NamedSharding(mesh, specs[k]), lambda idx, v=v: v[idx])
            for k, v in init_values().items()
        }
        opt = normopt.muon(0.05, sharding=normopt.sharding.layer_sharded(mesh))
        final = train(opt, params, x, y, lambda w: jax.sharding.reshard(w, P()))
        gathered = multihost_utils.process_allgather(final, tiled=True)
    if process_id == 0:
        np.savez(
            out,
            **{k: np.asarray(v) for k, v in gathered.items()},
            processes=jax.process_count(),
            devices=jax.device_count(),
        )
    jax.distributed.shutdown()


if __name__ == "__main__":
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
