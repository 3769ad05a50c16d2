"""Multi-task datasets: the task bit on recorded observations, and one dataset mixed from several tasks.

    walk, run = load_dataset("data/walk-expert"), load_dataset("data/run-expert")
    mixed = mix_tasks([walk, run], task_bit=True)   # task 0 = walker-walk, task 1 = walker-run
    save_dataset(mixed, "data/walkrun-expert-bit")

The bit is the one `envs.make(env_id, task_bit=(task_id, num_tasks))` appends (envs/wrappers.py TaskBit): a
one-hot of size num_tasks after the env's own features, so a policy trained on the mixed data is evaluated on
task j with `make(env_j, task_bit=(j, num_tasks))` and sees exactly what it was trained on. The dataset's spec
(metadata["spec"]) becomes that env's spec, so `understudy train` rebuilds the env with the bit.
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence

import numpy as np

from understudy.data.episodes import Dataset, mix_datasets
from understudy.types import ArraySpec, EnvSpec, UnderstudyError


def _spec_of(ds: Dataset, what: str) -> EnvSpec:
    spec = ds.metadata.get("spec")
    if not spec:
        raise UnderstudyError(f"{what} records no environment spec (metadata spec), so its task bit cannot be made to "
                              "match an env's; use a dataset from `understudy collect`.")
    return EnvSpec.from_dict(spec) if isinstance(spec, dict) else spec


def task_bit_spec(spec: EnvSpec, task_id: int, num_tasks: int) -> EnvSpec:
    """The spec `make(spec.env_id, **spec.options, task_bit=(task_id, num_tasks))` reports, derived without an env."""
    if not (isinstance(num_tasks, (int, np.integer)) and isinstance(task_id, (int, np.integer))
            and num_tasks >= 1 and 0 <= task_id < num_tasks):
        raise UnderstudyError(f"task_bit=({task_id}, {num_tasks}) is not (task_id, num_tasks) with "
                              "0 <= task_id < num_tasks.")
    if spec.num_tasks is not None:
        raise UnderstudyError(f"The dataset of {spec.env_id} already carries a task bit ({spec.task_id} of "
                              f"{spec.num_tasks}); start from the dataset collected without one.")
    obs = spec.observation
    if isinstance(obs, dict) or len(obs.shape) != 1:
        raise UnderstudyError(f"A task bit is appended to flat vector observations, but {spec.env_id} observes {obs}.")
    low = None if obs.low is None else tuple(obs.low) + (0.0,) * num_tasks
    high = None if obs.high is None else tuple(obs.high) + (1.0,) * num_tasks
    observation = ArraySpec(shape=(obs.shape[0] + num_tasks,), dtype=obs.dtype, low=low, high=high)
    return EnvSpec(env_id=spec.env_id, family=spec.family, observation=observation, action=spec.action,
                   num_actions=spec.num_actions, max_episode_steps=spec.max_episode_steps,
                   instruction=spec.instruction, num_tasks=int(num_tasks), task_id=int(task_id),
                   options={**spec.options, "task_bit": [int(task_id), int(num_tasks)]})


def with_task_bit(ds: Dataset, task_id: int, num_tasks: int) -> Dataset:
    """A copy of `ds` whose observations and next observations end with the one-hot (task_id of num_tasks), with
    the task_id column set and the spec of the env made with that task bit."""
    spec = task_bit_spec(_spec_of(ds, "The dataset"), task_id, num_tasks)
    one_hot = np.zeros(num_tasks, np.float32)
    one_hot[task_id] = 1.0

    def append(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, np.broadcast_to(one_hot, (len(x), num_tasks))], axis=1)

    metadata = copy.deepcopy(ds.metadata)
    metadata["spec"] = spec.to_dict()
    return Dataset(observations=append(ds.observations), next_observations=append(ds.next_observations),
                   actions=ds.actions, rewards=ds.rewards, terminations=ds.terminations, truncations=ds.truncations,
                   episode_starts=ds.episode_starts, task_id=np.full(ds.num_steps, task_id, np.int64),
                   instructions=ds.instructions, metadata=metadata)


def _task_entry(j: int, ds: Dataset, bit: Optional[list[int]]) -> dict:
    meta = ds.metadata
    return {"task_id": j, "env_id": meta.get("env_id"), "task_bit": bit, "recipe": meta.get("recipe"),
            "ref_min_score": meta.get("ref_min_score"), "ref_max_score": meta.get("ref_max_score"),
            "episodes": ds.num_episodes, "steps": ds.num_steps, "source": meta.get("source")}


def mix_tasks(datasets: Sequence[Dataset], *, task_bit: bool) -> Dataset:
    """Concatenates one dataset per task (task j = datasets[j], whole episodes, in order).

    With task_bit each observation gets the one-hot (j, len(datasets)); without it the observations are left as
    they are and only the task_id column tells the tasks apart. metadata: env_id, spec and ref_min/max_score of
    task 0 (training-time evaluation runs on task 0's env), and `tasks`, one entry per task with its env, its
    task bit (or None), its recipe and its own reference scores, for evaluating on every task.
    """
    if len(datasets) < 2:
        raise UnderstudyError(f"mix_tasks needs at least two datasets (one per task), got {len(datasets)}.")
    n = len(datasets)
    specs = [_spec_of(ds, f"Dataset {j} ({ds.metadata.get('env_id', '?')})") for j, ds in enumerate(datasets)]
    parts = [with_task_bit(ds, j, n) for j, ds in enumerate(datasets)] if task_bit else list(datasets)
    mixed = mix_datasets(parts)
    first = parts[0].metadata
    recipes = {ds.metadata.get("recipe") for ds in datasets}
    mixed.metadata.update(
        env_id=specs[0].env_id, spec=first["spec"], policy="mixture",
        tasks=[_task_entry(j, ds, [j, n] if task_bit else None) for j, ds in enumerate(datasets)],
        ref_min_score=first.get("ref_min_score"), ref_max_score=first.get("ref_max_score"))
    if len(recipes) == 1 and None not in recipes:
        mixed.metadata["recipe"] = recipes.pop()
    for key in ("ref_min_score", "ref_max_score"):
        if mixed.metadata[key] is None:
            del mixed.metadata[key]
    return mixed
