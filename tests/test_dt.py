"""Decision Transformer: returns-to-go numerically, the causal mask, the evaluation history, and the algorithm
contract through the sequence loop (2 vmapped seeds, a few updates, exports that reload and act identically,
damaged exports, `understudy eval`). One slow learning check on a Pendulum expert dataset.

Networks are tiny (embedding 16, 1 layer, K=4): compiling is most of these tests' time on CPU.
"""

import ast
import csv
import dataclasses
import inspect
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from understudy.algos import dt
from understudy.algos.dt_policy import DTPolicy, is_dt_policy
from understudy.checkpoint import TrainCheckpointer
from understudy.data import collect, load_dataset, save_dataset
from understudy.data.normalize import fit_normalizer
from understudy.eval.dt_rollouts import HistoryWindows
from understudy.policy import load_policy
from understudy.train import sequence
from understudy.train.common import RunArgs
from understudy.types import ArraySpec, EnvSpec, UnderstudyError

EXPERT = Path(__file__).resolve().parents[1] / "experts" / "Pendulum-v1"
TINY = dt.Config(context=4, embed_dim=16, num_layers=1, num_heads=1, batch_size=16, warmup_steps=2)
STEPS, SEEDS = 2, 2
SPEC = EnvSpec("Synthetic-v0", "gymnasium", ArraySpec((3,), "float32"),
               ArraySpec((2,), "float32", (-1.0, -1.0), (1.0, 1.0)), max_episode_steps=50)


# -- returns-to-go, timesteps, loss ------------------------------------------------------------------
def test_returns_to_go_sum_each_episodes_rewards_to_its_end():
    # Three episodes: [1, 2, 3], [4, 5] and [-1, 0.5, 2] (the last one cut off by the end of the data).
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0, -1.0, 0.5, 2.0])
    starts = np.array([0, 3, 5])
    np.testing.assert_allclose(dt.returns_to_go(rewards, starts), [6, 5, 3, 9, 5, 1.5, 2.5, 2.0])
    np.testing.assert_allclose(dt.returns_to_go(rewards, starts, scale=1000.0),
                               np.array([6, 5, 3, 9, 5, 1.5, 2.5, 2.0]) / 1000.0, rtol=1e-6)
    assert dt.returns_to_go(rewards, starts).dtype == np.float32
    np.testing.assert_allclose(dt.returns_to_go([2.0], [0]), [2.0])  # a one-step episode
    np.testing.assert_array_equal(dt.episode_timesteps(starts, 8), [0, 1, 2, 0, 1, 0, 1, 2])
    with pytest.raises(UnderstudyError, match="begin with 0"):
        dt.returns_to_go(rewards, np.array([1, 3]))
    with pytest.raises(UnderstudyError, match="return-scale"):
        dt.returns_to_go(rewards, starts, scale=0.0)


def test_masked_mse_averages_over_real_steps_only():
    predicted = jnp.array([[[1.0, 0.0], [0.5, 0.5]]])  # [B=1, K=2, A=2]
    target = jnp.array([[[9.0, 9.0], [0.0, 1.0]]])
    mask = jnp.array([[0.0, 1.0]])  # the first step is padding
    assert float(dt.masked_mse(predicted, target, mask)) == pytest.approx(0.25)
    assert float(dt.masked_mse(predicted, target, jnp.ones((1, 2)))) == pytest.approx((64 + 81 + 0.5) / 4)
    with pytest.raises(ValueError, match="shapes"):
        dt.masked_mse(predicted, target[:, :1], mask)


def _random_history(key, B=3, K=4, obs_dim=3, action_dim=2):
    k = jax.random.split(key, 4)
    return {"state": jax.random.normal(k[0], (B, K, obs_dim)), "action": jax.random.uniform(k[1], (B, K, action_dim)),
            "return_to_go": jax.random.normal(k[2], (B, K)),
            "timestep": jax.random.randint(k[3], (B, K), 0, 50), "mask": jnp.ones((B, K))}


