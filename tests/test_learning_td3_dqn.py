"""TD3 and DQN learning checks in the real off-policy loop (minutes each): run with `python -m pytest -m slow`.

The exported final policy is loaded and re-evaluated, so these also check that the loop's exports act like
the trained agent.
"""

import csv

import pytest

from understudy.algos import dqn, td3
from understudy.eval.rollouts import evaluate_policy
from understudy.policy import load_policy
from understudy.train import off_policy
from understudy.train.common import RunArgs


def _train(algo_name, module, cfg, env_id, steps, out, eval_episodes=10):
    """Trains one seed; returns the final evaluation and the final/ and best/ exports re-evaluated (20 episodes)."""
    summary = off_policy.train(algo_name, module, cfg, RunArgs(env=env_id, steps=steps, eval_every=steps // 10,
                                                               eval_episodes=eval_episodes, out=str(out),
                                                               progress=False))
    reloaded = {kind: evaluate_policy(load_policy(out / kind), env_id, episodes=20, seed=12_345)["mean"]
                for kind in ("final", "best")}
    with open(out / "metrics.csv") as f:
        curve = [(int(row["step"]), round(float(row["eval/return"]), 1)) for row in csv.DictReader(f)]
    print(f"{algo_name} {env_id}: eval curve {curve}; reloaded exports: {reloaded}")  # shown with -s
    return summary["final"]["seeds"][0]["mean"], reloaded


@pytest.mark.slow
def test_td3_solves_pendulum_in_20k_steps(tmp_path):
    """The CPU preset (updates from 5k steps on) reaches a mean return >= -200 on Pendulum-v1 within 20k steps."""
    final, reloaded = _train("td3", td3, td3.PRESETS["cpu"], "Pendulum-v1", 20_000, tmp_path / "td3")
    assert final >= -200, final
    assert reloaded["final"] >= -200, reloaded


@pytest.mark.slow
def test_dqn_solves_cartpole(tmp_path):
    """The cartpole preset (50k steps): the best export balances all 500 steps, the final one far beyond random.

    DQN's greedy return on CartPole swings between evaluations, so the final policy gets a looser bound
    (195, CartPole-v0's "solved" level; random actions score ~22).
    """
    final, reloaded = _train("dqn", dqn, dqn.PRESETS["cartpole"], "CartPole-v1", 50_000, tmp_path / "dqn")
    assert reloaded["best"] >= 475, reloaded
    assert final >= 195 and reloaded["final"] >= 195, (final, reloaded)
