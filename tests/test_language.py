"""Language rewards: captioner, losses, tokenizer, corpus, reward model save/load, the env reward wrapper, CLI."""

import hashlib
import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from understudy.language.captions import MountainCarCaptioner
from understudy.language.reward_model import RewardModel, category_loss, pairwise_loss
from understudy.language.tokenizer import WordTokenizer
from understudy.types import UnderstudyError

FLOOR = -math.pi / 6
TOP = "The car is able to reach the top of the mountain"


# -- captioner ---------------------------------------------------------------------------------------------------
def test_captioner_labels_hand_made_trajectories():
    cap = MountainCarCaptioner()
    still = np.stack([np.full(50, -0.5), np.zeros(50)], 1)
    assert cap.label(still) == 0  # bottom
    swing = np.linspace(-0.5, -0.1, 30)  # leaves the +-0.2 band around the floor, never reaches 0.5
    assert cap.label(swing) == 1
    assert cap.label(np.linspace(-0.5, -1.0, 30)) == 1  # swinging up the left side counts too
    top = np.concatenate([swing, np.linspace(-0.1, 0.52, 20)])
    assert cap.label(top) == 2
    # prefixes: bottom until the band is left, swing until the goal, then top
    labels = cap.prefix_labels(top)
    first_out = int(np.argmax(np.abs(top - FLOOR) > 0.2))
    first_goal = int(np.argmax(top >= 0.5))
    assert (labels[:first_out] == 0).all() and (labels[first_out:first_goal] == 1).all()
    assert (labels[first_goal:] == 2).all()
    # exactly at the band's edge is still the bottom
    assert cap.label(np.array([FLOOR, FLOOR + 0.2 - 1e-9])) == 0


def test_captioner_rejects_bad_shapes():
    cap = MountainCarCaptioner()
    with pytest.raises(UnderstudyError, match="2 columns"):
        cap.label(np.zeros((5, 3)))
    with pytest.raises(UnderstudyError, match="empty"):
        cap.label(np.zeros((0,)))


def test_held_out_sentences_are_new_paraphrases():
    cap = MountainCarCaptioner()
    train = {s for v in cap.sentences.values() for s in v}
    held = {s for v in cap.held_out.values() for s in v}
    assert not train & held and all(len(v) >= 3 for v in cap.held_out.values())
    assert TOP in cap.sentences["top"]
    tok = WordTokenizer.build(sorted(train))
    unknown = [w for s in held for w in tok.unknown_words(s)]
    assert 0 < len(unknown) <= 6  # mostly known words in new sentences, a few words never seen


# -- losses ---------------------------------------------------------------------------------------------------------
def test_pairwise_loss_numbers():
    pos, neg = jnp.array([1.0, 0.0, -2.0]), jnp.array([0.0, 0.0, 1.0])
    expected = np.mean([math.log1p(math.exp(-1.0)), math.log(2.0), math.log1p(math.exp(3.0))])
    assert float(pairwise_loss(pos, neg)) == pytest.approx(expected, rel=1e-6)
    # weights select pairs
    w = jnp.array([1.0, 0.0, 1.0])
    expected_w = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(3.0))) / 2
    assert float(pairwise_loss(pos, neg, w)) == pytest.approx(expected_w, rel=1e-6)
    # a large margin in the right direction costs ~0, in the wrong direction ~margin
    assert float(pairwise_loss(jnp.array([30.0]), jnp.array([0.0]))) < 1e-6
    assert float(pairwise_loss(jnp.array([0.0]), jnp.array([30.0]))) == pytest.approx(30.0, rel=1e-4)
    with pytest.raises(ValueError):
        pairwise_loss(jnp.zeros(3), jnp.zeros(4))


def test_category_loss_numbers():
    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    labels = jnp.array([0, 2])
    l0 = -(2.0 - math.log(math.exp(2.0) + 2.0))
    l1 = math.log(3.0)
    assert float(category_loss(logits, labels)) == pytest.approx((l0 + l1) / 2, rel=1e-6)