def test_attention_is_causal_and_ignores_padding():
    net = dt.build_network(dt.network_description(TINY, 3, 2, 50))
    h = _random_history(jax.random.PRNGKey(0))
    params = jax.jit(net.init)(jax.random.PRNGKey(1), h["state"], h["action"], h["return_to_go"], h["timestep"],
                               h["mask"])
    variants = {"plain": h}
    j = 1  # change step 2's tokens and step 1's own action: predictions at steps 0 and 1 must not move
    variants["future"] = dict(h, state=h["state"].at[:, j + 1].add(3.0), action=h["action"].at[:, j:].add(0.7),
                              return_to_go=h["return_to_go"].at[:, j + 1].add(3.0))
    variants["target"] = dict(h, return_to_go=h["return_to_go"].at[:, -1].add(5.0))
    # Padding (mask 0) in the first two steps, holding zeros or anything else.
    variants["padded"] = dict(h, mask=h["mask"].at[:, :2].set(0.0))
    variants["noisy padding"] = dict(variants["padded"], state=h["state"].at[:, :2].set(100.0),
                                     action=h["action"].at[:, :2].set(-1.0),
                                     return_to_go=h["return_to_go"].at[:, :2].set(-50.0))
    # One compiled call for every variant (op by op, a transformer is slow to run on CPU).
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *variants.values())
    outputs = jax.jit(jax.vmap(lambda one: dt.apply_network(net, params, one)))(stacked)
    out = dict(zip(variants, np.asarray(outputs)))
    assert out["plain"].shape == (3, 4, 2) and np.all(np.abs(out["plain"]) <= 1.0)

    np.testing.assert_allclose(out["future"][:, : j + 1], out["plain"][:, : j + 1], atol=1e-6)
    assert not np.allclose(out["future"][:, j + 1], out["plain"][:, j + 1], atol=1e-4)  # the changed step moves
    assert not np.allclose(out["target"][:, -1], out["plain"][:, -1], atol=1e-4)  # the return conditions its step
    # Whatever the padding holds, the real steps' predictions are the same; and they differ from the unpadded
    # window's (the padded steps were real there, and are no longer seen).
    np.testing.assert_allclose(out["noisy padding"][:, 2:], out["padded"][:, 2:], atol=1e-6)
    assert not np.allclose(out["padded"][:, 2:], out["plain"][:, 2:], atol=1e-4)


def test_history_windows_shift_and_subtract_scaled_rewards():
    hist = HistoryWindows(num_envs=2, context=3, obs_shape=(1,), action_dim=1, target_return=100.0, return_scale=10.0)
    obs = np.array([[1.0], [2.0]], np.float32)
    hist.start(np.arange(2), obs)
    w = hist.windows()
    np.testing.assert_array_equal(w["mask"], [[0, 0, 1], [0, 0, 1]])
    np.testing.assert_allclose(w["return_to_go"][:, -1], [10.0, 10.0])
    hist.set_action(np.array([[0.5], [-0.5]]))
    hist.advance(np.array([0]), obs + 10, np.array([4.0, 99.0]))  # env 0 steps on; env 1 waits
    hist.set_action(np.array([[0.25], [-0.5]]))
    hist.advance(np.array([0]), obs + 20, np.array([-6.0, 99.0]))
    w = hist.windows()
    np.testing.assert_allclose(w["state"][0, :, 0], [1.0, 11.0, 21.0])
    np.testing.assert_allclose(w["return_to_go"][0], [10.0, 9.6, 10.2], rtol=1e-6)  # 100/10, -4/10, +6/10
    np.testing.assert_array_equal(w["timestep"][0], [0, 1, 2])
    np.testing.assert_allclose(w["action"][0, :, 0], [0.5, 0.25, 0.0])  # the newest action is a placeholder
    np.testing.assert_array_equal(w["mask"][1], [0, 0, 1])  # env 1 untouched
    hist.start(np.array([0]), obs)  # a new episode clears the window
    np.testing.assert_array_equal(hist.windows()["mask"][0], [0, 0, 1])
    assert hist.windows()["timestep"][0, -1] == 0


