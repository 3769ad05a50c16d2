"""The instruction-following policy: attention masking (no future leak), windows at episode starts with their
instruction, instruction encoding (learned and frozen pretrained, cached), save/load, and the training loop."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from understudy.data import save_dataset
from understudy.data.episodes import Dataset
from understudy.instruct.algo import Config
from understudy.instruct.model import InstructNet, attention_mask
from understudy.instruct.text import InstructionEncoder, instruction_table
from understudy.train.common import RunArgs

SENTENCES = ["go to the red ball", "go to the blue key", "pick up the green box"]


def grid_dataset(num_episodes=12, seed=0, length=(2, 6)) -> Dataset:
    """Random BabyAI-shaped episodes; the action is a function of the instruction and the step (learnable)."""
    from understudy.envs import make_spec

    rng = np.random.default_rng(seed)
    episodes = []
    for e in range(num_episodes):
        T = int(rng.integers(*length))
        k = e % len(SENTENCES)
        episodes.append({
            "observations": {"image": rng.integers(0, 11, (T + 1, 7, 7, 3)).astype(np.uint8),
                             "direction": rng.integers(0, 4, T + 1)},
            "actions": (np.arange(T) + k) % 3, "rewards": np.zeros(T), "terminations": [False] * (T - 1) + [True],
            "truncations": [False] * T, "instruction": SENTENCES[k]})
    spec = make_spec("BabyAI-GoToLocal-v0")
    return Dataset.from_episodes(episodes, metadata={"env_id": spec.env_id, "spec": spec.to_dict()})


@pytest.fixture(scope="module")
def grid_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("instruct") / "grid"
    save_dataset(grid_dataset(), path)
    return str(path)


TINY = Config(d_model=32, num_layers=1, num_heads=2, head_hidden_dims=(32,), batch_size=8, warmup_steps=2)


def test_attention_mask_text_sees_text_observations_see_text_and_the_past():
    m = np.asarray(attention_mask(jnp.array([[1.0, 1.0, 0.0]]), jnp.array([[0.0, 1.0, 1.0]])))[0, 0]
    L = 3
    assert m.shape == (6, 6)
    assert m[:L, :2].all() and not m[:L, 2].any() and not m[:L, L:].any()  # text: text only, no padding
    for j in range(3):  # observation at window position j
        row = m[L + j]
        assert row[:2].all() and not row[2]
        assert not row[L + 0]  # padding step never attended
        assert [bool(row[L + k]) for k in (1, 2)] == [1 <= k <= j for k in (1, 2)]


def test_no_future_leak_and_padding_is_ignored():
    net = InstructNet(obs_kind="grid", action_dim=3, head="categorical", window=4, d_model=32, num_layers=2,
                      num_heads=2, vocab_size=10, max_instruction_tokens=5, head_hidden_dims=(16,))
    rng = np.random.default_rng(0)
    obs = {"image": jnp.asarray(rng.integers(0, 11, (2, 4, 7, 7, 3)), jnp.uint8),
           "direction": jnp.asarray(rng.integers(0, 4, (2, 4)))}
    window_mask = jnp.array([[0.0, 1, 1, 1], [1, 1, 1, 1]])
    text, text_mask = jnp.array([[2, 3, 4, 0, 0]] * 2), jnp.array([[1.0, 1, 1, 0, 0]] * 2)
    params = net.init(jax.random.PRNGKey(0), obs, window_mask, text, text_mask)
    apply = jax.jit(lambda o, t: net.apply(params, o, window_mask, t, text_mask, method="features"))
    features = lambda o, t=text: np.asarray(apply(o, t))  # noqa: E731
    base = features(obs)
    later = {"image": obs["image"].at[:, 3].set(7), "direction": obs["direction"]}
    changed = features(later)
    np.testing.assert_allclose(changed[:, :3], base[:, :3], atol=1e-6)  # earlier positions cannot see step 3
    assert np.abs(changed[:, 3] - base[:, 3]).max() > 1e-3
    padded = {"image": obs["image"].at[0, 0].set(9), "direction": obs["direction"]}  # row 0 step 0 is padding
    np.testing.assert_allclose(features(padded)[0, 1:], base[0, 1:], atol=1e-6)
    past_text = text.at[:, 3].set(5)  # a padded instruction position
    np.testing.assert_allclose(features(obs, t=past_text), base, atol=1e-6)


def test_windows_at_episode_starts_carry_their_own_instruction(grid_data):
    from understudy.train.instruct import make_batch, prepare

    setup = prepare(TINY, RunArgs(dataset=grid_data))
    ds = setup["dataset"]
    batch = jax.device_get(make_batch(setup["data"], setup["table"], jax.random.PRNGKey(3), 256, 4))
    assert batch["window_mask"].shape == (256, 4) and batch["obs"]["image"].shape == (256, 4, 7, 7, 3)
    assert (batch["window_mask"][:, -1] == 1).all()
    # windows that begin the episode (one real step) are padded in front with zeros
    first = np.flatnonzero(batch["window_mask"].sum(1) == 1)
    assert first.size > 0
    assert (batch["obs"]["image"][first, :3] == 0).all()
    # every window's instruction is the one of its episode: find the episode by the last step's observation
    encoder = setup["encoder"]
    for i in range(32):
        image = batch["obs"]["image"][i, -1]
        step = int(np.flatnonzero((ds.observations["image"] == image).all(axis=(1, 2, 3)))[0])
        episode = int(np.searchsorted(ds.episode_starts, step, side="right") - 1)
        ids, _ = encoder.encode([ds.instructions[episode]])
        np.testing.assert_array_equal(batch["instruction"][i], ids[0])


def test_learned_encoder_vocab_length_unknown_words_and_json_round_trip():
    enc = InstructionEncoder.build(SENTENCES, max_tokens=16)
    assert enc.max_tokens == 6  # longest sentence (5 words) + 1
    ids, mask = enc.encode(["go to the purple ball", ""])
    assert ids.shape == (2, 6) and ids[0, 3] == 1  # "purple" is unknown
    assert mask[0].tolist() == [1, 1, 1, 1, 1, 0] and mask[1, 0] == 1  # an empty sentence keeps one key
    again = InstructionEncoder.from_json(json.loads(json.dumps(enc.to_json())))
    np.testing.assert_array_equal(again.encode(SENTENCES)[0], enc.encode(SENTENCES)[0])
    distinct, encoded, _, rows = instruction_table(enc, [SENTENCES[2], SENTENCES[0], SENTENCES[2]])
    assert distinct == sorted({SENTENCES[0], SENTENCES[2]}) and rows.tolist() == [1, 0, 1]


def test_pretrained_encoder_states_are_cached_and_checked(tmp_path):
    from test_pretrained_text import make_tiny_bert

    bert = tmp_path / "bert"
    make_tiny_bert(bert)
    enc = InstructionEncoder.build(SENTENCES, text_encoder=str(bert), max_tokens=8, cache_dir=str(tmp_path / "c"))
    states, mask = enc.encode(SENTENCES)
    assert enc.vocab_size == 0 and states.ndim == 3 and states.shape[:2] == (3, 8) and mask.shape == (3, 8)
    assert list((tmp_path / "c").glob("*.safetensors"))  # token states cached on disk
    again = InstructionEncoder.from_json(enc.to_json(), cache_dir=str(tmp_path / "c"))
    np.testing.assert_allclose(again.encode(SENTENCES)[0], states)
    make_tiny_bert(bert, seed=1)  # different weights at the same path
    with pytest.raises(Exception, match="not the one this policy was trained with"):
        InstructionEncoder.from_json(enc.to_json())


def test_pretrained_encoder_puts_the_mean_pooled_sentence_first_and_old_policies_keep_cls(tmp_path):
    from test_pretrained_text import make_tiny_bert

    from understudy.language.pretrained import PretrainedTextEncoder

    bert, _, _ = make_tiny_bert(tmp_path / "bert")
    raw = PretrainedTextEncoder.load(bert, max_length=8)
    token_states, token_mask = raw.encode_tokens(SENTENCES)
    enc = InstructionEncoder.build(SENTENCES, text_encoder=bert, max_tokens=8)
    states, mask = enc.encode(SENTENCES)
    assert enc.to_json()["first_token"] == "mean"
    for i in range(len(SENTENCES)):
        real = token_mask[i]
        np.testing.assert_allclose(states[i, 0], token_states[i, real].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(states[i, 1:], token_states[i, 1:])  # the other positions untouched
    np.testing.assert_array_equal(mask, token_mask.astype(np.float32))
    # a policy.json written before the pooled vector existed (no first_token) reads [CLS] there, as it was trained
    old = {k: v for k, v in enc.to_json().items() if k != "first_token"}
    np.testing.assert_array_equal(InstructionEncoder.from_json(old).encode(SENTENCES)[0], token_states)
    with pytest.raises(Exception, match="first-token mode"):
        InstructionEncoder.from_json({**enc.to_json(), "first_token": "max"})


def test_training_learns_exports_and_reloads_identical_actions(grid_data, tmp_path):
    from understudy.instruct.policy import InstructPolicy
    from understudy.train.instruct import initial_state, make_update_many, prepare

    cfg = Config(d_model=32, num_layers=1, num_heads=2, head_hidden_dims=(32,), batch_size=32, warmup_steps=10,
                 learning_rate=3e-3)
    setup = prepare(cfg, RunArgs(dataset=grid_data))
    tx, state, key = initial_state(cfg, setup, 300, 0)
    update_many = make_update_many(setup["net"], tx, setup["data"], setup["table"], cfg, setup["mesh"])
    state, key, first = update_many(state, key, num_updates=100)
    for _ in range(2):
        state, key, last = update_many(state, key, num_updates=100)
    assert np.mean(last["loss"][-20:]) < 0.3 * np.mean(first["loss"][:20])  # memorizes the toy data

    policy = InstructPolicy(setup["net"], jax.device_get(state.params), setup["encoder"], setup["spec"], None,
                            setup["tasks"])
    policy.save(tmp_path / "p")
    loaded = InstructPolicy.load(tmp_path / "p")
    ds = setup["dataset"]
    obs = {k: np.stack([v[:4]] * 3) for k, v in ds.observations.items()}
    mask = np.ones((3, 4), np.float32)
    a = policy.act(obs, mask, SENTENCES)
    np.testing.assert_array_equal(loaded.act(obs, mask, SENTENCES), a)
    assert a.shape == (3,) and a.dtype.kind == "i"


def test_word_dropout_keeps_the_first_token_hides_the_others_at_its_rate_and_never_padding():
    from understudy.instruct.algo import drop_words

    mask = jnp.ones((4000, 6)).at[:, 4:].set(0.0)  # 4 real tokens, 2 padding
    dropped = np.asarray(drop_words(mask, jax.random.key(0), 0.3))
    assert dropped[:, 0].all() and not dropped[:, 4:].any()
    np.testing.assert_allclose(dropped[:, 1:4].mean(axis=0), 0.7, atol=0.03)
    np.testing.assert_array_equal(np.asarray(drop_words(mask, jax.random.key(0), 0.0)), np.asarray(mask))


def test_word_dropout_changes_the_training_loss_and_is_checked(grid_data, tmp_path, capsys):
    from understudy.cli import main
    from understudy.train.instruct import initial_state, make_update_many, prepare

    losses = {}
    for rate in (0.0, 0.5):
        cfg = Config(d_model=32, num_layers=1, num_heads=2, head_hidden_dims=(32,), batch_size=16, warmup_steps=2,
                     word_dropout=rate)
        setup = prepare(cfg, RunArgs(dataset=grid_data))
        tx, state, key = initial_state(cfg, setup, 10, 0)
        update_many = make_update_many(setup["net"], tx, setup["data"], setup["table"], cfg, setup["mesh"])
        losses[rate] = np.asarray(update_many(state, key, num_updates=3)[2]["loss"])
    assert np.isfinite(losses[0.5]).all()
    assert losses[0.5][0] != losses[0.0][0]  # same windows and parameters, fewer instruction tokens
    assert main(["train", "instruct", "--dataset", grid_data, "--word-dropout", "1", "--out",
                 str(tmp_path / "x")]) == 2
    assert "--word-dropout 1.0 must be a probability in [0, 1)" in capsys.readouterr().err
    assert main(["train", "instruct", "--dataset", grid_data, "--instruction-variants", "4", "--variant-word-rate",
                 "1.5", "--out", str(tmp_path / "y")]) == 2
    assert "--variant-word-rate 1.5 a probability in [0, 1]" in capsys.readouterr().err


def test_cli_trains_evaluates_per_task_and_writes_eval_json(grid_data, tmp_path, capsys):
    from understudy.cli import main

    out = tmp_path / "run"
    assert main(["train", "instruct", "--dataset", grid_data, "--steps", "20", "--eval-every", "10",
                 "--eval-episodes", "2", "--d-model", "32", "--num-layers", "1", "--batch-size", "8",
                 "--eval-envs", "2", "--out", str(out), "--no-progress", "--no-tensorboard"]) == 0
    summary = json.loads((out / "eval.json").read_text())
    final = summary["final"]["seeds"][0]
    assert summary["tasks"] == ["GoToLocal-v0"] and len(final["returns"]) == 2
    assert set(final["evaluations"]) == {"train"}  # BabyAI draws its missions: nothing is held out
    assert 0.0 <= final["success_rate"] <= 1.0
    for kind in ("best", "final"):
        assert (out / kind / "instruct_policy.safetensors").exists()
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "eval/success/GoToLocal-v0" in header and "train/loss" in header
    assert main(["train", "instruct", "--dataset", grid_data, "--seeds", "2", "--out", str(tmp_path / "x")]) == 2
    assert "one seed per run" in capsys.readouterr().err
    # `understudy eval` recognises the export and evaluates it on its task (episode seeds as in training's eval)
    result_file = tmp_path / "eval.json"
    assert main(["eval", str(out / "final"), "--episodes", "2", "--seed", "10000", "--json", str(result_file)]) == 0
    assert json.loads(result_file.read_text())["returns"] == final["returns"]
    assert main(["eval", str(out / "final"), "--instructions", "held-out"]) == 2
    assert "no held-out paraphrases" in capsys.readouterr().err


def test_state_observations_continuous_head_normalizer_and_reload(tmp_path):
    """The state path: normalized observations (statistics saved with the policy), a continuous head, actions
    mapped back to the env's bounds, identical actions after save/load."""
    from understudy.envs import make_spec
    from understudy.instruct.policy import InstructPolicy
    from understudy.train.instruct import initial_state, make_update_many, prepare

    spec = make_spec("Pendulum-v1")  # obs 3-d, actions in [-2, 2]
    rng = np.random.default_rng(0)
    episodes = [{"observations": 10 + 5 * rng.standard_normal((6, 3)).astype(np.float32),
                 "actions": np.full((5, 1), 1.5 if e % 2 else -1.5, np.float32), "rewards": np.zeros(5),
                 "terminations": [False] * 5, "truncations": [False] * 4 + [True],
                 "instruction": ["swing left", "swing right"][e % 2]} for e in range(8)]
    path = tmp_path / "state"
    save_dataset(Dataset.from_episodes(episodes, metadata={"env_id": spec.env_id, "spec": spec.to_dict()}), path)
    cfg = Config(d_model=32, num_layers=1, num_heads=2, head_hidden_dims=(32,), batch_size=16, warmup_steps=5,
                 learning_rate=3e-3)
    setup = prepare(cfg, RunArgs(dataset=str(path)))
    assert setup["net"].obs_kind == "state" and setup["net"].head == "mse"
    assert abs(setup["normalizer"]["mean"].mean() - 10) < 2  # fitted on the raw observations
    tx, state, key = initial_state(cfg, setup, 200, 0)
    update_many = make_update_many(setup["net"], tx, setup["data"], setup["table"], cfg, setup["mesh"])
    for _ in range(2):
        state, key, _ = update_many(state, key, num_updates=100)
    policy = InstructPolicy(setup["net"], jax.device_get(state.params), setup["encoder"], setup["spec"],
                            setup["normalizer"], setup["tasks"])
    policy.save(tmp_path / "p")
    loaded = InstructPolicy.load(tmp_path / "p")
    obs = np.stack([episodes[0]["observations"][:4]] * 2)
    actions = loaded.act(obs, np.ones((2, 4), np.float32), ["swing left", "swing right"])
    np.testing.assert_array_equal(actions, policy.act(obs, np.ones((2, 4), np.float32), ["swing left", "swing right"]))
    # the instruction alone decides the action here, in env units (±1.5 within Pendulum's ±2)
    assert actions[0, 0] < -1.0 and actions[1, 0] > 1.0


