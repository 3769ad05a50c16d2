"""Observation-noise augmentation, walk+run datasets with the task bit, and `understudy study offline-walker`."""

import dataclasses
import json
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from understudy.data import collect, load_dataset, save_dataset
from understudy.data.samplers import to_device
from understudy.data.tasks import mix_tasks, with_task_bit
from understudy.studies.offline_walker import OfflineWalkerStudyArgs, check_args, dataset_plan, run_study, study_runs
from understudy.train.augment import augment_windows, noise_scale, with_obs_noise
from understudy.types import ArraySpec, Batch, EnvSpec, UnderstudyError

TINY = "--hidden-dims 16 --batch-size 32 --no-tensorboard"


@pytest.fixture(autouse=True)
def fewer_bootstrap_resamples(monkeypatch):
    import understudy.studies.common as common

    monkeypatch.setattr(common, "BOOTSTRAP_REPS", 200)  # the CIs' values are not under test; their time is


@pytest.fixture(scope="module")
def walker_data():
    """One random episode (1000 steps) of walker-walk and of walker-run, with made-up reference returns."""
    walk = collect("walker-walk", "random", episodes=1, num_envs=1, seed=0, progress=False)
    run = collect("walker-run", "random", episodes=1, num_envs=1, seed=1, progress=False)
    walk.metadata.update(recipe="expert", ref_min_score=0.0, ref_max_score=100.0)
    run.metadata.update(recipe="expert", ref_min_score=10.0, ref_max_score=50.0)
    return walk, run


# ---------------------------------------------------------------------------------------------------------
# noise augmentation
# ---------------------------------------------------------------------------------------------------------
class _State(struct.PyTreeNode):
    step: jax.Array


def _batches(data, scale, keys, num_updates=4, batch_size=256):
    """The observations every update of the real offline update_many saw (a fake algorithm returns them)."""
    from understudy.train.offline import make_update_many

    algo = types.SimpleNamespace(update=lambda cfg, st, b: (st.replace(step=st.step + 1),
                                                            {"obs": b.observations, "next": b.next_observations}))
    update_many = make_update_many(algo, types.SimpleNamespace(batch_size=batch_size), data, scale)
    _, _, metrics = update_many(_State(step=jnp.zeros(2, jnp.int32)), keys, num_updates=num_updates)
    return np.asarray(metrics["obs"]), np.asarray(metrics["next"])  # [updates, seeds, batch, obs_dim]


