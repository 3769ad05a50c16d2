"""D4RL-style dataset recipes: random, medium, medium-replay, expert, medium-expert.

    from understudy.data.recipes import collect_recipe
    ds = collect_recipe("Hopper-v5", "medium", steps=1_000_000, policy="runs/sac-Hopper-v5-s0")
    save_dataset(ds, "data/hopper-medium")

The recipes (REFERENCES.md, after D4RL):
  random         N steps of uniform random actions.
  medium         N steps of a policy at about one third of expert performance: the `medium_policy`
                 export, else the `medium/` export inside `policy`, else the snapshot (`snapshots/step_*/`,
                 written by `understudy train ... --snapshot-every K`) whose evaluation return in its
                 policy.json is closest to random + (expert - random) / 3.
  medium-replay  every transition the training run's replay buffer held when the medium snapshot was
                 taken (`--snapshot-replay` writes `replay.safetensors` beside each snapshot); N is unused.
  expert         N steps of the expert: `policy` itself when it is a policy export, else a run's `final/`.
  medium-expert  medium + expert, concatenated (episodes kept whole).

Every dataset records the reference returns used for normalized scores: `ref_min_score` (uniform
random actions) and `ref_max_score` (the expert, deterministic), each over `reference_episodes`
episodes, or read from a JSON file beside the expert export (`random_return`, and `mean` as
`understudy eval --json` writes it, or `expert_return`), so shipped experts need no re-evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from understudy.data.collect import collect
from understudy.data.episodes import Dataset, mix_datasets
from understudy.types import EnvSpec, UnderstudyError

RECIPES = ("random", "medium", "medium-replay", "expert", "medium-expert")
REPLAY_FILE = "replay.safetensors"
REPLAY_FORMAT = "understudy.replay"
REPLAY_COLUMNS = ("observations", "actions", "rewards", "terminations", "next_observations")
EXPERT_RETURN_KEYS = ("expert_return", "mean")
RANDOM_RETURN_KEYS = ("random_return",)
PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------------------------
# the recipes
# ---------------------------------------------------------------------------------------------------------
def collect_recipe(env_id: str, recipe: str, *, steps: Optional[int] = None, policy: Optional[PathLike] = None,
                   medium_policy: Optional[PathLike] = None, action_noise: float = 0.0, stochastic: bool = False,
                   seed: int = 0, num_envs: int = 16, run_seed: int = 0, reference_episodes: int = 100,
                   progress: bool = True) -> Dataset:
    """A dataset made by `recipe` (one of RECIPES), with ref_min_score / ref_max_score in its metadata.

    policy: the expert policy export, or a training run directory (its `final/` is the expert and its
        `snapshots/step_*/` the medium candidates), or a shipped expert directory holding `medium/` or
        `snapshots/`. Needed by every recipe but `random` (where it only supplies ref_max_score).
    medium_policy: a policy export to use as the medium policy instead of picking a snapshot.
    action_noise: std of Gaussian noise added to the collecting policy's actions, in normalized units.
    stochastic: sample the collecting policies' actions instead of taking their mode.
    num_envs: sub-environments stepped together (one batched policy call per step).
    run_seed: which seed's exports to use in a run directory trained with several seeds (`seed{i}/`).
    """
    if recipe not in RECIPES:
        raise UnderstudyError(f"Unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}.")
    if recipe == "medium-replay" and steps is not None:
        raise UnderstudyError("The medium-replay recipe takes every transition the replay buffer held at the medium "
                              "snapshot, so it has no size to choose: drop --steps.")
    if recipe != "medium-replay" and (steps is None or steps < 1):
        raise UnderstudyError(f"The {recipe} recipe needs --steps N (a positive number of environment steps; "
                              "D4RL uses 1000000).")
    sources = find_sources(policy, medium_policy, run_seed=run_seed,
                           need_expert=recipe != "random" or policy is not None)
    expert_act = None
    if sources.expert is not None:  # loaded first: a policy for another env fails before any evaluation
        expert_act = batched_policy(sources.expert, env_id, seed=seed, stochastic=stochastic)
    refs = reference_returns(env_id, sources.expert, episodes=reference_episodes, seed=seed + 10_000,
                             progress=progress)

    def rollout(act, name: str, at_seed: int) -> Dataset:
        return collect(env_id, act, steps=steps, seed=at_seed, num_envs=num_envs, policy_name=name,
                       action_noise=0.0 if act == "random" else action_noise, progress=progress)

    medium = None
    if recipe in ("medium", "medium-replay", "medium-expert"):
        medium = pick_medium(sources, refs, need_replay=recipe == "medium-replay")
    if recipe == "random":
        ds = rollout("random", "random", seed)
    elif recipe == "expert":
        ds = rollout(expert_act, str(sources.expert), seed)
    elif recipe == "medium-replay":
        ds = replay_dataset(medium.export / REPLAY_FILE, env_id)
    else:
        medium_act = batched_policy(medium.export, env_id, seed=seed, stochastic=stochastic)
        ds = rollout(medium_act, str(medium.export), seed)
        if recipe == "medium-expert":  # the expert's sub-envs get seeds the medium ones did not use
            parts = [ds, rollout(expert_act, str(sources.expert), seed + num_envs)]
            ds = mix_datasets(parts)
            ds.task_id = None  # one task: the source of each part is kept in metadata["sources"]
            ds.metadata.update(policy="medium-expert", spec=parts[0].metadata["spec"], seed=seed, num_envs=num_envs)
    ds.metadata.update(recipe=recipe, ref_min_score=refs.random, references=refs.describe())
    if refs.expert is not None:
        ds.metadata["ref_max_score"] = refs.expert
    if medium is not None:
        ds.metadata["medium"] = medium.describe()
    if recipe != "random":
        ds.metadata["expert_policy"] = str(sources.expert)
    if recipe not in ("random", "medium-replay"):  # the replay buffer's actions are SAC's own, whatever the flag
        ds.metadata["stochastic"] = stochastic
    return ds


def batched_policy(export: Path, env_id: str, *, seed: int, stochastic: bool):
    """A loaded export as `collect` wants it (batch of observations -> env actions), checked against the env."""
    from understudy.envs import make_spec
    from understudy.policy import load_policy

    loaded = load_policy(export, seed=seed)
    spec = make_spec(env_id)
    if loaded.spec.obs_shape != spec.obs_shape or loaded.spec.action_dim != spec.action_dim:
        raise UnderstudyError(
            f"The policy {export} was trained on {loaded.spec.env_id} (observation {loaded.spec.obs_shape}, "
            f"{loaded.spec.action_dim} action dims) but {env_id} has observation {spec.obs_shape} and "
            f"{spec.action_dim} action dims. Collect with --env {loaded.spec.env_id}, or pass that env's policy.")

    def act(obs):
        return loaded(obs, deterministic=not stochastic)

    return act


# ---------------------------------------------------------------------------------------------------------
# where the policies are
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Sources:
    """The expert export, and the medium candidates: one explicit export, or snapshots to pick from."""

    expert: Optional[Path]
    medium: Optional[Path]  # explicit (medium_policy, or a `medium/` export beside the expert)
    snapshots: tuple[Path, ...]  # snapshot exports (one per step) to pick the medium policy from
    origin: Optional[Path]  # what `policy` pointed at


def _export_in(directory: Path, run_seed: int) -> Optional[Path]:
    """`directory` if it is a policy export, its `seed{run_seed}/` in a multi-seed run, else None."""
    for candidate in (directory, directory / f"seed{run_seed}"):
        if (candidate / "policy.json").is_file():
            return candidate
    return None


def find_sources(policy: Optional[PathLike], medium_policy: Optional[PathLike] = None, *, run_seed: int = 0,
                 need_expert: bool = True) -> Sources:
    """Resolves the expert and the medium candidates from the --policy and --medium-policy paths."""
    medium = None
    if medium_policy is not None:
        medium = _export_in(Path(medium_policy), run_seed)
        if medium is None:
            raise UnderstudyError(f"--medium-policy {medium_policy} is not a policy export (no policy.json there). "
                                  "Pass a directory holding policy.json and policy.safetensors, e.g. a run's "
                                  "snapshots/step_N/.")
    if policy is None:
        if need_expert:
            raise UnderstudyError("This recipe needs the expert: pass --policy with a policy export (e.g. "
                                  "experts/Hopper-v5) or a training run directory (e.g. runs/sac-Hopper-v5-s0).")
        return Sources(expert=None, medium=medium, snapshots=(), origin=None)
    root = Path(policy)
    if not root.is_dir():
        raise UnderstudyError(f"--policy {policy} does not exist. Pass a policy export directory or a training run "
                              "directory.")
    expert = _export_in(root, run_seed) or _export_in(root / "final", run_seed)
    if expert is None:
        raise UnderstudyError(f"--policy {policy} holds no expert: neither a policy export (policy.json) nor a run "
                              "directory with final/policy.json. Pass a policy export or a finished run.")
    medium = medium or _export_in(root / "medium", run_seed)
    snapshots = tuple(e for d in sorted(root.glob("snapshots/step_*")) if (e := _export_in(d, run_seed)))
    return Sources(expert=expert, medium=medium, snapshots=snapshots, origin=root)


@dataclasses.dataclass(frozen=True)
class Medium:
    export: Path
    eval_return: Optional[float]
    target: Optional[float]
    how: str

    def describe(self) -> dict:
        return {"export": str(self.export), "eval_return": self.eval_return, "target": self.target, "how": self.how}


def _recorded_return(export: Path) -> Optional[float]:
    value = json.loads((export / "policy.json").read_text()).get("metadata", {}).get("eval_return")
    return None if value is None else float(value)


def pick_medium(sources: Sources, refs: "References", *, need_replay: bool = False) -> Medium:
    """The medium policy: the explicit one, else the snapshot whose recorded evaluation return is closest to
    one third of the way from the random to the expert return (the earliest on ties)."""
    if sources.medium is not None:
        if need_replay and not (sources.medium / REPLAY_FILE).is_file():
            raise UnderstudyError(f"The medium-replay recipe needs {sources.medium / REPLAY_FILE} (the replay buffer "
                                  "at the medium snapshot). Train with `--snapshot-every N --snapshot-replay` and pass "
                                  "the run directory as --policy." + replay_buffer_note(sources.medium))
        return Medium(sources.medium, _recorded_return(sources.medium), None, "given")
    candidates = [(p, _recorded_return(p)) for p in sources.snapshots
                  if not need_replay or (p / REPLAY_FILE).is_file()]
    candidates = [(p, r) for p, r in candidates if r is not None]
    if not candidates:
        what = "snapshots with a replay buffer (replay.safetensors)" if need_replay else "policy snapshots"
        flags = "--snapshot-every N --snapshot-replay" if need_replay else "--snapshot-every N"
        raise UnderstudyError(f"{sources.origin} holds no {what} to pick the medium policy from. Train with "
                              f"`understudy train ... {flags}` and pass that run directory as --policy, or pass "
                              "--medium-policy with a policy export.")
    target = refs.random + (refs.expert - refs.random) / 3.0
    export, value = min(candidates, key=lambda c: abs(c[1] - target))  # min keeps the first (earliest) of ties
    return Medium(export, value, float(target), "snapshot closest to random + (expert - random) / 3")


def has_medium_replay(sources: Sources) -> bool:
    """Whether pick_medium(sources, ..., need_replay=True) finds a replay buffer: the explicit medium export's if
    there is one, else a snapshot's."""
    candidates = [sources.medium] if sources.medium is not None else sources.snapshots
    return any((c / REPLAY_FILE).is_file() for c in candidates)


