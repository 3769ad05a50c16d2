"""D4RL-style recipes (random, medium, medium-replay, expert, medium-expert), references, replay snapshots."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from understudy import envs
from understudy.algos import sac
from understudy.checkpoint import export_policy
from understudy.data import load_dataset, save_dataset
from understudy.data.recipes import (REPLAY_FILE, Sources, collect_recipe, find_sources, load_replay_snapshot,
                                     pick_medium, reference_returns, replay_to_dataset)
from understudy.nets.heads import head_config, make_head
from understudy.policy import load_policy, to_env_action
from understudy.train import off_policy
from understudy.train.common import RunArgs
from understudy.types import ArraySpec, EnvSpec, UnderstudyError

ENV = "Pendulum-v1"
SPEC = envs.make_spec(ENV)
FAST = dict(num_envs=4, reference_episodes=4, progress=False)


def make_export(path, eval_return, seed=0):
    """A tiny tanh-gaussian policy export with random weights, recording `eval_return` like a run's snapshot."""
    cfg = head_config("tanh-gaussian", action_dim=1, hidden_dims=(8,))
    params = make_head(**cfg).init(jax.random.PRNGKey(seed), jnp.zeros((1, 3)))
    return export_policy(path, head_config=cfg, params=params, spec=SPEC, metadata={"eval_return": eval_return})


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    """A tiny SAC run on Pendulum with policy and replay snapshots at steps 200 and 400 (one episode apart).

    It explores at random throughout (learning_starts = steps), which skips compiling the update: the
    recipes only need the loop's snapshots, not a trained policy."""
    out = tmp_path_factory.mktemp("run") / "sac"
    cfg = sac.Config(hidden_dims=(16, 16), batch_size=32, learning_starts=400)
    run = RunArgs(env=ENV, steps=400, eval_every=200, eval_episodes=1, snapshot_every=200, snapshot_replay=True,
                  out=str(out), seed=3, tensorboard=False, progress=False)
    off_policy.train("sac", sac, cfg, run)
    return out


@pytest.fixture
def fake_run(tmp_path):
    """A run directory with snapshots at known returns and references recorded beside the final export."""
    run = tmp_path / "run"
    for step, ret in [(1000, -1190.0), (2000, -900.0), (3000, -800.0), (4000, -400.0)]:
        make_export(run / "snapshots" / f"step_{step}", ret, seed=step)
    make_export(run / "final", -150.0, seed=7)
    (run / "final" / "expert.json").write_text(json.dumps({"mean": -150.0, "random_return": -1200.0}))
    return run