def test_pixel_encoder_reads_the_image_and_only_the_chosen_state_entries(tmp_path):
    """--image-state proprio: objects must come from the image, so the token ignores the object entries of
    Meta-World's state, and the chosen entries survive save/load of the net description."""
    from understudy.envs.metaworld import PROPRIO_AND_GOAL
    from understudy.instruct.model import build_net, net_description

    net = InstructNet(obs_kind="pixels", action_dim=4, head="mse", window=2, d_model=32, num_layers=1, num_heads=2,
                      vocab_size=10, max_instruction_tokens=4, head_hidden_dims=(16,), state_features=PROPRIO_AND_GOAL)
    rng = np.random.default_rng(0)
    obs = {"image": jnp.asarray(rng.integers(0, 256, (2, 2, 64, 64, 3)), jnp.uint8),
           "state": jnp.asarray(rng.standard_normal((2, 2, 39)), jnp.float32)}
    window_mask, text, text_mask = jnp.ones((2, 2)), jnp.array([[2, 3, 0, 0]] * 2), jnp.array([[1.0, 1, 0, 0]] * 2)
    params = net.init(jax.random.PRNGKey(0), obs, window_mask, text, text_mask)
    act = lambda o, n=net: np.asarray(n.apply(params, o, window_mask, text, text_mask, method="mode"))  # noqa: E731
    base = act(obs)
    assert base.shape == (2, 4)
    objects = [i for i in range(39) if i not in PROPRIO_AND_GOAL]
    np.testing.assert_array_equal(act({**obs, "state": obs["state"].at[..., jnp.asarray(objects)].add(5.0)}), base)
    assert np.abs(act({**obs, "state": obs["state"].at[..., 0].add(5.0)}) - base).max() > 1e-4  # the hand
    assert np.abs(act({**obs, "image": 255 - obs["image"]}) - base).max() > 1e-4
    rebuilt = build_net(json.loads(json.dumps(net_description(net))))
    assert rebuilt == net
    np.testing.assert_array_equal(act(obs, rebuilt), base)