def replay_buffer_note(medium: Path) -> str:
    """What a shipped expert's expert.json says about its medium snapshot's replay buffer (for one too large for
    git: how to regenerate it), as a sentence to append to an error; '' when it says nothing."""
    record = medium.parent / "expert.json"
    try:
        note = json.loads(record.read_text())["medium"]["replay"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f" {record} says: {note.strip().rstrip('.')}." if isinstance(note, str) and note.strip() else ""


# ---------------------------------------------------------------------------------------------------------
# reference returns
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class References:
    random: float
    expert: Optional[float]
    random_source: str
    expert_source: Optional[str]

    def describe(self) -> dict:
        return {"random": {"return": self.random, "source": self.random_source},
                "expert": None if self.expert is None else {"return": self.expert, "source": self.expert_source}}


def _reference_json(export: Path) -> dict[str, tuple[float, str]]:
    """Reference returns found in JSON files beside the export (not policy.json): key -> (value, file)."""
    found: dict[str, tuple[float, str]] = {}
    for file in sorted(export.glob("*.json")):
        if file.name == "policy.json":
            continue
        try:
            data = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            continue
        if not isinstance(data, dict):
            continue
        for kind, keys in (("expert", EXPERT_RETURN_KEYS), ("random", RANDOM_RETURN_KEYS)):
            for key in keys:
                value = data.get(key)
                if kind not in found and isinstance(value, (int, float)) and not isinstance(value, bool):
                    found[kind] = (float(value), f"{file} ({key})")
    return found


def reference_returns(env_id: str, expert: Optional[Path], *, episodes: int = 100, seed: int = 10_000,
                      progress: bool = False) -> References:
    """Random and expert mean returns over `episodes` episodes, or as recorded in a JSON beside the expert."""
    from understudy.eval.rollouts import evaluate_policy
    from understudy.policy import load_policy

    recorded = _reference_json(expert) if expert is not None else {}
    if "random" in recorded:
        random, random_source = recorded["random"]
    else:
        episodes_ds = collect(env_id, "random", episodes=episodes, seed=seed, num_envs=16, progress=progress)
        random = float(episodes_ds.episode_returns().mean())
        random_source = f"uniform random actions, {episodes} episodes"
    expert_value, expert_source = recorded.get("expert", (None, None))
    if expert is not None and expert_value is None:
        result = evaluate_policy(load_policy(expert), env_id, episodes=episodes, seed=seed)
        expert_value, expert_source = result["mean"], f"{expert}, {episodes} deterministic episodes"
    return References(random, expert_value, random_source, expert_source)


# ---------------------------------------------------------------------------------------------------------
# replay buffer snapshots (medium-replay)
# ---------------------------------------------------------------------------------------------------------
def save_replay_snapshot(directory: PathLike, buffer: Any, *, step: int, spec: EnvSpec) -> Path:
    """Writes the filled part of one seed's replay buffer, oldest transition first, to directory/replay.safetensors.

    buffer: a `ReplayBuffer` (understudy.data.replay) without a seed axis. Actions are stored as the
    buffer holds them (normalized to [-1, 1] for continuous actions).
    """
    import jax
    from safetensors.numpy import save_file

    host = jax.device_get(buffer)
    size, ptr, capacity = int(host.size), int(host.ptr), int(host.rewards.shape[0])
    order = np.arange(size) if size < capacity else (np.arange(capacity) + ptr) % capacity
    tensors = {name: np.ascontiguousarray(np.asarray(getattr(host, name))[order]) for name in REPLAY_COLUMNS}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{REPLAY_FILE}.writing"
    save_file(tensors, str(tmp), metadata={"format": REPLAY_FORMAT, "version": "1", "step": str(step),
                                           "capacity": str(capacity), "wrapped": str(size == capacity and ptr != 0),
                                           "spec": spec.to_json()})
    os.replace(tmp, directory / REPLAY_FILE)
    return directory / REPLAY_FILE


def load_replay_snapshot(file: PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(columns, metadata) of a replay snapshot; errors name the file and the fix."""
    from safetensors import SafetensorError, safe_open

    file = Path(file)
    try:
        with safe_open(str(file), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            columns = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UnderstudyError(f"Cannot read the replay snapshot {file} ({e}); it is missing, truncated or corrupt. "
                              "Re-run the training with --snapshot-every N --snapshot-replay.") from None
    missing = [c for c in REPLAY_COLUMNS if c not in columns]
    if meta.get("format") != REPLAY_FORMAT or missing:
        raise UnderstudyError(f"{file} is not an understudy replay snapshot (format {meta.get('format')!r}, missing "
                              f"{missing}). Re-run the training with --snapshot-every N --snapshot-replay.")
    return columns, meta


def replay_to_dataset(columns: dict[str, np.ndarray], spec: EnvSpec, metadata: Optional[dict] = None) -> Dataset:
    """Transitions in insertion order -> a Dataset of episodes.

    An episode ends at step t when terminations[t] is set or next_observations[t] != observations[t + 1]
    (the env was reset); an end without termination is a truncation, and so is the end of the data.
    Normalized actions are mapped back to the env's bounds.
    """
    from understudy.policy import to_env_action

    obs, next_obs = columns["observations"], columns["next_observations"]
    n = obs.shape[0]
    if n == 0:
        raise UnderstudyError("The replay snapshot holds no transitions; snapshot later in training.")
    terminations = np.asarray(columns["terminations"]).reshape(n) > 0.5
    reset = np.any((next_obs[:-1] != obs[1:]).reshape(n - 1, -1), axis=1)
    ends = terminations | np.append(reset, True)
    actions = np.asarray(columns["actions"])
    if not spec.discrete:
        actions = to_env_action(actions.astype(np.float32), spec).astype(np.float32)
    return Dataset(observations=obs, next_observations=next_obs, actions=actions, rewards=columns["rewards"],
                   terminations=terminations, truncations=ends & ~terminations,
                   episode_starts=np.concatenate([[0], np.flatnonzero(ends[:-1]) + 1]),
                   task_id=None if spec.task_id is None else np.full(n, spec.task_id, np.int64),
                   metadata={"env_id": spec.env_id, "spec": spec.to_dict(), **(metadata or {})})


def replay_dataset(file: PathLike, env_id: Optional[str] = None) -> Dataset:
    """The medium-replay dataset from a replay snapshot file."""
    columns, meta = load_replay_snapshot(file)
    spec = EnvSpec.from_json(meta["spec"])
    if env_id is not None and spec.env_id != env_id:
        from understudy.envs import resolve

        if resolve(env_id)[1] != spec.env_id:
            raise UnderstudyError(f"The replay snapshot {file} was recorded on {spec.env_id}, not {env_id}; pass "
                                  f"--env {spec.env_id} or another run's directory.")
    return replay_to_dataset(columns, spec, {"policy": "replay", "replay_file": str(file),
                                             "replay_step": int(meta["step"]),
                                             "replay_wrapped": meta.get("wrapped") == "True"})
