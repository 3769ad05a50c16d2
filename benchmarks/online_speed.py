"""Online training speed: our SAC and TD3 against Stable-Baselines3's and SBX's, side by side in one run.

    python benchmarks/online_speed.py [--env HalfCheetah-v5] [--warmup 1000] [--steps 3000] [--skip 200]
                                      [--repeats 3] [--no-peers] [--host-only]

Identical settings everywhere: 256-256 actor and critics, batch 256, one gradient update per environment
step once `--warmup` steps of random actions have filled the buffer (learning_starts), a buffer holding
the whole run. Each figure is env steps per second (each with its update) over the `--steps` steps that
follow warmup + `--skip` (the skip keeps compilation and first-call costs out of every timing). Ours runs
in this process through `understudy.train.off_policy.train`, timed by a clock around the env; the peers
run in benchmarks/.venv-peers (created on first use: torch, stable-baselines3, sbx-rl), timed by an SB3
callback. Runs alternate (ours, SB3, SBX for SAC, then for TD3) so load drift hits all alike, and the whole
round repeats `--repeats` times; the summary takes the median of each figure over the rounds.

The floor: the matrix multiplications one update needs (actor and twin critics, forward and backward,
counted from the layer shapes; TD3's actor step every second update) timed at the rate `jnp.dot` reaches
at each of those shapes, measured here in a jitted loop right before each of our runs (a shared machine's
speed drifts within minutes). floor steps/s = 1 / (sum of shape FLOPs / rate).

`--host-only` times our loop alone with its updates switched off (`updates_per_step` 1e-9): the host's work per env
step (act call, env step, bookkeeping), in µs, for comparing the loop across commits.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

HIDDEN = (256, 256)
BATCH = 256


# ---------------------------------------------------------------------------------------------------------
# the floor: matmul FLOPs of one update, at the rate jnp.dot reaches at each shape
# ---------------------------------------------------------------------------------------------------------
def mlp_layers(inputs: int, outputs: int) -> list[tuple[int, int]]:
    dims = [inputs, *HIDDEN, outputs]
    return list(zip(dims[:-1], dims[1:]))


def forward(layers) -> list[tuple[int, int, int]]:
    """(m, k, n) of y = x W for each layer on a batch."""
    return [(BATCH, i, o) for i, o in layers]


def backward(layers, *, weights: bool, input_grad: bool) -> list[tuple[int, int, int]]:
    """dW = x^T dy for each layer (when `weights`); dx = dy W^T for every layer but the first, and for the
    first too when the gradient must reach the network's input (`input_grad`: the action, for the actor loss)."""
    out = []
    for j, (i, o) in enumerate(layers):
        if weights:
            out.append((i, BATCH, o))
        if j > 0 or input_grad:
            out.append((BATCH, o, i))
    return out


def update_matmuls(algo: str, obs_dim: int, action_dim: int) -> list[tuple[float, tuple[int, int, int]]]:
    """(times per update, (m, k, n)) for every matmul one update needs at minimum."""
    critic = mlp_layers(obs_dim + action_dim, 1)
    twin = 2.0
    if algo == "sac":
        actor = mlp_layers(obs_dim, 2 * action_dim)  # mean and log-std heads
        parts = [
            (1.0, forward(actor)),  # next action for the target
            (twin, forward(critic)),  # target critics
            (twin, forward(critic) + backward(critic, weights=True, input_grad=False)),  # critic loss
            (1.0, forward(actor) + backward(actor, weights=True, input_grad=False)),  # actor loss: actor
            (twin, forward(critic) + backward(critic, weights=False, input_grad=True)),  # ... through the critics
        ]
    elif algo == "td3":
        actor = mlp_layers(obs_dim, action_dim)
        delay = 0.5  # the actor (and targets) update every second step
        parts = [
            (1.0, forward(actor)),  # target actor
            (twin, forward(critic)),  # target critics
            (twin, forward(critic) + backward(critic, weights=True, input_grad=False)),  # critic loss
            (delay, forward(actor) + backward(actor, weights=True, input_grad=False)),  # actor loss: actor
            (delay, forward(critic) + backward(critic, weights=False, input_grad=True)),  # ... through Q1
        ]
    else:
        raise ValueError(algo)
    return [(times, shape) for times, shapes in parts for shape in shapes]


