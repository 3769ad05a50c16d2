"""Datasets on disk: the Minari format (read and write) and D4RL-style HDF5 files (read).

A Minari dataset directory looks like this (minari 0.5, HDF5 backend):

    <dir>/data/metadata.json    total_episodes, total_steps, data_format, observation_space and
                                action_space (JSON strings), dataset_id, minari_version, ...
    <dir>/data/main_data.hdf5   one group per episode, `episode_<i>`, holding observations (T+1 rows;
                                a group of arrays for Dict spaces), actions, rewards, terminations,
                                truncations (T rows); attrs id, total_steps.

`minari.load_dataset(ID)` opens `$MINARI_DATASETS_PATH/ID/data`, so a dataset saved to
`$MINARI_DATASETS_PATH/understudy/name-v0` is dataset id `understudy/name-v0` for the minari package.
Our own metadata (env spec, collecting policy, ...) rides along under the `understudy` key of
metadata.json; per-episode task ids and instructions are episode attributes.

Reading never modifies a file (HDF5 opened read-only) and never unpickles anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Optional, Union

import h5py
import numpy as np

from understudy.data.episodes import Dataset, map_obs
from understudy.data.validate import validate_dataset
from understudy.types import ArraySpec, EnvSpec, UnderstudyError

PathLike = Union[str, os.PathLike]
METADATA_FILE = "metadata.json"
MAIN_FILE = "main_data.hdf5"
D4RL_SUFFIXES = (".hdf5", ".h5")
# minari's dataset id grammar: (namespace/)name-v(version); the version is required to load.
DATASET_ID_RE = re.compile(r"^(?:[-_\w][-_\w/]*[-_\w]+/)?[-_\w]+?-v\d+$")
FIX_DAMAGED = ("The file is damaged or incomplete: check it was fully copied (compare its size or checksum with "
               "the original), or re-collect it with `understudy collect --env ENV_ID --policy ... --out PATH`")


# ---------------------------------------------------------------------------------------------------------
# spaces: our ArraySpec/EnvSpec <-> minari's JSON space descriptions
# ---------------------------------------------------------------------------------------------------------
def _bounds(values, shape: tuple, dtype: np.dtype, default: float) -> list:
    if values is None:
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            default = info.min if default < 0 else info.max
        return np.full(shape, default, dtype).tolist()
    flat = np.asarray(values, np.float64).reshape(-1)
    return np.broadcast_to(flat if flat.size != 1 else flat[0], (int(np.prod(shape)),)).reshape(shape).astype(
        dtype).tolist()


def _box_json(spec: ArraySpec, dtype: np.dtype) -> dict:
    shape = tuple(spec.shape)
    return {"type": "Box", "dtype": str(dtype), "shape": list(shape),
            "low": _bounds(spec.low, shape, dtype, -np.inf), "high": _bounds(spec.high, shape, dtype, np.inf)}


def _spaces_json(ds: Dataset, spec: EnvSpec) -> tuple[dict, dict]:
    """minari observation_space / action_space descriptions, with the dtypes the data is stored in."""
    if isinstance(spec.observation, dict):
        obs = {"type": "Dict", "subspaces": {k: _box_json(v, ds.observations[k].dtype)
                                              for k, v in spec.observation.items()}}
    else:
        obs = _box_json(spec.observation, ds.observations.dtype)
    if spec.discrete:
        act = {"type": "Discrete", "dtype": "int64", "start": 0, "n": int(spec.num_actions)}
    else:
        act = _box_json(spec.action, ds.actions.dtype)
    return obs, act


def _array_spec_from_json(space: dict, where: str) -> ArraySpec:
    if space["type"] != "Box":
        raise UnderstudyError(f"{where}: space type {space['type']} is not supported (Box, Discrete and Dict of "
                              "those are). Convert the dataset to array observations and actions.")
    shape = tuple(space["shape"])
    dtype = np.dtype(space["dtype"])
    low = np.asarray(space["low"], np.float64).reshape(-1)
    high = np.asarray(space["high"], np.float64).reshape(-1)
    bounded = np.isfinite(low).any() or np.isfinite(high).any()
    return ArraySpec(shape=shape, dtype="float32" if dtype.kind == "f" else dtype.name,
                     low=tuple(low.tolist()) if bounded else None, high=tuple(high.tolist()) if bounded else None)


def spec_from_minari(meta: dict, where: str) -> tuple[EnvSpec, list[str]]:
    """EnvSpec for a dataset written by the minari package; also the names of text (instruction) fields."""
    obs_space = json.loads(meta["observation_space"])
    act_space = json.loads(meta["action_space"])
    text_fields: list[str] = []
    if obs_space["type"] == "Dict":
        observation = {}
        for k, sub in obs_space["subspaces"].items():
            if sub["type"] == "Text":
                text_fields.append(k)  # e.g. BabyAI "mission": kept as the episode's instruction
            elif sub["type"] == "Discrete" and int(sub.get("start", 0)) == 0:
                observation[k] = ArraySpec(shape=(), dtype="int64", low=(0.0,), high=(float(sub["n"] - 1),))
            else:
                observation[k] = _array_spec_from_json(sub, f"{where} observation `{k}`")
    else:
        observation = _array_spec_from_json(obs_space, f"{where} observation")
    num_actions = None
    if act_space["type"] == "Discrete":
        if int(act_space.get("start", 0)) != 0:
            raise UnderstudyError(f"{where}: Discrete action spaces with start != 0 are not supported.")
        num_actions = int(act_space["n"])
        action = ArraySpec(shape=(), dtype="int64")
    else:
        action = _array_spec_from_json(act_space, f"{where} action")
    env_id, max_steps = None, None
    if meta.get("env_spec"):
        gym_spec = json.loads(meta["env_spec"])
        env_id, max_steps = gym_spec.get("id"), gym_spec.get("max_episode_steps")
    spec = EnvSpec(env_id=env_id or "", family="gymnasium", observation=observation, action=action,
                   num_actions=num_actions, max_episode_steps=max_steps)
    return spec, text_fields


def spec_from_data(ds: Dataset) -> EnvSpec:
    """An unbounded spec describing the data itself, for datasets built without one."""
    def leaf(x):
        return ArraySpec(shape=tuple(x.shape[1:]), dtype=x.dtype.name)
    discrete = ds.actions.dtype.kind in "iu"
    return EnvSpec(env_id=ds.metadata.get("env_id") or "", family="gymnasium",
                   observation=map_obs(leaf, ds.observations), action=leaf(ds.actions),
                   num_actions=int(ds.actions.max()) + 1 if discrete and ds.num_steps else None)


def _spec_of(ds: Dataset) -> EnvSpec:
    spec = ds.metadata.get("spec")
    if spec is None:
        return spec_from_data(ds)
    return EnvSpec.from_dict(spec) if isinstance(spec, dict) else spec


def _to_json(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, EnvSpec):
        return obj.to_dict()
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON serialisable")


# ---------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------
def _minari_root() -> Path:
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def _default_dataset_id(path: Path) -> str:
    """The minari id: the path under MINARI_DATASETS_PATH when it is one, else understudy/<name>-v0."""
    with contextlib.suppress(ValueError):
        rel = path.resolve().relative_to(_minari_root().resolve()).as_posix()
        if DATASET_ID_RE.match(rel):
            return rel
    name = re.sub(r"[^-\w]", "_", path.name).strip("-_") or "dataset"
    return f"understudy/{name}" + ("" if re.search(r"-v\d+$", name) else "-v0")


def _gym_env_spec_json(env_id: Optional[str], options: dict) -> Optional[str]:
    """gymnasium's EnvSpec JSON, so `MinariDataset.recover_environment()` works for registered ids."""
    if not env_id or options:
        return None
    try:
        import gymnasium

        return gymnasium.spec(env_id).to_json()
    except Exception:  # not a registered gymnasium id (or not serialisable): minari simply lacks it
        return None