# -- config ------------------------------------------------------------------------------------------
def test_config_is_documented_and_its_flags_do_not_clash_with_the_run_flags():
    fields = [f.name for f in dataclasses.fields(dt.Config)]
    assert not set(fields) & {f.name for f in dataclasses.fields(RunArgs)}
    body = next(node for node in ast.parse(inspect.getsource(dt)).body
                if isinstance(node, ast.ClassDef) and node.name == "Config").body
    documented = {stmt.target.id for stmt, after in zip(body, body[1:])
                  if isinstance(stmt, ast.AnnAssign) and isinstance(after, ast.Expr)
                  and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)}
    assert documented == set(fields)
    paper = dt.Config()
    assert (paper.context, paper.embed_dim, paper.num_layers, paper.num_heads, paper.dropout) == (20, 128, 3, 1, 0.1)
    assert (paper.lr, paper.batch_size, paper.warmup_steps, paper.max_grad_norm) == (1e-4, 64, 10_000, 0.25)
    assert (paper.weight_decay, paper.return_scale) == (1e-4, 1000.0)
    assert dt.PRESETS["corl"].batch_size == 4096 and dt.PRESETS["corl"].lr == 8e-4


def test_bad_settings_and_discrete_actions_are_rejected():
    discrete = EnvSpec("SyntheticDiscrete-v0", "gymnasium", ArraySpec((3,), "float32"), ArraySpec((), "int64"),
                       num_actions=3)
    with pytest.raises(UnderstudyError, match="continuous actions"):
        dt.init(TINY, discrete, jax.random.PRNGKey(0))
    for bad, flag in ((dict(context=0), "--context"), (dict(embed_dim=10, num_heads=4), "--num-heads"),
                      (dict(dropout=1.0), "--dropout"), (dict(return_scale=-1.0), "--return-scale")):
        with pytest.raises(UnderstudyError, match=flag):
            dt.init(dataclasses.replace(TINY, **bad), SPEC, jax.random.PRNGKey(0))


# -- the contract, through the sequence loop ---------------------------------------------------------
@pytest.fixture(scope="module")
def pendulum_dataset(tmp_path_factory):
    """Three episodes (600 steps) of the shipped Pendulum expert, saved as a dataset directory."""
    ds = collect("Pendulum-v1", load_policy(EXPERT), episodes=3, num_envs=3, seed=0, progress=False,
                 policy_name="expert")
    return save_dataset(ds, tmp_path_factory.mktemp("data") / "pendulum-expert")