def matmul_rates(shapes, seconds: float = 0.25) -> dict[tuple[int, int, int], float]:
    """FLOP/s of jnp.dot at each (m, k, n), in a jitted loop whose iterations depend on each other."""
    import jax
    import jax.numpy as jnp

    rates = {}
    for m, k, n in sorted(set(shapes)):
        x = jax.random.normal(jax.random.PRNGKey(0), (m, k), jnp.float32)
        w = jax.random.normal(jax.random.PRNGKey(1), (k, n), jnp.float32) * 0.01

        @jax.jit
        def loop(x, w, reps):
            def body(_, acc):  # feeding a sliver of the result back keeps XLA from hoisting the product
                return acc + jnp.dot(x + acc[:, :1] * 1e-30, w)
            return jax.lax.fori_loop(0, reps, body, jnp.zeros((m, n), jnp.float32))

        reps = 8
        while True:
            loop(x, w, reps).block_until_ready()  # compiled (reps is traced) and warm
            start = time.perf_counter()
            loop(x, w, reps).block_until_ready()
            elapsed = time.perf_counter() - start
            if elapsed > seconds or reps >= 1 << 20:
                break
            reps *= 2 if elapsed > seconds / 8 else 8
        rates[(m, k, n)] = 2.0 * m * k * n * reps / elapsed
    return rates


def floor(algo: str, obs_dim: int, action_dim: int, rates) -> dict:
    matmuls = update_matmuls(algo, obs_dim, action_dim)
    flops = sum(t * 2.0 * m * k * n for t, (m, k, n) in matmuls)
    seconds = sum(t * 2.0 * m * k * n / rates[(m, k, n)] for t, (m, k, n) in matmuls)
    return {"mflop_per_update": round(flops / 1e6, 1), "gflop_per_s": round(flops / seconds / 1e9, 1),
            "steps_per_s": round(1.0 / seconds, 1)}


# ---------------------------------------------------------------------------------------------------------
# ours
# ---------------------------------------------------------------------------------------------------------
def ours(algo: str, env_id: str, warmup: int, skip: int, steps: int, seed: int = 0,
         updates_per_step: float = 1.0) -> float:
    """Steps/s of `understudy train ALGO` over env steps warmup+skip .. warmup+skip+steps."""
    import importlib

    import gymnasium as gym

    from understudy.train import off_policy
    from understudy.train.common import RunArgs

    module = importlib.import_module(f"understudy.algos.{algo}")  # td3 may not exist in older checkouts
    chunk = 50  # the loop's chunk: collect 50 steps, then run their 50 updates
    start, stop = warmup + skip, warmup + skip + steps
    if start % chunk or steps % chunk:
        raise SystemExit(f"--warmup + --skip and --steps must be multiples of {chunk}")
    total = stop + chunk  # step stop + 1 begins after the updates owed for the first `stop` steps
    times: dict[int, float] = {}

    class Clock(gym.Wrapper):
        """Notes the time when the env is asked for step start + 1 and stop + 1."""

        count = 0

        def step(self, action):
            if Clock.count in (start, stop):
                times[Clock.count] = time.perf_counter()
            Clock.count += 1
            return self.env.step(action)

    cfg = module.Config(hidden_dims=HIDDEN, batch_size=BATCH, learning_starts=warmup, buffer_size=total,
                        updates_per_step=updates_per_step)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunArgs(env=env_id, steps=total, seed=seed, out=str(Path(tmp) / algo), eval_every=total,
                      eval_episodes=1, tensorboard=False, progress=False)
        original = off_policy.make_train_env
        off_policy.make_train_env = lambda *a, **kw: Clock(original(*a, **kw))
        try:
            off_policy.train(algo, module, cfg, run, chunk=chunk)
        finally:
            off_policy.make_train_env = original
    return steps / (times[stop] - times[start])


