"""Train-state checkpoints (Orbax, resumable) and policy exports (safetensors + JSON).

Nothing here unpickles: checkpoints are Orbax array stores plus JSON, policies are safetensors plus JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from understudy.types import EnvSpec, UnderstudyError

POLICY_FORMAT = "understudy.policy"
POLICY_VERSION = 1


# ----------------------------------------------------------------------------------------------
# Train-state checkpoints
# ----------------------------------------------------------------------------------------------
class TrainCheckpointer:
    """Saves (pytree of arrays, JSON metadata) at a step under `directory`; keeps the newest `max_to_keep`.

    Orbax writes each step atomically (a temporary directory renamed on commit), so a run killed while
    saving leaves the previous checkpoint intact.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False),
        )

    def save(self, step: int, tree: Any, meta: dict) -> None:
        ocp = self._ocp
        tree = jax.tree.map(_storable, tree)
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
                           force=True)
        self._manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore_latest(self, like: Any) -> tuple[int, Any, dict]:
        """Restores the newest readable checkpoint into the structure of `like` (a pytree of arrays).

        A checkpoint that fails to read is reported and skipped in favour of the one before it; it is
        never deleted (the user may want it).
        """
        ocp = self._ocp
        problems = []
        like = jax.tree.map(_storable, like)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        for step in reversed(self.steps()):
            try:
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
                state = restored["state"]
                _check_same_structure(like, state, self.directory / str(step))
                return step, state, dict(restored["meta"])
            except UnderstudyError as e:
                problems.append(str(e))
            except Exception as e:  # orbax/tensorstore raise many kinds on damaged files
                problems.append(f"checkpoint {self.directory / str(step)} is unreadable ({type(e).__name__}: "
                                f"{_first_line(e)})")
        if not problems:
            raise UnderstudyError(f"No checkpoint to resume from in {self.directory}. Start the run without --resume "
                                  "(add --overwrite to replace the existing run directory).")
        raise UnderstudyError(" ".join(problems) + ". No readable checkpoint is left, so the run cannot resume: "
                              "start it again with --overwrite (the damaged files were left untouched).")

    def close(self) -> None:
        self._manager.close()


def _storable(x):
    """Typed PRNG keys cannot be stored as-is; raw uint32 key data can."""
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(x)
    return x


def _check_same_structure(like, restored, where) -> None:
    a = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), like)
    b = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), restored)
    if a != b:
        raise UnderstudyError(f"checkpoint {where} does not match this run's configuration (array shapes differ); "
                              "resume with the same flags the run was started with, or start again with --overwrite")


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


# ----------------------------------------------------------------------------------------------
# Policy exports
# ----------------------------------------------------------------------------------------------
def flatten_params(tree: Any, prefix: str = "params") -> dict[str, np.ndarray]:
    """Nested dict of arrays -> {"params/a/b": array}."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        flat["/".join([prefix, *keys])] = np.asarray(leaf)
    return flat


def unflatten_params(flat: dict[str, np.ndarray], prefix: str = "params") -> dict:
    tree: dict = {}
    for name, value in flat.items():
        parts = name.split("/")
        if parts[0] != prefix:
            continue
        node = tree
        for p in parts[1:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return tree


def export_policy(directory: str | os.PathLike, *, head_config: dict, params: Any, spec: EnvSpec,
                  normalizer: dict | None = None, metadata: dict | None = None) -> Path:
    """Writes `policy.safetensors` + `policy.json` into `directory`, replacing an earlier export atomically."""
    tensors = flatten_params(jax.device_get(params))
    if normalizer is not None:
        tensors["normalizer/mean"] = np.asarray(normalizer["mean"], np.float32)
        tensors["normalizer/std"] = np.asarray(normalizer["std"], np.float32)
    description = {"format": POLICY_FORMAT, "version": POLICY_VERSION, "head": head_config, "spec": spec.to_dict(),
                   "normalizer": normalizer is not None, "metadata": metadata or {}}
    return write_export(directory, tensors, description, "policy")


def write_export(directory: str | os.PathLike, tensors: dict[str, np.ndarray], description: dict, stem: str) -> Path:
    """Writes `<stem>.safetensors` + `<stem>.json` into `directory`, replacing an earlier export atomically
    (readers see the old export or the new one, never a mix)."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / f"{stem}.safetensors"))
        (tmp / f"{stem}.json").write_text(json.dumps(description, indent=2, default=_json_default))
        _default_permissions(tmp)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _default_permissions(directory: Path) -> None:
    """mkdtemp makes a private directory; an export should get the usual permissions (umask) instead."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for f in directory.iterdir():
        os.chmod(f, 0o666 & ~umask)


def read_policy_files(directory: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Reads and checks an export; returns (description JSON, flat tensors). Errors name the file and the fix."""
    directory = Path(directory)
    if not directory.exists():
        raise UnderstudyError(f"Policy directory {directory} does not exist. Pass a directory holding policy.json and "
                              "policy.safetensors (a run's best/ or final/, or experts/<ENV_ID>/).")
    if not (directory / "policy.json").exists():
        if (directory / "instruct_policy.json").exists():
            raise UnderstudyError(f"{directory} holds an instruction-following policy (instruct_policy.json), which "
                                  "needs an instruction and a window of observations: evaluate it with "
                                  "`understudy eval DIR --env ID`, or load it with "
                                  "understudy.instruct.policy.InstructPolicy.load.")
        if (directory / "dt_policy.json").exists():
            raise UnderstudyError(f"{directory} holds a Decision Transformer policy (dt_policy.json), which acts from a "
                                  "history of returns-to-go, states and actions: evaluate it with `understudy eval DIR "
                                  "--env ID`, or load it with understudy.algos.dt_policy.DTPolicy.load.")
        seeds = sorted(p.name for p in directory.glob("seed*") if (p / "policy.json").exists())
        hint = (f" It holds one export per seed ({', '.join(seeds)}): pass one of those, e.g. {directory / seeds[0]}."
                if seeds else " Pass a run's best/ or final/ directory.")
        raise UnderstudyError(f"{directory} is not a policy export (no policy.json).{hint}")
    return read_export_files(directory, "policy", POLICY_FORMAT, required=("head", "spec"),
                             redo="re-export the policy from its run (its best/ or final/ directory)")


def read_export_files(directory: Path, stem: str, fmt: str, *, required: tuple[str, ...] = (),
                      redo: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Reads `<stem>.json` (whose 'format' must be `fmt`, with the `required` fields) and `<stem>.safetensors`.
    Damage raises UnderstudyError naming the file and the fix (`redo`); nothing is ever written."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    json_path, weights_path = directory / f"{stem}.json", directory / f"{stem}.safetensors"
    try:
        description = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UnderstudyError(f"{json_path} is not valid JSON ({e}); the export is damaged. Copy it again or "
                              f"{redo}.") from None
    if not isinstance(description, dict) or description.get("format") != fmt:
        raise UnderstudyError(f"{json_path} is not an understudy {stem.replace('_', ' ')} description (field 'format' "
                              f"should be '{fmt}'). Pass a directory written by understudy.")
    for field in required:
        if field not in description:
            raise UnderstudyError(f"{json_path} lacks the field '{field}'; the export is damaged or incomplete: "
                                  f"{redo}.")
    if not weights_path.exists():
        raise UnderstudyError(f"{weights_path} is missing; copy the whole directory ({stem}.json and "
                              f"{stem}.safetensors together).")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UnderstudyError(f"{weights_path} is unreadable ({_first_line(e)}): the file is truncated or corrupt. "
                              f"Copy it again or {redo}.") from None
    return description, tensors


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")