def _is_dataset_path(p: Path) -> bool:
    return (p.is_dir() and ((p / "data" / METADATA_FILE).exists() or (p / METADATA_FILE).exists())) or \
        (p.is_file() and p.suffix in D4RL_SUFFIXES)


def save_dataset(ds: Dataset, path: PathLike, *, overwrite: bool = False, dataset_id: Optional[str] = None) -> Path:
    """Write `ds` as a Minari dataset directory at `path` (creating `path/data/...`). Returns the path.

    The data is written to a temporary sibling directory and moved into place at the end, so an
    interrupted save never leaves a half-written dataset behind.
    """
    path = Path(path).expanduser()
    validate_dataset(ds, f"The dataset being saved to {path}")
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        if not overwrite:
            raise UnderstudyError(f"{path} already exists. Pass --overwrite (overwrite=True) to replace it, or "
                                  "choose another output path.")
        if not _is_dataset_path(path):
            raise UnderstudyError(f"{path} exists and does not look like a dataset, so it is not deleted even with "
                                  "overwrite; remove it yourself or choose another output path.")
    dataset_id = dataset_id or _default_dataset_id(path)
    if not DATASET_ID_RE.match(dataset_id):
        raise UnderstudyError(f"Dataset id {dataset_id!r} is not a valid minari id; use (namespace/)name-v<N>, "
                              "e.g. understudy/hopper-expert-v0.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.writing-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "data").mkdir(parents=True)
        _write_hdf5(ds, tmp / "data" / MAIN_FILE)
        _write_metadata(ds, tmp / "data", dataset_id)
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _write_array(group: h5py.Group, name: str, data) -> None:
    if isinstance(data, dict):
        sub = group.create_group(name)
        for k, v in data.items():
            _write_array(sub, k, v)
        return
    data = np.asarray(data)
    # One chunk per array with a fletcher32 checksum: flipped bytes become an error on read, not silent garbage.
    checked = dict(chunks=data.shape, fletcher32=True, maxshape=(None,) + data.shape[1:]) if data.size else {}
    group.create_dataset(name, data=data, **checked)


def _write_hdf5(ds: Dataset, file: Path) -> None:
    # HDF5 1.10 object formats: checksummed metadata and compact single-chunk datasets (~4x smaller files
    # than the 1.8 defaults for short episodes); readable by any HDF5 >= 1.10 (2017), minari included.
    with h5py.File(file, "w", libver=("v110", "v110")) as f:
        for i in range(ds.num_episodes):
            ep = ds.episode(i)
            g = f.create_group(f"episode_{i}")
            g.attrs["id"] = i
            g.attrs["total_steps"] = len(ep["rewards"])
            if "task_id" in ep:
                g.attrs["task_id"] = ep["task_id"]
            if "instruction" in ep:
                g.attrs["instruction"] = ep["instruction"]
            for key in ("observations", "actions", "rewards", "terminations", "truncations"):
                _write_array(g, key, ep[key])


def _write_metadata(ds: Dataset, data_dir: Path, dataset_id: str) -> None:
    spec = _spec_of(ds)
    obs_space, act_space = _spaces_json(ds, spec)
    ours = dict(ds.metadata)
    ours["spec"] = spec.to_dict()
    for key in ("source", "dataset_id"):  # where it was loaded from: not a property of the data
        ours.pop(key, None)
    meta = {
        "dataset_id": dataset_id,
        "total_episodes": ds.num_episodes,
        "total_steps": ds.num_steps,
        "data_format": "hdf5",
        "jpeg_encoding": False,  # keep images lossless
        "observation_space": json.dumps(obs_space),
        "action_space": json.dumps(act_space),
        "minari_version": _minari_version(),
        "algorithm_name": str(ds.metadata.get("policy") or "unknown"),
        "description": f"Written by understudy; env {spec.env_id or 'unknown'}.",
        "understudy": {"format": 1, "metadata": ours, "episode_attrs": [
            name for name, present in (("task_id", ds.task_id is not None), ("instruction", ds.instructions is not None))
            if present]},
    }
    gym_spec = _gym_env_spec_json(spec.env_id, spec.options)
    if gym_spec:
        meta["env_spec"] = gym_spec
    for key in ("ref_min_score", "ref_max_score"):
        if ds.metadata.get(key) is not None:
            meta[key] = float(ds.metadata[key])
    meta["dataset_size"] = round((data_dir / MAIN_FILE).stat().st_size / 1e6, 1)
    (data_dir / METADATA_FILE).write_text(json.dumps(meta, default=_to_json))


def _minari_version() -> str:
    try:
        return importlib_metadata.version("minari")
    except importlib_metadata.PackageNotFoundError:
        return "0.5.4"


# ---------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _reading(file: Path, field: Optional[str]):
    """Turn low-level read failures into one message naming the file, the field (None: opening) and the fix."""
    try:
        yield
    except UnderstudyError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError) as e:
        what = f"Cannot open {file}" if field is None else f"Cannot read `{field}` from {file}"
        raise UnderstudyError(f"{what}: {e}. {FIX_DAMAGED}.") from None


