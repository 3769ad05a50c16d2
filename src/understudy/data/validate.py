"""Checks that a dataset is well formed and fits an environment, with messages that name the fix.

`validate_dataset` runs on every load and save: consistent lengths, numeric dtypes, finite values, sane
episode boundaries, and shapes that match the spec recorded in the metadata. `check_compatible` checks a
dataset against the spec of the environment it is about to be used with.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from understudy.data.episodes import Dataset
from understudy.types import ArraySpec, EnvSpec, UnderstudyError

RECOLLECT = "re-collect it with `understudy collect --env ENV_ID --policy ... --out PATH`"

# metadata["action_labels"] of data whose actions are the policy's noise-free ones, not the executed ones
# (`understudy collect --action-noise STD --clean-action-labels`)
CLEAN_ACTION_LABELS = "policy-without-noise"


def _leaves(name: str, obs) -> list[tuple[str, np.ndarray]]:
    if isinstance(obs, dict):
        return [(f"{name}/{k}", np.asarray(v)) for k, v in sorted(obs.items())]
    return [(name, np.asarray(obs))]


def validate_dataset(ds: Dataset, source: str = "the dataset") -> None:
    """Raise UnderstudyError naming `source` and the offending field if `ds` is malformed."""
    n = ds.num_steps
    recollect = RECOLLECT.replace("ENV_ID", ds.metadata.get("env_id") or "ENV_ID")

    def bad(field: str, problem: str, fix: str = recollect):
        raise UnderstudyError(f"{source}: field `{field}` {problem}. The data is unusable as is; {fix}.")

    def where(step: int) -> str:
        episode = int(np.searchsorted(ds.episode_starts, step, side="right") - 1)
        return f"step {step}" + (f" (episode {episode})" if episode >= 0 else "")

    columns = (_leaves("observations", ds.observations) + _leaves("next_observations", ds.next_observations)
               + [("actions", ds.actions), ("rewards", ds.rewards), ("terminations", ds.terminations),
                  ("truncations", ds.truncations)])
    if ds.task_id is not None:
        columns.append(("task_id", ds.task_id))
    for field, x in columns:
        if x.ndim == 0 or x.shape[0] != n:
            bad(field, f"has {x.shape[0] if x.ndim else 'no'} rows but `rewards` has {n}",
                "every column needs one row per step")
        if x.dtype.kind not in "biuf":
            bad(field, f"has non-numeric dtype {x.dtype}")
        if x.dtype.kind == "f" and field != "next_observations" and not field.startswith("next_observations/") \
                and x.size and not np.isfinite(x).all():
            rows = np.nonzero(~np.isfinite(x.reshape(n, -1)).all(axis=1))[0]
            bad(field, f"contains NaN or infinite values at {rows.size} step(s), first at {where(int(rows[0]))}")
    for field, x in _leaves("next_observations", ds.next_observations):
        if x.dtype.kind == "f" and x.size:
            # A terminal step's successor is never used (no bootstrapping), so only check the others.
            used = ~ds.terminations
            if not np.isfinite(x[used].reshape(int(used.sum()), -1)).all():
                bad(field, "contains NaN or infinite values at non-terminal steps")
    for (field, a), (_, b) in zip(_leaves("observations", ds.observations),
                                  _leaves("next_observations", ds.next_observations)):
        if a.shape[1:] != b.shape[1:]:
            bad(field, f"has row shape {a.shape[1:]} but next_{field} has {b.shape[1:]}")

    starts = ds.episode_starts
    if n and (starts.size == 0 or starts[0] != 0):
        bad("episode_starts", "must begin with 0", "episode boundaries must cover every step")
    if np.any(np.diff(starts) <= 0) or (starts.size and starts[-1] >= max(n, 1)):
        bad("episode_starts", f"must be strictly increasing and below {n} (empty episodes are not allowed)")
    ends = ds.episode_ends - 1
    mid_episode = np.ones(n, bool)
    mid_episode[ends] = False
    for field in ("terminations", "truncations"):
        flags = getattr(ds, field)
        if (flags & mid_episode).any():
            step = int(np.nonzero(flags & mid_episode)[0][0])
            bad(field, f"is set at {where(step)}, in the middle of an episode (an episode ends at its first "
                       "termination or truncation)")
    if ds.task_id is not None and ds.num_episodes:
        first = ds.task_id[ds.episode_starts]
        if (ds.task_id != np.repeat(first, ds.episode_lengths)).any():
            bad("task_id", "changes within an episode", "give each episode a single task id")
    if ds.instructions is not None and len(ds.instructions) != ds.num_episodes:
        bad("instructions", f"has {len(ds.instructions)} entries for {ds.num_episodes} episodes",
            "give one instruction per episode")

    spec = ds.metadata.get("spec")
    if spec:
        _check_shapes(ds, EnvSpec.from_dict(spec) if isinstance(spec, dict) else spec, source,
                      "the file's data does not match the spaces recorded in its own metadata; " + recollect)


def _obs_specs(spec: EnvSpec) -> list[tuple[str, ArraySpec]]:
    if isinstance(spec.observation, dict):
        return [(f"observations/{k}", v) for k, v in sorted(spec.observation.items())]
    return [("observations", spec.observation)]


def _check_shapes(ds: Dataset, spec: EnvSpec, source: str, fix: str) -> None:
    data_obs = dict(_leaves("observations", ds.observations))
    spec_obs = dict(_obs_specs(spec))
    if sorted(data_obs) != sorted(spec_obs):
        raise UnderstudyError(
            f"{source}: observation fields {sorted(data_obs)} differ from {spec.env_id or 'the spec'}'s "
            f"{sorted(spec_obs)} (space mismatch); {fix}.")
    for field, x in data_obs.items():
        if tuple(x.shape[1:]) != tuple(spec_obs[field].shape):
            raise UnderstudyError(
                f"{source}: field `{field}` has shape {tuple(x.shape[1:])} per step but "
                f"{spec.env_id or 'the spec'} expects {tuple(spec_obs[field].shape)} (space mismatch); {fix}.")
    if spec.discrete != (ds.actions.dtype.kind in "iu"):
        kind = "discrete" if spec.discrete else "continuous"
        raise UnderstudyError(
            f"{source}: field `actions` has dtype {ds.actions.dtype} but {spec.env_id or 'the spec'} has {kind} "
            f"actions (space mismatch); {fix}.")
    want = tuple(spec.action.shape)
    if tuple(ds.actions.shape[1:]) != want:
        raise UnderstudyError(
            f"{source}: field `actions` has shape {tuple(ds.actions.shape[1:])} per step but "
            f"{spec.env_id or 'the spec'} expects {want} (space mismatch); {fix}.")
    if spec.discrete and ds.num_steps and (ds.actions.min() < 0 or ds.actions.max() >= spec.num_actions):
        raise UnderstudyError(
            f"{source}: field `actions` holds values {int(ds.actions.min())}..{int(ds.actions.max())} but "
            f"{spec.env_id} has {spec.num_actions} actions (space mismatch); {fix}.")


def check_compatible(ds: Dataset, spec: EnvSpec, source: Optional[str] = None) -> None:
    """Raise UnderstudyError if `ds` cannot be used with the environment described by `spec`."""
    ds_env = ds.metadata.get("env_id") or "an unknown environment"
    source = source or f"The dataset (collected on {ds_env})"
    _check_shapes(ds, spec, source,
                  f"use a dataset collected on {spec.env_id} (`understudy collect --env {spec.env_id} ...`) "
                  f"or pass the environment the dataset came from (--env {ds_env})")


def require_executed_actions(ds: Dataset, algo_name: str, source: str = "the dataset") -> None:
    """Refuses data whose actions are noise-free labels rather than the actions that made its transitions.

    Imitation (BC, DAgger, GAIL, AIRL) wants exactly those labels; value learning and dynamics models would
    learn from transitions that the recorded actions did not cause.
    """
    if ds.metadata.get("action_labels") == CLEAN_ACTION_LABELS:
        raise UnderstudyError(
            f"{source} records the expert's noise-free actions while noisier ones were executed "
            f"(collected with --action-noise {ds.metadata.get('action_noise')} --clean-action-labels), so its "
            f"actions did not produce its transitions. {algo_name} learns from transitions: train it on data "
            "collected without --clean-action-labels, or use this dataset for imitation (bc, dagger, gail, airl).")
