"""Vector-env evaluation equals plain single-env rollouts, across autoresets and seeds."""

import numpy as np

from understudy.envs import make
from understudy.eval.rollouts import evaluate_seeds


def _constant_policy(value):
    return lambda obs: np.full((*obs.shape[:2], 1), value, np.float32)


def _single_env_returns(value, seed, sub_env, episodes):
    env = make("Pendulum-v1")
    obs, _ = env.reset(seed=seed + sub_env)
    returns = []
    for _ in range(episodes):
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(np.array([value], np.float32))
            total += r
            done = term or trunc
        returns.append(total)
        obs, _ = env.reset()
    return returns


def test_vector_evaluation_matches_single_env_rollouts():
    # 4 episodes on 2 sub-envs: each sub-env runs two episodes, the second after an autoreset
    result = evaluate_seeds(_constant_policy(0.5), "Pendulum-v1", episodes=4, seed=3, max_envs=2)[0]
    assert result["lengths"] == [200] * 4
    env0 = _single_env_returns(0.5, 3, 0, 2)
    env1 = _single_env_returns(0.5, 3, 1, 2)
    # episode e ran on sub-env e % 2
    np.testing.assert_allclose(result["returns"], [env0[0], env1[0], env0[1], env1[1]], rtol=1e-5)
    assert result["mean"] == np.mean(result["returns"]) and result["success_rate"] is None


def test_seeds_are_evaluated_with_their_own_actions():
    def act(obs):  # seed 0 pushes one way, seed 1 the other
        return np.stack([np.full((obs.shape[1], 1), -2.0), np.full((obs.shape[1], 1), 2.0)]).astype(np.float32)

    r0, r1 = evaluate_seeds(act, "Pendulum-v1", num_seeds=2, episodes=2, seed=0)
    assert r0["returns"] != r1["returns"] and len(r0["returns"]) == len(r1["returns"]) == 2