# -- tokenizer --------------------------------------------------------------------------------------------------
def test_word_tokenizer_roundtrip_and_unknowns():
    tok = WordTokenizer.build(["The car reaches the top", "the car stays"])
    ids, mask = tok.encode(["the car flies", "top"])
    assert ids.shape == mask.shape == (2, tok.max_length)
    assert ids[0, 2] == 1 and mask[0, :3].all() and not mask[0, 3:].any()  # "flies" is unknown
    assert tok.unknown_words("the car flies") == ["flies"]
    again = WordTokenizer.from_json(json.loads(json.dumps(tok.to_json())))
    assert (again.encode(["the car flies"])[0] == ids[:1]).all()
    with pytest.raises(UnderstudyError, match="malformed"):
        WordTokenizer.from_json({"vocab": ["[PAD]", "[UNK]"]})


# -- corpus and reward model ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from understudy.data import save_dataset
    from understudy.language.corpus import mountaincar_corpus

    ds = mountaincar_corpus(36, seed=3)
    path = tmp_path_factory.mktemp("corpus") / "mc"
    save_dataset(ds, path)
    return ds, str(path)


def test_corpus_is_captioned_consistently(corpus):
    ds, path = corpus
    cap = MountainCarCaptioner()
    labels = ds.task_id[ds.episode_starts]
    assert set(labels) == {0, 1, 2}, "36 episodes of the behaviour mix cover every category"
    for i in range(ds.num_episodes):
        ep = ds.episode(i)
        assert cap.label(ep["observations"]) == labels[i]
        assert ep["instruction"] in cap.sentences[cap.categories[labels[i]]]
        assert ep["terminations"].any() == (labels[i] == 2)  # the env terminates exactly at the goal
    from understudy.data import load_dataset

    loaded = load_dataset(path)
    assert loaded.metadata["categories"] == ["bottom", "swing", "top"]
    assert loaded.metadata["held_out_sentences"] == cap.held_out
    assert loaded.instructions == ds.instructions


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """The reward model every test below shares, trained through `understudy language train-reward` (compiling
    a reward model's training takes most of a test's time, so it is trained once)."""
    out = tmp_path_factory.mktemp("rm") / "run"
    assert _cli("language", "train-reward", "--corpus", corpus[1], "--out", out, "--steps", 40, "--batch-size", 16,
                "--embed-dim", 16, "--num-heads", 2, "--updates-per-call", 20, "--no-progress") == 0
    return out, json.loads((out / "eval.json").read_text())


def test_reward_training_writes_model_metrics_and_eval(trained):
    out, report = trained
    assert (out / "model" / "reward_model.json").exists() and (out / "metrics.csv").exists()
    saved = json.loads((out / "eval.json").read_text())
    for key in ("held_out", "train_sentences"):
        assert 0.0 <= saved[key]["pairwise_accuracy"] <= 1.0 and saved[key]["triples"] > 0
    assert saved["held_out"]["sentences"] == 9
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 3  # 40 updates logged every 20
    assert all(np.isfinite(float(x)) for x in rows[-1].split(",")[1:])


def test_reward_model_save_load_gives_identical_scores(trained, corpus, tmp_path):
    out, _ = trained
    model = RewardModel.load(out)  # a run directory resolves to its model/
    ep = corpus[0].episode(0)
    sentences = [TOP, "The car stays at the bottom of the valley", "an unseen sentence"]
    a = model.score(ep["observations"], ep["actions"], sentences)
    model.save(tmp_path / "copy")
    b = RewardModel.load(tmp_path / "copy").score(ep["observations"], ep["actions"], sentences)
    assert a.shape == (3,) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    # a prefix is scored as its own trajectory
    prefix = model.score(ep["observations"][:11], ep["actions"][:10], sentences)
    assert not np.allclose(prefix, a)


def test_damaged_reward_model_gives_clear_errors_and_stays_untouched(trained, tmp_path):
    import shutil

    src = trained[0] / "model"
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    weights = bad / "reward_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    with pytest.raises(UnderstudyError, match="truncated or corrupt"):
        RewardModel.load(bad)
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before
    with pytest.raises(UnderstudyError, match="not a reward model"):
        RewardModel.load(tmp_path)
    shutil.copy(src / "reward_model.safetensors", weights)
    desc = json.loads((bad / "reward_model.json").read_text())
    desc["network"]["embed_dim"] = 32
    (bad / "reward_model.json").write_text(json.dumps(desc))
    with pytest.raises(UnderstudyError, match="do not match its description"):
        RewardModel.load(bad)