@pytest.fixture(scope="module")
def trained(pendulum_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dt"
    run = RunArgs(dataset=str(pendulum_dataset), steps=STEPS, eval_every=STEPS, eval_episodes=1, seeds=SEEDS,
                  out=str(out), progress=False, tensorboard=False)
    summary = sequence.train("dt", dt, TINY, run, method="dt")
    return out, summary, run


def test_resolve_config_takes_the_reference_return_or_the_best_episode(pendulum_dataset):
    ds = load_dataset(pendulum_dataset)
    spec = dataclasses.replace(SPEC, max_episode_steps=150)
    resolved = dt.resolve_config(TINY, ds, spec)
    assert resolved.target_return == pytest.approx(float(np.max(ds.episode_returns())))
    assert resolved.max_timestep == 200  # the dataset's episodes are longer than this spec's limit
    ds.metadata["ref_max_score"] = -123.0
    assert dt.resolve_config(TINY, ds, spec).target_return == -123.0
    assert dt.resolve_config(dataclasses.replace(TINY, target_return=-5.0), ds, spec).target_return == -5.0


def test_sequence_loop_trains_two_seeds_and_exports_act_as_the_trained_state(trained, pendulum_dataset):
    out, summary, _ = trained
    assert [s["seed"] for s in summary["final"]["seeds"]] == [0, 1]
    assert all(np.isfinite(s["mean"]) and -2000 < s["mean"] <= 0 for s in summary["final"]["seeds"])
    ds = load_dataset(pendulum_dataset)
    assert summary["target_return"] == pytest.approx(float(np.max(ds.episode_returns())))
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["max_timestep"] == 200 and config["config"]["target_return"] == summary["target_return"]

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [STEPS]
    assert {"train/loss", "train/grad_norm", "train/lr"} <= set(rows[0])
    assert all(np.isfinite(float(v)) for k, v in rows[0].items() if k.startswith("train/"))
    # warmup 2: updates 0 and 1 use lr/2 and lr, whose mean is logged
    assert float(rows[0]["train/lr"]) == pytest.approx(0.75 * TINY.lr)

    # The checkpointed state: both seeds took STEPS updates and moved away from their init and each other.
    cfg = dt.Config(**{**dataclasses.asdict(TINY), "target_return": config["config"]["target_return"],
                       "max_timestep": 200})
    spec = DTPolicy.load(out / "final" / "seed0").spec
    initial = jax.vmap(lambda s: dt.init(cfg, spec, jax.random.PRNGKey(s)))(jnp.arange(SEEDS))
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 1))(jnp.arange(SEEDS))
    checkpointer = TrainCheckpointer(out / "checkpoints")
    step, tree, _ = checkpointer.restore_latest({"state": initial, "keys": keys})
    checkpointer.close()
    state = tree["state"]
    assert step == STEPS and np.asarray(state.step).tolist() == [STEPS] * SEEDS
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(initial.params), strict=True):
        assert np.shape(a) == np.shape(b) and np.shape(a)[:1] == (SEEDS,)
    for s in range(SEEDS):
        assert any(not np.allclose(a[s], b[s]) for a, b in zip(jax.tree.leaves(state.params),
                                                               jax.tree.leaves(initial.params)))
    assert any(not np.allclose(a[0], a[1]) for a in jax.tree.leaves(state.params))

    # One history of raw observations: the trained state (normalized by the dataset's statistics) and the
    # reloaded final/ exports give the same actions.
    normalizer = fit_normalizer(ds.observations)
    history = _random_history(jax.random.PRNGKey(5), B=5, K=TINY.context, action_dim=1)
    history["mask"] = history["mask"].at[:2, :2].set(0.0)  # two windows start mid-way (padding in front)
    normalized = dict(history, state=jnp.where(history["mask"][..., None] > 0,
                                               (history["state"] - normalizer["mean"]) / normalizer["std"], 0.0))
    act = jax.vmap(lambda st: dt.act(cfg, st, normalized, jax.random.PRNGKey(0), True))
    trained_actions = np.asarray(act(state))
    assert trained_actions.shape == (SEEDS, 5, 1) and np.all(np.abs(trained_actions) <= 1.0)
    for s in range(SEEDS):
        policy = DTPolicy.load(out / "final" / f"seed{s}")
        np.testing.assert_allclose(policy.act(history), trained_actions[s], rtol=1e-6, atol=1e-6)
        assert policy.metadata["step"] == STEPS and policy.metadata["algo"] == "dt"
        assert policy.target_return == summary["target_return"] and policy.return_scale == TINY.return_scale
        assert is_dt_policy(out / "best" / f"seed{s}")
    assert not np.allclose(trained_actions[0], trained_actions[1])


