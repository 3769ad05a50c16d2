"""BC training speed: our BC (MSE head) against the `imitation` package's BC (and d3rlpy's), same data, one run.

    python benchmarks/bc_speed.py [--updates 3000] [--skip 200] [--pairs 100000] [--peers imitation d3rlpy]
                                  [--no-peers] [--no-plain]

Identical settings on every side: a 256-256 relu MLP, batch 256, Adam at lr 3e-4 with no weight decay,
batches drawn uniformly from the same (observation, action) arrays. The data are synthetic and
Hopper-shaped (observations 11-dim standard normal, actions 3-dim in [-1, 1], a fixed noisy nonlinear
function of the observation; seed 0), written once to a temporary .npz that every side reads without
pickle. Each figure is gradient updates per second over `--updates` updates that follow `--skip` untimed
ones (compilation and first-call costs stay out of every timing).

Ours: the offline loop's jitted `update_many` (understudy.train.offline: `updates_per_call` updates in
one lax.scan, batches sampled on device, the update vmapped over one seed), built here the same way on
`understudy.algos.bc` with head mse. Measured before each comparison and after the last; each ratio uses the
mean of the two runs of ours around that comparison (the machine's load drifts).
Peers run in their own environments (benchmarks/.venv-imitation, benchmarks/.venv-d3rlpy, created on
first use) through benchmarks/_bc_peer.py, with torch at its faster thread count (1 or all cores):
  imitation (nll)  `imitation.algorithms.bc.BC` as shipped: Gaussian log-likelihood + 1e-3 x entropy,
                   its only objective for continuous actions; policy pi=[256, 256], vf=[].
  imitation (mse)  the same trainer with its loss swapped for the MSE of the mean action.
  d3rlpy           `BCConfig(policy_type="deterministic")`: MSE, encoder 256-256.
Also in this process, the issue's third reference: a plain JAX loop (no library, no seed vmap, same MLP,
Adam, MSE, on-device sampling, 1000 updates per lax.scan); ours/plain_jax shows what our loop costs on top.

The last line printed is one JSON object with every figure. Target (the issue): ours >= 5x imitation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

HIDDEN = (256, 256)
BATCH = 256
LR = 3e-4
OBS_DIM, ACTION_DIM = 11, 3  # Hopper-v5's
PEER_VENV = {"imitation": "imitation", "d3rlpy": "d3rlpy"}
PEER_PACKAGES = {"imitation": ("imitation", "stable-baselines3", "torch", "gymnasium", "numpy"),
                 "d3rlpy": ("d3rlpy", "torch", "gymnasium", "numpy")}


def synthetic_data(pairs: int, seed: int = 0):
    """(observations [pairs, 11], actions [pairs, 3]) float32: actions a learnable function of observations."""
    import numpy as np

    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((pairs, OBS_DIM)).astype(np.float32)
    w1 = rng.standard_normal((OBS_DIM, 32)) / np.sqrt(OBS_DIM)
    w2 = rng.standard_normal((32, ACTION_DIM)) / np.sqrt(32)
    acts = np.tanh(np.tanh(obs @ w1) @ w2 * 2.0) + 0.05 * rng.standard_normal((pairs, ACTION_DIM))
    return obs, np.clip(acts, -1.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# ours
# ---------------------------------------------------------------------------------------------------------
def bc_config():
    from understudy.algos import bc

    # weight_decay 0: optax.adamw then is plain Adam, as on the peers' side; observations are already
    # standardized, so the loop's normalizer (applied once to the dataset, not per update) is left off.
    return bc.Config(head="mse", hidden_dims=HIDDEN, lr=LR, weight_decay=0.0, batch_size=BATCH,
                     normalize_observations=False)


def build_ours(observations, actions, seed: int = 0):
    """(update_many, state, keys) from the functions understudy.train.offline.train builds them with, for one seed."""
    import numpy as np

    from understudy.algos import bc
    from understudy.data.samplers import to_device
    from understudy.train.offline import init_agents, make_update_many
    from understudy.types import ArraySpec, EnvSpec

    cfg = bc_config()
    n, action_dim = actions.shape
    spec = EnvSpec(env_id="synthetic-hopper-shaped", family="gymnasium",
                   observation=ArraySpec(shape=(observations.shape[1],), dtype="float32"),
                   action=ArraySpec(shape=(action_dim,), dtype="float32", low=(-1.0,) * action_dim,
                                    high=(1.0,) * action_dim))
    zeros = np.zeros(n, np.float32)
    data = to_device({"observations": observations, "actions": actions, "rewards": zeros, "terminations": zeros,
                      "next_observations": observations, "episode_starts": np.zeros(1, np.int64)})
    state, keys = init_agents(bc, cfg, spec, seed, 1)
    return make_update_many(bc, cfg, data), state, keys


def ours_timer(observations, actions, chunk: int = 1000, seed: int = 0):
    """A function `measure(updates) -> dict` timing our BC over `updates` more updates (calls of `chunk`).

    One untimed call runs first (it compiles); later measurements continue training the same state, so
    they need no recompilation. Each result has updates/s and the mean loss of the first (untimed) call and
    of the last timed one, so a caller can see it learned."""
    import jax
    import numpy as np

    update_many, state, keys = build_ours(observations, actions, seed)
    state, keys, metrics = update_many(state, keys, num_updates=chunk)
    first_loss = float(np.mean(jax.device_get(metrics)["loss"]))
    carry = {"state": state, "keys": keys}

    def measure(updates: int) -> dict:
        if updates % chunk:
            raise SystemExit(f"--updates must be a multiple of {chunk}")
        state, keys = carry["state"], carry["keys"]
        start = time.perf_counter()
        for _ in range(updates // chunk):
            state, keys, metrics = update_many(state, keys, num_updates=chunk)
            metrics = jax.device_get(metrics)  # the loop reads metrics back after every call too
        elapsed = time.perf_counter() - start
        carry.update(state=state, keys=keys)
        return {"updates_per_s": updates / elapsed, "first_loss": first_loss,
                "last_loss": float(np.mean(metrics["loss"]))}

    return measure


def plain_timer(observations, actions, chunk: int = 1000, seed: int = 0):
    """The issue's reference point, in this process: a bare JAX loop (no seed vmap, no library), same MLP,
    Adam, MSE and on-device uniform sampling, `chunk` updates per jitted lax.scan. Same API as ours_timer."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    obs, acts = jnp.asarray(observations), jnp.asarray(actions)
    dims = [obs.shape[1], *HIDDEN, acts.shape[1]]
    keys = jax.random.split(jax.random.PRNGKey(seed), len(dims))
    params = [(jax.random.normal(k, (i, o)) * np.sqrt(2.0 / i), jnp.zeros(o))
              for k, i, o in zip(keys[1:], dims[:-1], dims[1:])]
    opt = optax.adam(LR)

    def loss_fn(params, x, y):
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b)
        w, b = params[-1]
        return jnp.mean((jnp.tanh(x @ w + b) - y) ** 2)  # tanh: the mse head's bounded output too

    @jax.jit
    def update_many(params, opt_state, key):
        def one(carry, _):
            params, opt_state, key = carry
            key, sub = jax.random.split(key)
            idx = jax.random.randint(sub, (BATCH,), 0, obs.shape[0])
            loss, grads = jax.value_and_grad(loss_fn)(params, obs[idx], acts[idx])
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, key), loss

        (params, opt_state, key), losses = jax.lax.scan(one, (params, opt_state, key), None, length=chunk)
        return params, opt_state, key, losses

    params, opt_state, key, losses = update_many(params, opt.init(params), keys[0])
    first_loss = float(np.mean(losses))
    carry = {"params": params, "opt_state": opt_state, "key": key}

    def measure(updates: int) -> dict:
        if updates % chunk:
            raise SystemExit(f"--updates must be a multiple of {chunk}")
        params, opt_state, key = carry["params"], carry["opt_state"], carry["key"]
        start = time.perf_counter()
        for _ in range(updates // chunk):
            params, opt_state, key, losses = update_many(params, opt_state, key)
            losses = jax.device_get(losses)
        elapsed = time.perf_counter() - start
        carry.update(params=params, opt_state=opt_state, key=key)
        return {"updates_per_s": updates / elapsed, "first_loss": first_loss, "last_loss": float(np.mean(losses))}

    return measure


def ours_rate(observations, actions, updates: int, chunk: int = 1000, seed: int = 0) -> dict:
    """Updates/s of our BC over `updates` updates, after one untimed call of `chunk` (see ours_timer)."""
    return ours_timer(observations, actions, min(chunk, updates), seed)(updates)


# ---------------------------------------------------------------------------------------------------------
# peers
# ---------------------------------------------------------------------------------------------------------
def peer(python: Path, lib: str, data: Path, skip: int, updates: int, loss: str = "nll") -> dict:
    cmd = [str(python), str(HERE / "_bc_peer.py"), "--lib", lib, "--loss", loss, "--data", str(data),
           "--skip", str(skip), "--updates", str(updates)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"{lib} ({loss}) failed: {' | '.join(tail)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=3000, help="timed updates per side (ours: a multiple of 1000)")
    p.add_argument("--skip", type=int, default=200, help="untimed updates first (peers; ours skips one call)")
    p.add_argument("--pairs", type=int, default=100_000, help="(observation, action) pairs in the dataset")
    p.add_argument("--peers", nargs="+", default=["imitation", "d3rlpy"], choices=["imitation", "d3rlpy"])
    p.add_argument("--no-peers", action="store_true", help="leave the peers out (ours and the plain JAX loop only)")
    p.add_argument("--no-plain", dest="plain", action="store_false", help="leave the plain JAX loop out")
    a = p.parse_args()

    import jax
    import numpy as np

    from importlib.metadata import version

    say = lambda *x: print(*x, flush=True)  # noqa: E731
    figures: dict = {"benchmark": "bc_speed", "updates": a.updates, "skip": a.skip, "pairs": a.pairs,
                     "obs_dim": OBS_DIM, "action_dim": ACTION_DIM, "hidden": list(HIDDEN), "activation": "relu",
                     "batch": BATCH, "lr": LR, "optimizer": "adam, no weight decay", "cpus": os.cpu_count(),
                     "machine": platform.processor() or platform.machine(), "backend": jax.default_backend(),
                     "ours_versions": {p: version(p) for p in ("understudy", "jax", "flax", "optax")},
                     "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    say(f"load average at start: {figures['load_avg_start']} ({os.cpu_count()} cores)")
    pythons = {}
    if not a.no_peers:
        from _peer_venv import ensure_peer_venv, peer_versions

        for lib in a.peers:
            try:
                pythons[lib] = ensure_peer_venv(log=say, name=PEER_VENV[lib])
            except subprocess.CalledProcessError as e:
                say(f"{lib}: its environment could not be built ({e}); left out")
                continue
            figures[f"{lib}_versions"] = peer_versions(pythons[lib], PEER_PACKAGES[lib])
            say(f"{lib} environment: " + ", ".join(f"{k} {v}" for k, v in figures[f"{lib}_versions"].items()))
    say("ours: " + ", ".join(f"{k} {v}" for k, v in figures["ours_versions"].items()))

    obs, acts = synthetic_data(a.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bc_data.npz"
        np.savez(data, observations=obs, actions=acts)

        # Ours runs before every peer and once more at the end; each peer is compared with the mean of the
        # two runs of ours around it, so a change in the machine's load hits both sides of a ratio alike.
        measure = ours_timer(obs, acts)
        mine = [measure(a.updates)]
        say(f"ours (mse): {mine[0]['updates_per_s']:.1f} updates/s (loss {mine[0]['first_loss']:.4f} -> "
            f"{mine[0]['last_loss']:.4f})")
        runs = [("plain_jax", "mse")] if a.plain else []
        runs += [(lib, loss) for lib in pythons for loss in (("nll", "mse") if lib == "imitation" else ("mse",))]
        for lib, loss in runs:
            label = f"{lib}_{loss}" if lib == "imitation" else lib
            if lib == "plain_jax":
                plain = plain_timer(obs, acts)(a.updates)
                theirs = plain["updates_per_s"]
                say(f"plain_jax: {theirs:.1f} updates/s (loss {plain['first_loss']:.4f} -> {plain['last_loss']:.4f})")
            else:
                try:
                    result = peer(pythons[lib], lib, data, a.skip, a.updates, loss)
                except RuntimeError as e:
                    say(f"{label}: {e}")
                    continue
                theirs = result["updates_per_s"]
                figures[f"{label}_torch_threads"] = result["torch_threads"]
                say(f"{label}: {theirs:.1f} updates/s (torch threads {result['torch_threads']})")
            figures[f"{label}_updates_per_s"] = round(theirs, 1)
            mine.append(measure(a.updates))
            around = (mine[-2]["updates_per_s"] + mine[-1]["updates_per_s"]) / 2
            figures[f"ratio_ours_over_{label}"] = round(around / theirs, 2)
            say(f"ours (mse): {mine[-1]['updates_per_s']:.1f} updates/s; ours/{label} = {around / theirs:.2f} "
                f"(ours: mean of the runs before and after, {around:.1f})"
                + ("  [target >= 5]" if label == "imitation_nll" else ""))

    rates = [m["updates_per_s"] for m in mine]
    figures["ours_updates_per_s_runs"] = [round(r, 1) for r in rates]
    figures["ours_updates_per_s"] = round(sum(rates) / len(rates), 1)
    figures["ours_loss_first_last"] = [round(mine[0]["first_loss"], 4), round(mine[-1]["last_loss"], 4)]
    say(f"ours: {figures['ours_updates_per_s']} updates/s (mean of {len(rates)} run{'s' if len(rates) > 1 else ''})")
    for key in [k for k in figures if k.startswith("ratio_")]:
        say(f"{key.replace('ratio_', '').replace('_over_', '/')} = {figures[key]}"
            + ("  [target >= 5]" if key.endswith("imitation_nll") else ""))
    figures["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    say(f"load average at end: {figures['load_avg_end']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
