"""Milliseconds per gradient update of our SAC or TD3 alone, without the env: a jitted scan of 50 updates.

    python benchmarks/update_cost.py --algo td3 [--policy-frequency N] [--env HalfCheetah-v5]

The update runs as the online loop runs it (`train.common.vmapped_update`, one seed, batches sampled on device
from a replay buffer of 20,000 random transitions). Prints the best of 5 timings of 10 calls each. For TD3,
`--policy-frequency 1` (an actor step every update) and a very large value (never) split the update's cost into
its critic and actor parts; `online_speed.py` puts the whole loop beside SB3 and SBX.
"""

from __future__ import annotations

import argparse
import importlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from understudy.data.replay import replay_add, replay_init, replay_sample
from understudy.envs import make_spec
from understudy.train.common import vmapped_update

BUFFER = 20_000
SCAN = 50


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="td3", choices=["sac", "td3"])
    p.add_argument("--env", default="HalfCheetah-v5", help="only its observation and action sizes are used")
    p.add_argument("--policy-frequency", type=int, default=None, help="TD3's actor delay (default: its config's)")
    a = p.parse_args()

    algo = importlib.import_module(f"understudy.algos.{a.algo}")
    overrides = {} if a.policy_frequency is None else {"policy_frequency": a.policy_frequency}
    cfg = algo.Config(**overrides)
    spec = make_spec(a.env)
    state = jax.vmap(lambda s: algo.init(cfg, spec, jax.random.PRNGKey(s)))(jnp.arange(1))
    rng = np.random.default_rng(0)
    obs_dim, action_dim = spec.obs_dim, spec.action_dim
    columns = (rng.normal(size=(1, BUFFER, obs_dim)), rng.uniform(-1, 1, size=(1, BUFFER, action_dim)),
               rng.normal(size=(1, BUFFER)), np.zeros((1, BUFFER)), rng.normal(size=(1, BUFFER, obs_dim)))
    buffer = jax.vmap(lambda _: replay_init(BUFFER, (obs_dim,), (action_dim,), jnp.float32))(jnp.arange(1))
    buffer = jax.jit(jax.vmap(replay_add))(buffer, *(jnp.asarray(c, jnp.float32) for c in columns))
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(1))
    update = vmapped_update(algo, cfg)

    @jax.jit
    def many(state, keys):
        def one(carry, _):
            state, keys = carry
            keys, sub = jax.vmap(jax.random.split, out_axes=1)(keys)
            batch = jax.vmap(lambda b, k: replay_sample(b, k, cfg.batch_size))(buffer, sub)
            state, metrics = update(state, batch)
            return (state, keys), metrics["critic_loss"]
        (state, keys), losses = jax.lax.scan(one, (state, keys), None, length=SCAN)
        return state, keys, losses

    state, keys, _ = many(state, keys)
    jax.block_until_ready(state)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            state, keys, _ = many(state, keys)
        jax.block_until_ready(state)
        best = min(best, (time.perf_counter() - start) / (10 * SCAN))
    print(f"{a.algo} {a.env} {overrides or 'defaults'}: {best * 1e3:.2f} ms per update ({1 / best:.0f} updates/s), "
          f"jax backend {jax.default_backend()}")


if __name__ == "__main__":
    main()
