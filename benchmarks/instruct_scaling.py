"""Data-parallel scaling of `understudy train instruct`: update rate at a fixed global batch on 1, 2 and 4 devices.

    python benchmarks/instruct_scaling.py [--devices 1 2 4] [--batch-size 256] [--updates 20] [--rounds 3]
                                          [--d-model 128] [--num-layers 2]

Each device count runs in a fresh Python process (XLA_FLAGS must be set before JAX starts) on the training
loop's own code: `prepare` (data on the devices, mesh over the first N), `initial_state` and `make_update_many`
(K updates in one jitted call, each batch sampled on device and split across the mesh). One call compiles; then
`--rounds` calls of `--updates` updates are timed and the median is kept.

Devices: on a CPU-only machine, N forced host devices (--xla_force_host_platform_device_count=4). They share
the same cores, so no speed-up is expected there: the figures show what splitting the batch costs, not what more
hardware gains. On a GPU or TPU machine the real devices are used; counts above the number available are
skipped.

Data: a synthetic BabyAI-shaped dataset (7x7x3 grid + direction, 7 actions, one of 24 instructions per episode;
the shapes and model of `train instruct` on BabyAI). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
OBJECTS = ("ball", "box", "key", "door")


def synthetic_dataset(path: str, episodes: int, seed: int = 0) -> str:
    """BabyAI GoToLocal-shaped episodes; the action depends on the instruction and the step (a learnable toy)."""
    from understudy.data import save_dataset
    from understudy.data.episodes import Dataset
    from understudy.envs import make_spec

    rng = np.random.default_rng(seed)
    sentences = [f"go to the {c} {o}" for c in COLORS for o in OBJECTS]
    data = []
    for e in range(episodes):
        T = int(rng.integers(4, 30))
        k = int(rng.integers(len(sentences)))
        data.append({"observations": {"image": rng.integers(0, 11, (T + 1, 7, 7, 3)).astype(np.uint8),
                                      "direction": rng.integers(0, 4, T + 1)},
                     "actions": (np.arange(T) + k) % 7, "rewards": np.zeros(T),
                     "terminations": [False] * (T - 1) + [True], "truncations": [False] * T,
                     "instruction": sentences[k]})
    spec = make_spec("BabyAI-GoToLocal-v0")
    save_dataset(Dataset.from_episodes(data, metadata={"env_id": spec.env_id, "spec": spec.to_dict()}), path)
    return path


def child(args) -> None:
    """One device count: prints one JSON line with its timings."""
    import jax

    from understudy.instruct.algo import Config
    from understudy.train.common import RunArgs
    from understudy.train.instruct import initial_state, make_update_many, prepare

    cfg = Config(d_model=args.d_model, num_layers=args.num_layers, batch_size=args.batch_size, devices=args.child,
                 warmup_steps=10)
    setup = prepare(cfg, RunArgs(dataset=args.dataset))
    total = args.updates * (args.rounds + 1)
    tx, state, key = initial_state(cfg, setup, total, 0)
    update_many = make_update_many(setup["net"], tx, setup["data"], setup["table"], cfg, setup["mesh"])
    t0 = time.perf_counter()
    state, key, metrics = update_many(state, key, num_updates=args.updates)
    jax.block_until_ready((state, metrics))
    compile_s = time.perf_counter() - t0
    times, losses = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        state, key, metrics = update_many(state, key, num_updates=args.updates)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
        losses.append(float(np.asarray(metrics["loss"])[-1]))
    seconds = float(np.median(times))
    print(json.dumps({"devices": int(setup["mesh"].size), "platform": jax.devices()[0].platform,
                      "device_kind": jax.devices()[0].device_kind, "compile_and_first_call_s": round(compile_s, 2),
                      "updates_per_s": args.updates / seconds,
                      "samples_per_s": args.updates * args.batch_size / seconds,
                      "round_s": [round(t, 3) for t in times], "last_loss": losses[-1]}))


def probe_platform() -> tuple[str, int]:
    """(platform, device count) of this machine's default JAX backend, asked in a fresh process."""
    code = "import jax; d = jax.devices(); print(d[0].platform, len(d))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    platform, count = done.stdout.split()[-2:]
    return platform, int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch-size", type=int, default=256, help="global batch (windows per update)")
    parser.add_argument("--updates", type=int, default=20, help="updates per timed call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=400, help="episodes in the synthetic dataset")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return

    platform, available = probe_platform()
    env = dict(os.environ)
    if platform == "cpu":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={max(args.devices)}")
        env["JAX_PLATFORMS"] = "cpu"
        counts = args.devices
        note = (f"CPU: {max(args.devices)} forced host devices share this machine's {os.cpu_count()} core(s), so no "
                "speed-up is expected; the ratios measure the cost of splitting the batch, not a gain")
    else:
        counts = [n for n in args.devices if n <= available]
        skipped = [n for n in args.devices if n > available]
        note = f"{platform}: {available} real device(s)" + (f"; skipped {skipped} (not available)" if skipped else "")
    print(f"# {note}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = synthetic_dataset(os.path.join(tmp, "grid"), args.episodes)
        for n in counts:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", str(n), "--dataset", dataset,
                   "--batch-size", str(args.batch_size), "--updates", str(args.updates), "--rounds", str(args.rounds),
                   "--d-model", str(args.d_model), "--num-layers", str(args.num_layers)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{n} device(s) failed:\n{done.stderr[-3000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            results[n] = r
            base = results[counts[0]]["updates_per_s"]
            print(f"{n} device(s) [{r['platform']}]: {r['updates_per_s']:.1f} updates/s, "
                  f"{r['samples_per_s']:.0f} samples/s, {r['updates_per_s'] / base:.2f}x {counts[0]} device(s) "
                  f"(compile + first call {r['compile_and_first_call_s']:.1f} s, loss {r['last_loss']:.4f})",
                  flush=True)
    base = results[counts[0]]["updates_per_s"]
    summary = {"benchmark": "instruct_scaling", "platform": platform, "note": note, "batch_size": args.batch_size,
               "updates_per_round": args.updates, "rounds": args.rounds, "d_model": args.d_model,
               "num_layers": args.num_layers,
               "devices": {str(n): {"updates_per_s": round(r["updates_per_s"], 2),
                                    "samples_per_s": round(r["samples_per_s"], 1),
                                    f"ratio_to_{counts[0]}": round(r["updates_per_s"] / base, 3)}
                           for n, r in results.items()},
               "max_loss_difference": float(max(r["last_loss"] for r in results.values())
                                            - min(r["last_loss"] for r in results.values()))}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