def test_noise_augmentation_has_the_right_std_keeps_the_task_bit_and_is_off_by_default():
    spec = EnvSpec(env_id="x", family="gymnasium", observation=ArraySpec(shape=(6,), dtype="float32"),
                   action=ArraySpec(shape=(1,), dtype="float32", low=(-1.0,), high=(1.0,)), num_tasks=2, task_id=0)
    normalizer = {"mean": np.zeros(6, np.float32), "std": np.array([1, 2, 4, 0.5, 1e-3, 1e-3], np.float32)}
    scale = noise_scale(0.2, spec, normalizer)  # raw units: divided by the normalizer's std; task bit exact
    np.testing.assert_allclose(scale, [0.2, 0.1, 0.05, 0.4, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(noise_scale(0.2, spec, None), [0.2] * 4 + [0, 0])
    assert noise_scale(0.0, spec, normalizer) is None  # the default: nothing changes...
    sample = lambda k: None  # noqa: E731
    assert with_obs_noise(sample, None) is sample  # ...not even the sampling function
    with pytest.raises(UnderstudyError, match="must be a standard deviation"):
        noise_scale(-0.1, spec, None)
    # 'std' units: sigma is a fraction of each feature's spread, so the standardized batch gets sigma everywhere...
    np.testing.assert_allclose(noise_scale(0.2, spec, normalizer, "std"), [0.2] * 4 + [0, 0], rtol=1e-6)
    # ...and a raw batch gets sigma times the dataset's per-feature std
    observations = np.stack([np.array([1, 2, 4, 0.5, 1, 0]) * v for v in (-1.0, 1.0)]).astype(np.float32)
    np.testing.assert_allclose(noise_scale(0.2, spec, None, "std", observations), [0.2, 0.4, 0.8, 0.1, 0, 0],
                               rtol=1e-6)
    with pytest.raises(UnderstudyError, match="units must be one of raw, std"):
        noise_scale(0.2, spec, None, "percent")

    rng = np.random.default_rng(0)
    obs = (5 * rng.standard_normal((50, 6))).astype(np.float32)
    data = to_device({"observations": obs, "next_observations": obs[::-1].copy(),
                      "actions": np.zeros((50, 1), np.float32), "rewards": np.zeros(50, np.float32),
                      "terminations": np.zeros(50, np.float32), "episode_starts": np.array([0])})
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    plain, plain_next = _batches(data, None, keys)
    noisy, noisy_next = _batches(data, scale, keys)
    rows = {tuple(r) for r in obs}
    assert all(tuple(r) in rows for r in plain.reshape(-1, 6))  # without the flag the batches are dataset rows
    diff, diff_next = (noisy - plain).reshape(-1, 6), (noisy_next - plain_next).reshape(-1, 6)  # same rows sampled
    np.testing.assert_allclose(diff.std(axis=0)[:4], scale[:4], rtol=0.08)  # 2048 draws per feature
    np.testing.assert_allclose(np.abs(diff.mean(axis=0))[:4], 0.0, atol=4 * 0.4 / np.sqrt(2048))
    np.testing.assert_allclose(diff_next.std(axis=0)[:4], scale[:4], rtol=0.08)
    assert np.all(diff[:, 4:] == 0) and np.all(diff_next[:, 4:] == 0)  # the task bit stays exact
    assert abs(np.corrcoef(diff[:, 0], diff_next[:, 0])[0, 1]) < 0.1  # s and s' get independent noise

    # windows (Decision Transformer): noise on the real steps' states, padding stays zero
    state = jnp.ones((512, 3, 6))
    mask = jnp.array([0.0, 1.0, 1.0])[None].repeat(512, axis=0)
    windows = Batch(observations={"state": state, "timestep": jnp.zeros((512, 3), jnp.int32)}, actions=None,
                    rewards=None, terminations=None, next_observations=None, mask=mask)
    out = np.asarray(augment_windows(windows, jnp.asarray(scale), jax.random.PRNGKey(0)).observations["state"])
    assert np.all(out[:, 0] == 0)
    np.testing.assert_allclose((out[:, 1:] - 1).reshape(-1, 6).std(axis=0)[:4], scale[:4], rtol=0.08)


def test_online_algorithms_refuse_the_augmentation_flag():
    from understudy.cli import main

    assert main(["train", "sac", "--env", "Pendulum-v1", "--steps", "1", "--obs-noise-augment", "0.1"]) == 2


# ---------------------------------------------------------------------------------------------------------
# walk + run with the task bit
# ---------------------------------------------------------------------------------------------------------
def test_mixed_dataset_has_the_envs_task_bits_and_both_tasks_steps(walker_data, tmp_path):
    from understudy.envs import make, make_spec
    from understudy.train.common import RunArgs
    from understudy.train.offline import load_training_data

    walk, run = walker_data
    mixed = mix_tasks([walk, run], task_bit=True)
    n_walk, n = walk.num_steps, walk.num_steps + run.num_steps
    assert mixed.num_steps == n == 2000 and mixed.num_episodes == 2 and mixed.observations.shape == (n, 26)
    for column in (mixed.observations, mixed.next_observations):
        np.testing.assert_array_equal(column[:n_walk, 24:], np.tile([1.0, 0.0], (n_walk, 1)))
        np.testing.assert_array_equal(column[n_walk:, 24:], np.tile([0.0, 1.0], (n - n_walk, 1)))
    np.testing.assert_array_equal(mixed.observations[n_walk:, :24], run.observations)
    np.testing.assert_array_equal(mixed.task_id, np.repeat([0, 1], [n_walk, n - n_walk]))
    # the spec is the env's own: make(walker-walk, task_bit=(0, 2)) for training, and the run part matches
    # make(walker-run, task_bit=(1, 2)), whose observations end with the same one-hot
    assert mixed.metadata["spec"] == make_spec("walker-walk", task_bit=(0, 2)).to_dict()
    assert with_task_bit(run, 1, 2).metadata["spec"] == make_spec("walker-run", task_bit=(1, 2)).to_dict()
    env = make("walker-run", task_bit=(1, 2), seed=0)
    assert list(env.reset()[0][24:]) == [0.0, 1.0]
    env.close()
    assert [t["task_bit"] for t in mixed.metadata["tasks"]] == [[0, 2], [1, 2]]
    assert [t["ref_max_score"] for t in mixed.metadata["tasks"]] == [100.0, 50.0]
    assert mixed.metadata["ref_max_score"] == 100.0 and mixed.metadata["recipe"] == "expert"
    # saved and loaded, it trains on walker-walk with the task bit (0, 2)
    path = save_dataset(mixed, tmp_path / "walkrun-expert-bit")
    ds, spec = load_training_data(RunArgs(dataset=str(path)), "cql")
    assert spec.env_id == "walker-walk" and spec.options["task_bit"] == [0, 2] and ds.observations.shape == (n, 26)
    plain = mix_tasks([walk, run], task_bit=False)
    assert plain.observations.shape == (n, 24) and plain.metadata["spec"] == walk.metadata["spec"]
    assert [t["task_bit"] for t in plain.metadata["tasks"]] == [None, None]
    with pytest.raises(UnderstudyError, match="already carries a task bit"):
        with_task_bit(with_task_bit(walk, 0, 2), 0, 2)


# ---------------------------------------------------------------------------------------------------------
# the study
# ---------------------------------------------------------------------------------------------------------
def test_plan_names_every_variant_and_run(tmp_path):
    args = OfflineWalkerStudyArgs(out=str(tmp_path), tasks="walk,walk+run", recipes="expert,medium",
                                  algos="bc,cql", seeds=2, seed=4, train_obs_noise="0.1", cql_args="--preset small")
    check_args(args)
    base, variants = dataset_plan(args)
    assert sorted(base) == ["run-expert", "run-medium", "walk-expert", "walk-medium"]
    assert list(variants) == ["walk-expert", "walk-expert-bit", "walk-medium", "walk-medium-bit", "walkrun-expert",
                              "walkrun-expert-bit", "walkrun-medium", "walkrun-medium-bit"]
    assert variants["walkrun-expert-bit"]["evals"] == [{"env_id": "walker-walk", "task_bit": [0, 2]},
                                                       {"env_id": "walker-run", "task_bit": [1, 2]}]
    assert variants["walk-expert"]["path"] == base["walk-expert"]["path"]  # no bit: the base dataset itself
    runs, cells = study_runs(args, variants)
    assert len(runs) == 2 * 2 * 8 * 2  # algos x (plain, augmented) x variants x seeds
    aug = next(r for r in runs if r.name == "bc-aug0.1-walkrun-medium-bit-seed5")
    assert aug.args[aug.args.index("--obs-noise-augment") + 1] == "0.1" and aug.args[-2:] == ("--seed", "5")
    assert cells[aug.name] == {"algo": "bc", "method": "bc+aug0.1", "augment": 0.1, "variant": "walkrun-medium-bit",
                               "seed": 5}
    assert "--obs-noise-augment" not in next(r for r in runs if r.name == "cql-walk-expert-seed4").args
    with pytest.raises(UnderstudyError, match="must not contain --obs-noise"):
        study_runs(dataclasses.replace(args, bc_args="--obs-noise 0.1"), variants)
    with pytest.raises(UnderstudyError, match="unknown \\['jog'\\]"):
        check_args(dataclasses.replace(args, tasks="walk,jog"))
    with pytest.raises(UnderstudyError, match="--obs-noise"):
        check_args(dataclasses.replace(args, obs_noise="0,-1"))


def test_missing_experts_fail_first_with_the_command_to_train_them(tmp_path, capsys):
    from understudy.cli import main

    out, experts = tmp_path / "study", tmp_path / "experts"
    args = OfflineWalkerStudyArgs(out=str(out), experts_dir=str(experts), recipes="expert", algos="bc")
    with pytest.raises(UnderstudyError, match="walker-walk.*understudy train sac --env walker-walk.*walker-run"):
        run_study(args)
    assert not (out / "data").exists()  # nothing collected before failing
    assert main(["study", "offline-walker", "--out", str(out), "--experts-dir", str(experts)]) == 2
    assert "understudy train sac --env walker-run" in capsys.readouterr().err
    (experts / "walker-walk").mkdir(parents=True)
    (experts / "walker-walk" / "policy.json").write_text("{}")  # an expert without its medium/ snapshot
    with pytest.raises(UnderstudyError, match="medium/ snapshot"):
        run_study(dataclasses.replace(args, tasks="walk", recipes="medium"))


def test_reused_datasets_must_have_the_requested_action_mode(walker_data, tmp_path, capsys):
    from understudy.studies.offline_walker import collect_base

    walk, _ = walker_data
    data = tmp_path / "data"
    sampled = dataclasses.replace(walk, metadata={**walk.metadata, "stochastic": True})
    save_dataset(sampled, data / "walk-expert")
    args = OfflineWalkerStudyArgs(out=str(tmp_path / "study"), tasks="walk", task_bits="without", recipes="expert",
                                  data_dir=str(data), progress=False)
    base, _ = dataset_plan(args)
    with pytest.raises(UnderstudyError, match="sampled \\(--stochastic\\) expert actions.*another --data-dir"):
        collect_base(args, base)  # mode actions asked for: the sampled dataset is refused, and kept
    assert load_dataset(data / "walk-expert").metadata["stochastic"] is True
    collect_base(dataclasses.replace(args, stochastic=True), base)
    assert "reusing walk-expert" in capsys.readouterr().out


def test_a_setting_added_later_counts_as_its_default_in_an_older_study(tmp_path):
    from understudy.studies.common import check_same_settings

    args = OfflineWalkerStudyArgs(out=str(tmp_path))
    (tmp_path / "runs" / "bc-walk-expert-seed0").mkdir(parents=True)
    older = {k: v for k, v in dataclasses.asdict(args).items() if k != "stochastic"}  # made before --stochastic
    (tmp_path / "study.json").write_text(json.dumps({"args": older}))
    check_same_settings(tmp_path, args, ["bc-walk-expert-seed0"])
    with pytest.raises(UnderstudyError, match="--stochastic False -> True"):
        check_same_settings(tmp_path, dataclasses.replace(args, stochastic=True), ["bc-walk-expert-seed0"])


def test_tiny_study_trains_evaluates_under_noise_reruns_nothing_and_reports(walker_data, tmp_path, capsys):
    walk, run = walker_data
    data = tmp_path / "data"
    save_dataset(walk, data / "walk-expert")
    save_dataset(run, data / "run-expert")
    out = tmp_path / "study"
    args = OfflineWalkerStudyArgs(out=str(out), tasks="walk+run", task_bits="with", recipes="expert", algos="bc",
                                  seeds=1, data_dir=str(data), experts_dir=str(tmp_path / "none"), steps=20,
                                  eval_every=20, eval_episodes=1, final_eval_episodes=1, obs_noise="0,0.1",
                                  train_obs_noise="0.1", eval_checkpoints="final", workers=2, bc_args=TINY,
                                  progress=False)
    results = run_study(args)
    assert load_dataset(data / "walkrun-expert-bit").observations.shape == (2000, 26)
    assert results["methods"] == ["bc", "bc+aug0.1"] and not results["unfinished"]
    aug_config = json.loads((out / "runs" / "bc-aug0.1-walkrun-expert-bit-seed0" / "config.json").read_text())
    assert aug_config["run"]["obs_noise_augment"] == 0.1
    evals = sorted(p.name for p in (out / "runs" / "bc-walkrun-expert-bit-seed0" / "study_eval").iterdir())
    assert evals == ["walker-run-best-noise0.json", "walker-run-final-noise0.1.json", "walker-run-final-noise0.json",
                     "walker-walk-best-noise0.json", "walker-walk-final-noise0.1.json",
                     "walker-walk-final-noise0.json"]
    run_eval = json.loads((out / "runs" / "bc-walkrun-expert-bit-seed0" / "study_eval" /
                           "walker-run-final-noise0.1.json").read_text())
    assert run_eval["task_bit"] == [1, 2] and run_eval["obs_noise"] == 0.1 and len(run_eval["returns"]) == 1
    # normalized with each env's own references: run's are (10, 50)
    record = next(r for r in results["records"] if r["env_id"] == "walker-run" and r["method"] == "bc"
                  and r["checkpoint"] == "final" and r["noise"] == 0.1)
    assert record["normalized"] == pytest.approx(100 * (run_eval["mean"] - 10) / 40)
    assert set(results["robustness"]["final"]["bc+aug0.1"]) == {"0", "0.1"}
    bc_walk = next(c for c in results["note_002"] if c["algo"] == "bc" and c["env_id"] == "walker-walk")
    own_final = json.loads((out / "runs" / "bc-walkrun-expert-bit-seed0" / "eval.json").read_text())["final"]
    assert bc_walk["variant"] == "walkrun-expert-bit"  # no walk-expert data: the mixed one with the bit
    assert bc_walk["last"] == pytest.approx(own_final["seeds"][0]["mean"])
    report = (out / "report.md").read_text()
    assert "| walkrun-expert-bit @ walker-run |" in report and "σ = 0.1" in report and "| bc+aug0.1 |" in report
    assert "| cql |" not in report and (out / "robustness.png").exists() and (out / "curves.png").exists()
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("study_eval/*.json")}
    run_study(args)  # everything finished and evaluated: nothing is retrained or re-evaluated
    assert "2 finished run(s) found, not redone" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("study_eval/*.json")} == before
    (out / "report.md").unlink()
    run_study(dataclasses.replace(args, report_only=True))
    assert (out / "report.md").read_text() == report
    with pytest.raises(UnderstudyError, match="other settings"):  # its runs were trained for 20 updates
        run_study(dataclasses.replace(args, steps=40))


