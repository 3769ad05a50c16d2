"""Demonstrations for instruction following: BabyAI bot and Meta-World scripted datasets, paraphrases,
env id aliases and suite errors, and the `understudy collect --policy bot|scripted` command."""

import re

import numpy as np
import pytest

from understudy import envs
from understudy.cli import main
from understudy.data import load_dataset, save_dataset
from understudy.instruct.demos import collect_babyai, collect_metaworld
from understudy.instruct.paraphrases import MT10, paraphrases, suite_tasks
from understudy.types import UnderstudyError


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def bot_data():
    return collect_babyai("babyai:GoToLocal", 6, seed=3, num_envs=3, progress=False)


@pytest.fixture(scope="module")
def metaworld_data():
    return collect_metaworld(["reach-v3", "push-v3"], 2, seed=0, progress=False)


def test_bot_solves_every_episode_and_keeps_missions(bot_data):
    ds = bot_data
    assert ds.num_episodes == 6
    last = ds.episode_ends - 1
    assert ds.terminations[last].all() and not ds.truncations.any()
    assert (ds.episode_returns() > 0).all()
    assert all(text.startswith("go to ") for text in ds.instructions)  # GoToLocal missions
    assert len(set(ds.instructions)) > 1  # a new mission each episode
    assert ds.observations["image"].shape == (ds.num_steps, 7, 7, 3) and ds.observations["image"].dtype == np.uint8
    assert ds.observations["direction"].shape == (ds.num_steps,)
    assert (ds.task_id == 0).all() and ds.actions.dtype == np.int64
    assert ds.metadata["policy"] == "bot" and ds.metadata["tasks"] == ["BabyAI-GoToLocal-v0"]
    # the instruction of each episode is the mission the env reported at its start
    env = envs.make("BabyAI-GoToLocal-v0", seed=3)
    env.reset()
    assert env.get_wrapper_attr("instruction") == ds.instructions[0]


def test_bot_dataset_round_trip(bot_data, tmp_path):
    save_dataset(bot_data, tmp_path / "bot")
    back = load_dataset(tmp_path / "bot")
    assert back.instructions == bot_data.instructions
    np.testing.assert_array_equal(back.task_id, bot_data.task_id)
    np.testing.assert_array_equal(back.actions, bot_data.actions)
    assert back.metadata["tasks"] == ["BabyAI-GoToLocal-v0"]


def test_metaworld_suite_collection(metaworld_data):
    ds = metaworld_data
    assert ds.num_episodes == 4
    np.testing.assert_array_equal(ds.task_id[ds.episode_starts], [0, 0, 1, 1])
    # every episode ends at success, well before Meta-World's 500-step limit
    assert ds.terminations[ds.episode_ends - 1].all() and not ds.truncations.any()
    assert (ds.episode_lengths < 200).all()
    for e, task in zip(range(4), ["reach-v3", "reach-v3", "push-v3", "push-v3"]):
        assert ds.instructions[e] in paraphrases(task)["train"]
    assert ds.observations.shape == (ds.num_steps, 39) and np.abs(ds.actions).max() <= 1.0
    goals = ds.observations[ds.episode_starts, -3:]
    assert len({tuple(np.round(g, 4)) for g in goals}) == 4  # goals differ per task and episode
    meta = ds.metadata
    assert meta["tasks"] == ["metaworld/reach-v3", "metaworld/push-v3"] and meta["policy"] == "scripted"
    assert meta["env_options"] == {"terminate_on_success": True}
    assert meta["instructions"]["push-v3"] == paraphrases("push-v3")


def test_metaworld_paraphrase_draw_is_seeded():
    a = collect_metaworld("MT1:reach-v3", 3, seed=5, progress=False)
    b = collect_metaworld("metaworld:reach-v3", 3, seed=5, progress=False)
    assert a.instructions == b.instructions and a.metadata["suite"] == "MT1:reach-v3"
    np.testing.assert_array_equal(a.actions, b.actions)
    assert a.metadata["env_id"] == "metaworld/reach-v3" and (a.task_id == 0).all()


