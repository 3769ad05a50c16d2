"""The study runner: a study is a grid of runs (methods x datasets x seeds), each one `understudy` command
writing its own run directory. Finished runs (an eval.json) are found and not redone; a run killed midway
resumes from its checkpoints; so a killed study simply runs again. Each run is one process.

Dispatch: local processes (`workers` at a time) by default; through Ray with `ray_address` ("auto", or a
cluster's address; needs `pip install 'understudy[ray]'`), where every run is a Ray task that starts the
same command on whichever node has a free CPU (the study directory must be on a shared filesystem).
Reports are rebuilt from the run directories alone.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from understudy.types import UnderstudyError


@dataclasses.dataclass(frozen=True)
class Run:
    """One cell of a study's grid."""

    name: str
    """Directory name under the study's runs/ (unique within the study)."""
    args: tuple[str, ...]
    """`understudy` arguments (e.g. ("train", "bc", "--dataset", "...")) without --out/--resume/--overwrite."""


def run_dir(study_dir: Path, run: Run, runs_dir: str = "runs") -> Path:
    return Path(study_dir) / runs_dir / run.name


def is_finished(directory: Path) -> bool:
    return (directory / "eval.json").exists()


def command_for(run: Run, directory: Path) -> list[str]:
    """The full command line: resumes when the run left checkpoints, else starts it afresh."""
    checkpoints = directory / "checkpoints"
    resume = checkpoints.is_dir() and any(checkpoints.iterdir())
    return [sys.executable, "-m", "understudy.cli", *run.args, "--out", str(directory),
            "--resume" if resume else "--overwrite"]


def run_grid(runs: list[Run], study_dir: str | Path, *, workers: int = 2, ray_address: Optional[str] = None,
             runs_dir: str = "runs", log: Callable[[str], None] = print) -> dict[str, str]:
    """Runs every unfinished run into study_dir/runs_dir/<name>; logs go to study_dir/logs/<name>.log.
    Returns name -> "done" | "skipped" | "failed"; raises when any failed."""
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise UnderstudyError(f"Study run names must be unique; got duplicates in {names}.")
    study_dir = Path(study_dir)
    status = {r.name: "skipped" for r in runs if is_finished(run_dir(study_dir, r, runs_dir))}
    todo = [r for r in runs if r.name not in status]
    if status:
        log(f"{len(status)} finished run(s) found, not redone")
    if todo:
        log(f"running {len(todo)} run(s), " + (f"through Ray at {ray_address}" if ray_address
                                               else f"{workers} at a time on this machine"))
        commands = {r.name: command_for(r, run_dir(study_dir, r, runs_dir)) for r in todo}
        logs = study_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        results = (_run_ray(commands, logs, ray_address) if ray_address else _run_local(commands, logs, workers, log))
        status.update(results)
    failed = [n for n, s in status.items() if s == "failed"]
    if failed:
        raise UnderstudyError(f"{len(failed)} run(s) failed: {', '.join(failed)}; see {study_dir / 'logs'}/<name>.log. "
                              "Running the study again redoes only the unfinished runs.")
    return status


def _run_local(commands: dict[str, list[str]], logs: Path, workers: int, log) -> dict[str, str]:
    pending, running, status = list(commands.items()), {}, {}
    while pending or running:
        while pending and len(running) < max(1, workers):
            name, cmd = pending.pop(0)
            handle = open(logs / f"{name}.log", "w")
            running[name] = (subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT), handle, time.time())
        time.sleep(0.5)
        for name, (proc, handle, started) in list(running.items()):
            if proc.poll() is None:
                continue
            handle.close()
            del running[name]
            status[name] = "done" if proc.returncode == 0 else "failed"
            log(f"{name}: {status[name]} in {time.time() - started:.0f} s"
                + ("" if proc.returncode == 0 else f" (exit {proc.returncode})"))
    return status


def _run_ray(commands: dict[str, list[str]], logs: Path, address: str) -> dict[str, str]:
    try:
        import ray
    except ImportError:
        raise UnderstudyError("--ray-address needs Ray: pip install 'understudy[ray]'.") from None
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)

    @ray.remote(num_cpus=1)
    def execute(cmd: list[str], log_path: str) -> int:
        with open(log_path, "w") as handle:
            return subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT).returncode

    futures = {name: execute.remote(cmd, str(logs / f"{name}.log")) for name, cmd in commands.items()}
    return {name: "done" if ray.get(f) == 0 else "failed" for name, f in futures.items()}