def _fake_study(out: Path, means: dict[str, float]):
    """A study directory with finished bc / cql runs (seed 0 and 1) and their study evaluations."""
    variants = {"walk-expert": {"task": "walk", "recipe": "expert", "bit": False,
                                "evals": [{"env_id": "walker-walk", "task_bit": None}]},
                "walkrun-expert": {"task": "walk+run", "recipe": "expert", "bit": False,
                                   "evals": [{"env_id": "walker-walk", "task_bit": None},
                                             {"env_id": "walker-run", "task_bit": None}]}}
    cells = {}
    for key, mean in means.items():  # key: algo/variant/env/checkpoint/seed
        algo, variant, env_id, checkpoint, seed = key.split("/")
        name = f"{algo}-{variant}-seed{seed}"
        cells[name] = {"algo": algo, "method": algo, "augment": 0.0, "variant": variant, "seed": int(seed)}
        run = out / "runs" / name
        (run / "study_eval").mkdir(parents=True, exist_ok=True)
        (run / "eval.json").write_text("{}")
        (run / "study_eval" / f"{env_id}-{checkpoint}-noise0.json").write_text(json.dumps(
            {"env_id": env_id, "checkpoint": checkpoint, "obs_noise": 0.0, "episodes": 100, "mean": mean}))
    (out / "study.json").write_text(json.dumps({"variants": variants, "cells": cells, "eval_checkpoints": ["final"]}))
    (out / "references.json").write_text(json.dumps({"walker-walk": {"random": 50.0, "expert": 950.0},
                                                     "walker-run": {"random": 30.0, "expert": 330.0}}))