def test_not_a_corpus_is_rejected(tmp_path):
    from understudy.data import collect, save_dataset
    from understudy.language.train_reward import RewardTrainConfig, train_reward_model

    save_dataset(collect("MountainCar-v0", "random", episodes=2, seed=0), tmp_path / "plain")
    with pytest.raises(UnderstudyError, match="not a captioned corpus"):
        train_reward_model(RewardTrainConfig(corpus=str(tmp_path / "plain"), out=str(tmp_path / "o"), steps=2,
                                             progress=False))


# -- RL from a sentence --------------------------------------------------------------------------------------------
def test_language_reward_replaces_env_reward_and_telescopes(trained):
    from understudy.envs import make
    from understudy.language.env_reward import LanguageReward, LanguageRewardConfig

    path = str(trained[0])
    cfg = LanguageRewardConfig(text=TOP, model=path, scale=2.0, mode="difference")
    env = LanguageReward(make("MountainCar-v0", seed=0), cfg)
    obs, _ = env.reset(seed=1)
    start = env._score
    states, actions, total = [obs], [], 0.0
    for t in range(30):
        obs, r, term, trunc, info = env.step(t % 3)
        states.append(obs), actions.append(t % 3)
        total += r
        assert info["env_reward"] == -1.0 and r != -1.0
    # the rewards sum to scale * (score of the whole trajectory - score of the first state)
    model = RewardModel.load(path)
    end = model.score(np.array(states), np.array(actions), TOP)[0]
    assert total == pytest.approx(2.0 * (end - start), rel=1e-4, abs=1e-4)
    assert info["language_score"] == pytest.approx(end, rel=1e-5, abs=1e-5)

    scored = LanguageReward(make("MountainCar-v0", seed=0), LanguageRewardConfig(text=TOP, model=path, scale=0.5))
    scored.reset(seed=1)
    for _ in range(5):
        _, r, _, _, info = scored.step(0)
        assert r == pytest.approx(0.5 * info["language_score"], rel=1e-6)  # the default mode pays the score itself

    clipped = LanguageReward(make("MountainCar-v0", seed=0),
                             LanguageRewardConfig(text=TOP, model=path, scale=1000.0, reward_min=-0.5,
                                                  reward_max=0.25, mode="score"))
    clipped.reset(seed=1)
    rewards = [clipped.step(2)[1] for _ in range(20)]
    assert all(-0.5 <= r <= 0.25 for r in rewards) and {-0.5, 0.25} & set(rewards)


def test_language_reward_checks_env_and_flags(trained, tmp_path):
    from understudy.envs import make
    from understudy.language.env_reward import LanguageReward, LanguageRewardConfig
    from understudy.train.common import RunArgs, make_train_env

    with pytest.raises(UnderstudyError, match="does not fit this environment"):
        LanguageReward(make("Pendulum-v1"), LanguageRewardConfig(text=TOP, model=str(trained[0])))
    with pytest.raises(UnderstudyError, match="needs both"):
        make_train_env(RunArgs(env="MountainCar-v0", reward_text=TOP), 0)
    with pytest.raises(UnderstudyError, match="above"):
        LanguageRewardConfig(text=TOP, model="x", reward_min=1.0, reward_max=0.0)


def test_mountaincar_reports_goal_success():
    from understudy.envs import make

    env = make("MountainCar-v0", seed=0)
    env.reset(seed=0)
    assert env.step(1)[4]["success"] is False


def test_episode_videos_every_n(tmp_path):
    from understudy.envs import make
    from understudy.envs.video import EpisodeVideos

    env = EpisodeVideos(make("MountainCar-v0", seed=0, render_mode="rgb_array", max_episode_steps=5),
                        tmp_path / "videos", every=2)
    for _ in range(3):
        env.reset()
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(1)
            done = term or trunc
    env.close()
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["episode_000001.mp4", "episode_000003.mp4"]
    assert all(p.stat().st_size > 0 for p in env.written)


# -- command line ------------------------------------------------------------------------------------------------
def _cli(*args):
    from understudy.cli import main

    return main([str(a) for a in args])


