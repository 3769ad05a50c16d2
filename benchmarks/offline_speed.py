"""Offline RL training speed: our TD3+BC, IQL and CQL against d3rlpy's, same data and networks, one run.

    python benchmarks/offline_speed.py [--algos td3bc,iql,cql] [--updates 2000] [--cql-updates 200] [--skip 50]
                                       [--chunk 1000] [--seeds K] [--steps 100000] [--skip-peers]

Aligned on both sides (the settings on d3rlpy's side are set explicitly, to our defaults where they differ):
256-256 relu MLPs for every network, batch 256, twin critics, gamma 0.99, tau 0.005, Adam, batches drawn
uniformly from the same transitions, no observation scaling (the data are already standardized).
  td3bc  lr 3e-4 / 3e-4, alpha 2.5, actor every 2nd update, target noise 0.2 clipped at 0.5 (both's defaults).
  iql    lr 3e-4 (actor, critics, value), expectile 0.7, beta 3, weights clipped at 100, Gaussian actor with a
         state-independent log-std (both's defaults).
  cql    actor lr 3e-5, critic lr 3e-4, temperature lr 3e-5 (automatic entropy on both sides), 10 actions from
         each of uniform, pi(.|s) and pi(.|s') per state (30 in all, importance-weighted), fixed penalty weight 10
         with no Lagrangian (ours: lagrange False, cql_alpha 10; d3rlpy: alpha_learning_rate 0, initial_alpha 1,
         conservative_weight 10), no entropy in the backup. Our CQL's default networks are CORL's 256-256-256;
         here both sides use 256-256 (d3rlpy's default).
Not aligned (each side as shipped): d3rlpy updates the critics first and the actor against the updated critics
(ours, as CORL, computes CQL's losses from the same pre-update parameters); d3rlpy's CQL target uses the
actor's squashed mean at s' (ours samples); d3rlpy's SAC temperature targets entropy +A (ours -A); IQL's
actor learning rate decays on a cosine schedule on ours only; d3rlpy's `compile_graph` stays off (its default).

Data: synthetic and Hopper-shaped (observations 11-dim standard normal, actions 3-dim in [-1, 1], a fixed noisy
function of the observation, rewards standard normal, terminals rare (p = 1e-3 per step), episodes cut at 1000
steps), written once to a temporary .npz that each side reads without pickle.

Ours: the offline loop's jitted `update_many` (understudy.train.offline: `--chunk` updates per lax.scan, batches
sampled on device, the update vmapped over the seed axis, metrics read back after each call), built here the same
way. One untimed call compiles first. For each algorithm ours runs before d3rlpy and after it; the ratio uses the
mean of the two (the machine's load drifts). d3rlpy runs in benchmarks/.venv-d3rlpy (shared with bc_speed.py)
through benchmarks/_offline_peer.py, torch at its faster thread count, on cuda:0 when torch sees a GPU.
`--seeds K` (K > 1) also times ours with K seeds vmapped and prints the cost per update relative to one seed.

The last line printed is one JSON object with every figure. Targets (the issue): on CPU ours >= 3x d3rlpy for
TD3+BC and IQL, >= 5x for CQL; on a GPU >= 10x, 1M TD3+BC updates in under 10 minutes, 8 seeds <= 2x one seed.
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

ALGOS = ("td3bc", "iql", "cql")
HIDDEN = (256, 256)
BATCH = 256
OBS_DIM, ACTION_DIM = 11, 3  # Hopper-v5's
EPISODE_STEPS = 1000  # Hopper's time limit
TERMINAL_PROB = 1e-3
LOSS_METRIC = "critic_loss"  # every one of the three reports it
PEER_VENV = "d3rlpy"  # benchmarks/.venv-d3rlpy, as bc_speed.py (same requirements: not rebuilt)
PEER_PACKAGES = ("d3rlpy", "torch", "gymnasium", "numpy")
CPU_TARGETS = {"td3bc": 3.0, "iql": 3.0, "cql": 5.0}
GPU_TARGET = 10.0
GPU_MILLION_MINUTES = 10.0  # 1M TD3+BC updates on a GPU in under this
GPU_SEEDS_COST = 2.0  # --seeds 8 costs at most this many times one seed on a GPU


def synthetic_data(steps: int, seed: int = 0) -> dict:
    """Hopper-shaped transitions as numpy columns (float32 unless noted):

    observations [N, 11] standard normal; actions [N, 3] in [-1, 1], a fixed noisy nonlinear function of the
    observation; rewards [N] standard normal; terminals [N] 1.0 with probability TERMINAL_PROB; timeouts [N] 1.0
    where an episode reaches EPISODE_STEPS steps or the data end without a terminal; next_observations [N, 11]
    the episode's next observation, zeros after its last step; episode_starts [E] int64, first step of each."""
    import numpy as np

    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((steps, OBS_DIM)).astype(np.float32)
    w1 = rng.standard_normal((OBS_DIM, 32)) / np.sqrt(OBS_DIM)
    w2 = rng.standard_normal((32, ACTION_DIM)) / np.sqrt(32)
    acts = np.tanh(np.tanh(obs @ w1) @ w2 * 2.0) + 0.05 * rng.standard_normal((steps, ACTION_DIM))
    rewards = rng.standard_normal(steps).astype(np.float32)
    terminals = (rng.random(steps) < TERMINAL_PROB).astype(np.float32)

    # Episodes end at a terminal, after EPISODE_STEPS steps (a timeout), or at the end of the data.
    timeouts = np.zeros(steps, np.float32)
    starts, length = [0], 0
    for t in range(steps):
        length += 1
        last = t == steps - 1
        if not terminals[t] and (length == EPISODE_STEPS or last):
            timeouts[t] = 1.0
        if (terminals[t] or timeouts[t]) and not last:
            starts.append(t + 1)
            length = 0
    ends = (terminals + timeouts) > 0
    next_obs = np.zeros_like(obs)
    next_obs[:-1] = obs[1:]
    next_obs[ends] = 0.0
    return {"observations": obs, "actions": np.clip(acts, -1.0, 1.0).astype(np.float32), "rewards": rewards,
            "terminals": terminals, "timeouts": timeouts, "next_observations": next_obs,
            "episode_starts": np.asarray(starts, np.int64)}