def test_report_compares_with_note_002_on_the_matching_data_and_normalizes_per_env(tmp_path):
    from understudy.studies.offline_walker_report import build_results, report_markdown

    _fake_study(tmp_path, {"bc/walk-expert/walker-walk/final/0": 200.0, "bc/walk-expert/walker-walk/final/1": 180.0,
                           "bc/walk-expert/walker-walk/best/0": 230.0, "bc/walk-expert/walker-walk/best/1": 190.0,
                           "cql/walkrun-expert/walker-walk/final/0": 500.0,
                           "cql/walkrun-expert/walker-run/final/0": 60.0, "cql/walkrun-expert/walker-run/best/0": 90.0})
    results = build_results(tmp_path)
    bc_walk = next(c for c in results["note_002"] if c["algo"] == "bc" and c["env_id"] == "walker-walk")
    assert bc_walk == {"algo": "bc", "env_id": "walker-walk", "note_002": 181.9, "variant": "walk-expert",
                       "last": 190.0, "last_beats": True, "best": 210.0, "best_beats": True}
    cql_run = next(c for c in results["note_002"] if c["algo"] == "cql" and c["env_id"] == "walker-run")
    assert (cql_run["variant"], cql_run["last_beats"], cql_run["best_beats"]) == ("walkrun-expert", False, True)
    bc_run = next(c for c in results["note_002"] if c["algo"] == "bc" and c["env_id"] == "walker-run")
    assert bc_run["variant"] is None and bc_run["last"] is None  # bc never ran on walker-run data
    # bc's average: seed 0 200 -> 16.67, seed 1 180 -> 14.44 normalized x100 on walker-walk
    summary = results["summary"]["bc"]["final"]
    np.testing.assert_allclose(summary["per_seed"], [100 * 150 / 900, 100 * 130 / 900])
    cql = results["summary"]["cql"]["final"]  # one seed, two cells: walk 50.0, run 10.0
    np.testing.assert_allclose(cql["per_seed"], [(100 * 450 / 900 + 100 * 30 / 300) / 2])
    text = report_markdown(results)
    assert "| walk-expert @ walker-walk | 190.0 ± 10.0 | — |" in text
    assert "| cql | walker-run | 87.1 | walkrun-expert | 60.0 | **no** | 90.0 | yes |" in text