# ---------------------------------------------------------------------------------------------------------
# peers
# ---------------------------------------------------------------------------------------------------------
def peer(python: Path, lib: str, algo: str, env_id: str, warmup: int, skip: int, steps: int) -> dict:
    cmd = [str(python), str(HERE / "_online_peer.py"), "--lib", lib, "--algo", algo, "--env", env_id,
           "--warmup", str(warmup), "--skip", str(skip), "--steps", str(steps)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"{lib} {algo} failed: {' | '.join(tail)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--warmup", type=int, default=1000, help="random-action steps before updates (learning_starts)")
    p.add_argument("--skip", type=int, default=200, help="steps after warmup left out of the timing")
    p.add_argument("--steps", type=int, default=3000, help="timed steps (each with one update)")
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds of (floor, ours, peers) per algorithm; the summary gives the median of each figure")
    p.add_argument("--algos", nargs="+", default=["sac", "td3"], choices=["sac", "td3"])
    p.add_argument("--no-peers", action="store_true", help="measure ours and the floor only")
    p.add_argument("--host-only", action="store_true",
                   help="time our loop with its updates switched off: µs of host work per env step")
    a = p.parse_args()
    if a.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    if a.host_only:
        host = {algo: [1e6 / ours(algo, a.env, a.warmup, a.skip, a.steps, updates_per_step=1e-9)
                       for _ in range(a.repeats)] for algo in a.algos}
        for algo, us in host.items():
            print(f"{algo}: host work per env step, updates off: " + ", ".join(f"{u:.0f}" for u in us) + " µs")
        print(json.dumps({"benchmark": "online_speed", "host_only": True, "env": a.env, "steps": a.steps,
                          "host_us_per_step": {k: [round(u, 1) for u in v] for k, v in host.items()}}))
        return

    import jax

    from understudy.envs import make_spec

    spec = make_spec(a.env)
    say = lambda *x: print(*x, flush=True)  # noqa: E731
    figures: dict = {"benchmark": "online_speed", "env": a.env, "warmup": a.warmup, "skip": a.skip,
                     "steps": a.steps, "repeats": a.repeats, "hidden": list(HIDDEN), "batch": BATCH,
                     "updates_per_step": 1, "cpus": os.cpu_count(), "jax": jax.__version__,
                     "backend": jax.default_backend(), "machine": platform.processor() or platform.machine(),
                     "load_avg_start": os.getloadavg()[0]}
    python = None
    if not a.no_peers:
        from _peer_venv import ensure_peer_venv, peer_versions

        python = ensure_peer_venv(log=say)
        figures["peer_versions"] = peer_versions(python)

    # Each round measures the matmul rates right before our run, so that the floor and our loop see the same
    # load on a shared machine; rounds alternate algorithms and libraries so drift hits all alike.
    rounds: dict[str, list[dict]] = {algo: [] for algo in a.algos}
    for r in range(a.repeats):
        for algo in a.algos:
            tag = f"[{r + 1}/{a.repeats}] {algo}"
            shapes = [s for _, s in update_matmuls(algo, spec.obs_dim, spec.action_dim)]
            rates = matmul_rates(shapes)
            fl = floor(algo, spec.obs_dim, spec.action_dim, rates)
            row = {"matmul_gflop_per_s": {f"{m}x{k}x{n}": round(v / 1e9, 1) for (m, k, n), v in sorted(rates.items())},
                   "floor_steps_per_s": fl["steps_per_s"], "mflop_per_update": fl["mflop_per_update"]}
            say(f"{tag}: matmul GFLOP/s at the update's shapes (m x k x n): "
                + ", ".join(f"{s} {v}" for s, v in row["matmul_gflop_per_s"].items()))
            say(f"{tag}: floor {fl['steps_per_s']} steps/s ({fl['mflop_per_update']} MFLOP per update at "
                f"{fl['gflop_per_s']} GFLOP/s)")
            try:
                mine = ours(algo, a.env, a.warmup, a.skip, a.steps)
            except ModuleNotFoundError as e:
                say(f"{algo}: ours unavailable ({e})")
                break
            row["ours_steps_per_s"] = round(mine, 1)
            row["ours_fraction_of_floor"] = round(mine / fl["steps_per_s"], 3)
            say(f"{tag}: ours {mine:.1f} steps/s = {mine / fl['steps_per_s']:.2f} of the floor")
            for lib in ([] if python is None else ["sb3", "sbx"]):
                try:
                    result = peer(python, lib, algo, a.env, a.warmup, a.skip, a.steps)
                except RuntimeError as e:
                    say(f"{tag}: {e}")
                    continue
                theirs = result["steps_per_s"]
                if result.get("torch_threads"):
                    row[f"{lib}_torch_threads"] = result["torch_threads"]
                row[f"{lib}_steps_per_s"] = round(theirs, 1)
                row[f"ratio_ours_over_{lib}"] = round(mine / theirs, 3)
                say(f"{tag}: {lib} {theirs:.1f} steps/s; ours/{lib} = {mine / theirs:.2f}")
            rounds[algo].append(row)

    say(f"summary: the median over {a.repeats} round(s) of each figure")
    for algo, rows in rounds.items():
        if not rows:
            continue
        figures[f"{algo}_rounds"] = rows
        numeric = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and all(k in row for row in rows)]
        for key in numeric:
            figures[f"{algo}_{key}"] = round(statistics.median(row[key] for row in rows), 3)
        line = (f"{algo}: floor {figures[f'{algo}_floor_steps_per_s']} steps/s, ours "
                f"{figures[f'{algo}_ours_steps_per_s']} steps/s, ours/floor {figures[f'{algo}_ours_fraction_of_floor']:.2f}")
        for lib in ("sb3", "sbx"):
            if f"{algo}_ratio_ours_over_{lib}" in figures:
                line += (f", {lib} {figures[f'{algo}_{lib}_steps_per_s']} steps/s, ours/{lib} "
                         f"{figures[f'{algo}_ratio_ours_over_{lib}']:.2f}")
        say(line)
    figures["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