# ---------------------------------------------------------------------------------------------------------
# ours
# ---------------------------------------------------------------------------------------------------------
def algo_config(name: str):
    """(algo module, Config) of ours for `name`, set to the aligned settings in the module docstring."""
    import importlib

    algo = importlib.import_module(f"understudy.algos.{name}")
    # Observations are already standardized; the loop's normalizer touches the dataset once, never an update.
    common = dict(hidden_dims=HIDDEN, batch_size=BATCH, normalize_observations=False)
    if name == "cql":  # the CORL defaults but 256-256 networks; spelled out so the alignment is visible here
        return algo, algo.Config(**common, lagrange=False, cql_alpha=10.0, num_sampled_actions=10, actor_lr=3e-5,
                                 critic_lr=3e-4, alpha_lr=3e-5, autotune=True, backup_entropy=False)
    return algo, algo.Config(**common)


def build_ours(name: str, data: dict, num_seeds: int = 1, seed: int = 0):
    """(update_many, state, keys) for algorithm `name` with `num_seeds` seeds, from offline.train's own builders."""
    from understudy.data.samplers import to_device
    from understudy.train.offline import init_agents, make_update_many
    from understudy.types import ArraySpec, EnvSpec

    algo, cfg = algo_config(name)
    obs_dim, action_dim = data["observations"].shape[1], data["actions"].shape[1]
    spec = EnvSpec(env_id="synthetic-hopper-shaped", family="gymnasium",
                   observation=ArraySpec(shape=(obs_dim,), dtype="float32"),
                   action=ArraySpec(shape=(action_dim,), dtype="float32", low=(-1.0,) * action_dim,
                                    high=(1.0,) * action_dim))
    device_data = to_device({"observations": data["observations"], "actions": data["actions"],
                             "rewards": data["rewards"], "terminations": data["terminals"],
                             "next_observations": data["next_observations"],
                             "episode_starts": data["episode_starts"]})
    state, keys = init_agents(algo, cfg, spec, seed, num_seeds)
    return make_update_many(algo, cfg, device_data), state, keys


