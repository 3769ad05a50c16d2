"""One process per run directory: an advisory lock file, `<run dir>/.lock`, held while the process lives.

Two processes writing one run directory corrupt it: a study restarted while its old runs still train would
`--resume` them a second time, or `--overwrite` (delete) a run that has no checkpoint yet. `acquire` takes an
exclusive `flock` on the lock file and refuses with a clear error when another process holds it. A run releases
its lock when it finishes; the operating system drops it when its holder exits, however it exits, so a killed run
never leaves a stale lock.

Locks are re-entrant within a process (sequential runs in one notebook or test session reuse them). A process
keeps the newest `MAX_HELD` locks and releases older ones, so a sweep over many directories in one process
never runs out of file descriptors; the runs it is still writing are always among the newest. Where `fcntl`
does not exist (Windows) runs are not locked.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import IO

from understudy.types import UnderstudyError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs go unlocked
    fcntl = None

LOCK_FILE = ".lock"
MAX_HELD = 32
_held: "OrderedDict[str, IO]" = OrderedDict()


def _key(run_dir: Path) -> str:
    return str(Path(run_dir).resolve())


def acquire(run_dir: Path) -> None:
    """Lock `run_dir` (which must exist) for this process, or raise UnderstudyError naming the holder's pid."""
    if fcntl is None:
        return
    key = _key(run_dir)
    if key in _held:
        _held.move_to_end(key)
        return
    handle = open(Path(run_dir) / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UnderstudyError(
            f"Run directory {run_dir} is in use by another process (pid {holder}). Two processes writing one run "
            "would corrupt it. Wait for that run to finish or stop it, then --resume; or choose another --out. (If that "
            "process is a Python session whose run stopped with an error, call "
            "understudy.train.run_lock.release(run_dir) there, or restart it.)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held[key] = handle
    while len(_held) > MAX_HELD:
        _, oldest = _held.popitem(last=False)
        oldest.close()


def release(run_dir: Path) -> None:
    """Give up this process's lock on `run_dir`, if it holds one."""
    handle = _held.pop(_key(run_dir), None)
    if handle is not None:
        handle.close()