def locate_dataset(path: PathLike) -> tuple[str, Path]:
    """("minari", data dir) or ("d4rl", file) for a path, or for a minari dataset id."""
    p = Path(path).expanduser()
    if p.is_dir():
        for data_dir in (p / "data", p):
            if (data_dir / METADATA_FILE).exists():
                return "minari", data_dir
        raise UnderstudyError(f"{p} is a directory but holds no dataset (expected {p}/data/{METADATA_FILE} and "
                              f"{MAIN_FILE}). Point at a dataset written by `understudy collect` or minari.")
    if p.is_file():
        if p.name == MAIN_FILE and (p.parent / METADATA_FILE).exists():
            return "minari", p.parent
        if p.suffix in D4RL_SUFFIXES:
            return "d4rl", p
        raise UnderstudyError(f"{p} is not a dataset: expected a Minari dataset directory or a D4RL-style "
                              f"{'/'.join(D4RL_SUFFIXES)} file.")
    tried = [str(p)]
    if DATASET_ID_RE.match(str(path)):
        data_dir = _minari_root() / str(path) / "data"
        tried.append(str(data_dir))
        if (data_dir / METADATA_FILE).exists():
            return "minari", data_dir
    raise UnderstudyError(f"No dataset found at {' or '.join(tried)}. Give a dataset directory, a .hdf5 file, or a "
                          "minari dataset id present under $MINARI_DATASETS_PATH (default ~/.minari/datasets); "
                          "create one with `understudy collect --env ENV_ID --policy ... --out PATH`.")


