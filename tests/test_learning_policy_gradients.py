"""Learning checks for REINFORCE (plain, with a baseline) and actor-critic (minutes each): `pytest -m slow`.

Returns are greedy (the policy's mode) over 20 evaluation episodes; a random CartPole policy scores about 22,
a random Pendulum policy about -1200 to -1500. Thresholds leave a margin below what seed 0 reached when
these were written (noted beside each).
"""

import pytest

from understudy.algos import actor_critic, reinforce
from understudy.train import episodic
from understudy.train.common import RunArgs

PENDULUM = dict(reward_scale=0.1, episodes_per_iteration=4, value_updates=20)  # Pendulum's costs reach -16 per step
NOTE_001 = dict(length_bonus=0.01, anneal_gradient_weight=True, replay_trajectories=10)


def best_and_final(tmp_path, name, mod, cfg, env, steps):
    run = RunArgs(env=env, steps=steps, eval_every=10_000, eval_episodes=20, out=str(tmp_path / name),
                  progress=False, tensorboard=False)
    summary = episodic.train(name.split("_")[0], mod, cfg, run)
    return summary["best"]["seeds"][0]["mean"], summary["final"]["seeds"][0]["mean"]


@pytest.mark.slow
@pytest.mark.parametrize("name,mod,cfg,threshold", [
    ("actor-critic", actor_critic, actor_critic.Config(), 450),  # 488 at 21k steps, 500 at 72k
    ("reinforce-baseline", reinforce, reinforce.Config(baseline=True), 450),  # 476 at 21k, 496 at 70k
    ("reinforce", reinforce, reinforce.Config(), 400),  # 489 at 31k
])
def test_cartpole_learns(tmp_path, name, mod, cfg, threshold):
    best, final = best_and_final(tmp_path, name, mod, cfg, "CartPole-v1", 60_000)
    assert best >= threshold and final >= 300, (best, final)


@pytest.mark.slow
def test_cartpole_learns_with_note_001_options(tmp_path):
    """Length bonus, annealed gradient weight and replay of 10 past episodes together (465 at 60k steps)."""
    best, final = best_and_final(tmp_path, "actor-critic_note", actor_critic, actor_critic.Config(**NOTE_001),
                                 "CartPole-v1", 80_000)
    assert best >= 400 and final >= 300, (best, final)


@pytest.mark.slow
@pytest.mark.parametrize("name,mod,cfg", [
    ("actor-critic", actor_critic, actor_critic.Config(**PENDULUM)),  # -170 at 140k steps, -141 at 200k
    ("reinforce-baseline", reinforce, reinforce.Config(baseline=True, **PENDULUM)),  # -147 at 140k, -144 at 200k
])
def test_pendulum_learns(tmp_path, name, mod, cfg):
    best, final = best_and_final(tmp_path, name, mod, cfg, "Pendulum-v1", 200_000)
    assert best >= -250 and final >= -400, (best, final)