def test_paraphrase_split():
    assert len(MT10) == 10 and MT10[7] == "peg-insert-side-v3"
    seen = set()
    for task in MT10:
        p = paraphrases(task)
        assert p["train"][0] == envs.metaworld.INSTRUCTIONS[task]
        assert len(p["train"]) >= 4 and len(p["held_out"]) == 2
        words = [_words(t) for t in p["train"] + p["held_out"]]
        assert len(set(words)) == len(words)  # differ in wording, not only punctuation
        assert not {_words(t) for t in p["held_out"]} & {_words(t) for t in p["train"]}
        assert not set(words) & seen  # no text shared with another task
        seen |= set(words)
    assert paraphrases("metaworld/hammer-v3") == {"train": ["hammer the nail into the wall"], "held_out": []}
    assert suite_tasks("metaworld:MT10") == MT10 and suite_tasks("MT1:push-v3") == ("push-v3",)
    with pytest.raises(UnderstudyError, match="suite or task"):
        suite_tasks("MT11")


def test_aliases_and_suite_error():
    assert envs.resolve("babyai:GoToLocal") == ("babyai", "BabyAI-GoToLocal-v0")
    assert envs.resolve("babyai:BabyAI-PickupLoc-v0") == ("babyai", "BabyAI-PickupLoc-v0")
    assert envs.resolve("metaworld:reach-v3") == ("metaworld", "metaworld/reach-v3")
    env = envs.make("babyai:GoToLocal", seed=0)
    assert envs.env_spec(env).env_id == "BabyAI-GoToLocal-v0"
    with pytest.raises(UnderstudyError, match=r"suite MT10 .*reach-v3.*window-close-v3.*understudy collect"):
        envs.make("metaworld:MT10")
    with pytest.raises(UnderstudyError, match="Did you mean babyai:GoToLocal"):
        envs.resolve("babyai:GoToLokal")


def test_cli_collect_bot_and_policy_errors(tmp_path, capsys):
    out = tmp_path / "gotolocal"
    assert main(["collect", "--env", "babyai:GoToLocal", "--policy", "bot", "--episodes", "3", "--out", str(out)]) == 0
    ds = load_dataset(out)
    assert ds.num_episodes == 3 and len(ds.instructions) == 3 and all(ds.instructions)
    assert (ds.episode_returns() > 0).all() and ds.metadata["policy"] == "bot"
    capsys.readouterr()
    assert main(["collect", "--env", "metaworld:reach-v3", "--policy", "bot", "--out", str(tmp_path / "x")]) == 2
    assert "--policy scripted" in capsys.readouterr().err
    assert main(["collect", "--env", "babyai:GoToLocal", "--policy", "scripted", "--out", str(tmp_path / "x")]) == 2
    assert "--policy bot" in capsys.readouterr().err
    assert main(["collect", "--env", "babyai:GoToLocal", "--policy", "bot", "--images", "--out",
                 str(tmp_path / "x")]) == 2
    assert "--images" in capsys.readouterr().err
    assert main(["collect", "--env", "metaworld:MT10", "--policy", "random", "--out", str(tmp_path / "x")]) == 2
    assert "scripted" in capsys.readouterr().err


def test_metaworld_images(tmp_path):
    ds = collect_metaworld("reach-v3", 1, seed=2, images=True, progress=False)
    images = ds.observations["image"]
    assert images.shape == (ds.num_steps, 64, 64, 3) and images.dtype == np.uint8
    assert ds.observations["state"].shape == (ds.num_steps, 39)
    assert ds.terminations[-1] and ds.metadata["env_options"]["image_size"] == 64
    # the arm moves: first and last frames differ, consecutive frames mostly a little
    assert np.abs(images[0].astype(int) - images[-1]).mean() > 1.0
    save_dataset(ds, tmp_path / "img")
    np.testing.assert_array_equal(load_dataset(tmp_path / "img").observations["image"], images)
    # the image policy trains on them: K updates dispatched one by one on CPU (see make_update_many)
    import jax

    from understudy.instruct.algo import Config
    from understudy.train.common import RunArgs
    from understudy.train.instruct import initial_state, make_update_many, prepare

    cfg = Config(d_model=16, num_layers=1, num_heads=2, head_hidden_dims=(16,), batch_size=4, warmup_steps=1)
    setup = prepare(cfg, RunArgs(dataset=str(tmp_path / "img")))
    assert setup["net"].obs_kind == "pixels" and len(setup["net"].state_features) == 11  # gripper + goal
    tx, state, key = initial_state(cfg, setup, 10, 0)
    before = jax.device_get(state.params)
    update_many = make_update_many(setup["net"], tx, setup["data"], setup["table"], cfg, setup["mesh"])
    state, key, metrics = update_many(state, key, num_updates=3)
    assert metrics["loss"].shape == (3,) and np.isfinite(metrics["loss"]).all()
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, jax.device_get(state.params))
    assert all(jax.tree.leaves(changed))