def load_dataset(path: PathLike) -> Dataset:
    """Load a Minari dataset directory (ours or the minari package's), a minari dataset id, or a D4RL-style
    HDF5 file, and validate it."""
    kind, where = locate_dataset(path)
    ds = _load_minari(where) if kind == "minari" else _load_d4rl(where)
    validate_dataset(ds, str(where / MAIN_FILE) if kind == "minari" else str(where))
    return ds


def _read_metadata(data_dir: Path) -> dict:
    file = data_dir / METADATA_FILE
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise UnderstudyError(f"Cannot read {file}: {e}. {FIX_DAMAGED}.") from None
    for key in ("total_episodes", "observation_space", "action_space"):
        if key not in meta:
            raise UnderstudyError(f"{file} lacks the `{key}` entry every Minari dataset has. {FIX_DAMAGED}.")
    if meta.get("data_format", "hdf5") != "hdf5":
        raise UnderstudyError(f"{file}: data_format {meta['data_format']!r} is not supported; understudy reads "
                              "Minari's HDF5 format. Convert it with minari (data_format='hdf5').")
    return meta


def _read_array(f: h5py.File, file: Path, field: str, decode_jpeg: bool = False) -> np.ndarray:
    """Read the array at `field` (an HDF5 path) into memory.

    Numeric arrays go through h5py's low-level API: a dataset with thousands of short episodes means
    tens of thousands of reads, and the high-level wrapper costs about as much again per read.
    """
    with _reading(file, field):
        d = h5py.h5d.open(f.id, field.encode())
        if d.dtype.kind in "biuf" and not decode_jpeg:
            out = np.empty(d.shape, d.dtype)
            if out.size:
                d.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
            return out
        data = h5py.Dataset(d)[()]  # strings, or minari's JPEG-encoded images (variable-length bytes)
        if decode_jpeg:
            import io

            from PIL import Image

            data = np.stack([np.asarray(Image.open(io.BytesIO(bytes(b)))) for b in data])
        return data