def test_replay_snapshot_holds_every_transition_and_recovers_the_episodes(sac_run):
    """Replaying the recovered actions in a fresh env reproduces observations, rewards and episode ends."""
    for step in (200, 400):
        columns, meta = load_replay_snapshot(sac_run / "snapshots" / f"step_{step}" / REPLAY_FILE)
        assert columns["rewards"].shape == (step,) and meta["step"] == str(step)
        ds = replay_to_dataset(columns, EnvSpec.from_json(meta["spec"]))
        np.testing.assert_array_equal(ds.episode_lengths, [200] * (step // 200))
        assert ds.truncations.sum() == step // 200 and not ds.terminations.any()
    env = envs.make(ENV, seed=3)
    obs, _ = env.reset(seed=3)  # the loop resets seed s with run.seed + s
    for e in range(ds.num_episodes):
        ep = ds.episode(e)
        if e:
            obs, _ = env.reset()
        np.testing.assert_allclose(ep["observations"][0], obs, rtol=1e-6)
        for t, action in enumerate(ep["actions"]):
            obs, reward, term, trunc, _ = env.step(action)
            np.testing.assert_allclose(ep["observations"][t + 1], obs, rtol=1e-5, atol=1e-6)
            assert reward == pytest.approx(ep["rewards"][t], rel=1e-5)
            assert (term, trunc) == (ep["terminations"][t], ep["truncations"][t])
    assert np.abs(ds.actions).max() <= 2.0 and np.abs(ds.actions).max() > 1.0  # env units, not [-1, 1]


def test_replay_boundaries_terminations_truncations_and_wraparound():
    spec = EnvSpec(env_id="toy", family="gymnasium", observation=ArraySpec((1,), "float32"),
                   action=ArraySpec((1,), "float32", low=(-2.0,), high=(2.0,)))
    # episodes: [0, 1, 2] terminated, [10, 11] truncated (reset follows), [20, 21, 22] cut by the end of data
    obs = np.array([0, 1, 2, 10, 11, 20, 21, 22], np.float32)[:, None]
    next_obs = np.array([1, 2, 3, 11, 12, 21, 22, 23], np.float32)[:, None]
    term = np.array([0, 0, 1, 0, 0, 0, 0, 0], np.float32)
    columns = {"observations": obs, "next_observations": next_obs, "terminations": term,
               "rewards": np.arange(8, dtype=np.float32), "actions": np.full((8, 1), 0.5, np.float32)}
    ds = replay_to_dataset(columns, spec)
    np.testing.assert_array_equal(ds.episode_starts, [0, 3, 5])
    np.testing.assert_array_equal(np.flatnonzero(ds.terminations), [2])
    np.testing.assert_array_equal(np.flatnonzero(ds.truncations), [4, 7])
    np.testing.assert_allclose(ds.actions, 1.0)  # 0.5 in [-1, 1] is 1.0 in [-2, 2]
    np.testing.assert_allclose(ds.episode_returns(), [3, 7, 18])


def test_replay_snapshot_keeps_insertion_order_after_the_buffer_wraps(tmp_path):
    from understudy.data.recipes import save_replay_snapshot
    from understudy.data.replay import replay_add, replay_init

    spec = EnvSpec(env_id="toy", family="gymnasium", observation=ArraySpec((1,), "float32"),
                   action=ArraySpec((1,), "float32", low=(-1.0,), high=(1.0,)))
    buf = replay_init(5, (1,), (1,))
    for t in range(7):  # slots hold 5, 6, 2, 3, 4 with ptr at 2
        x = jnp.full((1, 1), float(t))
        buf = replay_add(buf, x, x, jnp.full((1,), float(t)), jnp.zeros(1), x + 1)
    save_replay_snapshot(tmp_path, buf, step=7, spec=spec)
    columns, meta = load_replay_snapshot(tmp_path / REPLAY_FILE)
    np.testing.assert_array_equal(columns["rewards"], [2, 3, 4, 5, 6])
    assert meta["wrapped"] == "True"
    assert replay_to_dataset(columns, spec).num_episodes == 1  # consecutive transitions: one episode


def test_medium_is_the_snapshot_nearest_a_third_of_the_way_to_the_expert(fake_run):
    sources = find_sources(fake_run)
    assert sources.expert == fake_run / "final" and len(sources.snapshots) == 4
    refs = reference_returns(ENV, sources.expert)  # both read from expert.json: nothing is evaluated
    assert (refs.random, refs.expert) == (-1200.0, -150.0)
    medium = pick_medium(sources, refs)  # target -1200 + 1050 / 3 = -850: -900 and -800 tie, the earlier wins
    assert medium.export == fake_run / "snapshots" / "step_2000" and medium.target == pytest.approx(-850.0)
    with pytest.raises(UnderstudyError, match="replay"):
        pick_medium(sources, refs, need_replay=True)
    explicit = pick_medium(find_sources(fake_run, fake_run / "snapshots" / "step_4000"), refs)
    assert explicit.export == fake_run / "snapshots" / "step_4000" and explicit.how == "given"


def test_a_missing_medium_replay_buffer_error_quotes_the_experts_note(tmp_path):
    medium = tmp_path / "medium"
    medium.mkdir()
    sources = Sources(expert=None, medium=medium, snapshots=(), origin=None)
    with pytest.raises(UnderstudyError, match="snapshot-replay` and pass the run directory as --policy.$"):
        pick_medium(sources, None, need_replay=True)  # no expert.json beside it: nothing more to say
    (tmp_path / "expert.json").write_text(json.dumps({"medium": {"replay": "42 MB, not in git: rerun the SAC run"}}))
    with pytest.raises(UnderstudyError, match="expert.json says: 42 MB, not in git: rerun the SAC run\\.$"):
        pick_medium(sources, None, need_replay=True)


def test_random_expert_medium_expert_and_noise(fake_run, tmp_path):
    random = collect_recipe(ENV, "random", steps=400, seed=1, **FAST)
    assert random.num_steps >= 400 and random.metadata["recipe"] == "random"
    assert random.metadata["ref_min_score"] < -900  # 4 random episodes, evaluated (no expert to read from)
    assert "ref_max_score" not in random.metadata

    expert = collect_recipe(ENV, "expert", steps=400, policy=fake_run, seed=1, **FAST)
    medium = collect_recipe(ENV, "medium", steps=400, policy=fake_run, seed=1, **FAST)
    both = collect_recipe(ENV, "medium-expert", steps=400, policy=fake_run, seed=1, **FAST)
    for ds in (expert, medium, both):
        assert (ds.metadata["ref_min_score"], ds.metadata["ref_max_score"]) == (-1200.0, -150.0)
    assert expert.metadata["policy"] == str(fake_run / "final")
    assert medium.metadata["medium"]["export"] == str(fake_run / "snapshots" / "step_2000")
    for ds, export in ((expert, "final"), (medium, "snapshots/step_2000")):  # each was collected by its export
        np.testing.assert_allclose(ds.actions, load_policy(fake_run / export)(ds.observations), rtol=1e-5)
    # medium-expert = medium (seed 1) then expert (seed 1 + num_envs), whole episodes, no task ids
    expert_later = collect_recipe(ENV, "expert", steps=400, policy=fake_run, seed=1 + FAST["num_envs"], **FAST)
    assert both.num_steps == medium.num_steps + expert_later.num_steps and both.task_id is None
    np.testing.assert_array_equal(both.observations, np.concatenate([medium.observations, expert_later.observations]))
    np.testing.assert_array_equal(both.episode_lengths, np.concatenate([medium.episode_lengths,
                                                                        expert_later.episode_lengths]))
    np.testing.assert_array_equal(both.actions[medium.num_steps:], expert_later.actions)

    noisy = collect_recipe(ENV, "expert", steps=400, policy=fake_run, seed=1, action_noise=0.3, **FAST)
    np.testing.assert_array_equal(noisy.observations[0], expert.observations[0])  # same resets
    diff = noisy.actions[0] - expert.actions[0]  # same first observation: the difference is the noise
    assert 0 < abs(diff[0]) and np.abs(noisy.actions).max() <= 2.0 and noisy.metadata["action_noise"] == 0.3

    back = load_dataset(save_dataset(both, tmp_path / "pendulum-medium-expert"))
    meta = json.loads((tmp_path / "pendulum-medium-expert" / "data" / "metadata.json").read_text())
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (-1200.0, -150.0)
    assert back.num_steps == both.num_steps and back.metadata["recipe"] == "medium-expert"


def test_recipes_from_a_trained_run(sac_run, tmp_path):
    """medium-replay is the buffer at the medium snapshot; references are evaluated when no JSON records them."""
    replay = collect_recipe(ENV, "medium-replay", policy=sac_run, **FAST)
    picked = replay.metadata["medium"]["export"]
    assert picked in (str(sac_run / "snapshots" / "step_200"), str(sac_run / "snapshots" / "step_400"))
    columns, _ = load_replay_snapshot(f"{picked}/{REPLAY_FILE}")
    assert replay.num_steps == columns["rewards"].shape[0]
    np.testing.assert_allclose(replay.actions, to_env_action(columns["actions"], SPEC))
    refs = replay.metadata["references"]
    assert "4 deterministic episodes" in refs["expert"]["source"] and "4 episodes" in refs["random"]["source"]
    # the pick is the snapshot nearest to a third of the way from random to expert
    low, high = replay.metadata["ref_min_score"], replay.metadata["ref_max_score"]
    target = low + (high - low) / 3
    returns = {p: json.loads((sac_run / "snapshots" / p / "policy.json").read_text())["metadata"]["eval_return"]
               for p in ("step_200", "step_400")}
    assert picked.endswith(min(returns, key=lambda p: abs(returns[p] - target)))
    save_dataset(replay, tmp_path / "replay")


def test_recipe_errors(fake_run, tmp_path):
    with pytest.raises(UnderstudyError, match="Unknown recipe"):
        collect_recipe(ENV, "mediocre", steps=10, policy=fake_run, **FAST)
    with pytest.raises(UnderstudyError, match="needs --steps"):
        collect_recipe(ENV, "expert", policy=fake_run, **FAST)
    with pytest.raises(UnderstudyError, match="drop --steps"):
        collect_recipe(ENV, "medium-replay", steps=10, policy=fake_run, **FAST)
    with pytest.raises(UnderstudyError, match="needs the expert"):
        collect_recipe(ENV, "expert", steps=10, **FAST)
    with pytest.raises(UnderstudyError, match="holds no expert"):
        collect_recipe(ENV, "expert", steps=10, policy=tmp_path, **FAST)
    with pytest.raises(UnderstudyError, match="no policy snapshots"):
        collect_recipe(ENV, "medium", steps=10, policy=fake_run / "final", **FAST)
    with pytest.raises(UnderstudyError, match="action dims"):
        collect_recipe("Hopper-v5", "expert", steps=10, policy=fake_run, **FAST)
    with pytest.raises(UnderstudyError, match="snapshot-every"):
        off_policy.train("sac", sac, sac.Config(), RunArgs(env=ENV, snapshot_replay=True, out=str(tmp_path / "r")))
