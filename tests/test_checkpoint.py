"""Policy exports and train-state checkpoints: round trips, and clear errors on damaged files (never modified)."""

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from understudy.checkpoint import TrainCheckpointer, export_policy, flatten_params, unflatten_params
from understudy.nets.heads import head_config, make_head
from understudy.policy import from_env_action, load_policy, to_env_action
from understudy.types import ArraySpec, EnvSpec, UnderstudyError

SPEC = EnvSpec(env_id="Pendulum-v1", family="classic", observation=ArraySpec((3,), "float32"),
               action=ArraySpec((1,), "float32", low=(-2.0,), high=(2.0,)), max_episode_steps=200)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def exported(tmp_path):
    cfg = head_config("tanh-gaussian", action_dim=1, hidden_dims=(16, 16))
    module = make_head(**cfg)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    normalizer = {"mean": np.array([0.1, 0.2, 0.3], np.float32), "std": np.array([1.0, 2.0, 3.0], np.float32)}
    path = export_policy(tmp_path / "final", head_config=cfg, params=params, spec=SPEC, normalizer=normalizer,
                         metadata={"algo": "sac"})
    return path, module, params, normalizer


def test_flatten_roundtrip():
    tree = {"a": {"b": np.ones(2), "c": np.zeros((2, 3))}, "d": np.arange(3)}
    back = unflatten_params(flatten_params(tree))
    assert jax.tree.all(jax.tree.map(lambda x, y: np.array_equal(x, y), tree, back))


def test_export_load_gives_identical_actions(exported):
    path, module, params, normalizer = exported
    policy = load_policy(path)
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    expected = module.apply(params, (obs - normalizer["mean"]) / normalizer["std"], method=module.mode)
    np.testing.assert_allclose(policy(obs), 2.0 * np.asarray(expected), rtol=1e-6, atol=1e-6)
    single = policy(obs[0])
    assert single.shape == (1,)
    np.testing.assert_allclose(single, policy(obs)[0], rtol=1e-6)
    assert np.all(np.abs(policy(obs)) <= 2.0)


def test_action_scaling_roundtrip():
    a = np.array([[-1.0], [0.0], [0.5], [1.0]], np.float32)
    env = to_env_action(a, SPEC)
    np.testing.assert_allclose(env, [[-2.0], [0.0], [1.0], [2.0]])
    np.testing.assert_allclose(from_env_action(env, SPEC), a)


def test_export_replaces_atomically(exported, tmp_path):
    path, module, params, _ = exported
    params2 = jax.tree.map(lambda x: x + 1.0, params)
    export_policy(path, head_config=json.loads((path / "policy.json").read_text())["head"], params=params2, spec=SPEC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    assert not load_policy(path).normalizer


@pytest.mark.parametrize("damage", ["truncate", "garbage", "bad_json", "missing_weights", "wrong_shape"])
def test_damaged_export_gives_clear_error_and_is_untouched(exported, damage):
    path, module, params, _ = exported
    weights, desc = path / "policy.safetensors", path / "policy.json"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: len(weights.read_bytes()) // 2])
    elif damage == "garbage":
        weights.write_bytes(b"\x00\x01not a safetensors file" * 10)
    elif damage == "bad_json":
        desc.write_text("{not json")
    elif damage == "missing_weights":
        weights.unlink()
    elif damage == "wrong_shape":
        d = json.loads(desc.read_text())
        d["head"]["hidden_dims"] = [32, 32]
        desc.write_text(json.dumps(d))
    before = {p.name: _digest(p) for p in path.iterdir()}
    with pytest.raises(UnderstudyError) as err:
        load_policy(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert {p.name: _digest(p) for p in path.iterdir()} == before


def test_not_an_export_names_seed_dirs(exported, tmp_path):
    path, *_ = exported
    multi = tmp_path / "multi"
    multi.mkdir()
    path.rename(multi / "seed0")
    with pytest.raises(UnderstudyError, match="seed0"):
        load_policy(multi)


def test_train_checkpoint_roundtrip_and_fallback(tmp_path):
    ck = TrainCheckpointer(tmp_path / "checkpoints")
    tree = {"w": jnp.ones((4, 3)), "step": jnp.array(7, jnp.int32), "key": jax.random.PRNGKey(3)}
    ck.save(100, tree, {"step": 100, "best": [1.5]})
    ck.save(200, jax.tree.map(lambda x: x * 2, tree), {"step": 200, "best": [2.5]})
    step, restored, meta = ck.restore_latest(tree)
    assert step == 200 and meta["best"] == [2.5]
    np.testing.assert_array_equal(restored["w"], 2 * np.ones((4, 3)))
    # damage the newest checkpoint: restoring falls back to the previous one and leaves the files alone
    for f in (tmp_path / "checkpoints" / "200").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "METADATA" not in f.name:
            f.write_bytes(b"garbage")
    step, restored, meta = ck.restore_latest(tree)
    assert step == 100
    np.testing.assert_array_equal(restored["w"], np.ones((4, 3)))
    assert (tmp_path / "checkpoints" / "200").exists()


def test_checkpoint_structure_mismatch_is_clear(tmp_path):
    ck = TrainCheckpointer(tmp_path / "checkpoints")
    ck.save(10, {"w": jnp.ones((4, 3))}, {"step": 10})
    with pytest.raises(UnderstudyError, match="overwrite"):
        ck.restore_latest({"w": jnp.ones((5, 3))})