def test_cli_eval_runs_a_dt_export(trained, tmp_path):
    from understudy.cli import main

    out, summary, _ = trained
    result_file = tmp_path / "eval.json"
    assert main(["eval", str(out / "final" / "seed0"), "--env", "Pendulum-v1", "--episodes", "1", "--seed",
                 "10000", "--json", str(result_file)]) == 0
    result = json.loads(result_file.read_text())
    assert len(result["returns"]) == 1 and result["lengths"] == [200]
    # Same episode seed as the loop's final evaluation: the same return.
    assert result["mean"] == pytest.approx(summary["final"]["seeds"][0]["mean"], rel=1e-4)


def test_damaged_or_mismatched_exports_raise_clear_errors(trained, tmp_path):
    import shutil

    out = trained[0]
    with pytest.raises(UnderstudyError, match="one export per seed"):
        DTPolicy.load(out / "final")
    with pytest.raises(UnderstudyError, match="does not exist"):
        DTPolicy.load(tmp_path / "missing")
    with pytest.raises(UnderstudyError, match="Decision Transformer policy.*DTPolicy.load"):
        load_policy(out / "final" / "seed0")  # a DT export is not a per-observation policy

    truncated = tmp_path / "truncated"
    shutil.copytree(out / "final" / "seed0", truncated)
    weights = truncated / "dt_policy.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UnderstudyError, match="truncated or corrupt"):
        DTPolicy.load(truncated)

    mismatched = tmp_path / "mismatched"
    shutil.copytree(out / "final" / "seed0", mismatched)
    description = json.loads((mismatched / "dt_policy.json").read_text())
    description["network"]["embed_dim"] = 32
    (mismatched / "dt_policy.json").write_text(json.dumps(description))
    with pytest.raises(UnderstudyError, match="do not match"):
        DTPolicy.load(mismatched)

    description["network"] = {"embed_dim": 16}  # fields missing
    (mismatched / "dt_policy.json").write_text(json.dumps(description))
    with pytest.raises(UnderstudyError, match="does not describe"):
        DTPolicy.load(mismatched)
    (mismatched / "dt_policy.json").write_text("{not json")
    with pytest.raises(UnderstudyError, match="not valid JSON"):
        DTPolicy.load(mismatched)


def test_resume_restores_the_checkpoint_and_refuses_other_settings(trained):
    out, summary, run = trained
    # Resuming a finished run restores its last checkpoint (a DT state) and trains no further. (Continuing a run
    # for more steps is the offline loop's code, tested there; here it would cost one more compilation.)
    again = sequence.train("dt", dt, TINY, dataclasses.replace(run, resume=True), method="dt")
    assert again["step"] == STEPS and again["final"] == json.loads(json.dumps(summary["final"]))
    with pytest.raises(UnderstudyError, match="differs"):
        sequence.train("dt", dt, dataclasses.replace(TINY, context=5), dataclasses.replace(run, resume=True),
                       method="dt")


# -- learning ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dt_learns_pendulum_from_expert_data(tmp_path):
    """100 expert episodes (20k steps): about -140 after 3000 updates (the expert: about -150; random: about -1200).

    With 20 episodes the same settings reach only about -490: (return-to-go, timestep) then nearly names the
    episode, and the transformer recalls episodes rather than reading the state.
    """
    ds = collect("Pendulum-v1", load_policy(EXPERT), episodes=100, num_envs=10, seed=1, progress=False,
                 policy_name="expert")
    path = save_dataset(ds, tmp_path / "pendulum-expert-100")
    cfg = dt.Config(context=10, embed_dim=64, num_layers=2, batch_size=64, lr=3e-4, warmup_steps=200)
    summary = sequence.train("dt", dt, cfg, RunArgs(dataset=str(path), steps=3000, eval_every=3000, eval_episodes=10,
                                                    out=str(tmp_path / "run"), progress=False, tensorboard=False))
    mean = summary["final"]["seeds"][0]["mean"]
    print(f"DT on 100 Pendulum expert episodes, 3000 updates: {mean:.1f} over 10 episodes")
    assert mean >= -400.0
