"""d3rlpy 2.8.1's TD3+BC on an understudy dataset (npz from export_npz.py), CORL/paper settings, evaluated on
Walker2d-v5: 10 episodes every --eval-every updates, 100 at the end (env seeds 0..99). Prints JSON lines."""
import argparse
import json
import time

import d3rlpy
import gymnasium as gym
import numpy as np
import torch

p = argparse.ArgumentParser()
p.add_argument("npz")
p.add_argument("--env", default="Walker2d-v5")
p.add_argument("--steps", type=int, default=100_000)
p.add_argument("--eval-every", type=int, default=25_000)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
torch.set_num_threads(1)
d3rlpy.seed(a.seed)
z = np.load(a.npz, allow_pickle=False)
lo, hi = z["refs"]
dataset = d3rlpy.dataset.MDPDataset(observations=z["observations"], actions=z["actions"], rewards=z["rewards"],
                                    terminals=z["terminals"], timeouts=z["timeouts"])
algo = d3rlpy.algos.TD3PlusBCConfig(actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256, alpha=2.5,
                                    update_actor_interval=2, tau=0.005, gamma=0.99, target_smoothing_sigma=0.2,
                                    target_smoothing_clip=0.5,
                                    observation_scaler=d3rlpy.preprocessing.StandardObservationScaler()
                                    ).create(device="cpu:0")
env = gym.make(a.env)


def evaluate(episodes, first_seed):
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=first_seed + i)
        done, total = False, 0.0
        while not done:
            action = algo.predict(obs[None].astype(np.float32))[0]
            obs, r, term, trunc, _ = env.step(action)
            total += r
            done = term or trunc
        returns.append(total)
    return np.array(returns)


start = time.time()
done_steps = 0
for epoch, metrics in algo.fitter(dataset, n_steps=a.steps, n_steps_per_epoch=a.eval_every, show_progress=False,
                                  logger_adapter=d3rlpy.logging.NoopAdapterFactory()):
    done_steps += a.eval_every
    ret = evaluate(10, 1000 + done_steps)
    print(json.dumps({"step": done_steps, "time_s": round(time.time() - start, 1), "return": float(ret.mean()),
                      "normalized": float(100 * (ret.mean() - lo) / (hi - lo)),
                      **{k: float(v) for k, v in metrics.items()}}), flush=True)
ret = evaluate(100, 0)
print(json.dumps({"final_episodes": 100, "return": float(ret.mean()), "std": float(ret.std()),
                  "normalized": float(100 * (ret.mean() - lo) / (hi - lo))}), flush=True)
