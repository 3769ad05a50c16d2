"""One d3rlpy offline RL measurement for offline_speed.py, run in benchmarks/.venv-d3rlpy (never imports understudy).

    python _offline_peer.py --algo {td3bc,iql,cql} --data D.npz --skip S --updates N [--device auto]

Builds an MDPDataset from the arrays observations, actions, rewards, terminals, timeouts of D.npz (read without
pickle) and trains d3rlpy's TD3PlusBC, IQL or CQL with the settings offline_speed.py aligns with ours (see its
docstring): 256-256 relu encoders, batch 256, twin critics, the learning rates below. Untimed: the first S
updates (first-call costs). Timed: the N updates that follow, clocked by fit's per-step callback (so d3rlpy's
own batch sampling and per-step loss bookkeeping are inside the timing, as in any d3rlpy run). Prints one JSON
line with updates/s.
"""

from __future__ import annotations

import argparse
import json
import time

from _online_peer import fastest_torch_threads

HIDDEN = [256, 256]
BATCH = 256


def load(path: str) -> dict:
    import numpy as np

    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}


def make_config(algo: str):
    """d3rlpy's config for `algo`, every setting offline_speed.py aligns written out."""
    import d3rlpy

    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=HIDDEN, activation="relu")
    nets = dict(actor_encoder_factory=encoder, critic_encoder_factory=encoder, batch_size=BATCH, gamma=0.99,
                tau=0.005, n_critics=2)
    if algo == "td3bc":
        return d3rlpy.algos.TD3PlusBCConfig(**nets, actor_learning_rate=3e-4, critic_learning_rate=3e-4, alpha=2.5,
                                            update_actor_interval=2, target_smoothing_sigma=0.2,
                                            target_smoothing_clip=0.5)
    if algo == "iql":
        return d3rlpy.algos.IQLConfig(**nets, value_encoder_factory=encoder, actor_learning_rate=3e-4,
                                      critic_learning_rate=3e-4, expectile=0.7, weight_temp=3.0, max_weight=100.0)
    # CQL: fixed penalty weight 10 (alpha_learning_rate 0 turns the Lagrangian off; alpha stays at 1, and the
    # threshold is a constant that moves no gradient), automatic entropy at ours' temperature rate.
    return d3rlpy.algos.CQLConfig(**nets, actor_learning_rate=3e-5, critic_learning_rate=3e-4,
                                  temp_learning_rate=3e-5, alpha_learning_rate=0.0, initial_temperature=1.0,
                                  initial_alpha=1.0, conservative_weight=10.0, alpha_threshold=0.0,
                                  n_action_samples=10, soft_q_backup=False, max_q_backup=False)


def rate(algo: str, columns: dict, skip: int, updates: int, seed: int, device: str) -> float:
    import d3rlpy

    d3rlpy.seed(seed)
    dataset = d3rlpy.dataset.MDPDataset(observations=columns["observations"], actions=columns["actions"],
                                        rewards=columns["rewards"], terminals=columns["terminals"],
                                        timeouts=columns["timeouts"])
    learner = make_config(algo).create(device=device)
    times = {}

    def clock(algo, epoch, total_step):
        if total_step in (skip, skip + updates):
            if device.startswith("cuda"):
                import torch

                torch.cuda.synchronize()
            times[total_step] = time.perf_counter()

    total = skip + updates
    learner.fit(dataset, n_steps=total, n_steps_per_epoch=total, show_progress=False, save_interval=total + 1,
                logger_adapter=d3rlpy.logging.NoopAdapterFactory(), callback=clock)
    return updates / (times[skip + updates] - times[skip])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--algo", choices=("td3bc", "iql", "cql"), required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--skip", type=int, required=True)
    p.add_argument("--updates", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto: cuda:0 when torch sees a GPU, else cpu:0")
    a = p.parse_args()

    import torch

    device = a.device
    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu:0"
    threads = fastest_torch_threads()
    updates_per_s = rate(a.algo, load(a.data), a.skip, a.updates, a.seed, device)
    print(json.dumps({"lib": "d3rlpy", "algo": a.algo, "updates_per_s": updates_per_s, "device": device,
                      "torch_threads": threads}))


if __name__ == "__main__":
    main()
