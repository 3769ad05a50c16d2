"""Datasets: flat columns, Minari read/write (ours and the minari package's), D4RL import, validation of
damaged files, mixing, splitting and summaries."""

import hashlib
import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from understudy.data import (Dataset, check_compatible, dataset_info, format_info, load_dataset, mix_datasets,
                             save_dataset, train_val_split)
from understudy.types import ArraySpec, EnvSpec, UnderstudyError

SPEC = EnvSpec(env_id="Toy-v0", family="gymnasium", observation=ArraySpec((3,), "float32"),
               action=ArraySpec((2,), "float32", low=(-1.0, -1.0), high=(1.0, 1.0)), max_episode_steps=5)


def make_episode(t, seed, terminated=False, task_id=None, instruction=None):
    rng = np.random.default_rng(seed)
    ep = {"observations": rng.normal(size=(t + 1, 3)).astype(np.float32),
          "actions": rng.uniform(-1, 1, size=(t, 2)).astype(np.float32),
          "rewards": np.arange(t, dtype=np.float32) + seed,
          "terminations": np.eye(t, dtype=bool)[-1] & terminated,
          "truncations": np.eye(t, dtype=bool)[-1] & (not terminated)}
    if task_id is not None:
        ep["task_id"] = task_id
    if instruction is not None:
        ep["instruction"] = instruction
    return ep


def toy(lengths=(3, 5, 2), **kw):
    eps = [make_episode(t, seed=i, terminated=(i % 2 == 0), **kw) for i, t in enumerate(lengths)]
    return Dataset.from_episodes(eps, {"env_id": "Toy-v0", "spec": SPEC.to_dict(), "policy": "test",
                                       "ref_min_score": 0.0, "ref_max_score": 10.0})


def sha(path: Path) -> str:
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    h = hashlib.sha256()
    for p in files:
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


# -- columns ----------------------------------------------------------------------------------------------
def test_from_episodes_columns_and_episode_roundtrip():
    eps = [make_episode(3, 0, True), make_episode(5, 1), make_episode(2, 2)]
    ds = Dataset.from_episodes(eps, {"env_id": "Toy-v0"})
    assert (ds.num_steps, ds.num_episodes) == (10, 3)
    np.testing.assert_array_equal(ds.episode_starts, [0, 3, 8])
    np.testing.assert_array_equal(ds.episode_lengths, [3, 5, 2])
    np.testing.assert_allclose(ds.episode_returns(), [0 + 1 + 2, 1 + 2 + 3 + 4 + 5, 2 + 3])
    assert ds.observations.dtype == np.float32 and ds.actions.dtype == np.float32
    assert ds.terminations.tolist() == [False, False, True] + [False] * 7
    assert ds.truncations.tolist() == [False] * 7 + [True, False, True]
    # within an episode next_observations[t] == observations[t + 1]
    np.testing.assert_array_equal(ds.next_observations[3:7], ds.observations[4:8])
    for i, ep in enumerate(eps):
        back = ds.episode(i)
        for key in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(back[key], ep[key])
    np.testing.assert_array_equal(ds.episode_index(), [0, 0, 0, 1, 1, 1, 1, 1, 2, 2])


def test_from_episodes_rejects_wrong_observation_count():
    ep = make_episode(4, 0)
    ep["observations"] = ep["observations"][:-1]  # T observations instead of T+1
    with pytest.raises(UnderstudyError, match="T\\+1"):
        Dataset.from_episodes([ep])


def test_select_episodes_keeps_whole_episodes_in_order():
    ds = toy(instruction="go")
    sub = ds.select_episodes([2, 0])
    np.testing.assert_array_equal(sub.episode_lengths, [2, 3])
    np.testing.assert_array_equal(sub.episode(0)["observations"], ds.episode(2)["observations"])
    np.testing.assert_array_equal(sub.episode(1)["actions"], ds.episode(0)["actions"])
    assert sub.instructions == ["go", "go"]


def test_dict_observations():
    rng = np.random.default_rng(0)
    eps = [{"observations": {"image": rng.integers(0, 255, (t + 1, 7, 7, 3), dtype=np.uint8),
                             "direction": rng.integers(0, 4, (t + 1,))},
            "actions": rng.integers(0, 7, t), "rewards": np.zeros(t), "terminations": np.eye(t, dtype=bool)[-1],
            "truncations": np.zeros(t, bool), "instruction": f"go to box {t}"} for t in (4, 6)]
    ds = Dataset.from_episodes(eps)
    assert ds.observations["image"].shape == (10, 7, 7, 3) and ds.observations["image"].dtype == np.uint8
    assert ds.actions.dtype == np.int64
    np.testing.assert_array_equal(ds.episode(1)["observations"]["image"], eps[1]["observations"]["image"])
    assert ds.instructions == ["go to box 4", "go to box 6"]


