"""BC's held-out validation loss and early stopping (the offline loop's EarlyStopping)."""

import csv
import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from understudy.algos import bc, dagger
from understudy.data import collect, save_dataset
from understudy.policy import load_policy
from understudy.train import interactive, offline
from understudy.train.common import RunArgs
from understudy.types import UnderstudyError

EXPERT = Path(__file__).resolve().parents[1] / "experts" / "Pendulum-v1"
SMALL = bc.Config(hidden_dims=(16,), batch_size=32, validation_fraction=0.25)
FROZEN = dataclasses.replace(SMALL, lr=0.0)  # the validation loss never improves after the first evaluation


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four expert episodes of 200 steps: the 0.25 validation split holds exactly one."""
    ds = collect("Pendulum-v1", load_policy(EXPERT), episodes=4, num_envs=4, seed=0, progress=False,
                 policy_name="expert")
    return save_dataset(ds, tmp_path_factory.mktemp("data") / "pendulum-expert")


def _run(dataset, out, cfg, steps, resume=False):
    return offline.train("bc", bc, cfg, RunArgs(dataset=str(dataset), steps=steps, eval_every=10, eval_episodes=1,
                                                seeds=2, out=str(out), progress=False, tensorboard=False,
                                                resume=resume))


def _rows(out):
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_early_stopping_keeps_each_seeds_best_state_and_stops_when_every_seed_is_stale():
    state = {"w": jnp.zeros((2, 3)), "step": jnp.zeros((2,), jnp.int32)}
    stopper = offline.EarlyStopping(2, state)
    assert not stopper.observe(10, np.array([1.0, 1.0]), {"w": jnp.full((2, 3), 1.0), "step": jnp.full((2,), 10)})
    # Seed 0 improves at step 20, seed 1 does not: only seed 0's best state moves.
    assert not stopper.observe(20, np.array([0.5, 2.0]), {"w": jnp.full((2, 3), 2.0), "step": jnp.full((2,), 20)})
    np.testing.assert_array_equal(np.asarray(stopper.best_state["w"]), [[2.0] * 3, [1.0] * 3])
    np.testing.assert_array_equal(np.asarray(stopper.best_state["step"]), [20, 10])
    assert stopper.stale.tolist() == [0, 1] and stopper.best_step.tolist() == [20, 10]
    # Seed 1 improves at step 30; then neither improves, and the run stops once both have waited 2 evaluations.
    assert not stopper.observe(30, np.array([0.6, 0.9]), {"w": jnp.full((2, 3), 3.0), "step": jnp.full((2,), 30)})
    np.testing.assert_array_equal(np.asarray(stopper.best_state["w"]), [[2.0] * 3, [3.0] * 3])
    assert not stopper.observe(40, np.array([0.7, 1.6]), {"w": jnp.full((2, 3), 4.0), "step": jnp.full((2,), 40)})
    assert stopper.stale.tolist() == [2, 1]
    assert stopper.observe(50, np.array([0.8, 1.7]), {"w": jnp.full((2, 3), 5.0), "step": jnp.full((2,), 50)})
    np.testing.assert_array_equal(np.asarray(stopper.best_state["w"]), [[2.0] * 3, [3.0] * 3])
    assert stopper.meta() == {"patience": 2, "best_validation_loss": [0.5, 0.9], "best_validation_step": [20, 30],
                              "evaluations_since_best": [3, 2]}


def test_a_seed_out_of_patience_keeps_its_best_state_while_the_others_train_on():
    """A seed that has stopped ends as a 1-seed run would: a later dip in its loss does not replace its best."""
    state = lambda v: {"w": jnp.full((2, 1), v)}  # noqa: E731
    stopper = offline.EarlyStopping(1, state(0.0))
    assert not stopper.observe(10, np.array([1.0, 1.0]), state(1.0))
    assert not stopper.observe(20, np.array([2.0, 0.5]), state(2.0))  # seed 0 runs out of patience here
    assert stopper.stopped().tolist() == [True, False]
    assert not stopper.observe(30, np.array([0.1, 0.4]), state(3.0))  # seed 0 dips, seed 1 improves
    np.testing.assert_array_equal(np.asarray(stopper.best_state["w"])[:, 0], [1.0, 3.0])
    assert stopper.best_loss.tolist() == [1.0, 0.4] and stopper.best_step.tolist() == [10, 30]
    assert stopper.observe(40, np.array([0.1, 0.9]), state(4.0))


def test_validation_loss_is_logged_and_early_stopping_ends_the_run(dataset, tmp_path):
    out = tmp_path / "frozen"
    summary = _run(dataset, out, dataclasses.replace(FROZEN, early_stopping_patience=1), steps=100)
    rows = _rows(out)
    assert [int(r["step"]) for r in rows] == [10, 20]  # stopped at the second evaluation, not at 100
    assert rows[0]["val/loss"] == rows[1]["val/loss"] and np.isfinite(float(rows[0]["val/loss"]))
    assert summary["step"] == 20
    saved = json.loads((out / "eval.json").read_text())["early_stopping"]
    assert saved["stopped_early"] is True and saved["best_validation_step"] == [10, 10]
    config = json.loads((out / "config.json").read_text())
    assert config["validation_steps"] == 200 and config["dataset_steps"] == 600
    for s in range(2):
        assert load_policy(out / "final" / f"seed{s}").metadata["step"] == 20


def test_validation_loss_falls_while_training_and_final_is_the_lowest_validation_state(dataset, tmp_path):
    out = tmp_path / "learning"
    summary = _run(dataset, out, dataclasses.replace(SMALL, early_stopping_patience=5), steps=30)
    losses = [float(r["val/loss"]) for r in _rows(out)]
    assert losses[-1] < losses[0]
    assert summary["early_stopping"]["stopped_early"] is False
    assert summary["early_stopping"]["best_validation_step"] == [30, 30]


def test_resume_continues_counting_evaluations_since_the_best(dataset, tmp_path):
    out = tmp_path / "resumed"
    cfg = dataclasses.replace(FROZEN, early_stopping_patience=2)
    assert _run(dataset, out, cfg, steps=20)["early_stopping"]["evaluations_since_best"] == [1, 1]
    # Without the restored count the run would start over (best = inf) and go on to step 40.
    summary = _run(dataset, out, cfg, steps=40, resume=True)
    assert summary["step"] == 30 and summary["early_stopping"]["stopped_early"] is True
    assert [int(r["step"]) for r in _rows(out)] == [10, 20, 30]


def test_bad_validation_settings_are_refused(dataset, tmp_path):
    with pytest.raises(UnderstudyError, match="--validation-fraction"):
        _run(dataset, tmp_path / "a", dataclasses.replace(SMALL, validation_fraction=0.0, early_stopping_patience=2),
             steps=10)
    with pytest.raises(UnderstudyError, match="holds none out"):
        interactive.train("dagger", dagger, dagger.Config(expert=str(EXPERT), validation_fraction=0.1),
                          RunArgs(env="Pendulum-v1", steps=10, out=str(tmp_path / "b"), progress=False))


def test_ema_parameters_follow_the_moving_average_and_are_what_the_policy_acts_with():
    import jax

    from understudy.types import ArraySpec, Batch, EnvSpec

    spec = EnvSpec(env_id="x", family="gymnasium", observation=ArraySpec(shape=(3,), dtype="float32"),
                   action=ArraySpec(shape=(2,), dtype="float32", low=(-1.0, -1.0), high=(1.0, 1.0)))
    cfg = bc.Config(hidden_dims=(8,), batch_size=4, ema_decay=0.9)
    state = bc.init(cfg, spec, jax.random.PRNGKey(0))
    batch = Batch(observations=jnp.ones((4, 3)), actions=jnp.full((4, 2), 0.5), rewards=jnp.zeros(4),
                  terminations=jnp.zeros(4), next_observations=jnp.ones((4, 3)))
    average = state.params
    for t in range(5):
        state, _ = bc.update(cfg, state, batch)
        d = min(0.9, (1 + t) / (10 + t))  # the ramp: early updates are not averaged with the initialization
        average = jax.tree.map(lambda a, p, d=d: d * a + (1 - d) * p, average, state.params)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-7), average, state.ema_params)
    assert not np.allclose(jax.tree.leaves(state.params)[0], jax.tree.leaves(state.ema_params)[0])
    obs = jnp.ones((1, 3))
    head = bc._head(cfg, 2)
    np.testing.assert_allclose(bc.act(cfg, state, obs, jax.random.PRNGKey(1), True),
                               head.apply(state.ema_params, obs, method="mode"))
    assert bc.policy_export(cfg, state)[1] is state.ema_params
    off, _ = bc.update(bc.Config(hidden_dims=(8,), batch_size=4), bc.init(bc.Config(hidden_dims=(8,), batch_size=4),
                                                                          spec, jax.random.PRNGKey(0)), batch)
    assert off.ema_params is off.params  # ema_decay 0: the parameters themselves
    with pytest.raises(UnderstudyError, match="ema-decay must be in"):
        bc.init(dataclasses.replace(cfg, ema_decay=1.0), spec, jax.random.PRNGKey(0))
