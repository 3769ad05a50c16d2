"""One peer BC measurement for bc_speed.py, run inside a peer environment (never imports understudy).

    python _bc_peer.py --lib imitation --loss {nll,mse} --data D.npz --skip S --updates N
    python _bc_peer.py --lib d3rlpy --data D.npz --skip S --updates N

Trains BC on the arrays `observations` [N, obs] and `actions` [N, act] of D.npz (read without pickle):
256-256 relu network, batch 256, Adam lr 3e-4, no weight decay. Untimed: the first S updates (first-call
costs). Timed: the N updates that follow. Prints one JSON line with updates/s.

imitation: `imitation.algorithms.bc.BC` on an SB3 ActorCriticPolicy with net_arch pi=[256, 256] and vf=[]
(BC never trains the value head; vf=[] keeps it to one linear layer so its forward pass costs ~nothing).
  --loss nll: imitation's own objective, as shipped: Gaussian negative log-likelihood + 1e-3 x entropy.
  --loss mse: its loss_calculator swapped for the mean squared error of the policy's mean action (BC's
              only objective for continuous actions is the log-likelihood; this keeps its data loader and
              training loop and changes the loss alone).
d3rlpy: `d3rlpy.algos.BCConfig` with a deterministic policy (its MSE objective), encoder 256-256.
"""

from __future__ import annotations

import argparse
import json
import time

from _online_peer import fastest_torch_threads

HIDDEN = [256, 256]
BATCH = 256
LR = 3e-4


def load(path: str):
    import numpy as np

    with np.load(path, allow_pickle=False) as f:
        return f["observations"], f["actions"]


def imitation_rate(obs, acts, loss: str, skip: int, updates: int, seed: int) -> float:
    import gymnasium as gym
    import numpy as np
    import torch as th
    from imitation.algorithms import bc
    from imitation.data import types
    from imitation.util import logger as imit_logger
    from stable_baselines3.common.policies import ActorCriticPolicy

    th.manual_seed(seed)
    obs_space = gym.spaces.Box(-np.inf, np.inf, shape=obs.shape[1:], dtype=np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, shape=acts.shape[1:], dtype=np.float32)
    policy = ActorCriticPolicy(obs_space, act_space, lr_schedule=lambda _: LR,
                               net_arch=dict(pi=HIDDEN, vf=[]), activation_fn=th.nn.ReLU)
    n = len(obs)
    transitions = types.Transitions(obs=obs, acts=acts, infos=np.array([{}] * n), next_obs=obs,
                                    dones=np.zeros(n, bool))
    logger = imit_logger.configure(format_strs=[])  # BC logs every 500 batches; nowhere to print here
    trainer = bc.BC(observation_space=obs_space, action_space=act_space, rng=np.random.default_rng(seed),
                    policy=policy, demonstrations=transitions, batch_size=BATCH,
                    optimizer_kwargs={"lr": LR}, device="cpu", custom_logger=logger)
    if loss == "mse":
        def mse(policy, obs, acts):
            obs_t, acts_t = th.as_tensor(obs, device=policy.device), th.as_tensor(acts, device=policy.device)
            value = th.mean((policy.get_distribution(obs_t).distribution.mean - acts_t) ** 2)
            zero = th.zeros(())
            return bc.BCTrainingMetrics(neglogp=value, entropy=None, ent_loss=zero, prob_true_act=zero,
                                        l2_norm=zero, l2_loss=zero, loss=value)

        trainer.loss_calculator = mse
    trainer.train(n_batches=skip, progress_bar=False)
    start = time.perf_counter()
    trainer.train(n_batches=updates, progress_bar=False)
    return updates / (time.perf_counter() - start)


def d3rlpy_rate(obs, acts, skip: int, updates: int, seed: int) -> float:
    import d3rlpy
    import numpy as np

    d3rlpy.seed(seed)
    n = len(obs)
    terminals = np.zeros(n, np.float32)
    terminals[-1] = 1.0
    dataset = d3rlpy.dataset.MDPDataset(observations=obs, actions=acts, rewards=np.zeros(n, np.float32),
                                        terminals=terminals)
    algo = d3rlpy.algos.BCConfig(batch_size=BATCH, learning_rate=LR, policy_type="deterministic",
                                 encoder_factory=d3rlpy.models.VectorEncoderFactory(hidden_units=HIDDEN,
                                                                                    activation="relu"),
                                 ).create(device="cpu:0")
    times = {}

    def clock(algo, epoch, total_step):
        if total_step in (skip, skip + updates):
            times[total_step] = time.perf_counter()

    total = skip + updates
    algo.fit(dataset, n_steps=total, n_steps_per_epoch=total, show_progress=False, save_interval=total + 1,
             logger_adapter=d3rlpy.logging.NoopAdapterFactory(), callback=clock)
    return updates / (times[skip + updates] - times[skip])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lib", choices=("imitation", "d3rlpy"), required=True)
    p.add_argument("--loss", choices=("nll", "mse"), default="nll", help="imitation only")
    p.add_argument("--data", required=True)
    p.add_argument("--skip", type=int, required=True)
    p.add_argument("--updates", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    threads = fastest_torch_threads()
    obs, acts = load(a.data)
    if a.lib == "imitation":
        rate = imitation_rate(obs, acts, a.loss, a.skip, a.updates, a.seed)
    else:
        rate = d3rlpy_rate(obs, acts, a.skip, a.updates, a.seed)
    print(json.dumps({"lib": a.lib, "loss": a.loss if a.lib == "imitation" else "mse", "updates_per_s": rate,
                      "torch_threads": threads}))


if __name__ == "__main__":
    main()