def ours_timer(name: str, data: dict, chunk: int = 1000, num_seeds: int = 1, seed: int = 0):
    """A function `measure(updates) -> dict` timing ours over `updates` more updates (calls of `chunk`).

    One untimed call runs first (it compiles); later measurements continue training the same state without
    recompiling. Each result has updates/s (steps of the seed-vmapped update), the mean critic loss of the first
    (untimed) call and of the last timed one, and whether every metric stayed finite."""
    import jax
    import numpy as np

    update_many, state, keys = build_ours(name, data, num_seeds, seed)
    state, keys, metrics = update_many(state, keys, num_updates=chunk)
    metrics = jax.device_get(metrics)
    first_loss = float(np.mean(metrics[LOSS_METRIC]))
    carry = {"state": state, "keys": keys, "finite": all(np.isfinite(v).all() for v in metrics.values())}

    def measure(updates: int) -> dict:
        if updates % chunk:
            raise SystemExit(f"updates ({updates}) must be a multiple of --chunk ({chunk})")
        state, keys, finite = carry["state"], carry["keys"], carry["finite"]
        start = time.perf_counter()
        for _ in range(updates // chunk):
            state, keys, metrics = update_many(state, keys, num_updates=chunk)
            metrics = jax.device_get(metrics)  # the loop reads metrics back after every call too
            finite = finite and all(np.isfinite(v).all() for v in metrics.values())
        elapsed = time.perf_counter() - start
        carry.update(state=state, keys=keys, finite=finite)
        return {"updates_per_s": updates / elapsed, "first_loss": first_loss,
                "last_loss": float(np.mean(metrics[LOSS_METRIC])), "finite": bool(finite)}

    return measure


def ours_rate(name: str, data: dict, updates: int, chunk: int = 1000, num_seeds: int = 1, seed: int = 0) -> dict:
    """Updates/s of ours over `updates` updates after one untimed call (see ours_timer)."""
    return ours_timer(name, data, min(chunk, updates), num_seeds, seed)(updates)


# ---------------------------------------------------------------------------------------------------------
# d3rlpy
# ---------------------------------------------------------------------------------------------------------
def peer(python: Path, algo: str, data: Path, skip: int, updates: int) -> dict:
    cmd = [str(python), str(HERE / "_offline_peer.py"), "--algo", algo, "--data", str(data), "--skip", str(skip),
           "--updates", str(updates)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"d3rlpy {algo} failed: {' | '.join(tail)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def on_gpu(backend: str) -> bool:
    return backend in ("gpu", "cuda", "rocm")


def target_note(algo: str, ratio: float, backend: str) -> str:
    target = GPU_TARGET if on_gpu(backend) else CPU_TARGETS[algo]
    return f"[target >= {target:g}: {'met' if ratio >= target else 'not met'}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algos", default=",".join(ALGOS), help="comma-separated subset of td3bc,iql,cql")
    p.add_argument("--updates", type=int, default=2000, help="timed updates per run, each side, TD3+BC and IQL")
    p.add_argument("--cql-updates", type=int, default=200,
                   help="timed updates per run, each side, CQL (~0.1 s per update on either side on a CPU)")
    p.add_argument("--skip", type=int, default=50, help="d3rlpy: untimed updates first (ours skips one call)")
    p.add_argument("--chunk", type=int, default=1000,
                   help="ours: updates per jitted call (the loop's updates_per_call); capped at the timed updates")
    p.add_argument("--seeds", type=int, default=1, help="ours: also time K seeds vmapped (K > 1) against one seed")
    p.add_argument("--steps", type=int, default=100_000, help="transitions in the synthetic dataset")
    p.add_argument("--skip-peers", action="store_true", help="ours only (no d3rlpy)")
    a = p.parse_args()
    algos = [x.strip() for x in a.algos.split(",") if x.strip()]
    unknown = sorted(set(algos) - set(ALGOS))
    if unknown or not algos:
        p.error(f"--algos takes a comma-separated subset of {','.join(ALGOS)} (got {a.algos!r})")
    if a.seeds < 1:
        p.error(f"--seeds must be >= 1 (got {a.seeds})")

    import jax
    import numpy as np

    from importlib.metadata import version

    say = lambda *x: print(*x, flush=True)  # noqa: E731
    backend = jax.default_backend()
    figures: dict = {"benchmark": "offline_speed", "algos": algos, "updates": a.updates,
                     "cql_updates": a.cql_updates, "skip": a.skip, "chunk": a.chunk, "seeds": a.seeds,
                     "steps": a.steps, "obs_dim": OBS_DIM, "action_dim": ACTION_DIM, "hidden": list(HIDDEN),
                     "batch": BATCH, "cpus": os.cpu_count(),
                     "machine": platform.processor() or platform.machine(), "backend": backend,
                     "devices": [str(d) for d in jax.devices()],
                     "ours_versions": {p: version(p) for p in ("understudy", "jax", "flax", "optax")},
                     "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    say(f"load average at start: {figures['load_avg_start']} ({os.cpu_count()} cores)")
    say(f"jax backend: {backend} ({', '.join(figures['devices'])})")
    python = None
    if not a.skip_peers:
        from _peer_venv import ensure_peer_venv, peer_versions

        try:
            python = ensure_peer_venv(log=say, name=PEER_VENV)
        except subprocess.CalledProcessError as e:
            say(f"d3rlpy: its environment could not be built ({e}); left out")
        if python is not None:
            figures["d3rlpy_versions"] = peer_versions(python, PEER_PACKAGES)
            say("d3rlpy environment: " + ", ".join(f"{k} {v}" for k, v in figures["d3rlpy_versions"].items()))
    say("ours: " + ", ".join(f"{k} {v}" for k, v in figures["ours_versions"].items()))

    data = synthetic_data(a.steps)
    figures["episodes"] = int(len(data["episode_starts"]))
    figures["terminals"] = int(data["terminals"].sum())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "offline_data.npz"
        np.savez(path, **data)
        for algo in algos:
            updates = a.cql_updates if algo == "cql" else a.updates
            chunk = min(a.chunk, updates)
            measure = ours_timer(algo, data, chunk)
            mine = [measure(updates)]
            say(f"{algo} ours: {mine[0]['updates_per_s']:.1f} updates/s ({LOSS_METRIC} {mine[0]['first_loss']:.3f} "
                f"-> {mine[0]['last_loss']:.3f})")
            if python is not None:
                try:
                    result = peer(python, algo, path, a.skip, updates)
                except RuntimeError as e:
                    say(f"{algo} d3rlpy: {e}")
                else:
                    theirs = result["updates_per_s"]
                    figures[f"{algo}_d3rlpy_updates_per_s"] = round(theirs, 2)
                    figures[f"{algo}_d3rlpy_device"] = result["device"]
                    figures[f"{algo}_d3rlpy_torch_threads"] = result["torch_threads"]
                    say(f"{algo} d3rlpy: {theirs:.2f} updates/s (device {result['device']}, "
                        f"torch threads {result['torch_threads']})")
                    mine.append(measure(updates))
                    around = (mine[0]["updates_per_s"] + mine[1]["updates_per_s"]) / 2
                    ratio = around / theirs
                    figures[f"{algo}_ratio_ours_over_d3rlpy"] = round(ratio, 2)
                    say(f"{algo} ours: {mine[1]['updates_per_s']:.1f} updates/s; ours/d3rlpy = {ratio:.2f} "
                        f"(ours: mean of the runs before and after, {around:.1f}) {target_note(algo, ratio, backend)}")
            rates = [m["updates_per_s"] for m in mine]
            one_seed = sum(rates) / len(rates)
            figures[f"{algo}_ours_updates_per_s_runs"] = [round(r, 1) for r in rates]
            figures[f"{algo}_ours_updates_per_s"] = round(one_seed, 1)
            figures[f"{algo}_ours_loss_first_last"] = [round(mine[0]["first_loss"], 4), round(mine[-1]["last_loss"], 4)]
            figures[f"{algo}_ours_finite"] = mine[-1]["finite"]
            if not mine[-1]["finite"]:
                say(f"{algo} ours: a metric was not finite")
            if a.seeds > 1:
                many = ours_rate(algo, data, updates, a.chunk, num_seeds=a.seeds)
                cost = rates[-1] / many["updates_per_s"]  # against the run of one seed just before
                figures[f"{algo}_ours_{a.seeds}_seeds_updates_per_s"] = round(many["updates_per_s"], 1)
                figures[f"{algo}_seeds_cost_ratio"] = round(cost, 2)
                note = (f" [target <= {GPU_SEEDS_COST:g} on a GPU: {'met' if cost <= GPU_SEEDS_COST else 'not met'}]"
                        if on_gpu(backend) else "")
                say(f"{algo} ours, {a.seeds} seeds: {many['updates_per_s']:.1f} updates/s "
                    f"({a.seeds * many['updates_per_s']:.0f} seed-updates/s); time per update = {cost:.2f} x one "
                    f"seed's{note}")
            if algo == "td3bc":
                minutes = 1e6 / one_seed / 60
                figures["td3bc_ours_minutes_per_million"] = round(minutes, 1)
                met = "met" if minutes < GPU_MILLION_MINUTES else "not met"
                note = f" [target < {GPU_MILLION_MINUTES:g} on a GPU: {met}]" if on_gpu(backend) else ""
                say(f"td3bc ours: 1M updates would take {minutes:.1f} min at this rate{note}")

    say("summary (ours: mean of its runs)")
    for algo in algos:
        line = f"  {algo}: ours {figures[f'{algo}_ours_updates_per_s']} updates/s"
        if f"{algo}_ratio_ours_over_d3rlpy" in figures:
            ratio = figures[f"{algo}_ratio_ours_over_d3rlpy"]
            line += (f", d3rlpy {figures[f'{algo}_d3rlpy_updates_per_s']} updates/s, ours/d3rlpy = {ratio} "
                     f"{target_note(algo, ratio, backend)}")
        if f"{algo}_seeds_cost_ratio" in figures:
            line += f", {a.seeds} seeds cost {figures[f'{algo}_seeds_cost_ratio']} x one"
        say(line)
    figures["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    say(f"load average at end: {figures['load_avg_end']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
