"""A run directory is written by one process at a time: a second one cannot resume or overwrite it."""

import subprocess
import sys

import pytest

from understudy.train import run_lock
from understudy.train.common import prepare_run_dir
from understudy.types import UnderstudyError

pytestmark = pytest.mark.skipif(run_lock.fcntl is None, reason="no flock on this platform (runs go unlocked)")

CONFIG = {"command": "train", "algo": "bc", "run": {"steps": 10}}
HOLD = "import sys, time; from understudy.train import run_lock; run_lock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(120)"


@pytest.fixture
def run_held_elsewhere(tmp_path):
    """A run directory with a config.json and a checkpoint file, locked by another live process."""
    run_dir = tmp_path / "run"
    prepare_run_dir(str(run_dir), resume=False, overwrite=False, config=CONFIG)
    run_lock.release(run_dir)
    (run_dir / "checkpoint.bin").write_bytes(b"precious")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield run_dir, holder
    holder.kill()
    holder.wait()


def test_a_run_in_use_cannot_be_resumed_or_overwritten_and_keeps_its_files(run_held_elsewhere):
    run_dir, holder = run_held_elsewhere
    for flags in ({"resume": True, "overwrite": False}, {"resume": False, "overwrite": True}):
        with pytest.raises(UnderstudyError, match=f"in use by another process \\(pid {holder.pid}\\)"):
            prepare_run_dir(str(run_dir), config=CONFIG, **flags)
    assert (run_dir / "checkpoint.bin").read_bytes() == b"precious"


def test_the_lock_goes_with_its_process(run_held_elsewhere):
    run_dir, holder = run_held_elsewhere
    holder.kill()
    holder.wait()
    assert prepare_run_dir(str(run_dir), resume=True, overwrite=False, config=CONFIG) == run_dir
    run_lock.release(run_dir)


def test_one_process_may_reopen_its_own_runs(tmp_path):
    run_dir = tmp_path / "run"
    prepare_run_dir(str(run_dir), resume=False, overwrite=False, config=CONFIG)
    prepare_run_dir(str(run_dir), resume=True, overwrite=False, config=CONFIG)
    prepare_run_dir(str(run_dir), resume=False, overwrite=True, config=CONFIG)
    assert (run_dir / "config.json").exists()
    run_lock.release(run_dir)


def test_a_process_holds_a_bounded_number_of_locks(tmp_path):
    dirs = [tmp_path / f"run{i}" for i in range(run_lock.MAX_HELD + 5)]
    for d in dirs:
        d.mkdir()
        run_lock.acquire(d)
    assert len(run_lock._held) <= run_lock.MAX_HELD
    assert run_lock._key(dirs[-1]) in run_lock._held  # the newest are kept
    for d in dirs:
        run_lock.release(d)


def test_a_finished_run_is_free_for_another_process(tmp_path):
    from understudy.cli import main

    out = tmp_path / "sac"
    tiny = ["--steps", "200", "--eval-every", "200", "--eval-episodes", "1", "--learning-starts", "100", "--batch-size",
            "32", "--hidden-dims", "32", "32", "--no-progress", "--no-tensorboard"]
    assert main(["train", "sac", "--env", "Pendulum-v1", "--out", str(out), *tiny]) == 0
    other = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", "pass"), str(out)],
                           capture_output=True, text=True, timeout=120)
    assert other.returncode == 0 and other.stdout.strip() == "held", other.stderr