# -- Minari storage ---------------------------------------------------------------------------------------
def test_save_load_roundtrip_and_minari_opens_it(minari_root):
    import minari

    ds = toy(task_id=3, instruction="reach the goal")
    path = save_dataset(ds, minari_root / "understudy" / "toy-v0")
    assert (path / "data" / "main_data.hdf5").is_file() and (path / "data" / "metadata.json").is_file()

    back = load_dataset(path)
    for key in ("observations", "actions", "rewards", "terminations", "truncations", "next_observations",
                "episode_starts", "task_id"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ds, key), err_msg=key)
    assert back.instructions == ["reach the goal"] * 3
    assert back.metadata["env_id"] == "Toy-v0" and back.metadata["ref_max_score"] == 10.0
    assert EnvSpec.from_dict(back.metadata["spec"]) == SPEC

    m = minari.load_dataset("understudy/toy-v0")  # the minari package reads our files
    assert (m.total_episodes, m.total_steps) == (3, 10)
    ep1 = m[1]
    np.testing.assert_array_equal(ep1.observations, ds.episode(1)["observations"])
    np.testing.assert_allclose(ep1.rewards, ds.episode(1)["rewards"])
    assert ep1.truncations[-1] and not ep1.terminations.any()
    assert m.spec.action_space.shape == (2,)
    # and by id, through MINARI_DATASETS_PATH
    assert load_dataset("understudy/toy-v0").num_steps == 10


