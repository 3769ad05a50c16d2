"""PPO learning checks (about a minute each): run with `python -m pytest -m slow tests/test_learning_ppo.py`."""

import pytest

from understudy.algos import ppo
from understudy.train import on_policy
from understudy.train.common import RunArgs


def _train(tmp_path, env, preset, steps, eval_every):
    run = RunArgs(env=env, steps=steps, eval_every=eval_every, eval_episodes=10, out=str(tmp_path / env),
                  progress=False, tensorboard=False)
    summary = on_policy.train("ppo", ppo, ppo.PRESETS[preset], run)
    best, final = summary["best"]["seeds"][0], summary["final"]["seeds"][0]
    print(f"{env}: best {best['mean']:.1f} at step {best['step']}, final {final['mean']:.1f} "
          f"({summary['time_s']:.0f} s)")
    return best["mean"], final["mean"]


@pytest.mark.slow
def test_ppo_solves_cartpole_within_100k_steps(tmp_path):
    best, final = _train(tmp_path, "CartPole-v1", "classic-discrete", 100_000, 10_000)
    assert best >= 475 and final >= 400, (best, final)


@pytest.mark.slow
def test_ppo_swings_up_pendulum_within_50k_steps(tmp_path):
    best, final = _train(tmp_path, "Pendulum-v1", "pendulum", 50_000, 10_000)
    assert best >= -200 and final >= -250, (best, final)