def test_cli_corpus_train_eval_and_rl_from_a_sentence(trained, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    assert _cli("language", "corpus", "mountaincar", "--episodes", 12, "--out", corpus, "--no-progress") == 0
    assert _cli("language", "corpus", "mountaincar", "--episodes", 12, "--out", corpus) == 2  # never overwritten
    assert "already exists" in capsys.readouterr().err
    rm = trained[0]  # written by `understudy language train-reward` (the fixture)
    assert _cli("language", "train-reward", "--corpus", corpus, "--out", rm, "--steps", 10, "--no-progress") == 2
    assert "--overwrite" in capsys.readouterr().err  # a trained model is never replaced by accident
    assert _cli("language", "eval-reward", rm, "--corpus", corpus, "--json", tmp_path / "e.json") == 0
    assert json.loads((tmp_path / "e.json").read_text())["episodes"] == 12
    run = tmp_path / "dqn"
    assert _cli("train", "dqn", "--preset", "mountaincar", "--env", "MountainCar-v0", "--steps", 400,
                "--eval-every", 200, "--eval-episodes", 2, "--reward-text", TOP, "--reward-model", rm,
                "--reward-min", -5, "--reward-max", 5, "--video-every", 1, "--out", run, "--no-progress") == 0
    summary = json.loads((run / "eval.json").read_text())
    assert "sentence: " + TOP in summary["method"]
    seed = summary["final"]["seeds"][0]
    assert seed["success_rate"] is not None and len(seed["returns"]) == 2
    assert all(-200 <= r <= -1 for r in seed["returns"])  # evaluation reports the environment's own return
    assert (run / "videos" / "episode_000001.mp4").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["reward_text"] == TOP


def test_pretrained_text_encoder_path(corpus, tmp_path):
    """The reward model over a frozen pretrained encoder (a tiny random BERT made here): trains, caches the
    encoder's token states, saves, and loads back to identical scores; other encoder files are refused."""
    pytest.importorskip("tokenizers")
    from test_pretrained_text import make_tiny_bert

    from understudy.language.train_reward import RewardTrainConfig, train_reward_model

    bert, config, _ = make_tiny_bert(tmp_path / "bert")
    out = tmp_path / "rm"
    train_reward_model(RewardTrainConfig(corpus=corpus[1], out=str(out), steps=4, batch_size=8, embed_dim=16,
                                         num_heads=2, updates_per_call=4, text_encoder=bert, progress=False))
    desc = json.loads((out / "model" / "reward_model.json").read_text())
    assert desc["text_encoder"]["kind"] == "pretrained" and desc["text_encoder"]["hidden_size"] == config["hidden_size"]
    assert any((out / "text_cache").iterdir())
    model = RewardModel.load(out)
    assert "word_embedding" not in model.params and "text_projection" in model.params
    ep = corpus[0].episode(1)
    a = model.score(ep["observations"], ep["actions"], [TOP, "walk forward"])
    np.testing.assert_array_equal(a, RewardModel.load(out).score(ep["observations"], ep["actions"],
                                                                 [TOP, "walk forward"]))
    make_tiny_bert(tmp_path / "bert", seed=1)  # different weights in the same place
    with pytest.raises(UnderstudyError, match="not the one this reward model was trained with"):
        RewardModel.load(out).score(ep["observations"], ep["actions"], ["walk forward slowly"])


def test_continuous_variant_with_sac(tmp_path):
    """MountainCarContinuous: a corpus with force actions, a reward model over them, SAC on its score."""
    corpus, rm, run = tmp_path / "corpus", tmp_path / "rm", tmp_path / "sac"
    assert _cli("language", "corpus", "mountaincar-continuous", "--episodes", 6, "--out", corpus, "--no-progress") == 0
    # the shared model's width and heads: its layers' initializations are already compiled (when run with it)
    assert _cli("language", "train-reward", "--corpus", corpus, "--out", rm, "--steps", 2, "--batch-size", 4,
                "--embed-dim", 16, "--num-heads", 2, "--chunk", 50, "--updates-per-call", 2, "--no-progress") == 0
    desc = json.loads((rm / "model" / "reward_model.json").read_text())
    assert desc["trajectory"]["num_actions"] == 0 and desc["trajectory"]["action_dim"] == 1
    assert desc["trajectory"]["max_steps"] == 1000
    assert _cli("train", "sac", "--env", "MountainCarContinuous-v0", "--steps", 200, "--eval-every", 200,
                "--eval-episodes", 1, "--reward-text", TOP, "--reward-model", rm, "--out", run, "--no-progress") == 0
    assert json.loads((run / "eval.json").read_text())["final"]["seeds"][0]["success_rate"] is not None