def test_save_refuses_to_overwrite(tmp_path):
    ds = toy()
    save_dataset(ds, tmp_path / "d")
    with pytest.raises(UnderstudyError, match="already exists"):
        save_dataset(ds, tmp_path / "d")
    save_dataset(ds.select_episodes([0]), tmp_path / "d", overwrite=True)
    assert load_dataset(tmp_path / "d").num_episodes == 1
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(UnderstudyError, match="does not look like a dataset"):
        save_dataset(ds, tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_loads_dataset_written_by_minari_data_collector(minari_root):
    import gymnasium as gym
    import minari

    env = minari.DataCollector(gym.make("Pendulum-v1"))
    for ep in range(3):
        env.reset(seed=ep)
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            done = term or trunc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = env.create_dataset(dataset_id="test/pendulum-v0", algorithm_name="random-policy")
    env.close()

    for where in (minari_root / "test" / "pendulum-v0", "test/pendulum-v0"):
        ds = load_dataset(where)
        assert (ds.num_episodes, ds.num_steps) == (3, 600)
        np.testing.assert_array_equal(ds.episode_lengths, [200, 200, 200])
        np.testing.assert_allclose(ds.episode_returns(), [e.rewards.sum() for e in theirs], rtol=1e-5)
        np.testing.assert_array_equal(ds.episode(2)["observations"], theirs[2].observations)
        assert ds.metadata["env_id"] == "Pendulum-v1" and ds.metadata["policy"] == "random-policy"
        spec = EnvSpec.from_dict(ds.metadata["spec"])
        assert spec.obs_shape == (3,) and spec.action.high == (2.0,) and spec.max_episode_steps == 200
        assert ds.truncations.sum() == 3 and not ds.terminations.any()


def test_loads_minari_jpeg_encoded_images(minari_root):
    import gymnasium as gym
    import minari

    class Frames(gym.Env):  # 32x32 uint8 frames: minari stores them JPEG-encoded
        observation_space = gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
        action_space = gym.spaces.Discrete(3)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return np.full((32, 32, 3), 10, np.uint8), {}

        def step(self, action):
            self.t += 1
            return np.full((32, 32, 3), 10 * (self.t + 1), np.uint8), 1.0, self.t >= 4, False, {}

    env = minari.DataCollector(Frames())
    env.reset(seed=0)
    for _ in range(4):
        env.step(env.action_space.sample())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env.create_dataset(dataset_id="test/frames-v0", algorithm_name="random")
    ds = load_dataset("test/frames-v0")
    assert ds.observations.shape == (4, 32, 32, 3) and ds.observations.dtype == np.uint8
    np.testing.assert_array_equal(ds.observations[:, 5, 5, 0], [10, 20, 30, 40])  # flat frames survive JPEG
    np.testing.assert_array_equal(ds.next_observations[:, 0, 0, 2], [20, 30, 40, 50])
    assert ds.terminations.tolist() == [False, False, False, True] and ds.actions.dtype == np.int64


def test_unknown_path_names_what_was_tried(tmp_path, minari_root):
    with pytest.raises(UnderstudyError, match="No dataset found"):
        load_dataset(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnderstudyError, match="holds no dataset"):
        load_dataset(tmp_path / "empty")


# -- D4RL import ------------------------------------------------------------------------------------------
def write_d4rl(path, with_next):
    # Rows 0-2: episode ending in a terminal; 3-6: timeout; 7-8: unfinished tail.
    n = 9
    obs = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    with h5py.File(path, "w") as f:
        f["observations"] = obs
        f["actions"] = np.linspace(-1, 1, n * 3).reshape(n, 3)
        f["rewards"] = np.arange(n, dtype=np.float64)
        f["terminals"] = np.isin(np.arange(n), [2])
        f["timeouts"] = np.isin(np.arange(n), [6])
        if with_next:
            f["next_observations"] = obs + 100
    return obs


def test_d4rl_import_with_next_observations(tmp_path):
    write_d4rl(tmp_path / "d.hdf5", with_next=True)
    ds = load_dataset(tmp_path / "d.hdf5")
    np.testing.assert_array_equal(ds.episode_starts, [0, 3, 7])
    np.testing.assert_array_equal(ds.terminations.nonzero()[0], [2])
    np.testing.assert_array_equal(ds.truncations.nonzero()[0], [6, 8])  # timeout, and the unfinished tail
    np.testing.assert_array_equal(ds.next_observations[4], [108, 109])
    assert ds.observations.dtype == np.float32 and ds.metadata["spec"]["observation"]["shape"] == [2]


def test_d4rl_import_without_next_observations_drops_rows_without_successor(tmp_path):
    obs = write_d4rl(tmp_path / "d.h5", with_next=False)
    ds = load_dataset(tmp_path / "d.h5")
    # terminal episode keeps its 3 rows; the timed-out one loses row 6 and the tail loses row 8
    np.testing.assert_array_equal(ds.rewards, [0, 1, 2, 3, 4, 5, 7])
    np.testing.assert_array_equal(ds.episode_starts, [0, 3, 6])
    np.testing.assert_array_equal(ds.terminations.nonzero()[0], [2])
    np.testing.assert_array_equal(ds.truncations.nonzero()[0], [5, 6])
    np.testing.assert_array_equal(ds.next_observations[3], obs[4])
    np.testing.assert_array_equal(ds.next_observations[5], obs[6])  # new last row of the timed-out episode


# -- validation of damaged files --------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    return save_dataset(toy(lengths=(40, 30, 20)), tmp_path / "toy")


def expect_error(path, *needles):
    before = sha(path)
    with pytest.raises(UnderstudyError) as err:
        load_dataset(path)
    for needle in needles:
        assert needle in str(err.value), str(err.value)
    assert sha(path) == before  # loading never modifies the files
    return str(err.value)


def test_truncated_file_is_reported(saved):
    main = saved / "data" / "main_data.hdf5"
    data = main.read_bytes()
    main.write_bytes(data[: len(data) // 2])
    expect_error(saved, "main_data.hdf5", "fully copied")


def test_corrupt_bytes_in_data_are_reported(saved):
    main = saved / "data" / "main_data.hdf5"
    with h5py.File(main, "r") as f:
        offset = f["episode_1/observations"].id.get_chunk_info(0).byte_offset
    raw = bytearray(main.read_bytes())
    raw[offset + 8: offset + 24] = b"\xff" * 16
    main.write_bytes(bytes(raw))
    expect_error(saved, "main_data.hdf5", "episode_1/observations", "re-collect")


def test_corrupt_file_header_is_reported(saved):
    main = saved / "data" / "main_data.hdf5"
    raw = bytearray(main.read_bytes())
    raw[0:64] = b"\x00" * 64
    main.write_bytes(bytes(raw))
    expect_error(saved, "main_data.hdf5")


def test_corrupt_metadata_json_is_reported(saved):
    meta = saved / "data" / "metadata.json"
    meta.write_text(meta.read_text()[:40])
    expect_error(saved, "metadata.json")


def test_missing_episode_is_reported(saved):
    meta = saved / "data" / "metadata.json"
    m = json.loads(meta.read_text())
    m["total_episodes"] = 4
    meta.write_text(json.dumps(m))
    expect_error(saved, "holds 3 episodes", "says 4")


def test_wrong_shape_is_reported(saved):
    meta = saved / "data" / "metadata.json"
    m = json.loads(meta.read_text())
    m["understudy"]["metadata"]["spec"]["observation"]["shape"] = [4]
    meta.write_text(json.dumps(m))
    expect_error(saved, "`observations`", "space mismatch", "(4,)")


def test_nan_is_reported(saved):
    main = saved / "data" / "main_data.hdf5"
    with h5py.File(main, "r+") as f:  # rewrite through HDF5 so the checksum stays valid
        f["episode_2/rewards"][5] = np.nan
    msg = expect_error(saved, "`rewards`", "NaN", "main_data.hdf5")
    assert "step 75" in msg  # 40 + 30 + 5


def test_nan_in_d4rl_observations_is_reported(tmp_path):
    write_d4rl(tmp_path / "d.hdf5", with_next=True)
    with h5py.File(tmp_path / "d.hdf5", "r+") as f:
        f["observations"][4, 1] = np.inf
    expect_error(tmp_path / "d.hdf5", "`observations`", "d.hdf5", "step 4")


def test_inconsistent_columns_are_reported(tmp_path):
    with h5py.File(tmp_path / "d.hdf5", "w") as f:
        f["observations"] = np.zeros((5, 2))
        f["actions"] = np.zeros((4, 1))
        f["rewards"] = np.zeros(5)
        f["terminals"] = np.zeros(5, bool)
    expect_error(tmp_path / "d.hdf5", "`actions` has 4 rows")


def test_check_compatible():
    ds = toy()
    check_compatible(ds, SPEC)
    hopper = EnvSpec(env_id="Hopper-v5", family="mujoco", observation=ArraySpec((11,), "float32"),
                     action=ArraySpec((3,), "float32"))
    with pytest.raises(UnderstudyError, match="observations.*Hopper-v5.*Toy-v0"):
        check_compatible(ds, hopper)
    discrete = EnvSpec(env_id="Disc-v0", family="gymnasium", observation=ArraySpec((3,), "float32"),
                       action=ArraySpec((), "int64"), num_actions=4)
    with pytest.raises(UnderstudyError, match="discrete"):
        check_compatible(ds, discrete)


# -- mixing, splitting, info -------------------------------------------------------------------------------
def test_mix_datasets_sets_task_ids_and_sources():
    a, b = toy(lengths=(2, 3)), toy(lengths=(4,))
    b.metadata["policy"] = "expert"
    mixed = mix_datasets([a, b])
    assert (mixed.num_episodes, mixed.num_steps) == (3, 9)
    np.testing.assert_array_equal(mixed.task_id, [0] * 5 + [1] * 4)
    np.testing.assert_array_equal(mixed.episode_starts, [0, 2, 5])
    np.testing.assert_array_equal(mixed.episode(2)["observations"], b.episode(0)["observations"])
    assert [s["policy"] for s in mixed.metadata["sources"]] == ["test", "expert"]
    assert mixed.metadata["env_id"] == "Toy-v0" and mixed.metadata["ref_max_score"] == 10.0
    wrong = Dataset.from_episodes([{**make_episode(2, 0), "actions": np.zeros((2, 5))}])
    with pytest.raises(UnderstudyError, match="actions"):
        mix_datasets([a, wrong])


def test_train_val_split_whole_episodes_deterministic():
    ds = toy(lengths=tuple(range(1, 21)))
    train, val = train_val_split(ds, val_fraction=0.2, seed=0)
    assert val.num_episodes == 4 and train.num_episodes == 16
    assert train.num_steps + val.num_steps == ds.num_steps
    # whole episodes: lengths of the split are exactly lengths of some originals, all accounted for
    assert sorted(train.episode_lengths.tolist() + val.episode_lengths.tolist()) == list(range(1, 21))
    again = train_val_split(ds, val_fraction=0.2, seed=0)[1]
    np.testing.assert_array_equal(again.episode_lengths, val.episode_lengths)
    other = train_val_split(ds, val_fraction=0.2, seed=1)[1]
    assert other.episode_lengths.tolist() != val.episode_lengths.tolist()
    with pytest.raises(UnderstudyError):
        train_val_split(toy(lengths=(3,)), 0.5)


def test_dataset_info_and_format():
    ds = toy(task_id=1)
    info = dataset_info(ds)
    assert (info["episodes"], info["steps"]) == (3, 10)
    assert info["return"]["mean"] == pytest.approx(np.mean([3.0, 15.0, 5.0]))
    assert info["return"]["max"] == 15.0 and info["length"]["min"] == 2.0
    assert info["terminated_episodes"] == 2 and info["truncated_episodes"] == 1
    assert info["task_ids"] == [1] and info["has_instructions"] is False
    assert info["normalized_return_mean"] == pytest.approx(np.mean([3.0, 15.0, 5.0]) / 10.0)
    json.dumps(info)
    text = format_info(info)
    assert "Toy-v0" in text and "7.67" in text and "float32(2,) in [-1, 1]" in text