def _is_image(space: dict) -> bool:
    """minari JPEG-encodes these (when jpeg_encoding is on): uint8 Box, 2-3 dims, at least 32x32."""
    return (space.get("type") == "Box" and len(space["shape"]) in (2, 3) and space["shape"][0] >= 32
            and space["shape"][1] >= 32 and space["dtype"] == "uint8")


def _load_minari(data_dir: Path) -> Dataset:
    meta = _read_metadata(data_dir)
    ours = meta.get("understudy") or {}
    file = data_dir / MAIN_FILE
    foreign_spec, text_fields = spec_from_minari(meta, str(data_dir / METADATA_FILE))
    obs_space = json.loads(meta["observation_space"])
    jpeg = bool(meta.get("jpeg_encoding", True))
    episode_attrs = ours.get("episode_attrs", [])  # task_id / instruction, only in datasets we wrote
    total = int(meta["total_episodes"])

    with _reading(file, None):
        f = h5py.File(file, "r")
    with f:
        with _reading(file, "the episode list"):
            found = sum(1 for k in f.keys() if k.startswith("episode_"))
            obs_keys = list(f["episode_0/observations"].keys()) if obs_space["type"] == "Dict" and total else []
        if found != total:
            raise UnderstudyError(f"{file} holds {found} episodes but {data_dir / METADATA_FILE} says {total}: the "
                                  f"dataset was not fully written. {FIX_DAMAGED}.")
        episodes = []
        for i in range(total):
            name = f"episode_{i}"
            ep: dict[str, Any] = {}
            if obs_space["type"] == "Dict":
                ep["observations"] = {}
                for k in obs_keys:
                    sub_space = obs_space["subspaces"].get(k, {})
                    leaf = _read_array(f, file, f"{name}/observations/{k}", jpeg and _is_image(sub_space))
                    if k in text_fields:  # e.g. BabyAI's mission: one instruction per episode
                        ep["instruction"] = leaf[0].decode("utf-8") if isinstance(leaf[0], bytes) else str(leaf[0])
                    else:
                        ep["observations"][k] = leaf
            else:
                ep["observations"] = _read_array(f, file, f"{name}/observations", jpeg and _is_image(obs_space))
            for key in ("actions", "rewards", "terminations", "truncations"):
                ep[key] = _read_array(f, file, f"{name}/{key}")
            if episode_attrs:
                with _reading(file, f"{name} attributes"):
                    attrs = f[name].attrs
                    if "task_id" in episode_attrs:
                        ep["task_id"] = int(attrs["task_id"])
                    if "instruction" in episode_attrs:
                        ep["instruction"] = str(attrs["instruction"])
            _check_episode(ep, file, name)
            if len(ep["rewards"]):
                episodes.append(ep)
    if not episodes:
        raise UnderstudyError(f"{file} holds no steps. Collect data with `understudy collect ... --out PATH`.")

    if "metadata" in ours:
        metadata = dict(ours["metadata"])
    else:
        metadata = {"env_id": foreign_spec.env_id or None, "spec": foreign_spec.to_dict(),
                    "policy": meta.get("algorithm_name"), "dataset_id": meta.get("dataset_id"),
                    "ref_min_score": meta.get("ref_min_score"), "ref_max_score": meta.get("ref_max_score")}
    metadata["source"] = str(data_dir.parent if data_dir.name == "data" else data_dir)
    ds = Dataset.from_episodes(episodes, metadata)
    steps = meta.get("total_steps")
    if steps is not None and int(steps) != ds.num_steps:
        raise UnderstudyError(f"{file} holds {ds.num_steps} steps but {data_dir / METADATA_FILE} says {steps}. "
                              f"{FIX_DAMAGED}.")
    return ds


def _check_episode(ep: dict, file: Path, name: str) -> None:
    t = len(ep["rewards"])
    obs = ep["observations"]
    for field, x in ([(f"observations/{k}", v) for k, v in obs.items()] if isinstance(obs, dict)
                     else [("observations", obs)]):
        if len(x) != t + 1:
            raise UnderstudyError(f"{file}: `{name}/{field}` has {len(x)} rows for {t} steps (Minari stores T+1 "
                                  f"observations per episode). {FIX_DAMAGED}.")
    for key in ("actions", "terminations", "truncations"):
        if len(ep[key]) != t:
            raise UnderstudyError(f"{file}: `{name}/{key}` has {len(ep[key])} rows but `{name}/rewards` has {t}. "
                                  f"{FIX_DAMAGED}.")


def _load_d4rl(file: Path) -> Dataset:
    """D4RL layout: flat observations, actions, rewards, terminals, timeouts [, next_observations].

    Episodes end at terminals | timeouts (and at the end of the file). Without next_observations the
    successor of row i is row i+1 of the same episode; a timed-out (or unfinished) episode's last row has
    no successor and is dropped, its new last row marked truncated. A terminal row keeps its own
    observation as a placeholder successor: terminal transitions never bootstrap from it.
    """
    with _reading(file, None):
        f = h5py.File(file, "r")
    with f:
        for key in ("observations", "actions", "rewards", "terminals"):
            if key not in f:
                raise UnderstudyError(f"{file} has no `{key}` array, so it is not a D4RL-style dataset (needs "
                                      "observations, actions, rewards, terminals, timeouts).")
        cols = {key: _read_array(f, file, key) for key in
                ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations") if key in f}
        env_id = f.attrs.get("env_id", f.attrs.get("env_name"))
    n = len(cols["rewards"])
    for key, x in cols.items():
        if len(x) != n:
            raise UnderstudyError(f"{file}: `{key}` has {len(x)} rows but `rewards` has {n}. {FIX_DAMAGED}.")
    if n == 0:
        raise UnderstudyError(f"{file} holds no steps.")
    obs = cols["observations"]
    term = np.asarray(cols["terminals"]).astype(bool).reshape(-1)
    timeout = np.asarray(cols.get("timeouts", np.zeros(n))).astype(bool).reshape(-1) & ~term
    end = term | timeout
    end[-1] = True
    episode = np.concatenate([[0], np.cumsum(end)[:-1]])  # episode number of each row
    if "next_observations" in cols:
        next_obs = cols["next_observations"]
        keep = np.ones(n, bool)
    else:
        next_obs = np.empty_like(obs)
        next_obs[:-1] = obs[1:]
        next_obs[term] = obs[term]
        keep = ~(end & ~term)  # rows whose successor is another episode's first observation
    rows = np.nonzero(keep)[0]
    if rows.size == 0:
        raise UnderstudyError(f"{file}: no transition has a successor observation; every episode is one step long.")
    ep_of = episode[rows]
    last = np.append(ep_of[1:] != ep_of[:-1], True)
    first = np.append(True, ep_of[1:] != ep_of[:-1])
    terminations = term[rows] & last
    actions = cols["actions"][rows]
    discrete = actions.dtype.kind in "iu"
    action_spec = ArraySpec(shape=tuple(actions.shape[1:]), dtype="int64" if discrete else "float32")
    spec = EnvSpec(env_id=str(env_id or ""), family="gymnasium",
                   observation=ArraySpec(shape=tuple(obs.shape[1:]), dtype="float32"), action=action_spec,
                   num_actions=int(actions.max()) + 1 if discrete else None)
    return Dataset(observations=obs[rows], next_observations=next_obs[rows], actions=actions,
                   rewards=cols["rewards"][rows], terminations=terminations, truncations=last & ~terminations,
                   episode_starts=np.nonzero(first)[0],
                   metadata={"env_id": str(env_id) if env_id else None, "spec": spec.to_dict(), "policy": None,
                             "source": str(file), "format": "d4rl"})
